use super::listing::successor;
use super::*;
use md5::{Digest, Md5};

fn cmd(op: Op, t: u64) -> Command {
    Command {
        version: COMMAND_VERSION,
        request_id: None,
        time_ms: t,
        op,
    }
}

fn meta(w: MetaWrite) -> Op {
    Op::Meta(w)
}

/// A chunk id under lease 1, which [`bucket`] acquires.
fn cid(n: u128) -> ChunkId {
    ChunkId((1 << 96) | n)
}

fn put(s: &mut State, key: &str, t: u64) {
    let r = s.apply(&cmd(
        meta(MetaWrite::PutObject {
            bucket: "b".into(),
            key: key.into(),
            condition: None,
            record: ObjectRecord {
                size: 1,
                etag: "e".into(),
                chunks: vec![ChunkMeta {
                    id: cid(t as u128),
                    len: 1,
                    crc32c: 0,
                }],
                ..Default::default()
            },
        }),
        t,
    ));
    assert!(r.0.is_ok(), "{r:?}");
}

fn bucket() -> State {
    let mut s = State::default();
    s.apply(&cmd(
        meta(MetaWrite::CreateBucket {
            bucket: "b".into(),
            owner: "me".into(),
        }),
        1,
    ));
    s.apply(&cmd(
        meta(MetaWrite::AcquireLease {
            holder: "gw".into(),
            ttl_ms: None,
        }),
        1,
    ));
    s
}

fn list(s: &State, prefix: &str, delim: Option<&str>, after: Option<&str>, max: usize) -> ListPage {
    s.list(&ListQuery {
        bucket: "b".into(),
        prefix: prefix.into(),
        delimiter: delim.map(String::from),
        after: after.map(String::from),
        max_keys: max,
    })
    .unwrap()
}

fn copy(src: (&str, &str), dst: (&str, &str)) -> MetaWrite {
    MetaWrite::CopyObject {
        src_bucket: src.0.into(),
        src_key: src.1.into(),
        dst_bucket: dst.0.into(),
        dst_key: dst.1.into(),
        attrs: None,
        source_condition: None,
        condition: None,
        tags: None,
    }
}

fn refs(s: &State, n: u128) -> u32 {
    s.chunks.get(&cid(n)).map_or(0, |e| e.refs)
}

#[test]
fn a_batch_applies_each_write_once_with_its_own_answer() {
    let mut s = bucket();
    let put = |key: &str| {
        meta(MetaWrite::PutObject {
            bucket: "b".into(),
            key: key.into(),
            condition: None,
            record: ObjectRecord {
                etag: "d41d8cd98f00b204e9800998ecf8427e".into(),
                ..Default::default()
            },
        })
    };
    let batch = |writes: Vec<(u128, Op)>| {
        cmd(
            Op::Many(
                writes
                    .into_iter()
                    .map(|(request_id, op)| Batched { request_id, op })
                    .collect(),
            ),
            5,
        )
    };
    let missing_bucket = meta(MetaWrite::DeleteBucket {
        bucket: "nope".into(),
    });
    let r = s.apply(&batch(vec![
        (1, put("x")),
        (2, missing_bucket),
        (3, put("y")),
    ]));
    let Ok(MetaReplyKind::Many(replies)) = r.0 else {
        panic!("{r:?}");
    };
    assert_eq!(replies.len(), 3);
    assert!(replies[0].0.is_ok() && replies[2].0.is_ok(), "{replies:?}");
    assert_eq!(replies[1].0, Err(MetaError::NoSuchBucket));
    assert!(s.buckets["b"].objects.contains_key("x"));
    assert!(s.buckets["b"].objects.contains_key("y"));
    // Retried (in another batch, or alone): the first answers, nothing applied again.
    let again = s.apply(&batch(vec![(
        3,
        meta(MetaWrite::DeleteBucket { bucket: "b".into() }),
    )]));
    let Ok(MetaReplyKind::Many(again)) = again.0 else {
        panic!("{again:?}");
    };
    assert_eq!(again[0], replies[2]);
    assert!(s.buckets.contains_key("b"));
    let mut alone = cmd(put("z"), 6);
    alone.request_id = Some(1);
    assert_eq!(s.apply(&alone), replies[0]);
    assert!(!s.buckets["b"].objects.contains_key("z"));
    // No batch inside a batch.
    let r = s.apply(&batch(vec![(9, Op::Many(Vec::new()))]));
    let Ok(MetaReplyKind::Many(r)) = r.0 else {
        panic!("{r:?}");
    };
    assert!(matches!(r[0].0, Err(MetaError::BadRequest(_))));
}

#[test]
fn a_copy_shares_the_chunks_and_outlives_its_source() {
    let mut s = bucket();
    s.apply(&cmd(
        meta(MetaWrite::CreateBucket {
            bucket: "c".into(),
            owner: "me".into(),
        }),
        2,
    ));
    put(&mut s, "src", 10);
    let r = s.apply(&cmd(meta(copy(("b", "src"), ("b", "dst"))), 20));
    assert_eq!(
        r.0,
        Ok(MetaReplyKind::Meta(MetaReplyData::Committed {
            etag: "e".into(),
            last_modified_ms: 20
        }))
    );
    assert!(s
        .apply(&cmd(meta(copy(("b", "src"), ("c", "other"))), 21))
        .0
        .is_ok());
    assert_eq!(refs(&s, 10), 3, "one chunk, three records");
    let dst = &s.buckets["b"].objects["dst"].to_record();
    assert_eq!(dst.chunks, s.buckets["b"].objects["src"].to_record().chunks);
    assert_eq!((dst.etag.as_str(), dst.last_modified_ms), ("e", 20));
    // The source goes; the copies keep the chunk.
    s.apply(&cmd(
        meta(MetaWrite::DeleteObject {
            bucket: "b".into(),
            key: "src".into(),
        }),
        22,
    ));
    assert_eq!(refs(&s, 10), 2);
    // A copy from a source deleted before the copy is applied finds nothing to share.
    let late = s.apply(&cmd(meta(copy(("b", "src"), ("b", "late"))), 23));
    assert_eq!(late.0, Err(MetaError::NoSuchKey));
    let no_bucket = s.apply(&cmd(meta(copy(("b", "dst"), ("nope", "x"))), 23));
    assert_eq!(no_bucket.0, Err(MetaError::NoSuchBucket));
    // Overwriting a copy releases its reference; copying over an object releases that
    // object's chunks.
    put(&mut s, "dst", 30);
    assert_eq!(refs(&s, 10), 1);
    assert!(s
        .apply(&cmd(meta(copy(("c", "other"), ("b", "dst"))), 31))
        .0
        .is_ok());
    assert_eq!(refs(&s, 30), 0);
    assert_eq!(refs(&s, 10), 2);
    for (b, k) in [("b", "dst"), ("c", "other")] {
        s.apply(&cmd(
            meta(MetaWrite::DeleteObject {
                bucket: b.into(),
                key: k.into(),
            }),
            32,
        ));
    }
    assert!(s.chunks.is_empty());
}

#[test]
fn a_copy_onto_itself_replaces_metadata_and_keeps_data() {
    let mut s = bucket();
    put(&mut s, "k", 10);
    let mut w = copy(("b", "k"), ("b", "k"));
    if let MetaWrite::CopyObject { attrs, tags, .. } = &mut w {
        *attrs = Some(ObjectAttrs {
            content_type: Some("text/plain".into()),
            user_meta: vec![("mtime".into(), "1700000000".into())],
            ..Default::default()
        });
        *tags = Some(vec![("t".into(), "1".into())]);
    }
    assert!(s.apply(&cmd(meta(w), 20)).0.is_ok());
    assert_eq!(
        refs(&s, 10),
        1,
        "references added before the old ones are dropped"
    );
    let rec = &s.buckets["b"].objects["k"].to_record();
    assert_eq!(rec.content_type.as_deref(), Some("text/plain"));
    assert_eq!(
        rec.user_meta,
        [("mtime".to_string(), "1700000000".to_string())]
    );
    assert_eq!(rec.tags, [("t".to_string(), "1".to_string())]);
    assert_eq!((rec.etag.as_str(), rec.last_modified_ms), ("e", 20));
}

#[test]
fn a_copy_of_a_multipart_object_keeps_its_parts_and_etag() {
    let mut s = bucket();
    s.apply(&cmd(
        Op::CreateUpload {
            upload_id: "u".into(),
            bucket: "b".into(),
            key: "mp".into(),
            attrs: ObjectAttrs::default(),
            initiator: String::new(),
        },
        2,
    ));
    for (n, size) in [(1u32, MIN_PART_SIZE), (2, 3)] {
        let r = s.apply(&cmd(
            meta(MetaWrite::PutPart {
                bucket: "b".into(),
                key: "mp".into(),
                upload_id: "u".into(),
                number: n,
                part: PartRecord {
                    size,
                    etag: format!("{n:032x}"),
                    last_modified_ms: 0,
                    checksums: vec![],
                    chunks: vec![ChunkMeta {
                        id: cid(n as u128),
                        len: size,
                        crc32c: 0,
                    }],
                },
            }),
            3,
        ));
        assert!(r.0.is_ok(), "{r:?}");
    }
    let parts = vec![(1, format!("{:032x}", 1)), (2, format!("{:032x}", 2))];
    let done = s.apply(&cmd(
        meta(MetaWrite::CompleteUpload {
            bucket: "b".into(),
            key: "mp".into(),
            upload_id: "u".into(),
            parts,
            checksums: Vec::new(),
            condition: None,
        }),
        4,
    ));
    assert!(done.0.is_ok(), "{done:?}");
    assert!(s
        .apply(&cmd(meta(copy(("b", "mp"), ("b", "cp"))), 5))
        .0
        .is_ok());
    let (src, dst) = (
        &s.buckets["b"].objects["mp"].to_record(),
        &s.buckets["b"].objects["cp"].to_record(),
    );
    assert!(dst.etag.ends_with("-2"));
    assert_eq!(
        (&dst.etag, &dst.parts, dst.size),
        (&src.etag, &src.parts, src.size)
    );
    assert_eq!((refs(&s, 1), refs(&s, 2)), (2, 2));
}

#[test]
fn copy_preconditions_follow_s3_precedence() {
    let mut s = bucket();
    put(&mut s, "src", 10_000); // last modified at 10 s
    put(&mut s, "dst", 10_001);
    let with = |c: CopyCondition, d: Option<WriteCondition>| {
        let mut w = copy(("b", "src"), ("b", "dst"));
        if let MetaWrite::CopyObject {
            source_condition,
            condition,
            ..
        } = &mut w
        {
            *source_condition = Some(c);
            *condition = d;
        }
        cmd(meta(w), 20_000)
    };
    let failed = Err(MetaError::PreconditionFailed);
    let cases = [
        // (if-match, if-none-match, if-modified-since, if-unmodified-since) -> copied
        ((Some("\"e\""), None, None, None), true),
        ((Some("x, e"), None, None, None), true),
        ((Some("x"), None, None, None), false),
        ((Some("*"), None, None, None), true),
        ((None, Some("e"), None, None), false),
        ((None, Some("x"), None, None), true),
        ((None, None, Some(9), None), true),
        ((None, None, Some(10), None), false),
        ((None, None, None, Some(10)), true),
        ((None, None, None, Some(9)), false),
        // A matching if-match wins over a failing if-unmodified-since...
        ((Some("e"), None, None, Some(9)), true),
        // ...and an if-none-match decides alone over if-modified-since.
        ((None, Some("e"), Some(9), None), false),
        ((None, Some("x"), Some(10), None), true),
    ];
    for ((m, nm, ms, ums), copied) in cases {
        let c = CopyCondition {
            if_match: m.map(String::from),
            if_none_match: nm.map(String::from),
            if_modified_since: ms,
            if_unmodified_since: ums,
        };
        let r = s.apply(&with(c.clone(), None));
        if copied {
            assert!(r.0.is_ok(), "{c:?}: {r:?}");
        } else {
            assert_eq!(r.0, failed, "{c:?}");
        }
    }
    // A condition on the destination: If-None-Match: * with an object there.
    let none_match = WriteCondition {
        if_match: None,
        if_none_match: true,
    };
    let r = s.apply(&with(CopyCondition::default(), Some(none_match)));
    assert_eq!(r.0, failed);
    assert_eq!(refs(&s, 10_000), 2, "failed copies change nothing");
}

fn upload(s: &mut State, id: &str, key: &str, t: u64) {
    let r = s.apply(&cmd(
        Op::CreateUpload {
            upload_id: id.into(),
            bucket: "b".into(),
            key: key.into(),
            attrs: ObjectAttrs::default(),
            initiator: String::new(),
        },
        t,
    ));
    assert!(r.0.is_ok(), "{r:?}");
}

fn uploads(
    s: &State,
    prefix: &str,
    delim: Option<&str>,
    markers: (Option<&str>, Option<&str>),
    max: usize,
) -> UploadPage {
    s.list_uploads(&UploadQuery {
        bucket: "b".into(),
        prefix: prefix.into(),
        delimiter: delim.map(String::from),
        key_marker: markers.0.map(String::from),
        upload_id_marker: markers.1.map(String::from),
        max_uploads: max,
    })
    .unwrap()
}

fn names(p: &UploadPage) -> Vec<String> {
    p.uploads
        .iter()
        .map(|u| format!("{}@{}", u.key, u.upload_id))
        .chain(p.common_prefixes.iter().cloned())
        .collect()
}

#[test]
fn multipart_uploads_list_by_key_then_initiation() {
    let mut s = bucket();
    // Ids in an order unlike initiation time: the listing must follow the time.
    upload(&mut s, "z1", "k", 10);
    upload(&mut s, "a2", "k", 20);
    upload(&mut s, "m3", "a/x", 30);
    upload(&mut s, "b4", "a/y", 40);
    upload(&mut s, "c5", "b", 50);
    upload(&mut s, "d6", "k", 60);
    let all = uploads(&s, "", None, (None, None), 1000);
    assert_eq!(
        names(&all),
        ["a/x@m3", "a/y@b4", "b@c5", "k@z1", "k@a2", "k@d6"]
    );
    assert!(!all.truncated);
    assert_eq!(all.uploads[3].initiated_ms, 10);
    let p = uploads(&s, "", Some("/"), (None, None), 1000);
    assert_eq!(names(&p), ["b@c5", "k@z1", "k@a2", "k@d6", "a/"]);
    assert_eq!(
        names(&uploads(&s, "a/", Some("/"), (None, None), 9)),
        ["a/x@m3", "a/y@b4"]
    );
    // Pages of two with the markers a client sends back.
    let p1 = uploads(&s, "", None, (None, None), 2);
    assert!(p1.truncated);
    assert_eq!(
        (
            p1.next_key_marker.as_deref(),
            p1.next_upload_id_marker.as_deref()
        ),
        (Some("a/y"), Some("b4"))
    );
    let p2 = uploads(&s, "", None, (Some("a/y"), Some("b4")), 2);
    assert_eq!(names(&p2), ["b@c5", "k@z1"]);
    let p3 = uploads(&s, "", None, (Some("k"), Some("z1")), 2);
    assert_eq!(names(&p3), ["k@a2", "k@d6"]);
    assert!(!p3.truncated);
    // A key marker alone starts after every upload of that key; an upload id marker alone
    // is ignored.
    assert_eq!(
        names(&uploads(&s, "", None, (Some("b"), None), 9)),
        ["k@z1", "k@a2", "k@d6"]
    );
    assert_eq!(
        uploads(&s, "", None, (None, Some("z1")), 9).uploads.len(),
        6
    );
    // An upload id marker naming no upload: ids greater than it, as S3 documents.
    assert_eq!(
        names(&uploads(&s, "", None, (Some("k"), Some("b0")), 9)),
        ["k@z1", "k@d6"]
    );
    // A page ending with a common prefix continues after every key under it.
    let d1 = uploads(&s, "", Some("/"), (None, None), 1);
    assert_eq!((names(&d1), d1.truncated), (vec!["a/".to_string()], true));
    assert_eq!(d1.next_key_marker.as_deref(), Some("a/"));
    assert_eq!(d1.next_upload_id_marker, None);
    let d2 = uploads(&s, "", Some("/"), (Some("a/"), None), 1);
    assert_eq!(names(&d2), ["b@c5"]);
    assert!(uploads(&s, "", None, (None, None), 0).uploads.is_empty());
    // Other buckets' uploads are not listed; a missing bucket is an error.
    s.apply(&cmd(
        meta(MetaWrite::CreateBucket {
            bucket: "c".into(),
            owner: "me".into(),
        }),
        70,
    ));
    let other = s.list_uploads(&UploadQuery {
        bucket: "c".into(),
        max_uploads: 10,
        ..Default::default()
    });
    assert!(other.unwrap().uploads.is_empty());
    let missing = s.list_uploads(&UploadQuery {
        bucket: "nope".into(),
        max_uploads: 10,
        ..Default::default()
    });
    assert_eq!(missing.unwrap_err(), MetaError::NoSuchBucket);
}

#[test]
fn bucket_rules_follow_us_east_1() {
    let mut s = bucket();
    let again = s.apply(&cmd(
        meta(MetaWrite::CreateBucket {
            bucket: "b".into(),
            owner: "me".into(),
        }),
        2,
    ));
    assert_eq!(
        again.0,
        Ok(MetaReplyKind::Meta(MetaReplyData::Created(false)))
    );
    let other = s.apply(&cmd(
        meta(MetaWrite::CreateBucket {
            bucket: "b".into(),
            owner: "you".into(),
        }),
        2,
    ));
    assert_eq!(other.0, Err(MetaError::BucketAlreadyExists));
    put(&mut s, "k", 3);
    let del = s.apply(&cmd(
        meta(MetaWrite::DeleteBucket { bucket: "b".into() }),
        4,
    ));
    assert_eq!(del.0, Err(MetaError::BucketNotEmpty));
}

#[test]
fn replacing_an_object_releases_its_chunks_and_retries_apply_once() {
    let mut s = bucket();
    put(&mut s, "k", 10);
    put(&mut s, "k", 11);
    assert_eq!(s.chunks.len(), 1);
    assert!(s.chunks.contains_key(&cid(11)));
    let mut c = cmd(
        meta(MetaWrite::DeleteObject {
            bucket: "b".into(),
            key: "k".into(),
        }),
        12,
    );
    c.request_id = Some(7);
    assert!(s.apply(&c).0.is_ok());
    put(&mut s, "k", 13);
    // The same request id again: answered from memory, the new object stays.
    assert!(s.apply(&c).0.is_ok());
    assert_eq!(s.object_count(), 1);
    assert!(s.chunks.is_empty() || s.chunks.contains_key(&cid(13)));
}

#[test]
fn listing_with_delimiter_and_pages() {
    let mut s = bucket();
    for (i, k) in ["a/1", "a/2", "b", "c/x/y", "c/z", "d"].iter().enumerate() {
        put(&mut s, k, 100 + i as u64);
    }
    let p = list(&s, "", Some("/"), None, 1000);
    assert_eq!(p.common_prefixes, vec!["a/", "c/"]);
    assert_eq!(
        p.entries.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(),
        ["b", "d"]
    );
    assert!(!p.truncated);
    // Pages of two: a/ + b, then c/ + d.
    let p1 = list(&s, "", Some("/"), None, 2);
    assert!(p1.truncated);
    assert_eq!(p1.next_after.as_deref(), Some("b"));
    let p2 = list(&s, "", Some("/"), Some("b"), 2);
    assert_eq!(p2.common_prefixes, vec!["c/"]);
    assert_eq!(p2.entries[0].key, "d");
    assert!(!p2.truncated);
    // Continuing after a common prefix skips the keys under it.
    let p3 = list(&s, "", Some("/"), Some("a/"), 1);
    assert_eq!(p3.entries[0].key, "b");
    let p4 = list(&s, "c/", Some("/"), None, 10);
    assert_eq!(p4.common_prefixes, vec!["c/x/"]);
    assert_eq!(p4.entries[0].key, "c/z");
    assert!(list(&s, "", None, None, 0).entries.is_empty());
    assert_eq!(successor("a/"), Some("a0".to_string()));
    assert_eq!(successor("a\u{10FFFF}"), Some("b".to_string()));
    assert_eq!(successor("\u{D7FF}"), Some("\u{E000}".to_string()));
    assert_eq!(successor(""), None);
}

/// The listing rules written the slow, obvious way.
fn naive(
    keys: &[String],
    prefix: &str,
    delim: Option<&str>,
    after: Option<&str>,
    max: usize,
) -> (Vec<String>, bool) {
    let mut items: Vec<String> = Vec::new();
    for k in keys {
        if !k.starts_with(prefix) || after.is_some_and(|a| k.as_str() <= a) {
            continue;
        }
        let item = match delim.and_then(|d| {
            k[prefix.len()..]
                .find(d)
                .map(|p| k[..prefix.len() + p + d.len()].to_string())
        }) {
            Some(cp) => cp,
            None => k.clone(),
        };
        if Some(item.as_str()) == after || items.last() == Some(&item) {
            continue;
        }
        items.push(item);
    }
    let truncated = items.len() > max;
    items.truncate(max);
    (items, truncated)
}

#[test]
fn listing_matches_the_naive_rules_on_random_keys() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let alphabet = ["a", "b", "/", "-", "é"];
    for round in 0..200 {
        let mut s = bucket();
        let mut keys: Vec<String> = (0..rng.gen_range(0..40))
            .map(|_| {
                (0..rng.gen_range(1..6))
                    .map(|_| alphabet[rng.gen_range(0..alphabet.len())])
                    .collect()
            })
            .collect();
        keys.sort();
        keys.dedup();
        for (i, k) in keys.iter().enumerate() {
            put(&mut s, k, 1000 + i as u64);
        }
        let prefix: String = (0..rng.gen_range(0..2))
            .map(|_| alphabet[rng.gen_range(0..2)])
            .collect();
        let delim = [None, Some("/"), Some("-")][rng.gen_range(0..3)];
        let max = rng.gen_range(1..6);
        // Walk all pages the way a client does, and compare each page.
        let mut after: Option<String> = None;
        for _ in 0..100 {
            let page = list(&s, &prefix, delim, after.as_deref(), max);
            let (want, want_trunc) = naive(&keys, &prefix, delim, after.as_deref(), max);
            let mut got: Vec<String> = page
                .entries
                .iter()
                .map(|e| e.key.clone())
                .chain(page.common_prefixes.iter().cloned())
                .collect();
            got.sort();
            let mut want_sorted = want.clone();
            want_sorted.sort();
            assert_eq!(
                got, want_sorted,
                "round {round}, prefix {prefix:?}, delim {delim:?}, after {after:?}"
            );
            assert_eq!(page.truncated, want_trunc, "round {round}");
            if !page.truncated {
                break;
            }
            after = page.next_after.clone();
        }
    }
}

#[test]
fn chunks_commit_only_under_a_live_lease() {
    let mut s = bucket();
    let r = s.apply(&cmd(
        meta(MetaWrite::AcquireLease {
            holder: "gw".into(),
            ttl_ms: None,
        }),
        10,
    ));
    let Ok(MetaReplyKind::Meta(MetaReplyData::Lease { id, expires_ms })) = r.0 else {
        panic!("{r:?}");
    };
    // `bucket()` took lease 1.
    assert_eq!((id, expires_ms), (2, 10 + LEASE_TTL_MS));
    let commit = |chunk: ChunkId, t: u64| {
        cmd(
            meta(MetaWrite::PutObject {
                bucket: "b".into(),
                key: format!("k{t}"),
                condition: None,
                record: ObjectRecord {
                    chunks: vec![ChunkMeta {
                        id: chunk,
                        len: 1,
                        crc32c: 0,
                    }],
                    ..Default::default()
                },
            }),
            t,
        )
    };
    assert!(s.apply(&commit(ChunkId::in_lease(id), 20)).0.is_ok());
    // Renewed in time: still good later.
    assert!(s
        .apply(&cmd(
            meta(MetaWrite::RenewLease {
                lease: id,
                ttl_ms: None,
            }),
            30_000
        ))
        .0
        .is_ok());
    assert!(s.apply(&commit(ChunkId::in_lease(id), 80_000)).0.is_ok());
    // Expired: its chunks may be garbage already, so a commit of new ones is refused.
    let late = 30_000 + LEASE_TTL_MS + 1;
    assert_eq!(
        s.apply(&commit(ChunkId::in_lease(id), late)).0,
        Err(MetaError::NoSuchLease)
    );
    assert_eq!(
        s.apply(&cmd(
            meta(MetaWrite::RenewLease {
                lease: id,
                ttl_ms: None,
            }),
            late
        ))
        .0,
        Err(MetaError::NoSuchLease)
    );
    // A new lease gets a new id.
    let r = s.apply(&cmd(
        meta(MetaWrite::AcquireLease {
            holder: "gw".into(),
            ttl_ms: None,
        }),
        late,
    ));
    assert!(matches!(
        r.0,
        Ok(MetaReplyKind::Meta(MetaReplyData::Lease { id: 3, .. }))
    ));
}

#[test]
fn garbage_is_unreferenced_and_beyond_its_lease() {
    let mut s = bucket();
    put(&mut s, "k", 10);
    let live = cid(10);
    let pending = cid(99); // written under lease 1, not committed yet
    assert!(!s.is_garbage(&live));
    assert!(!s.is_garbage(&pending));
    // Replaced: unreferenced, but collected only once its lease is gone.
    put(&mut s, "k", 11);
    assert!(!s.chunks.contains_key(&live));
    assert!(!s.is_garbage(&live));
    // No lease at all (id 0): garbage once unreferenced. A lease id not issued yet in this
    // state may be live in a later one (a deposed leader's stale view): never garbage.
    assert!(s.is_garbage(&ChunkId(5)));
    assert!(!s.is_garbage(&ChunkId((7 << 96) | 5)));
    // The lease expires with the clock of the next applied command (a Tick when idle).
    assert!(!s.has_expired_lease(1000));
    assert!(s.has_expired_lease(1 + LEASE_TTL_MS));
    assert!(s.apply(&cmd(Op::Tick, 1 + LEASE_TTL_MS)).0.is_ok());
    assert!(!s.has_expired_lease(1 + LEASE_TTL_MS));
    assert!(s.is_garbage(&live));
    assert!(s.is_garbage(&pending));
    assert!(
        !s.is_garbage(&cid(11)),
        "a referenced chunk is never garbage"
    );
    // ...and the pending chunk can never be committed now.
    let late = s.apply(&cmd(
        meta(MetaWrite::PutObject {
            bucket: "b".into(),
            key: "late".into(),
            condition: None,
            record: ObjectRecord {
                chunks: vec![ChunkMeta {
                    id: pending,
                    len: 1,
                    crc32c: 0,
                }],
                ..Default::default()
            },
        }),
        2 + LEASE_TTL_MS,
    ));
    assert_eq!(late.0, Err(MetaError::NoSuchLease));
}

#[test]
fn a_restored_state_never_collects_chunks_of_leases_it_does_not_know() {
    let mut old = bucket();
    put(&mut old, "k", 10);
    let backup = old.clone();
    // After the backup the old cluster took lease 2 and committed an object under it.
    let later = ChunkId((2 << 96) | 5);
    let mut fresh = State::default();
    assert!(fresh
        .apply(&cmd(
            Op::Restore {
                state: Box::new(backup.clone())
            },
            20
        ))
        .0
        .is_ok());
    assert_eq!(fresh.object_count(), 1);
    assert!(fresh.chunks.contains_key(&cid(10)));
    // Far in the future, every old lease expired: the unknown chunk is still kept, a
    // replaced one from before the backup is not.
    put(&mut fresh, "k", 11);
    fresh.apply(&cmd(Op::Tick, 10 * LEASE_TTL_MS));
    assert!(!fresh.is_garbage(&later));
    assert!(
        !fresh.is_garbage(&cid(10)),
        "lease 1 was live at the backup"
    );
    assert!(fresh.is_garbage(&ChunkId(5)));
    // New leases come after the protected range, and their garbage is collected.
    let r = fresh.apply(&cmd(
        meta(MetaWrite::AcquireLease {
            holder: "gw".into(),
            ttl_ms: None,
        }),
        10 * LEASE_TTL_MS,
    ));
    let Ok(MetaReplyKind::Meta(MetaReplyData::Lease { id, .. })) = r.0 else {
        panic!("{r:?}");
    };
    let (start, end) = fresh.protected_leases.unwrap();
    assert!(start <= 1 && id >= end);
    fresh.apply(&cmd(Op::Tick, 20 * LEASE_TTL_MS));
    assert!(fresh.is_garbage(&ChunkId((u128::from(id) << 96) | 1)));
    // A second restore, or one into a named cluster, is refused.
    let again = fresh.apply(&cmd(
        Op::Restore {
            state: Box::new(backup),
        },
        30,
    ));
    assert!(again.0.is_err());
}

#[test]
fn a_backup_restored_as_a_snapshot_is_the_state_an_old_restore_entry_gives() {
    let mut old = bucket();
    put(&mut old, "k", 10);
    old.apply(&cmd(
        meta(MetaWrite::AcquireLease {
            holder: "gw".into(),
            ttl_ms: None,
        }),
        11,
    ));
    old.cluster_id = "c1".into();
    old.retired_masters.insert(7);
    // An old log's `Op::Restore` entry, applied at time 50...
    let mut by_entry = State::default();
    assert!(by_entry
        .apply(&cmd(
            Op::Restore {
                state: Box::new(old.clone())
            },
            50
        ))
        .0
        .is_ok());
    // ...and the snapshot a restore now starts the group with, made at the same time.
    let backup = Backup {
        version: BACKUP_VERSION,
        taken_ms: 12,
        applied_index: 9,
        state: old,
    };
    let seeded = backup.into_restored_state(50);
    assert_eq!(
        serde_json::to_value(&seeded).unwrap(),
        serde_json::to_value(&by_entry).unwrap()
    );
    assert_eq!(
        seeded.cluster_id, "c1",
        "the restored group keeps the cluster id"
    );
    assert!(
        seeded.protected_leases.is_some(),
        "and protects unknown leases"
    );
    assert!(seeded.retired_masters.is_empty());
}

#[test]
fn drain_flags_a_known_node_only() {
    let mut s = bucket();
    let r = s.apply(&cmd(Op::RegisterNode { addr: "a".into() }, 2));
    let Ok(MetaReplyKind::NodeId(id)) = r.0 else {
        panic!("{r:?}");
    };
    assert!(s
        .apply(&cmd(
            Op::Drain {
                node: id,
                drain: true
            },
            3
        ))
        .0
        .is_ok());
    assert!(s.nodes[&id].draining);
    assert!(s
        .apply(&cmd(
            Op::Drain {
                node: id,
                drain: false
            },
            4
        ))
        .0
        .is_ok());
    assert!(!s.nodes[&id].draining);
    assert!(s
        .apply(&cmd(
            Op::Drain {
                node: 99,
                drain: true
            },
            5
        ))
        .0
        .is_err());
}

#[test]
fn multipart_complete_checks_parts_and_is_idempotent() {
    let mut s = bucket();
    s.apply(&cmd(
        Op::CreateUpload {
            upload_id: "u".into(),
            bucket: "b".into(),
            key: "k".into(),
            attrs: ObjectAttrs::default(),
            initiator: String::new(),
        },
        2,
    ));
    let md5a = hex::encode(Md5::digest(b"a"));
    for (n, size) in [(1u32, MIN_PART_SIZE), (2, 3)] {
        s.apply(&cmd(
            meta(MetaWrite::PutPart {
                bucket: "b".into(),
                key: "k".into(),
                upload_id: "u".into(),
                number: n,
                part: PartRecord {
                    size,
                    etag: md5a.clone(),
                    last_modified_ms: 0,
                    checksums: vec![],
                    chunks: vec![ChunkMeta {
                        id: cid(n as u128),
                        len: size,
                        crc32c: 0,
                    }],
                },
            }),
            3,
        ));
    }
    let complete = |parts: Vec<(u32, String)>| {
        cmd(
            meta(MetaWrite::CompleteUpload {
                bucket: "b".into(),
                key: "k".into(),
                upload_id: "u".into(),
                parts,
                checksums: vec![("CRC32".into(), "AAAAAA==-2".into())],
                condition: None,
            }),
            4,
        )
    };
    let bad = s.apply(&complete(vec![(2, md5a.clone()), (1, md5a.clone())]));
    assert_eq!(bad.0, Err(MetaError::InvalidPartOrder));
    let bad = s.apply(&complete(vec![(1, "0".repeat(32))]));
    assert!(matches!(bad.0, Err(MetaError::InvalidPart(_))));
    let parts = vec![(1, md5a.clone()), (2, format!("\"{md5a}\""))];
    let good = s.apply(&complete(parts.clone()));
    let mut both = hex::decode(&md5a).unwrap();
    both.extend(hex::decode(&md5a).unwrap());
    let want = format!("{}-2", hex::encode(Md5::digest(&both)));
    let checksums = vec![("CRC32".to_string(), "AAAAAA==-2".to_string())];
    assert_eq!(
        good.0,
        Ok(MetaReplyKind::Meta(MetaReplyData::Completed {
            etag: want.clone(),
            last_modified_ms: 4,
            checksums: checksums.clone(),
        }))
    );
    let rec = &s.buckets["b"].objects["k"].to_record();
    assert_eq!(rec.size, MIN_PART_SIZE + 3);
    assert_eq!(rec.chunks.len(), 2);
    assert_eq!(rec.checksums, checksums);
    assert_eq!(s.apply(&complete(parts)).0, good.0);
}

/// An upload `id` of key `k` with one small part (chunk `chunk`), tagged `t=1`.
fn one_part_upload(s: &mut State, id: &str, chunk: u128) -> String {
    let attrs = ObjectAttrs {
        tags: vec![("t".into(), "1".into())],
        ..Default::default()
    };
    s.apply(&cmd(
        Op::CreateUpload {
            upload_id: id.into(),
            bucket: "b".into(),
            key: "k".into(),
            attrs,
            initiator: String::new(),
        },
        2,
    ));
    let etag = hex::encode(Md5::digest(id.as_bytes()));
    let r = s.apply(&cmd(
        meta(MetaWrite::PutPart {
            bucket: "b".into(),
            key: "k".into(),
            upload_id: id.into(),
            number: 1,
            part: PartRecord {
                size: 1,
                etag: etag.clone(),
                last_modified_ms: 0,
                checksums: vec![],
                chunks: vec![ChunkMeta {
                    id: cid(chunk),
                    len: 1,
                    crc32c: 0,
                }],
            },
        }),
        3,
    ));
    assert!(r.0.is_ok(), "{r:?}");
    etag
}

fn complete_with(id: &str, etag: &str, condition: Option<WriteCondition>) -> Command {
    cmd(
        meta(MetaWrite::CompleteUpload {
            bucket: "b".into(),
            key: "k".into(),
            upload_id: id.into(),
            parts: vec![(1, etag.into())],
            checksums: vec![],
            condition,
        }),
        5,
    )
}

#[test]
fn conditional_complete_is_checked_when_applied() {
    let mut s = bucket();
    let none_match = Some(WriteCondition {
        if_match: None,
        if_none_match: true,
    });
    // If-Match on a missing key: NoSuchKey; If-None-Match: * on a missing key: done.
    let e1 = one_part_upload(&mut s, "u1", 1);
    let if_match = |etag: &str| {
        Some(WriteCondition {
            if_match: Some(etag.into()),
            if_none_match: false,
        })
    };
    let r = s.apply(&complete_with("u1", &e1, if_match("x")));
    assert_eq!(r.0, Err(MetaError::NoSuchKey));
    let r = s.apply(&complete_with("u1", &e1, none_match.clone()));
    assert!(r.0.is_ok(), "{r:?}");
    let etag1 = s.buckets["b"].objects["k"].to_record().etag.clone();
    assert_eq!(
        s.buckets["b"].objects["k"].to_record().tags,
        [("t".into(), "1".into())]
    );
    // The key exists now: If-None-Match fails and the upload stays, If-Match decides.
    let e2 = one_part_upload(&mut s, "u2", 2);
    let r = s.apply(&complete_with("u2", &e2, none_match.clone()));
    assert_eq!(r.0, Err(MetaError::PreconditionFailed));
    assert!(s.uploads.contains_key("u2"));
    let r = s.apply(&complete_with("u2", &e2, if_match("other")));
    assert_eq!(r.0, Err(MetaError::PreconditionFailed));
    let r = s.apply(&complete_with("u2", &e2, if_match(&etag1)));
    assert!(r.0.is_ok(), "{r:?}");
    // A repeat of a completed upload answers again without looking at the condition.
    assert_eq!(
        s.apply(&complete_with("u2", &e2, none_match)).0,
        r.0,
        "a repeated Complete succeeds"
    );
}

#[test]
fn tags_and_cors_are_replaced_and_removed() {
    let mut s = bucket();
    put(&mut s, "k", 10);
    let etag = s.buckets["b"].objects["k"].to_record().etag.clone();
    let tags = vec![("a".to_string(), "1".to_string())];
    let put_tags = |key: &str, tags: &[(String, String)]| {
        cmd(
            meta(MetaWrite::PutObjectTags {
                bucket: "b".into(),
                key: key.into(),
                tags: tags.to_vec(),
            }),
            20,
        )
    };
    assert!(s.apply(&put_tags("k", &tags)).0.is_ok());
    let rec = &s.buckets["b"].objects["k"].to_record();
    assert_eq!((&rec.tags, &rec.etag), (&tags, &etag));
    assert!(s.apply(&put_tags("k", &[])).0.is_ok());
    assert!(s.buckets["b"].objects["k"].to_record().tags.is_empty());
    assert_eq!(
        s.apply(&put_tags("missing", &tags)).0,
        Err(MetaError::NoSuchKey)
    );
    let rule = CorsRule {
        allowed_origins: vec!["*".into()],
        allowed_methods: vec!["GET".into()],
        ..Default::default()
    };
    let r = s.apply(&cmd(
        meta(MetaWrite::PutCors {
            bucket: "b".into(),
            rules: vec![rule.clone()],
        }),
        21,
    ));
    assert!(r.0.is_ok());
    assert_eq!(s.buckets["b"].cors, std::slice::from_ref(&rule));
    let too_many = cmd(
        meta(MetaWrite::PutCors {
            bucket: "b".into(),
            rules: vec![rule; MAX_CORS_RULES + 1],
        }),
        22,
    );
    assert!(s.apply(&too_many).0.is_err());
    let del = cmd(meta(MetaWrite::DeleteCors { bucket: "b".into() }), 23);
    assert!(s.apply(&del).0.is_ok());
    assert!(s.buckets["b"].cors.is_empty());
}
