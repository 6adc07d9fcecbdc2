//! Master group benchmark: metadata commits per second with 1 and 3 masters at 1, 16 and 64
//! concurrent writers; leader failover time (kill to first successful commit) over 10 rounds;
//! master memory per object and restart time with many objects.
//!
//! `cargo bench --bench masters` (add `-- --objects N` to change the namespace size, default
//! 200,000; `-- --quick` for a short run; `-- --memory` for the memory and restart part only; `-- --commits` for
//! the commits and failover part only;
//! `TINYDFS_BIN=target/release/tinydfs` to measure a release build from a dev-profile bench).
//! Masters run as real processes on loopback with the default Raft timers; commits are 0-byte
//! object records with 40-byte keys, sent through the internal API the gateways use. The memory
//! part writes objects of one chunk each, committed with three replica locations on chunkservers
//! the bench registers (and keeps alive with heartbeats), so the master's figure includes the
//! chunk table and the leader's replica map, as in a real cluster. Results print as Markdown for
//! docs/BENCHMARKS.md.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tinydfs_proto::client::MasterClient;
use tinydfs_proto::meta::{
    Heartbeat, MasterHealth, MetaRead, MetaReply, MetaWrite, RegisterRequest,
};
use tinydfs_proto::{ChunkId, ChunkMeta, NodeId, ObjectRecord};

const SECRET: &str = "bench-secret";

struct Group {
    dir: std::path::PathBuf,
    addrs: Vec<String>,
    procs: Vec<Option<Child>>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Group {
    fn start(n: usize) -> Group {
        let dir = std::env::temp_dir().join(format!("tinydfs-bench-{:08x}", rand::random::<u32>()));
        std::fs::create_dir_all(&dir).unwrap();
        let addrs: Vec<String> = (0..n)
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        let mut g = Group {
            dir,
            addrs,
            procs: Vec::new(),
        };
        for i in 0..n {
            let p = g.spawn(i);
            g.procs.push(Some(p));
        }
        g
    }

    fn spawn(&self, i: usize) -> Child {
        let initial: Vec<String> = self
            .addrs
            .iter()
            .enumerate()
            .map(|(j, a)| format!("{}={a}", j + 1))
            .collect();
        // `TINYDFS_BIN` runs another build of the binary (a release one from a dev-profile bench).
        let bin = std::env::var("TINYDFS_BIN").unwrap_or(env!("CARGO_BIN_EXE_tinydfs").into());
        Command::new(bin)
            .args([
                "master",
                "--id",
                &(i + 1).to_string(),
                "--listen",
                &self.addrs[i],
            ])
            .arg("--data-dir")
            .arg(self.dir.join(format!("m{}", i + 1)))
            .args(["--initial-members", &initial.join(",")])
            .env("TINYDFS_CLUSTER_SECRET", SECRET)
            .env("TINYDFS_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    fn client(&self) -> MasterClient {
        MasterClient::new(self.addrs.clone(), SECRET.into())
    }

    async fn health(&self, i: usize) -> Option<MasterHealth> {
        let r = reqwest::Client::new()
            .get(format!("http://{}/health", self.addrs[i]))
            .timeout(Duration::from_secs(1))
            .send()
            .await
            .ok()?;
        serde_json::from_slice(&r.bytes().await.ok()?).ok()
    }

    async fn leader(&self) -> usize {
        loop {
            for i in 0..self.addrs.len() {
                if self.procs[i].is_none() {
                    continue;
                }
                if let Some(h) = self.health(i).await {
                    if h.raft.role == "leader" {
                        return i;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut p) = self.procs[i].take() {
            let _ = p.kill();
            let _ = p.wait();
        }
    }

    fn rss_kib(&self, i: usize) -> u64 {
        let pid = self.procs[i].as_ref().map(|p| p.id()).unwrap_or(0);
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        for i in 0..self.procs.len() {
            self.kill(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn record() -> ObjectRecord {
    ObjectRecord {
        etag: "d41d8cd98f00b204e9800998ecf8427e".into(),
        ..Default::default()
    }
}

/// A 40-byte key.
fn key(writer: usize, i: u64) -> String {
    format!("bench/writer-{writer:03}/object-{i:018}")
}

async fn put(c: &MasterClient, k: String) -> bool {
    c.write(MetaWrite::PutObject {
        bucket: "bench".into(),
        key: k,
        record: record(),
        condition: None,
    })
    .await
    .is_ok()
}

async fn ready(g: &Group) -> MasterClient {
    let c = g.client();
    loop {
        if c.write(MetaWrite::CreateBucket {
            bucket: "bench".into(),
            owner: "bench".into(),
        })
        .await
        .is_ok()
        {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Registers three chunkservers that exist only in the bench (nothing is ever sent to them) and
/// keeps them alive with heartbeats without chunk reports, so the leader records the replica
/// locations that commits carry and counts them as live copies.
async fn fake_chunkservers(c: &Arc<MasterClient>) -> Vec<NodeId> {
    let mut ids = Vec::new();
    for i in 0..3 {
        let req = RegisterRequest {
            node_id: None,
            cluster_id: None,
            addr: format!("127.0.0.1:{}", 1 + i),
            capacity: 1 << 50,
            free: 1 << 49,
            pid: 0,
            zone: format!("z{i}"),
            request_id: Some(rand::random()),
        };
        let id = loop {
            match c.register(&req).await {
                Ok(r) => break r.node_id,
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        ids.push(id);
    }
    let (c, beats) = (c.clone(), ids.clone());
    tokio::spawn(async move {
        loop {
            for (i, id) in beats.iter().enumerate() {
                let hb = Heartbeat {
                    node_id: *id,
                    addr: format!("127.0.0.1:{}", 1 + i),
                    capacity: 1 << 50,
                    free: 1 << 49,
                    zone: format!("z{i}"),
                    ..Default::default()
                };
                let _ = c.heartbeat(&hb).await;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    });
    ids
}

/// An upload lease for the bench's chunks, living long enough for the whole load.
async fn lease(c: &MasterClient) -> u32 {
    match c
        .write(MetaWrite::AcquireLease {
            holder: "bench".into(),
            ttl_ms: Some(3_600_000),
        })
        .await
    {
        Ok(MetaReply::Lease { id, .. }) => id,
        other => panic!("no lease: {other:?}"),
    }
}

/// Commits a 1 MiB object of one chunk stored on `nodes`.
async fn put_chunked(c: &MasterClient, k: String, lease: u32, nodes: &[NodeId]) -> bool {
    let id = ChunkId::in_lease(lease);
    let record = ObjectRecord {
        size: 1 << 20,
        etag: "b6d81b360a5672d80c27430f39153e2c".into(),
        chunks: vec![ChunkMeta {
            id,
            len: 1 << 20,
            crc32c: 0x1234_5678,
        }],
        ..Default::default()
    };
    c.commit(
        MetaWrite::PutObject {
            bucket: "bench".into(),
            key: k,
            record,
            condition: None,
        },
        vec![(id, nodes.to_vec())],
    )
    .await
    .is_ok()
}

/// Commits per second with `writers` concurrent writers for `secs` seconds.
async fn throughput(c: &Arc<MasterClient>, writers: usize, secs: f64, base: u64) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let (c, done) = (c.clone(), done.clone());
            tokio::spawn(async move {
                let mut i = base;
                while Instant::now() < end {
                    if put(&c, key(w, i)).await {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    i += 1;
                }
            })
        })
        .collect();
    let start = Instant::now();
    for t in tasks {
        let _ = t.await;
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let memory_only = args.iter().any(|a| a == "--memory");
    let commits_only = args.iter().any(|a| a == "--commits");
    let objects: u64 = args
        .iter()
        .position(|a| a == "--objects")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(if quick { 20_000 } else { 200_000 });
    let secs = if quick { 2.0 } else { 5.0 };

    if !memory_only {
        commits_and_failover(quick, secs).await;
    }
    if !commits_only {
        memory_and_restart(objects).await;
    }
}

async fn commits_and_failover(quick: bool, secs: f64) {
    println!("| masters | writers | commits/s |\n|---|---|---|");
    for n in [1usize, 3] {
        let g = Group::start(n);
        let c = Arc::new(ready(&g).await);
        for (round, writers) in [1usize, 16, 64].into_iter().enumerate() {
            let rate = throughput(&c, writers, secs, round as u64 * 10_000_000).await;
            println!("| {n} | {writers} | {rate:.0} |");
        }
    }

    // Failover: kill the leader, time until a commit succeeds, bring the old leader back.
    let mut g = Group::start(3);
    let c = ready(&g).await;
    let mut times = Vec::new();
    for round in 0..if quick { 3 } else { 10 } {
        let leader = g.leader().await;
        g.kill(leader);
        let t0 = Instant::now();
        while !put(&c, key(999, round)).await {}
        times.push(t0.elapsed().as_secs_f64());
        let p = g.spawn(leader);
        g.procs[leader] = Some(p);
        // Let it catch up before the next round.
        loop {
            let lead = g.leader().await;
            let (a, b) = (g.health(lead).await, g.health(leader).await);
            if let (Some(a), Some(b)) = (a, b) {
                if a.raft.applied_index == b.raft.applied_index {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "\nfailover (kill leader → first successful commit), {} rounds: median {:.2} s, worst {:.2} s",
        times.len(),
        times[times.len() / 2],
        times[times.len() - 1]
    );
}

/// Memory per object and restart time with a large namespace (one master).
async fn memory_and_restart(objects: u64) {
    let mut g = Group::start(1);
    let c = Arc::new(ready(&g).await);
    let nodes = Arc::new(fake_chunkservers(&c).await);
    let lease = lease(&c).await;
    let before = g.rss_kib(0);
    let per_writer = objects / 64;
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..64)
        .map(|w| {
            let (c, nodes) = (c.clone(), nodes.clone());
            tokio::spawn(async move {
                for i in 0..per_writer {
                    while !put_chunked(&c, key(w, i), lease, &nodes).await {}
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    let load = t0.elapsed().as_secs_f64();
    let total = per_writer * 64;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = g.rss_kib(0);
    let per_object = |kib: u64| (kib.saturating_sub(before) * 1024) as f64 / total as f64;
    println!(
        "\n{total} objects of one chunk (3 replica locations) loaded in {load:.1} s ({:.0}/s); master RSS {} MiB → {} MiB: {:.0} bytes per object",
        total as f64 / load,
        before / 1024,
        after / 1024,
        per_object(after)
    );
    // The figure above includes the request ids of the last minute's writes (kept for retries,
    // proportional to the write rate, not to the namespace): once they have expired (applying
    // the next write drops them), what remains is the memory the namespace needs.
    tokio::time::sleep(Duration::from_secs(62)).await;
    while !put_chunked(&c, key(99, 0), lease, &nodes).await {}
    tokio::time::sleep(Duration::from_secs(2)).await;
    let settled = g.rss_kib(0);
    println!(
        "after the request ids of the load expired: master RSS {} MiB: {:.0} bytes per object",
        settled / 1024,
        per_object(settled)
    );
    g.kill(0);
    let t0 = Instant::now();
    let p = g.spawn(0);
    g.procs[0] = Some(p);
    let c = g.client();
    loop {
        if c.read(MetaRead::HeadBucket {
            bucket: "bench".into(),
        })
        .await
        .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "restart with {total} objects (SIGKILL, start, first linearizable read): {:.2} s",
        t0.elapsed().as_secs_f64()
    );
    // Loading leaves garbage (the file, decoded records) that the allocator returns to the
    // system within seconds.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let restarted = g.rss_kib(0);
    println!(
        "15 s after the restart: master RSS {} MiB: {:.0} bytes per object",
        restarted / 1024,
        per_object(restarted)
    );
}
