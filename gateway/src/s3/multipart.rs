//! Multipart uploads: CreateMultipartUpload, UploadPart, CompleteMultipartUpload,
//! AbortMultipartUpload, ListParts. Complete concatenates the parts' chunk lists in the master: no
//! data is copied.
//!
//! An upload may carry a checksum algorithm and type chosen at Create; every part then gets a
//! checksum of that algorithm (verified when the client sends it, computed otherwise), and
//! Complete makes the object's checksum from the parts' checksums alone: a composite one, or
//! the CRC of the whole object combined from the parts' CRCs (see `auth::checksum`).

use super::object::{attrs_from, receive_with, write_condition};
use super::request::{xml_response, S3Request};
use crate::auth::{combine_parts, ChecksumAlgo};
use crate::error::{S3Error, S3Result};
use crate::xml::{self, elem};
use crate::Gateway;
use axum::body::Body;
use axum::http::HeaderValue;
use axum::response::Response;
use std::collections::HashMap;
use std::sync::Arc;
use tinydfs_proto::meta::{
    MetaError, MetaRead, MetaReply, MetaWrite, PartRecord, UploadInfo, UploadQuery,
};
use tinydfs_proto::time::iso8601;
use tinydfs_proto::UploadChecksum;

/// Highest part number S3 allows.
const MAX_PART_NUMBER: u32 = 10_000;
/// Most parts ListParts returns per page.
const MAX_PARTS: usize = 1000;

pub(super) fn upload_id(req: &S3Request) -> S3Result<String> {
    req.q("uploadId")
        .filter(|u| !u.is_empty())
        .map(str::to_string)
        .ok_or_else(|| S3Error::invalid_argument("uploadId is required"))
}

/// The `partNumber` of UploadPart and UploadPartCopy.
pub(super) fn part_number(req: &S3Request) -> S3Result<u32> {
    req.q("partNumber")
        .and_then(|n| n.parse().ok())
        .filter(|n| (1..=MAX_PART_NUMBER).contains(n))
        .ok_or_else(|| {
            S3Error::invalid_argument(
                "Part number must be an integer between 1 and 10000, inclusive",
            )
            .with("ArgumentName", "partNumber")
        })
}

/// `COMPOSITE` or `FULL_OBJECT`, as S3 spells the checksum type.
fn type_name(full_object: bool) -> &'static str {
    if full_object {
        "FULL_OBJECT"
    } else {
        "COMPOSITE"
    }
}

/// The checksum of a new upload from `x-amz-checksum-algorithm` and `x-amz-checksum-type`, with
/// AWS's rules: CRC64NVME is full-object only (and its default), SHA-1 and SHA-256 composite
/// only, CRC32 and CRC32C either (composite by default).
pub fn upload_checksum(req: &S3Request) -> S3Result<Option<UploadChecksum>> {
    let kind = match req.header("x-amz-checksum-type").map(str::trim) {
        None => None,
        Some(t) if t.eq_ignore_ascii_case("COMPOSITE") => Some(false),
        Some(t) if t.eq_ignore_ascii_case("FULL_OBJECT") => Some(true),
        Some(_) => {
            return Err(S3Error::invalid_request(
                "Value for x-amz-checksum-type header is invalid.",
            ))
        }
    };
    let Some(name) = req.header("x-amz-checksum-algorithm").map(str::trim) else {
        return match kind {
            None => Ok(None),
            Some(_) => Err(S3Error::invalid_request(
                "The x-amz-checksum-type header can only be used with the x-amz-checksum-algorithm header.",
            )),
        };
    };
    let algo = ChecksumAlgo::from_algorithm(name).ok_or_else(|| {
        S3Error::invalid_request(
            "Checksum algorithm provided is unsupported. Please try again with any of the valid types: [CRC32, CRC32C, CRC64NVME, SHA1, SHA256]",
        )
    })?;
    let full_object = kind.unwrap_or(algo == ChecksumAlgo::Crc64Nvme);
    if !algo.allows(full_object) {
        return Err(S3Error::invalid_request(format!(
            "The {} checksum type cannot be used with the {} checksum algorithm.",
            type_name(full_object),
            algo.name().to_ascii_lowercase()
        )));
    }
    Ok(Some(UploadChecksum {
        algorithm: algo.name().to_string(),
        full_object,
    }))
}

pub async fn create(gw: &Gateway, req: &S3Request) -> S3Result<Response> {
    let bucket = req.bucket()?.to_string();
    let key = req.key()?.to_string();
    let mut attrs = attrs_from(&req.headers);
    attrs.tags = super::tagging::from_header(req)?;
    attrs.checksum = upload_checksum(req)?;
    let checksum = attrs.checksum.clone();
    let reply = gw
        .master
        .write(MetaWrite::CreateUpload {
            bucket: bucket.clone(),
            key: key.clone(),
            attrs,
            initiator: req.auth.access_key.clone(),
        })
        .await
        .map_err(|e| S3Error::from(e).with("BucketName", &bucket))?;
    let MetaReply::UploadCreated { upload_id } = reply else {
        return Err(S3Error::internal("unexpected reply to CreateUpload"));
    };
    let mut out = xml::doc("InitiateMultipartUploadResult");
    elem(&mut out, "Bucket", &bucket);
    elem(&mut out, "Key", &key);
    elem(&mut out, "UploadId", &upload_id);
    out.push_str("</InitiateMultipartUploadResult>");
    let mut response = xml_response(out);
    if let Some(c) = checksum {
        let h = response.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&c.algorithm) {
            h.insert("x-amz-checksum-algorithm", v);
        }
        h.insert(
            "x-amz-checksum-type",
            HeaderValue::from_static(type_name(c.full_object)),
        );
    }
    Ok(response)
}

pub async fn upload_part(gw: Arc<Gateway>, mut req: S3Request) -> S3Result<Response> {
    let bucket = req.bucket()?.to_string();
    let key = req.key()?.to_string();
    let upload_id = upload_id(&req)?;
    let number = part_number(&req)?;
    // Fail before reading the body when the upload does not exist.
    let reply = gw
        .master
        .read(MetaRead::ListParts {
            bucket: bucket.clone(),
            key: key.clone(),
            upload_id: upload_id.clone(),
        })
        .await?;
    let MetaReply::Upload(info) = reply else {
        return Err(S3Error::internal("unexpected reply to ListParts"));
    };
    // Every part of an upload with a checksum algorithm gets a checksum of it.
    let algo = info
        .checksum
        .as_ref()
        .and_then(|c| ChecksumAlgo::from_algorithm(&c.algorithm));
    let up = receive_with(&gw, &mut req, algo).await?;
    let part = PartRecord {
        size: up.stored.size,
        etag: up.etag.clone(),
        last_modified_ms: 0,
        checksums: up.checksums.clone(),
        chunks: up.stored.chunks,
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
            up.stored.locations,
        )
        .await?;
    let mut b = Response::builder().header("etag", format!("\"{}\"", up.etag));
    for (name, value) in &up.checksums {
        b = b.header(format!("x-amz-checksum-{name}"), value);
    }
    Ok(b.body(Body::empty()).unwrap_or_default())
}

/// The object checksum of a Complete, from the parts as the upload holds them now (`info`):
/// part checksums given in the request must match the stored ones, and an upload with a
/// checksum algorithm needs one for every part. The master then checks that the parts it
/// commits are these ones (same ETags), so the checksum describes the committed object.
fn object_checksum(
    req: &S3Request,
    parts: &[xml::CompletedPart],
    info: &UploadInfo,
) -> S3Result<Vec<(String, String)>> {
    let stored: HashMap<u32, &PartRecord> = info.parts.iter().map(|(n, p)| (*n, p)).collect();
    let invalid_part = || {
        S3Error::new(
            "InvalidPart",
            400,
            "One or more of the specified parts could not be found. The part may not have been uploaded, or the specified entity tag may not have matched the part's entity tag.",
        )
    };
    for p in parts {
        let Some(rec) = stored.get(&p.number) else {
            continue; // The master answers InvalidPart.
        };
        if rec.etag != p.etag.trim().trim_matches('"') {
            return Err(invalid_part());
        }
        for (name, value) in p.checksums() {
            match rec.checksums.iter().find(|(n, _)| n == name) {
                Some((_, v)) if v == value => {}
                _ => return Err(invalid_part()),
            }
        }
    }
    let Some(spec) = &info.checksum else {
        return Ok(Vec::new());
    };
    let algo = ChecksumAlgo::from_algorithm(&spec.algorithm)
        .ok_or_else(|| S3Error::internal(format!("unknown algorithm {}", spec.algorithm)))?;
    let kind = type_name(spec.full_object);
    if let Some(t) = req.header("x-amz-checksum-type") {
        if !t.trim().eq_ignore_ascii_case(kind) {
            return Err(S3Error::invalid_request(format!(
                "The upload was created using the {kind} checksum mode. The complete request must use the same checksum mode."
            )));
        }
    }
    let mut digests = Vec::with_capacity(parts.len());
    // A composite checksum needs each part's checksum in the request too; checked after the
    // object checksum, so that a wrong one is BadDigest whatever else is missing (as on AWS).
    let mut unnamed = None;
    for (i, p) in parts.iter().enumerate() {
        // With checksums, part numbers start at 1 and follow each other, as on AWS.
        if p.number as usize != i + 1 {
            return Err(S3Error::new(
                "InvalidPartOrder",
                400,
                "The list of parts was not in ascending order. With checksums, part numbers must start at 1 and be consecutive.",
            ));
        }
        let Some(rec) = stored.get(&p.number) else {
            return Err(invalid_part());
        };
        let given = p.checksums().iter().any(|(n, _)| *n == algo.name());
        if !spec.full_object && !given {
            unnamed = unnamed.or(Some(p.number));
        }
        let raw = rec
            .checksums
            .iter()
            .find(|(n, _)| n == algo.name())
            .and_then(|(_, v)| algo.decode(v))
            .ok_or_else(|| {
                S3Error::invalid_request(format!(
                    "Part {} has no {} checksum (a part copied with UploadPartCopy has none yet).",
                    p.number,
                    algo.name()
                ))
            })?;
        digests.push((raw, rec.size));
    }
    let value = combine_parts(algo, spec.full_object, &digests)
        .ok_or_else(|| S3Error::internal("the part checksums do not combine"))?;
    // A whole-object checksum the client computed itself must match.
    if let Some(want) = req.header(algo.header_name()) {
        if want.trim() != value {
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
    if let Some(number) = unnamed {
        return Err(S3Error::invalid_request(format!(
            "The upload was created using a {} checksum. The complete request must include the checksum for each part. It was missing for part {number} in the request.",
            algo.name().to_ascii_lowercase(),
        )));
    }
    Ok(vec![(algo.name().to_string(), value)])
}

pub async fn complete(gw: Arc<Gateway>, mut req: S3Request) -> S3Result<Response> {
    let bucket = req.bucket()?.to_string();
    let key = req.key()?.to_string();
    let upload_id = upload_id(&req)?;
    let condition = write_condition(&req)?;
    super::object::condition_enabled(&gw, &condition).await?;
    let body = req.read_small_body().await?;
    let doc: xml::CompleteMultipartUpload = xml::parse(&body)?;
    // The upload as it is now; gone when this repeats a Complete (the master answers it again).
    let upload = match gw
        .master
        .read(MetaRead::ListParts {
            bucket: bucket.clone(),
            key: key.clone(),
            upload_id: upload_id.clone(),
        })
        .await
    {
        Ok(MetaReply::Upload(info)) => Some(info),
        Ok(_) => return Err(S3Error::internal("unexpected reply to ListParts")),
        Err(MetaError::NoSuchUpload) => None,
        Err(e) => return Err(S3Error::from(e).with("BucketName", &bucket)),
    };
    let checksums = match &upload {
        Some(info) => object_checksum(&req, &doc.parts, info)?,
        None => Vec::new(),
    };
    if let (Some(c), Some(_)) = (&condition, &upload) {
        // A condition that fails already is 412 (404 for If-Match on a missing key); one that
        // fails only when the commit applies lost to a concurrent write: 409 below.
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
            Err(MetaError::NoSuchKey) => None,
            Err(e) => return Err(S3Error::from(e).with("BucketName", &bucket)),
        };
        c.check(current.as_ref()).map_err(|e| match e {
            MetaError::NoSuchKey => S3Error::no_such_key(&key),
            e => S3Error::from(e),
        })?;
    }
    let parts = doc
        .parts
        .into_iter()
        .map(|p| (p.number, p.etag.trim().trim_matches('"').to_string()))
        .collect();
    let reply = gw
        .master
        .write(MetaWrite::CompleteUpload {
            bucket: bucket.clone(),
            key: key.clone(),
            upload_id,
            parts,
            checksums,
            condition: condition.clone(),
        })
        .await
        .map_err(|e| match e {
            MetaError::PreconditionFailed | MetaError::NoSuchKey if condition.is_some() => {
                S3Error::new(
                    "ConditionalRequestConflict",
                    409,
                    "A conflicting operation occurred. If using multipart upload you can retry the CompleteMultipartUpload request.",
                )
            }
            e => e.into(),
        })?;
    let (etag, checksums) = match reply {
        MetaReply::Completed {
            etag, checksums, ..
        } => (etag, checksums),
        MetaReply::Committed { etag, .. } => (etag, Vec::new()),
        _ => return Err(S3Error::internal("unexpected reply to CompleteUpload")),
    };
    let mut out = xml::doc("CompleteMultipartUploadResult");
    elem(&mut out, "Location", &format!("/{bucket}/{key}"));
    elem(&mut out, "Bucket", &bucket);
    elem(&mut out, "Key", &key);
    elem(&mut out, "ETag", &format!("\"{etag}\""));
    for (name, value) in &checksums {
        elem(&mut out, &format!("Checksum{name}"), value);
    }
    if let Some((_, value)) = checksums.first() {
        elem(
            &mut out,
            "ChecksumType",
            super::object::checksum_type(value),
        );
    }
    out.push_str("</CompleteMultipartUploadResult>");
    Ok(xml_response(out))
}

pub async fn abort(gw: &Gateway, req: &S3Request) -> S3Result<Response> {
    abort_upload(gw, req.bucket()?, req.key()?, &upload_id(req)?).await?;
    Ok(Response::builder()
        .status(204)
        .body(Body::empty())
        .unwrap_or_default())
}

/// Aborts an upload: the master forgets it and drops its parts' references to their chunks,
/// which become garbage (AbortMultipartUpload, and DeleteBucket of a bucket left with uploads).
pub(super) async fn abort_upload(
    gw: &Gateway,
    bucket: &str,
    key: &str,
    upload_id: &str,
) -> Result<(), MetaError> {
    gw.master
        .write(MetaWrite::AbortUpload {
            bucket: bucket.to_string(),
            key: key.to_string(),
            upload_id: upload_id.to_string(),
        })
        .await
        .map(|_| ())
}

pub async fn list_parts(gw: &Gateway, req: &S3Request) -> S3Result<Response> {
    let bucket = req.bucket()?.to_string();
    let key = req.key()?.to_string();
    let upload_id = upload_id(req)?;
    let max = match req.q("max-parts") {
        None => MAX_PARTS,
        Some(v) => v
            .parse::<usize>()
            .map(|n| n.min(MAX_PARTS))
            .map_err(|_| S3Error::invalid_argument("max-parts must be an integer"))?,
    };
    let marker: u32 = match req.q("part-number-marker") {
        None => 0,
        Some(v) => v
            .parse()
            .map_err(|_| S3Error::invalid_argument("part-number-marker must be an integer"))?,
    };
    let reply = gw
        .master
        .read(MetaRead::ListParts {
            bucket: bucket.clone(),
            key: key.clone(),
            upload_id: upload_id.clone(),
        })
        .await?;
    let MetaReply::Upload(info) = reply else {
        return Err(S3Error::internal("unexpected reply to ListParts"));
    };
    let after: Vec<_> = info.parts.iter().filter(|(n, _)| *n > marker).collect();
    let truncated = after.len() > max;
    let page = &after[..after.len().min(max)];
    let mut out = xml::doc("ListPartsResult");
    elem(&mut out, "Bucket", &bucket);
    elem(&mut out, "Key", &key);
    elem(&mut out, "UploadId", &upload_id);
    elem(&mut out, "PartNumberMarker", &marker.to_string());
    if let Some((n, _)) = page.last() {
        elem(&mut out, "NextPartNumberMarker", &n.to_string());
    }
    elem(&mut out, "MaxParts", &max.to_string());
    elem(
        &mut out,
        "IsTruncated",
        if truncated { "true" } else { "false" },
    );
    elem(&mut out, "StorageClass", "STANDARD");
    if let Some(c) = &info.checksum {
        elem(&mut out, "ChecksumAlgorithm", &c.algorithm);
        elem(&mut out, "ChecksumType", type_name(c.full_object));
    }
    for (n, p) in page {
        out.push_str("<Part>");
        elem(&mut out, "PartNumber", &n.to_string());
        elem(&mut out, "LastModified", &iso8601(p.last_modified_ms));
        elem(&mut out, "ETag", &format!("\"{}\"", p.etag));
        elem(&mut out, "Size", &p.size.to_string());
        for (name, value) in &p.checksums {
            elem(&mut out, &format!("Checksum{name}"), value);
        }
        out.push_str("</Part>");
    }
    out.push_str("</ListPartsResult>");
    Ok(xml_response(out))
}

/// Most uploads ListMultipartUploads returns per page (also its default), as on AWS.
const MAX_UPLOADS: usize = 1000;

/// ListMultipartUploads (`GET /bucket?uploads`): the master orders and pages the uploads; this
/// handles parameters and `encoding-type=url`.
pub async fn list_uploads(gw: &Gateway, req: &S3Request) -> S3Result<Response> {
    use percent_encoding::utf8_percent_encode;
    let bucket = req.bucket()?.to_string();
    let url = match req.q("encoding-type") {
        None => false,
        Some("url") => true,
        Some(_) => {
            return Err(
                S3Error::invalid_argument("Invalid Encoding Method specified in Request")
                    .with("ArgumentName", "encoding-type"),
            )
        }
    };
    let enc = |s: &str| -> String {
        if url {
            utf8_percent_encode(s, super::list::URL_KEEP).to_string()
        } else {
            s.to_string()
        }
    };
    let max = match req.q("max-uploads") {
        None => MAX_UPLOADS,
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .map(|n| (n as usize).min(MAX_UPLOADS))
            .ok_or_else(|| {
                S3Error::invalid_argument(
                    "Provided max-uploads not an integer or within integer range",
                )
                .with("ArgumentName", "max-uploads")
            })?,
    };
    let prefix = req.q("prefix").unwrap_or("").to_string();
    let delimiter = req
        .q("delimiter")
        .filter(|d| !d.is_empty())
        .map(str::to_string);
    let key_marker = req.q("key-marker").unwrap_or("").to_string();
    let upload_id_marker = req.q("upload-id-marker").unwrap_or("").to_string();
    let reply = gw
        .master
        .read(MetaRead::ListUploads(UploadQuery {
            bucket: bucket.clone(),
            prefix: prefix.clone(),
            delimiter: delimiter.clone(),
            key_marker: Some(key_marker.clone()).filter(|k| !k.is_empty()),
            upload_id_marker: Some(upload_id_marker.clone()).filter(|u| !u.is_empty()),
            max_uploads: max,
        }))
        .await
        .map_err(|e| S3Error::from(e).with("BucketName", &bucket))?;
    let MetaReply::Uploads(page) = reply else {
        return Err(S3Error::internal("unexpected reply to ListUploads"));
    };
    let mut out = xml::doc("ListMultipartUploadsResult");
    elem(&mut out, "Bucket", &bucket);
    elem(&mut out, "KeyMarker", &enc(&key_marker));
    elem(&mut out, "UploadIdMarker", &upload_id_marker);
    if page.truncated {
        if let Some(k) = &page.next_key_marker {
            elem(&mut out, "NextKeyMarker", &enc(k));
        }
        if let Some(u) = &page.next_upload_id_marker {
            elem(&mut out, "NextUploadIdMarker", u);
        }
    }
    if let Some(d) = &delimiter {
        elem(&mut out, "Delimiter", &enc(d));
    }
    elem(&mut out, "Prefix", &enc(&prefix));
    elem(&mut out, "MaxUploads", &max.to_string());
    if url {
        elem(&mut out, "EncodingType", "url");
    }
    elem(
        &mut out,
        "IsTruncated",
        if page.truncated { "true" } else { "false" },
    );
    for u in &page.uploads {
        out.push_str("<Upload>");
        elem(&mut out, "Key", &enc(&u.key));
        elem(&mut out, "UploadId", &u.upload_id);
        for who in ["Initiator", "Owner"] {
            out.push('<');
            out.push_str(who);
            out.push('>');
            elem(&mut out, "ID", &u.initiator);
            elem(&mut out, "DisplayName", &u.initiator);
            out.push_str("</");
            out.push_str(who);
            out.push('>');
        }
        elem(&mut out, "StorageClass", "STANDARD");
        elem(&mut out, "Initiated", &iso8601(u.initiated_ms));
        out.push_str("</Upload>");
    }
    for p in &page.common_prefixes {
        out.push_str("<CommonPrefixes>");
        elem(&mut out, "Prefix", &enc(p));
        out.push_str("</CommonPrefixes>");
    }
    out.push_str("</ListMultipartUploadsResult>");
    Ok(xml_response(out))
}
