//! The cluster's access keys as this gateway knows them: loaded from the masters at start (the
//! configured key bootstraps the first administrator), refreshed every `key_refresh_ms`, and
//! reloaded at once, within bounds, when a request names a key or a grant not seen yet.

use crate::Gateway;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The cluster's access keys as this gateway knows them. Fetches overlap (the periodic one,
/// ones caused by requests), so each is numbered when it starts: an older fetch that answers
/// late never replaces a newer one (a deleted key would come back), and grants this gateway
/// made itself (the owner of a bucket it just created) survive fetches that started before them.
#[derive(Debug, Default)]
pub struct KeyCache {
    pub keys: HashMap<String, tinydfs_proto::meta::AccessKey>,
    installed: u64,
    /// (fetches started when granted, key id, bucket)
    local: Vec<(u64, String, String)>,
}

impl KeyCache {
    /// Installs the keys a fetch numbered `seq` read, unless a newer fetch's are installed.
    fn install(&mut self, seq: u64, keys: Vec<tinydfs_proto::meta::AccessKey>) {
        if seq <= self.installed {
            return;
        }
        self.installed = seq;
        self.keys = keys.into_iter().map(|k| (k.id.clone(), k)).collect();
        // A fetch that started after a local grant has it already.
        self.local.retain(|(granted, _, _)| *granted >= seq);
        for (_, id, bucket) in self.local.clone() {
            self.grant_owner(&id, &bucket);
        }
    }

    fn grant_owner(&mut self, id: &str, bucket: &str) {
        if let Some(k) = self.keys.get_mut(id) {
            if !k.admin {
                k.buckets
                    .insert(bucket.to_string(), tinydfs_proto::meta::Permission::Owner);
            }
        }
    }
}

impl Gateway {
    /// The secret of an access key, if the key is known.
    pub fn secret_for(&self, access_key: &str) -> Option<String> {
        self.key(access_key).map(|k| k.secret)
    }

    /// An access key of the cluster.
    pub fn key(&self, access_key: &str) -> Option<tinydfs_proto::meta::AccessKey> {
        self.keys.read().ok()?.keys.get(access_key).cloned()
    }

    /// Records that `key` created (so owns) `bucket`, before the next fetch tells it.
    pub fn granted_owner(&self, key: &str, bucket: &str) {
        let started = self.key_fetches.load(std::sync::atomic::Ordering::SeqCst);
        if let Ok(mut c) = self.keys.write() {
            c.local.push((started, key.to_string(), bucket.to_string()));
            c.grant_owner(key, bucket);
        }
    }
}

/// Makes the configured key the cluster's first (administrator) key if it has none, then
/// loads the keys; retries until a master answers.
pub(crate) async fn load_keys(gw: &Gateway) {
    use tinydfs_proto::meta::{AccessKey, MetaWrite};
    let bootstrap = MetaWrite::PutKey {
        key: AccessKey {
            id: gw.config.access_key_id.clone(),
            secret: gw.config.secret_access_key.clone(),
            name: "bootstrap administrator".into(),
            admin: true,
            buckets: Default::default(),
            created_ms: 0,
        },
        bootstrap: true,
    };
    loop {
        match gw.master.write(bootstrap.clone()).await {
            Ok(_) if fetch_keys(gw).await => {
                // Only the first start's key is taken: a changed configured pair neither
                // rotates nor revokes the stored one. Say so, rather than refuse it silently.
                match gw.key(&gw.config.access_key_id) {
                    None => tracing::error!(
                        access_key = %gw.config.access_key_id,
                        "the configured access key is not one of the cluster's keys and will be refused; manage keys with `tinydfs admin key`"
                    ),
                    Some(k) if k.secret != gw.config.secret_access_key => tracing::error!(
                        access_key = %gw.config.access_key_id,
                        "the configured secret differs from the cluster's for this key; the cluster's is the one accepted (rotate keys with `tinydfs admin key`)"
                    ),
                    Some(_) => {}
                }
                return;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot reach the masters for the access keys yet")
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Replaces the cached keys by the masters' list; false if no master answered.
async fn fetch_keys(gw: &Gateway) -> bool {
    use tinydfs_proto::meta::{MetaRead, MetaReply};
    let seq = gw
        .key_fetches
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        + 1;
    match gw.master.read(MetaRead::ListKeys).await {
        Ok(MetaReply::Keys(keys)) => {
            if let Ok(mut k) = gw.keys.write() {
                k.install(seq, keys);
            }
            true
        }
        Ok(_) => false,
        Err(e) => {
            tracing::warn!(error = %e, "cannot refresh the access keys");
            false
        }
    }
}

/// Shortest time between two reloads of the keys caused by requests (unknown key, refused
/// permission), so that a stream of bad requests costs the masters little.
const KEY_RELOAD_MIN_GAP: Duration = Duration::from_millis(250);

/// Reloads the keys now, unless a request did so less than [`KEY_RELOAD_MIN_GAP`] ago; true if
/// they were reloaded.
pub async fn reload_keys(gw: &Gateway) -> bool {
    {
        let Ok(mut last) = gw.keys_reloaded.lock() else {
            return false;
        };
        if last.is_some_and(|t| t.elapsed() < KEY_RELOAD_MIN_GAP) {
            return false;
        }
        *last = Some(Instant::now());
    }
    fetch_keys(gw).await
}

/// Keeps the cached keys current: a new key works, and a deleted one stops working, within
/// `key_refresh_ms`.
pub(crate) async fn refresh_keys(gw: Arc<Gateway>) {
    let every = Duration::from_millis(gw.config.key_refresh_ms.max(100));
    loop {
        tokio::time::sleep(every).await;
        fetch_keys(&gw).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tinydfs_proto::meta::{AccessKey, Permission};

    fn key(id: &str) -> AccessKey {
        AccessKey {
            id: id.into(),
            secret: "s".into(),
            name: String::new(),
            admin: false,
            buckets: Default::default(),
            created_ms: 0,
        }
    }

    #[test]
    fn a_late_older_fetch_never_replaces_a_newer_one_and_local_grants_survive() {
        let mut c = KeyCache::default();
        // Fetch 2 (after a key was deleted) answers before fetch 1 (from before).
        c.install(2, vec![key("a")]);
        c.install(1, vec![key("a"), key("deleted")]);
        assert!(!c.keys.contains_key("deleted"));
        // A bucket created when 2 fetches had started: kept over fetch 2's (older) answer...
        c.local.push((2, "a".into(), "b".into()));
        c.grant_owner("a", "b");
        c.install(2, vec![key("a")]); // ignored: not newer
        c.installed = 1;
        c.install(2, vec![key("a")]);
        assert_eq!(c.keys["a"].buckets.get("b"), Some(&Permission::Owner));
        // ...and dropped once a fetch that started after it answers (it has the grant).
        c.install(3, vec![key("a")]);
        assert!(c.keys["a"].buckets.is_empty());
        assert!(c.local.is_empty());
    }
}
