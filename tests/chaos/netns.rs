//! A network of Linux network namespaces for the partition tests: each node of the cluster gets
//! its own namespace and address, as on a host of its own, and a router namespace joins them.
//!
//! - Namespaces are named `tdfs-chaos-<pid>-<host>` (`<pid>`: this test process), so that two
//!   runs on one machine do not meet; namespaces of a run whose process is gone (a crash, a test
//!   killed by its timeout) are deleted, their processes killed, when the next run starts.
//! - The router (`tdfs-chaos-<pid>-router`) forwards (`ip_forward=1`). Host number `i` (from 1)
//!   has a veth pair to it: `eth0` at 10.213.i.2/24 in the host's namespace, default route via
//!   10.213.i.1, the router's end `v<i>`. Plain routing, no bridge: iptables in the router's
//!   FORWARD chain sees every packet between two hosts (on a bridge it would need
//!   br_netfilter).
//! - A host cut off: DROP rules in the router's FORWARD chain for its address, both directions;
//!   a partition between two groups: DROP rules for every pair across. [`Net::heal`] removes them.
//! - Nothing is added to the root namespace: its addresses and routes are not ours (the root
//!   namespace's default route leaves the machine). The test reaches the hosts from inside: child
//!   processes through `ip netns exec`, its own S3 client through [`Net::runtime_in`], whose
//!   threads enter a host's namespace with setns(2).
//! - Dropping the [`Net`] kills what still runs in its namespaces and deletes them (their veths
//!   and rules go with them), also when the test panics.
//!
//! Every command that fails (or `ip` / `iptables` missing) panics with its standard error: a
//! machine that cannot build the network fails the test rather than skipping it.

use std::process::{Command, Output};

/// Prefix of every namespace this suite creates.
pub const PREFIX: &str = "tdfs-chaos-";

/// A host of the network.
struct Host {
    name: String,
    ns: String,
    addr: String,
}

/// A DROP rule of the router's FORWARD chain: `-s FROM -d TO` (either may be absent).
#[derive(Clone, PartialEq)]
struct Rule {
    from: Option<String>,
    to: Option<String>,
}

impl Rule {
    fn args(&self, op: &str) -> Vec<String> {
        let mut a = vec!["iptables".to_string(), op.into(), "FORWARD".into()];
        if let Some(f) = &self.from {
            a.extend(["-s".into(), f.clone()]);
        }
        if let Some(t) = &self.to {
            a.extend(["-d".into(), t.clone()]);
        }
        a.extend(["-j".into(), "DROP".into()]);
        a
    }
}

/// The network: a router and the hosts, and the DROP rules in force.
pub struct Net {
    router: String,
    hosts: Vec<Host>,
    rules: Vec<Rule>,
}

/// Runs `cmd`; panics with its standard error if it cannot start or fails.
pub fn run(cmd: &mut Command) -> Output {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e} (is iproute2/iptables installed?)"));
    assert!(
        out.status.success(),
        "{shown} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    out
}

fn ip(args: &[&str]) -> Output {
    run(Command::new("ip").args(args))
}

/// Runs `cmd` without failing: for clean-up, which must not panic (it may run while the test
/// unwinds).
fn quietly(cmd: &mut Command) {
    match cmd.output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => eprintln!(
            "netns clean-up: {cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => eprintln!("netns clean-up: {cmd:?}: {e}"),
    }
}

/// Namespaces whose names start with `prefix`.
fn namespaces(prefix: &str) -> Vec<String> {
    let out = ip(&["netns", "list"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(String::from)
        .collect()
}

/// Kills (SIGKILL) every process in namespace `ns` but this one, then deletes the namespace.
fn destroy(ns: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
        let me = std::process::id().to_string();
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if pid != me {
                quietly(Command::new("kill").args(["-KILL", pid]));
            }
        }
    }
    quietly(Command::new("ip").args(["netns", "del", ns]));
}

/// Deletes namespaces of earlier runs whose test process is gone.
fn remove_leftovers() {
    for ns in namespaces(PREFIX) {
        let pid = ns[PREFIX.len()..].split('-').next().unwrap_or("");
        let alive = !pid.is_empty() && std::path::Path::new(&format!("/proc/{pid}")).exists();
        if !alive {
            eprintln!("netns: deleting {ns}, left by an earlier run");
            destroy(&ns);
        }
    }
}

impl Net {
    /// Builds the router and one namespace per host name (in order: 10.213.1.2, 10.213.2.2, ...).
    pub fn new(hosts: &[&str]) -> Net {
        assert!(hosts.len() < 250, "one /24 per host");
        remove_leftovers();
        let prefix = format!("{PREFIX}{}-", std::process::id());
        let mut net = Net {
            router: format!("{prefix}router"),
            hosts: Vec::new(),
            rules: Vec::new(),
        };
        // Registered before anything is created: a failure below still cleans up on drop.
        ip(&["netns", "add", &net.router]);
        ip(&["-n", &net.router, "link", "set", "lo", "up"]);
        run(Command::new("ip").args([
            "netns",
            "exec",
            &net.router,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ]));
        for (i, name) in hosts.iter().enumerate() {
            let i = i + 1;
            let ns = format!("{prefix}{name}");
            ip(&["netns", "add", &ns]);
            net.hosts.push(Host {
                name: name.to_string(),
                ns: ns.clone(),
                addr: format!("10.213.{i}.2"),
            });
            let veth = format!("v{i}");
            let r = net.router.as_str();
            ip(&[
                "-n", r, "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ]);
            ip(&[
                "-n",
                r,
                "addr",
                "add",
                &format!("10.213.{i}.1/24"),
                "dev",
                &veth,
            ]);
            ip(&["-n", r, "link", "set", &veth, "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("10.213.{i}.2/24"),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
            ip(&[
                "-n",
                &ns,
                "route",
                "add",
                "default",
                "via",
                &format!("10.213.{i}.1"),
            ]);
        }
        // iptables answers here, or the test fails now rather than at the first fault.
        net.iptables(&["iptables", "-S", "FORWARD"]);
        net
    }

    fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name}"))
    }

    /// The namespace of host `name`.
    pub fn ns(&self, name: &str) -> &str {
        &self.host(name).ns
    }

    /// The address of host `name`.
    pub fn addr(&self, name: &str) -> &str {
        &self.host(name).addr
    }

    /// The host whose address is `addr` (`ip` or `ip:port`).
    pub fn host_of(&self, addr: &str) -> Option<&str> {
        let ip = addr.rsplit_once(':').map_or(addr, |(ip, _)| ip);
        self.hosts
            .iter()
            .find(|h| h.addr == ip)
            .map(|h| h.name.as_str())
    }

    /// `program` to be run in host `name`'s namespace (`ip netns exec NS program`).
    pub fn command(&self, name: &str, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", self.ns(name), program]);
        c
    }

    fn iptables(&self, args: &[&str]) {
        run(Command::new("ip")
            .args(["netns", "exec", &self.router])
            .args(args));
    }

    fn drop_rule(&mut self, rule: Rule) {
        if self.rules.contains(&rule) {
            return;
        }
        let args = rule.args("-I");
        self.iptables(&args.iter().map(String::as_str).collect::<Vec<_>>());
        self.rules.push(rule);
    }

    /// Cuts hosts off from every other host (until [`Net::heal`]).
    pub fn cut_off(&mut self, names: &[&str]) {
        for name in names {
            let a = self.addr(name).to_string();
            self.drop_rule(Rule {
                from: Some(a.clone()),
                to: None,
            });
            self.drop_rule(Rule {
                from: None,
                to: Some(a),
            });
        }
    }

    /// Cuts every link between a host of `a` and a host of `b` (until [`Net::heal`]); other
    /// links stay.
    pub fn partition(&mut self, a: &[&str], b: &[&str]) {
        for x in a {
            for y in b {
                let (x, y) = (self.addr(x).to_string(), self.addr(y).to_string());
                self.drop_rule(Rule {
                    from: Some(x.clone()),
                    to: Some(y.clone()),
                });
                self.drop_rule(Rule {
                    from: Some(y),
                    to: Some(x),
                });
            }
        }
    }

    /// Removes every DROP rule: the network is whole again.
    pub fn heal(&mut self) {
        for rule in std::mem::take(&mut self.rules) {
            let args = rule.args("-D");
            self.iptables(&args.iter().map(String::as_str).collect::<Vec<_>>());
        }
    }

    /// A multi-threaded tokio runtime whose every thread lives in host `name`'s network
    /// namespace: sockets made in its tasks connect from there. Run client calls in spawned
    /// tasks ([`spawned`]): a future given to `block_on` runs on the calling thread, outside.
    pub fn runtime_in(&self, name: &str) -> tokio::runtime::Runtime {
        let path = format!("/run/netns/{}", self.ns(name));
        // Once on this thread first, so that a failure is reported plainly rather than as a
        // runtime thread dying.
        let probe = path.clone();
        std::thread::spawn(move || enter(&probe))
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e));
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .on_thread_start(move || enter(&path))
            .build()
            .unwrap()
    }
}

/// Moves the calling thread into the network namespace mounted at `path` (setns(2); a thread's
/// network namespace is its own, the process's other threads stay where they are).
fn enter(path: &str) {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)
        .unwrap_or_else(|e| panic!("setns({path}, CLONE_NEWNET): {e}"));
}

/// Runs `fut` as a task of `rt` (on its threads, so in its namespace) and waits for it; a panic
/// of the task goes on here.
pub fn spawned<T: Send + 'static>(
    rt: &tokio::runtime::Runtime,
    fut: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    match rt.block_on(rt.spawn(fut)) {
        Ok(v) => v,
        Err(e) => match e.try_into_panic() {
            Ok(p) => std::panic::resume_unwind(p),
            Err(e) => panic!("task: {e}"),
        },
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for h in &self.hosts {
            destroy(&h.ns);
        }
        destroy(&self.router);
    }
}
