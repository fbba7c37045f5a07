//! The pod init: PID 1 of each pod's PID namespace (in a `host_pid` pod, a child subreaper in the
//! host's, so the pod's orphans still come to it).
//!
//! The worker clones a child into the pod's new namespaces, puts it into the pod's cgroup and lets
//! it re-execute the worker binary as `bramble-worker __bramble_init <state-dir>`. Being a fresh,
//! single-threaded process, the init can then allocate and use ordinary wrappers freely. It:
//!
//! 1. reads `<state-dir>/config` (versioned postcard [`InitConfig`], see [`crate::persist`]),
//!    opens everything it needs across `pivot_root` (state and log directories, `cgroup.procs`
//!    and OOM-counter files);
//! 2. enters a cgroup namespace rooted at the pod's cgroup (`enter_cgroup_ns`), sets the
//!    hostname, then runs its mount plan ([`mount_plan`], pure, then [`apply_mounts`]): mounts
//!    private, the pod's root (its rootfs read-only, or a new root of read-only host system
//!    directories with a `/scratch` working directory), tmpfs `/tmp`, a minimal `/dev`, a fresh
//!    `/proc` and read-only `/sys` with Kubernetes' masked and read-only paths, its cgroup
//!    read-only at `/sys/fs/cgroup`, volumes, `/etc/hosts`, and `pivot_root` into it (every
//!    mount point resolved inside the root: [`crate::sys::fs`]); brings `lo` up in a private
//!    network namespace;
//! 3. resolves each process's user and groups from the root's `/etc/passwd` and `/etc/group` and
//!    its capabilities ([`super::security`], pure); starts **all** the pod's processes, reaps every zombie (orphans included), copies each
//!    process's output into its ring log, and applies the restart policy itself with exponential
//!    backoff ([`super::restart`], a pure state machine) — so pods keep running and restarting
//!    while the worker is down;
//! 4. forwards SIGTERM/SIGINT to its children (PID 1 ignores signals without a handler; the init
//!    blocks them and reads them from a `signalfd`), stops restarting, and exits once they are
//!    gone;
//! 5. after every change, writes the pod's status atomically to `<state-dir>/status` (versioned
//!    postcard [`PodStatus`]) and writes a byte into the `<state-dir>/events` fifo to wake the worker.
//!    The fifo is opened read-write by the init, so writes never block or fail whether or not a
//!    worker is listening: a restarted worker just opens it again.

use std::ffi::CString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

use bramble_wire::objects::{
    ExitReason, PodPhase, PodStatus, ProcessSpec, ProcessState, ProcessStatus, RestartPolicy,
    Volume, VolumeSource,
};
use serde::{Deserialize, Serialize};

use super::log::RingLog;
use super::probe::{self, ExecContext, Prober, Verdict};
use super::restart::Restarts;
use super::security;
use crate::persist::{self, PodDir};
use crate::sys::caps::{self, Credentials};
use crate::sys::net::Interest;
use crate::sys::process::{self as sysproc, Exit, ReadOutcome, Signal};
use crate::sys::seccomp::SeccompProgram;
use crate::sys::spawn::{Exec, ProcessSetup};
use crate::sys::{fs, mount, net, spawn};

/// The hidden first argument that makes the worker binary run as a pod init.
pub const INIT_ARG: &str = "__bramble_init";

/// Everything the init needs, written by the worker to `<state-dir>/config`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct InitConfig {
    /// Hostname (the pod's name).
    pub hostname: String,
    /// Processes, in spec order.
    pub processes: Vec<InitProcess>,
    /// Restart policy.
    pub restart_policy: RestartPolicy,
    /// Root filesystem directory, if not the host's.
    pub rootfs: Option<String>,
    /// Whether the pod has its own network namespace (bring `lo` up).
    pub private_network: bool,
    /// Volumes.
    pub volumes: Vec<Volume>,
    /// Directory holding `emptyDir` volumes.
    pub empty_dir_base: String,
    /// First restart delay, ms.
    pub backoff_initial_ms: u64,
    /// Maximum restart delay, ms.
    pub backoff_max_ms: u64,
    /// A run this long resets the backoff, ms.
    pub backoff_reset_ms: u64,
    /// The pod's log directory.
    pub log_dir: String,
    /// Cap of one log file, bytes.
    pub log_cap: u64,
    /// Size of the rootfs's `/tmp` tmpfs, bytes.
    pub tmp_size: u64,
    /// Between SIGTERM and SIGKILL when a liveness probe fails, ms.
    #[serde(default)]
    pub termination_grace_ms: u64,
    /// Directory holding the pod's config map volumes (`<base>/<volume>`).
    pub config_volume_base: String,
    /// Directory holding the pod's secret volumes (`<base>/<volume>`, on a tmpfs).
    pub secret_volume_base: String,
    /// The processes' `env_from` variables ([`super::volumes::read_env_file`]), if any.
    pub env_file: Option<String>,
    /// A privileged pod: the host's `/dev`, writable `/sys` and cgroups, nothing masked (its
    /// root is still a new one when it has none of its own).
    pub privileged: bool,
    /// The pod shares the host's IPC namespace: no `/dev/mqueue` of its own.
    pub host_ipc: bool,
    /// The pod's cgroup (its cgroup namespace and `/sys/fs/cgroup`); `None` without cgroups.
    pub cgroup: Option<PodCgroup>,
    /// An image root: an overlayfs mounted on `rootfs` (which is then an empty mount point).
    pub overlay: Option<OverlayRoot>,
}

/// The overlayfs root of a pod with an image.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct OverlayRoot {
    /// The directory holding the unpacked layers (`<state>/layers`).
    pub lower_base: String,
    /// Layer directory names in `lower_base`, top first.
    pub lowers: Vec<String>,
    /// The pod's writable layer.
    pub upper: String,
    /// overlayfs's work directory (same file system as `upper`).
    pub work: String,
    /// A tmpfs of this size holds `upper` and `work` (mounted on their parent in the pod's
    /// mount namespace, gone with it); `None`: they are on the state disk.
    pub tmpfs_size: Option<u64>,
}

/// One process, as the init sees it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct InitProcess {
    /// The spec.
    pub spec: ProcessSpec,
    /// `cgroup.procs` files to join before exec.
    pub cgroup_procs: Vec<String>,
    /// File with the `oom_kill` counter of the process's cgroup.
    pub oom_file: Option<String>,
}

/// Runs the init if the process was started as one; returns its exit code. Call first in `main`.
pub fn run_if_requested() -> Option<i32> {
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() != Some(std::ffi::OsStr::new(INIT_ARG)) {
        return None;
    }
    let state_dir = PathBuf::from(args.next()?);
    Some(match run(&state_dir) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("bramble pod init: {e}");
            2
        }
    })
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

type Error = Box<dyn std::error::Error>;

struct Proc {
    spec: ProcessSpec,
    exec: Option<Exec>,
    exec_error: Option<String>,
    workdir: Option<CString>,
    /// User, groups and capabilities (resolved by [`prepare`] inside the pod's root).
    creds: Credentials,
    /// The pod is privileged.
    privileged: bool,
    /// The capabilities the init can give ([`crate::sys::caps::available`]).
    available_caps: u64,
    /// Why the last start failed, for the pod's status message (cleared by a start).
    start_error: Option<String>,
    procs_fds: Vec<OwnedFd>,
    /// On cgroup v2: the directory of its own cgroup, to be born in (`clone3`).
    cgroup_dir: Option<OwnedFd>,
    oom_fd: Option<OwnedFd>,
    oom_seen: u64,
    log: Option<RingLog>,
    /// Runs started so far (a start after the first is a restart: its log starts anew).
    runs: u32,
    pipe: Option<OwnedFd>,
    old_pipes: Vec<OwnedFd>,
    status: ProcessStatus,
    pid: Option<i32>,
    /// Restart policy and backoff (pure: time is an input).
    restart: Restarts,
    /// Liveness and readiness probes.
    probes: Vec<Prober>,
    /// When to SIGKILL a process a liveness probe failed (after SIGTERM and the grace).
    kill_at: Option<Instant>,
    /// The current run was ended by a failed liveness probe: restart it like a failure.
    liveness_killed: bool,
    /// The seccomp filter of the process and its exec probes (`None`: unconfined).
    seccomp: Option<Rc<SeccompProgram>>,
}

/// The default seccomp program (containerd's `RuntimeDefault` equivalent, see
/// [`super::seccomp`]) for the architecture this binary runs on; `None` (unconfined) only on an
/// architecture without a syscall table.
pub fn default_seccomp() -> Option<Rc<SeccompProgram>> {
    let arch = super::seccomp::Arch::current()?;
    let prog = super::seccomp::default_program(arch);
    Some(Rc::new(SeccompProgram::new(prog.iter().map(|i| i.raw()))))
}

/// The seccomp filter of one process: the default one, or none for a `privileged` pod or a
/// process with `seccomp = "unconfined"`.
pub fn seccomp_for(
    spec: &ProcessSpec,
    privileged: bool,
    default: Option<&Rc<SeccompProgram>>,
) -> Option<Rc<SeccompProgram>> {
    if privileged || spec.seccomp == bramble_wire::objects::SeccompProfile::Unconfined {
        return None;
    }
    default.cloned()
}

fn oom_count(fd: &Option<OwnedFd>) -> u64 {
    fd.as_ref()
        .and_then(|f| sysproc::pread_string(f.as_fd()).ok())
        .map_or(0, |s| super::cgroup::parse_oom_kills(&s))
}

/// Resolves a command like `execvp` would, inside the (already pivoted) root.
pub(crate) fn resolve(cmd: &str, env: &[(String, String)]) -> Option<PathBuf> {
    if cmd.contains('/') {
        return Some(PathBuf::from(cmd));
    }
    let path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map_or(super::DEFAULT_PATH, |(_, v)| v.as_str());
    path.split(':').map(|d| Path::new(d).join(cmd)).find(|p| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// The text of a pod's `/etc/hosts` when it has its own root: localhost, its hostname, and
/// every service of its namespace known when it started, by name, at the node's proxy (the
/// addresses of the `BRAMBLE_SERVICE_<NAME>_HOST` variables; service names are DNS labels, so
/// `<NAME>` maps back exactly). Written in the pod's run dir and bind-mounted read-only over the
/// root's file; a root without `/etc/hosts` keeps it as it is.
fn hosts_file(hostname: &str, env: &[(String, String)]) -> String {
    let mut out = format!("127.0.0.1\tlocalhost\n::1\tlocalhost\n127.0.1.1\t{hostname}\n");
    for (k, v) in env {
        if let Some(name) = k
            .strip_prefix("BRAMBLE_SERVICE_")
            .and_then(|n| n.strip_suffix("_HOST"))
        {
            let name = name.to_ascii_lowercase().replace('_', "-");
            out.push_str(&format!("{v}\t{name}\n"));
        }
    }
    out
}

/// The working directory of processes without a `workdir` in pods without a root filesystem
/// of their own: a writable directory on disk, private to the pod.
pub const SCRATCH_DIR: &str = "/scratch";

/// Size of every pod's `/dev/shm` (Docker's default).
pub const SHM_SIZE: u64 = 64 << 20;

/// What Kubernetes (containerd's defaults) hides from unprivileged pods: files get `/dev/null`
/// bound over them, directories an empty read-only tmpfs; missing paths are skipped.
pub const MASKED_PATHS: [&str; 11] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// What Kubernetes makes read-only (nosuid, nodev, noexec) for unprivileged pods.
pub const READ_ONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The host directories a pod without a root of its own sees (read-only; the ones that are
/// symlinks on the host, as on merged-`/usr` systems, are recreated as the same symlinks).
pub const HOST_DIRS: [&str; 7] = ["usr", "bin", "sbin", "lib", "lib64", "lib32", "libx32"];

/// The host `/etc` entries a pod without a root of its own sees (read-only, symlinks followed).
/// Its `/etc/hosts` is the pod's own.
pub const HOST_ETC: [&str; 15] = [
    "passwd",
    "group",
    "resolv.conf",
    "nsswitch.conf",
    "ssl",
    "ca-certificates",
    "alternatives",
    "localtime",
    "os-release",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "mime.types",
    "protocols",
    "services",
];

/// The device nodes of every unprivileged pod's `/dev` (the host's nodes bound in).
pub const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// The pod's cgroup, as its init needs it for its cgroup namespace and `/sys/fs/cgroup`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct PodCgroup {
    /// `cgroup.procs` of the pod's cgroup, one per hierarchy: the init joins it for a moment,
    /// so that its new cgroup namespace is rooted there.
    pub pod_procs: Vec<String>,
    /// `cgroup.procs` of the init's own leaf (`_init`), where it goes back.
    pub leaf_procs: Vec<String>,
    /// v1: the controllers of each hierarchy the worker uses (`cpu,cpuacct`), in the order of
    /// `pod_procs`; empty on v2.
    pub v1_hierarchies: Vec<String>,
}

/// One step of a pod's mount setup (see [`mount_plan`]). Every destination is inside the pod's
/// root and is resolved inside it ([`crate::sys::fs::InRoot`]): a symlink in the root never
/// leads a mount or a created mount point out of it. Missing mount points are created (inside
/// the root) as directories, or as files when the source is not a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountOp {
    /// Make every mount private, recursively (nothing propagates to the host).
    MakePrivate,
    /// The pod's root filesystem bind-mounted read-only on itself.
    RootBind(PathBuf),
    /// A new root for a pod without one: a tmpfs on this directory of the pod's run dir.
    RootTmpfs(PathBuf),
    /// An image root: overlayfs of read-only layers under a writable upper, on `root`.
    RootOverlay {
        /// Mount point (an empty directory of the pod's run dir).
        root: PathBuf,
        /// Where the layer directories are.
        lower_base: PathBuf,
        /// Layer directory names, top first.
        lowers: Vec<String>,
        /// The pod's writable layer.
        upper: PathBuf,
        /// overlayfs's work directory.
        work: PathBuf,
        /// Mount a tmpfs of this size on `upper`'s parent first and make `upper` and `work` in
        /// it.
        tmpfs: Option<u64>,
    },
    /// Bind-mount `src` (a host path) on `dst` with its submounts.
    Bind {
        /// Source.
        src: PathBuf,
        /// Mount point.
        dst: PathBuf,
        /// Read-only, submounts included.
        read_only: bool,
    },
    /// A host entry of a new root: a directory or file bound read-only on `dst`, or, if it is a
    /// symlink and `keep_symlink`, the same symlink; nothing if the host has no `src`.
    HostEntry {
        /// The host path.
        src: PathBuf,
        /// Where in the root.
        dst: PathBuf,
        /// Recreate a symlink (`/lib -> usr/lib`) instead of following it.
        keep_symlink: bool,
    },
    /// A tmpfs of at most `size` bytes on `dst` (nosuid, nodev).
    Tmpfs {
        /// Mount point.
        dst: PathBuf,
        /// Size cap, bytes.
        size: u64,
        /// Mode of its root.
        mode: u32,
        /// noexec too.
        noexec: bool,
    },
    /// A symlink `link` → `target`.
    Symlink {
        /// What it points to.
        target: PathBuf,
        /// The link.
        link: PathBuf,
    },
    /// A fresh procfs on this path.
    Proc(PathBuf),
    /// `/sys`: a fresh sysfs (`fresh`, the pod has its own network namespace) or the host's
    /// `/sys` bound with its submounts. Skipped, with everything below it, if a read-only root
    /// has no such directory.
    Sys {
        /// Mount point.
        dst: PathBuf,
        /// A new sysfs rather than the host's.
        fresh: bool,
        /// Read-only (submounts included).
        read_only: bool,
    },
    /// A new devpts instance (`/dev/pts`).
    Devpts(PathBuf),
    /// The IPC namespace's message queue filesystem (`/dev/mqueue`).
    Mqueue(PathBuf),
    /// The cgroup v2 hierarchy as the pod's cgroup namespace shows it.
    Cgroup2 {
        /// Mount point.
        dst: PathBuf,
        /// Read-only.
        read_only: bool,
    },
    /// A cgroup v1 hierarchy as the pod's cgroup namespace shows it.
    Cgroup1 {
        /// Mount point.
        dst: PathBuf,
        /// The hierarchy's controllers (`cpu,cpuacct`).
        controllers: String,
        /// Read-only.
        read_only: bool,
    },
    /// Hide a path: `/dev/null` over a file, an empty read-only tmpfs over a directory; nothing
    /// if it is missing.
    Mask(PathBuf),
    /// Bind a path on itself read-only, nosuid, nodev, noexec; nothing if it is missing.
    ReadOnly(PathBuf),
    /// Make the mount at this path (a mount's root) read-only.
    RemountReadOnly(PathBuf),
    /// A config map or secret volume directory, bind-mounted read-only.
    ConfigVolume {
        /// The prepared volume directory.
        src: PathBuf,
        /// Mount point.
        dst: PathBuf,
    },
    /// The pod's writable scratch directory: `src` (in the run dir, created mode 1777) bound on
    /// `dst`.
    Scratch {
        /// The directory in the pod's run dir.
        src: PathBuf,
        /// Where in the root.
        dst: PathBuf,
    },
    /// Write `contents` to `file` (in the run dir) and bind-mount it read-only on `dst` (the
    /// root's `/etc/hosts`) if the root has that file, or always if `create`.
    Hosts {
        /// The hosts file in the pod's run dir.
        file: PathBuf,
        /// Its text.
        contents: String,
        /// The root's `/etc/hosts`.
        dst: PathBuf,
        /// Create the mount point (a new root).
        create: bool,
    },
    /// `pivot_root` into this directory and detach the old root.
    PivotRoot(PathBuf),
}

/// The root a pod gets when it has none of its own: `<run dir>/root`.
pub fn new_root_dir(pod_dir: &PodDir) -> PathBuf {
    pod_dir.path().join("root")
}

/// The pod's mount setup as a list of steps, pure. [`apply_mounts`] runs it.
///
/// `cgroup_ns_at_pod`: the init's cgroup namespace is rooted at the pod's cgroup (fresh cgroup
/// mounts show it); if not (v2 refused the init in a cgroup with controllers enabled for its
/// children), the pod's cgroup directories are bound instead.
pub fn mount_plan(
    cfg: &InitConfig,
    pod_dir: &PodDir,
    cgroup_ns_at_pod: bool,
    resolv_conf: Option<&str>,
) -> Vec<MountOp> {
    let mut plan = vec![MountOp::MakePrivate];
    let new_root = cfg.rootfs.is_none();
    let root = cfg
        .rootfs
        .as_deref()
        .map_or_else(|| new_root_dir(pod_dir), PathBuf::from);
    let at = |p: &str| root.join(p.trim_start_matches('/'));
    let unprivileged = !cfg.privileged;
    if new_root {
        plan.push(MountOp::RootTmpfs(root.clone()));
        for d in HOST_DIRS {
            plan.push(MountOp::HostEntry {
                src: Path::new("/").join(d),
                dst: at(d),
                keep_symlink: true,
            });
        }
        for e in HOST_ETC {
            plan.push(MountOp::HostEntry {
                src: Path::new("/etc").join(e),
                dst: at("etc").join(e),
                keep_symlink: false,
            });
        }
    } else if let Some(o) = &cfg.overlay {
        plan.push(MountOp::RootOverlay {
            root: root.clone(),
            lower_base: PathBuf::from(&o.lower_base),
            lowers: o.lowers.clone(),
            upper: PathBuf::from(&o.upper),
            work: PathBuf::from(&o.work),
            tmpfs: o.tmpfs_size,
        });
    } else {
        plan.push(MountOp::RootBind(root.clone()));
    }
    plan.push(MountOp::Tmpfs {
        dst: at("tmp"),
        size: cfg.tmp_size,
        mode: 0o1777,
        noexec: false,
    });
    // /dev: a minimal one, or the host's for privileged pods; both with their own pts, shm and
    // mqueue.
    let dev = at("dev");
    if cfg.privileged {
        plan.push(MountOp::Bind {
            src: "/dev".into(),
            dst: dev.clone(),
            read_only: false,
        });
    } else {
        plan.push(MountOp::Tmpfs {
            dst: dev.clone(),
            size: 1 << 20,
            mode: 0o755,
            noexec: true,
        });
        for node in DEVICES {
            plan.push(MountOp::Bind {
                src: Path::new("/dev").join(node),
                dst: dev.join(node),
                read_only: false,
            });
        }
    }
    plan.push(MountOp::Devpts(dev.join("pts")));
    if unprivileged {
        plan.push(MountOp::Symlink {
            target: "pts/ptmx".into(),
            link: dev.join("ptmx"),
        });
    }
    plan.push(MountOp::Tmpfs {
        dst: dev.join("shm"),
        size: SHM_SIZE,
        mode: 0o1777,
        noexec: true,
    });
    if !cfg.host_ipc {
        plan.push(MountOp::Mqueue(dev.join("mqueue")));
    }
    if unprivileged {
        for (link, target) in [
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
        ] {
            plan.push(MountOp::Symlink {
                target: target.into(),
                link: dev.join(link),
            });
        }
    }
    plan.push(MountOp::Proc(at("proc")));
    plan.push(MountOp::Sys {
        dst: at("sys"),
        fresh: cfg.private_network,
        read_only: unprivileged,
    });
    if unprivileged {
        plan.extend(MASKED_PATHS.iter().map(|p| MountOp::Mask(at(p))));
        plan.extend(READ_ONLY_PATHS.iter().map(|p| MountOp::ReadOnly(at(p))));
    }
    if let Some(cg) = &cfg.cgroup {
        let dst = at("sys/fs/cgroup");
        let pod_dirs: Vec<PathBuf> = cg
            .pod_procs
            .iter()
            .filter_map(|f| Path::new(f).parent().map(Path::to_owned))
            .collect();
        if cg.v1_hierarchies.is_empty() {
            // An empty tmpfs first: a pod on the host's network has the host's /sys bound, with
            // the host's cgroup2 mount here, and the kernel refuses to mount a superblock on the
            // root of its own mount (EBUSY).
            plan.push(MountOp::Tmpfs {
                dst: dst.clone(),
                size: 1 << 20,
                mode: 0o755,
                noexec: true,
            });
            plan.push(match (cgroup_ns_at_pod, pod_dirs.first()) {
                (false, Some(src)) => MountOp::Bind {
                    src: src.clone(),
                    dst,
                    read_only: unprivileged,
                },
                _ => MountOp::Cgroup2 {
                    dst,
                    read_only: unprivileged,
                },
            });
        } else {
            plan.push(MountOp::Tmpfs {
                dst: dst.clone(),
                size: 1 << 20,
                mode: 0o755,
                noexec: true,
            });
            for (i, controllers) in cg.v1_hierarchies.iter().enumerate() {
                let hdst = dst.join(controllers);
                plan.push(match (cgroup_ns_at_pod, pod_dirs.get(i)) {
                    (false, Some(src)) => MountOp::Bind {
                        src: src.clone(),
                        dst: hdst,
                        read_only: unprivileged,
                    },
                    _ => MountOp::Cgroup1 {
                        dst: hdst,
                        controllers: controllers.clone(),
                        read_only: unprivileged,
                    },
                });
                // `cpu` and `cpuacct` beside `cpu,cpuacct`, as systemd lays them out.
                if controllers.contains(',') {
                    for c in controllers.split(',') {
                        plan.push(MountOp::Symlink {
                            target: controllers.into(),
                            link: dst.join(c),
                        });
                    }
                }
            }
            if unprivileged {
                plan.push(MountOp::RemountReadOnly(dst));
            }
        }
    }
    if new_root {
        plan.push(MountOp::Scratch {
            src: pod_dir.path().join("scratch"),
            dst: at(SCRATCH_DIR),
        });
    }
    for v in &cfg.volumes {
        let dst = at(&v.mount_path);
        plan.push(match &v.source {
            VolumeSource::HostPath { path, read_only } => MountOp::Bind {
                src: path.into(),
                dst,
                read_only: *read_only,
            },
            VolumeSource::EmptyDir => MountOp::Bind {
                src: Path::new(&cfg.empty_dir_base).join(&v.name),
                dst,
                read_only: false,
            },
            VolumeSource::ConfigMap { .. } => MountOp::ConfigVolume {
                src: Path::new(&cfg.config_volume_base).join(&v.name),
                dst,
            },
            VolumeSource::Secret { .. } => MountOp::ConfigVolume {
                src: Path::new(&cfg.secret_volume_base).join(&v.name),
                dst,
            },
        });
    }
    let env = cfg.processes.first().map_or(&[][..], |p| &p.spec.env[..]);
    plan.push(MountOp::Hosts {
        file: pod_dir.hosts(),
        contents: hosts_file(&cfg.hostname, env),
        dst: at("etc/hosts"),
        create: new_root || cfg.overlay.is_some(),
    });
    if let Some(contents) = resolv_conf {
        plan.push(MountOp::Hosts {
            file: pod_dir.resolv_conf(),
            contents: contents.to_string(),
            dst: at("etc/resolv.conf"),
            create: new_root || cfg.overlay.is_some(),
        });
    }
    if new_root {
        plan.push(MountOp::RemountReadOnly(root.clone()));
    }
    plan.push(MountOp::PivotRoot(root));
    plan
}

/// The root of a plan: where its `RootBind`/`RootTmpfs` mounts.
fn plan_root(plan: &[MountOp]) -> Option<&Path> {
    plan.iter().find_map(|op| match op {
        MountOp::RootBind(r) | MountOp::RootTmpfs(r) | MountOp::RootOverlay { root: r, .. } => {
            Some(r.as_path())
        }
        _ => None,
    })
}

/// A mount point inside the pod's root, resolved there (and created if asked).
struct Point {
    fd: OwnedFd,
    shown: PathBuf,
}

impl Point {
    fn target(&self) -> mount::Target<'_> {
        mount::Target {
            fd: self.fd.as_fd(),
            shown: &self.shown,
        }
    }
}

enum Make {
    /// Must exist.
    No,
    /// A directory.
    Dir,
    /// A file.
    File,
}

fn point(root: &Path, dst: &Path, make: Make) -> Result<Option<Point>, Error> {
    let r = fs::InRoot::open(root)?;
    let rel = dst.strip_prefix(root).map_err(|_| {
        format!(
            "mount point {} is outside the pod's root {}",
            dst.display(),
            root.display()
        )
    })?;
    let fd = match make {
        Make::No => r.open_path(rel)?,
        Make::Dir => Some(
            r.mkdir_all(rel, 0o755)
                .map_err(|e| missing_point(root, rel, e))?,
        ),
        Make::File => Some(
            r.create_file(rel, 0o644)
                .map_err(|e| missing_point(root, rel, e))?,
        ),
    };
    Ok(fd.map(|fd| Point {
        fd,
        shown: dst.to_owned(),
    }))
}

fn missing_point(root: &Path, rel: &Path, e: crate::sys::SysError) -> Error {
    // The fix first: the agent keeps the first 300 characters of this line as the pod's reason.
    let text = e.to_string();
    if text.contains("EROFS") || text.contains("ENOENT") {
        format!(
            "mount /{}: no such directory; create it or give the pod a rootfs (cannot create it \
             in the pod's root {}: {text})",
            rel.display(),
            root.display()
        )
    } else {
        format!(
            "mount /{}: cannot create the mount point; pick an existing directory or give the pod \
             a rootfs (in the pod's root {}: {text})",
            rel.display(),
            root.display()
        )
    }
    .into()
}

/// The mount point of a bind of `src`: a directory for a directory, else a file.
fn bind_point(root: &Path, src: &Path, dst: &Path) -> Result<Option<Point>, Error> {
    let make = if src.is_dir() { Make::Dir } else { Make::File };
    point(root, dst, make)
}

/// Makes the mount freshly mounted at `dst` read-only (resolved again: the old fd names the
/// mount point underneath).
fn read_only_after(root: &Path, dst: &Path, recursive: bool, seal: bool) -> Result<(), Error> {
    let p = point(root, dst, Make::No)?
        .ok_or_else(|| format!("{} vanished after mounting", dst.display()))?;
    mount::set_attrs(
        p.target(),
        mount::Attrs {
            read_only: true,
            no_exec_dev_suid: seal,
            recursive,
        },
    )?;
    Ok(())
}

/// Runs a [`mount_plan`] (inside the pod's mount namespace).
pub fn apply_mounts(plan: &[MountOp]) -> Result<(), Error> {
    let root = plan_root(plan)
        .ok_or("mount plan without a root")?
        .to_owned();
    let root = root.as_path();
    // A read-only root without `/sys`: nothing is mounted there or below.
    let mut skip_under: Option<PathBuf> = None;
    for op in plan {
        if let Some(skip) = &skip_under
            && op_dst(op).is_some_and(|d| d.starts_with(skip))
        {
            continue;
        }
        match op {
            MountOp::MakePrivate => mount::make_rprivate()?,
            MountOp::RootBind(r) => mount::bind(r, r, true)?,
            MountOp::RootOverlay {
                root,
                lower_base,
                lowers,
                upper,
                work,
                tmpfs,
            } => {
                if let Some(size) = tmpfs {
                    let rw = upper.parent().ok_or("the writable layer has no parent")?;
                    mount::mount_tmpfs(rw, *size, 0o755)?;
                    for d in [upper, work] {
                        std::fs::create_dir(d).map_err(|e| {
                            format!("making the writable layer's {}: {e}", d.display())
                        })?;
                    }
                }
                crate::sys::layers::mount_overlay(root, lower_base, lowers, upper, work)?
            }
            MountOp::RootTmpfs(r) => {
                std::fs::create_dir_all(r)
                    .map_err(|e| format!("creating the pod's root {}: {e}", r.display()))?;
                mount::mount_tmpfs(r, 1 << 20, 0o755)?;
            }
            MountOp::Bind {
                src,
                dst,
                read_only,
            } => {
                let p = bind_point(root, src, dst)?.ok_or("no mount point")?;
                mount::bind_at(src, p.target(), true)?;
                if *read_only {
                    read_only_after(root, dst, true, false)?;
                }
            }
            MountOp::HostEntry {
                src,
                dst,
                keep_symlink,
            } => {
                let Ok(meta) = std::fs::symlink_metadata(src) else {
                    continue;
                };
                if meta.file_type().is_symlink() && *keep_symlink {
                    let target = std::fs::read_link(src)?;
                    let r = fs::InRoot::open(root)?;
                    r.symlink(&target, dst.strip_prefix(root)?)?;
                    continue;
                }
                if !src.exists() {
                    continue;
                }
                let p = bind_point(root, src, dst)?.ok_or("no mount point")?;
                mount::bind_at(src, p.target(), true)?;
                read_only_after(root, dst, true, false)?;
            }
            MountOp::Tmpfs {
                dst,
                size,
                mode,
                noexec,
            } => {
                let p = point(root, dst, Make::Dir)?.ok_or("no mount point")?;
                mount::tmpfs_at(p.target(), *size, *mode, *noexec, false)?;
            }
            MountOp::Symlink { target, link } => {
                fs::InRoot::open(root)?.symlink(target, link.strip_prefix(root)?)?;
            }
            MountOp::Proc(dst) => {
                let p = point(root, dst, Make::Dir)?.ok_or("no mount point")?;
                mount::proc_at(p.target())?;
            }
            MountOp::Sys {
                dst,
                fresh,
                read_only,
            } => {
                let p = match point(root, dst, Make::Dir) {
                    Ok(Some(p)) => p,
                    _ if !root_writable(root) => {
                        skip_under = Some(dst.clone());
                        continue;
                    }
                    Ok(None) => return Err("no mount point".into()),
                    Err(e) => return Err(e),
                };
                if *fresh {
                    mount::sysfs_at(p.target(), *read_only)?;
                } else {
                    mount::bind_at(Path::new("/sys"), p.target(), true)?;
                    if *read_only {
                        read_only_after(root, dst, true, false)?;
                    }
                }
            }
            MountOp::Devpts(dst) => {
                let p = point(root, dst, Make::Dir)?.ok_or("no mount point")?;
                mount::devpts_at(p.target())?;
            }
            MountOp::Mqueue(dst) => {
                let p = point(root, dst, Make::Dir)?.ok_or("no mount point")?;
                mount::mqueue_at(p.target())?;
            }
            MountOp::Cgroup2 { dst, read_only } => {
                let p = point(root, dst, Make::Dir)?.ok_or("no mount point")?;
                mount::cgroup2_at(p.target(), *read_only)?;
            }
            MountOp::Cgroup1 {
                dst,
                controllers,
                read_only,
            } => {
                let p = point(root, dst, Make::Dir)?.ok_or("no mount point")?;
                mount::cgroup1_at(p.target(), controllers, *read_only)?;
            }
            MountOp::Mask(dst) => {
                let Some(p) = point(root, dst, Make::No)? else {
                    continue;
                };
                if fs::kind_of(p.fd.as_fd(), dst)? == fs::Kind::Dir {
                    mount::tmpfs_at(p.target(), 0, 0o555, true, true)?;
                } else {
                    mount::bind_at(Path::new("/dev/null"), p.target(), false)?;
                }
            }
            MountOp::ReadOnly(dst) => {
                let Some(p) = point(root, dst, Make::No)? else {
                    continue;
                };
                let itself = fs::fd_path(p.fd.as_fd());
                mount::bind_at(&itself, p.target(), true)?;
                read_only_after(root, dst, false, true)?;
            }
            MountOp::RemountReadOnly(dst) => {
                if dst == root {
                    // The root itself: no path inside it to resolve.
                    let fd = sysproc::open_dir(root)?;
                    let t = mount::Target {
                        fd: fd.as_fd(),
                        shown: root,
                    };
                    mount::set_attrs(
                        t,
                        mount::Attrs {
                            read_only: true,
                            ..Default::default()
                        },
                    )?;
                } else {
                    read_only_after(root, dst, false, false)?;
                }
            }
            MountOp::ConfigVolume { src, dst } => {
                if !src.is_dir() {
                    return Err(format!(
                        "volume directory {} is missing: the worker did not prepare it",
                        src.display()
                    )
                    .into());
                }
                let p = point(root, dst, Make::Dir)?.ok_or("no mount point")?;
                mount::bind_at(src, p.target(), true)?;
                read_only_after(root, dst, true, false)?;
            }
            MountOp::Scratch { src, dst } => {
                std::fs::create_dir_all(src)?;
                std::fs::set_permissions(src, std::fs::Permissions::from_mode(0o1777))?;
                let p = point(root, dst, Make::Dir)?.ok_or("no mount point")?;
                mount::bind_at(src, p.target(), true)?;
            }
            MountOp::Hosts {
                file,
                contents,
                dst,
                create,
            } => {
                let p = if *create {
                    point(root, dst, Make::File)?
                } else {
                    point(root, dst, Make::No)?.filter(|p| {
                        fs::kind_of(p.fd.as_fd(), dst).is_ok_and(|k| k != fs::Kind::Dir)
                    })
                };
                if let Some(p) = p {
                    std::fs::write(file, contents)?;
                    mount::bind_at(file, p.target(), false)?;
                    read_only_after(root, dst, false, false)?;
                }
            }
            MountOp::PivotRoot(r) => mount::pivot_root(r)?,
        }
    }
    Ok(())
}

/// Whether the pod's root accepts new directories (a new root before it is sealed).
fn root_writable(root: &Path) -> bool {
    !fs::is_read_only(root)
}

/// The mount point of an op, if it has one inside the root.
fn op_dst(op: &MountOp) -> Option<&Path> {
    Some(match op {
        MountOp::Bind { dst, .. }
        | MountOp::HostEntry { dst, .. }
        | MountOp::Tmpfs { dst, .. }
        | MountOp::Sys { dst, .. }
        | MountOp::Cgroup2 { dst, .. }
        | MountOp::Cgroup1 { dst, .. }
        | MountOp::ConfigVolume { dst, .. }
        | MountOp::Scratch { dst, .. }
        | MountOp::Hosts { dst, .. } => dst,
        MountOp::Symlink { link, .. } => link,
        MountOp::Proc(d)
        | MountOp::Devpts(d)
        | MountOp::Mqueue(d)
        | MountOp::Mask(d)
        | MountOp::ReadOnly(d)
        | MountOp::RemountReadOnly(d) => d,
        MountOp::MakePrivate
        | MountOp::RootBind(_)
        | MountOp::RootTmpfs(_)
        | MountOp::RootOverlay { .. }
        | MountOp::PivotRoot(_) => return None,
    })
}

/// Puts the init into a new cgroup namespace rooted at the pod's cgroup: it joins the pod's
/// cgroup for a moment (every hierarchy), unshares, and goes back to its leaf. Returns whether
/// the namespace is rooted at the pod's cgroup.
///
/// cgroup v2 refuses a process in a cgroup that enabled controllers for its children, and the
/// pod's cgroup does (for its leaves). When its only child is the init's own leaf (no process has
/// limits of its own, so no leaf holds limits), the init disables them for that moment and
/// enables them again once it is back in its leaf; it is the pod's only process then. Otherwise
/// (a process with limits of its own) the namespace is rooted at the init's leaf, and the plan
/// binds the pod's cgroup directory instead.
fn enter_cgroup_ns(cg: &PodCgroup) -> Result<bool, Error> {
    let join = |files: &[String]| files.iter().all(|f| std::fs::write(f, "0").is_ok());
    let mut at_pod = join(&cg.pod_procs);
    let mut reenable = None;
    if !at_pod
        && cg.v1_hierarchies.is_empty()
        && let Some(sc) = v2_controls_to_lift(cg)
    {
        let enabled = std::fs::read_to_string(&sc).unwrap_or_default();
        let names: Vec<&str> = enabled.split_whitespace().collect();
        let off: Vec<String> = names.iter().map(|c| format!("-{c}")).collect();
        if !names.is_empty() && std::fs::write(&sc, off.join(" ")).is_ok() {
            let on: Vec<String> = names.iter().map(|c| format!("+{c}")).collect();
            reenable = Some((sc, on.join(" ")));
            at_pod = join(&cg.pod_procs);
        }
    }
    let unshared = if at_pod || reenable.is_none() {
        mount::unshare_cgroup()
    } else {
        Ok(())
    };
    for f in &cg.leaf_procs {
        std::fs::write(f, "0").map_err(|e| format!("joining the pod init's cgroup {f}: {e}"))?;
    }
    if let Some((sc, on)) = reenable {
        std::fs::write(&sc, &on).map_err(|e| {
            format!(
                "enabling the controllers {on} again in {}: {e}",
                sc.display()
            )
        })?;
        if !at_pod {
            // Could not join even so: rooted at the leaf after all.
            mount::unshare_cgroup()?;
        }
    }
    unshared?;
    Ok(at_pod)
}

/// v2: the pod's `cgroup.subtree_control` if the init's leaf is the pod cgroup's only child.
fn v2_controls_to_lift(cg: &PodCgroup) -> Option<PathBuf> {
    let pod = Path::new(cg.pod_procs.first()?).parent()?;
    let leaf = Path::new(cg.leaf_procs.first()?).parent()?;
    let children: Vec<PathBuf> = std::fs::read_dir(pod)
        .ok()?
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    (children == [leaf]).then(|| pod.join("cgroup.subtree_control"))
}

/// The init's main loop. Returns its exit code: 0 if the first process completed.
pub fn run(state_dir: &Path) -> Result<i32, Error> {
    let pod_dir = PodDir::at(state_dir);
    let (_, cfg): (_, InitConfig) =
        persist::decode_postcard(persist::POD_CONFIG, &std::fs::read(pod_dir.config())?)?;
    spawn::protect_from_oom();
    // The cgroup namespace first: before the mounts (the cgroup mounts show its root) and before
    // opening any file of the leaves (on v2 they may be recreated).
    let cgroup_ns_at_pod = match &cfg.cgroup {
        Some(cg) => enter_cgroup_ns(cg)?,
        None => false,
    };
    let sfd = sysproc::block_signals(&[Signal::CHLD, Signal::TERM, Signal::INT, Signal::HUP])?;
    let state_fd = sysproc::open_dir(state_dir)?;
    let log_fd = sysproc::open_dir(Path::new(&cfg.log_dir))?;
    let events = sysproc::open_fifo_rw_at(state_fd.as_fd(), PodDir::EVENTS)?;
    let devnull = sysproc::open_read(Path::new("/dev/null"))?;
    // Built once; every process and exec probe shares it.
    let default_seccomp = default_seccomp();
    let backoff = super::Backoff {
        initial: Duration::from_millis(cfg.backoff_initial_ms),
        max: Duration::from_millis(cfg.backoff_max_ms),
        reset_after: Duration::from_millis(cfg.backoff_reset_ms),
    };
    // Not PID 1 in a host_pid pod: orphans must still come to the init to be reaped.
    caps::become_subreaper()?;
    let available_caps = caps::available();
    let mut procs = Vec::new();
    for p in &cfg.processes {
        let procs_fds = p
            .cgroup_procs
            .iter()
            .map(|f| spawn::open_write(Path::new(f)))
            .collect::<Result<Vec<_>, _>>()?;
        // One `cgroup.procs` on a cgroup v2 filesystem: start it inside with CLONE_INTO_CGROUP.
        let cgroup_dir = match p.cgroup_procs.as_slice() {
            [one] => spawn::open_cgroup2_dir_of(Path::new(one)),
            _ => None,
        };
        let oom_fd = p
            .oom_file
            .as_ref()
            .and_then(|f| sysproc::open_read(Path::new(f)).ok());
        let log = RingLog::open(&log_fd, &p.spec.name, cfg.log_cap)?;
        let mut spec = p.spec.clone();
        if cfg.rootfs.is_none() && spec.workdir.is_none() {
            // A new root: its scratch directory, not the read-only `/`.
            spec.workdir = Some(SCRATCH_DIR.into());
        }
        procs.push(Proc {
            spec,
            exec: None,
            exec_error: None,
            workdir: None,
            creds: Credentials::default(),
            privileged: cfg.privileged,
            available_caps,
            start_error: None,
            procs_fds,
            cgroup_dir,
            oom_fd,
            oom_seen: 0,
            log: Some(log),
            runs: 0,
            pipe: None,
            old_pipes: Vec::new(),
            status: ProcessStatus {
                name: p.spec.name.clone(),
                ..Default::default()
            },
            pid: None,
            restart: Restarts::new(cfg.restart_policy, backoff, Instant::now()),
            probes: Vec::new(),
            kill_at: None,
            liveness_killed: false,
            seccomp: seccomp_for(&p.spec, cfg.privileged, default_seccomp.as_ref()),
        });
    }
    let env_from = match &cfg.env_file {
        Some(f) => super::volumes::open_env_file(Path::new(f))?,
        None => Vec::new(),
    };
    mount::set_hostname(&cfg.hostname)?;
    // An isolated pod's cluster DNS, when the agent wrote it.
    let resolv_conf = cfg
        .private_network
        .then(|| std::fs::read_to_string(pod_dir.resolv_conf()).ok())
        .flatten();
    apply_mounts(&mount_plan(
        &cfg,
        &pod_dir,
        cgroup_ns_at_pod,
        resolv_conf.as_deref(),
    ))?;
    if cfg.private_network {
        mount::loopback_up()?;
    }
    // Prepare every exec (path resolution happens inside the pod's root).
    for p in &mut procs {
        let from = env_from
            .iter()
            .find(|(n, _)| *n == p.spec.name)
            .map_or(&[][..], |(_, e)| &e[..]);
        let env = prepare(p, &cfg.hostname, from);
        let probes = [
            (probe::Kind::Liveness, &p.spec.liveness),
            (probe::Kind::Readiness, &p.spec.readiness),
        ];
        for (kind, spec) in probes {
            if let Some(spec) = spec {
                p.probes
                    .push(Prober::new(kind, spec.clone(), &env, |c| resolve(c, &env)));
            }
        }
    }

    let mut stopping = false;
    let mut changed = true;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let now = Instant::now();
        // Start what is due.
        if !stopping {
            for p in procs.iter_mut() {
                if p.restart.due(now) {
                    start(p, &devnull, &cfg);
                    changed = true;
                }
            }
        }
        let running = procs.iter().any(|p| p.pid.is_some());
        let pending = !stopping && procs.iter().any(|p| p.restart.next_start().is_some());
        if changed {
            write_status(&state_fd, &events, &procs, stopping, running || pending);
            changed = false;
        }
        if !running && !pending {
            break;
        }
        // Wait for a signal, output, a probe, or the next restart, probe or kill.
        let timeout = procs
            .iter()
            .flat_map(|p| {
                p.restart
                    .next_start()
                    .into_iter()
                    .chain(p.kill_at)
                    .chain(p.probes.iter().filter_map(Prober::wakeup))
            })
            .min()
            .map(|t| t.saturating_duration_since(Instant::now()));
        let mut fds: Vec<(BorrowedFd<'_>, Interest)> = vec![(sfd.as_fd(), Interest::Read)];
        for p in procs.iter() {
            for fd in p.pipe.iter().chain(p.old_pipes.iter()) {
                fds.push((fd.as_fd(), Interest::Read));
            }
        }
        let pipes_end = fds.len();
        fds.extend(
            procs
                .iter()
                .flat_map(|p| p.probes.iter().filter_map(Prober::interest)),
        );
        let ready = net::poll(&fds, timeout)?;
        let any_pipe_ready = ready[1..pipes_end].iter().any(|r| *r);
        drop(fds);
        if any_pipe_ready {
            for p in procs.iter_mut() {
                drain(p, &mut buf);
            }
        }
        if ready[0] {
            for sig in sysproc::read_signals(&sfd)? {
                match sig {
                    Signal::CHLD => {
                        while let Some((pid, exit)) = sysproc::reap_any()? {
                            if let Some(p) = procs.iter_mut().find(|p| p.pid == Some(pid)) {
                                exited(p, exit);
                                changed = true;
                            } else {
                                // A probe's check (claimed by PID), or an orphan: nothing more.
                                procs
                                    .iter_mut()
                                    .flat_map(|p| p.probes.iter_mut())
                                    .any(|pr| pr.reaped(pid, exit));
                            }
                        }
                    }
                    Signal::TERM | Signal::INT => {
                        stopping = true;
                        changed = true;
                        for p in procs.iter_mut() {
                            // Stopping: no more probes, and out of service right away.
                            p.probes.iter_mut().for_each(Prober::process_stopped);
                            p.status.ready = false;
                            if let Some(pid) = p.pid {
                                let _ = sysproc::kill(pid, sig);
                            }
                            if p.restart.stop() {
                                p.status.state = ProcessState::Terminated {
                                    reason: p.status.last_exit.unwrap_or(ExitReason::Completed),
                                    finished_ms: now_ms(),
                                };
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        // Probes and liveness kills.
        let now = Instant::now();
        for p in procs.iter_mut() {
            if probe_step(p, now, &devnull, &cfg) {
                changed = true;
            }
        }
    }
    for p in procs.iter_mut() {
        drain(p, &mut buf);
    }
    let first_ok = procs
        .first()
        .is_some_and(|p| p.status.last_exit == Some(ExitReason::Completed));
    Ok(if first_ok { 0 } else { 1 })
}

/// A process's environment: its own `env` over its `env_from` variables, with `PATH` and
/// `HOSTNAME` when it sets neither (the pod's processes and `bramble exec` share it).
pub(crate) fn process_env(
    spec: &ProcessSpec,
    hostname: &str,
    env_from: &[(String, String)],
) -> Vec<(String, String)> {
    let mut env = spec.env.clone();
    super::volumes::merge_env(&mut env, env_from);
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.insert(0, ("PATH".into(), super::DEFAULT_PATH.into()));
    }
    if !env.iter().any(|(k, _)| k == "HOSTNAME") {
        env.push(("HOSTNAME".into(), hostname.to_string()));
    }
    env
}

/// A process's user, groups and capabilities, resolved inside the pod's root (after
/// `pivot_root` or the exec's `chroot`: users and groups by name come from its `/etc/passwd`
/// and `/etc/group`).
pub(crate) fn process_credentials(
    spec: &ProcessSpec,
    privileged: bool,
    available_caps: u64,
) -> Result<Credentials, String> {
    let accounts = if security::needs_accounts(spec) {
        security::Accounts {
            passwd: std::fs::read_to_string("/etc/passwd").ok(),
            group: std::fs::read_to_string("/etc/group").ok(),
        }
    } else {
        security::Accounts::default()
    };
    security::credentials(spec, privileged, &accounts, available_caps)
}

/// Resolves a process's command and environment; returns the environment (for its probes).
fn prepare(p: &mut Proc, hostname: &str, env_from: &[(String, String)]) -> Vec<(String, String)> {
    p.exec = None;
    p.exec_error = None;
    let env = process_env(&p.spec, hostname, env_from);
    let Some(cmd) = p.spec.command.first() else {
        p.exec_error = Some("empty command".into());
        return env;
    };
    match process_credentials(&p.spec, p.privileged, p.available_caps) {
        Ok(c) => p.creds = c,
        Err(e) => {
            p.exec_error = Some(e);
            return env;
        }
    }
    match resolve(cmd, &env) {
        Some(path) => match Exec::new(&path, &p.spec.command, &env) {
            Ok(e) => p.exec = Some(e),
            Err(e) => p.exec_error = Some(e.to_string()),
        },
        None => p.exec_error = Some(format!("command not found: {cmd}")),
    }
    p.workdir = p.spec.workdir.as_deref().and_then(|w| CString::new(w).ok());
    env
}

fn drain(p: &mut Proc, buf: &mut [u8]) {
    let log = &mut p.log;
    let mut keep = |fd: &OwnedFd| -> bool {
        loop {
            match sysproc::read_nonblocking(fd.as_fd(), buf) {
                Ok(ReadOutcome::Data(n)) => {
                    if let Some(l) = log.as_mut() {
                        let _ = l.write(&buf[..n]);
                    }
                }
                Ok(ReadOutcome::WouldBlock) => return true,
                Ok(ReadOutcome::Eof) | Err(_) => return false,
            }
        }
    };
    if let Some(fd) = &p.pipe
        && !keep(fd)
    {
        p.pipe = None;
    }
    p.old_pipes.retain(|fd| keep(fd));
}

fn start(p: &mut Proc, devnull: &OwnedFd, cfg: &InitConfig) {
    if p.runs > 0 {
        // A restart: what the last run still had in its pipes goes to its log, which then
        // becomes the previous run's (`bramble logs --previous`).
        drain(p, &mut vec![0u8; 16 * 1024]);
        if let Some(l) = p.log.as_mut()
            && let Err(e) = l.new_run()
        {
            eprintln!("bramble: process {}: rotating its log: {e}", p.spec.name);
        }
    }
    p.runs += 1;
    if let Some(old) = p.pipe.take() {
        p.old_pipes.push(old);
    }
    p.restart.started(Instant::now());
    // env_from as it is now: a restart picks up config map and secret changes.
    if let Some(from) = super::volumes::reload_env(&p.spec.name) {
        let _ = prepare(p, &cfg.hostname, &from);
    }
    let result = match (&p.exec, &p.exec_error) {
        (Some(exec), _) => sysproc::pipe()
            .map_err(|e| e.to_string())
            .and_then(|(r, w)| {
                let procs = spawn::borrow_all(&p.procs_fds);
                let setup = ProcessSetup {
                    exec,
                    cgroup_procs: &procs,
                    cgroup_dir: p.cgroup_dir.as_ref().map(|d| d.as_fd()),
                    stdin: devnull.as_fd(),
                    output: w.as_fd(),
                    workdir: p.workdir.as_deref(),
                    creds: &p.creds,
                    seccomp: p.seccomp.as_deref(),
                    stderr: None,
                    controlling_tty: false,
                };
                let pid = spawn::fork_exec(&setup).map_err(|e| e.to_string())?;
                let _ = sysproc::set_nonblocking(r.as_fd());
                Ok((pid, r))
            }),
        (None, Some(e)) => Err(e.clone()),
        (None, None) => Err("not prepared".into()),
    };
    match result {
        Ok((pid, r)) => {
            p.oom_seen = oom_count(&p.oom_fd);
            p.pid = Some(pid);
            p.pipe = Some(r);
            p.status.state = ProcessState::Running {
                pid: pid as u32,
                started_ms: now_ms(),
            };
            // Without a readiness probe, a running process is ready; with one, once it passes.
            p.status.ready = p.spec.readiness.is_none();
            p.liveness_killed = false;
            p.start_error = None;
            let now = Instant::now();
            p.probes.iter_mut().for_each(|pr| pr.process_started(now));
        }
        Err(msg) => {
            if let Some(l) = p.log.as_mut() {
                let _ =
                    l.write(format!("bramble: cannot start {}: {msg}\n", p.spec.name).as_bytes());
            }
            p.start_error = Some(format!("process {:?} cannot start: {msg}", p.spec.name));
            finish(p, ExitReason::StartFailed);
        }
    }
}

fn exited(p: &mut Proc, exit: Exit) {
    p.pid = None;
    p.kill_at = None;
    p.probes.iter_mut().for_each(Prober::process_stopped);
    let reason = match exit {
        Exit::Code(0) => ExitReason::Completed,
        Exit::Code(c) => ExitReason::Error(c),
        Exit::Signal(Signal::KILL) if oom_count(&p.oom_fd) > p.oom_seen => ExitReason::OOMKilled,
        Exit::Signal(s) => ExitReason::Signaled(s.number()),
    };
    finish(p, reason);
}

fn finish(p: &mut Proc, reason: ExitReason) {
    p.status.last_exit = Some(reason);
    p.status.ready = false;
    p.status.state = ProcessState::Terminated {
        reason,
        finished_ms: now_ms(),
    };
    // A process its liveness probe killed failed, whatever it exited with.
    let failed = reason != ExitReason::Completed || std::mem::take(&mut p.liveness_killed);
    if p.restart.exited(Instant::now(), failed).is_some() {
        p.status.restarts = p.restart.restarts();
        p.status.state = ProcessState::Waiting;
    }
}

/// Runs `p`'s probes and enforces a liveness kill's grace. Returns whether the status changed.
fn probe_step(p: &mut Proc, now: Instant, devnull: &OwnedFd, cfg: &InitConfig) -> bool {
    if let (Some(pid), Some(at)) = (p.pid, p.kill_at)
        && at <= now
    {
        // Past the grace: the whole process group.
        signal_group(pid, Signal::KILL);
        p.kill_at = None;
    }
    if p.probes.is_empty() || p.pid.is_none() {
        return false;
    }
    let procs = spawn::borrow_all(&p.procs_fds);
    let ctx = ExecContext {
        cgroup_procs: &procs,
        cgroup_dir: p.cgroup_dir.as_ref().map(|d| d.as_fd()),
        stdin: devnull.as_fd(),
        workdir: p.workdir.as_deref(),
        creds: &p.creds,
        seccomp: p.seccomp.as_deref(),
    };
    let mut changed = false;
    let mut kill = None;
    for pr in p.probes.iter_mut() {
        let Some(v) = pr.step(now, &ctx) else {
            continue;
        };
        match (pr.kind(), v) {
            (probe::Kind::Readiness, Verdict::Pass) => {
                changed |= !p.status.ready;
                p.status.ready = true;
            }
            (probe::Kind::Readiness, Verdict::Fail { failures, why }) => {
                if let Some(l) = p.log.as_mut() {
                    let _ = l.write(
                        format!("bramble: readiness probe failed {failures} times: {why}\n")
                            .as_bytes(),
                    );
                }
                changed |= p.status.ready;
                p.status.ready = false;
            }
            (probe::Kind::Liveness, Verdict::Fail { failures, why }) => {
                kill = Some(format!(
                    "bramble: liveness probe failed {failures} times: {why}; restarting {}\n",
                    p.spec.name
                ));
            }
            (probe::Kind::Liveness, Verdict::Pass) => {}
        }
    }
    drop(procs);
    if let (Some(line), Some(pid)) = (kill, p.pid) {
        if let Some(l) = p.log.as_mut() {
            let _ = l.write(line.as_bytes());
        }
        // Like a stop: SIGTERM to the process group, SIGKILL after the grace. No probes until
        // it runs again, and out of service now.
        p.probes.iter_mut().for_each(Prober::process_stopped);
        p.liveness_killed = true;
        signal_group(pid, Signal::TERM);
        p.kill_at = Some(now + Duration::from_millis(cfg.termination_grace_ms));
        changed |= p.status.ready;
        p.status.ready = false;
    }
    changed
}

/// Signals a process's group (it ran `setsid`), or the process alone if it left its group.
fn signal_group(pid: i32, sig: Signal) {
    if !matches!(sysproc::kill(-pid, sig), Ok(true)) {
        let _ = sysproc::kill(pid, sig);
    }
}

fn phase(procs: &[Proc], live: bool) -> PodPhase {
    if procs
        .iter()
        .any(|p| matches!(p.status.state, ProcessState::Running { .. }))
        || live
    {
        return PodPhase::Running;
    }
    if procs
        .iter()
        .all(|p| p.status.last_exit == Some(ExitReason::Completed))
    {
        PodPhase::Succeeded
    } else {
        PodPhase::Failed
    }
}

fn write_status(state: &OwnedFd, events: &OwnedFd, procs: &[Proc], stopping: bool, live: bool) {
    let status = PodStatus {
        phase: phase(procs, live),
        processes: procs.iter().map(|p| p.status.clone()).collect(),
        message: if stopping {
            "stopping".into()
        } else {
            // Why processes cannot start (a user that does not resolve, run_as_non_root, ...).
            procs
                .iter()
                .filter_map(|p| p.start_error.as_deref())
                .collect::<Vec<_>>()
                .join("; ")
        },
        updated_ms: now_ms(),
        // The worker knows the pod's address: it fills it in.
        ip: String::new(),
    };
    let Ok(bytes) = persist::encode_postcard(persist::POD_STATUS, &status) else {
        return;
    };
    if let Err(e) = persist::write_file_at(state.as_fd(), PodDir::STATUS, &bytes) {
        eprintln!("bramble pod init: writing status: {e}");
    }
    let _ = sysproc::write_nonblocking(events.as_fd(), b"\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use bramble_wire::objects::{ProcessSpec, RestartPolicy};

    fn config(rootfs: Option<&str>, volumes: Vec<Volume>) -> InitConfig {
        InitConfig {
            hostname: "web".into(),
            processes: vec![InitProcess {
                spec: ProcessSpec {
                    name: "main".into(),
                    env: vec![("BRAMBLE_SERVICE_DB_HOST".into(), "10.42.0.1".into())],
                    ..Default::default()
                },
                cgroup_procs: Vec::new(),
                oom_file: None,
            }],
            restart_policy: RestartPolicy::Always,
            rootfs: rootfs.map(Into::into),
            private_network: true,
            volumes,
            empty_dir_base: "/run/bramble/pods/p/volumes".into(),
            backoff_initial_ms: 500,
            backoff_max_ms: 10_000,
            backoff_reset_ms: 600_000,
            log_dir: "/logs".into(),
            log_cap: 1 << 20,
            tmp_size: 64 << 20,
            termination_grace_ms: 0,
            config_volume_base: "/run/bramble/configmaps/p".into(),
            secret_volume_base: "/run/bramble/secrets/p".into(),
            env_file: None,
            privileged: false,
            host_ipc: false,
            cgroup: None,
            overlay: None,
        }
    }

    fn volume(name: &str, mount_path: &str, source: VolumeSource) -> Volume {
        Volume {
            name: name.into(),
            mount_path: mount_path.into(),
            source,
        }
    }

    fn bind(src: &str, dst: &str, read_only: bool) -> MountOp {
        MountOp::Bind {
            src: src.into(),
            dst: dst.into(),
            read_only,
        }
    }

    fn pod_dir() -> PodDir {
        PodDir::at("/run/bramble/pods/p")
    }

    fn position(plan: &[MountOp], f: impl Fn(&MountOp) -> bool) -> usize {
        plan.iter()
            .position(f)
            .unwrap_or_else(|| panic!("not in {plan:#?}"))
    }

    #[test]
    fn an_image_pod_gets_an_overlay_root_and_the_usual_rest() {
        let mut cfg = config(Some("/run/bramble/pods/p/root"), Vec::new());
        cfg.overlay = Some(OverlayRoot {
            lower_base: "/var/lib/bramble-worker/layers".into(),
            lowers: vec!["top".into(), "bottom".into()],
            upper: "/var/lib/bramble-worker/pod-roots/p/upper".into(),
            work: "/var/lib/bramble-worker/pod-roots/p/work".into(),
            tmpfs_size: Some(64 << 20),
        });
        let plan = mount_plan(&cfg, &pod_dir(), true, Some("nameserver 10.43.0.10\n"));
        let root = Path::new("/run/bramble/pods/p/root");
        assert_eq!(
            plan[1],
            MountOp::RootOverlay {
                root: root.into(),
                lower_base: "/var/lib/bramble-worker/layers".into(),
                lowers: vec!["top".into(), "bottom".into()],
                upper: "/var/lib/bramble-worker/pod-roots/p/upper".into(),
                work: "/var/lib/bramble-worker/pod-roots/p/work".into(),
                tmpfs: Some(64 << 20),
            }
        );
        assert!(
            !plan
                .iter()
                .any(|op| matches!(op, MountOp::RootBind(_) | MountOp::RootTmpfs(_)))
        );
        assert_eq!(plan_root(&plan), Some(root));
        // The rest as with any root of its own: /tmp, proc, hosts, resolv.conf, pivot.
        assert!(plan.contains(&MountOp::Proc(root.join("proc"))));
        assert!(
            plan.iter()
                .any(|op| matches!(op, MountOp::Tmpfs { dst, .. } if dst == &root.join("tmp")))
        );
        assert!(plan.iter().any(
            |op| matches!(op, MountOp::Hosts { dst, .. } if dst == &root.join("etc/resolv.conf"))
        ));
        assert_eq!(plan.last(), Some(&MountOp::PivotRoot(root.into())));
        let without = mount_plan(
            &config(Some("/run/bramble/pods/p/root"), Vec::new()),
            &pod_dir(),
            true,
            None,
        );
        assert_eq!(without[1], MountOp::RootBind(root.into()));
    }

    #[test]
    fn a_pod_without_a_root_gets_a_new_one_with_host_binaries_and_its_volumes() {
        let vols = vec![
            volume(
                "data",
                "/srv/data",
                VolumeSource::HostPath {
                    path: "/var/data".into(),
                    read_only: true,
                },
            ),
            volume("scratch", "/cache", VolumeSource::EmptyDir),
            volume(
                "conf",
                "/etc/app",
                VolumeSource::ConfigMap {
                    name: "settings".into(),
                },
            ),
            volume("keys", "/keys", VolumeSource::Secret { name: "tls".into() }),
        ];
        let plan = mount_plan(&config(None, vols), &pod_dir(), true, None);
        let root = Path::new("/run/bramble/pods/p/root");
        assert_eq!(plan[0], MountOp::MakePrivate);
        assert_eq!(plan[1], MountOp::RootTmpfs(root.into()));
        // Host binaries and libraries, symlinks kept (merged /usr); /etc files, symlinks followed.
        for d in HOST_DIRS {
            assert!(plan.contains(&MountOp::HostEntry {
                src: Path::new("/").join(d),
                dst: root.join(d),
                keep_symlink: true,
            }));
        }
        for e in ["passwd", "group", "resolv.conf", "ssl", "ld.so.cache"] {
            assert!(plan.contains(&MountOp::HostEntry {
                src: Path::new("/etc").join(e),
                dst: root.join("etc").join(e),
                keep_symlink: false,
            }));
        }
        // Nothing else of the host: no bind of /, /etc, /home, /root, /var, /run.
        for op in &plan {
            if let MountOp::Bind { src, .. } | MountOp::HostEntry { src, .. } = op {
                assert!(
                    !["/", "/etc", "/home", "/root", "/var", "/run"]
                        .contains(&src.to_str().unwrap()),
                    "{op:?}"
                );
            }
        }
        assert!(plan.contains(&MountOp::Scratch {
            src: "/run/bramble/pods/p/scratch".into(),
            dst: root.join("scratch"),
        }));
        // Volumes inside the new root, after the scratch dir.
        let vols_at = position(&plan, |o| {
            *o == bind("/var/data", "/run/bramble/pods/p/root/srv/data", true)
        });
        assert_eq!(
            plan[vols_at + 1..vols_at + 4],
            [
                bind(
                    "/run/bramble/pods/p/volumes/scratch",
                    "/run/bramble/pods/p/root/cache",
                    false
                ),
                MountOp::ConfigVolume {
                    src: "/run/bramble/configmaps/p/conf".into(),
                    dst: root.join("etc/app"),
                },
                MountOp::ConfigVolume {
                    src: "/run/bramble/secrets/p/keys".into(),
                    dst: root.join("keys"),
                },
            ]
        );
        assert!(vols_at > position(&plan, |o| matches!(o, MountOp::Scratch { .. })));
        // Its own /etc/hosts (created), then the root goes read-only, then the pivot.
        let n = plan.len();
        assert_eq!(
            plan[n - 3],
            MountOp::Hosts {
                file: "/run/bramble/pods/p/hosts".into(),
                contents: "127.0.0.1\tlocalhost\n::1\tlocalhost\n127.0.1.1\tweb\n10.42.0.1\tdb\n"
                    .into(),
                dst: root.join("etc/hosts"),
                create: true,
            }
        );
        assert_eq!(plan[n - 2], MountOp::RemountReadOnly(root.into()));
        assert_eq!(plan[n - 1], MountOp::PivotRoot(root.into()));
    }

    #[test]
    fn rootfs_plan_binds_read_only_adds_tmp_dev_hosts_then_pivots() {
        let plan = mount_plan(
            &config(Some("/roots/alpine"), Vec::new()),
            &pod_dir(),
            true,
            None,
        );
        assert_eq!(plan[0], MountOp::MakePrivate);
        assert_eq!(plan[1], MountOp::RootBind("/roots/alpine".into()));
        assert_eq!(
            plan[2],
            MountOp::Tmpfs {
                dst: "/roots/alpine/tmp".into(),
                size: 64 << 20,
                mode: 0o1777,
                noexec: false,
            }
        );
        assert!(
            !plan
                .iter()
                .any(|o| matches!(o, MountOp::HostEntry { .. } | MountOp::Scratch { .. }))
        );
        assert!(plan.contains(&MountOp::Proc("/roots/alpine/proc".into())));
        let n = plan.len();
        assert_eq!(
            plan[n - 2],
            MountOp::Hosts {
                file: "/run/bramble/pods/p/hosts".into(),
                contents: "127.0.0.1\tlocalhost\n::1\tlocalhost\n127.0.1.1\tweb\n10.42.0.1\tdb\n"
                    .into(),
                dst: "/roots/alpine/etc/hosts".into(),
                create: false,
            }
        );
        assert_eq!(plan[n - 1], MountOp::PivotRoot("/roots/alpine".into()));
    }

    #[test]
    fn every_pod_gets_a_minimal_dev() {
        for rootfs in [None, Some("/roots/alpine")] {
            let plan = mount_plan(&config(rootfs, Vec::new()), &pod_dir(), true, None);
            let root = rootfs.map_or(Path::new("/run/bramble/pods/p/root"), Path::new);
            let dev = root.join("dev");
            let dev_at = position(&plan, |o| {
                *o == MountOp::Tmpfs {
                    dst: dev.clone(),
                    size: 1 << 20,
                    mode: 0o755,
                    noexec: true,
                }
            });
            // The host's device nodes bound in (writable), nothing else of the host's /dev.
            let nodes: Vec<_> = plan
                .iter()
                .filter_map(|op| match op {
                    MountOp::Bind {
                        src,
                        dst,
                        read_only,
                    } if src.starts_with("/dev") => {
                        assert!(!read_only);
                        assert_eq!(
                            dst.strip_prefix(&dev).unwrap(),
                            src.strip_prefix("/dev").unwrap()
                        );
                        Some(src.file_name().unwrap().to_str().unwrap().to_owned())
                    }
                    _ => None,
                })
                .collect();
            assert_eq!(nodes, DEVICES);
            let pts = position(&plan, |o| *o == MountOp::Devpts(dev.join("pts")));
            let ptmx = position(&plan, |o| {
                *o == MountOp::Symlink {
                    target: "pts/ptmx".into(),
                    link: dev.join("ptmx"),
                }
            });
            assert!(dev_at < pts && pts < ptmx);
            assert!(plan.contains(&MountOp::Tmpfs {
                dst: dev.join("shm"),
                size: SHM_SIZE,
                mode: 0o1777,
                noexec: true,
            }));
            assert!(plan.contains(&MountOp::Mqueue(dev.join("mqueue"))));
            for (link, target) in [
                ("fd", "/proc/self/fd"),
                ("stdin", "/proc/self/fd/0"),
                ("stdout", "/proc/self/fd/1"),
                ("stderr", "/proc/self/fd/2"),
            ] {
                assert!(plan.contains(&MountOp::Symlink {
                    target: target.into(),
                    link: dev.join(link),
                }));
            }
        }
        // host_ipc: the host's IPC namespace has no mqueue of the pod's own.
        let mut cfg = config(None, Vec::new());
        cfg.host_ipc = true;
        let plan = mount_plan(&cfg, &pod_dir(), true, None);
        assert!(!plan.iter().any(|o| matches!(o, MountOp::Mqueue(_))));
    }

    #[test]
    fn an_isolated_pods_cluster_dns_is_bound_over_its_resolv_conf() {
        let text = "nameserver 10.42.0.1\nsearch default.svc.bramble.local\n";
        let plan = mount_plan(&config(None, Vec::new()), &pod_dir(), true, Some(text));
        let root = Path::new("/run/bramble/pods/p/root");
        let resolv = position(&plan, |o| {
            *o == MountOp::Hosts {
                file: "/run/bramble/pods/p/resolv.conf".into(),
                contents: text.into(),
                dst: root.join("etc/resolv.conf"),
                create: true,
            }
        });
        // Before the new root is sealed read-only and pivoted into.
        assert!(resolv < position(&plan, |o| *o == MountOp::RemountReadOnly(root.into())));
        let none = mount_plan(&config(None, Vec::new()), &pod_dir(), true, None);
        assert!(
            !none.iter().any(
                |o| matches!(o, MountOp::Hosts { dst, .. } if dst.ends_with("etc/resolv.conf"))
            )
        );
    }

    #[test]
    fn proc_and_sys_are_masked_and_read_only_after_their_mounts() {
        let plan = mount_plan(&config(None, Vec::new()), &pod_dir(), true, None);
        let root = Path::new("/run/bramble/pods/p/root");
        let proc_at = position(&plan, |o| *o == MountOp::Proc(root.join("proc")));
        let sys_at = position(&plan, |o| {
            *o == MountOp::Sys {
                dst: root.join("sys"),
                fresh: true,
                read_only: true,
            }
        });
        for p in MASKED_PATHS {
            let at = position(&plan, |o| *o == MountOp::Mask(root.join(&p[1..])));
            assert!(at > proc_at && at > sys_at, "{p}");
        }
        for p in READ_ONLY_PATHS {
            let at = position(&plan, |o| *o == MountOp::ReadOnly(root.join(&p[1..])));
            assert!(at > proc_at, "{p}");
        }
        // The host's network namespace: the host's /sys, read-only with its submounts.
        let mut cfg = config(None, Vec::new());
        cfg.private_network = false;
        let plan = mount_plan(&cfg, &pod_dir(), true, None);
        assert!(plan.contains(&MountOp::Sys {
            dst: root.join("sys"),
            fresh: false,
            read_only: true,
        }));
    }

    #[test]
    fn privileged_pods_get_the_host_dev_writable_sys_and_nothing_masked() {
        let mut cfg = config(None, Vec::new());
        cfg.privileged = true;
        cfg.cgroup = Some(PodCgroup {
            pod_procs: vec!["/sys/fs/cgroup/bramble/p/cgroup.procs".into()],
            leaf_procs: vec!["/sys/fs/cgroup/bramble/p/_init/cgroup.procs".into()],
            v1_hierarchies: Vec::new(),
        });
        let plan = mount_plan(&cfg, &pod_dir(), true, None);
        let root = Path::new("/run/bramble/pods/p/root");
        assert!(plan.contains(&bind("/dev", "/run/bramble/pods/p/root/dev", false)));
        assert!(
            !plan
                .iter()
                .any(|o| matches!(o, MountOp::Mask(_) | MountOp::ReadOnly(_)))
        );
        assert!(plan.contains(&MountOp::Sys {
            dst: root.join("sys"),
            fresh: true,
            read_only: false,
        }));
        assert!(plan.contains(&MountOp::Cgroup2 {
            dst: root.join("sys/fs/cgroup"),
            read_only: false,
        }));
        // Still a new root (like Nomad's exec driver), still its own pts and shm.
        assert_eq!(plan[1], MountOp::RootTmpfs(root.into()));
        assert!(plan.contains(&MountOp::Devpts(root.join("dev/pts"))));
        assert_eq!(plan.last(), Some(&MountOp::PivotRoot(root.into())));
    }

    #[test]
    fn the_pods_cgroup_is_mounted_read_only_at_sys_fs_cgroup() {
        let root = Path::new("/run/bramble/pods/p/root");
        let dst = root.join("sys/fs/cgroup");
        // v2: one cgroup2 mount inside the pod's cgroup namespace.
        let mut cfg = config(None, Vec::new());
        cfg.cgroup = Some(PodCgroup {
            pod_procs: vec!["/sys/fs/cgroup/bramble/p/cgroup.procs".into()],
            leaf_procs: vec!["/sys/fs/cgroup/bramble/p/_init/cgroup.procs".into()],
            v1_hierarchies: Vec::new(),
        });
        let plan = mount_plan(&cfg, &pod_dir(), true, None);
        let sys_at = position(&plan, |o| matches!(o, MountOp::Sys { .. }));
        let cg_at = position(&plan, |o| {
            *o == MountOp::Cgroup2 {
                dst: dst.clone(),
                read_only: true,
            }
        });
        assert!(sys_at < cg_at);
        // Over an empty tmpfs: the host's cgroup2 mount may be there (a bound host /sys), and
        // the kernel refuses the same superblock on the root of its own mount.
        assert!(matches!(&plan[cg_at - 1], MountOp::Tmpfs { dst: d, .. } if *d == dst));
        // v2, the namespace rooted at the init's leaf: the pod's directory bound instead.
        let plan = mount_plan(&cfg, &pod_dir(), false, None);
        assert!(plan.contains(&MountOp::Bind {
            src: "/sys/fs/cgroup/bramble/p".into(),
            dst: dst.clone(),
            read_only: true,
        }));
        // v1: a tmpfs, one cgroup mount per hierarchy, per-controller links, then read-only.
        cfg.cgroup = Some(PodCgroup {
            pod_procs: vec![
                "/sys/fs/cgroup/cpu,cpuacct/bramble/p/cgroup.procs".into(),
                "/sys/fs/cgroup/memory/bramble/p/cgroup.procs".into(),
            ],
            leaf_procs: Vec::new(),
            v1_hierarchies: vec!["cpu,cpuacct".into(), "memory".into()],
        });
        let plan = mount_plan(&cfg, &pod_dir(), true, None);
        let at = position(
            &plan,
            |o| matches!(o, MountOp::Tmpfs { dst: d, .. } if *d == dst),
        );
        assert_eq!(
            plan[at + 1..at + 6],
            [
                MountOp::Cgroup1 {
                    dst: dst.join("cpu,cpuacct"),
                    controllers: "cpu,cpuacct".into(),
                    read_only: true,
                },
                MountOp::Symlink {
                    target: "cpu,cpuacct".into(),
                    link: dst.join("cpu"),
                },
                MountOp::Symlink {
                    target: "cpu,cpuacct".into(),
                    link: dst.join("cpuacct"),
                },
                MountOp::Cgroup1 {
                    dst: dst.join("memory"),
                    controllers: "memory".into(),
                    read_only: true,
                },
                MountOp::RemountReadOnly(dst.clone()),
            ]
        );
    }

    #[test]
    fn every_mount_point_is_inside_the_root() {
        let vols = vec![volume(
            "data",
            "/../../../etc",
            VolumeSource::HostPath {
                path: "/var/data".into(),
                read_only: false,
            },
        )];
        for rootfs in [None, Some("/roots/alpine")] {
            let mut cfg = config(rootfs, vols.clone());
            cfg.cgroup = Some(PodCgroup {
                pod_procs: vec!["/sys/fs/cgroup/memory/bramble/p/cgroup.procs".into()],
                leaf_procs: Vec::new(),
                v1_hierarchies: vec!["memory".into()],
            });
            let plan = mount_plan(&cfg, &pod_dir(), true, None);
            let root = plan_root(&plan).unwrap().to_owned();
            for op in &plan {
                if let Some(d) = op_dst(op) {
                    assert!(d.starts_with(&root), "{op:?}");
                }
            }
        }
    }

    #[test]
    fn hosts_name_services_by_their_variables() {
        let env = [
            ("PATH".to_string(), "/bin".to_string()),
            (
                "BRAMBLE_SERVICE_WEB_API_HOST".to_string(),
                "127.0.0.1".to_string(),
            ),
            (
                "BRAMBLE_SERVICE_WEB_API_PORT".to_string(),
                "8080".to_string(),
            ),
        ];
        assert_eq!(
            hosts_file("bb", &env),
            "127.0.0.1\tlocalhost\n::1\tlocalhost\n127.0.1.1\tbb\n127.0.0.1\tweb-api\n"
        );
    }
}
