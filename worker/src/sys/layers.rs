//! Image layers on the node: overlayfs whiteouts (`mknod` of a character device 0:0, the
//! `trusted.overlay.opaque` xattr), the overlayfs root mount, and the state disk's usage.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::mount::MsFlags;
use nix::sys::stat::{Mode, SFlag};

use super::{Result, SysError};

/// The overlayfs whiteout markers of [`bramble_artifact::layer::unpack_layer`].
#[derive(Debug, Default, Clone, Copy)]
pub struct OverlayWhiteouts;

impl bramble_artifact::layer::Whiteouts for OverlayWhiteouts {
    fn whiteout(&mut self, path: &Path) -> io::Result<()> {
        nix::sys::stat::mknod(path, SFlag::S_IFCHR, Mode::empty(), 0).map_err(io::Error::from)
    }

    fn opaque(&mut self, dir: &Path) -> io::Result<()> {
        let p = CString::new(dir.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "nul byte in a path"))?;
        let name = c"trusted.overlay.opaque";
        // SAFETY: both strings are NUL-terminated and live through the call; the value is a
        // 1-byte buffer whose length is passed.
        let r = unsafe { libc::lsetxattr(p.as_ptr(), name.as_ptr(), b"y".as_ptr().cast(), 1, 0) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// The `trusted.overlay.opaque` value of `dir`, if set (for tests and diagnostics).
pub fn opaque_of(dir: &Path) -> Option<Vec<u8>> {
    let p = CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut buf = [0u8; 8];
    // SAFETY: NUL-terminated strings; `buf` is writable for its passed length.
    let n = unsafe {
        libc::lgetxattr(
            p.as_ptr(),
            c"trusted.overlay.opaque".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    usize::try_from(n).ok().map(|n| buf[..n].to_vec())
}

/// Whether the running kernel has overlayfs (`/proc/filesystems`), loading its module if needed
/// is left to the kernel's autoload at the first mount.
pub fn overlay_supported() -> bool {
    std::fs::read_to_string("/proc/filesystems").is_ok_and(|s| {
        s.lines()
            .any(|l| l.split_whitespace().last() == Some("overlay"))
    }) || Path::new("/sys/module/overlay").exists()
}

/// Mounts an overlayfs on `dst`: `lowers` (top first) are names relative to `lower_base`
/// (short paths keep the options under the page-size limit), `upper` and `work` absolute. The
/// caller's working directory is `/` afterwards.
pub fn mount_overlay(
    dst: &Path,
    lower_base: &Path,
    lowers: &[String],
    upper: &Path,
    work: &Path,
) -> Result<()> {
    nix::unistd::chdir(lower_base).map_err(|e| SysError::path("chdir", lower_base, e))?;
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        lowers.join(":"),
        upper.display(),
        work.display()
    );
    let r = nix::mount::mount(
        Some("overlay"),
        dst,
        Some("overlay"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(data.as_str()),
    )
    .map_err(|e| SysError::path("mount(overlay)", dst, e));
    nix::unistd::chdir("/").map_err(|e| SysError::path("chdir", "/", e))?;
    r
}

/// Bytes of a file system: (total, available to unprivileged users... here: free for root).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskUsage {
    /// Size of the file system.
    pub total: u64,
    /// Free bytes.
    pub free: u64,
}

impl DiskUsage {
    /// Used share, percent (0-100).
    pub fn used_percent(&self) -> u64 {
        (self.total.saturating_sub(self.free) * 100)
            .checked_div(self.total)
            .unwrap_or(0)
    }
}

/// `statvfs` of the file system holding `path`.
pub fn disk_usage(path: &Path) -> Result<DiskUsage> {
    let s = nix::sys::statvfs::statvfs(path).map_err(|e| SysError::path("statvfs", path, e))?;
    let frag = s.fragment_size() as u64;
    Ok(DiskUsage {
        total: (s.blocks() as u64).saturating_mul(frag),
        free: (s.blocks_free() as u64).saturating_mul(frag),
    })
}
