//! HTTP clients for the internal APIs: the master (following the leader) and chunkservers.

use crate::meta::*;
use crate::types::*;
use crate::{CLUSTER_HEADER, REQUEST_ID_HEADER, SECRET_HEADER, VERSION_HEADER, WIRE_VERSION};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// How long a metadata call keeps retrying (leader changes, a restarting master) before giving up.
pub const MASTER_RETRY_WINDOW: Duration = Duration::from_secs(20);
/// First pause between retries; doubled up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// Short, so that a client notices a new leader soon after the election.
const MAX_BACKOFF: Duration = Duration::from_millis(250);
/// Connecting to a live peer on a LAN takes milliseconds; a dead one should fail over quickly.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest silence on a chunk stream before the peer is treated as failed (a paused or
/// partitioned node sends no reset): long enough for an fsync of a 64 MiB chunk on a slow disk.
pub const STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// TCP keepalive on internal connections, so a vanished peer is noticed on idle pooled sockets.
const TCP_KEEPALIVE: Duration = Duration::from_secs(15);

/// Paths of the master's internal API.
pub mod paths {
    pub const WRITE: &str = "/internal/v1/meta/write";
    /// Several writes in one log entry: a JSON array of writes, answered by an array.
    pub const WRITE_BATCH: &str = "/internal/v1/meta/write-batch";
    pub const READ: &str = "/internal/v1/meta/read";
    pub const PLACEMENT: &str = "/internal/v1/placement";
    pub const BATCH: &str = "/internal/v1/batch";
    pub const REGISTER: &str = "/internal/v1/register";
    pub const HEARTBEAT: &str = "/internal/v1/heartbeat";
    pub const STATUS: &str = "/internal/v1/status";
    pub const MEMBERS: &str = "/internal/v1/members";
    pub const GATEWAY_BEAT: &str = "/internal/v1/gateway-heartbeat";
    pub const FSCK: &str = "/internal/v1/fsck";
    pub const DRAIN: &str = "/internal/v1/drain";
    pub const REBALANCE: &str = "/internal/v1/rebalance";
    pub const BACKUP: &str = "/internal/v1/backup";
    pub const BUCKET_USAGE: &str = "/internal/v1/buckets";
    pub const HEALTH: &str = "/health";
    /// Health path every node answers, the S3 gateway included (`_` cannot start a bucket name).
    pub const HEALTH_ALT: &str = "/_health";
    /// Chunk data: `{CHUNK}/{id}`.
    pub const CHUNK: &str = "/internal/v1/chunk";
}

/// The client side of internal TLS, set once when a process starts (see [`use_internal_tls`]).
static INTERNAL_TLS: OnceLock<rustls::ClientConfig> = OnceLock::new();

/// Makes every internal client of this process speak HTTPS, trusting only the CA certificates
/// in the PEM file `ca`. Call it before the first client is built; later calls change nothing.
pub fn use_internal_tls(ca: &std::path::Path) -> Result<(), crate::tls::TlsError> {
    let config = crate::tls::client_config(ca)?;
    let _ = INTERNAL_TLS.set(config);
    Ok(())
}

/// `https` when this process uses internal TLS, else `http`.
pub fn scheme() -> &'static str {
    if INTERNAL_TLS.get().is_some() {
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
        .pool_idle_timeout(Duration::from_secs(30))
        .no_proxy();
    if let Some(tls) = INTERNAL_TLS.get() {
        builder = builder.use_preconfigured_tls(tls.clone()).https_only(true);
    }
    builder.build().unwrap_or_default()
}

/// Adds the headers every internal request carries.
pub fn internal_headers(
    rb: reqwest::RequestBuilder,
    secret: &str,
    cluster_id: &str,
) -> reqwest::RequestBuilder {
    rb.header(SECRET_HEADER, secret)
        .header(CLUSTER_HEADER, cluster_id)
        .header(VERSION_HEADER, WIRE_VERSION.to_string())
}

/// Batches of writes in flight at once per client (as for the gateway's chunk batches: fewer,
/// larger batches mean fewer log syncs).
const WRITE_BATCHES_IN_FLIGHT: usize = 2;
/// The most writes one batch carries.
const WRITE_BATCH_MAX: usize = 256;
/// How long a client sends writes one by one after a master refused a batch.
const NO_BATCHES_FOR: Duration = Duration::from_secs(60);

type WriteWaiter = tokio::sync::oneshot::Sender<Result<MetaReply, MetaError>>;

/// Writes waiting to be sent, and the batches in flight.
#[derive(Default)]
struct WriteQueue {
    waiting: Vec<(WriteRequest, WriteWaiter)>,
    in_flight: usize,
}

/// A client of the master group: finds the leader among the given addresses and follows it.
///
/// Concurrent writes through one client are committed together: a writer that finds one of
/// [`WRITE_BATCHES_IN_FLIGHT`] slots free sends every write waiting as one request, which the
/// leader appends as one log entry (one replication round and one fsync for all); the others
/// wait for their answers or for a free slot. A lone write goes at once, on its own.
pub struct MasterClient {
    http: reqwest::Client,
    masters: Vec<String>,
    secret: String,
    /// Index of the master believed to lead, or an address learned from a NotLeader answer.
    leader: Mutex<String>,
    writes: Mutex<WriteQueue>,
    freed: tokio::sync::Notify,
    /// Until when writes go one by one: the leader did not know batches (an older master,
    /// during an upgrade); batches are tried again after [`NO_BATCHES_FOR`].
    no_batches_until: Mutex<Option<std::time::Instant>>,
}

impl MasterClient {
    /// A client for the masters at `masters` (`host:port` of their internal listeners).
    pub fn new(masters: Vec<String>, secret: String) -> Self {
        let first = masters.first().cloned().unwrap_or_default();
        MasterClient {
            http: http_client(),
            masters,
            secret,
            leader: Mutex::new(first),
            writes: Mutex::new(WriteQueue::default()),
            freed: tokio::sync::Notify::new(),
            no_batches_until: Mutex::new(None),
        }
    }

    /// Applies a metadata change through the replicated log. Retries reuse one request id, so a
    /// write is applied once however often it is sent.
    pub async fn write(&self, write: MetaWrite) -> Result<MetaReply, MetaError> {
        self.commit(write, Vec::new()).await
    }

    /// Like [`MasterClient::write`], telling the leader where the write's new chunks are stored.
    pub async fn commit(
        &self,
        write: MetaWrite,
        locations: Vec<(ChunkId, Vec<NodeId>)>,
    ) -> Result<MetaReply, MetaError> {
        let req = WriteRequest {
            request_id: rand::random(),
            write,
            locations,
        };
        let unbatched = self
            .no_batches_until
            .lock()
            .map(|u| u.is_some_and(|t| std::time::Instant::now() < t))
            .unwrap_or(false);
        if unbatched {
            return self.call(paths::WRITE, &req).await;
        }
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        self.queue().waiting.push((req, tx));
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Ok(answer) = rx.try_recv() {
                return answer;
            }
            if let Some(batch) = self.take_writes() {
                // Given back even if this caller is cancelled on the way.
                let _slot = WriteSlot(self);
                self.send_writes(batch).await;
                continue;
            }
            tokio::select! {
                answer = &mut rx => {
                    return answer.unwrap_or_else(|_| Err(MetaError::Unavailable(
                        "the batch carrying this write was abandoned".into(),
                    )));
                }
                _ = freed => {}
            }
        }
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, WriteQueue> {
        self.writes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The writes waiting (up to a batch), if a slot is free; the slot is taken.
    fn take_writes(&self) -> Option<Vec<(WriteRequest, WriteWaiter)>> {
        let mut q = self.queue();
        if q.waiting.is_empty() || q.in_flight >= WRITE_BATCHES_IN_FLIGHT {
            return None;
        }
        q.in_flight += 1;
        let n = q.waiting.len().min(WRITE_BATCH_MAX);
        Some(q.waiting.drain(..n).collect())
    }

    /// Sends writes (one request for all) and hands each its answer.
    async fn send_writes(&self, mut batch: Vec<(WriteRequest, WriteWaiter)>) {
        if batch.len() == 1 {
            if let Some((req, tx)) = batch.pop() {
                let _ = tx.send(self.call(paths::WRITE, &req).await);
            }
            return;
        }
        let (reqs, waiters): (Vec<WriteRequest>, Vec<WriteWaiter>) = batch.into_iter().unzip();
        let answers: Result<Vec<Result<MetaReply, MetaError>>, MetaError> =
            self.call(paths::WRITE_BATCH, &reqs).await;
        match answers {
            Ok(answers) if answers.len() == waiters.len() => {
                for (tx, a) in waiters.into_iter().zip(answers) {
                    let _ = tx.send(a);
                }
            }
            Err(MetaError::BadRequest(e)) if e.contains("HTTP 404") => {
                tracing::info!("the master does not take batched writes; sending them one by one");
                if let Ok(mut u) = self.no_batches_until.lock() {
                    *u = Some(std::time::Instant::now() + NO_BATCHES_FOR);
                }
                for (req, tx) in reqs.into_iter().zip(waiters) {
                    let _ = tx.send(self.call(paths::WRITE, &req).await);
                }
            }
            other => {
                let e = match other {
                    Err(e) => e,
                    Ok(_) => MetaError::Unavailable("a batch got a short answer".into()),
                };
                for tx in waiters {
                    let _ = tx.send(Err(e.clone()));
                }
            }
        }
    }

    /// Reads metadata from the leader.
    pub async fn read(&self, read: MetaRead) -> Result<MetaReply, MetaError> {
        self.call(paths::READ, &read).await
    }

    /// Asks for pipelines for `count` new chunks.
    pub async fn placement(
        &self,
        count: usize,
        replicas: usize,
        exclude: Vec<NodeId>,
    ) -> Result<Placement, MetaError> {
        self.call(
            paths::PLACEMENT,
            &PlacementRequest {
                count,
                replicas,
                exclude,
            },
        )
        .await
    }

    pub async fn register(&self, req: &RegisterRequest) -> Result<RegisterReply, MetaError> {
        self.call(paths::REGISTER, req).await
    }

    pub async fn heartbeat(&self, hb: &Heartbeat) -> Result<HeartbeatReply, MetaError> {
        self.call(paths::HEARTBEAT, hb).await
    }

    pub async fn gateway_beat(&self, beat: &GatewayBeat) -> Result<(), MetaError> {
        self.call(paths::GATEWAY_BEAT, beat).await
    }

    pub async fn status(&self) -> Result<ClusterStatus, MetaError> {
        self.call(paths::STATUS, &()).await
    }

    /// Checks every object's chunks.
    pub async fn fsck(&self) -> Result<FsckReport, MetaError> {
        self.call(paths::FSCK, &()).await
    }

    /// A consistent copy of the metadata (a `Backup` of the master crate), as the JSON text the
    /// leader wrote (kept raw: its 128-bit ids do not survive a detour through numbers).
    pub async fn backup(&self) -> Result<Box<serde_json::value::RawValue>, MetaError> {
        self.call(paths::BACKUP, &()).await
    }

    /// Every bucket with its object count and bytes.
    pub async fn bucket_usage(&self) -> Result<Vec<BucketUsage>, MetaError> {
        self.call(paths::BUCKET_USAGE, &()).await
    }

    /// Starts or cancels draining a chunkserver (by id or address); answers its id.
    pub async fn drain(&self, req: &DrainRequest) -> Result<NodeId, MetaError> {
        self.call(paths::DRAIN, req).await
    }

    /// Starts (`true`) or stops a rebalance; answers the nodes' usage as the master sees it.
    pub async fn rebalance(&self, start: bool) -> Result<RebalanceStatus, MetaError> {
        self.call(paths::REBALANCE, &start).await
    }

    /// Adds or removes a master; answers the new voter set.
    pub async fn change_members(
        &self,
        change: &MembershipChange,
    ) -> Result<Vec<NodeId>, MetaError> {
        self.call(paths::MEMBERS, change).await
    }

    fn leader(&self) -> String {
        self.leader.lock().map(|l| l.clone()).unwrap_or_default()
    }

    fn set_leader(&self, addr: String) {
        if let Ok(mut l) = self.leader.lock() {
            *l = addr;
        }
    }

    /// Moves on to the next master in the list after `current`.
    fn rotate(&self, current: &str) {
        let pos = self.masters.iter().position(|m| m == current);
        let next = match pos {
            Some(i) => self.masters[(i + 1) % self.masters.len()].clone(),
            None => self.masters.first().cloned().unwrap_or_default(),
        };
        self.set_leader(next);
    }

    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        path: &str,
        body: &Req,
    ) -> Result<Resp, MetaError> {
        let body = serde_json::to_vec(body).map_err(|e| MetaError::BadRequest(e.to_string()))?;
        let deadline = tokio::time::Instant::now() + MASTER_RETRY_WINDOW;
        let mut backoff = FIRST_BACKOFF;
        loop {
            let target = self.leader();
            let result = self.call_once::<Resp>(&target, path, body.clone()).await;
            let retry = match result {
                Ok(Ok(resp)) => return Ok(resp),
                Ok(Err(MetaError::NotLeader(Some(leader)))) if leader != target => {
                    self.set_leader(leader);
                    continue;
                }
                Ok(Err(MetaError::NotLeader(_))) => MetaError::NotLeader(None),
                Ok(Err(e)) => return Err(e),
                // No such path: an older master; asking again will not help.
                Err(e) if e.starts_with("HTTP 404") => {
                    return Err(MetaError::BadRequest(format!("master {target}: {e}")))
                }
                Err(e) => {
                    tracing::debug!(master = %target, error = %e, "master call failed");
                    self.rotate(&target);
                    MetaError::Unavailable(format!("master {target}: {e}"))
                }
            };
            if tokio::time::Instant::now() + backoff > deadline {
                return Err(retry);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn call_once<Resp: DeserializeOwned>(
        &self,
        target: &str,
        path: &str,
        body: Vec<u8>,
    ) -> Result<Result<Resp, MetaError>, String> {
        let rb = self
            .http
            .post(url(target, path))
            .header("content-type", "application/json")
            .timeout(Duration::from_secs(30))
            .body(body);
        let resp = internal_headers(rb, &self.secret, "")
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&bytes)
            ));
        }
        serde_json::from_slice(&bytes).map_err(|e| format!("bad reply: {e}"))
    }
}

/// A write slot taken by [`MasterClient::take_writes`], freed when dropped.
struct WriteSlot<'a>(&'a MasterClient);

impl Drop for WriteSlot<'_> {
    fn drop(&mut self) {
        self.0.queue().in_flight -= 1;
        self.0.freed.notify_waiters();
    }
}

/// The result of writing a chunk down a pipeline, as the pipeline's head reports it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PutChunkReply {
    /// Nodes of the pipeline that have the chunk durably on disk, head first.
    pub stored: Vec<NodeId>,
    pub len: u64,
    pub crc32c: u32,
}

/// Query of a chunk write: the rest of the pipeline after the receiving node.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PutChunkQuery {
    /// `id@addr` entries separated by commas, in pipeline order.
    #[serde(default)]
    pub next: String,
}

impl PutChunkQuery {
    pub fn encode(nodes: &[NodeAddr]) -> Self {
        let next = nodes
            .iter()
            .map(|n| format!("{}@{}", n.id, n.addr))
            .collect::<Vec<_>>()
            .join(",");
        PutChunkQuery { next }
    }

    pub fn decode(&self) -> Result<Vec<NodeAddr>, String> {
        self.next
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| {
                let (id, addr) = s.split_once('@').ok_or_else(|| format!("bad node {s}"))?;
                let id = id.parse().map_err(|_| format!("bad node id {id}"))?;
                Ok(NodeAddr {
                    id,
                    addr: addr.to_string(),
                })
            })
            .collect()
    }
}

/// An order to copy a chunk from a peer (re-replication), with what the copy must match.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReplicateOrder {
    pub source: NodeAddr,
    pub len: u64,
    pub crc32c: u32,
}

/// Query of a chunk read: a byte range of the chunk.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct GetChunkQuery {
    #[serde(default)]
    pub offset: u64,
    /// Bytes to read; the rest of the chunk when absent.
    pub len: Option<u64>,
}

/// Client side of the chunkserver data API.
#[derive(Clone)]
pub struct ChunkClient {
    http: reqwest::Client,
    secret: String,
}

impl ChunkClient {
    pub fn new(secret: String) -> Self {
        ChunkClient {
            http: http_client(),
            secret,
        }
    }

    /// Streams a chunk to `head`, which forwards it to `rest` while writing it.
    pub async fn put(
        &self,
        head: &NodeAddr,
        rest: &[NodeAddr],
        id: ChunkId,
        body: reqwest::Body,
        request_id: &str,
    ) -> Result<PutChunkReply, String> {
        let rb = self
            .http
            .put(url(&head.addr, &format!("{}/{id}", paths::CHUNK)))
            .query(&PutChunkQuery::encode(rest))
            .header(REQUEST_ID_HEADER, request_id)
            .body(body);
        self.send_for_reply(rb, &head.addr).await
    }

    /// Sends a batch of small chunks (a [`crate::batch`] body) to `head`, which forwards it to
    /// `rest` while writing it.
    pub async fn put_batch(
        &self,
        head: &NodeAddr,
        rest: &[NodeAddr],
        body: bytes::Bytes,
        request_id: &str,
    ) -> Result<crate::batch::PutBatchReply, String> {
        let rb = self
            .http
            .put(url(&head.addr, paths::BATCH))
            .query(&PutChunkQuery::encode(rest))
            .header(REQUEST_ID_HEADER, request_id)
            .body(body);
        self.send_for_reply(rb, &head.addr).await
    }

    /// Tells `target` to copy chunk `id` from `order.source`; answers once the copy is durable.
    pub async fn replicate(
        &self,
        target: &NodeAddr,
        id: ChunkId,
        order: &ReplicateOrder,
    ) -> Result<PutChunkReply, String> {
        let body = serde_json::to_vec(order).map_err(|e| e.to_string())?;
        let rb = self
            .http
            .post(url(
                &target.addr,
                &format!("{}/{id}/replicate", paths::CHUNK),
            ))
            .header("content-type", "application/json")
            .body(body);
        self.send_for_reply(rb, &target.addr).await
    }

    /// Sends an internal request and decodes the chunk write reply; errors name the peer.
    async fn send_for_reply<T: serde::de::DeserializeOwned>(
        &self,
        rb: reqwest::RequestBuilder,
        addr: &str,
    ) -> Result<T, String> {
        let resp = internal_headers(rb, &self.secret, "")
            .send()
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| format!("{addr}: {e}"))?;
        if !status.is_success() {
            return Err(format!(
                "{addr}: HTTP {status}: {}",
                String::from_utf8_lossy(&bytes)
            ));
        }
        serde_json::from_slice(&bytes).map_err(|e| format!("{addr}: bad reply: {e}"))
    }

    /// Opens a read of `len` bytes of a chunk from `offset`; the body streams.
    pub async fn get(
        &self,
        node: &NodeAddr,
        id: ChunkId,
        offset: u64,
        len: u64,
        request_id: &str,
    ) -> Result<reqwest::Response, String> {
        let rb = self
            .http
            .get(url(&node.addr, &format!("{}/{id}", paths::CHUNK)))
            .query(&GetChunkQuery {
                offset,
                len: Some(len),
            })
            .header(REQUEST_ID_HEADER, request_id);
        let resp = internal_headers(rb, &self.secret, "")
            .send()
            .await
            .map_err(|e| format!("{}: {e}", node.addr))?;
        if !resp.status().is_success() {
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            return Err(format!("{}: HTTP {status}: {text}", node.addr));
        }
        Ok(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::post;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[derive(Default)]
    struct Seen {
        singles: AtomicUsize,
        batches: AtomicUsize,
        batched_writes: AtomicUsize,
        not_found: AtomicUsize,
    }

    /// The bucket a write names, answered back as `Created(true)` for "b-<even>", `Done` else.
    fn answer(req: &WriteRequest) -> Result<MetaReply, MetaError> {
        match &req.write {
            MetaWrite::CreateBucket { bucket, .. } => Ok(match bucket.trim_start_matches("b-") {
                n if n.parse::<u32>().is_ok_and(|n| n % 2 == 0) => MetaReply::Created(true),
                _ => MetaReply::Done,
            }),
            _ => Err(MetaError::BadRequest("unexpected".into())),
        }
    }

    /// A stand-in master speaking the write API; `batches` says whether it has the batch path
    /// (an older master does not). Single writes take 100 ms, so that writers queue up.
    async fn master(batches: bool) -> (String, Arc<Seen>) {
        let seen = Arc::new(Seen::default());
        let (s1, s2, s3) = (seen.clone(), seen.clone(), seen.clone());
        let mut app = axum::Router::new().route(
            paths::WRITE,
            post(move |body: axum::body::Bytes| async move {
                s1.singles.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
                let req: WriteRequest = serde_json::from_slice(&body).unwrap();
                serde_json::to_vec(&answer(&req)).unwrap()
            }),
        );
        if batches {
            app = app.route(
                paths::WRITE_BATCH,
                post(move |body: axum::body::Bytes| async move {
                    let reqs: Vec<WriteRequest> = serde_json::from_slice(&body).unwrap();
                    s2.batches.fetch_add(1, Ordering::SeqCst);
                    s2.batched_writes.fetch_add(reqs.len(), Ordering::SeqCst);
                    let answers: Vec<_> = reqs.iter().map(answer).collect();
                    serde_json::to_vec(&Ok::<_, MetaError>(answers)).unwrap()
                }),
            );
        }
        let app = app.fallback(move || async move {
            s3.not_found.fetch_add(1, Ordering::SeqCst);
            axum::http::StatusCode::NOT_FOUND
        });
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move { axum::serve(l, app).await });
        (addr, seen)
    }

    async fn write_many(c: &MasterClient, n: u32) -> Vec<Result<MetaReply, MetaError>> {
        let writes = (0..n).map(|i| {
            c.write(MetaWrite::CreateBucket {
                bucket: format!("b-{i}"),
                owner: "me".into(),
            })
        });
        futures_util::future::join_all(writes).await
    }

    fn expected(n: u32) -> Vec<Result<MetaReply, MetaError>> {
        (0..n)
            .map(|i| {
                Ok(if i % 2 == 0 {
                    MetaReply::Created(true)
                } else {
                    MetaReply::Done
                })
            })
            .collect()
    }

    #[tokio::test]
    async fn concurrent_writes_travel_in_batches_and_each_gets_its_own_answer() {
        let (addr, seen) = master(true).await;
        let c = MasterClient::new(vec![addr], "s".into());
        assert_eq!(
            format!("{:?}", write_many(&c, 20).await),
            format!("{:?}", expected(20))
        );
        // The first writes find free slots and go alone; the rest wait and go together.
        let (singles, batches) = (
            seen.singles.load(Ordering::SeqCst),
            seen.batches.load(Ordering::SeqCst),
        );
        assert!(batches >= 1, "{singles} singles, {batches} batches");
        assert_eq!(singles + seen.batched_writes.load(Ordering::SeqCst), 20);
    }

    #[tokio::test]
    async fn a_master_without_batches_gets_every_write_alone() {
        let (addr, seen) = master(false).await;
        let c = MasterClient::new(vec![addr], "s".into());
        assert_eq!(
            format!("{:?}", write_many(&c, 8).await),
            format!("{:?}", expected(8))
        );
        assert_eq!(seen.singles.load(Ordering::SeqCst), 8);
        assert_eq!(seen.not_found.load(Ordering::SeqCst), 1, "one batch tried");
        // And from then on, without trying batches again for a while.
        assert_eq!(
            format!("{:?}", write_many(&c, 4).await),
            format!("{:?}", expected(4))
        );
        assert_eq!(seen.singles.load(Ordering::SeqCst), 12);
        assert_eq!(seen.not_found.load(Ordering::SeqCst), 1);
    }
}
