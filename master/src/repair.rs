//! The re-replication worker: brings every chunk whose live copies fell below the target back
//! to it, fewest copies first, copied chunkserver to chunkserver (never through the master or a
//! gateway), a bounded number at a time.
//!
//! Its queue is derived each round from durable state (the chunk table) and the leader's soft
//! state (live replicas), so a master restart or a leader change loses nothing. It waits one
//! dead-node timeout after this master starts (safe mode), so that chunkservers have reported
//! before a chunk is judged under-replicated.

use crate::api::Master;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tinydfs_proto::client::{ChunkClient, ReplicateOrder};
use tinydfs_proto::ChunkId;
use tokio::sync::Semaphore;

/// Fixed part of the time a copy may take.
const REPLICATE_TIMEOUT: Duration = Duration::from_secs(60);
/// Slowest copy rate tolerated (bytes per second) before a copy is abandoned and retried.
const MIN_COPY_RATE: u64 = 1024 * 1024;

/// One under-replicated chunk.
struct Job {
    copies: usize,
    id: ChunkId,
    len: u64,
    crc32c: u32,
}

/// Runs until the process ends; idle on followers.
pub async fn repair_worker(m: Arc<Master>) {
    let client = ChunkClient::new(m.config.secret.clone());
    let in_flight: Arc<Mutex<HashSet<ChunkId>>> = Arc::default();
    let slots = Arc::new(Semaphore::new(m.config.repair_concurrency.max(1)));
    let interval = Duration::from_millis(m.config.repair_interval_ms.max(10));
    loop {
        tokio::time::sleep(interval).await;
        if !m.settled() {
            continue; // not leading, or safe mode after becoming leader
        }
        let mut jobs = under_replicated(&m);
        jobs.sort_by_key(|j| j.copies);
        for job in jobs {
            if job.copies == 0 {
                continue; // lost: nothing to copy from (reported by status)
            }
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                break; // at the concurrency limit: the rest waits for the next round
            };
            if !in_flight
                .lock()
                .map(|mut f| f.insert(job.id))
                .unwrap_or(false)
            {
                continue;
            }
            let (source, target) = {
                let Ok(reg) = m.registry.lock() else { break };
                let holders = reg.locations(&job.id);
                let exclude: Vec<u64> = holders.iter().map(|n| n.id).collect();
                (holders.into_iter().next(), reg.pick_target(&exclude))
            };
            let (Some(source), Some(target)) = (source, target) else {
                if let Ok(mut f) = in_flight.lock() {
                    f.remove(&job.id);
                }
                continue; // no node to copy to (fewer live nodes than the target)
            };
            let (m, client, in_flight) = (m.clone(), client.clone(), in_flight.clone());
            tokio::spawn(async move {
                let order = ReplicateOrder {
                    source,
                    len: job.len,
                    crc32c: job.crc32c,
                };
                // A paused target never answers: give the copy a generous bound.
                let limit = REPLICATE_TIMEOUT + Duration::from_secs(job.len / MIN_COPY_RATE);
                let result = tokio::time::timeout(limit, client.replicate(&target, job.id, &order))
                    .await
                    .unwrap_or_else(|_| {
                        Err(format!("{} did not finish the copy in time", target.addr))
                    });
                match result {
                    Ok(r) if r.len == job.len && r.crc32c == job.crc32c => {
                        if let Ok(mut reg) = m.registry.lock() {
                            reg.add_replicas(job.id, &[target.id]);
                        }
                        m.repaired
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tracing::info!(chunk = %job.id, target = %target.addr, "chunk re-replicated");
                    }
                    Ok(_) => tracing::error!(chunk = %job.id, "re-replicated copy does not match"),
                    Err(e) => {
                        tracing::warn!(chunk = %job.id, error = %e, "re-replication failed; will retry")
                    }
                }
                if let Ok(mut f) = in_flight.lock() {
                    f.remove(&job.id);
                }
                drop(permit);
            });
        }
    }
}

fn under_replicated(m: &Master) -> Vec<Job> {
    let (Ok(a), Ok(reg)) = (m.applied.read(), m.registry.lock()) else {
        return Vec::new();
    };
    let target = m.config.replicas.max(1);
    a.state
        .chunks
        .iter()
        .filter_map(|(id, c)| {
            let copies = reg.live_copies(id);
            (copies < target).then_some(Job {
                copies,
                id: *id,
                len: c.len,
                crc32c: c.crc32c,
            })
        })
        .collect()
}
