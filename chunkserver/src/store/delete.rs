//! Removing chunks: the master's deletion orders, and replicas dropped as corrupt or vanished.

use super::{ChunkStore, Entry, StoreError};
use crate::pack;
use std::fs;
use std::io;
use tinydfs_proto::ChunkId;

impl ChunkStore {
    /// Deletes a chunk (an order of the master). The index forgets it first, so a read that
    /// races with the deletion either has the file open already or finds nothing.
    pub fn delete(&self, id: ChunkId) -> Result<(), StoreError> {
        let entry = {
            let mut st = self.state();
            let entry = st.remove(id).ok_or(StoreError::NotFound(id))?;
            if entry.pack.is_some() {
                st.committing.insert(id);
            }
            entry
        };
        if entry.pack.is_some() {
            self.forget_packed(id, entry);
            return Ok(());
        }
        match fs::remove_file(self.path(entry.disk, id)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.fail_disk(entry.disk, &format!("deleting chunk {id}: {e}"))),
        }
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

    /// Drops the replica of `id` on `disk` from the index and queues it as lost; removes its
    /// file when `remove_file`. False if the index no longer held that replica (deleted or
    /// dropped meanwhile).
    pub(super) fn drop_replica(&self, id: ChunkId, disk: usize, remove_file: bool) -> bool {
        let dropped = {
            let mut st = self.state();
            if st.index.get(&id).map(|e| e.disk) != Some(disk) {
                return false;
            }
            st.queue_lost(id);
            let dropped = st.remove(id);
            if dropped.is_some_and(|e| e.pack.is_some()) {
                st.committing.insert(id);
            }
            dropped
        };
        match dropped {
            Some(e) if e.pack.is_some() => self.forget_packed(id, e),
            Some(_) if remove_file => match fs::remove_file(self.path(disk, id)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(chunk = %id, error = %e, "cannot remove a dropped replica")
                }
            },
            _ => {}
        }
        true
    }

    /// Cancels the pack record of a chunk that left the index: a tombstone, so that the next
    /// start does not bring it back, and its bytes no longer counted live. The caller claimed
    /// `id` (in `committing`) when it took it out of the index, so that no new record of the id
    /// is appended before the tombstone; the claim ends here. The append runs without the
    /// store's lock: it may wait for a sync.
    fn forget_packed(&self, id: ChunkId, e: Entry) {
        if let (Some(slot), Some(packs)) = (e.pack, self.packs[e.disk].as_ref()) {
            packs.add_live(slot.file, -(pack::record_len(e.len) as i64));
            if let Err(err) = packs.append_tombstone(id) {
                tracing::warn!(chunk = %id, error = %err, "cannot record a packed chunk's deletion");
            }
        }
        self.unclaim(&[id]);
    }

    /// Ends the claims on `ids` and wakes the writes waiting for them.
    pub(super) fn unclaim(&self, ids: &[ChunkId]) {
        {
            let mut st = self.state();
            for id in ids {
                st.committing.remove(id);
            }
        }
        self.committed.notify_all();
    }
}
