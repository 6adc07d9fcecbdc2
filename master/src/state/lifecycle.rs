//! Buckets' lifecycle rules as the state applies them: when a rule makes an object or an
//! incomplete multipart upload due, and the removal ([`MetaWrite::LifecycleExpire`]) that the
//! leader's lifecycle worker (`crate::lifecycle`) proposes, checked again here at the entry's time.

use super::{err, ok, MetaReplyData, Reply, State};
use tinydfs_proto::meta::*;

/// When an action on something created at `created_ms` falls due `days` lifecycle days later:
/// the creation time plus the days, rounded up to the next day boundary (AWS rounds to the next
/// midnight UTC; a day is `day_ms` long).
pub fn due_at(created_ms: u64, days: u32, day_ms: u64) -> u64 {
    let day_ms = day_ms.max(1);
    let t = created_ms.saturating_add(u64::from(days).saturating_mul(day_ms));
    t.div_ceil(day_ms).saturating_mul(day_ms)
}

/// Whether `rule` expires the object `key` last written at `last_modified_ms`, at `now`.
pub fn expires(
    rule: &LifecycleRule,
    key: &str,
    last_modified_ms: u64,
    now: u64,
    day_ms: u64,
) -> bool {
    rule.enabled
        && rule.applies_to(key)
        && (rule
            .expiration_days
            .is_some_and(|d| now >= due_at(last_modified_ms, d, day_ms))
            || rule.expiration_date_ms.is_some_and(|d| now >= d))
}

/// Whether any rule expires the object.
pub fn object_due(
    rules: &[LifecycleRule],
    key: &str,
    last_modified_ms: u64,
    now: u64,
    day_ms: u64,
) -> bool {
    rules
        .iter()
        .any(|r| expires(r, key, last_modified_ms, now, day_ms))
}

/// Whether any rule aborts the incomplete multipart upload of `key` started at `initiated_ms`.
pub fn upload_due(
    rules: &[LifecycleRule],
    key: &str,
    initiated_ms: u64,
    now: u64,
    day_ms: u64,
) -> bool {
    rules.iter().any(|r| {
        r.enabled
            && r.applies_to(key)
            && r.abort_incomplete_days
                .is_some_and(|d| now >= due_at(initiated_ms, d, day_ms))
    })
}

impl State {
    /// Removes the named objects and uploads of a bucket that its lifecycle rules make due at
    /// `now`; the others (overwritten, completed, or no longer under a rule) stay.
    pub(super) fn lifecycle_expire(
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
                .is_some_and(|r| object_due(&rules, key, r.last_modified_ms, now, day_ms));
            if due {
                self.replace_object(bucket, key, None);
                removed += 1;
            }
        }
        for id in upload_ids {
            let due = self.uploads.get(id).is_some_and(|u| {
                u.bucket == bucket && upload_due(&rules, &u.key, u.initiated_ms, now, day_ms)
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
}
