//! Pods contained by default, for real (root): the default seccomp filter on every pod process
//! and exec probe, and the device allow-list (v1 `devices` cgroup through the runtime; the cgroup
//! v2 eBPF program on this host's hugetlb-only cgroup2 mount at /sys/fs/cgroup/unified).

mod runtime_support;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use bramble_wire::objects::{PodPhase, Probe, ProbeAction, Resources, RestartPolicy};
use bramble_worker::runtime::cgroup::{CgroupManager, V2};
use bramble_worker::runtime::devices::DeviceRules;
use runtime_support::*;

/// `open_by_handle_at` through python's ctypes (no shell tool makes that call).
const OPEN_BY_HANDLE: &str = "import ctypes, os\n\
nr = {'x86_64': 304, 'aarch64': 265, 'armv7l': 371}[os.uname().machine]\n\
libc = ctypes.CDLL(None, use_errno=True)\n\
r = libc.syscall(nr, -100, ctypes.create_string_buffer(64), 0)\n\
print('open_by_handle_at', r, os.strerror(ctypes.get_errno()))\n";

#[test]
fn default_seccomp_filter_confines_pod_processes_and_probes() {
    let env = Env::new("seccomp");
    let script = format!(
        "grep Seccomp: /proc/self/status; \
         unshare -m true; echo unshare=$?; \
         mkdir -p /tmp/m && mount -t tmpfs none /tmp/m; echo mount=$?; \
         python3 -c \"{OPEN_BY_HANDLE}\"; \
         echo work=$(echo ok | tr a-z A-Z) $(head -c 3 /dev/zero | wc -c); \
         sleep 30"
    );
    let mut p = process("main", &script);
    // The exec probe passes only if it runs under the filter too.
    p.readiness = Some(Probe {
        action: ProbeAction::Exec(vec![
            "/bin/sh".into(),
            "-c".into(),
            "grep -q '^Seccomp:.2$' /proc/self/status".into(),
        ]),
        period_ms: 100,
        ..Default::default()
    });
    let mut h = env.start(&pod("seccomp", vec![p], RestartPolicy::Never));
    let st = wait_for(&h, 10, "readiness through the filtered exec probe", |s| {
        s.processes.first().is_some_and(|p| p.ready)
    });
    assert_eq!(st.phase, PodPhase::Running, "{st:?}");
    let out = wait_for_log(&env, "seccomp", "main", "work=");
    assert!(out.contains("Seccomp:\t2"), "{out}");
    assert!(out.contains("Operation not permitted"), "{out}");
    assert!(out.contains("unshare=1"), "{out}");
    assert!(!out.contains("mount=0"), "{out}");
    assert!(
        out.contains("open_by_handle_at -1 Operation not permitted"),
        "{out}"
    );
    assert!(out.contains("work=OK 3"), "{out}");
    h.stop(Duration::from_secs(1)).unwrap();
}

fn wait_for_log(env: &Env, pod: &str, process: &str, marker: &str) -> String {
    for _ in 0..200 {
        let out = env.log(pod, process);
        if out.contains(marker) {
            return out;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{marker} never logged: {}", env.log(pod, process));
}

/// The script of both device tests: mknod is allowed for every node, opening only the listed.
/// The nodes are made in `$DEVDIR` (default `/tmp`): a pod's own `/tmp` and `/dev` are `nodev`
/// tmpfs, where opening any node it made fails before the device cgroup is asked, so the pod
/// test gives it a host directory on a filesystem that allows devices.
const DEVICE_SCRIPT: &str = "d=$(mktemp -d -p ${DEVDIR:-/tmp}); \
     mknod $d/blk b 7 0 && echo mknod=ok; \
     head -c 1 $d/blk; echo blk=$?; \
     mknod $d/mem c 1 1 && head -c 1 $d/mem; echo mem=$?; \
     echo x > /dev/null && echo null=ok; \
     head -c 2 /dev/urandom | wc -c | sed 's/^/urandom=/'; \
     rm -r $d";

fn refused(out: &str, node: &str) -> bool {
    out.lines()
        .any(|l| l.contains(node) && l.contains("Operation not permitted"))
}

fn check_device_output(out: &str) {
    assert!(out.contains("mknod=ok"), "{out}");
    assert!(refused(out, "/blk"), "{out}");
    assert!(out.contains("blk=1"), "{out}");
    assert!(refused(out, "/mem"), "{out}");
    assert!(out.contains("null=ok"), "{out}");
    assert!(out.contains("urandom=2"), "{out}");
}

#[test]
fn pod_devices_are_the_default_allow_list() {
    let env = Env::new("devices");
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let script = format!(
        "grep devices /proc/self/cgroup; DEVDIR={}; {DEVICE_SCRIPT}",
        dir.path().display()
    );
    let mut p = pod(
        "devices",
        vec![process("main", &script)],
        RestartPolicy::Never,
    );
    host_dir(&mut p, dir.path());
    let mut h = env.start(&p);
    let st = wait_for(&h, 10, "completion", finished);
    let out = env.log("devices", "main");
    assert_eq!(st.phase, PodPhase::Succeeded, "{st:?} {out}");
    if env.rt.preflight().version == bramble_wire::objects::CgroupVersion::V1 {
        // The process sits in the pod's devices cgroup (shown from the pod's cgroup namespace,
        // whose root is the pod's cgroup).
        assert!(out.lines().any(|l| l.contains(":devices:/")), "{out}");
    }
    check_device_output(&out);
    h.stop(Duration::from_secs(1)).unwrap();
}

/// Removes the test's cgroup2 directory (killing what is left) also when the test fails.
struct Cg2Guard<'a>(&'a V2, String);

impl Drop for Cg2Guard<'_> {
    fn drop(&mut self) {
        let _ = self.0.kill_all(&self.1);
        let _ = self.0.remove(&self.1);
    }
}

#[test]
fn cgroup2_device_program_denies_unlisted_devices() {
    let unified = Path::new("/sys/fs/cgroup/unified");
    let magic = bramble_worker::sys::process::statfs_magic(unified).unwrap_or(0);
    let root = if magic == bramble_worker::sys::process::CGROUP2_MAGIC {
        unified
    } else {
        // A pure v2 host (the QEMU guests).
        Path::new("/sys/fs/cgroup")
    };
    assert_eq!(
        bramble_worker::sys::process::statfs_magic(root).unwrap_or(0),
        bramble_worker::sys::process::CGROUP2_MAGIC,
        "no cgroup2 mount at /sys/fs/cgroup/unified or /sys/fs/cgroup"
    );
    let v2 = V2::new(root.to_owned());
    let rel = format!("bramble-test-{}-devbpf", std::process::id());
    let _guard = Cg2Guard(&v2, rel.clone());
    v2.create(&rel, &Resources::default()).unwrap();
    let t = std::time::Instant::now();
    v2.restrict_devices(&rel, &DeviceRules::default()).unwrap();
    eprintln!(
        "device program ({} instructions) loaded and attached in {:?}",
        DeviceRules::default().ebpf_program().len(),
        t.elapsed()
    );

    // The child waits for a line on stdin, so that it is in the cgroup before it opens anything.
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("read go; {DEVICE_SCRIPT}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    v2.add_pid(&rel, child.id() as i32).unwrap();
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(child.wait().unwrap().success(), "{out}");
    check_device_output(&out);

    // Outside the cgroup the block device is not refused: the refusal above is the filter's.
    // (/dev/mem may be refused by kernel lockdown, so only the block device is compared.)
    let free = Command::new("/bin/sh")
        .arg("-c")
        .arg(DEVICE_SCRIPT)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&free.stderr);
    assert!(!refused(&text, "/blk"), "{text}");
}
