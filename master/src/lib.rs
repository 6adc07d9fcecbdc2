//! The tinydfs master: the namespace, the chunk table and the chunkserver registry.
//!
//! Durable metadata lives in a [`state::State`] changed only by applying [`state::Command`]s from
//! the Raft log (openraft, a group of one member by default); the leader stamps each command with
//! the time and any ids, so applying is deterministic. Soft state — which chunkservers are alive,
//! their free space, where replicas are — is kept by the leader in a [`registry::Registry`] and
//! rebuilt from registrations and chunk reports after a restart.
//!
//! Where each part lives:
//!
//! - [`config`]: [`MasterConfig`] and the defaults of its timings and sizes.
//! - [`state`]: the state machine. [`state::State::apply`] hands each write to the file of the
//!   part of the state it changes, under `state/`: the log entry and its answers (`command.rs`),
//!   the cluster and its chunkservers (`cluster.rs`), buckets (`buckets.rs`), objects
//!   (`objects.rs`), multipart uploads (`multipart.rs`), upload leases (`leases.rs`), the chunk
//!   table (`chunks.rs`), access keys (`keys.rs`), lifecycle rules ([`state::lifecycle`]), S3
//!   listings (`listing.rs`) and backups (`backup.rs`).
//! - [`namespace`], [`object`], [`idmap`]: the state's big structures, laid out for memory (a
//!   bucket's objects in packed leaves, the compact record, maps keyed by 128-bit ids).
//! - [`raft`]: the types of the Raft group. [`store`]: its storage on disk, the log and vote
//!   ([`store::LogStore`], `store/log.rs`) and the applied state with its snapshots
//!   ([`store::StateMachine`], `store/state_machine.rs`).
//! - [`network`]: Raft messages between masters.
//! - [`node`]: the master node ([`node::Master`]) that handlers and workers share: it proposes
//!   commands, makes reads linearizable, knows whether it leads, and reports the cluster's status.
//! - [`registry`]: liveness, space, replica locations and placement.
//! - [`api`]: the internal HTTP API that gateways, chunkservers and admins call.
//! - [`repair`]: the leader's worker that keeps every chunk at its number of copies (repair,
//!   drain, rebalance) and lets expired leases lapse.
//! - [`lifecycle`]: the leader's worker that applies buckets' lifecycle rules.
//! - [`ops`]: the read-only operations listener (health, metrics, and the [`status_page`]).
//!
//! This file starts a master ([`run`]) and its snapshot worker.

pub mod api;
pub mod config;
pub mod idmap;
pub mod lifecycle;
pub mod namespace;
pub mod network;
pub mod node;
pub mod object;
pub mod ops;
pub mod raft;
pub mod registry;
pub mod repair;
pub mod state;
pub mod status_page;
pub mod store;

pub use config::{
    MasterConfig, DEAD_NODE_TIMEOUT, DEFAULT_LIFECYCLE_DAY_MS, DEFAULT_LIFECYCLE_INTERVAL,
    DEFAULT_REBALANCE_THRESHOLD, DEFAULT_REPAIR_CONCURRENCY, DEFAULT_REPAIR_INTERVAL,
    DEFAULT_RESERVE, RAFT_ELECTION_MAX_MS, RAFT_ELECTION_MIN_MS, RAFT_HEARTBEAT_MS, SNAPSHOT_EVERY,
};
pub use raft::{Raft, TypeConfig};

use axum::serve::ListenerExt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// How often the snapshot worker looks at the log.
const SNAPSHOT_CHECK: Duration = Duration::from_millis(500);

/// Takes a snapshot once the writes applied since the last one number at least
/// `snapshot_every` *and* at least half as many as the state has records (or the log holds that
/// many entries). A snapshot costs time proportional to the state, so this keeps its cost per
/// write constant however large the namespace grows (while it only grows, snapshots come at
/// doubling sizes), and restart replays at most about half a state's worth of writes after it.
/// Writes, not entries: one batch entry can hold hundreds of writes.
async fn snapshot_worker(m: Arc<node::Master>) {
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
    let master = Arc::new(node::Master {
        raft: raft.clone(),
        leader_since: std::sync::Mutex::new(None),
        membership_lock: tokio::sync::Mutex::new(()),
        repaired: std::sync::atomic::AtomicU64::new(0),
        lifecycle_passes: std::sync::atomic::AtomicU64::new(0),
        applied,
        snapshot_writes,
        registry: std::sync::Mutex::new(registry),
        config: config.clone(),
    });
    tokio::spawn(node::name_cluster(master.clone(), restore));
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
