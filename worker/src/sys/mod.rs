//! Every syscall of the worker, and every `unsafe` block, lives here (youki's model): the rest of
//! the worker sees a narrow, safe API.
//!
//! - [`spawn`]: starting a pod's init with `clone` into new mount, UTS, PID and IPC (unless the
//!   pod keeps the host's) and network namespaces, and starting a pod's process from the (single-threaded) init with `fork`:
//!   cgroup join, stdio, working directory, capability bounding set, user/group drop with *raw*
//!   `setresuid`-family syscalls, `capset` and ambient capabilities ([`caps`]),
//!   `PR_SET_NO_NEW_PRIVS`, `execve`. Nothing is allocated between `clone`/`fork` and
//!   `execve`: every `CString` and pointer array is prepared before.
//! - [`fs`]: paths inside a pod's root resolved by the kernel inside it (`openat2` with
//!   `RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS`), so a root's symlinks never lead the worker out.
//! - [`mount`]: the pod's mount namespace: private propagation, binds, tmpfs, proc, sysfs, devpts,
//!   mqueue and cgroup mounts on fds opened through [`fs`], read-only flags (`mount_setattr`),
//!   the cgroup namespace, `pivot_root`; hostname; loopback up.
//! - [`net`]: non-blocking TCP connects and `poll` for the pod init's probes.
//! - [`process`]: signals, `waitpid`, `pidfd`, `poll`, `signalfd` and reading `/proc`.
//! - [`layers`]: overlayfs whiteouts (mknod 0:0, the opaque xattr), the overlay root mount,
//!   overlayfs detection and `statvfs` of the state disk.
//! - [`bpf`]: loading a cgroup v2 device program (`bpf(BPF_PROG_LOAD)`) and attaching it to a
//!   pod's cgroup (`BPF_PROG_ATTACH`, `BPF_CGROUP_DEVICE`).
//! - [`seccomp`]: installing a prepared seccomp filter (raw `seccomp(2)`, in the fork child).
//! - [`netlink`]: a minimal rtnetlink client (links, addresses, routes).
//! - [`nft`]: a minimal nf_tables client: replaces a whole table (chains, NAT rules) in one
//!   atomic batch, deletes one, and checks that nf_tables with NAT works.
//! - [`podnet`]: the pod bridge, veth pairs into isolated pods (configured from a thread that
//!   joined the pod's network namespace), and routes to other nodes' pod subnets.
#![allow(unsafe_code)]

pub mod bpf;
pub mod caps;
pub mod exec;
pub mod fs;
pub mod layers;
pub mod mount;
pub mod net;
pub mod netlink;
pub mod nft;
pub mod podnet;
pub mod process;
pub mod seccomp;
pub mod spawn;

use std::path::PathBuf;

/// Errors of the syscall layer. Messages are lowercase and name the path or the call.
#[derive(Debug, thiserror::Error)]
pub enum SysError {
    /// A syscall failed.
    #[error("{call} failed: {err}")]
    Call {
        /// The syscall (and what it was for).
        call: &'static str,
        /// The error.
        err: nix::Error,
    },
    /// A syscall on a path failed.
    #[error("{call} {path:?} failed: {err}")]
    Path {
        /// The syscall.
        call: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        err: nix::Error,
    },
    /// Reading or writing a file failed.
    #[error("{op} {path:?}: {err}")]
    Io {
        /// What was done.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        err: std::io::Error,
    },
    /// An rtnetlink request failed.
    #[error("netlink: {what}: {err}")]
    Netlink {
        /// What was asked.
        what: String,
        /// The kernel's answer.
        err: nix::Error,
    },
    /// A string for `execve` contained a NUL byte.
    #[error("argument contains a nul byte: {0:?}")]
    Nul(String),
    /// The child failed between `fork` and `execve`.
    #[error("child setup failed at {step}: {err}")]
    ChildSetup {
        /// The step that failed.
        step: &'static str,
        /// The error.
        err: nix::Error,
    },
}

impl SysError {
    pub(crate) fn call(call: &'static str, err: nix::Error) -> Self {
        SysError::Call { call, err }
    }

    pub(crate) fn path(call: &'static str, path: impl Into<PathBuf>, err: nix::Error) -> Self {
        SysError::Path {
            call,
            path: path.into(),
            err,
        }
    }

    /// Whether the call failed because a file does not exist.
    pub fn is_not_found(&self) -> bool {
        match self {
            SysError::Call { err, .. } | SysError::Path { err, .. } => *err == nix::Error::ENOENT,
            SysError::Io { err, .. } => err.kind() == std::io::ErrorKind::NotFound,
            _ => false,
        }
    }
}

/// Result of the syscall layer.
pub type Result<T> = std::result::Result<T, SysError>;

/// Returns the last `errno` as a nix error.
fn errno() -> nix::Error {
    nix::Error::last()
}
