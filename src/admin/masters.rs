//! `tinydfs admin master add|remove`: changes to the master group (Raft membership).

use super::Target;
use clap::Subcommand;
use tinydfs_proto::meta::MembershipChange;

#[derive(Subcommand)]
pub enum MasterCmd {
    /// Add a master (started with `tinydfs master --join`) to the running group.
    Add {
        /// The new master's Raft id (never one used before).
        #[arg(long)]
        id: u64,
        /// The new master's internal address.
        #[arg(long)]
        addr: String,
        #[command(flatten)]
        target: Target,
    },
    /// Remove a master from the group; its id is retired.
    Remove {
        #[arg(long)]
        id: u64,
        #[command(flatten)]
        target: Target,
    },
}

/// `tinydfs admin master ...`: asks the leader for the change and prints the new voter set.
pub async fn master(cmd: MasterCmd) -> anyhow::Result<()> {
    let (change, target) = match cmd {
        MasterCmd::Add { id, addr, target } => (MembershipChange::Add { id, addr }, target),
        MasterCmd::Remove { id, target } => (MembershipChange::Remove { id }, target),
    };
    let voters = target
        .client()?
        .change_members(&change)
        .await
        .map_err(|e| anyhow::anyhow!("membership change failed: {e}"))?;
    println!("masters: {voters:?}");
    Ok(())
}
