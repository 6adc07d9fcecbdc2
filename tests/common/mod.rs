//! Test harness: starts a real `tinydfs server` (every node its own process) on free loopback
//! ports under a fresh folder, and gives clients for it. Tests that use it run serially (see
//! `scripts/test.sh`): they start several processes each.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ACCESS_KEY: &str = "TDTESTACCESSKEY";
pub const SECRET_KEY: &str = "tdtestsecretkey0123456789";
/// Chunk size used by tests: small, so that several chunks need little data.
pub const TEST_CHUNK: u64 = 256 * 1024;

/// Options of a test cluster.
pub struct Opts {
    pub chunkservers: usize,
    pub chunk_size: u64,
    pub tls: bool,
    /// Extra `server` arguments.
    pub extra: Vec<String>,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            chunkservers: 3,
            chunk_size: TEST_CHUNK,
            tls: false,
            extra: Vec::new(),
        }
    }
}

/// A running local cluster.
pub struct Cluster {
    pub dir: PathBuf,
    pub endpoint: String,
    pub s3_addr: String,
    /// PEM certificate the HTTPS endpoint uses (self-signed), when TLS is on.
    pub cert: Option<PathBuf>,
    child: Option<Child>,
    opts_chunk: u64,
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_tinydfs")
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn test_root() -> PathBuf {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("clusters");
    std::fs::create_dir_all(&root).unwrap();
    root
}

fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
        ])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl is needed to make a test certificate");
    assert!(status.success(), "openssl failed");
    (cert, key)
}

impl Cluster {
    pub fn start(opts: Opts) -> Cluster {
        let dir = test_root().join(format!("c-{:08x}", rand::random::<u32>()));
        std::fs::create_dir_all(&dir).unwrap();
        Self::start_in(dir, opts)
    }

    /// Starts (or restarts) a cluster in an existing folder.
    pub fn start_in(dir: PathBuf, opts: Opts) -> Cluster {
        let s3_addr = format!("127.0.0.1:{}", free_port());
        let mut cmd = Command::new(bin());
        cmd.arg("server")
            .arg("--data-dir")
            .arg(&dir)
            .args(["--s3-addr", &s3_addr])
            .args(["--chunkservers", &opts.chunkservers.to_string()])
            .args(["--chunk-size", &opts.chunk_size.to_string()])
            .args(["--heartbeat-ms", "200", "--dead-node-timeout-secs", "3"])
            .args(["--reserve-bytes", "0"])
            .args(&opts.extra)
            .env("TINYDFS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("TINYDFS_SECRET_ACCESS_KEY", SECRET_KEY)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut cert = None;
        if opts.tls {
            let (c, k) = self_signed(&dir);
            cmd.arg("--tls-cert").arg(&c).arg("--tls-key").arg(&k);
            cert = Some(c);
        }
        let mut child = cmd.spawn().expect("start tinydfs server");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("tinydfs is running") {
                    let _ = tx.send(());
                }
            }
        });
        if rx.recv_timeout(Duration::from_secs(90)).is_err() {
            let _ = child.kill();
            let log = std::fs::read_to_string(dir.join("logs/master-1.log")).unwrap_or_default();
            panic!("the cluster did not start; master log:\n{log}");
        }
        let scheme = if opts.tls { "https" } else { "http" };
        Cluster {
            endpoint: format!("{scheme}://{s3_addr}"),
            dir,
            s3_addr,
            cert,
            child: Some(child),
            opts_chunk: opts.chunk_size,
        }
    }

    /// The nodes as `cluster.json` records them.
    pub fn nodes(&self) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(self.dir.join("cluster.json")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["nodes"].as_array().unwrap().clone()
    }

    pub fn pid(&self, name: &str) -> u32 {
        self.nodes()
            .iter()
            .find(|n| n["name"] == name)
            .and_then(|n| n["pid"].as_u64())
            .unwrap_or_else(|| panic!("no node {name}")) as u32
    }

    /// SIGKILLs one node of the cluster (`master-1`, `chunkserver-2`, `gateway-1`).
    pub fn kill(&self, name: &str) {
        let pid = self.pid(name);
        let ok = Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap();
        assert!(ok.success(), "kill {name}");
    }

    /// `tinydfs admin status --json` of this cluster.
    pub fn status(&self) -> serde_json::Value {
        let out = Command::new(bin())
            .args(["admin", "status", "--json", "--data-dir"])
            .arg(&self.dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "admin status: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Waits until `pred(status)` holds (polls; generous deadline for loaded machines).
    pub fn wait_for(&self, what: &str, pred: impl Fn(&serde_json::Value) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let s = self.status();
            if pred(&s) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {s}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// An aws-sdk-s3 client for this cluster, with the SDK's default checksum behaviour.
    pub fn client(&self) -> aws_sdk_s3::Client {
        sdk_client(&self.endpoint, ACCESS_KEY, SECRET_KEY, true)
    }

    pub fn chunk_size(&self) -> u64 {
        self.opts_chunk
    }

    /// Stops the server (SIGTERM) and waits for it, keeping the data folder.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A process started by a test, killed when the test ends (also when it fails).
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An aws-sdk-s3 client (plain HTTP, us-east-1, the SDK's default checksum behaviour).
pub fn sdk_client(endpoint: &str, ak: &str, sk: &str, path_style: bool) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .force_path_style(path_style)
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            ak, sk, None, None, "test",
        ))
        .http_client(aws_smithy_http_client::Builder::new().build_http())
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub fn md5_hex(b: &[u8]) -> String {
    use md5::Digest;
    hex::encode(md5::Md5::digest(b))
}
