//! Compaction: the space of deleted packed chunks comes back by moving the live records out of
//! sparse pack files, which are then removed.

use super::read::{check_whole, read_image};
use super::{ChunkStore, Entry, StoreError};
use crate::image::Fault;
use crate::pack::{self, Packs, Slot};
use std::io;
use tinydfs_proto::ChunkId;

/// Bytes of moved records appended between two syncs while compacting.
const COMPACT_BATCH: u64 = 8 << 20;

impl ChunkStore {
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
    pub(super) fn repoint(&self, packs: &Packs, moves: Vec<(ChunkId, Entry, Slot)>) -> usize {
        let mut moved = 0;
        let mut cancel = Vec::new();
        {
            let mut st = self.state();
            for (id, was, to) in moves {
                // A claim on an id out of the index is a write of it or its deletion under way:
                // what the copy needs (nothing, or a tombstone after it) shows once it ends.
                while !st.index.contains_key(&id) && st.committing.contains(&id) {
                    st = self.committed.wait(st).unwrap_or_else(|e| e.into_inner());
                }
                let bytes = pack::record_len(was.len) as i64;
                match st.index.get_mut(&id) {
                    Some(e) if *e == was => {
                        e.pack = Some(to);
                        let from = was.pack.expect("a packed entry").file;
                        packs.add_live(from, -bytes);
                        packs.add_live(to.file, bytes);
                        moved += 1;
                    }
                    // Written again meanwhile: the copy holds the same chunk (an id never names
                    // other contents), a harmless duplicate whichever of the two comes last.
                    Some(_) => {}
                    // Deleted meanwhile: a tombstone after the copy, claimed until appended so
                    // that it cannot follow a newer record of the id.
                    None => {
                        st.committing.insert(id);
                        cancel.push(id);
                    }
                }
            }
        }
        // Appended without the store's lock: an append may wait for a sync.
        for id in &cancel {
            if let Err(e) = packs.append_tombstone(*id) {
                tracing::warn!(chunk = %id, error = %e,
                    "cannot record a packed chunk's deletion");
            }
        }
        if !cancel.is_empty() {
            self.unclaim(&cancel);
        }
        moved
    }
}
