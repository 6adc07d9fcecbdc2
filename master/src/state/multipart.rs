//! Multipart uploads: creation, parts, completion (answered again when repeated) and abort.

use super::{err, ok, MetaReplyData, Reply, State};
use crate::object::Object;
use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tinydfs_proto::meta::*;
use tinydfs_proto::*;

/// How long a completed multipart upload is remembered so that a repeated Complete succeeds.
pub const COMPLETED_UPLOAD_TTL_MS: u64 = 24 * 3600 * 1000;
/// Minimum size of every part but the last, as on AWS S3.
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;

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

impl State {
    /// Starts a multipart upload under the id the leader chose ([`super::Op::CreateUpload`]).
    pub(super) fn create_upload(
        &mut self,
        upload_id: &str,
        bucket: &str,
        key: &str,
        attrs: &ObjectAttrs,
        initiator: &str,
        now: u64,
    ) -> Reply {
        if !self.buckets.contains_key(bucket) {
            return err(MetaError::NoSuchBucket);
        }
        self.uploads.insert(
            upload_id.to_string(),
            Upload {
                bucket: bucket.to_string(),
                key: key.to_string(),
                initiated_ms: now,
                attrs: attrs.clone(),
                parts: BTreeMap::new(),
                initiator: initiator.to_string(),
            },
        );
        ok(MetaReplyData::UploadCreated {
            upload_id: upload_id.to_string(),
        })
    }

    /// Applies a write to a multipart upload.
    pub(super) fn apply_multipart(&mut self, w: &MetaWrite, now: u64) -> Reply {
        match w {
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
            _ => super::misrouted(),
        }
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
}
