//! Writing chunks: a large one to a file of its own (temporary file, fsync, rename, commit), a
//! small one to a pack record made durable with the others of its group. One commit path serves
//! single chunks and batches alike: it claims the ids, makes everything durable, and indexes all
//! of it or none.

use super::{ChunkStore, Entry, State, StoreError, WriteMsg, ADDED_MAX};
use crate::image::{image_header, trailer};
use crate::pack::{self, Slot, RECORD_HEADER_LEN};
use bytes::Bytes;
use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use tinydfs_proto::batch::BatchEntry;
use tinydfs_proto::blocks::BlockCrcs;
use tinydfs_proto::{ChunkId, ChunkMeta};
use tokio::sync::mpsc;

/// Write buffer: large enough to turn network-sized frames into few system calls.
const WRITE_BUFFER: usize = 256 * 1024;

impl ChunkStore {
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
        let mut source = held
            .into_iter()
            .map(WriteMsg::Data)
            .chain(std::iter::from_fn(|| rx.blocking_recv()));
        let staged = self.stage(id, &mut source)?;
        let done = (staged.len, staged.crc);
        self.commit(Vec::new(), vec![staged])?;
        self.bytes_written.fetch_add(done.0, Ordering::Relaxed);
        Ok(done)
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
        self.commit(vec![record], Vec::new())?;
        Ok(done)
    }

    /// Writes a batch of chunks whose data is all here (blocking): the small ones as pack
    /// records appended together and made durable by one sync, any larger one as a file. Every
    /// chunk is durable when it returns, or the batch failed and none of it was kept: every
    /// entry is checked before anything is written, and a large one waits under a temporary
    /// name until the rest can be committed with it.
    pub fn write_batch(&self, entries: Vec<BatchEntry>) -> Result<(), StoreError> {
        let mut ids = HashSet::with_capacity(entries.len());
        if let Some(e) = entries.iter().find(|e| !ids.insert(e.id)) {
            return Err(StoreError::Corrupt(e.id, "named twice in one batch".into()));
        }
        let mut records = Vec::with_capacity(entries.len());
        let mut large = Vec::new();
        for e in entries {
            let len = e.data.len() as u64;
            if len <= self.packing.max_chunk {
                records.push(PackRecord::build(e.id, &[e.data], len, e.crc32c)?);
            } else {
                check_announced(e.id, len, crc32c::crc32c(&e.data), len, e.crc32c)?;
                large.push(e);
            }
        }
        let bytes: u64 = records.iter().map(|r| r.len).sum::<u64>()
            + large.iter().map(|e| e.data.len() as u64).sum::<u64>();
        let mut staged = Vec::with_capacity(large.len());
        for e in large {
            let len = e.data.len() as u64;
            let finish = WriteMsg::Finish {
                len,
                crc32c: e.crc32c,
            };
            match self.stage(e.id, &mut [WriteMsg::Data(e.data), finish].into_iter()) {
                Ok(s) => staged.push(s),
                Err(err) => {
                    self.discard(staged);
                    return Err(err);
                }
            }
        }
        self.commit(records, staged)?;
        self.bytes_written.fetch_add(bytes, Ordering::Relaxed);
        Ok(())
    }

    /// Writes a chunk from `source` to a temporary file on the best disk and makes it durable,
    /// without putting it in place. Nothing is left if `source` ends before
    /// [`WriteMsg::Finish`] or the write fails.
    fn stage(
        &self,
        id: ChunkId,
        source: &mut impl Iterator<Item = WriteMsg>,
    ) -> Result<Staged, StoreError> {
        let (disk, tmp, file) = self.create_temp(id)?;
        let mut reserved = 0u64;
        match self.write_temp(disk, file, id, source, &mut reserved) {
            Ok((len, crc)) => Ok(Staged {
                id,
                disk,
                tmp,
                len,
                crc,
                reserved,
            }),
            Err(e) => {
                self.release(disk, reserved);
                let _ = fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    /// Gives up staged chunks: their temporary files and reserved capacity.
    fn discard(&self, staged: Vec<Staged>) {
        for s in staged {
            self.release(s.disk, s.reserved);
            let _ = fs::remove_file(&s.tmp);
        }
    }

    /// Makes chunks durable and indexes them, all of them or none: the staged `files` are
    /// renamed into place, then the `records` are appended to one disk's pack files with one
    /// write and one (shared) sync, and the index gets them all only once all are durable. A
    /// chunk already held with the same length and CRC is left as it is (a retried copy); one
    /// held with different contents fails everything. The ids are claimed from before the
    /// first rename to the indexing, so no other write of them commits meanwhile (it waits, then
    /// finds the chunk), and a failure takes back what it placed before anyone could rely on it.
    fn commit(
        &self,
        mut records: Vec<PackRecord>,
        mut files: Vec<Staged>,
    ) -> Result<(), StoreError> {
        // The disk the records go to, with their bytes reserved against the capacity.
        let mut pack: Option<(usize, u64)> = None;
        if !records.is_empty() {
            let total: u64 = records.iter().map(|r| r.len).sum();
            let chosen = self.choose_disk(true).and_then(|disk| {
                let mut reserved = 0u64;
                self.reserve(disk, total, &mut reserved)
                    .map(|()| (disk, reserved))
            });
            match chosen {
                Ok(p) => pack = Some(p),
                Err(e) => {
                    self.discard(files);
                    return Err(e);
                }
            }
        }
        let release_pack = |pack: Option<(usize, u64)>| {
            if let Some((disk, reserved)) = pack {
                self.release(disk, reserved);
            }
        };
        let mut disks: Vec<usize> = files.iter().map(|f| f.disk).collect();
        disks.extend(pack.map(|(d, _)| d));
        disks.sort_unstable();
        disks.dedup();
        let claimed = match self.claim(&disks, &mut records, &mut files) {
            Ok(claimed) => claimed,
            Err(e) => {
                release_pack(pack);
                self.discard(files);
                return Err(e);
            }
        };
        // Durable: files in place first, then the records, so that a failed append (the usual
        // failure: the sync) leaves only placed files to take back.
        let mut placed = 0;
        let mut outcome = files.iter().try_for_each(|f| {
            self.place(f.disk, &f.tmp, &self.path(f.disk, f.id))?;
            placed += 1;
            Ok(())
        });
        let mut appended = None;
        if outcome.is_ok() {
            if let Some((disk, _)) = pack.filter(|_| !records.is_empty()) {
                match self.append_records(disk, &records) {
                    Ok(start) => appended = Some(start),
                    Err(e) => outcome = Err(e),
                }
            }
        }
        if outcome.is_ok() {
            let st = self.state();
            if let Some(d) = disks.iter().find(|d| st.disks[**d].failed) {
                let d = *d;
                drop(st);
                outcome = Err(self.fail_disk(d, "failed while a chunk was being written"));
            }
        }
        if outcome.is_err() {
            self.take_back(&files[..placed], pack.map(|(d, _)| d), appended, &records);
        }
        // Index everything, or nothing if a disk failed in the meantime (its chunks are not in
        // service; any placed elsewhere stay on disk unindexed, as a crash would leave them).
        {
            let mut st = self.state();
            for id in &claimed {
                st.committing.remove(id);
            }
            if outcome.is_ok() {
                if let Some(d) = disks.iter().find(|d| st.disks[**d].failed) {
                    outcome = Err(StoreError::DiskFailed {
                        disk: self.disks[*d].display().to_string(),
                        reason: "failed while a chunk was being written".into(),
                    });
                }
            }
            if outcome.is_ok() {
                for f in &mut files {
                    let e = Entry {
                        disk: f.disk,
                        len: f.len,
                        crc: f.crc,
                        pack: None,
                    };
                    index(&mut st, f.id, e, std::mem::take(&mut f.reserved));
                }
                if let (Some((disk, reserved)), Some(start)) = (pack.as_mut(), appended) {
                    self.index_records(&mut st, *disk, start, &records);
                    *reserved = reserved.saturating_sub(records.iter().map(|r| r.len).sum());
                }
            }
        }
        self.committed.notify_all();
        release_pack(pack);
        if outcome.is_err() {
            // Reservations back, temporary files of chunks not placed gone.
            self.discard(files);
        }
        outcome
    }

    /// Claims the ids of `records` and `files` once no other write holds any of them and their
    /// `disks` are in service; those already held as they are leave the lists (their staged
    /// files are discarded). Fails, claiming nothing, if one is held with other contents.
    fn claim(
        &self,
        disks: &[usize],
        records: &mut Vec<PackRecord>,
        files: &mut Vec<Staged>,
    ) -> Result<Vec<ChunkId>, StoreError> {
        let mut st = self.state();
        loop {
            if let Some(d) = disks.iter().find(|d| st.disks[**d].failed) {
                let d = *d;
                drop(st);
                return Err(self.fail_disk(d, "failed while a chunk was being written"));
            }
            let mut ids = records
                .iter()
                .map(|r| r.id)
                .chain(files.iter().map(|f| f.id));
            if !ids.any(|id| st.committing.contains(&id)) {
                break;
            }
            st = self.committed.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        let held = |id: ChunkId, len: u64, crc: u32| match st.index.get(&id) {
            None => Ok(false),
            Some(e) if (e.len, e.crc) == (len, crc) => Ok(true),
            Some(_) => Err(id),
        };
        if let Some(id) = records
            .iter()
            .map(|r| (r.id, r.len, r.crc))
            .chain(files.iter().map(|f| (f.id, f.len, f.crc)))
            .find_map(|(id, len, crc)| held(id, len, crc).err())
        {
            return Err(StoreError::Corrupt(
                id,
                "a different chunk with this id exists".into(),
            ));
        }
        records.retain(|r| held(r.id, r.len, r.crc) == Ok(false));
        let (kept, unneeded): (Vec<Staged>, Vec<Staged>) = std::mem::take(files)
            .into_iter()
            .partition(|f| held(f.id, f.len, f.crc) == Ok(false));
        *files = kept;
        let claimed: Vec<ChunkId> = records
            .iter()
            .map(|r| r.id)
            .chain(files.iter().map(|f| f.id))
            .collect();
        for id in &claimed {
            st.committing.insert(*id);
        }
        drop(st);
        self.discard(unneeded);
        Ok(claimed)
    }

    /// Indexes `records`, appended one after the other from `start` on the pack files of
    /// `disk`, their bytes now held.
    fn index_records(&self, st: &mut State, disk: usize, start: Slot, records: &[PackRecord]) {
        let mut at = start.at;
        for r in records {
            let slot = Slot {
                file: start.file,
                at,
            };
            at += r.bytes.len() as u64;
            let e = Entry {
                disk,
                len: r.len,
                crc: r.crc,
                pack: Some(slot),
            };
            index(st, r.id, e, r.len);
            if let Some(packs) = &self.packs[disk] {
                packs.add_live(slot.file, pack::record_len(r.len) as i64);
            }
        }
    }

    /// Appends `records` to the pack files of `disk` with one write and waits until they are
    /// durable (one shared sync); answers where the first went (the others follow it).
    fn append_records(&self, disk: usize, records: &[PackRecord]) -> Result<Slot, StoreError> {
        let packs = self.packs(disk)?;
        let mut buf = Vec::with_capacity(records.iter().map(|r| r.bytes.len()).sum());
        for r in records {
            buf.extend_from_slice(&r.bytes);
        }
        packs
            .append(&buf)
            .and_then(|(slot, seq)| packs.wait_synced(seq).map(|()| slot))
            .map_err(|e| self.write_error(disk, "appending to a pack file", e))
    }

    /// Takes back what a failed commit made durable while its ids were claimed: the chunk files
    /// it placed, and its pack records (tombstones; best effort, as a disk that failed may
    /// refuse them: a chunk that comes back at the next start unreferenced is garbage the
    /// master has deleted again).
    fn take_back(
        &self,
        placed: &[Staged],
        pack_disk: Option<usize>,
        appended: Option<Slot>,
        records: &[PackRecord],
    ) {
        for f in placed {
            match fs::remove_file(self.path(f.disk, f.id)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(chunk = %f.id, error = %e, "cannot remove a chunk of a failed write")
                }
            }
        }
        if let (Some(disk), Some(_)) = (pack_disk, appended) {
            if let Some(packs) = &self.packs[disk] {
                for r in records {
                    if let Err(e) = packs.append_tombstone(r.id) {
                        tracing::warn!(chunk = %r.id, error = %e,
                            "cannot cancel a packed chunk of a failed write");
                        break;
                    }
                }
            }
        }
    }

    /// Writes a chunk's image to its temporary file from the messages of `source`, checks it
    /// against what the sender announced and fsyncs it; answers its length and CRC32C.
    fn write_temp(
        &self,
        disk: usize,
        file: File,
        id: ChunkId,
        source: &mut impl Iterator<Item = WriteMsg>,
        reserved: &mut u64,
    ) -> Result<(u64, u32), StoreError> {
        let werr = |e: io::Error| self.write_error(disk, "writing a chunk", e);
        let mut f = BufWriter::with_capacity(WRITE_BUFFER, file);
        f.write_all(&image_header()).map_err(werr)?;
        let mut len = 0u64;
        let mut crcs = BlockCrcs::default();
        let announced = loop {
            match source.next() {
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
        Ok((len, whole))
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
}

/// Records a durable chunk in the index, its `reserved` bytes now held.
fn index(st: &mut State, id: ChunkId, e: Entry, reserved: u64) {
    st.index.insert(id, e);
    if st.added.len() < ADDED_MAX {
        st.added.push(ChunkMeta {
            id,
            len: e.len,
            crc32c: e.crc,
        });
    }
    let d = &mut st.disks[e.disk];
    d.held += e.len;
    d.chunks += 1;
    d.pending = d.pending.saturating_sub(reserved);
    // Copied here again (re-replication): no longer lost.
    st.lost.retain(|(_, l)| *l != id);
}

/// A chunk written and fsynced under a temporary name, not yet in place.
struct Staged {
    id: ChunkId,
    disk: usize,
    tmp: PathBuf,
    len: u64,
    crc: u32,
    /// Capacity reserved for it on `disk` (given back unless it is indexed).
    reserved: u64,
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
