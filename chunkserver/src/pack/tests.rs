//! Tests of the pack files: replay after a crash, rolling to new files, group commit.

use super::*;

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tdfs-pack-{name}-{:08x}", rand::random::<u32>()));
    fs::create_dir_all(&d).unwrap();
    d
}

fn record(id: ChunkId, data: &[u8]) -> Vec<u8> {
    let crc = crc32c::crc32c(data);
    let mut r = record_header(false, id, data.len() as u32, crc).to_vec();
    r.extend_from_slice(&crate::image::image(data, crc));
    r
}

#[test]
fn records_replay_in_order_and_a_torn_tail_ends_the_file() {
    let dir = tempdir("replay");
    let (a, b, c) = (ChunkId(1), ChunkId(2), ChunkId(3));
    {
        let (packs, found) = Packs::open(&dir, DEFAULT_FILE_SIZE).unwrap();
        assert!(found.is_empty());
        let sa = packs.append_chunk(&record(a, b"alpha")).unwrap();
        assert_eq!(
            sa,
            Slot {
                file: 1,
                at: FILE_HEADER_LEN
            }
        );
        packs.append_chunk(&record(b, &[7u8; 70_000])).unwrap();
        packs.append_tombstone(a).unwrap();
        packs.append_chunk(&record(c, b"gamma")).unwrap();
    }
    // A crash in the middle of an append leaves part of a record.
    let path = dir.join(file_name(1));
    let good = fs::metadata(&path).unwrap().len();
    let torn = record(ChunkId(4), &[1u8; 1000]);
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(&torn[..500], good).unwrap();
    drop(f);
    let (packs, found) = Packs::open(&dir, DEFAULT_FILE_SIZE).unwrap();
    let kinds: Vec<String> = found
        .iter()
        .map(|r| match r {
            Replayed::Chunk { id, len, .. } => format!("chunk {} {len}", id.0),
            Replayed::Tombstone(id) => format!("tombstone {}", id.0),
        })
        .collect();
    assert_eq!(
        kinds,
        ["chunk 1 5", "chunk 2 70000", "tombstone 1", "chunk 3 5"]
    );
    // The next start writes to a new file.
    let s = packs.append_chunk(&record(ChunkId(5), b"after")).unwrap();
    assert_eq!(s.file, 2);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_record_whose_data_never_reached_the_disk_ends_its_file() {
    let dir = tempdir("torn-data");
    let (a, b) = (ChunkId(1), ChunkId(2));
    let end = {
        let (packs, _) = Packs::open(&dir, DEFAULT_FILE_SIZE).unwrap();
        packs.append_chunk(&record(a, b"alpha")).unwrap();
        packs.append_chunk(&record(b, b"beta")).unwrap().at + record_len(4)
    };
    // A crash mid-group: the next record's header is on disk, its data still the zeros
    // written ahead; a valid-looking record after it was never acknowledged either.
    let path = dir.join(file_name(1));
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    let torn = record(ChunkId(3), &[7u8; 3000]);
    f.write_all_at(&torn[..RECORD_HEADER_LEN], end).unwrap();
    let after = record(ChunkId(4), b"later");
    f.write_all_at(&after, end + torn.len() as u64).unwrap();
    drop(f);
    let (_, found) = Packs::open(&dir, DEFAULT_FILE_SIZE).unwrap();
    let ids: Vec<u128> = found
        .iter()
        .map(|r| match r {
            Replayed::Chunk { id, .. } | Replayed::Tombstone(id) => id.0,
        })
        .collect();
    assert_eq!(ids, [1, 2]);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_full_file_is_followed_by_a_new_one_and_sparse_files_are_found() {
    let dir = tempdir("roll");
    let (packs, _) = Packs::open(&dir, 4096).unwrap();
    let mut slots = Vec::new();
    for i in 0..6u128 {
        slots.push(
            packs
                .append_chunk(&record(ChunkId(i), &[i as u8; 1500]))
                .unwrap(),
        );
    }
    // Two records fit in a file: files 1 and 2 are sealed, 3 is current.
    let files: Vec<u32> = slots.iter().map(|s| s.file).collect();
    assert_eq!(files, [1, 1, 2, 2, 3, 3]);
    packs.add_live(1, 2 * record_len(1500) as i64);
    packs.add_live(3, 2 * record_len(1500) as i64);
    // File 1 is all live, file 2 all dead, file 3 current.
    assert_eq!(packs.sparse(), [2]);
    packs.retire(2).unwrap();
    assert!(!dir.join(file_name(2)).exists());
    assert!(packs.file(2).is_none());
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn concurrent_appends_share_syncs_and_all_are_durable() {
    let dir = tempdir("group");
    let (packs, _) = Packs::open(&dir, DEFAULT_FILE_SIZE).unwrap();
    let packs = Arc::new(packs);
    let threads: Vec<_> = (0..16u128)
        .map(|t| {
            let p = packs.clone();
            std::thread::spawn(move || {
                for i in 0..20u128 {
                    p.append_chunk(&record(ChunkId(t * 100 + i), b"small"))
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    drop(packs);
    let (_, found) = Packs::open(&dir, DEFAULT_FILE_SIZE).unwrap();
    assert_eq!(found.len(), 320);
    fs::remove_dir_all(&dir).unwrap();
}
