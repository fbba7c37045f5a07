//! The whole-cluster harness: start real `bramble` and `bramble-worker` processes (on loopback,
//! or inside the network namespaces of [`netns`]), drive the real CLI and read its `-o json`
//! output as wire types, and clean up by PID even when a test fails.
//!
//! The generic pieces (builders, [`free_port`], [`wait_for`], [`Proc`], [`bin`] and its check
//! that a binary was built from the current sources) are `bramble-testkit`, re-exported here.
#![forbid(unsafe_code)]

pub mod netns;
pub mod relay;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub use bramble_testkit::{
    Proc, bin, build, free_port, is_root, plain, remove_cgroup_tree, require_root, tail, wait_for,
    wait_for_last, wait_for_with,
};
use bramble_wire::objects::{Endpoints, Node, Object, Pod};

/// `program` as a command run in network namespace `ns` (nothing else changes: `nsenter --net`
/// leaves `/sys` and the cgroups visible), or on this host's network when `ns` is `None`.
pub fn command_in(ns: Option<&str>, program: impl AsRef<OsStr>) -> Command {
    match ns {
        Some(ns) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net=/run/netns/{ns}")).arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// `sh -c 'raise the open-files limit; exec PROGRAM ARGS'`: the PID stays the program's (for
/// the benches' thousands of simulated nodes).
pub fn with_nofile(program: &Path) -> Command {
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg("ulimit -n 65536 2>/dev/null || ulimit -n \"$(ulimit -Hn)\"; exec \"$0\" \"$@\"")
        .arg(program);
    c
}

/// A master process with its data dir.
#[derive(Debug)]
pub struct MasterProc {
    /// The process (the master itself: `nsenter` and `sh` exec it).
    pub proc: Proc,
    /// `127.0.0.1:PORT`, or `192.0.2.1:7470` in a test network.
    pub addr: String,
    /// Data dir.
    pub data_dir: PathBuf,
    /// The network namespace it runs in (where the CLI runs too); `None`: this host's.
    pub ns: Option<String>,
}

/// The harness's name for a master in a test network (the same type).
pub type NetMaster = MasterProc;

/// How to start a master: [`MasterProc::builder`].
#[derive(Debug, Clone)]
pub struct MasterSpec {
    data_dir: PathBuf,
    addr: Option<String>,
    ns: Option<String>,
    extra: Vec<String>,
    env: Vec<(String, String)>,
    nofile: bool,
    program: Option<PathBuf>,
}

impl MasterSpec {
    /// Listens on `addr` (default: a free loopback port, another one if it is taken first).
    pub fn addr(mut self, addr: &str) -> Self {
        self.addr = Some(addr.into());
        self
    }

    /// Runs in network namespace `ns`.
    pub fn netns(mut self, ns: &str) -> Self {
        self.ns = Some(ns.into());
        self
    }

    /// More flags for `bramble master`.
    pub fn args(mut self, extra: &[&str]) -> Self {
        self.extra.extend(extra.iter().map(|s| s.to_string()));
        self
    }

    /// An environment variable for the master (e.g. `RUST_LOG`, to see the reasons it closes
    /// connections for).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Runs another build of `bramble` than this tree's (the baseline a benchmark compares
    /// against); tests never do.
    pub fn program(mut self, program: &Path) -> Self {
        self.program = Some(program.to_path_buf());
        self
    }

    /// Raises the open-files limit first ([`with_nofile`]).
    pub fn nofile(mut self) -> Self {
        self.nofile = true;
        self
    }

    /// Starts it and waits until it serves; panics with its log if it does not.
    pub fn start(self) -> MasterProc {
        if let Some(addr) = &self.addr {
            return self
                .try_start(addr)
                .unwrap_or_else(|log| panic!("master on {addr} exited at start; log: {log}"));
        }
        // The port is free when picked but not held: another process may take it before the
        // master binds it. Then the master says so and exits, and another port is tried.
        for _ in 0..4 {
            let addr = format!("127.0.0.1:{}", free_port());
            match self.try_start(&addr) {
                Ok(m) => return m,
                Err(log) if log.contains("Address already in use") => continue,
                Err(log) => panic!("master on {addr} exited at start; log: {log}"),
            }
        }
        panic!("master: four free ports were taken before it could bind them")
    }

    /// Starts it on `addr` and waits until it serves; its log if it exits first.
    fn try_start(&self, addr: &str) -> Result<MasterProc, String> {
        let log = std::fs::File::create(self.data_dir.with_extension("master.log")).unwrap();
        let program = self.program.clone().unwrap_or_else(|| bin("bramble"));
        let mut cmd = if self.nofile {
            let mut c = command_in(self.ns.as_deref(), "sh");
            c.args(with_nofile(&program).get_args());
            c
        } else {
            command_in(self.ns.as_deref(), program)
        };
        cmd.args(["master", "--data-dir"])
            .arg(&self.data_dir)
            .args(["--listen", addr])
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        let mut m = MasterProc {
            proc: spawn(&mut cmd, &self.extra, log, "master".into(), None),
            addr: addr.to_string(),
            data_dir: self.data_dir.clone(),
            ns: self.ns.clone(),
        };
        m.wait_ready()?;
        Ok(m)
    }
}

impl MasterProc {
    /// A master to start with `data_dir`: set its options, then [`MasterSpec::start`].
    pub fn builder(data_dir: &Path) -> MasterSpec {
        MasterSpec {
            data_dir: data_dir.to_path_buf(),
            addr: None,
            ns: None,
            extra: Vec::new(),
            env: Vec::new(),
            nofile: false,
            program: None,
        }
    }

    /// Starts `bramble master` on a free loopback port and waits until it accepts clients.
    pub fn start(data_dir: &Path, extra: &[&str]) -> MasterProc {
        Self::builder(data_dir).args(extra).start()
    }

    /// Like [`MasterProc::start`], with environment variables for the master.
    pub fn start_with_env(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> MasterProc {
        env.iter()
            .fold(Self::builder(data_dir).args(extra), |b, (k, v)| b.env(k, v))
            .start()
    }

    /// Starts `bramble master` on `addr`.
    pub fn start_on(data_dir: &Path, addr: &str, extra: &[&str]) -> MasterProc {
        Self::builder(data_dir).addr(addr).args(extra).start()
    }

    /// Waits until the master serves; its log if it exits first.
    fn wait_ready(&mut self) -> Result<(), String> {
        let t = Instant::now();
        loop {
            // Our master, not another process that holds the port.
            if let Ok(Some(_)) = self.proc.child.try_wait() {
                return Err(self.log());
            }
            // Both tokens: workers start from join.token, written after admin.token. From
            // outside its namespace the port is out of reach: the CLI asks from inside.
            if self.data_dir.join("admin.token").exists()
                && self.data_dir.join("join.token").exists()
                && match self.ns {
                    None => std::net::TcpStream::connect(&self.addr).is_ok(),
                    Some(_) => self.cli(&["get", "nodes"]).status.success(),
                }
            {
                return Ok(());
            }
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "master on {} did not come up; log: {}",
                self.addr,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The master's stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.with_extension("master.log")).unwrap_or_default()
    }

    /// Runs the real `bramble` CLI against this master (in its namespace, if it has one).
    pub fn cli(&self, args: &[&str]) -> Output {
        command_in(self.ns.as_deref(), bin("bramble"))
            .args(args)
            .env("BRAMBLE_SERVER", &self.addr)
            .env("BRAMBLE_TOKEN_FILE", self.data_dir.join("admin.token"))
            .output()
            .expect("run bramble")
    }

    /// Runs the real CLI with `input` on its stdin and `env` added to its environment.
    pub fn cli_with(&self, args: &[&str], input: &str, env: &[(&str, &str)]) -> Output {
        use std::io::Write;
        let mut child = command_in(self.ns.as_deref(), bin("bramble"))
            .args(args)
            .env("BRAMBLE_SERVER", &self.addr)
            .env("BRAMBLE_TOKEN_FILE", self.data_dir.join("admin.token"))
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run bramble");
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(input.as_bytes()).expect("write stdin");
        drop(stdin);
        child.wait_with_output().expect("wait for bramble")
    }

    /// Starts the real CLI in the background (stdio to /dev/null), for commands that run until
    /// something ends them (`exec`, `logs -f`).
    pub fn cli_child(&self, args: &[&str]) -> std::process::Child {
        command_in(self.ns.as_deref(), bin("bramble"))
            .args(args)
            .env("BRAMBLE_SERVER", &self.addr)
            .env("BRAMBLE_TOKEN_FILE", self.data_dir.join("admin.token"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run bramble")
    }

    /// Runs the CLI and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        succeeded(args, self.cli(args))
    }

    /// `bramble get KIND [NAME] -o json` (more flags in `args`), parsed into wire objects. An
    /// object that does not exist is an empty list.
    pub fn get(&self, kind: &str, args: &[&str]) -> Vec<Object> {
        let mut all = vec!["get", kind];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", "json"]);
        let o = self.cli(&all);
        if !o.status.success() && args.first().is_some_and(|a| !a.starts_with('-')) {
            return Vec::new();
        }
        objects(&succeeded(&all, o))
    }

    /// Every event (`bramble get events -o json`).
    pub fn events(&self) -> Vec<bramble_wire::objects::Event> {
        self.get("events", &[])
            .into_iter()
            .filter_map(|o| match o {
                Object::Event(e) => Some(e),
                _ => None,
            })
            .collect()
    }

    /// Runs `bramble ARGS` (`logs POD ...`) until its output holds `needle` (30 s, then panics
    /// with the last output); returns that output.
    pub fn wait_log(&self, args: &[&str], needle: &str) -> String {
        let t = Instant::now();
        loop {
            let o = self.cli(args);
            let l = String::from_utf8_lossy(&o.stdout).into_owned();
            if l.contains(needle) {
                return l;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "no {needle:?} in `bramble {}` after 30 s: {l}{}",
                args.join(" "),
                String::from_utf8_lossy(&o.stderr)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Object `kind`/`name` of namespace `default`, if it exists.
    pub fn one(&self, kind: &str, name: &str) -> Option<Object> {
        self.get(kind, &[name]).into_iter().next()
    }

    /// Every node.
    pub fn nodes(&self) -> Vec<Node> {
        self.get("nodes", &[])
            .into_iter()
            .filter_map(|o| match o {
                Object::Node(n) => Some(n),
                _ => None,
            })
            .collect()
    }

    /// Node `name`, if it exists.
    pub fn node(&self, name: &str) -> Option<Node> {
        self.nodes().into_iter().find(|n| n.meta.name == name)
    }

    /// The id of node `node`'s live (not revoked) credential in `bramble token list`.
    pub fn node_credential(&self, node: &str) -> Option<String> {
        self.ok(&["token", "list"]).lines().find_map(|l| {
            // ID KIND NODE AGE EXPIRES USES REVOKED DESCRIPTION (a node credential's EXPIRES
            // is `never`, its USES `-`: one word each).
            let c: Vec<&str> = l.split_whitespace().collect();
            (c.len() >= 7 && c[1] == "node" && c[2] == node && c[6] == "no")
                .then(|| c[0].to_string())
        })
    }

    /// The names of the nodes whose Ready condition holds (not `NotReady`, not unknown).
    pub fn ready_nodes(&self) -> Vec<String> {
        self.nodes()
            .into_iter()
            .filter(|n| n.status.is_ready())
            .map(|n| n.meta.name)
            .collect()
    }

    /// Whether node `name` is Ready.
    pub fn node_ready(&self, name: &str) -> bool {
        self.ready_nodes().iter().any(|n| n == name)
    }

    /// Pod `name` of namespace `default`, if it exists.
    pub fn pod(&self, name: &str) -> Option<Pod> {
        match self.one("pod", name)? {
            Object::Pod(p) => Some(p),
            _ => None,
        }
    }

    /// The pods of namespace `default` matching label selector `selector` (`""`: all).
    pub fn pods(&self, selector: &str) -> Vec<Pod> {
        let args: &[&str] = if selector.is_empty() {
            &[]
        } else {
            &["-l", selector]
        };
        self.get("pods", args)
            .into_iter()
            .filter_map(|o| match o {
                Object::Pod(p) => Some(p),
                _ => None,
            })
            .collect()
    }

    /// The endpoints of service `name` in namespace `default` (`None` until computed).
    pub fn endpoints(&self, name: &str) -> Option<Endpoints> {
        match self.one("endpoints", name)? {
            Object::Endpoints(e) => Some(e),
            _ => None,
        }
    }

    /// A pod's phase and status message (`None` if it does not exist).
    pub fn pod_status(&self, name: &str) -> Option<(String, String)> {
        self.pod(name)
            .map(|p| (p.status.phase.as_str().to_string(), p.status.message))
    }

    /// The output of `commands` (CLI argument lists) and the tail of the master's log: the
    /// cluster's state for a failure message.
    pub fn diag(&self, commands: &[&[&str]]) -> String {
        let mut s = String::new();
        for args in commands {
            let o = self.cli(args);
            s += &format!(
                "\n$ bramble {}\n{}{}",
                args.join(" "),
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
        }
        s + &format!("\nmaster log (tail):\n{}\n", tail(&self.log(), 6000))
    }

    /// An API client (from this host: a master on loopback).
    pub fn client(&self) -> bramble_client::Client {
        let token = std::fs::read_to_string(self.data_dir.join("admin.token")).unwrap();
        smol::block_on(bramble_client::Client::connect(&self.addr, token.trim())).expect("connect")
    }
}

/// Asserts that a CLI run succeeded, showing its output if not; returns stdout.
pub fn succeeded(args: &[&str], o: Output) -> String {
    assert!(
        o.status.success(),
        "bramble {args:?} failed ({:?}): {}{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// How to start a worker: [`worker`].
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    name: String,
    state_dir: PathBuf,
    master_addr: String,
    token_file: PathBuf,
    ns: Option<String>,
    cgroup_parent: String,
    extra: Vec<String>,
}

/// A `bramble-worker` named `name` joining `master` with its own state dir, run dir
/// (`STATE_DIR.run`) and cgroup parent (`bramble-test-PID-HASH-NAME`, emptied and removed when
/// its [`Proc`] drops); set more with the methods, then [`WorkerSpec::start`].
///
/// The parent is keyed by the state dir too: tests of one binary run side by side and often
/// name their workers alike (`n1`), and a worker's parent is emptied when it stops, which took
/// down the pods of another test's `n1` (CI saw `start failed: write .../_init/cgroup.procs: No
/// such file or directory`). A worker restarted on the same state dir gets the same parent, so
/// it finds its pods again.
pub fn worker(master: &MasterProc, name: &str, state_dir: &Path) -> WorkerSpec {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    state_dir.hash(&mut h);
    WorkerSpec {
        name: name.into(),
        state_dir: state_dir.to_path_buf(),
        master_addr: master.addr.clone(),
        token_file: master.data_dir.join("join.token"),
        ns: None,
        cgroup_parent: format!(
            "bramble-test-{}-{:08x}-{name}",
            std::process::id(),
            h.finish() as u32
        ),
        extra: Vec::new(),
    }
}

impl WorkerSpec {
    /// Dials `addr` instead of the master's own address (a relay).
    pub fn via(mut self, addr: &str) -> Self {
        self.master_addr = addr.into();
        self
    }

    /// Runs in network namespace `ns`.
    pub fn netns(mut self, ns: &str) -> Self {
        self.ns = Some(ns.into());
        self
    }

    /// Puts its pods under cgroup parent `parent`.
    pub fn cgroup_parent(mut self, parent: &str) -> Self {
        self.cgroup_parent = parent.into();
        self
    }

    /// Joins with the token in `path` instead of the master's `join.token`.
    pub fn token_file(mut self, path: &Path) -> Self {
        self.token_file = path.to_path_buf();
        self
    }

    /// More flags for `bramble-worker`.
    pub fn args(mut self, extra: &[&str]) -> Self {
        self.extra.extend(extra.iter().map(|s| s.to_string()));
        self
    }

    /// Starts it (its stderr appended to `STATE_DIR.worker.log`).
    pub fn start(self) -> Proc {
        std::fs::create_dir_all(&self.state_dir).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.state_dir.with_extension("worker.log"))
            .unwrap();
        let mut cmd = command_in(self.ns.as_deref(), bin("bramble-worker"));
        cmd.args(["--master", &self.master_addr, "--name", &self.name])
            .arg("--state-dir")
            .arg(&self.state_dir)
            // Tests run several agents on one host: each its own runtime dir and cgroup parent.
            .arg("--run-dir")
            .arg(self.state_dir.with_extension("run"))
            .args(["--cgroup-parent", &self.cgroup_parent])
            .arg("--token-file")
            .arg(&self.token_file);
        // Agents sharing the host's network namespace would share its one nftables table and
        // bridge: they serve services from userspace, each with a pod bridge of its own, deleted
        // with the worker. A worker in a namespace of its own (a host of `netns::Topology`, a
        // QEMU guest) keeps the kernel path and `bramble0`, the defaults.
        let mut bridge = None;
        if self.ns.is_none() {
            if !self.extra.iter().any(|a| a == "--service-proxy") {
                cmd.args(["--service-proxy", "userspace"]);
            }
            if !self.extra.iter().any(|a| a == "--pod-bridge") {
                static BRIDGES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
                let n = BRIDGES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let name = format!("bt{}-{n}", std::process::id() % 100_000);
                cmd.args(["--pod-bridge", &name]);
                bridge = Some(name);
            }
        }
        let what = match &self.ns {
            Some(ns) => format!("worker {} in {ns}", self.name),
            None => format!("worker {}", self.name),
        };
        let mut p = spawn(&mut cmd, &self.extra, log, what, Some(self.cgroup_parent));
        p.bridge = bridge;
        p
    }
}

/// Spawns `cmd` with `extra` arguments, no stdin or stdout and stderr into `log`.
fn spawn(
    cmd: &mut Command,
    extra: &[String],
    log: std::fs::File,
    what: String,
    cgroup_parent: Option<String>,
) -> Proc {
    let child = cmd
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    Proc {
        child,
        what,
        cgroup_parent,
        bridge: None,
    }
}

/// The log of the worker whose state dir is `state` (`STATE.worker.log`), without colours.
pub fn worker_log(state: &Path) -> String {
    plain(&std::fs::read_to_string(state.with_extension("worker.log")).unwrap_or_default())
}

/// Starts `bramble-worker` against `master`.
pub fn start_worker(master: &MasterProc, name: &str, state_dir: &Path, extra: &[&str]) -> Proc {
    worker(master, name, state_dir).args(extra).start()
}

/// Master flags for tests that wait through evictions: fast enough to wait through one,
/// slow enough that a healthy worker's heartbeats, delayed on a loaded machine, never make it
/// look gone.
pub const FAST_EVICTION: &[&str] = &[
    "--heartbeat-interval",
    "300ms",
    "--node-grace",
    "4s",
    "--eviction-timeout",
    "3s",
];

/// Starts a master with `master_args` in `tmp/master` and one worker per name (state in
/// `tmp/NAME`), and waits until every worker's node is Ready (30 s, then the logs).
pub fn start_cluster(
    tmp: &Path,
    master_args: &[&str],
    workers: &[&str],
) -> (MasterProc, Vec<Proc>) {
    let m = MasterProc::start(&tmp.join("master"), master_args);
    let ws: Vec<Proc> = workers
        .iter()
        .map(|n| start_worker(&m, n, &tmp.join(n), &[]))
        .collect();
    let t0 = Instant::now();
    for n in workers {
        while !m.node_ready(n) {
            if t0.elapsed() > Duration::from_secs(30) {
                panic!(
                    "node {n} not Ready after 30 s; nodes:\n{}\nworker log:\n{}\nmaster log:\n{}",
                    m.ok(&["get", "nodes"]),
                    worker_log(&tmp.join(n)),
                    m.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    (m, ws)
}

/// One HTTP/1.0 `GET path` to `addr` (20 s read timeout): the whole answer, headers included.
pub fn http_get(addr: &str, path: &str) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut s =
        std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .unwrap_or_else(|e| panic!("reading from {addr}: {e}"));
    out
}

/// Parses `bramble get ... -o json` output, untyped.
pub fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// Parses `bramble get ... -o json` output (one object, or a `List`) into wire objects.
pub fn objects(s: &str) -> Vec<Object> {
    bramble_client::doc::objects_of_json(s)
        .unwrap_or_else(|e| panic!("not wire objects in JSON ({e}): {s}"))
}

/// Unmounts (lazily) a mount the test made or caused when dropped: a test's tmpfs, the worker's
/// secrets tmpfs.
#[derive(Debug)]
pub struct Unmount(pub PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Mounts a `mib` MiB tmpfs on `dir` (created if missing): a small disk for a state or data dir.
/// Unmounted when the returned guard drops. Needs root.
pub fn mount_tmpfs(dir: &Path, mib: u32) -> Unmount {
    require_root();
    std::fs::create_dir_all(dir).unwrap();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
        .arg(dir)
        .status()
        .expect("run mount");
    assert!(st.success(), "mount a {mib} MiB tmpfs on {}", dir.display());
    Unmount(dir.to_path_buf())
}

/// Writes `text` to `dir/name` (a manifest for `bramble apply -f`); returns the path as a string.
pub fn write_file(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

/// A `Key:   123 kB` field of `/proc/PID/status` or `smaps_rollup`, in kB.
pub fn proc_kb(pid: u32, file: &str, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok()?;
    s.lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// A process's resident memory (`VmRSS`), in kB.
pub fn rss_kb(pid: u32) -> Option<u64> {
    proc_kb(pid, "status", "VmRSS")
}

/// `bramble-nodesim` (its path: `env!("CARGO_BIN_EXE_bramble-nodesim")` in a test or bench)
/// running `nodes` simulated nodes named `prefix-I` against `master` until it is dropped, with
/// `extra` flags; waits (`timeout`) until every node got its first assignment. Its stdout lines
/// after that come on the receiver.
pub fn nodesim(
    program: &Path,
    master: &MasterProc,
    prefix: &str,
    nodes: usize,
    extra: &[&str],
    timeout: Duration,
) -> (Proc, std::sync::mpsc::Receiver<String>) {
    use std::io::BufRead;
    let mut child = with_nofile(program)
        .args(["--master", &master.addr, "--token-file"])
        .arg(master.data_dir.join("join.token"))
        .args(["--nodes", &nodes.to_string(), "--prefix", prefix])
        .args(["--duration", "30m", "--until-stdin-closes"])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn bramble-nodesim");
    let out = child.stdout.take().expect("stdout");
    // Its stdin stays open (in the child handle) until the Proc drops.
    let sim = Proc {
        child,
        what: format!("nodesim {prefix}"),
        cgroup_parent: None,
        bridge: None,
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                return;
            }
        }
    });
    let ready = format!("nodesim: ready {nodes}/{nodes}");
    let t = Instant::now();
    let mut seen = Vec::new();
    loop {
        let l = rx
            .recv_timeout(timeout.saturating_sub(t.elapsed()))
            .unwrap_or_else(|_| {
                panic!(
                    "nodesim never ready: {seen:?}\n{}",
                    tail(&master.log(), 3000)
                )
            });
        let done = l.starts_with(&ready);
        seen.push(l);
        if done {
            return (sim, rx);
        }
    }
}

/// Connections from this host that connect and then say nothing, kept at `n` for as long as the
/// returned guard lives: closed ones are reopened every quarter second (as an attacker would).
#[derive(Debug)]
pub struct IdleFlood {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl IdleFlood {
    /// Opens `n` connections to `addr` and keeps them for at most `limit`.
    pub fn start(addr: &str, n: usize, limit: Duration) -> IdleFlood {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (addr, stop2) = (addr.to_string(), stop.clone());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let t = Instant::now();
            let mut opened = 0u64;
            let mut socks: Vec<Option<std::net::TcpStream>> = (0..n).map(|_| None).collect();
            let mut first = true;
            while !stop2.load(Ordering::Relaxed) && t.elapsed() < limit {
                for s in socks.iter_mut() {
                    let alive = s.as_mut().is_some_and(|c| {
                        use std::io::Read;
                        let mut b = [0u8; 64];
                        matches!(c.read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
                    });
                    if !alive && let Ok(c) = std::net::TcpStream::connect(&addr) {
                        let _ = c.set_nonblocking(true);
                        *s = Some(c);
                        opened += 1;
                    }
                }
                if first {
                    first = false;
                    let _ = ready_tx.send(());
                }
                std::thread::sleep(Duration::from_millis(250));
            }
            opened
        });
        ready_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the idle sockets opened");
        IdleFlood {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops it; returns how many connections it opened in all.
    pub fn stop(mut self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take().map(|t| t.join().unwrap()).unwrap_or(0)
    }
}

impl Drop for IdleFlood {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
