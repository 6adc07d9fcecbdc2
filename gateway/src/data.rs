//! The data path: uploads split into chunks and streamed down chunkserver pipelines, and reads
//! that stream chunks from a replica and fall over to another.
//!
//! Nothing here holds a whole object or a whole chunk: an upload passes each incoming frame on as
//! it arrives (through a bounded channel to the pipeline head), a read passes each frame from the
//! chunkserver on to the client.
//!
//! A pipeline head that takes no data, or owes its answer, for longer than its own deadlines
//! allow ([`HeadDeadlines`]) is suspected and the write fails fast; a small object, still in
//! memory, is then written again on another pipeline within the same request.

use crate::error::{S3Error, S3Result};
use crate::{Gateway, UploadLease};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use md5::{Digest, Md5};
use std::sync::Arc;
use std::time::Duration;
use tinydfs_proto::batch::{BatchEntry, PutBatchReply};
use tinydfs_proto::client::{PutChunkReply, STREAM_IDLE_TIMEOUT};
use tinydfs_proto::frame::footer;
use tinydfs_proto::http::CallError;
use tinydfs_proto::meta::{MetaRead, MetaReply, ObjectLocation};
use tinydfs_proto::{ChunkId, ChunkMeta, NodeAddr, NodeId};
use tokio::sync::mpsc;
use tokio::sync::oneshot::error::TryRecvError;
use tokio::task::JoinHandle;
use tracing::Instrument;

/// Frames queued toward a pipeline head: a little slack, bounded memory.
const UPLOAD_QUEUE: usize = 16;
/// Frames read ahead from a chunkserver for a client.
const READ_QUEUE: usize = 8;
/// How long a read waits for replica locations after a master restart (chunk reports arriving).
const LOCATION_WAIT: Duration = Duration::from_secs(20);
/// A replica that has not started answering a read this long is asked in parallel with the next
/// one (a hedged read): a chunkserver answers a range's headers in milliseconds, while a paused
/// or cut-off one sends nothing at all.
const HEDGE_AFTER: Duration = Duration::from_millis(500);
/// A replica that has not started answering a read this long has failed it.
const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(5);

/// The chunkservers' pipeline stall deadline (their `--pipeline-stall-ms`, 2 s by default:
/// `tinydfs_chunkserver::api::PIPELINE_STALL_TIMEOUT`), which `pipeline_stall_ms` should match:
/// every wait on a pipeline head is derived from it ([`HeadDeadlines`]). A healthy head takes a
/// frame in milliseconds; a paused or cut-off one sends no reset, and waiting the 30 s of
/// `STREAM_IDLE_TIMEOUT` (or twice that) for it stalled every upload placed on it.
pub const PIPELINE_STALL_TIMEOUT: Duration = Duration::from_secs(2);
/// The shortest stall deadline taken, as on the chunkservers.
const MIN_PIPELINE_STALL: Duration = Duration::from_millis(100);
/// The slowest rate at which a healthy pipeline member is expected to take in, sync or send a
/// chunk's bytes, as on the chunkservers (`SLOWEST_MEMBER_RATE` there).
const SLOWEST_MEMBER_RATE: u64 = 16 << 20;
/// Pipelines a small object is tried on within one request: its bytes are still in memory, so a
/// pipeline whose head went silent (or that kept too few copies) costs another try on a
/// pipeline without the suspects, not the client's request. Three: one node down, then a
/// second while the first try waited, still leave the client a success.
const SMALL_OBJECT_TRIES: usize = 3;

/// How long this gateway waits on a pipeline head, from the stall deadline `s` and, for `len`
/// bytes, the size allowance `a` (`len` at [`SLOWEST_MEMBER_RATE`]). The head waits, within its
/// own deadlines, on the members after it (`tinydfs_chunkserver::api::Deadlines`, whose
/// arithmetic this repeats: the gateway knows chunkservers through `tinydfs_proto` only); so
/// the gateway waits out all of them before it takes the head's silence for a failure, and a
/// head that is recovering around a silent member is not given up on.
#[derive(Clone, Copy, Debug)]
struct HeadDeadlines {
    stall: Duration,
}

impl HeadDeadlines {
    fn of(gw: &Gateway) -> Self {
        HeadDeadlines {
            stall: Duration::from_millis(gw.config.pipeline_stall_ms).max(MIN_PIPELINE_STALL),
        }
    }

    /// Handing a frame to the head of a pipeline of `members`: `s × members`, as the head may
    /// itself be held up for `s × (members − 1)` handing a frame on before it drops its next
    /// member and reads again (6 s for three members by default).
    fn handoff(&self, members: usize) -> Duration {
        self.stall
            .saturating_mul(u32::try_from(members.max(1)).unwrap_or(u32::MAX))
    }

    /// The head's answer for `len` bytes through a pipeline of `members`, counted from when
    /// the last byte was handed over: `s + a` for the bytes still on their way to reach it,
    /// then the chunkservers' `A(members − 1)`, where a member with `k` members after it
    /// answers within
    ///
    /// - `A(0) = s + a` (its own fsync), `A(1) = s + a + A(0)` (then its wait on the next),
    /// - `A(k) = s + a + A(k−1) + R(k−2)`, with `R(k) = a + A(k)` (then a recovery around a
    ///   failed next member).
    ///
    /// For three members `s + a + 4s + 5a = 5s + 6a`: 10 s with the defaults and a small
    /// object, 34 s for a full 64 MiB chunk (a head that stops taking a large chunk's frames
    /// fails it sooner, on [`HeadDeadlines::handoff`]).
    fn answer(&self, len: u64, members: usize) -> Duration {
        let a = Duration::from_millis(len.saturating_mul(1000) / SLOWEST_MEMBER_RATE);
        let own = self.stall.saturating_add(a);
        // A(k-2) and A(k-1), starting at k = 1.
        let (mut two_below, mut one_below) = (Duration::ZERO, own);
        for k in 1..=members.saturating_sub(1) {
            let mut this = own.saturating_add(one_below);
            if k >= 2 {
                this = this.saturating_add(a).saturating_add(two_below);
            }
            (two_below, one_below) = (one_below, this);
        }
        own.saturating_add(one_below)
    }
}

/// What an upload stored.
pub struct Stored {
    pub size: u64,
    pub md5: [u8; 16],
    pub chunks: Vec<ChunkMeta>,
    /// Where each chunk landed, for the leader's soft state.
    pub locations: Vec<(ChunkId, Vec<NodeId>)>,
    /// The lease the chunks are named under, held (so kept renewed) until the upload commits.
    pub lease: Arc<UploadLease>,
}

struct OpenChunk {
    id: ChunkId,
    pipeline: Vec<NodeAddr>,
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    task: JoinHandle<Result<PutChunkReply, CallError>>,
    written: u64,
    crc: u32,
}

impl OpenChunk {
    /// Tells the pipeline the chunk is broken so that no member keeps it.
    async fn abort(self) {
        let _ = self
            .tx
            .try_send(Err(std::io::Error::other("upload aborted")));
        // Dropping the chunk aborts its request (see Drop): the stream never gets a footer.
    }
}

impl Drop for OpenChunk {
    /// A chunk dropped unfinished (the client went away, the handler was cancelled) resets its
    /// connection; without the footer no pipeline member keeps the partial chunk.
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Objects up to this size (or the chunk size, if smaller) are held whole and sent to their
/// pipeline as one body: a small PUT then costs one write per hop instead of a stream of frames.
pub const SMALL_OBJECT: u64 = 256 * 1024;
/// Pipelines asked of the master at once.
const PIPELINES_AHEAD: usize = 32;
/// How long pipelines placed ahead stay usable: the master's view of free space and live
/// chunkservers moves on, and a dead node in a cached pipeline costs a retry.
const PIPELINES_FRESH: Duration = Duration::from_secs(1);

/// Pipelines placed by the master ahead of need.
#[derive(Default)]
pub struct PipelineCache {
    ready: Vec<Vec<NodeAddr>>,
    fetched: Option<std::time::Instant>,
}

impl PipelineCache {
    /// A fresh pipeline that avoids `suspects`, if one is left.
    fn take(&mut self, suspects: &[NodeId]) -> Option<Vec<NodeAddr>> {
        if self.fetched.is_none_or(|at| at.elapsed() > PIPELINES_FRESH) {
            self.ready.clear();
            return None;
        }
        while let Some(p) = self.ready.pop() {
            if !p.iter().any(|n| suspects.contains(&n.id)) {
                return Some(p);
            }
        }
        None
    }
}

/// A pipeline for a new chunk: from those placed ahead, or a new batch from the master.
async fn pipeline(gw: &Gateway) -> S3Result<Vec<NodeAddr>> {
    pipeline_avoiding(gw, &[]).await
}

/// A pipeline for a new chunk without the suspects nor the nodes of `avoid`.
async fn pipeline_avoiding(gw: &Gateway, avoid: &[NodeId]) -> S3Result<Vec<NodeAddr>> {
    let mut suspects = gw.suspects();
    suspects.extend_from_slice(avoid);
    if let Some(p) = gw.pipelines.lock().ok().and_then(|mut c| c.take(&suspects)) {
        return Ok(p);
    }
    let placement = gw
        .master
        .placement(PIPELINES_AHEAD, gw.config.replicas, suspects)
        .await?;
    let mut pipelines: Vec<Vec<NodeAddr>> = placement
        .pipelines
        .into_iter()
        .filter(|p| !p.is_empty())
        .collect();
    let first = pipelines
        .pop()
        .ok_or_else(|| S3Error::unavailable("the master returned no pipeline"))?;
    if let Ok(mut c) = gw.pipelines.lock() {
        c.ready = pipelines;
        c.fetched = Some(std::time::Instant::now());
    }
    Ok(first)
}

/// Streams `body` into new chunks; `observe` sees every byte (checksums). Returns what was stored;
/// on any error, the chunk in flight is aborted and nothing is committed by the caller.
pub async fn store<S>(
    gw: &Arc<Gateway>,
    mut body: S,
    request_id: &str,
    mut observe: impl FnMut(&[u8]),
) -> S3Result<Stored>
where
    S: Stream<Item = Result<Bytes, S3Error>> + Unpin,
{
    let mut md5 = Md5::new();
    let lease = gw
        .hold_lease()
        .ok_or_else(|| S3Error::unavailable("this gateway has no upload lease yet"))?;
    let mut stored = Stored {
        size: 0,
        md5: [0; 16],
        chunks: Vec::new(),
        locations: Vec::new(),
        lease,
    };
    let mut open: Option<OpenChunk> = None;
    // The start of the body, held until it is known whether the object is small.
    let small_limit = SMALL_OBJECT.min(gw.config.chunk_size);
    let mut held: Option<Vec<Bytes>> = Some(Vec::new());
    // Client bodies carry the request's own idle bound (`body_timeout_ms`, see `take_body`);
    // this one is the backstop for other sources, never shorter than the configured bound.
    let idle = STREAM_IDLE_TIMEOUT.max(Duration::from_millis(gw.config.body_timeout_ms));
    loop {
        let frame = match tokio::time::timeout(idle, body.next()).await {
            Ok(None) => break,
            Ok(Some(Ok(f))) => f,
            Ok(Some(Err(e))) => {
                if let Some(c) = open.take() {
                    c.abort().await;
                }
                return Err(e);
            }
            Err(_) => {
                if let Some(c) = open.take() {
                    c.abort().await;
                }
                return Err(crate::limits::request_timeout());
            }
        };
        md5.update(&frame);
        observe(&frame);
        stored.size += frame.len() as u64;
        if let Some(frames) = &mut held {
            frames.push(frame);
            if stored.size <= small_limit {
                continue;
            }
            // Not small: stream it, starting with what was held.
            for f in held.take().unwrap_or_default() {
                push(gw, &mut open, &mut stored, f, request_id).await?;
            }
            continue;
        }
        push(gw, &mut open, &mut stored, frame, request_id).await?;
    }
    match held {
        Some(frames) if stored.size > 0 => store_whole(gw, frames, &mut stored, request_id).await?,
        _ => {
            if let Some(c) = open.take() {
                finish_chunk(gw, c, &mut stored).await?;
            }
        }
    }
    stored.md5 = md5.finalize().into();
    Ok(stored)
}

/// Sends `data` on to the open chunk, opening chunks and finishing full ones as needed.
async fn push(
    gw: &Gateway,
    open: &mut Option<OpenChunk>,
    stored: &mut Stored,
    mut data: Bytes,
    request_id: &str,
) -> S3Result<()> {
    let chunk_size = gw.config.chunk_size;
    while !data.is_empty() {
        let mut chunk = match open.take() {
            Some(c) => c,
            None => open_chunk(gw, request_id, stored.lease.id).await?,
        };
        let take = ((chunk_size - chunk.written) as usize).min(data.len());
        let piece = data.split_to(take);
        chunk.crc = crc32c::crc32c_append(chunk.crc, &piece);
        chunk.written += take as u64;
        let handoff = HeadDeadlines::of(gw).handoff(chunk.pipeline.len());
        let sent = tokio::time::timeout(handoff, chunk.tx.send(Ok(piece))).await;
        if !matches!(sent, Ok(Ok(()))) {
            // The pipeline head went away or stopped reading. The bytes sent are gone: the
            // client's retry (SDKs retry 503) is placed without the head.
            if let Some(head) = chunk.pipeline.first() {
                gw.suspect(head.id);
            }
            chunk.abort().await;
            return Err(S3Error::unavailable(
                "the chunk pipeline stopped taking data",
            ));
        }
        if chunk.written == chunk_size {
            finish_chunk(gw, chunk, stored).await?;
        } else {
            *open = Some(chunk);
        }
    }
    Ok(())
}

/// Stores a small object, all in `frames`, as one chunk. Concurrent small objects travel
/// together: the chunk joins the next batch sent down a pipeline ([`SmallWrites`]). A pipeline
/// that fails it is replaced by another, up to [`SMALL_OBJECT_TRIES`] in all.
async fn store_whole(
    gw: &Arc<Gateway>,
    frames: Vec<Bytes>,
    stored: &mut Stored,
    request_id: &str,
) -> S3Result<()> {
    let len: u64 = frames.iter().map(|f| f.len() as u64).sum();
    let data = if frames.len() == 1 {
        frames.into_iter().next().unwrap_or_default()
    } else {
        let mut b = bytes::BytesMut::with_capacity(len as usize);
        for f in &frames {
            b.extend_from_slice(f);
        }
        b.freeze()
    };
    let crc = crc32c::crc32c(&data);
    let mut tries = 1;
    let mut no_space = None;
    loop {
        // A fresh id on each pipeline: a copy that a failed pipeline finishes late is garbage
        // under the lease, never a replica the master would count for the chunk recorded.
        let id = ChunkId::in_lease(stored.lease.id);
        let entry = BatchEntry {
            id,
            data: data.clone(),
            crc32c: crc,
        };
        let send = |batch| send_batch(gw.clone(), batch, request_id.to_string());
        let (pipeline, answer) = match gw.small_writes.write(entry, send).await {
            Ok(written) => written,
            // Without the full nodes there may be too few left to place on: then the answer
            // is that space ran out, not that nodes are missing.
            Err(e) if e.status == http::StatusCode::SERVICE_UNAVAILABLE && no_space.is_some() => {
                return Err(no_space.unwrap_or(e));
            }
            Err(e) => return Err(e),
        };
        match settle(gw, &pipeline, id, len, crc, Ok(answer), stored) {
            // The pipeline failed (its head is suspected now, or the members that kept no
            // copy): the next one is placed without them. A head out of space is one full
            // node, not a full cluster (the master stops placing on it at its next heartbeat):
            // another pipeline may have room, and 507 is answered only if none has.
            Err(e)
                if (e.status == http::StatusCode::SERVICE_UNAVAILABLE
                    || e.status == http::StatusCode::INSUFFICIENT_STORAGE)
                    && tries < SMALL_OBJECT_TRIES =>
            {
                if e.status == http::StatusCode::INSUFFICIENT_STORAGE {
                    no_space = Some(e);
                }
                tries += 1;
                tracing::info!(chunk = %id, tries, "writing a small object again on another pipeline");
            }
            Err(e) if e.status == http::StatusCode::SERVICE_UNAVAILABLE && no_space.is_some() => {
                return Err(no_space.unwrap_or(e));
            }
            settled => return settled,
        }
    }
}

/// Batches in flight at once per gateway. Two keep pipelines busy while one is acknowledged;
/// more made smaller batches, so more disk syncs, and fewer small PUTs per second (measured:
/// 4 slots about 1,400/s, 2 about 2,000/s on the 2-core bench machine).
const BATCHES_IN_FLIGHT: usize = 2;
/// The most data one batch carries.
const BATCH_BYTES: usize = 4 << 20;

/// Small chunks waiting to be sent, and the batches in flight. As in a group commit, a writer
/// that finds a free slot takes everything waiting as one batch; the others wait for their
/// answers, or for a free slot. The batch travels on a task of its own, not inside the request
/// of the writer that took it: if that client goes away, hyper drops its request, and a batch
/// carried there would leave every other chunk in it unanswered. A batch once taken always ends
/// with an answer to each of its chunks.
#[derive(Default)]
pub struct SmallWrites(Arc<SmallShared>);

/// What the writers and the batch tasks share.
#[derive(Default)]
struct SmallShared {
    queue: std::sync::Mutex<SmallQueue>,
    freed: tokio::sync::Notify,
}

#[derive(Default)]
struct SmallQueue {
    waiting: Vec<(BatchEntry, Waiter)>,
    in_flight: usize,
}

/// Where a batched chunk's answer goes: its pipeline and the pipeline's reply for it.
type Answer = S3Result<(Vec<NodeAddr>, Result<PutChunkReply, CallError>)>;
type Waiter = tokio::sync::oneshot::Sender<Answer>;
/// Chunks taken together, each with where its answer goes.
type Batch = Vec<(BatchEntry, Waiter)>;

impl SmallWrites {
    /// Writes one small chunk through the next batch; answers its pipeline and the reply.
    /// `send` carries a batch and answers each of its waiters ([`send_batch`]); it runs on a
    /// task of its own.
    async fn write<F, Fut>(&self, entry: BatchEntry, send: F) -> Answer
    where
        F: Fn(Batch) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        self.0.lock().waiting.push((entry, tx));
        loop {
            let freed = self.0.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            match rx.try_recv() {
                Ok(answer) => return answer,
                // Its batch died: answered here, as a receiver that saw its end must not be
                // polled again (tokio panics).
                Err(TryRecvError::Closed) => return Err(abandoned()),
                Err(TryRecvError::Empty) => {}
            }
            if let Some(batch) = self.0.take_batch() {
                // Given back when the task ends, however it ends (a panic, the runtime stopping).
                let slot = BatchSlot(self.0.clone());
                let batch = send(batch);
                // In this request's span: the batch's log lines carry the id of the request
                // that took it, the id its chunkserver calls carry too.
                tokio::spawn(
                    async move {
                        let _slot = slot;
                        batch.await
                    }
                    .in_current_span(),
                );
                continue;
            }
            tokio::select! {
                answer = &mut rx => return answer.unwrap_or_else(|_| Err(abandoned())),
                _ = freed => {}
            }
        }
    }
}

/// The answer of a chunk whose batch task died (a panic) before answering it.
fn abandoned() -> S3Error {
    S3Error::unavailable("the batch carrying this object was abandoned")
}

impl SmallShared {
    fn lock(&self) -> std::sync::MutexGuard<'_, SmallQueue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The chunks waiting (up to a batch's size), if a slot is free; the slot is taken.
    fn take_batch(&self) -> Option<Batch> {
        let mut q = self.lock();
        if q.waiting.is_empty() || q.in_flight >= BATCHES_IN_FLIGHT {
            return None;
        }
        let mut bytes = 0;
        let mut n = 0;
        for (e, _) in &q.waiting {
            if n > 0 && bytes + e.data.len() > BATCH_BYTES {
                break;
            }
            bytes += e.data.len();
            n += 1;
        }
        q.in_flight += 1;
        Some(q.waiting.drain(..n).collect())
    }
}

/// A batch slot taken by [`SmallShared::take_batch`], freed when dropped (with the task that
/// carries the batch).
struct BatchSlot(Arc<SmallShared>);

impl Drop for BatchSlot {
    fn drop(&mut self) {
        self.0.lock().in_flight -= 1;
        self.0.freed.notify_waiters();
    }
}

/// Sends a batch down one pipeline and hands every chunk of it its answer.
async fn send_batch(gw: Arc<Gateway>, batch: Batch, request_id: String) {
    let (gw, request_id) = (&*gw, request_id.as_str());
    let pipeline = match pipeline(gw).await {
        Ok(p) => p,
        Err(e) => {
            for (_, w) in batch {
                let _ = w.send(Err(e.clone()));
            }
            return;
        }
    };
    let (entries, waiters): (Vec<BatchEntry>, Vec<Waiter>) = batch.into_iter().unzip();
    let body = tinydfs_proto::batch::encode(&entries);
    let (pipeline, reply) = hedged_batch(gw, pipeline, body, request_id).await;
    if matches!(&reply, Err(e) if e.is_not_found()) {
        // A chunkserver older than batches (mid-upgrade): each chunk on its own.
        for (e, w) in entries.into_iter().zip(waiters) {
            let answer = put_single(gw, &pipeline, e, request_id).await;
            let _ = w.send(Ok((pipeline.clone(), answer)));
        }
        return;
    }
    let reply = reply.and_then(|r| {
        if r.count as usize == entries.len() {
            Ok(r.stored)
        } else {
            Err(CallError::Other(format!(
                "the pipeline counted {} of {} chunks",
                r.count,
                entries.len()
            )))
        }
    });
    for (e, w) in entries.iter().zip(waiters) {
        let answer = reply.clone().map(|stored| PutChunkReply {
            stored,
            len: e.data.len() as u64,
            crc32c: e.crc32c,
        });
        let _ = w.send(Ok((pipeline.clone(), answer)));
    }
}

/// Sends a batch down `pipeline`; if its head has not answered within the stall deadline, the
/// same batch also goes down a second pipeline without that head, and the first good answer
/// (enough copies) wins. A batch holds one of the gateway's few batch slots, and waiting out a
/// silent head's deadlines (10 s by default) stalled every small write of the gateway. The same
/// chunk ids go down both: both carry the same bytes, so any copy either pipeline keeps is a
/// true replica of the chunk (a surplus one is removed by the master later).
async fn hedged_batch(
    gw: &Gateway,
    pipeline: Vec<NodeAddr>,
    body: bytes::Bytes,
    request_id: &str,
) -> (Vec<NodeAddr>, Result<PutBatchReply, CallError>) {
    let sent = pipeline.clone();
    let first = put_batch_on(gw, &sent, body.clone(), request_id);
    tokio::pin!(first);
    let stall = HeadDeadlines::of(gw).stall;
    tokio::select! {
        r = &mut first => return (pipeline, r),
        _ = tokio::time::sleep(stall) => {}
    }
    // One hedge at a time per gateway: when disks are slow everywhere, hedging every batch
    // would write everything twice and make them slower still.
    let Some(_hedging) = Hedging::start(gw) else {
        return (pipeline, first.await);
    };
    let head: Vec<NodeId> = pipeline.first().map(|n| n.id).into_iter().collect();
    // The first pipeline may answer while the second is placed (the master may be slow).
    let placed = pipeline_avoiding(gw, &head);
    tokio::pin!(placed);
    let other = tokio::select! {
        r = &mut first => return (pipeline, r),
        p = &mut placed => match p {
            Ok(p) => p,
            Err(_) => return (pipeline, first.await),
        },
    };
    tracing::info!(
        request_id,
        "pipeline head slow; sending the batch down another pipeline too"
    );
    let sent_too = other.clone();
    let second = put_batch_on(gw, &sent_too, body, request_id);
    tokio::pin!(second);
    let needed = gw.config.min_replicas.min(gw.config.replicas).max(1);
    let good =
        |r: &Result<PutBatchReply, CallError>| r.as_ref().is_ok_and(|r| r.stored.len() >= needed);
    tokio::select! {
        r = &mut first => {
            if good(&r) {
                (pipeline, r)
            } else {
                (other, second.await)
            }
        }
        r = &mut second => {
            if good(&r) {
                // The first head never answered in time: place the next writes without it.
                if let Some(h) = head.first() {
                    gw.suspect(*h);
                }
                (other, r)
            } else {
                (pipeline, first.await)
            }
        }
    }
}

/// A hedged batch in flight ([`hedged_batch`]); at most one per gateway.
struct Hedging<'a>(&'a Gateway);

impl<'a> Hedging<'a> {
    fn start(gw: &'a Gateway) -> Option<Self> {
        use std::sync::atomic::Ordering;
        gw.hedging
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
            .ok()
            .map(|_| Hedging(gw))
    }
}

impl Drop for Hedging<'_> {
    fn drop(&mut self) {
        self.0
            .hedging
            .store(false, std::sync::atomic::Ordering::Release);
    }
}

/// Sends a batch down `pipeline`, waiting for its head within its deadlines.
async fn put_batch_on(
    gw: &Gateway,
    pipeline: &[NodeAddr],
    body: bytes::Bytes,
    request_id: &str,
) -> Result<PutBatchReply, CallError> {
    let within = HeadDeadlines::of(gw).answer(body.len() as u64, pipeline.len());
    match pipeline.split_first() {
        Some((head, rest)) => {
            tokio::time::timeout(within, gw.chunks.put_batch(head, rest, body, request_id))
                .await
                .unwrap_or_else(|_| Err(no_answer(within)))
        }
        None => Err("empty pipeline".into()),
    }
}

/// Sends one small chunk down `pipeline` in one body (its data and footer).
async fn put_single(
    gw: &Gateway,
    pipeline: &[NodeAddr],
    e: BatchEntry,
    request_id: &str,
) -> Result<PutChunkReply, CallError> {
    let (head, rest) = pipeline.split_first().ok_or("empty pipeline")?;
    let mut body = bytes::BytesMut::with_capacity(e.data.len() + tinydfs_proto::frame::FOOTER_LEN);
    body.extend_from_slice(&e.data);
    body.extend_from_slice(&footer(e.data.len() as u64, e.crc32c));
    let within = HeadDeadlines::of(gw).answer(body.len() as u64, pipeline.len());
    let body = reqwest::Body::from(body.freeze());
    tokio::time::timeout(within, gw.chunks.put(head, rest, e.id, body, request_id))
        .await
        .unwrap_or_else(|_| Err(no_answer(within)))
}

/// The failure of a pipeline whose head did not answer `within` its deadlines.
fn no_answer(within: Duration) -> CallError {
    CallError::TimedOut(format!("the pipeline head did not answer in {within:?}"))
}

async fn open_chunk(gw: &Gateway, request_id: &str, lease: u32) -> S3Result<OpenChunk> {
    let pipeline = pipeline(gw).await?;
    let id = ChunkId::in_lease(lease);
    let (tx, rx) = mpsc::channel(UPLOAD_QUEUE);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let client = gw.chunks.clone();
    let rid = request_id.to_string();
    let nodes = pipeline.clone();
    let task = tokio::spawn(async move {
        let (head, rest) = nodes.split_first().ok_or("empty pipeline")?;
        client
            .put(head, rest, id, reqwest::Body::wrap_stream(stream), &rid)
            .await
    });
    Ok(OpenChunk {
        id,
        pipeline,
        tx,
        task,
        written: 0,
        crc: 0,
    })
}

/// Ends a chunk's stream with its footer and waits until its pipeline reports it durable.
async fn finish_chunk(gw: &Gateway, mut chunk: OpenChunk, stored: &mut Stored) -> S3Result<()> {
    let deadlines = HeadDeadlines::of(gw);
    let ended = tokio::time::timeout(
        deadlines.handoff(chunk.pipeline.len()),
        chunk.tx.send(Ok(footer(chunk.written, chunk.crc))),
    )
    .await;
    // Close the stream: the head reads the footer, then the end.
    let (closed, _) = mpsc::channel(1);
    drop(std::mem::replace(&mut chunk.tx, closed));
    let within = deadlines.answer(chunk.written, chunk.pipeline.len());
    let answer = match ended {
        Ok(Ok(())) => tokio::time::timeout(within, &mut chunk.task)
            .await
            .unwrap_or_else(|_| Ok(Err(no_answer(within)))),
        _ => Ok(Err("the pipeline head stopped taking data".into())),
    };
    let pipeline = std::mem::take(&mut chunk.pipeline);
    settle(
        gw,
        &pipeline,
        chunk.id,
        chunk.written,
        chunk.crc,
        answer,
        stored,
    )
}

/// Judges a pipeline's answer for chunk `id` of `len` bytes with CRC32C `crc`: records the
/// chunk in `stored` if enough copies are durable and match, suspects the members that failed.
fn settle(
    gw: &Gateway,
    pipeline: &[NodeAddr],
    id: ChunkId,
    len: u64,
    crc: u32,
    answer: Result<Result<PutChunkReply, CallError>, tokio::task::JoinError>,
    stored: &mut Stored,
) -> S3Result<()> {
    let reply = match answer.map_err(S3Error::internal)? {
        Ok(r) => r,
        Err(e) => {
            // The head failed (its followers' errors come back inside its reply): the client's
            // retry should get a pipeline without it. SDKs retry 503 by themselves.
            if let Some(head) = pipeline.first() {
                gw.suspect(head.id);
            }
            let detail = format!("chunk {id} write failed: {e}");
            // The head ran out of space (its own disk: followers' failures come back as
            // missing copies in a successful reply).
            if e.is_insufficient_storage() {
                return Err(S3Error::insufficient_capacity(detail));
            }
            return Err(S3Error::unavailable(detail));
        }
    };
    for n in pipeline {
        if !reply.stored.contains(&n.id) {
            gw.suspect(n.id);
        }
    }
    if reply.len != len || reply.crc32c != crc {
        return Err(S3Error::internal(format!(
            "chunk {id} stored as {} bytes crc {:08x}, sent {len} bytes crc {crc:08x}",
            reply.len, reply.crc32c
        )));
    }
    let needed = gw.config.min_replicas.min(gw.config.replicas).max(1);
    if reply.stored.len() < needed {
        return Err(S3Error::unavailable(format!(
            "chunk {id} reached {} of the {needed} copies required",
            reply.stored.len()
        )));
    }
    if reply.stored.len() < gw.config.replicas {
        tracing::warn!(chunk = %id, copies = reply.stored.len(), "chunk is under-replicated");
    }
    stored.chunks.push(ChunkMeta {
        id,
        len,
        crc32c: crc,
    });
    stored.locations.push((id, reply.stored));
    Ok(())
}

/// Streams bytes `start..end` of an object. Each chunk is read from one replica; when a replica
/// fails, the read resumes from the next one where it stopped. If every replica fails, the
/// stream ends with an error (the client sees a truncated body, never wrong bytes).
pub fn read(
    gw: Arc<Gateway>,
    bucket: String,
    key: String,
    mut loc: ObjectLocation,
    start: u64,
    end: u64,
    request_id: String,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(READ_QUEUE);
    let task = async move {
        let mut chunk_start = 0u64;
        for i in 0..loc.record.chunks.len() {
            let c = loc.record.chunks[i].clone();
            let chunk_end = chunk_start + c.len;
            if chunk_end <= start || chunk_start >= end {
                chunk_start = chunk_end;
                continue;
            }
            let from = start.saturating_sub(chunk_start);
            let to = end.min(chunk_end) - chunk_start;
            if let Err(e) =
                read_chunk(&gw, &bucket, &key, &mut loc, i, from, to, &tx, &request_id).await
            {
                tracing::error!(chunk = %c.id, error = %e, "no replica could serve the chunk");
                let _ = tx.send(Err(std::io::Error::other(e))).await;
                return;
            }
            chunk_start = chunk_end;
        }
    };
    // In the S3 request's span: its log lines carry the request id.
    tokio::spawn(task.in_current_span());
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}

#[allow(clippy::too_many_arguments)]
async fn read_chunk(
    gw: &Gateway,
    bucket: &str,
    key: &str,
    loc: &mut ObjectLocation,
    index: usize,
    mut from: u64,
    to: u64,
    tx: &mpsc::Sender<Result<Bytes, std::io::Error>>,
    request_id: &str,
) -> Result<(), String> {
    let id = loc.record.chunks[index].id;
    let deadline = tokio::time::Instant::now() + LOCATION_WAIT;
    let mut last_error = String::from("no live replica known");
    loop {
        let mut nodes = loc.replicas.get(index).cloned().unwrap_or_default();
        // Replicas that failed or were slow for this gateway lately are asked last: a cut-off
        // or paused node does not cost each read the hedge delay until the master declares it
        // dead.
        let last = gw.asked_last();
        nodes.sort_by_key(|n| last.contains(&n.id));
        let mut next = 0;
        while next < nodes.len() {
            let rest = &nodes[next..];
            let len = to - from;
            let hedge = hedged(rest.len(), HEDGE_AFTER, |i| {
                let node = &rest[i];
                async move {
                    tokio::time::timeout(
                        FIRST_BYTE_TIMEOUT,
                        gw.chunks.get(node, id, from, len, request_id),
                    )
                    .await
                    .unwrap_or_else(|_| {
                        Err(CallError::TimedOut(format!("{} sent nothing", node.addr)))
                    })
                }
            })
            .await;
            next += hedge.asked;
            for j in &hedge.outrun {
                tracing::debug!(chunk = %id, node = %rest[*j].addr, "replica outrun by a hedge; asked last for a while");
                gw.slow_reader(rest[*j].id);
            }
            let (node, resp) = match hedge.answer {
                Ok((i, r)) => {
                    gw.read_ok(rest[i].id);
                    (rest[i].clone(), r)
                }
                Err(errors) => {
                    for e in &errors {
                        tracing::warn!(chunk = %id, error = %e, "replica read failed; trying another");
                    }
                    if let Some(e) = errors.last() {
                        last_error = e.to_string();
                    }
                    continue;
                }
            };
            let mut body = resp.bytes_stream();
            let mut failed = false;
            loop {
                let frame = match tokio::time::timeout(STREAM_IDLE_TIMEOUT, body.next()).await {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(_) => {
                        tracing::warn!(chunk = %id, node = %node.addr, "replica went silent; resuming elsewhere");
                        last_error = format!("{} went silent", node.addr);
                        failed = true;
                        break;
                    }
                };
                match frame {
                    Ok(b) => {
                        let n = b.len() as u64;
                        if n > to - from {
                            failed = true;
                            last_error = format!("{} sent more than asked", node.addr);
                            break;
                        }
                        if tx.send(Ok(b)).await.is_err() {
                            return Ok(()); // the client went away
                        }
                        from += n;
                    }
                    Err(e) => {
                        tracing::warn!(chunk = %id, node = %node.addr, error = %e, "replica failed mid-read; resuming elsewhere");
                        last_error = e.to_string();
                        failed = true;
                        break;
                    }
                }
            }
            if !failed && from == to {
                return Ok(());
            }
            if !failed {
                last_error = format!("{} ended the chunk early", node.addr);
            }
        }
        // Every known replica failed: the master may still be collecting chunk reports (after a
        // restart) or know of other copies. Ask again until the deadline.
        if tokio::time::Instant::now() >= deadline {
            return Err(last_error);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        match gw
            .master
            .read(MetaRead::GetObject {
                bucket: bucket.to_string(),
                key: key.to_string(),
            })
            .await
        {
            Ok(MetaReply::Object(fresh))
                if fresh.record.chunks.get(index).map(|c| c.id) == Some(id) =>
            {
                loc.replicas = fresh.replicas;
            }
            Ok(_) => return Err("the object changed while it was being read".into()),
            Err(e) => last_error = e.to_string(),
        }
    }
}

mod hedge;
use hedge::hedged;

#[cfg(test)]
mod tests;
