//! Unit tests of lifecycle configurations: what parses, what renders back, and what is refused
//! as S3 refuses it.

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
