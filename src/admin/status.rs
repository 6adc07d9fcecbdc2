//! `tinydfs admin status` and `tinydfs admin buckets`: the nodes of the cluster, and what it
//! holds.

use super::Target;
use clap::Args;

#[derive(Args)]
pub struct StatusArgs {
    #[command(flatten)]
    target: Target,
    /// Print JSON for scripts.
    #[arg(long)]
    json: bool,
}

/// `tinydfs admin status`.
pub async fn status(a: StatusArgs) -> anyhow::Result<()> {
    let local = a.target.local()?;
    let client = a.target.client()?;
    let mut s = client
        .status()
        .await
        .map_err(|e| anyhow::anyhow!("the master does not answer: {e}"))?;
    if let Some(l) = &local {
        // Gateways report themselves to the leader; one that never did is looked up here.
        let known: Vec<String> = s
            .nodes
            .iter()
            .filter(|n| n.role == "gateway")
            .map(|n| n.addr.clone())
            .collect();
        for n in l
            .nodes
            .iter()
            .filter(|n| n.role == "gateway" && !known.contains(&n.addr))
        {
            let up = crate::health(&n.addr, 2.0, None).await.is_ok()
                || tokio::net::TcpStream::connect(&n.addr).await.is_ok();
            s.nodes.push(tinydfs_proto::meta::NodeStatus {
                id: 0,
                role: "gateway".into(),
                addr: n.addr.clone(),
                state: if up { "alive" } else { "dead" }.into(),
                pid: n.pid,
                capacity: 0,
                free: 0,
                chunks: 0,
                raft: None,
                ..Default::default()
            });
        }
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    println!("cluster {}", s.cluster_id);
    println!(
        "{:<12} {:>4} {:<22} {:<12} {:<8} {:>8} {:>8} {:>14}  RAFT",
        "ROLE", "ID", "ADDRESS", "STATE", "ZONE", "PID", "CHUNKS", "FREE"
    );
    for n in &s.nodes {
        let raft = n
            .raft
            .as_ref()
            .map(|r| {
                format!(
                    "term {} applied {} log {}",
                    r.term, r.applied_index, r.last_log_index
                )
            })
            .unwrap_or_default();
        println!(
            "{:<12} {:>4} {:<22} {:<12} {:<8} {:>8} {:>8} {:>14}  {raft}",
            n.role,
            n.id,
            n.addr,
            n.state,
            n.zone,
            n.pid.map(|p| p.to_string()).unwrap_or_default(),
            n.chunks,
            n.free
        );
    }
    println!(
        "buckets {}  objects {}  chunks {}  under-replicated {}  lost {}{}",
        s.buckets,
        s.objects,
        s.chunks,
        s.under_replicated,
        s.lost,
        if s.rebalancing { "  (rebalancing)" } else { "" }
    );
    Ok(())
}

#[derive(Args)]
pub struct BucketsArgs {
    #[command(flatten)]
    target: Target,
    /// Print JSON for scripts.
    #[arg(long)]
    json: bool,
}

/// `tinydfs admin buckets`.
pub async fn buckets(a: BucketsArgs) -> anyhow::Result<()> {
    let list = a
        .target
        .client()?
        .bucket_usage()
        .await
        .map_err(|e| anyhow::anyhow!("the master does not answer: {e}"))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    println!(
        "{:<40} {:>12} {:>16}  {:<20}  OWNER",
        "BUCKET", "OBJECTS", "BYTES", "CREATED"
    );
    for b in &list {
        println!(
            "{:<40} {:>12} {:>16}  {:<20}  {}",
            b.name,
            b.objects,
            b.bytes,
            tinydfs_proto::time::iso8601(b.created_ms),
            b.owner
        );
    }
    Ok(())
}
