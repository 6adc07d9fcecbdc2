//! The replication worker, run by the settled leader: it keeps every committed chunk at its
//! target number of copies.
//!
//! Each round it derives its work from durable state (the chunk table, the draining flags) and
//! the leader's soft state (live replicas), so a master restart or a leader change loses
//! nothing. It waits one dead-node timeout after this master starts leading (safe mode), so that
//! chunkservers have reported before a chunk is judged under- or over-replicated.
//!
//! - Under-replicated chunks (copies on draining nodes do not count) are copied chunkserver to
//!   chunkserver (never through the master or a gateway), fewest copies first, a bounded number
//!   at a time, to a node in a zone that has no copy yet when there is one.
//! - Surplus copies (a dead node came back, a drain or a rebalance finished its copy) are ordered
//!   deleted with the holder's next heartbeat: copies on draining nodes first, then copies that
//!   share a zone with another, then the copy on the fullest node.
//! - A rebalance (started by `tinydfs admin rebalance`) adds a copy of chunks of the fullest
//!   node on the emptiest one; the surplus rule then removes the fullest node's copy.
//! - Expired upload leases are made to expire in the state (a `Tick` command) when no gateway
//!   writes anything, so that their chunks become collectable garbage.

use crate::node::Master;
use crate::state::Op;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tinydfs_proto::client::{ChunkClient, ReplicateOrder};
use tinydfs_proto::time::now_ms;
use tinydfs_proto::{ChunkId, NodeAddr, NodeId};
use tokio::sync::Semaphore;

/// Fixed part of the time a copy may take.
const REPLICATE_TIMEOUT: Duration = Duration::from_secs(60);
/// Slowest copy rate tolerated (bytes per second) before a copy is abandoned and retried.
const MIN_COPY_RATE: u64 = 1024 * 1024;
/// Most surplus copies ordered deleted per round, so that a returning node's backlog is spread
/// over heartbeats.
const MAX_DELETES_PER_ROUND: usize = 10_000;

/// One copy to make.
struct Copy {
    id: ChunkId,
    len: u64,
    crc32c: u32,
    source: NodeAddr,
    target: NodeAddr,
    /// A rebalancing move: once the copy is made, the source's copy is deleted.
    moving: bool,
    /// The Raft term the copy was planned in: a move's deletion is ordered only in that term
    /// (in another, what the registry knows of replicas has been rebuilt since).
    term: u64,
}

/// A chunk below its target, found while planning.
struct Need {
    copies: usize,
    id: ChunkId,
    len: u64,
    crc32c: u32,
}

type InFlight = Arc<Mutex<HashSet<ChunkId>>>;

/// Runs until the process ends; idle on followers.
pub async fn repair_worker(m: Arc<Master>) {
    let client = ChunkClient::new(m.config.secret.clone());
    let in_flight: InFlight = Arc::default();
    let slots = Arc::new(Semaphore::new(m.config.repair_concurrency.max(1)));
    let interval = Duration::from_millis(m.config.repair_interval_ms.max(10));
    loop {
        tokio::time::sleep(interval).await;
        if !m.settled() {
            continue; // not leading, or safe mode after becoming leader
        }
        if m.refresh_draining().is_err() {
            continue;
        }
        expire_leases(&m).await;
        let copies = plan(&m, &in_flight, slots.available_permits());
        for copy in copies {
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                // At the concurrency limit: the rest waits for the next round.
                if let Ok(mut f) = in_flight.lock() {
                    f.remove(&copy.id);
                }
                continue;
            };
            let (m, client, in_flight) = (m.clone(), client.clone(), in_flight.clone());
            tokio::spawn(async move {
                run_copy(&m, &client, &copy).await;
                if let Ok(mut f) = in_flight.lock() {
                    f.remove(&copy.id);
                }
                drop(permit);
            });
        }
    }
}

/// Proposes a `Tick` when a lease has expired by the clock but the state, idle, still has it.
async fn expire_leases(m: &Master) {
    let due = m
        .state()
        .map(|a| a.state.has_expired_lease(now_ms()))
        .unwrap_or(false);
    if due {
        if let Err(e) = m.propose(None, Op::Tick).await {
            tracing::debug!(error = %e, "tick failed");
        }
    }
}

async fn run_copy(m: &Master, client: &ChunkClient, copy: &Copy) {
    let order = ReplicateOrder {
        source: copy.source.clone(),
        len: copy.len,
        crc32c: copy.crc32c,
    };
    // A paused target never answers: give the copy a generous bound.
    let limit = REPLICATE_TIMEOUT + Duration::from_secs(copy.len / MIN_COPY_RATE);
    let result = tokio::time::timeout(limit, client.replicate(&copy.target, copy.id, &order))
        .await
        .unwrap_or_else(|_| {
            Err(tinydfs_proto::http::CallError::TimedOut(format!(
                "{} did not finish the copy in time",
                copy.target.addr
            )))
        });
    match result {
        Ok(r) if r.len == copy.len && r.crc32c == copy.crc32c => {
            if let Ok(mut reg) = m.registry() {
                reg.add_replicas(copy.id, &[copy.target.id]);
                // A move deletes the source's copy (not whichever the surplus rule would pick,
                // which could move chunks back and forth).
                let target_copies = m.config.replicas.max(1);
                if copy.moving
                    && reg.term == copy.term
                    && reg.all_reported()
                    && reg.good_copies(&copy.id) > target_copies
                {
                    reg.order_delete(copy.source.id, copy.id);
                }
            }
            m.repaired
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(chunk = %copy.id, source = %copy.source.addr, target = %copy.target.addr, "chunk copied");
        }
        Ok(_) => tracing::error!(chunk = %copy.id, "copied chunk does not match"),
        Err(e) => tracing::warn!(chunk = %copy.id, error = %e, "copy failed; will retry"),
    }
}

/// Orders this round's surplus deletions and returns up to `slots` copies to make (marked in
/// flight), repairs before rebalancing moves.
fn plan(m: &Master, in_flight: &InFlight, slots: usize) -> Vec<Copy> {
    let (Ok(a), Ok(mut reg), Ok(mut flying)) = (m.state(), m.registry(), in_flight.lock()) else {
        return Vec::new();
    };
    let target = m.config.replicas.max(1);
    // Surplus is judged only once every live node has reported to this leader: before that a
    // copy may look extra only because the node that lost it has not said so.
    let may_delete = reg.all_reported();
    let mut needs = Vec::new();
    let mut deletes = Vec::new();
    for (id, c) in &a.state.chunks {
        let holders = reg.holders(id);
        let good = holders.iter().filter(|n| !reg.is_draining(**n)).count();
        if good < target {
            if !holders.is_empty() {
                needs.push(Need {
                    copies: good,
                    id: *id,
                    len: c.len,
                    crc32c: c.crc32c,
                });
            }
            // else lost: nothing to copy from (status and fsck report it)
        } else if holders.len() > target
            && may_delete
            && !flying.contains(id)
            && deletes.len() < MAX_DELETES_PER_ROUND
        {
            for victim in surplus(&reg, &holders, holders.len() - target) {
                deletes.push((victim, *id));
            }
        }
    }
    for (node, chunk) in deletes {
        tracing::info!(%chunk, node, "surplus copy ordered deleted");
        reg.order_delete(node, chunk);
    }
    needs.sort_by_key(|n| n.copies);
    let mut copies = Vec::new();
    for need in needs {
        if copies.len() >= slots {
            break;
        }
        if flying.contains(&need.id) {
            continue;
        }
        let holders = reg.holders(&need.id);
        // Read from a draining node first: it is leaving anyway, the others serve clients.
        let Some(&source) = holders
            .iter()
            .find(|n| reg.is_draining(**n))
            .or_else(|| holders.first())
        else {
            continue;
        };
        let zones: Vec<&str> = holders
            .iter()
            .filter(|n| !reg.is_draining(**n))
            .filter_map(|n| reg.node(*n).map(|n| n.zone.as_str()))
            .collect();
        let mut exclude = holders.clone();
        exclude.extend(reg.deleting(&need.id));
        let (Some(target), Some(source)) = (reg.pick_target(&exclude, &zones), addr(&reg, source))
        else {
            continue; // no node to copy to (fewer writable nodes than the target)
        };
        flying.insert(need.id);
        copies.push(Copy {
            id: need.id,
            len: need.len,
            crc32c: need.crc32c,
            source,
            target,
            moving: false,
            term: reg.term,
        });
    }
    if copies.is_empty() && flying.is_empty() && reg.rebalancing && may_delete {
        copies = rebalance_moves(m, &a.state, &mut reg, &mut flying, slots);
    }
    copies
}

fn addr(reg: &crate::registry::Registry, id: NodeId) -> Option<NodeAddr> {
    reg.node(id).map(|n| NodeAddr {
        id,
        addr: n.addr.clone(),
    })
}

/// Chooses `count` copies among `holders` to delete: on draining nodes first, then in zones
/// holding more than one copy, then on the fullest nodes.
fn surplus(reg: &crate::registry::Registry, holders: &[NodeId], count: usize) -> Vec<NodeId> {
    let mut zone_count: HashMap<&str, usize> = HashMap::new();
    for n in holders {
        if let Some(node) = reg.node(*n) {
            *zone_count.entry(node.zone.as_str()).or_default() += 1;
        }
    }
    let mut ranked: Vec<(bool, bool, f64, NodeId)> = holders
        .iter()
        .filter_map(|n| {
            let node = reg.node(*n)?;
            let shared_zone = zone_count.get(node.zone.as_str()).copied().unwrap_or(0) > 1;
            Some((reg.is_draining(*n), shared_zone, node.usage(), *n))
        })
        .collect();
    // Most deletable first.
    ranked.sort_by(|a, b| {
        (b.0, b.1)
            .cmp(&(a.0, a.1))
            .then(b.2.total_cmp(&a.2))
            .then(a.3.cmp(&b.3))
    });
    ranked.into_iter().take(count).map(|r| r.3).collect()
}

/// A rebalance step: copies of chunks of the fullest node onto the emptiest one, or none (and
/// the rebalance ends) once usage is even within the threshold.
fn rebalance_moves(
    m: &Master,
    state: &crate::state::State,
    reg: &mut crate::registry::Registry,
    flying: &mut HashSet<ChunkId>,
    slots: usize,
) -> Vec<Copy> {
    let usages = reg.usages();
    let (Some(full), Some(empty)) = (
        usages.iter().max_by(|a, b| a.1.total_cmp(&b.1)),
        usages.iter().min_by(|a, b| a.1.total_cmp(&b.1)),
    ) else {
        reg.rebalancing = false;
        return Vec::new();
    };
    let gap = full.1 - empty.1;
    if full.0 == empty.0 || gap < m.config.rebalance_threshold {
        tracing::info!(gap, "rebalance finished");
        reg.rebalancing = false;
        return Vec::new();
    }
    let (Some(source), Some(target)) = (addr(reg, full.0), addr(reg, empty.0)) else {
        return Vec::new();
    };
    let capacity = |id: NodeId| reg.node(id).map_or(1, |n| n.capacity.max(1)) as f64;
    let (cap_full, cap_empty) = (capacity(full.0), capacity(empty.0));
    let mut gap_left = gap;
    let mut copies = Vec::new();
    let target_copies = m.config.replicas.max(1);
    for id in reg.chunks_of(full.0) {
        if copies.len() >= slots || gap_left < m.config.rebalance_threshold {
            break;
        }
        let Some(c) = state.chunks.get(&id) else {
            continue; // not committed (yet, or garbage)
        };
        let holders = reg.holders(&id);
        if holders.contains(&empty.0)
            || holders.len() != target_copies
            || reg.deleting(&id).contains(&empty.0)
        {
            continue;
        }
        // Never trade zone spread for balance: the new copy must not join a zone that another
        // copy (other than the moving one) already covers, unless it leaves that same zone.
        let zone = |n: NodeId| reg.node(n).map(|x| x.zone.clone()).unwrap_or_default();
        let (from_zone, to_zone) = (zone(full.0), zone(empty.0));
        if from_zone != to_zone && holders.iter().any(|h| *h != full.0 && zone(*h) == to_zone) {
            continue;
        }
        // Moving this chunk narrows the gap from both sides; a move that would overshoot the
        // balance is not made (it would be undone by the next round).
        let shift = c.len as f64 / cap_full + c.len as f64 / cap_empty;
        if shift > gap_left {
            continue;
        }
        gap_left -= shift;
        flying.insert(id);
        copies.push(Copy {
            id,
            len: c.len,
            crc32c: c.crc32c,
            source: source.clone(),
            target: target.clone(),
            moving: true,
            term: reg.term,
        });
    }
    if copies.is_empty() {
        // Nothing left that can move without overshooting: as even as it gets.
        tracing::info!(gap, "rebalance finished: nothing more to move");
        reg.rebalancing = false;
    }
    copies
}
