//! Pack files: small chunks appended to one file per disk and made durable in groups.
//!
//! A chunk file per chunk costs two fsyncs (the file, then its folder after the rename), so with
//! three copies small objects are bounded by the disk's fsync rate, not by their bytes. Chunks no
//! larger than the pack limit are instead appended to their disk's current *pack file*, and
//! concurrent writers share one `fdatasync` (group commit): a writer that finds no sync running
//! syncs everything appended so far; the others wait for it and return together.
//!
//! A pack file is a header followed by records:
//!
//! ```text
//! "TDFSPACK" | version u32 | 0u32
//! record: "TDPK" | kind u8 | 0u8 x3 | chunk id u128 | data length u32 | data crc32c u32
//!         | 0u32 | crc32c of the 36 bytes before | image (chunk records only)
//! ```
//!
//! A chunk record's image ([`crate::image`]) is byte for byte what a chunk file holds (header,
//! data, block CRCs, footer), so reads and the scrubber check it the same way. A tombstone record
//! says the chunk was deleted. Records are only ever appended, and files are replayed in order at
//! start, so the last record of an id decides. A record cut short by a crash was never
//! acknowledged: it ends the replay of its file. Every start appends to a new file, and a file
//! that reaches its size limit is followed by a new one.
//!
//! Space of deleted chunks comes back by compaction ([`crate::store::ChunkStore::compact`]): a
//! sealed file whose live records fell under half its size has them appended anew, then is
//! removed. A tombstone can go with its file before the record it cancels: that chunk then comes
//! back at the next start, unreferenced, and the master's garbage collection deletes it again.

use crate::image::{image_len, FOOTER_MAGIC, IMAGE_FOOTER_LEN, IMAGE_HEADER_LEN};
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use tinydfs_proto::ChunkId;

const FILE_MAGIC: &[u8; 8] = b"TDFSPACK";
/// Version of the pack file format.
pub const PACK_FORMAT_VERSION: u32 = 1;
/// Bytes before the first record of a pack file.
pub const FILE_HEADER_LEN: u64 = 16;
const RECORD_MAGIC: &[u8; 4] = b"TDPK";
/// Bytes of a record before its image.
pub const RECORD_HEADER_LEN: usize = 40;
const KIND_CHUNK: u8 = 1;
const KIND_TOMBSTONE: u8 = 2;
/// Size at which a pack file is sealed and the next one begun.
pub const DEFAULT_FILE_SIZE: u64 = 256 << 20;
/// Bytes of zeros written (and synced) ahead of the records. Appending to a file changes its
/// size, so every sync commits file system metadata too (a journal commit); writing over
/// zeros already on disk leaves only the data to flush, about half the I/O per sync.
const PREPARE_STEP: u64 = 8 << 20;
/// The end of each pack file whose chunk records are read whole and checked at start: a crash
/// during a group's append can leave records there whose headers reached the disk but not all
/// their data (they were never acknowledged). Earlier records were synced by later groups.
const TAIL_CHECK: u64 = 8 << 20;

/// Where a chunk record starts in a disk's packs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    pub file: u32,
    /// Offset of the record (its header) in the file.
    pub at: u64,
}

/// A record found when replaying the pack files, in file order.
#[derive(Debug, PartialEq, Eq)]
pub enum Replayed {
    Chunk {
        id: ChunkId,
        len: u64,
        crc: u32,
        slot: Slot,
    },
    Tombstone(ChunkId),
}

/// The header of a record: its kind, chunk id, data length and data CRC32C.
pub fn record_header(tombstone: bool, id: ChunkId, len: u32, crc: u32) -> [u8; RECORD_HEADER_LEN] {
    let mut h = [0u8; RECORD_HEADER_LEN];
    h[..4].copy_from_slice(RECORD_MAGIC);
    h[4] = if tombstone {
        KIND_TOMBSTONE
    } else {
        KIND_CHUNK
    };
    h[8..24].copy_from_slice(&id.0.to_le_bytes());
    h[24..28].copy_from_slice(&len.to_le_bytes());
    h[28..32].copy_from_slice(&crc.to_le_bytes());
    let check = crc32c::crc32c(&h[..36]);
    h[36..].copy_from_slice(&check.to_le_bytes());
    h
}

/// (tombstone, id, data length, data CRC32C) of a record header, if it is one.
fn parse_header(h: &[u8; RECORD_HEADER_LEN]) -> Option<(bool, ChunkId, u32, u32)> {
    let le32 = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    if &h[..4] != RECORD_MAGIC || crc32c::crc32c(&h[..36]) != le32(&h[36..]) {
        return None;
    }
    let tombstone = match h[4] {
        KIND_CHUNK => false,
        KIND_TOMBSTONE => true,
        _ => return None,
    };
    let mut id = [0u8; 16];
    id.copy_from_slice(&h[8..24]);
    Some((
        tombstone,
        ChunkId(u128::from_le_bytes(id)),
        le32(&h[24..28]),
        le32(&h[28..32]),
    ))
}

/// Bytes of a chunk record holding `len` data bytes: header and image.
pub fn record_len(len: u64) -> u64 {
    RECORD_HEADER_LEN as u64 + image_len(len)
}

/// What appends know of a pack file.
struct PackFile {
    file: Arc<File>,
    /// Bytes written (the end of the last record).
    size: u64,
    /// Length of the file on disk: records, then zeros written ahead.
    prepared: u64,
}

/// What readers and the index's accounting know of a pack file.
struct Handle {
    file: Arc<File>,
    /// Bytes of the records the index points at.
    live: u64,
}

struct Inner {
    files: BTreeMap<u32, PackFile>,
    /// The file appends go to; none until the first append after start.
    current: Option<u32>,
    next: u32,
    /// Records appended and records known durable, counted since start.
    appended: u64,
    synced: u64,
    syncing: bool,
    /// A failed fsync: nothing appended since can be trusted.
    broken: Option<String>,
}

/// The pack files of one disk.
///
/// Two locks: `inner` serializes appends and is held through the zero-filling and syncing an
/// append may do; `handles` (the open files for readers, and their live bytes) is only ever
/// held for a map operation. The chunk store takes `handles` under its own lock, never
/// `inner`, so that no reader and no request waits behind a disk sync. Lock order: `inner`,
/// then `handles`.
pub struct Packs {
    dir: PathBuf,
    file_size: u64,
    inner: Mutex<Inner>,
    handles: Mutex<BTreeMap<u32, Handle>>,
    synced: Condvar,
}

fn file_name(n: u32) -> String {
    format!("{n:08}.pack")
}

impl Packs {
    /// Opens the pack folder `dir` (created if missing) and replays its files in order.
    pub fn open(dir: &Path, file_size: u64) -> io::Result<(Packs, Vec<Replayed>)> {
        if !dir.is_dir() {
            fs::create_dir_all(dir)?;
            if let Some(parent) = dir.parent() {
                File::open(parent)?.sync_all()?;
            }
        }
        let mut numbers: Vec<u32> = fs::read_dir(dir)?
            .collect::<io::Result<Vec<_>>>()?
            .iter()
            .filter_map(|e| e.file_name().to_str()?.strip_suffix(".pack")?.parse().ok())
            .collect();
        numbers.sort_unstable();
        let mut files = BTreeMap::new();
        let mut handles = BTreeMap::new();
        let mut found = Vec::new();
        for n in &numbers {
            let path = dir.join(file_name(*n));
            let file = File::open(&path)?;
            let prepared = file.metadata()?.len();
            let size = replay(&file, *n, &mut found).map_err(|e| {
                io::Error::new(e.kind(), format!("replaying {}: {e}", path.display()))
            })?;
            let file = Arc::new(file);
            handles.insert(
                *n,
                Handle {
                    file: file.clone(),
                    live: 0,
                },
            );
            files.insert(
                *n,
                PackFile {
                    file,
                    size,
                    prepared,
                },
            );
        }
        let next = numbers.last().map_or(1, |n| n + 1);
        let packs = Packs {
            dir: dir.to_path_buf(),
            file_size,
            inner: Mutex::new(Inner {
                files,
                current: None,
                next,
                appended: 0,
                synced: 0,
                syncing: false,
                broken: None,
            }),
            handles: Mutex::new(handles),
            synced: Condvar::new(),
        };
        Ok((packs, found))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn handles(&self) -> MutexGuard<'_, BTreeMap<u32, Handle>> {
        self.handles.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` while appends are held up, as by one stuck in a slow sync (tests).
    #[cfg(test)]
    pub(crate) fn while_appends_stall<R>(&self, f: impl FnOnce() -> R) -> R {
        let _held = self.lock();
        f()
    }

    /// The path of pack file `n`.
    pub fn path(&self, n: u32) -> PathBuf {
        self.dir.join(file_name(n))
    }

    /// The open pack file `n`, for reading (never waits for an append).
    pub fn file(&self, n: u32) -> Option<Arc<File>> {
        self.handles().get(&n).map(|h| h.file.clone())
    }

    /// Counts `bytes` more (or, negative, fewer) of file `n` as live (never waits for an
    /// append).
    pub fn add_live(&self, n: u32, bytes: i64) {
        if let Some(h) = self.handles().get_mut(&n) {
            h.live = h.live.saturating_add_signed(bytes);
        }
    }

    /// Sealed files whose live records take less than half their size: worth compacting.
    pub fn sparse(&self) -> Vec<u32> {
        let g = self.lock();
        let handles = self.handles();
        g.files
            .iter()
            .filter(|(n, f)| {
                let live = handles.get(n).map_or(0, |h| h.live);
                Some(**n) != g.current && live * 2 < f.size
            })
            .map(|(n, _)| *n)
            .collect()
    }

    /// Forgets and removes file `n` (open handles keep reading it until they are dropped).
    pub fn retire(&self, n: u32) -> io::Result<()> {
        self.lock().files.remove(&n);
        self.handles().remove(&n);
        match fs::remove_file(self.path(n)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Appends a whole chunk record (header and image) and returns once it is durable, with
    /// where it went. Errors leave nothing counted: the next append writes over the remains.
    pub fn append_chunk(&self, record: &[u8]) -> io::Result<Slot> {
        let (slot, seq) = self.append(record)?;
        self.wait_synced(seq)?;
        Ok(slot)
    }

    /// Appends a tombstone for `id`, without waiting: it becomes durable with the next group
    /// (a tombstone lost in a crash brings back a deleted chunk, which is deleted again).
    pub fn append_tombstone(&self, id: ChunkId) -> io::Result<()> {
        self.append(&record_header(true, id, 0, 0)).map(|_| ())
    }

    /// Appends a record without waiting for it to be durable: answers where it went and its
    /// number for [`Packs::wait_synced`].
    pub(crate) fn append(&self, record: &[u8]) -> io::Result<(Slot, u64)> {
        let mut g = self.lock();
        if let Some(why) = &g.broken {
            return Err(io::Error::other(format!("pack files failed before: {why}")));
        }
        let n = self.room(&mut g, record.len() as u64)?;
        let f = g.files.get_mut(&n).expect("the current pack file is open");
        let at = f.size;
        let end = at + record.len() as u64;
        if end > f.prepared {
            let target = (f.prepared + PREPARE_STEP).min(self.file_size).max(end);
            zero_fill(&f.file, f.prepared, target)?;
            if let Err(e) = f.file.sync_all() {
                g.broken = Some(e.to_string());
                return Err(e);
            }
            f.prepared = target;
        }
        f.file.write_all_at(record, at)?;
        f.size = at + record.len() as u64;
        g.appended += 1;
        Ok((Slot { file: n, at }, g.appended))
    }

    /// The file a record of `len` bytes goes to: the current one, or a new one when there is
    /// none yet or the record would take the current one past its size. The file left behind
    /// is synced first, so every record counted appended before the switch is durable.
    fn room(&self, g: &mut Inner, len: u64) -> io::Result<u32> {
        if let Some(n) = g.current {
            let size = g.files[&n].size;
            if size == FILE_HEADER_LEN || size + len <= self.file_size {
                return Ok(n);
            }
            if let Err(e) = g.files[&n].file.sync_data() {
                g.broken = Some(e.to_string());
                return Err(e);
            }
            g.synced = g.appended;
        }
        let n = g.next;
        let path = self.path(n);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        // Taken, whatever happens next: a half-made file is never created again.
        g.next = n + 1;
        let mut header = Vec::with_capacity(FILE_HEADER_LEN as usize);
        header.extend_from_slice(FILE_MAGIC);
        header.extend_from_slice(&PACK_FORMAT_VERSION.to_le_bytes());
        header.extend_from_slice(&0u32.to_le_bytes());
        file.write_all_at(&header, 0)?;
        file.sync_all()?;
        File::open(&self.dir)?.sync_all()?;
        g.current = Some(n);
        let file = Arc::new(file);
        self.handles().insert(
            n,
            Handle {
                file: file.clone(),
                live: 0,
            },
        );
        g.files.insert(
            n,
            PackFile {
                file,
                size: FILE_HEADER_LEN,
                prepared: FILE_HEADER_LEN,
            },
        );
        Ok(n)
    }

    /// Waits until the record numbered `seq` is durable, syncing the current file when no one
    /// else is: one fdatasync covers every record appended before it started.
    pub(crate) fn wait_synced(&self, seq: u64) -> io::Result<()> {
        let mut g = self.lock();
        loop {
            if g.synced >= seq {
                return Ok(());
            }
            if let Some(why) = &g.broken {
                return Err(io::Error::other(why.clone()));
            }
            if g.syncing {
                g = self.synced.wait(g).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            g.syncing = true;
            let target = g.appended;
            let file = g
                .current
                .and_then(|n| g.files.get(&n))
                .map(|f| f.file.clone());
            drop(g);
            let result = file.map_or(Ok(()), |f| f.sync_data());
            g = self.lock();
            g.syncing = false;
            match result {
                Ok(()) => g.synced = g.synced.max(target),
                Err(e) => g.broken = Some(e.to_string()),
            }
            self.synced.notify_all();
        }
    }
}

/// Writes zeros over `from..to` of `file`.
fn zero_fill(file: &File, from: u64, to: u64) -> io::Result<()> {
    let zeros = vec![0u8; (to - from).min(1 << 20) as usize];
    let mut at = from;
    while at < to {
        let n = (to - at).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

/// Reads the records of pack file `n` into `out`, stopping at the zeros written ahead or at the
/// first record that is cut short or unreadable (the tail of a crash: it was never
/// acknowledged). Answers where the records end.
fn replay(file: &File, n: u32, out: &mut Vec<Replayed>) -> io::Result<u64> {
    let mut found = Vec::new();
    let end = read_records(file, n, &mut found)?;
    // Records in the tail are kept only if whole: the first that is not ends the file.
    let tail = end.saturating_sub(TAIL_CHECK);
    let mut kept = found.len();
    let mut valid_end = end;
    for (i, r) in found.iter().enumerate() {
        if let Replayed::Chunk { len, crc, slot, .. } = r {
            if slot.at + record_len(*len) > tail && !intact(file, *slot, *len, *crc)? {
                tracing::warn!(
                    pack = n,
                    offset = slot.at,
                    "pack record cut short by a crash (never acknowledged); the file ends there"
                );
                kept = i;
                valid_end = slot.at;
                break;
            }
        }
    }
    found.truncate(kept);
    out.extend(found);
    Ok(valid_end)
}

/// Whether the chunk record at `slot` holds its whole image: footer and data CRC as announced.
fn intact(file: &File, slot: Slot, len: u64, crc: u32) -> io::Result<bool> {
    let mut image = vec![0u8; image_len(len) as usize];
    file.read_exact_at(&mut image, slot.at + RECORD_HEADER_LEN as u64)?;
    let data = &image[IMAGE_HEADER_LEN as usize..(IMAGE_HEADER_LEN + len) as usize];
    let footer = &image[image.len() - IMAGE_FOOTER_LEN as usize..];
    let mut want = Vec::with_capacity(IMAGE_FOOTER_LEN as usize);
    want.extend_from_slice(&len.to_le_bytes());
    want.extend_from_slice(&crc.to_le_bytes());
    want.extend_from_slice(FOOTER_MAGIC);
    Ok(footer == want.as_slice() && crc32c::crc32c(data) == crc)
}

/// The records of pack file `n` as their headers say, into `out`; answers where they end.
fn read_records(file: &File, n: u32, out: &mut Vec<Replayed>) -> io::Result<u64> {
    let total = file.metadata()?.len();
    if total < FILE_HEADER_LEN {
        return Ok(total); // created, never written: empty
    }
    let mut header = [0u8; FILE_HEADER_LEN as usize];
    file.read_exact_at(&mut header, 0)?;
    if &header[..8] != FILE_MAGIC {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a pack file",
        ));
    }
    let version = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    if version > PACK_FORMAT_VERSION {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("pack format {version} is too new"),
        ));
    }
    // Records are read through a buffer: a pack of small chunks is mostly headers.
    let mut reader = io::BufReader::with_capacity(1 << 20, file);
    use io::{Read, Seek};
    reader.seek(io::SeekFrom::Start(FILE_HEADER_LEN))?;
    let mut at = FILE_HEADER_LEN;
    let mut h = [0u8; RECORD_HEADER_LEN];
    while at + RECORD_HEADER_LEN as u64 <= total {
        reader.read_exact(&mut h)?;
        if h.iter().all(|b| *b == 0) {
            break; // the zeros ahead of the records
        }
        let Some((tombstone, id, len, crc)) = parse_header(&h) else {
            if at < total {
                tracing::warn!(
                    pack = n,
                    offset = at,
                    bytes = total - at,
                    "unreadable pack record; the rest of the file is ignored"
                );
            }
            break;
        };
        if tombstone {
            out.push(Replayed::Tombstone(id));
            at += RECORD_HEADER_LEN as u64;
            continue;
        }
        let end = at + record_len(u64::from(len));
        if end > total {
            break; // cut short
        }
        out.push(Replayed::Chunk {
            id,
            len: u64::from(len),
            crc,
            slot: Slot { file: n, at },
        });
        reader.seek_relative((end - at - RECORD_HEADER_LEN as u64) as i64)?;
        at = end;
    }
    Ok(at)
}

#[cfg(test)]
mod tests;
