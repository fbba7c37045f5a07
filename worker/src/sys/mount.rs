//! The pod's mount, UTS and cgroup namespaces, and loopback in its network namespace. Called by
//! the pod init (single-threaded, already inside the new namespaces).
//!
//! The `*_at` functions mount on a [`Target`]: an fd resolved inside the pod's root
//! ([`super::fs::InRoot`]), named to the kernel as `/proc/self/fd/N`.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

use super::{Result, SysError};

/// Makes every mount private (recursively) so nothing the pod mounts propagates to the host.
pub fn make_rprivate() -> Result<()> {
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| SysError::path("mount(MS_PRIVATE)", "/", e))
}

/// Mounts a fresh procfs (of the current PID namespace) on `target`.
pub fn mount_proc(target: &Path) -> Result<()> {
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    nix::mount::mount(Some("proc"), target, Some("proc"), flags, None::<&str>)
        .map_err(|e| SysError::path("mount(proc)", target, e))
}

/// Bind-mounts `src` on `dst` (recursively), read-only if asked.
pub fn bind(src: &Path, dst: &Path, read_only: bool) -> Result<()> {
    nix::mount::mount(
        Some(src),
        dst,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| SysError::path("mount(bind)", dst, e))?;
    if read_only {
        let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        nix::mount::mount(None::<&str>, dst, None::<&str>, flags, None::<&str>)
            .map_err(|e| SysError::path("mount(remount ro)", dst, e))?;
    }
    Ok(())
}

/// Mounts a tmpfs of at most `size_bytes` on `dst`.
pub fn mount_tmpfs(dst: &Path, size_bytes: u64, mode: u32) -> Result<()> {
    let data = format!("size={size_bytes},mode={mode:o}");
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    nix::mount::mount(
        Some("tmpfs"),
        dst,
        Some("tmpfs"),
        flags,
        Some(data.as_str()),
    )
    .map_err(|e| SysError::path("mount(tmpfs)", dst, e))
}

/// Makes `new_root` the root of this mount namespace and detaches the old root.
pub fn pivot_root(new_root: &Path) -> Result<()> {
    nix::unistd::chdir(new_root).map_err(|e| SysError::path("chdir", new_root, e))?;
    // pivot_root(".", "."): the old root ends up stacked under the new one; detach it.
    nix::unistd::pivot_root(".", ".").map_err(|e| SysError::path("pivot_root", new_root, e))?;
    nix::mount::umount2(".", MntFlags::MNT_DETACH)
        .map_err(|e| SysError::path("umount2(old root)", new_root, e))?;
    nix::unistd::chdir("/").map_err(|e| SysError::path("chdir", "/", e))
}

/// Sets the hostname (of the current UTS namespace).
pub fn set_hostname(name: &str) -> Result<()> {
    nix::unistd::sethostname(name).map_err(|e| SysError::call("sethostname", e))
}

/// Brings the loopback interface up (in a new network namespace it starts down).
pub fn loopback_up() -> Result<()> {
    // SAFETY: socket() takes integers and returns a new fd or -1.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if sock < 0 {
        return Err(SysError::call("socket", super::errno()));
    }
    // SAFETY: the kernel just returned `sock`; the OwnedFd closes it.
    let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(sock) };
    let raw = std::os::fd::AsRawFd::as_raw_fd(&sock);
    // The request number's type differs between glibc (c_ulong) and musl (c_int).
    #[allow(clippy::unnecessary_cast)]
    let (get, set) = (
        libc::SIOCGIFFLAGS as libc::Ioctl,
        libc::SIOCSIFFLAGS as libc::Ioctl,
    );
    // SAFETY: ifreq is plain old data; zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *s as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the flags of the interface named in `req` into `req`, a valid
    // ifreq for the duration of the call.
    if unsafe { libc::ioctl(raw, get, &mut req) } < 0 {
        return Err(SysError::call("ioctl(SIOCGIFFLAGS lo)", super::errno()));
    }
    // SAFETY: after SIOCGIFFLAGS the flags member of the union is the initialised one.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: SIOCSIFFLAGS reads `req`, a valid ifreq for the duration of the call.
    if unsafe { libc::ioctl(raw, set, &req) } < 0 {
        return Err(SysError::call("ioctl(SIOCSIFFLAGS lo)", super::errno()));
    }
    Ok(())
}

/// A mount point resolved inside a pod's root: its fd (mounted on through `/proc/self/fd/N`)
/// and its path, for messages.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The mount point, opened (`O_PATH`) inside the root.
    pub fd: BorrowedFd<'a>,
    /// Its path, for messages.
    pub shown: &'a Path,
}

impl Target<'_> {
    fn path(&self) -> PathBuf {
        super::fs::fd_path(self.fd)
    }
}

fn mount_at(
    t: Target<'_>,
    call: &'static str,
    src: Option<&Path>,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<()> {
    nix::mount::mount(src, &t.path(), fstype, flags, data)
        .map_err(|e| SysError::path(call, t.shown, e))
}

const NOSUID_NODEV_NOEXEC: MsFlags = MsFlags::MS_NOSUID
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC);

/// Bind-mounts `src` (a host path) on `t`, with its submounts if `recursive`.
pub fn bind_at(src: &Path, t: Target<'_>, recursive: bool) -> Result<()> {
    let mut flags = MsFlags::MS_BIND;
    if recursive {
        flags |= MsFlags::MS_REC;
    }
    mount_at(t, "mount(bind)", Some(src), None, flags, None)
}

/// A fresh procfs (of the current PID namespace) on `t`.
pub fn proc_at(t: Target<'_>) -> Result<()> {
    mount_at(
        t,
        "mount(proc)",
        Some(Path::new("proc")),
        Some("proc"),
        NOSUID_NODEV_NOEXEC,
        None,
    )
}

/// A tmpfs of at most `size` bytes (0: the kernel's default) with root mode `mode` on `t`:
/// nosuid, nodev, and noexec if asked; read-only if asked (an empty mask).
pub fn tmpfs_at(t: Target<'_>, size: u64, mode: u32, noexec: bool, read_only: bool) -> Result<()> {
    let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    if noexec {
        flags |= MsFlags::MS_NOEXEC;
    }
    if read_only {
        flags |= MsFlags::MS_RDONLY;
    }
    let data = if size > 0 {
        format!("size={size},mode={mode:o}")
    } else {
        format!("mode={mode:o}")
    };
    mount_at(
        t,
        "mount(tmpfs)",
        Some(Path::new("tmpfs")),
        Some("tmpfs"),
        flags,
        Some(&data),
    )
}

/// A new devpts instance on `t` (its own pty numbers; `ptmx` beside it).
pub fn devpts_at(t: Target<'_>) -> Result<()> {
    mount_at(
        t,
        "mount(devpts)",
        Some(Path::new("devpts")),
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    )
}

/// The POSIX message queue filesystem of the current IPC namespace on `t`.
pub fn mqueue_at(t: Target<'_>) -> Result<()> {
    mount_at(
        t,
        "mount(mqueue)",
        Some(Path::new("mqueue")),
        Some("mqueue"),
        NOSUID_NODEV_NOEXEC,
        None,
    )
}

/// A fresh sysfs (of the current network namespace) on `t`.
pub fn sysfs_at(t: Target<'_>, read_only: bool) -> Result<()> {
    let mut flags = NOSUID_NODEV_NOEXEC;
    if read_only {
        flags |= MsFlags::MS_RDONLY;
    }
    mount_at(
        t,
        "mount(sysfs)",
        Some(Path::new("sysfs")),
        Some("sysfs"),
        flags,
        None,
    )
}

/// The cgroup v2 hierarchy on `t` (rooted at the current cgroup namespace's root).
pub fn cgroup2_at(t: Target<'_>, read_only: bool) -> Result<()> {
    let mut flags = NOSUID_NODEV_NOEXEC;
    if read_only {
        flags |= MsFlags::MS_RDONLY;
    }
    mount_at(
        t,
        "mount(cgroup2)",
        Some(Path::new("cgroup2")),
        Some("cgroup2"),
        flags,
        None,
    )
}

/// The existing cgroup v1 hierarchy of `controllers` (`cpu,cpuacct`) on `t`, rooted at the
/// current cgroup namespace's root.
pub fn cgroup1_at(t: Target<'_>, controllers: &str, read_only: bool) -> Result<()> {
    let mut flags = NOSUID_NODEV_NOEXEC;
    if read_only {
        flags |= MsFlags::MS_RDONLY;
    }
    mount_at(
        t,
        "mount(cgroup)",
        Some(Path::new("cgroup")),
        Some("cgroup"),
        flags,
        Some(controllers),
    )
}

/// Flags to set on a mount with [`set_attrs`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Attrs {
    /// Read-only.
    pub read_only: bool,
    /// nosuid, nodev and noexec.
    pub no_exec_dev_suid: bool,
    /// On every mount below too.
    pub recursive: bool,
}

/// `struct mount_attr` of `mount_setattr(2)`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Sets `attrs` on the mount whose root `t` is (`mount_setattr`, Linux 5.12; recursively if
/// asked, which a remount cannot do).
pub fn set_attrs(t: Target<'_>, attrs: Attrs) -> Result<()> {
    const RDONLY: u64 = 0x1;
    const NOSUID: u64 = 0x2;
    const NODEV: u64 = 0x4;
    const NOEXEC: u64 = 0x8;
    let mut set = 0;
    if attrs.read_only {
        set |= RDONLY;
    }
    if attrs.no_exec_dev_suid {
        set |= NOSUID | NODEV | NOEXEC;
    }
    let attr = MountAttr {
        attr_set: set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let mut flags = libc::AT_EMPTY_PATH;
    if attrs.recursive {
        flags |= libc::AT_RECURSIVE;
    }
    // SAFETY: mount_setattr reads the empty NUL-terminated path and `attr` (its size passed
    // along), both valid for the call; the fd is open.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            t.fd.as_raw_fd(),
            c"".as_ptr(),
            flags as libc::c_uint,
            &raw const attr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r < 0 {
        let e = super::errno();
        if e == nix::Error::ENOSYS {
            // Before Linux 5.12: a bind remount, of the top mount only.
            return remount_bind(t, attrs);
        }
        return Err(SysError::path("mount_setattr", t.shown, e));
    }
    Ok(())
}

/// [`set_attrs`] without `mount_setattr`: `MS_REMOUNT | MS_BIND` keeping the mount's own flags
/// (submounts keep theirs).
fn remount_bind(t: Target<'_>, attrs: Attrs) -> Result<()> {
    use nix::sys::statvfs::FsFlags;
    let path = t.path();
    let have = nix::sys::statvfs::statvfs(&path)
        .map_err(|e| SysError::path("statvfs", t.shown, e))?
        .flags();
    let mut flags = MsFlags::MS_REMOUNT | MsFlags::MS_BIND;
    for (f, m) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
    ] {
        if have.contains(f) {
            flags |= m;
        }
    }
    if attrs.read_only {
        flags |= MsFlags::MS_RDONLY;
    }
    if attrs.no_exec_dev_suid {
        flags |= NOSUID_NODEV_NOEXEC;
    }
    nix::mount::mount(None::<&str>, &path, None::<&str>, flags, None::<&str>)
        .map_err(|e| SysError::path("mount(remount)", t.shown, e))
}

/// Moves the calling process into a new cgroup namespace rooted at its current cgroups.
pub fn unshare_cgroup() -> Result<()> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWCGROUP)
        .map_err(|e| SysError::call("unshare(CLONE_NEWCGROUP)", e))
}
