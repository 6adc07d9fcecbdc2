//! The cluster started role by role (`tinydfs master`, `chunkserver`, `gateway`) works like the
//! one `tinydfs server` starts, and `tinydfs health` tells live nodes from dead addresses.

mod common;

use aws_sdk_s3::primitives::ByteStream;
use common::*;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn start(args: &[&str], secret: &str, log: &std::path::Path) -> Child {
    let log = std::fs::File::create(log).unwrap();
    Command::new(bin())
        .args(args)
        .env("TINYDFS_CLUSTER_SECRET", secret)
        .env("TINYDFS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("TINYDFS_SECRET_ACCESS_KEY", SECRET_KEY)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

fn healthy(addr: &str) -> bool {
    Command::new(bin())
        .args(["health", addr, "--timeout", "1"])
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

fn wait_healthy(addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !healthy(addr) {
        assert!(Instant::now() < deadline, "{addr} never became healthy");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn roles_started_by_hand_form_a_working_cluster() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("roles-{:08x}", rand::random::<u32>()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret = "roles-test-secret";
    let master = format!("127.0.0.1:{}", free_port());
    let nobody = format!("127.0.0.1:{}", free_port());
    let s3 = format!("127.0.0.1:{}", free_port());
    assert!(!healthy(&nobody), "health must fail where nothing listens");
    let mut procs = Procs(Vec::new());
    let mdir = dir.join("master");
    procs.0.push(start(
        &[
            "master",
            "--listen",
            &master,
            "--data-dir",
            mdir.to_str().unwrap(),
            "--dead-node-timeout-secs",
            "3",
        ],
        secret,
        &dir.join("master.log"),
    ));
    wait_healthy(&master);
    // Chunkservers and the gateway get a list of masters whose first entry is dead: they must
    // find the live one themselves.
    let masters = format!("{nobody},{master}");
    for i in 0..3 {
        let addr = format!("127.0.0.1:{}", free_port());
        let d = dir.join(format!("cs{i}"));
        procs.0.push(start(
            &[
                "chunkserver",
                "--listen",
                &addr,
                "--data-dir",
                d.to_str().unwrap(),
                "--masters",
                &masters,
                "--heartbeat-ms",
                "200",
            ],
            secret,
            &dir.join(format!("cs{i}.log")),
        ));
        wait_healthy(&addr);
    }
    // The gateway reads a config file, with flags overriding it.
    let conf = dir.join("gateway.toml");
    std::fs::write(&conf, format!("listen = \"127.0.0.1:1\"\nmasters = [\"{nobody}\", \"{master}\"]\nchunk_size = 100000\n")).unwrap();
    procs.0.push(start(
        &[
            "gateway",
            "--config",
            conf.to_str().unwrap(),
            "--listen",
            &s3,
        ],
        secret,
        &dir.join("gateway.log"),
    ));
    wait_healthy(&s3);
    // Wait until the three chunkservers have registered.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = Command::new(bin())
            .args(["admin", "status", "--json", "--master", &master])
            .env("TINYDFS_CLUSTER_SECRET", secret)
            .output()
            .unwrap();
        if out.status.success() {
            let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let alive = s["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|n| n["role"] == "chunkserver" && n["state"] == "alive")
                .count();
            // The gateway reports itself too, with its process id: status lists every node.
            let gateway = s["nodes"].as_array().unwrap().iter().any(|n| {
                n["role"] == "gateway"
                    && n["state"] == "alive"
                    && n["addr"] == s3.as_str()
                    && n["pid"].as_u64().unwrap_or(0) > 0
            });
            if alive == 3 && gateway {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "chunkservers or the gateway did not report"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // A wrong secret is refused by admin.
    let out = Command::new(bin())
        .args(["admin", "status", "--master", &master])
        .env("TINYDFS_CLUSTER_SECRET", "wrong")
        .output()
        .unwrap();
    assert!(!out.status.success());

    let c = sdk_client(&format!("http://{s3}"), ACCESS_KEY, SECRET_KEY, true);
    let body = data(450_000, 8);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            c.create_bucket().bucket("byhand").send().await.unwrap();
            c.put_object()
                .bucket("byhand")
                .key("k")
                .body(ByteStream::from(body.clone()))
                .send()
                .await
                .unwrap();
            let got = c
                .get_object()
                .bucket("byhand")
                .key("k")
                .send()
                .await
                .unwrap();
            assert!(got.body.collect().await.unwrap().into_bytes().as_ref() == body.as_slice());
        });
    // 450,000 bytes in the configured 100,000-byte chunks: 5 chunks.
    let out = Command::new(bin())
        .args(["admin", "status", "--json", "--master", &master])
        .env("TINYDFS_CLUSTER_SECRET", secret)
        .output()
        .unwrap();
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["chunks"], 5);
    drop(procs);
    let _ = std::fs::remove_dir_all(&dir);
}
