//! Chunk files on the local disks.
//!
//! A chunk is immutable once written. Its file holds a header, the data, one CRC32C per 64 KiB
//! block and a footer:
//!
//! ```text
//! "TDFSCHNK" | version u32 | 0u32 | data ... | block crc32c u32 ... | data_len u64 | crc32c u32 | "TDFS"
//! ```
//!
//! A chunkserver has one or more data folders ("disks"). Each holds its chunks under
//! `chunks/ab/cd/<id>` (the first two bytes of the id, hashed sub-folders so no folder grows huge)
//! and its unfinished writes in `tmp/`. A chunk is written to `tmp/`, fsynced, renamed into place
//! and its folder fsynced: a chunk file either is complete or does not exist. Every read verifies
//! the CRC of each block it touches and fails rather than serve wrong bytes.
//!
//! Small chunks (up to [`PackConfig::max_chunk`]) are not files of their own: they are appended
//! to the disk's pack files, whose records hold the same image, and made durable with one fsync
//! shared by concurrent writers ([`crate::pack`]).
//!
//! The store keeps an index (chunk id → disk, length, CRC32C, pack slot) of the chunks it holds;
//! only finished chunks are in it, so a write in flight is never mistaken for a stored chunk.
//!
//! **Failures.** An I/O error on a disk (other than running out of space) takes the whole disk out
//! of service for the life of the process: a disk that fails once is not trusted again. Its
//! chunks leave the index and are queued as *lost*, which the next heartbeat tells the master so
//! it copies them again from other replicas. A replica found corrupt (by a read or by the
//! scrubber) is deleted and queued as lost the same way. Running out of space — the file system's
//! or the configured capacity — only fails the write at hand.

use crate::pack::{self, Packs, Replayed, Slot, RECORD_HEADER_LEN};
use bytes::Bytes;
use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tinydfs_proto::batch::BatchEntry;
use tinydfs_proto::blocks::BlockCrcs;
use tinydfs_proto::meta::DiskStatus;
use tinydfs_proto::{ChunkId, ChunkMeta, BLOCK_SIZE};
use tokio::sync::mpsc;

const MAGIC: &[u8; 8] = b"TDFSCHNK";
const FOOTER_MAGIC: &[u8; 4] = b"TDFS";
/// Version of the chunk file format.
pub const CHUNK_FORMAT_VERSION: u32 = 1;
/// Bytes before a chunk's data in its file.
pub const HEADER_LEN: u64 = 16;
/// Bytes after the block CRC table: data length, whole-chunk CRC32C, magic.
pub const FOOTER_LEN: u64 = 16;
/// Write buffer: large enough to turn network-sized frames into few system calls.
const WRITE_BUFFER: usize = 256 * 1024;
/// Longest a throttled scrub sleeps before looking at its stop flag again, so that shutdown
/// (which waits for blocking threads) is not held up by a slow scrub rate.
const STOP_CHECK: Duration = Duration::from_millis(100);
/// Default largest chunk kept in a pack file rather than a file of its own.
pub const DEFAULT_PACK_MAX: u64 = 256 << 10;
/// Largest pack limit accepted: a packed chunk is read whole to serve any range of it.
pub const PACK_MAX_LIMIT: u64 = 16 << 20;
/// How long a disk health check serves small writes.
const PROBE_REUSE: Duration = Duration::from_secs(1);
/// Bytes of moved records appended between two syncs while compacting.
const COMPACT_BATCH: u64 = 8 << 20;

/// How small chunks are packed ([`crate::pack`]).
#[derive(Clone, Copy, Debug)]
pub struct PackConfig {
    /// Chunks of at most this many bytes go to pack files; 0 keeps every chunk in a file.
    pub max_chunk: u64,
    /// Size at which a pack file is sealed and the next one begun.
    pub file_size: u64,
}

impl Default for PackConfig {
    fn default() -> Self {
        PackConfig {
            max_chunk: DEFAULT_PACK_MAX,
            file_size: pack::DEFAULT_FILE_SIZE,
        }
    }
}

/// A message to a chunk writer: data, or the end of a chunk with the length and CRC32C its
/// sender announced (the writer keeps the chunk only if they match what it wrote).
pub enum WriteMsg {
    Data(Bytes),
    Finish { len: u64, crc32c: u32 },
}

/// Why a chunk operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("chunk {0} not found")]
    NotFound(ChunkId),
    #[error("chunk {0} is corrupt: {1}")]
    Corrupt(ChunkId, String),
    #[error("range {offset}+{len} is outside chunk {id} of {size} bytes")]
    BadRange {
        id: ChunkId,
        offset: u64,
        len: u64,
        size: u64,
    },
    #[error("the write was abandoned before the chunk was complete")]
    Aborted,
    /// The file system is full or the configured capacity is reached; nothing was kept and the
    /// disk is fine.
    #[error("no space: {0}")]
    NoSpace(String),
    /// The disk failed during the operation and is now out of service.
    #[error("data folder {disk} failed: {reason}")]
    DiskFailed { disk: String, reason: String },
    #[error("every data folder has failed: this chunkserver cannot store chunks")]
    NoDisk,
    #[error("disk: {0}")]
    Io(#[from] io::Error),
}

/// Where a chunk held here lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    disk: usize,
    len: u64,
    crc: u32,
    /// Where the record is, for a chunk kept in a pack file.
    pack: Option<Slot>,
}

/// What the store knows of one disk.
#[derive(Clone, Debug, Default)]
struct DiskUse {
    /// Data bytes of the chunks held (what the capacity limit counts).
    held: u64,
    chunks: u64,
    /// Bytes received by writes in flight, reserved against the capacity.
    pending: u64,
    failed: bool,
}

/// Mutable state, behind one lock: every change to it is a few map operations.
#[derive(Default)]
struct State {
    index: HashMap<ChunkId, Entry>,
    disks: Vec<DiskUse>,
    /// Ids being renamed into place right now, so two writes of one id do not both commit.
    committing: HashSet<ChunkId>,
    /// Replicas lost without an order (corrupt, vanished, failed disk), numbered so that a
    /// heartbeat acknowledges exactly what it sent.
    lost: Vec<(u64, ChunkId)>,
    lost_seq: u64,
}

impl State {
    fn remove(&mut self, id: ChunkId) -> Option<Entry> {
        let e = self.index.remove(&id)?;
        let d = &mut self.disks[e.disk];
        d.held = d.held.saturating_sub(e.len);
        d.chunks = d.chunks.saturating_sub(1);
        Some(e)
    }

    fn queue_lost(&mut self, id: ChunkId) {
        self.lost_seq += 1;
        self.lost.push((self.lost_seq, id));
    }

    /// Bytes the capacity limit still allows (held and in-flight bytes count).
    fn remaining(&self, capacity: u64) -> u64 {
        if capacity == 0 {
            return u64::MAX;
        }
        let used: u64 = self.disks.iter().map(|d| d.held + d.pending).sum();
        capacity.saturating_sub(used)
    }
}

/// Space of the chunkserver as reported to the master.
#[derive(Clone, Debug, Default)]
pub struct Usage {
    pub capacity: u64,
    pub free: u64,
    pub disks: Vec<DiskStatus>,
}

/// What a scrub of one chunk found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScrubOutcome {
    /// Every block and the whole-chunk CRC match.
    Good,
    /// A checksum failed: the replica was deleted and queued as lost.
    Corrupt,
    /// The file is gone or its disk failed: queued as lost.
    Lost,
    /// The chunk is no longer held (deleted meanwhile), or the scrub was stopped.
    Skipped,
}

/// The chunks of this chunkserver's data folders.
pub struct ChunkStore {
    disks: Vec<PathBuf>,
    /// Each disk's pack files (none for a disk that failed at start).
    packs: Vec<Option<Packs>>,
    packing: PackConfig,
    /// Bytes of chunk data this store may hold (0: no limit but the disks').
    capacity: u64,
    state: Mutex<State>,
    /// The last health check of the disks and when it ran: small writes reuse it for a moment
    /// rather than pay five system calls each.
    probed: Mutex<Option<(Instant, Vec<Probe>)>>,
    /// Signalled when an id leaves `committing`.
    committed: Condvar,
    scrubbed: AtomicU64,
    scrub_corrupt: AtomicU64,
    /// Chunk bytes stored and served since the process started (for metrics and heartbeats).
    bytes_written: AtomicU64,
    bytes_read: AtomicU64,
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// A disk that passed its health check, with its file system's space.
#[derive(Clone)]
struct Probe {
    disk: usize,
    dev: u64,
    capacity: u64,
    free: u64,
}

/// A disk a new chunk may go to.
#[derive(Clone, Copy, Debug)]
struct Candidate {
    disk: usize,
    /// Effective free bytes (file system and capacity limit).
    free: u64,
    /// Bytes held and being written.
    used: u64,
}

/// The disk with the most free space. Folders sharing a file system see the same free space, so
/// among equals the one holding the fewest bytes wins, then the first.
fn pick_disk(candidates: &[Candidate]) -> Option<usize> {
    candidates
        .iter()
        .max_by_key(|c| (c.free, Reverse(c.used), Reverse(c.disk)))
        .map(|c| c.disk)
}

impl ChunkStore {
    /// Opens the store over `disks` with the default packing, listing the chunks already there
    /// and clearing leftovers of interrupted writes. A disk that cannot be opened or listed is
    /// marked failed; it is an error only if none works. `capacity` caps the chunk bytes held
    /// (0: no cap).
    pub fn open(disks: &[PathBuf], capacity: u64) -> Result<ChunkStore, StoreError> {
        Self::open_with(disks, capacity, PackConfig::default())
    }

    /// [`ChunkStore::open`] with the given packing of small chunks.
    pub fn open_with(
        disks: &[PathBuf],
        capacity: u64,
        packing: PackConfig,
    ) -> Result<ChunkStore, StoreError> {
        let packing = PackConfig {
            max_chunk: packing.max_chunk.min(PACK_MAX_LIMIT),
            ..packing
        };
        let mut state = State {
            disks: vec![DiskUse::default(); disks.len()],
            ..State::default()
        };
        let mut all_packs = Vec::with_capacity(disks.len());
        for (d, root) in disks.iter().enumerate() {
            let opened = open_disk(root).and_then(|files| {
                let (packs, replayed) = Packs::open(&root.join("packs"), packing.file_size)
                    .map_err(|e| format!("opening the pack files of {}: {e}", root.display()))?;
                Ok((files, packs, replayed))
            });
            let (files, packs, replayed) = match opened {
                Ok(found) => found,
                Err(e) => {
                    tracing::error!(disk = %root.display(), error = %e, "data folder unusable; marked failed");
                    state.disks[d].failed = true;
                    all_packs.push(None);
                    continue;
                }
            };
            for (id, e) in disk_chunks(d, files, replayed) {
                if let Some(other) = state.index.get(&id) {
                    tracing::warn!(chunk = %id, disk = %root.display(),
                        kept = %disks[other.disk].display(), "chunk found on two disks; ignoring this copy");
                    continue;
                }
                if let Some(slot) = e.pack {
                    packs.add_live(slot.file, pack::record_len(e.len) as i64);
                }
                state.index.insert(id, e);
                state.disks[d].held += e.len;
                state.disks[d].chunks += 1;
            }
            all_packs.push(Some(packs));
            tracing::info!(disk = %root.display(), chunks = state.disks[d].chunks, "data folder opened");
        }
        if state.disks.iter().all(|d| d.failed) {
            return Err(StoreError::NoDisk);
        }
        Ok(ChunkStore {
            disks: disks.to_vec(),
            packs: all_packs,
            packing,
            capacity,
            state: Mutex::new(state),
            probed: Mutex::new(None),
            committed: Condvar::new(),
            scrubbed: AtomicU64::new(0),
            scrub_corrupt: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
            bytes_read: AtomicU64::new(0),
        })
    }

    /// The state; a panic elsewhere while holding the lock leaves it consistent enough to go on
    /// (every critical section is a handful of map updates).
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn path(&self, disk: usize, id: ChunkId) -> PathBuf {
        let name = id.to_string();
        self.disks[disk]
            .join("chunks")
            .join(&name[..2])
            .join(&name[2..4])
            .join(name)
    }

    fn entry(&self, id: ChunkId) -> Option<Entry> {
        self.state().index.get(&id).copied()
    }

    /// The entry of a chunk and, for a packed one, its open pack file: taken together, so that
    /// compaction cannot remove the file in between.
    fn locate(&self, id: ChunkId) -> Option<(Entry, Option<Arc<File>>)> {
        let st = self.state();
        let e = *st.index.get(&id)?;
        let file = e
            .pack
            .and_then(|slot| self.packs[e.disk].as_ref()?.file(slot.file));
        Some((e, file))
    }

    /// The pack files of `disk` (which opened, since it holds or takes packed chunks).
    fn packs(&self, disk: usize) -> Result<&Packs, StoreError> {
        self.packs[disk].as_ref().ok_or(StoreError::NoDisk)
    }

    /// The data folders, in configuration order.
    pub fn disks(&self) -> &[PathBuf] {
        &self.disks
    }

    /// Every chunk held, for a full chunk report.
    pub fn report(&self) -> Vec<ChunkMeta> {
        self.state()
            .index
            .iter()
            .map(|(id, e)| ChunkMeta {
                id: *id,
                len: e.len,
                crc32c: e.crc,
            })
            .collect()
    }

    /// Ids of every chunk held, in id order (the scrubber's work list).
    pub fn chunk_ids(&self) -> Vec<ChunkId> {
        let mut ids: Vec<ChunkId> = self.state().index.keys().copied().collect();
        ids.sort_unstable_by_key(|id| id.0);
        ids
    }

    /// Number of chunks held.
    pub fn count(&self) -> usize {
        self.state().index.len()
    }

    /// Length and CRC32C of a chunk held here.
    pub fn meta(&self, id: ChunkId) -> Option<(u64, u32)> {
        self.entry(id).map(|e| (e.len, e.crc))
    }

    /// The file holding a chunk, and the offset of the chunk's first data byte in it (tests
    /// corrupt it; operators look at it).
    pub fn data_location(&self, id: ChunkId) -> Option<(PathBuf, u64)> {
        let e = self.entry(id)?;
        Some(match e.pack {
            Some(slot) => (
                self.packs[e.disk].as_ref()?.path(slot.file),
                slot.at + RECORD_HEADER_LEN as u64 + HEADER_LEN,
            ),
            None => (self.path(e.disk, id), HEADER_LEN),
        })
    }

    /// Whether data folder `disk` has been taken out of service.
    pub fn is_failed(&self, disk: usize) -> bool {
        self.state().disks.get(disk).is_none_or(|d| d.failed)
    }

    /// Replicas lost since the last acknowledgement, and the mark to acknowledge them with once
    /// the master has heard of them ([`ChunkStore::ack_lost`]).
    pub fn lost(&self) -> (u64, Vec<ChunkId>) {
        let st = self.state();
        (st.lost_seq, st.lost.iter().map(|(_, id)| *id).collect())
    }

    /// Forgets the lost replicas up to `mark`; later losses stay queued.
    pub fn ack_lost(&self, mark: u64) {
        self.state().lost.retain(|(seq, _)| *seq > mark);
    }

    /// Chunks verified by the scrubber and corrupt replicas it found, since the process started.
    pub fn scrub_counters(&self) -> (u64, u64) {
        (
            self.scrubbed.load(Ordering::Relaxed),
            self.scrub_corrupt.load(Ordering::Relaxed),
        )
    }

    /// Chunk bytes stored (durably, by pipeline writes and copies) and read (verified, sent),
    /// since the process started.
    pub fn io_counters(&self) -> (u64, u64) {
        (
            self.bytes_written.load(Ordering::Relaxed),
            self.bytes_read.load(Ordering::Relaxed),
        )
    }

    /// Bytes of chunk data held on the disks in service.
    pub fn bytes_held(&self) -> u64 {
        self.state()
            .disks
            .iter()
            .filter(|d| !d.failed)
            .map(|d| d.held)
            .sum()
    }

    /// Takes data folder `disk` out of service: its chunks leave the index and are queued as
    /// lost. Idempotent.
    fn fail_disk(&self, disk: usize, reason: &str) -> StoreError {
        let (lost, left) = {
            let mut st = self.state();
            if st.disks[disk].failed {
                (None, 0)
            } else {
                st.disks[disk].failed = true;
                let ids: Vec<ChunkId> = st
                    .index
                    .iter()
                    .filter(|(_, e)| e.disk == disk)
                    .map(|(id, _)| *id)
                    .collect();
                for id in &ids {
                    st.remove(*id);
                    st.queue_lost(*id);
                }
                let left = st.disks.iter().filter(|d| !d.failed).count();
                (Some(ids.len()), left)
            }
        };
        let path = self.disks[disk].display().to_string();
        if let Some(lost) = lost {
            tracing::error!(disk = %path, reason, lost, "data folder failed; its chunks are reported lost");
            if left == 0 {
                tracing::error!(
                    "every data folder has failed: this chunkserver cannot store chunks"
                );
            }
        }
        StoreError::DiskFailed {
            disk: path,
            reason: reason.to_string(),
        }
    }

    /// Drops the replica of `id` on `disk` from the index and queues it as lost; removes its
    /// file when `remove_file`. False if the index no longer held that replica (deleted or
    /// dropped meanwhile).
    fn drop_replica(&self, id: ChunkId, disk: usize, remove_file: bool) -> bool {
        let dropped = {
            let mut st = self.state();
            if st.index.get(&id).map(|e| e.disk) != Some(disk) {
                return false;
            }
            st.queue_lost(id);
            let dropped = st.remove(id);
            if let Some(e) = dropped.filter(|e| e.pack.is_some()) {
                self.forget_packed(id, e);
            }
            dropped
        };
        if remove_file && dropped.is_some_and(|e| e.pack.is_none()) {
            match fs::remove_file(self.path(disk, id)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(chunk = %id, error = %e, "cannot remove a dropped replica")
                }
            }
        }
        true
    }

    /// Cancels the pack record of a chunk that left the index: a tombstone, so that the next
    /// start does not bring it back, and its bytes no longer counted live. Called with the
    /// state locked, so that no new record of the id is appended before the tombstone.
    fn forget_packed(&self, id: ChunkId, e: Entry) {
        let (Some(slot), Some(packs)) = (e.pack, self.packs[e.disk].as_ref()) else {
            return;
        };
        packs.add_live(slot.file, -(pack::record_len(e.len) as i64));
        if let Err(err) = packs.append_tombstone(id) {
            tracing::warn!(chunk = %id, error = %err, "cannot record a packed chunk's deletion");
        }
    }

    /// Turns an I/O error of a write on `disk` into the store's error: running out of space
    /// fails the write only; anything else fails the disk.
    fn write_error(&self, disk: usize, what: &str, e: io::Error) -> StoreError {
        if is_no_space(&e) {
            StoreError::NoSpace(format!("{what} on {}: {e}", self.disks[disk].display()))
        } else {
            self.fail_disk(disk, &format!("{what}: {e}"))
        }
    }

    /// Acts on a fault found reading chunk `id` on `disk` and returns the error to report.
    fn read_fault(&self, id: ChunkId, disk: usize, fault: Fault) -> StoreError {
        match fault {
            Fault::Missing => {
                if let Some(problem) = disk_problem(&self.disks[disk]) {
                    return self.fail_disk(disk, &problem);
                }
                if self.drop_replica(id, disk, false) {
                    tracing::error!(chunk = %id, disk = %self.disks[disk].display(),
                        "chunk file vanished; replica reported lost");
                }
                StoreError::NotFound(id)
            }
            Fault::Io(e) => self.fail_disk(disk, &format!("reading chunk {id}: {e}")),
            Fault::Corrupt(why) => {
                tracing::error!(chunk = %id, disk = %self.disks[disk].display(), error = %why,
                    "corrupt replica; deleted and reported lost");
                self.drop_replica(id, disk, true);
                StoreError::Corrupt(id, why)
            }
        }
    }

    /// The disks in service, after a health check (a disk whose folders are gone is failed
    /// here), with their file systems' space.
    fn probe(&self) -> Vec<Probe> {
        let working: Vec<usize> = {
            let st = self.state();
            (0..self.disks.len())
                .filter(|d| !st.disks[*d].failed)
                .collect()
        };
        let mut out = Vec::with_capacity(working.len());
        // One measure per file system, so folders sharing one compare equal.
        let mut measured: HashMap<u64, (u64, u64)> = HashMap::new();
        for disk in working {
            let root = &self.disks[disk];
            if let Some(problem) = disk_problem(root) {
                self.fail_disk(disk, &problem);
                continue;
            }
            let space = fs::metadata(root).and_then(|m| {
                let dev = m.dev();
                if let Some(space) = measured.get(&dev) {
                    return Ok((dev, *space));
                }
                let space = fs_space(root)?;
                measured.insert(dev, space);
                Ok((dev, space))
            });
            match space {
                Ok((dev, (capacity, free))) => out.push(Probe {
                    disk,
                    dev,
                    capacity,
                    free,
                }),
                Err(e) => {
                    self.fail_disk(disk, &format!("measuring free space: {e}"));
                }
            }
        }
        out
    }

    /// Checks that every disk in service still has its folders; fails those that do not.
    pub fn check_disks(&self) {
        self.probe();
    }

    /// Capacity and free space, in total and per disk. Folders on one file system count its
    /// space once; the configured capacity caps both (blocking: runs `statvfs`).
    pub fn usage(&self) -> Usage {
        let probes = self.probe();
        let st = self.state();
        let remaining = st.remaining(self.capacity);
        let cap = |c: u64| {
            if self.capacity == 0 {
                c
            } else {
                c.min(self.capacity)
            }
        };
        let mut seen = HashSet::new();
        let (mut capacity, mut free) = (0u64, 0u64);
        for p in &probes {
            if seen.insert(p.dev) {
                capacity += p.capacity;
                free += p.free;
            }
        }
        let disks = self
            .disks
            .iter()
            .enumerate()
            .map(|(d, root)| {
                let probe = probes.iter().find(|p| p.disk == d);
                let u = &st.disks[d];
                DiskStatus {
                    path: root.display().to_string(),
                    capacity: probe.map(|p| cap(p.capacity)).unwrap_or(0),
                    free: probe.map(|p| p.free.min(remaining)).unwrap_or(0),
                    chunks: u.chunks,
                    failed: u.failed || probe.is_none(),
                }
            })
            .collect();
        Usage {
            capacity: cap(capacity),
            free: free.min(remaining),
            disks,
        }
    }

    /// The disk a new chunk goes to: in service, with the most effective free space. A small
    /// chunk (`recent_ok`) may go by a health check up to [`PROBE_REUSE`] old.
    fn choose_disk(&self, recent_ok: bool) -> Result<usize, StoreError> {
        let recent = recent_ok
            .then(|| {
                let p = self.probed.lock().unwrap_or_else(|e| e.into_inner());
                p.as_ref()
                    .filter(|(at, _)| at.elapsed() < PROBE_REUSE)
                    .map(|(_, probes)| probes.clone())
            })
            .flatten();
        let probes = match recent {
            Some(p) => p,
            None => {
                let p = self.probe();
                *self.probed.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some((Instant::now(), p.clone()));
                p
            }
        };
        let st = self.state();
        let remaining = st.remaining(self.capacity);
        let candidates: Vec<Candidate> = probes
            .iter()
            .filter(|p| !st.disks[p.disk].failed)
            .map(|p| Candidate {
                disk: p.disk,
                free: p.free.min(remaining),
                used: st.disks[p.disk].held + st.disks[p.disk].pending,
            })
            .collect();
        pick_disk(&candidates).ok_or(StoreError::NoDisk)
    }

    /// Creates the temporary file of a new chunk on the best disk. A disk where that fails
    /// (other than for space) is failed and the next one is tried: no data has been taken from
    /// the sender yet, so the write goes on elsewhere.
    fn create_temp(&self, id: ChunkId) -> Result<(usize, PathBuf, File), StoreError> {
        loop {
            let disk = self.choose_disk(false)?;
            let tmp = self.disks[disk]
                .join("tmp")
                .join(format!("{id}.{:08x}", rand::random::<u32>()));
            match File::create(&tmp) {
                Ok(f) => return Ok((disk, tmp, f)),
                Err(e) => {
                    let err = self.write_error(disk, "creating a chunk file", e);
                    if matches!(err, StoreError::NoSpace(_)) {
                        return Err(err);
                    }
                }
            }
        }
    }

    /// Reserves `n` more bytes for a write in flight on `disk`; refused past the capacity.
    fn reserve(&self, disk: usize, n: u64, reserved: &mut u64) -> Result<(), StoreError> {
        let mut st = self.state();
        if self.capacity > 0 && st.remaining(self.capacity) < n {
            let held: u64 = st.disks.iter().map(|d| d.held).sum();
            return Err(StoreError::NoSpace(format!(
                "the capacity of {} bytes is reached ({held} bytes held)",
                self.capacity
            )));
        }
        st.disks[disk].pending += n;
        *reserved += n;
        Ok(())
    }

    /// Writes a chunk from the messages on `rx` (blocking: run it on a blocking thread). Returns
    /// the length and CRC32C once the chunk is durable: in a pack file if it is small enough
    /// (the data is held until its end shows that), in a file of its own under its final name
    /// otherwise. If `rx` closes before [`WriteMsg::Finish`], or the write fails, nothing is
    /// kept.
    pub fn write(
        &self,
        id: ChunkId,
        mut rx: mpsc::Receiver<WriteMsg>,
    ) -> Result<(u64, u32), StoreError> {
        let mut held = Vec::new();
        let mut size = 0u64;
        if self.packing.max_chunk > 0 {
            loop {
                match rx.blocking_recv() {
                    Some(WriteMsg::Data(data)) => {
                        size += data.len() as u64;
                        held.push(data);
                        if size > self.packing.max_chunk {
                            break; // too large for a pack
                        }
                    }
                    Some(WriteMsg::Finish { len, crc32c }) => {
                        let result = self.write_packed(id, &held, len, crc32c);
                        if let Ok((len, _)) = &result {
                            self.bytes_written.fetch_add(*len, Ordering::Relaxed);
                        }
                        return result;
                    }
                    None => return Err(StoreError::Aborted),
                }
            }
        }
        let (disk, tmp, file) = self.create_temp(id)?;
        let mut reserved = 0u64;
        let result = self.write_to(disk, file, &tmp, id, held, &mut rx, &mut reserved);
        self.release(disk, reserved);
        match &result {
            Ok((len, _)) => {
                self.bytes_written.fetch_add(*len, Ordering::Relaxed);
            }
            Err(_) => {
                let _ = fs::remove_file(&tmp);
            }
        }
        result
    }

    /// [`ChunkStore::write`] of a chunk whose data is all here already (blocking).
    pub fn write_whole(
        &self,
        id: ChunkId,
        data: Bytes,
        len: u64,
        crc32c: u32,
    ) -> Result<(u64, u32), StoreError> {
        let (tx, rx) = mpsc::channel(2);
        let _ = tx.try_send(WriteMsg::Data(data));
        let _ = tx.try_send(WriteMsg::Finish { len, crc32c });
        drop(tx);
        self.write(id, rx)
    }

    /// The largest chunk kept in a pack file (0: none is).
    pub fn pack_max(&self) -> u64 {
        self.packing.max_chunk
    }

    /// Gives back capacity reserved by a write that did not keep it.
    fn release(&self, disk: usize, reserved: u64) {
        if reserved > 0 {
            let mut st = self.state();
            st.disks[disk].pending = st.disks[disk].pending.saturating_sub(reserved);
        }
    }

    /// Writes a small chunk, whose data is all in `pieces`, as a pack record.
    fn write_packed(
        &self,
        id: ChunkId,
        pieces: &[Bytes],
        want_len: u64,
        want_crc: u32,
    ) -> Result<(u64, u32), StoreError> {
        let record = PackRecord::build(id, pieces, want_len, want_crc)?;
        let done = (record.len, record.crc);
        self.write_records(vec![record])?;
        Ok(done)
    }

    /// Writes a batch of chunks whose data is all here (blocking): the small ones as pack
    /// records appended together and made durable by one sync, any larger one as a file. Every
    /// chunk is durable when it returns, or the batch failed.
    pub fn write_batch(&self, entries: Vec<BatchEntry>) -> Result<(), StoreError> {
        let mut ids = HashSet::with_capacity(entries.len());
        if let Some(e) = entries.iter().find(|e| !ids.insert(e.id)) {
            return Err(StoreError::Corrupt(e.id, "named twice in one batch".into()));
        }
        let mut records = Vec::with_capacity(entries.len());
        for e in entries {
            let len = e.data.len() as u64;
            if len <= self.packing.max_chunk {
                records.push(PackRecord::build(e.id, &[e.data], len, e.crc32c)?);
            } else {
                self.write_whole(e.id, e.data, len, e.crc32c)?;
            }
        }
        let bytes: u64 = records.iter().map(|r| r.len).sum();
        self.write_records(records)?;
        self.bytes_written.fetch_add(bytes, Ordering::Relaxed);
        Ok(())
    }

    /// Appends pack records to one disk with one write and one (shared) sync, and indexes them.
    /// A chunk already held with the same length and CRC is left as it is (a retried copy);
    /// one held with different contents fails the whole batch.
    fn write_records(&self, mut records: Vec<PackRecord>) -> Result<(), StoreError> {
        let disk = self.choose_disk(true)?;
        let mut reserved = 0u64;
        let total: u64 = records.iter().map(|r| r.len).sum();
        self.reserve(disk, total, &mut reserved)?;
        // Claim the ids, so that no other write of them commits meanwhile.
        let claimed = {
            let mut st = self.state();
            loop {
                if st.disks[disk].failed {
                    drop(st);
                    self.release(disk, reserved);
                    return Err(self.fail_disk(disk, "failed while a chunk was being written"));
                }
                if !records.iter().any(|r| st.committing.contains(&r.id)) {
                    break;
                }
                st = self.committed.wait(st).unwrap_or_else(|e| e.into_inner());
            }
            let mut different = None;
            records.retain(|r| match st.index.get(&r.id) {
                Some(e) if (e.len, e.crc) == (r.len, r.crc) => false,
                Some(_) => {
                    different = Some(r.id);
                    false
                }
                None => true,
            });
            if let Some(id) = different {
                drop(st);
                self.release(disk, reserved);
                return Err(StoreError::Corrupt(
                    id,
                    "a different chunk with this id exists".into(),
                ));
            }
            for r in &records {
                st.committing.insert(r.id);
            }
            records.iter().map(|r| r.id).collect::<Vec<_>>()
        };
        let mut buf = Vec::with_capacity(records.iter().map(|r| r.bytes.len()).sum());
        let mut offsets = Vec::with_capacity(records.len());
        for r in &records {
            offsets.push(buf.len() as u64);
            buf.extend_from_slice(&r.bytes);
        }
        let appended = match (records.is_empty(), self.packs(disk)) {
            (true, _) => Ok(None),
            (false, Ok(packs)) => packs
                .append(&buf)
                .and_then(|(slot, seq)| packs.wait_synced(seq).map(|()| Some(slot)))
                .map_err(|e| self.write_error(disk, "appending to a pack file", e)),
            (false, Err(e)) => Err(e),
        };
        {
            let mut st = self.state();
            for id in &claimed {
                st.committing.remove(id);
            }
            if let Ok(Some(start)) = &appended {
                if !st.disks[disk].failed {
                    for (r, off) in records.iter().zip(&offsets) {
                        let slot = Slot {
                            file: start.file,
                            at: start.at + off,
                        };
                        let e = Entry {
                            disk,
                            len: r.len,
                            crc: r.crc,
                            pack: Some(slot),
                        };
                        st.index.insert(r.id, e);
                        let d = &mut st.disks[disk];
                        d.held += r.len;
                        d.chunks += 1;
                        d.pending = d.pending.saturating_sub(r.len);
                        reserved = reserved.saturating_sub(r.len);
                        st.lost.retain(|(_, l)| *l != r.id);
                        if let Some(packs) = &self.packs[disk] {
                            packs.add_live(slot.file, pack::record_len(r.len) as i64);
                        }
                    }
                }
            }
        }
        self.committed.notify_all();
        self.release(disk, reserved);
        appended?;
        if self.is_failed(disk) {
            return Err(self.fail_disk(disk, "failed while a chunk was being written"));
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn write_to(
        &self,
        disk: usize,
        file: File,
        tmp: &Path,
        id: ChunkId,
        first: Vec<Bytes>,
        rx: &mut mpsc::Receiver<WriteMsg>,
        reserved: &mut u64,
    ) -> Result<(u64, u32), StoreError> {
        let werr = |e: io::Error| self.write_error(disk, "writing a chunk", e);
        let mut f = BufWriter::with_capacity(WRITE_BUFFER, file);
        f.write_all(&image_header()).map_err(werr)?;
        let mut len = 0u64;
        let mut crcs = BlockCrcs::default();
        let mut first = first.into_iter();
        let announced = loop {
            let msg = match first.next() {
                Some(data) => Some(WriteMsg::Data(data)),
                None => rx.blocking_recv(),
            };
            match msg {
                Some(WriteMsg::Data(data)) => {
                    self.reserve(disk, data.len() as u64, reserved)?;
                    f.write_all(&data).map_err(werr)?;
                    len += data.len() as u64;
                    crcs.update(&data);
                }
                Some(WriteMsg::Finish {
                    len: want_len,
                    crc32c,
                }) => break (want_len, crc32c),
                None => return Err(StoreError::Aborted),
            }
        };
        let (blocks, whole) = crcs.finish();
        check_announced(id, len, whole, announced.0, announced.1)?;
        f.write_all(&trailer(&blocks, len, whole)).map_err(werr)?;
        let file = f.into_inner().map_err(|e| werr(e.into_error()))?;
        file.sync_all()
            .map_err(|e| self.write_error(disk, "fsyncing a chunk", e))?;
        self.commit(disk, tmp, id, len, whole, reserved)
    }

    /// Renames a finished temporary chunk file into place and records the chunk. Only one write
    /// of an id commits at a time; a second one waits and then finds the first's chunk.
    /// (Packed chunks commit in [`ChunkStore::write_records`].)
    fn commit(
        &self,
        disk: usize,
        tmp: &Path,
        id: ChunkId,
        len: u64,
        crc: u32,
        reserved: &mut u64,
    ) -> Result<(u64, u32), StoreError> {
        {
            let mut st = self.state();
            loop {
                if st.disks[disk].failed {
                    drop(st);
                    return Err(self.fail_disk(disk, "failed while a chunk was being written"));
                }
                if let Some(existing) = st.index.get(&id).copied() {
                    drop(st);
                    // Chunk ids are random: the same id again is a retried copy of the same
                    // chunk. Keep the durable one; refuse a different one rather than overwrite.
                    let _ = fs::remove_file(tmp);
                    if (existing.len, existing.crc) == (len, crc) {
                        return Ok((len, crc));
                    }
                    return Err(StoreError::Corrupt(
                        id,
                        "a different chunk with this id exists".into(),
                    ));
                }
                if st.committing.insert(id) {
                    break;
                }
                st = self.committed.wait(st).unwrap_or_else(|e| e.into_inner());
            }
        }
        let placed = self.place(disk, tmp, &self.path(disk, id));
        {
            let mut st = self.state();
            st.committing.remove(&id);
            if placed.is_ok() && !st.disks[disk].failed {
                let e = Entry {
                    disk,
                    len,
                    crc,
                    pack: None,
                };
                st.index.insert(id, e);
                let d = &mut st.disks[disk];
                d.held += len;
                d.chunks += 1;
                d.pending = d.pending.saturating_sub(*reserved);
                *reserved = 0;
                // Copied here again (re-replication): no longer lost.
                st.lost.retain(|(_, l)| *l != id);
            }
        }
        self.committed.notify_all();
        placed?;
        if self.is_failed(disk) {
            return Err(self.fail_disk(disk, "failed while a chunk was being written"));
        }
        Ok((len, crc))
    }

    /// Moves a durable temporary file to `dest` and makes the rename durable.
    fn place(&self, disk: usize, tmp: &Path, dest: &Path) -> Result<(), StoreError> {
        let dir = dest
            .parent()
            .ok_or_else(|| io::Error::other("chunk path has no folder"))?;
        create_chunk_dir(&self.disks[disk].join("chunks"), dir)
            .map_err(|e| self.write_error(disk, "creating a chunk folder", e))?;
        fs::rename(tmp, dest).map_err(|e| self.write_error(disk, "renaming a chunk", e))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| self.write_error(disk, "fsyncing a chunk folder", e))
    }

    /// Streams `len` bytes of a chunk from `offset` into `tx`, verifying every block (blocking).
    /// A failure ends the stream with an error item instead of bytes; a corrupt or vanished
    /// replica is dropped and queued as lost, a disk I/O error fails the disk.
    pub fn read(
        &self,
        id: ChunkId,
        offset: u64,
        len: Option<u64>,
        tx: mpsc::Sender<Result<Bytes, io::Error>>,
    ) -> Result<(), StoreError> {
        let result = self.read_to(id, offset, len, &tx);
        if let Err(e) = &result {
            let _ = tx.blocking_send(Err(io::Error::other(e.to_string())));
        }
        result
    }

    fn read_to(
        &self,
        id: ChunkId,
        offset: u64,
        len: Option<u64>,
        tx: &mpsc::Sender<Result<Bytes, io::Error>>,
    ) -> Result<(), StoreError> {
        let (entry, packed) = self.locate(id).ok_or(StoreError::NotFound(id))?;
        let fault = |f: Fault| self.read_fault(id, entry.disk, f);
        if let Some(slot) = entry.pack {
            let file = packed.ok_or(Fault::Missing).map_err(fault)?;
            return self.read_packed(id, entry, &file, slot, offset, len, tx);
        }
        let (size, file, table) = open_checked(&self.path(entry.disk, id), entry).map_err(fault)?;
        let len = range_len(id, offset, len, size)?;
        if len == 0 {
            return Ok(());
        }
        let block = BLOCK_SIZE as u64;
        let first = offset / block;
        let last = (offset + len - 1) / block;
        for b in first..=last {
            let start = b * block;
            let blen = block.min(size - start) as usize;
            let mut buf = vec![0u8; blen];
            read_block(&file, &table, b, &mut buf).map_err(fault)?;
            let from = offset.saturating_sub(start) as usize;
            let to = ((offset + len).min(start + blen as u64) - start) as usize;
            let bytes = Bytes::from(buf).slice(from..to);
            let n = bytes.len() as u64;
            if tx.blocking_send(Ok(bytes)).is_err() {
                break; // the reader went away
            }
            self.bytes_read.fetch_add(n, Ordering::Relaxed);
        }
        Ok(())
    }

    /// [`ChunkStore::read_to`] of a packed chunk: its record is read at once, and each block
    /// sent is checked first.
    #[allow(clippy::too_many_arguments)]
    fn read_packed(
        &self,
        id: ChunkId,
        entry: Entry,
        file: &File,
        slot: Slot,
        offset: u64,
        len: Option<u64>,
        tx: &mpsc::Sender<Result<Bytes, io::Error>>,
    ) -> Result<(), StoreError> {
        let size = entry.len;
        let len = range_len(id, offset, len, size)?;
        if len == 0 {
            return Ok(());
        }
        let fault = |f: Fault| self.read_fault(id, entry.disk, f);
        let image = read_image(file, slot, entry).map_err(fault)?;
        let block = BLOCK_SIZE as u64;
        for b in offset / block..=(offset + len - 1) / block {
            let start = b * block;
            let data = image_block(&image, size, b).map_err(fault)?;
            let from = offset.saturating_sub(start) as usize;
            let to = ((offset + len).min(start + data.len() as u64) - start) as usize;
            let bytes = data.slice(from..to);
            let n = bytes.len() as u64;
            if tx.blocking_send(Ok(bytes)).is_err() {
                break;
            }
            self.bytes_read.fetch_add(n, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Re-reads a whole chunk at no more than `rate` bytes per second (0: unthrottled) and
    /// checks every block and the whole-chunk CRC32C against the footer (blocking). A corrupt
    /// replica is deleted and queued as lost. Gives up, unjudged, once `stop` is set.
    pub fn scrub_chunk(&self, id: ChunkId, rate: u64, stop: &AtomicBool) -> ScrubOutcome {
        let Some((entry, packed)) = self.locate(id) else {
            return ScrubOutcome::Skipped;
        };
        let mut throttle = Throttle::new(rate, stop);
        let checked = match (entry.pack, packed) {
            (None, _) => verify(&self.path(entry.disk, id), entry, &mut throttle),
            (Some(slot), Some(file)) => verify_packed(&file, slot, entry, &mut throttle),
            (Some(_), None) => Err(Fault::Missing),
        };
        match checked {
            Ok(false) => ScrubOutcome::Skipped,
            Ok(true) => {
                self.scrubbed.fetch_add(1, Ordering::Relaxed);
                ScrubOutcome::Good
            }
            Err(Fault::Corrupt(why)) => {
                self.scrubbed.fetch_add(1, Ordering::Relaxed);
                self.scrub_corrupt.fetch_add(1, Ordering::Relaxed);
                self.read_fault(id, entry.disk, Fault::Corrupt(why));
                ScrubOutcome::Corrupt
            }
            // Deleted while being scrubbed: nothing to report.
            Err(Fault::Missing) if self.entry(id) != Some(entry) => ScrubOutcome::Skipped,
            Err(fault) => {
                self.read_fault(id, entry.disk, fault);
                ScrubOutcome::Lost
            }
        }
    }

    /// Deletes a chunk (an order of the master). The index forgets it first, so a read that
    /// races with the deletion either has the file open already or finds nothing.
    pub fn delete(&self, id: ChunkId) -> Result<(), StoreError> {
        let entry = {
            let mut st = self.state();
            let entry = st.remove(id).ok_or(StoreError::NotFound(id))?;
            if entry.pack.is_some() {
                self.forget_packed(id, entry);
                return Ok(());
            }
            entry
        };
        match fs::remove_file(self.path(entry.disk, id)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.fail_disk(entry.disk, &format!("deleting chunk {id}: {e}"))),
        }
    }

    /// Reclaims the space of deleted packed chunks (blocking): the live records of every sealed
    /// pack file less than half live are appended anew, and the file is removed. Answers the
    /// number of records moved.
    pub fn compact(&self) -> usize {
        let mut moved = 0;
        for (disk, packs) in self.packs.iter().enumerate() {
            let Some(packs) = packs else { continue };
            for n in packs.sparse() {
                if self.is_failed(disk) {
                    break;
                }
                match self.compact_file(disk, packs, n) {
                    Ok(m) => {
                        moved += m;
                        if let Err(e) = packs.retire(n) {
                            tracing::warn!(pack = %packs.path(n).display(), error = %e,
                                "cannot remove a compacted pack file");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(pack = %packs.path(n).display(), error = %e,
                            "compaction stopped");
                        break;
                    }
                }
            }
        }
        if moved > 0 {
            tracing::info!(moved, "pack files compacted");
        }
        moved
    }

    /// Moves the live records of pack file `n` of `disk` to the current pack file, in batches
    /// that are each made durable before the index points at them.
    fn compact_file(&self, disk: usize, packs: &Packs, n: u32) -> Result<usize, StoreError> {
        let live: Vec<(ChunkId, Entry)> = {
            let st = self.state();
            st.index
                .iter()
                .filter(|(_, e)| e.disk == disk && e.pack.is_some_and(|s| s.file == n))
                .map(|(id, e)| (*id, *e))
                .collect()
        };
        let Some(file) = packs.file(n) else {
            return Ok(0);
        };
        let werr = |e: io::Error| self.write_error(disk, "compacting a pack file", e);
        let mut moved = 0;
        let mut batch: Vec<(ChunkId, Entry, Slot)> = Vec::new();
        let mut batch_bytes = 0u64;
        let mut last = 0u64;
        for (i, (id, e)) in live.iter().enumerate() {
            let slot = e.pack.expect("a packed entry");
            match read_image(&file, slot, *e).and_then(|image| {
                check_whole(&image, *e)?;
                Ok(image)
            }) {
                Ok(image) => {
                    let mut record = pack::record_header(false, *id, e.len as u32, e.crc).to_vec();
                    record.extend_from_slice(&image);
                    let (to, seq) = packs.append(&record).map_err(werr)?;
                    batch.push((*id, *e, to));
                    batch_bytes += record.len() as u64;
                    last = seq;
                }
                Err(Fault::Io(err)) => {
                    return Err(self.fail_disk(disk, &format!("reading pack {n}: {err}")))
                }
                Err(fault) => {
                    self.read_fault(*id, disk, fault);
                }
            }
            if batch_bytes >= COMPACT_BATCH || i + 1 == live.len() {
                packs.wait_synced(last).map_err(werr)?;
                moved += self.repoint(packs, std::mem::take(&mut batch));
                batch_bytes = 0;
            }
        }
        Ok(moved)
    }

    /// Points the index at durable copies of packed chunks, where it still points at the
    /// records they were copied from. A chunk deleted meanwhile gets a tombstone after its copy.
    fn repoint(&self, packs: &Packs, moves: Vec<(ChunkId, Entry, Slot)>) -> usize {
        let mut moved = 0;
        {
            let mut st = self.state();
            for (id, was, to) in moves {
                let bytes = pack::record_len(was.len) as i64;
                match st.index.get_mut(&id) {
                    Some(e) if *e == was => {
                        e.pack = Some(to);
                        let from = was.pack.expect("a packed entry").file;
                        packs.add_live(from, -bytes);
                        packs.add_live(to.file, bytes);
                        moved += 1;
                    }
                    Some(_) => {} // written again meanwhile: the copy is a harmless duplicate
                    // Deleted meanwhile: a tombstone after the copy (with the state locked, so
                    // that it cannot follow a newer record of the id).
                    None => {
                        if let Err(e) = packs.append_tombstone(id) {
                            tracing::warn!(chunk = %id, error = %e,
                                "cannot record a packed chunk's deletion");
                        }
                    }
                }
            }
        }
        moved
    }

    /// Deletes each chunk of `ids` that is here; answers how many were.
    pub fn delete_all(&self, ids: &[ChunkId]) -> usize {
        let mut deleted = 0;
        for id in ids {
            match self.delete(*id) {
                Ok(()) => deleted += 1,
                Err(StoreError::NotFound(_)) => {}
                Err(e) => tracing::warn!(chunk = %id, error = %e, "cannot delete a chunk"),
            }
        }
        deleted
    }
}

/// Prepares one data folder and lists its chunks: (id, length, CRC32C).
fn open_disk(root: &Path) -> Result<Vec<(ChunkId, u64, u32)>, String> {
    let ctx = |what: &str, p: &Path, e: io::Error| format!("{what} {}: {e}", p.display());
    fs::create_dir_all(root).map_err(|e| ctx("creating", root, e))?;
    let tmp = root.join("tmp");
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(|e| ctx("clearing", &tmp, e))?;
    }
    fs::create_dir_all(&tmp).map_err(|e| ctx("creating", &tmp, e))?;
    let chunks = root.join("chunks");
    fs::create_dir_all(&chunks).map_err(|e| ctx("creating", &chunks, e))?;
    let mut found = Vec::new();
    let list = |dir: &Path| -> Result<Vec<fs::DirEntry>, String> {
        fs::read_dir(dir)
            .and_then(|entries| entries.collect::<io::Result<Vec<_>>>())
            .map_err(|e| ctx("listing", dir, e))
    };
    let is_dir = |e: &fs::DirEntry| e.file_type().is_ok_and(|t| t.is_dir());
    for a in list(&chunks)?.into_iter().filter(is_dir) {
        for b in list(&a.path())?.into_iter().filter(is_dir) {
            for f in list(&b.path())? {
                let Some(id) = f
                    .file_name()
                    .to_str()
                    .and_then(|n| n.parse::<ChunkId>().ok())
                else {
                    continue;
                };
                match read_footer(&f.path()) {
                    Ok((len, crc, _)) => found.push((id, len, crc)),
                    Err(Fault::Missing) => {}
                    Err(Fault::Corrupt(why)) => {
                        tracing::warn!(chunk = %id, error = %why, "skipping unreadable chunk")
                    }
                    Err(Fault::Io(e)) => return Err(ctx("reading", &f.path(), e)),
                }
            }
        }
    }
    Ok(found)
}

/// The chunks of one disk: its chunk files, then its pack records replayed in order (the last
/// record of an id decides; a tombstone cancels a packed chunk, never a chunk file).
fn disk_chunks(
    disk: usize,
    files: Vec<(ChunkId, u64, u32)>,
    replayed: Vec<Replayed>,
) -> HashMap<ChunkId, Entry> {
    let mut here: HashMap<ChunkId, Entry> = files
        .into_iter()
        .map(|(id, len, crc)| {
            let e = Entry {
                disk,
                len,
                crc,
                pack: None,
            };
            (id, e)
        })
        .collect();
    for r in replayed {
        match r {
            Replayed::Chunk { id, len, crc, slot } => {
                if here.get(&id).is_some_and(|e| e.pack.is_none()) {
                    continue;
                }
                let e = Entry {
                    disk,
                    len,
                    crc,
                    pack: Some(slot),
                };
                here.insert(id, e);
            }
            Replayed::Tombstone(id) => {
                if here.get(&id).is_some_and(|e| e.pack.is_some()) {
                    here.remove(&id);
                }
            }
        }
    }
    here
}

/// The first bytes of a chunk image (a chunk file, or a pack record after its header).
fn image_header() -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&CHUNK_FORMAT_VERSION.to_le_bytes());
    h
}

/// The bytes of a chunk image after its data: the block CRC table and the footer.
fn trailer(blocks: &[u32], len: u64, crc: u32) -> Vec<u8> {
    let mut t = Vec::with_capacity(blocks.len() * 4 + FOOTER_LEN as usize);
    for c in blocks {
        t.extend_from_slice(&c.to_le_bytes());
    }
    t.extend_from_slice(&len.to_le_bytes());
    t.extend_from_slice(&crc.to_le_bytes());
    t.extend_from_slice(FOOTER_MAGIC);
    t
}

/// Bytes of the image of a chunk of `len` data bytes.
pub fn image_len(len: u64) -> u64 {
    HEADER_LEN + len + len.div_ceil(BLOCK_SIZE as u64) * 4 + FOOTER_LEN
}

/// The image of a chunk holding `data`, whose CRC32C is `crc`.
#[cfg(test)]
pub(crate) fn image(data: &[u8], crc: u32) -> Vec<u8> {
    let mut crcs = BlockCrcs::default();
    crcs.update(data);
    let (blocks, _) = crcs.finish();
    let mut img = image_header().to_vec();
    img.extend_from_slice(data);
    img.extend_from_slice(&trailer(&blocks, data.len() as u64, crc));
    img
}

/// A chunk's pack record, built and checked before it is written.
struct PackRecord {
    id: ChunkId,
    len: u64,
    crc: u32,
    bytes: Vec<u8>,
}

impl PackRecord {
    /// The record of chunk `id` holding `pieces`, which must match what the sender announced.
    fn build(
        id: ChunkId,
        pieces: &[Bytes],
        want_len: u64,
        want_crc: u32,
    ) -> Result<PackRecord, StoreError> {
        let len: u64 = pieces.iter().map(|p| p.len() as u64).sum();
        let mut bytes = Vec::with_capacity(pack::record_len(len) as usize);
        bytes.extend_from_slice(&[0u8; RECORD_HEADER_LEN]);
        bytes.extend_from_slice(&image_header());
        let mut crcs = BlockCrcs::default();
        for p in pieces {
            crcs.update(p);
            bytes.extend_from_slice(p);
        }
        let (blocks, crc) = crcs.finish();
        check_announced(id, len, crc, want_len, want_crc)?;
        bytes.extend_from_slice(&trailer(&blocks, len, crc));
        let header = pack::record_header(false, id, len as u32, crc);
        bytes[..RECORD_HEADER_LEN].copy_from_slice(&header);
        Ok(PackRecord {
            id,
            len,
            crc,
            bytes,
        })
    }
}

/// The length of a read of `len` bytes (the rest of the chunk if none) from `offset` of a chunk
/// of `size` bytes, or why it is outside the chunk.
fn range_len(id: ChunkId, offset: u64, len: Option<u64>, size: u64) -> Result<u64, StoreError> {
    let len = len.unwrap_or(size.saturating_sub(offset));
    if offset.checked_add(len).is_none_or(|end| end > size) {
        return Err(StoreError::BadRange {
            id,
            offset,
            len,
            size,
        });
    }
    Ok(len)
}

/// Refuses a chunk whose received length or CRC differs from what its sender announced.
fn check_announced(
    id: ChunkId,
    len: u64,
    crc: u32,
    want_len: u64,
    want_crc: u32,
) -> Result<(), StoreError> {
    if (len, crc) == (want_len, want_crc) {
        return Ok(());
    }
    Err(StoreError::Corrupt(
        id,
        format!("received {len} bytes crc {crc:08x}, sender announced {want_len} bytes crc {want_crc:08x}"),
    ))
}

/// Reads the image of a packed chunk and checks its header and footer against the index.
fn read_image(file: &File, slot: Slot, entry: Entry) -> Result<Bytes, Fault> {
    let mut buf = vec![0u8; image_len(entry.len) as usize];
    file.read_exact_at(&mut buf, slot.at + RECORD_HEADER_LEN as u64)?;
    if &buf[..8] != MAGIC {
        return Err(Fault::Corrupt("pack record holds no chunk image".into()));
    }
    let footer = &buf[buf.len() - FOOTER_LEN as usize..];
    let mut len = [0u8; 8];
    len.copy_from_slice(&footer[..8]);
    let (len, crc) = (u64::from_le_bytes(len), le32(&footer[8..]));
    if &footer[12..] != FOOTER_MAGIC || (len, crc) != (entry.len, entry.crc) {
        return Err(Fault::Corrupt(format!(
            "pack record footer says {len} bytes crc {crc:08x}, the chunk was stored as {} bytes crc {:08x}",
            entry.len, entry.crc
        )));
    }
    Ok(Bytes::from(buf))
}

/// The data of block `b` of a chunk image of `len` data bytes, checked against its CRC.
fn image_block(image: &Bytes, len: u64, b: u64) -> Result<Bytes, Fault> {
    let block = BLOCK_SIZE as u64;
    let start = HEADER_LEN + b * block;
    let blen = block.min(len - b * block);
    let data = image.slice(start as usize..(start + blen) as usize);
    let at = (HEADER_LEN + len + b * 4) as usize;
    if crc32c::crc32c(&data) != le32(&image[at..at + 4]) {
        return Err(Fault::Corrupt(format!("block {b} fails its checksum")));
    }
    Ok(data)
}

/// Checks every block of a packed chunk's image and its whole-chunk CRC32C.
fn check_whole(image: &Bytes, entry: Entry) -> Result<(), Fault> {
    let mut whole = 0u32;
    for b in 0..entry.len.div_ceil(BLOCK_SIZE as u64) {
        whole = crc32c::crc32c_append(whole, &image_block(image, entry.len, b)?);
    }
    if whole != entry.crc {
        return Err(Fault::Corrupt(format!(
            "whole-chunk checksum {whole:08x} differs from the footer's {:08x}",
            entry.crc
        )));
    }
    Ok(())
}

/// [`verify`] for a packed chunk.
fn verify_packed(
    file: &File,
    slot: Slot,
    entry: Entry,
    throttle: &mut Throttle,
) -> Result<bool, Fault> {
    let image = read_image(file, slot, entry)?;
    check_whole(&image, entry)?;
    Ok(throttle.consume(entry.len))
}

/// Why a data folder is unusable, if it is: its root, `chunks/` or `tmp/` is gone or not a
/// folder (an unmounted or replaced disk).
fn disk_problem(root: &Path) -> Option<String> {
    for p in [
        root.to_path_buf(),
        root.join("chunks"),
        root.join("tmp"),
        root.join("packs"),
    ] {
        match fs::metadata(&p) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Some(format!("{} is not a folder", p.display())),
            Err(e) => return Some(format!("{}: {e}", p.display())),
        }
    }
    None
}

/// Total and free bytes of the file system holding `dir`.
fn fs_space(dir: &Path) -> io::Result<(u64, u64)> {
    let s = nix::sys::statvfs::statvfs(dir).map_err(io::Error::from)?;
    let frag = s.fragment_size();
    Ok((s.blocks() * frag, s.blocks_available() * frag))
}

/// Out of space or quota: the write fails, the disk is fine.
fn is_no_space(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

/// Creates the hashed sub-folders of `dir` under `chunks` (which must exist: a missing `chunks/`
/// is a disk failure, not something to paper over), fsyncing each parent whose entries changed
/// so that a new sub-folder survives a power loss with the chunk renamed into it.
fn create_chunk_dir(chunks: &Path, dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let Some(parent) = dir.parent() else {
        return Err(io::Error::other("chunk folder has no parent"));
    };
    if parent != chunks {
        create_chunk_dir(chunks, parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => File::open(parent)?.sync_all(),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// What is wrong with a chunk file.
#[derive(Debug)]
enum Fault {
    /// The file is not there.
    Missing,
    /// The disk failed to answer.
    Io(io::Error),
    /// The file is there but its bytes are wrong.
    Corrupt(String),
}

impl From<io::Error> for Fault {
    fn from(e: io::Error) -> Fault {
        match e.kind() {
            io::ErrorKind::NotFound => Fault::Missing,
            // The length was checked against the footer: a short read means a damaged file.
            io::ErrorKind::UnexpectedEof => {
                Fault::Corrupt("file shorter than its footer says".into())
            }
            _ => Fault::Io(e),
        }
    }
}

/// Reads and checks a chunk file's header and footer: (data length, CRC32C, open file).
fn read_footer(path: &Path) -> Result<(u64, u32, File), Fault> {
    let mut f = File::open(path)?;
    let total = f.seek(SeekFrom::End(0))?;
    if total < HEADER_LEN + FOOTER_LEN {
        return Err(Fault::Corrupt("chunk file too short".into()));
    }
    let mut header = [0u8; HEADER_LEN as usize];
    f.read_exact_at(&mut header, 0)?;
    if &header[..8] != MAGIC {
        return Err(Fault::Corrupt("not a chunk file".into()));
    }
    let version = le32(&header[8..]);
    if version > CHUNK_FORMAT_VERSION {
        return Err(Fault::Corrupt(format!("chunk format {version} is too new")));
    }
    let mut footer = [0u8; FOOTER_LEN as usize];
    f.read_exact_at(&mut footer, total - FOOTER_LEN)?;
    if &footer[12..] != FOOTER_MAGIC {
        return Err(Fault::Corrupt("chunk footer missing".into()));
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&footer[..8]);
    let len = u64::from_le_bytes(len);
    let crc = le32(&footer[8..]);
    let nblocks = len.div_ceil(BLOCK_SIZE as u64);
    let expected = nblocks
        .checked_mul(4)
        .and_then(|t| t.checked_add(HEADER_LEN + FOOTER_LEN))
        .and_then(|t| t.checked_add(len));
    if expected != Some(total) {
        return Err(Fault::Corrupt(
            "chunk file length does not match its footer".into(),
        ));
    }
    Ok((len, crc, f))
}

/// Opens a chunk file whose footer must agree with the index; answers its length, the open
/// file and its block CRC table.
fn open_checked(path: &Path, entry: Entry) -> Result<(u64, File, Vec<u8>), Fault> {
    let (size, crc, file) = read_footer(path)?;
    if (size, crc) != (entry.len, entry.crc) {
        return Err(Fault::Corrupt(format!(
            "footer says {size} bytes crc {crc:08x}, the chunk was stored as {} bytes crc {:08x}",
            entry.len, entry.crc
        )));
    }
    let mut table = vec![0u8; (size.div_ceil(BLOCK_SIZE as u64) * 4) as usize];
    file.read_exact_at(&mut table, HEADER_LEN + size)?;
    Ok((size, file, table))
}

/// Reads block `b` into `buf` (sized to the block) and checks it against its CRC.
fn read_block(file: &File, table: &[u8], b: u64, buf: &mut [u8]) -> Result<(), Fault> {
    file.read_exact_at(buf, HEADER_LEN + b * BLOCK_SIZE as u64)?;
    let at = (b * 4) as usize;
    if crc32c::crc32c(buf) != le32(&table[at..at + 4]) {
        return Err(Fault::Corrupt(format!("block {b} fails its checksum")));
    }
    Ok(())
}

/// Checks every block of a chunk file and its whole-chunk CRC32C; false if stopped before the
/// end.
fn verify(path: &Path, entry: Entry, throttle: &mut Throttle) -> Result<bool, Fault> {
    let (size, file, table) = open_checked(path, entry)?;
    let mut buf = vec![0u8; BLOCK_SIZE];
    let mut whole = 0u32;
    for b in 0..size.div_ceil(BLOCK_SIZE as u64) {
        let blen = (BLOCK_SIZE as u64).min(size - b * BLOCK_SIZE as u64) as usize;
        read_block(&file, &table, b, &mut buf[..blen])?;
        whole = crc32c::crc32c_append(whole, &buf[..blen]);
        if !throttle.consume(blen as u64) {
            return Ok(false);
        }
    }
    if whole != entry.crc {
        return Err(Fault::Corrupt(format!(
            "whole-chunk checksum {whole:08x} differs from the footer's {:08x}",
            entry.crc
        )));
    }
    Ok(true)
}

/// Keeps a blocking reader under `rate` bytes per second by sleeping when ahead of schedule,
/// and tells it to stop once `stop` is set.
struct Throttle<'a> {
    rate: u64,
    start: Instant,
    bytes: u64,
    stop: &'a AtomicBool,
}

impl<'a> Throttle<'a> {
    fn new(rate: u64, stop: &'a AtomicBool) -> Throttle<'a> {
        Throttle {
            rate,
            start: Instant::now(),
            bytes: 0,
            stop,
        }
    }

    /// Accounts `n` bytes read, sleeping as needed; false if the reader must stop.
    fn consume(&mut self, n: u64) -> bool {
        self.bytes += n;
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return false;
            }
            if self.rate == 0 {
                return true;
            }
            let due = Duration::from_secs_f64(self.bytes as f64 / self.rate as f64);
            match due.checked_sub(self.start.elapsed()) {
                Some(ahead) if !ahead.is_zero() => std::thread::sleep(ahead.min(STOP_CHECK)),
                _ => return true,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(name: &str) -> PathBuf {
        let p =
            std::env::temp_dir().join(format!("tinydfs-store-{name}-{}", rand::random::<u32>()));
        fs::create_dir_all(&p).unwrap();
        p
    }

    /// A store that keeps every chunk in a file of its own (the tests below packing's).
    fn open_files(disks: &[PathBuf], capacity: u64) -> Result<ChunkStore, StoreError> {
        let files_only = PackConfig {
            max_chunk: 0,
            ..PackConfig::default()
        };
        ChunkStore::open_with(disks, capacity, files_only)
    }

    fn data_path(store: &ChunkStore, id: ChunkId) -> Option<PathBuf> {
        store.data_location(id).map(|(path, _)| path)
    }

    fn pattern(n: usize, seed: u32) -> Vec<u8> {
        (0..n as u32)
            .map(|i| (i.wrapping_mul(7).wrapping_add(seed) % 251) as u8)
            .collect()
    }

    fn write(
        store: &ChunkStore,
        id: ChunkId,
        data: &[u8],
        finish: bool,
    ) -> Result<(u64, u32), StoreError> {
        let (tx, rx) = mpsc::channel(1024);
        for piece in data.chunks(7000) {
            tx.try_send(WriteMsg::Data(Bytes::copy_from_slice(piece)))
                .unwrap();
        }
        if finish {
            tx.try_send(WriteMsg::Finish {
                len: data.len() as u64,
                crc32c: crc32c::crc32c(data),
            })
            .unwrap();
        }
        drop(tx);
        store.write(id, rx)
    }

    fn read(store: &ChunkStore, id: ChunkId, off: u64, len: u64) -> Result<Vec<u8>, String> {
        let (tx, mut rx) = mpsc::channel(4096);
        store
            .read(id, off, Some(len), tx)
            .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        while let Ok(b) = rx.try_recv() {
            out.extend_from_slice(&b.map_err(|e| e.to_string())?);
        }
        Ok(out)
    }

    /// Which of `disks` holds chunk `id`.
    fn disk_of(store: &ChunkStore, disks: &[PathBuf], id: ChunkId) -> Option<usize> {
        let path = data_path(store, id)?;
        disks.iter().position(|d| path.starts_with(d))
    }

    fn temp_files(disk: &Path) -> usize {
        fs::read_dir(disk.join("tmp")).unwrap().count()
    }

    fn flip(path: &Path, at: u64) {
        let mut bytes = fs::read(path).unwrap();
        bytes[at as usize] ^= 1;
        fs::write(path, bytes).unwrap();
    }

    #[test]
    fn writes_reads_ranges_and_detects_corruption() {
        let dir = tempdir("rw");
        let store = open_files(std::slice::from_ref(&dir), 0).unwrap();
        let data = pattern(200_000, 0);
        let id = ChunkId(42);
        let (len, crc) = write(&store, id, &data, true).unwrap();
        assert_eq!(len, data.len() as u64);
        assert_eq!(crc, crc32c::crc32c(&data));
        for (off, n) in [
            (0u64, 1u64),
            (65_535, 2),
            (65_536, 65_536),
            (1000, 150_000),
            (199_999, 1),
        ] {
            assert_eq!(
                read(&store, id, off, n).unwrap(),
                &data[off as usize..(off + n) as usize]
            );
        }
        assert!(read(&store, id, 199_999, 2).is_err());
        // A reopened store finds the chunk; an abandoned write leaves nothing.
        assert!(matches!(
            write(&store, ChunkId(43), &data, false),
            Err(StoreError::Aborted)
        ));
        assert_eq!(temp_files(&dir), 0);
        let store = open_files(std::slice::from_ref(&dir), 0).unwrap();
        assert_eq!(store.meta(id), Some((len, crc)));
        assert_eq!(store.meta(ChunkId(43)), None);
        // Flip one byte in the second block: reads of the first block still work; a read of the
        // second fails, and the replica is dropped and reported lost (the master copies it again).
        let path = data_path(&store, id).unwrap();
        flip(&path, HEADER_LEN + 70_000);
        assert_eq!(read(&store, id, 0, 100).unwrap(), &data[..100]);
        assert!(store.lost().1.is_empty());
        assert!(read(&store, id, 65_536, 10).is_err());
        assert_eq!(store.meta(id), None);
        assert!(!path.exists());
        assert_eq!(store.lost().1, vec![id]);
        assert!(!store.is_failed(0), "corruption is not a disk failure");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn picks_the_disk_with_the_most_free_space() {
        let c = |disk, free, used| Candidate { disk, free, used };
        assert_eq!(pick_disk(&[]), None);
        assert_eq!(
            pick_disk(&[c(0, 10, 0), c(1, 30, 500), c(2, 20, 0)]),
            Some(1)
        );
        // Folders on one file system: equal free space, the emptier folder wins, then the first.
        assert_eq!(pick_disk(&[c(0, 50, 9), c(1, 50, 3), c(2, 50, 3)]), Some(1));
    }

    #[test]
    fn spreads_chunks_over_disks_and_reports_them() {
        let (a, b) = (tempdir("spread-a"), tempdir("spread-b"));
        let disks = vec![a.clone(), b.clone()];
        let store = open_files(&disks, 0).unwrap();
        write(&store, ChunkId(1), &pattern(300_000, 1), true).unwrap();
        assert_eq!(disk_of(&store, &disks, ChunkId(1)), Some(0));
        // Same file system, same free space: the folder holding less gets the next chunks
        // until it holds more.
        write(&store, ChunkId(2), &pattern(200_000, 2), true).unwrap();
        write(&store, ChunkId(3), &pattern(150_000, 3), true).unwrap();
        assert_eq!(disk_of(&store, &disks, ChunkId(2)), Some(1));
        assert_eq!(disk_of(&store, &disks, ChunkId(3)), Some(1));
        write(&store, ChunkId(4), &pattern(10, 4), true).unwrap();
        assert_eq!(disk_of(&store, &disks, ChunkId(4)), Some(0));
        let usage = store.usage();
        assert_eq!(usage.disks.len(), 2);
        assert_eq!((usage.disks[0].chunks, usage.disks[1].chunks), (2, 2));
        assert!(usage.disks.iter().all(|d| !d.failed && d.capacity > 0));
        // Both folders share one file system: its space is counted once.
        assert_eq!(usage.capacity, usage.disks[0].capacity);
        // A reopened store finds every chunk on its disk.
        drop(store);
        let store = open_files(&disks, 0).unwrap();
        assert_eq!(store.count(), 4);
        assert_eq!(disk_of(&store, &disks, ChunkId(2)), Some(1));
        assert_eq!(
            read(&store, ChunkId(3), 0, 150_000).unwrap(),
            pattern(150_000, 3)
        );
        fs::remove_dir_all(a).unwrap();
        fs::remove_dir_all(b).unwrap();
    }

    #[test]
    fn a_replaced_disk_folder_fails_and_writes_go_to_the_other_disk() {
        let (a, b) = (tempdir("fail-a"), tempdir("fail-b"));
        let disks = vec![a.clone(), b.clone()];
        let store = open_files(&disks, 0).unwrap();
        let x = pattern(100_000, 5);
        write(&store, ChunkId(1), &x, true).unwrap();
        write(&store, ChunkId(2), &pattern(150_000, 6), true).unwrap();
        assert_eq!(disk_of(&store, &disks, ChunkId(1)), Some(0));
        assert_eq!(disk_of(&store, &disks, ChunkId(2)), Some(1));
        // The disk goes away: its folder is now a regular file.
        fs::remove_dir_all(&a).unwrap();
        fs::write(&a, b"not a folder").unwrap();
        // Disk 0 holds less and would get the next chunk; it is found failed and skipped.
        let z = pattern(70_000, 7);
        write(&store, ChunkId(3), &z, true).unwrap();
        assert_eq!(disk_of(&store, &disks, ChunkId(3)), Some(1));
        assert!(store.is_failed(0));
        assert!(!store.is_failed(1));
        assert_eq!(store.lost().1, vec![ChunkId(1)]);
        assert_eq!(store.meta(ChunkId(1)), None);
        let mut held: Vec<u128> = store.report().iter().map(|c| c.id.0).collect();
        held.sort_unstable();
        assert_eq!(held, vec![2, 3]);
        assert!(read(&store, ChunkId(1), 0, 10).is_err());
        assert_eq!(read(&store, ChunkId(3), 0, 70_000).unwrap(), z);
        let usage = store.usage();
        assert!(usage.disks[0].failed);
        assert_eq!(usage.disks[0].chunks, 0);
        assert_eq!(usage.disks[1].chunks, 2);
        assert_eq!(temp_files(&b), 0);
        // The last disk goes too: writes fail with a clear error.
        fs::remove_dir_all(&b).unwrap();
        assert!(matches!(
            write(&store, ChunkId(4), &z, true),
            Err(StoreError::NoDisk)
        ));
        let mut lost = store.lost().1;
        lost.sort_unstable_by_key(|id| id.0);
        assert_eq!(lost, vec![ChunkId(1), ChunkId(2), ChunkId(3)]);
        assert_eq!(store.count(), 0);
        fs::remove_file(a).unwrap();
    }

    #[test]
    fn a_removed_chunks_tree_is_found_by_reads_and_the_scrubber() {
        let go = AtomicBool::new(false);
        let (a, b) = (tempdir("gone-a"), tempdir("gone-b"));
        let disks = vec![a.clone(), b.clone()];
        let store = open_files(&disks, 0).unwrap();
        write(&store, ChunkId(1), &pattern(1000, 1), true).unwrap();
        write(&store, ChunkId(2), &pattern(1000, 2), true).unwrap();
        assert_eq!(disk_of(&store, &disks, ChunkId(2)), Some(1));
        fs::remove_dir_all(a.join("chunks")).unwrap();
        assert_eq!(store.scrub_chunk(ChunkId(1), 0, &go), ScrubOutcome::Lost);
        assert!(store.is_failed(0));
        assert_eq!(store.lost().1, vec![ChunkId(1)]);
        assert_eq!(store.scrub_chunk(ChunkId(2), 0, &go), ScrubOutcome::Good);
        assert_eq!(store.scrub_chunk(ChunkId(1), 0, &go), ScrubOutcome::Skipped);
        assert_eq!(store.scrub_counters(), (1, 0));

        // The same found by a read; a write after it is not confused either.
        fs::remove_dir_all(b.join("chunks")).unwrap();
        assert!(read(&store, ChunkId(2), 0, 10).is_err());
        assert!(store.is_failed(1));
        assert!(matches!(
            write(&store, ChunkId(3), b"x", true),
            Err(StoreError::NoDisk)
        ));
        fs::remove_dir_all(a).unwrap();
        fs::remove_dir_all(b).unwrap();
    }

    #[test]
    fn a_vanished_chunk_file_is_lost_but_its_disk_is_fine() {
        let go = AtomicBool::new(false);
        let dir = tempdir("vanished");
        let store = open_files(std::slice::from_ref(&dir), 0).unwrap();
        write(&store, ChunkId(1), &pattern(1000, 1), true).unwrap();
        write(&store, ChunkId(2), &pattern(1000, 2), true).unwrap();
        fs::remove_file(data_path(&store, ChunkId(1)).unwrap()).unwrap();
        assert_eq!(store.scrub_chunk(ChunkId(1), 0, &go), ScrubOutcome::Lost);
        assert!(!store.is_failed(0));
        let (mark, lost) = store.lost();
        assert_eq!(lost, vec![ChunkId(1)]);
        // A loss after the heartbeat was built stays queued when that heartbeat is acknowledged.
        fs::remove_file(data_path(&store, ChunkId(2)).unwrap()).unwrap();
        assert!(read(&store, ChunkId(2), 0, 1).is_err());
        store.ack_lost(mark);
        assert_eq!(store.lost().1, vec![ChunkId(2)]);
        // Copied here again: no longer lost.
        write(&store, ChunkId(2), &pattern(1000, 2), true).unwrap();
        assert!(store.lost().1.is_empty());
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_capacity_refuses_a_write_cleanly() {
        let dir = tempdir("capacity");
        let store = open_files(std::slice::from_ref(&dir), 300_000).unwrap();
        let first = pattern(200_000, 1);
        write(&store, ChunkId(1), &first, true).unwrap();
        let usage = store.usage();
        assert_eq!(usage.capacity, 300_000);
        assert_eq!(usage.free, 100_000);
        let err = write(&store, ChunkId(2), &pattern(200_000, 2), true).unwrap_err();
        assert!(matches!(err, StoreError::NoSpace(_)), "{err}");
        assert!(!err.to_string().contains('\n'));
        // Nothing recorded, no temporary file left, the disk still in service and the earlier
        // chunk intact.
        assert_eq!(store.meta(ChunkId(2)), None);
        assert_eq!(temp_files(&dir), 0);
        assert!(!store.is_failed(0));
        assert!(store.lost().1.is_empty());
        assert_eq!(read(&store, ChunkId(1), 0, 200_000).unwrap(), first);
        assert_eq!(
            store.usage().free,
            100_000,
            "the refused write's bytes are released"
        );
        // What fits still goes in.
        write(&store, ChunkId(3), &pattern(100_000, 3), true).unwrap();
        assert_eq!(store.usage().free, 0);
        assert!(matches!(
            write(&store, ChunkId(4), b"y", true),
            Err(StoreError::NoSpace(_))
        ));
        // Deleting gives the space back.
        store.delete(ChunkId(1)).unwrap();
        assert_eq!(store.usage().free, 200_000);
        write(&store, ChunkId(4), b"y", true).unwrap();
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_scrubber_finds_corruption_and_drops_the_replica() {
        let go = AtomicBool::new(false);
        let dir = tempdir("scrub");
        let store = open_files(std::slice::from_ref(&dir), 0).unwrap();
        let data = pattern(200_000, 9);
        for id in 1..=3 {
            write(&store, ChunkId(id), &data, true).unwrap();
        }
        // Chunk 1: one flipped data byte.
        let p1 = data_path(&store, ChunkId(1)).unwrap();
        flip(&p1, HEADER_LEN + 130_000);
        // Chunk 2: a flipped byte whose block CRC was fixed up, so only the whole-chunk CRC
        // (in the footer) can tell.
        let p2 = data_path(&store, ChunkId(2)).unwrap();
        let mut bytes = fs::read(&p2).unwrap();
        bytes[(HEADER_LEN + 5) as usize] ^= 1;
        let block0 =
            crc32c::crc32c(&bytes[HEADER_LEN as usize..(HEADER_LEN as usize + BLOCK_SIZE)]);
        let table = (HEADER_LEN + data.len() as u64) as usize;
        bytes[table..table + 4].copy_from_slice(&block0.to_le_bytes());
        fs::write(&p2, bytes).unwrap();

        assert_eq!(store.scrub_chunk(ChunkId(1), 0, &go), ScrubOutcome::Corrupt);
        assert_eq!(store.scrub_chunk(ChunkId(2), 0, &go), ScrubOutcome::Corrupt);
        // Chunk 3 is good and is read at the given rate: 200 kB at 1 MB/s takes 0.2 s.
        let started = Instant::now();
        assert_eq!(
            store.scrub_chunk(ChunkId(3), 1_000_000, &go),
            ScrubOutcome::Good
        );
        assert!(started.elapsed() >= Duration::from_millis(190));
        assert_eq!(store.scrub_counters(), (3, 2));
        // A stopped scrub gives up at once, even at a crawling rate, and judges nothing.
        let started = Instant::now();
        let stop = AtomicBool::new(true);
        assert_eq!(
            store.scrub_chunk(ChunkId(3), 1, &stop),
            ScrubOutcome::Skipped
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(store.scrub_counters(), (3, 2));
        assert!(!p1.exists() && !p2.exists());
        assert_eq!(
            (store.meta(ChunkId(1)), store.meta(ChunkId(2))),
            (None, None)
        );
        assert_eq!(store.lost().1, vec![ChunkId(1), ChunkId(2)]);
        assert_eq!(store.report().len(), 1);
        assert!(!store.is_failed(0));
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn concurrent_writes_of_one_id_keep_one_chunk() {
        let (a, b) = (tempdir("twice-a"), tempdir("twice-b"));
        let disks = vec![a.clone(), b.clone()];
        let store = open_files(&disks, 0).unwrap();
        let data = pattern(300_000, 4);
        let results: Vec<_> = std::thread::scope(|s| {
            let w: Vec<_> = (0..4)
                .map(|_| s.spawn(|| write(&store, ChunkId(7), &data, true)))
                .collect();
            w.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let want = (data.len() as u64, crc32c::crc32c(&data));
        assert!(results.iter().all(|r| r.as_ref().ok() == Some(&want)));
        assert_eq!(store.count(), 1);
        // Exactly one file, whatever disk each write was given.
        let name = ChunkId(7).to_string();
        let files = disks
            .iter()
            .filter(|d| d.join("chunks/00/00").join(&name).exists())
            .count();
        assert_eq!(files, 1);
        // A different chunk under the same id is refused.
        assert!(matches!(
            write(&store, ChunkId(7), b"other", true),
            Err(StoreError::Corrupt(..))
        ));
        assert_eq!(temp_files(&a) + temp_files(&b), 0);
        fs::remove_dir_all(a).unwrap();
        fs::remove_dir_all(b).unwrap();
    }

    #[test]
    fn a_chunk_deleted_while_read_streams_to_the_end() {
        let dir = tempdir("delete-read");
        let store = open_files(std::slice::from_ref(&dir), 0).unwrap();
        let data = pattern(300_000, 3);
        write(&store, ChunkId(1), &data, true).unwrap();
        let (tx, mut rx) = mpsc::channel(1);
        std::thread::scope(|s| {
            let reader = s.spawn(|| store.read(ChunkId(1), 0, None, tx));
            // The first block is out: the reader has the file open.
            let mut got = rx.blocking_recv().unwrap().unwrap().to_vec();
            store.delete(ChunkId(1)).unwrap();
            while let Some(b) = rx.blocking_recv() {
                got.extend_from_slice(&b.unwrap());
            }
            assert!(reader.join().unwrap().is_ok());
            assert_eq!(got, data);
        });
        assert!(matches!(
            store.delete(ChunkId(1)),
            Err(StoreError::NotFound(_))
        ));
        assert!(read(&store, ChunkId(1), 0, 1).is_err());
        assert!(store.lost().1.is_empty(), "a deleted chunk is not lost");
        assert_eq!(store.delete_all(&[ChunkId(1), ChunkId(9)]), 0);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_broken_disk_at_start_is_marked_failed() {
        let a = tempdir("start-a");
        let broken = tempdir("start-b").join("file");
        fs::write(&broken, b"not a folder").unwrap();
        let disks = vec![broken.clone(), a.clone()];
        let store = open_files(&disks, 0).unwrap();
        assert!(store.is_failed(0));
        write(&store, ChunkId(1), b"abc", true).unwrap();
        assert_eq!(disk_of(&store, &disks, ChunkId(1)), Some(1));
        assert!(store.usage().disks[0].failed);
        assert!(matches!(
            open_files(std::slice::from_ref(&broken), 0),
            Err(StoreError::NoDisk)
        ));
        fs::remove_dir_all(a).unwrap();
        fs::remove_dir_all(broken.parent().unwrap()).unwrap();
    }

    fn packing(max_chunk: u64, file_size: u64) -> PackConfig {
        PackConfig {
            max_chunk,
            file_size,
        }
    }

    #[test]
    fn small_chunks_are_packed_read_verified_and_survive_a_restart() {
        let dir = tempdir("packed");
        let disks = std::slice::from_ref(&dir);
        let cfg = packing(100_000, pack::DEFAULT_FILE_SIZE);
        let store = ChunkStore::open_with(disks, 0, cfg).unwrap();
        let small = pattern(4096, 1);
        let two_blocks = pattern(90_000, 2);
        let large = pattern(150_000, 3);
        write(&store, ChunkId(1), &small, true).unwrap();
        write(&store, ChunkId(2), &two_blocks, true).unwrap();
        write(&store, ChunkId(3), &large, true).unwrap();
        write(&store, ChunkId(4), &pattern(10, 4), true).unwrap();
        // Unfinished writes leave nothing.
        assert!(matches!(
            write(&store, ChunkId(5), &pattern(100, 5), false),
            Err(StoreError::Aborted)
        ));
        let in_pack = |store: &ChunkStore, id| {
            data_path(store, ChunkId(id)).is_some_and(|p| p.starts_with(dir.join("packs")))
        };
        assert!(in_pack(&store, 1) && in_pack(&store, 2) && !in_pack(&store, 3));
        assert_eq!(read(&store, ChunkId(2), 0, 90_000).unwrap(), two_blocks);
        assert_eq!(
            read(&store, ChunkId(2), 65_000, 1_000).unwrap(),
            &two_blocks[65_000..66_000]
        );
        assert!(read(&store, ChunkId(2), 89_000, 2_000).is_err());
        assert_eq!(store.count(), 4);
        // A retried copy of a packed chunk is the chunk already there.
        write(&store, ChunkId(1), &small, true).unwrap();
        store.delete(ChunkId(4)).unwrap();
        assert_eq!(store.bytes_held(), 4096 + 90_000 + 150_000);
        drop(store);

        let store = ChunkStore::open_with(disks, 0, cfg).unwrap();
        assert_eq!(store.count(), 3, "the deleted chunk stays deleted");
        assert_eq!(store.meta(ChunkId(4)), None);
        assert_eq!(read(&store, ChunkId(1), 0, 4096).unwrap(), small);
        assert_eq!(read(&store, ChunkId(3), 0, 150_000).unwrap(), large);
        assert_eq!(store.bytes_held(), 4096 + 90_000 + 150_000);
        // A flipped byte in a packed chunk: the read fails, the replica is dropped and lost.
        let (path, at) = store.data_location(ChunkId(2)).unwrap();
        flip(&path, at + 70_000);
        assert!(read(&store, ChunkId(2), 0, 10).is_ok(), "block 0 is intact");
        assert!(read(&store, ChunkId(2), 0, 90_000).is_err());
        assert_eq!(store.meta(ChunkId(2)), None);
        assert_eq!(store.lost().1, vec![ChunkId(2)]);
        assert!(!store.is_failed(0));
        // The scrubber checks packed chunks too.
        let go = AtomicBool::new(false);
        assert_eq!(store.scrub_chunk(ChunkId(1), 0, &go), ScrubOutcome::Good);
        let (path, at) = store.data_location(ChunkId(1)).unwrap();
        flip(&path, at + 4095);
        assert_eq!(store.scrub_chunk(ChunkId(1), 0, &go), ScrubOutcome::Corrupt);
        drop(store);
        let store = ChunkStore::open_with(disks, 0, cfg).unwrap();
        assert_eq!(
            store.chunk_ids(),
            vec![ChunkId(3)],
            "dropped replicas stay dropped"
        );
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn compaction_reclaims_deleted_packed_chunks_and_keeps_the_rest() {
        let dir = tempdir("compact");
        let disks = std::slice::from_ref(&dir);
        let cfg = packing(100_000, 64 * 1024);
        let store = ChunkStore::open_with(disks, 0, cfg).unwrap();
        let data = |i: u128| pattern(10_000, i as u32);
        for i in 1..=30u128 {
            write(&store, ChunkId(i), &data(i), true).unwrap();
        }
        let pack_files = || fs::read_dir(dir.join("packs")).unwrap().count();
        let before = pack_files();
        assert!(before >= 5, "{before} pack files");
        // Nothing deleted: nothing worth compacting.
        assert_eq!(store.compact(), 0);
        assert_eq!(pack_files(), before);
        for i in (1..=30u128).filter(|i| i % 5 != 0) {
            store.delete(ChunkId(i)).unwrap();
        }
        let moved = store.compact();
        assert!((1..=6).contains(&moved), "{moved} records moved");
        assert!(
            pack_files() < before,
            "{} of {before} pack files left",
            pack_files()
        );
        let check = |store: &ChunkStore| {
            assert_eq!(store.count(), 6);
            for i in (5..=30u128).step_by(5) {
                assert_eq!(read(store, ChunkId(i), 0, 10_000).unwrap(), data(i));
            }
        };
        check(&store);
        drop(store);
        let store = ChunkStore::open_with(disks, 0, cfg).unwrap();
        check(&store);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn concurrent_small_writes_all_land() {
        let dir = tempdir("concurrent-packed");
        let disks = std::slice::from_ref(&dir);
        let store = Arc::new(ChunkStore::open(disks, 0).unwrap());
        let writers: Vec<_> = (0..8u128)
            .map(|t| {
                let store = store.clone();
                std::thread::spawn(move || {
                    for i in 0..25u128 {
                        let id = ChunkId(t * 1000 + i);
                        write(&store, id, &pattern(4096, id.0 as u32), true).unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        drop(store);
        let store = ChunkStore::open(disks, 0).unwrap();
        assert_eq!(store.count(), 200);
        let id = ChunkId(7024);
        assert_eq!(
            read(&store, id, 0, 4096).unwrap(),
            pattern(4096, id.0 as u32)
        );
        fs::remove_dir_all(dir).unwrap();
    }

    fn entry(id: u128, data: &[u8]) -> BatchEntry {
        BatchEntry {
            id: ChunkId(id),
            data: Bytes::copy_from_slice(data),
            crc32c: crc32c::crc32c(data),
        }
    }

    #[test]
    fn a_batch_is_kept_whole_or_not_at_all() {
        let dir = tempdir("batch");
        let disks = std::slice::from_ref(&dir);
        let cfg = packing(100_000, pack::DEFAULT_FILE_SIZE);
        let store = ChunkStore::open_with(disks, 0, cfg).unwrap();
        let big = pattern(150_000, 7);
        let batch = vec![
            entry(1, &pattern(4096, 1)),
            entry(2, b""),
            entry(3, &big),
            entry(4, &pattern(100, 4)),
        ];
        store.write_batch(batch.clone()).unwrap();
        assert_eq!(store.count(), 4);
        let in_pack = |id| {
            data_path(&store, ChunkId(id))
                .unwrap()
                .starts_with(dir.join("packs"))
        };
        assert!(in_pack(1) && in_pack(2) && in_pack(4) && !in_pack(3));
        assert_eq!(read(&store, ChunkId(3), 0, 150_000).unwrap(), big);
        assert_eq!(read(&store, ChunkId(4), 0, 100).unwrap(), pattern(100, 4));
        assert_eq!(store.meta(ChunkId(2)), Some((0, 0)));
        // Sent again (a retry): nothing changes.
        store.write_batch(batch).unwrap();
        assert_eq!(store.count(), 4);
        // A batch naming a held id with other contents is refused whole.
        let err = store
            .write_batch(vec![entry(5, b"five"), entry(1, b"not chunk one")])
            .unwrap_err();
        assert!(matches!(err, StoreError::Corrupt(..)), "{err}");
        assert_eq!(store.meta(ChunkId(5)), None);
        // An entry whose data does not match its CRC is refused whole.
        let mut bad = entry(6, b"six");
        bad.crc32c ^= 1;
        assert!(store.write_batch(vec![entry(7, b"seven"), bad]).is_err());
        assert_eq!(store.meta(ChunkId(7)), None);
        // An id named twice is refused (it would be counted twice).
        let err = store
            .write_batch(vec![entry(8, b"eight"), entry(8, b"eight")])
            .unwrap_err();
        assert!(matches!(err, StoreError::Corrupt(..)), "{err}");
        assert_eq!(store.meta(ChunkId(8)), None);
        drop(store);
        let store = ChunkStore::open_with(disks, 0, cfg).unwrap();
        assert_eq!(store.count(), 4);
        assert_eq!(read(&store, ChunkId(1), 0, 4096).unwrap(), pattern(4096, 1));
        fs::remove_dir_all(dir).unwrap();
    }
}
