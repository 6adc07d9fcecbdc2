//! Mixed versions during a rolling upgrade: the messages of the release before chunkservers
//! heartbeat every master (the fields that release did not know) still decode both ways, and
//! what a newer node reads from an older one means what the older one meant.
//!
//! "Older" messages are today's with the newer fields taken out, as the older release sent them;
//! the older release's own types are kept here (as they were) to read today's messages.

use crate::cluster::*;
use crate::types::*;
use serde::Deserialize;
use serde_json::{json, Value};

/// Today's message without `fields`: what a node of the older release sends.
fn as_older(message: &impl serde::Serialize, fields: &[&str]) -> Value {
    let mut v = serde_json::to_value(message).unwrap();
    let map = v.as_object_mut().unwrap();
    for f in fields {
        assert!(
            map.remove(*f).is_some(),
            "{f} is not a field of today's message"
        );
    }
    v
}

fn heartbeat() -> Heartbeat {
    serde_json::from_value(json!({
        "node_id": 7, "addr": "10.0.0.7:7001", "capacity": 1000, "free": 400, "pid": 42,
        "chunks": null, "zone": "a", "lost": [], "disks": [], "scrubbed": 3, "scrub_corrupt": 0,
        "bytes_written": 99, "beats_every_master": true, "leader_term": 5,
        "added": [{"id": "0000000000000000000000000000000b", "len": 10, "crc32c": 1}],
    }))
    .unwrap()
}

#[test]
fn an_older_chunkservers_heartbeat_reads_as_one_that_beats_only_the_leader() {
    let older = as_older(
        &heartbeat(),
        &["beats_every_master", "leader_term", "added"],
    );
    let hb: Heartbeat = serde_json::from_value(older).unwrap();
    // A master asks such a node to register rather than adopting it from a beat, and never
    // takes its reports for a leader's own in a later term.
    assert!(!hb.beats_every_master);
    assert_eq!(hb.leader_term, 0);
    assert!(hb.added.is_empty());
    assert_eq!((hb.node_id, hb.free, hb.bytes_written), (7, 400, 99));
}

#[test]
fn an_older_masters_heartbeat_reply_reads_as_a_leaders() {
    let reply = HeartbeatReply {
        reregister: false,
        cluster_id: "c".into(),
        safe_mode: false,
        delete: vec![ChunkId(3)],
        term: 9,
        leader: true,
        report_wanted: true,
        leader_addr: Some("m2:7000".into()),
    };
    let older = as_older(&reply, &["term", "leader", "report_wanted", "leader_addr"]);
    let r: HeartbeatReply = serde_json::from_value(older).unwrap();
    // Term 0: the chunkserver takes it for the leader (older masters answer heartbeats only
    // while they lead) and never fences it by term.
    assert_eq!((r.term, r.leader, r.report_wanted), (0, false, false));
    assert!(r.leader_addr.is_none());
    assert_eq!(r.delete, reply.delete);
}

#[test]
fn an_older_registration_and_health_answer_still_decode() {
    let reg = RegisterRequest {
        node_id: Some(4),
        cluster_id: Some("c".into()),
        addr: "a:1".into(),
        capacity: 1,
        free: 1,
        pid: 1,
        zone: String::new(),
        request_id: Some(77),
    };
    let r: RegisterRequest = serde_json::from_value(as_older(&reg, &["request_id"])).unwrap();
    assert_eq!((r.node_id, r.request_id), (Some(4), None));

    let health = json!({
        "role": "master", "id": 2, "pid": 5,
        "raft": {"role": "leader", "term": 3, "leader": 2, "last_log_index": 10,
                 "applied_index": 10, "voters": [1, 2, 3], "learners": []},
    });
    let h: MasterHealth = serde_json::from_value(health).unwrap();
    assert_eq!((h.raft.term, h.leader_addr), (3, None));
    // A release before feature levels can apply level 0 only: the group's level stays there
    // until it is upgraded.
    assert_eq!((h.features, h.feature_level), (0, 0));
}

/// The older release's types, as they were: they read today's messages, ignoring what they do
/// not know.
mod older {
    use super::*;

    // Every field the older release had, so that one removed or renamed is caught.
    #[derive(Deserialize)]
    #[allow(dead_code)]
    pub struct Heartbeat {
        pub node_id: NodeId,
        pub addr: String,
        pub capacity: u64,
        pub free: u64,
        pub pid: u32,
        pub chunks: Option<Vec<ChunkMeta>>,
        #[serde(default)]
        pub zone: String,
        #[serde(default)]
        pub lost: Vec<ChunkId>,
        #[serde(default)]
        pub disks: Vec<DiskStatus>,
        #[serde(default)]
        pub scrubbed: u64,
        #[serde(default)]
        pub scrub_corrupt: u64,
        #[serde(default)]
        pub bytes_written: u64,
    }

    #[derive(Deserialize)]
    pub struct WriteCondition {
        pub if_match: Option<String>,
        pub if_none_match: bool,
    }

    #[derive(Deserialize)]
    pub struct HeartbeatReply {
        pub reregister: bool,
        #[serde(default)]
        pub cluster_id: String,
        #[serde(default)]
        pub safe_mode: bool,
        #[serde(default)]
        pub delete: Vec<ChunkId>,
    }

    #[derive(Deserialize)]
    pub struct MasterHealth {
        pub raft: RaftStatus,
    }
}

#[test]
fn an_older_node_reads_todays_messages() {
    let v = serde_json::to_value(heartbeat()).unwrap();
    let hb: older::Heartbeat = serde_json::from_value(v).unwrap();
    assert_eq!((hb.node_id, hb.free, hb.bytes_written), (7, 400, 99));
    assert!(hb.chunks.is_none());

    let reply = HeartbeatReply {
        reregister: true,
        cluster_id: "c".into(),
        safe_mode: true,
        delete: vec![ChunkId(8)],
        term: 4,
        leader: true,
        report_wanted: true,
        leader_addr: None,
    };
    let r: older::HeartbeatReply =
        serde_json::from_value(serde_json::to_value(&reply).unwrap()).unwrap();
    assert!(r.reregister && r.safe_mode);
    assert_eq!((r.cluster_id.as_str(), r.delete), ("c", reply.delete));

    let health = MasterHealth {
        role: "master".into(),
        id: 1,
        pid: 2,
        raft: RaftStatus {
            role: "follower".into(),
            term: 6,
            leader: Some(3),
            last_log_index: 1,
            applied_index: 1,
            voters: vec![1, 2, 3],
            learners: vec![],
        },
        leader_addr: Some("m3:7000".into()),
        features: 1,
        feature_level: 1,
    };
    let h: older::MasterHealth =
        serde_json::from_value(serde_json::to_value(&health).unwrap()).unwrap();
    assert_eq!((h.raft.term, h.raft.leader), (6, Some(3)));
}

#[test]
fn an_older_master_would_drop_an_etag_condition_so_it_is_gated() {
    // Why `If-None-Match` with ETags needs feature level 1 (and the gateway asks the group's
    // level before sending one): an older master reads it as no condition at all.
    let c = crate::meta::WriteCondition {
        if_none_match_etags: Some(vec!["abc".into()]),
        ..Default::default()
    };
    assert_eq!(c.feature_level(), 1);
    let old: older::WriteCondition =
        serde_json::from_value(serde_json::to_value(&c).unwrap()).unwrap();
    assert!(old.if_match.is_none() && !old.if_none_match);
    // Conditions older masters understand need nothing, and serialize as before.
    let star = crate::meta::WriteCondition {
        if_none_match: true,
        ..Default::default()
    };
    assert_eq!(star.feature_level(), 0);
    assert_eq!(
        serde_json::to_value(&star).unwrap(),
        json!({"if_match": null, "if_none_match": true})
    );
}
