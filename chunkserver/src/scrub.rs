//! The scrubber: a background worker that re-reads every chunk held, at a bounded rate, and
//! checks every block's CRC32C and the whole-chunk CRC32C against the footer.
//!
//! Bits rot on disks that nobody reads; a replica found bad only when the last good copy is
//! needed is a lost chunk. The scrubber finds it while other copies exist: the store deletes the
//! bad replica and queues it as lost, the next heartbeat tells the master, and the master copies
//! the chunk again from a good replica. Its work list is the store's index, taken at the start of
//! each pass, so a restart loses nothing but the progress of the pass under way (a restart starts
//! a pass). Progress is observable through the counters the heartbeat carries (`scrubbed`,
//! `scrub_corrupt`).

use crate::store::{ChunkStore, ScrubOutcome};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Default read rate: a 1 TB disk is scrubbed in under a day while leaving most of its
/// bandwidth to clients.
pub const DEFAULT_SCRUB_RATE: u64 = 16 * 1024 * 1024;
/// Default pause between the end of a pass and the start of the next.
pub const DEFAULT_SCRUB_INTERVAL: Duration = Duration::from_secs(3600);

/// Scrubs every chunk of `store` at `rate` bytes per second, pausing `interval` between
/// passes, until `stop` is set (the chunk being read is then left unjudged, so that shutdown is
/// not held up by a blocking read) or the task is dropped. A rate of 0 disables the scrubber.
pub async fn run(store: Arc<ChunkStore>, rate: u64, interval: Duration, stop: Arc<AtomicBool>) {
    if rate == 0 {
        tracing::info!("scrubber disabled");
        return;
    }
    while !stop.load(Ordering::Relaxed) {
        pass(&store, rate, &stop).await;
        tokio::time::sleep(interval).await;
    }
}

/// One pass over every chunk held when it starts. Reading runs on blocking threads, one chunk at
/// a time, so the runtime is never stalled by the disk.
async fn pass(store: &Arc<ChunkStore>, rate: u64, stop: &Arc<AtomicBool>) {
    let started = Instant::now();
    let s = store.clone();
    // Disks holding no chunk are checked too: a vanished folder is found without a read.
    if let Err(e) = tokio::task::spawn_blocking(move || s.check_disks()).await {
        tracing::warn!(error = %e, "disk check failed");
    }
    let ids = store.chunk_ids();
    let (mut good, mut corrupt, mut lost) = (0u64, 0u64, 0u64);
    for id in ids {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let (s, stop) = (store.clone(), stop.clone());
        match tokio::task::spawn_blocking(move || s.scrub_chunk(id, rate, &stop)).await {
            Ok(ScrubOutcome::Good) => good += 1,
            Ok(ScrubOutcome::Corrupt) => corrupt += 1,
            Ok(ScrubOutcome::Lost) => lost += 1,
            Ok(ScrubOutcome::Skipped) => {}
            Err(e) => tracing::warn!(chunk = %id, error = %e, "scrub of a chunk failed"),
        }
    }
    tracing::info!(
        good,
        corrupt,
        lost,
        secs = started.elapsed().as_secs(),
        "scrub pass done"
    );
}
