//! The pod's mount and UTS namespaces, and loopback in its network namespace. Called by the pod
//! init (single-threaded, already inside the new namespaces).

use std::path::Path;

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
