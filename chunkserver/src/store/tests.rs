//! Tests of the chunk store over real folders: writes, verified reads, disk failures, the
//! capacity, the scrubber, packing and compaction.

use super::*;
use crate::image::IMAGE_HEADER_LEN;
use std::fs;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Duration;
use tinydfs_proto::batch::BatchEntry;
use tinydfs_proto::BLOCK_SIZE;
use tokio::sync::mpsc;

fn tempdir(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("tinydfs-store-{name}-{}", rand::random::<u32>()));
    fs::create_dir_all(&p).unwrap();
    p
}

/// A store that keeps every chunk in a file of its own (the tests below packing's).
fn open_files(disks: &[PathBuf], capacity: u64) -> Result<ChunkStore, StoreError> {
    let files_only = PackConfig {
        max_chunk: 0,
        ..PackConfig::default()
    };
    ChunkStore::open_with(disks, capacity, files_only)
}

fn data_path(store: &ChunkStore, id: ChunkId) -> Option<PathBuf> {
    store.data_location(id).map(|(path, _)| path)
}

fn pattern(n: usize, seed: u32) -> Vec<u8> {
    (0..n as u32)
        .map(|i| (i.wrapping_mul(7).wrapping_add(seed) % 251) as u8)
        .collect()
}

fn write(
    store: &ChunkStore,
    id: ChunkId,
    data: &[u8],
    finish: bool,
) -> Result<(u64, u32), StoreError> {
    let (tx, rx) = mpsc::channel(1024);
    for piece in data.chunks(7000) {
        tx.try_send(WriteMsg::Data(Bytes::copy_from_slice(piece)))
            .unwrap();
    }
    if finish {
        tx.try_send(WriteMsg::Finish {
            len: data.len() as u64,
            crc32c: crc32c::crc32c(data),
        })
        .unwrap();
    }
    drop(tx);
    store.write(id, rx)
}

fn read(store: &ChunkStore, id: ChunkId, off: u64, len: u64) -> Result<Vec<u8>, String> {
    let (tx, mut rx) = mpsc::channel(4096);
    store
        .read(id, off, Some(len), tx)
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    while let Ok(b) = rx.try_recv() {
        out.extend_from_slice(&b.map_err(|e| e.to_string())?);
    }
    Ok(out)
}

/// Which of `disks` holds chunk `id`.
fn disk_of(store: &ChunkStore, disks: &[PathBuf], id: ChunkId) -> Option<usize> {
    let path = data_path(store, id)?;
    disks.iter().position(|d| path.starts_with(d))
}

fn temp_files(disk: &Path) -> usize {
    fs::read_dir(disk.join("tmp")).unwrap().count()
}

fn flip(path: &Path, at: u64) {
    let mut bytes = fs::read(path).unwrap();
    bytes[at as usize] ^= 1;
    fs::write(path, bytes).unwrap();
}

#[test]
fn writes_reads_ranges_and_detects_corruption() {
    let dir = tempdir("rw");
    let store = open_files(std::slice::from_ref(&dir), 0).unwrap();
    let data = pattern(200_000, 0);
    let id = ChunkId(42);
    let (len, crc) = write(&store, id, &data, true).unwrap();
    assert_eq!(len, data.len() as u64);
    assert_eq!(crc, crc32c::crc32c(&data));
    for (off, n) in [
        (0u64, 1u64),
        (65_535, 2),
        (65_536, 65_536),
        (1000, 150_000),
        (199_999, 1),
    ] {
        assert_eq!(
            read(&store, id, off, n).unwrap(),
            &data[off as usize..(off + n) as usize]
        );
    }
    assert!(read(&store, id, 199_999, 2).is_err());
    // A reopened store finds the chunk; an abandoned write leaves nothing.
    assert!(matches!(
        write(&store, ChunkId(43), &data, false),
        Err(StoreError::Aborted)
    ));
    assert_eq!(temp_files(&dir), 0);
    let store = open_files(std::slice::from_ref(&dir), 0).unwrap();
    assert_eq!(store.meta(id), Some((len, crc)));
    assert_eq!(store.meta(ChunkId(43)), None);
    // Flip one byte in the second block: reads of the first block still work; a read of the
    // second fails, and the replica is dropped and reported lost (the master copies it again).
    let path = data_path(&store, id).unwrap();
    flip(&path, IMAGE_HEADER_LEN + 70_000);
    assert_eq!(read(&store, id, 0, 100).unwrap(), &data[..100]);
    assert!(store.lost().1.is_empty());
    assert!(read(&store, id, 65_536, 10).is_err());
    assert_eq!(store.meta(id), None);
    assert!(!path.exists());
    assert_eq!(store.lost().1, vec![id]);
    assert!(!store.is_failed(0), "corruption is not a disk failure");
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn spreads_chunks_over_disks_and_reports_them() {
    let (a, b) = (tempdir("spread-a"), tempdir("spread-b"));
    let disks = vec![a.clone(), b.clone()];
    let store = open_files(&disks, 0).unwrap();
    write(&store, ChunkId(1), &pattern(300_000, 1), true).unwrap();
    assert_eq!(disk_of(&store, &disks, ChunkId(1)), Some(0));
    // Same file system, same free space: the folder holding less gets the next chunks
    // until it holds more.
    write(&store, ChunkId(2), &pattern(200_000, 2), true).unwrap();
    write(&store, ChunkId(3), &pattern(150_000, 3), true).unwrap();
    assert_eq!(disk_of(&store, &disks, ChunkId(2)), Some(1));
    assert_eq!(disk_of(&store, &disks, ChunkId(3)), Some(1));
    write(&store, ChunkId(4), &pattern(10, 4), true).unwrap();
    assert_eq!(disk_of(&store, &disks, ChunkId(4)), Some(0));
    let usage = store.usage();
    assert_eq!(usage.disks.len(), 2);
    assert_eq!((usage.disks[0].chunks, usage.disks[1].chunks), (2, 2));
    assert!(usage.disks.iter().all(|d| !d.failed && d.capacity > 0));
    // Both folders share one file system: its space is counted once.
    assert_eq!(usage.capacity, usage.disks[0].capacity);
    // A reopened store finds every chunk on its disk.
    drop(store);
    let store = open_files(&disks, 0).unwrap();
    assert_eq!(store.count(), 4);
    assert_eq!(disk_of(&store, &disks, ChunkId(2)), Some(1));
    assert_eq!(
        read(&store, ChunkId(3), 0, 150_000).unwrap(),
        pattern(150_000, 3)
    );
    fs::remove_dir_all(a).unwrap();
    fs::remove_dir_all(b).unwrap();
}

#[test]
fn a_replaced_disk_folder_fails_and_writes_go_to_the_other_disk() {
    let (a, b) = (tempdir("fail-a"), tempdir("fail-b"));
    let disks = vec![a.clone(), b.clone()];
    let store = open_files(&disks, 0).unwrap();
    let x = pattern(100_000, 5);
    write(&store, ChunkId(1), &x, true).unwrap();
    write(&store, ChunkId(2), &pattern(150_000, 6), true).unwrap();
    assert_eq!(disk_of(&store, &disks, ChunkId(1)), Some(0));
    assert_eq!(disk_of(&store, &disks, ChunkId(2)), Some(1));
    // The disk goes away: its folder is now a regular file.
    fs::remove_dir_all(&a).unwrap();
    fs::write(&a, b"not a folder").unwrap();
    // Disk 0 holds less and would get the next chunk; it is found failed and skipped.
    let z = pattern(70_000, 7);
    write(&store, ChunkId(3), &z, true).unwrap();
    assert_eq!(disk_of(&store, &disks, ChunkId(3)), Some(1));
    assert!(store.is_failed(0));
    assert!(!store.is_failed(1));
    assert_eq!(store.lost().1, vec![ChunkId(1)]);
    assert_eq!(store.meta(ChunkId(1)), None);
    let mut held: Vec<u128> = store.report().iter().map(|c| c.id.0).collect();
    held.sort_unstable();
    assert_eq!(held, vec![2, 3]);
    assert!(read(&store, ChunkId(1), 0, 10).is_err());
    assert_eq!(read(&store, ChunkId(3), 0, 70_000).unwrap(), z);
    let usage = store.usage();
    assert!(usage.disks[0].failed);
    assert_eq!(usage.disks[0].chunks, 0);
    assert_eq!(usage.disks[1].chunks, 2);
    assert_eq!(temp_files(&b), 0);
    // The last disk goes too: writes fail with a clear error.
    fs::remove_dir_all(&b).unwrap();
    assert!(matches!(
        write(&store, ChunkId(4), &z, true),
        Err(StoreError::NoDisk)
    ));
    let mut lost = store.lost().1;
    lost.sort_unstable_by_key(|id| id.0);
    assert_eq!(lost, vec![ChunkId(1), ChunkId(2), ChunkId(3)]);
    assert_eq!(store.count(), 0);
    fs::remove_file(a).unwrap();
}

#[test]
fn a_removed_chunks_tree_is_found_by_reads_and_the_scrubber() {
    let go = AtomicBool::new(false);
    let (a, b) = (tempdir("gone-a"), tempdir("gone-b"));
    let disks = vec![a.clone(), b.clone()];
    let store = open_files(&disks, 0).unwrap();
    write(&store, ChunkId(1), &pattern(1000, 1), true).unwrap();
    write(&store, ChunkId(2), &pattern(1000, 2), true).unwrap();
    assert_eq!(disk_of(&store, &disks, ChunkId(2)), Some(1));
    fs::remove_dir_all(a.join("chunks")).unwrap();
    assert_eq!(store.scrub_chunk(ChunkId(1), 0, &go), ScrubOutcome::Lost);
    assert!(store.is_failed(0));
    assert_eq!(store.lost().1, vec![ChunkId(1)]);
    assert_eq!(store.scrub_chunk(ChunkId(2), 0, &go), ScrubOutcome::Good);
    assert_eq!(store.scrub_chunk(ChunkId(1), 0, &go), ScrubOutcome::Skipped);
    assert_eq!(store.scrub_counters(), (1, 0));

    // The same found by a read; a write after it is not confused either.
    fs::remove_dir_all(b.join("chunks")).unwrap();
    assert!(read(&store, ChunkId(2), 0, 10).is_err());
    assert!(store.is_failed(1));
    assert!(matches!(
        write(&store, ChunkId(3), b"x", true),
        Err(StoreError::NoDisk)
    ));
    fs::remove_dir_all(a).unwrap();
    fs::remove_dir_all(b).unwrap();
}

#[test]
fn a_vanished_chunk_file_is_lost_but_its_disk_is_fine() {
    let go = AtomicBool::new(false);
    let dir = tempdir("vanished");
    let store = open_files(std::slice::from_ref(&dir), 0).unwrap();
    write(&store, ChunkId(1), &pattern(1000, 1), true).unwrap();
    write(&store, ChunkId(2), &pattern(1000, 2), true).unwrap();
    fs::remove_file(data_path(&store, ChunkId(1)).unwrap()).unwrap();
    assert_eq!(store.scrub_chunk(ChunkId(1), 0, &go), ScrubOutcome::Lost);
    assert!(!store.is_failed(0));
    let (mark, lost) = store.lost();
    assert_eq!(lost, vec![ChunkId(1)]);
    // A loss after the heartbeat was built stays queued when that heartbeat is acknowledged.
    fs::remove_file(data_path(&store, ChunkId(2)).unwrap()).unwrap();
    assert!(read(&store, ChunkId(2), 0, 1).is_err());
    store.ack_lost(mark);
    assert_eq!(store.lost().1, vec![ChunkId(2)]);
    // Copied here again: no longer lost.
    write(&store, ChunkId(2), &pattern(1000, 2), true).unwrap();
    assert!(store.lost().1.is_empty());
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_capacity_refuses_a_write_cleanly() {
    let dir = tempdir("capacity");
    let store = open_files(std::slice::from_ref(&dir), 300_000).unwrap();
    let first = pattern(200_000, 1);
    write(&store, ChunkId(1), &first, true).unwrap();
    let usage = store.usage();
    assert_eq!(usage.capacity, 300_000);
    assert_eq!(usage.free, 100_000);
    let err = write(&store, ChunkId(2), &pattern(200_000, 2), true).unwrap_err();
    assert!(matches!(err, StoreError::NoSpace(_)), "{err}");
    assert!(!err.to_string().contains('\n'));
    // Nothing recorded, no temporary file left, the disk still in service and the earlier
    // chunk intact.
    assert_eq!(store.meta(ChunkId(2)), None);
    assert_eq!(temp_files(&dir), 0);
    assert!(!store.is_failed(0));
    assert!(store.lost().1.is_empty());
    assert_eq!(read(&store, ChunkId(1), 0, 200_000).unwrap(), first);
    assert_eq!(
        store.usage().free,
        100_000,
        "the refused write's bytes are released"
    );
    // What fits still goes in.
    write(&store, ChunkId(3), &pattern(100_000, 3), true).unwrap();
    assert_eq!(store.usage().free, 0);
    assert!(matches!(
        write(&store, ChunkId(4), b"y", true),
        Err(StoreError::NoSpace(_))
    ));
    // Deleting gives the space back.
    store.delete(ChunkId(1)).unwrap();
    assert_eq!(store.usage().free, 200_000);
    write(&store, ChunkId(4), b"y", true).unwrap();
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_scrubber_finds_corruption_and_drops_the_replica() {
    let go = AtomicBool::new(false);
    let dir = tempdir("scrub");
    let store = open_files(std::slice::from_ref(&dir), 0).unwrap();
    let data = pattern(200_000, 9);
    for id in 1..=3 {
        write(&store, ChunkId(id), &data, true).unwrap();
    }
    // Chunk 1: one flipped data byte.
    let p1 = data_path(&store, ChunkId(1)).unwrap();
    flip(&p1, IMAGE_HEADER_LEN + 130_000);
    // Chunk 2: a flipped byte whose block CRC was fixed up, so only the whole-chunk CRC
    // (in the footer) can tell.
    let p2 = data_path(&store, ChunkId(2)).unwrap();
    let mut bytes = fs::read(&p2).unwrap();
    bytes[(IMAGE_HEADER_LEN + 5) as usize] ^= 1;
    let block0 =
        crc32c::crc32c(&bytes[IMAGE_HEADER_LEN as usize..(IMAGE_HEADER_LEN as usize + BLOCK_SIZE)]);
    let table = (IMAGE_HEADER_LEN + data.len() as u64) as usize;
    bytes[table..table + 4].copy_from_slice(&block0.to_le_bytes());
    fs::write(&p2, bytes).unwrap();

    assert_eq!(store.scrub_chunk(ChunkId(1), 0, &go), ScrubOutcome::Corrupt);
    assert_eq!(store.scrub_chunk(ChunkId(2), 0, &go), ScrubOutcome::Corrupt);
    // Chunk 3 is good and is read at the given rate: 200 kB at 1 MB/s takes 0.2 s.
    let started = Instant::now();
    assert_eq!(
        store.scrub_chunk(ChunkId(3), 1_000_000, &go),
        ScrubOutcome::Good
    );
    assert!(started.elapsed() >= Duration::from_millis(190));
    assert_eq!(store.scrub_counters(), (3, 2));
    // A stopped scrub gives up at once, even at a crawling rate, and judges nothing.
    let started = Instant::now();
    let stop = AtomicBool::new(true);
    assert_eq!(
        store.scrub_chunk(ChunkId(3), 1, &stop),
        ScrubOutcome::Skipped
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(store.scrub_counters(), (3, 2));
    assert!(!p1.exists() && !p2.exists());
    assert_eq!(
        (store.meta(ChunkId(1)), store.meta(ChunkId(2))),
        (None, None)
    );
    assert_eq!(store.lost().1, vec![ChunkId(1), ChunkId(2)]);
    assert_eq!(store.report().len(), 1);
    assert!(!store.is_failed(0));
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn concurrent_writes_of_one_id_keep_one_chunk() {
    let (a, b) = (tempdir("twice-a"), tempdir("twice-b"));
    let disks = vec![a.clone(), b.clone()];
    let store = open_files(&disks, 0).unwrap();
    let data = pattern(300_000, 4);
    let results: Vec<_> = std::thread::scope(|s| {
        let w: Vec<_> = (0..4)
            .map(|_| s.spawn(|| write(&store, ChunkId(7), &data, true)))
            .collect();
        w.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let want = (data.len() as u64, crc32c::crc32c(&data));
    assert!(results.iter().all(|r| r.as_ref().ok() == Some(&want)));
    assert_eq!(store.count(), 1);
    // Exactly one file, whatever disk each write was given.
    let name = ChunkId(7).to_string();
    let files = disks
        .iter()
        .filter(|d| d.join("chunks/00/00").join(&name).exists())
        .count();
    assert_eq!(files, 1);
    // A different chunk under the same id is refused.
    assert!(matches!(
        write(&store, ChunkId(7), b"other", true),
        Err(StoreError::Corrupt(..))
    ));
    assert_eq!(temp_files(&a) + temp_files(&b), 0);
    fs::remove_dir_all(a).unwrap();
    fs::remove_dir_all(b).unwrap();
}

#[test]
fn a_chunk_deleted_while_read_streams_to_the_end() {
    let dir = tempdir("delete-read");
    let store = open_files(std::slice::from_ref(&dir), 0).unwrap();
    let data = pattern(300_000, 3);
    write(&store, ChunkId(1), &data, true).unwrap();
    let (tx, mut rx) = mpsc::channel(1);
    std::thread::scope(|s| {
        let reader = s.spawn(|| store.read(ChunkId(1), 0, None, tx));
        // The first block is out: the reader has the file open.
        let mut got = rx.blocking_recv().unwrap().unwrap().to_vec();
        store.delete(ChunkId(1)).unwrap();
        while let Some(b) = rx.blocking_recv() {
            got.extend_from_slice(&b.unwrap());
        }
        assert!(reader.join().unwrap().is_ok());
        assert_eq!(got, data);
    });
    assert!(matches!(
        store.delete(ChunkId(1)),
        Err(StoreError::NotFound(_))
    ));
    assert!(read(&store, ChunkId(1), 0, 1).is_err());
    assert!(store.lost().1.is_empty(), "a deleted chunk is not lost");
    assert_eq!(store.delete_all(&[ChunkId(1), ChunkId(9)]), 0);
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_broken_disk_at_start_is_marked_failed() {
    let a = tempdir("start-a");
    let broken = tempdir("start-b").join("file");
    fs::write(&broken, b"not a folder").unwrap();
    let disks = vec![broken.clone(), a.clone()];
    let store = open_files(&disks, 0).unwrap();
    assert!(store.is_failed(0));
    write(&store, ChunkId(1), b"abc", true).unwrap();
    assert_eq!(disk_of(&store, &disks, ChunkId(1)), Some(1));
    assert!(store.usage().disks[0].failed);
    assert!(matches!(
        open_files(std::slice::from_ref(&broken), 0),
        Err(StoreError::NoDisk)
    ));
    fs::remove_dir_all(a).unwrap();
    fs::remove_dir_all(broken.parent().unwrap()).unwrap();
}

fn packing(max_chunk: u64, file_size: u64) -> PackConfig {
    PackConfig {
        max_chunk,
        file_size,
    }
}

#[test]
fn small_chunks_are_packed_read_verified_and_survive_a_restart() {
    let dir = tempdir("packed");
    let disks = std::slice::from_ref(&dir);
    let cfg = packing(100_000, pack::DEFAULT_FILE_SIZE);
    let store = ChunkStore::open_with(disks, 0, cfg).unwrap();
    let small = pattern(4096, 1);
    let two_blocks = pattern(90_000, 2);
    let large = pattern(150_000, 3);
    write(&store, ChunkId(1), &small, true).unwrap();
    write(&store, ChunkId(2), &two_blocks, true).unwrap();
    write(&store, ChunkId(3), &large, true).unwrap();
    write(&store, ChunkId(4), &pattern(10, 4), true).unwrap();
    // Unfinished writes leave nothing.
    assert!(matches!(
        write(&store, ChunkId(5), &pattern(100, 5), false),
        Err(StoreError::Aborted)
    ));
    let in_pack = |store: &ChunkStore, id| {
        data_path(store, ChunkId(id)).is_some_and(|p| p.starts_with(dir.join("packs")))
    };
    assert!(in_pack(&store, 1) && in_pack(&store, 2) && !in_pack(&store, 3));
    assert_eq!(read(&store, ChunkId(2), 0, 90_000).unwrap(), two_blocks);
    assert_eq!(
        read(&store, ChunkId(2), 65_000, 1_000).unwrap(),
        &two_blocks[65_000..66_000]
    );
    assert!(read(&store, ChunkId(2), 89_000, 2_000).is_err());
    assert_eq!(store.count(), 4);
    // A retried copy of a packed chunk is the chunk already there.
    write(&store, ChunkId(1), &small, true).unwrap();
    store.delete(ChunkId(4)).unwrap();
    assert_eq!(store.bytes_held(), 4096 + 90_000 + 150_000);
    drop(store);

    let store = ChunkStore::open_with(disks, 0, cfg).unwrap();
    assert_eq!(store.count(), 3, "the deleted chunk stays deleted");
    assert_eq!(store.meta(ChunkId(4)), None);
    assert_eq!(read(&store, ChunkId(1), 0, 4096).unwrap(), small);
    assert_eq!(read(&store, ChunkId(3), 0, 150_000).unwrap(), large);
    assert_eq!(store.bytes_held(), 4096 + 90_000 + 150_000);
    // A flipped byte in a packed chunk: the read fails, the replica is dropped and lost.
    let (path, at) = store.data_location(ChunkId(2)).unwrap();
    flip(&path, at + 70_000);
    assert!(read(&store, ChunkId(2), 0, 10).is_ok(), "block 0 is intact");
    assert!(read(&store, ChunkId(2), 0, 90_000).is_err());
    assert_eq!(store.meta(ChunkId(2)), None);
    assert_eq!(store.lost().1, vec![ChunkId(2)]);
    assert!(!store.is_failed(0));
    // The scrubber checks packed chunks too.
    let go = AtomicBool::new(false);
    assert_eq!(store.scrub_chunk(ChunkId(1), 0, &go), ScrubOutcome::Good);
    let (path, at) = store.data_location(ChunkId(1)).unwrap();
    flip(&path, at + 4095);
    assert_eq!(store.scrub_chunk(ChunkId(1), 0, &go), ScrubOutcome::Corrupt);
    drop(store);
    let store = ChunkStore::open_with(disks, 0, cfg).unwrap();
    assert_eq!(
        store.chunk_ids(),
        vec![ChunkId(3)],
        "dropped replicas stay dropped"
    );
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn compaction_reclaims_deleted_packed_chunks_and_keeps_the_rest() {
    let dir = tempdir("compact");
    let disks = std::slice::from_ref(&dir);
    let cfg = packing(100_000, 64 * 1024);
    let store = ChunkStore::open_with(disks, 0, cfg).unwrap();
    let data = |i: u128| pattern(10_000, i as u32);
    for i in 1..=30u128 {
        write(&store, ChunkId(i), &data(i), true).unwrap();
    }
    let pack_files = || fs::read_dir(dir.join("packs")).unwrap().count();
    let before = pack_files();
    assert!(before >= 5, "{before} pack files");
    // Nothing deleted: nothing worth compacting.
    assert_eq!(store.compact(), 0);
    assert_eq!(pack_files(), before);
    for i in (1..=30u128).filter(|i| i % 5 != 0) {
        store.delete(ChunkId(i)).unwrap();
    }
    let moved = store.compact();
    assert!((1..=6).contains(&moved), "{moved} records moved");
    assert!(
        pack_files() < before,
        "{} of {before} pack files left",
        pack_files()
    );
    let check = |store: &ChunkStore| {
        assert_eq!(store.count(), 6);
        for i in (5..=30u128).step_by(5) {
            assert_eq!(read(store, ChunkId(i), 0, 10_000).unwrap(), data(i));
        }
    };
    check(&store);
    drop(store);
    let store = ChunkStore::open_with(disks, 0, cfg).unwrap();
    check(&store);
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn concurrent_small_writes_all_land() {
    let dir = tempdir("concurrent-packed");
    let disks = std::slice::from_ref(&dir);
    let store = Arc::new(ChunkStore::open(disks, 0).unwrap());
    let writers: Vec<_> = (0..8u128)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0..25u128 {
                    let id = ChunkId(t * 1000 + i);
                    write(&store, id, &pattern(4096, id.0 as u32), true).unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    drop(store);
    let store = ChunkStore::open(disks, 0).unwrap();
    assert_eq!(store.count(), 200);
    let id = ChunkId(7024);
    assert_eq!(
        read(&store, id, 0, 4096).unwrap(),
        pattern(4096, id.0 as u32)
    );
    fs::remove_dir_all(dir).unwrap();
}

fn entry(id: u128, data: &[u8]) -> BatchEntry {
    BatchEntry {
        id: ChunkId(id),
        data: Bytes::copy_from_slice(data),
        crc32c: crc32c::crc32c(data),
    }
}

#[test]
fn a_batch_is_kept_whole_or_not_at_all() {
    let dir = tempdir("batch");
    let disks = std::slice::from_ref(&dir);
    let cfg = packing(100_000, pack::DEFAULT_FILE_SIZE);
    let store = ChunkStore::open_with(disks, 0, cfg).unwrap();
    let big = pattern(150_000, 7);
    let batch = vec![
        entry(1, &pattern(4096, 1)),
        entry(2, b""),
        entry(3, &big),
        entry(4, &pattern(100, 4)),
    ];
    store.write_batch(batch.clone()).unwrap();
    assert_eq!(store.count(), 4);
    let in_pack = |id| {
        data_path(&store, ChunkId(id))
            .unwrap()
            .starts_with(dir.join("packs"))
    };
    assert!(in_pack(1) && in_pack(2) && in_pack(4) && !in_pack(3));
    assert_eq!(read(&store, ChunkId(3), 0, 150_000).unwrap(), big);
    assert_eq!(read(&store, ChunkId(4), 0, 100).unwrap(), pattern(100, 4));
    assert_eq!(store.meta(ChunkId(2)), Some((0, 0)));
    // Sent again (a retry): nothing changes.
    store.write_batch(batch).unwrap();
    assert_eq!(store.count(), 4);
    // A batch naming a held id with other contents is refused whole.
    let err = store
        .write_batch(vec![entry(5, b"five"), entry(1, b"not chunk one")])
        .unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(..)), "{err}");
    assert_eq!(store.meta(ChunkId(5)), None);
    // An entry whose data does not match its CRC is refused whole.
    let mut bad = entry(6, b"six");
    bad.crc32c ^= 1;
    assert!(store.write_batch(vec![entry(7, b"seven"), bad]).is_err());
    assert_eq!(store.meta(ChunkId(7)), None);
    // An id named twice is refused (it would be counted twice).
    let err = store
        .write_batch(vec![entry(8, b"eight"), entry(8, b"eight")])
        .unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(..)), "{err}");
    assert_eq!(store.meta(ChunkId(8)), None);
    drop(store);
    let store = ChunkStore::open_with(disks, 0, cfg).unwrap();
    assert_eq!(store.count(), 4);
    assert_eq!(read(&store, ChunkId(1), 0, 4096).unwrap(), pattern(4096, 1));
    fs::remove_dir_all(dir).unwrap();
}

/// Files under `dir/chunks` (chunk files) and `dir/tmp` (writes in flight).
fn chunk_and_temp_files(dir: &Path) -> (usize, usize) {
    fn count(p: &Path) -> usize {
        fs::read_dir(p).map_or(0, |d| {
            d.flatten()
                .map(|e| {
                    if e.path().is_dir() {
                        count(&e.path())
                    } else {
                        1
                    }
                })
                .sum()
        })
    }
    (count(&dir.join("chunks")), count(&dir.join("tmp")))
}

#[test]
fn a_failed_batch_keeps_none_of_its_large_entries() {
    let dir = tempdir("batch-large");
    let disks = std::slice::from_ref(&dir);
    let cfg = packing(100_000, pack::DEFAULT_FILE_SIZE);
    let big = pattern(150_000, 9);
    let small = pattern(4096, 3);
    // Each failure comes after a large entry (written as a chunk file) in the batch.
    let bad_crc = {
        let mut e = entry(12, &small);
        e.crc32c ^= 1;
        e
    };
    let store = ChunkStore::open_with(disks, 0, cfg).unwrap();
    store.write_batch(vec![entry(1, b"one")]).unwrap();
    let failures: Vec<(&str, Vec<BatchEntry>)> = vec![
        ("a later entry's CRC", vec![entry(11, &big), bad_crc]),
        (
            "a later entry held with other contents",
            vec![entry(21, &big), entry(1, b"not chunk one")],
        ),
    ];
    for (why, batch) in failures {
        assert!(store.write_batch(batch).is_err(), "{why}");
        assert_eq!(store.count(), 1, "{why}: only chunk 1 is held");
        assert_eq!(chunk_and_temp_files(&dir), (0, 0), "{why}: no file is left");
    }
    drop(store);
    // The pack's reservation fails (capacity) after the large entry's bytes were reserved.
    let limited = ChunkStore::open_with(disks, 150_000 + 4096 + 10, cfg).unwrap();
    let err = limited
        .write_batch(vec![entry(31, &big), entry(32, &small), entry(33, &small)])
        .unwrap_err();
    assert!(matches!(err, StoreError::NoSpace(_)), "{err}");
    assert_eq!(limited.meta(ChunkId(31)), None);
    assert_eq!(chunk_and_temp_files(&dir), (0, 0));
    // Nothing was reserved for good: the capacity still takes a batch that fits.
    limited
        .write_batch(vec![entry(41, &big), entry(42, &small)])
        .unwrap();
    assert_eq!(read(&limited, ChunkId(41), 0, 150_000).unwrap(), big);
    assert_eq!(limited.count(), 3);
    drop(limited);
    // Nothing of the failed batches comes back at a restart.
    let store = ChunkStore::open_with(disks, 0, cfg).unwrap();
    let mut ids = store.chunk_ids();
    ids.sort_unstable_by_key(|id| id.0);
    assert_eq!(ids, vec![ChunkId(1), ChunkId(41), ChunkId(42)]);
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn reads_and_the_index_never_wait_behind_a_pack_append() {
    let dir = tempdir("stall");
    let disks = std::slice::from_ref(&dir);
    let cfg = packing(100_000, pack::DEFAULT_FILE_SIZE);
    let store = Arc::new(ChunkStore::open_with(disks, 0, cfg).unwrap());
    for id in [1, 2] {
        write(&store, ChunkId(id), &pattern(1000, id as u32), true).unwrap();
    }
    let packs = store.packs[0].as_ref().unwrap();
    // An append stuck in a slow zero-fill or sync holds the pack files' append lock. A deletion
    // (its tombstone is an append) waits for it, but nothing else may: the index answers (as
    // the async handlers ask it) and a packed chunk reads back.
    let (deleter, answered) = packs.while_appends_stall(|| {
        let s = store.clone();
        let deleter = std::thread::spawn(move || s.delete(ChunkId(1)));
        std::thread::sleep(Duration::from_millis(200));
        let s = store.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send((s.count(), s.meta(ChunkId(2)), read(&s, ChunkId(2), 0, 1000)));
        });
        (deleter, rx.recv_timeout(Duration::from_secs(5)))
    });
    let (count, meta, data) = answered.expect("the index and reads waited for a pack append");
    assert_eq!(count, 1);
    assert_eq!(meta.map(|(len, _)| len), Some(1000));
    assert_eq!(data.unwrap(), pattern(1000, 2));
    deleter.join().unwrap().unwrap();
    drop(store);
    let store = ChunkStore::open_with(disks, 0, cfg).unwrap();
    assert_eq!(store.chunk_ids(), vec![ChunkId(2)]);
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn compaction_neither_cancels_a_rewritten_chunk_nor_revives_a_deleted_one() {
    let dir = tempdir("repoint");
    let disks = std::slice::from_ref(&dir);
    let cfg = packing(100_000, pack::DEFAULT_FILE_SIZE);
    let store = ChunkStore::open_with(disks, 0, cfg).unwrap();
    let (rewritten, deleted) = (ChunkId(5), ChunkId(6));
    let data = pattern(3000, 5);
    let crc = crc32c::crc32c(&data);
    let packs = store.packs[0].as_ref().unwrap();
    let append = |id: ChunkId| {
        let mut record = pack::record_header(false, id, data.len() as u32, crc).to_vec();
        record.extend_from_slice(&crate::image::image(&data, crc));
        let (slot, seq) = packs.append(&record).unwrap();
        packs.wait_synced(seq).unwrap();
        slot
    };
    for id in [rewritten, deleted] {
        write(&store, id, &data, true).unwrap();
    }
    let was = |id| store.entry(id).unwrap();
    let (was_rewritten, was_deleted) = (was(rewritten), was(deleted));
    // Compaction copied `rewritten`; it was deleted meanwhile and is being written again (a
    // copy ordered back): the writer claimed the id and appended its record, not yet indexed.
    let copy = append(rewritten);
    store.delete(rewritten).unwrap();
    store.state().committing.insert(rewritten);
    let again = append(rewritten);
    // `deleted` is being deleted (claimed, out of the index, its tombstone appended) when
    // compaction's copy of it lands after the tombstone.
    {
        let mut st = store.state();
        st.remove(deleted);
        st.committing.insert(deleted);
    }
    packs.append_tombstone(deleted).unwrap();
    let late_copy = append(deleted);
    let moved = std::thread::scope(|scope| {
        let compaction = scope.spawn(|| {
            store.repoint(
                packs,
                vec![
                    (rewritten, was_rewritten, copy),
                    (deleted, was_deleted, late_copy),
                ],
            )
        });
        std::thread::sleep(Duration::from_millis(200));
        {
            let mut st = store.state();
            st.committing.remove(&rewritten);
            st.index.insert(
                rewritten,
                Entry {
                    pack: Some(again),
                    ..was_rewritten
                },
            );
        }
        store.committed.notify_all();
        std::thread::sleep(Duration::from_millis(100));
        store.unclaim(&[deleted]);
        compaction.join().unwrap()
    });
    assert_eq!(moved, 0);
    assert_eq!(read(&store, rewritten, 0, 3000).unwrap(), data);
    drop(store);
    // At the next start the rewritten chunk is there (no tombstone after its record) and the
    // deleted one is not (a tombstone after the late copy).
    let store = ChunkStore::open_with(disks, 0, cfg).unwrap();
    assert_eq!(read(&store, rewritten, 0, 3000).unwrap(), data);
    assert_eq!(store.meta(deleted), None);
    fs::remove_dir_all(dir).unwrap();
}
