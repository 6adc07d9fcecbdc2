//! Unit tests of the object operations' pure parts: ranges, the one checksum a request may
//! carry, and the `aws-chunked` content encoding.

use super::*;

#[test]
fn ranges_parse_and_resolve_like_s3() {
    assert_eq!(parse_range("bytes=0-9"), Some(Range::From(0, Some(9))));
    assert_eq!(parse_range("bytes=5-"), Some(Range::From(5, None)));
    assert_eq!(parse_range("bytes=-3"), Some(Range::Suffix(3)));
    assert_eq!(parse_range("bytes=9-5"), None);
    assert_eq!(parse_range("bytes=0-1,3-4"), None);
    assert_eq!(parse_range("items=0-1"), None);
    assert_eq!(resolve_range(&Range::From(0, Some(9)), 5), Some((0, 5)));
    assert_eq!(resolve_range(&Range::From(5, None), 5), None);
    assert_eq!(resolve_range(&Range::Suffix(10), 5), Some((0, 5)));
    assert_eq!(resolve_range(&Range::Suffix(2), 5), Some((3, 5)));
    assert_eq!(resolve_range(&Range::Suffix(0), 5), None);
    let huge = parse_range("bytes=2-18446744073709551615").unwrap();
    assert_eq!(resolve_range(&huge, 5), Some((2, 5)));
}

fn with_headers(headers: &[(&str, &str)]) -> S3Request {
    let mut h = HeaderMap::new();
    for (k, v) in headers {
        let name = axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap();
        h.insert(name, v.parse().unwrap());
    }
    S3Request {
        method: Method::PUT,
        bucket: Some("b".into()),
        key: Some("k".into()),
        query: Vec::new(),
        headers: h,
        auth: crate::auth::Verified::anonymous(),
        body: std::sync::Mutex::new(None),
        request_id: String::new(),
        body_timeout: std::time::Duration::from_secs(1),
    }
}

#[test]
fn one_well_formed_checksum_per_request() {
    let code = |h: &[(&str, &str)]| sent_checksum(&with_headers(h)).err().map(|e| e.code);
    let crc = ("x-amz-checksum-crc32", "AAAAAA==");
    assert_eq!(
        sent_checksum(&with_headers(&[crc, ("x-amz-checksum-mode", "ENABLED")])).unwrap(),
        Some((ChecksumAlgo::Crc32, Some("AAAAAA==".into())))
    );
    let trailer = ("x-amz-trailer", "x-amz-checksum-sha1");
    assert_eq!(
        sent_checksum(&with_headers(&[trailer])).unwrap(),
        Some((ChecksumAlgo::Sha1, None))
    );
    let invalid = Some("InvalidRequest");
    assert_eq!(code(&[crc, ("x-amz-checksum-crc32c", "AAAAAA==")]), invalid);
    assert_eq!(code(&[crc, trailer]), invalid);
    assert_eq!(code(&[("x-amz-checksum-crc32", "AAAA")]), invalid);
    assert_eq!(code(&[("x-amz-checksum-md4", "AAAAAA==")]), invalid);
    assert_eq!(code(&[("x-amz-trailer", "x-amz-checksum-nope")]), invalid);
    let sdk = |algo| [crc, ("x-amz-sdk-checksum-algorithm", algo)];
    assert_eq!(code(&sdk("SHA256")), invalid);
    assert_eq!(code(&sdk("crc32")), None);
    // Small bodies read whole (DeleteObjects): a CRC32 alone is checked, and suffices.
    let body = b"<Delete/>";
    let good = STANDARD.encode(crc32fast::hash(body).to_be_bytes());
    let req = with_headers(&[("x-amz-checksum-crc32", &good)]);
    assert!(check_body_digests(&req, body).is_ok());
    assert!(check_body_digests(&with_headers(&[]), body).is_ok());
    let err = check_body_digests(&with_headers(&[crc]), body).unwrap_err();
    assert_eq!(err.code, "BadDigest");
    let md5 = STANDARD.encode([0u8; 16]);
    let err = check_body_digests(&with_headers(&[("content-md5", &md5)]), body).unwrap_err();
    assert_eq!(err.code, "BadDigest");
    assert_eq!(checksum_type("AAAAAA==-12"), "COMPOSITE");
    assert_eq!(checksum_type("ab-c/d+e="), "FULL_OBJECT");
}

#[test]
fn aws_chunked_is_not_stored_as_content_encoding() {
    let mut h = HeaderMap::new();
    h.insert(
        "content-encoding",
        HeaderValue::from_static("aws-chunked,gzip"),
    );
    h.insert("x-amz-meta-Empty", HeaderValue::from_static(""));
    let a = attrs_from(&h);
    assert_eq!(
        a.headers,
        vec![("content-encoding".to_string(), "gzip".to_string())]
    );
    assert_eq!(a.user_meta, vec![("empty".to_string(), String::new())]);
    h.insert("content-encoding", HeaderValue::from_static("aws-chunked"));
    assert!(attrs_from(&h).headers.is_empty());
}
