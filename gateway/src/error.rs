//! The one S3 error type: every failure becomes an S3 error code, an HTTP status and an XML body.
//! Internal details go to the log, not to the client.

use crate::auth::AuthError;
use crate::xml::XmlError;
use axum::body::Body;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tinydfs_proto::meta::MetaError;

/// An S3 error answer.
#[derive(Debug, Clone)]
pub struct S3Error {
    pub code: &'static str,
    pub status: StatusCode,
    pub message: String,
    /// Extra elements of the error document (e.g. `BucketName`).
    pub extra: Vec<(&'static str, String)>,
    /// Extra response headers (e.g. `Content-Range` on 416).
    pub headers: Vec<(&'static str, String)>,
}

impl S3Error {
    pub fn new(code: &'static str, status: u16, message: impl Into<String>) -> Self {
        S3Error {
            code,
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            message: message.into(),
            extra: Vec::new(),
            headers: Vec::new(),
        }
    }

    pub fn with(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.extra.push((name, value.into()));
        self
    }

    pub fn no_such_bucket(bucket: &str) -> Self {
        Self::new("NoSuchBucket", 404, "The specified bucket does not exist")
            .with("BucketName", bucket)
    }
    pub fn no_such_key(key: &str) -> Self {
        Self::new("NoSuchKey", 404, "The specified key does not exist.").with("Key", key)
    }
    pub fn invalid_argument(msg: impl Into<String>) -> Self {
        Self::new("InvalidArgument", 400, msg)
    }
    pub fn invalid_request(msg: impl Into<String>) -> Self {
        Self::new("InvalidRequest", 400, msg)
    }
    pub fn malformed_xml() -> Self {
        Self::new(
            "MalformedXML",
            400,
            "The XML you provided was not well-formed or did not validate against our published schema",
        )
    }
    /// 403 AccessDenied, saying no more (which key or permission is not the client's business).
    pub fn access_denied() -> Self {
        Self::new("AccessDenied", 403, "Access Denied")
    }
    pub fn not_implemented(what: &str) -> Self {
        Self::new(
            "NotImplemented",
            501,
            format!("{what} is not implemented by tinydfs yet"),
        )
    }
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self::new(
            "InternalError",
            500,
            "We encountered an internal error. Please try again.",
        )
    }
    /// 507: no chunkserver has room for the data (placement found none, or a chunkserver ran
    /// out of space during the write).
    pub fn insufficient_capacity(detail: impl std::fmt::Display) -> Self {
        tracing::warn!(error = %detail, "no space for a new chunk");
        Self::new(
            "InsufficientCapacity",
            507,
            "The cluster has not enough live chunkservers with free space to store this object.",
        )
    }

    pub fn unavailable(detail: impl std::fmt::Display) -> Self {
        tracing::warn!(error = %detail, "service unavailable");
        Self::new(
            "ServiceUnavailable",
            503,
            "Please reduce your request rate or try again.",
        )
    }

    /// The error as a response; `head` requests get no body.
    pub fn into_response_for(self, head: bool, request_id: &str) -> Response {
        let mut b = Response::builder()
            .status(self.status)
            .header("x-amz-request-id", request_id);
        for (k, v) in &self.headers {
            b = b.header(*k, v);
        }
        if head {
            return b.body(Body::empty()).unwrap_or_default();
        }
        let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error>");
        crate::xml::elem(&mut xml, "Code", self.code);
        crate::xml::elem(&mut xml, "Message", &self.message);
        for (k, v) in &self.extra {
            crate::xml::elem(&mut xml, k, v);
        }
        crate::xml::elem(&mut xml, "RequestId", request_id);
        xml.push_str("</Error>");
        b.header("content-type", "application/xml")
            .body(Body::from(xml))
            .unwrap_or_default()
    }
}

impl IntoResponse for S3Error {
    fn into_response(self) -> Response {
        self.into_response_for(false, "")
    }
}

impl From<AuthError> for S3Error {
    fn from(e: AuthError) -> Self {
        S3Error::new(e.code(), e.status(), e.to_string())
    }
}

impl From<XmlError> for S3Error {
    fn from(e: XmlError) -> Self {
        match e {
            XmlError::Malformed => S3Error::malformed_xml(),
            XmlError::NotImplemented(what) => S3Error::not_implemented(what),
        }
    }
}

impl From<MetaError> for S3Error {
    fn from(e: MetaError) -> Self {
        match e {
            MetaError::NoSuchBucket => Self::new("NoSuchBucket", 404, "The specified bucket does not exist"),
            MetaError::NoSuchKey => Self::new("NoSuchKey", 404, "The specified key does not exist."),
            MetaError::NoSuchUpload => Self::new(
                "NoSuchUpload",
                404,
                "The specified multipart upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.",
            ),
            MetaError::BucketNotEmpty => {
                Self::new("BucketNotEmpty", 409, "The bucket you tried to delete is not empty")
            }
            MetaError::BucketAlreadyExists => Self::new(
                "BucketAlreadyExists",
                409,
                "The requested bucket name is not available. Please select a different name and try again.",
            ),
            MetaError::BucketAlreadyOwnedByYou => Self::new(
                "BucketAlreadyOwnedByYou",
                409,
                "Your previous request to create the named bucket succeeded and you already own it.",
            ),
            MetaError::InvalidPart(m) => Self::new("InvalidPart", 400, m),
            // The master group is mid-upgrade: not implemented until every master is.
            MetaError::NotYetEnabled(m) => Self::new("NotImplemented", 501, m),
            MetaError::InvalidPartOrder => Self::new(
                "InvalidPartOrder",
                400,
                "The list of parts was not in ascending order. Parts must be ordered by part number.",
            ),
            MetaError::EntityTooSmall => Self::new(
                "EntityTooSmall",
                400,
                "Your proposed upload is smaller than the minimum allowed object size.",
            ),
            MetaError::NoSuchLease => Self::unavailable("the upload outlived its lease"),
            MetaError::PreconditionFailed => Self::new(
                "PreconditionFailed",
                412,
                "At least one of the pre-conditions you specified did not hold",
            ),
            MetaError::NoSpace(m) => Self::insufficient_capacity(m),
            MetaError::BadRequest(m) => Self::internal(m),
            MetaError::NotLeader(_) | MetaError::Unavailable(_) => Self::unavailable(e),
        }
    }
}

/// Result of an S3 handler.
pub type S3Result<T> = Result<T, S3Error>;
