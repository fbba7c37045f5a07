//! OCI image layers: a layer tarball (plain, gzip or zstd) unpacked with the safe-unpack rules
//! of artifacts (no `..`, no absolute paths, never through a symlink, limits counted on the
//! expanded bytes), applying the image spec's whiteouts in one of two ways:
//!
//! - [`unpack_layer`] (overlayfs format): into a fresh directory of its own, `.wh.NAME` becomes
//!   a character device 0:0 named `NAME` and `.wh..wh..opq` the xattr
//!   `trusted.overlay.opaque=y` on its directory. Both need system calls the standard library
//!   lacks, so the caller passes them in ([`Whiteouts`]; the worker's live in `worker/src/sys`).
//!   The directory appears (renamed from `<dest>.unpacking`) only when the layer is complete.
//! - [`apply_layer`] (flatten, for nodes without overlayfs): over the tree of the layers below,
//!   `.wh.NAME` deletes `NAME`, `.wh..wh..opq` empties its directory of what lower layers put
//!   there, and an entry replaces whatever was in its way.
//!
//! Unlike artifacts, ownership is kept when [`LayerOptions::keep_owners`] (the worker runs as
//! root), and files keep their modification time; setuid/setgid bits are still dropped. Device nodes and fifos in a layer are skipped
//! (pods get `/dev` from the worker).

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::{Limits, Plan, Summary, TarError, Tree, classify, io_err, normalize, refuse};

/// Prefix of a whiteout entry's file name.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// File name of the opaque-directory marker.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

/// The overlayfs whiteout markers, made by the caller (they need `mknod` and `setxattr`).
pub trait Whiteouts {
    /// Creates a character device 0:0 at `path` (its parent is a real directory, `path` is free).
    fn whiteout(&mut self, path: &Path) -> io::Result<()>;
    /// Sets `trusted.overlay.opaque=y` on the directory `dir`.
    fn opaque(&mut self, dir: &Path) -> io::Result<()>;
}

/// Options of a layer unpack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerOptions {
    /// Bounds: per file, total of file sizes, entries. The expanded stream (headers included)
    /// is capped at `max_total_bytes` plus 1 KiB per allowed entry.
    pub limits: Limits,
    /// `lchown` every entry to its owner in the tarball (needs root).
    pub keep_owners: bool,
}

/// The expanded stream, capped.
struct Capped<R> {
    inner: R,
    left: u64,
    cap: u64,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            // One more byte would be over: is there one?
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "the layer expands to more than {} bytes (a compression bomb?); raise the limit only if the image is known to be that big",
                        self.cap
                    ),
                )),
            };
        }
        let n = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let got = self.inner.read(&mut buf[..n])?;
        self.left -= got as u64;
        Ok(got)
    }
}

enum Decoded<R: BufRead> {
    Plain(R),
    Gzip(Box<flate2::bufread::MultiGzDecoder<R>>),
    Zstd(Box<ZstdFrames<R>>),
}

/// A zstd stream of one or more frames (`zstd` and `pzstd` may write several).
struct ZstdFrames<R: BufRead> {
    dec: Option<ruzstd::decoding::StreamingDecoder<R, ruzstd::decoding::FrameDecoder>>,
}

fn zstd_error(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("the zstd layer has a bad frame: {e}"),
    )
}

impl<R: BufRead> Read for ZstdFrames<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let Some(dec) = self.dec.as_mut() else {
                return Ok(0);
            };
            let n = dec.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            // End of a frame: another one follows, or the end of the stream.
            if dec.get_mut().fill_buf()?.is_empty() {
                return Ok(0);
            }
            let (src, fd) = self
                .dec
                .take()
                .map(|d| d.into_parts())
                .ok_or_else(|| zstd_error("gone"))?;
            self.dec = Some(
                ruzstd::decoding::StreamingDecoder::new_with_decoder(src, fd)
                    .map_err(zstd_error)?,
            );
        }
    }
}

impl<R: BufRead> Read for Decoded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoded::Plain(r) => r.read(buf),
            Decoded::Gzip(r) => r.read(buf),
            Decoded::Zstd(r) => r.read(buf),
        }
    }
}

fn bad_input(msg: String) -> TarError {
    TarError::Io {
        context: "reading the layer".into(),
        err: io::Error::new(io::ErrorKind::InvalidData, msg),
    }
}

/// The decompressed, capped stream of a layer. The declared compression must match the bytes
/// (a plain layer that is in fact gzip or zstd is decoded as such: `docker save` says nothing).
fn decode<R: Read>(
    reader: R,
    compression: Compression,
    limits: &Limits,
) -> Result<Capped<Decoded<BufReader<R>>>, TarError> {
    let mut r = BufReader::with_capacity(64 * 1024, reader);
    let head = r.fill_buf().map_err(io_err("reading the layer"))?;
    let is_gzip = head.starts_with(&[0x1f, 0x8b]);
    let is_zstd = head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]);
    let actual = if is_gzip {
        Compression::Gzip
    } else if is_zstd {
        Compression::Zstd
    } else {
        Compression::None
    };
    if compression != Compression::None && actual != compression {
        return Err(bad_input(format!(
            "the layer's media type says {compression:?} but its bytes are {actual:?}: the image is corrupt, rebuild or re-push it"
        )));
    }
    let inner =
        match actual {
            Compression::None => Decoded::Plain(r),
            Compression::Gzip => Decoded::Gzip(Box::new(flate2::bufread::MultiGzDecoder::new(r))),
            Compression::Zstd => Decoded::Zstd(Box::new(ZstdFrames {
                dec: Some(ruzstd::decoding::StreamingDecoder::new(r).map_err(|e| {
                    bad_input(format!("the zstd layer has a bad frame header: {e}"))
                })?),
            })),
        };
    let cap = limits
        .max_total_bytes
        .saturating_add(limits.max_entries.saturating_mul(1024));
    Ok(Capped {
        inner,
        left: cap,
        cap,
    })
}

/// What a layer entry means.
enum Marker {
    /// `.wh..wh..opq` in this directory.
    Opaque(PathBuf),
    /// `.wh.NAME`: `NAME` (this path) is deleted.
    Whiteout(PathBuf),
}

fn marker(name: &str, raw: &[u8]) -> Result<Option<Marker>, TarError> {
    let path = normalize(name, raw, "the path")?;
    let Some(file) = path.file_name().map(OsStr::as_bytes) else {
        return Ok(None);
    };
    let parent = path.parent().map(Path::to_path_buf).unwrap_or_default();
    if file == OPAQUE_MARKER.as_bytes() {
        return Ok(Some(Marker::Opaque(parent)));
    }
    if let Some(rest) = file.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
        if rest.is_empty() || rest == b"." || rest == b".." || rest.starts_with(b".wh.") {
            return Err(refuse(name, "not a valid whiteout name"));
        }
        return Ok(Some(Marker::Whiteout(parent.join(OsStr::from_bytes(rest)))));
    }
    Ok(None)
}

/// `rel`'s parents are real directories (not symlinks) under `root`, without creating any.
fn real_parents(root: &Path, rel: &Path) -> bool {
    let mut cur = PathBuf::new();
    if let Some(parent) = rel.parent() {
        for c in parent.components() {
            cur.push(c);
            if !fs::symlink_metadata(root.join(&cur)).is_ok_and(|m| m.is_dir()) {
                return false;
            }
        }
    }
    true
}

enum Mode<'a> {
    Overlay(&'a mut dyn Whiteouts),
    Flatten,
}

fn extract(
    reader: impl Read,
    compression: Compression,
    dest: &Path,
    opts: &LayerOptions,
    mut mode: Mode<'_>,
) -> Result<Summary, TarError> {
    let limits = &opts.limits;
    let mut archive = tar::Archive::new(decode(reader, compression, limits)?);
    let mut sum = Summary::default();
    let flatten = matches!(mode, Mode::Flatten);
    let mut tree = Tree {
        root: dest,
        dirs: HashSet::new(),
        replace: flatten,
    };
    // Flatten: what this layer wrote (an opaque marker or a whiteout only hides lower layers).
    let mut mine: HashSet<PathBuf> = HashSet::new();
    let entries = archive.entries().map_err(io_err("reading the layer"))?;
    for e in entries {
        let mut e = e.map_err(io_err("reading the layer"))?;
        let raw = e.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw).into_owned();
        sum.entries += 1;
        if sum.entries > limits.max_entries {
            return Err(refuse(
                &name,
                format!("more than {} entries", limits.max_entries),
            ));
        }
        use tar::EntryType as T;
        match e.header().entry_type() {
            T::Char | T::Block | T::Fifo | T::XGlobalHeader => continue,
            _ => {}
        }
        if let Some(m) = marker(&name, &raw)? {
            match (&mut mode, m) {
                (Mode::Overlay(w), Marker::Opaque(dir)) => {
                    tree.ensure_dir(&name, &dir)?;
                    let full = dest.join(&dir);
                    w.opaque(&full)
                        .map_err(io_err(format!("marking {} opaque", full.display())))?;
                }
                (Mode::Overlay(w), Marker::Whiteout(path)) => {
                    let full = tree.make_room(&name, &path)?;
                    w.whiteout(&full)
                        .map_err(io_err(format!("whiteout {}", full.display())))?;
                }
                (Mode::Flatten, Marker::Opaque(dir)) => {
                    tree.ensure_dir(&name, &dir)?;
                    let full = dest.join(&dir);
                    let list =
                        fs::read_dir(&full).map_err(io_err(format!("ls {}", full.display())))?;
                    for child in list {
                        let child = child.map_err(io_err(format!("ls {}", full.display())))?;
                        let rel = dir.join(child.file_name());
                        if mine.iter().any(|m| m.starts_with(&rel)) {
                            continue;
                        }
                        remove(&dest.join(&rel))?;
                        tree.forget_under(&rel);
                    }
                }
                (Mode::Flatten, Marker::Whiteout(path)) => {
                    if real_parents(dest, &path) && !mine.contains(&path) {
                        let full = dest.join(&path);
                        if fs::symlink_metadata(&full).is_ok() {
                            remove(&full)?;
                            tree.forget_under(&path);
                        }
                    }
                }
            }
            continue;
        }
        let plan = classify(&e, limits, &mut sum.bytes)?;
        let written = match plan {
            Plan::Root => None,
            Plan::Dir { path, mode } => {
                if flatten && let Some(parent) = path.parent() {
                    tree.ensure_dir(&name, parent)?;
                    let full = dest.join(&path);
                    if fs::symlink_metadata(&full).is_ok_and(|m| !m.is_dir()) {
                        remove(&full)?;
                    }
                }
                tree.ensure_dir(&name, &path)?;
                let full = dest.join(&path);
                fs::set_permissions(&full, fs::Permissions::from_mode(mode | 0o700))
                    .map_err(io_err(format!("chmod {}", full.display())))?;
                Some(path)
            }
            Plan::File { path, mode, size } => {
                let f = tree.extract_file(&name, &path, mode, size, &mut e, "layer")?;
                // Files keep their time (Python compares a .pyc's source mtime, build caches too).
                if let Ok(t) = e.header().mtime() {
                    let _ =
                        f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(t));
                }
                Some(path)
            }
            Plan::Symlink { path, target } => {
                let full = tree.make_room(&name, &path)?;
                std::os::unix::fs::symlink(&target, &full)
                    .map_err(io_err(format!("symlink {}", full.display())))?;
                Some(path)
            }
            Plan::Hardlink { path, target } => {
                if !tree.is_plain_file(&target) {
                    return Err(refuse(
                        &name,
                        format!(
                            "hard link to {:?}, which is not a file earlier in the layer",
                            target.display()
                        ),
                    ));
                }
                let full = tree.make_room(&name, &path)?;
                fs::hard_link(dest.join(&target), &full)
                    .map_err(io_err(format!("link {}", full.display())))?;
                // A hard link shares its target's owner.
                mine.insert(path);
                None
            }
        };
        if let Some(path) = written {
            if opts.keep_owners {
                let h = e.header();
                let uid = h.uid().ok().and_then(|u| u32::try_from(u).ok());
                let gid = h.gid().ok().and_then(|g| u32::try_from(g).ok());
                let full = dest.join(&path);
                std::os::unix::fs::lchown(&full, uid, gid)
                    .map_err(io_err(format!("chown {}", full.display())))?;
            }
            if flatten {
                mine.insert(path);
            }
        }
    }
    // Read to the end: a truncated or corrupt compressed stream is an error, not a short layer.
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(io_err("reading the layer"))?;
    Ok(sum)
}

fn remove(full: &Path) -> Result<(), TarError> {
    let r = match fs::symlink_metadata(full) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(full),
        Ok(_) => fs::remove_file(full),
        Err(_) => Ok(()),
    };
    r.map_err(io_err(format!("rm {}", full.display())))
}

/// Where [`unpack_layer`] builds a layer before renaming it to `dest`.
pub fn unpacking_dir(dest: &Path) -> PathBuf {
    let mut s = dest.as_os_str().to_owned();
    s.push(".unpacking");
    PathBuf::from(s)
}

/// Unpacks a layer into `dest` (which must not exist) in overlayfs format. It is built in
/// [`unpacking_dir`] (a leftover one is removed first) and renamed to `dest` when complete; on
/// any error nothing is left behind.
pub fn unpack_layer(
    reader: impl Read,
    compression: Compression,
    dest: &Path,
    opts: &LayerOptions,
    whiteouts: &mut dyn Whiteouts,
) -> Result<Summary, TarError> {
    if fs::symlink_metadata(dest).is_ok() {
        return Err(TarError::Io {
            context: format!("unpacking a layer into {}", dest.display()),
            err: io::Error::new(io::ErrorKind::AlreadyExists, "it already exists"),
        });
    }
    let tmp = unpacking_dir(dest);
    remove(&tmp)?;
    fs::create_dir(&tmp).map_err(io_err(format!("mkdir {}", tmp.display())))?;
    let done = extract(reader, compression, &tmp, opts, Mode::Overlay(whiteouts)).and_then(|s| {
        // The layer's root keeps a usable mode whatever its `./` entry said.
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))
            .map_err(io_err(format!("chmod {}", tmp.display())))?;
        fs::rename(&tmp, dest).map_err(io_err(format!("rename to {}", dest.display())))?;
        Ok(s)
    });
    if done.is_err() {
        let _ = remove(&tmp);
    }
    done
}

/// Applies a layer over `tree` (the layers below, already applied; an empty directory for the
/// first): whiteouts delete, opaque markers empty their directory. On error `tree` is left
/// partly changed: build a flattened image in a temporary directory.
pub fn apply_layer(
    reader: impl Read,
    compression: Compression,
    tree: &Path,
    opts: &LayerOptions,
) -> Result<Summary, TarError> {
    extract(reader, compression, tree, opts, Mode::Flatten)
}

#[cfg(test)]
mod tests;
