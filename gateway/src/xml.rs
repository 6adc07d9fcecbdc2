//! S3 XML documents: writing answers with escaping, and parsing the few request bodies S3 has.

use crate::error::S3Error;
use serde::Deserialize;

/// The S3 namespace every answer document carries.
pub const NS: &str = "http://s3.amazonaws.com/doc/2006-03-01/";

/// Appends `s` with XML special characters escaped.
pub fn escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Control characters are not allowed in XML 1.0 text; S3 escapes them numerically.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => {
                out.push_str(&format!("&#x{:X};", c as u32))
            }
            c => out.push(c),
        }
    }
}

/// Appends `<name>value</name>`.
pub fn elem(out: &mut String, name: &str, value: &str) {
    out.push('<');
    out.push_str(name);
    out.push('>');
    escape_into(out, value);
    out.push_str("</");
    out.push_str(name);
    out.push('>');
}

/// Starts a document with its root element in the S3 namespace.
pub fn doc(root: &str) -> String {
    format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<{root} xmlns=\"{NS}\">")
}

/// `<CompleteMultipartUpload>` body.
#[derive(Debug, Deserialize)]
pub struct CompleteMultipartUpload {
    #[serde(rename = "Part", default)]
    pub parts: Vec<CompletedPart>,
}

#[derive(Debug, Deserialize)]
pub struct CompletedPart {
    #[serde(rename = "PartNumber")]
    pub number: u32,
    #[serde(rename = "ETag")]
    pub etag: String,
}

/// `<Delete>` body of DeleteObjects.
#[derive(Debug, Deserialize)]
pub struct Delete {
    #[serde(rename = "Object", default)]
    pub objects: Vec<DeleteObject>,
    #[serde(rename = "Quiet", default)]
    pub quiet: Option<bool>,
}

#[derive(Debug, Deserialize)]
pub struct DeleteObject {
    #[serde(rename = "Key")]
    pub key: String,
}

/// `<CreateBucketConfiguration>` body of CreateBucket.
#[derive(Debug, Deserialize)]
pub struct CreateBucketConfiguration {
    #[serde(rename = "LocationConstraint", default)]
    pub location: Option<String>,
}

/// Parses a request body document, or fails with MalformedXML.
pub fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, S3Error> {
    let text = std::str::from_utf8(body).map_err(|_| S3Error::malformed_xml())?;
    quick_xml::de::from_str(text).map_err(|_| S3Error::malformed_xml())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_request_documents_and_escapes() {
        let c: CompleteMultipartUpload = parse(
            br#"<CompleteMultipartUpload xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Part><ETag>"a"</ETag><PartNumber>1</PartNumber><ChecksumCRC32>x</ChecksumCRC32></Part><Part><PartNumber>2</PartNumber><ETag>b</ETag></Part></CompleteMultipartUpload>"#,
        )
        .unwrap();
        assert_eq!(c.parts.len(), 2);
        assert_eq!(c.parts[0].etag, "\"a\"");
        assert_eq!(c.parts[1].number, 2);
        let d: Delete =
            parse(b"<Delete><Object><Key>a &amp; b</Key></Object><Quiet>true</Quiet></Delete>")
                .unwrap();
        assert_eq!(d.objects[0].key, "a & b");
        assert_eq!(d.quiet, Some(true));
        assert!(parse::<Delete>(b"<Delete><Object>").is_err());
        let mut s = String::new();
        elem(&mut s, "Key", "<a&'\"\u{1}>");
        assert_eq!(s, "<Key>&lt;a&amp;&apos;&quot;&#x1;&gt;</Key>");
    }
}
