//! The status page the operations listener serves at `/`: the cluster's health at a glance,
//! the masters with their Raft roles, one row per chunkserver, the chunk counts and the recent
//! write throughput. Plain HTML generated here, inline CSS, no script; it reloads itself every
//! few seconds. Every string from the cluster is escaped.

use std::fmt::Write;
use tinydfs_proto::meta::{ClusterStatus, NodeStatus, RaftStatus};

/// Seconds between reloads of the page.
pub const REFRESH_SECS: u32 = 5;

/// What the page shows.
pub struct Page<'a> {
    /// The master serving the page.
    pub id: u64,
    pub raft: &'a RaftStatus,
    /// The leader's internal address, when another master leads.
    pub leader_addr: Option<&'a str>,
    /// The leader's status, or why there is none.
    pub status: Result<&'a ClusterStatus, &'a str>,
    /// Live chunkservers writes need.
    pub min_replicas: usize,
}

/// The cluster's health.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Healthy,
    /// Serving everything, with less redundancy than wanted (a dead chunkserver, chunks
    /// under-replicated, a failed disk, a master down) or not yet judged (safe mode).
    Degraded,
    /// Some data or writes are unavailable: chunks without a live copy, too few chunkservers,
    /// no leader.
    Unhealthy,
}

impl Level {
    fn name(self) -> &'static str {
        match self {
            Level::Healthy => "healthy",
            Level::Degraded => "degraded",
            Level::Unhealthy => "unhealthy",
        }
    }
}

fn chunkservers(s: &ClusterStatus) -> impl Iterator<Item = &NodeStatus> {
    s.nodes.iter().filter(|n| n.role == "chunkserver")
}

/// The health of the cluster and the reasons for it, worst first.
pub fn health(status: Result<&ClusterStatus, &str>, min_replicas: usize) -> (Level, Vec<String>) {
    let s = match status {
        Ok(s) => s,
        Err(e) => {
            return (
                Level::Unhealthy,
                vec![format!("no status from the master leader: {e}")],
            )
        }
    };
    let mut bad = Vec::new();
    let mut weak = Vec::new();
    if s.lost > 0 {
        bad.push(format!("{} chunks have no live copy", s.lost));
    }
    let alive = chunkservers(s).filter(|n| n.state == "alive").count();
    if alive < min_replicas.max(1) {
        bad.push(format!(
            "{alive} chunkservers take writes; writes need {}",
            min_replicas.max(1)
        ));
    }
    if !s.settled {
        weak.push("the leader is in safe mode: chunkservers are still reporting".to_string());
    }
    for n in chunkservers(s) {
        if n.state == "dead" {
            weak.push(format!("chunkserver {} ({}) is dead", n.id, n.addr));
        }
        let failed = n.disks.iter().filter(|d| d.failed).count();
        if failed > 0 {
            weak.push(format!(
                "chunkserver {} ({}) has {failed} failed disk(s)",
                n.id, n.addr
            ));
        }
    }
    for n in s.nodes.iter().filter(|n| n.role == "master") {
        if n.state == "unreachable" {
            weak.push(format!("master {} ({}) is unreachable", n.id, n.addr));
        }
    }
    if s.under_replicated > 0 {
        weak.push(format!(
            "{} chunks are under-replicated",
            s.under_replicated
        ));
    }
    let level = if !bad.is_empty() {
        Level::Unhealthy
    } else if !weak.is_empty() {
        Level::Degraded
    } else {
        Level::Healthy
    };
    bad.extend(weak);
    (level, bad)
}

/// Escapes text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Bytes for people (binary units).
fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

const STYLE: &str = "\
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}\
h1{margin:0 0 .2em}h2{margin:1.4em 0 .4em;font-size:1.1em}\
.meta{color:#666;margin:0}.note{background:#eef;padding:.5em .8em;border-radius:4px}\
.health{padding:.7em 1em;border-radius:6px;margin:1em 0;color:#fff}\
.health strong{font-size:1.3em}.health ul{margin:.3em 0 0;padding-left:1.2em}\
.healthy{background:#2e7d32}.degraded{background:#b26a00}.unhealthy{background:#c62828}\
table{border-collapse:collapse;background:#fff}\
th,td{border:1px solid #ddd;padding:.3em .6em;text-align:left;font-size:.95em}\
th{background:#f0f0f0}td.num{text-align:right}\
.state-alive,.state-leader,.state-follower{color:#2e7d32}\
.state-dead,.state-unreachable{color:#c62828;font-weight:bold}\
.state-draining,.state-drained,.state-candidate,.state-learner{color:#b26a00}\
.bar{display:inline-block;width:8em;height:.8em;background:#ddd;border-radius:3px;\
vertical-align:middle;margin-right:.5em;overflow:hidden}\
.bar>span{display:block;height:100%;background:#2e7d32}.bar>span.full{background:#c62828}\
footer{margin-top:2em;color:#888;font-size:.85em}";

/// The page.
pub fn render(p: &Page) -> String {
    let mut h = String::new();
    // Writing to a String cannot fail.
    let _ = write_page(&mut h, p);
    h
}

fn write_page(h: &mut String, p: &Page) -> std::fmt::Result {
    write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECS}\">\
         <title>tinydfs status</title><style>{STYLE}</style></head><body>\n"
    )?;
    let cluster = p.status.map(|s| s.cluster_id.as_str()).unwrap_or("");
    writeln!(
        h,
        "<h1>tinydfs</h1><p class=\"meta\">cluster {} &middot; served by master {} ({}, term {})</p>",
        esc(cluster),
        p.id,
        esc(&p.raft.role),
        p.raft.term
    )?;
    if p.raft.leader != Some(p.id) {
        let leader = match (p.raft.leader, p.leader_addr) {
            (Some(id), Some(addr)) => format!("master {id} at {}", esc(addr)),
            (Some(id), None) => format!("master {id}"),
            _ => "not elected yet".to_string(),
        };
        writeln!(
            h,
            "<p class=\"note\" id=\"leader\">This master is not the leader; the leader is {leader}. \
             The status below is the leader's.</p>"
        )?;
    }
    let (level, reasons) = health(p.status, p.min_replicas);
    write!(
        h,
        "<div id=\"health\" class=\"health {0}\" data-health=\"{0}\"><strong>{1}</strong>",
        level.name(),
        match level {
            Level::Healthy => "Healthy",
            Level::Degraded => "Degraded",
            Level::Unhealthy => "Unhealthy",
        }
    )?;
    if !reasons.is_empty() {
        h.push_str("<ul>");
        for r in &reasons {
            write!(h, "<li>{}</li>", esc(r))?;
        }
        h.push_str("</ul>");
    }
    h.push_str("</div>\n");
    if let Ok(s) = p.status {
        write_status(h, s)?;
    }
    write!(
        h,
        "<footer>generated {} &middot; reloads every {REFRESH_SECS} s</footer>\n</body></html>\n",
        tinydfs_proto::time::iso8601(tinydfs_proto::time::now_ms())
    )
}

fn write_status(h: &mut String, s: &ClusterStatus) -> std::fmt::Result {
    let rate: u64 = chunkservers(s).map(|n| n.write_rate).sum();
    h.push_str("<h2>Summary</h2><table id=\"summary\">");
    let rows: [(&str, String); 9] = [
        ("buckets", s.buckets.to_string()),
        ("objects", s.objects.to_string()),
        ("chunks", s.chunks.to_string()),
        ("under-replicated chunks", s.under_replicated.to_string()),
        ("missing (lost) chunks", s.lost.to_string()),
        ("chunk writes, last minute", format!("{}/s", bytes(rate))),
        ("copies repaired (this leader)", s.repaired.to_string()),
        (
            "deletions ordered (this leader)",
            s.deletes_ordered.to_string(),
        ),
        (
            "rebalance",
            if s.rebalancing { "running" } else { "idle" }.to_string(),
        ),
    ];
    for (k, v) in rows {
        write!(
            h,
            "<tr><th>{}</th><td class=\"num\">{}</td></tr>",
            esc(k),
            esc(&v)
        )?;
    }
    h.push_str("</table>\n");

    h.push_str(
        "<h2>Masters</h2><table id=\"masters\"><tr><th>id</th><th>address</th><th>role</th>\
         <th>term</th><th>last log index</th><th>applied index</th></tr>",
    );
    for n in s.nodes.iter().filter(|n| n.role == "master") {
        let (term, log, applied) =
            n.raft
                .as_ref()
                .map_or((String::new(), String::new(), String::new()), |r| {
                    (
                        r.term.to_string(),
                        r.last_log_index.to_string(),
                        r.applied_index.to_string(),
                    )
                });
        write!(
            h,
            "<tr class=\"master\" data-id=\"{}\" data-state=\"{1}\"><td>{0}</td><td>{2}</td>\
             <td class=\"state-{1}\">{1}</td><td class=\"num\">{3}</td><td class=\"num\">{4}</td>\
             <td class=\"num\">{5}</td></tr>",
            n.id,
            esc(&n.state),
            esc(&n.addr),
            term,
            log,
            applied
        )?;
    }
    h.push_str("</table>\n");

    h.push_str(
        "<h2>Chunkservers</h2><table id=\"chunkservers\"><tr><th>id</th><th>address</th>\
         <th>zone</th><th>state</th><th>chunks</th><th>used / capacity</th><th>free</th>\
         <th>failed disks</th><th>writes</th></tr>",
    );
    for n in chunkservers(s) {
        let used = n.capacity.saturating_sub(n.free);
        let pct = if n.capacity == 0 {
            0.0
        } else {
            used as f64 * 100.0 / n.capacity as f64
        };
        let failed = n.disks.iter().filter(|d| d.failed).count();
        write!(
            h,
            "<tr class=\"chunkserver\" data-id=\"{id}\" data-addr=\"{addr}\" data-state=\"{state}\">\
             <td>{id}</td><td>{addr}</td><td>{zone}</td><td class=\"state-{state}\">{state}</td>\
             <td class=\"num\">{chunks}</td>\
             <td><span class=\"bar\"><span class=\"{full}\" style=\"width:{pct:.1}%\"></span></span>\
             {used} / {cap} ({pct:.0}%)</td><td class=\"num\">{free}</td>\
             <td class=\"num\">{failed} of {disks}</td><td class=\"num\">{rate}/s</td></tr>",
            id = n.id,
            addr = esc(&n.addr),
            zone = esc(&n.zone),
            state = esc(&n.state),
            chunks = n.chunks,
            full = if pct >= 90.0 { "full" } else { "" },
            used = bytes(used),
            cap = bytes(n.capacity),
            free = bytes(n.free),
            disks = n.disks.len(),
            rate = bytes(n.write_rate),
        )?;
    }
    h.push_str("</table>\n");

    let gateways: Vec<&NodeStatus> = s.nodes.iter().filter(|n| n.role == "gateway").collect();
    if !gateways.is_empty() {
        h.push_str(
            "<h2>Gateways</h2><table id=\"gateways\"><tr><th>address</th><th>state</th></tr>",
        );
        for n in gateways {
            write!(
                h,
                "<tr class=\"gateway\" data-addr=\"{0}\"><td>{0}</td><td class=\"state-{1}\">{1}</td></tr>",
                esc(&n.addr),
                esc(&n.state)
            )?;
        }
        h.push_str("</table>\n");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tinydfs_proto::meta::DiskStatus;

    fn node(id: u64, role: &str, state: &str) -> NodeStatus {
        NodeStatus {
            id,
            role: role.into(),
            addr: format!("10.0.0.{id}:9200"),
            state: state.into(),
            capacity: 1000,
            free: 250,
            ..Default::default()
        }
    }

    fn cluster(states: &[&str]) -> ClusterStatus {
        ClusterStatus {
            cluster_id: "c1".into(),
            nodes: states
                .iter()
                .enumerate()
                .map(|(i, s)| node(i as u64 + 1, "chunkserver", s))
                .collect(),
            settled: true,
            ..Default::default()
        }
    }

    #[test]
    fn health_names_the_worst_problem_first() {
        let ok = cluster(&["alive", "alive", "alive"]);
        assert_eq!(health(Ok(&ok), 2), (Level::Healthy, vec![]));
        let mut one_dead = cluster(&["alive", "dead", "alive"]);
        one_dead.under_replicated = 4;
        let (level, why) = health(Ok(&one_dead), 2);
        assert_eq!(level, Level::Degraded);
        assert!(
            why[0].contains("chunkserver 2 (10.0.0.2:9200) is dead"),
            "{why:?}"
        );
        assert!(why[1].contains("4 chunks are under-replicated"));
        let mut lost = cluster(&["alive", "dead", "dead"]);
        lost.lost = 1;
        let (level, why) = health(Ok(&lost), 2);
        assert_eq!(level, Level::Unhealthy);
        assert!(why[0].contains("no live copy") && why[1].contains("1 chunkservers take writes"));
        let mut disk = cluster(&["alive", "alive"]);
        disk.nodes[0].disks = vec![DiskStatus {
            failed: true,
            ..Default::default()
        }];
        assert_eq!(health(Ok(&disk), 2).0, Level::Degraded);
        assert_eq!(health(Err("timeout"), 2).0, Level::Unhealthy);
    }

    #[test]
    fn the_page_escapes_what_the_cluster_reports() {
        let mut s = cluster(&["alive", "draining"]);
        s.nodes[0].zone = "<script>alert('x')</script>".into();
        s.nodes[1].addr = "a\"b&c".into();
        let raft = RaftStatus {
            role: "leader".into(),
            leader: Some(1),
            ..Default::default()
        };
        let html = render(&Page {
            id: 1,
            raft: &raft,
            leader_addr: None,
            status: Ok(&s),
            min_replicas: 1,
        });
        assert!(!html.contains("<script>"));
        assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"));
        assert!(html.contains("data-addr=\"a&quot;b&amp;c\" data-state=\"draining\""));
        assert!(html.contains("data-health=\"healthy\""));
        assert!(html.contains("style=\"width:75.0%\""), "used 750 of 1000");
        assert!(!html.contains("id=\"leader\""), "the leader points nowhere");
    }

    #[test]
    fn a_follower_points_to_the_leader() {
        let raft = RaftStatus {
            role: "follower".into(),
            leader: Some(3),
            ..Default::default()
        };
        let html = render(&Page {
            id: 1,
            raft: &raft,
            leader_addr: Some("10.0.0.3:9100"),
            status: Err("the leader did not answer"),
            min_replicas: 2,
        });
        assert!(html.contains("the leader is master 3 at 10.0.0.3:9100"));
        assert!(html.contains("data-health=\"unhealthy\""));
        assert!(html.contains("the leader did not answer"));
    }

    #[test]
    fn bytes_read_well() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
    }
}
