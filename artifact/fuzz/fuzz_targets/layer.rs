//! Fuzzes the image layer unpacker (`bramble_artifact::layer`), both ways a worker uses it:
//! overlayfs format (`unpack_layer`: whiteouts become markers made by the caller, opaque
//! directories an xattr) and flatten (`apply_layer` over the layers below, whose whiteouts
//! delete). Input layout: `[selector] [layer tar...]`: bit 0 picks the way, bit 1 gzip.
//!
//! The flatten tree starts as a lower layer holding a directory, a file, a relative symlink and
//! an absolute symlink to `SANDBOX/outside` (as `/etc` would resolve on the host). Besides
//! "no panic":
//! - nothing is written, deleted or linked outside the layer's directory: `SANDBOX` holds only
//!   its own entries and `outside` only its untouched file, whatever symlinks lie in the way;
//! - whiteouts and opaque markers the caller is asked for are inside the layer's directory;
//! - overlay: on success the layer sits at its destination and no `.unpacking` is left; on
//!   error neither exists;
//! - no file under the layer is setuid or setgid or over the per-file limit, and everything
//!   is a directory, a regular file or a symlink (devices and fifos are skipped).
#![no_main]

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use bramble_artifact::Limits;
use bramble_artifact::layer::{
    Compression, LayerOptions, Whiteouts, apply_layer, unpack_layer, unpacking_dir,
};
use libfuzzer_sys::fuzz_target;

const OPTS: LayerOptions = LayerOptions {
    limits: Limits {
        max_entry_bytes: 64 << 10,
        max_total_bytes: 256 << 10,
        max_entries: 256,
    },
    keep_owners: false,
};

const SENTINEL: &[u8] = b"outside the layer\n";

fn sandbox() -> &'static Path {
    static S: OnceLock<PathBuf> = OnceLock::new();
    S.get_or_init(|| {
        let s = std::env::temp_dir().join(format!("bramble-fuzz-layer.{}", std::process::id()));
        let _ = fs::remove_dir_all(&s);
        fs::create_dir_all(s.join("outside")).unwrap();
        fs::write(s.join("outside/file"), SENTINEL).unwrap();
        s
    })
}

/// Records what the unpacker asks for; a whiteout is stood in for by an empty file (a real one
/// is a character device 0:0, which needs `mknod`).
struct Markers<'a> {
    root: &'a Path,
    asked: usize,
}

impl Whiteouts for Markers<'_> {
    fn whiteout(&mut self, path: &Path) -> io::Result<()> {
        assert!(
            path.starts_with(self.root),
            "whiteout outside the layer: {path:?}"
        );
        assert!(
            fs::symlink_metadata(path).is_err(),
            "whiteout over an existing {path:?}"
        );
        let parent = fs::symlink_metadata(path.parent().unwrap()).unwrap();
        assert!(parent.is_dir(), "whiteout under a non-directory: {path:?}");
        self.asked += 1;
        fs::write(path, b"")
    }

    fn opaque(&mut self, dir: &Path) -> io::Result<()> {
        assert!(
            dir.starts_with(self.root),
            "opaque marker outside the layer: {dir:?}"
        );
        assert!(fs::symlink_metadata(dir).unwrap().is_dir(), "{dir:?}");
        self.asked += 1;
        Ok(())
    }
}

fn walk(dir: &Path, out: &mut Vec<(PathBuf, fs::Metadata)>) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let m = fs::symlink_metadata(&p).unwrap();
        let is_dir = m.is_dir();
        out.push((p.clone(), m));
        if is_dir {
            walk(&p, out);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, tar)) = data.split_first() else {
        return;
    };
    let compression = if sel & 2 == 0 {
        Compression::None
    } else {
        Compression::Gzip
    };
    let base = sandbox();
    let layer = base.join("layer");
    for p in [layer.clone(), unpacking_dir(&layer)] {
        let _ = fs::remove_dir_all(&p);
        let _ = fs::remove_file(&p);
    }
    let overlay = sel & 1 == 0;
    let result = if overlay {
        let mut m = Markers {
            root: &unpacking_dir(&layer),
            asked: 0,
        };
        let r = unpack_layer(tar, compression, &layer, &OPTS, &mut m);
        let _ = m.asked;
        match &r {
            Ok(_) => {
                assert!(fs::symlink_metadata(&layer).unwrap().is_dir());
                assert!(fs::symlink_metadata(unpacking_dir(&layer)).is_err());
            }
            Err(_) => {
                assert!(
                    fs::symlink_metadata(&layer).is_err(),
                    "a failed layer was left"
                );
                assert!(
                    fs::symlink_metadata(unpacking_dir(&layer)).is_err(),
                    "a failed layer's .unpacking was left"
                );
            }
        }
        r
    } else {
        fs::create_dir_all(layer.join("etc/app")).unwrap();
        fs::write(layer.join("etc/app/conf"), b"lower\n").unwrap();
        symlink("etc/app", layer.join("rel")).unwrap();
        symlink(base.join("outside"), layer.join("abs")).unwrap();
        symlink(base.join("outside/file"), layer.join("etc/abs-file")).unwrap();
        apply_layer(tar, compression, &layer, &OPTS)
    };
    let _ = result.map(|s| {
        assert!(s.entries <= OPTS.limits.max_entries && s.bytes <= OPTS.limits.max_total_bytes)
    });

    // Nothing beside the layer, nothing in `outside` changed.
    let mut top: Vec<String> = fs::read_dir(base)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    assert!(
        top == ["layer", "outside"] || top == ["outside"],
        "the unpacker wrote beside the layer: {top:?}"
    );
    let mut outside = Vec::new();
    walk(&base.join("outside"), &mut outside);
    assert_eq!(
        outside.len(),
        1,
        "the unpacker wrote outside the layer: {outside:?}"
    );
    let (_, m) = &outside[0];
    assert!(
        m.is_file() && m.nlink() == 1,
        "the file outside was linked: {m:?}"
    );
    assert_eq!(fs::read(base.join("outside/file")).unwrap(), SENTINEL);

    if fs::symlink_metadata(&layer).is_err() {
        return;
    }
    let mut tree = Vec::new();
    walk(&layer, &mut tree);
    for (p, m) in &tree {
        let t = m.file_type();
        if t.is_file() {
            assert_eq!(
                m.mode() & 0o6000,
                0,
                "{p:?} is setuid or setgid: {:o}",
                m.mode()
            );
            assert!(
                m.len() <= OPTS.limits.max_entry_bytes,
                "{p:?}: {} bytes",
                m.len()
            );
        } else {
            assert!(t.is_dir() || t.is_symlink(), "{p:?}: {t:?}");
        }
    }
});
