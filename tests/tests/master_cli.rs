//! The real `bramble` binary against a real master on loopback (no worker needed).

use std::time::Duration;

use bramble_client::ClientError;
use bramble_tests::{MasterProc, json, wait_for};
use bramble_wire::msg::{ErrorCode, RequestBody, ResponseBody};
use bramble_wire::objects::{Kind, Meta, Object, Pod, PodSpec, ProcessSpec};

const POD: &str = r#"
[[pod]]
name = "hello"
labels = { app = "hello" }
restart_policy = "Never"
[[pod.process]]
name = "main"
command = ["/bin/sh", "-c", "echo hello; sleep 2"]
memory = "32Mi"
cpu = "250m"
"#;

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[test]
fn apply_get_describe_delete() {
    let tmp = tempfile::tempdir().unwrap();
    let m = MasterProc::start(&tmp.path().join("data"), &[]);
    let f = write(tmp.path(), "pod.toml", POD);
    assert_eq!(m.ok(&["apply", "-f", &f]).trim(), "pod/hello created");
    assert_eq!(m.ok(&["apply", "-f", &f]).trim(), "pod/hello unchanged");
    let table = m.ok(&["get", "pods"]);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(
        table.contains("hello") && table.contains("Pending") && table.contains("<none>"),
        "{table}"
    );
    // No nodes: the scheduler says why.
    let v = json(&m.ok(&["get", "pod", "hello", "-o", "json"]));
    assert_eq!(v["Pod"]["meta"]["name"], "hello");
    let msg = v["Pod"]["status"]["message"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(msg.is_empty() || msg.contains("0/0 nodes"), "{msg}");
    let d = m.ok(&["describe", "pod", "hello"]);
    assert!(d.contains("memory=32Mi") && d.contains("cpu=250m"), "{d}");
    // Selectors.
    assert!(m.ok(&["get", "pods", "-l", "app=hello"]).contains("hello"));
    let o = m.cli(&["get", "pods", "-l", "app=other"]);
    assert!(o.status.success());
    assert!(!String::from_utf8_lossy(&o.stdout).contains("hello"));
    // Namespaces.
    assert!(m.ok(&["get", "namespaces"]).contains("default"));
    assert_eq!(
        m.ok(&["delete", "pod", "hello"]).trim(),
        "pod/hello deleted"
    );
    let o = m.cli(&["get", "pod", "hello"]);
    assert_eq!(o.status.code(), Some(3), "not found exits 3");
    assert!(String::from_utf8_lossy(&o.stderr).contains("pod \"hello\" not found"));
}

#[test]
fn errors_name_the_problem_and_exit_codes_differ() {
    let tmp = tempfile::tempdir().unwrap();
    let m = MasterProc::start(&tmp.path().join("data"), &[]);
    // Unknown field: file, line and field.
    let f = write(
        tmp.path(),
        "bad.toml",
        "[[pod]]\nname = \"x\"\n[[pod.process]]\nname = \"m\"\ncommand = [\"/bin/true\"]\nmemroy = \"1Mi\"\n",
    );
    let o = m.cli(&["apply", "-f", &f]);
    assert_eq!(o.status.code(), Some(6), "invalid exits 6");
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("bad.toml") && e.contains("line 6") && e.contains("memroy"),
        "{e}"
    );
    // A pod in a namespace that does not exist.
    let f = write(
        tmp.path(),
        "ns.toml",
        "[[pod]]\nname = \"x\"\nnamespace = \"nope\"\n[[pod.process]]\nname = \"m\"\ncommand = [\"/bin/true\"]\n",
    );
    let o = m.cli(&["apply", "-f", &f]);
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stderr).contains("namespace \"nope\" does not exist"));
    // Changing a pod's spec is a conflict with the fix in the message.
    let f = write(tmp.path(), "p.toml", POD);
    m.ok(&["apply", "-f", &f]);
    let f2 = write(tmp.path(), "p2.toml", &POD.replace("32Mi", "64Mi"));
    let o = m.cli(&["apply", "-f", &f2]);
    assert_eq!(o.status.code(), Some(4), "conflict exits 4");
    assert!(String::from_utf8_lossy(&o.stderr).contains("bramble delete pod hello"));
    // Wrong token and no master.
    let o = std::process::Command::new(bramble_tests::bin("bramble"))
        .args(["get", "pods", "--server", "127.0.0.1:1"])
        .env("BRAMBLE_TOKEN_FILE", m.data_dir.join("admin.token"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(5), "connection failure exits 5");
    // The right pin (the master's certificate), the wrong credential.
    let good = std::fs::read_to_string(m.data_dir.join("admin.token")).unwrap();
    let pin = good.split("::").next().unwrap();
    let bad = write(
        tmp.path(),
        "bad.token",
        &format!("{pin}::0123456789abcdef0123"),
    );
    let o = std::process::Command::new(bramble_tests::bin("bramble"))
        .args(["get", "pods", "--server", &m.addr, "--token-file", &bad])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&o.stderr).contains("wrong admin token"));
    // Usage errors are clap's exit code 2.
    assert_eq!(m.cli(&["get"]).status.code(), Some(2));
    // A request over the master's frame limit is refused by the CLI with the fix, not reported
    // as an unreachable master; nothing is written.
    let big = "x".repeat(40 * 1024);
    let f = write(
        tmp.path(),
        "big.toml",
        &format!(
            "[[configmap]]\nname = \"a\"\ndata = {{ k = \"{big}\" }}\n[[configmap]]\nname = \"b\"\ndata = {{ k = \"{big}\" }}\n"
        ),
    );
    let o = m.cli(&["apply", "-f", &f]);
    assert_eq!(
        o.status.code(),
        Some(6),
        "too large a request is invalid input"
    );
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("over the master's") && e.contains("several files"),
        "{e}"
    );
    assert_eq!(m.cli(&["get", "configmap", "a"]).status.code(), Some(3));
}

#[test]
fn restart_keeps_everything() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut m = MasterProc::start(&data, &[]);
    let f = write(
        tmp.path(),
        "ns.toml",
        "[[namespace]]\nname = \"lab\"\n\n[[pod]]\nname = \"a\"\nnamespace = \"lab\"\n[[pod.process]]\nname = \"m\"\ncommand = [\"/bin/true\"]\n",
    );
    m.ok(&["apply", "-f", &f]);
    let before = m.ok(&["get", "pod", "a", "-n", "lab", "-o", "json"]);
    let addr = m.addr.clone();
    m.proc.terminate(Duration::from_secs(5));
    let m = MasterProc::start_on(&data, &addr, &[]);
    let after = m.ok(&["get", "pod", "a", "-n", "lab", "-o", "json"]);
    // Identity survives (the revision may move: the scheduler records why the pod waits).
    for field in ["uid", "created_ms", "name", "namespace"] {
        assert_eq!(
            json(&before)["Pod"]["meta"][field],
            json(&after)["Pod"]["meta"][field],
            "{field}"
        );
    }
    assert_eq!(json(&before)["Pod"]["spec"], json(&after)["Pod"]["spec"]);
    // Deleting the namespace takes everything in it along (a deployment too).
    let d = write(
        tmp.path(),
        "d.toml",
        "[[deployment]]\nname = \"d\"\nnamespace = \"lab\"\nreplicas = 1\n[deployment.template]\nlabels = { app = \"d\" }\n[[deployment.template.process]]\nname = \"m\"\ncommand = [\"/bin/true\"]\n",
    );
    m.ok(&["apply", "-f", &d]);
    m.ok(&["delete", "namespace", "lab"]);
    assert_eq!(
        m.cli(&["get", "pod", "a", "-n", "lab"]).status.code(),
        Some(3)
    );
    assert_eq!(
        m.cli(&["get", "deployment", "d", "-n", "lab"])
            .status
            .code(),
        Some(3)
    );
    // Garbage collection of what a controller was still making is asynchronous.
    wait_for(
        Duration::from_secs(10),
        "no pod left in the deleted namespace",
        || (!m.ok(&["get", "pods", "-A"]).contains(" lab ")).then_some(()),
    );
}

fn pod(name: &str) -> Object {
    Object::Pod(Pod {
        meta: Meta {
            name: name.into(),
            namespace: "default".into(),
            ..Default::default()
        },
        spec: PodSpec {
            processes: vec![ProcessSpec {
                name: "m".into(),
                command: vec!["/bin/true".into()],
                ..Default::default()
            }],
            ..Default::default()
        },
        ..Default::default()
    })
}

/// `kill -9` of the master during a stream of acknowledged writes loses none of them.
#[test]
fn kill9_during_writes_loses_no_acknowledged_write() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut acked: Vec<String> = Vec::new();
    let mut addr: Option<String> = None;
    for round in 0..12u32 {
        let mut m = match &addr {
            None => MasterProc::start(&data, &[]),
            Some(a) => MasterProc::start_on(&data, a, &[]),
        };
        addr = Some(m.addr.clone());
        // Every write acknowledged so far is there after the previous kill.
        let mut c = m.client();
        let listed = match smol::block_on(c.call(RequestBody::List {
            kind: Kind::Pod,
            namespace: None,
            selector: String::new(),
        }))
        .unwrap()
        {
            ResponseBody::List { items, .. } => items
                .iter()
                .map(|o| o.meta().name.clone())
                .collect::<std::collections::BTreeSet<_>>(),
            _ => panic!(),
        };
        for a in &acked {
            assert!(
                listed.contains(a),
                "round {round}: acknowledged pod {a} lost after kill -9"
            );
        }
        // Stream writes from a thread; kill -9 the master while they flow.
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let writer = std::thread::spawn(move || {
            for i in 0..10_000u32 {
                let name = format!("p{round}-{i}");
                match smol::block_on(c.call(RequestBody::Apply(vec![pod(&name)]))) {
                    Ok(_) => {
                        if tx.send(name).is_err() {
                            return;
                        }
                    }
                    Err(ClientError::Api(e)) if e.code == ErrorCode::Conflict => {}
                    Err(_) => return,
                }
            }
        });
        std::thread::sleep(Duration::from_millis(80 + u64::from(round * 37 % 200)));
        m.proc.kill9();
        writer.join().unwrap();
        acked.extend(rx.try_iter());
    }
    assert!(
        acked.len() > 20,
        "too few writes were acknowledged to prove anything: {}",
        acked.len()
    );
}

/// Hostile bytes close that connection with a reason and leave the master serving others.
#[test]
fn hostile_connections_do_not_hurt_the_master() {
    use std::io::{Read, Write};
    let tmp = tempfile::tempdir().unwrap();
    let m = MasterProc::start(&tmp.path().join("data"), &["--max-connections", "8"]);
    let attacks: [&[u8]; 4] = [
        &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff], // overlong varint
        &[0x80, 0x80, 0x80, 0x80, 0x04],       // a 1 GiB frame header
        &[0x03, 0x07, 0x07, 0x07],             // a Hello-sized frame of garbage
        &[0x02, 0x00],                         // truncated, then the peer goes away
    ];
    for bytes in attacks {
        let mut s = std::net::TcpStream::connect(&m.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        s.write_all(bytes).unwrap();
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut buf = Vec::new();
        // The master answers with a Reject or just closes; either way the read ends.
        let _ = s.read_to_end(&mut buf);
        assert!(
            buf.len() < 512,
            "the master answered garbage with {} bytes",
            buf.len()
        );
    }
    // More idle connections than the limit: the extra ones are refused, the master lives on.
    let idle: Vec<_> = (0..10)
        .map(|_| std::net::TcpStream::connect(&m.addr).unwrap())
        .collect();
    drop(idle);
    // Once the master has seen those connections close, it serves again.
    wait_for(Duration::from_secs(10), "the master serving again", || {
        let out = m.cli(&["get", "namespaces"]);
        (out.status.success() && String::from_utf8_lossy(&out.stdout).contains("default"))
            .then_some(())
    });
}
