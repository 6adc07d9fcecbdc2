//! Test harness: starts a real `tinydfs server` (every node its own process) on free loopback
//! ports under a fresh folder, and gives clients for it. Tests that use it run serially (see
//! `scripts/test.sh`): they start several processes each.

#![allow(dead_code)]

use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

pub const ACCESS_KEY: &str = "TDTESTACCESSKEY";
pub const SECRET_KEY: &str = "tdtestsecretkey0123456789";
/// Chunk size used by tests: small, so that several chunks need little data.
pub const TEST_CHUNK: u64 = 256 * 1024;

/// Largest chunk the test clusters' chunkservers pack (`--pack-max`).
pub const TEST_PACK_MAX: u64 = 64 * 1024;

/// Options of a test cluster.
pub struct Opts {
    pub chunkservers: usize,
    pub chunk_size: u64,
    pub tls: bool,
    /// Serve HTTPS with these PEM files (certificate chain, key) instead of a self-signed
    /// certificate made for the test.
    pub tls_files: Option<(PathBuf, PathBuf)>,
    /// Extra `server` arguments.
    pub extra: Vec<String>,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            chunkservers: 3,
            chunk_size: TEST_CHUNK,
            tls: false,
            tls_files: None,
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

    /// Starts (or restarts) a cluster in an existing folder. A start that fails at once (the
    /// server exits: a port `free_port` gave away was taken meanwhile by another test's
    /// process, say) is tried again, twice at most, with new ports.
    pub fn start_in(dir: PathBuf, opts: Opts) -> Cluster {
        for attempt in 1.. {
            match Self::try_start_in(dir.clone(), &opts) {
                Ok(c) => return c,
                Err(why) if attempt < 3 => eprintln!("{why}; starting again"),
                Err(why) => panic!("{why}"),
            }
        }
        unreachable!()
    }

    fn try_start_in(dir: PathBuf, opts: &Opts) -> Result<Cluster, String> {
        let s3_addr = format!("127.0.0.1:{}", free_port());
        let mut cmd = Command::new(bin());
        cmd.arg("server")
            .arg("--data-dir")
            .arg(&dir)
            .args(["--s3-addr", &s3_addr])
            .args(["--chunkservers", &opts.chunkservers.to_string()])
            .args(["--chunk-size", &opts.chunk_size.to_string()])
            .args(["--reserve-bytes", "0"])
            // Test chunks are 256 KiB: with the default limit (1 MiB) every one would be packed.
            // Objects over 64 KiB exercise chunk files, smaller ones pack files.
            .arg(format!("--chunkserver-arg=--pack-max={TEST_PACK_MAX}"))
            .args(&opts.extra)
            .env("TINYDFS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("TINYDFS_SECRET_ACCESS_KEY", SECRET_KEY)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut cert = None;
        let tls = opts.tls || opts.tls_files.is_some();
        if tls {
            let (c, k) = opts.tls_files.clone().unwrap_or_else(|| self_signed(&dir));
            cmd.arg("--tls-cert").arg(&c).arg("--tls-key").arg(&k);
            cert = Some(c);
        }
        // Short timers unless the test chose its own.
        if !opts.extra.iter().any(|a| a == "--heartbeat-ms") {
            cmd.args(["--heartbeat-ms", "200", "--dead-node-timeout-secs", "3"]);
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
            // Its output ended: it is exiting (or did not start in 90 s).
            let exited = (0..20).find_map(|_| {
                let status = child.try_wait().ok().flatten();
                if status.is_none() {
                    std::thread::sleep(Duration::from_millis(100));
                }
                status
            });
            let _ = child.kill();
            let _ = child.wait();
            if let Some(status) = exited {
                return Err(format!("the server exited during its start ({status})"));
            }
            let log = std::fs::read_to_string(dir.join("logs/master-1.log")).unwrap_or_default();
            panic!("the cluster did not start; master log:\n{log}");
        }
        let scheme = if tls { "https" } else { "http" };
        Ok(Cluster {
            endpoint: format!("{scheme}://{s3_addr}"),
            dir,
            s3_addr,
            cert,
            child: Some(child),
            opts_chunk: opts.chunk_size,
        })
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

    /// Internal addresses of the masters.
    pub fn masters(&self) -> Vec<String> {
        let text = std::fs::read_to_string(self.dir.join("cluster.json")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["masters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m.as_str().unwrap().to_string())
            .collect()
    }

    /// The address a node of `cluster.json` listens on.
    pub fn addr(&self, name: &str) -> String {
        self.nodes()
            .iter()
            .find(|n| n["name"] == name)
            .and_then(|n| n["addr"].as_str().map(String::from))
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    /// Starts one more node process of this cluster (`tinydfs <args>`), with the cluster secret
    /// and the test credentials in its environment, logging to `logs/<name>.log`.
    pub fn spawn(&self, name: &str, args: &[String]) -> KillOnDrop {
        let secret = std::fs::read_to_string(self.dir.join("cluster.secret")).unwrap();
        let log = std::fs::File::create(self.dir.join(format!("logs/{name}.log"))).unwrap();
        let child = Command::new(bin())
            .args(args)
            .env("TINYDFS_CLUSTER_SECRET", secret.trim())
            .env("TINYDFS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("TINYDFS_SECRET_ACCESS_KEY", SECRET_KEY)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        KillOnDrop(child)
    }

    /// (Re)starts chunkserver `name` on `addr` with its data folder under the cluster's.
    pub fn spawn_chunkserver(&self, name: &str, addr: &str, extra: &[&str]) -> KillOnDrop {
        let mut args: Vec<String> = vec![
            "chunkserver".into(),
            "--listen".into(),
            addr.into(),
            "--data-dir".into(),
            self.dir.join(name).display().to_string(),
            "--masters".into(),
            self.masters().join(","),
            "--heartbeat-ms".into(),
            "200".into(),
            format!("--pack-max={TEST_PACK_MAX}"),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let node = self.spawn(name, &args);
        wait_until(&format!("{name} to register"), || {
            self.status()["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n["addr"] == addr && n["state"] == "alive")
        });
        node
    }

    /// Chunks on every chunkserver's disks, in chunk files or pack files: (chunkserver folder
    /// name, chunk id) pairs.
    pub fn chunk_files(&self) -> Vec<(String, String)> {
        fn walk(dir: &Path, node: &str, out: &mut Vec<(String, String)>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for e in entries.flatten() {
                let p = e.path();
                let name = e.file_name().to_string_lossy().to_string();
                if p.is_dir() && name == "packs" {
                    for id in packed_chunks(&p) {
                        out.push((node.to_string(), id));
                    }
                } else if p.is_dir() {
                    walk(&p, node, out);
                } else if name.len() == 32
                    && name.bytes().all(|b| b.is_ascii_hexdigit())
                    && p.components().any(|c| c.as_os_str() == "chunks")
                {
                    out.push((node.to_string(), name));
                }
            }
        }
        let mut out = Vec::new();
        for e in std::fs::read_dir(&self.dir).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with("chunkserver") {
                walk(&e.path(), &name, &mut out);
            }
        }
        out
    }

    /// Runs `tinydfs admin <args> --data-dir <cluster>`; answers (exit code, stdout).
    pub fn admin(&self, args: &[&str]) -> (i32, String) {
        let out = Command::new(bin())
            .arg("admin")
            .args(args)
            .arg("--data-dir")
            .arg(&self.dir)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr),
        )
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

/// A multi-threaded runtime for a test's async client calls.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// GETs a whole object.
pub async fn get(c: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Result<Vec<u8>, String> {
    let out = c
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| format!("{e:?}"))?;
    let body = out.body.collect().await.map_err(|e| format!("{e:?}"))?;
    Ok(body.into_bytes().to_vec())
}

/// PUTs a whole object.
pub async fn put(
    c: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    body: Vec<u8>,
) -> Result<(), String> {
    c.put_object()
        .bucket(bucket)
        .key(key)
        .body(aws_sdk_s3::primitives::ByteStream::from(body))
        .send()
        .await
        .map(|_| ())
        .map_err(|e| format!("{e:?}"))
}

/// Polls `pred` until it holds (generous deadline for loaded machines).
pub fn wait_until(what: &str, mut pred: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while !pred() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
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

/// The tests' one SigV4 signer: aws-sigv4, the AWS SDKs' own. Signs `method` on
/// `http://{host}{path_and_query}` (path and query already URI-encoded) at `at` with the test
/// key; the payload is declared by `payload_hash` (a hex SHA-256, `UNSIGNED-PAYLOAD` or a
/// `STREAMING-…` mode) and the `extra` headers are signed too. Answers the headers to send —
/// `host`, `x-amz-content-sha256`, the extra ones, then `x-amz-date` and `authorization` — and
/// the signature (the seed of a signed aws-chunked body).
pub fn sign_v4(
    at: SystemTime,
    method: &str,
    host: &str,
    path_and_query: &str,
    payload_hash: &str,
    extra: &[(&str, &str)],
) -> (Vec<(String, String)>, String) {
    sign_v4_as(
        (ACCESS_KEY, SECRET_KEY),
        at,
        method,
        host,
        path_and_query,
        payload_hash,
        extra,
    )
}

/// [`sign_v4`] with another key `(access key id, secret)`.
pub fn sign_v4_as(
    (access, secret): (&str, &str),
    at: SystemTime,
    method: &str,
    host: &str,
    path_and_query: &str,
    payload_hash: &str,
    extra: &[(&str, &str)],
) -> (Vec<(String, String)>, String) {
    use aws_sigv4::http_request::{
        sign, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
        UriPathNormalizationMode,
    };
    let identity =
        aws_credential_types::Credentials::new(access, secret, None, None, "tests").into();
    let mut settings = SigningSettings::default();
    // S3 signs the path as it is sent: encoded once, not normalized.
    settings.percent_encoding_mode = PercentEncodingMode::Single;
    settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name("s3")
        .time(at)
        .settings(settings)
        .build()
        .unwrap()
        .into();
    let mut headers = vec![
        ("host".to_string(), host.to_string()),
        ("x-amz-content-sha256".to_string(), payload_hash.to_string()),
    ];
    headers.extend(extra.iter().map(|(k, v)| (k.to_lowercase(), v.to_string())));
    let request = SignableRequest::new(
        method,
        format!("http://{host}{path_and_query}"),
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignableBody::Precomputed(payload_hash.to_string()),
    )
    .unwrap();
    let (instructions, signature) = sign(request, &params).unwrap().into_parts();
    headers.extend(
        instructions
            .headers()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    (headers, signature)
}

/// The SigV4 signature of `string_to_sign` with the signing key of `secret` on the day of `at`
/// (aws-chunked chunk signatures, POST policies).
pub fn signature_of(secret: &str, at: SystemTime, string_to_sign: &str) -> String {
    let key = aws_sigv4::sign::v4::generate_signing_key(secret, at, "us-east-1", "s3");
    aws_sigv4::sign::v4::calculate_signature(key, string_to_sign.as_bytes())
}

pub fn sha_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// Signs a single-chunk request, now, whose `x-amz-content-sha256` is `payload_hash`.
pub fn signed_headers(
    host: &str,
    method: &str,
    path: &str,
    payload_hash: &str,
) -> Vec<(String, String)> {
    sign_v4(SystemTime::now(), method, host, path, payload_hash, &[]).0
}

/// `tinydfs admin key create --json` with `args`; answers (id, secret).
pub fn create_key(cluster: &Cluster, args: &[&str]) -> (String, String) {
    let mut all = vec!["key", "create", "--json"];
    all.extend_from_slice(args);
    let (code, out) = cluster.admin(&all);
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    (
        v["access_key_id"].as_str().unwrap().to_string(),
        v["secret_access_key"].as_str().unwrap().to_string(),
    )
}

/// The S3 error code of a failed SDK call, or "ok".
pub fn code<T, E: aws_sdk_s3::error::ProvideErrorMetadata>(r: Result<T, E>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => e.code().unwrap_or("unknown").to_string(),
    }
}

/// The chunks a chunkserver's pack folder holds, read from its files as the chunkserver replays
/// them (chunkserver/src/pack/mod.rs): records in file order, a tombstone cancels its chunk.
pub fn packed_chunks(dir: &Path) -> Vec<String> {
    packed_locations(dir)
        .into_iter()
        .map(|(id, _, _)| id)
        .collect()
}

/// [`packed_chunks`] with, for each, its pack file and the offset of its first data byte.
pub fn packed_locations(dir: &Path) -> Vec<(String, PathBuf, usize)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|x| x == "pack"));
    files.sort();
    let mut live: Vec<(String, PathBuf, usize)> = Vec::new();
    for f in files {
        let Ok(bytes) = std::fs::read(&f) else {
            continue;
        };
        let mut at = 16;
        while at + 40 <= bytes.len() && &bytes[at..at + 4] == b"TDPK" {
            let h = &bytes[at..at + 40];
            let id = format!("{:032x}", u128::from_le_bytes(h[8..24].try_into().unwrap()));
            let len = u32::from_le_bytes(h[24..28].try_into().unwrap()) as usize;
            live.retain(|(c, _, _)| *c != id);
            if h[4] == 2 {
                at += 40;
                continue;
            }
            live.push((id, f.clone(), at + 40 + 16));
            at += 40 + 16 + len + len.div_ceil(64 * 1024) * 4 + 16;
        }
    }
    live
}

/// The path of a client tool named by an environment variable (`scripts/test.sh` sets them):
/// a test that needs a tool fails loudly without it, never skips.
pub fn tool(var: &str) -> PathBuf {
    let path = std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| panic!("{var} is not set: run the tests with scripts/test.sh"));
    let path = PathBuf::from(path);
    assert!(path.is_file(), "{var}={} does not exist", path.display());
    path
}
