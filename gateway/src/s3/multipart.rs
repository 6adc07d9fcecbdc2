//! Multipart uploads: CreateMultipartUpload, UploadPart, CompleteMultipartUpload,
//! AbortMultipartUpload, ListParts. Complete concatenates the parts' chunk lists in the master: no
//! data is copied.

use super::object::{attrs_from, receive};
use super::{xml_response, S3Request};
use crate::error::{S3Error, S3Result};
use crate::xml::{self, elem};
use crate::Gateway;
use axum::body::Body;
use axum::response::Response;
use std::sync::Arc;
use tinydfs_proto::meta::{MetaRead, MetaReply, MetaWrite, PartRecord};
use tinydfs_proto::time::iso8601;

/// Highest part number S3 allows.
const MAX_PART_NUMBER: u32 = 10_000;
/// Most parts ListParts returns per page.
const MAX_PARTS: usize = 1000;

fn upload_id(req: &S3Request) -> S3Result<String> {
    req.q("uploadId")
        .filter(|u| !u.is_empty())
        .map(str::to_string)
        .ok_or_else(|| S3Error::invalid_argument("uploadId is required"))
}

pub async fn create(gw: &Gateway, req: &S3Request) -> S3Result<Response> {
    let bucket = req.bucket()?.to_string();
    let key = req.key()?.to_string();
    let reply = gw
        .master
        .write(MetaWrite::CreateUpload {
            bucket: bucket.clone(),
            key: key.clone(),
            attrs: attrs_from(&req.headers),
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
    Ok(xml_response(out))
}

pub async fn upload_part(gw: Arc<Gateway>, mut req: S3Request) -> S3Result<Response> {
    let bucket = req.bucket()?.to_string();
    let key = req.key()?.to_string();
    let upload_id = upload_id(&req)?;
    let number: u32 = req
        .q("partNumber")
        .and_then(|n| n.parse().ok())
        .filter(|n| (1..=MAX_PART_NUMBER).contains(n))
        .ok_or_else(|| {
            S3Error::invalid_argument(
                "Part number must be an integer between 1 and 10000, inclusive",
            )
            .with("ArgumentName", "partNumber")
        })?;
    // Fail before reading the body when the upload does not exist.
    gw.master
        .read(MetaRead::ListParts {
            bucket: bucket.clone(),
            key: key.clone(),
            upload_id: upload_id.clone(),
        })
        .await?;
    let up = receive(&gw, &mut req).await?;
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

pub async fn complete(gw: Arc<Gateway>, mut req: S3Request) -> S3Result<Response> {
    let bucket = req.bucket()?.to_string();
    let key = req.key()?.to_string();
    let upload_id = upload_id(&req)?;
    let body = req.read_small_body().await?;
    let doc: xml::CompleteMultipartUpload = xml::parse(&body)?;
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
        })
        .await?;
    let MetaReply::Committed { etag, .. } = reply else {
        return Err(S3Error::internal("unexpected reply to CompleteUpload"));
    };
    let mut out = xml::doc("CompleteMultipartUploadResult");
    elem(&mut out, "Location", &format!("/{bucket}/{key}"));
    elem(&mut out, "Bucket", &bucket);
    elem(&mut out, "Key", &key);
    elem(&mut out, "ETag", &format!("\"{etag}\""));
    out.push_str("</CompleteMultipartUploadResult>");
    Ok(xml_response(out))
}

pub async fn abort(gw: &Gateway, req: &S3Request) -> S3Result<Response> {
    gw.master
        .write(MetaWrite::AbortUpload {
            bucket: req.bucket()?.to_string(),
            key: req.key()?.to_string(),
            upload_id: upload_id(req)?,
        })
        .await?;
    Ok(Response::builder()
        .status(204)
        .body(Body::empty())
        .unwrap_or_default())
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
    for (n, p) in page {
        out.push_str("<Part>");
        elem(&mut out, "PartNumber", &n.to_string());
        elem(&mut out, "LastModified", &iso8601(p.last_modified_ms));
        elem(&mut out, "ETag", &format!("\"{}\"", p.etag));
        elem(&mut out, "Size", &p.size.to_string());
        out.push_str("</Part>");
    }
    out.push_str("</ListPartsResult>");
    Ok(xml_response(out))
}
