//! The read-only operations listeners of a real cluster: health and Prometheus metrics on every
//! node, nothing else (no internal route, no secret), and the master's status page rendered by
//! a real headless Chromium before and after a chunkserver dies.

mod common;

use common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// GETs `path` from `addr`: (status, body).
async fn http_get(addr: &str, path: &str) -> (u16, String) {
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let resp = http
        .get(format!("http://{addr}{path}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {addr}{path}: {e}"));
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

/// The value of one series (`name{labels}` exactly as exposed) in Prometheus text.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().unwrap())
}

fn must(text: &str, series: &str) -> f64 {
    sample(text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"))
}

fn ops_addr(node: &serde_json::Value) -> String {
    let a = node["ops_addr"].as_str().unwrap_or_default().to_string();
    assert!(!a.is_empty(), "no ops_addr in cluster.json for {node}");
    a
}

#[test]
fn every_node_serves_health_and_metrics_and_nothing_else() {
    let cluster = Cluster::start(Opts::default());
    let secret = std::fs::read_to_string(cluster.dir.join("cluster.secret")).unwrap();
    let secret = secret.trim();
    assert!(secret.len() >= 32);
    let nodes = cluster.nodes();
    assert_eq!(nodes.len(), 5, "1 master, 3 chunkservers, 1 gateway");
    let rt = rt();
    let size = TEST_CHUNK as usize + 1000; // two chunks each
    rt.block_on(async {
        let s3 = cluster.client();
        s3.create_bucket().bucket("ops").send().await.unwrap();
        let body = data(size, 7);
        for i in 0..3 {
            put(&s3, "ops", &format!("k{i}"), body.clone())
                .await
                .unwrap();
        }
        for i in 0..3 {
            assert!(get(&s3, "ops", &format!("k{i}")).await.unwrap() == body);
        }
        assert!(get(&s3, "ops", "missing").await.is_err());
    });

    let by_role = |role: &str| -> Vec<serde_json::Value> {
        nodes
            .iter()
            .filter(|n| n["role"] == role)
            .cloned()
            .collect()
    };
    rt.block_on(async {
        for n in &nodes {
            let addr = ops_addr(n);
            let (status, health) = http_get(&addr, "/health").await;
            assert_eq!(status, 200, "{n}");
            assert!(health.contains(n["role"].as_str().unwrap()), "{health}");
            let (status, metrics) = http_get(&addr, "/metrics").await;
            assert_eq!(status, 200);
            assert!(must(&metrics, "tinydfs_process_start_time_seconds") > 1.6e9);
            let mut seen = vec![health, metrics];
            for path in [
                "/internal/v1/status",
                "/internal/v1/meta/read",
                "/internal/v1/chunk/00000000000000000000000000000001",
                "/_health",
                "/ops/k0",
                "/nothing-here",
            ] {
                let (status, body) = http_get(&addr, path).await;
                assert_eq!(status, 404, "{path} on {n}");
                seen.push(body);
            }
            if n["role"] == "master" {
                let (status, page) = http_get(&addr, "/").await;
                assert_eq!(status, 200);
                assert!(page.contains("<title>tinydfs status</title>"));
                seen.push(page);
            } else {
                assert_eq!(http_get(&addr, "/").await.0, 404, "{n}");
            }
            for body in &seen {
                assert!(!body.contains(secret), "the cluster secret leaked on {n}");
                assert!(
                    !body.contains(SECRET_KEY),
                    "the S3 secret key leaked on {n}"
                );
            }
        }

        let gw = http_get(&ops_addr(&by_role("gateway")[0]), "/metrics")
            .await
            .1;
        let put_ok = r#"tinydfs_s3_requests_total{op="PutObject",status="200"}"#;
        assert!(must(&gw, put_ok) >= 3.0, "{gw}");
        assert!(
            must(
                &gw,
                r#"tinydfs_s3_requests_total{op="GetObject",status="200"}"#
            ) >= 3.0
        );
        assert!(
            must(
                &gw,
                r#"tinydfs_s3_requests_total{op="GetObject",status="404"}"#
            ) >= 1.0
        );
        assert!(
            must(
                &gw,
                r#"tinydfs_s3_requests_total{op="CreateBucket",status="200"}"#
            ) >= 1.0
        );
        assert!(
            must(
                &gw,
                r#"tinydfs_s3_request_duration_seconds_count{op="PutObject"}"#
            ) >= 3.0
        );
        assert!(must(&gw, "tinydfs_s3_received_bytes_total") >= (3 * size) as f64);
        assert!(must(&gw, "tinydfs_s3_sent_bytes_total") >= (3 * size) as f64);

        let mut chunks = 0.0;
        for n in by_role("chunkserver") {
            let m = http_get(&ops_addr(&n), "/metrics").await.1;
            let held = must(&m, "tinydfs_chunkserver_chunks");
            assert!(held >= 1.0, "{m}");
            chunks += held;
            assert!(must(&m, "tinydfs_chunkserver_stored_bytes") >= held * 1000.0);
            assert!(must(&m, "tinydfs_chunkserver_written_bytes_total") > 0.0);
            assert_eq!(must(&m, "tinydfs_chunkserver_failed_disks"), 0.0);
            assert!(
                m.contains("tinydfs_chunkserver_disk_free_bytes{disk=\""),
                "{m}"
            );
            assert!(sample(&m, "tinydfs_chunkserver_scrubbed_chunks_total").is_some());
        }
        assert_eq!(chunks, 18.0, "3 objects of 2 chunks, 3 copies each");

        let m = http_get(&ops_addr(&by_role("master")[0]), "/metrics")
            .await
            .1;
        assert_eq!(
            must(&m, r#"tinydfs_master_raft_role{role="leader"}"#),
            1.0,
            "{m}"
        );
        assert_eq!(
            must(&m, r#"tinydfs_master_raft_role{role="follower"}"#),
            0.0
        );
        assert!(must(&m, "tinydfs_master_raft_term") >= 1.0);
        assert!(must(&m, "tinydfs_master_raft_applied_index") >= 4.0);
        assert!(
            must(&m, "tinydfs_master_raft_last_log_index")
                >= must(&m, "tinydfs_master_raft_applied_index")
        );
        assert_eq!(
            must(&m, r#"tinydfs_master_chunkservers{state="alive"}"#),
            3.0
        );
        assert_eq!(
            must(&m, r#"tinydfs_master_chunkservers{state="dead"}"#),
            0.0
        );
        assert_eq!(must(&m, "tinydfs_master_buckets"), 1.0);
        assert_eq!(must(&m, "tinydfs_master_objects"), 3.0);
        assert_eq!(must(&m, "tinydfs_master_chunks"), 6.0);
        assert_eq!(must(&m, "tinydfs_master_lost_chunks"), 0.0);
        assert!(sample(&m, "tinydfs_master_repaired_copies_total").is_some());
    });
}

/// Chromium, as scripts/test.sh names it.
fn chromium() -> String {
    std::env::var("TINYDFS_CHROMIUM").unwrap_or_else(|_| {
        panic!(
            "TINYDFS_CHROMIUM must name a Chromium binary (scripts/test.sh sets /usr/bin/chromium)"
        )
    })
}

/// The DOM of `url` after Chromium loaded it, headless.
fn dump_dom(chromium: &str, profile: &std::path::Path, url: &str) -> String {
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--dump-dom", url])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {chromium}: {e}"));
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        match child.try_wait().unwrap() {
            Some(_) => break,
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("Chromium did not finish loading {url}");
            }
            None => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "Chromium failed: {:?}", out.status);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_status_page_in_chromium_shows_a_dead_chunkserver() {
    let chromium = chromium();
    let cluster = Cluster::start(Opts::default());
    let profile = cluster.dir.join("chromium-profile");
    let rt = rt();
    rt.block_on(async {
        let s3 = cluster.client();
        s3.create_bucket().bucket("page").send().await.unwrap();
        put(&s3, "page", "k", data(1000, 1)).await.unwrap();
    });
    let master_ops = ops_addr(
        &cluster
            .nodes()
            .into_iter()
            .find(|n| n["role"] == "master")
            .unwrap(),
    );
    let url = format!("http://{master_ops}/");
    let page = || rt.block_on(http_get(&master_ops, "/")).1;
    // Healthy once the leader is out of safe mode (one dead-node timeout after it started).
    wait_until("the page to say healthy", || {
        page().contains("data-health=\"healthy\"")
    });

    let dom = dump_dom(&chromium, &profile, &url);
    assert!(dom.contains("<title>tinydfs status</title>"), "{dom}");
    assert!(dom.contains("data-health=\"healthy\""), "{dom}");
    let chunkservers: Vec<String> = cluster
        .nodes()
        .iter()
        .filter(|n| n["role"] == "chunkserver")
        .map(|n| n["addr"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(chunkservers.len(), 3);
    for addr in &chunkservers {
        assert!(
            dom.contains(&format!("data-addr=\"{addr}\" data-state=\"alive\"")),
            "{addr} missing from\n{dom}"
        );
    }
    assert!(
        dom.contains("class=\"master\""),
        "the masters table lists master 1"
    );

    cluster.kill("chunkserver-2");
    let dead = cluster.addr("chunkserver-2");
    let dead_row = format!("data-addr=\"{dead}\" data-state=\"dead\"");
    let killed = Instant::now();
    wait_until("the page to show chunkserver-2 dead", || {
        page().contains(&dead_row)
    });
    assert!(
        killed.elapsed() >= Duration::from_secs(2),
        "dead before the timeout"
    );

    let dom = dump_dom(&chromium, &profile, &url);
    assert!(dom.contains(&dead_row), "{dom}");
    assert!(dom.contains("data-health=\"degraded\""), "{dom}");
    assert!(
        dom.contains(&format!("({dead}) is dead")),
        "the reason names it: {dom}"
    );
    for addr in chunkservers.iter().filter(|a| **a != dead) {
        assert!(dom.contains(&format!("data-addr=\"{addr}\" data-state=\"alive\"")));
    }
}
