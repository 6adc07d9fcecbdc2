//! Fault injection with a recorded history: a concurrent S3 workload (PUT, GET, HEAD, DELETE and
//! LIST on a few contended keys, through aws-sdk-s3 without retries and with a 5 s deadline) runs
//! against `tinydfs server --masters 3 --chunkservers 4` while a nemesis pauses (SIGSTOP) a
//! chunkserver, pauses the leader master, and kills (SIGKILL) the leader. Every call is recorded
//! with when it started and ended and what the client saw; after the faults heal, every key is
//! read once more, and the checker (`chaos/checker.rs`) must find the history linearizable per
//! key, nothing acknowledged lost, no bytes no writer wrote, and every LIST consistent.
//!
//! Between faults the nemesis waits for writes to be acknowledged again (recovery, asserted
//! within 60 s); a pause lasts its seconds. CI runs one round (about a minute). Longer schedules, by hand:
//! `TINYDFS_CHAOS_ROUNDS=20 cargo nextest run --test chaos` (each round pauses a random node
//! for 2–9 s). The figures printed (acknowledged operations per second, the longest stretch
//! without an acknowledged write) are for reading, not asserted: availability targets are
//! measured by benchmarks, not by timed tests.

mod common;

#[path = "chaos/checker.rs"]
mod checker;

use aws_sdk_s3::primitives::ByteStream;
use checker::{Call, Event, Seen};
use common::*;
use std::collections::BTreeSet;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BUCKET: &str = "chaos";
/// Keys the workers contend on.
const KEYS: usize = 40;
const WORKERS: u64 = 8;
/// A client's patience: longer calls count as failed, outcome unknown.
const CLIENT_DEADLINE: Duration = Duration::from_secs(5);

/// A client as a careful application configures one: no SDK retries (each call is one
/// operation of the history), a deadline.
fn client(cluster: &Cluster) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .endpoint_url(&cluster.endpoint)
        .force_path_style(true)
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            ACCESS_KEY, SECRET_KEY, None, None, "chaos",
        ))
        .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
        .timeout_config(
            aws_sdk_s3::config::timeout::TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(2))
                .operation_timeout(CLIENT_DEADLINE)
                .build(),
        )
        .http_client(aws_smithy_http_client::Builder::new().build_http())
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// xorshift: the schedule and the values reproduce for a seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn key(i: u64) -> String {
    format!("k{i:02}")
}

/// A value no other write has: the writer and its sequence number, then filler of one of the
/// sizes that take different paths (packed, one chunk file, two chunks).
fn value(worker: u64, seq: u64, rng: &mut Rng) -> Vec<u8> {
    let len = [60usize, 3_000, 100_000, 300_000][rng.below(4) as usize];
    let mut v = format!("w{worker}-{seq}|").into_bytes();
    v.extend(data(len, worker << 32 | seq));
    v
}

/// The history being recorded.
struct Recorder {
    start: Instant,
    events: Mutex<Vec<Event>>,
}

impl Recorder {
    fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    fn record(&self, call: Call, invoked: u64, seen: Seen) {
        let returned = self.now();
        self.events.lock().unwrap().push(Event {
            call,
            invoked,
            returned,
            seen,
        });
    }
}

/// One call of the workload, recorded.
async fn operate(c: &aws_sdk_s3::Client, rec: &Recorder, worker: u64, seq: u64, rng: &mut Rng) {
    let k = key(rng.below(KEYS as u64));
    let invoked = rec.now();
    match rng.below(100) {
        0..35 => {
            let v = value(worker, seq, rng);
            let r = c
                .put_object()
                .bucket(BUCKET)
                .key(&k)
                .body(ByteStream::from(v.clone()))
                .send()
                .await;
            let seen = if r.is_ok() { Seen::Done } else { Seen::Unknown };
            rec.record(Call::Put { key: k, value: v }, invoked, seen);
        }
        35..65 => {
            let seen = match c.get_object().bucket(BUCKET).key(&k).send().await {
                Ok(o) => match o.body.collect().await {
                    Ok(b) => Seen::Read(Some(b.into_bytes().to_vec())),
                    Err(_) => Seen::Unknown,
                },
                Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => {
                    Seen::Read(None)
                }
                Err(_) => Seen::Unknown,
            };
            rec.record(Call::Get { key: k }, invoked, seen);
        }
        65..75 => {
            let seen = match c.head_object().bucket(BUCKET).key(&k).send().await {
                Ok(_) => Seen::Exists(true),
                Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => {
                    Seen::Exists(false)
                }
                Err(_) => Seen::Unknown,
            };
            rec.record(Call::Head { key: k }, invoked, seen);
        }
        75..90 => {
            let r = c.delete_object().bucket(BUCKET).key(&k).send().await;
            let seen = if r.is_ok() { Seen::Done } else { Seen::Unknown };
            rec.record(Call::Delete { key: k }, invoked, seen);
        }
        _ => {
            let seen = match c.list_objects_v2().bucket(BUCKET).send().await {
                Ok(l) => Seen::Listed(
                    l.contents()
                        .iter()
                        .filter_map(|o| o.key().map(String::from))
                        .collect::<BTreeSet<_>>(),
                ),
                Err(_) => Seen::Unknown,
            };
            rec.record(Call::List, invoked, seen);
        }
    }
}

/// `admin status --json`, or None while no master answers it.
fn try_status(cluster: &Cluster) -> Option<serde_json::Value> {
    let out = Command::new(bin())
        .args(["admin", "status", "--json", "--data-dir"])
        .arg(&cluster.dir)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())
        .flatten()
}

/// The leader master's pid, once there is one.
fn leader_pid(cluster: &Cluster) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(s) = try_status(cluster) {
            let leader = s["nodes"].as_array().into_iter().flatten().find(|n| {
                n["role"] == "master" && n["state"] == "leader" && n["pid"].as_u64().is_some()
            });
            if let Some(n) = leader {
                return n["pid"].as_u64().unwrap() as u32;
            }
        }
        assert!(Instant::now() < deadline, "no leader master for 60 s");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success(), "kill {sig} {pid}");
}

/// Pauses `pid` for `secs`, logging what it does.
fn pause(what: &str, pid: u32, secs: u64, rec: &Recorder) {
    eprintln!(
        "[{:6.1}s] nemesis: pause {what} (pid {pid}) for {secs} s",
        rec.now() as f64 / 1e9
    );
    signal(pid, "-STOP");
    std::thread::sleep(Duration::from_secs(secs));
    signal(pid, "-CONT");
    eprintln!("[{:6.1}s] nemesis: {what} resumed", rec.now() as f64 / 1e9);
}

/// Waits until `n` writes invoked after `since` were acknowledged: the workload runs (and, after
/// a fault, has recovered) before the next step. Panics after 60 s.
fn wait_for_writes(rec: &Recorder, since: u64, n: usize, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let acked = rec
            .events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| matches!(e.call, Call::Put { .. } | Call::Delete { .. }))
            .filter(|e| e.seen == Seen::Done && e.invoked > since)
            .count();
        if acked >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no {n} writes acknowledged {what} in 60 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Acknowledged operations per second, and the longest stretch without an acknowledged write.
fn report(events: &[Event], end: u64) {
    let mut writes: Vec<u64> = events
        .iter()
        .filter(|e| matches!(e.call, Call::Put { .. } | Call::Delete { .. }))
        .filter(|e| e.seen == Seen::Done)
        .map(|e| e.returned)
        .collect();
    writes.sort_unstable();
    let mut gaps: Vec<(u64, u64)> = Vec::new();
    let mut last = 0;
    for &t in writes.iter().chain(std::iter::once(&end)) {
        gaps.push((t - last, last));
        last = t;
    }
    gaps.sort_unstable_by(|a, b| b.cmp(a));
    let gap = gaps
        .first()
        .map_or((0, 0), |&(len, from)| (from, from + len));
    let longest: Vec<String> = gaps
        .iter()
        .take(3)
        .map(|(len, from)| {
            format!(
                "{:.1} s from {:.1} s",
                *len as f64 / 1e9,
                *from as f64 / 1e9
            )
        })
        .collect();
    eprintln!(
        "longest stretches without an acknowledged write: {}",
        longest.join(", ")
    );
    let ok = events.iter().filter(|e| e.seen != Seen::Unknown).count();
    eprintln!(
        "history: {} operations, {} answered ({:.0}/s), {} writes acknowledged; longest stretch \
         without an acknowledged write: {:.1} s (from {:.1} s)",
        events.len(),
        ok,
        ok as f64 / (end as f64 / 1e9),
        writes.len(),
        (gap.1 - gap.0) as f64 / 1e9,
        gap.0 as f64 / 1e9
    );
}

#[test]
fn the_history_under_pauses_and_a_killed_leader_is_linearizable() {
    let rounds: u64 = std::env::var("TINYDFS_CHAOS_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(1);
    let cluster = Cluster::start(Opts {
        chunkservers: 4,
        extra: vec!["--masters".into(), "3".into()],
        ..Opts::default()
    });
    let c = client(&cluster);
    let rt = rt();
    rt.block_on(async {
        cluster
            .client()
            .create_bucket()
            .bucket(BUCKET)
            .send()
            .await
            .unwrap()
    });
    let rec = Arc::new(Recorder {
        start: Instant::now(),
        events: Mutex::new(Vec::new()),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let (c, rec, stop) = (c.clone(), rec.clone(), stop.clone());
            rt.spawn(async move {
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (w + 1).wrapping_mul(0x2545_f491));
                let mut seq = 0;
                while !stop.load(Ordering::Relaxed) {
                    operate(&c, &rec, w, seq, &mut rng).await;
                    seq += 1;
                }
            })
        })
        .collect();

    let mut rng = Rng(0x5eed);
    wait_for_writes(&rec, 0, 50, "before the first fault");
    for round in 0..rounds {
        // A chunkserver, then the leader master, alive but silent.
        let cs = format!("chunkserver-{}", 1 + rng.below(4));
        let secs = if round == 0 { 6 } else { 2 + rng.below(8) };
        pause(&cs, cluster.pid(&cs), secs, &rec);
        wait_for_writes(&rec, rec.now(), 30, "after the chunkserver resumed");
        let leader = leader_pid(&cluster);
        let secs = if round == 0 { 5 } else { 2 + rng.below(8) };
        pause("the leader master", leader, secs, &rec);
        wait_for_writes(&rec, rec.now(), 30, "after the leader resumed");
    }
    let leader = leader_pid(&cluster);
    eprintln!(
        "[{:6.1}s] nemesis: SIGKILL the leader master (pid {leader})",
        rec.now() as f64 / 1e9
    );
    signal(leader, "-KILL");
    let killed_at = rec.now();
    wait_for_writes(&rec, killed_at, 30, "after the leader was killed");
    stop.store(true, Ordering::Relaxed);
    rt.block_on(async {
        for w in workers {
            w.await.unwrap();
        }
    });
    let end = rec.now();

    // Every key read once more, now that every fault has healed.
    rt.block_on(async {
        for k in 0..KEYS as u64 {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let invoked = rec.now();
                let seen = match c.get_object().bucket(BUCKET).key(key(k)).send().await {
                    Ok(o) => match o.body.collect().await {
                        Ok(b) => Seen::Read(Some(b.into_bytes().to_vec())),
                        Err(_) => Seen::Unknown,
                    },
                    Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => {
                        Seen::Read(None)
                    }
                    Err(_) => Seen::Unknown,
                };
                if seen != Seen::Unknown {
                    rec.record(Call::Get { key: key(k) }, invoked, seen);
                    break;
                }
                assert!(Instant::now() < deadline, "{} unreadable for 60 s", key(k));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });

    let events = rec.events.lock().unwrap().clone();
    report(&events, end);
    let anomalies = checker::check(&events);
    assert!(
        anomalies.is_empty(),
        "{} anomalies:\n{}",
        anomalies.len(),
        anomalies.join("\n")
    );
}
