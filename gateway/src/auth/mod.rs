//! Request authentication: AWS Signature Version 4 (header and presigned URL),
//! the `aws-chunked` body encoding with its chunk/trailer signatures, and the
//! `x-amz-checksum-*` flexible checksums.
//!
//! - `sigv4`: what a request claims (`sigv4/parse.rs`), the canonical request
//!   (`sigv4/canonical.rs`), and the verification of both against the keys and the clock.
//! - `chunked`: the `aws-chunked` decoder; `checksum`: flexible checksums, whole and composite.
//! - [`policy`]: the signed policies of browser form uploads; `error`: [`AuthError`].
//!
//! Typical use: [`verify`] the request head, then depending on
//! [`Verified::payload`] either check the body with a [`Sha256Check`] or
//! decode it with [`decode_aws_chunked`] (and check any trailing checksum
//! from the [`TrailerSlot`] with a [`ChecksumHasher`]). Browser form uploads carry a signed
//! [`policy`] instead.

mod checksum;
mod chunked;
mod error;
pub mod policy;
#[cfg(test)]
mod proptests;
mod sigv4;

pub use checksum::{combine_parts, crc_combine, ChecksumAlgo, ChecksumHasher};
pub use chunked::{decode_aws_chunked, TrailerSlot};
pub use error::AuthError;
/// For signing test and benchmark requests; the gateway itself only verifies.
#[doc(hidden)]
pub use sigv4::{hmac, signing_key};
pub use sigv4::{is_aws_chunked, verify, Payload, Sha256Check, SigningContext, Verified};
