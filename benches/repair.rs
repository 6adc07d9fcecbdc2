//! Repair benchmark: how fast a cluster restores full replication after losing a chunkserver,
//! and what the repair costs foreground PUT and GET throughput.
//!
//! `cargo bench --bench repair` (release; `-- --gib N` sets the data written before the kill,
//! default 2 GiB; `cargo bench --profile dev --bench repair` skips the release build). A real
//! `tinydfs server` with 4 chunkservers, 3 copies, 64 MiB chunks, every copy fsynced, heartbeats
//! every 200 ms and a 3 s dead-node timeout; clients are aws-sdk-s3 on loopback. Results print as
//! Markdown for docs/BENCHMARKS.md.

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;
use std::time::{Duration, Instant};

const MIB: usize = 1024 * 1024;
const OBJECT: usize = 64 * MIB;
/// Foreground load: 8 objects of 64 MiB, 4 at a time (issue 7's large-object case).
const FOREGROUND_OBJECTS: usize = 8;
const CONCURRENCY: usize = 4;

/// PUTs (or GETs, checking the bytes) `count` objects named `{prefix}{i}`; answers MiB/s.
async fn transfer(c: &aws_sdk_s3::Client, prefix: &str, count: usize, get_back: bool) -> f64 {
    let body = data(OBJECT, 7);
    let started = Instant::now();
    let mut next = 0;
    while next < count {
        let mut batch = Vec::new();
        for i in next..(next + CONCURRENCY).min(count) {
            let (c, key, body) = (c.clone(), format!("{prefix}{i}"), body.clone());
            batch.push(tokio::spawn(async move {
                if get_back {
                    let got = get(&c, "bench", &key).await.unwrap();
                    assert!(got == body, "{key} read back wrong");
                } else {
                    put(&c, "bench", &key, body).await.unwrap();
                }
            }));
        }
        next += batch.len();
        for t in batch {
            t.await.unwrap();
        }
    }
    (count * OBJECT) as f64 / MIB as f64 / started.elapsed().as_secs_f64()
}

fn under_replicated(cluster: &Cluster) -> u64 {
    cluster.status()["under_replicated"].as_u64().unwrap()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let gib: usize = args
        .iter()
        .position(|a| a == "--gib")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let cluster = Cluster::start(Opts {
        chunkservers: 4,
        chunk_size: OBJECT as u64,
        ..Default::default()
    });
    let c = cluster.client();
    let rt = rt();
    rt.block_on(async {
        c.create_bucket().bucket("bench").send().await.unwrap();
    });
    let put_base = rt.block_on(transfer(&c, "base", FOREGROUND_OBJECTS, false));
    let get_base = rt.block_on(transfer(&c, "base", FOREGROUND_OBJECTS, true));
    let fill = gib * 1024 * MIB / OBJECT;
    rt.block_on(transfer(&c, "fill", fill, false));
    wait_until("3 copies of everything", || under_replicated(&cluster) == 0);

    let victim = "chunkserver-1";
    let held: u64 = cluster
        .chunk_files()
        .iter()
        .filter(|(n, _)| n == victim)
        .map(|(_, id)| {
            let p = cluster
                .dir
                .join(victim)
                .join("chunks")
                .join(&id[..2])
                .join(&id[2..4])
                .join(id);
            std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
        })
        .sum();
    let victim_addr = cluster.addr(victim);
    cluster.kill(victim);
    wait_until("the chunkserver to be declared dead", || {
        cluster.status()["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["addr"] == victim_addr.as_str() && n["state"] == "dead")
    });
    let dead_at = Instant::now();
    let put_during = rt.block_on(transfer(&c, "during", FOREGROUND_OBJECTS, false));
    let get_during = rt.block_on(transfer(&c, "during", FOREGROUND_OBJECTS, true));
    let foreground_secs = dead_at.elapsed().as_secs_f64();
    let overlapped = under_replicated(&cluster) > 0;
    let deadline = Instant::now() + Duration::from_secs(3600);
    while under_replicated(&cluster) > 0 {
        assert!(Instant::now() < deadline, "repair did not finish");
        std::thread::sleep(Duration::from_millis(200));
    }
    let repair_secs = dead_at.elapsed().as_secs_f64();
    let held_mib = held as f64 / MIB as f64;
    println!(
        "| data written | lost with the chunkserver | repair time | repair rate |\n|---|---|---|---|"
    );
    let written_mib = (FOREGROUND_OBJECTS + fill) * OBJECT / MIB;
    println!(
        "| {written_mib} MiB x 3 copies on 4 chunkservers | {held_mib:.0} MiB | {repair_secs:.1} s | {:.0} MiB/s |",
        held_mib / repair_secs
    );
    println!();
    println!("| foreground (8 x 64 MiB, 4 at a time) | PUT MiB/s | GET MiB/s |\n|---|---|---|");
    println!("| no repair running | {put_base:.0} | {get_base:.0} |");
    println!(
        "| while repairing{} | {put_during:.0} | {get_during:.0} |",
        if overlapped {
            ""
        } else {
            " (repair ended before the foreground load did)"
        }
    );
    println!("\nforeground load took {foreground_secs:.1} s of the {repair_secs:.1} s repair");
}
