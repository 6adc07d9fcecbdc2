//! Bucket tagging (issue 16) with aws-sdk-s3 and boto3: put, get, replace, delete, S3's limits,
//! and the tags surviving a restart of the cluster (they are replicated metadata).

mod common;

use aws_sdk_s3::types::{Tag, Tagging};
use common::*;
use std::process::Command;

fn tagging(pairs: &[(&str, &str)]) -> Tagging {
    let mut t = Tagging::builder();
    for (k, v) in pairs {
        t = t.tag_set(Tag::builder().key(*k).value(*v).build().unwrap());
    }
    t.build().unwrap()
}

async fn tags_of(c: &aws_sdk_s3::Client, bucket: &str) -> Result<Vec<(String, String)>, String> {
    match c.get_bucket_tagging().bucket(bucket).send().await {
        Ok(out) => Ok(out
            .tag_set()
            .iter()
            .map(|t| (t.key().to_string(), t.value().to_string()))
            .collect()),
        Err(e) => Err(code(Err::<(), _>(e))),
    }
}

#[test]
fn bucket_tags_are_kept_replaced_and_removed() {
    let mut cluster = Cluster::start(Opts::default());
    let c = cluster.client();
    let rt = rt();
    rt.block_on(async {
        c.create_bucket().bucket("tagged").send().await.unwrap();
        // A new group's leader raises its feature level as soon as it leads (501 until then).
        wait_until_async(|| async { tags_of(&c, "tagged").await != Err("NotImplemented".into()) })
            .await;
        // None yet: NoSuchTagSet, as on AWS.
        assert_eq!(tags_of(&c, "tagged").await, Err("NoSuchTagSet".into()));
        c.put_bucket_tagging()
            .bucket("tagged")
            .tagging(tagging(&[("team", "storage"), ("cost center", "42 + 1")]))
            .send()
            .await
            .unwrap();
        assert_eq!(
            tags_of(&c, "tagged").await.unwrap(),
            [
                ("team".to_string(), "storage".to_string()),
                ("cost center".to_string(), "42 + 1".to_string())
            ]
        );
        // A second put replaces the whole set.
        c.put_bucket_tagging()
            .bucket("tagged")
            .tagging(tagging(&[("env", "prod")]))
            .send()
            .await
            .unwrap();
        assert_eq!(
            tags_of(&c, "tagged").await.unwrap(),
            [("env".to_string(), "prod".to_string())]
        );
        // S3's rules: duplicate keys, the aws: prefix, more than 50 tags.
        for bad in [
            tagging(&[("a", "1"), ("a", "2")]),
            tagging(&[("aws:x", "1")]),
            {
                let keys: Vec<String> = (0..51).map(|i| format!("k{i}")).collect();
                let pairs: Vec<(&str, &str)> = keys.iter().map(|k| (k.as_str(), "v")).collect();
                tagging(&pairs)
            },
        ] {
            let r = c
                .put_bucket_tagging()
                .bucket("tagged")
                .tagging(bad)
                .send()
                .await;
            assert_eq!(code(r), "InvalidTag");
        }
        // Fifty is allowed.
        let keys: Vec<String> = (0..50).map(|i| format!("k{i}")).collect();
        let pairs: Vec<(&str, &str)> = keys.iter().map(|k| (k.as_str(), "v")).collect();
        c.put_bucket_tagging()
            .bucket("tagged")
            .tagging(tagging(&pairs))
            .send()
            .await
            .unwrap();
        assert_eq!(tags_of(&c, "tagged").await.unwrap().len(), 50);
        // A missing bucket.
        assert_eq!(tags_of(&c, "absent").await, Err("NoSuchBucket".into()));
    });
    // Replicated metadata: the tags survive a restart of every node.
    cluster.stop();
    let cluster = Cluster::start_in(cluster.dir.clone(), Opts::default());
    let c = cluster.client();
    rt.block_on(async {
        wait_until_async(|| async { tags_of(&c, "tagged").await.map(|t| t.len()) == Ok(50) }).await;
        c.delete_bucket_tagging()
            .bucket("tagged")
            .send()
            .await
            .unwrap();
        assert_eq!(tags_of(&c, "tagged").await, Err("NoSuchTagSet".into()));
    });
}

/// Polls `pred` for up to 60 s (a restarted cluster elects its leader first).
async fn wait_until_async<F, Fut>(pred: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !pred().await {
        assert!(std::time::Instant::now() < deadline, "waited 60 s in vain");
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

#[test]
fn boto3_tags_a_bucket() {
    let cluster = Cluster::start(Opts::default());
    let python = std::env::var("TINYDFS_PYTHON")
        .expect("TINYDFS_PYTHON must name the python of the test venv (scripts/test.sh sets it)");
    let script = r#"
import boto3, sys
from botocore.config import Config
s3 = boto3.client("s3", endpoint_url=sys.argv[1], aws_access_key_id=sys.argv[2],
                  aws_secret_access_key=sys.argv[3], region_name="us-east-1",
                  config=Config(retries={"max_attempts": 1}))
s3.create_bucket(Bucket="py-tags")
import time
for _ in range(240):  # a new group's level rises as soon as its leader leads (501 until then)
    try:
        s3.get_bucket_tagging(Bucket="py-tags")
        break
    except s3.exceptions.ClientError as e:
        if e.response["Error"]["Code"] != "NotImplemented":
            break
        time.sleep(0.25)
s3.put_bucket_tagging(Bucket="py-tags", Tagging={"TagSet": [{"Key": "owner", "Value": "ops@example"}]})
got = s3.get_bucket_tagging(Bucket="py-tags")["TagSet"]
assert got == [{"Key": "owner", "Value": "ops@example"}], got
s3.delete_bucket_tagging(Bucket="py-tags")
try:
    s3.get_bucket_tagging(Bucket="py-tags")
    raise SystemExit("tags still there")
except s3.exceptions.ClientError as e:
    assert e.response["Error"]["Code"] == "NoSuchTagSet", e.response
print("ok")
"#;
    let out = Command::new(python)
        .args(["-c", script, &cluster.endpoint, ACCESS_KEY, SECRET_KEY])
        .env_remove("AWS_PROFILE")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok",
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
