//! The test kit shared by every test and bench of the workspace: builders for wire objects
//! ([`build`]), one [`free_port`], one [`wait_for`], child processes killed by PID ([`Proc`]),
//! and the workspace's binaries located and checked against the sources ([`bin`]).
//!
//! The whole-cluster harness (masters, workers, network namespaces) is `bramble-tests`, built on
//! this crate.
#![forbid(unsafe_code)]

pub mod build;
pub mod busybox;
pub mod crun;
pub mod oci;
pub mod registry;

use std::collections::HashMap;
use std::fmt::Debug;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bramble_build_id::{BINARIES, Binary};

/// A free TCP port on loopback (free when picked, not held: bind it soon, and retry if taken).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Polls `f` every 20 ms until it returns `Some`, or panics with `what` after `timeout`.
#[track_caller]
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    poll(timeout, what, || f().ok_or(()), |()| String::new())
}

/// Polls `f` every 20 ms until it returns `Ok`, or panics with `what` and the last `Err` after
/// `timeout`.
#[track_caller]
pub fn wait_for_last<T, E: Debug>(
    timeout: Duration,
    what: &str,
    f: impl FnMut() -> Result<T, E>,
) -> T {
    poll(timeout, what, f, |last| format!("; last: {last:?}"))
}

/// [`wait_for`], with `diag()` (the state of what is waited on: logs, listings) appended to the
/// panic message.
#[track_caller]
pub fn wait_for_with<T>(
    timeout: Duration,
    what: &str,
    mut f: impl FnMut() -> Option<T>,
    diag: impl FnOnce() -> String,
) -> T {
    poll(timeout, what, || f().ok_or(()), |()| diag())
}

#[track_caller]
fn poll<T, E>(
    timeout: Duration,
    what: &str,
    mut f: impl FnMut() -> Result<T, E>,
    explain: impl FnOnce(E) -> String,
) -> T {
    let t = Instant::now();
    loop {
        match f() {
            Ok(v) => return v,
            Err(last) if t.elapsed() >= timeout => {
                panic!(
                    "timed out after {timeout:?} waiting for {what}{}",
                    explain(last)
                )
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// The last `n` bytes of `s` (at a character boundary): log tails for failure messages.
pub fn tail(s: &str, n: usize) -> &str {
    let mut i = s.len().saturating_sub(n);
    while !s.is_char_boundary(i) {
        i += 1;
    }
    &s[i..]
}

/// Text without ANSI colour sequences (the binaries log in colour).
pub fn plain(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c == '\x1b' {
            for c in it.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The first command-line argument that parses as a `T`, else `default`: a bench's size
/// (`cargo bench --bench NAME -- 500`; cargo's own `--bench` flag is skipped as not a number).
pub fn arg_or<T: std::str::FromStr>(default: T) -> T {
    std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(default)
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("Uid:")
                    .and_then(|v| v.split_whitespace().next())
                    .map(|v| v == "0")
            })
        })
        .unwrap_or(false)
}

/// Asserts that the test runs as root (namespace and cgroup tests need it); fails loudly.
pub fn require_root() {
    assert!(
        is_root(),
        "this test needs root (namespaces, cgroups): run the README's test command as root"
    );
}

/// The build id a binary of this workspace must print (`--build-id`) to be started: computed
/// from the sources when this crate was built.
pub fn expected_build_id(name: &str) -> &'static str {
    match name {
        "bramble" => env!("BRAMBLE_EXPECTED_BUILD_ID_BRAMBLE"),
        "bramble-worker" => env!("BRAMBLE_EXPECTED_BUILD_ID_BRAMBLE_WORKER"),
        _ => panic!("{name} is not a binary the harness starts"),
    }
}

/// Why `path` (binary `bin`) may not be started: it does not print the build id of these
/// sources. `None` when it does.
pub fn stale(path: &Path, bin: Binary) -> Option<String> {
    let want = expected_build_id(bin.name);
    let out = Command::new(path).arg("--build-id").output();
    let got = match &out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        _ => format!("none ({out:?})"),
    };
    (got != want).then(|| {
        format!(
            "{} was built from other sources than these tests: its build id is {got}, the \
             sources' is {want}. Rebuild it (`cargo build -p {}`, with `--release` for the \
             benches) or run `./scripts/dev test`, which builds everything first",
            path.display(),
            bin.package
        )
    })
}

/// A binary built by this workspace (`bramble`, `bramble-worker`), next to the test executable
/// (`target/<profile>/`), after checking that it was built from the current sources. Fails
/// loudly when it is missing or stale: `cargo test -p bramble-tests` does not rebuild other
/// packages' binaries.
pub fn bin(name: &str) -> PathBuf {
    static CHECKED: Mutex<Option<HashMap<String, PathBuf>>> = Mutex::new(None);
    let mut checked = CHECKED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = checked.get_or_insert_default().get(name) {
        return p.clone();
    }
    let binary = BINARIES
        .into_iter()
        .find(|b| b.name == name)
        .unwrap_or_else(|| panic!("{name} is not a binary of this workspace"));
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/test-xxxx -> target/<profile>/
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is missing: build it first (`cargo build -p {}`, or `./scripts/dev test`)",
        p.display(),
        binary.package
    );
    if let Some(why) = stale(&p, binary) {
        panic!("{why}");
    }
    checked
        .get_or_insert_default()
        .insert(name.into(), p.clone());
    p
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
    /// For a worker in the host's network namespace: its own pod bridge, deleted when the test
    /// ends (its pods' veths go with the pods).
    pub bridge: Option<String>,
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
        if let Some(bridge) = &self.bridge {
            let _ = Command::new("ip")
                .args(["link", "del", bridge])
                .stderr(std::process::Stdio::null())
                .status();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_for_returns_the_value_and_names_what_timed_out() {
        let mut n = 0;
        assert_eq!(
            wait_for(Duration::from_secs(5), "three calls", || {
                n += 1;
                (n == 3).then_some(n)
            }),
            3
        );
        let err = std::panic::catch_unwind(|| {
            wait_for_last(Duration::from_millis(50), "never", || {
                Err::<(), _>("still 7")
            })
        })
        .unwrap_err();
        let msg = err.downcast_ref::<String>().unwrap();
        assert!(
            msg.contains("waiting for never") && msg.contains("still 7"),
            "{msg}"
        );
    }

    #[test]
    fn free_ports_can_be_bound() {
        let p = free_port();
        TcpListener::bind(("127.0.0.1", p)).unwrap();
    }

    /// A binary that prints another build id than the sources' is refused, naming both ids.
    #[test]
    fn a_binary_of_other_sources_is_refused() {
        let tmp =
            std::env::temp_dir().join(format!("bramble-testkit-stale-{}", std::process::id()));
        std::fs::write(&tmp, "#!/bin/sh\necho 0123456789abcdef\n").unwrap();
        let _ = Command::new("chmod").arg("+x").arg(&tmp).status();
        let why = stale(&tmp, bramble_build_id::BRAMBLE).expect("refused");
        assert!(why.contains("0123456789abcdef"), "{why}");
        assert!(why.contains(expected_build_id("bramble")), "{why}");
        let _ = std::fs::remove_file(&tmp);
    }
}
