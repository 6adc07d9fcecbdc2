//! The master node: [`Master`], what every request handler and background worker shares (the
//! Raft handle, the applied state, the leader's registry, the configuration), and what it does on
//! its own account: propose a command and wait for its answer, make a read linearizable, tell
//! whether it leads and has settled, name a new cluster, and report its view of the group.

use crate::config::MasterConfig;
use crate::raft::Raft;
use crate::registry::Registry;
use crate::state::{Command, MetaReplyKind, Op, Reply, COMMAND_VERSION};
use crate::store::Applied;
use openraft::error::{CheckIsLeaderError, ClientWriteError, ForwardToLeader, RaftError};
use openraft::BasicNode;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tinydfs_proto::client::paths;
use tinydfs_proto::meta::*;
use tinydfs_proto::time::now_ms;

/// Everything a request handler or a background worker needs.
pub struct Master {
    pub raft: Raft,
    /// The term in which this master leads and since when (None: not leading). Until chunkservers
    /// had a dead-node timeout to report to a new leader, an empty registry means "not heard
    /// yet", not "no copy" (safe mode).
    pub leader_since: Mutex<Option<(u64, std::time::Instant)>>,
    /// Serialises membership changes (each reads the voter set, then changes it).
    pub membership_lock: tokio::sync::Mutex<()>,
    /// Chunk copies made by the repair worker since start.
    pub repaired: std::sync::atomic::AtomicU64,
    /// Whole passes of the lifecycle worker since start.
    pub lifecycle_passes: std::sync::atomic::AtomicU64,
    pub applied: Arc<RwLock<Applied>>,
    /// Writes applied as of the newest snapshot (see [`Applied::writes`]).
    pub snapshot_writes: Arc<std::sync::atomic::AtomicU64>,
    /// The group's feature level as applied here (`State::feature_level`, without its lock).
    pub feature_level: Arc<std::sync::atomic::AtomicU32>,
    pub registry: Mutex<Registry>,
    pub config: MasterConfig,
}

impl Master {
    /// The master group as this master last saw it committed.
    pub(crate) fn membership(&self) -> openraft::Membership<u64, BasicNode> {
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .clone()
    }

    /// The internal address of `leader`, or of the leader this master knows of.
    pub(crate) fn leader_addr(&self, leader: Option<u64>) -> Option<String> {
        let m = self.raft.metrics().borrow().clone();
        let id = leader.or(m.current_leader)?;
        m.membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.addr.clone())
    }

    /// Whether this master has led long enough (one dead-node timeout in its current term) for
    /// every live chunkserver to have registered and reported to it.
    pub fn settled(&self) -> bool {
        let metrics = self.raft.metrics().borrow().clone();
        let Ok(mut since) = self.leader_since.lock() else {
            return false;
        };
        if metrics.current_leader != Some(self.config.id) {
            *since = None;
            return false;
        }
        match *since {
            Some((term, at)) if term == metrics.current_term => {
                at.elapsed().as_secs_f64() >= self.config.dead_node_timeout_secs
            }
            _ => {
                *since = Some((metrics.current_term, std::time::Instant::now()));
                false
            }
        }
    }

    /// Copies the durable draining flags into the leader's registry.
    pub fn refresh_draining(&self) -> Result<(), MetaError> {
        let a = self.state()?;
        let draining = a
            .state
            .nodes
            .iter()
            .filter(|(_, n)| n.draining)
            .map(|(id, _)| *id)
            .collect();
        self.registry()?.set_draining(draining);
        Ok(())
    }

    /// Fails with NotLeader unless this master leads (soft state lives on the leader only) and a
    /// quorum has acknowledged it lately: a leader cut off from the majority stops serving at
    /// once rather than until its requests time out, and names no leader, so clients ask the
    /// other masters (which elect a new one after an election timeout).
    pub fn check_leader(&self) -> Result<(), MetaError> {
        let m = self.raft.metrics().borrow().clone();
        if m.current_leader != Some(self.config.id) {
            return Err(MetaError::NotLeader(self.leader_addr(m.current_leader)));
        }
        // A Raft core that stopped (a storage error is fatal to openraft) leaves its last
        // metrics behind, this master still named leader in them.
        if m.running_state.is_err() || m.state != openraft::ServerState::Leader {
            return Err(MetaError::NotLeader(None));
        }
        let voters = m.membership_config.membership().voter_ids().count();
        // No acknowledgement yet in this term: lost too once it has led for a whole lease (a
        // leader cut off just after its election is never acknowledged at all).
        let led_ms = self
            .leader_since
            .lock()
            .ok()
            .and_then(|s| *s)
            .filter(|(term, _)| *term == m.current_term)
            .map_or(0, |(_, at)| at.elapsed().as_millis() as u64);
        let since_ack = m
            .millis_since_quorum_ack
            .or(Some(led_ms).filter(|_| led_ms > 0));
        if quorum_lost(voters, since_ack, self.quorum_lease_ms()) {
            return Err(MetaError::NotLeader(None));
        }
        Ok(())
    }

    /// How long a leader keeps serving without a quorum's acknowledgement: about when followers
    /// that all lost it stand for election (an openraft 0.9 follower waits the leader's lease,
    /// the longest election timeout, plus at least the shortest one). Not a safety bound — a
    /// node that was already a candidate may win sooner, after the voters' lease (the longest
    /// timeout) — but nothing that needs one relies on it: reads and deletions confirm the
    /// leadership with a quorum, writes go through the log. It bounds how long a cut-off
    /// leader keeps clients, without stepping down on a loaded machine's slow acknowledgement.
    fn quorum_lease_ms(&self) -> u64 {
        let (min, max) = (
            self.config.election_timeout_min_ms,
            self.config.election_timeout_max_ms,
        );
        max.max(min).saturating_add(min)
    }

    /// The deadline of a proposal or a linearizable read.
    fn propose_timeout(&self) -> Duration {
        Duration::from_millis(self.config.propose_timeout_ms.max(1))
    }

    pub(crate) fn forward(&self, f: ForwardToLeader<u64, BasicNode>) -> MetaError {
        MetaError::NotLeader(
            f.leader_node
                .map(|n| n.addr)
                .or_else(|| self.leader_addr(f.leader_id)),
        )
    }

    /// Proposes a command and waits until it is committed and applied.
    pub async fn propose(
        &self,
        request_id: Option<u128>,
        op: Op,
    ) -> Result<MetaReplyKind, MetaError> {
        let cmd = Command {
            version: COMMAND_VERSION,
            request_id,
            time_ms: now_ms(),
            op,
        };
        self.check_leader()?;
        let write = tokio::time::timeout(self.propose_timeout(), self.raft.client_write(cmd));
        let Ok(written) = write.await else {
            // Committed or not, nobody can tell yet: the client retries with its request id,
            // at another master (this one may have lost its quorum without knowing it yet).
            tracing::debug!("a proposal was not committed in time");
            return Err(MetaError::NotLeader(None));
        };
        match written {
            Ok(resp) => {
                let Reply(r) = resp.data;
                r
            }
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => Err(self.forward(f)),
            Err(e) => Err(MetaError::Unavailable(e.to_string())),
        }
    }

    /// Waits until this master is known to lead and has applied everything committed before.
    pub(crate) async fn linearize(&self) -> Result<(), MetaError> {
        self.check_leader()?;
        let read = tokio::time::timeout(self.propose_timeout(), self.raft.ensure_linearizable());
        // Unconfirmed in time, or a quorum refused: this master may be deposed without knowing
        // it, so the client asks the others (naming no leader) rather than failing the call.
        let Ok(confirmed) = read.await else {
            tracing::debug!("the leadership was not confirmed in time");
            return Err(MetaError::NotLeader(None));
        };
        match confirmed {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                Err(self.forward(f))
            }
            Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(e))) => {
                tracing::debug!(error = %e, "the leadership was not confirmed by a quorum");
                Err(MetaError::NotLeader(None))
            }
            Err(e) => Err(MetaError::Unavailable(e.to_string())),
        }
    }

    pub(crate) fn state(&self) -> Result<std::sync::RwLockReadGuard<'_, Applied>, MetaError> {
        self.applied
            .read()
            .map_err(|_| MetaError::Unavailable("state lock poisoned".into()))
    }

    /// The leader's soft state, emptied when the Raft term changed since it was filled: what
    /// an earlier term learnt (replicas, pending deletions) may have changed under another
    /// leader, so chunkservers register and report again.
    pub(crate) fn registry(&self) -> Result<std::sync::MutexGuard<'_, Registry>, MetaError> {
        let mut reg = self
            .registry
            .lock()
            .map_err(|_| MetaError::Unavailable("registry lock poisoned".into()))?;
        let term = self.raft.metrics().borrow().current_term;
        if reg.term != term {
            reg.reset(term);
        }
        Ok(reg)
    }
}

impl Master {
    /// This master's health answer.
    pub fn health(&self) -> MasterHealth {
        MasterHealth {
            role: "master".into(),
            id: self.config.id,
            pid: std::process::id(),
            raft: self.raft_status(),
            leader_addr: self.leader_addr(None),
            features: self.features(),
            feature_level: self.feature_level(),
        }
    }

    /// This master's Raft view.
    pub fn raft_status(&self) -> RaftStatus {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: Vec<u64> = membership.voter_ids().collect();
        let learners: Vec<u64> = membership.learner_ids().collect();
        RaftStatus {
            role: format!("{:?}", m.state).to_lowercase(),
            term: m.current_term,
            leader: m.current_leader,
            last_log_index: m.last_log_index.unwrap_or(0),
            applied_index: m.last_applied.map_or(0, |l| l.index),
            voters,
            learners,
        }
    }

    /// The cluster as the leader sees it (`admin status`, the status page): every master as
    /// each reports itself, then [`Master::summary`]. Leader only: chunkservers and counts are
    /// its soft state.
    pub async fn cluster_status(&self) -> Result<ClusterStatus, MetaError> {
        self.check_leader()?;
        // Every master of the group, as each reports itself (unreachable ones as such), asked
        // all at once: one cut off costs one health deadline, not one each.
        let membership = self.membership();
        let asked: Vec<_> = membership
            .nodes()
            .map(|(id, node)| {
                let (id, addr) = (*id, node.addr.clone());
                let mine = id == self.config.id;
                let ask = (!mine).then(|| tokio::spawn(async move { peer_health(&addr).await }));
                (id, node.addr.clone(), ask)
            })
            .collect();
        let mut masters = Vec::new();
        for (id, addr, ask) in asked {
            let health = match ask {
                None => Some(self.health()),
                Some(task) => task.await.ok().flatten(),
            };
            masters.push(NodeStatus {
                id,
                role: "master".into(),
                addr,
                state: health
                    .as_ref()
                    .map_or_else(|| "unreachable".to_string(), |h| h.raft.role.clone()),
                pid: health.as_ref().map(|h| h.pid),
                capacity: 0,
                free: 0,
                chunks: 0,
                raft: health.map(|h| h.raft),
                ..Default::default()
            });
        }
        let mut s = self.summary()?;
        masters.append(&mut s.nodes);
        s.nodes = masters;
        Ok(s)
    }

    /// The leader's chunkservers, gateways and counts, without asking the other masters (for
    /// [`Master::cluster_status`] and metrics scrapes). Leader only.
    pub fn summary(&self) -> Result<ClusterStatus, MetaError> {
        self.check_leader()?;
        let a = self.state()?;
        let reg = self.registry()?;
        let target = self.config.replicas.max(1);
        let settled = self.settled();
        let (mut under, mut lost) = (0u64, 0u64);
        for c in a.state.chunks.keys() {
            let copies = reg.good_copies(c);
            under += u64::from(copies < target);
            lost += u64::from(reg.live_copies(c) == 0 && settled);
        }
        Ok(ClusterStatus {
            cluster_id: a.state.cluster_id.clone(),
            nodes: reg.status(),
            buckets: a.state.buckets.len() as u64,
            objects: a.state.object_count(),
            chunks: a.state.chunks.len() as u64,
            under_replicated: under,
            lost,
            settled,
            repaired: self.repaired.load(std::sync::atomic::Ordering::Relaxed),
            deletes_ordered: reg.deletes_ordered,
            lost_reported: reg.lost_reported,
            reports_judged: reg.reports_judged,
            lifecycle_passes: self
                .lifecycle_passes
                .load(std::sync::atomic::Ordering::Relaxed),
            rebalancing: reg.rebalancing,
        })
    }
}

/// Whether a leader of a group of `voters` last acknowledged by a quorum `millis_since_ack` ago
/// (None: not yet in this term) has lost its quorum: the others may be electing another leader.
/// A group of one is its own quorum.
fn quorum_lost(voters: usize, millis_since_ack: Option<u64>, lease_ms: u64) -> bool {
    voters > 1 && millis_since_ack.is_some_and(|ms| ms > lease_ms)
}

/// How long `admin status` waits for another master's health: a master that answers at all
/// answers this cheap call in milliseconds, and status must come back within about two seconds
/// while a master is cut off.
const PEER_HEALTH_TIMEOUT: Duration = Duration::from_secs(1);

/// Asks another master for its health (for the status report).
pub(crate) async fn peer_health(addr: &str) -> Option<MasterHealth> {
    let http = tinydfs_proto::client::http_client();
    let resp = http
        .get(tinydfs_proto::client::url(addr, paths::HEALTH))
        .timeout(PEER_HEALTH_TIMEOUT)
        .send()
        .await
        .ok()?;
    serde_json::from_slice(&resp.bytes().await.ok()?).ok()
}

/// Names the cluster once the first leader is elected (applied once: later leaders see the name).
pub async fn name_cluster(m: Arc<Master>, mut restore: Option<crate::state::Backup>) {
    loop {
        let named = m
            .state()
            .map(|s| !s.state.cluster_id.is_empty())
            .unwrap_or(false);
        if named {
            return;
        }
        if m.check_leader().is_ok() {
            // A restored group takes the backup's state, cluster id included, so that the
            // cluster's chunkservers recognise it.
            let op = match &restore {
                Some(b) => Op::Restore {
                    state: Box::new(b.state.clone()),
                },
                None => Op::Init {
                    cluster_id: format!("{:032x}", rand::random::<u128>()),
                },
            };
            match m.propose(None, op).await {
                Ok(_) => {
                    if let Some(b) = restore.take() {
                        tracing::info!(
                            cluster_id = %b.state.cluster_id,
                            objects = b.state.object_count(),
                            "metadata restored from a backup"
                        );
                    }
                    continue;
                }
                Err(e) => tracing::warn!(error = %e, "could not name the cluster yet"),
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::quorum_lost;

    #[test]
    fn a_leader_without_a_quorum_for_an_election_timeout_stops_serving() {
        // Acknowledged lately, or not yet in this term (a new leader): serves.
        assert!(!quorum_lost(3, Some(200), 1500));
        assert!(!quorum_lost(3, None, 1500));
        assert!(!quorum_lost(3, Some(1500), 1500));
        // Cut off for longer than an election timeout: refuses.
        assert!(quorum_lost(3, Some(1501), 1500));
        assert!(quorum_lost(5, Some(60_000), 1500));
        // A group of one never waits for anybody.
        assert!(!quorum_lost(1, Some(60_000), 1500));
    }
}
