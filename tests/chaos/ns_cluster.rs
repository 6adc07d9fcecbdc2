//! A cluster whose every node runs in a network namespace of its own ([`crate::netns`]): three
//! masters (`m1`..`m3`), four chunkservers (`c1`..`c4`), a gateway (`gw`), and a namespace for
//! the test's clients (`client`). The nodes are started one by one with `ip netns exec NS
//! tinydfs master|chunkserver|gateway ...`, with the flags `tinydfs server` gives them
//! (src/server.rs) and the short timers of the test harness (chunkserver heartbeat 200 ms,
//! dead-node timeout 3 s; the masters' election timeouts are already short by default,
//! 750–1500 ms), each listening on its namespace's address. Data folders and logs go under a
//! fresh folder of the test's temporary directory, removed after a passing run and kept (with
//! the tail of every log printed) after a failing one.
//!
//! The chunkservers of [`OWN_DISK`] keep their chunks on a disk of their own ([`Disk`]: an ext4
//! image under `disks/`, which the nemesis can fill or fail), their identity in their data
//! folder as the others do: a disk replaced or repaired leaves the node who it was.

use crate::common::{bin, ACCESS_KEY, SECRET_KEY, TEST_CHUNK, TEST_PACK_MAX};
use crate::disks::Disk;
use crate::netns::Net;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const MASTERS: [&str; 3] = ["m1", "m2", "m3"];
pub const CHUNKSERVERS: [&str; 4] = ["c1", "c2", "c3", "c4"];
/// Chunkservers whose chunks are on a disk of their own (see the module's doc).
pub const OWN_DISK: [&str; 2] = ["c3", "c4"];
pub const GATEWAY: &str = "gw";
/// The namespace the test's S3 client and admin commands run in.
pub const CLIENT: &str = "client";

/// Every node has its own address: the same port on each.
const MASTER_PORT: u16 = 7000;
const CHUNKSERVER_PORT: u16 = 7100;
const S3_PORT: u16 = 9000;
/// Chunkserver heartbeat and dead-node timeout, as the test harness gives `tinydfs server`.
const HEARTBEAT_MS: &str = "200";
const DEAD_NODE_TIMEOUT_SECS: &str = "3";
/// Lines of each log printed when the test fails.
const LOG_TAIL: usize = 40;
/// Start-up of the group, of the chunkservers' registration, of the gateway.
const STARTUP: Duration = Duration::from_secs(90);

/// A node process, and how it was started (to start it again).
struct Node {
    name: String,
    program: String,
    args: Vec<String>,
    child: Child,
}

/// The running cluster. Dropping it kills the nodes (which unmounts their own disks), then
/// deletes the network.
pub struct NsCluster {
    nodes: Vec<Node>,
    disks: Vec<(&'static str, Disk)>,
    dir: PathBuf,
    secret: String,
    // Dropped after the nodes are killed (fields drop after `Drop::drop`).
    pub net: Net,
}

impl NsCluster {
    /// Builds the network, starts the nodes and waits until the masters have a leader, every
    /// chunkserver is registered and the gateway listens.
    pub fn start() -> NsCluster {
        let hosts: Vec<&str> = MASTERS
            .iter()
            .chain(&CHUNKSERVERS)
            .chain(&[GATEWAY, CLIENT])
            .copied()
            .collect();
        let net = Net::new(&hosts);
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("clusters")
            .join(format!("netns-{:08x}", rand::random::<u32>()));
        std::fs::create_dir_all(dir.join("logs")).unwrap();
        let mut c = NsCluster {
            nodes: Vec::new(),
            disks: Vec::new(),
            dir,
            secret: format!("{:032x}", rand::random::<u128>()),
            net,
        };
        let initial: Vec<String> = MASTERS
            .iter()
            .enumerate()
            .map(|(i, m)| format!("{}={}", i + 1, c.addr(m)))
            .collect();
        for (i, m) in MASTERS.iter().enumerate() {
            let args = vec![
                "master".to_string(),
                "--id".into(),
                (i + 1).to_string(),
                "--listen".into(),
                c.addr(m),
                "--data-dir".into(),
                c.data(m),
                "--initial-members".into(),
                initial.join(","),
                "--replicas".into(),
                tinydfs_proto::DEFAULT_REPLICAS.to_string(),
                "--dead-node-timeout-secs".into(),
                DEAD_NODE_TIMEOUT_SECS.into(),
                "--reserve-bytes".into(),
                "0".into(),
            ];
            c.spawn(m, bin(), args);
        }
        c.wait_until("a leader master", |s| leaders(s) == 1);
        for cs in CHUNKSERVERS {
            let mut args = vec![
                "chunkserver".to_string(),
                "--listen".into(),
                c.addr(cs),
                "--data-dir".into(),
                c.data(cs),
                "--masters".into(),
                c.masters().join(","),
                "--heartbeat-ms".into(),
                HEARTBEAT_MS.into(),
                format!("--pack-max={TEST_PACK_MAX}"),
            ];
            if OWN_DISK.contains(&cs) {
                let disks = c.dir.join("disks");
                let disk = Disk::create(disks.join(format!("{cs}.img")), disks.join(cs));
                args.extend(["--disk".into(), disk.path().display().to_string()]);
                let wrapped = disk.wrap(bin(), &args);
                c.disks.push((cs, disk));
                c.spawn(cs, "sh", wrapped);
            } else {
                c.spawn(cs, bin(), args);
            }
        }
        c.wait_until("every chunkserver registered", |s| {
            let alive = s["nodes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|n| n["role"] == "chunkserver" && n["state"] == "alive");
            alive.count() == CHUNKSERVERS.len()
        });
        let args = vec![
            "gateway".to_string(),
            "--listen".into(),
            c.addr(GATEWAY),
            "--masters".into(),
            c.masters().join(","),
            "--region".into(),
            "us-east-1".into(),
            "--replicas".into(),
            tinydfs_proto::DEFAULT_REPLICAS.to_string(),
            "--min-replicas".into(),
            tinydfs_proto::DEFAULT_MIN_REPLICAS.to_string(),
            "--chunk-size".into(),
            TEST_CHUNK.to_string(),
        ];
        c.spawn(GATEWAY, bin(), args);
        let deadline = Instant::now() + STARTUP;
        loop {
            let up = c
                .net
                .command(CLIENT, bin())
                .args(["health", &c.addr(GATEWAY), "--timeout", "1"])
                .output()
                .is_ok_and(|o| o.status.success());
            if up {
                break;
            }
            assert!(Instant::now() < deadline, "the gateway did not start");
            std::thread::sleep(Duration::from_millis(200));
        }
        c
    }

    /// `ip:port` of a node.
    pub fn addr(&self, name: &str) -> String {
        let port = match name {
            GATEWAY => S3_PORT,
            n if n.starts_with('m') => MASTER_PORT,
            _ => CHUNKSERVER_PORT,
        };
        format!("{}:{port}", self.net.addr(name))
    }

    fn data(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    fn log(&self, name: &str) -> PathBuf {
        self.dir.join("logs").join(format!("{name}.log"))
    }

    /// The masters' addresses, in order.
    pub fn masters(&self) -> Vec<String> {
        MASTERS.iter().map(|m| self.addr(m)).collect()
    }

    /// The S3 endpoint (reachable from the client namespace).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr(GATEWAY))
    }

    /// Starts node `name` in its namespace as `program args`, logging to `logs/<name>.log` (after
    /// what an earlier process of it logged).
    fn spawn(&mut self, name: &str, program: &str, args: Vec<String>) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log(name))
            .unwrap();
        let child = self
            .net
            .command(name, program)
            .args(&args)
            .env("TINYDFS_CLUSTER_SECRET", &self.secret)
            .env("TINYDFS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("TINYDFS_SECRET_ACCESS_KEY", SECRET_KEY)
            // `ip netns exec` execs the node in its own place: the node is this process's
            // child, and dies with it (parent-death signal) should the test be killed.
            .env("TINYDFS_PARENT_PID", std::process::id().to_string())
            // Plain text: logs are files to read and grep.
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        self.nodes.push(Node {
            name: name.to_string(),
            program: program.to_string(),
            args,
            child,
        });
    }

    fn node(&self, name: &str) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    /// The pid of node `name` (`ip netns exec`, and the shell mounting a disk, exec the node).
    pub fn pid(&self, name: &str) -> u32 {
        self.node(name).child.id()
    }

    fn disk(&self, name: &str) -> &Disk {
        self.disks
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, d)| d)
            .unwrap_or_else(|| panic!("chunkserver {name} has no disk of its own"))
    }

    /// Fills chunkserver `name`'s disk until ENOSPC (or tops the filler up); answers the bytes
    /// the filler holds.
    pub fn fill_disk(&self, name: &str) -> u64 {
        self.disk(name).fill(self.pid(name))
    }

    /// Bytes free for chunkserver `name` on its disk.
    pub fn disk_free(&self, name: &str) -> u64 {
        self.disk(name).free(self.pid(name))
    }

    /// Deletes the filler of chunkserver `name`'s disk.
    pub fn empty_disk(&self, name: &str) {
        self.disk(name).empty(self.pid(name));
    }

    /// Makes chunkserver `name`'s disk fail (read-only after an ext4 error); answers its device.
    pub fn fail_disk(&self, name: &str) -> String {
        self.disk(name).fail(self.pid(name))
    }

    /// What an operator does about a failed disk: kills chunkserver `name` (SIGKILL), repairs its
    /// disk (e2fsck) and starts it again with the same arguments. Answers the new pid.
    pub fn repair_disk(&mut self, name: &str) -> u32 {
        let i = self.nodes.iter().position(|n| n.name == name).unwrap();
        let mut old = self.nodes.remove(i);
        let _ = old.child.kill();
        old.child.wait().unwrap();
        self.disk(name).repair();
        self.spawn(name, &old.program, old.args);
        self.pid(name)
    }

    /// Chunkserver `name` as the status shows it, if it does.
    pub fn chunkserver(&self, name: &str) -> Option<serde_json::Value> {
        let s = self.try_status()?;
        s["nodes"]
            .as_array()?
            .iter()
            .find(|n| {
                n["role"] == "chunkserver"
                    && self.net.host_of(n["addr"].as_str().unwrap_or("")) == Some(name)
            })
            .cloned()
    }

    /// Waits until chunkserver `name` is alive again as process `pid`, none of its disks
    /// failed; fails if it exits or is not back within the start-up time.
    pub fn wait_for_chunkserver(&mut self, name: &str, pid: u32) {
        self.wait_until(&format!("chunkserver {name} back (pid {pid})"), |s| {
            s["nodes"].as_array().into_iter().flatten().any(|n| {
                n["role"] == "chunkserver"
                    && n["state"] == "alive"
                    && n["pid"].as_u64() == Some(u64::from(pid))
                    && n["disks"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .all(|d| d["failed"] != true)
            })
        });
    }

    /// `tinydfs admin status --json --master <masters>`, run in the client namespace, asking
    /// the masters in the order given.
    pub fn status_command(&self, masters: &[String]) -> Command {
        let mut cmd = self.net.command(CLIENT, bin());
        cmd.args(["admin", "status", "--json", "--master", &masters.join(",")])
            .env("TINYDFS_CLUSTER_SECRET", &self.secret)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// The status, or None while no master answers it.
    pub fn try_status(&self) -> Option<serde_json::Value> {
        let out = self.status_command(&self.masters()).output().ok()?;
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten()
    }

    /// Waits (during start-up) until the status satisfies `pred`; fails at once if a node exits.
    fn wait_until(&mut self, what: &str, pred: impl Fn(&serde_json::Value) -> bool) {
        let deadline = Instant::now() + STARTUP;
        loop {
            if self.try_status().is_some_and(|s| pred(&s)) {
                return;
            }
            for n in &mut self.nodes {
                if let Ok(Some(status)) = n.child.try_wait() {
                    panic!("{} exited ({status}) while waiting for {what}", n.name);
                }
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// The host of the leader master, once there is exactly one (up to 60 s).
    pub fn leader(&self) -> &'static str {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(s) = self.try_status() {
                let mut leaders = s["nodes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|n| n["role"] == "master" && n["state"] == "leader");
                if let (Some(n), None) = (leaders.next(), leaders.next()) {
                    let host = self.net.host_of(n["addr"].as_str().unwrap_or(""));
                    if let Some(m) = MASTERS.into_iter().find(|m| Some(*m) == host) {
                        return m;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "no single leader master for 60 s"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn print_logs(&self) {
        for n in &self.nodes {
            let text = std::fs::read_to_string(self.log(&n.name)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!(
                "---- {} ({}), last {LOG_TAIL} lines of {} ----",
                n.name,
                self.addr(&n.name),
                self.log(&n.name).display()
            );
            for l in &lines[lines.len().saturating_sub(LOG_TAIL)..] {
                eprintln!("{l}");
            }
        }
    }
}

/// Masters that say they lead.
fn leaders(s: &serde_json::Value) -> usize {
    s["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|n| n["role"] == "master" && n["state"] == "leader")
        .count()
}

impl Drop for NsCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            let _ = n.child.kill();
        }
        for n in &mut self.nodes {
            let _ = n.child.wait();
        }
        for (_, d) in &self.disks {
            d.wait_released();
        }
        if std::thread::panicking() {
            self.print_logs();
            eprintln!("data folders and logs kept in {}", self.dir.display());
        } else if std::env::var_os("TINYDFS_CHAOS_HISTORY").is_some() {
            eprintln!("data folders and logs kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
