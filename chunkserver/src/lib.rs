//! The tinydfs chunkserver: stores immutable chunks on local disk and serves them.
//!
//! - [`store`]: chunk files (hashed sub-folders, CRC32C per 64 KiB block, atomic creation).
//! - [`api`]: the internal HTTP API: the write pipeline (receive, write locally while forwarding
//!   to the next replica, acknowledge once every member has fsynced) and verified reads.
//! - this file: configuration, registration with the master and heartbeats with chunk reports.
//!
//! A chunkserver keeps its identity (node id and cluster id) in its data folder and refuses to
//! join another cluster with it.

pub mod api;
pub mod store;

use axum::serve::ListenerExt;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tinydfs_proto::client::MasterClient;
use tinydfs_proto::meta::{Heartbeat, RegisterRequest};
use tokio::sync::watch;

/// How often a chunkserver reports to the master (HDFS's default too).
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(3);
/// Heartbeats between two full chunk reports, so the master's soft state heals from drift.
pub const FULL_REPORT_EVERY: u32 = 20;
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
    /// Folder for chunks and the node identity.
    pub data_dir: PathBuf,
    /// Internal addresses of the masters.
    pub masters: Vec<String>,
    pub secret: String,
    pub heartbeat_ms: u64,
}

impl Default for ChunkserverConfig {
    fn default() -> Self {
        ChunkserverConfig {
            listen: "127.0.0.1:9200".into(),
            advertise: String::new(),
            data_dir: PathBuf::from("data/chunkserver"),
            masters: vec!["127.0.0.1:9100".into()],
            secret: String::new(),
            heartbeat_ms: HEARTBEAT_INTERVAL.as_millis() as u64,
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

/// Total and free bytes of the file system holding `dir`.
pub fn disk_space(dir: &Path) -> (u64, u64) {
    match nix::sys::statvfs::statvfs(dir) {
        Ok(s) => {
            let frag = s.fragment_size();
            (s.blocks() * frag, s.blocks_available() * frag)
        }
        Err(_) => (0, 0),
    }
}

/// Runs a chunkserver until `shutdown` completes.
pub async fn run(
    config: ChunkserverConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    anyhow::ensure!(!config.secret.is_empty(), "the cluster secret is not set");
    anyhow::ensure!(!config.masters.is_empty(), "no master address given");
    std::fs::create_dir_all(&config.data_dir)?;
    let store = Arc::new(store::ChunkStore::open(&config.data_dir)?);
    let identity = Identity::load(&config.data_dir)?;
    let (id_tx, id_rx) = watch::channel(identity.node_id);
    let server = Arc::new(api::Chunkserver {
        store: store.clone(),
        secret: config.secret.clone(),
        node_id: id_rx,
        client: tinydfs_proto::client::ChunkClient::new(config.secret.clone()),
    });
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await?
        .tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
    tracing::info!(addr = %config.listen, "chunkserver listening");
    let hb = tokio::spawn(heartbeat_loop(config.clone(), store, identity, id_tx));
    axum::serve(listener, api::router(server))
        .with_graceful_shutdown(shutdown)
        .await?;
    hb.abort();
    Ok(())
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
        let (capacity, free) = disk_space(store.root());
        if !registered {
            let req = RegisterRequest {
                node_id: identity.node_id,
                cluster_id: identity.cluster_id.clone(),
                addr: config.advertise(),
                capacity,
                free,
                pid: std::process::id(),
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
        let hb = Heartbeat {
            node_id,
            addr: config.advertise(),
            capacity,
            free,
            pid: std::process::id(),
            chunks: beats
                .is_multiple_of(FULL_REPORT_EVERY)
                .then(|| store.report()),
        };
        match master.heartbeat(&hb).await {
            Ok(r) if r.reregister => registered = false,
            Ok(_) => beats = beats.wrapping_add(1),
            Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
        }
        if registered {
            tokio::time::sleep(interval).await;
        }
    }
}
