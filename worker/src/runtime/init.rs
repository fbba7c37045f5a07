//! The pod init: PID 1 of each pod's PID namespace.
//!
//! The worker clones a child into the pod's new namespaces, puts it into the pod's cgroup and lets
//! it re-execute the worker binary as `bramble-worker __bramble_init <state-dir>`. Being a fresh,
//! single-threaded process, the init can then allocate and use ordinary wrappers freely. It:
//!
//! 1. reads `<state-dir>/config` (postcard [`InitConfig`]), opens everything it needs across
//!    `pivot_root` (state and log directories, `cgroup.procs` and OOM-counter files);
//! 2. sets the hostname, makes mounts private, mounts a fresh `/proc`, sets up the optional rootfs
//!    (read-only bind, tmpfs `/tmp`, minimal `/dev`, volumes) and `pivot_root`s into it, brings
//!    `lo` up in a private network namespace;
//! 3. starts **all** the pod's processes, reaps every zombie (orphans included), copies each
//!    process's output into its ring log, and applies the restart policy itself with exponential
//!    backoff — so pods keep running and restarting while the worker is down;
//! 4. forwards SIGTERM/SIGINT to its children (PID 1 ignores signals without a handler; the init
//!    blocks them and reads them from a `signalfd`), stops restarting, and exits once they are
//!    gone;
//! 5. after every change, writes the pod's status atomically to `<state-dir>/status` (postcard
//!    [`PodStatus`]) and writes a byte into the `<state-dir>/events` fifo to wake the worker.
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
use crate::sys::net::Interest;
use crate::sys::process::{self as sysproc, Exit, ReadOutcome};
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
    oom_fd: Option<OwnedFd>,
    oom_seen: u64,
    log: Option<RingLog>,
    pipe: Option<OwnedFd>,
    old_pipes: Vec<OwnedFd>,
    status: ProcessStatus,
    pid: Option<i32>,
    started: Instant,
    next_start: Option<Instant>,
    failures: u32,
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

/// The pod's `/etc/hosts` when it has its own root: localhost, its hostname, and every service
/// of its namespace known when it started, by name, at the node's proxy (the addresses of the
/// `BRAMBLE_SERVICE_<NAME>_HOST` variables; service names are DNS labels, so `<NAME>` maps back
/// exactly). Written in the pod's run dir and bind-mounted read-only over the root's file; a
/// root without `/etc/hosts` keeps it as it is.
fn mount_hosts(cfg: &InitConfig, root: &Path, state_dir: &Path) -> Result<(), Error> {
    let target = root.join("etc/hosts");
    if !target.is_file() {
        return Ok(());
    }
    let env = cfg.processes.first().map_or(&[][..], |p| &p.spec.env[..]);
    let file = state_dir.join("hosts");
    std::fs::write(&file, hosts_file(&cfg.hostname, env))?;
    mount::bind(&file, &target, true)?;
    Ok(())
}

/// The text of a pod's hosts file (see [`mount_hosts`]).
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

fn setup_root(cfg: &InitConfig, state_dir: &Path) -> Result<(), Error> {
    mount::make_rprivate()?;
    let root = cfg
        .rootfs
        .as_deref()
        .map_or(PathBuf::from("/"), PathBuf::from);
    if cfg.rootfs.is_some() {
        mount::bind(&root, &root, true)?;
        mount::mount_tmpfs(&root.join("tmp"), cfg.tmp_size, 0o1777)?;
        let dev = root.join("dev");
        mount::mount_tmpfs(&dev, 1 << 20, 0o755)?;
        for node in ["null", "zero", "full", "random", "urandom", "tty"] {
            let target = dev.join(node);
            std::fs::write(&target, b"")?;
            mount::bind(&Path::new("/dev").join(node), &target, false)?;
        }
        std::os::unix::fs::symlink("/proc/self/fd", dev.join("fd"))?;
    }
    mount::mount_proc(&root.join("proc"))?;
    for v in &cfg.volumes {
        let target = root.join(v.mount_path.trim_start_matches('/'));
        match &v.source {
            VolumeSource::HostPath { path, read_only } => {
                mount::bind(Path::new(path), &target, *read_only)?;
            }
            VolumeSource::EmptyDir => {
                let src = Path::new(&cfg.empty_dir_base).join(&v.name);
                mount::bind(&src, &target, false)?;
            }
            VolumeSource::ConfigMap { .. } | VolumeSource::Secret { .. } => {
                let base = match v.source {
                    VolumeSource::ConfigMap { .. } => &cfg.config_volume_base,
                    _ => &cfg.secret_volume_base,
                };
                super::volumes::mount_volume(&Path::new(base).join(&v.name), &target)?;
            }
        }
    }
    if cfg.rootfs.is_some() {
        mount_hosts(cfg, &root, state_dir)?;
        mount::pivot_root(&root)?;
    }
    Ok(())
}

/// The init's main loop. Returns its exit code: 0 if the first process completed.
pub fn run(state_dir: &Path) -> Result<i32, Error> {
    let cfg: InitConfig = postcard::from_bytes(&std::fs::read(state_dir.join("config"))?)?;
    spawn::protect_from_oom();
    let sfd = sysproc::block_signals(&[libc::SIGCHLD, libc::SIGTERM, libc::SIGINT, libc::SIGHUP])?;
    let state_fd = sysproc::open_dir(state_dir)?;
    let log_fd = sysproc::open_dir(Path::new(&cfg.log_dir))?;
    let events = sysproc::open_fifo_rw_at(state_fd.as_fd(), "events")?;
    let devnull = sysproc::open_read(Path::new("/dev/null"))?;
    let mut procs = Vec::new();
    for p in &cfg.processes {
        let procs_fds = p
            .cgroup_procs
            .iter()
            .map(|f| spawn::open_write(Path::new(f)))
            .collect::<Result<Vec<_>, _>>()?;
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
            started: Instant::now(),
            next_start: Some(Instant::now()),
            failures: 0,
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
    setup_root(&cfg, state_dir)?;
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
                if p.next_start.is_some_and(|t| t <= now) {
                    p.next_start = None;
                    start(p, &devnull, &cfg);
                    changed = true;
                }
            }
        }
        let running = procs.iter().any(|p| p.pid.is_some());
        let pending = !stopping && procs.iter().any(|p| p.next_start.is_some());
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
                p.next_start
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
                    libc::SIGCHLD => {
                        while let Some((pid, exit)) = sysproc::reap_any()? {
                            if let Some(p) = procs.iter_mut().find(|p| p.pid == Some(pid)) {
                                exited(p, exit, &cfg, stopping);
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
                    libc::SIGTERM | libc::SIGINT => {
                        stopping = true;
                        changed = true;
                        for p in procs.iter_mut() {
                            // Stopping: no more probes, and out of service right away.
                            p.probes.iter_mut().for_each(Prober::process_stopped);
                            p.status.ready = false;
                            if let Some(pid) = p.pid {
                                let _ = sysproc::kill(pid, sig);
                            }
                            if p.next_start.take().is_some() {
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
    p.started = Instant::now();
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
            finish(p, ExitReason::StartFailed, cfg, false);
        }
    }
}

fn exited(p: &mut Proc, exit: Exit, cfg: &InitConfig, stopping: bool) {
    p.pid = None;
    p.kill_at = None;
    p.probes.iter_mut().for_each(Prober::process_stopped);
    let reason = match exit {
        Exit::Code(0) => ExitReason::Completed,
        Exit::Code(c) => ExitReason::Error(c),
        Exit::Signal(libc::SIGKILL) if oom_count(&p.oom_fd) > p.oom_seen => ExitReason::OOMKilled,
        Exit::Signal(s) => ExitReason::Signaled(s),
    };
    finish(p, reason, cfg, stopping);
}

fn finish(p: &mut Proc, reason: ExitReason, cfg: &InitConfig, stopping: bool) {
    p.status.last_exit = Some(reason);
    p.status.ready = false;
    p.status.state = ProcessState::Terminated {
        reason,
        finished_ms: now_ms(),
    };
    // A process its liveness probe killed failed, whatever it exited with.
    let failed = reason != ExitReason::Completed || std::mem::take(&mut p.liveness_killed);
    let restart = !stopping
        && match cfg.restart_policy {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => failed,
            RestartPolicy::Never => false,
        };
    if restart {
        if p.started.elapsed() >= Duration::from_millis(cfg.backoff_reset_ms) {
            p.failures = 0;
        }
        let delay = cfg
            .backoff_initial_ms
            .saturating_mul(1u64 << p.failures.min(30))
            .min(cfg.backoff_max_ms);
        p.failures = p.failures.saturating_add(1);
        p.next_start = Some(Instant::now() + Duration::from_millis(delay));
        p.status.restarts += 1;
        p.status.state = ProcessState::Waiting;
    }
}

/// Runs `p`'s probes and enforces a liveness kill's grace. Returns whether the status changed.
fn probe_step(p: &mut Proc, now: Instant, devnull: &OwnedFd, cfg: &InitConfig) -> bool {
    if let (Some(pid), Some(at)) = (p.pid, p.kill_at)
        && at <= now
    {
        // Past the grace: the whole process group.
        signal_group(pid, libc::SIGKILL);
        p.kill_at = None;
    }
    if p.probes.is_empty() || p.pid.is_none() {
        return false;
    }
    let procs = spawn::borrow_all(&p.procs_fds);
    let ctx = ExecContext {
        cgroup_procs: &procs,
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
        signal_group(pid, libc::SIGTERM);
        p.kill_at = Some(now + Duration::from_millis(cfg.termination_grace_ms));
        changed |= p.status.ready;
        p.status.ready = false;
    }
    changed
}

/// Signals a process's group (it ran `setsid`), or the process alone if it left its group.
fn signal_group(pid: i32, sig: i32) {
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
    let Ok(bytes) = postcard::to_stdvec(&status) else {
        return;
    };
    let ok = sysproc::create_at(state.as_fd(), "status.tmp")
        .and_then(|fd| sysproc::write_all(fd.as_fd(), &bytes))
        .and_then(|()| sysproc::rename_at(state.as_fd(), "status.tmp", "status"));
    if let Err(e) = ok {
        eprintln!("bramble pod init: writing status: {e}");
    }
    let _ = sysproc::write_nonblocking(events.as_fd(), b"\n");
}

#[cfg(test)]
mod tests {
    use super::hosts_file;

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
