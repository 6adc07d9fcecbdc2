//! `tinydfs health ADDR`: is a tinydfs node answering at ADDR, and which role is it?
//!
//! Every listener of a node answers a health check, but not on the same path: the S3 listener
//! answers `/_health` only (`/health` would be a bucket named `health`), the operations
//! listeners `/health` only, the masters' and chunkservers' internal listeners both. So the
//! check asks `/_health`, then `/health`, and works on every address `tinydfs server` prints.
//! An answer counts only if it is a tinydfs one (a JSON object naming the node's role): another
//! program on the port (MinIO on :9000) answering 200 is not taken for a node.

use anyhow::{bail, Context};
use serde::Deserialize;
use std::path::Path;
use std::time::Duration;
use tinydfs_proto::client::paths;

/// The paths asked, in order: `/_health` first, the one the S3 listener answers.
const HEALTH_PATHS: [&str; 2] = [paths::HEALTH_ALT, paths::HEALTH];

/// What every tinydfs health answer holds.
#[derive(Deserialize)]
struct HealthAnswer {
    role: String,
}

/// Where to ask: `host:port`, also written as the URLs `server` prints
/// (`http://127.0.0.1:9000`, `http://127.0.0.1:41234/`). `https://` needs the CA to trust.
fn target(addr: &str, ca: Option<&Path>) -> anyhow::Result<(&'static str, String)> {
    let (scheme, rest) = if let Some(rest) = addr.strip_prefix("http://") {
        ("http", rest)
    } else if let Some(rest) = addr.strip_prefix("https://") {
        if ca.is_none() {
            bail!("{addr}: an https:// address needs --internal-ca CA.pem, the CA to trust");
        }
        ("https", rest)
    } else if ca.is_some() {
        ("https", addr)
    } else {
        ("http", addr)
    };
    let host_port = rest.split('/').next().unwrap_or_default();
    if host_port.is_empty() {
        bail!("{addr:?} is not an address; give HOST:PORT");
    }
    Ok((scheme, host_port.to_string()))
}

/// The roles a tinydfs node answers its health check with.
const ROLES: [&str; 3] = ["master", "chunkserver", "gateway"];

/// Asks the node at `addr` for its health (over HTTPS trusting `ca` if given), waiting at most
/// `timeout` seconds for each answer; answers the node's role.
pub async fn check(addr: &str, timeout: f64, ca: Option<&Path>) -> anyhow::Result<String> {
    let (scheme, host_port) = target(addr, ca)?;
    if !(timeout.is_finite() && timeout > 0.0) {
        bail!("--timeout must be a positive number of seconds, not {timeout}");
    }
    let mut http = reqwest::Client::builder()
        .timeout(Duration::from_secs_f64(timeout.min(86_400.0)))
        // A node answers itself: a redirect to another one is not its health.
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy();
    if let Some(ca) = ca {
        http = http.use_preconfigured_tls(tinydfs_proto::tls::client_config(ca)?);
    }
    let http = http.build()?;
    let mut refused = Vec::new();
    for path in HEALTH_PATHS {
        let resp = http
            .get(format!("{scheme}://{host_port}{path}"))
            .send()
            .await
            .with_context(|| format!("{host_port} does not answer"))?;
        let status = resp.status();
        if !status.is_success() {
            refused.push(format!("{} to {path}", status.as_u16()));
            continue;
        }
        let body = resp
            .bytes()
            .await
            .with_context(|| format!("{host_port} broke off its answer"))?;
        return match serde_json::from_slice::<HealthAnswer>(&body) {
            Ok(a) if ROLES.contains(&a.role.as_str()) => Ok(a.role),
            _ => bail!(
                "{host_port} answers {path}, but not as a tinydfs node (another program on \
                 this port?)"
            ),
        };
    }
    bail!(
        "{host_port} answered {}: not a tinydfs node",
        refused.join(" and ")
    )
}

/// `tinydfs health ADDR`: prints the role of the node that answered.
pub async fn command(addr: &str, timeout: f64, ca: Option<&Path>) -> anyhow::Result<()> {
    let role = check(addr, timeout, ca).await?;
    println!("{addr}: healthy ({role})");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::target;
    use std::path::Path;

    #[test]
    fn addresses_in_the_forms_server_prints() {
        let t = |a| target(a, None).unwrap();
        assert_eq!(t("127.0.0.1:9000"), ("http", "127.0.0.1:9000".into()));
        assert_eq!(
            t("http://127.0.0.1:9000"),
            ("http", "127.0.0.1:9000".into())
        );
        assert_eq!(
            t("http://127.0.0.1:41234/"),
            ("http", "127.0.0.1:41234".into())
        );
        let ca = Some(Path::new("ca.pem"));
        assert_eq!(
            target("127.0.0.1:9100", ca).unwrap(),
            ("https", "127.0.0.1:9100".into())
        );
        assert_eq!(
            target("https://localhost:9000/x", ca).unwrap(),
            ("https", "localhost:9000".into())
        );
        assert!(target("https://127.0.0.1:9000", None).is_err());
        assert!(target("http://", None).is_err());
    }
}
