//! Fault injection with a recorded history: a concurrent S3 workload (PUT, GET, HEAD, DELETE and
//! LIST on a few contended keys, through aws-sdk-s3 without retries and with a 5 s deadline,
//! `chaos/workload.rs`) runs while a nemesis injects faults. Every call is recorded with when it
//! started and ended and what the client saw; after the faults heal, every key is read once
//! more, and the checker (`chaos/checker.rs`) must find the history linearizable per key,
//! nothing acknowledged lost, no bytes no writer wrote, and every LIST consistent.
//!
//! Two tests:
//! - `the_history_under_pauses_and_a_killed_leader_is_linearizable`: `tinydfs server --masters 3
//!   --chunkservers 4` on loopback; the nemesis pauses (SIGSTOP) a chunkserver, pauses the leader
//!   master, and kills (SIGKILL) the leader.
//! - `partitions_keep_the_history_linearizable`: the same cluster with every node in a network
//!   namespace of its own behind a router namespace (`chaos/netns.rs`, `chaos/ns_cluster.rs`; needs
//!   root, `ip`, `iptables`, loop devices and e2fsprogs, and fails without them); the client runs
//!   in a namespace of its own too. The nemesis cuts off (a) the leader master, (b) a chunkserver,
//!   (c) the leader and a chunkserver together, each for 8 s, and (d) splits the master group: the
//!   leader alone on one side, the two other masters on the other, while the gateway, the
//!   chunkservers and the client still reach every master (a deposed leader that clients can still
//!   talk to). While the leader is cut off, `admin status` is run once from the client namespace
//!   (the cut-off leader first in its list of masters): it must answer within 30 s. Then disks, on
//!   two chunkservers whose chunks are on an ext4 disk of their own (`chaos/disks.rs`): (e) one
//!   disk full (a filler file allocated until ENOSPC) for 8 s, then the filler deleted; (f) the
//!   other disk failing (an ext4 error: read-only, every write fails) for 8 s; a chunkserver fails
//!   such a disk for the life of its process, so the heal is an operator's: SIGKILL the
//!   chunkserver, `e2fsck` the disk, start the chunkserver again with the same arguments (it must
//!   come back, alive with no failed disk, within 90 s).
//!
//! After each fault the nemesis waits for writes to be acknowledged again (asserted within 60 s),
//! then lets the workload run 10 s, the baseline of the next fault's figures. Per fault the test
//! prints (`chaos/figures.rs`) acknowledged operations per second before it and during it, the
//! longest stretch without an acknowledged write inside it and the time to the first write
//! acknowledged after it, then a line `CHAOS-FIGURES {json}`. They are for reading, not
//! asserted: availability targets are measured by benchmarks, not by timed tests.
//!
//! CI runs one round of each schedule (about 1 and 3 minutes). Longer schedules, by hand (as
//! root), `N` rounds of each (later loopback rounds pause for 2–9 s; netns rounds repeat the four
//! partitions, the chunkserver picked at random, and the two disk faults):
//!
//! ```text
//! TINYDFS_CHAOS_ROUNDS=N cargo nextest run --test chaos --no-capture
//! ```
//!
//! (`--no-capture` runs the tests one at a time; add `partitions` or `pauses` to run one of them;
//! `TINYDFS_CHAOS_HISTORY=DIR` writes each test's history to `DIR/<test>.jsonl`, one JSON object
//! per call, and keeps the partition test's data folders and node logs).

mod common;

#[path = "chaos/checker.rs"]
mod checker;
#[path = "chaos/disks.rs"]
mod disks;
#[path = "chaos/figures.rs"]
mod figures;
#[path = "chaos/netns.rs"]
mod netns;
#[path = "chaos/ns_cluster.rs"]
mod ns_cluster;
#[path = "chaos/workload.rs"]
mod workload;

use common::*;
use figures::{Fault, BASELINE};
use ns_cluster::{NsCluster, CHUNKSERVERS, CLIENT, MASTERS, OWN_DISK};
use std::process::Command;
use std::time::{Duration, Instant};
use workload::{Rng, Workload};

/// How long each partition lasts.
const PARTITION: Duration = Duration::from_secs(8);
/// How long a disk stays full, or failed before the operator steps in.
const DISK_FAULT: Duration = Duration::from_secs(8);
/// How often the nemesis looks at the status while a disk fault holds.
const STATUS_POLL: Duration = Duration::from_millis(500);
/// Writes acknowledged after a fault before the workload counts as recovered.
const RECOVERED_WRITES: usize = 30;
/// `admin status` must answer within this while the leader is cut off.
const STATUS_DEADLINE: Duration = Duration::from_secs(30);

fn rounds() -> u64 {
    std::env::var("TINYDFS_CHAOS_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(1)
}

/// Waits for recovery after a fault, then lets the workload run a baseline's length.
fn recover(w: &Workload, since: u64, what: &str) {
    w.wait_for_writes(since, RECOVERED_WRITES, what);
    std::thread::sleep(Duration::from_nanos(BASELINE));
}

/// `admin status --json` of the loopback cluster, or None while no master answers it.
fn try_status(cluster: &Cluster) -> Option<serde_json::Value> {
    let out = Command::new(bin())
        .args(["admin", "status", "--json", "--data-dir"])
        .arg(&cluster.dir)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())
        .flatten()
}

/// The leader master's pid, once there is one.
fn leader_pid(cluster: &Cluster) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(s) = try_status(cluster) {
            let leader = s["nodes"].as_array().into_iter().flatten().find(|n| {
                n["role"] == "master" && n["state"] == "leader" && n["pid"].as_u64().is_some()
            });
            if let Some(n) = leader {
                return n["pid"].as_u64().unwrap() as u32;
            }
        }
        assert!(Instant::now() < deadline, "no leader master for 60 s");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success(), "kill {sig} {pid}");
}

/// Pauses `pid` for `secs`, logging what it does; answers the fault.
fn pause(what: &str, pid: u32, secs: u64, w: &Workload) -> Fault {
    w.rec.log(&format!("pause {what} (pid {pid}) for {secs} s"));
    let start = w.rec.now();
    signal(pid, "-STOP");
    std::thread::sleep(Duration::from_secs(secs));
    signal(pid, "-CONT");
    let end = w.rec.now();
    w.rec.log(&format!("{what} resumed"));
    Fault {
        name: format!("pause {what} {secs} s"),
        start,
        end,
        healed: end,
    }
}

#[test]
fn the_history_under_pauses_and_a_killed_leader_is_linearizable() {
    let cluster = Cluster::start(Opts {
        chunkservers: 4,
        extra: vec!["--masters".into(), "3".into()],
        ..Opts::default()
    });
    let rt = rt();
    let c = workload::client(&cluster.endpoint);
    workload::create_bucket(&rt, &c);
    let w = Workload::start(&rt, &c);

    let mut rng = Rng(0x5eed);
    let mut faults = Vec::new();
    recover(&w, 0, "before the first fault");
    for round in 0..rounds() {
        // A chunkserver, then the leader master, alive but silent.
        let cs = format!("chunkserver-{}", 1 + rng.below(4));
        let secs = if round == 0 { 6 } else { 2 + rng.below(8) };
        let f = pause(&cs, cluster.pid(&cs), secs, &w);
        recover(&w, f.end, "after the chunkserver resumed");
        faults.push(f);
        let leader = leader_pid(&cluster);
        let secs = if round == 0 { 5 } else { 2 + rng.below(8) };
        let f = pause("the leader master", leader, secs, &w);
        recover(&w, f.end, "after the leader resumed");
        faults.push(f);
    }
    let leader = leader_pid(&cluster);
    w.rec
        .log(&format!("SIGKILL the leader master (pid {leader})"));
    signal(leader, "-KILL");
    let killed_at = w.rec.now();
    w.wait_for_writes(killed_at, RECOVERED_WRITES, "after the leader was killed");
    faults.push(Fault {
        name: "SIGKILL the leader master".into(),
        start: killed_at,
        end: w.rec.now(),
        healed: killed_at,
    });

    let (events, end) = w.finish(&rt, &c);
    workload::dump("pauses", &events);
    workload::report(&events, end);
    figures::print("pauses", &events, &faults);
    workload::assert_linearizable(&events);
}

/// Runs `admin status --json` once from the client namespace, the masters asked in the order
/// given; answers how long it took and its output if it answered with the nodes.
fn timed_status(
    cluster: &NsCluster,
    masters: &[String],
) -> std::thread::JoinHandle<(Duration, Result<serde_json::Value, String>)> {
    let mut cmd = cluster.status_command(masters);
    std::thread::spawn(move || {
        let started = Instant::now();
        let mut child = cmd.spawn().expect("start admin status");
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if started.elapsed() > STATUS_DEADLINE {
                let _ = child.kill();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let took = started.elapsed();
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        let answer = match status {
            None => Err(format!(
                "no answer in {} s; {stderr}",
                STATUS_DEADLINE.as_secs()
            )),
            Some(s) if !s.success() => Err(format!("{s}: {stderr}")),
            Some(_) => serde_json::from_slice::<serde_json::Value>(&out.stdout)
                .map_err(|e| format!("not JSON ({e}): {stderr}"))
                .and_then(|v| {
                    if v["nodes"].is_array() {
                        Ok(v)
                    } else {
                        Err(format!("no nodes: {v}"))
                    }
                }),
        };
        (took, answer)
    })
}

/// One partition of the schedule: `cut` applies it, the network heals after [`PARTITION`];
/// answers the fault.
fn partition(
    net: &mut netns::Net,
    w: &Workload,
    name: String,
    cut: impl FnOnce(&mut netns::Net),
) -> Fault {
    w.rec.log(&format!("{name} for {} s", PARTITION.as_secs()));
    let start = w.rec.now();
    cut(net);
    std::thread::sleep(PARTITION);
    net.heal();
    let end = w.rec.now();
    w.rec.log("healed");
    Fault {
        name,
        start,
        end,
        healed: end,
    }
}

/// Fault (a): the leader master cut off from everyone for [`PARTITION`], and meanwhile an
/// operator's `admin status` naming the cut-off leader first; the network heals once the status
/// has answered too (or given up). Answers the fault and whether the status answered.
fn cut_off_the_leader(cluster: &mut NsCluster, w: &Workload) -> (Fault, Result<(), String>) {
    let leader = cluster.leader();
    let mut masters = vec![cluster.addr(leader)];
    masters.extend(
        MASTERS
            .iter()
            .filter(|m| **m != leader)
            .map(|m| cluster.addr(m)),
    );
    let name = format!("cut off the leader master {leader}");
    w.rec
        .log(&format!("{name} for at least {} s", PARTITION.as_secs()));
    let start = w.rec.now();
    cluster.net.cut_off(&[leader]);
    let asked = timed_status(cluster, &masters);
    std::thread::sleep(PARTITION);
    let (took, answer) = asked.join().unwrap();
    cluster.net.heal();
    let end = w.rec.now();
    w.rec.log("healed");
    let answer = answer.map(|s| {
        let states: Vec<String> = s["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|n| n["role"] == "master")
            .map(|n| format!("{} {}", n["addr"], n["state"]))
            .collect();
        eprintln!(
            "admin status with the leader cut off: answered in {:.1} s (masters: {})",
            took.as_secs_f64(),
            states.join(", ")
        );
    });
    if let Err(e) = &answer {
        eprintln!(
            "admin status with the leader cut off: NO answer after {:.1} s: {e}",
            took.as_secs_f64()
        );
    }
    let fault = Fault {
        name,
        start,
        end,
        healed: end,
    };
    (fault, answer)
}

/// Holds a disk fault for [`DISK_FAULT`] from `start`, running `keep` (which keeps the fault
/// in force) every [`STATUS_POLL`] and looking at the status meanwhile; logs when chunkserver
/// `cs` first shows it (`shows`), or that it never did and what it showed last.
fn hold(
    cluster: &NsCluster,
    w: &Workload,
    (cs, start): (&str, u64),
    what: &str,
    shows: impl Fn(&serde_json::Value) -> bool,
    mut keep: impl FnMut(),
) {
    let until = start + DISK_FAULT.as_nanos() as u64;
    let mut seen = false;
    let mut last = None;
    while w.rec.now() < until {
        keep();
        if !seen {
            last = cluster.chunkserver(cs).or(last);
            if last.as_ref().is_some_and(&shows) {
                seen = true;
                let after = (w.rec.now() - start) as f64 / 1e9;
                w.rec.log(&format!(
                    "the status shows chunkserver {cs} {what} ({after:.1} s in)"
                ));
            }
        }
        let left = until.saturating_sub(w.rec.now());
        std::thread::sleep(Duration::from_nanos(left).min(STATUS_POLL));
    }
    if !seen {
        let last = last.map_or("nothing".into(), |n| {
            let failed = n["disks"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|d| d["failed"] == true)
                .count();
            format!("{} bytes free, {failed} failed disks", n["free"])
        });
        w.rec.log(&format!(
            "the status never showed chunkserver {cs} {what} in {} s (last: {last})",
            DISK_FAULT.as_secs()
        ));
    }
}

/// Fault (e): chunkserver `cs`'s disk full for [`DISK_FAULT`] (the filler topped up as the
/// chunkserver frees space), then the filler deleted.
fn fill_a_disk(cluster: &NsCluster, w: &Workload, cs: &str) -> Fault {
    let name = format!("fill the disk of chunkserver {cs}");
    w.rec.log(&format!("{name} for {} s", DISK_FAULT.as_secs()));
    let start = w.rec.now();
    let filler = cluster.fill_disk(cs);
    w.rec.log(&format!(
        "filler of {} MiB allocated, {} bytes left free",
        filler >> 20,
        cluster.disk_free(cs)
    ));
    // The chunkserver frees space too (deleted chunks, compacted packs): the filler takes it.
    let mut freed = 0;
    hold(
        cluster,
        w,
        (cs, start),
        "with no free space",
        |n| n["free"].as_u64() == Some(0),
        || {
            let free = cluster.disk_free(cs);
            if free > 0 {
                freed = freed.max(free);
                cluster.fill_disk(cs);
            }
        },
    );
    if freed > 0 {
        w.rec.log(&format!(
            "filler topped up as the chunkserver freed space (up to {freed} bytes at a time)"
        ));
    }
    cluster.empty_disk(cs);
    let end = w.rec.now();
    w.rec.log("filler deleted");
    Fault {
        name,
        start,
        end,
        healed: end,
    }
}

/// Fault (f): chunkserver `cs`'s disk failing (read-only after an ext4 error) for
/// [`DISK_FAULT`]; then, as an operator would, the chunkserver killed, its disk repaired and the
/// chunkserver started again. Answers once it is back.
fn fail_a_disk(cluster: &mut NsCluster, w: &Workload, cs: &str) -> Fault {
    let name = format!("fail the disk of chunkserver {cs}");
    w.rec.log(&format!("{name} for {} s", DISK_FAULT.as_secs()));
    let start = w.rec.now();
    let dev = cluster.fail_disk(cs);
    w.rec.log(&format!("{dev}: ext4 error, read-only"));
    hold(
        cluster,
        w,
        (cs, start),
        "with a failed disk",
        |n| {
            n["disks"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|d| d["failed"] == true)
        },
        || {},
    );
    let old = cluster.pid(cs);
    let pid = cluster.repair_disk(cs);
    let end = w.rec.now();
    w.rec.log(&format!(
        "chunkserver {cs} killed (pid {old}), its disk repaired, started again (pid {pid})"
    ));
    cluster.wait_for_chunkserver(cs, pid);
    w.rec.log(&format!("chunkserver {cs} is back"));
    Fault {
        name,
        start,
        end,
        healed: end,
    }
}

#[test]
fn partitions_keep_the_history_linearizable() {
    let mut cluster = NsCluster::start();
    let rt = cluster.net.runtime_in(CLIENT);
    let c = workload::client(&cluster.endpoint());
    workload::create_bucket(&rt, &c);
    let w = Workload::start(&rt, &c);

    let mut rng = Rng(0x9a27);
    let mut faults = Vec::new();
    let mut status_failures = Vec::new();
    recover(&w, 0, "before the first fault");
    for _ in 0..rounds() {
        // (a) The leader master cut off from everyone.
        let (f, status) = cut_off_the_leader(&mut cluster, &w);
        recover(&w, f.end, "after the leader was reconnected");
        faults.push(f);
        status_failures.extend(status.err());

        // (b) A chunkserver cut off.
        let cs = CHUNKSERVERS[rng.below(CHUNKSERVERS.len() as u64) as usize];
        let f = partition(
            &mut cluster.net,
            &w,
            format!("cut off chunkserver {cs}"),
            |n| n.cut_off(&[cs]),
        );
        recover(&w, f.end, "after the chunkserver was reconnected");
        faults.push(f);

        // (c) The leader master and a chunkserver cut off together.
        let leader = cluster.leader();
        let cs = CHUNKSERVERS[rng.below(CHUNKSERVERS.len() as u64) as usize];
        let f = partition(
            &mut cluster.net,
            &w,
            format!("cut off the leader master {leader} and chunkserver {cs}"),
            |n| n.cut_off(&[leader, cs]),
        );
        recover(
            &w,
            f.end,
            "after the leader and the chunkserver were reconnected",
        );
        faults.push(f);

        // (d) The master group split: the leader on the minority side, alone, the other two a
        // majority; every other link stays.
        let leader = cluster.leader();
        let others: Vec<&str> = MASTERS.into_iter().filter(|m| *m != leader).collect();
        let f = partition(
            &mut cluster.net,
            &w,
            format!("split masters {leader} | {}", others.join(" ")),
            |n| n.partition(&[leader], &others),
        );
        recover(&w, f.end, "after the master group was whole again");
        faults.push(f);

        // (e) A full disk.
        let f = fill_a_disk(&cluster, &w, OWN_DISK[0]);
        recover(&w, f.end, "after the full disk was emptied");
        faults.push(f);

        // (f) A failing disk, repaired and its chunkserver restarted.
        let f = fail_a_disk(&mut cluster, &w, OWN_DISK[1]);
        recover(
            &w,
            f.end,
            "after the chunkserver with the failed disk was restarted",
        );
        faults.push(f);
    }

    let (events, end) = w.finish(&rt, &c);
    drop(rt);
    workload::dump("partitions", &events);
    workload::report(&events, end);
    figures::print("partitions", &events, &faults);
    workload::assert_linearizable(&events);
    assert!(
        status_failures.is_empty(),
        "admin status did not answer while the leader was cut off: {status_failures:?}"
    );
}
