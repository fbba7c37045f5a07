//! `bramble exec`: pseudo-terminals, the exec helper's start, and entering a running pod
//! (its namespaces and root).

use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use nix::sched::CloneFlags;

use super::{Result, SysError};

/// A new pseudo-terminal: `(master, slave)`, both close-on-exec.
pub fn openpty(rows: u16, cols: u16) -> Result<(OwnedFd, OwnedFd)> {
    let ws = nix::pty::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&ws), None).map_err(|e| SysError::call("openpty", e))?;
    for fd in [&pty.master, &pty.slave] {
        nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )
        .map_err(|e| SysError::call("fcntl(FD_CLOEXEC)", e))?;
    }
    Ok((pty.master, pty.slave))
}

/// Sets a terminal's window size (the foreground process group gets `SIGWINCH`).
pub fn set_winsize(tty: BorrowedFd<'_>, rows: u16, cols: u16) -> Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one `winsize` from the pointer, which lives across the call.
    let r = unsafe { libc::ioctl(tty.as_raw_fd(), libc::TIOCSWINSZ, &raw const ws) };
    if r < 0 {
        return Err(SysError::call("ioctl(TIOCSWINSZ)", nix::Error::last()));
    }
    Ok(())
}

/// A terminal's window size `(rows, cols)`.
pub fn winsize(tty: BorrowedFd<'_>) -> Result<(u16, u16)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` through the pointer, which lives across the call.
    let r = unsafe { libc::ioctl(tty.as_raw_fd(), libc::TIOCGWINSZ, &raw mut ws) };
    if r < 0 {
        return Err(SysError::call("ioctl(TIOCGWINSZ)", nix::Error::last()));
    }
    Ok((ws.ws_row, ws.ws_col))
}

/// Starts the worker binary again (`/proc/self/exe`) with `args`, the given fds as its stdin,
/// stdout and stderr, and an empty environment. Reap it with `wait` on the returned child.
pub fn spawn_self(
    args: &[OsString],
    stdin: OwnedFd,
    stdout: OwnedFd,
    stderr: OwnedFd,
) -> Result<std::process::Child> {
    std::process::Command::new("/proc/self/exe")
        .args(args)
        .env_clear()
        .stdin(stdin)
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .map_err(|e| SysError::Io {
            op: "spawn",
            path: "/proc/self/exe".into(),
            err: e,
        })
}

/// The namespaces a process enters to join a pod: mount, UTS, IPC, network, PID (for its
/// children) and cgroup; the user namespace too when the pod's differs from ours.
const NAMESPACES: [(&str, CloneFlags); 6] = [
    ("cgroup", CloneFlags::CLONE_NEWCGROUP),
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("net", CloneFlags::CLONE_NEWNET),
    ("pid", CloneFlags::CLONE_NEWPID),
    ("mnt", CloneFlags::CLONE_NEWNS),
];

fn ns_id(path: &Path) -> Option<(u64, u64)> {
    let st = nix::sys::stat::stat(path).ok()?;
    Some((st.st_dev as u64, st.st_ino as u64))
}

/// Moves the calling (single-threaded) process into the namespaces of `pid` and into its root
/// directory (`/proc/PID/root`, entered after the mount namespace, like `nsenter -a`); the
/// working directory becomes `/`. Children forked afterwards are in its PID namespace.
pub fn enter_namespaces_of(pid: i32) -> Result<()> {
    let base = format!("/proc/{pid}");
    let open = |p: &str| {
        nix::fcntl::open(
            Path::new(p),
            nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| SysError::path("open", p, e))
    };
    let root = open(&format!("{base}/root"))?;
    let mut fds = Vec::new();
    let user = format!("{base}/ns/user");
    if ns_id(Path::new(&user)) != ns_id(Path::new("/proc/self/ns/user")) {
        fds.push((open(&user)?, CloneFlags::CLONE_NEWUSER, "user"));
    }
    for (name, flag) in NAMESPACES {
        fds.push((open(&format!("{base}/ns/{name}"))?, flag, name));
    }
    for (fd, flag, name) in fds {
        nix::sched::setns(fd.as_fd(), flag)
            .map_err(|e| SysError::path("setns", format!("{base}/ns/{name}"), e))?;
    }
    nix::unistd::fchdir(root.as_fd()).map_err(|e| SysError::call("fchdir (pod root)", e))?;
    nix::unistd::chroot(".").map_err(|e| SysError::call("chroot (pod root)", e))?;
    nix::unistd::chdir("/").map_err(|e| SysError::call("chdir /", e))?;
    Ok(())
}
