//! Object writes: put, delete, copy and tags, and replacing one object by another (which moves
//! the chunk references).

use super::{err, ok, MetaReplyData, Reply, State};
use crate::object::Object;
use tinydfs_proto::meta::*;
use tinydfs_proto::*;

impl State {
    /// Applies a write to an object.
    pub(super) fn apply_object(&mut self, w: &MetaWrite, now: u64) -> Reply {
        match w {
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
            _ => super::misrouted(),
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

    /// Puts (or removes, with `None`) an object, releasing the chunks of the one it replaces.
    /// The new record's chunk references must already have been added.
    pub(super) fn replace_object(&mut self, bucket: &str, key: &str, object: Option<Object>) {
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

    /// Number of objects in all buckets.
    pub fn object_count(&self) -> u64 {
        self.buckets.values().map(|b| b.objects.len() as u64).sum()
    }
}

/// What a copy changes of the source's record (`REPLACE` directives); `None` keeps it.
struct CopyChanges<'a> {
    attrs: Option<&'a ObjectAttrs>,
    tags: Option<&'a Vec<(String, String)>>,
}
