//! The whole path with the real binaries: `bramble` master + CLI and `bramble-worker` running
//! pods in namespaces and cgroups (root; this host's cgroup v1).

use std::time::Duration;

use bramble_tests::{MasterProc, json, require_root, start_worker, wait_for};

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

fn pod_json(m: &MasterProc, name: &str) -> Option<serde_json::Value> {
    let o = m.cli(&["get", "pod", name, "-o", "json"]);
    o.status
        .success()
        .then(|| json(&String::from_utf8_lossy(&o.stdout)))
}

fn running_pid(m: &MasterProc, name: &str) -> Option<u64> {
    let v = pod_json(m, name)?;
    if v["Pod"]["status"]["phase"] != "Running" {
        return None;
    }
    v["Pod"]["status"]["processes"][0]["state"]["Running"]["pid"].as_u64()
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
    m.cli(&["get", "node", name, "-o", "json"]).status.success()
        && m.ok(&["get", "nodes"])
            .lines()
            .any(|l| l.starts_with(name) && l.split_whitespace().nth(1) == Some("Ready"))
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
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(tmp.path())
        .output()
        .unwrap();
    bramble_tests::remove_cgroup_tree(&format!("bramble-up-{port}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bramble up failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("hello from hello"), "{stdout}");
    assert!(stdout.contains("memory limit: 33554432"), "{stdout}");
}
