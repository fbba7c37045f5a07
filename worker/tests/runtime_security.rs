//! A pod's security context for real (root, this host): capability sets as `/proc/self/status`
//! shows them, a non-root user binding port 80 with an added capability, users by name from the
//! root's `/etc/passwd`, `run_as_non_root`, and the `host_pid`, `host_ipc` and `privileged`
//! opt-outs.

mod runtime_support;

use std::time::Duration;

use bramble_wire::objects::{
    CapChanges, CapSet, ExitReason, IdRef, NetworkMode, PodPhase, Probe, ProbeAction, ProcessSpec,
    RestartPolicy,
};
use runtime_support::*;

fn status_field(out: &str, field: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:\t")))
        .unwrap_or_else(|| panic!("no {field} in {out}"))
        .trim()
        .to_string()
}

/// Runs `p` alone in pod `name` (changed by `f`) to completion; returns its output.
fn run(
    env: &Env,
    name: &str,
    p: ProcessSpec,
    f: impl FnOnce(&mut bramble_wire::objects::Pod),
) -> String {
    let mut pd = pod(name, vec![p.clone()], RestartPolicy::Never);
    f(&mut pd);
    let mut h = env.start(&pd);
    let st = wait_for(&h, 10, "completion", finished);
    let out = env.log(name, &p.name);
    assert_eq!(st.phase, PodPhase::Succeeded, "{st:?}\n{out}");
    h.stop(Duration::from_secs(1)).unwrap();
    out
}

const CAPS: &str = "grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb):' /proc/self/status";

#[test]
fn default_set_for_root_and_drop_all() {
    let env = Env::new("capdef");
    let out = run(&env, "capdef", process("caps", CAPS), |_| {});
    for f in ["CapBnd", "CapEff", "CapPrm"] {
        assert_eq!(status_field(&out, f), "00000000a80425fb", "{f}: {out}");
    }
    assert_eq!(status_field(&out, "CapAmb"), "0000000000000000", "{out}");

    let mut p = process("caps", CAPS);
    p.capabilities.drop = CapSet::ALL;
    let out = run(&env, "capnone", p, |_| {});
    for f in ["CapBnd", "CapEff", "CapPrm", "CapInh", "CapAmb"] {
        assert_eq!(status_field(&out, f), "0000000000000000", "{f}: {out}");
    }
}

#[test]
fn privileged_gets_every_capability_of_the_host() {
    let env = Env::new("capall");
    let host = std::fs::read_to_string("/proc/self/status").unwrap();
    let mut p = process("caps", CAPS);
    p.capabilities.drop = CapSet::ALL;
    let out = run(&env, "capall", p, |pd| pd.spec.privileged = true);
    assert_eq!(
        status_field(&out, "CapBnd"),
        status_field(&host, "CapBnd"),
        "{out}"
    );
    assert_eq!(
        status_field(&out, "CapEff"),
        status_field(&host, "CapBnd"),
        "{out}"
    );
}

#[test]
fn non_root_binds_port_80_only_with_an_added_capability() {
    let env = Env::new("bind80");
    let script = "grep -E '^Cap(Eff|Amb):' /proc/self/status; exec /usr/bin/python3 -c '
import socket
s = socket.socket()
try:
    s.bind((\"127.0.0.1\", 80))
    print(\"bound\")
except OSError as e:
    print(\"refused\", e.errno)
'";
    let mut p = process("web", script);
    p.user = Some(IdRef::Id(65534));
    p.group = Some(IdRef::Id(65534));
    p.capabilities = CapChanges {
        add: CapSet::parse("NET_BIND_SERVICE").unwrap(),
        drop: CapSet::EMPTY,
    };
    let none = |pd: &mut bramble_wire::objects::Pod| pd.spec.network = NetworkMode::None;
    let out = run(&env, "bind80", p.clone(), none);
    assert!(out.contains("bound"), "{out}");
    assert_eq!(status_field(&out, "CapEff"), "0000000000000400", "{out}");
    assert_eq!(status_field(&out, "CapAmb"), "0000000000000400", "{out}");

    // The same user without the explicit add: in the bounding set, not effective.
    p.capabilities = CapChanges::default();
    let out = run(&env, "nobind80", p, none);
    assert!(out.contains("refused 13"), "{out}");
    assert_eq!(status_field(&out, "CapEff"), "0000000000000000", "{out}");
}

#[test]
fn user_by_name_from_the_roots_passwd_and_probes_run_as_it() {
    let env = Env::new("byname");
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let nobody = passwd
        .lines()
        .find(|l| l.starts_with("nobody:"))
        .expect("this host's /etc/passwd has nobody");
    let uid = nobody.split(':').nth(2).unwrap().to_string();
    let gid = nobody.split(':').nth(3).unwrap().to_string();
    let mut p = process("who", "id -u; id -g; id -G; sleep 30");
    p.user = Some(IdRef::Name("nobody".into()));
    p.supplementary_groups = vec![IdRef::Id(4242)];
    // The exec probe runs as the same user.
    p.readiness = Some(Probe {
        action: ProbeAction::Exec(vec![
            "/bin/sh".into(),
            "-c".into(),
            format!("test \"$(id -u)\" = {uid}"),
        ]),
        period_ms: 100,
        ..Default::default()
    });
    let mut h = env.start(&pod("byname", vec![p], RestartPolicy::Never));
    let st = wait_for(&h, 10, "ready", |s| s.processes[0].ready);
    // Readiness does not wait for the output: on a loaded machine the probe can pass before
    // `id -G` printed.
    let give_up = std::time::Instant::now() + Duration::from_secs(10);
    let mut out = env.log("byname", "who");
    while out.lines().count() < 3 && std::time::Instant::now() < give_up {
        std::thread::sleep(Duration::from_millis(50));
        out = env.log("byname", "who");
    }
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[..lines.len().min(3)],
        [uid.as_str(), gid.as_str(), &format!("{gid} 4242")],
        "{out} {st:?}"
    );
    h.stop(Duration::from_secs(1)).unwrap();
}

#[test]
fn unresolved_names_and_run_as_non_root_fail_the_start_with_a_reason() {
    let env = Env::new("refuse");
    let mut p = process("main", "true");
    p.user = Some(IdRef::Name("no-such-user-here".into()));
    let mut h = env.start(&pod("ghost", vec![p], RestartPolicy::Never));
    let st = wait_for(&h, 10, "start failure", finished);
    assert_eq!(
        st.processes[0].last_exit,
        Some(ExitReason::StartFailed),
        "{st:?}"
    );
    let why = "user \"no-such-user-here\" not found in /etc/passwd of the pod's root";
    assert!(st.message.contains(why), "{st:?}");
    assert!(env.log("ghost", "main").contains(why));
    h.stop(Duration::from_secs(1)).unwrap();

    let mut p = process("main", "true");
    p.run_as_non_root = true;
    let mut h = env.start(&pod("rootish", vec![p], RestartPolicy::Never));
    let st = wait_for(&h, 10, "start failure", finished);
    assert_eq!(
        st.processes[0].last_exit,
        Some(ExitReason::StartFailed),
        "{st:?}"
    );
    assert!(st.message.contains("run_as_non_root is set"), "{st:?}");
    assert!(env.log("rootish", "main").contains("run_as_non_root"));
    h.stop(Duration::from_secs(1)).unwrap();
}

#[test]
fn host_pid_and_host_ipc_share_the_hosts_namespaces() {
    let env = Env::new("hostns");
    let me = std::process::id();
    let ipc = std::fs::read_link("/proc/self/ns/ipc").unwrap();
    let pidns = std::fs::read_link("/proc/self/ns/pid").unwrap();
    // An orphan (the backgrounded sleep, whose shell exits) goes to the init, which is not PID 1
    // here (a child subreaper), rather than to the host's init.
    let script = format!(
        "test -d /proc/{me} && echo sees-host; readlink /proc/self/ns/ipc /proc/self/ns/pid; \
         o=$(sh -c 'sleep 1 >/dev/null 2>&1 & echo $!'); sleep 0.2; \
         test \"$(awk '/^PPid:/ {{print $2}}' /proc/$o/status)\" = \"$PPID\" && echo adopted-by-init"
    );
    let out = run(&env, "hostns", process("look", &script), |pd| {
        pd.spec.host_pid = true;
        pd.spec.host_ipc = true;
    });
    assert!(out.contains("sees-host"), "{out}");
    assert!(out.contains("adopted-by-init"), "{out}");
    assert!(out.contains(&*ipc.to_string_lossy()), "{out}");
    assert!(out.contains(&*pidns.to_string_lossy()), "{out}");

    // Without the opt-outs: its own namespaces.
    let out = run(&env, "ownns", process("look", &script), |_| {});
    assert!(!out.contains("sees-host"), "{out}");
    assert!(out.contains("adopted-by-init"), "{out}");
    assert!(!out.contains(&*ipc.to_string_lossy()), "{out}");
}

#[test]
fn names_come_from_the_pods_own_root() {
    let env = Env::new("rootpw");
    // A busybox root whose /etc/passwd and /etc/group know users the host does not.
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    for d in ["bin", "etc", "proc", "tmp", "dev"] {
        std::fs::create_dir(r.join(d)).unwrap();
    }
    let bb = std::path::Path::new("/bin/busybox");
    assert!(
        bb.exists(),
        "/bin/busybox is missing: install Debian's busybox-static (./scripts/dev test does)"
    );
    std::fs::copy(bb, r.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", r.join("bin/sh")).unwrap();
    std::fs::write(
        r.join("etc/passwd"),
        "root:x:0:0:root:/:/bin/sh\nbramble-app:x:4321:4322::/:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(
        r.join("etc/group"),
        "root:x:0:\nbramble-grp:x:4322:\nbramble-extra:x:4400:bramble-app\n",
    )
    .unwrap();
    let mut p = process(
        "who",
        "/bin/busybox id -u; /bin/busybox id -g; /bin/busybox id -G",
    );
    p.user = Some(IdRef::Name("bramble-app".into()));
    p.supplementary_groups = vec![IdRef::Name("bramble-extra".into())];
    let rootfs = r.to_str().unwrap().to_string();
    let out = run(&env, "rootpw", p, |pd| {
        pd.spec.rootfs = Some(rootfs.clone())
    });
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..3], ["4321", "4322", "4322 4400"], "{out}");

    // The host's names are not the pod's: a user only the host has is not found.
    let mut p = process("who", "/bin/busybox id -u");
    p.user = Some(IdRef::Name("nobody".into()));
    let mut pd = pod("hostonly", vec![p], RestartPolicy::Never);
    pd.spec.rootfs = Some(rootfs);
    let mut h = env.start(&pd);
    let st = wait_for(&h, 10, "start failure", finished);
    assert_eq!(
        st.processes[0].last_exit,
        Some(ExitReason::StartFailed),
        "{st:?}"
    );
    assert!(
        st.message
            .contains("user \"nobody\" not found in /etc/passwd of the pod's root"),
        "{st:?}"
    );
    h.stop(Duration::from_secs(1)).unwrap();
}
