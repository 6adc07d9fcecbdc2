//! AWS Signature Version 4 verification for S3 requests, in both the
//! `Authorization` header form and the presigned-URL (query string) form.
//!
//! Only `AWS4-HMAC-SHA256` is supported; SigV2 and SigV4A are rejected.
//! The payload hash is *not* checked here (the body has not been read yet):
//! [`Verified::payload`] tells the caller what to check while streaming it.
//!
//! The work divides in three: [`parse`] reads what the request claims (the `Authorization`
//! header or the presigned query, the credential scope, the payload hash; a `Date` header is read
//! by [`date`]), [`canonical`] rebuilds the canonical request the client signed, and this file
//! verifies: clock skew and expiry, the scope against this gateway's region, and the signature in
//! constant time.

pub(super) mod canonical;
mod date;
mod parse;
#[cfg(test)]
mod tests;

use std::fmt;
use std::time::{Duration, SystemTime};

use hmac::{Hmac, Mac};
use http::request::Parts;
use sha2::{Digest, Sha256};

use super::error::AuthError;
use canonical::{canonical_request, parse_query};
pub(super) use parse::{check_algorithm, decode32};
use parse::{header_err, query_err, Claimed, ALGORITHM};
pub use parse::{is_aws_chunked, Payload, Sha256Check};

type HmacSha256 = Hmac<Sha256>;

/// Largest tolerated clock difference for header auth.
const MAX_SKEW: Duration = Duration::from_secs(15 * 60);
/// Hex SHA-256 of the empty string.
pub(super) const EMPTY_SHA256: &str =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

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

fn verify_header(
    parts: &Parts,
    auth: &str,
    query: &[(Vec<u8>, Vec<u8>)],
    secret_for: &dyn Fn(&str) -> Option<String>,
    region: &str,
    now: SystemTime,
) -> Result<Verified, AuthError> {
    let (claimed, time) = parse::authorization_header(parts, auth)?;
    if now.duration_since(time).unwrap_or_else(|e| e.duration()) > MAX_SKEW {
        return Err(AuthError::TimeSkewed);
    }
    check_signature(parts, query, claimed, false, secret_for, region)
}

fn verify_presigned(
    parts: &Parts,
    query: &[(Vec<u8>, Vec<u8>)],
    secret_for: &dyn Fn(&str) -> Option<String>,
    region: &str,
    now: SystemTime,
) -> Result<Verified, AuthError> {
    let (claimed, time, expires) = parse::presigned(query)?;
    if time > now + MAX_SKEW {
        return Err(AuthError::NotYetValid);
    }
    if now > time + expires {
        return Err(AuthError::Expired);
    }
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
    let Some(parse::Credential {
        access_key,
        date,
        region: cred_region,
        service,
    }) = parse::credential(c.credential)
    else {
        return Err(malformed(format!(
            "malformed credential '{}'",
            c.credential
        )));
    };
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
