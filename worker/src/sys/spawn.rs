//! Starting processes: the pod init (raw `clone` into new namespaces, paused until the worker has
//! put it into its cgroup) and the pod's processes (`fork` from the single-threaded init).
//!
//! The worker is multi-threaded: after a raw `clone` only the calling thread exists in the child,
//! and locks held by other threads (malloc's, glibc's setxid broadcast) stay locked forever. So the
//! clone child does nothing but `close`, `dup2`, `sigprocmask`, `read` and `execve` on data
//! prepared before the clone ([`Exec`]), and re-executes the worker binary as the pod init, which
//! then does the namespace setup as an ordinary single-threaded process.
//!
//! On cgroup v2 both are started with `clone3(CLONE_INTO_CGROUP)` ([`fork_into`]): the child is
//! born in its cgroup, so no migration (no `cgroup.procs` write, no `cgroup_threadgroup_rwsem`)
//! follows. Kernels without `clone3` or without `CLONE_INTO_CGROUP` (before 5.7), and seccomp
//! filters that refuse `clone3` with `ENOSYS` (Docker's), fall back to `clone`/`fork` and the
//! `cgroup.procs` write.

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::Path;

use nix::fcntl::OFlag;

use super::caps::{self, Credentials};
use super::seccomp::SeccompProgram;
use super::{Result, SysError, errno};

/// A program ready for `execve`: every string and pointer array is built before any fork.
#[derive(Debug)]
pub struct Exec {
    path: CString,
    _argv: Vec<CString>,
    _envp: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    envp_ptrs: Vec<*const libc::c_char>,
}

fn cstring(s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| SysError::Nul(s.to_owned()))
}

impl Exec {
    /// Prepares `path` with `argv` (including `argv[0]`) and the environment `env`.
    pub fn new<A: AsRef<str>>(path: &Path, argv: &[A], env: &[(String, String)]) -> Result<Exec> {
        let path_s = path
            .to_str()
            .ok_or_else(|| SysError::Nul(path.display().to_string()))?;
        let path = cstring(path_s)?;
        let argv = argv
            .iter()
            .map(|a| cstring(a.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        let envp = env
            .iter()
            .map(|(k, v)| cstring(&format!("{k}={v}")))
            .collect::<Result<Vec<_>>>()?;
        // The pointers point into the CStrings' heap buffers, which do not move when the Vecs
        // (or the Exec) move.
        let mut argv_ptrs: Vec<_> = argv.iter().map(|a| a.as_ptr()).collect();
        argv_ptrs.push(std::ptr::null());
        let mut envp_ptrs: Vec<_> = envp.iter().map(|a| a.as_ptr()).collect();
        envp_ptrs.push(std::ptr::null());
        Ok(Exec {
            path,
            _argv: argv,
            _envp: envp,
            argv_ptrs,
            envp_ptrs,
        })
    }

    /// The program's path.
    pub fn path(&self) -> &CStr {
        &self.path
    }
}

/// Namespaces of a new pod: always a new mount and UTS namespace; a new PID and IPC namespace
/// unless the pod opts out.
#[derive(Debug, Clone, Copy, Default)]
pub struct Namespaces {
    /// A new network namespace (only loopback).
    pub net: bool,
    /// Stay in the host's PID namespace (`host_pid`): the init is then not PID 1.
    pub host_pid: bool,
    /// Stay in the host's IPC namespace (`host_ipc`).
    pub host_ipc: bool,
}

/// A cloned pod init that waits, before `execve`, for [`Paused::release`]. Dropping it without
/// releasing kills and reaps the child.
#[derive(Debug)]
pub struct Paused {
    pid: i32,
    sync: Option<OwnedFd>,
    in_cgroup: bool,
}

impl Paused {
    /// The child's PID (in the worker's PID namespace).
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Whether the child was born in the cgroup given to [`clone_paused_into`] (cgroup v2 with
    /// `clone3`); if not, the caller moves it there.
    pub fn in_cgroup(&self) -> bool {
        self.in_cgroup
    }

    /// Lets the child `execve`.
    pub fn release(mut self) -> Result<i32> {
        let Some(sync) = self.sync.take() else {
            return Ok(self.pid);
        };
        match nix::unistd::write(&sync, &[1u8]) {
            Ok(1) => Ok(self.pid),
            Ok(_) => Err(SysError::call("write (release pod init)", nix::Error::EIO)),
            Err(e) => Err(SysError::call("write (release pod init)", e)),
        }
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        if self.sync.take().is_some() {
            // Not released: the child reads EOF and exits; make sure of it and reap it.
            let _ = super::process::kill(self.pid, super::process::Signal::KILL);
            let _ = super::process::wait_blocking(self.pid);
        }
    }
}

/// Clones a child into new mount and UTS namespaces, new PID and IPC namespaces unless `ns`
/// keeps the host's, and a new network namespace if `ns.net`, with `stdio` as its
/// fds 0, 1, 2. The child waits for [`Paused::release`], then `execve`s `exec` with SIGTERM,
/// SIGINT, SIGHUP and SIGCHLD blocked (pending until the init reads them from a signalfd).
///
/// Each `stdio` fd must be either its own slot (0, 1, 2) or greater than 2.
pub fn clone_paused(exec: &Exec, ns: Namespaces, stdio: [BorrowedFd<'_>; 3]) -> Result<Paused> {
    clone_paused_into(exec, ns, stdio, None)
}

/// [`clone_paused`], born in the cgroup v2 directory `cgroup` (an fd of the directory) when the
/// kernel allows it ([`Paused::in_cgroup`] says whether it did; if not, the caller joins it).
pub fn clone_paused_into(
    exec: &Exec,
    ns: Namespaces,
    stdio: [BorrowedFd<'_>; 3],
    cgroup: Option<BorrowedFd<'_>>,
) -> Result<Paused> {
    let (sync_r, sync_w) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| SysError::call("pipe2", e))?;
    let mut flags = libc::CLONE_NEWNS | libc::CLONE_NEWUTS;
    if !ns.host_pid {
        flags |= libc::CLONE_NEWPID;
    }
    if !ns.host_ipc {
        flags |= libc::CLONE_NEWIPC;
    }
    if ns.net {
        flags |= libc::CLONE_NEWNET;
    }
    let flags = (flags | libc::SIGCHLD) as libc::c_long;
    let stdio_raw = [
        stdio[0].as_raw_fd(),
        stdio[1].as_raw_fd(),
        stdio[2].as_raw_fd(),
    ];
    let (sync_r_raw, sync_w_raw) = (sync_r.as_raw_fd(), sync_w.as_raw_fd());

    // The child must be born with the init's signals blocked: a SIGTERM sent to a PID
    // namespace's init that has neither blocked it nor a handler is dropped, and a stop can come
    // right after `release`, before the child ran at all. This thread blocks them around the
    // clone (the child inherits the mask), then restores its own.
    // SAFETY: sigset operations on a local set; pthread_sigmask changes this thread's mask only.
    let old_mask = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGCHLD] {
            libc::sigaddset(&mut set, sig);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
        old
    };
    // SAFETY: `fork_into` without CLONE_VM and with a null stack behaves like fork: the child
    // gets a copy-on-write copy of the address space and only this thread. The child branch
    // below calls only async-signal-safe functions on data prepared before the clone, and never
    // returns.
    let cloned = unsafe { fork_into(flags as u64, cgroup.map(|c| c.as_raw_fd())) };
    if !matches!(cloned, Ok((0, _))) {
        // SAFETY: restores this thread's mask saved above.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old_mask, std::ptr::null_mut()) };
    }
    let (ret, in_cgroup) = cloned.map_err(|e| SysError::call("clone (pod init)", e))?;
    if ret == 0 {
        // SAFETY: we are the clone child; see `clone_child`.
        unsafe { clone_child(exec, stdio_raw, sync_r_raw, sync_w_raw) }
    }
    drop(sync_r);
    Ok(Paused {
        pid: ret,
        sync: Some(sync_w),
        in_cgroup,
    })
}

/// `CLONE_INTO_CGROUP` (Linux 5.7).
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `struct clone_args` up to `cgroup` (`CLONE_ARGS_SIZE_VER2`).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Forks (as `clone` with `flags`: namespace flags and the exit signal in the low byte, no
/// `CLONE_VM`) into the cgroup v2 directory `cgroup` with `clone3(CLONE_INTO_CGROUP)`, or without
/// it (plain `clone`) when `cgroup` is `None` or the kernel cannot (`ENOSYS`: no `clone3` or a
/// seccomp filter; `E2BIG`/`EINVAL`: no `CLONE_INTO_CGROUP`). Returns the child's PID (0 in the
/// child) and whether it was born in `cgroup`.
///
/// # Safety
/// As `fork`: in a multi-threaded caller the child may only make async-signal-safe calls until
/// it execs or exits.
pub unsafe fn fork_into(flags: u64, cgroup: Option<RawFd>) -> nix::Result<(i32, bool)> {
    if let Some(fd) = cgroup {
        let args = CloneArgs {
            flags: (flags & !0xff) | CLONE_INTO_CGROUP,
            exit_signal: flags & 0xff,
            cgroup: fd as u64,
            ..Default::default()
        };
        // SAFETY: clone3 without CLONE_VM and with no stack is fork-like; `args` lives across
        // the call and its size is passed with it.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                &raw const args,
                std::mem::size_of::<CloneArgs>(),
            )
        };
        if ret >= 0 {
            return Ok((ret as i32, true));
        }
        let e = errno();
        if !matches!(
            e,
            nix::Error::ENOSYS | nix::Error::E2BIG | nix::Error::EINVAL
        ) {
            return Err(e);
        }
    }
    // SAFETY: as above, the legacy call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags as libc::c_long,
            0 as libc::c_long,
            0,
            0,
            0,
        )
    };
    if ret < 0 {
        return Err(errno());
    }
    Ok((ret as i32, false))
}

/// The clone child: no allocation, no locks, only async-signal-safe calls.
///
/// # Safety
/// Must only be called in the child of `clone_paused`, with `exec` prepared before the clone.
unsafe fn clone_child(exec: &Exec, stdio: [RawFd; 3], sync_r: RawFd, sync_w: RawFd) -> ! {
    // SAFETY: async-signal-safe libc calls on plain integers and on pointers into `exec`, whose
    // buffers were allocated before the clone and stay valid; `_exit` never returns.
    unsafe {
        libc::close(sync_w);
        for (slot, &fd) in stdio.iter().enumerate() {
            let slot = slot as RawFd;
            if fd == slot {
                libc::fcntl(fd, libc::F_SETFD, 0);
            } else if libc::dup2(fd, slot) < 0 {
                libc::_exit(126);
            }
        }
        // The init's signals start blocked and stay blocked across execve: a SIGTERM sent
        // before the init reads its signalfd stays pending instead of being dropped (PID 1 of a
        // PID namespace discards unblocked signals it has no handler for).
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGCHLD] {
            libc::sigaddset(&mut set, sig);
        }
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        let mut byte = 0u8;
        loop {
            let n = libc::read(sync_r, (&raw mut byte).cast(), 1);
            if n == 1 {
                break;
            }
            if n < 0 && nix::errno::Errno::last_raw() == libc::EINTR {
                continue;
            }
            libc::_exit(1);
        }
        libc::execve(
            exec.path.as_ptr(),
            exec.argv_ptrs.as_ptr(),
            exec.envp_ptrs.as_ptr(),
        );
        libc::_exit(127)
    }
}

/// How to start one of the pod's processes from the pod init.
#[derive(Debug)]
pub struct ProcessSetup<'a> {
    /// The program.
    pub exec: &'a Exec,
    /// `cgroup.procs` files (opened for writing) to join before `execve`.
    pub cgroup_procs: &'a [BorrowedFd<'a>],
    /// A cgroup v2 directory to be born in (`clone3(CLONE_INTO_CGROUP)`) instead of joining
    /// `cgroup_procs` after the fork; they are written only if the kernel cannot.
    pub cgroup_dir: Option<BorrowedFd<'a>>,
    /// Standard input.
    pub stdin: BorrowedFd<'a>,
    /// Standard output and standard error.
    pub output: BorrowedFd<'a>,
    /// Working directory.
    pub workdir: Option<&'a CStr>,
    /// User, groups and capabilities.
    pub creds: &'a Credentials,
    /// The seccomp filter, installed last before `execve`; `None` runs unconfined.
    pub seccomp: Option<&'a SeccompProgram>,
    /// Standard error, if not `output` (`bramble exec` without a terminal).
    pub stderr: Option<BorrowedFd<'a>>,
    /// `stdin` is a terminal that becomes the new session's controlling terminal
    /// (`bramble exec -t`).
    pub controlling_tty: bool,
}

/// The child's steps, in order; a failure reports its index.
const STEPS: [&str; 15] = [
    "cgroup join",
    "setsid",
    "dup2",
    "chdir",
    "prctl(PR_CAPBSET_DROP)",
    "prctl(PR_SET_KEEPCAPS)",
    "setgroups",
    "setresgid",
    "setresuid",
    "capset",
    "prctl(PR_CAP_AMBIENT_RAISE)",
    "prctl(no_new_privs)",
    "seccomp",
    "execve",
    "ioctl(TIOCSCTTY)",
];
const STEP_EXECVE: u8 = 13;

#[cfg(target_arch = "arm")]
mod ids {
    pub const SETGROUPS: libc::c_long = libc::SYS_setgroups32;
    pub const SETRESGID: libc::c_long = libc::SYS_setresgid32;
    pub const SETRESUID: libc::c_long = libc::SYS_setresuid32;
}
#[cfg(not(target_arch = "arm"))]
mod ids {
    pub const SETGROUPS: libc::c_long = libc::SYS_setgroups;
    pub const SETRESGID: libc::c_long = libc::SYS_setresgid;
    pub const SETRESUID: libc::c_long = libc::SYS_setresuid;
}

/// Makes the calling process (the pod init) the OOM killer's last choice, so that inside a
/// pod's memory limit the kernel kills the workload that allocates, not the init that reports it.
/// Best effort: without CAP_SYS_RESOURCE it stays as it was.
pub fn protect_from_oom() {
    let _ = std::fs::write("/proc/self/oom_score_adj", "-1000");
}

/// Forks and execs one process of the pod. Returns its PID once `execve` succeeded; a failure
/// before `execve` is reported as [`SysError::ChildSetup`] (the child is reaped).
///
/// In the child: `oom_score_adj` back to 0, default signal mask and dispositions, cgroup join,
/// new session, stdio, working directory, the capability bounding set, `PR_SET_KEEPCAPS`,
/// `setgroups`/`setresgid`/`setresuid` (raw syscalls), `capset`, ambient capabilities,
/// `PR_SET_NO_NEW_PRIVS`, the seccomp filter, `execve` ([`STEPS`]).
pub fn fork_exec(setup: &ProcessSetup<'_>) -> Result<i32> {
    let (err_r, err_w) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| SysError::call("pipe2", e))?;
    let procs: [RawFd; 8] = {
        let mut a = [-1; 8];
        for (i, fd) in setup.cgroup_procs.iter().take(8).enumerate() {
            a[i] = fd.as_raw_fd();
        }
        a
    };
    let workdir = setup.workdir.map_or(std::ptr::null(), |w| w.as_ptr());
    let stdin = setup.stdin.as_raw_fd();
    let output = setup.output.as_raw_fd();
    let stderr = setup.stderr.map_or(output, |e| e.as_raw_fd());
    let tty = setup.controlling_tty;
    let err_w_raw = err_w.as_raw_fd();
    let creds = setup.creds;
    let seccomp = setup.seccomp;

    // SAFETY: the fork is done from the pod init, which is single-threaded; the child branch
    // only makes async-signal-safe calls on data prepared above and never returns.
    let (pid, in_cgroup) = unsafe {
        fork_into(
            libc::SIGCHLD as u64,
            setup.cgroup_dir.map(|d| d.as_raw_fd()),
        )
    }
    .map_err(|e| SysError::call("fork", e))?;
    // Born in its cgroup: nothing to join.
    let procs = if in_cgroup { [-1; 8] } else { procs };
    if pid == 0 {
        // SAFETY: we are the fork child.
        unsafe {
            process_child(
                setup.exec,
                &procs,
                [stdin, output, stderr],
                tty,
                workdir,
                creds,
                seccomp,
                err_w_raw,
            )
        }
    }
    drop(err_w);
    let mut buf = [0u8; 5];
    let mut got = 0;
    while got < buf.len() {
        match nix::unistd::read(&err_r, &mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(SysError::call("read (exec status)", e)),
        }
    }
    if got == 0 {
        return Ok(pid);
    }
    let _ = super::process::wait_blocking(pid);
    let step = STEPS.get(buf[0] as usize).copied().unwrap_or("unknown");
    let code = i32::from_le_bytes([buf[1], buf[2], buf[3], buf[4]]);
    Err(SysError::ChildSetup {
        step,
        err: nix::Error::from_raw(code),
    })
}

/// The fork child of [`fork_exec`].
///
/// # Safety
/// Must only be called in the child of `fork_exec`.
#[allow(clippy::too_many_arguments)]
unsafe fn process_child(
    exec: &Exec,
    procs: &[RawFd; 8],
    [stdin, output, stderr]: [RawFd; 3],
    tty: bool,
    workdir: *const libc::c_char,
    creds: &Credentials,
    seccomp: Option<&SeccompProgram>,
    err_w: RawFd,
) -> ! {
    // SAFETY: async-signal-safe libc calls on integers, stack buffers and pointers prepared
    // before the fork; every path ends in `execve` or `_exit`.
    unsafe {
        let fail = |step: u8| -> ! {
            let e = nix::errno::Errno::last_raw();
            let mut msg = [step, 0, 0, 0, 0];
            msg[1..].copy_from_slice(&e.to_le_bytes());
            libc::write(err_w, msg.as_ptr().cast(), msg.len());
            libc::_exit(127)
        };
        // The pod init shields itself from the OOM killer (`protect_from_oom`); the workload
        // must not inherit that shield.
        let adj = libc::open(
            c"/proc/self/oom_score_adj".as_ptr(),
            libc::O_WRONLY | libc::O_CLOEXEC,
        );
        if adj >= 0 {
            libc::write(adj, b"0".as_ptr().cast(), 1);
            libc::close(adj);
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        for sig in [
            libc::SIGPIPE,
            libc::SIGTERM,
            libc::SIGINT,
            libc::SIGCHLD,
            libc::SIGHUP,
        ] {
            libc::signal(sig, libc::SIG_DFL);
        }
        for &fd in procs.iter().filter(|&&fd| fd >= 0) {
            if libc::pwrite(fd, b"0".as_ptr().cast(), 1, 0) < 0 {
                fail(0);
            }
        }
        if libc::setsid() < 0 {
            fail(1);
        }
        if libc::dup2(stdin, 0) < 0 || libc::dup2(output, 1) < 0 || libc::dup2(stderr, 2) < 0 {
            fail(2);
        }
        if tty && libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
            fail(14);
        }
        if !workdir.is_null() && libc::chdir(workdir) < 0 {
            fail(3);
        }
        // Capabilities: the bounding set first (dropping needs CAP_SETPCAP, which the uid
        // switch takes away), the permitted set kept across the switch, then the sets the
        // process runs with (see `runtime::security::cap_plan`).
        if !caps::drop_bounding(creds.caps.bounding) {
            fail(4);
        }
        if !caps::keep_caps(true) {
            fail(5);
        }
        // `groups` was allocated before the fork; only its buffer is read here.
        if libc::syscall(
            ids::SETGROUPS,
            creds.groups.len() as libc::c_long,
            creds.groups.as_ptr(),
        ) < 0
        {
            fail(6);
        }
        let g = creds.gid as libc::c_long;
        if libc::syscall(ids::SETRESGID, g, g, g) < 0 {
            fail(7);
        }
        let u = creds.uid as libc::c_long;
        if libc::syscall(ids::SETRESUID, u, u, u) < 0 {
            fail(8);
        }
        if !caps::set(&creds.caps) {
            fail(9);
        }
        if !caps::raise_ambient(creds.caps.ambient) {
            fail(10);
        }
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as libc::c_ulong, 0, 0, 0) < 0 {
            fail(11);
        }
        // The seccomp filter last before execve: after no_new_privs, which lets an unprivileged
        // process install it, and after every syscall above, which it may forbid.
        if let Some(prog) = seccomp
            && prog.install_raw() < 0
        {
            fail(12);
        }
        libc::execve(
            exec.path.as_ptr(),
            exec.argv_ptrs.as_ptr(),
            exec.envp_ptrs.as_ptr(),
        );
        fail(STEP_EXECVE)
    }
}

/// Opens the cgroup v2 directory of the `cgroup.procs` file `procs` (for
/// [`ProcessSetup::cgroup_dir`]); `None` if it is not on a cgroup v2 filesystem.
pub fn open_cgroup2_dir_of(procs: &Path) -> Option<OwnedFd> {
    let dir = procs.parent()?;
    if super::process::statfs_magic(dir).ok()? != super::process::CGROUP2_MAGIC {
        return None;
    }
    super::process::open_dir(dir).ok()
}

/// Opens `path` for writing (a `cgroup.procs` file) and returns the fd.
pub fn open_write(path: &Path) -> Result<OwnedFd> {
    nix::fcntl::open(
        path,
        OFlag::O_WRONLY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| SysError::path("open", path, e))
}

/// Borrows a list of owned fds.
pub fn borrow_all(fds: &[OwnedFd]) -> Vec<BorrowedFd<'_>> {
    fds.iter().map(|f| f.as_fd()).collect()
}
