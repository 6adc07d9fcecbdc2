//! The master's read-only operations listener (`--ops-listen`): `GET /health`,
//! `GET /metrics` and the status page at `GET /`. No credentials, so it serves nothing but
//! counts, states and addresses: no object, key, secret or `/internal` route.
//!
//! Metrics are computed at scrape time: every master reports its Raft view; the leader also
//! reports the cluster counts, from [`Master::summary`] (the code `admin status` uses).

use crate::node::Master;
use crate::status_page;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::registry::Registry;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tinydfs_proto::client::MasterClient;
use tinydfs_proto::ops::{self, counter, gauge, gauge_family, paths};

/// How long the status page of a master that does not lead waits for the leader's status.
const LEADER_STATUS_TIMEOUT: Duration = Duration::from_secs(3);

/// Raft roles, each reported as a 0/1 gauge.
const RAFT_ROLES: [&str; 4] = ["leader", "follower", "candidate", "learner"];
/// Chunkserver states the leader reports a count of.
const CHUNKSERVER_STATES: [&str; 4] = ["alive", "dead", "draining", "drained"];

/// The master's metrics, computed at each scrape.
struct MasterMetrics(Arc<Master>);

impl fmt::Debug for MasterMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterMetrics")
    }
}

impl Collector for MasterMetrics {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let r = self.0.raft_status();
        gauge_family(
            &mut enc,
            "tinydfs_master_raft_role",
            "1 for this master's Raft role, 0 for the others",
            "role",
            RAFT_ROLES.map(|role| (role, u64::from(r.role == role))),
        )?;
        gauge(
            &mut enc,
            "tinydfs_master_raft_term",
            "Current Raft term",
            r.term,
        )?;
        gauge(
            &mut enc,
            "tinydfs_master_raft_last_log_index",
            "Index of the last entry in this master's Raft log",
            r.last_log_index,
        )?;
        gauge(
            &mut enc,
            "tinydfs_master_raft_applied_index",
            "Index of the last committed entry applied to this master's state",
            r.applied_index,
        )?;
        // Every master keeps a registry from the chunkservers' beats (followers too, so that
        // a new leader can place at once): how many it holds alive.
        let (live, located) = self
            .0
            .registry()
            .map(|r| (r.live_count() as u64, r.located_count() as u64))
            .unwrap_or_default();
        gauge(
            &mut enc,
            "tinydfs_master_registry_live_chunkservers",
            "Chunkservers this master has heard from within the dead-node timeout",
            live,
        )?;
        gauge(
            &mut enc,
            "tinydfs_master_registry_located_chunks",
            "Chunks of which this master knows at least one replica",
            located,
        )?;
        // The cluster counts are the leader's soft state: followers report Raft only.
        let Ok(s) = self.0.summary() else {
            return Ok(());
        };
        let count = |state: &str| {
            s.nodes
                .iter()
                .filter(|n| n.role == "chunkserver" && n.state == state)
                .count() as u64
        };
        gauge_family(
            &mut enc,
            "tinydfs_master_chunkservers",
            "Chunkservers known to the leader, by state",
            "state",
            CHUNKSERVER_STATES.map(|state| (state, count(state))),
        )?;
        gauge(
            &mut enc,
            "tinydfs_master_safe_mode",
            "1 while the leader waits for chunkservers to report (no deletions, no lost counts)",
            u64::from(!s.settled),
        )?;
        gauge(&mut enc, "tinydfs_master_buckets", "Buckets", s.buckets)?;
        gauge(&mut enc, "tinydfs_master_objects", "Objects", s.objects)?;
        gauge(
            &mut enc,
            "tinydfs_master_chunks",
            "Chunks in the chunk table",
            s.chunks,
        )?;
        gauge(
            &mut enc,
            "tinydfs_master_under_replicated_chunks",
            "Chunks with fewer good copies than wanted",
            s.under_replicated,
        )?;
        gauge(
            &mut enc,
            "tinydfs_master_lost_chunks",
            "Chunks with no live copy",
            s.lost,
        )?;
        counter(
            &mut enc,
            "tinydfs_master_repaired_copies",
            "Chunk copies made by the repair worker since this master started",
            s.repaired,
        )?;
        counter(
            &mut enc,
            "tinydfs_master_deletes_ordered",
            "Replica deletions ordered since this master started (garbage, stale, surplus)",
            s.deletes_ordered,
        )?;
        counter(
            &mut enc,
            "tinydfs_master_replicas_reported_lost",
            "Replicas chunkservers reported lost (corrupt, failed disk) since this master started",
            s.lost_reported,
        )?;
        counter(
            &mut enc,
            "tinydfs_master_reports_judged",
            "Full chunk reports judged for garbage since this master started",
            s.reports_judged,
        )?;
        counter(
            &mut enc,
            "tinydfs_master_lifecycle_passes",
            "Whole passes of the lifecycle rules since this master started",
            s.lifecycle_passes,
        )
    }
}

struct Ops {
    master: Arc<Master>,
    registry: Registry,
}

/// The operations router.
pub fn router(master: Arc<Master>) -> Router {
    let mut registry = ops::registry();
    ops::register_collector(&mut registry, MasterMetrics(master.clone()));
    Router::new()
        .route(paths::HEALTH, get(health))
        .route(paths::METRICS, get(metrics))
        .route(paths::STATUS_PAGE, get(page))
        .with_state(Arc::new(Ops { master, registry }))
}

async fn health(State(o): State<Arc<Ops>>) -> Response {
    let body = serde_json::json!({
        "role": "master",
        "id": o.master.config.id,
        "raft_role": o.master.raft_status().role,
    });
    ([("content-type", "application/json")], body.to_string()).into_response()
}

async fn metrics(State(o): State<Arc<Ops>>) -> Response {
    // The leader's counts walk the chunk table: off the runtime threads.
    match tokio::task::spawn_blocking(move || ops::encode(&o.registry)).await {
        Ok(text) => ([("content-type", ops::METRICS_CONTENT_TYPE)], text).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// The status page: this master's own status when it leads, else the leader's, fetched through
/// the internal API as `admin status` does.
async fn page(State(o): State<Arc<Ops>>) -> Response {
    let m = &o.master;
    let raft = m.raft_status();
    let leader_addr = m.leader_addr(None);
    let status = if m.check_leader().is_ok() {
        m.cluster_status().await.map_err(|e| e.to_string())
    } else {
        match &leader_addr {
            None => Err("no leader is elected".to_string()),
            Some(addr) => {
                let client = MasterClient::new(vec![addr.clone()], m.config.secret.clone());
                match tokio::time::timeout(LEADER_STATUS_TIMEOUT, client.status()).await {
                    Ok(r) => r.map_err(|e| e.to_string()),
                    Err(_) => Err(format!(
                        "the leader did not answer within {} s",
                        LEADER_STATUS_TIMEOUT.as_secs()
                    )),
                }
            }
        }
    };
    Html(status_page::render(&status_page::Page {
        id: m.config.id,
        raft: &raft,
        leader_addr: leader_addr
            .as_deref()
            .filter(|_| raft.leader != Some(m.config.id)),
        status: status.as_ref().map_err(String::as_str),
        min_replicas: m.config.min_replicas,
    }))
    .into_response()
}
