//! What health probes cost on a board, measured side by side in one run: four pods, each running
//! the same small HTTP server (`python3 -m http.server` in its own network namespace), one
//! without probes (the baseline) and one each with a TCP, an HTTP and an exec (`true`) readiness
//! probe every 100 ms (the shortest period the manifest allows). Over the same window it prints,
//! per pod, the pod init's CPU time (`/proc/<pid>/schedstat`, ns) and the whole pod cgroup's, and
//! the cost of one check above the baseline.
//!
//! Run as root: `cargo bench -p bramble-worker --bench probe [-- SECONDS]`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bramble_wire::objects::{
    Meta, NetworkMode, Pod, PodSpec, Probe, ProbeAction, ProcessSpec, RestartPolicy,
};
use bramble_worker::runtime::cgroup::CgroupBase;
use bramble_worker::runtime::{LinuxRuntime, PodHandle, RuntimeConfig};

const PERIOD_MS: u32 = 100;

fn init_cpu_ns(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .expect("schedstat of the pod init")
}

fn pod(name: &str, readiness: Option<ProbeAction>) -> Pod {
    Pod {
        meta: Meta {
            name: name.into(),
            namespace: "default".into(),
            uid: format!("uid-{name}"),
            ..Default::default()
        },
        spec: PodSpec {
            processes: vec![ProcessSpec {
                name: "web".into(),
                command: [
                    "python3",
                    "-m",
                    "http.server",
                    "8080",
                    "--bind",
                    "127.0.0.1",
                ]
                .map(String::from)
                .to_vec(),
                readiness: readiness.map(|action| Probe {
                    action,
                    period_ms: PERIOD_MS,
                    timeout_ms: PERIOD_MS,
                    ..Probe::default()
                }),
                ..Default::default()
            }],
            restart_policy: RestartPolicy::Always,
            network: NetworkMode::None,
            ..Default::default()
        },
        status: Default::default(),
    }
}

fn main() {
    let secs: u64 = bramble_testkit::arg_or(10);
    bramble_testkit::require_root();
    let state = std::env::temp_dir().join(format!("bramble-probe-bench-{}", std::process::id()));
    let logs = state.join("logs");
    let parent = format!("bramble-probe-bench-{}", std::process::id());
    let rt = LinuxRuntime::new(RuntimeConfig {
        state_dir: state.join("pods"),
        init_exe: PathBuf::from(env!("CARGO_BIN_EXE_bramble-worker")),
        cgroup_base: CgroupBase::Own,
        cgroup_parent: parent.clone(),
        ..Default::default()
    })
    .expect("runtime");
    let cases = [
        ("none", None),
        ("tcp", Some(ProbeAction::Tcp { port: 8080 })),
        (
            "http",
            Some(ProbeAction::Http {
                port: 8080,
                path: "/".into(),
            }),
        ),
        ("exec", Some(ProbeAction::Exec(vec!["true".into()]))),
    ];
    let mut handles: Vec<(&str, PodHandle)> = cases
        .iter()
        .map(|(n, a)| (*n, rt.start_pod(&pod(n, a.clone()), &logs).expect("start")))
        .collect();
    // Let every server come up and every probe pass once.
    let give_up = Instant::now() + Duration::from_secs(30);
    while !handles.iter().all(|(_, h)| h.status().is_ready()) {
        assert!(Instant::now() < give_up, "pods not ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    let before: Vec<(u64, u64)> = handles
        .iter()
        .map(|(_, h)| (init_cpu_ns(h.init_pid()), h.cpu_usage_ns()))
        .collect();
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let elapsed = t.elapsed();
    let after: Vec<(u64, u64)> = handles
        .iter()
        .map(|(_, h)| (init_cpu_ns(h.init_pid()), h.cpu_usage_ns()))
        .collect();
    let checks = elapsed.as_millis() as f64 / f64::from(PERIOD_MS);
    let d: Vec<(f64, f64)> = before
        .iter()
        .zip(&after)
        .map(|(b, a)| ((a.0 - b.0) as f64, (a.1 - b.1) as f64))
        .collect();
    println!(
        "probes every {PERIOD_MS} ms for {:.1} s (~{checks:.0} checks per probed pod)",
        elapsed.as_secs_f64()
    );
    println!(
        "{:<6} {:>14} {:>14} {:>18} {:>18}",
        "probe", "init CPU ms", "pod CPU ms", "init µs/check", "pod µs/check"
    );
    for (i, (name, _)) in handles.iter().enumerate() {
        let (init, pod) = d[i];
        let per = |x: f64, base: f64| {
            if i == 0 {
                "baseline".to_string()
            } else {
                format!("{:.1}", (x - base) / checks / 1e3)
            }
        };
        println!(
            "{name:<6} {:>14.2} {:>14.2} {:>18} {:>18}",
            init / 1e6,
            pod / 1e6,
            per(init, d[0].0),
            per(pod, d[0].1)
        );
    }
    println!(
        "init CPU share of one core with an HTTP probe every {PERIOD_MS} ms: {:.3}%",
        d[2].0 / elapsed.as_nanos() as f64 * 100.0
    );
    for (_, h) in handles.iter_mut() {
        let _ = h.stop(Duration::from_secs(1));
    }
    let _ = rt.cgroups().remove(&parent);
    let _ = std::fs::remove_dir_all(&state);
}
