//! ListObjects (v1) and ListObjectsV2. The master applies the prefix/delimiter/paging rules; this
//! file handles parameters, continuation tokens and `encoding-type=url`, and [`encode`]s the
//! answer (a pure function, so that `benches/hot.rs` can time it).

use super::request::{xml_response, S3Request};
use crate::error::{S3Error, S3Result};
use crate::xml::{self, elem};
use crate::Gateway;
use axum::response::Response;
use base64::Engine;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use tinydfs_proto::meta::{ListPage, ListQuery, MetaRead, MetaReply};
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
            .map(|m| resume_after(m, &prefix, delimiter.as_deref()))
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

    let with_owner = !v2 || req.q("fetch-owner") == Some("true");
    let out = encode(
        &ListDoc {
            bucket: &bucket,
            prefix: &prefix,
            v2,
            url,
            token,
            start_after: req.q("start-after"),
            marker: req.q("marker"),
            delimiter: delimiter.as_deref(),
            max_keys: max,
            owner: with_owner.then_some(req.auth.access_key.as_str()),
        },
        &page,
    );
    Ok(xml_response(out))
}

/// Where ListObjects (v1) resumes for `marker`: after it, or, when the marker lies in a common
/// prefix (a key under it, the last one a client saw, or the prefix itself as NextMarker gives
/// it), after that whole group, as AWS does: the group was listed already, as one entry.
fn resume_after(marker: &str, prefix: &str, delimiter: Option<&str>) -> String {
    let group = delimiter.and_then(|d| {
        let rest = marker.strip_prefix(prefix)?;
        let end = rest.find(d)? + d.len();
        Some(format!("{prefix}{}", &rest[..end]))
    });
    group.unwrap_or_else(|| marker.to_string())
}

/// What a listing answer says besides the page: the request's parameters as the client gave them.
pub struct ListDoc<'a> {
    pub bucket: &'a str,
    pub prefix: &'a str,
    /// ListObjectsV2 (continuation tokens, `KeyCount`), else ListObjects (markers).
    pub v2: bool,
    /// `encoding-type=url`: keys, prefixes, delimiter and markers are percent-encoded.
    pub url: bool,
    /// V2's `continuation-token`, as sent (base64).
    pub token: Option<&'a str>,
    pub start_after: Option<&'a str>,
    /// V1's `marker`.
    pub marker: Option<&'a str>,
    pub delimiter: Option<&'a str>,
    pub max_keys: usize,
    /// The owner shown with each key (v1 always, v2 with `fetch-owner=true`); none: no `Owner`.
    pub owner: Option<&'a str>,
}

/// Encodes a ListObjects or ListObjectsV2 answer (`ListBucketResult`) for one page.
pub fn encode(d: &ListDoc<'_>, page: &ListPage) -> String {
    let enc = |s: &str| -> String {
        if d.url {
            utf8_percent_encode(s, URL_KEEP).to_string()
        } else {
            s.to_string()
        }
    };
    let mut out = xml::doc("ListBucketResult");
    elem(&mut out, "Name", d.bucket);
    elem(&mut out, "Prefix", &enc(d.prefix));
    if d.v2 {
        // The listing resumes from a continuation token rather than StartAfter, but both are
        // echoed as sent ("If StartAfter was sent with the request, it is included in the
        // response", and s3-tests' listv2_both_continuationtoken_startafter).
        if let Some(t) = d.token {
            elem(&mut out, "ContinuationToken", t);
        }
        if let Some(s) = d.start_after {
            elem(&mut out, "StartAfter", &enc(s));
        }
    } else {
        elem(&mut out, "Marker", &enc(d.marker.unwrap_or("")));
    }
    if let Some(delimiter) = d.delimiter {
        elem(&mut out, "Delimiter", &enc(delimiter));
    }
    elem(&mut out, "MaxKeys", &d.max_keys.to_string());
    if d.url {
        elem(&mut out, "EncodingType", "url");
    }
    if d.v2 {
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
            if d.v2 {
                let t = base64::engine::general_purpose::STANDARD.encode(next.as_bytes());
                elem(&mut out, "NextContinuationToken", &t);
            } else if d.delimiter.is_some() {
                // v1 gives NextMarker only with a delimiter; without one the client uses the
                // last key. It may be a common prefix.
                elem(&mut out, "NextMarker", &enc(next));
            }
        }
    }
    for e in &page.entries {
        out.push_str("<Contents>");
        elem(&mut out, "Key", &enc(&e.key));
        elem(&mut out, "LastModified", &iso8601(e.last_modified_ms));
        elem(&mut out, "ETag", &format!("\"{}\"", e.etag));
        elem(&mut out, "Size", &e.size.to_string());
        elem(&mut out, "StorageClass", "STANDARD");
        if let Some(owner) = d.owner {
            out.push_str("<Owner>");
            elem(&mut out, "ID", owner);
            elem(&mut out, "DisplayName", owner);
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
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tinydfs_proto::meta::ListEntry;

    #[test]
    fn a_marker_in_a_common_prefix_resumes_after_the_group() {
        assert_eq!(resume_after("d/a/x", "d/", Some("/")), "d/a/");
        assert_eq!(resume_after("d/a/", "d/", Some("/")), "d/a/");
        assert_eq!(resume_after("d/a", "d/", Some("/")), "d/a");
        assert_eq!(resume_after("e/a/x", "d/", Some("/")), "e/a/x");
        assert_eq!(resume_after("a\nb::c", "", Some("::")), "a\nb::");
        assert_eq!(resume_after("d/a/x", "d/", None), "d/a/x");
    }

    #[test]
    fn encodes_v1_and_v2_pages() {
        let page = ListPage {
            entries: vec![ListEntry {
                key: "a b/c&d".into(),
                size: 3,
                etag: "abc".into(),
                last_modified_ms: 0,
            }],
            common_prefixes: vec!["p/".into()],
            truncated: true,
            next_after: Some("p/".into()),
        };
        let mut d = ListDoc {
            bucket: "bkt",
            prefix: "",
            v2: true,
            url: true,
            token: None,
            start_after: None,
            marker: None,
            delimiter: Some("/"),
            max_keys: 2,
            owner: None,
        };
        let v2 = encode(&d, &page);
        for part in [
            "<KeyCount>2</KeyCount>",
            "<NextContinuationToken>cC8=</NextContinuationToken>",
            "<Key>a%20b/c%26d</Key><LastModified>1970-01-01T00:00:00.000Z</LastModified>",
            "<ETag>&quot;abc&quot;</ETag><Size>3</Size><StorageClass>STANDARD</StorageClass></Contents>",
            "<CommonPrefixes><Prefix>p/</Prefix></CommonPrefixes></ListBucketResult>",
        ] {
            assert!(v2.contains(part), "{part} in {v2}");
        }
        (d.v2, d.url, d.owner) = (false, false, Some("AK"));
        let v1 = encode(&d, &page);
        for part in [
            "<Marker></Marker>",
            "<NextMarker>p/</NextMarker>",
            "<Key>a b/c&amp;d</Key>",
            "<Owner><ID>AK</ID><DisplayName>AK</DisplayName></Owner>",
        ] {
            assert!(v1.contains(part), "{part} in {v1}");
        }
        assert!(!v1.contains("KeyCount") && !v2.contains("<Owner>"));
    }
}
