//! Unit tests of the router: every operation's name and permission, and what picks it.

use super::*;

/// The endpoint of a request for bucket `b` (if set) and key `k` (if set).
fn endpoint(m: Method, b: bool, k: bool, query: &str, headers: &HeaderMap) -> Endpoint {
    let bucket = b.then(|| "b".to_string());
    let key = k.then(|| "k".to_string());
    Endpoint::new(&m, bucket, key, &parse_query(Some(query)), headers)
}

#[test]
fn operations_are_named_as_route_serves_them() {
    let none = HeaderMap::new();
    let ep = |m: Method, b: bool, k: bool, query: &str| endpoint(m, b, k, query, &none);
    let op = |m: Method, b: bool, k: bool, query: &str| ep(m, b, k, query).name();
    let needed = |m: Method, b: bool, k: bool, query: &str| ep(m, b, k, query).permission();
    assert_eq!(op(Method::GET, false, false, ""), "ListBuckets");
    assert_eq!(needed(Method::GET, false, false, ""), None);
    assert_eq!(op(Method::GET, true, false, "list-type=2"), "ListObjectsV2");
    assert_eq!(op(Method::GET, true, false, "prefix=a"), "ListObjects");
    assert_eq!(op(Method::GET, true, false, "cors"), "GetBucketCors");
    assert_eq!(op(Method::GET, true, false, "tagging"), "GetBucketTagging");
    assert_eq!(op(Method::PUT, true, false, "tagging"), "PutBucketTagging");
    assert_eq!(
        op(Method::DELETE, true, false, "tagging"),
        "DeleteBucketTagging"
    );
    assert_eq!(
        needed(Method::PUT, true, false, "tagging"),
        Some(Permission::Owner)
    );
    assert_eq!(op(Method::GET, true, false, "policy"), "Unsupported");
    assert_eq!(op(Method::PUT, true, true, "tagging"), "PutObjectTagging");
    assert_eq!(op(Method::GET, true, true, "tagging"), "GetObjectTagging");
    assert_eq!(
        op(Method::DELETE, true, true, "tagging"),
        "DeleteObjectTagging"
    );
    assert_eq!(op(Method::OPTIONS, true, true, ""), "PreflightRequest");
    let tagging = |m: Method| needed(m, true, true, "tagging");
    assert_eq!(tagging(Method::PUT), Some(Permission::Write));
    assert_eq!(tagging(Method::DELETE), Some(Permission::Write));
    assert_eq!(tagging(Method::GET), Some(Permission::Read));
    let cors = |m: Method| needed(m, true, false, "cors");
    assert_eq!(cors(Method::PUT), Some(Permission::Owner));
    assert_eq!(cors(Method::DELETE), Some(Permission::Owner));
    assert_eq!(cors(Method::GET), Some(Permission::Read));
    assert_eq!(op(Method::PUT, true, false, ""), "CreateBucket");
    assert_eq!(needed(Method::PUT, true, false, ""), None);
    assert_eq!(op(Method::POST, true, false, "delete"), "DeleteObjects");
    assert_eq!(op(Method::PUT, true, true, ""), "PutObject");
    assert_eq!(
        ep(Method::PUT, true, true, "partNumber=1&uploadId=u"),
        Endpoint::UploadPart {
            bucket: "b".into(),
            key: "k".into(),
            upload_id: "u".into()
        }
    );
    assert_eq!(op(Method::GET, true, true, ""), "GetObject");
    assert_eq!(op(Method::HEAD, true, true, ""), "HeadObject");
    assert_eq!(
        op(Method::GET, true, true, "attributes"),
        "GetObjectAttributes"
    );
    assert_eq!(
        needed(Method::GET, true, true, "attributes"),
        Some(Permission::Read)
    );
    let post = |query: &str| op(Method::POST, true, true, query);
    assert_eq!(post("uploads"), "CreateMultipartUpload");
    assert_eq!(post("uploadId=u"), "CompleteMultipartUpload");
    assert_eq!(
        op(Method::DELETE, true, true, "uploadId=u"),
        "AbortMultipartUpload"
    );
    let mut copy = HeaderMap::new();
    copy.insert("x-amz-copy-source", "/b/k".parse().unwrap());
    assert_eq!(
        endpoint(Method::PUT, true, true, "", &copy).name(),
        "CopyObject"
    );
    let part_copy = endpoint(Method::PUT, true, true, "partNumber=1&uploadId=u", &copy);
    assert_eq!(part_copy.name(), "UploadPartCopy");
    assert_eq!(part_copy.permission(), Some(Permission::Write));
    assert_eq!(
        op(Method::GET, true, false, "uploads"),
        "ListMultipartUploads"
    );
    assert_eq!(
        op(Method::GET, true, false, "uploads&prefix=a"),
        "ListMultipartUploads"
    );
    assert_eq!(
        needed(Method::GET, true, false, "uploads"),
        Some(Permission::Read)
    );
    assert_eq!(
        endpoint(Method::PUT, true, true, "", &copy).permission(),
        Some(Permission::Write)
    );
}

#[test]
fn form_uploads_are_recognized_and_named() {
    let mut h = HeaderMap::new();
    h.insert(
        "content-type",
        "multipart/form-data; boundary=abc".parse().unwrap(),
    );
    let e = endpoint(Method::POST, true, false, "", &h);
    assert_eq!(e.name(), "PostObject");
    assert_eq!(e.permission(), Some(Permission::Write));
    assert!(!e.allows_anonymous());
    assert!(is_form_upload(&h));
    h.insert("content-type", "application/xml".parse().unwrap());
    assert!(!is_form_upload(&h));
    assert_eq!(
        endpoint(Method::POST, true, false, "", &h),
        Endpoint::Unsupported {
            bucket: Some("b".into()),
            key: None,
            refusal: Refusal::BucketOperation
        }
    );
}

#[test]
fn what_is_not_served_is_refused_with_its_answer() {
    let none = HeaderMap::new();
    let refusal = |m: Method, b: bool, k: bool, query: &str| match endpoint(m, b, k, query, &none) {
        Endpoint::Unsupported { refusal, .. } => {
            let e = refusal.error();
            Some((e.code, e.status.as_u16()))
        }
        _ => None,
    };
    let ni = Some(("NotImplemented", 501));
    let not_allowed = Some(("MethodNotAllowed", 405));
    assert_eq!(refusal(Method::PUT, false, false, ""), not_allowed);
    assert_eq!(refusal(Method::GET, true, false, "website"), ni);
    assert_eq!(refusal(Method::PUT, true, false, "website"), ni);
    assert_eq!(refusal(Method::PATCH, true, false, ""), not_allowed);
    assert_eq!(refusal(Method::PUT, true, true, "acl"), ni);
    assert_eq!(refusal(Method::GET, true, true, "acl"), ni);
    assert_eq!(refusal(Method::GET, true, true, "attributes"), None);
    assert_eq!(refusal(Method::POST, true, true, ""), not_allowed);
    assert_eq!(refusal(Method::GET, true, true, ""), None);
    // The first sub-resource in S3's order wins.
    assert_eq!(
        endpoint(Method::PUT, true, false, "acl&lifecycle", &none).name(),
        "PutBucketLifecycleConfiguration"
    );
}

#[test]
fn anonymous_reads_and_addresses() {
    let none = HeaderMap::new();
    for (m, k, query) in [
        (Method::GET, true, ""),
        (Method::HEAD, true, ""),
        (Method::GET, false, ""),
        (Method::GET, false, "list-type=2"),
        (Method::HEAD, false, ""),
        (Method::GET, false, "location"),
        (Method::GET, true, "attributes"),
    ] {
        assert!(endpoint(m, true, k, query, &none).allows_anonymous());
    }
    assert!(!endpoint(Method::GET, true, true, "tagging", &none).allows_anonymous());
    assert!(!endpoint(Method::GET, false, false, "", &none).allows_anonymous());
    let e = endpoint(Method::DELETE, true, true, "", &none);
    assert_eq!((e.bucket(), e.key()), (Some("b"), Some("k")));
    let e = endpoint(Method::OPTIONS, true, false, "", &none);
    assert_eq!((e.bucket(), e.key()), (Some("b"), None));

    let mut host = HeaderMap::new();
    host.insert("host", "b.s3.example.com:9000".parse().unwrap());
    let uri: Uri = "/a%20key?uploads".parse().unwrap();
    let (e, query) = parse(Some("s3.example.com"), &Method::POST, &uri, &host).unwrap();
    assert_eq!(
        e,
        Endpoint::CreateMultipartUpload {
            bucket: "b".into(),
            key: "a key".into()
        }
    );
    assert_eq!(query, [("uploads".to_string(), String::new())]);
    let uri: Uri = "/b/k".parse().unwrap();
    let (e, _) = parse(None, &Method::GET, &uri, &host).unwrap();
    assert_eq!(e.name(), "GetObject");
    let long: Uri = format!("/b/{}", "k".repeat(MAX_KEY_LEN + 1))
        .parse()
        .unwrap();
    let e = parse(None, &Method::GET, &long, &host).unwrap_err();
    assert_eq!(e.code, "KeyTooLongError");
}
