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
pub mod features;
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

/// Prepares `--restore FILE` before Raft starts. Refuses a data folder that already holds a
/// master, and a backup that cannot be read. The master that forms the new group (the lowest id
/// of `--initial-members`, not `--join`) installs the backup as the group's first snapshot
/// ([`store::StateMachine::seed`]: never a log entry, whose size is bounded); the other members
/// start empty and receive that snapshot from the group's leader.
async fn restore(
    config: &MasterConfig,
    backup: &std::path::Path,
    log: &store::LogStore,
    sm: &store::StateMachine,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        log.is_empty()? && sm.is_empty()?,
        "--restore needs a new, empty data folder; {} already holds a master",
        config.data_dir.display()
    );
    let members = (!config.join).then(|| config.members()).transpose()?;
    let former = members.as_ref().and_then(|m| m.keys().next().copied());
    let (path, sm, id) = (backup.to_path_buf(), sm.clone(), config.id);
    // Reading, decoding and writing a whole state: on the blocking pool.
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let b = state::Backup::load(&path)?;
        let (cluster_id, objects) = (b.state.cluster_id.clone(), b.state.object_count());
        match members {
            Some(members) if former == Some(id) => {
                sm.seed(
                    b.into_restored_state(tinydfs_proto::time::now_ms()),
                    members,
                )?;
                tracing::info!(%cluster_id, objects, "metadata restored from a backup");
            }
            _ => tracing::warn!(
                id,
                forming = ?former,
                "this master does not form the new group: it receives the restored state from \
                 the group, whose forming master must be started with --restore too"
            ),
        }
        Ok(())
    })
    .await?
}

/// Runs a master until `shutdown` completes.
pub async fn run(
    config: MasterConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // One process per data folder, taken before anything in it is read or written (a restore's
    // check too), held until this returns: two masters on one folder would both append to one
    // log. The second one exits with the lock's one-line message, naming the holder.
    let _lock =
        tinydfs_proto::lock::lock_dir(&config.data_dir).map_err(|e| anyhow::anyhow!("{e}"))?;
    anyhow::ensure!(!config.secret.is_empty(), "the cluster secret is not set");
    // Before any internal client is built: they all follow it.
    let tls = config.internal_tls.apply(true)?;
    // The log and snapshots hold the S3 key secrets: only this user may read the folder.
    std::fs::create_dir_all(&config.data_dir)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&config.data_dir, std::fs::Permissions::from_mode(0o700))?;
    }
    // Replaying the log and loading the snapshot read whole files: off the runtime's workers.
    let (log, sm) = {
        let dir = config.data_dir.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<_> {
            Ok((
                store::LogStore::open(&dir.join("raft"))?,
                store::StateMachine::open(&dir.join("state"))?,
            ))
        })
        .await??
    };
    if let Some(backup) = &config.restore {
        restore(&config, backup, &log, &sm).await?;
    }
    // A group whose level rose past this release cannot be downgraded to it: its log may hold
    // writes this release would apply differently, or not decode.
    let sm = sm
        .limit_features(features::capability(config.max_feature_level))
        .map_err(|e| anyhow::anyhow!("{e} ({})", config.data_dir.display()))?;
    let applied = sm.applied.clone();
    let feature_level = sm.feature_level.clone();
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
    // A restored group is initialized already (its first snapshot is in place).
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
        feature_level,
        registry: std::sync::Mutex::new(registry),
        config: config.clone(),
    });
    // A restored group is named already: the backup's cluster id is in its first snapshot.
    tokio::spawn(node::name_cluster(master.clone(), None));
    tokio::spawn(snapshot_worker(master.clone()));
    tokio::spawn(repair::repair_worker(master.clone()));
    tokio::spawn(lifecycle::lifecycle_worker(master.clone()));
    tokio::spawn(features::feature_worker(master.clone()));
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};
    use std::time::Instant;

    fn tempdir(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("tinydfs-run-{name}-{:08x}", rand::random::<u32>()))
    }

    fn free_addr() -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    }

    fn config(dir: &Path, id: u64) -> MasterConfig {
        MasterConfig {
            id,
            listen: free_addr(),
            ops_listen: free_addr(),
            data_dir: dir.to_path_buf(),
            secret: "test-secret".into(),
            raft_heartbeat_ms: 50,
            election_timeout_min_ms: 300,
            election_timeout_max_ms: 600,
            ..Default::default()
        }
    }

    /// A backup of a cluster named `c-restored` holding `buckets` buckets with long names (each
    /// about 200 bytes of JSON), written to `path`.
    fn write_backup(path: &Path, buckets: usize) {
        let mut s = state::State::default();
        let cmd = |op| state::Command {
            version: state::COMMAND_VERSION,
            request_id: None,
            time_ms: 1,
            op,
        };
        s.apply(&cmd(state::Op::Init {
            cluster_id: "c-restored".into(),
        }));
        for i in 0..buckets {
            s.apply(&cmd(state::Op::Meta(
                tinydfs_proto::meta::MetaWrite::CreateBucket {
                    bucket: format!("bucket-{i:05}-{}", "x".repeat(40)),
                    owner: "me".into(),
                },
            )));
        }
        let backup = state::BackupRef {
            version: state::BACKUP_VERSION,
            taken_ms: 1,
            applied_index: 1,
            state: &s,
        };
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, serde_json::to_vec(&backup).unwrap()).unwrap();
    }

    /// The applied index a master's operations listener reports.
    async fn applied_index(ops: &str) -> Option<u64> {
        let url = tinydfs_proto::client::url(ops, tinydfs_proto::ops::paths::METRICS);
        let text = tinydfs_proto::client::http_client()
            .get(url)
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("tinydfs_master_raft_applied_index "))
            .and_then(|v| v.trim().parse().ok())
    }

    /// Runs masters with `configs` until each has applied an entry after the group's first
    /// (the first leader's), then stops them.
    async fn run_until_applied(configs: Vec<MasterConfig>) {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let ops: Vec<String> = configs.iter().map(|c| c.ops_listen.clone()).collect();
        let tasks: Vec<_> = configs
            .into_iter()
            .map(|c| {
                let mut stopped = stopped.clone();
                tokio::spawn(run(c, async move {
                    let _ = stopped.wait_for(|s| *s).await;
                }))
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        for o in &ops {
            while applied_index(o).await.unwrap_or(0) < 1 {
                assert!(Instant::now() < deadline, "{o} applied nothing");
                for t in &tasks {
                    assert!(!t.is_finished(), "a master stopped");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        stop.send(true).unwrap();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
    }

    /// The state a master's data folder holds, as a restart loads it.
    fn stored_state(dir: &Path) -> state::State {
        let sm = store::StateMachine::open(&dir.join("state")).unwrap();
        let a = sm.applied.read().unwrap();
        a.state.clone()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_second_master_on_a_data_folder_exits_naming_the_holder() {
        let dir = tempdir("locked");
        let held = tinydfs_proto::lock::lock_dir(&dir).unwrap();
        let mut c = config(&dir, 1);
        c.restore = Some(dir.join("no-such-backup"));
        let err = run(c, async {}).await.expect_err("the folder is held");
        let message = format!("{err:#}");
        assert_eq!(
            message,
            tinydfs_proto::lock::lock_dir(&dir).unwrap_err().to_string()
        );
        assert!(
            message.contains(&format!("pid {}", std::process::id())),
            "{message}"
        );
        // Nothing in the folder was opened: no log, no state.
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, [tinydfs_proto::lock::LOCK_FILE]);
        drop(held);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_restore_starts_the_group_from_a_snapshot_not_a_log_entry() {
        let dir = tempdir("restore");
        let master = dir.join("master");
        let file = dir.join("backup.json");
        write_backup(&file, 2000);
        let mut c = config(&master, 1);
        c.restore = Some(file.clone());
        run_until_applied(vec![c.clone()]).await;

        let restored = stored_state(&master);
        assert_eq!(restored.cluster_id, "c-restored");
        assert_eq!(restored.buckets.len(), 2000);
        assert!(restored.protected_leases.is_some());
        // The state is the group's first snapshot; the log holds only what came after it (the
        // first leader's entry), not a record as large as the state, which it once did.
        let snapshot = std::fs::metadata(master.join("state/snapshot.json"))
            .unwrap()
            .len();
        let log = std::fs::metadata(master.join("raft/raft.log"))
            .unwrap()
            .len();
        assert!(snapshot > 200_000, "{snapshot}");
        assert!(log < 2_000, "the log holds {log} bytes");

        // A restart serves the same state; a second restore into the folder is refused.
        c.listen = free_addr();
        c.ops_listen = free_addr();
        let again = run(c.clone(), async {})
            .await
            .expect_err("not a new folder");
        assert!(
            format!("{again:#}").contains("needs a new, empty data folder"),
            "{again:#}"
        );
        c.restore = None;
        run_until_applied(vec![c]).await;
        assert_eq!(stored_state(&master).buckets.len(), 2000);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_member_of_a_restored_group_receives_the_state() {
        let dir = tempdir("restore3");
        let file = dir.join("backup.json");
        write_backup(&file, 50);
        let mut configs: Vec<_> = (1..=3)
            .map(|id| config(&dir.join(format!("master-{id}")), id))
            .collect();
        let members: Vec<String> = configs
            .iter()
            .map(|c| format!("{}={}", c.id, c.listen))
            .collect();
        for c in &mut configs {
            c.initial_members = members.clone();
        }
        // The forming master restores; the second is given the file too (as `tinydfs server
        // --master-arg` does) and waits; the third knows nothing of it.
        configs[0].restore = Some(file.clone());
        configs[1].restore = Some(file.clone());
        run_until_applied(configs).await;
        for id in 1..=3 {
            let s = stored_state(&dir.join(format!("master-{id}")));
            assert_eq!(s.cluster_id, "c-restored", "master {id}");
            assert_eq!(s.buckets.len(), 50, "master {id}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
