//! Day-2 commands through the real binaries: Kubernetes-shaped `-o json|yaml|name|jsonpath`,
//! `apply -f` of JSON/YAML (the `get | apply` round trip), `edit`, `rollout status` and
//! `restart`, `get -w`, `logs -f` of a finished process, `completion`.

use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use bramble_tests::{MasterProc, bin, json, require_root, start_worker, wait_for};
use bramble_wire::objects::Object;

/// Runs the CLI, killed (by PID) if it is still running after `limit`: its output and how long
/// it ran.
fn bounded(m: &MasterProc, args: &[&str], limit: Duration) -> (Output, Duration) {
    let t0 = Instant::now();
    let mut child = std::process::Command::new(bin("bramble"))
        .args(args)
        .env("BRAMBLE_SERVER", &m.addr)
        .env("BRAMBLE_TOKEN_FILE", m.data_dir.join("admin.token"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run bramble");
    while child.try_wait().expect("wait").is_none() && t0.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let o = child.wait_with_output().expect("output");
    (o, t0.elapsed())
}

fn deployment(name: &str, cmd: &str, extra: &str) -> String {
    format!(
        r#"
[[deployment]]
name = "{name}"
replicas = 2
{extra}
[deployment.template]
labels = {{ app = "{name}" }}
[[deployment.template.process]]
name = "main"
command = ["/bin/sh", "-c", "{cmd}"]
memory = "16Mi"
"#
    )
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

const WEB: &str = r#"
[[deployment]]
name = "web"
replicas = 2
[deployment.template]
labels = { app = "web" }
[[deployment.template.process]]
name = "main"
command = ["/bin/sleep", "3600"]
memory = "16Mi"

[[configmap]]
name = "site"
data = { "index.html" = "<h1>hi</h1>" }

[[secret]]
name = "db"
data = { password = "hunter2" }
"#;

fn revision(m: &MasterProc, kind: &str, name: &str) -> u64 {
    m.one(kind, name)
        .unwrap_or_else(|| panic!("{kind} {name} missing"))
        .meta()
        .revision
}

/// The revision of `kind`/`name` once the controllers stopped writing it (equal over 500 ms).
fn settled(m: &MasterProc, kind: &str, name: &str) -> u64 {
    let mut last = revision(m, kind, name);
    wait_for(Duration::from_secs(20), "the controllers to settle", || {
        std::thread::sleep(Duration::from_millis(500));
        let now = revision(m, kind, name);
        let same = now == last;
        last = now;
        same.then_some(now)
    })
}

#[test]
fn documents_round_trip_through_get_apply_and_edit() {
    let tmp = tempfile::tempdir().unwrap();
    let m = MasterProc::start(&tmp.path().join("m"), &[]);
    let f = tmp.path().join("web.toml");
    std::fs::write(&f, WEB).unwrap();
    m.ok(&["apply", "-f", f.to_str().unwrap()]);

    // The Kubernetes shape: an object by name, a List otherwise (also of one).
    let one = json(&m.ok(&["get", "deployment", "web", "-o", "json"]));
    assert_eq!(one["apiVersion"], "bramble.io/v1", "{one}");
    assert_eq!(one["kind"], "Deployment");
    assert_eq!(one["metadata"]["name"], "web");
    assert_eq!(one["spec"]["replicas"], 2);
    assert!(one["status"].is_object(), "{one}");
    let list = json(&m.ok(&["get", "deployments", "-o", "json"]));
    assert_eq!(list["kind"], "List", "{list}");
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert_eq!(list["items"][0]["kind"], "Deployment");
    let none = json(&m.ok(&["get", "jobs", "-o", "json"]));
    assert_eq!(none["items"], serde_json::json!([]), "{none}");
    let yaml = m.ok(&["get", "deployment", "web", "-o", "yaml"]);
    assert!(
        yaml.contains("apiVersion: bramble.io/v1") && yaml.contains("kind: Deployment"),
        "{yaml}"
    );
    assert_eq!(m.ok(&["get", "deploy", "-o", "name"]), "deployment/web\n");
    assert_eq!(
        m.ok(&[
            "get",
            "cm",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name}:{.data['index.html']}{\"\\n\"}{end}"
        ]),
        "site:<h1>hi</h1>\n"
    );
    let rows = m.ok(&["get", "cm", "--no-headers"]);
    assert!(rows.starts_with("site"), "{rows}");
    let secret = m.ok(&["get", "secret", "db", "-o", "yaml"]);
    assert!(!secret.contains("hunter2"), "{secret}");

    // get -o yaml | apply -f -: a no-op, the revision unchanged; the same for JSON and a List.
    // (Read while the controllers still write the status, the document's revision may be old:
    // a no-op apply is no conflict.)
    let o = m.cli_with(&["apply", "-f", "-"], &yaml, &[]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "deployment/web unchanged\n",
        "{}",
        text(&o)
    );
    let rev = settled(&m, "deployment", "web");
    let yaml = m.ok(&["get", "deployment", "web", "-o", "yaml"]);
    let o = m.cli_with(&["apply", "-f", "-"], &yaml, &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "deployment/web unchanged\n"
    );
    let all = m.ok(&["get", "cm", "-o", "json"]);
    let o = m.cli_with(&["apply", "-f", "-"], &all, &[]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "configmap/site unchanged\n",
        "{}",
        text(&o)
    );
    assert_eq!(revision(&m, "deployment", "web"), rev);
    // A changed document is applied; another change made to the same read (its revision now
    // old) conflicts; the first again is a no-op.
    let changed = yaml.replace("replicas: 2", "replicas: 3");
    assert_ne!(changed, yaml);
    let o = m.cli_with(&["apply", "-f", "-"], &changed, &[]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "deployment/web configured\n",
        "{}",
        text(&o)
    );
    let o = m.cli_with(&["apply", "-f", "-"], &changed, &[]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "deployment/web unchanged\n",
        "{}",
        text(&o)
    );
    let other = yaml.replace("replicas: 2", "replicas: 7");
    let o = m.cli_with(&["apply", "-f", "-"], &other, &[]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("changed since revision"),
        "{}",
        text(&o)
    );
    // A hidden secret is refused rather than applied with the placeholders.
    let o = m.cli_with(&["apply", "-f", "-"], &secret, &[]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--reveal"),
        "{}",
        text(&o)
    );
    // A file by extension; a typo names its path.
    let y = tmp.path().join("typo.yaml");
    std::fs::write(
        &y,
        "apiVersion: bramble.io/v1\nkind: ConfigMap\nmetadata: { name: other }\ndta: {}\n",
    )
    .unwrap();
    let o = m.cli(&["apply", "-f", y.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("unknown field dta"),
        "{}",
        text(&o)
    );

    // edit: $EDITOR changes the YAML, the result is applied.
    let sed = "sed -i -e 's/replicas: 3/replicas: 4/'";
    let o = m.cli_with(&["edit", "deployment", "web"], "", &[("EDITOR", sed)]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "deployment/web configured\n",
        "{}",
        text(&o)
    );
    let Some(Object::Deployment(d)) = m.one("deployment", "web") else {
        panic!()
    };
    assert_eq!(d.spec.replicas, 4);
    // Nothing changed: cancelled, no write.
    let rev = settled(&m, "deployment", "web");
    let o = m.cli_with(&["edit", "deployment", "web"], "", &[("EDITOR", "true")]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("no changes"),
        "{}",
        text(&o)
    );
    assert_eq!(revision(&m, "deployment", "web"), rev);
    // Someone else writes while the editor is open: a conflict naming the object, the edit kept.
    let bramble = bin("bramble");
    let editor = format!(
        "{} scale deployment web --replicas 1 >/dev/null && sed -i -e 's/replicas: 4/replicas: 5/'",
        bramble.display()
    );
    let o = m.cli_with(&["edit", "deployment", "web"], "", &[("EDITOR", &editor)]);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        err.contains("deployment/web") && err.contains("changed since") && err.contains("kept in"),
        "{err}"
    );
    let kept = err
        .split("kept in ")
        .nth(1)
        .and_then(|r| r.split(':').next())
        .unwrap()
        .to_string();
    assert!(
        std::fs::read_to_string(&kept)
            .unwrap()
            .contains("replicas: 5")
    );
    let _ = std::fs::remove_file(&kept);
    let Some(Object::Deployment(d)) = m.one("deployment", "web") else {
        panic!()
    };
    assert_eq!(d.spec.replicas, 1, "the other writer's change stays");

    // Completion: bash completes the names of the cluster's objects after a kind.
    let script = m.ok(&["completion", "bash"]);
    let sh = format!(
        "{script}\nCOMP_WORDS=(\"$BRAMBLE\" get configmaps s); COMP_CWORD=3; _bramble_names; echo \"${{COMPREPLY[@]}}\"\n\
         COMP_WORDS=(\"$BRAMBLE\" rollout st); COMP_CWORD=2; _bramble_names \"$BRAMBLE\" st rollout; echo \"${{COMPREPLY[@]}}\"\n"
    );
    let o = std::process::Command::new("bash")
        .arg("-c")
        .arg(&sh)
        .env("BRAMBLE", bin("bramble"))
        .env("BRAMBLE_SERVER", &m.addr)
        .env("BRAMBLE_TOKEN_FILE", m.data_dir.join("admin.token"))
        .output()
        .unwrap();
    let lines: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(
        lines.first().map(String::as_str),
        Some("site"),
        "{}",
        text(&o)
    );
    assert!(
        lines.get(1).is_some_and(|l| l.contains("status")),
        "{}",
        text(&o)
    );
    for sh in ["zsh", "fish"] {
        assert!(m.ok(&["completion", sh]).contains("bramble"));
    }
    // get --help lists every kind.
    let help = m.ok(&["get", "--help"]);
    for k in [
        "namespaces",
        "nodes",
        "pods",
        "deployments",
        "replicasets",
        "daemonsets",
        "jobs",
        "events",
        "services",
        "endpoints",
        "configmaps",
        "secrets",
        "artifacts",
        "images",
        "registries",
    ] {
        assert!(help.contains(k), "{k}: {help}");
    }
}

#[test]
fn rollout_status_waits_for_the_new_revision_and_fails_a_stalled_one() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let m = MasterProc::start(&tmp.path().join("m"), &["--heartbeat-interval", "500ms"]);
    let _w = start_worker(&m, "n1", &tmp.path().join("n1"), &[]);
    wait_for(Duration::from_secs(30), "node n1 Ready", || {
        m.node_ready("n1").then_some(())
    });
    let apply = |name: &str, text: &str| {
        let f = tmp.path().join(name);
        std::fs::write(&f, text).unwrap();
        m.ok(&["apply", "-f", f.to_str().unwrap()])
    };
    apply("web.toml", &deployment("web", "exec sleep 3600", ""));
    let (o, _) = bounded(
        &m,
        &["rollout", "status", "deployment", "web", "--timeout", "60s"],
        Duration::from_secs(90),
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("successfully rolled out (revision 1)"),
        "{}",
        text(&o)
    );

    // apply && rollout status: waits for revision 2, not the finished revision 1.
    assert_eq!(
        apply("web2.toml", &deployment("web", "exec sleep 3601", "")),
        "deployment/web configured\n"
    );
    let (o, _) = bounded(
        &m,
        &["rollout", "status", "deployment", "web", "--timeout", "60s"],
        Duration::from_secs(90),
    );
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "{}", text(&o));
    assert!(out.contains("Waiting for"), "no progress line: {out}");
    assert!(
        out.trim_end()
            .ends_with("successfully rolled out (revision 2)"),
        "{out}"
    );
    // Done means done: every pod runs the new template and is ready, none of the old is left.
    let pods = m.pods("app=web");
    let live: Vec<_> = pods
        .iter()
        .filter(|p| p.status.phase.as_str() == "Running")
        .collect();
    assert_eq!(live.len(), 2, "{pods:?}");
    assert!(
        live.iter()
            .all(|p| p.spec.processes[0].command[2] == "exec sleep 3601"),
        "{pods:?}"
    );

    // rollout restart: every pod replaced (revision 3), the same spec; applying the manifest
    // again keeps the restart (no rollout back).
    let before: Vec<String> = m.pods("app=web").into_iter().map(|p| p.meta.uid).collect();
    assert_eq!(
        m.ok(&["rollout", "restart", "deployment", "web"]),
        "deployment/web restarted\n"
    );
    let (o, _) = bounded(
        &m,
        &["rollout", "status", "deployment", "web", "--timeout", "60s"],
        Duration::from_secs(90),
    );
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("successfully rolled out (revision 3)"),
        "{}",
        text(&o)
    );
    let after: Vec<_> = m
        .pods("app=web")
        .into_iter()
        .filter(|p| p.status.phase.as_str() == "Running")
        .collect();
    assert_eq!(after.len(), 2);
    assert!(
        after.iter().all(|p| !before.contains(&p.meta.uid)),
        "{after:?}"
    );
    assert!(
        after
            .iter()
            .all(|p| p.spec.processes[0].command[2] == "exec sleep 3601")
    );
    assert_eq!(
        apply("web2.toml", &deployment("web", "exec sleep 3601", "")),
        "deployment/web unchanged\n"
    );
    // Undo after a restart goes back to revision 2's replica set itself (revision 4), not a
    // new one with the restart stamp.
    let rs_before = m.get("replicasets", &[]).len();
    m.ok(&["rollout", "undo", "deployment", "web"]);
    let (o, _) = bounded(
        &m,
        &["rollout", "status", "deployment", "web", "--timeout", "60s"],
        Duration::from_secs(90),
    );
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("successfully rolled out (revision 4)"),
        "{}",
        text(&o)
    );
    assert_eq!(
        m.get("replicasets", &[]).len(),
        rs_before,
        "undo reuses a replica set"
    );
    // A daemon set's pod is replaced too.
    apply(
        "agent.toml",
        "[[daemonset]]\nname = \"agent\"\n[daemonset.template]\nlabels = { app = \"agent\" }\n\
         [[daemonset.template.process]]\nname = \"main\"\ncommand = [\"/bin/sh\", \"-c\", \"exec sleep 3600\"]\n",
    );
    let running_agent = || {
        m.pods("app=agent")
            .into_iter()
            .find(|p| p.status.phase.as_str() == "Running")
            .map(|p| p.meta.uid)
    };
    let first = wait_for(
        Duration::from_secs(60),
        "the agent pod running",
        running_agent,
    );
    assert_eq!(
        m.ok(&["rollout", "restart", "ds", "agent"]),
        "daemonset/agent restarted\n"
    );
    wait_for(Duration::from_secs(60), "a new agent pod running", || {
        running_agent().filter(|u| *u != first)
    });
    let o = m.cli(&["rollout", "restart", "job", "x"]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("daemon sets"));

    // A rollout that cannot progress (its pods exit at once, never available) fails at its
    // progress deadline, not at the timeout.
    apply(
        "stuck.toml",
        &deployment("stuck", "exit 3", "progress_deadline = \"3s\""),
    );
    let (o, took) = bounded(
        &m,
        &[
            "rollout",
            "status",
            "deployment",
            "stuck",
            "--timeout",
            "60s",
        ],
        Duration::from_secs(90),
    );
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("exceeded its progress deadline"),
        "{}",
        text(&o)
    );
    assert!(took < Duration::from_secs(30), "took {took:?}");
    // --timeout: non-zero, naming it.
    apply("slow.toml", &deployment("slow", "exit 3", ""));
    let (o, took) = bounded(
        &m,
        &["rollout", "status", "deployment", "slow", "--timeout", "2s"],
        Duration::from_secs(30),
    );
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("within 2s"),
        "{}",
        text(&o)
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");

    // logs -f of a process that ends: ends with it, with all its output.
    apply(
        "once.toml",
        "[[pod]]\nname = \"once\"\nrestart_policy = \"Never\"\n[[pod.process]]\nname = \"main\"\ncommand = [\"/bin/sh\", \"-c\", \"echo hello; sleep 2; echo bye\"]\n",
    );
    wait_for(Duration::from_secs(30), "pod once started", || {
        m.pod("once")
            .filter(|p| p.status.phase.as_str() != "Pending")
    });
    let (o, took) = bounded(&m, &["logs", "-f", "once"], Duration::from_secs(30));
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "hello\nbye\n",
        "{}",
        text(&o)
    );
    assert!(
        took < Duration::from_secs(15),
        "logs -f did not end with the process: {took:?}"
    );
    // Of a finished one: at once.
    let (o, took) = bounded(&m, &["logs", "-f", "once"], Duration::from_secs(30));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "hello\nbye\n",
        "{}",
        text(&o)
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[test]
fn get_watch_streams_changes_in_order_across_a_master_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("m");
    let mut m = MasterProc::start(&data, &[]);
    let lines_file = tmp.path().join("watch.jsonl");
    let rows_file = tmp.path().join("watch.txt");
    let spawn = |m: &MasterProc, args: &[&str], to: &std::path::Path| {
        std::process::Command::new(bin("bramble"))
            .args(args)
            .env("BRAMBLE_SERVER", &m.addr)
            .env("BRAMBLE_TOKEN_FILE", m.data_dir.join("admin.token"))
            .stdout(std::fs::File::create(to).unwrap())
            .stderr(std::fs::File::create(to.with_extension("err")).unwrap())
            .spawn()
            .expect("run bramble")
    };
    let cm = |name: &str, v: &str| {
        format!("[[configmap]]\nname = \"{name}\"\ndata = {{ k = \"{v}\" }}\n")
    };
    let apply = |m: &MasterProc, text: &str| {
        let f = tmp.path().join("cm.toml");
        std::fs::write(&f, text).unwrap();
        m.ok(&["apply", "-f", f.to_str().unwrap()]);
    };
    apply(&m, &cm("before", "0"));
    let mut json_watch = spawn(&m, &["get", "cm", "-w", "-o", "json"], &lines_file);
    let mut table_watch = spawn(&m, &["get", "cm", "--watch-only"], &rows_file);
    let events = || -> Vec<(String, String, String)> {
        std::fs::read_to_string(&lines_file)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let v = json(l);
                (
                    v["type"].as_str().unwrap_or("").to_string(),
                    v["object"]["metadata"]["name"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                    v["object"]["data"]["k"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    };
    let wait_events = |n: usize| {
        wait_for(
            Duration::from_secs(20),
            &format!("{n} watch events"),
            || {
                let e = events();
                (e.len() >= n).then_some(e)
            },
        )
    };
    wait_events(1);
    // Both watches are connected once the JSON one printed its list; the table one has no list
    // to show, so give it a moment to register.
    std::thread::sleep(Duration::from_millis(500));
    apply(&m, &cm("a", "1"));
    apply(&m, &cm("a", "2"));
    m.ok(&["delete", "cm", "a"]);
    wait_events(4);
    // The master restarts: the watches reconnect and resume after what they printed.
    let addr = m.addr.clone();
    m.proc.terminate(Duration::from_secs(5));
    m = MasterProc::start_on(&data, &addr, &[]);
    apply(&m, &cm("b", "3"));
    apply(&m, &cm("b", "4"));
    let got = wait_events(6);
    std::thread::sleep(Duration::from_millis(1000));
    let got_after = events();
    let _ = json_watch.kill();
    let _ = json_watch.wait();
    let _ = table_watch.kill();
    let _ = table_watch.wait();
    let want: Vec<(String, String, String)> = [
        ("ADDED", "before", "0"),
        ("ADDED", "a", "1"),
        ("MODIFIED", "a", "2"),
        ("DELETED", "a", "2"),
        ("ADDED", "b", "3"),
        ("MODIFIED", "b", "4"),
    ]
    .iter()
    .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
    .collect();
    assert_eq!(got, want);
    assert_eq!(got_after, want, "no row twice after the reconnect");
    let rows = std::fs::read_to_string(&rows_file).unwrap();
    let names: Vec<&str> = rows
        .lines()
        .map(|l| l.split_whitespace().next().unwrap_or(""))
        .collect();
    assert_eq!(names, ["NAME", "a", "a", "a", "b", "b"], "{rows}");
}

#[test]
fn up_stops_its_worker_on_its_own_sigterm_and_its_try_lines_work() {
    use std::io::BufRead;
    use std::os::unix::process::CommandExt;
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let port = bramble_tests::free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut up = std::process::Command::new(bin("bramble"))
        .args([
            "up",
            "--listen",
            &listen,
            "--service-proxy",
            "userspace",
            "--data-dir",
        ])
        .arg(tmp.path())
        .env_remove("BRAMBLE_SERVER")
        .env_remove("BRAMBLE_TOKEN_FILE")
        // Its own process group: a signal for `up` alone, not for a terminal's whole group.
        .process_group(0)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(tmp.path().join("up.log")).unwrap())
        .spawn()
        .expect("bramble up");
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = up.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    let t0 = Instant::now();
    while !lines
        .iter()
        .any(|l: &String| l.contains("serving until Ctrl-C"))
    {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(l) => lines.push(l),
            Err(_) if t0.elapsed() < Duration::from_secs(120) => {}
            Err(_) => {
                let _ = up.kill();
                panic!(
                    "bramble up did not come up: {lines:?}\n{}",
                    std::fs::read_to_string(tmp.path().join("up.log")).unwrap_or_default()
                );
            }
        }
    }
    let worker_pid: u32 = lines
        .iter()
        .find_map(|l| l.split("(pid ").nth(1))
        .and_then(|r| r.trim_end_matches(')').parse().ok())
        .expect("worker pid");
    // The "try:" lines work as printed (in a shell without bramble on PATH).
    let i = lines.iter().position(|l| l.starts_with("try:")).unwrap();
    let script = format!(
        "{}\n{}\n",
        lines[i].trim_start_matches("try:").trim(),
        lines[i + 1].trim()
    );
    let o = std::process::Command::new("sh")
        .arg("-ec")
        .arg(&script)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .output()
        .unwrap();
    assert!(o.status.success(), "{script}\n{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("hello"),
        "{}",
        text(&o)
    );

    // SIGTERM to `up` alone: it stops its worker and removes the worker's cgroup parent.
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &up.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let t0 = Instant::now();
    while up.try_wait().unwrap().is_none() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "bramble up still running"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !std::path::Path::new(&format!("/proc/{worker_pid}")).exists(),
        "the worker outlived bramble up"
    );
    let parent = format!("bramble-up-{port}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    for line in mounts.lines().filter(|l| l.contains(" - cgroup")) {
        let mp = line.split(' ').nth(4).unwrap();
        let dir = std::path::Path::new(mp).join(&parent);
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
    // The demo pod has its own network: its worker made the default pod bridge here (as in
    // worker_path's `bramble_up_runs_the_demo`).
    let _ = std::process::Command::new("ip")
        .args(["link", "del", "bramble0"])
        .status();
    // No colour codes in the log written to a file.
    let log = std::fs::read_to_string(tmp.path().join("up.log")).unwrap();
    assert!(!log.contains('\u{1b}'), "ANSI codes in a log file: {log}");
    assert!(!log.is_empty());
}
