//! The local cluster's addresses: which are chosen once and kept in the data folder, and which
//! are new on every start.
//!
//! - The masters' (`masters.json`): a Raft group remembers its members' addresses, so a
//!   restarted local cluster must find them again.
//! - Every node's operations address (`ops.json`, by node name): monitoring is configured with
//!   them (Prometheus targets, a bookmarked status page). One found in use by another program
//!   at a start is replaced, with a note, and the new one kept.
//! - The chunkservers' internal addresses: new on every start (they register with the masters).

use anyhow::{bail, Context};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;

/// File of the masters' addresses.
const MASTERS_FILE: &str = "masters.json";
/// File of the nodes' operations addresses.
const OPS_FILE: &str = "ops.json";

/// The masters' addresses (module doc).
pub fn master_addresses(dir: &Path, count: usize, host: &str) -> anyhow::Result<Vec<String>> {
    let path = dir.join(MASTERS_FILE);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let addrs: Vec<String> = serde_json::from_str(&text)?;
        if addrs.len() != count {
            bail!(
                "{} was created with {}; start it with --masters {}",
                dir.display(),
                crate::plural(addrs.len() as u64, "master"),
                addrs.len()
            );
        }
        return Ok(addrs);
    }
    let addrs = (0..count)
        .map(|_| free_port(host))
        .collect::<anyhow::Result<Vec<_>>>()?;
    std::fs::write(&path, serde_json::to_string(&addrs)?)?;
    Ok(addrs)
}

/// The operations addresses of the nodes `names` (module doc). Call it before `ports` hands
/// out any other address: every kept one is set aside first, so that no node gets another's.
pub fn ops_addresses(
    dir: &Path,
    names: &[String],
    ports: &mut Ports,
) -> anyhow::Result<BTreeMap<String, String>> {
    let mut kept = kept_ops_addresses(dir)?;
    let before = kept.clone();
    ports.set_aside(kept.values().cloned());
    for name in names {
        match kept.get(name) {
            Some(addr) if !ports.is_fixed(addr) && is_free(addr) => {}
            old => {
                let new = ports.take()?;
                if let Some(old) = old {
                    eprintln!(
                        "tinydfs: {old}, the operations address of {name}, is taken; {name} now \
                         has {new}"
                    );
                }
                kept.insert(name.clone(), new);
            }
        }
    }
    if kept != before {
        let tmp = dir.join(format!("{OPS_FILE}.tmp"));
        std::fs::write(&tmp, serde_json::to_string_pretty(&kept)?)?;
        std::fs::rename(&tmp, dir.join(OPS_FILE))?;
    }
    Ok(kept)
}

/// The operations addresses kept in `ops.json`; in a folder from before that file, those of
/// the last run's `cluster.json`.
pub fn kept_ops_addresses(dir: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let path = dir.join(OPS_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let last = std::fs::read_to_string(dir.join("cluster.json"))
                .ok()
                .and_then(|t| serde_json::from_str::<super::ClusterFile>(&t).ok());
            Ok(last
                .map(|c| c.nodes)
                .unwrap_or_default()
                .into_iter()
                .filter(|n| !n.ops_addr.is_empty())
                .map(|n| (n.name, n.ops_addr))
                .collect())
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Hands out free ports, never one already given or in use by the cluster (the S3 port, the
/// masters', kept operations ports): a port the kernel just handed out and took back may come
/// again.
pub struct Ports {
    host: String,
    /// The addresses the cluster was started with (masters', S3).
    fixed: HashSet<String>,
    taken: HashSet<String>,
}

impl Ports {
    pub fn new(host: &str, fixed: impl IntoIterator<Item = String>) -> Ports {
        let fixed: HashSet<String> = fixed.into_iter().collect();
        Ports {
            host: host.to_string(),
            taken: fixed.clone(),
            fixed,
        }
    }

    /// Never hands out these addresses.
    fn set_aside(&mut self, addrs: impl IntoIterator<Item = String>) {
        self.taken.extend(addrs);
    }

    /// Whether `addr` is one of the addresses the cluster was started with.
    fn is_fixed(&self, addr: &str) -> bool {
        self.fixed.contains(addr)
    }

    pub fn take(&mut self) -> anyhow::Result<String> {
        for _ in 0..100 {
            let addr = free_port(&self.host)?;
            if self.taken.insert(addr.clone()) {
                return Ok(addr);
            }
        }
        bail!("no free port on {}", self.host)
    }
}

/// A free loopback port (bound then released; fine for a local cluster).
fn free_port(host: &str) -> anyhow::Result<String> {
    let l = std::net::TcpListener::bind((host, 0))?;
    Ok(format!("{host}:{}", l.local_addr()?.port()))
}

/// Whether nothing listens on `addr` now.
fn is_free(addr: &str) -> bool {
    std::net::TcpListener::bind(addr).is_ok()
}
