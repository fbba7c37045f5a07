//! Controllers with real binaries: a master and three workers on loopback (each worker with its
//! own runtime dir and cgroup parent), driven through the real CLI.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bramble_tests::{MasterProc, Proc, require_root, start_worker, wait_for};
use bramble_wire::objects::{Deployment, Job, JobPhase, Object, ProcessState};

const FAST: &[&str] = bramble_tests::FAST_EVICTION;

fn cluster(tmp: &std::path::Path, workers: &[&str]) -> (MasterProc, Vec<Proc>) {
    bramble_tests::start_cluster(tmp, FAST, workers)
}

/// Pods as (name, phase, node, running-since-ms) from `get pods -o json`.
fn pods(m: &MasterProc, selector: &str) -> Vec<(String, String, String, u64)> {
    m.pods(selector)
        .into_iter()
        .map(|p| {
            let since = match p.status.processes.first().map(|s| &s.state) {
                Some(ProcessState::Running { started_ms, .. }) => *started_ms,
                _ => 0,
            };
            (
                p.meta.name,
                p.status.phase.as_str().to_string(),
                p.spec.node_name.unwrap_or_default(),
                since,
            )
        })
        .collect()
}

fn get_deployment(m: &MasterProc, name: &str) -> Deployment {
    match m.one("deployment", name) {
        Some(Object::Deployment(d)) => d,
        other => panic!("deployment {name}: {other:?}"),
    }
}

fn job(m: &MasterProc, name: &str) -> Job {
    match m.one("job", name) {
        Some(Object::Job(j)) => j,
        other => panic!("job {name}: {other:?}"),
    }
}

fn running(m: &MasterProc, selector: &str) -> usize {
    pods(m, selector)
        .iter()
        .filter(|p| p.1 == "Running")
        .count()
}

fn apply(m: &MasterProc, dir: &std::path::Path, name: &str, text: &str) -> String {
    let f = dir.join(name);
    std::fs::write(&f, text).unwrap();
    m.ok(&["apply", "-f", f.to_str().unwrap()])
}

fn deployment(cmd: &str) -> String {
    format!(
        r#"
[[deployment]]
name = "web"
replicas = 6
max_surge = 1
max_unavailable = 1
[deployment.template]
labels = {{ app = "web" }}
[[deployment.template.process]]
name = "main"
command = ["/bin/sh", "-c", "{cmd}"]
memory = "8Mi"
"#
    )
}

#[test]
fn deployment_survives_a_worker_kill_and_rolls_forward_and_back() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let (m, mut ws) = cluster(tmp.path(), &["n1", "n2", "n3"]);
    apply(
        &m,
        tmp.path(),
        "v1.toml",
        &deployment("echo v1; exec sleep 1000"),
    );
    wait_for(Duration::from_secs(30), "6 running replicas", || {
        (running(&m, "app=web") == 6).then_some(())
    });
    let spread: BTreeMap<String, usize> =
        pods(&m, "app=web")
            .into_iter()
            .fold(BTreeMap::new(), |mut acc, p| {
                *acc.entry(p.2).or_default() += 1;
                acc
            });
    assert_eq!(
        spread.len(),
        3,
        "replicas spread over the three nodes: {spread:?}"
    );

    // SIGKILL one worker: after grace + eviction its pods are replaced on the others.
    ws[2].kill9();
    wait_for(
        Duration::from_secs(40),
        "6 running replicas on n1 and n2",
        || {
            let ps = pods(&m, "app=web");
            let ok = ps
                .iter()
                .filter(|p| p.1 == "Running" && p.2 != "n3")
                .count()
                == 6
                && ps.iter().all(|p| p.2 != "n3");
            ok.then_some(())
        },
    );
    assert!(m.node("n3").is_some_and(|n| !n.status.is_ready()));

    // Rolling update: never fewer than replicas - max_unavailable = 5 running pods.
    apply(
        &m,
        tmp.path(),
        "v2.toml",
        &deployment("echo v2; exec sleep 1000"),
    );
    let t0 = Instant::now();
    let mut min_running = usize::MAX;
    loop {
        let s = get_deployment(&m, "web").status;
        let done = s.updated == 6 && s.available == 6 && s.replicas == 6 && s.revision == 2;
        min_running = min_running.min(running(&m, "app=web"));
        if done {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(90),
            "rollout did not finish: {s:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        min_running >= 5,
        "availability dropped to {min_running} during the rollout"
    );
    let status = m.ok(&["rollout", "status", "deployment", "web"]);
    assert!(status.contains("successfully rolled out"), "{status}");
    let history = m.ok(&["rollout", "history", "deployment", "web"]);
    assert!(
        history.contains("echo v1") && history.contains("echo v2"),
        "{history}"
    );

    // Undo restores v1's template.
    m.ok(&["rollout", "undo", "deployment", "web"]);
    wait_for(Duration::from_secs(90), "rolled back to v1", || {
        let d = get_deployment(&m, "web");
        let cmd = &d.spec.template.spec.processes[0].command[2];
        let s = d.status;
        (cmd.contains("echo v1") && s.updated == 6 && s.available == 6 && s.replicas == 6)
            .then_some(())
    });
    // Scale down.
    m.ok(&["scale", "deployment", "web", "--replicas", "2"]);
    wait_for(Duration::from_secs(30), "2 replicas", || {
        (pods(&m, "app=web").len() == 2).then_some(())
    });
    m.ok(&["delete", "deployment", "web"]);
    wait_for(Duration::from_secs(30), "pods collected", || {
        pods(&m, "app=web").is_empty().then_some(())
    });
    let events = m.ok(&["get", "events"]);
    assert!(events.contains("Scheduled"), "{events}");
}

#[test]
fn daemonset_follows_nodes_and_job_retries() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let (m, mut ws) = cluster(tmp.path(), &["d1", "d2"]);
    apply(
        &m,
        tmp.path(),
        "ds.toml",
        r#"
[[daemonset]]
name = "agent"
[daemonset.template]
labels = { app = "agent" }
[[daemonset.template.process]]
name = "main"
command = ["/bin/sleep", "1000"]
"#,
    );
    wait_for(Duration::from_secs(30), "agent on d1 and d2", || {
        (running(&m, "app=agent") == 2).then_some(())
    });
    ws.push(start_worker(&m, "d3", &tmp.path().join("d3"), &[]));
    wait_for(Duration::from_secs(30), "agent follows d3", || {
        let ps = pods(&m, "app=agent");
        (ps.iter().filter(|p| p.1 == "Running").count() == 3 && ps.iter().any(|p| p.2 == "d3"))
            .then_some(())
    });
    let nodes: std::collections::BTreeSet<String> =
        pods(&m, "app=agent").into_iter().map(|p| p.2).collect();
    assert_eq!(nodes.len(), 3, "one pod per node");

    // A job whose first attempt fails succeeds within its backoff limit.
    // In a directory of its own, which the job's pods get as a host_path volume.
    let marker = tmp.path().join("job").join("attempted");
    std::fs::create_dir_all(marker.parent().unwrap()).unwrap();
    apply(
        &m,
        tmp.path(),
        "job.toml",
        &format!(
            r#"
[[job]]
name = "flaky"
completions = 1
backoff_limit = 2
[job.template]
labels = {{ job = "flaky" }}
restart_policy = "Never"
[[job.template.process]]
name = "main"
command = ["/bin/sh", "-c", "if [ -e {m} ]; then echo second try; exit 0; fi; touch {m}; echo first try fails; exit 3"]
[[job.template.volume]]
name = "marker"
mount_path = "{d}"
host_path = "{d}"
"#,
            m = marker.display(),
            d = marker.parent().unwrap().display()
        ),
    );
    wait_for(Duration::from_secs(60), "job complete", || {
        (job(&m, "flaky").status.phase == JobPhase::Complete).then_some(())
    });
    let st = job(&m, "flaky").status;
    assert_eq!((st.succeeded, st.failed), (1, 1), "{st:?}");
    let table = m.ok(&["get", "jobs"]);
    assert!(
        table.contains("flaky") && table.contains("Complete"),
        "{table}"
    );
}
