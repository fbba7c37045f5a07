//! What a pod sees of the filesystem: a new root without one of its own, masked and read-only
//! parts of /proc and /sys, a minimal /dev, its own cgroup read-only, and path safety against
//! roots and volumes whose symlinks point out. Runs pods for real: needs root.

mod runtime_support;

use std::path::Path;
use std::time::Duration;

use bramble_wire::objects::{PodPhase, RestartPolicy, Volume, VolumeSource};
use runtime_support::{Env, finished, pod, process, wait_for};

/// `key=value` lines of a log.
fn value<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .unwrap_or_else(|| panic!("no {key}= in {out}"))
        .trim()
}

#[test]
fn a_pod_without_a_root_sees_only_what_it_is_given() {
    let env = Env::new("fsview");
    let secret_dir = tempfile::tempdir().unwrap();
    std::fs::write(secret_dir.path().join("host-only"), b"x").unwrap();
    let script = format!(
        "echo pwd=$(pwd); \
         echo host_file=$(test -e {host} && echo seen || echo hidden); \
         echo home=$(test -e /home && echo seen || echo hidden); \
         echo etc=$(ls /etc | tr '\\n' ' '); \
         echo shadow=$(test -e /etc/shadow && echo seen || echo hidden); \
         echo root_rw=$(touch /x 2>/dev/null && echo yes || echo no); \
         echo tmp_rw=$(touch /tmp/x && echo yes || echo no); \
         echo scratch_rw=$(touch /scratch/x && echo yes || echo no); \
         echo dev=$(ls /dev | tr '\\n' ' '); \
         echo null=$(echo hi > /dev/null && echo ok); \
         echo pts=$(grep ' /dev/pts ' /proc/self/mounts | cut -d' ' -f3); \
         echo shm=$(grep ' /dev/shm ' /proc/self/mounts | cut -d' ' -f4); \
         echo mqueue=$(grep -c ' /dev/mqueue mqueue ' /proc/self/mounts); \
         echo keys=$(wc -c < /proc/keys); \
         echo timer_list=$(wc -c < /proc/timer_list); \
         echo acpi=$(ls /proc/acpi | wc -l); \
         echo sysctl_rw=$(echo 1 > /proc/sys/kernel/ns_last_pid 2>/dev/null && echo yes || echo no); \
         echo sys=$(grep ' /sys sysfs ' /proc/self/mounts | cut -d' ' -f4 | cut -d, -f1); \
         echo sys_rw=$(echo x > /sys/kernel/uevent_helper 2>/dev/null && echo yes || echo no); \
         echo firmware=$(ls /sys/firmware | wc -l); \
         echo mem_limit=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes); \
         echo cgroup=$(grep memory /proc/self/cgroup | cut -d: -f3); \
         echo cg_rw=$(echo 0 > /sys/fs/cgroup/memory/cgroup.procs 2>/dev/null && echo yes || echo no); \
         echo cg_limit_rw=$(echo 1 > /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null && echo yes || echo no); \
         echo hosts=$(grep -c nsview-fs /etc/hosts); \
         echo done",
        host = secret_dir.path().join("host-only").display(),
    );
    let mut p = process("look", &script);
    p.resources.memory_bytes = Some(64 << 20);
    let mut spec = pod("nsview-fs", vec![p], RestartPolicy::Never);
    spec.spec.network = bramble_wire::objects::NetworkMode::None;
    let mut h = env.start(&spec);
    let st = wait_for(&h, 20, "completion", finished);
    let out = env.log("nsview-fs", "look");
    assert_eq!(st.phase, PodPhase::Succeeded, "{st:?}\n{out}");
    assert_eq!(value(&out, "pwd"), "/scratch", "{out}");
    assert_eq!(value(&out, "host_file"), "hidden", "{out}");
    assert_eq!(value(&out, "home"), "hidden", "{out}");
    assert_eq!(value(&out, "shadow"), "hidden", "{out}");
    let etc = value(&out, "etc");
    for f in ["passwd", "group", "hosts"] {
        assert!(
            etc.split(' ').any(|e| e == f),
            "{f} missing from /etc: {etc}"
        );
    }
    assert_eq!(value(&out, "root_rw"), "no", "{out}");
    assert_eq!(value(&out, "tmp_rw"), "yes", "{out}");
    assert_eq!(value(&out, "scratch_rw"), "yes", "{out}");
    let mut dev: Vec<&str> = value(&out, "dev").split(' ').collect();
    dev.sort();
    assert_eq!(
        dev,
        [
            "fd", "full", "mqueue", "null", "ptmx", "pts", "random", "shm", "stderr", "stdin",
            "stdout", "tty", "urandom", "zero"
        ],
        "{out}"
    );
    assert_eq!(value(&out, "null"), "ok", "{out}");
    assert_eq!(value(&out, "pts"), "devpts", "{out}");
    assert!(value(&out, "shm").contains("noexec"), "{out}");
    assert_eq!(value(&out, "mqueue"), "1", "{out}");
    // Masked (the ones this host has): files read empty, directories are empty.
    for (key, host) in [
        ("keys", "/proc/keys"),
        ("timer_list", "/proc/timer_list"),
        ("acpi", "/proc/acpi"),
    ] {
        assert!(
            Path::new(host).exists(),
            "this host has no {host}: pick another masked path"
        );
        assert_eq!(value(&out, key), "0", "{host} is masked: {out}");
    }
    assert_eq!(value(&out, "sysctl_rw"), "no", "{out}");
    assert_eq!(value(&out, "sys"), "ro", "{out}");
    assert_eq!(value(&out, "sys_rw"), "no", "{out}");
    assert!(Path::new("/sys/firmware").exists());
    assert_eq!(value(&out, "firmware"), "0", "{out}");
    assert_eq!(value(&out, "mem_limit"), (64u64 << 20).to_string(), "{out}");
    // The namespace's root is the pod's cgroup: the process is in its `_init` leaf below it.
    assert_eq!(value(&out, "cgroup"), "/_init", "{out}");
    assert_eq!(value(&out, "cg_rw"), "no", "{out}");
    assert_eq!(value(&out, "cg_limit_rw"), "no", "{out}");
    assert_eq!(value(&out, "hosts"), "1", "{out}");
    h.stop(Duration::from_secs(1)).unwrap();
}

#[test]
fn host_paths_come_only_through_host_path_volumes() {
    let env = Env::new("fshost");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("data"), b"from the host").unwrap();
    let d = dir.path().display().to_string();
    let mut p = process(
        "look",
        &format!("cat {d}/data; echo; echo written > {d}/out; cat /etc/app.conf; echo done"),
    );
    p.workdir = Some(d.clone());
    let mut spec = pod("fshost", vec![p], RestartPolicy::Never);
    // A file too (as /dev/console for the QEMU suite's power-cut pods).
    let file = dir.path().join("app.conf");
    std::fs::write(&file, b"a single host file").unwrap();
    spec.spec.volumes = vec![
        Volume {
            name: "host".into(),
            mount_path: d.clone(),
            source: VolumeSource::HostPath {
                path: d.clone(),
                read_only: false,
            },
        },
        Volume {
            name: "file".into(),
            mount_path: "/etc/app.conf".into(),
            source: VolumeSource::HostPath {
                path: file.display().to_string(),
                read_only: true,
            },
        },
    ];
    let mut h = env.start(&spec);
    let st = wait_for(&h, 20, "completion", finished);
    let out = env.log("fshost", "look");
    assert_eq!(st.phase, PodPhase::Succeeded, "{st:?}\n{out}");
    assert!(out.contains("from the host"), "{out}");
    assert!(out.contains("a single host file"), "{out}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out")).unwrap(),
        "written\n"
    );
    h.stop(Duration::from_secs(1)).unwrap();
}

fn assert_empty(witness: &Path) {
    let left: Vec<_> = std::fs::read_dir(witness)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "created outside the pod's root: {left:?}");
}

/// A volume whose contents hold `sub -> <witness>` (absolute, on the host), and a second volume
/// mounted through it: its mount point is created inside the pod's root, never in the witness.
#[test]
fn a_mount_path_through_a_volume_symlink_stays_inside_the_root() {
    let env = Env::new("fslink");
    let top = tempfile::tempdir().unwrap();
    let witness = top.path().join("witness");
    let shared = top.path().join("shared");
    std::fs::create_dir_all(&witness).unwrap();
    std::fs::create_dir_all(&shared).unwrap();
    std::os::unix::fs::symlink(&witness, shared.join("sub")).unwrap();
    let mut spec = pod(
        "fslink",
        vec![process("look", "ls -d /data/sub/x && echo inside")],
        RestartPolicy::Never,
    );
    spec.spec.volumes = vec![
        Volume {
            name: "shared".into(),
            mount_path: "/data".into(),
            source: VolumeSource::HostPath {
                path: shared.display().to_string(),
                read_only: false,
            },
        },
        Volume {
            name: "x".into(),
            mount_path: "/data/sub/x".into(),
            source: VolumeSource::EmptyDir,
        },
    ];
    let mut h = env.start(&spec);
    let st = wait_for(&h, 20, "completion", finished);
    let out = env.log("fslink", "look");
    assert_eq!(st.phase, PodPhase::Succeeded, "{st:?}\n{out}");
    assert!(out.contains("inside"), "{out}");
    assert_empty(&witness);
    h.stop(Duration::from_secs(1)).unwrap();
    assert_empty(&witness);
}

/// An artifact-like root with `etc -> <witness>` and `tmp -> /`, and a volume under `/etc`:
/// whatever the pod makes of it, nothing is created in the witness or beside the root.
#[test]
fn a_malicious_root_cannot_make_the_worker_write_outside_it() {
    let env = Env::new("fsevil");
    let top = tempfile::tempdir().unwrap();
    let root = top.path().join("root");
    let witness = top.path().join("witness");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("proc")).unwrap();
    std::fs::create_dir_all(root.join("dev")).unwrap();
    std::fs::create_dir_all(&witness).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink(&witness, root.join("etc")).unwrap();
    std::os::unix::fs::symlink("/", root.join("tmp")).unwrap();
    let before: Vec<_> = std::fs::read_dir(top.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    let mut p = process("look", "echo hi");
    p.command = vec!["/bin/busybox".into(), "true".into()];
    let mut spec = pod("fsevil", vec![p], RestartPolicy::Never);
    spec.spec.rootfs = Some(root.display().to_string());
    spec.spec.volumes = vec![Volume {
        name: "conf".into(),
        mount_path: "/etc/app".into(),
        source: VolumeSource::EmptyDir,
    }];
    let mut h = env.start(&spec);
    let st = wait_for(&h, 20, "completion", finished);
    // The whole plan ran (the volume's mount point through `etc` included); then `tmp -> /` had
    // put the pod's /tmp over its whole root, so its command is gone: a start failure, not an
    // init failure.
    assert_eq!(
        st.processes[0].last_exit,
        Some(bramble_wire::objects::ExitReason::StartFailed),
        "{st:?}"
    );
    let log = env.log("fsevil", "look");
    assert!(log.contains("cannot start look"), "{log}");
    h.stop(Duration::from_secs(1)).unwrap();
    assert_empty(&witness);
    let after: Vec<_> = std::fs::read_dir(top.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(before, after, "nothing beside the root");
    for host in ["/app", "/hosts"] {
        assert!(!Path::new(host).exists(), "{host} created on the host");
    }
    // The root itself is untouched: a read-only bind, mount points only inside it.
    let mut inside: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    inside.sort();
    assert_eq!(inside, ["bin", "dev", "etc", "proc", "tmp"], "{inside:?}");
}

#[test]
fn privileged_pods_get_the_host_dev_and_a_writable_sys_host_network_a_read_only_host_sys() {
    let env = Env::new("fspriv");
    let script = "echo sys=$(grep ' /sys ' /proc/self/mounts | head -1 | cut -d' ' -f3,4 | cut -d, -f1); \
                  echo devs=$(ls /dev | wc -l); \
                  echo pts=$(grep ' /dev/pts ' /proc/self/mounts | tail -1 | cut -d' ' -f3,4 | cut -d, -f1); \
                  echo mqueue=$(grep -c ' /dev/mqueue mqueue ' /proc/self/mounts); \
                  echo keys=$(wc -c < /proc/keys); \
                  echo root_rw=$(touch /x 2>/dev/null && echo yes || echo no)";
    let mut spec = pod(
        "fspriv",
        vec![process("look", script)],
        RestartPolicy::Never,
    );
    spec.spec.privileged = true;
    spec.spec.network = bramble_wire::objects::NetworkMode::None;
    let mut h = env.start(&spec);
    let st = wait_for(&h, 20, "completion", finished);
    let out = env.log("fspriv", "look");
    assert_eq!(st.phase, PodPhase::Succeeded, "{st:?}\n{out}");
    assert_eq!(value(&out, "sys"), "sysfs rw", "{out}");
    let host_devs = std::fs::read_dir("/dev").unwrap().count();
    assert!(
        value(&out, "devs").parse::<usize>().unwrap() >= host_devs.min(15),
        "{out}"
    );
    assert_eq!(
        value(&out, "pts"),
        "devpts rw",
        "its own devpts over the host's: {out}"
    );
    assert_eq!(value(&out, "mqueue"), "1", "{out}");
    assert_ne!(value(&out, "keys"), "0", "nothing masked: {out}");
    // Still a new root, read-only, like Nomad's exec driver.
    assert_eq!(value(&out, "root_rw"), "no", "{out}");
    h.stop(Duration::from_secs(1)).unwrap();

    // The host's network namespace: the host's /sys, read-only, submounts included; host_ipc:
    // no mqueue of its own.
    let script = "echo sys=$(grep ' /sys ' /proc/self/mounts | head -1 | cut -d' ' -f4 | cut -d, -f1); \
                  echo sub=$(grep -c ' /sys/' /proc/self/mounts); \
                  echo sub_rw=$(grep ' /sys/' /proc/self/mounts | grep -vc ' ro,'); \
                  echo mqueue=$(grep -c ' /dev/mqueue ' /proc/self/mounts)";
    let mut spec = pod(
        "fshostnet",
        vec![process("look", script)],
        RestartPolicy::Never,
    );
    spec.spec.network = bramble_wire::objects::NetworkMode::Host;
    spec.spec.host_ipc = true;
    let mut h = env.start(&spec);
    let st = wait_for(&h, 20, "completion", finished);
    let out = env.log("fshostnet", "look");
    assert_eq!(st.phase, PodPhase::Succeeded, "{st:?}\n{out}");
    assert_eq!(value(&out, "sys"), "ro", "{out}");
    assert_ne!(value(&out, "sub"), "0", "the host's /sys submounts: {out}");
    assert_eq!(
        value(&out, "sub_rw"),
        "0",
        "every mount under /sys read-only: {out}"
    );
    assert_eq!(value(&out, "mqueue"), "0", "{out}");
    h.stop(Duration::from_secs(1)).unwrap();
}
