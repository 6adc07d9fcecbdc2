//! Reading chunks back verified: byte ranges for clients and peers, whole chunks for the
//! scrubber, and what a fault found on the way does to the replica or its disk.

use super::disks::disk_problem;
use super::{ChunkStore, Entry, ScrubOutcome, StoreError};
use crate::image::{
    image_block, image_len, le32, read_block, read_footer, Fault, FOOTER_MAGIC, IMAGE_FOOTER_LEN,
    IMAGE_HEADER_LEN, MAGIC,
};
use crate::pack::{Slot, RECORD_HEADER_LEN};
use bytes::Bytes;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tinydfs_proto::{ChunkId, BLOCK_SIZE};
use tokio::sync::mpsc;

/// Longest a throttled scrub sleeps before looking at its stop flag again, so that shutdown
/// (which waits for blocking threads) is not held up by a slow scrub rate.
const STOP_CHECK: Duration = Duration::from_millis(100);

impl ChunkStore {
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

    /// Acts on a fault found reading chunk `id` on `disk` and returns the error to report.
    pub(super) fn read_fault(&self, id: ChunkId, disk: usize, fault: Fault) -> StoreError {
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

/// Reads the image of a packed chunk and checks its header and footer against the index.
pub(super) fn read_image(file: &File, slot: Slot, entry: Entry) -> Result<Bytes, Fault> {
    let mut buf = vec![0u8; image_len(entry.len) as usize];
    file.read_exact_at(&mut buf, slot.at + RECORD_HEADER_LEN as u64)?;
    if &buf[..8] != MAGIC {
        return Err(Fault::Corrupt("pack record holds no chunk image".into()));
    }
    let footer = &buf[buf.len() - IMAGE_FOOTER_LEN as usize..];
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

/// Checks every block of a packed chunk's image and its whole-chunk CRC32C.
pub(super) fn check_whole(image: &Bytes, entry: Entry) -> Result<(), Fault> {
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
    file.read_exact_at(&mut table, IMAGE_HEADER_LEN + size)?;
    Ok((size, file, table))
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
