//! The data folders: opening them, their health and space, where a new chunk goes, and taking a
//! failed one out of service.

use super::{
    ChunkStore, DiskUse, Entry, PackConfig, Probe, State, StoreError, Usage, PACK_MAX_LIMIT,
};
use crate::image::{read_footer, Fault};
use crate::pack::{self, Packs, Replayed};
use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};
use tinydfs_proto::meta::DiskStatus;
use tinydfs_proto::ChunkId;

/// How long a disk health check serves small writes.
const PROBE_REUSE: Duration = Duration::from_secs(1);

/// A disk a new chunk may go to.
#[derive(Clone, Copy, Debug)]
struct Candidate {
    disk: usize,
    /// Effective free bytes (file system and capacity limit).
    free: u64,
    /// Bytes held and being written.
    used: u64,
}

/// The disk with the most free space. Folders sharing a file system see the same free space, so
/// among equals the one holding the fewest bytes wins, then the first.
fn pick_disk(candidates: &[Candidate]) -> Option<usize> {
    candidates
        .iter()
        .max_by_key(|c| (c.free, Reverse(c.used), Reverse(c.disk)))
        .map(|c| c.disk)
}

impl ChunkStore {
    /// Opens the store over `disks` with the default packing, listing the chunks already there
    /// and clearing leftovers of interrupted writes. A disk that cannot be opened or listed is
    /// marked failed; it is an error only if none works. `capacity` caps the chunk bytes held
    /// (0: no cap).
    pub fn open(disks: &[PathBuf], capacity: u64) -> Result<ChunkStore, StoreError> {
        Self::open_with(disks, capacity, PackConfig::default())
    }

    /// [`ChunkStore::open`] with the given packing of small chunks.
    pub fn open_with(
        disks: &[PathBuf],
        capacity: u64,
        packing: PackConfig,
    ) -> Result<ChunkStore, StoreError> {
        let packing = PackConfig {
            max_chunk: packing.max_chunk.min(PACK_MAX_LIMIT),
            ..packing
        };
        let mut state = State {
            disks: vec![DiskUse::default(); disks.len()],
            ..State::default()
        };
        let mut all_packs = Vec::with_capacity(disks.len());
        for (d, root) in disks.iter().enumerate() {
            let opened = open_disk(root).and_then(|files| {
                let (packs, replayed) = Packs::open(&root.join("packs"), packing.file_size)
                    .map_err(|e| format!("opening the pack files of {}: {e}", root.display()))?;
                Ok((files, packs, replayed))
            });
            let (files, packs, replayed) = match opened {
                Ok(found) => found,
                Err(e) => {
                    tracing::error!(disk = %root.display(), error = %e, "data folder unusable; marked failed");
                    state.disks[d].failed = true;
                    all_packs.push(None);
                    continue;
                }
            };
            for (id, e) in disk_chunks(d, files, replayed) {
                if let Some(other) = state.index.get(&id) {
                    tracing::warn!(chunk = %id, disk = %root.display(),
                        kept = %disks[other.disk].display(), "chunk found on two disks; ignoring this copy");
                    continue;
                }
                if let Some(slot) = e.pack {
                    packs.add_live(slot.file, pack::record_len(e.len) as i64);
                }
                state.index.insert(id, e);
                state.disks[d].held += e.len;
                state.disks[d].chunks += 1;
            }
            all_packs.push(Some(packs));
            tracing::info!(disk = %root.display(), chunks = state.disks[d].chunks, "data folder opened");
        }
        if state.disks.iter().all(|d| d.failed) {
            return Err(StoreError::NoDisk);
        }
        Ok(ChunkStore {
            disks: disks.to_vec(),
            packs: all_packs,
            packing,
            capacity,
            state: Mutex::new(state),
            probed: Mutex::new(None),
            committed: Condvar::new(),
            scrubbed: AtomicU64::new(0),
            scrub_corrupt: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
            bytes_read: AtomicU64::new(0),
            _locks: Vec::new(),
        })
    }

    /// Takes data folder `disk` out of service: its chunks leave the index and are queued as
    /// lost. Idempotent.
    pub(super) fn fail_disk(&self, disk: usize, reason: &str) -> StoreError {
        let (lost, left) = {
            let mut st = self.state();
            if st.disks[disk].failed {
                (None, 0)
            } else {
                st.disks[disk].failed = true;
                let ids: Vec<ChunkId> = st
                    .index
                    .iter()
                    .filter(|(_, e)| e.disk == disk)
                    .map(|(id, _)| *id)
                    .collect();
                for id in &ids {
                    st.remove(*id);
                    st.queue_lost(*id);
                }
                let left = st.disks.iter().filter(|d| !d.failed).count();
                (Some(ids.len()), left)
            }
        };
        let path = self.disks[disk].display().to_string();
        if let Some(lost) = lost {
            tracing::error!(disk = %path, reason, lost, "data folder failed; its chunks are reported lost");
            if left == 0 {
                tracing::error!(
                    "every data folder has failed: this chunkserver cannot store chunks"
                );
            }
        }
        StoreError::DiskFailed {
            disk: path,
            reason: reason.to_string(),
        }
    }

    /// Turns an I/O error of a write on `disk` into the store's error: running out of space
    /// fails the write only; anything else fails the disk.
    pub(super) fn write_error(&self, disk: usize, what: &str, e: io::Error) -> StoreError {
        if is_no_space(&e) {
            StoreError::NoSpace(format!("{what} on {}: {e}", self.disks[disk].display()))
        } else {
            self.fail_disk(disk, &format!("{what}: {e}"))
        }
    }

    /// The disks in service, after a health check (a disk whose folders are gone is failed
    /// here), with their file systems' space.
    fn probe(&self) -> Vec<Probe> {
        let working: Vec<usize> = {
            let st = self.state();
            (0..self.disks.len())
                .filter(|d| !st.disks[*d].failed)
                .collect()
        };
        let mut out = Vec::with_capacity(working.len());
        // One measure per file system, so folders sharing one compare equal.
        let mut measured: HashMap<u64, (u64, u64)> = HashMap::new();
        for disk in working {
            let root = &self.disks[disk];
            if let Some(problem) = disk_problem(root) {
                self.fail_disk(disk, &problem);
                continue;
            }
            let space = fs::metadata(root).and_then(|m| {
                let dev = m.dev();
                if let Some(space) = measured.get(&dev) {
                    return Ok((dev, *space));
                }
                let space = fs_space(root)?;
                measured.insert(dev, space);
                Ok((dev, space))
            });
            match space {
                Ok((dev, (capacity, free))) => out.push(Probe {
                    disk,
                    dev,
                    capacity,
                    free,
                }),
                Err(e) => {
                    self.fail_disk(disk, &format!("measuring free space: {e}"));
                }
            }
        }
        out
    }

    /// Checks that every disk in service still has its folders; fails those that do not.
    pub fn check_disks(&self) {
        self.probe();
    }

    /// Capacity and free space, in total and per disk. Folders on one file system count its
    /// space once; the configured capacity caps both (blocking: runs `statvfs`).
    pub fn usage(&self) -> Usage {
        let probes = self.probe();
        let st = self.state();
        let remaining = st.remaining(self.capacity);
        let cap = |c: u64| {
            if self.capacity == 0 {
                c
            } else {
                c.min(self.capacity)
            }
        };
        let mut seen = HashSet::new();
        let (mut capacity, mut free) = (0u64, 0u64);
        for p in &probes {
            if seen.insert(p.dev) {
                capacity += p.capacity;
                free += p.free;
            }
        }
        let disks = self
            .disks
            .iter()
            .enumerate()
            .map(|(d, root)| {
                let probe = probes.iter().find(|p| p.disk == d);
                let u = &st.disks[d];
                DiskStatus {
                    path: root.display().to_string(),
                    capacity: probe.map(|p| cap(p.capacity)).unwrap_or(0),
                    free: probe.map(|p| p.free.min(remaining)).unwrap_or(0),
                    chunks: u.chunks,
                    failed: u.failed || probe.is_none(),
                }
            })
            .collect();
        Usage {
            capacity: cap(capacity),
            free: free.min(remaining),
            disks,
        }
    }

    /// The disk a new chunk goes to: in service, with the most effective free space. A small
    /// chunk (`recent_ok`) may go by a health check up to [`PROBE_REUSE`] old.
    pub(super) fn choose_disk(&self, recent_ok: bool) -> Result<usize, StoreError> {
        let recent = recent_ok
            .then(|| {
                let p = self.probed.lock().unwrap_or_else(|e| e.into_inner());
                p.as_ref()
                    .filter(|(at, _)| at.elapsed() < PROBE_REUSE)
                    .map(|(_, probes)| probes.clone())
            })
            .flatten();
        let probes = match recent {
            Some(p) => p,
            None => {
                let p = self.probe();
                *self.probed.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some((Instant::now(), p.clone()));
                p
            }
        };
        let st = self.state();
        let remaining = st.remaining(self.capacity);
        let candidates: Vec<Candidate> = probes
            .iter()
            .filter(|p| !st.disks[p.disk].failed)
            .map(|p| Candidate {
                disk: p.disk,
                free: p.free.min(remaining),
                used: st.disks[p.disk].held + st.disks[p.disk].pending,
            })
            .collect();
        pick_disk(&candidates).ok_or(StoreError::NoDisk)
    }
}

/// Prepares one data folder and lists its chunks: (id, length, CRC32C).
fn open_disk(root: &Path) -> Result<Vec<(ChunkId, u64, u32)>, String> {
    let ctx = |what: &str, p: &Path, e: io::Error| format!("{what} {}: {e}", p.display());
    fs::create_dir_all(root).map_err(|e| ctx("creating", root, e))?;
    let tmp = root.join("tmp");
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(|e| ctx("clearing", &tmp, e))?;
    }
    fs::create_dir_all(&tmp).map_err(|e| ctx("creating", &tmp, e))?;
    let chunks = root.join("chunks");
    fs::create_dir_all(&chunks).map_err(|e| ctx("creating", &chunks, e))?;
    let mut found = Vec::new();
    let list = |dir: &Path| -> Result<Vec<fs::DirEntry>, String> {
        fs::read_dir(dir)
            .and_then(|entries| entries.collect::<io::Result<Vec<_>>>())
            .map_err(|e| ctx("listing", dir, e))
    };
    let is_dir = |e: &fs::DirEntry| e.file_type().is_ok_and(|t| t.is_dir());
    for a in list(&chunks)?.into_iter().filter(is_dir) {
        for b in list(&a.path())?.into_iter().filter(is_dir) {
            for f in list(&b.path())? {
                let Some(id) = f
                    .file_name()
                    .to_str()
                    .and_then(|n| n.parse::<ChunkId>().ok())
                else {
                    continue;
                };
                match read_footer(&f.path()) {
                    Ok((len, crc, _)) => found.push((id, len, crc)),
                    Err(Fault::Missing) => {}
                    Err(Fault::Corrupt(why)) => {
                        tracing::warn!(chunk = %id, error = %why, "skipping unreadable chunk")
                    }
                    Err(Fault::Io(e)) => return Err(ctx("reading", &f.path(), e)),
                }
            }
        }
    }
    Ok(found)
}

/// The chunks of one disk: its chunk files, then its pack records replayed in order (the last
/// record of an id decides; a tombstone cancels a packed chunk, never a chunk file).
fn disk_chunks(
    disk: usize,
    files: Vec<(ChunkId, u64, u32)>,
    replayed: Vec<Replayed>,
) -> HashMap<ChunkId, Entry> {
    let mut here: HashMap<ChunkId, Entry> = files
        .into_iter()
        .map(|(id, len, crc)| {
            let e = Entry {
                disk,
                len,
                crc,
                pack: None,
            };
            (id, e)
        })
        .collect();
    for r in replayed {
        match r {
            Replayed::Chunk { id, len, crc, slot } => {
                if here.get(&id).is_some_and(|e| e.pack.is_none()) {
                    continue;
                }
                let e = Entry {
                    disk,
                    len,
                    crc,
                    pack: Some(slot),
                };
                here.insert(id, e);
            }
            Replayed::Tombstone(id) => {
                if here.get(&id).is_some_and(|e| e.pack.is_some()) {
                    here.remove(&id);
                }
            }
        }
    }
    here
}

/// Why a data folder is unusable, if it is: its root, `chunks/` or `tmp/` is gone or not a
/// folder (an unmounted or replaced disk).
pub(super) fn disk_problem(root: &Path) -> Option<String> {
    for p in [
        root.to_path_buf(),
        root.join("chunks"),
        root.join("tmp"),
        root.join("packs"),
    ] {
        match fs::metadata(&p) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Some(format!("{} is not a folder", p.display())),
            Err(e) => return Some(format!("{}: {e}", p.display())),
        }
    }
    None
}

/// Total and free bytes of the file system holding `dir`.
fn fs_space(dir: &Path) -> io::Result<(u64, u64)> {
    let s = nix::sys::statvfs::statvfs(dir).map_err(io::Error::from)?;
    let frag = s.fragment_size();
    Ok((s.blocks() * frag, s.blocks_available() * frag))
}

/// Out of space or quota: the write fails, the disk is fine.
fn is_no_space(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_disk_with_the_most_free_space() {
        let c = |disk, free, used| Candidate { disk, free, used };
        assert_eq!(pick_disk(&[]), None);
        assert_eq!(
            pick_disk(&[c(0, 10, 0), c(1, 30, 500), c(2, 20, 0)]),
            Some(1)
        );
        // Folders on one file system: equal free space, the emptier folder wins, then the first.
        assert_eq!(pick_disk(&[c(0, 50, 9), c(1, 50, 3), c(2, 50, 3)]), Some(1));
    }
}
