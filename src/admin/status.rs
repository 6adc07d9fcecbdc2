//! `tinydfs admin status` and `tinydfs admin buckets`: the nodes of the cluster, and what it
//! holds.

use super::Target;
use clap::Args;

#[derive(Args)]
pub struct StatusArgs {
    #[command(flatten)]
    target: Target,
    /// Print JSON for scripts (sizes in bytes).
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
            let up = crate::health::check(&n.addr, 2.0, None).await.is_ok()
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
    // A local cluster's nodes also have an operations address (health, /metrics), which the
    // masters do not know: `cluster.json` has it.
    let ops_of = |addr: &str| {
        local
            .as_ref()
            .and_then(|l| l.nodes.iter().find(|n| n.addr == addr))
            .map(|n| n.ops_addr.clone())
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| "-".into())
    };
    let ops_header = if local.is_some() {
        format!(" {:<22}", "OPS")
    } else {
        String::new()
    };
    println!(
        "{:<12} {:>4} {:<22}{ops_header} {:<12} {:<8} {:>8} {:>8} {:>10}  RAFT",
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
        let ops = if local.is_some() {
            format!(" {:<22}", ops_of(&n.addr))
        } else {
            String::new()
        };
        // Only chunkservers store data: the others have no free space to speak of.
        let free = if n.role == "chunkserver" {
            crate::human_bytes(n.free)
        } else {
            "-".into()
        };
        println!(
            "{:<12} {:>4} {:<22}{ops} {:<12} {:<8} {:>8} {:>8} {:>10}  {raft}",
            n.role,
            n.id,
            n.addr,
            n.state,
            n.zone,
            n.pid.map(|p| p.to_string()).unwrap_or_default(),
            n.chunks,
            free
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
    /// Print JSON for scripts (sizes in bytes).
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
        "{:<40} {:>12} {:>10}  {:<20}  OWNER",
        "BUCKET", "OBJECTS", "SIZE", "CREATED"
    );
    for b in &list {
        println!(
            "{:<40} {:>12} {:>10}  {:<20}  {}",
            b.name,
            b.objects,
            crate::human_bytes(b.bytes),
            tinydfs_proto::time::iso8601(b.created_ms),
            b.owner
        );
    }
    Ok(())
}
