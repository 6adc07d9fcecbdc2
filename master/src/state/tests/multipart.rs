//! Completing multipart uploads: part checks, idempotence, conditions.

use super::*;

/// An upload `id` of key `k` with one small part (chunk `chunk`), tagged `t=1`.
fn one_part_upload(s: &mut State, id: &str, chunk: u128) -> String {
    let attrs = ObjectAttrs {
        tags: vec![("t".into(), "1".into())],
        ..Default::default()
    };
    s.apply(&cmd(
        Op::CreateUpload {
            upload_id: id.into(),
            bucket: "b".into(),
            key: "k".into(),
            attrs,
            initiator: String::new(),
        },
        2,
    ));
    let etag = hex::encode(Md5::digest(id.as_bytes()));
    let r = s.apply(&cmd(
        meta(MetaWrite::PutPart {
            bucket: "b".into(),
            key: "k".into(),
            upload_id: id.into(),
            number: 1,
            part: PartRecord {
                size: 1,
                etag: etag.clone(),
                last_modified_ms: 0,
                checksums: vec![],
                chunks: vec![ChunkMeta {
                    id: cid(chunk),
                    len: 1,
                    crc32c: 0,
                }],
            },
        }),
        3,
    ));
    assert!(r.0.is_ok(), "{r:?}");
    etag
}

fn complete_with(id: &str, etag: &str, condition: Option<WriteCondition>) -> Command {
    cmd(
        meta(MetaWrite::CompleteUpload {
            bucket: "b".into(),
            key: "k".into(),
            upload_id: id.into(),
            parts: vec![(1, etag.into())],
            checksums: vec![],
            condition,
        }),
        5,
    )
}

#[test]
fn multipart_complete_checks_parts_and_is_idempotent() {
    let mut s = bucket();
    s.apply(&cmd(
        Op::CreateUpload {
            upload_id: "u".into(),
            bucket: "b".into(),
            key: "k".into(),
            attrs: ObjectAttrs::default(),
            initiator: String::new(),
        },
        2,
    ));
    let md5a = hex::encode(Md5::digest(b"a"));
    for (n, size) in [(1u32, MIN_PART_SIZE), (2, 3)] {
        s.apply(&cmd(
            meta(MetaWrite::PutPart {
                bucket: "b".into(),
                key: "k".into(),
                upload_id: "u".into(),
                number: n,
                part: PartRecord {
                    size,
                    etag: md5a.clone(),
                    last_modified_ms: 0,
                    checksums: vec![],
                    chunks: vec![ChunkMeta {
                        id: cid(n as u128),
                        len: size,
                        crc32c: 0,
                    }],
                },
            }),
            3,
        ));
    }
    let complete = |parts: Vec<(u32, String)>| {
        cmd(
            meta(MetaWrite::CompleteUpload {
                bucket: "b".into(),
                key: "k".into(),
                upload_id: "u".into(),
                parts,
                checksums: vec![("CRC32".into(), "AAAAAA==-2".into())],
                condition: None,
            }),
            4,
        )
    };
    let bad = s.apply(&complete(vec![(2, md5a.clone()), (1, md5a.clone())]));
    assert_eq!(bad.0, Err(MetaError::InvalidPartOrder));
    let bad = s.apply(&complete(vec![(1, "0".repeat(32))]));
    assert!(matches!(bad.0, Err(MetaError::InvalidPart(_))));
    let parts = vec![(1, md5a.clone()), (2, format!("\"{md5a}\""))];
    let good = s.apply(&complete(parts.clone()));
    let mut both = hex::decode(&md5a).unwrap();
    both.extend(hex::decode(&md5a).unwrap());
    let want = format!("{}-2", hex::encode(Md5::digest(&both)));
    let checksums = vec![("CRC32".to_string(), "AAAAAA==-2".to_string())];
    assert_eq!(
        good.0,
        Ok(MetaReplyKind::Meta(MetaReplyData::Completed {
            etag: want.clone(),
            last_modified_ms: 4,
            checksums: checksums.clone(),
        }))
    );
    let rec = &s.buckets["b"].objects["k"].to_record();
    assert_eq!(rec.size, MIN_PART_SIZE + 3);
    assert_eq!(rec.chunks.len(), 2);
    assert_eq!(rec.checksums, checksums);
    assert_eq!(s.apply(&complete(parts)).0, good.0);
}

#[test]
fn conditional_complete_is_checked_when_applied() {
    let mut s = bucket();
    let none_match = Some(WriteCondition {
        if_match: None,
        if_none_match: true,
        ..Default::default()
    });
    // If-Match on a missing key: NoSuchKey; If-None-Match: * on a missing key: done.
    let e1 = one_part_upload(&mut s, "u1", 1);
    let if_match = |etag: &str| {
        Some(WriteCondition {
            if_match: Some(etag.into()),
            if_none_match: false,
            ..Default::default()
        })
    };
    let r = s.apply(&complete_with("u1", &e1, if_match("x")));
    assert_eq!(r.0, Err(MetaError::NoSuchKey));
    let r = s.apply(&complete_with("u1", &e1, none_match.clone()));
    assert!(r.0.is_ok(), "{r:?}");
    let etag1 = s.buckets["b"].objects["k"].to_record().etag.clone();
    assert_eq!(
        s.buckets["b"].objects["k"].to_record().tags,
        [("t".into(), "1".into())]
    );
    // The key exists now: If-None-Match fails and the upload stays, If-Match decides.
    let e2 = one_part_upload(&mut s, "u2", 2);
    let r = s.apply(&complete_with("u2", &e2, none_match.clone()));
    assert_eq!(r.0, Err(MetaError::PreconditionFailed));
    assert!(s.uploads.contains_key("u2"));
    let r = s.apply(&complete_with("u2", &e2, if_match("other")));
    assert_eq!(r.0, Err(MetaError::PreconditionFailed));
    let r = s.apply(&complete_with("u2", &e2, if_match(&etag1)));
    assert!(r.0.is_ok(), "{r:?}");
    // A repeat of a completed upload answers again without looking at the condition.
    assert_eq!(
        s.apply(&complete_with("u2", &e2, none_match)).0,
        r.0,
        "a repeated Complete succeeds"
    );
}
