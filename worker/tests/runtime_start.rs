//! Starting pods fast: batch starts (this host's cgroup v1) and births into cgroup v2 with
//! `clone3(CLONE_INTO_CGROUP)` (the v2 hierarchy this host mounts beside v1, or the only one).
//! Needs root: fails loudly without it or without a cgroup2 mount.

mod runtime_support;

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bramble_testkit::build;
use bramble_wire::objects::{CgroupVersion, PodPhase, Resources, RestartPolicy};
use bramble_worker::runtime::cgroup::{self, AnyCgroupManager, Preflight, V2};
use bramble_worker::runtime::{LinuxRuntime, PodKey, PodToRun};
use bramble_worker::sys::process as sysproc;
use bramble_worker::sys::spawn::{self, Exec, Namespaces};
use runtime_support::*;

/// The cgroup2 mount point of this host.
fn cgroup2_mount() -> PathBuf {
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    cgroup::parse_mountinfo(&mi)
        .into_iter()
        .find(|m| m.v2)
        .map(|m| m.mount_point)
        .expect("a cgroup2 mount (this host: /sys/fs/cgroup/unified; QEMU guests: /sys/fs/cgroup)")
}

/// A fresh cgroup v2 directory, removed (tasks killed) on drop.
struct V2Dir(PathBuf);

impl V2Dir {
    fn new(test: &str) -> V2Dir {
        let dir = cgroup2_mount().join(format!("bramble-test-{}-{test}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        V2Dir(dir)
    }
}

impl Drop for V2Dir {
    fn drop(&mut self) {
        let m = V2::new(self.0.clone());
        use bramble_worker::runtime::cgroup::CgroupManager;
        let _ = m.kill_all("");
        let mut dirs: Vec<PathBuf> = Vec::new();
        collect_dirs(&self.0, &mut dirs);
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for d in dirs {
            let _ = std::fs::remove_dir(d);
        }
    }
}

fn collect_dirs(d: &Path, out: &mut Vec<PathBuf>) {
    out.push(d.to_owned());
    for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            collect_dirs(&e.path(), out);
        }
    }
}

/// The cgroup v2 path of `pid` (`0::/a/b` → `/a/b`).
fn v2_cgroup_of(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or_default()
        .to_owned()
}

fn relative_to_mount(dir: &Path) -> String {
    format!(
        "/{}",
        dir.strip_prefix(cgroup2_mount()).unwrap().to_string_lossy()
    )
}

#[test]
fn clone3_births_the_paused_init_in_its_cgroup() {
    assert!(sysproc::is_root(), "needs root (cgroups)");
    let dir = V2Dir::new("clone3");
    let fd = sysproc::open_dir(&dir.0).unwrap();
    let exec = Exec::new(Path::new("/bin/sleep"), &["sleep", "30"], &[]).unwrap();
    let null = sysproc::open_read(Path::new("/dev/null")).unwrap();
    let paused = spawn::clone_paused_into(
        &exec,
        Namespaces::default(),
        [null.as_fd(), null.as_fd(), null.as_fd()],
        Some(fd.as_fd()),
    )
    .unwrap();
    assert!(
        paused.in_cgroup(),
        "clone3(CLONE_INTO_CGROUP) fell back to clone on this kernel"
    );
    assert_eq!(v2_cgroup_of(paused.pid()), relative_to_mount(&dir.0));
    // Not released: dropping it kills and reaps the child.
}

/// A runtime whose pods' cgroups are a v2 tree (this host's cgroup2 mount).
fn v2_runtime(dir: &V2Dir, state: &Path) -> LinuxRuntime {
    let m = V2::new(dir.0.clone());
    let pf = Preflight {
        version: CgroupVersion::V2,
        controllers: bramble_worker::runtime::cgroup::CgroupManager::controllers(&m),
        problems: Vec::new(),
    };
    let mut cfg = config(state, "pods");
    cfg.cgroup_base = Default::default();
    LinuxRuntime::with_cgroups(cfg, AnyCgroupManager::V2(m), pf).unwrap()
}

#[test]
fn on_v2_the_init_and_processes_start_in_their_leaves() {
    assert!(sysproc::is_root(), "needs root (cgroups, namespaces)");
    let dir = V2Dir::new("v2pod");
    let state = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let rt = v2_runtime(&dir, state.path());
    let limited = |name: &str| {
        let mut p = process(name, "echo started; exec sleep 30");
        p.resources = Resources {
            pids: Some(50),
            ..Default::default()
        };
        p
    };
    let p = pod(
        "born",
        vec![limited("a"), limited("b")],
        RestartPolicy::Never,
    );
    let key = PodKey::of(&p).unwrap().to_string();
    let mut h = rt.start_pod(&p, logs.path()).unwrap();
    let pod_cg = format!("{}/pods/{key}", relative_to_mount(&dir.0));
    assert_eq!(v2_cgroup_of(h.init_pid()), format!("{pod_cg}/_init"));
    let st = wait_for(&h, 10, "both processes running", |st| {
        st.processes
            .iter()
            .all(|p| matches!(p.state, bramble_wire::objects::ProcessState::Running { .. }))
    });
    for ps in &st.processes {
        let bramble_wire::objects::ProcessState::Running { pid, .. } = ps.state else {
            unreachable!()
        };
        assert_eq!(
            v2_cgroup_of(pid as i32),
            format!("{pod_cg}/p-{}", ps.name),
            "{}",
            ps.name
        );
    }
    h.stop(Duration::from_secs(1)).unwrap();
}

#[test]
fn a_batch_of_pods_starts_and_each_lands_in_its_cgroup() {
    let env = Env::new("batch");
    let pods: Vec<PodToRun> = (0..12)
        .map(|i| {
            PodToRun::new(
                build::pod(&format!("b{i}"))
                    .uid(&format!("{i:08x}"))
                    .process(process("main", "exec sleep 30"))
                    .restart(RestartPolicy::Never)
                    .build(),
            )
        })
        .collect();
    let batch: Vec<_> = pods.iter().map(|p| (p, None)).collect();
    let mut handles: Vec<_> = env
        .rt
        .start_pods(&batch, env.logs.path())
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    for (h, p) in handles.iter().zip(&pods) {
        let key = PodKey::of(&p.pod).unwrap().to_string();
        let want = format!("/{}/{key}/_init", env.parent);
        // The init steps into the pod's cgroup for a moment to root its cgroup namespace there,
        // then back into `_init`: poll for where it settles.
        let mut memory = String::new();
        for _ in 0..100 {
            let own = std::fs::read_to_string(format!("/proc/{}/cgroup", h.init_pid())).unwrap();
            memory = own
                .lines()
                .find(|l| {
                    l.split(':')
                        .nth(1)
                        .is_some_and(|c| c.split(',').any(|c| c == "memory"))
                })
                .unwrap()
                .to_string();
            if memory.ends_with(&want) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(memory.ends_with(&want), "{key}: {memory}");
        wait_for(h, 10, "running", |st| st.phase == PodPhase::Running);
    }
    // A second batch holding a pod already running: only that one fails.
    let again = build::pod("fresh")
        .uid("feedbeef")
        .process(process("main", "exit 0"))
        .restart(RestartPolicy::Never)
        .build();
    let again = PodToRun::new(again);
    let res = env
        .rt
        .start_pods(&[(&pods[0], None), (&again, None)], env.logs.path());
    assert!(res[0].is_err(), "{:?}", res[0]);
    let mut fresh = res.into_iter().nth(1).unwrap().unwrap();
    let st = wait_for(&fresh, 10, "the fresh pod done", finished);
    assert_eq!(st.phase, PodPhase::Succeeded, "{st:?}");
    fresh.stop(Duration::from_secs(1)).unwrap();
    for h in &mut handles {
        h.stop(Duration::from_secs(1)).unwrap();
    }
}
