//! Names and history (issue 16, items 6 and 8), through the real binaries: a re-created pod of
//! the same name has its own logs and events, generated names never come back, `logs
//! --previous` shows a restarted process's last run, events survive a master restart and stay
//! bounded, and ports a node cannot give (a service port or a host port already taken) show up
//! as events in `describe` and `get events`.

use std::collections::HashSet;
use std::net::TcpListener;
use std::time::Duration;

use bramble_tests::{MasterProc, require_root, start_cluster, tail, wait_for, write_file};
use bramble_wire::objects::{Event, PodPhase};

fn pod_manifest(name: &str, command: &str) -> String {
    format!(
        r#"
[[pod]]
name = "{name}"
[[pod.process]]
name = "main"
command = ["/bin/sh", "-c", "{command}"]
"#
    )
}

fn running(m: &MasterProc, name: &str) -> bramble_wire::objects::Pod {
    wait_for(
        Duration::from_secs(30),
        &format!("pod {name} running"),
        || {
            m.pod(name)
                .filter(|p| p.status.phase == PodPhase::Running && !p.meta.uid.is_empty())
        },
    )
}

/// Before: logs were kept per pod name, so the re-created pod's log began with the deleted
/// pod's output, and its `Scheduled` event counted both pods (`Scheduled 2`).
#[test]
fn a_recreated_pod_has_its_own_logs_and_events() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let (m, _w) = start_cluster(tmp.path(), &[], &["n1"]);
    let dir = tmp.path();
    m.ok(&[
        "apply",
        "-f",
        &write_file(
            dir,
            "a.toml",
            &pod_manifest("echo", "echo first-pod; exec sleep 1000"),
        ),
    ]);
    let first = running(&m, "echo");
    m.wait_log(&["logs", "echo"], "first-pod");
    m.ok(&["delete", "pod", "echo"]);
    wait_for(Duration::from_secs(30), "pod echo gone", || {
        m.pod("echo").is_none().then_some(())
    });
    m.ok(&[
        "apply",
        "-f",
        &write_file(
            dir,
            "b.toml",
            &pod_manifest("echo", "echo second-pod; exec sleep 1000"),
        ),
    ]);
    let second = running(&m, "echo");
    assert_ne!(first.meta.uid, second.meta.uid);
    let log = m.wait_log(&["logs", "echo"], "second-pod");
    assert!(!log.contains("first-pod"), "the old pod's output: {log}");

    // Each pod its own events; `describe` shows the current pod's only.
    let scheduled: Vec<Event> = m
        .events()
        .into_iter()
        .filter(|e| e.object_name == "echo" && e.reason == "Scheduled")
        .collect();
    let uids: HashSet<&str> = scheduled.iter().map(|e| e.object_uid.as_str()).collect();
    assert_eq!(
        uids,
        HashSet::from([first.meta.uid.as_str(), second.meta.uid.as_str()]),
        "{scheduled:?}"
    );
    assert!(scheduled.iter().all(|e| e.count == 1), "{scheduled:?}");
    let d = m.ok(&["describe", "pod", "echo"]);
    let lines: Vec<&str> = d.lines().filter(|l| l.contains("Scheduled")).collect();
    assert_eq!(lines.len(), 1, "{d}");

    // A replica set's pods: every replacement gets a name never given before.
    m.ok(&[
        "apply",
        "-f",
        &write_file(
            dir,
            "d.toml",
            r#"
[[deployment]]
name = "web"
replicas = 1
[deployment.template]
labels = { app = "web" }
[[deployment.template.process]]
name = "main"
command = ["/bin/sh", "-c", "exec sleep 1000"]
"#,
        ),
    ]);
    let mut seen = HashSet::new();
    for round in 0..4 {
        let p = wait_for(Duration::from_secs(30), "a web pod running", || {
            m.pods("app=web")
                .into_iter()
                .find(|p| p.status.phase == PodPhase::Running && !seen.contains(&p.meta.name))
        });
        assert!(
            seen.insert(p.meta.name.clone()),
            "round {round}: {} came back",
            p.meta.name
        );
        m.ok(&["delete", "pod", &p.meta.name]);
    }
}

/// `bramble logs --previous`: the last run of a restarted process (one kept per process), the
/// current log only the current run's output.
#[test]
fn logs_previous_shows_the_last_run() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let (m, _w) = start_cluster(tmp.path(), &[], &["n1"]);
    // Each run prints its number (counted in the pod's private /tmp), then fails.
    let cmd = "n=$(cat /tmp/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /tmp/n; \
               echo run-$n; sleep 1; exit 1";
    m.ok(&[
        "apply",
        "-f",
        &write_file(tmp.path(), "p.toml", &pod_manifest("again", cmd)),
    ]);
    wait_for(Duration::from_secs(40), "two restarts", || {
        m.pod("again")
            .filter(|p| p.status.processes.first().is_some_and(|s| s.restarts >= 2))
    });
    let runs = |args: &[&str]| -> Vec<u32> {
        let out = bramble_tests::succeeded(args, m.cli(args));
        out.lines()
            .filter_map(|l| l.strip_prefix("run-")?.trim().parse().ok())
            .collect()
    };
    // A restart may land between the two reads: read again until they agree.
    let (cur, prev) = wait_for(Duration::from_secs(20), "logs and --previous agree", || {
        let cur = runs(&["logs", "again"]);
        let prev = runs(&["logs", "again", "--previous"]);
        (cur.len() == 1 && prev.len() == 1 && prev[0] + 1 == cur[0]).then_some((cur, prev))
    });
    // Two restarts happened: the current run is at least the second.
    assert!(cur[0] >= 2, "{prev:?} {cur:?}");
    // `--previous` of a pod that never restarted is empty, not an error.
    m.ok(&[
        "apply",
        "-f",
        &write_file(
            tmp.path(),
            "q.toml",
            &pod_manifest("steady", "echo up; exec sleep 1000"),
        ),
    ]);
    running(&m, "steady");
    m.wait_log(&["logs", "steady"], "up");
    assert_eq!(runs(&["logs", "steady", "--previous"]), Vec::<u32>::new());
}

/// Events are in the store: a master restart on the same data dir keeps them, and
/// `--max-events` bounds them. Before: events lived in memory and a restart lost them all.
#[test]
fn events_survive_a_master_restart_and_stay_bounded() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("master");
    let (mut m, _w) = start_cluster(tmp.path(), &["--max-events", "20"], &["n1"]);
    m.ok(&[
        "apply",
        "-f",
        &write_file(
            tmp.path(),
            "p.toml",
            &pod_manifest("kept", "exec sleep 1000"),
        ),
    ]);
    let pod = running(&m, "kept");
    let before = wait_for(Duration::from_secs(20), "the pod's events", || {
        let ev: Vec<Event> = m
            .events()
            .into_iter()
            .filter(|e| e.object_name == "kept")
            .collect();
        (ev.iter().any(|e| e.reason == "Started")).then_some(ev)
    });
    let addr = m.addr.clone();
    m.proc.terminate(Duration::from_secs(5));
    m = MasterProc::start_on(&data, &addr, &["--max-events", "20"]);
    let after: Vec<Event> = m
        .events()
        .into_iter()
        .filter(|e| e.object_name == "kept")
        .collect();
    for e in &before {
        assert!(
            after
                .iter()
                .any(|a| a.reason == e.reason && a.object_uid == pod.meta.uid),
            "{} lost in the restart: {after:?}",
            e.reason
        );
    }
    let d = m.ok(&["describe", "pod", "kept"]);
    assert!(d.contains("Scheduled") && d.contains("Started"), "{d}");

    // Thirty pods no node can take: a FailedScheduling event each, at most 20 kept.
    let mut many = String::new();
    for i in 0..30 {
        many.push_str(&format!(
            "[[pod]]\nname = \"nowhere-{i}\"\nnode_selector = {{ zone = \"mars\" }}\n\
             [[pod.process]]\nname = \"main\"\ncommand = [\"true\"]\n"
        ));
    }
    m.ok(&["apply", "-f", &write_file(tmp.path(), "many.toml", &many)]);
    wait_for(Duration::from_secs(30), "FailedScheduling events", || {
        let ev = m.events();
        (ev.iter().filter(|e| e.reason == "FailedScheduling").count() >= 15).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    let n = m.events().len();
    assert!(n <= 20, "{n} events kept with --max-events 20");
}

/// A service port and a host port something else on the node already holds: an event on the
/// service / the pod and on the node, in `describe` and `get events`. Before: only a line in
/// the agent's log.
#[test]
fn ports_taken_on_the_node_show_as_events() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let (m, _w) = start_cluster(tmp.path(), &[], &["n1"]);
    // Another program on the node holds two ports.
    let held_svc = TcpListener::bind("0.0.0.0:0").unwrap();
    let held_host = TcpListener::bind("0.0.0.0:0").unwrap();
    let (svc_port, host_port) = (
        held_svc.local_addr().unwrap().port(),
        held_host.local_addr().unwrap().port(),
    );
    m.ok(&[
        "apply",
        "-f",
        &write_file(
            tmp.path(),
            "c.toml",
            &format!(
                r#"
[[service]]
name = "web"
selector = {{ app = "web" }}
port = {svc_port}
target_port = 80

[[pod]]
name = "hp"
network = "host"
[[pod.process]]
name = "main"
command = ["/bin/sh", "-c", "exec sleep 1000"]
ports = [{host_port}]
"#
            ),
        ),
    ]);
    let conflict = |reason: &'static str, name: &'static str| {
        wait_for(
            Duration::from_secs(30),
            &format!("{reason} event about {name}"),
            || {
                m.events()
                    .into_iter()
                    .find(|e| e.reason == reason && e.object_name == name)
            },
        )
    };
    let svc = conflict("PortConflict", "web");
    assert!(
        svc.message.contains("node n1") && svc.message.contains(&svc_port.to_string()),
        "{svc:?}"
    );
    let hp = conflict("HostPortConflict", "hp");
    assert!(
        hp.message.contains(&format!("host port {host_port}/TCP")),
        "{hp:?}"
    );
    let d = m.ok(&["describe", "service", "web"]);
    assert!(d.contains("PortConflict"), "{d}");
    let d = m.ok(&["describe", "pod", "hp"]);
    assert!(d.contains("HostPortConflict"), "{d}");
    let d = m.ok(&["describe", "node", "n1"]);
    assert!(
        d.contains("PortConflict") && d.contains("HostPortConflict"),
        "{}",
        tail(&d, 3000)
    );
    let table = m.ok(&["get", "events"]);
    assert!(table.contains("PortConflict"), "{table}");
    // Reported once while it lasts: the event does not count up.
    std::thread::sleep(Duration::from_secs(3));
    let again = m
        .events()
        .into_iter()
        .find(|e| e.reason == "PortConflict" && e.object_name == "web")
        .unwrap();
    assert_eq!(again.count, 1, "{again:?}");
    drop((held_svc, held_host));
}
