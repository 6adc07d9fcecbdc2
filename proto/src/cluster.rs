//! Messages about the cluster's nodes rather than its data, all sent to the master: chunkserver
//! registration and heartbeats, gateway reports, placement of new chunks, and what the admin
//! commands ask and get (status, fsck, drain, rebalance, membership, bucket usage). Re-exported
//! by [`crate::meta`].

use crate::types::*;
use serde::{Deserialize, Serialize};

/// A chunkserver's registration, sent at start and whenever the master does not know it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RegisterRequest {
    /// The id this chunkserver was given before, if any (kept in its data folder).
    pub node_id: Option<NodeId>,
    /// The cluster this chunkserver belongs to, if it has joined one.
    pub cluster_id: Option<String>,
    pub addr: String,
    pub capacity: u64,
    pub free: u64,
    pub pid: u32,
    /// Failure-domain label (rack, room, site): placement spreads a chunk's replicas over zones.
    #[serde(default)]
    pub zone: String,
    /// One id for every attempt of one registration: a retried registration whose first
    /// attempt took effect unseen gets the same node id instead of a second one.
    #[serde(default)]
    pub request_id: Option<u128>,
}

/// The master's answer to a registration.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RegisterReply {
    pub node_id: NodeId,
    pub cluster_id: String,
}

/// A heartbeat with the node's space; `chunks` is a full chunk report when present.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Heartbeat {
    pub node_id: NodeId,
    pub addr: String,
    pub capacity: u64,
    pub free: u64,
    pub pid: u32,
    pub chunks: Option<Vec<ChunkMeta>>,
    #[serde(default)]
    pub zone: String,
    /// Chunks this node no longer holds since its last heartbeat although nobody ordered it:
    /// found corrupt (by a read or the scrubber) or on a failed disk. Sent until acknowledged.
    #[serde(default)]
    pub lost: Vec<ChunkId>,
    /// Data folders (disks) and their state.
    #[serde(default)]
    pub disks: Vec<DiskStatus>,
    /// Scrubber progress: chunks verified and corrupt replicas found since the process started.
    #[serde(default)]
    pub scrubbed: u64,
    #[serde(default)]
    pub scrub_corrupt: u64,
    /// Chunk bytes stored since the process started (pipeline writes and copies): the master
    /// derives each node's write throughput from it.
    #[serde(default)]
    pub bytes_written: u64,
    /// The node sends its heartbeats to every master and a full report when one asks for it
    /// ([`HeartbeatReply::report_wanted`]): a master may take it into its registry without a
    /// registration. False from chunkservers older than that, which a master asks to register.
    #[serde(default)]
    pub beats_every_master: bool,
    /// The highest term in which this node has heard a leader answer: a full report counts as
    /// a leader's own only if the node knew of that leader when it sent it, so a report whose
    /// answer was lost (the node then obeying an older leader's deletions) is asked again.
    #[serde(default)]
    pub leader_term: u64,
    /// Chunks stored since the node's previous heartbeat round (at most 10,000; more wait for
    /// a full report). Masters that do not lead learn replicas from them, so that a new leader
    /// can serve reads of chunks written since the last full report; the leader learns replicas
    /// from the writes themselves and ignores this list.
    #[serde(default)]
    pub added: Vec<ChunkMeta>,
}

/// One data folder of a chunkserver.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskStatus {
    pub path: String,
    pub capacity: u64,
    pub free: u64,
    pub chunks: u64,
    /// An I/O error or failed fsync took this folder out of service.
    pub failed: bool,
}

/// A gateway's periodic report, so that status lists every node of the cluster.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GatewayBeat {
    /// The S3 listener's address.
    pub addr: String,
    pub pid: u32,
}

/// The master's answer to a heartbeat.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct HeartbeatReply {
    /// The master lost track of this node (restart): register and send a full report again.
    pub reregister: bool,
    /// The cluster the master belongs to: a chunkserver obeys `delete` only when it matches the
    /// cluster id it joined (fencing against a wiped or foreign master).
    #[serde(default)]
    pub cluster_id: String,
    /// The master has not yet heard every chunkserver since it started leading; it never orders
    /// deletions then, and chunkservers refuse them.
    #[serde(default)]
    pub safe_mode: bool,
    /// Chunks this node must delete: garbage (referenced by nothing and beyond any live upload
    /// lease), stale replicas (length or CRC differ from the committed chunk) and surplus copies.
    #[serde(default)]
    pub delete: Vec<ChunkId>,
    /// The answering master's Raft term, and whether it leads in it. Only a leader's reply
    /// carries orders, and a chunkserver obeys none from a term lower than one it has seen a
    /// leader of: a deposed leader that does not know it yet is fenced off. (0 and false from
    /// masters older than this, which answer heartbeats only while they lead.)
    #[serde(default)]
    pub term: u64,
    #[serde(default)]
    pub leader: bool,
    /// This master has no full chunk report from the node in its current term (it leads anew,
    /// or it restarted): send one with the next heartbeat.
    #[serde(default)]
    pub report_wanted: bool,
    /// The leader a master that does not lead knows of: a chunkserver beats it too, even when
    /// it is not among the masters it was given (a master added since).
    #[serde(default)]
    pub leader_addr: Option<String>,
}

/// A request for pipelines to write new chunks to.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PlacementRequest {
    pub count: usize,
    pub replicas: usize,
    /// Nodes the caller saw fail recently: placed only if nothing else qualifies.
    #[serde(default)]
    pub exclude: Vec<NodeId>,
}

/// Pipelines for new chunks: for each chunk, the chunkservers in pipeline order.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Placement {
    pub pipelines: Vec<Vec<NodeAddr>>,
}

/// One node as the status report shows it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NodeStatus {
    pub id: NodeId,
    pub role: String,
    pub addr: String,
    pub state: String,
    pub pid: Option<u32>,
    pub capacity: u64,
    pub free: u64,
    pub chunks: u64,
    #[serde(default)]
    pub zone: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<DiskStatus>,
    /// Scrubber progress (chunkservers): chunks verified, corrupt replicas found.
    #[serde(default)]
    pub scrubbed: u64,
    #[serde(default)]
    pub scrub_corrupt: u64,
    /// Chunkservers: bytes of chunks stored per second over about the last minute.
    #[serde(default)]
    pub write_rate: u64,
    /// For masters: their Raft view.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raft: Option<RaftStatus>,
}

/// A master's Raft state, as its health endpoint reports it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RaftStatus {
    /// leader, follower, candidate or learner.
    pub role: String,
    pub term: u64,
    pub leader: Option<u64>,
    pub last_log_index: u64,
    /// Index of the last entry applied to the state machine (committed on this master).
    pub applied_index: u64,
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
}

/// A master's health answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MasterHealth {
    pub role: String,
    pub id: u64,
    pub pid: u32,
    pub raft: RaftStatus,
    /// The internal address of the leader this master knows of: clients whose leader went
    /// silent ask the other masters who leads now. (None from older masters.)
    #[serde(default)]
    pub leader_addr: Option<String>,
    /// The highest feature level this master's release can apply (0 from releases before
    /// feature levels), and the level its state has reached: a leader raises the group's level
    /// only once every master says it can apply the new one.
    #[serde(default)]
    pub features: u32,
    #[serde(default)]
    pub feature_level: u32,
}

/// A change of the master group.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum MembershipChange {
    /// Add a master (it catches up as a learner first, then becomes a voter).
    Add { id: NodeId, addr: String },
    /// Remove a master; its id is retired for good.
    Remove { id: NodeId },
}

/// The master's view of the cluster.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub cluster_id: String,
    pub nodes: Vec<NodeStatus>,
    pub buckets: u64,
    pub objects: u64,
    pub chunks: u64,
    pub under_replicated: u64,
    /// Chunks with no live copy at all (counted once the leader is settled: see `settled`).
    #[serde(default)]
    pub lost: u64,
    /// The leader has led for a dead-node timeout, so every live chunkserver has reported.
    #[serde(default)]
    pub settled: bool,
    /// Copies made by the repair worker since this leader started.
    #[serde(default)]
    pub repaired: u64,
    /// Replica deletions ordered since this leader started (garbage, stale and surplus copies).
    #[serde(default)]
    pub deletes_ordered: u64,
    /// Replicas chunkservers reported lost (corrupt, failed disk) since this leader started.
    #[serde(default)]
    pub lost_reported: u64,
    /// Full chunk reports this leader has judged for garbage (out of safe mode) since it
    /// started: a chunk that survives several of them was judged live.
    #[serde(default)]
    pub reports_judged: u64,
    /// Whole passes of the lifecycle rules over the namespace this master has finished since
    /// it started.
    #[serde(default)]
    pub lifecycle_passes: u64,
    /// A rebalance is running.
    #[serde(default)]
    pub rebalancing: bool,
}

/// A bucket as `tinydfs admin buckets` lists it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BucketUsage {
    pub name: String,
    pub owner: String,
    pub created_ms: u64,
    pub objects: u64,
    pub bytes: u64,
}

/// Which chunkserver to drain (`node` may be its id or its address).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DrainRequest {
    pub node: String,
    /// False cancels a drain.
    pub drain: bool,
}

/// Usage of every writable chunkserver, as a rebalance sees it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RebalanceStatus {
    pub running: bool,
    /// (node id, fraction of capacity used)
    pub usage: Vec<(NodeId, f64)>,
    /// Largest difference of usage tolerated.
    pub threshold: f64,
}

/// One object (or pending multipart upload) with a chunk that is not healthy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsckProblem {
    pub bucket: String,
    pub key: String,
    /// Set for a part of an incomplete multipart upload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_id: Option<String>,
    pub chunk: ChunkId,
    /// Live copies on nodes that are not draining.
    pub copies: u64,
    pub wanted: u64,
    /// `missing` (no live copy), `under-replicated`, or `corrupt` (a replica was found corrupt
    /// or lost with its disk lately and the chunk is not yet repaired).
    pub state: String,
}

/// What `fsck` found.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FsckReport {
    /// False while the leader may not have heard every chunkserver: the counts may be wrong.
    pub settled: bool,
    pub objects: u64,
    pub uploads: u64,
    pub chunks: u64,
    pub missing: u64,
    pub under_replicated: u64,
    pub corrupt: u64,
    /// At most the first 1,000 problems.
    pub problems: Vec<FsckProblem>,
    pub truncated: bool,
}

impl FsckReport {
    pub fn healthy(&self) -> bool {
        self.settled && self.missing == 0 && self.under_replicated == 0 && self.corrupt == 0
    }
}
