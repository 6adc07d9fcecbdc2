//! The recorded S3 workload of the chaos tests: [`WORKERS`] aws-sdk-s3 clients without retries
//! and with a [`CLIENT_DEADLINE`] run PUT, GET, HEAD, DELETE and LIST on [`KEYS`] contended keys
//! and record every call (invoked, returned, what the client saw) for the checker; and what the
//! nemesis needs around it (waiting for writes to be acknowledged again, reading every key once
//! the faults have healed, the summary of a history).

use crate::checker::{Call, Event, Seen};
use crate::common::{data, ACCESS_KEY, SECRET_KEY};
use crate::netns::spawned;
use aws_sdk_s3::primitives::ByteStream;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BUCKET: &str = "chaos";
/// Keys the workers contend on.
const KEYS: usize = 40;
const WORKERS: u64 = 8;
/// A client's patience: longer calls count as failed, outcome unknown.
const CLIENT_DEADLINE: Duration = Duration::from_secs(5);
/// How long the nemesis waits for writes to be acknowledged again after a fault.
const RECOVERY_DEADLINE: Duration = Duration::from_secs(60);

/// A client as a careful application configures one: no SDK retries (each call is one
/// operation of the history), a deadline.
pub fn client(endpoint: &str) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
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
pub struct Rng(pub u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
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
pub struct Recorder {
    start: Instant,
    events: Mutex<Vec<Event>>,
}

impl Recorder {
    /// Nanoseconds since the workload started.
    pub fn now(&self) -> u64 {
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

    /// The history so far.
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }

    /// Logs a nemesis step, with the time since the workload started.
    pub fn log(&self, what: &str) {
        eprintln!("[{:6.1}s] nemesis: {what}", self.now() as f64 / 1e9);
    }
}

/// A GET, as the history records it.
async fn read(c: &aws_sdk_s3::Client, k: &str) -> Seen {
    match c.get_object().bucket(BUCKET).key(k).send().await {
        Ok(o) => match o.body.collect().await {
            Ok(b) => Seen::Read(Some(b.into_bytes().to_vec())),
            Err(_) => Seen::Unknown,
        },
        Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Seen::Read(None),
        Err(_) => Seen::Unknown,
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
            let seen = read(c, &k).await;
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

/// Creates the workload's bucket (retrying while the cluster settles, up to 60 s).
pub fn create_bucket(rt: &tokio::runtime::Runtime, c: &aws_sdk_s3::Client) {
    let c = c.clone();
    spawned(rt, async move {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match c.create_bucket().bucket(BUCKET).send().await {
                Ok(_) => return,
                Err(e) => assert!(Instant::now() < deadline, "create bucket: {e:?}"),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
}

/// The workers, running on a runtime until [`Workload::finish`].
pub struct Workload {
    pub rec: Arc<Recorder>,
    stop: Arc<AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Workload {
    /// Starts the workers on `rt` (so in its network namespace, if it has one).
    pub fn start(rt: &tokio::runtime::Runtime, c: &aws_sdk_s3::Client) -> Workload {
        let rec = Arc::new(Recorder {
            start: Instant::now(),
            events: Mutex::new(Vec::new()),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let workers = (0..WORKERS)
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
        Workload { rec, stop, workers }
    }

    /// Waits until `n` writes invoked after `since` were acknowledged: the workload runs (and,
    /// after a fault, has recovered) before the next step. Panics after 60 s.
    pub fn wait_for_writes(&self, since: u64, n: usize, what: &str) {
        let deadline = Instant::now() + RECOVERY_DEADLINE;
        loop {
            let acked = self
                .rec
                .events
                .lock()
                .unwrap()
                .iter()
                .filter(|e| is_write(e) && e.seen == Seen::Done && e.invoked > since)
                .count();
            if acked >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no {n} writes acknowledged {what} in {} s",
                RECOVERY_DEADLINE.as_secs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the workers, then reads every key once more (each until it answers, up to 60 s):
    /// the history to check. Answers it with the time the workers stopped.
    pub fn finish(self, rt: &tokio::runtime::Runtime, c: &aws_sdk_s3::Client) -> (Vec<Event>, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let workers = self.workers;
        spawned(rt, async move {
            for w in workers {
                w.await.unwrap();
            }
        });
        let end = self.rec.now();
        let (c, rec) = (c.clone(), self.rec.clone());
        spawned(rt, async move {
            for k in 0..KEYS as u64 {
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    let invoked = rec.now();
                    let seen = read(&c, &key(k)).await;
                    if seen != Seen::Unknown {
                        rec.record(Call::Get { key: key(k) }, invoked, seen);
                        break;
                    }
                    assert!(Instant::now() < deadline, "{} unreadable for 60 s", key(k));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        });
        (self.rec.events(), end)
    }
}

/// A PUT or a DELETE.
pub fn is_write(e: &Event) -> bool {
    matches!(e.call, Call::Put { .. } | Call::Delete { .. })
}

/// Acknowledged operations per second, and the longest stretch without an acknowledged write,
/// over the whole history.
pub fn report(events: &[Event], end: u64) {
    let mut writes: Vec<u64> = events
        .iter()
        .filter(|e| is_write(e) && e.seen == Seen::Done)
        .map(|e| e.returned)
        .collect();
    writes.sort_unstable();
    let mut gaps: Vec<(u64, u64)> = Vec::new();
    let mut last = 0;
    for &t in writes.iter().chain(std::iter::once(&end)) {
        gaps.push((t.saturating_sub(last), last));
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

/// Writes the history of `test` to `<TINYDFS_CHAOS_HISTORY>/<test>.jsonl`, if that variable
/// names a folder, for analysis by hand: one JSON object a line (operation, key, times in
/// seconds, outcome; a value as its writer tag and length).
pub fn dump(test: &str, events: &[Event]) {
    let Some(dir) = std::env::var_os("TINYDFS_CHAOS_HISTORY") else {
        return;
    };
    std::fs::create_dir_all(&dir).unwrap();
    let path = std::path::Path::new(&dir).join(format!("{test}.jsonl"));
    let tag = |v: &[u8]| {
        let end = v.iter().position(|b| *b == b'|').unwrap_or(0);
        format!("{}:{}", String::from_utf8_lossy(&v[..end]), v.len())
    };
    let mut out = String::new();
    for e in events {
        let (op, key, value) = match &e.call {
            Call::Put { key, value } => ("put", key.as_str(), Some(tag(value))),
            Call::Delete { key } => ("delete", key.as_str(), None),
            Call::Get { key } => ("get", key.as_str(), None),
            Call::Head { key } => ("head", key.as_str(), None),
            Call::List => ("list", "", None),
        };
        let seen = match &e.seen {
            Seen::Done => "done".to_string(),
            Seen::Read(None) => "absent".into(),
            Seen::Read(Some(v)) => tag(v),
            Seen::Exists(b) => b.to_string(),
            Seen::Listed(keys) => format!("{} keys", keys.len()),
            Seen::Unknown => "unknown".into(),
        };
        let line = serde_json::json!({
            "op": op,
            "key": key,
            "value": value,
            "invoked": e.invoked as f64 / 1e9,
            "returned": e.returned as f64 / 1e9,
            "seen": seen,
        });
        out.push_str(&format!("{line}\n"));
    }
    std::fs::write(&path, out).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    eprintln!("history written to {}", path.display());
}

/// Runs the checker on `events` and fails on any anomaly.
pub fn assert_linearizable(events: &[Event]) {
    let anomalies = crate::checker::check(events);
    assert!(
        anomalies.is_empty(),
        "{} anomalies:\n{}",
        anomalies.len(),
        anomalies.join("\n")
    );
}
