//! Micro-benchmarks of the pure functions every request or every byte goes through, so that a
//! regression shows up here before it shows up in a cluster benchmark: SigV4 verification,
//! `aws-chunked` decoding, the ListObjectsV2 document, the chunkserver's per-block CRC32C, the
//! chunk stream's footer splitter, and the hashes of an upload (flexible checksums, MD5 ETag).
//!
//! `cargo bench -p tinydfs-gateway --bench hot` (about a minute on 2 cores); add a name filter to
//! run some only: `-- sigv4`. Criterion keeps each run under `target/criterion` and prints how the
//! next run of the same machine differs ("Performance has regressed" past its noise threshold).
//! Figures and how to read them: docs/BENCHMARKS.md, "Hot functions".

use std::hint::black_box;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest,
    SignatureLocation, SigningSettings, UriPathNormalizationMode,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::http::Headers;
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures_util::Stream;
use md5::Digest;
use tinydfs_gateway::auth::{
    decode_aws_chunked, signing_key, verify, ChecksumAlgo, ChecksumHasher, Payload, SigningContext,
};
use tinydfs_gateway::s3::list::{self, ListDoc};
use tinydfs_proto::blocks::block_crcs;
use tinydfs_proto::frame::{footer, FooterSplitter};
use tinydfs_proto::meta::{ListEntry, ListPage};

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

/// How long each benchmark warms up and measures: short, so that the whole run stays near a
/// minute; criterion's defaults (3 s + 5 s, 100 samples) would take several.
const WARM_UP: Duration = Duration::from_millis(500);
const MEASURE: Duration = Duration::from_millis(1500);
const SAMPLES: usize = 20;
/// Changes smaller than this are reported as noise: on a shared 2-core machine a few percent come
/// and go between runs of the same code.
const NOISE: f64 = 0.05;

const ACCESS_KEY: &str = "AKIAIOSFODNN7EXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const REGION: &str = "us-east-1";
const DATE: &str = "20240102";
const DATETIME: &str = "20240102T030405Z";
const HOST: &str = "127.0.0.1:9000";

/// The instant `DATETIME` names.
fn signed_at() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_704_164_645)
}

fn scope() -> String {
    format!("{DATE}/{REGION}/s3/aws4_request")
}

fn secret_for(key: &str) -> Option<String> {
    (key == ACCESS_KEY).then(|| SECRET.to_owned())
}

/// The bench's credentials, as the SDK's signer takes them.
fn credentials() -> Credentials {
    Credentials::new(ACCESS_KEY, SECRET, None, None, "bench")
}

/// Signs `req` (whose URI is a path and query, as the gateway receives it) as the AWS SDKs do for
/// S3, at `DATETIME`: the path taken as it is, not normalized.
fn sign_request(req: &mut http::Request<()>, body: SignableBody<'_>, settings: SigningSettings) {
    let identity = credentials().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(REGION)
        .name("s3")
        .time(signed_at())
        .settings(settings)
        .build()
        .expect("complete signing parameters")
        .into();
    let headers: Vec<(&str, &str)> = req
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str(), v.to_str().expect("ASCII header values")))
        .collect();
    let uri = format!("http://{HOST}{}", req.uri());
    let signable = SignableRequest::new(req.method().as_str(), uri, headers.into_iter(), body)
        .expect("a signable request");
    let (instructions, _signature) = sign(signable, &params)
        .expect("the request signs")
        .into_parts();
    instructions.apply_to_request_http1x(req);
}

/// S3's signing settings: no double encoding or normalization of the path.
fn s3_settings() -> SigningSettings {
    let mut settings = SigningSettings::default();
    settings.percent_encoding_mode = PercentEncodingMode::Single;
    settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    settings
}

/// A PutObject as aws-sdk-s3 sends it (CRC32 in a trailer, 11 signed headers), header-signed.
fn signed_put() -> http::request::Parts {
    let path = "/bench-bucket/photos/2024/01/02/IMG_0001.jpg";
    let headers = [
        (
            "amz-sdk-invocation-id",
            "6f1c1b2e-9b4d-4f63-a0c4-2b0f5d7e8a91",
        ),
        ("amz-sdk-request", "attempt=1; max=3"),
        ("content-encoding", "aws-chunked"),
        ("content-length", "1048681"),
        ("content-type", "image/jpeg"),
        ("host", HOST),
        ("x-amz-decoded-content-length", "1048576"),
        ("x-amz-sdk-checksum-algorithm", "CRC32"),
        ("x-amz-trailer", "x-amz-checksum-crc32"),
        // Not signed (the signer leaves it out, as proxies may change it).
        ("user-agent", "aws-sdk-rust/1.3.9 os/linux lang/rust/1.86.0"),
    ];
    let mut b = http::Request::builder()
        .method("PUT")
        .uri(format!("{path}?x-id=PutObject"));
    for (n, v) in headers {
        b = b.header(n, v);
    }
    let mut req = b.body(()).expect("a valid request");
    // `x-amz-date` and `x-amz-content-sha256` are added, and signed, by the signer.
    let mut settings = s3_settings();
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    let body = SignableBody::Precomputed("STREAMING-UNSIGNED-PAYLOAD-TRAILER".into());
    sign_request(&mut req, body, settings);
    req.into_parts().0
}

/// A presigned GetObject URL (one hour), as `aws s3 presign` makes it.
fn presigned_get() -> http::request::Parts {
    let path = "/bench-bucket/reports/2024/q1.pdf";
    let req = http::Request::builder()
        .method("GET")
        .uri(format!("{path}?x-id=GetObject"));
    let mut req = req.header("host", HOST).body(()).expect("a valid request");
    let mut settings = s3_settings();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(Duration::from_secs(3600));
    sign_request(&mut req, SignableBody::UnsignedPayload, settings);
    req.into_parts().0
}

fn bench_sigv4(c: &mut Criterion) {
    let mut g = c.benchmark_group("sigv4");
    g.throughput(Throughput::Elements(1));
    let now = signed_at() + Duration::from_secs(60);
    for (name, parts) in [
        ("header_put", signed_put()),
        ("presigned_get", presigned_get()),
    ] {
        verify(&parts, &secret_for, REGION, now).expect("the bench's request verifies");
        g.bench_function(name, |b| {
            b.iter(|| verify(black_box(&parts), &secret_for, REGION, now).is_ok())
        });
    }
    g.finish();
}

/// The signing material of a streaming upload, seeded with a made-up request signature.
fn signing_context() -> SigningContext {
    let key = signing_key(SECRET, DATE, REGION);
    SigningContext::new(key, DATETIME.into(), scope(), [7; 32])
}

/// An `aws-chunked` body of `data` in chunks of `chunk` bytes; signed (chained from the
/// context's seed) or not, with a CRC32C trailer or none.
fn aws_chunked_body(data: &[u8], chunk: usize, signed: bool, trailer: bool) -> Vec<u8> {
    let identity = credentials().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(REGION)
        .name("s3")
        .time(signed_at())
        .settings(())
        .build()
        .expect("complete signing parameters");
    let mut prev = hex::encode([7u8; 32]);
    let mut body = Vec::with_capacity(data.len() + data.len() / chunk * 100 + 200);
    for piece in data.chunks(chunk).chain([&[][..]]) {
        if signed {
            let piece = Bytes::copy_from_slice(piece);
            prev = v4::sign_chunk(&piece, &prev, &params)
                .expect("the chunk signs")
                .signature()
                .to_owned();
            body.extend_from_slice(
                format!("{:x};chunk-signature={prev}\r\n", piece.len()).as_bytes(),
            );
        } else {
            body.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        }
        if !piece.is_empty() {
            body.extend_from_slice(piece);
            body.extend_from_slice(b"\r\n");
        }
    }
    if trailer {
        let mut crc = ChecksumHasher::new(ChecksumAlgo::Crc32c);
        crc.update(data);
        let value = crc.finish();
        body.extend_from_slice(format!("x-amz-checksum-crc32c:{value}\r\n").as_bytes());
        if signed {
            let mut headers = Headers::new();
            headers.insert("x-amz-checksum-crc32c", value);
            let signed = v4::sign_trailer(&headers, &prev, &params).expect("the trailer signs");
            let sig = signed.signature();
            body.extend_from_slice(format!("x-amz-trailer-signature:{sig}\r\n").as_bytes());
        }
    }
    body.extend_from_slice(b"\r\n");
    body
}

/// Decodes `frames` to the end; returns the decoded length (panics on a decoding error). The
/// decoder owns its input (`'static`), as it does a request body.
fn decode_all(frames: Vec<Bytes>, payload: &Payload, ctx: &SigningContext, len: u64) -> usize {
    let input =
        futures_util::stream::iter(frames.into_iter().map(Ok::<_, std::convert::Infallible>));
    let (stream, _trailers) = decode_aws_chunked(input, payload, ctx, Some(len));
    let mut stream = std::pin::pin!(stream);
    let mut cx = Context::from_waker(Waker::noop());
    let mut total = 0;
    loop {
        match stream.as_mut().poll_next(&mut cx) {
            Poll::Ready(Some(Ok(piece))) => total += piece.len(),
            Poll::Ready(Some(Err(e))) => panic!("the bench's body does not decode: {e}"),
            Poll::Ready(None) => return total,
            Poll::Pending => unreachable!("an in-memory body never pends"),
        }
    }
}

/// `bytes` cut into frames of `size` as a socket read hands them over.
fn frames(bytes: Bytes, size: usize) -> Vec<Bytes> {
    (0..bytes.len())
        .step_by(size)
        .map(|at| bytes.slice(at..(at + size).min(bytes.len())))
        .collect()
}

fn bench_aws_chunked(c: &mut Criterion) {
    let data: Vec<u8> = (0..MIB).map(|i| (i % 251) as u8).collect();
    let ctx = signing_context();
    let mut g = c.benchmark_group("aws_chunked");
    g.throughput(Throughput::Bytes(data.len() as u64));
    let cases = [
        ("signed_1MiB_64KiB_chunks", true, false),
        ("signed_trailer_1MiB_64KiB_chunks", true, true),
        ("unsigned_trailer_1MiB_64KiB_chunks", false, true),
    ];
    for (name, signed, trailer) in cases {
        let body = Bytes::from(aws_chunked_body(&data, 64 * KIB, signed, trailer));
        let input = frames(body, 64 * KIB);
        let payload = if signed {
            Payload::StreamingSigned { trailer }
        } else {
            Payload::StreamingUnsigned { trailer }
        };
        let len = data.len() as u64;
        assert_eq!(decode_all(input.clone(), &payload, &ctx, len), data.len());
        g.bench_function(name, |b| {
            b.iter(|| decode_all(black_box(input.clone()), &payload, &ctx, len))
        });
    }
    g.finish();
}

/// A full page of 1,000 keys under a common prefix, truncated, as a log bucket lists.
fn list_page() -> ListPage {
    let entries: Vec<ListEntry> = (0..1000u64)
        .map(|i| ListEntry {
            key: format!("logs/2024/01/02/host-{:02}/part {:05}.json.gz", i % 16, i),
            size: 10_000 + i * 37,
            etag: format!("{:032x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            last_modified_ms: 1_704_164_645_000 + i * 1000,
        })
        .collect();
    let next_after = entries.last().map(|e| e.key.clone());
    ListPage {
        entries,
        common_prefixes: Vec::new(),
        truncated: true,
        next_after,
    }
}

fn bench_list_xml(c: &mut Criterion) {
    let page = list_page();
    let mut g = c.benchmark_group("list_xml");
    g.throughput(Throughput::Elements(page.entries.len() as u64));
    for (name, url) in [("v2_1000_keys", false), ("v2_url_1000_keys", true)] {
        let doc = ListDoc {
            bucket: "bench-bucket",
            prefix: "logs/2024/01/02/",
            v2: true,
            url,
            token: None,
            start_after: None,
            marker: None,
            delimiter: None,
            max_keys: 1000,
            owner: None,
        };
        g.bench_function(name, |b| {
            b.iter(|| list::encode(&doc, black_box(&page)).len())
        });
    }
    g.finish();
}

fn bench_block_crcs(c: &mut Criterion) {
    let mut g = c.benchmark_group("block_crcs");
    for (name, size) in [("4MiB", 4 * MIB), ("4KiB", 4 * KIB)] {
        let data: Vec<u8> = (0..size).map(|i| (i % 253) as u8).collect();
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(name, |b| b.iter(|| block_crcs(black_box(&data))));
    }
    g.finish();
}

/// Pushes `frames` through a splitter; returns the data length and the footer.
fn split_all(frames: &[Bytes]) -> (usize, Option<(u64, u32)>) {
    let mut s = FooterSplitter::default();
    let mut data = 0;
    for f in frames {
        for piece in s.push(f.clone()) {
            data += piece.len();
        }
    }
    (data, s.finish())
}

fn bench_footer_splitter(c: &mut Criterion) {
    let mut g = c.benchmark_group("footer_splitter");
    let cases = [
        ("64MiB_chunk_64KiB_frames", 64 * MIB, 64 * KIB),
        ("4KiB_object_one_frame", 4 * KIB, 4 * KIB + 12),
    ];
    for (name, size, frame) in cases {
        let mut wire = vec![0x5a; size];
        wire.extend_from_slice(&footer(size as u64, 0x1234_5678));
        let input = frames(Bytes::from(wire), frame);
        assert_eq!(split_all(&input), (size, Some((size as u64, 0x1234_5678))));
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(name, |b| b.iter(|| split_all(black_box(&input))));
    }
    g.finish();
}

fn bench_checksums(c: &mut Criterion) {
    let data: Vec<u8> = (0..MIB).map(|i| (i % 241) as u8).collect();
    let mut g = c.benchmark_group("checksum_1MiB");
    g.throughput(Throughput::Bytes(data.len() as u64));
    for algo in [
        ChecksumAlgo::Crc32,
        ChecksumAlgo::Crc32c,
        ChecksumAlgo::Crc64Nvme,
        ChecksumAlgo::Sha1,
        ChecksumAlgo::Sha256,
    ] {
        g.bench_function(algo.name(), |b| {
            b.iter(|| {
                let mut h = ChecksumHasher::new(algo);
                h.update(black_box(&data));
                h.finish_raw()
            })
        });
    }
    // The ETag every upload computes over every byte (data.rs).
    g.bench_function("MD5", |b| b.iter(|| md5::Md5::digest(black_box(&data))));
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(WARM_UP)
        .measurement_time(MEASURE)
        .sample_size(SAMPLES)
        .noise_threshold(NOISE)
}

criterion_group! {
    name = hot;
    config = config();
    targets = bench_sigv4, bench_aws_chunked, bench_list_xml, bench_block_crcs,
        bench_footer_splitter, bench_checksums
}
criterion_main!(hot);
