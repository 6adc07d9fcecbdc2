//! The canonical request of SigV4: the method, path, query, signed headers and payload hash of
//! a request, re-encoded and ordered by AWS's rules, which the client signed (hashed) and the
//! gateway rebuilds from what it received.

use http::request::Parts;
use percent_encoding::{percent_decode_str, percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Characters kept verbatim in a canonical query component: AWS unreserved set.
const QUERY_SET: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');
/// Same as [`QUERY_SET`] but keeping `/` (S3 path segments).
const PATH_SET: &AsciiSet = &QUERY_SET.remove(b'/');

/// Builds the canonical request; `Err` carries a message for the malformed-auth error.
pub(super) fn canonical_request(
    parts: &Parts,
    query: &[(Vec<u8>, Vec<u8>)],
    signed_headers: &str,
    payload_hash: &str,
    presigned: bool,
) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b'\n');
    out.extend_from_slice(canonical_uri(parts.uri.path()).as_bytes());
    out.push(b'\n');
    out.extend_from_slice(canonical_query(query, presigned).as_bytes());
    out.push(b'\n');

    let mut has_host = false;
    for name in signed_headers.split(';') {
        let name = name.to_ascii_lowercase();
        if name.is_empty() {
            return Err(format!("malformed SignedHeaders '{signed_headers}'"));
        }
        out.extend_from_slice(name.as_bytes());
        out.push(b':');
        let mut values = parts.headers.get_all(name.as_str()).iter().peekable();
        if name == "host" {
            has_host = true;
            if values.peek().is_none() {
                let authority = parts.uri.authority().map(|a| a.as_str()).unwrap_or("");
                out.extend_from_slice(authority.as_bytes());
            }
        } else if values.peek().is_none() {
            return Err(format!(
                "the signed header '{name}' is missing from the request"
            ));
        }
        for (i, v) in values.enumerate() {
            if i > 0 {
                out.push(b',');
            }
            push_trimmed(&mut out, v.as_bytes());
        }
        out.push(b'\n');
    }
    if !has_host {
        return Err("the host header must be signed".into());
    }
    out.push(b'\n');
    out.extend_from_slice(signed_headers.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(payload_hash.as_bytes());
    Ok(out)
}

/// Appends `value` with surrounding whitespace trimmed and inner runs collapsed to one space.
pub(super) fn push_trimmed(out: &mut Vec<u8>, value: &[u8]) {
    let is_ws = |b: &u8| *b == b' ' || *b == b'\t';
    let mut pending_space = false;
    let mut started = false;
    for b in value {
        if is_ws(b) {
            pending_space = started;
        } else {
            if pending_space {
                out.push(b' ');
                pending_space = false;
            }
            out.push(*b);
            started = true;
        }
    }
}

/// The path as sent, percent-decoded then re-encoded with the AWS rule (no double encoding).
pub(in crate::auth) fn canonical_uri(path: &str) -> String {
    let decoded: Vec<u8> = percent_decode_str(path).collect();
    let encoded = percent_encode(&decoded, PATH_SET).to_string();
    if encoded.is_empty() {
        "/".into()
    } else {
        encoded
    }
}

/// Splits a raw query string into percent-decoded (name, value) pairs; `+` stays literal.
pub(in crate::auth) fn parse_query(raw: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    raw.split('&')
        .filter(|s| !s.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (
                percent_decode_str(k).collect(),
                percent_decode_str(v).collect(),
            )
        })
        .collect()
}

/// Sorted, AWS-encoded `name=value&...`, without `X-Amz-Signature` for presigned requests.
pub(in crate::auth) fn canonical_query(query: &[(Vec<u8>, Vec<u8>)], presigned: bool) -> String {
    let mut pairs: Vec<(String, String)> = query
        .iter()
        .filter(|(k, _)| !(presigned && k == b"X-Amz-Signature"))
        .map(|(k, v)| {
            (
                percent_encode(k, QUERY_SET).to_string(),
                percent_encode(v, QUERY_SET).to_string(),
            )
        })
        .collect();
    pairs.sort();
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}
