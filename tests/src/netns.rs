//! Multi-host clusters on one machine: a bridge in a network namespace of its own and one
//! namespace per host (master, workers), each joined to the bridge by a veth pair, all on
//! 192.0.2.0/24 (TEST-NET-1). The real `bramble` and `bramble-worker` run inside their host's
//! namespace through `nsenter --net`, which switches only the network namespace: `ip netns exec`
//! would also remount `/sys`, hiding `/sys/fs/cgroup` from the worker.
//!
//! Names are `<role>-<pid>-<n>` (`br`, `bm`, `bw1`...), unique per test process and counter, at
//! most 15 characters. Every link lives inside these namespaces, never in the root namespace, so
//! deleting the namespaces removes everything; [`Topology`] does that on drop, and
//! [`Topology::create`] first removes leftovers of test processes that no longer exist.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use std::time::Duration;

use crate::{MasterProc, Proc};

/// The master's address inside the test network.
pub const MASTER_IP: &str = "192.0.2.1";
/// The master's API port inside its namespace.
pub const MASTER_PORT: u16 = 7470;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Fails loudly unless the namespace tools the tests need are present and work.
pub fn require_tools() {
    crate::require_root();
    for (tool, arg) in [("ip", "-V"), ("nsenter", "--version")] {
        let out = Command::new(tool).arg(arg).output();
        assert!(
            out.as_ref().is_ok_and(|o| o.status.success()),
            "`{tool} {arg}` failed ({out:?}): the netns tests need iproute2 and util-linux's nsenter"
        );
    }
}

/// Runs `ip ARGS` and panics with its stderr on failure.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "`ip {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `program` as a command that runs in network namespace `ns` (and nothing else changed).
pub fn in_netns(ns: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    crate::command_in(Some(ns), program)
}

/// One host: a namespace with `lo` and `eth0` (its address), cabled to bridge port `port`.
#[derive(Debug, Clone)]
pub struct Host {
    /// The namespace's name (`bm-...`, `bw1-...`).
    pub ns: String,
    /// Its address (without prefix length).
    pub addr: String,
    /// The bridge-side end of its veth pair (in the bridge namespace).
    pub port: String,
}

/// The namespaces of one test network; deleted on drop.
#[derive(Debug)]
pub struct Topology {
    /// `<pid>-<n>`.
    pub id: String,
    /// The namespace holding bridge `br0`.
    pub bridge_ns: String,
    /// The master's host.
    pub master: Host,
    /// The workers' hosts, `bw1-...` first.
    pub workers: Vec<Host>,
    /// Hosts added with [`Topology::add_host`] (`bx1-...`: "the internet", a client...).
    pub extra: Vec<Host>,
}

fn list_netns() -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// The PID a namespace name of ours carries (`bw1-1234-0` -> 1234).
fn owner_pid(name: &str) -> Option<u32> {
    let (role, rest) = name.split_once('-')?;
    let known = role == "br"
        || role == "bm"
        || ["bw", "bx"].iter().any(|p| {
            role.strip_prefix(p)
                .is_some_and(|n| n.parse::<u8>().is_ok())
        });
    if !known {
        return None;
    }
    let (pid, n) = rest.split_once('-')?;
    n.parse::<u32>().ok()?;
    pid.parse().ok()
}

/// Deletes the namespaces of test processes that are gone (a crashed or killed earlier run).
pub fn remove_stale() {
    for name in list_netns() {
        if let Some(pid) = owner_pid(&name)
            && (pid == std::process::id() || !Path::new(&format!("/proc/{pid}")).exists())
            && !live_ids().contains(&name)
        {
            let _ = Command::new("ip").args(["netns", "del", &name]).status();
        }
    }
}

/// Names of this process's topologies that are in use (not stale).
fn live_ids() -> Vec<String> {
    LIVE.lock().map(|v| v.clone()).unwrap_or_default()
}

static LIVE: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

impl Topology {
    /// Creates the bridge namespace, the master's host (192.0.2.1) and `workers` worker hosts
    /// (192.0.2.11, .12, ...), all cabled and up.
    pub fn create(workers: usize) -> Topology {
        assert!((1..=9).contains(&workers), "1 to 9 workers");
        require_tools();
        let id = format!(
            "{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let mk = |role: &str, addr: String, port: String| Host {
            ns: format!("{role}-{id}"),
            addr,
            port,
        };
        let t = Topology {
            bridge_ns: format!("br-{id}"),
            master: mk("bm", MASTER_IP.into(), "pm".into()),
            workers: (1..=workers)
                .map(|i| {
                    mk(
                        &format!("bw{i}"),
                        format!("192.0.2.{}", 10 + i),
                        format!("pw{i}"),
                    )
                })
                .collect(),
            extra: Vec::new(),
            id,
        };
        for h in t.all_ns() {
            assert!(h.len() <= 15, "netns name {h} longer than 15 characters");
        }
        {
            let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
            live.extend(t.all_ns());
        }
        remove_stale();
        let b = t.bridge_ns.as_str();
        ip(&["netns", "add", b]);
        ip(&["-n", b, "link", "set", "lo", "up"]);
        ip(&["-n", b, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", b, "link", "set", "br0", "up"]);
        for h in std::iter::once(&t.master).chain(&t.workers) {
            t.cable(h);
        }
        t
    }

    /// Adds a host at `addr` (192.0.2.0/24) on the test network: namespace `bx<N>-<id>`.
    pub fn add_host(&mut self, addr: &str) -> Host {
        let n = self.extra.len() + 1;
        let h = Host {
            ns: format!("bx{n}-{}", self.id),
            addr: addr.into(),
            port: format!("px{n}"),
        };
        assert!(
            h.ns.len() <= 15,
            "netns name {} longer than 15 characters",
            h.ns
        );
        if let Ok(mut live) = LIVE.lock() {
            live.push(h.ns.clone());
        }
        self.cable(&h);
        self.extra.push(h.clone());
        h
    }

    /// Creates `h`'s namespace and cables it to the bridge.
    fn cable(&self, h: &Host) {
        let b = self.bridge_ns.as_str();
        {
            ip(&["netns", "add", &h.ns]);
            ip(&[
                "-n", b, "link", "add", &h.port, "type", "veth", "peer", "name", "eth0", "netns",
                &h.ns,
            ]);
            ip(&["-n", b, "link", "set", &h.port, "master", "br0"]);
            ip(&["-n", b, "link", "set", &h.port, "up"]);
            ip(&["-n", &h.ns, "link", "set", "lo", "up"]);
            ip(&[
                "-n",
                &h.ns,
                "addr",
                "add",
                &format!("{}/24", h.addr),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &h.ns, "link", "set", "eth0", "up"]);
        }
    }

    /// Every namespace name, bridge first.
    pub fn all_ns(&self) -> Vec<String> {
        std::iter::once(self.bridge_ns.clone())
            .chain(std::iter::once(self.master.ns.clone()))
            .chain(self.workers.iter().map(|w| w.ns.clone()))
            .chain(self.extra.iter().map(|w| w.ns.clone()))
            .collect()
    }

    /// Cuts `h`'s cable: its bridge port goes down (neither end's process is told).
    pub fn cut(&self, h: &Host) {
        ip(&["-n", &self.bridge_ns, "link", "set", &h.port, "down"]);
    }

    /// Reconnects `h`'s cable.
    pub fn heal(&self, h: &Host) {
        ip(&["-n", &self.bridge_ns, "link", "set", &h.port, "up"]);
    }

    /// `master:port` as the workers and the CLI dial it.
    pub fn master_addr(&self) -> String {
        format!("{MASTER_IP}:{MASTER_PORT}")
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        // Deleting a namespace destroys its veth ends, and a veth pair dies with either end.
        for ns in self.all_ns().iter().rev() {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
        if let Ok(mut live) = LIVE.lock() {
            let mine = self.all_ns();
            live.retain(|n| !mine.contains(n));
        }
    }
}

impl MasterProc {
    /// Starts `bramble master --listen 192.0.2.1:7470` in `topo`'s master namespace and waits
    /// until the CLI (in the same namespace) gets an answer.
    pub fn start_in(topo: &Topology, data_dir: &Path, extra: &[&str]) -> MasterProc {
        MasterProc::builder(data_dir)
            .netns(&topo.master.ns)
            .addr(&topo.master_addr())
            .args(extra)
            .start()
    }
}

/// The cgroup parent of worker `name` in topology `topo` (host-global, so unique per run).
pub fn cgroup_parent(topo: &Topology, name: &str) -> String {
    format!("bramble-netns-{}-{name}", topo.id)
}

/// Starts `bramble-worker --name NAME --master 192.0.2.1:7470` in `host`'s namespace with its
/// own state dir, run dir and cgroup parent (emptied and removed when the `Proc` drops).
pub fn start_worker(
    topo: &Topology,
    host: &Host,
    master: &MasterProc,
    name: &str,
    state_dir: &Path,
    extra: &[&str],
) -> Proc {
    crate::worker(master, name, state_dir)
        .netns(&host.ns)
        .cgroup_parent(&cgroup_parent(topo, name))
        .args(extra)
        .start()
}

/// A master and workers `w1`, `w2`... each in its own host of one test network. Fields drop in
/// order: workers (and their pods' cgroups), master, namespaces, files.
#[derive(Debug)]
pub struct Cluster {
    /// The workers, `w1` first.
    pub workers: Vec<Proc>,
    /// The master.
    pub m: MasterProc,
    /// The network.
    pub topo: Topology,
    /// Data and state dirs (`master`, `w1`...), and their logs beside them.
    pub tmp: tempfile::TempDir,
    /// The workers' names.
    pub names: Vec<String>,
}

impl Cluster {
    /// Starts a master with `master_flags` and `workers` workers, and waits until every node is
    /// Ready.
    pub fn start(workers: usize, master_flags: &[&str]) -> Cluster {
        Cluster::start_with(workers, master_flags, |_| Vec::new())
    }

    /// [`Cluster::start`] with more flags for each worker: `worker_flags(tmp)` (the cluster's
    /// temporary directory, for files the flags name).
    pub fn start_with(
        workers: usize,
        master_flags: &[&str],
        worker_flags: impl Fn(&Path) -> Vec<String>,
    ) -> Cluster {
        let topo = Topology::create(workers);
        let tmp = tempfile::tempdir().unwrap();
        let flags = worker_flags(tmp.path());
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let m = MasterProc::start_in(&topo, &tmp.path().join("master"), master_flags);
        let names: Vec<String> = (1..=workers).map(|i| format!("w{i}")).collect();
        let workers = names
            .iter()
            .zip(&topo.workers)
            .map(|(n, h)| start_worker(&topo, h, &m, n, &tmp.path().join(n), &flags))
            .collect();
        let c = Cluster {
            workers,
            m,
            topo,
            tmp,
            names,
        };
        c.wait(Duration::from_secs(20), "every node Ready", || {
            c.all_ready().then_some(())
        });
        c
    }

    /// Whether every worker's node is Ready.
    pub fn all_ready(&self) -> bool {
        let ready = self.m.ready_nodes();
        self.names.iter().all(|n| ready.contains(n))
    }

    /// The workers' cgroup parents.
    pub fn parents(&self) -> Vec<String> {
        self.names
            .iter()
            .map(|n| cgroup_parent(&self.topo, n))
            .collect()
    }

    /// Nodes, pods, services, the pods' processes and the logs: for failure messages.
    pub fn diag(&self) -> String {
        let mut s = self.m.diag(&[
            &["get", "nodes", "-o", "wide"],
            &["get", "pods", "-o", "wide"],
            &["get", "services"],
            &["get", "endpoints", "-o", "wide"],
        ]);
        s += &format!(
            "\nsleep processes under the workers' cgroups: {:?}\n",
            processes_under(&self.parents(), "sleep")
        );
        for n in &self.names {
            let log = std::fs::read_to_string(self.tmp.path().join(n).with_extension("worker.log"))
                .unwrap_or_default();
            s += &format!("\nworker {n} log (tail):\n{}\n", crate::tail(&log, 3000));
        }
        s
    }

    /// Polls `f` until it returns `Some`; after `timeout`, panics with `what` and [`Self::diag`].
    pub fn wait<T>(&self, timeout: Duration, what: &str, f: impl FnMut() -> Option<T>) -> T {
        crate::wait_for_with(timeout, what, f, || self.diag())
    }
}

/// Declares `struct $name(netns::Cluster)` with `Deref`/`DerefMut` to it, for a test file to add
/// its own methods to the harness's cluster (`impl $name { ... }`).
#[macro_export]
macro_rules! cluster_type {
    ($name:ident) => {
        /// The harness's cluster, with this file's helpers.
        struct $name($crate::netns::Cluster);

        impl ::std::ops::Deref for $name {
            type Target = $crate::netns::Cluster;
            fn deref(&self) -> &$crate::netns::Cluster {
                &self.0
            }
        }

        impl ::std::ops::DerefMut for $name {
            fn deref_mut(&mut self) -> &mut $crate::netns::Cluster {
                &mut self.0
            }
        }
    };
}

/// A process found under a worker's cgroup parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodProcess {
    /// Host PID.
    pub pid: u32,
    /// The cgroup parent it lives under.
    pub parent: String,
    /// The pod's name, from its cgroup (`<parent>/<namespace>_<name>_<uid prefix>`).
    pub pod: String,
}

/// Every process named `comm` whose cgroup (in any hierarchy) is under one of `parents`, from
/// the host's `/proc`: what really runs, whatever the master or the agents believe.
pub fn processes_under(parents: &[String], comm: &str) -> Vec<PodProcess> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(c) = std::fs::read_to_string(format!("/proc/{pid}/comm")) else {
            continue;
        };
        if c.trim_end() != comm {
            continue;
        }
        let Ok(cg) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
            continue;
        };
        let found = cg.lines().find_map(|l| {
            let path = l.splitn(3, ':').nth(2)?;
            parents.iter().find_map(|p| {
                let (_, rest) = path.split_once(&format!("/{p}/"))?;
                let dir = rest.split('/').next()?;
                let (_ns, name_uid) = dir.split_once('_')?;
                let name = name_uid.rsplit_once('_').map_or(name_uid, |(n, _)| n);
                Some((p.clone(), name.to_string()))
            })
        });
        if let Some((parent, pod)) = found {
            out.push(PodProcess { pid, parent, pod });
        }
    }
    out.sort_by_key(|p| p.pid);
    out
}

/// Whether PID `pid` exists and is not a zombie.
pub fn pid_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().next().map(|st| st != "Z"))
        })
        .unwrap_or(false)
}

/// The local ports of `pid`'s established TCP connections to `ip:port`, read from
/// `/proc/PID/net/tcp`, which shows the process's own network namespace.
///
/// The kernel prints `/proc/net/tcp` one page per `read` and resumes by position in its
/// socket hash table, so when sockets come or go between two reads an entry can be printed
/// twice (CI saw one connection listed as `[55160, 55160]`). A connection's
/// four-tuple is unique, so repeats are dropped (the list is sorted by local port).
pub fn tcp_connections_to(pid: u32, ip: [u8; 4], port: u16) -> Vec<u16> {
    let remote = format!("{:08X}:{port:04X}", u32::from_ne_bytes(ip));
    let mut ports: Vec<u16> = std::fs::read_to_string(format!("/proc/{pid}/net/tcp"))
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // sl local_address rem_address st ...; 01 = ESTABLISHED.
            (f.len() > 3 && f[2] == remote && f[3] == "01")
                .then(|| f[1].rsplit_once(':'))
                .flatten()
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
        })
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

#[cfg(test)]
mod tests {
    use super::owner_pid;

    #[test]
    fn names_of_ours_carry_the_pid() {
        assert_eq!(owner_pid("bw1-1234-0"), Some(1234));
        assert_eq!(owner_pid("br-99-12"), Some(99));
        assert_eq!(owner_pid("bm-7-1"), Some(7));
        assert_eq!(owner_pid("bw-7-1"), None);
        assert_eq!(owner_pid("br-lan"), None);
        assert_eq!(owner_pid("docker-1-2"), None);
        assert_eq!(owner_pid("bm-7-x"), None);
    }
}
