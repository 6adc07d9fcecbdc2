//! What a SigV4 request claims, read from its head before anything is verified: the
//! `Authorization` header form and the presigned (query string) form with their signing time, the
//! credential scope, and how the body is protected ([`Payload`], from `x-amz-content-sha256`).
//! Malformed input is an error here; whether the claims hold (clock, expiry, region, signature)
//! is decided by the caller, [`super::verify`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::request::Parts;
use sha2::{Digest, Sha256};
use tinydfs_proto::time::{amz_datetime, parse_amz_datetime};

use super::super::error::AuthError;

/// The one signing algorithm accepted.
pub(super) const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// Longest allowed presigned URL lifetime (7 days).
const MAX_EXPIRES: i64 = 604_800;

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
    pub(super) fn from_header(value: &str) -> Result<Self, AuthError> {
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
/// [`decode_aws_chunked`](crate::auth::decode_aws_chunked)).
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

/// Fields common to both auth forms once extracted.
pub(super) struct Claimed<'a> {
    pub(super) credential: &'a str,
    pub(super) signed_headers: &'a str,
    pub(super) signature: &'a str,
    /// `YYYYMMDDTHHMMSSZ` as used in the string to sign.
    pub(super) datetime: String,
    pub(super) payload_hash: &'a str,
    pub(super) payload: Payload,
}

/// Reads the `Authorization` header form: the algorithm, `Credential`, `SignedHeaders` and
/// `Signature`, the signing time (`x-amz-date`, else `Date`) and the payload hash. Answers the
/// claims and the signing time.
pub(super) fn authorization_header<'a>(
    parts: &'a Parts,
    auth: &'a str,
) -> Result<(Claimed<'a>, SystemTime), AuthError> {
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
            let t = signing_time(d).ok_or_else(|| header_err("invalid x-amz-date"))?;
            (d.to_owned(), t)
        }
        None => {
            let d = header_str("date")?
                .ok_or_else(|| header_err("the request needs an x-amz-date or Date header"))?;
            let t =
                super::date::parse_http_date(d).ok_or_else(|| header_err("invalid Date header"))?;
            // Times before 1970 clamp to the epoch.
            let ms = t
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            (amz_datetime(ms), t)
        }
    };
    let payload_hash =
        header_str("x-amz-content-sha256")?.ok_or(AuthError::MissingContentSha256)?;
    let payload = Payload::from_header(payload_hash)?;
    let claimed = Claimed {
        credential,
        signed_headers,
        signature,
        datetime,
        payload_hash,
        payload,
    };
    Ok((claimed, time))
}

/// Reads the presigned form's `X-Amz-*` query parameters. Answers the claims, the signing time
/// and how long after it the URL is valid.
pub(super) fn presigned(
    query: &[(Vec<u8>, Vec<u8>)],
) -> Result<(Claimed<'_>, SystemTime, Duration), AuthError> {
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

    let time = signing_time(datetime).ok_or_else(|| {
        query_err("X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"")
    })?;
    let expires: i64 = expires
        .parse()
        .map_err(|_| query_err("X-Amz-Expires should be a number"))?;
    // Out of range is a refusal, as on AWS (403 AccessDenied), not a malformed query: a URL
    // valid for no time at all has expired, one for more than a week was never valid.
    if expires < 0 {
        return Err(AuthError::ExpiresOutOfRange(
            "X-Amz-Expires must be non-negative".into(),
        ));
    }
    if expires == 0 {
        return Err(AuthError::Expired);
    }
    if expires > MAX_EXPIRES {
        return Err(AuthError::ExpiresOutOfRange(
            "X-Amz-Expires must be less than a week (in seconds) that is 604800".into(),
        ));
    }
    let claimed = Claimed {
        credential,
        signed_headers,
        signature,
        datetime: datetime.to_owned(),
        payload_hash: "UNSIGNED-PAYLOAD",
        payload: Payload::Unsigned,
    };
    Ok((claimed, time, Duration::from_secs(expires.unsigned_abs())))
}

/// A credential scope, `<key>/<date>/<region>/<service>/aws4_request`.
pub(super) struct Credential<'a> {
    pub(super) access_key: &'a str,
    pub(super) date: &'a str,
    pub(super) region: &'a str,
    pub(super) service: &'a str,
}

/// Splits a credential scope; `None` if it is malformed (the key itself may contain '/').
pub(super) fn credential(credential: &str) -> Option<Credential<'_>> {
    let mut it = credential.rsplitn(5, '/');
    let (Some(terminator), Some(service), Some(region), Some(date), Some(access_key)) =
        (it.next(), it.next(), it.next(), it.next(), it.next())
    else {
        return None;
    };
    if terminator != "aws4_request" || access_key.is_empty() {
        return None;
    }
    Some(Credential {
        access_key,
        date,
        region,
        service,
    })
}

/// The instant of an `X-Amz-Date` (`YYYYMMDDTHHMMSSZ`); `None` for an impossible date.
fn signing_time(s: &str) -> Option<SystemTime> {
    parse_amz_datetime(s).map(|secs| UNIX_EPOCH + Duration::from_secs(secs))
}

pub(in crate::auth) fn check_algorithm(algorithm: &str) -> Result<(), AuthError> {
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

pub(super) fn header_err(msg: impl Into<String>) -> AuthError {
    AuthError::HeaderMalformed(msg.into())
}

pub(super) fn query_err(msg: impl Into<String>) -> AuthError {
    AuthError::QueryMalformed(msg.into())
}

/// Decodes exactly 64 hex characters.
pub(in crate::auth) fn decode32(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}
