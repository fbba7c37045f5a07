//! Resource leaks of the pod runtime: namespaces, cgroups (this host's v1, or v2), the pod init, restarts,
//! graceful stop, re-adoption, leaks. Needs root and cgroups: fails loudly without them.
//!
//! Every test uses its own cgroup parent under the test process's own cgroup, and a guard removes
//! it (killing what is left) also when the test fails.

mod runtime_support;

use std::time::Duration;

use bramble_wire::objects::{PodPhase, Resources, RestartPolicy};
use runtime_support::*;

#[test]
fn no_leaks_after_100_cycles() {
    let env = Env::new("leak");
    let count = |p: &str| std::fs::read_dir(p).map(|d| d.count()).unwrap_or(0);
    let mounts = || {
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .count()
    };
    let run_one = |i: usize| {
        let mut p = process("main", "exec sleep 30");
        p.resources = Resources {
            cpu_millis: Some(100),
            memory_bytes: Some(16 << 20),
            pids: Some(8),
        };
        let mut h = env.start(&pod(&format!("cycle{i}"), vec![p], RestartPolicy::Always));
        if i.is_multiple_of(2) {
            wait_for(&h, 10, "running", |s| s.phase == PodPhase::Running);
        }
        h.stop(Duration::from_secs(2)).unwrap();
    };
    run_one(0);
    let (m0, f0) = (mounts(), count("/proc/self/fd"));
    for i in 1..=100 {
        run_one(i);
    }
    assert_eq!(mounts(), m0, "mounts leaked into the host");
    assert_eq!(count("/proc/self/fd"), f0, "file descriptors leaked");
    assert!(
        env.rt.cgroups().children(&env.parent).is_empty(),
        "pod cgroups leaked"
    );
    assert_eq!(
        count(env.state.path().to_str().unwrap()),
        0,
        "state dirs leaked"
    );
}
