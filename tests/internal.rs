//! The internal listeners of masters and chunkservers refuse every request that does not carry
//! the cluster secret, on every internal route, whatever the method and body; only the health
//! paths are open, and they tell nothing but the role.

mod common;

use common::*;
use std::time::Duration;

/// Every internal route of a master (as `master/src/api.rs` and `network.rs` serve them).
const MASTER_ROUTES: &[(&str, &str)] = &[
    ("POST", "/internal/v1/meta/write"),
    ("POST", "/internal/v1/meta/read"),
    ("POST", "/internal/v1/placement"),
    ("POST", "/internal/v1/register"),
    ("POST", "/internal/v1/heartbeat"),
    ("GET", "/internal/v1/status"),
    ("POST", "/internal/v1/status"),
    ("POST", "/internal/v1/members"),
    ("POST", "/internal/v1/gateway-heartbeat"),
    ("GET", "/internal/v1/fsck"),
    ("POST", "/internal/v1/drain"),
    ("POST", "/internal/v1/rebalance"),
    ("GET", "/internal/v1/backup"),
    ("GET", "/internal/v1/buckets"),
    ("POST", "/internal/v1/raft/append"),
    ("POST", "/internal/v1/raft/vote"),
    ("POST", "/internal/v1/raft/snapshot"),
];

/// Every internal route of a chunkserver.
const CHUNKSERVER_ROUTES: &[(&str, &str)] = &[
    ("GET", "/internal/v1/chunk/000000010000000000000000000000aa"),
    ("PUT", "/internal/v1/chunk/000000010000000000000000000000aa"),
    (
        "DELETE",
        "/internal/v1/chunk/000000010000000000000000000000aa",
    ),
    (
        "POST",
        "/internal/v1/chunk/000000010000000000000000000000aa/replicate",
    ),
];

#[test]
fn internal_endpoints_refuse_requests_without_the_cluster_secret() {
    let cluster = Cluster::start(Opts::default());
    let c = cluster.client();
    rt().block_on(async {
        c.create_bucket().bucket("guarded").send().await.unwrap();
        put(&c, "guarded", "k", data(1000, 1)).await.unwrap();
    });
    let secret = std::fs::read_to_string(cluster.dir.join("cluster.secret")).unwrap();
    let master = cluster.masters()[0].clone();
    let chunkserver = cluster.addr("chunkserver-1");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .no_proxy()
        .build()
        .unwrap();
    let targets = MASTER_ROUTES
        .iter()
        .map(|r| (master.as_str(), r))
        .chain(CHUNKSERVER_ROUTES.iter().map(|r| (chunkserver.as_str(), r)));
    rt().block_on(async {
        for (addr, (method, path)) in targets {
            for given in [None, Some("wrong-secret"), Some("")] {
                let mut rb = http
                    .request(method.parse().unwrap(), format!("http://{addr}{path}"))
                    .body("{}");
                if let Some(s) = given {
                    rb = rb.header("x-tinydfs-secret", s);
                }
                let r = rb.send().await.unwrap();
                let status = r.status().as_u16();
                let body = r.text().await.unwrap();
                assert_eq!(
                    status, 403,
                    "{method} {addr}{path} with secret {given:?} answered {status}: {body}"
                );
                assert!(!body.contains(secret.trim()));
            }
        }
        // The same request with the secret is served (the routes above are real).
        let r = http
            .get(format!("http://{master}/internal/v1/status"))
            .header("x-tinydfs-secret", secret.trim())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        // Health is open and says only what the node is.
        for addr in [&master, &chunkserver] {
            let r = http
                .get(format!("http://{addr}/_health"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let body = r.text().await.unwrap();
            assert!(body.len() < 400 && !body.contains(secret.trim()), "{body}");
        }
    });
}

/// `rb` with the secret, the wire version and `cluster_id` as its sender's cluster.
fn as_cluster(
    rb: reqwest::RequestBuilder,
    secret: &str,
    cluster_id: &str,
) -> reqwest::RequestBuilder {
    rb.header(tinydfs_proto::SECRET_HEADER, secret.trim())
        .header(tinydfs_proto::CLUSTER_HEADER, cluster_id)
        .header(
            tinydfs_proto::VERSION_HEADER,
            tinydfs_proto::WIRE_VERSION.to_string(),
        )
}

#[test]
fn internal_requests_of_another_cluster_are_refused() {
    let cluster = Cluster::start(Opts::default());
    let secret = std::fs::read_to_string(cluster.dir.join("cluster.secret")).unwrap();
    let ours = cluster.status()["cluster_id"].as_str().unwrap().to_string();
    let master = cluster.masters()[0].clone();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .no_proxy()
        .build()
        .unwrap();
    rt().block_on(async {
        for (cluster_id, want) in [
            ("another-cluster", 409u16),
            (ours.as_str(), 200),
            // A node that does not know its cluster yet (or an older one) is let through.
            ("", 200),
        ] {
            let rb = http.get(format!("http://{master}/internal/v1/status"));
            let r = as_cluster(rb, &secret, cluster_id).send().await.unwrap();
            let status = r.status().as_u16();
            let text = r.text().await.unwrap();
            assert_eq!(status, want, "cluster {cluster_id:?}: {text}");
            if want == 409 {
                assert!(
                    text.contains("belongs to cluster another-cluster"),
                    "{text}"
                );
            }
        }
        // A chunkserver too: an order of another cluster is refused before it is read.
        let chunkserver = cluster.addr("chunkserver-1");
        for (cluster_id, refused) in [("another-cluster", true), (ours.as_str(), false)] {
            let rb = http.delete(format!(
                "http://{chunkserver}/internal/v1/chunk/000000010000000000000000000000aa"
            ));
            let r = as_cluster(rb, &secret, cluster_id).send().await.unwrap();
            assert_eq!(
                r.status().as_u16() == 409,
                refused,
                "cluster {cluster_id:?}"
            );
        }
    });
}
