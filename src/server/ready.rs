//! When a node `server` started is up, and what `server` says about one that is not.
//!
//! A node is up when it answers its health check as its role *and* its own process holds the
//! listening sockets of its addresses. The health answer alone is not enough: with another
//! program on the port (MinIO on :9000, or a second tinydfs), the node cannot bind and exits,
//! while the other program may well answer. The sockets are found in `/proc`
//! (`/proc/PID/net/tcp` names each listening socket's inode, `/proc/PID/fd` the sockets the
//! process holds); where `/proc` cannot tell, the node must still run after it answered.
//!
//! A node that exits during start-up, or is not up in [`STARTUP_TIMEOUT`], fails the start: its
//! log's last lines go to standard error and the error is one line naming the node, the cause
//! (the node's own last error line) and an address found taken by another program.

use anyhow::anyhow;
use std::collections::HashSet;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;
use tokio::process::Child;

/// How long `server` waits for a node to come up before giving up.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause between two looks at a starting node.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Seconds a single health check may take while a node starts.
const HEALTH_TIMEOUT_SECS: f64 = 1.0;
/// Lines of a failed node's log shown: enough for its last error and what led to it.
const LOG_TAIL_LINES: usize = 10;
/// Bytes read from the end of a log to find those lines (logs grow across runs).
const LOG_TAIL_BYTES: u64 = 64 * 1024;
/// `/proc/net/tcp` state of a listening socket.
const TCP_LISTEN: &str = "0A";

/// How to tell that a node answers.
pub enum Probe<'a> {
    /// Its health check answers as this role (over HTTPS trusting the CA, if given).
    Health { role: &'a str, ca: Option<&'a Path> },
    /// It accepts TCP connections (a gateway serving HTTPS with a certificate `server` cannot
    /// verify).
    Connect,
}

/// A node being started.
pub struct Starting<'a> {
    pub name: &'a str,
    /// The address clients reach it at (health checked).
    pub addr: &'a str,
    /// Its operations address (only held, not asked: it serves plain HTTP).
    pub ops_addr: &'a str,
    pub probe: Probe<'a>,
    pub log: &'a Path,
}

/// Waits until the node is up (module doc); a node that exits or does not come up in time
/// fails the start, after its log's last lines have been printed.
pub async fn wait_up(child: &mut Child, node: &Starting<'_>) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + STARTUP_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(failed_start(node, Failure::Exited(status)));
        }
        let waiting_for = match answers(node).await {
            Err(why) => why,
            Ok(()) => match child.id().map(|pid| holds_addresses(pid, node)) {
                Some(Some(Ok(()))) => return Ok(()),
                Some(Some(Err(why))) => why,
                // /proc cannot tell: the node must still run after it answered.
                Some(None) if matches!(child.try_wait(), Ok(None)) => return Ok(()),
                _ => "its process to keep running".into(),
            },
        };
        if tokio::time::Instant::now() > deadline {
            return Err(failed_start(node, Failure::NotUp(waiting_for)));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Whether the node answers on its address; if not, what is awaited.
async fn answers(node: &Starting<'_>) -> Result<(), String> {
    match &node.probe {
        Probe::Health { role, ca } => {
            match crate::health::check(node.addr, HEALTH_TIMEOUT_SECS, *ca).await {
                Ok(r) if r == *role => Ok(()),
                Ok(r) => Err(format!("a {role} at {} (a {r} answers there)", node.addr)),
                Err(e) => Err(format!("its health check at {} ({e:#})", node.addr)),
            }
        }
        Probe::Connect => tokio::net::TcpStream::connect(node.addr)
            .await
            .map(drop)
            .map_err(|e| format!("connections at {} ({e})", node.addr)),
    }
}

/// Whether process `pid` holds listening sockets on the node's ports: `None` when `/proc`
/// cannot tell, else what is missing.
fn holds_addresses(pid: u32, node: &Starting<'_>) -> Option<Result<(), String>> {
    for addr in [node.addr, node.ops_addr] {
        let Some(port) = port_of(addr) else {
            continue;
        };
        if !holds_listener(pid, port)? {
            return Some(Err(format!("{} to listen on {addr} itself", node.name)));
        }
    }
    Some(Ok(()))
}

/// The port of `host:port` (`[v6]:port` too).
fn port_of(addr: &str) -> Option<u16> {
    addr.rsplit(':').next()?.parse().ok()
}

/// Whether process `pid` holds a listening TCP socket on `port` (any local address, IPv4 or
/// IPv6); `None` when `/proc` cannot tell.
fn holds_listener(pid: u32, port: u16) -> Option<bool> {
    let mut listening = HashSet::new();
    let mut readable = false;
    // The tables of the process's own network namespace.
    for table in ["tcp", "tcp6"] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) else {
            continue;
        };
        readable = true;
        listening.extend(listening_inodes(&text, port));
    }
    if !readable {
        return None;
    }
    if listening.is_empty() {
        return Some(false);
    }
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    Some(fds.flatten().any(|fd| {
        std::fs::read_link(fd.path()).ok().is_some_and(|target| {
            target
                .to_str()
                .and_then(|t| t.strip_prefix("socket:["))
                .and_then(|t| t.strip_suffix(']'))
                .is_some_and(|inode| listening.contains(inode))
        })
    }))
}

/// Inodes of the sockets listening on `port` in a `/proc/net/tcp{,6}` table (columns: slot,
/// local address `HEXADDR:HEXPORT`, remote address, state, ..., inode tenth).
fn listening_inodes(table: &str, port: u16) -> Vec<String> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let local_port = cols.get(1)?.rsplit(':').next()?;
            let listening = *cols.get(3)? == TCP_LISTEN;
            (listening && u16::from_str_radix(local_port, 16).ok()? == port)
                .then(|| cols.get(9).map(|inode| inode.to_string()))
                .flatten()
        })
        .collect()
}

/// Why a node did not start.
enum Failure {
    /// It exited.
    Exited(ExitStatus),
    /// It still runs, but did not come up in time; what was awaited.
    NotUp(String),
}

/// The one-line error of a node that did not start, its log's last lines printed first.
fn failed_start(node: &Starting<'_>, failure: Failure) -> anyhow::Error {
    let tail = log_tail(node.log);
    if !tail.is_empty() {
        eprintln!(
            "tinydfs: last lines of {} ({}):",
            node.log.display(),
            node.name
        );
        for line in &tail {
            eprintln!("  {line}");
        }
    }
    let status = match failure {
        Failure::Exited(status) => status,
        Failure::NotUp(waiting_for) => {
            return anyhow!(
                "{} failed to start: not up after {} s, waiting for {waiting_for} (log: {})",
                node.name,
                STARTUP_TIMEOUT.as_secs(),
                node.log.display()
            )
        }
    };
    // The node's own one-line error: `main` prints it last, prefixed `tinydfs: `; clap, a
    // mistyped flag, prefixed `error: `.
    let cause = tail
        .iter()
        .rev()
        .find_map(|l| {
            l.strip_prefix("tinydfs: ")
                .or_else(|| l.starts_with("error: ").then_some(l.as_str()))
        })
        .or(tail.last().map(String::as_str))
        .unwrap_or("its log is empty")
        .to_string();
    let taken: String = [node.addr, node.ops_addr]
        .into_iter()
        .filter(|a| in_use(a))
        .map(|a| format!("; {a} is in use by another program"))
        .collect();
    anyhow!(
        "{} failed to start: {cause}{taken}; it {} (log: {})",
        node.name,
        describe_exit(&status),
        node.log.display()
    )
}

/// Whether another process listens on `addr` (the node that had it has exited).
fn in_use(addr: &str) -> bool {
    matches!(
        std::net::TcpListener::bind(addr),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse
    )
}

/// The last [`LOG_TAIL_LINES`] lines of a log (none if it cannot be read).
pub fn log_tail(path: &Path) -> Vec<String> {
    let mut text = Vec::new();
    let read = std::fs::File::open(path).and_then(|mut f| {
        let len = f.metadata()?.len();
        f.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)))?;
        f.read_to_end(&mut text)
    });
    if read.is_err() {
        return Vec::new();
    }
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..]
        .iter()
        .map(|l| l.to_string())
        .collect()
}

/// How a process ended, in words: "exited with code 1", "was killed by signal 9 (SIGKILL)".
pub fn describe_exit(status: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(sig)) => match nix::sys::signal::Signal::try_from(sig) {
            Ok(name) => format!("was killed by signal {sig} ({name})"),
            Err(_) => format!("was killed by signal {sig}"),
        },
        (None, None) => format!("ended ({status})"),
    }
}

/// The log file of node `name` in the data folder `dir`.
pub fn log_path(dir: &Path, name: &str) -> PathBuf {
    dir.join("logs").join(format!("{name}.log"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_sockets_are_found_by_port() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:2328 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1111 1 0000000000000000 100 0 0 10 0
   1: 0100007F:2328 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 2222 1 0000000000000000 20 4 30 10 -1
   2: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3333 1 0000000000000000 100 0 0 10 0
";
        assert_eq!(listening_inodes(table, 9000), vec!["1111"]);
        assert_eq!(listening_inodes(table, 8080), vec!["3333"]);
        assert!(listening_inodes(table, 50000).is_empty());
        let v6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:2328 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4444 1 0000000000000000 100 0 0 10 0
";
        assert_eq!(listening_inodes(v6, 9000), vec!["4444"]);
    }

    #[test]
    fn this_process_is_seen_holding_its_listener() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert_eq!(holds_listener(std::process::id(), port), Some(true));
        drop(l);
        assert_eq!(holds_listener(std::process::id(), port), Some(false));
    }

    #[test]
    fn ports_of_addresses() {
        assert_eq!(port_of("127.0.0.1:9000"), Some(9000));
        assert_eq!(port_of("[::1]:9000"), Some(9000));
        assert_eq!(port_of("localhost"), None);
    }

    #[test]
    fn exits_in_words() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            describe_exit(&ExitStatus::from_raw(256)),
            "exited with code 1"
        );
        assert_eq!(
            describe_exit(&ExitStatus::from_raw(9)),
            "was killed by signal 9 (SIGKILL)"
        );
    }
}
