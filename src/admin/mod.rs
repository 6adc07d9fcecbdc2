//! `tinydfs admin`: commands that administer a running cluster through its masters' internal
//! API, authenticated by the cluster secret. They are thin: each asks the master leader one
//! thing ([`tinydfs_proto::client::MasterClient`]) and prints the answer for people, or as JSON
//! for scripts.
//!
//! - [`Target`] (here): which cluster, from flags or from a local `tinydfs server` data folder.
//! - `status.rs`: `status` and `buckets`, the nodes and what the cluster holds.
//! - `fsck.rs`: `fsck`, the health of every object's chunks (its exit code says it).
//! - `chunkservers.rs`: `decommission` and `rebalance`, moving data between chunkservers.
//! - `masters.rs`: `master add|remove`, the membership of the Raft group.
//! - `backup.rs`: `backup`, a consistent copy of the metadata.
//! - `key.rs`: `key create|list|grant|delete`, the S3 access keys.

mod backup;
mod chunkservers;
mod fsck;
mod key;
mod masters;
mod status;

use crate::server::ClusterFile;
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use masters::MasterCmd;
use std::path::PathBuf;
use tinydfs_proto::client::MasterClient;

// (No doc comment: clap would take it for the help of `tinydfs admin`.)
#[derive(Subcommand)]
pub enum AdminCmd {
    /// Nodes with role, address, state and process id; chunk and object counts.
    Status(status::StatusArgs),
    /// Change the master group.
    Master {
        #[command(subcommand)]
        cmd: MasterCmd,
    },
    /// Check every object's chunks; exit 0 when healthy, 1 when not, 2 when it cannot tell.
    Fsck(fsck::FsckArgs),
    /// Drain a chunkserver (by id or address) so that it can be removed without losing data.
    Decommission(chunkservers::DecommissionArgs),
    /// Even out chunkserver usage, e.g. after adding chunkservers.
    Rebalance(chunkservers::RebalanceArgs),
    /// Write a consistent copy of the master metadata to FILE (restore: `master --restore`).
    Backup(backup::BackupArgs),
    /// Buckets with their owner, object count and size.
    Buckets(status::BucketsArgs),
    /// Create, list, change and delete S3 access keys.
    Key {
        #[command(subcommand)]
        cmd: key::KeyCmd,
    },
}

/// Runs one `tinydfs admin` command.
pub async fn run(cmd: AdminCmd) -> anyhow::Result<()> {
    match cmd {
        AdminCmd::Status(a) => status::status(a).await,
        AdminCmd::Master { cmd } => masters::master(cmd).await,
        AdminCmd::Fsck(a) => fsck::fsck(a).await,
        AdminCmd::Decommission(a) => chunkservers::decommission(a).await,
        AdminCmd::Rebalance(a) => chunkservers::rebalance(a).await,
        AdminCmd::Backup(a) => backup::backup(a).await,
        AdminCmd::Buckets(a) => status::buckets(a).await,
        AdminCmd::Key { cmd } => key::key(cmd).await,
    }
}

/// Which cluster an admin command talks to.
#[derive(Args)]
pub struct Target {
    /// Internal addresses of the masters (comma-separated).
    #[arg(long, env = "TINYDFS_MASTERS", value_delimiter = ',')]
    master: Option<Vec<String>>,
    /// Data folder of a local `tinydfs server` (finds the masters and the secret there);
    /// `./tinydfs-data`, `server`'s default, when it exists and no --master is given.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[arg(long, env = "TINYDFS_CLUSTER_SECRET", hide_env_values = true)]
    cluster_secret: Option<String>,
    /// The CA of the masters' internal TLS certificates (found in the data folder of a local
    /// cluster started with --internal-tls).
    #[arg(long, env = "TINYDFS_INTERNAL_CA")]
    internal_ca: Option<PathBuf>,
}

impl Target {
    /// The local cluster's data folder: `--data-dir`, else `server`'s default folder when it
    /// exists and no master was named (so that `admin` finds what a bare `server` started).
    fn data_dir(&self) -> Option<PathBuf> {
        if self.data_dir.is_some() || self.master.is_some() {
            return self.data_dir.clone();
        }
        let default = PathBuf::from(crate::server::DEFAULT_DATA_DIR);
        default.is_dir().then_some(default)
    }

    pub(super) fn local(&self) -> anyhow::Result<Option<ClusterFile>> {
        match self.data_dir() {
            Some(d) => {
                let text = std::fs::read_to_string(d.join("cluster.json"))
                    .with_context(|| format!("no running local cluster in {}", d.display()))?;
                Ok(Some(serde_json::from_str(&text)?))
            }
            None => Ok(None),
        }
    }

    /// A client of the target's masters.
    pub fn client(&self) -> anyhow::Result<MasterClient> {
        let local = self.local()?;
        let masters = match (&self.master, &local) {
            (Some(m), _) => m.clone(),
            (None, Some(l)) => l.masters.clone(),
            (None, None) => bail!("give --master ADDR or --data-dir DIR"),
        };
        let secret = match (&self.cluster_secret, self.data_dir()) {
            (Some(s), _) => s.clone(),
            (None, Some(d)) => crate::read_opt(&d.join("cluster.secret"))
                .context("no cluster.secret in the data folder")?,
            (None, None) => bail!("set TINYDFS_CLUSTER_SECRET"),
        };
        let local_ca = local.and_then(|l| l.internal_ca);
        if let Some(ca) = self.internal_ca.clone().or(local_ca) {
            tinydfs_proto::tls::use_internal_tls(&ca)?;
        }
        Ok(MasterClient::new(masters, secret))
    }
}
