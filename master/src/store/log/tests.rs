//! The log store: replay of torn and corrupt files, the record limit, and file work off the
//! runtime.

use super::super::assert_runs_off_the_runtime;
use super::*;
use openraft::{CommittedLeaderId, EntryPayload};

fn entry(index: u64) -> Entry<TypeConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Blank,
    }
}

/// An entry whose record is about `bytes` long (a bucket with a long name).
fn big_entry(index: u64, bytes: usize) -> Entry<TypeConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(crate::state::Command {
            version: crate::state::COMMAND_VERSION,
            request_id: None,
            time_ms: 1,
            op: crate::state::Op::Meta(tinydfs_proto::meta::MetaWrite::CreateBucket {
                bucket: "b".repeat(bytes),
                owner: "me".into(),
            }),
        }),
    }
}

fn framed(e: &Entry<TypeConfig>) -> Vec<u8> {
    frame(&LogRecordRef::Entry(e), MAX_RECORD).unwrap()
}

/// Writes a log of `entries`; returns the offset where each record ends.
fn write_entries(dir: &Path, entries: &[Entry<TypeConfig>]) -> Vec<usize> {
    std::fs::create_dir_all(dir).unwrap();
    let mut bytes = log_header();
    let mut ends = Vec::new();
    for e in entries {
        bytes.extend(framed(e));
        ends.push(bytes.len());
    }
    std::fs::write(dir.join("raft.log"), &bytes).unwrap();
    ends
}

fn write_log(dir: &Path, n: u64) -> Vec<usize> {
    write_entries(dir, &(1..=n).map(entry).collect::<Vec<_>>())
}

/// Changes the log file's bytes with `f`.
fn damage(dir: &Path, f: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = std::fs::read(dir.join("raft.log")).unwrap();
    f(&mut bytes);
    std::fs::write(dir.join("raft.log"), &bytes).unwrap();
}

fn log_len(dir: &Path) -> u64 {
    std::fs::metadata(dir.join("raft.log")).unwrap().len()
}

/// The indexes of the live entries after a reopen.
fn live(dir: &Path) -> (u64, u64) {
    let store = LogStore::open(dir).unwrap();
    let inner = store.inner.lock().unwrap();
    (inner.first, inner.next_index())
}

/// Opening must fail, naming the file and the offset, and leave the file as it was.
fn assert_refused(dir: &Path, offset: usize) -> String {
    let before = std::fs::read(dir.join("raft.log")).unwrap();
    let err = LogStore::open(dir)
        .err()
        .expect("the log must not open")
        .to_string();
    assert!(err.contains("refusing to start"), "{err}");
    assert!(err.contains(&format!("offset {offset} ")), "{err}");
    assert!(err.contains(&dir.display().to_string()), "{err}");
    assert!(!err.contains('\n'), "one line: {err}");
    assert_eq!(
        std::fs::read(dir.join("raft.log")).unwrap(),
        before,
        "nothing is cut"
    );
    err
}

fn tempdir(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("tinydfs-log-{name}-{:08x}", rand::random::<u32>()))
}

#[test]
fn the_cache_is_bounded_in_bytes_and_keeps_the_newest_entry() {
    let mut c = Cache::default();
    for i in 1..=10 {
        c.push_back(entry(i), 1 << 20);
    }
    assert_eq!(c.entries.len(), CACHED_BYTES >> 20);
    assert_eq!(c.front().map(|e| e.log_id.index), Some(7));
    assert_eq!(c.bytes, CACHED_BYTES);
    c.push_back(entry(11), 2 * CACHED_BYTES);
    assert_eq!(c.entries.len(), 1, "the newest entry stays, however large");
    c.pop_back_while(|_| true);
    assert_eq!((c.entries.len(), c.bytes), (0, 0));
}

#[test]
fn entries_beyond_the_cache_are_read_back_from_the_file() {
    let dir = tempdir("reread");
    write_log(&dir, 5);
    let store = LogStore::open(&dir).unwrap();
    {
        let mut inner = store.inner.lock().unwrap();
        inner.recent = Cache::default();
        assert_eq!(inner.entry(3).unwrap().log_id.index, 3);
        assert_eq!(inner.last.map(|l| l.index), Some(5));
    }
    // A purge keeps the later entries readable in the rewritten file.
    store.write_purge(entry(2).log_id).unwrap();
    {
        let inner = store.inner.lock().unwrap();
        assert_eq!(inner.entry(4).unwrap().log_id.index, 4);
        assert!(inner.entry(2).is_err());
        assert_eq!(inner.end, log_len(&dir));
    }
    // So does a truncation.
    store.write_truncate(5).unwrap();
    assert_eq!(store.inner.lock().unwrap().last.map(|l| l.index), Some(4));
    drop(store);
    let store = LogStore::open(&dir).unwrap();
    let inner = store.inner.lock().unwrap();
    assert_eq!((inner.first, inner.next_index()), (3, 5));
    assert_eq!(inner.last.map(|l| l.index), Some(4));
    assert_eq!(inner.entry(3).unwrap().log_id.index, 3);
    drop(inner);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_torn_tail_is_cut_but_corruption_before_good_records_is_refused() {
    let dir = tempdir("torn");
    let ends = write_log(&dir, 3);
    // A crash in the middle of the third append.
    let f = OpenOptions::new()
        .write(true)
        .open(dir.join("raft.log"))
        .unwrap();
    f.set_len(ends[2] as u64 - 5).unwrap();
    let store = LogStore::open(&dir).unwrap();
    let inner = store.inner.lock().unwrap();
    assert_eq!((inner.first, inner.next_index()), (1, 3));
    assert_eq!(inner.entry(2).unwrap().log_id.index, 2);
    drop(inner);
    // The cut file takes new records after the second one.
    assert_eq!(log_len(&dir), ends[1] as u64);
    std::fs::remove_dir_all(&dir).unwrap();

    let dir = tempdir("corrupt");
    write_log(&dir, 3);
    damage(&dir, |b| b[LOG_HEADER_LEN + 10] ^= 0xFF); // inside the first record
    assert_refused(&dir, LOG_HEADER_LEN);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_corrupt_length_before_good_records_is_refused_not_cut() {
    // A length over the largest record, then one that runs past the end of the file: both
    // were taken for a torn tail, and the acknowledged entries after them dropped.
    for bad_len in [MAX_RECORD + 1, u32::MAX, 1 << 20] {
        let dir = tempdir("badlen");
        let ends = write_log(&dir, 4);
        let at = ends[0]; // the second record
        damage(&dir, |b| {
            b[at..at + 4].copy_from_slice(&bad_len.to_le_bytes())
        });
        let err = assert_refused(&dir, at);
        assert!(err.contains(&format!("offset {}", ends[1])), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn a_zero_filled_tail_is_cut() {
    // The file's new size reached the disk, its data did not: 8 zero bytes read as an empty
    // record with a good CRC, which stopped the master.
    for zeros in [3, 8, 4096, 3 * TORN_TAIL_MAX] {
        let dir = tempdir("zeros");
        let ends = write_log(&dir, 2);
        damage(&dir, |b| b.resize(b.len() + zeros, 0));
        assert_eq!(live(&dir), (1, 3), "{zeros} zeros");
        assert_eq!(log_len(&dir), ends[1] as u64);
        std::fs::remove_dir_all(&dir).unwrap();
    }
    // Zeros over the last record's body: cut with it.
    let dir = tempdir("zerobody");
    let ends = write_log(&dir, 3);
    damage(&dir, |b| b[ends[1] + 8..].fill(0));
    assert_eq!(live(&dir), (1, 3));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn junk_after_the_last_record_is_cut_only_if_a_crash_could_have_left_it() {
    // A few junk bytes with no record after them, or a last record whose CRC fails: torn.
    let dir = tempdir("junk");
    let ends = write_log(&dir, 2);
    damage(&dir, |b| b.extend([0xAB; 100]));
    assert_eq!(live(&dir), (1, 3));
    assert_eq!(log_len(&dir), ends[1] as u64);
    damage(&dir, |b| *b.last_mut().unwrap() ^= 1);
    assert_eq!(live(&dir), (1, 2));
    std::fs::remove_dir_all(&dir).unwrap();

    // A torn write of a record longer than the bound: its prefix is cut whatever its size.
    let dir = tempdir("bigtorn");
    let ends = write_entries(&dir, &[entry(1), big_entry(2, 2 * TORN_TAIL_MAX)]);
    damage(&dir, |b| b.truncate(ends[1] - 10));
    assert_eq!(live(&dir), (1, 2));
    std::fs::remove_dir_all(&dir).unwrap();

    // A length no append writes, then more junk than a crash leaves: refused.
    let dir = tempdir("bigjunk");
    let ends = write_log(&dir, 2);
    damage(&dir, |b| {
        b.extend(u32::MAX.to_le_bytes());
        b.extend(vec![0xAB; TORN_TAIL_MAX + 1]);
    });
    let err = assert_refused(&dir, ends[1]);
    assert!(err.contains("more than a torn append leaves"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();

    // A bad last-but-one record: the good one after it may have been acknowledged.
    let dir = tempdir("badcrc");
    let ends = write_log(&dir, 3);
    damage(&dir, |b| b[ends[1] - 1] ^= 1);
    assert_refused(&dir, ends[0]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_good_record_this_version_cannot_decode_stops_the_master() {
    let dir = tempdir("newer");
    let ends = write_log(&dir, 1);
    let body = br#"{"FromTheFuture":1}"#;
    damage(&dir, |b| {
        b.extend((body.len() as u32).to_le_bytes());
        b.extend(crc32c::crc32c(body).to_le_bytes());
        b.extend(body);
    });
    let err = LogStore::open(&dir)
        .err()
        .expect("must not open")
        .to_string();
    assert!(err.contains(&format!("offset {}", ends[0])), "{err}");
    assert!(log_len(&dir) > ends[0] as u64, "nothing is cut");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_record_over_the_limit_is_refused_when_appended_and_nothing_is_written() {
    let dir = tempdir("cap");
    write_log(&dir, 1);
    let store = LogStore::open(&dir).unwrap();
    store.inner.lock().unwrap().max_record = 1000;
    let len = log_len(&dir);
    let err = store
        .write_entries(vec![entry(2), big_entry(3, 2000)])
        .expect_err("a record over the limit must not be written");
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
    assert_eq!(log_len(&dir), len, "no part of the append is written");
    assert_eq!(store.inner.lock().unwrap().next_index(), 2);
    // The log goes on: a record within the limit is written, and the file replays.
    store.write_entries(vec![big_entry(2, 500)]).unwrap();
    drop(store);
    assert_eq!(live(&dir), (1, 3));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn writes_and_syncs_leave_the_runtime_thread_free() {
    let dir = tempdir("offrt");
    write_log(&dir, 5);
    let store = LogStore::open(&dir).unwrap();
    // Each holds the log's index while the write is polled.
    let mut s = store.clone();
    assert_runs_off_the_runtime(store.inner.lock().unwrap(), move || async move {
        s.save_vote(&Vote::new(2, 1)).await.unwrap()
    });
    let mut s = store.clone();
    assert_runs_off_the_runtime(store.inner.lock().unwrap(), move || async move {
        s.truncate(entry(5).log_id).await.unwrap()
    });
    let mut s = store.clone();
    assert_runs_off_the_runtime(store.inner.lock().unwrap(), move || async move {
        s.purge(entry(2).log_id).await.unwrap()
    });
    drop(store);
    let store = LogStore::open(&dir).unwrap();
    let inner = store.inner.lock().unwrap();
    assert_eq!((inner.first, inner.next_index()), (3, 5));
    assert_eq!(inner.vote, Some(Vote::new(2, 1)));
    drop(inner);
    std::fs::remove_dir_all(&dir).unwrap();
}
