//! Feature levels: a new kind of write reaches the log only once every master can apply it.
//!
//! Masters decode log entries with their own release's types. An entry that uses what an older
//! release does not know would stop an older master (a new operation does not decode), or
//! worse, be applied differently by it (a new field that changes what a write does is ignored),
//! and the masters' states would part. So each release has a [`FEATURE_LEVEL`], the replicated
//! state keeps the group's level (`State::feature_level`), and:
//!
//! - every master says in its `/health` answer the highest level it can apply (`features`);
//! - the leader's [`feature_worker`] asks every member of the group (voters and learners: both
//!   apply the log) and, once all can apply a higher level than the group's, proposes
//!   [`Op::SetFeatureLevel`] with the lowest of theirs;
//! - a write that needs more than the group's level ([`needed`]) is refused with NotYetEnabled.
//!   The level only rises, and only through the log, so every master that applies such a write
//!   has applied the level before it, and so could say it can apply it;
//! - a master is added to the group only if it can apply the group's level (`admin master
//!   add`), and a master whose release is below its own state's level refuses to start:
//!   once the level has risen, the group cannot be downgraded below it.
//!
//! Levels: 0, every release before feature levels; 1, `If-None-Match` with ETags on writes;
//! 2, bucket tags (`MetaWrite::PutBucketTags`, and the read `GetBucketTags`).

use crate::node::Master;
use crate::state::Op;
use std::sync::Arc;
use std::time::Duration;
use tinydfs_proto::meta::{MetaError, MetaWrite, WriteCondition};

/// The highest feature level this release can apply.
pub const FEATURE_LEVEL: u32 = 2;

/// How often a leader whose group is below its own level asks the other masters whether they
/// can go higher: a rolling upgrade waits this long after its last master at most. A new
/// group's first leader asks as soon as it leads.
const CHECK_EVERY: Duration = Duration::from_secs(2);
/// How often a master that does not lead looks whether it does now.
const LEAD_POLL: Duration = Duration::from_millis(100);

/// The feature level `write` needs.
pub fn needed(write: &MetaWrite) -> u32 {
    let condition = match write {
        MetaWrite::PutObject { condition, .. }
        | MetaWrite::CompleteUpload { condition, .. }
        | MetaWrite::CopyObject { condition, .. } => condition.as_ref(),
        MetaWrite::PutBucketTags { .. } => return 2,
        _ => None,
    };
    condition.map_or(0, WriteCondition::feature_level)
}

/// The highest level a master applies: this release's, or less when it plays an older
/// release (`max_feature_level`).
pub fn capability(max: Option<u32>) -> u32 {
    max.map_or(FEATURE_LEVEL, |max| max.min(FEATURE_LEVEL))
}

impl Master {
    /// The highest level this master can apply ([`capability`]).
    pub fn features(&self) -> u32 {
        capability(self.config.max_feature_level)
    }

    /// The group's level, as this master has applied it.
    pub fn feature_level(&self) -> u32 {
        self.feature_level
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Refuses a write that needs a higher level than the group has reached.
    pub fn check_features(&self, write: &MetaWrite) -> Result<(), MetaError> {
        let need = needed(write);
        if need == 0 {
            return Ok(());
        }
        let have = self.feature_level();
        if need > have {
            return Err(MetaError::NotYetEnabled(format!(
                "this needs feature level {need} and the master group is at {have}: \
                 it rises once every master runs a release that has it"
            )));
        }
        Ok(())
    }
}

/// On the leader: raises the group's level once every member can apply a higher one.
pub async fn feature_worker(m: Arc<Master>) {
    let mut wait = Duration::ZERO;
    loop {
        tokio::time::sleep(wait).await;
        let (have, mine) = (m.feature_level(), m.features());
        if m.check_leader().is_err() {
            wait = LEAD_POLL;
            continue;
        }
        wait = CHECK_EVERY;
        if have >= mine {
            continue;
        }
        // No member is added while the members are asked and the level proposed: one added
        // in between could not apply it.
        let _one_at_a_time = m.membership_lock.lock().await;
        let mut lowest = mine;
        for (id, node) in m.membership().nodes() {
            if *id == m.config.id {
                continue;
            }
            // One that does not answer holds the level where it is.
            match crate::node::peer_health(&node.addr).await {
                Some(h) => lowest = lowest.min(h.features),
                None => {
                    lowest = have;
                    break;
                }
            }
        }
        if lowest <= have {
            continue;
        }
        match m.propose(None, Op::SetFeatureLevel { level: lowest }).await {
            Ok(_) => tracing::info!(
                from = have,
                to = lowest,
                "every master can apply a higher feature level: the group's level rose"
            ),
            Err(e) => tracing::warn!(error = %e, "could not raise the feature level yet"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_writes_with_etags_in_if_none_match_need_level_one() {
        let put = |condition| MetaWrite::PutObject {
            bucket: "b".into(),
            key: "k".into(),
            record: Default::default(),
            condition,
        };
        assert_eq!(needed(&put(None)), 0);
        let star = WriteCondition {
            if_none_match: true,
            ..Default::default()
        };
        assert_eq!(needed(&put(Some(star))), 0);
        let etags = WriteCondition {
            if_none_match_etags: Some(vec!["abc".into()]),
            ..Default::default()
        };
        assert_eq!(needed(&put(Some(etags))), 1);
        assert_eq!(needed(&MetaWrite::DeleteBucket { bucket: "b".into() }), 0);
    }
}
