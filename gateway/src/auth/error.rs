//! Errors raised while authenticating a request or decoding its body, with the
//! S3 error code and HTTP status each one maps to.

/// Why a request failed authentication or body verification.
///
/// The `Display` text is suitable as the `<Message>` of an S3 error response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Neither an `Authorization` header nor presigned query parameters.
    #[error("Access Denied")]
    Missing,
    /// The access key id is unknown.
    #[error("The AWS Access Key Id you provided does not exist in our records.")]
    UnknownAccessKey,
    /// A request, chunk or trailer signature did not verify.
    #[error("The request signature we calculated does not match the signature you provided. Check your key and signing method.")]
    SignatureMismatch,
    /// A presigned URL is past its expiry.
    #[error("Request has expired")]
    Expired,
    /// A presigned URL is dated in the future.
    #[error("Request is not valid yet")]
    NotYetValid,
    /// A presigned URL's `X-Amz-Expires` is negative or longer than a week: refused as AWS
    /// refuses it, `403 AccessDenied` (the request is not authorized), not a malformed query.
    #[error("{0}")]
    ExpiresOutOfRange(String),
    /// Malformed or out-of-range presigned query parameters.
    #[error("{0}")]
    QueryMalformed(String),
    /// Malformed `Authorization` header (or credential scope).
    #[error("{0}")]
    HeaderMalformed(String),
    /// Header-authenticated request more than 15 minutes off the server clock.
    #[error("The difference between the request time and the current time is too large.")]
    TimeSkewed,
    /// Header auth without `x-amz-content-sha256`.
    #[error("Missing required header for this request: x-amz-content-sha256")]
    MissingContentSha256,
    /// A request argument is invalid (bad `x-amz-content-sha256`, two auth mechanisms, ...).
    #[error("{0}")]
    InvalidArgument(String),
    /// The body does not hash to the `x-amz-content-sha256` the client signed.
    #[error("The provided 'x-amz-content-sha256' header does not match what was computed.")]
    ContentSha256Mismatch,
    /// Malformed `aws-chunked` framing or a decoded length mismatch.
    #[error("{0}")]
    IncompleteBody(String),
    /// Reading the underlying request body failed.
    #[error("error reading the request body: {0}")]
    BodyRead(String),
    /// A checksum sent by the client does not match the data.
    #[error("{0}")]
    BadDigest(String),
    /// A signing algorithm we do not implement (SigV2, SigV4A, ...).
    #[error("{0}")]
    Unsupported(String),
}

impl AuthError {
    /// The S3 error code (`<Code>` of the error response).
    pub fn code(&self) -> &'static str {
        match self {
            Self::Missing
            | Self::Expired
            | Self::NotYetValid
            | Self::ExpiresOutOfRange(_)
            | Self::Unsupported(_) => "AccessDenied",
            Self::UnknownAccessKey => "InvalidAccessKeyId",
            Self::SignatureMismatch => "SignatureDoesNotMatch",
            Self::QueryMalformed(_) => "AuthorizationQueryParametersError",
            Self::HeaderMalformed(_) => "AuthorizationHeaderMalformed",
            Self::TimeSkewed => "RequestTimeTooSkewed",
            Self::MissingContentSha256 => "InvalidRequest",
            Self::InvalidArgument(_) => "InvalidArgument",
            Self::ContentSha256Mismatch => "XAmzContentSHA256Mismatch",
            Self::IncompleteBody(_) | Self::BodyRead(_) => "IncompleteBody",
            Self::BadDigest(_) => "BadDigest",
        }
    }

    /// The HTTP status code of the error response.
    pub fn status(&self) -> u16 {
        match self {
            Self::Missing
            | Self::UnknownAccessKey
            | Self::SignatureMismatch
            | Self::Expired
            | Self::NotYetValid
            | Self::ExpiresOutOfRange(_)
            | Self::TimeSkewed
            | Self::Unsupported(_) => 403,
            Self::QueryMalformed(_)
            | Self::HeaderMalformed(_)
            | Self::MissingContentSha256
            | Self::InvalidArgument(_)
            | Self::ContentSha256Mismatch
            | Self::IncompleteBody(_)
            | Self::BodyRead(_)
            | Self::BadDigest(_) => 400,
        }
    }
}
