//! Backup and restore of the master metadata against a real cluster: a backup taken while
//! serving, the masters' data lost, the backup restored into a new master group that the
//! chunkservers rejoin with their data.

mod common;

use common::*;
use std::collections::HashSet;

#[test]
fn metadata_restored_from_a_backup_serves_the_objects_it_names_and_deletes_nothing_newer() {
    let mut cluster = Cluster::start(Opts::default());
    let c = cluster.client();
    let chunk = cluster.chunk_size() as usize;
    let (a, b, later) = (
        data(2 * chunk + 1, 1),
        data(chunk / 3, 2),
        data(3 * chunk, 3),
    );
    rt().block_on(async {
        c.create_bucket().bucket("safe").send().await.unwrap();
        put(&c, "safe", "a", a.clone()).await.unwrap();
        put(&c, "safe", "dir/b", b.clone()).await.unwrap();
    });
    let file = cluster.dir.join("meta.backup");
    let (code, out) = cluster.admin(&["backup", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(": 1 bucket, "), "{out}");
    let cluster_id = cluster.status()["cluster_id"].as_str().unwrap().to_string();
    // After the backup: a new object, and a deletion.
    let before: HashSet<String> = cluster.chunk_files().into_iter().map(|(_, c)| c).collect();
    rt().block_on(async {
        put(&c, "safe", "later", later.clone()).await.unwrap();
        c.delete_object()
            .bucket("safe")
            .key("a")
            .send()
            .await
            .unwrap();
    });
    let newer: HashSet<String> = cluster
        .chunk_files()
        .into_iter()
        .map(|(_, c)| c)
        .filter(|c| !before.contains(c))
        .collect();
    assert_eq!(newer.len(), 3);
    let (code, out) = cluster.admin(&["buckets"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("safe") && out.contains(" 2 "), "{out}");

    // The master's disk is lost; a new master group is made from the backup.
    cluster.stop();
    std::fs::remove_dir_all(cluster.dir.join("master-1")).unwrap();
    let mut cluster = Cluster::start_in(
        cluster.dir.clone(),
        Opts {
            extra: vec![
                "--master-arg=--restore".into(),
                format!("--master-arg={}", file.display()),
            ],
            ..Default::default()
        },
    );
    assert_eq!(cluster.status()["cluster_id"], cluster_id.as_str());
    let c = cluster.client();
    rt().block_on(async {
        // What the backup names is back, the deletion after it undone...
        assert_eq!(get(&c, "safe", "a").await.unwrap(), a);
        assert_eq!(get(&c, "safe", "dir/b").await.unwrap(), b);
        // ...and what came after it is unknown to the metadata.
        assert!(get(&c, "safe", "later").await.is_err());
    });
    // The chunks of the object written after the backup are unreferenced for the restored
    // metadata, but were written under a lease it never knew: they are kept, through safe
    // mode and many full chunk reports.
    wait_until("the restored leader to leave safe mode", || {
        cluster.status()["settled"] == true
    });
    let judged = |s: &serde_json::Value| s["reports_judged"].as_u64().unwrap_or(0);
    let settled_at = judged(&cluster.status());
    cluster.wait_for("three full reports of every chunkserver judged", |s| {
        judged(s) >= settled_at + 9
    });
    let now: HashSet<String> = cluster.chunk_files().into_iter().map(|(_, c)| c).collect();
    assert!(
        newer.is_subset(&now),
        "chunks newer than the backup were deleted"
    );
    let (code, out) = cluster.admin(&["fsck"]);
    assert_eq!(code, 0, "{out}");
    // A restore into a master that already has state is refused with a clear message.
    cluster.stop();
    let out = std::process::Command::new(bin())
        .args(["master", "--restore"])
        .arg(&file)
        .arg("--data-dir")
        .arg(cluster.dir.join("master-1"))
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .env("TINYDFS_CLUSTER_SECRET", "x")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("needs a new, empty data folder"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
