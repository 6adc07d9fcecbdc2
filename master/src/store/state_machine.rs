//! The state machine ([`StateMachine`]): the applied [`State`] in memory, shared with the read
//! path, and its snapshots.
//!
//! Snapshots are the checkpoints: the whole [`State`] as a versioned JSON document, written to a
//! temporary file, fsynced and renamed into place.

use super::{io_err, write_atomic, Node, NodeId, STORAGE_VERSION};
use crate::raft::TypeConfig;
use crate::state::{Command, Reply, State};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::io::{self, Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// The applied state plus what openraft needs to know about it.
#[derive(Default, Serialize, Deserialize, Clone)]
pub struct Applied {
    pub last_applied: Option<LogId<NodeId>>,
    pub membership: StoredMembership<NodeId, Node>,
    pub state: State,
    /// Writes applied since the group began (a batch entry counts each of its writes): what a
    /// replay after restart costs is writes, not log entries.
    #[serde(default)]
    pub writes: u64,
}

/// [`SnapshotFile`] by reference, for writing without a copy of the state.
#[derive(Serialize)]
struct SnapshotFileRef<'a> {
    version: u16,
    meta: &'a SnapshotMeta<NodeId, Node>,
    applied: &'a Applied,
}

/// The head of a [`SnapshotFile`]: what openraft asks of the current snapshot at start, read
/// without building a second copy of the state (the rest is skipped unallocated).
#[derive(Deserialize)]
struct SnapshotHead {
    meta: SnapshotMeta<NodeId, Node>,
}

#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    version: u16,
    meta: SnapshotMeta<NodeId, Node>,
    applied: Applied,
}

/// The state machine: [`State`] in memory, shared with the read path, checkpointed as snapshots.
#[derive(Clone)]
pub struct StateMachine {
    pub applied: Arc<RwLock<Applied>>,
    dir: PathBuf,
    snapshot_seq: Arc<Mutex<u64>>,
    /// [`Applied::writes`] as of the newest snapshot, for the snapshot worker.
    pub snapshot_writes: Arc<AtomicU64>,
    /// Serialises snapshot files and remembers the newest one written: a slow build must not
    /// overwrite a newer snapshot installed from the leader meanwhile.
    snapshot_file: Arc<Mutex<Option<LogId<NodeId>>>>,
}

impl StateMachine {
    /// Opens the state machine under `dir`, loading the newest snapshot if there is one.
    pub fn open(dir: &Path) -> io::Result<StateMachine> {
        fs::create_dir_all(dir)?;
        // Snapshots a crash interrupted before they were renamed into place.
        for e in fs::read_dir(dir)?.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("snapshot.") && name.ends_with(".tmp") {
                let _ = fs::remove_file(e.path());
            }
        }
        let mut applied = Applied::default();
        match fs::read(dir.join("snapshot.json")) {
            Ok(bytes) => {
                let snap: SnapshotFile = serde_json::from_slice(&bytes).map_err(io_err)?;
                if snap.version > STORAGE_VERSION {
                    return Err(io_err(format!(
                        "snapshot version {} is too new",
                        snap.version
                    )));
                }
                applied = snap.applied;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let newest = applied.last_applied;
        let applied_writes = applied.writes;
        Ok(StateMachine {
            applied: Arc::new(RwLock::new(applied)),
            dir: dir.to_path_buf(),
            snapshot_seq: Arc::new(Mutex::new(0)),
            snapshot_writes: Arc::new(AtomicU64::new(applied_writes)),
            snapshot_file: Arc::new(Mutex::new(newest)),
        })
    }

    /// Puts a snapshot of the state at `last` (which had applied `writes` writes) in place with
    /// `place`, unless a newer one is already there; returns whether it did. Serialised: a slow
    /// build must not overwrite a newer snapshot installed from the leader meanwhile.
    fn place_snapshot_file(
        &self,
        last: Option<LogId<NodeId>>,
        writes: u64,
        place: impl FnOnce(&Path) -> io::Result<()>,
    ) -> io::Result<bool> {
        let mut newest = self
            .snapshot_file
            .lock()
            .map_err(|_| io_err("snapshot lock poisoned"))?;
        if newest.is_some() && last < *newest {
            tracing::info!("a newer snapshot is already on disk; keeping it");
            return Ok(false);
        }
        place(&self.dir.join("snapshot.json"))?;
        *newest = last;
        self.snapshot_writes.store(writes, Ordering::Relaxed);
        Ok(true)
    }

    /// Writes a snapshot file from `bytes` (one received from the leader).
    fn write_snapshot_file(
        &self,
        last: Option<LogId<NodeId>>,
        bytes: &[u8],
        writes: u64,
    ) -> io::Result<()> {
        self.place_snapshot_file(last, writes, |path| write_atomic(path, bytes))
            .map(drop)
    }

    /// Makes the snapshot written to `tmp` the snapshot file (or removes it if a newer one is
    /// there).
    fn commit_snapshot_file(
        &self,
        last: Option<LogId<NodeId>>,
        tmp: &Path,
        writes: u64,
    ) -> io::Result<()> {
        let placed = File::open(tmp).and_then(|f| f.sync_all()).and_then(|()| {
            self.place_snapshot_file(last, writes, |path| {
                fs::rename(tmp, path)?;
                File::open(&self.dir)?.sync_all()
            })
        });
        if !matches!(placed, Ok(true)) {
            let _ = fs::remove_file(tmp);
        }
        placed.map(drop)
    }

    fn read(&self) -> Result<std::sync::RwLockReadGuard<'_, Applied>, StorageError<NodeId>> {
        self.applied
            .read()
            .map_err(|_| StorageIOError::read_state_machine(&io_err("poisoned")).into())
    }

    fn snapshot_from(
        &self,
        meta: SnapshotMeta<NodeId, Node>,
        bytes: Vec<u8>,
    ) -> Snapshot<TypeConfig> {
        Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        }
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        // Serialised straight from the shared state under the read lock: no copy of the whole
        // state (which doubled the master's memory at every snapshot). Applying waits for the
        // encoding; the file is written after the lock is released.
        let (tmp, meta, writes) = {
            let a = self.read()?;
            let seq = {
                let mut s = self
                    .snapshot_seq
                    .lock()
                    .map_err(|_| StorageIOError::read_state_machine(&io_err("poisoned")))?;
                *s += 1;
                *s
            };
            let snapshot_id = match a.last_applied {
                Some(id) => format!("{}-{}-{seq}", id.leader_id, id.index),
                None => format!("none-{seq}"),
            };
            let meta = SnapshotMeta {
                last_log_id: a.last_applied,
                last_membership: a.membership.clone(),
                snapshot_id,
            };
            let file = SnapshotFileRef {
                version: STORAGE_VERSION,
                meta: &meta,
                applied: &a,
            };
            // Encoded straight into the file: a buffer of the whole encoded state would be
            // larger than the state itself.
            let tmp = self.dir.join(format!("snapshot.{seq}.tmp"));
            let written = File::create(&tmp).and_then(|f| {
                let mut w = io::BufWriter::with_capacity(1 << 20, f);
                serde_json::to_writer(&mut w, &file)?;
                w.flush()
            });
            if let Err(e) = written {
                let _ = fs::remove_file(&tmp);
                return Err(StorageIOError::write_snapshot(None, &e).into());
            }
            (tmp, meta, a.writes)
        };
        self.commit_snapshot_file(meta.last_log_id, &tmp, writes)
            .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        // openraft 0.9 keeps only the meta of a snapshot it had built (core/sm/worker.rs): the
        // data is read from the file by `get_current_snapshot` when a follower needs it.
        Ok(self.snapshot_from(meta, Vec::new()))
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, Node>), StorageError<NodeId>> {
        let a = self.read()?;
        Ok((a.last_applied, a.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Reply>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut a = self
            .applied
            .write()
            .map_err(|_| StorageIOError::write_state_machine(&io_err("poisoned")))?;
        let mut replies = Vec::new();
        for e in entries {
            a.last_applied = Some(e.log_id);
            match e.payload {
                EntryPayload::Blank => replies.push(Reply(Ok(crate::state::MetaReplyKind::Meta(
                    crate::state::MetaReplyData::Done,
                )))),
                EntryPayload::Normal(cmd) => {
                    let cmd: Command = cmd;
                    a.writes += match &cmd.op {
                        crate::state::Op::Many(w) => w.len() as u64,
                        _ => 1,
                    };
                    replies.push(a.state.apply(&cmd));
                }
                EntryPayload::Membership(m) => {
                    a.membership = StoredMembership::new(Some(e.log_id), m);
                    replies.push(Reply(Ok(crate::state::MetaReplyKind::Meta(
                        crate::state::MetaReplyData::Done,
                    ))));
                }
            }
        }
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, Node>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let bytes = snapshot.into_inner();
        let file: SnapshotFile = serde_json::from_slice(&bytes)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        self.write_snapshot_file(meta.last_log_id, &bytes, file.applied.writes)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        let mut a = self
            .applied
            .write()
            .map_err(|_| StorageIOError::write_state_machine(&io_err("poisoned")))?;
        *a = file.applied;
        a.last_applied = meta.last_log_id;
        a.membership = meta.last_membership.clone();
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        match fs::read(self.dir.join("snapshot.json")) {
            Ok(bytes) => {
                let head: SnapshotHead = serde_json::from_slice(&bytes)
                    .map_err(|e| StorageIOError::read_snapshot(None, &e))?;
                Ok(Some(self.snapshot_from(head.meta, bytes)))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StorageIOError::read_snapshot(None, &e).into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::CommittedLeaderId;

    fn entry(index: u64) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    fn tempdir(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("tinydfs-log-{name}-{:08x}", rand::random::<u32>()))
    }

    /// A command entry at `index` creating bucket `name`.
    fn write(index: u64, op: crate::state::Op) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(Command {
                version: crate::state::COMMAND_VERSION,
                request_id: None,
                time_ms: 1,
                op,
            }),
        }
    }

    fn create(name: &str) -> crate::state::Op {
        crate::state::Op::Meta(tinydfs_proto::meta::MetaWrite::CreateBucket {
            bucket: name.into(),
            owner: "me".into(),
        })
    }

    #[tokio::test]
    async fn snapshots_count_writes_stream_to_their_file_and_reopen() {
        let dir = tempdir("snap");
        let mut sm = StateMachine::open(&dir).unwrap();
        let many = crate::state::Op::Many(
            ["a", "b", "c"]
                .iter()
                .enumerate()
                .map(|(i, n)| crate::state::Batched {
                    request_id: i as u128 + 1,
                    op: create(n),
                })
                .collect(),
        );
        sm.apply([write(1, many), write(2, create("d")), entry(3)])
            .await
            .unwrap();
        // A batch entry counts each of its writes; a blank entry none.
        assert_eq!(sm.read().unwrap().writes, 4);
        assert_eq!(sm.snapshot_writes.load(Ordering::Relaxed), 0);

        let built = sm.build_snapshot().await.unwrap();
        assert_eq!(built.meta.last_log_id.map(|l| l.index), Some(3));
        assert_eq!(sm.snapshot_writes.load(Ordering::Relaxed), 4);
        let names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["snapshot.json"], "no temporary file is left");

        let mut again = StateMachine::open(&dir).unwrap();
        {
            let a = again.read().unwrap();
            assert_eq!(a.writes, 4);
            assert_eq!(a.state.buckets.len(), 4);
        }
        assert_eq!(again.snapshot_writes.load(Ordering::Relaxed), 4);
        let current = again.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.meta, built.meta);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
