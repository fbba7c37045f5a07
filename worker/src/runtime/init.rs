//! The pod init: PID 1 of each pod's PID namespace.
//!
//! The worker clones a child into the pod's new namespaces, puts it into the pod's cgroup and lets
//! it re-execute the worker binary as `bramble-worker __bramble_init <state-dir>`. Being a fresh,
//! single-threaded process, the init can then allocate and use ordinary wrappers freely. It:
//!
//! 1. reads `<state-dir>/config` (versioned postcard [`InitConfig`], see [`crate::persist`]),
//!    opens everything it needs across `pivot_root` (state and log directories, `cgroup.procs`
//!    and OOM-counter files);
//! 2. sets the hostname, then runs its mount plan ([`mount_plan`], pure, then [`apply_mounts`]):
//!    mounts private, a fresh `/proc`, the optional rootfs (read-only bind, tmpfs `/tmp`, minimal
//!    `/dev`, volumes, `/etc/hosts`) and `pivot_root` into it; brings `lo` up in a private
//!    network namespace;
//! 3. starts **all** the pod's processes, reaps every zombie (orphans included), copies each
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
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use bramble_wire::objects::{
    ExitReason, PodPhase, PodStatus, ProcessSpec, ProcessState, ProcessStatus, RestartPolicy,
    Volume, VolumeSource,
};
use serde::{Deserialize, Serialize};

use super::log::RingLog;
use super::probe::{self, ExecContext, Prober, Verdict};
use super::restart::Restarts;
use crate::persist::{self, PodDir};
use crate::sys::net::Interest;
use crate::sys::process::{self as sysproc, Exit, ReadOutcome, Signal};
use crate::sys::spawn::{Exec, ProcessSetup};
use crate::sys::{mount, net, spawn};

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
    procs_fds: Vec<OwnedFd>,
    /// On cgroup v2: the directory of its own cgroup, to be born in (`clone3`).
    cgroup_dir: Option<OwnedFd>,
    oom_fd: Option<OwnedFd>,
    oom_seen: u64,
    log: Option<RingLog>,
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
}

fn oom_count(fd: &Option<OwnedFd>) -> u64 {
    fd.as_ref()
        .and_then(|f| sysproc::pread_string(f.as_fd()).ok())
        .map_or(0, |s| super::cgroup::parse_oom_kills(&s))
}

/// Resolves a command like `execvp` would, inside the (already pivoted) root.
fn resolve(cmd: &str, env: &[(String, String)]) -> Option<PathBuf> {
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

/// One step of a pod's mount setup (see [`mount_plan`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountOp {
    /// Make every mount private, recursively (nothing propagates to the host).
    MakePrivate,
    /// Bind-mount `src` on `dst`.
    Bind {
        /// Source.
        src: PathBuf,
        /// Mount point.
        dst: PathBuf,
        /// Remount read-only.
        read_only: bool,
    },
    /// A tmpfs of at most `size` bytes on `dst`.
    Tmpfs {
        /// Mount point.
        dst: PathBuf,
        /// Size cap, bytes.
        size: u64,
        /// Mode of its root.
        mode: u32,
    },
    /// An empty file (a mount point for a device node).
    EmptyFile(PathBuf),
    /// A symlink `link` → `target`.
    Symlink {
        /// What it points to.
        target: PathBuf,
        /// The link.
        link: PathBuf,
    },
    /// A fresh procfs on this path.
    Proc(PathBuf),
    /// A config map or secret volume directory, bind-mounted read-only (the mount point is
    /// created if missing).
    ConfigVolume {
        /// The prepared volume directory.
        src: PathBuf,
        /// Mount point.
        dst: PathBuf,
    },
    /// If the root has a file `dst` (`/etc/hosts`): write `contents` to `file` (in the run dir)
    /// and bind-mount it read-only on `dst`.
    Hosts {
        /// The hosts file in the pod's run dir.
        file: PathBuf,
        /// Its text.
        contents: String,
        /// The root's `/etc/hosts`.
        dst: PathBuf,
    },
    /// `pivot_root` into this directory and detach the old root.
    PivotRoot(PathBuf),
}

/// The pod's mount setup as a list of steps, pure. [`apply_mounts`] runs it.
pub fn mount_plan(cfg: &InitConfig, pod_dir: &PodDir) -> Vec<MountOp> {
    let mut plan = vec![MountOp::MakePrivate];
    let root = cfg
        .rootfs
        .as_deref()
        .map_or(PathBuf::from("/"), PathBuf::from);
    if cfg.rootfs.is_some() {
        plan.push(MountOp::Bind {
            src: root.clone(),
            dst: root.clone(),
            read_only: true,
        });
        plan.push(MountOp::Tmpfs {
            dst: root.join("tmp"),
            size: cfg.tmp_size,
            mode: 0o1777,
        });
        let dev = root.join("dev");
        plan.push(MountOp::Tmpfs {
            dst: dev.clone(),
            size: 1 << 20,
            mode: 0o755,
        });
        for node in ["null", "zero", "full", "random", "urandom", "tty"] {
            let target = dev.join(node);
            plan.push(MountOp::EmptyFile(target.clone()));
            plan.push(MountOp::Bind {
                src: Path::new("/dev").join(node),
                dst: target,
                read_only: false,
            });
        }
        plan.push(MountOp::Symlink {
            target: "/proc/self/fd".into(),
            link: dev.join("fd"),
        });
    }
    plan.push(MountOp::Proc(root.join("proc")));
    for v in &cfg.volumes {
        let dst = root.join(v.mount_path.trim_start_matches('/'));
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
    if cfg.rootfs.is_some() {
        let env = cfg.processes.first().map_or(&[][..], |p| &p.spec.env[..]);
        plan.push(MountOp::Hosts {
            file: pod_dir.hosts(),
            contents: hosts_file(&cfg.hostname, env),
            dst: root.join("etc/hosts"),
        });
        plan.push(MountOp::PivotRoot(root));
    }
    plan
}

/// Runs a [`mount_plan`] (inside the pod's mount namespace).
pub fn apply_mounts(plan: &[MountOp]) -> Result<(), Error> {
    for op in plan {
        match op {
            MountOp::MakePrivate => mount::make_rprivate()?,
            MountOp::Bind {
                src,
                dst,
                read_only,
            } => mount::bind(src, dst, *read_only)?,
            MountOp::Tmpfs { dst, size, mode } => mount::mount_tmpfs(dst, *size, *mode)?,
            MountOp::EmptyFile(p) => std::fs::write(p, b"")?,
            MountOp::Symlink { target, link } => std::os::unix::fs::symlink(target, link)?,
            MountOp::Proc(p) => mount::mount_proc(p)?,
            MountOp::ConfigVolume { src, dst } => super::volumes::mount_volume(src, dst)?,
            MountOp::Hosts {
                file,
                contents,
                dst,
            } => {
                if dst.is_file() {
                    std::fs::write(file, contents)?;
                    mount::bind(file, dst, true)?;
                }
            }
            MountOp::PivotRoot(root) => mount::pivot_root(root)?,
        }
    }
    Ok(())
}

/// The init's main loop. Returns its exit code: 0 if the first process completed.
pub fn run(state_dir: &Path) -> Result<i32, Error> {
    let pod_dir = PodDir::at(state_dir);
    let (_, cfg): (_, InitConfig) =
        persist::decode_postcard(persist::POD_CONFIG, &std::fs::read(pod_dir.config())?)?;
    spawn::protect_from_oom();
    let sfd = sysproc::block_signals(&[Signal::CHLD, Signal::TERM, Signal::INT, Signal::HUP])?;
    let state_fd = sysproc::open_dir(state_dir)?;
    let log_fd = sysproc::open_dir(Path::new(&cfg.log_dir))?;
    let events = sysproc::open_fifo_rw_at(state_fd.as_fd(), PodDir::EVENTS)?;
    let devnull = sysproc::open_read(Path::new("/dev/null"))?;
    let backoff = super::Backoff {
        initial: Duration::from_millis(cfg.backoff_initial_ms),
        max: Duration::from_millis(cfg.backoff_max_ms),
        reset_after: Duration::from_millis(cfg.backoff_reset_ms),
    };
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
        procs.push(Proc {
            spec: p.spec.clone(),
            exec: None,
            exec_error: None,
            workdir: None,
            procs_fds,
            cgroup_dir,
            oom_fd,
            oom_seen: 0,
            log: Some(log),
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
        });
    }
    let env_from = match &cfg.env_file {
        Some(f) => super::volumes::open_env_file(Path::new(f))?,
        None => Vec::new(),
    };
    mount::set_hostname(&cfg.hostname)?;
    apply_mounts(&mount_plan(&cfg, &pod_dir))?;
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

/// Builds a process's exec: its own `env` over its `env_from` variables.
/// Resolves a process's command and environment; returns the environment (for its probes).
fn prepare(p: &mut Proc, hostname: &str, env_from: &[(String, String)]) -> Vec<(String, String)> {
    p.exec = None;
    p.exec_error = None;
    let mut env = p.spec.env.clone();
    super::volumes::merge_env(&mut env, env_from);
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.insert(0, ("PATH".into(), super::DEFAULT_PATH.into()));
    }
    if !env.iter().any(|(k, _)| k == "HOSTNAME") {
        env.push(("HOSTNAME".into(), hostname.to_string()));
    }
    let Some(cmd) = p.spec.command.first() else {
        p.exec_error = Some("empty command".into());
        return env;
    };
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
                    uid: p.spec.user,
                    gid: p.spec.group,
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
            let now = Instant::now();
            p.probes.iter_mut().for_each(|pr| pr.process_started(now));
        }
        Err(msg) => {
            if let Some(l) = p.log.as_mut() {
                let _ =
                    l.write(format!("bramble: cannot start {}: {msg}\n", p.spec.name).as_bytes());
            }
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
        uid: p.spec.user,
        gid: p.spec.group,
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
            String::new()
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

    #[test]
    fn host_root_plan_is_private_proc_and_volumes() {
        let vols = vec![
            volume(
                "data",
                "/srv/data",
                VolumeSource::HostPath {
                    path: "/var/data".into(),
                    read_only: true,
                },
            ),
            volume("scratch", "/scratch", VolumeSource::EmptyDir),
            volume(
                "conf",
                "/etc/app",
                VolumeSource::ConfigMap {
                    name: "settings".into(),
                },
            ),
            volume("keys", "/keys", VolumeSource::Secret { name: "tls".into() }),
        ];
        let plan = mount_plan(&config(None, vols), &PodDir::at("/run/bramble/pods/p"));
        assert_eq!(
            plan,
            [
                MountOp::MakePrivate,
                MountOp::Proc("/proc".into()),
                bind("/var/data", "/srv/data", true),
                bind("/run/bramble/pods/p/volumes/scratch", "/scratch", false),
                MountOp::ConfigVolume {
                    src: "/run/bramble/configmaps/p/conf".into(),
                    dst: "/etc/app".into(),
                },
                MountOp::ConfigVolume {
                    src: "/run/bramble/secrets/p/keys".into(),
                    dst: "/keys".into(),
                },
            ]
        );
    }

    #[test]
    fn rootfs_plan_binds_read_only_adds_tmp_dev_hosts_then_pivots() {
        let plan = mount_plan(
            &config(Some("/roots/alpine"), Vec::new()),
            &PodDir::at("/run/bramble/pods/p"),
        );
        assert_eq!(plan[0], MountOp::MakePrivate);
        assert_eq!(plan[1], bind("/roots/alpine", "/roots/alpine", true));
        assert_eq!(
            plan[2],
            MountOp::Tmpfs {
                dst: "/roots/alpine/tmp".into(),
                size: 64 << 20,
                mode: 0o1777,
            }
        );
        // Device nodes: an empty file, then the host's node bound on it (writable).
        let devs: Vec<_> = plan
            .iter()
            .filter_map(|op| match op {
                MountOp::Bind {
                    src,
                    dst,
                    read_only,
                } if src.starts_with("/dev") => {
                    assert!(!read_only);
                    Some(dst.strip_prefix("/roots/alpine/dev").unwrap().to_owned())
                }
                _ => None,
            })
            .collect();
        assert_eq!(devs.len(), 6, "{devs:?}");
        assert!(plan.contains(&MountOp::Proc("/roots/alpine/proc".into())));
        let n = plan.len();
        assert_eq!(
            plan[n - 2],
            MountOp::Hosts {
                file: "/run/bramble/pods/p/hosts".into(),
                contents: "127.0.0.1\tlocalhost\n::1\tlocalhost\n127.0.1.1\tweb\n10.42.0.1\tdb\n"
                    .into(),
                dst: "/roots/alpine/etc/hosts".into(),
            }
        );
        assert_eq!(plan[n - 1], MountOp::PivotRoot("/roots/alpine".into()));
        // Nothing is mounted after the pivot, and proc comes after /dev.
        let proc_at = plan
            .iter()
            .position(|o| matches!(o, MountOp::Proc(_)))
            .unwrap();
        let symlink_at = plan
            .iter()
            .position(|o| matches!(o, MountOp::Symlink { .. }))
            .unwrap();
        assert!(symlink_at < proc_at);
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
