//! HTTP clients for the internal APIs: the master (following the leader) and chunkservers,
//! with the paths and the chunk messages they exchange. Both are built on [`crate::http`].

use crate::http::CallError;
use crate::meta::*;
use crate::types::*;
use crate::REQUEST_ID_HEADER;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot::error::TryRecvError;
use tracing::Instrument;

/// How long a metadata call keeps retrying (leader changes, a restarting master) before giving up.
pub const MASTER_RETRY_WINDOW: Duration = Duration::from_secs(20);
/// First pause between retries; doubled up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// Short, so that a client notices a new leader soon after the election.
const MAX_BACKOFF: Duration = Duration::from_millis(250);
/// Longest silence on a chunk stream before the peer is treated as failed (a paused or
/// partitioned node sends no reset): long enough for an fsync of a 64 MiB chunk on a slow disk.
pub const STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest one metadata call to one master may take before the client asks another: a leader
/// that is paused or cut off sends no reset, and the others elect a new one within about 1.2 s
/// (the masters' election timing). A healthy leader answers a read or a placement in milliseconds.
pub const MASTER_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// A write waits for its log entry to be replicated and synced, at most the master's proposal
/// deadline (3 s, `--propose-timeout-ms`): the client waits a little longer, so that a slow but
/// healthy leader answers (even "not committed in time") before it is asked again.
const WRITE_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(4);
/// A heartbeat without a chunk report.
const HEARTBEAT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// Heartbeat bodies above this carry a full chunk report, which a master judges chunk by chunk:
/// they get [`ADMIN_CALL_TIMEOUT`] plus a second per MiB.
const FULL_REPORT_BYTES: usize = 64 << 10;
/// Calls that walk the whole namespace (backup, fsck, bucket usage, the status of every node)
/// or wait for a membership or drain change: long, and made by an operator, not on a client's
/// path. (A membership change waits up to 60 s for a learner to catch up.)
const ADMIN_CALL_TIMEOUT: Duration = Duration::from_secs(30);
const MEMBERS_CALL_TIMEOUT: Duration = Duration::from_secs(90);

/// How long the master a client calls may stay silent before the client asks the masters who
/// leads now: a healthy leader answers a metadata call in milliseconds, and a new leader is
/// elected 1.0–1.2 s after the old one went silent, so the first probe comes well before the
/// election and the client follows soon after it rather than when its own attempt times out.
/// Probes are shared by a client's calls ([`LEADER_PROBE_SHARED`]).
const LEADER_PROBE_AFTER: Duration = Duration::from_millis(500);
/// How often a call that is still unanswered asks again, once a probe has named no other
/// leader: an election is under way, and it ends within a few hundred milliseconds.
const LEADER_PROBE_AGAIN: Duration = Duration::from_millis(200);
/// A master's health answer is one in-memory read.
const LEADER_PROBE_TIMEOUT: Duration = Duration::from_millis(800);
/// How long a probe waits for the other masters once a majority has answered without naming
/// a leader: a silent master (paused, cut off) would otherwise hold every probe for
/// [`LEADER_PROBE_TIMEOUT`], and the answer a probe waits for comes from the majority's side.
const LEADER_PROBE_GRACE: Duration = Duration::from_millis(100);
/// How long a client trusts a feature level too low for a request before asking again (a
/// group's level rises within seconds of its start or of an upgrade's last master).
const FEATURE_LEVEL_FRESH: Duration = Duration::from_secs(1);
/// How long a client trusts a level high enough: levels only rise in one group, but masters
/// restored from a backup form a new group, which may start lower.
const FEATURE_LEVEL_TRUSTED: Duration = Duration::from_secs(30);
/// How long one probe's answer serves the calls that wait on it, and those that come after.
const LEADER_PROBE_SHARED: Duration = Duration::from_millis(200);

/// How long one attempt of a call on `path` with a body of `len` bytes may take.
fn attempt_timeout(path: &str, len: usize) -> Duration {
    match path {
        paths::WRITE | paths::WRITE_BATCH => WRITE_ATTEMPT_TIMEOUT,
        paths::HEARTBEAT if len > FULL_REPORT_BYTES => {
            ADMIN_CALL_TIMEOUT + Duration::from_secs((len >> 20) as u64)
        }
        paths::HEARTBEAT => HEARTBEAT_ATTEMPT_TIMEOUT,
        paths::MEMBERS => MEMBERS_CALL_TIMEOUT,
        paths::BACKUP
        | paths::FSCK
        | paths::BUCKET_USAGE
        | paths::STATUS
        | paths::DRAIN
        | paths::REBALANCE => ADMIN_CALL_TIMEOUT,
        _ => MASTER_ATTEMPT_TIMEOUT,
    }
}

// The shared plumbing, also under the names callers have always used.
pub use crate::http::{http_client, internal_headers, url};

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

/// The answer of a write whose batch task died (a panic) before answering it.
fn abandoned() -> MetaError {
    MetaError::Unavailable("the batch carrying this write was abandoned".into())
}

/// A client of the master group: finds the leader among the given addresses and follows it.
/// Clones share one client (its leader, its connections and its write queue).
///
/// Concurrent writes through one client are committed together: a writer that finds one of
/// [`WRITE_BATCHES_IN_FLIGHT`] slots free takes every write waiting as one request, which the
/// leader appends as one log entry (one replication round and one fsync for all); the others
/// wait for their answers or for a free slot. A lone write goes at once, on its own. The request
/// travels on a task of its own, not inside the call of the writer that took it, so that a
/// caller cancelled on the way (its S3 client went away) fails none of the other writes.
#[derive(Clone)]
pub struct MasterClient {
    inner: Arc<Shared>,
}

/// What the clones of a [`MasterClient`] and its batch tasks share.
struct Shared {
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
    /// A master has answered a call of this client (until then, it asks every master who
    /// leads as soon as a call starts).
    answered: std::sync::atomic::AtomicBool,
    /// The last probe of who leads, with when ([`MasterClient::probe`]).
    probed: tokio::sync::Mutex<Option<(std::time::Instant, Option<String>)>>,
    /// The master group's feature level as last heard, with when
    /// ([`MasterClient::group_feature_level`]).
    feature_level: Mutex<Option<(std::time::Instant, u32)>>,
}

impl Shared {
    fn queue(&self) -> std::sync::MutexGuard<'_, WriteQueue> {
        self.writes.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl MasterClient {
    /// A client for the masters at `masters` (`host:port` of their internal listeners).
    pub fn new(masters: Vec<String>, secret: String) -> Self {
        let first = masters.first().cloned().unwrap_or_default();
        MasterClient {
            inner: Arc::new(Shared {
                http: http_client(),
                masters,
                secret,
                leader: Mutex::new(first),
                writes: Mutex::new(WriteQueue::default()),
                freed: tokio::sync::Notify::new(),
                no_batches_until: Mutex::new(None),
                answered: std::sync::atomic::AtomicBool::new(false),
                probed: tokio::sync::Mutex::new(None),
                feature_level: Mutex::new(None),
            }),
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
            .inner
            .no_batches_until
            .lock()
            .map(|u| u.is_some_and(|t| std::time::Instant::now() < t))
            .unwrap_or(false);
        if unbatched {
            return self.call(paths::WRITE, &req).await;
        }
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        self.inner.queue().waiting.push((req, tx));
        loop {
            let freed = self.inner.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            match rx.try_recv() {
                Ok(answer) => return answer,
                // Its batch died: answered here, as a receiver that saw its end must not be
                // polled again (tokio panics).
                Err(TryRecvError::Closed) => return Err(abandoned()),
                Err(TryRecvError::Empty) => {}
            }
            if let Some(batch) = self.take_writes() {
                // Given back when the task ends, however it ends (a panic, the runtime stopping).
                let slot = WriteSlot(self.inner.clone());
                let client = self.clone();
                // In this caller's span: the batch's log lines go with the call that took it.
                tokio::spawn(
                    async move {
                        let _slot = slot;
                        client.send_writes(batch).await
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

    /// The writes waiting (up to a batch), if a slot is free; the slot is taken.
    fn take_writes(&self) -> Option<Vec<(WriteRequest, WriteWaiter)>> {
        let mut q = self.inner.queue();
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
        let answers: Result<Vec<Result<MetaReply, MetaError>>, Failure> =
            self.try_call(paths::WRITE_BATCH, &reqs).await;
        match answers {
            Ok(answers) if answers.len() == waiters.len() => {
                for (tx, a) in waiters.into_iter().zip(answers) {
                    let _ = tx.send(a);
                }
            }
            Err(Failure::NoSuchPath(_)) => {
                tracing::info!("the master does not take batched writes; sending them one by one");
                if let Ok(mut u) = self.inner.no_batches_until.lock() {
                    *u = Some(std::time::Instant::now() + NO_BATCHES_FOR);
                }
                for (req, tx) in reqs.into_iter().zip(waiters) {
                    let _ = tx.send(self.call(paths::WRITE, &req).await);
                }
            }
            other => {
                let e = match other {
                    Err(e) => MetaError::from(e),
                    Ok(_) => MetaError::Unavailable("a batch got a short answer".into()),
                };
                for tx in waiters {
                    let _ = tx.send(Err(e.clone()));
                }
            }
        }
    }

    /// The master group's feature level: what kinds of writes every master can apply. A
    /// master reports the level it has applied, which was committed; releases before feature
    /// levels report none (0). A level below `need` is trusted for [`FEATURE_LEVEL_FRESH`],
    /// one at least `need` for [`FEATURE_LEVEL_TRUSTED`].
    pub async fn group_feature_level(&self, need: u32) -> u32 {
        let known = self.inner.feature_level.lock().ok().and_then(|l| *l);
        if let Some((at, level)) = known {
            let trusted = if level >= need {
                FEATURE_LEVEL_TRUSTED
            } else {
                FEATURE_LEVEL_FRESH
            };
            if at.elapsed() < trusted {
                return level;
            }
        }
        let mut level = 0;
        let leader = self.leader();
        let others = self.inner.masters.iter().filter(|m| **m != leader).cloned();
        for m in std::iter::once(leader.clone()).chain(others) {
            let health = async {
                let resp = self
                    .inner
                    .http
                    .get(url(&m, paths::HEALTH))
                    .timeout(LEADER_PROBE_TIMEOUT)
                    .send()
                    .await
                    .ok()?;
                serde_json::from_slice::<MasterHealth>(&resp.bytes().await.ok()?).ok()
            };
            if let Some(h) = health.await {
                level = h.feature_level;
                break;
            }
        }
        if let Ok(mut l) = self.inner.feature_level.lock() {
            *l = Some((std::time::Instant::now(), level));
        }
        level
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

    /// Sends an encoded heartbeat to the master at `master` itself, once (chunkservers beat
    /// every master, not only the leader, so that a new leader knows them already).
    /// `with_report`: the beat carries a full chunk report, which a master judges chunk by chunk
    /// (a longer deadline than a beat whose size comes from its `added` list).
    pub async fn heartbeat_to(
        &self,
        master: &str,
        body: Vec<u8>,
        with_report: bool,
    ) -> Result<HeartbeatReply, MetaError> {
        let timeout = if with_report {
            attempt_timeout(paths::HEARTBEAT, body.len().max(FULL_REPORT_BYTES + 1))
        } else {
            HEARTBEAT_ATTEMPT_TIMEOUT
        };
        match self
            .call_once_within(master, paths::HEARTBEAT, body, timeout)
            .await
        {
            Ok(answer) => answer,
            Err(e) => Err(MetaError::Unavailable(format!("master {e}"))),
        }
    }

    /// The masters this client was given.
    pub fn masters(&self) -> &[String] {
        &self.inner.masters
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
        self.inner
            .leader
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default()
    }

    fn set_leader(&self, addr: String) {
        if let Ok(mut l) = self.inner.leader.lock() {
            *l = addr;
        }
    }

    /// Moves on to the next master in the list after `current`.
    fn rotate(&self, current: &str) {
        let masters = &self.inner.masters;
        let pos = masters.iter().position(|m| m == current);
        let next = match pos {
            Some(i) => masters[(i + 1) % masters.len()].clone(),
            None => masters.first().cloned().unwrap_or_default(),
        };
        self.set_leader(next);
    }

    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        path: &str,
        body: &Req,
    ) -> Result<Resp, MetaError> {
        self.try_call(path, body).await.map_err(MetaError::from)
    }

    /// Calls the leader, following it and retrying through [`MASTER_RETRY_WINDOW`].
    async fn try_call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        path: &str,
        body: &Req,
    ) -> Result<Resp, Failure> {
        let body = serde_json::to_vec(body).map_err(|e| MetaError::BadRequest(e.to_string()))?;
        let deadline = tokio::time::Instant::now() + MASTER_RETRY_WINDOW;
        let mut backoff = FIRST_BACKOFF;
        // A client that has had no answer yet asks who leads at once, on a call's first attempt
        // only: the first master of its list may be the one cut off.
        let mut at_once = !self
            .inner
            .answered
            .load(std::sync::atomic::Ordering::Relaxed);
        loop {
            let target = self.leader();
            let probe_at_once = std::mem::take(&mut at_once);
            let result = tokio::select! {
                r = self.call_once::<Resp>(&target, path, body.clone()) => r,
                // The master asked went silent and another one leads now: ask that one. The
                // abandoned attempt may still take effect; writes carry their request id, so a
                // write is applied once however often it is sent.
                leader = self.other_leader(&target, probe_at_once), if self.inner.masters.len() > 1 => {
                    tracing::debug!(master = %target, leader = %leader, "following a new leader");
                    self.set_leader(leader);
                    if tokio::time::Instant::now() > deadline {
                        return Err(MetaError::Unavailable(format!(
                            "master {target} did not answer"
                        ))
                        .into());
                    }
                    continue;
                }
            };
            let retry = match result {
                Ok(Ok(resp)) => {
                    self.inner
                        .answered
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                    return Ok(resp);
                }
                Ok(Err(MetaError::NotLeader(Some(leader)))) if leader != target => {
                    self.set_leader(leader);
                    continue;
                }
                // No leader named (an election, or a leader that lost its quorum), or itself:
                // ask the next master, which may know the new one.
                Ok(Err(MetaError::NotLeader(_))) => {
                    self.rotate(&target);
                    MetaError::NotLeader(None)
                }
                Ok(Err(e)) => return Err(e.into()),
                // No such path: an older master; asking again will not help.
                Err(e) if e.is_not_found() => return Err(Failure::NoSuchPath(e)),
                // A master of another cluster: asking again, or another master, will not help.
                Err(e) if e.status() == Some(reqwest::StatusCode::CONFLICT) => {
                    return Err(MetaError::BadRequest(format!("master {e}")).into())
                }
                Err(e) => {
                    tracing::debug!(master = %target, error = %e, "master call failed");
                    self.rotate(&target);
                    MetaError::Unavailable(format!("master {e}"))
                }
            };
            if tokio::time::Instant::now() + backoff > deadline {
                return Err(retry.into());
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Waits until the masters name a leader other than `target` ([`MasterClient::probe`]),
    /// asking after [`LEADER_PROBE_AFTER`] of silence (at once with `at_once`), then every
    /// [`LEADER_PROBE_AGAIN`] while an election is under way, and answers its address. Pending for as long as they name none or `target`.
    async fn other_leader(&self, target: &str, at_once: bool) -> String {
        let mut wait = if at_once {
            Duration::ZERO
        } else {
            LEADER_PROBE_AFTER
        };
        loop {
            tokio::time::sleep(wait).await;
            wait = match self.probe().await {
                Some(leader) if leader != target => return leader,
                // It still leads (a long call, or a slow leader): ask again at the first pace.
                Some(_) => LEADER_PROBE_AFTER,
                // No leader in the newest term: an election is under way.
                None => LEADER_PROBE_AGAIN,
            };
        }
    }

    /// The leader as the masters say: every master's `/health` is asked, and a master that says
    /// it leads counts only in the highest term any master reports (followers included), so a
    /// leader cut off from the others, which still thinks it leads in its old term, is never
    /// taken for the new one. Concurrent calls share one probe, and its answer for
    /// [`LEADER_PROBE_SHARED`]: a failover does not bring a storm of probes.
    async fn probe(&self) -> Option<String> {
        let mut last = self.inner.probed.lock().await;
        if let Some((at, found)) = &*last {
            if at.elapsed() < LEADER_PROBE_SHARED {
                return found.clone();
            }
        }
        let started = std::time::Instant::now();
        let mut probes = tokio::task::JoinSet::new();
        for m in &self.inner.masters {
            let (http, m) = (self.inner.http.clone(), m.clone());
            probes.spawn(async move {
                let resp = http
                    .get(url(&m, paths::HEALTH))
                    .timeout(LEADER_PROBE_TIMEOUT)
                    .send()
                    .await
                    .ok()?;
                let health: MasterHealth =
                    serde_json::from_slice(&resp.bytes().await.ok()?).ok()?;
                Some((health.raft.term, health.raft.role == "leader", m))
            });
        }
        // A silent master (paused, cut off) holds its probe for the whole timeout: once a
        // majority has answered and names a leader in the highest term heard, that is enough.
        let majority = self.inner.masters.len() / 2 + 1;
        let mut answers: Vec<(u64, bool, String)> = Vec::new();
        let leader_of = |answers: &[(u64, bool, String)]| {
            let newest = answers.iter().map(|(term, _, _)| *term).max();
            answers
                .iter()
                .find(|(term, leads, _)| *leads && Some(*term) == newest)
                .map(|(_, _, addr)| addr.clone())
        };
        let mut grace_ends = None;
        loop {
            let next = match grace_ends {
                Some(end) => match tokio::time::timeout_at(end, probes.join_next()).await {
                    Ok(next) => next,
                    Err(_) => break,
                },
                None => probes.join_next().await,
            };
            let Some(done) = next else { break };
            if let Ok(Some(answer)) = done {
                answers.push(answer);
            }
            if answers.len() >= majority {
                if leader_of(&answers).is_some() {
                    break;
                }
                grace_ends.get_or_insert(tokio::time::Instant::now() + LEADER_PROBE_GRACE);
            }
        }
        let found = leader_of(&answers);
        // Stamped when it started: it says who led then.
        *last = Some((started, found.clone()));
        found
    }

    async fn call_once<Resp: DeserializeOwned>(
        &self,
        target: &str,
        path: &str,
        body: Vec<u8>,
    ) -> Result<Result<Resp, MetaError>, CallError> {
        let timeout = attempt_timeout(path, body.len());
        self.call_once_within(target, path, body, timeout).await
    }

    async fn call_once_within<Resp: DeserializeOwned>(
        &self,
        target: &str,
        path: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Result<Resp, MetaError>, CallError> {
        let rb = self
            .inner
            .http
            .post(url(target, path))
            .header("content-type", "application/json")
            .timeout(timeout)
            .body(body);
        let resp = internal_headers(rb, &self.inner.secret, "")
            .send()
            .await
            .map_err(|e| CallError::transport(target, e))?;
        if !resp.status().is_success() {
            return Err(CallError::from_response(target, resp).await);
        }
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| CallError::transport(target, e))?;
        serde_json::from_slice(&bytes).map_err(|e| CallError::decode(target, e))
    }
}

/// How a call to the masters failed, before the caller is told as a [`MetaError`].
enum Failure {
    /// The answer of a master, or the failure after every retry.
    Meta(MetaError),
    /// The master has no such path: an older master (during an upgrade) that does not know
    /// this call, which the caller may make another way.
    NoSuchPath(CallError),
}

impl From<MetaError> for Failure {
    fn from(e: MetaError) -> Self {
        Failure::Meta(e)
    }
}

impl From<Failure> for MetaError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Meta(e) => e,
            Failure::NoSuchPath(e) => MetaError::BadRequest(format!("master {e}")),
        }
    }
}

/// A write slot taken by [`MasterClient::take_writes`], freed when dropped (with the task that
/// carries the batch).
struct WriteSlot(Arc<Shared>);

impl Drop for WriteSlot {
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

/// Client side of the chunkserver data API. Its failures are [`CallError`]s: a caller tells a
/// node without the path or the chunk ([`CallError::is_not_found`]) or out of space
/// ([`CallError::is_insufficient_storage`]) from a node that did not answer.
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
    ) -> Result<PutChunkReply, CallError> {
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
    ) -> Result<crate::batch::PutBatchReply, CallError> {
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
    ) -> Result<PutChunkReply, CallError> {
        let body = serde_json::to_vec(order).map_err(|e| CallError::Encode(e.into()))?;
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
    ) -> Result<T, CallError> {
        let resp = internal_headers(rb, &self.secret, "")
            .send()
            .await
            .map_err(|e| CallError::transport(addr, e))?;
        if !resp.status().is_success() {
            return Err(CallError::from_response(addr, resp).await);
        }
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| CallError::transport(addr, e))?;
        serde_json::from_slice(&bytes).map_err(|e| CallError::decode(addr, e))
    }

    /// Opens a read of `len` bytes of a chunk from `offset`; the body streams.
    pub async fn get(
        &self,
        node: &NodeAddr,
        id: ChunkId,
        offset: u64,
        len: u64,
        request_id: &str,
    ) -> Result<reqwest::Response, CallError> {
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
            .map_err(|e| CallError::transport(&node.addr, e))?;
        if !resp.status().is_success() {
            return Err(CallError::from_response(&node.addr, resp).await);
        }
        Ok(resp)
    }
}

#[cfg(test)]
mod tests;
