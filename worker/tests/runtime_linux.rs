//! The pod runtime for real: namespaces, cgroups (this host's v1, or v2), the pod init, restarts,
//! graceful stop, re-adoption, leaks. Needs root and cgroups: fails loudly without them.
//!
//! Every test uses its own cgroup parent under the test process's own cgroup, and a guard removes
//! it (killing what is left) also when the test fails.

mod runtime_support;

use std::time::{Duration, Instant};

use bramble_wire::objects::{ExitReason, NetworkMode, PodPhase, ProcessState, RestartPolicy};
use bramble_worker::runtime::{LinuxRuntime, PodNetwork};
use runtime_support::*;

#[test]
fn oom_kill_is_reported_as_oomkilled() {
    let env = Env::new("oom");
    let mut p = process(
        "hog",
        "exec /usr/bin/python3 -c 'b = bytearray(200 * 1024 * 1024); print(len(b))'",
    );
    p.resources.memory_bytes = Some(32 << 20);
    let mut h = env.start(&pod("oom", vec![p], RestartPolicy::Never));
    let st = wait_for(&h, 30, "the OOM kill", finished);
    assert_eq!(st.phase, PodPhase::Failed);
    assert_eq!(
        st.processes[0].last_exit,
        Some(ExitReason::OOMKilled),
        "{st:?}"
    );
    h.stop(Duration::from_secs(1)).unwrap();
}

#[test]
fn sigkill_without_oom_is_signaled() {
    let env = Env::new("kill9");
    let mut p = process("victim", "kill -KILL $$");
    p.resources.memory_bytes = Some(64 << 20);
    let mut h = env.start(&pod("kill9", vec![p], RestartPolicy::Never));
    let st = wait_for(&h, 10, "the exit", finished);
    assert_eq!(
        st.processes[0].last_exit,
        Some(ExitReason::Signaled(9)),
        "{st:?}"
    );
    h.stop(Duration::from_secs(1)).unwrap();
}

#[test]
fn fork_bomb_stops_at_pids_max() {
    let env = Env::new("bomb");
    // A bounded bomb: try 100 forks, keep every child alive, count what the kernel allowed.
    // (A shell bomb collapses on its first failed fork, sometimes between two samples.)
    let script = r#"exec /usr/bin/python3 -c '
import os, time
ok = failed = 0
for _ in range(100):
    try:
        if os.fork() == 0:
            time.sleep(60)
            os._exit(0)
        ok += 1
    except OSError:
        failed += 1
print("forked", ok, "refused", failed, flush=True)
time.sleep(60)
'"#;
    let mut p = process("bomb", script);
    p.resources.pids = Some(20);
    let mut h = env.start(&pod("bomb", vec![p], RestartPolicy::Never));
    let give_up = Instant::now() + Duration::from_secs(30);
    let out = loop {
        let out = env.log("bomb", "bomb");
        if out.contains("forked") {
            break out;
        }
        assert!(
            Instant::now() < give_up,
            "the bomb did not report in 30 s: {out:?} {:?}",
            h.status()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let nums: Vec<usize> = out
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    let (forked, refused) = (nums[0], nums[1]);
    // Every child is still alive, so the cgroup holds init + python + children.
    let tasks = env.rt.cgroups().pids(h.cgroup()).unwrap().len();
    eprintln!("pids=20 pod: forked {forked}, refused {refused}, {tasks} tasks in the cgroup");
    assert!(tasks <= 20, "saw {tasks} tasks in a pids=20 pod");
    assert!(
        forked + 2 <= 20,
        "forked {forked} children in a pids=20 pod"
    );
    assert!(forked >= 1 && refused >= 80, "{out}");
    h.stop(Duration::from_millis(100)).unwrap();
    assert!(!env.rt.cgroups().exists(h.cgroup()));
}

#[test]
fn cpu_limit_holds() {
    let env = Env::new("cpu");
    let mut p = process("spin", "while :; do :; done");
    p.resources.cpu_millis = Some(250);
    let mut h = env.start(&pod("cpu", vec![p], RestartPolicy::Never));
    wait_for(&h, 10, "running", |s| s.phase == PodPhase::Running);
    std::thread::sleep(Duration::from_millis(300));
    let (u0, t0) = (h.cpu_usage_ns(), Instant::now());
    std::thread::sleep(Duration::from_secs(2));
    let (u1, t1) = (h.cpu_usage_ns(), Instant::now());
    let share = (u1 - u0) as f64 / (t1 - t0).as_nanos() as f64;
    eprintln!("cpu share of a 250m pod: {:.1}% of one core", share * 100.0);
    assert!(
        share < 0.5,
        "a 250m pod used {:.0}% of a core",
        share * 100.0
    );
    assert!(share > 0.02, "the spinner did not run ({share})");
    h.stop(Duration::from_millis(100)).unwrap();
}

#[test]
fn pod_sees_its_own_pid_namespace_and_hostname() {
    let env = Env::new("ns");
    let script = "echo pid=$$ ppid=$PPID; echo host=$(hostname); \
                  echo procs=$(ls /proc | grep -c '^[0-9]'); ps -e -o pid=,comm=";
    let mut h = env.start(&pod(
        "nsview",
        vec![process("look", script)],
        RestartPolicy::Never,
    ));
    let st = wait_for(&h, 10, "completion", finished);
    assert_eq!(st.phase, PodPhase::Succeeded, "{st:?}");
    let out = env.log("nsview", "look");
    assert!(out.contains("pid=2 ppid=1"), "{out}");
    assert!(out.contains("host=nsview"), "{out}");
    // init, sh, ls, grep (and the subshell) at most: no host processes.
    let n: usize = out
        .split("procs=")
        .nth(1)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(n <= 6, "{n} processes visible: {out}");
    assert!(out.lines().any(|l| l.trim() == "1 bramble-worker"), "{out}");
    h.stop(Duration::from_secs(1)).unwrap();
}

#[test]
fn user_drop_and_no_new_privs() {
    let env = Env::new("user");
    let mut p = process(
        "who",
        "id -u; id -g; id -G; grep NoNewPrivs /proc/self/status",
    );
    p.user = Some(bramble_wire::objects::IdRef::Id(65534));
    p.group = Some(bramble_wire::objects::IdRef::Id(65534));
    let mut h = env.start(&pod("user", vec![p], RestartPolicy::Never));
    let st = wait_for(&h, 10, "completion", finished);
    assert_eq!(st.phase, PodPhase::Succeeded, "{st:?}");
    let out = env.log("user", "who");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..3], ["65534", "65534", "65534"], "{out}");
    assert!(lines[3].ends_with('1'), "{out}");
    h.stop(Duration::from_secs(1)).unwrap();
}

#[test]
fn network_none_has_only_loopback() {
    let env = Env::new("net");
    let mut pd = pod(
        "net",
        vec![process("ip", "ip -o link; cat /proc/net/dev")],
        RestartPolicy::Never,
    );
    pd.spec.network = NetworkMode::None;
    let mut h = env.start(&pd);
    let st = wait_for(&h, 10, "completion", finished);
    assert_eq!(st.phase, PodPhase::Succeeded, "{st:?}");
    let out = env.log("net", "ip");
    let links: Vec<&str> = out.lines().filter(|l| l.contains(": <")).collect();
    assert_eq!(links.len(), 1, "{out}");
    assert!(
        links[0].starts_with("1: lo:") && links[0].contains("UP"),
        "{out}"
    );
    h.stop(Duration::from_secs(1)).unwrap();
}

#[test]
fn restart_policies_and_start_failure() {
    let env = Env::new("restart");
    let mut h = env.start(&pod(
        "onfail",
        vec![process("fail", "exit 3")],
        RestartPolicy::OnFailure,
    ));
    let st = wait_for(&h, 10, "three restarts", |s| s.processes[0].restarts >= 3);
    assert_eq!(st.phase, PodPhase::Running);
    assert_eq!(st.processes[0].last_exit, Some(ExitReason::Error(3)));
    h.stop(Duration::from_secs(1)).unwrap();

    let mut h = env.start(&pod(
        "never",
        vec![process("fail", "exit 3")],
        RestartPolicy::Never,
    ));
    let st = wait_for(&h, 10, "failure", finished);
    assert_eq!(st.phase, PodPhase::Failed);
    assert_eq!(st.processes[0].restarts, 0);
    assert_eq!(st.processes[0].last_exit, Some(ExitReason::Error(3)));
    h.stop(Duration::from_secs(1)).unwrap();

    let mut h = env.start(&pod(
        "ok",
        vec![process("ok", "true")],
        RestartPolicy::OnFailure,
    ));
    let st = wait_for(&h, 10, "success", finished);
    assert_eq!(st.phase, PodPhase::Succeeded);
    h.stop(Duration::from_secs(1)).unwrap();

    let mut p = process("missing", "");
    p.command = vec!["no-such-command-here".into()];
    let mut h = env.start(&pod("missing", vec![p], RestartPolicy::Never));
    let st = wait_for(&h, 10, "start failure", finished);
    assert_eq!(
        st.processes[0].last_exit,
        Some(ExitReason::StartFailed),
        "{st:?}"
    );
    assert!(env.log("missing", "missing").contains("command not found"));
    h.stop(Duration::from_secs(1)).unwrap();
}

#[test]
fn graceful_stop_then_sigkill() {
    let env = Env::new("stop");
    let script = "trap 'echo got-term; exit 0' TERM; echo ready; while :; do sleep 0.05; done";
    let mut h = env.start(&pod(
        "polite",
        vec![process("main", script)],
        RestartPolicy::Always,
    ));
    wait_for(&h, 10, "ready", |_| {
        env.log("polite", "main").contains("ready")
    });
    let st = h.stop(Duration::from_secs(5)).unwrap();
    assert_eq!(
        st.processes[0].last_exit,
        Some(ExitReason::Completed),
        "{st:?}"
    );
    assert!(env.log("polite", "main").contains("got-term"));

    let script = "trap '' TERM; echo ready; while :; do sleep 0.05; done";
    let mut h = env.start(&pod(
        "stubborn",
        vec![process("main", script)],
        RestartPolicy::Always,
    ));
    wait_for(&h, 10, "ready", |_| {
        env.log("stubborn", "main").contains("ready")
    });
    let t = Instant::now();
    let st = h.stop(Duration::from_millis(300)).unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "stopped before the grace period"
    );
    assert_eq!(
        st.processes[0].last_exit,
        Some(ExitReason::Signaled(9)),
        "{st:?}"
    );
    assert!(!env.rt.cgroups().exists(h.cgroup()));
}

#[test]
fn readoption_keeps_the_same_processes() {
    let env = Env::new("adopt");
    let pd = pod(
        "keep",
        vec![process("main", "exec sleep 60")],
        RestartPolicy::Always,
    );
    let h = env.start(&pd);
    let st = wait_for(&h, 10, "running", |s| {
        matches!(s.processes[0].state, ProcessState::Running { .. })
    });
    let ProcessState::Running { pid, .. } = st.processes[0].state else {
        unreachable!()
    };
    let init = h.init_pid();
    assert_ne!(pid as i32, init);
    h.detach();

    // A new runtime, as after an agent restart.
    let rt2 = LinuxRuntime::new(config(env.state.path(), &env.parent)).unwrap();
    let mut adopted = rt2.adopt_existing().unwrap();
    assert_eq!(adopted.len(), 1);
    let mut h = adopted.pop().unwrap();
    assert_eq!(h.key().name, "keep");
    assert_eq!(h.init_pid(), init);
    let st = h.status();
    assert!(
        matches!(st.processes[0].state, ProcessState::Running { pid: p, .. } if p == pid),
        "{st:?}"
    );
    assert_eq!(st.processes[0].restarts, 0);
    h.stop(Duration::from_secs(2)).unwrap();
    assert!(rt2.adopt_existing().unwrap().is_empty());
}

#[test]
fn isolated_pods_get_addresses_on_the_node_bridge() {
    // This test thread moves to a network namespace of its own: the bridge, veth pairs and
    // addresses below never touch the host's network, and go away with the thread.
    bramble_worker::sys::podnet::unshare_net().expect("unshare(CLONE_NEWNET)");
    let env = Env::new("isolated");
    let serve = "exec /usr/bin/python3 -m http.server 8080 --bind 0.0.0.0";
    let mut web = pod("iso-web", vec![process("web", serve)], RestartPolicy::Never);
    web.spec.network = NetworkMode::Isolated;

    // Without a subnet from the master: refused, saying so.
    let err = env.rt.start_pod(&web, env.logs.path()).unwrap_err();
    assert!(err.to_string().contains("no pod subnet yet"), "{err}");

    env.rt
        .set_pod_network(PodNetwork::parse("bt0", "198.51.100.0/29"));
    let mut h = env.start(&web);
    let client = "for i in $(seq 100); do \
                  /usr/bin/python3 -c 'import urllib.request as u; \
                  print(u.urlopen(\"http://198.51.100.2:8080/\", timeout=1).status)' \
                  2>/dev/null && exit 0; sleep 0.1; done; exit 1";
    let mut cl = pod(
        "iso-client",
        vec![process("get", client)],
        RestartPolicy::Never,
    );
    cl.spec.network = NetworkMode::Isolated;
    let mut c = env.start(&cl);
    assert_eq!(h.status().ip, "198.51.100.2");
    assert_eq!(c.status().ip, "198.51.100.3");

    // Pod to pod over the bridge.
    let st = wait_for(&c, 30, "the client's request", finished);
    assert_eq!(
        st.phase,
        PodPhase::Succeeded,
        "{}",
        env.log("iso-client", "get")
    );
    assert!(env.log("iso-client", "get").contains("200"));

    // Node to pod: what the service proxy does.
    let give_up = Instant::now() + Duration::from_secs(10);
    let reply = loop {
        use std::io::{Read, Write};
        let addr = "198.51.100.2:8080".parse().unwrap();
        if let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
            let mut out = String::new();
            if let Err(e) = s.read_to_string(&mut out) {
                out.push_str(&format!("(reading the reply: {e})"));
            }
            break out;
        }
        assert!(Instant::now() < give_up, "the pod's server never answered");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(reply.starts_with("HTTP/1.0 200"), "{reply}");

    // The bridge keeps the address it was given as its ports come and go (left to itself, the
    // kernel would move it to the lowest port's, stranding the pods' ARP entries for the
    // gateway: the client's port went with it above).
    let link = std::process::Command::new("ip")
        .args(["-o", "link", "show", "bt0"])
        .output()
        .expect("ip link");
    let link = String::from_utf8_lossy(&link.stdout);
    assert!(link.contains("link/ether 02:62:c6:33:64:01"), "{link}");

    // The pod's interface: eth0 with its address, default route via the bridge.
    let mut look = pod(
        "iso-look",
        vec![process("ip", "ip -o -4 addr show dev eth0; ip route")],
        RestartPolicy::Never,
    );
    look.spec.network = NetworkMode::Isolated;
    c.stop(Duration::from_secs(1)).unwrap();
    let mut l = env.start(&look);
    wait_for(&l, 10, "completion", finished);
    let out = env.log("iso-look", "ip");
    // The client's address was freed with it: the next pod takes it.
    assert!(out.contains("inet 198.51.100.3/29"), "{out}");
    assert!(out.contains("default via 198.51.100.1"), "{out}");
    l.stop(Duration::from_secs(1)).unwrap();
    h.stop(Duration::from_secs(1)).unwrap();
}

#[test]
fn routes_to_other_nodes_are_added_replaced_and_removed() {
    use bramble_worker::sys::{netlink::Rtnl, podnet};
    // A network namespace of this test thread's own: the routes never touch the host's.
    bramble_worker::sys::podnet::unshare_net().expect("unshare(CLONE_NEWNET)");
    podnet::ensure_bridge("bt1", "192.0.2.1".parse().unwrap(), 24).unwrap();
    let mine = || {
        let mut r: Vec<(String, String)> = Rtnl::open()
            .unwrap()
            .routes()
            .unwrap()
            .into_iter()
            .filter(|r| r.protocol == podnet::ROUTE_PROTO)
            .map(|r| {
                (
                    format!("{}/{}", r.dst, r.dst_len),
                    r.gateway.map(|g| g.to_string()).unwrap_or_default(),
                )
            })
            .collect();
        r.sort();
        r
    };
    let route = |c: &str, v: &str| (c.to_string(), v.to_string());
    let two = [
        route("198.51.100.0/26", "192.0.2.12"),
        route("198.51.100.64/26", "192.0.2.13"),
    ];
    assert_eq!(podnet::sync_routes(&two).unwrap(), 2);
    assert_eq!(mine(), two);
    assert_eq!(podnet::sync_routes(&two).unwrap(), 0, "nothing to change");
    // A node moved to another address, the other left.
    let moved = [route("198.51.100.0/26", "192.0.2.14")];
    assert_eq!(podnet::sync_routes(&moved).unwrap(), 3);
    assert_eq!(mine(), moved);
    assert_eq!(podnet::sync_routes(&[]).unwrap(), 1);
    assert!(mine().is_empty());
}
