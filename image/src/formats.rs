//! Image formats: OCI image index / manifest / config and Docker's manifest list v2 and
//! manifest v2 schema 2, parsed with serde_json into minimal structs (only the fields Bramble
//! uses), and the walk from a root blob (an index or a manifest) to a wire [`Image`].
//!
//! Supported media types:
//! - indexes: `application/vnd.oci.image.index.v1+json`,
//!   `application/vnd.docker.distribution.manifest.list.v2+json`;
//! - manifests: `application/vnd.oci.image.manifest.v1+json`,
//!   `application/vnd.docker.distribution.manifest.v2+json`;
//! - configs: `application/vnd.oci.image.config.v1+json`,
//!   `application/vnd.docker.container.image.v1+json`;
//! - layers: `application/vnd.oci.image.layer.v1.tar` (+`+gzip`, +`+zstd`),
//!   `application/vnd.docker.image.rootfs.diff.tar.gzip`.
//!
//! Refused with a message naming the media type and the fix: Docker schema 1 manifests, foreign
//! and non-distributable layers, anything else. Manifests and configs are limited to
//! [`MAX_MANIFEST_BYTES`].

use std::collections::{BTreeMap, HashSet};

use bramble_wire::Arch;
use bramble_wire::image_ref::ImageRef;
use bramble_wire::objects::{Image, ImageConfig, ImageLayer, ImageVariant, LayerCompression};
use serde::Deserialize;

use crate::platform::{arch_of, describe};
use crate::store::{BlobStore, StoreError};

/// Largest manifest, index or config accepted (4 MiB, as containerd).
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;

/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker manifest v2 schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// The `Accept` header of manifest requests: every supported index and manifest type.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json";

const SUPPORTED_PLATFORMS: &str =
    "linux/arm64, linux/arm/v7, linux/arm/v6, linux/amd64, linux/riscv64";

/// Why an image's blobs do not make a usable image.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// A media type Bramble does not run.
    #[error("{what} has media type {media_type}, which is not supported: {fix}")]
    Unsupported {
        /// What (`manifest sha256:…`, `layer 2 of linux/arm64`).
        what: String,
        /// The media type.
        media_type: String,
        /// What to do instead.
        fix: String,
    },
    /// Not valid JSON for its type, or a bad field.
    #[error("{what} is malformed: {reason}")]
    Malformed {
        /// What.
        what: String,
        /// Why.
        reason: String,
    },
    /// A descriptor announces more than [`MAX_MANIFEST_BYTES`].
    #[error(
        "{what} is {size} bytes, over the {MAX_MANIFEST_BYTES}-byte limit of manifests and configs"
    )]
    TooLarge {
        /// What.
        what: String,
        /// Its announced size.
        size: u64,
    },
    /// A blob the image needs is not in the store (import: not uploaded).
    #[error("{what} (sha256:{sha256}) is missing: upload it with the image (bramble image import)")]
    Missing {
        /// What.
        what: String,
        /// Its digest.
        sha256: String,
    },
    /// A stored blob has another size than its descriptor.
    #[error("{what} (sha256:{sha256}) is {actual} bytes, its descriptor says {expected}")]
    SizeMismatch {
        /// What.
        what: String,
        /// Its digest.
        sha256: String,
        /// Descriptor's size.
        expected: u64,
        /// Stored size.
        actual: u64,
    },
    /// No variant for any platform Bramble runs.
    #[error(
        "no variant for a platform Bramble runs (the image has {found}; Bramble runs {SUPPORTED_PLATFORMS}): use an image built for one of them"
    )]
    NoVariant {
        /// The platforms the image has.
        found: String,
    },
    /// Reading a stored blob failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A content descriptor (the fields used).
#[derive(Debug, Clone, Deserialize)]
pub struct Descriptor {
    /// Media type (may be missing in hand-made OCI layouts).
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    /// `sha256:…`.
    pub digest: String,
    /// Bytes.
    pub size: u64,
    /// Platform (index entries).
    #[serde(default)]
    pub platform: Option<Platform>,
}

/// An index entry's platform.
#[derive(Debug, Clone, Deserialize)]
pub struct Platform {
    /// `amd64`, `arm64`, `arm`, …
    pub architecture: String,
    /// `linux`, …
    pub os: String,
    /// `v7`, `v8`, …
    #[serde(default)]
    pub variant: Option<String>,
}

#[derive(Deserialize)]
struct Probe {
    #[serde(rename = "schemaVersion", default)]
    schema_version: Option<u64>,
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<serde_json::Value>,
    #[serde(default)]
    layers: Option<serde_json::Value>,
    #[serde(default)]
    config: Option<serde_json::Value>,
    #[serde(default, rename = "fsLayers")]
    fs_layers: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct IndexJson {
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct ManifestJson {
    config: Descriptor,
    layers: Vec<Descriptor>,
}

#[derive(Deserialize, Default)]
struct ConfigJson {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    variant: Option<String>,
    #[serde(default)]
    config: Option<ConfigInner>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct ConfigInner {
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
}

/// A parsed root or manifest document.
#[derive(Debug, Clone)]
pub enum Document {
    /// An OCI index or Docker manifest list: its entries.
    Index(Vec<Descriptor>),
    /// A manifest: its config and layers.
    Manifest(Manifest),
}

/// A parsed image manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// Config blob's sha256 hex.
    pub config_sha256: String,
    /// Config blob's size.
    pub config_size: u64,
    /// Layers, bottom first.
    pub layers: Vec<ImageLayer>,
}

/// The sha256 hex of a `sha256:<hex>` digest.
pub fn digest_hex<'a>(what: &str, digest: &'a str) -> Result<&'a str, FormatError> {
    match digest.strip_prefix("sha256:") {
        Some(h) if bramble_artifact::is_sha256_hex(h) => Ok(h),
        _ => Err(FormatError::Malformed {
            what: what.to_string(),
            reason: format!(
                "digest {digest:?} is not \"sha256:\" + 64 lowercase hex characters (other algorithms are not supported)"
            ),
        }),
    }
}

fn unsupported(what: &str, media_type: &str) -> FormatError {
    let fix = match media_type {
        "application/vnd.docker.distribution.manifest.v1+json"
        | "application/vnd.docker.distribution.manifest.v1+prettyjws" => {
            "Docker schema 1 manifests are deprecated and unsupported; re-push the image with a current Docker or skopeo (`skopeo copy --format v2s2 ...`) to convert it"
        }
        m if m.contains("foreign") || m.contains("nondistributable") => {
            "foreign (non-distributable) layers are not served by registries (Windows base images); use a Linux image with ordinary layers"
        }
        m if m.contains("encrypted") => {
            "encrypted layers are not supported; push an unencrypted image"
        }
        _ => {
            "Bramble runs OCI and Docker v2 images (index/manifest list, manifest, tar / tar+gzip / tar+zstd layers); convert it with `skopeo copy --format oci ...`"
        }
    };
    FormatError::Unsupported {
        what: what.to_string(),
        media_type: if media_type.is_empty() {
            "(none)".to_string()
        } else {
            media_type.to_string()
        },
        fix: fix.to_string(),
    }
}

fn malformed(what: &str, e: impl std::fmt::Display) -> FormatError {
    FormatError::Malformed {
        what: what.to_string(),
        reason: e.to_string(),
    }
}

/// Parses an index or manifest. `content_type` (the registry's `Content-Type`, or the parent
/// descriptor's media type) is used when the document has no `mediaType` field.
pub fn parse_document(
    what: &str,
    bytes: &[u8],
    content_type: Option<&str>,
) -> Result<Document, FormatError> {
    if bytes.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(FormatError::TooLarge {
            what: what.to_string(),
            size: bytes.len() as u64,
        });
    }
    let probe: Probe = serde_json::from_slice(bytes).map_err(|e| malformed(what, e))?;
    let media_type = probe
        .media_type
        .clone()
        .filter(|m| !m.is_empty())
        .or_else(|| {
            content_type
                .map(|c| c.split(';').next().unwrap_or("").trim().to_string())
                .filter(|c| {
                    !c.is_empty() && c != "application/json" && c != "application/octet-stream"
                })
        });
    if probe.schema_version == Some(1) || probe.fs_layers.is_some() {
        return Err(unsupported(
            what,
            media_type
                .as_deref()
                .unwrap_or("application/vnd.docker.distribution.manifest.v1+json"),
        ));
    }
    let is_index = match media_type.as_deref() {
        Some(OCI_INDEX | DOCKER_LIST) => true,
        Some(OCI_MANIFEST | DOCKER_MANIFEST) => false,
        Some(m) => return Err(unsupported(what, m)),
        None if probe.manifests.is_some() => true,
        None if probe.layers.is_some() && probe.config.is_some() => false,
        None => {
            return Err(malformed(
                what,
                "neither an index (\"manifests\") nor a manifest (\"config\" and \"layers\")",
            ));
        }
    };
    if is_index {
        let ix: IndexJson = serde_json::from_slice(bytes).map_err(|e| malformed(what, e))?;
        for d in &ix.manifests {
            digest_hex(what, &d.digest)?;
        }
        return Ok(Document::Index(ix.manifests));
    }
    let m: ManifestJson = serde_json::from_slice(bytes).map_err(|e| malformed(what, e))?;
    let config_what = format!("config of {what}");
    match m.config.media_type.as_str() {
        OCI_CONFIG | DOCKER_CONFIG | "" => {}
        other => return Err(unsupported(&config_what, other)),
    }
    let config_sha256 = digest_hex(&config_what, &m.config.digest)?.to_string();
    if m.config.size > MAX_MANIFEST_BYTES {
        return Err(FormatError::TooLarge {
            what: config_what,
            size: m.config.size,
        });
    }
    let mut layers = Vec::with_capacity(m.layers.len());
    for (i, l) in m.layers.iter().enumerate() {
        let lw = format!("layer {} of {what}", i + 1);
        let compression = match l.media_type.as_str() {
            "application/vnd.oci.image.layer.v1.tar" => LayerCompression::None,
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip" => LayerCompression::Gzip,
            "application/vnd.oci.image.layer.v1.tar+zstd" => LayerCompression::Zstd,
            other => return Err(unsupported(&lw, other)),
        };
        layers.push(ImageLayer {
            sha256: digest_hex(&lw, &l.digest)?.to_string(),
            size: l.size,
            compression,
        });
    }
    Ok(Document::Manifest(Manifest {
        config_sha256,
        config_size: m.config.size,
        layers,
    }))
}

/// A parsed config: its platform and the defaults a pod uses.
#[derive(Debug, Clone)]
pub struct Config {
    /// `os`.
    pub os: String,
    /// `architecture`.
    pub architecture: String,
    /// `variant`.
    pub variant: Option<String>,
    /// Entrypoint, Cmd, Env, WorkingDir, User, ExposedPorts.
    pub config: ImageConfig,
}

/// Parses an OCI or Docker image config.
pub fn parse_config(what: &str, bytes: &[u8]) -> Result<Config, FormatError> {
    if bytes.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(FormatError::TooLarge {
            what: what.to_string(),
            size: bytes.len() as u64,
        });
    }
    let c: ConfigJson = serde_json::from_slice(bytes).map_err(|e| malformed(what, e))?;
    let inner = c.config.unwrap_or_default();
    let env = inner
        .env
        .unwrap_or_default()
        .into_iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (kv, String::new()),
        })
        .collect();
    Ok(Config {
        os: c.os,
        architecture: c.architecture,
        variant: c.variant.filter(|v| !v.is_empty()),
        config: ImageConfig {
            entrypoint: inner.entrypoint.unwrap_or_default(),
            cmd: inner.cmd.unwrap_or_default(),
            env,
            workdir: inner.working_dir.filter(|w| !w.is_empty()),
            user: inner.user.filter(|u| !u.is_empty()),
            exposed_ports: inner
                .exposed_ports
                .map(|p| p.into_keys().collect())
                .unwrap_or_default(),
        },
    })
}

/// What kind of small blob [`Blobs::small`] fetches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmallKind {
    /// A manifest (a registry serves it under `/manifests/`).
    Manifest,
    /// A config (under `/blobs/`).
    Config,
}

/// Where the walk gets blobs: the store (import) or a registry (pull).
pub trait Blobs {
    /// Its error.
    type Error: From<FormatError>;
    /// The verified bytes of a manifest or config (`size` ≤ [`MAX_MANIFEST_BYTES`]), and its
    /// content type if known.
    fn small(
        &mut self,
        what: &str,
        kind: SmallKind,
        sha256: &str,
        size: u64,
    ) -> Result<(Vec<u8>, Option<String>), Self::Error>;
    /// Makes sure every layer is held (each once, in order).
    fn layers(&mut self, layers: &[(String, ImageLayer)]) -> Result<(), Self::Error>;
}

/// One variant from its manifest: fetches and parses the config; `want` is the index entry's
/// platform, else the config's decides (`None` when Bramble does not run it).
fn variant_of<B: Blobs>(
    blobs: &mut B,
    found: &mut Vec<String>,
    manifest_sha: &str,
    manifest: Manifest,
    want: Option<Arch>,
) -> Result<Option<ImageVariant>, B::Error> {
    let cwhat = format!("config sha256:{}", manifest.config_sha256);
    let (cbytes, _) = blobs.small(
        &cwhat,
        SmallKind::Config,
        &manifest.config_sha256,
        manifest.config_size,
    )?;
    let cfg = parse_config(&cwhat, &cbytes)?;
    found.push(describe(&cfg.os, &cfg.architecture, cfg.variant.as_deref()));
    let Some(arch) = want.or_else(|| arch_of(&cfg.os, &cfg.architecture, cfg.variant.as_deref()))
    else {
        return Ok(None);
    };
    Ok(Some(ImageVariant {
        arch,
        manifest_digest: format!("sha256:{manifest_sha}"),
        config_sha256: manifest.config_sha256,
        config: cfg.config,
        layers: manifest.layers,
    }))
}

/// Builds the wire [`Image`] of `reference` from its root document (already fetched and
/// verified, `root_sha256` its digest): every supported linux variant's manifest and config
/// through `blobs.small`, then every layer through `blobs.layers`. Variants sorted by arch;
/// platforms Bramble does not run are skipped; none left is [`FormatError::NoVariant`].
pub fn resolve<B: Blobs>(
    reference: &ImageRef,
    root_sha256: &str,
    root: &[u8],
    root_content_type: Option<&str>,
    blobs: &mut B,
) -> Result<Image, B::Error> {
    let root_what = format!("manifest sha256:{root_sha256}");
    let doc = parse_document(&root_what, root, root_content_type)?;
    let mut variants: Vec<ImageVariant> = Vec::new();
    let mut found: Vec<String> = Vec::new();
    match doc {
        Document::Manifest(m) => {
            if let Some(v) = variant_of(blobs, &mut found, root_sha256, m, None)? {
                variants.push(v);
            }
        }
        Document::Index(entries) => {
            for (i, d) in entries.iter().enumerate() {
                let what = format!("manifest {} of index sha256:{root_sha256}", i + 1);
                let want = match &d.platform {
                    Some(p) => match arch_of(&p.os, &p.architecture, p.variant.as_deref()) {
                        Some(a) => Some(a),
                        None => {
                            found.push(describe(&p.os, &p.architecture, p.variant.as_deref()));
                            continue;
                        }
                    },
                    None => None,
                };
                if want.is_some_and(|a| variants.iter().any(|v| v.arch == a)) {
                    continue;
                }
                match d.media_type.as_str() {
                    OCI_MANIFEST | DOCKER_MANIFEST | "" => {}
                    OCI_INDEX | DOCKER_LIST => {
                        return Err(FormatError::Unsupported {
                            what,
                            media_type: d.media_type.clone(),
                            fix: "nested indexes are not supported; push a flat multi-arch index"
                                .into(),
                        }
                        .into());
                    }
                    other => return Err(unsupported(&what, other).into()),
                }
                let sha = digest_hex(&what, &d.digest)?.to_string();
                if d.size > MAX_MANIFEST_BYTES {
                    return Err(FormatError::TooLarge { what, size: d.size }.into());
                }
                let what = format!("manifest sha256:{sha}");
                let (bytes, ct) = blobs.small(&what, SmallKind::Manifest, &sha, d.size)?;
                let hint = ct.or_else(|| Some(d.media_type.clone()).filter(|m| !m.is_empty()));
                let m = match parse_document(&what, &bytes, hint.as_deref())? {
                    Document::Manifest(m) => m,
                    Document::Index(_) => {
                        return Err(FormatError::Unsupported {
                            what,
                            media_type: OCI_INDEX.into(),
                            fix: "nested indexes are not supported; push a flat multi-arch index"
                                .into(),
                        }
                        .into());
                    }
                };
                if let Some(v) = variant_of(blobs, &mut found, &sha, m, want)?
                    && !variants.iter().any(|x| x.arch == v.arch)
                {
                    variants.push(v);
                }
            }
        }
    }
    if variants.is_empty() {
        found.dedup();
        return Err(FormatError::NoVariant {
            found: if found.is_empty() {
                "no platforms".into()
            } else {
                found.join(", ")
            },
        }
        .into());
    }
    variants.sort_by_key(|v| v.arch);
    let mut seen = HashSet::new();
    let mut layers = Vec::new();
    for v in &variants {
        let plat = crate::platform::platform_name(v.arch);
        for (i, l) in v.layers.iter().enumerate() {
            if seen.insert(l.sha256.clone()) {
                layers.push((format!("layer {} of {plat}", i + 1), l.clone()));
            }
        }
    }
    blobs.layers(&layers)?;
    Ok(Image {
        reference: reference.normalized(),
        digest: format!("sha256:{root_sha256}"),
        variants,
        ..Image::default()
    })
}

/// Reads from the store, checking presence and sizes (import).
struct Stored<'a>(&'a BlobStore);

impl Blobs for Stored<'_> {
    type Error = FormatError;

    fn small(
        &mut self,
        what: &str,
        _kind: SmallKind,
        sha256: &str,
        size: u64,
    ) -> Result<(Vec<u8>, Option<String>), FormatError> {
        check_stored(self.0, what, sha256, size)?;
        Ok((self.0.read_small(sha256, MAX_MANIFEST_BYTES)?, None))
    }

    fn layers(&mut self, layers: &[(String, ImageLayer)]) -> Result<(), FormatError> {
        for (what, l) in layers {
            check_stored(self.0, what, &l.sha256, l.size)?;
        }
        Ok(())
    }
}

fn check_stored(store: &BlobStore, what: &str, sha256: &str, size: u64) -> Result<(), FormatError> {
    match store.size(sha256) {
        None => Err(FormatError::Missing {
            what: what.to_string(),
            sha256: sha256.to_string(),
        }),
        Some(actual) if actual != size => Err(FormatError::SizeMismatch {
            what: what.to_string(),
            sha256: sha256.to_string(),
            expected: size,
            actual,
        }),
        Some(_) => Ok(()),
    }
}

/// Builds the wire [`Image`] (meta default, `pulled_ms` 0) from an index or manifest blob
/// already in `store`, checking that every blob it names is present with the right size. Used by
/// `bramble image import`. Messages do not repeat the reference: callers prefix `image REF: `.
pub fn resolve_stored(
    reference: &ImageRef,
    root_sha256: &str,
    store: &BlobStore,
) -> Result<Image, FormatError> {
    let root = match store.read_small(root_sha256, MAX_MANIFEST_BYTES) {
        Err(StoreError::Missing(s)) => {
            return Err(FormatError::Missing {
                what: "the image's root manifest".into(),
                sha256: s,
            });
        }
        r => r?,
    };
    resolve(reference, root_sha256, &root, None, &mut Stored(store))
}

/// Every blob an image uses (sha256 hex): its digest, each variant's manifest, config and layers.
pub fn blobs_of(image: &Image) -> Vec<String> {
    let mut out = Vec::new();
    let mut push = |s: &str| {
        let s = s.strip_prefix("sha256:").unwrap_or(s).to_string();
        if !out.contains(&s) {
            out.push(s);
        }
    };
    push(&image.digest);
    for v in &image.variants {
        push(&v.manifest_digest);
        push(&v.config_sha256);
        for l in &v.layers {
            push(&l.sha256);
        }
    }
    out
}

#[cfg(test)]
mod tests;
