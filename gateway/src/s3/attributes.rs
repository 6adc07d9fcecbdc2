//! GetObjectAttributes (`GET /bucket/key?attributes`): what HeadObject and ListParts would tell
//! of an object, in one `GetObjectAttributesResponse` document, made from the object record the
//! master answers HEAD with (nothing more is read).
//!
//! The request names what it wants in `x-amz-object-attributes` (`ETag`, `Checksum`,
//! `ObjectParts`, `StorageClass`, `ObjectSize`, comma-separated or in several header lines, as
//! the Go and Java SDKs send them); the answer has them in AWS's fixed order whatever the order
//! asked. As on AWS:
//!
//! - the ETag has no quotes; `Last-Modified` is a header; an unversioned bucket gets neither
//!   `x-amz-version-id` nor `x-amz-delete-marker`;
//! - `Checksum` only when the object has one; a composite checksum loses its `-N` part count
//!   here (HEAD and GET keep it);
//! - `ObjectParts` only for multipart objects, and it lists the parts (paged by
//!   `x-amz-max-parts` and `x-amz-part-number-marker`) only when the object has a composite
//!   checksum: for the others AWS answers the part count alone;
//! - conditional headers (`If-Match`...) are not part of this operation and are ignored.

use super::object::checksum_type;
use super::request::S3Request;
use crate::auth::ChecksumAlgo;
use crate::error::{S3Error, S3Result};
use crate::xml::{self, elem};
use crate::Gateway;
use axum::body::Body;
use axum::http::HeaderMap;
use axum::response::Response;
use tinydfs_proto::meta::{MetaError, MetaRead, MetaReply};
use tinydfs_proto::time::http_date;
use tinydfs_proto::{ObjectRecord, PartInfo};

/// The header naming the attributes wanted.
const ATTRIBUTES_HEADER: &str = "x-amz-object-attributes";

/// Most parts one answer lists, and what it lists without `x-amz-max-parts` (as ListParts).
const MAX_PARTS: u64 = 1000;

/// The attributes a request asks for.
#[derive(Debug, Default, PartialEq, Eq)]
struct Wanted {
    etag: bool,
    checksum: bool,
    parts: bool,
    storage_class: bool,
    size: bool,
}

impl Wanted {
    /// The attributes `x-amz-object-attributes` names: `400 InvalidArgument` for a name that is
    /// not one, `400 InvalidRequest` when it names none, as AWS answers.
    fn from_headers(headers: &HeaderMap) -> S3Result<Wanted> {
        let mut wanted = Wanted::default();
        let mut any = false;
        for value in headers.get_all(ATTRIBUTES_HEADER) {
            for name in String::from_utf8_lossy(value.as_bytes()).split(',') {
                let flag = match name.trim() {
                    // Empty items (`ETag,`) are skipped rather than refused.
                    "" => continue,
                    "ETag" => &mut wanted.etag,
                    "Checksum" => &mut wanted.checksum,
                    "ObjectParts" => &mut wanted.parts,
                    "StorageClass" => &mut wanted.storage_class,
                    "ObjectSize" => &mut wanted.size,
                    other => {
                        return Err(
                            S3Error::invalid_argument("Invalid attribute name specified.")
                                .with("ArgumentName", ATTRIBUTES_HEADER)
                                .with("ArgumentValue", other),
                        );
                    }
                };
                *flag = true;
                any = true;
            }
        }
        if !any {
            return Err(S3Error::invalid_request(
                "The x-amz-object-attributes header specifying the attributes to be retrieved is either missing or empty",
            ));
        }
        Ok(wanted)
    }
}

/// Which parts to list: those numbered above `marker`, at most `max` of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PartsPage {
    marker: u32,
    max: u64,
}

impl PartsPage {
    /// From `x-amz-part-number-marker` and `x-amz-max-parts`. AWS ignores a max-parts that is
    /// not a number (the default applies); a marker that is not one is ignored the same way.
    fn from_headers(headers: &HeaderMap) -> PartsPage {
        let number = |name: &str| -> Option<u64> {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse().ok())
        };
        PartsPage {
            marker: number("x-amz-part-number-marker")
                .map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX)),
            max: number("x-amz-max-parts").map_or(MAX_PARTS, |n| n.min(MAX_PARTS)),
        }
    }
}

/// GetObjectAttributes: the object's attributes, read as HEAD reads them.
pub async fn get(gw: &Gateway, req: &S3Request) -> S3Result<Response> {
    let (bucket, key) = (req.bucket()?, req.key()?);
    let read = gw
        .master
        .read(MetaRead::GetObject {
            bucket: bucket.to_string(),
            key: key.to_string(),
        })
        .await;
    // A missing bucket is answered before a bad header, a bad header before a missing key.
    if let Err(MetaError::NoSuchBucket) = read {
        return Err(S3Error::no_such_bucket(bucket));
    }
    let wanted = Wanted::from_headers(&req.headers)?;
    let reply = read.map_err(|e| match e {
        MetaError::NoSuchKey => S3Error::no_such_key(key),
        e => e.into(),
    })?;
    let MetaReply::Object(loc) = reply else {
        return Err(S3Error::internal("unexpected reply to GetObject"));
    };
    let rec = &loc.record;
    let body = render(rec, &wanted, PartsPage::from_headers(&req.headers));
    Ok(Response::builder()
        .header("content-type", "application/xml")
        .header("last-modified", http_date(rec.last_modified_ms))
        .body(Body::from(body))
        .unwrap_or_default())
}

/// The `GetObjectAttributesResponse` document, elements in AWS's order.
fn render(rec: &ObjectRecord, wanted: &Wanted, page: PartsPage) -> String {
    let mut out = xml::doc("GetObjectAttributesResponse");
    if wanted.etag {
        elem(&mut out, "ETag", &rec.etag);
    }
    if wanted.checksum {
        checksum(&mut out, &rec.checksums);
    }
    if wanted.parts && !rec.parts.is_empty() {
        let composite = rec
            .checksums
            .first()
            .is_some_and(|(_, v)| checksum_type(v) == "COMPOSITE");
        object_parts(&mut out, &rec.parts, composite.then_some(page));
    }
    if wanted.storage_class {
        // Every tinydfs object is STANDARD (`x-amz-storage-class` is accepted and ignored).
        elem(&mut out, "StorageClass", "STANDARD");
    }
    if wanted.size {
        elem(&mut out, "ObjectSize", &rec.size.to_string());
    }
    out.push_str("</GetObjectAttributesResponse>");
    out
}

/// `<Checksum>`: the object's checksums (stored as `("CRC32", base64)`), then their type;
/// nothing for an object without one.
fn checksum(out: &mut String, stored: &[(String, String)]) {
    let Some((_, first)) = stored.first() else {
        return;
    };
    let kind = checksum_type(first);
    let values: Vec<(ChecksumAlgo, &str)> = ChecksumAlgo::ALL
        .into_iter()
        .filter_map(|algo| {
            let (_, v) = stored
                .iter()
                .find(|(name, _)| ChecksumAlgo::from_algorithm(name) == Some(algo))?;
            // AWS answers a composite checksum here without its `-N` suffix.
            let v = match kind {
                "COMPOSITE" => v.rsplit_once('-').map_or(v.as_str(), |(sum, _)| sum),
                _ => v.as_str(),
            };
            Some((algo, v))
        })
        .collect();
    if values.is_empty() {
        return;
    }
    out.push_str("<Checksum>");
    for (algo, v) in values {
        elem(out, algo.element(), v);
    }
    elem(out, "ChecksumType", kind);
    out.push_str("</Checksum>");
}

/// `<ObjectParts>` of a multipart object: its part count, and with `page` (objects with a
/// composite checksum) a page of its parts as ListParts pages them. A part's own checksum is
/// not in the object record, so a `<Part>` has its number and size only.
fn object_parts(out: &mut String, parts: &[PartInfo], page: Option<PartsPage>) {
    out.push_str("<ObjectParts>");
    if let Some(PartsPage { marker, max }) = page {
        let after: Vec<&PartInfo> = parts.iter().filter(|p| p.number > marker).collect();
        let shown = after.len().min(usize::try_from(max).unwrap_or(usize::MAX));
        let truncated = after.len() > shown;
        let listed = &after[..shown];
        elem(out, "IsTruncated", if truncated { "true" } else { "false" });
        elem(out, "MaxParts", &max.to_string());
        // With no part listed, 0, as AWS answers ListParts of an upload without parts.
        let next = listed.last().map_or(0, |p| p.number);
        elem(out, "NextPartNumberMarker", &next.to_string());
        elem(out, "PartNumberMarker", &marker.to_string());
        for p in listed {
            out.push_str("<Part>");
            elem(out, "PartNumber", &p.number.to_string());
            elem(out, "Size", &p.size.to_string());
            out.push_str("</Part>");
        }
    }
    elem(out, "PartsCount", &parts.len().to_string());
    out.push_str("</ObjectParts>");
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            let name = axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap();
            h.append(name, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn all() -> Wanted {
        Wanted {
            etag: true,
            checksum: true,
            parts: true,
            storage_class: true,
            size: true,
        }
    }

    fn part(number: u32, size: u64) -> PartInfo {
        PartInfo {
            number,
            size,
            etag: String::new(),
            chunk_count: 1,
        }
    }

    fn refusal(h: &HeaderMap) -> (&'static str, u16, Vec<(&'static str, String)>) {
        let e = Wanted::from_headers(h).unwrap_err();
        (e.code, e.status.as_u16(), e.extra)
    }

    #[test]
    fn attribute_names_as_aws_takes_them() {
        let h = headers(&[(
            ATTRIBUTES_HEADER,
            "ETag, Checksum,ObjectParts ,StorageClass,",
        )]);
        let w = Wanted::from_headers(&h).unwrap();
        assert_eq!(
            w,
            Wanted {
                size: false,
                ..all()
            }
        );
        // One header line per attribute (the Go and Java SDKs).
        let h = headers(&[
            (ATTRIBUTES_HEADER, "ObjectSize"),
            (ATTRIBUTES_HEADER, "ETag"),
        ]);
        let w = Wanted::from_headers(&h).unwrap();
        assert!(w.size && w.etag && !w.checksum);
        for h in [
            headers(&[]),
            headers(&[(ATTRIBUTES_HEADER, "")]),
            headers(&[(ATTRIBUTES_HEADER, " , ")]),
        ] {
            let (code, status, _) = refusal(&h);
            assert_eq!((code, status), ("InvalidRequest", 400));
        }
        for bad in ["ETag,Bogus", "etag", "Etag", "ObjectParts,ETag,Size"] {
            let (code, status, extra) = refusal(&headers(&[(ATTRIBUTES_HEADER, bad)]));
            assert_eq!((code, status), ("InvalidArgument", 400), "{bad}");
            assert_eq!(extra[0], ("ArgumentName", ATTRIBUTES_HEADER.to_string()));
            assert_eq!(extra[1].0, "ArgumentValue");
            assert!(bad.contains(extra[1].1.as_str()), "{bad}");
        }
    }

    #[test]
    fn paging_headers_fall_back_to_defaults() {
        let page = |pairs: &[(&str, &str)]| PartsPage::from_headers(&headers(pairs));
        assert_eq!(
            page(&[]),
            PartsPage {
                marker: 0,
                max: 1000
            }
        );
        assert_eq!(
            page(&[("x-amz-max-parts", "2"), ("x-amz-part-number-marker", "3")]),
            PartsPage { marker: 3, max: 2 }
        );
        assert_eq!(
            page(&[
                ("x-amz-max-parts", "5000"),
                ("x-amz-part-number-marker", "x")
            ]),
            PartsPage {
                marker: 0,
                max: 1000
            }
        );
        assert_eq!(page(&[("x-amz-max-parts", "-1")]).max, 1000);
        assert_eq!(
            page(&[("x-amz-part-number-marker", "99999999999")]).marker,
            u32::MAX
        );
    }

    #[test]
    fn single_object_document() {
        let rec = ObjectRecord {
            size: 7,
            etag: "e92499db864217242396e8ef766079a9".into(),
            checksums: vec![("CRC32".into(), "WC+ANw==".into())],
            ..Default::default()
        };
        let doc = render(
            &rec,
            &all(),
            PartsPage {
                marker: 0,
                max: 1000,
            },
        );
        let want = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<GetObjectAttributesResponse xmlns=\"{}\">\
             <ETag>e92499db864217242396e8ef766079a9</ETag>\
             <Checksum><ChecksumCRC32>WC+ANw==</ChecksumCRC32><ChecksumType>FULL_OBJECT</ChecksumType></Checksum>\
             <StorageClass>STANDARD</StorageClass><ObjectSize>7</ObjectSize>\
             </GetObjectAttributesResponse>",
            xml::NS
        );
        assert_eq!(doc, want);
        // Only what is asked; no Checksum element for an object without one.
        let plain = ObjectRecord {
            checksums: Vec::new(),
            ..rec
        };
        let doc = render(
            &plain,
            &Wanted {
                checksum: true,
                size: true,
                ..Default::default()
            },
            PartsPage {
                marker: 0,
                max: 1000,
            },
        );
        assert!(doc.ends_with("\"><ObjectSize>7</ObjectSize></GetObjectAttributesResponse>"));
    }

    #[test]
    fn multipart_documents() {
        let mut rec = ObjectRecord {
            size: 12,
            etag: "abc-3".into(),
            checksums: vec![("CRC32".into(), "5FRUiw==-3".into())],
            parts: vec![part(1, 5), part(2, 5), part(3, 2)],
            ..Default::default()
        };
        let parts_only = Wanted {
            checksum: true,
            parts: true,
            ..Default::default()
        };
        let doc = render(&rec, &parts_only, PartsPage { marker: 0, max: 2 });
        assert!(
            doc.contains(
                "<Checksum><ChecksumCRC32>5FRUiw==</ChecksumCRC32>\
                 <ChecksumType>COMPOSITE</ChecksumType></Checksum>"
            ),
            "{doc}"
        );
        assert!(
            doc.contains(
                "<ObjectParts><IsTruncated>true</IsTruncated><MaxParts>2</MaxParts>\
                 <NextPartNumberMarker>2</NextPartNumberMarker><PartNumberMarker>0</PartNumberMarker>\
                 <Part><PartNumber>1</PartNumber><Size>5</Size></Part>\
                 <Part><PartNumber>2</PartNumber><Size>5</Size></Part>\
                 <PartsCount>3</PartsCount></ObjectParts>"
            ),
            "{doc}"
        );
        let doc = render(&rec, &parts_only, PartsPage { marker: 2, max: 2 });
        assert!(
            doc.contains(
                "<ObjectParts><IsTruncated>false</IsTruncated><MaxParts>2</MaxParts>\
                 <NextPartNumberMarker>3</NextPartNumberMarker><PartNumberMarker>2</PartNumberMarker>\
                 <Part><PartNumber>3</PartNumber><Size>2</Size></Part>\
                 <PartsCount>3</PartsCount></ObjectParts>"
            ),
            "{doc}"
        );
        let doc = render(&rec, &parts_only, PartsPage { marker: 3, max: 2 });
        assert!(
            doc.contains(
                "<ObjectParts><IsTruncated>false</IsTruncated><MaxParts>2</MaxParts>\
                 <NextPartNumberMarker>0</NextPartNumberMarker><PartNumberMarker>3</PartNumberMarker>\
                 <PartsCount>3</PartsCount></ObjectParts>"
            ),
            "{doc}"
        );
        // A full-object checksum, or none: the part count alone, as on AWS.
        rec.checksums = vec![("CRC32".into(), "qSEQSA==".into())];
        let doc = render(&rec, &parts_only, PartsPage { marker: 0, max: 2 });
        assert!(
            doc.contains(
                "<Checksum><ChecksumCRC32>qSEQSA==</ChecksumCRC32>\
                 <ChecksumType>FULL_OBJECT</ChecksumType></Checksum>\
                 <ObjectParts><PartsCount>3</PartsCount></ObjectParts>"
            ),
            "{doc}"
        );
        rec.checksums.clear();
        let doc = render(&rec, &parts_only, PartsPage { marker: 0, max: 2 });
        assert!(
            doc.ends_with("\"><ObjectParts><PartsCount>3</PartsCount></ObjectParts></GetObjectAttributesResponse>"),
            "{doc}"
        );
    }
}
