//! POST policies of browser form uploads (PostObject): the SigV4 signature of the policy, and
//! its expiration and conditions checked against the form's fields.
//!
//! The form carries `policy` (base64 of a JSON document), `x-amz-algorithm`,
//! `x-amz-credential`, `x-amz-date` and `x-amz-signature`, the hex HMAC-SHA256 of the base64
//! text under the SigV4 signing key of the credential's scope. The policy is
//!
//! ```json
//! { "expiration": "2030-01-01T12:00:00.000Z",
//!   "conditions": [ {"bucket": "b"}, ["starts-with", "$key", "user/"],
//!                   ["eq", "$x-amz-meta-a", "1"], ["content-length-range", 1, 1048576] ] }
//! ```
//!
//! As on S3, every form field other than `policy`, `x-amz-signature`, `file` and `x-ignore-*`
//! must be named by a condition, and field names are compared without regard to case.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;

use super::error::AuthError;
use super::sigv4::{check_algorithm, decode32, mac_matches, signing_key};
use tinydfs_proto::time::parse_amz_datetime;

/// Largest policy document read (base64 text); S3 bounds all fields before the file to 20 KiB.
pub const MAX_POLICY: usize = 20 * 1024;
/// Most conditions in one policy.
const MAX_CONDITIONS: usize = 256;

/// Fields a policy need not name.
fn exempt(field: &str) -> bool {
    matches!(field, "policy" | "x-amz-signature" | "file") || field.starts_with("x-ignore-")
}

/// Why a policy refused a form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The policy document is not valid: `400 InvalidPolicyDocument`.
    #[error("Invalid Policy: {0}")]
    Invalid(String),
    /// The form does not satisfy the policy, or it expired: `403 AccessDenied`.
    #[error("Invalid according to Policy: {0}")]
    Denied(String),
}

impl PolicyError {
    /// The S3 error code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Invalid(_) => "InvalidPolicyDocument",
            Self::Denied(_) => "AccessDenied",
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            Self::Invalid(_) => 400,
            Self::Denied(_) => 403,
        }
    }
}

/// One condition of a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// The field (lowercase name) equals the value.
    Eq(String, String),
    /// The field starts with the value (`""`: anything).
    StartsWith(String, String),
    /// The file's length is within `min..=max`.
    LengthRange(u64, u64),
}

/// A decoded policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub expiration: SystemTime,
    pub conditions: Vec<Condition>,
}

/// Checks the form's SigV4 signature of its policy; answers the access key that signed it.
/// `fields` has lowercase names.
pub fn verify_signature(
    fields: &BTreeMap<String, String>,
    secret_for: &dyn Fn(&str) -> Option<String>,
    region: &str,
) -> Result<String, AuthError> {
    let field = |name: &str| {
        fields.get(name).map(String::as_str).ok_or_else(|| {
            AuthError::InvalidArgument(format!("Bucket POST must contain a field named '{name}'"))
        })
    };
    check_algorithm(field("x-amz-algorithm")?)?;
    let policy = field("policy")?;
    let credential = field("x-amz-credential")?;
    let date = field("x-amz-date")?;
    let signature = field("x-amz-signature")?;
    let bad = |msg: String| AuthError::InvalidArgument(msg);
    if parse_amz_datetime(date).is_none() {
        return Err(bad("x-amz-date must be yyyyMMdd'T'HHmmss'Z'".into()));
    }
    let mut it = credential.rsplitn(5, '/');
    let (Some("aws4_request"), Some("s3"), Some(scope_region), Some(day), Some(access_key)) =
        (it.next(), it.next(), it.next(), it.next(), it.next())
    else {
        return Err(bad(format!("malformed credential '{credential}'")));
    };
    if access_key.is_empty() || day.len() != 8 || !date.starts_with(day) {
        return Err(bad(format!("malformed credential '{credential}'")));
    }
    if scope_region != region {
        return Err(bad(format!(
            "the region '{scope_region}' is wrong; expecting '{region}'"
        )));
    }
    let signature =
        decode32(signature).ok_or_else(|| bad("x-amz-signature must be 64 hex digits".into()))?;
    let secret = secret_for(access_key).ok_or(AuthError::UnknownAccessKey)?;
    let key = signing_key(&secret, day, region);
    if !mac_matches(&key, policy.as_bytes(), &signature) {
        return Err(AuthError::SignatureMismatch);
    }
    Ok(access_key.to_string())
}

/// Decodes a base64 policy document.
pub fn parse(b64: &str) -> Result<Policy, PolicyError> {
    let invalid = |m: &str| PolicyError::Invalid(m.to_string());
    if b64.len() > MAX_POLICY {
        return Err(invalid("the policy is too long"));
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|_| invalid("the policy is not valid base64"))?;
    let doc: serde_json::Value =
        serde_json::from_slice(&raw).map_err(|_| invalid("the policy is not valid JSON"))?;
    let obj = doc
        .as_object()
        .ok_or_else(|| invalid("the policy is not a JSON object"))?;
    let expiration = obj
        .get("expiration")
        .ok_or_else(|| invalid("Policy missing expiration."))?
        .as_str()
        .and_then(parse_iso8601)
        .ok_or_else(|| invalid("Invalid 'expiration' value"))?;
    let list = obj
        .get("conditions")
        .ok_or_else(|| invalid("Policy missing conditions."))?
        .as_array()
        .ok_or_else(|| invalid("'conditions' must be a list"))?;
    if list.len() > MAX_CONDITIONS {
        return Err(invalid("too many conditions"));
    }
    let conditions = list.iter().map(condition).collect::<Result<Vec<_>, _>>()?;
    Ok(Policy {
        expiration,
        conditions,
    })
}

/// A condition's field name: `$name` in the list form, `name` in the object form.
fn field_name(s: &str, dollar: bool) -> Option<String> {
    let name = if dollar { s.strip_prefix('$')? } else { s };
    (!name.is_empty()).then(|| name.to_ascii_lowercase())
}

fn condition(v: &serde_json::Value) -> Result<Condition, PolicyError> {
    let invalid = |m: String| PolicyError::Invalid(m);
    if let Some(obj) = v.as_object() {
        let mut entries = obj.iter();
        let (Some((k, v)), None) = (entries.next(), entries.next()) else {
            return Err(invalid(format!("a condition must have one entry: {v}")));
        };
        let value = v
            .as_str()
            .ok_or_else(|| invalid(format!("a condition value must be text: {v}")))?;
        let name = field_name(k, false).ok_or_else(|| invalid(format!("bad condition {v}")))?;
        return Ok(Condition::Eq(name, value.to_string()));
    }
    let list = v
        .as_array()
        .filter(|l| l.len() == 3)
        .ok_or_else(|| invalid(format!("a condition must be an object or a list of 3: {v}")))?;
    let op = list[0].as_str().unwrap_or("").to_ascii_lowercase();
    if op == "content-length-range" {
        let n = |v: &serde_json::Value| {
            v.as_u64()
                .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
        };
        return match (n(&list[1]), n(&list[2])) {
            (Some(min), Some(max)) if min <= max => Ok(Condition::LengthRange(min, max)),
            _ => Err(invalid(format!("bad content-length-range {v}"))),
        };
    }
    let (Some(name), Some(value)) = (list[1].as_str(), list[2].as_str()) else {
        return Err(invalid(format!("bad condition {v}")));
    };
    let name = field_name(name, true).ok_or_else(|| invalid(format!("bad condition {v}")))?;
    match op.as_str() {
        "eq" => Ok(Condition::Eq(name, value.to_string())),
        "starts-with" => Ok(Condition::StartsWith(name, value.to_string())),
        _ => Err(invalid(format!("unknown condition {v}"))),
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.fff]Z`.
fn parse_iso8601(s: &str) -> Option<SystemTime> {
    tinydfs_proto::time::parse_iso8601(s).map(|secs| UNIX_EPOCH + Duration::from_secs(secs))
}

impl Policy {
    /// Checks the policy at `now` against the form's `fields` (lowercase names; `bucket` and
    /// the final `key` included). Answers the allowed file length range, if the policy has one.
    pub fn check(
        &self,
        fields: &BTreeMap<String, String>,
        now: SystemTime,
    ) -> Result<Option<(u64, u64)>, PolicyError> {
        if now > self.expiration {
            return Err(PolicyError::Denied("Policy expired.".into()));
        }
        let value = |name: &str| fields.get(name).map(String::as_str).unwrap_or("");
        let mut range = None;
        for c in &self.conditions {
            let ok = match c {
                Condition::Eq(name, want) => value(name) == want,
                Condition::StartsWith(name, prefix) if name == "content-type" => {
                    // Each of several comma-separated types must match.
                    value(name)
                        .split(',')
                        .all(|t| t.trim().starts_with(prefix.as_str()))
                }
                Condition::StartsWith(name, prefix) => value(name).starts_with(prefix.as_str()),
                Condition::LengthRange(min, max) => {
                    range = Some((*min, *max));
                    true
                }
            };
            if !ok {
                return Err(PolicyError::Denied(format!(
                    "Policy Condition failed: {}",
                    describe(c)
                )));
            }
        }
        let named = |f: &str| {
            self.conditions.iter().any(|c| match c {
                Condition::Eq(n, _) | Condition::StartsWith(n, _) => n == f,
                Condition::LengthRange(..) => false,
            })
        };
        let extra: Vec<&str> = fields
            .keys()
            .map(String::as_str)
            .filter(|f| *f != "bucket" && !exempt(f) && !named(f))
            .collect();
        if !extra.is_empty() {
            return Err(PolicyError::Denied(format!(
                "Extra input fields: {}",
                extra.join(", ")
            )));
        }
        Ok(range)
    }
}

fn describe(c: &Condition) -> String {
    match c {
        Condition::Eq(n, v) => format!("[\"eq\", \"${n}\", {v:?}]"),
        Condition::StartsWith(n, v) => format!("[\"starts-with\", \"${n}\", {v:?}]"),
        Condition::LengthRange(a, b) => format!("[\"content-length-range\", {a}, {b}]"),
    }
}

#[cfg(test)]
mod tests;
