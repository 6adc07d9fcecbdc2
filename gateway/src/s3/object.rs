//! Object operations: PutObject, GetObject, HeadObject, DeleteObject, DeleteObjects, and the
//! upload path UploadPart shares with PutObject.

use super::metadata;
use super::request::{content_md5, xml_response, S3Request};
use crate::auth::{ChecksumAlgo, ChecksumHasher};
use crate::data::{self, Stored};
use crate::error::{S3Error, S3Result};
use crate::xml::{self, elem};
use crate::Gateway;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method};
use axum::response::Response;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use md5::Digest;
use std::sync::Arc;
use tinydfs_proto::meta::{MetaRead, MetaReply, MetaWrite, WriteCondition};
use tinydfs_proto::time::http_date;
use tinydfs_proto::{ObjectAttrs, ObjectRecord};

/// System headers stored with an object and returned on GET/HEAD.
const STORED_HEADERS: &[&str] = &[
    "content-encoding",
    "content-disposition",
    "content-language",
    "cache-control",
    "expires",
];

/// Most keys one DeleteObjects may name, as on AWS.
const MAX_DELETE_KEYS: usize = 1000;

fn header_text(v: &HeaderValue) -> String {
    String::from_utf8_lossy(v.as_bytes()).into_owned()
}

/// The attributes of a new object from the request headers, values kept byte for byte (see
/// [`metadata`]).
pub fn attrs_from(headers: &HeaderMap) -> ObjectAttrs {
    let mut attrs = ObjectAttrs {
        content_type: headers
            .get("content-type")
            .map(|v| metadata::stored(v.as_bytes())),
        ..Default::default()
    };
    for (name, value) in headers {
        if let Some(meta) = name.as_str().strip_prefix("x-amz-meta-") {
            attrs
                .user_meta
                .push((meta.to_string(), metadata::stored(value.as_bytes())));
        }
    }
    for h in STORED_HEADERS {
        let Some(v) = headers.get(*h) else { continue };
        let v = if *h == "content-encoding" {
            match metadata::content_encoding(v.as_bytes()) {
                Some(v) => metadata::stored(&v),
                None => continue,
            }
        } else {
            metadata::stored(v.as_bytes())
        };
        attrs.headers.push((h.to_string(), v));
    }
    attrs.user_meta.sort();
    attrs
}

/// An upload's body stored as chunks, with its checksums verified.
pub struct Upload {
    pub stored: Stored,
    pub etag: String,
    pub checksums: Vec<(String, String)>,
}

/// Receives a request body into chunks: verifies Content-MD5, the payload hash or chunk
/// signatures, and any `x-amz-checksum-*` given as a header or a trailer.
pub async fn receive(gw: &Arc<Gateway>, req: &mut S3Request) -> S3Result<Upload> {
    receive_with(gw, req, None).await
}

/// The `x-amz-checksum-*` a request carries, as a header (with its value) or announced as a
/// trailer (`None`): at most one, well-formed, agreeing with `x-amz-sdk-checksum-algorithm`,
/// as AWS requires.
pub fn sent_checksum(req: &S3Request) -> S3Result<Option<(ChecksumAlgo, Option<String>)>> {
    let mut sent: Vec<(ChecksumAlgo, Option<String>)> = Vec::new();
    for (name, value) in &req.headers {
        let Some(suffix) = name.as_str().strip_prefix("x-amz-checksum-") else {
            continue;
        };
        if matches!(suffix, "mode" | "algorithm" | "type") {
            continue;
        }
        let algo = ChecksumAlgo::from_algorithm(suffix).ok_or_else(|| {
            S3Error::invalid_request(
                "The algorithm type you specified in x-amz-checksum- header is invalid.",
            )
        })?;
        let value = header_text(value);
        let raw = algo.decode(&value).ok_or_else(|| {
            S3Error::invalid_request(format!(
                "Value for {} header is invalid.",
                algo.header_name()
            ))
        })?;
        sent.push((algo, Some(STANDARD.encode(raw))));
    }
    if let Some(t) = req.header("x-amz-trailer") {
        let algo = ChecksumAlgo::from_header_name(t.trim()).ok_or_else(|| {
            S3Error::invalid_request(
                "The value specified in the x-amz-trailer header is not supported",
            )
        })?;
        sent.push((algo, None));
    }
    if sent.len() > 1 {
        return Err(S3Error::invalid_request(
            "Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed.",
        ));
    }
    let sent = sent.pop();
    if let (Some(sdk), Some((algo, _))) = (req.header("x-amz-sdk-checksum-algorithm"), &sent) {
        if ChecksumAlgo::from_algorithm(sdk.trim()) != Some(*algo) {
            return Err(S3Error::invalid_request(
                "Value for x-amz-sdk-checksum-algorithm header is invalid.",
            ));
        }
    }
    Ok(sent)
}

/// [`receive`], also computing `also` (the checksum algorithm of the multipart upload a part
/// belongs to) when the client did not send it; a checksum of another algorithm is refused,
/// as on AWS.
pub async fn receive_with(
    gw: &Arc<Gateway>,
    req: &mut S3Request,
    also: Option<ChecksumAlgo>,
) -> S3Result<Upload> {
    let content_md5 = content_md5(req.headers.get("content-md5").map(|v| v.as_bytes()))?;
    let sent = sent_checksum(req)?;
    if let (Some(want), Some((got, _))) = (also, &sent) {
        if want != *got {
            return Err(S3Error::invalid_request(format!(
                "Checksum Type mismatch occurred, expected checksum Type: {}, actual checksum Type: {}",
                want.name().to_ascii_lowercase(),
                got.name().to_ascii_lowercase()
            )));
        }
    }
    let mut hasher = sent
        .as_ref()
        .map(|(algo, _)| *algo)
        .or(also)
        .map(ChecksumHasher::new);
    let (body, trailers) = req.take_body();
    let stored = data::store(gw, body, &req.request_id, |b| {
        if let Some(h) = hasher.as_mut() {
            h.update(b);
        }
    })
    .await?;
    let mut checksums = Vec::new();
    if let Some(h) = hasher {
        let algo = h.algo();
        let expected = match &sent {
            None => None,
            Some((_, Some(header))) => Some(header.clone()),
            Some((_, None)) => {
                let value = trailers.get(algo.header_name()).ok_or_else(|| {
                    S3Error::invalid_request(format!(
                        "the trailer {} was announced but not sent",
                        algo.header_name()
                    ))
                })?;
                let raw = algo.decode(&value).ok_or_else(|| {
                    S3Error::invalid_request(format!(
                        "Value for {} trailing header is invalid.",
                        algo.header_name()
                    ))
                })?;
                Some(STANDARD.encode(raw))
            }
        };
        let computed = h.finish();
        if let Some(expected) = expected {
            if expected != computed {
                return Err(S3Error::new(
                    "BadDigest",
                    400,
                    format!(
                        "The {} you specified did not match the calculated checksum.",
                        algo.name()
                    ),
                ));
            }
        }
        checksums.push((algo.name().to_string(), computed));
    }
    if let Some(want) = content_md5 {
        if want != stored.md5 {
            return Err(S3Error::new(
                "BadDigest",
                400,
                "The Content-MD5 you specified did not match what we received.",
            ));
        }
    }
    let etag = hex::encode(stored.md5);
    Ok(Upload {
        stored,
        etag,
        checksums,
    })
}

/// Checks a small body read whole against its `Content-MD5` and `x-amz-checksum-*` header,
/// when given (DeleteObjects: current SDKs send a CRC32 and no Content-MD5).
pub fn check_body_digests(req: &S3Request, body: &[u8]) -> S3Result<()> {
    if let Some(v) = req.header("content-md5") {
        let want = STANDARD
            .decode(v.trim())
            .ok()
            .filter(|d| d.len() == 16)
            .ok_or_else(|| {
                S3Error::new(
                    "InvalidDigest",
                    400,
                    "The Content-MD5 you specified was invalid.",
                )
            })?;
        if want != md5::Md5::digest(body).as_slice() {
            return Err(S3Error::new(
                "BadDigest",
                400,
                "The Content-MD5 you specified did not match what we received.",
            ));
        }
    }
    if let Some((algo, Some(value))) = sent_checksum(req)? {
        let mut h = ChecksumHasher::new(algo);
        h.update(body);
        h.verify(&value)?;
    }
    Ok(())
}

/// Adds `x-amz-checksum-*` headers for stored checksums, and `x-amz-checksum-type`.
pub(super) fn checksum_headers(
    mut b: axum::http::response::Builder,
    checksums: &[(String, String)],
) -> axum::http::response::Builder {
    for (name, value) in checksums {
        b = b.header(format!("x-amz-checksum-{name}"), value);
    }
    if let Some((_, value)) = checksums.first() {
        b = b.header("x-amz-checksum-type", checksum_type(value));
    }
    b
}

/// `COMPOSITE` for a checksum of part checksums (its value ends in `-<parts>`), else
/// `FULL_OBJECT` (single PUTs, and multipart uploads with full-object CRCs).
pub(super) fn checksum_type(value: &str) -> &'static str {
    let composite = value
        .rsplit_once('-')
        .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    if composite {
        "COMPOSITE"
    } else {
        "FULL_OBJECT"
    }
}

/// `If-Match` / `If-None-Match` of a PUT. AWS documents only `*` for If-None-Match on writes;
/// ETags are taken too, as Ceph does (the write fails if the current object has one of them).
pub(super) fn write_condition(req: &S3Request) -> S3Result<Option<WriteCondition>> {
    let if_match = req
        .header("if-match")
        .map(|v| v.trim().trim_matches('"').to_string());
    let etags: Option<Vec<String>> = req.header("if-none-match").map(|v| {
        v.split(',')
            .map(|e| {
                e.trim()
                    .trim_start_matches("W/")
                    .trim_matches('"')
                    .to_string()
            })
            .filter(|e| !e.is_empty())
            .collect()
    });
    let (if_none_match, if_none_match_etags) = match etags {
        None => (false, None),
        Some(e) if e.iter().any(|e| e == "*") => (true, None),
        Some(e) if e.is_empty() => {
            return Err(S3Error::invalid_argument("If-None-Match is empty"));
        }
        Some(e) => (false, Some(e)),
    };
    let any = if_match.is_some() || if_none_match || if_none_match_etags.is_some();
    Ok(any.then_some(WriteCondition {
        if_match,
        if_none_match,
        if_none_match_etags,
    }))
}

/// Refuses, before any body is read, a condition the master group cannot apply yet: during a
/// rolling upgrade a master of an older release would ignore it and write unconditionally.
pub(super) async fn condition_enabled(
    gw: &Gateway,
    condition: &Option<WriteCondition>,
) -> S3Result<()> {
    let need = condition.as_ref().map_or(0, WriteCondition::feature_level);
    if need > 0 && gw.master.group_feature_level(need).await < need {
        return Err(S3Error::new(
            "NotImplemented",
            501,
            "If-None-Match with ETags on writes needs every master of the cluster upgraded",
        ));
    }
    Ok(())
}

pub async fn put(gw: Arc<Gateway>, mut req: S3Request) -> S3Result<Response> {
    let bucket = req.bucket()?.to_string();
    let key = req.key()?.to_string();
    let condition = write_condition(&req)?;
    condition_enabled(&gw, &condition).await?;
    let tags = super::tagging::from_header(&req)?;
    // Fail before reading the body when the bucket is missing (never auto-create), or when a
    // condition already fails.
    match &condition {
        None => {
            gw.master
                .read(MetaRead::HeadBucket {
                    bucket: bucket.clone(),
                })
                .await
                .map_err(|e| S3Error::from(e).with("BucketName", &bucket))?;
        }
        Some(c) => {
            let current = match gw
                .master
                .read(MetaRead::GetObject {
                    bucket: bucket.clone(),
                    key: key.clone(),
                })
                .await
            {
                Ok(MetaReply::Object(o)) => Some(o.record),
                Ok(_) => return Err(S3Error::internal("unexpected reply to GetObject")),
                Err(tinydfs_proto::meta::MetaError::NoSuchKey) => None,
                Err(e) => return Err(S3Error::from(e).with("BucketName", &bucket)),
            };
            c.check(current.as_ref()).map_err(|e| match e {
                tinydfs_proto::meta::MetaError::NoSuchKey => S3Error::no_such_key(&key),
                e => S3Error::from(e),
            })?;
        }
    }
    let attrs = attrs_from(&req.headers);
    let up = receive(&gw, &mut req).await?;
    let record = ObjectRecord {
        size: up.stored.size,
        etag: up.etag.clone(),
        content_type: attrs.content_type,
        user_meta: attrs.user_meta,
        headers: attrs.headers,
        checksums: up.checksums.clone(),
        last_modified_ms: 0,
        parts: Vec::new(),
        chunks: up.stored.chunks,
        tags,
    };
    gw.master
        .commit(
            MetaWrite::PutObject {
                bucket,
                key: key.clone(),
                record,
                condition: condition.clone(),
            },
            up.stored.locations,
        )
        .await
        .map_err(|e| match e {
            // The condition held when the upload began: a concurrent write won meanwhile.
            tinydfs_proto::meta::MetaError::PreconditionFailed | tinydfs_proto::meta::MetaError::NoSuchKey
                if condition.is_some() =>
            {
                S3Error::new(
                    "ConditionalRequestConflict",
                    409,
                    "A conflicting operation occurred. If using PutObject you can retry the request.",
                )
            }
            e => e.into(),
        })?;
    let b = Response::builder().header("etag", format!("\"{}\"", up.etag));
    Ok(checksum_headers(b, &up.checksums)
        .body(Body::empty())
        .unwrap_or_default())
}

/// A parsed `Range` header: `bytes=a-b`, `bytes=a-` or `bytes=-n`.
#[derive(Debug, PartialEq)]
pub enum Range {
    From(u64, Option<u64>),
    Suffix(u64),
}

/// Parses a single byte range; anything else (several ranges, other units, garbage) is ignored
/// and the whole object served, as S3 does.
pub fn parse_range(v: &str) -> Option<Range> {
    let spec = v.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    // Digits only (`u64::from_str` would take a `+` sign, which no range has).
    let num = |s: &str| -> Option<u64> {
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    if a.is_empty() {
        return num(b).map(Range::Suffix);
    }
    let start = num(a)?;
    if b.is_empty() {
        return Some(Range::From(start, None));
    }
    let end: u64 = num(b)?;
    (end >= start).then_some(Range::From(start, Some(end)))
}

/// Resolves a range against an object size into `start..end`; `None` when it cannot be
/// satisfied (416).
pub fn resolve_range(r: &Range, size: u64) -> Option<(u64, u64)> {
    match *r {
        Range::From(start, _) if start >= size => None,
        Range::From(start, end) => {
            Some((start, end.map_or(size, |e| e.saturating_add(1).min(size))))
        }
        Range::Suffix(0) => None,
        Range::Suffix(n) => Some((size.saturating_sub(n), size)),
    }
}

fn etag_matches(list: &str, etag: &str) -> bool {
    list.split(',')
        .map(|t| t.trim().trim_start_matches("W/").trim_matches('"'))
        .any(|t| t == "*" || t == etag)
}

/// Evaluates conditional headers: `Some(status)` when the request must stop there.
fn precondition(headers: &HeaderMap, rec: &ObjectRecord) -> Option<u16> {
    let get = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let modified = rec.last_modified_ms / 1000;
    let since = |v: &str| {
        httpdate::parse_http_date(v)
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs())
    };
    if let Some(m) = get("if-match") {
        if !etag_matches(m, &rec.etag) {
            return Some(412);
        }
    } else if let Some(t) = get("if-unmodified-since").and_then(since) {
        if modified > t {
            return Some(412);
        }
    }
    if let Some(m) = get("if-none-match") {
        if etag_matches(m, &rec.etag) {
            return Some(304);
        }
    } else if let Some(t) = get("if-modified-since").and_then(since) {
        if modified <= t {
            return Some(304);
        }
    }
    None
}

/// `response-*` query parameters that override headers of a GET answer.
const RESPONSE_OVERRIDES: &[(&str, &str)] = &[
    ("response-content-type", "content-type"),
    ("response-content-language", "content-language"),
    ("response-expires", "expires"),
    ("response-cache-control", "cache-control"),
    ("response-content-disposition", "content-disposition"),
    ("response-content-encoding", "content-encoding"),
];

pub async fn get(gw: Arc<Gateway>, req: S3Request) -> S3Result<Response> {
    let bucket = req.bucket()?.to_string();
    let key = req.key()?.to_string();
    let reply = gw
        .master
        .read(MetaRead::GetObject {
            bucket: bucket.clone(),
            key: key.clone(),
        })
        .await
        .map_err(|e| match e {
            tinydfs_proto::meta::MetaError::NoSuchKey => S3Error::no_such_key(&key),
            tinydfs_proto::meta::MetaError::NoSuchBucket => S3Error::no_such_bucket(&bucket),
            e => e.into(),
        })?;
    let MetaReply::Object(loc) = reply else {
        return Err(S3Error::internal("unexpected reply to GetObject"));
    };
    let rec = &loc.record;
    if let Some(status) = precondition(&req.headers, rec) {
        let mut e = if status == 412 {
            S3Error::new(
                "PreconditionFailed",
                412,
                "At least one of the pre-conditions you specified did not hold",
            )
        } else {
            S3Error::new("NotModified", 304, "Not Modified")
        };
        if status == 304 {
            e.headers.push(("etag", format!("\"{}\"", rec.etag)));
            return Ok(e.into_response_for(true, &req.request_id));
        }
        e.extra.push(("Condition", "If-Match".into()));
        return Err(e);
    }
    let size = rec.size;
    let mut range: Option<(u64, u64)> = None;
    let mut parts_count = None;
    if let Some(pn) = req.q("partNumber") {
        if req.headers.contains_key("range") {
            return Err(S3Error::invalid_request(
                "Cannot specify both Range header and partNumber query parameter",
            ));
        }
        let n: u32 = pn
            .parse()
            .ok()
            .filter(|n| (1..=10_000).contains(n))
            .ok_or_else(|| {
                S3Error::invalid_argument(
                    "Part number must be an integer between 1 and 10000, inclusive",
                )
                .with("ArgumentName", "partNumber")
            })?;
        if rec.parts.is_empty() {
            if n != 1 {
                return Err(S3Error::new(
                    "InvalidPartNumber",
                    400,
                    "The requested partnumber is not satisfiable",
                ));
            }
            range = Some((0, size));
        } else {
            let idx = (n - 1) as usize;
            if idx >= rec.parts.len() {
                return Err(S3Error::new(
                    "InvalidPartNumber",
                    400,
                    "The requested partnumber is not satisfiable",
                ));
            }
            let start: u64 = rec.parts[..idx].iter().map(|p| p.size).sum();
            range = Some((start, start + rec.parts[idx].size));
            parts_count = Some(rec.parts.len());
        }
    } else if let Some(r) = req.header("range").and_then(parse_range) {
        match resolve_range(&r, size) {
            Some(v) => range = Some(v),
            None => {
                let mut e = S3Error::new(
                    "InvalidRange",
                    416,
                    "The requested range is not satisfiable",
                )
                .with("RangeRequested", req.header("range").unwrap_or(""))
                .with("ActualObjectSize", size.to_string());
                e.headers.push(("content-range", format!("bytes */{size}")));
                return Err(e);
            }
        }
    }
    let (start, end) = range.unwrap_or((0, size));
    // A chunk of the range with no live copy known to a settled leader cannot be read now:
    // answer 503 at once rather than after the read path's wait for locations.
    if loc.settled && end > start && req.method != Method::HEAD {
        let mut offset = 0u64;
        for (c, replicas) in rec.chunks.iter().zip(&loc.replicas) {
            let overlaps = offset < end && offset + c.len > start;
            if overlaps && replicas.is_empty() {
                return Err(S3Error::unavailable(format!(
                    "chunk {} has no live copy",
                    c.id
                )));
            }
            offset += c.len;
        }
    }
    let content_type = rec
        .content_type
        .as_deref()
        .and_then(metadata::header_value)
        .unwrap_or(HeaderValue::from_static("binary/octet-stream"));
    let mut b = Response::builder()
        .header("content-length", end - start)
        .header("etag", format!("\"{}\"", rec.etag))
        .header("last-modified", http_date(rec.last_modified_ms))
        .header("accept-ranges", "bytes")
        .header("content-type", content_type);
    if range.is_some()
        && (req.has("partNumber") && parts_count.is_some() || req.header("range").is_some())
    {
        b = b.status(206).header(
            "content-range",
            format!("bytes {start}-{}/{size}", end.max(1) - 1),
        );
    }
    if let Some(n) = parts_count {
        b = b.header("x-amz-mp-parts-count", n);
    }
    // Values go back as the bytes that came (see `metadata`); one no header could carry (none
    // is stored) is left out rather than failing the whole answer.
    let stored = rec
        .user_meta
        .iter()
        .map(|(k, v)| (format!("x-amz-meta-{k}"), v))
        .chain(rec.headers.iter().map(|(k, v)| (k.clone(), v)));
    for (name, value) in stored {
        match (
            HeaderName::try_from(name.as_str()),
            metadata::header_value(value),
        ) {
            (Ok(name), Some(value)) => b = b.header(name, value),
            _ => tracing::warn!(header = %name, "a stored header cannot be sent; left out"),
        }
    }
    if !rec.tags.is_empty() {
        b = b.header("x-amz-tagging-count", rec.tags.len());
    }
    let whole =
        range.is_none() || (start == 0 && end == size && !req.headers.contains_key("range"));
    if whole
        && req
            .header("x-amz-checksum-mode")
            .is_some_and(|m| m.eq_ignore_ascii_case("enabled"))
    {
        b = checksum_headers(b, &rec.checksums);
    }
    for (q, h) in RESPONSE_OVERRIDES {
        if let Some(v) = req.q(q) {
            if let Some(headers) = b.headers_mut() {
                if let Ok(v) = HeaderValue::from_str(v) {
                    headers.insert(*h, v);
                }
            }
        }
    }
    // A header the builder refused (a stored value no header can carry) must not turn into an
    // empty 200: the object's headers are its metadata.
    if req.method == Method::HEAD || end == start {
        return b.body(Body::empty()).map_err(S3Error::internal);
    }
    let stream = data::read(
        gw.clone(),
        bucket,
        key,
        loc,
        start,
        end,
        req.request_id.clone(),
    );
    b.body(Body::from_stream(stream)).map_err(S3Error::internal)
}

pub async fn delete(gw: &Gateway, req: &S3Request) -> S3Result<Response> {
    let bucket = req.bucket()?.to_string();
    gw.master
        .write(MetaWrite::DeleteObject {
            bucket: bucket.clone(),
            key: req.key()?.to_string(),
        })
        .await
        .map_err(|e| S3Error::from(e).with("BucketName", &bucket))?;
    Ok(Response::builder()
        .status(204)
        .body(Body::empty())
        .unwrap_or_default())
}

pub async fn delete_many(gw: &Gateway, mut req: S3Request) -> S3Result<Response> {
    let bucket = req.bucket()?.to_string();
    let body = req.read_small_body().await?;
    check_body_digests(&req, &body)?;
    let doc = xml::parse_delete(&body)?;
    if doc.objects.is_empty() || doc.objects.len() > MAX_DELETE_KEYS {
        return Err(S3Error::malformed_xml());
    }
    let keys: Vec<String> = doc.objects.into_iter().map(|o| o.key).collect();
    gw.master
        .write(MetaWrite::DeleteObjects {
            bucket: bucket.clone(),
            keys: keys.clone(),
        })
        .await
        .map_err(|e| S3Error::from(e).with("BucketName", &bucket))?;
    // Every named key is deleted, present or not, as on S3.
    let deleted = keys;
    let mut out = xml::doc("DeleteResult");
    if doc.quiet != Some(true) {
        for k in &deleted {
            out.push_str("<Deleted>");
            elem(&mut out, "Key", k);
            out.push_str("</Deleted>");
        }
    }
    out.push_str("</DeleteResult>");
    Ok(xml_response(out))
}

#[cfg(test)]
mod tests;
