//! The tinydfs master: the namespace, the chunk table and the chunkserver registry.
//!
//! Durable metadata lives in a [`state::State`] changed only by applying [`state::Command`]s from
//! the Raft log (openraft, a group of one member by default); the leader stamps each command with
//! the time and any ids, so applying is deterministic. Soft state — which chunkservers are alive,
//! their free space, where replicas are — is kept by the leader in a [`registry::Registry`] and
//! rebuilt from registrations and chunk reports after a restart.
//!
//! - [`state`]: the state machine (buckets, objects, uploads, chunks, node ids) and S3 listing.
//! - [`namespace`], [`object`], [`idmap`]: the state's big structures, laid out for memory (a
//!   bucket's objects in packed leaves, the compact record, maps keyed by 128-bit ids).
//! - [`store`]: the Raft log, vote and snapshots on disk.
//! - [`network`]: Raft messages between masters.
//! - [`registry`]: liveness, space, replica locations and placement.
//! - [`api`]: the internal HTTP API that gateways, chunkservers and admins call.
//! - [`lifecycle`]: the leader's worker that applies buckets' lifecycle rules.
//! - [`ops`]: the read-only operations listener (health, metrics, and the [`status_page`]).

pub mod api;
pub mod idmap;
pub mod lifecycle;
pub mod namespace;
pub mod network;
pub mod object;
pub mod ops;
pub mod registry;
pub mod repair;
pub mod state;
pub mod status_page;
pub mod store;

use axum::serve::ListenerExt;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::future::Future;
use std::io::Cursor;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

openraft::declare_raft_types!(
    /// Types of the master's Raft group.
    pub TypeConfig:
        D = state::Command,
        R = state::Reply,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The master's Raft handle.
pub type Raft = openraft::Raft<TypeConfig>;

/// Heartbeat interval of the Raft leader: a fifth of the shortest election timeout, so a few
/// lost or late heartbeats on a loaded machine do not start an election.
pub const RAFT_HEARTBEAT_MS: u64 = 150;
/// Election timeout range: a follower that hears nothing for this long stands for election.
/// Sets the floor of failover time (the aim is under 3 s from a leader's death to a write).
pub const RAFT_ELECTION_MIN_MS: u64 = 750;
pub const RAFT_ELECTION_MAX_MS: u64 = 1500;
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
            restore: None,
            internal_tls: Default::default(),
        }
    }
}

impl MasterConfig {
    /// The initial members as a map, this master included.
    fn members(&self) -> anyhow::Result<BTreeMap<u64, openraft::BasicNode>> {
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

/// How often the snapshot worker looks at the log.
const SNAPSHOT_CHECK: Duration = Duration::from_millis(500);

/// Takes a snapshot once the writes applied since the last one number at least
/// `snapshot_every` *and* at least half as many as the state has records (or the log holds that
/// many entries). A snapshot costs time proportional to the state, so this keeps its cost per
/// write constant however large the namespace grows (while it only grows, snapshots come at
/// doubling sizes), and restart replays at most about half a state's worth of writes after it.
/// Writes, not entries: one batch entry can hold hundreds of writes.
async fn snapshot_worker(m: Arc<api::Master>) {
    let mut metrics = m.raft.metrics();
    loop {
        tokio::time::sleep(SNAPSHOT_CHECK).await;
        if metrics.has_changed().is_err() {
            return; // raft stopped
        }
        let (applied, snapshot) = {
            let x = metrics.borrow_and_update();
            (
                x.last_applied.map_or(0, |l| l.index),
                x.snapshot.map_or(0, |l| l.index),
            )
        };
        let (records, writes) = m
            .applied
            .read()
            .map(|a| {
                let records = a.state.object_count() + a.state.uploads.len() as u64;
                (records, a.writes)
            })
            .unwrap_or((0, 0));
        let since =
            writes.saturating_sub(m.snapshot_writes.load(std::sync::atomic::Ordering::Relaxed));
        let due = m.config.snapshot_every.max(records / 2);
        if applied.saturating_sub(snapshot) >= due || since >= due {
            tracing::info!(applied, snapshot, records, since, "taking a snapshot");
            if m.raft.trigger().snapshot().await.is_err() {
                return;
            }
            // Give the build time to finish before deciding again.
            let _ = tokio::time::timeout(Duration::from_secs(60), async {
                while metrics.changed().await.is_ok() {
                    if metrics.borrow().snapshot.map_or(0, |l| l.index) > snapshot {
                        break;
                    }
                }
            })
            .await;
        }
    }
}

/// Runs a master until `shutdown` completes.
pub async fn run(
    config: MasterConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    anyhow::ensure!(!config.secret.is_empty(), "the cluster secret is not set");
    // Before any internal client is built: they all follow it.
    let tls = config.internal_tls.apply(true)?;
    // The log and snapshots hold the S3 key secrets: only this user may read the folder.
    std::fs::create_dir_all(&config.data_dir)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&config.data_dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let log = store::LogStore::open(&config.data_dir.join("raft"))?;
    let sm = store::StateMachine::open(&config.data_dir.join("state"))?;
    let applied = sm.applied.clone();
    let snapshot_writes = sm.snapshot_writes.clone();
    let raft_config = openraft::Config {
        cluster_name: "tinydfs".into(),
        heartbeat_interval: config.raft_heartbeat_ms,
        election_timeout_min: config.election_timeout_min_ms,
        election_timeout_max: config.election_timeout_max_ms,
        // Snapshots are triggered by `snapshot_worker`, whose interval grows with the state.
        snapshot_policy: openraft::SnapshotPolicy::Never,
        // Entries kept behind a snapshot for followers that lag a little (cheaper than a
        // snapshot); never more than one snapshot interval.
        max_in_snapshot_log_to_keep: config.snapshot_every.min(1000),
        ..Default::default()
    }
    .validate()?;
    let network = network::Network {
        http: tinydfs_proto::client::http_client(),
        secret: config.secret.clone(),
    };
    let raft = Raft::new(config.id, Arc::new(raft_config), network, log, sm).await?;
    // Read a backup to restore before anything starts, so that a bad file stops the master.
    let restore = match &config.restore {
        Some(path) => {
            anyhow::ensure!(
                !raft.is_initialized().await?,
                "--restore needs a new, empty data folder; {} already holds a master",
                config.data_dir.display()
            );
            Some(state::Backup::load(path)?)
        }
        None => None,
    };
    if !raft.is_initialized().await? {
        if config.join {
            tracing::info!(
                id = config.id,
                "waiting to be added to a running master group"
            );
        } else {
            let members = config.members()?;
            // The lowest id initializes a new group; the others learn of it from its first
            // vote request. (All of them could, safely, but they would fight over term 1.)
            if members.keys().next() == Some(&config.id) {
                tracing::info!(id = config.id, members = ?members.keys().collect::<Vec<_>>(), "initializing a new master group");
                raft.initialize(members).await?;
            } else {
                tracing::info!(
                    id = config.id,
                    "waiting for the lowest-id master to form the group"
                );
            }
        }
    }
    let registry = registry::Registry::new(
        Duration::from_secs_f64(config.dead_node_timeout_secs),
        config.reserve_bytes,
    );
    let master = Arc::new(api::Master {
        raft: raft.clone(),
        leader_since: std::sync::Mutex::new(None),
        membership_lock: tokio::sync::Mutex::new(()),
        repaired: std::sync::atomic::AtomicU64::new(0),
        applied,
        snapshot_writes,
        registry: std::sync::Mutex::new(registry),
        config: config.clone(),
    });
    tokio::spawn(api::name_cluster(master.clone(), restore));
    tokio::spawn(snapshot_worker(master.clone()));
    tokio::spawn(repair::repair_worker(master.clone()));
    tokio::spawn(lifecycle::lifecycle_worker(master.clone()));
    // Read-only and quick: stopped with the process, without a grace period.
    let ops_server = if config.ops_listen.is_empty() {
        None
    } else {
        let l = tokio::net::TcpListener::bind(&config.ops_listen).await?;
        tracing::info!(addr = %config.ops_listen, "operations listener");
        let app = ops::router(master.clone());
        Some(tokio::spawn(async move { axum::serve(l, app).await }))
    };
    let listener = tokio::net::TcpListener::bind(&config.listen).await?;
    tracing::info!(addr = %config.listen, tls = tls.is_some(), "master listening");
    match tls {
        Some(tls) => {
            let listener = tinydfs_proto::tls::TlsListener::new(listener, tls)?;
            axum::serve(listener, api::router(master))
                .with_graceful_shutdown(shutdown)
                .await?
        }
        // Nagle off: small replies must not wait for the peer's delayed ACK.
        None => {
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            axum::serve(listener, api::router(master))
                .with_graceful_shutdown(shutdown)
                .await?
        }
    }
    if let Some(s) = ops_server {
        s.abort();
    }
    raft.shutdown().await.ok();
    Ok(())
}
