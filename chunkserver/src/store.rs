//! Chunk files on a local disk.
//!
//! A chunk is immutable once written. Its file holds a header, the data, one CRC32C per 64 KiB
//! block and a footer:
//!
//! ```text
//! "TDFSCHNK" | version u32 | 0u32 | data ... | block crc32c u32 ... | data_len u64 | crc32c u32 | "TDFS"
//! ```
//!
//! Files live under `chunks/ab/cd/<id>` (the first two bytes of the id, hashed sub-folders so no
//! folder grows huge). A chunk is written to `tmp/`, fsynced, renamed into place and its folder
//! fsynced: a chunk file either is complete or does not exist. Every read verifies the CRC of each
//! block it touches and fails rather than serve wrong bytes.

use bytes::Bytes;
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tinydfs_proto::{ChunkId, ChunkMeta, BLOCK_SIZE};
use tokio::sync::mpsc;

const MAGIC: &[u8; 8] = b"TDFSCHNK";
const FOOTER_MAGIC: &[u8; 4] = b"TDFS";
/// Version of the chunk file format.
pub const CHUNK_FORMAT_VERSION: u32 = 1;
/// Bytes before a chunk's data in its file.
pub const HEADER_LEN: u64 = 16;
const FOOTER_LEN: u64 = 16;
/// Write buffer: large enough to turn network-sized frames into few system calls.
const WRITE_BUFFER: usize = 256 * 1024;

/// A message to a chunk writer: data, or the end of a chunk with the length and CRC32C its
/// sender announced (the writer keeps the chunk only if they match what it wrote).
pub enum WriteMsg {
    Data(Bytes),
    Finish { len: u64, crc32c: u32 },
}

/// Why a chunk operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("chunk {0} not found")]
    NotFound(ChunkId),
    #[error("chunk {0} is corrupt: {1}")]
    Corrupt(ChunkId, String),
    #[error("range {offset}+{len} is outside chunk {id} of {size} bytes")]
    BadRange {
        id: ChunkId,
        offset: u64,
        len: u64,
        size: u64,
    },
    #[error("the write was abandoned before the chunk was complete")]
    Aborted,
    #[error("disk: {0}")]
    Io(#[from] io::Error),
}

/// The chunks of one data folder.
pub struct ChunkStore {
    root: PathBuf,
    chunks: Mutex<HashMap<ChunkId, (u64, u32)>>,
}

fn be32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

impl ChunkStore {
    /// Opens the store under `root`, listing the chunks already there and clearing leftovers of
    /// interrupted writes.
    pub fn open(root: &Path) -> Result<ChunkStore, StoreError> {
        let tmp = root.join("tmp");
        if tmp.exists() {
            fs::remove_dir_all(&tmp)?;
        }
        fs::create_dir_all(&tmp)?;
        fs::create_dir_all(root.join("chunks"))?;
        let store = ChunkStore {
            root: root.to_path_buf(),
            chunks: Mutex::new(HashMap::new()),
        };
        let mut found = HashMap::new();
        for a in fs::read_dir(root.join("chunks"))? {
            for b in fs::read_dir(a?.path())? {
                for f in fs::read_dir(b?.path())? {
                    let f = f?;
                    let Some(id) = f
                        .file_name()
                        .to_str()
                        .and_then(|n| n.parse::<ChunkId>().ok())
                    else {
                        continue;
                    };
                    match read_footer(&f.path()) {
                        Ok((len, crc, _)) => {
                            found.insert(id, (len, crc));
                        }
                        Err(e) => {
                            tracing::warn!(chunk = %id, error = %e, "skipping unreadable chunk")
                        }
                    }
                }
            }
        }
        tracing::info!(chunks = found.len(), root = %root.display(), "chunk store opened");
        *store
            .chunks
            .lock()
            .map_err(|_| io::Error::other("poisoned"))? = found;
        Ok(store)
    }

    fn path(&self, id: ChunkId) -> PathBuf {
        let name = id.to_string();
        self.root
            .join("chunks")
            .join(&name[..2])
            .join(&name[2..4])
            .join(name)
    }

    /// Every chunk held, for a full chunk report.
    pub fn report(&self) -> Vec<ChunkMeta> {
        self.chunks
            .lock()
            .map(|c| {
                c.iter()
                    .map(|(id, (len, crc))| ChunkMeta {
                        id: *id,
                        len: *len,
                        crc32c: *crc,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Number of chunks held.
    pub fn count(&self) -> usize {
        self.chunks.lock().map(|c| c.len()).unwrap_or(0)
    }

    /// Length and CRC32C of a chunk held here.
    pub fn meta(&self, id: ChunkId) -> Option<(u64, u32)> {
        self.chunks.lock().ok()?.get(&id).copied()
    }

    /// The folder free space is measured on.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Writes a chunk from the messages on `rx` (blocking: run it on a blocking thread). Returns
    /// the length and CRC32C once the chunk is durable under its final name. If `rx` closes
    /// before [`WriteMsg::Finish`], nothing is kept.
    pub fn write(
        &self,
        id: ChunkId,
        mut rx: mpsc::Receiver<WriteMsg>,
    ) -> Result<(u64, u32), StoreError> {
        let tmp = self
            .root
            .join("tmp")
            .join(format!("{id}.{:08x}", rand::random::<u32>()));
        let result = self.write_to(&tmp, id, &mut rx);
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    fn write_to(
        &self,
        tmp: &Path,
        id: ChunkId,
        rx: &mut mpsc::Receiver<WriteMsg>,
    ) -> Result<(u64, u32), StoreError> {
        let mut f = BufWriter::with_capacity(WRITE_BUFFER, File::create(tmp)?);
        f.write_all(MAGIC)?;
        f.write_all(&CHUNK_FORMAT_VERSION.to_le_bytes())?;
        f.write_all(&0u32.to_le_bytes())?;
        let mut len = 0u64;
        let mut whole = 0u32;
        let mut block_crc = 0u32;
        let mut in_block = 0usize;
        let mut crcs: Vec<u32> = Vec::new();
        loop {
            match rx.blocking_recv() {
                Some(WriteMsg::Data(mut data)) => {
                    f.write_all(&data)?;
                    len += data.len() as u64;
                    whole = crc32c::crc32c_append(whole, &data);
                    while !data.is_empty() {
                        let take = (BLOCK_SIZE - in_block).min(data.len());
                        block_crc = crc32c::crc32c_append(block_crc, &data[..take]);
                        in_block += take;
                        data = data.slice(take..);
                        if in_block == BLOCK_SIZE {
                            crcs.push(block_crc);
                            block_crc = 0;
                            in_block = 0;
                        }
                    }
                }
                Some(WriteMsg::Finish {
                    len: want_len,
                    crc32c,
                }) => {
                    if want_len != len || crc32c != whole {
                        return Err(StoreError::Corrupt(
                            id,
                            format!("received {len} bytes crc {whole:08x}, sender announced {want_len} bytes crc {crc32c:08x}"),
                        ));
                    }
                    break;
                }
                None => return Err(StoreError::Aborted),
            }
        }
        if in_block > 0 {
            crcs.push(block_crc);
        }
        let mut table = Vec::with_capacity(crcs.len() * 4 + FOOTER_LEN as usize);
        for c in &crcs {
            table.extend_from_slice(&c.to_le_bytes());
        }
        table.extend_from_slice(&len.to_le_bytes());
        table.extend_from_slice(&whole.to_le_bytes());
        table.extend_from_slice(FOOTER_MAGIC);
        f.write_all(&table)?;
        let file = f.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        let dest = self.path(id);
        if let Some(existing) = self.meta(id) {
            // Chunk ids are random: the same id again is a retried copy of the same chunk. Keep
            // the durable one; refuse a different one rather than overwrite it.
            let _ = fs::remove_file(tmp);
            if existing == (len, whole) {
                return Ok(existing);
            }
            return Err(StoreError::Corrupt(
                id,
                "a different chunk with this id exists".into(),
            ));
        }
        let dir = dest.parent().ok_or_else(|| io::Error::other("no parent"))?;
        create_dir_durable(dir)?;
        fs::rename(tmp, &dest)?;
        File::open(dir)?.sync_all()?;
        if let Ok(mut c) = self.chunks.lock() {
            c.insert(id, (len, whole));
        }
        Ok((len, whole))
    }

    /// Streams `len` bytes of a chunk from `offset` into `tx`, verifying every block (blocking).
    /// A corrupt block ends the stream with an error instead of its bytes.
    pub fn read(
        &self,
        id: ChunkId,
        offset: u64,
        len: Option<u64>,
        tx: mpsc::Sender<Result<Bytes, io::Error>>,
    ) -> Result<(), StoreError> {
        let path = self.path(id);
        let (size, _, file) = match read_footer(&path) {
            Ok(v) => v,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(StoreError::NotFound(id)),
            Err(e) => return Err(StoreError::Corrupt(id, e.to_string())),
        };
        let len = len.unwrap_or(size.saturating_sub(offset));
        if offset.checked_add(len).is_none_or(|end| end > size) {
            return Err(StoreError::BadRange {
                id,
                offset,
                len,
                size,
            });
        }
        if len == 0 {
            return Ok(());
        }
        let block = BLOCK_SIZE as u64;
        let nblocks = size.div_ceil(block);
        let mut table = vec![0u8; (nblocks * 4) as usize];
        file.read_exact_at(&mut table, HEADER_LEN + size)?;
        let first = offset / block;
        let last = (offset + len - 1) / block;
        for b in first..=last {
            let start = b * block;
            let blen = block.min(size - start) as usize;
            let mut buf = vec![0u8; blen];
            file.read_exact_at(&mut buf, HEADER_LEN + start)?;
            let want = be32(&table[(b * 4) as usize..]);
            if crc32c::crc32c(&buf) != want {
                let err = StoreError::Corrupt(id, format!("block {b} fails its checksum"));
                tracing::error!(chunk = %id, block = b, "corrupt block");
                let _ = tx.blocking_send(Err(io::Error::other(err.to_string())));
                return Err(err);
            }
            let from = offset.saturating_sub(start) as usize;
            let to = ((offset + len).min(start + blen as u64) - start) as usize;
            let bytes = Bytes::from(buf).slice(from..to);
            if tx.blocking_send(Ok(bytes)).is_err() {
                break; // the reader went away
            }
        }
        Ok(())
    }

    /// Streams a whole chunk file's data for a pipeline recovery, without verifying (the
    /// receiver checks the CRC32C the sender reports).
    pub fn data_path(&self, id: ChunkId) -> PathBuf {
        self.path(id)
    }

    /// Deletes a chunk (garbage collection).
    pub fn delete(&self, id: ChunkId) -> Result<(), StoreError> {
        if let Ok(mut c) = self.chunks.lock() {
            c.remove(&id);
        }
        match fs::remove_file(self.path(id)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(StoreError::NotFound(id)),
            Err(e) => Err(e.into()),
        }
    }
}

/// Creates `dir` and any missing parents, fsyncing each parent whose entries changed, so that a
/// new hashed sub-folder survives a power loss with the chunk renamed into it.
fn create_dir_durable(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dir_durable(parent)?;
        match fs::create_dir(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
            Err(e) => return Err(e),
        }
        File::open(parent)?.sync_all()?;
    }
    Ok(())
}

/// Reads and checks a chunk file's header and footer: (data length, CRC32C, open file).
fn read_footer(path: &Path) -> io::Result<(u64, u32, File)> {
    let mut f = File::open(path)?;
    let mut header = [0u8; HEADER_LEN as usize];
    f.read_exact(&mut header)?;
    if &header[..8] != MAGIC {
        return Err(io::Error::other("not a chunk file"));
    }
    let version = be32(&header[8..]);
    if version > CHUNK_FORMAT_VERSION {
        return Err(io::Error::other(format!(
            "chunk format {version} is too new"
        )));
    }
    let total = f.seek(SeekFrom::End(0))?;
    if total < HEADER_LEN + FOOTER_LEN {
        return Err(io::Error::other("chunk file too short"));
    }
    let mut footer = [0u8; FOOTER_LEN as usize];
    f.read_exact_at(&mut footer, total - FOOTER_LEN)?;
    if &footer[12..] != FOOTER_MAGIC {
        return Err(io::Error::other("chunk footer missing"));
    }
    let len = u64::from_le_bytes(footer[..8].try_into().map_err(io::Error::other)?);
    let crc = be32(&footer[8..]);
    let nblocks = len.div_ceil(BLOCK_SIZE as u64);
    if HEADER_LEN + len + nblocks * 4 + FOOTER_LEN != total {
        return Err(io::Error::other(
            "chunk file length does not match its footer",
        ));
    }
    Ok((len, crc, f))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(name: &str) -> PathBuf {
        let p =
            std::env::temp_dir().join(format!("tinydfs-store-{name}-{}", rand::random::<u32>()));
        fs::create_dir_all(&p).unwrap();
        p
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

    #[test]
    fn writes_reads_ranges_and_detects_corruption() {
        let dir = tempdir("rw");
        let store = ChunkStore::open(&dir).unwrap();
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
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
        assert!(write(&store, ChunkId(43), &data, false).is_err());
        let store = ChunkStore::open(&dir).unwrap();
        assert_eq!(store.meta(id), Some((len, crc)));
        assert_eq!(store.meta(ChunkId(43)), None);
        // Flip one byte in the second block: reads of it fail, reads of the first block do not.
        let path = store.data_path(id);
        let mut bytes = fs::read(&path).unwrap();
        bytes[(HEADER_LEN + 70_000) as usize] ^= 1;
        fs::write(&path, bytes).unwrap();
        assert!(read(&store, id, 0, 100).is_ok());
        assert!(read(&store, id, 65_536, 10).is_err());
        fs::remove_dir_all(dir).unwrap();
    }
}
