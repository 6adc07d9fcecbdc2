//! The master's durable state and the pure state machine that changes it.
//!
//! Every change is a [`Command`] taken from the replicated log. The leader fills in the time and any
//! ids before proposing it, so [`State::apply`] reads no clock and draws no random number: every
//! member that applies the same log reaches the same state.

use crate::idmap::IdMap;
use crate::namespace::Objects;
use crate::object::Object;
use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tinydfs_proto::meta::*;
use tinydfs_proto::*;

/// Version of [`Command`]s written to the log; applying a newer version is refused.
pub const COMMAND_VERSION: u16 = 1;
/// How long a request id is remembered so that a retried write is applied once: three times
/// the window in which a client retries one write ([`MASTER_RETRY_WINDOW`], 20 s, which covers a
/// leader change), leaving room for clock differences between successive leaders. Each
/// remembered write costs memory (about 100 bytes) for this long, so at 5,000 writes/s the table
/// holds 300,000 answers rather than the 4.5 million a 15-minute memory held.
///
/// [`MASTER_RETRY_WINDOW`]: tinydfs_proto::client::MASTER_RETRY_WINDOW
pub const REQUEST_ID_TTL_MS: u64 =
    3 * tinydfs_proto::client::MASTER_RETRY_WINDOW.as_millis() as u64;
/// How long a completed multipart upload is remembered so that a repeated Complete succeeds.
pub const COMPLETED_UPLOAD_TTL_MS: u64 = 24 * 3600 * 1000;
/// Minimum size of every part but the last, as on AWS S3.
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// Life of an upload lease; gateways renew at a third of it.
pub const LEASE_TTL_MS: u64 = 60_000;

/// Version of [`Backup`] files.
pub const BACKUP_VERSION: u16 = 1;

/// A consistent copy of the metadata (`tinydfs admin backup`), restored with `--restore`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Backup {
    pub version: u16,
    pub taken_ms: u64,
    /// Log index of the last entry the copy includes.
    pub applied_index: u64,
    pub state: State,
}

/// [`Backup`] by reference, to write one without copying the state.
#[derive(Serialize)]
pub struct BackupRef<'a> {
    pub version: u16,
    pub taken_ms: u64,
    pub applied_index: u64,
    pub state: &'a State,
}

impl Backup {
    /// Reads a backup file, refusing other versions and empty clusters.
    pub fn load(path: &std::path::Path) -> anyhow::Result<Backup> {
        let bytes = std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("cannot read the backup {}: {e}", path.display()))?;
        let b: Backup = serde_json::from_slice(&bytes)
            .map_err(|e| anyhow::anyhow!("{} is not a tinydfs backup: {e}", path.display()))?;
        anyhow::ensure!(
            b.version == BACKUP_VERSION,
            "backup version {} is not {BACKUP_VERSION}",
            b.version
        );
        anyhow::ensure!(
            !b.state.cluster_id.is_empty(),
            "the backup holds no cluster"
        );
        Ok(b)
    }
}

/// Shortest lease life a gateway may ask for.
pub const MIN_LEASE_TTL_MS: u64 = 100;

/// Longest lease life a gateway may ask for.
pub const MAX_LEASE_TTL_MS: u64 = 3600 * 1000;

/// The life of a lease asked for with `ttl_ms`.
fn lease_ttl(ttl_ms: Option<u64>) -> u64 {
    ttl_ms
        .unwrap_or(LEASE_TTL_MS)
        .clamp(MIN_LEASE_TTL_MS, MAX_LEASE_TTL_MS)
}

/// An upload lease held by a gateway.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Lease {
    pub holder: String,
    pub expires_ms: u64,
}

/// One entry of the replicated log.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Command {
    pub version: u16,
    /// Set for client writes: a retry with the same id gets the first answer.
    pub request_id: Option<u128>,
    /// Chosen by the leader when it proposed the entry.
    pub time_ms: u64,
    pub op: Op,
}

/// What a [`Command`] does.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Op {
    /// Names the cluster; applied once, by the first leader.
    Init { cluster_id: String },
    /// Gives a chunkserver an id (the next free one).
    RegisterNode { addr: String },
    /// A master id left the group: it is never used again.
    RetireMaster { id: u64 },
    /// A multipart upload whose id the leader chose.
    CreateUpload {
        upload_id: String,
        bucket: String,
        key: String,
        attrs: ObjectAttrs,
        #[serde(default)]
        initiator: String,
    },
    /// Any other metadata write, as the gateway asked for it.
    Meta(MetaWrite),
    /// Only advances the clock, so leases expire (and their chunks become collectable) while no
    /// gateway writes anything.
    Tick,
    /// Starts (`drain`) or cancels the decommissioning of a chunkserver.
    Drain { node: NodeId, drain: bool },
    /// Replaces a new, empty state by a backup (`tinydfs master --restore`).
    Restore { state: Box<State> },
    /// Several client writes in one entry (a gateway's concurrent commits), applied in order,
    /// each with its own request id and answer.
    Many(Vec<Batched>),
}

/// One write of an [`Op::Many`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Batched {
    pub request_id: u128,
    pub op: Op,
}

/// The answer of applying a command (a serializable `Result`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reply(pub Result<MetaReplyKind, MetaError>);

/// [`MetaReply`] plus the answers only the master's own commands have.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum MetaReplyKind {
    Meta(MetaReplyData),
    NodeId(NodeId),
    /// The answers of an [`Op::Many`], in order.
    Many(Vec<Reply>),
}

/// A serializable, comparable copy of the replies writes produce.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum MetaReplyData {
    Done,
    Created(bool),
    Committed {
        etag: String,
        last_modified_ms: u64,
    },
    UploadCreated {
        upload_id: String,
    },
    /// How many keys a DeleteObjects named (each counts as deleted, present or not).
    Deleted(u64),
    Lease {
        id: u32,
        expires_ms: u64,
    },
    /// A completed multipart upload, with the new object's checksums.
    Completed {
        etag: String,
        last_modified_ms: u64,
        checksums: Vec<(String, String)>,
    },
}

impl From<MetaReplyData> for MetaReply {
    fn from(d: MetaReplyData) -> Self {
        match d {
            MetaReplyData::Done => MetaReply::Done,
            MetaReplyData::Created(c) => MetaReply::Created(c),
            MetaReplyData::Committed {
                etag,
                last_modified_ms,
            } => MetaReply::Committed {
                etag,
                last_modified_ms,
            },
            MetaReplyData::UploadCreated { upload_id } => MetaReply::UploadCreated { upload_id },
            MetaReplyData::Deleted(k) => MetaReply::Deleted(k),
            MetaReplyData::Lease { id, expires_ms } => MetaReply::Lease { id, expires_ms },
            MetaReplyData::Completed {
                etag,
                last_modified_ms,
                checksums,
            } => MetaReply::Completed {
                etag,
                last_modified_ms,
                checksums,
            },
        }
    }
}

/// A write's answer as the request-id table keeps it: the frequent answers in 32 bytes without
/// heap memory (a commit's ETag as its MD5), any other as the whole reply.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Answer {
    Done,
    Created(bool),
    /// `Committed` with an ETag of 32 lowercase hex digits.
    Committed {
        md5: [u8; 16],
        ms: u64,
    },
    Deleted(u64),
    Other(Box<Reply>),
}

impl Answer {
    fn of(reply: &Reply) -> Answer {
        match &reply.0 {
            Ok(MetaReplyKind::Meta(MetaReplyData::Done)) => Answer::Done,
            Ok(MetaReplyKind::Meta(MetaReplyData::Created(c))) => Answer::Created(*c),
            Ok(MetaReplyKind::Meta(MetaReplyData::Deleted(n))) => Answer::Deleted(*n),
            Ok(MetaReplyKind::Meta(MetaReplyData::Committed {
                etag,
                last_modified_ms,
            })) if etag.len() == 32 && !etag.bytes().any(|b| b.is_ascii_uppercase()) => {
                let mut md5 = [0u8; 16];
                match hex::decode_to_slice(etag, &mut md5) {
                    Ok(()) => Answer::Committed {
                        md5,
                        ms: *last_modified_ms,
                    },
                    Err(_) => Answer::Other(Box::new(reply.clone())),
                }
            }
            _ => Answer::Other(Box::new(reply.clone())),
        }
    }

    fn reply(&self) -> Reply {
        match self {
            Answer::Done => ok(MetaReplyData::Done),
            Answer::Created(c) => ok(MetaReplyData::Created(*c)),
            Answer::Deleted(n) => ok(MetaReplyData::Deleted(*n)),
            Answer::Committed { md5, ms } => ok(MetaReplyData::Committed {
                etag: hex::encode(md5),
                last_modified_ms: *ms,
            }),
            Answer::Other(r) => (**r).clone(),
        }
    }
}

/// A bucket and its objects, keys in UTF-8 byte order (the order S3 lists them in).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Bucket {
    pub created_ms: u64,
    pub owner: String,
    /// Objects in their compact form, stored as [`ObjectRecord`]s in snapshots and backups.
    pub objects: Objects,
    /// The bucket's lifecycle rules (none: no lifecycle configuration).
    #[serde(default)]
    pub lifecycle: Vec<LifecycleRule>,
    /// Canned ACL `public-read`: anonymous requests may read.
    #[serde(default)]
    pub public_read: bool,
    /// The bucket's CORS rules (none: no CORS configuration).
    #[serde(default)]
    pub cors: Vec<CorsRule>,
}

/// An in-progress multipart upload: it holds its parts' chunks until completed or aborted.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Upload {
    pub bucket: String,
    pub key: String,
    pub initiated_ms: u64,
    pub attrs: ObjectAttrs,
    pub parts: BTreeMap<u32, PartRecord>,
    /// The access key that started it.
    #[serde(default)]
    pub initiator: String,
}

/// A completed upload, remembered for a while so that a repeated Complete is answered again.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CompletedUpload {
    pub bucket: String,
    pub key: String,
    pub parts: Vec<(u32, String)>,
    pub etag: String,
    pub completed_ms: u64,
    /// The object checksums the upload was completed with, answered again on a repeat.
    #[serde(default)]
    pub checksums: Vec<(String, String)>,
}

/// A chunk known to the metadata: its length, checksum and how many records use it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChunkEntry {
    pub len: u64,
    pub crc32c: u32,
    pub refs: u32,
}

/// A registered chunkserver's identity.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeIdentity {
    pub addr: String,
    pub registered_ms: u64,
    /// An operator asked for this node to be drained: nothing new is placed on it and its
    /// chunks are copied elsewhere, after which it holds nothing and may be removed.
    #[serde(default)]
    pub draining: bool,
}

/// Everything the master keeps durable.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct State {
    pub cluster_id: String,
    pub buckets: BTreeMap<String, Bucket>,
    pub uploads: BTreeMap<String, Upload>,
    pub completed_uploads: BTreeMap<String, CompletedUpload>,
    pub chunks: IdMap<ChunkId, ChunkEntry>,
    pub nodes: BTreeMap<NodeId, NodeIdentity>,
    pub next_node_id: NodeId,
    /// Recent request ids with their answers, in compact form. (Named apart from the
    /// `recent_requests` and hex-keyed `requests` of earlier snapshots, which are ignored: a
    /// retry racing an upgrade is applied again.)
    #[serde(default)]
    pub request_answers: IdMap<u128, Answer>,
    /// The same ids in the order they were applied, so expiry pops from the front.
    #[serde(default)]
    pub recent_order: std::collections::VecDeque<(u64, u128)>,
    /// Completed uploads in completion order, for the same reason.
    #[serde(default)]
    pub completed_order: std::collections::VecDeque<(u64, String)>,
    /// The time of the last applied command: the state machine's notion of now.
    pub clock_ms: u64,
    /// Master ids removed from the group; Raft ids are never reused.
    #[serde(default)]
    pub retired_masters: std::collections::BTreeSet<u64>,
    /// Lease ids `[start, end)` the cluster may have used after the backup this state was
    /// restored from: chunks named under them are never judged garbage (they may belong to
    /// objects this state does not know of).
    #[serde(default)]
    pub protected_leases: Option<(u32, u32)>,
    /// S3 access keys by id.
    #[serde(default)]
    pub keys: BTreeMap<String, AccessKey>,
    /// Live upload leases by id.
    #[serde(default)]
    pub leases: BTreeMap<u32, Lease>,
    #[serde(default)]
    pub next_lease_id: u32,
}

fn ok(d: MetaReplyData) -> Reply {
    Reply(Ok(MetaReplyKind::Meta(d)))
}

fn err(e: MetaError) -> Reply {
    Reply(Err(e))
}

impl State {
    /// Applies one command and returns its answer. Pure: depends only on the state and the command.
    pub fn apply(&mut self, cmd: &Command) -> Reply {
        if cmd.version > COMMAND_VERSION {
            return err(MetaError::BadRequest(format!(
                "command version {} is newer than {COMMAND_VERSION}",
                cmd.version
            )));
        }
        self.clock_ms = self.clock_ms.max(cmd.time_ms);
        self.expire(cmd.time_ms);
        if let Op::Many(writes) = &cmd.op {
            let replies = writes
                .iter()
                .map(|w| match w.op {
                    Op::Many(_) => err(MetaError::BadRequest("a batch inside a batch".into())),
                    _ => self.apply_once(Some(w.request_id), &w.op, cmd.time_ms),
                })
                .collect();
            return Reply(Ok(MetaReplyKind::Many(replies)));
        }
        self.apply_once(cmd.request_id, &cmd.op, cmd.time_ms)
    }

    /// Applies one write, or answers again the first answer of its request id.
    fn apply_once(&mut self, rid: Option<u128>, op: &Op, now: u64) -> Reply {
        if let Some(rid) = &rid {
            if let Some(answer) = self.request_answers.get(rid) {
                return answer.reply();
            }
        }
        let reply = self.apply_op(op, now);
        if let Some(rid) = rid {
            self.recent_order.push_back((now, rid));
            self.request_answers.insert(rid, Answer::of(&reply));
        }
        reply
    }

    /// Forgets request ids and completed uploads past their time to live (amortised O(1)).
    fn expire(&mut self, now: u64) {
        self.leases.retain(|_, l| l.expires_ms > now);
        while let Some((t, id)) = self.recent_order.front() {
            if now.saturating_sub(*t) < REQUEST_ID_TTL_MS {
                break;
            }
            self.request_answers.remove(id);
            self.recent_order.pop_front();
        }
        // A burst of writes leaves a long queue behind: give its memory back once mostly empty.
        let (len, cap) = (self.recent_order.len(), self.recent_order.capacity());
        if cap > 4 * len + 1024 {
            self.recent_order.shrink_to(2 * len + 1024);
        }
        while let Some((t, id)) = self.completed_order.front() {
            if now.saturating_sub(*t) < COMPLETED_UPLOAD_TTL_MS {
                break;
            }
            self.completed_uploads.remove(id);
            self.completed_order.pop_front();
        }
    }

    fn apply_op(&mut self, op: &Op, now: u64) -> Reply {
        match op {
            // Unpacked by `apply`: one here is nested.
            Op::Many(_) => err(MetaError::BadRequest("a batch inside a batch".into())),
            Op::Init { cluster_id } => {
                if self.cluster_id.is_empty() {
                    self.cluster_id = cluster_id.clone();
                }
                ok(MetaReplyData::Done)
            }
            Op::RegisterNode { addr } => {
                self.next_node_id = self.next_node_id.max(1);
                let id = self.next_node_id;
                self.next_node_id += 1;
                self.nodes.insert(
                    id,
                    NodeIdentity {
                        addr: addr.clone(),
                        registered_ms: now,
                        draining: false,
                    },
                );
                Reply(Ok(MetaReplyKind::NodeId(id)))
            }
            Op::RetireMaster { id } => {
                self.retired_masters.insert(*id);
                ok(MetaReplyData::Done)
            }
            Op::CreateUpload {
                upload_id,
                bucket,
                key,
                attrs,
                initiator,
            } => {
                if !self.buckets.contains_key(bucket) {
                    return err(MetaError::NoSuchBucket);
                }
                self.uploads.insert(
                    upload_id.clone(),
                    Upload {
                        bucket: bucket.clone(),
                        key: key.clone(),
                        initiated_ms: now,
                        attrs: attrs.clone(),
                        parts: BTreeMap::new(),
                        initiator: initiator.clone(),
                    },
                );
                ok(MetaReplyData::UploadCreated {
                    upload_id: upload_id.clone(),
                })
            }
            Op::Meta(w) => self.apply_meta(w, now),
            Op::Tick => ok(MetaReplyData::Done),
            Op::Restore { state } => {
                if !self.cluster_id.is_empty() || !self.buckets.is_empty() {
                    return err(MetaError::BadRequest(
                        "a backup can only be restored into a new, empty master group".into(),
                    ));
                }
                self.restore(state);
                ok(MetaReplyData::Done)
            }
            Op::Drain { node, drain } => match self.nodes.get_mut(node) {
                Some(n) => {
                    n.draining = *drain;
                    ok(MetaReplyData::Done)
                }
                None => err(MetaError::BadRequest(format!(
                    "no chunkserver has id {node}"
                ))),
            },
        }
    }

    fn apply_meta(&mut self, w: &MetaWrite, now: u64) -> Reply {
        match w {
            MetaWrite::CreateBucket { bucket, owner } => match self.buckets.get(bucket) {
                Some(b) if &b.owner == owner => ok(MetaReplyData::Created(false)),
                Some(_) => err(MetaError::BucketAlreadyExists),
                None => {
                    self.buckets.insert(
                        bucket.clone(),
                        Bucket {
                            created_ms: now,
                            owner: owner.clone(),
                            objects: Objects::new(),
                            lifecycle: Vec::new(),
                            public_read: false,
                            cors: Vec::new(),
                        },
                    );
                    // The key that creates a bucket owns it.
                    if let Some(k) = self.keys.get_mut(owner) {
                        if !k.admin {
                            k.buckets.insert(bucket.clone(), Permission::Owner);
                        }
                    }
                    ok(MetaReplyData::Created(true))
                }
            },
            MetaWrite::DeleteBucket { bucket } => {
                let Some(b) = self.buckets.get(bucket) else {
                    return err(MetaError::NoSuchBucket);
                };
                let has_uploads = self.uploads.values().any(|u| &u.bucket == bucket);
                if !b.objects.is_empty() || has_uploads {
                    return err(MetaError::BucketNotEmpty);
                }
                self.buckets.remove(bucket);
                // A bucket created again under this name starts with no grants.
                for k in self.keys.values_mut() {
                    k.buckets.remove(bucket);
                }
                ok(MetaReplyData::Done)
            }
            MetaWrite::PutKey { key, bootstrap } => {
                if *bootstrap {
                    if !self.keys.is_empty() {
                        return ok(MetaReplyData::Created(false));
                    }
                    let mut k = key.clone();
                    k.admin = true;
                    k.created_ms = now;
                    self.keys.insert(k.id.clone(), k);
                    return ok(MetaReplyData::Created(true));
                }
                if key.id.is_empty() || key.secret.is_empty() {
                    return err(MetaError::BadRequest(
                        "an access key needs an id and a secret".into(),
                    ));
                }
                if self.keys.contains_key(&key.id) {
                    return err(MetaError::BadRequest(format!(
                        "access key {} exists",
                        key.id
                    )));
                }
                let mut k = key.clone();
                k.created_ms = now;
                self.keys.insert(k.id.clone(), k);
                ok(MetaReplyData::Created(true))
            }
            MetaWrite::DeleteKey { id } => match self.keys.remove(id) {
                Some(_) => ok(MetaReplyData::Done),
                None => err(MetaError::BadRequest(format!("no access key {id}"))),
            },
            MetaWrite::GrantKey {
                id,
                bucket,
                permission,
            } => {
                if permission.is_some() && !self.buckets.contains_key(bucket) {
                    return err(MetaError::NoSuchBucket);
                }
                let Some(k) = self.keys.get_mut(id) else {
                    return err(MetaError::BadRequest(format!("no access key {id}")));
                };
                match permission {
                    Some(p) => k.buckets.insert(bucket.clone(), *p),
                    None => k.buckets.remove(bucket),
                };
                ok(MetaReplyData::Done)
            }
            MetaWrite::SetBucketPublic {
                bucket,
                public_read,
            } => self.set_bucket(bucket, |b| b.public_read = *public_read),
            MetaWrite::PutObject {
                bucket,
                key,
                record,
                condition,
            } => {
                let Some(b) = self.buckets.get(bucket) else {
                    return err(MetaError::NoSuchBucket);
                };
                if let Some(c) = condition {
                    let current = b.objects.get(key.as_str()).map(|o| o.etag());
                    if let Err(e) = c.check_etag(current.as_deref()) {
                        return err(e);
                    }
                }
                if let Err(e) = self.check_leases(&record.chunks) {
                    return err(e);
                }
                let mut record = record.clone();
                record.last_modified_ms = now;
                self.add_refs(&record.chunks);
                let etag = record.etag.clone();
                self.replace_object(bucket, key, Some(Object::from_record(record)));
                ok(MetaReplyData::Committed {
                    etag,
                    last_modified_ms: now,
                })
            }
            MetaWrite::DeleteObject { bucket, key } => {
                if !self.buckets.contains_key(bucket) {
                    return err(MetaError::NoSuchBucket);
                }
                self.replace_object(bucket, key, None);
                ok(MetaReplyData::Done)
            }
            MetaWrite::DeleteObjects { bucket, keys } => {
                if !self.buckets.contains_key(bucket) {
                    return err(MetaError::NoSuchBucket);
                }
                for key in keys {
                    self.replace_object(bucket, key, None);
                }
                ok(MetaReplyData::Deleted(keys.len() as u64))
            }
            MetaWrite::CreateUpload { .. } => err(MetaError::BadRequest(
                "CreateUpload must be proposed by the leader with an id".into(),
            )),
            MetaWrite::PutPart {
                bucket,
                key,
                upload_id,
                number,
                part,
            } => {
                let Some(upload) = self.uploads.get(upload_id) else {
                    return err(MetaError::NoSuchUpload);
                };
                if &upload.bucket != bucket || &upload.key != key {
                    return err(MetaError::NoSuchUpload);
                }
                if let Err(e) = self.check_leases(&part.chunks) {
                    return err(e);
                }
                let mut part = part.clone();
                part.last_modified_ms = now;
                self.add_refs(&part.chunks);
                let old = self
                    .uploads
                    .get_mut(upload_id)
                    .and_then(|u| u.parts.insert(*number, part));
                if let Some(old) = old {
                    self.drop_refs(&old.chunks);
                }
                ok(MetaReplyData::Done)
            }
            MetaWrite::CompleteUpload {
                bucket,
                key,
                upload_id,
                parts,
                checksums,
                condition,
            } => self.complete_upload(
                (bucket, key, upload_id),
                parts,
                checksums,
                condition.as_ref(),
                now,
            ),
            MetaWrite::AcquireLease { holder, ttl_ms } => {
                // Ids wrap around but skip 0 (no lease) and live ones.
                let mut id = self.next_lease_id.max(1);
                while self.leases.contains_key(&id) {
                    id = id.checked_add(1).unwrap_or(1);
                }
                self.next_lease_id = id.checked_add(1).unwrap_or(1);
                let expires_ms = now.saturating_add(lease_ttl(*ttl_ms));
                self.leases.insert(
                    id,
                    Lease {
                        holder: holder.clone(),
                        expires_ms,
                    },
                );
                ok(MetaReplyData::Lease { id, expires_ms })
            }
            MetaWrite::RenewLease { lease, ttl_ms } => match self.leases.get_mut(lease) {
                Some(l) => {
                    l.expires_ms = now.saturating_add(lease_ttl(*ttl_ms));
                    ok(MetaReplyData::Lease {
                        id: *lease,
                        expires_ms: l.expires_ms,
                    })
                }
                None => err(MetaError::NoSuchLease),
            },
            MetaWrite::AbortUpload {
                bucket,
                key,
                upload_id,
            } => {
                match self.uploads.get(upload_id) {
                    Some(u) if &u.bucket == bucket && &u.key == key => {}
                    _ => return err(MetaError::NoSuchUpload),
                }
                if let Some(u) = self.uploads.remove(upload_id) {
                    for p in u.parts.values() {
                        self.drop_refs(&p.chunks);
                    }
                }
                ok(MetaReplyData::Done)
            }
            MetaWrite::PutLifecycle { bucket, rules } => {
                if rules.len() > MAX_LIFECYCLE_RULES {
                    return err(MetaError::BadRequest(format!(
                        "{} lifecycle rules, at most {MAX_LIFECYCLE_RULES}",
                        rules.len()
                    )));
                }
                self.set_bucket(bucket, |b| b.lifecycle = rules.clone())
            }
            MetaWrite::DeleteLifecycle { bucket } => {
                self.set_bucket(bucket, |b| b.lifecycle.clear())
            }
            MetaWrite::LifecycleExpire {
                bucket,
                day_ms,
                keys,
                upload_ids,
            } => self.lifecycle_expire(bucket, *day_ms, keys, upload_ids, now),
            MetaWrite::CopyObject {
                src_bucket,
                src_key,
                dst_bucket,
                dst_key,
                attrs,
                source_condition,
                condition,
                tags,
            } => self.copy_object(
                (src_bucket, src_key),
                (dst_bucket, dst_key),
                CopyChanges {
                    attrs: attrs.as_ref(),
                    tags: tags.as_ref(),
                },
                (source_condition.as_ref(), condition.as_ref()),
                now,
            ),
            MetaWrite::PutObjectTags { bucket, key, tags } => {
                let Some(b) = self.buckets.get_mut(bucket) else {
                    return err(MetaError::NoSuchBucket);
                };
                let Some(o) = b.objects.get_mut(key.as_str()) else {
                    return err(MetaError::NoSuchKey);
                };
                o.set_tags(tags.clone());
                ok(MetaReplyData::Done)
            }
            MetaWrite::PutCors { bucket, rules } => {
                if rules.len() > MAX_CORS_RULES {
                    return err(MetaError::BadRequest(format!(
                        "{} CORS rules, at most {MAX_CORS_RULES}",
                        rules.len()
                    )));
                }
                self.set_bucket(bucket, |b| b.cors = rules.clone())
            }
            MetaWrite::DeleteCors { bucket } => self.set_bucket(bucket, |b| b.cors.clear()),
        }
    }

    /// Commits a copy of the source as it is now: the destination record shares its chunks
    /// (references added before the replaced object's are dropped, so a copy onto itself keeps
    /// them), with the source's ETag, parts and checksums, and new attributes or tags if given.
    fn copy_object(
        &mut self,
        (src_bucket, src_key): (&str, &str),
        (dst_bucket, dst_key): (&str, &str),
        changes: CopyChanges<'_>,
        (source_condition, condition): (Option<&CopyCondition>, Option<&WriteCondition>),
        now: u64,
    ) -> Reply {
        let Some(src) = self.buckets.get(src_bucket) else {
            return err(MetaError::NoSuchBucket);
        };
        let Some(source) = src.objects.get(src_key) else {
            return err(MetaError::NoSuchKey);
        };
        let source = source.to_record();
        if let Some(Err(e)) = source_condition.map(|c| c.check(&source)) {
            return err(e);
        }
        let Some(dst) = self.buckets.get(dst_bucket) else {
            return err(MetaError::NoSuchBucket);
        };
        let current = dst.objects.get(dst_key).map(|o| o.etag());
        if let Some(Err(e)) = condition.map(|c| c.check_etag(current.as_deref())) {
            return err(e);
        }
        let mut record = source;
        if let Some(a) = changes.attrs {
            record.content_type = a.content_type.clone();
            record.user_meta = a.user_meta.clone();
            record.headers = a.headers.clone();
        }
        if let Some(t) = changes.tags {
            record.tags = t.clone();
        }
        record.last_modified_ms = now;
        let etag = record.etag.clone();
        self.add_refs(&record.chunks);
        self.replace_object(dst_bucket, dst_key, Some(Object::from_record(record)));
        ok(MetaReplyData::Committed {
            etag,
            last_modified_ms: now,
        })
    }

    /// Removes the named objects and uploads of a bucket that its lifecycle rules make due at
    /// `now`; the others (overwritten, completed, or no longer under a rule) stay.
    fn lifecycle_expire(
        &mut self,
        bucket: &str,
        day_ms: u64,
        keys: &[String],
        upload_ids: &[String],
        now: u64,
    ) -> Reply {
        let Some(b) = self.buckets.get(bucket) else {
            return err(MetaError::NoSuchBucket);
        };
        let rules = b.lifecycle.clone();
        let mut removed = 0u64;
        for key in keys {
            let due = self
                .buckets
                .get(bucket)
                .and_then(|b| b.objects.get(key.as_str()))
                .is_some_and(|r| {
                    crate::lifecycle::object_due(&rules, key, r.last_modified_ms, now, day_ms)
                });
            if due {
                self.replace_object(bucket, key, None);
                removed += 1;
            }
        }
        for id in upload_ids {
            let due = self.uploads.get(id).is_some_and(|u| {
                u.bucket == bucket
                    && crate::lifecycle::upload_due(&rules, &u.key, u.initiated_ms, now, day_ms)
            });
            if let Some(u) = due.then(|| self.uploads.remove(id)).flatten() {
                for p in u.parts.values() {
                    self.drop_refs(&p.chunks);
                }
                removed += 1;
            }
        }
        ok(MetaReplyData::Deleted(removed))
    }

    /// Completes an upload: checks the parts and the condition on the object it replaces, then
    /// commits the object with the checksums the gateway computed from the parts.
    fn complete_upload(
        &mut self,
        (bucket, key, upload_id): (&str, &str, &str),
        parts: &[(u32, String)],
        checksums: &[(String, String)],
        condition: Option<&WriteCondition>,
        now: u64,
    ) -> Reply {
        let Some(upload) = self.uploads.get(upload_id) else {
            // A repeated Complete of a finished upload with the same parts succeeds, as on AWS
            // (its condition was checked when it first applied).
            return match self.completed_uploads.get(upload_id) {
                Some(c) if c.bucket == bucket && c.key == key && c.parts == parts => {
                    ok(MetaReplyData::Completed {
                        etag: c.etag.clone(),
                        last_modified_ms: c.completed_ms,
                        checksums: c.checksums.clone(),
                    })
                }
                _ => err(MetaError::NoSuchUpload),
            };
        };
        if upload.bucket != bucket || upload.key != key {
            return err(MetaError::NoSuchUpload);
        }
        let Some(b) = self.buckets.get(bucket) else {
            return err(MetaError::NoSuchBucket);
        };
        let current = b.objects.get(key).map(|o| o.etag());
        if let Some(Err(e)) = condition.map(|c| c.check_etag(current.as_deref())) {
            return err(e);
        }
        if parts.is_empty() {
            return err(MetaError::InvalidPart(
                "You must specify at least one part".into(),
            ));
        }
        if parts.windows(2).any(|w| w[0].0 >= w[1].0) {
            return err(MetaError::InvalidPartOrder);
        }
        let mut md5s = Vec::with_capacity(parts.len() * 16);
        for (i, (number, etag)) in parts.iter().enumerate() {
            let Some(p) = upload.parts.get(number) else {
                return err(MetaError::InvalidPart(format!(
                    "part {number} was not uploaded"
                )));
            };
            if p.etag != etag.trim_matches('"') {
                return err(MetaError::InvalidPart(format!(
                    "part {number}'s ETag does not match"
                )));
            }
            if i + 1 < parts.len() && p.size < MIN_PART_SIZE {
                return err(MetaError::EntityTooSmall);
            }
            match hex::decode(&p.etag) {
                Ok(raw) => md5s.extend_from_slice(&raw),
                Err(_) => md5s.extend_from_slice(p.etag.as_bytes()),
            }
        }
        let Some(upload) = self.uploads.remove(upload_id) else {
            return err(MetaError::NoSuchUpload);
        };
        let etag = format!("{}-{}", hex::encode(Md5::digest(&md5s)), parts.len());
        let mut record = ObjectRecord {
            etag: etag.clone(),
            content_type: upload.attrs.content_type.clone(),
            user_meta: upload.attrs.user_meta.clone(),
            headers: upload.attrs.headers.clone(),
            checksums: checksums.to_vec(),
            tags: upload.attrs.tags.clone(),
            last_modified_ms: now,
            ..Default::default()
        };
        let mut used = std::collections::HashSet::new();
        for (number, _) in parts {
            if let Some(p) = upload.parts.get(number) {
                used.insert(*number);
                record.size += p.size;
                record.parts.push(PartInfo {
                    number: *number,
                    size: p.size,
                    etag: p.etag.clone(),
                    chunk_count: p.chunks.len() as u32,
                });
                record.chunks.extend(p.chunks.iter().cloned());
            }
        }
        // The parts' references move to the object; parts left out of the list are released.
        for (number, p) in &upload.parts {
            if !used.contains(number) {
                self.drop_refs(&p.chunks);
            }
        }
        self.replace_object(bucket, key, Some(Object::from_record(record)));
        self.completed_order.push_back((now, upload_id.to_string()));
        self.completed_uploads.insert(
            upload_id.to_string(),
            CompletedUpload {
                bucket: bucket.to_string(),
                key: key.to_string(),
                parts: parts.to_vec(),
                etag: etag.clone(),
                completed_ms: now,
                checksums: checksums.to_vec(),
            },
        );
        ok(MetaReplyData::Completed {
            etag,
            last_modified_ms: now,
            checksums: checksums.to_vec(),
        })
    }

    /// Changes a setting of an existing bucket (lifecycle, CORS, ACL).
    fn set_bucket(&mut self, bucket: &str, change: impl FnOnce(&mut Bucket)) -> Reply {
        match self.buckets.get_mut(bucket) {
            Some(b) => {
                change(b);
                ok(MetaReplyData::Done)
            }
            None => err(MetaError::NoSuchBucket),
        }
    }

    /// Puts (or removes, with `None`) an object, releasing the chunks of the one it replaces.
    /// The new record's chunk references must already have been added.
    fn replace_object(&mut self, bucket: &str, key: &str, object: Option<Object>) {
        let Some(b) = self.buckets.get_mut(bucket) else {
            return;
        };
        let old = match object {
            Some(o) => b.objects.insert(key, o),
            None => b.objects.remove(key),
        };
        if let Some(old) = old {
            self.drop_refs(&old.chunks());
        }
    }

    /// New chunks may be committed only while the lease they were written under lives: after
    /// it expires they may already be collected as garbage.
    fn check_leases(&self, chunks: &[ChunkMeta]) -> Result<(), MetaError> {
        for c in chunks {
            if !self.leases.contains_key(&c.id.lease()) && !self.chunks.contains_key(&c.id) {
                return Err(MetaError::NoSuchLease);
            }
        }
        Ok(())
    }

    /// Whether a chunk stored on some chunkserver is garbage: nothing references it and the
    /// lease it was written under is gone. Such a chunk can never be referenced again, since a
    /// commit of a chunk that is not in the table needs its lease alive ([`Self::check_leases`])
    /// and a lease, once expired, is gone from every later state. So the answer is safe on any
    /// applied prefix of the log, however stale.
    pub fn is_garbage(&self, id: &ChunkId) -> bool {
        let lease = id.lease();
        let protected = self
            .protected_leases
            .is_some_and(|(start, end)| (start..end).contains(&lease));
        // A lease id this state has not issued yet belongs to a later state: not judged here.
        let unissued = lease >= self.next_lease_id.max(1);
        !protected
            && !unissued
            && !self.chunks.contains_key(id)
            && !self.leases.contains_key(&lease)
    }

    /// Becomes `backup`, protecting the chunks of leases the old cluster may have issued after
    /// the backup: from its oldest live lease to well beyond its last one. New leases are
    /// numbered after that range.
    fn restore(&mut self, backup: &State) {
        /// Lease ids the old cluster could have issued after the backup (one per gateway per
        /// rotation: centuries of them).
        const SKIP: u32 = 1 << 30;
        let mut s = backup.clone();
        let next = s.next_lease_id.max(1);
        let start = s.leases.keys().next().copied().unwrap_or(next).min(next);
        let end = next.saturating_add(SKIP);
        s.protected_leases = Some((start, end));
        s.next_lease_id = end;
        // The masters of the new group may reuse the old group's ids.
        s.retired_masters.clear();
        s.clock_ms = s.clock_ms.max(self.clock_ms);
        *self = s;
    }

    /// Whether some lease expired by `now` but is still in the state (no command applied since).
    pub fn has_expired_lease(&self, now: u64) -> bool {
        self.leases.values().any(|l| l.expires_ms <= now)
    }

    fn add_refs(&mut self, chunks: &[ChunkMeta]) {
        for c in chunks {
            let e = self.chunks.get_or_insert_with(c.id, || ChunkEntry {
                len: c.len,
                crc32c: c.crc32c,
                refs: 0,
            });
            e.refs += 1;
        }
    }

    fn drop_refs(&mut self, chunks: &[ChunkMeta]) {
        for c in chunks {
            if let Some(e) = self.chunks.get_mut(&c.id) {
                e.refs = e.refs.saturating_sub(1);
                if e.refs == 0 {
                    self.chunks.remove(&c.id);
                }
            }
        }
    }

    /// Number of objects in all buckets.
    pub fn object_count(&self) -> u64 {
        self.buckets.values().map(|b| b.objects.len() as u64).sum()
    }

    /// One page of a bucket listing, by S3's rules: keys after `after` that start with `prefix`,
    /// keys sharing the part up to the next delimiter rolled into one common prefix, at most
    /// `max_keys` keys and prefixes together.
    pub fn list(&self, q: &ListQuery) -> Result<ListPage, MetaError> {
        use std::ops::Bound;
        let b = self.buckets.get(&q.bucket).ok_or(MetaError::NoSuchBucket)?;
        let mut page = ListPage::default();
        if q.max_keys == 0 {
            return Ok(page);
        }
        let delimiter = q.delimiter.as_deref().filter(|d| !d.is_empty());
        // The common prefix a key rolls up into, if any.
        let common_of = |key: &str| -> Option<String> {
            let d = delimiter?;
            let rest = key.get(q.prefix.len()..)?;
            rest.find(d)
                .map(|pos| key[..q.prefix.len() + pos + d.len()].to_string())
        };
        let cursor = match &q.after {
            // Continuing after a common prefix skips every key under it in one step.
            Some(a) if a.as_str() >= q.prefix.as_str() && common_of(a).as_deref() == Some(a) => {
                match successor(a) {
                    Some(s) => Bound::Included(s),
                    None => return Ok(page),
                }
            }
            Some(a) if a.as_str() >= q.prefix.as_str() => Bound::Excluded(a.clone()),
            _ => Bound::Included(q.prefix.clone()),
        };
        // One iterator through plain keys; a fresh one only to jump past a common prefix.
        let mut keys = b.objects.range_from(cursor.as_ref().map(String::as_str));
        while let Some((key, rec)) = keys.next() {
            if !key.starts_with(&q.prefix) {
                break;
            }
            if page.entries.len() + page.common_prefixes.len() == q.max_keys {
                page.truncated = true;
                break;
            }
            match common_of(&key) {
                Some(cp) => {
                    // Jump past every key under this prefix (O(log n), not one step per key).
                    let next = successor(&cp);
                    page.next_after = Some(cp.clone());
                    page.common_prefixes.push(cp);
                    match next {
                        Some(s) => keys = b.objects.range_from(Bound::Included(s.as_str())),
                        None => break,
                    }
                }
                None => {
                    page.entries.push(ListEntry {
                        key: key.to_string(),
                        size: rec.size,
                        etag: rec.etag(),
                        last_modified_ms: rec.last_modified_ms,
                    });
                    page.next_after = Some(key);
                }
            }
        }
        Ok(page)
    }

    /// One page of a bucket's in-progress multipart uploads, by S3's rules: ordered by key, then
    /// initiation time (then id, for uploads begun in the same millisecond); after the key and
    /// upload id markers; keys sharing the part up to the next delimiter rolled into one common
    /// prefix; at most `max_uploads` uploads and prefixes together. Uploads are few (each is an
    /// unfinished client transfer), so they are gathered and sorted per call.
    pub fn list_uploads(&self, q: &UploadQuery) -> Result<UploadPage, MetaError> {
        if !self.buckets.contains_key(&q.bucket) {
            return Err(MetaError::NoSuchBucket);
        }
        let mut page = UploadPage::default();
        if q.max_uploads == 0 {
            return Ok(page);
        }
        let delimiter = q.delimiter.as_deref().filter(|d| !d.is_empty());
        let common_of = |key: &str| -> Option<String> {
            let d = delimiter?;
            let rest = key.get(q.prefix.len()..)?;
            rest.find(d)
                .map(|pos| key[..q.prefix.len() + pos + d.len()].to_string())
        };
        let mut all: Vec<(&str, u64, &str)> = self
            .uploads
            .iter()
            .filter(|(_, u)| u.bucket == q.bucket && u.key.starts_with(&q.prefix))
            .map(|(id, u)| (u.key.as_str(), u.initiated_ms, id.as_str()))
            .collect();
        all.sort_unstable();
        let marker = q.key_marker.as_deref().filter(|k| !k.is_empty());
        // A key marker that is a common prefix (a previous page ended with it) skips every key
        // under it.
        let skip_prefix = marker
            .filter(|m| m.starts_with(q.prefix.as_str()) && common_of(m).as_deref() == Some(*m));
        // The upload id marker counts only with a key marker, as on S3.
        let id_marker = marker
            .and(q.upload_id_marker.as_deref())
            .filter(|u| !u.is_empty());
        let marker_upload = id_marker
            .and_then(|id| self.uploads.get(id))
            .filter(|u| u.bucket == q.bucket && Some(u.key.as_str()) == marker);
        let after_markers = |&(key, initiated, id): &(&str, u64, &str)| -> bool {
            let Some(m) = marker else {
                return true;
            };
            if skip_prefix.is_some_and(|p| key.starts_with(p)) {
                return false;
            }
            match key.cmp(m) {
                std::cmp::Ordering::Greater => true,
                std::cmp::Ordering::Less => false,
                std::cmp::Ordering::Equal => match (id_marker, marker_upload) {
                    (None, _) => false,
                    // After the marker's upload in listing order...
                    (Some(idm), Some(u)) => (initiated, id) > (u.initiated_ms, idm),
                    // ...or, for an upload no longer there, with a greater id (S3's rule).
                    (Some(idm), None) => id > idm,
                },
            }
        };
        let mut count = 0;
        for (key, initiated, id) in all.into_iter().filter(after_markers) {
            let prefix = common_of(key);
            if prefix.is_some() && page.common_prefixes.last() == prefix.as_ref() {
                continue;
            }
            if count == q.max_uploads {
                page.truncated = true;
                break;
            }
            count += 1;
            match prefix {
                Some(p) => {
                    page.next_key_marker = Some(p.clone());
                    page.next_upload_id_marker = None;
                    page.common_prefixes.push(p);
                }
                None => {
                    page.next_key_marker = Some(key.to_string());
                    page.next_upload_id_marker = Some(id.to_string());
                    page.uploads.push(UploadEntry {
                        key: key.to_string(),
                        upload_id: id.to_string(),
                        initiated_ms: initiated,
                        initiator: self
                            .uploads
                            .get(id)
                            .map(|u| u.initiator.clone())
                            .unwrap_or_default(),
                    });
                }
            }
        }
        Ok(page)
    }
}

/// What a copy changes of the source's record (`REPLACE` directives); `None` keeps it.
struct CopyChanges<'a> {
    attrs: Option<&'a ObjectAttrs>,
    tags: Option<&'a Vec<(String, String)>>,
}

/// The smallest string greater than every string that starts with `prefix` (in UTF-8 byte
/// order, which is code point order); `None` if there is none.
fn successor(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let mut next = last as u32 + 1;
        if (0xD800..0xE000).contains(&next) {
            next = 0xE000; // skip the surrogate range
        }
        if let Some(c) = char::from_u32(next) {
            chars.push(c);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(op: Op, t: u64) -> Command {
        Command {
            version: COMMAND_VERSION,
            request_id: None,
            time_ms: t,
            op,
        }
    }

    fn meta(w: MetaWrite) -> Op {
        Op::Meta(w)
    }

    /// A chunk id under lease 1, which [`bucket`] acquires.
    fn cid(n: u128) -> ChunkId {
        ChunkId((1 << 96) | n)
    }

    fn put(s: &mut State, key: &str, t: u64) {
        let r = s.apply(&cmd(
            meta(MetaWrite::PutObject {
                bucket: "b".into(),
                key: key.into(),
                condition: None,
                record: ObjectRecord {
                    size: 1,
                    etag: "e".into(),
                    chunks: vec![ChunkMeta {
                        id: cid(t as u128),
                        len: 1,
                        crc32c: 0,
                    }],
                    ..Default::default()
                },
            }),
            t,
        ));
        assert!(r.0.is_ok(), "{r:?}");
    }

    fn bucket() -> State {
        let mut s = State::default();
        s.apply(&cmd(
            meta(MetaWrite::CreateBucket {
                bucket: "b".into(),
                owner: "me".into(),
            }),
            1,
        ));
        s.apply(&cmd(
            meta(MetaWrite::AcquireLease {
                holder: "gw".into(),
                ttl_ms: None,
            }),
            1,
        ));
        s
    }

    fn list(
        s: &State,
        prefix: &str,
        delim: Option<&str>,
        after: Option<&str>,
        max: usize,
    ) -> ListPage {
        s.list(&ListQuery {
            bucket: "b".into(),
            prefix: prefix.into(),
            delimiter: delim.map(String::from),
            after: after.map(String::from),
            max_keys: max,
        })
        .unwrap()
    }

    fn copy(src: (&str, &str), dst: (&str, &str)) -> MetaWrite {
        MetaWrite::CopyObject {
            src_bucket: src.0.into(),
            src_key: src.1.into(),
            dst_bucket: dst.0.into(),
            dst_key: dst.1.into(),
            attrs: None,
            source_condition: None,
            condition: None,
            tags: None,
        }
    }

    fn refs(s: &State, n: u128) -> u32 {
        s.chunks.get(&cid(n)).map_or(0, |e| e.refs)
    }

    #[test]
    fn a_batch_applies_each_write_once_with_its_own_answer() {
        let mut s = bucket();
        let put = |key: &str| {
            meta(MetaWrite::PutObject {
                bucket: "b".into(),
                key: key.into(),
                condition: None,
                record: ObjectRecord {
                    etag: "d41d8cd98f00b204e9800998ecf8427e".into(),
                    ..Default::default()
                },
            })
        };
        let batch = |writes: Vec<(u128, Op)>| {
            cmd(
                Op::Many(
                    writes
                        .into_iter()
                        .map(|(request_id, op)| Batched { request_id, op })
                        .collect(),
                ),
                5,
            )
        };
        let missing_bucket = meta(MetaWrite::DeleteBucket {
            bucket: "nope".into(),
        });
        let r = s.apply(&batch(vec![
            (1, put("x")),
            (2, missing_bucket),
            (3, put("y")),
        ]));
        let Ok(MetaReplyKind::Many(replies)) = r.0 else {
            panic!("{r:?}");
        };
        assert_eq!(replies.len(), 3);
        assert!(replies[0].0.is_ok() && replies[2].0.is_ok(), "{replies:?}");
        assert_eq!(replies[1].0, Err(MetaError::NoSuchBucket));
        assert!(s.buckets["b"].objects.contains_key("x"));
        assert!(s.buckets["b"].objects.contains_key("y"));
        // Retried (in another batch, or alone): the first answers, nothing applied again.
        let again = s.apply(&batch(vec![(
            3,
            meta(MetaWrite::DeleteBucket { bucket: "b".into() }),
        )]));
        let Ok(MetaReplyKind::Many(again)) = again.0 else {
            panic!("{again:?}");
        };
        assert_eq!(again[0], replies[2]);
        assert!(s.buckets.contains_key("b"));
        let mut alone = cmd(put("z"), 6);
        alone.request_id = Some(1);
        assert_eq!(s.apply(&alone), replies[0]);
        assert!(!s.buckets["b"].objects.contains_key("z"));
        // No batch inside a batch.
        let r = s.apply(&batch(vec![(9, Op::Many(Vec::new()))]));
        let Ok(MetaReplyKind::Many(r)) = r.0 else {
            panic!("{r:?}");
        };
        assert!(matches!(r[0].0, Err(MetaError::BadRequest(_))));
    }

    #[test]
    fn a_copy_shares_the_chunks_and_outlives_its_source() {
        let mut s = bucket();
        s.apply(&cmd(
            meta(MetaWrite::CreateBucket {
                bucket: "c".into(),
                owner: "me".into(),
            }),
            2,
        ));
        put(&mut s, "src", 10);
        let r = s.apply(&cmd(meta(copy(("b", "src"), ("b", "dst"))), 20));
        assert_eq!(
            r.0,
            Ok(MetaReplyKind::Meta(MetaReplyData::Committed {
                etag: "e".into(),
                last_modified_ms: 20
            }))
        );
        assert!(s
            .apply(&cmd(meta(copy(("b", "src"), ("c", "other"))), 21))
            .0
            .is_ok());
        assert_eq!(refs(&s, 10), 3, "one chunk, three records");
        let dst = &s.buckets["b"].objects["dst"].to_record();
        assert_eq!(dst.chunks, s.buckets["b"].objects["src"].to_record().chunks);
        assert_eq!((dst.etag.as_str(), dst.last_modified_ms), ("e", 20));
        // The source goes; the copies keep the chunk.
        s.apply(&cmd(
            meta(MetaWrite::DeleteObject {
                bucket: "b".into(),
                key: "src".into(),
            }),
            22,
        ));
        assert_eq!(refs(&s, 10), 2);
        // A copy from a source deleted before the copy is applied finds nothing to share.
        let late = s.apply(&cmd(meta(copy(("b", "src"), ("b", "late"))), 23));
        assert_eq!(late.0, Err(MetaError::NoSuchKey));
        let no_bucket = s.apply(&cmd(meta(copy(("b", "dst"), ("nope", "x"))), 23));
        assert_eq!(no_bucket.0, Err(MetaError::NoSuchBucket));
        // Overwriting a copy releases its reference; copying over an object releases that
        // object's chunks.
        put(&mut s, "dst", 30);
        assert_eq!(refs(&s, 10), 1);
        assert!(s
            .apply(&cmd(meta(copy(("c", "other"), ("b", "dst"))), 31))
            .0
            .is_ok());
        assert_eq!(refs(&s, 30), 0);
        assert_eq!(refs(&s, 10), 2);
        for (b, k) in [("b", "dst"), ("c", "other")] {
            s.apply(&cmd(
                meta(MetaWrite::DeleteObject {
                    bucket: b.into(),
                    key: k.into(),
                }),
                32,
            ));
        }
        assert!(s.chunks.is_empty());
    }

    #[test]
    fn a_copy_onto_itself_replaces_metadata_and_keeps_data() {
        let mut s = bucket();
        put(&mut s, "k", 10);
        let mut w = copy(("b", "k"), ("b", "k"));
        if let MetaWrite::CopyObject { attrs, tags, .. } = &mut w {
            *attrs = Some(ObjectAttrs {
                content_type: Some("text/plain".into()),
                user_meta: vec![("mtime".into(), "1700000000".into())],
                ..Default::default()
            });
            *tags = Some(vec![("t".into(), "1".into())]);
        }
        assert!(s.apply(&cmd(meta(w), 20)).0.is_ok());
        assert_eq!(
            refs(&s, 10),
            1,
            "references added before the old ones are dropped"
        );
        let rec = &s.buckets["b"].objects["k"].to_record();
        assert_eq!(rec.content_type.as_deref(), Some("text/plain"));
        assert_eq!(
            rec.user_meta,
            [("mtime".to_string(), "1700000000".to_string())]
        );
        assert_eq!(rec.tags, [("t".to_string(), "1".to_string())]);
        assert_eq!((rec.etag.as_str(), rec.last_modified_ms), ("e", 20));
    }

    #[test]
    fn a_copy_of_a_multipart_object_keeps_its_parts_and_etag() {
        let mut s = bucket();
        s.apply(&cmd(
            Op::CreateUpload {
                upload_id: "u".into(),
                bucket: "b".into(),
                key: "mp".into(),
                attrs: ObjectAttrs::default(),
                initiator: String::new(),
            },
            2,
        ));
        for (n, size) in [(1u32, MIN_PART_SIZE), (2, 3)] {
            let r = s.apply(&cmd(
                meta(MetaWrite::PutPart {
                    bucket: "b".into(),
                    key: "mp".into(),
                    upload_id: "u".into(),
                    number: n,
                    part: PartRecord {
                        size,
                        etag: format!("{n:032x}"),
                        last_modified_ms: 0,
                        checksums: vec![],
                        chunks: vec![ChunkMeta {
                            id: cid(n as u128),
                            len: size,
                            crc32c: 0,
                        }],
                    },
                }),
                3,
            ));
            assert!(r.0.is_ok(), "{r:?}");
        }
        let parts = vec![(1, format!("{:032x}", 1)), (2, format!("{:032x}", 2))];
        let done = s.apply(&cmd(
            meta(MetaWrite::CompleteUpload {
                bucket: "b".into(),
                key: "mp".into(),
                upload_id: "u".into(),
                parts,
                checksums: Vec::new(),
                condition: None,
            }),
            4,
        ));
        assert!(done.0.is_ok(), "{done:?}");
        assert!(s
            .apply(&cmd(meta(copy(("b", "mp"), ("b", "cp"))), 5))
            .0
            .is_ok());
        let (src, dst) = (
            &s.buckets["b"].objects["mp"].to_record(),
            &s.buckets["b"].objects["cp"].to_record(),
        );
        assert!(dst.etag.ends_with("-2"));
        assert_eq!(
            (&dst.etag, &dst.parts, dst.size),
            (&src.etag, &src.parts, src.size)
        );
        assert_eq!((refs(&s, 1), refs(&s, 2)), (2, 2));
    }

    #[test]
    fn copy_preconditions_follow_s3_precedence() {
        let mut s = bucket();
        put(&mut s, "src", 10_000); // last modified at 10 s
        put(&mut s, "dst", 10_001);
        let with = |c: CopyCondition, d: Option<WriteCondition>| {
            let mut w = copy(("b", "src"), ("b", "dst"));
            if let MetaWrite::CopyObject {
                source_condition,
                condition,
                ..
            } = &mut w
            {
                *source_condition = Some(c);
                *condition = d;
            }
            cmd(meta(w), 20_000)
        };
        let failed = Err(MetaError::PreconditionFailed);
        let cases = [
            // (if-match, if-none-match, if-modified-since, if-unmodified-since) -> copied
            ((Some("\"e\""), None, None, None), true),
            ((Some("x, e"), None, None, None), true),
            ((Some("x"), None, None, None), false),
            ((Some("*"), None, None, None), true),
            ((None, Some("e"), None, None), false),
            ((None, Some("x"), None, None), true),
            ((None, None, Some(9), None), true),
            ((None, None, Some(10), None), false),
            ((None, None, None, Some(10)), true),
            ((None, None, None, Some(9)), false),
            // A matching if-match wins over a failing if-unmodified-since...
            ((Some("e"), None, None, Some(9)), true),
            // ...and an if-none-match decides alone over if-modified-since.
            ((None, Some("e"), Some(9), None), false),
            ((None, Some("x"), Some(10), None), true),
        ];
        for ((m, nm, ms, ums), copied) in cases {
            let c = CopyCondition {
                if_match: m.map(String::from),
                if_none_match: nm.map(String::from),
                if_modified_since: ms,
                if_unmodified_since: ums,
            };
            let r = s.apply(&with(c.clone(), None));
            if copied {
                assert!(r.0.is_ok(), "{c:?}: {r:?}");
            } else {
                assert_eq!(r.0, failed, "{c:?}");
            }
        }
        // A condition on the destination: If-None-Match: * with an object there.
        let none_match = WriteCondition {
            if_match: None,
            if_none_match: true,
        };
        let r = s.apply(&with(CopyCondition::default(), Some(none_match)));
        assert_eq!(r.0, failed);
        assert_eq!(refs(&s, 10_000), 2, "failed copies change nothing");
    }

    fn upload(s: &mut State, id: &str, key: &str, t: u64) {
        let r = s.apply(&cmd(
            Op::CreateUpload {
                upload_id: id.into(),
                bucket: "b".into(),
                key: key.into(),
                attrs: ObjectAttrs::default(),
                initiator: String::new(),
            },
            t,
        ));
        assert!(r.0.is_ok(), "{r:?}");
    }

    fn uploads(
        s: &State,
        prefix: &str,
        delim: Option<&str>,
        markers: (Option<&str>, Option<&str>),
        max: usize,
    ) -> UploadPage {
        s.list_uploads(&UploadQuery {
            bucket: "b".into(),
            prefix: prefix.into(),
            delimiter: delim.map(String::from),
            key_marker: markers.0.map(String::from),
            upload_id_marker: markers.1.map(String::from),
            max_uploads: max,
        })
        .unwrap()
    }

    fn names(p: &UploadPage) -> Vec<String> {
        p.uploads
            .iter()
            .map(|u| format!("{}@{}", u.key, u.upload_id))
            .chain(p.common_prefixes.iter().cloned())
            .collect()
    }

    #[test]
    fn multipart_uploads_list_by_key_then_initiation() {
        let mut s = bucket();
        // Ids in an order unlike initiation time: the listing must follow the time.
        upload(&mut s, "z1", "k", 10);
        upload(&mut s, "a2", "k", 20);
        upload(&mut s, "m3", "a/x", 30);
        upload(&mut s, "b4", "a/y", 40);
        upload(&mut s, "c5", "b", 50);
        upload(&mut s, "d6", "k", 60);
        let all = uploads(&s, "", None, (None, None), 1000);
        assert_eq!(
            names(&all),
            ["a/x@m3", "a/y@b4", "b@c5", "k@z1", "k@a2", "k@d6"]
        );
        assert!(!all.truncated);
        assert_eq!(all.uploads[3].initiated_ms, 10);
        let p = uploads(&s, "", Some("/"), (None, None), 1000);
        assert_eq!(names(&p), ["b@c5", "k@z1", "k@a2", "k@d6", "a/"]);
        assert_eq!(
            names(&uploads(&s, "a/", Some("/"), (None, None), 9)),
            ["a/x@m3", "a/y@b4"]
        );
        // Pages of two with the markers a client sends back.
        let p1 = uploads(&s, "", None, (None, None), 2);
        assert!(p1.truncated);
        assert_eq!(
            (
                p1.next_key_marker.as_deref(),
                p1.next_upload_id_marker.as_deref()
            ),
            (Some("a/y"), Some("b4"))
        );
        let p2 = uploads(&s, "", None, (Some("a/y"), Some("b4")), 2);
        assert_eq!(names(&p2), ["b@c5", "k@z1"]);
        let p3 = uploads(&s, "", None, (Some("k"), Some("z1")), 2);
        assert_eq!(names(&p3), ["k@a2", "k@d6"]);
        assert!(!p3.truncated);
        // A key marker alone starts after every upload of that key; an upload id marker alone
        // is ignored.
        assert_eq!(
            names(&uploads(&s, "", None, (Some("b"), None), 9)),
            ["k@z1", "k@a2", "k@d6"]
        );
        assert_eq!(
            uploads(&s, "", None, (None, Some("z1")), 9).uploads.len(),
            6
        );
        // An upload id marker naming no upload: ids greater than it, as S3 documents.
        assert_eq!(
            names(&uploads(&s, "", None, (Some("k"), Some("b0")), 9)),
            ["k@z1", "k@d6"]
        );
        // A page ending with a common prefix continues after every key under it.
        let d1 = uploads(&s, "", Some("/"), (None, None), 1);
        assert_eq!((names(&d1), d1.truncated), (vec!["a/".to_string()], true));
        assert_eq!(d1.next_key_marker.as_deref(), Some("a/"));
        assert_eq!(d1.next_upload_id_marker, None);
        let d2 = uploads(&s, "", Some("/"), (Some("a/"), None), 1);
        assert_eq!(names(&d2), ["b@c5"]);
        assert!(uploads(&s, "", None, (None, None), 0).uploads.is_empty());
        // Other buckets' uploads are not listed; a missing bucket is an error.
        s.apply(&cmd(
            meta(MetaWrite::CreateBucket {
                bucket: "c".into(),
                owner: "me".into(),
            }),
            70,
        ));
        let other = s.list_uploads(&UploadQuery {
            bucket: "c".into(),
            max_uploads: 10,
            ..Default::default()
        });
        assert!(other.unwrap().uploads.is_empty());
        let missing = s.list_uploads(&UploadQuery {
            bucket: "nope".into(),
            max_uploads: 10,
            ..Default::default()
        });
        assert_eq!(missing.unwrap_err(), MetaError::NoSuchBucket);
    }

    #[test]
    fn bucket_rules_follow_us_east_1() {
        let mut s = bucket();
        let again = s.apply(&cmd(
            meta(MetaWrite::CreateBucket {
                bucket: "b".into(),
                owner: "me".into(),
            }),
            2,
        ));
        assert_eq!(
            again.0,
            Ok(MetaReplyKind::Meta(MetaReplyData::Created(false)))
        );
        let other = s.apply(&cmd(
            meta(MetaWrite::CreateBucket {
                bucket: "b".into(),
                owner: "you".into(),
            }),
            2,
        ));
        assert_eq!(other.0, Err(MetaError::BucketAlreadyExists));
        put(&mut s, "k", 3);
        let del = s.apply(&cmd(
            meta(MetaWrite::DeleteBucket { bucket: "b".into() }),
            4,
        ));
        assert_eq!(del.0, Err(MetaError::BucketNotEmpty));
    }

    #[test]
    fn replacing_an_object_releases_its_chunks_and_retries_apply_once() {
        let mut s = bucket();
        put(&mut s, "k", 10);
        put(&mut s, "k", 11);
        assert_eq!(s.chunks.len(), 1);
        assert!(s.chunks.contains_key(&cid(11)));
        let mut c = cmd(
            meta(MetaWrite::DeleteObject {
                bucket: "b".into(),
                key: "k".into(),
            }),
            12,
        );
        c.request_id = Some(7);
        assert!(s.apply(&c).0.is_ok());
        put(&mut s, "k", 13);
        // The same request id again: answered from memory, the new object stays.
        assert!(s.apply(&c).0.is_ok());
        assert_eq!(s.object_count(), 1);
        assert!(s.chunks.is_empty() || s.chunks.contains_key(&cid(13)));
    }

    #[test]
    fn listing_with_delimiter_and_pages() {
        let mut s = bucket();
        for (i, k) in ["a/1", "a/2", "b", "c/x/y", "c/z", "d"].iter().enumerate() {
            put(&mut s, k, 100 + i as u64);
        }
        let p = list(&s, "", Some("/"), None, 1000);
        assert_eq!(p.common_prefixes, vec!["a/", "c/"]);
        assert_eq!(
            p.entries.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(),
            ["b", "d"]
        );
        assert!(!p.truncated);
        // Pages of two: a/ + b, then c/ + d.
        let p1 = list(&s, "", Some("/"), None, 2);
        assert!(p1.truncated);
        assert_eq!(p1.next_after.as_deref(), Some("b"));
        let p2 = list(&s, "", Some("/"), Some("b"), 2);
        assert_eq!(p2.common_prefixes, vec!["c/"]);
        assert_eq!(p2.entries[0].key, "d");
        assert!(!p2.truncated);
        // Continuing after a common prefix skips the keys under it.
        let p3 = list(&s, "", Some("/"), Some("a/"), 1);
        assert_eq!(p3.entries[0].key, "b");
        let p4 = list(&s, "c/", Some("/"), None, 10);
        assert_eq!(p4.common_prefixes, vec!["c/x/"]);
        assert_eq!(p4.entries[0].key, "c/z");
        assert!(list(&s, "", None, None, 0).entries.is_empty());
        assert_eq!(successor("a/"), Some("a0".to_string()));
        assert_eq!(successor("a\u{10FFFF}"), Some("b".to_string()));
        assert_eq!(successor("\u{D7FF}"), Some("\u{E000}".to_string()));
        assert_eq!(successor(""), None);
    }

    /// The listing rules written the slow, obvious way.
    fn naive(
        keys: &[String],
        prefix: &str,
        delim: Option<&str>,
        after: Option<&str>,
        max: usize,
    ) -> (Vec<String>, bool) {
        let mut items: Vec<String> = Vec::new();
        for k in keys {
            if !k.starts_with(prefix) || after.is_some_and(|a| k.as_str() <= a) {
                continue;
            }
            let item = match delim.and_then(|d| {
                k[prefix.len()..]
                    .find(d)
                    .map(|p| k[..prefix.len() + p + d.len()].to_string())
            }) {
                Some(cp) => cp,
                None => k.clone(),
            };
            if Some(item.as_str()) == after || items.last() == Some(&item) {
                continue;
            }
            items.push(item);
        }
        let truncated = items.len() > max;
        items.truncate(max);
        (items, truncated)
    }

    #[test]
    fn listing_matches_the_naive_rules_on_random_keys() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let alphabet = ["a", "b", "/", "-", "é"];
        for round in 0..200 {
            let mut s = bucket();
            let mut keys: Vec<String> = (0..rng.gen_range(0..40))
                .map(|_| {
                    (0..rng.gen_range(1..6))
                        .map(|_| alphabet[rng.gen_range(0..alphabet.len())])
                        .collect()
                })
                .collect();
            keys.sort();
            keys.dedup();
            for (i, k) in keys.iter().enumerate() {
                put(&mut s, k, 1000 + i as u64);
            }
            let prefix: String = (0..rng.gen_range(0..2))
                .map(|_| alphabet[rng.gen_range(0..2)])
                .collect();
            let delim = [None, Some("/"), Some("-")][rng.gen_range(0..3)];
            let max = rng.gen_range(1..6);
            // Walk all pages the way a client does, and compare each page.
            let mut after: Option<String> = None;
            for _ in 0..100 {
                let page = list(&s, &prefix, delim, after.as_deref(), max);
                let (want, want_trunc) = naive(&keys, &prefix, delim, after.as_deref(), max);
                let mut got: Vec<String> = page
                    .entries
                    .iter()
                    .map(|e| e.key.clone())
                    .chain(page.common_prefixes.iter().cloned())
                    .collect();
                got.sort();
                let mut want_sorted = want.clone();
                want_sorted.sort();
                assert_eq!(
                    got, want_sorted,
                    "round {round}, prefix {prefix:?}, delim {delim:?}, after {after:?}"
                );
                assert_eq!(page.truncated, want_trunc, "round {round}");
                if !page.truncated {
                    break;
                }
                after = page.next_after.clone();
            }
        }
    }

    #[test]
    fn chunks_commit_only_under_a_live_lease() {
        let mut s = bucket();
        let r = s.apply(&cmd(
            meta(MetaWrite::AcquireLease {
                holder: "gw".into(),
                ttl_ms: None,
            }),
            10,
        ));
        let Ok(MetaReplyKind::Meta(MetaReplyData::Lease { id, expires_ms })) = r.0 else {
            panic!("{r:?}");
        };
        // `bucket()` took lease 1.
        assert_eq!((id, expires_ms), (2, 10 + LEASE_TTL_MS));
        let commit = |chunk: ChunkId, t: u64| {
            cmd(
                meta(MetaWrite::PutObject {
                    bucket: "b".into(),
                    key: format!("k{t}"),
                    condition: None,
                    record: ObjectRecord {
                        chunks: vec![ChunkMeta {
                            id: chunk,
                            len: 1,
                            crc32c: 0,
                        }],
                        ..Default::default()
                    },
                }),
                t,
            )
        };
        assert!(s.apply(&commit(ChunkId::in_lease(id), 20)).0.is_ok());
        // Renewed in time: still good later.
        assert!(s
            .apply(&cmd(
                meta(MetaWrite::RenewLease {
                    lease: id,
                    ttl_ms: None,
                }),
                30_000
            ))
            .0
            .is_ok());
        assert!(s.apply(&commit(ChunkId::in_lease(id), 80_000)).0.is_ok());
        // Expired: its chunks may be garbage already, so a commit of new ones is refused.
        let late = 30_000 + LEASE_TTL_MS + 1;
        assert_eq!(
            s.apply(&commit(ChunkId::in_lease(id), late)).0,
            Err(MetaError::NoSuchLease)
        );
        assert_eq!(
            s.apply(&cmd(
                meta(MetaWrite::RenewLease {
                    lease: id,
                    ttl_ms: None,
                }),
                late
            ))
            .0,
            Err(MetaError::NoSuchLease)
        );
        // A new lease gets a new id.
        let r = s.apply(&cmd(
            meta(MetaWrite::AcquireLease {
                holder: "gw".into(),
                ttl_ms: None,
            }),
            late,
        ));
        assert!(matches!(
            r.0,
            Ok(MetaReplyKind::Meta(MetaReplyData::Lease { id: 3, .. }))
        ));
    }

    #[test]
    fn garbage_is_unreferenced_and_beyond_its_lease() {
        let mut s = bucket();
        put(&mut s, "k", 10);
        let live = cid(10);
        let pending = cid(99); // written under lease 1, not committed yet
        assert!(!s.is_garbage(&live));
        assert!(!s.is_garbage(&pending));
        // Replaced: unreferenced, but collected only once its lease is gone.
        put(&mut s, "k", 11);
        assert!(!s.chunks.contains_key(&live));
        assert!(!s.is_garbage(&live));
        // No lease at all (id 0): garbage once unreferenced. A lease id not issued yet in this
        // state may be live in a later one (a deposed leader's stale view): never garbage.
        assert!(s.is_garbage(&ChunkId(5)));
        assert!(!s.is_garbage(&ChunkId((7 << 96) | 5)));
        // The lease expires with the clock of the next applied command (a Tick when idle).
        assert!(!s.has_expired_lease(1000));
        assert!(s.has_expired_lease(1 + LEASE_TTL_MS));
        assert!(s.apply(&cmd(Op::Tick, 1 + LEASE_TTL_MS)).0.is_ok());
        assert!(!s.has_expired_lease(1 + LEASE_TTL_MS));
        assert!(s.is_garbage(&live));
        assert!(s.is_garbage(&pending));
        assert!(
            !s.is_garbage(&cid(11)),
            "a referenced chunk is never garbage"
        );
        // ...and the pending chunk can never be committed now.
        let late = s.apply(&cmd(
            meta(MetaWrite::PutObject {
                bucket: "b".into(),
                key: "late".into(),
                condition: None,
                record: ObjectRecord {
                    chunks: vec![ChunkMeta {
                        id: pending,
                        len: 1,
                        crc32c: 0,
                    }],
                    ..Default::default()
                },
            }),
            2 + LEASE_TTL_MS,
        ));
        assert_eq!(late.0, Err(MetaError::NoSuchLease));
    }

    #[test]
    fn a_restored_state_never_collects_chunks_of_leases_it_does_not_know() {
        let mut old = bucket();
        put(&mut old, "k", 10);
        let backup = old.clone();
        // After the backup the old cluster took lease 2 and committed an object under it.
        let later = ChunkId((2 << 96) | 5);
        let mut fresh = State::default();
        assert!(fresh
            .apply(&cmd(
                Op::Restore {
                    state: Box::new(backup.clone())
                },
                20
            ))
            .0
            .is_ok());
        assert_eq!(fresh.object_count(), 1);
        assert!(fresh.chunks.contains_key(&cid(10)));
        // Far in the future, every old lease expired: the unknown chunk is still kept, a
        // replaced one from before the backup is not.
        put(&mut fresh, "k", 11);
        fresh.apply(&cmd(Op::Tick, 10 * LEASE_TTL_MS));
        assert!(!fresh.is_garbage(&later));
        assert!(
            !fresh.is_garbage(&cid(10)),
            "lease 1 was live at the backup"
        );
        assert!(fresh.is_garbage(&ChunkId(5)));
        // New leases come after the protected range, and their garbage is collected.
        let r = fresh.apply(&cmd(
            meta(MetaWrite::AcquireLease {
                holder: "gw".into(),
                ttl_ms: None,
            }),
            10 * LEASE_TTL_MS,
        ));
        let Ok(MetaReplyKind::Meta(MetaReplyData::Lease { id, .. })) = r.0 else {
            panic!("{r:?}");
        };
        let (start, end) = fresh.protected_leases.unwrap();
        assert!(start <= 1 && id >= end);
        fresh.apply(&cmd(Op::Tick, 20 * LEASE_TTL_MS));
        assert!(fresh.is_garbage(&ChunkId((u128::from(id) << 96) | 1)));
        // A second restore, or one into a named cluster, is refused.
        let again = fresh.apply(&cmd(
            Op::Restore {
                state: Box::new(backup),
            },
            30,
        ));
        assert!(again.0.is_err());
    }

    #[test]
    fn drain_flags_a_known_node_only() {
        let mut s = bucket();
        let r = s.apply(&cmd(Op::RegisterNode { addr: "a".into() }, 2));
        let Ok(MetaReplyKind::NodeId(id)) = r.0 else {
            panic!("{r:?}");
        };
        assert!(s
            .apply(&cmd(
                Op::Drain {
                    node: id,
                    drain: true
                },
                3
            ))
            .0
            .is_ok());
        assert!(s.nodes[&id].draining);
        assert!(s
            .apply(&cmd(
                Op::Drain {
                    node: id,
                    drain: false
                },
                4
            ))
            .0
            .is_ok());
        assert!(!s.nodes[&id].draining);
        assert!(s
            .apply(&cmd(
                Op::Drain {
                    node: 99,
                    drain: true
                },
                5
            ))
            .0
            .is_err());
    }

    #[test]
    fn multipart_complete_checks_parts_and_is_idempotent() {
        let mut s = bucket();
        s.apply(&cmd(
            Op::CreateUpload {
                upload_id: "u".into(),
                bucket: "b".into(),
                key: "k".into(),
                attrs: ObjectAttrs::default(),
                initiator: String::new(),
            },
            2,
        ));
        let md5a = hex::encode(Md5::digest(b"a"));
        for (n, size) in [(1u32, MIN_PART_SIZE), (2, 3)] {
            s.apply(&cmd(
                meta(MetaWrite::PutPart {
                    bucket: "b".into(),
                    key: "k".into(),
                    upload_id: "u".into(),
                    number: n,
                    part: PartRecord {
                        size,
                        etag: md5a.clone(),
                        last_modified_ms: 0,
                        checksums: vec![],
                        chunks: vec![ChunkMeta {
                            id: cid(n as u128),
                            len: size,
                            crc32c: 0,
                        }],
                    },
                }),
                3,
            ));
        }
        let complete = |parts: Vec<(u32, String)>| {
            cmd(
                meta(MetaWrite::CompleteUpload {
                    bucket: "b".into(),
                    key: "k".into(),
                    upload_id: "u".into(),
                    parts,
                    checksums: vec![("CRC32".into(), "AAAAAA==-2".into())],
                    condition: None,
                }),
                4,
            )
        };
        let bad = s.apply(&complete(vec![(2, md5a.clone()), (1, md5a.clone())]));
        assert_eq!(bad.0, Err(MetaError::InvalidPartOrder));
        let bad = s.apply(&complete(vec![(1, "0".repeat(32))]));
        assert!(matches!(bad.0, Err(MetaError::InvalidPart(_))));
        let parts = vec![(1, md5a.clone()), (2, format!("\"{md5a}\""))];
        let good = s.apply(&complete(parts.clone()));
        let mut both = hex::decode(&md5a).unwrap();
        both.extend(hex::decode(&md5a).unwrap());
        let want = format!("{}-2", hex::encode(Md5::digest(&both)));
        let checksums = vec![("CRC32".to_string(), "AAAAAA==-2".to_string())];
        assert_eq!(
            good.0,
            Ok(MetaReplyKind::Meta(MetaReplyData::Completed {
                etag: want.clone(),
                last_modified_ms: 4,
                checksums: checksums.clone(),
            }))
        );
        let rec = &s.buckets["b"].objects["k"].to_record();
        assert_eq!(rec.size, MIN_PART_SIZE + 3);
        assert_eq!(rec.chunks.len(), 2);
        assert_eq!(rec.checksums, checksums);
        assert_eq!(s.apply(&complete(parts)).0, good.0);
    }

    /// An upload `id` of key `k` with one small part (chunk `chunk`), tagged `t=1`.
    fn one_part_upload(s: &mut State, id: &str, chunk: u128) -> String {
        let attrs = ObjectAttrs {
            tags: vec![("t".into(), "1".into())],
            ..Default::default()
        };
        s.apply(&cmd(
            Op::CreateUpload {
                upload_id: id.into(),
                bucket: "b".into(),
                key: "k".into(),
                attrs,
                initiator: String::new(),
            },
            2,
        ));
        let etag = hex::encode(Md5::digest(id.as_bytes()));
        let r = s.apply(&cmd(
            meta(MetaWrite::PutPart {
                bucket: "b".into(),
                key: "k".into(),
                upload_id: id.into(),
                number: 1,
                part: PartRecord {
                    size: 1,
                    etag: etag.clone(),
                    last_modified_ms: 0,
                    checksums: vec![],
                    chunks: vec![ChunkMeta {
                        id: cid(chunk),
                        len: 1,
                        crc32c: 0,
                    }],
                },
            }),
            3,
        ));
        assert!(r.0.is_ok(), "{r:?}");
        etag
    }

    fn complete_with(id: &str, etag: &str, condition: Option<WriteCondition>) -> Command {
        cmd(
            meta(MetaWrite::CompleteUpload {
                bucket: "b".into(),
                key: "k".into(),
                upload_id: id.into(),
                parts: vec![(1, etag.into())],
                checksums: vec![],
                condition,
            }),
            5,
        )
    }

    #[test]
    fn conditional_complete_is_checked_when_applied() {
        let mut s = bucket();
        let none_match = Some(WriteCondition {
            if_match: None,
            if_none_match: true,
        });
        // If-Match on a missing key: NoSuchKey; If-None-Match: * on a missing key: done.
        let e1 = one_part_upload(&mut s, "u1", 1);
        let if_match = |etag: &str| {
            Some(WriteCondition {
                if_match: Some(etag.into()),
                if_none_match: false,
            })
        };
        let r = s.apply(&complete_with("u1", &e1, if_match("x")));
        assert_eq!(r.0, Err(MetaError::NoSuchKey));
        let r = s.apply(&complete_with("u1", &e1, none_match.clone()));
        assert!(r.0.is_ok(), "{r:?}");
        let etag1 = s.buckets["b"].objects["k"].to_record().etag.clone();
        assert_eq!(
            s.buckets["b"].objects["k"].to_record().tags,
            [("t".into(), "1".into())]
        );
        // The key exists now: If-None-Match fails and the upload stays, If-Match decides.
        let e2 = one_part_upload(&mut s, "u2", 2);
        let r = s.apply(&complete_with("u2", &e2, none_match.clone()));
        assert_eq!(r.0, Err(MetaError::PreconditionFailed));
        assert!(s.uploads.contains_key("u2"));
        let r = s.apply(&complete_with("u2", &e2, if_match("other")));
        assert_eq!(r.0, Err(MetaError::PreconditionFailed));
        let r = s.apply(&complete_with("u2", &e2, if_match(&etag1)));
        assert!(r.0.is_ok(), "{r:?}");
        // A repeat of a completed upload answers again without looking at the condition.
        assert_eq!(
            s.apply(&complete_with("u2", &e2, none_match)).0,
            r.0,
            "a repeated Complete succeeds"
        );
    }

    #[test]
    fn tags_and_cors_are_replaced_and_removed() {
        let mut s = bucket();
        put(&mut s, "k", 10);
        let etag = s.buckets["b"].objects["k"].to_record().etag.clone();
        let tags = vec![("a".to_string(), "1".to_string())];
        let put_tags = |key: &str, tags: &[(String, String)]| {
            cmd(
                meta(MetaWrite::PutObjectTags {
                    bucket: "b".into(),
                    key: key.into(),
                    tags: tags.to_vec(),
                }),
                20,
            )
        };
        assert!(s.apply(&put_tags("k", &tags)).0.is_ok());
        let rec = &s.buckets["b"].objects["k"].to_record();
        assert_eq!((&rec.tags, &rec.etag), (&tags, &etag));
        assert!(s.apply(&put_tags("k", &[])).0.is_ok());
        assert!(s.buckets["b"].objects["k"].to_record().tags.is_empty());
        assert_eq!(
            s.apply(&put_tags("missing", &tags)).0,
            Err(MetaError::NoSuchKey)
        );
        let rule = CorsRule {
            allowed_origins: vec!["*".into()],
            allowed_methods: vec!["GET".into()],
            ..Default::default()
        };
        let r = s.apply(&cmd(
            meta(MetaWrite::PutCors {
                bucket: "b".into(),
                rules: vec![rule.clone()],
            }),
            21,
        ));
        assert!(r.0.is_ok());
        assert_eq!(s.buckets["b"].cors, std::slice::from_ref(&rule));
        let too_many = cmd(
            meta(MetaWrite::PutCors {
                bucket: "b".into(),
                rules: vec![rule; MAX_CORS_RULES + 1],
            }),
            22,
        );
        assert!(s.apply(&too_many).0.is_err());
        let del = cmd(meta(MetaWrite::DeleteCors { bucket: "b".into() }), 23);
        assert!(s.apply(&del).0.is_ok());
        assert!(s.buckets["b"].cors.is_empty());
    }
}
