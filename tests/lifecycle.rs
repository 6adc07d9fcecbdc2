//! Bucket lifecycle configuration against a real local cluster: the S3 operations with aws-sdk-s3
//! and raw signed requests, and enforcement by the master's lifecycle worker with a one-second
//! lifecycle "day".

mod common;

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::{ByteStream, DateTime};
use aws_sdk_s3::types::{
    AbortIncompleteMultipartUpload, BucketLifecycleConfiguration, ExpirationStatus,
    LifecycleExpiration, LifecycleRule, LifecycleRuleFilter, Tag, Transition,
    TransitionStorageClass,
};
use common::*;
use md5::Digest;
use std::time::{Duration, Instant};

fn config(rules: Vec<LifecycleRule>) -> BucketLifecycleConfiguration {
    BucketLifecycleConfiguration::builder()
        .set_rules(Some(rules))
        .build()
        .unwrap()
}

fn prefix_filter(p: &str) -> LifecycleRuleFilter {
    LifecycleRuleFilter::builder().prefix(p).build()
}

fn expire_after(id: &str, prefix: &str, days: i32, on: bool) -> LifecycleRule {
    LifecycleRule::builder()
        .id(id)
        .filter(prefix_filter(prefix))
        .status(if on {
            ExpirationStatus::Enabled
        } else {
            ExpirationStatus::Disabled
        })
        .expiration(LifecycleExpiration::builder().days(days).build())
        .build()
        .unwrap()
}

fn abort_after(id: &str, prefix: &str, days: i32) -> LifecycleRule {
    LifecycleRule::builder()
        .id(id)
        .filter(prefix_filter(prefix))
        .status(ExpirationStatus::Enabled)
        .abort_incomplete_multipart_upload(
            AbortIncompleteMultipartUpload::builder()
                .days_after_initiation(days)
                .build(),
        )
        .build()
        .unwrap()
}

async fn put_rules(
    c: &aws_sdk_s3::Client,
    bucket: &str,
    rules: Vec<LifecycleRule>,
) -> Result<(), (String, Option<u16>, String)> {
    c.put_bucket_lifecycle_configuration()
        .bucket(bucket)
        .lifecycle_configuration(config(rules))
        .send()
        .await
        .map(|_| ())
        .map_err(|e| {
            (
                e.code().unwrap_or("").to_string(),
                e.raw_response().map(|r| r.status().as_u16()),
                e.message().unwrap_or("").to_string(),
            )
        })
}

async fn get_rules(c: &aws_sdk_s3::Client, bucket: &str) -> Result<Vec<LifecycleRule>, String> {
    c.get_bucket_lifecycle_configuration()
        .bucket(bucket)
        .send()
        .await
        .map(|o| o.rules().to_vec())
        .map_err(|e| e.code().unwrap_or("").to_string())
}

/// A PUT `/{bucket}?lifecycle` signed by hand: `payload` is the `x-amz-content-sha256` value
/// (a hash or `UNSIGNED-PAYLOAD`), `md5` an optional `Content-MD5`. Status and body.
async fn raw_put(
    cluster: &Cluster,
    bucket: &str,
    body: &str,
    payload: &str,
    md5: Option<String>,
) -> (u16, String) {
    let path = format!("/{bucket}");
    let (headers, _) = sign_v4(
        std::time::SystemTime::now(),
        "PUT",
        &cluster.s3_addr,
        &format!("{path}?lifecycle"),
        payload,
        &[],
    );
    let mut req = reqwest::Client::new()
        .put(format!("{}{path}?lifecycle", cluster.endpoint))
        .body(body.to_string());
    for (k, v) in headers.iter().filter(|(k, _)| k != "host") {
        req = req.header(k, v);
    }
    if let Some(m) = md5 {
        req = req.header("content-md5", m);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.text().await.unwrap())
}

/// Whole passes of the leader's lifecycle worker so far.
fn lifecycle_passes(cluster: &Cluster) -> u64 {
    cluster.status()["lifecycle_passes"].as_u64().unwrap_or(0)
}

fn md5_b64(body: &str) -> String {
    aws_smithy_types::base64::encode(md5::Md5::digest(body.as_bytes()))
}

const ONE_RULE: &str = "<LifecycleConfiguration><Rule><ID>raw</ID><Filter><Prefix>raw/</Prefix></Filter><Status>Enabled</Status><Expiration><Days>3</Days></Expiration></Rule></LifecycleConfiguration>";

#[test]
fn lifecycle_configuration_round_trips_and_is_validated_like_s3() {
    let cluster = Cluster::start(Opts::default());
    let c = cluster.client();
    rt().block_on(async {
        c.create_bucket().bucket("lc-bucket").send().await.unwrap();
        assert_eq!(
            get_rules(&c, "lc-bucket").await.unwrap_err(),
            "NoSuchLifecycleConfiguration"
        );
        assert_eq!(get_rules(&c, "nope").await.unwrap_err(), "NoSuchBucket");
        let err = put_rules(&c, "nope", vec![expire_after("a", "", 1, true)])
            .await
            .unwrap_err();
        assert_eq!(err.0, "NoSuchBucket");

        // Every supported shape reads back as it was put.
        #[allow(deprecated)] // the legacy top-level Prefix is what some users still send
        let legacy = LifecycleRule::builder()
            .id("legacy")
            .prefix("tmp/")
            .status(ExpirationStatus::Disabled)
            .expiration(
                LifecycleExpiration::builder()
                    .date(DateTime::from_secs(1_893_456_000)) // 2030-01-01
                    .build(),
            )
            .build()
            .unwrap();
        let everything = LifecycleRule::builder()
            .id("uploads")
            .filter(LifecycleRuleFilter::builder().build())
            .status(ExpirationStatus::Enabled)
            .abort_incomplete_multipart_upload(
                AbortIncompleteMultipartUpload::builder()
                    .days_after_initiation(7)
                    .build(),
            )
            .build()
            .unwrap();
        let rules = vec![
            expire_after("logs", "logs/", 30, true),
            everything,
            legacy,
            expire_after("spaces & <xml>", "a b/&", 2, false),
        ];
        put_rules(&c, "lc-bucket", rules.clone()).await.unwrap();
        assert_eq!(get_rules(&c, "lc-bucket").await.unwrap(), rules);

        // A PUT replaces the whole configuration; a rule without an ID is given one.
        let unnamed = LifecycleRule::builder()
            .filter(prefix_filter("x/"))
            .status(ExpirationStatus::Enabled)
            .expiration(LifecycleExpiration::builder().days(1).build())
            .build()
            .unwrap();
        put_rules(&c, "lc-bucket", vec![unnamed]).await.unwrap();
        let got = get_rules(&c, "lc-bucket").await.unwrap();
        assert_eq!(got.len(), 1);
        let id = got[0].id().unwrap_or("");
        assert!(!id.is_empty() && id.len() <= 255, "{id:?}");
        assert_eq!(got[0].filter().and_then(|f| f.prefix()), Some("x/"));

        // Refused like S3, and the stored configuration is unchanged.
        let bad_cases: Vec<(Vec<LifecycleRule>, &str, u16)> = vec![
            (vec![expire_after("zero", "", 0, true)], "InvalidArgument", 400),
            (
                vec![abort_after("neg", "", -1)],
                "InvalidArgument",
                400,
            ),
            (
                vec![expire_after("same", "a/", 1, true), expire_after("same", "b/", 2, true)],
                "InvalidArgument",
                400,
            ),
            (
                vec![expire_after(&"x".repeat(256), "", 1, true)],
                "InvalidArgument",
                400,
            ),
            (
                vec![LifecycleRule::builder()
                    .id("no-action")
                    .filter(prefix_filter("a/"))
                    .status(ExpirationStatus::Enabled)
                    .build()
                    .unwrap()],
                "InvalidRequest",
                400,
            ),
            (
                vec![LifecycleRule::builder()
                    .id("tag")
                    .filter(
                        LifecycleRuleFilter::builder()
                            .tag(Tag::builder().key("k").value("v").build().unwrap())
                            .build(),
                    )
                    .status(ExpirationStatus::Enabled)
                    .expiration(LifecycleExpiration::builder().days(1).build())
                    .build()
                    .unwrap()],
                "NotImplemented",
                501,
            ),
            (
                vec![LifecycleRule::builder()
                    .id("size")
                    .filter(
                        LifecycleRuleFilter::builder()
                            .object_size_greater_than(1024)
                            .build(),
                    )
                    .status(ExpirationStatus::Enabled)
                    .expiration(LifecycleExpiration::builder().days(1).build())
                    .build()
                    .unwrap()],
                "NotImplemented",
                501,
            ),
            (
                vec![LifecycleRule::builder()
                    .id("transition")
                    .filter(prefix_filter(""))
                    .status(ExpirationStatus::Enabled)
                    .transitions(
                        Transition::builder()
                            .days(30)
                            .storage_class(TransitionStorageClass::Glacier)
                            .build(),
                    )
                    .build()
                    .unwrap()],
                "NotImplemented",
                501,
            ),
        ];
        for (rules, code, status) in bad_cases {
            let id = rules[0].id().unwrap_or("").to_string();
            let err = put_rules(&c, "lc-bucket", rules).await.unwrap_err();
            assert_eq!((err.0.as_str(), err.1), (code, Some(status)), "rule {id}: {err:?}");
            if code == "NotImplemented" {
                // The message names what is missing.
                let named = ["Tag", "ObjectSizeGreaterThan", "Transition"];
                assert!(named.iter().any(|n| err.2.contains(n)), "{err:?}");
            }
        }
        assert_eq!(get_rules(&c, "lc-bucket").await.unwrap(), got);
        let too_many: Vec<LifecycleRule> = (0..1001)
            .map(|i| expire_after(&format!("r{i}"), &format!("p{i}/"), 1, true))
            .collect();
        let err = put_rules(&c, "lc-bucket", too_many).await.unwrap_err();
        assert_eq!(err.0, "MalformedXML", "{err:?}");
        let most: Vec<LifecycleRule> = (0..1000)
            .map(|i| expire_after(&format!("r{i}"), &format!("p{i}/"), 1, true))
            .collect();
        put_rules(&c, "lc-bucket", most).await.unwrap();
        assert_eq!(get_rules(&c, "lc-bucket").await.unwrap().len(), 1000);

        // Raw requests: malformed documents, unsupported filters and body integrity.
        let sha = sha_hex(ONE_RULE.as_bytes());
        let (status, text) = raw_put(&cluster, "lc-bucket", "<LifecycleConfiguration><Rule>", &sha_hex(b"<LifecycleConfiguration><Rule>"), None).await;
        assert_eq!(status, 400, "{text}");
        assert!(text.contains("<Code>MalformedXML</Code>"), "{text}");
        let and = "<LifecycleConfiguration><Rule><Filter><And><Prefix>a/</Prefix></And></Filter><Status>Enabled</Status><Expiration><Days>1</Days></Expiration></Rule></LifecycleConfiguration>";
        let (status, text) = raw_put(&cluster, "lc-bucket", and, &sha_hex(and.as_bytes()), None).await;
        assert_eq!(status, 501, "{text}");
        assert!(text.contains("<Code>NotImplemented</Code>") && text.contains("And"), "{text}");
        let (status, text) =
            raw_put(&cluster, "lc-bucket", ONE_RULE, "UNSIGNED-PAYLOAD", Some(md5_b64("other"))).await;
        assert_eq!(status, 400, "{text}");
        assert!(text.contains("<Code>BadDigest</Code>"), "{text}");
        let (status, text) = raw_put(&cluster, "lc-bucket", ONE_RULE, "UNSIGNED-PAYLOAD", None).await;
        assert_eq!(status, 400, "{text}");
        assert!(text.contains("<Code>InvalidRequest</Code>"), "{text}");
        assert_eq!(get_rules(&c, "lc-bucket").await.unwrap().len(), 1000, "unchanged");
        let (status, text) =
            raw_put(&cluster, "lc-bucket", ONE_RULE, "UNSIGNED-PAYLOAD", Some(md5_b64(ONE_RULE))).await;
        assert_eq!(status, 200, "{text}");
        let (status, text) = raw_put(&cluster, "lc-bucket", ONE_RULE, &sha, None).await;
        assert_eq!(status, 200, "{text}");
        let got = get_rules(&c, "lc-bucket").await.unwrap();
        assert_eq!(got, vec![expire_after("raw", "raw/", 3, true)]);

        // Delete: 204, then none; deleting again is fine, as on S3.
        for _ in 0..2 {
            let r = c
                .delete_bucket_lifecycle()
                .bucket("lc-bucket")
                .send()
                .await
                .unwrap();
            drop(r);
            assert_eq!(
                get_rules(&c, "lc-bucket").await.unwrap_err(),
                "NoSuchLifecycleConfiguration"
            );
        }
        // The bucket itself is untouched and deletable.
        c.delete_bucket().bucket("lc-bucket").send().await.unwrap();
    });
}

/// Whether an upload still exists (ListParts answers rather than NoSuchUpload).
async fn upload_exists(c: &aws_sdk_s3::Client, bucket: &str, key: &str, id: &str) -> bool {
    match c
        .list_parts()
        .bucket(bucket)
        .key(key)
        .upload_id(id)
        .send()
        .await
    {
        Ok(_) => true,
        Err(e) if e.code() == Some("NoSuchUpload") => false,
        Err(e) => panic!("list parts of {key}: {e:?}"),
    }
}

async fn object_exists(c: &aws_sdk_s3::Client, bucket: &str, key: &str) -> bool {
    match c.head_object().bucket(bucket).key(key).send().await {
        Ok(_) => true,
        Err(e) if e.raw_response().map(|r| r.status().as_u16()) == Some(404) => false,
        Err(e) => panic!("head {key}: {e:?}"),
    }
}

async fn start_upload(c: &aws_sdk_s3::Client, bucket: &str, key: &str) -> String {
    let id = c
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap()
        .upload_id()
        .unwrap()
        .to_string();
    c.upload_part()
        .bucket(bucket)
        .key(key)
        .upload_id(&id)
        .part_number(1)
        .body(ByteStream::from(data(1000, 7)))
        .send()
        .await
        .unwrap();
    id
}

#[test]
fn lifecycle_rules_remove_expired_objects_and_stale_uploads() {
    let cluster = Cluster::start(Opts {
        extra: [
            "--lifecycle-day-ms",
            "1000",
            "--lifecycle-interval-ms",
            "200",
        ]
        .map(String::from)
        .to_vec(),
        ..Default::default()
    });
    let c = cluster.client();
    rt().block_on(async {
        for b in ["lc-bucket", "plain", "dated"] {
            c.create_bucket().bucket(b).send().await.unwrap();
        }
        let stale = start_upload(&c, "lc-bucket", "tmp/big").await;
        let kept_upload = start_upload(&c, "lc-bucket", "keep/big").await;
        for key in ["logs/1", "logs/2", "data/1", "keep/x"] {
            put(&c, "lc-bucket", key, data(100, 1)).await.unwrap();
        }
        put(&c, "plain", "logs/1", data(100, 2)).await.unwrap();
        for key in ["old/a", "new/a"] {
            put(&c, "dated", key, data(10, 3)).await.unwrap();
        }
        // (Checked before any rule exists: with one-second days it may go as soon as there is.)
        assert!(upload_exists(&c, "lc-bucket", "tmp/big", &stale).await);
        // Uploads under tmp/ are aborted and logs/ objects expire after a (one-second) day; the
        // same age under a disabled rule, another prefix or another bucket changes nothing.
        put_rules(
            &c,
            "lc-bucket",
            vec![
                abort_after("stale-uploads", "tmp/", 1),
                expire_after("logs", "logs/", 1, true),
                expire_after("off", "data/", 1, false),
            ],
        )
        .await
        .unwrap();
        // A date in the past expires every matching object at once.
        let dated = LifecycleRule::builder()
            .id("dated")
            .filter(prefix_filter("old/"))
            .status(ExpirationStatus::Enabled)
            .expiration(
                LifecycleExpiration::builder()
                    .date(DateTime::from_secs(1_577_836_800)) // 2020-01-01
                    .build(),
            )
            .build()
            .unwrap();
        put_rules(&c, "dated", vec![dated]).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let gone = !upload_exists(&c, "lc-bucket", "tmp/big", &stale).await
                && !object_exists(&c, "lc-bucket", "logs/1").await
                && !object_exists(&c, "lc-bucket", "logs/2").await
                && !object_exists(&c, "dated", "old/a").await;
            if gone {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the lifecycle rules were not applied within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        // Two more whole passes, then what no enabled rule selects is still there.
        let passes = lifecycle_passes(&cluster);
        while lifecycle_passes(&cluster) < passes + 2 {
            assert!(
                Instant::now() < deadline + Duration::from_secs(60),
                "no lifecycle passes"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(upload_exists(&c, "lc-bucket", "keep/big", &kept_upload).await);
        for (bucket, key) in [
            ("lc-bucket", "data/1"),
            ("lc-bucket", "keep/x"),
            ("plain", "logs/1"),
            ("dated", "new/a"),
        ] {
            assert!(
                object_exists(&c, bucket, key).await,
                "{bucket}/{key} was removed"
            );
        }
        let listed: Vec<String> = c
            .list_objects_v2()
            .bucket("lc-bucket")
            .send()
            .await
            .unwrap()
            .contents()
            .iter()
            .filter_map(|o| o.key().map(String::from))
            .collect();
        assert_eq!(listed, ["data/1", "keep/x"]);
        // Without the configuration nothing more goes.
        c.delete_bucket_lifecycle()
            .bucket("lc-bucket")
            .send()
            .await
            .unwrap();
        put(&c, "lc-bucket", "logs/3", data(10, 4)).await.unwrap();
        let passes = lifecycle_passes(&cluster);
        while lifecycle_passes(&cluster) < passes + 2 {
            assert!(
                Instant::now() < deadline + Duration::from_secs(120),
                "no lifecycle passes"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(object_exists(&c, "lc-bucket", "logs/3").await);
    });
}
