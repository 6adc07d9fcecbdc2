//! The `tinydfs` binary: every role of a cluster, and the tools to run one.
//!
//! - `master`, `chunkserver`, `gateway`: run one role (flags, or a TOML config file with flags
//!   overriding it).
//! - `server`: a complete local cluster under one data folder, each node its own child process.
//! - `health ADDR`: exit 0 when a node answers at ADDR, any of its listeners (container health
//!   checks).
//! - `admin ...`: status, fsck, decommission, rebalance, backup, keys, master membership.
//! - `bench`: measures an S3 endpoint.
//!
//! Files: `main.rs` (command line, role configurations), `server.rs` (the local cluster and its
//! readiness contract; `server/` its parts), `health.rs`, `admin/` (one file per admin command
//! family), `bench.rs`.

mod admin;
mod bench;
mod health;
mod server;

/// jemalloc rather than glibc's malloc: the master's state lives across the runtime's threads,
/// and glibc keeps what each thread's arena frees (about 80 bytes per object of a million-object
/// namespace, docs/BENCHMARKS.md); jemalloc gives unused pages back after a few seconds.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use std::path::{Path, PathBuf};
use tinydfs_chunkserver::ChunkserverConfig;
use tinydfs_gateway::GatewayConfig;
use tinydfs_master::MasterConfig;

#[derive(Parser)]
#[command(
    name = "tinydfs",
    version,
    about = "A distributed object store that speaks S3"
)]
struct Cli {
    /// Log format: `text` for people, `json` for machines.
    #[arg(
        long,
        global = true,
        default_value = "text",
        env = "TINYDFS_LOG_FORMAT"
    )]
    log_format: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a master.
    Master(MasterArgs),
    /// Run a chunkserver.
    Chunkserver(ChunkserverArgs),
    /// Run an S3 gateway.
    Gateway(GatewayArgs),
    /// Run a complete local cluster (1 master, N chunkservers, 1 gateway) as child processes.
    Server(server::ServerArgs),
    /// Exit 0 when a tinydfs node answers its health check at ADDR (host:port, or a URL
    /// `server` prints); any of its listeners.
    Health {
        addr: String,
        /// Seconds to wait for an answer.
        #[arg(long, default_value_t = 3.0)]
        timeout: f64,
        /// Ask over HTTPS, trusting only the CA certificates in this PEM file (a node with
        /// internal TLS; plain `http://ADDR` still asks over HTTP).
        #[arg(long)]
        internal_ca: Option<PathBuf>,
    },
    /// Measure an S3 endpoint, a local tinydfs cluster and/or a local SeaweedFS cluster.
    Bench(bench::BenchArgs),
    /// Administer a running cluster.
    Admin {
        #[command(subcommand)]
        cmd: admin::AdminCmd,
    },
}

/// Where the cluster secret comes from (every role needs it).
#[derive(Args, Clone)]
struct SecretArgs {
    /// The shared cluster secret.
    #[arg(long, env = "TINYDFS_CLUSTER_SECRET", hide_env_values = true)]
    cluster_secret: Option<String>,
    /// A file holding the cluster secret.
    #[arg(long)]
    cluster_secret_file: Option<PathBuf>,
}

impl SecretArgs {
    fn resolve(&self, from_config: &str) -> anyhow::Result<String> {
        if let Some(s) = &self.cluster_secret {
            return Ok(s.clone());
        }
        if let Some(f) = &self.cluster_secret_file {
            let s =
                std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
            return Ok(s.trim().to_string());
        }
        if !from_config.is_empty() {
            return Ok(from_config.to_string());
        }
        bail!("no cluster secret: set TINYDFS_CLUSTER_SECRET, --cluster-secret or --cluster-secret-file")
    }
}

/// Internal TLS (every role; a gateway takes `--internal-ca` only).
#[derive(Args, Clone)]
struct InternalTlsArgs {
    /// Serve the internal listener over HTTPS with this PEM certificate chain...
    #[arg(long)]
    internal_tls_cert: Option<PathBuf>,
    /// ...and this PEM private key.
    #[arg(long)]
    internal_tls_key: Option<PathBuf>,
    /// Speak HTTPS to other nodes, trusting only the CA certificates in this PEM file.
    #[arg(long)]
    internal_ca: Option<PathBuf>,
}

impl InternalTlsArgs {
    fn apply(self, c: &mut tinydfs_proto::tls::InternalTls) {
        set(&mut c.internal_tls_cert, self.internal_tls_cert.map(Some));
        set(&mut c.internal_tls_key, self.internal_tls_key.map(Some));
        set(&mut c.internal_ca, self.internal_ca.map(Some));
    }
}

#[derive(Args)]
struct MasterArgs {
    /// TOML file with the master's configuration; flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Raft id of this master.
    #[arg(long)]
    id: Option<u64>,
    /// Internal listener address.
    #[arg(long)]
    listen: Option<String>,
    /// Address others reach this master at.
    #[arg(long)]
    advertise: Option<String>,
    /// Read-only operations listener address (health, metrics, status page); off if not given.
    #[arg(long, value_name = "ADDR")]
    ops_listen: Option<String>,
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Seconds of silence after which a chunkserver is dead.
    #[arg(long)]
    dead_node_timeout_secs: Option<f64>,
    /// Free bytes a chunkserver must keep; placement skips it below that.
    #[arg(long)]
    reserve_bytes: Option<u64>,
    #[arg(long)]
    election_timeout_min_ms: Option<u64>,
    #[arg(long)]
    election_timeout_max_ms: Option<u64>,
    #[arg(long)]
    raft_heartbeat_ms: Option<u64>,
    /// Longest wait for a metadata write to commit, or a read to be confirmed by a quorum,
    /// before the caller is told to retry (3000).
    #[arg(long)]
    propose_timeout_ms: Option<u64>,
    /// Writes (or log entries) between snapshots (checkpoints), at least: the interval also
    /// grows to half the number of records.
    #[arg(long)]
    snapshot_every: Option<u64>,
    /// First members of a new group: `id=host:port,...` (this master included).
    #[arg(long, value_delimiter = ',')]
    initial_members: Option<Vec<String>>,
    /// Start empty and wait to be added to a running group with `tinydfs admin master add`.
    #[arg(long)]
    join: bool,
    /// Copies every chunk should have (the repair worker restores it).
    #[arg(long)]
    replicas: Option<usize>,
    /// Chunks the repair worker copies at once.
    #[arg(long)]
    repair_concurrency: Option<usize>,
    /// How often the repair worker looks for under-replicated chunks, in milliseconds.
    #[arg(long)]
    repair_interval_ms: Option<u64>,
    /// How often the lifecycle worker applies buckets' lifecycle rules, in milliseconds.
    #[arg(long)]
    lifecycle_interval_ms: Option<u64>,
    /// Length of a lifecycle "day" in milliseconds (default 86400000; shorter for tests only).
    #[arg(long)]
    lifecycle_day_ms: Option<u64>,
    /// A rebalance ends once chunkservers' used fractions differ by less than this (0.05).
    #[arg(long)]
    rebalance_threshold: Option<f64>,
    /// Act as a release that knows feature levels up to N only (rolling-upgrade tests).
    #[arg(long, hide = true, env = "TINYDFS_MAX_FEATURE_LEVEL", value_name = "N")]
    max_feature_level: Option<u32>,
    /// Restore this backup (`tinydfs admin backup`) into a new master group; needs an empty
    /// data folder. Chunkservers of the backed-up cluster rejoin with their data.
    #[arg(long)]
    restore: Option<PathBuf>,
    #[command(flatten)]
    secret: SecretArgs,
    #[command(flatten)]
    internal_tls: InternalTlsArgs,
}

#[derive(Args)]
struct ChunkserverArgs {
    /// TOML file with the chunkserver's configuration; flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long)]
    listen: Option<String>,
    #[arg(long)]
    advertise: Option<String>,
    /// Read-only operations listener address (health, metrics); off if not given.
    #[arg(long, value_name = "ADDR")]
    ops_listen: Option<String>,
    /// Folder for the node identity, and for chunks unless `--disk` is given.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// A data folder (disk) for chunks; repeat it or comma-separate several.
    #[arg(long = "disk", value_name = "PATH", value_delimiter = ',')]
    disks: Option<Vec<PathBuf>>,
    /// Bytes of chunk data to accept and report as capacity (0: the disks' size).
    #[arg(long, value_name = "BYTES")]
    capacity: Option<u64>,
    /// Bytes per second the scrubber re-reads chunks at (0 disables it).
    #[arg(long = "scrub-rate", value_name = "BYTES_PER_SEC")]
    scrub_rate: Option<u64>,
    /// Seconds between the end of a scrub pass and the next.
    #[arg(long = "scrub-interval", value_name = "SECS")]
    scrub_interval: Option<u64>,
    /// Chunks of at most this many bytes are packed into append-only files with group commit
    /// (0: every chunk its own file; at most 16 MiB).
    #[arg(long = "pack-max", value_name = "BYTES")]
    pack_max: Option<u64>,
    /// Seconds between two looks for pack files worth compacting.
    #[arg(long = "compact-interval", value_name = "SECS")]
    compact_interval: Option<u64>,
    /// Failure-domain label (rack, room) for replica placement.
    #[arg(long)]
    zone: Option<String>,
    /// Master addresses, comma-separated.
    #[arg(long, value_delimiter = ',')]
    masters: Option<Vec<String>>,
    #[arg(long)]
    heartbeat_ms: Option<u64>,
    /// Register as a new node although the disks hold chunks and `identity.json` is missing:
    /// the cluster then judges those chunks as a new node's (without it, such a start is
    /// refused).
    #[arg(long)]
    accept_new_identity: bool,
    /// Chunk requests served at once; more are answered 503 SlowDown (256).
    #[arg(long)]
    max_requests: Option<usize>,
    /// Milliseconds the next chunkserver of a write pipeline may make no progress before it is
    /// dropped from the write (2000; the gateways' value should match).
    #[arg(long, value_name = "MS")]
    pipeline_stall_ms: Option<u64>,
    #[command(flatten)]
    secret: SecretArgs,
    #[command(flatten)]
    internal_tls: InternalTlsArgs,
}

#[derive(Args)]
struct GatewayArgs {
    /// TOML file with the gateway's configuration; flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// S3 listener address.
    #[arg(long, alias = "s3-addr")]
    listen: Option<String>,
    /// Read-only operations listener address (health, metrics); off if not given.
    #[arg(long, value_name = "ADDR")]
    ops_listen: Option<String>,
    /// Master addresses, comma-separated.
    #[arg(long, value_delimiter = ',')]
    masters: Option<Vec<String>>,
    #[arg(long)]
    region: Option<String>,
    /// Chunk size in bytes.
    #[arg(long)]
    chunk_size: Option<u64>,
    #[arg(long)]
    replicas: Option<usize>,
    #[arg(long)]
    min_replicas: Option<usize>,
    /// Serve S3 over HTTPS with this PEM certificate chain (leaf first, then intermediates)...
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// ...and this PEM private key.
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// Seconds between checks of the certificate files for changes (default 10; 0: on SIGHUP
    /// only); a changed certificate is served to new connections without a restart.
    #[arg(long)]
    tls_reload_secs: Option<f64>,
    /// Root domain for virtual-host-style requests (`bucket.DOMAIN`).
    #[arg(long)]
    domain: Option<String>,
    /// Seconds between new upload leases (default 300); see docs/DECISIONS.md.
    #[arg(long)]
    lease_rotate_secs: Option<f64>,
    /// Life of an upload lease in seconds (default 60).
    #[arg(long)]
    lease_ttl_secs: Option<f64>,
    /// How often access keys are reloaded from the masters, in milliseconds (default 2000).
    #[arg(long)]
    key_refresh_ms: Option<u64>,
    /// Most S3 requests served at once; more are answered 503 SlowDown (default 1024).
    #[arg(long)]
    max_requests: Option<usize>,
    /// Time a client has to send a request head or finish a TLS handshake, in milliseconds;
    /// also the longest idle keep-alive (default 30000).
    #[arg(long)]
    header_timeout_ms: Option<u64>,
    /// Longest silence inside a request body before 400 RequestTimeout, and longest a client
    /// may read none of its response, in milliseconds (default 30000).
    #[arg(long)]
    body_timeout_ms: Option<u64>,
    /// The chunkservers' `--pipeline-stall-ms` (default 2000): how long this gateway waits on
    /// a pipeline head is derived from it.
    #[arg(long, value_name = "MS")]
    pipeline_stall_ms: Option<u64>,
    #[command(flatten)]
    secret: SecretArgs,
    #[command(flatten)]
    internal_tls: InternalTlsArgs,
}

fn load<T: serde::de::DeserializeOwned + Default>(path: &Option<PathBuf>) -> anyhow::Result<T> {
    match path {
        None => Ok(T::default()),
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            toml::from_str(&text).with_context(|| format!("parsing {}", p.display()))
        }
    }
}

fn set<T>(field: &mut T, flag: Option<T>) {
    if let Some(v) = flag {
        *field = v;
    }
}

fn master_config(a: MasterArgs) -> anyhow::Result<MasterConfig> {
    let mut c: MasterConfig = load(&a.config)?;
    set(&mut c.id, a.id);
    set(&mut c.listen, a.listen);
    set(&mut c.advertise, a.advertise);
    set(&mut c.ops_listen, a.ops_listen);
    set(&mut c.data_dir, a.data_dir);
    set(&mut c.dead_node_timeout_secs, a.dead_node_timeout_secs);
    set(&mut c.reserve_bytes, a.reserve_bytes);
    set(&mut c.election_timeout_min_ms, a.election_timeout_min_ms);
    set(&mut c.election_timeout_max_ms, a.election_timeout_max_ms);
    set(&mut c.raft_heartbeat_ms, a.raft_heartbeat_ms);
    set(&mut c.propose_timeout_ms, a.propose_timeout_ms);
    set(&mut c.snapshot_every, a.snapshot_every);
    set(&mut c.initial_members, a.initial_members);
    c.join |= a.join;
    set(&mut c.replicas, a.replicas);
    set(&mut c.repair_concurrency, a.repair_concurrency);
    set(&mut c.repair_interval_ms, a.repair_interval_ms);
    set(&mut c.lifecycle_interval_ms, a.lifecycle_interval_ms);
    set(&mut c.lifecycle_day_ms, a.lifecycle_day_ms);
    set(&mut c.rebalance_threshold, a.rebalance_threshold);
    if a.max_feature_level.is_some() {
        c.max_feature_level = a.max_feature_level;
    }
    set(&mut c.restore, a.restore.map(Some));
    c.secret = a.secret.resolve(&c.secret)?;
    a.internal_tls.apply(&mut c.internal_tls);
    Ok(c)
}

fn chunkserver_config(a: ChunkserverArgs) -> anyhow::Result<ChunkserverConfig> {
    let mut c: ChunkserverConfig = load(&a.config)?;
    set(&mut c.listen, a.listen);
    set(&mut c.advertise, a.advertise);
    set(&mut c.ops_listen, a.ops_listen);
    set(&mut c.data_dir, a.data_dir);
    set(&mut c.disks, a.disks);
    set(&mut c.capacity, a.capacity);
    set(&mut c.scrub_bytes_per_sec, a.scrub_rate);
    set(&mut c.scrub_interval_secs, a.scrub_interval);
    set(&mut c.pack_max, a.pack_max);
    set(&mut c.compact_interval_secs, a.compact_interval);
    set(&mut c.zone, a.zone);
    set(&mut c.masters, a.masters);
    set(&mut c.heartbeat_ms, a.heartbeat_ms);
    c.accept_new_identity |= a.accept_new_identity;
    set(&mut c.max_requests, a.max_requests);
    set(&mut c.pipeline_stall_ms, a.pipeline_stall_ms);
    c.secret = a.secret.resolve(&c.secret)?;
    a.internal_tls.apply(&mut c.internal_tls);
    Ok(c)
}

fn gateway_config(a: GatewayArgs) -> anyhow::Result<GatewayConfig> {
    let mut c: GatewayConfig = load(&a.config)?;
    set(&mut c.listen, a.listen);
    set(&mut c.ops_listen, a.ops_listen);
    set(&mut c.masters, a.masters);
    set(&mut c.region, a.region);
    set(&mut c.chunk_size, a.chunk_size);
    set(&mut c.replicas, a.replicas);
    set(&mut c.min_replicas, a.min_replicas);
    set(&mut c.domain, a.domain.map(Some));
    set(&mut c.lease_rotate_secs, a.lease_rotate_secs);
    set(&mut c.lease_ttl_secs, a.lease_ttl_secs);
    set(&mut c.key_refresh_ms, a.key_refresh_ms);
    set(&mut c.max_requests, a.max_requests);
    set(&mut c.header_timeout_ms, a.header_timeout_ms);
    set(&mut c.body_timeout_ms, a.body_timeout_ms);
    set(&mut c.pipeline_stall_ms, a.pipeline_stall_ms);
    set(&mut c.tls_cert, a.tls_cert.map(Some));
    set(&mut c.tls_key, a.tls_key.map(Some));
    set(&mut c.tls_reload_secs, a.tls_reload_secs);
    c.secret = a.secret.resolve(&c.secret)?;
    a.internal_tls.apply(&mut c.internal_tls);
    if let Ok(v) = std::env::var("TINYDFS_ACCESS_KEY_ID") {
        c.access_key_id = v;
    }
    if let Ok(v) = std::env::var("TINYDFS_SECRET_ACCESS_KEY") {
        c.secret_access_key = v;
    }
    Ok(c)
}

/// Logs go to standard error, in colour only when it is a terminal (and `NO_COLOR` is unset):
/// `server` sends each node's to a file, which must stay plain text.
fn init_logging(format: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("TINYDFS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal() && !no_color)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}

/// A node started by `server` dies with it: the parent-death signal ends it if `server` is killed.
fn follow_parent() {
    if let Ok(ppid) = std::env::var("TINYDFS_PARENT_PID") {
        let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM);
        if nix::unistd::getppid().as_raw().to_string() != ppid {
            std::process::exit(1); // the parent is already gone
        }
    }
}

fn main() {
    let cli = Cli::parse();
    init_logging(&cli.log_format);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tinydfs: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let result = rt.block_on(async move {
        match cli.cmd {
            Cmd::Master(a) => {
                follow_parent();
                server::wait_for_start_gate();
                tinydfs_master::run(master_config(a)?, shutdown_signal()).await
            }
            Cmd::Chunkserver(a) => {
                follow_parent();
                server::wait_for_start_gate();
                tinydfs_chunkserver::run(chunkserver_config(a)?, shutdown_signal()).await
            }
            Cmd::Gateway(a) => {
                follow_parent();
                server::wait_for_start_gate();
                tinydfs_gateway::run(gateway_config(a)?, shutdown_signal()).await
            }
            Cmd::Server(a) => server::run(a, &cli.log_format).await,
            Cmd::Health {
                addr,
                timeout,
                internal_ca,
            } => health::command(&addr, timeout, internal_ca.as_deref()).await,
            Cmd::Bench(a) => bench::bench(a).await,
            Cmd::Admin { cmd } => admin::run(cmd).await,
        }
    });
    if let Err(e) = result {
        eprintln!("tinydfs: {e:#}");
        std::process::exit(1);
    }
}

/// Reads a file if it exists.
fn read_opt(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// `n` things, in the singular for one: `plural(1, "chunkserver")` is "1 chunkserver".
fn plural(n: u64, thing: &str) -> String {
    if n == 1 {
        format!("1 {thing}")
    } else {
        format!("{n} {thing}s")
    }
}

/// A byte count for people, in binary units: "512 B", "1.5 KiB", "12.3 GiB".
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::{human_bytes, plural};

    #[test]
    fn counts_and_sizes_read_as_words() {
        assert_eq!(plural(1, "chunkserver"), "1 chunkserver");
        assert_eq!(plural(3, "chunkserver"), "3 chunkservers");
        assert_eq!(plural(0, "bucket"), "0 buckets");
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1024), "1.0 KiB");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(13_207_024_435), "12.3 GiB");
        assert_eq!(human_bytes(5 << 40), "5.0 TiB");
        assert_eq!(human_bytes(u64::MAX), "16384.0 PiB");
    }
}
