//! Paths inside a pod's root, resolved by the kernel *inside* that root.
//!
//! A pod's root (an artifact, a directory, a volume's contents) may hold symlinks such as
//! `etc -> /some/host/dir` or `tmp -> /`. Every path the worker or the pod init creates or mounts
//! on inside a root goes through [`InRoot`]: `openat2` with `RESOLVE_IN_ROOT |
//! RESOLVE_NO_MAGICLINKS` resolves it as if the root were `/` (an absolute symlink or `..` never
//! leaves it), the last component is created relative to its parent's fd (`mkdirat`, `openat`
//! with `O_CREAT | O_EXCL | O_NOFOLLOW`, `symlinkat`), and mounts go on `/proc/self/fd/N` of the
//! resolved target ([`fd_path`]), never on a path the kernel would resolve again.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use super::{Result, SysError, errno};

/// `struct open_how` of `openat2(2)`.
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// What a path inside a root is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A directory.
    Dir,
    /// Anything else (file, device node, ...).
    Other,
}

/// A pod's root directory, opened once; paths below it are resolved inside it.
#[derive(Debug)]
pub struct InRoot {
    root: PathBuf,
    fd: OwnedFd,
}

fn cpath(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| SysError::Nul(p.display().to_string()))
}

/// The components of `rel` that name something (`/`, `.` dropped; `..` kept: the kernel clamps
/// it at the root).
fn parts(rel: &Path) -> Vec<&std::ffi::OsStr> {
    rel.components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s),
            Component::ParentDir => Some(std::ffi::OsStr::new("..")),
            _ => None,
        })
        .collect()
}

fn join(parts: &[&std::ffi::OsStr]) -> PathBuf {
    if parts.is_empty() {
        return PathBuf::from(".");
    }
    parts.iter().collect()
}

/// `/proc/self/fd/N` of `fd`: a path that names exactly the object `fd` refers to.
pub fn fd_path(fd: BorrowedFd<'_>) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

impl InRoot {
    /// Opens `root` (a trusted path: the worker's own run dir or artifact cache).
    pub fn open(root: &Path) -> Result<InRoot> {
        let fd = nix::fcntl::open(
            root,
            nix::fcntl::OFlag::O_PATH
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| SysError::path("open (pod root)", root, e))?;
        Ok(InRoot {
            root: root.to_owned(),
            fd,
        })
    }

    /// The root's path (for messages).
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// The host path `rel` would have if it had no symlinks (for messages only).
    pub fn shown(&self, rel: &Path) -> PathBuf {
        self.root.join(join(&parts(rel)))
    }

    fn openat2(&self, rel: &Path, flags: libc::c_int) -> std::result::Result<OwnedFd, nix::Error> {
        self.openat2_mode(rel, flags, 0)
    }

    fn openat2_mode(
        &self,
        rel: &Path,
        flags: libc::c_int,
        mode: u32,
    ) -> std::result::Result<OwnedFd, nix::Error> {
        let c = cpath(rel).map_err(|_| nix::Error::EINVAL)?;
        let how = OpenHow {
            flags: (flags | libc::O_CLOEXEC) as u64,
            mode: u64::from(mode),
            resolve: libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
        };
        loop {
            // SAFETY: openat2 reads the NUL-terminated path and the open_how struct (its size
            // passed along), both valid for the call; it returns a new fd or -1.
            let ret = unsafe {
                libc::syscall(
                    libc::SYS_openat2,
                    self.fd.as_raw_fd(),
                    c.as_ptr(),
                    &raw const how,
                    std::mem::size_of::<OpenHow>(),
                )
            };
            if ret >= 0 {
                // SAFETY: the kernel just returned this fd; nothing else owns it.
                return Ok(unsafe { OwnedFd::from_raw_fd(ret as i32) });
            }
            let e = errno();
            // EAGAIN: a concurrent rename raced the lookup; retry like the man page says.
            if e != nix::Error::EAGAIN && e != nix::Error::EINTR {
                return Err(e);
            }
        }
    }

    /// An `O_PATH` fd of `rel` (symlinks followed inside the root); `Ok(None)` if it is missing.
    pub fn open_path(&self, rel: &Path) -> Result<Option<OwnedFd>> {
        match self.openat2(&join(&parts(rel)), libc::O_PATH) {
            Ok(fd) => Ok(Some(fd)),
            Err(nix::Error::ENOENT) => Ok(None),
            Err(e) => Err(SysError::path("openat2", self.shown(rel), e)),
        }
    }

    /// What `rel` is, if it exists.
    pub fn kind(&self, rel: &Path) -> Result<Option<Kind>> {
        let Some(fd) = self.open_path(rel)? else {
            return Ok(None);
        };
        Ok(Some(kind_of(fd.as_fd(), &self.shown(rel))?))
    }

    /// Makes sure the directory `rel` exists (creating missing ones, mode `mode`, each inside
    /// the root; a dangling symlink on the way gets its target created, inside the root too) and
    /// returns an `O_PATH` fd of it.
    pub fn mkdir_all(&self, rel: &Path, mode: u32) -> Result<OwnedFd> {
        let ps: Vec<std::ffi::OsString> = parts(rel).into_iter().map(Into::into).collect();
        self.mkdir_parts(&ps, mode, 40)
    }

    fn mkdir_parts(&self, ps: &[std::ffi::OsString], mode: u32, links: u32) -> Result<OwnedFd> {
        let refs: Vec<&std::ffi::OsStr> = ps.iter().map(|p| p.as_os_str()).collect();
        let dir_flags = libc::O_PATH | libc::O_DIRECTORY;
        let mut parent = self
            .openat2(Path::new("."), dir_flags)
            .map_err(|e| SysError::path("openat2", &self.root, e))?;
        for i in 1..=refs.len() {
            let prefix = join(&refs[..i]);
            match self.openat2(&prefix, dir_flags) {
                Ok(fd) => {
                    parent = fd;
                    continue;
                }
                Err(nix::Error::ENOENT) => {}
                Err(e) => return Err(SysError::path("openat2", self.shown(&prefix), e)),
            }
            let name = refs[i - 1];
            match nix::fcntl::readlinkat(parent.as_fd(), name) {
                // A dangling symlink: create what it points to, resolved inside the root.
                Ok(target) => {
                    if links == 0 {
                        return Err(SysError::path(
                            "mkdir",
                            self.shown(&prefix),
                            nix::Error::ELOOP,
                        ));
                    }
                    let target = PathBuf::from(target);
                    let mut resolved: Vec<std::ffi::OsString> = if target.is_absolute() {
                        Vec::new()
                    } else {
                        ps[..i - 1].to_vec()
                    };
                    resolved.extend(parts(&target).into_iter().map(Into::into));
                    self.mkdir_parts(&resolved, mode, links - 1)?;
                }
                Err(_) => {
                    let cname = cpath(Path::new(name))?;
                    // SAFETY: mkdirat reads the NUL-terminated name; the dir fd is open.
                    let r = unsafe {
                        libc::mkdirat(parent.as_raw_fd(), cname.as_ptr(), mode as libc::mode_t)
                    };
                    if r < 0 && errno() != nix::Error::EEXIST {
                        return Err(SysError::path("mkdirat", self.shown(&prefix), errno()));
                    }
                }
            }
            parent = self
                .openat2(&prefix, dir_flags)
                .map_err(|e| SysError::path("openat2", self.shown(&prefix), e))?;
        }
        Ok(parent)
    }

    /// Makes sure `rel` exists as a file (an empty one is created, mode `mode`, if missing; its
    /// directory too) and returns an `O_PATH` fd of it. Symlinks, the last one included, are
    /// followed inside the root.
    pub fn create_file(&self, rel: &Path, mode: u32) -> Result<OwnedFd> {
        if let Some(fd) = self.open_path(rel)? {
            return Ok(fd);
        }
        let ps = parts(rel);
        let Some((_, dir)) = ps.split_last() else {
            return Err(SysError::path(
                "create",
                self.shown(rel),
                nix::Error::EISDIR,
            ));
        };
        self.mkdir_all(&join(dir), 0o755)?;
        let created = self
            .openat2_mode(&join(&ps), libc::O_CREAT | libc::O_WRONLY, mode)
            .map_err(|e| SysError::path("openat2(create)", self.shown(rel), e))?;
        drop(created);
        self.open_path(rel)?
            .ok_or_else(|| SysError::path("openat2", self.shown(rel), nix::Error::ENOENT))
    }

    /// Creates the symlink `rel` → `target` (its directory created inside the root if missing).
    /// An existing entry is left as it is.
    pub fn symlink(&self, target: &Path, rel: &Path) -> Result<()> {
        let ps = parts(rel);
        let Some((name, dir)) = ps.split_last() else {
            return Err(SysError::path(
                "symlinkat",
                self.shown(rel),
                nix::Error::EEXIST,
            ));
        };
        let parent = self.mkdir_all(&join(dir), 0o755)?;
        let (t, n) = (cpath(target)?, cpath(Path::new(name))?);
        // SAFETY: symlinkat reads two NUL-terminated strings; the dir fd is open.
        let r = unsafe { libc::symlinkat(t.as_ptr(), parent.as_raw_fd(), n.as_ptr()) };
        if r < 0 && errno() != nix::Error::EEXIST {
            return Err(SysError::path("symlinkat", self.shown(rel), errno()));
        }
        Ok(())
    }
}

/// Whether `fd` (any kind, `O_PATH` included) is a directory.
pub fn kind_of(fd: BorrowedFd<'_>, shown: &Path) -> Result<Kind> {
    let st = nix::sys::stat::fstat(fd).map_err(|e| SysError::path("fstat", shown, e))?;
    Ok(if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
        Kind::Dir
    } else {
        Kind::Other
    })
}

/// Whether the filesystem holding `path` is mounted read-only (false if unknown).
pub fn is_read_only(path: &Path) -> bool {
    nix::sys::statvfs::statvfs(path)
        .is_ok_and(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A root whose `etc` and `slash` point out of it, beside a witness directory: creating
    /// through them creates inside the root, and nothing appears in the witness.
    #[test]
    fn symlinks_never_lead_out_of_the_root() {
        let top = tempfile::tempdir().unwrap();
        let root = top.path().join("root");
        let witness = top.path().join("witness");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&witness).unwrap();
        std::os::unix::fs::symlink(&witness, root.join("etc")).unwrap();
        // (Named `slash`, not `tmp`: the witness itself may live under /tmp.)
        std::os::unix::fs::symlink("/", root.join("slash")).unwrap();
        std::os::unix::fs::symlink("../../..", root.join("up")).unwrap();
        let r = InRoot::open(&root).unwrap();
        r.mkdir_all(Path::new("/etc/app/conf"), 0o755).unwrap();
        r.create_file(Path::new("etc/hosts"), 0o644).unwrap();
        r.create_file(Path::new("/slash/x"), 0o644).unwrap();
        r.mkdir_all(Path::new("up/escaped"), 0o755).unwrap();
        r.symlink(Path::new("/etc/passwd"), Path::new("etc/link"))
            .unwrap();
        assert_eq!(std::fs::read_dir(&witness).unwrap().count(), 0);
        // They landed inside the root: the absolute link resolved as if the root were `/`.
        let inner = root.join(witness.strip_prefix("/").unwrap());
        assert!(inner.join("app/conf").is_dir());
        assert!(inner.join("hosts").is_file());
        assert!(inner.join("link").is_symlink());
        assert!(root.join("x").is_file(), "slash -> / is the root itself");
        assert!(root.join("escaped").is_dir(), ".. stops at the root");
        assert!(!top.path().join("escaped").exists());
        // A fd of the target names it through /proc/self/fd.
        let fd = r.open_path(Path::new("etc/hosts")).unwrap().unwrap();
        assert_eq!(
            std::fs::canonicalize(fd_path(fd.as_fd())).unwrap(),
            std::fs::canonicalize(inner.join("hosts")).unwrap()
        );
        assert_eq!(r.kind(Path::new("etc/app")).unwrap(), Some(Kind::Dir));
        assert_eq!(r.kind(Path::new("nothing")).unwrap(), None);
    }

    /// A dangling symlink as the last component is not followed out of the root when creating.
    #[test]
    fn dangling_symlink_is_created_inside() {
        let top = tempfile::tempdir().unwrap();
        let root = top.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        std::os::unix::fs::symlink("../../outside-file", root.join("hosts")).unwrap();
        let r = InRoot::open(&root).unwrap();
        r.create_file(Path::new("hosts"), 0o644).unwrap();
        assert!(!top.path().join("outside-file").exists());
        assert!(root.join("outside-file").is_file());
    }
}
