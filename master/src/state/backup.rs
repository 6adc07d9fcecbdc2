//! Backups (`tinydfs admin backup`) and restoring one into a new, empty master group.
//!
//! A restore is installed as the new group's first snapshot ([`Backup::into_restored_state`],
//! then `store::StateMachine::seed`), never as a log entry: a state can be larger than a log
//! record. [`super::Op::Restore`], the log entry earlier versions proposed, is still applied
//! when an old log holds one.

use super::{err, ok, MetaReplyData, Reply, State};
use serde::{Deserialize, Serialize};
use tinydfs_proto::meta::*;

/// Version of [`Backup`] files.
pub const BACKUP_VERSION: u16 = 1;
/// Version of a backup whose state holds data of a feature level above 0 (bucket tags):
/// releases before feature levels know only [`BACKUP_VERSION`] and refuse it, rather than
/// restore it without that data.
pub const LEVELLED_BACKUP_VERSION: u16 = 2;

/// The version a backup of `state` is written with.
pub fn backup_version(state: &State) -> u16 {
    if state.data_level() > 0 {
        LEVELLED_BACKUP_VERSION
    } else {
        BACKUP_VERSION
    }
}

/// A consistent copy of the metadata (`tinydfs admin backup`), restored with `--restore`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Backup {
    pub version: u16,
    pub taken_ms: u64,
    /// Log index of the last entry the copy includes.
    pub applied_index: u64,
    pub state: State,
}

/// [`Backup`] by reference, to write one without copying the state.
#[derive(Serialize)]
pub struct BackupRef<'a> {
    pub version: u16,
    pub taken_ms: u64,
    pub applied_index: u64,
    pub state: &'a State,
}

impl Backup {
    /// Reads a backup file, refusing other versions and empty clusters.
    pub fn load(path: &std::path::Path) -> anyhow::Result<Backup> {
        let bytes = std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("cannot read the backup {}: {e}", path.display()))?;
        let b: Backup = serde_json::from_slice(&bytes)
            .map_err(|e| anyhow::anyhow!("{} is not a tinydfs backup: {e}", path.display()))?;
        anyhow::ensure!(
            b.version == BACKUP_VERSION || b.version == LEVELLED_BACKUP_VERSION,
            "backup version {} is not {BACKUP_VERSION} or {LEVELLED_BACKUP_VERSION}",
            b.version
        );
        anyhow::ensure!(
            !b.state.cluster_id.is_empty(),
            "the backup holds no cluster"
        );
        Ok(b)
    }

    /// The state a new master group restored from this backup starts with, at `now_ms` (the
    /// restoring master's clock, as a leader stamps a command): the same state applying
    /// [`super::Op::Restore`] at that time to an empty state gives.
    pub fn into_restored_state(self, now_ms: u64) -> State {
        let mut s = State {
            clock_ms: now_ms,
            ..State::default()
        };
        s.restore(self.state);
        s
    }
}

impl State {
    /// The highest feature level whose data this state holds (`crate::features`): 2 when a
    /// bucket has tags, else 0 (level 1 leaves nothing in the state).
    pub fn data_level(&self) -> u32 {
        if self.buckets.values().any(|b| !b.tags.is_empty()) {
            2
        } else {
            0
        }
    }

    /// Replaces a new, empty state by a backup ([`super::Op::Restore`]).
    pub(super) fn apply_restore(&mut self, state: &State) -> Reply {
        if !self.cluster_id.is_empty() || !self.buckets.is_empty() {
            return err(MetaError::BadRequest(
                "a backup can only be restored into a new, empty master group".into(),
            ));
        }
        self.restore(state.clone());
        ok(MetaReplyData::Done)
    }

    /// Becomes `backup`, protecting the chunks of leases the old cluster may have issued after
    /// the backup: from its oldest live lease to well beyond its last one. New leases are
    /// numbered after that range.
    fn restore(&mut self, backup: State) {
        /// Lease ids the old cluster could have issued after the backup (one per gateway per
        /// rotation: centuries of them).
        const SKIP: u32 = 1 << 30;
        let mut s = backup;
        let next = s.next_lease_id.max(1);
        let start = s.leases.keys().next().copied().unwrap_or(next).min(next);
        let end = next.saturating_add(SKIP);
        s.protected_leases = Some((start, end));
        s.next_lease_id = end;
        // The masters of the new group may reuse the old group's ids.
        s.retired_masters.clear();
        // The new group's masters may run an older release than the old group's: its leader
        // raises the level again once they can all apply it (`crate::features`). A level whose
        // data the state holds is kept, so that a release that would drop that data refuses
        // the state (its snapshot version) instead.
        s.feature_level = s.data_level();
        s.clock_ms = s.clock_ms.max(self.clock_ms);
        *self = s;
    }
}
