//! End-to-end test of the Docker Compose deployment (`compose.yml`, `docker/Dockerfile`,
//! `scripts/docker-image.sh`): builds the image FROM scratch out of the binary this test suite
//! built, starts the cluster (3 masters, 4 chunkservers in zones z1/z2, the gateway) under a
//! project name of its own with the S3 port on a free loopback port, and drives it with the aws
//! CLI through that port: uploads and downloads (bytes compared, objects of one chunk, several
//! chunks and several multipart parts), reads after `docker kill` of a chunkserver, a write while
//! it is dead, and its return (it rejoins, repairs settle, fsck is clean, everything reads back).
//!
//! Needs the Docker engine, a Compose (`docker compose` v2 when it answers, else
//! `docker-compose` v1) and the aws CLI named by `TINYDFS_AWS` (`scripts/test.sh` sets it). A
//! missing tool fails the test: it never skips. The containers, network, volumes and the test's
//! image tag are removed when the test ends, pass or fail (a `Drop` guard).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const MIB: usize = 1024 * 1024;
/// Chunk size given to the gateway (through `TINYDFS_CHUNK_SIZE`): small, so that objects of a
/// few MiB span several chunks.
const CHUNK_SIZE: usize = MIB;
/// How long a cluster gets to become healthy, a node to be seen dead or back, repairs to
/// settle: generous, the machine may be slow and busy.
const WAIT: Duration = Duration::from_secs(300);
/// Between two polls of a condition.
const POLL: Duration = Duration::from_secs(2);
const ACCESS_KEY: &str = "TDCOMPOSEACCESSKEY";
const SECRET_KEY: &str = "tdcomposesecretkey0123456789";
const SERVICES: [&str; 8] = [
    "master1",
    "master2",
    "master3",
    "chunkserver1",
    "chunkserver2",
    "chunkserver3",
    "chunkserver4",
    "gateway",
];

// ---------------------------------------------------------------------------------------------
// Tools
// ---------------------------------------------------------------------------------------------

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The path of a tool named by an environment variable; panics if it is unset or missing.
fn tool(var: &str) -> PathBuf {
    let path = std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| {
            panic!(
                "environment variable {var} is not set (or empty): run the tests with \
                 scripts/test.sh (it installs the client tools and sets {var})"
            )
        });
    let path = PathBuf::from(path);
    let meta = std::fs::metadata(&path).unwrap_or_else(|e| {
        panic!(
            "{var}={} does not exist ({e}); run scripts/setup-test-tools.sh",
            path.display()
        )
    });
    use std::os::unix::fs::PermissionsExt;
    assert!(
        meta.is_file() && meta.permissions().mode() & 0o111 != 0,
        "{var}={} is not an executable file",
        path.display()
    );
    path
}

/// Runs `cmd`; returns its output whether it succeeded or not. Panics if it cannot start.
fn output(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs `cmd` and panics, with everything it printed, unless it succeeds. Returns stdout.
fn run(cmd: &mut Command) -> String {
    let out = output(cmd);
    if !out.status.success() {
        panic!(
            "{cmd:?} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8(out.stdout).expect("tool output is UTF-8")
}

/// The Compose command: `docker compose` (v2) if it answers, else `docker-compose` (v1).
/// Panics when neither is installed, or when the Docker engine does not answer.
fn compose_program() -> Vec<String> {
    let docker =
        output(Command::new("docker").args(["version", "--format", "{{.Server.Version}}"]));
    assert!(
        docker.status.success(),
        "the Docker engine does not answer (`docker version`): {}\n\
         install Docker and start it (scripts/setup-test-tools.sh checks for it)",
        String::from_utf8_lossy(&docker.stderr)
    );
    let answers = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if answers("docker", &["compose", "version"]) {
        vec!["docker".into(), "compose".into()]
    } else if answers("docker-compose", &["version"]) {
        vec!["docker-compose".into()]
    } else {
        panic!(
            "neither `docker compose` (v2) nor `docker-compose` (v1) works: install one \
             (scripts/setup-test-tools.sh installs Debian's docker-compose)"
        )
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Deterministic bytes that do not compress.
fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        // xorshift64*
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

// ---------------------------------------------------------------------------------------------
// The cluster
// ---------------------------------------------------------------------------------------------

/// One Compose project of `compose.yml`. Dropping it removes its containers, network and
/// volumes (`down -v`), the test image and the scratch folder, after printing the nodes' last
/// log lines if the test is failing.
struct Project {
    compose: Vec<String>,
    name: String,
    image: String,
    secret: String,
    /// `127.0.0.1:PORT`, the published S3 port.
    s3_addr: String,
    /// `127.0.0.1:PORT`, master1's published operations port (status page, metrics).
    status_addr: String,
    scratch: PathBuf,
    started: Instant,
}

impl Project {
    fn new() -> Project {
        let compose = compose_program();
        let suffix = format!("{:08x}", rand::random::<u32>());
        let name = format!("tinydfs-test-{suffix}");
        let scratch = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("compose-{suffix}"));
        std::fs::create_dir_all(&scratch).unwrap();
        Project {
            compose,
            image: format!("tinydfs-compose-test:{suffix}"),
            secret: format!(
                "{:016x}{:016x}",
                rand::random::<u64>(),
                rand::random::<u64>()
            ),
            s3_addr: format!("127.0.0.1:{}", free_port()),
            status_addr: format!("127.0.0.1:{}", free_port()),
            name,
            scratch,
            started: Instant::now(),
        }
    }

    fn say(&self, what: &str) {
        eprintln!(
            "[compose {:6.1}s] {what}",
            self.started.elapsed().as_secs_f64()
        );
    }

    /// `docker compose -p NAME -f compose.yml ARGS` with the project's environment (and no
    /// other TINYDFS_ variable of the caller's, which compose.yml would read).
    fn cmd<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(&self.compose[0]);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("TINYDFS_") {
                cmd.env_remove(k);
            }
        }
        cmd.current_dir(repo())
            .args(&self.compose[1..])
            .args(["-p", &self.name, "-f"])
            .arg(repo().join("compose.yml"))
            .env("TINYDFS_IMAGE", &self.image)
            .env("TINYDFS_CLUSTER_SECRET", &self.secret)
            .env("TINYDFS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("TINYDFS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("TINYDFS_S3_PORT", &self.s3_addr)
            .env("TINYDFS_STATUS_PORT", &self.status_addr)
            .env("TINYDFS_CHUNK_SIZE", CHUNK_SIZE.to_string())
            .args(args);
        cmd
    }

    /// The container id of a service.
    fn container(&self, service: &str) -> String {
        let id = run(&mut self.cmd(["ps", "-q", service])).trim().to_string();
        assert!(
            !id.is_empty() && !id.contains('\n'),
            "expected one container for {service}, `ps -q` says {id:?}"
        );
        id
    }

    /// Docker's health state of a container: healthy, unhealthy, starting; or its status
    /// (exited, ...) when it is not running.
    fn health(&self, id: &str) -> String {
        run(Command::new("docker").args([
            "inspect",
            "--format",
            "{{if .State.Running}}{{if .State.Health}}{{.State.Health.Status}}{{else}}running{{end}}{{else}}{{.State.Status}}{{end}}",
            id,
        ]))
        .trim()
        .to_string()
    }

    /// Waits until Docker reports every service's container healthy.
    fn wait_all_healthy(&self) {
        let ids: Vec<(&str, String)> = SERVICES.iter().map(|s| (*s, self.container(s))).collect();
        wait_until("every container to be healthy", || {
            let states: Vec<String> = ids
                .iter()
                .map(|(s, id)| format!("{s}={}", self.health(id)))
                .collect();
            let ok = states.iter().all(|s| s.ends_with("=healthy"));
            (ok, states.join(" "))
        });
    }

    /// `tinydfs admin ARGS`, run inside master1's container: the binary is in the image, and
    /// the masters' addresses (`TINYDFS_MASTERS`) and the secret are in its environment.
    fn admin(&self, args: &[&str]) -> Output {
        let mut cmd = self.cmd(["exec", "-T", "master1", "tinydfs", "admin"]);
        cmd.args(args);
        output(&mut cmd)
    }

    /// The cluster status as `admin status --json` prints it.
    fn status(&self) -> Result<serde_json::Value, String> {
        let out = self.admin(&["status", "--json"]);
        if !out.status.success() {
            return Err(format!(
                "admin status failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        serde_json::from_slice(&out.stdout).map_err(|e| format!("admin status is not JSON: {e}"))
    }

    /// Waits until `pred(status)` holds.
    fn wait_status(&self, what: &str, pred: impl Fn(&serde_json::Value) -> bool) {
        wait_until(what, || match self.status() {
            Ok(s) => (pred(&s), s.to_string()),
            Err(e) => (false, e),
        });
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let logs = output(&mut self.cmd(["logs", "--no-color", "--tail", "60"]));
            eprintln!(
                "--- last log lines of the cluster {}:\n{}{}",
                self.name,
                String::from_utf8_lossy(&logs.stdout),
                String::from_utf8_lossy(&logs.stderr)
            );
        }
        let down = output(&mut self.cmd(["down", "-v", "--remove-orphans", "-t", "20"]));
        if !down.status.success() {
            eprintln!(
                "WARNING: `down -v` of the compose project {} failed: {}",
                self.name,
                String::from_utf8_lossy(&down.stderr)
            );
        }
        let rmi = output(Command::new("docker").args(["image", "rm", &self.image]));
        if !rmi.status.success() {
            let err = String::from_utf8_lossy(&rmi.stderr);
            // The image may never have been built if the test failed before that.
            if !err.contains("No such image") {
                eprintln!("WARNING: docker image rm {} failed: {err}", self.image);
            }
        }
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

/// Polls `check` (which returns whether the condition holds and what it saw) until it holds;
/// panics with the last observation after [`WAIT`].
fn wait_until(what: &str, mut check: impl FnMut() -> (bool, String)) {
    let deadline = Instant::now() + WAIT;
    loop {
        let (ok, seen) = check();
        if ok {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {WAIT:?} waiting for {what}; last seen: {seen}"
        );
        std::thread::sleep(POLL);
    }
}

/// The state (`alive`, `dead`, ...) the master reports for the node at `addr`.
fn node_state(status: &serde_json::Value, addr: &str) -> Option<String> {
    status["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["addr"] == addr)
        .and_then(|n| n["state"].as_str().map(String::from))
}

fn chunkservers_alive(status: &serde_json::Value) -> usize {
    status["nodes"].as_array().map_or(0, |nodes| {
        nodes
            .iter()
            .filter(|n| n["role"] == "chunkserver" && n["state"] == "alive")
            .count()
    })
}

fn has_leader(status: &serde_json::Value) -> bool {
    status["nodes"].as_array().is_some_and(|nodes| {
        nodes
            .iter()
            .any(|n| n["role"] == "master" && n["state"] == "leader")
    })
}

/// Repairs have settled: the leader has seen every chunkserver report and no chunk lacks copies.
fn settled(status: &serde_json::Value) -> bool {
    status["settled"] == true && status["under_replicated"] == 0 && status["lost"] == 0
}

// ---------------------------------------------------------------------------------------------
// The aws CLI
// ---------------------------------------------------------------------------------------------

struct Aws {
    bin: PathBuf,
    config: PathBuf,
    endpoint: String,
}

impl Aws {
    fn new(project: &Project) -> Aws {
        let config = project.scratch.join("aws-config");
        // Retries off: a server error must be seen, not hidden by a successful retry.
        std::fs::write(
            &config,
            "[default]\nregion = us-east-1\nretry_mode = standard\nmax_attempts = 1\n\
             s3 =\n    addressing_style = path\n",
        )
        .unwrap();
        Aws {
            bin: tool("TINYDFS_AWS"),
            config,
            endpoint: format!("http://{}", project.s3_addr),
        }
    }

    fn run<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(&self.bin);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("AWS_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("AWS_CONFIG_FILE", &self.config)
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                self.config.with_file_name("aws-no-credentials"),
            )
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_PAGER", "")
            .arg("--endpoint-url")
            .arg(&self.endpoint)
            .args(args);
        run(&mut cmd)
    }

    fn cp(&self, src: impl AsRef<OsStr>, dst: impl AsRef<OsStr>) {
        let args: [&OsStr; 5] = [
            "s3".as_ref(),
            "cp".as_ref(),
            "--no-progress".as_ref(),
            src.as_ref(),
            dst.as_ref(),
        ];
        self.run(args);
    }
}

/// Downloads every object of `objects` (key, local original) from `bucket` and compares bytes.
fn read_back(aws: &Aws, scratch: &Path, bucket: &str, objects: &[(String, PathBuf)], when: &str) {
    for (key, original) in objects {
        let copy = scratch.join(format!("{key}.{}", when.replace(' ', "-")));
        aws.cp(format!("s3://{bucket}/{key}"), &copy);
        let (want, got) = (
            std::fs::read(original).unwrap(),
            std::fs::read(&copy).unwrap(),
        );
        assert!(
            want == got,
            "{when}: {bucket}/{key} read back {} bytes that differ from the {} uploaded",
            got.len(),
            want.len()
        );
        std::fs::remove_file(&copy).unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------------------------

#[test]
fn compose_cluster_serves_s3_and_survives_a_chunkserver_kill() {
    let project = Project::new();
    let aws = Aws::new(&project);
    project.say(&format!(
        "project {} with {} on {}",
        project.name,
        project.compose.join(" "),
        project.s3_addr
    ));

    // The image, from the binary cargo built for this test run.
    run(Command::new(repo().join("scripts/docker-image.sh"))
        .current_dir(repo())
        .args([
            "--binary",
            env!("CARGO_BIN_EXE_tinydfs"),
            "--tag",
            &project.image,
        ]));
    project.say(&format!("image {} built", project.image));

    // `up` waits for the masters and chunkservers to be healthy (depends_on conditions) before
    // it creates the gateway; then wait for the gateway too, and for the cluster to be whole.
    run(&mut project.cmd(["up", "-d"]));
    project.wait_all_healthy();
    project.wait_status("a leader and 4 live chunkservers", |s| {
        has_leader(s) && chunkservers_alive(s) == 4
    });
    project.say("cluster healthy: 3 masters, 4 chunkservers, gateway");
    // master1's operations listener is published: the status page and Prometheus metrics.
    let fetch = |path: &str| {
        let url = format!("http://{}{path}", project.status_addr);
        tokio::runtime::Runtime::new().unwrap().block_on(async {
            let r = reqwest::get(&url)
                .await
                .unwrap_or_else(|e| panic!("{url}: {e}"));
            assert!(r.status().is_success(), "{url}: {}", r.status());
            r.text().await.unwrap()
        })
    };
    let page = fetch("/");
    for n in 1..=4 {
        assert!(
            page.contains(&format!("chunkserver{n}:9200")),
            "status page:\n{page}"
        );
    }
    assert!(fetch("/metrics").contains("tinydfs_master_raft_term"));

    // Uploads: one chunk; several chunks (a single PUT); several multipart parts (the aws CLI
    // switches to multipart at 8 MiB).
    let bucket = "compose-test";
    aws.run(["s3", "mb", &format!("s3://{bucket}")]);
    let sizes = [
        ("small.txt", 1000),
        ("five-chunks.bin", 5 * CHUNK_SIZE + 123),
        ("multipart.bin", 20 * MIB + 7),
    ];
    let mut objects = Vec::new();
    for (i, (key, size)) in sizes.iter().enumerate() {
        let path = project.scratch.join(key);
        std::fs::write(&path, pseudo_random(*size, i as u64 + 1)).unwrap();
        aws.cp(&path, format!("s3://{bucket}/{key}"));
        objects.push((key.to_string(), path));
    }
    let listing = aws.run(["s3", "ls", &format!("s3://{bucket}/")]);
    for (key, size) in sizes {
        assert!(
            listing
                .lines()
                .any(|l| l.ends_with(&format!(" {key}")) && l.contains(&format!(" {size} "))),
            "`aws s3 ls` does not list {key} with {size} bytes:\n{listing}"
        );
    }
    read_back(&aws, &project.scratch, bucket, &objects, "after upload");
    project.say("uploaded and read back 3 objects");
    project.wait_status("the objects fully replicated", |s| {
        settled(s) && s["objects"] == 3
    });

    // A chunkserver dies: reads fail over to other copies at once.
    let victim = project.container("chunkserver2");
    run(Command::new("docker").args(["kill", &victim]));
    project.say("killed chunkserver2");
    read_back(
        &aws,
        &project.scratch,
        bucket,
        &objects,
        "with chunkserver2 killed",
    );
    project.say("read everything back with chunkserver2 down");

    // Once the master has declared it dead, writes go to the three others.
    project.wait_status("chunkserver2 to be declared dead", |s| {
        node_state(s, "chunkserver2:9200").as_deref() == Some("dead")
    });
    let late = project.scratch.join("while-dead.bin");
    std::fs::write(&late, pseudo_random(3 * CHUNK_SIZE + 5, 99)).unwrap();
    aws.cp(&late, format!("s3://{bucket}/while-dead.bin"));
    objects.push(("while-dead.bin".to_string(), late));
    read_back(
        &aws,
        &project.scratch,
        bucket,
        &objects,
        "written while chunkserver2 is dead",
    );
    project.say("chunkserver2 declared dead; wrote and read another object");

    // It comes back with its volume: it rejoins, repairs and surplus removal settle.
    run(&mut project.cmd(["start", "chunkserver2"]));
    project.wait_status("chunkserver2 to rejoin", |s| {
        node_state(s, "chunkserver2:9200").as_deref() == Some("alive") && chunkservers_alive(s) == 4
    });
    assert_eq!(
        project.container("chunkserver2"),
        victim,
        "chunkserver2 came back as another container"
    );
    project.wait_all_healthy();
    project.wait_status("repairs to settle with 4 objects", |s| {
        settled(s) && s["objects"] == 4
    });
    wait_until("fsck to report a healthy cluster", || {
        let out = project.admin(&["fsck"]);
        (
            out.status.success(),
            format!(
                "{}: {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    });
    read_back(
        &aws,
        &project.scratch,
        bucket,
        &objects,
        "after chunkserver2 rejoined",
    );
    project.say("chunkserver2 rejoined; fsck clean; everything reads back");
}
