//! Server-side copies: CopyObject and UploadPartCopy. Neither moves the bytes it can avoid
//! moving: CopyObject is one state-machine entry whose destination shares the source's chunks
//! (reference counted by the master), and UploadPartCopy shares every chunk that lies wholly
//! inside the copied range, copying through this gateway only the bytes of the (at most two)
//! chunks the range covers partly.

use super::request::{xml_response, S3Request};
use super::router::{parse_query, MAX_KEY_LEN};
use super::{bucket, multipart, object};
use crate::data;
use crate::error::{S3Error, S3Result};
use crate::xml::{self, elem};
use crate::{Gateway, UploadLease};
use axum::response::Response;
use futures_util::StreamExt;
use md5::{Digest, Md5};
use std::sync::Arc;
use tinydfs_proto::meta::{
    CopyCondition, MetaError, MetaRead, MetaReply, MetaWrite, ObjectLocation, PartRecord,
    Permission,
};
use tinydfs_proto::time::{iso8601, now_ms};
use tinydfs_proto::ChunkMeta;

/// The bucket and key named by `x-amz-copy-source`: `bucket/key` or `/bucket/key`, URL-encoded,
/// optionally followed by `?versionId=null` (the only version there is without versioning).
pub fn parse_copy_source(value: &str) -> S3Result<(String, String)> {
    let bad = || {
        S3Error::invalid_argument(
            "Copy Source must mention the source bucket and key: sourcebucket/sourcekey",
        )
        .with("ArgumentName", "x-amz-copy-source")
    };
    let (path, query) = match value.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (value, None),
    };
    if let Some(q) = query {
        for (k, v) in parse_query(Some(q)) {
            if k == "versionId" && v != "null" {
                return Err(S3Error::new(
                    "NoSuchVersion",
                    404,
                    "The specified version does not exist.",
                ));
            }
        }
    }
    let path = path.strip_prefix('/').unwrap_or(path);
    let decoded = percent_encoding::percent_decode_str(path)
        .decode_utf8()
        .map_err(|_| bad())?;
    let (bucket, key) = decoded.split_once('/').ok_or_else(bad)?;
    if bucket.is_empty() || key.is_empty() {
        return Err(bad());
    }
    if key.len() > MAX_KEY_LEN {
        return Err(S3Error::new("KeyTooLongError", 400, "Your key is too long"));
    }
    Ok((bucket.to_string(), key.to_string()))
}

/// The request's `x-amz-copy-source-if-*` headers. Dates that do not parse are ignored, and so
/// is an `if-modified-since` in the future, as HTTP (RFC 9110) has it.
pub fn copy_condition(req: &S3Request, now_secs: u64) -> Option<CopyCondition> {
    let text = |n: &str| req.header(n).map(|v| v.trim().to_string());
    let date = |n: &str| {
        req.header(n)
            .and_then(|v| httpdate::parse_http_date(v.trim()).ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs())
    };
    let c = CopyCondition {
        if_match: text("x-amz-copy-source-if-match"),
        if_none_match: text("x-amz-copy-source-if-none-match"),
        if_modified_since: date("x-amz-copy-source-if-modified-since").filter(|t| *t <= now_secs),
        if_unmodified_since: date("x-amz-copy-source-if-unmodified-since"),
    };
    (c != CopyCondition::default()).then_some(c)
}

fn now_secs() -> u64 {
    now_ms() / 1000
}

/// The key must be allowed to read the source bucket (the destination's write permission was
/// checked with the request); a `public-read` bucket may be read by anyone.
async fn authorize_source(gw: &Gateway, req: &S3Request, src_bucket: &str) -> S3Result<()> {
    let allowed = || {
        gw.key(&req.auth.access_key)
            .is_some_and(|k| k.allows(src_bucket, Permission::Read))
    };
    if allowed() {
        return Ok(());
    }
    // A grant made moments ago may not be in this gateway's copy of the keys yet.
    if crate::reload_keys(gw).await && allowed() {
        return Ok(());
    }
    if bucket::is_public(gw, src_bucket).await? {
        return Ok(());
    }
    Err(S3Error::access_denied())
}

/// What a `x-amz-metadata-directive` or `x-amz-tagging-directive` header asks for: true for
/// REPLACE, false for COPY (the default).
fn replaces(req: &S3Request, header: &'static str, what: &str) -> S3Result<bool> {
    match req.header(header).map(str::trim) {
        None | Some("COPY") => Ok(false),
        Some("REPLACE") => Ok(true),
        Some(_) => Err(
            S3Error::invalid_argument(format!("Unknown {what} directive."))
                .with("ArgumentName", header),
        ),
    }
}

pub async fn copy_object(gw: Arc<Gateway>, req: S3Request) -> S3Result<Response> {
    let dst_bucket = req.bucket()?.to_string();
    let dst_key = req.key()?.to_string();
    let (src_bucket, src_key) = parse_copy_source(req.header("x-amz-copy-source").unwrap_or(""))?;
    let replace = replaces(&req, "x-amz-metadata-directive", "metadata")?;
    let replace_tags = replaces(&req, "x-amz-tagging-directive", "tagging")?;
    // A copy onto itself must change something, as on AWS (rclone sets modification times
    // with REPLACE). A storage class counts as a change there: `aws s3 cp --storage-class`.
    let onto_itself = src_bucket == dst_bucket && src_key == dst_key;
    if onto_itself && !replace && !replace_tags && !req.headers.contains_key("x-amz-storage-class")
    {
        return Err(S3Error::invalid_request(
            "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes.",
        ));
    }
    authorize_source(&gw, &req, &src_bucket).await?;
    let condition = object::write_condition(&req)?;
    object::condition_enabled(&gw, &condition).await?;
    let attrs = object::attrs_from(&req.headers);
    let write = MetaWrite::CopyObject {
        src_bucket: src_bucket.clone(),
        src_key: src_key.clone(),
        dst_bucket: dst_bucket.clone(),
        dst_key: dst_key.clone(),
        tags: if replace_tags {
            Some(super::tagging::from_header(&req)?)
        } else {
            None
        },
        attrs: replace.then_some(attrs),
        source_condition: copy_condition(&req, now_secs()),
        condition,
    };
    let reply = match gw.master.write(write).await {
        Ok(r) => r,
        Err(e) => {
            return Err(copy_error(&gw, e, (&src_bucket, &src_key), (&dst_bucket, &dst_key)).await)
        }
    };
    let MetaReply::Committed {
        etag,
        last_modified_ms,
    } = reply
    else {
        return Err(S3Error::internal("unexpected reply to CopyObject"));
    };
    let mut out = xml::doc("CopyObjectResult");
    elem(&mut out, "LastModified", &iso8601(last_modified_ms));
    elem(&mut out, "ETag", &format!("\"{etag}\""));
    out.push_str("</CopyObjectResult>");
    Ok(xml_response(out))
}

/// Names the bucket or key a failed copy missed: the master's answer does not say whether it
/// was the source or the destination, so ask (on the error path only).
async fn copy_error(
    gw: &Gateway,
    e: MetaError,
    (src_bucket, src_key): (&str, &str),
    (dst_bucket, dst_key): (&str, &str),
) -> S3Error {
    let exists = |bucket: &str, key: &str| {
        let read = MetaRead::GetObject {
            bucket: bucket.to_string(),
            key: key.to_string(),
        };
        async move { gw.master.read(read).await.is_ok() }
    };
    match e {
        MetaError::NoSuchBucket => {
            let src_there = gw
                .master
                .read(MetaRead::HeadBucket {
                    bucket: src_bucket.to_string(),
                })
                .await
                .is_ok();
            S3Error::no_such_bucket(if src_there { dst_bucket } else { src_bucket })
        }
        // The source is missing, or an If-Match names a destination that is not there.
        MetaError::NoSuchKey if exists(src_bucket, src_key).await => S3Error::no_such_key(dst_key),
        MetaError::NoSuchKey => S3Error::no_such_key(src_key),
        e => e.into(),
    }
}

/// Parses `x-amz-copy-source-range: bytes=first-last` against the source size into
/// `start..end`: malformed is 400 InvalidArgument, beyond the source 416 InvalidRange.
pub fn parse_copy_range(value: &str, size: u64) -> S3Result<(u64, u64)> {
    let bad = || {
        S3Error::invalid_argument(
            "The x-amz-copy-source-range value must be of the form bytes=first-last where first and last are the zero-based offsets of the first and last bytes to copy",
        )
        .with("ArgumentName", "x-amz-copy-source-range")
    };
    let number = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let spec = value.trim().strip_prefix("bytes=").ok_or_else(bad)?;
    let (a, b) = spec.split_once('-').ok_or_else(bad)?;
    let (first, last) = number(a).zip(number(b)).ok_or_else(bad)?;
    if first > last {
        return Err(bad());
    }
    if last >= size {
        return Err(S3Error::new(
            "InvalidRange",
            416,
            "The requested range is not satisfiable",
        )
        .with("RangeRequested", value.trim())
        .with("ActualObjectSize", size.to_string()));
    }
    Ok((first, last + 1))
}

/// One piece of a part made from a byte range of a source's chunks.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece {
    /// A source chunk wholly inside the range: referenced, not copied.
    Share(ChunkMeta),
    /// Source bytes `start..end` of chunks the range covers partly: read and stored anew.
    Copy(u64, u64),
}

/// How the bytes `start..end` of an object made of `chunks` become a part: whole chunks are
/// shared, the covered bytes of partly covered chunks copied (adjacent ones in one piece).
pub fn plan(chunks: &[ChunkMeta], start: u64, end: u64) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut offset = 0u64;
    for c in chunks {
        let (from, to) = (offset, offset + c.len);
        offset = to;
        if c.len == 0 || to <= start || from >= end || start >= end {
            continue;
        }
        if start <= from && to <= end {
            pieces.push(Piece::Share(c.clone()));
            continue;
        }
        let (a, b) = (from.max(start), to.min(end));
        match pieces.last_mut() {
            Some(Piece::Copy(_, e)) if *e == a => *e = b,
            _ => pieces.push(Piece::Copy(a, b)),
        }
    }
    pieces
}

/// The ETag of a copied part. The whole of a single-PUT source keeps its ETag, which is the MD5
/// of these bytes; for other ranges it is derived from the source's ETag and the range without
/// reading the shared chunks, so equal ETags still mean equal bytes (clients use part ETags
/// only to name parts in CompleteMultipartUpload).
pub fn part_etag(source: &tinydfs_proto::ObjectRecord, start: u64, end: u64) -> String {
    if start == 0 && end == source.size && source.parts.is_empty() {
        return source.etag.clone();
    }
    let id = format!("tinydfs-copy:{}:{start}-{end}", source.etag);
    hex::encode(Md5::digest(id.as_bytes()))
}

pub async fn upload_part_copy(gw: Arc<Gateway>, req: S3Request) -> S3Result<Response> {
    let bucket = req.bucket()?.to_string();
    let key = req.key()?.to_string();
    let upload_id = multipart::upload_id(&req)?;
    let number = multipart::part_number(&req)?;
    let (src_bucket, src_key) = parse_copy_source(req.header("x-amz-copy-source").unwrap_or(""))?;
    authorize_source(&gw, &req, &src_bucket).await?;
    let upload = gw
        .master
        .read(MetaRead::ListParts {
            bucket: bucket.clone(),
            key: key.clone(),
            upload_id: upload_id.clone(),
        })
        .await?;
    // A copied part shares chunks without reading them, so it has no part checksum: an upload
    // that needs one for every part is refused plainly rather than failing at Complete.
    if let MetaReply::Upload(u) = &upload {
        if u.checksum.is_some() {
            return Err(S3Error::not_implemented(
                "UploadPartCopy into a multipart upload created with a checksum algorithm",
            ));
        }
    }
    let reply = gw
        .master
        .read(MetaRead::GetObject {
            bucket: src_bucket.clone(),
            key: src_key.clone(),
        })
        .await
        .map_err(|e| match e {
            MetaError::NoSuchKey => S3Error::no_such_key(&src_key),
            MetaError::NoSuchBucket => S3Error::no_such_bucket(&src_bucket),
            e => e.into(),
        })?;
    let MetaReply::Object(loc) = reply else {
        return Err(S3Error::internal("unexpected reply to GetObject"));
    };
    if let Some(c) = copy_condition(&req, now_secs()) {
        c.check(&loc.record)?;
    }
    let (start, end) = match req.header("x-amz-copy-source-range") {
        Some(r) => parse_copy_range(r, loc.record.size)?,
        None => (0, loc.record.size),
    };
    let etag = part_etag(&loc.record, start, end);
    let mut chunks = Vec::new();
    let mut locations = Vec::new();
    // The leases the copied chunks are named under, held (so renewed) until the commit.
    let mut leases: Vec<Arc<UploadLease>> = Vec::new();
    for piece in plan(&loc.record.chunks, start, end) {
        match piece {
            Piece::Share(c) => chunks.push(c),
            Piece::Copy(a, b) => {
                let stored = copy_bytes(&gw, &src_bucket, &src_key, &loc, a, b, &req).await?;
                chunks.extend(stored.chunks);
                locations.extend(stored.locations);
                leases.push(stored.lease);
            }
        }
    }
    let part = PartRecord {
        size: end - start,
        etag: etag.clone(),
        last_modified_ms: 0,
        checksums: Vec::new(),
        chunks,
    };
    gw.master
        .commit(
            MetaWrite::PutPart {
                bucket,
                key,
                upload_id,
                number,
                part,
            },
            locations,
        )
        .await?;
    drop(leases);
    let mut out = xml::doc("CopyPartResult");
    elem(&mut out, "LastModified", &iso8601(now_ms()));
    elem(&mut out, "ETag", &format!("\"{etag}\""));
    out.push_str("</CopyPartResult>");
    Ok(xml_response(out))
}

/// Reads source bytes `start..end` from the chunkservers and stores them as new chunks.
async fn copy_bytes(
    gw: &Arc<Gateway>,
    src_bucket: &str,
    src_key: &str,
    loc: &ObjectLocation,
    start: u64,
    end: u64,
    req: &S3Request,
) -> S3Result<data::Stored> {
    let stream = data::read(
        gw.clone(),
        src_bucket.to_string(),
        src_key.to_string(),
        loc.clone(),
        start,
        end,
        req.request_id.clone(),
    )
    .map(|r| r.map_err(|e| S3Error::unavailable(format!("reading the copy source: {e}"))))
    .boxed();
    let stored = data::store(gw, stream, &req.request_id, |_| {}).await?;
    if stored.size != end - start {
        return Err(S3Error::unavailable(format!(
            "the copy source gave {} bytes of {}",
            stored.size,
            end - start
        )));
    }
    Ok(stored)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tinydfs_proto::ChunkId;

    fn chunk(n: u128, len: u64) -> ChunkMeta {
        ChunkMeta {
            id: ChunkId(n),
            len,
            crc32c: 0,
        }
    }

    #[test]
    fn copy_sources_parse_like_s3() {
        let ok = |v: &str| parse_copy_source(v).unwrap();
        assert_eq!(ok("b/k"), ("b".into(), "k".into()));
        assert_eq!(ok("/b/dir/k"), ("b".into(), "dir/k".into()));
        assert_eq!(ok("/b/a%20b%2Fc%C3%BC"), ("b".into(), "a b/cü".into()));
        assert_eq!(ok("b/k?versionId=null"), ("b".into(), "k".into()));
        assert_eq!(ok("b/what%3F"), ("b".into(), "what?".into()));
        let code = |v: &str| parse_copy_source(v).unwrap_err().code;
        assert_eq!(code("b/k?versionId=abc"), "NoSuchVersion");
        for bad in ["", "b", "/b", "b/", "/b/", "b/%FF"] {
            assert_eq!(code(bad), "InvalidArgument", "{bad:?}");
        }
    }

    #[test]
    fn copy_ranges_validate_like_s3() {
        assert_eq!(parse_copy_range("bytes=0-9", 10).unwrap(), (0, 10));
        assert_eq!(parse_copy_range("bytes=3-3", 10).unwrap(), (3, 4));
        for bad in [
            "0-2",
            "bytes=0",
            "bytes=hello-world",
            "bytes=0-bar",
            "bytes=hello-",
            "bytes=0-2,3-5",
            "bytes=-5",
            "bytes=5-",
            "bytes=5-4",
            "bytes=+1-2",
        ] {
            let e = parse_copy_range(bad, 10).unwrap_err();
            assert_eq!(
                (e.code, e.status.as_u16()),
                ("InvalidArgument", 400),
                "{bad}"
            );
        }
        for beyond in ["bytes=0-10", "bytes=10-12"] {
            let e = parse_copy_range(beyond, 10).unwrap_err();
            assert_eq!(
                (e.code, e.status.as_u16()),
                ("InvalidRange", 416),
                "{beyond}"
            );
        }
    }

    #[test]
    fn ranges_share_whole_chunks_and_copy_partial_ones() {
        let chunks = [chunk(1, 10), chunk(2, 10), chunk(3, 10), chunk(4, 5)];
        // The whole object: everything shared.
        assert_eq!(
            plan(&chunks, 0, 35),
            chunks.iter().cloned().map(Piece::Share).collect::<Vec<_>>()
        );
        // Partial ends, whole middle.
        assert_eq!(
            plan(&chunks, 5, 32),
            vec![
                Piece::Copy(5, 10),
                Piece::Share(chunk(2, 10)),
                Piece::Share(chunk(3, 10)),
                Piece::Copy(30, 32),
            ]
        );
        // Inside one chunk.
        assert_eq!(plan(&chunks, 12, 18), vec![Piece::Copy(12, 18)]);
        // Across one boundary with no whole chunk: one copied piece.
        assert_eq!(plan(&chunks, 15, 25), vec![Piece::Copy(15, 25)]);
        // Exactly one chunk.
        assert_eq!(plan(&chunks, 10, 20), vec![Piece::Share(chunk(2, 10))]);
        assert!(plan(&chunks, 7, 7).is_empty());
        assert!(plan(&[], 0, 0).is_empty());
    }

    #[test]
    fn copied_part_etags() {
        let single = tinydfs_proto::ObjectRecord {
            size: 10,
            etag: "abc".into(),
            ..Default::default()
        };
        assert_eq!(part_etag(&single, 0, 10), "abc");
        let a = part_etag(&single, 0, 5);
        assert_eq!(a.len(), 32);
        assert_ne!(a, part_etag(&single, 5, 10));
        assert_eq!(a, part_etag(&single, 0, 5));
        let multi = tinydfs_proto::ObjectRecord {
            parts: vec![tinydfs_proto::PartInfo {
                number: 1,
                size: 10,
                etag: "p".into(),
                chunk_count: 1,
            }],
            ..single
        };
        assert_ne!(part_etag(&multi, 0, 10), "abc");
    }
}
