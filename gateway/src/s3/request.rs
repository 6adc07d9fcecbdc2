//! A request as the operations see it ([`S3Request`]: authenticated, with bucket, key and query
//! decoded) and the ways its body is read: streamed and checked ([`S3Request::take_body`]), or
//! small and whole for XML documents, with or without the integrity checks S3 wants for
//! configurations ([`read_verified_body`]).

use crate::auth::{self, AuthError, ChecksumAlgo, ChecksumHasher, Payload, TrailerSlot, Verified};
use crate::error::{S3Error, S3Result};
use axum::body::Body;
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use base64::Engine;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use md5::{Digest, Md5};

/// Largest XML request body read into memory (DeleteObjects of 1,000 long keys fits).
pub const MAX_XML_BODY: usize = 2 * 1024 * 1024;

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
        // The payload mode alone says whether the body is framed, as on AWS: `Content-Encoding:
        // aws-chunked` with a plain payload hash is a plain body (the token is only dropped from
        // the stored encoding, see `s3::metadata`).
        if auth::is_aws_chunked(&payload) {
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

/// A `Content-MD5` value (header or form field) decoded: 16 bytes of base64, else
/// `400 InvalidDigest` (an empty one too); `None` when there is none.
pub fn content_md5(value: Option<&[u8]>) -> S3Result<Option<Vec<u8>>> {
    let Some(v) = value else {
        return Ok(None);
    };
    base64::engine::general_purpose::STANDARD
        .decode(v.trim_ascii())
        .ok()
        .filter(|d| d.len() == 16)
        .map(Some)
        .ok_or_else(|| {
            S3Error::new(
                "InvalidDigest",
                400,
                "The Content-MD5 you specified was invalid.",
            )
        })
}

/// Reads the (small) body and checks its integrity as S3 does for this operation: it needs
/// `Content-MD5`, an `x-amz-checksum-*` (header or trailer) or a signed payload, and every one
/// given must match.
pub async fn read_verified_body(req: &mut S3Request) -> S3Result<Vec<u8>> {
    let content_md5 = content_md5(req.headers.get("content-md5").map(|v| v.as_bytes()))?;
    let mut checks: Vec<(ChecksumHasher, String)> = Vec::new();
    for (name, value) in &req.headers {
        if let Some(algo) = ChecksumAlgo::from_header_name(name.as_str()) {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            checks.push((ChecksumHasher::new(algo), value));
        }
    }
    let trailer_algo = req
        .header("x-amz-trailer")
        .and_then(|t| ChecksumAlgo::from_header_name(t.trim()));
    let signed = matches!(
        req.auth.payload,
        Payload::Sha256(_) | Payload::StreamingSigned { .. }
    );
    if content_md5.is_none() && checks.is_empty() && trailer_algo.is_none() && !signed {
        return Err(S3Error::invalid_request(
            "Missing required header for this request: Content-MD5",
        ));
    }
    let (mut stream, trailers) = req.take_body();
    let mut body = Vec::new();
    while let Some(b) = stream.next().await {
        body.extend_from_slice(&b?);
        if body.len() > MAX_XML_BODY {
            return Err(S3Error::new(
                "MaxMessageLengthExceeded",
                400,
                "Your request was too big.",
            ));
        }
    }
    if let Some(want) = content_md5 {
        if Md5::digest(&body).as_slice() != want.as_slice() {
            return Err(S3Error::new(
                "BadDigest",
                400,
                "The Content-MD5 you specified did not match what we received.",
            ));
        }
    }
    for (mut h, expected) in checks {
        h.update(&body);
        h.verify(&expected)?;
    }
    if let Some(algo) = trailer_algo {
        let value = trailers.get(algo.header_name()).ok_or_else(|| {
            S3Error::invalid_request(format!(
                "the trailer {} was announced but not sent",
                algo.header_name()
            ))
        })?;
        let mut h = ChecksumHasher::new(algo);
        h.update(&body);
        h.verify(&value)?;
    }
    Ok(body)
}

/// An XML response with status 200.
pub fn xml_response(body: String) -> Response {
    Response::builder()
        .header("content-type", "application/xml")
        .body(Body::from(body))
        .unwrap_or_default()
}
