//! `tinydfs admin fsck`: checks every object's chunks; the exit code tells scripts the verdict.

use super::Target;
use clap::Args;

#[derive(Args)]
pub struct FsckArgs {
    #[command(flatten)]
    target: Target,
    /// Print JSON for scripts.
    #[arg(long)]
    json: bool,
}

/// Exit code of `fsck` for a cluster that is not healthy.
const EXIT_UNHEALTHY: i32 = 1;
/// Exit code of `fsck` when the health cannot be judged (safe mode).
const EXIT_UNKNOWN: i32 = 2;

/// `tinydfs admin fsck`.
pub async fn fsck(a: FsckArgs) -> anyhow::Result<()> {
    let r = match a.target.client()?.fsck().await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tinydfs: the master does not answer: {e}");
            std::process::exit(EXIT_UNKNOWN);
        }
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        for p in &r.problems {
            let upload = p
                .upload_id
                .as_ref()
                .map(|u| format!(" (upload {u})"))
                .unwrap_or_default();
            println!(
                "{:<16} {}/{}{upload} chunk {} copies {}/{}",
                p.state, p.bucket, p.key, p.chunk, p.copies, p.wanted
            );
        }
        if r.truncated {
            println!("... more problems not listed");
        }
        println!(
            "objects {}  uploads {}  chunks {}  missing {}  under-replicated {}  corrupt {}",
            r.objects, r.uploads, r.chunks, r.missing, r.under_replicated, r.corrupt
        );
        println!(
            "{}",
            if !r.settled {
                "UNKNOWN: the master leader is in safe mode (chunkservers still reporting); try again"
            } else if r.healthy() {
                "HEALTHY"
            } else {
                "NOT HEALTHY"
            }
        );
    }
    if !r.settled {
        std::process::exit(EXIT_UNKNOWN);
    }
    if !r.healthy() {
        std::process::exit(EXIT_UNHEALTHY);
    }
    Ok(())
}
