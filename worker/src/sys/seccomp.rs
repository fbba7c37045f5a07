//! Installing a seccomp filter with the raw `seccomp(SECCOMP_SET_MODE_FILTER)` syscall.
//!
//! The program is prepared (allocated) before the fork; [`SeccompProgram::install_in_child`] only
//! builds a `sock_fprog` on the stack and makes the syscall, so it is async-signal-safe and runs
//! in the fork child after `PR_SET_NO_NEW_PRIVS`, right before `execve`. The generator of the
//! default program is pure and lives in `runtime::seccomp`.

/// A classic-BPF seccomp program ready to install.
#[derive(Clone)]
pub struct SeccompProgram {
    filter: Vec<libc::sock_filter>,
}

impl std::fmt::Debug for SeccompProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SeccompProgram({} instructions)", self.filter.len())
    }
}

impl SeccompProgram {
    /// A program from `(code, jt, jf, k)` instructions.
    pub fn new(insns: impl IntoIterator<Item = (u16, u8, u8, u32)>) -> SeccompProgram {
        SeccompProgram {
            filter: insns
                .into_iter()
                .map(|(code, jt, jf, k)| libc::sock_filter { code, jt, jf, k })
                .collect(),
        }
    }

    /// Number of instructions.
    pub fn len(&self) -> usize {
        self.filter.len()
    }

    /// Whether the program is empty (an empty program cannot be installed).
    pub fn is_empty(&self) -> bool {
        self.filter.is_empty()
    }

    /// Installs the program on the calling thread. Requires `PR_SET_NO_NEW_PRIVS` (or
    /// CAP_SYS_ADMIN). Returns the raw result (0, or -1 with errno set).
    ///
    /// # Safety
    /// Async-signal-safe: no allocation. The caller must be single-threaded or accept that only
    /// the calling thread is filtered (no TSYNC).
    pub(crate) unsafe fn install_raw(&self) -> libc::c_long {
        let prog = libc::sock_fprog {
            len: self.filter.len() as libc::c_ushort,
            filter: self.filter.as_ptr().cast_mut(),
        };
        // SAFETY: `prog` points at `self.filter`, alive for the call; the kernel copies it.
        unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER as libc::c_long,
                0 as libc::c_long,
                &raw const prog,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Forks; the child sets no_new_privs, installs `prog` and reports, through a pipe, the
    /// errno (0 for success) of: getpid, open_by_handle_at, mount, unshare(CLONE_NEWNS),
    /// clone3, and the `Seccomp:` line's mode from /proc/self/status (read after install).
    fn run_filtered(prog: &SeccompProgram) -> [i32; 7] {
        let mut fds = [0; 2];
        // SAFETY: plain pipe(2) into a local array.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: the child only makes raw syscalls on stack data and `_exit`s (no allocation,
        // no locks), which is fine after fork in the multi-threaded test harness.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // SAFETY: see above.
            unsafe {
                let mut out = [0i32; 7];
                let err = |r: libc::c_long| -> i32 {
                    if r < 0 {
                        nix::errno::Errno::last_raw()
                    } else {
                        0
                    }
                };
                libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as libc::c_ulong, 0, 0, 0);
                out[0] = err(prog.install_raw());
                out[1] = err(libc::syscall(libc::SYS_getpid));
                let mut handle = [0u8; 64];
                handle[0] = 8; // handle_bytes
                out[2] = err(libc::syscall(
                    libc::SYS_open_by_handle_at,
                    libc::AT_FDCWD,
                    handle.as_mut_ptr(),
                    libc::O_RDONLY,
                ));
                out[3] = err(libc::syscall(
                    libc::SYS_mount,
                    c"none".as_ptr(),
                    c"/mnt".as_ptr(),
                    c"tmpfs".as_ptr(),
                    0 as libc::c_ulong,
                    std::ptr::null::<libc::c_void>(),
                ));
                out[4] = err(libc::syscall(libc::SYS_unshare, libc::CLONE_NEWNS));
                out[5] = err(libc::syscall(
                    libc::SYS_clone3,
                    std::ptr::null::<u8>(),
                    0usize,
                ));
                // The mode from /proc/self/status: find "Seccomp:\t" and the digit after it.
                let fd = libc::open(c"/proc/self/status".as_ptr(), libc::O_RDONLY);
                let mut buf = [0u8; 4096];
                let n = if fd >= 0 {
                    libc::read(fd, buf.as_mut_ptr().cast(), buf.len())
                } else {
                    -1
                };
                out[6] = -1;
                if n > 0 {
                    let s = &buf[..n as usize];
                    let key = b"Seccomp:\t";
                    for i in 0..s.len().saturating_sub(key.len()) {
                        if &s[i..i + key.len()] == key {
                            out[6] = i32::from(s[i + key.len()] - b'0');
                            break;
                        }
                    }
                }
                libc::write(fds[1], out.as_ptr().cast(), std::mem::size_of_val(&out));
                libc::_exit(0);
            }
        }
        let mut out = [0i32; 7];
        // SAFETY: closing our write end; reading into a local array.
        unsafe {
            libc::close(fds[1]);
            let n = libc::read(fds[0], out.as_mut_ptr().cast(), std::mem::size_of_val(&out));
            assert_eq!(n as usize, std::mem::size_of_val(&out));
            libc::close(fds[0]);
        }
        let _ = super::super::process::wait_blocking(pid);
        out
    }

    #[test]
    fn default_filter_refuses_escapes_and_allows_work() {
        use crate::runtime::seccomp::{Arch, default_program};
        let arch = Arch::current().expect("tests run on x86_64, aarch64 or armv7");
        let prog = SeccompProgram::new(default_program(arch).iter().map(|i| i.raw()));
        let [install, getpid, handle, mount, unshare, clone3, mode] = run_filtered(&prog);
        assert_eq!(install, 0, "seccomp install");
        assert_eq!(getpid, 0);
        assert_eq!(handle, libc::EPERM, "open_by_handle_at");
        assert_eq!(mount, libc::EPERM, "mount");
        assert_eq!(unshare, libc::EPERM, "unshare(CLONE_NEWNS)");
        assert_eq!(clone3, libc::ENOSYS, "clone3");
        assert_eq!(mode, 2, "Seccomp: mode in /proc/self/status");
    }
}
