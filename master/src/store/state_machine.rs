//! The state machine ([`StateMachine`]): the applied [`State`] in memory, shared with the read
//! path, and its snapshots.
//!
//! Snapshots are the checkpoints: the whole [`State`] as a versioned JSON document, written to a
//! temporary file, fsynced and renamed into place. Building, installing and reading one run on
//! the blocking pool (see the `store` module doc); so does applying while a build holds the state.
//!
//! A new group restored from a backup starts from a snapshot too ([`StateMachine::seed`]): the
//! restored state is written as the snapshot at the log id of a group's first entry, so it never
//! goes through the log (where a record is bounded) and members get it as a snapshot.

use super::{blocking, io_err, write_atomic, Node, NodeId, STORAGE_VERSION};
use crate::raft::TypeConfig;
use crate::state::{Command, Reply, State};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, LogId, Membership, OptionalSend, RaftSnapshotBuilder, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, TryLockError};

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
    /// The highest feature level this release applies ([`StateMachine::limit_features`]): a
    /// state or an entry above it stops this master rather than being applied differently.
    capability: u32,
    /// The group's feature level as applied here, readable without the state lock.
    pub feature_level: Arc<AtomicU32>,
}

/// The snapshot format version of a state whose feature level rose above 0: releases before
/// feature levels know only [`STORAGE_VERSION`], and refuse such a snapshot at start rather
/// than apply writes they do not understand.
const LEVELLED_SNAPSHOT_VERSION: u16 = STORAGE_VERSION + 1;

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
                if snap.version > LEVELLED_SNAPSHOT_VERSION {
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
        let level = applied.state.feature_level;
        Ok(StateMachine {
            applied: Arc::new(RwLock::new(applied)),
            dir: dir.to_path_buf(),
            snapshot_seq: Arc::new(Mutex::new(0)),
            snapshot_writes: Arc::new(AtomicU64::new(applied_writes)),
            snapshot_file: Arc::new(Mutex::new(newest)),
            capability: crate::features::FEATURE_LEVEL,
            feature_level: Arc::new(AtomicU32::new(level)),
        })
    }

    /// Applies feature levels up to `capability` only (a release older than this one, or one
    /// playing it); fails if the loaded state is above it already.
    pub fn limit_features(mut self, capability: u32) -> io::Result<StateMachine> {
        self.capability = capability;
        check_level(self.feature_level.load(Ordering::Relaxed), capability).map_err(io_err)?;
        Ok(self)
    }

    /// Whether nothing was ever applied here and no snapshot is on disk (a new data folder).
    pub fn is_empty(&self) -> io::Result<bool> {
        let applied = self
            .applied
            .read()
            .map_err(|_| io_err("poisoned"))?
            .last_applied;
        Ok(applied.is_none() && !self.dir.join("snapshot.json").exists())
    }

    /// Starts a new group of `members` that holds `state` (a restored backup); called before
    /// Raft starts, on a new data folder. The state is written as the snapshot at the log id
    /// `Raft::initialize` gives a group's first entry (index 0), with `members` as its
    /// membership: openraft then starts as a group that has applied that entry (it purges the
    /// log up to it), elects a leader among `members`, and sends the snapshot to every member
    /// that needs it. The state never goes through the log, whose records are bounded. Blocking
    /// (the state is encoded into its file).
    pub fn seed(&self, state: State, members: BTreeMap<NodeId, Node>) -> io::Result<()> {
        let first = LogId::default();
        let membership = StoredMembership::new(Some(first), Membership::from(members));
        let applied = Applied {
            last_applied: Some(first),
            membership: membership.clone(),
            state,
            writes: 0,
        };
        let seq = self.next_seq()?;
        let meta = SnapshotMeta {
            last_log_id: Some(first),
            last_membership: membership,
            snapshot_id: format!("restored-{seq}"),
        };
        let tmp = self.encode_snapshot(seq, &meta, &applied)?;
        self.commit_snapshot_file(meta.last_log_id, &tmp, 0)?;
        *self.applied.write().map_err(|_| io_err("poisoned"))? = applied;
        Ok(())
    }

    fn next_seq(&self) -> io::Result<u64> {
        let mut s = self.snapshot_seq.lock().map_err(|_| io_err("poisoned"))?;
        *s += 1;
        Ok(*s)
    }

    /// Encodes a snapshot of `applied` straight into a temporary file and returns its path: a
    /// buffer of the whole encoded state would be larger than the state itself.
    fn encode_snapshot(
        &self,
        seq: u64,
        meta: &SnapshotMeta<NodeId, Node>,
        applied: &Applied,
    ) -> io::Result<PathBuf> {
        let version = if applied.state.feature_level > 0 {
            LEVELLED_SNAPSHOT_VERSION
        } else {
            STORAGE_VERSION
        };
        let file = SnapshotFileRef {
            version,
            meta,
            applied,
        };
        let tmp = self.dir.join(format!("snapshot.{seq}.tmp"));
        let written = File::create(&tmp).and_then(|f| {
            let mut w = io::BufWriter::with_capacity(1 << 20, f);
            serde_json::to_writer(&mut w, &file)?;
            w.flush()
        });
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        Ok(tmp)
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

    /// Builds a snapshot file of the current state (blocking).
    fn build_snapshot_file(&self) -> io::Result<SnapshotMeta<NodeId, Node>> {
        // Serialised straight from the shared state under the read lock: no copy of the whole
        // state (which doubled the master's memory at every snapshot). Applying waits for the
        // encoding (on the blocking pool); the file is synced after the lock is released.
        let (tmp, meta, writes) = {
            let a = self.applied.read().map_err(|_| io_err("poisoned"))?;
            let seq = self.next_seq()?;
            let snapshot_id = match a.last_applied {
                Some(id) => format!("{}-{}-{seq}", id.leader_id, id.index),
                None => format!("none-{seq}"),
            };
            let meta = SnapshotMeta {
                last_log_id: a.last_applied,
                last_membership: a.membership.clone(),
                snapshot_id,
            };
            let tmp = self.encode_snapshot(seq, &meta, &a)?;
            (tmp, meta, a.writes)
        };
        self.commit_snapshot_file(meta.last_log_id, &tmp, writes)?;
        Ok(meta)
    }

    /// Installs a snapshot received from the leader (blocking: decodes and writes it).
    fn install_snapshot_file(
        &self,
        meta: SnapshotMeta<NodeId, Node>,
        bytes: Vec<u8>,
    ) -> Result<(), StorageError<NodeId>> {
        let file: SnapshotFile = serde_json::from_slice(&bytes)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        check_level(file.applied.state.feature_level, self.capability)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &io_err(e)))?;
        self.write_snapshot_file(meta.last_log_id, &bytes, file.applied.writes)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        drop(bytes);
        let mut a = self
            .applied
            .write()
            .map_err(|_| StorageIOError::write_state_machine(&io_err("poisoned")))?;
        *a = file.applied;
        a.last_applied = meta.last_log_id;
        a.membership = meta.last_membership;
        self.feature_level
            .store(a.state.feature_level, Ordering::Relaxed);
        Ok(())
    }

    /// The snapshot file, if there is one (blocking: reads it whole).
    fn read_snapshot_file(&self) -> io::Result<Option<Snapshot<TypeConfig>>> {
        match fs::read(self.dir.join("snapshot.json")) {
            Ok(bytes) => {
                let head: SnapshotHead = serde_json::from_slice(&bytes).map_err(io_err)?;
                Ok(Some(self.snapshot_from(head.meta, bytes)))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Fails when a group at feature level `level` needs more than a release that applies up to
/// `capability`.
fn check_level(level: u32, capability: u32) -> Result<(), String> {
    if level > capability {
        return Err(format!(
            "the master group is at feature level {level} and this release applies up to \
             {capability}: run a release at least as new as the group's"
        ));
    }
    Ok(())
}

/// Applies `entries` to `a` (with the state's write lock held). Stops at an entry that raises
/// the feature level above `capability`: what follows it may not mean to this release what it
/// means to the others.
fn apply_entries(
    a: &mut Applied,
    entries: Vec<Entry<TypeConfig>>,
    capability: u32,
) -> Result<Vec<Reply>, String> {
    let mut replies = Vec::with_capacity(entries.len());
    for e in entries {
        if let EntryPayload::Normal(Command {
            op: crate::state::Op::SetFeatureLevel { level },
            ..
        }) = &e.payload
        {
            check_level(*level, capability)?;
        }
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

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let this = self.clone();
        let meta = blocking(move || this.build_snapshot_file())
            .await
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
        let entries: Vec<_> = entries.into_iter().collect();
        let poisoned = || StorageIOError::write_state_machine(&io_err("poisoned"));
        let (capability, level) = (self.capability, self.feature_level.clone());
        let apply = move |a: &mut Applied| {
            let replies = apply_entries(a, entries, capability);
            level.store(a.state.feature_level, Ordering::Relaxed);
            replies.map_err(|e| {
                tracing::error!("{e}");
                io_err(e)
            })
        };
        // Nearly always the state is free: apply here, without a trip to the blocking pool.
        match self.applied.try_write() {
            Ok(mut a) => {
                return apply(&mut a).map_err(|e| StorageIOError::write_state_machine(&e).into())
            }
            Err(TryLockError::Poisoned(_)) => return Err(poisoned().into()),
            Err(TryLockError::WouldBlock) => {}
        }
        // A snapshot build is encoding the state (or a reader holds it): wait for it on the
        // blocking pool, not on a runtime worker.
        let applied = self.applied.clone();
        blocking(move || {
            let mut a = applied.write().map_err(|_| io_err("poisoned"))?;
            apply(&mut a)
        })
        .await
        .map_err(|e| StorageIOError::write_state_machine(&e).into())
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
        let (this, meta_owned) = (self.clone(), meta.clone());
        let bytes = snapshot.into_inner();
        blocking(move || Ok(this.install_snapshot_file(meta_owned, bytes)))
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let this = self.clone();
        blocking(move || this.read_snapshot_file())
            .await
            .map_err(|e| StorageIOError::read_snapshot(None, &e).into())
    }
}

#[cfg(test)]
mod tests {
    use super::super::assert_runs_off_the_runtime;
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
    async fn a_release_below_the_groups_feature_level_stops_rather_than_apply() {
        let raise = |index| write(index, crate::state::Op::SetFeatureLevel { level: 1 });
        // A release that applies level 0 only: the entry raising the level fails the apply
        // (which stops Raft), and nothing after it is applied.
        let dir = tempdir("level-old");
        let mut old = StateMachine::open(&dir).unwrap().limit_features(0).unwrap();
        let applied = old.apply([write(1, create("a")), raise(2), write(3, create("b"))]);
        assert!(applied.await.is_err());
        assert!(!old.read().unwrap().state.buckets.contains_key("b"));
        let _ = std::fs::remove_dir_all(&dir);

        // This release applies it; its snapshot carries the newer version, and a release
        // below the level refuses to open it.
        let dir = tempdir("level-new");
        let mut sm = StateMachine::open(&dir).unwrap();
        sm.apply([write(1, create("a")), raise(2)]).await.unwrap();
        assert_eq!(sm.feature_level.load(Ordering::Relaxed), 1);
        sm.build_snapshot().await.unwrap();
        let file: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("snapshot.json")).unwrap()).unwrap();
        assert_eq!(file["version"], LEVELLED_SNAPSHOT_VERSION);
        assert!(StateMachine::open(&dir).unwrap().limit_features(0).is_err());
        let again = StateMachine::open(&dir).unwrap().limit_features(1).unwrap();
        assert_eq!(again.feature_level.load(Ordering::Relaxed), 1);
        let _ = std::fs::remove_dir_all(&dir);
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

    #[test]
    fn building_and_installing_snapshots_leave_the_runtime_thread_free() {
        let dir = tempdir("snapoffrt");
        let sm = StateMachine::open(&dir).unwrap();
        // A build waits for the state's read lock while the test holds the write lock.
        let mut s = sm.clone();
        assert_runs_off_the_runtime(sm.applied.write().unwrap(), move || async move {
            s.build_snapshot().await.unwrap();
        });
        let bytes = std::fs::read(dir.join("snapshot.json")).unwrap();
        let mut s = sm.clone();
        let meta = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(s.get_current_snapshot())
            .unwrap()
            .unwrap()
            .meta;
        // Installing decodes and writes on the blocking pool, then waits for the write lock.
        let mut s = sm.clone();
        assert_runs_off_the_runtime(sm.applied.read().unwrap(), move || async move {
            s.install_snapshot(&meta, Box::new(Cursor::new(bytes)))
                .await
                .unwrap();
        });
        // Applying while a build holds the state waits on the blocking pool too.
        let mut s = sm.clone();
        assert_runs_off_the_runtime(sm.applied.read().unwrap(), move || async move {
            s.apply([entry(1)]).await.unwrap();
        });
        assert_eq!(sm.read().unwrap().last_applied.map(|l| l.index), Some(1));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_seeded_state_is_the_first_snapshot_of_a_new_group() {
        let dir = tempdir("seed");
        let sm = StateMachine::open(&dir).unwrap();
        assert!(sm.is_empty().unwrap());
        let state = State {
            cluster_id: "c1".into(),
            ..State::default()
        };
        let members: BTreeMap<NodeId, Node> = [(1, Node::new("a:1")), (2, Node::new("b:2"))]
            .into_iter()
            .collect();
        sm.seed(state, members).unwrap();
        assert!(!sm.is_empty().unwrap());
        // Reopened as a restart (or openraft at start) sees it: applied at the log id of a
        // group's first entry, with the members as voters.
        let mut again = StateMachine::open(&dir).unwrap();
        assert!(!again.is_empty().unwrap());
        let (last, membership) = again.applied_state().await.unwrap();
        assert_eq!(last, Some(LogId::default()));
        assert_eq!(membership.log_id(), &Some(LogId::default()));
        assert_eq!(
            membership.membership().voter_ids().collect::<Vec<_>>(),
            [1, 2]
        );
        assert_eq!(again.read().unwrap().state.cluster_id, "c1");
        let current = again.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.meta.last_log_id, Some(LogId::default()));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
