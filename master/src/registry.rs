//! Soft state, kept by the leader only: which chunkservers are alive, their space, and where each
//! chunk's replicas are. None of it is in the log; a new leader rebuilds it from registrations and
//! full chunk reports.

use rand::Rng;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};
use tinydfs_proto::meta::{Heartbeat, NodeStatus};
use tinydfs_proto::{ChunkId, ChunkMeta, NodeAddr, NodeId};

/// A chunkserver as the leader last heard of it.
#[derive(Debug)]
pub struct LiveNode {
    pub addr: String,
    pub capacity: u64,
    pub free: u64,
    pub pid: u32,
    pub last_seen: Instant,
    pub chunks: HashSet<ChunkId>,
    /// Chunks recorded from pipeline results lately, with when.
    pub recent: HashMap<ChunkId, Instant>,
}

/// How long a replica learnt from a pipeline survives full reports that do not list it: longer
/// than a chunkserver retries a heartbeat.
const REPORT_GRACE: Duration = Duration::from_secs(60);

/// Liveness, space and replica locations.
#[derive(Debug)]
pub struct Registry {
    nodes: HashMap<NodeId, LiveNode>,
    /// Gateways by S3 address: pid and last report.
    gateways: HashMap<String, (u32, Instant)>,
    replicas: HashMap<ChunkId, Vec<NodeId>>,
    dead_after: Duration,
    reserve: u64,
}

impl Registry {
    /// `dead_after`: silence after which a node is dead; `reserve`: free bytes a node must keep.
    pub fn new(dead_after: Duration, reserve: u64) -> Self {
        Registry {
            nodes: HashMap::new(),
            gateways: HashMap::new(),
            replicas: HashMap::new(),
            dead_after,
            reserve,
        }
    }

    fn alive(&self, n: &LiveNode) -> bool {
        n.last_seen.elapsed() < self.dead_after
    }

    /// Records a (re-)registered chunkserver.
    pub fn register(&mut self, id: NodeId, addr: String, capacity: u64, free: u64, pid: u32) {
        let chunks = self.nodes.remove(&id).map(|n| n.chunks).unwrap_or_default();
        self.nodes.insert(
            id,
            LiveNode {
                addr,
                capacity,
                free,
                pid,
                last_seen: Instant::now(),
                chunks,
                recent: HashMap::new(),
            },
        );
    }

    /// Takes a heartbeat; false when the node is unknown and must register again.
    pub fn heartbeat(&mut self, hb: &Heartbeat) -> bool {
        let Some(n) = self.nodes.get_mut(&hb.node_id) else {
            return false;
        };
        n.addr.clone_from(&hb.addr);
        n.capacity = hb.capacity;
        n.free = hb.free;
        n.pid = hb.pid;
        n.last_seen = Instant::now();
        if let Some(report) = &hb.chunks {
            self.full_report(hb.node_id, report);
        }
        true
    }

    /// Replaces what is known of a node's chunks by a full report.
    fn full_report(&mut self, node: NodeId, report: &[ChunkMeta]) {
        let mut new: HashSet<ChunkId> = report.iter().map(|c| c.id).collect();
        let Some(n) = self.nodes.get_mut(&node) else {
            return;
        };
        // A chunk stored after the node took this report (it may have been retried for a
        // while) is not in it: keep replicas recorded recently.
        n.recent.retain(|_, at| at.elapsed() < REPORT_GRACE);
        new.extend(n.recent.keys().copied());
        let old = std::mem::replace(&mut n.chunks, new.clone());
        for gone in old.difference(&new) {
            if let Some(r) = self.replicas.get_mut(gone) {
                r.retain(|n| *n != node);
            }
        }
        for c in new.difference(&old) {
            let r = self.replicas.entry(*c).or_default();
            if !r.contains(&node) {
                r.push(node);
            }
        }
    }

    /// Records that `nodes` now hold `chunk` (a pipeline just stored it).
    pub fn add_replicas(&mut self, chunk: ChunkId, nodes: &[NodeId]) {
        let r = self.replicas.entry(chunk).or_default();
        for n in nodes {
            if !r.contains(n) {
                r.push(*n);
            }
            if let Some(live) = self.nodes.get_mut(n) {
                live.chunks.insert(chunk);
                live.recent.insert(chunk, Instant::now());
            }
        }
    }

    /// Live chunkservers holding `chunk`, in random order to spread reads.
    pub fn locations(&self, chunk: &ChunkId) -> Vec<NodeAddr> {
        let mut out: Vec<NodeAddr> = self
            .replicas
            .get(chunk)
            .into_iter()
            .flatten()
            .filter_map(|id| {
                let n = self.nodes.get(id)?;
                self.alive(n).then(|| NodeAddr {
                    id: *id,
                    addr: n.addr.clone(),
                })
            })
            .collect();
        let mut rng = rand::thread_rng();
        for i in (1..out.len()).rev() {
            out.swap(i, rng.gen_range(0..=i));
        }
        out
    }

    /// Number of live copies of `chunk`.
    pub fn live_copies(&self, chunk: &ChunkId) -> usize {
        self.replicas.get(chunk).map_or(0, |r| {
            r.iter()
                .filter(|id| self.nodes.get(id).is_some_and(|n| self.alive(n)))
                .count()
        })
    }

    /// A live chunkserver with room that is not in `exclude`, weighted by free space.
    pub fn pick_target(&self, exclude: &[NodeId]) -> Option<NodeAddr> {
        let candidates: Vec<(NodeId, &LiveNode)> = self
            .nodes
            .iter()
            .filter(|(id, n)| self.alive(n) && n.free > self.reserve && !exclude.contains(id))
            .map(|(id, n)| (*id, n))
            .collect();
        let total: u128 = candidates
            .iter()
            .map(|(_, n)| u128::from(n.free - self.reserve))
            .sum();
        let mut pick = rand::thread_rng().gen_range(0..total.max(1));
        for (id, n) in &candidates {
            let w = u128::from(n.free - self.reserve);
            if pick < w {
                return Some(NodeAddr {
                    id: *id,
                    addr: n.addr.clone(),
                });
            }
            pick -= w;
        }
        candidates.first().map(|(id, n)| NodeAddr {
            id: *id,
            addr: n.addr.clone(),
        })
    }

    /// Number of live chunkservers, with room or not.
    pub fn live_count(&self) -> usize {
        self.nodes.values().filter(|n| self.alive(n)).count()
    }

    /// Picks up to `replicas` distinct live chunkservers with room, weighted by free space;
    /// `None` when fewer than `min` qualify. Nodes in `avoid` (a caller saw them fail, before the
    /// master noticed) are used only when the others are too few.
    pub fn place(&self, replicas: usize, min: usize, avoid: &[NodeId]) -> Option<Vec<NodeAddr>> {
        let usable: Vec<(NodeId, &LiveNode)> = self
            .nodes
            .iter()
            .filter(|(_, n)| self.alive(n) && n.free > self.reserve)
            .map(|(id, n)| (*id, n))
            .collect();
        let preferred: Vec<(NodeId, &LiveNode)> = usable
            .iter()
            .filter(|(id, _)| !avoid.contains(id))
            .copied()
            .collect();
        let mut candidates = if preferred.len() >= min.max(1) {
            preferred
        } else {
            usable
        };
        if candidates.len() < min.max(1) {
            return None;
        }
        let mut rng = rand::thread_rng();
        let mut out = Vec::new();
        while out.len() < replicas && !candidates.is_empty() {
            let total: u128 = candidates
                .iter()
                .map(|(_, n)| u128::from(n.free - self.reserve))
                .sum();
            let mut pick = rng.gen_range(0..total.max(1));
            let mut idx = 0;
            for (i, (_, n)) in candidates.iter().enumerate() {
                let w = u128::from(n.free - self.reserve);
                if pick < w {
                    idx = i;
                    break;
                }
                pick -= w;
            }
            let (id, n) = candidates.swap_remove(idx);
            out.push(NodeAddr {
                id,
                addr: n.addr.clone(),
            });
        }
        Some(out)
    }

    /// Records a gateway's report.
    pub fn gateway_beat(&mut self, addr: String, pid: u32) {
        self.gateways.insert(addr, (pid, Instant::now()));
    }

    /// Status of every known chunkserver, then every gateway heard of.
    pub fn status(&self) -> Vec<NodeStatus> {
        let mut out = self.chunkserver_status();
        let mut gws: Vec<_> = self.gateways.iter().collect();
        gws.sort();
        for (addr, (pid, seen)) in gws {
            out.push(NodeStatus {
                id: 0,
                role: "gateway".into(),
                addr: addr.clone(),
                state: if seen.elapsed() < self.dead_after {
                    "alive"
                } else {
                    "dead"
                }
                .into(),
                pid: Some(*pid),
                capacity: 0,
                free: 0,
                chunks: 0,
                raft: None,
            });
        }
        out
    }

    fn chunkserver_status(&self) -> Vec<NodeStatus> {
        let mut out: Vec<NodeStatus> = self
            .nodes
            .iter()
            .map(|(id, n)| NodeStatus {
                id: *id,
                role: "chunkserver".into(),
                addr: n.addr.clone(),
                state: if self.alive(n) { "alive" } else { "dead" }.into(),
                pid: Some(n.pid),
                capacity: n.capacity,
                free: n.free,
                chunks: n.chunks.len() as u64,
                raft: None,
            })
            .collect();
        out.sort_by_key(|n| n.id);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_uses_distinct_live_nodes_with_room() {
        let mut r = Registry::new(Duration::from_secs(60), 10);
        r.register(1, "a".into(), 100, 50, 1);
        r.register(2, "b".into(), 100, 50, 2);
        r.register(3, "c".into(), 100, 5, 3); // below the reserve
        for _ in 0..50 {
            let p = r.place(3, 2, &[]).unwrap();
            assert_eq!(p.len(), 2);
            assert_ne!(p[0].id, p[1].id);
            assert!(p.iter().all(|n| n.id != 3));
        }
        assert!(r.place(3, 3, &[]).is_none());
        // A node the caller saw fail is avoided while others suffice.
        r.register(4, "d".into(), 100, 50, 4);
        for _ in 0..20 {
            let p = r.place(2, 2, &[1]).unwrap();
            assert!(p.iter().all(|n| n.id != 1));
        }
        assert_eq!(r.place(3, 3, &[1]).unwrap().len(), 3);
        r.add_replicas(ChunkId(9), &[1, 2]);
        assert_eq!(r.live_copies(&ChunkId(9)), 2);
        let report = |chunks: Vec<u128>| Heartbeat {
            node_id: 2,
            addr: "b".into(),
            capacity: 100,
            free: 50,
            pid: 2,
            chunks: Some(
                chunks
                    .into_iter()
                    .map(|c| ChunkMeta {
                        id: ChunkId(c),
                        len: 1,
                        crc32c: 0,
                    })
                    .collect(),
            ),
        };
        // A report taken before the pipeline stored chunk 9 does not erase it...
        assert!(r.heartbeat(&report(vec![5])));
        assert_eq!(r.live_copies(&ChunkId(9)), 2);
        assert_eq!(r.live_copies(&ChunkId(5)), 1);
        // ...but a chunk known only from reports goes when a report no longer lists it.
        assert!(r.heartbeat(&report(vec![])));
        assert_eq!(r.live_copies(&ChunkId(5)), 0);
        // An unknown node must register again.
        let mut hb = report(vec![]);
        hb.node_id = 77;
        assert!(!r.heartbeat(&hb));
    }
}
