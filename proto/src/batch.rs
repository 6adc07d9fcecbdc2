//! Many small chunks in one body: how a gateway sends concurrent small writes down one pipeline.
//!
//! Each small chunk sent on its own costs an HTTP exchange per pipeline hop and a disk sync per
//! member; sent together, a batch costs one exchange per hop and one sync per member, whatever
//! the number of chunks in it. The body is sent whole (its length known):
//!
//! ```text
//! entry: chunk id u128 | data length u32 | data crc32c u32 | data
//! end:   entry count u32 | "TDBE"
//! ```
//!
//! Every member checks each entry's CRC32C and keeps all of the batch or none of it.

use crate::{ChunkId, NodeId};
use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};

/// Bytes before each entry's data.
pub const ENTRY_HEADER_LEN: usize = 24;
const END_MAGIC: &[u8; 4] = b"TDBE";
const END_LEN: usize = 8;
/// The largest batch body a chunkserver takes.
pub const MAX_BATCH_BYTES: usize = 8 << 20;

/// One chunk of a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchEntry {
    pub id: ChunkId,
    pub data: Bytes,
    pub crc32c: u32,
}

/// A chunkserver's answer to a batch: the members that have every chunk of it durably.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PutBatchReply {
    pub stored: Vec<NodeId>,
    /// Chunks in the batch, as the member counted them.
    pub count: u32,
}

/// The body of a batch of `entries`.
pub fn encode(entries: &[BatchEntry]) -> Bytes {
    let size: usize = entries
        .iter()
        .map(|e| ENTRY_HEADER_LEN + e.data.len())
        .sum();
    let mut b = BytesMut::with_capacity(size + END_LEN);
    for e in entries {
        b.extend_from_slice(&e.id.0.to_le_bytes());
        b.extend_from_slice(&(e.data.len() as u32).to_le_bytes());
        b.extend_from_slice(&e.crc32c.to_le_bytes());
        b.extend_from_slice(&e.data);
    }
    b.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    b.extend_from_slice(END_MAGIC);
    b.freeze()
}

/// The entries of a batch body (their data shares `body`'s memory); an error for a body cut
/// short, badly framed, or with an entry whose data fails its CRC32C.
pub fn decode(body: &Bytes) -> Result<Vec<BatchEntry>, String> {
    if body.len() < END_LEN || &body[body.len() - 4..] != END_MAGIC {
        return Err("batch body does not end with its trailer".into());
    }
    let end = body.len() - END_LEN;
    let count = u32::from_le_bytes(body[end..end + 4].try_into().expect("4 bytes"));
    let mut entries = Vec::with_capacity(count.min(4096) as usize);
    let mut at = 0;
    while at < end {
        if end - at < ENTRY_HEADER_LEN {
            return Err(format!("batch entry {} has a short header", entries.len()));
        }
        let h = &body[at..at + ENTRY_HEADER_LEN];
        let id = ChunkId(u128::from_le_bytes(h[..16].try_into().expect("16 bytes")));
        let len = u32::from_le_bytes(h[16..20].try_into().expect("4 bytes")) as usize;
        let crc32c = u32::from_le_bytes(h[20..24].try_into().expect("4 bytes"));
        at += ENTRY_HEADER_LEN;
        if end - at < len {
            return Err(format!("batch entry {id} is cut short"));
        }
        let data = body.slice(at..at + len);
        if crc32c::crc32c(&data) != crc32c {
            return Err(format!("batch entry {id} fails its checksum"));
        }
        at += len;
        entries.push(BatchEntry { id, data, crc32c });
    }
    if entries.len() != count as usize {
        return Err(format!(
            "batch holds {} entries, its trailer says {count}",
            entries.len()
        ));
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: u128, data: &[u8]) -> BatchEntry {
        BatchEntry {
            id: ChunkId(id),
            data: Bytes::copy_from_slice(data),
            crc32c: crc32c::crc32c(data),
        }
    }

    #[test]
    fn batches_round_trip_and_damage_is_refused() {
        let entries = vec![entry(1, b"one"), entry(2, b""), entry(3, &[9u8; 5000])];
        let body = encode(&entries);
        assert_eq!(decode(&body).unwrap(), entries);
        assert_eq!(decode(&encode(&[])).unwrap(), vec![]);
        // Cut short, anywhere.
        for cut in [0, 1, 10, body.len() / 2, body.len() - 1] {
            assert!(decode(&body.slice(..cut)).is_err(), "cut at {cut}");
        }
        // A flipped data byte.
        let mut bad = body.to_vec();
        bad[ENTRY_HEADER_LEN + 1] ^= 1;
        assert!(decode(&Bytes::from(bad)).unwrap_err().contains("checksum"));
        // A wrong count.
        let mut bad = body.to_vec();
        let n = bad.len();
        bad[n - 8] = 7;
        assert!(decode(&Bytes::from(bad)).is_err());
    }
}
