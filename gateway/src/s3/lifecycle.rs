//! Bucket lifecycle configuration: PutBucketLifecycleConfiguration, GetBucketLifecycleConfiguration
//! and DeleteBucketLifecycle (`?lifecycle`).
//!
//! tinydfs enforces rules with a key prefix filter and the `Expiration` (`Days`, `Date`) and
//! `AbortIncompleteMultipartUpload` actions (the master's lifecycle worker applies them). Anything
//! else S3's rule language has (tag and size filters, transitions, noncurrent versions) is
//! refused with 501 NotImplemented naming the element, never stored and silently ignored.

use super::request::{read_verified_body, xml_response, S3Request};
use crate::error::{S3Error, S3Result};
use crate::xml::{self, elem, parse_tree, Node};
use crate::Gateway;
use axum::body::Body;
use axum::response::Response;
use std::collections::HashSet;
use tinydfs_proto::meta::{LifecycleRule, MetaRead, MetaReply, MetaWrite, MAX_LIFECYCLE_RULES};
use tinydfs_proto::time::{iso8601, parse_iso8601_date, SECS_PER_DAY};

/// Longest rule ID S3 accepts, in characters.
pub const MAX_RULE_ID_LEN: usize = 255;

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

/// An `Expiration/Date`: ISO 8601, which S3 requires to be midnight UTC
/// (`2030-01-01T00:00:00Z`, `2030-01-01T00:00:00.000Z`, `2030-01-01`). Epoch milliseconds.
pub fn parse_midnight(s: &str) -> S3Result<u64> {
    let bad = || S3Error::invalid_argument("'Date' must be an ISO 8601 date at midnight GMT");
    let (date, time) = match s.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    // A day beyond its month (2030-02-30) and days before 1970 are refused too.
    let days = parse_iso8601_date(date).ok_or_else(bad)?;
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
    Ok(days * SECS_PER_DAY * 1000)
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
mod tests;
