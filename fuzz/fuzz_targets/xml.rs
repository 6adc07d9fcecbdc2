//! The S3 XML request documents: any input is parsed or refused (MalformedXML and friends),
//! never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tinydfs_gateway::s3::lifecycle;
use tinydfs_gateway::xml;

fuzz_target!(|data: &[u8]| {
    let _ = xml::parse_delete(data);
    let _ = xml::parse::<xml::Delete>(data);
    let _ = xml::parse::<xml::CompleteMultipartUpload>(data);
    let _ = xml::parse::<xml::CreateBucketConfiguration>(data);
    let _ = lifecycle::parse_configuration(data);
});
