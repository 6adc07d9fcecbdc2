//! Authentication against a real cluster: wrong and unknown keys, anonymous requests, presigned
//! URLs, and hand-built signed streaming uploads (`STREAMING-AWS4-HMAC-SHA256-PAYLOAD`, as
//! minio-go and older Java SDKs send them).

mod common;

use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use common::*;
use std::time::Duration;

fn client_with(cluster: &Cluster, ak: &str, sk: &str) -> aws_sdk_s3::Client {
    sdk_client(&cluster.endpoint, ak, sk, true)
}

/// Builds a signed aws-chunked PUT body and its headers; `tamper` flips a byte of chunk 1.
fn signed_streaming_put(
    host: &str,
    path: &str,
    payload: &[u8],
    chunk: usize,
    tamper: bool,
) -> (Vec<(String, String)>, Vec<u8>) {
    let now = std::time::SystemTime::now();
    let sig_len = 64 + ";chunk-signature=".len();
    let encoded_len: usize = payload
        .chunks(chunk)
        .map(|c| format!("{:x}", c.len()).len() + sig_len + 4 + c.len())
        .sum::<usize>()
        + 1
        + sig_len
        + 4;
    let (headers, seed) = sign_v4(
        now,
        "PUT",
        host,
        path,
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
        &[
            ("x-amz-decoded-content-length", &payload.len().to_string()),
            ("content-encoding", "aws-chunked"),
            ("content-length", &encoded_len.to_string()),
        ],
    );
    let amz = headers
        .iter()
        .find(|(k, _)| k == "x-amz-date")
        .map(|(_, v)| v.clone())
        .unwrap();
    let scope = format!("{}/us-east-1/s3/aws4_request", &amz[..8]);
    let mut body = Vec::new();
    let mut prev = seed;
    let empty = sha_hex(b"");
    let mut pieces: Vec<&[u8]> = payload.chunks(chunk).collect();
    pieces.push(&[]);
    for (i, piece) in pieces.iter().enumerate() {
        let sts = format!(
            "AWS4-HMAC-SHA256-PAYLOAD\n{amz}\n{scope}\n{prev}\n{empty}\n{}",
            sha_hex(piece)
        );
        let sig = signature_of(SECRET_KEY, now, &sts);
        body.extend(format!("{:x};chunk-signature={sig}\r\n", piece.len()).into_bytes());
        let mut data = piece.to_vec();
        if tamper && i == 1 {
            data[0] ^= 1;
        }
        body.extend(data);
        body.extend(b"\r\n");
        prev = sig;
    }
    (headers, body)
}

#[test]
fn signatures_keys_and_presigned_urls() {
    let cluster = Cluster::start(Opts::default());
    let c = cluster.client();
    let http = reqwest::Client::new();
    rt().block_on(async {
        c.create_bucket().bucket("auth").send().await.unwrap();
        c.put_object()
            .bucket("auth")
            .key("k")
            .body(ByteStream::from_static(b"secret data"))
            .send()
            .await
            .unwrap();
        let wrong = client_with(&cluster, ACCESS_KEY, "not-the-secret");
        let err = wrong
            .get_object()
            .bucket("auth")
            .key("k")
            .send()
            .await
            .unwrap_err();
        assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(403));
        assert_eq!(
            aws_sdk_s3::error::ProvideErrorMetadata::code(&err.into_service_error()),
            Some("SignatureDoesNotMatch")
        );
        let unknown = client_with(&cluster, "NOSUCHKEY", SECRET_KEY);
        let err = unknown.list_buckets().send().await.unwrap_err();
        assert_eq!(
            aws_sdk_s3::error::ProvideErrorMetadata::code(&err.into_service_error()),
            Some("InvalidAccessKeyId")
        );
        // Anonymous: denied.
        let r = http
            .get(format!("{}/auth/k", cluster.endpoint))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 403);
        assert!(r
            .text()
            .await
            .unwrap()
            .contains("<Code>AccessDenied</Code>"));
        // Presigned GET and PUT.
        let cfg = PresigningConfig::expires_in(Duration::from_secs(300)).unwrap();
        let url = c
            .get_object()
            .bucket("auth")
            .key("k")
            .presigned(cfg.clone())
            .await
            .unwrap();
        let r = http.get(url.uri()).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(r.bytes().await.unwrap().as_ref(), b"secret data");
        let put = c
            .put_object()
            .bucket("auth")
            .key("p")
            .presigned(cfg)
            .await
            .unwrap();
        let r = http
            .put(put.uri())
            .body("via presigned put")
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status().as_u16(),
            200,
            "{}",
            r.text().await.unwrap_or_default()
        );
        let got = c.get_object().bucket("auth").key("p").send().await.unwrap();
        assert_eq!(
            got.body.collect().await.unwrap().into_bytes().as_ref(),
            b"via presigned put"
        );
        // A presigned URL whose signature was altered is refused.
        let uri = url.uri().to_string();
        let at = uri.find("X-Amz-Signature=").unwrap() + "X-Amz-Signature=".len();
        let flipped = if &uri[at..at + 1] == "0" { "1" } else { "0" };
        let bad = format!("{}{flipped}{}", &uri[..at], &uri[at + 1..]);
        let r = http.get(bad).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 403);
    });
}

#[test]
fn signed_streaming_uploads_are_verified_chunk_by_chunk() {
    let cluster = Cluster::start(Opts::default());
    let c = cluster.client();
    let http = reqwest::Client::new();
    let payload = data(700_000, 3);
    rt().block_on(async {
        c.create_bucket().bucket("stream").send().await.unwrap();
        for (key, tamper) in [("good", false), ("bad", true)] {
            let path = format!("/stream/{key}");
            let (headers, body) =
                signed_streaming_put(&cluster.s3_addr, &path, &payload, 64 * 1024, tamper);
            let mut req = http.put(format!("{}{path}", cluster.endpoint)).body(body);
            for (k, v) in &headers {
                if k != "host" && k != "content-length" {
                    req = req.header(k, v);
                }
            }
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            let text = r.text().await.unwrap_or_default();
            if tamper {
                assert_eq!(status, 403, "{text}");
                assert!(text.contains("SignatureDoesNotMatch"), "{text}");
                let err = c
                    .head_object()
                    .bucket("stream")
                    .key(key)
                    .send()
                    .await
                    .unwrap_err();
                assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(404));
            } else {
                assert_eq!(status, 200, "{text}");
                let got = c
                    .get_object()
                    .bucket("stream")
                    .key(key)
                    .send()
                    .await
                    .unwrap();
                assert!(
                    got.body.collect().await.unwrap().into_bytes().as_ref() == payload.as_slice()
                );
            }
        }
    });
}

#[test]
fn a_payload_that_does_not_match_its_signed_hash_is_refused() {
    let cluster = Cluster::start(Opts::default());
    let c = cluster.client();
    let http = reqwest::Client::new();
    rt().block_on(async {
        c.create_bucket().bucket("hash").send().await.unwrap();
        for (key, body, claimed, want) in [
            ("ok", "the body", sha_hex(b"the body"), 200u16),
            ("bad", "the body", sha_hex(b"another body"), 400),
        ] {
            let path = format!("/hash/{key}");
            let mut req = http.put(format!("{}{path}", cluster.endpoint)).body(body);
            for (k, v) in signed_headers(&cluster.s3_addr, "PUT", &path, &claimed) {
                if k != "host" {
                    req = req.header(k, v);
                }
            }
            let r = req.send().await.unwrap();
            assert_eq!(r.status().as_u16(), want);
            let text = r.text().await.unwrap();
            if want == 400 {
                assert!(text.contains("XAmzContentSHA256Mismatch"), "{text}");
                let err = c
                    .head_object()
                    .bucket("hash")
                    .key(key)
                    .send()
                    .await
                    .unwrap_err();
                assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(404));
            }
        }
    });
}

#[test]
fn virtual_host_style_addressing_under_the_configured_domain() {
    let cluster = Cluster::start(Opts {
        extra: vec!["--domain".into(), "s3.test".into()],
        ..Opts::default()
    });
    let port: u16 = cluster.s3_addr.rsplit(':').next().unwrap().parse().unwrap();
    let vhost = sdk_client(
        &format!("http://s3.test:{port}"),
        ACCESS_KEY,
        SECRET_KEY,
        false,
    );
    let addr: std::net::SocketAddr = cluster.s3_addr.parse().unwrap();
    let http = reqwest::Client::builder()
        .resolve("vbucket.s3.test", addr)
        .build()
        .unwrap();
    let path_style = cluster.client();
    rt().block_on(async {
        path_style
            .create_bucket()
            .bucket("vbucket")
            .send()
            .await
            .unwrap();
        let cfg = PresigningConfig::expires_in(Duration::from_secs(60)).unwrap();
        let put = vhost
            .put_object()
            .bucket("vbucket")
            .key("dir/v.txt")
            .presigned(cfg.clone())
            .await
            .unwrap();
        assert!(
            put.uri()
                .starts_with(&format!("http://vbucket.s3.test:{port}/dir/v.txt")),
            "{}",
            put.uri()
        );
        let r = http.put(put.uri()).body("virtual").send().await.unwrap();
        assert_eq!(
            r.status().as_u16(),
            200,
            "{}",
            r.text().await.unwrap_or_default()
        );
        // Written virtual-host style, read path style.
        let got = path_style
            .get_object()
            .bucket("vbucket")
            .key("dir/v.txt")
            .send()
            .await
            .unwrap();
        assert_eq!(
            got.body.collect().await.unwrap().into_bytes().as_ref(),
            b"virtual"
        );
        let get = vhost
            .get_object()
            .bucket("vbucket")
            .key("dir/v.txt")
            .presigned(cfg)
            .await
            .unwrap();
        let r = http.get(get.uri()).send().await.unwrap();
        assert_eq!(r.bytes().await.unwrap().as_ref(), b"virtual");
    });
}
