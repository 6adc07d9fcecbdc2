//! Bucket operations: ListBuckets, CreateBucket, HeadBucket, DeleteBucket, GetBucketLocation,
//! GetBucketVersioning, and canned bucket ACLs (Get/PutBucketAcl: `private`, `public-read`).

use super::request::{xml_response, S3Request};
use crate::error::{S3Error, S3Result};
use crate::xml::{self, elem};
use crate::Gateway;
use axum::body::Body;
use axum::response::Response;
use tinydfs_proto::meta::{ListQuery, MetaError, MetaRead, MetaReply, MetaWrite, UploadQuery};
use tinydfs_proto::time::iso8601;

/// S3's bucket naming rules (the current ones, for new buckets).
pub fn valid_bucket_name(name: &str) -> bool {
    let b = name.as_bytes();
    (3..=63).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'.')
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && !name.contains("..")
        && !name.contains(".-")
        && !name.contains("-.")
        && name.parse::<std::net::Ipv4Addr>().is_err()
        && !name.starts_with("xn--")
        && !name.ends_with("-s3alias")
}

fn owner(out: &mut String, id: &str) {
    out.push_str("<Owner>");
    elem(out, "ID", id);
    elem(out, "DisplayName", id);
    out.push_str("</Owner>");
}

pub async fn list_buckets(gw: &Gateway, req: &S3Request) -> S3Result<Response> {
    let MetaReply::Buckets(mut buckets) = gw.master.read(MetaRead::ListBuckets).await? else {
        return Err(S3Error::internal("unexpected reply to ListBuckets"));
    };
    // A key sees the buckets it has a permission on (an administrator, all of them).
    let key = gw.key(&req.auth.access_key);
    buckets.retain(|b| {
        key.as_ref()
            .is_some_and(|k| k.allows(&b.name, tinydfs_proto::meta::Permission::Read))
    });
    if let Some(prefix) = req.q("prefix") {
        buckets.retain(|b| b.name.starts_with(prefix));
    }
    let max = match req.q("max-buckets") {
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=10_000).contains(n))
            .ok_or_else(|| S3Error::invalid_argument("max-buckets must be between 1 and 10000"))?,
        None => 10_000,
    };
    if let Some(token) = req.q("continuation-token") {
        buckets.retain(|b| b.name.as_str() > token);
    }
    let truncated = buckets.len() > max;
    buckets.truncate(max);
    let mut out = xml::doc("ListAllMyBucketsResult");
    owner(&mut out, &req.auth.access_key);
    out.push_str("<Buckets>");
    for b in &buckets {
        out.push_str("<Bucket>");
        elem(&mut out, "Name", &b.name);
        elem(&mut out, "CreationDate", &iso8601(b.created_ms));
        elem(&mut out, "BucketRegion", &gw.config.region);
        out.push_str("</Bucket>");
    }
    out.push_str("</Buckets>");
    if truncated {
        if let Some(last) = buckets.last() {
            elem(&mut out, "ContinuationToken", &last.name);
        }
    }
    if let Some(prefix) = req.q("prefix") {
        elem(&mut out, "Prefix", prefix);
    }
    out.push_str("</ListAllMyBucketsResult>");
    Ok(xml_response(out))
}

pub async fn create(gw: &Gateway, mut req: S3Request) -> S3Result<Response> {
    let bucket = req.bucket()?.to_string();
    if !valid_bucket_name(&bucket) {
        return Err(S3Error::new(
            "InvalidBucketName",
            400,
            "The specified bucket is not valid.",
        )
        .with("BucketName", bucket));
    }
    let body = req.read_small_body().await?;
    if !body.iter().all(u8::is_ascii_whitespace) {
        let conf: xml::CreateBucketConfiguration = xml::parse(&body)?;
        let wanted = conf.location.unwrap_or_default();
        let ours = if gw.config.region == "us-east-1" {
            ""
        } else {
            gw.config.region.as_str()
        };
        if wanted != ours && !(wanted == "us-east-1" && ours.is_empty()) {
            return Err(S3Error::new(
                "IllegalLocationConstraintException",
                400,
                format!("The {wanted} location constraint is incompatible for the region specific endpoint this request was sent to."),
            ));
        }
    }
    let reply = gw
        .master
        .write(MetaWrite::CreateBucket {
            bucket: bucket.clone(),
            owner: req.auth.access_key.clone(),
        })
        .await?;
    if let MetaReply::Created(true) = reply {
        // The creator owns the bucket (the metadata recorded it): this gateway knows at once,
        // so that the upload that usually follows is not refused until the next key reload.
        gw.granted_owner(&req.auth.access_key, &bucket);
    }
    if let MetaReply::Created(false) = reply {
        // us-east-1 answers 200 to re-creating a bucket you own; other regions 409.
        if gw.config.region != "us-east-1" {
            return Err(tinydfs_proto::meta::MetaError::BucketAlreadyOwnedByYou.into());
        }
    }
    Ok(Response::builder()
        .header("location", format!("/{bucket}"))
        .body(Body::empty())
        .unwrap_or_default())
}

pub async fn head(gw: &Gateway, req: &S3Request) -> S3Result<Response> {
    let bucket = req.bucket()?;
    gw.master
        .read(MetaRead::HeadBucket {
            bucket: bucket.to_string(),
        })
        .await
        .map_err(|e| S3Error::from(e).with("BucketName", bucket))?;
    Ok(Response::builder()
        .header("x-amz-bucket-region", &gw.config.region)
        .body(Body::empty())
        .unwrap_or_default())
}

/// DeleteBucket. A bucket that holds no object but unfinished multipart uploads is deleted with
/// them, as on AWS (tools that empty a bucket by listing its objects, then delete it, would
/// fail otherwise): its uploads are aborted, then the bucket deleted. An upload or object that
/// arrives meanwhile makes the second attempt answer `409 BucketNotEmpty`, as a race may.
pub async fn delete(gw: &Gateway, req: &S3Request) -> S3Result<Response> {
    let bucket = req.bucket()?;
    let delete = || {
        gw.master.write(MetaWrite::DeleteBucket {
            bucket: bucket.to_string(),
        })
    };
    let deleted = match delete().await {
        Err(MetaError::BucketNotEmpty) if !has_objects(gw, bucket).await? => {
            abort_uploads(gw, bucket).await?;
            delete().await
        }
        other => other,
    };
    deleted.map_err(|e| S3Error::from(e).with("BucketName", bucket))?;
    Ok(Response::builder()
        .status(204)
        .body(Body::empty())
        .unwrap_or_default())
}

/// Whether a bucket holds an object.
async fn has_objects(gw: &Gateway, bucket: &str) -> S3Result<bool> {
    let reply = gw
        .master
        .read(MetaRead::ListObjects(ListQuery {
            bucket: bucket.to_string(),
            prefix: String::new(),
            delimiter: None,
            after: None,
            max_keys: 1,
        }))
        .await
        .map_err(|e| S3Error::from(e).with("BucketName", bucket))?;
    match reply {
        MetaReply::List(page) => Ok(!page.entries.is_empty() || !page.common_prefixes.is_empty()),
        _ => Err(S3Error::internal("unexpected reply to ListObjects")),
    }
}

/// Aborts at once at most this many uploads of a bucket being deleted (the master batches
/// concurrent writes into one log entry).
const ABORTS_IN_FLIGHT: usize = 16;

/// The most pages of uploads a DeleteBucket aborts: past that (uploads keep coming), the
/// delete answers BucketNotEmpty.
const ABORT_PAGES: usize = 1000;

/// Aborts every upload of a bucket, as AbortMultipartUpload does (their chunks become garbage),
/// a page at a time, each page listed from the start (the ones aborted are gone: a marker would
/// name an upload that no longer exists). One that completed or was aborted meanwhile is no
/// error.
async fn abort_uploads(gw: &Gateway, bucket: &str) -> S3Result<()> {
    for _ in 0..ABORT_PAGES {
        let reply = gw
            .master
            .read(MetaRead::ListUploads(UploadQuery {
                bucket: bucket.to_string(),
                prefix: String::new(),
                delimiter: None,
                key_marker: None,
                upload_id_marker: None,
                max_uploads: 1000,
            }))
            .await
            .map_err(|e| S3Error::from(e).with("BucketName", bucket))?;
        let MetaReply::Uploads(page) = reply else {
            return Err(S3Error::internal("unexpected reply to ListUploads"));
        };
        for batch in page.uploads.chunks(ABORTS_IN_FLIGHT) {
            let aborts = batch
                .iter()
                .map(|u| super::multipart::abort_upload(gw, bucket, &u.key, &u.upload_id));
            for r in futures_util::future::join_all(aborts).await {
                match r {
                    Ok(()) | Err(MetaError::NoSuchUpload) => {}
                    Err(e) => return Err(S3Error::from(e).with("BucketName", bucket)),
                }
            }
        }
        if !page.truncated {
            return Ok(());
        }
    }
    Ok(())
}

pub async fn location(gw: &Gateway, req: &S3Request) -> S3Result<Response> {
    head(gw, req).await?;
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    // us-east-1 is reported as an empty constraint, as AWS does.
    let region = if gw.config.region == "us-east-1" {
        ""
    } else {
        gw.config.region.as_str()
    };
    out.push_str(&format!("<LocationConstraint xmlns=\"{}\">", xml::NS));
    xml::escape_into(&mut out, region);
    out.push_str("</LocationConstraint>");
    Ok(xml_response(out))
}

/// Whether anonymous requests may read `bucket` (its canned ACL is `public-read`).
pub async fn is_public(gw: &Gateway, bucket: &str) -> S3Result<bool> {
    match gw
        .master
        .read(MetaRead::HeadBucket {
            bucket: bucket.to_string(),
        })
        .await
    {
        Ok(MetaReply::Bucket(b)) => Ok(b.public_read),
        // Whether a bucket exists is not told to anonymous callers.
        Ok(_) | Err(tinydfs_proto::meta::MetaError::NoSuchBucket) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// GetBucketAcl: the owner's full control, and READ for everyone when public.
pub async fn get_acl(gw: &Gateway, req: &S3Request) -> S3Result<Response> {
    let bucket = req.bucket()?;
    let MetaReply::Bucket(info) = gw
        .master
        .read(MetaRead::HeadBucket {
            bucket: bucket.to_string(),
        })
        .await
        .map_err(|e| S3Error::from(e).with("BucketName", bucket))?
    else {
        return Err(S3Error::internal("unexpected reply to HeadBucket"));
    };
    const XSI: &str = "xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\"";
    let mut out = xml::doc("AccessControlPolicy");
    owner(&mut out, &info.owner);
    out.push_str("<AccessControlList><Grant>");
    out.push_str(&format!("<Grantee {XSI} xsi:type=\"CanonicalUser\">"));
    elem(&mut out, "ID", &info.owner);
    elem(&mut out, "DisplayName", &info.owner);
    out.push_str("</Grantee><Permission>FULL_CONTROL</Permission></Grant>");
    if info.public_read {
        out.push_str(&format!("<Grant><Grantee {XSI} xsi:type=\"Group\">"));
        elem(
            &mut out,
            "URI",
            "http://acs.amazonaws.com/groups/global/AllUsers",
        );
        out.push_str("</Grantee><Permission>READ</Permission></Grant>");
    }
    out.push_str("</AccessControlList></AccessControlPolicy>");
    Ok(xml_response(out))
}

/// PutBucketAcl with a canned ACL header: `private` or `public-read`. Grants in an XML body and
/// other canned ACLs are not supported (NotImplemented, never a silent success).
pub async fn put_acl(gw: &Gateway, mut req: S3Request) -> S3Result<Response> {
    let bucket = req.bucket()?.to_string();
    let public_read =
        match req.header("x-amz-acl") {
            Some("private") => false,
            Some("public-read") => true,
            Some(other) => {
                return Err(S3Error::not_implemented(&format!(
                    "the canned ACL {other} (only private and public-read)"
                )))
            }
            None => return Err(S3Error::not_implemented(
                "ACL grants in a request body (use the x-amz-acl header: private or public-read)",
            )),
        };
    // Read (and so check) whatever body came with it before answering.
    req.read_small_body().await?;
    gw.master
        .write(MetaWrite::SetBucketPublic {
            bucket: bucket.clone(),
            public_read,
        })
        .await
        .map_err(|e| S3Error::from(e).with("BucketName", &bucket))?;
    Ok(Response::builder().body(Body::empty()).unwrap_or_default())
}

pub async fn versioning(gw: &Gateway, req: &S3Request) -> S3Result<Response> {
    head(gw, req).await?;
    let mut out = xml::doc("VersioningConfiguration");
    out.push_str("</VersioningConfiguration>");
    Ok(xml_response(out))
}

#[cfg(test)]
mod tests {
    #[test]
    fn bucket_names_follow_s3_rules() {
        for ok in ["abc", "my-bucket.1", "a1b", &"a".repeat(63)] {
            assert!(super::valid_bucket_name(ok), "{ok}");
        }
        for bad in [
            "ab",
            "ABC",
            "-abc",
            "abc-",
            "a..b",
            "a.-b",
            "192.168.1.1",
            &"a".repeat(64),
            "a_b",
            "xn--abc",
        ] {
            assert!(!super::valid_bucket_name(bad), "{bad}");
        }
    }
}
