//! The chunk table: each committed chunk's length, checksum and reference count, and which chunks
//! stored on chunkservers are garbage.

use super::State;
use serde::{Deserialize, Serialize};
use tinydfs_proto::*;

/// A chunk known to the metadata: its length, checksum and how many records use it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChunkEntry {
    pub len: u64,
    pub crc32c: u32,
    pub refs: u32,
}

impl State {
    /// Whether a chunk stored on some chunkserver is garbage: nothing references it and the
    /// lease it was written under is gone. Such a chunk can never be referenced again, since a
    /// commit of a chunk that is not in the table needs its lease alive (`check_leases`)
    /// and a lease, once expired, is gone from every later state. So the answer is safe on any
    /// applied prefix of the log, however stale.
    pub fn is_garbage(&self, id: &ChunkId) -> bool {
        let lease = id.lease();
        let protected = self
            .protected_leases
            .is_some_and(|(start, end)| (start..end).contains(&lease));
        // A lease id this state has not issued yet belongs to a later state: not judged here.
        let unissued = lease >= self.next_lease_id.max(1);
        !protected
            && !unissued
            && !self.chunks.contains_key(id)
            && !self.leases.contains_key(&lease)
    }

    pub(super) fn add_refs(&mut self, chunks: &[ChunkMeta]) {
        for c in chunks {
            let e = self.chunks.get_or_insert_with(c.id, || ChunkEntry {
                len: c.len,
                crc32c: c.crc32c,
                refs: 0,
            });
            e.refs += 1;
        }
    }

    pub(super) fn drop_refs(&mut self, chunks: &[ChunkMeta]) {
        for c in chunks {
            if let Some(e) = self.chunks.get_mut(&c.id) {
                e.refs = e.refs.saturating_sub(1);
                if e.refs == 0 {
                    self.chunks.remove(&c.id);
                }
            }
        }
    }
}
