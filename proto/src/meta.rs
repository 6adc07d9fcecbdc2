//! Control messages between gateways, chunkservers and the master: the metadata API (objects,
//! buckets, uploads, keys), and through [`crate::cluster`] the messages about nodes.
//!
//! Writes ([`MetaWrite`]) go through the master's replicated log; the leader stamps them with the
//! time and any ids before they are applied. Reads ([`MetaRead`]) are answered by the leader after
//! it has confirmed it still leads, so they observe every acknowledged write.

use crate::types::*;
use serde::{Deserialize, Serialize};

// The messages about nodes (registration, heartbeats, placement, status, fsck, drain,
// rebalance, membership) live in `cluster`; they are sent to the master too, and keep their
// `meta::` names.
pub use crate::cluster::*;

/// A change to durable metadata, as a gateway asks for it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum MetaWrite {
    CreateBucket {
        bucket: String,
        owner: String,
    },
    DeleteBucket {
        bucket: String,
    },
    /// Commit an object whose chunks are durable: the atomic moment it appears or replaces.
    PutObject {
        bucket: String,
        key: String,
        record: ObjectRecord,
        /// Checked atomically with the commit (conditional PUT).
        #[serde(default)]
        condition: Option<WriteCondition>,
    },
    DeleteObject {
        bucket: String,
        key: String,
    },
    DeleteObjects {
        bucket: String,
        keys: Vec<String>,
    },
    CreateUpload {
        bucket: String,
        key: String,
        attrs: ObjectAttrs,
        /// The access key that starts it (listed as Initiator and Owner).
        #[serde(default)]
        initiator: String,
    },
    PutPart {
        bucket: String,
        key: String,
        upload_id: String,
        number: u32,
        part: PartRecord,
    },
    CompleteUpload {
        bucket: String,
        key: String,
        upload_id: String,
        /// (part number, ETag as the client sent it, without quotes)
        parts: Vec<(u32, String)>,
        /// The object's checksum computed by the gateway from the parts' checksums (algorithm
        /// name, base64, with `-N` when composite): stored in the record as it is.
        #[serde(default)]
        checksums: Vec<(String, String)>,
        /// Checked atomically with the commit (`If-Match` / `If-None-Match: *` on Complete).
        #[serde(default)]
        condition: Option<WriteCondition>,
    },
    AbortUpload {
        bucket: String,
        key: String,
        upload_id: String,
    },
    /// A gateway's upload lease: chunk ids it writes carry the lease id.
    AcquireLease {
        holder: String,
        /// Life of the lease in milliseconds (60 s when absent).
        #[serde(default)]
        ttl_ms: Option<u64>,
    },
    /// Extends a lease; fails with NoSuchLease once it expired.
    RenewLease {
        lease: u32,
        #[serde(default)]
        ttl_ms: Option<u64>,
    },
    /// Replaces a bucket's lifecycle configuration (validated by the gateway; at least one rule).
    PutLifecycle {
        bucket: String,
        rules: Vec<LifecycleRule>,
    },
    /// Removes a bucket's lifecycle configuration (done also when it had none, as on S3).
    DeleteLifecycle {
        bucket: String,
    },
    /// Removes what the bucket's lifecycle rules have made due: proposed by the leader's lifecycle
    /// worker. Applying re-checks every key and upload against the rules at the entry's time
    /// (with `day_ms` as the length of a lifecycle day), so an object overwritten or a rule
    /// removed since the worker's scan is left alone.
    LifecycleExpire {
        bucket: String,
        day_ms: u64,
        keys: Vec<String>,
        upload_ids: Vec<String>,
    },
    /// Adds an access key (refused if the id exists). With `bootstrap`, only when there is no
    /// key at all yet, and the key is made an administrator: the gateway's configured key at a
    /// cluster's first start.
    PutKey {
        key: AccessKey,
        #[serde(default)]
        bootstrap: bool,
    },
    DeleteKey {
        id: String,
    },
    /// Gives a key a permission on a bucket, or takes it away (`None`).
    GrantKey {
        id: String,
        bucket: String,
        permission: Option<Permission>,
    },
    /// Canned bucket ACL: `public-read` lets anonymous requests read objects and list.
    SetBucketPublic {
        bucket: String,
        public_read: bool,
    },
    /// Copies an object by reference (CopyObject): the destination shares the source's chunks,
    /// whose reference counts go up, and keeps its ETag, size, parts and checksums. The source
    /// is read when the entry is applied, so a source deleted or replaced meanwhile is never
    /// half-referenced. Answered with [`MetaReply::Committed`].
    CopyObject {
        src_bucket: String,
        src_key: String,
        dst_bucket: String,
        dst_key: String,
        /// New attributes (`x-amz-metadata-directive: REPLACE`); `None` keeps the source's.
        #[serde(default)]
        attrs: Option<ObjectAttrs>,
        /// Preconditions on the source (`x-amz-copy-source-if-*`).
        #[serde(default)]
        source_condition: Option<CopyCondition>,
        /// Condition on the object the copy replaces (`If-Match` / `If-None-Match: *`).
        #[serde(default)]
        condition: Option<WriteCondition>,
        /// New tags (`x-amz-tagging-directive: REPLACE`); `None` keeps the source's.
        #[serde(default)]
        tags: Option<Vec<(String, String)>>,
    },
    /// Replaces an object's tags (empty: removes them), leaving its data, ETag and time alone.
    PutObjectTags {
        bucket: String,
        key: String,
        tags: Vec<(String, String)>,
    },
    /// Replaces a bucket's CORS configuration (validated by the gateway; at least one rule).
    PutCors {
        bucket: String,
        rules: Vec<CorsRule>,
    },
    /// Removes a bucket's CORS configuration (done also when it had none, as on S3).
    DeleteCors {
        bucket: String,
    },
    /// Replaces a bucket's tags (empty: removes them). Needs feature level 2.
    PutBucketTags {
        bucket: String,
        tags: Vec<(String, String)>,
    },
}

/// What a key may do on a bucket; each level includes the ones before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    /// Get and head objects, list, read bucket settings.
    Read,
    /// Also put, delete and multipart uploads.
    Write,
    /// Also delete the bucket and change its settings (lifecycle, ACL).
    Owner,
}

impl std::str::FromStr for Permission {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "read" => Ok(Permission::Read),
            "write" => Ok(Permission::Write),
            "owner" => Ok(Permission::Owner),
            _ => Err(format!("{s:?} is not read, write or owner")),
        }
    }
}

/// An S3 access key, kept in the replicated metadata. The secret is needed to verify
/// signatures, so it is stored; it is never printed by `Debug` (and so never logged).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessKey {
    pub id: String,
    pub secret: String,
    #[serde(default)]
    pub name: String,
    /// Every permission on every bucket, and key management.
    #[serde(default)]
    pub admin: bool,
    #[serde(default)]
    pub buckets: std::collections::BTreeMap<String, Permission>,
    #[serde(default)]
    pub created_ms: u64,
}

impl std::fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessKey")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .field("name", &self.name)
            .field("admin", &self.admin)
            .field("buckets", &self.buckets)
            .finish()
    }
}

impl AccessKey {
    /// Whether this key may do what needs `need` on `bucket`.
    pub fn allows(&self, bucket: &str, need: Permission) -> bool {
        self.admin || self.buckets.get(bucket).is_some_and(|p| *p >= need)
    }
}

/// A condition on the object a write replaces (`If-Match` / `If-None-Match` on PUT).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteCondition {
    /// The current object's ETag must be this one (unquoted).
    pub if_match: Option<String>,
    /// There must be no current object.
    pub if_none_match: bool,
    /// The current object, if any, must have none of these ETags (unquoted): `If-None-Match`
    /// with ETags, which AWS documents only as `*` but Ceph and clients use. Needs feature
    /// level 1: masters of older releases would ignore it and apply the write unconditionally.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub if_none_match_etags: Option<Vec<String>>,
}

impl WriteCondition {
    /// The master group's feature level this condition needs (see `master/src/features.rs`).
    pub fn feature_level(&self) -> u32 {
        u32::from(self.if_none_match_etags.is_some())
    }

    /// Checks the condition against the object the write would replace. An `If-Match` on a
    /// missing key is NoSuchKey (the key's absence wins over the precondition, as on S3).
    pub fn check(&self, current: Option<&ObjectRecord>) -> Result<(), MetaError> {
        self.check_etag(current.map(|r| r.etag.as_str()))
    }

    /// [`WriteCondition::check`] given only the current object's ETag (`None`: no object).
    pub fn check_etag(&self, current: Option<&str>) -> Result<(), MetaError> {
        if self.if_none_match && current.is_some() {
            return Err(MetaError::PreconditionFailed);
        }
        if let (Some(etags), Some(cur)) = (&self.if_none_match_etags, current) {
            if etags.iter().any(|e| e == cur || e == "*") {
                return Err(MetaError::PreconditionFailed);
            }
        }
        if let Some(want) = &self.if_match {
            let Some(cur) = current else {
                return Err(MetaError::NoSuchKey);
            };
            if want != "*" && want != cur {
                return Err(MetaError::PreconditionFailed);
            }
        }
        Ok(())
    }
}

/// Preconditions on the source of a copy (`x-amz-copy-source-if-*` of CopyObject and
/// UploadPartCopy). A failed one is 412 PreconditionFailed, never 304.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyCondition {
    /// ETags as sent (comma-separated, quoted or not, or `*`): the source must have one.
    pub if_match: Option<String>,
    /// ETags the source must not have.
    pub if_none_match: Option<String>,
    /// Seconds since the epoch: the source must have been modified after this.
    pub if_modified_since: Option<u64>,
    /// Seconds since the epoch: the source must not have been modified after this.
    pub if_unmodified_since: Option<u64>,
}

impl CopyCondition {
    /// Checks the conditions against the source with S3's precedence: an `if-match` that holds
    /// overrides a failing `if-unmodified-since`, and an `if-none-match` (holding or not)
    /// decides alone over `if-modified-since`. Times compare in whole seconds, as HTTP dates.
    pub fn check(&self, source: &ObjectRecord) -> Result<(), MetaError> {
        self.check_etag(&source.etag, source.last_modified_ms)
    }

    /// [`CopyCondition::check`] given the source's ETag and modification time.
    pub fn check_etag(&self, etag: &str, last_modified_ms: u64) -> Result<(), MetaError> {
        let modified = last_modified_ms / 1000;
        let held = match (&self.if_match, self.if_unmodified_since) {
            (Some(list), _) => etag_in_list(list, etag),
            (None, Some(t)) => modified <= t,
            (None, None) => true,
        } && match (&self.if_none_match, self.if_modified_since) {
            (Some(list), _) => !etag_in_list(list, etag),
            (None, Some(t)) => modified > t,
            (None, None) => true,
        };
        if held {
            Ok(())
        } else {
            Err(MetaError::PreconditionFailed)
        }
    }
}

/// Whether `etag` (unquoted) is in an `If-Match`-style list (`*` matches any).
pub fn etag_in_list(list: &str, etag: &str) -> bool {
    list.split(',')
        .map(|t| t.trim().trim_start_matches("W/").trim_matches('"'))
        .any(|t| t == "*" || t == etag)
}

/// An uploaded part of a multipart upload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartRecord {
    pub size: u64,
    pub etag: String,
    pub last_modified_ms: u64,
    pub checksums: Vec<(String, String)>,
    pub chunks: Vec<ChunkMeta>,
}

/// A write with the id that makes its retries idempotent.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WriteRequest {
    pub request_id: u128,
    pub write: MetaWrite,
    /// Where the new chunks of this write were stored: soft state the leader records for reads.
    #[serde(default)]
    pub locations: Vec<(ChunkId, Vec<NodeId>)>,
}

/// A read of metadata.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum MetaRead {
    ListBuckets,
    HeadBucket {
        bucket: String,
    },
    /// An object with the replica locations of each of its chunks.
    GetObject {
        bucket: String,
        key: String,
    },
    ListObjects(ListQuery),
    ListParts {
        bucket: String,
        key: String,
        upload_id: String,
    },
    /// A bucket's lifecycle rules (answered with [`MetaReply::Lifecycle`], empty when none).
    GetLifecycle {
        bucket: String,
    },
    /// Every access key, secrets included (internal callers only: gateways and `admin`).
    ListKeys,
    /// In-progress multipart uploads of a bucket (ListMultipartUploads), answered with
    /// [`MetaReply::Uploads`].
    ListUploads(UploadQuery),
    /// A bucket's CORS rules (answered with [`MetaReply::Cors`], empty when none).
    GetCors {
        bucket: String,
    },
    /// A bucket's tags (answered with [`MetaReply::Tags`], empty when none). Asked only of a
    /// group at feature level 2: older masters do not know it.
    GetBucketTags {
        bucket: String,
    },
}

/// Parameters of an object listing; the master applies S3's rules.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ListQuery {
    pub bucket: String,
    pub prefix: String,
    pub delimiter: Option<String>,
    /// List keys strictly after this key (marker, start-after or decoded continuation token).
    pub after: Option<String>,
    pub max_keys: usize,
}

/// A bucket as listed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BucketInfo {
    pub name: String,
    pub created_ms: u64,
    pub owner: String,
    /// Canned ACL `public-read`: anonymous requests may read.
    #[serde(default)]
    pub public_read: bool,
}

/// One key of a listing.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ListEntry {
    pub key: String,
    pub size: u64,
    pub etag: String,
    pub last_modified_ms: u64,
}

/// A page of an object listing.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ListPage {
    pub entries: Vec<ListEntry>,
    pub common_prefixes: Vec<String>,
    pub truncated: bool,
    /// The last key or common prefix returned: where the next page starts (exclusive).
    pub next_after: Option<String>,
}

/// Parameters of a listing of multipart uploads; the master applies S3's rules.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct UploadQuery {
    pub bucket: String,
    pub prefix: String,
    pub delimiter: Option<String>,
    /// List uploads of keys after this one (`key-marker`)...
    pub key_marker: Option<String>,
    /// ...and of the marker key itself after this upload (`upload-id-marker`).
    pub upload_id_marker: Option<String>,
    /// Most uploads and common prefixes together.
    pub max_uploads: usize,
}

/// One in-progress multipart upload as listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadEntry {
    pub key: String,
    pub upload_id: String,
    pub initiated_ms: u64,
    #[serde(default)]
    pub initiator: String,
}

/// A page of a listing of multipart uploads, in S3's order: by key, then initiation time.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct UploadPage {
    pub uploads: Vec<UploadEntry>,
    pub common_prefixes: Vec<String>,
    pub truncated: bool,
    /// Where the next page starts: the last key (or common prefix) returned...
    pub next_key_marker: Option<String>,
    /// ...and the last upload id returned (none when the page ended with a common prefix).
    pub next_upload_id_marker: Option<String>,
}

/// An object and where its chunks are.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ObjectLocation {
    pub record: ObjectRecord,
    /// For each chunk, in order, the live chunkservers holding it.
    pub replicas: Vec<Vec<NodeAddr>>,
    /// The leader has had a dead-node timeout to hear from every chunkserver: a chunk without
    /// replicas here is lost for now, not merely unreported.
    #[serde(default)]
    pub settled: bool,
}

/// Parts of an in-progress multipart upload.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UploadInfo {
    pub initiated_ms: u64,
    pub parts: Vec<(u32, PartRecord)>,
    /// The object checksum chosen at CreateMultipartUpload, if any.
    #[serde(default)]
    pub checksum: Option<UploadChecksum>,
}

/// Most CORS rules a bucket may have, as on AWS S3.
pub const MAX_CORS_RULES: usize = 100;

/// One rule of a bucket's CORS configuration, as S3 defines it. Origins and headers may hold
/// one `*` wildcard each; methods are GET, PUT, HEAD, POST or DELETE.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorsRule {
    #[serde(default)]
    pub id: Option<String>,
    pub allowed_origins: Vec<String>,
    pub allowed_methods: Vec<String>,
    #[serde(default)]
    pub allowed_headers: Vec<String>,
    #[serde(default)]
    pub expose_headers: Vec<String>,
    #[serde(default)]
    pub max_age_seconds: Option<u32>,
}

/// Most lifecycle rules a bucket may have, as on AWS S3.
pub const MAX_LIFECYCLE_RULES: usize = 1000;

/// One rule of a bucket's lifecycle configuration: the part of S3's rule language tinydfs
/// enforces (a key prefix filter; expiration of objects; abort of incomplete multipart uploads).
/// How the filter was written is kept so that GetBucketLifecycleConfiguration returns what was put.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifecycleRule {
    #[serde(default)]
    pub id: Option<String>,
    /// `Status` is `Enabled` (false: `Disabled`, kept but not applied).
    pub enabled: bool,
    /// The key prefix the rule applies to; `None`: an empty `<Filter/>`, every key.
    #[serde(default)]
    pub prefix: Option<String>,
    /// The prefix was given as the legacy `<Prefix>` of the rule rather than inside `<Filter>`.
    #[serde(default)]
    pub legacy_prefix: bool,
    /// `Expiration/Days`: objects are deleted this many days after they were last written.
    #[serde(default)]
    pub expiration_days: Option<u32>,
    /// `Expiration/Date` (midnight UTC, epoch ms): objects are deleted from then on.
    #[serde(default)]
    pub expiration_date_ms: Option<u64>,
    /// `Expiration/ExpiredObjectDeleteMarker`: kept for the round trip; tinydfs has no versioning,
    /// so there are no delete markers to remove.
    #[serde(default)]
    pub expired_object_delete_marker: Option<bool>,
    /// `AbortIncompleteMultipartUpload/DaysAfterInitiation`.
    #[serde(default)]
    pub abort_incomplete_days: Option<u32>,
}

impl LifecycleRule {
    /// Whether the rule's filter selects `key`.
    pub fn applies_to(&self, key: &str) -> bool {
        key.starts_with(self.prefix.as_deref().unwrap_or(""))
    }
}

/// The answer to a write or a read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaError {
    NoSuchBucket,
    NoSuchKey,
    NoSuchUpload,
    BucketNotEmpty,
    BucketAlreadyExists,
    BucketAlreadyOwnedByYou,
    InvalidPart(String),
    InvalidPartOrder,
    EntityTooSmall,
    /// A write's condition did not hold when it was applied.
    PreconditionFailed,
    /// The upload lease is unknown or expired: its chunks may already be garbage.
    NoSuchLease,
    /// Not enough live chunkservers with space to place a chunk.
    NoSpace(String),
    /// This master does not lead; the leader's internal address when known.
    NotLeader(Option<String>),
    /// The request was malformed or of another wire version.
    BadRequest(String),
    /// The master could not complete the request (storage or consensus failure).
    Unavailable(String),
    /// The write needs a feature level the master group has not reached: some master still
    /// runs a release that could not apply it (sent only to callers that asked for it).
    NotYetEnabled(String),
}

impl std::fmt::Display for MetaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

impl std::error::Error for MetaError {}

/// The successful result of a write or a read.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum MetaReply {
    Done,
    /// A bucket was created (false: it already existed and is the caller's, us-east-1 style).
    Created(bool),
    /// The ETag and time of a committed object.
    Committed {
        etag: String,
        last_modified_ms: u64,
    },
    UploadCreated {
        upload_id: String,
    },
    /// An upload lease and when it expires (leader time, ms).
    Lease {
        id: u32,
        expires_ms: u64,
    },
    /// How many keys DeleteObjects removed (absent keys count as deleted, as in S3).
    Deleted(u64),
    Buckets(Vec<BucketInfo>),
    Bucket(BucketInfo),
    Object(ObjectLocation),
    List(ListPage),
    Upload(UploadInfo),
    /// A bucket's lifecycle rules; empty: the bucket has no lifecycle configuration.
    Lifecycle(Vec<LifecycleRule>),
    Keys(Vec<AccessKey>),
    Uploads(UploadPage),
    /// A bucket's CORS rules; empty: the bucket has no CORS configuration.
    Cors(Vec<CorsRule>),
    /// A bucket's tags.
    Tags(Vec<(String, String)>),
    /// A completed multipart upload: the ETag, time and object checksums of the new object.
    Completed {
        etag: String,
        last_modified_ms: u64,
        checksums: Vec<(String, String)>,
    },
}
