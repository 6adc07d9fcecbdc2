//! The tinydfs chunkserver: stores immutable chunks on local disk and serves them.
//!
//! - [`image`]: the chunk image, the bytes of one stored chunk (header, data, a CRC32C per 64 KiB
//!   block, footer with length and whole-chunk CRC32C), built and checked the same wherever it is
//!   kept.
//! - [`store`]: chunk files on one or more disks (hashed sub-folders, atomic creation), the index
//!   of the chunks held, placement by free space, the capacity limit, disk failure handling,
//!   verified reads and compaction; its crate-private files each take one concern (disks, write,
//!   read, delete, compact).
//! - [`pack`]: pack files, where small chunks are appended as records and made durable in groups
//!   (one fsync for many writers), replayed at start.
//! - [`api`]: the internal HTTP API: the write pipeline (receive, write locally while forwarding
//!   to the next replica, acknowledge once every member has fsynced) and verified reads.
//! - [`scrub`]: the background worker that re-reads every chunk to find silent corruption.
//! - [`ops`]: the read-only operations listener (health, Prometheus metrics).
//! - this file: configuration, registration with the master and heartbeats with chunk reports,
//!   lost replicas, disk states and the master's deletion orders, and the compaction timer.
//!
//! Dependencies run one way: `image` ← `pack` ← `store` ← `api`, `scrub`, `ops` ← this file.
//!
//! A chunkserver keeps its identity (node id and cluster id) in its data folder and refuses to
//! join another cluster with it; it obeys deletion orders only from a master of that cluster.

pub mod api;
pub mod image;
pub mod ops;
pub mod pack;
pub mod scrub;
pub mod store;

use axum::serve::ListenerExt;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tinydfs_proto::client::MasterClient;
use tinydfs_proto::meta::{Heartbeat, HeartbeatReply, RegisterRequest};
use tokio::sync::watch;

/// How often a chunkserver reports to the master (HDFS's default too).
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(3);
/// Heartbeats between two full chunk reports, so the master's soft state heals from drift.
pub const FULL_REPORT_EVERY: u32 = 20;
/// How often pack files are looked at for compaction.
pub const COMPACT_INTERVAL: Duration = Duration::from_secs(60);
/// Version of the identity file.
const IDENTITY_VERSION: u16 = 1;

/// Configuration of a chunkserver.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct ChunkserverConfig {
    /// Address of the internal listener.
    pub listen: String,
    /// Address others reach this chunkserver at; the listen address when empty.
    pub advertise: String,
    /// Folder for the node identity, and for chunks when `disks` is empty.
    pub data_dir: PathBuf,
    /// Data folders (one per disk) for chunks; `data_dir` alone when empty.
    pub disks: Vec<PathBuf>,
    /// Bytes of chunk data this chunkserver accepts and reports as its capacity (to share a disk,
    /// or in tests); 0 for the disks' whole size.
    pub capacity: u64,
    /// Bytes per second the scrubber reads; 0 disables it.
    pub scrub_bytes_per_sec: u64,
    /// Seconds between the end of a scrub pass and the start of the next.
    pub scrub_interval_secs: u64,
    /// Chunks of at most this many bytes are appended to pack files with group commit instead
    /// of each being a file (0: every chunk a file; at most 16 MiB).
    pub pack_max: u64,
    /// Seconds between two looks for pack files worth compacting.
    pub compact_interval_secs: u64,
    /// Internal addresses of the masters.
    pub masters: Vec<String>,
    pub secret: String,
    pub heartbeat_ms: u64,
    /// Failure-domain label (rack, room); empty for none.
    pub zone: String,
    /// Address of the read-only operations listener (health, metrics); empty for none.
    pub ops_listen: String,
    /// HTTPS on the internal listener and to peers (off unless set).
    #[serde(flatten)]
    pub internal_tls: tinydfs_proto::tls::InternalTls,
}

impl Default for ChunkserverConfig {
    fn default() -> Self {
        ChunkserverConfig {
            listen: "127.0.0.1:9200".into(),
            advertise: String::new(),
            data_dir: PathBuf::from("data/chunkserver"),
            disks: Vec::new(),
            capacity: 0,
            scrub_bytes_per_sec: scrub::DEFAULT_SCRUB_RATE,
            scrub_interval_secs: scrub::DEFAULT_SCRUB_INTERVAL.as_secs(),
            pack_max: store::DEFAULT_PACK_MAX,
            compact_interval_secs: COMPACT_INTERVAL.as_secs(),
            masters: vec!["127.0.0.1:9100".into()],
            secret: String::new(),
            heartbeat_ms: HEARTBEAT_INTERVAL.as_millis() as u64,
            zone: String::new(),
            ops_listen: String::new(),
            internal_tls: Default::default(),
        }
    }
}

impl ChunkserverConfig {
    pub fn advertise(&self) -> String {
        if self.advertise.is_empty() {
            self.listen.clone()
        } else {
            self.advertise.clone()
        }
    }

    /// The folders chunks are kept in.
    pub fn chunk_dirs(&self) -> Vec<PathBuf> {
        if self.disks.is_empty() {
            vec![self.data_dir.clone()]
        } else {
            self.disks.clone()
        }
    }
}

/// This chunkserver's identity in its cluster.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Identity {
    pub version: u16,
    pub node_id: Option<u64>,
    pub cluster_id: Option<String>,
}

impl Identity {
    /// The saved identity; none for a new data folder. An unreadable one is an error: guessing
    /// would let this node join another cluster with its chunks.
    fn load(dir: &Path) -> anyhow::Result<Identity> {
        let path = dir.join("identity.json");
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                anyhow::anyhow!("{} is unreadable ({e}); fix or remove it", path.display())
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Identity::default()),
            Err(e) => Err(anyhow::anyhow!("{}: {e}", path.display())),
        }
    }

    fn save(&self, dir: &Path) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(self)?;
        let tmp = dir.join("identity.json.tmp");
        std::fs::write(&tmp, bytes)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(tmp, dir.join("identity.json"))?;
        std::fs::File::open(dir)?.sync_all()
    }
}

/// Runs a chunkserver until `shutdown` completes.
pub async fn run(
    config: ChunkserverConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    anyhow::ensure!(!config.secret.is_empty(), "the cluster secret is not set");
    anyhow::ensure!(!config.masters.is_empty(), "no master address given");
    // Before any internal client is built: they all follow it.
    let tls = config.internal_tls.apply(true)?;
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| anyhow::anyhow!("creating {}: {e}", config.data_dir.display()))?;
    let packing = store::PackConfig {
        max_chunk: config.pack_max,
        ..Default::default()
    };
    let store = Arc::new(store::ChunkStore::open_with(
        &config.chunk_dirs(),
        config.capacity,
        packing,
    )?);
    let identity = Identity::load(&config.data_dir)?;
    let (id_tx, id_rx) = watch::channel(identity.node_id);
    let server = Arc::new(api::Chunkserver {
        store: store.clone(),
        secret: config.secret.clone(),
        node_id: id_rx,
        client: tinydfs_proto::client::ChunkClient::new(config.secret.clone()),
    });
    // Read-only and quick: stopped with the process, without a grace period.
    let ops_server = if config.ops_listen.is_empty() {
        None
    } else {
        let l = tokio::net::TcpListener::bind(&config.ops_listen).await?;
        tracing::info!(addr = %config.ops_listen, "operations listener");
        let app = ops::router(store.clone());
        Some(tokio::spawn(async move { axum::serve(l, app).await }))
    };
    let listener = tokio::net::TcpListener::bind(&config.listen).await?;
    tracing::info!(addr = %config.listen, tls = tls.is_some(), "chunkserver listening");
    let stop_scrub = Arc::new(AtomicBool::new(false));
    let scrubber = tokio::spawn(scrub::run(
        store.clone(),
        config.scrub_bytes_per_sec,
        Duration::from_secs(config.scrub_interval_secs),
        stop_scrub.clone(),
    ));
    let compactor = tokio::spawn(compact_loop(
        store.clone(),
        Duration::from_secs(config.compact_interval_secs.max(1)),
    ));
    let hb = tokio::spawn(heartbeat_loop(config.clone(), store, identity, id_tx));
    match tls {
        Some(tls) => {
            let listener = tinydfs_proto::tls::TlsListener::new(listener, tls)?;
            axum::serve(listener, api::router(server))
                .with_graceful_shutdown(shutdown)
                .await?
        }
        None => {
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            axum::serve(listener, api::router(server))
                .with_graceful_shutdown(shutdown)
                .await?
        }
    }
    hb.abort();
    compactor.abort();
    if let Some(s) = ops_server {
        s.abort();
    }
    stop_scrub.store(true, Ordering::Relaxed);
    scrubber.abort();
    Ok(())
}

/// Compacts sparse pack files every `interval`, on a blocking thread.
async fn compact_loop(store: Arc<store::ChunkStore>, interval: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        let s = store.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || s.compact()).await {
            tracing::warn!(error = %e, "pack compaction failed");
        }
    }
}

async fn heartbeat_loop(
    config: ChunkserverConfig,
    store: Arc<store::ChunkStore>,
    mut identity: Identity,
    id_tx: watch::Sender<Option<u64>>,
) {
    let master = MasterClient::new(config.masters.clone(), config.secret.clone());
    let interval = Duration::from_millis(config.heartbeat_ms.max(10));
    let mut registered = false;
    let mut beats = 0u32;
    loop {
        // statvfs and folder checks touch the disks: off the runtime threads.
        let s = store.clone();
        let usage = match tokio::task::spawn_blocking(move || s.usage()).await {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(error = %e, "measuring disk usage failed");
                tokio::time::sleep(interval).await;
                continue;
            }
        };
        if !registered {
            let req = RegisterRequest {
                node_id: identity.node_id,
                cluster_id: identity.cluster_id.clone(),
                addr: config.advertise(),
                capacity: usage.capacity,
                free: usage.free,
                pid: std::process::id(),
                zone: config.zone.clone(),
            };
            match master.register(&req).await {
                Ok(reply) => {
                    identity = Identity {
                        version: IDENTITY_VERSION,
                        node_id: Some(reply.node_id),
                        cluster_id: Some(reply.cluster_id),
                    };
                    if let Err(e) = identity.save(&config.data_dir) {
                        tracing::error!(error = %e, "cannot save the node identity");
                    }
                    let _ = id_tx.send(identity.node_id);
                    registered = true;
                    beats = 0;
                    tracing::info!(node_id = reply.node_id, "registered with the master");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "registration failed");
                    tokio::time::sleep(interval).await;
                    continue;
                }
            }
        }
        let Some(node_id) = identity.node_id else {
            registered = false;
            continue;
        };
        // Lost ids first, then the report: a chunk lost in between is in neither and goes in
        // the next heartbeat's list, never in both.
        let (lost_mark, lost) = store.lost();
        let chunks = beats.is_multiple_of(FULL_REPORT_EVERY).then(|| {
            let mut report = store.report();
            if !lost.is_empty() {
                let lost: std::collections::HashSet<_> = lost.iter().collect();
                report.retain(|c| !lost.contains(&c.id));
            }
            report
        });
        let (scrubbed, scrub_corrupt) = store.scrub_counters();
        let (bytes_written, _) = store.io_counters();
        let hb = Heartbeat {
            node_id,
            addr: config.advertise(),
            capacity: usage.capacity,
            free: usage.free,
            pid: std::process::id(),
            chunks,
            zone: config.zone.clone(),
            lost,
            disks: usage.disks,
            scrubbed,
            scrub_corrupt,
            bytes_written,
        };
        match master.heartbeat(&hb).await {
            // The master lost track of this node: what it was sent may be ignored, so the lost
            // ids stay queued for after the registration.
            Ok(r) if r.reregister => registered = false,
            Ok(r) => {
                store.ack_lost(lost_mark);
                beats = beats.wrapping_add(1);
                obey_deletions(&store, &identity, r).await;
            }
            Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
        }
        if registered {
            tokio::time::sleep(interval).await;
        }
    }
}

/// Why the deletion orders of `reply` must not be obeyed, if so. Deleting is the one thing a
/// chunkserver cannot undo: a master that is not of our cluster (wiped, or another cluster's)
/// or that has not yet heard from every chunkserver could order live chunks deleted.
fn deletion_refusal(reply: &HeartbeatReply, identity: &Identity) -> Option<String> {
    if reply.safe_mode {
        return Some("the master is in safe mode".into());
    }
    if reply.cluster_id.is_empty() {
        return Some("the master sent no cluster id".into());
    }
    match identity.cluster_id.as_deref() {
        Some(ours) if ours == reply.cluster_id => None,
        ours => Some(format!(
            "the master is of cluster {}, this node of {}",
            reply.cluster_id,
            ours.unwrap_or("none")
        )),
    }
}

/// Deletes the chunks the master ordered deleted, if it may order that (on a blocking thread:
/// unlinking many files takes a while).
async fn obey_deletions(
    store: &Arc<store::ChunkStore>,
    identity: &Identity,
    reply: HeartbeatReply,
) {
    if reply.delete.is_empty() {
        return;
    }
    if let Some(why) = deletion_refusal(&reply, identity) {
        tracing::warn!(chunks = reply.delete.len(), reason = %why, "refusing the master's deletion orders");
        return;
    }
    let s = store.clone();
    let ordered = reply.delete.len();
    match tokio::task::spawn_blocking(move || s.delete_all(&reply.delete)).await {
        Ok(deleted) => tracing::info!(ordered, deleted, "deleted chunks as the master ordered"),
        Err(e) => tracing::warn!(error = %e, "deleting chunks failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deletions_are_obeyed_only_from_our_cluster_out_of_safe_mode() {
        let ours = Identity {
            version: IDENTITY_VERSION,
            node_id: Some(3),
            cluster_id: Some("c-1".into()),
        };
        let reply = |cluster: &str, safe_mode| HeartbeatReply {
            cluster_id: cluster.into(),
            safe_mode,
            ..Default::default()
        };
        assert_eq!(deletion_refusal(&reply("c-1", false), &ours), None);
        assert!(deletion_refusal(&reply("c-1", true), &ours).is_some());
        assert!(deletion_refusal(&reply("", false), &ours).is_some());
        assert!(deletion_refusal(&reply("c-2", false), &ours).is_some());
        assert!(deletion_refusal(&reply("c-1", false), &Identity::default()).is_some());
    }

    #[test]
    fn chunks_go_to_the_data_dir_unless_disks_are_given() {
        let mut c = ChunkserverConfig {
            data_dir: PathBuf::from("/d"),
            ..Default::default()
        };
        assert_eq!(c.chunk_dirs(), vec![PathBuf::from("/d")]);
        c.disks = vec![PathBuf::from("/a"), PathBuf::from("/b")];
        assert_eq!(c.chunk_dirs(), c.disks);
    }
}
