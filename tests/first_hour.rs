//! The first hour of a new user (issue 19), from the README to a working setup: the README's
//! commands run as written; `admin` finds the folder `server` uses; `server` says it is running
//! only once every node is up, and otherwise why not; `tinydfs health` works on every address
//! it prints; the operations addresses are printed, listed and kept; logs are plain text and
//! the output reads as words.
//!
//! These tests start `tinydfs server` themselves rather than through `common::Cluster`: what
//! they check is what it prints and how it exits. Each runs it in a fresh working folder, as a
//! new user would, with the default data folder `./tinydfs-data` unless it needs another, and
//! without S3 keys in its environment (it generates them).

mod common;

use common::{bin, free_port, tool};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a start (or a failed one) may take on a loaded 2-core machine.
const START_TIMEOUT: Duration = Duration::from_secs(180);
/// Pause between two looks at something awaited.
const POLL: Duration = Duration::from_millis(100);
/// Environment variables that would point a command at another cluster than the test's.
const FOREIGN_ENV: [&str; 5] = [
    "TINYDFS_ACCESS_KEY_ID",
    "TINYDFS_SECRET_ACCESS_KEY",
    "TINYDFS_MASTERS",
    "TINYDFS_CLUSTER_SECRET",
    "TINYDFS_INTERNAL_CA",
];

/// Client settings of the machine the tests run on, which would change what the README's
/// `aws` and `rclone` commands do.
const CLIENT_ENV: [&str; 12] = [
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_CA_BUNDLE",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
];

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

/// A test's working folder, removed when the test passes.
struct Workdir(PathBuf);

impl Workdir {
    fn new(name: &str) -> Workdir {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("first-hour")
            .join(format!("{name}-{:08x}", rand::random::<u32>()));
        std::fs::create_dir_all(&dir).unwrap();
        Workdir(dir)
    }

    /// `./tinydfs-data` of this folder.
    fn data(&self) -> PathBuf {
        self.0.join("tinydfs-data")
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// What a child writes on one stream, collected by a thread as it comes, and whether the
/// stream has ended.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<String>>, Arc<std::sync::atomic::AtomicBool>);

impl Captured {
    fn follow(stream: impl Read + Send + 'static) -> Captured {
        let captured = Captured::default();
        let (text, ended) = (captured.0.clone(), captured.1.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let mut t = text.lock().unwrap();
                t.push_str(&line);
                t.push('\n');
            }
            ended.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        captured
    }

    fn ended(&self) -> bool {
        self.1.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }
}

/// A `tinydfs server` started by a test; stopped (SIGTERM) when dropped.
struct Server {
    child: Child,
    stdout: Captured,
    stderr: Captured,
}

impl Server {
    /// `tinydfs server ARGS` in the folder `cwd`.
    fn start(cwd: &Path, args: &[&str]) -> Server {
        let mut cmd = Command::new(bin());
        cmd.arg("server").args(args).current_dir(cwd);
        for var in FOREIGN_ENV {
            cmd.env_remove(var);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tinydfs server");
        let stdout = Captured::follow(child.stdout.take().unwrap());
        let stderr = Captured::follow(child.stderr.take().unwrap());
        Server {
            child,
            stdout,
            stderr,
        }
    }

    /// Waits for the whole banner (it ends with the `health` command to try); fails the test
    /// if the server exits first.
    fn banner(&mut self) -> String {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let out = self.stdout.text();
            let complete =
                out.contains("tinydfs is running") && out.lines().any(|l| l.contains(" health "));
            if complete {
                return out;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "server exited ({status}) before it was running:\n{out}\n{}",
                    self.stderr.text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "server not running after {START_TIMEOUT:?}:\n{out}\n{}",
                self.stderr.text()
            );
            std::thread::sleep(POLL);
        }
    }

    /// Waits until the server exits by itself.
    fn exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Its output threads end with the pipes (the nodes log to files, so nothing
                // else holds them): wait for the last lines.
                let deadline = Instant::now() + Duration::from_secs(10);
                while !(self.stdout.ended() && self.stderr.ended()) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "server still running after {START_TIMEOUT:?}:\n{}\n{}",
                self.stdout.text(),
                self.stderr.text()
            );
            std::thread::sleep(POLL);
        }
    }

    /// Stops the server as Ctrl-C would, and waits for it.
    fn stop(&mut self) {
        if self.child.try_wait().unwrap().is_none() {
            signal(self.child.id(), nix::sys::signal::Signal::SIGTERM);
            let _ = self.exit();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            signal(self.child.id(), nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
                std::thread::sleep(POLL);
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
}

/// `tinydfs ARGS` in the folder `cwd`, with no cluster named by the environment.
fn tinydfs(cwd: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(bin());
    cmd.args(args).current_dir(cwd);
    for var in FOREIGN_ENV {
        cmd.env_remove(var);
    }
    cmd.output().unwrap()
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
}

/// The last line a command wrote on standard error.
fn last_error_line(stderr: &str) -> String {
    stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default()
        .to_string()
}

/// `DIR/cluster.json`.
fn cluster_file(data: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(data.join("cluster.json")).unwrap()).unwrap()
}

/// The node of `cluster.json` named `name`.
fn node(data: &Path, name: &str) -> serde_json::Value {
    cluster_file(data)["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in cluster.json"))
        .clone()
}

/// The nodes as the banner lists them: (name, address, operations address).
fn banner_nodes(banner: &str) -> Vec<(String, String, String)> {
    banner
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            match w.as_slice() {
                [name, addr, "operations", ops] => {
                    Some((name.to_string(), addr.to_string(), ops.to_string()))
                }
                _ => None,
            }
        })
        .collect()
}

/// (name, operations address) of the banner's nodes.
fn ops_by_name(nodes: &[(String, String, String)]) -> Vec<(String, String)> {
    nodes
        .iter()
        .map(|(name, _, ops)| (name.clone(), ops.clone()))
        .collect()
}

/// The value after `label` on a banner line (`access key id:`).
fn banner_value(banner: &str, label: &str) -> String {
    banner
        .lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .unwrap_or_else(|| panic!("no {label:?} in the banner:\n{banner}"))
        .trim()
        .to_string()
}

/// Every loopback address in a text, as written there (`127.0.0.1:9000`,
/// `http://127.0.0.1:9000`, `http://127.0.0.1:41234/`).
fn addresses_in(text: &str) -> Vec<String> {
    let mut found: Vec<String> = text
        .split_whitespace()
        .filter(|w| w.contains("127.0.0.1:"))
        .map(|w| {
            w.trim_start_matches('(')
                .trim_end_matches([')', ',', ';'])
                .to_string()
        })
        .collect();
    found.sort();
    found.dedup();
    found
}

/// `GET path` over plain HTTP/1.1: (status, body).
fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Another program on a port: answers every request with `status` and `body`. It runs (and
/// holds the port) until the test ends.
fn foreign_program(status: &'static str, body: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                 connection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    addr
}

/// Whether process `pid` is gone.
fn gone(pid: u64) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

// ---------------------------------------------------------------------------------------------
// The README
// ---------------------------------------------------------------------------------------------

/// The README's `sh` code blocks, each as its command lines (continued lines joined).
fn readme_blocks() -> Vec<Vec<String>> {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let mut blocks = Vec::new();
    let mut current: Option<Vec<String>> = None;
    for line in readme.lines() {
        match (current.as_mut(), line.trim_end()) {
            (None, "```sh") => current = Some(Vec::new()),
            (Some(_), "```") => blocks.extend(current.take()),
            (Some(block), l) => block.push(l.to_string()),
            (None, _) => {}
        }
    }
    blocks
        .into_iter()
        .map(|block| {
            let mut lines = Vec::new();
            let mut pending = String::new();
            for l in block {
                match l.strip_suffix('\\') {
                    Some(part) => pending.push_str(part),
                    None => lines.push(std::mem::take(&mut pending) + &l),
                }
            }
            lines
        })
        .collect()
}

/// The program a command line runs (after `VAR=value` words).
fn program(line: &str) -> &str {
    line.split_whitespace()
        .find(|w| !w.contains('='))
        .unwrap_or_default()
}

/// The README's block holding a line that contains `needle`.
fn block_with(blocks: &[Vec<String>], needle: &str) -> Vec<String> {
    blocks
        .iter()
        .find(|b| b.iter().any(|l| l.contains(needle)))
        .unwrap_or_else(|| panic!("no README code block with {needle:?}"))
        .clone()
}

/// Runs a README script with bash in `cwd` (`set -e`: any failing line fails it), the tools
/// of `bin_dir` first on the PATH.
fn run_script(cwd: &Path, bin_dir: &Path, script: &str, env: &[(&str, &str)]) -> Output {
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new("bash");
    cmd.args(["-e", "-c", script])
        .current_dir(cwd)
        .env("PATH", path);
    // The machine's own AWS settings and proxies are not the README's reader's.
    for var in FOREIGN_ENV.iter().chain(&CLIENT_ENV) {
        cmd.env_remove(var);
    }
    cmd.env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .envs(env.iter().copied());
    cmd.output().unwrap()
}

#[test]
fn readme_commands_run_as_written() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    // The prose with its line breaks as spaces, so that phrases can be found however wrapped.
    let readme = readme.split_whitespace().collect::<Vec<_>>().join(" ");
    let blocks = readme_blocks();
    // The first two commands stay as they are: CI runs the second.
    assert!(blocks[0][0].starts_with("cargo run --release -- server "));
    assert!(blocks[0][1].starts_with("scripts/test.sh "));
    // Where the binary is, and how to have it on the PATH.
    assert!(
        readme.contains("`target/release/tinydfs`") && readme.contains("cargo install --path .")
    );
    // The test command's prerequisites come before what it does.
    let needs = readme
        .find("needs root (or sudo")
        .expect("the test command's prerequisites");
    let does = readme
        .find("It creates `.venv`")
        .expect("what the test command does");
    assert!(needs < does);
    for need in [
        "Docker with a running",
        "python3",
        "Rust toolchain",
        "20 minutes",
    ] {
        assert!(readme[..does].contains(need), "prerequisite {need:?}");
    }
    // The rclone recipe warns about AWS_CA_BUNDLE right after it.
    let rclone = readme.find("rclone check ./pictures").unwrap();
    let note: String = readme[rclone..].chars().take(600).collect();
    assert!(note.contains("LoadCustomCABundleError") && note.contains("unset AWS_CA_BUNDLE"));
    // A bare `tinydfs` works only with the binary on the PATH: a block that uses it says so.
    for block in &blocks {
        let bare = block.iter().any(|l| program(l) == "tinydfs");
        let says_path = block
            .iter()
            .any(|l| l.starts_with('#') && l.contains("PATH"));
        assert!(
            !bare || says_path,
            "a README block runs `tinydfs` without saying it must be on the PATH:\n{}",
            block.join("\n")
        );
    }

    // A new user's cluster: `server` in a fresh folder (the README's `cargo run` starts the
    // same binary), on a free port rather than 9000, which may be in use on a test machine.
    let work = Workdir::new("readme");
    let s3 = format!("127.0.0.1:{}", free_port());
    let mut server = Server::start(&work.0, &["--s3-addr", &s3]);
    let banner = server.banner();
    let key = banner_value(&banner, "access key id:");
    let secret = banner_value(&banner, "secret access key:");
    let as_written = |line: &str| {
        line.replace("target/release/tinydfs", bin())
            .replace("127.0.0.1:9000", &s3)
    };

    // First steps: every `tinydfs admin`/`health` command, run as written from the folder
    // `server` ran in. The leader may still be settling (fsck then says "try again"): each
    // command gets a minute to succeed.
    let first_steps: Vec<String> = blocks
        .iter()
        .flatten()
        .filter(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w.first() == Some(&"target/release/tinydfs")
                && matches!(w.get(1), Some(&"admin") | Some(&"health"))
        })
        .cloned()
        .collect();
    assert!(
        first_steps.len() >= 3,
        "the README's first steps: {first_steps:?}"
    );
    for line in &first_steps {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = run_script(&work.0, &work.0, &as_written(line), &[]);
            if out.status.success() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "README command failed: {line}\n{}",
                text(&out)
            );
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    // Using it: the aws CLI and rclone blocks, with the keys `server` printed, and the tools
    // the test command installed (Debian's rclone 1.60, the one the note is about).
    let tools = work.0.join("bin");
    std::fs::create_dir_all(&tools).unwrap();
    std::os::unix::fs::symlink(tool("TINYDFS_AWS"), tools.join("aws")).unwrap();
    std::os::unix::fs::symlink(tool("TINYDFS_RCLONE_DEBIAN"), tools.join("rclone")).unwrap();
    let aws = block_with(&blocks, "aws --endpoint-url");
    let export = aws[0].clone();
    assert!(
        export.contains("AWS_ACCESS_KEY_ID=...") && export.contains("AWS_SECRET_ACCESS_KEY=...")
    );
    let with_keys = |line: &str| {
        as_written(line)
            .replace("AWS_ACCESS_KEY_ID=...", &format!("AWS_ACCESS_KEY_ID={key}"))
            .replace(
                "AWS_SECRET_ACCESS_KEY=...",
                &format!("AWS_SECRET_ACCESS_KEY={secret}"),
            )
    };
    std::fs::write(work.0.join("holiday.jpg"), common::data(300_000, 19)).unwrap();
    let script: Vec<String> = aws.iter().map(|l| with_keys(l)).collect();
    let out = run_script(&work.0, &tools, &script.join("\n"), &[]);
    assert!(out.status.success(), "README aws block:\n{}", text(&out));
    assert!(text(&out).contains("2026/holiday.jpg"), "{}", text(&out));

    std::fs::create_dir_all(work.0.join("pictures/2025")).unwrap();
    std::fs::write(work.0.join("pictures/cat.jpg"), common::data(70_000, 20)).unwrap();
    std::fs::write(work.0.join("pictures/2025/dog.jpg"), b"woof").unwrap();
    let rclone = block_with(&blocks, "rclone copy");
    let script = format!(
        "{}\n{}",
        with_keys(&export),
        rclone
            .iter()
            .map(|l| as_written(l))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // What the note says: with AWS_CA_BUNDLE set, even to a real file, rclone 1.60 stops...
    let readme_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let bundle = readme_path.to_str().unwrap();
    let out = run_script(&work.0, &tools, &script, &[("AWS_CA_BUNDLE", bundle)]);
    assert!(
        !out.status.success() && text(&out).contains("LoadCustomCABundleError"),
        "rclone with AWS_CA_BUNDLE set:\n{}",
        text(&out)
    );
    // ...and after the fix it says, the recipe works.
    let out = run_script(
        &work.0,
        &tools,
        &format!("unset AWS_CA_BUNDLE\n{script}"),
        &[("AWS_CA_BUNDLE", bundle)],
    );
    assert!(out.status.success(), "README rclone block:\n{}", text(&out));
    server.stop();
}

// ---------------------------------------------------------------------------------------------
// admin finds the local cluster
// ---------------------------------------------------------------------------------------------

#[test]
fn admin_uses_the_default_data_folder_when_it_exists() {
    let work = Workdir::new("admin-default");
    // No folder, no flags: the one-line error.
    let out = tinydfs(&work.0, &["admin", "status"]);
    assert!(!out.status.success());
    assert_eq!(
        last_error_line(&String::from_utf8_lossy(&out.stderr)),
        "tinydfs: give --master ADDR or --data-dir DIR"
    );

    let s3 = format!("127.0.0.1:{}", free_port());
    let mut server = Server::start(&work.0, &["--s3-addr", &s3, "--chunkservers", "1"]);
    server.banner();
    let out = tinydfs(&work.0, &["admin", "status", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let master = node(&work.data(), "master-1");
    assert!(
        status["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["role"] == "master" && n["addr"] == master["addr"]),
        "{status}"
    );
    // Other admin commands find it too.
    let out = tinydfs(&work.0, &["admin", "key", "list"]);
    assert!(out.status.success(), "{}", text(&out));
    // --master names another cluster: the folder is not used for it (nor its secret).
    let out = tinydfs(
        &work.0,
        &[
            "admin",
            "status",
            "--master",
            master["addr"].as_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    assert_eq!(
        last_error_line(&String::from_utf8_lossy(&out.stderr)),
        "tinydfs: set TINYDFS_CLUSTER_SECRET"
    );
    // Elsewhere there is no default.
    let elsewhere = Workdir::new("admin-elsewhere");
    let out = tinydfs(&elsewhere.0, &["admin", "status"]);
    assert!(!out.status.success());
    server.stop();
}

// ---------------------------------------------------------------------------------------------
// server announces success only when every node is up
// ---------------------------------------------------------------------------------------------

#[test]
fn a_busy_s3_port_fails_the_start_and_says_why() {
    // The worst case: the other program on the S3 port answers the gateway's health check
    // exactly as the gateway would.
    let taken = foreign_program("200 OK", r#"{"role":"gateway"}"#);
    let work = Workdir::new("busy-s3");
    let mut server = Server::start(&work.0, &["--s3-addr", &taken, "--chunkservers", "1"]);
    let status = server.exit();
    let (out, err) = (server.stdout.text(), server.stderr.text());
    assert!(!status.success(), "{out}\n{err}");
    assert!(!out.contains("tinydfs is running"), "{out}");
    let log = work
        .data()
        .canonicalize()
        .unwrap()
        .join("logs/gateway-1.log");
    let reason = last_error_line(&err);
    assert!(
        reason.starts_with("tinydfs: gateway-1 failed to start: ")
            && reason.contains("Address already in use")
            && reason.contains(&format!("{taken} is in use by another program"))
            && reason.contains("exited with code 1")
            && reason.contains(&log.display().to_string()),
        "{err}"
    );
    // The gateway's last log lines come first, its own error among them.
    let shown = err
        .split_once(&format!("last lines of {}", log.display()))
        .unwrap_or_else(|| panic!("no log lines shown:\n{err}"))
        .1;
    assert!(shown.contains("tinydfs: Address already in use"), "{err}");
    // Every node it had started is stopped.
    for n in cluster_file(&work.data())["nodes"].as_array().unwrap() {
        let pid = n["pid"].as_u64().unwrap();
        assert!(gone(pid), "{} (pid {pid}) still runs", n["name"]);
    }
}

#[test]
fn a_second_server_on_a_running_clusters_folder_exits_naming_the_holder() {
    let work = Workdir::new("second-server");
    let s3 = format!("127.0.0.1:{}", free_port());
    let mut first = Server::start(&work.0, &["--s3-addr", &s3, "--chunkservers", "1"]);
    first.banner();
    let data = work.data().canonicalize().unwrap();
    let files =
        || ["cluster.json", "ops.json"].map(|f| std::fs::read_to_string(data.join(f)).unwrap());
    let before = files();
    let other = format!("127.0.0.1:{}", free_port());
    let mut second = Server::start(&work.0, &["--s3-addr", &other, "--chunkservers", "1"]);
    let status = second.exit();
    assert!(!status.success());
    assert!(!second.stdout.text().contains("tinydfs is running"));
    let reason = last_error_line(&second.stderr.text());
    assert_eq!(
        reason,
        format!(
            "tinydfs: {} is in use by another tinydfs process (pid {}); stop it first",
            data.display(),
            first.child.id()
        )
    );
    // Nothing of the running cluster's was touched.
    assert_eq!(files(), before);
    first.stop();
}

#[test]
fn a_busy_master_port_fails_the_start_and_says_why() {
    let work = Workdir::new("busy-master");
    // The master's address is kept from an earlier run; another program has it now.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    std::fs::create_dir_all(work.data()).unwrap();
    std::fs::write(work.data().join("masters.json"), format!("[\"{addr}\"]")).unwrap();
    let s3 = format!("127.0.0.1:{}", free_port());
    let mut server = Server::start(&work.0, &["--s3-addr", &s3, "--chunkservers", "1"]);
    let status = server.exit();
    let (out, err) = (server.stdout.text(), server.stderr.text());
    assert!(
        !status.success() && !out.contains("tinydfs is running"),
        "{out}\n{err}"
    );
    let reason = last_error_line(&err);
    assert!(
        reason.starts_with("tinydfs: master-1 failed to start: Address already in use")
            && reason.contains(&format!("{addr} is in use by another program")),
        "{err}"
    );
    assert!(err.contains("last lines of"), "{err}");
    // Nothing else was started.
    assert!(!work.data().join("logs/chunkserver-1.log").exists());
    drop(taken);
}

#[test]
fn a_node_that_ends_later_is_reported_with_how_and_its_log() {
    let work = Workdir::new("node-ends");
    let s3 = format!("127.0.0.1:{}", free_port());
    let mut server = Server::start(&work.0, &["--s3-addr", &s3, "--chunkservers", "1"]);
    server.banner();
    let data = work.data().canonicalize().unwrap();
    let reported = |what: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !server.stderr.text().contains(what) {
            assert!(
                Instant::now() < deadline,
                "not reported: {what}\n{}",
                server.stderr.text()
            );
            std::thread::sleep(POLL);
        }
    };
    let pid = node(&data, "chunkserver-1")["pid"].as_u64().unwrap();
    signal(pid as u32, nix::sys::signal::Signal::SIGKILL);
    reported(&format!(
        "tinydfs: chunkserver-1 was killed by signal 9 (SIGKILL); it is not restarted (log: {})",
        data.join("logs/chunkserver-1.log").display()
    ));
    let pid = node(&data, "gateway-1")["pid"].as_u64().unwrap();
    signal(pid as u32, nix::sys::signal::Signal::SIGTERM);
    reported(&format!(
        "tinydfs: gateway-1 exited with code 0; it is not restarted (log: {})",
        data.join("logs/gateway-1.log").display()
    ));
    // The others keep running under the server.
    assert!(server.child.try_wait().unwrap().is_none());
    server.stop();
}

// ---------------------------------------------------------------------------------------------
// One health check on every listener
// ---------------------------------------------------------------------------------------------

#[test]
fn health_answers_on_every_address_the_banner_prints() {
    let work = Workdir::new("health");
    let s3 = format!("127.0.0.1:{}", free_port());
    let mut server = Server::start(&work.0, &["--s3-addr", &s3, "--chunkservers", "1"]);
    let banner = server.banner();
    let printed = addresses_in(&banner);
    // The banner prints every listener of every node...
    for n in cluster_file(&work.data())["nodes"].as_array().unwrap() {
        for key in ["addr", "ops_addr"] {
            let a = n[key].as_str().unwrap();
            assert!(
                printed.iter().any(|p| p == a),
                "{} {key} {a} is not printed:\n{banner}",
                n["name"]
            );
        }
    }
    // ...and `tinydfs health` answers on each, as written there (URLs included), naming the
    // role of the node that answers.
    for a in &printed {
        let out = tinydfs(&work.0, &["health", a]);
        assert!(out.status.success(), "tinydfs health {a}: {}", text(&out));
        assert!(text(&out).contains("healthy ("), "{}", text(&out));
    }
    for n in cluster_file(&work.data())["nodes"].as_array().unwrap() {
        for key in ["addr", "ops_addr"] {
            let out = tinydfs(&work.0, &["health", n[key].as_str().unwrap()]);
            let role = n["role"].as_str().unwrap();
            assert!(
                text(&out).contains(&format!("healthy ({role})")),
                "{}",
                text(&out)
            );
        }
    }
    // Not every answer is a tinydfs node's.
    let other = foreign_program("200 OK", "OK");
    let out = tinydfs(&work.0, &["health", &other]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("not as a tinydfs node"),
        "{}",
        text(&out)
    );
    let missing = foreign_program("404 Not Found", "");
    let out = tinydfs(&work.0, &["health", &missing]);
    assert!(!out.status.success(), "{}", text(&out));
    let nobody = format!("127.0.0.1:{}", free_port());
    let out = tinydfs(&work.0, &["health", &nobody, "--timeout", "5"]);
    assert!(!out.status.success());
    server.stop();
}

// ---------------------------------------------------------------------------------------------
// Operations addresses
// ---------------------------------------------------------------------------------------------

#[test]
fn operations_addresses_are_printed_listed_and_kept() {
    let work = Workdir::new("ops");
    let s3 = format!("127.0.0.1:{}", free_port());
    let args = ["--s3-addr", s3.as_str(), "--chunkservers", "1"];
    let mut server = Server::start(&work.0, &args);
    let first = banner_nodes(&server.banner());
    let names: Vec<&str> = first.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(names, ["master-1", "chunkserver-1", "gateway-1"]);
    // As cluster.json has them; each serves metrics.
    for (name, addr, ops) in &first {
        let n = node(&work.data(), name);
        assert_eq!(
            (n["addr"].as_str(), n["ops_addr"].as_str()),
            (Some(addr.as_str()), Some(ops.as_str()))
        );
        let (status, body) = http_get(ops, "/metrics");
        assert_eq!(status, 200, "{name} {ops}/metrics");
        assert!(
            body.contains("tinydfs_process_start_time_seconds"),
            "{body}"
        );
    }
    // `admin status` lists them, on each node's line.
    let out = tinydfs(&work.0, &["admin", "status"]);
    let listing = text(&out);
    assert!(
        out.status.success() && listing.contains(" OPS "),
        "{listing}"
    );
    for (name, addr, ops) in &first {
        assert!(
            listing
                .lines()
                .any(|l| l.contains(addr.as_str()) && l.contains(ops.as_str())),
            "{name}'s operations address {ops} is not on its line:\n{listing}"
        );
    }

    // The same folder started again: the same operations addresses.
    server.stop();
    let mut server = Server::start(&work.0, &args);
    let second = banner_nodes(&server.banner());
    assert_eq!(ops_by_name(&first), ops_by_name(&second));

    // One of them taken by another program meanwhile: the node gets another, says so, and
    // keeps the new one.
    server.stop();
    let (_, _, master_ops) = &first[0];
    let taken = TcpListener::bind(master_ops.as_str()).unwrap();
    let mut server = Server::start(&work.0, &args);
    let third = banner_nodes(&server.banner());
    let (_, _, moved) = &third[0];
    assert_ne!(moved, master_ops);
    assert!(
        server.stderr.text().contains(&format!(
            "{master_ops}, the operations address of master-1, is taken"
        )),
        "{}",
        server.stderr.text()
    );
    // The others keep theirs.
    assert_eq!(ops_by_name(&second)[1..], ops_by_name(&third)[1..]);
    server.stop();
    drop(taken);
    let mut server = Server::start(&work.0, &args);
    let fourth = banner_nodes(&server.banner());
    assert_eq!(&fourth[0].2, moved);
    server.stop();
}

// ---------------------------------------------------------------------------------------------
// Small things
// ---------------------------------------------------------------------------------------------

#[test]
fn logs_are_plain_text_and_output_reads_as_words() {
    let work = Workdir::new("words");
    let s3 = format!("127.0.0.1:{}", free_port());
    let mut server = Server::start(&work.0, &["--s3-addr", &s3, "--chunkservers", "1"]);
    let banner = server.banner();
    assert!(
        banner.contains("nodes: 1 master, 1 chunkserver, 1 gateway"),
        "{banner}"
    );

    // FREE for people, bytes for scripts.
    let out = tinydfs(&work.0, &["admin", "status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let free = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["role"] == "chunkserver")
        .and_then(|n| n["free"].as_u64())
        .expect("free bytes in --json");
    assert!(free > 0, "{status}");
    let out = tinydfs(&work.0, &["admin", "status"]);
    let listing = text(&out);
    let row = listing
        .lines()
        .find(|l| l.starts_with("chunkserver"))
        .unwrap_or_else(|| panic!("{listing}"));
    assert!(
        ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
            .iter()
            .any(|u| row.split_whitespace().any(|w| w == *u)),
        "FREE is not in human units: {row}"
    );
    assert!(!row.contains(&free.to_string()), "{row}");

    // Bucket sizes too: 1.5 KiB in one object.
    let key = banner_value(&banner, "access key id:");
    let secret = banner_value(&banner, "secret access key:");
    let client = common::sdk_client(&format!("http://{s3}"), &key, &secret, true);
    common::rt().block_on(async {
        client.create_bucket().bucket("words").send().await.unwrap();
        common::put(&client, "words", "k", vec![7; 1536])
            .await
            .unwrap();
    });
    let out = tinydfs(&work.0, &["admin", "buckets"]);
    let row = text(&out)
        .lines()
        .find(|l| l.starts_with("words "))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("{}", text(&out)));
    assert!(row.contains(" 1.5 KiB "), "{row}");
    let out = tinydfs(&work.0, &["admin", "buckets", "--json"]);
    assert!(text(&out).contains("1536"), "{}", text(&out));

    // No colour codes in the logs (the nodes' standard error is a file).
    server.stop();
    for log in std::fs::read_dir(work.data().join("logs"))
        .unwrap()
        .flatten()
    {
        let text = std::fs::read_to_string(log.path()).unwrap();
        assert!(!text.is_empty(), "{} is empty", log.path().display());
        assert!(
            !text.contains('\u{1b}'),
            "{} has ANSI escape codes",
            log.path().display()
        );
    }
}
