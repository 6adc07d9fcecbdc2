//! Property tests of the signature code: the `aws-chunked` decoder against random and corrupted
//! input and against an independent encoder, and SigV4 canonicalization and verification
//! against a straightforward model signer. Case counts are kept moderate (CI runs them).

use super::chunked::decode_aws_chunked;
use super::sigv4::canonical::{canonical_query, canonical_uri, parse_query};
use super::sigv4::{hmac, verify, Payload, SigningContext, EMPTY_SHA256};
use super::AuthError;
use bytes::Bytes;
use futures_util::Stream;
use proptest::prelude::*;
use sha2::{Digest, Sha256};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const DATETIME: &str = "20240102T030405Z";
const SCOPE: &str = "20240102/us-east-1/s3/aws4_request";

fn ctx() -> SigningContext {
    SigningContext::new([7; 32], DATETIME.into(), SCOPE.into(), [9; 32])
}

/// Splits `body` into frames at the given cut points (taken modulo its length, sorted).
fn frames(body: &[u8], cuts: &[usize]) -> Vec<Bytes> {
    let body = Bytes::copy_from_slice(body);
    let mut at: Vec<usize> = cuts.iter().map(|c| c % (body.len() + 1)).collect();
    at.push(0);
    at.push(body.len());
    at.sort_unstable();
    at.windows(2).map(|w| body.slice(w[0]..w[1])).collect()
}

/// Decodes to the end (the input never pends): the data, the error if any, the trailers.
fn decode(
    input: Vec<Bytes>,
    payload: Payload,
    len: Option<u64>,
) -> (Vec<u8>, Option<AuthError>, Vec<(String, String)>) {
    let input =
        futures_util::stream::iter(input.into_iter().map(Ok::<_, std::convert::Infallible>));
    let (stream, slot) = decode_aws_chunked(input, &payload, &ctx(), len);
    let mut stream = std::pin::pin!(stream);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut out = Vec::new();
    loop {
        match stream.as_mut().poll_next(&mut cx) {
            Poll::Ready(Some(Ok(b))) => out.extend_from_slice(&b),
            Poll::Ready(Some(Err(e))) => return (out, Some(e), slot.all()),
            Poll::Ready(None) => return (out, None, slot.all()),
            Poll::Pending => panic!("test input never pends"),
        }
    }
}

/// An independent aws-chunked encoder: `payload` cut into chunks of `sizes` (cycled), signed
/// (chained from the context's seed) or not, with an optional trailing header.
fn encode(
    payload: &[u8],
    sizes: &[usize],
    signed: bool,
    trailer: Option<&(String, String)>,
) -> Vec<u8> {
    let c = ctx();
    let mut chunks: Vec<&[u8]> = Vec::new();
    let mut rest = payload;
    for size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (a, b) = rest.split_at((*size).min(rest.len()));
        chunks.push(a);
        rest = b;
    }
    chunks.push(&[]);
    let mut prev = hex::encode([9u8; 32]);
    let mut out = Vec::new();
    for data in chunks {
        out.extend_from_slice(format!("{:x}", data.len()).as_bytes());
        if signed {
            let sts = format!(
                "AWS4-HMAC-SHA256-PAYLOAD\n{DATETIME}\n{SCOPE}\n{prev}\n{EMPTY_SHA256}\n{}",
                hex::encode(Sha256::digest(data))
            );
            prev = hex::encode(hmac(&c.key, sts.as_bytes()));
            out.extend_from_slice(format!(";chunk-signature={prev}").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        if !data.is_empty() {
            out.extend_from_slice(data);
            out.extend_from_slice(b"\r\n");
        }
    }
    if let Some((name, value)) = trailer {
        out.extend_from_slice(format!("{name}:{value}\r\n").as_bytes());
        if signed {
            let hash = hex::encode(Sha256::digest(format!("{name}:{value}\n")));
            let sts = format!("AWS4-HMAC-SHA256-TRAILER\n{DATETIME}\n{SCOPE}\n{prev}\n{hash}");
            let sig = hex::encode(hmac(&c.key, sts.as_bytes()));
            out.extend_from_slice(format!("x-amz-trailer-signature:{sig}\r\n").as_bytes());
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

fn payload_mode(signed: bool, trailer: bool) -> Payload {
    if signed {
        Payload::StreamingSigned { trailer }
    } else {
        Payload::StreamingUnsigned { trailer: true }
    }
}

fn trailer_strategy() -> impl Strategy<Value = Option<(String, String)>> {
    proptest::option::of(("x-amz-checksum-[a-z0-9]{1,8}", "[A-Za-z0-9+/=]{0,24}"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn chunked_random_input_never_panics(
        body in proptest::collection::vec(any::<u8>(), 0..512),
        cuts in proptest::collection::vec(any::<usize>(), 0..6),
        signed in any::<bool>(),
        trailer in any::<bool>(),
        len in proptest::option::of(0u64..600),
    ) {
        let _ = decode(frames(&body, &cuts), payload_mode(signed, trailer), len);
    }

    #[test]
    fn chunked_framing_like_input_never_panics(
        lines in proptest::collection::vec(
            "([0-9a-fA-F]{1,4}(;chunk-signature=[0-9a-f]{0,64})?|[a-z-]{0,12}:[ -~]{0,12}|[ -~]{0,8})(\r\n|\n)",
            0..8,
        ),
        cuts in proptest::collection::vec(any::<usize>(), 0..4),
        signed in any::<bool>(),
    ) {
        let body = lines.concat();
        let _ = decode(frames(body.as_bytes(), &cuts), payload_mode(signed, true), None);
    }

    #[test]
    fn chunked_valid_encodings_decode_to_the_payload(
        payload in proptest::collection::vec(any::<u8>(), 0..2048),
        sizes in proptest::collection::vec(1usize..700, 1..6),
        cuts in proptest::collection::vec(any::<usize>(), 0..6),
        signed in any::<bool>(),
        trailer in trailer_strategy(),
    ) {
        let body = encode(&payload, &sizes, signed, trailer.as_ref());
        let mode = payload_mode(signed, trailer.is_some());
        let (out, err, trailers) = decode(frames(&body, &cuts), mode, Some(payload.len() as u64));
        prop_assert_eq!(err, None);
        prop_assert!(out == payload);
        prop_assert_eq!(trailers, trailer.into_iter().collect::<Vec<_>>());
    }

    #[test]
    fn chunked_signed_streams_reject_any_altered_byte(
        payload in proptest::collection::vec(any::<u8>(), 1..1024),
        sizes in proptest::collection::vec(1usize..400, 1..4),
        trailer in trailer_strategy(),
        at in any::<usize>(),
        flip in 1u8..=255,
        cuts in proptest::collection::vec(any::<usize>(), 0..3),
    ) {
        let mut body = encode(&payload, &sizes, true, trailer.as_ref());
        let at = at % body.len();
        let original = body[at];
        body[at] ^= flip;
        let mode = Payload::StreamingSigned { trailer: trailer.is_some() };
        let (out, err, trailers) = decode(frames(&body, &cuts), mode, Some(payload.len() as u64));
        match err {
            Some(e) => prop_assert!(
                matches!(e, AuthError::SignatureMismatch | AuthError::IncompleteBody(_)),
                "{e:?}"
            ),
            None => {
                // Only a change of letter case where the format ignores it (a hex chunk size,
                // a trailer's name) may pass, and then nothing of the content changed.
                prop_assert!(
                    original.is_ascii_alphabetic() && flip == 0x20,
                    "byte {at} ({:?} -> {:?}) accepted",
                    original as char,
                    body[at] as char
                );
                prop_assert!(out == payload);
                prop_assert_eq!(trailers, trailer.into_iter().collect::<Vec<_>>());
            }
        }
    }
}

// ---- SigV4 canonicalization against a model ----

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~')
}

/// Percent-decodes `%XY` (two hex digits); anything else stays as it is.
fn model_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && b[i + 1].is_ascii_hexdigit()
            && b[i + 2].is_ascii_hexdigit()
        {
            let digit = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
            out.push(digit(b[i + 1]) * 16 + digit(b[i + 2]));
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// AWS URI encoding of bytes: unreserved characters (and `/` in paths) kept, the rest `%XY`.
fn model_encode(bytes: &[u8], keep_slash: bool) -> String {
    let mut out = String::new();
    for &b in bytes {
        if unreserved(b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn model_uri(path: &str) -> String {
    let e = model_encode(&model_decode(path), true);
    if e.is_empty() {
        "/".into()
    } else {
        e
    }
}

fn model_query(raw: &str, presigned: bool) -> String {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for item in raw.split('&') {
        if item.is_empty() {
            continue;
        }
        let (k, v) = match item.find('=') {
            Some(i) => (&item[..i], &item[i + 1..]),
            None => (item, ""),
        };
        let k = model_decode(k);
        if presigned && k == b"X-Amz-Signature" {
            continue;
        }
        pairs.push((
            model_encode(&k, false),
            model_encode(&model_decode(v), false),
        ));
    }
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// Text with the characters that matter to URI encoding: reserved ones, `%` (with and without
/// hex digits after it), `+`, spaces, non-ASCII.
fn uri_text() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            4 => "[a-zA-Z0-9]",
            2 => "[-_.~/ +=&?#%:@!$'()*,;]",
            1 => "%[0-9a-fA-FgG]{0,2}",
            1 => "[é日🦀\u{7f}]",
        ],
        0..24,
    )
    .prop_map(|v| v.concat())
}

fn signing_key(secret: &str) -> [u8; 32] {
    let k = hmac(format!("AWS4{secret}").as_bytes(), b"20240102");
    let k = hmac(&k, b"us-east-1");
    let k = hmac(&k, b"s3");
    hmac(&k, b"aws4_request")
}

/// A request described by its parts, signed by the model.
#[derive(Debug, Clone)]
struct Req {
    method: String,
    path: String,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
}

impl Req {
    fn uri(&self) -> String {
        let mut uri = format!("/{}", model_encode(self.path.as_bytes(), true));
        for (i, (k, v)) in self.query.iter().enumerate() {
            uri.push(if i == 0 { '?' } else { '&' });
            uri.push_str(&model_encode(k.as_bytes(), false));
            uri.push('=');
            uri.push_str(&model_encode(v.as_bytes(), false));
        }
        uri
    }

    /// The Authorization header the model computes for `signed` (lowercase, sorted names).
    fn authorization(&self, secret: &str, signed: &[String]) -> String {
        let mut query: Vec<(String, String)> = self
            .query
            .iter()
            .map(|(k, v)| {
                (
                    model_encode(k.as_bytes(), false),
                    model_encode(v.as_bytes(), false),
                )
            })
            .collect();
        query.sort();
        let query: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut canonical_headers = String::new();
        for name in signed {
            let values: Vec<String> = self
                .headers
                .iter()
                .filter(|(k, _)| k.to_ascii_lowercase() == *name)
                .map(|(_, v)| v.split_whitespace().collect::<Vec<_>>().join(" "))
                .collect();
            canonical_headers.push_str(&format!("{name}:{}\n", values.join(",")));
        }
        let path = model_encode(self.path.as_bytes(), true);
        let creq = format!(
            "{}\n/{path}\n{}\n{canonical_headers}\n{}\nUNSIGNED-PAYLOAD",
            self.method,
            query.join("&"),
            signed.join(";")
        );
        let sts = format!(
            "AWS4-HMAC-SHA256\n{DATETIME}\n{SCOPE}\n{}",
            hex::encode(Sha256::digest(creq.as_bytes()))
        );
        let sig = hex::encode(hmac(&signing_key(secret), sts.as_bytes()));
        format!(
            "AWS4-HMAC-SHA256 Credential=AKID/{SCOPE}, SignedHeaders={}, Signature={sig}",
            signed.join(";")
        )
    }

    fn parts(&self, authorization: &str) -> http::request::Parts {
        let mut b = http::Request::builder()
            .method(self.method.as_str())
            .uri(self.uri());
        for (k, v) in &self.headers {
            b = b.header(k.as_str(), v.as_str());
        }
        b.header("authorization", authorization)
            .body(())
            .expect("valid test request")
            .into_parts()
            .0
    }
}

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_704_164_645) // 2024-01-02T03:04:05Z
}

fn request() -> impl Strategy<Value = Req> {
    (
        prop::sample::select(vec!["GET", "PUT", "POST", "DELETE", "HEAD"]),
        uri_text(),
        proptest::collection::vec((uri_text(), uri_text()), 0..4),
        proptest::collection::vec(("[a-z]{1,6}", "[ -~]{0,16}"), 0..4),
    )
        .prop_map(|(method, path, query, meta)| {
            let mut headers = vec![
                ("host".to_string(), "s3.example.com:9000".to_string()),
                ("x-amz-date".to_string(), DATETIME.to_string()),
                (
                    "x-amz-content-sha256".to_string(),
                    "UNSIGNED-PAYLOAD".to_string(),
                ),
            ];
            for (k, v) in meta {
                headers.push((format!("x-amz-meta-{k}"), v.trim().to_string()));
            }
            Req {
                method: method.to_string(),
                path,
                query,
                headers,
            }
        })
}

fn signed_names(r: &Req) -> Vec<String> {
    let mut names: Vec<String> = r
        .headers
        .iter()
        .map(|(k, _)| k.to_ascii_lowercase())
        .collect();
    names.sort();
    names.dedup();
    names
}

fn secrets(ak: &str) -> Option<String> {
    (ak == "AKID").then(|| "secret/key+1".to_string())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn canonical_uri_agrees_with_the_model(path in uri_text()) {
        let path = format!("/{path}");
        prop_assert_eq!(canonical_uri(&path), model_uri(&path));
    }

    #[test]
    fn canonical_query_agrees_with_the_model(raw in uri_text(), presigned in any::<bool>()) {
        prop_assert_eq!(canonical_query(&parse_query(&raw), presigned), model_query(&raw, presigned));
    }

    #[test]
    fn signed_requests_verify_and_altered_ones_do_not(r in request(), alteration in 0usize..7) {
        let names = signed_names(&r);
        let auth = r.authorization("secret/key+1", &names);
        let v = verify(&r.parts(&auth), &secrets, "us-east-1", now());
        prop_assert!(v.is_ok(), "{:?} for {:?}", v.err(), r);
        prop_assert_eq!(v.unwrap().access_key, "AKID");

        // Each alteration of a signed part breaks the signature.
        let mut bad = r.clone();
        match alteration {
            0 => bad.method = if r.method == "PUT" { "POST".into() } else { "PUT".into() },
            1 => bad.path.push('x'),
            2 => bad.query.push(("extra".into(), String::new())),
            3 => match bad.query.first_mut() {
                Some(q) => q.1.push('1'),
                None => bad.query.push(("a".into(), "1".into())),
            },
            4 => bad.headers[0].1 = "other.example.com".into(),
            5 => bad.headers[1].1 = "20240102T030406Z".into(),
            _ => match bad.headers.get_mut(3) {
                Some(h) => h.1.push('!'),
                None => bad.path.insert(0, 'y'),
            },
        }
        let e = verify(&bad.parts(&auth), &secrets, "us-east-1", now());
        prop_assert!(e.is_err(), "alteration {} accepted: {:?}", alteration, bad);
        // The wrong secret never verifies.
        let wrong = r.authorization("another secret", &names);
        prop_assert_eq!(
            verify(&r.parts(&wrong), &secrets, "us-east-1", now()).err(),
            Some(AuthError::SignatureMismatch)
        );
    }

    #[test]
    fn arbitrary_authorization_headers_never_panic(
        auth in "[ -~]{0,200}",
        path in uri_text(),
        date in proptest::option::of("[0-9TZ]{0,20}"),
        sha in proptest::option::of("[0-9a-zA-Z-]{0,70}"),
    ) {
        let mut b = http::Request::builder()
            .uri(format!("/{}", model_encode(path.as_bytes(), true)))
            .header("host", "h");
        if let Ok(v) = http::HeaderValue::from_str(&auth) {
            b = b.header("authorization", v);
        }
        if let Some(d) = date {
            b = b.header("x-amz-date", d);
        }
        if let Some(s) = sha {
            b = b.header("x-amz-content-sha256", s);
        }
        let parts = b.body(()).unwrap().into_parts().0;
        let _ = verify(&parts, &secrets, "us-east-1", now());
    }

    #[test]
    fn arbitrary_presigned_queries_never_panic(query in uri_text(), expires in "[0-9-]{0,8}") {
        let uri = format!(
            "/b/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKID%2F{}&X-Amz-Date={DATETIME}&X-Amz-Expires={expires}&X-Amz-SignedHeaders=host&X-Amz-Signature={}&{}",
            SCOPE.replace('/', "%2F"),
            "0".repeat(64),
            model_encode(query.as_bytes(), false),
        );
        let parts = http::Request::builder().uri(uri).header("host", "h").body(()).unwrap().into_parts().0;
        let _ = verify(&parts, &secrets, "us-east-1", now());
    }
}
