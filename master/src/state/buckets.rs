//! Buckets and their settings: creation and deletion, the `public-read` ACL, and the lifecycle and
//! CORS configurations.

use super::{err, ok, MetaReplyData, Reply, State};
use crate::namespace::Objects;
use serde::{Deserialize, Serialize};
use tinydfs_proto::meta::*;

/// A bucket and its objects, keys in UTF-8 byte order (the order S3 lists them in).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Bucket {
    pub created_ms: u64,
    pub owner: String,
    /// Objects in their compact form, stored as [`ObjectRecord`](tinydfs_proto::ObjectRecord)s in snapshots and backups.
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
    /// The bucket's tags (none: no tag set), from a group at feature level 2.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<(String, String)>,
}

/// Most tags a bucket may have (S3's limit; the gateway checks the rest of S3's rules).
pub const MAX_BUCKET_TAGS: usize = 50;

impl State {
    /// Applies a write to a bucket or its settings.
    pub(super) fn apply_bucket(&mut self, w: &MetaWrite, now: u64) -> Reply {
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
                            tags: Vec::new(),
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
            MetaWrite::SetBucketPublic {
                bucket,
                public_read,
            } => self.set_bucket(bucket, |b| b.public_read = *public_read),
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
            MetaWrite::PutBucketTags { bucket, tags } => {
                if tags.len() > MAX_BUCKET_TAGS {
                    return err(MetaError::BadRequest(format!(
                        "{} bucket tags, at most {MAX_BUCKET_TAGS}",
                        tags.len()
                    )));
                }
                self.set_bucket(bucket, |b| b.tags = tags.clone())
            }
            _ => super::misrouted(),
        }
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
}
