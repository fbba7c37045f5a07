//! PLACEHOLDER: builds the wire `Image` from an OCI index or manifest already in the store
//! (minimal: OCI/Docker media types by field shape, no media-type checks beyond layers').

use bramble_wire::image_ref::ImageRef;
use bramble_wire::objects::{Image, ImageConfig, ImageLayer, ImageVariant, LayerCompression};
use serde_json::Value;

use crate::store::{BlobStore, StoreError};

/// Largest manifest, index or config read.
const MAX_JSON: u64 = 4 << 20;

/// Why stored blobs do not make an image.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// A blob is missing or unreadable.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// Bad JSON or structure.
    #[error("{0}")]
    Bad(String),
}

fn bad(m: impl Into<String>) -> FormatError {
    FormatError::Bad(m.into())
}

fn json(store: &BlobStore, sha: &str) -> Result<Value, FormatError> {
    let b = store.read_small(sha, MAX_JSON)?;
    serde_json::from_slice(&b).map_err(|e| bad(format!("blob {sha} is not JSON: {e}")))
}

fn hex_of(digest: &str) -> Result<&str, FormatError> {
    digest
        .strip_prefix("sha256:")
        .filter(|h| bramble_artifact::is_sha256_hex(h))
        .ok_or_else(|| bad(format!("{digest:?} is not a sha256 digest")))
}

fn present(store: &BlobStore, d: &Value) -> Result<(String, u64), FormatError> {
    let digest = d["digest"]
        .as_str()
        .ok_or_else(|| bad("descriptor without digest"))?;
    let hex = hex_of(digest)?.to_string();
    let size = d["size"].as_u64().unwrap_or(0);
    let md = std::fs::metadata(store.path(&hex))
        .map_err(|_| FormatError::Store(StoreError::Missing(hex.clone())))?;
    if md.len() != size {
        return Err(bad(format!(
            "blob {hex}: {} bytes, the manifest says {size}",
            md.len()
        )));
    }
    Ok((hex, size))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn variant(
    store: &BlobStore,
    manifest_hex: &str,
    want: Option<bramble_wire::Arch>,
) -> Result<Option<ImageVariant>, FormatError> {
    let m = json(store, manifest_hex)?;
    let (config_hex, _) = present(store, &m["config"])?;
    let c = json(store, &config_hex)?;
    let arch = match want {
        Some(a) => a,
        None => match crate::platform::arch_of(
            c["os"].as_str().unwrap_or("linux"),
            c["architecture"].as_str().unwrap_or(""),
            c["variant"].as_str(),
        ) {
            Some(a) => a,
            None => return Ok(None),
        },
    };
    let mut layers = Vec::new();
    for l in m["layers"]
        .as_array()
        .ok_or_else(|| bad("manifest without layers"))?
    {
        let (sha256, size) = present(store, l)?;
        let mt = l["mediaType"].as_str().unwrap_or("");
        let compression = if mt.ends_with("gzip") {
            LayerCompression::Gzip
        } else if mt.ends_with("zstd") {
            LayerCompression::Zstd
        } else {
            LayerCompression::None
        };
        layers.push(ImageLayer {
            sha256,
            size,
            compression,
        });
    }
    let cfg = &c["config"];
    let config = ImageConfig {
        entrypoint: strings(&cfg["Entrypoint"]),
        cmd: strings(&cfg["Cmd"]),
        env: strings(&cfg["Env"])
            .into_iter()
            .map(|e| match e.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (e, String::new()),
            })
            .collect(),
        workdir: cfg["WorkingDir"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_string),
        user: cfg["User"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_string),
        exposed_ports: cfg["ExposedPorts"]
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default(),
    };
    Ok(Some(ImageVariant {
        arch,
        manifest_digest: format!("sha256:{manifest_hex}"),
        config_sha256: config_hex,
        config,
        layers,
    }))
}

/// Builds the wire image from the index or manifest blob `root_sha256` in `store`, checking that
/// every blob it names is present with the right size.
pub fn resolve_stored(
    reference: &ImageRef,
    root_sha256: &str,
    store: &BlobStore,
) -> Result<Image, FormatError> {
    let root = json(store, root_sha256)?;
    let mut variants = Vec::new();
    if let Some(ms) = root["manifests"].as_array() {
        for d in ms {
            let p = &d["platform"];
            let Some(arch) = crate::platform::arch_of(
                p["os"].as_str().unwrap_or(""),
                p["architecture"].as_str().unwrap_or(""),
                p["variant"].as_str(),
            ) else {
                continue;
            };
            let (hex, _) = present(store, d)?;
            if let Some(v) = variant(store, &hex, Some(arch))? {
                variants.push(v);
            }
        }
    } else if let Some(v) = variant(store, root_sha256, None)? {
        variants.push(v);
    }
    if variants.is_empty() {
        return Err(bad(format!(
            "image {}: no linux/arm64, linux/arm/v7, linux/arm/v6, linux/amd64 or linux/riscv64 variant",
            reference.normalized()
        )));
    }
    variants.sort_by_key(|v| v.arch);
    variants.dedup_by_key(|v| v.arch);
    Ok(Image {
        reference: reference.normalized(),
        digest: format!("sha256:{root_sha256}"),
        variants,
        ..Default::default()
    })
}
