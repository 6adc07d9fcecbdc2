//! Bucket CORS: PutBucketCors, GetBucketCors and DeleteBucketCors (`?cors`), preflight requests
//! (`OPTIONS` with `Origin` and `Access-Control-Request-Method`, answered without
//! authentication, as on AWS), and the `Access-Control-*` headers of actual requests that carry
//! an `Origin`, so that browsers can use tinydfs directly (presigned URLs, form uploads).
//!
//! The rules are durable bucket metadata (`MetaWrite::PutCors`). The first rule that matches a
//! request answers it, as on S3. Gateways cache each bucket's rules for [`CORS_CACHE_TTL`], so
//! that a page's requests do not each cost a read from the masters; a change made through
//! another gateway takes effect within that time (at once on the gateway that made it).

use super::request::{read_verified_body, xml_response, S3Request};
use crate::error::{S3Error, S3Result};
use crate::xml::{self, elem, parse_tree, Node};
use crate::Gateway;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method};
use axum::response::Response;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tinydfs_proto::meta::{CorsRule, MetaError, MetaRead, MetaReply, MetaWrite, MAX_CORS_RULES};

/// How long a gateway reuses a bucket's CORS rules before reading them again.
pub const CORS_CACHE_TTL: Duration = Duration::from_secs(2);
/// Longest an answer waits for its bucket's rules (masters unreachable): it goes without CORS
/// headers rather than hang.
const DECORATE_TIMEOUT: Duration = Duration::from_secs(2);
/// Buckets whose rules a gateway keeps at most (the cache is emptied beyond).
const CORS_CACHE_BUCKETS: usize = 10_000;
/// Longest rule ID, as for lifecycle rules.
const MAX_RULE_ID_LEN: usize = 255;
/// Methods a rule may allow, as on AWS.
const METHODS: &[&str] = &["GET", "PUT", "HEAD", "POST", "DELETE"];
/// `Vary` of CORS answers: caches must key them by what the answer depended on.
const VARY: &str = "Origin, Access-Control-Request-Headers, Access-Control-Request-Method";

/// A bucket's CORS rules as read at some time (`None`: the bucket does not exist).
type Cached = (Instant, Option<Arc<Vec<CorsRule>>>);

/// Each bucket's CORS rules as last read.
#[derive(Default)]
pub struct CorsCache(Mutex<HashMap<String, Cached>>);

impl CorsCache {
    fn get(&self, bucket: &str) -> Option<Option<Arc<Vec<CorsRule>>>> {
        let map = self.0.lock().ok()?;
        let (at, rules) = map.get(bucket)?;
        (at.elapsed() < CORS_CACHE_TTL).then(|| rules.clone())
    }

    fn put(&self, bucket: &str, rules: Option<Arc<Vec<CorsRule>>>) {
        if let Ok(mut map) = self.0.lock() {
            if map.len() >= CORS_CACHE_BUCKETS {
                map.clear();
            }
            map.insert(bucket.to_string(), (Instant::now(), rules));
        }
    }

    fn forget(&self, bucket: &str) {
        if let Ok(mut map) = self.0.lock() {
            map.remove(bucket);
        }
    }
}

/// The bucket's CORS rules (empty: none), or `None` when the bucket does not exist.
/// Unauthenticated requests reach this: names that cannot be buckets cost nothing, and buckets
/// that do not exist are not cached (the cache holds real buckets only).
async fn rules(gw: &Gateway, bucket: &str) -> S3Result<Option<Arc<Vec<CorsRule>>>> {
    if !super::bucket::valid_bucket_name(bucket) {
        return Ok(None);
    }
    if let Some(r) = gw.cors.get(bucket) {
        return Ok(r);
    }
    let rules = match gw
        .master
        .read(MetaRead::GetCors {
            bucket: bucket.to_string(),
        })
        .await
    {
        Ok(MetaReply::Cors(r)) => Some(Arc::new(r)),
        Ok(_) => return Err(S3Error::internal("unexpected reply to GetCors")),
        Err(MetaError::NoSuchBucket) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    gw.cors.put(bucket, rules.clone());
    Ok(rules)
}

fn bad_request(message: impl Into<String>) -> S3Error {
    S3Error::new("BadRequest", 400, message)
}

fn forbidden(message: &str) -> S3Error {
    S3Error::new("AccessForbidden", 403, message)
}

/// `s` matches `pattern`, which may hold one `*` standing for any run of characters.
fn wildcard_match(pattern: &str, s: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == s,
        Some((head, tail)) => {
            s.len() >= head.len() + tail.len() && s.starts_with(head) && s.ends_with(tail)
        }
    }
}

/// The first rule allowing `origin` to make a `method` request with `headers` (lowercase).
pub fn find_rule<'a>(
    rules: &'a [CorsRule],
    origin: &str,
    method: &str,
    headers: &[String],
) -> Option<&'a CorsRule> {
    rules.iter().find(|r| {
        r.allowed_origins.iter().any(|o| wildcard_match(o, origin))
            && r.allowed_methods.iter().any(|m| m == method)
            && headers.iter().all(|h| {
                r.allowed_headers
                    .iter()
                    .any(|a| wildcard_match(&a.to_ascii_lowercase(), h))
            })
    })
}

/// The `Access-Control-*` headers a matched rule gives an answer to `origin`.
fn allow_headers(rule: &CorsRule, origin: &str, out: &mut HeaderMap) {
    let mut set = |name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            out.insert(name, v);
        }
    };
    // A rule for any origin answers `*` (and then credentials cannot be allowed).
    let any = rule.allowed_origins.iter().any(|o| o == "*");
    set(
        "access-control-allow-origin",
        if any { "*" } else { origin },
    );
    if !any {
        set("access-control-allow-credentials", "true");
    }
    set(
        "access-control-allow-methods",
        &rule.allowed_methods.join(", "),
    );
    if !rule.expose_headers.is_empty() {
        set(
            "access-control-expose-headers",
            &rule.expose_headers.join(", "),
        );
    }
    if let Some(age) = rule.max_age_seconds {
        set("access-control-max-age", &age.to_string());
    }
    set("vary", VARY);
}

/// Answers a preflight request (`OPTIONS`): 200 with the first matching rule's
/// `Access-Control-Allow-*` headers, or 403 when no rule allows the request.
pub async fn preflight(
    gw: &Gateway,
    headers: &HeaderMap,
    bucket: Option<&str>,
    key: Option<&str>,
) -> S3Result<Response> {
    let text = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).map(str::trim);
    let origin = text("origin")
        .filter(|o| !o.is_empty())
        .ok_or_else(|| bad_request("Insufficient information. Origin request header needed."))?;
    let method = text("access-control-request-method").unwrap_or("");
    if !METHODS.contains(&method) {
        return Err(bad_request(format!(
            "Invalid Access-Control-Request-Method: {method}"
        )));
    }
    let requested: Vec<String> = text("access-control-request-headers")
        .unwrap_or("")
        .split(',')
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty())
        .collect();
    let not_enabled = || forbidden("CORSResponse: CORS is not enabled for this bucket.");
    let Some(bucket) = bucket else {
        return Err(not_enabled());
    };
    // A missing bucket answers as one without CORS, so preflights do not reveal bucket names.
    let rules = rules(gw, bucket).await?.unwrap_or_default();
    if rules.is_empty() {
        return Err(not_enabled());
    }
    let Some(rule) = find_rule(&rules, origin, method, &requested) else {
        return Err(forbidden(
            "CORSResponse: This CORS request is not allowed. This is usually because the evalution of Origin, request method / Access-Control-Request-Method or Access-Control-Request-Headers are not whitelisted by the resource's CORS spec.",
        )
        .with("Method", method)
        .with("ResourceType", if key.is_some() { "OBJECT" } else { "BUCKET" }));
    };
    let mut response = Response::new(Body::empty());
    allow_headers(rule, origin, response.headers_mut());
    if !requested.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&requested.join(", ")) {
            response
                .headers_mut()
                .insert("access-control-allow-headers", v);
        }
    }
    Ok(response)
}

/// What an actual request needs for its CORS headers: its `Origin`, bucket and method.
pub struct ActualRequest {
    origin: String,
    bucket: String,
    method: Method,
}

/// The CORS part of a request that carries an `Origin` and names a bucket (not a preflight).
pub fn actual_request(
    headers: &HeaderMap,
    method: &Method,
    bucket: Option<&str>,
) -> Option<ActualRequest> {
    if *method == Method::OPTIONS {
        return None;
    }
    let origin = headers.get("origin")?.to_str().ok()?.trim();
    Some(ActualRequest {
        origin: origin.to_string(),
        bucket: bucket?.to_string(),
        method: method.clone(),
    })
}

/// Adds the `Access-Control-*` headers of the first rule matching an actual request to its
/// answer, errors included (so that a page can read why a request failed). Without a matching
/// rule (or when the rules cannot be read now) the answer is left alone.
pub async fn decorate(gw: &Gateway, req: &ActualRequest, response: &mut Response) {
    let Ok(Ok(Some(rules))) = tokio::time::timeout(DECORATE_TIMEOUT, rules(gw, &req.bucket)).await
    else {
        return;
    };
    if let Some(rule) = find_rule(&rules, &req.origin, req.method.as_str(), &[]) {
        allow_headers(rule, &req.origin, response.headers_mut());
    } else if !rules.is_empty() {
        // The answer depends on the origin even when none matched: shared caches must not
        // serve it to another origin.
        response
            .headers_mut()
            .insert("vary", axum::http::HeaderValue::from_static(VARY));
    }
}

/// Parses a `CORSConfiguration` document into rules, validating it as S3 does.
pub fn parse_configuration(body: &[u8]) -> S3Result<Vec<CorsRule>> {
    let root = parse_tree(body)?;
    if root.name != "CORSConfiguration" {
        return Err(S3Error::malformed_xml());
    }
    root.check_container()?;
    if root.children.is_empty() || root.children.iter().any(|c| c.name != "CORSRule") {
        return Err(S3Error::malformed_xml());
    }
    if root.children.len() > MAX_CORS_RULES {
        return Err(S3Error::new(
            "MalformedXML",
            400,
            format!("A CORS configuration may have at most {MAX_CORS_RULES} rules"),
        ));
    }
    root.children.iter().map(parse_rule).collect()
}

fn parse_rule(node: &Node) -> S3Result<CorsRule> {
    node.check_container()?;
    let mut rule = CorsRule::default();
    let mut max_age = None;
    for c in &node.children {
        let text = c.leaf()?.trim().to_string();
        match c.name.as_str() {
            "ID" => {
                if rule.id.replace(text.clone()).is_some() {
                    return Err(S3Error::malformed_xml());
                }
                if text.chars().count() > MAX_RULE_ID_LEN {
                    return Err(S3Error::invalid_argument(
                        "The ID of a CORS rule is at most 255 characters",
                    ));
                }
            }
            "AllowedOrigin" => {
                if text.matches('*').count() > 1 {
                    return Err(S3Error::invalid_request(format!(
                        "AllowedOrigin \"{text}\" can not have more than one wildcard."
                    )));
                }
                rule.allowed_origins.push(text);
            }
            "AllowedMethod" => {
                if !METHODS.contains(&text.as_str()) {
                    return Err(S3Error::invalid_request(format!(
                        "Found unsupported HTTP method in CORS config. Unsupported method is {text}"
                    )));
                }
                rule.allowed_methods.push(text);
            }
            "AllowedHeader" => {
                if text.matches('*').count() > 1 {
                    return Err(S3Error::invalid_request(format!(
                        "AllowedHeader \"{text}\" can not have more than one wildcard."
                    )));
                }
                rule.allowed_headers.push(text);
            }
            "ExposeHeader" => rule.expose_headers.push(text),
            "MaxAgeSeconds" => {
                let n: u32 = text.parse().map_err(|_| S3Error::malformed_xml())?;
                if max_age.replace(n).is_some() {
                    return Err(S3Error::malformed_xml());
                }
            }
            _ => return Err(S3Error::malformed_xml()),
        }
    }
    rule.max_age_seconds = max_age;
    if rule.allowed_origins.is_empty() || rule.allowed_methods.is_empty() {
        return Err(S3Error::malformed_xml());
    }
    Ok(rule)
}

/// The `CORSConfiguration` document of a bucket's rules.
pub fn render(rules: &[CorsRule]) -> String {
    let mut out = xml::doc("CORSConfiguration");
    for r in rules {
        out.push_str("<CORSRule>");
        if let Some(id) = &r.id {
            elem(&mut out, "ID", id);
        }
        for (name, values) in [
            ("AllowedHeader", &r.allowed_headers),
            ("AllowedMethod", &r.allowed_methods),
            ("AllowedOrigin", &r.allowed_origins),
            ("ExposeHeader", &r.expose_headers),
        ] {
            for v in values {
                elem(&mut out, name, v);
            }
        }
        if let Some(age) = r.max_age_seconds {
            elem(&mut out, "MaxAgeSeconds", &age.to_string());
        }
        out.push_str("</CORSRule>");
    }
    out.push_str("</CORSConfiguration>");
    out
}

/// PutBucketCors: replaces the bucket's rules.
pub async fn put(gw: &Gateway, mut req: S3Request) -> S3Result<Response> {
    let bucket = req.bucket()?.to_string();
    let body = read_verified_body(&mut req).await?;
    let rules = parse_configuration(&body)?;
    gw.master
        .write(MetaWrite::PutCors {
            bucket: bucket.clone(),
            rules,
        })
        .await
        .map_err(|e| S3Error::from(e).with("BucketName", &bucket))?;
    gw.cors.forget(&bucket);
    Ok(Response::builder().body(Body::empty()).unwrap_or_default())
}

/// GetBucketCors: the rules as they were put (404 NoSuchCORSConfiguration when none).
pub async fn get(gw: &Gateway, req: &S3Request) -> S3Result<Response> {
    let bucket = req.bucket()?;
    let reply = gw
        .master
        .read(MetaRead::GetCors {
            bucket: bucket.to_string(),
        })
        .await
        .map_err(|e| S3Error::from(e).with("BucketName", bucket))?;
    let MetaReply::Cors(rules) = reply else {
        return Err(S3Error::internal("unexpected reply to GetCors"));
    };
    if rules.is_empty() {
        return Err(S3Error::new(
            "NoSuchCORSConfiguration",
            404,
            "The CORS configuration does not exist",
        )
        .with("BucketName", bucket));
    }
    Ok(xml_response(render(&rules)))
}

/// DeleteBucketCors: 204, also when the bucket had no configuration (as on S3).
pub async fn delete(gw: &Gateway, req: &S3Request) -> S3Result<Response> {
    let bucket = req.bucket()?;
    gw.master
        .write(MetaWrite::DeleteCors {
            bucket: bucket.to_string(),
        })
        .await
        .map_err(|e| S3Error::from(e).with("BucketName", bucket))?;
    gw.cors.forget(bucket);
    Ok(Response::builder()
        .status(204)
        .body(Body::empty())
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &[u8] = br#"<CORSConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
        <CORSRule><ID>site</ID><AllowedOrigin>https://*.example.com</AllowedOrigin>
          <AllowedMethod>GET</AllowedMethod><AllowedMethod>PUT</AllowedMethod>
          <AllowedHeader>x-amz-*</AllowedHeader><AllowedHeader>Content-Type</AllowedHeader>
          <ExposeHeader>ETag</ExposeHeader><MaxAgeSeconds>600</MaxAgeSeconds></CORSRule>
        <CORSRule><AllowedOrigin>*</AllowedOrigin><AllowedMethod>GET</AllowedMethod></CORSRule>
        </CORSConfiguration>"#;

    #[test]
    fn configurations_parse_validate_and_render() {
        let rules = parse_configuration(DOC).unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0].id.as_deref(), Some("site"));
        assert_eq!(rules[0].allowed_methods, ["GET", "PUT"]);
        assert_eq!(rules[0].max_age_seconds, Some(600));
        assert_eq!(
            parse_configuration(render(&rules).as_bytes()).unwrap(),
            rules
        );
        let code = |doc: &str| {
            parse_configuration(doc.as_bytes())
                .err()
                .map(|e| e.code)
                .unwrap_or("")
        };
        let rule = |inner: &str| {
            format!("<CORSConfiguration><CORSRule>{inner}</CORSRule></CORSConfiguration>")
        };
        assert_eq!(code("<CORSConfiguration/>"), "MalformedXML");
        assert_eq!(
            code(&rule("<AllowedMethod>GET</AllowedMethod>")),
            "MalformedXML"
        );
        assert_eq!(
            code(&rule("<AllowedOrigin>*</AllowedOrigin>")),
            "MalformedXML"
        );
        assert_eq!(
            code(&rule(
                "<AllowedOrigin>*</AllowedOrigin><AllowedMethod>PATCH</AllowedMethod>"
            )),
            "InvalidRequest"
        );
        assert_eq!(
            code(&rule(
                "<AllowedOrigin>*.*</AllowedOrigin><AllowedMethod>GET</AllowedMethod>"
            )),
            "InvalidRequest"
        );
        assert_eq!(
            code(&rule(
                "<AllowedOrigin>*</AllowedOrigin><AllowedMethod>GET</AllowedMethod><Bogus/>"
            )),
            "MalformedXML"
        );
        let many = format!(
            "<CORSConfiguration>{}</CORSConfiguration>",
            "<CORSRule><AllowedOrigin>*</AllowedOrigin><AllowedMethod>GET</AllowedMethod></CORSRule>"
                .repeat(MAX_CORS_RULES + 1)
        );
        assert_eq!(code(&many), "MalformedXML");
    }

    #[test]
    fn the_first_matching_rule_answers() {
        let rules = parse_configuration(DOC).unwrap();
        let h = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let site = find_rule(
            &rules,
            "https://app.example.com",
            "PUT",
            &h(&["x-amz-date", "content-type"]),
        );
        assert_eq!(site.and_then(|r| r.id.as_deref()), Some("site"));
        // A header the first rule does not allow: no rule (the second allows GET only, no headers).
        assert!(find_rule(
            &rules,
            "https://app.example.com",
            "PUT",
            &h(&["authorization"])
        )
        .is_none());
        // Another origin falls through to the catch-all rule, for GET only.
        let any = find_rule(&rules, "http://other.org", "GET", &[]).unwrap();
        assert_eq!(any.allowed_origins, ["*"]);
        assert!(find_rule(&rules, "http://other.org", "PUT", &[]).is_none());
        assert!(wildcard_match(
            "https://*.example.com",
            "https://a.b.example.com"
        ));
        assert!(!wildcard_match(
            "https://*.example.com",
            "https://example.com"
        ));
        assert!(wildcard_match("*", ""));
    }
}
