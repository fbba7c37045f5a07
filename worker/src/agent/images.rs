//! Images on the node: the layers of the variant a pod's image has for this node's arch,
//! pulled by sha256 through the artifact machinery ([`super::artifacts::ArtifactCache`]),
//! verified and unpacked once each into `<state>/layers/<sha256>/` (overlayfs format, see
//! [`bramble_artifact::layer`]); a shared layer serves every image and pod that has it.
//!
//! - With overlayfs (found at startup in `/proc/filesystems`), a pod's root is an overlay of its
//!   layers (top first) under a writable upper of its own ([`crate::runtime::PodImage`]).
//! - Without it, the layer blobs are kept verified (`<sha256>.blob`) and applied in order
//!   (whiteouts delete, opaque markers empty their directory) into
//!   `<state>/images/<manifest sha256>/`, shared read-only by the image's pods.
//! - GC: layers and trees no assigned pod uses are removed, least recently used first, when the
//!   state disk is over `--image-gc-high` percent used, until it is under `--image-gc-low`.
//!   Pods are never evicted for it. A layer that does not fit reports "image storage full".

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use bramble_artifact::Limits;
use bramble_artifact::layer::{self, Compression, LayerOptions};
use bramble_wire::Arch;
use bramble_wire::msg::Assignment;
use bramble_wire::objects::{Image, ImageVariant, LayerCompression, Pod};

/// The platform string of an arch (`linux/arm/v7`).
pub fn platform(arch: Arch) -> &'static str {
    match arch {
        Arch::Aarch64 => "linux/arm64",
        Arch::Armv7 => "linux/arm/v7",
        Arch::Armv6 => "linux/arm/v6",
        Arch::X86_64 => "linux/amd64",
        Arch::Riscv64 => "linux/riscv64",
        Arch::Mcu => "mcu",
    }
}

/// The image and variant pod `pod` runs here; `None` for a pod without an image; `Err` with
/// the pod's message when it cannot run here.
pub fn image_of<'a>(
    pod: &Pod,
    a: &'a Assignment,
    arch: Arch,
) -> Option<Result<(&'a Image, &'a ImageVariant), String>> {
    let reference = pod.spec.image.as_deref()?;
    let Some(norm) = bramble_wire::image_ref::normalize(reference) else {
        return Some(Err(format!(
            "image {reference:?} is not a valid reference (expected [HOST[:PORT]/]NAME[:TAG][@sha256:HEX])"
        )));
    };
    let Some(img) = a.images.iter().find(|i| i.reference == norm) else {
        return Some(Err(format!(
            "waiting for image {reference}: not in this node's assignment yet (the master pulls it first)"
        )));
    };
    Some(match img.variant(arch) {
        Some(v)
            if v.layers
                .iter()
                .all(|l| bramble_artifact::is_sha256_hex(&l.sha256)) =>
        {
            Ok((img, v))
        }
        Some(_) => Err(format!(
            "image {reference}: a layer digest is not a sha256; pull the image again"
        )),
        None => Err(format!(
            "no {} variant of image {reference}: build one (docker buildx --platform {}) or pin the pod to other nodes",
            platform(arch),
            platform(arch)
        )),
    })
}

/// The overlay's lowers: the layers top first, each once (overlayfs refuses a directory twice;
/// a layer repeated higher up already has the whole effect of its lower copies).
pub fn lowers(v: &ImageVariant) -> Vec<String> {
    let mut seen = HashSet::new();
    v.layers
        .iter()
        .rev()
        .filter(|l| seen.insert(l.sha256.as_str()))
        .map(|l| l.sha256.clone())
        .collect()
}

/// The manifest digest's hex (the flattened tree's name).
pub fn manifest_hex(v: &ImageVariant) -> &str {
    v.manifest_digest
        .strip_prefix("sha256:")
        .unwrap_or(&v.manifest_digest)
}

/// The artifact crate's compression for a wire one.
pub fn compression(c: LayerCompression) -> Compression {
    match c {
        LayerCompression::None => Compression::None,
        LayerCompression::Gzip => Compression::Gzip,
        LayerCompression::Zstd => Compression::Zstd,
    }
}

/// How far a layer may expand: 100 times its compressed size plus 256 MiB (real layers expand
/// 2–10 times; a gzip bomb of zeros a thousand times), at most 8 GiB.
pub fn max_expanded(compressed: u64) -> u64 {
    compressed
        .saturating_mul(100)
        .saturating_add(256 << 20)
        .min(8 << 30)
}

/// Bounds on one layer of `compressed` bytes: [`max_expanded`], and never more than the disk
/// has free.
pub fn layer_limits(free_bytes: Option<u64>, compressed: u64) -> Limits {
    let cap = max_expanded(compressed);
    let total = free_bytes.map_or(cap, |f| f.min(cap));
    Limits {
        max_entry_bytes: total,
        max_total_bytes: total,
        max_entries: 1_000_000,
    }
}

/// Whether an I/O error message is a full disk.
pub fn storage_full(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull || e.kind() == std::io::ErrorKind::QuotaExceeded
}

/// "image storage full: ..." for a layer that did not fit.
pub fn storage_full_message(reference: &str, what: &str, dir: &Path) -> String {
    format!(
        "image storage full: {what} of image {reference} does not fit on the state disk ({}); unused layers were collected first: free space there or remove images with bramble image rm",
        dir.display()
    )
}

/// The verify-and-unpack thread's work for a layer: hash `<sha>.partial`, then (overlay)
/// unpack it into `<sha>/` and drop it, or (flatten) keep it as `<sha>.blob`. A hash mismatch
/// discards the file; a full disk keeps the verified blob (a retry does not download again), any
/// other unpack error (a bomb, an unsafe entry) discards it too.
pub fn verify_and_unpack_layer(
    dir: &Path,
    sha256: &str,
    reference: &str,
    c: LayerCompression,
    overlay: bool,
) -> Result<(), String> {
    let partial = dir.join(format!("{sha256}.partial"));
    let short = &sha256[..12.min(sha256.len())];
    let got = bramble_artifact::sha256_file(&partial)
        .map_err(|e| format!("image {reference}: reading {}: {e}", partial.display()))?;
    if got != sha256 {
        let _ = fs::remove_file(&partial);
        return Err(format!(
            "image {reference}: layer {short}'s pulled bytes hash to {got}, not its digest; discarded"
        ));
    }
    if !overlay {
        let blob = dir.join(format!("{sha256}.blob"));
        fs::rename(&partial, &blob).map_err(|e| format!("rename to {}: {e}", blob.display()))?;
        return Ok(());
    }
    let free = crate::sys::layers::disk_usage(dir).ok().map(|u| u.free);
    let f = fs::File::open(&partial).map_err(|e| format!("open {}: {e}", partial.display()))?;
    let compressed = f.metadata().map(|m| m.len()).unwrap_or(0);
    let opts = LayerOptions {
        limits: layer_limits(free, compressed),
        keep_owners: crate::sys::process::is_root(),
    };
    let mut w = crate::sys::layers::OverlayWhiteouts;
    match layer::unpack_layer(
        std::io::BufReader::new(f),
        compression(c),
        &dir.join(sha256),
        &opts,
        &mut w,
    ) {
        Ok(_) => {
            let _ = fs::remove_file(&partial);
            if let Ok(d) = fs::File::open(dir) {
                let _ = d.sync_all();
            }
            Ok(())
        }
        // A full disk may pass: keep the verified blob, so a retry does not download it again.
        Err(bramble_artifact::TarError::Io { err, .. }) if storage_full(&err) => Err(
            storage_full_message(reference, &format!("layer {short}"), dir),
        ),
        // Anything else is in the layer's bytes (fixed by its digest): nothing of it is kept.
        Err(e) => {
            let _ = fs::remove_file(&partial);
            Err(format!("image {reference}: layer {short}: {e}"))
        }
    }
}

/// Applies the layer blobs of `v` (all `<layers>/<sha>.blob`) into `<images>/<manifest>/`,
/// through `<manifest>.tmp/`, and adds the mount points the runtime needs (as for artifacts).
pub fn flatten_image(
    layers: &Path,
    images: &Path,
    reference: &str,
    v: &ImageVariant,
) -> Result<(), String> {
    let hex = manifest_hex(v);
    let tmp = images.join(format!("{hex}.tmp"));
    let tree = images.join(hex);
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).map_err(|e| format!("mkdir {}: {e}", tmp.display()))?;
    let free = crate::sys::layers::disk_usage(images).ok().map(|u| u.free);
    let opts = LayerOptions {
        limits: layer_limits(free, v.size()),
        keep_owners: crate::sys::process::is_root(),
    };
    let r = (|| {
        for l in &v.layers {
            let blob = layers.join(format!("{}.blob", l.sha256));
            let f = fs::File::open(&blob).map_err(|e| format!("open {}: {e}", blob.display()))?;
            layer::apply_layer(
                std::io::BufReader::new(f),
                compression(l.compression),
                &tmp,
                &opts,
            )
            .map_err(|e| match &e {
                bramble_artifact::TarError::Io { err, .. } if storage_full(err) => {
                    storage_full_message(reference, "the flattened tree", images)
                }
                _ => format!("image {reference}: layer {}: {e}", &l.sha256[..12]),
            })?;
        }
        super::artifacts::add_mount_points(&tmp, &format!("image {reference}"))?;
        fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .map_err(|e| format!("chmod {}: {e}", tmp.display()))?;
        fs::rename(&tmp, &tree).map_err(|e| format!("rename to {}: {e}", tree.display()))
    })();
    if r.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    r
}

/// What the image GC may remove: entries of the layers and images directories that no
/// assigned pod's image uses and no pull or flatten is working on.
pub fn gc_candidates(
    entries: &[(String, SystemTime)],
    used: &HashSet<String>,
    busy: &HashSet<String>,
    last_used: &HashMap<String, SystemTime>,
) -> Vec<String> {
    let mut c: Vec<(SystemTime, &String)> = entries
        .iter()
        .filter_map(|(name, mtime)| {
            let key = name
                .strip_suffix(".blob")
                .or_else(|| name.strip_suffix(".partial"))
                .unwrap_or(name);
            if !bramble_artifact::is_sha256_hex(key) || used.contains(key) || busy.contains(key) {
                return None;
            }
            Some((*last_used.get(key).unwrap_or(mtime), name))
        })
        .collect();
    // Least recently used first; ties by name (a stable order).
    c.sort();
    c.into_iter().map(|(_, n)| n.clone()).collect()
}

/// Whether the GC should run: the disk is at or over `high` percent used.
pub fn gc_due(used_percent: u64, high: u8) -> bool {
    used_percent >= u64::from(high)
}

/// The layers (sha256) and flattened trees (manifest sha256) the assigned pods use.
pub fn used_by(desired: &Assignment, arch: Arch) -> HashSet<String> {
    let mut out = HashSet::new();
    for p in &desired.pods {
        if let Some(Ok((_, v))) = image_of(p, desired, arch) {
            out.extend(v.layers.iter().map(|l| l.sha256.clone()));
            out.insert(manifest_hex(v).to_string());
        }
    }
    out
}

/// Entries of `dir` with their modification time.
pub fn list(dir: &Path) -> Vec<(String, SystemTime)> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.flatten()
        .map(|e| {
            let t = e
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            (e.file_name().to_string_lossy().into_owned(), t)
        })
        .collect()
}

/// Removes a layer or tree entry.
pub fn remove_entry(dir: &Path, name: &str) -> std::io::Result<()> {
    let p: PathBuf = dir.join(name);
    if p.symlink_metadata()?.is_dir() {
        fs::remove_dir_all(&p)
    } else {
        fs::remove_file(&p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn gc_takes_unused_entries_least_recently_used_first() {
        let h = |c: char| c.to_string().repeat(64);
        let t = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        let entries = vec![
            (h('a'), t(10)),
            (format!("{}.blob", h('b')), t(5)),
            (h('c'), t(1)),
            (h('d'), t(20)),
            ("lost+found".to_string(), t(0)),
            (format!("{}.partial", h('e')), t(0)),
        ];
        let used: HashSet<String> = [h('c')].into();
        let busy: HashSet<String> = [h('e')].into();
        // `d` was used a moment ago (by a pod since removed): it goes last.
        let last: HashMap<String, SystemTime> = [(h('d'), t(100)), (h('a'), t(50))].into();
        assert_eq!(
            gc_candidates(&entries, &used, &busy, &last),
            vec![format!("{}.blob", h('b')), h('a'), h('d')]
        );
        assert!(gc_due(85, 85) && !gc_due(84, 85));
    }

    #[test]
    fn lowers_are_top_first_and_each_once() {
        let layer = |c: char| bramble_wire::objects::ImageLayer {
            sha256: c.to_string().repeat(64),
            size: 1,
            compression: LayerCompression::Gzip,
        };
        let v = ImageVariant {
            arch: Arch::X86_64,
            manifest_digest: String::new(),
            config_sha256: String::new(),
            config: Default::default(),
            layers: vec![layer('a'), layer('e'), layer('b'), layer('e')],
        };
        let h = |c: char| c.to_string().repeat(64);
        assert_eq!(lowers(&v), vec![h('e'), h('b'), h('a')]);
    }

    #[test]
    fn limits_follow_the_free_space() {
        assert_eq!(
            layer_limits(Some(1 << 20), 1 << 30).max_total_bytes,
            1 << 20
        );
        assert_eq!(layer_limits(None, 1 << 30).max_total_bytes, 8 << 30);
        assert_eq!(
            layer_limits(Some(1 << 40), 1 << 30).max_total_bytes,
            8 << 30
        );
        // An 8 MiB gzip bomb stops at 1056 MiB, a 10 MiB layer may hold 1256 MiB.
        assert_eq!(layer_limits(None, 8 << 20).max_total_bytes, 1056 << 20);
        assert_eq!(max_expanded(10 << 20), 1256 << 20);
    }
}
