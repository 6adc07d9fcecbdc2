//! `tinydfs admin decommission` and `tinydfs admin rebalance`: moving data between
//! chunkservers, to empty one before it is removed or to even out their usage.

use super::Target;
use anyhow::{bail, Context};
use clap::Args;
use std::time::Duration;

#[derive(Args)]
pub struct DecommissionArgs {
    /// The chunkserver: its id or its address.
    node: String,
    /// Cancel a decommission instead (the node takes data again).
    #[arg(long)]
    cancel: bool,
    /// Wait until the node holds nothing any more.
    #[arg(long)]
    wait: bool,
    /// Seconds to wait at most with --wait.
    #[arg(long, default_value_t = 3600.0)]
    timeout: f64,
    #[command(flatten)]
    target: Target,
}

/// `tinydfs admin decommission`.
pub async fn decommission(a: DecommissionArgs) -> anyhow::Result<()> {
    let client = a.target.client()?;
    let id = client
        .drain(&tinydfs_proto::meta::DrainRequest {
            node: a.node.clone(),
            drain: !a.cancel,
        })
        .await
        .map_err(|e| anyhow::anyhow!("decommission failed: {e}"))?;
    if a.cancel {
        println!("chunkserver {id}: decommission cancelled");
        return Ok(());
    }
    let deadline = std::time::Instant::now() + Duration::from_secs_f64(a.timeout);
    loop {
        let s = client
            .status()
            .await
            .map_err(|e| anyhow::anyhow!("the master does not answer: {e}"))?;
        let node = s
            .nodes
            .iter()
            .find(|n| n.role == "chunkserver" && n.id == id)
            .context("the chunkserver is no longer listed")?;
        println!(
            "chunkserver {id} ({}): {}, {} left",
            node.addr,
            node.state,
            crate::plural(node.chunks, "chunk")
        );
        if !a.wait || node.state == "drained" {
            if node.state == "drained" {
                println!("chunkserver {id} holds no data: it may be stopped and removed");
            }
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            bail!("chunkserver {id} is not drained yet");
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

#[derive(Args)]
pub struct RebalanceArgs {
    /// Stop a running rebalance.
    #[arg(long)]
    stop: bool,
    /// Wait until usage is even.
    #[arg(long)]
    wait: bool,
    /// Seconds to wait at most with --wait.
    #[arg(long, default_value_t = 3600.0)]
    timeout: f64,
    #[command(flatten)]
    target: Target,
}

/// `tinydfs admin rebalance`.
pub async fn rebalance(a: RebalanceArgs) -> anyhow::Result<()> {
    let client = a.target.client()?;
    let r = client
        .rebalance(!a.stop)
        .await
        .map_err(|e| anyhow::anyhow!("rebalance failed: {e}"))?;
    for (id, used) in &r.usage {
        println!("chunkserver {id}: {:.1}% used", used * 100.0);
    }
    println!(
        "rebalance {} (threshold {:.1} points)",
        if r.running { "running" } else { "stopped" },
        r.threshold * 100.0
    );
    if !a.wait || a.stop {
        return Ok(());
    }
    let deadline = std::time::Instant::now() + Duration::from_secs_f64(a.timeout);
    loop {
        let s = client
            .status()
            .await
            .map_err(|e| anyhow::anyhow!("the master does not answer: {e}"))?;
        if !s.rebalancing {
            println!("rebalance finished");
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            bail!("the rebalance is still running");
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}
