//! Integrity and the rest of the S3 surface against a real cluster, with aws-sdk-s3 (default
//! checksum behaviour on): flexible checksums on PutObject (header and trailer), multipart
//! composite and full-object checksums, conditional CompleteMultipartUpload, object tagging,
//! and bucket CORS with preflights and presigned URLs. Expected checksums are computed here
//! from the data with crc32fast, crc32c, crc-fast, sha1 and sha2.

mod common;

use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    ChecksumAlgorithm, ChecksumMode, ChecksumType, CompletedMultipartUpload, CompletedPart,
    CorsConfiguration, CorsRule, Delete, ObjectIdentifier, Tag, Tagging,
};
use base64::Engine;
use common::*;
use sha2::Digest;
use std::time::Duration;

fn code<E: aws_sdk_s3::error::ProvideErrorMetadata>(e: &E) -> String {
    e.code().unwrap_or("").to_string()
}

fn b64(raw: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(raw)
}

/// The raw digest of `data`, computed with the algorithm's own crate.
fn digest(algo: &ChecksumAlgorithm, data: &[u8]) -> Vec<u8> {
    match algo {
        ChecksumAlgorithm::Crc32 => crc32fast::hash(data).to_be_bytes().to_vec(),
        ChecksumAlgorithm::Crc32C => crc32c::crc32c(data).to_be_bytes().to_vec(),
        ChecksumAlgorithm::Crc64Nvme => crc_fast::checksum(crc_fast::CrcAlgorithm::Crc64Nvme, data)
            .to_be_bytes()
            .to_vec(),
        ChecksumAlgorithm::Sha1 => <sha1::Sha1 as sha1::Digest>::digest(data).to_vec(),
        ChecksumAlgorithm::Sha256 => sha2::Sha256::digest(data).to_vec(),
        other => panic!("no digest for {other:?}"),
    }
}

/// The checksum of `algo` an SDK output carries (every output type has the same getters).
macro_rules! sum_of {
    ($out:expr, $algo:expr) => {
        match $algo {
            ChecksumAlgorithm::Crc32 => $out.checksum_crc32(),
            ChecksumAlgorithm::Crc32C => $out.checksum_crc32_c(),
            ChecksumAlgorithm::Crc64Nvme => $out.checksum_crc64_nvme(),
            ChecksumAlgorithm::Sha1 => $out.checksum_sha1(),
            ChecksumAlgorithm::Sha256 => $out.checksum_sha256(),
            _ => None,
        }
        .map(str::to_string)
    };
}

const ALGOS: [ChecksumAlgorithm; 5] = [
    ChecksumAlgorithm::Crc32,
    ChecksumAlgorithm::Crc32C,
    ChecksumAlgorithm::Crc64Nvme,
    ChecksumAlgorithm::Sha1,
    ChecksumAlgorithm::Sha256,
];

#[test]
fn put_checksums_are_verified_stored_and_returned_in_checksum_mode() {
    let cluster = Cluster::start(Opts::default());
    let c = cluster.client();
    let dir = cluster.dir.join("bodies");
    std::fs::create_dir_all(&dir).unwrap();
    rt().block_on(async {
        c.create_bucket().bucket("sums").send().await.unwrap();
        // More than one chunk, so that the checksum spans chunk boundaries.
        let body = data(cluster.chunk_size() as usize + 12_345, 1);
        let file = dir.join("body");
        std::fs::write(&file, &body).unwrap();
        for algo in ALGOS {
            let want = b64(&digest(&algo, &body));
            // An in-memory body: the SDK sends the checksum as a header. A file body is
            // streamed: aws-chunked with the checksum as a trailer.
            for (form, stream) in [("header", false), ("trailer", true)] {
                let key = format!("{}-{form}", algo.as_str());
                let b = if stream {
                    ByteStream::from_path(&file).await.unwrap()
                } else {
                    ByteStream::from(body.clone())
                };
                let put = c
                    .put_object()
                    .bucket("sums")
                    .key(&key)
                    .checksum_algorithm(algo.clone())
                    .body(b)
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("{key}: {e:?}"));
                assert_eq!(sum_of!(put, &algo), Some(want.clone()), "{key}");
                // Returned only in checksum mode, with the type.
                let head = c
                    .head_object()
                    .bucket("sums")
                    .key(&key)
                    .checksum_mode(ChecksumMode::Enabled)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(sum_of!(head, &algo), Some(want.clone()), "{key}");
                assert_eq!(head.checksum_type(), Some(&ChecksumType::FullObject));
                let plain = c
                    .head_object()
                    .bucket("sums")
                    .key(&key)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(sum_of!(plain, &algo), None, "{key} without checksum mode");
                // The SDK validates what a GET in checksum mode returns as it reads.
                let got = c
                    .get_object()
                    .bucket("sums")
                    .key(&key)
                    .checksum_mode(ChecksumMode::Enabled)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(sum_of!(got, &algo), Some(want.clone()), "{key}");
                let bytes = got.body.collect().await.unwrap().into_bytes();
                assert!(bytes == body, "{key}: content differs");
            }
        }
        // A well-formed wrong checksum is BadDigest and stores nothing; a malformed one is
        // InvalidRequest.
        let wrong = [
            (ChecksumAlgorithm::Crc32, b64(&[1, 2, 3, 4])),
            (ChecksumAlgorithm::Crc64Nvme, b64(&[0; 8])),
            (ChecksumAlgorithm::Sha256, b64(&[7; 32])),
        ];
        for (algo, value) in wrong {
            let mut req = c
                .put_object()
                .bucket("sums")
                .key("wrong")
                .body(ByteStream::from(body.clone()));
            req = match algo {
                ChecksumAlgorithm::Crc32 => req.checksum_crc32(value),
                ChecksumAlgorithm::Crc64Nvme => req.checksum_crc64_nvme(value),
                _ => req.checksum_sha256(value),
            };
            let err = req.send().await.unwrap_err();
            assert_eq!(code(&err.into_service_error()), "BadDigest", "{algo:?}");
        }
        for value in ["not base64!", "AAAAAAAAAAA="] {
            let err = c
                .put_object()
                .bucket("sums")
                .key("wrong")
                .checksum_crc32(value)
                .body(ByteStream::from_static(b"x"))
                .send()
                .await
                .unwrap_err();
            assert_eq!(code(&err.into_service_error()), "InvalidRequest", "{value}");
        }
        let err = c.head_object().bucket("sums").key("wrong").send().await;
        assert!(err.is_err(), "a refused upload stores nothing");
        // A range is not the whole object: no checksum.
        let part = c
            .get_object()
            .bucket("sums")
            .key("CRC32-header")
            .range("bytes=0-9")
            .checksum_mode(ChecksumMode::Enabled)
            .send()
            .await
            .unwrap();
        assert_eq!(part.checksum_crc32(), None);
        // DeleteObjects as current SDKs send it: a CRC32 header, no Content-MD5.
        let ids: Vec<ObjectIdentifier> = ["CRC32-header", "SHA1-trailer"]
            .iter()
            .map(|k| ObjectIdentifier::builder().key(*k).build().unwrap())
            .collect();
        let out = c
            .delete_objects()
            .bucket("sums")
            .delete(Delete::builder().set_objects(Some(ids)).build().unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(out.deleted().len(), 2);
        assert!(c
            .head_object()
            .bucket("sums")
            .key("SHA1-trailer")
            .send()
            .await
            .is_err());
    });
}

/// Uploads `parts` as a multipart upload with `algo` (the SDK computes each part's checksum)
/// and completes it with the part checksums listed, as SDK users do.
async fn upload(
    c: &aws_sdk_s3::Client,
    key: &str,
    algo: &ChecksumAlgorithm,
    kind: Option<ChecksumType>,
    parts: &[&[u8]],
) -> aws_sdk_s3::operation::complete_multipart_upload::CompleteMultipartUploadOutput {
    let created = c
        .create_multipart_upload()
        .bucket("multi")
        .key(key)
        .checksum_algorithm(algo.clone())
        .set_checksum_type(kind)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{key}: {e:?}"));
    let id = created.upload_id().unwrap().to_string();
    let mut done = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        let n = i as i32 + 1;
        let up = c
            .upload_part()
            .bucket("multi")
            .key(key)
            .upload_id(&id)
            .part_number(n)
            .checksum_algorithm(algo.clone())
            .body(ByteStream::from(p.to_vec()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{key} part {n}: {e:?}"));
        assert_eq!(sum_of!(up, algo), Some(b64(&digest(algo, p))));
        let mut part = CompletedPart::builder()
            .part_number(n)
            .e_tag(up.e_tag().unwrap());
        part = match algo {
            ChecksumAlgorithm::Crc32 => part.checksum_crc32(sum_of!(up, algo).unwrap()),
            ChecksumAlgorithm::Crc32C => part.checksum_crc32_c(sum_of!(up, algo).unwrap()),
            ChecksumAlgorithm::Crc64Nvme => part.checksum_crc64_nvme(sum_of!(up, algo).unwrap()),
            ChecksumAlgorithm::Sha1 => part.checksum_sha1(sum_of!(up, algo).unwrap()),
            _ => part.checksum_sha256(sum_of!(up, algo).unwrap()),
        };
        done.push(part.build());
    }
    c.complete_multipart_upload()
        .bucket("multi")
        .key(key)
        .upload_id(&id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(done))
                .build(),
        )
        .send()
        .await
        .unwrap_or_else(|e| panic!("{key} complete: {e:?}"))
}

/// Starts an upload of one small part and returns its id and the part's ETag.
async fn one_part(c: &aws_sdk_s3::Client, key: &str, body: &[u8]) -> (String, String) {
    let id = c
        .create_multipart_upload()
        .bucket("multi")
        .key(key)
        .send()
        .await
        .unwrap()
        .upload_id()
        .unwrap()
        .to_string();
    let up = c
        .upload_part()
        .bucket("multi")
        .key(key)
        .upload_id(&id)
        .part_number(1)
        .body(ByteStream::from(body.to_vec()))
        .send()
        .await
        .unwrap();
    (id, up.e_tag().unwrap().to_string())
}

fn completed(etag: &str) -> CompletedMultipartUpload {
    CompletedMultipartUpload::builder()
        .parts(CompletedPart::builder().part_number(1).e_tag(etag).build())
        .build()
}

#[test]
fn multipart_checksums_are_composite_or_full_object_and_completes_can_be_conditional() {
    let cluster = Cluster::start(Opts::default());
    let c = cluster.client();
    rt().block_on(async {
        c.create_bucket().bucket("multi").send().await.unwrap();
        let five = 5 * 1024 * 1024;
        let whole = data(2 * five + 77, 5);
        let (a, rest) = whole.split_at(five);
        let (b, tail) = rest.split_at(five);
        let two: Vec<u8> = [a, tail].concat();
        let cases = [
            (ChecksumAlgorithm::Crc32, Some(ChecksumType::Composite)),
            (ChecksumAlgorithm::Crc32C, None), // composite by default
            (ChecksumAlgorithm::Sha256, Some(ChecksumType::Composite)),
            (ChecksumAlgorithm::Crc32, Some(ChecksumType::FullObject)),
            (ChecksumAlgorithm::Crc32C, Some(ChecksumType::FullObject)),
            (ChecksumAlgorithm::Crc64Nvme, None), // full object by default
        ];
        for (i, (algo, kind)) in cases.into_iter().enumerate() {
            let full =
                kind == Some(ChecksumType::FullObject) || algo == ChecksumAlgorithm::Crc64Nvme;
            // Three parts for the full-object CRC64NVME, two for the others.
            let (parts, object): (Vec<&[u8]>, &[u8]) = if algo == ChecksumAlgorithm::Crc64Nvme {
                (vec![a, b, tail], &whole)
            } else {
                (vec![a, tail], &two)
            };
            let key = format!("obj-{i}");
            let want = if full {
                b64(&digest(&algo, object))
            } else {
                let concat: Vec<u8> = parts.iter().flat_map(|p| digest(&algo, p)).collect();
                format!("{}-{}", b64(&digest(&algo, &concat)), parts.len())
            };
            let want_type = if full {
                ChecksumType::FullObject
            } else {
                ChecksumType::Composite
            };
            let done = upload(&c, &key, &algo, kind, &parts).await;
            assert_eq!(sum_of!(done, &algo), Some(want.clone()), "{key} {algo:?}");
            assert_eq!(done.checksum_type(), Some(&want_type), "{key}");
            let head = c
                .head_object()
                .bucket("multi")
                .key(&key)
                .checksum_mode(ChecksumMode::Enabled)
                .send()
                .await
                .unwrap();
            assert_eq!(sum_of!(head, &algo), Some(want.clone()), "{key}");
            assert_eq!(head.checksum_type(), Some(&want_type), "{key}");
            // A full-object checksum is validated by the SDK as it reads the GET.
            let got = c
                .get_object()
                .bucket("multi")
                .key(&key)
                .checksum_mode(ChecksumMode::Enabled)
                .send()
                .await
                .unwrap();
            assert_eq!(sum_of!(got, &algo), Some(want), "{key}");
            let bytes = got.body.collect().await.unwrap().into_bytes();
            assert!(bytes == object, "{key}: content differs");
        }

        // Combinations AWS refuses at Create.
        for (algo, kind) in [
            (ChecksumAlgorithm::Sha1, ChecksumType::FullObject),
            (ChecksumAlgorithm::Crc64Nvme, ChecksumType::Composite),
        ] {
            let err = c
                .create_multipart_upload()
                .bucket("multi")
                .key("refused")
                .checksum_algorithm(algo)
                .checksum_type(kind)
                .send()
                .await
                .unwrap_err();
            assert_eq!(code(&err.into_service_error()), "InvalidRequest");
        }
        // A part with another algorithm's checksum (the SDK's default CRC32) is refused; a
        // composite Complete must list every part's checksum, and those must match.
        let id = c
            .create_multipart_upload()
            .bucket("multi")
            .key("strict")
            .checksum_algorithm(ChecksumAlgorithm::Crc32C)
            .send()
            .await
            .unwrap()
            .upload_id()
            .unwrap()
            .to_string();
        let err = c
            .upload_part()
            .bucket("multi")
            .key("strict")
            .upload_id(&id)
            .part_number(1)
            .body(ByteStream::from_static(b"abc"))
            .send()
            .await
            .unwrap_err();
        assert_eq!(code(&err.into_service_error()), "InvalidRequest");
        let up = c
            .upload_part()
            .bucket("multi")
            .key("strict")
            .upload_id(&id)
            .part_number(1)
            .checksum_algorithm(ChecksumAlgorithm::Crc32C)
            .body(ByteStream::from_static(b"abc"))
            .send()
            .await
            .unwrap();
        let etag = up.e_tag().unwrap();
        let err = c
            .complete_multipart_upload()
            .bucket("multi")
            .key("strict")
            .upload_id(&id)
            .multipart_upload(completed(etag))
            .send()
            .await
            .unwrap_err();
        assert_eq!(code(&err.into_service_error()), "InvalidRequest");
        let bad = CompletedMultipartUpload::builder()
            .parts(
                CompletedPart::builder()
                    .part_number(1)
                    .e_tag(etag)
                    .checksum_crc32_c(b64(&[9; 4]))
                    .build(),
            )
            .build();
        let err = c
            .complete_multipart_upload()
            .bucket("multi")
            .key("strict")
            .upload_id(&id)
            .multipart_upload(bad)
            .send()
            .await
            .unwrap_err();
        assert_eq!(code(&err.into_service_error()), "InvalidPart");

        // Conditional Completes.
        let (u1, e1) = one_part(&c, "cond", b"first").await;
        let err = c
            .complete_multipart_upload()
            .bucket("multi")
            .key("cond")
            .upload_id(&u1)
            .if_match("\"0123\"")
            .multipart_upload(completed(&e1))
            .send()
            .await
            .unwrap_err();
        assert_eq!(code(&err.into_service_error()), "NoSuchKey");
        let first = c
            .complete_multipart_upload()
            .bucket("multi")
            .key("cond")
            .upload_id(&u1)
            .if_none_match("*")
            .multipart_upload(completed(&e1))
            .send()
            .await
            .unwrap();
        // A repeat of that Complete succeeds again, as on AWS.
        c.complete_multipart_upload()
            .bucket("multi")
            .key("cond")
            .upload_id(&u1)
            .if_none_match("*")
            .multipart_upload(completed(&e1))
            .send()
            .await
            .unwrap();
        let (u2, e2) = one_part(&c, "cond", b"second").await;
        for (if_match, if_none_match) in [(None, Some("*")), (Some("\"0123\""), None)] {
            let err = c
                .complete_multipart_upload()
                .bucket("multi")
                .key("cond")
                .upload_id(&u2)
                .set_if_match(if_match.map(str::to_string))
                .set_if_none_match(if_none_match.map(str::to_string))
                .multipart_upload(completed(&e2))
                .send()
                .await
                .unwrap_err();
            assert_eq!(code(&err.into_service_error()), "PreconditionFailed");
        }
        // The failed conditions left the upload: If-Match with the current ETag completes it.
        c.complete_multipart_upload()
            .bucket("multi")
            .key("cond")
            .upload_id(&u2)
            .if_match(first.e_tag().unwrap())
            .multipart_upload(completed(&e2))
            .send()
            .await
            .unwrap();
        assert_eq!(get(&c, "multi", "cond").await.unwrap(), b"second");
        // Two uploads racing to create one key with If-None-Match: * : exactly one wins; the
        // other sees 412 (or 409 when it lost between its check and its commit).
        let (u3, e3) = one_part(&c, "race", b"three").await;
        let (u4, e4) = one_part(&c, "race", b"four").await;
        let race = |id: String, etag: String| {
            let c = c.clone();
            async move {
                c.complete_multipart_upload()
                    .bucket("multi")
                    .key("race")
                    .upload_id(id)
                    .if_none_match("*")
                    .multipart_upload(completed(&etag))
                    .send()
                    .await
                    .map_err(|e| code(&e.into_service_error()))
            }
        };
        let (r3, r4) = tokio::join!(race(u3, e3), race(u4, e4));
        let wins = [&r3, &r4].iter().filter(|r| r.is_ok()).count();
        assert_eq!(wins, 1, "{r3:?} {r4:?}");
        let lost = r3.err().or(r4.err()).unwrap();
        assert!(
            lost == "PreconditionFailed" || lost == "ConditionalRequestConflict",
            "{lost}"
        );
    });
}

#[test]
fn object_tags_round_trip_with_s3_limits() {
    let cluster = Cluster::start(Opts::default());
    let c = cluster.client();
    rt().block_on(async {
        c.create_bucket().bucket("tags").send().await.unwrap();
        c.put_object()
            .bucket("tags")
            .key("k")
            .tagging("project=tiny%20dfs&team=storage")
            .body(ByteStream::from_static(b"tagged"))
            .send()
            .await
            .unwrap();
        let tags = |out: &aws_sdk_s3::operation::get_object_tagging::GetObjectTaggingOutput| {
            out.tag_set()
                .iter()
                .map(|t| (t.key().to_string(), t.value().to_string()))
                .collect::<Vec<_>>()
        };
        let got = c
            .get_object_tagging()
            .bucket("tags")
            .key("k")
            .send()
            .await
            .unwrap();
        assert_eq!(
            tags(&got),
            [
                ("project".to_string(), "tiny dfs".to_string()),
                ("team".to_string(), "storage".to_string())
            ]
        );
        let obj = c.get_object().bucket("tags").key("k").send().await.unwrap();
        assert_eq!(obj.tag_count(), Some(2));
        let before = c
            .head_object()
            .bucket("tags")
            .key("k")
            .send()
            .await
            .unwrap();
        // Replacing the tags leaves the object alone.
        let set = Tagging::builder()
            .tag_set(Tag::builder().key("a").value("1").build().unwrap())
            .tag_set(Tag::builder().key("b:c").value("").build().unwrap())
            .build()
            .unwrap();
        c.put_object_tagging()
            .bucket("tags")
            .key("k")
            .tagging(set)
            .send()
            .await
            .unwrap();
        let got = c
            .get_object_tagging()
            .bucket("tags")
            .key("k")
            .send()
            .await
            .unwrap();
        assert_eq!(
            tags(&got),
            [
                ("a".to_string(), "1".to_string()),
                ("b:c".to_string(), String::new())
            ]
        );
        let after = c
            .head_object()
            .bucket("tags")
            .key("k")
            .send()
            .await
            .unwrap();
        assert_eq!(after.e_tag(), before.e_tag());
        assert_eq!(after.last_modified(), before.last_modified());
        assert_eq!(get(&c, "tags", "k").await.unwrap(), b"tagged");
        c.delete_object_tagging()
            .bucket("tags")
            .key("k")
            .send()
            .await
            .unwrap();
        let got = c
            .get_object_tagging()
            .bucket("tags")
            .key("k")
            .send()
            .await
            .unwrap();
        assert!(got.tag_set().is_empty());
        let obj = c.get_object().bucket("tags").key("k").send().await.unwrap();
        assert_eq!(obj.tag_count(), None);

        // S3's limits: InvalidTag.
        let eleven: Vec<String> = (0..11).map(|i| format!("k{i}=v")).collect();
        for header in [
            eleven.join("&"),
            format!("{}=v", "k".repeat(129)),
            format!("k={}", "v".repeat(257)),
            "a=1&a=2".to_string(),
        ] {
            let err = c
                .put_object()
                .bucket("tags")
                .key("limits")
                .tagging(&header)
                .body(ByteStream::from_static(b"x"))
                .send()
                .await
                .unwrap_err();
            assert_eq!(code(&err.into_service_error()), "InvalidTag", "{header}");
        }
        let dup = Tagging::builder()
            .tag_set(Tag::builder().key("a").value("1").build().unwrap())
            .tag_set(Tag::builder().key("a").value("2").build().unwrap())
            .build()
            .unwrap();
        let err = c
            .put_object_tagging()
            .bucket("tags")
            .key("k")
            .tagging(dup)
            .send()
            .await
            .unwrap_err();
        assert_eq!(code(&err.into_service_error()), "InvalidTag");
        let ok = Tagging::builder()
            .tag_set(Tag::builder().key("a").value("1").build().unwrap())
            .build()
            .unwrap();
        let err = c
            .put_object_tagging()
            .bucket("tags")
            .key("missing")
            .tagging(ok)
            .send()
            .await
            .unwrap_err();
        assert_eq!(code(&err.into_service_error()), "NoSuchKey");

        // Tags given at CreateMultipartUpload are the completed object's.
        let id = c
            .create_multipart_upload()
            .bucket("tags")
            .key("mp")
            .tagging("from=create")
            .send()
            .await
            .unwrap()
            .upload_id()
            .unwrap()
            .to_string();
        let up = c
            .upload_part()
            .bucket("tags")
            .key("mp")
            .upload_id(&id)
            .part_number(1)
            .body(ByteStream::from_static(b"part"))
            .send()
            .await
            .unwrap();
        c.complete_multipart_upload()
            .bucket("tags")
            .key("mp")
            .upload_id(&id)
            .multipart_upload(completed(up.e_tag().unwrap()))
            .send()
            .await
            .unwrap();
        let got = c
            .get_object_tagging()
            .bucket("tags")
            .key("mp")
            .send()
            .await
            .unwrap();
        assert_eq!(tags(&got), [("from".to_string(), "create".to_string())]);
    });
}

#[test]
fn cors_rules_answer_preflights_and_browser_requests() {
    let cluster = Cluster::start(Opts::default());
    let c = cluster.client();
    let http = reqwest::Client::new();
    let url = |path: &str| format!("{}/{path}", cluster.endpoint);
    let preflight = |path: String, origin: &'static str, method: &'static str| {
        http.request(reqwest::Method::OPTIONS, path)
            .header("origin", origin)
            .header("access-control-request-method", method)
            .header("access-control-request-headers", "Content-Type, X-Amz-Date")
            .send()
    };
    rt().block_on(async {
        c.create_bucket().bucket("web").send().await.unwrap();
        c.put_object()
            .bucket("web")
            .key("page.txt")
            .body(ByteStream::from_static(b"hello browser"))
            .send()
            .await
            .unwrap();
        let err = c.get_bucket_cors().bucket("web").send().await.unwrap_err();
        assert_eq!(code(&err.into_service_error()), "NoSuchCORSConfiguration");
        let r = preflight(url("web/page.txt"), "https://app.example.com", "GET")
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "no CORS configuration yet");

        let site = CorsRule::builder()
            .id("site")
            .allowed_origins("https://*.example.com")
            .allowed_methods("GET")
            .allowed_methods("PUT")
            .allowed_headers("content-type")
            .allowed_headers("x-amz-*")
            .expose_headers("ETag")
            .max_age_seconds(600)
            .build()
            .unwrap();
        let anyone = CorsRule::builder()
            .allowed_origins("*")
            .allowed_methods("GET")
            .build()
            .unwrap();
        c.put_bucket_cors()
            .bucket("web")
            .cors_configuration(
                CorsConfiguration::builder()
                    .cors_rules(site.clone())
                    .cors_rules(anyone.clone())
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
        let got = c.get_bucket_cors().bucket("web").send().await.unwrap();
        assert_eq!(got.cors_rules(), [site, anyone]);

        // Allowed: the first matching rule's headers; no credentials needed.
        let r = preflight(url("web/page.txt"), "https://app.example.com", "PUT")
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let h = |r: &reqwest::Response, name: &str| {
            r.headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_string())
        };
        assert_eq!(
            h(&r, "access-control-allow-origin").as_deref(),
            Some("https://app.example.com")
        );
        assert_eq!(
            h(&r, "access-control-allow-methods").as_deref(),
            Some("GET, PUT")
        );
        assert_eq!(
            h(&r, "access-control-allow-headers").as_deref(),
            Some("content-type, x-amz-date")
        );
        assert_eq!(h(&r, "access-control-max-age").as_deref(), Some("600"));
        assert_eq!(
            h(&r, "access-control-expose-headers").as_deref(),
            Some("ETag")
        );
        assert!(h(&r, "vary").unwrap().contains("Origin"));
        // Another origin falls to the catch-all rule, which allows GET without headers only.
        let r = http
            .request(reqwest::Method::OPTIONS, url("web/page.txt"))
            .header("origin", "https://elsewhere.org")
            .header("access-control-request-method", "GET")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(h(&r, "access-control-allow-origin").as_deref(), Some("*"));
        // Refused: PUT from an origin no PUT rule names.
        let r = preflight(url("web/page.txt"), "https://elsewhere.org", "PUT")
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
        assert!(h(&r, "access-control-allow-origin").is_none());
        let text = r.text().await.unwrap();
        assert!(
            text.contains("CORSResponse: This CORS request is not allowed"),
            "{text}"
        );
        let r = http
            .request(reqwest::Method::OPTIONS, url("web/page.txt"))
            .header("access-control-request-method", "GET")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "a preflight needs an Origin");

        // A browser's GET of a presigned URL gets the rule's headers, errors included.
        let cfg = PresigningConfig::expires_in(Duration::from_secs(300)).unwrap();
        let signed = c
            .get_object()
            .bucket("web")
            .key("page.txt")
            .presigned(cfg.clone())
            .await
            .unwrap();
        let r = http
            .get(signed.uri())
            .header("origin", "https://app.example.com")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(
            h(&r, "access-control-allow-origin").as_deref(),
            Some("https://app.example.com")
        );
        assert_eq!(
            h(&r, "access-control-expose-headers").as_deref(),
            Some("ETag")
        );
        assert!(h(&r, "vary").unwrap().contains("Origin"));
        assert_eq!(r.bytes().await.unwrap().as_ref(), b"hello browser");
        let missing = c
            .get_object()
            .bucket("web")
            .key("missing.txt")
            .presigned(cfg)
            .await
            .unwrap();
        let r = http
            .get(missing.uri())
            .header("origin", "https://app.example.com")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        assert_eq!(
            h(&r, "access-control-allow-origin").as_deref(),
            Some("https://app.example.com")
        );
        // Any origin may GET (the catch-all rule: `*`); without an Origin nothing is added.
        let r = http
            .get(signed.uri())
            .header("origin", "http://evil.test")
            .send()
            .await
            .unwrap();
        assert_eq!(h(&r, "access-control-allow-origin").as_deref(), Some("*"));
        let r = http.get(signed.uri()).send().await.unwrap();
        assert!(h(&r, "access-control-allow-origin").is_none());

        // Validation as on AWS.
        let bad_method = CorsRule::builder()
            .allowed_origins("*")
            .allowed_methods("PATCH")
            .build()
            .unwrap();
        let err = c
            .put_bucket_cors()
            .bucket("web")
            .cors_configuration(
                CorsConfiguration::builder()
                    .cors_rules(bad_method)
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap_err();
        assert_eq!(code(&err.into_service_error()), "InvalidRequest");
        let rule = CorsRule::builder()
            .allowed_origins("*")
            .allowed_methods("GET")
            .build()
            .unwrap();
        let err = c
            .put_bucket_cors()
            .bucket("web")
            .cors_configuration(
                CorsConfiguration::builder()
                    .set_cors_rules(Some(vec![rule; 101]))
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap_err();
        assert_eq!(code(&err.into_service_error()), "MalformedXML");

        c.delete_bucket_cors().bucket("web").send().await.unwrap();
        let err = c.get_bucket_cors().bucket("web").send().await.unwrap_err();
        assert_eq!(code(&err.into_service_error()), "NoSuchCORSConfiguration");
        let r = preflight(url("web/page.txt"), "https://app.example.com", "GET")
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
    });
}

/// boto3 sends checksums its own way (botocore's flexible checksums: a trailer on streamed
/// uploads, a header otherwise, CRC32 on DeleteObjects without Content-MD5), and tags and
/// CORS documents through its own serializers.
const BOTO3_SCRIPT: &str = r#"
import io, json, os, sys
import boto3
from botocore.config import Config

s3 = boto3.client(
    "s3",
    endpoint_url=os.environ["TD_ENDPOINT"],
    region_name="us-east-1",
    aws_access_key_id=os.environ["TD_ACCESS_KEY"],
    aws_secret_access_key=os.environ["TD_SECRET_KEY"],
    config=Config(s3={"addressing_style": "path"}, retries={"mode": "standard", "max_attempts": 1}),
)
body = bytes(range(256)) * 4000
b = "boto3-sums"
s3.create_bucket(Bucket=b)
out = {}
out["sha1"] = s3.put_object(Bucket=b, Key="sha1", Body=body, ChecksumAlgorithm="SHA1")["ChecksumSHA1"]
# A file-like body is streamed: aws-chunked with a trailing checksum.
out["streamed"] = s3.put_object(Bucket=b, Key="streamed", Body=io.BytesIO(body), ChecksumAlgorithm="SHA256")["ChecksumSHA256"]
out["head"] = s3.head_object(Bucket=b, Key="streamed", ChecksumMode="ENABLED")["ChecksumSHA256"]
try:
    s3.put_object(Bucket=b, Key="bad", Body=body, ChecksumCRC32="AAAAAA==")
    out["bad"] = "accepted"
except s3.exceptions.ClientError as e:
    out["bad"] = e.response["Error"]["Code"]
up = s3.create_multipart_upload(Bucket=b, Key="mp", ChecksumAlgorithm="CRC32", ChecksumType="FULL_OBJECT", Tagging="k=v%20w")
parts = []
for n, chunk in enumerate([body[:500000], body[500000:]], 1):
    p = s3.upload_part(Bucket=b, Key="mp", UploadId=up["UploadId"], PartNumber=n, Body=chunk, ChecksumAlgorithm="CRC32")
    parts.append({"PartNumber": n, "ETag": p["ETag"], "ChecksumCRC32": p["ChecksumCRC32"]})
# One part only (the first is below 5 MiB): the object is that part.
done = s3.complete_multipart_upload(Bucket=b, Key="mp", UploadId=up["UploadId"], MultipartUpload={"Parts": parts[:1]}, ChecksumType="FULL_OBJECT")
out["mp"] = [done["ChecksumCRC32"], done["ChecksumType"]]
out["tags"] = s3.get_object_tagging(Bucket=b, Key="mp")["TagSet"]
s3.put_bucket_cors(Bucket=b, CORSConfiguration={"CORSRules": [{"AllowedOrigins": ["https://x.example"], "AllowedMethods": ["GET"], "MaxAgeSeconds": 60}]})
out["cors"] = s3.get_bucket_cors(Bucket=b)["CORSRules"]
# s3transfer's multipart upload (what upload_file does): CRC32 per part, composite by default.
from boto3.s3.transfer import TransferConfig
big = body * 11
s3.upload_fileobj(io.BytesIO(big), b, "transfer", Config=TransferConfig(multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024))
h = s3.head_object(Bucket=b, Key="transfer", ChecksumMode="ENABLED")
out["transfer"] = [h.get("ChecksumCRC32"), h.get("ChecksumType"), h["ContentLength"]]
deleted = s3.delete_objects(Bucket=b, Delete={"Objects": [{"Key": "sha1"}, {"Key": "streamed"}, {"Key": "mp"}, {"Key": "transfer"}]})
out["deleted"] = sorted(d["Key"] for d in deleted["Deleted"])
print(json.dumps(out))
"#;

#[test]
fn boto3_checksums_tags_and_cors() {
    let python = std::env::var_os("TINYDFS_PYTHON")
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| {
            panic!("TINYDFS_PYTHON is not set: run the tests with scripts/test.sh (it sets it)")
        });
    let cluster = Cluster::start(Opts::default());
    let script = cluster.dir.join("boto3_integrity.py");
    std::fs::write(&script, BOTO3_SCRIPT).unwrap();
    let mut cmd = std::process::Command::new(python);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd
        .arg(&script)
        .env("TD_ENDPOINT", &cluster.endpoint)
        .env("TD_ACCESS_KEY", ACCESS_KEY)
        .env("TD_SECRET_KEY", SECRET_KEY)
        .env("AWS_CONFIG_FILE", cluster.dir.join("no-aws-config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", cluster.dir.join("no-creds"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "boto3 script failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(stdout.trim().lines().last().unwrap())
        .unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"));
    let body: Vec<u8> = (0..4000).flat_map(|_| 0..=255u8).collect();
    assert_eq!(v["sha1"], b64(&digest(&ChecksumAlgorithm::Sha1, &body)));
    let sha256 = b64(&digest(&ChecksumAlgorithm::Sha256, &body));
    assert_eq!(
        (&v["streamed"], &v["head"]),
        (&sha256.clone().into(), &sha256.into())
    );
    assert_eq!(v["bad"], "BadDigest");
    let part = b64(&digest(&ChecksumAlgorithm::Crc32, &body[..500_000]));
    assert_eq!(v["mp"], serde_json::json!([part, "FULL_OBJECT"]));
    assert_eq!(v["tags"], serde_json::json!([{"Key": "k", "Value": "v w"}]));
    assert_eq!(
        v["cors"],
        serde_json::json!([{"AllowedMethods": ["GET"], "AllowedOrigins": ["https://x.example"], "MaxAgeSeconds": 60}])
    );
    let big = body.repeat(11);
    let five = 5 * 1024 * 1024;
    let crcs: Vec<u8> = big
        .chunks(five)
        .flat_map(|p| digest(&ChecksumAlgorithm::Crc32, p))
        .collect();
    let composite = format!("{}-3", b64(&digest(&ChecksumAlgorithm::Crc32, &crcs)));
    assert_eq!(
        v["transfer"],
        serde_json::json!([composite, "COMPOSITE", big.len()]),
        "s3transfer's multipart upload"
    );
    assert_eq!(
        v["deleted"],
        serde_json::json!(["mp", "sha1", "streamed", "transfer"])
    );
}
