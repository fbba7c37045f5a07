//! The whole path with the real binaries: `bramble` master + CLI and `bramble-worker` running
//! pods in namespaces and cgroups (root; this host's cgroup v1).

use std::time::Duration;

use bramble_tests::{MasterProc, require_root, start_worker, wait_for};
use bramble_wire::PodPhase;
use bramble_wire::objects::ProcessState;

const SLEEPER: &str = r#"
[[pod]]
name = "sleeper"
labels = { app = "sleeper" }
[[pod.process]]
name = "main"
command = ["/bin/sh", "-c", "echo started in $(hostname); while true; do sleep 1; done"]
memory = "16Mi"
cpu = "100m"
"#;

fn running_pid(m: &MasterProc, name: &str) -> Option<u64> {
    let p = m.pod(name)?;
    match p.status.processes.first()?.state {
        ProcessState::Running { pid, .. } if p.status.phase == PodPhase::Running => {
            Some(pid.into())
        }
        _ => None,
    }
}

/// A process's start time (clock ticks after boot, `/proc/PID/stat` field 22): with the PID, it
/// names one process.
fn start_ticks(pid: u64) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name in parentheses: state is field 3, start time field 22.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn node_ready(m: &MasterProc, name: &str) -> bool {
    m.node_ready(name)
}

/// How many lines of the log at `path` contain all of `parts` (colours left out).
fn log_lines(path: &std::path::Path, parts: &[&str]) -> usize {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    no_colours(&log)
        .lines()
        .filter(|l| parts.iter().all(|p| l.contains(p)))
        .count()
}

/// `s` without ANSI colour sequences (`ESC [ ... m`), which the logs carry around fields.
fn no_colours(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
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

#[test]
fn apply_run_logs_survive_master_and_worker_restarts_delete() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("master");
    let mut m = MasterProc::start(
        &data,
        &["--heartbeat-interval", "500ms", "--node-grace", "3s"],
    );
    let state = tmp.path().join("n1");
    let mut w = start_worker(&m, "n1", &state, &[]);
    wait_for(Duration::from_secs(20), "node n1 Ready", || {
        node_ready(&m, "n1").then_some(())
    });
    let nodes = m.ok(&["get", "nodes"]);
    assert!(
        nodes.contains("v1(") || nodes.contains("v2("),
        "cgroup version shown: {nodes}"
    );

    let f = tmp.path().join("sleeper.toml");
    std::fs::write(&f, SLEEPER).unwrap();
    m.ok(&["apply", "-f", f.to_str().unwrap()]);
    let pid = wait_for(Duration::from_secs(20), "pod sleeper Running", || {
        running_pid(&m, "sleeper")
    });
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    let logs = wait_for(Duration::from_secs(10), "logs", || {
        let l = m.ok(&["logs", "sleeper"]);
        l.contains("started in sleeper").then_some(l)
    });
    assert!(logs.contains("started in sleeper"), "{logs}");

    // kill -9 the master: the pod keeps running through the worker's reaction to the loss (its
    // session ends, it goes on redialling); after a restart the master and node resync.
    let worker_log = state.with_extension("worker.log");
    let lost = ["reconnecting in"];
    let before = log_lines(&worker_log, &lost);
    let addr = m.addr.clone();
    m.proc.kill9();
    wait_for(
        Duration::from_secs(30),
        "the worker to notice the master's loss",
        || (log_lines(&worker_log, &lost) > before).then_some(()),
    );
    assert!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "pod died with the master"
    );
    let m = MasterProc::start_on(
        &data,
        &addr,
        &["--heartbeat-interval", "500ms", "--node-grace", "3s"],
    );
    wait_for(Duration::from_secs(30), "node n1 Ready again", || {
        node_ready(&m, "n1").then_some(())
    });
    assert_eq!(
        running_pid(&m, "sleeper"),
        Some(pid),
        "the pod was restarted across a master restart"
    );

    // Restart the worker (kill -9): the running pod is re-adopted, not restarted.
    let ticks = start_ticks(pid);
    assert!(ticks.is_some(), "pod process {pid} not found");
    w.kill9();
    assert!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "pod died with the worker"
    );
    let adopted = ["re-adopted running pod", "pod=sleeper"];
    let before = log_lines(&worker_log, &adopted);
    let _w2 = start_worker(&m, "n1", &state, &[]);
    // The new worker's own word that it took the running pod over (a worker that started the
    // pod afresh never says so).
    wait_for(
        Duration::from_secs(30),
        "the new worker to re-adopt the pod",
        || (log_lines(&worker_log, &adopted) > before).then_some(()),
    );
    wait_for(
        Duration::from_secs(20),
        "node n1 Ready after worker restart",
        || node_ready(&m, "n1").then_some(()),
    );
    assert_eq!(
        running_pid(&m, "sleeper"),
        Some(pid),
        "the worker restarted the pod instead of adopting it"
    );
    // The master's view could be the one from before the restart: the process itself is the
    // judge (same PID, same start time).
    assert_eq!(
        start_ticks(pid),
        ticks,
        "the pod's process {pid} is gone or another one: the worker did not adopt the pod"
    );

    // Delete: the process is gone.
    m.ok(&["delete", "pod", "sleeper"]);
    wait_for(Duration::from_secs(20), "pod process gone", || {
        (!std::path::Path::new(&format!("/proc/{pid}")).exists()).then_some(())
    });
}

#[test]
fn bramble_up_runs_the_demo() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let port = bramble_tests::free_port();
    let out = std::process::Command::new(bramble_tests::bin("bramble"))
        .args([
            "up",
            "--exit-after-demo",
            // The test runs in this machine's own network: leave its tables and links alone.
            "--service-proxy",
            "userspace",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(tmp.path())
        .output()
        .unwrap();
    bramble_tests::remove_cgroup_tree(&format!("bramble-up-{port}"));
    // The demo pod has its own network: its worker made the default pod bridge here (not
    // `bramble-worker --cleanup`: it would also take the veths of other tests' pods).
    let _ = std::process::Command::new("ip")
        .args(["link", "del", "bramble0"])
        .status();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bramble up failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("hello from hello"), "{stdout}");
    assert!(stdout.contains("memory limit: 33554432"), "{stdout}");
}

/// Rewrites a file the new build wrote into the previous build's format: version 0, the bytes
/// of version 1 without its `bramble <kind> v1` header line (version 1 as the previous build
/// wrote it: `persist::previous_format`, pinned against fixtures captured from the previous
/// builds' writers in `worker/tests/state_upgrade.rs`).
fn to_previous_format(path: &std::path::Path, kind: bramble_worker::persist::Kind) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let v1 = bramble_worker::persist::previous_format(kind, &bytes)
        .unwrap_or_else(|| panic!("{} is not a current {} file", path.display(), kind.name));
    let header = format!("bramble {} v1\n", kind.name);
    let old = v1
        .strip_prefix(header.as_bytes())
        .expect("a version 1 header");
    std::fs::write(path, old).unwrap();
}

// Its node has a name of its own: tests of one binary share a cgroup parent per node name.
#[test]
fn an_upgraded_worker_keeps_its_pods_from_state_in_the_previous_format() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("master");
    let flags = ["--heartbeat-interval", "500ms", "--node-grace", "3s"];
    let mut m = MasterProc::start(&data, &flags);
    let state = tmp.path().join("u1");
    let mut w = start_worker(&m, "u1", &state, &[]);
    wait_for(Duration::from_secs(20), "node u1 Ready", || {
        node_ready(&m, "u1").then_some(())
    });
    let f = tmp.path().join("sleeper.toml");
    std::fs::write(&f, SLEEPER).unwrap();
    m.ok(&["apply", "-f", f.to_str().unwrap()]);
    let pid = wait_for(Duration::from_secs(20), "pod sleeper Running", || {
        running_pid(&m, "sleeper")
    });
    let ticks = start_ticks(pid);
    assert!(ticks.is_some(), "pod process {pid} not found");
    // The worker has saved its assignment and credential; stop it, and the master too (the
    // upgraded worker must keep its pods on its own: offline autonomy).
    let assignment = state.join("assignment.bin");
    wait_for(Duration::from_secs(10), "the assignment saved", || {
        std::fs::read(&assignment)
            .ok()
            .filter(|b| b.len() > 40)
            .map(|_| ())
    });
    w.kill9();
    let addr = m.addr.clone();
    m.proc.kill9();

    // The state as the previous build left it: every versioned file back to version 0.
    to_previous_format(&assignment, bramble_worker::persist::ASSIGNMENT);
    to_previous_format(
        &state.join("node.credential"),
        bramble_worker::persist::CREDENTIAL,
    );
    let pods = state.with_extension("run").join("pods");
    let pod_dirs: Vec<_> = std::fs::read_dir(&pods)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(pod_dirs.len(), 1, "{pod_dirs:?}");
    let pod_dir = &pod_dirs[0];
    to_previous_format(&pod_dir.join("config"), bramble_worker::persist::POD_CONFIG);
    to_previous_format(&pod_dir.join("status"), bramble_worker::persist::POD_STATUS);
    to_previous_format(&pod_dir.join("init"), bramble_worker::persist::POD_INIT);

    // The new build starts with no master: it must adopt the pod, not stop or restart it.
    let _w2 = start_worker(&m, "u1", &state, &[]);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        start_ticks(pid),
        ticks,
        "the pod's process {pid} is gone or another one: the upgraded worker did not keep it"
    );
    wait_for(Duration::from_secs(10), "the assignment migrated", || {
        std::fs::read(&assignment)
            .ok()
            .filter(|b| {
                let now = format!(
                    "bramble assignment v{}\n",
                    bramble_worker::persist::ASSIGNMENT_V
                );
                b.starts_with(now.as_bytes())
            })
            .map(|_| ())
    });

    // With the master back: the node reports the same process, never restarted.
    let m = MasterProc::start_on(&data, &addr, &flags);
    // The Hello reads the credential, and migrates it: the worker is connected.
    wait_for(Duration::from_secs(30), "the credential migrated", || {
        std::fs::read(state.join("node.credential"))
            .ok()
            .filter(|b| b.starts_with(b"bramble credential v1\n"))
            .map(|_| ())
    });
    wait_for(Duration::from_secs(30), "node u1 Ready again", || {
        node_ready(&m, "u1").then_some(())
    });
    let pod = wait_for(Duration::from_secs(20), "pod sleeper Running", || {
        m.pod("sleeper")
            .filter(|p| p.status.phase == PodPhase::Running)
    });
    let p = &pod.status.processes[0];
    assert!(
        matches!(p.state, ProcessState::Running { pid: got, .. } if u64::from(got) == pid),
        "{pod:?}"
    );
    assert_eq!(p.restarts, 0, "{pod:?}");
    assert_eq!(start_ticks(pid), ticks, "the pod's process was replaced");
}
