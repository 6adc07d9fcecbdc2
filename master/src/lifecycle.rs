//! The lifecycle worker: applies buckets' lifecycle rules (S3's `Expiration` and
//! `AbortIncompleteMultipartUpload`) on the leader.
//!
//! Each round it scans the state for objects and incomplete multipart uploads that a rule has made
//! due and proposes their removal as one [`MetaWrite::LifecycleExpire`] per bucket. It never
//! changes state itself: applying the entry re-checks every key and upload against the rules at
//! the entry's time, so an object overwritten or a rule deleted meanwhile is left alone, and the
//! scan is only a hint. A round removes at most [`MAX_REMOVALS_PER_ROUND`] things and examines a
//! bounded number of objects ([`SCAN_BUDGET`]), continuing where it stopped in the next round, so a
//! huge bucket neither stalls the master nor makes one Raft entry huge. The position is kept in
//! memory only: after a restart or a leader change the scan starts over, which loses nothing.

use crate::api::Master;
use crate::state::{MetaReplyData, MetaReplyKind, Op, State};
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;
use tinydfs_proto::meta::{LifecycleRule, MetaWrite};
use tinydfs_proto::time::now_ms;

/// Most objects and uploads one round removes: one Raft entry per bucket stays small, and a
/// bucket with millions of expired objects is worked through at a bounded rate.
pub const MAX_REMOVALS_PER_ROUND: usize = 1000;
/// Rule checks (objects examined times the rules that may expire them) per round: bounds how long
/// the state stays read-locked by one scan.
pub const SCAN_BUDGET: usize = 1_000_000;
/// Pause before the next round while a backlog remains (rather than a whole interval): removals
/// are then limited to about [`MAX_REMOVALS_PER_ROUND`] per second.
pub const BACKLOG_PAUSE: Duration = Duration::from_secs(1);

/// When an action on something created at `created_ms` falls due `days` lifecycle days later:
/// the creation time plus the days, rounded up to the next day boundary (AWS rounds to the next
/// midnight UTC; a day is `day_ms` long).
pub fn due_at(created_ms: u64, days: u32, day_ms: u64) -> u64 {
    let day_ms = day_ms.max(1);
    let t = created_ms.saturating_add(u64::from(days).saturating_mul(day_ms));
    t.div_ceil(day_ms).saturating_mul(day_ms)
}

/// Whether `rule` expires the object `key` last written at `last_modified_ms`, at `now`.
pub fn expires(
    rule: &LifecycleRule,
    key: &str,
    last_modified_ms: u64,
    now: u64,
    day_ms: u64,
) -> bool {
    rule.enabled
        && rule.applies_to(key)
        && (rule
            .expiration_days
            .is_some_and(|d| now >= due_at(last_modified_ms, d, day_ms))
            || rule.expiration_date_ms.is_some_and(|d| now >= d))
}

/// Whether any rule expires the object.
pub fn object_due(
    rules: &[LifecycleRule],
    key: &str,
    last_modified_ms: u64,
    now: u64,
    day_ms: u64,
) -> bool {
    rules
        .iter()
        .any(|r| expires(r, key, last_modified_ms, now, day_ms))
}

/// Whether any rule aborts the incomplete multipart upload of `key` started at `initiated_ms`.
pub fn upload_due(
    rules: &[LifecycleRule],
    key: &str,
    initiated_ms: u64,
    now: u64,
    day_ms: u64,
) -> bool {
    rules.iter().any(|r| {
        r.enabled
            && r.applies_to(key)
            && r.abort_incomplete_days
                .is_some_and(|d| now >= due_at(initiated_ms, d, day_ms))
    })
}

/// Where the object scan stopped: the next round goes on after key `after` of bucket `bucket`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cursor {
    pub bucket: String,
    pub after: Option<String>,
}

/// What one bucket loses in a round.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    pub keys: Vec<String>,
    pub upload_ids: Vec<String>,
}

/// The removals one round proposes, by bucket.
#[derive(Debug, Default)]
pub struct Plan {
    pub batches: BTreeMap<String, Batch>,
    /// The round stopped at a limit: more may be due.
    pub backlog: bool,
}

impl Plan {
    fn count(&self) -> usize {
        self.batches
            .values()
            .map(|b| b.keys.len() + b.upload_ids.len())
            .sum()
    }
}

/// Finds what is due at `now`: every incomplete upload, then objects from `cursor` on, within the
/// round's limits. Moves the cursor to where the scan stopped (back to the start after a whole
/// pass).
pub fn plan(s: &State, cursor: &mut Cursor, now: u64, day_ms: u64) -> Plan {
    let mut plan = Plan::default();
    // Uploads first: there are usually few, and their parts are space nobody can read.
    for (id, u) in &s.uploads {
        let Some(b) = s.buckets.get(&u.bucket) else {
            continue;
        };
        if upload_due(&b.lifecycle, &u.key, u.initiated_ms, now, day_ms) {
            if plan.count() >= MAX_REMOVALS_PER_ROUND {
                plan.backlog = true;
                return plan;
            }
            let batch = plan.batches.entry(u.bucket.clone()).or_default();
            batch.upload_ids.push(id.clone());
        }
    }
    let mut removals = plan.count();
    let mut budget = SCAN_BUDGET;
    let start = cursor.bucket.clone();
    // Buckets from the cursor's on, then those before it: every bucket once per round at most.
    let order = s
        .buckets
        .range::<String, _>((Bound::Included(&start), Bound::Unbounded))
        .chain(s.buckets.range::<String, _>(..&start));
    for (name, b) in order {
        let rules: Vec<&LifecycleRule> = b
            .lifecycle
            .iter()
            .filter(|r| {
                r.enabled && (r.expiration_days.is_some() || r.expiration_date_ms.is_some())
            })
            .collect();
        if rules.is_empty() {
            continue;
        }
        let from = if *name == start {
            cursor.after.clone()
        } else {
            None
        };
        let lower = match &from {
            Some(k) => Bound::Excluded(k.as_str()),
            None => Bound::Unbounded,
        };
        let mut last = from.clone();
        for (key, rec) in b.objects.range_from(lower) {
            if budget < rules.len() || removals >= MAX_REMOVALS_PER_ROUND {
                *cursor = Cursor {
                    bucket: name.clone(),
                    after: last,
                };
                plan.backlog = true;
                return plan;
            }
            budget -= rules.len();
            if rules
                .iter()
                .any(|r| expires(r, &key, rec.last_modified_ms, now, day_ms))
            {
                let batch = plan.batches.entry(name.clone()).or_default();
                batch.keys.push(key.to_string());
                removals += 1;
            }
            last = Some(key.to_string());
        }
    }
    *cursor = Cursor::default();
    plan
}

/// Runs until the process ends; idle on followers and during a new leader's safe mode.
pub async fn lifecycle_worker(m: Arc<Master>) {
    let interval = Duration::from_millis(m.config.lifecycle_interval_ms.max(10));
    let day_ms = m.config.lifecycle_day_ms.max(1);
    let mut cursor = Cursor::default();
    let mut pause = interval;
    loop {
        tokio::time::sleep(pause).await;
        pause = interval;
        if !m.settled() {
            continue;
        }
        // The read lock is held for the scan only, never while proposing.
        let plan = {
            let Ok(a) = m.applied.read() else {
                continue;
            };
            plan(&a.state, &mut cursor, now_ms(), day_ms)
        };
        if plan.backlog {
            pause = interval.min(BACKLOG_PAUSE);
        }
        let mut removed = 0u64;
        for (bucket, batch) in plan.batches {
            let write = MetaWrite::LifecycleExpire {
                bucket: bucket.clone(),
                day_ms,
                keys: batch.keys,
                upload_ids: batch.upload_ids,
            };
            match m.propose(None, Op::Meta(write)).await {
                Ok(MetaReplyKind::Meta(MetaReplyData::Deleted(n))) => removed += n,
                Ok(_) => {}
                Err(e) => {
                    // Not leading any more, or the log is unavailable: the next round rescans.
                    tracing::warn!(%bucket, error = %e, "lifecycle removal failed; will retry");
                    pause = interval;
                    break;
                }
            }
        }
        if removed > 0 {
            tracing::info!(removed, "lifecycle rules removed objects and uploads");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
}
