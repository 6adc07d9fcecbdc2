//! The plumbing every internal HTTP client shares: the scheme of this process (HTTPS with
//! internal TLS, see [`crate::tls::use_internal_tls`]), URLs, the reqwest client, the headers
//! every internal request carries, and [`CallError`], the typed failure of one call.
//!
//! It depends on [`crate::tls`] only; the clients of [`crate::client`] are built on it.

use crate::{CLUSTER_HEADER, SECRET_HEADER, VERSION_HEADER, WIRE_VERSION};
use reqwest::StatusCode;
use std::sync::Arc;
use std::time::Duration;

/// Connecting to a live peer on a LAN takes milliseconds; a dead one should fail over quickly.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// TCP keepalive on internal connections, so a vanished peer is noticed on idle pooled sockets.
const TCP_KEEPALIVE: Duration = Duration::from_secs(15);
/// How long an idle pooled connection is kept: periodic calls (heartbeats, key reloads) reuse
/// it rather than connect each time.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// `https` when this process uses internal TLS, else `http`.
pub fn scheme() -> &'static str {
    if crate::tls::internal_client_config().is_some() {
        "https"
    } else {
        "http"
    }
}

/// The URL of `path` on the internal listener at `addr`.
pub fn url(addr: &str, path: &str) -> String {
    format!("{}://{addr}{path}", scheme())
}

/// Builds the HTTP client every internal caller uses: no proxy, Nagle off, short connect
/// timeout; with internal TLS, verifying peers against the cluster's CA only.
pub fn http_client() -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .tcp_nodelay(true)
        .tcp_keepalive(TCP_KEEPALIVE)
        .connect_timeout(CONNECT_TIMEOUT)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .no_proxy();
    if let Some(tls) = crate::tls::internal_client_config() {
        builder = builder.use_preconfigured_tls(tls.clone()).https_only(true);
    }
    builder.build().unwrap_or_default()
}

/// The cluster this process belongs to, once it knows ([`set_cluster_id`]): sent on every
/// internal request, and checked on every one received ([`cluster_mismatch`]).
static CLUSTER_ID: std::sync::RwLock<String> = std::sync::RwLock::new(String::new());

/// Records the cluster this process belongs to (a master from its state, a chunkserver from
/// its identity).
pub fn set_cluster_id(id: &str) {
    if CLUSTER_ID.read().is_ok_and(|c| *c == id) {
        return;
    }
    if let Ok(mut ours) = CLUSTER_ID.write() {
        if *ours != id {
            *ours = id.to_string();
        }
    }
}

/// The cluster this process belongs to; empty until it knows.
pub fn cluster_id() -> String {
    CLUSTER_ID.read().map(|c| c.clone()).unwrap_or_default()
}

/// Why a request carrying cluster id `theirs` (its [`CLUSTER_HEADER`]) must be refused by a
/// node of cluster `ours`: both known and different. A sender or receiver that does not know
/// its cluster yet (a new node, a master before the cluster is named, a node of an older
/// version) is let through: the secret still guards the listener, and the registration and
/// heartbeat answers check cluster ids themselves.
pub fn cluster_mismatch(theirs: &str, ours: &str) -> Option<String> {
    (!theirs.is_empty() && !ours.is_empty() && theirs != ours)
        .then(|| format!("this request belongs to cluster {theirs}, not {ours}"))
}

/// Adds the headers every internal request carries; an empty `cluster_id` sends this process's
/// own ([`cluster_id`]).
pub fn internal_headers(
    rb: reqwest::RequestBuilder,
    secret: &str,
    cluster_id: &str,
) -> reqwest::RequestBuilder {
    let cluster = if cluster_id.is_empty() {
        self::cluster_id()
    } else {
        cluster_id.to_string()
    };
    rb.header(SECRET_HEADER, secret)
        .header(CLUSTER_HEADER, cluster)
        .header(VERSION_HEADER, WIRE_VERSION.to_string())
}

/// Why an internal HTTP call failed: the peer's error answer (with its status), no answer, or an
/// answer that does not decode. The texts name the peer; callers decide by kind
/// ([`CallError::status`], [`CallError::is_not_found`], …), never by reading the text.
///
/// It is `Clone` (the causes are shared) because one failed batch is the answer of every chunk
/// in it.
#[derive(Clone, Debug, thiserror::Error)]
pub enum CallError {
    /// The peer answered with an error status; `body` is its explanation.
    #[error("{addr}: HTTP {status}: {body}")]
    Status {
        addr: String,
        status: StatusCode,
        body: String,
    },
    /// No answer: connecting, sending or receiving failed (reqwest's own timeouts included).
    #[error("{addr}: {error}")]
    Transport {
        addr: String,
        error: Arc<reqwest::Error>,
    },
    /// The answer did not decode.
    #[error("{addr}: bad reply: {error}")]
    Decode {
        addr: String,
        error: Arc<serde_json::Error>,
    },
    /// The request could not be encoded, so it was not sent.
    #[error("cannot encode the request: {0}")]
    Encode(Arc<serde_json::Error>),
    /// The caller's own bound on the call ran out; the text says what did not finish.
    #[error("{0}")]
    TimedOut(String),
    /// Any other failure, said in words (an empty pipeline, a short answer).
    #[error("{0}")]
    Other(String),
}

impl CallError {
    /// A failure to reach `addr` or to hear its whole answer.
    pub fn transport(addr: &str, error: reqwest::Error) -> Self {
        CallError::Transport {
            addr: addr.to_string(),
            error: Arc::new(error),
        }
    }

    /// An answer from `addr` that does not decode.
    pub fn decode(addr: &str, error: serde_json::Error) -> Self {
        CallError::Decode {
            addr: addr.to_string(),
            error: Arc::new(error),
        }
    }

    /// The error answer `resp` of `addr` (its status and body).
    pub async fn from_response(addr: &str, resp: reqwest::Response) -> Self {
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        CallError::Status {
            addr: addr.to_string(),
            status,
            body,
        }
    }

    /// The peer's status when it answered with an error.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            CallError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The peer has no such path or thing (404): an older node, or a chunk it does not have.
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(StatusCode::NOT_FOUND)
    }

    /// The peer is out of space (507).
    pub fn is_insufficient_storage(&self) -> bool {
        self.status() == Some(StatusCode::INSUFFICIENT_STORAGE)
    }

    /// No answer in time, by the caller's bound or by reqwest's.
    pub fn is_timeout(&self) -> bool {
        match self {
            CallError::TimedOut(_) => true,
            CallError::Transport { error, .. } => error.is_timeout(),
            _ => false,
        }
    }
}

impl From<String> for CallError {
    fn from(s: String) -> Self {
        CallError::Other(s)
    }
}

impl From<&str> for CallError {
    fn from(s: &str) -> Self {
        CallError::Other(s.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_known_and_different_cluster_is_refused() {
        assert!(cluster_mismatch("a", "a").is_none());
        assert!(cluster_mismatch("", "a").is_none());
        assert!(cluster_mismatch("a", "").is_none());
        let why = cluster_mismatch("a", "b").unwrap();
        assert!(why.contains("belongs to cluster a, not b"), "{why}");
    }

    #[test]
    fn kinds_come_from_the_status_not_the_text() {
        let e = |status| CallError::Status {
            addr: "a:1".into(),
            status,
            body: "HTTP 507".into(),
        };
        assert!(e(StatusCode::NOT_FOUND).is_not_found());
        assert!(!e(StatusCode::NOT_FOUND).is_insufficient_storage());
        assert!(e(StatusCode::INSUFFICIENT_STORAGE).is_insufficient_storage());
        assert_eq!(
            e(StatusCode::NOT_FOUND).to_string(),
            "a:1: HTTP 404 Not Found: HTTP 507"
        );
        let other = CallError::from("HTTP 404");
        assert!(!other.is_not_found() && other.status().is_none());
        assert!(CallError::TimedOut("slow".into()).is_timeout());
    }
}
