//! Unit tests of SigV4 parsing and verification, on AWS's documented examples.

use std::time::UNIX_EPOCH;

use super::canonical::{canonical_query, canonical_uri, push_trimmed};
use super::*;

const AK: &str = "AKIAIOSFODNN7EXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const SCOPE: &str = "AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request";

/// 2013-05-24T00:00:00Z, the timestamp of every AWS example.
fn t0() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_369_353_600)
}

fn secrets(ak: &str) -> Option<String> {
    (ak == AK).then(|| SECRET.to_owned())
}

fn parts(method: &str, uri: &str, headers: &[(&str, &str)]) -> Parts {
    let mut b = http::Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap().into_parts().0
}

fn get_example(sep: &str, now: SystemTime, secret: &str) -> Result<Verified, AuthError> {
    let auth = format!(
        "AWS4-HMAC-SHA256 Credential={SCOPE},{sep}SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,{sep}Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    );
    let p = parts(
        "GET",
        "/test.txt",
        &[
            ("host", "examplebucket.s3.amazonaws.com"),
            ("range", "bytes=0-9"),
            ("x-amz-content-sha256", EMPTY_SHA256),
            ("x-amz-date", "20130524T000000Z"),
            ("authorization", &auth),
        ],
    );
    let secret = secret.to_owned();
    verify(
        &p,
        &move |ak| (ak == AK).then(|| secret.clone()),
        "us-east-1",
        now,
    )
}

#[test]
fn aws_get_object_example() {
    for sep in ["", " ", "  "] {
        let v = get_example(sep, t0(), SECRET).unwrap();
        assert_eq!(v.access_key, AK);
        assert_eq!(v.payload, Payload::Sha256(decode32(EMPTY_SHA256).unwrap()));
        assert_eq!(v.signing.scope, "20130524/us-east-1/s3/aws4_request");
        assert_eq!(
            hex::encode(v.signing.seed),
            "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }
    let mut check = Payload::Sha256(decode32(EMPTY_SHA256).unwrap())
        .sha256_check()
        .unwrap();
    check.clone().finish().unwrap();
    check.update(b"x");
    assert_eq!(
        check.finish().unwrap_err().code(),
        "XAmzContentSHA256Mismatch"
    );
}

#[test]
fn header_auth_failures() {
    let e = get_example("", t0(), "wrong-secret").unwrap_err();
    assert_eq!((e.code(), e.status()), ("SignatureDoesNotMatch", 403));
    let later = t0() + Duration::from_secs(16 * 60);
    let e = get_example("", later, SECRET).unwrap_err();
    assert_eq!((e.code(), e.status()), ("RequestTimeTooSkewed", 403));
    let earlier = t0() - Duration::from_secs(16 * 60);
    assert_eq!(
        get_example("", earlier, SECRET).unwrap_err(),
        AuthError::TimeSkewed
    );
    assert!(get_example("", t0() + Duration::from_secs(14 * 60), SECRET).is_ok());

    let base = [
        ("host", "examplebucket.s3.amazonaws.com"),
        ("range", "bytes=0-9"),
        ("x-amz-content-sha256", EMPTY_SHA256),
        ("x-amz-date", "20130524T000000Z"),
    ];
    let sig = "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41";
    let signed = "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date";
    let with = |auth: &str, extra: &[(&str, &str)]| {
        let mut h: Vec<(&str, &str)> = base.to_vec();
        h.retain(|(k, _)| !extra.iter().any(|(n, _)| n == k));
        h.extend_from_slice(extra);
        h.push(("authorization", auth));
        verify(&parts("GET", "/test.txt", &h), &secrets, "us-east-1", t0()).unwrap_err()
    };
    // Tampered signed header.
    let good = format!("AWS4-HMAC-SHA256 Credential={SCOPE},{signed},{sig}");
    assert_eq!(
        with(&good, &[("range", "bytes=0-10")]),
        AuthError::SignatureMismatch
    );
    // Unknown key.
    let e = with(&good.replace("AKIAIOSFODNN7EXAMPLE", "AKIDUNKNOWN"), &[]);
    assert_eq!((e.code(), e.status()), ("InvalidAccessKeyId", 403));
    // Wrong region in the scope.
    let e = with(&good.replace("us-east-1", "eu-west-1"), &[]);
    assert_eq!(
        (e.code(), e.status()),
        ("AuthorizationHeaderMalformed", 400)
    );
    assert!(e.to_string().contains("expecting 'us-east-1'"));
    // Wrong service, missing field, bad signature hex.
    assert_eq!(
        with(&good.replace("/s3/", "/ec2/"), &[]).code(),
        "AuthorizationHeaderMalformed"
    );
    let no_sig = format!("AWS4-HMAC-SHA256 Credential={SCOPE},{signed}");
    assert_eq!(with(&no_sig, &[]).code(), "AuthorizationHeaderMalformed");
    assert_eq!(
        with(&good.replace("Signature=f0", "Signature=zz"), &[]).code(),
        "AuthorizationHeaderMalformed"
    );
    // Missing payload hash header.
    let mut h: Vec<(&str, &str)> = base
        .iter()
        .filter(|(k, _)| *k != "x-amz-content-sha256")
        .copied()
        .collect();
    h.push(("authorization", &good));
    let e = verify(&parts("GET", "/test.txt", &h), &secrets, "us-east-1", t0()).unwrap_err();
    assert_eq!((e.code(), e.status()), ("InvalidRequest", 400));
    assert_eq!(
        with(&good, &[("x-amz-content-sha256", "abc")]).code(),
        "InvalidArgument"
    );
    // SigV4A and SigV2.
    let e = with(
        &good.replace("AWS4-HMAC-SHA256", "AWS4-ECDSA-P256-SHA256"),
        &[],
    );
    assert_eq!((e.code(), e.status()), ("AccessDenied", 403));
    assert!(e.to_string().contains("SigV4A"));
    assert_eq!(
        with("AWS AKIAIOSFODNN7EXAMPLE:abc", &[]).code(),
        "AccessDenied"
    );
    // No auth at all.
    let e = verify(
        &parts("GET", "/test.txt", &base),
        &secrets,
        "us-east-1",
        t0(),
    )
    .unwrap_err();
    assert_eq!(
        (&e, e.code(), e.status()),
        (&AuthError::Missing, "AccessDenied", 403)
    );
}

/// Independent signer over a hand-written canonical request.
fn sign(canonical: &str) -> String {
    let sts = format!(
        "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let mut k = hmac(format!("AWS4{SECRET}").as_bytes(), b"20130524");
    for part in ["us-east-1", "s3", "aws4_request"] {
        k = hmac(&k, part.as_bytes());
    }
    hex::encode(hmac(&k, sts.as_bytes()))
}

#[test]
fn date_header_instead_of_x_amz_date() {
    let date = "Fri, 24 May 2013 00:00:00 GMT";
    let canonical = format!(
        "GET\n/test.txt\n\ndate:{date}\nhost:examplebucket.s3.amazonaws.com\nrange:bytes=0-9\n\
         x-amz-content-sha256:{EMPTY_SHA256}\n\ndate;host;range;x-amz-content-sha256\n{EMPTY_SHA256}"
    );
    let auth = format!(
        "AWS4-HMAC-SHA256 Credential={SCOPE}, SignedHeaders=date;host;range;x-amz-content-sha256, Signature={}",
        sign(&canonical)
    );
    let p = parts(
        "GET",
        "/test.txt",
        &[
            ("host", "examplebucket.s3.amazonaws.com"),
            ("range", "bytes=0-9"),
            ("x-amz-content-sha256", EMPTY_SHA256),
            ("date", date),
            ("authorization", &auth),
        ],
    );
    let v = verify(&p, &secrets, "us-east-1", t0()).unwrap();
    assert_eq!(v.signing.datetime, "20130524T000000Z");
    let late = t0() + Duration::from_secs(20 * 60);
    assert_eq!(
        verify(&p, &secrets, "us-east-1", late).unwrap_err(),
        AuthError::TimeSkewed
    );
}

#[test]
fn date_header_with_a_numeric_zone() {
    // botocore's form (Python's email.utils.formatdate) when a request carries a Date header.
    let date = "Fri, 24 May 2013 00:00:00 -0000";
    let canonical = format!(
        "GET\n/test.txt\n\ndate:{date}\nhost:examplebucket.s3.amazonaws.com\n\
         x-amz-content-sha256:{EMPTY_SHA256}\n\ndate;host;x-amz-content-sha256\n{EMPTY_SHA256}"
    );
    let auth = format!(
        "AWS4-HMAC-SHA256 Credential={SCOPE}, SignedHeaders=date;host;x-amz-content-sha256, Signature={}",
        sign(&canonical)
    );
    let p = parts(
        "GET",
        "/test.txt",
        &[
            ("host", "examplebucket.s3.amazonaws.com"),
            ("x-amz-content-sha256", EMPTY_SHA256),
            ("date", date),
            ("authorization", &auth),
        ],
    );
    let v = verify(&p, &secrets, "us-east-1", t0() + Duration::from_secs(60)).unwrap();
    assert_eq!(v.signing.datetime, "20130524T000000Z");
    // The time-skew check applies to it as to X-Amz-Date.
    for off in [
        t0() + Duration::from_secs(16 * 60),
        t0() - Duration::from_secs(16 * 60),
    ] {
        assert_eq!(
            verify(&p, &secrets, "us-east-1", off).unwrap_err(),
            AuthError::TimeSkewed
        );
    }
}

#[test]
fn canonical_forms_match_hand_written_request() {
    // Path and query need re-encoding; repeated and padded header values.
    let canonical =
        "PUT\n/bucket/my%20key/a%2Bb%28c%29\nacl=&partNumber=2&prefix=a%2Bb%20c&uploadId=x%2Fy\n\
         host:localhost:9000\nx-amz-content-sha256:UNSIGNED-PAYLOAD\n\
         x-amz-date:20130524T000000Z\nx-amz-meta-a:one two,three\n\n\
         host;x-amz-content-sha256;x-amz-date;x-amz-meta-a\nUNSIGNED-PAYLOAD";
    let auth = format!(
        "AWS4-HMAC-SHA256 Credential={SCOPE},SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-amz-meta-a,Signature={}",
        sign(canonical)
    );
    let p = parts(
        "PUT",
        "/bucket/my%20key/a+b(c)?uploadId=x/y&prefix=a+b%20c&partNumber=2&acl",
        &[
            ("host", "localhost:9000"),
            ("x-amz-content-sha256", "UNSIGNED-PAYLOAD"),
            ("x-amz-date", "20130524T000000Z"),
            ("x-amz-meta-a", "  one    two "),
            ("x-amz-meta-a", "three"),
            ("authorization", &auth),
        ],
    );
    let v = verify(&p, &secrets, "us-east-1", t0()).unwrap();
    assert_eq!(v.payload, Payload::Unsigned);
    assert!(!is_aws_chunked(&v.payload));
}

#[test]
fn streaming_payload_values() {
    assert_eq!(
        Payload::from_header("STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER").unwrap(),
        Payload::StreamingSigned { trailer: true }
    );
    let p = Payload::from_header("STREAMING-UNSIGNED-PAYLOAD-TRAILER").unwrap();
    assert_eq!(p, Payload::StreamingUnsigned { trailer: true });
    assert!(is_aws_chunked(&p));
    let e = Payload::from_header("STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD").unwrap_err();
    assert_eq!(e.code(), "AccessDenied");
}

const PRESIGNED: &str = "/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404";

fn presigned(uri: &str, now: SystemTime) -> Result<Verified, AuthError> {
    let p = parts("GET", uri, &[("host", "examplebucket.s3.amazonaws.com")]);
    verify(&p, &secrets, "us-east-1", now)
}

#[test]
fn aws_presigned_example() {
    let v = presigned(PRESIGNED, t0() + Duration::from_secs(3600)).unwrap();
    assert_eq!((v.access_key.as_str(), v.payload), (AK, Payload::Unsigned));
    // Still valid at the last second, expired after.
    assert!(presigned(PRESIGNED, t0() + Duration::from_secs(86_400)).is_ok());
    let e = presigned(PRESIGNED, t0() + Duration::from_secs(86_401)).unwrap_err();
    assert_eq!(
        (e.code(), e.status(), e.to_string().as_str()),
        ("AccessDenied", 403, "Request has expired")
    );
    assert_eq!(
        presigned(PRESIGNED, t0() - Duration::from_secs(3600)).unwrap_err(),
        AuthError::NotYetValid
    );
    // Tampering with any signed part breaks the signature.
    let e = presigned(&PRESIGNED.replace("test.txt", "test.txu"), t0()).unwrap_err();
    assert_eq!(e, AuthError::SignatureMismatch);
    let e = presigned(&format!("{PRESIGNED}&x-id=GetObject"), t0()).unwrap_err();
    assert_eq!(e, AuthError::SignatureMismatch);
}

#[test]
fn presigned_parameter_errors() {
    let with_expires =
        |v: &str| PRESIGNED.replace("X-Amz-Expires=86400", &format!("X-Amz-Expires={v}"));
    let e = presigned(&with_expires("abc"), t0()).unwrap_err();
    assert_eq!(
        (e.code(), e.status()),
        ("AuthorizationQueryParametersError", 400)
    );
    // Out of range is refused as AWS refuses it: 403, never served, never a 400.
    for bad in ["604801", "-1", "-7", "0"] {
        let e = presigned(&with_expires(bad), t0()).unwrap_err();
        assert_eq!((e.code(), e.status()), ("AccessDenied", 403), "{bad}");
    }
    assert_eq!(
        presigned(&with_expires("0"), t0()).unwrap_err(),
        AuthError::Expired
    );
    let e = presigned(&PRESIGNED.replace("&X-Amz-SignedHeaders=host", ""), t0()).unwrap_err();
    assert_eq!(e.code(), "AuthorizationQueryParametersError");
    let e = presigned(&PRESIGNED.replace("us-east-1", "eu-west-1"), t0()).unwrap_err();
    assert_eq!(e.code(), "AuthorizationQueryParametersError");
    let e = presigned(
        &PRESIGNED.replace("AWS4-HMAC-SHA256", "AWS4-ECDSA-P256-SHA256"),
        t0(),
    )
    .unwrap_err();
    assert_eq!(e.code(), "AccessDenied");
    // Both mechanisms at once.
    let p = parts(
        "GET",
        PRESIGNED,
        &[
            ("host", "examplebucket.s3.amazonaws.com"),
            ("authorization", "AWS4-HMAC-SHA256 x"),
        ],
    );
    assert_eq!(
        verify(&p, &secrets, "us-east-1", t0()).unwrap_err().code(),
        "InvalidArgument"
    );
}

#[test]
fn helpers() {
    assert_eq!(canonical_uri(""), "/");
    assert_eq!(canonical_uri("/a%2fb/%7Ec d~"), "/a/b/~c%20d~");
    let q = parse_query("b=2&&a=x+y&c&a=1");
    assert_eq!(canonical_query(&q, false), "a=1&a=x%2By&b=2&c=");
    let mut out = Vec::new();
    push_trimmed(&mut out, b" \t a \t  b  c\t");
    assert_eq!(out, b"a b c");
}
