//! Cluster benchmark: resource use and latency of the real `bramble` master and `bramble-worker`
//! on loopback, against the targets of the design card.
//!
//! ```text
//! cargo build --release -p bramble-cli -p bramble-worker
//! sudo cargo bench -p bramble-tests --bench cluster
//! ```
//!
//! It builds nothing: `cargo bench` runs it from `target/release/deps`, and it uses
//! `target/release/bramble` and `target/release/bramble-worker` (failing loudly when they are
//! missing) plus `bramble-nodesim`, which cargo builds with the bench.
//!
//! Measures (each with its own master, on a free loopback port, in a temporary directory):
//! - a. master idle RSS after start;
//! - b. bytes the master writes to disk in `BENCH_IDLE_SECONDS` (default 60) with 100 simulated
//!   nodes heartbeating every second;
//! - c. master CPU with `BENCH_CPU_NODES` (default 5,000) simulated nodes heartbeating every 5 s,
//!   over a `BENCH_CPU_SECONDS` (default 30) window after all registered;
//! - d. apply → Running latency through the master with a real worker, over `BENCH_PODS`
//!   (default 50) pods, timed by a watch;
//! - e. worker idle RSS, and memory per running pod (worker RSS delta + the pod inits' RSS) over
//!   20 pods;
//! - f. idle traffic of one real worker (default 5 s heartbeat) through a counting TCP relay, over
//!   `BENCH_IDLE_SECONDS`;
//! - g. the worker's TLS handshake with the master, median over 7 worker starts;
//! - h. status churn: master CPU and RSS with `BENCH_CHURN_NODES` (default 5,000) simulated
//!   nodes heartbeating every 5 s, `BENCH_CHURN_PODS` (default 1,000) pods on them and
//!   `BENCH_CHURN_RATE` (default 100) pod status changes per second, over `BENCH_CHURN_SECONDS`
//!   (default 30); the SQLite read queries (and rows) per status change, from the master's
//!   `bramble_store_reads` debug lines; p50 apply -> Running through the master to a simulated
//!   node, over 20 pods. With `BENCH_BASELINE_BIN=/path/to/bramble` (an older build, e.g. of the
//!   main branch plus the store's read counter) the same is measured for it first, in the same
//!   run, and the ratios printed.
//!
//! - i. the worker's RSS with the kernel network path serving 100 services (one isolated pod
//!   behind all of them: 100 virtual IPs and node ports in its nftables table, 100 names in its
//!   DNS zone), the agent alone in a network namespace of its own with a master in another.
//!
//! b's data dir is on a disk, never a tmpfs (where `write_bytes` reads 0 whatever the master
//! does): `BENCH_DISK_DIR`, default the target dir; a write made after the window must show.
//!
//! d, e, f and g need root (namespaces, cgroups); without it they are skipped. `BENCH_ONLY=a,c`
//! runs a subset. Everything it starts is killed by PID, pods are deleted before their worker
//! stops, and the worker's cgroup parent is removed.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bramble_client::Client;
use bramble_tests::relay::Relay;
use bramble_tests::{MasterProc, Proc, bin, build, is_root, with_nofile, worker};
use bramble_wire::PodPhase;
use bramble_wire::msg::{RequestBody, ResponseBody, WatchEvent};
use bramble_wire::objects::{Kind, Object, Pod, ProcessState, RestartPolicy};

// ---------------------------------------------------------------------------------------------
// /proc readers
// ---------------------------------------------------------------------------------------------

use bramble_tests::{proc_kb, rss_kb};

fn pss_kb(pid: u32) -> Option<u64> {
    proc_kb(pid, "smaps_rollup", "Pss")
}

fn ppid(pid: u32) -> Option<u32> {
    proc_kb(pid, "status", "PPid").map(|v| v as u32)
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// A field of `/proc/PID/io` (`write_bytes`, `rchar`...).
fn proc_io(pid: u32, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':')?.trim().parse().ok())
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command may contain spaces and parentheses: fields start after the last ')'.
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14, stime field 15.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn clk_tck() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100)
}

fn max_open_files(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/limits"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Max open files"))
                .map(|l| l.split_whitespace().nth(3).unwrap_or("?").to_string())
        })
        .unwrap_or_else(|| "?".into())
}

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| {
            eprintln!("{name}={v:?} is not a number; using {default}");
            default
        }),
        Err(_) => default,
    }
}

fn mb(kb: u64) -> String {
    format!("{:.1} MB", kb as f64 / 1024.0)
}

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

/// Starts `bramble master` (open-files limit raised) and waits until it accepts clients.
fn start_master(data_dir: &Path, extra: &[&str]) -> MasterProc {
    MasterProc::builder(data_dir).args(extra).nofile().start()
}

/// [`start_master`] of another build of `bramble` (the baseline of a comparison), with
/// `RUST_LOG` if given.
fn start_master_from(
    program: &Path,
    data_dir: &Path,
    extra: &[&str],
    rust_log: Option<&str>,
) -> MasterProc {
    let b = MasterProc::builder(data_dir)
        .program(program)
        .args(extra)
        .nofile();
    match rust_log {
        Some(l) => b.env("RUST_LOG", l).start(),
        None => b.start(),
    }
}

/// Starts `bramble-worker` joining `m`, dialing `via` (a relay) when given, with its own state
/// dir, run dir and cgroup parent (removed when it drops).
fn start_worker(m: &MasterProc, via: Option<&str>, name: &str, state_dir: &Path) -> Proc {
    let w = worker(m, name, state_dir)
        .cgroup_parent(&format!("bramble-bench-{}-{name}", std::process::id()));
    match via {
        Some(addr) => w.via(addr).start(),
        None => w.start(),
    }
}

/// SIGTERM (SIGKILL after 5 s); dropping it then removes its (empty) cgroup parent.
fn stop_worker(mut w: Proc) {
    w.terminate(Duration::from_secs(5));
}

/// A running `bramble-nodesim`: stdout lines arrive on a channel; closing stdin stops it.
struct NodeSim {
    proc: Proc,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl NodeSim {
    fn start(m: &MasterProc, nodes: u64, heartbeat: &str, prefix: &str) -> NodeSim {
        NodeSim::start_with(m, nodes, heartbeat, prefix, 0)
    }

    fn start_with(
        m: &MasterProc,
        nodes: u64,
        heartbeat: &str,
        prefix: &str,
        churn: u64,
    ) -> NodeSim {
        let mut child: Child = with_nofile(Path::new(env!("CARGO_BIN_EXE_bramble-nodesim")))
            .args(["--master", &m.addr, "--token-file"])
            .arg(m.data_dir.join("join.token"))
            .args(["--nodes", &nodes.to_string(), "--heartbeat", heartbeat])
            .args([
                "--prefix",
                prefix,
                "--duration",
                "20m",
                "--until-stdin-closes",
            ])
            .args(["--churn", &churn.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn bramble-nodesim");
        let stdin = child.stdin.take();
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    return;
                }
            }
        });
        NodeSim {
            proc: Proc {
                child,
                what: "nodesim".into(),
                cgroup_parent: None,
                bridge: None,
            },
            stdin,
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// Waits for the "ready N/N" line; returns how long it took from now.
    fn wait_ready(&mut self, timeout: Duration) -> Result<Duration, String> {
        let t = Instant::now();
        loop {
            let left = timeout.saturating_sub(t.elapsed());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    let ready = l.starts_with("nodesim: ready");
                    self.seen.push(l);
                    if ready {
                        return Ok(t.elapsed());
                    }
                }
                Err(_) => {
                    return Err(format!(
                        "not all simulated nodes registered within {timeout:?}; nodesim said: {:?}",
                        self.seen
                    ));
                }
            }
        }
    }

    /// Closes stdin, waits (bounded) for the summary, returns every line it printed.
    fn stop(mut self) -> Vec<String> {
        drop(self.stdin.take());
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(15) {
            match self.lines.recv_timeout(Duration::from_millis(200)) {
                Ok(l) => self.seen.push(l),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
        }
        self.proc.kill9();
        self.seen
    }
}

// ---------------------------------------------------------------------------------------------
// API helpers
// ---------------------------------------------------------------------------------------------

fn call(c: &mut Client, body: RequestBody) -> Result<ResponseBody, String> {
    smol::block_on(c.call(body)).map_err(|e| e.to_string())
}

fn node_ready(c: &mut Client, name: &str) -> bool {
    matches!(
        call(c, RequestBody::Get { kind: Kind::Node, namespace: String::new(), name: name.into() }),
        Ok(ResponseBody::Object(Object::Node(n))) if n.status.is_ready()
    )
}

fn wait_node_ready(c: &mut Client, name: &str, timeout: Duration) -> Result<Duration, String> {
    let t = Instant::now();
    while !node_ready(c, name) {
        if t.elapsed() > timeout {
            return Err(format!("node {name} not Ready within {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(t.elapsed())
}

fn sleep_pod(name: &str, seconds: u32) -> Object {
    build::pod(name)
        .cmd("main", &["/bin/sleep", &seconds.to_string()])
        .restart(RestartPolicy::Never)
        .object()
}

fn delete_pod(c: &mut Client, name: &str) -> Result<(), String> {
    call(
        c,
        RequestBody::Delete {
            kind: Kind::Pod,
            namespace: "default".into(),
            name: name.into(),
            expected_revision: None,
        },
    )
    .map(|_| ())
}

/// The first process's host PID of a Running pod.
fn running_pid(p: &Pod) -> Option<u32> {
    if p.status.phase != PodPhase::Running {
        return None;
    }
    p.status.processes.iter().find_map(|s| match s.state {
        ProcessState::Running { pid, .. } => Some(pid),
        _ => None,
    })
}

/// A pod watch on its own connection and thread: (pod, time seen) of every Put.
fn watch_pods(m: &MasterProc) -> mpsc::Receiver<(Pod, Instant)> {
    let mut w = m.client();
    let from = match call(
        &mut w,
        RequestBody::List {
            kind: Kind::Pod,
            namespace: None,
            selector: String::new(),
        },
    ) {
        Ok(ResponseBody::List { revision, .. }) => revision,
        other => panic!("list pods: {other:?}"),
    };
    let (tx, rx) = mpsc::channel();
    let id = smol::block_on(w.start(RequestBody::Watch {
        kind: Kind::Pod,
        namespace: None,
        from_revision: from,
    }))
    .expect("watch pods");
    // Ends when the master goes away (the connection closes).
    std::thread::spawn(move || {
        while let Ok(r) = smol::block_on(w.next()) {
            if r.id != id {
                continue;
            }
            match r.body {
                ResponseBody::Event {
                    event: WatchEvent::Put(Object::Pod(p)),
                    ..
                } => {
                    if tx.send((p, Instant::now())).is_err() {
                        return;
                    }
                }
                ResponseBody::Event { .. } => {}
                _ => return,
            }
        }
    });
    rx
}

/// Waits until none of `pids` exists.
fn wait_gone(pids: &[u32], timeout: Duration) -> usize {
    let t = Instant::now();
    loop {
        let left = pids
            .iter()
            .filter(|p| Path::new(&format!("/proc/{p}")).exists())
            .count();
        if left == 0 || t.elapsed() > timeout {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

// ---------------------------------------------------------------------------------------------
// The report
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct Report {
    rows: Vec<[String; 4]>,
    notes: Vec<String>,
}

impl Report {
    fn row(&mut self, what: &str, value: String, target: &str, ok: Option<bool>) {
        let verdict = match ok {
            Some(true) => "ok",
            Some(false) => "MISSED",
            None => "-",
        };
        println!("  => {what}: {value} (target {target}) {verdict}");
        self.rows.push([
            what.to_string(),
            value,
            target.to_string(),
            verdict.to_string(),
        ]);
    }

    fn note(&mut self, n: String) {
        println!("  note: {n}");
        self.notes.push(n);
    }

    fn print(&self) {
        let w: Vec<usize> = (0..4)
            .map(|i| self.rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
            .collect();
        let head = ["measure", "value", "target", ""];
        let w: Vec<usize> = w.iter().zip(head).map(|(a, h)| (*a).max(h.len())).collect();
        println!("\n== bramble cluster bench ==");
        for r in std::iter::once(&head.map(String::from)).chain(&self.rows) {
            println!(
                "{:<w0$}  {:>w1$}  {:<w2$}  {}",
                r[0],
                r[1],
                r[2],
                r[3],
                w0 = w[0],
                w1 = w[1],
                w2 = w[2]
            );
        }
        if !self.notes.is_empty() {
            println!("\nnotes:");
            for n in &self.notes {
                println!("- {n}");
            }
        }
    }
}

/// Size and modification time of every file under `dir` (to tell which files changed).
fn snapshot_files(dir: &Path) -> HashMap<PathBuf, (u64, std::time::SystemTime)> {
    let mut out = HashMap::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if let Ok(md) = e.metadata()
                && md.is_file()
            {
                out.insert(
                    e.path(),
                    (md.len(), md.modified().unwrap_or(std::time::UNIX_EPOCH)),
                );
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The measurements
// ---------------------------------------------------------------------------------------------

/// a. Master RSS shortly after start, with no nodes and no clients.
fn master_idle_rss(r: &mut Report, m: &MasterProc) {
    println!("\n[a] master idle RSS");
    std::thread::sleep(Duration::from_secs(2));
    idle_rss(r, "a", "master", m.proc.pid(), 20);
}

/// Row `<letter>. <who> idle RSS` against `limit_mb`, and a note of its PSS.
fn idle_rss(r: &mut Report, letter: &str, who: &str, pid: u32, limit_mb: u64) {
    let what = format!("{letter}. {who} idle RSS");
    let target = format!("<= {limit_mb} MB");
    match rss_kb(pid) {
        Some(kb) => {
            r.row(&what, mb(kb), &target, Some(kb <= limit_mb * 1024));
            if let Some(p) = pss_kb(pid) {
                r.note(format!("{letter}: {who} PSS at idle {}", mb(p)));
            }
        }
        None => r.row(&what, "unreadable".into(), &target, None),
    }
}

/// b. Bytes the master writes to disk while 100 simulated nodes heartbeat every second.
fn master_idle_disk(r: &mut Report, target_dir: &Path, idle: Duration) {
    println!(
        "\n[b] master disk writes, 100 nodes heartbeating every 1 s, {} s",
        idle.as_secs()
    );
    // On a tmpfs (a common /tmp) nothing reaches a disk and `write_bytes` reads 0 whatever the
    // master does: the data dir must be on a real disk (`BENCH_DISK_DIR`, default the target
    // dir), and a write made on purpose after the window must show up in the same counter.
    let base = std::env::var_os("BENCH_DISK_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir.to_path_buf());
    let disk = tempfile::Builder::new()
        .prefix("bramble-bench-disk-")
        .tempdir_in(&base)
        .expect("a temp dir under BENCH_DISK_DIR");
    let fs = fs_type(disk.path());
    println!("  data dir {} on {fs}", disk.path().display());
    if matches!(fs.as_str(), "tmpfs" | "ramfs" | "?") {
        r.row(
            "b. master disk writes idle",
            format!(
                "data dir on {fs}: write_bytes would read 0 whatever the master does; set \
                 BENCH_DISK_DIR to a folder on a disk"
            ),
            "0 B",
            Some(false),
        );
        return;
    }
    let data = disk.path().join("b-master");
    let m = start_master(&data, &[]);
    let pid = m.proc.pid();
    let mut sim = NodeSim::start(&m, 100, "1s", "idle");
    match sim.wait_ready(Duration::from_secs(60)) {
        Ok(t) => println!("  100 nodes registered in {}", ms(t)),
        Err(e) => {
            r.row("b. master disk writes idle", e, "0 B", None);
            sim.stop();
            return;
        }
    }
    // Let the registrations' writes and any checkpoint settle.
    std::thread::sleep(Duration::from_secs(3));
    let files0 = snapshot_files(&data);
    let log0 = std::fs::metadata(data.with_extension("master.log"))
        .map(|m| m.len())
        .unwrap_or(0);
    let w0 = proc_io(pid, "write_bytes");
    let wc0 = proc_io(pid, "wchar");
    let t0 = Instant::now();
    std::thread::sleep(idle);
    let w1 = proc_io(pid, "write_bytes");
    let wc1 = proc_io(pid, "wchar");
    let secs = t0.elapsed().as_secs_f64();
    let files1 = snapshot_files(&data);
    let log1 = std::fs::metadata(data.with_extension("master.log"))
        .map(|m| m.len())
        .unwrap_or(0);
    let mut c = m.client();
    let ready = (0..100)
        .step_by(10)
        .filter(|i| node_ready(&mut c, &format!("idle-{i}")))
        .count();
    // The control: one durable write (a config map) must move the same counter.
    let applied = call(
        &mut c,
        RequestBody::Apply(vec![Object::ConfigMap(build::config_map(
            "bench-control",
            &[("k", "v")],
        ))]),
    );
    std::thread::sleep(Duration::from_secs(1));
    let w2 = proc_io(pid, "write_bytes");
    let lines = sim.stop();
    let mut changed: Vec<String> = files1
        .iter()
        .filter(|(p, v)| files0.get(*p) != Some(v))
        .map(|(p, (len, _))| {
            format!(
                "{} ({} -> {len} B)",
                p.file_name().unwrap_or_default().to_string_lossy(),
                files0.get(p).map(|v| v.0).unwrap_or(0)
            )
        })
        .collect();
    changed.sort();
    let control = match (w1, w2, &applied) {
        (Some(a), Some(b), Ok(_)) => b.saturating_sub(a),
        _ => 0,
    };
    match (w0, w1) {
        (Some(a), Some(b)) => {
            let d = b.saturating_sub(a);
            r.row(
                &format!("b. master disk writes, 100 nodes, {secs:.0} s idle ({fs})"),
                format!(
                    "{d} B written, {} data files changed (one apply after: {control} B)",
                    changed.len()
                ),
                "0 B",
                Some(d == 0 && changed.is_empty() && control > 0),
            );
            if control == 0 {
                r.note(format!(
                    "b: the control write was not seen ({applied:?}): the 0 above proves nothing"
                ));
            }
        }
        _ => r.row(
            "b. master disk writes idle",
            "unreadable /proc/PID/io".into(),
            "0 B",
            None,
        ),
    }
    r.note(format!(
        "b: files in the data dir changed during the window: {}; master log grew {} B; \
         wchar (all write() calls incl. sockets) grew {} B; {ready}/10 sampled nodes Ready at the end",
        if changed.is_empty() {
            "none".to_string()
        } else {
            changed.join(", ")
        },
        log1.saturating_sub(log0),
        wc1.unwrap_or(0).saturating_sub(wc0.unwrap_or(0)),
    ));
    if let Some(l) = lines.iter().find(|l| l.contains("done after")) {
        r.note(format!("b: {l}"));
    }
}

/// The type of the filesystem `path` is on (`ext4`, `tmpfs`...), from the longest mount point
/// above it in `/proc/self/mountinfo`; `?` when unknown.
fn fs_type(path: &Path) -> String {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let mp = pre.split(' ').nth(4)?;
            let ty = post.split(' ').next()?;
            path.starts_with(mp).then(|| (mp.len(), ty.to_string()))
        })
        .max_by_key(|(n, _)| *n)
        .map_or_else(|| "?".into(), |(_, t)| t)
}

/// g. The worker's TLS handshake with the master (TCP connected → handshake done, as the worker
/// logs it), over `n` starts of a real worker on loopback.
fn tls_handshake(r: &mut Report, m: &MasterProc, root: &Path, n: u32) {
    println!("\n[g] worker -> master TLS handshake, {n} worker starts");
    let state = root.join("g-worker");
    for i in 0..n {
        let w = start_worker(m, None, "tls-w", &state);
        let seen = Instant::now();
        while handshakes_ms(&state).len() <= i as usize && seen.elapsed() < Duration::from_secs(20)
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        stop_worker(w);
    }
    let mut hs = handshakes_ms(&state);
    hs.sort_unstable();
    if hs.is_empty() {
        r.row(
            "g. TLS handshake",
            "no `tls handshake took` line in the worker log".into(),
            "-",
            Some(false),
        );
        return;
    }
    r.row(
        &format!("g. TLS handshake, worker -> master ({} connects)", hs.len()),
        format!(
            "median {} ms ({}-{} ms)",
            hs[hs.len() / 2],
            hs[0],
            hs[hs.len() - 1]
        ),
        "-",
        None,
    );
}

/// The `tls handshake took N ms` figures in a worker's log.
fn handshakes_ms(state: &Path) -> Vec<u64> {
    std::fs::read_to_string(state.with_extension("worker.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let rest = l.split("tls handshake took ").nth(1)?;
            rest.split(' ').next()?.parse().ok()
        })
        .collect()
}

/// c. Master CPU while many simulated nodes heartbeat every 5 s.
fn master_cpu(r: &mut Report, root: &Path, nodes: u64, window: Duration) {
    println!(
        "\n[c] master CPU, {nodes} nodes heartbeating every 5 s, {} s window",
        window.as_secs()
    );
    let data = root.join("c-master");
    let maxc = (nodes + 1000).to_string();
    let m = start_master(&data, &["--max-connections", &maxc]);
    let pid = m.proc.pid();
    println!(
        "  master pid {pid}, open-files limit {}",
        max_open_files(pid)
    );
    let mut sim = NodeSim::start(&m, nodes, "5s", "sim");
    let spid = sim.proc.pid();
    let what = format!("c. master CPU, {nodes} nodes @5 s");
    match sim.wait_ready(Duration::from_secs(300)) {
        Ok(t) => {
            println!("  {nodes} nodes registered in {:.1} s", t.as_secs_f64());
            r.note(format!(
                "c: {nodes} nodes registered in {:.1} s (64 handshakes in flight at a time)",
                t.as_secs_f64()
            ));
        }
        Err(e) => {
            r.row(&what, e, "<= 25% of a core", None);
            let lines = sim.stop();
            r.note(format!("c: nodesim: {lines:?}"));
            return;
        }
    }
    std::thread::sleep(Duration::from_secs(5));
    let hz = clk_tck() as f64;
    let (m0, s0) = (cpu_ticks(pid), cpu_ticks(spid));
    let t0 = Instant::now();
    std::thread::sleep(window);
    let (m1, s1) = (cpu_ticks(pid), cpu_ticks(spid));
    let secs = t0.elapsed().as_secs_f64();
    let rss = rss_kb(pid);
    let pct = |a: Option<u64>, b: Option<u64>| -> Option<f64> {
        Some((b? - a?) as f64 / hz / secs * 100.0)
    };
    match pct(m0, m1) {
        Some(p) => r.row(
            &what,
            format!("{p:.1}% of a core"),
            "<= 25% of a core",
            Some(p <= 25.0),
        ),
        None => r.row(&what, "unreadable".into(), "<= 25% of a core", None),
    }
    if let Some(p) = pct(s0, s1) {
        r.note(format!(
            "c: the simulator itself used {p:.1}% of a core on the same 2 shared cores"
        ));
    }
    if let Some(kb) = rss {
        r.note(format!(
            "c: master RSS with {nodes} nodes connected: {}",
            mb(kb)
        ));
    }
    // Probe: can a client list that many nodes? (One response frame holds the whole list.)
    // Bounded: on its own thread, given up after 10 s (the thread ends with the master).
    let mut c = m.client();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let t = Instant::now();
        let res = call(
            &mut c,
            RequestBody::List {
                kind: Kind::Node,
                namespace: None,
                selector: String::new(),
            },
        );
        let _ = tx.send((res, t.elapsed()));
    });
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok((Ok(ResponseBody::List { items, .. }), took)) => {
            let ready = items
                .iter()
                .filter(|o| matches!(o, Object::Node(n) if n.status.is_ready()))
                .count();
            r.note(format!(
                "c: List nodes returned {} nodes ({ready} Ready) in {}",
                items.len(),
                ms(took)
            ));
        }
        Ok((other, took)) => r.note(format!(
            "c: List nodes with {nodes} nodes failed after {}: {other:?}",
            ms(took)
        )),
        Err(_) => r.note(format!(
            "c: List nodes with {nodes} nodes got no answer within 10 s (the client hangs)"
        )),
    }
    let lines = sim.stop();
    if let Some(l) = lines.iter().find(|l| l.contains("done after")) {
        r.note(format!("c: {l}"));
    }
    for l in lines.iter().filter(|l| l.contains("error x")) {
        r.note(format!("c: {l}"));
    }
}

/// What g measured of one master binary.
#[derive(Debug, Default, Clone)]
struct Churned {
    cpu_pct: Option<f64>,
    rss_kb: Option<u64>,
    queries_per_write: Option<f64>,
    rows_per_write: Option<f64>,
    writes_per_s: Option<f64>,
    p50: Option<Duration>,
    notes: Vec<String>,
}

/// The last `bramble_store_reads` line of a master log: (revision, queries, rows).
fn last_reads(log: &Path) -> Option<(u64, u64, u64)> {
    let s = std::fs::read_to_string(log).ok()?;
    let raw = s.lines().rev().find(|l| l.contains("store reads so far"))?;
    // The log may be coloured: drop the escape sequences (`ESC [ ... m`).
    let mut line = String::with_capacity(raw.len());
    let mut esc = false;
    for c in raw.chars() {
        match (esc, c) {
            (false, '\u{1b}') => esc = true,
            (true, 'm') => esc = false,
            (true, _) => {}
            (false, c) => line.push(c),
        }
    }
    let field = |k: &str| -> Option<u64> {
        let i = line.find(&format!("{k}="))? + k.len() + 1;
        line[i..]
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    Some((field("revision")?, field("queries")?, field("rows")?))
}

/// Pods `g-<i>` applied in batches, then waited for Running (polled); returns how many ran.
fn apply_and_wait(c: &mut Client, from: u32, n: u32, timeout: Duration) -> usize {
    for chunk in (from..from + n).collect::<Vec<_>>().chunks(100) {
        let objs = chunk
            .iter()
            .map(|i| sleep_pod(&format!("g-{i}"), 3600))
            .collect();
        if let Err(e) = call(c, RequestBody::Apply(objs)) {
            eprintln!("  g: apply: {e}");
        }
    }
    let t = Instant::now();
    loop {
        let running = match call(
            c,
            RequestBody::List {
                kind: Kind::Pod,
                namespace: None,
                selector: String::new(),
            },
        ) {
            Ok(ResponseBody::List { items, .. }) => items
                .iter()
                .filter(|o| matches!(o, Object::Pod(p) if p.status.phase == PodPhase::Running))
                .count(),
            _ => 0,
        };
        if running >= (from + n) as usize || t.elapsed() > timeout {
            return running;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// g for one master binary.
fn churn_one(
    program: &Path,
    label: &str,
    root: &Path,
    nodes: u64,
    pods: u32,
    rate: u64,
    window: Duration,
) -> Churned {
    let mut out = Churned::default();
    println!("\n[h] {label}: {}", program.display());
    let data = root.join(format!("g-{label}"));
    let maxc = (nodes + 1000).to_string();
    let m = start_master_from(
        program,
        &data,
        &["--max-connections", &maxc],
        Some("info,bramble_store_reads=debug"),
    );
    let log = data.with_extension("master.log");
    let pid = m.proc.pid();
    let mut sim = NodeSim::start_with(&m, nodes, "5s", "churn", rate);
    match sim.wait_ready(Duration::from_secs(600)) {
        Ok(t) => out.notes.push(format!(
            "{nodes} nodes registered in {:.1} s",
            t.as_secs_f64()
        )),
        Err(e) => {
            out.notes.push(e);
            sim.stop();
            return out;
        }
    }
    let mut c = m.client();
    let t = Instant::now();
    let ran = apply_and_wait(&mut c, 0, pods, Duration::from_secs(300));
    out.notes.push(format!(
        "{ran}/{pods} pods Running {:.1} s after the first apply",
        t.elapsed().as_secs_f64()
    ));
    std::thread::sleep(Duration::from_secs(5));
    let hz = clk_tck() as f64;
    let r0 = last_reads(&log);
    let m0 = cpu_ticks(pid);
    let t0 = Instant::now();
    std::thread::sleep(window);
    let m1 = cpu_ticks(pid);
    let r1 = last_reads(&log);
    let secs = t0.elapsed().as_secs_f64();
    out.rss_kb = rss_kb(pid);
    if let (Some(a), Some(b)) = (m0, m1) {
        out.cpu_pct = Some((b - a) as f64 / hz / secs * 100.0);
    }
    if let (Some((rev0, q0, w0)), Some((rev1, q1, w1))) = (r0, r1)
        && rev1 > rev0
    {
        let writes = (rev1 - rev0) as f64;
        out.writes_per_s = Some(writes / secs);
        out.queries_per_write = Some((q1 - q0) as f64 / writes);
        out.rows_per_write = Some((w1 - w0) as f64 / writes);
    } else {
        out.notes.push(format!(
            "no store writes seen in the window (reads lines {r0:?} -> {r1:?})"
        ));
    }
    // p50 apply -> Running, one pod at a time, while the churn goes on.
    let events = watch_pods(&m);
    let mut lat = Vec::new();
    for i in 0..20u32 {
        let name = format!("lat-{i}");
        let t0 = Instant::now();
        if call(&mut c, RequestBody::Apply(vec![sleep_pod(&name, 3600)])).is_err() {
            continue;
        }
        let deadline = t0 + Duration::from_secs(20);
        while let Ok((p, at)) =
            events.recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            if p.meta.name == name && p.status.phase == PodPhase::Running {
                lat.push(at - t0);
                break;
            }
        }
    }
    lat.sort();
    if !lat.is_empty() {
        out.p50 = Some(percentile(&lat, 0.5));
    }
    out.notes
        .push(format!("{}/20 latency pods Running", lat.len()));
    let lines = sim.stop();
    if let Some(l) = lines.iter().find(|l| l.contains("done after")) {
        out.notes.push(l.clone());
    }
    out
}

/// g. Status churn, this build and (with `BENCH_BASELINE_BIN`) a baseline build.
fn master_churn(r: &mut Report, root: &Path, nodes: u64, pods: u32, rate: u64, window: Duration) {
    println!(
        "\n[h] status churn: {nodes} nodes @5 s, {pods} pods, {rate} status changes/s, {} s window",
        window.as_secs()
    );
    let base = std::env::var_os("BENCH_BASELINE_BIN").map(PathBuf::from);
    let before = base
        .as_deref()
        .map(|b| churn_one(b, "baseline", root, nodes, pods, rate, window));
    let after = churn_one(
        &bin("bramble"),
        "this build",
        root,
        nodes,
        pods,
        rate,
        window,
    );
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!(" ({:.2}x the baseline's)", a / b),
        _ => String::new(),
    };
    let b = before.clone().unwrap_or_default();
    let what = format!("h. master CPU, {nodes} nodes @5 s, {pods} pods, {rate} status/s");
    match after.cpu_pct {
        Some(p) => r.row(
            &what,
            format!("{p:.1}% of a core{}", ratio(Some(p), b.cpu_pct)),
            "<= 8% of a core",
            Some(p <= 8.0),
        ),
        None => r.row(&what, "unreadable".into(), "<= 8% of a core", None),
    }
    if let Some(bp) = b.cpu_pct {
        r.note(format!("h: baseline master CPU {bp:.1}% of a core"));
    }
    let kb = |v: Option<u64>| v.map(mb).unwrap_or_else(|| "?".into());
    r.row(
        "h. master RSS under churn",
        format!(
            "{}{}",
            kb(after.rss_kb),
            ratio(after.rss_kb.map(|v| v as f64), b.rss_kb.map(|v| v as f64))
        ),
        "-",
        None,
    );
    if before.is_some() {
        r.note(format!("h: baseline master RSS {}", kb(b.rss_kb)));
    }
    let f = |v: Option<f64>| v.map(|v| format!("{v:.2}")).unwrap_or_else(|| "?".into());
    r.row(
        "h. SQLite read queries per status write",
        format!(
            "{} (rows {}){}",
            f(after.queries_per_write),
            f(after.rows_per_write),
            ratio(after.queries_per_write, b.queries_per_write)
        ),
        "independent of cluster size",
        None,
    );
    if before.is_some() {
        r.note(format!(
            "h: baseline read queries per status write {} (rows decoded {}); writes/s in the window: baseline {}, this build {}",
            f(b.queries_per_write),
            f(b.rows_per_write),
            f(b.writes_per_s),
            f(after.writes_per_s)
        ));
    }
    let p = |d: Option<Duration>| d.map(ms).unwrap_or_else(|| "?".into());
    r.row(
        "h. apply -> Running (simulated node, under churn) p50",
        format!(
            "{}{}",
            p(after.p50),
            ratio(
                after.p50.map(|d| d.as_secs_f64()),
                b.p50.map(|d| d.as_secs_f64())
            )
        ),
        "-",
        None,
    );
    if before.is_some() {
        r.note(format!("h: baseline apply -> Running p50 {}", p(b.p50)));
    }
    for n in &b.notes {
        r.note(format!("h (baseline): {n}"));
    }
    for n in &after.notes {
        r.note(format!("h (this build): {n}"));
    }
}

/// d. apply → Running latency and e. worker memory, on one master and one real worker.
/// i. Worker RSS with the kernel path serving 100 services.
fn worker_services_rss(r: &mut Report) {
    println!("\n[i] worker RSS, kernel network path, 100 services");
    let c = bramble_tests::netns::Cluster::start(1, &[]);
    let mut manifest = String::from(
        "[[pod]]\nname = \"rss-target\"\nnetwork = \"isolated\"\nlabels = { app = \"rss\" }\n\
         [[pod.process]]\nname = \"main\"\ncommand = [\"/bin/sleep\", \"600\"]\n",
    );
    for i in 0..100 {
        manifest += &format!(
            "[[service]]\nname = \"svc-{i}\"\nselector = {{ app = \"rss\" }}\nport = {}\ntarget_port = 80\n",
            20000 + i
        );
    }
    let file = c.tmp.path().join("services.toml");
    std::fs::write(&file, manifest).expect("write the manifest");
    c.m.ok(&["apply", "-f", file.to_str().unwrap_or_default()]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let ready = loop {
        let ok = c.m.endpoints("svc-99").is_some_and(|e| e.ready.len() == 1);
        if ok || Instant::now() > deadline {
            break ok;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    if !ready {
        r.row(
            "i. worker RSS, 100 services",
            "svc-99 never got its endpoint".into(),
            "<= 8 MB",
            Some(false),
        );
        return;
    }
    // Let the table, the DNS zone and the allocator settle.
    std::thread::sleep(Duration::from_secs(5));
    let pid = c.workers[0].pid();
    match rss_kb(pid) {
        Some(kb) => r.row(
            "i. worker RSS, kernel path, 100 services",
            mb(kb),
            "<= 8 MB",
            Some(kb <= 8 * 1024),
        ),
        None => r.row(
            "i. worker RSS, 100 services",
            "unreadable".into(),
            "<= 8 MB",
            None,
        ),
    }
    let _ = c.m.cli(&["delete", "pod", "rss-target"]);
}

fn worker_path(r: &mut Report, m: &MasterProc, root: &Path, pods: u32) {
    println!("\n[d/e] real worker: idle RSS, apply -> Running latency, memory per pod");
    let w = start_worker(m, None, "bench-w", &root.join("de-worker"));
    let wpid = w.pid();
    let mut c = m.client();
    if let Err(e) = wait_node_ready(&mut c, "bench-w", Duration::from_secs(30)) {
        r.row("d/e. worker", e, "-", None);
        stop_worker(w);
        return;
    }
    // e (idle): after registration, before any pod.
    std::thread::sleep(Duration::from_secs(3));
    idle_rss(r, "e", "worker", wpid, 8);

    let events = watch_pods(m);
    let mut pids: Vec<u32> = Vec::new();
    // d: one pod at a time.
    let mut lat = Vec::new();
    let mut failures = Vec::new();
    for i in 0..pods {
        let name = format!("lat-{i}");
        let t0 = Instant::now();
        if let Err(e) = call(&mut c, RequestBody::Apply(vec![sleep_pod(&name, 60)])) {
            failures.push(format!("{name}: apply: {e}"));
            continue;
        }
        let deadline = t0 + Duration::from_secs(20);
        let mut got = None;
        while let Ok((p, at)) =
            events.recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            if p.meta.name == name && p.status.phase != PodPhase::Pending {
                got = Some((p, at));
                break;
            }
        }
        match got {
            Some((p, at)) if p.status.phase == PodPhase::Running => {
                lat.push(at - t0);
                if let Some(pid) = running_pid(&p) {
                    pids.push(pid);
                    if let Some(pp) = ppid(pid) {
                        pids.push(pp);
                    }
                }
            }
            Some((p, _)) => failures.push(format!(
                "{name}: {:?}: {}",
                p.status.phase, p.status.message
            )),
            None => failures.push(format!("{name}: not Running within 20 s")),
        }
        if let Err(e) = delete_pod(&mut c, &name) {
            failures.push(format!("{name}: delete: {e}"));
        }
    }
    lat.sort();
    if lat.is_empty() {
        r.row(
            "d. apply -> Running",
            "no pod ran".into(),
            "p50 <= 20 ms",
            Some(false),
        );
    } else {
        let p50 = percentile(&lat, 0.5);
        r.row(
            &format!("d. apply -> Running ({} pods) p50", lat.len()),
            ms(p50),
            "<= 20 ms",
            Some(p50 <= Duration::from_millis(20)),
        );
        r.row(
            "d. apply -> Running p90",
            ms(percentile(&lat, 0.9)),
            "-",
            None,
        );
        r.row(
            "d. apply -> Running max",
            ms(*lat.last().unwrap()),
            "-",
            None,
        );
        r.note(format!(
            "d: min {}, mean {}",
            ms(lat[0]),
            ms(lat.iter().sum::<Duration>() / lat.len() as u32)
        ));
    }
    for f in failures.iter().take(5) {
        r.note(format!("d: failure: {f}"));
    }
    let left = wait_gone(&pids, Duration::from_secs(30));
    if left > 0 {
        r.note(format!(
            "d: {left} pod processes still alive 30 s after their pods were deleted"
        ));
    }
    while events.try_recv().is_ok() {}

    // e (per pod): 20 sleeping pods.
    std::thread::sleep(Duration::from_secs(2));
    let before = rss_kb(wpid).unwrap_or(0);
    let before_pss = pss_kb(wpid).unwrap_or(0);
    let n = 20u32;
    let names: Vec<String> = (0..n).map(|i| format!("mem-{i}")).collect();
    let objs: Vec<Object> = names.iter().map(|s| sleep_pod(s, 600)).collect();
    if let Err(e) = call(&mut c, RequestBody::Apply(objs)) {
        r.row(
            "e. memory per pod",
            format!("apply: {e}"),
            "<= 0.5 MB",
            None,
        );
    } else {
        let mut running: HashMap<String, u32> = HashMap::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while running.len() < names.len() {
            let Ok((p, _)) =
                events.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            else {
                break;
            };
            if let Some(pid) = running_pid(&p)
                && p.meta.name.starts_with("mem-")
            {
                running.insert(p.meta.name.clone(), pid);
            }
        }
        std::thread::sleep(Duration::from_secs(2));
        let after = rss_kb(wpid).unwrap_or(0);
        let after_pss = pss_kb(wpid).unwrap_or(0);
        let (mut init_rss, mut init_pss, mut work_rss) = (0u64, 0u64, 0u64);
        let mut inits = 0;
        let mut init_comm = String::new();
        for pid in running.values() {
            work_rss += rss_kb(*pid).unwrap_or(0);
            pids.push(*pid);
            if let Some(pp) = ppid(*pid)
                && pp != wpid
            {
                init_rss += rss_kb(pp).unwrap_or(0);
                init_pss += pss_kb(pp).unwrap_or(0);
                init_comm = comm(pp);
                inits += 1;
                pids.push(pp);
            }
        }
        let k = running.len().max(1) as u64;
        let delta = after.saturating_sub(before);
        let per = (delta + init_rss) / k;
        r.row(
            &format!("e. memory per pod ({} pods, RSS)", running.len()),
            format!("{:.2} MB", per as f64 / 1024.0),
            "<= 0.5 MB",
            Some(per * 2 <= 1024 && running.len() == names.len()),
        );
        let per_pss = (after_pss.saturating_sub(before_pss) + init_pss) / k;
        r.note(format!(
            "e: worker RSS {} -> {} (+{} kB); {inits} pod inits ({init_comm}) RSS {} kB in all \
             ({} kB each), PSS {} kB in all; by PSS (shared pages split) {:.2} MB per pod; \
             the workloads (/bin/sleep) themselves {} kB RSS in all, not counted",
            mb(before),
            mb(after),
            delta,
            init_rss,
            init_rss / inits.max(1),
            init_pss,
            per_pss as f64 / 1024.0,
            work_rss
        ));
        if running.len() < names.len() {
            r.note(format!(
                "e: only {}/{} pods reached Running within 60 s",
                running.len(),
                names.len()
            ));
        }
    }
    for name in &names {
        let _ = delete_pod(&mut c, name);
    }
    let left = wait_gone(&pids, Duration::from_secs(30));
    if left > 0 {
        r.note(format!(
            "e: {left} pod processes still alive 30 s after their pods were deleted"
        ));
    }
    stop_worker(w);
}

/// f. Bytes one idle real worker and the master exchange, through a counting relay.
fn worker_traffic(root: &Path, idle: Duration) -> Vec<(String, String, String, Option<bool>)> {
    let mut out = Vec::new();
    let data = root.join("f-master");
    let m = start_master(&data, &[]);
    let relay = Relay::start(&m.addr);
    let w = start_worker(&m, Some(&relay.addr), "traffic-w", &root.join("f-worker"));
    let mut c = m.client();
    if let Err(e) = wait_node_ready(&mut c, "traffic-w", Duration::from_secs(30)) {
        out.push(("f. idle traffic per node".into(), e, "-".into(), None));
        stop_worker(w);
        return out;
    }
    // Past the registration, the first assignment and the full status.
    std::thread::sleep(Duration::from_secs(3));
    let (u0, d0) = relay.bytes();
    let c0 = relay.connections.load(Ordering::Relaxed);
    let t0 = Instant::now();
    std::thread::sleep(idle);
    let (u1, d1) = relay.bytes();
    let c1 = relay.connections.load(Ordering::Relaxed);
    let secs = t0.elapsed().as_secs_f64();
    let per_min = |b: u64| b as f64 * 60.0 / secs;
    let total = per_min(u1 - u0 + d1 - d0);
    out.push((
        format!("f. idle traffic per node ({secs:.0} s, 5 s heartbeat)"),
        format!("{total:.0} B/min"),
        "<= 1 KB/min".into(),
        Some(total <= 1024.0),
    ));
    out.push((
        "f: note".into(),
        format!(
            "worker -> master {:.0} B/min, master -> worker {:.0} B/min; the worker reconnected \
             {} time(s) during the window ({} relay connection(s) in all); registration + first \
             exchange before the window: {} B up, {} B down",
            per_min(u1 - u0),
            per_min(d1 - d0),
            c1 - c0,
            c1,
            u0,
            d0
        ),
        String::new(),
        None,
    ));
    stop_worker(w);
    drop(m);
    out
}

fn main() {
    // `cargo bench` passes `--bench`; nothing here takes arguments. The release binaries, built
    // from these sources (`bin` refuses missing and stale ones, saying how to build them).
    let dir = bin("bramble").parent().expect("target dir").to_path_buf();
    bin("bramble-worker");
    let only: Option<Vec<String>> = std::env::var("BENCH_ONLY")
        .ok()
        .map(|s| s.split(',').map(|x| x.trim().to_lowercase()).collect());
    let on = |k: &str| only.as_ref().is_none_or(|o| o.iter().any(|x| x == k));
    let idle = Duration::from_secs(env_u64("BENCH_IDLE_SECONDS", 60).max(1));
    let cpu_nodes = env_u64("BENCH_CPU_NODES", 5000).clamp(1, 10_000);
    let cpu_window = Duration::from_secs(env_u64("BENCH_CPU_SECONDS", 30).max(1));
    let pods = env_u64("BENCH_PODS", 50).clamp(1, 1000) as u32;
    let root_ok = is_root();
    println!(
        "bramble cluster bench: binaries in {}; {} CPUs; idle window {} s; numbers are noisy on \
         a shared machine",
        dir.display(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        idle.as_secs()
    );
    let tmp = tempfile::Builder::new()
        .prefix("bramble-bench-")
        .tempdir()
        .expect("temp dir");
    let root = tmp.path();
    let started = Instant::now();
    let mut r = Report::default();

    // a, and the master reused by d/e.
    let need_a = on("a") || ((on("d") || on("e") || on("g")) && root_ok);
    let ma = need_a.then(|| start_master(&root.join("a-master"), &[]));
    if let (Some(m), true) = (&ma, on("a")) {
        master_idle_rss(&mut r, m);
    }

    // b and f both sit idle for the window: run them side by side.
    let f = (on("f") && root_ok).then(|| {
        let root = root.to_path_buf();
        println!(
            "\n[f] idle traffic of one real worker through a counting relay, {} s (in parallel with b)",
            idle.as_secs()
        );
        std::thread::spawn(move || worker_traffic(&root, idle))
    });
    if on("b") {
        master_idle_disk(&mut r, dir.parent().unwrap_or(&dir), idle);
    }
    if let Some(h) = f {
        match h.join() {
            Ok(rows) => {
                for (what, value, target, ok) in rows {
                    if what == "f: note" {
                        r.note(format!("f: {value}"));
                    } else {
                        r.row(&what, value, &target, ok);
                    }
                }
            }
            Err(_) => r.note("f: the traffic measurement panicked".into()),
        }
    }

    if on("c") {
        master_cpu(&mut r, root, cpu_nodes, cpu_window);
    }

    if on("h") {
        master_churn(
            &mut r,
            root,
            env_u64("BENCH_CHURN_NODES", 5000).clamp(1, 10_000),
            env_u64("BENCH_CHURN_PODS", 1000).clamp(1, 10_000) as u32,
            env_u64("BENCH_CHURN_RATE", 100).clamp(1, 10_000),
            Duration::from_secs(env_u64("BENCH_CHURN_SECONDS", 30).max(1)),
        );
    }

    if let Some(m) = &ma
        && (on("d") || on("e"))
        && root_ok
    {
        worker_path(&mut r, m, root, pods);
    }
    if let Some(m) = &ma
        && on("g")
        && root_ok
    {
        tls_handshake(&mut r, m, root, 7);
    }
    if on("i") && root_ok {
        worker_services_rss(&mut r);
    }
    if !root_ok && (on("d") || on("e") || on("f") || on("g") || on("i")) {
        r.note("d, e, f and g skipped: they need root (namespaces, cgroups)".into());
    }
    drop(ma);
    r.note(format!(
        "whole bench took {:.0} s on {} shared CPUs: expect noise of tens of percent in CPU and \
         latency figures",
        started.elapsed().as_secs_f64(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    ));
    r.print();
}
