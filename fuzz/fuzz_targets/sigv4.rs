//! SigV4 verification of arbitrary request heads (header and presigned forms): an answer,
//! never a panic. Input lines: method, URI, then `name: value` headers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::time::{Duration, UNIX_EPOCH};
use tinydfs_gateway::auth::verify;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let (Some(method), Some(uri)) = (lines.next(), lines.next()) else {
        return;
    };
    let mut b = http::Request::builder().method(method).uri(uri);
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            b = b.header(k.trim(), v.trim());
        }
    }
    let Ok(req) = b.body(()) else {
        return;
    };
    let (parts, ()) = req.into_parts();
    let secrets = |ak: &str| (ak == "AKID").then(|| "secret".to_string());
    let now = UNIX_EPOCH + Duration::from_secs(1_704_164_645);
    let _ = verify(&parts, &secrets, "us-east-1", now);
});
