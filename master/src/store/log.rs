//! The Raft log and vote on disk ([`LogStore`]).
//!
//! The log is one append-only file of framed records (`len u32 | crc32c u32 | JSON`), each an
//! entry, a truncation or a purge. An append is fsynced before openraft is told it is durable;
//! openraft hands over every entry proposed meanwhile in one call, so concurrent writers share one
//! fsync (group commit). At start the file is replayed; a torn tail (a crash mid-append) is cut
//! off, anything else unreadable stops the master ([`TORN_TAIL_MAX`] says how the two are told
//! apart). A record larger than [`MAX_RECORD`] is refused when written, so the log never holds a
//! record it could not read back. When entries are purged behind a snapshot the file is rewritten
//! with what remains, so restart time follows the size of the state, not the number of writes
//! ever made.
//! In memory the log keeps each live entry's file offset and only the newest entries decoded
//! ([`CACHED_ENTRIES`]): a follower that lags further is served from the file.
//!
//! Writes (appends, truncations, purges, the vote) run on the blocking pool (see the `store`
//! module doc), one at a time (`LogStore::writer`), and do their file work without holding the
//! in-memory index: readers (replication to followers, applying) wait for no fsync.

use super::{blocking, io_err, write_atomic, NodeId, STORAGE_VERSION};
use crate::raft::TypeConfig;
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, LogId, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::ops::RangeBounds;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// Largest log record. Appending a bigger one fails (the entry is not written), so that the log
/// never holds a record replay would refuse; at replay a bigger length is corruption.
const MAX_RECORD: u32 = 256 * 1024 * 1024;

/// Longest run of unreadable bytes after a bad record that is cut off as a torn tail when it is
/// not simply a prefix of the record the bad header declares.
///
/// Why a torn tail can be told from lost entries: an append is one `write` of all its records
/// followed by one `fdatasync`, and openraft is told the entries are durable only after the sync
/// returned. A crash can therefore damage only the last append, which nobody was told about; every
/// earlier byte was synced. What a crash leaves of that append is a prefix of its bytes (the
/// common case: the last record's length runs past the end of the file), possibly followed by
/// zeros where the file's new size reached the disk before its data, and — on filesystems that
/// write pages back out of order — by later pages of the same append after a zeroed one. So a bad
/// record at offset P is a torn tail only if nothing after P can be an acknowledged record:
///
/// - everything from P on is zeros (the size was written, the data was not), or
/// - no valid record (length, CRC and JSON all good) starts anywhere after P, and what follows P
///   is no longer than the record P's header declares (a prefix of it: the write was cut) or
///   than this bound (a header the crash left wrong, with a few pages of junk behind it).
///
/// Anything else — a valid record after the bad one, or more junk than a crash leaves — may be
/// acknowledged entries: the master refuses to start rather than cut them, and names the file and
/// offset. (The rare append torn with a hole before its own later records is refused too: it
/// cannot be told from a lost write in the middle of the log. That master is rebuilt from its
/// peers, as for any other corruption.)
const TORN_TAIL_MAX: usize = 1 << 20;

/// The log file starts with this magic and [`STORAGE_VERSION`] (u32 LE).
const LOG_MAGIC: &[u8; 8] = b"TDFSRLOG";
const LOG_HEADER_LEN: usize = 12;

fn log_header() -> Vec<u8> {
    let mut h = LOG_MAGIC.to_vec();
    h.extend_from_slice(&u32::from(STORAGE_VERSION).to_le_bytes());
    h
}

// Records are transient (decoded and indexed at once): their size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Deserialize)]
enum LogRecord {
    Entry(Entry<TypeConfig>),
    /// Delete entries from this index on (a new leader overwrote them).
    Truncate(u64),
    /// Entries up to and including this id are in a snapshot.
    Purge(LogId<NodeId>),
}

/// [`LogRecord`] by reference, to write an entry without a copy of it (the same JSON).
#[derive(Serialize)]
enum LogRecordRef<'a> {
    Entry(&'a Entry<TypeConfig>),
    Truncate(u64),
    Purge(LogId<NodeId>),
}

fn decode_record(body: &[u8]) -> io::Result<LogRecord> {
    serde_json::from_slice(body).map_err(io_err)
}

/// Appends the framed `rec` to `out`, refusing a record longer than `max` bytes.
fn frame_into(out: &mut Vec<u8>, rec: &LogRecordRef<'_>, max: u32) -> io::Result<()> {
    let at = out.len();
    out.extend_from_slice(&[0u8; 8]);
    serde_json::to_writer(&mut *out, rec)?;
    let len = out.len() - at - 8;
    if len > max as usize {
        out.truncate(at);
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("a log record of {len} bytes is larger than the largest allowed ({max})"),
        ));
    }
    let crc = crc32c::crc32c(&out[at + 8..]);
    out[at..at + 4].copy_from_slice(&(len as u32).to_le_bytes());
    out[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

fn frame(rec: &LogRecordRef<'_>, max: u32) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    frame_into(&mut out, rec, max)?;
    Ok(out)
}

/// What the bytes at an offset of the log hold.
// Transient (matched at once): its size does not matter.
#[allow(clippy::large_enum_variant)]
enum Framed {
    /// A record, and the offset after it.
    Record(LogRecord, usize),
    /// A record whose length and CRC are good but whose body is not a record this version reads
    /// (written by a newer one?): never a torn write.
    Unreadable(io::Error),
    /// No record: a bad length (zero, over [`MAX_RECORD`], past the end) or a bad CRC.
    Bad,
}

fn read_framed(data: &[u8], pos: usize) -> Framed {
    let Some(head) = data.get(pos..pos.saturating_add(8)) else {
        return Framed::Bad;
    };
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    // A JSON record is never empty: a zero length is zeros on disk.
    if len == 0 || len > MAX_RECORD {
        return Framed::Bad;
    }
    let end = pos + 8 + len as usize;
    let Some(body) = data.get(pos + 8..end) else {
        return Framed::Bad;
    };
    if crc32c::crc32c(body) != crc {
        return Framed::Bad;
    }
    match decode_record(body) {
        Ok(rec) => Framed::Record(rec, end),
        Err(e) => Framed::Unreadable(e),
    }
}

/// The first offset after `from` where a valid record starts, if any. Cheap on junk: a candidate
/// needs a length that fits and a body that opens a JSON object before its CRC is computed (the
/// bytes of JSON text read as a length are far over [`MAX_RECORD`]).
fn valid_record_after(data: &[u8], from: usize) -> Option<usize> {
    (from..data.len().saturating_sub(8)).find(|&q| {
        let len = u32::from_le_bytes([data[q], data[q + 1], data[q + 2], data[q + 3]]) as usize;
        len > 0
            && len <= MAX_RECORD as usize
            && q + 8 + len <= data.len()
            && data[q + 8] == b'{'
            && !matches!(read_framed(data, q), Framed::Bad)
    })
}

/// Decides whether the bad record at `pos` starts a torn tail that may be cut ([`TORN_TAIL_MAX`]
/// gives the rule and its reason); if not, the error that stops the master.
fn judge_bad_record(path: &Path, data: &[u8], pos: usize) -> io::Result<()> {
    let rest = &data[pos..];
    if rest.iter().all(|b| *b == 0) {
        return Ok(());
    }
    let declared = match rest.get(..4) {
        Some(h) => u32::from_le_bytes([h[0], h[1], h[2], h[3]]),
        None => 0,
    };
    let prefix_of_declared = declared <= MAX_RECORD && rest.len() <= 8 + declared as usize;
    let why = match valid_record_after(data, pos + 1) {
        Some(q) => format!("a valid record follows at offset {q}"),
        None if prefix_of_declared || rest.len() <= TORN_TAIL_MAX => return Ok(()),
        None => format!(
            "{} bytes follow it, more than a torn append leaves",
            rest.len()
        ),
    };
    Err(io_err(format!(
        "{}: corrupt record at offset {pos} and {why}; refusing to start rather than drop entries \
         that may have been acknowledged (restore this master from a peer: see OPERATIONS.md)",
        path.display()
    )))
}

/// Newest entries kept decoded in memory: openraft reads an entry back right after appending it
/// (to apply it, and to send it to followers), so these serve nearly every read; older entries,
/// needed only by a follower that lags, are read from the file. Bounds the log's memory whatever
/// the interval between snapshots.
const CACHED_ENTRIES: usize = 4096;

/// Encoded bytes of the cached entries beyond which the oldest are dropped as well: one entry
/// can be a batch of hundreds of writes, and 4,096 of those decoded would weigh hundreds of
/// megabytes.
const CACHED_BYTES: usize = 4 << 20;

/// The newest log entries, bounded by [`CACHED_ENTRIES`] and [`CACHED_BYTES`] (the newest one is
/// always kept), each with its record's size.
#[derive(Default)]
struct Cache {
    entries: VecDeque<(Entry<TypeConfig>, usize)>,
    bytes: usize,
}

impl Cache {
    fn push_back(&mut self, entry: Entry<TypeConfig>, size: usize) {
        self.bytes += size;
        self.entries.push_back((entry, size));
        while self.entries.len() > 1
            && (self.entries.len() > CACHED_ENTRIES || self.bytes > CACHED_BYTES)
        {
            self.pop_front();
        }
    }

    fn pop_front(&mut self) {
        if let Some((_, size)) = self.entries.pop_front() {
            self.bytes -= size;
        }
    }

    fn pop_back(&mut self) {
        if let Some((_, size)) = self.entries.pop_back() {
            self.bytes -= size;
        }
    }

    fn front(&self) -> Option<&Entry<TypeConfig>> {
        self.entries.front().map(|(e, _)| e)
    }

    fn back(&self) -> Option<&Entry<TypeConfig>> {
        self.entries.back().map(|(e, _)| e)
    }

    fn get(&self, i: usize) -> Option<&Entry<TypeConfig>> {
        self.entries.get(i).map(|(e, _)| e)
    }

    /// Keeps the entries for which `f` holds.
    fn retain(&mut self, f: impl Fn(&Entry<TypeConfig>) -> bool) {
        self.entries.retain(|(e, _)| f(e));
        self.bytes = self.entries.iter().map(|(_, size)| size).sum();
    }

    /// Drops entries from the back while `f` holds.
    fn pop_back_while(&mut self, f: impl Fn(&Entry<TypeConfig>) -> bool) {
        while self.back().is_some_and(&f) {
            self.pop_back();
        }
    }

    /// Drops entries from the front while `f` holds.
    fn pop_front_while(&mut self, f: impl Fn(&Entry<TypeConfig>) -> bool) {
        while self.front().is_some_and(&f) {
            self.pop_front();
        }
    }
}

struct LogInner {
    /// The log file, open for appending and for reading back older entries. Shared so that a
    /// writer can write and sync it without holding the index.
    file: Arc<File>,
    path: PathBuf,
    /// Length of the file: where the next record goes.
    end: u64,
    /// Largest record an append may write ([`MAX_RECORD`]; lower in tests).
    max_record: u32,
    /// Log index of the entry at `offsets[0]` (Raft indexes are contiguous).
    first: u64,
    /// File offset of each live entry's record, in index order: 8 bytes per entry instead of the
    /// entry itself.
    offsets: VecDeque<u64>,
    /// The newest entries, ending with the last one.
    recent: Cache,
    /// Id of the last live entry.
    last: Option<LogId<NodeId>>,
    last_purged: Option<LogId<NodeId>>,
    vote_path: PathBuf,
    vote: Option<Vote<NodeId>>,
}

impl LogInner {
    /// Index after the last live entry.
    fn next_index(&self) -> u64 {
        self.first + self.offsets.len() as u64
    }

    /// Records `entry`, written at file offset `at`, as the newest live entry.
    fn push(&mut self, entry: Entry<TypeConfig>, at: u64, size: usize) {
        let index = entry.log_id.index;
        if index < self.next_index() {
            self.forget_from(index); // openraft truncates first; be safe all the same
        }
        if self.offsets.is_empty() {
            self.first = index;
        }
        self.offsets.push_back(at);
        self.last = Some(entry.log_id);
        self.recent.push_back(entry, size);
    }

    /// Forgets the entries from `index` on.
    fn forget_from(&mut self, index: u64) {
        let keep = index.saturating_sub(self.first) as usize;
        self.offsets.truncate(keep);
        self.recent.pop_back_while(|e| e.log_id.index >= index);
        self.last = match self.offsets.len() {
            0 => None,
            _ => self.entry(self.next_index() - 1).ok().map(|e| e.log_id),
        };
    }

    /// Forgets the entries up to and including `index`.
    fn forget_until(&mut self, index: u64) {
        while !self.offsets.is_empty() && self.first <= index {
            self.offsets.pop_front();
            self.first += 1;
        }
        if self.offsets.is_empty() {
            self.first = self.first.max(index + 1);
            self.last = None;
        }
        self.recent.pop_front_while(|e| e.log_id.index <= index);
    }

    /// Whether the entries `start..end` are all decoded in memory.
    fn cached(&self, start: u64, end: u64) -> bool {
        start >= end || self.recent.front().is_some_and(|f| f.log_id.index <= start)
    }

    /// The live entries `start..end`.
    fn entries(&self, start: u64, end: u64) -> io::Result<Vec<Entry<TypeConfig>>> {
        (start..end).map(|i| self.entry(i)).collect()
    }

    /// The live entry at `index`, from memory or from the file.
    fn entry(&self, index: u64) -> io::Result<Entry<TypeConfig>> {
        if let Some(front) = self.recent.front() {
            if index >= front.log_id.index {
                if let Some(e) = self.recent.get((index - front.log_id.index) as usize) {
                    return Ok(e.clone());
                }
            }
        }
        let at = index
            .checked_sub(self.first)
            .and_then(|i| self.offsets.get(i as usize))
            .ok_or_else(|| io_err(format!("log entry {index} is not in the log")))?;
        let mut head = [0u8; 8];
        self.file.read_exact_at(&mut head, *at)?;
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if len > MAX_RECORD {
            return Err(io_err(format!("log record at offset {at} is corrupt")));
        }
        let mut body = vec![0u8; len as usize];
        self.file.read_exact_at(&mut body, at + 8)?;
        if crc32c::crc32c(&body) != crc {
            return Err(io_err(format!("log record at offset {at} is corrupt")));
        }
        match decode_record(&body)? {
            LogRecord::Entry(e) if e.log_id.index == index => Ok(e),
            _ => Err(io_err(format!(
                "log record at offset {at} is not entry {index}"
            ))),
        }
    }
}

/// Writes `buf` at the end of `file` (at `end`) and syncs it. A failed write is cut off again,
/// so that the file ends where the index says.
fn write_synced(file: &File, end: u64, buf: &[u8]) -> io::Result<()> {
    let mut f = file;
    let written = f.write_all(buf).and_then(|()| file.sync_data());
    if written.is_err() {
        let _ = file.set_len(end);
    }
    written
}

/// The Raft log and vote, on disk.
#[derive(Clone)]
pub struct LogStore {
    /// The index of the live entries, the newest of them decoded, and the vote. Held briefly:
    /// never across a write or a sync.
    inner: Arc<Mutex<LogInner>>,
    /// Held by the one write (append, truncation, purge, vote) under way, through its file work.
    /// openraft issues them one at a time already; this makes it a property of the store.
    writer: Arc<Mutex<()>>,
}

impl LogStore {
    /// Opens (or creates) the log under `dir`, replaying what is there. Reads the whole file:
    /// call it off the runtime's workers.
    pub fn open(dir: &Path) -> io::Result<LogStore> {
        fs::create_dir_all(dir)?;
        let path = dir.join("raft.log");
        let vote_path = dir.join("vote.json");
        // Where each entry's record starts, by index (replayed in order: truncations and purges
        // apply to what came before them).
        let mut offsets: BTreeMap<u64, u64> = BTreeMap::new();
        let mut recent = Cache::default();
        let mut last_purged: Option<LogId<NodeId>> = None;
        let mut valid_len = 0u64;
        let mut data = Vec::new();
        if path.exists() {
            File::open(&path)?.read_to_end(&mut data)?;
        }
        if data.len() >= LOG_HEADER_LEN {
            if &data[..8] != LOG_MAGIC {
                return Err(io_err(format!(
                    "{} is not a tinydfs raft log",
                    path.display()
                )));
            }
            let version = u32::from_le_bytes([data[8], data[9], data[10], data[11]]);
            if version > u32::from(STORAGE_VERSION) {
                return Err(io_err(format!("raft log version {version} is too new")));
            }
            let mut pos = LOG_HEADER_LEN;
            valid_len = pos as u64;
            while pos < data.len() {
                let (rec, end) = match read_framed(&data, pos) {
                    Framed::Record(rec, end) => (rec, end),
                    Framed::Unreadable(e) => {
                        return Err(io_err(format!(
                            "{}: the record at offset {pos} cannot be read ({e}); was it written by a newer tinydfs?",
                            path.display()
                        )))
                    }
                    Framed::Bad => {
                        // A crash mid-append leaves a torn tail: cut it. Anything else may be
                        // acknowledged entries: refuse to start rather than drop them.
                        judge_bad_record(&path, &data, pos)?;
                        tracing::warn!(
                            offset = pos,
                            bytes = data.len() - pos,
                            "cutting a torn append off the end of the raft log"
                        );
                        break;
                    }
                };
                match rec {
                    LogRecord::Entry(e) => {
                        let index = e.log_id.index;
                        offsets.split_off(&index);
                        offsets.insert(index, pos as u64);
                        recent.pop_back_while(|r| r.log_id.index >= index);
                        recent.push_back(e, end - pos);
                    }
                    LogRecord::Truncate(i) => {
                        offsets.split_off(&i);
                        recent.pop_back_while(|r| r.log_id.index >= i);
                    }
                    LogRecord::Purge(id) => {
                        offsets = offsets.split_off(&(id.index + 1));
                        recent.pop_front_while(|r| r.log_id.index <= id.index);
                        last_purged = Some(id);
                    }
                }
                pos = end;
                valid_len = pos as u64;
            }
        }
        let cut = (valid_len as usize) < data.len();
        drop(data);
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)?;
        file.set_len(valid_len)?;
        let mut end = valid_len;
        if valid_len == 0 {
            let header = log_header();
            file.write_all(&header)?;
            file.sync_all()?;
            // The new file's name must survive a crash too.
            File::open(dir)?.sync_all()?;
            end = header.len() as u64;
        } else if cut {
            // The cut must not come back after a crash, under records appended after it.
            file.sync_all()?;
        }
        let first = offsets
            .keys()
            .next()
            .copied()
            .unwrap_or_else(|| last_purged.map_or(0, |p| p.index + 1));
        // Entries cut off by a later truncation are gone from `offsets`; the cache holds only
        // entries that are still live.
        recent.retain(|e| offsets.contains_key(&e.log_id.index));
        let vote = match fs::read(&vote_path) {
            Ok(b) => Some(serde_json::from_slice(&b).map_err(io_err)?),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let mut inner = LogInner {
            file: Arc::new(file),
            path,
            end,
            max_record: MAX_RECORD,
            first,
            offsets: offsets.into_values().collect(),
            recent,
            last: None,
            last_purged,
            vote_path,
            vote,
        };
        if !inner.offsets.is_empty() {
            inner.last = Some(inner.entry(inner.next_index() - 1)?.log_id);
        }
        Ok(LogStore {
            inner: Arc::new(Mutex::new(inner)),
            writer: Arc::new(Mutex::new(())),
        })
    }

    /// Whether this log has never been written: no entry, no purge, no vote (a new data folder).
    pub fn is_empty(&self) -> io::Result<bool> {
        let inner = self.inner()?;
        Ok(inner.offsets.is_empty() && inner.last_purged.is_none() && inner.vote.is_none())
    }

    fn inner(&self) -> io::Result<MutexGuard<'_, LogInner>> {
        self.inner.lock().map_err(|_| io_err("log lock poisoned"))
    }

    fn writer(&self) -> io::Result<MutexGuard<'_, ()>> {
        self.writer
            .lock()
            .map_err(|_| io_err("log writer lock poisoned"))
    }

    fn lock(&self) -> Result<MutexGuard<'_, LogInner>, StorageError<NodeId>> {
        self.inner()
            .map_err(|e| StorageIOError::read_logs(&e).into())
    }

    /// Appends `entries` and syncs them (blocking: on the blocking pool).
    fn write_entries(&self, entries: Vec<Entry<TypeConfig>>) -> io::Result<()> {
        let _writing = self.writer()?;
        let (file, end, max) = {
            let inner = self.inner()?;
            (inner.file.clone(), inner.end, inner.max_record)
        };
        let mut buf = Vec::new();
        let mut starts = Vec::with_capacity(entries.len());
        for e in &entries {
            starts.push(end + buf.len() as u64);
            frame_into(&mut buf, &LogRecordRef::Entry(e), max)?;
        }
        write_synced(&file, end, &buf)?;
        let new_end = end + buf.len() as u64;
        let ends: Vec<u64> = starts.iter().skip(1).copied().chain([new_end]).collect();
        let mut inner = self.inner()?;
        inner.end = new_end;
        for ((e, at), next) in entries.into_iter().zip(starts).zip(ends) {
            inner.push(e, at, (next - at) as usize);
        }
        Ok(())
    }

    /// Deletes the entries from `index` on, durably (blocking).
    fn write_truncate(&self, index: u64) -> io::Result<()> {
        let _writing = self.writer()?;
        let (file, end, max) = {
            let inner = self.inner()?;
            (inner.file.clone(), inner.end, inner.max_record)
        };
        let buf = frame(&LogRecordRef::Truncate(index), max)?;
        write_synced(&file, end, &buf)?;
        let mut inner = self.inner()?;
        inner.end = end + buf.len() as u64;
        inner.forget_from(index);
        Ok(())
    }

    /// Forgets the entries up to `log_id` (in a snapshot) and rewrites the file with only the
    /// live ones: their records are copied as they are, after a header and the purge record
    /// (blocking). Readers go on reading the old file until the new one is in place.
    fn write_purge(&self, log_id: LogId<NodeId>) -> io::Result<()> {
        let _writing = self.writer()?;
        let (file, path, start, end, max) = {
            let mut inner = self.inner()?;
            inner.forget_until(log_id.index);
            inner.last_purged = Some(log_id);
            let start = inner.offsets.front().copied().unwrap_or(inner.end);
            (
                inner.file.clone(),
                inner.path.clone(),
                start,
                inner.end,
                inner.max_record,
            )
        };
        let tmp = path.with_extension("compact");
        let mut head = log_header();
        frame_into(&mut head, &LogRecordRef::Purge(log_id), max)?;
        let new_start = head.len() as u64;
        {
            let mut out = io::BufWriter::with_capacity(1 << 20, File::create(&tmp)?);
            out.write_all(&head)?;
            let mut piece = vec![0u8; (1 << 20).min((end - start) as usize)];
            let mut at = start;
            while at < end {
                let n = piece.len().min((end - at) as usize);
                file.read_exact_at(&mut piece[..n], at)?;
                out.write_all(&piece[..n])?;
                at += n as u64;
            }
            out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        }
        fs::rename(&tmp, &path)?;
        if let Some(dir) = path.parent() {
            File::open(dir)?.sync_all()?;
        }
        let file = OpenOptions::new().read(true).append(true).open(&path)?;
        let mut inner = self.inner()?;
        inner.file = Arc::new(file);
        for o in inner.offsets.iter_mut() {
            *o = *o - start + new_start;
        }
        inner.end = new_start + (end - start);
        Ok(())
    }

    /// Saves the vote durably (blocking).
    fn write_vote(&self, vote: Vote<NodeId>) -> io::Result<()> {
        let _writing = self.writer()?;
        let path = self.inner()?.vote_path.clone();
        write_atomic(&path, &serde_json::to_vec(&vote)?)?;
        self.inner()?.vote = Some(vote);
        Ok(())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        use std::ops::Bound;
        let (start, end) = {
            let inner = self.lock()?;
            let start = match range.start_bound() {
                Bound::Included(i) => *i,
                Bound::Excluded(i) => i + 1,
                Bound::Unbounded => 0,
            }
            .max(inner.first);
            let end = match range.end_bound() {
                Bound::Included(i) => i + 1,
                Bound::Excluded(i) => *i,
                Bound::Unbounded => u64::MAX,
            }
            .min(inner.next_index());
            // Nearly every read is of the newest entries, decoded in memory: served at once.
            if inner.cached(start, end) {
                return inner
                    .entries(start, end)
                    .map_err(|e| StorageIOError::read_logs(&e).into());
            }
            (start, end)
        };
        // Older entries are read from the file, off the runtime (a lagging follower's catch-up).
        let this = self.clone();
        blocking(move || this.inner()?.entries(start, end))
            .await
            .map_err(|e| StorageIOError::read_logs(&e).into())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let inner = self.lock()?;
        let last = inner.last.or(inner.last_purged);
        Ok(LogState {
            last_purged_log_id: inner.last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        let (this, vote) = (self.clone(), *vote);
        blocking(move || this.write_vote(vote))
            .await
            .map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        Ok(self.lock()?.vote)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<_> = entries.into_iter().collect();
        let this = self.clone();
        // Told durable only once the blocking write has synced the entries.
        let res = blocking(move || this.write_entries(entries)).await;
        let failed = res.as_ref().err().map(StorageIOError::write_logs);
        callback.log_io_completed(res);
        match failed {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let this = self.clone();
        blocking(move || this.write_truncate(log_id.index))
            .await
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let this = self.clone();
        blocking(move || this.write_purge(log_id))
            .await
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }
}

#[cfg(test)]
mod tests;
