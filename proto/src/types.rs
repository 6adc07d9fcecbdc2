//! Identifiers and the metadata records the master keeps durable.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// A chunk's id: a random 128-bit value, so that a gateway can name chunks without asking anyone
/// and a PUT costs one consensus round (the commit). Written as 32 hex digits on the wire and on disk.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkId(pub u128);

impl ChunkId {
    /// A fresh random id outside any lease.
    pub fn random() -> Self {
        Self::in_lease(0)
    }

    /// A fresh id for a chunk written under upload lease `lease`: the lease id in the top 32
    /// bits, 96 random bits below. Garbage collection keeps an unreferenced chunk while its
    /// lease lives, so a slow upload is never collected under its writer.
    pub fn in_lease(lease: u32) -> Self {
        let random: u128 = rand::random::<u128>() >> 32;
        ChunkId((u128::from(lease) << 96) | random)
    }

    /// The upload lease this chunk was written under (0: none).
    pub fn lease(&self) -> u32 {
        (self.0 >> 96) as u32
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId({self})")
    }
}

impl FromStr for ChunkId {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 32 {
            // Reuse the integer parser's error type for a wrong length.
            return u128::from_str_radix("", 16).map(ChunkId);
        }
        u128::from_str_radix(s, 16).map(ChunkId)
    }
}

impl Serialize for ChunkId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for ChunkId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A node id in the cluster registry, allocated by applying a log entry.
pub type NodeId = u64;

/// One chunk of an object: its id, length and whole-chunk CRC32C.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkMeta {
    pub id: ChunkId,
    pub len: u64,
    pub crc32c: u32,
}

/// One part of a multipart object, in order: its size, ETag and how many of the object's chunks
/// belong to it (parts are contiguous runs of the chunk list).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartInfo {
    pub number: u32,
    pub size: u64,
    pub etag: String,
    pub chunk_count: u32,
}

/// The durable record of an object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRecord {
    pub size: u64,
    /// ETag without quotes: hex MD5, or `md5-of-md5s-N` for multipart objects.
    pub etag: String,
    pub content_type: Option<String>,
    /// `x-amz-meta-*` pairs, names lowercased without the prefix, values as sent.
    pub user_meta: Vec<(String, String)>,
    /// Other stored system headers (content-encoding, content-disposition, cache-control, ...).
    pub headers: Vec<(String, String)>,
    /// Checksums given or computed at upload (`crc32` -> base64), returned in checksum mode.
    pub checksums: Vec<(String, String)>,
    /// Set by the leader when the record is committed.
    pub last_modified_ms: u64,
    /// Parts of a multipart object, empty for a single PUT.
    pub parts: Vec<PartInfo>,
    pub chunks: Vec<ChunkMeta>,
    /// Object tags (key, value), in the order they were given; at most 10.
    #[serde(default)]
    pub tags: Vec<(String, String)>,
}

/// Attributes of a new object that the uploader chooses (everything but data and time).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectAttrs {
    pub content_type: Option<String>,
    pub user_meta: Vec<(String, String)>,
    pub headers: Vec<(String, String)>,
    /// Object tags (`x-amz-tagging`).
    #[serde(default)]
    pub tags: Vec<(String, String)>,
    /// The checksum a multipart upload computes for the object, chosen at
    /// CreateMultipartUpload (`x-amz-checksum-algorithm`, `x-amz-checksum-type`).
    #[serde(default)]
    pub checksum: Option<UploadChecksum>,
}

/// The object checksum of a multipart upload: an algorithm and how part checksums combine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadChecksum {
    /// As S3 spells it: `CRC32`, `CRC32C`, `CRC64NVME`, `SHA1`, `SHA256`.
    pub algorithm: String,
    /// `FULL_OBJECT` (the CRC of the whole object, combined from the parts' CRCs) rather than
    /// `COMPOSITE` (the checksum of the parts' binary checksums, with a `-N` suffix).
    pub full_object: bool,
}

/// A chunkserver as placement and reads see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAddr {
    pub id: NodeId,
    /// `host:port` of the chunkserver's internal listener.
    pub addr: String,
}
