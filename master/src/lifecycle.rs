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

use crate::node::Master;
use crate::state::lifecycle::{expires, upload_due};
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
        let mut failed = false;
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
                    failed = true;
                    break;
                }
            }
        }
        if removed > 0 {
            tracing::info!(removed, "lifecycle rules removed objects and uploads");
        }
        if !plan.backlog && !failed {
            m.lifecycle_passes
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests;
