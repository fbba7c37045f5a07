//! What a node may claim, and who may join, with the real binaries (docs/security.md, "What a
//! node may claim"): a worker's `--labels` land under `node.bramble.io/`, never as admin labels a
//! selector trusts; `bramble label|annotate|cordon|uncordon`; a `[[node]]` manifest merges; a
//! revoked node stays out until deleted or given a token; join tokens with `--ttl` and `--uses`;
//! a second session with one node credential replaces the first. Root (the workers' cgroups).

use std::path::Path;
use std::time::Duration;

use bramble_tests::{
    MasterProc, Proc, plain, require_root, wait_for, wait_for_with, worker, worker_log,
};
use bramble_wire::objects::Node;

const FAST: &[&str] = &["--heartbeat-interval", "300ms", "--node-grace", "4s"];

fn node(m: &MasterProc, name: &str) -> Node {
    m.node(name)
        .unwrap_or_else(|| panic!("node {name} missing:\n{}", m.ok(&["get", "nodes"])))
}

fn label<'a>(n: &'a Node, k: &str) -> Option<&'a str> {
    n.meta.labels.get(k).map(String::as_str)
}

fn ready(m: &MasterProc, name: &str, state: &Path) {
    wait_for(
        Duration::from_secs(30),
        &format!("node {name} Ready"),
        || m.node_ready(name).then_some(()),
    );
    assert!(
        !worker_log(state).contains("rejected"),
        "{}",
        worker_log(state)
    );
}

fn apply(m: &MasterProc, dir: &Path, text: &str) -> String {
    let f = dir.join("manifest.toml");
    std::fs::write(&f, text).unwrap();
    m.ok(&["apply", "-f", f.to_str().unwrap()])
}

/// The first line of the worker's log saying the master refused it.
fn refusal(state: &Path) -> String {
    wait_for(Duration::from_secs(20), "the worker refused", || {
        worker_log(state)
            .lines()
            .find(|l| l.contains("rejected"))
            .map(str::to_string)
    })
}

/// A worker's `--labels` never become admin labels: a deployment for `zone=secure` nodes does
/// not land on a board that claims `zone=secure`; it lands where an admin labelled the node.
#[test]
fn a_node_cannot_claim_admin_labels_and_labels_pick_nodes() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let m = MasterProc::start(&tmp.path().join("master"), FAST);
    let (s1, s2) = (tmp.path().join("w1"), tmp.path().join("w2"));
    let _w1 = worker(&m, "w1", &s1)
        .args(&["--labels", "zone=secure,disk=ssd"])
        .start();
    let mut w2 = worker(&m, "w2", &s2).start();
    ready(&m, "w1", &s1);
    ready(&m, "w2", &s2);
    let n1 = node(&m, "w1");
    assert_eq!(label(&n1, "node.bramble.io/zone"), Some("secure"));
    assert_eq!(label(&n1, "node.bramble.io/disk"), Some("ssd"));
    assert_eq!(label(&n1, "zone"), None, "{:?}", n1.meta.labels);
    assert_eq!(label(&n1, "bramble.io/hostname"), Some("w1"));
    assert!(label(&n1, "bramble.io/arch").is_some());

    let out = apply(
        &m,
        tmp.path(),
        r#"
[[deployment]]
name = "vault"
replicas = 2
[deployment.template]
labels = { app = "vault" }
node_selector = { zone = "secure" }
[[deployment.template.process]]
name = "main"
command = ["/bin/sh", "-c", "sleep 600"]
memory = "8Mi"
"#,
    );
    assert!(out.contains("deployment/vault created"), "{out}");
    wait_for(Duration::from_secs(20), "2 vault pods", || {
        (m.pods("app=vault").len() == 2).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    for p in m.pods("app=vault") {
        assert_eq!(
            p.spec.node_name, None,
            "{} bound to a node claiming zone",
            p.meta.name
        );
    }

    // An admin labels w2: the selector picks it, and only it.
    assert_eq!(
        m.ok(&["label", "node", "w2", "zone=secure"]).trim(),
        "node/w2 labeled"
    );
    wait_for(Duration::from_secs(30), "vault pods on w2", || {
        let pods = m.pods("app=vault");
        (pods.len() == 2
            && pods
                .iter()
                .all(|p| p.spec.node_name.as_deref() == Some("w2")))
        .then_some(())
    });
    // kubectl's --overwrite rule, and removal.
    let o = m.cli(&["label", "node", "w2", "zone=dmz"]);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("--overwrite") && e.contains("zone=secure"),
        "{e}"
    );
    assert!(
        m.ok(&["label", "node", "w2", "zone=secure"])
            .contains("unchanged")
    );
    m.ok(&["label", "node", "w2", "rack=2", "team=ops"]);
    m.ok(&["label", "node", "w2", "rack-", "team=infra", "--overwrite"]);
    let n2 = node(&m, "w2");
    assert_eq!(label(&n2, "rack"), None);
    assert_eq!(label(&n2, "team"), Some("infra"));
    // The node's own tier is not an admin's to set.
    let o = m.cli(&["label", "node", "w2", "node.bramble.io/zone=x"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("reports about itself"));

    // w2 re-registers claiming another zone: its admin labels stay.
    w2.terminate(Duration::from_secs(10));
    let _w2 = worker(&m, "w2", &s2)
        .args(&["--labels", "zone=evil"])
        .start();
    wait_for(Duration::from_secs(30), "w2 re-registered", || {
        (label(&node(&m, "w2"), "node.bramble.io/zone") == Some("evil")).then_some(())
    });
    assert_eq!(label(&node(&m, "w2"), "zone"), Some("secure"));
    assert_eq!(label(&node(&m, "w2"), "team"), Some("infra"));

    // Annotations: free text, in describe, not used by selectors.
    m.ok(&["annotate", "node", "w1", "note=disk replaced 2026-12-01"]);
    let d = m.ok(&["describe", "node", "w1"]);
    assert!(d.contains("note=disk replaced 2026-12-01"), "{d}");
    m.ok(&["annotate", "deployment", "vault", "owner=ops"]);
    let o = m.cli(&["annotate", "deployment", "vault", "owner=dev"]);
    assert!(!o.status.success());
    m.ok(&[
        "annotate",
        "deployment",
        "vault",
        "owner=dev",
        "--overwrite",
    ]);
    assert!(
        m.ok(&["describe", "deployment", "vault"])
            .contains("owner=dev")
    );
    // A re-apply of the manifest keeps annotations it does not set.
    apply(
        &m,
        tmp.path(),
        "[[node]]\nname = \"w1\"\nunschedulable = true\nlabels = { rack = \"7\" }\n",
    );
    // Applying a [[node]] merges: nothing the node reported, nor the annotation, is wiped.
    let n1 = node(&m, "w1");
    assert!(n1.spec.unschedulable);
    assert_eq!(label(&n1, "rack"), Some("7"));
    assert_eq!(label(&n1, "node.bramble.io/zone"), Some("secure"));
    assert!(label(&n1, "bramble.io/arch").is_some());
    assert_eq!(
        n1.meta.annotations.get("note").map(String::as_str),
        Some("disk replaced 2026-12-01")
    );
    assert!(m.ok(&["uncordon", "w1"]).contains("node/w1 uncordoned"));
    assert!(!node(&m, "w1").spec.unschedulable);
    assert!(m.ok(&["cordon", "w1"]).contains("node/w1 cordoned"));
    assert!(m.ok(&["cordon", "w1"]).contains("unchanged"));
    assert!(node(&m, "w1").spec.unschedulable);
    assert!(m.ok(&["get", "nodes"]).contains("SchedulingDisabled"));

    // Deleting a connected node: its pods go (their replica set makes new ones, which wait for a
    // `zone=secure` node), its agent is told to stop them, its credential is deleted.
    let old: Vec<String> = m
        .pods("app=vault")
        .into_iter()
        .map(|p| p.meta.uid)
        .collect();
    assert!(m.ok(&["delete", "node", "w2"]).contains("node/w2 deleted"));
    assert!(plain(&m.log()).contains("node deleted: told its agent to stop its pods"));
    wait_for(
        Duration::from_secs(30),
        "vault pods replaced, unbound",
        || {
            let pods = m.pods("app=vault");
            (pods.len() == 2
                && pods
                    .iter()
                    .all(|p| !old.contains(&p.meta.uid) && p.spec.node_name.is_none()))
            .then_some(())
        },
    );
    assert_eq!(m.node_credential("w2"), None);
    assert!(m.node("w2").is_none());
}

/// A revoked node cannot come back with the original join token (a reflashed SD card) until an
/// admin deletes the node or creates a token for it.
#[test]
fn a_revoked_node_stays_out_until_deleted_or_given_a_token() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let m = MasterProc::start(&tmp.path().join("master"), FAST);
    let s = tmp.path().join("n1");
    let start = |state: &Path, token: Option<&Path>| -> Proc {
        let w = worker(&m, "n1", state);
        match token {
            Some(t) => w.token_file(t).start(),
            None => w.start(),
        }
    };
    let mut w = start(&s, None);
    ready(&m, "n1", &s);
    let id = m.node_credential("n1").expect("n1's credential");
    m.ok(&["token", "revoke", &id]);
    wait_for(Duration::from_secs(20), "n1 cut off", || {
        worker_log(&s).contains("revoked").then_some(())
    });
    w.terminate(Duration::from_secs(10));

    // The same board, reflashed: no credential, the SD card's join token.
    let s2 = tmp.path().join("n1-reflashed");
    let mut w = start(&s2, None);
    let msg = refusal(&s2);
    assert!(
        msg.contains(&format!("{id} was revoked")) && msg.contains("bramble delete node n1"),
        "{msg}"
    );
    w.terminate(Duration::from_secs(10));

    // An admin deletes the node: the name may join again.
    assert!(m.ok(&["delete", "node", "n1"]).contains("node/n1 deleted"));
    let s3 = tmp.path().join("n1-after-delete");
    let mut w = start(&s3, None);
    ready(&m, "n1", &s3);
    let id2 = m.node_credential("n1").expect("a new credential");
    assert_ne!(id, id2);

    // Revoked again: a token made for the node lets it back, once.
    m.ok(&["token", "revoke", &id2]);
    wait_for(Duration::from_secs(20), "n1 cut off again", || {
        worker_log(&s3).contains("revoked").then_some(())
    });
    w.terminate(Duration::from_secs(10));
    let o = m.cli(&["token", "create", "--node", "n1"]);
    assert!(o.status.success(), "{o:?}");
    let tok = tmp.path().join("n1.token");
    std::fs::write(&tok, &o.stdout).unwrap();
    let s4 = tmp.path().join("n1-with-token");
    let mut w = start(&s4, Some(&tok));
    ready(&m, "n1", &s4);
    w.terminate(Duration::from_secs(10));
    // A token for n1 admits no other name.
    let other = tmp.path().join("n9");
    let _i = worker(&m, "n9", &other).token_file(&tok).start();
    assert!(refusal(&other).contains("created for node \"n1\""));
}

/// `--uses N` and `--ttl`: a token admits N joins, and none after it expires.
#[test]
fn join_tokens_run_out_of_uses_and_expire() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let m = MasterProc::start(&tmp.path().join("master"), FAST);
    let token = |args: &[&str], name: &str| {
        let mut a = vec!["token", "create"];
        a.extend_from_slice(args);
        let o = m.cli(&a);
        assert!(o.status.success(), "{o:?}");
        let p = tmp.path().join(name);
        std::fs::write(&p, &o.stdout).unwrap();
        p
    };
    let once = token(&["--uses", "1"], "once.token");
    let brief = token(&["--ttl", "2s"], "brief.token");
    let list = m.ok(&["token", "list"]);
    assert!(list.contains("1 left"), "{list}");
    // The default lifetime of a new join token is 24 h.
    token(&[], "day.token");
    let list = m.ok(&["token", "list"]);
    assert!(list.contains("in 24h") || list.contains("in 23h"), "{list}");
    let sa = tmp.path().join("a");
    let _a = worker(&m, "a", &sa).token_file(&once).start();
    ready(&m, "a", &sa);
    let sb = tmp.path().join("b");
    let _b = worker(&m, "b", &sb).token_file(&once).start();
    assert!(refusal(&sb).contains("used up"));
    std::thread::sleep(Duration::from_secs(3));
    let sc = tmp.path().join("c");
    let _c = worker(&m, "c", &sc).token_file(&brief).start();
    assert!(refusal(&sc).contains("expired"));
    // The bootstrap join token stays valid until rotated; after `rotate-join` the file holds
    // a new one and the old one is refused.
    let old = std::fs::read_to_string(m.data_dir.join("join.token")).unwrap();
    let new = m.ok(&["token", "rotate-join"]);
    let on_disk = std::fs::read_to_string(m.data_dir.join("join.token")).unwrap();
    assert_eq!(new.trim(), on_disk.trim());
    assert_ne!(old.trim(), on_disk.trim());
    let stale = tmp.path().join("stale.token");
    std::fs::write(&stale, &old).unwrap();
    let sd = tmp.path().join("d");
    let _d = worker(&m, "d", &sd).token_file(&stale).start();
    assert!(refusal(&sd).contains("revoked"));
    let se = tmp.path().join("e");
    let _e = worker(&m, "e", &se).start();
    ready(&m, "e", &se);
}

/// Two agents with one node credential (a cloned state dir): the second session replaces the
/// first, which is told, closes and stops dialing; the node stays Ready, without flapping.
#[test]
fn a_second_session_replaces_the_first() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let m = MasterProc::start(&tmp.path().join("master"), FAST);
    let s1 = tmp.path().join("n1");
    let _w1 = worker(&m, "n1", &s1).start();
    ready(&m, "n1", &s1);
    let cred = s1.join("node.credential");
    wait_for(Duration::from_secs(10), "the credential file", || {
        cred.exists().then_some(())
    });
    let s2 = tmp.path().join("n1-clone");
    std::fs::create_dir_all(&s2).unwrap();
    std::fs::copy(&cred, s2.join("node.credential")).unwrap();
    let _w2 = worker(&m, "n1", &s2).start();
    let told = wait_for_with(
        Duration::from_secs(20),
        "the first agent told",
        || {
            worker_log(&s1)
                .lines()
                .find(|l| l.contains("replaced this session"))
                .map(str::to_string)
        },
        || {
            format!(
                "\nfirst:\n{}\nclone:\n{}\nmaster:\n{}",
                worker_log(&s1),
                worker_log(&s2),
                plain(&m.log())
            )
        },
    );
    assert!(
        told.contains("another agent connected as node n1") && told.contains("stopped dialing"),
        "{told}"
    );
    assert!(plain(&m.log()).contains("it replaces the first"));
    // No flapping: the clone keeps the session, the node stays Ready.
    let connects = || plain(&m.log()).matches("node connected node=n1").count();
    let before = connects();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(connects(), before, "{}", m.log());
    assert!(m.node_ready("n1"));
    assert!(!worker_log(&s2).contains("replaced"), "{}", worker_log(&s2));
}
