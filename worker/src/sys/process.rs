//! Signals, waiting, `pidfd`, `poll`, `signalfd`, fifos, `statfs` and reading `/proc`.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use nix::sys::signal::{SigSet, SigmaskHow, Signal as NixSignal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::{Result, SysError};

/// A signal: the ones the worker sends and handles by name, any other by number (as the kernel
/// reported it). `match` works on the constants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signal(i32);

impl Signal {
    /// `SIGTERM`: please stop.
    pub const TERM: Signal = Signal(libc::SIGTERM);
    /// `SIGKILL`.
    pub const KILL: Signal = Signal(libc::SIGKILL);
    /// `SIGINT`.
    pub const INT: Signal = Signal(libc::SIGINT);
    /// `SIGHUP`.
    pub const HUP: Signal = Signal(libc::SIGHUP);
    /// `SIGCHLD`: a child changed state.
    pub const CHLD: Signal = Signal(libc::SIGCHLD);

    /// The signal with this number (as in an exit status).
    pub const fn from_number(n: i32) -> Signal {
        Signal(n)
    }

    /// Its number (for the wire's `ExitReason::Signaled`).
    pub const fn number(self) -> i32 {
        self.0
    }

    fn to_nix(self) -> Result<NixSignal> {
        NixSignal::try_from(self.0).map_err(|e| SysError::call("signal number", e))
    }
}

impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match NixSignal::try_from(self.0) {
            Ok(s) => f.write_str(s.as_str()),
            Err(_) => write!(f, "signal {}", self.0),
        }
    }
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// `exit(code)`.
    Code(i32),
    /// Killed by a signal.
    Signal(Signal),
}

/// Sends `sig` to `pid` (a negative `pid`: to the process group). Returns `false` if the
/// process does not exist (any more).
pub fn kill(pid: i32, sig: Signal) -> Result<bool> {
    let sig = sig.to_nix()?;
    match nix::sys::signal::kill(Pid::from_raw(pid), sig) {
        Ok(()) => Ok(true),
        Err(nix::Error::ESRCH) => Ok(false),
        Err(e) => Err(SysError::call("kill", e)),
    }
}

/// Whether `pid` exists (a zombie counts).
pub fn alive(pid: i32) -> bool {
    !matches!(
        nix::sys::signal::kill(Pid::from_raw(pid), None),
        Err(nix::Error::ESRCH)
    )
}

fn to_exit(ws: WaitStatus) -> Option<(i32, Exit)> {
    match ws {
        WaitStatus::Exited(pid, code) => Some((pid.as_raw(), Exit::Code(code))),
        WaitStatus::Signaled(pid, sig, _) => Some((pid.as_raw(), Exit::Signal(Signal(sig as i32)))),
        _ => None,
    }
}

/// Reaps `pid` if it has exited, without blocking. `Ok(None)`: still running, or not our child.
pub fn try_wait(pid: i32) -> Result<Option<Exit>> {
    match nix::sys::wait::waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
        Ok(ws) => Ok(to_exit(ws).map(|(_, e)| e)),
        Err(nix::Error::ECHILD) => Ok(None),
        Err(e) => Err(SysError::call("waitpid", e)),
    }
}

/// Waits for our child `pid` to exit and reaps it.
pub fn wait_blocking(pid: i32) -> Result<Exit> {
    loop {
        match nix::sys::wait::waitpid(Pid::from_raw(pid), None) {
            Ok(ws) => {
                if let Some((_, e)) = to_exit(ws) {
                    return Ok(e);
                }
            }
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(SysError::call("waitpid", e)),
        }
    }
}

/// Reaps any exited child without blocking.
pub fn reap_any() -> Result<Option<(i32, Exit)>> {
    loop {
        match nix::sys::wait::waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => return Ok(None),
            Ok(ws) => {
                if let Some(x) = to_exit(ws) {
                    return Ok(Some(x));
                }
            }
            Err(nix::Error::ECHILD) => return Ok(None),
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(SysError::call("waitpid", e)),
        }
    }
}

/// A `pidfd` for `pid`: readable once the process has exited. Works for non-children.
pub fn pidfd_open(pid: i32) -> Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_long, 0 as libc::c_long) };
    if fd < 0 {
        return Err(SysError::call("pidfd_open", super::errno()));
    }
    // SAFETY: the kernel just returned this fd; nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Waits until one of `fds` is readable (or hung up) or `timeout` passes (`None`: forever).
/// Returns which fds are ready; all `false` on timeout or interruption.
pub fn poll_readable(fds: &[BorrowedFd<'_>], timeout: Option<Duration>) -> Result<Vec<bool>> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|fd| libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as i32);
    // SAFETY: `pfds` is a valid array of `pfds.len()` pollfd structs for the whole call.
    let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
    if n < 0 {
        let e = super::errno();
        if e == nix::Error::EINTR {
            return Ok(vec![false; fds.len()]);
        }
        return Err(SysError::call("poll", e));
    }
    Ok(pfds.iter().map(|p| p.revents != 0).collect())
}

/// Blocks `signals` for this (single-threaded) process and returns a non-blocking `signalfd`
/// that receives them.
pub fn block_signals(signals: &[Signal]) -> Result<SignalFd> {
    let mut set = SigSet::empty();
    for &s in signals {
        set.add(s.to_nix()?);
    }
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None)
        .map_err(|e| SysError::call("sigprocmask", e))?;
    SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| SysError::call("signalfd", e))
}

/// Reads every pending signal from `sfd`.
pub fn read_signals(sfd: &SignalFd) -> Result<Vec<Signal>> {
    let mut out = Vec::new();
    loop {
        match sfd.read_signal() {
            Ok(Some(info)) => out.push(Signal(info.ssi_signo as i32)),
            Ok(None) | Err(nix::Error::EAGAIN) => return Ok(out),
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(SysError::call("read (signalfd)", e)),
        }
    }
}

/// Makes `fd` non-blocking.
pub fn set_nonblocking(fd: BorrowedFd<'_>) -> Result<()> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(|e| SysError::call("fcntl(F_GETFL)", e))?;
    let flags = OFlag::from_bits_retain(flags) | OFlag::O_NONBLOCK;
    fcntl(fd, FcntlArg::F_SETFL(flags)).map_err(|e| SysError::call("fcntl(F_SETFL)", e))?;
    Ok(())
}

/// A pipe `(read, write)`, both close-on-exec.
pub fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| SysError::call("pipe2", e))
}

/// Outcome of a non-blocking read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOutcome {
    /// This many bytes.
    Data(usize),
    /// Nothing right now.
    WouldBlock,
    /// End of file: every writer closed.
    Eof,
}

/// Reads from a non-blocking fd.
pub fn read_nonblocking(fd: BorrowedFd<'_>, buf: &mut [u8]) -> Result<ReadOutcome> {
    loop {
        match nix::unistd::read(fd, buf) {
            Ok(0) => return Ok(ReadOutcome::Eof),
            Ok(n) => return Ok(ReadOutcome::Data(n)),
            Err(nix::Error::EAGAIN) => return Ok(ReadOutcome::WouldBlock),
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(SysError::call("read", e)),
        }
    }
}

/// Writes without blocking; a full pipe drops the bytes (`Ok(false)`).
pub fn write_nonblocking(fd: BorrowedFd<'_>, buf: &[u8]) -> Result<bool> {
    match nix::unistd::write(fd, buf) {
        Ok(_) => Ok(true),
        Err(nix::Error::EAGAIN) | Err(nix::Error::EPIPE) => Ok(false),
        Err(e) => Err(SysError::call("write", e)),
    }
}

/// Writes all of `buf` at offset 0 (`pwrite`): for cgroup files kept open across `pivot_root`.
pub fn pwrite_all(fd: BorrowedFd<'_>, buf: &[u8]) -> Result<()> {
    nix::sys::uio::pwrite(fd, buf, 0).map_err(|e| SysError::call("pwrite", e))?;
    Ok(())
}

/// Reads a small file from offset 0 (`pread`): for cgroup files kept open across `pivot_root`.
pub fn pread_string(fd: BorrowedFd<'_>) -> Result<String> {
    let mut buf = vec![0u8; 4096];
    let n = nix::sys::uio::pread(fd, &mut buf, 0).map_err(|e| SysError::call("pread", e))?;
    buf.truncate(n);
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Opens `path` read-only, close-on-exec.
pub fn open_read(path: &Path) -> Result<OwnedFd> {
    nix::fcntl::open(
        path,
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| SysError::path("open", path, e))
}

/// Opens a directory (`O_PATH`-like handle for `*at` calls that outlive `pivot_root`).
pub fn open_dir(path: &Path) -> Result<OwnedFd> {
    nix::fcntl::open(
        path,
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| SysError::path("open", path, e))
}

/// Opens (creating, appending) `name` in directory `dir`.
pub fn open_append_at(dir: BorrowedFd<'_>, name: &str) -> Result<OwnedFd> {
    use nix::fcntl::OFlag;
    nix::fcntl::openat(
        dir,
        name,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_APPEND | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::from_bits_truncate(0o640),
    )
    .map_err(|e| SysError::path("openat", name, e))
}

/// Opens (creating, truncating) `name` in directory `dir`.
pub fn create_at(dir: BorrowedFd<'_>, name: &str) -> Result<OwnedFd> {
    use nix::fcntl::OFlag;
    nix::fcntl::openat(
        dir,
        name,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_TRUNC | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::from_bits_truncate(0o640),
    )
    .map_err(|e| SysError::path("openat", name, e))
}

/// Opens a fifo `name` in `dir` read+write and non-blocking: writes never block and never fail
/// with `EPIPE`, whether or not a reader is there.
pub fn open_fifo_rw_at(dir: BorrowedFd<'_>, name: &str) -> Result<OwnedFd> {
    use nix::fcntl::OFlag;
    nix::fcntl::openat(
        dir,
        name,
        OFlag::O_RDWR | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| SysError::path("openat", name, e))
}

/// Opens a fifo for reading, non-blocking.
pub fn open_fifo_read(path: &Path) -> Result<OwnedFd> {
    use nix::fcntl::OFlag;
    nix::fcntl::open(
        path,
        OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| SysError::path("open", path, e))
}

/// Flushes `fd`'s data and metadata to its device (a directory: its entries).
pub fn fsync(fd: BorrowedFd<'_>) -> Result<()> {
    nix::unistd::fsync(fd).map_err(|e| SysError::call("fsync", e))
}

/// Renames `from` to `to`, both in `dir`.
pub fn rename_at(dir: BorrowedFd<'_>, from: &str, to: &str) -> Result<()> {
    nix::fcntl::renameat(dir, from, dir, to).map_err(|e| SysError::path("renameat", to, e))
}

/// Removes the file `name` in `dir`; a missing file is not an error.
pub fn unlink_at(dir: BorrowedFd<'_>, name: &str) -> Result<()> {
    match nix::unistd::unlinkat(dir, name, nix::unistd::UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(nix::Error::ENOENT) => Ok(()),
        Err(e) => Err(SysError::path("unlinkat", name, e)),
    }
}

/// Writes all of `buf` to `fd`.
pub fn write_all(fd: BorrowedFd<'_>, mut buf: &[u8]) -> Result<()> {
    while !buf.is_empty() {
        match nix::unistd::write(fd, buf) {
            Ok(n) => buf = &buf[n..],
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(SysError::call("write", e)),
        }
    }
    Ok(())
}

/// Creates a fifo.
pub fn mkfifo(path: &Path) -> Result<()> {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .map_err(|e| SysError::path("mkfifo", path, e))
}

/// Filesystem magic of the filesystem holding `path`.
pub fn statfs_magic(path: &Path) -> Result<i64> {
    let st = nix::sys::statfs::statfs(path).map_err(|e| SysError::path("statfs", path, e))?;
    Ok(st.filesystem_type().0 as i64)
}

/// `CGROUP2_SUPER_MAGIC`.
#[allow(clippy::unnecessary_cast)] // c_long is i32 on 32-bit ARM
pub const CGROUP2_MAGIC: i64 = libc::CGROUP2_SUPER_MAGIC as i64;
/// `TMPFS_MAGIC` (the cgroup v1 root is a tmpfs of per-controller mounts).
#[allow(clippy::unnecessary_cast)] // c_long is i32 on 32-bit ARM
pub const TMPFS_MAGIC: i64 = libc::TMPFS_MAGIC as i64;

/// Start time of `pid` in clock ticks since boot (`/proc/<pid>/stat` field 22): with the pid, it
/// identifies a process across PID reuse.
pub fn start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    // Fields after the command: state(3) ... starttime(22) is index 19 here.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The PIDs of `pid` in each nested PID namespace, outermost first (`NSpid` in
/// `/proc/<pid>/status`).
pub fn ns_pids(pid: i32) -> Option<Vec<i32>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("NSpid:"))?;
    line["NSpid:".len()..]
        .split_whitespace()
        .map(|s| s.parse().ok())
        .collect()
}

/// Clock ticks per second of the times in `/proc/<pid>/stat` (`sysconf(_SC_CLK_TCK)`; 100 on
/// every Linux we run on, used when the call fails).
pub fn clock_ticks() -> u64 {
    // SAFETY: sysconf reads a constant of the C library; no pointers, no memory of ours.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

/// Our PID.
pub fn getpid() -> i32 {
    nix::unistd::getpid().as_raw()
}

/// Whether we are root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Duplicates an fd (close-on-exec).
pub fn dup(fd: BorrowedFd<'_>) -> Result<OwnedFd> {
    fd.try_clone_to_owned().map_err(|e| SysError::Io {
        op: "dup",
        path: "fd".into(),
        err: e,
    })
}

/// Borrows an fd of something that has one.
pub fn as_fd<T: AsFd>(t: &T) -> BorrowedFd<'_> {
    t.as_fd()
}
