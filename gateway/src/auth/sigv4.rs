//! AWS Signature Version 4 verification for S3 requests, in both the
//! `Authorization` header form and the presigned-URL (query string) form.
//!
//! Only `AWS4-HMAC-SHA256` is supported; SigV2 and SigV4A are rejected.
//! The payload hash is *not* checked here (the body has not been read yet):
//! [`Verified::payload`] tells the caller what to check while streaming it.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use http::request::Parts;
use percent_encoding::{percent_decode_str, percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha2::{Digest, Sha256};

use super::error::AuthError;

type HmacSha256 = Hmac<Sha256>;

const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// Largest tolerated clock difference for header auth.
const MAX_SKEW: Duration = Duration::from_secs(15 * 60);
/// Longest allowed presigned URL lifetime (7 days).
const MAX_EXPIRES: u64 = 604_800;
/// Hex SHA-256 of the empty string.
pub(super) const EMPTY_SHA256: &str =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Characters kept verbatim in a canonical query component: AWS unreserved set.
const QUERY_SET: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');
/// Same as [`QUERY_SET`] but keeping `/` (S3 path segments).
const PATH_SET: &AsciiSet = &QUERY_SET.remove(b'/');

/// How the request body is protected, from `x-amz-content-sha256`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    /// `UNSIGNED-PAYLOAD`, or any presigned request: nothing to check.
    Unsigned,
    /// The body must hash to this SHA-256 (check it with [`Sha256Check`]).
    Sha256([u8; 32]),
    /// `STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER]`: signed `aws-chunked` body.
    StreamingSigned {
        /// Trailing headers follow the final chunk (and are signed).
        trailer: bool,
    },
    /// `STREAMING-UNSIGNED-PAYLOAD-TRAILER`: unsigned `aws-chunked` body.
    StreamingUnsigned {
        /// Always `true` for the one value S3 defines.
        trailer: bool,
    },
}

impl Payload {
    fn from_header(value: &str) -> Result<Self, AuthError> {
        Ok(match value {
            "UNSIGNED-PAYLOAD" => Self::Unsigned,
            "STREAMING-AWS4-HMAC-SHA256-PAYLOAD" => Self::StreamingSigned { trailer: false },
            "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER" => Self::StreamingSigned { trailer: true },
            "STREAMING-UNSIGNED-PAYLOAD-TRAILER" => Self::StreamingUnsigned { trailer: true },
            v if v.starts_with("STREAMING-AWS4-ECDSA-P256-SHA256") => {
                return Err(sigv4a_unsupported());
            }
            v => match decode32(v) {
                Some(hash) => Self::Sha256(hash),
                None => {
                    return Err(AuthError::InvalidArgument(
                        "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, a STREAMING-* value, \
                         or a valid SHA-256 hex digest"
                            .into(),
                    ))
                }
            },
        })
    }

    /// A body hasher for [`Payload::Sha256`], `None` for every other variant.
    pub fn sha256_check(&self) -> Option<Sha256Check> {
        match self {
            Self::Sha256(h) => Some(Sha256Check::new(*h)),
            _ => None,
        }
    }
}

/// Whether the body uses the `aws-chunked` framing (decode it with
/// [`decode_aws_chunked`](super::decode_aws_chunked)).
pub fn is_aws_chunked(p: &Payload) -> bool {
    matches!(
        p,
        Payload::StreamingSigned { .. } | Payload::StreamingUnsigned { .. }
    )
}

/// Incrementally hashes a body and compares it with the signed SHA-256.
#[derive(Clone)]
pub struct Sha256Check {
    expected: [u8; 32],
    hasher: Sha256,
}

impl Sha256Check {
    /// Starts checking against `expected`.
    pub fn new(expected: [u8; 32]) -> Self {
        Self {
            expected,
            hasher: Sha256::new(),
        }
    }

    /// Feeds the next piece of the body.
    pub fn update(&mut self, data: &[u8]) {
        self.hasher.update(data);
    }

    /// Fails with `XAmzContentSHA256Mismatch` if the body hashed differently.
    pub fn finish(self) -> Result<(), AuthError> {
        if self.hasher.finalize().as_slice() == self.expected {
            Ok(())
        } else {
            Err(AuthError::ContentSha256Mismatch)
        }
    }
}

/// What is needed to verify `aws-chunked` chunk and trailer signatures.
#[derive(Clone)]
pub struct SigningContext {
    pub(super) key: [u8; 32],
    pub(super) datetime: String,
    pub(super) scope: String,
    pub(super) seed: [u8; 32],
}

impl SigningContext {
    /// A context from its parts (the chunk decoder's tests and fuzz targets build their own).
    pub fn new(key: [u8; 32], datetime: String, scope: String, seed: [u8; 32]) -> Self {
        SigningContext {
            key,
            datetime,
            scope,
            seed,
        }
    }
}

impl fmt::Debug for SigningContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningContext")
            .field("key", &"<redacted>")
            .field("datetime", &self.datetime)
            .field("scope", &self.scope)
            .field("seed", &hex::encode(self.seed))
            .finish()
    }
}

/// A request whose signature verified.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The access key id that signed the request.
    pub access_key: String,
    /// How the body must be checked or decoded.
    pub payload: Payload,
    /// Signing material for chunk signatures (the seed is the request signature).
    pub signing: SigningContext,
}

impl Verified {
    /// An unsigned request, let through only to read a public bucket: no key, and nothing to
    /// verify in its (empty) body.
    pub fn anonymous() -> Self {
        Verified {
            access_key: String::new(),
            payload: Payload::Unsigned,
            signing: SigningContext {
                key: [0; 32],
                datetime: String::new(),
                scope: String::new(),
                seed: [0; 32],
            },
        }
    }
}

/// Verifies the SigV4 signature of a request (header or presigned form).
///
/// `secret_for` maps an access key id to its secret, `region` is the region
/// this gateway answers for, `now` is the current time.
pub fn verify(
    parts: &Parts,
    secret_for: &dyn Fn(&str) -> Option<String>,
    region: &str,
    now: SystemTime,
) -> Result<Verified, AuthError> {
    let query = parse_query(parts.uri.query().unwrap_or(""));
    let presigned = query.iter().any(|(k, _)| {
        matches!(
            &k[..],
            b"X-Amz-Algorithm" | b"X-Amz-Credential" | b"X-Amz-Signature"
        )
    });
    match (parts.headers.get(http::header::AUTHORIZATION), presigned) {
        (Some(_), true) => Err(AuthError::InvalidArgument(
            "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter \
             or the Authorization header should be specified"
                .into(),
        )),
        (Some(h), false) => {
            let h = h
                .to_str()
                .map_err(|_| header_err("the Authorization header is not ASCII"))?;
            verify_header(parts, h, &query, secret_for, region, now)
        }
        (None, true) => verify_presigned(parts, &query, secret_for, region, now),
        (None, false) => Err(AuthError::Missing),
    }
}

/// Fields common to both auth forms once extracted.
struct Claimed<'a> {
    credential: &'a str,
    signed_headers: &'a str,
    signature: &'a str,
    /// `YYYYMMDDTHHMMSSZ` as used in the string to sign.
    datetime: String,
    payload_hash: &'a str,
    payload: Payload,
}

fn verify_header(
    parts: &Parts,
    auth: &str,
    query: &[(Vec<u8>, Vec<u8>)],
    secret_for: &dyn Fn(&str) -> Option<String>,
    region: &str,
    now: SystemTime,
) -> Result<Verified, AuthError> {
    let auth = auth.trim();
    let (algorithm, rest) = auth.split_once(' ').unwrap_or((auth, ""));
    check_algorithm(algorithm)?;
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for item in rest.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| header_err("the authorization header is malformed"))?;
        match k.trim() {
            "Credential" => credential = Some(v.trim()),
            "SignedHeaders" => signed_headers = Some(v.trim()),
            "Signature" => signature = Some(v.trim()),
            _ => {}
        }
    }
    let (Some(credential), Some(signed_headers), Some(signature)) =
        (credential, signed_headers, signature)
    else {
        return Err(header_err(
            "the authorization header requires Credential, SignedHeaders and Signature",
        ));
    };

    let header_str = |name: &str| -> Result<Option<&str>, AuthError> {
        parts
            .headers
            .get(name)
            .map(|v| {
                v.to_str()
                    .map_err(|_| header_err(format!("the {name} header is not ASCII")))
            })
            .transpose()
    };
    let (datetime, time) = match header_str("x-amz-date")? {
        Some(d) => {
            let t = parse_amz_date(d).ok_or_else(|| header_err("invalid x-amz-date"))?;
            (d.to_owned(), t)
        }
        None => {
            let d = header_str("date")?
                .ok_or_else(|| header_err("the request needs an x-amz-date or Date header"))?;
            let t = httpdate::parse_http_date(d).map_err(|_| header_err("invalid Date header"))?;
            (format_amz_date(t), t)
        }
    };
    let payload_hash =
        header_str("x-amz-content-sha256")?.ok_or(AuthError::MissingContentSha256)?;
    let payload = Payload::from_header(payload_hash)?;
    if now.duration_since(time).unwrap_or_else(|e| e.duration()) > MAX_SKEW {
        return Err(AuthError::TimeSkewed);
    }
    let claimed = Claimed {
        credential,
        signed_headers,
        signature,
        datetime,
        payload_hash,
        payload,
    };
    check_signature(parts, query, claimed, false, secret_for, region)
}

fn verify_presigned(
    parts: &Parts,
    query: &[(Vec<u8>, Vec<u8>)],
    secret_for: &dyn Fn(&str) -> Option<String>,
    region: &str,
    now: SystemTime,
) -> Result<Verified, AuthError> {
    let param = |name: &str| -> Result<&str, AuthError> {
        let v = query
            .iter()
            .find(|(k, _)| k == name.as_bytes())
            .ok_or_else(|| {
                query_err(format!(
                    "Query-string authentication requires the {name} parameter"
                ))
            })?;
        std::str::from_utf8(&v.1).map_err(|_| query_err(format!("{name} is not valid UTF-8")))
    };
    check_algorithm(param("X-Amz-Algorithm")?)?;
    let credential = param("X-Amz-Credential")?;
    let datetime = param("X-Amz-Date")?;
    let expires = param("X-Amz-Expires")?;
    let signed_headers = param("X-Amz-SignedHeaders")?;
    let signature = param("X-Amz-Signature")?;

    let time = parse_amz_date(datetime).ok_or_else(|| {
        query_err("X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"")
    })?;
    let expires: u64 = expires
        .parse()
        .map_err(|_| query_err("X-Amz-Expires should be a number"))?;
    if expires > MAX_EXPIRES {
        return Err(query_err(
            "X-Amz-Expires must be less than a week (in seconds) that is 604800",
        ));
    }
    if time > now + MAX_SKEW {
        return Err(AuthError::NotYetValid);
    }
    if now > time + Duration::from_secs(expires) {
        return Err(AuthError::Expired);
    }
    let claimed = Claimed {
        credential,
        signed_headers,
        signature,
        datetime: datetime.to_owned(),
        payload_hash: "UNSIGNED-PAYLOAD",
        payload: Payload::Unsigned,
    };
    check_signature(parts, query, claimed, true, secret_for, region)
}

/// Validates the credential scope, rebuilds the canonical request and checks
/// the signature in constant time.
fn check_signature(
    parts: &Parts,
    query: &[(Vec<u8>, Vec<u8>)],
    c: Claimed<'_>,
    presigned: bool,
    secret_for: &dyn Fn(&str) -> Option<String>,
    region: &str,
) -> Result<Verified, AuthError> {
    let malformed = |msg: String| {
        if presigned {
            query_err(msg)
        } else {
            header_err(msg)
        }
    };
    // Credential = <key>/<date>/<region>/<service>/aws4_request; the key itself may contain '/'.
    let mut it = c.credential.rsplitn(5, '/');
    let (Some(terminator), Some(service), Some(cred_region), Some(date), Some(access_key)) =
        (it.next(), it.next(), it.next(), it.next(), it.next())
    else {
        return Err(malformed(format!(
            "malformed credential '{}'",
            c.credential
        )));
    };
    if terminator != "aws4_request" || access_key.is_empty() {
        return Err(malformed(format!(
            "malformed credential '{}'",
            c.credential
        )));
    }
    if cred_region != region {
        return Err(malformed(format!(
            "the region '{cred_region}' is wrong; expecting '{region}'"
        )));
    }
    if service != "s3" {
        return Err(malformed(format!(
            "the service '{service}' is wrong; expecting 's3'"
        )));
    }
    if !c.datetime.starts_with(date) || date.len() != 8 {
        return Err(malformed(format!(
            "the credential date '{date}' does not match the request date '{}'",
            c.datetime
        )));
    }
    let signature = decode32(c.signature)
        .ok_or_else(|| malformed("the signature must be 64 hexadecimal characters".into()))?;
    let secret = secret_for(access_key).ok_or(AuthError::UnknownAccessKey)?;

    let canonical = canonical_request(parts, query, c.signed_headers, c.payload_hash, presigned)
        .map_err(malformed)?;
    let scope = format!("{date}/{region}/s3/aws4_request");
    let string_to_sign = format!(
        "{ALGORITHM}\n{}\n{scope}\n{}",
        c.datetime,
        hex::encode(Sha256::digest(&canonical))
    );
    let key = signing_key(&secret, date, region);
    if !mac_matches(&key, string_to_sign.as_bytes(), &signature) {
        return Err(AuthError::SignatureMismatch);
    }
    Ok(Verified {
        access_key: access_key.to_owned(),
        payload: c.payload,
        signing: SigningContext {
            key,
            datetime: c.datetime,
            scope,
            seed: signature,
        },
    })
}

pub(super) fn check_algorithm(algorithm: &str) -> Result<(), AuthError> {
    match algorithm {
        ALGORITHM => Ok(()),
        "AWS4-ECDSA-P256-SHA256" => Err(sigv4a_unsupported()),
        other => Err(AuthError::Unsupported(format!(
            "unsupported authorization algorithm '{other}'; only AWS4-HMAC-SHA256 is supported"
        ))),
    }
}

fn sigv4a_unsupported() -> AuthError {
    AuthError::Unsupported(
        "SigV4A (AWS4-ECDSA-P256-SHA256) is not supported; sign with SigV4".into(),
    )
}

fn header_err(msg: impl Into<String>) -> AuthError {
    AuthError::HeaderMalformed(msg.into())
}

fn query_err(msg: impl Into<String>) -> AuthError {
    AuthError::QueryMalformed(msg.into())
}

/// Builds the canonical request; `Err` carries a message for the malformed-auth error.
fn canonical_request(
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
fn push_trimmed(out: &mut Vec<u8>, value: &[u8]) {
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
pub(super) fn canonical_uri(path: &str) -> String {
    let decoded: Vec<u8> = percent_decode_str(path).collect();
    let encoded = percent_encode(&decoded, PATH_SET).to_string();
    if encoded.is_empty() {
        "/".into()
    } else {
        encoded
    }
}

/// Splits a raw query string into percent-decoded (name, value) pairs; `+` stays literal.
pub(super) fn parse_query(raw: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
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
pub(super) fn canonical_query(query: &[(Vec<u8>, Vec<u8>)], presigned: bool) -> String {
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

/// HMAC-SHA256 of `data` under `key`.
pub fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// Constant-time check that `HMAC(key, data) == expected`.
pub(super) fn mac_matches(key: &[u8], data: &[u8], expected: &[u8; 32]) -> bool {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(data);
    mac.verify_slice(expected).is_ok()
}

/// The SigV4 signing key of `secret` for a day (`YYYYMMDD`) and region, service `s3`.
pub fn signing_key(secret: &str, date: &str, region: &str) -> [u8; 32] {
    let k = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k = hmac(&k, region.as_bytes());
    let k = hmac(&k, b"s3");
    hmac(&k, b"aws4_request")
}

/// Decodes exactly 64 hex characters.
pub(super) fn decode32(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

/// Parses `YYYYMMDDTHHMMSSZ`; rejects impossible dates.
pub(super) fn parse_amz_date(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u64> {
        let d = &s[r];
        d.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| d.parse().ok())?
    };
    let (y, mo, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (h, mi, sec) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if y < 1970
        || !(1..=12).contains(&mo)
        || !(1..=31).contains(&d)
        || h > 23
        || mi > 59
        || sec > 59
    {
        return None;
    }
    let days = days_from_civil(y, mo, d);
    let t = UNIX_EPOCH + Duration::from_secs(days * 86_400 + h * 3600 + mi * 60 + sec);
    // Round-trip to reject dates such as Feb 30.
    (format_amz_date(t) == s).then_some(t)
}

/// Formats a time as `YYYYMMDDTHHMMSSZ` (times before 1970 clamp to the epoch).
fn format_amz_date(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (y, m, d) = civil_from_days(secs / 86_400);
    let rem = secs % 86_400;
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 of a proleptic Gregorian date (year >= 1970).
fn days_from_civil(y: u64, m: u64, d: u64) -> u64 {
    let y = if m <= 2 { y - 1 } else { y };
    let (era, yoe) = (y / 400, y % 400);
    let mp = (m + 9) % 12; // March = 0
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Inverse of [`days_from_civil`].
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let (era, doe) = (z / 146_097, z % 146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const AK: &str = "AKIAIOSFODNN7EXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    const SCOPE: &str = "AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request";

    /// 2013-05-24T00:00:00Z, the timestamp of every AWS example.
    fn t0() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_369_353_600)
    }

    fn secrets(ak: &str) -> Option<String> {
        (ak == AK).then(|| SECRET.to_owned())
    }

    fn parts(method: &str, uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn get_example(sep: &str, now: SystemTime, secret: &str) -> Result<Verified, AuthError> {
        let auth = format!(
            "AWS4-HMAC-SHA256 Credential={SCOPE},{sep}SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,{sep}Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
        let p = parts(
            "GET",
            "/test.txt",
            &[
                ("host", "examplebucket.s3.amazonaws.com"),
                ("range", "bytes=0-9"),
                ("x-amz-content-sha256", EMPTY_SHA256),
                ("x-amz-date", "20130524T000000Z"),
                ("authorization", &auth),
            ],
        );
        let secret = secret.to_owned();
        verify(
            &p,
            &move |ak| (ak == AK).then(|| secret.clone()),
            "us-east-1",
            now,
        )
    }

    #[test]
    fn aws_get_object_example() {
        for sep in ["", " ", "  "] {
            let v = get_example(sep, t0(), SECRET).unwrap();
            assert_eq!(v.access_key, AK);
            assert_eq!(v.payload, Payload::Sha256(decode32(EMPTY_SHA256).unwrap()));
            assert_eq!(v.signing.scope, "20130524/us-east-1/s3/aws4_request");
            assert_eq!(
                hex::encode(v.signing.seed),
                "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
            );
        }
        let mut check = Payload::Sha256(decode32(EMPTY_SHA256).unwrap())
            .sha256_check()
            .unwrap();
        check.clone().finish().unwrap();
        check.update(b"x");
        assert_eq!(
            check.finish().unwrap_err().code(),
            "XAmzContentSHA256Mismatch"
        );
    }

    #[test]
    fn header_auth_failures() {
        let e = get_example("", t0(), "wrong-secret").unwrap_err();
        assert_eq!((e.code(), e.status()), ("SignatureDoesNotMatch", 403));
        let later = t0() + Duration::from_secs(16 * 60);
        let e = get_example("", later, SECRET).unwrap_err();
        assert_eq!((e.code(), e.status()), ("RequestTimeTooSkewed", 403));
        let earlier = t0() - Duration::from_secs(16 * 60);
        assert_eq!(
            get_example("", earlier, SECRET).unwrap_err(),
            AuthError::TimeSkewed
        );
        assert!(get_example("", t0() + Duration::from_secs(14 * 60), SECRET).is_ok());

        let base = [
            ("host", "examplebucket.s3.amazonaws.com"),
            ("range", "bytes=0-9"),
            ("x-amz-content-sha256", EMPTY_SHA256),
            ("x-amz-date", "20130524T000000Z"),
        ];
        let sig = "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41";
        let signed = "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date";
        let with = |auth: &str, extra: &[(&str, &str)]| {
            let mut h: Vec<(&str, &str)> = base.to_vec();
            h.retain(|(k, _)| !extra.iter().any(|(n, _)| n == k));
            h.extend_from_slice(extra);
            h.push(("authorization", auth));
            verify(&parts("GET", "/test.txt", &h), &secrets, "us-east-1", t0()).unwrap_err()
        };
        // Tampered signed header.
        let good = format!("AWS4-HMAC-SHA256 Credential={SCOPE},{signed},{sig}");
        assert_eq!(
            with(&good, &[("range", "bytes=0-10")]),
            AuthError::SignatureMismatch
        );
        // Unknown key.
        let e = with(&good.replace("AKIAIOSFODNN7EXAMPLE", "AKIDUNKNOWN"), &[]);
        assert_eq!((e.code(), e.status()), ("InvalidAccessKeyId", 403));
        // Wrong region in the scope.
        let e = with(&good.replace("us-east-1", "eu-west-1"), &[]);
        assert_eq!(
            (e.code(), e.status()),
            ("AuthorizationHeaderMalformed", 400)
        );
        assert!(e.to_string().contains("expecting 'us-east-1'"));
        // Wrong service, missing field, bad signature hex.
        assert_eq!(
            with(&good.replace("/s3/", "/ec2/"), &[]).code(),
            "AuthorizationHeaderMalformed"
        );
        let no_sig = format!("AWS4-HMAC-SHA256 Credential={SCOPE},{signed}");
        assert_eq!(with(&no_sig, &[]).code(), "AuthorizationHeaderMalformed");
        assert_eq!(
            with(&good.replace("Signature=f0", "Signature=zz"), &[]).code(),
            "AuthorizationHeaderMalformed"
        );
        // Missing payload hash header.
        let mut h: Vec<(&str, &str)> = base
            .iter()
            .filter(|(k, _)| *k != "x-amz-content-sha256")
            .copied()
            .collect();
        h.push(("authorization", &good));
        let e = verify(&parts("GET", "/test.txt", &h), &secrets, "us-east-1", t0()).unwrap_err();
        assert_eq!((e.code(), e.status()), ("InvalidRequest", 400));
        assert_eq!(
            with(&good, &[("x-amz-content-sha256", "abc")]).code(),
            "InvalidArgument"
        );
        // SigV4A and SigV2.
        let e = with(
            &good.replace("AWS4-HMAC-SHA256", "AWS4-ECDSA-P256-SHA256"),
            &[],
        );
        assert_eq!((e.code(), e.status()), ("AccessDenied", 403));
        assert!(e.to_string().contains("SigV4A"));
        assert_eq!(
            with("AWS AKIAIOSFODNN7EXAMPLE:abc", &[]).code(),
            "AccessDenied"
        );
        // No auth at all.
        let e = verify(
            &parts("GET", "/test.txt", &base),
            &secrets,
            "us-east-1",
            t0(),
        )
        .unwrap_err();
        assert_eq!(
            (&e, e.code(), e.status()),
            (&AuthError::Missing, "AccessDenied", 403)
        );
    }

    /// Independent signer over a hand-written canonical request.
    fn sign(canonical: &str) -> String {
        let sts = format!(
            "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n{}",
            hex::encode(Sha256::digest(canonical.as_bytes()))
        );
        let mut k = hmac(format!("AWS4{SECRET}").as_bytes(), b"20130524");
        for part in ["us-east-1", "s3", "aws4_request"] {
            k = hmac(&k, part.as_bytes());
        }
        hex::encode(hmac(&k, sts.as_bytes()))
    }

    #[test]
    fn date_header_instead_of_x_amz_date() {
        let date = "Fri, 24 May 2013 00:00:00 GMT";
        let canonical = format!(
            "GET\n/test.txt\n\ndate:{date}\nhost:examplebucket.s3.amazonaws.com\nrange:bytes=0-9\n\
             x-amz-content-sha256:{EMPTY_SHA256}\n\ndate;host;range;x-amz-content-sha256\n{EMPTY_SHA256}"
        );
        let auth = format!(
            "AWS4-HMAC-SHA256 Credential={SCOPE}, SignedHeaders=date;host;range;x-amz-content-sha256, Signature={}",
            sign(&canonical)
        );
        let p = parts(
            "GET",
            "/test.txt",
            &[
                ("host", "examplebucket.s3.amazonaws.com"),
                ("range", "bytes=0-9"),
                ("x-amz-content-sha256", EMPTY_SHA256),
                ("date", date),
                ("authorization", &auth),
            ],
        );
        let v = verify(&p, &secrets, "us-east-1", t0()).unwrap();
        assert_eq!(v.signing.datetime, "20130524T000000Z");
        let late = t0() + Duration::from_secs(20 * 60);
        assert_eq!(
            verify(&p, &secrets, "us-east-1", late).unwrap_err(),
            AuthError::TimeSkewed
        );
    }

    #[test]
    fn canonical_forms_match_hand_written_request() {
        // Path and query need re-encoding; repeated and padded header values.
        let canonical =
            "PUT\n/bucket/my%20key/a%2Bb%28c%29\nacl=&partNumber=2&prefix=a%2Bb%20c&uploadId=x%2Fy\n\
             host:localhost:9000\nx-amz-content-sha256:UNSIGNED-PAYLOAD\n\
             x-amz-date:20130524T000000Z\nx-amz-meta-a:one two,three\n\n\
             host;x-amz-content-sha256;x-amz-date;x-amz-meta-a\nUNSIGNED-PAYLOAD";
        let auth = format!(
            "AWS4-HMAC-SHA256 Credential={SCOPE},SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-amz-meta-a,Signature={}",
            sign(canonical)
        );
        let p = parts(
            "PUT",
            "/bucket/my%20key/a+b(c)?uploadId=x/y&prefix=a+b%20c&partNumber=2&acl",
            &[
                ("host", "localhost:9000"),
                ("x-amz-content-sha256", "UNSIGNED-PAYLOAD"),
                ("x-amz-date", "20130524T000000Z"),
                ("x-amz-meta-a", "  one    two "),
                ("x-amz-meta-a", "three"),
                ("authorization", &auth),
            ],
        );
        let v = verify(&p, &secrets, "us-east-1", t0()).unwrap();
        assert_eq!(v.payload, Payload::Unsigned);
        assert!(!is_aws_chunked(&v.payload));
    }

    #[test]
    fn streaming_payload_values() {
        assert_eq!(
            Payload::from_header("STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER").unwrap(),
            Payload::StreamingSigned { trailer: true }
        );
        let p = Payload::from_header("STREAMING-UNSIGNED-PAYLOAD-TRAILER").unwrap();
        assert_eq!(p, Payload::StreamingUnsigned { trailer: true });
        assert!(is_aws_chunked(&p));
        let e = Payload::from_header("STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD").unwrap_err();
        assert_eq!(e.code(), "AccessDenied");
    }

    const PRESIGNED: &str = "/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404";

    fn presigned(uri: &str, now: SystemTime) -> Result<Verified, AuthError> {
        let p = parts("GET", uri, &[("host", "examplebucket.s3.amazonaws.com")]);
        verify(&p, &secrets, "us-east-1", now)
    }

    #[test]
    fn aws_presigned_example() {
        let v = presigned(PRESIGNED, t0() + Duration::from_secs(3600)).unwrap();
        assert_eq!((v.access_key.as_str(), v.payload), (AK, Payload::Unsigned));
        // Still valid at the last second, expired after.
        assert!(presigned(PRESIGNED, t0() + Duration::from_secs(86_400)).is_ok());
        let e = presigned(PRESIGNED, t0() + Duration::from_secs(86_401)).unwrap_err();
        assert_eq!(
            (e.code(), e.status(), e.to_string().as_str()),
            ("AccessDenied", 403, "Request has expired")
        );
        assert_eq!(
            presigned(PRESIGNED, t0() - Duration::from_secs(3600)).unwrap_err(),
            AuthError::NotYetValid
        );
        // Tampering with any signed part breaks the signature.
        let e = presigned(&PRESIGNED.replace("test.txt", "test.txu"), t0()).unwrap_err();
        assert_eq!(e, AuthError::SignatureMismatch);
        let e = presigned(&format!("{PRESIGNED}&x-id=GetObject"), t0()).unwrap_err();
        assert_eq!(e, AuthError::SignatureMismatch);
    }

    #[test]
    fn presigned_parameter_errors() {
        for bad in ["604801", "abc", "-1"] {
            let e = presigned(
                &PRESIGNED.replace("X-Amz-Expires=86400", &format!("X-Amz-Expires={bad}")),
                t0(),
            )
            .unwrap_err();
            assert_eq!(
                (e.code(), e.status()),
                ("AuthorizationQueryParametersError", 400),
                "{bad}"
            );
        }
        let e = presigned(&PRESIGNED.replace("&X-Amz-SignedHeaders=host", ""), t0()).unwrap_err();
        assert_eq!(e.code(), "AuthorizationQueryParametersError");
        let e = presigned(&PRESIGNED.replace("us-east-1", "eu-west-1"), t0()).unwrap_err();
        assert_eq!(e.code(), "AuthorizationQueryParametersError");
        let e = presigned(
            &PRESIGNED.replace("AWS4-HMAC-SHA256", "AWS4-ECDSA-P256-SHA256"),
            t0(),
        )
        .unwrap_err();
        assert_eq!(e.code(), "AccessDenied");
        // Both mechanisms at once.
        let p = parts(
            "GET",
            PRESIGNED,
            &[
                ("host", "examplebucket.s3.amazonaws.com"),
                ("authorization", "AWS4-HMAC-SHA256 x"),
            ],
        );
        assert_eq!(
            verify(&p, &secrets, "us-east-1", t0()).unwrap_err().code(),
            "InvalidArgument"
        );
    }

    #[test]
    fn helpers() {
        assert_eq!(canonical_uri(""), "/");
        assert_eq!(canonical_uri("/a%2fb/%7Ec d~"), "/a/b/~c%20d~");
        let q = parse_query("b=2&&a=x+y&c&a=1");
        assert_eq!(canonical_query(&q, false), "a=1&a=x%2By&b=2&c=");
        let mut out = Vec::new();
        push_trimmed(&mut out, b" \t a \t  b  c\t");
        assert_eq!(out, b"a b c");
        assert_eq!(parse_amz_date("20130524T000000Z"), Some(t0()));
        assert_eq!(format_amz_date(t0()), "20130524T000000Z");
        assert!(parse_amz_date("20240229T235959Z").is_some());
        for bad in [
            "20230229T000000Z",
            "20130524T240000Z",
            "20130524 000000Z",
            "2013052T000000Z",
            "+0130524T000000Z",
        ] {
            assert_eq!(parse_amz_date(bad), None, "{bad}");
        }
        for d in (0..200_000).step_by(7) {
            let (y, m, dd) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, dd), d);
        }
    }
}
