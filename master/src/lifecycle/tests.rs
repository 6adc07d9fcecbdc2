use super::*;
use crate::state::lifecycle::due_at;
use crate::state::{Command, COMMAND_VERSION};
use tinydfs_proto::{ChunkId, ChunkMeta, ObjectAttrs, ObjectRecord};

const DAY: u64 = 1000;

fn apply(s: &mut State, op: Op, t: u64) -> crate::state::Reply {
    s.apply(&Command {
        version: COMMAND_VERSION,
        request_id: None,
        time_ms: t,
        op,
    })
}

/// Commits an object (its chunk under a live upload lease, which commits need).
fn put(s: &mut State, bucket: &str, key: &str, t: u64) {
    let lease = match s.leases.keys().next() {
        Some(id) => *id,
        None => {
            let r = apply(
                s,
                Op::Meta(MetaWrite::AcquireLease {
                    holder: "test".into(),
                    ttl_ms: None,
                }),
                t,
            );
            let Ok(MetaReplyKind::Meta(MetaReplyData::Lease { id, .. })) = r.0 else {
                panic!("{r:?}");
            };
            id
        }
    };
    let r = apply(
        s,
        Op::Meta(MetaWrite::PutObject {
            bucket: bucket.into(),
            key: key.into(),
            condition: None,
            record: ObjectRecord {
                size: 1,
                etag: "e".into(),
                chunks: vec![ChunkMeta {
                    id: ChunkId::in_lease(lease),
                    len: 1,
                    crc32c: 0,
                }],
                ..Default::default()
            },
        }),
        t,
    );
    assert!(r.0.is_ok(), "{r:?}");
}

fn with_bucket(name: &str, rules: Vec<LifecycleRule>) -> State {
    let mut s = State::default();
    add_bucket(&mut s, name, rules);
    s
}

fn add_bucket(s: &mut State, name: &str, rules: Vec<LifecycleRule>) {
    apply(
        s,
        Op::Meta(MetaWrite::CreateBucket {
            bucket: name.into(),
            owner: "me".into(),
        }),
        1,
    );
    if !rules.is_empty() {
        let r = apply(
            s,
            Op::Meta(MetaWrite::PutLifecycle {
                bucket: name.into(),
                rules,
            }),
            1,
        );
        assert!(r.0.is_ok(), "{r:?}");
    }
}

fn expire_rule(prefix: &str, days: u32) -> LifecycleRule {
    LifecycleRule {
        enabled: true,
        prefix: Some(prefix.into()),
        expiration_days: Some(days),
        ..Default::default()
    }
}

#[test]
fn due_times_round_up_to_the_next_day() {
    assert_eq!(due_at(0, 1, DAY), 1000);
    assert_eq!(due_at(1, 1, DAY), 2000);
    assert_eq!(due_at(999, 2, DAY), 3000);
    assert_eq!(due_at(5, 1, 0), 6);
    // Saturates rather than overflows.
    assert!(due_at(u64::MAX - 5, u32::MAX, DAY) >= u64::MAX / DAY * DAY);
    let r = expire_rule("logs/", 1);
    assert!(!expires(&r, "logs/a", 1, 1999, DAY));
    assert!(expires(&r, "logs/a", 1, 2000, DAY));
    assert!(!expires(&r, "data/a", 1, 9999, DAY));
    let off = LifecycleRule {
        enabled: false,
        ..r.clone()
    };
    assert!(!expires(&off, "logs/a", 1, 9999, DAY));
    let dated = LifecycleRule {
        enabled: true,
        prefix: None,
        expiration_date_ms: Some(5000),
        ..Default::default()
    };
    assert!(!expires(&dated, "any", 4000, 4999, DAY));
    assert!(expires(&dated, "any", 4000, 5000, DAY));
    // A date rule also expires objects written after the date, as on S3.
    assert!(expires(&dated, "any", 9000, 9001, DAY));
}

#[test]
fn plan_finds_due_objects_and_uploads_and_applying_rechecks() {
    let abort = LifecycleRule {
        enabled: true,
        prefix: Some("tmp/".into()),
        abort_incomplete_days: Some(2),
        ..Default::default()
    };
    let mut s = with_bucket("b", vec![expire_rule("logs/", 1), abort]);
    add_bucket(&mut s, "other", vec![]);
    put(&mut s, "b", "logs/old", 10);
    put(&mut s, "b", "data/old", 10);
    put(&mut s, "other", "logs/old", 10);
    for (id, key) in [("u1", "tmp/x"), ("u2", "keep/x")] {
        apply(
            &mut s,
            Op::CreateUpload {
                upload_id: id.into(),
                bucket: "b".into(),
                key: key.into(),
                attrs: ObjectAttrs::default(),
                initiator: String::new(),
            },
            10,
        );
    }
    put(&mut s, "b", "logs/new", 2500);
    let mut cursor = Cursor::default();
    let p = plan(&s, &mut cursor, 3000, DAY);
    assert!(!p.backlog);
    assert_eq!(cursor, Cursor::default());
    assert_eq!(
        p.batches.keys().collect::<Vec<_>>(),
        ["b"],
        "other has no rules"
    );
    assert_eq!(
        p.batches["b"],
        Batch {
            keys: vec!["logs/old".into()],
            upload_ids: vec!["u1".into()],
        }
    );
    // Overwritten between the scan and the proposal: the new object stays.
    put(&mut s, "b", "logs/old", 2900);
    let r = apply(
        &mut s,
        Op::Meta(MetaWrite::LifecycleExpire {
            bucket: "b".into(),
            day_ms: DAY,
            keys: vec!["logs/old".into(), "logs/new".into(), "data/old".into()],
            upload_ids: vec!["u1".into(), "u2".into()],
        }),
        3000,
    );
    assert_eq!(
        r.0,
        Ok(MetaReplyKind::Meta(MetaReplyData::Deleted(1))),
        "only the upload was still due"
    );
    assert!(s.buckets["b"].objects.contains_key("logs/old"));
    assert!(s.buckets["b"].objects.contains_key("data/old"));
    assert!(!s.uploads.contains_key("u1"));
    assert!(s.uploads.contains_key("u2"));
    // Later the overwritten object is due too, and goes.
    let p = plan(&s, &mut cursor, 5000, DAY);
    assert_eq!(p.batches["b"].keys, vec!["logs/new", "logs/old"]);
    let r = apply(
        &mut s,
        Op::Meta(MetaWrite::LifecycleExpire {
            bucket: "b".into(),
            day_ms: DAY,
            keys: p.batches["b"].keys.clone(),
            upload_ids: vec![],
        }),
        5000,
    );
    assert_eq!(r.0, Ok(MetaReplyKind::Meta(MetaReplyData::Deleted(2))));
    assert_eq!(
        s.buckets["b"]
            .objects
            .iter()
            .map(|(k, _)| k)
            .collect::<Vec<_>>(),
        ["data/old"]
    );
    // Deleting the configuration stops everything.
    apply(
        &mut s,
        Op::Meta(MetaWrite::DeleteLifecycle { bucket: "b".into() }),
        6000,
    );
    assert!(s.buckets["b"].lifecycle.is_empty());
    assert!(plan(&s, &mut cursor, 1 << 40, DAY).batches.is_empty());
}

#[test]
fn a_round_is_bounded_and_the_next_goes_on_where_it_stopped() {
    let mut s = with_bucket("a", vec![expire_rule("", 1)]);
    add_bucket(&mut s, "b", vec![expire_rule("", 1)]);
    let n = MAX_REMOVALS_PER_ROUND + 500;
    for i in 0..n {
        put(&mut s, "a", &format!("k{i:05}"), 10);
    }
    for i in 0..10 {
        put(&mut s, "b", &format!("k{i:05}"), 10);
    }
    let mut cursor = Cursor::default();
    let p1 = plan(&s, &mut cursor, 5000, DAY);
    assert!(p1.backlog);
    assert_eq!(p1.count(), MAX_REMOVALS_PER_ROUND);
    assert_eq!(p1.batches["a"].keys.last().unwrap(), "k00999");
    assert_eq!(cursor.bucket, "a");
    assert_eq!(cursor.after.as_deref(), Some("k00999"));
    // Nothing removed meanwhile (proposals failed): the next round still goes on.
    let p2 = plan(&s, &mut cursor, 5000, DAY);
    assert!(!p2.backlog);
    assert_eq!(p2.batches["a"].keys.len(), 500);
    assert_eq!(p2.batches["a"].keys[0], "k01000");
    assert_eq!(p2.batches["b"].keys.len(), 10);
    assert_eq!(cursor, Cursor::default());
    // A cursor in the last bucket wraps around to the first ones.
    let mut cursor = Cursor {
        bucket: "b".into(),
        after: Some("k00004".into()),
    };
    let p3 = plan(&s, &mut cursor, 5000, DAY);
    assert_eq!(p3.batches["b"].keys.len(), 5);
    assert_eq!(p3.batches["a"].keys.len(), MAX_REMOVALS_PER_ROUND - 5);
    assert!(p3.backlog);
    assert_eq!(cursor.bucket, "a");
}
