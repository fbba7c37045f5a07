//! Joining and revocation with the real binaries: `bramble-worker` joins with the join token,
//! keeps the credential the master issues, reconnects with it; a second worker of the same name is
//! refused; `bramble token revoke` cuts the node off. Root (the worker's cgroups).

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use bramble_tests::{MasterProc, plain, require_root, start_worker, wait_for, worker_log};

fn node_ready(m: &MasterProc, name: &str) -> bool {
    m.node_ready(name)
}

fn master_log(m: &MasterProc) -> String {
    plain(&m.log())
}

#[test]
fn worker_joins_keeps_its_credential_and_is_cut_off_when_revoked() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let m = MasterProc::start(
        &tmp.path().join("master"),
        &["--heartbeat-interval", "500ms", "--node-grace", "3s"],
    );
    let state = tmp.path().join("n1");
    let mut w = start_worker(&m, "n1", &state, &[]);
    wait_for(Duration::from_secs(20), "node n1 Ready", || {
        node_ready(&m, "n1").then_some(())
    });
    // The credential is on the worker's disk, private, and listed (without its secret).
    let cred_file = state.join("node.credential");
    // Read as the worker reads it (the file carries its format version).
    let cred = wait_for(Duration::from_secs(10), "the node credential file", || {
        bramble_worker::persist::read_text(bramble_worker::persist::CREDENTIAL, &cred_file)
    });
    let mode = std::fs::metadata(&cred_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let id = m.node_credential("n1").expect("n1's credential listed");
    assert!(cred.trim().starts_with(&format!("{id}.")));
    let secret = cred.trim().split_once('.').unwrap().1.to_string();
    assert!(!m.ok(&["token", "list"]).contains(&secret));

    // A restarted worker comes back with its credential (the join token would be refused now).
    w.terminate(Duration::from_secs(10));
    let mut w = start_worker(&m, "n1", &state, &[]);
    wait_for(Duration::from_secs(20), "n1 reconnected", || {
        (master_log(&m).matches("node connected node=n1").count() >= 2).then_some(())
    });
    assert!(
        !worker_log(&state).contains("rejected"),
        "{}",
        worker_log(&state)
    );

    // Another machine claiming the name with the join token is refused, with the fix.
    let impostor = tmp.path().join("impostor");
    let mut i = start_worker(&m, "n1", &impostor, &[]);
    let msg = wait_for(Duration::from_secs(20), "the impostor refused", || {
        worker_log(&impostor)
            .lines()
            .find(|l| l.contains("rejected"))
            .map(str::to_string)
    });
    assert!(
        msg.contains("n1 already joined") && msg.contains(&id),
        "{msg}"
    );
    i.terminate(Duration::from_secs(10));

    // Revocation cuts the node off at its next frame; it cannot reconnect.
    let out = m.ok(&["token", "revoke", &id]);
    assert!(out.contains(&format!("token/{id} revoked")), "{out}");
    let msg = wait_for(Duration::from_secs(20), "the worker refused", || {
        worker_log(&state)
            .lines()
            .find(|l| l.contains("rejected") && l.contains("revoked"))
            .map(str::to_string)
    });
    assert!(msg.contains(&id), "{msg}");
    assert!(master_log(&m).contains("was revoked: disconnecting the node"));
    w.terminate(Duration::from_secs(10));
    // The master's log holds no secret.
    assert!(!master_log(&m).contains(&secret));
}

#[test]
fn token_create_list_revoke_from_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let m = MasterProc::start(&tmp.path().join("master"), &[]);
    let o = m.cli(&["token", "create", "--ttl", "2h", "--description", "rack 2"]);
    assert!(o.status.success(), "{o:?}");
    let token = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let (id, secret) = token
        .rsplit_once("::")
        .map_or(token.as_str(), |x| x.1)
        .split_once('.')
        .unwrap();
    assert!(id.starts_with("join-") && secret.len() >= 32, "{token}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("shown only once"));
    let list = m.ok(&["token", "list"]);
    let line = list.lines().find(|l| l.starts_with(id)).expect("listed");
    assert!(
        line.contains("join") && line.contains(" in ") && line.contains("rack 2"),
        "{list}"
    );
    assert!(!list.contains(secret));
    assert!(m.ok(&["token", "revoke", id]).contains("revoked"));
    let o = m.cli(&["token", "revoke", "no-such"]);
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("bramble token list"));
    let o = m.cli(&["token", "create", "--ttl", "soon"]);
    assert!(!o.status.success());
}
