//! Faults against a real cluster: chunkservers killed after and during uploads or paused
//! during them, the master crashed and the cluster restarted.

mod common;

use common::*;
use std::time::Duration;

fn chunkserver_state(s: &serde_json::Value, addr: &str) -> String {
    s["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["role"] == "chunkserver" && n["addr"] == addr)
        .map(|n| n["state"].as_str().unwrap_or("").to_string())
        .unwrap_or_default()
}

fn addr_of(cluster: &Cluster, name: &str) -> String {
    cluster
        .nodes()
        .iter()
        .find(|n| n["name"] == name)
        .and_then(|n| n["addr"].as_str().map(String::from))
        .unwrap()
}

#[test]
fn a_killed_chunkserver_loses_no_data_and_writes_go_on() {
    let cluster = Cluster::start(Opts {
        chunkservers: 4,
        ..Opts::default()
    });
    let c = cluster.client();
    let chunk = cluster.chunk_size() as usize;
    let rt = rt();
    let objects: Vec<(String, Vec<u8>)> = (0..6)
        .map(|i| (format!("o{i}"), data(i * chunk / 2 + 17, i as u64)))
        .collect();
    rt.block_on(async {
        c.create_bucket().bucket("faults").send().await.unwrap();
        for (k, d) in &objects {
            put(&c, "faults", k, d.clone()).await.unwrap();
        }
    });
    // Every chunk has 3 copies on 4 servers: killing one leaves at least 2 of each.
    cluster.kill("chunkserver-1");
    rt.block_on(async {
        for (k, d) in &objects {
            let got = get(&c, "faults", k)
                .await
                .unwrap_or_else(|e| panic!("read {k} after kill: {e}"));
            assert!(got == *d, "{k} differs after a chunkserver died");
        }
    });
    let dead = addr_of(&cluster, "chunkserver-1");
    cluster.wait_for("the master to see chunkserver-1 dead", |s| {
        chunkserver_state(s, &dead) == "dead"
    });
    rt.block_on(async {
        let d = data(3 * chunk + 5, 77);
        put(&c, "faults", "after-kill", d.clone()).await.unwrap();
        assert!(get(&c, "faults", "after-kill").await.unwrap() == d);
    });

    // Kill a second chunkserver in the middle of a large upload: the upload either succeeds
    // with the right content or fails and leaves the key as it was (absent).
    let big = data(100 * chunk, 5);
    let outcome = rt.block_on(async {
        let c2 = c.clone();
        let body = big.clone();
        let upload = tokio::spawn(async move { put(&c2, "faults", "mid", body).await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        cluster.kill("chunkserver-2");
        upload.await.unwrap()
    });
    rt.block_on(async {
        match outcome {
            Ok(()) => {
                let got = get(&c, "faults", "mid")
                    .await
                    .expect("an acknowledged upload must read back");
                assert!(
                    got == big,
                    "an acknowledged upload reads back different bytes"
                );
            }
            Err(e) => {
                eprintln!("upload failed cleanly, as allowed: {e}");
                let err = c
                    .head_object()
                    .bucket("faults")
                    .key("mid")
                    .send()
                    .await
                    .unwrap_err();
                assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(404));
            }
        }
        // Everything written before is still readable with two chunkservers gone... if every
        // chunk kept a copy: 3 copies on 4 servers, 2 dead: at least one copy of each remains.
        for (k, d) in &objects {
            let got = get(&c, "faults", k)
                .await
                .unwrap_or_else(|e| panic!("read {k} after two kills: {e}"));
            assert!(got == *d);
        }
    });
}

#[test]
fn the_namespace_survives_a_master_crash_and_a_cluster_restart() {
    let mut cluster = Cluster::start(Opts::default());
    let c = cluster.client();
    let rt = rt();
    let objects: Vec<(String, Vec<u8>)> = (0..5)
        .map(|i| (format!("k/{i}"), data(100_000 * i + 1, i as u64)))
        .collect();
    rt.block_on(async {
        for b in ["one", "two"] {
            c.create_bucket().bucket(b).send().await.unwrap();
        }
        for (k, d) in &objects {
            put(&c, "one", k, d.clone()).await.unwrap();
        }
        c.delete_object()
            .bucket("one")
            .key("k/0")
            .send()
            .await
            .unwrap();
    });
    // SIGKILL the master (no clean shutdown, no snapshot), then restart the whole cluster.
    cluster.kill("master-1");
    let pids: Vec<u32> = cluster
        .nodes()
        .iter()
        .map(|n| n["pid"].as_u64().unwrap() as u32)
        .collect();
    cluster.stop();
    // SIGTERM to `server` stopped every node it started (the dead master is not restarted).
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "node {pid} outlived server"
        );
    }
    let dir = cluster.dir.clone();
    let restarted = Cluster::start_in(dir, Opts::default());
    let c = restarted.client();
    rt.block_on(async {
        let buckets = c.list_buckets().send().await.unwrap();
        let names: Vec<_> = buckets.buckets().iter().filter_map(|b| b.name()).collect();
        assert_eq!(names, ["one", "two"]);
        let list = c.list_objects_v2().bucket("one").send().await.unwrap();
        let keys: Vec<_> = list.contents().iter().filter_map(|o| o.key()).collect();
        assert_eq!(keys, ["k/1", "k/2", "k/3", "k/4"]);
        for (k, d) in &objects[1..] {
            let got = get(&c, "one", k)
                .await
                .unwrap_or_else(|e| panic!("read {k} after restart: {e}"));
            assert!(got == *d, "{k} differs after restart");
        }
        put(&c, "two", "new", b"after restart".to_vec())
            .await
            .unwrap();
        assert_eq!(get(&c, "two", "new").await.unwrap(), b"after restart");
    });
    drop(cluster);
}

#[test]
fn restart_recovers_from_a_snapshot_plus_the_log_after_it() {
    let opts = || Opts {
        extra: vec!["--snapshot-every".into(), "10".into()],
        ..Opts::default()
    };
    let mut cluster = Cluster::start(opts());
    let c = cluster.client();
    let rt = rt();
    rt.block_on(async {
        c.create_bucket().bucket("snap").send().await.unwrap();
        for i in 0..45 {
            put(
                &c,
                "snap",
                &format!("k{i:02}"),
                format!("value {i}").into_bytes(),
            )
            .await
            .unwrap();
        }
    });
    let snapshot = cluster.dir.join("master-1/state/snapshot.json");
    // Snapshots are taken in the background: wait for one.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !snapshot.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "no snapshot after 45 writes with --snapshot-every 10"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    cluster.kill("master-1");
    cluster.stop();
    let restarted = Cluster::start_in(cluster.dir.clone(), opts());
    let c = restarted.client();
    rt.block_on(async {
        let list = c.list_objects_v2().bucket("snap").send().await.unwrap();
        assert_eq!(list.contents().len(), 45);
        for i in [0, 17, 44] {
            let got = get(&c, "snap", &format!("k{i:02}")).await.unwrap();
            assert_eq!(got, format!("value {i}").into_bytes());
        }
    });
}

#[test]
fn a_chunk_stream_cut_short_or_mislabelled_is_never_kept() {
    let cluster = Cluster::start(Opts::default());
    let secret = std::fs::read_to_string(cluster.dir.join("cluster.secret")).unwrap();
    let cs = addr_of(&cluster, "chunkserver-1");
    let http = reqwest::Client::new();
    let body = data(100_000, 4);
    let crc = {
        // CRC32C (Castagnoli), bitwise: the test does not trust the code under test.
        let mut c = !0u32;
        for b in &body {
            c ^= u32::from(*b);
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    (c >> 1) ^ 0x82F6_3B78
                } else {
                    c >> 1
                };
            }
        }
        !c
    };
    let footer = |len: u64, crc: u32| {
        let mut f = len.to_le_bytes().to_vec();
        f.extend(crc.to_le_bytes());
        f
    };
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("no footer", body.clone(), 400),
        (
            "wrong length",
            [body.clone(), footer(99_999, crc)].concat(),
            400,
        ),
        (
            "wrong crc",
            [body.clone(), footer(100_000, crc ^ 1)].concat(),
            400,
        ),
        (
            "complete",
            [body.clone(), footer(100_000, crc)].concat(),
            200,
        ),
    ];
    rt().block_on(async {
        for (i, (what, wire, want)) in cases.into_iter().enumerate() {
            let id = format!("{:032x}", 0xabc0 + i);
            let url = format!("http://{cs}/internal/v1/chunk/{id}");
            let r = http
                .put(&url)
                .header("x-tinydfs-secret", secret.trim())
                .body(wire)
                .send()
                .await
                .unwrap();
            assert_eq!(
                r.status().as_u16(),
                want,
                "{what}: {}",
                r.text().await.unwrap_or_default()
            );
            let g = http
                .get(&url)
                .header("x-tinydfs-secret", secret.trim())
                .send()
                .await
                .unwrap();
            if want == 200 {
                assert_eq!(g.bytes().await.unwrap().as_ref(), body.as_slice(), "{what}");
            } else {
                assert_eq!(g.status().as_u16(), 404, "{what}: the chunk was kept");
            }
        }
        // Without the cluster secret: refused.
        let r = http
            .get(format!("http://{cs}/internal/v1/chunk/{:032x}", 0xabc3))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 403);
    });
}

#[test]
fn chunks_of_a_dead_chunkserver_are_re_replicated_so_later_failures_lose_nothing() {
    let cluster = Cluster::start(Opts {
        chunkservers: 4,
        ..Opts::default()
    });
    let c = cluster.client();
    let chunk = cluster.chunk_size() as usize;
    let rt = rt();
    // 30 chunks over 4 servers, 3 copies each.
    let objects: Vec<(String, Vec<u8>)> = (0..10)
        .map(|i| (format!("r{i}"), data(3 * chunk - 7, 300 + i as u64)))
        .collect();
    rt.block_on(async {
        c.create_bucket().bucket("repair").send().await.unwrap();
        for (k, d) in &objects {
            put(&c, "repair", k, d.clone()).await.unwrap();
        }
    });
    cluster.wait_for("full replication", |s| {
        s["chunks"] == 30 && s["under_replicated"] == 0
    });
    cluster.kill("chunkserver-1");
    let dead = addr_of(&cluster, "chunkserver-1");
    // Once the master sees it dead, its chunks are copied from the survivors to the others.
    cluster.wait_for("re-replication", |s| {
        chunkserver_state(s, &dead) == "dead" && s["under_replicated"] == 0 && s["lost"] == 0
    });
    let s = cluster.status();
    assert!(
        s["repaired"].as_u64().unwrap() > 0,
        "nothing was re-replicated: {s}"
    );
    // Every chunk now has all 3 copies on the 3 survivors: two more deaths leave one copy each.
    cluster.kill("chunkserver-2");
    cluster.kill("chunkserver-3");
    rt.block_on(async {
        for (k, d) in &objects {
            let got = get(&c, "repair", k)
                .await
                .unwrap_or_else(|e| panic!("{k} lost after three deaths: {e}"));
            assert!(got == *d, "{k} differs");
        }
    });
}

#[test]
fn an_object_whose_every_copy_is_gone_answers_503_not_a_broken_body() {
    let cluster = Cluster::start(Opts::default());
    let c = cluster.client();
    let rt = rt();
    rt.block_on(async {
        c.create_bucket().bucket("gone").send().await.unwrap();
        put(&c, "gone", "k", data(1000, 1)).await.unwrap();
    });
    for i in 1..=3 {
        cluster.kill(&format!("chunkserver-{i}"));
    }
    cluster.wait_for("the chunk to be reported lost", |s| s["lost"] == 1);
    rt.block_on(async {
        let err = c
            .get_object()
            .bucket("gone")
            .key("k")
            .send()
            .await
            .unwrap_err();
        assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(503));
        // Metadata is still served.
        let head = c
            .head_object()
            .bucket("gone")
            .key("k")
            .send()
            .await
            .unwrap();
        assert_eq!(head.content_length(), Some(1000));
    });
}

/// Waits up to a minute for `child` to exit; answers its exit code.
fn exit_code(child: &mut std::process::Child) -> i32 {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the process did not exit"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The lines of a node's log that the binary printed as its fatal error.
fn fatal_lines(log: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("tinydfs: "))
        .map(String::from)
        .collect()
}

#[test]
fn a_second_chunkserver_on_a_data_folder_or_disk_exits_naming_the_holder() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("locks-{:08x}", rand::random::<u32>()));
    std::fs::create_dir_all(&dir).unwrap();
    // No master is needed to start: registration is retried in the background.
    let nobody = format!("127.0.0.1:{}", free_port());
    let start = |name: &str, data: &str, extra: &[&str]| {
        let addr = format!("127.0.0.1:{}", free_port());
        let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
        let child = std::process::Command::new(bin())
            .args(["chunkserver", "--listen", &addr, "--masters", &nobody])
            .arg("--data-dir")
            .arg(dir.join(data))
            .args(extra)
            .env("TINYDFS_CLUSTER_SECRET", "locks-test-secret")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        (KillOnDrop(child), addr)
    };
    let (mut first, addr) = start("first", "a", &[]);
    let answers = |addr: &str| {
        std::process::Command::new(bin())
            .args(["health", addr, "--timeout", "1"])
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap()
            .success()
    };
    wait_until("the first chunkserver to answer", || answers(&addr));
    let holder = format!("pid {}", first.0.id());
    // The same data folder (also its disk).
    let (mut second, _) = start("second", "a", &[]);
    assert_ne!(exit_code(&mut second.0), 0);
    let lines = fatal_lines(&dir.join("second.log"));
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains(&dir.join("a").display().to_string()),
        "{lines:?}"
    );
    assert!(lines[0].contains(&holder), "{lines:?}");
    // Another data folder, with the first one's folder as a disk.
    let disk = format!("--disk={}", dir.join("a").display());
    let (mut third, _) = start("third", "b", &[&disk]);
    assert_ne!(exit_code(&mut third.0), 0);
    let lines = fatal_lines(&dir.join("third.log"));
    assert!(lines.len() == 1 && lines[0].contains(&holder), "{lines:?}");
    // Its lock dies with its holder: no stale lock after a crash.
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    let (mut fourth, addr) = start("fourth", "b", &[&disk]);
    wait_until("a chunkserver on the freed folder to answer", || {
        answers(&addr)
    });
    assert!(fourth.0.try_wait().unwrap().is_none());
    drop(fourth);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_chunkserver_never_forgets_its_identity_silently() {
    let cluster = Cluster::start(Opts::default());
    let c = cluster.client();
    let rt = rt();
    let chunk = cluster.chunk_size() as usize;
    rt.block_on(async {
        c.create_bucket().bucket("who").send().await.unwrap();
        // Chunk files and packed chunks alike.
        put(&c, "who", "big", data(2 * chunk + 5, 1)).await.unwrap();
        put(&c, "who", "small", data(1000, 2)).await.unwrap();
    });
    let held = |node: &str| {
        cluster
            .chunk_files()
            .iter()
            .filter(|(n, _)| n == node)
            .count()
    };
    let before = held("chunkserver-1");
    assert!(before >= 4, "chunkserver-1 holds {before} chunks");
    let addr = cluster.addr("chunkserver-1");
    let old_id = cluster.status()["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["role"] == "chunkserver" && n["addr"] == addr.as_str())
        .and_then(|n| n["id"].as_u64());
    // The identity file is lost while the node is down.
    cluster.kill("chunkserver-1");
    let folder = cluster.dir.join("chunkserver-1");
    std::fs::remove_file(folder.join("identity.json")).unwrap();
    let args = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "chunkserver",
            "--listen",
            &addr,
            "--masters",
            &cluster.masters().join(","),
            "--heartbeat-ms",
            "200",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.push(format!("--data-dir={}", folder.display()));
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    // Refused: it would register as a new node over its chunks.
    let mut refused = cluster.spawn("refused", &args(&[]));
    assert_ne!(exit_code(&mut refused.0), 0);
    let lines = fatal_lines(&cluster.dir.join("logs/refused.log"));
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("identity.json") && lines[0].contains("--accept-new-identity"),
        "{lines:?}"
    );
    assert_eq!(
        held("chunkserver-1"),
        before,
        "a refused start touched chunks"
    );
    // The operator lets the cluster judge its chunks as a new node's.
    let _accepted = cluster.spawn("accepted", &args(&["--accept-new-identity"]));
    let alive_id = || {
        cluster.status()["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["addr"] == addr.as_str() && n["state"] == "alive")
            .filter_map(|n| n["id"].as_u64())
            .find(|id| Some(*id) != old_id)
    };
    // Under a new id: the master has not yet even seen the old one dead.
    wait_until("the node to register anew", || alive_id().is_some());
    assert!(folder.join("identity.json").exists());
    rt.block_on(async {
        assert!(get(&c, "who", "big").await.unwrap() == data(2 * chunk + 5, 1));
    });

    // A node that cannot save the identity it was given stops instead of serving without it.
    let fresh = cluster.dir.join("unsaved");
    std::fs::create_dir_all(fresh.join("identity.json.tmp")).unwrap();
    let unsaved_addr = format!("127.0.0.1:{}", free_port());
    let mut unsaved = cluster.spawn(
        "unsaved",
        &[
            "chunkserver".to_string(),
            "--listen".to_string(),
            unsaved_addr,
            "--masters".to_string(),
            cluster.masters().join(","),
            format!("--data-dir={}", fresh.display()),
        ],
    );
    assert_ne!(exit_code(&mut unsaved.0), 0);
    let lines = fatal_lines(&cluster.dir.join("logs/unsaved.log"));
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("cannot save the node identity"),
        "{lines:?}"
    );
    assert!(!fresh.join("identity.json").exists());
}

/// A chunkserver serves at most `--max-requests` chunk requests at once and answers the next
/// 503 SlowDown at once (instead of queueing it behind a slow disk); the slot comes back when
/// the request ends.
#[test]
fn a_chunkserver_beyond_its_request_limit_answers_503_at_once() {
    use std::io::Write;
    let cluster = Cluster::start(Opts {
        chunkservers: 1,
        extra: vec!["--chunkserver-arg=--max-requests=1".into()],
        ..Opts::default()
    });
    let addr = cluster.addr("chunkserver-1");
    let secret = std::fs::read_to_string(cluster.dir.join("cluster.secret")).unwrap();
    let secret = secret.trim().to_string();
    // A chunk upload whose body stalls holds the only slot.
    let mut held = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        held,
        "PUT /internal/v1/chunk/0000000100000000000000000000abcd HTTP/1.1\r\nhost: {addr}\r\n\
         x-tinydfs-secret: {secret}\r\nx-tinydfs-version: {}\r\ncontent-length: 1000000\r\n\r\n",
        tinydfs_proto::WIRE_VERSION
    )
    .unwrap();
    held.write_all(&[0u8; 1000]).unwrap();
    held.flush().unwrap();
    let get = |addr: &str, secret: &str| {
        let (addr, secret) = (addr.to_string(), secret.to_string());
        rt().block_on(async move {
            reqwest::Client::new()
                .get(format!(
                    "http://{addr}/internal/v1/chunk/0000000100000000000000000000beef"
                ))
                .header(tinydfs_proto::SECRET_HEADER, secret)
                .header(
                    tinydfs_proto::VERSION_HEADER,
                    tinydfs_proto::WIRE_VERSION.to_string(),
                )
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    wait_until("a second chunk request refused with 503", || {
        get(&addr, &secret) == 503
    });
    drop(held);
    // Its slot is free again: the read is served (404: no such chunk).
    wait_until("the slot to come back", || get(&addr, &secret) == 404);
}

/// A chunkserver paused with SIGSTOP, resumed (SIGCONT) when this is dropped, so that a failing
/// test leaves no process stopped behind it.
struct Paused(u32);

impl Paused {
    fn stop(pid: u32) -> Paused {
        let ok = std::process::Command::new("kill")
            .args(["-STOP", &pid.to_string()])
            .status()
            .unwrap();
        assert!(ok.success(), "kill -STOP {pid}");
        Paused(pid)
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-CONT", &self.0.to_string()])
            .status();
    }
}

/// PUTs `body` under `key` once, with a client that does not retry: answers how long the
/// gateway took to answer, and the HTTP status and text of a failure.
async fn timed_put(
    c: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    body: Vec<u8>,
) -> (Duration, Result<(), (Option<u16>, String)>) {
    let started = std::time::Instant::now();
    let result = c
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(aws_sdk_s3::primitives::ByteStream::from(body))
        .send()
        .await;
    let result = result.map(|_| ()).map_err(|e| {
        let status = e.raw_response().map(|r| r.status().as_u16());
        (status, format!("{e:?}"))
    });
    (started.elapsed(), result)
}

/// A paused (SIGSTOP) chunkserver sends no reset: writes placed on it must drop it within the
/// pipeline stall deadline, not wait out the 30 s stream timeout. Small objects are written
/// again on another pipeline by the gateway, so each of them succeeds; a large one either
/// succeeds or fails fast with 503 (its bytes were streamed on). The client does not retry.
#[test]
fn writes_go_around_a_paused_chunkserver_within_seconds() {
    // Generous for a loaded machine: the deadlines are a few seconds, the old waits 30 to 60.
    const LONGEST_PUT: Duration = Duration::from_secs(15);
    let cluster = Cluster::start(Opts {
        chunkservers: 4,
        extra: vec![
            "--chunkserver-arg=--pipeline-stall-ms=500".into(),
            "--gateway-arg=--pipeline-stall-ms=500".into(),
        ],
        ..Opts::default()
    });
    let c = {
        let conf = cluster
            .client()
            .config()
            .to_builder()
            .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    };
    let chunk = cluster.chunk_size() as usize;
    let rt = rt();
    rt.block_on(async {
        c.create_bucket().bucket("stall").send().await.unwrap();
        // Pipelines are placed ahead and the connections to every chunkserver opened.
        for i in 0..4 {
            let (_, r) = timed_put(&c, "stall", &format!("warm-{i}"), data(3000, i)).await;
            r.unwrap();
        }
    });
    let small = |i: u64| (format!("small-{i}"), data(3 * 1024, 1000 + i));
    let large = |i: u64| (format!("large-{i}"), data(3 * chunk + 100, 2000 + i));
    let paused = Paused::stop(cluster.pid("chunkserver-2"));
    // At once, right after the pause, while the master and the gateway's placed pipelines
    // still count on it: most pipelines hold the paused node, at any place in them.
    let mut wave: Vec<(String, Vec<u8>)> = (0..8).map(small).collect();
    wave.extend((0..3).map(large));
    let mut outcomes = rt.block_on(async {
        let puts = wave.iter().map(|(k, d)| {
            let (c, k, d) = (c.clone(), k.clone(), d.clone());
            tokio::spawn(async move { timed_put(&c, "stall", &k, d).await })
        });
        let done = futures_util::future::join_all(puts).await;
        done.into_iter().map(|r| r.unwrap()).collect::<Vec<_>>()
    });
    // Then one at a time.
    let mut more: Vec<(String, Vec<u8>)> = Vec::new();
    for i in 0..4 {
        more.push(small(100 + i));
        more.push(large(100 + i));
    }
    rt.block_on(async {
        for (k, d) in &more {
            outcomes.push(timed_put(&c, "stall", k, d.clone()).await);
        }
    });
    wave.extend(more);
    let mut written = Vec::new();
    for ((key, body), (took, result)) in wave.iter().zip(outcomes) {
        eprintln!(
            "PUT {key}: {took:?}, {:?}",
            result.as_ref().map_err(|e| e.0)
        );
        assert!(
            took < LONGEST_PUT,
            "PUT {key} took {took:?} with a chunkserver paused"
        );
        match result {
            Ok(()) => written.push((key, body)),
            Err((status, e)) if key.starts_with("small") => {
                panic!("small PUT {key} failed ({status:?}) with a chunkserver paused: {e}")
            }
            // The bytes of a large object were streamed to a silent head: 503, which SDKs
            // retry, and nothing stored.
            Err((status, e)) => assert_eq!(status, Some(503), "PUT {key}: {e}"),
        }
    }
    // Every acknowledged object reads back from the live chunkservers, then after the paused
    // one is back and the missing copies are restored.
    let read_back = |when: &str| {
        rt.block_on(async {
            for (key, body) in &written {
                let got = get(&c, "stall", key)
                    .await
                    .unwrap_or_else(|e| panic!("read {key} {when}: {e}"));
                assert!(got == **body, "{key} reads back different bytes {when}");
            }
        })
    };
    read_back("while a chunkserver is paused");
    drop(paused);
    cluster.wait_for("every chunk to have its copies again", |s| {
        s["under_replicated"] == 0 && s["lost"] == 0
    });
    read_back("after the repair");
}
