//! A pod's security context through the whole path with the real binaries (root; this host):
//! manifest → master (a namespace's `pod_security` level enforced at apply) → worker → pod init
//! (capabilities, users, `run_as_non_root`) → status → `describe` and `get pods -o wide`.

use std::time::Duration;

use bramble_tests::{MasterProc, require_root, start_worker, wait_for};
use bramble_wire::ExitReason;

const PODS: &str = r#"
[[pod]]
name = "rootish"
restart_policy = "Never"
network = "none"
[[pod.process]]
name = "main"
command = ["/bin/sh", "-c", "echo should-not-run"]
run_as_non_root = true

[[pod]]
name = "priv"
restart_policy = "Never"
network = "none"
privileged = true
host_pid = true
[[pod.process]]
name = "main"
command = ["/bin/sh", "-c", "grep -E '^Cap(Bnd|Eff):' /proc/self/status; sleep 1000"]

[[pod]]
name = "plain"
restart_policy = "Never"
network = "none"
[[pod.process]]
name = "main"
command = ["/bin/sh", "-c", "id -u; grep -E '^Cap(Bnd|Eff):' /proc/self/status; sleep 1000"]
user = "nobody"
capabilities = { drop = ["ALL"], add = ["NET_BIND_SERVICE"] }
"#;

const STRICT: &str = r#"
[[namespace]]
name = "strict"
pod_security = "baseline"
"#;

const PRIV_IN_STRICT: &str = r#"
[[pod]]
name = "root-shell"
namespace = "strict"
network = "none"
privileged = true
[[pod.process]]
name = "main"
command = ["/bin/sh", "-c", "sleep 1000"]
"#;

#[test]
fn security_context_runs_shows_and_is_enforced() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let m = MasterProc::start(
        &tmp.path().join("master"),
        &["--heartbeat-interval", "500ms"],
    );
    let _w = start_worker(&m, "n1", &tmp.path().join("n1"), &[]);
    let f = tmp.path().join("pods.toml");
    std::fs::write(&f, PODS).unwrap();
    m.ok(&["apply", "-f", f.to_str().unwrap()]);

    // run_as_non_root with root: refused at start, the reason in the status and in describe.
    let p = wait_for(Duration::from_secs(30), "rootish refused", || {
        m.pod("rootish").filter(|p| {
            p.status.processes.first().and_then(|s| s.last_exit) == Some(ExitReason::StartFailed)
        })
    });
    assert!(
        p.status.message.contains("run_as_non_root is set"),
        "{:?}",
        p.status
    );
    let d = m.ok(&["describe", "pod", "rootish"]);
    assert!(
        d.contains(
            "Message:     process \"main\" cannot start: run_as_non_root is set but no user is set"
        ),
        "{d}"
    );
    assert!(d.contains("    Security:  run_as_non_root"), "{d}");
    let log = m.ok(&["logs", "rootish"]);
    assert!(log.contains("cannot start main: run_as_non_root"), "{log}");
    assert!(!log.contains("should-not-run"), "{log}");

    // A privileged host_pid pod: every capability; a user by name with only an added one.
    let running = |name: &str, marker: &str| {
        wait_for(Duration::from_secs(30), &format!("{name} output"), || {
            let log = m.ok(&["logs", name]);
            log.contains(marker).then_some(log)
        })
    };
    let host = std::fs::read_to_string("/proc/self/status").unwrap();
    let bnd = host
        .lines()
        .find(|l| l.starts_with("CapBnd:"))
        .unwrap()
        .to_string();
    let log = running("priv", "CapEff");
    assert!(log.contains(&bnd), "{log}");
    let log = running("plain", "CapEff");
    assert!(log.starts_with("65534\n"), "{log}");
    assert!(log.contains("CapBnd:\t0000000000000400"), "{log}");
    assert!(log.contains("CapEff:\t0000000000000400"), "{log}");

    let wide = m.ok(&["get", "pods", "-o", "wide"]);
    let line = |name: &str| {
        wide.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in {wide}"))
            .to_string()
    };
    assert!(wide.lines().next().unwrap().contains("SECURITY"), "{wide}");
    // NAME READY STATUS RESTARTS NODE AGE IP SECURITY MESSAGE
    let security = |name: &str| line(name).split_whitespace().nth(7).map(String::from);
    assert_eq!(
        security("priv ").as_deref(),
        Some("privileged,host_pid"),
        "{wide}"
    );
    assert_eq!(security("plain ").as_deref(), Some("-"), "{wide}");
    let d = m.ok(&["describe", "pod", "priv"]);
    assert!(d.contains("Security:    privileged, host_pid"), "{d}");
    assert!(
        d.contains("    Security:  capabilities=ALL, seccomp=unconfined"),
        "{d}"
    );
    let d = m.ok(&["describe", "pod", "plain"]);
    assert!(d.contains("Security:    -"), "{d}");
    assert!(
        d.contains("    Security:  user=nobody, capabilities=NET_BIND_SERVICE"),
        "{d}"
    );

    // A baseline namespace refuses a privileged pod at apply, naming the fix.
    let ns = tmp.path().join("strict.toml");
    std::fs::write(&ns, STRICT).unwrap();
    m.ok(&["apply", "-f", ns.to_str().unwrap()]);
    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, PRIV_IN_STRICT).unwrap();
    let o = m.cli(&["apply", "-f", bad.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(7), "forbidden exits 7: {err}");
    assert!(
        err.contains("privileged = true is refused")
            && err.contains("namespace \"strict\" has pod_security = \"baseline\""),
        "{err}"
    );
    assert!(m.get("pods", &["-n", "strict"]).is_empty());
}
