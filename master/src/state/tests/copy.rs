//! CopyObject: shared chunks, self-copies, multipart sources, preconditions.

use super::*;

fn copy(src: (&str, &str), dst: (&str, &str)) -> MetaWrite {
    MetaWrite::CopyObject {
        src_bucket: src.0.into(),
        src_key: src.1.into(),
        dst_bucket: dst.0.into(),
        dst_key: dst.1.into(),
        attrs: None,
        source_condition: None,
        condition: None,
        tags: None,
    }
}

#[test]
fn a_copy_shares_the_chunks_and_outlives_its_source() {
    let mut s = bucket();
    s.apply(&cmd(
        meta(MetaWrite::CreateBucket {
            bucket: "c".into(),
            owner: "me".into(),
        }),
        2,
    ));
    put(&mut s, "src", 10);
    let r = s.apply(&cmd(meta(copy(("b", "src"), ("b", "dst"))), 20));
    assert_eq!(
        r.0,
        Ok(MetaReplyKind::Meta(MetaReplyData::Committed {
            etag: "e".into(),
            last_modified_ms: 20
        }))
    );
    assert!(s
        .apply(&cmd(meta(copy(("b", "src"), ("c", "other"))), 21))
        .0
        .is_ok());
    assert_eq!(refs(&s, 10), 3, "one chunk, three records");
    let dst = &s.buckets["b"].objects["dst"].to_record();
    assert_eq!(dst.chunks, s.buckets["b"].objects["src"].to_record().chunks);
    assert_eq!((dst.etag.as_str(), dst.last_modified_ms), ("e", 20));
    // The source goes; the copies keep the chunk.
    s.apply(&cmd(
        meta(MetaWrite::DeleteObject {
            bucket: "b".into(),
            key: "src".into(),
        }),
        22,
    ));
    assert_eq!(refs(&s, 10), 2);
    // A copy from a source deleted before the copy is applied finds nothing to share.
    let late = s.apply(&cmd(meta(copy(("b", "src"), ("b", "late"))), 23));
    assert_eq!(late.0, Err(MetaError::NoSuchKey));
    let no_bucket = s.apply(&cmd(meta(copy(("b", "dst"), ("nope", "x"))), 23));
    assert_eq!(no_bucket.0, Err(MetaError::NoSuchBucket));
    // Overwriting a copy releases its reference; copying over an object releases that
    // object's chunks.
    put(&mut s, "dst", 30);
    assert_eq!(refs(&s, 10), 1);
    assert!(s
        .apply(&cmd(meta(copy(("c", "other"), ("b", "dst"))), 31))
        .0
        .is_ok());
    assert_eq!(refs(&s, 30), 0);
    assert_eq!(refs(&s, 10), 2);
    for (b, k) in [("b", "dst"), ("c", "other")] {
        s.apply(&cmd(
            meta(MetaWrite::DeleteObject {
                bucket: b.into(),
                key: k.into(),
            }),
            32,
        ));
    }
    assert!(s.chunks.is_empty());
}

#[test]
fn a_copy_onto_itself_replaces_metadata_and_keeps_data() {
    let mut s = bucket();
    put(&mut s, "k", 10);
    let mut w = copy(("b", "k"), ("b", "k"));
    if let MetaWrite::CopyObject { attrs, tags, .. } = &mut w {
        *attrs = Some(ObjectAttrs {
            content_type: Some("text/plain".into()),
            user_meta: vec![("mtime".into(), "1700000000".into())],
            ..Default::default()
        });
        *tags = Some(vec![("t".into(), "1".into())]);
    }
    assert!(s.apply(&cmd(meta(w), 20)).0.is_ok());
    assert_eq!(
        refs(&s, 10),
        1,
        "references added before the old ones are dropped"
    );
    let rec = &s.buckets["b"].objects["k"].to_record();
    assert_eq!(rec.content_type.as_deref(), Some("text/plain"));
    assert_eq!(
        rec.user_meta,
        [("mtime".to_string(), "1700000000".to_string())]
    );
    assert_eq!(rec.tags, [("t".to_string(), "1".to_string())]);
    assert_eq!((rec.etag.as_str(), rec.last_modified_ms), ("e", 20));
}

#[test]
fn a_copy_of_a_multipart_object_keeps_its_parts_and_etag() {
    let mut s = bucket();
    s.apply(&cmd(
        Op::CreateUpload {
            upload_id: "u".into(),
            bucket: "b".into(),
            key: "mp".into(),
            attrs: ObjectAttrs::default(),
            initiator: String::new(),
        },
        2,
    ));
    for (n, size) in [(1u32, MIN_PART_SIZE), (2, 3)] {
        let r = s.apply(&cmd(
            meta(MetaWrite::PutPart {
                bucket: "b".into(),
                key: "mp".into(),
                upload_id: "u".into(),
                number: n,
                part: PartRecord {
                    size,
                    etag: format!("{n:032x}"),
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
        assert!(r.0.is_ok(), "{r:?}");
    }
    let parts = vec![(1, format!("{:032x}", 1)), (2, format!("{:032x}", 2))];
    let done = s.apply(&cmd(
        meta(MetaWrite::CompleteUpload {
            bucket: "b".into(),
            key: "mp".into(),
            upload_id: "u".into(),
            parts,
            checksums: Vec::new(),
            condition: None,
        }),
        4,
    ));
    assert!(done.0.is_ok(), "{done:?}");
    assert!(s
        .apply(&cmd(meta(copy(("b", "mp"), ("b", "cp"))), 5))
        .0
        .is_ok());
    let (src, dst) = (
        &s.buckets["b"].objects["mp"].to_record(),
        &s.buckets["b"].objects["cp"].to_record(),
    );
    assert!(dst.etag.ends_with("-2"));
    assert_eq!(
        (&dst.etag, &dst.parts, dst.size),
        (&src.etag, &src.parts, src.size)
    );
    assert_eq!((refs(&s, 1), refs(&s, 2)), (2, 2));
}

#[test]
fn copy_preconditions_follow_s3_precedence() {
    let mut s = bucket();
    put(&mut s, "src", 10_000); // last modified at 10 s
    put(&mut s, "dst", 10_001);
    let with = |c: CopyCondition, d: Option<WriteCondition>| {
        let mut w = copy(("b", "src"), ("b", "dst"));
        if let MetaWrite::CopyObject {
            source_condition,
            condition,
            ..
        } = &mut w
        {
            *source_condition = Some(c);
            *condition = d;
        }
        cmd(meta(w), 20_000)
    };
    let failed = Err(MetaError::PreconditionFailed);
    let cases = [
        // (if-match, if-none-match, if-modified-since, if-unmodified-since) -> copied
        ((Some("\"e\""), None, None, None), true),
        ((Some("x, e"), None, None, None), true),
        ((Some("x"), None, None, None), false),
        ((Some("*"), None, None, None), true),
        ((None, Some("e"), None, None), false),
        ((None, Some("x"), None, None), true),
        ((None, None, Some(9), None), true),
        ((None, None, Some(10), None), false),
        ((None, None, None, Some(10)), true),
        ((None, None, None, Some(9)), false),
        // A matching if-match wins over a failing if-unmodified-since...
        ((Some("e"), None, None, Some(9)), true),
        // ...and an if-none-match decides alone over if-modified-since.
        ((None, Some("e"), Some(9), None), false),
        ((None, Some("x"), Some(10), None), true),
    ];
    for ((m, nm, ms, ums), copied) in cases {
        let c = CopyCondition {
            if_match: m.map(String::from),
            if_none_match: nm.map(String::from),
            if_modified_since: ms,
            if_unmodified_since: ums,
        };
        let r = s.apply(&with(c.clone(), None));
        if copied {
            assert!(r.0.is_ok(), "{c:?}: {r:?}");
        } else {
            assert_eq!(r.0, failed, "{c:?}");
        }
    }
    // A condition on the destination: If-None-Match: * with an object there.
    let none_match = WriteCondition {
        if_match: None,
        if_none_match: true,
        ..Default::default()
    };
    let r = s.apply(&with(CopyCondition::default(), Some(none_match)));
    assert_eq!(r.0, failed);
    assert_eq!(refs(&s, 10_000), 2, "failed copies change nothing");
}
