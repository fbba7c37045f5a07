//! Workload start latency for a trivial workload (`/bin/true`), measured side by side in one run:
//!
//! - `fork+exec`: `std::process::Command::new("/bin/true")` — the floor;
//! - `unshare`: `unshare --pid --fork --mount --uts --ipc /bin/true`;
//! - `bramble`: `LinuxRuntime::start_pod` (cgroup with limits, clone into new PID/mount/UTS/IPC
//!   namespaces, cgroup join before exec, the pod init re-executing the worker, fresh `/proc`,
//!   hostname, fork+exec of `/bin/true`) until the pod init has exited;
//! - `bramble+cleanup`: the same plus `PodHandle::stop` (cgroup kill + rmdir, state dir removal);
//! - `isolated`: `bramble` with `network = "isolated"`: a network namespace, a veth pair on the
//!   pod bridge, address and route (rtnetlink), until the pod init has exited.
//!
//! The bench runs in a network namespace of its own (the bridge never touches the host's).
//! Run as root: `cargo bench -p bramble-worker --bench start [-- ITERATIONS]`.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use bramble_testkit::build;
use bramble_wire::objects::{NetworkMode, PodPhase, ProcessSpec, Resources, RestartPolicy};
use bramble_worker::runtime::cgroup::CgroupBase;
use bramble_worker::runtime::{LinuxRuntime, PodNetwork, RuntimeConfig};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let iters: usize = bramble_testkit::arg_or(200);
    bramble_testkit::require_root();
    bramble_worker::sys::podnet::unshare_net().expect("unshare(CLONE_NEWNET)");
    let state = std::env::temp_dir().join(format!("bramble-bench-{}", std::process::id()));
    let logs = state.join("logs");
    let parent = format!("bramble-bench-{}", std::process::id());
    // The worker binary is the pod init; cargo builds it for benches too.
    let init_exe = PathBuf::from(env!("CARGO_BIN_EXE_bramble-worker"));
    let rt = LinuxRuntime::new(RuntimeConfig {
        state_dir: state.join("pods"),
        init_exe,
        cgroup_base: CgroupBase::Own,
        cgroup_parent: parent.clone(),
        ..Default::default()
    })
    .expect("runtime");
    rt.set_pod_network(PodNetwork::parse("bench0", "198.51.100.0/24"));
    eprintln!(
        "cgroups: {:?} {:?}",
        rt.preflight().version,
        rt.preflight().controllers
    );

    let pod = |i: usize| {
        build::pod(&format!("bench{i}"))
            .uid("feedface")
            .process(ProcessSpec {
                resources: Resources {
                    cpu_millis: Some(500),
                    memory_bytes: Some(64 << 20),
                    pids: Some(16),
                },
                ..build::process("true", &["/bin/true"])
            })
            .restart(RestartPolicy::Never)
            .build()
    };

    let (mut plain, mut unshare, mut bramble, mut full, mut isolated) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..iters + 10 {
        let warm = i < 10;
        let t = Instant::now();
        let s = Command::new("/bin/true").status().expect("/bin/true");
        let d = t.elapsed();
        assert!(s.success());
        if !warm {
            plain.push(d);
        }

        let t = Instant::now();
        let s = Command::new("unshare")
            .args(["--pid", "--fork", "--mount", "--uts", "--ipc", "/bin/true"])
            .status()
            .expect("unshare");
        let d = t.elapsed();
        assert!(s.success());
        if !warm {
            unshare.push(d);
        }

        let t = Instant::now();
        let mut h = rt.start_pod(&pod(i), &logs).expect("start_pod");
        while !h.exited() {
            h.wait(Some(Duration::from_secs(5))).expect("wait");
        }
        let d = t.elapsed();
        let st = h.stop(Duration::from_secs(1)).expect("stop");
        let df = t.elapsed();
        assert_eq!(st.phase, PodPhase::Succeeded, "{st:?}");
        if !warm {
            bramble.push(d);
            full.push(df);
        }

        let mut p = pod(i);
        p.spec.network = NetworkMode::Isolated;
        let t = Instant::now();
        let mut h = rt.start_pod(&p, &logs).expect("start_pod (isolated)");
        while !h.exited() {
            h.wait(Some(Duration::from_secs(5))).expect("wait");
        }
        let d = t.elapsed();
        let st = h.stop(Duration::from_secs(1)).expect("stop");
        assert_eq!(st.phase, PodPhase::Succeeded, "{st:?}");
        if !warm {
            isolated.push(d);
        }
    }
    let _ = rt.cgroups().remove(&parent);
    let _ = std::fs::remove_dir_all(&state);

    let floor = median(plain.clone());
    let row = |name: &str, v: Vec<Duration>| {
        let m = median(v);
        println!(
            "{name:<16} median {:>8.3} ms   {:>5.2}x fork+exec",
            m.as_secs_f64() * 1e3,
            m.as_secs_f64() / floor.as_secs_f64()
        );
    };
    println!("start latency of /bin/true, {iters} iterations each");
    row("fork+exec", plain);
    row("unshare", unshare);
    row("bramble", bramble);
    row("bramble+cleanup", full);
    row("isolated", isolated);
}
