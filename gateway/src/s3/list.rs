//! ListObjects (v1) and ListObjectsV2. The master applies the prefix/delimiter/paging rules; this
//! file handles parameters, continuation tokens and `encoding-type=url`.

use super::{xml_response, S3Request};
use crate::error::{S3Error, S3Result};
use crate::xml::{self, elem};
use crate::Gateway;
use axum::response::Response;
use base64::Engine;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use tinydfs_proto::meta::{ListQuery, MetaRead, MetaReply};
use tinydfs_proto::time::iso8601;

/// Most keys a page returns, as on AWS.
pub const MAX_KEYS: usize = 1000;

/// What `encoding-type=url` leaves alone: unreserved characters and `/`; a space is `%20`.
pub(super) const URL_KEEP: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

fn max_keys(req: &S3Request) -> S3Result<usize> {
    match req.q("max-keys") {
        None => Ok(MAX_KEYS),
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .map(|n| (n as usize).min(MAX_KEYS))
            .ok_or_else(|| {
                S3Error::invalid_argument(
                    "Provided max-keys not an integer or within integer range",
                )
                .with("ArgumentName", "max-keys")
            }),
    }
}

pub async fn list_objects(gw: &Gateway, req: &S3Request) -> S3Result<Response> {
    let bucket = req.bucket()?.to_string();
    let v2 = req.q("list-type") == Some("2");
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
            utf8_percent_encode(s, URL_KEEP).to_string()
        } else {
            s.to_string()
        }
    };
    let prefix = req.q("prefix").unwrap_or("").to_string();
    let delimiter = req
        .q("delimiter")
        .filter(|d| !d.is_empty())
        .map(str::to_string);
    let max = max_keys(req)?;
    let token = req.q("continuation-token");
    let after = if v2 {
        match token {
            Some(t) => {
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(t)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| {
                        S3Error::invalid_argument("The continuation token provided is incorrect")
                            .with("ArgumentName", "continuation-token")
                    })?;
                Some(raw)
            }
            None => req
                .q("start-after")
                .filter(|s| !s.is_empty())
                .map(str::to_string),
        }
    } else {
        req.q("marker")
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let reply = gw
        .master
        .read(MetaRead::ListObjects(ListQuery {
            bucket: bucket.clone(),
            prefix: prefix.clone(),
            delimiter: delimiter.clone(),
            after,
            max_keys: max,
        }))
        .await
        .map_err(|e| S3Error::from(e).with("BucketName", &bucket))?;
    let MetaReply::List(page) = reply else {
        return Err(S3Error::internal("unexpected reply to ListObjects"));
    };

    let mut out = xml::doc("ListBucketResult");
    elem(&mut out, "Name", &bucket);
    elem(&mut out, "Prefix", &enc(&prefix));
    if v2 {
        if let Some(t) = token {
            elem(&mut out, "ContinuationToken", t);
        }
        if let Some(s) = req.q("start-after") {
            elem(&mut out, "StartAfter", &enc(s));
        }
    } else {
        elem(&mut out, "Marker", &enc(req.q("marker").unwrap_or("")));
    }
    if let Some(d) = &delimiter {
        elem(&mut out, "Delimiter", &enc(d));
    }
    elem(&mut out, "MaxKeys", &max.to_string());
    if url {
        elem(&mut out, "EncodingType", "url");
    }
    if v2 {
        elem(
            &mut out,
            "KeyCount",
            &(page.entries.len() + page.common_prefixes.len()).to_string(),
        );
    }
    elem(
        &mut out,
        "IsTruncated",
        if page.truncated { "true" } else { "false" },
    );
    if page.truncated {
        if let Some(next) = &page.next_after {
            if v2 {
                let t = base64::engine::general_purpose::STANDARD.encode(next.as_bytes());
                elem(&mut out, "NextContinuationToken", &t);
            } else if delimiter.is_some() {
                // v1 gives NextMarker only with a delimiter; without one the client uses the
                // last key. It may be a common prefix.
                elem(&mut out, "NextMarker", &enc(next));
            }
        }
    }
    let with_owner = !v2 || req.q("fetch-owner") == Some("true");
    for e in &page.entries {
        out.push_str("<Contents>");
        elem(&mut out, "Key", &enc(&e.key));
        elem(&mut out, "LastModified", &iso8601(e.last_modified_ms));
        elem(&mut out, "ETag", &format!("\"{}\"", e.etag));
        elem(&mut out, "Size", &e.size.to_string());
        elem(&mut out, "StorageClass", "STANDARD");
        if with_owner {
            out.push_str("<Owner>");
            elem(&mut out, "ID", &req.auth.access_key);
            elem(&mut out, "DisplayName", &req.auth.access_key);
            out.push_str("</Owner>");
        }
        out.push_str("</Contents>");
    }
    for p in &page.common_prefixes {
        out.push_str("<CommonPrefixes>");
        elem(&mut out, "Prefix", &enc(p));
        out.push_str("</CommonPrefixes>");
    }
    out.push_str("</ListBucketResult>");
    Ok(xml_response(out))
}
