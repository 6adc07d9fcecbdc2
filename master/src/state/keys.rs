//! S3 access keys: the bootstrap key, keys added and removed, and their grants on buckets.

use super::{err, ok, MetaReplyData, Reply, State};
use tinydfs_proto::meta::*;

impl State {
    /// Applies a write to the access keys.
    pub(super) fn apply_key(&mut self, w: &MetaWrite, now: u64) -> Reply {
        match w {
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
            _ => super::misrouted(),
        }
    }
}
