//! The master's configuration ([`MasterConfig`]) and the defaults of its timings and sizes.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Heartbeat interval of the Raft leader. openraft 0.9 also uses it as the deadline of every
/// log append to a follower (the follower's fsync included), and sends heartbeats on ticks of
/// 1.5 times it: 150 ms leaves an fsync room, and a follower stands only after about five ticks
/// (1.0–1.2 s) without one.
pub const RAFT_HEARTBEAT_MS: u64 = 150;
/// Election timeout range. openraft 0.9 makes a follower that knew a leader wait the leader's
/// lease (the longest timeout) plus a timeout drawn from this range since the last heartbeat:
/// 1.0–1.2 s here. That is the floor of failover time (the aim: writes resume under 1.5 s
/// after a leader dies; with 750–1500 ms it was 2.25–3 s before the election even began).
pub const RAFT_ELECTION_MIN_MS: u64 = 400;
pub const RAFT_ELECTION_MAX_MS: u64 = 600;
/// Longest wait for a proposal to commit and apply, or for a read to be confirmed by a quorum:
/// on a leader cut off from the others openraft would wait for ever. A client that sees the
/// deadline retries with the same request id, which is applied once. A few election timeouts, so
/// a loaded machine's slow fsync does not turn into errors.
pub const PROPOSE_TIMEOUT_MS: u64 = 3_000;
/// Log entries between snapshots: bounds replay time at restart.
pub const SNAPSHOT_EVERY: u64 = 10_000;
/// A chunkserver silent this long is dead: three missed heartbeats and some slack.
pub const DEAD_NODE_TIMEOUT: Duration = Duration::from_secs(15);
/// Free bytes a chunkserver keeps in reserve; placement skips nodes below it.
pub const DEFAULT_RESERVE: u64 = 256 * 1024 * 1024;
/// Chunks re-replicated at once: a few 64 MiB copies keep disks and network busy without
/// starving client traffic.
pub const DEFAULT_REPAIR_CONCURRENCY: usize = 4;
/// Usage difference (fraction of capacity) a rebalance leaves between chunkservers.
pub const DEFAULT_REBALANCE_THRESHOLD: f64 = 0.05;
/// How often the repair worker rescans the chunk table.
pub const DEFAULT_REPAIR_INTERVAL: Duration = Duration::from_secs(1);
/// How often the lifecycle worker looks for expired objects and uploads: lifecycle rules count
/// in days, so a minute late is nothing.
pub const DEFAULT_LIFECYCLE_INTERVAL: Duration = Duration::from_secs(60);
/// The length of a lifecycle "day" (S3 rules count in days); shorter only in tests.
pub const DEFAULT_LIFECYCLE_DAY_MS: u64 = 86_400_000;

/// Configuration of a master.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct MasterConfig {
    /// This master's Raft id (never reused for another data folder).
    pub id: u64,
    /// Address of the internal listener (`host:port`).
    pub listen: String,
    /// Address the others reach this master at; the listen address when empty.
    pub advertise: String,
    /// Address of the read-only operations listener (health, metrics, status page); empty
    /// for none.
    pub ops_listen: String,
    /// Where the Raft log and snapshots live.
    pub data_dir: PathBuf,
    /// Shared secret every internal request must carry.
    pub secret: String,
    pub raft_heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Longest wait for a proposal to commit or a read to be confirmed ([`PROPOSE_TIMEOUT_MS`]).
    pub propose_timeout_ms: u64,
    pub snapshot_every: u64,
    /// Seconds of silence after which a chunkserver is dead.
    pub dead_node_timeout_secs: f64,
    /// Free bytes a chunkserver must keep; placement skips it below that.
    pub reserve_bytes: u64,
    /// Copies the gateway must reach for a write to succeed when a pipeline member fails.
    pub min_replicas: usize,
    /// The first members of a new group, `id=host:port` each (this master among them). Empty:
    /// a group of one. Every listed master may initialize the group; the same list is safe.
    pub initial_members: Vec<String>,
    /// Start empty and wait to be added to a running group (`tinydfs admin master add`).
    pub join: bool,
    /// Copies every chunk should have; the repair worker restores it after failures.
    pub replicas: usize,
    /// Chunks copied at once by the repair worker (its bandwidth limit).
    pub repair_concurrency: usize,
    /// How often the repair worker looks for under-replicated chunks.
    pub repair_interval_ms: u64,
    /// How often the lifecycle worker applies buckets' lifecycle rules.
    pub lifecycle_interval_ms: u64,
    /// Length of a lifecycle "day" in milliseconds (rules say `Days`); 86,400,000 but in tests.
    pub lifecycle_day_ms: u64,
    /// A backup file (`tinydfs admin backup`) to restore into this new, empty master group.
    pub restore: Option<PathBuf>,
    /// A rebalance stops once the usage (fraction of capacity used) of the fullest and the
    /// emptiest writable chunkserver differ by less than this.
    pub rebalance_threshold: f64,
    /// Acts as a release that can apply feature levels up to this one only (None: this
    /// release's own [`crate::features::FEATURE_LEVEL`]). For rolling-upgrade tests, which
    /// need masters of "the release before" without building it.
    pub max_feature_level: Option<u32>,
    /// HTTPS on the internal listener and to peers (off unless set).
    #[serde(flatten)]
    pub internal_tls: tinydfs_proto::tls::InternalTls,
}

impl Default for MasterConfig {
    fn default() -> Self {
        MasterConfig {
            id: 1,
            listen: "127.0.0.1:9100".into(),
            advertise: String::new(),
            ops_listen: String::new(),
            data_dir: PathBuf::from("data/master"),
            secret: String::new(),
            raft_heartbeat_ms: RAFT_HEARTBEAT_MS,
            election_timeout_min_ms: RAFT_ELECTION_MIN_MS,
            election_timeout_max_ms: RAFT_ELECTION_MAX_MS,
            propose_timeout_ms: PROPOSE_TIMEOUT_MS,
            snapshot_every: SNAPSHOT_EVERY,
            dead_node_timeout_secs: DEAD_NODE_TIMEOUT.as_secs_f64(),
            reserve_bytes: DEFAULT_RESERVE,
            min_replicas: tinydfs_proto::DEFAULT_MIN_REPLICAS,
            initial_members: Vec::new(),
            join: false,
            replicas: tinydfs_proto::DEFAULT_REPLICAS,
            repair_concurrency: DEFAULT_REPAIR_CONCURRENCY,
            repair_interval_ms: DEFAULT_REPAIR_INTERVAL.as_millis() as u64,
            lifecycle_interval_ms: DEFAULT_LIFECYCLE_INTERVAL.as_millis() as u64,
            lifecycle_day_ms: DEFAULT_LIFECYCLE_DAY_MS,
            rebalance_threshold: DEFAULT_REBALANCE_THRESHOLD,
            max_feature_level: None,
            restore: None,
            internal_tls: Default::default(),
        }
    }
}

impl MasterConfig {
    /// The initial members as a map, this master included.
    pub(crate) fn members(&self) -> anyhow::Result<BTreeMap<u64, openraft::BasicNode>> {
        let mut members = BTreeMap::new();
        for m in &self.initial_members {
            let (id, addr) = m
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("initial member {m:?} is not id=host:port"))?;
            let id: u64 = id
                .trim()
                .parse()
                .map_err(|_| anyhow::anyhow!("bad master id in {m:?}"))?;
            members.insert(
                id,
                openraft::BasicNode {
                    addr: addr.trim().to_string(),
                },
            );
        }
        if members.is_empty() {
            members.insert(
                self.id,
                openraft::BasicNode {
                    addr: self.advertise(),
                },
            );
        }
        anyhow::ensure!(
            members.contains_key(&self.id),
            "this master (id {}) is not among the initial members",
            self.id
        );
        Ok(members)
    }

    fn advertise(&self) -> String {
        if self.advertise.is_empty() {
            self.listen.clone()
        } else {
            self.advertise.clone()
        }
    }
}
