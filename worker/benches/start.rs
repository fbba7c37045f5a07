//! Workload start latency, from the request to the workload's first instructions, measured side
//! by side in one run. The workload is `tee FIFO` with an empty stdin: it opens a fifo the bench
//! reads and closes it at once; the bench stops the clock at the fifo's hang-up, so the time
//! includes the workload's exec and libc start-up but not how its end is noticed.
//!
//! - `fork+exec`: `std::process::Command` spawning the workload — the floor;
//! - `unshare`: `unshare --pid --fork --mount --uts --ipc` + the workload;
//! - `crun`: `crun run` of an OCI bundle (read-only host `/usr`, fresh `/proc` and `/dev`, PID,
//!   IPC, UTS and mount namespaces, the same limits: see `bramble_testkit::crun`);
//! - `bramble`: `LinuxRuntime::start_pod` with the worker's default setup (cgroup with limits,
//!   clone into new PID/mount/UTS/IPC namespaces — born in its cgroup with `clone3` on v2, moved
//!   before exec on v1 — the pod init re-executing the worker, fresh `/proc`, hostname, then
//!   fork+exec of the workload);
//! - `bramble+cleanup`: `bramble` until the pod init exited and `PodHandle::stop` removed the
//!   cgroups and the state dir;
//! - `privileged`: `bramble` with `privileged = true` (every capability, no seccomp filter, no
//!   masked paths, the host's `/dev`, no device filter): `bramble − privileged` is what the
//!   default security context costs at start;
//! - `isolated`: `bramble` with `network = "isolated"`: a network namespace, a veth pair on the
//!   pod bridge, address and route (rtnetlink);
//! - `bramble, v2 tree` (v1 hosts with a cgroup2 hierarchy beside): `bramble` with the pods'
//!   cgroups in that v2 tree, the init and the workload born in them (`clone3`); no limits there
//!   unless that hierarchy has the controllers (this host's has only hugetlb).
//!
//! The bench runs in a network namespace of its own (the bridge never touches the host's) and,
//! on a hybrid v1 host, in a mount namespace of its own without the cgroup2 mount crun refuses.
//! Run as root: `cargo bench -p bramble-worker --bench start [-- ITERATIONS]`.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bramble_testkit::build;
use bramble_wire::objects::CgroupVersion;
use bramble_wire::objects::{
    NetworkMode, PodPhase, ProcessSpec, Resources, RestartPolicy, Volume, VolumeSource,
};
use bramble_worker::runtime::cgroup::{self, CgroupBase};
use bramble_worker::runtime::{LinuxRuntime, PodNetwork, RuntimeConfig};
use bramble_worker::sys::process as sysproc;

/// Opens the fifo for reading before a start (a fresh open: only a writer that comes after it
/// makes it hang up).
fn arm(fifo: &Path) -> std::os::fd::OwnedFd {
    sysproc::open_fifo_read(fifo).expect("open fifo")
}

/// Waits until the workload opened and closed the fifo.
fn hung_up(fd: &std::os::fd::OwnedFd) {
    let give_up = Instant::now() + Duration::from_secs(10);
    while !sysproc::poll_readable(&[fd.as_fd()], Some(Duration::from_secs(10))).expect("poll")[0] {
        assert!(
            Instant::now() < give_up,
            "the workload never opened the fifo"
        );
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let iters: usize = bramble_testkit::arg_or(200);
    bramble_testkit::require_root();
    bramble_testkit::crun::hide_hybrid_cgroup2();
    bramble_worker::sys::podnet::unshare_net().expect("unshare(CLONE_NEWNET)");
    let state = std::env::temp_dir().join(format!("bramble-bench-{}", std::process::id()));
    let logs = state.join("logs");
    let shared = state.join("shared");
    std::fs::create_dir_all(&shared).expect("shared dir");
    let fifo = shared.join("fifo");
    sysproc::mkfifo(&fifo).expect("mkfifo");
    let fifo_s = fifo.to_str().expect("utf-8 path").to_owned();
    let bundle = bramble_testkit::crun::Bundle::new(
        &state.join("bundle"),
        &["/usr/bin/tee", "/shared/fifo"],
        Some(&shared),
    );
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
    // On a v1 host: the same pods with their cgroups in a cgroup v2 tree (the host's cgroup2
    // hierarchy mounted again in the bench's own mount namespace), born there with clone3. That
    // hierarchy may have no cpu/memory/pids controllers, so these pods have no limits.
    let v2 = (rt.preflight().version == CgroupVersion::V1).then(|| {
        let point = state.join("cgroup2");
        std::fs::create_dir_all(&point).expect("cgroup2 mount point");
        let st = Command::new("mount")
            .args(["-t", "cgroup2", "none"])
            .arg(&point)
            .status()
            .expect("mount");
        assert!(
            st.success(),
            "mount -t cgroup2 in the bench's mount namespace"
        );
        let root = point.join(&parent);
        std::fs::create_dir_all(&root).expect("v2 parent");
        let m = cgroup::V2::new(root.clone());
        let pf = cgroup::Preflight {
            version: CgroupVersion::V2,
            controllers: cgroup::CgroupManager::controllers(&m),
            problems: Vec::new(),
        };
        let rt2 = LinuxRuntime::with_cgroups(
            RuntimeConfig {
                state_dir: state.join("pods-v2"),
                init_exe: PathBuf::from(env!("CARGO_BIN_EXE_bramble-worker")),
                cgroup_parent: "pods".into(),
                ..Default::default()
            },
            cgroup::AnyCgroupManager::V2(m),
            pf,
        )
        .expect("v2 runtime");
        (rt2, root)
    });
    eprintln!(
        "cgroups: {:?} {:?}",
        rt.preflight().version,
        rt.preflight().controllers
    );

    // The pod's root is a new one (its own /tmp): the fifo's directory is bound at /shared, as
    // in crun's bundle.
    let shared_s = shared.to_str().expect("utf-8 path").to_owned();
    let pod = |i: usize| {
        let mut p = build::pod(&format!("bench{i}"))
            .uid("feedface")
            .process(ProcessSpec {
                resources: Resources {
                    cpu_millis: Some(500),
                    memory_bytes: Some(64 << 20),
                    pids: Some(16),
                },
                ..build::process("tee", &["/usr/bin/tee", "/shared/fifo"])
            })
            .restart(RestartPolicy::Never)
            .build();
        p.spec.volumes.push(Volume {
            name: "shared".into(),
            mount_path: "/shared".into(),
            source: VolumeSource::HostPath {
                path: shared_s.clone(),
                read_only: false,
            },
        });
        p
    };

    let (mut on_v2, mut privileged) = (Vec::new(), Vec::new());
    let (mut plain, mut unshare, mut crun, mut bramble, mut full, mut isolated) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    let spawn = |argv: &[&str]| {
        Command::new(argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect(argv[0])
    };
    for i in 0..iters + 10 {
        let warm = i < 10;
        let r = arm(&fifo);
        let t = Instant::now();
        let mut c = spawn(&["/usr/bin/tee", &fifo_s]);
        hung_up(&r);
        let d = t.elapsed();
        assert!(c.wait().expect("tee").success());
        if !warm {
            plain.push(d);
        }

        let r = arm(&fifo);
        let t = Instant::now();
        let mut c = spawn(&[
            "unshare",
            "--pid",
            "--fork",
            "--mount",
            "--uts",
            "--ipc",
            "/usr/bin/tee",
            &fifo_s,
        ]);
        hung_up(&r);
        let d = t.elapsed();
        assert!(c.wait().expect("unshare").success());
        if !warm {
            unshare.push(d);
        }

        let r = arm(&fifo);
        let t = Instant::now();
        let mut c = bundle.spawn(&format!("bramble-bench-{}-{i}", std::process::id()));
        hung_up(&r);
        let d = t.elapsed();
        assert!(c.wait().expect("crun").success());
        if !warm {
            crun.push(d);
        }

        // One pod on `rt`: (to the workload's first instructions, until stopped and cleaned up).
        let run = |rt: &LinuxRuntime, p: &bramble_wire::objects::Pod, what: &str| {
            let r = arm(&fifo);
            let t = Instant::now();
            let mut h = rt
                .start_pod(p, &logs)
                .unwrap_or_else(|e| panic!("start_pod ({what}): {e}"));
            hung_up(&r);
            let d = t.elapsed();
            while !h.exited() {
                h.wait(Some(Duration::from_secs(5))).expect("wait");
            }
            let st = h.stop(Duration::from_secs(1)).expect("stop");
            assert_eq!(st.phase, PodPhase::Succeeded, "{what}: {st:?}");
            (d, t.elapsed())
        };
        let (d, df) = run(&rt, &pod(i), "default");
        if !warm {
            bramble.push(d);
            full.push(df);
        }
        if let Some((rt2, _)) = &v2 {
            let (d, _) = run(rt2, &pod(i), "v2 tree");
            if !warm {
                on_v2.push(d);
            }
        }
        let mut p = pod(i);
        p.spec.privileged = true;
        let (d, _) = run(&rt, &p, "privileged");
        if !warm {
            privileged.push(d);
        }
        let mut p = pod(i);
        p.spec.network = NetworkMode::Isolated;
        let (d, _) = run(&rt, &p, "isolated");
        if !warm {
            isolated.push(d);
        }
    }
    let _ = rt.cgroups().remove(&parent);
    if let Some((rt2, root)) = &v2 {
        let _ = rt2.cgroups().remove("pods");
        let _ = std::fs::remove_dir(root);
        let _ = Command::new("umount").arg(state.join("cgroup2")).status();
    }
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
    println!(
        "start latency to the workload's first instructions, {iters} iterations each, cgroup {:?}",
        rt.preflight().version
    );
    row("fork+exec", plain);
    row("unshare", unshare);
    row("crun", crun);
    let (default_m, privileged_m) = (median(bramble.clone()), median(privileged.clone()));
    row("bramble", bramble);
    row("privileged", privileged);
    println!(
        "security context (bramble - privileged): {:+.3} ms",
        (default_m.as_secs_f64() - privileged_m.as_secs_f64()) * 1e3
    );
    row("bramble+cleanup", full);
    row("isolated", isolated);
    if !on_v2.is_empty() {
        row("bramble, v2 tree", on_v2);
    }
}
