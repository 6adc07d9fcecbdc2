//! The typed S3 router: each request is parsed once, from its method, host, path, query and a
//! few headers, into an [`Endpoint`] naming the operation with its bucket and key. Both halves of
//! serving it match on that one value: authorization ([`Endpoint::permission`], the anonymous
//! reads of [`Endpoint::allows_anonymous`]) and dispatch to the operation's handler (in
//! [`super`]); [`Endpoint::name`] is the operation's name in logs and metrics.
//!
//! Sub-resources pick the operation (`?lifecycle`, `?uploads`, `?tagging`...), first match wins
//! in the order S3's own router has them; what tinydfs does not serve is an
//! [`Endpoint::Unsupported`] carrying the answer it gets ([`Refusal`]).

use crate::error::{S3Error, S3Result};
use axum::http::{HeaderMap, Method, Uri};
use tinydfs_proto::meta::Permission;

/// Longest key S3 accepts, in bytes of UTF-8.
pub const MAX_KEY_LEN: usize = 1024;

/// Bucket sub-resources S3 has that tinydfs does not implement yet: answered NotImplemented
/// rather than mistaken for a listing.
const UNSUPPORTED_BUCKET_SUBRESOURCES: &[&str] = &[
    "policy",
    "policyStatus",
    "website",
    "encryption",
    "logging",
    "notification",
    "replication",
    "requestPayment",
    "ownershipControls",
    "publicAccessBlock",
    "object-lock",
    "accelerate",
    "analytics",
    "inventory",
    "metrics",
    "intelligent-tiering",
    "versions",
];

/// An S3 operation with what it applies to. The variants are named as the S3 API reference
/// names the operations (but for [`Endpoint::Preflight`] and [`Endpoint::Unsupported`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    // The service.
    ListBuckets,
    // Buckets.
    CreateBucket {
        bucket: String,
    },
    HeadBucket {
        bucket: String,
    },
    DeleteBucket {
        bucket: String,
    },
    GetBucketLocation {
        bucket: String,
    },
    GetBucketVersioning {
        bucket: String,
    },
    GetBucketAcl {
        bucket: String,
    },
    PutBucketAcl {
        bucket: String,
    },
    GetBucketLifecycleConfiguration {
        bucket: String,
    },
    PutBucketLifecycleConfiguration {
        bucket: String,
    },
    DeleteBucketLifecycle {
        bucket: String,
    },
    GetBucketCors {
        bucket: String,
    },
    PutBucketCors {
        bucket: String,
    },
    DeleteBucketCors {
        bucket: String,
    },
    GetBucketTagging {
        bucket: String,
    },
    PutBucketTagging {
        bucket: String,
    },
    DeleteBucketTagging {
        bucket: String,
    },
    ListObjects {
        bucket: String,
    },
    ListObjectsV2 {
        bucket: String,
    },
    ListMultipartUploads {
        bucket: String,
    },
    DeleteObjects {
        bucket: String,
    },
    /// A browser form upload (`POST` of `multipart/form-data` to the bucket).
    PostObject {
        bucket: String,
    },
    // Objects.
    PutObject {
        bucket: String,
        key: String,
    },
    GetObject {
        bucket: String,
        key: String,
    },
    HeadObject {
        bucket: String,
        key: String,
    },
    DeleteObject {
        bucket: String,
        key: String,
    },
    /// `PUT` with `x-amz-copy-source`.
    CopyObject {
        bucket: String,
        key: String,
    },
    GetObjectTagging {
        bucket: String,
        key: String,
    },
    /// `GET` with `?attributes`.
    GetObjectAttributes {
        bucket: String,
        key: String,
    },
    PutObjectTagging {
        bucket: String,
        key: String,
    },
    DeleteObjectTagging {
        bucket: String,
        key: String,
    },
    CreateMultipartUpload {
        bucket: String,
        key: String,
    },
    UploadPart {
        bucket: String,
        key: String,
        upload_id: String,
    },
    /// `PUT` of a part with `x-amz-copy-source`.
    UploadPartCopy {
        bucket: String,
        key: String,
        upload_id: String,
    },
    CompleteMultipartUpload {
        bucket: String,
        key: String,
        upload_id: String,
    },
    AbortMultipartUpload {
        bucket: String,
        key: String,
        upload_id: String,
    },
    ListParts {
        bucket: String,
        key: String,
        upload_id: String,
    },
    /// A CORS preflight (`OPTIONS`), never signed: answered from the bucket's CORS rules.
    Preflight {
        bucket: Option<String>,
        key: Option<String>,
    },
    /// A request tinydfs does not serve, and how it is refused.
    Unsupported {
        bucket: Option<String>,
        key: Option<String>,
        refusal: Refusal,
    },
}

/// How a request for something tinydfs does not serve is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `405 MethodNotAllowed`: no operation has this method on this resource.
    MethodNotAllowed,
    /// `501 NotImplemented` for a bucket sub-resource S3 has (`?policy`, `?website`...).
    BucketSubresource(&'static str),
    /// `501 NotImplemented`: a bucket `PUT`, `DELETE` or `POST` tinydfs lacks.
    BucketOperation,
    /// `501 NotImplemented`: an object sub-resource tinydfs lacks (`?acl`, `?retention`...).
    ObjectSubresource,
}

impl Refusal {
    /// The error the request is answered with.
    pub fn error(self) -> S3Error {
        match self {
            Refusal::MethodNotAllowed => S3Error::new(
                "MethodNotAllowed",
                405,
                "The specified method is not allowed against this resource.",
            ),
            Refusal::BucketSubresource(sub) => {
                S3Error::not_implemented(&format!("the bucket ?{sub} sub-resource"))
            }
            Refusal::BucketOperation => S3Error::not_implemented("this bucket operation"),
            Refusal::ObjectSubresource => S3Error::not_implemented("this object sub-resource"),
        }
    }
}

/// Parses a request's head into its endpoint and its decoded query. `domain` is the root domain
/// of virtual-host-style addressing, if the gateway has one. An invalid path (not UTF-8, a key
/// too long) is the error the request is answered with.
pub fn parse(
    domain: Option<&str>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> S3Result<(Endpoint, Vec<(String, String)>)> {
    let (bucket, key) = address(domain, headers, uri.path())?;
    let query = parse_query(uri.query());
    let endpoint = Endpoint::new(method, bucket, key, &query, headers);
    Ok((endpoint, query))
}

impl Endpoint {
    /// The endpoint of a request for `bucket` and `key` (as [`address`] found them).
    pub fn new(
        m: &Method,
        bucket: Option<String>,
        key: Option<String>,
        query: &[(String, String)],
        headers: &HeaderMap,
    ) -> Endpoint {
        let has = |name: &str| query.iter().any(|(k, _)| k == name);
        let upload_id = || {
            query
                .iter()
                .find(|(k, _)| k == "uploadId")
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        if *m == Method::OPTIONS {
            return Endpoint::Preflight { bucket, key };
        }
        let unsupported = |bucket, key, refusal| Endpoint::Unsupported {
            bucket,
            key,
            refusal,
        };
        let Some(bucket) = bucket else {
            return match *m {
                Method::GET => Endpoint::ListBuckets,
                _ => unsupported(None, key, Refusal::MethodNotAllowed),
            };
        };
        let Some(key) = key else {
            return Self::bucket_endpoint(m, bucket, query, headers);
        };
        use Endpoint as E;
        let (b, k) = (bucket, key);
        match *m {
            Method::PUT if headers.contains_key("x-amz-copy-source") => {
                if has("uploadId") {
                    E::UploadPartCopy {
                        bucket: b,
                        key: k,
                        upload_id: upload_id(),
                    }
                } else {
                    E::CopyObject { bucket: b, key: k }
                }
            }
            Method::PUT if has("uploadId") => E::UploadPart {
                bucket: b,
                key: k,
                upload_id: upload_id(),
            },
            Method::PUT if has("tagging") => E::PutObjectTagging { bucket: b, key: k },
            Method::GET if has("tagging") => E::GetObjectTagging { bucket: b, key: k },
            Method::DELETE if has("tagging") => E::DeleteObjectTagging { bucket: b, key: k },
            Method::PUT if has("acl") || has("retention") || has("legal-hold") => {
                unsupported(Some(b), Some(k), Refusal::ObjectSubresource)
            }
            Method::PUT => E::PutObject { bucket: b, key: k },
            Method::GET if has("uploadId") => E::ListParts {
                bucket: b,
                key: k,
                upload_id: upload_id(),
            },
            Method::GET if has("acl") => unsupported(Some(b), Some(k), Refusal::ObjectSubresource),
            Method::GET if has("attributes") => E::GetObjectAttributes { bucket: b, key: k },
            Method::GET => E::GetObject { bucket: b, key: k },
            Method::HEAD => E::HeadObject { bucket: b, key: k },
            Method::DELETE if has("uploadId") => E::AbortMultipartUpload {
                bucket: b,
                key: k,
                upload_id: upload_id(),
            },
            Method::DELETE => E::DeleteObject { bucket: b, key: k },
            Method::POST if has("uploads") => E::CreateMultipartUpload { bucket: b, key: k },
            Method::POST if has("uploadId") => E::CompleteMultipartUpload {
                bucket: b,
                key: k,
                upload_id: upload_id(),
            },
            _ => unsupported(Some(b), Some(k), Refusal::MethodNotAllowed),
        }
    }

    /// The endpoint of a request for a bucket itself (no key).
    fn bucket_endpoint(
        m: &Method,
        bucket: String,
        query: &[(String, String)],
        headers: &HeaderMap,
    ) -> Endpoint {
        let has = |name: &str| query.iter().any(|(k, _)| k == name);
        use Endpoint as E;
        let b = bucket;
        if *m == Method::GET {
            return if has("location") {
                E::GetBucketLocation { bucket: b }
            } else if has("lifecycle") {
                E::GetBucketLifecycleConfiguration { bucket: b }
            } else if has("versioning") {
                E::GetBucketVersioning { bucket: b }
            } else if has("acl") {
                E::GetBucketAcl { bucket: b }
            } else if has("uploads") {
                E::ListMultipartUploads { bucket: b }
            } else if has("cors") {
                E::GetBucketCors { bucket: b }
            } else if has("tagging") {
                E::GetBucketTagging { bucket: b }
            } else if let Some(sub) = UNSUPPORTED_BUCKET_SUBRESOURCES.iter().find(|s| has(s)) {
                E::Unsupported {
                    bucket: Some(b),
                    key: None,
                    refusal: Refusal::BucketSubresource(sub),
                }
            } else if query.iter().any(|(k, v)| k == "list-type" && v == "2") {
                E::ListObjectsV2 { bucket: b }
            } else {
                E::ListObjects { bucket: b }
            };
        }
        match *m {
            Method::PUT if query.is_empty() => E::CreateBucket { bucket: b },
            Method::PUT if has("lifecycle") => E::PutBucketLifecycleConfiguration { bucket: b },
            Method::PUT if has("acl") => E::PutBucketAcl { bucket: b },
            Method::DELETE if has("lifecycle") => E::DeleteBucketLifecycle { bucket: b },
            Method::PUT if has("cors") => E::PutBucketCors { bucket: b },
            Method::DELETE if has("cors") => E::DeleteBucketCors { bucket: b },
            Method::PUT if has("tagging") => E::PutBucketTagging { bucket: b },
            Method::DELETE if has("tagging") => E::DeleteBucketTagging { bucket: b },
            Method::HEAD => E::HeadBucket { bucket: b },
            Method::DELETE if query.is_empty() => E::DeleteBucket { bucket: b },
            Method::POST if has("delete") => E::DeleteObjects { bucket: b },
            Method::POST if is_form_upload(headers) => E::PostObject { bucket: b },
            Method::PUT | Method::DELETE | Method::POST => E::Unsupported {
                bucket: Some(b),
                key: None,
                refusal: Refusal::BucketOperation,
            },
            _ => E::Unsupported {
                bucket: Some(b),
                key: None,
                refusal: Refusal::MethodNotAllowed,
            },
        }
    }

    /// The operation's name as in the S3 API reference: the `op` label of the request metrics
    /// and logs (dashboards and alerts use these: keep them).
    pub fn name(&self) -> &'static str {
        use Endpoint as E;
        match self {
            E::ListBuckets => "ListBuckets",
            E::CreateBucket { .. } => "CreateBucket",
            E::HeadBucket { .. } => "HeadBucket",
            E::DeleteBucket { .. } => "DeleteBucket",
            E::GetBucketLocation { .. } => "GetBucketLocation",
            E::GetBucketVersioning { .. } => "GetBucketVersioning",
            E::GetBucketAcl { .. } => "GetBucketAcl",
            E::PutBucketAcl { .. } => "PutBucketAcl",
            E::GetBucketLifecycleConfiguration { .. } => "GetBucketLifecycleConfiguration",
            E::PutBucketLifecycleConfiguration { .. } => "PutBucketLifecycleConfiguration",
            E::DeleteBucketLifecycle { .. } => "DeleteBucketLifecycle",
            E::GetBucketCors { .. } => "GetBucketCors",
            E::PutBucketCors { .. } => "PutBucketCors",
            E::DeleteBucketCors { .. } => "DeleteBucketCors",
            E::GetBucketTagging { .. } => "GetBucketTagging",
            E::PutBucketTagging { .. } => "PutBucketTagging",
            E::DeleteBucketTagging { .. } => "DeleteBucketTagging",
            E::ListObjects { .. } => "ListObjects",
            E::ListObjectsV2 { .. } => "ListObjectsV2",
            E::ListMultipartUploads { .. } => "ListMultipartUploads",
            E::DeleteObjects { .. } => "DeleteObjects",
            E::PostObject { .. } => "PostObject",
            E::PutObject { .. } => "PutObject",
            E::GetObject { .. } => "GetObject",
            E::HeadObject { .. } => "HeadObject",
            E::DeleteObject { .. } => "DeleteObject",
            E::CopyObject { .. } => "CopyObject",
            E::GetObjectTagging { .. } => "GetObjectTagging",
            E::GetObjectAttributes { .. } => "GetObjectAttributes",
            E::PutObjectTagging { .. } => "PutObjectTagging",
            E::DeleteObjectTagging { .. } => "DeleteObjectTagging",
            E::CreateMultipartUpload { .. } => "CreateMultipartUpload",
            E::UploadPart { .. } => "UploadPart",
            E::UploadPartCopy { .. } => "UploadPartCopy",
            E::CompleteMultipartUpload { .. } => "CompleteMultipartUpload",
            E::AbortMultipartUpload { .. } => "AbortMultipartUpload",
            E::ListParts { .. } => "ListParts",
            E::Preflight { .. } => "PreflightRequest",
            E::Unsupported { .. } => "Unsupported",
        }
    }

    /// The permission the operation needs on its bucket; `None`: any key may ask (ListBuckets
    /// lists only the key's buckets; CreateBucket makes the key the new bucket's owner).
    pub fn permission(&self) -> Option<Permission> {
        use Endpoint as E;
        match self {
            E::ListBuckets | E::CreateBucket { .. } => None,
            E::PutBucketLifecycleConfiguration { .. }
            | E::DeleteBucketLifecycle { .. }
            | E::DeleteBucket { .. }
            | E::PutBucketAcl { .. }
            | E::PutBucketCors { .. }
            | E::DeleteBucketCors { .. }
            | E::PutBucketTagging { .. }
            | E::DeleteBucketTagging { .. } => Some(Permission::Owner),
            E::PutObject { .. }
            | E::DeleteObject { .. }
            | E::DeleteObjects { .. }
            | E::PostObject { .. }
            | E::CreateMultipartUpload { .. }
            | E::UploadPart { .. }
            | E::CompleteMultipartUpload { .. }
            | E::AbortMultipartUpload { .. }
            | E::CopyObject { .. }
            | E::UploadPartCopy { .. }
            | E::PutObjectTagging { .. }
            | E::DeleteObjectTagging { .. } => Some(Permission::Write),
            // Reads (GetObjectTagging and GetBucketCors among them), and what is answered
            // NotImplemented or refused anyway.
            E::HeadBucket { .. }
            | E::GetBucketLocation { .. }
            | E::GetBucketVersioning { .. }
            | E::GetBucketAcl { .. }
            | E::GetBucketLifecycleConfiguration { .. }
            | E::GetBucketCors { .. }
            | E::GetBucketTagging { .. }
            | E::ListObjects { .. }
            | E::ListObjectsV2 { .. }
            | E::ListMultipartUploads { .. }
            | E::GetObject { .. }
            | E::HeadObject { .. }
            | E::GetObjectTagging { .. }
            | E::GetObjectAttributes { .. }
            | E::ListParts { .. }
            | E::Preflight { .. }
            | E::Unsupported { .. } => Some(Permission::Read),
        }
    }

    /// Operations an anonymous request may make, on a bucket whose ACL is `public-read` only.
    pub fn allows_anonymous(&self) -> bool {
        use Endpoint as E;
        matches!(
            self,
            E::GetObject { .. }
                | E::HeadObject { .. }
                | E::GetObjectAttributes { .. }
                | E::ListObjects { .. }
                | E::ListObjectsV2 { .. }
                | E::HeadBucket { .. }
                | E::GetBucketLocation { .. }
        )
    }

    /// The bucket the request names, if any.
    pub fn bucket(&self) -> Option<&str> {
        use Endpoint as E;
        match self {
            E::ListBuckets => None,
            E::Preflight { bucket, .. } | E::Unsupported { bucket, .. } => bucket.as_deref(),
            E::CreateBucket { bucket }
            | E::HeadBucket { bucket }
            | E::DeleteBucket { bucket }
            | E::GetBucketLocation { bucket }
            | E::GetBucketVersioning { bucket }
            | E::GetBucketAcl { bucket }
            | E::PutBucketAcl { bucket }
            | E::GetBucketLifecycleConfiguration { bucket }
            | E::PutBucketLifecycleConfiguration { bucket }
            | E::DeleteBucketLifecycle { bucket }
            | E::GetBucketCors { bucket }
            | E::PutBucketCors { bucket }
            | E::DeleteBucketCors { bucket }
            | E::GetBucketTagging { bucket }
            | E::PutBucketTagging { bucket }
            | E::DeleteBucketTagging { bucket }
            | E::ListObjects { bucket }
            | E::ListObjectsV2 { bucket }
            | E::ListMultipartUploads { bucket }
            | E::DeleteObjects { bucket }
            | E::PostObject { bucket }
            | E::PutObject { bucket, .. }
            | E::GetObject { bucket, .. }
            | E::HeadObject { bucket, .. }
            | E::DeleteObject { bucket, .. }
            | E::CopyObject { bucket, .. }
            | E::GetObjectTagging { bucket, .. }
            | E::GetObjectAttributes { bucket, .. }
            | E::PutObjectTagging { bucket, .. }
            | E::DeleteObjectTagging { bucket, .. }
            | E::CreateMultipartUpload { bucket, .. }
            | E::UploadPart { bucket, .. }
            | E::UploadPartCopy { bucket, .. }
            | E::CompleteMultipartUpload { bucket, .. }
            | E::AbortMultipartUpload { bucket, .. }
            | E::ListParts { bucket, .. } => Some(bucket),
        }
    }

    /// The key the request names, if any.
    pub fn key(&self) -> Option<&str> {
        use Endpoint as E;
        match self {
            E::Preflight { key, .. } | E::Unsupported { key, .. } => key.as_deref(),
            E::PutObject { key, .. }
            | E::GetObject { key, .. }
            | E::HeadObject { key, .. }
            | E::DeleteObject { key, .. }
            | E::CopyObject { key, .. }
            | E::GetObjectTagging { key, .. }
            | E::GetObjectAttributes { key, .. }
            | E::PutObjectTagging { key, .. }
            | E::DeleteObjectTagging { key, .. }
            | E::CreateMultipartUpload { key, .. }
            | E::UploadPart { key, .. }
            | E::UploadPartCopy { key, .. }
            | E::CompleteMultipartUpload { key, .. }
            | E::AbortMultipartUpload { key, .. }
            | E::ListParts { key, .. } => Some(key),
            _ => None,
        }
    }
}

/// Whether a request is a form upload (its body is `multipart/form-data`).
pub fn is_form_upload(headers: &HeaderMap) -> bool {
    headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| ct.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("multipart/form-data"))
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// Splits a raw query string into decoded pairs.
pub fn parse_query(raw: Option<&str>) -> Vec<(String, String)> {
    raw.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

/// Bucket and key from the host (virtual-host style, under `domain`) and the path (path style).
pub fn address(
    domain: Option<&str>,
    headers: &HeaderMap,
    path: &str,
) -> S3Result<(Option<String>, Option<String>)> {
    let path = percent_encoding::percent_decode_str(path)
        .decode_utf8()
        .map_err(|_| S3Error::invalid_argument("the path is not valid UTF-8"))?;
    let path = path.strip_prefix('/').unwrap_or(&path);
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .map(|h| {
            h.rsplit_once(':').map_or(h, |(name, port)| {
                if port.chars().all(|c| c.is_ascii_digit()) {
                    name
                } else {
                    h
                }
            })
        })
        .unwrap_or("");
    let vhost_bucket = domain.and_then(|d| {
        host.strip_suffix(d)
            .and_then(|b| b.strip_suffix('.'))
            .filter(|b| !b.is_empty())
            .map(str::to_string)
    });
    let (bucket, key) = match vhost_bucket {
        Some(b) => (Some(b), Some(path.to_string())),
        None => match path.split_once('/') {
            Some((b, k)) => (Some(b.to_string()), Some(k.to_string())),
            None => (Some(path.to_string()), None),
        },
    };
    let bucket = bucket.filter(|b| !b.is_empty());
    let key = key.filter(|k| !k.is_empty());
    if let Some(k) = &key {
        if k.len() > MAX_KEY_LEN {
            return Err(S3Error::new("KeyTooLongError", 400, "Your key is too long"));
        }
    }
    Ok((bucket, key))
}

#[cfg(test)]
mod tests;
