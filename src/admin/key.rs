//! `tinydfs admin key create|list|grant|delete`: the S3 access keys kept by the masters.

use super::Target;
use anyhow::{bail, Context};

#[derive(clap::Subcommand)]
pub enum KeyCmd {
    /// Create a key; prints its id and secret (the secret is shown only this once).
    Create {
        /// A name to recognise the key by.
        #[arg(long, default_value = "")]
        name: String,
        /// Every permission on every bucket.
        #[arg(long)]
        admin: bool,
        /// A permission on a bucket, `BUCKET=read|write|owner` (repeat for several).
        #[arg(long = "bucket", value_name = "BUCKET=PERMISSION")]
        buckets: Vec<String>,
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        json: bool,
    },
    /// List keys with their permissions (never their secrets).
    List {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        json: bool,
    },
    /// Give a key a permission on a bucket (`BUCKET=read|write|owner`), or take it away
    /// (`BUCKET=none`).
    Grant {
        id: String,
        #[arg(value_name = "BUCKET=PERMISSION")]
        grant: String,
        #[command(flatten)]
        target: Target,
    },
    /// Delete (revoke) a key: requests signed with it are refused within seconds.
    Delete {
        id: String,
        #[command(flatten)]
        target: Target,
    },
}

/// `BUCKET=read|write|owner|none`.
fn parse_grant(g: &str) -> anyhow::Result<(String, Option<tinydfs_proto::meta::Permission>)> {
    let (bucket, perm) = g
        .split_once('=')
        .with_context(|| format!("{g:?} is not BUCKET=PERMISSION"))?;
    let perm = match perm {
        "none" => None,
        p => Some(p.parse().map_err(|e: String| anyhow::anyhow!(e))?),
    };
    Ok((bucket.to_string(), perm))
}

/// `count` random characters of `alphabet`.
fn random_text(alphabet: &[u8], count: usize) -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    (0..count)
        .map(|_| alphabet[rng.gen_range(0..alphabet.len())] as char)
        .collect()
}

/// `tinydfs admin key ...`.
pub async fn key(cmd: KeyCmd) -> anyhow::Result<()> {
    use tinydfs_proto::meta::{AccessKey, MetaRead, MetaReply, MetaWrite};
    let fail = |e: tinydfs_proto::meta::MetaError| anyhow::anyhow!("{e}");
    match cmd {
        KeyCmd::Create {
            name,
            admin,
            buckets,
            target,
            json,
        } => {
            let mut key = AccessKey {
                id: format!(
                    "TD{}",
                    random_text(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", 18)
                ),
                secret: random_text(
                    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
                    40,
                ),
                name,
                admin,
                buckets: Default::default(),
                created_ms: 0,
            };
            for g in &buckets {
                if let (b, Some(p)) = parse_grant(g)? {
                    key.buckets.insert(b, p);
                }
            }
            let client = target.client()?;
            client
                .write(MetaWrite::PutKey {
                    key: key.clone(),
                    bootstrap: false,
                })
                .await
                .map_err(fail)?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"access_key_id": key.id, "secret_access_key": key.secret})
                );
            } else {
                println!("access key id:     {}", key.id);
                println!("secret access key: {}", key.secret);
                println!("(the secret is not shown again)");
            }
        }
        KeyCmd::List { target, json } => {
            let MetaReply::Keys(mut keys) = target
                .client()?
                .read(MetaRead::ListKeys)
                .await
                .map_err(fail)?
            else {
                bail!("unexpected answer from the master");
            };
            for k in &mut keys {
                k.secret.clear();
            }
            if json {
                let list: Vec<serde_json::Value> = keys
                    .iter()
                    .map(|k| {
                        serde_json::json!({
                            "id": k.id, "name": k.name, "admin": k.admin,
                            "buckets": k.buckets, "created_ms": k.created_ms,
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(());
            }
            println!("{:<22} {:<6} {:<24} BUCKETS", "ID", "ADMIN", "NAME");
            for k in &keys {
                let grants: Vec<String> = k
                    .buckets
                    .iter()
                    .map(|(b, p)| format!("{b}={}", format!("{p:?}").to_lowercase()))
                    .collect();
                println!(
                    "{:<22} {:<6} {:<24} {}",
                    k.id,
                    if k.admin { "yes" } else { "no" },
                    k.name,
                    grants.join(",")
                );
            }
        }
        KeyCmd::Grant { id, grant, target } => {
            let (bucket, permission) = parse_grant(&grant)?;
            target
                .client()?
                .write(MetaWrite::GrantKey {
                    id: id.clone(),
                    bucket: bucket.clone(),
                    permission,
                })
                .await
                .map_err(fail)?;
            println!("{id}: {grant}");
        }
        KeyCmd::Delete { id, target } => {
            target
                .client()?
                .write(MetaWrite::DeleteKey { id: id.clone() })
                .await
                .map_err(fail)?;
            println!("access key {id} deleted");
        }
    }
    Ok(())
}
