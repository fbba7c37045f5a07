//! Whole-cluster scenarios on QEMU ARM guests, asserted through the real `bramble` CLI.
//!
//! The master is a real `bramble master` process on the host (built for the host) on a free
//! loopback port; every guest runs the cross-built `bramble-worker` for its board and reaches
//! the master through QEMU's guestfwd relay (see [`crate::qemu`]). The scenarios:
//!
//! 1. **registration**: `qemu-virt-aarch64`, then `qemu-virt-armv7` register; `bramble get nodes
//!    -o json` shows their arch and cgroup v2 with cpu, memory and pids; boot-to-Ready (QEMU
//!    start → node Ready in the master) is measured per board.
//! 2. **arch pinning**: with both nodes Ready, pods with `arch = "aarch64"` / `"armv7"` land only
//!    on the matching board (and print that board's `uname -m`, and that they are contained by
//!    default: seccomp filter on, `unshare` refused, a block device refused); an `x86_64` pod
//!    stays Pending with the scheduler's "wrong architecture" reason.
//!    **containment** ([`containment`], both boards up): `bramble-attack`, cross-built and
//!    pushed as an artifact, runs as root in a default and a `privileged = true` pod on each
//!    board; the default pod is refused every attack (14 capabilities, seccomp), the privileged
//!    one is not.
//!    **images** ([`images`], both boards up): one multi-arch OCI image from a registry on the
//!    host's loopback, pulled by the master, runs its own variant on each board (whiteouts,
//!    Entrypoint/Cmd/Env/WorkingDir/User checked in the pods' logs).
//! 3. **pods**: a pod pinned to the aarch64 node runs and its output comes back through
//!    `bramble logs`; a pod with `memory = "32Mi"` that allocates ~100 MB is OOMKilled (cgroup v2).
//! 4. **cgroup limits** ([`limits`]): a `cpu = "250m"` pod holds 10-40 % of a core (its own
//!    `cpu.stat` over guest time, next to an unlimited busy pod that gets clearly more), and a
//!    fork bomb with `pids = 24` never exceeds `pids.max` while the kernel refuses its forks.
//! 5. **isolated pod**: a `network = "isolated"` pod on the aarch64 board gets an address in
//!    its node's pod subnet, a default route via the node's bridge, and a ping answered there.
//!    **kernel network path** ([`network`]): the worker runs with its nftables table and cluster
//!    DNS (the guests load the nf_tables modules); a service's virtual IP answers its short name
//!    and FQDN through an isolated pod's own resolv.conf, and the pod reaches the master relay
//!    (the restricted network's only outside address) masqueraded to the node's address
//!    (seen in the guest's conntrack table).
//! 6. **power cut**: with pods running (restart Always), QEMU is SIGKILLed and the master is
//!    killed; the guest boots again on the same state disk with no master and the worker restarts
//!    its pods from local state (seen on the guest console); the master comes back on the same
//!    port and data dir, the node is Ready again and the pods Running, each started once.
//!
//! Every wait is bounded; every failure carries the consoles of the guests involved and the
//! tail of the master's log. [`run_suite`] runs them in that order and reports per scenario.

use std::fmt::Write as _;
use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use bramble_boards::Board;
use serde_json::Value;

use crate::build::{self, Bin};
use crate::qemu::{Guest, GuestSpec, READY_MARKER, StateDisk};
use crate::util::{run, run_ok};

pub mod containment;
pub mod images;
pub mod limits;
pub mod master_power;
pub mod network;
pub use containment::containment_on_both_boards;
pub use images::image_on_both_boards;
pub use limits::cgroup_limits_on_aarch64;
pub use network::kernel_network_on_aarch64;

/// QEMU start → `BRAMBLE-GUEST-READY` under TCG.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
/// QEMU start → node Ready in the master.
pub const READY_TIMEOUT: Duration = Duration::from_secs(150);
/// The master's timing flags for the suite.
pub const MASTER_FLAGS: [&str; 6] = [
    "--heartbeat-interval",
    "1s",
    "--node-grace",
    "5s",
    "--eviction-timeout",
    "30s",
];

/// The boards the suite boots, in boot order.
pub const BOARDS: [&str; 2] = ["qemu-virt-aarch64", "qemu-virt-armv7"];

/// Variables that make the suite run something other than the current sources (`BRAMBLE_BIN`,
/// `BRAMBLE_WORKER_<BOARD>`) or fewer scenarios (`BRAMBLE_QEMU_ONLY`). Development aids for
/// `cargo cross qemu-test`; the tests refuse to run with any of them set.
pub const DEV_ONLY_VARS: [&str; 3] = ["BRAMBLE_BIN", "BRAMBLE_QEMU_ONLY", "BRAMBLE_WORKER_*"];

/// The development-only variables set in this environment (see [`DEV_ONLY_VARS`]), as
/// `NAME=value`.
pub fn dev_overrides_set() -> Vec<String> {
    let mut set: Vec<String> = std::env::vars_os()
        .filter_map(|(k, v)| {
            let k = k.to_str()?.to_string();
            let dev =
                k == "BRAMBLE_BIN" || k == "BRAMBLE_QEMU_ONLY" || k.starts_with("BRAMBLE_WORKER_");
            dev.then(|| format!("{k}={}", v.to_string_lossy()))
        })
        .collect();
    set.sort();
    set
}

/// Fails if any development-only variable is set: a test must run every scenario with
/// binaries built from the current sources, so an override could only turn red into green.
pub fn refuse_dev_overrides() -> Result<()> {
    let set = dev_overrides_set();
    if !set.is_empty() {
        bail!(
            "refusing to run the QEMU tests with {}: these pick other binaries or fewer scenarios \
             and are for `cargo cross qemu-test` (development) only; unset them",
            set.join(", ")
        );
    }
    Ok(())
}

/// The host's `bramble` (master + CLI), built now from the current sources with
/// `cargo build -p bramble-cli --bin bramble` (a no-op when it is up to date; a `bramble`
/// lying next to the executable may be stale). With `dev_overrides`, `$BRAMBLE_BIN` instead.
pub fn host_bramble(dev_overrides: bool) -> Result<PathBuf> {
    if dev_overrides && let Some(p) = std::env::var_os("BRAMBLE_BIN") {
        let p = PathBuf::from(p);
        if !p.is_file() {
            bail!("BRAMBLE_BIN={} does not exist", p.display());
        }
        eprintln!(
            "cluster: BRAMBLE_BIN={} (not built from the current sources)",
            p.display()
        );
        return Ok(p);
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run_ok(
        Command::new(cargo)
            .current_dir(crate::util::workspace_root())
            .args(["build", "-q", "-p", "bramble-cli", "--bin", "bramble"]),
        Duration::from_secs(1200),
    )
    .context("building the host's `bramble`")?;
    let p = crate::util::target_dir().join("debug/bramble");
    if !p.is_file() {
        bail!("{} missing after cargo build", p.display());
    }
    Ok(p)
}

/// The environment variable that overrides the worker binary for a board:
/// `BRAMBLE_WORKER_QEMU_VIRT_AARCH64` for `qemu-virt-aarch64`.
pub fn worker_env_var(board: &str) -> String {
    format!(
        "BRAMBLE_WORKER_{}",
        board.to_ascii_uppercase().replace('-', "_")
    )
}

/// The cross-built worker for `board`: an explicit path, with `dev_overrides` the board's
/// `BRAMBLE_WORKER_*` variable, else a release cross build of the current sources now.
pub fn worker_for(board: &Board, explicit: Option<&Path>, dev_overrides: bool) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    let var = worker_env_var(&board.name);
    if dev_overrides && let Some(p) = std::env::var_os(&var) {
        eprintln!(
            "cluster: {var}={} (not built from the current sources)",
            p.to_string_lossy()
        );
        return Ok(PathBuf::from(p));
    }
    let built = build::build(board, true, &[Bin::Worker]).with_context(|| {
        format!(
            "cross-building bramble-worker for {} ({}) failed, so the scenarios on this board cannot run",
            board.name, board.target
        )
    })?;
    Ok(built[0].stripped.clone())
}

/// A free TCP port on the host's loopback.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A `bramble master` process on the host. Dropping it kills it (SIGKILL, by PID).
#[derive(Debug)]
pub struct Master {
    child: Option<Child>,
    bramble: PathBuf,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// The port.
    pub port: u16,
    /// `--data-dir`.
    pub data_dir: PathBuf,
    /// Its stderr (appended across restarts).
    pub log: PathBuf,
}

impl Master {
    /// Start `bramble master --data-dir DATA --listen 127.0.0.1:PORT` with [`MASTER_FLAGS`] and
    /// wait (≤ 30 s) until it writes its tokens and accepts connections.
    pub fn start(bramble: &Path, data_dir: &Path, port: u16) -> Result<Master> {
        fs::create_dir_all(data_dir)?;
        let log = data_dir.with_extension("master.log");
        let f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("open {}", log.display()))?;
        let addr = format!("127.0.0.1:{port}");
        let child = Command::new(bramble)
            .args(["master", "--data-dir"])
            .arg(data_dir)
            .args(["--listen", &addr])
            .args(MASTER_FLAGS)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(f)
            .spawn()
            .with_context(|| format!("spawn {} master", bramble.display()))?;
        let mut m = Master {
            child: Some(child),
            bramble: bramble.to_path_buf(),
            addr,
            port,
            data_dir: data_dir.to_path_buf(),
            log,
        };
        let t = Instant::now();
        loop {
            if data_dir.join("join.token").exists() && TcpStream::connect(&m.addr).is_ok() {
                return Ok(m);
            }
            if let Some(c) = m.child.as_mut()
                && let Some(s) = c.try_wait()?
            {
                bail!(
                    "bramble master on {} exited at start ({s}); log:\n{}",
                    m.addr,
                    m.log_tail(40)
                );
            }
            if t.elapsed() > Duration::from_secs(30) {
                m.kill();
                bail!(
                    "bramble master on {} did not come up within 30 s; log:\n{}",
                    m.addr,
                    m.log_tail(40)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Its PID, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL (by PID) and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The length of its log: pass to [`Master::log_since`].
    pub fn log_len(&self) -> usize {
        fs::metadata(&self.log).map_or(0, |m| m.len() as usize)
    }

    /// Its log after `mark`, colours removed.
    pub fn log_since(&self, mark: usize) -> String {
        let b = fs::read(&self.log).unwrap_or_default();
        strip_ansi(&String::from_utf8_lossy(b.get(mark..).unwrap_or_default()))
    }

    /// The last `n` lines of its log.
    pub fn log_tail(&self, n: usize) -> String {
        let s = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// The join token.
    pub fn join_token(&self) -> Result<String> {
        let p = self.data_dir.join("join.token");
        Ok(fs::read_to_string(&p)
            .with_context(|| format!("read {}", p.display()))?
            .trim()
            .to_string())
    }

    /// Run the real CLI against this master (≤ 30 s): (exit success, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> Result<(bool, String, String)> {
        let out = run(
            Command::new(&self.bramble)
                .args(args)
                .env("BRAMBLE_SERVER", &self.addr)
                .env("BRAMBLE_TOKEN_FILE", self.data_dir.join("admin.token")),
            Duration::from_secs(30),
        )?;
        Ok((out.status.success(), out.stdout, out.stderr))
    }

    /// [`Master::cli`], failing on a non-zero exit; returns stdout.
    pub fn ok(&self, args: &[&str]) -> Result<String> {
        let (ok, out, err) = self.cli(args)?;
        if !ok {
            bail!(
                "`bramble {}` failed: {}{}",
                args.join(" "),
                err.trim(),
                out.trim()
            );
        }
        Ok(out)
    }

    /// `bramble apply -f` of a manifest text (written to the data dir's parent).
    pub fn apply(&self, name: &str, manifest: &str) -> Result<String> {
        let dir = self.data_dir.parent().unwrap_or(&self.data_dir);
        let p = dir.join(format!("{name}.toml"));
        fs::write(&p, manifest)?;
        self.ok(&["apply", "-f", &p.display().to_string()])
    }

    /// `bramble get KIND -o json`, each item of the `List` read as the wire object's body
    /// (`meta`, `spec`, `status`: see [`unwrap_kind`]).
    pub fn list(&self, kind: &str) -> Result<Vec<Value>> {
        let out = self.ok(&["get", kind, "-o", "json"])?;
        let v: Value = serde_json::from_str(&out)
            .with_context(|| format!("`bramble get {kind} -o json` is not JSON: {out}"))?;
        let items = v["items"].as_array().cloned().unwrap_or_default();
        Ok(items.into_iter().map(unwrap_kind).collect())
    }

    /// A node by name (`bramble get nodes -o json`).
    pub fn node(&self, name: &str) -> Result<Option<Value>> {
        Ok(self
            .list("nodes")?
            .into_iter()
            .find(|n| n["meta"]["name"] == name))
    }

    /// A pod by name in the default namespace (`bramble get pods -o json`).
    pub fn pod(&self, name: &str) -> Result<Option<Value>> {
        Ok(self
            .list("pods")?
            .into_iter()
            .find(|p| p["meta"]["name"] == name))
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Removes terminal colour sequences (the worker's log on the console is coloured).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(ch) = chars.next() {
        if ch == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(ch);
        }
    }
    out
}

/// The check over the whole run: no worker dropped an idle connection to a live master.
pub fn connection_stability(c: &Cluster) -> Result<String> {
    let (lines, longest) = c.silences();
    if lines.is_empty() {
        // The worker's idle limit is 16 s with a 1 s heartbeat: a guest up for 20 s (with the
        // master's 3 s keepalive in between) shows the limit was never hit; a shorter run proves
        // nothing. (40 s used to be required, which a fast, healthy run never reached.)
        if longest < Duration::from_secs(20) {
            bail!(
                "could not be checked: no guest ran 20 s (longest {:.1} s), so earlier steps must have failed",
                longest.as_secs_f64()
            );
        }
        return Ok(format!(
            "no `master silent` on any console (longest guest uptime {:.0} s)",
            longest.as_secs_f64()
        ));
    }
    bail!(
        "{} time(s) a worker dropped its connection to a live master as `master silent`:\n  {}\n\
         WORKER/MASTER BUG: the worker ends a session after heartbeat_interval * 6 + 10 s (16 s \
         with --heartbeat-interval 1s) without a frame from the master (worker/src/agent/mod.rs \
         session(), `idle`), but the master sends nothing on an idle node connection \
         (master/server/src/api/node.rs only sends Assign, Logs, CancelLogs, Ping; heartbeats are \
         not answered). Every idle node reconnects every 16 s, and because connection_loop() \
         only resets its backoff after a session longer than 30 s, the reconnect delay doubles \
         each time up to 30 s (x0.5-1.5 jitter): after about two minutes the node is NotReady \
         (node grace 5 s) for long stretches, new pods stay Pending with `not ready`, and pods \
         become subject to eviction (30 s).",
        lines.len(),
        lines
            .iter()
            .take(8)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n  ")
    )
}

/// A Kubernetes-shaped document of `get -o json` (`apiVersion`, `kind`, `metadata`, ...) as the
/// wire object's body (`meta`, `spec`, `status`), which the suite reads.
fn unwrap_kind(v: Value) -> Value {
    match v {
        Value::Object(mut m) => {
            m.remove("apiVersion");
            m.remove("kind");
            if let Some(meta) = m.remove("metadata") {
                m.insert("meta".into(), meta);
            }
            Value::Object(m)
        }
        v => v,
    }
}

/// Whether a node object's Ready condition holds.
pub fn node_ready(node: &Value) -> bool {
    node["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["kind"] == "Ready" && c["status"] == true)
    })
}

/// Whether a node's Ready condition holds and became true at or after `since_ms` (ms since the
/// Unix epoch): a new registration, not a condition left from an earlier run.
pub fn node_ready_since(node: &Value, since_ms: u64) -> bool {
    node["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter().any(|c| {
            c["kind"] == "Ready"
                && c["status"] == true
                && c["since_ms"].as_u64().unwrap_or(0) >= since_ms
        })
    })
}

/// When a pod's first process started (ms since the Unix epoch), if it is running.
pub fn pod_started_ms(pod: &Value) -> Option<u64> {
    pod["status"]["processes"][0]["state"]["Running"]["started_ms"].as_u64()
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A pod's phase (`Pending`, `Running`, ...).
pub fn pod_phase(pod: &Value) -> &str {
    pod["status"]["phase"].as_str().unwrap_or("")
}

/// The node a pod is bound to.
pub fn pod_node(pod: &Value) -> &str {
    pod["spec"]["node_name"].as_str().unwrap_or("")
}

/// Whether the first process of a pod was OOM-killed (its last exit or its terminated state).
pub fn pod_oom_killed(pod: &Value) -> bool {
    let p = &pod["status"]["processes"][0];
    p["last_exit"] == "OOMKilled" || p["state"]["Terminated"]["reason"] == "OOMKilled"
}

/// One board's guest in the cluster.
#[derive(Debug)]
pub struct ClusterNode {
    /// The board.
    pub board: Board,
    /// The guest's spec (node name, worker, state disk).
    pub spec: GuestSpec,
    /// The running guest, if any.
    pub guest: Option<Guest>,
    /// QEMU start → node Ready, per boot that reached Ready with the master up.
    pub boot_to_ready: Vec<Duration>,
    /// QEMU start → ready marker of those boots.
    pub boot_to_marker: Vec<Duration>,
}

impl ClusterNode {
    /// The node name.
    pub fn name(&self) -> &str {
        &self.spec.node_name
    }

    /// The running guest.
    pub fn guest(&mut self) -> Result<&mut Guest> {
        let name = self.spec.node_name.clone();
        self.guest
            .as_mut()
            .ok_or_else(|| anyhow!("guest {name} is not running"))
    }

    /// The state disk.
    pub fn disk(&self) -> &Path {
        self.spec.state_disk.as_deref().unwrap_or(Path::new("-"))
    }
}

/// The master and the guests of one suite run.
#[derive(Debug)]
pub struct Cluster {
    /// Scratch dir: master data dir, state disks, manifests.
    pub dir: PathBuf,
    /// The master.
    pub master: Master,
    /// The host's `bramble`.
    pub bramble: PathBuf,
    /// The guests, by board (index as in [`BOARDS`]); `Err` if the board could not be set up.
    pub nodes: Vec<std::result::Result<ClusterNode, String>>,
    /// Consoles of guests that were shut down or replaced: (node name, console text, uptime).
    pub consoles: Vec<(String, String, Duration)>,
}

impl Cluster {
    /// Start a master in `dir/master` and prepare (not boot) a node per board: worker binary
    /// (`workers[i]` or [`worker_for`], which honours `BRAMBLE_WORKER_*` only with
    /// `dev_overrides`) and a fresh 64 MiB state disk.
    pub fn new(
        dir: &Path,
        bramble: &Path,
        boards: &[&Board],
        workers: &[Option<PathBuf>],
        relay: Option<PathBuf>,
        dev_overrides: bool,
    ) -> Result<Cluster> {
        fs::create_dir_all(dir)?;
        let port = free_port()?;
        let master = Master::start(bramble, &dir.join("master"), port)?;
        let token = master.join_token()?;
        let mut nodes = Vec::new();
        for (i, board) in boards.iter().enumerate() {
            let explicit = workers.get(i).cloned().flatten();
            let node = worker_for(board, explicit.as_deref(), dev_overrides).and_then(|worker| {
                let disk = StateDisk::create(&dir.join(format!("{}.img", board.name)), 64)?;
                let mut spec = GuestSpec::new(board, &worker, port, &token, Some(&disk));
                spec.relay = relay.clone();
                spec.env = vec![("RUST_LOG".into(), "info".into())];
                Ok(ClusterNode {
                    board: (*board).clone(),
                    spec,
                    guest: None,
                    boot_to_ready: Vec::new(),
                    boot_to_marker: Vec::new(),
                })
            });
            nodes.push(node.map_err(|e| format!("{e:#}")));
        }
        Ok(Cluster {
            dir: dir.to_path_buf(),
            master,
            bramble: bramble.to_path_buf(),
            nodes,
            consoles: Vec::new(),
        })
    }

    /// The node of board `i`, or why it is missing.
    pub fn node(&mut self, i: usize) -> Result<&mut ClusterNode> {
        match self.nodes.get_mut(i) {
            Some(Ok(n)) => Ok(n),
            Some(Err(e)) => Err(anyhow!("node {} is not available: {e}", BOARDS[i])),
            None => Err(anyhow!("no node {i}")),
        }
    }

    /// An error carrying `what`, the consoles (last 200 lines) of the running guests and the
    /// master's log tail; also printed.
    pub fn failure(&self, what: &str) -> anyhow::Error {
        let mut msg = format!("{what}\n");
        for n in self.nodes.iter().flatten() {
            if let Some(g) = &n.guest {
                let _ = writeln!(msg, "{:#}", g.failure(&format!("console of {}", n.name())));
            }
        }
        let _ = write!(
            msg,
            "--- master ({}, last 40 lines) ---\n{}\n--- end ---",
            self.master.log.display(),
            self.master.log_tail(40)
        );
        eprintln!("--- master log tail ---\n{}", self.master.log_tail(40));
        anyhow!(msg)
    }

    /// Poll `f` every 300 ms until it returns `Some`; fail (with [`Cluster::failure`]) after
    /// `timeout`, naming `what` and the last state `f` described in `last`.
    pub fn wait<T>(
        &mut self,
        timeout: Duration,
        what: &str,
        mut f: impl FnMut(&mut Cluster, &mut String) -> Result<Option<T>>,
    ) -> Result<T> {
        let t = Instant::now();
        let mut last = String::new();
        loop {
            match f(self, &mut last) {
                Ok(Some(v)) => return Ok(v),
                Ok(None) => {}
                Err(e) => last = format!("error: {e:#}"),
            }
            if t.elapsed() > timeout {
                return Err(self.failure(&format!(
                    "timed out after {timeout:?} waiting for {what}; last seen: {last}"
                )));
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Kill node `i`'s guest (if running) and keep its console for [`Cluster::silences`].
    pub fn retire(&mut self, i: usize) {
        let Ok(node) = self.node(i) else { return };
        if let Some(mut g) = node.guest.take() {
            let _ = g.kill();
            let entry = (node.spec.node_name.clone(), g.console_log(), g.uptime());
            self.consoles.push(entry);
        }
    }

    /// Lines where a worker gave up on an idle master connection (`master silent`), from every
    /// console of the run (retired and running guests), and the longest guest uptime.
    pub fn silences(&self) -> (Vec<String>, Duration) {
        let running = self.nodes.iter().flatten().filter_map(|n| {
            n.guest
                .as_ref()
                .map(|g| (n.spec.node_name.clone(), g.console_log(), g.uptime()))
        });
        let all: Vec<_> = self.consoles.iter().cloned().chain(running).collect();
        let longest = all.iter().map(|(_, _, u)| *u).max().unwrap_or_default();
        let lines = all
            .into_iter()
            .flat_map(|(name, log, _)| {
                log.lines()
                    .filter(|l| l.contains("master silent"))
                    .map(|l| format!("{name}: {}", strip_ansi(l)))
                    .collect::<Vec<_>>()
            })
            .collect();
        (lines, longest)
    }

    /// Boot node `i`'s guest on its state disk and wait for the ready marker (≤ 120 s).
    /// Returns QEMU start → marker.
    pub fn boot(&mut self, i: usize) -> Result<Duration> {
        self.retire(i);
        let node = self.node(i)?;
        let mut g = node.spec.boot()?;
        let marker = g.wait_for(READY_MARKER, BOOT_TIMEOUT)?;
        node.guest = Some(g);
        Ok(marker)
    }

    /// Boot node `i` and wait until the master shows it Ready (≤ [`READY_TIMEOUT`] from QEMU
    /// start). Records and returns QEMU start → Ready.
    pub fn boot_until_ready(&mut self, i: usize) -> Result<Duration> {
        let booted_ms = now_ms();
        let marker = self.boot(i)?;
        let name = self.node(i)?.name().to_string();
        let left = READY_TIMEOUT.saturating_sub(self.node(i)?.guest()?.uptime());
        let ready = self.wait(left, &format!("node {name} Ready"), |c, last| {
            let n = c.master.node(&name)?;
            *last = format!("{n:?}");
            if n.as_ref().is_some_and(|n| node_ready_since(n, booted_ms)) {
                return Ok(Some(c.node(i)?.guest()?.uptime()));
            }
            Ok(None)
        })?;
        let node = self.node(i)?;
        node.boot_to_marker.push(marker);
        node.boot_to_ready.push(ready);
        eprintln!(
            "cluster: {name}: QEMU start -> ready marker {:.1} s -> node Ready {:.1} s",
            marker.as_secs_f64(),
            ready.as_secs_f64()
        );
        Ok(ready)
    }

    /// Wait until pod `name` is Running (≤ `timeout`); returns the pod object.
    pub fn wait_running(&mut self, name: &str, timeout: Duration) -> Result<Value> {
        self.wait(timeout, &format!("pod {name} Running"), |c, last| {
            let p = c.master.pod(name)?;
            *last = p
                .as_ref()
                .map_or("no such pod".into(), |p| p["status"].to_string());
            Ok(p.filter(|p| pod_phase(p) == "Running"))
        })
    }

    /// Delete pods and wait (≤ 60 s) until they are gone from the master.
    pub fn delete_pods(&mut self, names: &[&str]) -> Result<()> {
        for n in names {
            self.master.ok(&["delete", "pod", n])?;
        }
        self.wait(Duration::from_secs(60), "deleted pods gone", |c, last| {
            let left: Vec<String> = c
                .master
                .list("pods")?
                .iter()
                .filter_map(|p| p["meta"]["name"].as_str().map(String::from))
                .filter(|n| names.contains(&n.as_str()))
                .collect();
            *last = format!("{left:?}");
            Ok(left.is_empty().then_some(()))
        })
    }
}

/// A pod manifest: one process, restart policy, optional node pin, arch, memory limit.
pub fn pod_manifest(
    name: &str,
    restart: &str,
    node: Option<&str>,
    arch: Option<&str>,
    memory: Option<&str>,
    script: &str,
) -> String {
    let q = |s: &str| serde_json::Value::String(s.to_string()).to_string();
    let mut m = format!(
        "[[pod]]\nname = {}\nrestart_policy = {}\n",
        q(name),
        q(restart)
    );
    if let Some(n) = node {
        let _ = writeln!(m, "node = {}", q(n));
    }
    if let Some(a) = arch {
        let _ = writeln!(m, "arch = {}", q(a));
    }
    let _ = write!(
        m,
        "[[pod.process]]\nname = \"main\"\ncommand = [\"/bin/sh\", \"-c\", {}]\n",
        q(script)
    );
    if let Some(mem) = memory {
        let _ = writeln!(m, "memory = {}", q(mem));
    }
    m
}

/// Scenario 1: boot each board (one after the other; earlier guests stay up) and check its
/// registration. Returns a summary.
pub fn registration(c: &mut Cluster, i: usize) -> Result<String> {
    let ready = c.boot_until_ready(i)?;
    let (name, arch) = {
        let n = c.node(i)?;
        (n.name().to_string(), n.board.arch.as_str().to_string())
    };
    let node = c.master.node(&name)?.context("node vanished")?;
    let info = &node["status"]["info"];
    let got_arch = info["arch"].as_str().unwrap_or("").to_ascii_lowercase();
    let cgroup = info["cgroup"].as_str().unwrap_or("");
    let controllers = info["controllers"].as_u64().unwrap_or(0);
    // Controllers bits: CPU 1, MEMORY 2, PIDS 4.
    if got_arch != arch || cgroup != "V2" || controllers & 7 != 7 {
        let hint = if arch == "armv7" && got_arch == "armv6" {
            "\nWORKER BUG: the armv7 worker (armv7-unknown-linux-gnueabihf) reports Armv6: \
             worker/src/agent/info.rs arch() tests cfg!(target_feature = \"v7\"), which stable \
             rustc never sets (`rustc --print cfg --target armv7-unknown-linux-gnueabihf` lists \
             no target_feature=\"v7\"), so every armv7 build registers as Armv6 (and its board \
             as qemu-virt-armv6); arch = \"armv7\" pods can never be scheduled on it."
        } else {
            ""
        };
        return Err(c.failure(&format!(
            "node {name}: expected arch {arch}, cgroup V2 with cpu+memory+pids (bits 1|2|4); got arch {:?}, cgroup {cgroup:?}, controllers {controllers}: {info}{hint}",
            info["arch"]
        )));
    }
    let table = c.master.ok(&["get", "nodes", "-o", "wide"])?;
    let row = table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name.as_str()))
        .unwrap_or("")
        .to_string();
    let cols: Vec<&str> = row.split_whitespace().collect();
    let cgroup_col = cols.iter().find(|c| c.starts_with("v2(")).copied();
    if cols.get(1) != Some(&"Ready")
        || cols.get(2) != Some(&arch.as_str())
        || !cgroup_col.is_some_and(|cg| ["cpu", "memory", "pids"].iter().all(|k| cg.contains(k)))
    {
        return Err(c.failure(&format!(
            "`bramble get nodes -o wide` row for {name} lacks Ready/{arch}/v2(cpu,memory,pids):\n{table}"
        )));
    }
    let console = c.node(i)?.guest()?.console_log();
    let hs = handshake_times_ms(&console);
    let Some(hs_ms) = hs.first() else {
        return Err(c.failure(&format!(
            "{name}: no `tls handshake took N ms` on the console (did it join over TLS?)"
        )));
    };
    Ok(format!(
        "{name}: Ready after {:.1} s (QEMU start), arch {arch}, kernel {}, {}, TLS handshake {hs_ms} ms",
        ready.as_secs_f64(),
        info["kernel"].as_str().unwrap_or("?"),
        cgroup_col.unwrap_or("?")
    ))
}

/// The worker's `tls handshake took N ms` lines in a console.
pub fn handshake_times_ms(console: &str) -> Vec<u64> {
    strip_ansi(console)
        .lines()
        .filter_map(|l| {
            let rest = l.split("tls handshake took ").nth(1)?;
            rest.split(" ms").next()?.trim().parse().ok()
        })
        .collect()
}

/// Scenario: boards with a join token that pins another certificate, then with the right pin
/// but a wrong credential, are refused: each guest's console says why (expected vs got hash, or
/// the master's rejection) and keeps retrying, the master logs the refusal, and neither node
/// registers. Uses a fresh aarch64 guest per case (tmpfs state).
pub fn tls_refusals(c: &mut Cluster) -> Result<String> {
    let spec0 = c.node(0)?.spec.clone();
    let real = c.master.join_token()?;
    let (pin, cred) = real
        .strip_prefix("K10")
        .and_then(|r| r.split_once("::"))
        .with_context(|| format!("the master's join token has no pin: {real}"))?;
    let wrong_pin = "0".repeat(64);
    let cases = [
        (
            "qemu-wrong-pin",
            format!("K10{wrong_pin}::{cred}"),
            format!("expected sha256 {wrong_pin}, got {pin}"),
            "the client hung up after the master's certificate",
        ),
        (
            "qemu-wrong-token",
            format!("K10{pin}::bogus.0123456789abcdef"),
            "master rejected us: wrong join token".to_string(),
            "refused a connection: wrong join token",
        ),
    ];
    let mut out = Vec::new();
    for (name, token, console_says, master_says) in cases {
        let mut spec = spec0.clone();
        spec.token = token;
        spec.node_name = name.to_string();
        spec.state_disk = None;
        spec.work_dir = None;
        let log_before = fs::read_to_string(&c.master.log).unwrap_or_default().len();
        let mut g = spec.boot()?;
        let seen = g.wait_for(&console_says, READY_TIMEOUT);
        let retried = seen.and_then(|t| {
            let mark = g.mark();
            g.wait_for_since(mark, &console_says, Duration::from_secs(30))
                .map(|t2| (t, t2))
        });
        let (t, _) = match retried {
            Ok(x) => x,
            Err(e) => {
                let f = g.failure(&format!(
                    "{name}: no (repeated) refusal on the console: {e:#}"
                ));
                let _ = g.kill();
                return Err(f);
            }
        };
        let master_log = fs::read_to_string(&c.master.log).unwrap_or_default();
        let master_ok = master_log
            .get(log_before..)
            .is_some_and(|l| l.contains(master_says));
        let registered = c.master.node(name)?.is_some();
        let _ = g.kill();
        if !master_ok {
            return Err(c.failure(&format!(
                "{name}: the master's log does not show {master_says:?}"
            )));
        }
        if registered {
            return Err(c.failure(&format!("{name}: registered despite its bad token")));
        }
        out.push(format!("{name} refused after {:.1} s", t.as_secs_f64()));
    }
    Ok(out.join("; "))
}

/// Prints `arch=<uname -m> seccomp=<1 if filtered> unshare=<exit status of unshare -m>
/// blk=<1 if opening a block device node it made is refused>`, then sleeps. The pod's `/tmp` is a
/// `nodev` tmpfs, so the refusal is EACCES there (the device program's EPERM is checked on the
/// host's cgroup2 mount by `worker/tests/runtime_contained.rs`).
const CONTAINMENT_SCRIPT: &str = "b=/tmp/blk-$(hostname); mknod $b b 7 0; \
echo arch=$(uname -m) seccomp=$(grep -c '^Seccomp:.2$' /proc/self/status) \
unshare=$(unshare -m true 2>/dev/null; echo $?) \
blk=$(head -c 1 $b 2>&1 >/dev/null | grep -c 'not permitted\\|denied'); rm -f $b; exec sleep 1000";

/// Scenario 2: pods with `arch` land only on the matching board; an x86_64 pod stays Pending
/// with the scheduler's reason.
/// Their logs also show the pods contained by default on both ABIs ([`CONTAINMENT_SCRIPT`]).
pub fn arch_pinning(c: &mut Cluster) -> Result<String> {
    let a64 = c.node(0)?.name().to_string();
    let v7 = c.node(1)?.name().to_string();
    for n in [&a64, &v7] {
        let ready = c.master.node(n)?.as_ref().is_some_and(node_ready);
        if !ready {
            return Err(c.failure(&format!("arch pinning needs both nodes Ready; {n} is not")));
        }
    }
    let pods = [
        ("pin-a64-1", "aarch64", &a64, "aarch64"),
        ("pin-a64-2", "aarch64", &a64, "aarch64"),
        ("pin-v7-1", "armv7", &v7, "armv7l"),
        ("pin-v7-2", "armv7", &v7, "armv7l"),
    ];
    let mut manifest = String::new();
    for (name, arch, _, _) in pods {
        manifest.push_str(&pod_manifest(
            name,
            "Always",
            None,
            Some(arch),
            None,
            CONTAINMENT_SCRIPT,
        ));
        manifest.push('\n');
    }
    manifest.push_str(&pod_manifest(
        "pin-x86",
        "Always",
        None,
        Some("x86_64"),
        None,
        "exec sleep 1000",
    ));
    c.master.apply("arch-pinning", &manifest)?;
    let mut summary = String::new();
    for (name, _, want_node, uname) in pods {
        let p = c.wait_running(name, Duration::from_secs(90))?;
        if pod_node(&p) != want_node.as_str() {
            return Err(c.failure(&format!(
                "pod {name} ran on {:?}, expected {want_node}: {p}",
                pod_node(&p)
            )));
        }
        // Contained by default on both ABIs: the seccomp filter is on, unshare is refused, and
        // the cgroup v2 device program refuses a block device node the pod made itself.
        let want = format!("arch={uname} seccomp=1 unshare=1 blk=1");
        let logs = c.wait(
            Duration::from_secs(30),
            &format!("`{want}` in `bramble logs {name}`"),
            |c, last| {
                let (_, out, err) = c.master.cli(&["logs", name])?;
                *last = format!("{out}{err}");
                Ok(out.contains(&want).then_some(out))
            },
        )?;
        let _ = write!(summary, "{name}->{} ({}) ", pod_node(&p), logs.trim());
    }
    let reason = "0/2 nodes available: 2 wrong architecture";
    let p = c.wait(
        Duration::from_secs(30),
        "pin-x86 Pending with its reason",
        |c, last| {
            let p = c.master.pod("pin-x86")?;
            *last = format!("{p:?}");
            Ok(p.filter(|p| {
                pod_phase(p) == "Pending"
                    && pod_node(p).is_empty()
                    && p["status"]["message"]
                        .as_str()
                        .unwrap_or("")
                        .contains(reason)
            }))
        },
    )?;
    // Still all on their boards (nothing moved).
    for (name, _, want_node, _) in pods {
        let p = c.master.pod(name)?.context("pod vanished")?;
        if pod_node(&p) != want_node.as_str() || pod_phase(&p) != "Running" {
            return Err(c.failure(&format!("pod {name} moved or stopped: {p}")));
        }
    }
    let wide = c.master.ok(&["get", "pods", "-o", "wide"])?;
    eprintln!("{wide}");
    c.delete_pods(&["pin-a64-1", "pin-a64-2", "pin-v7-1", "pin-v7-2", "pin-x86"])?;
    Ok(format!(
        "{summary}; pin-x86 Pending: {:?}",
        p["status"]["message"].as_str().unwrap_or("")
    ))
}

/// Scenario 3: a pod's output through `bramble logs`, and a 32Mi pod that allocates ~100 MB is
/// OOMKilled — both on the aarch64 node.
pub fn pods_logs_and_oom(c: &mut Cluster) -> Result<String> {
    let node = c.node(0)?.name().to_string();
    c.master.apply(
        "hello",
        &pod_manifest(
            "hello-a64",
            "Never",
            Some(&node),
            None,
            None,
            "echo hello from $(uname -m) in $(hostname); sleep 2",
        ),
    )?;
    let want = "hello from aarch64 in hello-a64";
    let logs = c.wait(
        Duration::from_secs(60),
        &format!("`{want}` in `bramble logs hello-a64`"),
        |c, last| {
            let (_, out, err) = c.master.cli(&["logs", "hello-a64"])?;
            let p = c.master.pod("hello-a64")?;
            *last = format!("logs {out:?} {err:?}; pod {p:?}");
            Ok(out.contains(want).then_some(out))
        },
    )?;
    let p = c
        .master
        .pod("hello-a64")?
        .context("pod hello-a64 vanished")?;
    if pod_node(&p) != node {
        return Err(c.failure(&format!("hello-a64 ran on {:?}, not {node}", pod_node(&p))));
    }
    // ~100 MB in a shell variable (busybox has no python); the memory cgroup allows 32Mi.
    c.master.apply(
        "oom",
        &pod_manifest(
            "oom-a64",
            "Never",
            Some(&node),
            None,
            Some("32Mi"),
            "echo allocating; x=$(yes | head -c 100000000); echo survived ${#x}",
        ),
    )?;
    let p = c.wait(
        Duration::from_secs(120),
        "pod oom-a64 OOMKilled",
        |c, last| {
            let p = c.master.pod("oom-a64")?;
            *last = p
                .as_ref()
                .map_or("no such pod".into(), |p| p["status"].to_string());
            if let Some(p) = &p {
                if pod_oom_killed(p) {
                    return Ok(Some(p.clone()));
                }
                let term = &p["status"]["processes"][0]["state"]["Terminated"];
                if !term.is_null() {
                    bail!("oom-a64 terminated, but not OOMKilled: {}", p["status"]);
                }
            }
            Ok(None)
        },
    );
    let p = match p {
        Ok(p) => p,
        Err(e) => {
            let (_, l, _) = c.master.cli(&["logs", "oom-a64"])?;
            let (_, d, _) = c.master.cli(&["describe", "pod", "oom-a64"])?;
            return Err(c.failure(&format!(
                "{e:#}\nlogs of oom-a64:\n{l}\ndescribe pod oom-a64:\n{d}"
            )));
        }
    };
    let (_, oom_logs, _) = c.master.cli(&["logs", "oom-a64"])?;
    if oom_logs.contains("survived") {
        return Err(c.failure(&format!(
            "oom-a64 is reported OOMKilled but its shell survived the allocation: {oom_logs}"
        )));
    }
    let describe = c.master.ok(&["describe", "pod", "oom-a64"])?;
    eprintln!("{describe}");
    c.delete_pods(&["hello-a64", "oom-a64"])?;
    Ok(format!(
        "logs: {:?}; oom-a64: phase {}, process {}",
        logs.trim(),
        pod_phase(&p),
        p["status"]["processes"][0]
    ))
}

/// Scenario: a pod runs from an uploaded busybox artifact on the emulated aarch64 board: Debian's
/// arm64 busybox-static (the one the guests boot with) as a rootfs tarball, pushed from the host
/// with `bramble artifact push --arch aarch64`, pulled and unpacked by the guest's worker.
pub fn artifact_on_aarch64(c: &mut Cluster) -> Result<String> {
    let node = c.node(0)?.name().to_string();
    let busybox = crate::debian::busybox("arm64")?;
    let root = c.dir.join("artifact-root");
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(root.join("bin"))?;
    fs::copy(&busybox, root.join("bin/busybox"))
        .with_context(|| format!("copy {}", busybox.display()))?;
    std::os::unix::fs::symlink("busybox", root.join("bin/sh"))?;
    let tarball = c.dir.join("busybox-a64.tar");
    let st = std::process::Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&tarball)
        .arg(".")
        .status()
        .context("run tar")?;
    if !st.success() {
        bail!("tar -cf {} failed", tarball.display());
    }
    let pushed = c.master.ok(&[
        "artifact",
        "push",
        &tarball.to_string_lossy(),
        "--arch",
        "aarch64",
        "--name",
        "busybox-a64",
    ])?;
    let mut manifest = pod_manifest(
        "art-a64",
        "Never",
        None,
        None,
        Some("32Mi"),
        "echo hi from artifact on $(uname -m); ls /",
    );
    manifest = manifest.replacen(
        "[[pod.process]]",
        "rootfs = \"artifact:busybox-a64\"\n[[pod.process]]",
        1,
    );
    c.master.apply("art-a64", &manifest)?;
    let want = "hi from artifact on aarch64";
    let logs = c.wait(
        Duration::from_secs(120),
        &format!("`{want}` in `bramble logs art-a64`"),
        |c, last| {
            let p = c.master.pod("art-a64")?;
            if let Some(p) = &p
                && pod_phase(p) == "Failed"
            {
                bail!("art-a64 failed: {}", p["status"]);
            }
            let (_, out, err) = c.master.cli(&["logs", "art-a64"])?;
            *last = format!("logs {out:?} {err:?}; pod {p:?}");
            // Read the whole log once the pod is done (`ls /` follows the echo).
            let done = p.as_ref().is_some_and(|p| pod_phase(p) == "Succeeded");
            Ok((done && out.contains(want)).then_some(out))
        },
    )?;
    let p = c.master.pod("art-a64")?.context("pod art-a64 vanished")?;
    if pod_node(&p) != node {
        return Err(c.failure(&format!("art-a64 ran on {:?}, not {node}", pod_node(&p))));
    }
    // `ls /` shows the artifact's root (bin, dev, proc, tmp), not the guest's initramfs (/init).
    let entries: Vec<&str> = logs
        .lines()
        .skip(1)
        .flat_map(|l| l.split_whitespace())
        .collect();
    if !entries.contains(&"bin") || entries.contains(&"init") {
        return Err(c.failure(&format!(
            "art-a64 did not run in the artifact's root: {logs}"
        )));
    }
    c.delete_pods(&["art-a64"])?;
    c.master.ok(&["delete", "artifact", "busybox-a64"])?;
    Ok(format!("{}; logs: {:?}", pushed.trim(), logs.trim()))
}

/// Scenario 4: power cut with pods running, reboot on the same disk without a master (the
/// worker restarts the pods from local state), then the master comes back.
pub fn power_cut(c: &mut Cluster) -> Result<String> {
    let node = c.node(0)?.name().to_string();
    let pods = ["pc-1", "pc-2"];
    let mut manifest = String::new();
    for p in pods {
        manifest.push_str(&pod_manifest(
            p,
            "Always",
            Some(&node),
            None,
            Some("16Mi"),
            "echo POD-STARTED $(hostname) > /dev/console; exec sleep 1000",
        ));
        // A pod's /dev is minimal: the guest's console comes as a host_path volume.
        manifest.push_str(
            "[[pod.volume]]\nname = \"console\"\nmount_path = \"/dev/console\"\nhost_path = \"/dev/console\"\n",
        );
        manifest.push('\n');
    }
    c.master.apply("power-cut", &manifest)?;
    for p in pods {
        c.wait_running(p, Duration::from_secs(60))?;
        let g = c.node(0)?.guest()?;
        g.wait_for(&format!("POD-STARTED {p}"), Duration::from_secs(30))?;
    }
    // The worker saves its assignments with fsync; give the pods' own state a moment too.
    std::thread::sleep(Duration::from_secs(2));

    // Power cut, and the master goes away.
    c.node(0)?.guest()?.kill()?;
    let old_console = c.node(0)?.guest()?.console_log();
    c.master.kill();
    let disk = c.node(0)?.disk().to_path_buf();
    let fsck = StateDisk::fsck(&disk).map_err(|e| {
        c.failure(&format!(
            "the state disk is inconsistent after the power cut: {e:#}"
        ))
    })?;
    eprintln!(
        "cluster: e2fsck after the power cut: {}",
        fsck.lines().last().unwrap_or("")
    );
    if TcpStream::connect(&c.master.addr).is_ok() {
        return Err(c.failure("something still listens on the master's port after killing it"));
    }

    // Boot again on the same disk, master down: the worker must restart its pods alone.
    let t0 = Instant::now();
    let reboot_ms = now_ms();
    c.boot(0)?;
    for p in pods {
        let g = c.node(0)?.guest()?;
        g.wait_for(&format!("POD-STARTED {p}"), Duration::from_secs(90))
            .with_context(|| format!("the worker did not restart pod {p} from local state with the master down (first boot's console had {} lines)", old_console.lines().count()))?;
    }
    let restarted = c.node(0)?.guest()?.uptime();
    let since_cut = t0.elapsed();
    let master_down = TcpStream::connect(&c.master.addr).is_err();
    if !master_down {
        return Err(c.failure("the master's port answers while the master should be down"));
    }
    eprintln!(
        "cluster: {node}: reboot with the master down -> pods restarted {:.1} s after QEMU start",
        restarted.as_secs_f64()
    );

    // The master comes back on the same port and data dir.
    let bramble = c.bramble.clone();
    let data = c.master.data_dir.clone();
    let port = c.master.port;
    let log_mark = c.master.log_len();
    c.master = Master::start(&bramble, &data, port)?;
    let t_master = Instant::now();
    // The stored Ready condition may survive the restart: wait for the node's connection (the
    // master logs it) and Ready in `bramble get nodes`.
    let connected = format!("node connected node={node}");
    c.wait(
        Duration::from_secs(90),
        &format!("node {node} reconnected and Ready after the master restart"),
        |c, last| {
            let n = c.master.node(&node)?;
            let seen = c.master.log_since(log_mark).contains(&connected);
            *last = format!("`{connected}` in the master log: {seen}; node {n:?}");
            Ok((seen && n.as_ref().is_some_and(node_ready)).then_some(()))
        },
    )?;
    let ready_after_master = t_master.elapsed();
    // The stored status said Running before the cut: wait for the worker's report of the
    // processes it started after the reboot.
    for p in pods {
        let v = c.wait(
            Duration::from_secs(60),
            &format!("pod {p} Running, started after the reboot"),
            |c, last| {
                let v = c.master.pod(p)?;
                *last = format!("{v:?}");
                Ok(v.filter(|v| {
                    pod_phase(v) == "Running" && pod_started_ms(v).is_some_and(|t| t >= reboot_ms)
                }))
            },
        )?;
        if pod_node(&v) != node {
            return Err(c.failure(&format!(
                "pod {p} is on {:?} after the power cut",
                pod_node(&v)
            )));
        }
    }
    // A few heartbeats later: still one of each, each started exactly once since the reboot
    // (the master's return did not make the worker start a second copy).
    std::thread::sleep(Duration::from_secs(5));
    let all = c.master.list("pods")?;
    let console = c.node(0)?.guest()?.console_log();
    for p in pods {
        let n = all.iter().filter(|v| v["meta"]["name"] == p).count();
        let started = console.matches(&format!("POD-STARTED {p}")).count();
        let v = all.iter().find(|v| v["meta"]["name"] == p);
        let running = v.is_some_and(|v| pod_phase(v) == "Running" && pod_node(v) == node);
        if n != 1 || started != 1 || !running {
            return Err(c.failure(&format!(
                "pod {p} after the power cut: {n} objects in the master, started {started} times since the reboot, object {v:?}"
            )));
        }
    }
    let table = c.master.ok(&["get", "pods"])?;
    eprintln!("{table}");
    c.delete_pods(&pods)?;
    Ok(format!(
        "pods restarted from local state {:.1} s after QEMU start ({:.1} s after the reboot began; master down); node Ready {:.1} s after the master restart; pods Running, each started once; fsck clean",
        restarted.as_secs_f64(),
        since_cut.as_secs_f64(),
        ready_after_master.as_secs_f64()
    ))
}

/// Scenario: an isolated pod on the emulated aarch64 board (a real arm64 kernel): the node's pod
/// subnet from the master, the worker's bridge and a veth pair made over rtnetlink, the pod's
/// `eth0` address (reported in its status) and default route, and the node's bridge answering a
/// ping from inside the pod.
pub fn isolated_on_aarch64(c: &mut Cluster) -> Result<String> {
    let node = c.node(0)?.name().to_string();
    let n = c.master.node(&node)?.context("the aarch64 node vanished")?;
    let cidr = n["spec"]["pod_cidr"].as_str().unwrap_or("").to_string();
    let base: std::net::Ipv4Addr = cidr
        .split('/')
        .next()
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| c.failure(&format!("node {node} has no pod subnet: {:?}", n["spec"])))?;
    let gateway = std::net::Ipv4Addr::from(u32::from(base) + 1);
    let mut manifest = pod_manifest(
        "iso-a64",
        "Never",
        Some(&node),
        None,
        Some("32Mi"),
        &format!(
            "ip -4 addr show dev eth0; ip route; ping -c 1 -W 5 {gateway} && echo gateway answers"
        ),
    );
    manifest = manifest.replacen(
        "[[pod.process]]",
        "network = \"isolated\"\n[[pod.process]]",
        1,
    );
    c.master.apply("iso-a64", &manifest)?;
    let logs = c.wait(
        Duration::from_secs(60),
        "`gateway answers` in `bramble logs iso-a64`",
        |c, last| {
            let p = c.master.pod("iso-a64")?;
            if let Some(p) = &p
                && pod_phase(p) == "Failed"
            {
                let (_, out, _) = c.master.cli(&["logs", "iso-a64"])?;
                bail!("iso-a64 failed: {} logs: {out}", p["status"]);
            }
            let (_, out, err) = c.master.cli(&["logs", "iso-a64"])?;
            *last = format!("logs {out:?} {err:?}; pod {p:?}");
            let done = p.as_ref().is_some_and(|p| pod_phase(p) == "Succeeded");
            Ok((done && out.contains("gateway answers")).then_some(out))
        },
    )?;
    let p = c.master.pod("iso-a64")?.context("pod iso-a64 vanished")?;
    let ip = p["status"]["ip"].as_str().unwrap_or("").to_string();
    let inside = ip
        .parse::<std::net::Ipv4Addr>()
        .is_ok_and(|a| u32::from(a) & !0xff == u32::from(base) & !0xff);
    if !inside
        || !logs.contains(&format!("inet {ip}/"))
        || !logs.contains(&format!("default via {gateway}"))
    {
        return Err(c.failure(&format!(
            "iso-a64: status ip {ip:?}, node subnet {cidr}, logs: {logs}"
        )));
    }
    c.delete_pods(&["iso-a64"])?;
    Ok(format!(
        "subnet {cidr}, pod {ip}, default via {gateway}, gateway answered a ping"
    ))
}

/// What one scenario did.
#[derive(Debug)]
pub struct Outcome {
    /// Scenario name.
    pub name: String,
    /// Its summary or its error.
    pub result: Result<String>,
    /// How long it took.
    pub took: Duration,
}

/// The whole suite's report.
#[derive(Debug)]
pub struct SuiteReport {
    /// Per scenario, in order.
    pub outcomes: Vec<Outcome>,
    /// Scenarios not run because [`SuiteOptions::only`] filtered them out.
    pub skipped: Vec<String>,
    /// (board, QEMU start → marker, QEMU start → node Ready) per registration boot.
    pub boot_to_ready: Vec<(String, Duration, Duration)>,
    /// The whole suite.
    pub total: Duration,
    /// Where the logs are.
    pub dir: PathBuf,
}

impl SuiteReport {
    /// Whether every scenario ran and passed (a filtered run has not passed).
    pub fn passed(&self) -> bool {
        self.skipped.is_empty() && self.outcomes.iter().all(|o| o.result.is_ok())
    }

    /// Why the run is not a pass: each failed scenario with its error, then each skipped one.
    pub fn problems(&self) -> Vec<String> {
        let failed = self.outcomes.iter().filter_map(|o| {
            o.result
                .as_ref()
                .err()
                .map(|e| format!("FAILED {}: {e:#}", o.name))
        });
        let skipped = self
            .skipped
            .iter()
            .map(|n| format!("SKIPPED {n} (filtered out; a partial run is not a pass)"));
        failed.chain(skipped).collect()
    }
}

impl std::fmt::Display for SuiteReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "QEMU cluster suite ({})", self.dir.display())?;
        for o in &self.outcomes {
            match &o.result {
                Ok(s) => writeln!(f, "  PASS {} ({:.1} s): {s}", o.name, o.took.as_secs_f64())?,
                Err(e) => {
                    let first = format!("{e:#}");
                    let first = first.lines().next().unwrap_or("");
                    writeln!(
                        f,
                        "  FAIL {} ({:.1} s): {first}",
                        o.name,
                        o.took.as_secs_f64()
                    )?;
                }
            }
        }
        for n in &self.skipped {
            writeln!(f, "  SKIPPED {n} (filtered out)")?;
        }
        for (b, m, r) in &self.boot_to_ready {
            writeln!(
                f,
                "  boot-to-Ready {b}: {:.1} s (ready marker at {:.1} s)",
                r.as_secs_f64(),
                m.as_secs_f64()
            )?;
        }
        write!(f, "  suite duration: {:.1} s", self.total.as_secs_f64())
    }
}

/// Only [`artifact_on_aarch64`], on the aarch64 board alone (for development: QEMU boots are
/// slow). Returns the scenario's summary. Honours the development variables only with
/// `dev_overrides` (else it refuses them, see [`refuse_dev_overrides`]).
pub fn run_artifact_only(
    worker: Option<PathBuf>,
    relay: Option<PathBuf>,
    dev_overrides: bool,
) -> Result<String> {
    if !dev_overrides {
        refuse_dev_overrides()?;
    }
    let dir = crate::util::target_dir()
        .join("bramble-qemu")
        .join(format!("artifact-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    let bramble = host_bramble(dev_overrides)?;
    let board = bramble_boards::find(BOARDS[0])?;
    let mut c = Cluster::new(&dir, &bramble, &[board], &[worker], relay, dev_overrides)?;
    c.boot_until_ready(0)?;
    artifact_on_aarch64(&mut c)
}

/// How [`run_suite`] runs.
#[derive(Debug, Clone, Default)]
pub struct SuiteOptions {
    /// Per board in [`BOARDS`], a prebuilt worker (development; default: built now).
    pub workers: Vec<Option<PathBuf>>,
    /// The `cross` relay executable (see [`crate::qemu::find_relay`]).
    pub relay: Option<PathBuf>,
    /// Run only the scenarios whose names contain one of these words. The others are listed in
    /// [`SuiteReport::skipped`], and a report with skipped scenarios has not passed.
    pub only: Vec<String>,
    /// Honour `BRAMBLE_BIN` and `BRAMBLE_WORKER_*` (`cargo cross qemu-test`). Without it (the
    /// tests) the suite refuses to start while any [`DEV_ONLY_VARS`] is set and builds every
    /// binary from the current sources.
    pub dev_overrides: bool,
}

/// Run every scenario in order against one master: registration of each board in [`BOARDS`],
/// arch pinning and containment (both guests up), then the armv7 guest is shut down and the
/// aarch64 pod, cgroup limit and power-cut scenarios run. A scenario that cannot run because an earlier step failed
/// fails with that reason; one filtered out by [`SuiteOptions::only`] is reported as skipped.
pub fn run_suite(opts: &SuiteOptions) -> Result<SuiteReport> {
    if !opts.dev_overrides {
        refuse_dev_overrides()?;
    }
    let started = Instant::now();
    let dir = crate::util::target_dir()
        .join("bramble-qemu")
        .join(format!("cluster-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    let bramble = host_bramble(opts.dev_overrides)?;
    eprintln!("cluster: host bramble {}", bramble.display());
    let boards = BOARDS
        .iter()
        .map(|b| bramble_boards::find(b))
        .collect::<Result<Vec<_>, _>>()?;
    let mut c = Cluster::new(
        &dir,
        &bramble,
        &boards,
        &opts.workers,
        opts.relay.clone(),
        opts.dev_overrides,
    )?;
    let mut outcomes = Vec::new();
    let mut skipped = Vec::new();
    let only = &opts.only;
    let mut step = |name: &str, c: &mut Cluster, f: &dyn Fn(&mut Cluster) -> Result<String>| {
        if !only.is_empty() && !only.iter().any(|w| name.contains(w.as_str())) {
            eprintln!("cluster: SKIPPED {name} (filtered out by {only:?})");
            skipped.push(name.to_string());
            return;
        }
        eprintln!("cluster: == {name}");
        let t = Instant::now();
        let result = f(c);
        match &result {
            Ok(s) => eprintln!("cluster: PASS {name}: {s}"),
            Err(e) => eprintln!("cluster: FAIL {name}: {e:#}"),
        }
        outcomes.push(Outcome {
            name: name.to_string(),
            result,
            took: t.elapsed(),
        });
    };
    step("registration qemu-virt-aarch64", &mut c, &|c| {
        registration(c, 0)
    });
    step("registration qemu-virt-armv7", &mut c, &|c| {
        registration(c, 1)
    });
    step("arch pinning (both boards up)", &mut c, &arch_pinning);
    step(
        "containment of default and privileged pods (both boards)",
        &mut c,
        &containment_on_both_boards,
    );
    step(
        "multi-arch OCI image pulled through the master (both boards)",
        &mut c,
        &image_on_both_boards,
    );
    c.retire(1);
    step(
        "pod logs and OOMKilled on aarch64",
        &mut c,
        &pods_logs_and_oom,
    );
    step(
        "cgroup v2 cpu and pids limits enforced on aarch64",
        &mut c,
        &cgroup_limits_on_aarch64,
    );
    step(
        "pod from an uploaded busybox artifact on aarch64",
        &mut c,
        &artifact_on_aarch64,
    );
    step(
        "isolated pod network on aarch64",
        &mut c,
        &isolated_on_aarch64,
    );
    step(
        "kernel network path (NAT, cluster DNS) on aarch64",
        &mut c,
        &kernel_network_on_aarch64,
    );
    step("power cut on aarch64", &mut c, &power_cut);
    step("idle worker connections stay up", &mut c, &|c| {
        connection_stability(c)
    });
    step(
        "wrong pin and wrong token refused (aarch64)",
        &mut c,
        &tls_refusals,
    );
    let mut boot_to_ready = Vec::new();
    for n in c.nodes.iter().flatten() {
        for (m, r) in n.boot_to_marker.iter().zip(&n.boot_to_ready) {
            boot_to_ready.push((n.board.name.clone(), *m, *r));
        }
    }
    drop(c);
    Ok(SuiteReport {
        outcomes,
        skipped,
        boot_to_ready,
        total: started.elapsed(),
        dir,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_quote_the_script() {
        let m = pod_manifest(
            "p",
            "Never",
            Some("n1"),
            Some("aarch64"),
            Some("32Mi"),
            "echo \"a\" 'b' $(x)",
        );
        assert!(
            m.contains("node = \"n1\"") && m.contains("arch = \"aarch64\""),
            "{m}"
        );
        assert!(
            m.contains(r#"command = ["/bin/sh", "-c", "echo \"a\" 'b' $(x)"]"#),
            "{m}"
        );
        assert!(m.contains("memory = \"32Mi\""), "{m}");
    }

    #[test]
    fn objects_are_unwrapped_and_read() {
        let n: Value = serde_json::from_str(
            r#"{"apiVersion":"bramble.io/v1","kind":"Node","metadata":{"name":"a"},"status":{"conditions":[{"kind":"Ready","status":true}]}}"#,
        )
        .unwrap();
        let n = unwrap_kind(n);
        assert_eq!(n["meta"]["name"], "a");
        assert!(node_ready(&n));
        let p: Value = serde_json::from_str(
            r#"{"status":{"phase":"Failed","processes":[{"state":{"Terminated":{"reason":"OOMKilled","finished_ms":1}},"last_exit":null}]}}"#,
        )
        .unwrap();
        assert!(pod_oom_killed(&p));
        assert_eq!(pod_phase(&p), "Failed");
    }

    #[test]
    fn a_filtered_run_has_not_passed() {
        let mut r = SuiteReport {
            outcomes: vec![Outcome {
                name: "a".into(),
                result: Ok("fine".into()),
                took: Duration::ZERO,
            }],
            skipped: Vec::new(),
            boot_to_ready: Vec::new(),
            total: Duration::ZERO,
            dir: PathBuf::new(),
        };
        assert!(r.passed() && r.problems().is_empty());
        r.skipped.push("power cut on aarch64".into());
        assert!(!r.passed());
        assert_eq!(
            r.problems(),
            ["SKIPPED power cut on aarch64 (filtered out; a partial run is not a pass)"]
        );
        assert!(r.to_string().contains("SKIPPED power cut on aarch64"));
    }

    #[test]
    fn worker_override_variable() {
        assert_eq!(
            worker_env_var("qemu-virt-aarch64"),
            "BRAMBLE_WORKER_QEMU_VIRT_AARCH64"
        );
    }
}
