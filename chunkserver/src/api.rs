//! The chunkserver's internal HTTP API.
//!
//! `PUT /internal/v1/chunk/{id}?next=...` receives a chunk and takes part in the write pipeline:
//! each frame is handed to a local writer thread and, at the same time, forwarded to the next
//! member; both channels are bounded, so a slow disk or a slow peer slows the sender instead of
//! filling memory. The reply lists the members that have the chunk durably (fsynced). If the next
//! member fails, the chunk is sent again from this node's finished copy to the member after it
//! (pipeline recovery), so one dead chunkserver costs one copy, not the write. A member that
//! makes no progress (takes no frame, owes an answer) for the stall deadline is dropped the same
//! way ([`Deadlines`]): a paused or cut-off peer sends no reset, and waiting it out stalled every
//! write through it.
//!
//! `GET /internal/v1/chunk/{id}?offset=&len=` streams a verified range. A replica found corrupt
//! on the way is dropped by the store (and reported lost), so the master copies it again.
//!
//! Write failures answer one-line messages: 507 Insufficient Storage when this node is out of
//! space (its file system or its configured capacity), 503 when its disk failed, 400 for a
//! stream that does not match its footer.

use crate::store::{ChunkStore, StoreError, WriteMsg};
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tinydfs_proto::batch::{self, PutBatchReply, MAX_BATCH_BYTES};
use tinydfs_proto::client::{
    paths, ChunkClient, GetChunkQuery, PutChunkQuery, PutChunkReply, ReplicateOrder,
    STREAM_IDLE_TIMEOUT,
};
use tinydfs_proto::frame::{footer, FooterSplitter, FOOTER_LEN};
use tinydfs_proto::http::CallError;
use tinydfs_proto::{ChunkId, NodeAddr, REQUEST_ID_HEADER};
use tokio::sync::{mpsc, watch};
use tokio::time::timeout;
use tracing::Instrument;

/// Frames buffered between the network and the disk writer, and toward the next member.
const PIPELINE_DEPTH: usize = 16;

/// How long a pipeline member may make no progress (take no frame, owe an answer) before it is
/// dropped from the write, which completes on the other members (the master's repair restores
/// the copy later). A healthy member on a LAN takes a frame in milliseconds and answers within
/// an fsync; a paused or cut-off one sends no reset, and waiting [`STREAM_IDLE_TIMEOUT`] (30 s)
/// for it stalled every write through it. Two seconds leave room for a disk's or a loaded
/// node's hiccup.
pub const PIPELINE_STALL_TIMEOUT: Duration = Duration::from_secs(2);
/// The shortest stall deadline taken (a configured one below it is raised to it): shorter, the
/// members of a busy node would be dropped while healthy.
const MIN_PIPELINE_STALL: Duration = Duration::from_millis(100);
/// The slowest rate at which a healthy member is expected to take in, sync or send a chunk's
/// bytes: the waits that depend on a chunk's size allow this rate on top of the stall deadline
/// (4 s more for a 64 MiB chunk, 16 ms for a 256 KiB one).
const SLOWEST_MEMBER_RATE: u64 = 16 << 20;

/// The deadlines of a member of a write pipeline, all derived from the stall deadline `s`
/// ([`crate::ChunkserverConfig::pipeline_stall_ms`]) and, for a chunk (or batch) of `len` bytes,
/// the size allowance `a` (`len` at [`SLOWEST_MEMBER_RATE`]).
///
/// The next member may itself be waiting, within its own deadlines, on the one after it; so
/// each wait covers the deadlines of the members below the one waited on, and a member is
/// never dropped for waiting on a silent one further down (which would drop a healthy member
/// and send the recovery copy to the silent one). The gateway's waits on a pipeline head
/// (`tinydfs_gateway::data`) follow the same arithmetic. With the defaults and 3 replicas: a
/// frame handoff waits 4 s at the head, 2 s at the middle member; the head waits 4 s + 2a for
/// the middle member's answer, then up to 2 s + 2a for a recovery.
#[derive(Clone, Copy, Debug)]
pub struct Deadlines {
    stall: Duration,
}

impl Deadlines {
    /// The deadlines for stall deadline `stall` (at least [`MIN_PIPELINE_STALL`]).
    pub fn new(stall: Duration) -> Self {
        Deadlines {
            stall: stall.max(MIN_PIPELINE_STALL),
        }
    }

    /// Handing a frame to the next member, which has `after` members after it: `s × (after +
    /// 1)`, as it may itself be held up for `s × after` handing a frame on before it drops its
    /// own next member and reads again.
    pub fn handoff(&self, after: usize) -> Duration {
        self.stall
            .saturating_mul(u32::try_from(after).unwrap_or(u32::MAX).saturating_add(1))
    }

    /// `len` bytes at [`SLOWEST_MEMBER_RATE`].
    fn allowance(len: u64) -> Duration {
        Duration::from_millis(len.saturating_mul(1000) / SLOWEST_MEMBER_RATE)
    }

    /// The longest a member with `after` members after it may take to answer for `len` bytes,
    /// counted from when the one before it has its own copy durable (they had the whole stream
    /// at about the same time):
    ///
    /// - `A(0) = s + a`: its own fsync, which may lag the one before it (disks shared or slower);
    /// - `A(1) = s + a + A(0)`: then its wait on the next member's answer;
    /// - `A(k) = s + a + A(k-1) + R(k-2)`: then a recovery around a failed next member
    ///   ([`Deadlines::recovery`]).
    ///
    /// So `A(1) = 2s + 2a` and `A(2) = 4s + 5a`. Counted bottom up: a long pipeline costs no
    /// more than its length to work out.
    pub fn answer(&self, len: u64, after: usize) -> Duration {
        let a = Self::allowance(len);
        let own = self.stall.saturating_add(a);
        // A(k-2) and A(k-1), starting at k = 1.
        let (mut two_below, mut one_below) = (Duration::ZERO, own);
        for k in 1..=after {
            let mut this = own.saturating_add(one_below);
            if k >= 2 {
                this = this.saturating_add(a).saturating_add(two_below);
            }
            (two_below, one_below) = (one_below, this);
        }
        one_below
    }

    /// `R(k) = a + A(k)`: sending a finished copy of `len` bytes to a member with `after`
    /// members after it (the bytes at the slowest rate, then its answer). With no member after
    /// it, `s + 2a`.
    pub fn recovery(&self, len: u64, after: usize) -> Duration {
        Self::allowance(len).saturating_add(self.answer(len, after))
    }
}

/// The request carrying a write to the next member. Aborted when dropped: a member that gave up
/// on the write, or on the next member, leaves no request waiting on a silent peer (the peer
/// then sees the stream cut short and keeps nothing).
struct Downstream<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for Downstream<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The answer of the next member, waited for at most `within`: its reply, or why there is none.
async fn answer_of<T>(
    down: &mut Downstream<Result<T, CallError>>,
    within: Duration,
) -> Result<T, CallError> {
    match timeout(within, &mut down.0).await {
        Ok(Ok(reply)) => reply,
        Ok(Err(e)) if e.is_cancelled() => Err("the next member stopped taking data".into()),
        Ok(Err(e)) => Err(e.to_string().into()),
        Err(_) => {
            down.0.abort();
            Err(CallError::TimedOut(format!(
                "the next member did not answer in {within:?}"
            )))
        }
    }
}

/// Shared state of the chunkserver's handlers.
pub struct Chunkserver {
    pub store: Arc<ChunkStore>,
    pub secret: String,
    /// Set once the master has given this node an id.
    pub node_id: watch::Receiver<Option<u64>>,
    pub client: ChunkClient,
    /// Chunk requests in flight ([`crate::ChunkserverConfig::max_requests`]).
    pub requests: Arc<tokio::sync::Semaphore>,
    /// How long this node waits on the next members of a pipeline
    /// ([`crate::ChunkserverConfig::pipeline_stall_ms`]).
    pub deadlines: Deadlines,
}

type Shared = Arc<Chunkserver>;

/// The internal router.
pub fn router(cs: Shared) -> Router {
    let internal = Router::new()
        .route(
            &format!("{}/{{id}}", paths::CHUNK),
            get(get_chunk).put(put_chunk).delete(delete_chunk),
        )
        .route(paths::BATCH, axum::routing::put(put_batch))
        .route(
            &format!("{}/{{id}}/replicate", paths::CHUNK),
            axum::routing::post(replicate),
        )
        .layer(middleware::from_fn_with_state(cs.clone(), limit_requests))
        .layer(middleware::from_fn_with_state(cs.clone(), require_secret))
        .layer(middleware::from_fn(request_span));
    Router::new()
        .route(paths::HEALTH, get(health))
        .route(paths::HEALTH_ALT, get(health))
        .merge(internal)
        .with_state(cs)
}

/// Runs each chunk request in a span carrying the request id its sender gave it (the gateway's
/// S3 request id), so that its log lines join the gateway's.
async fn request_span(req: Request, next: Next) -> Response {
    let rid = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    let span = tracing::info_span!(
        "chunk_request",
        request_id = %rid,
        method = %req.method(),
        path = %req.uri().path()
    );
    async move {
        let started = std::time::Instant::now();
        let resp = next.run(req).await;
        // Per chunk request: debug, as a 64 MiB chunk's copies would double the info volume.
        tracing::debug!(
            status = resp.status().as_u16(),
            ms = started.elapsed().as_millis() as u64,
            "chunk request"
        );
        resp
    }
    .instrument(span)
    .await
}

/// Serves a chunk request only while fewer than the limit are in flight (the slot is held until
/// the answer's body has been sent); answers 503 SlowDown at once otherwise.
async fn limit_requests(State(cs): State<Shared>, req: Request, next: Next) -> Response {
    let Ok(slot) = cs.requests.clone().try_acquire_owned() else {
        tracing::debug!("too many chunk requests; answering 503");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "SlowDown: too many chunk requests in flight on this node",
        )
            .into_response();
    };
    let resp = next.run(req).await;
    let (parts, body) = resp.into_parts();
    let body = body.into_data_stream().map(move |frame| {
        let _held = &slot;
        frame
    });
    Response::from_parts(parts, Body::from_stream(body))
}

async fn require_secret(State(cs): State<Shared>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(tinydfs_proto::SECRET_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !tinydfs_proto::secrets_equal(given, &cs.secret) {
        return (StatusCode::FORBIDDEN, "bad cluster secret").into_response();
    }
    // Orders and pipeline writes of another cluster (a master whose metadata was lost and
    // named a new cluster) are refused on every route.
    let theirs = req
        .headers()
        .get(tinydfs_proto::CLUSTER_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let ours = tinydfs_proto::http::cluster_id();
    if let Some(why) = tinydfs_proto::http::cluster_mismatch(theirs, &ours) {
        return (StatusCode::CONFLICT, why).into_response();
    }
    next.run(req).await
}

async fn health(State(cs): State<Shared>) -> Response {
    let body = serde_json::json!({
        "role": "chunkserver",
        "node_id": *cs.node_id.borrow(),
        "chunks": cs.store.count(),
    });
    ([("content-type", "application/json")], body.to_string()).into_response()
}

fn error(status: StatusCode, msg: impl std::fmt::Display) -> Response {
    (status, msg.to_string()).into_response()
}

/// The status a failed local chunk write answers.
fn write_status(e: &StoreError) -> StatusCode {
    match e {
        StoreError::NoSpace(_) => StatusCode::INSUFFICIENT_STORAGE,
        StoreError::DiskFailed { .. } | StoreError::NoDisk => StatusCode::SERVICE_UNAVAILABLE,
        StoreError::Corrupt(..) | StoreError::Aborted => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn parse_id(id: &str) -> Result<ChunkId, (StatusCode, String)> {
    id.parse()
        .map_err(|_| (StatusCode::BAD_REQUEST, format!("bad chunk id {id}")))
}

/// What every pipeline write needs to know: the members after this one, this node's id and the
/// request id to log with; or why the write is refused.
fn pipeline_write(
    cs: &Chunkserver,
    q: &PutChunkQuery,
    headers: &HeaderMap,
) -> Result<(Vec<NodeAddr>, u64, String), (StatusCode, String)> {
    let rest = q.decode().map_err(|e| (StatusCode::BAD_REQUEST, e))?;
    let Some(me) = *cs.node_id.borrow() else {
        return Err((
            StatusCode::SERVICE_UNAVAILABLE,
            "not registered with a master yet".to_string(),
        ));
    };
    let rid = headers
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string();
    Ok((rest, me, rid))
}

async fn put_chunk(
    State(cs): State<Shared>,
    Path(id): Path<String>,
    Query(q): Query<PutChunkQuery>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(r) => return r.into_response(),
    };
    let (rest, me, rid) = match pipeline_write(&cs, &q, &headers) {
        Ok(w) => w,
        Err((status, msg)) => return error(status, msg),
    };
    // A small chunk sent whole (its length known) is taken whole: one write per hop.
    let whole = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|n| *n <= cs.store.pack_max() + FOOTER_LEN as u64);
    let received = match whole {
        Some(n) => receive_whole(&cs, me, id, &rest, body, n, &rid).await,
        None => receive(&cs, me, id, &rest, body, &rid).await,
    };
    match received {
        Ok(reply) => reply_json(&reply),
        Err((status, msg)) => {
            tracing::warn!(chunk = %id, request_id = %rid, error = %msg, "chunk write failed");
            error(status, msg)
        }
    }
}

async fn put_batch(
    State(cs): State<Shared>,
    Query(q): Query<PutChunkQuery>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (rest, me, rid) = match pipeline_write(&cs, &q, &headers) {
        Ok(w) => w,
        Err((status, msg)) => return error(status, msg),
    };
    match receive_batch(&cs, me, &rest, body, &rid).await {
        Ok(reply) => reply_json(&reply),
        Err((status, msg)) => {
            tracing::warn!(request_id = %rid, error = %msg, "chunk batch write failed");
            error(status, msg)
        }
    }
}

/// Receives a batch of small chunks: checks every entry, sends the body on to the next member
/// as it came, writes the chunks locally with one sync, and answers which members hold them
/// all. A failed next member is recovered around by sending the batch to the one after it.
async fn receive_batch(
    cs: &Chunkserver,
    me: u64,
    rest: &[NodeAddr],
    body: Body,
    rid: &str,
) -> Result<PutBatchReply, (StatusCode, String)> {
    let read = timeout(
        STREAM_IDLE_TIMEOUT,
        axum::body::to_bytes(body, MAX_BATCH_BYTES),
    )
    .await;
    let bytes = match read {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            return Err((
                StatusCode::BAD_REQUEST,
                format!("batch body failed or is over {MAX_BATCH_BYTES} bytes: {e}"),
            ))
        }
        Err(_) => return Err((StatusCode::REQUEST_TIMEOUT, "upstream went silent".into())),
    };
    let entries = batch::decode(&bytes).map_err(|e| (StatusCode::BAD_REQUEST, e))?;
    let count = entries.len() as u32;
    let len = bytes.len() as u64;
    let send = |to: &[NodeAddr]| {
        let (next, after) = to.split_first()?;
        let client = cs.client.clone();
        let (next, after, rid, body) =
            (next.clone(), after.to_vec(), rid.to_string(), bytes.clone());
        Some(Downstream(tokio::spawn(async move {
            client.put_batch(&next, &after, body, &rid).await
        })))
    };
    let downstream = send(rest);
    let store = cs.store.clone();
    let span = tracing::Span::current();
    let written = tokio::task::spawn_blocking(move || span.in_scope(|| store.write_batch(entries)))
        .await
        .unwrap_or_else(|e| Err(StoreError::Io(std::io::Error::other(e.to_string()))));
    if let Err(e) = written {
        // Dropping the request to the next member aborts it.
        return Err((write_status(&e), format!("local write: {e}")));
    }
    let mut stored = vec![me];
    let Some(down) = downstream else {
        return Ok(PutBatchReply { stored, count });
    };
    let answer = |mut down: Downstream<Result<PutBatchReply, CallError>>, within| async move {
        match answer_of(&mut down, within).await {
            Ok(r) if r.count == count => Ok(r.stored),
            Ok(r) => Err(format!("the next member counted {} chunks", r.count)),
            Err(e) => Err(e.to_string()),
        }
    };
    // The next member had the whole batch before this node wrote its copy: it owes its answer
    // within its deadlines; a silent one is recovered around.
    let within = cs.deadlines.answer(len, rest.len().saturating_sub(1));
    match answer(down, within).await {
        Ok(more) => stored.extend(more),
        Err(e) => {
            tracing::warn!(request_id = %rid, error = %e, "batch pipeline member failed; recovering");
            if let Some(again) = send(&rest[1..]) {
                let within = cs.deadlines.recovery(len, rest.len().saturating_sub(2));
                match answer(again, within).await {
                    Ok(more) => stored.extend(more),
                    Err(e) => {
                        tracing::warn!(request_id = %rid, error = %e, "batch recovery failed")
                    }
                }
            }
        }
    }
    Ok(PutBatchReply { stored, count })
}

/// Receives a chunk, writing it locally and forwarding it down the pipeline.
async fn receive(
    cs: &Chunkserver,
    me: u64,
    id: ChunkId,
    rest: &[NodeAddr],
    body: Body,
    rid: &str,
) -> Result<PutChunkReply, (StatusCode, String)> {
    let (local_tx, local_rx) = mpsc::channel::<WriteMsg>(PIPELINE_DEPTH);
    let store = cs.store.clone();
    let span = tracing::Span::current();
    let writer = tokio::task::spawn_blocking(move || span.in_scope(|| store.write(id, local_rx)));

    // The next member gets the same bytes (footer included) through a bounded channel. An
    // error item aborts its request; and it checks the footer itself, so it never keeps a
    // stream that was cut short.
    let mut down_tx = None;
    let mut downstream = None;
    if let Some((next, after)) = rest.split_first() {
        let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(PIPELINE_DEPTH);
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        let client = cs.client.clone();
        let (next, after, rid) = (next.clone(), after.to_vec(), rid.to_string());
        downstream = Some(Downstream(tokio::spawn(async move {
            client
                .put(&next, &after, id, reqwest::Body::wrap_stream(stream), &rid)
                .await
        })));
        down_tx = Some(tx);
    }
    // How long the next member may take no frame (see [`Deadlines::handoff`]).
    let handoff = cs.deadlines.handoff(rest.len().saturating_sub(1));

    let abort_downstream = |tx: Option<mpsc::Sender<Result<Bytes, std::io::Error>>>| async move {
        if let Some(tx) = tx {
            let _ = tx.try_send(Err(std::io::Error::other("pipeline aborted")));
        }
    };
    let mut splitter = FooterSplitter::default();
    let mut stream = body.into_data_stream();
    loop {
        let frame = match timeout(STREAM_IDLE_TIMEOUT, stream.next()).await {
            Ok(None) => break,
            Ok(Some(Ok(d))) => d,
            Ok(Some(Err(e))) => {
                abort_downstream(down_tx.take()).await;
                // Dropping local_tx without Finish discards the partial chunk.
                return Err((
                    StatusCode::BAD_REQUEST,
                    format!("upstream body failed: {e}"),
                ));
            }
            Err(_) => {
                abort_downstream(down_tx.take()).await;
                return Err((StatusCode::REQUEST_TIMEOUT, "upstream went silent".into()));
            }
        };
        if let Some(tx) = &down_tx {
            let sent = timeout(handoff, tx.send(Ok(frame.clone()))).await;
            if !matches!(sent, Ok(Ok(()))) {
                // The next member is gone or stuck: drop it (its request is aborted, so it
                // keeps nothing), keep writing locally and recover after.
                tracing::warn!(chunk = %id, ?handoff, "next pipeline member stopped taking data");
                abort_downstream(down_tx.take()).await;
                if let Some(d) = &downstream {
                    d.0.abort();
                }
            }
        }
        for data in splitter.push(frame) {
            let sent = timeout(STREAM_IDLE_TIMEOUT, local_tx.send(WriteMsg::Data(data))).await;
            if !matches!(sent, Ok(Ok(()))) {
                // The writer failed or the disk is stuck (its error is reported below): the
                // chunk is not complete here, so the next member must not keep it either.
                abort_downstream(down_tx.take()).await;
                drop(local_tx);
                // A writer stuck in the kernel may never return: do not wait on it for ever.
                return Err(match timeout(STREAM_IDLE_TIMEOUT, writer).await {
                    Ok(Ok(Err(e))) => (write_status(&e), format!("local write: {e}")),
                    _ => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "local write stalled".into(),
                    ),
                });
            }
        }
    }
    let Some((len, crc32c)) = splitter.finish() else {
        abort_downstream(down_tx.take()).await;
        return Err((
            StatusCode::BAD_REQUEST,
            "chunk stream ended without its footer".into(),
        ));
    };
    let _ = local_tx.send(WriteMsg::Finish { len, crc32c }).await;
    drop(local_tx);
    drop(down_tx);
    gather(cs, me, id, rest, writer, downstream, rid).await
}

/// Receives a small chunk sent whole (`size` bytes with its footer): it is read at once, sent on
/// to the next member in one body and written locally.
async fn receive_whole(
    cs: &Chunkserver,
    me: u64,
    id: ChunkId,
    rest: &[NodeAddr],
    body: Body,
    size: u64,
    rid: &str,
) -> Result<PutChunkReply, (StatusCode, String)> {
    let bytes = match timeout(
        STREAM_IDLE_TIMEOUT,
        axum::body::to_bytes(body, size as usize),
    )
    .await
    {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            return Err((
                StatusCode::BAD_REQUEST,
                format!("upstream body failed: {e}"),
            ))
        }
        Err(_) => return Err((StatusCode::REQUEST_TIMEOUT, "upstream went silent".into())),
    };
    let mut splitter = FooterSplitter::default();
    let data: Vec<Bytes> = splitter.push(bytes.clone());
    let Some((len, crc32c)) = splitter.finish() else {
        return Err((
            StatusCode::BAD_REQUEST,
            "chunk stream ended without its footer".into(),
        ));
    };
    let data = data.into_iter().next().unwrap_or_default();
    let downstream = rest.split_first().map(|(next, after)| {
        let client = cs.client.clone();
        let (next, after, rid) = (next.clone(), after.to_vec(), rid.to_string());
        Downstream(tokio::spawn(async move {
            client
                .put(&next, &after, id, reqwest::Body::from(bytes), &rid)
                .await
        }))
    });
    let store = cs.store.clone();
    let span = tracing::Span::current();
    let writer = tokio::task::spawn_blocking(move || {
        span.in_scope(|| store.write_whole(id, data, len, crc32c))
    });
    gather(cs, me, id, rest, writer, downstream, rid).await
}

/// Waits for the local write and the rest of the pipeline, and answers which members have the
/// chunk; a failed next member is recovered around from the local copy.
async fn gather(
    cs: &Chunkserver,
    me: u64,
    id: ChunkId,
    rest: &[NodeAddr],
    writer: tokio::task::JoinHandle<Result<(u64, u32), StoreError>>,
    downstream: Option<Downstream<Result<PutChunkReply, CallError>>>,
    rid: &str,
) -> Result<PutChunkReply, (StatusCode, String)> {
    let written = match writer.await {
        Ok(Ok((len, crc))) => Ok((len, crc)),
        Ok(Err(e)) => Err((write_status(&e), format!("local write: {e}"))),
        Err(e) => Err((StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    };
    // The write failed here: the rest of the pipeline need not finish its copies (dropping
    // the request to the next member aborts it).
    let (len, crc) = written?;
    let mut stored = vec![me];
    if let Some(mut down) = downstream {
        // The rest of the pipeline has had the whole stream: it owes an answer within its
        // deadlines; a silent member is recovered around.
        let within = cs.deadlines.answer(len, rest.len().saturating_sub(1));
        match answer_of(&mut down, within).await {
            Ok(r) if r.len == len && r.crc32c == crc => stored.extend(r.stored),
            Ok(r) => tracing::error!(chunk = %id, len = r.len, "downstream copy differs; dropped"),
            Err(e) => {
                tracing::warn!(chunk = %id, error = %e, "pipeline member failed; recovering");
                if let Some(r) = recover(cs, id, &rest[1..], len, crc, rid).await {
                    stored.extend(r);
                }
            }
        }
    }
    Ok(PutChunkReply {
        stored,
        len,
        crc32c: crc,
    })
}

/// Sends the finished local copy to the members after a failed one. The copy is read verified:
/// a block found corrupt ends the stream (the member keeps nothing) and drops the local replica.
async fn recover(
    cs: &Chunkserver,
    id: ChunkId,
    rest: &[NodeAddr],
    len: u64,
    crc: u32,
    rid: &str,
) -> Option<Vec<u64>> {
    let (next, after) = rest.split_first()?;
    let data = read_stream(cs, id, 0, len);
    let body = data.chain(futures_util::stream::once(async move {
        Ok::<_, std::io::Error>(footer(len, crc))
    }));
    match timeout(
        cs.deadlines.recovery(len, after.len()),
        cs.client
            .put(next, after, id, reqwest::Body::wrap_stream(body), rid),
    )
    .await
    {
        Ok(Ok(r)) if r.len == len && r.crc32c == crc => Some(r.stored),
        Ok(Ok(_)) => None,
        Ok(Err(e)) => {
            tracing::warn!(chunk = %id, error = %e, "pipeline recovery failed");
            None
        }
        Err(_) => {
            tracing::warn!(chunk = %id, "pipeline recovery timed out");
            None
        }
    }
}

/// Copies a chunk from a peer (re-replication ordered by the master). The source verifies every
/// block it serves; the copy is kept only if its length and CRC32C match the master's record.
async fn replicate(
    State(cs): State<Shared>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(r) => return r.into_response(),
    };
    let order: ReplicateOrder = match serde_json::from_slice(&body) {
        Ok(o) => o,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let Some(me) = *cs.node_id.borrow() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "not registered with a master yet",
        );
    };
    if cs.store.meta(id) == Some((order.len, order.crc32c)) {
        return reply_json(&PutChunkReply {
            stored: vec![me],
            len: order.len,
            crc32c: order.crc32c,
        });
    }
    let resp = match cs
        .client
        .get(&order.source, id, 0, order.len, "replicate")
        .await
    {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_GATEWAY, e),
    };
    let (tx, rx) = mpsc::channel::<WriteMsg>(PIPELINE_DEPTH);
    let store = cs.store.clone();
    let writer = tokio::task::spawn_blocking(move || store.write(id, rx));
    let mut stream = resp.bytes_stream();
    loop {
        match timeout(STREAM_IDLE_TIMEOUT, stream.next()).await {
            Ok(None) => break,
            Ok(Some(Ok(data))) => {
                if tx.send(WriteMsg::Data(data)).await.is_err() {
                    break;
                }
            }
            Ok(Some(Err(e))) => {
                return error(StatusCode::BAD_GATEWAY, format!("source failed: {e}"))
            }
            Err(_) => return error(StatusCode::GATEWAY_TIMEOUT, "source went silent"),
        }
    }
    let _ = tx
        .send(WriteMsg::Finish {
            len: order.len,
            crc32c: order.crc32c,
        })
        .await;
    drop(tx);
    match writer.await {
        Ok(Ok((len, crc32c))) => reply_json(&PutChunkReply {
            stored: vec![me],
            len,
            crc32c,
        }),
        // This node cannot store it (full, or its disk failed): not the source's fault.
        Ok(Err(
            e @ (StoreError::NoSpace(_) | StoreError::DiskFailed { .. } | StoreError::NoDisk),
        )) => error(write_status(&e), format!("copy: {e}")),
        Ok(Err(e)) => error(StatusCode::BAD_GATEWAY, format!("copy rejected: {e}")),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

fn reply_json<T: serde::Serialize>(v: &T) -> Response {
    match serde_json::to_vec(v) {
        Ok(b) => ([("content-type", "application/json")], b).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn get_chunk(
    State(cs): State<Shared>,
    Path(id): Path<String>,
    Query(q): Query<GetChunkQuery>,
) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(r) => return r.into_response(),
    };
    let Some((size, _)) = cs.store.meta(id) else {
        return error(StatusCode::NOT_FOUND, format!("chunk {id} not found"));
    };
    let len = q.len.unwrap_or(size.saturating_sub(q.offset));
    if q.offset.checked_add(len).is_none_or(|end| end > size) {
        return error(StatusCode::RANGE_NOT_SATISFIABLE, "range outside the chunk");
    }
    let stream = read_stream(&cs, id, q.offset, len);
    Response::builder()
        .header("content-length", len)
        .body(Body::from_stream(stream))
        .unwrap_or_else(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e))
}

/// A verified read of `len` bytes from `offset` on a blocking thread, as a stream that ends
/// with an error item if the read fails (the store has then dealt with the replica or disk).
fn read_stream(
    cs: &Chunkserver,
    id: ChunkId,
    offset: u64,
    len: u64,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let (tx, rx) = mpsc::channel(4);
    let store = cs.store.clone();
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || {
        let _in_request = span.enter();
        if let Err(e) = store.read(id, offset, Some(len), tx) {
            // Corruption and disk failures are logged by the store.
            if !matches!(e, StoreError::Corrupt(..) | StoreError::DiskFailed { .. }) {
                tracing::warn!(chunk = %id, error = %e, "chunk read failed");
            }
        }
    });
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}

async fn delete_chunk(State(cs): State<Shared>, Path(id): Path<String>) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(r) => return r.into_response(),
    };
    let store = cs.store.clone();
    match tokio::task::spawn_blocking(move || store.delete(id)).await {
        Ok(Ok(())) => StatusCode::NO_CONTENT.into_response(),
        Ok(Err(StoreError::NotFound(_))) => StatusCode::NOT_FOUND.into_response(),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_wait_covers_the_deadlines_of_the_members_below() {
        let s = Duration::from_secs(2);
        let d = Deadlines::new(s);
        // A 64 MiB chunk: 4 s at the slowest rate.
        let (len, a) = (64 << 20, Duration::from_secs(4));
        assert_eq!(d.handoff(0), s);
        assert_eq!(d.handoff(1), 2 * s);
        assert_eq!(d.answer(len, 0), s + a);
        assert_eq!(d.answer(len, 1), 2 * s + 2 * a);
        assert_eq!(d.answer(len, 2), 4 * s + 5 * a);
        assert_eq!(d.recovery(len, 0), s + 2 * a);
        // The head of three waits out the middle member's own wait on a silent tail.
        assert!(d.answer(len, 1) > d.answer(len, 0) + s);
        // A long pipeline is worked out at once, and saturates rather than overflows.
        assert_eq!(d.answer(len, 10_000), Duration::MAX);
        assert!(d.handoff(usize::MAX) > Duration::from_secs(1 << 32));
        // A stall deadline of nothing would drop every member.
        assert_eq!(
            Deadlines::new(Duration::ZERO).handoff(0),
            MIN_PIPELINE_STALL
        );
    }
}
