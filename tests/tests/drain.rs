//! `bramble drain` through the real binaries: a master and three workers on loopback. A
//! deployment of 4 replicas (max_unavailable 1) and a daemon set; draining the node with the most
//! replicas keeps at least 3 available throughout (sampled from the pods and from the
//! deployment's status), leaves the daemon pod, places nothing new there; a bare pod makes drain
//! refuse without --force; a deployment pinned to the node times out naming its pod.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bramble_tests::{MasterProc, require_root, start_cluster, wait_for};
use bramble_wire::objects::{Object, Pod};

const FAST: &[&str] = bramble_tests::FAST_EVICTION;

fn apply(m: &MasterProc, dir: &std::path::Path, name: &str, text: &str) {
    let f = dir.join(name);
    std::fs::write(&f, text).unwrap();
    m.ok(&["apply", "-f", f.to_str().unwrap()]);
}

fn available(m: &MasterProc, name: &str) -> u32 {
    match m.one("deployment", name) {
        Some(Object::Deployment(d)) => d.status.available,
        other => panic!("deployment {name}: {other:?}"),
    }
}

fn ready(pods: &[Pod]) -> usize {
    pods.iter().filter(|p| p.status.is_ready()).count()
}

fn on(pods: &[Pod], node: &str) -> Vec<String> {
    pods.iter()
        .filter(|p| p.spec.node_name.as_deref() == Some(node))
        .map(|p| p.meta.name.clone())
        .collect()
}

const MANIFEST: &str = r#"
[[deployment]]
name = "web"
replicas = 4
max_surge = 1
max_unavailable = 1
min_ready = "1500ms"
[deployment.template]
labels = { app = "web" }
termination_grace = "1s"
[[deployment.template.process]]
name = "main"
command = ["/bin/sleep", "1000"]
memory = "8Mi"

[[daemonset]]
name = "agent"
[daemonset.template]
labels = { app = "agent" }
termination_grace = "1s"
[[daemonset.template.process]]
name = "main"
command = ["/bin/sleep", "1000"]
memory = "8Mi"
"#;

#[test]
fn drain_keeps_replicas_available_refuses_bare_pods_and_times_out() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let (m, _ws) = start_cluster(tmp.path(), FAST, &["n1", "n2", "n3"]);
    apply(&m, tmp.path(), "web.toml", MANIFEST);
    wait_for(
        Duration::from_secs(60),
        "4 web and 3 agent pods ready",
        || {
            (ready(&m.pods("app=web")) == 4
                && ready(&m.pods("app=agent")) == 3
                && available(&m, "web") == 4)
                .then_some(())
        },
    );

    // The node with the most replicas (4 over 3 nodes: at least 2).
    let web = m.pods("app=web");
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for p in &web {
        *per_node
            .entry(p.spec.node_name.clone().unwrap())
            .or_default() += 1;
    }
    let (node, n) = per_node.iter().max_by_key(|(_, n)| **n).unwrap();
    let node = node.clone();
    assert!(*n >= 2, "{per_node:?}");
    // By UID: a replacement may take the evicted pod's name.
    let before: Vec<String> = web.iter().map(|p| p.meta.uid.clone()).collect();

    // Drain, sampling availability meanwhile.
    let t0 = Instant::now();
    let (out, min_ready, min_status, strays, samples) = std::thread::scope(|s| {
        let h = s.spawn(|| m.cli(&["drain", &node, "--timeout", "2m"]));
        let (mut min_ready, mut min_status) = (usize::MAX, u32::MAX);
        let mut strays = Vec::new();
        let mut samples = 0;
        while !h.is_finished() {
            samples += 1;
            let pods = m.pods("app=web");
            min_ready = min_ready.min(ready(&pods));
            min_status = min_status.min(available(&m, "web"));
            // Nothing new lands on the cordoned node.
            for p in &pods {
                let here = p.spec.node_name.as_deref() == Some(node.as_str());
                if here && !before.contains(&p.meta.uid) && !strays.contains(&p.meta.name) {
                    strays.push(p.meta.name.clone());
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        (h.join().unwrap(), min_ready, min_status, strays, samples)
    });
    let took = t0.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        out.status.success(),
        "drain failed: {stdout}\n{stderr}\n{}",
        m.log()
    );
    eprintln!(
        "drained {node} ({n} web pods) in {took:?}; {samples} samples: min ready {min_ready}, min status.available {min_status}\n{stdout}"
    );
    assert!(
        min_ready >= 3,
        "ready web pods fell to {min_ready}\n{stdout}"
    );
    assert!(
        min_status >= 3,
        "status.available fell to {min_status}\n{stdout}"
    );
    assert!(
        strays.is_empty(),
        "new pods on the cordoned node: {strays:?}"
    );
    assert!(
        stdout.contains(&format!("node/{node} cordoned")),
        "{stdout}"
    );
    assert_eq!(
        stdout.matches("evicting pod default/web-").count(),
        *n,
        "{stdout}"
    );
    assert_eq!(stdout.matches("evicted").count(), *n, "{stdout}");
    assert!(
        stdout.contains("at least 3 must stay"),
        "waited for a replacement: {stdout}"
    );
    assert!(
        stdout.trim_end().ends_with(&format!("node/{node} drained")),
        "{stdout}"
    );
    assert!(m.node(&node).unwrap().spec.unschedulable);
    // Only the daemon pod is left there; the deployment is whole again elsewhere.
    assert!(on(&m.pods("app=web"), &node).is_empty());
    let agents = m.pods("app=agent");
    assert_eq!(on(&agents, &node).len(), 1, "the daemon pod stays");
    assert_eq!(ready(&agents), 3);
    wait_for(Duration::from_secs(30), "web whole again", || {
        (ready(&m.pods("app=web")) == 4).then_some(())
    });

    // A bare pod: refused without --force, naming it and the fix; deleted with it.
    m.ok(&["uncordon", &node]);
    apply(
        &m,
        tmp.path(),
        "solo.toml",
        &format!(
            r#"
[[pod]]
name = "solo"
node = "{node}"
termination_grace = "1s"
[[pod.process]]
name = "main"
command = ["/bin/sleep", "1000"]
memory = "8Mi"
"#
        ),
    );
    wait_for(Duration::from_secs(30), "solo ready", || {
        m.pod("solo").filter(|p| p.status.is_ready())
    });
    let out = m.cli(&["drain", &node, "--timeout", "30s"]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(6), "{stderr}");
    assert!(
        stderr.contains("default/solo") && stderr.contains("--force"),
        "{stderr}"
    );
    assert!(m.pod("solo").is_some(), "nothing deleted without --force");
    let out = m.ok(&["drain", &node, "--force", "--timeout", "30s"]);
    assert!(out.contains("evicting pod default/solo"), "{out}");
    assert!(out.contains("will not come back"), "{out}");
    assert!(m.pod("solo").is_none());
    assert_eq!(on(&m.pods("app=agent"), &node).len(), 1);

    // A deployment only this node can run: one pod is evicted, its replacement stays Pending,
    // the other must stay; --timeout fails naming it.
    m.ok(&["uncordon", &node]);
    apply(
        &m,
        tmp.path(),
        "pin.toml",
        &format!(
            r#"
[[deployment]]
name = "pin"
replicas = 2
max_unavailable = 1
[deployment.template]
labels = {{ app = "pin" }}
node_selector = {{ "bramble.io/hostname" = "{node}" }}
termination_grace = "1s"
[[deployment.template.process]]
name = "main"
command = ["/bin/sleep", "1000"]
memory = "8Mi"
"#
        ),
    );
    wait_for(Duration::from_secs(30), "2 pin pods ready", || {
        (ready(&m.pods("app=pin")) == 2).then_some(())
    });
    let t0 = Instant::now();
    let out = m.cli(&["drain", &node, "--timeout", "4s"]);
    let took = t0.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains("timed out"), "{stderr}");
    assert!(took < Duration::from_secs(20), "{took:?}");
    let pins = m.pods("app=pin");
    let left: Vec<&Pod> = pins.iter().filter(|p| p.status.is_ready()).collect();
    assert_eq!(left.len(), 1, "one pin pod stays available: {pins:?}");
    assert!(
        stderr.contains(&format!("default/{}", left[0].meta.name))
            && stderr.contains("deployment default/pin"),
        "names the pod left and why: {stderr}"
    );
    assert_eq!(
        stdout.matches("evicting pod default/pin-").count(),
        1,
        "{stdout}"
    );
}
