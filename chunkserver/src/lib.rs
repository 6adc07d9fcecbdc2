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
//! - this file: configuration, the start (folder locks, the identity, opening the store, all on
//!   a blocking thread), registration with the master and heartbeats with chunk reports, lost
//!   replicas, disk states and the master's deletion orders, and the compaction timer.
//!
//! Dependencies run one way: `image` ← `pack` ← `store` ← `api`, `scrub`, `ops` ← this file.
//!
//! A chunkserver keeps its identity (node id and cluster id) in its data folder and refuses to
//! join another cluster with it; it obeys deletion orders only from a master of that cluster.
//! The identity is what ties the chunks on its disks to the cluster's records of them, so it is
//! never given up silently: a node that cannot save the identity it was given exits, and a node
//! that has chunks but no identity refuses to register as a new node unless the operator says
//! so (`accept_new_identity`). Each data folder and disk is locked for the life of the process
//! (`tinydfs_proto::lock`), so two processes never judge one set of chunks.

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
use tinydfs_proto::lock::{lock_dir, DirLock};
use tinydfs_proto::meta::{Heartbeat, HeartbeatReply, MetaError, RegisterRequest};
use tokio::sync::watch;

/// How often a chunkserver reports to the master (HDFS's default too).
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(3);
/// Heartbeat rounds after which a master that was named leader but is not among the masters
/// given is no longer sent heartbeats, if it never answered in them (removed, or moved).
const FORGET_NAMED_AFTER: u32 = 20;
/// Heartbeat rounds in which only a leader of a lower term than one seen before answers, after
/// which its term is accepted: a deposed leader steps down within an election timeout (seconds),
/// so one that goes on answering as leader leads a master group that started afresh (a restore).
const DEPOSED_PATIENCE: u32 = 20;
/// Heartbeats between two full chunk reports, so the master's soft state heals from drift.
pub const FULL_REPORT_EVERY: u32 = 20;
/// How often pack files are looked at for compaction.
pub const COMPACT_INTERVAL: Duration = Duration::from_secs(60);
/// Chunk requests (reads, writes, batches, copies) served at once; more are answered 503
/// SlowDown at once, so that the sender reads another replica or places elsewhere instead of
/// queueing behind a slow disk. A gateway keeps a few dozen in flight per node at full load.
pub const DEFAULT_MAX_REQUESTS: usize = 256;
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
    /// Register as a new node even though the disks hold chunks and the identity file is
    /// missing: the cluster then judges those chunks as a new node's (copies it knows count,
    /// the rest is garbage). Off: such a start is refused.
    pub accept_new_identity: bool,
    /// Chunk requests served at once ([`DEFAULT_MAX_REQUESTS`]); more are answered 503.
    pub max_requests: usize,
    /// Milliseconds a later pipeline member may make no progress before it is dropped from a
    /// write ([`api::PIPELINE_STALL_TIMEOUT`]; at least 100); the longer waits on it are derived
    /// from it ([`api::Deadlines`]). Gateways should use the same value.
    pub pipeline_stall_ms: u64,
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
            accept_new_identity: false,
            max_requests: DEFAULT_MAX_REQUESTS,
            pipeline_stall_ms: api::PIPELINE_STALL_TIMEOUT.as_millis() as u64,
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

/// Name of the identity file in the data folder.
const IDENTITY_FILE: &str = "identity.json";

/// This chunkserver's identity in its cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub version: u16,
    pub node_id: Option<u64>,
    pub cluster_id: Option<String>,
}

impl Identity {
    /// The saved identity; none for a new data folder. An unreadable one is an error: guessing
    /// would let this node join another cluster with its chunks.
    fn load(dir: &Path) -> anyhow::Result<Identity> {
        let path = dir.join(IDENTITY_FILE);
        let identity: Identity = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                anyhow::anyhow!("{} is unreadable ({e}); fix or restore it", path.display())
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Identity::default()),
            Err(e) => return Err(anyhow::anyhow!("{}: {e}", path.display())),
        };
        anyhow::ensure!(
            identity.version <= IDENTITY_VERSION,
            "{} is of version {}, newer than this tinydfs reads ({IDENTITY_VERSION}); run a newer \
             tinydfs",
            path.display(),
            identity.version
        );
        Ok(identity)
    }

    /// Writes the identity durably (temporary file, fsync, rename, folder fsync; blocking).
    fn save(&self, dir: &Path) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(self)?;
        let tmp = dir.join(format!("{IDENTITY_FILE}.tmp"));
        std::fs::write(&tmp, bytes)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(tmp, dir.join(IDENTITY_FILE))?;
        std::fs::File::open(dir)?.sync_all()
    }
}

/// Locks the data folder and every disk folder for this process (the data folder once when it
/// is also a disk), creating them if missing. A folder another process holds is an error naming
/// it and its holder; so is a disk given twice.
pub fn lock_folders(config: &ChunkserverConfig) -> anyhow::Result<Vec<DirLock>> {
    let mut locks: Vec<DirLock> = Vec::new();
    // Canonical paths of the folders locked, the data folder first: two spellings of one
    // folder must not be locked twice (flock conflicts within one process too).
    let mut seen: Vec<PathBuf> = Vec::new();
    for dir in std::iter::once(&config.data_dir).chain(&config.disks) {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("creating {}: {e}", dir.display()))?;
        let canonical = dir
            .canonicalize()
            .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
        match seen.iter().position(|s| *s == canonical) {
            Some(0) => continue, // the data folder, also a disk
            Some(i) => anyhow::bail!(
                "{} and {} are the same folder; give each disk once",
                locks[i].dir().display(),
                dir.display()
            ),
            None => {}
        }
        // The error's own line: its source is in it already.
        locks.push(lock_dir(dir).map_err(|e| anyhow::anyhow!("{e}"))?);
        seen.push(canonical);
    }
    Ok(locks)
}

/// Why a chunkserver whose identity names no node must not register as a new one, if so: its
/// disks hold `chunks` chunks, which the cluster would then judge as a new, empty node's.
fn new_identity_refusal(
    data_dir: &Path,
    identity: &Identity,
    chunks: usize,
    accept_new_identity: bool,
) -> Option<String> {
    if identity.node_id.is_some() || chunks == 0 || accept_new_identity {
        return None;
    }
    Some(format!(
        "{} is missing or names no node, but the disks hold {chunks} chunks: this node would \
         register as a new one and its chunks be judged as a new node's; restore the file, or \
         start with --accept-new-identity to let the cluster judge them so",
        data_dir.join(IDENTITY_FILE).display()
    ))
}

/// Takes the folders and reads what is in them (blocking: listing chunk files and replaying
/// pack files reads the disks): the locks, the identity, the store. Refuses to go on as a new
/// node over chunks already on disk unless the configuration accepts it.
fn open_node(config: &ChunkserverConfig) -> anyhow::Result<(Identity, store::ChunkStore)> {
    let locks = lock_folders(config)?;
    let identity = Identity::load(&config.data_dir)?;
    let packing = store::PackConfig {
        max_chunk: config.pack_max,
        ..Default::default()
    };
    let store = store::ChunkStore::open_with(&config.chunk_dirs(), config.capacity, packing)?
        .keep_locked(locks);
    let chunks = store.count();
    if let Some(why) = new_identity_refusal(
        &config.data_dir,
        &identity,
        chunks,
        config.accept_new_identity,
    ) {
        anyhow::bail!(why);
    }
    if identity.node_id.is_none() && chunks > 0 {
        tracing::warn!(
            chunks,
            "no node identity: registering as a new node, as --accept-new-identity allows"
        );
    }
    Ok((identity, store))
}

/// Runs a chunkserver until `shutdown` completes, or until it cannot go on safely (its node
/// identity could not be saved): then it stops and answers why.
pub async fn run(
    config: ChunkserverConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    anyhow::ensure!(!config.secret.is_empty(), "the cluster secret is not set");
    anyhow::ensure!(!config.masters.is_empty(), "no master address given");
    // Before any internal client is built: they all follow it.
    let tls = config.internal_tls.apply(true)?;
    let opening = config.clone();
    let (identity, store) = tokio::task::spawn_blocking(move || open_node(&opening)).await??;
    let store = Arc::new(store);
    let (id_tx, id_rx) = watch::channel(identity.node_id);
    let server = Arc::new(api::Chunkserver {
        store: store.clone(),
        secret: config.secret.clone(),
        node_id: id_rx,
        client: tinydfs_proto::client::ChunkClient::new(config.secret.clone()),
        requests: Arc::new(tokio::sync::Semaphore::new(config.max_requests.max(1))),
        deadlines: api::Deadlines::new(Duration::from_millis(config.pipeline_stall_ms)),
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
    // A fatal failure of the heartbeat loop stops the server like a shutdown, then is answered.
    let (fatal_tx, fatal_rx) = tokio::sync::oneshot::channel::<anyhow::Error>();
    let hb = tokio::spawn(async move {
        let Err(e) = heartbeat_loop(config, store, identity, id_tx).await;
        let _ = fatal_tx.send(e);
    });
    let fatal: Arc<std::sync::Mutex<Option<anyhow::Error>>> = Default::default();
    let stop = {
        let fatal = fatal.clone();
        async move {
            tokio::select! {
                () = shutdown => {}
                Ok(e) = fatal_rx => {
                    tracing::error!(error = %e, "stopping");
                    *fatal.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                }
            }
        }
    };
    match tls {
        Some(tls) => {
            let listener = tinydfs_proto::tls::TlsListener::new(listener, tls)?;
            axum::serve(listener, api::router(server))
                .with_graceful_shutdown(stop)
                .await?
        }
        None => {
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            axum::serve(listener, api::router(server))
                .with_graceful_shutdown(stop)
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
    let fatal = fatal.lock().unwrap_or_else(|p| p.into_inner()).take();
    match fatal {
        Some(e) => Err(e),
        None => Ok(()),
    }
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

/// Registers with the master and sends heartbeats, for ever; answers only why it cannot go on
/// (the identity the master gave could not be saved).
async fn heartbeat_loop(
    config: ChunkserverConfig,
    store: Arc<store::ChunkStore>,
    mut identity: Identity,
    id_tx: watch::Sender<Option<u64>>,
) -> anyhow::Result<std::convert::Infallible> {
    let master = MasterClient::new(config.masters.clone(), config.secret.clone());
    let interval = Duration::from_millis(config.heartbeat_ms.max(10));
    let mut registered = false;
    // The request id of the registration until it succeeds (its retries are one request).
    let mut registration: u128 = rand::random();
    // Heartbeat rounds since the registration (full reports go on a schedule of them).
    let mut rounds = 0u32;
    // Masters that asked for a full report.
    let mut report_due: std::collections::HashSet<String> = Default::default();
    // The highest term a leader answered in: orders from lower terms are refused.
    let mut leader_term = 0u64;
    let mut lower_term_rounds = 0u32;
    // Leaders named by masters that are not among those given, with the rounds they have
    // been silent for.
    let mut named: std::collections::BTreeMap<String, u32> = Default::default();
    // Masters with a beat in flight, and where the beats' answers arrive.
    let mut busy: std::collections::HashSet<String> = Default::default();
    let (beats_tx, mut beats_rx) = tokio::sync::mpsc::unbounded_channel::<Beat>();
    // Internal requests carry it, and requests of another cluster are refused (api.rs).
    if let Some(c) = &identity.cluster_id {
        tinydfs_proto::http::set_cluster_id(c);
    }
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
                request_id: Some(registration),
            };
            match master.register(&req).await {
                Ok(reply) => {
                    let given = Identity {
                        version: IDENTITY_VERSION,
                        node_id: Some(reply.node_id),
                        cluster_id: Some(reply.cluster_id),
                    };
                    // Durable before this node acts as the registered one: a node that forgot
                    // its id would come back as a new node and obey orders meant for one.
                    if given != identity {
                        save_identity(&given, &config.data_dir).await?;
                    }
                    identity = given;
                    if let Some(c) = &identity.cluster_id {
                        tinydfs_proto::http::set_cluster_id(c);
                    }
                    let _ = id_tx.send(identity.node_id);
                    registered = true;
                    rounds = 0;
                    registration = rand::random();
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
        let round = tokio::time::Instant::now();
        // Lost ids first, then the report: a chunk lost in between is in neither and goes in
        // the next heartbeat's list, never in both. Copying the index of a full disk takes a
        // while under the store's lock: off the runtime threads. Every master gets a full
        // report on the schedule; one that asked for it (it leads anew, or restarted) at once.
        let full = rounds.is_multiple_of(FULL_REPORT_EVERY);
        let report = full || !report_due.is_empty();
        let s = store.clone();
        let (lost_mark, lost, chunks) = match tokio::task::spawn_blocking(move || {
            let (mark, lost) = s.lost();
            let chunks = report.then(|| {
                let mut report = s.report();
                if !lost.is_empty() {
                    let lost: std::collections::HashSet<_> = lost.iter().collect();
                    report.retain(|c| !lost.contains(&c.id));
                }
                report
            });
            (mark, lost, chunks)
        })
        .await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "building the chunk report failed");
                tokio::time::sleep(interval).await;
                continue;
            }
        };
        let (scrubbed, scrub_corrupt) = store.scrub_counters();
        let (bytes_written, _) = store.io_counters();
        let mut hb = Heartbeat {
            node_id,
            addr: config.advertise(),
            capacity: usage.capacity,
            free: usage.free,
            pid: std::process::id(),
            chunks: None,
            zone: config.zone.clone(),
            lost,
            disks: usage.disks,
            scrubbed,
            scrub_corrupt,
            bytes_written,
            beats_every_master: true,
            leader_term,
            added: store.take_added(),
        };
        let light = serde_json::to_vec(&hb)?;
        hb.chunks = chunks;
        let with_report = if hb.chunks.is_some() {
            serde_json::to_vec(&hb)?
        } else {
            light.clone()
        };
        // The masters given, and leaders named since that are not among them (added later).
        // A master still busy with an earlier beat (cut off, or judging a large report) is
        // skipped: a silent master never holds up the beats to the others.
        let targets: Vec<String> = master
            .masters()
            .iter()
            .chain(named.keys())
            .filter(|m| !busy.contains(*m))
            .cloned()
            .collect();
        for addr in targets {
            let sent_report = full || report_due.contains(&addr);
            let body = if sent_report { &with_report } else { &light }.clone();
            let (client, tx) = (master.clone(), beats_tx.clone());
            busy.insert(addr.clone());
            tokio::spawn(async move {
                let reply = client.heartbeat_to(&addr, body, sent_report).await;
                let _ = tx.send(Beat {
                    master: addr,
                    lost_mark,
                    sent_report,
                    reply,
                });
            });
        }
        rounds = rounds.wrapping_add(1);
        report_due.clear();
        // The answers of this round (and late ones of earlier rounds), until every master has
        // answered or the round's interval is over.
        let mut beats = Vec::new();
        let round_end = round + interval;
        while !busy.is_empty() {
            match tokio::time::timeout_at(round_end, beats_rx.recv()).await {
                Ok(Some(b)) => {
                    busy.remove(&b.master);
                    beats.push(b);
                }
                _ => break,
            }
        }
        let mut leader: Option<(u64, HeartbeatReply)> = None;
        for b in beats {
            if let Some(silent) = named.get_mut(&b.master) {
                *silent = if b.reply.is_ok() { 0 } else { *silent + 1 };
            }
            match b.reply {
                Ok(r) => {
                    if let Some(l) = &r.leader_addr {
                        if !master.masters().contains(l) && !named.contains_key(l) {
                            named.insert(l.clone(), 0);
                        }
                    }
                    // A report is sent again at once only to a master that did not just get one.
                    if r.report_wanted && !b.sent_report {
                        report_due.insert(b.master.clone());
                    }
                    // Masters older than terms in replies answer only while they lead.
                    let leads = r.leader || r.term == 0;
                    if leads && leader.as_ref().is_none_or(|(_, l)| r.term > l.term) {
                        leader = Some((b.lost_mark, r));
                    }
                }
                Err(e) => tracing::debug!(master = %b.master, error = %e, "heartbeat failed"),
            }
        }
        named.retain(|_, silent| *silent < FORGET_NAMED_AFTER);
        match leader {
            // The leader lost track of this node: what it was sent may be ignored, so the lost
            // ids stay queued for after the registration (which goes to the leader the masters
            // name, whoever asked for it).
            Some((_, r)) if r.reregister => {
                registered = false;
                rounds = 0;
            }
            // Orders of a leader deposed without knowing it: a later leader has answered. A
            // deposed leader steps down within an election timeout; one that goes on leading
            // in a lower term for many rounds leads a new group (restored from a backup).
            // Masters older than terms in answers (0) are not fenced.
            Some((_, r))
                if r.term != 0 && r.term < leader_term && lower_term_rounds < DEPOSED_PATIENCE =>
            {
                lower_term_rounds += 1;
                tracing::warn!(
                    term = r.term,
                    seen = leader_term,
                    "ignoring a deposed leader"
                );
            }
            Some((mark, r)) => {
                if r.term != 0 {
                    leader_term = r.term;
                }
                lower_term_rounds = 0;
                store.ack_lost(mark);
                obey_deletions(&store, &identity, r).await;
            }
            None => tracing::debug!("no master answered this heartbeat round as the leader"),
        }
        // A master that asked for a report gets it now rather than after an interval.
        if registered && report_due.is_empty() {
            tokio::time::sleep_until(round_end).await;
        }
    }
}

/// A heartbeat's answer from one master, with what the beat carried.
struct Beat {
    master: String,
    /// The mark of the lost ids the beat listed ([`store::ChunkStore::ack_lost`]).
    lost_mark: u64,
    sent_report: bool,
    reply: Result<HeartbeatReply, MetaError>,
}

/// Saves the identity the master gave this node (on a blocking thread: two fsyncs), or answers
/// the one-line reason the node must stop.
async fn save_identity(identity: &Identity, dir: &Path) -> anyhow::Result<()> {
    let (id, at) = (identity.clone(), dir.to_path_buf());
    let saved = tokio::task::spawn_blocking(move || id.save(&at))
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
    saved.map_err(|e| {
        anyhow::anyhow!(
            "cannot save the node identity (node {} of cluster {}) in {}: {e}; stopping, since \
             without it this node would come back as a new one",
            identity.node_id.unwrap_or_default(),
            identity.cluster_id.as_deref().unwrap_or("-"),
            dir.join(IDENTITY_FILE).display()
        )
    })
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

    fn tempdir(name: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("tinydfs-cs-{name}-{}", rand::random::<u32>()));
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    #[test]
    fn folders_are_locked_once_each_and_a_second_process_is_refused() {
        let root = tempdir("locks");
        let config = ChunkserverConfig {
            data_dir: root.join("data"),
            ..Default::default()
        };
        // The data folder is the only disk: locked once.
        let held = lock_folders(&config).unwrap();
        assert_eq!(held.len(), 1);
        // Another holder (flock conflicts between two opens, as between two processes) is
        // refused with one line naming the folder and the holder.
        let err = lock_folders(&config).unwrap_err().to_string();
        assert!(
            err.contains(&config.data_dir.display().to_string()),
            "{err}"
        );
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        assert!(!err.contains('\n'), "{err}");
        drop(held);
        // Disks of their own, the data folder among them under another spelling.
        let disks = ChunkserverConfig {
            disks: vec![root.join("d1"), root.join("data/."), root.join("d2")],
            ..config.clone()
        };
        let held = lock_folders(&disks).unwrap();
        let dirs: Vec<&Path> = held.iter().map(|l| l.dir()).collect();
        assert_eq!(
            dirs,
            vec![root.join("data"), root.join("d1"), root.join("d2")]
        );
        let err = lock_folders(&disks).unwrap_err().to_string();
        assert!(err.contains("in use"), "{err}");
        drop(held);
        // One disk given twice would be judged twice by this process: refused.
        let twice = ChunkserverConfig {
            disks: vec![root.join("d1"), root.join("d1/")],
            ..config
        };
        let err = lock_folders(&twice).unwrap_err().to_string();
        assert!(err.contains("same folder"), "{err}");
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_node_without_identity_refuses_to_start_over_chunks_unless_accepted() {
        let root = tempdir("identity");
        let mut config = ChunkserverConfig {
            data_dir: root.join("data"),
            ..Default::default()
        };
        // A new, empty folder starts as a new node; the lock file is not taken for a chunk.
        let (identity, store) = open_node(&config).unwrap();
        assert_eq!(identity.node_id, None);
        assert!(config
            .data_dir
            .join(tinydfs_proto::lock::LOCK_FILE)
            .exists());
        assert_eq!(store.count(), 0);
        assert!(store.report().is_empty());
        // Chunks on disk, a chunk file and a packed one, then the identity is lost.
        store
            .write_whole(
                tinydfs_proto::ChunkId(1),
                bytes::Bytes::from_static(b"x"),
                1,
                crc32c::crc32c(b"x"),
            )
            .unwrap();
        let big = vec![7u8; (store.pack_max() + 1) as usize];
        store
            .write_whole(
                tinydfs_proto::ChunkId(2),
                big.clone().into(),
                big.len() as u64,
                crc32c::crc32c(&big),
            )
            .unwrap();
        drop(store);
        let refused = |config: &ChunkserverConfig| match open_node(config) {
            Ok(_) => panic!("started over chunks without an identity"),
            Err(e) => e.to_string(),
        };
        let err = refused(&config);
        assert!(err.contains("2 chunks"), "{err}");
        assert!(err.contains("--accept-new-identity"), "{err}");
        assert!(err.contains("identity.json"), "{err}");
        assert!(!err.contains('\n'), "{err}");
        // An identity that names no node is no better.
        let nameless = Identity {
            version: IDENTITY_VERSION,
            node_id: None,
            cluster_id: Some("c-1".into()),
        };
        nameless.save(&config.data_dir).unwrap();
        refused(&config);
        // The operator accepts a new identity for these chunks.
        config.accept_new_identity = true;
        let (_, store) = open_node(&config).unwrap();
        assert_eq!(store.count(), 2);
        drop(store);
        // A node that knows its id starts with its chunks.
        config.accept_new_identity = false;
        let known = Identity {
            node_id: Some(4),
            ..nameless
        };
        known.save(&config.data_dir).unwrap();
        let (identity, store) = open_node(&config).unwrap();
        assert_eq!((identity, store.count()), (known.clone(), 2));
        drop(store);
        // An identity written by a newer version is not guessed at.
        let newer = Identity {
            version: IDENTITY_VERSION + 1,
            ..known
        };
        newer.save(&config.data_dir).unwrap();
        assert!(refused(&config).contains("newer"));
        std::fs::remove_dir_all(root).unwrap();
    }

    #[tokio::test]
    async fn an_identity_that_cannot_be_saved_is_a_one_line_error() {
        let root = tempdir("identity-save");
        // The temporary file's name is taken by a folder: the save fails.
        std::fs::create_dir_all(root.join("identity.json.tmp")).unwrap();
        let identity = Identity {
            version: IDENTITY_VERSION,
            node_id: Some(9),
            cluster_id: Some("c-9".into()),
        };
        let err = save_identity(&identity, &root)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("node 9 of cluster c-9"), "{err}");
        assert!(!err.contains('\n'), "{err}");
        std::fs::remove_dir_all(&root).unwrap();
        std::fs::create_dir_all(&root).unwrap();
        save_identity(&identity, &root).await.unwrap();
        assert_eq!(Identity::load(&root).unwrap(), identity);
        std::fs::remove_dir_all(root).unwrap();
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
