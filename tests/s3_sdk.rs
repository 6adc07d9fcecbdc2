//! End-to-end tests with aws-sdk-s3 (default checksum behaviour on) against a real local cluster.

mod common;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use common::*;

async fn get_bytes(
    c: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    range: Option<&str>,
) -> Vec<u8> {
    let mut req = c.get_object().bucket(bucket).key(key);
    if let Some(r) = range {
        req = req.range(r);
    }
    let out = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("get {key} {range:?}: {e:?}"));
    out.body.collect().await.unwrap().into_bytes().to_vec()
}

fn code<E: aws_sdk_s3::error::ProvideErrorMetadata>(e: &E) -> String {
    e.code().unwrap_or("").to_string()
}

#[test]
fn objects_of_every_size_round_trip_with_ranges_and_metadata() {
    let cluster = Cluster::start(Opts::default());
    let c = cluster.client();
    let chunk = cluster.chunk_size() as usize;
    rt().block_on(async {
        c.create_bucket().bucket("sizes").send().await.unwrap();
        for (i, size) in [0, 1, chunk, chunk + 1, 3 * chunk + 123]
            .into_iter()
            .enumerate()
        {
            let body = data(size, i as u64);
            let key = format!("obj-{size}");
            let put = c
                .put_object()
                .bucket("sizes")
                .key(&key)
                .content_type("application/x-test")
                .metadata("colour", "blue")
                .metadata("empty", "")
                .body(ByteStream::from(body.clone()))
                .send()
                .await
                .unwrap();
            assert_eq!(put.e_tag().unwrap(), format!("\"{}\"", md5_hex(&body)));
            let got = get_bytes(&c, "sizes", &key, None).await;
            assert_eq!(got.len(), size);
            assert!(got == body, "content of {key} differs");
            let head = c
                .head_object()
                .bucket("sizes")
                .key(&key)
                .send()
                .await
                .unwrap();
            assert_eq!(head.content_length(), Some(size as i64));
            assert_eq!(head.content_type(), Some("application/x-test"));
            let meta = head.metadata().unwrap();
            assert_eq!(meta.get("colour").map(String::as_str), Some("blue"));
            assert_eq!(meta.get("empty").map(String::as_str), Some(""));
            if size > 10 {
                // Ranges: crossing the first chunk boundary, open-ended, suffix.
                let mid = size.min(chunk);
                let from = mid.saturating_sub(10);
                let to = (mid + 10).min(size - 1);
                let r = get_bytes(&c, "sizes", &key, Some(&format!("bytes={from}-{to}"))).await;
                assert_eq!(r, &body[from..=to]);
                let r = get_bytes(&c, "sizes", &key, Some("bytes=5-")).await;
                assert_eq!(r, &body[5..]);
                let r = get_bytes(&c, "sizes", &key, Some("bytes=-7")).await;
                assert_eq!(r, &body[size - 7..]);
            }
        }
        // A range starting past the end is 416 InvalidRange.
        let err = c
            .get_object()
            .bucket("sizes")
            .key(format!("obj-{chunk}"))
            .range(format!("bytes={}-", chunk + 5))
            .send()
            .await
            .unwrap_err();
        assert_eq!(code(&err.into_service_error()), "InvalidRange");
        // Overwrite: every attribute is the new object's.
        let new = data(1000, 99);
        c.put_object()
            .bucket("sizes")
            .key("obj-1")
            .body(ByteStream::from(new.clone()))
            .send()
            .await
            .unwrap();
        let head = c
            .head_object()
            .bucket("sizes")
            .key("obj-1")
            .send()
            .await
            .unwrap();
        assert_eq!(head.content_length(), Some(1000));
        assert_eq!(head.e_tag().unwrap(), format!("\"{}\"", md5_hex(&new)));
        assert!(head.metadata().is_none_or(|m| m.is_empty()));
        assert_eq!(get_bytes(&c, "sizes", "obj-1", None).await, new);
        let err = c
            .get_object()
            .bucket("sizes")
            .key("missing")
            .send()
            .await
            .unwrap_err();
        assert_eq!(code(&err.into_service_error()), "NoSuchKey");
    });
}

#[test]
fn bucket_operations_follow_us_east_1() {
    let cluster = Cluster::start(Opts::default());
    let c = cluster.client();
    rt().block_on(async {
        c.create_bucket().bucket("alpha").send().await.unwrap();
        // Re-creating a bucket you own succeeds in us-east-1.
        c.create_bucket().bucket("alpha").send().await.unwrap();
        c.create_bucket().bucket("beta").send().await.unwrap();
        let err = c
            .create_bucket()
            .bucket("Bad_Name")
            .send()
            .await
            .unwrap_err();
        assert_eq!(code(&err.into_service_error()), "InvalidBucketName");
        let list = c.list_buckets().send().await.unwrap();
        let names: Vec<_> = list.buckets().iter().filter_map(|b| b.name()).collect();
        assert_eq!(names, ["alpha", "beta"]);
        c.head_bucket().bucket("alpha").send().await.unwrap();
        let err = c.head_bucket().bucket("nope").send().await.unwrap_err();
        assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(404));
        let loc = c
            .get_bucket_location()
            .bucket("alpha")
            .send()
            .await
            .unwrap();
        assert!(loc
            .location_constraint()
            .is_none_or(|l| l.as_str().is_empty()));
        c.put_object()
            .bucket("alpha")
            .key("k")
            .body(ByteStream::from_static(b"x"))
            .send()
            .await
            .unwrap();
        let err = c.delete_bucket().bucket("alpha").send().await.unwrap_err();
        assert_eq!(code(&err.into_service_error()), "BucketNotEmpty");
        // PUT never creates a bucket.
        let err = c
            .put_object()
            .bucket("gamma")
            .key("k")
            .body(ByteStream::from_static(b"x"))
            .send()
            .await
            .unwrap_err();
        assert_eq!(code(&err.into_service_error()), "NoSuchBucket");
        c.delete_object()
            .bucket("alpha")
            .key("k")
            .send()
            .await
            .unwrap();
        c.delete_bucket().bucket("alpha").send().await.unwrap();
        let err = c
            .list_objects_v2()
            .bucket("alpha")
            .send()
            .await
            .unwrap_err();
        assert_eq!(code(&err.into_service_error()), "NoSuchBucket");
    });
}

#[test]
fn listings_page_and_group_over_more_than_1000_keys() {
    let cluster = Cluster::start(Opts::default());
    let c = cluster.client();
    rt().block_on(async {
        c.create_bucket().bucket("many").send().await.unwrap();
        let mut keys: Vec<String> = (0..1100).map(|i| format!("d{}/k{i:04}", i % 3)).collect();
        keys.extend(["top1".to_string(), "top2".to_string(), "a b+c%".to_string()]);
        for batch in keys.chunks(16) {
            let mut tasks = Vec::new();
            for k in batch {
                let (c, k) = (c.clone(), k.clone());
                tasks.push(tokio::spawn(async move {
                    c.put_object()
                        .bucket("many")
                        .key(&k)
                        .body(ByteStream::from(k.clone().into_bytes()))
                        .send()
                        .await
                        .unwrap();
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
        }
        keys.sort();
        // v2, paginated by the SDK: every key once, in byte order.
        let mut seen = Vec::new();
        let mut pages = c.list_objects_v2().bucket("many").into_paginator().send();
        let mut page_count = 0;
        while let Some(p) = pages.next().await {
            let p = p.unwrap();
            page_count += 1;
            assert!(p.key_count().unwrap() <= 1000);
            for o in p.contents() {
                assert_eq!(o.size(), Some(o.key().unwrap().len() as i64));
                seen.push(o.key().unwrap().to_string());
            }
        }
        assert_eq!(page_count, 2);
        assert_eq!(seen, keys);
        // v1 with markers.
        let first = c
            .list_objects()
            .bucket("many")
            .max_keys(500)
            .send()
            .await
            .unwrap();
        assert!(first.is_truncated().unwrap());
        assert_eq!(first.contents().len(), 500);
        let last = first.contents().last().unwrap().key().unwrap().to_string();
        let second = c
            .list_objects()
            .bucket("many")
            .marker(&last)
            .max_keys(1000)
            .send()
            .await
            .unwrap();
        assert_eq!(second.contents()[0].key().unwrap(), keys[500]);
        // Delimiter: three common prefixes and the top-level keys.
        let d = c
            .list_objects_v2()
            .bucket("many")
            .delimiter("/")
            .send()
            .await
            .unwrap();
        let prefixes: Vec<_> = d
            .common_prefixes()
            .iter()
            .filter_map(|p| p.prefix())
            .collect();
        assert_eq!(prefixes, ["d0/", "d1/", "d2/"]);
        let top: Vec<_> = d.contents().iter().filter_map(|o| o.key()).collect();
        assert_eq!(top, ["a b+c%", "top1", "top2"]);
        // Pages of prefixes: max-keys counts keys and prefixes together ("a b+c%" sorts first).
        let p1 = c
            .list_objects_v2()
            .bucket("many")
            .delimiter("/")
            .max_keys(2)
            .send()
            .await
            .unwrap();
        assert_eq!(p1.contents()[0].key(), Some("a b+c%"));
        assert_eq!(p1.common_prefixes().len(), 1);
        assert!(p1.is_truncated().unwrap());
        let p2 = c
            .list_objects_v2()
            .bucket("many")
            .delimiter("/")
            .max_keys(2)
            .continuation_token(p1.next_continuation_token().unwrap())
            .send()
            .await
            .unwrap();
        let p2_prefixes: Vec<_> = p2
            .common_prefixes()
            .iter()
            .filter_map(|p| p.prefix())
            .collect();
        assert_eq!(p2_prefixes, ["d1/", "d2/"]);
        assert!(p2.contents().is_empty());
        // Prefix + delimiter inside a folder.
        let sub = c
            .list_objects_v2()
            .bucket("many")
            .prefix("d1/k000")
            .delimiter("/")
            .send()
            .await
            .unwrap();
        let sub_keys: Vec<_> = sub.contents().iter().filter_map(|o| o.key()).collect();
        assert_eq!(sub_keys, ["d1/k0001", "d1/k0004", "d1/k0007"]);
        // max-keys=0: nothing, not truncated.
        let none = c
            .list_objects_v2()
            .bucket("many")
            .max_keys(0)
            .send()
            .await
            .unwrap();
        assert_eq!(none.contents().len(), 0);
        assert!(!none.is_truncated().unwrap());
        // encoding-type=url encodes keys (space as %20).
        let enc = c
            .list_objects_v2()
            .bucket("many")
            .prefix("a")
            .encoding_type(aws_sdk_s3::types::EncodingType::Url)
            .send()
            .await
            .unwrap();
        assert_eq!(enc.contents()[0].key(), Some("a%20b%2Bc%25"));
    });
}

#[test]
fn multipart_upload_concatenates_parts() {
    let cluster = Cluster::start(Opts::default());
    let c = cluster.client();
    rt().block_on(async {
        c.create_bucket().bucket("mpu").send().await.unwrap();
        let parts_data = [data(5 << 20, 1), data(5 << 20, 2), data(1234, 3)];
        let up = c
            .create_multipart_upload()
            .bucket("mpu")
            .key("big")
            .content_type("text/x")
            .send()
            .await
            .unwrap();
        let id = up.upload_id().unwrap().to_string();
        let mut done = Vec::new();
        let mut md5s = Vec::new();
        for (i, d) in parts_data.iter().enumerate() {
            let n = i as i32 + 1;
            let r = c
                .upload_part()
                .bucket("mpu")
                .key("big")
                .upload_id(&id)
                .part_number(n)
                .body(ByteStream::from(d.clone()))
                .send()
                .await
                .unwrap();
            assert_eq!(r.e_tag().unwrap(), format!("\"{}\"", md5_hex(d)));
            md5s.extend(hex::decode(md5_hex(d)).unwrap());
            done.push(
                CompletedPart::builder()
                    .part_number(n)
                    .e_tag(r.e_tag().unwrap())
                    .build(),
            );
        }
        let parts = c
            .list_parts()
            .bucket("mpu")
            .key("big")
            .upload_id(&id)
            .send()
            .await
            .unwrap();
        assert_eq!(parts.parts().len(), 3);
        assert_eq!(parts.parts()[2].size(), Some(1234));
        // A wrong ETag is InvalidPart; parts out of order InvalidPartOrder.
        let bad = CompletedMultipartUpload::builder()
            .parts(
                CompletedPart::builder()
                    .part_number(1)
                    .e_tag("\"00000000000000000000000000000000\"")
                    .build(),
            )
            .build();
        let err = c
            .complete_multipart_upload()
            .bucket("mpu")
            .key("big")
            .upload_id(&id)
            .multipart_upload(bad)
            .send()
            .await
            .unwrap_err();
        assert_eq!(code(&err.into_service_error()), "InvalidPart");
        let reversed = CompletedMultipartUpload::builder()
            .set_parts(Some(done.iter().rev().cloned().collect()))
            .build();
        let err = c
            .complete_multipart_upload()
            .bucket("mpu")
            .key("big")
            .upload_id(&id)
            .multipart_upload(reversed)
            .send()
            .await
            .unwrap_err();
        assert_eq!(code(&err.into_service_error()), "InvalidPartOrder");
        let good = CompletedMultipartUpload::builder()
            .set_parts(Some(done.clone()))
            .build();
        let fin = c
            .complete_multipart_upload()
            .bucket("mpu")
            .key("big")
            .upload_id(&id)
            .multipart_upload(good.clone())
            .send()
            .await
            .unwrap();
        let want = format!("\"{}-3\"", md5_hex(&md5s));
        assert_eq!(fin.e_tag(), Some(want.as_str()));
        // Completing again with the same parts succeeds (idempotent), as on AWS.
        let again = c
            .complete_multipart_upload()
            .bucket("mpu")
            .key("big")
            .upload_id(&id)
            .multipart_upload(good)
            .send()
            .await
            .unwrap();
        assert_eq!(again.e_tag(), Some(want.as_str()));
        let all: Vec<u8> = parts_data.concat();
        assert!(get_bytes(&c, "mpu", "big", None).await == all);
        let head = c
            .head_object()
            .bucket("mpu")
            .key("big")
            .send()
            .await
            .unwrap();
        assert_eq!(head.content_length(), Some(all.len() as i64));
        assert_eq!(head.content_type(), Some("text/x"));
        // Range across the part boundary.
        let r = get_bytes(
            &c,
            "mpu",
            "big",
            Some(&format!("bytes={}-{}", (5 << 20) - 3, (5 << 20) + 3)),
        )
        .await;
        assert_eq!(r, &all[(5 << 20) - 3..=(5 << 20) + 3]);
        // partNumber reads one part; beyond the count is InvalidPartNumber.
        let p2 = c
            .get_object()
            .bucket("mpu")
            .key("big")
            .part_number(3)
            .send()
            .await
            .unwrap();
        assert_eq!(p2.parts_count(), Some(3));
        assert_eq!(
            p2.body.collect().await.unwrap().into_bytes().to_vec(),
            parts_data[2]
        );
        let err = c
            .get_object()
            .bucket("mpu")
            .key("big")
            .part_number(4)
            .send()
            .await
            .unwrap_err();
        assert_eq!(code(&err.into_service_error()), "InvalidPartNumber");
        // Abort: the upload is gone.
        let up2 = c
            .create_multipart_upload()
            .bucket("mpu")
            .key("gone")
            .send()
            .await
            .unwrap();
        let id2 = up2.upload_id().unwrap();
        c.upload_part()
            .bucket("mpu")
            .key("gone")
            .upload_id(id2)
            .part_number(1)
            .body(ByteStream::from_static(b"abc"))
            .send()
            .await
            .unwrap();
        c.abort_multipart_upload()
            .bucket("mpu")
            .key("gone")
            .upload_id(id2)
            .send()
            .await
            .unwrap();
        let err = c
            .list_parts()
            .bucket("mpu")
            .key("gone")
            .upload_id(id2)
            .send()
            .await
            .unwrap_err();
        assert_eq!(code(&err.into_service_error()), "NoSuchUpload");
        let err = c
            .head_object()
            .bucket("mpu")
            .key("gone")
            .send()
            .await
            .unwrap_err();
        assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(404));
    });
}

#[test]
fn delete_one_and_many() {
    let cluster = Cluster::start(Opts::default());
    let c = cluster.client();
    rt().block_on(async {
        c.create_bucket().bucket("del").send().await.unwrap();
        for k in ["a", "b", "c", "d"] {
            c.put_object()
                .bucket("del")
                .key(k)
                .body(ByteStream::from_static(b"1"))
                .send()
                .await
                .unwrap();
        }
        c.delete_object()
            .bucket("del")
            .key("a")
            .send()
            .await
            .unwrap();
        // Deleting a missing key succeeds, as on S3.
        c.delete_object()
            .bucket("del")
            .key("never")
            .send()
            .await
            .unwrap();
        let ids = ["b", "c", "zz"].map(|k| ObjectIdentifier::builder().key(k).build().unwrap());
        let out = c
            .delete_objects()
            .bucket("del")
            .delete(
                Delete::builder()
                    .set_objects(Some(ids.to_vec()))
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
        let mut deleted: Vec<_> = out.deleted().iter().filter_map(|d| d.key()).collect();
        deleted.sort();
        assert_eq!(deleted, ["b", "c", "zz"]);
        let left = c.list_objects_v2().bucket("del").send().await.unwrap();
        let keys: Vec<_> = left.contents().iter().filter_map(|o| o.key()).collect();
        assert_eq!(keys, ["d"]);
    });
}

#[test]
fn admin_status_lists_every_node() {
    let cluster = Cluster::start(Opts::default());
    let c = cluster.client();
    rt().block_on(async {
        c.create_bucket().bucket("stat").send().await.unwrap();
        c.put_object()
            .bucket("stat")
            .key("k")
            .body(ByteStream::from(data(600_000, 1)))
            .send()
            .await
            .unwrap();
    });
    let s = cluster.status();
    let nodes = s["nodes"].as_array().unwrap();
    let role = |r: &str| nodes.iter().filter(|n| n["role"] == r).count();
    assert_eq!(
        (role("master"), role("chunkserver"), role("gateway")),
        (1, 3, 1)
    );
    assert!(nodes
        .iter()
        .all(|n| n["pid"].as_u64().unwrap_or(0) > 0 && n["addr"].as_str().is_some()));
    assert_eq!(
        nodes.iter().find(|n| n["role"] == "master").unwrap()["state"],
        "leader"
    );
    assert!(nodes
        .iter()
        .filter(|n| n["role"] == "chunkserver")
        .all(|n| n["state"] == "alive"));
    assert_eq!(s["objects"], 1);
    assert_eq!(s["buckets"], 1);
    // 600,000 bytes in 256 KiB chunks.
    assert_eq!(s["chunks"], 3);
    // The master's view of process ids matches the processes `server` started.
    let mut reported: Vec<u64> = nodes
        .iter()
        .filter(|n| n["role"] == "chunkserver")
        .map(|n| n["pid"].as_u64().unwrap())
        .collect();
    let mut started: Vec<u64> = (1..=3)
        .map(|i| u64::from(cluster.pid(&format!("chunkserver-{i}"))))
        .collect();
    reported.sort();
    started.sort();
    assert_eq!(reported, started);
}

#[test]
fn conditional_puts_check_the_current_object() {
    let cluster = Cluster::start(Opts::default());
    let c = cluster.client();
    rt().block_on(async {
        c.create_bucket().bucket("cond").send().await.unwrap();
        // If-None-Match: * creates once (a lock file, as Terraform uses it), then refuses.
        let first = c
            .put_object()
            .bucket("cond")
            .key("lock")
            .if_none_match("*")
            .body(ByteStream::from_static(b"mine"))
            .send()
            .await
            .unwrap();
        let err = c
            .put_object()
            .bucket("cond")
            .key("lock")
            .if_none_match("*")
            .body(ByteStream::from_static(b"theirs"))
            .send()
            .await
            .unwrap_err();
        assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(412));
        assert_eq!(code(&err.into_service_error()), "PreconditionFailed");
        assert_eq!(get_bytes(&c, "cond", "lock", None).await, b"mine");
        // If-Match: only over the expected version.
        let err = c
            .put_object()
            .bucket("cond")
            .key("lock")
            .if_match("\"0123456789abcdef0123456789abcdef\"")
            .body(ByteStream::from_static(b"x"))
            .send()
            .await
            .unwrap_err();
        assert_eq!(code(&err.into_service_error()), "PreconditionFailed");
        c.put_object()
            .bucket("cond")
            .key("lock")
            .if_match(first.e_tag().unwrap())
            .body(ByteStream::from_static(b"next"))
            .send()
            .await
            .unwrap();
        assert_eq!(get_bytes(&c, "cond", "lock", None).await, b"next");
        // If-Match on a missing key: the absence wins (404 NoSuchKey).
        let err = c
            .put_object()
            .bucket("cond")
            .key("absent")
            .if_match("\"abc\"")
            .body(ByteStream::from_static(b"x"))
            .send()
            .await
            .unwrap_err();
        assert_eq!(code(&err.into_service_error()), "NoSuchKey");
        // Conditional GETs: 304 and 412.
        let etag = c
            .head_object()
            .bucket("cond")
            .key("lock")
            .send()
            .await
            .unwrap()
            .e_tag()
            .unwrap()
            .to_string();
        let err = c
            .get_object()
            .bucket("cond")
            .key("lock")
            .if_none_match(&etag)
            .send()
            .await
            .unwrap_err();
        assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(304));
        let err = c
            .get_object()
            .bucket("cond")
            .key("lock")
            .if_match("\"nope\"")
            .send()
            .await
            .unwrap_err();
        assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(412));
    });
}
