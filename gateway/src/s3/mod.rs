//! The S3 API: one handler (`handle`, here) that parses the request once into an
//! [`Endpoint`], authenticates and authorizes it, and calls the operation; one file per operation
//! family.
//!
//! - [`router`](mod@router): the [`Endpoint`] enum, parsed from method, host, path, query and
//!   headers, with each operation's name and the permission it needs.
//! - [`request`]: [`S3Request`], what an operation gets, and the ways of reading its body.
//! - [`access`]: authorization of a key for an endpoint.
//! - [`bucket`]: ListBuckets, CreateBucket, HeadBucket, DeleteBucket, GetBucketLocation.
//! - [`list`]: ListObjects (v1 and v2).
//! - [`object`]: PutObject, GetObject, HeadObject, DeleteObject, DeleteObjects;
//!   [`metadata`]: how user metadata and stored headers are kept, byte for byte.
//! - [`attributes`]: GetObjectAttributes (`?attributes`), from what HEAD reads.
//! - [`multipart`]: Create, UploadPart, Complete, Abort, ListParts, ListMultipartUploads.
//! - [`copy`]: CopyObject and UploadPartCopy (chunks shared, not copied).
//! - [`lifecycle`]: Put/GetBucketLifecycleConfiguration, DeleteBucketLifecycle.
//! - [`tagging`]: Put/Get/DeleteObjectTagging, `x-amz-tagging` on uploads, and
//!   Put/Get/DeleteBucketTagging.
//! - [`cors`]: Put/Get/DeleteBucketCors, preflights (`OPTIONS`) and CORS headers on answers.
//! - [`post`]: PostObject (browser uploads from HTML forms, authorized by a signed policy).
//! - `unsupported`: requests refused with NotImplemented (or S3's own refusal) rather than
//!   answered with a wrong success.

pub mod access;
pub mod attributes;
pub mod bucket;
pub mod copy;
pub mod cors;
pub mod lifecycle;
pub mod list;
pub mod metadata;
pub mod multipart;
pub mod object;
pub mod post;
pub mod request;
pub mod router;
pub mod tagging;
mod unsupported;

pub use request::{xml_response, S3Request, MAX_XML_BODY};
pub use router::{parse_query, Endpoint, MAX_KEY_LEN};

use crate::auth::{self, AuthError, Verified};
use crate::error::{S3Error, S3Result};
use crate::Gateway;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use axum::Router;
use std::sync::Arc;
use tracing::Instrument;

/// The S3 router: every path goes to [`handle`].
pub fn router(gw: Arc<Gateway>) -> Router {
    Router::new().fallback(handle).with_state(gw)
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
    // The request is parsed once: its endpoint names it in logs and metrics (refused requests
    // included), is authorized and is dispatched on. A path that does not parse is "Invalid".
    let parsed = router::parse(
        gw.config.domain.as_deref(),
        req.method(),
        req.uri(),
        req.headers(),
    );
    let op = parsed.as_ref().map_or("Invalid", |(e, _)| e.name());
    // Every log line of the request (chunkservers' included: they get the id) carries its id.
    let span = tracing::info_span!("s3", request_id = %request_id, op);
    // Requests from browsers (with an `Origin`) get their bucket's CORS headers, errors included.
    let cors = parsed
        .as_ref()
        .ok()
        .and_then(|(e, _)| cors::actual_request(req.headers(), req.method(), e.bucket()));
    // Beyond `max_requests` in flight a request is refused at once rather than queued; the
    // permit is held until the response body has been sent.
    let permit = gw.in_flight.clone().try_acquire_owned().ok();
    let req = req.map(|b| gw.metrics.count_received(b));
    let result = match permit {
        Some(_) => {
            dispatch(gw.clone(), req, parsed, request_id.clone())
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

/// A request's [`Endpoint`] and decoded query, or why its path is refused.
type Parsed = S3Result<(Endpoint, Vec<(String, String)>)>;

async fn dispatch(
    gw: Arc<Gateway>,
    req: Request,
    parsed: Parsed,
    request_id: String,
) -> S3Result<Response> {
    let (parts, body) = req.into_parts();
    crate::limits::check_head(&parts)?;
    let parsed = match parsed {
        // Browsers never sign preflights: they are answered from the bucket's CORS rules alone,
        // before (and without) authentication, as on AWS.
        Ok((Endpoint::Preflight { bucket, key }, _)) => {
            return cors::preflight(&gw, &parts.headers, bucket.as_deref(), key.as_deref()).await;
        }
        Err(e) if parts.method == Method::OPTIONS => return Err(e),
        parsed => parsed,
    };
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
    let (endpoint, query) = parsed?;
    let auth = match verified {
        Ok(a) => {
            // Likewise a grant made moments ago (a bucket this key just created, for one).
            if access::authorize(&gw, &a.access_key, &endpoint).is_err() {
                crate::reload_keys(&gw).await;
                access::authorize(&gw, &a.access_key, &endpoint)?;
            }
            a
        }
        // A form upload carries its signature in the form: `post` verifies it and the key's
        // permission once it has read the fields.
        Err(AuthError::Missing) if matches!(endpoint, Endpoint::PostObject { .. }) => {
            Verified::anonymous()
        }
        Err(AuthError::Missing) if endpoint.allows_anonymous() => {
            let public = match endpoint.bucket() {
                Some(b) => bucket::is_public(&gw, b).await?,
                None => false,
            };
            if !public {
                return Err(S3Error::access_denied());
            }
            Verified::anonymous()
        }
        Err(e) => return Err(e.into()),
    };
    let req = S3Request {
        method: parts.method,
        bucket: endpoint.bucket().map(str::to_string),
        key: endpoint.key().map(str::to_string),
        query,
        headers: parts.headers,
        auth,
        body: std::sync::Mutex::new(Some(body)),
        request_id,
        body_timeout: std::time::Duration::from_millis(gw.config.body_timeout_ms),
    };
    route(gw, endpoint, req).await
}

/// Calls the operation's handler.
async fn route(gw: Arc<Gateway>, endpoint: Endpoint, req: S3Request) -> S3Result<Response> {
    unsupported::refuse(&req)?;
    if endpoint.bucket().is_some() && endpoint.key().is_some() {
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
    }
    use Endpoint as E;
    match endpoint {
        E::ListBuckets => bucket::list_buckets(&gw, &req).await,
        E::CreateBucket { .. } => bucket::create(&gw, req).await,
        E::HeadBucket { .. } => bucket::head(&gw, &req).await,
        E::DeleteBucket { .. } => bucket::delete(&gw, &req).await,
        E::GetBucketLocation { .. } => bucket::location(&gw, &req).await,
        E::GetBucketVersioning { .. } => bucket::versioning(&gw, &req).await,
        E::GetBucketAcl { .. } => bucket::get_acl(&gw, &req).await,
        E::PutBucketAcl { .. } => bucket::put_acl(&gw, req).await,
        E::GetBucketLifecycleConfiguration { .. } => lifecycle::get(&gw, &req).await,
        E::PutBucketLifecycleConfiguration { .. } => lifecycle::put(&gw, req).await,
        E::DeleteBucketLifecycle { .. } => lifecycle::delete(&gw, &req).await,
        E::GetBucketCors { .. } => cors::get(&gw, &req).await,
        E::PutBucketCors { .. } => cors::put(&gw, req).await,
        E::DeleteBucketCors { .. } => cors::delete(&gw, &req).await,
        E::GetBucketTagging { .. } => tagging::get_bucket(&gw, &req).await,
        E::PutBucketTagging { .. } => tagging::put_bucket(&gw, req).await,
        E::DeleteBucketTagging { .. } => tagging::delete_bucket(&gw, &req).await,
        E::ListObjects { .. } | E::ListObjectsV2 { .. } => list::list_objects(&gw, &req).await,
        E::ListMultipartUploads { .. } => multipart::list_uploads(&gw, &req).await,
        E::DeleteObjects { .. } => object::delete_many(&gw, req).await,
        E::PostObject { .. } => post::post_object(gw, req).await,
        E::PutObject { .. } => object::put(gw, req).await,
        E::GetObject { .. } | E::HeadObject { .. } => object::get(gw, req).await,
        E::DeleteObject { .. } => object::delete(&gw, &req).await,
        E::CopyObject { .. } => copy::copy_object(gw, req).await,
        E::GetObjectTagging { .. } => tagging::get(&gw, &req).await,
        E::GetObjectAttributes { .. } => attributes::get(&gw, &req).await,
        E::PutObjectTagging { .. } => tagging::put(&gw, req).await,
        E::DeleteObjectTagging { .. } => tagging::delete(&gw, &req).await,
        E::CreateMultipartUpload { .. } => multipart::create(&gw, &req).await,
        E::UploadPart { .. } => multipart::upload_part(gw, req).await,
        E::UploadPartCopy { .. } => copy::upload_part_copy(gw, req).await,
        E::CompleteMultipartUpload { .. } => multipart::complete(gw, req).await,
        E::AbortMultipartUpload { .. } => multipart::abort(&gw, &req).await,
        E::ListParts { .. } => multipart::list_parts(&gw, &req).await,
        // Answered before authentication (see `dispatch`).
        E::Preflight { bucket, key } => {
            cors::preflight(&gw, &req.headers, bucket.as_deref(), key.as_deref()).await
        }
        E::Unsupported { refusal, .. } => Err(refusal.error()),
    }
}
