//! Requests for S3 features tinydfs does not have, refused before routing: a request S3 would
//! act on must never be answered as if tinydfs had done so (a "wrong success"). Most are
//! answered `501 NotImplemented`; where AWS itself refuses the request for a bucket without the
//! feature (Object Lock headers), the answer is AWS's. docs/S3-OPERATIONS.md lists every
//! operation with its status.

use super::request::S3Request;
use crate::error::{S3Error, S3Result};
use axum::http::Method;

/// Object sub-resources read with GET/HEAD that tinydfs does not serve (without this, they
/// would be answered with the object itself).
const OBJECT_GET_SUBRESOURCES: &[(&str, &str)] = &[
    ("torrent", "GetObjectTorrent"),
    ("retention", "GetObjectRetention"),
    ("legal-hold", "GetObjectLegalHold"),
];

/// Object operations sent as POST with a sub-resource (without this, 405).
const OBJECT_POST_SUBRESOURCES: &[(&str, &str)] = &[
    ("restore", "RestoreObject"),
    ("select", "SelectObjectContent"),
];

/// Object operations sent as PUT with a sub-resource (without this, a PutObject).
const OBJECT_PUT_SUBRESOURCES: &[(&str, &str)] = &[("renameObject", "RenameObject")];

/// Bucket sub-resources read with GET that are not in the router's own list (without this, a
/// listing).
const BUCKET_GET_SUBRESOURCES: &[(&str, &str)] = &[
    ("session", "CreateSession"),
    ("metadataTable", "GetBucketMetadataTableConfiguration"),
    ("metadataConfiguration", "GetBucketMetadataConfiguration"),
];

/// Canned object ACLs that say what tinydfs does anyway (the writer's key and the bucket's
/// owners have access, nobody else).
const HARMLESS_OBJECT_ACLS: &[&str] =
    &["private", "bucket-owner-full-control", "bucket-owner-read"];

/// Headers that ask for Object Lock on a new object.
const OBJECT_LOCK_HEADERS: &[&str] = &[
    "x-amz-object-lock-mode",
    "x-amz-object-lock-retain-until-date",
    "x-amz-object-lock-legal-hold",
];

/// Refuses requests for features tinydfs does not have; `Ok` for everything else.
pub fn refuse(req: &S3Request) -> S3Result<()> {
    if req.bucket.is_none() {
        // S3 Express directory buckets; the listing would be of general purpose buckets.
        if req.q("x-id") == Some("ListDirectoryBuckets") {
            return Err(S3Error::not_implemented("ListDirectoryBuckets"));
        }
        return Ok(());
    }
    let m = &req.method;
    let sub = |list: &[(&str, &'static str)]| -> S3Result<()> {
        match list.iter().find(|(name, _)| req.has(name)) {
            Some((_, op)) => Err(S3Error::not_implemented(op)),
            None => Ok(()),
        }
    };
    if req.key.is_none() {
        if *m == Method::GET {
            sub(BUCKET_GET_SUBRESOURCES)?;
        }
        if *m == Method::PUT && req.query.is_empty() {
            // CreateBucket.
            if req
                .header("x-amz-bucket-object-lock-enabled")
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
            {
                return Err(S3Error::not_implemented("Object Lock"));
            }
            if req
                .header("x-amz-acl")
                .is_some_and(|a| a.trim() != "private")
            {
                return Err(S3Error::not_implemented(
                    "a canned ACL other than private on CreateBucket (set public-read with PutBucketAcl)",
                ));
            }
            grants(req)?;
        }
        return Ok(());
    }
    match *m {
        Method::GET | Method::HEAD => sub(OBJECT_GET_SUBRESOURCES)?,
        Method::POST => sub(OBJECT_POST_SUBRESOURCES)?,
        Method::PUT => sub(OBJECT_PUT_SUBRESOURCES)?,
        _ => {}
    }
    // Encryption with keys tinydfs does not hold: storing the object in the clear would be a
    // wrong success, and reading one back with such headers would pretend to decrypt.
    if req
        .headers
        .keys()
        .any(|h| h.as_str().contains("server-side-encryption-customer-"))
    {
        return Err(S3Error::not_implemented(
            "server-side encryption with customer-provided keys (SSE-C)",
        ));
    }
    let creates =
        (*m == Method::PUT && !req.has("uploadId")) || (*m == Method::POST && req.has("uploads"));
    if !creates {
        return Ok(());
    }
    if let Some(sse) = req.header("x-amz-server-side-encryption") {
        if sse.trim() != "AES256" {
            return Err(S3Error::not_implemented(&format!(
                "server-side encryption {sse}"
            )));
        }
    }
    if OBJECT_LOCK_HEADERS
        .iter()
        .any(|h| req.headers.contains_key(*h))
    {
        // AWS's answer for a bucket created without Object Lock, which every tinydfs bucket is.
        return Err(S3Error::invalid_request(
            "Bucket is missing Object Lock Configuration",
        ));
    }
    if let Some(acl) = req.header("x-amz-acl") {
        if !HARMLESS_OBJECT_ACLS.contains(&acl.trim()) {
            return Err(S3Error::not_implemented(&format!(
                "the object ACL {acl} (objects have no ACLs; a bucket may be public-read)"
            )));
        }
    }
    grants(req)
}

/// ACL grant headers (`x-amz-grant-*`): tinydfs keeps no ACL grants.
fn grants(req: &S3Request) -> S3Result<()> {
    if req
        .headers
        .keys()
        .any(|h| h.as_str().starts_with("x-amz-grant-"))
    {
        return Err(S3Error::not_implemented(
            "ACL grant headers (x-amz-grant-*)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Verified;
    use axum::http::HeaderMap;

    fn req(m: Method, key: Option<&str>, query: &str, headers: &[(&str, &str)]) -> S3Request {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            let name = axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap();
            h.insert(name, v.parse().unwrap());
        }
        S3Request {
            method: m,
            bucket: Some("b".into()),
            key: key.map(str::to_string),
            query: super::super::router::parse_query(Some(query)),
            headers: h,
            auth: Verified::anonymous(),
            body: std::sync::Mutex::new(None),
            request_id: String::new(),
            body_timeout: std::time::Duration::from_secs(1),
        }
    }

    fn code(r: S3Result<()>) -> Option<(&'static str, u16)> {
        r.err().map(|e| (e.code, e.status.as_u16()))
    }

    #[test]
    fn refused_not_silently_served() {
        let ni = Some(("NotImplemented", 501));
        assert_eq!(
            code(refuse(&req(Method::GET, Some("k"), "torrent", &[]))),
            ni
        );
        assert_eq!(
            code(refuse(&req(Method::GET, Some("k"), "retention", &[]))),
            ni
        );
        assert_eq!(
            code(refuse(&req(Method::HEAD, Some("k"), "legal-hold", &[]))),
            ni
        );
        assert_eq!(
            code(refuse(&req(Method::POST, Some("k"), "restore", &[]))),
            ni
        );
        assert_eq!(
            code(refuse(&req(
                Method::POST,
                Some("k"),
                "select&select-type=2",
                &[]
            ))),
            ni
        );
        assert_eq!(
            code(refuse(&req(Method::PUT, Some("k"), "renameObject", &[]))),
            ni
        );
        assert_eq!(code(refuse(&req(Method::GET, None, "session", &[]))), ni);
        let lock = [("x-amz-bucket-object-lock-enabled", "true")];
        assert_eq!(code(refuse(&req(Method::PUT, None, "", &lock))), ni);
        let public = [("x-amz-acl", "public-read")];
        assert_eq!(code(refuse(&req(Method::PUT, None, "", &public))), ni);
        assert_eq!(code(refuse(&req(Method::PUT, Some("k"), "", &public))), ni);
        assert_eq!(
            code(refuse(&req(Method::POST, Some("k"), "uploads", &public))),
            ni
        );
        let grant = [("x-amz-grant-read", "id=x")];
        assert_eq!(code(refuse(&req(Method::PUT, Some("k"), "", &grant))), ni);
        let ssec = [("x-amz-server-side-encryption-customer-algorithm", "AES256")];
        assert_eq!(code(refuse(&req(Method::GET, Some("k"), "", &ssec))), ni);
        let kms = [("x-amz-server-side-encryption", "aws:kms")];
        assert_eq!(code(refuse(&req(Method::PUT, Some("k"), "", &kms))), ni);
        let retain = [("x-amz-object-lock-mode", "GOVERNANCE")];
        assert_eq!(
            code(refuse(&req(Method::PUT, Some("k"), "", &retain))),
            Some(("InvalidRequest", 400))
        );
        // What tinydfs does anyway passes.
        for ok in [
            req(Method::GET, Some("k"), "", &[]),
            req(Method::GET, Some("k"), "partNumber=1", &[]),
            req(Method::PUT, Some("k"), "", &[("x-amz-acl", "private")]),
            req(
                Method::PUT,
                Some("k"),
                "",
                &[("x-amz-server-side-encryption", "AES256")],
            ),
            req(Method::PUT, None, "", &[("x-amz-acl", "private")]),
            req(Method::GET, None, "list-type=2", &[]),
            req(Method::DELETE, Some("k"), "", &[]),
        ] {
            assert!(refuse(&ok).is_ok());
        }
    }
}
