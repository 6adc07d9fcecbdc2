//! Object tagging: PutObjectTagging, GetObjectTagging, DeleteObjectTagging (`?tagging` on a key)
//! and the `x-amz-tagging` header of PutObject and CreateMultipartUpload; bucket tagging:
//! Put/Get/DeleteBucketTagging (`?tagging` on a bucket).
//!
//! Tags live in the object record; a tagging change is one log entry that leaves the object's
//! data, ETag and modification time alone. S3's limits apply: at most 10 tags (50 on a
//! bucket), keys of 1 to 128 characters and values of at most 256, unique keys, letters,
//! digits, spaces and `+ - = . _ : / @` only, no `aws:` prefix. A breach is `400 InvalidTag`.
//! A bucket's tags are kept by the master group from feature level 2 on: until every master
//! has it (a rolling upgrade), bucket tagging answers 501.

use super::request::{read_verified_body, xml_response, S3Request};
use crate::error::{S3Error, S3Result};
use crate::xml::{self, elem, parse_tree, Node};
use crate::Gateway;
use axum::body::Body;
use axum::response::Response;
use std::collections::HashSet;
use tinydfs_proto::meta::{MetaError, MetaRead, MetaReply, MetaWrite};

/// Most tags an object may have.
pub const MAX_TAGS: usize = 10;
/// Most tags a bucket may have.
pub const MAX_BUCKET_TAGS: usize = 50;
/// The master group's feature level that keeps bucket tags (`master/src/features.rs`).
const BUCKET_TAGS_LEVEL: u32 = 2;
/// Longest tag key, in Unicode characters.
pub const MAX_KEY_CHARS: usize = 128;
/// Longest tag value, in Unicode characters.
pub const MAX_VALUE_CHARS: usize = 256;

fn invalid_tag(message: &str) -> S3Error {
    S3Error::new("InvalidTag", 400, message)
}

/// Characters S3 allows in tag keys and values besides letters, digits and spaces.
fn allowed(c: char) -> bool {
    c.is_alphanumeric() || c.is_whitespace() || "+-=._:/@".contains(c)
}

/// Checks an object's tag set against S3's limits.
pub fn validate(tags: &[(String, String)]) -> S3Result<()> {
    if tags.len() > MAX_TAGS {
        return Err(invalid_tag("Object tags cannot be greater than 10"));
    }
    validate_each(tags)
}

/// Checks a bucket's tag set against S3's limits.
fn validate_bucket(tags: &[(String, String)]) -> S3Result<()> {
    if tags.len() > MAX_BUCKET_TAGS {
        return Err(invalid_tag("Bucket tag count cannot be greater than 50"));
    }
    validate_each(tags)
}

/// Checks each tag against S3's rules (lengths, characters, prefix, unique keys).
fn validate_each(tags: &[(String, String)]) -> S3Result<()> {
    let mut keys = HashSet::new();
    for (k, v) in tags {
        if k.chars().count() > MAX_KEY_CHARS {
            return Err(invalid_tag(
                "The TagKey you have provided is too long, max 128",
            ));
        }
        if v.chars().count() > MAX_VALUE_CHARS {
            return Err(invalid_tag(
                "The TagValue you have provided is too long, max 256",
            ));
        }
        if k.is_empty() || !k.chars().all(allowed) {
            return Err(invalid_tag("The TagKey you have provided is invalid"));
        }
        if !v.chars().all(allowed) {
            return Err(invalid_tag("The TagValue you have provided is invalid"));
        }
        if k.starts_with("aws:") {
            return Err(invalid_tag("Your TagKey cannot be prefixed with aws:"));
        }
        if !keys.insert(k.as_str()) {
            return Err(invalid_tag(
                "Cannot provide multiple Tags with the same key",
            ));
        }
    }
    Ok(())
}

/// Decodes one URL-encoded component (`+` is a space, as form encoders such as boto3 write it).
fn url_decode(s: &str) -> S3Result<String> {
    let s = s.replace('+', " ");
    percent_encoding::percent_decode_str(&s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| {
            S3Error::invalid_argument(
                "The header 'x-amz-tagging' shall be encoded as UTF-8 then URLEncoded URL query parameters without tag name duplicates.",
            )
        })
}

/// Parses a tag set written as a URL query string (`k1=v1&k2=v2`), as in `x-amz-tagging`.
pub fn parse_query_tags(raw: &str) -> S3Result<Vec<(String, String)>> {
    let mut tags = Vec::new();
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        tags.push((url_decode(k)?, url_decode(v)?));
    }
    validate(&tags)?;
    Ok(tags)
}

/// The tags of the `x-amz-tagging` header (none when absent).
pub fn from_header(req: &S3Request) -> S3Result<Vec<(String, String)>> {
    match req.headers.get("x-amz-tagging") {
        None => Ok(Vec::new()),
        Some(v) => parse_query_tags(&String::from_utf8_lossy(v.as_bytes())),
    }
}

/// Parses an object's `<Tagging>` document ([`parse_tag_set`]) and checks it.
pub fn parse_document(body: &[u8]) -> S3Result<Vec<(String, String)>> {
    let tags = parse_tag_set(body)?;
    validate(&tags)?;
    Ok(tags)
}

/// Parses a `<Tagging><TagSet><Tag><Key/><Value/></Tag>...</TagSet></Tagging>` document.
fn parse_tag_set(body: &[u8]) -> S3Result<Vec<(String, String)>> {
    let root = parse_tree(body)?;
    if root.name != "Tagging" {
        return Err(S3Error::malformed_xml());
    }
    root.check_container()?;
    let [set] = root.children.as_slice() else {
        return Err(S3Error::malformed_xml());
    };
    if set.name != "TagSet" {
        return Err(S3Error::malformed_xml());
    }
    set.check_container()?;
    let mut tags = Vec::with_capacity(set.children.len());
    for tag in &set.children {
        if tag.name != "Tag" {
            return Err(S3Error::malformed_xml());
        }
        tag.check_container()?;
        let (mut key, mut value): (Option<&Node>, Option<&Node>) = (None, None);
        for c in &tag.children {
            let slot = match c.name.as_str() {
                "Key" => &mut key,
                "Value" => &mut value,
                _ => return Err(S3Error::malformed_xml()),
            };
            if slot.replace(c).is_some() {
                return Err(S3Error::malformed_xml());
            }
        }
        let (Some(key), Some(value)) = (key, value) else {
            return Err(S3Error::malformed_xml());
        };
        tags.push((key.leaf()?.to_string(), value.leaf()?.to_string()));
    }
    Ok(tags)
}

/// The `<Tagging>` document of a tag set.
pub fn render(tags: &[(String, String)]) -> String {
    let mut out = xml::doc("Tagging");
    out.push_str("<TagSet>");
    for (k, v) in tags {
        out.push_str("<Tag>");
        elem(&mut out, "Key", k);
        elem(&mut out, "Value", v);
        out.push_str("</Tag>");
    }
    out.push_str("</TagSet></Tagging>");
    out
}

fn not_found<'a>(bucket: &'a str, key: &'a str) -> impl Fn(MetaError) -> S3Error + 'a {
    move |e| match e {
        MetaError::NoSuchKey => S3Error::no_such_key(key),
        MetaError::NoSuchBucket => S3Error::no_such_bucket(bucket),
        e => e.into(),
    }
}

async fn set(gw: &Gateway, req: &S3Request, tags: Vec<(String, String)>) -> S3Result<()> {
    let (bucket, key) = (req.bucket()?, req.key()?);
    gw.master
        .write(MetaWrite::PutObjectTags {
            bucket: bucket.to_string(),
            key: key.to_string(),
            tags,
        })
        .await
        .map_err(not_found(bucket, key))?;
    Ok(())
}

/// PutObjectTagging: replaces the object's tags.
pub async fn put(gw: &Gateway, mut req: S3Request) -> S3Result<Response> {
    let body = read_verified_body(&mut req).await?;
    let tags = parse_document(&body)?;
    set(gw, &req, tags).await?;
    Ok(Response::builder().body(Body::empty()).unwrap_or_default())
}

/// GetObjectTagging: the object's tags (an empty set when it has none).
pub async fn get(gw: &Gateway, req: &S3Request) -> S3Result<Response> {
    let (bucket, key) = (req.bucket()?, req.key()?);
    let reply = gw
        .master
        .read(MetaRead::GetObject {
            bucket: bucket.to_string(),
            key: key.to_string(),
        })
        .await
        .map_err(not_found(bucket, key))?;
    let MetaReply::Object(loc) = reply else {
        return Err(S3Error::internal("unexpected reply to GetObject"));
    };
    Ok(xml_response(render(&loc.record.tags)))
}

/// DeleteObjectTagging: removes the object's tags (204).
pub async fn delete(gw: &Gateway, req: &S3Request) -> S3Result<Response> {
    set(gw, req, Vec::new()).await?;
    Ok(Response::builder()
        .status(204)
        .body(Body::empty())
        .unwrap_or_default())
}

/// Refuses bucket tagging while some master cannot keep bucket tags (mid-upgrade).
async fn bucket_tags_enabled(gw: &Gateway) -> S3Result<()> {
    if gw.master.group_feature_level(BUCKET_TAGS_LEVEL).await < BUCKET_TAGS_LEVEL {
        return Err(S3Error::new(
            "NotImplemented",
            501,
            "Bucket tagging needs every master of the cluster upgraded",
        ));
    }
    Ok(())
}

async fn set_bucket_tags(gw: &Gateway, bucket: &str, tags: Vec<(String, String)>) -> S3Result<()> {
    gw.master
        .write(MetaWrite::PutBucketTags {
            bucket: bucket.to_string(),
            tags,
        })
        .await
        .map_err(|e| S3Error::from(e).with("BucketName", bucket))?;
    Ok(())
}

/// PutBucketTagging: replaces the bucket's tags (204, as AWS answers).
pub async fn put_bucket(gw: &Gateway, mut req: S3Request) -> S3Result<Response> {
    bucket_tags_enabled(gw).await?;
    let body = read_verified_body(&mut req).await?;
    let tags = parse_tag_set(&body)?;
    validate_bucket(&tags)?;
    set_bucket_tags(gw, req.bucket()?, tags).await?;
    Ok(Response::builder()
        .status(204)
        .body(Body::empty())
        .unwrap_or_default())
}

/// GetBucketTagging: the bucket's tags; a bucket without any answers `404 NoSuchTagSet`.
pub async fn get_bucket(gw: &Gateway, req: &S3Request) -> S3Result<Response> {
    bucket_tags_enabled(gw).await?;
    let bucket = req.bucket()?;
    let reply = gw
        .master
        .read(MetaRead::GetBucketTags {
            bucket: bucket.to_string(),
        })
        .await
        .map_err(|e| S3Error::from(e).with("BucketName", bucket))?;
    let MetaReply::Tags(tags) = reply else {
        return Err(S3Error::internal("unexpected reply to GetBucketTags"));
    };
    if tags.is_empty() {
        return Err(
            S3Error::new("NoSuchTagSet", 404, "The TagSet does not exist")
                .with("BucketName", bucket),
        );
    }
    Ok(xml_response(render(&tags)))
}

/// DeleteBucketTagging: removes the bucket's tags (204, also when it had none).
pub async fn delete_bucket(gw: &Gateway, req: &S3Request) -> S3Result<Response> {
    bucket_tags_enabled(gw).await?;
    set_bucket_tags(gw, req.bucket()?, Vec::new()).await?;
    Ok(Response::builder()
        .status(204)
        .body(Body::empty())
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(r: S3Result<Vec<(String, String)>>) -> String {
        r.err().map(|e| e.code.to_string()).unwrap_or_default()
    }

    #[test]
    fn header_tags_are_url_encoded_queries() {
        assert_eq!(
            parse_query_tags("a=1&b%20c=d+e&empty=&solo").unwrap(),
            [
                ("a".into(), "1".into()),
                ("b c".into(), "d e".into()),
                ("empty".into(), String::new()),
                ("solo".into(), String::new()),
            ]
        );
        assert_eq!(parse_query_tags("").unwrap(), []);
        assert_eq!(code(parse_query_tags("a=1&a=2")), "InvalidTag");
        let eleven: Vec<String> = (0..11).map(|i| format!("k{i}=v")).collect();
        assert_eq!(code(parse_query_tags(&eleven.join("&"))), "InvalidTag");
        assert_eq!(
            code(parse_query_tags(&format!("{}=v", "k".repeat(129)))),
            "InvalidTag"
        );
        assert!(parse_query_tags(&format!("{}=v", "é".repeat(128))).is_ok());
        assert_eq!(
            code(parse_query_tags(&format!("k={}", "v".repeat(257)))),
            "InvalidTag"
        );
        assert_eq!(code(parse_query_tags("k=%3Cb%3E")), "InvalidTag");
        assert_eq!(code(parse_query_tags("aws%3Ax=1")), "InvalidTag");
        assert_eq!(code(parse_query_tags("=v")), "InvalidTag");
        assert_eq!(code(parse_query_tags("k=%FF")), "InvalidArgument");
    }

    #[test]
    fn documents_parse_and_render() {
        let doc = br#"<?xml version="1.0"?><Tagging xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><TagSet><Tag><Key>a</Key><Value>1 2</Value></Tag><Tag><Value></Value><Key>b</Key></Tag></TagSet></Tagging>"#;
        let tags = parse_document(doc).unwrap();
        assert_eq!(
            tags,
            [("a".into(), "1 2".into()), ("b".into(), String::new())]
        );
        assert_eq!(parse_document(render(&tags).as_bytes()).unwrap(), tags);
        assert_eq!(parse_document(b"<Tagging><TagSet/></Tagging>").unwrap(), []);
        for bad in [
            &b"<Tagging/>"[..],
            b"<Tagging><TagSet><Tag><Key>a</Key></Tag></TagSet></Tagging>",
            b"<Tagging><TagSet><Tag><Key>a</Key><Key>b</Key><Value/></Tag></TagSet></Tagging>",
            b"<Tagging><TagSet><Other/></TagSet></Tagging>",
            b"<Tags><TagSet/></Tags>",
        ] {
            assert_eq!(code(parse_document(bad)), "MalformedXML");
        }
    }
}
