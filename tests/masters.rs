//! A group of three masters: leader failover under concurrent writers, a minority that falls
//! behind and catches up, a replaced master catching up from a snapshot, and a retried write
//! applied once across a leader change.

mod common;

use aws_sdk_s3::primitives::ByteStream;
use common::*;
use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn three(extra: &[&str]) -> Opts {
    let mut e = vec!["--masters".to_string(), "3".to_string()];
    e.extend(extra.iter().map(|s| s.to_string()));
    Opts {
        extra: e,
        ..Opts::default()
    }
}

fn masters(s: &serde_json::Value) -> Vec<serde_json::Value> {
    s["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["role"] == "master")
        .cloned()
        .collect()
}

fn leader_id(cluster: &Cluster) -> u64 {
    let mut found = 0;
    cluster.wait_for("a leader", |s| {
        masters(s).iter().any(|m| m["state"] == "leader")
    });
    for m in masters(&cluster.status()) {
        if m["state"] == "leader" {
            found = m["id"].as_u64().unwrap();
        }
    }
    found
}

fn secret(cluster: &Cluster) -> String {
    std::fs::read_to_string(cluster.dir.join("cluster.secret"))
        .unwrap()
        .trim()
        .to_string()
}

fn master_addrs(cluster: &Cluster) -> Vec<String> {
    serde_json::from_str(&std::fs::read_to_string(cluster.dir.join("masters.json")).unwrap())
        .unwrap()
}

/// Starts a master by hand (not a child of `server`), for bringing one back or adding one.
fn start_master(cluster: &Cluster, args: &[String], log: &str) -> KillOnDrop {
    let log = std::fs::File::create(cluster.dir.join("logs").join(log)).unwrap();
    KillOnDrop(
        Command::new(bin())
            .arg("master")
            .args(args)
            .env("TINYDFS_CLUSTER_SECRET", secret(cluster))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

fn original_master_args(cluster: &Cluster, id: usize) -> Vec<String> {
    let addrs = master_addrs(cluster);
    let initial: Vec<String> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{}={a}", i + 1))
        .collect();
    vec![
        "--id".into(),
        id.to_string(),
        "--listen".into(),
        addrs[id - 1].clone(),
        "--data-dir".into(),
        cluster
            .dir
            .join(format!("master-{id}"))
            .display()
            .to_string(),
        "--initial-members".into(),
        initial.join(","),
    ]
}

fn admin(cluster: &Cluster, args: &[&str]) -> std::process::Output {
    Command::new(bin())
        .arg("admin")
        .args(args)
        .arg("--data-dir")
        .arg(&cluster.dir)
        .output()
        .unwrap()
}

#[test]
fn the_leader_fails_over_under_concurrent_writers_without_losing_acknowledged_writes() {
    let cluster = Cluster::start(three(&[]));
    let c = cluster.client();
    let rt = rt();
    rt.block_on(async { c.create_bucket().bucket("fail-over").send().await.unwrap() });
    let first = leader_id(&cluster);
    let acked: Arc<Mutex<BTreeMap<String, Vec<u8>>>> = Arc::default();
    let failed: Arc<Mutex<BTreeMap<String, Vec<u8>>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (c, acked, failed, stop) = (c.clone(), acked.clone(), failed.clone(), stop.clone());
            rt.spawn(async move {
                let mut i = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let key = format!("w{w}/{i:05}");
                    let body = data(1000 + (i as usize % 3) * 200_000, w * 100_000 + i);
                    let r = c
                        .put_object()
                        .bucket("fail-over")
                        .key(&key)
                        .body(ByteStream::from(body.clone()))
                        .send()
                        .await;
                    match r {
                        Ok(_) => acked.lock().unwrap().insert(key, body),
                        Err(_) => failed.lock().unwrap().insert(key, body),
                    };
                    i += 1;
                }
            })
        })
        .collect();
    // Writes flowing before the kill.
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < 20 {
        assert!(
            Instant::now() < deadline,
            "no writes succeeded before the kill"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let before = acked.lock().unwrap().len();
    let killed_at = Instant::now();
    cluster.kill(&format!("master-{first}"));
    // A new leader among the other two, serving writes.
    cluster.wait_for("a new leader", |s| {
        masters(s)
            .iter()
            .any(|m| m["state"] == "leader" && m["id"].as_u64() != Some(first))
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < before + 20 {
        assert!(
            Instant::now() < deadline,
            "writes did not resume after the leader died"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "writes resumed {:?} after the leader was killed",
        killed_at.elapsed()
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    rt.block_on(async {
        for w in writers {
            w.await.unwrap();
        }
        let acked = acked.lock().unwrap().clone();
        for (k, v) in &acked {
            let got = c
                .get_object()
                .bucket("fail-over")
                .key(k)
                .send()
                .await
                .unwrap_or_else(|e| panic!("acknowledged {k} lost: {e:?}"));
            assert!(
                got.body.collect().await.unwrap().into_bytes().as_ref() == v.as_slice(),
                "{k} differs"
            );
        }
        // A write that failed is entirely there or entirely absent.
        let failed = failed.lock().unwrap().clone();
        for (k, v) in &failed {
            match c.get_object().bucket("fail-over").key(k).send().await {
                Ok(o) => {
                    assert!(o.body.collect().await.unwrap().into_bytes().as_ref() == v.as_slice())
                }
                Err(e) => assert_eq!(e.raw_response().map(|r| r.status().as_u16()), Some(404)),
            }
        }
        let mut listed = 0;
        let mut pages = c
            .list_objects_v2()
            .bucket("fail-over")
            .into_paginator()
            .send();
        while let Some(p) = pages.next().await {
            listed += p.unwrap().contents().len();
        }
        assert!(listed >= acked.len());
    });
}

#[test]
fn a_minority_catches_up_and_a_full_restart_keeps_the_namespace() {
    let mut cluster = Cluster::start(three(&[]));
    let c = cluster.client();
    let rt = rt();
    rt.block_on(async {
        c.create_bucket().bucket("minor").send().await.unwrap();
        c.put_object()
            .bucket("minor")
            .key("before")
            .body(ByteStream::from_static(b"1"))
            .send()
            .await
            .unwrap();
    });
    let leader = leader_id(&cluster);
    let follower = (1..=3).find(|i| *i != leader as usize).unwrap();
    cluster.kill(&format!("master-{follower}"));
    rt.block_on(async {
        for i in 0..20 {
            c.put_object()
                .bucket("minor")
                .key(format!("during/{i}"))
                .body(ByteStream::from(vec![i as u8; 10]))
                .send()
                .await
                .unwrap();
        }
    });
    // Bring it back by hand with its data folder: it catches up with the leader's log.
    let back = start_master(
        &cluster,
        &original_master_args(&cluster, follower),
        "master-back.log",
    );
    cluster.wait_for("the returning master to catch up", |s| {
        let ms = masters(s);
        let lead = ms
            .iter()
            .find(|m| m["state"] == "leader")
            .map(|m| m["raft"]["applied_index"].clone());
        let it = ms
            .iter()
            .find(|m| m["id"].as_u64() == Some(follower as u64))
            .map(|m| m["raft"]["applied_index"].clone());
        lead.is_some() && lead == it
    });
    drop(back);
    // Every master down at once (SIGKILL), then the whole cluster restarted.
    for i in 1..=3 {
        if i != follower {
            cluster.kill(&format!("master-{i}"));
        }
    }
    cluster.stop();
    let restarted = Cluster::start_in(cluster.dir.clone(), three(&[]));
    let c = restarted.client();
    rt.block_on(async {
        let list = c.list_objects_v2().bucket("minor").send().await.unwrap();
        assert_eq!(list.key_count(), Some(21));
        let got = c
            .get_object()
            .bucket("minor")
            .key("during/7")
            .send()
            .await
            .unwrap();
        assert_eq!(
            got.body.collect().await.unwrap().into_bytes().as_ref(),
            &[7u8; 10]
        );
    });
}

#[test]
fn a_master_that_lost_its_data_is_replaced_under_a_new_id() {
    let cluster = Cluster::start(three(&["--snapshot-every", "10"]));
    let c = cluster.client();
    let rt = rt();
    rt.block_on(async {
        c.create_bucket().bucket("repl").send().await.unwrap();
        for i in 0..30 {
            c.put_object()
                .bucket("repl")
                .key(format!("k{i:02}"))
                .body(ByteStream::from(format!("v{i}").into_bytes()))
                .send()
                .await
                .unwrap();
        }
    });
    let leader = leader_id(&cluster) as usize;
    // The leader's log must have been cut behind a snapshot for the point of this test.
    let leader_snapshot = cluster
        .dir
        .join(format!("master-{leader}/state/snapshot.json"));
    wait_until("the leader to take a snapshot", || leader_snapshot.exists());
    let lost = (1..=3).find(|i| *i != leader).unwrap();
    cluster.kill(&format!("master-{lost}"));
    std::fs::remove_dir_all(cluster.dir.join(format!("master-{lost}"))).unwrap();
    let out = admin(&cluster, &["master", "remove", "--id", &lost.to_string()]);
    assert!(
        out.status.success(),
        "remove: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The replacement starts empty and joins under a new id; it catches up from a snapshot
    // (the log before it was purged).
    let addr = format!("127.0.0.1:{}", free_port());
    let fresh_dir = cluster.dir.join("master-4");
    let fresh = start_master(
        &cluster,
        &[
            "--id".into(),
            "4".into(),
            "--listen".into(),
            addr.clone(),
            "--data-dir".into(),
            fresh_dir.display().to_string(),
            "--join".into(),
        ],
        "master-4.log",
    );
    let out = admin(&cluster, &["master", "add", "--id", "4", "--addr", &addr]);
    assert!(
        out.status.success(),
        "add: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    cluster.wait_for("master 4 to catch up", |s| {
        let ms = masters(s);
        let lead = ms
            .iter()
            .find(|m| m["state"] == "leader")
            .map(|m| m["raft"]["applied_index"].clone());
        let it = ms
            .iter()
            .find(|m| m["id"] == 4)
            .map(|m| m["raft"]["applied_index"].clone());
        lead.is_some() && lead == it && ms.iter().all(|m| m["id"].as_u64() != Some(lost as u64))
    });
    assert!(
        fresh_dir.join("state/snapshot.json").exists(),
        "master 4 did not receive a snapshot"
    );
    // The removed id is retired.
    let out = admin(
        &cluster,
        &["master", "add", "--id", &lost.to_string(), "--addr", &addr],
    );
    assert!(!out.status.success(), "a retired id was accepted again");
    // Master 4 is a real voter: with the old leader gone, {4, other} still form a majority.
    cluster.kill(&format!("master-{leader}"));
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match c.get_object().bucket("repl").key("k29").send().await {
                Ok(o) => {
                    assert_eq!(
                        o.body.collect().await.unwrap().into_bytes().as_ref(),
                        b"v29"
                    );
                    break;
                }
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "no leader among {{4, other}}: {e:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            }
        }
    });
    drop(fresh);
}

#[test]
fn a_write_retried_after_a_failover_is_applied_once() {
    let cluster = Cluster::start(three(&[]));
    let c = cluster.client();
    let rt = rt();
    rt.block_on(async { c.create_bucket().bucket("once").send().await.unwrap() });
    let http = reqwest::Client::new();
    let secret = secret(&cluster);
    let addrs = master_addrs(&cluster);
    // The same internal write (same request id) sent before and after the leader dies.
    let body = serde_json::json!({
        "request_id": 123_456_789u64,
        "write": {"CreateUpload": {"bucket": "once", "key": "k", "attrs": {"content_type": null, "user_meta": [], "headers": []}}},
        "locations": []
    });
    let send = |addrs: Vec<String>| {
        let (http, secret, body) = (http.clone(), secret.clone(), body.clone());
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                for a in &addrs {
                    let r = http
                        .post(format!("http://{a}/internal/v1/meta/write"))
                        .header("x-tinydfs-secret", &secret)
                        .header("content-type", "application/json")
                        .body(body.to_string())
                        .send()
                        .await;
                    if let Ok(r) = r {
                        let bytes = r.bytes().await.unwrap_or_default();
                        let v: serde_json::Value =
                            serde_json::from_slice(&bytes).unwrap_or_default();
                        if let Some(id) = v["Ok"]["UploadCreated"]["upload_id"].as_str() {
                            return id.to_string();
                        }
                    }
                }
                assert!(Instant::now() < deadline, "no master accepted the write");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let first = rt.block_on(send(addrs.clone()));
    let leader = leader_id(&cluster) as usize;
    cluster.kill(&format!("master-{leader}"));
    let others: Vec<String> = addrs
        .iter()
        .enumerate()
        .filter(|(i, _)| i + 1 != leader)
        .map(|(_, a)| a.clone())
        .collect();
    let again = rt.block_on(send(others));
    assert_eq!(first, again, "the retried write was applied a second time");
}

/// A leader cut off from every other master (both followers paused) stops answering as leader
/// within about an election timeout: a linearizable read on it answers NotLeader instead of
/// waiting for ever for a quorum that does not come. Once the followers are back, writes go on.
#[test]
fn a_leader_cut_off_from_its_quorum_stops_serving() {
    let cluster = Cluster::start(three(&[]));
    let c = cluster.client();
    let rt = rt();
    rt.block_on(async { c.create_bucket().bucket("quorum").send().await.unwrap() });
    let leader = leader_id(&cluster);
    let status = cluster.status();
    let all = masters(&status);
    let addr = all
        .iter()
        .find(|m| m["id"].as_u64() == Some(leader))
        .and_then(|m| m["addr"].as_str())
        .unwrap()
        .to_string();
    let followers: Vec<u32> = all
        .iter()
        .filter(|m| m["id"].as_u64() != Some(leader))
        .map(|m| m["pid"].as_u64().unwrap() as u32)
        .collect();
    assert_eq!(followers.len(), 2);
    let signal = |sig: &str| {
        for pid in &followers {
            let ok = Command::new("kill")
                .args([sig, &pid.to_string()])
                .status()
                .unwrap();
            assert!(ok.success());
        }
    };
    let secret = secret(&cluster);
    let read_on_leader = || {
        rt.block_on(async {
            reqwest::Client::new()
                .post(format!("http://{addr}/internal/v1/meta/read"))
                .header(tinydfs_proto::SECRET_HEADER, &secret)
                .header(
                    tinydfs_proto::VERSION_HEADER,
                    tinydfs_proto::WIRE_VERSION.to_string(),
                )
                .timeout(Duration::from_secs(10))
                .body("\"ListBuckets\"")
                .send()
                .await
                .map_err(|e| e.to_string())?
                .text()
                .await
                .map_err(|e| e.to_string())
        })
    };
    let healthy = read_on_leader().unwrap();
    assert!(healthy.contains("quorum"), "{healthy}");
    signal("-STOP");
    // Without check-quorum the read waits for ever (here: its 10 s timeout, every time).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match read_on_leader() {
            Ok(answer) if answer.contains("NotLeader") => break,
            other => eprintln!("isolated leader answered {other:?}"),
        }
        if Instant::now() > deadline {
            signal("-CONT");
            panic!("the isolated leader kept acting as leader for 60 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    signal("-CONT");
    // The group heals (the same leader or a new one) and writes go on.
    let deadline = Instant::now() + Duration::from_secs(60);
    rt.block_on(async {
        while put(&c, "quorum", "after", data(100, 1)).await.is_err() {
            assert!(Instant::now() < deadline, "writes did not resume");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
}

/// Chunkservers beat every master, not only the leader: a new leader knows them from its first
/// moment and places chunks at once, instead of answering "0 live chunkservers" until each
/// finds it. Heartbeats here are 10 s apart, so the new leader's first status comes long before
/// any chunkserver could have found it and registered again.
#[test]
fn a_new_leader_knows_every_chunkserver_before_they_beat_again() {
    let cluster = Cluster::start(three(&[
        "--heartbeat-ms",
        "10000",
        "--dead-node-timeout-secs",
        "60",
    ]));
    let c = cluster.client();
    let rt = rt();
    rt.block_on(async {
        c.create_bucket().bucket("beats").send().await.unwrap();
        put(&c, "beats", "before", data(1000, 1)).await.unwrap();
    });
    // Every master has heard every chunkserver and knows where the one chunk written is
    // (followers too: a beat, with the chunks stored since the last, goes to each master).
    let ops: Vec<String> = cluster
        .nodes()
        .iter()
        .filter(|n| n["role"] == "master")
        .map(|n| n["ops_addr"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ops.len(), 3);
    wait_until(
        "every master to know the chunkservers and the chunk",
        || {
            ops.iter().all(|addr| {
                let text = rt.block_on(async {
                    let r = reqwest::get(format!("http://{addr}/metrics")).await.ok()?;
                    r.text().await.ok()
                });
                let text = text.unwrap_or_default();
                let has = |line: &str| text.lines().any(|l| l == line);
                has("tinydfs_master_registry_live_chunkservers 3")
                    && has("tinydfs_master_registry_located_chunks 1")
            })
        },
    );
    let old = leader_id(&cluster);
    let pid = masters(&cluster.status())
        .iter()
        .find(|m| m["id"].as_u64() == Some(old))
        .and_then(|m| m["pid"].as_u64())
        .unwrap();
    let killed = Instant::now();
    let ok = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let mut status = cluster.status();
    while !masters(&status)
        .iter()
        .any(|m| m["state"] == "leader" && m["id"].as_u64() != Some(old))
    {
        assert!(killed.elapsed() < Duration::from_secs(60), "no new leader");
        std::thread::sleep(Duration::from_millis(100));
        status = cluster.status();
    }
    let alive: Vec<&serde_json::Value> = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["role"] == "chunkserver" && n["state"] == "alive")
        .collect();
    eprintln!(
        "new leader's first status {:.1} s after the kill",
        killed.elapsed().as_secs_f64()
    );
    assert_eq!(
        alive.len(),
        3,
        "the new leader's first status: {}",
        serde_json::to_string_pretty(&status["nodes"]).unwrap()
    );
    // And it places chunks: a write goes through, and what was written before reads back.
    rt.block_on(async {
        put(&c, "beats", "after", data(1000, 2)).await.unwrap();
        assert_eq!(get(&c, "beats", "after").await.unwrap(), data(1000, 2));
        assert_eq!(get(&c, "beats", "before").await.unwrap(), data(1000, 1));
    });
}

/// Each master's `(features, feature_level)` as its `/health` says (None: no answer).
fn feature_levels(rt: &tokio::runtime::Runtime, cluster: &Cluster) -> Vec<Option<(u64, u64)>> {
    let http = reqwest::Client::new();
    rt.block_on(async {
        let mut out = Vec::new();
        for addr in master_addrs(cluster) {
            let health = async {
                let resp = http
                    .get(format!("http://{addr}/health"))
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await
                    .ok()?;
                let h: serde_json::Value =
                    serde_json::from_slice(&resp.bytes().await.ok()?).ok()?;
                Some((h["features"].as_u64()?, h["feature_level"].as_u64()?))
            };
            out.push(health.await);
        }
        out
    })
}

/// This release's feature level (`master/src/features.rs`).
const LEVEL: u64 = 2;

#[test]
fn a_rolling_upgrade_raises_the_feature_level_once_every_master_has_it() {
    // Every master plays the release before feature levels (the variable reaches `server`'s
    // masters only: it is gone before the upgraded ones are started).
    std::env::set_var("TINYDFS_MAX_FEATURE_LEVEL", "0");
    let cluster = Cluster::start(three(&[]));
    std::env::remove_var("TINYDFS_MAX_FEATURE_LEVEL");
    let c = cluster.client();
    let rt = rt();
    let put = |key: String, body: Vec<u8>| {
        let c = c.clone();
        rt.block_on(async move {
            c.put_object()
                .bucket("upgrade")
                .key(key)
                .body(ByteStream::from(body))
                .send()
                .await
                .map(|o| o.e_tag().unwrap_or_default().to_string())
                .map_err(|e| format!("{e:?}"))
        })
    };
    // If-None-Match with an ETag: a write older releases would apply unconditionally.
    // The S3 error code, or "ok".
    let put_unless = |etag: &str| {
        let c = c.clone();
        let etag = etag.to_string();
        rt.block_on(async move {
            code(
                c.put_object()
                    .bucket("upgrade")
                    .key("guarded")
                    .if_none_match(etag)
                    .body(ByteStream::from_static(b"new"))
                    .send()
                    .await,
            )
        })
    };
    rt.block_on(async { c.create_bucket().bucket("upgrade").send().await.unwrap() });
    let mut written = BTreeMap::new();
    for i in 0..5 {
        let (k, v) = (format!("before/{i}"), format!("v{i}").into_bytes());
        put(k.clone(), v.clone()).unwrap();
        written.insert(k, v);
    }
    let guarded = put("guarded".into(), b"old".to_vec()).unwrap();
    // Refused while the group is at level 0, before the body is read.
    assert_eq!(put_unless("\"other\""), "NotImplemented");
    assert_eq!(put_unless(&guarded), "NotImplemented");
    let tag_bucket = || {
        let c = c.clone();
        rt.block_on(async move {
            let tag = aws_sdk_s3::types::Tag::builder()
                .key("k")
                .value("v")
                .build()
                .unwrap();
            code(
                c.put_bucket_tagging()
                    .bucket("upgrade")
                    .tagging(
                        aws_sdk_s3::types::Tagging::builder()
                            .tag_set(tag)
                            .build()
                            .unwrap(),
                    )
                    .send()
                    .await,
            )
        })
    };
    assert_eq!(tag_bucket(), "NotImplemented");
    assert!(feature_levels(&rt, &cluster)
        .iter()
        .all(|l| *l == Some((0, 0))));

    // Followers first, the leader last, each stopped and started again on its data folder
    // with this release's level.
    let leader = leader_id(&cluster) as usize;
    let mut order: Vec<usize> = (1..=3).filter(|i| *i != leader).collect();
    order.push(leader);
    // Masters started by hand, by id (the others are `server`'s children).
    let mut by_hand: BTreeMap<usize, KillOnDrop> = BTreeMap::new();
    let stop = |id: usize, by_hand: &mut BTreeMap<usize, KillOnDrop>| match by_hand.remove(&id) {
        Some(mut m) => {
            m.0.kill().unwrap();
            m.0.wait().unwrap();
        }
        None => cluster.kill(&format!("master-{id}")),
    };
    let write_some = |step: usize, written: &mut BTreeMap<String, Vec<u8>>| {
        // Writes go on, and nothing written before is lost.
        for i in 0..3 {
            let (k, v) = (format!("step{step}/{i}"), vec![step as u8; 100 + i]);
            let mut tries = 0;
            while let Err(e) = put(k.clone(), v.clone()) {
                tries += 1;
                assert!(tries < 30, "no write at step {step}: {e}");
                std::thread::sleep(Duration::from_millis(500));
            }
            written.insert(k, v);
        }
    };
    let held_back = |why: &str| {
        // Longer than the leader takes to look (2 s), several times over.
        std::thread::sleep(Duration::from_secs(6));
        let levels = feature_levels(&rt, &cluster);
        assert!(
            levels.iter().flatten().all(|(_, level)| *level == 0),
            "the level rose {why}: {levels:?}"
        );
        assert_eq!(put_unless("\"other\""), "NotImplemented");
        assert_eq!(tag_bucket(), "NotImplemented");
    };
    for (step, id) in order.iter().enumerate() {
        stop(*id, &mut by_hand);
        let m = start_master(
            &cluster,
            &original_master_args(&cluster, *id),
            &format!("master-{id}-upgraded.log"),
        );
        by_hand.insert(*id, m);
        wait_until(
            "the upgraded master to answer at this release's level",
            || feature_levels(&rt, &cluster)[id - 1].is_some_and(|(f, _)| f == LEVEL),
        );
        write_some(step, &mut written);
        if step == 0 {
            held_back("with two masters at 0");
        }
        if step == 1 {
            // The old leader restarts, still of the older release, once an upgraded master
            // leads: that one must hold the level back for the one follower at 0.
            stop(leader, &mut by_hand);
            wait_until("an upgraded master to lead", || {
                let now = leader_id(&cluster) as usize;
                now != 0
                    && now != leader
                    && feature_levels(&rt, &cluster)[now - 1].is_some_and(|(f, _)| f == LEVEL)
            });
            std::env::set_var("TINYDFS_MAX_FEATURE_LEVEL", "0");
            let m = start_master(
                &cluster,
                &original_master_args(&cluster, leader),
                &format!("master-{leader}-restarted.log"),
            );
            by_hand.insert(leader, m);
            std::env::remove_var("TINYDFS_MAX_FEATURE_LEVEL");
            wait_until("the old master back at level 0", || {
                feature_levels(&rt, &cluster)[leader - 1].is_some_and(|(f, _)| f == 0)
            });
            assert_ne!(
                leader_id(&cluster) as usize,
                leader,
                "the old master leads again"
            );
            write_some(10, &mut written);
            held_back("with an upgraded leader and one follower at 0");
        }
    }
    wait_until("every master to reach this release's level", || {
        feature_levels(&rt, &cluster)
            .iter()
            .all(|l| *l == Some((LEVEL, LEVEL)))
    });
    // Now the condition is applied, on every master alike.
    let old = rt.block_on(async {
        let got = c
            .get_object()
            .bucket("upgrade")
            .key("guarded")
            .send()
            .await
            .unwrap();
        got.body.collect().await.unwrap().into_bytes()
    });
    assert_eq!(old.as_ref(), b"old", "a refused write changed the object");
    // The gateway trusts a level of 0 for a few seconds (`FEATURE_LEVEL_FRESH`).
    wait_until("the gateway to see the new level", || {
        put_unless(&guarded) != "NotImplemented"
    });
    assert_eq!(put_unless(&guarded), "PreconditionFailed");
    assert_eq!(put_unless("\"other\""), "ok");
    assert_eq!(tag_bucket(), "ok");
    rt.block_on(async {
        let got = c
            .get_object()
            .bucket("upgrade")
            .key("guarded")
            .send()
            .await
            .unwrap();
        assert_eq!(
            got.body.collect().await.unwrap().into_bytes().as_ref(),
            b"new"
        );
        for (k, v) in &written {
            let got = c
                .get_object()
                .bucket("upgrade")
                .key(k)
                .send()
                .await
                .unwrap();
            assert_eq!(
                &got.body.collect().await.unwrap().into_bytes()[..],
                &v[..],
                "{k}"
            );
        }
    });
    drop(by_hand);
}
