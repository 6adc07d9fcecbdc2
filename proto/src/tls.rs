//! TLS material shared by every role (rustls with the `ring` provider).
//!
//! - [`ReloadingCert`]: a server certificate read from PEM files and re-read when they change
//!   (checked every few seconds by [`ReloadingCert::watch`], or at once on SIGHUP), so that a
//!   renewed certificate is served to new connections without a restart. A file that does not
//!   load (half written, wrong key) is logged and the previous certificate kept.
//! - [`server_config`] / [`client_config`]: the rustls configurations of a listener and of a
//!   client that trusts one CA only (internal TLS).
//! - [`use_internal_tls`] / [`internal_client_config`]: the client side of internal TLS, set once
//!   per process; [`crate::http`] builds every internal HTTP client from it.
//! - [`TlsListener`]: an internal listener serving HTTPS; [`InternalTls`]: a node's settings.
//!
//! This module depends on no other module of the crate: the HTTP plumbing depends on it.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, SystemTime};

/// Default time between two checks of a certificate's files for changes: a renewed
/// certificate is served within this long, for the cost of two `stat` calls.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(10);

/// Why TLS material could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {error}")]
    Pem {
        path: PathBuf,
        error: rustls::pki_types::pem::Error,
    },
    #[error("{0}: no certificate in the file")]
    NoCertificate(PathBuf),
    #[error("{path}: {error}")]
    Rustls { path: PathBuf, error: rustls::Error },
    #[error("{0}")]
    Config(#[from] rustls::Error),
}

/// The crypto provider every tinydfs TLS configuration uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a PEM certificate chain (the leaf first, then the intermediates; a root may follow and
/// is ignored by clients) and its private key, and checks that the key is the leaf's.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let pem = |path: &Path| {
        let path = path.to_path_buf();
        move |error| TlsError::Pem { path, error }
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(pem(cert))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem(cert))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(cert.to_path_buf()));
    }
    let der = PrivateKeyDer::from_pem_file(key).map_err(pem(key))?;
    CertifiedKey::from_der(chain, der, &provider()).map_err(|error| TlsError::Rustls {
        path: key.to_path_buf(),
        error,
    })
}

/// What identifies a version of the certificate files: both modification times and lengths.
type Stamp = Option<[(SystemTime, u64); 2]>;

fn stamp(cert: &Path, key: &Path) -> Stamp {
    let one = |p: &Path| {
        let m = std::fs::metadata(p).ok()?;
        Some((m.modified().ok()?, m.len()))
    };
    Some([one(cert)?, one(key)?])
}

/// A server certificate that follows its files (see the module doc).
#[derive(Debug)]
pub struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    /// The files' stamp when last read, successfully or not: a bad file is reported once, and
    /// read again when either file changes (a certificate written before its key).
    seen: Mutex<Stamp>,
}

impl ReloadingCert {
    /// Loads the certificate; fails if the files do not load now.
    pub fn new(cert: &Path, key: &Path) -> Result<ReloadingCert, TlsError> {
        let seen = stamp(cert, key);
        let loaded = load_certified_key(cert, key)?;
        Ok(ReloadingCert {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: RwLock::new(Arc::new(loaded)),
            seen: Mutex::new(seen),
        })
    }

    /// The certificate served now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Re-reads the files if they changed since last read (always if `force`). Answers whether
    /// a new certificate is now served; a file that does not load leaves the old one in place.
    pub fn reload(&self, force: bool) -> Result<bool, TlsError> {
        let now = stamp(&self.cert, &self.key);
        {
            let Ok(mut seen) = self.seen.lock() else {
                return Ok(false);
            };
            if !force && *seen == now {
                return Ok(false);
            }
            *seen = now;
        }
        let loaded = load_certified_key(&self.cert, &self.key)?;
        if let Ok(mut c) = self.current.write() {
            *c = Arc::new(loaded);
        }
        Ok(true)
    }

    /// Reloads when the files change (checked every `every`; never if zero) and at once on
    /// SIGHUP. Runs until the process ends.
    pub async fn watch(self: Arc<Self>, every: Duration) {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGHUP; certificates reload on change only");
                None
            }
        };
        let mut tick = (!every.is_zero()).then(|| {
            let mut t = tokio::time::interval(every);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        loop {
            let force = tokio::select! {
                Some(()) = async { hup.as_mut()?.recv().await } => true,
                _ = async {
                    match tick.as_mut() {
                        Some(t) => t.tick().await,
                        None => std::future::pending().await,
                    }
                } => false,
                else => return,
            };
            match self.reload(force) {
                Ok(true) => tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded"),
                Ok(false) => {}
                Err(e) => tracing::error!(
                    error = %e,
                    "the new TLS certificate does not load; still serving the previous one"
                ),
            }
        }
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// A server configuration serving `cert` (HTTP/1.1 only, as tinydfs's listeners speak).
pub fn server_config(cert: Arc<ReloadingCert>) -> Result<rustls::ServerConfig, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A client configuration trusting only the CA certificates in the PEM file `ca`.
pub fn client_config(ca: &Path) -> Result<rustls::ClientConfig, TlsError> {
    let pem = |error| TlsError::Pem {
        path: ca.to_path_buf(),
        error,
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(pem)? {
        roots
            .add(cert.map_err(pem)?)
            .map_err(|error| TlsError::Rustls {
                path: ca.to_path_buf(),
                error,
            })?;
    }
    if roots.is_empty() {
        return Err(TlsError::NoCertificate(ca.to_path_buf()));
    }
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The client side of internal TLS, set once when a process starts (see [`use_internal_tls`]).
static INTERNAL_TLS: OnceLock<rustls::ClientConfig> = OnceLock::new();

/// Makes every internal client of this process speak HTTPS, trusting only the CA certificates
/// in the PEM file `ca`. Call it before the first client is built; later calls change nothing.
pub fn use_internal_tls(ca: &Path) -> Result<(), TlsError> {
    let config = client_config(ca)?;
    let _ = INTERNAL_TLS.set(config);
    Ok(())
}

/// The client configuration of internal TLS, if this process uses it.
pub fn internal_client_config() -> Option<&'static rustls::ClientConfig> {
    INTERNAL_TLS.get()
}

/// Longest an internal TLS handshake may take: a peer that connects and stalls holds no
/// connection slot for longer.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes finished but not yet taken by the server loop.
const ACCEPT_QUEUE: usize = 64;

/// The TLS acceptor of an internal listener when `cert` and `key` are given, with the
/// certificate reloaded every `reload` (and on SIGHUP) by a task of the current runtime.
pub fn acceptor(
    cert: &Path,
    key: &Path,
    reload: Duration,
) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    let cert = Arc::new(ReloadingCert::new(cert, key)?);
    let config = server_config(cert.clone())?;
    tokio::spawn(cert.watch(reload));
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// An [`axum::serve::Listener`] serving TLS: connections are accepted and their handshakes run
/// concurrently by a task (bounded by [`HANDSHAKE_TIMEOUT`]), so a slow or plain-HTTP peer
/// delays no one; `accept` hands over finished handshakes. Nagle is off, as on the plain
/// listeners.
pub struct TlsListener {
    ready: tokio::sync::mpsc::Receiver<(TlsStream, std::net::SocketAddr)>,
    local: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

type TlsStream = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;

impl TlsListener {
    pub fn new(
        tcp: tokio::net::TcpListener,
        acceptor: tokio_rustls::TlsAcceptor,
    ) -> std::io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let (tx, ready) = tokio::sync::mpsc::channel(ACCEPT_QUEUE);
        let task = tokio::spawn(async move {
            loop {
                let (stream, peer) = match tcp.accept().await {
                    Ok(v) => v,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if tx.is_closed() {
                    return;
                }
                let _ = stream.set_nodelay(true);
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "internal TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(%peer, "internal TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { ready, local, task })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(v) => v,
            // The accepting task is gone (only when the listener is dropped): accept no more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// Internal TLS settings of a node (flattened into each role's configuration): its listener
/// serves HTTPS with `internal_tls_cert` / `internal_tls_key`, and its clients trust only
/// `internal_ca`. Masters and chunkservers, which both serve and call peers, take all three or
/// none; a gateway, which serves no internal listener, takes the CA only.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct InternalTls {
    /// PEM certificate chain of the internal listener (leaf first).
    pub internal_tls_cert: Option<PathBuf>,
    /// PEM private key of that certificate.
    pub internal_tls_key: Option<PathBuf>,
    /// PEM file of the CA(s) internal peers' certificates must chain to.
    pub internal_ca: Option<PathBuf>,
}

impl InternalTls {
    /// Applies the settings to this process: internal clients speak HTTPS if a CA is given,
    /// and the answer is the listener's acceptor if the node serves one (`serves`) with TLS.
    /// Call it first thing in a role's `run`, before any internal client is built.
    pub fn apply(
        &self,
        serves: bool,
    ) -> Result<Option<tokio_rustls::TlsAcceptor>, InternalTlsError> {
        let listener = match (&self.internal_tls_cert, &self.internal_tls_key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => return Err(InternalTlsError::Incomplete),
        };
        match (serves, listener.is_some(), self.internal_ca.is_some()) {
            (true, true, true) | (_, false, false) => {}
            (false, true, _) => return Err(InternalTlsError::NoListener),
            (true, _, _) => return Err(InternalTlsError::Incomplete),
            (false, false, true) => {}
        }
        if let Some(ca) = &self.internal_ca {
            use_internal_tls(ca)?;
        }
        Ok(match listener {
            Some((c, k)) => Some(acceptor(c, k, DEFAULT_RELOAD_INTERVAL)?),
            None => None,
        })
    }
}

/// Inconsistent internal TLS settings.
#[derive(Debug, thiserror::Error)]
pub enum InternalTlsError {
    #[error(
        "internal TLS needs --internal-tls-cert, --internal-tls-key and --internal-ca together"
    )]
    Incomplete,
    #[error("a gateway serves no internal listener: give it --internal-ca only")]
    NoListener,
    #[error(transparent)]
    Tls(#[from] TlsError),
}
