//! Health probes through the whole path with the real binaries: manifest → master → worker →
//! pod init (which runs the probes inside the pod) → status → the CLI's READY, RESTARTS and
//! AVAILABLE columns (root; this host's cgroup v1).

use std::time::Duration;

use bramble_tests::{MasterProc, require_root, start_worker, wait_for};
use bramble_wire::PodPhase;
use bramble_wire::objects::{Object, Pod, ProcessState};

const MANIFEST: &str = r#"
[[pod]]
name = "gated"
labels = { app = "gated" }
[[pod.process]]
name = "main"
command = ["/bin/sh", "-c", "exec sleep 1000"]
readiness = { exec = ["/bin/sh", "-c", "echo >> DIR/gated.probes; test -e DIR/ready"], period = "200ms", timeout = "200ms" }
[[pod.volume]]
name = "shared"
mount_path = "DIR"
host_path = "DIR"

[[service]]
name = "gated"
selector = { app = "gated" }
port = 18080
target_port = 18081

[[pod]]
name = "hangs"
termination_grace = "500ms"
[[pod.process]]
name = "main"
command = ["/bin/sh", "-c", "touch DIR/healthy; if [ ! -e DIR/ran ]; then touch DIR/ran; sleep 0.5; rm DIR/healthy; echo hanging; fi; exec sleep 1000"]
liveness = { exec = ["test", "-e", "DIR/healthy"], period = "200ms", timeout = "200ms", failure_threshold = 2, initial_delay = "1s" }
[[pod.volume]]
name = "shared"
mount_path = "DIR"
host_path = "DIR"

[[deployment]]
name = "web"
replicas = 2
[deployment.template]
labels = { app = "web" }
network = "none"
[[deployment.template.process]]
name = "main"
command = ["python3", "-m", "http.server", "8080", "--bind", "127.0.0.1"]
readiness = { http = { port = 8080, path = "/" }, period = "200ms", timeout = "200ms" }
[[deployment.template.process]]
name = "gate"
command = ["/bin/sh", "-c", "exec sleep 1000"]
readiness = { exec = ["/bin/sh", "-c", "echo >> DIR/gate.probes; test -e DIR/web-ready"], period = "200ms", timeout = "200ms" }
[[deployment.template.volume]]
name = "shared"
mount_path = "DIR"
host_path = "DIR"
"#;

/// Pod `name`'s (processes running and ready, phase, restarts of all its processes).
fn pod_state(m: &MasterProc, name: &str) -> Option<(usize, PodPhase, u32)> {
    m.pod(name)
        .map(|p| (ready_processes(&p), p.status.phase, restarts(&p)))
}

/// How many of the pod's processes run and pass their readiness probe.
fn ready_processes(p: &Pod) -> usize {
    p.status
        .processes
        .iter()
        .filter(|s| s.ready && matches!(s.state, ProcessState::Running { .. }))
        .count()
}

fn restarts(p: &Pod) -> u32 {
    p.status.processes.iter().map(|s| s.restarts).sum()
}

/// Deployment `name`'s available pods.
fn available(m: &MasterProc, name: &str) -> Option<u32> {
    m.get("deployment", &[name])
        .into_iter()
        .find_map(|o| match o {
            Object::Deployment(d) => Some(d.status.available),
            _ => None,
        })
}

/// Counts of (ready, not ready) addresses in a service's endpoints.
fn endpoints(m: &MasterProc, name: &str) -> (usize, usize) {
    let e = m.endpoints(name).expect("the service's endpoints");
    (e.ready.len(), e.not_ready.len())
}

/// Waits until the readiness probe that counts its runs in `DIR/<name>.probes` ran `n` more
/// times.
fn probed(dir: &std::path::Path, name: &str, n: usize) {
    let file = dir.join(format!("{name}.probes"));
    let runs = || {
        std::fs::read_to_string(&file)
            .unwrap_or_default()
            .lines()
            .count()
    };
    let before = runs();
    wait_for(
        Duration::from_secs(30),
        &format!("{n} more runs of the {name} probe"),
        || (runs() >= before + n).then_some(()),
    );
}

#[test]
fn probes_gate_readiness_and_restart_hung_processes() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("shared");
    std::fs::create_dir(&dir).unwrap();
    let m = MasterProc::start(
        &tmp.path().join("master"),
        &["--heartbeat-interval", "500ms"],
    );
    let _w = start_worker(&m, "n1", &tmp.path().join("n1"), &[]);
    // The hung pod's health file exists before its first run (and its checks start a second
    // after each start), so no check fails before the script has done its part.
    std::fs::write(dir.join("healthy"), b"").unwrap();
    let f = tmp.path().join("probes.toml");
    std::fs::write(&f, MANIFEST.replace("DIR", dir.to_str().unwrap())).unwrap();
    m.ok(&["apply", "-f", f.to_str().unwrap()]);

    // A readiness probe holds the pod at READY 0/1 while it runs...
    wait_for(Duration::from_secs(30), "gated Running", || {
        pod_state(&m, "gated").filter(|r| r.1 == PodPhase::Running)
    });
    // Not a quiet spell but the probe itself: it ran and failed three more times, and the pod
    // is still unready.
    probed(&dir, "gated", 3);
    let r = pod_state(&m, "gated").unwrap();
    assert_eq!((r.0, r.1), (0, PodPhase::Running), "{r:?}");
    // ...and out of its service's endpoints.
    let ep = endpoints(&m, "gated");
    assert_eq!(ep.0, 0, "an unready pod is a ready endpoint: {ep:?}");
    assert_eq!(ep.1, 1, "the unready pod is listed as not ready: {ep:?}");
    // ...until its check passes.
    std::fs::write(dir.join("ready"), b"").unwrap();
    wait_for(Duration::from_secs(10), "gated READY 1/1", || {
        pod_state(&m, "gated").filter(|r| r.0 == 1)
    });
    wait_for(
        Duration::from_secs(10),
        "gated in its service's endpoints",
        || (endpoints(&m, "gated") == (1, 0)).then_some(()),
    );
    let d = m.ok(&["describe", "pod", "gated"]);
    assert!(
        d.contains("Readiness: exec /bin/sh -c ") && d.contains("every 200ms, timeout 200ms"),
        "{d}"
    );
    assert!(d.contains("Ready:     true"), "{d}");

    // A liveness probe restarts the process that hung; the new one stays up.
    let r = wait_for(Duration::from_secs(30), "hangs restarted", || {
        pod_state(&m, "hangs").filter(|r| r.2 != 0 && r.1 == PodPhase::Running)
    });
    assert_eq!(r.2, 1, "{r:?}");
    let logs = m.ok(&["logs", "hangs"]);
    assert!(logs.contains("hanging"), "{logs}");
    assert!(
        logs.contains("bramble: liveness probe failed 2 times: exec [\"test\", \"-e\""),
        "{logs}"
    );
    let d = m.ok(&["describe", "pod", "hangs"]);
    assert!(d.contains("Last exit: Signaled(15)"), "{d}");
    assert!(d.contains("Liveness:  exec test -e"), "{d}");

    // A deployment counts only ready pods available: each pod serves HTTP in its own network
    // (ready once it answers) next to a process that waits for a file.
    wait_for(Duration::from_secs(30), "web pods Running", || {
        let pods = m.pods("app=web");
        let running = pods.iter().filter(|p| p.status.phase == PodPhase::Running);
        (running.count() == 2).then_some(())
    });
    // Both pods' gate probes ran and failed three more times each.
    probed(&dir, "gate", 6);
    assert_eq!(available(&m, "web"), Some(0));
    wait_for(Duration::from_secs(20), "the web servers ready", || {
        let pods = m.pods("app=web");
        let half = pods
            .iter()
            .filter(|p| ready_processes(p) == 1 && p.spec.processes.len() == 2);
        (half.count() == 2).then_some(())
    });
    probed(&dir, "gate", 6);
    assert_eq!(
        available(&m, "web"),
        Some(0),
        "a pod with an unready process counted available"
    );
    std::fs::write(dir.join("web-ready"), b"").unwrap();
    wait_for(Duration::from_secs(10), "web available 2/2", || {
        (available(&m, "web") == Some(2)).then_some(())
    });
    m.ok(&["delete", "pod", "gated"]);
    m.ok(&["delete", "pod", "hangs"]);
    m.ok(&["delete", "deployment", "web"]);
}
