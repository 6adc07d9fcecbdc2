//! The S3 API: one handler that authenticates, parses the request into an [`Endpoint`] and calls
//! the operation, one file per operation family.
//!
//! - [`bucket`]: ListBuckets, CreateBucket, HeadBucket, DeleteBucket, GetBucketLocation.
//! - [`list`]: ListObjects (v1 and v2).
//! - [`object`]: PutObject, GetObject, HeadObject, DeleteObject, DeleteObjects.
//! - [`multipart`]: Create, UploadPart, Complete, Abort, ListParts, ListMultipartUploads.
//! - [`copy`]: CopyObject and UploadPartCopy (chunks shared, not copied).
//! - [`lifecycle`]: Put/GetBucketLifecycleConfiguration, DeleteBucketLifecycle.
//! - [`tagging`]: Put/Get/DeleteObjectTagging, and `x-amz-tagging` on uploads.
//! - [`cors`]: Put/Get/DeleteBucketCors, preflights (`OPTIONS`) and CORS headers on answers.
//! - [`post`]: PostObject (browser uploads from HTML forms, authorized by a signed policy).
//! - `unsupported`: requests refused with NotImplemented (or S3's own refusal) rather than
//!   answered with a wrong success.

pub mod bucket;
pub mod copy;
pub mod cors;
pub mod lifecycle;
pub mod list;
pub mod multipart;
pub mod object;
pub mod post;
pub mod tagging;
mod unsupported;

use crate::auth::{self, AuthError, TrailerSlot, Verified};
use crate::error::{S3Error, S3Result};
use crate::Gateway;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use axum::Router;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use std::sync::Arc;
use tinydfs_proto::meta::Permission;
use tracing::Instrument;

/// Longest key S3 accepts, in bytes of UTF-8.
pub const MAX_KEY_LEN: usize = 1024;
/// Largest XML request body read into memory (DeleteObjects of 1,000 long keys fits).
pub const MAX_XML_BODY: usize = 2 * 1024 * 1024;

/// The S3 router: every path goes to [`handle`].
pub fn router(gw: Arc<Gateway>) -> Router {
    Router::new().fallback(handle).with_state(gw)
}

/// A request, authenticated and with bucket, key and query decoded.
pub struct S3Request {
    pub method: Method,
    pub bucket: Option<String>,
    pub key: Option<String>,
    pub query: Vec<(String, String)>,
    pub headers: HeaderMap,
    pub auth: Verified,
    /// The body, taken once (behind a mutex so that `&S3Request` may cross awaits: `Body` is not
    /// `Sync`).
    pub body: std::sync::Mutex<Option<Body>>,
    pub request_id: String,
    /// Longest silence inside the body before it fails with `400 RequestTimeout`.
    pub body_timeout: std::time::Duration,
}

impl S3Request {
    /// A query parameter's value.
    pub fn q(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether a query parameter is present (with or without a value).
    pub fn has(&self, name: &str) -> bool {
        self.query.iter().any(|(k, _)| k == name)
    }

    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The bucket name, or an error for a request that needs one.
    pub fn bucket(&self) -> S3Result<&str> {
        self.bucket
            .as_deref()
            .ok_or_else(|| S3Error::invalid_request("a bucket name is required"))
    }

    /// The key, or an error for a request that needs one.
    pub fn key(&self) -> S3Result<&str> {
        self.key
            .as_deref()
            .ok_or_else(|| S3Error::invalid_request("a key is required"))
    }

    /// The decoded body: aws-chunked framing removed and signatures checked, the payload hash
    /// verified at the end. The trailer slot holds trailing checksums once the stream ended.
    pub fn take_body(&mut self) -> (BoxStream<'static, Result<Bytes, S3Error>>, TrailerSlot) {
        let body = self
            .body
            .get_mut()
            .ok()
            .and_then(Option::take)
            .unwrap_or_default();
        let raw = body.into_data_stream();
        let payload = self.auth.payload;
        let chunked = auth::is_aws_chunked(&payload)
            || self
                .header("content-encoding")
                .is_some_and(|v| v.split(',').any(|p| p.trim() == "aws-chunked"));
        if chunked {
            let decoded_len = self
                .header("x-amz-decoded-content-length")
                .and_then(|v| v.parse().ok());
            let (stream, slot) =
                auth::decode_aws_chunked(raw, &payload, &self.auth.signing, decoded_len);
            let stream = stream.map(|r| r.map_err(S3Error::from)).boxed();
            return (crate::limits::idle_timeout(stream, self.body_timeout), slot);
        }
        let mut check = payload.sha256_check();
        let stream = raw.map(Some).chain(futures_util::stream::iter([None]));
        let stream = stream.filter_map(move |item| {
            let out = match item {
                Some(Ok(b)) => {
                    if let Some(c) = check.as_mut() {
                        c.update(&b);
                    }
                    Some(Ok(b))
                }
                Some(Err(e)) => Some(Err(S3Error::from(AuthError::BodyRead(e.to_string())))),
                None => match check.take().map(|c| c.finish()) {
                    Some(Err(e)) => Some(Err(S3Error::from(e))),
                    _ => None,
                },
            };
            std::future::ready(out)
        });
        let stream = crate::limits::idle_timeout(stream.boxed(), self.body_timeout);
        (stream, TrailerSlot::default())
    }

    /// Reads a small XML body whole (bounded), checking its signature and hash.
    pub async fn read_small_body(&mut self) -> S3Result<Vec<u8>> {
        let too_big = || S3Error::new("MaxMessageLengthExceeded", 400, "Your request was too big.");
        // A declared length over the bound is refused without keeping a byte of the body.
        let declared = self
            .header("x-amz-decoded-content-length")
            .or_else(|| self.header("content-length"))
            .and_then(|v| v.parse::<u64>().ok());
        let (mut stream, _) = self.take_body();
        if declared.is_some_and(|n| n > MAX_XML_BODY as u64) {
            drain(&mut stream).await;
            return Err(too_big());
        }
        let mut out = Vec::new();
        while let Some(b) = stream.next().await {
            out.extend_from_slice(&b?);
            if out.len() > MAX_XML_BODY {
                drain(&mut stream).await;
                return Err(too_big());
            }
        }
        Ok(out)
    }
}

/// Reads and drops what is left of a refused body, within bounds, so that the client, still
/// sending, reads the error instead of a reset connection.
async fn drain<S: futures_util::Stream<Item = S3Result<Bytes>> + Unpin>(stream: &mut S) {
    const MAX_DRAIN: usize = 16 << 20;
    let mut seen = 0;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while let Some(Ok(b)) = stream.next().await {
            seen += b.len();
            if seen > MAX_DRAIN {
                break;
            }
        }
    })
    .await;
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

/// Bucket and key from the host (virtual-host style) and the path (path style).
fn address(
    gw: &Gateway,
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
    let vhost_bucket = gw.config.domain.as_deref().and_then(|d| {
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

async fn handle(State(gw): State<Arc<Gateway>>, req: Request) -> Response {
    if req.uri().path() == tinydfs_proto::client::paths::HEALTH_ALT && req.method() == Method::GET {
        // Unauthenticated liveness for container health checks; no bucket can be named `_health`.
        return Response::new(Body::from("{\"role\":\"gateway\"}"));
    }
    let request_id = format!("{:016X}", rand::random::<u64>());
    let head = req.method() == Method::HEAD;
    let close_after = expects_continue_without_body(req.headers());
    let started = std::time::Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    // Every log line of the request (chunkservers' included: they get the id) carries its id.
    let op = operation_of(&gw, &req);
    let span = tracing::info_span!("s3", request_id = %request_id, op);
    // Requests from browsers (with an `Origin`) get their bucket's CORS headers, errors included.
    let cors = address(&gw, req.headers(), req.uri().path())
        .ok()
        .and_then(|(b, _)| cors::actual_request(req.headers(), req.method(), b.as_deref()));
    // Beyond `max_requests` in flight a request is refused at once rather than queued; the
    // permit is held until the response body has been sent.
    let permit = gw.in_flight.clone().try_acquire_owned().ok();
    let req = req.map(|b| gw.metrics.count_received(b));
    let result = match permit {
        Some(_) => {
            dispatch(gw.clone(), req, request_id.clone())
                .instrument(span.clone())
                .await
        }
        None => Err(crate::limits::slow_down()),
    };
    let response = match result {
        Ok(mut r) => {
            if let Ok(v) = request_id.parse() {
                r.headers_mut().insert("x-amz-request-id", v);
            }
            r
        }
        Err(e) => e.into_response_for(head, &request_id),
    };
    let mut response = response;
    // Refused for overload: no CORS lookup either (it could cost a master read).
    let served = response.status() != axum::http::StatusCode::SERVICE_UNAVAILABLE;
    if let Some(c) = cors.as_ref().filter(|_| served) {
        cors::decorate(&gw, c, &mut response)
            .instrument(span.clone())
            .await;
    }
    if close_after {
        // The aws CLI (awscli 1.46 with its bundled botocore 1.43) keeps a stale response parser
        // on a pooled connection after an `Expect: 100-continue` request answered without a
        // 100 Continue; hyper sends none for an empty body. Closing that connection makes the
        // next upload use a fresh one (`aws s3 sync` of folders with empty files hung otherwise).
        response
            .headers_mut()
            .insert("connection", axum::http::HeaderValue::from_static("close"));
    }
    span.in_scope(|| {
        tracing::info!(
            %method, %path, status = response.status().as_u16(), request_id = %request_id,
            ms = started.elapsed().as_millis() as u64, "s3 request"
        )
    });
    gw.metrics
        .observe(op, response.status().as_u16(), started.elapsed());
    response.map(|b| {
        let b = gw.metrics.count_sent(b);
        match permit {
            Some(p) => Body::new(crate::limits::Held::new(b, p)),
            None => b,
        }
    })
}

/// The S3 operation `req` asks for, named as in the S3 API reference: the `op` label of the
/// request metrics and logs. Mirrors [`route`] (requests it refuses are `Unsupported`) but runs
/// before authentication, so that refused requests are counted by operation too.
fn operation_of(gw: &Gateway, req: &Request) -> &'static str {
    let Ok((bucket, key)) = address(gw, req.headers(), req.uri().path()) else {
        return "Invalid";
    };
    let query = parse_query(req.uri().query());
    operation(
        req.method(),
        bucket.is_some(),
        key.is_some(),
        &query,
        req.headers(),
    )
}

fn operation(
    m: &Method,
    bucket: bool,
    key: bool,
    query: &[(String, String)],
    headers: &HeaderMap,
) -> &'static str {
    let has = |name: &str| query.iter().any(|(k, _)| k == name);
    if *m == Method::OPTIONS {
        return "PreflightRequest";
    }
    if !bucket {
        return if *m == Method::GET {
            "ListBuckets"
        } else {
            "Unsupported"
        };
    }
    if !key {
        return match *m {
            Method::GET if has("location") => "GetBucketLocation",
            Method::GET if has("lifecycle") => "GetBucketLifecycleConfiguration",
            Method::GET if has("versioning") => "GetBucketVersioning",
            Method::GET if has("acl") => "GetBucketAcl",
            Method::PUT if has("acl") => "PutBucketAcl",
            Method::GET if has("uploads") => "ListMultipartUploads",
            Method::GET if has("cors") => "GetBucketCors",
            Method::PUT if has("cors") => "PutBucketCors",
            Method::DELETE if has("cors") => "DeleteBucketCors",
            Method::GET if UNSUPPORTED_BUCKET_SUBRESOURCES.iter().any(|s| has(s)) => "Unsupported",
            Method::GET if query.iter().any(|(k, v)| k == "list-type" && v == "2") => {
                "ListObjectsV2"
            }
            Method::GET => "ListObjects",
            Method::PUT if query.is_empty() => "CreateBucket",
            Method::PUT if has("lifecycle") => "PutBucketLifecycleConfiguration",
            Method::DELETE if has("lifecycle") => "DeleteBucketLifecycle",
            Method::HEAD => "HeadBucket",
            Method::DELETE if query.is_empty() => "DeleteBucket",
            Method::POST if has("delete") => "DeleteObjects",
            Method::POST if post::is_form_upload(headers) => "PostObject",
            _ => "Unsupported",
        };
    }
    match *m {
        Method::PUT if headers.contains_key("x-amz-copy-source") => {
            if has("uploadId") {
                "UploadPartCopy"
            } else {
                "CopyObject"
            }
        }
        Method::PUT if has("uploadId") => "UploadPart",
        Method::PUT if has("tagging") => "PutObjectTagging",
        Method::GET if has("tagging") => "GetObjectTagging",
        Method::DELETE if has("tagging") => "DeleteObjectTagging",
        Method::PUT if has("acl") || has("retention") || has("legal-hold") => "Unsupported",
        Method::PUT => "PutObject",
        Method::GET if has("uploadId") => "ListParts",
        Method::GET if has("acl") || has("attributes") => "Unsupported",
        Method::GET => "GetObject",
        Method::HEAD => "HeadObject",
        Method::DELETE if has("uploadId") => "AbortMultipartUpload",
        Method::DELETE => "DeleteObject",
        Method::POST if has("uploads") => "CreateMultipartUpload",
        Method::POST if has("uploadId") => "CompleteMultipartUpload",
        _ => "Unsupported",
    }
}

/// An `Expect: 100-continue` request with an empty body: hyper answers it without an interim
/// 100 Continue.
fn expects_continue_without_body(h: &HeaderMap) -> bool {
    let expect = h
        .get("expect")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
    let empty = h
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim() == "0");
    expect && empty
}

async fn dispatch(gw: Arc<Gateway>, req: Request, request_id: String) -> S3Result<Response> {
    let (parts, body) = req.into_parts();
    crate::limits::check_head(&parts)?;
    if parts.method == Method::OPTIONS {
        // Browsers never sign preflights: they are answered from the bucket's CORS rules alone,
        // before (and without) authentication, as on AWS.
        let (bucket, key) = address(&gw, &parts.headers, parts.uri.path())?;
        return cors::preflight(&gw, &parts.headers, bucket.as_deref(), key.as_deref()).await;
    }
    let verify = || {
        auth::verify(
            &parts,
            &|ak| gw.secret_for(ak),
            &gw.config.region,
            std::time::SystemTime::now(),
        )
    };
    let mut verified = verify();
    // A key created moments ago may not be in this gateway's copy yet: reload once.
    if matches!(verified, Err(AuthError::UnknownAccessKey)) && crate::reload_keys(&gw).await {
        verified = verify();
    }
    let (bucket, key) = address(&gw, &parts.headers, parts.uri.path())?;
    let query = parse_query(parts.uri.query());
    let op = operation(
        &parts.method,
        bucket.is_some(),
        key.is_some(),
        &query,
        &parts.headers,
    );
    let auth = match verified {
        Ok(a) => {
            // Likewise a grant made moments ago (a bucket this key just created, for one).
            if authorize(&gw, &a.access_key, bucket.as_deref(), op).is_err() {
                crate::reload_keys(&gw).await;
                authorize(&gw, &a.access_key, bucket.as_deref(), op)?;
            }
            a
        }
        // A form upload carries its signature in the form: `post` verifies it and the key's
        // permission once it has read the fields.
        Err(AuthError::Missing) if op == "PostObject" => Verified::anonymous(),
        Err(AuthError::Missing) if ANONYMOUS_READS.contains(&op) => {
            let public = match &bucket {
                Some(b) => bucket::is_public(&gw, b).await?,
                None => false,
            };
            if !public {
                return Err(access_denied());
            }
            Verified::anonymous()
        }
        Err(e) => return Err(e.into()),
    };
    let req = S3Request {
        method: parts.method,
        bucket,
        key,
        query,
        headers: parts.headers,
        auth,
        body: std::sync::Mutex::new(Some(body)),
        request_id,
        body_timeout: std::time::Duration::from_millis(gw.config.body_timeout_ms),
    };
    route(gw, req).await
}

pub(crate) fn access_denied() -> S3Error {
    S3Error::new("AccessDenied", 403, "Access Denied")
}

/// Operations an anonymous request may make, on a bucket whose ACL is `public-read` only.
const ANONYMOUS_READS: &[&str] = &[
    "GetObject",
    "HeadObject",
    "ListObjects",
    "ListObjectsV2",
    "HeadBucket",
    "GetBucketLocation",
];

/// The permission operation `op` needs on its bucket; `None`: any key may ask (ListBuckets
/// lists only the key's buckets; CreateBucket makes the key the new bucket's owner).
fn needed(op: &str) -> Option<Permission> {
    match op {
        "ListBuckets" | "CreateBucket" => None,
        "PutBucketLifecycleConfiguration"
        | "DeleteBucketLifecycle"
        | "DeleteBucket"
        | "PutBucketAcl"
        | "PutBucketCors"
        | "DeleteBucketCors" => Some(Permission::Owner),
        "PutObject"
        | "DeleteObject"
        | "DeleteObjects"
        | "PostObject"
        | "CreateMultipartUpload"
        | "UploadPart"
        | "CompleteMultipartUpload"
        | "AbortMultipartUpload"
        | "CopyObject"
        | "UploadPartCopy"
        | "PutObjectTagging"
        | "DeleteObjectTagging" => Some(Permission::Write),
        // Reads (GetObjectTagging and GetBucketCors among them), and what is answered
        // NotImplemented or refused anyway.
        _ => Some(Permission::Read),
    }
}

/// Refuses (403 AccessDenied) a request whose key lacks the permission its operation needs.
fn authorize(gw: &Gateway, access_key: &str, bucket: Option<&str>, op: &str) -> S3Result<()> {
    let key = gw.key(access_key).ok_or_else(access_denied)?;
    match (needed(op), bucket) {
        (None, _) => Ok(()),
        (Some(need), Some(b)) if key.allows(b, need) => Ok(()),
        (Some(_), None) if key.admin => Ok(()),
        _ => Err(access_denied()),
    }
}

/// Bucket sub-resources S3 has that tinydfs does not implement yet: answered NotImplemented
/// rather than mistaken for a listing.
const UNSUPPORTED_BUCKET_SUBRESOURCES: &[&str] = &[
    "policy",
    "policyStatus",
    "tagging",
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

async fn route(gw: Arc<Gateway>, req: S3Request) -> S3Result<Response> {
    unsupported::refuse(&req)?;
    let m = req.method.clone();
    if req.bucket.is_none() {
        return match m {
            Method::GET => bucket::list_buckets(&gw, &req).await,
            _ => Err(S3Error::new(
                "MethodNotAllowed",
                405,
                "The specified method is not allowed against this resource.",
            )),
        };
    }
    if req.key.is_none() {
        if m == Method::GET {
            if req.has("location") {
                return bucket::location(&gw, &req).await;
            }
            if req.has("lifecycle") {
                return lifecycle::get(&gw, &req).await;
            }
            if req.has("versioning") {
                return bucket::versioning(&gw, &req).await;
            }
            if req.has("acl") {
                return bucket::get_acl(&gw, &req).await;
            }
            if req.has("uploads") {
                return multipart::list_uploads(&gw, &req).await;
            }
            if req.has("cors") {
                return cors::get(&gw, &req).await;
            }
            if let Some(sub) = UNSUPPORTED_BUCKET_SUBRESOURCES.iter().find(|s| req.has(s)) {
                return Err(S3Error::not_implemented(&format!(
                    "the bucket ?{sub} sub-resource"
                )));
            }
            return list::list_objects(&gw, &req).await;
        }
        return match m {
            Method::PUT if req.query.is_empty() => bucket::create(&gw, req).await,
            Method::PUT if req.has("lifecycle") => lifecycle::put(&gw, req).await,
            Method::PUT if req.has("acl") => bucket::put_acl(&gw, req).await,
            Method::DELETE if req.has("lifecycle") => lifecycle::delete(&gw, &req).await,
            Method::PUT if req.has("cors") => cors::put(&gw, req).await,
            Method::DELETE if req.has("cors") => cors::delete(&gw, &req).await,
            Method::HEAD => bucket::head(&gw, &req).await,
            Method::DELETE if req.query.is_empty() => bucket::delete(&gw, &req).await,
            Method::POST if req.has("delete") => object::delete_many(&gw, req).await,
            Method::POST if post::is_form_upload(&req.headers) => post::post_object(gw, req).await,
            Method::PUT | Method::DELETE | Method::POST => {
                Err(S3Error::not_implemented("this bucket operation"))
            }
            _ => Err(S3Error::new(
                "MethodNotAllowed",
                405,
                "The specified method is not allowed against this resource.",
            )),
        };
    }
    if let Some(v) = req.q("versionId") {
        // Older rclone asks for versionId=null after a multipart upload: the current version.
        if v != "null" {
            return Err(S3Error::new(
                "NoSuchVersion",
                404,
                "The specified version does not exist.",
            ));
        }
    }
    match m {
        Method::PUT if req.headers.contains_key("x-amz-copy-source") => {
            if req.has("uploadId") {
                copy::upload_part_copy(gw, req).await
            } else {
                copy::copy_object(gw, req).await
            }
        }
        Method::PUT if req.has("uploadId") => multipart::upload_part(gw, req).await,
        Method::PUT if req.has("tagging") => tagging::put(&gw, req).await,
        Method::GET if req.has("tagging") => tagging::get(&gw, &req).await,
        Method::DELETE if req.has("tagging") => tagging::delete(&gw, &req).await,
        Method::PUT if req.has("acl") || req.has("retention") || req.has("legal-hold") => {
            Err(S3Error::not_implemented("this object sub-resource"))
        }
        Method::PUT => object::put(gw, req).await,
        Method::GET if req.has("uploadId") => multipart::list_parts(&gw, &req).await,
        Method::GET if req.has("acl") || req.has("attributes") => {
            Err(S3Error::not_implemented("this object sub-resource"))
        }
        Method::GET | Method::HEAD => object::get(gw, req).await,
        Method::DELETE if req.has("uploadId") => multipart::abort(&gw, &req).await,
        Method::DELETE => object::delete(&gw, &req).await,
        Method::POST if req.has("uploads") => multipart::create(&gw, &req).await,
        Method::POST if req.has("uploadId") => multipart::complete(gw, req).await,
        _ => Err(S3Error::new(
            "MethodNotAllowed",
            405,
            "The specified method is not allowed against this resource.",
        )),
    }
}

/// An XML response with status 200.
pub fn xml_response(body: String) -> Response {
    Response::builder()
        .header("content-type", "application/xml")
        .body(Body::from(body))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_are_named_as_route_serves_them() {
        let q = |s: &str| parse_query(Some(s));
        let none = HeaderMap::new();
        let op = |m: Method, b: bool, k: bool, query: &str| operation(&m, b, k, &q(query), &none);
        assert_eq!(op(Method::GET, false, false, ""), "ListBuckets");
        assert_eq!(op(Method::GET, true, false, "list-type=2"), "ListObjectsV2");
        assert_eq!(op(Method::GET, true, false, "prefix=a"), "ListObjects");
        assert_eq!(op(Method::GET, true, false, "cors"), "GetBucketCors");
        assert_eq!(op(Method::GET, true, false, "tagging"), "Unsupported");
        assert_eq!(op(Method::PUT, true, true, "tagging"), "PutObjectTagging");
        assert_eq!(op(Method::GET, true, true, "tagging"), "GetObjectTagging");
        assert_eq!(
            op(Method::DELETE, true, true, "tagging"),
            "DeleteObjectTagging"
        );
        assert_eq!(op(Method::OPTIONS, true, true, ""), "PreflightRequest");
        assert_eq!(needed("PutObjectTagging"), Some(Permission::Write));
        assert_eq!(needed("DeleteObjectTagging"), Some(Permission::Write));
        assert_eq!(needed("GetObjectTagging"), Some(Permission::Read));
        assert_eq!(needed("PutBucketCors"), Some(Permission::Owner));
        assert_eq!(needed("DeleteBucketCors"), Some(Permission::Owner));
        assert_eq!(needed("GetBucketCors"), Some(Permission::Read));
        assert_eq!(op(Method::PUT, true, false, ""), "CreateBucket");
        assert_eq!(op(Method::POST, true, false, "delete"), "DeleteObjects");
        assert_eq!(op(Method::PUT, true, true, ""), "PutObject");
        assert_eq!(
            op(Method::PUT, true, true, "partNumber=1&uploadId=u"),
            "UploadPart"
        );
        assert_eq!(op(Method::GET, true, true, ""), "GetObject");
        assert_eq!(op(Method::HEAD, true, true, ""), "HeadObject");
        let post = |query: &str| op(Method::POST, true, true, query);
        assert_eq!(post("uploads"), "CreateMultipartUpload");
        assert_eq!(post("uploadId=u"), "CompleteMultipartUpload");
        assert_eq!(
            op(Method::DELETE, true, true, "uploadId=u"),
            "AbortMultipartUpload"
        );
        let mut copy = HeaderMap::new();
        copy.insert("x-amz-copy-source", "/b/k".parse().unwrap());
        assert_eq!(
            operation(&Method::PUT, true, true, &[], &copy),
            "CopyObject"
        );
        assert_eq!(
            operation(
                &Method::PUT,
                true,
                true,
                &q("partNumber=1&uploadId=u"),
                &copy
            ),
            "UploadPartCopy"
        );
        assert_eq!(
            op(Method::GET, true, false, "uploads"),
            "ListMultipartUploads"
        );
        assert_eq!(
            op(Method::GET, true, false, "uploads&prefix=a"),
            "ListMultipartUploads"
        );
        assert_eq!(needed("ListMultipartUploads"), Some(Permission::Read));
        assert_eq!(needed("CopyObject"), Some(Permission::Write));
        assert_eq!(needed("UploadPartCopy"), Some(Permission::Write));
    }
}
