//! The chunk image: the bytes of one stored chunk, the same in a chunk file of its own and in a
//! pack record (after the record's header, [`crate::pack`]).
//!
//! A chunk is immutable once written. Its image holds a header, the data, one CRC32C per 64 KiB
//! block and a footer:
//!
//! ```text
//! "TDFSCHNK" | version u32 | 0u32 | data ... | block crc32c u32 ... | data_len u64 | crc32c u32 | "TDFS"
//! ```
//!
//! This module builds the header and the trailer (block CRC table and footer), reads and checks a
//! chunk file's footer, and checks a block against its CRC. Matching an image against the store's
//! index, and acting on a mismatch, is [`crate::store`]'s work.

use bytes::Bytes;
use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;
#[cfg(test)]
use tinydfs_proto::blocks::BlockCrcs;
use tinydfs_proto::BLOCK_SIZE;

/// First bytes of a chunk image.
pub(crate) const MAGIC: &[u8; 8] = b"TDFSCHNK";
/// Last bytes of a chunk image.
pub(crate) const FOOTER_MAGIC: &[u8; 4] = b"TDFS";
/// Version of the chunk file format.
pub const CHUNK_FORMAT_VERSION: u32 = 1;
/// Bytes before a chunk's data in its image.
pub const IMAGE_HEADER_LEN: u64 = 16;
/// Bytes after the block CRC table of a chunk image on disk: data length, whole-chunk CRC32C,
/// magic. Not the 12-byte footer that ends a chunk stream on the wire
/// (`tinydfs_proto::frame::FOOTER_LEN`).
pub const IMAGE_FOOTER_LEN: u64 = 16;

/// The little-endian `u32` at the start of `b`.
pub(crate) fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// The first bytes of a chunk image (a chunk file, or a pack record after its header).
pub(crate) fn image_header() -> [u8; IMAGE_HEADER_LEN as usize] {
    let mut h = [0u8; IMAGE_HEADER_LEN as usize];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&CHUNK_FORMAT_VERSION.to_le_bytes());
    h
}

/// The bytes of a chunk image after its data: the block CRC table and the footer.
pub(crate) fn trailer(blocks: &[u32], len: u64, crc: u32) -> Vec<u8> {
    let mut t = Vec::with_capacity(blocks.len() * 4 + IMAGE_FOOTER_LEN as usize);
    for c in blocks {
        t.extend_from_slice(&c.to_le_bytes());
    }
    t.extend_from_slice(&len.to_le_bytes());
    t.extend_from_slice(&crc.to_le_bytes());
    t.extend_from_slice(FOOTER_MAGIC);
    t
}

/// Bytes of the image of a chunk of `len` data bytes.
pub fn image_len(len: u64) -> u64 {
    IMAGE_HEADER_LEN + len + len.div_ceil(BLOCK_SIZE as u64) * 4 + IMAGE_FOOTER_LEN
}

/// The image of a chunk holding `data`, whose CRC32C is `crc`.
#[cfg(test)]
pub(crate) fn image(data: &[u8], crc: u32) -> Vec<u8> {
    let mut crcs = BlockCrcs::default();
    crcs.update(data);
    let (blocks, _) = crcs.finish();
    let mut img = image_header().to_vec();
    img.extend_from_slice(data);
    img.extend_from_slice(&trailer(&blocks, data.len() as u64, crc));
    img
}

/// The data of block `b` of a chunk image of `len` data bytes, checked against its CRC.
pub(crate) fn image_block(image: &Bytes, len: u64, b: u64) -> Result<Bytes, Fault> {
    let block = BLOCK_SIZE as u64;
    let start = IMAGE_HEADER_LEN + b * block;
    let blen = block.min(len - b * block);
    let data = image.slice(start as usize..(start + blen) as usize);
    let at = (IMAGE_HEADER_LEN + len + b * 4) as usize;
    if crc32c::crc32c(&data) != le32(&image[at..at + 4]) {
        return Err(Fault::Corrupt(format!("block {b} fails its checksum")));
    }
    Ok(data)
}

/// What is wrong with a chunk file.
#[derive(Debug)]
pub(crate) enum Fault {
    /// The file is not there.
    Missing,
    /// The disk failed to answer.
    Io(io::Error),
    /// The file is there but its bytes are wrong.
    Corrupt(String),
}

impl From<io::Error> for Fault {
    fn from(e: io::Error) -> Fault {
        match e.kind() {
            io::ErrorKind::NotFound => Fault::Missing,
            // The length was checked against the footer: a short read means a damaged file.
            io::ErrorKind::UnexpectedEof => {
                Fault::Corrupt("file shorter than its footer says".into())
            }
            _ => Fault::Io(e),
        }
    }
}

/// Reads and checks a chunk file's header and footer: (data length, CRC32C, open file).
pub(crate) fn read_footer(path: &Path) -> Result<(u64, u32, File), Fault> {
    let mut f = File::open(path)?;
    let total = f.seek(SeekFrom::End(0))?;
    if total < IMAGE_HEADER_LEN + IMAGE_FOOTER_LEN {
        return Err(Fault::Corrupt("chunk file too short".into()));
    }
    let mut header = [0u8; IMAGE_HEADER_LEN as usize];
    f.read_exact_at(&mut header, 0)?;
    if &header[..8] != MAGIC {
        return Err(Fault::Corrupt("not a chunk file".into()));
    }
    let version = le32(&header[8..]);
    if version > CHUNK_FORMAT_VERSION {
        return Err(Fault::Corrupt(format!("chunk format {version} is too new")));
    }
    let mut footer = [0u8; IMAGE_FOOTER_LEN as usize];
    f.read_exact_at(&mut footer, total - IMAGE_FOOTER_LEN)?;
    if &footer[12..] != FOOTER_MAGIC {
        return Err(Fault::Corrupt("chunk footer missing".into()));
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&footer[..8]);
    let len = u64::from_le_bytes(len);
    let crc = le32(&footer[8..]);
    let nblocks = len.div_ceil(BLOCK_SIZE as u64);
    let expected = nblocks
        .checked_mul(4)
        .and_then(|t| t.checked_add(IMAGE_HEADER_LEN + IMAGE_FOOTER_LEN))
        .and_then(|t| t.checked_add(len));
    if expected != Some(total) {
        return Err(Fault::Corrupt(
            "chunk file length does not match its footer".into(),
        ));
    }
    Ok((len, crc, f))
}

/// Reads block `b` into `buf` (sized to the block) and checks it against its CRC.
pub(crate) fn read_block(file: &File, table: &[u8], b: u64, buf: &mut [u8]) -> Result<(), Fault> {
    file.read_exact_at(buf, IMAGE_HEADER_LEN + b * BLOCK_SIZE as u64)?;
    let at = (b * 4) as usize;
    if crc32c::crc32c(buf) != le32(&table[at..at + 4]) {
        return Err(Fault::Corrupt(format!("block {b} fails its checksum")));
    }
    Ok(())
}
