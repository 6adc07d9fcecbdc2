//! The `Range` header: parsed or ignored, and a resolved range always lies inside the object.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tinydfs_gateway::s3::object::{parse_range, resolve_range};

fuzz_target!(|data: &[u8]| {
    let Some((&size, text)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    if let Some(r) = parse_range(text) {
        if let Some((start, end)) = resolve_range(&r, u64::from(size)) {
            assert!(start <= end && end <= u64::from(size));
        }
    }
});
