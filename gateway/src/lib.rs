//! The tinydfs gateway: the S3 API, the only public surface of a cluster.
//!
//! A gateway is stateless. It authenticates each request (AWS Signature V4), splits uploads into
//! chunks and streams each chunk once, to the head of a pipeline of chunkservers chosen by the
//! master, computing the MD5 (ETag) and the requested checksums on the way; it commits the object
//! record to the master only when every chunk is durable. Reads stream chunks from one replica and
//! fall over to another when one fails.
//!
//! - [`auth`]: SigV4 (header and presigned; parsing apart from verification), `aws-chunked`
//!   bodies, flexible checksums, POST policies.
//! - [`s3`]: the S3 handler: the typed router ([`s3::router`](mod@s3::router): every request is
//!   parsed once into an [`s3::Endpoint`] that authorization and dispatch both match on), the
//!   request and its body ([`s3::request`]), and one file per operation family.
//! - [`data`]: the data path: chunked, pipelined uploads and replica-failover reads.
//! - [`error`]: the S3 error type, the one place a failure becomes an S3 code and status;
//!   [`xml`]: S3 documents, written and read (with its own [`xml::XmlError`], so that it needs
//!   nothing of [`error`]); [`form`]: `multipart/form-data` bodies (browser POST uploads).
//! - [`keys`]: the cluster's access keys as this gateway knows them, and their reloads.
//! - [`limits`]: bounds on what a client may send or hold (header size, requests in flight,
//!   timeouts), each answered with the S3 error AWS gives.
//! - [`ops`]: S3 request metrics and the read-only operations listener.
//! - this file: configuration, the [`Gateway`] every handler shares, upload leases and the
//!   HTTP(S) listener.
//!
//! Calendar arithmetic (ISO 8601 dates of SigV4, policies and documents) is
//! `tinydfs_proto::time`'s, shared with the other roles.

pub mod auth;
pub mod data;
pub mod error;
pub mod form;
pub mod keys;
pub mod limits;
pub mod ops;
#[cfg(test)]
mod proptests;
pub mod s3;
pub mod xml;

pub use keys::{reload_keys, KeyCache};

use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tinydfs_proto::client::{ChunkClient, MasterClient};
use tinydfs_proto::tls;
use tinydfs_proto::NodeId;

/// Configuration of a gateway.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct GatewayConfig {
    /// Address of the S3 listener.
    pub listen: String,
    /// Internal addresses of the masters.
    pub masters: Vec<String>,
    /// Cluster secret for internal requests.
    pub secret: String,
    /// The S3 region this endpoint is (us-east-1 semantics when `us-east-1`).
    pub region: String,
    /// Access key id and secret accepted by the gateway.
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Chunk size for new objects.
    pub chunk_size: u64,
    /// Copies of each chunk.
    pub replicas: usize,
    /// Copies that must be durable when a pipeline member fails mid-write.
    pub min_replicas: usize,
    /// PEM certificate chain (leaf first, then intermediates) and key: serve HTTPS when both
    /// are set.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Seconds between checks of the certificate files for changes (a changed certificate is
    /// served to new connections without a restart); 0 reloads on SIGHUP only.
    pub tls_reload_secs: f64,
    /// Root domain for virtual-host-style addressing (`bucket.<domain>`); path-style always works.
    pub domain: Option<String>,
    /// Seconds between new upload leases (see [`keep_leases`]): the longest the chunks of an
    /// object deleted soon after its upload wait before they can be collected, plus the lease
    /// life (60 s).
    pub lease_rotate_secs: f64,
    /// Life of an upload lease: how long after this gateway dies its unfinished uploads' chunks
    /// become garbage.
    pub lease_ttl_secs: f64,
    /// Address of the read-only operations listener (health, metrics); empty for none.
    pub ops_listen: String,
    /// How often the access keys are reloaded from the masters (milliseconds).
    pub key_refresh_ms: u64,
    /// Most S3 requests served at once; beyond it a request is answered `503 SlowDown` at once
    /// rather than queued (see [`limits`]).
    pub max_requests: usize,
    /// How long a client has to send a request's head (and to finish a TLS handshake) before
    /// the connection is closed (milliseconds): slow-header ("slowloris") clients hold no
    /// connection longer.
    pub header_timeout_ms: u64,
    /// Longest silence in a request body before the request fails with `400 RequestTimeout`,
    /// and longest a client may read none of its response before its connection is closed
    /// (milliseconds).
    pub body_timeout_ms: u64,
    /// The chunkservers' pipeline stall deadline (milliseconds, at least 100): how long this
    /// gateway waits on a pipeline head is derived from it ([`data::PIPELINE_STALL_TIMEOUT`]).
    pub pipeline_stall_ms: u64,
    /// HTTPS to masters and chunkservers (`internal_ca` only: a gateway serves no internal
    /// listener).
    #[serde(flatten)]
    pub internal_tls: tls::InternalTls,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            listen: "127.0.0.1:9000".into(),
            masters: vec!["127.0.0.1:9100".into()],
            secret: String::new(),
            region: "us-east-1".into(),
            access_key_id: String::new(),
            secret_access_key: String::new(),
            chunk_size: tinydfs_proto::DEFAULT_CHUNK_SIZE,
            replicas: tinydfs_proto::DEFAULT_REPLICAS,
            min_replicas: tinydfs_proto::DEFAULT_MIN_REPLICAS,
            tls_cert: None,
            tls_key: None,
            tls_reload_secs: tls::DEFAULT_RELOAD_INTERVAL.as_secs_f64(),
            domain: None,
            lease_rotate_secs: DEFAULT_LEASE_ROTATE.as_secs_f64(),
            lease_ttl_secs: 60.0,
            key_refresh_ms: 2000,
            ops_listen: String::new(),
            max_requests: limits::DEFAULT_MAX_REQUESTS,
            header_timeout_ms: limits::DEFAULT_HEADER_TIMEOUT.as_millis() as u64,
            body_timeout_ms: limits::DEFAULT_BODY_TIMEOUT.as_millis() as u64,
            pipeline_stall_ms: data::PIPELINE_STALL_TIMEOUT.as_millis() as u64,
            internal_tls: Default::default(),
        }
    }
}

/// How long a chunkserver that failed a write is avoided by this gateway's placements: long
/// enough to cover the master's dead-node timeout, after which the master itself skips it.
pub const SUSPECT_FOR: Duration = Duration::from_secs(30);

/// How long a chunkserver outrun by a hedged read is asked last by reads: a few seconds cover
/// a pause or a cut until the master declares the node dead, and a merely busy node is back
/// in turn soon (sooner still once it serves a read).
pub const SLOW_READER_FOR: Duration = Duration::from_secs(5);

/// Everything a request handler needs.
pub struct Gateway {
    pub config: GatewayConfig,
    pub master: MasterClient,
    pub chunks: ChunkClient,
    /// Chunkservers that failed a write recently, with when.
    pub suspects: Mutex<HashMap<NodeId, Instant>>,
    /// Chunkservers outrun by a hedged read lately, with when: asked last by reads for
    /// [`SLOW_READER_FOR`] or until they serve a read, never kept out of placements (slowness
    /// under load is not failure).
    pub slow_readers: Mutex<HashMap<NodeId, Instant>>,
    /// A small-object batch is being sent down a second pipeline (`data::hedged_batch`).
    pub hedging: std::sync::atomic::AtomicBool,
    /// Pipelines the master placed ahead of need, handed to new chunks while fresh.
    pub pipelines: Mutex<data::PipelineCache>,
    /// Small chunks on their way, sent down pipelines in batches.
    pub small_writes: data::SmallWrites,
    /// The upload leases new chunk ids are named under.
    pub leases: Mutex<Leases>,
    pub metrics: ops::S3Metrics,
    /// The cluster's access keys by id, refreshed from the masters every `key_refresh_ms`.
    pub keys: std::sync::RwLock<KeyCache>,
    /// Key fetches started so far (see [`KeyCache`]).
    pub key_fetches: std::sync::atomic::AtomicU64,
    /// When a request last made the keys reload.
    pub keys_reloaded: Mutex<Option<Instant>>,
    /// Permits for requests in flight (`max_requests`); a request that finds none is answered
    /// `503 SlowDown`.
    pub in_flight: Arc<tokio::sync::Semaphore>,
    /// Buckets' CORS rules as recently read, for preflights and `Origin` requests.
    pub cors: s3::cors::CorsCache,
}

/// An upload lease. Each upload holds an `Arc` of the lease its chunks are named under until it
/// has committed them: a held lease is renewed, an unheld old one is left to expire, after
/// which the master may collect its unreferenced chunks.
#[derive(Debug)]
pub struct UploadLease {
    pub id: u32,
}

/// The lease new uploads take and older ones still held by uploads in flight.
#[derive(Debug, Default)]
pub struct Leases {
    current: Option<(Arc<UploadLease>, Instant)>,
    old: Vec<Arc<UploadLease>>,
}

impl Gateway {
    /// Remembers that `node` failed a write, so that the client's retry is placed elsewhere.
    pub fn suspect(&self, node: NodeId) {
        if let Ok(mut s) = self.suspects.lock() {
            s.insert(node, Instant::now());
        }
    }

    /// Remembers that `node` was outrun by a hedged read (`read_ok` forgets it again).
    pub fn slow_reader(&self, node: NodeId) {
        if let Ok(mut s) = self.slow_readers.lock() {
            s.insert(node, Instant::now());
        }
    }

    /// `node` served a read: it is no longer asked last.
    pub fn read_ok(&self, node: NodeId) {
        if let Ok(mut s) = self.slow_readers.lock() {
            if !s.is_empty() {
                s.remove(&node);
            }
        }
    }

    /// Nodes reads ask last: those that failed a write or were outrun by a read lately.
    pub fn asked_last(&self) -> Vec<NodeId> {
        let mut nodes = self.suspects();
        if let Ok(mut s) = self.slow_readers.lock() {
            s.retain(|_, at| at.elapsed() < SLOW_READER_FOR);
            nodes.extend(s.keys().copied());
        }
        nodes
    }

    /// Nodes to avoid in new pipelines.
    pub fn suspects(&self) -> Vec<NodeId> {
        match self.suspects.lock() {
            Ok(mut s) => {
                s.retain(|_, at| at.elapsed() < SUSPECT_FOR);
                s.keys().copied().collect()
            }
            Err(_) => Vec::new(),
        }
    }

    /// The lease a new upload names its chunks under; none before the first is granted.
    pub fn hold_lease(&self) -> Option<Arc<UploadLease>> {
        let l = self.leases.lock().ok()?;
        l.current.as_ref().map(|(lease, _)| lease.clone())
    }
}

/// The S3 listener's TLS acceptor, serving a certificate that reloads when its files change.
fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> anyhow::Result<(tokio_rustls::TlsAcceptor, Arc<tls::ReloadingCert>)> {
    let cert = Arc::new(tls::ReloadingCert::new(cert, key)?);
    let config = tls::server_config(cert.clone())?;
    Ok((tokio_rustls::TlsAcceptor::from(Arc::new(config)), cert))
}

/// How long in-flight S3 requests may run after the gateway is told to stop.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(8);

/// Default time between new upload leases.
pub const DEFAULT_LEASE_ROTATE: Duration = Duration::from_secs(300);

/// The life of this gateway's leases.
fn lease_ttl_ms(gw: &Gateway) -> u64 {
    (gw.config.lease_ttl_secs * 1000.0) as u64
}

/// Keeps this gateway's upload leases: renews the current one and the old ones uploads still
/// hold, lets the others expire, and takes a new current lease every `lease_rotate_secs` so
/// that the chunks of deleted objects written under the old one become garbage the master may
/// collect (a lease that lived forever would keep them).
async fn keep_leases(gw: Arc<Gateway>) {
    let rotate = Duration::from_secs_f64(gw.config.lease_rotate_secs);
    // Renewed at a third of its life, so two renewals in a row may fail.
    let every = Duration::from_secs_f64(gw.config.lease_ttl_secs / 3.0).min(rotate);
    loop {
        tokio::time::sleep(every).await;
        let (held, due) = match gw.leases.lock() {
            Ok(mut l) => {
                l.old.retain(|lease| Arc::strong_count(lease) > 1);
                let due = l
                    .current
                    .as_ref()
                    .is_none_or(|(_, taken)| taken.elapsed() >= rotate);
                (l.old.iter().map(|lease| lease.id).collect::<Vec<_>>(), due)
            }
            Err(_) => return,
        };
        // Concurrently: one slow renewal must not starve the others.
        futures_util::future::join_all(held.into_iter().map(|id| renew_old(&gw, id))).await;
        // The current lease is renewed also when it is about to be displaced, so that uploads
        // holding it keep a whole life until the next round renews it as an old one.
        renew_lease(&gw).await;
        if due {
            try_take_lease(&gw).await; // retried next round if no master answers
        }
    }
}

/// Renews an old lease an upload still holds; forgets it when it is gone (its upload's commit
/// will then fail and the client retries).
async fn renew_old(gw: &Gateway, id: u32) {
    use tinydfs_proto::meta::{MetaError, MetaWrite};
    match gw
        .master
        .write(MetaWrite::RenewLease {
            lease: id,
            ttl_ms: Some(lease_ttl_ms(gw)),
        })
        .await
    {
        Ok(_) => {}
        Err(MetaError::NoSuchLease) => {
            tracing::warn!(lease = id, "an old upload lease expired");
            if let Ok(mut l) = gw.leases.lock() {
                l.old.retain(|lease| lease.id != id);
            }
        }
        Err(e) => tracing::warn!(lease = id, error = %e, "cannot renew an old upload lease yet"),
    }
}

/// Takes a new current lease, retrying until a master answers; the previous one joins the old.
async fn take_lease(gw: &Gateway) {
    while !try_take_lease(gw).await {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Asks once for a new current lease; the previous one joins the old. False if it failed.
async fn try_take_lease(gw: &Gateway) -> bool {
    use tinydfs_proto::meta::{MetaReply, MetaWrite};
    let write = MetaWrite::AcquireLease {
        holder: gw.config.listen.clone(),
        ttl_ms: Some(lease_ttl_ms(gw)),
    };
    match gw.master.write(write).await {
        Ok(MetaReply::Lease { id, .. }) => {
            if let Ok(mut l) = gw.leases.lock() {
                let fresh = (Arc::new(UploadLease { id }), Instant::now());
                if let Some((previous, _)) = l.current.replace(fresh) {
                    l.old.push(previous);
                }
            }
            true
        }
        Ok(other) => {
            tracing::warn!(reply = ?other, "unexpected answer to a lease request");
            false
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot take an upload lease yet");
            false
        }
    }
}

/// Renews the current lease, or takes a new one if it expired (a long partition from the
/// masters) or there is none yet.
async fn renew_lease(gw: &Gateway) {
    use tinydfs_proto::meta::{MetaError, MetaWrite};
    let current = gw
        .leases
        .lock()
        .ok()
        .and_then(|l| l.current.as_ref().map(|(lease, _)| lease.id));
    let Some(id) = current else {
        try_take_lease(gw).await;
        return;
    };
    match gw
        .master
        .write(MetaWrite::RenewLease {
            lease: id,
            ttl_ms: Some(lease_ttl_ms(gw)),
        })
        .await
    {
        Ok(_) => {}
        Err(MetaError::NoSuchLease) => {
            tracing::warn!(lease = id, "upload lease expired; taking a new one");
            try_take_lease(gw).await;
        }
        Err(e) => tracing::warn!(error = %e, "cannot renew the upload lease yet"),
    }
}

/// How often a gateway tells the masters it is alive (for the status report only).
const GATEWAY_BEAT_INTERVAL: Duration = Duration::from_secs(3);

async fn report_to_masters(gw: Arc<Gateway>) {
    let beat = tinydfs_proto::meta::GatewayBeat {
        addr: gw.config.listen.clone(),
        pid: std::process::id(),
    };
    loop {
        if let Err(e) = gw.master.gateway_beat(&beat).await {
            tracing::debug!(error = %e, "gateway heartbeat failed");
        }
        tokio::time::sleep(GATEWAY_BEAT_INTERVAL).await;
    }
}

/// Runs a gateway until `shutdown` completes.
pub async fn run(
    config: GatewayConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    anyhow::ensure!(!config.secret.is_empty(), "the cluster secret is not set");
    anyhow::ensure!(!config.masters.is_empty(), "no master address given");
    // Before any internal client is built: they all follow it.
    config.internal_tls.apply(false)?;
    anyhow::ensure!(
        !config.access_key_id.is_empty() && !config.secret_access_key.is_empty(),
        "no S3 access key configured"
    );
    anyhow::ensure!(
        config.chunk_size >= 1024,
        "chunk size must be at least 1 KiB"
    );
    anyhow::ensure!(
        (0.3..=3600.0).contains(&config.lease_ttl_secs),
        "the lease life must be between 0.3 and 3600 seconds"
    );
    anyhow::ensure!(
        (0.1..=86400.0).contains(&config.lease_rotate_secs),
        "the lease rotation must be between 0.1 and 86400 seconds"
    );
    anyhow::ensure!(config.max_requests >= 1, "max_requests must be at least 1");
    anyhow::ensure!(
        config.header_timeout_ms >= 100 && config.body_timeout_ms >= 100,
        "the header and body timeouts must be at least 100 ms"
    );
    anyhow::ensure!(
        (0.0..=86400.0).contains(&config.tls_reload_secs),
        "tls_reload_secs must be between 0 and 86400"
    );
    let (tls, cert) = match (&config.tls_cert, &config.tls_key) {
        (Some(c), Some(k)) => {
            let (acceptor, cert) = tls_acceptor(c, k)?;
            (Some(acceptor), Some(cert))
        }
        (None, None) => (None, None),
        _ => anyhow::bail!("give both a TLS certificate and a key, or neither"),
    };
    let _cert_watch = cert.map(|cert| {
        let every = Duration::from_secs_f64(config.tls_reload_secs);
        AbortOnDrop(tokio::spawn(cert.watch(every)))
    });
    let mut registry = tinydfs_proto::ops::registry();
    let gw = Arc::new(Gateway {
        metrics: ops::S3Metrics::new(&mut registry),
        master: MasterClient::new(config.masters.clone(), config.secret.clone()),
        chunks: ChunkClient::new(config.secret.clone()),
        suspects: Mutex::new(HashMap::new()),
        slow_readers: Mutex::new(HashMap::new()),
        hedging: std::sync::atomic::AtomicBool::new(false),
        pipelines: Mutex::new(data::PipelineCache::default()),
        small_writes: data::SmallWrites::default(),
        leases: Mutex::new(Leases::default()),
        keys: std::sync::RwLock::new(KeyCache::default()),
        key_fetches: std::sync::atomic::AtomicU64::new(0),
        keys_reloaded: Mutex::new(None),
        in_flight: Arc::new(tokio::sync::Semaphore::new(config.max_requests)),
        cors: Default::default(),
        config: config.clone(),
    });
    // Up before the first lease, so that a gateway waiting for the masters can be watched.
    // Read-only and quick: stopped with the process, without a grace period.
    let ops_server = if config.ops_listen.is_empty() {
        None
    } else {
        let l = tokio::net::TcpListener::bind(&config.ops_listen).await?;
        tracing::info!(addr = %config.ops_listen, "operations listener");
        let app = ops::router(registry);
        Some(AbortOnDrop(tokio::spawn(async move {
            axum::serve(l, app).await
        })))
    };
    // Take the first upload lease before serving: every chunk id is named under one. A gateway
    // that cannot reach a master yet still stops when told to.
    tokio::pin!(shutdown);
    tokio::select! {
        _ = async { take_lease(&gw).await; keys::load_keys(&gw).await } => {}
        _ = &mut shutdown => return Ok(()),
    }
    tokio::spawn(keys::refresh_keys(gw.clone()));
    tokio::spawn(report_to_masters(gw.clone()));
    tokio::spawn(keep_leases(gw.clone()));
    let listener = tokio::net::TcpListener::bind(&config.listen).await?;
    tracing::info!(addr = %config.listen, tls = tls.is_some(), "S3 gateway listening");
    let app = s3::router(gw);
    // In-flight requests finish (up to SHUTDOWN_GRACE) when the gateway is asked to stop.
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let header_timeout = Duration::from_millis(config.header_timeout_ms);
    let http = limits::http1_builder(header_timeout);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Nagle off: a response's head and body go out at once (hyper writes them separately).
        let _ = tcp.set_nodelay(true);
        let tcp = limits::WriteTimeout::new(tcp, Duration::from_millis(config.body_timeout_ms));
        let service = TowerToHyperService::new(app.clone());
        let tls = tls.clone();
        let watcher = graceful.watcher();
        let http = http.clone();
        tokio::spawn(async move {
            let result = match tls {
                // A handshake gets the same bound as a request head: a client that opens
                // connections and stalls in the handshake holds none for long.
                Some(acceptor) => {
                    match tokio::time::timeout(header_timeout, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let conn = http.serve_connection(TokioIo::new(stream), service);
                            watcher.watch(conn).await
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    }
                }
                None => {
                    let conn = http.serve_connection(TokioIo::new(tcp), service);
                    watcher.watch(conn).await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still running after the shutdown grace period; closing them");
    }
    drop(ops_server);
    Ok(())
}

/// A task aborted when dropped (on every way out of [`run`]).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
