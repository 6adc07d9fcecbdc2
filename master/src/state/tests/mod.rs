//! The state machine, applied command by command: shared helpers and the tests of batches,
//! bucket rules, object replacement, drains and tags. The other tests are by concern below.

use super::listing::successor;
use super::*;
use md5::{Digest, Md5};

mod chunks;
mod copy;
mod listing;
mod multipart;

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

#[test]
fn the_feature_level_only_rises() {
    let mut s = bucket();
    assert_eq!(s.feature_level, 0);
    s.apply(&cmd(Op::SetFeatureLevel { level: 1 }, 10));
    assert_eq!(s.feature_level, 1);
    // A late or repeated entry with a lower level changes nothing.
    s.apply(&cmd(Op::SetFeatureLevel { level: 0 }, 11));
    assert_eq!(s.feature_level, 1);
}

#[test]
fn if_none_match_with_etags_fails_only_on_a_matching_object() {
    let mut s = bucket();
    let put_if = |s: &mut State, etags: &[&str], t: u64| {
        s.apply(&cmd(
            meta(MetaWrite::PutObject {
                bucket: "b".into(),
                key: "k".into(),
                condition: Some(WriteCondition {
                    if_none_match_etags: Some(etags.iter().map(|e| e.to_string()).collect()),
                    ..Default::default()
                }),
                record: ObjectRecord {
                    size: 0,
                    etag: format!("etag-{t}"),
                    ..Default::default()
                },
            }),
            t,
        ))
        .0
    };
    // No object yet: nothing can match.
    assert!(put_if(&mut s, &["etag-5"], 10).is_ok());
    // The object's ETag is etag-10 now.
    assert_eq!(
        put_if(&mut s, &["x", "etag-10"], 11),
        Err(MetaError::PreconditionFailed)
    );
    assert!(put_if(&mut s, &["etag-5", "x"], 12).is_ok());
}

#[test]
fn a_backup_with_bucket_tags_keeps_their_level_and_a_newer_version() {
    let mut s = bucket();
    s.apply(&cmd(
        Op::Init {
            cluster_id: "c".into(),
        },
        2,
    ));
    assert_eq!((s.data_level(), backup_version(&s)), (0, BACKUP_VERSION));
    let restored = Backup {
        version: backup_version(&s),
        taken_ms: 3,
        applied_index: 3,
        state: s.clone(),
    }
    .into_restored_state(4);
    assert_eq!(restored.feature_level, 0);
    let r = s.apply(&cmd(
        meta(MetaWrite::PutBucketTags {
            bucket: "b".into(),
            tags: vec![("k".into(), "v".into())],
        }),
        5,
    ));
    assert!(r.0.is_ok(), "{r:?}");
    // Data of level 2 in the state: the backup says so, and a restore keeps the level (a
    // release that would drop the tags then refuses the restored snapshot).
    assert_eq!(
        (s.data_level(), backup_version(&s)),
        (2, LEVELLED_BACKUP_VERSION)
    );
    let restored = Backup {
        version: backup_version(&s),
        taken_ms: 6,
        applied_index: 6,
        state: s.clone(),
    }
    .into_restored_state(7);
    assert_eq!(restored.feature_level, 2);
    assert_eq!(
        restored.buckets["b"].tags,
        [("k".to_string(), "v".to_string())]
    );
    // More than 50 tags are refused when applied, the same on every master.
    let many: Vec<(String, String)> = (0..51).map(|i| (format!("k{i}"), "v".into())).collect();
    let r = s.apply(&cmd(
        meta(MetaWrite::PutBucketTags {
            bucket: "b".into(),
            tags: many,
        }),
        8,
    ));
    assert!(r.0.is_err());
}
