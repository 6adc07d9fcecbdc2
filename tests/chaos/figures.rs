//! Per-fault figures of a recorded history, printed for people and, on one line starting
//! `CHAOS-FIGURES `, as JSON for scripts. Read, not asserted: availability targets are measured
//! by benchmarks, not by timed tests.
//!
//! For each fault:
//! - acknowledged operations (any call that got an answer, by when it returned) per second in
//!   the [`BASELINE`] before it, and from [`GRACE`] after it began until it healed, the latter
//!   also as a percentage of the former;
//! - the longest stretch without an acknowledged write (PUT or DELETE) from its start to its heal;
//! - the calls invoked during it (from its start to its heal) and how many of them failed
//!   (error or no answer within the client's deadline: outcome unknown);
//! - the recovery: from the heal (for a killed process, the kill) to the answer of the first
//!   acknowledged write invoked after it.

use crate::checker::{Event, Seen};
use crate::workload::is_write;

/// The steady state a fault is compared with: this long before it (the nemesis lets the
/// workload run this long after each recovery).
pub const BASELINE: u64 = 10_000_000_000;
/// Time a fault is given to take effect (clients' deadlines run out, an election happens)
/// before its throughput is measured.
pub const GRACE: u64 = 3_000_000_000;

/// A window shorter than this has no meaningful rate (a kill recovered within the grace).
const MIN_WINDOW: u64 = 500_000_000;

/// One fault of the schedule, in nanoseconds of the history's clock.
pub struct Fault {
    pub name: String,
    /// When it began.
    pub start: u64,
    /// When it healed; for a kill (which does not heal), when writes were acknowledged again.
    pub end: u64,
    /// Recovery is counted from here: the heal, or the kill.
    pub healed: u64,
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// Acknowledged operations per second returned in `[from, to)`; None for an empty window.
fn rate(events: &[Event], from: u64, to: u64) -> Option<f64> {
    (to > from + MIN_WINDOW).then(|| {
        let n = events
            .iter()
            .filter(|e| e.seen != Seen::Unknown && e.returned >= from && e.returned < to)
            .count();
        n as f64 / secs(to - from)
    })
}

/// The longest stretch in `[from, to]` without an acknowledged write returning.
fn longest_gap(events: &[Event], from: u64, to: u64) -> u64 {
    let mut acks: Vec<u64> = events
        .iter()
        .filter(|e| is_write(e) && e.seen == Seen::Done)
        .map(|e| e.returned)
        .filter(|&t| t > from && t < to)
        .collect();
    acks.sort_unstable();
    let mut last = from;
    let mut longest = 0;
    for t in acks.into_iter().chain(std::iter::once(to)) {
        longest = longest.max(t - last);
        last = t;
    }
    longest
}

/// Time from `from` to the answer of the first acknowledged write invoked after it.
fn recovery(events: &[Event], from: u64) -> Option<u64> {
    events
        .iter()
        .filter(|e| is_write(e) && e.seen == Seen::Done && e.invoked >= from)
        .map(|e| e.returned - from)
        .min()
}

/// Prints one line per fault and the `CHAOS-FIGURES` line for `test`.
pub fn print(test: &str, events: &[Event], faults: &[Fault]) {
    let mut json = Vec::new();
    for f in faults {
        let before = rate(events, f.start.saturating_sub(BASELINE), f.start);
        let during = rate(events, f.start + GRACE, f.end);
        let pct = match (before, during) {
            (Some(b), Some(d)) if b > 0.0 => Some(100.0 * d / b),
            _ => None,
        };
        let gap = longest_gap(events, f.start, f.end);
        let rec = recovery(events, f.healed);
        let invoked: Vec<&Event> = events
            .iter()
            .filter(|e| e.invoked >= f.start && e.invoked < f.end)
            .collect();
        let failed = invoked.iter().filter(|e| e.seen == Seen::Unknown).count();
        let show = |v: Option<f64>, unit: &str| v.map_or("n/a".into(), |v| format!("{v:.0}{unit}"));
        eprintln!(
            "fault {:<44} {:6.1}–{:6.1} s: {} ops/s before, {} ops/s from +{} s ({} of before); \
             {failed} of {} calls invoked in it failed; longest stretch without an acknowledged \
             write {:.1} s; first write acknowledged {} after the {}",
            f.name,
            secs(f.start),
            secs(f.end),
            show(before, ""),
            show(during, ""),
            GRACE / 1_000_000_000,
            show(pct, "%"),
            invoked.len(),
            secs(gap),
            rec.map_or("never".into(), |r| format!("{:.1} s", secs(r))),
            if f.healed == f.start { "kill" } else { "heal" },
        );
        json.push(serde_json::json!({
            "fault": f.name,
            "start_s": secs(f.start),
            "end_s": secs(f.end),
            "ops_per_s_before": before,
            "ops_per_s_during": during,
            "during_pct_of_before": pct,
            "calls_invoked": invoked.len(),
            "calls_failed": failed,
            "longest_without_acked_write_s": secs(gap),
            "recovery_s": rec.map(secs),
        }));
    }
    println!(
        "CHAOS-FIGURES {}",
        serde_json::json!({ "test": test, "faults": json })
    );
}
