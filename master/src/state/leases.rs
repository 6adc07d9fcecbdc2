//! Upload leases: a gateway writes new chunks under a lease, and commits them only while it lives
//! (after that they may already be collected as garbage).

use super::{err, ok, MetaReplyData, Reply, State};
use serde::{Deserialize, Serialize};
use tinydfs_proto::meta::*;
use tinydfs_proto::*;

/// Life of an upload lease; gateways renew at a third of it.
pub const LEASE_TTL_MS: u64 = 60_000;

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

impl State {
    /// Applies a write to the upload leases.
    pub(super) fn apply_lease(&mut self, w: &MetaWrite, now: u64) -> Reply {
        match w {
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
            _ => super::misrouted(),
        }
    }

    /// New chunks may be committed only while the lease they were written under lives: after
    /// it expires they may already be collected as garbage.
    pub(super) fn check_leases(&self, chunks: &[ChunkMeta]) -> Result<(), MetaError> {
        for c in chunks {
            if !self.leases.contains_key(&c.id.lease()) && !self.chunks.contains_key(&c.id) {
                return Err(MetaError::NoSuchLease);
            }
        }
        Ok(())
    }

    /// Whether some lease expired by `now` but is still in the state (no command applied since).
    pub fn has_expired_lease(&self, now: u64) -> bool {
        self.leases.values().any(|l| l.expires_ms <= now)
    }
}
