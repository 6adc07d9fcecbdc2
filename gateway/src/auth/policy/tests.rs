//! Unit tests of POST policies: signatures, conditions, expiration and invalid documents.

use super::super::sigv4::hmac;
use super::*;

const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn signed_fields(policy: &str) -> BTreeMap<String, String> {
    let key = signing_key(SECRET, "20151229", "us-east-1");
    let sig = hex::encode(hmac(&key, policy.as_bytes()));
    [
        ("policy", policy.to_string()),
        ("x-amz-algorithm", "AWS4-HMAC-SHA256".into()),
        (
            "x-amz-credential",
            "AKIAIOSFODNN7EXAMPLE/20151229/us-east-1/s3/aws4_request".into(),
        ),
        ("x-amz-date", "20151229T000000Z".into()),
        ("x-amz-signature", sig),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

fn secrets(ak: &str) -> Option<String> {
    (ak == "AKIAIOSFODNN7EXAMPLE").then(|| SECRET.to_string())
}

#[test]
fn signature_of_the_policy() {
    let policy = b64(r#"{"expiration":"2015-12-30T12:00:00.000Z","conditions":[]}"#);
    let f = signed_fields(&policy);
    assert_eq!(
        verify_signature(&f, &secrets, "us-east-1").unwrap(),
        "AKIAIOSFODNN7EXAMPLE"
    );
    // Another policy under the same signature, another region, an unknown key.
    let mut other = f.clone();
    other.insert("policy".into(), b64("{}"));
    assert_eq!(
        verify_signature(&other, &secrets, "us-east-1"),
        Err(AuthError::SignatureMismatch)
    );
    assert_eq!(
        verify_signature(&f, &secrets, "eu-west-1")
            .unwrap_err()
            .code(),
        "InvalidArgument"
    );
    assert_eq!(
        verify_signature(&f, &|_| None, "us-east-1"),
        Err(AuthError::UnknownAccessKey)
    );
    for missing in [
        "policy",
        "x-amz-signature",
        "x-amz-credential",
        "x-amz-date",
    ] {
        let mut m = f.clone();
        m.remove(missing);
        assert_eq!(
            verify_signature(&m, &secrets, "us-east-1")
                .unwrap_err()
                .code(),
            "InvalidArgument",
            "{missing}"
        );
    }
}

fn fields(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn conditions_expiration_and_extra_fields() {
    let p = parse(&b64(r#"{ "expiration": "2015-12-30T12:00:00.000Z",
             "conditions": [ {"bucket": "b"}, ["starts-with", "$Key", "user/"],
               ["eq", "$x-amz-meta-a", "1"], ["starts-with", "$Content-Type", "image/"],
               ["content-length-range", "10", 100], {"x-amz-date": "20151229T000000Z"} ] }"#))
    .unwrap();
    let before = parse_iso8601("2015-12-30T11:59:59Z").unwrap();
    let good = fields(&[
        ("bucket", "b"),
        ("key", "user/photo.jpg"),
        ("x-amz-meta-a", "1"),
        ("content-type", "image/jpeg"),
        ("x-amz-date", "20151229T000000Z"),
        ("policy", "..."),
        ("x-ignore-me", "x"),
    ]);
    assert_eq!(p.check(&good, before), Ok(Some((10, 100))));
    let denied = |f: &BTreeMap<String, String>| p.check(f, before).unwrap_err().code();
    for (k, v) in [
        ("bucket", "c"),
        ("key", "other/photo.jpg"),
        ("x-amz-meta-a", "2"),
        ("content-type", "image/png, text/html"),
    ] {
        let mut f = good.clone();
        f.insert(k.into(), v.into());
        assert_eq!(denied(&f), "AccessDenied", "{k}");
    }
    let mut extra = good.clone();
    extra.insert("x-amz-meta-b".into(), "x".into());
    assert_eq!(
        p.check(&extra, before).unwrap_err().to_string(),
        "Invalid according to Policy: Extra input fields: x-amz-meta-b"
    );
    let after = parse_iso8601("2015-12-30T12:00:01.5Z").unwrap();
    assert_eq!(
        p.check(&good, after),
        Err(PolicyError::Denied("Policy expired.".into()))
    );
}

#[test]
fn invalid_documents() {
    for bad in [
        "not base64!".to_string(),
        b64("not json"),
        b64("[]"),
        b64(r#"{"conditions":[]}"#),
        b64(r#"{"expiration":"tomorrow","conditions":[]}"#),
        b64(r#"{"expiration":"2015-12-30T12:00:00Z"}"#),
        b64(r#"{"expiration":"2015-12-30T12:00:00Z","conditions":[["eq","key","x"]]}"#),
        b64(r#"{"expiration":"2015-12-30T12:00:00Z","conditions":[["in","$key","x"]]}"#),
        b64(r#"{"expiration":"2015-12-30T12:00:00Z","conditions":[{"a":"1","b":"2"}]}"#),
        b64(r#"{"expiration":"2015-12-30T12:00:00Z","conditions":[["content-length-range",5,1]]}"#),
    ] {
        assert_eq!(
            parse(&bad).unwrap_err().code(),
            "InvalidPolicyDocument",
            "{bad}"
        );
    }
    assert_eq!(parse_iso8601("2015-02-30T12:00:00Z"), None);
    assert_eq!(
        parse_iso8601("1970-01-02T00:00:00.999Z"),
        Some(UNIX_EPOCH + Duration::from_secs(86_400))
    );
}
