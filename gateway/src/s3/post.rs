//! PostObject: uploads from HTML forms (`POST /bucket`, `multipart/form-data`), authorized by a
//! policy the bucket's owner signed (see [`crate::auth::policy`]) rather than by a signature of
//! the request.
//!
//! The fields before the `file` part are small and read whole (at most [`MAX_PRE_FILE`] bytes of
//! form, as on S3); the file streams into [`data::store`] as it arrives, never held whole; fields
//! after it are ignored, as on S3. The object is committed only when the file ended inside the
//! policy's `content-length-range`.

use super::request::{content_md5, xml_response, S3Request};
use super::router::{Endpoint, MAX_KEY_LEN};
use super::{access, object};
use crate::auth::policy::{self, PolicyError};
use crate::auth::AuthError;
use crate::data;
use crate::error::{S3Error, S3Result};
use crate::form::{self, Event, FormParser, PartHead};
use crate::xml::{self, elem};
use crate::Gateway;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::Response;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use std::collections::BTreeMap;
use std::sync::Arc;
use tinydfs_proto::meta::MetaWrite;
use tinydfs_proto::ObjectRecord;

/// Most bytes of form before the file part: S3's `MaxPostPreDataLengthBytes`.
pub const MAX_PRE_FILE: u64 = 20 * 1024;
/// Largest file a form may upload, as on S3 (larger objects need a multipart upload).
pub const MAX_POST_OBJECT: u64 = 5 * 1024 * 1024 * 1024;

/// Fields stored as the object's system headers.
const HEADER_FIELDS: &[&str] = &[
    "content-type",
    "cache-control",
    "content-disposition",
    "content-encoding",
    "expires",
];

fn malformed() -> S3Error {
    S3Error::new(
        "MalformedPOSTRequest",
        400,
        "The body of your POST request is not well-formed multipart/form-data.",
    )
}

fn pre_file_too_large() -> S3Error {
    S3Error::new(
        "MaxPostPreDataLengthExceeded",
        400,
        "Your POST request fields preceding the upload file were too large.",
    )
    .with("MaxPostPreDataLengthBytes", MAX_PRE_FILE.to_string())
}

/// The form as it is read: the decoder over the request body.
struct FormReader {
    parser: FormParser,
    body: BoxStream<'static, Result<Bytes, S3Error>>,
    /// Reading the fields before the file: bytes that produce no event (a preamble before the
    /// first boundary, one endless field) count against [`MAX_PRE_FILE`] as they arrive.
    pre_file: bool,
}

/// Input one call may take without an event while the fields are read: the limit plus a frame.
const MAX_SILENT_INPUT: u64 = MAX_PRE_FILE + 64 * 1024;

impl FormReader {
    async fn next(&mut self) -> S3Result<Event> {
        let mut taken = 0u64;
        loop {
            match self.parser.next_event() {
                Ok(Some(e)) => return Ok(e),
                Ok(None) => match self.body.next().await {
                    Some(Ok(b)) => {
                        taken += b.len() as u64;
                        if self.pre_file && taken > MAX_SILENT_INPUT {
                            return Err(pre_file_too_large());
                        }
                        self.parser.push(&b)
                    }
                    Some(Err(e)) => return Err(e),
                    None => self.parser.finish(),
                },
                Err(e) => {
                    tracing::debug!(error = %e, "malformed form upload");
                    return Err(malformed());
                }
            }
        }
    }

    /// Reads the fields before the file part (lowercase names); answers them and the file's head.
    async fn fields(&mut self) -> S3Result<(BTreeMap<String, String>, PartHead)> {
        let mut fields = BTreeMap::new();
        let mut current: Option<(String, Vec<u8>)> = None;
        loop {
            let event = self.next().await?;
            if self.parser.consumed() > MAX_PRE_FILE {
                return Err(pre_file_too_large());
            }
            match event {
                Event::Part(head) if head.name.eq_ignore_ascii_case("file") => {
                    return Ok((fields, head))
                }
                Event::Part(head) => current = Some((head.name.to_ascii_lowercase(), Vec::new())),
                Event::Data(d) => {
                    if let Some((_, value)) = current.as_mut() {
                        value.extend_from_slice(&d);
                    }
                }
                Event::PartEnd => {
                    let Some((name, value)) = current.take() else {
                        continue;
                    };
                    let value = String::from_utf8(value).map_err(|_| malformed())?;
                    if fields.insert(name.clone(), value).is_some() {
                        return Err(S3Error::invalid_argument(format!(
                            "Bucket POST has the field '{name}' more than once"
                        )));
                    }
                }
                Event::End => {
                    return Err(S3Error::new(
                        "IncorrectNumberOfFilesInPostRequest",
                        400,
                        "POST requires exactly one file upload per request.",
                    ))
                }
            }
        }
    }

    /// The file's content, ending where its part ends; fails past `max` bytes.
    fn file(self, max: u64) -> BoxStream<'static, Result<Bytes, S3Error>> {
        futures_util::stream::unfold(Some((self, 0u64)), move |state| async move {
            let (mut reader, seen) = state?;
            match reader.next().await {
                Ok(Event::Data(d)) => {
                    let seen = seen + d.len() as u64;
                    if seen > max {
                        return Some((Err(too_large(max)), None));
                    }
                    Some((Ok(d), Some((reader, seen))))
                }
                // The rest of the form (fields after the file) is ignored, as on S3.
                Ok(_) => None,
                Err(e) => Some((Err(e), None)),
            }
        })
        .boxed()
    }
}

fn too_large(max: u64) -> S3Error {
    S3Error::new(
        "EntityTooLarge",
        400,
        "Your proposed upload exceeds the maximum allowed size",
    )
    .with("MaxSizeAllowed", max.to_string())
}

fn from_policy(e: PolicyError) -> S3Error {
    S3Error::new(e.code(), e.status(), e.to_string())
}

/// Form fields asking for features tinydfs does not have: refused rather than ignored.
fn refuse_unsupported(fields: &BTreeMap<String, String>) -> S3Result<()> {
    if let Some(acl) = fields.get("acl") {
        if !["private", "bucket-owner-full-control", "bucket-owner-read"].contains(&acl.as_str()) {
            return Err(S3Error::not_implemented(&format!(
                "the object ACL {acl} (objects have no ACLs; a bucket may be public-read)"
            )));
        }
    }
    for name in fields.keys() {
        let refused = match name.as_str() {
            "tagging" => Some("object tags in a POST form"),
            "x-amz-server-side-encryption" if fields[name] != "AES256" => {
                Some("server-side encryption with KMS keys")
            }
            n if n.starts_with("x-amz-server-side-encryption-customer-") => {
                Some("server-side encryption with customer-provided keys (SSE-C)")
            }
            n if n.starts_with("x-amz-checksum-") => Some("checksums in a POST form"),
            "x-amz-security-token" => Some("temporary credentials"),
            _ => None,
        };
        if let Some(what) = refused {
            return Err(S3Error::not_implemented(what));
        }
        if name.starts_with("x-amz-object-lock-") {
            return Err(S3Error::invalid_request(
                "Bucket is missing Object Lock Configuration",
            ));
        }
    }
    Ok(())
}

/// The object's headers (content type, stored system headers, user metadata) from the fields.
fn object_headers(fields: &BTreeMap<String, String>) -> S3Result<HeaderMap> {
    let mut h = HeaderMap::new();
    for (name, value) in fields {
        if HEADER_FIELDS.contains(&name.as_str()) || name.starts_with("x-amz-meta-") {
            let n = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| S3Error::invalid_argument(format!("invalid field name {name}")))?;
            let v = HeaderValue::from_str(value)
                .map_err(|_| S3Error::invalid_argument(format!("invalid value of {name}")))?;
            h.insert(n, v);
        }
    }
    Ok(h)
}

pub async fn post_object(gw: Arc<Gateway>, mut req: S3Request) -> S3Result<Response> {
    let bucket = req.bucket()?.to_string();
    let boundary = req
        .header("content-type")
        .and_then(form::boundary)
        .ok_or_else(malformed)?;
    let (body, _) = req.take_body();
    let mut reader = FormReader {
        parser: FormParser::new(&boundary),
        body,
        pre_file: true,
    };
    // The fields come before any signature is checked: they get the time a request head gets,
    // however slowly they trickle in.
    let limit = std::time::Duration::from_millis(gw.config.header_timeout_ms);
    let (mut fields, file) = tokio::time::timeout(limit, reader.fields())
        .await
        .map_err(|_| {
            S3Error::new(
                "RequestTimeout",
                400,
                "Your socket connection to the server was not read from or written to within the timeout period.",
            )
        })??;
    reader.pre_file = false;

    // Authentication: the policy's signature, then the signing key's right to write.
    if !fields.contains_key("policy") && !fields.contains_key("x-amz-signature") {
        return Err(S3Error::access_denied());
    }
    if fields.contains_key("awsaccesskeyid") || fields.contains_key("signature") {
        return Err(AuthError::Unsupported(
            "SigV2 form uploads are not supported; sign the policy with SigV4".into(),
        )
        .into());
    }
    let verify = || policy::verify_signature(&fields, &|ak| gw.secret_for(ak), &gw.config.region);
    let mut signed = verify();
    if matches!(signed, Err(AuthError::UnknownAccessKey)) && crate::reload_keys(&gw).await {
        signed = verify();
    }
    let access_key = signed?;
    let endpoint = Endpoint::PostObject {
        bucket: bucket.clone(),
    };
    if access::authorize(&gw, &access_key, &endpoint).is_err() {
        crate::reload_keys(&gw).await;
        access::authorize(&gw, &access_key, &endpoint)?;
    }

    // The key, with the file's name for `${filename}`.
    let key = fields
        .get("key")
        .ok_or_else(|| {
            S3Error::invalid_argument(
                "Bucket POST must contain a field named 'key'.  If it is specified, please check the order of the fields.",
            )
            .with("ArgumentName", "key")
        })?
        .replace("${filename}", file.filename.as_deref().unwrap_or(""));
    if key.is_empty() {
        return Err(
            S3Error::invalid_argument("User key must have a length greater than 0.")
                .with("ArgumentName", "key"),
        );
    }
    if key.len() > MAX_KEY_LEN {
        return Err(S3Error::new("KeyTooLongError", 400, "Your key is too long"));
    }
    fields.insert("key".into(), key.clone());
    fields.insert("bucket".into(), bucket.clone());

    let policy = policy::parse(&fields["policy"]).map_err(from_policy)?;
    let range = policy
        .check(&fields, std::time::SystemTime::now())
        .map_err(from_policy)?;
    refuse_unsupported(&fields)?;
    let content_md5 = content_md5(fields.get("content-md5").map(|v| v.as_bytes()))?;
    let attrs = object::attrs_from(&object_headers(&fields)?);
    gw.master
        .read(tinydfs_proto::meta::MetaRead::HeadBucket {
            bucket: bucket.clone(),
        })
        .await
        .map_err(|e| S3Error::from(e).with("BucketName", &bucket))?;

    let (min, max) = range.unwrap_or((0, MAX_POST_OBJECT));
    let stored = data::store(
        &gw,
        reader.file(max.min(MAX_POST_OBJECT)),
        &req.request_id,
        |_| {},
    )
    .await?;
    if stored.size < min {
        return Err(S3Error::new(
            "EntityTooSmall",
            400,
            "Your proposed upload is smaller than the minimum allowed size",
        )
        .with("MinSizeAllowed", min.to_string()));
    }
    if content_md5.is_some_and(|want| want != stored.md5) {
        return Err(S3Error::new(
            "BadDigest",
            400,
            "The Content-MD5 you specified did not match what we received.",
        ));
    }
    let etag = hex::encode(stored.md5);
    let record = ObjectRecord {
        size: stored.size,
        etag: etag.clone(),
        content_type: attrs.content_type,
        user_meta: attrs.user_meta,
        headers: attrs.headers,
        chunks: stored.chunks,
        ..Default::default()
    };
    gw.master
        .commit(
            MetaWrite::PutObject {
                bucket: bucket.clone(),
                key: key.clone(),
                record,
                condition: None,
            },
            stored.locations,
        )
        .await?;
    Ok(answer(&req, &fields, &bucket, &key, &etag))
}

/// The answer S3 gives a successful form upload: a redirect to `success_action_redirect` (or
/// the legacy `redirect`), else the status `success_action_status` asks for (204 by default;
/// 201 has a `PostResponse` document).
fn answer(
    req: &S3Request,
    fields: &BTreeMap<String, String>,
    bucket: &str,
    key: &str,
    etag: &str,
) -> Response {
    let quoted = format!("\"{etag}\"");
    let location = format!(
        "/{bucket}/{}",
        percent_encoding::utf8_percent_encode(key, KEY_SET)
    );
    let redirect = fields
        .get("success_action_redirect")
        .or_else(|| fields.get("redirect"))
        .filter(|u| u.starts_with("http://") || u.starts_with("https://"));
    if let Some(url) = redirect {
        let enc = |s: &str| percent_encoding::utf8_percent_encode(s, QUERY_SET).to_string();
        let sep = if url.contains('?') { '&' } else { '?' };
        let target = format!(
            "{url}{sep}bucket={}&key={}&etag={}",
            enc(bucket),
            enc(key),
            enc(&quoted)
        );
        if let Ok(v) = HeaderValue::from_str(&target) {
            let mut r = Response::builder()
                .status(303)
                .header("etag", &quoted)
                .body(Body::empty())
                .unwrap_or_default();
            r.headers_mut().insert("location", v);
            return r;
        }
    }
    let host = req.header("host").unwrap_or("");
    let url_location = if host.is_empty() {
        location.clone()
    } else {
        format!("http://{host}{location}")
    };
    match fields.get("success_action_status").map(String::as_str) {
        Some("200") => Response::builder()
            .status(200)
            .header("etag", &quoted)
            .header("location", &url_location)
            .body(Body::empty())
            .unwrap_or_default(),
        Some("201") => {
            let mut out = xml::doc("PostResponse");
            elem(&mut out, "Location", &url_location);
            elem(&mut out, "Bucket", bucket);
            elem(&mut out, "Key", key);
            elem(&mut out, "ETag", &quoted);
            out.push_str("</PostResponse>");
            let mut r = xml_response(out);
            *r.status_mut() = axum::http::StatusCode::CREATED;
            if let Ok(v) = HeaderValue::from_str(&quoted) {
                r.headers_mut().insert("etag", v);
            }
            if let Ok(v) = HeaderValue::from_str(&url_location) {
                r.headers_mut().insert("location", v);
            }
            r
        }
        _ => Response::builder()
            .status(204)
            .header("etag", &quoted)
            .header("location", &url_location)
            .body(Body::empty())
            .unwrap_or_default(),
    }
}

/// Characters escaped in the key of a `Location` (path segments keep `/`).
const KEY_SET: &percent_encoding::AsciiSet = &QUERY_SET.remove(b'/');
/// Characters escaped in a redirect's query values: all but the unreserved ones.
const QUERY_SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsupported_fields_are_refused() {
        let f = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(refuse_unsupported(&f(&[("acl", "private"), ("key", "k")])).is_ok());
        for bad in [
            f(&[("acl", "public-read")]),
            f(&[("tagging", "<Tagging/>")]),
            f(&[("x-amz-server-side-encryption", "aws:kms")]),
            f(&[("x-amz-checksum-crc32", "AAAAAA==")]),
        ] {
            assert_eq!(refuse_unsupported(&bad).unwrap_err().code, "NotImplemented");
        }
        let lock = f(&[("x-amz-object-lock-mode", "GOVERNANCE")]);
        assert_eq!(
            refuse_unsupported(&lock).unwrap_err().code,
            "InvalidRequest"
        );
        let h = object_headers(&f(&[
            ("content-type", "image/png"),
            ("x-amz-meta-a", "1"),
            ("key", "k"),
        ]))
        .unwrap();
        assert_eq!(h.len(), 2);
    }
}
