//! `tinydfs bench` end to end, at a tiny scale: it starts a tinydfs cluster and a SeaweedFS
//! cluster (the `weed` binary from `scripts/setup-test-tools.sh`), runs every workload against
//! both with its own SigV4 client, and prints the table and the ratios.

mod common;

use common::*;
use std::process::Command;

#[test]
fn bench_measures_tinydfs_and_seaweedfs_alike() {
    let weed = std::env::var("TINYDFS_WEED").unwrap_or_else(|_| {
        panic!(
            "TINYDFS_WEED is not set: run the tests with scripts/test.sh (it installs SeaweedFS)"
        )
    });
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("bench-{:08x}", rand::random::<u32>()));
    let out = Command::new(bin())
        .args([
            "bench",
            "--tinydfs",
            "--seaweedfs",
            &weed,
            "--scale",
            "0.01",
        ])
        .arg("--data-dir")
        .arg(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for system in ["tinydfs", "seaweedfs"] {
        for workload in [
            "PUT 64 MiB x 1",
            "GET 64 MiB x 1",
            "PUT 1 MiB x 2",
            "GET 1 MiB x 2",
            "PUT 4 KiB x 20",
            "GET 4 KiB x 20",
            "LIST 100 keys",
        ] {
            let row = stdout
                .lines()
                .find(|l| l.starts_with(&format!("| {system} | {workload} |")))
                .unwrap_or_else(|| panic!("no {system} {workload} row:\n{stdout}"));
            let cols: Vec<&str> = row.split('|').map(str::trim).collect();
            assert_eq!(cols[7], "0", "errors in {row}");
            // The gateway's memory is reported after each tinydfs transfer, and stays small.
            if system == "tinydfs" && !workload.starts_with("LIST") {
                let rss: f64 = cols[8]
                    .parse()
                    .unwrap_or_else(|_| panic!("no RSS in {row}"));
                assert!(rss > 1.0 && rss < 256.0, "gateway RSS {rss} MiB in {row}");
            }
        }
    }
    assert!(stdout.contains("| LIST 100 keys |"), "{stdout}");
    assert!(stdout.contains("tinydfs / seaweedfs"), "{stdout}");
    let _ = std::fs::remove_dir_all(dir);
}
