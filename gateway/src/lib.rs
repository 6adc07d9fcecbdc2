//! The tinydfs gateway: the S3 API, the only public surface of a cluster.
//!
//! A gateway is stateless. It authenticates each request (AWS Signature V4), splits uploads into
//! chunks and streams each chunk once, to the head of a pipeline of chunkservers chosen by the
//! master, computing the MD5 (ETag) and the requested checksums on the way; it commits the object
//! record to the master only when every chunk is durable. Reads stream chunks from one replica and
//! fall over to another when one fails.
//!
//! - [`auth`]: SigV4 (header and presigned), `aws-chunked` bodies, flexible checksums.
//! - [`s3`]: the request router and one file per operation family.
//! - [`data`]: the data path: chunked, pipelined uploads and replica-failover reads.
//! - [`error`]: the S3 error type; [`xml`]: S3 documents.
//! - this file: configuration and the HTTP(S) listener.

pub mod auth;
pub mod data;
pub mod error;
pub mod s3;
pub mod xml;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tinydfs_proto::client::{ChunkClient, MasterClient};
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
    /// PEM certificate chain and key: serve HTTPS when both are set.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Root domain for virtual-host-style addressing (`bucket.<domain>`); path-style always works.
    pub domain: Option<String>,
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
            domain: None,
        }
    }
}

/// How long a chunkserver that failed a write is avoided by this gateway's placements: long
/// enough to cover the master's dead-node timeout, after which the master itself skips it.
pub const SUSPECT_FOR: Duration = Duration::from_secs(30);

/// Everything a request handler needs.
pub struct Gateway {
    pub config: GatewayConfig,
    pub master: MasterClient,
    pub chunks: ChunkClient,
    /// Chunkservers that failed a write recently, with when they failed.
    pub suspects: Mutex<HashMap<NodeId, Instant>>,
    /// The upload lease new chunk ids are named under (0 until the first one is granted).
    pub lease: std::sync::atomic::AtomicU32,
}

impl Gateway {
    /// Remembers that `node` failed a write, so the client's retry is placed elsewhere.
    pub fn suspect(&self, node: NodeId) {
        if let Ok(mut s) = self.suspects.lock() {
            s.insert(node, Instant::now());
        }
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

    /// The secret of an access key, if the key is known.
    pub fn secret_for(&self, access_key: &str) -> Option<String> {
        (access_key == self.config.access_key_id).then(|| self.config.secret_access_key.clone())
    }
}

fn tls_acceptor(cert: &PathBuf, key: &PathBuf) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| anyhow::anyhow!("{}: {e}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("{}: {e}", cert.display()))?;
    let key =
        PrivateKeyDer::from_pem_file(key).map_err(|e| anyhow::anyhow!("{}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// How long in-flight S3 requests may run after the gateway is told to stop.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(8);

/// How often the upload lease is renewed: a third of its life, so two renewals may fail.
const LEASE_RENEW_EVERY: Duration = Duration::from_secs(20);

/// Holds an upload lease for this gateway's chunks, renewing it, or taking a new one if it
/// expired (a long partition from the masters).
async fn keep_lease(gw: Arc<Gateway>) {
    loop {
        tokio::time::sleep(LEASE_RENEW_EVERY).await;
        renew_lease(&gw).await;
    }
}

/// Renews the lease (or takes one), retrying until a master answers.
async fn renew_lease(gw: &Gateway) {
    use std::sync::atomic::Ordering;
    use tinydfs_proto::meta::{MetaReply, MetaWrite};
    loop {
        let current = gw.lease.load(Ordering::Relaxed);
        let write = if current == 0 {
            MetaWrite::AcquireLease {
                holder: gw.config.listen.clone(),
            }
        } else {
            MetaWrite::RenewLease { lease: current }
        };
        match gw.master.write(write).await {
            Ok(MetaReply::Lease { id, .. }) => {
                gw.lease.store(id, Ordering::Relaxed);
                return;
            }
            Ok(_) | Err(tinydfs_proto::meta::MetaError::NoSuchLease) => {
                tracing::warn!(lease = current, "upload lease expired; taking a new one");
                gw.lease.store(0, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot renew the upload lease yet");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
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
    anyhow::ensure!(
        !config.access_key_id.is_empty() && !config.secret_access_key.is_empty(),
        "no S3 access key configured"
    );
    anyhow::ensure!(
        config.chunk_size >= 1024,
        "chunk size must be at least 1 KiB"
    );
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(c), Some(k)) => Some(tls_acceptor(c, k)?),
        (None, None) => None,
        _ => anyhow::bail!("give both a TLS certificate and a key, or neither"),
    };
    let gw = Arc::new(Gateway {
        master: MasterClient::new(config.masters.clone(), config.secret.clone()),
        chunks: ChunkClient::new(config.secret.clone()),
        suspects: Mutex::new(HashMap::new()),
        lease: std::sync::atomic::AtomicU32::new(0),
        config: config.clone(),
    });
    // Take the first upload lease before serving: every chunk id is named under one. A gateway
    // that cannot reach a master yet still stops when told to.
    tokio::pin!(shutdown);
    tokio::select! {
        _ = renew_lease(&gw) => {}
        _ = &mut shutdown => return Ok(()),
    }
    tokio::spawn(report_to_masters(gw.clone()));
    tokio::spawn(keep_lease(gw.clone()));
    let listener = tokio::net::TcpListener::bind(&config.listen).await?;
    tracing::info!(addr = %config.listen, tls = tls.is_some(), "S3 gateway listening");
    let app = s3::router(gw);
    // In-flight requests finish (up to SHUTDOWN_GRACE) when the gateway is asked to stop.
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
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
        let service = TowerToHyperService::new(app.clone());
        let tls = tls.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let builder = auto::Builder::new(TokioExecutor::new());
            let result = match tls {
                Some(acceptor) => match acceptor.accept(tcp).await {
                    Ok(stream) => {
                        let conn = builder.serve_connection(TokioIo::new(stream), service);
                        watcher.watch(conn.into_owned()).await
                    }
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                },
                None => {
                    let conn = builder.serve_connection(TokioIo::new(tcp), service);
                    watcher.watch(conn.into_owned()).await
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
    Ok(())
}
