//! Liveness and readiness probes for real: run by the pod init inside the pod's namespaces.
//! Needs root and cgroups (fails loudly without them).

mod runtime_support;

use std::time::{Duration, Instant};

use bramble_wire::objects::{
    ExitReason, NetworkMode, PodPhase, PodStatus, Probe, ProbeAction, ProcessState, RestartPolicy,
};
use runtime_support::*;

fn probe(action: ProbeAction, period_ms: u32, failures: u32) -> Probe {
    Probe {
        action,
        initial_delay_ms: 0,
        period_ms,
        timeout_ms: period_ms.min(1000),
        failure_threshold: failures,
        success_threshold: 1,
    }
}

fn exec(args: &[&str]) -> ProbeAction {
    ProbeAction::Exec(args.iter().map(|s| s.to_string()).collect())
}

fn running(st: &PodStatus) -> bool {
    matches!(st.processes[0].state, ProcessState::Running { .. })
}

/// Samples the status for `d` and asserts `pred` holds throughout.
fn holds_for(
    h: &bramble_worker::runtime::PodHandle,
    d: Duration,
    what: &str,
    pred: impl Fn(&PodStatus) -> bool,
) {
    let until = Instant::now() + d;
    while Instant::now() < until {
        let st = h.status();
        assert!(pred(&st), "expected {what} throughout; got {st:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn liveness_probe_restarts_a_hung_process() {
    let env = Env::new("live");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    // First run: healthy for a moment, then ignores SIGTERM (so only the SIGKILL after the
    // grace ends it), removes its health file and hangs. Later runs stay healthy. The health
    // file exists before the first run, and the checks start a second after each start: no
    // check can fail before the script has done its part, however slow the machine.
    std::fs::write(dir.path().join("healthy"), b"").unwrap();
    let script = format!(
        "touch {d}/healthy; if [ ! -e {d}/ran ]; then touch {d}/ran; sleep 0.5; trap '' TERM; \
         rm {d}/healthy; echo hung; fi; exec sleep 1000"
    );
    let mut p = process("main", &script);
    let health = format!("{d}/healthy");
    let mut live = probe(exec(&["test", "-e", &health]), 200, 2);
    live.initial_delay_ms = 1000;
    p.liveness = Some(live);
    let mut spec = pod("live", vec![p], RestartPolicy::Always);
    host_dir(&mut spec, dir.path());
    spec.spec.termination_grace_ms = 500;
    let mut h = env.start(&spec);
    let st = wait_for(&h, 30, "a restart after the liveness probe failed", |s| {
        s.processes[0].restarts >= 1 && running(s)
    });
    assert_eq!(
        st.processes[0].last_exit,
        Some(ExitReason::Signaled(
            bramble_worker::sys::process::Signal::KILL.number()
        )),
        "the hung process ignored SIGTERM: SIGKILL after the grace; {st:?}"
    );
    assert!(
        st.processes[0].ready,
        "no readiness probe: ready while running"
    );
    let log = env.log("live", "main");
    assert!(
        log.contains("bramble: liveness probe failed 2 times: exec [\"test\", \"-e\""),
        "{log}"
    );
    // The new process is healthy: no further restarts.
    holds_for(
        &h,
        Duration::from_millis(1500),
        "one restart, running",
        |s| s.processes[0].restarts == 1 && running(s),
    );
    h.stop(Duration::from_secs(1)).unwrap();
}

#[test]
fn liveness_failure_with_sigterm_restarts_under_on_failure() {
    let env = Env::new("live-term");
    // The probe fails once the process has set its trap (it then creates a flag file); the
    // process exits 0 on SIGTERM. A liveness kill still counts as a failure, so OnFailure
    // restarts it.
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("trapped").display().to_string();
    let script = format!("trap 'exit 0' TERM; touch {flag}; while :; do sleep 0.1; done");
    let mut p = process("main", &script);
    p.liveness = Some(probe(exec(&["test", "!", "-e", &flag]), 150, 1));
    let mut spec = pod("live-term", vec![p], RestartPolicy::OnFailure);
    host_dir(&mut spec, dir.path());
    spec.spec.termination_grace_ms = 5000;
    let mut h = env.start(&spec);
    let st = wait_for(&h, 30, "a restart", |s| s.processes[0].restarts >= 1);
    assert_eq!(
        st.processes[0].last_exit,
        Some(ExitReason::Completed),
        "{st:?}"
    );
    h.stop(Duration::from_secs(1)).unwrap();
}

#[test]
fn readiness_probe_holds_a_process_unready_until_its_check_passes() {
    let env = Env::new("ready");
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("ready");
    let mut p = process("main", "exec sleep 1000");
    p.readiness = Some(probe(
        exec(&["test", "-e", &flag.display().to_string()]),
        100,
        2,
    ));
    let mut spec = pod("ready", vec![p], RestartPolicy::Always);
    host_dir(&mut spec, dir.path());
    let mut h = env.start(&spec);
    wait_for(&h, 10, "running", |s| {
        s.phase == PodPhase::Running && running(s)
    });
    holds_for(&h, Duration::from_millis(800), "not ready", |s| {
        !s.processes[0].ready && !s.is_ready()
    });
    std::fs::write(&flag, b"").unwrap();
    wait_for(&h, 10, "ready", PodStatus::is_ready);
    std::fs::remove_file(&flag).unwrap();
    let st = wait_for(&h, 10, "not ready again", |s| !s.is_ready());
    assert!(running(&st), "readiness never restarts: {st:?}");
    assert_eq!(st.processes[0].restarts, 0);
    let log = env.log("ready", "main");
    assert!(
        log.contains("bramble: readiness probe failed 2 times"),
        "{log}"
    );
    h.stop(Duration::from_secs(1)).unwrap();
}

#[test]
fn tcp_and_http_probes_reach_the_pods_own_network() {
    let env = Env::new("net");
    // A private network namespace: port 8080 here is the pod's, whatever the host runs.
    let mut web = process("web", "exec python3 -m http.server 8080 --bind 127.0.0.1");
    web.readiness = Some(probe(
        ProbeAction::Http {
            port: 8080,
            path: "/".into(),
        },
        200,
        1,
    ));
    web.liveness = Some(probe(ProbeAction::Tcp { port: 8080 }, 200, 50));
    // Nothing listens on 9: a TCP readiness probe fails (refused) and keeps it unready.
    let mut other = process("other", "exec sleep 1000");
    other.readiness = Some(probe(ProbeAction::Tcp { port: 9 }, 100, 3));
    let mut spec = pod("net", vec![web, other], RestartPolicy::Always);
    spec.spec.network = NetworkMode::None;
    let mut h = env.start(&spec);
    let st = wait_for(&h, 20, "the web process ready", |s| s.processes[0].ready);
    assert!(!st.processes[1].ready && !st.is_ready(), "{st:?}");
    wait_for(&h, 10, "the TCP failure logged", |_| {
        env.log("net", "other")
            .contains("readiness probe failed 3 times")
    });
    let log = env.log("net", "other");
    assert!(log.contains("tcp 127.0.0.1:9: connect"), "{log}");
    assert!(log.contains("refused"), "{log}");
    // The HTTP server really was probed with GET / (it logs requests).
    let web_log = env.log("net", "web");
    assert!(web_log.contains("\"GET / HTTP/1.0\" 200"), "{web_log}");
    let st = h.status();
    assert_eq!(st.processes[0].restarts, 0, "{st:?}");
    h.stop(Duration::from_secs(1)).unwrap();
}

#[test]
fn a_probe_past_its_timeout_fails_and_is_killed() {
    let env = Env::new("slow");
    let mut p = process("main", "exec sleep 1000");
    p.readiness = Some(Probe {
        action: exec(&["sleep", "30"]),
        initial_delay_ms: 0,
        period_ms: 400,
        timeout_ms: 200,
        failure_threshold: 1,
        success_threshold: 1,
    });
    let mut h = env.start(&pod("slow", vec![p], RestartPolicy::Always));
    wait_for(&h, 10, "the timeout logged", |_| {
        env.log("slow", "main").contains("timed out after 200ms")
    });
    let log = env.log("slow", "main");
    assert!(
        log.contains("bramble: readiness probe failed 1 times: exec [\"sleep\", \"30\"]: timed out after 200ms"),
        "{log}"
    );
    // Timed-out checks are killed: the pod never holds more than the init, the process and
    // the one check in flight.
    let give_up = Instant::now() + Duration::from_secs(2);
    while Instant::now() < give_up {
        let n = env.rt.cgroups().pids(h.cgroup()).unwrap().len();
        assert!(
            n <= 3,
            "{n} tasks in the pod: timed-out probes were not killed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!h.status().is_ready());
    h.stop(Duration::from_secs(1)).unwrap();
}
