//! Access keys against a real cluster: the bootstrap administrator key from the environment,
//! keys created with `tinydfs admin key`, per-bucket read / write / owner permissions, revocation,
//! and anonymous requests, refused unless the bucket is public-read.

mod common;

use aws_sdk_s3::types::BucketCannedAcl;
use common::*;
use std::time::Duration;

fn client_for(cluster: &Cluster, id: &str, secret: &str) -> aws_sdk_s3::Client {
    sdk_client(&cluster.endpoint, id, secret, true)
}

/// Waits until the gateways know a key (they reload keys every `key_refresh_ms`).
fn wait_known(cluster: &Cluster, c: &aws_sdk_s3::Client) {
    wait_until("the gateway to know the new key", || {
        rt().block_on(c.list_buckets().send()).is_ok()
    });
    let _ = cluster;
}

#[test]
fn keys_have_per_bucket_permissions_and_can_be_revoked() {
    let cluster = Cluster::start(Opts {
        extra: vec!["--gateway-arg=--key-refresh-ms=200".into()],
        ..Default::default()
    });
    let admin = cluster.client();
    rt().block_on(async {
        for b in ["shared", "private"] {
            admin.create_bucket().bucket(b).send().await.unwrap();
            put(&admin, b, "doc", data(1000, 1)).await.unwrap();
        }
    });
    let (rid, rsecret) = create_key(&cluster, &["--name", "reader", "--bucket", "shared=read"]);
    let (wid, wsecret) = create_key(&cluster, &["--name", "writer", "--bucket", "shared=write"]);
    let reader = client_for(&cluster, &rid, &rsecret);
    let writer = client_for(&cluster, &wid, &wsecret);
    wait_known(&cluster, &reader);
    wait_known(&cluster, &writer);
    rt().block_on(async {
        // Read: get and list its bucket; nothing else.
        assert_eq!(get(&reader, "shared", "doc").await.unwrap(), data(1000, 1));
        let lo = reader.list_objects_v2().bucket("shared").send().await;
        assert_eq!(code(lo), "ok");
        let p = reader
            .put_object()
            .bucket("shared")
            .key("x")
            .body(vec![1].into())
            .send()
            .await;
        assert_eq!(code(p), "AccessDenied");
        let g = reader
            .get_object()
            .bucket("private")
            .key("doc")
            .send()
            .await;
        assert_eq!(code(g), "AccessDenied");
        let names: Vec<String> = reader
            .list_buckets()
            .send()
            .await
            .unwrap()
            .buckets()
            .iter()
            .filter_map(|b| b.name().map(String::from))
            .collect();
        assert_eq!(names, vec!["shared".to_string()]);
        // Write: put and delete objects, but not delete the bucket or change its settings.
        put(&writer, "shared", "new", data(10, 2)).await.unwrap();
        let d = writer
            .delete_object()
            .bucket("shared")
            .key("new")
            .send()
            .await;
        assert_eq!(code(d), "ok");
        let db = writer.delete_bucket().bucket("shared").send().await;
        assert_eq!(code(db), "AccessDenied");
        // A key that creates a bucket owns it.
        writer.create_bucket().bucket("mine").send().await.unwrap();
        put(&writer, "mine", "k", data(5, 3)).await.unwrap();
        let g = reader.get_object().bucket("mine").key("k").send().await;
        assert_eq!(code(g), "AccessDenied");
        writer
            .delete_object()
            .bucket("mine")
            .key("k")
            .send()
            .await
            .unwrap();
        writer.delete_bucket().bucket("mine").send().await.unwrap();
        // The administrator (the bootstrap key) sees everything.
        let all = admin.list_buckets().send().await.unwrap();
        assert_eq!(all.buckets().len(), 2);
    });
    // Listing keys never shows a secret.
    let (c, out) = cluster.admin(&["key", "list"]);
    assert_eq!(c, 0, "{out}");
    assert!(out.contains(&rid) && out.contains("shared=read"), "{out}");
    assert!(
        !out.contains(&rsecret) && !out.contains(SECRET_KEY),
        "{out}"
    );
    let (_, json) = cluster.admin(&["key", "list", "--json"]);
    assert!(!json.contains(&wsecret), "{json}");
    // Grants change; revoked keys stop working.
    let (c, out) = cluster.admin(&["key", "grant", &rid, "private=read"]);
    assert_eq!(c, 0, "{out}");
    wait_until("the new grant to apply", || {
        rt().block_on(get(&reader, "private", "doc")).is_ok()
    });
    let (c, out) = cluster.admin(&["key", "delete", &rid]);
    assert_eq!(c, 0, "{out}");
    wait_until("the deleted key to be refused", || {
        code(rt().block_on(reader.list_buckets().send())) == "InvalidAccessKeyId"
    });
    // Bad input is a one-line error.
    let (c, out) = cluster.admin(&["key", "grant", &wid, "nosuchbucket=read"]);
    assert_ne!(c, 0);
    assert!(out.contains("NoSuchBucket"), "{out}");
    let (c, out) = cluster.admin(&["key", "create", "--bucket", "shared=admin"]);
    assert_ne!(c, 0);
    assert!(out.contains("not read, write or owner"), "{out}");
}

#[test]
fn anonymous_requests_are_refused_unless_the_bucket_is_public_read() {
    let cluster = Cluster::start(Opts::default());
    let admin = cluster.client();
    let body = data(3000, 9);
    rt().block_on(async {
        admin.create_bucket().bucket("www").send().await.unwrap();
        put(&admin, "www", "index.html", body.clone())
            .await
            .unwrap();
    });
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let url = format!("{}/www/index.html", cluster.endpoint);
    rt().block_on(async {
        let r = http.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 403);
        assert!(r.text().await.unwrap().contains("AccessDenied"));
        // The owner makes it public-read: anonymous reads and listings work, writes do not.
        admin
            .put_bucket_acl()
            .bucket("www")
            .acl(BucketCannedAcl::PublicRead)
            .send()
            .await
            .unwrap();
        let acl = admin.get_bucket_acl().bucket("www").send().await.unwrap();
        assert!(acl
            .grants()
            .iter()
            .any(|g| g.permission().map(|p| p.as_str()) == Some("READ")));
        let r = http.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().await.unwrap().as_ref(), body.as_slice());
        let r = http
            .get(format!("{}/www?list-type=2", cluster.endpoint))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.text().await.unwrap().contains("index.html"));
        let r = http.put(&url).body("defaced").send().await.unwrap();
        assert_eq!(r.status(), 403);
        let r = http.delete(&url).send().await.unwrap();
        assert_eq!(r.status(), 403);
        // Back to private.
        admin
            .put_bucket_acl()
            .bucket("www")
            .acl(BucketCannedAcl::Private)
            .send()
            .await
            .unwrap();
        let r = http.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 403);
        // Canned ACLs tinydfs does not have are refused, not ignored.
        let e = admin
            .put_bucket_acl()
            .bucket("www")
            .acl(BucketCannedAcl::PublicReadWrite)
            .send()
            .await;
        assert_eq!(code(e), "NotImplemented");
    });
}
