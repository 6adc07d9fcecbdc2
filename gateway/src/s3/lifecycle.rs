//! Bucket lifecycle configuration: PutBucketLifecycleConfiguration, GetBucketLifecycleConfiguration
//! and DeleteBucketLifecycle (`?lifecycle`).
//!
//! tinydfs enforces rules with a key prefix filter and the `Expiration` (`Days`, `Date`) and
//! `AbortIncompleteMultipartUpload` actions (the master's lifecycle worker applies them). Anything
//! else S3's rule language has (tag and size filters, transitions, noncurrent versions) is
//! refused with 501 NotImplemented naming the element, never stored and silently ignored.

use super::{xml_response, S3Request, MAX_XML_BODY};
use crate::auth::{ChecksumAlgo, ChecksumHasher, Payload};
use crate::error::{S3Error, S3Result};
use crate::xml::{self, elem};
use crate::Gateway;
use axum::body::Body;
use axum::response::Response;
use base64::Engine;
use futures_util::StreamExt;
use md5::{Digest, Md5};
use std::collections::HashSet;
use tinydfs_proto::meta::{LifecycleRule, MetaRead, MetaReply, MetaWrite, MAX_LIFECYCLE_RULES};
use tinydfs_proto::time::iso8601;

/// Longest rule ID S3 accepts, in characters.
pub const MAX_RULE_ID_LEN: usize = 255;
/// Deepest element nesting read from a configuration document (S3's rules nest four deep).
const MAX_DEPTH: usize = 16;

/// PutBucketLifecycleConfiguration: replaces the bucket's rules.
pub async fn put(gw: &Gateway, mut req: S3Request) -> S3Result<Response> {
    let bucket = req.bucket()?.to_string();
    let body = read_verified_body(&mut req).await?;
    let rules = parse_configuration(&body)?;
    gw.master
        .write(MetaWrite::PutLifecycle {
            bucket: bucket.clone(),
            rules,
        })
        .await
        .map_err(|e| S3Error::from(e).with("BucketName", &bucket))?;
    Ok(Response::builder().body(Body::empty()).unwrap_or_default())
}

/// GetBucketLifecycleConfiguration: the rules as they were put (404 when there are none).
pub async fn get(gw: &Gateway, req: &S3Request) -> S3Result<Response> {
    let bucket = req.bucket()?;
    let reply = gw
        .master
        .read(MetaRead::GetLifecycle {
            bucket: bucket.to_string(),
        })
        .await
        .map_err(|e| S3Error::from(e).with("BucketName", bucket))?;
    let MetaReply::Lifecycle(rules) = reply else {
        return Err(S3Error::internal("unexpected reply to GetLifecycle"));
    };
    if rules.is_empty() {
        return Err(S3Error::new(
            "NoSuchLifecycleConfiguration",
            404,
            "The lifecycle configuration does not exist",
        )
        .with("BucketName", bucket));
    }
    Ok(xml_response(render(&rules)))
}

/// DeleteBucketLifecycle: 204, also when the bucket had no configuration (as on S3).
pub async fn delete(gw: &Gateway, req: &S3Request) -> S3Result<Response> {
    let bucket = req.bucket()?;
    gw.master
        .write(MetaWrite::DeleteLifecycle {
            bucket: bucket.to_string(),
        })
        .await
        .map_err(|e| S3Error::from(e).with("BucketName", bucket))?;
    Ok(Response::builder()
        .status(204)
        .body(Body::empty())
        .unwrap_or_default())
}

/// Reads the (small) body and checks its integrity as S3 does for this operation: it needs
/// `Content-MD5`, an `x-amz-checksum-*` (header or trailer) or a signed payload, and every one
/// given must match.
pub(super) async fn read_verified_body(req: &mut S3Request) -> S3Result<Vec<u8>> {
    let content_md5 = match req.header("content-md5") {
        None => None,
        Some(v) => Some(
            base64::engine::general_purpose::STANDARD
                .decode(v.trim())
                .ok()
                .filter(|d| d.len() == 16)
                .ok_or_else(|| {
                    S3Error::new(
                        "InvalidDigest",
                        400,
                        "The Content-MD5 you specified was invalid.",
                    )
                })?,
        ),
    };
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

/// An element of a request document: its local name, its text and its child elements.
#[derive(Debug, Default)]
pub(super) struct Node {
    pub name: String,
    pub text: String,
    pub children: Vec<Node>,
}

/// Reads a document into a tree of elements; anything not well-formed is MalformedXML.
pub(super) fn parse_tree(body: &[u8]) -> S3Result<Node> {
    use quick_xml::events::Event;
    let text = std::str::from_utf8(body).map_err(|_| S3Error::malformed_xml())?;
    let mut reader = quick_xml::Reader::from_str(text);
    let mut stack: Vec<Node> = Vec::new();
    let mut root: Option<Node> = None;
    let open = |e: &quick_xml::events::BytesStart| -> S3Result<Node> {
        let name = std::str::from_utf8(e.local_name().as_ref())
            .map_err(|_| S3Error::malformed_xml())?
            .to_string();
        Ok(Node {
            name,
            ..Default::default()
        })
    };
    loop {
        let event = reader.read_event().map_err(|_| S3Error::malformed_xml())?;
        let closed = match event {
            Event::Start(e) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(S3Error::malformed_xml());
                }
                stack.push(open(&e)?);
                None
            }
            Event::Empty(e) => Some(open(&e)?),
            Event::End(_) => Some(stack.pop().ok_or_else(S3Error::malformed_xml)?),
            Event::Text(t) => {
                let t = t.unescape().map_err(|_| S3Error::malformed_xml())?;
                match stack.last_mut() {
                    Some(top) => top.text.push_str(&t),
                    None if t.trim().is_empty() => {}
                    None => return Err(S3Error::malformed_xml()),
                }
                None
            }
            Event::CData(c) => {
                let raw = c.into_inner();
                let t = std::str::from_utf8(&raw).map_err(|_| S3Error::malformed_xml())?;
                stack
                    .last_mut()
                    .ok_or_else(S3Error::malformed_xml)?
                    .text
                    .push_str(t);
                None
            }
            Event::Decl(_) | Event::Comment(_) | Event::PI(_) | Event::DocType(_) => None,
            Event::Eof => break,
        };
        if let Some(node) = closed {
            match stack.last_mut() {
                Some(parent) => parent.children.push(node),
                None if root.is_none() => root = Some(node),
                None => return Err(S3Error::malformed_xml()),
            }
        }
    }
    if !stack.is_empty() {
        return Err(S3Error::malformed_xml());
    }
    root.ok_or_else(S3Error::malformed_xml)
}

impl Node {
    /// A container's text must be blank (only whitespace between its children).
    pub(super) fn check_container(&self) -> S3Result<()> {
        if self.text.trim().is_empty() {
            Ok(())
        } else {
            Err(S3Error::malformed_xml())
        }
    }

    /// A leaf's text; a leaf with children is MalformedXML.
    pub(super) fn leaf(&self) -> S3Result<&str> {
        if self.children.is_empty() {
            Ok(&self.text)
        } else {
            Err(S3Error::malformed_xml())
        }
    }
}

/// Sets an element that may appear once.
fn once<'a>(slot: &mut Option<&'a Node>, node: &'a Node) -> S3Result<()> {
    if slot.replace(node).is_some() {
        return Err(S3Error::malformed_xml());
    }
    Ok(())
}

fn unsupported(what: &str) -> S3Error {
    S3Error::not_implemented(&format!("the lifecycle element <{what}>"))
}

/// A positive day count (S3 takes a 32-bit integer); `InvalidArgument` with `message` if not.
fn positive_days(node: &Node, message: &str) -> S3Result<u32> {
    let n: i64 = node
        .leaf()?
        .trim()
        .parse()
        .map_err(|_| S3Error::malformed_xml())?;
    if n <= 0 || n > i64::from(i32::MAX) {
        return Err(S3Error::invalid_argument(message));
    }
    Ok(n as u32)
}

/// Parses a `LifecycleConfiguration` document into rules, validating it as S3 does.
pub fn parse_configuration(body: &[u8]) -> S3Result<Vec<LifecycleRule>> {
    let root = parse_tree(body)?;
    if root.name != "LifecycleConfiguration" {
        return Err(S3Error::malformed_xml());
    }
    root.check_container()?;
    if root.children.is_empty() || root.children.iter().any(|c| c.name != "Rule") {
        return Err(S3Error::malformed_xml());
    }
    if root.children.len() > MAX_LIFECYCLE_RULES {
        return Err(S3Error::new(
            "MalformedXML",
            400,
            format!("A lifecycle configuration may have at most {MAX_LIFECYCLE_RULES} rules"),
        ));
    }
    let mut rules = Vec::with_capacity(root.children.len());
    let mut ids = HashSet::new();
    for node in &root.children {
        let rule = parse_rule(node)?;
        if let Some(id) = &rule.id {
            if !ids.insert(id.clone()) {
                return Err(S3Error::invalid_argument(
                    "Rule ID must be unique. Found same ID for more than one rule",
                ));
            }
        }
        rules.push(rule);
    }
    // S3 names a rule given without an ID.
    for r in rules.iter_mut().filter(|r| r.id.is_none()) {
        r.id = Some(format!("{:032x}", rand::random::<u128>()));
    }
    Ok(rules)
}

fn parse_rule(node: &Node) -> S3Result<LifecycleRule> {
    node.check_container()?;
    let (mut id, mut status, mut filter, mut prefix, mut expiration, mut abort) =
        (None, None, None, None, None, None);
    for c in &node.children {
        match c.name.as_str() {
            "ID" => once(&mut id, c)?,
            "Status" => once(&mut status, c)?,
            "Filter" => once(&mut filter, c)?,
            "Prefix" => once(&mut prefix, c)?,
            "Expiration" => once(&mut expiration, c)?,
            "AbortIncompleteMultipartUpload" => once(&mut abort, c)?,
            "Transition" | "NoncurrentVersionTransition" | "NoncurrentVersionExpiration" => {
                return Err(unsupported(&c.name))
            }
            _ => return Err(S3Error::malformed_xml()),
        }
    }
    let mut rule = LifecycleRule::default();
    if let Some(id) = id {
        let id = id.leaf()?;
        if id.chars().count() > MAX_RULE_ID_LEN {
            return Err(S3Error::invalid_argument(format!(
                "ID length should not exceed allowed limit of {MAX_RULE_ID_LEN}"
            )));
        }
        rule.id = Some(id.to_string()).filter(|s| !s.is_empty());
    }
    rule.enabled = match status.map(Node::leaf).transpose()? {
        Some("Enabled") => true,
        Some("Disabled") => false,
        _ => return Err(S3Error::malformed_xml()),
    };
    match (filter, prefix) {
        (Some(f), None) => rule.prefix = parse_filter(f)?,
        (None, Some(p)) => {
            rule.prefix = Some(p.leaf()?.to_string());
            rule.legacy_prefix = true;
        }
        // S3 wants exactly one of the two.
        _ => return Err(S3Error::malformed_xml()),
    }
    if let Some(e) = expiration {
        parse_expiration(e, &mut rule)?;
    }
    if let Some(a) = abort {
        a.check_container()?;
        let mut days = None;
        for c in &a.children {
            match c.name.as_str() {
                "DaysAfterInitiation" => once(&mut days, c)?,
                _ => return Err(S3Error::malformed_xml()),
            }
        }
        let days = days.ok_or_else(S3Error::malformed_xml)?;
        rule.abort_incomplete_days = Some(positive_days(
            days,
            "'DaysAfterInitiation' for AbortIncompleteMultipartUpload action must be a positive integer",
        )?);
    }
    if expiration.is_none() && abort.is_none() {
        return Err(S3Error::invalid_request(
            "At least one action needs to be specified in a rule",
        ));
    }
    Ok(rule)
}

/// The prefix of a `<Filter>` (`None`: an empty filter, every key).
fn parse_filter(f: &Node) -> S3Result<Option<String>> {
    f.check_container()?;
    let mut prefix = None;
    for c in &f.children {
        match c.name.as_str() {
            "Prefix" => once(&mut prefix, c)?,
            "Tag" | "And" | "ObjectSizeGreaterThan" | "ObjectSizeLessThan" => {
                return Err(unsupported(&format!("Filter><{}", c.name)))
            }
            _ => return Err(S3Error::malformed_xml()),
        }
    }
    Ok(match prefix {
        Some(p) => Some(p.leaf()?.to_string()),
        None => None,
    })
}

fn parse_expiration(e: &Node, rule: &mut LifecycleRule) -> S3Result<()> {
    e.check_container()?;
    let (mut days, mut date, mut marker) = (None, None, None);
    for c in &e.children {
        match c.name.as_str() {
            "Days" => once(&mut days, c)?,
            "Date" => once(&mut date, c)?,
            "ExpiredObjectDeleteMarker" => once(&mut marker, c)?,
            _ => return Err(S3Error::malformed_xml()),
        }
    }
    if days.is_some() && date.is_some() {
        return Err(S3Error::malformed_xml());
    }
    if let Some(d) = days {
        rule.expiration_days = Some(positive_days(
            d,
            "'Days' for Expiration action must be a positive integer",
        )?);
    }
    if let Some(d) = date {
        rule.expiration_date_ms = Some(parse_midnight(d.leaf()?.trim())?);
    }
    if let Some(m) = marker {
        if days.is_some() || date.is_some() {
            return Err(S3Error::invalid_argument(
                "ExpiredObjectDeleteMarker cannot be specified with expiration days or date",
            ));
        }
        rule.expired_object_delete_marker = Some(match m.leaf()?.trim() {
            "true" => true,
            "false" => false,
            _ => return Err(S3Error::malformed_xml()),
        });
    }
    if days.is_none() && date.is_none() && marker.is_none() {
        return Err(S3Error::malformed_xml());
    }
    Ok(())
}

/// Days from 1970-01-01 to a civil date (proleptic Gregorian; Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// An `Expiration/Date`: ISO 8601, which S3 requires to be midnight UTC
/// (`2030-01-01T00:00:00Z`, `2030-01-01T00:00:00.000Z`, `2030-01-01`). Epoch milliseconds.
pub fn parse_midnight(s: &str) -> S3Result<u64> {
    let bad = || S3Error::invalid_argument("'Date' must be an ISO 8601 date at midnight GMT");
    let (date, time) = match s.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let mut parts = date.split('-');
    let (Some(y), Some(m), Some(d), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    let digits = |p: &str, n: usize| p.len() == n && p.bytes().all(|b| b.is_ascii_digit());
    if !digits(y, 4) || !digits(m, 2) || !digits(d, 2) {
        return Err(bad());
    }
    let (y, m, d): (i64, i64, i64) = (
        y.parse().map_err(|_| bad())?,
        m.parse().map_err(|_| bad())?,
        d.parse().map_err(|_| bad())?,
    );
    if let Some(t) = time {
        let t = t
            .strip_suffix('Z')
            .or_else(|| t.strip_suffix("+00:00"))
            .ok_or_else(bad)?;
        let midnight = t == "00:00"
            || t.strip_prefix("00:00:00").is_some_and(|f| {
                f.is_empty() || (f.starts_with('.') && f[1..].bytes().all(|b| b == b'0'))
            });
        if !midnight {
            return Err(bad());
        }
    }
    let days = days_from_civil(y, m, d);
    if !(1..=12).contains(&m) || days < 0 {
        return Err(bad());
    }
    let ms = days as u64 * 86_400_000;
    // A day beyond its month (2030-02-30) does not survive the round trip.
    if !iso8601(ms).starts_with(date) {
        return Err(bad());
    }
    Ok(ms)
}

/// The configuration document GetBucketLifecycleConfiguration returns.
pub(crate) fn render(rules: &[LifecycleRule]) -> String {
    let mut out = xml::doc("LifecycleConfiguration");
    for r in rules {
        out.push_str("<Rule>");
        if let Some(id) = &r.id {
            elem(&mut out, "ID", id);
        }
        match (&r.prefix, r.legacy_prefix) {
            (Some(p), true) => elem(&mut out, "Prefix", p),
            (Some(p), false) => {
                out.push_str("<Filter>");
                elem(&mut out, "Prefix", p);
                out.push_str("</Filter>");
            }
            (None, _) => out.push_str("<Filter></Filter>"),
        }
        elem(
            &mut out,
            "Status",
            if r.enabled { "Enabled" } else { "Disabled" },
        );
        let has_expiration = r.expiration_days.is_some()
            || r.expiration_date_ms.is_some()
            || r.expired_object_delete_marker.is_some();
        if has_expiration {
            out.push_str("<Expiration>");
            if let Some(d) = r.expiration_days {
                elem(&mut out, "Days", &d.to_string());
            }
            if let Some(d) = r.expiration_date_ms {
                elem(&mut out, "Date", &iso8601(d));
            }
            if let Some(m) = r.expired_object_delete_marker {
                elem(&mut out, "ExpiredObjectDeleteMarker", &m.to_string());
            }
            out.push_str("</Expiration>");
        }
        if let Some(d) = r.abort_incomplete_days {
            out.push_str("<AbortIncompleteMultipartUpload>");
            elem(&mut out, "DaysAfterInitiation", &d.to_string());
            out.push_str("</AbortIncompleteMultipartUpload>");
        }
        out.push_str("</Rule>");
    }
    out.push_str("</LifecycleConfiguration>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(rules: &str) -> Vec<u8> {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<LifecycleConfiguration xmlns=\"{}\">{rules}</LifecycleConfiguration>",
            xml::NS
        )
        .into_bytes()
    }

    fn code(body: &[u8]) -> (&'static str, u16) {
        match parse_configuration(body) {
            Ok(r) => panic!("accepted: {r:?}"),
            Err(e) => (e.code, e.status.as_u16()),
        }
    }

    #[test]
    fn parses_the_supported_rules_and_renders_them_back() {
        let body = doc(concat!(
            "<Rule><ID>logs</ID><Filter><Prefix>logs/ a&amp;b</Prefix></Filter><Status>Enabled</Status>",
            "<Expiration><Days>30</Days></Expiration></Rule>",
            "<Rule><ID>old</ID><Prefix>tmp/</Prefix><Status>Disabled</Status>",
            "<AbortIncompleteMultipartUpload><DaysAfterInitiation>7</DaysAfterInitiation></AbortIncompleteMultipartUpload>",
            "<Expiration><Date>2030-01-01T00:00:00Z</Date></Expiration></Rule>",
            "<Rule>\n  <Filter/>\n  <Status>Enabled</Status><Expiration><ExpiredObjectDeleteMarker>true</ExpiredObjectDeleteMarker></Expiration></Rule>",
        ));
        let rules = parse_configuration(&body).unwrap();
        assert_eq!(rules.len(), 3);
        assert_eq!(
            rules[0],
            LifecycleRule {
                id: Some("logs".into()),
                enabled: true,
                prefix: Some("logs/ a&b".into()),
                expiration_days: Some(30),
                ..Default::default()
            }
        );
        assert_eq!(
            rules[1],
            LifecycleRule {
                id: Some("old".into()),
                enabled: false,
                prefix: Some("tmp/".into()),
                legacy_prefix: true,
                expiration_date_ms: Some(1_893_456_000_000),
                abort_incomplete_days: Some(7),
                ..Default::default()
            }
        );
        assert_eq!(rules[2].prefix, None);
        assert_eq!(rules[2].expired_object_delete_marker, Some(true));
        assert_eq!(
            rules[2].id.as_ref().map(String::len),
            Some(32),
            "named by us"
        );
        // What GET renders parses back to the same rules.
        assert_eq!(
            parse_configuration(render(&rules).as_bytes()).unwrap(),
            rules
        );
    }

    #[test]
    fn refuses_what_s3_refuses() {
        let rule = |inner: &str| doc(&format!("<Rule>{inner}</Rule>"));
        let exp = "<Expiration><Days>1</Days></Expiration>";
        for (body, want) in [
            (b"<LifecycleConfiguration><Rule>".to_vec(), ("MalformedXML", 400)),
            (b"not xml".to_vec(), ("MalformedXML", 400)),
            (doc(""), ("MalformedXML", 400)),
            (b"<Other/>".to_vec(), ("MalformedXML", 400)),
            (rule(&format!("<Filter/>{exp}")), ("MalformedXML", 400)),
            (rule(&format!("<Status>On</Status><Filter/>{exp}")), ("MalformedXML", 400)),
            (rule(&format!("<Status>Enabled</Status>{exp}")), ("MalformedXML", 400)),
            (
                rule(&format!("<Status>Enabled</Status><Filter/><Prefix/>{exp}")),
                ("MalformedXML", 400),
            ),
            (rule(&format!("<Status>Enabled</Status><Filter/><Bogus/>{exp}")), ("MalformedXML", 400)),
            (
                rule("<Status>Enabled</Status><Filter/><Expiration><Days>x</Days></Expiration>"),
                ("MalformedXML", 400),
            ),
            (
                rule("<Status>Enabled</Status><Filter/><Expiration><Days>1</Days><Date>2030-01-01T00:00:00Z</Date></Expiration>"),
                ("MalformedXML", 400),
            ),
            (rule("<Status>Enabled</Status><Filter/>"), ("InvalidRequest", 400)),
            (
                rule("<Status>Enabled</Status><Filter/><Expiration><Days>0</Days></Expiration>"),
                ("InvalidArgument", 400),
            ),
            (
                rule("<Status>Enabled</Status><Filter/><AbortIncompleteMultipartUpload><DaysAfterInitiation>-1</DaysAfterInitiation></AbortIncompleteMultipartUpload>"),
                ("InvalidArgument", 400),
            ),
            (
                rule("<Status>Enabled</Status><Filter/><Expiration><Date>2030-01-01T10:00:00Z</Date></Expiration>"),
                ("InvalidArgument", 400),
            ),
            (
                rule("<Status>Enabled</Status><Filter/><Expiration><Date>2030-02-30T00:00:00Z</Date></Expiration>"),
                ("InvalidArgument", 400),
            ),
            (
                rule(&format!("<ID>{}</ID><Status>Enabled</Status><Filter/>{exp}", "x".repeat(256))),
                ("InvalidArgument", 400),
            ),
            (
                doc(&format!(
                    "<Rule><ID>a</ID><Status>Enabled</Status><Filter/>{exp}</Rule><Rule><ID>a</ID><Status>Enabled</Status><Filter/>{exp}</Rule>"
                )),
                ("InvalidArgument", 400),
            ),
            (
                rule(&format!("<Status>Enabled</Status><Filter><Tag><Key>k</Key><Value>v</Value></Tag></Filter>{exp}")),
                ("NotImplemented", 501),
            ),
            (
                rule(&format!("<Status>Enabled</Status><Filter><ObjectSizeGreaterThan>5</ObjectSizeGreaterThan></Filter>{exp}")),
                ("NotImplemented", 501),
            ),
            (
                rule("<Status>Enabled</Status><Filter/><Transition><Days>1</Days><StorageClass>GLACIER</StorageClass></Transition>"),
                ("NotImplemented", 501),
            ),
            (
                rule("<Status>Enabled</Status><Filter/><NoncurrentVersionExpiration><NoncurrentDays>1</NoncurrentDays></NoncurrentVersionExpiration>"),
                ("NotImplemented", 501),
            ),
        ] {
            assert_eq!(code(&body), want, "{}", String::from_utf8_lossy(&body));
        }
        let many: String = (0..=MAX_LIFECYCLE_RULES)
            .map(|i| format!("<Rule><ID>{i}</ID><Status>Enabled</Status><Filter/>{exp}</Rule>"))
            .collect();
        assert_eq!(code(&doc(&many)), ("MalformedXML", 400));
        let most: String = (0..MAX_LIFECYCLE_RULES)
            .map(|i| format!("<Rule><ID>{i}</ID><Status>Enabled</Status><Filter/>{exp}</Rule>"))
            .collect();
        assert_eq!(
            parse_configuration(&doc(&most)).unwrap().len(),
            MAX_LIFECYCLE_RULES
        );
    }

    #[test]
    fn unsupported_elements_are_named() {
        let body = doc("<Rule><Status>Enabled</Status><Filter><And><Prefix>a</Prefix></And></Filter><Expiration><Days>1</Days></Expiration></Rule>");
        let e = parse_configuration(&body).unwrap_err();
        assert!(e.message.contains("And"), "{}", e.message);
    }

    #[test]
    fn dates_must_be_midnight_utc() {
        assert_eq!(parse_midnight("1970-01-01T00:00:00Z").unwrap(), 0);
        assert_eq!(parse_midnight("2000-03-01").unwrap(), 951_868_800_000);
        assert_eq!(
            parse_midnight("2030-01-01T00:00:00.000Z").unwrap(),
            1_893_456_000_000
        );
        assert!(parse_midnight("2030-01-01T00:00:00+00:00").is_ok());
        for bad in [
            "2030-01-01T00:00:01Z",
            "2030-01-01T00:00:00+01:00",
            "2030-13-01",
            "2029-02-29",
            "30-01-01",
            "",
            "1969-12-31",
        ] {
            assert!(parse_midnight(bad).is_err(), "{bad}");
        }
        assert!(parse_midnight("2028-02-29").is_ok());
    }
}
