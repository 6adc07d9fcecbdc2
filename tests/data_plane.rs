//! The self-healing data plane against a real cluster: garbage collection once upload leases
//! expire, surplus copies of a returning chunkserver, decommissioning, rebalancing onto a new
//! chunkserver, zones, and full chunkservers.

mod common;

use common::*;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// Chunk files per chunk id.
fn copies_by_chunk(cluster: &Cluster) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for (node, chunk) in cluster.chunk_files() {
        out.entry(chunk).or_default().push(node);
    }
    out
}

/// The file of `chunk` on chunkserver `node`.
fn chunk_path(cluster: &Cluster, node: &str, chunk: &str) -> std::path::PathBuf {
    chunk_path_in(&cluster.dir.join(node), chunk)
}

/// Whether the disks hold exactly `replicas` copies of each committed chunk and nothing else.
fn exactly_replicated(cluster: &Cluster, replicas: usize) -> bool {
    let committed = cluster.status()["chunks"].as_u64().unwrap() as usize;
    let by_chunk = copies_by_chunk(cluster);
    by_chunk.len() == committed && by_chunk.values().all(|n| n.len() == replicas)
}

fn fsck(cluster: &Cluster) -> (i32, String) {
    cluster.admin(&["fsck"])
}

/// Whether every chunk has its copies and fsck says so.
fn healthy(cluster: &Cluster) -> bool {
    fsck(cluster).0 == 0
}

/// A gateway on a fresh port for `cluster` (the server's own was killed).
fn spawn_gateway(cluster: &Cluster, extra: &[&str]) -> (KillOnDrop, aws_sdk_s3::Client) {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut args: Vec<String> = vec![
        "gateway".into(),
        "--listen".into(),
        addr.clone(),
        "--masters".into(),
        cluster.masters().join(","),
        "--chunk-size".into(),
        cluster.chunk_size().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let node = cluster.spawn("gateway-2", &args);
    wait_until("the new gateway to answer", || {
        std::net::TcpStream::connect(&addr).is_ok()
    });
    let client = sdk_client(&format!("http://{addr}"), ACCESS_KEY, SECRET_KEY, true);
    (node, client)
}

const SHORT_LEASES: [&str; 4] = [
    "--gateway-arg=--lease-ttl-secs",
    "--gateway-arg=4",
    "--gateway-arg=--lease-rotate-secs",
    "--gateway-arg=1",
];

#[test]
fn unreferenced_chunks_are_deleted_once_their_leases_expire() {
    let cluster = Cluster::start(Opts {
        extra: SHORT_LEASES.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    });
    let c = cluster.client();
    let chunk = cluster.chunk_size() as usize;
    let keep = data(3 * chunk + 5, 1);
    let newer = data(chunk / 2, 3);
    let part = data(chunk + 7, 4);
    let upload_id = rt().block_on(async {
        c.create_bucket().bucket("gcb").send().await.unwrap();
        put(&c, "gcb", "keep", keep.clone()).await.unwrap();
        put(&c, "gcb", "gone", data(3 * chunk, 2)).await.unwrap();
        put(&c, "gcb", "over", data(2 * chunk, 2)).await.unwrap();
        put(&c, "gcb", "over", newer.clone()).await.unwrap();
        c.delete_object()
            .bucket("gcb")
            .key("gone")
            .send()
            .await
            .unwrap();
        // An aborted multipart upload, and one left open (which must keep its parts).
        for (key, abort) in [("aborted", true), ("open", false)] {
            let u = c
                .create_multipart_upload()
                .bucket("gcb")
                .key(key)
                .send()
                .await
                .unwrap();
            let id = u.upload_id().unwrap().to_string();
            let p = c
                .upload_part()
                .bucket("gcb")
                .key(key)
                .upload_id(&id)
                .part_number(1)
                .body(part.clone().into())
                .send()
                .await
                .unwrap();
            if abort {
                c.abort_multipart_upload()
                    .bucket("gcb")
                    .key(key)
                    .upload_id(&id)
                    .send()
                    .await
                    .unwrap();
            } else {
                return (id, p.e_tag().unwrap().to_string());
            }
        }
        unreachable!()
    });

    // A gateway killed in the middle of an upload leaves finished chunks nobody references.
    let before = cluster.chunk_files().len();
    let total = 8 * chunk;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let runtime = rt();
    let endpoint = cluster.endpoint.clone();
    let host = cluster.s3_addr.clone();
    let upload = runtime.spawn(async move {
        let mut req = reqwest::Client::new()
            .put(format!("{endpoint}/gcb/cut-short"))
            .header("content-length", total.to_string());
        for (k, v) in signed_headers(&host, "PUT", "/gcb/cut-short", "UNSIGNED-PAYLOAD") {
            req = req.header(k, v);
        }
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        req.body(reqwest::Body::wrap_stream(stream)).send().await
    });
    runtime.block_on(async {
        tx.send(Ok(data(3 * chunk, 9))).await.unwrap();
    });
    wait_until("chunks of the cut-short upload on disk", || {
        cluster.chunk_files().len() >= before + 2 * 3
    });
    cluster.kill("gateway-1");
    drop(tx);
    let _ = runtime.block_on(upload);
    let garbage_seen = cluster.chunk_files().len();

    let gateway_flags: Vec<&str> = SHORT_LEASES
        .iter()
        .map(|s| s.trim_start_matches("--gateway-arg="))
        .collect();
    let (_gw, c) = spawn_gateway(&cluster, &gateway_flags);
    // Deleted, replaced, aborted and orphaned chunks all go; referenced ones stay at 3 copies.
    wait_until("only referenced chunks to remain", || {
        exactly_replicated(&cluster, 3)
    });
    let after = cluster.chunk_files().len();
    assert!(
        after < garbage_seen,
        "garbage existed ({garbage_seen} files) and went ({after} files)"
    );
    // Open upload: 2 chunks x 3; keep: 4 x 3; over: 1 x 3.
    assert_eq!(after, (2 + 4 + 1) * 3);
    let (id, etag) = upload_id;
    rt().block_on(async {
        assert_eq!(get(&c, "gcb", "keep").await.unwrap(), keep);
        assert_eq!(get(&c, "gcb", "over").await.unwrap(), newer);
        // The open upload's part survived collection and completes.
        let done = aws_sdk_s3::types::CompletedMultipartUpload::builder()
            .parts(
                aws_sdk_s3::types::CompletedPart::builder()
                    .part_number(1)
                    .e_tag(etag)
                    .build(),
            )
            .build();
        c.complete_multipart_upload()
            .bucket("gcb")
            .key("open")
            .upload_id(id)
            .multipart_upload(done)
            .send()
            .await
            .unwrap();
        assert_eq!(get(&c, "gcb", "open").await.unwrap(), part);
        assert!(get(&c, "gcb", "cut-short").await.is_err());
    });
    assert!(healthy(&cluster), "{}", fsck(&cluster).1);
}

#[test]
fn a_killed_chunkserver_is_repaired_around_and_its_surplus_copies_go_when_it_returns() {
    let cluster = Cluster::start(Opts {
        chunkservers: 4,
        ..Default::default()
    });
    let c = cluster.client();
    let chunk = cluster.chunk_size() as usize;
    let objects: Vec<Vec<u8>> = (0..6)
        .map(|i| data(2 * chunk + i * 100, i as u64))
        .collect();
    rt().block_on(async {
        c.create_bucket().bucket("heal").send().await.unwrap();
        for (i, o) in objects.iter().enumerate() {
            put(&c, "heal", &format!("o{i}"), o.clone()).await.unwrap();
        }
    });
    wait_until("3 copies of everything", || exactly_replicated(&cluster, 3));
    let victim = "chunkserver-1";
    let addr = cluster.addr(victim);
    let held = cluster
        .chunk_files()
        .iter()
        .filter(|(n, _)| n == victim)
        .count();
    assert!(held > 0, "the victim holds data");
    cluster.kill(victim);
    wait_until("re-replication after the kill", || {
        let s = cluster.status();
        s["under_replicated"] == 0
            && s["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n["addr"] == addr.as_str() && n["state"] == "dead")
    });
    assert!(healthy(&cluster), "{}", fsck(&cluster).1);
    rt().block_on(async {
        for (i, o) in objects.iter().enumerate() {
            assert_eq!(&get(&c, "heal", &format!("o{i}")).await.unwrap(), o);
        }
    });
    // While it is down, one of its copies is swapped for a different chunk's file: a stale
    // replica (its length and CRC differ from the committed chunk's).
    let path_of = |chunk: &str| chunk_path(&cluster, victim, chunk);
    let mine: Vec<String> = cluster
        .chunk_files()
        .into_iter()
        .filter(|(n, c)| n == victim && path_of(c).exists())
        .map(|(_, c)| c)
        .collect();
    let stale = path_of(&mine[0]);
    let other = std::fs::read(path_of(&mine[1])).unwrap();
    assert_ne!(std::fs::read(&stale).unwrap(), other);
    std::fs::write(&stale, &other).unwrap();
    // Back with its old copies: every chunk now has 4, and the surplus is removed.
    let _back = cluster.spawn_chunkserver(victim, &addr, &[]);
    wait_until("surplus copies to be removed", || {
        exactly_replicated(&cluster, 3)
    });
    assert!(cluster.status()["deletes_ordered"].as_u64().unwrap() > 0);
    assert!(!stale.exists(), "the stale replica was deleted");
    assert!(healthy(&cluster), "{}", fsck(&cluster).1);
    rt().block_on(async {
        for (i, o) in objects.iter().enumerate() {
            assert_eq!(&get(&c, "heal", &format!("o{i}")).await.unwrap(), o);
        }
    });
}

#[test]
fn a_decommissioned_chunkserver_is_drained_before_it_goes() {
    let cluster = Cluster::start(Opts {
        chunkservers: 4,
        ..Default::default()
    });
    let c = cluster.client();
    let chunk = cluster.chunk_size() as usize;
    let objects: Vec<Vec<u8>> = (0..5).map(|i| data(3 * chunk + i, 10 + i as u64)).collect();
    rt().block_on(async {
        c.create_bucket().bucket("drain").send().await.unwrap();
        for (i, o) in objects.iter().enumerate() {
            put(&c, "drain", &format!("o{i}"), o.clone()).await.unwrap();
        }
    });
    let victim = "chunkserver-2";
    let addr = cluster.addr(victim);
    wait_until("the victim to hold data", || {
        cluster.chunk_files().iter().any(|(n, _)| n == victim)
    });
    let (code, out) = cluster.admin(&["decommission", &addr, "--wait", "--timeout", "120"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("drained"), "{out}");
    // Nothing new is placed on it while it drains or after.
    rt().block_on(async {
        put(&c, "drain", "after", data(3 * chunk, 99))
            .await
            .unwrap();
    });
    wait_until("the drained node's files to be deleted", || {
        !cluster.chunk_files().iter().any(|(n, _)| n == victim)
    });
    cluster.kill(victim);
    rt().block_on(async {
        for (i, o) in objects.iter().enumerate() {
            assert_eq!(&get(&c, "drain", &format!("o{i}")).await.unwrap(), o);
        }
        assert_eq!(
            get(&c, "drain", "after").await.unwrap(),
            data(3 * chunk, 99)
        );
    });
    wait_until("fsck to be clean without the node", || healthy(&cluster));
    // An unknown node is a clear error.
    let (code, out) = cluster.admin(&["decommission", "127.0.0.1:1"]);
    assert_ne!(code, 0);
    assert!(out.contains("no chunkserver is known"), "{out}");
}

#[test]
fn rebalance_moves_chunks_onto_a_new_chunkserver() {
    const CAPACITY: &str = "33554432"; // 32 MiB each, so usage shows in fractions
    let cluster = Cluster::start(Opts {
        extra: vec![
            "--chunkserver-arg=--capacity".into(),
            format!("--chunkserver-arg={CAPACITY}"),
        ],
        ..Default::default()
    });
    let c = cluster.client();
    let chunk = cluster.chunk_size() as usize;
    let objects: Vec<Vec<u8>> = (0..4).map(|i| data(6 * chunk, 20 + i as u64)).collect();
    rt().block_on(async {
        c.create_bucket().bucket("bal").send().await.unwrap();
        for (i, o) in objects.iter().enumerate() {
            put(&c, "bal", &format!("o{i}"), o.clone()).await.unwrap();
        }
    });
    let addr = format!("127.0.0.1:{}", free_port());
    let _new = cluster.spawn_chunkserver("chunkserver-4", &addr, &["--capacity", CAPACITY]);
    let on_new = |cluster: &Cluster| {
        cluster
            .chunk_files()
            .iter()
            .filter(|(n, _)| n == "chunkserver-4")
            .count()
    };
    assert_eq!(on_new(&cluster), 0);
    let (code, out) = cluster.admin(&["rebalance", "--wait", "--timeout", "120"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("rebalance finished"), "{out}");
    wait_until("3 copies of everything after the moves", || {
        exactly_replicated(&cluster, 3)
    });
    // 24 chunks x 3 copies over 4 nodes: the new one took a fair share.
    let moved = on_new(&cluster);
    assert!(moved >= 10, "only {moved} copies moved to the new node");
    rt().block_on(async {
        for (i, o) in objects.iter().enumerate() {
            assert_eq!(&get(&c, "bal", &format!("o{i}")).await.unwrap(), o);
        }
    });
    assert!(healthy(&cluster), "{}", fsck(&cluster).1);
}

#[test]
fn replicas_spread_over_zones() {
    let cluster = Cluster::start(Opts {
        chunkservers: 6,
        extra: vec!["--zones".into(), "a,b,c".into()],
        ..Default::default()
    });
    let c = cluster.client();
    let chunk = cluster.chunk_size() as usize;
    rt().block_on(async {
        c.create_bucket().bucket("zones").send().await.unwrap();
        for i in 0..4 {
            put(&c, "zones", &format!("o{i}"), data(3 * chunk, i))
                .await
                .unwrap();
        }
    });
    let zone = |node: &str| {
        let n: usize = node.trim_start_matches("chunkserver-").parse().unwrap();
        ["a", "b", "c"][(n - 1) % 3]
    };
    wait_until("3 copies of everything", || exactly_replicated(&cluster, 3));
    let by_chunk = copies_by_chunk(&cluster);
    assert_eq!(by_chunk.len(), 12);
    for (chunk, nodes) in by_chunk {
        let zones: HashSet<&str> = nodes.iter().map(|n| zone(n)).collect();
        assert_eq!(zones.len(), 3, "chunk {chunk} on {nodes:?}");
    }
    let s = cluster.status();
    let labelled = s["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["role"] == "chunkserver" && n["zone"] != "")
        .count();
    assert_eq!(labelled, 6);
}

#[test]
fn full_chunkservers_refuse_writes_cleanly_and_take_them_again_once_space_is_freed() {
    const CAPACITY: &str = "4194304"; // 4 MiB each
    let mut extra: Vec<String> = SHORT_LEASES.iter().map(|s| s.to_string()).collect();
    extra.extend([
        "--chunkserver-arg=--capacity".into(),
        format!("--chunkserver-arg={CAPACITY}"),
    ]);
    let cluster = Cluster::start(Opts {
        extra,
        ..Default::default()
    });
    let c = cluster.client();
    let chunk = cluster.chunk_size() as usize;
    let object = |i: usize| data(2 * chunk, 30 + i as u64);
    let stored = rt().block_on(async {
        c.create_bucket().bucket("full").send().await.unwrap();
        let mut stored = 0;
        let mut refused = None;
        for i in 0..40 {
            match put(&c, "full", &format!("o{i}"), object(i)).await {
                Ok(()) => stored += 1,
                Err(e) => {
                    refused = Some(e);
                    break;
                }
            }
        }
        let e = refused.expect("a 4 MiB chunkserver took 20 MiB");
        assert!(e.contains("InsufficientCapacity"), "{e}");
        stored
    });
    assert!(stored >= 4, "only {stored} objects fit");
    // What was stored is intact and nothing half-written is left.
    rt().block_on(async {
        for i in 0..stored {
            assert_eq!(get(&c, "full", &format!("o{i}")).await.unwrap(), object(i));
        }
        for i in 0..stored / 2 {
            c.delete_object()
                .bucket("full")
                .key(format!("o{i}"))
                .send()
                .await
                .unwrap();
        }
    });
    wait_until("the deleted objects' space to come back", || {
        exactly_replicated(&cluster, 3)
    });
    // Free capacity is reported by heartbeats: writes succeed again once they tell.
    rt().block_on(async {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while let Err(e) = put(&c, "full", "again", object(99)).await {
            assert!(std::time::Instant::now() < deadline, "still refused: {e}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        assert_eq!(get(&c, "full", "again").await.unwrap(), object(99));
        for i in stored / 2..stored {
            assert_eq!(get(&c, "full", &format!("o{i}")).await.unwrap(), object(i));
        }
    });
}

#[test]
fn fsck_reports_under_replicated_and_missing_chunks() {
    let cluster = Cluster::start(Opts::default());
    let c = cluster.client();
    let chunk = cluster.chunk_size() as usize;
    rt().block_on(async {
        c.create_bucket().bucket("fsck").send().await.unwrap();
        put(&c, "fsck", "dir/obj", data(2 * chunk, 5))
            .await
            .unwrap();
    });
    wait_until("a clean fsck", || healthy(&cluster));
    let (_, out) = fsck(&cluster);
    assert!(
        out.contains("HEALTHY") && out.contains("objects 1"),
        "{out}"
    );
    // With 3 chunkservers and 3 copies, a dead one cannot be repaired around.
    cluster.kill("chunkserver-1");
    wait_until("fsck to see the dead node", || {
        let (code, out) = fsck(&cluster);
        code == 1 && out.contains("under-replicated") && out.contains("fsck/dir/obj")
    });
    let (_, json) = cluster.admin(&["fsck", "--json"]);
    let r: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(r["under_replicated"], 2, "{r}");
    assert_eq!(r["problems"][0]["copies"], 2, "{r}");
    cluster.kill("chunkserver-2");
    cluster.kill("chunkserver-3");
    wait_until("fsck to see the chunks missing", || {
        let (code, out) = fsck(&cluster);
        code == 1 && out.contains("missing")
    });
}

#[test]
fn a_wiped_master_cannot_make_chunkservers_delete_their_data() {
    let mut cluster = Cluster::start(Opts::default());
    let c = cluster.client();
    let chunk = cluster.chunk_size() as usize;
    rt().block_on(async {
        c.create_bucket().bucket("fence").send().await.unwrap();
        put(&c, "fence", "precious", data(3 * chunk, 6))
            .await
            .unwrap();
    });
    wait_until("3 copies", || exactly_replicated(&cluster, 3));
    let sorted = |mut v: Vec<(String, String)>| {
        v.sort();
        v
    };
    let files = sorted(cluster.chunk_files());
    let master = cluster.masters()[0].clone();
    let servers: Vec<(String, String)> = (1..=3)
        .map(|i| {
            let name = format!("chunkserver-{i}");
            let addr = cluster.addr(&name);
            (name, addr)
        })
        .collect();
    cluster.stop();
    // The master's metadata is lost: a new, empty master (a new cluster id) on the same address.
    std::fs::remove_dir_all(cluster.dir.join("master-1")).unwrap();
    let _master = cluster.spawn(
        "master-1",
        &[
            "master".into(),
            "--listen".into(),
            master.clone(),
            "--data-dir".into(),
            cluster.dir.join("master-1").display().to_string(),
            "--dead-node-timeout-secs".into(),
            "1".into(),
        ],
    );
    let mut nodes = Vec::new();
    for (name, addr) in &servers {
        let args: Vec<String> = [
            "chunkserver",
            "--listen",
            addr,
            "--data-dir",
            &cluster.dir.join(name).display().to_string(),
            "--masters",
            &master,
            "--heartbeat-ms",
            "100",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        nodes.push(cluster.spawn(name, &args));
    }
    // Long past the new master's safe mode (1 s) and many heartbeats: every chunkserver has
    // refused it 30 times (one attempt a heartbeat, 100 ms).
    wait_until("the chunkservers to refuse the foreign master", || {
        servers.iter().all(|(name, _)| {
            std::fs::read_to_string(cluster.dir.join(format!("logs/{name}.log")))
                .unwrap_or_default()
                .matches("belongs to cluster")
                .count()
                >= 30
        })
    });
    assert_eq!(sorted(cluster.chunk_files()), files, "no chunk was deleted");
}

/// Flips one data byte of a chunk file (the data starts after a 16-byte header).
fn flip_byte(path: &std::path::Path, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[16 + at] ^= 0x5a;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn reads_go_around_a_corrupt_replica_and_the_read_gets_it_repaired() {
    let cluster = Cluster::start(Opts {
        // The scrubber stays out of it: the reads must find the corruption.
        extra: vec!["--chunkserver-arg=--scrub-rate=0".into()],
        ..Default::default()
    });
    let c = cluster.client();
    let object = data(cluster.chunk_size() as usize / 2, 40);
    rt().block_on(async {
        c.create_bucket().bucket("rot").send().await.unwrap();
        put(&c, "rot", "obj", object.clone()).await.unwrap();
    });
    wait_until("3 copies", || exactly_replicated(&cluster, 3));
    let files = cluster.chunk_files();
    let chunk = files[0].1.clone();
    let good = std::fs::read(chunk_path(&cluster, "chunkserver-1", &chunk)).unwrap();
    // Two of the three copies rot; any read that picks one must be served from the third.
    for node in ["chunkserver-1", "chunkserver-2"] {
        flip_byte(&chunk_path(&cluster, node, &chunk), 100);
    }
    wait_until(
        "both rotten copies to be found by reads and repaired",
        || {
            let got = rt().block_on(get(&c, "rot", "obj")).unwrap();
            assert_eq!(got, object, "a read served corrupt data");
            ["chunkserver-1", "chunkserver-2", "chunkserver-3"]
                .iter()
                .all(|n| std::fs::read(chunk_path(&cluster, n, &chunk)).ok() == Some(good.clone()))
        },
    );
    let s = cluster.status();
    assert!(s["lost_reported"].as_u64().unwrap() >= 2, "{s}");
    assert!(s["repaired"].as_u64().unwrap() >= 2, "{s}");
    assert!(healthy(&cluster), "{}", fsck(&cluster).1);
}

#[test]
fn the_scrubber_finds_a_flipped_byte_and_the_replica_is_repaired() {
    let cluster = Cluster::start(Opts {
        extra: vec!["--chunkserver-arg=--scrub-interval=1".into()],
        ..Default::default()
    });
    let c = cluster.client();
    let object = data(cluster.chunk_size() as usize * 2, 41);
    rt().block_on(async {
        c.create_bucket().bucket("scrub").send().await.unwrap();
        put(&c, "scrub", "obj", object.clone()).await.unwrap();
    });
    wait_until("3 copies", || exactly_replicated(&cluster, 3));
    let chunk = cluster.chunk_files()[0].1.clone();
    let path = chunk_path(&cluster, "chunkserver-3", &chunk);
    let good = std::fs::read(&path).unwrap();
    flip_byte(&path, cluster.chunk_size() as usize - 1);
    // No client reads it: the scrubber must notice, and the master restore the copy.
    wait_until("the scrubbed replica to be repaired", || {
        std::fs::read(&path).ok() == Some(good.clone())
    });
    let s = cluster.status();
    let corrupt: u64 = s["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["scrub_corrupt"].as_u64())
        .sum();
    assert_eq!(corrupt, 1, "{s}");
    assert!(healthy(&cluster), "{}", fsck(&cluster).1);
    assert_eq!(rt().block_on(get(&c, "scrub", "obj")).unwrap(), object);
}

#[test]
fn a_failed_disk_is_taken_out_and_its_chunks_are_re_replicated() {
    let cluster = Cluster::start(Opts::default());
    let c = cluster.client();
    let chunk = cluster.chunk_size() as usize;
    let base = cluster.dir.join("chunkserver-4");
    let (d1, d2) = (base.join("d1"), base.join("d2"));
    let addr = format!("127.0.0.1:{}", free_port());
    let _node = cluster.spawn_chunkserver(
        "chunkserver-4",
        &addr,
        &[
            "--disk",
            d1.to_str().unwrap(),
            "--disk",
            d2.to_str().unwrap(),
        ],
    );
    let objects: Vec<Vec<u8>> = (0..6).map(|i| data(2 * chunk, 50 + i as u64)).collect();
    rt().block_on(async {
        c.create_bucket().bucket("disks").send().await.unwrap();
        for (i, o) in objects.iter().enumerate() {
            put(&c, "disks", &format!("o{i}"), o.clone()).await.unwrap();
        }
    });
    wait_until("3 copies", || exactly_replicated(&cluster, 3));
    let on = |disk: &std::path::Path| {
        cluster
            .chunk_files()
            .iter()
            .filter(|(n, c)| n == "chunkserver-4" && chunk_path_in(disk, c).exists())
            .count()
    };
    let lost = on(&d1);
    assert!(lost > 0 && on(&d2) > 0, "both disks hold chunks");
    // The disk dies: its folder is gone and something else is in its place.
    std::fs::remove_dir_all(&d1).unwrap();
    std::fs::write(&d1, b"not a folder").unwrap();
    wait_until(
        "the disk to be reported failed and its chunks re-replicated",
        || {
            let s = cluster.status();
            let node = s["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|n| n["addr"] == addr.as_str())
                .cloned()
                .unwrap();
            node["state"] == "alive"
                && node["disks"][0]["failed"] == true
                && node["disks"][1]["failed"] == false
                && s["under_replicated"] == 0
                && exactly_replicated(&cluster, 3)
        },
    );
    assert!(cluster.status()["lost_reported"].as_u64().unwrap() >= lost as u64);
    // The node goes on with its other disk.
    let before = on(&d2);
    rt().block_on(async {
        for i in 0..6 {
            put(&c, "disks", &format!("more{i}"), data(chunk, 60 + i))
                .await
                .unwrap();
        }
        for (i, o) in objects.iter().enumerate() {
            assert_eq!(&get(&c, "disks", &format!("o{i}")).await.unwrap(), o);
        }
    });
    wait_until("new chunks on the surviving disk", || on(&d2) > before);
    assert!(healthy(&cluster), "{}", fsck(&cluster).1);
}

/// The file of `chunk` on one disk folder.
fn chunk_path_in(disk: &std::path::Path, chunk: &str) -> std::path::PathBuf {
    disk.join("chunks")
        .join(&chunk[..2])
        .join(&chunk[2..4])
        .join(chunk)
}

#[test]
fn small_objects_live_in_pack_files_and_deleted_ones_are_compacted_away() {
    let mut extra: Vec<String> = SHORT_LEASES.iter().map(|s| s.to_string()).collect();
    extra.push("--chunkserver-arg=--scrub-interval=1".into());
    let cluster = Cluster::start(Opts {
        extra,
        ..Default::default()
    });
    let c = cluster.client();
    let objects: Vec<Vec<u8>> = (0..30).map(|i| data(4096, 600 + i)).collect();
    // All at once: they travel down the pipelines in batches.
    rt().block_on(async {
        c.create_bucket().bucket("small").send().await.unwrap();
        let keys: Vec<String> = (0..objects.len()).map(|i| format!("o{i}")).collect();
        let puts = keys
            .iter()
            .zip(&objects)
            .map(|(k, o)| put(&c, "small", k, o.clone()));
        for r in futures_util::future::join_all(puts).await {
            r.unwrap();
        }
        for (i, o) in objects.iter().enumerate() {
            assert_eq!(&get(&c, "small", &format!("o{i}")).await.unwrap(), o);
        }
    });
    wait_until("3 copies", || exactly_replicated(&cluster, 3));
    let packs = |node: &str| cluster.dir.join(node).join("packs");
    let packed: usize = ["chunkserver-1", "chunkserver-2", "chunkserver-3"]
        .iter()
        .map(|n| packed_chunks(&packs(n)).len())
        .sum();
    assert_eq!(packed, 30 * 3, "every copy of a small object is packed");
    // Deleted objects: their chunks are collected, which appends tombstones.
    rt().block_on(async {
        for i in 5..30 {
            let key = format!("o{i}");
            c.delete_object()
                .bucket("small")
                .key(&key)
                .send()
                .await
                .unwrap();
        }
    });
    wait_until("the deleted objects' chunks to be collected", || {
        cluster.chunk_files().len() == 5 * 3
    });
    // A restarted chunkserver replays its pack file and starts a new one; the old one, mostly
    // dead, is compacted away.
    let victim = "chunkserver-1";
    let addr = cluster.addr(victim);
    cluster.kill(victim);
    let _back = cluster.spawn_chunkserver(victim, &addr, &["--compact-interval", "1"]);
    wait_until("the sparse pack file to be compacted away", || {
        !packs(victim).join("00000001.pack").exists()
    });
    assert_eq!(packed_chunks(&packs(victim)).len(), 5);
    assert!(exactly_replicated(&cluster, 3));
    // A flipped byte in a packed copy is found by the scrubber and the copy replaced.
    let (chunk, file, at) = packed_locations(&packs("chunkserver-2"))[0].clone();
    // In place: the chunkserver has the file open for appending.
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&file)
            .unwrap();
        let mut b = [0u8];
        f.read_exact_at(&mut b, at as u64 + 100).unwrap();
        f.write_all_at(&[b[0] ^ 0x5a], at as u64 + 100).unwrap();
    }
    wait_until("the corrupt packed copy to be replaced", || {
        let s = cluster.status();
        let corrupt: u64 = s["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|n| n["scrub_corrupt"].as_u64())
            .sum();
        corrupt == 1 && s["under_replicated"] == 0 && exactly_replicated(&cluster, 3)
    });
    assert!(packed_chunks(&packs("chunkserver-2")).contains(&chunk));
    assert!(healthy(&cluster), "{}", fsck(&cluster).1);
    rt().block_on(async {
        for (i, o) in objects.iter().enumerate().take(5) {
            assert_eq!(&get(&c, "small", &format!("o{i}")).await.unwrap(), o);
        }
        assert!(get(&c, "small", "o5").await.is_err());
    });
}
