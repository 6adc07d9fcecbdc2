//! Browser form uploads: the `multipart/form-data` decoder over arbitrary bodies and frame
//! cuts, and POST policy documents. Never a panic; content never exceeds the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tinydfs_gateway::auth::policy;
use tinydfs_gateway::form::{Event, FormParser};

fuzz_target!(|data: &[u8]| {
    let Some((&control, body)) = data.split_first() else {
        return;
    };
    let mut p = FormParser::new("XyZ");
    let mut frames = body.chunks(usize::from(control) + 1);
    let mut content = 0usize;
    loop {
        match p.next_event() {
            Ok(None) => match frames.next() {
                Some(f) => p.push(f),
                None => p.finish(),
            },
            Ok(Some(Event::Data(d))) => content += d.len(),
            Ok(Some(Event::End)) | Err(_) => break,
            Ok(Some(_)) => {}
        }
        assert!(p.consumed() <= body.len() as u64);
    }
    assert!(content <= body.len());
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(body);
    if let Ok(policy) = policy::parse(&encoded) {
        let _ = policy.check(&Default::default(), std::time::SystemTime::now());
    }
});
