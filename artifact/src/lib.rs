//! Artifact tarballs, shared by the master (which checks an upload before accepting it) and the
//! worker (which unpacks it as a pod's root filesystem). Pure apart from the file system it is
//! pointed at; no async, no network.
//!
//! - [`Sha256`] / [`sha256_file`]: the content address (lowercase hex).
//! - [`check`]: reads a tarball and refuses it at the first unsafe entry. It walks the same
//!   rules as [`unpack`] over an in-memory model of the tree (which paths are directories,
//!   files, symlinks), so a tarball that passes `check` at push also unpacks on every worker:
//!   writing through a symlink, a directory over a file (or a file over a directory), a hard
//!   link to something that is no longer a plain file, and a rootfs whose `/proc`, `/dev` or
//!   `/tmp` is not a directory ([`MOUNT_DIRS`]) fail at push, not on the nodes.
//! - [`Limits::default`] is the one limit set the master (at push) and the workers (at unpack)
//!   share.
//! - Tarballs may be gzip-compressed (`.tar.gz`, recognised by their first bytes, inflated on
//!   the fly; the limits count the uncompressed entries, so a gzip bomb stops at them); xz,
//!   zstd and bzip2 are refused with the fix.
//! - [`unpack`]: the same checks, then extracts into a directory without ever following a
//!   symlink: parents are created one component at a time and each must be a real directory,
//!   files are created with `O_CREAT|O_EXCL` (which does not follow a final symlink), hard links
//!   must point at a regular file already extracted.
//!
//! Refused, each with an error naming the entry: absolute paths, `..` components, symlinks whose
//! relative target climbs above the root, hard links outside the archive, device nodes and
//! fifos, other entry types (sparse files...), an entry over [`Limits::max_entry_bytes`], a
//! total over [`Limits::max_total_bytes`], more than [`Limits::max_entries`] entries.
//!
//! Absolute symlink targets (`bin/sh -> /bin/busybox`) are allowed: inside the pod they resolve
//! within its root (after `pivot_root` nothing lies above it), and nothing on the host follows
//! them. Modes keep the permission bits and the sticky bit; setuid/setgid bits and ownership are
//! dropped (the tree is owned by the worker's user).

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fmt;
use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use sha2::Digest;

/// Largest chunk of an upload in one frame (a client's frame limit is 64 KiB).
pub const CHUNK: usize = 32 * 1024;

/// Largest chunk a node asks for in one `ArtifactGet` (protocol 7; frames from master to node
/// may be 1 MiB): 4,000 round trips per second carry 1 GB/s, where 32 KiB chunks needed 30,000.
pub const PULL_CHUNK: usize = 256 * 1024;

/// Whether `s` looks like a sha256 in lowercase hex.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Incremental sha256 with a lowercase hex result.
#[derive(Debug, Clone, Default)]
pub struct Sha256(sha2::Sha256);

impl Sha256 {
    /// A fresh hasher.
    pub fn new() -> Sha256 {
        Sha256::default()
    }

    /// Feeds bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    /// The digest as 64 lowercase hex characters.
    pub fn finish_hex(self) -> String {
        let d = self.0.finalize();
        let mut s = String::with_capacity(64);
        for b in d {
            s.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
            s.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
        }
        s
    }
}

/// sha256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(bytes);
    h.finish_hex()
}

/// sha256 of a file, lowercase hex.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut f = fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(h.finish_hex());
        }
        h.update(&buf[..n]);
    }
}

/// The directories the worker's runtime mounts over in a root it unpacked (`/proc`, `/dev`, a
/// `/tmp` tmpfs): a tarball may leave them out (the worker creates them) but may not hold them
/// as anything but a directory.
pub const MOUNT_DIRS: [&str; 3] = ["proc", "dev", "tmp"];

/// Bounds on what a tarball may hold. The default is the one limit set that the master checks
/// at push and every worker applies at unpack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest single file.
    pub max_entry_bytes: u64,
    /// Largest sum of file sizes.
    pub max_total_bytes: u64,
    /// Most entries.
    pub max_entries: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_entry_bytes: 512 << 20,
            max_total_bytes: 2 << 30,
            max_entries: 200_000,
        }
    }
}

/// Why a tarball was refused.
#[derive(Debug)]
pub enum TarError {
    /// An entry is unsafe or over a limit.
    Entry {
        /// The entry's path as written in the tarball.
        entry: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The tarball could not be read (truncated, not a tarball) or the tree not written.
    Io {
        /// What was being done.
        context: String,
        /// The error.
        err: io::Error,
    },
}

impl fmt::Display for TarError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TarError::Entry { entry, problem } => write!(f, "tar entry {entry:?}: {problem}"),
            TarError::Io { context, err } => write!(f, "{context}: {err}"),
        }
    }
}

impl std::error::Error for TarError {}

pub(crate) fn refuse(entry: &str, problem: impl Into<String>) -> TarError {
    TarError::Entry {
        entry: entry.to_string(),
        problem: problem.into(),
    }
}

pub(crate) fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> TarError {
    move |err| TarError::Io {
        context: context.into(),
        err,
    }
}

/// What a checked tarball holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Summary {
    /// Entries.
    pub entries: u64,
    /// Sum of file sizes.
    pub bytes: u64,
}

/// A checked entry: what to create, at a normalized path relative to the root.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Plan {
    /// The root itself (`./`).
    Root,
    Dir {
        path: PathBuf,
        mode: u32,
    },
    File {
        path: PathBuf,
        mode: u32,
        size: u64,
    },
    Symlink {
        path: PathBuf,
        target: PathBuf,
    },
    Hardlink {
        path: PathBuf,
        target: PathBuf,
    },
}

/// `raw` as a path relative to the root: no absolute path, no `..`; `.` dropped.
pub(crate) fn normalize(entry: &str, raw: &[u8], what: &str) -> Result<PathBuf, TarError> {
    let p = Path::new(OsStr::from_bytes(raw));
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::RootDir | Component::Prefix(_) => {
                return Err(refuse(
                    entry,
                    format!(
                        "{what} is absolute; artifact tarballs hold relative paths (build it with `tar -C ROOTDIR -cf FILE .`)"
                    ),
                ));
            }
            Component::ParentDir => {
                return Err(refuse(
                    entry,
                    format!("{what} has a \"..\" component, which could land outside the root"),
                ));
            }
            Component::CurDir => {}
            Component::Normal(n) => out.push(n),
        }
    }
    Ok(out)
}

/// A relative symlink target must not climb above the root from the link's directory.
fn check_symlink_target(entry: &str, link: &Path, target: &[u8]) -> Result<PathBuf, TarError> {
    if target.is_empty() {
        return Err(refuse(entry, "symlink with an empty target"));
    }
    let t = Path::new(OsStr::from_bytes(target));
    if t.is_absolute() {
        return Ok(t.to_path_buf());
    }
    let mut depth = link.parent().map_or(0, |p| p.components().count()) as i64;
    for c in t.components() {
        match c {
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return Err(refuse(
                        entry,
                        format!(
                            "symlink target {:?} escapes the root",
                            String::from_utf8_lossy(target)
                        ),
                    ));
                }
            }
            Component::Normal(_) => depth += 1,
            _ => {}
        }
    }
    Ok(t.to_path_buf())
}

/// Checks one entry against the limits and the rules; `total` accumulates file sizes.
pub(crate) fn classify<R: Read>(
    e: &tar::Entry<'_, R>,
    limits: &Limits,
    total: &mut u64,
) -> Result<Plan, TarError> {
    let raw = e.path_bytes();
    let name = String::from_utf8_lossy(&raw).into_owned();
    let path = normalize(&name, &raw, "the path")?;
    let mode = e.header().mode().unwrap_or(0o644);
    use tar::EntryType as T;
    let kind = e.header().entry_type();
    if path.as_os_str().is_empty() {
        return match kind {
            T::Directory => Ok(Plan::Root),
            _ => Err(refuse(&name, "only a directory may stand for the root")),
        };
    }
    match kind {
        T::Regular | T::Continuous => {
            let size = e.size();
            if size > limits.max_entry_bytes {
                return Err(refuse(
                    &name,
                    format!(
                        "{size} bytes is over the {}-byte limit per file",
                        limits.max_entry_bytes
                    ),
                ));
            }
            *total = total.saturating_add(size);
            if *total > limits.max_total_bytes {
                return Err(refuse(
                    &name,
                    format!(
                        "the files up to here add up to {} bytes, over the {}-byte limit per artifact",
                        *total, limits.max_total_bytes
                    ),
                ));
            }
            Ok(Plan::File {
                path,
                mode: mode & 0o777,
                size,
            })
        }
        T::Directory => Ok(Plan::Dir {
            path,
            mode: mode & 0o1777,
        }),
        T::Symlink => {
            let target = e.link_name_bytes().unwrap_or_default();
            let target = check_symlink_target(&name, &path, &target)?;
            Ok(Plan::Symlink { path, target })
        }
        T::Link => {
            let target = e.link_name_bytes().unwrap_or_default();
            let target = normalize(&name, &target, "the hard link's target")?;
            if target.as_os_str().is_empty() {
                return Err(refuse(&name, "hard link to the root"));
            }
            Ok(Plan::Hardlink { path, target })
        }
        T::Char | T::Block => Err(refuse(
            &name,
            "device nodes are not allowed in artifacts (pods get /dev/null, /dev/zero... from the worker)",
        )),
        T::Fifo => Err(refuse(&name, "fifos are not allowed in artifacts")),
        other => Err(refuse(
            &name,
            format!(
                "entry type {other:?} is not supported (only files, directories, symlinks and hard links)"
            ),
        )),
    }
}

/// A tarball's bytes, inflated when they are gzip.
enum Input<R: BufRead> {
    Plain(R),
    Gzip(flate2::bufread::MultiGzDecoder<R>),
}

impl<R: BufRead> Read for Input<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Input::Plain(r) => r.read(buf),
            Input::Gzip(r) => r.read(buf),
        }
    }
}

/// Sniffs the compression from the first bytes: gzip is inflated, plain tar passes, other
/// compressions are refused with the fix.
fn input<R: Read>(reader: R) -> Result<Input<BufReader<R>>, TarError> {
    let mut r = BufReader::with_capacity(64 * 1024, reader);
    let head = r.fill_buf().map_err(io_err("reading the tarball"))?;
    let other = |what: &str| TarError::Io {
        context: "reading the tarball".into(),
        err: io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "it is compressed with {what}: push a plain .tar or a .tar.gz (e.g. `{what} -d` it, then `gzip` it)"
            ),
        ),
    };
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Input::Gzip(flate2::bufread::MultiGzDecoder::new(r)))
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Err(other("xz"))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Err(other("zstd"))
    } else if head.starts_with(b"BZh") {
        Err(other("bzip2"))
    } else {
        Ok(Input::Plain(r))
    }
}

/// Reads a whole tarball and refuses it at the first unsafe entry (see the crate docs).
pub fn check(reader: impl Read, limits: &Limits) -> Result<Summary, TarError> {
    let mut archive = tar::Archive::new(input(reader)?);
    let mut sum = Summary::default();
    let mut tree = Shadow::default();
    let entries = archive.entries().map_err(io_err("reading the tarball"))?;
    for e in entries {
        let mut e = e.map_err(io_err("reading the tarball"))?;
        let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        sum.entries += 1;
        if sum.entries > limits.max_entries {
            return Err(refuse(
                &name,
                format!("more than {} entries", limits.max_entries),
            ));
        }
        match classify(&e, limits, &mut sum.bytes)? {
            Plan::Root => {}
            Plan::Dir { path, .. } => tree.ensure_dir(&name, &path)?,
            Plan::File { path, size, .. } => {
                tree.make_room(&name, &path)?;
                // Read the data as unpack does: a tarball that ends inside a file is refused.
                let n = io::copy(&mut (&mut e).take(size), &mut io::sink())
                    .map_err(io_err(format!("reading {name:?} from the tarball")))?;
                if n != size {
                    return Err(refuse(
                        &name,
                        format!("the tarball ends inside it ({n} of {size} bytes)"),
                    ));
                }
                tree.nodes.insert(path, Node::File);
            }
            Plan::Symlink { path, .. } => {
                tree.make_room(&name, &path)?;
                tree.nodes.insert(path, Node::Symlink);
            }
            Plan::Hardlink { path, target } => {
                if !tree.is_plain_file(&target) {
                    return Err(refuse(
                        &name,
                        format!(
                            "hard link to {:?}, which is not a file earlier in the tarball",
                            target.display()
                        ),
                    ));
                }
                tree.make_room(&name, &path)?;
                tree.nodes.insert(path, Node::File);
            }
        }
    }
    for d in MOUNT_DIRS {
        if tree
            .nodes
            .get(Path::new(d))
            .is_some_and(|n| *n != Node::Dir)
        {
            return Err(refuse(
                d,
                format!(
                    "/{d} is not a directory; a rootfs needs real /proc, /dev and /tmp directories (the worker mounts over them)"
                ),
            ));
        }
    }
    Ok(sum)
}

/// What a path of the modelled tree is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    Dir,
    File,
    Symlink,
}

/// [`check`]'s model of the tree [`unpack`] would build: the same rules as [`Tree`] (with
/// `replace` off), without a file system.
#[derive(Debug, Default)]
struct Shadow {
    nodes: std::collections::HashMap<PathBuf, Node>,
}

impl Shadow {
    /// [`Tree::ensure_dir`].
    fn ensure_dir(&mut self, entry: &str, rel: &Path) -> Result<(), TarError> {
        let mut cur = PathBuf::new();
        for c in rel.components() {
            cur.push(c);
            match self.nodes.get(&cur) {
                Some(Node::Dir) => {}
                Some(_) => {
                    return Err(refuse(
                        entry,
                        format!(
                            "{:?} is already a file or symlink in the tarball, not a directory",
                            cur.display()
                        ),
                    ));
                }
                None => {
                    self.nodes.insert(cur.clone(), Node::Dir);
                }
            }
        }
        Ok(())
    }

    /// [`Tree::make_room`]: real parents, and no directory of that name.
    fn make_room(&mut self, entry: &str, rel: &Path) -> Result<(), TarError> {
        if let Some(parent) = rel.parent() {
            self.ensure_dir(entry, parent)?;
        }
        if self.nodes.get(rel) == Some(&Node::Dir) {
            return Err(refuse(
                entry,
                "a directory of that name is already in the tarball",
            ));
        }
        Ok(())
    }

    /// [`Tree::is_plain_file`].
    fn is_plain_file(&self, rel: &Path) -> bool {
        let mut cur = PathBuf::new();
        if let Some(parent) = rel.parent() {
            for c in parent.components() {
                cur.push(c);
                if self.nodes.get(&cur) != Some(&Node::Dir) {
                    return false;
                }
            }
        }
        self.nodes.get(rel) == Some(&Node::File)
    }
}

/// The extractor's state: the directories known to be real (not symlinks) under `root`.
pub(crate) struct Tree<'a> {
    pub(crate) root: &'a Path,
    pub(crate) dirs: HashSet<PathBuf>,
    /// Applying a layer over lower layers' files (flatten): an entry replaces whatever is in
    /// its way (a directory entry replaces a file or symlink; a file replaces a directory).
    pub(crate) replace: bool,
}

impl Tree<'_> {
    /// Makes every component of `rel` a real directory, creating missing ones; refuses a
    /// component that exists as anything else (a symlink above all).
    pub(crate) fn ensure_dir(&mut self, entry: &str, rel: &Path) -> Result<(), TarError> {
        let mut cur = PathBuf::new();
        for c in rel.components() {
            cur.push(c);
            if self.dirs.contains(&cur) {
                continue;
            }
            let full = self.root.join(&cur);
            match fs::symlink_metadata(&full) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(refuse(
                        entry,
                        format!(
                            "{:?} is already a file or symlink in the tarball, not a directory",
                            cur.display()
                        ),
                    ));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&full).map_err(io_err(format!("mkdir {}", full.display())))?;
                }
                Err(e) => {
                    return Err(TarError::Io {
                        context: format!("stat {}", full.display()),
                        err: e,
                    });
                }
            }
            self.dirs.insert(cur.clone());
        }
        Ok(())
    }

    /// Prepares `rel` for a new non-directory entry: real parents, no old file in the way.
    pub(crate) fn make_room(&mut self, entry: &str, rel: &Path) -> Result<PathBuf, TarError> {
        if let Some(parent) = rel.parent() {
            self.ensure_dir(entry, parent)?;
        }
        let full = self.root.join(rel);
        match fs::symlink_metadata(&full) {
            Ok(m) if m.is_dir() && self.replace => {
                fs::remove_dir_all(&full).map_err(io_err(format!("rm -r {}", full.display())))?;
                self.forget_under(rel);
                Ok(full)
            }
            Ok(m) if m.is_dir() => Err(refuse(
                entry,
                "a directory of that name is already in the tarball",
            )),
            Ok(_) => {
                fs::remove_file(&full).map_err(io_err(format!("rm {}", full.display())))?;
                Ok(full)
            }
            Err(_) => Ok(full),
        }
    }

    /// Creates the regular file `rel` (never through a symlink: `O_CREAT|O_EXCL` after
    /// [`Tree::make_room`]) with `mode` and copies exactly `size` bytes of `r` into it; `what`
    /// names the archive in messages (`tarball`, `layer`).
    pub(crate) fn extract_file(
        &mut self,
        entry: &str,
        rel: &Path,
        mode: u32,
        size: u64,
        r: &mut impl Read,
        what: &str,
    ) -> Result<fs::File, TarError> {
        let full = self.make_room(entry, rel)?;
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&full)
            .map_err(io_err(format!("create {}", full.display())))?;
        let n = io::copy(&mut r.take(size), &mut f)
            .map_err(io_err(format!("reading {entry:?} from the {what}")))?;
        if n != size {
            return Err(refuse(
                entry,
                format!("the {what} ends inside it ({n} of {size} bytes)"),
            ));
        }
        // The umask may have cut bits from `mode`.
        f.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(io_err(format!("chmod {}", full.display())))?;
        Ok(f)
    }

    /// Drops the known directories at and under `rel` (they were removed).
    pub(crate) fn forget_under(&mut self, rel: &Path) {
        self.dirs.retain(|d| !d.starts_with(rel));
    }

    /// `rel` is a regular file reached through real directories only.
    pub(crate) fn is_plain_file(&self, rel: &Path) -> bool {
        let mut cur = PathBuf::new();
        if let Some(parent) = rel.parent() {
            for c in parent.components() {
                cur.push(c);
                let known = self.dirs.contains(&cur)
                    || (self.replace
                        && fs::symlink_metadata(self.root.join(&cur)).is_ok_and(|m| m.is_dir()));
                if !known {
                    return false;
                }
            }
        }
        fs::symlink_metadata(self.root.join(rel)).is_ok_and(|m| m.is_file())
    }
}

/// Checks and extracts a tarball into `dest` (an existing, empty directory). On error `dest` is
/// left partly filled: extract into a temporary directory and rename it when this succeeds.
pub fn unpack(reader: impl Read, dest: &Path, limits: &Limits) -> Result<Summary, TarError> {
    let mut archive = tar::Archive::new(input(reader)?);
    let mut sum = Summary::default();
    let mut tree = Tree {
        root: dest,
        dirs: HashSet::new(),
        replace: false,
    };
    let entries = archive.entries().map_err(io_err("reading the tarball"))?;
    for e in entries {
        let mut e = e.map_err(io_err("reading the tarball"))?;
        let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        sum.entries += 1;
        if sum.entries > limits.max_entries {
            return Err(refuse(
                &name,
                format!("more than {} entries", limits.max_entries),
            ));
        }
        match classify(&e, limits, &mut sum.bytes)? {
            Plan::Root => {}
            Plan::Dir { path, mode } => {
                tree.ensure_dir(&name, &path)?;
                let full = dest.join(&path);
                fs::set_permissions(&full, fs::Permissions::from_mode(mode | 0o700))
                    .map_err(io_err(format!("chmod {}", full.display())))?;
            }
            Plan::File { path, mode, size } => {
                tree.extract_file(&name, &path, mode, size, &mut e, "tarball")?;
            }
            Plan::Symlink { path, target } => {
                let full = tree.make_room(&name, &path)?;
                std::os::unix::fs::symlink(&target, &full)
                    .map_err(io_err(format!("symlink {}", full.display())))?;
            }
            Plan::Hardlink { path, target } => {
                if !tree.is_plain_file(&target) {
                    return Err(refuse(
                        &name,
                        format!(
                            "hard link to {:?}, which is not a file earlier in the tarball",
                            target.display()
                        ),
                    ));
                }
                let full = tree.make_room(&name, &path)?;
                // linkat(2) without AT_SYMLINK_FOLLOW; the target's parents are real directories.
                fs::hard_link(dest.join(&target), &full)
                    .map_err(io_err(format!("link {}", full.display())))?;
            }
        }
    }
    Ok(sum)
}

pub mod layer;

#[cfg(test)]
mod tests;
