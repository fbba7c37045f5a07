//! Image archives for `bramble image import`: a `docker save` tarball (`manifest.json` with
//! `Config`/`RepoTags`/`Layers`; layers as `<id>/layer.tar` or, from Docker 25 on,
//! `blobs/sha256/<hex>`) or an OCI archive (a tar of an OCI layout: `oci-layout`, `index.json`,
//! `blobs/sha256/*`), plain or gzip-compressed, single- or multi-arch.
//!
//! [`ImageArchive::open`] indexes the tar, verifies the sha256 of every blob it will upload, and
//! yields the blobs (leaves first, the root last) with where to read each, plus the root blob the
//! master records the image from:
//! - OCI: the manifest or index `index.json` lists, or a synthesized OCI index when it lists
//!   several;
//! - docker save: a synthesized OCI image manifest per image (config, and the layer tars as they
//!   are, `application/vnd.oci.image.layer.v1.tar` unless they carry a gzip/zstd magic), and a
//!   synthesized OCI index when the archive holds several images.
//!
//! Synthesized JSON is deterministic: importing the same file twice yields the same digests, so an
//! interrupted upload resumes.
//!
//! A gzip-compressed archive is decompressed once into an anonymous temporary file (in `TMPDIR`)
//! so that blobs can be read at their offsets.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use bramble_artifact::Sha256;
use serde::{Deserialize, Serialize};

/// OCI image manifest media type.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index media type.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config media type.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Uncompressed layer.
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// gzip layer.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// zstd layer.
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Largest manifest, index or config read into memory.
const MAX_JSON: u64 = 4 << 20;
/// Symlink hops followed inside the archive (`docker save` links shared `layer.tar`s).
const MAX_LINKS: usize = 8;

/// What is wrong with an archive; the message names the file and the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveError {
    /// The message.
    pub message: String,
}

impl fmt::Display for ArchiveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ArchiveError {}

fn err<T>(message: impl Into<String>) -> Result<T, ArchiveError> {
    Err(ArchiveError {
        message: message.into(),
    })
}

/// The archive's layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `docker save` (`manifest.json`).
    DockerSave,
    /// OCI layout (`oci-layout`, `index.json`, `blobs/`).
    Oci,
}

impl Format {
    /// `docker save` / `OCI`.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::DockerSave => "docker save",
            Format::Oci => "OCI",
        }
    }
}

/// What a blob is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobKind {
    /// A layer tar (plain, gzip or zstd).
    Layer,
    /// An image config.
    Config,
    /// An image manifest.
    Manifest,
    /// An image index (or Docker manifest list).
    Index,
}

/// Where a blob's bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// In the (uncompressed) tar at this offset.
    Archive {
        /// Offset of the first byte.
        offset: u64,
    },
    /// Synthesized JSON (docker save manifests, a synthesized index).
    Memory(Arc<Vec<u8>>),
}

/// One blob to upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    /// sha256, lowercase hex (verified while opening).
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// What it is.
    pub kind: BlobKind,
    /// Where its bytes are.
    pub source: Source,
}

/// An opened, verified image archive.
#[derive(Debug)]
pub struct ImageArchive {
    /// The tar (for a gzip archive: its decompressed temporary copy).
    file: Arc<File>,
    /// Layout of the archive.
    pub format: Format,
    /// Whether the archive was gzip-compressed.
    pub compressed: bool,
    /// Every blob once, leaves first, the root last.
    pub blobs: Vec<Blob>,
    /// sha256 of the root blob (a manifest or an index).
    pub root_sha256: String,
    /// The root blob's kind (`Manifest` or `Index`).
    pub root_kind: BlobKind,
    /// The references the archive names (RepoTags; OCI `io.containerd.image.name` or a full
    /// `org.opencontainers.image.ref.name`), in order, without duplicates.
    pub references: Vec<String>,
    /// Tag-only names (an OCI `ref.name` like `1.0`): the hint when no reference is found.
    tags_only: Vec<String>,
    /// Platforms found (`linux/arm64`, `linux/arm/v7`), informational.
    pub platforms: Vec<String>,
}

/// A reader of one blob (from its offset in the archive, or from memory).
#[derive(Debug)]
pub struct BlobReader {
    file: Option<Arc<File>>,
    mem: Option<Arc<Vec<u8>>>,
    pos: u64,
    end: u64,
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.end.saturating_sub(self.pos);
        let want = (buf.len() as u64).min(left) as usize;
        if want == 0 {
            return Ok(0);
        }
        let n = if let Some(f) = &self.file {
            let n = f.read_at(&mut buf[..want], self.pos)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the archive ended inside a blob (was it changed while importing?)",
                ));
            }
            n
        } else if let Some(m) = &self.mem {
            let start = self.pos as usize;
            buf[..want].copy_from_slice(&m[start..start + want]);
            want
        } else {
            0
        };
        self.pos += n as u64;
        Ok(n)
    }
}

/// One file of the tar.
#[derive(Debug, Clone)]
struct Entry {
    offset: u64,
    size: u64,
    /// Symlink or hard link target (as written in the tar).
    link: Option<(String, bool)>,
}

/// The tar's index: normalized path → entry.
struct Tar {
    file: Arc<File>,
    entries: HashMap<String, Entry>,
    order: Vec<String>,
}

/// `./a//b/` → `a/b`.
fn norm_path(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    parts.join("/")
}

impl Tar {
    fn index(file: File, name: &str) -> Result<Tar, ArchiveError> {
        let not_tar = |e: &dyn fmt::Display| ArchiveError {
            message: format!(
                "{name} is not a tar archive (nor a gzip-compressed one): {e}; give the file `docker save` or `skopeo copy ... oci-archive:FILE` wrote"
            ),
        };
        let mut f = file;
        f.rewind().map_err(|e| not_tar(&e))?;
        let mut ar = tar::Archive::new(f);
        let mut entries = HashMap::new();
        let mut order = Vec::new();
        {
            let iter = ar.entries_with_seek().map_err(|e| not_tar(&e))?;
            for e in iter {
                let e = match e {
                    Ok(e) => e,
                    Err(e) if order.is_empty() => return Err(not_tar(&e)),
                    Err(e) => {
                        return err(format!(
                            "{name} is truncated or damaged after {}: {e}; copy it again",
                            order.last().map(String::as_str).unwrap_or_default()
                        ));
                    }
                };
                let path = match e.path() {
                    Ok(p) => norm_path(&p.to_string_lossy()),
                    Err(e) => return Err(not_tar(&e)),
                };
                let ty = e.header().entry_type();
                let link = if ty.is_symlink() || ty.is_hard_link() {
                    e.link_name()
                        .ok()
                        .flatten()
                        .map(|l| (l.to_string_lossy().into_owned(), ty.is_hard_link()))
                } else {
                    None
                };
                if !(ty.is_file() || link.is_some()) {
                    continue;
                }
                let entry = Entry {
                    offset: e.raw_file_position(),
                    size: e.size(),
                    link,
                };
                if entries.insert(path.clone(), entry).is_none() {
                    order.push(path);
                }
            }
        }
        let file = ar.into_inner();
        // Seeking past the end reads as the end of the archive: check the last file is whole.
        let len = file.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
        if let Some(cut) = order.iter().find(|p| {
            let e = &entries[p.as_str()];
            e.link.is_none() && e.offset + e.size > len
        }) {
            return err(format!(
                "{name} is truncated or damaged: {cut} ends past the end of the file; copy it again"
            ));
        }
        if order.is_empty() {
            return err(format!("{name} holds no files: it is not an image archive"));
        }
        Ok(Tar {
            file: Arc::new(file),
            entries,
            order,
        })
    }

    /// The regular file at `path`, following links.
    fn find(&self, path: &str) -> Option<(u64, u64)> {
        let mut p = norm_path(path);
        for _ in 0..MAX_LINKS {
            let e = self.entries.get(&p)?;
            match &e.link {
                None => return Some((e.offset, e.size)),
                Some((target, hard)) => {
                    p = if *hard || target.starts_with('/') {
                        norm_path(target)
                    } else {
                        let dir = p.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
                        norm_path(&format!("{dir}/{target}"))
                    };
                }
            }
        }
        None
    }

    fn read_small(&self, path: &str, what: &str, name: &str) -> Result<Vec<u8>, ArchiveError> {
        let Some((offset, size)) = self.find(path) else {
            return err(format!("{name}: {what} {path} is missing from the archive"));
        };
        if size > MAX_JSON {
            return err(format!(
                "{name}: {what} {path} is {size} bytes: more than {MAX_JSON} for a JSON document"
            ));
        }
        let mut buf = vec![0u8; size as usize];
        self.file
            .read_exact_at(&mut buf, offset)
            .map_err(|e| ArchiveError {
                message: format!("{name}: cannot read {path}: {e}"),
            })?;
        Ok(buf)
    }

    fn sha256(&self, offset: u64, size: u64, name: &str) -> Result<String, ArchiveError> {
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut pos = offset;
        let end = offset + size;
        while pos < end {
            let want = ((end - pos) as usize).min(buf.len());
            self.file
                .read_exact_at(&mut buf[..want], pos)
                .map_err(|e| ArchiveError {
                    message: format!("{name}: cannot read: {e}"),
                })?;
            h.update(&buf[..want]);
            pos += want as u64;
        }
        Ok(h.finish_hex())
    }

    fn magic(&self, offset: u64, size: u64) -> [u8; 4] {
        let mut m = [0u8; 4];
        if size >= 4 {
            let _ = self.file.read_exact_at(&mut m, offset);
        }
        m
    }
}

/// An OCI descriptor (what we read and write of it).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    #[serde(default)]
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Platform {
    architecture: String,
    os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    variant: Option<String>,
}

impl Platform {
    fn show(&self) -> String {
        match &self.variant {
            Some(v) => format!("{}/{}/{v}", self.os, self.architecture),
            None => format!("{}/{}", self.os, self.architecture),
        }
    }
}

/// An OCI index as we write it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct IndexOut {
    schema_version: u32,
    media_type: &'static str,
    manifests: Vec<Descriptor>,
}

/// An OCI manifest as we write it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ManifestOut {
    schema_version: u32,
    media_type: &'static str,
    config: Descriptor,
    layers: Vec<Descriptor>,
}

/// What we read of an index or a manifest.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AnyManifest {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
}

/// What we read of an image config.
#[derive(Debug, Deserialize)]
struct ConfigIn {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    variant: Option<String>,
    #[serde(default)]
    rootfs: Option<RootFs>,
}

#[derive(Debug, Deserialize)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

/// One image of `docker save`'s manifest.json.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// The blobs collected so far, each once.
#[derive(Default)]
struct Blobs {
    list: Vec<Blob>,
    seen: BTreeSet<String>,
}

impl Blobs {
    fn push(&mut self, b: Blob) {
        if self.seen.insert(b.sha256.clone()) {
            self.list.push(b);
        }
    }
}

fn memory_blob(json: Vec<u8>, kind: BlobKind) -> Blob {
    Blob {
        sha256: bramble_artifact::sha256_hex(&json),
        size: json.len() as u64,
        kind,
        source: Source::Memory(Arc::new(json)),
    }
}

fn digest_hex<'a>(d: &'a str, name: &str) -> Result<&'a str, ArchiveError> {
    match d.strip_prefix("sha256:") {
        Some(h) if bramble_artifact::is_sha256_hex(h) => Ok(h),
        _ => err(format!(
            "{name}: digest {d:?} is not sha256:<64 hex>: only sha256 digests are supported"
        )),
    }
}

/// The file at the root of a tar that marks an image archive, if any (`manifest.json`,
/// `index.json`, `oci-layout`): `bramble artifact push` refuses such a file. Reads the tar's
/// headers (gzip: decompressing on the way); `Ok(None)` for anything else, a non-tar included.
pub fn detect(path: &Path) -> io::Result<Option<Format>> {
    let mut f = File::open(path)?;
    let mut magic = [0u8; 2];
    let n = f.read(&mut magic)?;
    f.rewind()?;
    let (mut manifest, mut index, mut layout) = (false, false, false);
    let mut seen = |p: &str| match norm_path(p).as_str() {
        "manifest.json" => manifest = true,
        "index.json" => index = true,
        "oci-layout" => layout = true,
        _ => {}
    };
    if n == 2 && magic == [0x1f, 0x8b] {
        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(BufReader::new(f)));
        if let Ok(entries) = ar.entries() {
            for e in entries {
                let Ok(e) = e else { break };
                if let Ok(p) = e.path() {
                    seen(&p.to_string_lossy());
                }
            }
        }
    } else {
        // A plain tar: headers only, the data is skipped by seeking.
        let mut ar = tar::Archive::new(f);
        if let Ok(entries) = ar.entries_with_seek() {
            for e in entries {
                let Ok(e) = e else { break };
                if let Ok(p) = e.path() {
                    seen(&p.to_string_lossy());
                }
            }
        }
    }
    Ok(if index && layout {
        Some(Format::Oci)
    } else if manifest {
        Some(Format::DockerSave)
    } else if index || layout {
        Some(Format::Oci)
    } else {
        None
    })
}

impl ImageArchive {
    /// Opens and verifies `path` (a `docker save` tarball or an OCI archive, plain or gzip).
    pub fn open(path: &Path) -> Result<ImageArchive, ArchiveError> {
        let name = path.display().to_string();
        let io_err = |e: io::Error| ArchiveError {
            message: format!("cannot read {name}: {e}"),
        };
        let mut f = File::open(path).map_err(io_err)?;
        let mut magic = [0u8; 4];
        let n = f.read(&mut magic).map_err(io_err)?;
        if n == 0 {
            return err(format!("{name} is empty: nothing to import"));
        }
        let compressed = n >= 2 && magic[..2] == [0x1f, 0x8b];
        if n == 4 && magic == [0x28, 0xb5, 0x2f, 0xfd] {
            return err(format!(
                "{name} is zstd-compressed: decompress it first (zstd -d {name}) and import the tar"
            ));
        }
        f.rewind().map_err(io_err)?;
        let file = if compressed {
            let mut tmp = tempfile::tempfile().map_err(|e| ArchiveError {
                message: format!(
                    "cannot create a temporary file to decompress {name} into (TMPDIR): {e}"
                ),
            })?;
            let mut gz = flate2::read::GzDecoder::new(BufReader::new(f));
            io::copy(&mut gz, &mut tmp).map_err(|e| ArchiveError {
                message: format!("{name}: gzip data is damaged or the disk is full: {e}"),
            })?;
            tmp
        } else {
            f
        };
        let tar = Tar::index(file, &name)?;
        let has = |p: &str| tar.entries.contains_key(p);
        if has("index.json") && (has("oci-layout") || !has("manifest.json")) {
            match Self::oci(&tar, &name, compressed) {
                // Docker 25+ writes both: fall back to manifest.json when the OCI side is partial
                // (an index whose other platforms' blobs were not saved).
                Err(e) if has("manifest.json") && e.message.contains("is missing") => {
                    Self::docker(&tar, &name, compressed)
                }
                r => r,
            }
        } else if has("manifest.json") {
            Self::docker(&tar, &name, compressed)
        } else if has("oci-layout") {
            err(format!(
                "{name}: OCI layout without index.json: the archive is incomplete"
            ))
        } else {
            let rootfs = tar.order.iter().any(|p| {
                ["bin/", "sbin/", "usr/", "etc/", "lib/"]
                    .iter()
                    .any(|d| p.starts_with(d))
            });
            if rootfs {
                err(format!(
                    "{name}: this is a plain root filesystem tarball, not an image archive: push it with bramble artifact push {name} --arch ARCH"
                ))
            } else {
                err(format!(
                    "{name}: not an image archive: no manifest.json (docker save) nor index.json (OCI layout) at its root"
                ))
            }
        }
    }

    fn oci(tar: &Tar, name: &str, compressed: bool) -> Result<ImageArchive, ArchiveError> {
        let raw = tar.read_small("index.json", "the OCI index", name)?;
        let index: AnyManifest = serde_json::from_slice(&raw).map_err(|e| ArchiveError {
            message: format!("{name}: index.json is not an OCI index: {e}"),
        })?;
        let entries = index.manifests.unwrap_or_default();
        if entries.is_empty() {
            return err(format!("{name}: index.json lists no image"));
        }
        let mut blobs = Blobs::default();
        let mut platforms = BTreeSet::new();
        let mut top = Vec::new();
        for d in &entries {
            let (kind, platform) = walk(tar, name, d, &mut blobs, &mut platforms, 0)?;
            let mut d = d.clone();
            if d.platform.is_none() {
                d.platform = platform;
            }
            if d.media_type.is_empty() {
                d.media_type = if kind == BlobKind::Index {
                    OCI_INDEX
                } else {
                    OCI_MANIFEST
                }
                .into();
            }
            top.push((d, kind));
        }
        let (mut references, mut tags_only) = (Vec::new(), Vec::new());
        for (d, _) in &top {
            let full = d.annotations.get("io.containerd.image.name");
            let refname = d.annotations.get("org.opencontainers.image.ref.name");
            match (full, refname) {
                (Some(r), _) => push_unique(&mut references, r),
                (None, Some(r)) if r.contains([':', '/', '@']) => push_unique(&mut references, r),
                (None, Some(r)) => push_unique(&mut tags_only, r),
                (None, None) => {}
            }
        }
        let (root_sha256, root_kind) = if top.len() == 1 {
            let (d, kind) = &top[0];
            (digest_hex(&d.digest, name)?.to_string(), *kind)
        } else {
            let out = IndexOut {
                schema_version: 2,
                media_type: OCI_INDEX,
                manifests: top.into_iter().map(|(d, _)| d).collect(),
            };
            let b = memory_blob(json(&out), BlobKind::Index);
            let sha = b.sha256.clone();
            blobs.push(b);
            (sha, BlobKind::Index)
        };
        Ok(ImageArchive {
            file: tar.file.clone(),
            format: Format::Oci,
            compressed,
            blobs: blobs.list,
            root_sha256,
            root_kind,
            references,
            tags_only,
            platforms: platforms.into_iter().collect(),
        })
    }

    fn docker(tar: &Tar, name: &str, compressed: bool) -> Result<ImageArchive, ArchiveError> {
        let raw = tar.read_small("manifest.json", "docker save's manifest", name)?;
        let images: Vec<DockerEntry> = serde_json::from_slice(&raw).map_err(|e| ArchiveError {
            message: format!(
                "{name}: manifest.json is not docker save's (a list of Config/RepoTags/Layers): {e}"
            ),
        })?;
        if images.is_empty() {
            return err(format!("{name}: manifest.json lists no image"));
        }
        let mut blobs = Blobs::default();
        let mut references = Vec::new();
        let mut manifests: Vec<(Descriptor, String)> = Vec::new();
        for img in &images {
            let cfg_raw = tar.read_small(&img.config, "config", name)?;
            let cfg_sha = bramble_artifact::sha256_hex(&cfg_raw);
            check_named_digest(&img.config, &cfg_sha, name)?;
            let cfg: ConfigIn = serde_json::from_slice(&cfg_raw).map_err(|e| ArchiveError {
                message: format!("{name}: config {} is not an image config: {e}", img.config),
            })?;
            let (cfg_offset, cfg_size) = tar.find(&img.config).unwrap_or_default();
            blobs.push(Blob {
                sha256: cfg_sha.clone(),
                size: cfg_size,
                kind: BlobKind::Config,
                source: Source::Archive { offset: cfg_offset },
            });
            let diff_ids = cfg.rootfs.map(|r| r.diff_ids).unwrap_or_default();
            let mut layers = Vec::new();
            for (i, l) in img.layers.iter().enumerate() {
                let Some((offset, size)) = tar.find(l) else {
                    return err(format!(
                        "{name}: layer {l} named in manifest.json is missing from the archive"
                    ));
                };
                let sha = tar.sha256(offset, size, name)?;
                check_named_digest(l, &sha, name)?;
                let media_type = match tar.magic(offset, size) {
                    [0x1f, 0x8b, _, _] => OCI_LAYER_GZIP,
                    [0x28, 0xb5, 0x2f, 0xfd] => OCI_LAYER_ZSTD,
                    _ => {
                        if let Some(want) = diff_ids.get(i)
                            && *want != format!("sha256:{sha}")
                        {
                            return err(format!(
                                "{name}: digest mismatch: layer {l} has sha256:{sha} but its config lists {want}: the archive is damaged"
                            ));
                        }
                        OCI_LAYER_TAR
                    }
                };
                blobs.push(Blob {
                    sha256: sha.clone(),
                    size,
                    kind: BlobKind::Layer,
                    source: Source::Archive { offset },
                });
                layers.push(Descriptor {
                    media_type: media_type.into(),
                    digest: format!("sha256:{sha}"),
                    size,
                    platform: None,
                    annotations: BTreeMap::new(),
                });
            }
            let m = ManifestOut {
                schema_version: 2,
                media_type: OCI_MANIFEST,
                config: Descriptor {
                    media_type: OCI_CONFIG.into(),
                    digest: format!("sha256:{cfg_sha}"),
                    size: cfg_size,
                    platform: None,
                    annotations: BTreeMap::new(),
                },
                layers,
            };
            let b = memory_blob(json(&m), BlobKind::Manifest);
            let platform = Platform {
                architecture: cfg.architecture,
                os: cfg.os,
                variant: cfg.variant.filter(|v| !v.is_empty()),
            };
            let d = Descriptor {
                media_type: OCI_MANIFEST.into(),
                digest: format!("sha256:{}", b.sha256),
                size: b.size,
                platform: Some(platform),
                annotations: BTreeMap::new(),
            };
            blobs.push(b);
            let tags = img.repo_tags.clone().unwrap_or_default();
            for t in &tags {
                push_unique(&mut references, t);
            }
            if !manifests.iter().any(|(x, _)| x.digest == d.digest) {
                manifests.push((d, tags.join(", ")));
            }
        }
        // Several images of one platform cannot make one multi-arch image.
        let mut by_platform: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        for (d, tags) in &manifests {
            let p = d.platform.as_ref().map(Platform::show).unwrap_or_default();
            by_platform.entry(p).or_default().push(tags);
        }
        if let Some((p, tags)) = by_platform.iter().find(|(_, t)| t.len() > 1) {
            return err(format!(
                "{name} holds {} different images for {p} ({}): import one image per file (docker save IMAGE)",
                tags.len(),
                tags.iter()
                    .map(|t| if t.is_empty() { "<untagged>" } else { t })
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        }
        let platforms = by_platform.into_keys().collect();
        let (root_sha256, root_kind) = if manifests.len() == 1 {
            (
                manifests[0].0.digest["sha256:".len()..].to_string(),
                BlobKind::Manifest,
            )
        } else {
            let out = IndexOut {
                schema_version: 2,
                media_type: OCI_INDEX,
                manifests: manifests.into_iter().map(|(d, _)| d).collect(),
            };
            let b = memory_blob(json(&out), BlobKind::Index);
            let sha = b.sha256.clone();
            blobs.push(b);
            (sha, BlobKind::Index)
        };
        Ok(ImageArchive {
            file: tar.file.clone(),
            format: Format::DockerSave,
            compressed,
            blobs: blobs.list,
            root_sha256,
            root_kind,
            references,
            tags_only: Vec::new(),
            platforms,
        })
    }

    /// The reference to import under: `given` if any, else the one the archive names; an error
    /// asking for `--reference` when it names none or several.
    pub fn reference(&self, given: Option<&str>, name: &str) -> Result<String, ArchiveError> {
        if let Some(g) = given {
            return Ok(g.to_string());
        }
        match self.references.as_slice() {
            [one] => Ok(one.clone()),
            [] if !self.tags_only.is_empty() => err(format!(
                "{name} names only the tag {:?}, not the image: pass --reference REGISTRY/REPOSITORY:TAG",
                self.tags_only[0]
            )),
            [] => err(format!(
                "{name} names no image reference: pass --reference REGISTRY/REPOSITORY:TAG"
            )),
            many => err(format!(
                "{name} names several references ({}): pick one with --reference",
                many.join(", ")
            )),
        }
    }

    /// Reads `blob` from byte `from` on.
    pub fn reader(&self, blob: &Blob, from: u64) -> BlobReader {
        match &blob.source {
            Source::Archive { offset } => BlobReader {
                file: Some(self.file.clone()),
                mem: None,
                pos: offset + from.min(blob.size),
                end: offset + blob.size,
            },
            Source::Memory(m) => BlobReader {
                file: None,
                mem: Some(m.clone()),
                pos: from.min(blob.size),
                end: blob.size,
            },
        }
    }

    /// Bytes of all blobs.
    pub fn total_size(&self) -> u64 {
        self.blobs.iter().map(|b| b.size).sum()
    }
}

fn push_unique(v: &mut Vec<String>, s: &str) {
    if !v.iter().any(|x| x == s) {
        v.push(s.to_string());
    }
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    // Serializing plain structs of strings and numbers cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

/// A file named by its digest (`<hex>.json`, `blobs/sha256/<hex>`, `<hex>/layer.tar` is not one)
/// must hash to it.
fn check_named_digest(path: &str, sha: &str, name: &str) -> Result<(), ArchiveError> {
    let p = norm_path(path);
    let named = p
        .strip_prefix("blobs/sha256/")
        .or_else(|| p.strip_suffix(".json"));
    match named {
        Some(h) if bramble_artifact::is_sha256_hex(h) && h != sha => err(format!(
            "{name}: digest mismatch: {path} has sha256:{sha}: the archive is damaged"
        )),
        _ => Ok(()),
    }
}

/// Adds `d`'s blob and everything it names (children first) to `blobs`, verifying each; returns
/// its kind and, for a manifest, the platform its config names.
fn walk(
    tar: &Tar,
    name: &str,
    d: &Descriptor,
    blobs: &mut Blobs,
    platforms: &mut BTreeSet<String>,
    depth: usize,
) -> Result<(BlobKind, Option<Platform>), ArchiveError> {
    if depth > 4 {
        return err(format!("{name}: indexes nested too deep at {}", d.digest));
    }
    let hex = digest_hex(&d.digest, name)?;
    let path = format!("blobs/sha256/{hex}");
    let Some((offset, size)) = tar.find(&path) else {
        return err(format!(
            "{name}: blob {} named in the manifest is missing from the archive ({path})",
            d.digest
        ));
    };
    if size != d.size {
        return err(format!(
            "{name}: blob {} is {size} bytes but its descriptor says {}: the archive is damaged",
            d.digest, d.size
        ));
    }
    let sha = tar.sha256(offset, size, name)?;
    if sha != hex {
        return err(format!(
            "{name}: digest mismatch: {path} has sha256:{sha}: the archive is damaged"
        ));
    }
    let is_json = d.media_type.is_empty()
        || d.media_type.ends_with("+json")
        || d.media_type.ends_with(".json");
    let is_layer = d.media_type.contains("layer") || d.media_type.contains("tar");
    if !is_json || is_layer || size > MAX_JSON {
        blobs.push(Blob {
            sha256: sha,
            size,
            kind: BlobKind::Layer,
            source: Source::Archive { offset },
        });
        return Ok((BlobKind::Layer, None));
    }
    let raw = tar.read_small(&path, "blob", name)?;
    let m: AnyManifest = serde_json::from_slice(&raw).map_err(|e| ArchiveError {
        message: format!("{name}: {} is not an OCI manifest or index: {e}", d.digest),
    })?;
    let media = m.media_type.clone().unwrap_or_else(|| d.media_type.clone());
    let (kind, platform) = if let Some(children) = m.manifests {
        if !(media.is_empty() || media == OCI_INDEX || media == DOCKER_MANIFEST_LIST) {
            return err(format!(
                "{name}: {} has the unsupported media type {media}",
                d.digest
            ));
        }
        for c in &children {
            let (_, p) = walk(tar, name, c, blobs, platforms, depth + 1)?;
            if let Some(p) = c.platform.clone().or(p) {
                platforms.insert(p.show());
            }
        }
        (BlobKind::Index, None)
    } else if let Some(cfg) = m.config {
        let chex = digest_hex(&cfg.digest, name)?;
        let cpath = format!("blobs/sha256/{chex}");
        let Some((coff, csize)) = tar.find(&cpath) else {
            return err(format!(
                "{name}: config blob {} named in the manifest is missing from the archive ({cpath})",
                cfg.digest
            ));
        };
        let craw = tar.read_small(&cpath, "config", name)?;
        let csha = bramble_artifact::sha256_hex(&craw);
        if csha != chex || csize != cfg.size {
            return err(format!(
                "{name}: digest mismatch: config {cpath} has sha256:{csha} ({csize} bytes): the archive is damaged"
            ));
        }
        let platform = serde_json::from_slice::<ConfigIn>(&craw)
            .ok()
            .filter(|c| !c.architecture.is_empty())
            .map(|c| Platform {
                architecture: c.architecture,
                os: c.os,
                variant: c.variant.filter(|v| !v.is_empty()),
            });
        blobs.push(Blob {
            sha256: csha,
            size: csize,
            kind: BlobKind::Config,
            source: Source::Archive { offset: coff },
        });
        for l in m.layers.unwrap_or_default() {
            let lhex = digest_hex(&l.digest, name)?;
            let lpath = format!("blobs/sha256/{lhex}");
            let Some((loff, lsize)) = tar.find(&lpath) else {
                return err(format!(
                    "{name}: layer blob {} named in the manifest is missing from the archive ({lpath})",
                    l.digest
                ));
            };
            let lsha = tar.sha256(loff, lsize, name)?;
            if lsha != lhex || lsize != l.size {
                return err(format!(
                    "{name}: digest mismatch: layer {lpath} has sha256:{lsha} ({lsize} bytes, descriptor {}): the archive is damaged",
                    l.size
                ));
            }
            blobs.push(Blob {
                sha256: lsha,
                size: lsize,
                kind: BlobKind::Layer,
                source: Source::Archive { offset: loff },
            });
        }
        if depth == 0
            && let Some(p) = &platform
        {
            platforms.insert(p.show());
        }
        (BlobKind::Manifest, platform)
    } else {
        return err(format!(
            "{name}: {} is neither an image manifest nor an index",
            d.digest
        ));
    };
    blobs.push(Blob {
        sha256: sha,
        size,
        kind,
        source: Source::Archive { offset },
    });
    Ok((kind, platform))
}

#[cfg(test)]
mod tests;
