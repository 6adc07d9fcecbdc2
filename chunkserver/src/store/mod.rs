//! Chunk files on the local disks.
//!
//! A chunk is immutable once written. Its file holds a header, the data, one CRC32C per 64 KiB
//! block and a footer: its *image*, laid out in [`crate::image`].
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
//!
//! **Files.** Each file adds the methods of [`ChunkStore`] for one concern:
//!
//! - this file: the store's types (index entry, per-disk use, errors, write messages) and what
//!   only looks at the index (reports, counters, where a chunk's bytes are).
//! - `disks.rs`: opening the data folders (listing chunk files, replaying pack files), health
//!   checks, free space and the capacity limit, the disk a new chunk goes to, and taking a failed
//!   disk out of service.
//! - `write.rs`: writing a chunk, as a file of its own (temporary file, fsync, rename, commit) or
//!   as pack records made durable together, alone or in a batch.
//! - `read.rs`: verified reads of byte ranges, the scrubber's throttled check of a whole chunk,
//!   and what a corrupt or vanished replica does to the index.
//! - `delete.rs`: the master's deletion orders and dropped replicas (pack tombstones included).
//! - `compact.rs`: moving the live records out of sparse pack files.

mod compact;
mod delete;
mod disks;
mod read;
#[cfg(test)]
mod tests;
mod write;

use crate::image::IMAGE_HEADER_LEN;
use crate::pack::{self, Packs, Slot, RECORD_HEADER_LEN};
use bytes::Bytes;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;
use tinydfs_proto::lock::DirLock;
use tinydfs_proto::meta::DiskStatus;
use tinydfs_proto::{ChunkId, ChunkMeta};

/// Default largest chunk kept in a pack file rather than a file of its own.
pub const DEFAULT_PACK_MAX: u64 = 256 << 10;
/// Largest pack limit accepted: a packed chunk is read whole to serve any range of it.
pub const PACK_MAX_LIMIT: u64 = 16 << 20;

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
    /// Ids claimed while out of the index: being made durable by a write (so that two writes of
    /// one id do not both commit), or getting a pack tombstone (so that no new record of the id
    /// comes before it). Pack appends run without this lock; claims order them.
    committing: HashSet<ChunkId>,
    /// Replicas lost without an order (corrupt, vanished, failed disk), numbered so that a
    /// heartbeat acknowledges exactly what it sent.
    lost: Vec<(u64, ChunkId)>,
    lost_seq: u64,
    /// Chunks stored since the last heartbeat round took them ([`ChunkStore::take_added`]), at
    /// most [`ADDED_MAX`]: the masters that do not lead learn replicas from them between full
    /// reports.
    added: Vec<ChunkMeta>,
}

/// Chunks kept for the next heartbeat's `added` list (under a megabyte of JSON); beyond it they
/// wait for a full report.
const ADDED_MAX: usize = 10_000;

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

/// A disk that passed its health check, with its file system's space.
#[derive(Clone)]
struct Probe {
    disk: usize,
    dev: u64,
    capacity: u64,
    free: u64,
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
    /// Locks on the data folders ([`ChunkStore::keep_locked`]): held as long as the store
    /// lives, so as long as a blocking writer still holds it, even after the server stopped.
    _locks: Vec<DirLock>,
}

impl ChunkStore {
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

    /// The store, holding `locks` (on its data folders) for as long as it lives.
    pub fn keep_locked(mut self, locks: Vec<DirLock>) -> ChunkStore {
        self._locks = locks;
        self
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
                slot.at + RECORD_HEADER_LEN as u64 + IMAGE_HEADER_LEN,
            ),
            None => (self.path(e.disk, id), IMAGE_HEADER_LEN),
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

    /// The chunks stored since the last call that are still held (for the next heartbeat).
    pub fn take_added(&self) -> Vec<ChunkMeta> {
        let mut st = self.state();
        let added = std::mem::take(&mut st.added);
        added
            .into_iter()
            .filter(|c| st.index.contains_key(&c.id))
            .collect()
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

    /// The largest chunk kept in a pack file (0: none is).
    pub fn pack_max(&self) -> u64 {
        self.packing.max_chunk
    }
}
