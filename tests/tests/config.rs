//! Config maps and secrets with the real binaries: volumes updated in place, `env_from`, pods
//! waiting for what they reference, secrets on a tmpfs only and never printed or logged, and the
//! `bramble create configmap|secret` round trip (root; this host's cgroup v1).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bramble_tests::{MasterProc, Unmount, json, require_root, start_worker, wait_for};
use bramble_wire::objects::Object;

/// A master and one worker named `node` (node names differ between tests: the harness derives
/// the pods' cgroup parent from the test process and the node name).
fn start(tmp: &Path, node: &str) -> (MasterProc, bramble_tests::Proc, PathBuf) {
    let m = MasterProc::start(
        &tmp.join("master"),
        &["--heartbeat-interval", "500ms", "--node-grace", "5s"],
    );
    let state = tmp.join(node);
    wait_for(Duration::from_secs(20), "the master's join token", || {
        m.data_dir.join("join.token").exists().then_some(())
    });
    let w = start_worker(&m, node, &state, &[]);
    let t = std::time::Instant::now();
    while !m.node_ready(node) {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "node {node} not Ready after 60 s; master {}; nodes: {}\nworker log: {}\nmaster log: {}",
            m.addr,
            m.ok(&["get", "nodes"]),
            std::fs::read_to_string(state.with_extension("worker.log")).unwrap_or_default(),
            m.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (m, w, state)
}

fn apply(m: &MasterProc, dir: &Path, name: &str, text: &str) -> String {
    let f = dir.join(name);
    std::fs::write(&f, text).unwrap();
    m.ok(&["apply", "-f", f.to_str().unwrap()])
}

fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The data of config map `name`.
fn config_map_data(m: &MasterProc, name: &str) -> BTreeMap<String, String> {
    match m.one("configmap", name) {
        Some(Object::ConfigMap(c)) => c.data,
        other => panic!("configmap {name}: {other:?}"),
    }
}

#[test]
fn configmap_volume_updates_in_place_env_from_and_missing_waits() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let (m, _w, state) = start(tmp.path(), "cm-node");
    let mnt = tmp.path().join("mnt").join("site");
    let mnt = mnt.to_str().unwrap();
    // The restart trigger in a directory of its own, which the pod gets as a host_path volume.
    let trigger = tmp.path().join("trigger").join("restart");
    std::fs::create_dir_all(trigger.parent().unwrap()).unwrap();
    let trig = trigger.to_str().unwrap();
    let trig_dir = trigger.parent().unwrap().to_str().unwrap();

    // The pod comes first: it waits, saying what is missing and how to create it.
    let pod = format!(
        r#"
[[pod]]
name = "web"
[[pod.process]]
name = "main"
command = ["/bin/sh", "-c", "echo env=$WEB_mode; touch {mnt}/x 2>/dev/null && echo writable || echo read-only; while true; do echo page=$(cat {mnt}/index.html); [ -e {trig} ] && rm {trig} && exit 0; sleep 0.2; done"]
env_from = [{{ configmap = "web-config", prefix = "WEB_" }}]
[[pod.volume]]
name = "site"
mount_path = "{mnt}"
configmap = "web-config"
[[pod.volume]]
name = "trigger"
mount_path = "{trig_dir}"
host_path = "{trig_dir}"
"#
    );
    apply(&m, tmp.path(), "pod.toml", &pod);
    let (phase, msg) = wait_for(Duration::from_secs(20), "pod web waiting", || {
        m.pod_status("web")
            .filter(|(_, msg)| msg.contains("not found"))
    });
    assert_eq!(phase, "Pending", "{msg}");
    assert!(
        msg.contains("config map \"web-config\" not found in namespace \"default\"")
            && msg.contains("bramble create configmap web-config"),
        "{msg}"
    );

    // Creating it starts the pod: the file and the environment are there, read-only.
    let out = m.ok(&[
        "create",
        "configmap",
        "web-config",
        "--from-literal",
        "index.html=v1",
        "--from-literal",
        "mode=fast",
    ]);
    assert!(out.contains("configmap/web-config created"), "{out}");
    let log = m.wait_log(&["logs", "web"], "page=v1");
    assert!(log.contains("env=fast"), "{log}");
    assert!(log.contains("read-only"), "{log}");

    // Creating it again is a conflict with a hint; --replace is how to overwrite.
    let o = m.cli(&["create", "cm", "web-config", "--from-literal", "a=b"]);
    assert_eq!(o.status.code(), Some(4), "exists: exit 4");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("already exists") && err.contains("--replace"),
        "{err}"
    );

    // `apply` of a changed config map reaches the mounted file in place (the pod keeps running).
    let phase_before = m.pod_status("web").unwrap();
    let out = apply(
        &m,
        tmp.path(),
        "cm.toml",
        "[[configmap]]\nname = \"web-config\"\ndata = { \"index.html\" = \"v2\", mode = \"slow\" }\n",
    );
    assert!(out.contains("configmap/web-config configured"), "{out}");
    m.wait_log(&["logs", "web"], "page=v2");
    assert_eq!(m.pod_status("web").unwrap().0, phase_before.0);
    let log = m.ok(&["logs", "web"]);
    assert_eq!(
        log.matches("env=").count(),
        1,
        "the process was not restarted: {log}"
    );
    // env_from is read when a process starts: its next restart sees the new value.
    assert!(!log.contains("env=slow"), "{log}");
    std::fs::write(&trigger, "").unwrap();
    m.wait_log(&["logs", "web"], "env=slow");

    // The atomic-writer layout on the node.
    let cm_root = state.with_extension("run").join("configmaps");
    let pod_dirs = entries(&cm_root);
    assert_eq!(pod_dirs.len(), 1, "{pod_dirs:?}");
    let vol = cm_root.join(&pod_dirs[0]).join("site");
    assert_eq!(
        std::fs::read_link(vol.join("index.html")).unwrap(),
        Path::new("..data/index.html")
    );
    assert_eq!(
        std::fs::read_to_string(vol.join("index.html")).unwrap(),
        "v2"
    );

    // --from-file round trip, PATH and PATH=KEY, then --replace.
    let page = tmp.path().join("page.html");
    std::fs::write(&page, "<h1>from a file</h1>\n").unwrap();
    let p = page.to_str().unwrap();
    m.ok(&[
        "create",
        "configmap",
        "files",
        "--from-file",
        p,
        "--from-file",
        &format!("{p}=other.html"),
    ]);
    let data = config_map_data(&m, "files");
    assert_eq!(data["page.html"], "<h1>from a file</h1>\n");
    assert_eq!(data["other.html"], "<h1>from a file</h1>\n");
    let out = m.ok(&[
        "create",
        "configmap",
        "files",
        "--from-literal",
        "k=v",
        "--replace",
    ]);
    assert!(out.contains("configmap/files replaced"), "{out}");
    let data = config_map_data(&m, "files");
    assert_eq!(data, [("k".to_string(), "v".to_string())].into());
    let table = m.ok(&["get", "configmaps"]);
    assert!(
        table.contains("web-config") && table.contains("files"),
        "{table}"
    );

    // Config maps near the size limit: an assignment carrying two of them is over the 64 KiB
    // client frame, and still reaches the node.
    let big = "x".repeat(40 * 1024);
    let (a, b) = (tmp.path().join("big-a"), tmp.path().join("big-b"));
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
    // (One object per apply: a request is one 64 KiB frame.)
    for name in ["big-a", "big-b"] {
        apply(
            &m,
            tmp.path(),
            "big.toml",
            &format!("[[configmap]]\nname = \"{name}\"\ndata = {{ k = \"{big}\" }}\n"),
        );
    }
    apply(
        &m,
        tmp.path(),
        "big.toml",
        &format!(
            r#"
[[pod]]
name = "big"
[[pod.process]]
name = "main"
command = ["/bin/sh", "-c", "echo sizes $(cat {a}/k | wc -c) $(cat {b}/k | wc -c); sleep 1000"]
[[pod.volume]]
name = "a"
mount_path = "{a}"
configmap = "big-a"
[[pod.volume]]
name = "b"
mount_path = "{b}"
configmap = "big-b"
"#
        ),
    );
    m.wait_log(&["logs", "big"], "sizes 40960 40960");
    m.ok(&["delete", "pod", "big"]);

    // The pod goes: so do its volumes.
    m.ok(&["delete", "pod", "web"]);
    wait_for(Duration::from_secs(20), "config volumes removed", || {
        entries(&cm_root).is_empty().then_some(())
    });
}

#[test]
fn secrets_stay_in_memory_hidden_and_mounted_on_tmpfs() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let (m, w, state) = start(tmp.path(), "secret-node");
    let secrets_fs = state.with_extension("run").join("secrets");
    let _unmount = Unmount(secrets_fs.clone());
    let mnt = tmp.path().join("creds");
    let mnt = mnt.to_str().unwrap();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    // The pod prints the value rot13'd, so its log (on the node's disk) holds no secret bytes.
    let marker = format!("swordfish-{nanos}-{}", std::process::id());
    let rot13 = |s: &str| -> String {
        s.chars()
            .map(|c| match c {
                'a'..='m' => (c as u8 + 13) as char,
                'n'..='z' => (c as u8 - 13) as char,
                _ => c,
            })
            .collect()
    };
    let manifest = format!(
        r#"
[[secret]]
name = "db"
data = {{ password = "{marker}" }}

[[configmap]]
name = "app"
data = {{ greeting = "hello" }}

[[pod]]
name = "app"
[[pod.process]]
name = "main"
command = ["/bin/sh", "-c", "echo env=$(echo $DB_password | tr a-z n-za-m) greeting=$greeting; echo mode=$(stat -L -c %a {mnt}/password); grep ' {mnt} ' /proc/self/mountinfo | sed 's/^/mount: /'; while true; do echo file=$(tr a-z n-za-m < {mnt}/password); sleep 0.2; done"]
env_from = [{{ secret = "db", prefix = "DB_" }}, {{ configmap = "app" }}]
[[pod.volume]]
name = "creds"
mount_path = "{mnt}"
secret = "db"
"#
    );
    apply(&m, tmp.path(), "app.toml", &manifest);
    let log = m.wait_log(&["logs", "app"], &format!("file={}", rot13(&marker)));
    assert!(
        log.contains(&format!("env={} greeting=hello", rot13(&marker))),
        "env_from from a secret and a config map: {log}"
    );
    assert!(log.contains("mode=400"), "secret files are 0400: {log}");
    let mount = log
        .lines()
        .find(|l| l.starts_with("mount: "))
        .unwrap_or_else(|| panic!("no mount line: {log}"));
    assert!(
        mount.contains(" - tmpfs "),
        "the secret volume is a tmpfs inside the pod: {mount}"
    );
    assert!(mount.contains(" ro,") || mount.contains(" ro "), "{mount}");
    let host_mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        host_mounts.lines().any(
            |l| l.contains(&format!(" {} ", secrets_fs.to_str().unwrap()))
                && l.contains(" - tmpfs ")
        ),
        "the worker mounted a tmpfs for secrets at {}",
        secrets_fs.display()
    );

    // An update reaches the file in place.
    let marker2 = format!("{marker}-two");
    apply(
        &m,
        tmp.path(),
        "secret.toml",
        &format!("[[secret]]\nname = \"db\"\ndata = {{ password = \"{marker2}\" }}\n"),
    );
    m.wait_log(&["logs", "app"], &format!("file={}", rot13(&marker2)));

    // Hidden unless revealed.
    let hidden = m.ok(&["get", "secret", "db", "-o", "json"]);
    assert!(
        !hidden.contains(&marker) && hidden.contains("hidden"),
        "{hidden}"
    );
    let all = m.ok(&["get", "secrets", "-o", "json"]);
    assert!(!all.contains(&marker), "{all}");
    let shown = json(&m.ok(&["get", "secret", "db", "-o", "json", "--reveal"]));
    assert_eq!(shown["data"]["password"], marker2.as_str());
    let described = m.ok(&["describe", "secret", "db"]);
    assert!(
        !described.contains(&marker) && described.contains("password"),
        "{described}"
    );
    let table = m.ok(&["get", "secrets"]);
    assert!(!table.contains(&marker) && table.contains("db"), "{table}");

    // No secret bytes on the worker's disk (state dir: assignment, logs) or in either log.
    let mut files = Vec::new();
    collect_files(&state, &mut files);
    assert!(!files.is_empty());
    for f in &files {
        let bytes = std::fs::read(f).unwrap_or_default();
        for mk in [&marker, &marker2] {
            assert!(
                !contains(&bytes, mk.as_bytes()),
                "secret bytes in {}",
                f.display()
            );
        }
    }
    let worker_log = std::fs::read(state.with_extension("worker.log")).unwrap();
    assert!(!contains(&worker_log, marker.as_bytes()), "worker log");
    assert!(
        !contains(m.log().as_bytes(), marker.as_bytes()),
        "master log"
    );

    // The pod goes: its secret files go with it.
    m.ok(&["delete", "pod", "app"]);
    wait_for(Duration::from_secs(20), "secret volumes removed", || {
        entries(&secrets_fs).is_empty().then_some(())
    });

    // A namespace takes its config maps and secrets along.
    apply(
        &m,
        tmp.path(),
        "ns.toml",
        "[[namespace]]\nname = \"team\"\n[[secret]]\nname = \"t\"\nnamespace = \"team\"\ndata = { k = \"v\" }\n[[configmap]]\nname = \"t\"\nnamespace = \"team\"\n",
    );
    m.ok(&["get", "secret", "t", "-n", "team"]);
    m.ok(&["delete", "namespace", "team"]);
    for kind in ["secret", "configmap"] {
        let o = m.cli(&["get", kind, "t", "-n", "team"]);
        assert_eq!(
            o.status.code(),
            Some(3),
            "{kind} deleted with its namespace"
        );
    }
    drop(w);
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => collect_files(&p, out),
            Ok(t) if t.is_file() => out.push(p),
            _ => {}
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}
