//! The in-memory form of an object record: what the master holds per object, a million times
//! over, so its size is the master's memory (docs/BENCHMARKS.md, "Master group").
//!
//! The wire type [`ObjectRecord`] has a `String` ETag, an optional content type and six vectors:
//! about 230 bytes before any heap allocation. [`Object`] keeps what almost every object has in
//! 64 fixed bytes — size, time, the ETag as the 16 bytes of its MD5, and the object's chunk when
//! it is a single chunk holding all its bytes (the length is then the size) — and everything
//! else (user metadata, other headers, checksums, parts, tags, several chunks, an ETag that is not
//! a plain MD5, an uncommon content type) in one optional boxed `Extras`. The conversion is
//! exact both ways, so snapshots and backups keep storing [`ObjectRecord`]s; a bucket's objects are
//! kept in a [`crate::namespace::Objects`].

use tinydfs_proto::{ChunkId, ChunkMeta, ObjectRecord, PartInfo};

/// How the content type is stored: the usual values without heap memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ContentType {
    /// None given (S3 answers `binary/octet-stream`).
    Absent,
    BinaryOctetStream,
    ApplicationOctetStream,
    /// Another value, in [`Extras::content_type`].
    Other,
}

const BINARY_OCTET_STREAM: &str = "binary/octet-stream";
const APPLICATION_OCTET_STREAM: &str = "application/octet-stream";

/// The rarely used parts of a record, allocated only for objects that have one of them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Extras {
    /// The ETag when it is not 32 lowercase hex digits (multipart `md5-N`, copies of those).
    etag: Option<Box<str>>,
    content_type: Option<Box<str>>,
    user_meta: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    checksums: Vec<(String, String)>,
    parts: Vec<PartInfo>,
    /// The chunk list when the object is not exactly one chunk holding all of it.
    chunks: Vec<ChunkMeta>,
    tags: Vec<(String, String)>,
}

/// An object record in 64 bytes plus, for objects with more than data, one boxed `Extras`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Object {
    pub size: u64,
    pub last_modified_ms: u64,
    /// The ETag's MD5 when it is a plain hex MD5 (`extras.etag` is then `None`).
    md5: [u8; 16],
    /// The single chunk's id (as two halves: a `u128` would align the record to 16 bytes), when
    /// `one_chunk`; its length is `size`.
    chunk: [u64; 2],
    chunk_crc32c: u32,
    one_chunk: bool,
    content_type: ContentType,
    extras: Option<Box<Extras>>,
}

fn split(id: ChunkId) -> [u64; 2] {
    [(id.0 >> 64) as u64, id.0 as u64]
}

fn join(halves: [u64; 2]) -> ChunkId {
    ChunkId((u128::from(halves[0]) << 64) | u128::from(halves[1]))
}

/// The 16 bytes of an ETag that is 32 lowercase hex digits (so that it prints back the same).
fn md5_of(etag: &str) -> Option<[u8; 16]> {
    if etag.len() != 32 || etag.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let mut out = [0u8; 16];
    hex::decode_to_slice(etag, &mut out).ok()?;
    Some(out)
}

impl Object {
    /// The compact form of `r`.
    pub fn from_record(r: ObjectRecord) -> Object {
        let mut extras = Extras::default();
        let md5 = match md5_of(&r.etag) {
            Some(m) => m,
            None => {
                extras.etag = Some(r.etag.into_boxed_str());
                [0; 16]
            }
        };
        let content_type = match r.content_type.as_deref() {
            None => ContentType::Absent,
            Some(BINARY_OCTET_STREAM) => ContentType::BinaryOctetStream,
            Some(APPLICATION_OCTET_STREAM) => ContentType::ApplicationOctetStream,
            Some(_) => {
                extras.content_type = r.content_type.map(String::into_boxed_str);
                ContentType::Other
            }
        };
        let single = match r.chunks.as_slice() {
            [c] if c.len == r.size => Some((split(c.id), c.crc32c)),
            _ => None,
        };
        if single.is_none() {
            extras.chunks = r.chunks;
        }
        extras.user_meta = r.user_meta;
        extras.headers = r.headers;
        extras.checksums = r.checksums;
        extras.parts = r.parts;
        extras.tags = r.tags;
        let (chunk, chunk_crc32c) = single.unwrap_or_default();
        Object {
            size: r.size,
            last_modified_ms: r.last_modified_ms,
            md5,
            chunk,
            chunk_crc32c,
            one_chunk: single.is_some(),
            content_type,
            extras: (extras != Extras::default()).then(|| Box::new(extras)),
        }
    }

    /// The wire form.
    pub fn to_record(&self) -> ObjectRecord {
        let x = self.extras.as_deref();
        ObjectRecord {
            size: self.size,
            etag: self.etag(),
            content_type: self.content_type(),
            user_meta: x.map(|x| x.user_meta.clone()).unwrap_or_default(),
            headers: x.map(|x| x.headers.clone()).unwrap_or_default(),
            checksums: x.map(|x| x.checksums.clone()).unwrap_or_default(),
            last_modified_ms: self.last_modified_ms,
            parts: x.map(|x| x.parts.clone()).unwrap_or_default(),
            chunks: self.chunks(),
            tags: x.map(|x| x.tags.clone()).unwrap_or_default(),
        }
    }

    /// The ETag, without quotes.
    pub fn etag(&self) -> String {
        match self.extras.as_deref().and_then(|x| x.etag.as_deref()) {
            Some(e) => e.to_string(),
            None => hex::encode(self.md5),
        }
    }

    fn content_type(&self) -> Option<String> {
        match self.content_type {
            ContentType::Absent => None,
            ContentType::BinaryOctetStream => Some(BINARY_OCTET_STREAM.into()),
            ContentType::ApplicationOctetStream => Some(APPLICATION_OCTET_STREAM.into()),
            ContentType::Other => self
                .extras
                .as_deref()
                .and_then(|x| x.content_type.as_deref())
                .map(String::from),
        }
    }

    /// The object's chunks, in order.
    pub fn chunks(&self) -> Vec<ChunkMeta> {
        if self.one_chunk {
            return vec![ChunkMeta {
                id: join(self.chunk),
                len: self.size,
                crc32c: self.chunk_crc32c,
            }];
        }
        self.extras
            .as_deref()
            .map(|x| x.chunks.clone())
            .unwrap_or_default()
    }

    /// Replaces the object's tags (empty: none).
    pub fn set_tags(&mut self, tags: Vec<(String, String)>) {
        let mut r = self.to_record();
        r.tags = tags;
        *self = Object::from_record(r);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(n: u128, len: u64) -> ChunkMeta {
        ChunkMeta {
            id: ChunkId((n << 100) | n),
            len,
            crc32c: n as u32,
        }
    }

    #[test]
    fn records_convert_exactly_both_ways() {
        let plain = ObjectRecord {
            size: 5,
            etag: "0123456789abcdef0123456789abcdef".into(),
            last_modified_ms: 7,
            chunks: vec![chunk(3, 5)],
            ..Default::default()
        };
        let o = Object::from_record(plain.clone());
        assert!(o.extras.is_none());
        assert_eq!(o.to_record(), plain);
        assert_eq!(std::mem::size_of::<Object>(), 64);

        let empty = ObjectRecord {
            etag: "d41d8cd98f00b204e9800998ecf8427e".into(),
            content_type: Some(BINARY_OCTET_STREAM.into()),
            ..Default::default()
        };
        let o = Object::from_record(empty.clone());
        assert!(o.extras.is_none());
        assert_eq!(o.to_record(), empty);

        let rich = ObjectRecord {
            size: 10,
            etag: "0123456789ABCDEF0123456789abcdef-2".into(),
            content_type: Some("text/plain".into()),
            user_meta: vec![("a".into(), "b".into())],
            headers: vec![("cache-control".into(), "no-cache".into())],
            checksums: vec![("crc32".into(), "AAAAAA==".into())],
            last_modified_ms: 9,
            parts: vec![PartInfo {
                number: 1,
                size: 10,
                etag: "x".into(),
                chunk_count: 2,
            }],
            chunks: vec![chunk(1, 4), chunk(2, 6)],
            tags: vec![("t".into(), "v".into())],
        };
        assert_eq!(Object::from_record(rich.clone()).to_record(), rich);
        // Upper-case hex would print back in lower case: kept as text.
        let upper = ObjectRecord {
            etag: "0123456789ABCDEF0123456789ABCDEF".into(),
            chunks: vec![chunk(1, 3)],
            size: 2,
            ..Default::default()
        };
        assert_eq!(Object::from_record(upper.clone()).to_record(), upper);
    }
}
