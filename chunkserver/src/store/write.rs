//! Writing chunks: a large one to a file of its own (temporary file, fsync, rename, commit), a
//! small one to a pack record made durable with the others of its group.

use super::{ChunkStore, Entry, StoreError, WriteMsg};
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
use tinydfs_proto::ChunkId;
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
