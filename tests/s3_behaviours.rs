//! Behaviours where tinydfs used to answer differently from AWS S3 (issue 16, first part), each
//! checked end to end against a real cluster with real clients: aws-sdk-s3, boto3 and the aws
//! CLI (found through `TINYDFS_PYTHON` and `TINYDFS_AWS`, as `scripts/test.sh` sets them), and,
//! where a client cannot be made to send what a case needs (a held-back body, raw header bytes,
//! a body framed by hand), requests signed by aws-sigv4, the SDKs' own signer.
//!
//! boto3 runs with retries off, so that a refusal is seen rather than retried away.

mod common;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use common::*;
use std::process::Command;
use std::time::{Duration, SystemTime};

/// What every boto3 script starts with: a client for the cluster, and `code(f)`, the error code
/// and HTTP status of a call that fails (`"ok"` when it does not).
const BOTO3_PRELUDE: &str = r#"
import base64, io, json, os, sys, urllib.error, urllib.parse, urllib.request
import boto3, botocore
from botocore.config import Config

s3 = boto3.client(
    "s3",
    endpoint_url=os.environ["TD_ENDPOINT"],
    region_name="us-east-1",
    aws_access_key_id=os.environ["TD_ACCESS_KEY"],
    aws_secret_access_key=os.environ["TD_SECRET_KEY"],
    config=Config(s3={"addressing_style": "path"}, retries={"mode": "standard", "max_attempts": 1}),
)

def code(f):
    try:
        f()
        return "ok"
    except botocore.exceptions.ClientError as e:
        return [e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"]]

def fetch(url, method="GET"):
    """Status and body of a plain HTTP request (a presigned URL, an anonymous read)."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method)) as r:
            return [r.status, r.read().decode("latin-1")]
    except urllib.error.HTTPError as e:
        return [e.code, e.read().decode("latin-1")]

out = {}
"#;

/// Runs a boto3 script (after [`BOTO3_PRELUDE`]) that fills `out`; answers `out`.
fn boto3(cluster: &Cluster, name: &str, script: &str) -> serde_json::Value {
    let path = cluster.dir.join(format!("{name}.py"));
    std::fs::write(
        &path,
        format!("{BOTO3_PRELUDE}\n{script}\nprint(json.dumps(out))\n"),
    )
    .unwrap();
    let mut cmd = Command::new(tool("TINYDFS_PYTHON"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd
        .arg(&path)
        .env("TD_ENDPOINT", &cluster.endpoint)
        .env("TD_ACCESS_KEY", ACCESS_KEY)
        .env("TD_SECRET_KEY", SECRET_KEY)
        .env("AWS_CONFIG_FILE", cluster.dir.join("no-aws-config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", cluster.dir.join("no-creds"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "boto3 script {name} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim().lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("boto3 script {name} printed no JSON ({e}):\n{stdout}"))
}

/// Runs the aws CLI (path-style, retries off) with `args`; answers (success, stdout, stderr).
fn aws(cluster: &Cluster, args: &[&str]) -> (bool, String, String) {
    let config = cluster.dir.join("aws-config");
    std::fs::write(
        &config,
        "[default]\nregion = us-east-1\nretry_mode = standard\nmax_attempts = 1\n\
         s3 =\n    addressing_style = path\n",
    )
    .unwrap();
    let mut cmd = Command::new(tool("TINYDFS_AWS"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd
        .env("AWS_CONFIG_FILE", &config)
        .env("AWS_SHARED_CREDENTIALS_FILE", cluster.dir.join("no-creds"))
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_PAGER", "")
        .arg("--endpoint-url")
        .arg(&cluster.endpoint)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A request signed now with the test key by aws-sigv4, sent by reqwest: `extra` headers are
/// signed, `payload_hash` is the `x-amz-content-sha256` mode or hash.
fn signed(
    http: &reqwest::Client,
    cluster: &Cluster,
    method: reqwest::Method,
    path: &str,
    payload_hash: &str,
    extra: &[(&str, &str)],
) -> reqwest::RequestBuilder {
    let (headers, _) = sign_v4(
        SystemTime::now(),
        method.as_str(),
        &cluster.s3_addr,
        path,
        payload_hash,
        extra,
    );
    let mut req = http.request(method, format!("{}{path}", cluster.endpoint));
    for (k, v) in headers {
        if k != "host" {
            req = req.header(k, v);
        }
    }
    req
}

// ---------------------------------------------------------------------------------------------
// DeleteBucket
// ---------------------------------------------------------------------------------------------

/// A bucket holding only unfinished multipart uploads is deleted with them, as on AWS; one
/// holding an object is not, and keeps its uploads. `aws s3 rb --force` (list, delete the
/// objects, delete the bucket) empties a bucket with an interrupted upload.
#[test]
fn delete_bucket_takes_its_unfinished_uploads_along() {
    let cluster = Cluster::start(Opts::default());
    let c = cluster.client();
    rt().block_on(async {
        c.create_bucket()
            .bucket("only-uploads")
            .send()
            .await
            .unwrap();
        let mut ids = Vec::new();
        for key in ["a", "a", "dir/b"] {
            let up = c
                .create_multipart_upload()
                .bucket("only-uploads")
                .key(key)
                .send()
                .await
                .unwrap();
            ids.push((key, up.upload_id().unwrap().to_string()));
        }
        // One upload with a part stored (chunks on the chunkservers).
        c.upload_part()
            .bucket("only-uploads")
            .key("a")
            .upload_id(&ids[0].1)
            .part_number(1)
            .body(ByteStream::from(data(300 * 1024, 1)))
            .send()
            .await
            .unwrap();
        c.delete_bucket()
            .bucket("only-uploads")
            .send()
            .await
            .unwrap();
        let r = c.head_bucket().bucket("only-uploads").send().await;
        assert_eq!(
            r.unwrap_err().raw_response().map(|r| r.status().as_u16()),
            Some(404)
        );
        // Its uploads went with it: a bucket created again under the name has none.
        c.create_bucket()
            .bucket("only-uploads")
            .send()
            .await
            .unwrap();
        let list = c
            .list_multipart_uploads()
            .bucket("only-uploads")
            .send()
            .await
            .unwrap();
        assert!(list.uploads().is_empty(), "{list:?}");
        let (key, id) = &ids[0];
        let r = c
            .list_parts()
            .bucket("only-uploads")
            .key(*key)
            .upload_id(id)
            .send()
            .await;
        assert_eq!(code(r), "NoSuchUpload");

        // An object as well: BucketNotEmpty, and the upload is still there.
        c.create_bucket().bucket("both").send().await.unwrap();
        put(&c, "both", "object", b"x".to_vec()).await.unwrap();
        let up = c
            .create_multipart_upload()
            .bucket("both")
            .key("upload")
            .send()
            .await
            .unwrap();
        let r = c.delete_bucket().bucket("both").send().await;
        assert_eq!(code(r), "BucketNotEmpty");
        let list = c
            .list_multipart_uploads()
            .bucket("both")
            .send()
            .await
            .unwrap();
        assert_eq!(list.uploads().len(), 1);
        assert_eq!(list.uploads()[0].upload_id(), up.upload_id());
    });

    // `aws s3 rb --force`: deletes the objects it lists, then the bucket (the upload with it).
    let (ok, _, err) = aws(&cluster, &["s3", "rb", "--force", "s3://both"]);
    assert!(ok, "aws s3 rb --force: {err}");
    let (ok, out, _) = aws(&cluster, &["s3", "ls"]);
    assert!(ok);
    assert!(!out.contains("both"), "{out}");
}

// ---------------------------------------------------------------------------------------------
// User metadata
// ---------------------------------------------------------------------------------------------

const METADATA_SCRIPT: &str = r#"
b = "meta"
s3.create_bucket(Bucket=b)

# A client that writes headers as Latin-1 sends `é` as the one byte 0xE9 (botocore itself
# encodes header values as UTF-8, so the header is set on the request as it goes out).
def latin1(request, **kwargs):
    request.headers["x-amz-meta-latin"] = "Hello World\xe9".encode("latin-1")
s3.meta.events.register("before-send.s3.PutObject", latin1)
s3.put_object(Bucket=b, Key="latin", Body=b"x")
s3.meta.events.unregister("before-send.s3.PutObject", latin1)
out["latin_head"] = s3.head_object(Bucket=b, Key="latin")["Metadata"]
out["latin_get"] = s3.get_object(Bucket=b, Key="latin")["Metadata"]

# boto3's own way (ceph's s3-tests do this): botocore signs and sends the value as UTF-8 bytes
# and reads answers as Latin-1; the bytes come back unchanged.
def utf8(params, **kwargs):
    params["headers"]["x-amz-meta-utf8"] = "Hello World\xe9"
s3.meta.events.register("before-call.s3.PutObject", utf8)
s3.put_object(Bucket=b, Key="utf8", Body=b"x")
s3.meta.events.unregister("before-call.s3.PutObject", utf8)
h = s3.head_object(Bucket=b, Key="utf8")
out["utf8_bytes"] = list(h["ResponseMetadata"]["HTTPHeaders"]["x-amz-meta-utf8"].encode("latin-1"))

# CopyObject keeps the bytes.
s3.copy_object(Bucket=b, Key="latin-copy", CopySource={"Bucket": b, "Key": "latin"})
out["copy"] = s3.head_object(Bucket=b, Key="latin-copy")["Metadata"]
"#;

/// `x-amz-meta-*` values come back as the bytes that were sent: `é` sent as the Latin-1 byte
/// 0xE9 comes back as 0xE9 (boto3 reads it back equal), and as UTF-8 it comes back as UTF-8
/// (aws-sdk-s3 reads it back equal).
#[test]
fn metadata_values_come_back_byte_for_byte() {
    let cluster = Cluster::start(Opts::default());
    let v = boto3(&cluster, "metadata", METADATA_SCRIPT);
    let latin = serde_json::json!({"latin": "Hello World\u{e9}"});
    assert_eq!(v["latin_head"], latin, "{v}");
    assert_eq!(v["latin_get"], latin, "{v}");
    assert_eq!(v["copy"], latin, "{v}");
    let utf8: Vec<u8> = "Hello World\u{e9}".bytes().collect();
    assert_eq!(v["utf8_bytes"], serde_json::json!(utf8), "{v}");

    let c = cluster.client();
    let http = reqwest::Client::new();
    rt().block_on(async {
        // The bytes on the wire, as a client that does not decode them sees them.
        let r = signed(
            &http,
            &cluster,
            reqwest::Method::HEAD,
            "/meta/latin",
            &sha_hex(b""),
            &[],
        )
        .send()
        .await
        .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(
            r.headers()["x-amz-meta-latin"].as_bytes(),
            b"Hello World\xe9"
        );

        // aws-sdk-s3 sends UTF-8 and reads UTF-8.
        c.put_object()
            .bucket("meta")
            .key("sdk")
            .metadata("greeting", "caf\u{e9} \u{2615} Stra\u{df}e")
            .body(ByteStream::from_static(b"x"))
            .send()
            .await
            .unwrap();
        let head = c
            .head_object()
            .bucket("meta")
            .key("sdk")
            .send()
            .await
            .unwrap();
        assert_eq!(
            head.metadata()
                .and_then(|m| m.get("greeting"))
                .map(String::as_str),
            Some("caf\u{e9} \u{2615} Stra\u{df}e")
        );
    });
}

// ---------------------------------------------------------------------------------------------
// Content-Encoding and aws-chunked
// ---------------------------------------------------------------------------------------------

/// `aws-chunked` is dropped from the stored `Content-Encoding` wherever it is, the rest kept as
/// sent; and only a `STREAMING-*` payload mode makes a body aws-chunked, not the header.
#[test]
fn aws_chunked_is_the_payload_mode_not_the_content_encoding() {
    let cluster = Cluster::start(Opts::default());
    let c = cluster.client();
    let http = reqwest::Client::new();
    rt().block_on(async {
        c.create_bucket().bucket("enc").send().await.unwrap();

        // A framed body (STREAMING-UNSIGNED-PAYLOAD-TRAILER), the token first.
        let payload = b"hello, world";
        let crc = {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode(crc32fast::hash(payload).to_be_bytes())
        };
        let mut body = format!("{:x}\r\n", payload.len()).into_bytes();
        body.extend_from_slice(payload);
        body.extend_from_slice(format!("\r\n0\r\nx-amz-checksum-crc32:{crc}\r\n\r\n").as_bytes());
        let len = payload.len().to_string();
        let r = signed(
            &http,
            &cluster,
            reqwest::Method::PUT,
            "/enc/framed",
            "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
            &[
                ("content-encoding", "aws-chunked, deflate, gzip"),
                ("x-amz-decoded-content-length", &len),
                ("x-amz-trailer", "x-amz-checksum-crc32"),
            ],
        )
        .body(body)
        .send()
        .await
        .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
        let got = c
            .get_object()
            .bucket("enc")
            .key("framed")
            .send()
            .await
            .unwrap();
        assert_eq!(got.content_encoding(), Some("deflate, gzip"));
        assert_eq!(got.body.collect().await.unwrap().into_bytes(), &payload[..]);

        // A plain body (its SHA-256 signed) that says aws-chunked: stored exactly as sent, even
        // though it looks framed, and no Content-Encoding is left.
        let plain = b"5\r\nhello\r\n0\r\n\r\n";
        let r = signed(
            &http,
            &cluster,
            reqwest::Method::PUT,
            "/enc/plain",
            &sha_hex(plain),
            &[("content-encoding", "aws-chunked")],
        )
        .body(&plain[..])
        .send()
        .await
        .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
        let got = c
            .get_object()
            .bucket("enc")
            .key("plain")
            .send()
            .await
            .unwrap();
        assert_eq!(got.content_encoding(), None);
        assert_eq!(got.body.collect().await.unwrap().into_bytes(), &plain[..]);

        // The token last, and aws-sdk-s3's own (streaming, with a trailing checksum) upload.
        c.put_object()
            .bucket("enc")
            .key("sdk")
            .content_encoding("gzip, aws-chunked")
            .body(ByteStream::from(data(100_000, 3)))
            .send()
            .await
            .unwrap();
        let head = c
            .head_object()
            .bucket("enc")
            .key("sdk")
            .send()
            .await
            .unwrap();
        assert_eq!(head.content_encoding(), Some("gzip"));
        assert_eq!(head.content_length(), Some(100_000));
    });

    // boto3 sends the header as given, with a plain body.
    let v = boto3(
        &cluster,
        "content_encoding",
        r#"
s3.put_object(Bucket="enc", Key="boto3", Body=b"data", ContentEncoding="aws-chunked, deflate, gzip")
out["boto3"] = s3.head_object(Bucket="enc", Key="boto3").get("ContentEncoding")
s3.put_object(Bucket="enc", Key="only", Body=b"data", ContentEncoding="aws-chunked")
out["only"] = s3.head_object(Bucket="enc", Key="only").get("ContentEncoding")
out["body"] = s3.get_object(Bucket="enc", Key="only")["Body"].read().decode()
"#,
    );
    assert_eq!(v["boto3"], "deflate, gzip", "{v}");
    assert_eq!(v["only"], serde_json::Value::Null, "{v}");
    assert_eq!(v["body"], "data", "{v}");
}

// ---------------------------------------------------------------------------------------------
// Listings with control characters
// ---------------------------------------------------------------------------------------------

const LISTING_SCRIPT: &str = r#"
from urllib.parse import unquote_plus
b = "ctl"
s3.create_bucket(Bucket=b)
keys = ["a\nb/c", "a\nb/d", "a\nx", "a\tz", "a\x01q", "a b+c%", "p\rq"]
for k in keys:
    s3.put_object(Bucket=b, Key=k, Body=b"x")

def keys_of(r):
    return [o["Key"] for o in r.get("Contents", [])]
def prefixes_of(r):
    return [p["Prefix"] for p in r.get("CommonPrefixes", [])]

# boto3 asks for encoding-type=url itself and decodes the answer.
r = s3.list_objects_v2(Bucket=b)
out["all"] = keys_of(r)
r = s3.list_objects_v2(Bucket=b, Prefix="a\n", Delimiter="/")
out["v2"] = [r["Prefix"], r["Delimiter"], keys_of(r), prefixes_of(r)]
r = s3.list_objects_v2(Bucket=b, Prefix="a", Delimiter="\n")
out["v2_newline_delimiter"] = [r["Delimiter"], keys_of(r), prefixes_of(r)]
r = s3.list_objects_v2(Bucket=b, StartAfter="a\nb/c", MaxKeys=1)
out["v2_start_after"] = [r["StartAfter"], keys_of(r), r["IsTruncated"]]
token = r["NextContinuationToken"]
r = s3.list_objects_v2(Bucket=b, StartAfter="a\nb/c", ContinuationToken=token, MaxKeys=1)
out["v2_token"] = [r.get("StartAfter"), r["ContinuationToken"] == token, keys_of(r)]
r = s3.list_objects_v2(Bucket=b, Prefix="a\x01")
out["v2_soh"] = [r["Prefix"], keys_of(r)]

r = s3.list_objects(Bucket=b, Prefix="a\n", Delimiter="/")
# botocore leaves ListObjects' (v1) Prefix encoded: it decodes only Delimiter, Marker,
# NextMarker, keys and common prefixes there (boto/boto3#3534), as against AWS.
out["v1"] = [unquote_plus(r["Prefix"]), r["Delimiter"], keys_of(r), prefixes_of(r)]
# A marker inside a common prefix (a key under it) resumes after the whole group, as AWS does,
# and so does the common prefix itself, as NextMarker gives it.
r = s3.list_objects(Bucket=b, Marker="a\nb/c", Delimiter="/", MaxKeys=1)
out["v1_marker"] = [r["Marker"], r["NextMarker"], prefixes_of(r), keys_of(r)]
r = s3.list_objects(Bucket=b, Marker=r["NextMarker"], Delimiter="/", MaxKeys=1)
out["v1_next"] = [r["Marker"], keys_of(r)]
r = s3.list_objects(Bucket=b, Delimiter="/", MaxKeys=3)
out["v1_group"] = [r["NextMarker"], prefixes_of(r), keys_of(r)]
r = s3.list_objects(Bucket=b, Marker=r["NextMarker"], Delimiter="/", MaxKeys=1)
out["v1_after_group"] = [r["Marker"], keys_of(r)]

# Asked for by the caller, the encoding is left to it: the values as S3 encodes them.
r = s3.list_objects_v2(Bucket=b, Prefix="a\n", Delimiter="/", EncodingType="url")
out["v2_raw"] = [r["Prefix"], r["Delimiter"], keys_of(r), prefixes_of(r)]
r = s3.list_objects(Bucket=b, Prefix="a", Marker="a\x01q", EncodingType="url")
out["v1_raw"] = [r["Prefix"], r["Marker"], keys_of(r)]
"#;

/// Prefixes, delimiters, markers and keys holding control characters (a newline among them)
/// with `encoding-type=url`: encoded as AWS encodes them, so that clients decode them back.
#[test]
fn listings_with_control_characters_decode_back() {
    let cluster = Cluster::start(Opts::default());
    let v = boto3(&cluster, "listing", LISTING_SCRIPT);
    let j = |v: serde_json::Value| v;
    assert_eq!(
        v["all"],
        j(serde_json::json!([
            "a\u{1}q", "a\tz", "a\nb/c", "a\nb/d", "a\nx", "a b+c%", "p\rq"
        ])),
        "{v}"
    );
    assert_eq!(
        v["v2"],
        serde_json::json!(["a\n", "/", ["a\nx"], ["a\nb/"]]),
        "{v}"
    );
    assert_eq!(
        v["v2_newline_delimiter"],
        serde_json::json!(["\n", ["a\u{1}q", "a\tz", "a b+c%"], ["a\n"]]),
        "{v}"
    );
    assert_eq!(
        v["v2_start_after"],
        serde_json::json!(["a\nb/c", ["a\nb/d"], true]),
        "{v}"
    );
    // With a continuation token, the listing resumes from it; both are echoed.
    assert_eq!(
        v["v2_token"],
        serde_json::json!(["a\nb/c", true, ["a\nx"]]),
        "{v}"
    );
    assert_eq!(
        v["v2_soh"],
        serde_json::json!(["a\u{1}", ["a\u{1}q"]]),
        "{v}"
    );
    assert_eq!(
        v["v1"],
        serde_json::json!(["a\n", "/", ["a\nx"], ["a\nb/"]]),
        "{v}"
    );
    assert_eq!(
        v["v1_marker"],
        serde_json::json!(["a\nb/c", "a\nx", [], ["a\nx"]]),
        "{v}"
    );
    assert_eq!(v["v1_next"], serde_json::json!(["a\nx", ["a b+c%"]]), "{v}");
    assert_eq!(
        v["v1_group"],
        serde_json::json!(["a\nb/", ["a\nb/"], ["a\u{1}q", "a\tz"]]),
        "{v}"
    );
    assert_eq!(
        v["v1_after_group"],
        serde_json::json!(["a\nb/", ["a\nx"]]),
        "{v}"
    );
    assert_eq!(
        v["v2_raw"],
        serde_json::json!(["a%0A", "/", ["a%0Ax"], ["a%0Ab/"]]),
        "{v}"
    );
    assert_eq!(
        v["v1_raw"],
        serde_json::json!([
            "a",
            "a%01q",
            ["a%09z", "a%0Ab/c", "a%0Ab/d", "a%0Ax", "a%20b%2Bc%25"]
        ]),
        "{v}"
    );

    // A client that does not ask for the encoding gets XML that parses back to the keys: a
    // carriage return escaped (an XML parser reads a literal one as a line feed).
    let c = cluster.client();
    rt().block_on(async {
        let r = c
            .list_objects_v2()
            .bucket("ctl")
            .prefix("p")
            .send()
            .await
            .unwrap();
        let keys: Vec<_> = r.contents().iter().filter_map(|o| o.key()).collect();
        assert_eq!(keys, ["p\rq"]);
    });

    // The aws CLI lists under a prefix with a newline.
    let (ok, out, err) = aws(&cluster, &["s3", "ls", "s3://ctl/a\n"]);
    assert!(ok, "{err}");
    assert!(out.contains(" PRE a\nb/\n"), "{out:?}");
    assert!(out.contains(" 1 a\nx\n"), "{out:?}");
    assert_eq!(out.matches(" 1 ").count(), 1, "{out:?}");
    let (ok, out, err) = aws(&cluster, &["s3", "ls", "--recursive", "s3://ctl/a\n"]);
    assert!(ok, "{err}");
    for key in ["a\nb/c", "a\nb/d", "a\nx"] {
        assert!(out.contains(&format!(" 1 {key}\n")), "{key:?} in {out:?}");
    }
    assert_eq!(out.matches(" 1 ").count(), 3, "{out:?}");
}

// ---------------------------------------------------------------------------------------------
// Presigned URLs
// ---------------------------------------------------------------------------------------------

const PRESIGNED_SCRIPT: &str = r#"
b = "pres"
s3.create_bucket(Bucket=b)
s3.put_object(Bucket=b, Key="k", Body=b"secret")
s3.put_bucket_acl(Bucket=b, ACL="public-read")
# SigV4 query signing (botocore presigns S3 URLs with SigV2 unless told).
signer = boto3.client(
    "s3",
    endpoint_url=os.environ["TD_ENDPOINT"],
    region_name="us-east-1",
    aws_access_key_id=os.environ["TD_ACCESS_KEY"],
    aws_secret_access_key=os.environ["TD_SECRET_KEY"],
    config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
)
def get(expires):
    url = signer.generate_presigned_url("get_object", Params={"Bucket": b, "Key": "k"}, ExpiresIn=expires)
    status, body = fetch(url)
    code = body.split("<Code>")[1].split("</Code>")[0] if "<Code>" in body else body
    return [status, code]
for expires in [604800, 604801, 609901, 0, -7]:
    out[str(expires)] = get(expires)
# The bucket is public: an anonymous read is served...
out["anonymous"] = fetch(f"{os.environ['TD_ENDPOINT']}/{b}/k")
# ...but a signed request that fails is refused, never served as an anonymous one.
url = signer.generate_presigned_url("get_object", Params={"Bucket": b, "Key": "k"}, ExpiresIn=60)
sig = url.split("X-Amz-Signature=")[1][:64]
status, body = fetch(url.replace(sig, ("1" if sig[0] == "0" else "0") + sig[1:]))
out["tampered"] = [status, body.split("<Code>")[1].split("</Code>")[0]]
"#;

/// Presigned URLs that expired, or whose `X-Amz-Expires` is beyond a week or below one second,
/// are `403 AccessDenied`, as on AWS; a public bucket does not make a failed signed request an
/// anonymous one.
#[test]
fn presigned_urls_expired_or_out_of_range_are_403() {
    let cluster = Cluster::start(Opts::default());
    let v = boto3(&cluster, "presigned", PRESIGNED_SCRIPT);
    assert_eq!(v["604800"], serde_json::json!([200, "secret"]), "{v}");
    for expires in ["604801", "609901", "0", "-7"] {
        assert_eq!(
            v[expires],
            serde_json::json!([403, "AccessDenied"]),
            "X-Amz-Expires={expires}: {v}"
        );
    }
    assert_eq!(v["anonymous"], serde_json::json!([200, "secret"]), "{v}");
    assert_eq!(
        v["tampered"],
        serde_json::json!([403, "SignatureDoesNotMatch"]),
        "{v}"
    );

    // Expired: signed two minutes ago for one minute, on the public bucket.
    let c = cluster.client();
    let http = reqwest::Client::new();
    rt().block_on(async {
        let expired = aws_sdk_s3::presigning::PresigningConfig::builder()
            .start_time(SystemTime::now() - Duration::from_secs(120))
            .expires_in(Duration::from_secs(60))
            .build()
            .unwrap();
        let url = c
            .get_object()
            .bucket("pres")
            .key("k")
            .presigned(expired)
            .await
            .unwrap();
        let r = http.get(url.uri()).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 403);
        let text = r.text().await.unwrap();
        assert!(
            text.contains("<Code>AccessDenied</Code>") && text.contains("Request has expired"),
            "{text}"
        );
    });
}

// ---------------------------------------------------------------------------------------------
// SigV4 timed by a Date header
// ---------------------------------------------------------------------------------------------

const DATE_SCRIPT: &str = r#"
import datetime
b = "dated"
s3.create_bucket(Bucket=b)
# A request that carries a Date header is signed with it, not X-Amz-Date: botocore rewrites it
# as email.utils.formatdate does, with the zone `-0000`, and drops X-Amz-Date.
def add_date(params, **kwargs):
    params["headers"]["Date"] = "Thu, 01 Jan 1970 00:00:00 GMT"
sent = {}
def text(v):
    return v.decode() if isinstance(v, bytes) else v
def record(request, **kwargs):
    sent["date"] = text(request.headers.get("Date"))
    sent["amz_date"] = text(request.headers.get("X-Amz-Date"))
for op in ["PutObject", "GetObject"]:
    s3.meta.events.register(f"before-call.s3.{op}", add_date)
    s3.meta.events.register(f"before-send.s3.{op}", record)
s3.put_object(Bucket=b, Key="k", Body=b"dated body")
out["put_date"] = [sent["date"], sent["amz_date"]]
out["body"] = s3.get_object(Bucket=b, Key="k")["Body"].read().decode()
out["get_date"] = [sent["date"], sent["amz_date"]]
# The clock-skew check still applies: signed 20 minutes ago.
real = botocore.auth.get_current_datetime
botocore.auth.get_current_datetime = lambda: real() - datetime.timedelta(minutes=20)
out["skewed"] = code(lambda: s3.get_object(Bucket=b, Key="k"))
out["skewed_date"] = sent["date"]
botocore.auth.get_current_datetime = real
"#;

/// SigV4 timed by a `Date` header in RFC 2822 form with a numeric zone (botocore's), without
/// `X-Amz-Date`, verifies; more than 15 minutes off is still `RequestTimeTooSkewed`.
#[test]
fn sigv4_with_a_date_header_and_no_x_amz_date() {
    let cluster = Cluster::start(Opts::default());
    let v = boto3(&cluster, "date", DATE_SCRIPT);
    for op in ["put_date", "get_date"] {
        let date = v[op][0].as_str().unwrap_or_default();
        assert!(date.ends_with(" -0000"), "{op}: {v}");
        assert_eq!(v[op][1], serde_json::Value::Null, "{op}: {v}");
    }
    assert_eq!(v["body"], "dated body", "{v}");
    assert_eq!(
        v["skewed"],
        serde_json::json!(["RequestTimeTooSkewed", 403]),
        "{v}"
    );
    assert!(
        v["skewed_date"]
            .as_str()
            .unwrap_or_default()
            .ends_with(" -0000"),
        "{v}"
    );
}

// ---------------------------------------------------------------------------------------------
// Checksums
// ---------------------------------------------------------------------------------------------

const CHECKSUM_SCRIPT: &str = r#"
b = "sums"
s3.create_bucket(Bucket=b)
body = b"hello world" * 1000
sizes = {"CRC32": 4, "CRC32C": 4, "SHA1": 20, "SHA256": 32, "CRC64NVME": 8}
for algo, size in sizes.items():
    wrong = base64.b64encode(bytes([7]) * size).decode()
    arg = {"Checksum" + algo: wrong}
    out["put-" + algo] = code(lambda: s3.put_object(Bucket=b, Key="k", Body=body, ChecksumAlgorithm=algo, **arg))
    # A file-like body too (botocore streams it).
    out["put-stream-" + algo] = code(lambda: s3.put_object(Bucket=b, Key="k", Body=io.BytesIO(body), ChecksumAlgorithm=algo, **arg))
    up = s3.create_multipart_upload(Bucket=b, Key="mp", ChecksumAlgorithm=algo)["UploadId"]
    out["part-" + algo] = code(lambda: s3.upload_part(Bucket=b, Key="mp", UploadId=up, PartNumber=1, Body=body, ChecksumAlgorithm=algo, **arg))
    plain = s3.create_multipart_upload(Bucket=b, Key="mp")["UploadId"]
    out["plain-part-" + algo] = code(lambda: s3.upload_part(Bucket=b, Key="mp", UploadId=plain, PartNumber=1, Body=body, ChecksumAlgorithm=algo, **arg))
out["stored"] = code(lambda: s3.head_object(Bucket=b, Key="k"))

# Complete: a wrong object checksum is BadDigest, also when a part's checksum is missing from
# the request (ceph's s3-tests test_multipart_checksum_sha256).
up = s3.create_multipart_upload(Bucket=b, Key="c", ChecksumAlgorithm="SHA256")["UploadId"]
p = s3.upload_part(Bucket=b, Key="c", UploadId=up, PartNumber=1, Body=body, ChecksumAlgorithm="SHA256")
parts = [{"ETag": p["ETag"], "PartNumber": 1}]
out["complete-missing"] = code(lambda: s3.complete_multipart_upload(Bucket=b, Key="c", UploadId=up, ChecksumSHA256="bad", MultipartUpload={"Parts": parts}))
parts[0]["ChecksumSHA256"] = p["ChecksumSHA256"]
out["complete-wrong"] = code(lambda: s3.complete_multipart_upload(Bucket=b, Key="c", UploadId=up, ChecksumSHA256="bad", MultipartUpload={"Parts": parts}))
"#;

/// A checksum given and wrong (`x-amz-checksum-*` of every algorithm, on PutObject and
/// UploadPart, as a header or a trailer) is `400 BadDigest`, and nothing is stored.
#[test]
fn wrong_checksums_are_bad_digest() {
    let cluster = Cluster::start(Opts::default());
    let v = boto3(&cluster, "checksums", CHECKSUM_SCRIPT);
    let bad_digest = serde_json::json!(["BadDigest", 400]);
    for algo in ["CRC32", "CRC32C", "SHA1", "SHA256", "CRC64NVME"] {
        for case in ["put-", "put-stream-", "part-", "plain-part-"] {
            assert_eq!(v[format!("{case}{algo}")], bad_digest, "{case}{algo}: {v}");
        }
    }
    assert_eq!(v["stored"], serde_json::json!(["404", 404]), "{v}");
    assert_eq!(v["complete-missing"], bad_digest, "{v}");
    assert_eq!(v["complete-wrong"], bad_digest, "{v}");

    // A wrong trailing checksum (aws-chunked), on PutObject and UploadPart.
    let c = cluster.client();
    let http = reqwest::Client::new();
    rt().block_on(async {
        let up = c
            .create_multipart_upload()
            .bucket("sums")
            .key("trailer")
            .send()
            .await
            .unwrap();
        let part_path = format!(
            "/sums/trailer?partNumber=1&uploadId={}",
            up.upload_id().unwrap()
        );
        for path in ["/sums/trailer", part_path.as_str()] {
            for (trailer, wrong) in [
                ("x-amz-checksum-crc32", "AAAAAA=="),
                ("x-amz-checksum-crc32c", "AAAAAA=="),
                ("x-amz-checksum-sha1", "AAAAAAAAAAAAAAAAAAAAAAAAAAA="),
                (
                    "x-amz-checksum-sha256",
                    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
                ),
                ("x-amz-checksum-crc64nvme", "AAAAAAAAAAA="),
            ] {
                let body = format!("5\r\nhello\r\n0\r\n{trailer}:{wrong}\r\n\r\n");
                let r = signed(
                    &http,
                    &cluster,
                    reqwest::Method::PUT,
                    path,
                    "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
                    &[
                        ("content-encoding", "aws-chunked"),
                        ("x-amz-decoded-content-length", "5"),
                        ("x-amz-trailer", trailer),
                    ],
                )
                .body(body)
                .send()
                .await
                .unwrap();
                let status = r.status().as_u16();
                let text = r.text().await.unwrap();
                assert!(
                    status == 400 && text.contains("<Code>BadDigest</Code>"),
                    "{path} {trailer}: {status} {text}"
                );
            }
        }
        let r = c.head_object().bucket("sums").key("trailer").send().await;
        assert!(r.is_err(), "a refused upload stores nothing");
    });
}

// ---------------------------------------------------------------------------------------------
// Concurrent re-uploads of a part
// ---------------------------------------------------------------------------------------------

/// Two uploads of one part number in flight at once: the one that completes last is the part,
/// and CompleteMultipartUpload naming its ETag succeeds (naming the other's is InvalidPart).
///
/// The first upload's body is held back halfway (its request is in the gateway, its first chunk
/// on the chunkservers) while the second is sent whole and acknowledged; then it is finished.
/// The order is set by the test, with no timing involved.
#[test]
fn concurrent_reuploads_of_a_part_the_last_to_complete_wins() {
    let cluster = Cluster::start(Opts::default());
    let c = cluster.client();
    let http = reqwest::Client::new();
    let first = data(TEST_CHUNK as usize + 100_000, 11);
    let second = data(200_000, 12);
    rt().block_on(async {
        c.create_bucket().bucket("parts").send().await.unwrap();
        let up = c
            .create_multipart_upload()
            .bucket("parts")
            .key("obj")
            .send()
            .await
            .unwrap();
        let id = up.upload_id().unwrap().to_string();

        // The first upload, its body fed through a channel of one slot.
        let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(1);
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv()
                .await
                .map(|b| (Ok::<_, std::io::Error>(bytes::Bytes::from(b)), rx))
        });
        let path = format!("/parts/obj?partNumber=1&uploadId={id}");
        let held = signed(
            &http,
            &cluster,
            reqwest::Method::PUT,
            &path,
            "UNSIGNED-PAYLOAD",
            &[],
        )
        .header("content-length", first.len())
        .body(reqwest::Body::wrap_stream(stream));
        let held = tokio::spawn(held.send());
        let cut = TEST_CHUNK as usize - 1;
        tx.send(first[..cut].to_vec()).await.unwrap();
        // Taken from the slot only once the first piece has gone out to the gateway.
        tx.send(first[cut..cut + 1].to_vec()).await.unwrap();

        // The second upload of part 1, whole, while the first is in flight.
        let done = c
            .upload_part()
            .bucket("parts")
            .key("obj")
            .upload_id(&id)
            .part_number(1)
            .body(ByteStream::from(second.clone()))
            .send()
            .await
            .unwrap();
        let second_etag = done.e_tag().unwrap().to_string();
        assert_eq!(second_etag, format!("\"{}\"", md5_hex(&second)));

        // The first completes last.
        tx.send(first[cut + 1..].to_vec()).await.unwrap();
        drop(tx);
        let r = held.await.unwrap().unwrap();
        assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
        let first_etag = r.headers()["etag"].to_str().unwrap().to_string();
        assert_eq!(first_etag, format!("\"{}\"", md5_hex(&first)));

        let parts = c
            .list_parts()
            .bucket("parts")
            .key("obj")
            .upload_id(&id)
            .send()
            .await
            .unwrap();
        assert_eq!(parts.parts().len(), 1);
        assert_eq!(parts.parts()[0].e_tag(), Some(first_etag.as_str()));

        let complete = |etag: &str| {
            c.complete_multipart_upload()
                .bucket("parts")
                .key("obj")
                .upload_id(&id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .parts(CompletedPart::builder().part_number(1).e_tag(etag).build())
                        .build(),
                )
                .send()
        };
        assert_eq!(code(complete(&second_etag).await), "InvalidPart");
        complete(&first_etag).await.unwrap();
        assert_eq!(get(&c, "parts", "obj").await.unwrap(), first);
    });
}

// ---------------------------------------------------------------------------------------------
// Conditional writes
// ---------------------------------------------------------------------------------------------

/// `If-Match` on PutObject and CompleteMultipartUpload: `*` holds for any existing object, an
/// ETag for that object's only; a missing key is `404 NoSuchKey` (its absence wins over the
/// precondition, as on AWS); a mismatch `412`. `If-None-Match: *` refuses to replace.
#[test]
fn conditional_writes_answer_as_aws() {
    let cluster = Cluster::start(Opts::default());
    let c = cluster.client();
    rt().block_on(async {
        c.create_bucket().bucket("cond").send().await.unwrap();
        let put_if = |key: &'static str, body: &'static [u8]| {
            c.put_object()
                .bucket("cond")
                .key(key)
                .body(ByteStream::from_static(body))
        };
        // A missing key: If-Match (`*` or an ETag) is NoSuchKey, If-None-Match: * creates it.
        let r = put_if("k", b"v0").if_match("*").send().await;
        assert_eq!(code(r), "NoSuchKey");
        let r = put_if("k", b"v0").if_match("\"0123\"").send().await;
        assert_eq!(code(r), "NoSuchKey");
        let v1 = put_if("k", b"v1").if_none_match("*").send().await.unwrap();
        // An existing key: `*` holds, the current ETag holds, another ETag is 412.
        let v2 = put_if("k", b"v2").if_match("*").send().await.unwrap();
        assert_eq!(
            code(
                put_if("k", b"v3")
                    .if_match(v1.e_tag().unwrap())
                    .send()
                    .await
            ),
            "PreconditionFailed"
        );
        put_if("k", b"v3")
            .if_match(v2.e_tag().unwrap())
            .send()
            .await
            .unwrap();
        let r = put_if("k", b"v4").if_none_match("*").send().await;
        assert_eq!(code(r), "PreconditionFailed");
        assert_eq!(get(&c, "cond", "k").await.unwrap(), b"v3");

        // CompleteMultipartUpload with If-Match: * on a missing key, then on an existing one.
        for (key, want) in [("missing", "NoSuchKey"), ("k", "ok")] {
            let up = c
                .create_multipart_upload()
                .bucket("cond")
                .key(key)
                .send()
                .await
                .unwrap();
            let part = c
                .upload_part()
                .bucket("cond")
                .key(key)
                .upload_id(up.upload_id().unwrap())
                .part_number(1)
                .body(ByteStream::from_static(b"mp"))
                .send()
                .await
                .unwrap();
            let r = c
                .complete_multipart_upload()
                .bucket("cond")
                .key(key)
                .upload_id(up.upload_id().unwrap())
                .if_match("*")
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .parts(
                            CompletedPart::builder()
                                .part_number(1)
                                .e_tag(part.e_tag().unwrap())
                                .build(),
                        )
                        .build(),
                )
                .send()
                .await;
            assert_eq!(code(r), want, "{key}");
        }
        assert_eq!(get(&c, "cond", "k").await.unwrap(), b"mp");
    });
}
