//! User metadata (`x-amz-meta-*`) and the system headers an object keeps (`Content-Type`,
//! `Content-Encoding`, `Content-Disposition`...): how a header's value is kept in an object
//! record, whose values are `String`s, and given back byte for byte, as AWS gives it back.
//!
//! A header value is bytes, and not always UTF-8: an HTTP/1.1 header may carry any byte from
//! 0x80 to 0xFF (`obs-text`), which clients that treat headers as Latin-1 send for `é` (0xE9).
//! The mapping is lossless and reads every record written before it as it was meant:
//!
//! - bytes that are valid UTF-8 are stored as that text (what every stored value already is:
//!   values used to be decoded lossily, so they are all UTF-8);
//! - other bytes are stored as [`RAW`] (U+0000) followed by one character per byte, U+0000 to
//!   U+00FF (their Latin-1 reading). No header value can contain U+0000, so no value stored
//!   from UTF-8 starts with it; one that did would be stored the second way too, so that the
//!   mapping stays one-to-one.

use axum::http::HeaderValue;
use std::borrow::Cow;

/// First character of a stored value whose bytes are not UTF-8.
const RAW: char = '\0';

/// A header value as an object record keeps it.
pub fn stored(value: &[u8]) -> String {
    match std::str::from_utf8(value) {
        Ok(text) if !text.starts_with(RAW) => text.to_string(),
        _ => std::iter::once(RAW)
            .chain(value.iter().map(|&b| char::from(b)))
            .collect(),
    }
}

/// The bytes a stored value stands for: the inverse of [`stored`].
pub fn bytes(stored: &str) -> Cow<'_, [u8]> {
    if let Some(raw) = stored.strip_prefix(RAW) {
        if raw.chars().all(|c| u32::from(c) <= 0xFF) {
            return Cow::Owned(raw.chars().map(|c| c as u8).collect());
        }
    }
    Cow::Borrowed(stored.as_bytes())
}

/// A stored value as the header value it came from; `None` for a value no header can carry
/// (none is stored: every value came from a header, or passed `HeaderValue`'s check).
pub fn header_value(stored: &str) -> Option<HeaderValue> {
    HeaderValue::from_bytes(&bytes(stored)).ok()
}

/// `Content-Encoding` as stored: the `aws-chunked` token, which describes the request body and
/// not the object, dropped wherever it appears, and the rest kept exactly as sent, spaces
/// included (`aws-chunked, deflate, gzip` is stored as `deflate, gzip`); `None` when nothing is
/// left.
pub fn content_encoding(value: &[u8]) -> Option<Vec<u8>> {
    let kept: Vec<&[u8]> = value
        .split(|b| *b == b',')
        .filter(|token| !token.trim_ascii().eq_ignore_ascii_case(b"aws-chunked"))
        .collect();
    let joined = kept.join(&b","[..]);
    let rest = joined.trim_ascii();
    (!rest.is_empty()).then(|| rest.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_byte_for_byte() {
        let cases: [&[u8]; 8] = [
            b"plain",
            b"",
            "caf\u{e9} \u{1F600}".as_bytes(),
            b"caf\xe9",
            b"\xff\xfe",
            b"\xc3",
            b"\0starts with the mark",
            "\0\u{e9}".as_bytes(),
        ];
        for value in cases {
            let s = stored(value);
            assert_eq!(&*bytes(&s), value, "{s:?}");
        }
        // UTF-8 is kept as text: what older records hold reads as it did.
        assert_eq!(stored("caf\u{e9}".as_bytes()), "caf\u{e9}");
        assert_eq!(&*bytes("caf\u{e9}"), "caf\u{e9}".as_bytes());
        assert_eq!(stored(b"caf\xe9"), "\0caf\u{e9}");
        // A value with the mark but a character beyond Latin-1 is text (none is stored so).
        assert_eq!(&*bytes("\0\u{1F600}"), "\0\u{1F600}".as_bytes());
        assert_eq!(
            header_value(&stored(b"caf\xe9")).unwrap().as_bytes(),
            b"caf\xe9"
        );
    }

    #[test]
    fn aws_chunked_is_dropped_from_content_encoding() {
        let ce = |v: &str| content_encoding(v.as_bytes()).map(|v| String::from_utf8(v).unwrap());
        assert_eq!(
            ce("aws-chunked, deflate, gzip").as_deref(),
            Some("deflate, gzip")
        );
        assert_eq!(ce("gzip, aws-chunked, br").as_deref(), Some("gzip, br"));
        assert_eq!(ce("gzip,aws-chunked").as_deref(), Some("gzip"));
        assert_eq!(ce("aws-chunked,gzip").as_deref(), Some("gzip"));
        assert_eq!(ce("gzip").as_deref(), Some("gzip"));
        assert_eq!(ce("deflate ,  gzip").as_deref(), Some("deflate ,  gzip"));
        assert_eq!(ce("AWS-Chunked"), None);
        assert_eq!(ce("aws-chunked"), None);
        assert_eq!(ce(" aws-chunked , aws-chunked"), None);
    }
}
