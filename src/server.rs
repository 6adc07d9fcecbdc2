//! `tinydfs server` (a local cluster of child processes) and `tinydfs admin status`.

use anyhow::{bail, Context};
use clap::Args;
use serde::{Deserialize, Serialize};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tinydfs_proto::client::MasterClient;
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// How long `server` waits for its nodes to come up before giving up.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long children get to stop after SIGTERM before they are killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Version of `cluster.json`.
const CLUSTER_FILE_VERSION: u16 = 1;

#[derive(Args)]
pub struct ServerArgs {
    /// Folder for all the cluster's data (created when missing).
    #[arg(long, default_value = "tinydfs-data")]
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

/// The masters' addresses: chosen once and kept in `masters.json`, because a Raft group
/// remembers its members' addresses (a restarted local cluster must find them again).
fn master_addresses(dir: &Path, count: usize, host: &str) -> anyhow::Result<Vec<String>> {
    let path = dir.join("masters.json");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let addrs: Vec<String> = serde_json::from_str(&text)?;
        if addrs.len() != count {
            bail!(
                "{} was created with {} master(s); start it with --masters {}",
                dir.display(),
                addrs.len(),
                addrs.len()
            );
        }
        return Ok(addrs);
    }
    let addrs = (0..count)
        .map(|_| free_port(host))
        .collect::<anyhow::Result<Vec<_>>>()?;
    std::fs::write(&path, serde_json::to_string(&addrs)?)?;
    Ok(addrs)
}

/// Hands out free ports, never one already given or in use by the cluster (the S3 port, the
/// masters'): a port the kernel just handed out and took back may come again.
struct Ports {
    host: String,
    taken: std::collections::HashSet<String>,
}

impl Ports {
    fn new(host: &str, taken: impl IntoIterator<Item = String>) -> Ports {
        Ports {
            host: host.to_string(),
            taken: taken.into_iter().collect(),
        }
    }

    fn take(&mut self) -> anyhow::Result<String> {
        for _ in 0..100 {
            let addr = free_port(&self.host)?;
            if self.taken.insert(addr.clone()) {
                return Ok(addr);
            }
        }
        bail!("no free port on {}", self.host)
    }
}

/// A free loopback port (bound then released; fine for a local cluster).
fn free_port(host: &str) -> anyhow::Result<String> {
    let l = std::net::TcpListener::bind((host, 0))?;
    Ok(format!("{host}:{}", l.local_addr()?.port()))
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

/// Waits until a node answers its health check (over HTTPS trusting `ca` if given).
async fn wait_healthy(
    addr: &str,
    child: &mut Child,
    name: &str,
    ca: Option<&Path>,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + STARTUP_TIMEOUT;
    loop {
        if crate::health(addr, 1.0, ca).await.is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            bail!("{name} exited during start-up ({status}); see its log");
        }
        if tokio::time::Instant::now() > deadline {
            bail!("{name} did not become healthy at {addr}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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
) -> anyhow::Result<Spawned> {
    let exe = std::env::current_exe()?;
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs)?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(logs.join(format!("{name}.log")))?;
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .env("TINYDFS_CLUSTER_SECRET", secret)
        .env("TINYDFS_LOG_FORMAT", log_format)
        .env("TINYDFS_PARENT_PID", std::process::id().to_string())
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
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

fn write_cluster_file(dir: &Path, file: &ClusterFile) -> anyhow::Result<()> {
    let tmp = dir.join("cluster.json.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(file)?)?;
    std::fs::rename(tmp, dir.join("cluster.json"))?;
    Ok(())
}

/// Runs the local cluster until Ctrl-C or SIGTERM; a child that dies is reported, not restarted.
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
    let secret = cluster_secret(&dir)?;
    let (creds, generated) = credentials(&dir)?;
    let host = "127.0.0.1";
    let master_addrs = master_addresses(&dir, a.masters, host)?;
    let mut ports = Ports::new(
        host,
        master_addrs.iter().cloned().chain([
            a.s3_addr.clone(),
            a.s3_addr.replace("localhost", "127.0.0.1"),
        ]),
    );
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
        tinydfs_proto::client::use_internal_tls(&ca)?;
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
    let mut children: Vec<Spawned> = Vec::new();
    let mut nodes: Vec<LocalNode> = Vec::new();
    let result = async {
        let replicas = a
            .replicas
            .unwrap_or(tinydfs_proto::DEFAULT_REPLICAS)
            .min(a.chunkservers);
        for (i, addr) in master_addrs.iter().enumerate() {
            let name = format!("master-{}", i + 1);
            let ops_addr = ports.take()?;
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
            let mut m = spawn(&dir, &name, &args, &secret, log_format, None)?;
            wait_healthy(addr, &mut m.child, &name, ca).await?;
            nodes.push(LocalNode {
                name,
                role: "master".into(),
                addr: addr.clone(),
                pid: m.child.id(),
                ops_addr,
            });
            children.push(m);
        }
        for i in 1..=a.chunkservers {
            let addr = ports.take()?;
            let ops_addr = ports.take()?;
            let name = format!("chunkserver-{i}");
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
            let mut c = spawn(&dir, &name, &args, &secret, log_format, None)?;
            wait_healthy(&addr, &mut c.child, &name, ca).await?;
            nodes.push(LocalNode {
                name,
                role: "chunkserver".into(),
                addr,
                pid: c.child.id(),
                ops_addr,
            });
            children.push(c);
        }
        let gateway_ops = ports.take()?;
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
        let mut g = spawn(&dir, "gateway-1", &args, &secret, log_format, Some(&creds))?;
        if a.tls_cert.is_none() {
            wait_healthy(&a.s3_addr, &mut g.child, "gateway-1", None).await?;
        } else {
            wait_listening(&a.s3_addr, &mut g.child).await?;
        }
        nodes.push(LocalNode {
            name: g.name.clone(),
            role: "gateway".into(),
            addr: a.s3_addr.clone(),
            pid: g.child.id(),
            ops_addr: gateway_ops,
        });
        children.push(g);
        wait_registered(&master_addrs, &secret, a.chunkservers).await?;
        anyhow::Ok(())
    }
    .await;
    let scheme = if a.tls_cert.is_some() {
        "https"
    } else {
        "http"
    };
    let endpoint = format!("{scheme}://{}", a.s3_addr);
    let file = ClusterFile {
        version: CLUSTER_FILE_VERSION,
        s3_endpoint: endpoint.clone(),
        masters: master_addrs.clone(),
        server_pid: std::process::id(),
        nodes: nodes.clone(),
        internal_ca: ca.map(Path::to_path_buf),
    };
    if let Err(e) = result.and_then(|_| write_cluster_file(&dir, &file)) {
        stop_all(children).await;
        return Err(e.context(format!("logs are in {}", dir.join("logs").display())));
    }
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
        "  nodes: {} master(s), {} chunkservers, 1 gateway",
        master_addrs.len(),
        a.chunkservers
    );
    if let Some(m) = nodes.iter().find(|n| n.role == "master") {
        println!("  status page: http://{}/", m.ops_addr);
    }
    if let Some(ca) = ca {
        println!(
            "  internal TLS: nodes verify each other against {}",
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
    use std::io::Write;
    let _ = std::io::stdout().flush();
    supervise(children).await;
    Ok(())
}

async fn wait_listening(addr: &str, child: &mut Child) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + STARTUP_TIMEOUT;
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            bail!("the gateway exited during start-up ({status}); see its log");
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the gateway did not start listening at {addr}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

async fn wait_registered(masters: &[String], secret: &str, n: usize) -> anyhow::Result<()> {
    let client = MasterClient::new(masters.to_vec(), secret.to_string());
    let deadline = tokio::time::Instant::now() + STARTUP_TIMEOUT;
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
async fn supervise(children: Vec<Spawned>) {
    let (tx, mut rx) = mpsc::channel::<(String, String)>(children.len().max(1));
    let mut pids = Vec::new();
    let mut waiters = Vec::new();
    for mut c in children {
        pids.push((c.name.clone(), c.child.id()));
        let tx = tx.clone();
        waiters.push(tokio::spawn(async move {
            let status = c.child.wait().await;
            let _ = tx.send((c.name.clone(), format!("{status:?}"))).await;
        }));
    }
    drop(tx);
    let stop = crate::shutdown_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            Some((name, status)) = rx.recv() => {
                eprintln!("tinydfs: {name} exited ({status}); it is not restarted");
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

/// Which cluster an admin command talks to.
#[derive(Args)]
pub struct Target {
    /// Internal addresses of the masters (comma-separated).
    #[arg(long, env = "TINYDFS_MASTERS", value_delimiter = ',')]
    master: Option<Vec<String>>,
    /// Data folder of a local `tinydfs server` (finds the masters and the secret there).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[arg(long, env = "TINYDFS_CLUSTER_SECRET", hide_env_values = true)]
    cluster_secret: Option<String>,
    /// The CA of the masters' internal TLS certificates (found in the data folder of a local
    /// cluster started with --internal-tls).
    #[arg(long, env = "TINYDFS_INTERNAL_CA")]
    internal_ca: Option<PathBuf>,
}

impl Target {
    fn local(&self) -> anyhow::Result<Option<ClusterFile>> {
        match &self.data_dir {
            Some(d) => {
                let text = std::fs::read_to_string(d.join("cluster.json"))
                    .with_context(|| format!("no running local cluster in {}", d.display()))?;
                Ok(Some(serde_json::from_str(&text)?))
            }
            None => Ok(None),
        }
    }

    /// A client of the target's masters.
    pub fn client(&self) -> anyhow::Result<MasterClient> {
        let local = self.local()?;
        let masters = match (&self.master, &local) {
            (Some(m), _) => m.clone(),
            (None, Some(l)) => l.masters.clone(),
            (None, None) => bail!("give --master ADDR or --data-dir DIR"),
        };
        let secret = match (&self.cluster_secret, &self.data_dir) {
            (Some(s), _) => s.clone(),
            (None, Some(d)) => crate::read_opt(&d.join("cluster.secret"))
                .context("no cluster.secret in the data folder")?,
            (None, None) => bail!("set TINYDFS_CLUSTER_SECRET"),
        };
        let local_ca = local.and_then(|l| l.internal_ca);
        if let Some(ca) = self.internal_ca.clone().or(local_ca) {
            tinydfs_proto::client::use_internal_tls(&ca)?;
        }
        Ok(MasterClient::new(masters, secret))
    }
}

#[derive(Args)]
pub struct StatusArgs {
    #[command(flatten)]
    target: Target,
    /// Print JSON for scripts.
    #[arg(long)]
    json: bool,
}

/// `tinydfs admin status`.
pub async fn status(a: StatusArgs) -> anyhow::Result<()> {
    let local = a.target.local()?;
    let client = a.target.client()?;
    let mut s = client
        .status()
        .await
        .map_err(|e| anyhow::anyhow!("the master does not answer: {e}"))?;
    if let Some(l) = &local {
        // Gateways report themselves to the leader; one that never did is looked up here.
        let known: Vec<String> = s
            .nodes
            .iter()
            .filter(|n| n.role == "gateway")
            .map(|n| n.addr.clone())
            .collect();
        for n in l
            .nodes
            .iter()
            .filter(|n| n.role == "gateway" && !known.contains(&n.addr))
        {
            let up = crate::health(&n.addr, 2.0, None).await.is_ok()
                || tokio::net::TcpStream::connect(&n.addr).await.is_ok();
            s.nodes.push(tinydfs_proto::meta::NodeStatus {
                id: 0,
                role: "gateway".into(),
                addr: n.addr.clone(),
                state: if up { "alive" } else { "dead" }.into(),
                pid: n.pid,
                capacity: 0,
                free: 0,
                chunks: 0,
                raft: None,
                ..Default::default()
            });
        }
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    println!("cluster {}", s.cluster_id);
    println!(
        "{:<12} {:>4} {:<22} {:<12} {:<8} {:>8} {:>8} {:>14}  RAFT",
        "ROLE", "ID", "ADDRESS", "STATE", "ZONE", "PID", "CHUNKS", "FREE"
    );
    for n in &s.nodes {
        let raft = n
            .raft
            .as_ref()
            .map(|r| {
                format!(
                    "term {} applied {} log {}",
                    r.term, r.applied_index, r.last_log_index
                )
            })
            .unwrap_or_default();
        println!(
            "{:<12} {:>4} {:<22} {:<12} {:<8} {:>8} {:>8} {:>14}  {raft}",
            n.role,
            n.id,
            n.addr,
            n.state,
            n.zone,
            n.pid.map(|p| p.to_string()).unwrap_or_default(),
            n.chunks,
            n.free
        );
    }
    println!(
        "buckets {}  objects {}  chunks {}  under-replicated {}  lost {}{}",
        s.buckets,
        s.objects,
        s.chunks,
        s.under_replicated,
        s.lost,
        if s.rebalancing { "  (rebalancing)" } else { "" }
    );
    Ok(())
}

#[derive(Args)]
pub struct FsckArgs {
    #[command(flatten)]
    target: Target,
    /// Print JSON for scripts.
    #[arg(long)]
    json: bool,
}

/// Exit code of `fsck` for a cluster that is not healthy.
const EXIT_UNHEALTHY: i32 = 1;
/// Exit code of `fsck` when the health cannot be judged (safe mode).
const EXIT_UNKNOWN: i32 = 2;

/// `tinydfs admin fsck`.
pub async fn fsck(a: FsckArgs) -> anyhow::Result<()> {
    let r = match a.target.client()?.fsck().await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tinydfs: the master does not answer: {e}");
            std::process::exit(EXIT_UNKNOWN);
        }
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        for p in &r.problems {
            let upload = p
                .upload_id
                .as_ref()
                .map(|u| format!(" (upload {u})"))
                .unwrap_or_default();
            println!(
                "{:<16} {}/{}{upload} chunk {} copies {}/{}",
                p.state, p.bucket, p.key, p.chunk, p.copies, p.wanted
            );
        }
        if r.truncated {
            println!("... more problems not listed");
        }
        println!(
            "objects {}  uploads {}  chunks {}  missing {}  under-replicated {}  corrupt {}",
            r.objects, r.uploads, r.chunks, r.missing, r.under_replicated, r.corrupt
        );
        println!(
            "{}",
            if !r.settled {
                "UNKNOWN: the master leader is in safe mode (chunkservers still reporting); try again"
            } else if r.healthy() {
                "HEALTHY"
            } else {
                "NOT HEALTHY"
            }
        );
    }
    if !r.settled {
        std::process::exit(EXIT_UNKNOWN);
    }
    if !r.healthy() {
        std::process::exit(EXIT_UNHEALTHY);
    }
    Ok(())
}

#[derive(Args)]
pub struct DecommissionArgs {
    /// The chunkserver: its id or its address.
    node: String,
    /// Cancel a decommission instead (the node takes data again).
    #[arg(long)]
    cancel: bool,
    /// Wait until the node holds nothing any more.
    #[arg(long)]
    wait: bool,
    /// Seconds to wait at most with --wait.
    #[arg(long, default_value_t = 3600.0)]
    timeout: f64,
    #[command(flatten)]
    target: Target,
}

/// `tinydfs admin decommission`.
pub async fn decommission(a: DecommissionArgs) -> anyhow::Result<()> {
    let client = a.target.client()?;
    let id = client
        .drain(&tinydfs_proto::meta::DrainRequest {
            node: a.node.clone(),
            drain: !a.cancel,
        })
        .await
        .map_err(|e| anyhow::anyhow!("decommission failed: {e}"))?;
    if a.cancel {
        println!("chunkserver {id}: decommission cancelled");
        return Ok(());
    }
    let deadline = std::time::Instant::now() + Duration::from_secs_f64(a.timeout);
    loop {
        let s = client
            .status()
            .await
            .map_err(|e| anyhow::anyhow!("the master does not answer: {e}"))?;
        let node = s
            .nodes
            .iter()
            .find(|n| n.role == "chunkserver" && n.id == id)
            .context("the chunkserver is no longer listed")?;
        println!(
            "chunkserver {id} ({}): {}, {} chunks left",
            node.addr, node.state, node.chunks
        );
        if !a.wait || node.state == "drained" {
            if node.state == "drained" {
                println!("chunkserver {id} holds no data: it may be stopped and removed");
            }
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            bail!("chunkserver {id} is not drained yet");
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

#[derive(Args)]
pub struct RebalanceArgs {
    /// Stop a running rebalance.
    #[arg(long)]
    stop: bool,
    /// Wait until usage is even.
    #[arg(long)]
    wait: bool,
    /// Seconds to wait at most with --wait.
    #[arg(long, default_value_t = 3600.0)]
    timeout: f64,
    #[command(flatten)]
    target: Target,
}

/// `tinydfs admin rebalance`.
pub async fn rebalance(a: RebalanceArgs) -> anyhow::Result<()> {
    let client = a.target.client()?;
    let r = client
        .rebalance(!a.stop)
        .await
        .map_err(|e| anyhow::anyhow!("rebalance failed: {e}"))?;
    for (id, used) in &r.usage {
        println!("chunkserver {id}: {:.1}% used", used * 100.0);
    }
    println!(
        "rebalance {} (threshold {:.1} points)",
        if r.running { "running" } else { "stopped" },
        r.threshold * 100.0
    );
    if !a.wait || a.stop {
        return Ok(());
    }
    let deadline = std::time::Instant::now() + Duration::from_secs_f64(a.timeout);
    loop {
        let s = client
            .status()
            .await
            .map_err(|e| anyhow::anyhow!("the master does not answer: {e}"))?;
        if !s.rebalancing {
            println!("rebalance finished");
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            bail!("the rebalance is still running");
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

#[derive(Args)]
pub struct BackupArgs {
    /// The file to write (replaced atomically).
    file: PathBuf,
    #[command(flatten)]
    target: Target,
}

/// `tinydfs admin backup FILE`.
pub async fn backup(a: BackupArgs) -> anyhow::Result<()> {
    let copy = a
        .target
        .client()?
        .backup()
        .await
        .map_err(|e| anyhow::anyhow!("backup failed: {e}"))?;
    let bytes = copy.get().as_bytes();
    let tmp = a.file.with_extension("tmp");
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        // It holds the S3 key secrets: readable by this user only.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &a.file)?;
    #[derive(Deserialize)]
    struct Summary {
        applied_index: u64,
        state: SummaryState,
    }
    #[derive(Deserialize)]
    struct SummaryState {
        cluster_id: String,
        buckets: std::collections::HashMap<String, serde::de::IgnoredAny>,
    }
    let s: Summary = serde_json::from_str(copy.get())?;
    println!(
        "backup of cluster {} at log index {}: {} buckets, {} bytes written to {}",
        s.state.cluster_id,
        s.applied_index,
        s.state.buckets.len(),
        bytes.len(),
        a.file.display()
    );
    Ok(())
}

#[derive(Args)]
pub struct BucketsArgs {
    #[command(flatten)]
    target: Target,
    /// Print JSON for scripts.
    #[arg(long)]
    json: bool,
}

/// `tinydfs admin buckets`.
pub async fn buckets(a: BucketsArgs) -> anyhow::Result<()> {
    let list = a
        .target
        .client()?
        .bucket_usage()
        .await
        .map_err(|e| anyhow::anyhow!("the master does not answer: {e}"))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    println!(
        "{:<40} {:>12} {:>16}  {:<20}  OWNER",
        "BUCKET", "OBJECTS", "BYTES", "CREATED"
    );
    for b in &list {
        println!(
            "{:<40} {:>12} {:>16}  {:<20}  {}",
            b.name,
            b.objects,
            b.bytes,
            tinydfs_proto::time::iso8601(b.created_ms),
            b.owner
        );
    }
    Ok(())
}

#[derive(clap::Subcommand)]
pub enum KeyCmd {
    /// Create a key; prints its id and secret (the secret is shown only this once).
    Create {
        /// A name to recognise the key by.
        #[arg(long, default_value = "")]
        name: String,
        /// Every permission on every bucket.
        #[arg(long)]
        admin: bool,
        /// A permission on a bucket, `BUCKET=read|write|owner` (repeat for several).
        #[arg(long = "bucket", value_name = "BUCKET=PERMISSION")]
        buckets: Vec<String>,
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        json: bool,
    },
    /// List keys with their permissions (never their secrets).
    List {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        json: bool,
    },
    /// Give a key a permission on a bucket (`BUCKET=read|write|owner`), or take it away
    /// (`BUCKET=none`).
    Grant {
        id: String,
        #[arg(value_name = "BUCKET=PERMISSION")]
        grant: String,
        #[command(flatten)]
        target: Target,
    },
    /// Delete (revoke) a key: requests signed with it are refused within seconds.
    Delete {
        id: String,
        #[command(flatten)]
        target: Target,
    },
}

/// `BUCKET=read|write|owner|none`.
fn parse_grant(g: &str) -> anyhow::Result<(String, Option<tinydfs_proto::meta::Permission>)> {
    let (bucket, perm) = g
        .split_once('=')
        .with_context(|| format!("{g:?} is not BUCKET=PERMISSION"))?;
    let perm = match perm {
        "none" => None,
        p => Some(p.parse().map_err(|e: String| anyhow::anyhow!(e))?),
    };
    Ok((bucket.to_string(), perm))
}

/// `count` random characters of `alphabet`.
fn random_text(alphabet: &[u8], count: usize) -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    (0..count)
        .map(|_| alphabet[rng.gen_range(0..alphabet.len())] as char)
        .collect()
}

/// `tinydfs admin key ...`.
pub async fn key(cmd: KeyCmd) -> anyhow::Result<()> {
    use tinydfs_proto::meta::{AccessKey, MetaRead, MetaReply, MetaWrite};
    let fail = |e: tinydfs_proto::meta::MetaError| anyhow::anyhow!("{e}");
    match cmd {
        KeyCmd::Create {
            name,
            admin,
            buckets,
            target,
            json,
        } => {
            let mut key = AccessKey {
                id: format!(
                    "TD{}",
                    random_text(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", 18)
                ),
                secret: random_text(
                    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
                    40,
                ),
                name,
                admin,
                buckets: Default::default(),
                created_ms: 0,
            };
            for g in &buckets {
                if let (b, Some(p)) = parse_grant(g)? {
                    key.buckets.insert(b, p);
                }
            }
            let client = target.client()?;
            client
                .write(MetaWrite::PutKey {
                    key: key.clone(),
                    bootstrap: false,
                })
                .await
                .map_err(fail)?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"access_key_id": key.id, "secret_access_key": key.secret})
                );
            } else {
                println!("access key id:     {}", key.id);
                println!("secret access key: {}", key.secret);
                println!("(the secret is not shown again)");
            }
        }
        KeyCmd::List { target, json } => {
            let MetaReply::Keys(mut keys) = target
                .client()?
                .read(MetaRead::ListKeys)
                .await
                .map_err(fail)?
            else {
                bail!("unexpected answer from the master");
            };
            for k in &mut keys {
                k.secret.clear();
            }
            if json {
                let list: Vec<serde_json::Value> = keys
                    .iter()
                    .map(|k| {
                        serde_json::json!({
                            "id": k.id, "name": k.name, "admin": k.admin,
                            "buckets": k.buckets, "created_ms": k.created_ms,
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(());
            }
            println!("{:<22} {:<6} {:<24} BUCKETS", "ID", "ADMIN", "NAME");
            for k in &keys {
                let grants: Vec<String> = k
                    .buckets
                    .iter()
                    .map(|(b, p)| format!("{b}={}", format!("{p:?}").to_lowercase()))
                    .collect();
                println!(
                    "{:<22} {:<6} {:<24} {}",
                    k.id,
                    if k.admin { "yes" } else { "no" },
                    k.name,
                    grants.join(",")
                );
            }
        }
        KeyCmd::Grant { id, grant, target } => {
            let (bucket, permission) = parse_grant(&grant)?;
            target
                .client()?
                .write(MetaWrite::GrantKey {
                    id: id.clone(),
                    bucket: bucket.clone(),
                    permission,
                })
                .await
                .map_err(fail)?;
            println!("{id}: {grant}");
        }
        KeyCmd::Delete { id, target } => {
            target
                .client()?
                .write(MetaWrite::DeleteKey { id: id.clone() })
                .await
                .map_err(fail)?;
            println!("access key {id} deleted");
        }
    }
    Ok(())
}
