//! Authorization: whether an access key may make a request, from the permission its
//! [`Endpoint`] needs on its bucket.

use super::router::Endpoint;
use crate::error::{S3Error, S3Result};
use crate::Gateway;

/// Refuses (403 AccessDenied) a request whose key lacks the permission its operation needs.
pub fn authorize(gw: &Gateway, access_key: &str, endpoint: &Endpoint) -> S3Result<()> {
    let key = gw.key(access_key).ok_or_else(S3Error::access_denied)?;
    match (endpoint.permission(), endpoint.bucket()) {
        (None, _) => Ok(()),
        (Some(need), Some(b)) if key.allows(b, need) => Ok(()),
        (Some(_), None) if key.admin => Ok(()),
        _ => Err(S3Error::access_denied()),
    }
}
