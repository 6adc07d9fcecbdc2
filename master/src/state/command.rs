//! The log entry ([`Command`], [`Op`]) and the answers applying one gives ([`Reply`]), with the
//! compact form ([`Answer`]) in which the request-id table keeps them.

use super::State;
use serde::{Deserialize, Serialize};
use tinydfs_proto::meta::*;
use tinydfs_proto::*;

/// Version of [`Command`]s written to the log; applying a newer version is refused.
pub const COMMAND_VERSION: u16 = 1;

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
    /// Replaces a new, empty state by a backup. Proposed by `tinydfs master --restore` before
    /// restores became snapshots (a whole state can exceed a log record); still applied from
    /// older logs, no longer proposed.
    Restore { state: Box<State> },
    /// Several client writes in one entry (a gateway's concurrent commits), applied in order,
    /// each with its own request id and answer.
    Many(Vec<Batched>),
    /// Raises the group's feature level (never lowers it). Proposed by a leader once every
    /// master of the group has said it can apply that level ([`crate::features`]); releases
    /// before feature levels cannot decode it, and never see it for that reason.
    SetFeatureLevel { level: u32 },
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
    pub(super) fn of(reply: &Reply) -> Answer {
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

    pub(super) fn reply(&self) -> Reply {
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

pub(super) fn ok(d: MetaReplyData) -> Reply {
    Reply(Ok(MetaReplyKind::Meta(d)))
}

pub(super) fn err(e: MetaError) -> Reply {
    Reply(Err(e))
}
