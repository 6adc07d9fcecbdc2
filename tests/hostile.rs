//! Hostile and careless clients against a real cluster: every limit answered with the S3 error
//! AWS gives (header section, XML bodies, DeleteObjects keys, part numbers and sizes, key
//! length), slow or stalled clients cut off, malformed and tampered requests refused, expired
//! presigned URLs, browser form uploads (PostObject) with their policies, operations tinydfs does
//! not have answered NotImplemented, and overload answered 503 SlowDown at once. No process may
//! die: every node answers its health check at the end of each test.
//!
//! Timing bounds are generous (the slowest is "well within 30 s" for a 3 s timeout).

mod common;

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Percent-encodes all but the unreserved characters (AWS URI encoding).
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Signs a request at time `t`: answers the query string (encoded, sorted) and the headers to
/// send. `path` is already URI-encoded; `extra` headers are signed too.
fn sign_at(
    t: SystemTime,
    host: &str,
    method: &str,
    path: &str,
    query: &[(&str, &str)],
    payload_hash: &str,
    extra: &[(&str, &str)],
) -> (String, Vec<(String, String)>) {
    let mut q: Vec<(String, String)> = query.iter().map(|(k, v)| (enc(k), enc(v))).collect();
    q.sort();
    let query = q
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let target = if query.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{query}")
    };
    let (headers, _) = sign_v4(t, method, host, &target, payload_hash, extra);
    (query, headers)
}

/// A reqwest request for a signed one (reqwest sets `host` itself; no pooled connections, so
/// the gateway's idle-connection timeout never races a request).
fn reqwest_signed(
    http: &reqwest::Client,
    endpoint: &str,
    method: reqwest::Method,
    path: &str,
    query: &str,
    headers: &[(String, String)],
) -> reqwest::RequestBuilder {
    let url = if query.is_empty() {
        format!("{endpoint}{path}")
    } else {
        format!("{endpoint}{path}?{query}")
    };
    let mut r = http.request(method, url);
    for (k, v) in headers {
        if k != "host" {
            r = r.header(k, v);
        }
    }
    r
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

/// Sends raw bytes, reads the answer until the server closes or `wait` passes.
fn raw(addr: &str, request: &[u8], wait: Duration) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    let _ = s.write_all(request);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// The S3 error code of an SDK error.
fn code<E: ProvideErrorMetadata>(e: &E) -> String {
    e.code().unwrap_or("").to_string()
}

/// Every node of the cluster still answers its health check, and no process died.
fn all_alive(cluster: &Cluster) {
    for n in cluster.nodes() {
        let addr = n["addr"].as_str().unwrap();
        let r = raw(
            addr,
            format!("GET /_health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
            Duration::from_secs(10),
        );
        assert!(
            r.starts_with("HTTP/1.1 200"),
            "{} does not answer: {r}",
            n["name"]
        );
    }
}

fn elapsed_within(start: Instant, bound: Duration, what: &str) {
    assert!(start.elapsed() < bound, "{what} took {:?}", start.elapsed());
}

#[test]
fn limits_and_malformed_requests_get_s3_errors() {
    let cluster = Cluster::start(Opts {
        extra: vec![
            "--gateway-arg=--header-timeout-ms=3000".into(),
            "--gateway-arg=--body-timeout-ms=3000".into(),
        ],
        ..Opts::default()
    });
    let c = cluster.client();
    let http = http_client();
    let ep = &cluster.endpoint;
    let host = &cluster.s3_addr;
    rt().block_on(async {
        c.create_bucket().bucket("hos").send().await.unwrap();

        // Request head: beyond 8 KiB an S3 error, beyond 64 KiB hyper's 431.
        let r = http
            .get(format!("{ep}/hos/k"))
            .header("x-amz-meta-big", "v".repeat(9 * 1024))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 400);
        assert!(r
            .text()
            .await
            .unwrap()
            .contains("<Code>RequestHeaderSectionTooLarge</Code>"));
        let r = http
            .get(format!("{ep}/hos/k"))
            .header("x-amz-meta-big", "v".repeat(70 * 1024))
            .send()
            .await;
        assert!(r.map(|r| r.status().as_u16() == 431).unwrap_or(true));

        // Keys: 1,024 bytes of UTF-8 at most.
        let long = "é".repeat(512);
        c.put_object()
            .bucket("hos")
            .key(&long)
            .body(ByteStream::from_static(b"x"))
            .send()
            .await
            .unwrap();
        let e = c
            .put_object()
            .bucket("hos")
            .key(format!("{long}a"))
            .body(ByteStream::from_static(b"x"))
            .send()
            .await
            .unwrap_err();
        assert_eq!(code(&e), "KeyTooLongError");

        // DeleteObjects: at most 1,000 keys; an XML body over the bound is refused unread.
        let ids = |n: usize, len: usize| {
            (0..n)
                .map(|i| {
                    aws_sdk_s3::types::ObjectIdentifier::builder()
                        .key(format!("{i:04}{}", "&".repeat(len)))
                        .build()
                        .unwrap()
                })
                .collect::<Vec<_>>()
        };
        let delete = |objects| {
            aws_sdk_s3::types::Delete::builder()
                .set_objects(Some(objects))
                .build()
                .unwrap()
        };
        let e = c
            .delete_objects()
            .bucket("hos")
            .delete(delete(ids(1001, 1)))
            .send()
            .await
            .unwrap_err();
        assert_eq!(code(&e), "MalformedXML");
        let e = c
            .delete_objects()
            .bucket("hos")
            .delete(delete(ids(1000, 1000)))
            .send()
            .await
            .unwrap_err();
        assert_eq!(code(&e), "MaxMessageLengthExceeded");
        c.delete_objects()
            .bucket("hos")
            .delete(delete(ids(1000, 1)))
            .send()
            .await
            .unwrap();
        // Keys are deleted exactly as named: " spaced" is not "spaced".
        for k in ["spaced", " spaced "] {
            put(&c, "hos", k, k.as_bytes().to_vec()).await.unwrap();
        }
        let one = aws_sdk_s3::types::ObjectIdentifier::builder()
            .key(" spaced ")
            .build()
            .unwrap();
        c.delete_objects()
            .bucket("hos")
            .delete(delete(vec![one]))
            .send()
            .await
            .unwrap();
        assert_eq!(get(&c, "hos", "spaced").await.unwrap(), b"spaced");
        assert!(get(&c, "hos", " spaced ").await.is_err());
        // A version other than null is not deleted as if it were the object.
        let versioned = aws_sdk_s3::types::ObjectIdentifier::builder()
            .key("spaced")
            .version_id("3HL4kqtJlcpXroDTDmJ")
            .build()
            .unwrap();
        let e = c
            .delete_objects()
            .bucket("hos")
            .delete(delete(vec![versioned]))
            .send()
            .await
            .unwrap_err();
        assert_eq!(code(&e), "NotImplemented");
        assert_eq!(get(&c, "hos", "spaced").await.unwrap(), b"spaced");

        // Malformed XML.
        let body = b"<Delete><Object><Key>a</Key></Object>".to_vec();
        let (q, h) = sign_at(
            SystemTime::now(),
            host,
            "POST",
            "/hos",
            &[("delete", "")],
            &sha_hex(&body),
            &[],
        );
        let r = reqwest_signed(&http, ep, reqwest::Method::POST, "/hos", &q, &h)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 400);
        assert!(r
            .text()
            .await
            .unwrap()
            .contains("<Code>MalformedXML</Code>"));

        // Part numbers 1..=10,000; parts other than the last at least 5 MiB.
        let up = c
            .create_multipart_upload()
            .bucket("hos")
            .key("mp")
            .send()
            .await
            .unwrap();
        let id = up.upload_id().unwrap();
        for n in [0, 10_001] {
            let e = c
                .upload_part()
                .bucket("hos")
                .key("mp")
                .upload_id(id)
                .part_number(n)
                .body(ByteStream::from_static(b"p"))
                .send()
                .await
                .unwrap_err();
            assert_eq!(code(&e), "InvalidArgument", "part {n}");
        }
        let mut parts = Vec::new();
        for n in [1, 2] {
            let p = c
                .upload_part()
                .bucket("hos")
                .key("mp")
                .upload_id(id)
                .part_number(n)
                .body(ByteStream::from(vec![b'p'; 1024]))
                .send()
                .await
                .unwrap();
            parts.push(
                aws_sdk_s3::types::CompletedPart::builder()
                    .part_number(n)
                    .e_tag(p.e_tag().unwrap())
                    .build(),
            );
        }
        let e = c
            .complete_multipart_upload()
            .bucket("hos")
            .key("mp")
            .upload_id(id)
            .multipart_upload(
                aws_sdk_s3::types::CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .unwrap_err();
        assert_eq!(code(&e), "EntityTooSmall");

        // Malformed aws-chunked framing.
        let mode = "STREAMING-UNSIGNED-PAYLOAD-TRAILER";
        let (_, h) = sign_at(
            SystemTime::now(),
            host,
            "PUT",
            "/hos/chunked",
            &[],
            mode,
            &[],
        );
        let r = reqwest_signed(&http, ep, reqwest::Method::PUT, "/hos/chunked", "", &h)
            .header("content-encoding", "aws-chunked")
            .body("zz\r\nnot hex\r\n")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 400);
        assert!(r
            .text()
            .await
            .unwrap()
            .contains("<Code>IncompleteBody</Code>"));

        // Clock skew, a replay inside the window (accepted, as on S3), tampering.
        let old = SystemTime::now() - Duration::from_secs(20 * 60);
        let empty = sha_hex(b"");
        let (_, h) = sign_at(old, host, "GET", "/hos", &[], &empty, &[]);
        let r = reqwest_signed(&http, ep, reqwest::Method::GET, "/hos", "", &h)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 403);
        assert!(r
            .text()
            .await
            .unwrap()
            .contains("<Code>RequestTimeTooSkewed</Code>"));
        let (_, h) = sign_at(
            SystemTime::now(),
            host,
            "GET",
            "/hos",
            &[],
            &empty,
            &[("x-amz-meta-x", "1")],
        );
        for _ in 0..2 {
            let r = reqwest_signed(&http, ep, reqwest::Method::GET, "/hos", "", &h)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 200);
        }
        let r = reqwest_signed(&http, ep, reqwest::Method::GET, "/hos", "prefix=a", &h)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 403);
        assert!(r
            .text()
            .await
            .unwrap()
            .contains("<Code>SignatureDoesNotMatch</Code>"));
        let mut tampered = h.clone();
        for (k, v) in tampered.iter_mut() {
            if k == "x-amz-meta-x" {
                *v = "2".into();
            }
        }
        let r = reqwest_signed(&http, ep, reqwest::Method::GET, "/hos", "", &tampered)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 403);

        // Presigned URLs: expired, and valid for more than 7 days.
        c.put_object()
            .bucket("hos")
            .key("p")
            .body(ByteStream::from_static(b"p"))
            .send()
            .await
            .unwrap();
        let expired = PresigningConfig::builder()
            .start_time(SystemTime::now() - Duration::from_secs(120))
            .expires_in(Duration::from_secs(60))
            .build()
            .unwrap();
        let url = c
            .get_object()
            .bucket("hos")
            .key("p")
            .presigned(expired)
            .await
            .unwrap();
        let r = http.get(url.uri()).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 403);
        let text = r.text().await.unwrap();
        assert!(
            text.contains("<Code>AccessDenied</Code>") && text.contains("Request has expired"),
            "{text}"
        );
        let fine = PresigningConfig::expires_in(Duration::from_secs(600)).unwrap();
        let url = c
            .get_object()
            .bucket("hos")
            .key("p")
            .presigned(fine)
            .await
            .unwrap();
        assert_eq!(
            http.get(url.uri()).send().await.unwrap().status().as_u16(),
            200
        );
        let too_long = url
            .uri()
            .replace("X-Amz-Expires=600", "X-Amz-Expires=604801");
        // Out of range is refused as AWS refuses it: 403 AccessDenied.
        let r = http.get(too_long).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 403);
        assert!(r
            .text()
            .await
            .unwrap()
            .contains("<Code>AccessDenied</Code>"));
    });

    // Garbage instead of HTTP: hyper's 400, and the gateway serves on.
    let r = raw(
        host,
        b"\x16\x03\x01 not http at all\r\n\r\n",
        Duration::from_secs(10),
    );
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");

    // Slowloris: a head sent a byte at a time is cut off after the header timeout (3 s), even
    // though bytes keep coming.
    let start = Instant::now();
    let mut s = TcpStream::connect(host).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let head = b"GET /hos HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut closed = false;
    for b in head.iter() {
        if s.write_all(&[*b]).is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 64];
        match s.read(&mut buf) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => {
                closed = true;
                break;
            }
        }
        if start.elapsed() > Duration::from_secs(30) {
            break;
        }
    }
    assert!(closed, "a slow request head was not cut off");
    elapsed_within(start, Duration::from_secs(30), "cutting off a slow head");

    // A body that stalls: 400 RequestTimeout after the body timeout (3 s).
    let (_, h) = sign_at(
        SystemTime::now(),
        host,
        "PUT",
        "/hos/stalled",
        &[],
        "UNSIGNED-PAYLOAD",
        &[],
    );
    let mut req = "PUT /hos/stalled HTTP/1.1\r\nContent-Length: 1000\r\n".to_string();
    for (k, v) in &h {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n0123456789");
    let start = Instant::now();
    let r = raw(host, req.as_bytes(), Duration::from_secs(40));
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    assert!(r.contains("<Code>RequestTimeout</Code>"), "{r}");
    elapsed_within(start, Duration::from_secs(30), "timing out a stalled body");

    rt().block_on(async {
        let e = c
            .head_object()
            .bucket("hos")
            .key("stalled")
            .send()
            .await
            .unwrap_err();
        assert_eq!(e.raw_response().map(|r| r.status().as_u16()), Some(404));
    });
    all_alive(&cluster);
}

#[test]
fn unsupported_operations_answer_not_implemented() {
    let cluster = Cluster::start(Opts::default());
    let c = cluster.client();
    let http = http_client();
    let ep = &cluster.endpoint;
    let host = &cluster.s3_addr;
    rt().block_on(async {
        c.create_bucket().bucket("nim").send().await.unwrap();
        c.put_object()
            .bucket("nim")
            .key("k")
            .body(ByteStream::from_static(b"k"))
            .send()
            .await
            .unwrap();
        macro_rules! not_implemented {
            ($call:expr, $what:expr) => {{
                let e = $call.send().await.unwrap_err();
                assert_eq!(code(&e), "NotImplemented", "{}: {e:?}", $what);
                assert_eq!(
                    e.raw_response().map(|r| r.status().as_u16()),
                    Some(501),
                    "{}",
                    $what
                );
            }};
        }
        not_implemented!(
            c.get_object_torrent().bucket("nim").key("k"),
            "GetObjectTorrent"
        );
        not_implemented!(
            c.get_object_retention().bucket("nim").key("k"),
            "GetObjectRetention"
        );
        not_implemented!(
            c.get_object_legal_hold().bucket("nim").key("k"),
            "GetObjectLegalHold"
        );
        not_implemented!(c.get_object_acl().bucket("nim").key("k"), "GetObjectAcl");
        not_implemented!(c.restore_object().bucket("nim").key("k"), "RestoreObject");
        not_implemented!(c.list_object_versions().bucket("nim"), "ListObjectVersions");
        not_implemented!(
            c.get_object_lock_configuration().bucket("nim"),
            "GetObjectLockConfiguration"
        );
        not_implemented!(c.get_bucket_website().bucket("nim"), "GetBucketWebsite");
        not_implemented!(c.get_bucket_policy().bucket("nim"), "GetBucketPolicy");
        not_implemented!(
            c.get_bucket_replication().bucket("nim"),
            "GetBucketReplication"
        );
        not_implemented!(
            c.get_bucket_encryption().bucket("nim"),
            "GetBucketEncryption"
        );
        not_implemented!(c.get_bucket_logging().bucket("nim"), "GetBucketLogging");
        not_implemented!(
            c.get_bucket_inventory_configuration().bucket("nim").id("i"),
            "GetBucketInventoryConfiguration"
        );
        not_implemented!(
            c.put_bucket_versioning()
                .bucket("nim")
                .versioning_configuration(
                    aws_sdk_s3::types::VersioningConfiguration::builder()
                        .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
                        .build()
                ),
            "PutBucketVersioning"
        );
        not_implemented!(
            c.create_bucket()
                .bucket("locked")
                .object_lock_enabled_for_bucket(true),
            "CreateBucket with Object Lock"
        );
        not_implemented!(
            c.put_object()
                .bucket("nim")
                .key("kms")
                .server_side_encryption(aws_sdk_s3::types::ServerSideEncryption::AwsKms),
            "SSE-KMS"
        );
        not_implemented!(
            c.put_object()
                .bucket("nim")
                .key("acl")
                .acl(aws_sdk_s3::types::ObjectCannedAcl::PublicRead),
            "object ACL"
        );
        let e = c
            .put_object()
            .bucket("nim")
            .key("lock")
            .object_lock_mode(aws_sdk_s3::types::ObjectLockMode::Governance)
            .object_lock_retain_until_date(aws_smithy_types::DateTime::from_secs(4_000_000_000))
            .send()
            .await
            .unwrap_err();
        assert_eq!(code(&e), "InvalidRequest");
        // Raw: SelectObjectContent, RenameObject, CreateSession.
        let empty = sha_hex(b"");
        for (method, path, query) in [
            ("POST", "/nim/k", vec![("select", ""), ("select-type", "2")]),
            ("PUT", "/nim/k", vec![("renameObject", "")]),
            ("GET", "/nim", vec![("session", "")]),
        ] {
            let (q, h) = sign_at(SystemTime::now(), host, method, path, &query, &empty, &[]);
            let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
            let r = reqwest_signed(&http, ep, m, path, &q, &h)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 501, "{method} {path}?{q}");
        }
        // Nothing was written by the refused requests.
        for k in ["kms", "acl", "lock"] {
            assert!(
                c.head_object().bucket("nim").key(k).send().await.is_err(),
                "{k}"
            );
        }
        assert_eq!(get(&c, "nim", "k").await.unwrap(), b"k");
    });
    all_alive(&cluster);
}

/// A form upload's body: `fields` in order, then the file.
fn form(boundary: &str, fields: &[(&str, String)], filename: &str, file: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
                .as_bytes(),
        );
    }
    out.extend_from_slice(
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n")
            .as_bytes(),
    );
    out.extend_from_slice(file);
    out.extend_from_slice(format!("\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"submit\"\r\n\r\nUpload\r\n--{boundary}--\r\n").as_bytes());
    out
}

/// The signed fields of a POST policy expiring at `expires` with `conditions` (JSON list
/// items, the credential, algorithm and date conditions added).
fn signed_policy(expires: SystemTime, conditions: &[String]) -> Vec<(&'static str, String)> {
    signed_policy_as(ACCESS_KEY, SECRET_KEY, expires, conditions)
}

fn signed_policy_as(
    ak: &str,
    sk: &str,
    expires: SystemTime,
    conditions: &[String],
) -> Vec<(&'static str, String)> {
    let now = SystemTime::now();
    let now_ms = now.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    let amz = tinydfs_proto::time::amz_datetime(now_ms);
    let day = amz[..8].to_string();
    let credential = format!("{ak}/{day}/us-east-1/s3/aws4_request");
    let exp_ms = expires.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    let mut all = conditions.to_vec();
    all.push(format!("{{\"x-amz-credential\": \"{credential}\"}}"));
    all.push("{\"x-amz-algorithm\": \"AWS4-HMAC-SHA256\"}".into());
    all.push(format!("{{\"x-amz-date\": \"{amz}\"}}"));
    let policy = format!(
        "{{ \"expiration\": \"{}\",\n  \"conditions\": [{}] }}",
        tinydfs_proto::time::iso8601(exp_ms),
        all.join(",\n")
    );
    let b64 = aws_smithy_types::base64::encode(policy.as_bytes());
    let sig = signature_of(sk, now, &b64);
    vec![
        ("x-amz-credential", credential),
        ("x-amz-algorithm", "AWS4-HMAC-SHA256".into()),
        ("x-amz-date", amz),
        ("Policy", b64),
        ("X-Amz-Signature", sig),
    ]
}

#[test]
fn browser_form_uploads_follow_their_policy() {
    let cluster = Cluster::start(Opts::default());
    let c = cluster.client();
    let http = http_client();
    let ep = &cluster.endpoint;
    let boundary = "----WebKitFormBoundaryTinydfs7MA4YWxk";
    let content_type = format!("multipart/form-data; boundary={boundary}");
    let hour = SystemTime::now() + Duration::from_secs(3600);
    let conditions = vec![
        "{\"bucket\": \"forms\"}".to_string(),
        "[\"starts-with\", \"$key\", \"uploads/\"]".to_string(),
        "[\"content-length-range\", 1, 1000000]".to_string(),
        "[\"starts-with\", \"$Content-Type\", \"image/\"]".to_string(),
        "{\"success_action_status\": \"201\"}".to_string(),
        "[\"starts-with\", \"$x-amz-meta-owner\", \"\"]".to_string(),
    ];
    let file = data(700_000, 11); // several chunks of the test chunk size
    rt().block_on(async {
        c.create_bucket().bucket("forms").send().await.unwrap();
        let post = |fields: Vec<(&'static str, String)>, file: Vec<u8>| {
            let body = form(boundary, &fields, "photo.png", &file);
            http.post(format!("{ep}/forms"))
                .header("content-type", &content_type)
                .body(body)
                .send()
        };
        let base = |key: &str, policy: Vec<(&'static str, String)>| {
            let mut f = vec![
                ("key", key.to_string()),
                ("Content-Type", "image/png".to_string()),
                ("success_action_status", "201".to_string()),
                ("x-amz-meta-owner", "alice".to_string()),
            ];
            f.extend(policy);
            f
        };

        // A valid upload: stored under the key with ${filename}, readable and equal.
        let r = post(
            base("uploads/${filename}", signed_policy(hour, &conditions)),
            file.clone(),
        )
        .await
        .unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        assert_eq!(status, 201, "{text}");
        assert!(text.contains("<Key>uploads/photo.png</Key>"), "{text}");
        assert!(
            text.contains(&format!("<ETag>&quot;{}&quot;</ETag>", md5_hex(&file))),
            "{text}"
        );
        let got = c
            .get_object()
            .bucket("forms")
            .key("uploads/photo.png")
            .send()
            .await
            .unwrap();
        assert_eq!(got.content_type(), Some("image/png"));
        assert_eq!(
            got.metadata()
                .and_then(|m| m.get("owner"))
                .map(String::as_str),
            Some("alice")
        );
        assert!(got.body.collect().await.unwrap().into_bytes().as_ref() == file.as_slice());

        let refused = |r: reqwest::Response, status: u16, code: &'static str| async move {
            let got = r.status().as_u16();
            let text = r.text().await.unwrap();
            assert_eq!(got, status, "{text}");
            assert!(text.contains(&format!("<Code>{code}</Code>")), "{text}");
        };
        // Expired policy.
        let past = SystemTime::now() - Duration::from_secs(60);
        let r = post(
            base("uploads/late", signed_policy(past, &conditions)),
            b"x".to_vec(),
        )
        .await
        .unwrap();
        refused(r, 403, "AccessDenied").await;
        // A key outside the policy's prefix.
        let r = post(
            base("elsewhere/x", signed_policy(hour, &conditions)),
            b"x".to_vec(),
        )
        .await
        .unwrap();
        refused(r, 403, "AccessDenied").await;
        // A field the policy does not name.
        let mut extra = base("uploads/extra", signed_policy(hour, &conditions));
        extra.push(("x-amz-meta-other", "1".into()));
        let r = post(extra, b"x".to_vec()).await.unwrap();
        refused(r, 403, "AccessDenied").await;
        // A file larger than content-length-range allows, or empty.
        let r = post(
            base("uploads/big", signed_policy(hour, &conditions)),
            vec![0; 1_000_001],
        )
        .await
        .unwrap();
        refused(r, 400, "EntityTooLarge").await;
        let r = post(
            base("uploads/empty", signed_policy(hour, &conditions)),
            Vec::new(),
        )
        .await
        .unwrap();
        refused(r, 400, "EntityTooSmall").await;
        // A signature over another policy.
        let mut forged = base("uploads/forged", signed_policy(hour, &conditions));
        let other = signed_policy(hour, &conditions[..1]);
        for f in forged.iter_mut() {
            if f.0 == "X-Amz-Signature" {
                f.1 = other
                    .iter()
                    .find(|o| o.0 == "X-Amz-Signature")
                    .unwrap()
                    .1
                    .clone();
            }
        }
        let r = post(forged, b"x".to_vec()).await.unwrap();
        refused(r, 403, "SignatureDoesNotMatch").await;
        // No policy at all.
        let r = post(vec![("key", "uploads/anon".into())], b"x".to_vec())
            .await
            .unwrap();
        refused(r, 403, "AccessDenied").await;
        for key in [
            "uploads/late",
            "elsewhere/x",
            "uploads/extra",
            "uploads/big",
            "uploads/empty",
            "uploads/forged",
            "uploads/anon",
        ] {
            assert!(
                c.head_object()
                    .bucket("forms")
                    .key(key)
                    .send()
                    .await
                    .is_err(),
                "{key} was stored"
            );
        }

        // A redirect on success (and the default 204 otherwise).
        let redirect = vec![
            "{\"bucket\": \"forms\"}".to_string(),
            "{\"key\": \"r\"}".to_string(),
            "{\"success_action_redirect\": \"http://example.com/done?x=1\"}".to_string(),
        ];
        let mut f = vec![
            ("key", "r".to_string()),
            (
                "success_action_redirect",
                "http://example.com/done?x=1".to_string(),
            ),
        ];
        f.extend(signed_policy(hour, &redirect));
        let no_redirects = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let r = no_redirects
            .post(format!("{ep}/forms"))
            .header("content-type", &content_type)
            .body(form(boundary, &f, "r.txt", b"redirected"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 303);
        let location = r.headers()["location"].to_str().unwrap().to_string();
        assert!(
            location.starts_with("http://example.com/done?x=1&bucket=forms&key=r&etag=%22"),
            "{location}"
        );
        let plain = vec![
            "{\"bucket\": \"forms\"}".to_string(),
            "{\"key\": \"plain\"}".to_string(),
        ];
        let mut f = vec![("key", "plain".to_string())];
        f.extend(signed_policy(hour, &plain));
        let r = post(f, b"plain".to_vec()).await.unwrap();
        assert_eq!(r.status().as_u16(), 204);
        assert_eq!(get(&c, "forms", "plain").await.unwrap(), b"plain");
        assert_eq!(get(&c, "forms", "r").await.unwrap(), b"redirected");

        // A policy signed by a key that may only read the bucket.
        let (code_, out) = cluster.admin(&[
            "key",
            "create",
            "--json",
            "--name",
            "reader",
            "--bucket",
            "forms=read",
        ]);
        assert_eq!(code_, 0, "{out}");
        let v: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
        let (rid, rsecret) = (
            v["access_key_id"].as_str().unwrap(),
            v["secret_access_key"].as_str().unwrap(),
        );
        let mut f = vec![("key", "uploads/reader".to_string())];
        let cond = vec![
            "{\"bucket\": \"forms\"}".to_string(),
            "{\"key\": \"uploads/reader\"}".to_string(),
        ];
        f.extend(signed_policy_as(rid, rsecret, hour, &cond));
        let r = post(f, b"x".to_vec()).await.unwrap();
        refused(r, 403, "AccessDenied").await;
        assert!(c
            .head_object()
            .bucket("forms")
            .key("uploads/reader")
            .send()
            .await
            .is_err());
    });
    all_alive(&cluster);
}

#[test]
fn overload_is_answered_slow_down_at_once() {
    let cluster = Cluster::start(Opts {
        extra: vec![
            "--gateway-arg=--max-requests=2".into(),
            "--gateway-arg=--body-timeout-ms=120000".into(),
        ],
        ..Opts::default()
    });
    let c = cluster.client();
    let http = http_client();
    let ep = cluster.endpoint.clone();
    let host = cluster.s3_addr.clone();
    rt().block_on(async {
        c.create_bucket().bucket("busy").send().await.unwrap();
        // Uploads work (the gateway holds its upload lease): the held ones below wait for
        // their bodies instead of failing at once.
        put(&c, "busy", "warm", b"up".to_vec()).await.unwrap();
    });
    // Two uploads that send their head and a little of the body, then hold on.
    let mut held = Vec::new();
    for i in 0..2 {
        let path = format!("/busy/slow{i}");
        let (_, h) = sign_at(
            SystemTime::now(),
            &host,
            "PUT",
            &path,
            &[],
            "UNSIGNED-PAYLOAD",
            &[],
        );
        let mut req = format!("PUT {path} HTTP/1.1\r\nContent-Length: 1000000\r\n");
        for (k, v) in &h {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        // The permits of the requests before may not all be back yet: one answered at once
        // (503) is sent again until it is held (no answer within half a second).
        let deadline = Instant::now() + Duration::from_secs(30);
        let s = loop {
            let mut s = TcpStream::connect(&host).unwrap();
            s.write_all(req.as_bytes()).unwrap();
            s.write_all(&[b'x'; 1000]).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            let mut first = [0u8; 64];
            match std::io::Read::read(&mut s, &mut first) {
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break s;
                }
                answered => {
                    assert!(
                        Instant::now() < deadline,
                        "upload {i} never held: {answered:?}"
                    );
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        };
        held.push(s);
    }
    // Until the two are in flight, a third request may still get through; once they are, the
    // third gets 503 SlowDown at once.
    rt().block_on(async {
        let list = || {
            let (_, h) = sign_at(
                SystemTime::now(),
                &host,
                "GET",
                "/",
                &[],
                &sha_hex(b""),
                &[],
            );
            reqwest_signed(&http, &ep, reqwest::Method::GET, "/", "", &h).send()
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let start = Instant::now();
            let r = list().await.unwrap();
            let status = r.status().as_u16();
            let text = r.text().await.unwrap();
            if status == 503 {
                assert!(text.contains("<Code>SlowDown</Code>"), "{text}");
                elapsed_within(start, Duration::from_secs(5), "answering SlowDown");
                break;
            }
            assert_eq!(status, 200, "{text}");
            assert!(
                Instant::now() < deadline,
                "never refused with 2 requests held"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // The SDK retries SlowDown; with the slots still held it gives up with it.
        let e = c.list_buckets().send().await.unwrap_err();
        assert_eq!(e.raw_response().map(|r| r.status().as_u16()), Some(503));
    });
    // The held uploads go away: the gateway serves normally again.
    drop(held);
    rt().block_on(async {
        let deadline = Instant::now() + Duration::from_secs(30);
        while c.list_buckets().send().await.is_err() {
            assert!(Instant::now() < deadline, "the gateway did not recover");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        for i in 0..5 {
            put(&c, "busy", &format!("after{i}"), data(10_000, i))
                .await
                .unwrap();
            assert_eq!(
                get(&c, "busy", &format!("after{i}")).await.unwrap(),
                data(10_000, i)
            );
        }
        // The abandoned uploads stored nothing.
        for i in 0..2 {
            assert!(c
                .head_object()
                .bucket("busy")
                .key(format!("slow{i}"))
                .send()
                .await
                .is_err());
        }
    });
    all_alive(&cluster);
}

#[test]
fn clients_that_stop_reading_lose_their_connection() {
    let cluster = Cluster::start(Opts {
        extra: vec![
            "--gateway-arg=--max-requests=1".into(),
            "--gateway-arg=--body-timeout-ms=5000".into(),
        ],
        ..Opts::default()
    });
    let c = cluster.client();
    let http = http_client();
    let ep = cluster.endpoint.clone();
    let host = cluster.s3_addr.clone();
    let size = 32 * 1024 * 1024; // far more than loopback socket buffers hold
    rt().block_on(async {
        c.create_bucket().bucket("reads").send().await.unwrap();
        put(&c, "reads", "big", data(size, 5)).await.unwrap();
    });
    // A GET whose client reads the head and a little of the body, then nothing.
    let (_, h) = sign_at(
        SystemTime::now(),
        &host,
        "GET",
        "/reads/big",
        &[],
        &sha_hex(b""),
        &[],
    );
    let mut req = "GET /reads/big HTTP/1.1\r\n".to_string();
    for (k, v) in &h {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut s = TcpStream::connect(&host).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut head = [0u8; 1024];
    let n = s.read(&mut head).unwrap();
    assert!(
        head[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head[..n])
    );
    rt().block_on(async {
        let list = || {
            let (_, h) = sign_at(
                SystemTime::now(),
                &host,
                "GET",
                "/",
                &[],
                &sha_hex(b""),
                &[],
            );
            reqwest_signed(&http, &ep, reqwest::Method::GET, "/", "", &h).send()
        };
        // The stalled GET holds the only request slot...
        let r = list().await.unwrap();
        assert_eq!(r.status().as_u16(), 503);
        // ...until the gateway gives up writing to it, while its client is still connected.
        let deadline = Instant::now() + Duration::from_secs(60);
        while list().await.unwrap().status().as_u16() != 200 {
            assert!(
                Instant::now() < deadline,
                "the stalled reader kept its slot"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    // The connection was cut: what is left to read ends before the object does.
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(
        n + rest.len() < size,
        "the whole object was sent to a client that stopped reading"
    );
    all_alive(&cluster);
}
