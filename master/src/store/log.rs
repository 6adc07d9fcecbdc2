//! The Raft log and vote on disk ([`LogStore`]).
//!
//! The log is one append-only file of framed records (`len u32 | crc32c u32 | JSON`), each an
//! entry, a truncation or a purge. An append is fsynced before openraft is told it is durable;
//! openraft hands over every entry proposed meanwhile in one call, so concurrent writers share one
//! fsync (group commit). At start the file is replayed; a torn last record (a crash mid-append) is
//! cut off. When entries are purged behind a snapshot the file is rewritten with what remains, so
//! restart time follows the size of the state, not the number of writes ever made.
//! In memory the log keeps each live entry's file offset and only the newest entries decoded
//! ([`CACHED_ENTRIES`]): a follower that lags further is served from the file.

use super::{io_err, write_atomic, NodeId, STORAGE_VERSION};
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
use std::sync::{Arc, Mutex};

/// Largest log record accepted at replay; anything bigger is corruption, not an entry.
const MAX_RECORD: u32 = 256 * 1024 * 1024;
/// The log file starts with this magic and [`STORAGE_VERSION`] (u32 LE).
const LOG_MAGIC: &[u8; 8] = b"TDFSRLOG";
const LOG_HEADER_LEN: usize = 12;

fn log_header() -> Vec<u8> {
    let mut h = LOG_MAGIC.to_vec();
    h.extend_from_slice(&u32::from(STORAGE_VERSION).to_le_bytes());
    h
}

// Records are transient (framed and written at once): their size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Serialize, Deserialize)]
enum LogRecord {
    Entry(Entry<TypeConfig>),
    /// Delete entries from this index on (a new leader overwrote them).
    Truncate(u64),
    /// Entries up to and including this id are in a snapshot.
    Purge(LogId<NodeId>),
}

fn encode_record(rec: &LogRecord) -> io::Result<Vec<u8>> {
    Ok(serde_json::to_vec(rec)?)
}

fn decode_record(body: &[u8]) -> io::Result<LogRecord> {
    serde_json::from_slice(body).map_err(io_err)
}

fn frame(rec: &LogRecord) -> io::Result<Vec<u8>> {
    let body = encode_record(rec)?;
    let mut out = Vec::with_capacity(body.len() + 8);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    out.extend_from_slice(&body);
    Ok(out)
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
    /// The log file, open for appending and for reading back older entries.
    file: File,
    path: PathBuf,
    /// Length of the file: where the next record goes.
    end: u64,
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

    fn append_records(&mut self, recs: &[LogRecord]) -> io::Result<Vec<u64>> {
        let mut buf = Vec::new();
        let mut starts = Vec::with_capacity(recs.len());
        for r in recs {
            starts.push(self.end + buf.len() as u64);
            buf.extend(frame(r)?);
        }
        self.file.write_all(&buf)?;
        self.file.sync_data()?;
        self.end += buf.len() as u64;
        Ok(starts)
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

    /// Rewrites the log file with only the live entries (after a purge): their records are
    /// copied as they are, after a header and the purge record.
    fn compact(&mut self) -> io::Result<()> {
        let tmp = self.path.with_extension("compact");
        let start = self.offsets.front().copied().unwrap_or(self.end);
        let mut live = vec![0u8; (self.end - start) as usize];
        self.file.read_exact_at(&mut live, start)?;
        let mut buf = log_header();
        if let Some(p) = self.last_purged {
            buf.extend(frame(&LogRecord::Purge(p))?);
        }
        let new_start = buf.len() as u64;
        buf.extend_from_slice(&live);
        {
            let mut f = File::create(&tmp)?;
            f.write_all(&buf)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        self.file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&self.path)?;
        for o in self.offsets.iter_mut() {
            *o = *o - start + new_start;
        }
        self.end = buf.len() as u64;
        Ok(())
    }
}

/// The Raft log and vote, on disk.
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Mutex<LogInner>>,
}

impl LogStore {
    /// Opens (or creates) the log under `dir`, replaying what is there.
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
            while pos + 8 <= data.len() {
                let len =
                    u32::from_le_bytes([data[pos], data[pos + 1], data[pos + 2], data[pos + 3]]);
                let crc = u32::from_le_bytes([
                    data[pos + 4],
                    data[pos + 5],
                    data[pos + 6],
                    data[pos + 7],
                ]);
                let end = pos + 8 + len as usize;
                if len > MAX_RECORD
                    || end > data.len()
                    || crc32c::crc32c(&data[pos + 8..end]) != crc
                {
                    // A crash mid-append leaves the last record short or half-written: cut it.
                    // A bad record with good ones after it is corruption of acknowledged
                    // entries: refuse to start rather than drop them.
                    if end < data.len() && len <= MAX_RECORD {
                        return Err(io_err(format!(
                            "{}: corrupt record at offset {pos} followed by {} more bytes; refusing to start (restore this master from a peer: see OPERATIONS.md)",
                            path.display(),
                            data.len() - end
                        )));
                    }
                    tracing::warn!(
                        offset = pos,
                        "cutting a torn record off the end of the raft log"
                    );
                    break;
                }
                match decode_record(&data[pos + 8..end])? {
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
        Ok(LogStore {
            inner: Arc::new(Mutex::new({
                let mut inner = LogInner {
                    file,
                    path,
                    end,
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
                inner
            })),
        })
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, LogInner>, StorageError<NodeId>> {
        self.inner
            .lock()
            .map_err(|_| StorageIOError::read_logs(&io_err("log lock poisoned")).into())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        use std::ops::Bound;
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
        (start..end)
            .map(|i| inner.entry(i))
            .collect::<io::Result<Vec<_>>>()
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
        let mut inner = self.lock()?;
        let bytes = serde_json::to_vec(vote).map_err(|e| StorageIOError::write_vote(&e))?;
        write_atomic(&inner.vote_path, &bytes).map_err(|e| StorageIOError::write_vote(&e))?;
        inner.vote = Some(*vote);
        Ok(())
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
        let mut inner = self.lock()?;
        let entries: Vec<_> = entries.into_iter().collect();
        let recs: Vec<_> = entries.iter().cloned().map(LogRecord::Entry).collect();
        let res = inner.append_records(&recs).map(|starts| {
            let ends: Vec<u64> = starts.iter().skip(1).copied().chain([inner.end]).collect();
            for ((e, at), end) in entries.into_iter().zip(starts).zip(ends) {
                inner.push(e, at, (end - at) as usize);
            }
        });
        let failed = res.as_ref().err().map(StorageIOError::write_logs);
        callback.log_io_completed(res);
        match failed {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut inner = self.lock()?;
        inner
            .append_records(&[LogRecord::Truncate(log_id.index)])
            .map_err(|e| StorageIOError::write_logs(&e))?;
        inner.forget_from(log_id.index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut inner = self.lock()?;
        inner.forget_until(log_id.index);
        inner.last_purged = Some(log_id);
        inner
            .compact()
            .map_err(|e| StorageIOError::write_logs(&e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, EntryPayload};

    fn entry(index: u64) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    fn write_log(dir: &Path, n: u64) -> Vec<usize> {
        std::fs::create_dir_all(dir).unwrap();
        let mut bytes = log_header();
        let mut ends = Vec::new();
        for i in 1..=n {
            bytes.extend(frame(&LogRecord::Entry(entry(i))).unwrap());
            ends.push(bytes.len());
        }
        std::fs::write(dir.join("raft.log"), &bytes).unwrap();
        ends
    }

    fn tempdir(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("tinydfs-log-{name}-{:08x}", rand::random::<u32>()))
    }

    #[test]
    fn the_cache_is_bounded_in_bytes_and_keeps_the_newest_entry() {
        let mut c = Cache::default();
        for i in 1..=10 {
            c.push_back(entry(i), 1 << 20);
        }
        assert_eq!(c.entries.len(), CACHED_BYTES >> 20);
        assert_eq!(c.front().map(|e| e.log_id.index), Some(7));
        assert_eq!(c.bytes, CACHED_BYTES);
        c.push_back(entry(11), 2 * CACHED_BYTES);
        assert_eq!(c.entries.len(), 1, "the newest entry stays, however large");
        c.pop_back_while(|_| true);
        assert_eq!((c.entries.len(), c.bytes), (0, 0));
    }

    #[test]
    fn entries_beyond_the_cache_are_read_back_from_the_file() {
        let dir = tempdir("reread");
        write_log(&dir, 5);
        let store = LogStore::open(&dir).unwrap();
        let mut inner = store.inner.lock().unwrap();
        inner.recent = Cache::default();
        assert_eq!(inner.entry(3).unwrap().log_id.index, 3);
        assert_eq!(inner.last.map(|l| l.index), Some(5));
        // A purge keeps the later entries readable in the rewritten file.
        inner.forget_until(2);
        inner.last_purged = Some(entry(2).log_id);
        inner.compact().unwrap();
        assert_eq!(inner.entry(4).unwrap().log_id.index, 4);
        assert!(inner.entry(2).is_err());
        // So does a truncation.
        inner.append_records(&[LogRecord::Truncate(5)]).unwrap();
        inner.forget_from(5);
        assert_eq!(inner.last.map(|l| l.index), Some(4));
        drop(inner);
        let store = LogStore::open(&dir).unwrap();
        let inner = store.inner.lock().unwrap();
        assert_eq!((inner.first, inner.next_index()), (3, 5));
        assert_eq!(inner.last.map(|l| l.index), Some(4));
        assert_eq!(inner.entry(3).unwrap().log_id.index, 3);
        drop(inner);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_torn_tail_is_cut_but_corruption_before_good_records_is_refused() {
        let dir = tempdir("torn");
        let ends = write_log(&dir, 3);
        // A crash in the middle of the third append.
        let f = OpenOptions::new()
            .write(true)
            .open(dir.join("raft.log"))
            .unwrap();
        f.set_len(ends[2] as u64 - 5).unwrap();
        let store = LogStore::open(&dir).unwrap();
        let inner = store.inner.lock().unwrap();
        assert_eq!((inner.first, inner.next_index()), (1, 3));
        assert_eq!(inner.entry(2).unwrap().log_id.index, 2);
        drop(inner);
        // The cut file takes new records after the second one.
        assert_eq!(
            std::fs::metadata(dir.join("raft.log")).unwrap().len(),
            ends[1] as u64
        );
        std::fs::remove_dir_all(&dir).unwrap();

        let dir = tempdir("corrupt");
        write_log(&dir, 3);
        let mut bytes = std::fs::read(dir.join("raft.log")).unwrap();
        bytes[LOG_HEADER_LEN + 10] ^= 0xFF; // inside the first record
        std::fs::write(dir.join("raft.log"), &bytes).unwrap();
        let err = LogStore::open(&dir)
            .err()
            .expect("a corrupt middle record must stop the master");
        assert!(err.to_string().contains("refusing to start"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
