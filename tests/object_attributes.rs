//! GetObjectAttributes (`GET /bucket/key?attributes`) end to end, against a real cluster: with
//! aws-sdk-s3 (default checksum behaviour on; it sends one `x-amz-object-attributes` line per
//! attribute) and with boto3 (one comma-separated line), found through `TINYDFS_PYTHON` as
//! `scripts/test.sh` sets it. What is expected is AWS's answer (see gateway/src/s3/attributes.rs).

mod common;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    ChecksumAlgorithm, ChecksumType, CompletedMultipartUpload, CompletedPart, ObjectAttributes,
    StorageClass,
};
use base64::Engine;
use common::*;
use sha2::Digest;
use std::process::Command;

/// Smallest part but the last, as S3 (and tinydfs) require.
const MIN_PART: usize = 5 * 1024 * 1024;

/// Every attribute there is.
const ALL: [ObjectAttributes; 5] = [
    ObjectAttributes::Etag,
    ObjectAttributes::Checksum,
    ObjectAttributes::ObjectParts,
    ObjectAttributes::StorageClass,
    ObjectAttributes::ObjectSize,
];

fn b64(raw: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(raw)
}

/// The error code and HTTP status of a failed call.
fn refusal<T, E>(r: Result<T, aws_sdk_s3::error::SdkError<E>>) -> (String, Option<u16>)
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::fmt::Debug,
{
    let e = match r {
        Ok(_) => panic!("the call succeeded"),
        Err(e) => e,
    };
    let status = e.raw_response().map(|r| r.status().as_u16());
    let code = e.as_service_error().and_then(|s| s.code()).unwrap_or("");
    (code.to_string(), status)
}

#[test]
fn simple_object_with_a_checksum() {
    let cluster = Cluster::start(Opts::default());
    let c = cluster.client();
    rt().block_on(async {
        c.create_bucket().bucket("attrs").send().await.unwrap();
        let body = data(70_000, 7);
        let put = c
            .put_object()
            .bucket("attrs")
            .key("one")
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .body(ByteStream::from(body.clone()))
            .send()
            .await
            .unwrap();
        let crc = b64(&crc32fast::hash(&body).to_be_bytes());
        assert_eq!(put.checksum_crc32(), Some(crc.as_str()));
        let head = c
            .head_object()
            .bucket("attrs")
            .key("one")
            .send()
            .await
            .unwrap();

        let out = c
            .get_object_attributes()
            .bucket("attrs")
            .key("one")
            .set_object_attributes(Some(ALL.to_vec()))
            .send()
            .await
            .unwrap();
        // The ETag without quotes, as AWS answers it here.
        assert_eq!(out.e_tag(), Some(md5_hex(&body).as_str()));
        let sum = out.checksum().expect("a Checksum element");
        assert_eq!(sum.checksum_crc32(), Some(crc.as_str()));
        assert_eq!(sum.checksum_sha256(), None);
        assert_eq!(sum.checksum_type(), Some(&ChecksumType::FullObject));
        // Not a multipart object: no ObjectParts although asked for.
        assert!(out.object_parts().is_none(), "{out:?}");
        assert_eq!(out.storage_class(), Some(&StorageClass::Standard));
        assert_eq!(out.object_size(), Some(body.len() as i64));
        assert!(out.last_modified().is_some());
        assert_eq!(out.last_modified(), head.last_modified());
        // An unversioned bucket: neither a version id nor a delete marker.
        assert_eq!(out.version_id(), None);
        assert_eq!(out.delete_marker(), None);

        // Only what is asked for.
        let out = c
            .get_object_attributes()
            .bucket("attrs")
            .key("one")
            .object_attributes(ObjectAttributes::ObjectSize)
            .send()
            .await
            .unwrap();
        assert_eq!(out.object_size(), Some(body.len() as i64));
        assert_eq!(out.e_tag(), None);
        assert!(out.checksum().is_none());
        assert_eq!(out.storage_class(), None);

        // `versionId=null` is the current version; another one is answered as GET answers it.
        let out = c
            .get_object_attributes()
            .bucket("attrs")
            .key("one")
            .version_id("null")
            .object_attributes(ObjectAttributes::Etag)
            .send()
            .await
            .unwrap();
        assert_eq!(out.e_tag(), Some(md5_hex(&body).as_str()));
        let other = c
            .get_object_attributes()
            .bucket("attrs")
            .key("one")
            .version_id("3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY")
            .object_attributes(ObjectAttributes::Etag)
            .send()
            .await;
        assert_eq!(refusal(other), ("NoSuchVersion".into(), Some(404)));
    });
}

#[test]
fn multipart_parts_are_paged() {
    let cluster = Cluster::start(Opts::default());
    let c = cluster.client();
    rt().block_on(async {
        c.create_bucket().bucket("multi").send().await.unwrap();
        // A composite CRC32 upload of two parts: AWS lists the parts of such an object.
        let parts = [data(MIN_PART, 1), data(1000, 2)];
        let created = c
            .create_multipart_upload()
            .bucket("multi")
            .key("big")
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .send()
            .await
            .unwrap();
        let id = created.upload_id().unwrap().to_string();
        let mut done = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            let n = i as i32 + 1;
            let up = c
                .upload_part()
                .bucket("multi")
                .key("big")
                .upload_id(&id)
                .part_number(n)
                .checksum_algorithm(ChecksumAlgorithm::Crc32)
                .body(ByteStream::from(p.clone()))
                .send()
                .await
                .unwrap();
            done.push(
                CompletedPart::builder()
                    .part_number(n)
                    .e_tag(up.e_tag().unwrap())
                    .checksum_crc32(up.checksum_crc32().unwrap())
                    .build(),
            );
        }
        let completed = c
            .complete_multipart_upload()
            .bucket("multi")
            .key("big")
            .upload_id(&id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(done))
                    .build(),
            )
            .send()
            .await
            .unwrap();
        let composite = completed.checksum_crc32().unwrap().to_string();
        assert!(composite.ends_with("-2"), "{composite}");

        let page = |marker: Option<&str>| {
            c.get_object_attributes()
                .bucket("multi")
                .key("big")
                .set_object_attributes(Some(ALL.to_vec()))
                .max_parts(1)
                .set_part_number_marker(marker.map(str::to_string))
                .send()
        };
        let first = page(None).await.unwrap();
        assert_eq!(
            first.e_tag(),
            Some(completed.e_tag().unwrap().trim_matches('"'))
        );
        assert_eq!(first.object_size(), Some((MIN_PART + 1000) as i64));
        // AWS answers a composite checksum here without its `-2`.
        let sum = first.checksum().expect("a Checksum element");
        assert_eq!(sum.checksum_crc32(), composite.strip_suffix("-2"));
        assert_eq!(sum.checksum_type(), Some(&ChecksumType::Composite));
        let listed = first.object_parts().expect("ObjectParts");
        assert_eq!(listed.total_parts_count(), Some(2));
        assert_eq!(listed.max_parts(), Some(1));
        assert_eq!(listed.is_truncated(), Some(true));
        assert_eq!(listed.part_number_marker(), Some("0"));
        assert_eq!(listed.next_part_number_marker(), Some("1"));
        let numbers = |l: &aws_sdk_s3::types::GetObjectAttributesParts| -> Vec<(i32, i64)> {
            l.parts()
                .iter()
                .map(|p| (p.part_number().unwrap(), p.size().unwrap()))
                .collect()
        };
        assert_eq!(numbers(listed), [(1, MIN_PART as i64)]);

        let marker = listed.next_part_number_marker().map(str::to_string);
        let second = page(marker.as_deref()).await.unwrap();
        let listed = second.object_parts().expect("ObjectParts");
        assert_eq!(listed.total_parts_count(), Some(2));
        assert_eq!(listed.is_truncated(), Some(false));
        assert_eq!(listed.part_number_marker(), Some("1"));
        assert_eq!(listed.next_part_number_marker(), Some("2"));
        assert_eq!(numbers(listed), [(2, 1000)]);

        // Without max-parts: every part, 1,000 at most.
        let all = c
            .get_object_attributes()
            .bucket("multi")
            .key("big")
            .object_attributes(ObjectAttributes::ObjectParts)
            .send()
            .await
            .unwrap();
        let listed = all.object_parts().expect("ObjectParts");
        assert_eq!(listed.max_parts(), Some(1000));
        assert_eq!(listed.is_truncated(), Some(false));
        assert_eq!(numbers(listed), [(1, MIN_PART as i64), (2, 1000)]);

        // A multipart object without a composite checksum: the part count alone, as on AWS.
        let created = c
            .create_multipart_upload()
            .bucket("multi")
            .key("plain")
            .send()
            .await
            .unwrap();
        let id = created.upload_id().unwrap().to_string();
        let up = c
            .upload_part()
            .bucket("multi")
            .key("plain")
            .upload_id(&id)
            .part_number(1)
            .body(ByteStream::from(data(300, 3)))
            .send()
            .await
            .unwrap();
        c.complete_multipart_upload()
            .bucket("multi")
            .key("plain")
            .upload_id(&id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .parts(
                        CompletedPart::builder()
                            .part_number(1)
                            .e_tag(up.e_tag().unwrap())
                            .build(),
                    )
                    .build(),
            )
            .send()
            .await
            .unwrap();
        let out = c
            .get_object_attributes()
            .bucket("multi")
            .key("plain")
            .set_object_attributes(Some(ALL.to_vec()))
            .max_parts(1)
            .send()
            .await
            .unwrap();
        let listed = out.object_parts().expect("ObjectParts");
        assert_eq!(listed.total_parts_count(), Some(1));
        assert!(listed.parts().is_empty(), "{listed:?}");
        assert_eq!(listed.max_parts(), None);
        assert_eq!(listed.is_truncated(), None);
        assert!(out.checksum().is_none(), "{out:?}");
        assert_eq!(out.object_size(), Some(300));
    });
}

#[test]
fn missing_key_and_bucket_are_404() {
    let cluster = Cluster::start(Opts::default());
    let c = cluster.client();
    rt().block_on(async {
        c.create_bucket().bucket("here").send().await.unwrap();
        let missing = c
            .get_object_attributes()
            .bucket("here")
            .key("nothing")
            .object_attributes(ObjectAttributes::Etag)
            .send()
            .await;
        assert!(
            matches!(&missing, Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key())),
            "{missing:?}"
        );
        assert_eq!(refusal(missing), ("NoSuchKey".into(), Some(404)));
        let no_bucket = c
            .get_object_attributes()
            .bucket("not-here")
            .key("nothing")
            .object_attributes(ObjectAttributes::Etag)
            .send()
            .await;
        assert_eq!(refusal(no_bucket), ("NoSuchBucket".into(), Some(404)));
    });
}

#[test]
fn attributes_header_missing_or_invalid_is_400() {
    let cluster = Cluster::start(Opts::default());
    let c = cluster.client();
    rt().block_on(async {
        c.create_bucket().bucket("hdr").send().await.unwrap();
        put(&c, "hdr", "k", b"body".to_vec()).await.unwrap();
        // No header at all, and an empty one: AWS's InvalidRequest.
        let none = c
            .get_object_attributes()
            .bucket("hdr")
            .key("k")
            .send()
            .await;
        assert_eq!(refusal(none), ("InvalidRequest".into(), Some(400)));
        let empty = c
            .get_object_attributes()
            .bucket("hdr")
            .key("k")
            .set_object_attributes(Some(Vec::new()))
            .send()
            .await;
        assert_eq!(refusal(empty), ("InvalidRequest".into(), Some(400)));
        // A name that is not an attribute, alone or among good ones: AWS's InvalidArgument,
        // on a missing key too (the header is checked first).
        for key in ["k", "missing"] {
            let bad = c
                .get_object_attributes()
                .bucket("hdr")
                .key(key)
                .object_attributes(ObjectAttributes::Etag)
                .object_attributes(ObjectAttributes::from("Bogus"))
                .send()
                .await;
            assert_eq!(refusal(bad), ("InvalidArgument".into(), Some(400)), "{key}");
        }
    });
}

/// Puts an object with a SHA-256 checksum and reads its attributes with boto3, which sends
/// `x-amz-object-attributes` as one comma-separated line; prints the answer as JSON.
const BOTO3_SCRIPT: &str = r#"
import json, os
import boto3
from botocore.config import Config

s3 = boto3.client(
    "s3",
    endpoint_url=os.environ["TD_ENDPOINT"],
    region_name="us-east-1",
    aws_access_key_id=os.environ["TD_ACCESS_KEY"],
    aws_secret_access_key=os.environ["TD_SECRET_KEY"],
    config=Config(s3={"addressing_style": "path"}, retries={"mode": "standard", "max_attempts": 1}),
)
s3.create_bucket(Bucket="boto")
s3.put_object(Bucket="boto", Key="doc.txt", Body=b"boto3 attributes", ChecksumAlgorithm="SHA256")
out = s3.get_object_attributes(
    Bucket="boto",
    Key="doc.txt",
    ObjectAttributes=["StorageClass", "ObjectSize", "ObjectParts", "Checksum", "ETag"],
)
out.pop("ResponseMetadata")
out["LastModified"] = out["LastModified"].isoformat()
print(json.dumps(out))
"#;

#[test]
fn boto3_reads_attributes() {
    let cluster = Cluster::start(Opts::default());
    let path = cluster.dir.join("attributes.py");
    std::fs::write(&path, BOTO3_SCRIPT).unwrap();
    let mut cmd = Command::new(tool("TINYDFS_PYTHON"));
    // The script's client is the cluster's alone: no profile, no keys from the environment.
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd
        .arg(&path)
        .env("TD_ENDPOINT", &cluster.endpoint)
        .env("TD_ACCESS_KEY", ACCESS_KEY)
        .env("TD_SECRET_KEY", SECRET_KEY)
        .env("AWS_CONFIG_FILE", cluster.dir.join("no-aws-config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", cluster.dir.join("no-creds"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "boto3 script failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(stdout.trim().lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("the boto3 script printed no JSON ({e}):\n{stdout}"));
    let body = b"boto3 attributes";
    let expected = serde_json::json!({
        "ETag": md5_hex(body),
        "Checksum": {
            "ChecksumSHA256": b64(&sha2::Sha256::digest(body)),
            "ChecksumType": "FULL_OBJECT",
        },
        "StorageClass": "STANDARD",
        "ObjectSize": body.len(),
        "LastModified": v["LastModified"],
    });
    assert_eq!(v, expected);
    assert!(
        v["LastModified"]
            .as_str()
            .is_some_and(|d| d.starts_with("20")),
        "{v}"
    );
}
