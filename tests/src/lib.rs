//! Helpers for whole-cluster tests: start real `bramble` and `bramble-worker` processes, drive
//! the real CLI, and clean up by PID even when a test fails.
#![forbid(unsafe_code)]

pub mod netns;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A binary built by this workspace (`bramble`, `bramble-worker`), next to the test executable.
/// Fails loudly when missing: run the tests through `cargo test --workspace`.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/test-xxxx -> target/<profile>/
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is missing: build it first (`cargo test --workspace` or `cargo build -p bramble-cli -p bramble-worker`)",
        p.display()
    );
    p
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed (SIGKILL, by PID) when dropped.
#[derive(Debug)]
pub struct Proc {
    /// The child.
    pub child: Child,
    /// What it is, for messages.
    pub what: String,
    /// For a worker: its pods' cgroup parent, emptied and removed when the test ends.
    pub cgroup_parent: Option<String>,
}

impl Proc {
    /// The PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub fn terminate(&mut self, grace: Duration) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
        let t = Instant::now();
        while t.elapsed() < grace {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill9();
    }

    /// Whether it still runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
        if let Some(parent) = &self.cgroup_parent {
            remove_cgroup_tree(parent);
        }
    }
}

/// Kills every process under the cgroup `name` in every mounted hierarchy and removes the
/// directories, deepest first: pods outlive a killed agent by design, tests must not leak them.
pub fn remove_cgroup_tree(name: &str) {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for line in mounts.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        if !post.starts_with("cgroup") {
            continue;
        }
        let Some(mp) = pre.split(' ').nth(4) else {
            continue;
        };
        let root = Path::new(mp).join(name);
        for _ in 0..100 {
            let mut dirs = Vec::new();
            collect_dirs(&root, &mut dirs);
            if dirs.is_empty() {
                break;
            }
            for d in &dirs {
                if let Ok(procs) = std::fs::read_to_string(d.join("cgroup.procs")) {
                    for pid in procs.lines() {
                        let _ = Command::new("kill").arg("-KILL").arg(pid.trim()).status();
                    }
                }
            }
            for d in dirs.iter().rev() {
                let _ = std::fs::remove_dir(d);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    if !dir.is_dir() {
        return;
    }
    out.push(dir.to_path_buf());
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                collect_dirs(&e.path(), out);
            }
        }
    }
}

/// A master process with its data dir.
#[derive(Debug)]
pub struct MasterProc {
    /// The process.
    pub proc: Proc,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// Data dir.
    pub data_dir: PathBuf,
}

impl MasterProc {
    /// A pod's phase and status message (`None` if it does not exist).
    pub fn pod_status(&self, name: &str) -> Option<(String, String)> {
        let o = self.cli(&["get", "pod", name, "-o", "json"]);
        if !o.status.success() {
            return None;
        }
        let v = json(&String::from_utf8_lossy(&o.stdout));
        let st = &v["Pod"]["status"];
        Some((
            st["phase"].as_str().unwrap_or("").to_string(),
            st["message"].as_str().unwrap_or("").to_string(),
        ))
    }

    /// Starts `bramble master` on a free loopback port and waits until it accepts clients.
    pub fn start(data_dir: &Path, extra: &[&str]) -> MasterProc {
        // The port is free when picked but not held: another process may take it before the
        // master binds it. Then the master says so and exits, and another port is tried.
        for _ in 0..4 {
            let addr = format!("127.0.0.1:{}", free_port());
            match Self::try_start(data_dir, &addr, extra) {
                Ok(m) => return m,
                Err(log) if log.contains("Address already in use") => continue,
                Err(log) => panic!("master on {addr} exited at start; log: {log}"),
            }
        }
        panic!("master: four free ports were taken before it could bind them")
    }

    /// Starts `bramble master` on `addr`.
    pub fn start_on(data_dir: &Path, addr: &str, extra: &[&str]) -> MasterProc {
        Self::try_start(data_dir, addr, extra)
            .unwrap_or_else(|log| panic!("master on {addr} exited at start; log: {log}"))
    }

    /// Starts `bramble master` on `addr` and waits until it serves; its log if it exits first.
    fn try_start(data_dir: &Path, addr: &str, extra: &[&str]) -> Result<MasterProc, String> {
        let log = std::fs::File::create(data_dir.with_extension("master.log")).unwrap();
        let child = Command::new(bin("bramble"))
            .args(["master", "--data-dir"])
            .arg(data_dir)
            .args(["--listen", addr])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn bramble master");
        let mut m = MasterProc {
            proc: Proc {
                child,
                what: "master".into(),
                cgroup_parent: None,
            },
            addr: addr.to_string(),
            data_dir: data_dir.to_path_buf(),
        };
        m.wait_ready()?;
        Ok(m)
    }

    /// Waits until the master serves; its log if it exits first.
    fn wait_ready(&mut self) -> Result<(), String> {
        let t = Instant::now();
        loop {
            // Our master, not another process that holds the port.
            if let Ok(Some(_)) = self.proc.child.try_wait() {
                return Err(self.log());
            }
            // Both tokens: workers start from join.token, written after admin.token.
            if self.data_dir.join("admin.token").exists()
                && self.data_dir.join("join.token").exists()
                && std::net::TcpStream::connect(&self.addr).is_ok()
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

    /// Runs the real `bramble` CLI against this master.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(bin("bramble"))
            .args(args)
            .env("BRAMBLE_SERVER", &self.addr)
            .env("BRAMBLE_TOKEN_FILE", self.data_dir.join("admin.token"))
            .output()
            .expect("run bramble")
    }

    /// Runs the CLI and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        crate::succeeded(args, self.cli(args))
    }

    /// An API client.
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

/// Starts `bramble-worker` against `master`.
pub fn start_worker(master: &MasterProc, name: &str, state_dir: &Path, extra: &[&str]) -> Proc {
    std::fs::create_dir_all(state_dir).unwrap();
    let parent = format!("bramble-test-{}-{name}", std::process::id());
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(state_dir.with_extension("worker.log"))
        .unwrap();
    let child = Command::new(bin("bramble-worker"))
        .args(["--master", &master.addr, "--name", name, "--state-dir"])
        .arg(state_dir)
        // Tests run several agents on one host: each gets its own runtime dir and cgroup parent.
        .arg("--run-dir")
        .arg(state_dir.with_extension("run"))
        .args(["--cgroup-parent", &parent])
        .arg("--token-file")
        .arg(master.data_dir.join("join.token"))
        .args(extra)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn bramble-worker");
    Proc {
        child,
        what: format!("worker {name}"),
        cgroup_parent: Some(parent),
    }
}

/// Polls `f` every 20 ms until it returns `Some`, or panics with `what` after `timeout`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let t = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            t.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Parses `bramble get ... -o json` output.
pub fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// Asserts that the test runs as root (namespace and cgroup tests need it); fails loudly.
pub fn require_root() {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("Uid:")
                    .map(|v| v.split_whitespace().next().unwrap_or("").to_string())
            })
        })
        .unwrap_or_default();
    assert_eq!(
        uid, "0",
        "this test needs root (namespaces, cgroups): run the README's test command as root"
    );
}
