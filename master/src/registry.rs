//! Soft state, kept by the leader only: which chunkservers are alive, their space, and where each
//! chunk's replicas are. None of it is in the log; a new leader rebuilds it from registrations and
//! full chunk reports.

use crate::idmap::IdMap;
use rand::Rng;
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};
use tinydfs_proto::meta::{DiskStatus, Heartbeat, NodeStatus};
use tinydfs_proto::{ChunkId, ChunkMeta, NodeAddr, NodeId};

/// A chunkserver as the leader last heard of it.
#[derive(Debug)]
pub struct LiveNode {
    pub addr: String,
    pub capacity: u64,
    pub free: u64,
    pub pid: u32,
    pub zone: String,
    pub last_seen: Instant,
    /// Replicas the registry counts on this node.
    pub chunk_count: u64,
    pub disks: Vec<DiskStatus>,
    pub scrubbed: u64,
    pub scrub_corrupt: u64,
    /// A full chunk report was taken since this registry first heard of the node.
    pub reported: bool,
    /// Bytes the node reported stored since its start, with when: the last
    /// [`THROUGHPUT_WINDOW`] of heartbeats.
    pub written: VecDeque<(Instant, u64)>,
}

impl LiveNode {
    /// A node just heard of, holding nothing known yet and not yet reported.
    fn heard_now(addr: String, capacity: u64, free: u64, pid: u32, zone: String) -> Self {
        LiveNode {
            addr,
            capacity,
            free,
            pid,
            zone,
            last_seen: Instant::now(),
            chunk_count: 0,
            disks: Vec::new(),
            scrubbed: 0,
            scrub_corrupt: 0,
            reported: false,
            written: VecDeque::new(),
        }
    }

    /// Bytes stored per second over the last [`THROUGHPUT_WINDOW`] (0 with one sample).
    pub fn write_rate(&self) -> u64 {
        match (self.written.front(), self.written.back()) {
            (Some((t0, b0)), Some((t1, b1))) if t1 > t0 => {
                (b1.saturating_sub(*b0) as f64 / (*t1 - *t0).as_secs_f64()) as u64
            }
            _ => 0,
        }
    }

    /// Records a heartbeat's byte counter; a smaller one means the process restarted.
    fn record_written(&mut self, bytes: u64, now: Instant) {
        if self.written.back().is_some_and(|(_, b)| *b > bytes) {
            self.written.clear();
        }
        self.written.push_back((now, bytes));
        while self
            .written
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > THROUGHPUT_WINDOW)
        {
            self.written.pop_front();
        }
    }

    /// Fraction of the node's capacity in use (1 when it reports no capacity).
    pub fn usage(&self) -> f64 {
        if self.capacity == 0 {
            return 1.0;
        }
        self.capacity.saturating_sub(self.free) as f64 / self.capacity as f64
    }
}

/// How long a replica learnt from a pipeline survives full reports that do not list it: longer
/// than a chunkserver retries a heartbeat.
const REPORT_GRACE: Duration = Duration::from_secs(60);
/// Span of heartbeats a chunkserver's write throughput is measured over (status page).
pub const THROUGHPUT_WINDOW: Duration = Duration::from_secs(60);
/// How long a replica reported lost (corrupt, failed disk) is remembered for `fsck`.
const LOST_MEMORY: Duration = Duration::from_secs(3600);

/// Where a chunk's replicas are: up to three holders inline, 0 marking a free slot (node ids
/// start at 1), in 16 bytes rather than a vector and a set entry per node; holders beyond three,
/// or with ids beyond 32 bits, go to [`Registry::more_holders`] (a chunk there always has an
/// entry here too). `learnt` is when a pipeline or
/// a copy last reported a holder (seconds since the registry started, plus one; 0: never), so
/// that a full report taken just before it does not erase the new replica.
#[derive(Clone, Copy, Debug, Default)]
struct Replicas {
    ids: [u32; 3],
    learnt: u32,
}

/// Whether a replica `learnt` (see [`Replicas::learnt`]) was reported by a pipeline or a copy
/// less than [`REPORT_GRACE`] before `now`.
fn recent(learnt: u32, now: u32) -> bool {
    learnt != 0 && u64::from(now.saturating_sub(learnt)) < REPORT_GRACE.as_secs()
}

/// Liveness, space and replica locations, and the deletions waiting for a node's next heartbeat.
#[derive(Debug)]
pub struct Registry {
    nodes: HashMap<NodeId, LiveNode>,
    /// Gateways by S3 address: pid and last report.
    gateways: HashMap<String, (u32, Instant)>,
    /// Replica locations by chunk: one entry per chunk (the soft state that grows with the data).
    replicas: IdMap<ChunkId, Replicas>,
    /// Holders that do not fit a chunk's inline slots (rare: a fourth copy while a surplus is
    /// removed, or a node id beyond 32 bits).
    more_holders: HashMap<ChunkId, Vec<NodeId>>,
    /// Start of the registry's clock for [`Replicas::learnt`].
    epoch: Instant,
    dead_after: Duration,
    reserve: u64,
    /// Nodes being decommissioned (a copy of the durable flags, refreshed by the repair worker).
    draining: HashSet<NodeId>,
    /// Deletions ordered by the repair worker (surplus copies), sent with the next heartbeat.
    pending_delete: HashMap<NodeId, Vec<ChunkId>>,
    /// Deletions sent to nodes lately: a report taken before the node carried one out must not
    /// count the copy again, and a repair must not pick that node for that chunk meanwhile.
    recently_deleted: HashMap<(NodeId, ChunkId), Instant>,
    /// The Raft term this soft state belongs to: a leader of another term starts afresh.
    pub term: u64,
    /// Chunks of which a node reported a replica lost, with when (for `fsck`).
    lost_recently: HashMap<ChunkId, Instant>,
    /// An operator asked for a rebalance; the repair worker clears it once usage is even.
    pub rebalancing: bool,
    /// Replica deletions ordered since this master started (garbage, stale, surplus).
    pub deletes_ordered: u64,
    /// Replicas chunkservers reported lost since this master started.
    pub lost_reported: u64,
    /// Full chunk reports judged for garbage (deletions allowed) since this master started.
    pub reports_judged: u64,
}

impl Registry {
    /// `dead_after`: silence after which a node is dead; `reserve`: free bytes a node must keep.
    pub fn new(dead_after: Duration, reserve: u64) -> Self {
        Registry {
            nodes: HashMap::new(),
            gateways: HashMap::new(),
            replicas: IdMap::new(),
            more_holders: HashMap::new(),
            epoch: Instant::now(),
            dead_after,
            reserve,
            draining: HashSet::new(),
            pending_delete: HashMap::new(),
            recently_deleted: HashMap::new(),
            term: 0,
            lost_recently: HashMap::new(),
            rebalancing: false,
            deletes_ordered: 0,
            lost_reported: 0,
            reports_judged: 0,
        }
    }

    fn alive(&self, n: &LiveNode) -> bool {
        n.last_seen.elapsed() < self.dead_after
    }

    /// Whether new data may go to `n`: alive, not draining, with room above the reserve.
    fn writable(&self, id: NodeId, n: &LiveNode) -> bool {
        self.alive(n) && n.free > self.reserve && !self.draining.contains(&id)
    }

    /// Records a (re-)registered chunkserver.
    pub fn register(
        &mut self,
        id: NodeId,
        addr: String,
        capacity: u64,
        free: u64,
        pid: u32,
        zone: String,
    ) {
        // The full report that follows the registration says what the node holds.
        self.forget_node(id);
        self.nodes
            .insert(id, LiveNode::heard_now(addr, capacity, free, pid, zone));
    }

    /// Starts a new Raft term. Chunkservers heartbeat every master, so the nodes and their
    /// space stay known (placement works at once under a new leader); but what was learnt of
    /// replicas in another term only guides reads until each node sends this term a full
    /// report: no node counts as reported, no replica as learnt lately (a report replaces it),
    /// and deletions decided then are dropped. Gateways and counters stay.
    pub fn reset(&mut self, term: u64) {
        for n in self.nodes.values_mut() {
            n.reported = false;
        }
        for r in self.replicas.values_mut() {
            r.learnt = 0;
        }
        self.pending_delete.clear();
        self.recently_deleted.clear();
        self.rebalancing = false;
        self.term = term;
    }

    /// Takes a node that beats every master into the registry from its heartbeat, without a
    /// registration, when the registry does not know it (a master that restarted, or one that
    /// had not heard of it yet). Its replicas count once it sends this master a full report.
    pub fn adopt(&mut self, hb: &Heartbeat) {
        if self.nodes.contains_key(&hb.node_id) {
            return;
        }
        let node = LiveNode::heard_now(
            hb.addr.clone(),
            hb.capacity,
            hb.free,
            hb.pid,
            hb.zone.clone(),
        );
        self.nodes.insert(hb.node_id, node);
    }

    /// Records chunks a node says it stored lately (`added` of a heartbeat to a master that does
    /// not lead), except those `unwanted` judges stale or garbage: a guide for reads under a new
    /// leader until the node's full report replaces it.
    pub fn note_added(
        &mut self,
        node: NodeId,
        added: &[ChunkMeta],
        unwanted: impl Fn(&ChunkMeta) -> bool,
    ) {
        if !self.nodes.contains_key(&node) {
            return;
        }
        for c in added.iter().filter(|c| !unwanted(c)) {
            self.add_holder(c.id, node);
        }
    }

    /// Whether this master still wants a full chunk report from `node` in its term.
    pub fn report_wanted(&self, node: NodeId) -> bool {
        self.nodes.get(&node).is_some_and(|n| !n.reported)
    }

    /// Whether every live node has sent a full report to this leader: before that, a chunk
    /// may look over-replicated only because the nodes that no longer hold it have not said so.
    pub fn all_reported(&self) -> bool {
        self.nodes.values().all(|n| !self.alive(n) || n.reported)
    }

    /// Whether deletions wait for `node`'s next heartbeat.
    pub fn has_pending(&self, node: NodeId) -> bool {
        self.pending_delete
            .get(&node)
            .is_some_and(|d| !d.is_empty())
    }

    /// Nodes told to delete `chunk` lately or about to be: not targets for copies of it.
    pub fn deleting(&self, chunk: &ChunkId) -> Vec<NodeId> {
        let mut out: Vec<NodeId> = self
            .pending_delete
            .iter()
            .filter(|(_, d)| d.contains(chunk))
            .map(|(n, _)| *n)
            .collect();
        out.extend(
            self.recently_deleted
                .keys()
                .filter(|(_, c)| c == chunk)
                .map(|(n, _)| *n),
        );
        out
    }

    /// Takes a heartbeat; `None` when the node is unknown and must register again, else the
    /// chunks it must delete. `unwanted` judges each chunk of a full report: true for one that
    /// must go (referenced by nothing and beyond any live lease, or differing from the committed
    /// chunk); such a chunk never counts as a copy. Deletions are ordered only with
    /// `may_delete` (out of safe mode, leadership confirmed); until then they wait. A full
    /// report marks the node reported in this term only if `counts` (the leader took it, from
    /// a node that knew it leads): deletions wait until every node's report counted.
    pub fn heartbeat(
        &mut self,
        hb: &Heartbeat,
        may_delete: bool,
        counts: bool,
        unwanted: impl Fn(&ChunkMeta) -> bool,
    ) -> Option<Vec<ChunkId>> {
        let node = hb.node_id;
        let n = self.nodes.get_mut(&node)?;
        n.addr.clone_from(&hb.addr);
        n.capacity = hb.capacity;
        n.free = hb.free;
        n.pid = hb.pid;
        n.zone.clone_from(&hb.zone);
        n.disks.clone_from(&hb.disks);
        n.scrubbed = hb.scrubbed;
        n.scrub_corrupt = hb.scrub_corrupt;
        n.last_seen = Instant::now();
        n.record_written(hb.bytes_written, n.last_seen);
        for id in &hb.lost {
            self.forget_replica(node, id);
            self.lost_recently.insert(*id, Instant::now());
            self.lost_reported += 1;
        }
        let mut delete = Vec::new();
        if may_delete {
            delete = self.pending_delete.remove(&node).unwrap_or_default();
        }
        if let Some(report) = &hb.chunks {
            let mut keep = Vec::with_capacity(report.len());
            for c in report {
                let gone = self
                    .recently_deleted
                    .get(&(node, c.id))
                    .is_some_and(|at| at.elapsed() < REPORT_GRACE);
                if gone || delete.contains(&c.id) {
                    continue;
                }
                if unwanted(c) {
                    if may_delete {
                        delete.push(c.id);
                    }
                    continue;
                }
                keep.push(c.id);
            }
            let dropped: HashSet<ChunkId> = delete.iter().copied().collect();
            self.full_report(node, keep.into_iter(), &dropped);
            if let Some(n) = self.nodes.get_mut(&node) {
                n.reported |= counts;
            }
            self.reports_judged += u64::from(may_delete);
        }
        let now = Instant::now();
        for id in &delete {
            self.recently_deleted.insert((node, *id), now);
        }
        self.deletes_ordered += delete.len() as u64;
        Some(delete)
    }

    /// Replaces what is known of a node's chunks by a full report (`dropped`: chunks of the
    /// report being deleted now, which must not survive as recent either). Walks the whole
    /// replica map, as the repair worker does every second: no per-node chunk set is kept.
    fn full_report(
        &mut self,
        node: NodeId,
        report: impl Iterator<Item = ChunkId>,
        dropped: &HashSet<ChunkId>,
    ) {
        let new: HashSet<ChunkId> = report.collect();
        let now = self.now_s();
        // A chunk stored after the node took this report (it may have been retried for a
        // while) is not in it: keep replicas recorded recently.
        let gone: Vec<ChunkId> = self
            .replicas
            .iter()
            .filter(|(id, r)| !new.contains(id) && (!recent(r.learnt, now) || dropped.contains(id)))
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            self.remove_holder(&id, node);
        }
        for c in new {
            self.add_holder(c, node);
        }
    }

    /// Seconds on the registry's clock, plus one (see [`Replicas::learnt`]).
    fn now_s(&self) -> u32 {
        u32::try_from(self.epoch.elapsed().as_secs())
            .unwrap_or(u32::MAX - 1)
            .saturating_add(1)
    }

    /// Records that `node` holds `chunk`; true if it was not known to.
    fn add_holder(&mut self, chunk: ChunkId, node: NodeId) -> bool {
        let r = self.replicas.get_or_insert_with(chunk, Replicas::default);
        let small = u32::try_from(node).ok().filter(|n| *n != 0);
        if small.is_some_and(|n| r.ids.contains(&n))
            || self
                .more_holders
                .get(&chunk)
                .is_some_and(|m| m.contains(&node))
        {
            return false;
        }
        match (small, r.ids.iter_mut().find(|slot| **slot == 0)) {
            (Some(n), Some(slot)) => *slot = n,
            _ => self.more_holders.entry(chunk).or_default().push(node),
        }
        if let Some(n) = self.nodes.get_mut(&node) {
            n.chunk_count += 1;
        }
        true
    }

    /// Forgets that `node` holds `chunk`.
    fn remove_holder(&mut self, chunk: &ChunkId, node: NodeId) {
        let mut removed = false;
        if let Some(r) = self.replicas.get_mut(chunk) {
            for slot in r.ids.iter_mut() {
                if u64::from(*slot) == node && node != 0 {
                    *slot = 0;
                    removed = true;
                }
            }
        }
        if let Some(m) = self.more_holders.get_mut(chunk) {
            let before = m.len();
            m.retain(|n| *n != node);
            removed |= m.len() < before;
            if m.is_empty() {
                self.more_holders.remove(chunk);
            }
        }
        let empty = self
            .replicas
            .get(chunk)
            .is_some_and(|r| r.ids == [0; 3] && !self.more_holders.contains_key(chunk));
        if empty {
            self.replicas.remove(chunk);
        }
        if removed {
            if let Some(n) = self.nodes.get_mut(&node) {
                n.chunk_count = n.chunk_count.saturating_sub(1);
            }
        }
    }

    /// Every holder of `chunk`, live or not.
    fn all_holders(&self, chunk: &ChunkId) -> impl Iterator<Item = NodeId> + '_ {
        self.replicas
            .get(chunk)
            .into_iter()
            .flat_map(|r| r.ids.iter().filter(|n| **n != 0).map(|n| u64::from(*n)))
            .chain(self.more_holders.get(chunk).into_iter().flatten().copied())
    }

    /// Forgets every replica of `node` (it registers again).
    fn forget_node(&mut self, node: NodeId) {
        if self.nodes.remove(&node).is_none() {
            return;
        }
        let held: Vec<ChunkId> = self
            .replicas
            .keys()
            .filter(|c| self.all_holders(c).any(|n| n == node))
            .copied()
            .collect();
        for c in held {
            self.remove_holder(&c, node);
        }
        self.pending_delete.remove(&node);
    }

    /// Forgets that `node` holds `chunk`.
    fn forget_replica(&mut self, node: NodeId, chunk: &ChunkId) {
        self.remove_holder(chunk, node);
    }

    /// Orders `node` to delete its copy of `chunk` at its next heartbeat, and stops counting it.
    pub fn order_delete(&mut self, node: NodeId, chunk: ChunkId) {
        self.forget_replica(node, &chunk);
        self.pending_delete.entry(node).or_default().push(chunk);
    }

    /// Records that `nodes` now hold `chunk` (a pipeline or a repair just stored it).
    pub fn add_replicas(&mut self, chunk: ChunkId, nodes: &[NodeId]) {
        for n in nodes {
            self.add_holder(chunk, *n);
        }
        let now = self.now_s();
        if let Some(r) = self.replicas.get_mut(&chunk) {
            r.learnt = now;
        }
    }

    /// Live chunkservers holding `chunk`, in random order to spread reads.
    pub fn locations(&self, chunk: &ChunkId) -> Vec<NodeAddr> {
        let mut out: Vec<NodeAddr> = self
            .holders(chunk)
            .into_iter()
            .filter_map(|id| {
                self.nodes.get(&id).map(|n| NodeAddr {
                    id,
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

    /// Ids of the live chunkservers holding `chunk`.
    pub fn holders(&self, chunk: &ChunkId) -> Vec<NodeId> {
        self.all_holders(chunk)
            .filter(|id| self.nodes.get(id).is_some_and(|n| self.alive(n)))
            .collect()
    }

    /// Number of live copies of `chunk`.
    pub fn live_copies(&self, chunk: &ChunkId) -> usize {
        self.holders(chunk).len()
    }

    /// Number of live copies of `chunk` on nodes that are not draining: the copies that count.
    pub fn good_copies(&self, chunk: &ChunkId) -> usize {
        self.holders(chunk)
            .iter()
            .filter(|id| !self.draining.contains(id))
            .count()
    }

    /// Whether a replica of `chunk` was reported lost lately (corrupt or on a failed disk).
    pub fn lost_lately(&self, chunk: &ChunkId) -> bool {
        self.lost_recently
            .get(chunk)
            .is_some_and(|at| at.elapsed() < LOST_MEMORY)
    }

    pub fn node(&self, id: NodeId) -> Option<&LiveNode> {
        self.nodes.get(&id)
    }

    pub fn is_draining(&self, id: NodeId) -> bool {
        self.draining.contains(&id)
    }

    /// Takes the set of draining nodes from the durable state.
    pub fn set_draining(&mut self, draining: HashSet<NodeId>) {
        self.draining = draining;
        self.recently_deleted
            .retain(|_, at| at.elapsed() < REPORT_GRACE);
        self.lost_recently
            .retain(|_, at| at.elapsed() < LOST_MEMORY);
    }

    /// Live chunkservers that may take data, with their usage (fraction of capacity used).
    pub fn usages(&self) -> Vec<(NodeId, f64)> {
        let mut out: Vec<(NodeId, f64)> = self
            .nodes
            .iter()
            .filter(|(id, n)| self.alive(n) && !self.draining.contains(id) && n.capacity > 0)
            .map(|(id, n)| (*id, n.usage()))
            .collect();
        out.sort_by_key(|(id, _)| *id);
        out
    }

    /// Chunks `node` holds, as last reported.
    pub fn chunks_of(&self, node: NodeId) -> Vec<ChunkId> {
        if !self.nodes.contains_key(&node) {
            return Vec::new();
        }
        self.replicas
            .keys()
            .filter(|c| self.all_holders(c).any(|n| n == node))
            .copied()
            .collect()
    }

    /// A live chunkserver with room that is not in `exclude`, weighted by free space, in a zone
    /// outside `used_zones` when one qualifies.
    pub fn pick_target(&self, exclude: &[NodeId], used_zones: &[&str]) -> Option<NodeAddr> {
        let candidates: Vec<(NodeId, &LiveNode)> = self
            .nodes
            .iter()
            .filter(|(id, n)| self.writable(**id, n) && !exclude.contains(id))
            .map(|(id, n)| (*id, n))
            .collect();
        let mut rng = rand::thread_rng();
        let (id, n) = self.pick_weighted(&candidates, used_zones, &mut rng)?;
        Some(NodeAddr {
            id,
            addr: n.addr.clone(),
        })
    }

    /// Picks among `candidates` by free space above the reserve, preferring zones not yet used.
    fn pick_weighted<'a>(
        &self,
        candidates: &[(NodeId, &'a LiveNode)],
        used_zones: &[&str],
        rng: &mut impl Rng,
    ) -> Option<(NodeId, &'a LiveNode)> {
        let fresh: Vec<(NodeId, &LiveNode)> = candidates
            .iter()
            .filter(|(_, n)| !used_zones.contains(&n.zone.as_str()))
            .copied()
            .collect();
        let pool = if fresh.is_empty() {
            candidates
        } else {
            &fresh[..]
        };
        let weight = |n: &LiveNode| u128::from(n.free.saturating_sub(self.reserve)).max(1);
        let total: u128 = pool.iter().map(|(_, n)| weight(n)).sum();
        let mut pick = rng.gen_range(0..total.max(1));
        for (id, n) in pool {
            let w = weight(n);
            if pick < w {
                return Some((*id, n));
            }
            pick -= w;
        }
        pool.first().copied()
    }

    /// Number of live chunkservers, with room or not.
    /// Chunks of which at least one holder is known.
    pub fn located_count(&self) -> usize {
        self.replicas.len()
    }

    pub fn live_count(&self) -> usize {
        self.nodes.values().filter(|n| self.alive(n)).count()
    }

    /// Picks up to `replicas` distinct live chunkservers with room, weighted by free space and
    /// spread over zones; `None` when fewer than `min` qualify. Nodes in `avoid` (a caller saw
    /// them fail, before the master noticed) are used only when the others are too few.
    pub fn place(&self, replicas: usize, min: usize, avoid: &[NodeId]) -> Option<Vec<NodeAddr>> {
        let usable: Vec<(NodeId, &LiveNode)> = self
            .nodes
            .iter()
            .filter(|(id, n)| self.writable(**id, n))
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
        let mut zones: Vec<&str> = Vec::new();
        while out.len() < replicas && !candidates.is_empty() {
            let Some((id, n)) = self.pick_weighted(&candidates, &zones, &mut rng) else {
                break;
            };
            candidates.retain(|(c, _)| *c != id);
            zones.push(n.zone.as_str());
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
                ..Default::default()
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
                state: match (self.alive(n), self.draining.contains(id)) {
                    (false, _) => "dead",
                    (true, false) => "alive",
                    (true, true) if n.chunk_count == 0 => "drained",
                    (true, true) => "draining",
                }
                .into(),
                pid: Some(n.pid),
                capacity: n.capacity,
                free: n.free,
                chunks: n.chunk_count,
                zone: n.zone.clone(),
                disks: n.disks.clone(),
                scrubbed: n.scrubbed,
                scrub_corrupt: n.scrub_corrupt,
                write_rate: if self.alive(n) { n.write_rate() } else { 0 },
                ..Default::default()
            })
            .collect();
        out.sort_by_key(|n| n.id);
        out
    }
}

#[cfg(test)]
mod tests;
