//! Property tests of the gateway's parsers of untrusted input: the S3 XML request documents,
//! the `Range` header, `multipart/form-data` bodies and POST policies. Random and mutated
//! input must never panic and is refused as the client's error (4xx); well-formed input
//! round-trips through the encoders. (The signature
//! code has its own in `auth/proptests.rs`.) Case counts are kept moderate (CI runs them): the whole set takes a few seconds.

use crate::auth::policy;
use crate::form::{Event, FormParser, PartHead};
use crate::s3::lifecycle;
use crate::s3::object::{parse_range, resolve_range, Range};
use crate::xml::{self, elem};
use proptest::prelude::*;
use tinydfs_proto::meta::LifecycleRule;

// ---- XML documents ----

/// Fragments of S3 request documents, to build XML-ish input that goes deeper into the parsers
/// than random bytes do.
fn xml_fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("<Delete>".to_string()),
        Just("</Delete>".to_string()),
        Just("<Object><Key>".to_string()),
        Just("</Key></Object>".to_string()),
        Just("<Quiet>true</Quiet>".to_string()),
        Just("<CompleteMultipartUpload>".to_string()),
        Just("</CompleteMultipartUpload>".to_string()),
        Just("<Part><PartNumber>".to_string()),
        Just("</PartNumber><ETag>".to_string()),
        Just("</ETag></Part>".to_string()),
        Just("<LifecycleConfiguration><Rule>".to_string()),
        Just("</Rule></LifecycleConfiguration>".to_string()),
        Just("<Status>Enabled</Status><Filter><Prefix>".to_string()),
        Just("</Prefix></Filter><Expiration><Days>".to_string()),
        Just("</Days></Expiration>".to_string()),
        Just("<![CDATA[".to_string()),
        Just("]]>".to_string()),
        Just("<!-- c -->".to_string()),
        Just("<?xml version=\"1.0\"?>".to_string()),
        Just("<!DOCTYPE x [<!ENTITY e \"&e;&e;\">]>".to_string()),
        "&(amp|lt|gt|quot|apos|#x[0-9a-fA-F]{1,6}|#[0-9]{1,8}|[a-z]{1,4});",
        "[ -~]{0,8}",
        "[0-9-]{1,12}",
    ]
}

/// Every XML request parser on `doc`: how each refused it (`None`: accepted).
fn parse_all(doc: &[u8]) -> Vec<Option<crate::error::S3Error>> {
    vec![
        xml::parse::<xml::Delete>(doc).err().map(Into::into),
        xml::parse_delete(doc).err().map(Into::into),
        xml::parse::<xml::CompleteMultipartUpload>(doc)
            .err()
            .map(Into::into),
        xml::parse::<xml::CreateBucketConfiguration>(doc)
            .err()
            .map(Into::into),
        lifecycle::parse_configuration(doc).err(),
    ]
}

/// Bad input is the client's error: every refusal of `doc` is a 4xx, never a 500.
fn refusals_are_client_errors(doc: &[u8]) -> Result<(), TestCaseError> {
    for e in parse_all(doc).into_iter().flatten() {
        prop_assert!(
            e.status.is_client_error(),
            "{} ({}) for {:?}",
            e.code,
            e.status,
            String::from_utf8_lossy(doc)
        );
    }
    Ok(())
}

/// Text for keys, IDs and prefixes: XML specials, non-ASCII and a control character.
fn doc_text() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            4 => "[a-zA-Z0-9/._-]",
            1 => "[<>&'\" ]",
            1 => "[é日🦀\t]",
        ],
        1..20,
    )
    .prop_map(|v| v.concat())
}

fn rule() -> impl Strategy<Value = LifecycleRule> {
    (
        doc_text(),
        any::<bool>(),
        proptest::option::of(doc_text()),
        any::<bool>(),
        0u8..4,
        1u32..=i32::MAX as u32,
        0u64..60_000,
        proptest::option::of(1u32..=i32::MAX as u32),
        any::<bool>(),
    )
        .prop_map(
            |(id, enabled, prefix, legacy, exp, days, date, abort, marker)| {
                let mut r = LifecycleRule {
                    id: Some(id),
                    enabled,
                    legacy_prefix: legacy && prefix.is_some(),
                    prefix,
                    abort_incomplete_days: abort,
                    ..Default::default()
                };
                match exp {
                    0 => r.expiration_days = Some(days),
                    1 => r.expiration_date_ms = Some(date * 86_400_000),
                    2 => r.expired_object_delete_marker = Some(marker),
                    _ if r.abort_incomplete_days.is_none() => r.expiration_days = Some(days),
                    _ => {}
                }
                r
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn xml_random_bytes_are_refused_as_client_errors(doc in proptest::collection::vec(any::<u8>(), 0..300)) {
        refusals_are_client_errors(&doc)?;
    }

    #[test]
    fn xml_fragments_are_refused_as_client_errors(parts in proptest::collection::vec(xml_fragment(), 0..24)) {
        refusals_are_client_errors(parts.concat().as_bytes())?;
    }

    #[test]
    fn xml_mutated_documents_are_refused_as_client_errors(
        rules in proptest::collection::vec(rule(), 1..4),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 1..6),
    ) {
        let mut doc = lifecycle::render(&rules).into_bytes();
        for (at, byte, kind) in edits {
            let at = at % (doc.len() + 1);
            match kind {
                0 if at < doc.len() => doc[at] = byte,
                1 => doc.insert(at, byte),
                _ if at < doc.len() => { doc.remove(at); }
                _ => {}
            }
        }
        refusals_are_client_errors(&doc)?;
    }

    #[test]
    fn lifecycle_documents_round_trip(rules in proptest::collection::vec(rule(), 1..6)) {
        let mut rules = rules;
        // IDs are unique in a valid document.
        let mut seen = std::collections::HashSet::new();
        rules.retain(|r| seen.insert(r.id.clone()));
        let doc = lifecycle::render(&rules);
        let parsed = lifecycle::parse_configuration(doc.as_bytes());
        prop_assert!(parsed.is_ok(), "{:?}\n{}", parsed.err(), doc);
        prop_assert_eq!(parsed.unwrap(), rules);
    }

    #[test]
    fn delete_and_complete_documents_round_trip(
        keys in proptest::collection::vec(doc_text(), 1..20),
        quiet in proptest::option::of(any::<bool>()),
        parts in proptest::collection::vec((1u32..=10_000, "[0-9a-f]{32}(-[0-9]{1,4})?"), 1..20),
    ) {
        let mut doc = xml::doc("Delete");
        for k in &keys {
            doc.push_str("<Object>");
            elem(&mut doc, "Key", k);
            doc.push_str("</Object>");
        }
        if let Some(q) = quiet {
            elem(&mut doc, "Quiet", &q.to_string());
        }
        doc.push_str("</Delete>");
        let d = xml::parse_delete(doc.as_bytes()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(d.objects.into_iter().map(|o| o.key).collect::<Vec<_>>(), keys);
        prop_assert_eq!(d.quiet, quiet);

        let mut doc = xml::doc("CompleteMultipartUpload");
        for (n, etag) in &parts {
            doc.push_str("<Part>");
            elem(&mut doc, "PartNumber", &n.to_string());
            elem(&mut doc, "ETag", &format!("\"{etag}\""));
            doc.push_str("</Part>");
        }
        doc.push_str("</CompleteMultipartUpload>");
        let c: xml::CompleteMultipartUpload =
            xml::parse(doc.as_bytes()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let got: Vec<(u32, String)> = c.parts.into_iter().map(|p| (p.number, p.etag)).collect();
        let want: Vec<(u32, String)> =
            parts.iter().map(|(n, e)| (*n, format!("\"{e}\""))).collect();
        prop_assert_eq!(got, want);
    }
}

// ---- Range header ----

/// The S3 reading of a `Range` header, written plainly: one `bytes=` range, else ignored.
fn model_range(v: &str) -> Option<Range> {
    let spec = v.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let dash = spec.find('-')?;
    let (a, b) = (spec[..dash].trim(), spec[dash + 1..].trim());
    let num = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    match (a.is_empty(), b.is_empty()) {
        (true, true) => None,
        (true, false) => num(b).map(Range::Suffix),
        (false, true) => num(a).map(|s| Range::From(s, None)),
        (false, false) => {
            let (s, e) = (num(a)?, num(b)?);
            (e >= s).then_some(Range::From(s, Some(e)))
        }
    }
}

fn model_resolve(r: &Range, size: u64) -> Option<(u64, u64)> {
    match *r {
        Range::From(s, _) if s >= size => None,
        Range::From(s, None) => Some((s, size)),
        Range::From(s, Some(e)) => Some((s, if e >= size - 1 { size } else { e + 1 })),
        Range::Suffix(0) => None,
        Range::Suffix(n) if n >= size => Some((0, size)),
        Range::Suffix(n) => Some((size - n, size)),
    }
}

fn range_header() -> impl Strategy<Value = String> {
    let num = prop_oneof![
        (0u64..100).prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        Just("18446744073709551616".to_string()),
        Just(String::new()),
        "[ +0-9a]{0,4}",
    ];
    (
        prop::sample::select(vec!["bytes=", "bytes =", "items=", " bytes=", ""]),
        num.clone(),
        prop::sample::select(vec!["-", "", "--", ",", "-,0-"]),
        num,
        prop::sample::select(vec!["", " ", ",5-6"]),
    )
        .prop_map(|(u, a, d, b, tail)| format!("{u}{a}{d}{b}{tail}"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn range_headers_agree_with_the_model(v in range_header(), size in 0u64..200) {
        let parsed = parse_range(&v);
        prop_assert_eq!(&parsed, &model_range(&v), "{}", v);
        if let Some(r) = parsed {
            let resolved = resolve_range(&r, size);
            prop_assert_eq!(resolved, model_resolve(&r, size));
            if let Some((start, end)) = resolved {
                prop_assert!(start <= end && end <= size);
            }
        }
    }

    #[test]
    fn range_random_text_resolves_within_the_object(v in "\\PC{0,30}", size in 0u64..20) {
        if let Some(r) = parse_range(&v) {
            if let Some((start, end)) = resolve_range(&r, size) {
                prop_assert!(start <= end && end <= size, "{} on {} bytes: {}..{}", v, size, start, end);
            }
        }
    }
}

// ---- multipart/form-data ----

/// Encodes parts as a browser does.
fn encode_form(boundary: &str, preamble: &str, parts: &[(PartHead, Vec<u8>)]) -> Vec<u8> {
    let mut out = preamble.as_bytes().to_vec();
    if !preamble.is_empty() {
        out.extend_from_slice(b"\r\n");
    }
    for (head, content) in parts {
        out.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        let mut disposition = format!("Content-Disposition: form-data; name=\"{}\"", head.name);
        if let Some(f) = &head.filename {
            disposition.push_str(&format!("; filename=\"{f}\""));
        }
        out.extend_from_slice(disposition.as_bytes());
        out.extend_from_slice(b"\r\n");
        if let Some(ct) = &head.content_type {
            out.extend_from_slice(format!("Content-Type: {ct}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(content);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    out
}

/// Decodes with the body cut into frames at `cuts`.
fn decode_form(
    boundary: &str,
    body: &[u8],
    cuts: &[usize],
) -> Result<Vec<(PartHead, Vec<u8>)>, crate::form::FormError> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c % (body.len() + 1)).collect();
    at.push(0);
    at.push(body.len());
    at.sort_unstable();
    let mut frames = at.windows(2).map(|w| &body[w[0]..w[1]]);
    let mut p = FormParser::new(boundary);
    let mut parts: Vec<(PartHead, Vec<u8>)> = Vec::new();
    loop {
        let before = p.consumed();
        let event = p.next_event()?;
        assert!(p.consumed() >= before, "consumed went back");
        match event {
            None => match frames.next() {
                Some(f) => p.push(f),
                None => p.finish(),
            },
            Some(Event::Part(h)) => parts.push((h, Vec::new())),
            Some(Event::Data(d)) => {
                assert!(!d.is_empty(), "empty data event");
                parts
                    .last_mut()
                    .expect("data inside a part")
                    .1
                    .extend_from_slice(&d)
            }
            Some(Event::PartEnd) => {}
            Some(Event::End) => return Ok(parts),
        }
    }
}

fn part() -> impl Strategy<Value = (PartHead, Vec<u8>)> {
    (
        "[a-zA-Z0-9_-]{1,12}",
        proptest::option::of("[a-zA-Z0-9 ._()-]{0,12}"),
        proptest::option::of("[a-z]{1,8}/[a-z0-9.+-]{1,8}"),
        proptest::collection::vec(
            prop_oneof![
                3 => any::<u8>(),
                1 => Just(b'\r'),
                1 => Just(b'\n'),
                1 => Just(b'-'),
            ],
            0..600,
        ),
    )
        .prop_map(|(name, filename, content_type, content)| {
            (
                PartHead {
                    name,
                    filename,
                    content_type,
                },
                content,
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn form_random_bytes_decode_the_same_however_they_arrive(
        body in proptest::collection::vec(any::<u8>(), 0..400),
        cuts in proptest::collection::vec(any::<usize>(), 0..5),
    ) {
        // decode_form itself asserts that the parser never goes back and never yields empty
        // data; how the body is cut into reads must not change what it decodes to.
        for boundary in ["b", "----WebKitFormBoundaryABC"] {
            prop_assert_eq!(
                decode_form(boundary, &body, &cuts).ok(),
                decode_form(boundary, &body, &[]).ok()
            );
        }
    }

    #[test]
    fn form_encodings_decode_to_their_parts(
        boundary in "[a-zA-Z0-9'()+_,./:=? -]{0,69}[a-zA-Z0-9]",
        preamble in "[ -~]{0,20}",
        parts in proptest::collection::vec(part(), 0..5),
        cuts in proptest::collection::vec(any::<usize>(), 0..6),
    ) {
        // A boundary never occurs in the content (browsers pick one that does not).
        let delimiter = format!("\r\n--{boundary}");
        let mut all = Vec::new();
        for (_, c) in &parts {
            all.extend_from_slice(b"\r\n");
            all.extend_from_slice(c);
            all.extend_from_slice(b"\r\n");
        }
        prop_assume!(!all.windows(delimiter.len()).any(|w| w == delimiter.as_bytes()));
        prop_assume!(!preamble.contains(&format!("--{boundary}")));
        let body = encode_form(&boundary, &preamble, &parts);
        let got = decode_form(&boundary, &body, &cuts);
        prop_assert_eq!(got, Ok(parts));
    }

    #[test]
    fn policies_refuse_with_their_own_errors(doc in "\\PC{0,200}", fields in proptest::collection::btree_map("[a-z-]{1,10}", "\\PC{0,10}", 0..6)) {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(&doc);
        for text in [b64.as_str(), doc.as_str()] {
            match policy::parse(text) {
                Ok(p) => {
                    if let Err(e) = p.check(&fields, std::time::SystemTime::now()) {
                        prop_assert_eq!(e.code(), "AccessDenied");
                    }
                }
                Err(e) => prop_assert_eq!(e.code(), "InvalidPolicyDocument"),
            }
        }
    }

    #[test]
    fn a_policy_accepts_exactly_the_forms_it_names(
        conditions in proptest::collection::btree_map("[a-z]{1,6}", ("[a-z0-9]{0,4}", any::<bool>()), 0..5),
        form in proptest::collection::btree_map("[a-z]{1,6}", "[a-z0-9]{0,4}", 0..5),
    ) {
        use base64::Engine;
        let listed: Vec<String> = conditions
            .iter()
            .map(|(name, (value, exact))| {
                if *exact {
                    format!("{{\"{name}\": \"{value}\"}}")
                } else {
                    format!("[\"starts-with\", \"${name}\", \"{value}\"]")
                }
            })
            .collect();
        let doc = format!(
            "{{\"expiration\": \"2999-01-01T00:00:00Z\", \"conditions\": [{}]}}",
            listed.join(",")
        );
        let b64 = base64::engine::general_purpose::STANDARD.encode(&doc);
        let p = policy::parse(&b64);
        prop_assert!(p.is_ok(), "{:?} for {}", p.err(), doc);
        let p = p.unwrap();
        let meets = conditions.iter().all(|(name, (value, exact))| {
            let got = form.get(name).map(String::as_str).unwrap_or("");
            if *exact { got == value } else { got.starts_with(value.as_str()) }
        });
        // The bucket and the fields a policy cannot name need no condition.
        let free = |f: &str| matches!(f, "bucket" | "policy" | "file");
        let named = form.keys().all(|f| free(f) || conditions.contains_key(f));
        let got = p.check(&form, std::time::SystemTime::now());
        prop_assert_eq!(got.is_ok(), meets && named, "{:?} for {} and {:?}", got, doc, form);
    }
}

/// A deeply nested document (2 MiB of `<a>`, the largest body read) is refused by every
/// parser when left open, and never a stack overflow.
#[test]
fn deeply_nested_documents_are_refused() {
    for wrapper in [
        "Delete",
        "CompleteMultipartUpload",
        "CreateBucketConfiguration",
        "X",
    ] {
        let depth = 200_000;
        let doc = format!("<{wrapper}>{}", "<a>".repeat(depth));
        let refused = parse_all(doc.as_bytes());
        assert!(refused.iter().all(Option::is_some), "{wrapper} open");
        let closed = format!(
            "<{wrapper}>{}{}</{wrapper}>",
            "<a>".repeat(depth),
            "</a>".repeat(depth)
        );
        // A well-formed one may be accepted where unknown elements are skipped; what is
        // refused is the client's error.
        for e in parse_all(closed.as_bytes()).into_iter().flatten() {
            assert!(e.status.is_client_error(), "{wrapper} closed: {}", e.code);
        }
    }
}

/// Inputs the random ones may miss.
#[test]
fn range_edge_cases_agree_with_the_model() {
    for v in [
        "bytes=+5-",
        "bytes=5-+6",
        "bytes=-+3",
        "bytes= 5 - 6 ",
        "bytes=-",
        "bytes=--1",
        "bytes=1--2",
        "bytes=18446744073709551615-",
        "bytes=18446744073709551616-",
        "bytes=0-0",
    ] {
        assert_eq!(parse_range(v), model_range(v), "{v}");
    }
}
