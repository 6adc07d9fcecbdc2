//! Chunks, leases and garbage, and restored states.

use super::*;

#[test]
fn chunks_commit_only_under_a_live_lease() {
    let mut s = bucket();
    let r = s.apply(&cmd(
        meta(MetaWrite::AcquireLease {
            holder: "gw".into(),
            ttl_ms: None,
        }),
        10,
    ));
    let Ok(MetaReplyKind::Meta(MetaReplyData::Lease { id, expires_ms })) = r.0 else {
        panic!("{r:?}");
    };
    // `bucket()` took lease 1.
    assert_eq!((id, expires_ms), (2, 10 + LEASE_TTL_MS));
    let commit = |chunk: ChunkId, t: u64| {
        cmd(
            meta(MetaWrite::PutObject {
                bucket: "b".into(),
                key: format!("k{t}"),
                condition: None,
                record: ObjectRecord {
                    chunks: vec![ChunkMeta {
                        id: chunk,
                        len: 1,
                        crc32c: 0,
                    }],
                    ..Default::default()
                },
            }),
            t,
        )
    };
    assert!(s.apply(&commit(ChunkId::in_lease(id), 20)).0.is_ok());
    // Renewed in time: still good later.
    assert!(s
        .apply(&cmd(
            meta(MetaWrite::RenewLease {
                lease: id,
                ttl_ms: None,
            }),
            30_000
        ))
        .0
        .is_ok());
    assert!(s.apply(&commit(ChunkId::in_lease(id), 80_000)).0.is_ok());
    // Expired: its chunks may be garbage already, so a commit of new ones is refused.
    let late = 30_000 + LEASE_TTL_MS + 1;
    assert_eq!(
        s.apply(&commit(ChunkId::in_lease(id), late)).0,
        Err(MetaError::NoSuchLease)
    );
    assert_eq!(
        s.apply(&cmd(
            meta(MetaWrite::RenewLease {
                lease: id,
                ttl_ms: None,
            }),
            late
        ))
        .0,
        Err(MetaError::NoSuchLease)
    );
    // A new lease gets a new id.
    let r = s.apply(&cmd(
        meta(MetaWrite::AcquireLease {
            holder: "gw".into(),
            ttl_ms: None,
        }),
        late,
    ));
    assert!(matches!(
        r.0,
        Ok(MetaReplyKind::Meta(MetaReplyData::Lease { id: 3, .. }))
    ));
}

#[test]
fn garbage_is_unreferenced_and_beyond_its_lease() {
    let mut s = bucket();
    put(&mut s, "k", 10);
    let live = cid(10);
    let pending = cid(99); // written under lease 1, not committed yet
    assert!(!s.is_garbage(&live));
    assert!(!s.is_garbage(&pending));
    // Replaced: unreferenced, but collected only once its lease is gone.
    put(&mut s, "k", 11);
    assert!(!s.chunks.contains_key(&live));
    assert!(!s.is_garbage(&live));
    // No lease at all (id 0): garbage once unreferenced. A lease id not issued yet in this
    // state may be live in a later one (a deposed leader's stale view): never garbage.
    assert!(s.is_garbage(&ChunkId(5)));
    assert!(!s.is_garbage(&ChunkId((7 << 96) | 5)));
    // The lease expires with the clock of the next applied command (a Tick when idle).
    assert!(!s.has_expired_lease(1000));
    assert!(s.has_expired_lease(1 + LEASE_TTL_MS));
    assert!(s.apply(&cmd(Op::Tick, 1 + LEASE_TTL_MS)).0.is_ok());
    assert!(!s.has_expired_lease(1 + LEASE_TTL_MS));
    assert!(s.is_garbage(&live));
    assert!(s.is_garbage(&pending));
    assert!(
        !s.is_garbage(&cid(11)),
        "a referenced chunk is never garbage"
    );
    // ...and the pending chunk can never be committed now.
    let late = s.apply(&cmd(
        meta(MetaWrite::PutObject {
            bucket: "b".into(),
            key: "late".into(),
            condition: None,
            record: ObjectRecord {
                chunks: vec![ChunkMeta {
                    id: pending,
                    len: 1,
                    crc32c: 0,
                }],
                ..Default::default()
            },
        }),
        2 + LEASE_TTL_MS,
    ));
    assert_eq!(late.0, Err(MetaError::NoSuchLease));
}

#[test]
fn a_restored_state_never_collects_chunks_of_leases_it_does_not_know() {
    let mut old = bucket();
    put(&mut old, "k", 10);
    let backup = old.clone();
    // After the backup the old cluster took lease 2 and committed an object under it.
    let later = ChunkId((2 << 96) | 5);
    let mut fresh = State::default();
    assert!(fresh
        .apply(&cmd(
            Op::Restore {
                state: Box::new(backup.clone())
            },
            20
        ))
        .0
        .is_ok());
    assert_eq!(fresh.object_count(), 1);
    assert!(fresh.chunks.contains_key(&cid(10)));
    // Far in the future, every old lease expired: the unknown chunk is still kept, a
    // replaced one from before the backup is not.
    put(&mut fresh, "k", 11);
    fresh.apply(&cmd(Op::Tick, 10 * LEASE_TTL_MS));
    assert!(!fresh.is_garbage(&later));
    assert!(
        !fresh.is_garbage(&cid(10)),
        "lease 1 was live at the backup"
    );
    assert!(fresh.is_garbage(&ChunkId(5)));
    // New leases come after the protected range, and their garbage is collected.
    let r = fresh.apply(&cmd(
        meta(MetaWrite::AcquireLease {
            holder: "gw".into(),
            ttl_ms: None,
        }),
        10 * LEASE_TTL_MS,
    ));
    let Ok(MetaReplyKind::Meta(MetaReplyData::Lease { id, .. })) = r.0 else {
        panic!("{r:?}");
    };
    let (start, end) = fresh.protected_leases.unwrap();
    assert!(start <= 1 && id >= end);
    fresh.apply(&cmd(Op::Tick, 20 * LEASE_TTL_MS));
    assert!(fresh.is_garbage(&ChunkId((u128::from(id) << 96) | 1)));
    // A second restore, or one into a named cluster, is refused.
    let again = fresh.apply(&cmd(
        Op::Restore {
            state: Box::new(backup),
        },
        30,
    ));
    assert!(again.0.is_err());
}

#[test]
fn a_backup_restored_as_a_snapshot_is_the_state_an_old_restore_entry_gives() {
    let mut old = bucket();
    put(&mut old, "k", 10);
    old.apply(&cmd(
        meta(MetaWrite::AcquireLease {
            holder: "gw".into(),
            ttl_ms: None,
        }),
        11,
    ));
    old.cluster_id = "c1".into();
    old.retired_masters.insert(7);
    // An old log's `Op::Restore` entry, applied at time 50...
    let mut by_entry = State::default();
    assert!(by_entry
        .apply(&cmd(
            Op::Restore {
                state: Box::new(old.clone())
            },
            50
        ))
        .0
        .is_ok());
    // ...and the snapshot a restore now starts the group with, made at the same time.
    let backup = Backup {
        version: BACKUP_VERSION,
        taken_ms: 12,
        applied_index: 9,
        state: old,
    };
    let seeded = backup.into_restored_state(50);
    assert_eq!(
        serde_json::to_value(&seeded).unwrap(),
        serde_json::to_value(&by_entry).unwrap()
    );
    assert_eq!(
        seeded.cluster_id, "c1",
        "the restored group keeps the cluster id"
    );
    assert!(
        seeded.protected_leases.is_some(),
        "and protects unknown leases"
    );
    assert!(seeded.retired_masters.is_empty());
}
