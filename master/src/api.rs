//! The master's internal HTTP API: metadata writes and reads, placement, chunkserver registration
//! and heartbeats, status, and the Raft messages between masters. Everything under `/internal`
//! needs the cluster secret; `/health` is open so that health checks need no credentials.

use crate::network::paths as raft_paths;
use crate::node::{peer_health, Master};
use crate::raft::TypeConfig;
use crate::state::{Batched, MetaReplyKind, Op, Reply};
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use openraft::error::{ClientWriteError, RaftError};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use tinydfs_proto::client::paths;
use tinydfs_proto::meta::*;
use tinydfs_proto::time::now_ms;
use tinydfs_proto::{ChunkMeta, NodeId};

type Shared = Arc<Master>;

/// How long a membership change may take to commit before the admin call gives up.
const MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a master being added may take to answer its health check (it may be starting).
const JOIN_HEALTH_WAIT: Duration = Duration::from_secs(15);

/// Largest control message the master reads (a full chunk report of ~10 million chunks).
pub const MAX_INTERNAL_BODY: usize = 1 << 30;
/// The largest write, or batch of writes, proposed as one log entry: well under the log's
/// record limit (256 MiB, `store::log`), because an entry the log refuses stops every master
/// that must append it. An S3 object's record is kilobytes (megabytes for a 5 TB object).
pub const MAX_COMMAND_BYTES: usize = 64 << 20;

/// Refuses a write body too large to be one log entry.
fn check_command_size(body: &[u8]) -> Result<(), MetaError> {
    if body.len() > MAX_COMMAND_BYTES {
        return Err(MetaError::BadRequest(format!(
            "a write of {} bytes is larger than one log entry may be ({MAX_COMMAND_BYTES})",
            body.len()
        )));
    }
    Ok(())
}

/// The internal router.
pub fn router(m: Shared) -> Router {
    let internal = Router::new()
        .route(paths::WRITE, post(write))
        .route(paths::WRITE_BATCH, post(write_batch))
        .route(paths::READ, post(read))
        .route(paths::PLACEMENT, post(placement))
        .route(paths::REGISTER, post(register))
        .route(paths::HEARTBEAT, post(heartbeat))
        .route(paths::STATUS, post(status).get(status))
        .route(paths::MEMBERS, post(members))
        .route(paths::GATEWAY_BEAT, post(gateway_beat))
        .route(paths::FSCK, post(fsck).get(fsck))
        .route(paths::DRAIN, post(drain))
        .route(paths::REBALANCE, post(rebalance))
        .route(paths::BACKUP, post(backup).get(backup))
        .route(paths::BUCKET_USAGE, post(bucket_usage).get(bucket_usage))
        .route(raft_paths::APPEND, post(raft_append))
        .route(raft_paths::VOTE, post(raft_vote))
        .route(raft_paths::SNAPSHOT, post(raft_snapshot))
        .layer(middleware::from_fn_with_state(m.clone(), require_secret))
        // Full chunk reports, Raft batches and snapshot pieces exceed axum's 2 MiB default; the
        // internal listener only takes bodies from holders of the cluster secret.
        .layer(axum::extract::DefaultBodyLimit::max(MAX_INTERNAL_BODY));
    Router::new()
        .route(paths::HEALTH, get(health))
        .route(paths::HEALTH_ALT, get(health))
        .merge(internal)
        .with_state(m)
}

async fn require_secret(State(m): State<Shared>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(tinydfs_proto::SECRET_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !tinydfs_proto::secrets_equal(given, &m.config.secret) {
        return (StatusCode::FORBIDDEN, "bad cluster secret").into_response();
    }
    if let Some(v) = version_mismatch(req.headers()) {
        return (StatusCode::BAD_REQUEST, v).into_response();
    }
    // Requests of another cluster (a node that belongs to a cluster whose masters lost their
    // metadata, a master of another group) are refused on every route.
    // Never wait for the state's lock here (a snapshot build holds it for seconds, and every
    // Raft message passes here): the id is cached once known, and never changes after.
    let mut ours = tinydfs_proto::http::cluster_id();
    if ours.is_empty() {
        if let Ok(a) = m.applied.try_read() {
            ours = a.state.cluster_id.clone();
        }
        if !ours.is_empty() {
            tinydfs_proto::http::set_cluster_id(&ours);
        }
    }
    let theirs = req
        .headers()
        .get(tinydfs_proto::CLUSTER_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if let Some(why) = tinydfs_proto::http::cluster_mismatch(theirs, &ours) {
        return (StatusCode::CONFLICT, why).into_response();
    }
    next.run(req).await
}

fn version_mismatch(h: &HeaderMap) -> Option<String> {
    let v = h.get(tinydfs_proto::VERSION_HEADER)?.to_str().ok()?;
    (v != tinydfs_proto::WIRE_VERSION.to_string())
        .then(|| format!("wire version {v} is not {}", tinydfs_proto::WIRE_VERSION))
}

fn reply<T: Serialize>(r: Result<T, MetaError>) -> Response {
    match serde_json::to_vec(&r) {
        Ok(b) => ([("content-type", "application/json")], b).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, MetaError> {
    serde_json::from_slice(body).map_err(|e| MetaError::BadRequest(e.to_string()))
}

async fn health(State(m): State<Shared>) -> Response {
    let body = m.health();
    match serde_json::to_vec(&body) {
        Ok(b) => ([("content-type", "application/json")], b).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn members(State(m): State<Shared>, body: Bytes) -> Response {
    reply(members_inner(&m, &body).await)
}

/// Adds a master (as a learner that catches up, then a voter) or removes one (retiring its id).
async fn members_inner(m: &Master, body: &[u8]) -> Result<Vec<u64>, MetaError> {
    let change: MembershipChange = parse(body)?;
    m.check_leader()?;
    let _one_at_a_time = m.membership_lock.lock().await;
    let fail = |e: RaftError<u64, ClientWriteError<u64, BasicNode>>| match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => m.forward(f),
        e => MetaError::Unavailable(e.to_string()),
    };
    let voters: std::collections::BTreeSet<u64> = m.membership().voter_ids().collect();
    let retire = match &change {
        MembershipChange::Remove { id } => Some(*id),
        MembershipChange::Add { .. } => None,
    };
    let new_voters = match change {
        MembershipChange::Add { id, addr } => {
            if m.state()?.state.retired_masters.contains(&id) {
                return Err(MetaError::BadRequest(format!(
                    "master id {id} was removed before; Raft ids are never reused"
                )));
            }
            // It must be able to apply everything the log may hold (`features`): the level
            // read after a barrier entry, so that a level another leader proposed is applied
            // here before it is compared. Asked for a while: it may be starting still.
            m.propose(None, Op::Tick).await?;
            let level = m.feature_level();
            let health = {
                let deadline = tokio::time::Instant::now() + JOIN_HEALTH_WAIT;
                loop {
                    match peer_health(&addr).await {
                        Some(h) => break Some(h),
                        None if tokio::time::Instant::now() < deadline => {
                            tokio::time::sleep(Duration::from_millis(250)).await
                        }
                        None => break None,
                    }
                }
            };
            match health {
                Some(h) if h.id != id => {
                    return Err(MetaError::BadRequest(format!(
                        "the master at {addr} is master {}, not {id}",
                        h.id
                    )))
                }
                Some(h) if h.features >= level => {}
                Some(h) => {
                    return Err(MetaError::BadRequest(format!(
                        "master {id} at {addr} can apply feature level {} and the group is at \
                         {level}: upgrade it first",
                        h.features
                    )))
                }
                None => {
                    return Err(MetaError::BadRequest(format!(
                        "master {id} at {addr} does not answer: start it with --join first"
                    )))
                }
            }
            m.raft
                .add_learner(id, BasicNode { addr }, true)
                .await
                .map_err(fail)?;
            let mut v = voters;
            v.insert(id);
            v
        }
        MembershipChange::Remove { id } => {
            if !voters.contains(&id) {
                return Err(MetaError::BadRequest(format!(
                    "master {id} is not a member"
                )));
            }
            if voters.len() == 1 {
                return Err(MetaError::BadRequest(
                    "cannot remove the last master".into(),
                ));
            }
            let mut v = voters;
            v.remove(&id);
            // Joint consensus needs a majority of the remaining voters: refuse a removal that
            // would leave the group waiting for masters that do not answer.
            let membership = m.membership();
            let mut alive = 0;
            for voter in &v {
                let up = *voter == m.config.id
                    || match membership.get_node(voter) {
                        Some(n) => peer_health(&n.addr).await.is_some(),
                        None => false,
                    };
                alive += usize::from(up);
            }
            if alive * 2 <= v.len() {
                return Err(MetaError::BadRequest(format!(
                    "only {alive} of the remaining {} masters answer: bring them back first",
                    v.len()
                )));
            }
            v
        }
    };
    let changed = tokio::time::timeout(
        MEMBERSHIP_TIMEOUT,
        m.raft.change_membership(new_voters.clone(), false),
    )
    .await
    .map_err(|_| MetaError::Unavailable("the membership change did not commit in time".into()))?;
    changed.map_err(fail)?;
    if let Some(id) = retire {
        // Retired only once it is out of the group: a failed removal leaves the id usable.
        m.propose(None, Op::RetireMaster { id }).await?;
    }
    Ok(new_voters.into_iter().collect())
}

async fn write(State(m): State<Shared>, body: Bytes) -> Response {
    reply(write_inner(&m, &body).await)
}

async fn write_inner(m: &Master, body: &[u8]) -> Result<MetaReply, MetaError> {
    check_command_size(body)?;
    let req: WriteRequest = parse(body)?;
    m.check_leader()?;
    m.check_features(&req.write)?;
    note_locations(m, std::slice::from_ref(&req))?;
    let op = to_op(req.write)?;
    meta_reply(m.propose(Some(req.request_id), op).await?)
}

/// Several writes committed as one log entry ([`Op::Many`]): each keeps its request id and
/// gets its own answer, in order.
async fn write_batch(State(m): State<Shared>, body: Bytes) -> Response {
    reply(write_batch_inner(&m, &body).await)
}

async fn write_batch_inner(
    m: &Master,
    body: &[u8],
) -> Result<Vec<Result<MetaReply, MetaError>>, MetaError> {
    check_command_size(body)?;
    let reqs: Vec<WriteRequest> = parse(body)?;
    m.check_leader()?;
    note_locations(m, &reqs)?;
    let mut answers: Vec<Option<Result<MetaReply, MetaError>>> = Vec::with_capacity(reqs.len());
    let mut writes = Vec::with_capacity(reqs.len());
    for req in reqs {
        if let Err(e) = m.check_features(&req.write) {
            answers.push(Some(Err(e)));
            continue;
        }
        match to_op(req.write) {
            Ok(op) => {
                writes.push(Batched {
                    request_id: req.request_id,
                    op,
                });
                answers.push(None);
            }
            Err(e) => answers.push(Some(Err(e))),
        }
    }
    let count = writes.len();
    let replies = match count {
        // Every write was refused before the log: nothing to propose.
        0 => Vec::new(),
        _ => match m.propose(None, Op::Many(writes)).await? {
            MetaReplyKind::Many(r) if r.len() == count => r,
            _ => return Err(MetaError::Unavailable("a batch got a wrong answer".into())),
        },
    };
    let mut replies = replies.into_iter();
    Ok(answers
        .into_iter()
        .map(|a| {
            a.unwrap_or_else(|| match replies.next() {
                Some(Reply(r)) => r.and_then(meta_reply),
                None => Err(MetaError::Unavailable("a batch got a short answer".into())),
            })
        })
        .collect())
}

/// Records where the writes' new chunks are (soft state, for reads).
fn note_locations(m: &Master, reqs: &[WriteRequest]) -> Result<(), MetaError> {
    if reqs.iter().all(|r| r.locations.is_empty()) {
        return Ok(());
    }
    let mut reg = m.registry()?;
    for (chunk, nodes) in reqs.iter().flat_map(|r| &r.locations) {
        reg.add_replicas(*chunk, nodes);
    }
    Ok(())
}

/// The log operation of a client write.
fn to_op(write: MetaWrite) -> Result<Op, MetaError> {
    Ok(match write {
        MetaWrite::CreateUpload {
            bucket,
            key,
            attrs,
            initiator,
        } => Op::CreateUpload {
            upload_id: format!("{:032x}", rand::random::<u128>()),
            bucket,
            key,
            attrs,
            initiator,
        },
        // Its day length is the leader's to choose (`lifecycle_day_ms`), not a caller's.
        MetaWrite::LifecycleExpire { .. } => {
            return Err(MetaError::BadRequest(
                "LifecycleExpire is proposed by the leader's lifecycle worker only".into(),
            ))
        }
        w => Op::Meta(w),
    })
}

/// The answer to a client write.
fn meta_reply(kind: MetaReplyKind) -> Result<MetaReply, MetaError> {
    match kind {
        MetaReplyKind::Meta(d) => Ok(d.into()),
        _ => Err(MetaError::BadRequest("unexpected reply".into())),
    }
}

async fn read(State(m): State<Shared>, body: Bytes) -> Response {
    reply(read_inner(&m, &body).await)
}

async fn read_inner(m: &Master, body: &[u8]) -> Result<MetaReply, MetaError> {
    let q: MetaRead = parse(body)?;
    m.linearize().await?;
    let a = m.state()?;
    let s = &a.state;
    Ok(match q {
        MetaRead::ListBuckets => MetaReply::Buckets(
            s.buckets
                .iter()
                .map(|(name, b)| BucketInfo {
                    name: name.clone(),
                    created_ms: b.created_ms,
                    owner: b.owner.clone(),
                    public_read: b.public_read,
                })
                .collect(),
        ),
        MetaRead::HeadBucket { bucket } => {
            let b = s.buckets.get(&bucket).ok_or(MetaError::NoSuchBucket)?;
            MetaReply::Bucket(BucketInfo {
                name: bucket,
                created_ms: b.created_ms,
                owner: b.owner.clone(),
                public_read: b.public_read,
            })
        }
        MetaRead::GetObject { bucket, key } => {
            let b = s.buckets.get(&bucket).ok_or(MetaError::NoSuchBucket)?;
            let record = b
                .objects
                .get(key.as_str())
                .ok_or(MetaError::NoSuchKey)?
                .to_record();
            let reg = m.registry()?;
            let replicas = record.chunks.iter().map(|c| reg.locations(&c.id)).collect();
            MetaReply::Object(ObjectLocation {
                record,
                replicas,
                settled: m.settled(),
            })
        }
        MetaRead::ListObjects(q) => MetaReply::List(s.list(&q)?),
        MetaRead::ListParts {
            bucket,
            key,
            upload_id,
        } => {
            if !s.buckets.contains_key(&bucket) {
                return Err(MetaError::NoSuchBucket);
            }
            let u = s
                .uploads
                .get(&upload_id)
                .filter(|u| u.bucket == bucket && u.key == key)
                .ok_or(MetaError::NoSuchUpload)?;
            MetaReply::Upload(UploadInfo {
                initiated_ms: u.initiated_ms,
                parts: u.parts.iter().map(|(n, p)| (*n, p.clone())).collect(),
                checksum: u.attrs.checksum.clone(),
            })
        }
        MetaRead::GetLifecycle { bucket } => {
            let b = s.buckets.get(&bucket).ok_or(MetaError::NoSuchBucket)?;
            MetaReply::Lifecycle(b.lifecycle.clone())
        }
        MetaRead::ListKeys => MetaReply::Keys(s.keys.values().cloned().collect()),
        MetaRead::ListUploads(q) => MetaReply::Uploads(s.list_uploads(&q)?),
        MetaRead::GetCors { bucket } => {
            let b = s.buckets.get(&bucket).ok_or(MetaError::NoSuchBucket)?;
            MetaReply::Cors(b.cors.clone())
        }
        MetaRead::GetBucketTags { bucket } => {
            let b = s.buckets.get(&bucket).ok_or(MetaError::NoSuchBucket)?;
            MetaReply::Tags(b.tags.clone())
        }
    })
}

async fn placement(State(m): State<Shared>, body: Bytes) -> Response {
    reply((|| {
        let req: PlacementRequest = parse(&body)?;
        m.check_leader()?;
        let reg = m.registry()?;
        let min = m.config.min_replicas.min(req.replicas).max(1);
        let mut pipelines = Vec::with_capacity(req.count);
        for _ in 0..req.count.min(1024) {
            let p = reg.place(req.replicas, min, &req.exclude).ok_or_else(|| {
                let warming = !m.settled();
                if warming || reg.live_count() < min {
                    // Too few chunkservers alive (or not yet reported to a new leader): a
                    // condition that passes, answered 503 so that clients retry.
                    MetaError::Unavailable(format!(
                        "{} live chunkservers, {min} needed",
                        reg.live_count()
                    ))
                } else {
                    MetaError::NoSpace(format!(
                        "fewer than {min} live chunkservers with free space above the reserve"
                    ))
                }
            })?;
            pipelines.push(p);
        }
        Ok(Placement { pipelines })
    })())
}

async fn register(State(m): State<Shared>, body: Bytes) -> Response {
    reply(register_inner(&m, &body).await)
}

async fn register_inner(m: &Master, body: &[u8]) -> Result<RegisterReply, MetaError> {
    let req: RegisterRequest = parse(body)?;
    m.check_leader()?;
    // A new leader may not have applied its whole log yet: identities must be current.
    m.linearize().await?;
    let (cluster_id, known) = {
        let a = m.state()?;
        let known = req.node_id.filter(|id| a.state.nodes.contains_key(id));
        (a.state.cluster_id.clone(), known)
    };
    if cluster_id.is_empty() {
        return Err(MetaError::Unavailable(
            "the cluster is not named yet".into(),
        ));
    }
    if let Some(theirs) = req.cluster_id.as_deref().filter(|c| !c.is_empty()) {
        if theirs != cluster_id {
            return Err(MetaError::BadRequest(format!(
                "this chunkserver belongs to cluster {theirs}, not {cluster_id}"
            )));
        }
    }
    let node_id = match known {
        Some(id) => id,
        None => match m
            .propose(
                req.request_id,
                Op::RegisterNode {
                    addr: req.addr.clone(),
                },
            )
            .await?
        {
            MetaReplyKind::NodeId(id) => id,
            _ => return Err(MetaError::Unavailable("no node id".into())),
        },
    };
    m.registry()?
        .register(node_id, req.addr, req.capacity, req.free, req.pid, req.zone);
    tracing::info!(node_id, "chunkserver registered");
    Ok(RegisterReply {
        node_id,
        cluster_id,
    })
}

async fn heartbeat(State(m): State<Shared>, body: Bytes) -> Response {
    reply(heartbeat_inner(&m, &body).await)
}

async fn heartbeat_inner(m: &Master, body: &[u8]) -> Result<HeartbeatReply, MetaError> {
    let hb: Heartbeat = parse(body)?;
    // The term first: a leader confirmed below leads in it (or a later one, which the
    // chunkserver then takes for a higher bar than needed, never a lower).
    let term = m.raft.metrics().borrow().current_term;
    if let Err(e) = m.check_leader() {
        // A chunkserver that beats every master keeps a follower's view of it current, so
        // that a new leader can place chunks at once; one that does not must find the leader.
        if hb.beats_every_master {
            return standby_heartbeat(m, &hb, term);
        }
        return Err(e);
    }
    // Deletions only out of safe mode: led for a dead-node timeout, every live chunkserver
    // reported in this term...
    let settled = m.settled() && m.registry()?.all_reported();
    let judging = hb.chunks.is_some() || m.registry()?.has_pending(hb.node_id);
    // ...and never from a stale view: a leader deposed without knowing it, or one behind its
    // log, would take chunks of leases it has not seen for garbage. Confirm leadership with a
    // quorum and apply everything committed first.
    let may_delete = settled && judging && m.linearize().await.is_ok();
    let a = m.state()?;
    let state = &a.state;
    let mut reg = m.registry()?;
    // A node of the log this registry has not heard of (this master restarted, or it leads
    // anew and the node's beats to it were lost) is taken from its heartbeat if it beats every
    // master; an older chunkserver registers again.
    if hb.beats_every_master && state.nodes.contains_key(&hb.node_id) {
        reg.adopt(&hb);
    }
    // A report counts as this leader's only if the node knew of a leader in this term when it
    // sent it (an older chunkserver cannot say: its reports count as they always did).
    let counts = !hb.beats_every_master || hb.leader_term >= term;
    let delete = reg.heartbeat(&hb, may_delete, counts, |c| unwanted(state, c));
    Ok(HeartbeatReply {
        reregister: delete.is_none(),
        cluster_id: state.cluster_id.clone(),
        safe_mode: !settled,
        delete: delete.unwrap_or_default(),
        term,
        leader: true,
        report_wanted: reg.report_wanted(hb.node_id),
        leader_addr: None,
    })
}

/// A heartbeat to a master that does not lead (or has lost its quorum): it keeps the node's
/// liveness, space and reported replicas, as a standby namenode does, and orders nothing.
fn standby_heartbeat(m: &Master, hb: &Heartbeat, term: u64) -> Result<HeartbeatReply, MetaError> {
    let a = m.state()?;
    let state = &a.state;
    if state.nodes.contains_key(&hb.node_id) {
        let mut reg = m.registry()?;
        reg.adopt(hb);
        // A follower's view guides reads only: no report it took counts for deletions.
        reg.heartbeat(hb, false, false, |c| unwanted(state, c));
        reg.note_added(hb.node_id, &hb.added, |c| unwanted(state, c));
    }
    Ok(HeartbeatReply {
        reregister: false,
        cluster_id: state.cluster_id.clone(),
        safe_mode: true,
        delete: Vec::new(),
        term,
        leader: false,
        report_wanted: false,
        leader_addr: m.leader_addr(None),
    })
}

/// Whether a reported replica must go: it differs from the committed chunk (stale), or no
/// object refers to its chunk and no live lease may still commit it (garbage). Such a
/// replica never counts as a copy.
fn unwanted(state: &crate::state::State, c: &ChunkMeta) -> bool {
    match state.chunks.get(&c.id) {
        Some(e) => e.len != c.len || e.crc32c != c.crc32c,
        None => state.is_garbage(&c.id),
    }
}

async fn gateway_beat(State(m): State<Shared>, body: Bytes) -> Response {
    reply((|| {
        let beat: GatewayBeat = parse(&body)?;
        m.check_leader()?;
        m.registry()?.gateway_beat(beat.addr, beat.pid);
        Ok(())
    })())
}

async fn status(State(m): State<Shared>) -> Response {
    reply(m.cluster_status().await)
}

/// Most problems one fsck answer lists.
const FSCK_MAX_PROBLEMS: usize = 1000;

async fn fsck(State(m): State<Shared>) -> Response {
    if let Err(e) = m.check_leader() {
        return reply::<FsckReport>(Err(e));
    }
    if let Err(e) = m.linearize().await {
        return reply::<FsckReport>(Err(e));
    }
    reply((|| {
        let a = m.state()?;
        let reg = m.registry()?;
        let wanted = m.config.replicas.max(1) as u64;
        let mut r = FsckReport {
            settled: m.settled(),
            chunks: a.state.chunks.len() as u64,
            uploads: a.state.uploads.len() as u64,
            ..Default::default()
        };
        let mut check = |bucket: &str, key: &str, upload: Option<&str>, chunks: &[ChunkMeta]| {
            for c in chunks {
                let copies = reg.good_copies(&c.id) as u64;
                let state = if reg.live_copies(&c.id) == 0 {
                    r.missing += 1;
                    "missing"
                } else if copies < wanted && reg.lost_lately(&c.id) {
                    r.corrupt += 1;
                    "corrupt"
                } else if copies < wanted {
                    r.under_replicated += 1;
                    "under-replicated"
                } else {
                    continue;
                };
                if r.problems.len() >= FSCK_MAX_PROBLEMS {
                    r.truncated = true;
                    continue;
                }
                r.problems.push(FsckProblem {
                    bucket: bucket.to_string(),
                    key: key.to_string(),
                    upload_id: upload.map(String::from),
                    chunk: c.id,
                    copies,
                    wanted,
                    state: state.into(),
                });
            }
        };
        for (name, b) in &a.state.buckets {
            for (key, o) in &b.objects {
                r.objects += 1;
                check(name, &key, None, &o.chunks());
            }
        }
        for (id, u) in &a.state.uploads {
            for p in u.parts.values() {
                check(&u.bucket, &u.key, Some(id), &p.chunks);
            }
        }
        Ok(r)
    })())
}

/// A consistent copy of the whole metadata, as the leader has applied it.
async fn backup(State(m): State<Shared>) -> Response {
    if let Err(e) = m.check_leader() {
        return reply::<()>(Err(e));
    }
    if let Err(e) = m.linearize().await {
        return reply::<()>(Err(e));
    }
    let Ok(a) = m.state() else {
        return reply::<()>(Err(MetaError::Unavailable("state lock".into())));
    };
    let copy = crate::state::BackupRef {
        version: crate::state::backup_version(&a.state),
        taken_ms: now_ms(),
        applied_index: a.last_applied.map_or(0, |l| l.index),
        state: &a.state,
    };
    reply::<&crate::state::BackupRef>(Ok(&copy))
}

/// Every bucket with its owner, object count and bytes.
async fn bucket_usage(State(m): State<Shared>) -> Response {
    if let Err(e) = m.check_leader() {
        return reply::<Vec<BucketUsage>>(Err(e));
    }
    if let Err(e) = m.linearize().await {
        return reply::<Vec<BucketUsage>>(Err(e));
    }
    reply((|| {
        let a = m.state()?;
        Ok(a.state
            .buckets
            .iter()
            .map(|(name, b)| BucketUsage {
                name: name.clone(),
                owner: b.owner.clone(),
                created_ms: b.created_ms,
                objects: b.objects.len() as u64,
                bytes: b.objects.values().map(|o| o.size).sum(),
            })
            .collect::<Vec<_>>())
    })())
}

async fn drain(State(m): State<Shared>, body: Bytes) -> Response {
    reply(drain_inner(&m, &body).await)
}

async fn drain_inner(m: &Master, body: &[u8]) -> Result<NodeId, MetaError> {
    let req: DrainRequest = parse(body)?;
    m.check_leader()?;
    m.linearize().await?;
    let node = {
        let a = m.state()?;
        let by_id = req
            .node
            .parse::<NodeId>()
            .ok()
            .filter(|id| a.state.nodes.contains_key(id));
        let by_addr = || {
            a.state
                .nodes
                .iter()
                .find(|(_, n)| n.addr == req.node)
                .map(|(id, _)| *id)
        };
        by_id.or_else(by_addr).ok_or_else(|| {
            MetaError::BadRequest(format!("no chunkserver is known as {}", req.node))
        })?
    };
    m.propose(
        None,
        Op::Drain {
            node,
            drain: req.drain,
        },
    )
    .await?;
    m.refresh_draining()?;
    Ok(node)
}

async fn rebalance(State(m): State<Shared>, body: Bytes) -> Response {
    reply((|| {
        let start: bool = parse(&body)?;
        m.check_leader()?;
        let mut reg = m.registry()?;
        reg.rebalancing = start;
        Ok(RebalanceStatus {
            running: reg.rebalancing,
            usage: reg.usages(),
            threshold: m.config.rebalance_threshold,
        })
    })())
}

fn raft_reply<T: Serialize, E: Serialize>(r: Result<T, E>) -> Response {
    match serde_json::to_vec(&r) {
        Ok(b) => ([("content-type", "application/json")], b).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn raft_append(State(m): State<Shared>, body: Bytes) -> Response {
    match serde_json::from_slice::<openraft::raft::AppendEntriesRequest<TypeConfig>>(&body) {
        Ok(req) => raft_reply(m.raft.append_entries(req).await),
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

async fn raft_vote(State(m): State<Shared>, body: Bytes) -> Response {
    match serde_json::from_slice(&body) {
        Ok(req) => raft_reply(m.raft.vote(req).await),
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

async fn raft_snapshot(State(m): State<Shared>, body: Bytes) -> Response {
    match serde_json::from_slice::<openraft::raft::InstallSnapshotRequest<TypeConfig>>(&body) {
        Ok(req) => raft_reply(m.raft.install_snapshot(req).await),
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_too_large_for_one_log_entry_is_refused_before_it_is_proposed() {
        assert!(check_command_size(&vec![b' '; MAX_COMMAND_BYTES]).is_ok());
        let e = check_command_size(&vec![b' '; MAX_COMMAND_BYTES + 1]).unwrap_err();
        assert!(matches!(e, MetaError::BadRequest(_)), "{e:?}");
        // The log takes what is proposed: one entry of this size is far under its limit.
        const { assert!(MAX_COMMAND_BYTES * 2 < 256 << 20) };
    }
}
