//! Listings: objects with delimiters and pages against a naive model, multipart uploads.

use super::*;

/// The listing rules written the slow, obvious way.
fn naive(
    keys: &[String],
    prefix: &str,
    delim: Option<&str>,
    after: Option<&str>,
    max: usize,
) -> (Vec<String>, bool) {
    let mut items: Vec<String> = Vec::new();
    for k in keys {
        if !k.starts_with(prefix) || after.is_some_and(|a| k.as_str() <= a) {
            continue;
        }
        let item = match delim.and_then(|d| {
            k[prefix.len()..]
                .find(d)
                .map(|p| k[..prefix.len() + p + d.len()].to_string())
        }) {
            Some(cp) => cp,
            None => k.clone(),
        };
        if Some(item.as_str()) == after || items.last() == Some(&item) {
            continue;
        }
        items.push(item);
    }
    let truncated = items.len() > max;
    items.truncate(max);
    (items, truncated)
}

fn upload(s: &mut State, id: &str, key: &str, t: u64) {
    let r = s.apply(&cmd(
        Op::CreateUpload {
            upload_id: id.into(),
            bucket: "b".into(),
            key: key.into(),
            attrs: ObjectAttrs::default(),
            initiator: String::new(),
        },
        t,
    ));
    assert!(r.0.is_ok(), "{r:?}");
}

fn uploads(
    s: &State,
    prefix: &str,
    delim: Option<&str>,
    markers: (Option<&str>, Option<&str>),
    max: usize,
) -> UploadPage {
    s.list_uploads(&UploadQuery {
        bucket: "b".into(),
        prefix: prefix.into(),
        delimiter: delim.map(String::from),
        key_marker: markers.0.map(String::from),
        upload_id_marker: markers.1.map(String::from),
        max_uploads: max,
    })
    .unwrap()
}

fn names(p: &UploadPage) -> Vec<String> {
    p.uploads
        .iter()
        .map(|u| format!("{}@{}", u.key, u.upload_id))
        .chain(p.common_prefixes.iter().cloned())
        .collect()
}

#[test]
fn multipart_uploads_list_by_key_then_initiation() {
    let mut s = bucket();
    // Ids in an order unlike initiation time: the listing must follow the time.
    upload(&mut s, "z1", "k", 10);
    upload(&mut s, "a2", "k", 20);
    upload(&mut s, "m3", "a/x", 30);
    upload(&mut s, "b4", "a/y", 40);
    upload(&mut s, "c5", "b", 50);
    upload(&mut s, "d6", "k", 60);
    let all = uploads(&s, "", None, (None, None), 1000);
    assert_eq!(
        names(&all),
        ["a/x@m3", "a/y@b4", "b@c5", "k@z1", "k@a2", "k@d6"]
    );
    assert!(!all.truncated);
    assert_eq!(all.uploads[3].initiated_ms, 10);
    let p = uploads(&s, "", Some("/"), (None, None), 1000);
    assert_eq!(names(&p), ["b@c5", "k@z1", "k@a2", "k@d6", "a/"]);
    assert_eq!(
        names(&uploads(&s, "a/", Some("/"), (None, None), 9)),
        ["a/x@m3", "a/y@b4"]
    );
    // Pages of two with the markers a client sends back.
    let p1 = uploads(&s, "", None, (None, None), 2);
    assert!(p1.truncated);
    assert_eq!(
        (
            p1.next_key_marker.as_deref(),
            p1.next_upload_id_marker.as_deref()
        ),
        (Some("a/y"), Some("b4"))
    );
    let p2 = uploads(&s, "", None, (Some("a/y"), Some("b4")), 2);
    assert_eq!(names(&p2), ["b@c5", "k@z1"]);
    let p3 = uploads(&s, "", None, (Some("k"), Some("z1")), 2);
    assert_eq!(names(&p3), ["k@a2", "k@d6"]);
    assert!(!p3.truncated);
    // A key marker alone starts after every upload of that key; an upload id marker alone
    // is ignored.
    assert_eq!(
        names(&uploads(&s, "", None, (Some("b"), None), 9)),
        ["k@z1", "k@a2", "k@d6"]
    );
    assert_eq!(
        uploads(&s, "", None, (None, Some("z1")), 9).uploads.len(),
        6
    );
    // An upload id marker naming no upload: ids greater than it, as S3 documents.
    assert_eq!(
        names(&uploads(&s, "", None, (Some("k"), Some("b0")), 9)),
        ["k@z1", "k@d6"]
    );
    // A page ending with a common prefix continues after every key under it.
    let d1 = uploads(&s, "", Some("/"), (None, None), 1);
    assert_eq!((names(&d1), d1.truncated), (vec!["a/".to_string()], true));
    assert_eq!(d1.next_key_marker.as_deref(), Some("a/"));
    assert_eq!(d1.next_upload_id_marker, None);
    let d2 = uploads(&s, "", Some("/"), (Some("a/"), None), 1);
    assert_eq!(names(&d2), ["b@c5"]);
    assert!(uploads(&s, "", None, (None, None), 0).uploads.is_empty());
    // Other buckets' uploads are not listed; a missing bucket is an error.
    s.apply(&cmd(
        meta(MetaWrite::CreateBucket {
            bucket: "c".into(),
            owner: "me".into(),
        }),
        70,
    ));
    let other = s.list_uploads(&UploadQuery {
        bucket: "c".into(),
        max_uploads: 10,
        ..Default::default()
    });
    assert!(other.unwrap().uploads.is_empty());
    let missing = s.list_uploads(&UploadQuery {
        bucket: "nope".into(),
        max_uploads: 10,
        ..Default::default()
    });
    assert_eq!(missing.unwrap_err(), MetaError::NoSuchBucket);
}

#[test]
fn listing_with_delimiter_and_pages() {
    let mut s = bucket();
    for (i, k) in ["a/1", "a/2", "b", "c/x/y", "c/z", "d"].iter().enumerate() {
        put(&mut s, k, 100 + i as u64);
    }
    let p = list(&s, "", Some("/"), None, 1000);
    assert_eq!(p.common_prefixes, vec!["a/", "c/"]);
    assert_eq!(
        p.entries.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(),
        ["b", "d"]
    );
    assert!(!p.truncated);
    // Pages of two: a/ + b, then c/ + d.
    let p1 = list(&s, "", Some("/"), None, 2);
    assert!(p1.truncated);
    assert_eq!(p1.next_after.as_deref(), Some("b"));
    let p2 = list(&s, "", Some("/"), Some("b"), 2);
    assert_eq!(p2.common_prefixes, vec!["c/"]);
    assert_eq!(p2.entries[0].key, "d");
    assert!(!p2.truncated);
    // Continuing after a common prefix skips the keys under it.
    let p3 = list(&s, "", Some("/"), Some("a/"), 1);
    assert_eq!(p3.entries[0].key, "b");
    let p4 = list(&s, "c/", Some("/"), None, 10);
    assert_eq!(p4.common_prefixes, vec!["c/x/"]);
    assert_eq!(p4.entries[0].key, "c/z");
    assert!(list(&s, "", None, None, 0).entries.is_empty());
    assert_eq!(successor("a/"), Some("a0".to_string()));
    assert_eq!(successor("a\u{10FFFF}"), Some("b".to_string()));
    assert_eq!(successor("\u{D7FF}"), Some("\u{E000}".to_string()));
    assert_eq!(successor(""), None);
}

#[test]
fn listing_matches_the_naive_rules_on_random_keys() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let alphabet = ["a", "b", "/", "-", "é"];
    for round in 0..200 {
        let mut s = bucket();
        let mut keys: Vec<String> = (0..rng.gen_range(0..40))
            .map(|_| {
                (0..rng.gen_range(1..6))
                    .map(|_| alphabet[rng.gen_range(0..alphabet.len())])
                    .collect()
            })
            .collect();
        keys.sort();
        keys.dedup();
        for (i, k) in keys.iter().enumerate() {
            put(&mut s, k, 1000 + i as u64);
        }
        let prefix: String = (0..rng.gen_range(0..2))
            .map(|_| alphabet[rng.gen_range(0..2)])
            .collect();
        let delim = [None, Some("/"), Some("-")][rng.gen_range(0..3)];
        let max = rng.gen_range(1..6);
        // Walk all pages the way a client does, and compare each page.
        let mut after: Option<String> = None;
        for _ in 0..100 {
            let page = list(&s, &prefix, delim, after.as_deref(), max);
            let (want, want_trunc) = naive(&keys, &prefix, delim, after.as_deref(), max);
            let mut got: Vec<String> = page
                .entries
                .iter()
                .map(|e| e.key.clone())
                .chain(page.common_prefixes.iter().cloned())
                .collect();
            got.sort();
            let mut want_sorted = want.clone();
            want_sorted.sort();
            assert_eq!(
                got, want_sorted,
                "round {round}, prefix {prefix:?}, delim {delim:?}, after {after:?}"
            );
            assert_eq!(page.truncated, want_trunc, "round {round}");
            if !page.truncated {
                break;
            }
            after = page.next_after.clone();
        }
    }
}
