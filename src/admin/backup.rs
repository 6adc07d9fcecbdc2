//! `tinydfs admin backup FILE`: a consistent copy of the master metadata, written atomically.

use super::Target;
use anyhow::Context;
use clap::Args;
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Args)]
pub struct BackupArgs {
    /// The file to write (replaced atomically).
    file: PathBuf,
    #[command(flatten)]
    target: Target,
}

/// `tinydfs admin backup FILE`.
pub async fn backup(a: BackupArgs) -> anyhow::Result<()> {
    let copy = a
        .target
        .client()?
        .backup()
        .await
        .map_err(|e| anyhow::anyhow!("backup failed: {e}"))?;
    let bytes = copy.get().as_bytes();
    let tmp = a.file.with_extension("tmp");
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        // It holds the S3 key secrets: readable by this user only.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &a.file)?;
    #[derive(Deserialize)]
    struct Summary {
        applied_index: u64,
        state: SummaryState,
    }
    #[derive(Deserialize)]
    struct SummaryState {
        cluster_id: String,
        buckets: std::collections::HashMap<String, serde::de::IgnoredAny>,
    }
    let s: Summary = serde_json::from_str(copy.get())?;
    println!(
        "backup of cluster {} at log index {}: {}, {} bytes written to {}",
        s.state.cluster_id,
        s.applied_index,
        crate::plural(s.state.buckets.len() as u64, "bucket"),
        bytes.len(),
        a.file.display()
    );
    Ok(())
}
