//! The master's durable state and the pure state machine that changes it.
//!
//! Every change is a [`Command`] taken from the replicated log. The leader fills in the time and any
//! ids before proposing it, so [`State::apply`] reads no clock and draws no random number: every
//! member that applies the same log reaches the same state.
//!
//! This file holds [`State`] and [`State::apply`], which expires what has outlived its time,
//! answers a retried request again, and hands each write to the part of the state it changes:
//!
//! - `command.rs`: the log entry ([`Command`], [`Op`]) and the answers ([`Reply`]; the compact
//!   [`Answer`] the request-id table keeps).
//! - `cluster.rs`: the cluster's name, chunkserver identities and draining, retired masters.
//! - `buckets.rs`: buckets and their settings (ACL, lifecycle and CORS configurations).
//! - `objects.rs`: object writes (put, delete, copy, tags).
//! - `multipart.rs`: multipart uploads, their parts and their completion.
//! - `leases.rs`: upload leases, under which new chunks may be committed.
//! - `chunks.rs`: the chunk table's reference counts, and which stored chunks are garbage.
//! - `keys.rs`: S3 access keys and their grants on buckets.
//! - [`lifecycle`]: when lifecycle rules make objects and uploads due, and their removal.
//! - `listing.rs`: S3 listings of objects and of multipart uploads.
//! - `backup.rs`: [`Backup`] files, and restoring one into a new master group.

mod backup;
mod buckets;
mod chunks;
mod cluster;
mod command;
mod keys;
mod leases;
pub mod lifecycle;
mod listing;
mod multipart;
mod objects;
#[cfg(test)]
mod tests;

pub use backup::{backup_version, Backup, BackupRef, BACKUP_VERSION, LEVELLED_BACKUP_VERSION};
pub use buckets::Bucket;
pub use chunks::ChunkEntry;
pub use cluster::NodeIdentity;
pub use command::{
    Answer, Batched, Command, MetaReplyData, MetaReplyKind, Op, Reply, COMMAND_VERSION,
};
pub use leases::{Lease, LEASE_TTL_MS, MAX_LEASE_TTL_MS, MIN_LEASE_TTL_MS};
pub use multipart::{CompletedUpload, Upload, COMPLETED_UPLOAD_TTL_MS, MIN_PART_SIZE};

use crate::idmap::IdMap;
use command::{err, ok};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tinydfs_proto::meta::*;
use tinydfs_proto::*;

/// How long a request id is remembered so that a retried write is applied once: three times
/// the window in which a client retries one write ([`MASTER_RETRY_WINDOW`], 20 s, which covers a
/// leader change), leaving room for clock differences between successive leaders. Each
/// remembered write costs memory (about 100 bytes) for this long, so at 5,000 writes/s the table
/// holds 300,000 answers rather than the 4.5 million a 15-minute memory held.
///
/// [`MASTER_RETRY_WINDOW`]: tinydfs_proto::client::MASTER_RETRY_WINDOW
pub const REQUEST_ID_TTL_MS: u64 =
    3 * tinydfs_proto::client::MASTER_RETRY_WINDOW.as_millis() as u64;

/// Everything the master keeps durable.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct State {
    pub cluster_id: String,
    pub buckets: BTreeMap<String, Bucket>,
    pub uploads: BTreeMap<String, Upload>,
    pub completed_uploads: BTreeMap<String, CompletedUpload>,
    pub chunks: IdMap<ChunkId, ChunkEntry>,
    pub nodes: BTreeMap<NodeId, NodeIdentity>,
    pub next_node_id: NodeId,
    /// Recent request ids with their answers, in compact form. (Named apart from the
    /// `recent_requests` and hex-keyed `requests` of earlier snapshots, which are ignored: a
    /// retry racing an upgrade is applied again.)
    #[serde(default)]
    pub request_answers: IdMap<u128, Answer>,
    /// The same ids in the order they were applied, so expiry pops from the front.
    #[serde(default)]
    pub recent_order: std::collections::VecDeque<(u64, u128)>,
    /// Completed uploads in completion order, for the same reason.
    #[serde(default)]
    pub completed_order: std::collections::VecDeque<(u64, String)>,
    /// The time of the last applied command: the state machine's notion of now.
    pub clock_ms: u64,
    /// Master ids removed from the group; Raft ids are never reused.
    #[serde(default)]
    pub retired_masters: std::collections::BTreeSet<u64>,
    /// Lease ids `[start, end)` the cluster may have used after the backup this state was
    /// restored from: chunks named under them are never judged garbage (they may belong to
    /// objects this state does not know of).
    #[serde(default)]
    pub protected_leases: Option<(u32, u32)>,
    /// S3 access keys by id.
    #[serde(default)]
    pub keys: BTreeMap<String, AccessKey>,
    /// Live upload leases by id.
    #[serde(default)]
    pub leases: BTreeMap<u32, Lease>,
    #[serde(default)]
    pub next_lease_id: u32,
    /// The group's feature level ([`crate::features`]): writes that need a higher one are
    /// refused. Only rises, by [`Op::SetFeatureLevel`]; 0 in states of older releases.
    #[serde(default)]
    pub feature_level: u32,
}

impl State {
    /// Applies one command and returns its answer. Pure: depends only on the state and the command.
    pub fn apply(&mut self, cmd: &Command) -> Reply {
        if cmd.version > COMMAND_VERSION {
            return err(MetaError::BadRequest(format!(
                "command version {} is newer than {COMMAND_VERSION}",
                cmd.version
            )));
        }
        self.clock_ms = self.clock_ms.max(cmd.time_ms);
        self.expire(cmd.time_ms);
        if let Op::Many(writes) = &cmd.op {
            let replies = writes
                .iter()
                .map(|w| match w.op {
                    Op::Many(_) => err(MetaError::BadRequest("a batch inside a batch".into())),
                    _ => self.apply_once(Some(w.request_id), &w.op, cmd.time_ms),
                })
                .collect();
            return Reply(Ok(MetaReplyKind::Many(replies)));
        }
        self.apply_once(cmd.request_id, &cmd.op, cmd.time_ms)
    }

    /// Applies one write, or answers again the first answer of its request id.
    fn apply_once(&mut self, rid: Option<u128>, op: &Op, now: u64) -> Reply {
        if let Some(rid) = &rid {
            if let Some(answer) = self.request_answers.get(rid) {
                return answer.reply();
            }
        }
        let reply = self.apply_op(op, now);
        if let Some(rid) = rid {
            self.recent_order.push_back((now, rid));
            self.request_answers.insert(rid, Answer::of(&reply));
        }
        reply
    }

    /// Forgets request ids and completed uploads past their time to live (amortised O(1)).
    fn expire(&mut self, now: u64) {
        self.leases.retain(|_, l| l.expires_ms > now);
        while let Some((t, id)) = self.recent_order.front() {
            if now.saturating_sub(*t) < REQUEST_ID_TTL_MS {
                break;
            }
            self.request_answers.remove(id);
            self.recent_order.pop_front();
        }
        // A burst of writes leaves a long queue behind: give its memory back once mostly empty.
        let (len, cap) = (self.recent_order.len(), self.recent_order.capacity());
        if cap > 4 * len + 1024 {
            self.recent_order.shrink_to(2 * len + 1024);
        }
        while let Some((t, id)) = self.completed_order.front() {
            if now.saturating_sub(*t) < COMPLETED_UPLOAD_TTL_MS {
                break;
            }
            self.completed_uploads.remove(id);
            self.completed_order.pop_front();
        }
    }

    /// Applies one write: the state's own commands here, each client write ([`Op::Meta`]) in
    /// [`Self::apply_meta`].
    fn apply_op(&mut self, op: &Op, now: u64) -> Reply {
        match op {
            // Unpacked by `apply`: one here is nested.
            Op::Many(_) => err(MetaError::BadRequest("a batch inside a batch".into())),
            Op::Init { cluster_id } => self.init(cluster_id),
            Op::RegisterNode { addr } => self.register_node(addr, now),
            Op::RetireMaster { id } => self.retire_master(*id),
            Op::CreateUpload {
                upload_id,
                bucket,
                key,
                attrs,
                initiator,
            } => self.create_upload(upload_id, bucket, key, attrs, initiator, now),
            Op::Meta(w) => self.apply_meta(w, now),
            Op::Tick => ok(MetaReplyData::Done),
            Op::Restore { state } => self.apply_restore(state),
            Op::Drain { node, drain } => self.drain(*node, *drain),
            Op::SetFeatureLevel { level } => {
                self.feature_level = self.feature_level.max(*level);
                ok(MetaReplyData::Done)
            }
        }
    }

    /// Hands a client write to the part of the state it changes.
    fn apply_meta(&mut self, w: &MetaWrite, now: u64) -> Reply {
        match w {
            MetaWrite::CreateBucket { .. }
            | MetaWrite::DeleteBucket { .. }
            | MetaWrite::SetBucketPublic { .. }
            | MetaWrite::PutLifecycle { .. }
            | MetaWrite::DeleteLifecycle { .. }
            | MetaWrite::PutCors { .. }
            | MetaWrite::DeleteCors { .. }
            | MetaWrite::PutBucketTags { .. } => self.apply_bucket(w, now),
            MetaWrite::PutObject { .. }
            | MetaWrite::DeleteObject { .. }
            | MetaWrite::DeleteObjects { .. }
            | MetaWrite::CopyObject { .. }
            | MetaWrite::PutObjectTags { .. } => self.apply_object(w, now),
            MetaWrite::CreateUpload { .. }
            | MetaWrite::PutPart { .. }
            | MetaWrite::CompleteUpload { .. }
            | MetaWrite::AbortUpload { .. } => self.apply_multipart(w, now),
            MetaWrite::AcquireLease { .. } | MetaWrite::RenewLease { .. } => {
                self.apply_lease(w, now)
            }
            MetaWrite::PutKey { .. } | MetaWrite::DeleteKey { .. } | MetaWrite::GrantKey { .. } => {
                self.apply_key(w, now)
            }
            MetaWrite::LifecycleExpire {
                bucket,
                day_ms,
                keys,
                upload_ids,
            } => self.lifecycle_expire(bucket, *day_ms, keys, upload_ids, now),
        }
    }
}

/// What an `apply_*` of one part of the state answers to a write [`State::apply_meta`] hands to
/// another part: never given while the two agree, and an error rather than a panic, which would
/// stop every master applying the entry.
fn misrouted() -> Reply {
    err(MetaError::BadRequest(
        "a write reached the wrong part of the state machine".into(),
    ))
}
