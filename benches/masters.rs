//! Master group benchmark: metadata commits per second with 1 and 3 masters at 1, 16 and 64
//! concurrent writers; leader failover time (kill to first successful commit) over 10 rounds;
//! master memory per object and restart time with many objects.
//!
//! `cargo bench --bench masters` (add `-- --objects N` to change the namespace size, default
//! 200,000; `-- --quick` for a short run). Masters run as real processes on loopback with the
//! default Raft timers; commits are 0-byte object records with 40-byte keys, sent through the
//! internal API the gateways use. Results print as Markdown for docs/BENCHMARKS.md.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tinydfs_proto::client::MasterClient;
use tinydfs_proto::meta::{MasterHealth, MetaRead, MetaWrite};
use tinydfs_proto::ObjectRecord;

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
        Command::new(env!("CARGO_BIN_EXE_tinydfs"))
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
    let objects: u64 = args
        .iter()
        .position(|a| a == "--objects")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(if quick { 20_000 } else { 200_000 });
    let secs = if quick { 2.0 } else { 5.0 };

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
    drop(g);

    // Memory per object and restart time with a large namespace (one master).
    let mut g = Group::start(1);
    let c = Arc::new(ready(&g).await);
    let before = g.rss_kib(0);
    let per_writer = objects / 64;
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..64)
        .map(|w| {
            let c = c.clone();
            tokio::spawn(async move {
                for i in 0..per_writer {
                    while !put(&c, key(w, i)).await {}
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
    println!(
        "\n{total} objects loaded in {load:.1} s ({:.0}/s); master RSS {} MiB → {} MiB: {:.0} bytes per object",
        total as f64 / load,
        before / 1024,
        after / 1024,
        (after.saturating_sub(before) * 1024) as f64 / total as f64
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
}
