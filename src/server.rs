//! `tinydfs server`: a complete local cluster under one data folder, each node a child process
//! of this one, supervised until Ctrl-C or SIGTERM (a child that dies is reported, with how it
//! ended and its log, not restarted). Addresses (`ports.rs`), the cluster secret, the S3
//! credentials and, with `--internal-tls`, the internal certificates are chosen once and kept in
//! the data folder.
//!
//! # When the cluster is ready
//!
//! The nodes start in an order scripts can rely on:
//!
//! 1. the masters, then the chunkservers, each waited for until it is up (`ready.rs`: it answers
//!    its health check as its role, and its own process holds its ports); then until every
//!    chunkserver has registered with the master group;
//! 2. the gateway's process, held before it opens any port (see [`wait_for_start_gate`]);
//! 3. `DATA_DIR/cluster.json`, written atomically (a temporary file renamed over it) with every
//!    node's name, role, address, operations address and process id, the gateway's included;
//!    only then is the gateway let go;
//! 4. once the gateway is up on the S3 address (the same test: another program answering there
//!    does not count), the line `tinydfs is running: S3 endpoint URL (region REGION)` on
//!    standard output, followed by the data folder, every node's addresses and the
//!    credentials, and flushed.
//!
//! So whoever finds the S3 port answering, or reads a line starting `tinydfs is running`, finds
//! the complete `cluster.json` of this run. The file's presence alone means nothing: one left by
//! an earlier run in the same folder stays until this run replaces it. When start-up fails (a
//! node exits, for example because another program has its port, or is not up in time), the
//! failed node's last log lines go to standard error, the nodes started are stopped and
//! `tinydfs server` exits non-zero with a one-line reason, without printing the line.

mod ports;
mod ready;

use anyhow::{bail, Context};
use clap::Args;
use ready::{Probe, Starting};
use serde::{Deserialize, Serialize};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tinydfs_proto::client::MasterClient;
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// The data folder of `server`, and of `admin` when given neither `--data-dir` nor `--master`.
pub const DEFAULT_DATA_DIR: &str = "tinydfs-data";
/// How long children get to stop after SIGTERM before they are killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Version of `cluster.json`.
const CLUSTER_FILE_VERSION: u16 = 1;
/// Set in the environment of a node that must wait, before it starts, until its standard input
/// closes: `server` holds the gateway this way until `cluster.json` names it.
const START_GATE_ENV: &str = "TINYDFS_START_GATE";

#[derive(Args)]
pub struct ServerArgs {
    /// Folder for all the cluster's data (created when missing).
    #[arg(long, default_value = DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// Address of the S3 endpoint.
    #[arg(long, default_value = "127.0.0.1:9000")]
    s3_addr: String,
    /// Number of chunkservers.
    #[arg(long, default_value_t = 3)]
    chunkservers: usize,
    /// Number of masters (1, 3 or 5): more than one form a Raft group that fails over.
    #[arg(long, default_value_t = 1)]
    masters: usize,
    /// Chunk size in bytes (default 64 MiB).
    #[arg(long)]
    chunk_size: Option<u64>,
    /// Copies of each chunk (default 3, at most the number of chunkservers).
    #[arg(long)]
    replicas: Option<usize>,
    #[arg(long, default_value = "us-east-1")]
    region: String,
    /// Serve S3 over HTTPS with this PEM certificate chain...
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// ...and this PEM private key.
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// Root domain for virtual-host-style addressing.
    #[arg(long)]
    domain: Option<String>,
    /// HTTPS between the nodes: a CA and a node certificate are made once with openssl in
    /// `DATA_DIR/internal-tls/`, and every internal listener and client uses them.
    #[arg(long)]
    internal_tls: bool,
    /// Chunkserver heartbeat interval in milliseconds.
    #[arg(long)]
    heartbeat_ms: Option<u64>,
    /// Seconds without a heartbeat before a chunkserver is dead.
    #[arg(long)]
    dead_node_timeout_secs: Option<f64>,
    /// Free bytes every chunkserver keeps in reserve.
    #[arg(long)]
    reserve_bytes: Option<u64>,
    /// Master log entries between snapshots.
    #[arg(long)]
    snapshot_every: Option<u64>,
    /// How often the masters apply buckets' lifecycle rules, in milliseconds.
    #[arg(long)]
    lifecycle_interval_ms: Option<u64>,
    /// Length of a lifecycle "day" in milliseconds (shorter for tests only).
    #[arg(long)]
    lifecycle_day_ms: Option<u64>,
    /// Zone labels given to the chunkservers in turn (comma-separated).
    #[arg(long, value_delimiter = ',')]
    zones: Vec<String>,
    /// An extra argument for every master (repeat for several).
    #[arg(long, allow_hyphen_values = true)]
    master_arg: Vec<String>,
    /// An extra argument for every chunkserver (repeat for several).
    #[arg(long, allow_hyphen_values = true)]
    chunkserver_arg: Vec<String>,
    /// An extra argument for the gateway (repeat for several).
    #[arg(long, allow_hyphen_values = true)]
    gateway_arg: Vec<String>,
}

/// A node of the local cluster, as recorded in `cluster.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LocalNode {
    pub name: String,
    pub role: String,
    pub addr: String,
    pub pid: Option<u32>,
    /// The node's read-only operations listener (health, metrics; status page on masters).
    #[serde(default)]
    pub ops_addr: String,
}

/// `cluster.json`: how to reach the local cluster.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClusterFile {
    pub version: u16,
    pub s3_endpoint: String,
    pub masters: Vec<String>,
    pub server_pid: u32,
    pub nodes: Vec<LocalNode>,
    /// The CA of the nodes' internal TLS certificates, when they use internal TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internal_ca: Option<PathBuf>,
}

#[derive(Serialize, Deserialize)]
struct Credentials {
    access_key_id: String,
    secret_access_key: String,
}

fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

/// The cluster secret of a local cluster, created once.
fn cluster_secret(dir: &Path) -> anyhow::Result<String> {
    let path = dir.join("cluster.secret");
    if let Some(s) = crate::read_opt(&path).filter(|s| !s.is_empty()) {
        return Ok(s);
    }
    let s = random_hex(32);
    write_private(&path, &s)?;
    Ok(s)
}

/// S3 credentials: from the environment, else generated once and kept in the data folder.
fn credentials(dir: &Path) -> anyhow::Result<(Credentials, bool)> {
    if let (Ok(a), Ok(s)) = (
        std::env::var("TINYDFS_ACCESS_KEY_ID"),
        std::env::var("TINYDFS_SECRET_ACCESS_KEY"),
    ) {
        return Ok((
            Credentials {
                access_key_id: a,
                secret_access_key: s,
            },
            false,
        ));
    }
    let path = dir.join("credentials.json");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let c: Credentials =
            serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))?;
        return Ok((c, true));
    }
    let c = Credentials {
        access_key_id: format!("TD{}", random_hex(9).to_uppercase()),
        secret_access_key: random_hex(20),
    };
    write_private(&path, &serde_json::to_string_pretty(&c)?)?;
    Ok((c, true))
}

/// Folder of a local cluster's internal TLS material.
const INTERNAL_TLS_DIR: &str = "internal-tls";
/// Life of the generated internal certificates; a local cluster is restarted long before.
const INTERNAL_TLS_DAYS: &str = "3650";

/// The internal TLS files of a local cluster (CA, node certificate, node key), made once with
/// openssl: one EC P-256 certificate for 127.0.0.1 and localhost serves every node.
fn internal_tls_files(dir: &Path) -> anyhow::Result<(PathBuf, PathBuf, PathBuf)> {
    let tls = dir.join(INTERNAL_TLS_DIR);
    let files = |d: &Path| (d.join("ca.pem"), d.join("node.pem"), d.join("node.key"));
    if tls.join("node.key").exists() {
        return Ok(files(&tls));
    }
    let tmp = dir.join(format!("{INTERNAL_TLS_DIR}.tmp"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    let openssl = |args: &[&str]| -> anyhow::Result<()> {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(&tmp)
            .output()
            .context("--internal-tls needs openssl to make the certificates")?;
        if !out.status.success() {
            bail!(
                "openssl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut args = vec!["req", "-x509", "-days", INTERNAL_TLS_DAYS];
    args.extend(ec);
    args.extend(["-subj", "/CN=tinydfs internal CA", "-keyout", "ca.key"]);
    args.extend([
        "-out",
        "ca.pem",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
    ]);
    args.extend(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
    openssl(&args)?;
    let mut args = vec!["req", "-new"];
    args.extend(ec);
    args.extend([
        "-subj",
        "/CN=tinydfs node",
        "-keyout",
        "node.key",
        "-out",
        "node.csr",
    ]);
    openssl(&args)?;
    std::fs::write(
        tmp.join("node.ext"),
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
         extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )?;
    let serial = format!("0x{}", random_hex(16));
    openssl(&[
        "x509",
        "-req",
        "-in",
        "node.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-set_serial",
        &serial,
        "-days",
        INTERNAL_TLS_DAYS,
        "-extfile",
        "node.ext",
        "-out",
        "node.pem",
    ])?;
    for key in ["ca.key", "node.key"] {
        std::fs::set_permissions(tmp.join(key), std::fs::Permissions::from_mode(0o600))?;
    }
    for scratch in ["node.csr", "node.ext"] {
        std::fs::remove_file(tmp.join(scratch))?;
    }
    std::fs::rename(&tmp, &tls)?;
    Ok(files(&tls))
}

struct Spawned {
    name: String,
    child: Child,
}

fn spawn(
    dir: &Path,
    name: &str,
    args: &[String],
    secret: &str,
    log_format: &str,
    creds: Option<&Credentials>,
    gated: bool,
) -> anyhow::Result<Spawned> {
    let exe = std::env::current_exe()?;
    std::fs::create_dir_all(dir.join("logs"))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(ready::log_path(dir, name))?;
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .env("TINYDFS_CLUSTER_SECRET", secret)
        .env("TINYDFS_LOG_FORMAT", log_format)
        .env("TINYDFS_PARENT_PID", std::process::id().to_string())
        .stdout(log.try_clone()?)
        .stderr(log);
    if gated {
        // Held until this end of the pipe closes (`Child::stdin` dropped).
        cmd.env(START_GATE_ENV, "1")
            .stdin(std::process::Stdio::piped());
    } else {
        cmd.stdin(std::process::Stdio::null());
    }
    if let Some(c) = creds {
        cmd.env("TINYDFS_ACCESS_KEY_ID", &c.access_key_id)
            .env("TINYDFS_SECRET_ACCESS_KEY", &c.secret_access_key);
    }
    let child = cmd.spawn().with_context(|| format!("starting {name}"))?;
    Ok(Spawned {
        name: name.to_string(),
        child,
    })
}

/// Waits until `server` lets this node start (its standard input closes), if it was started
/// held ([`START_GATE_ENV`] set to `1` by a `server` parent, `TINYDFS_PARENT_PID`); returns at
/// once otherwise, so that the variable leaking into an operator's environment cannot hold a
/// node started by hand. Should `server` die meanwhile, the pipe closes as well, and the
/// parent-death signal set before this ends the node.
pub fn wait_for_start_gate() {
    let held = std::env::var_os(START_GATE_ENV).is_some_and(|v| v == "1")
        && std::env::var_os("TINYDFS_PARENT_PID").is_some();
    if held {
        tracing::info!("held by the start gate until `server` has written cluster.json");
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
    }
}

/// Writes `cluster.json` atomically: readers find the previous file or the new one, whole.
fn write_cluster_file(dir: &Path, file: &ClusterFile) -> anyhow::Result<()> {
    let tmp = dir.join("cluster.json.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(file)?)?;
    std::fs::rename(tmp, dir.join("cluster.json"))?;
    Ok(())
}

/// Runs the local cluster until Ctrl-C or SIGTERM, in the start-up order of the module doc.
pub async fn run(a: ServerArgs, log_format: &str) -> anyhow::Result<()> {
    if a.chunkservers == 0 {
        bail!("--chunkservers must be at least 1");
    }
    if a.masters == 0 || a.masters.is_multiple_of(2) {
        bail!("--masters must be odd (1, 3 or 5): a Raft group needs a majority");
    }
    std::fs::create_dir_all(&a.data_dir)
        .with_context(|| format!("creating {}", a.data_dir.display()))?;
    let dir = a.data_dir.canonicalize()?;
    // One `server` per folder, taken before anything in it is read or written (ports, keys,
    // cluster.json), held until it exits: a second one exits at once naming the holder. Each
    // node locks its own folder below as well.
    let _folder = tinydfs_proto::lock::lock_dir(&dir).map_err(|e| anyhow::anyhow!("{e}"))?;
    let secret = cluster_secret(&dir)?;
    let (creds, generated) = credentials(&dir)?;
    let host = "127.0.0.1";
    let master_addrs = ports::master_addresses(&dir, a.masters, host)?;
    let mut ports = ports::Ports::new(
        host,
        master_addrs.iter().cloned().chain([
            a.s3_addr.clone(),
            a.s3_addr.replace("localhost", "127.0.0.1"),
        ]),
    );
    let names: Vec<String> = (1..=a.masters)
        .map(|i| format!("master-{i}"))
        .chain((1..=a.chunkservers).map(|i| format!("chunkserver-{i}")))
        .chain(["gateway-1".to_string()])
        .collect();
    let ops_addrs = ports::ops_addresses(&dir, &names, &mut ports)?;
    let ops_of = |name: &str| ops_addrs.get(name).cloned().unwrap_or_default();
    let master_list = master_addrs.join(",");
    let initial: Vec<String> = master_addrs
        .iter()
        .enumerate()
        .map(|(i, addr)| format!("{}={addr}", i + 1))
        .collect();
    // Internal TLS: the same flags for every master and chunkserver, the CA for the gateway
    // and for this process's own master client.
    let internal = if a.internal_tls {
        let (ca, cert, key) = internal_tls_files(&dir)?;
        tinydfs_proto::tls::use_internal_tls(&ca)?;
        Some((ca, cert, key))
    } else {
        None
    };
    let ca = internal.as_ref().map(|(ca, _, _)| ca.as_path());
    let node_tls: Vec<String> = match &internal {
        Some((ca, cert, key)) => vec![
            "--internal-tls-cert".into(),
            cert.display().to_string(),
            "--internal-tls-key".into(),
            key.display().to_string(),
            "--internal-ca".into(),
            ca.display().to_string(),
        ],
        None => Vec::new(),
    };
    let scheme = if a.tls_cert.is_some() {
        "https"
    } else {
        "http"
    };
    let endpoint = format!("{scheme}://{}", a.s3_addr);
    let mut launch = Launch {
        dir: &dir,
        secret: &secret,
        log_format,
        ca,
        children: Vec::new(),
        nodes: Vec::new(),
    };
    let result = async {
        let replicas = a
            .replicas
            .unwrap_or(tinydfs_proto::DEFAULT_REPLICAS)
            .min(a.chunkservers);
        for (i, addr) in master_addrs.iter().enumerate() {
            let name = format!("master-{}", i + 1);
            let ops_addr = ops_of(&name);
            let mut args = vec![
                "master".to_string(),
                "--id".into(),
                (i + 1).to_string(),
                "--listen".into(),
                addr.clone(),
                "--ops-listen".into(),
                ops_addr.clone(),
                "--data-dir".into(),
                dir.join(&name).display().to_string(),
                "--initial-members".into(),
                initial.join(","),
                "--replicas".into(),
                replicas.to_string(),
            ];
            if let Some(t) = a.dead_node_timeout_secs {
                args.extend(["--dead-node-timeout-secs".into(), t.to_string()]);
            }
            if let Some(r) = a.reserve_bytes {
                args.extend(["--reserve-bytes".into(), r.to_string()]);
            }
            if let Some(n) = a.snapshot_every {
                args.extend(["--snapshot-every".into(), n.to_string()]);
            }
            if let Some(n) = a.lifecycle_interval_ms {
                args.extend(["--lifecycle-interval-ms".into(), n.to_string()]);
            }
            if let Some(n) = a.lifecycle_day_ms {
                args.extend(["--lifecycle-day-ms".into(), n.to_string()]);
            }
            args.extend(node_tls.iter().cloned());
            args.extend(a.master_arg.iter().cloned());
            let node = LocalNode {
                name,
                role: "master".into(),
                addr: addr.clone(),
                pid: None,
                ops_addr,
            };
            launch.start(node, &args).await?;
        }
        for i in 1..=a.chunkservers {
            let addr = ports.take()?;
            let name = format!("chunkserver-{i}");
            let ops_addr = ops_of(&name);
            let mut args = vec![
                "chunkserver".to_string(),
                "--listen".into(),
                addr.clone(),
                "--ops-listen".into(),
                ops_addr.clone(),
                "--data-dir".into(),
                dir.join(&name).display().to_string(),
                "--masters".into(),
                master_list.clone(),
            ];
            if let Some(h) = a.heartbeat_ms {
                args.extend(["--heartbeat-ms".into(), h.to_string()]);
            }
            if !a.zones.is_empty() {
                let zone = &a.zones[(i - 1) % a.zones.len()];
                args.extend(["--zone".into(), zone.clone()]);
            }
            args.extend(node_tls.iter().cloned());
            args.extend(a.chunkserver_arg.iter().cloned());
            let node = LocalNode {
                name,
                role: "chunkserver".into(),
                addr,
                pid: None,
                ops_addr,
            };
            launch.start(node, &args).await?;
        }
        wait_registered(&master_addrs, &secret, a.chunkservers)
            .await
            .map_err(|e| anyhow::anyhow!("{e:#}; logs are in {}", dir.join("logs").display()))?;
        let gateway_ops = ops_of("gateway-1");
        let mut args = vec![
            "gateway".to_string(),
            "--listen".into(),
            a.s3_addr.clone(),
            "--ops-listen".into(),
            gateway_ops.clone(),
            "--masters".into(),
            master_list.clone(),
            "--region".into(),
            a.region.clone(),
            "--replicas".into(),
            replicas.to_string(),
            "--min-replicas".into(),
            tinydfs_proto::DEFAULT_MIN_REPLICAS
                .min(replicas)
                .to_string(),
        ];
        if let Some(c) = a.chunk_size {
            args.extend(["--chunk-size".into(), c.to_string()]);
        }
        if let (Some(c), Some(k)) = (&a.tls_cert, &a.tls_key) {
            args.extend([
                "--tls-cert".into(),
                c.display().to_string(),
                "--tls-key".into(),
                k.display().to_string(),
            ]);
        }
        if let Some(ca) = ca {
            args.extend(["--internal-ca".into(), ca.display().to_string()]);
        }
        args.extend(a.gateway_arg.iter().cloned());
        if let Some(d) = &a.domain {
            args.extend(["--domain".into(), d.clone()]);
        }
        let mut g = spawn(
            &dir,
            "gateway-1",
            &args,
            &secret,
            log_format,
            Some(&creds),
            true,
        )?;
        let gate = g.child.stdin.take();
        launch.nodes.push(LocalNode {
            name: g.name.clone(),
            role: "gateway".into(),
            addr: a.s3_addr.clone(),
            pid: g.child.id(),
            ops_addr: gateway_ops.clone(),
        });
        launch.children.push(g);
        write_cluster_file(
            &dir,
            &ClusterFile {
                version: CLUSTER_FILE_VERSION,
                s3_endpoint: endpoint.clone(),
                masters: master_addrs.clone(),
                server_pid: std::process::id(),
                nodes: launch.nodes.clone(),
                internal_ca: ca.map(Path::to_path_buf),
            },
        )?;
        drop(gate);
        let g = launch
            .children
            .last_mut()
            .context("the gateway was just started")?;
        let log = ready::log_path(&dir, "gateway-1");
        let gateway = Starting {
            name: "gateway-1",
            addr: &a.s3_addr,
            ops_addr: &gateway_ops,
            // An HTTPS endpoint's certificate need not be one this process can verify.
            probe: if a.tls_cert.is_none() {
                Probe::Health {
                    role: "gateway",
                    ca: None,
                }
            } else {
                Probe::Connect
            },
            log: &log,
        };
        ready::wait_up(&mut g.child, &gateway).await
    }
    .await;
    if let Err(e) = result {
        stop_all(launch.children).await;
        return Err(e);
    }
    print_banner(&a, &dir, &endpoint, &launch.nodes, ca, &creds, generated);
    supervise(launch.children, &dir).await;
    Ok(())
}

/// What starting a node takes, and the nodes started so far (all stopped if the start fails).
struct Launch<'a> {
    dir: &'a Path,
    secret: &'a str,
    log_format: &'a str,
    /// The CA of the internal certificates, with `--internal-tls`.
    ca: Option<&'a Path>,
    children: Vec<Spawned>,
    /// The nodes that are up, for `cluster.json`.
    nodes: Vec<LocalNode>,
}

impl Launch<'_> {
    /// Starts a master or a chunkserver and waits until it is up ([`ready`]); its process is
    /// among `children` from the start, so that a failed start stops it too.
    async fn start(&mut self, mut node: LocalNode, args: &[String]) -> anyhow::Result<()> {
        let spawned = spawn(
            self.dir,
            &node.name,
            args,
            self.secret,
            self.log_format,
            None,
            false,
        )?;
        node.pid = spawned.child.id();
        self.children.push(spawned);
        let child = &mut self
            .children
            .last_mut()
            .context("the node was just started")?
            .child;
        let log = ready::log_path(self.dir, &node.name);
        let starting = Starting {
            name: &node.name,
            addr: &node.addr,
            ops_addr: &node.ops_addr,
            probe: Probe::Health {
                role: &node.role,
                ca: self.ca,
            },
            log: &log,
        };
        ready::wait_up(child, &starting).await?;
        self.nodes.push(node);
        Ok(())
    }
}

/// The lines that say the cluster is up (module doc), flushed: the endpoint, every node's
/// addresses (each answers `tinydfs health`), the credentials and commands to paste.
fn print_banner(
    a: &ServerArgs,
    dir: &Path,
    endpoint: &str,
    nodes: &[LocalNode],
    ca: Option<&Path>,
    creds: &Credentials,
    generated: bool,
) {
    let count = |role: &str| nodes.iter().filter(|n| n.role == role).count() as u64;
    println!(
        "tinydfs is running: S3 endpoint {endpoint} (region {})",
        a.region
    );
    println!(
        "  data folder: {}  (logs in {}/logs)",
        dir.display(),
        dir.display()
    );
    println!(
        "  nodes: {}, {}, {}",
        crate::plural(count("master"), "master"),
        crate::plural(count("chunkserver"), "chunkserver"),
        crate::plural(count("gateway"), "gateway")
    );
    let width = nodes.iter().map(|n| n.addr.len()).max().unwrap_or(0);
    for n in nodes {
        println!(
            "    {:<15} {:<width$}  operations {}",
            n.name, n.addr, n.ops_addr
        );
    }
    if let Some(m) = nodes.iter().find(|n| n.role == "master") {
        println!("  status page: http://{}/", m.ops_addr);
    }
    println!("  metrics: http://ADDRESS/metrics at every operations address above");
    if let Some(ca) = ca {
        println!(
            "  internal TLS: nodes verify each other against {} (health checks of internal \
             addresses: --internal-ca with it)",
            ca.display()
        );
    }
    if generated {
        println!("  access key id:     {}", creds.access_key_id);
        println!("  secret access key: {}", creds.secret_access_key);
        println!(
            "  (generated once, kept in {})",
            dir.join("credentials.json").display()
        );
    } else {
        println!("  credentials: from TINYDFS_ACCESS_KEY_ID / TINYDFS_SECRET_ACCESS_KEY");
    }
    println!("Try:");
    println!(
        "  AWS_ACCESS_KEY_ID={} AWS_SECRET_ACCESS_KEY={} AWS_DEFAULT_REGION={} aws --endpoint-url {endpoint} s3 mb s3://my-bucket",
        creds.access_key_id,
        if generated { creds.secret_access_key.as_str() } else { "$TINYDFS_SECRET_ACCESS_KEY" },
        a.region
    );
    let exe = std::env::current_exe()
        .map(|p| shell_word(&p.display().to_string()))
        .unwrap_or_else(|_| "tinydfs".into());
    println!(
        "  {exe} admin status --data-dir {}",
        shell_word(&dir.display().to_string())
    );
    if a.tls_cert.is_none() {
        println!("  {exe} health {}", a.s3_addr);
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
}

/// `word` as the shell reads it back: quoted when it holds anything but plain path characters.
fn shell_word(word: &str) -> String {
    let plain = word
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+:=@,".contains(c));
    if plain && !word.is_empty() {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

async fn wait_registered(masters: &[String], secret: &str, n: usize) -> anyhow::Result<()> {
    let client = MasterClient::new(masters.to_vec(), secret.to_string());
    let deadline = tokio::time::Instant::now() + ready::STARTUP_TIMEOUT;
    loop {
        if let Ok(s) = client.status().await {
            let alive = s
                .nodes
                .iter()
                .filter(|n| n.role == "chunkserver" && n.state == "alive")
                .count();
            if alive >= n {
                return Ok(());
            }
        }
        if tokio::time::Instant::now() > deadline {
            bail!("chunkservers did not register with the master");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn signal(pid: Option<u32>, sig: nix::sys::signal::Signal) {
    if let Some(pid) = pid {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
    }
}

async fn stop_all(children: Vec<Spawned>) {
    for c in &children {
        signal(c.child.id(), nix::sys::signal::Signal::SIGTERM);
    }
    for mut c in children {
        match tokio::time::timeout(STOP_GRACE, c.child.wait()).await {
            Ok(_) => {}
            Err(_) => {
                eprintln!("{} did not stop in time; killing it", c.name);
                let _ = c.child.kill().await;
            }
        }
    }
}

/// Waits for Ctrl-C or SIGTERM, reporting (never restarting) children that exit meanwhile.
async fn supervise(children: Vec<Spawned>, dir: &Path) {
    let (tx, mut rx) = mpsc::channel::<(String, String)>(children.len().max(1));
    let mut pids = Vec::new();
    let mut waiters = Vec::new();
    for mut c in children {
        pids.push((c.name.clone(), c.child.id()));
        let tx = tx.clone();
        waiters.push(tokio::spawn(async move {
            let how = match c.child.wait().await {
                Ok(status) => ready::describe_exit(&status),
                Err(e) => format!("can no longer be watched ({e})"),
            };
            let _ = tx.send((c.name.clone(), how)).await;
        }));
    }
    drop(tx);
    let stop = crate::shutdown_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            Some((name, how)) = rx.recv() => {
                eprintln!(
                    "tinydfs: {name} {how}; it is not restarted (log: {})",
                    ready::log_path(dir, &name).display()
                );
            }
        }
    }
    for (_, pid) in &pids {
        signal(*pid, nix::sys::signal::Signal::SIGTERM);
    }
    let all = futures_join(waiters);
    if tokio::time::timeout(STOP_GRACE, all).await.is_err() {
        for (name, pid) in &pids {
            eprintln!("{name} did not stop in time; killing it");
            signal(*pid, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

async fn futures_join(handles: Vec<tokio::task::JoinHandle<()>>) {
    for h in handles {
        let _ = h.await;
    }
}
