//! Fuzzes the artifact tarball checker (what the master runs on an upload) and the extractor
//! (what a worker runs to make a pod's root filesystem), plain and gzip, over arbitrary bytes.
//!
//! Each input is checked, then extracted into `SANDBOX/root`, beside `SANDBOX/outside` which
//! holds one file. Besides "no panic":
//! - the extractor stays inside the root: afterwards `SANDBOX` holds only `root` and `outside`,
//!   `outside` only its untouched file (same content, one link);
//! - what lies under the root (walked without following symlinks) is only directories, regular
//!   files and symlinks; no file is setuid or setgid, none is over the per-file limit, their
//!   sizes (each inode once) add up to no more than the summary counted; every hard-linked file
//!   has all of its links under the root; no relative symlink climbs above the root;
//! - when both accept the tarball they count the same entries and bytes, within the limits.
#![no_main]

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;

use bramble_artifact::{Limits, check, unpack};
use libfuzzer_sys::fuzz_target;

const LIMITS: Limits = Limits {
    max_entry_bytes: 64 << 10,
    max_total_bytes: 256 << 10,
    max_entries: 256,
};

const SENTINEL: &[u8] = b"outside the root\n";

/// This process's sandbox (removed by the next run of the same PID, or by hand).
fn sandbox() -> &'static Path {
    static S: OnceLock<PathBuf> = OnceLock::new();
    S.get_or_init(|| {
        let s = std::env::temp_dir().join(format!("bramble-fuzz-tar.{}", std::process::id()));
        let _ = fs::remove_dir_all(&s);
        fs::create_dir_all(s.join("outside")).unwrap();
        fs::write(s.join("outside/file"), SENTINEL).unwrap();
        s
    })
}

/// Everything under `dir`, symlinks not followed, as (path relative to `dir`, metadata).
fn walk(dir: &Path, rel: &Path, out: &mut Vec<(PathBuf, fs::Metadata)>) {
    for e in fs::read_dir(dir.join(rel)).unwrap() {
        let e = e.unwrap();
        let p = rel.join(e.file_name());
        let m = fs::symlink_metadata(dir.join(&p)).unwrap();
        let is_dir = m.is_dir();
        out.push((p.clone(), m));
        if is_dir {
            walk(dir, &p, out);
        }
    }
}

/// Whether the relative symlink at `link` (relative to the root) pointing at `target` climbs
/// above the root.
fn escapes(link: &Path, target: &Path) -> bool {
    let mut depth = link.parent().map_or(0, |p| p.components().count()) as i64;
    for c in target.components() {
        match c {
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return true;
                }
            }
            Component::Normal(_) => depth += 1,
            _ => {}
        }
    }
    false
}

fuzz_target!(|data: &[u8]| {
    let checked = check(data, &LIMITS);
    let base = sandbox();
    let root = base.join("root");
    let _ = fs::remove_dir_all(&root);
    fs::create_dir(&root).unwrap();
    let unpacked = unpack(data, &root, &LIMITS);

    // Nothing outside the root.
    let mut top: Vec<String> = fs::read_dir(base)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    assert_eq!(
        top,
        ["outside", "root"],
        "the extractor wrote beside the root"
    );
    let mut outside = Vec::new();
    walk(base, Path::new("outside"), &mut outside);
    assert_eq!(
        outside.len(),
        1,
        "the extractor wrote outside the root: {outside:?}"
    );
    let (_, m) = &outside[0];
    assert!(
        m.is_file() && m.nlink() == 1,
        "the file outside the root was linked: {m:?}"
    );
    assert_eq!(fs::read(base.join("outside/file")).unwrap(), SENTINEL);

    // What is under the root.
    let mut tree = Vec::new();
    walk(&root, Path::new(""), &mut tree);
    let mut inodes: HashMap<(u64, u64), (u64, u64, u64)> = HashMap::new();
    for (p, m) in &tree {
        let t = m.file_type();
        if t.is_symlink() {
            let target = fs::read_link(root.join(p)).unwrap();
            assert!(
                target.is_absolute() || !escapes(p, &target),
                "symlink {p:?} -> {target:?} climbs above the root"
            );
        } else if t.is_file() {
            assert_eq!(
                m.mode() & 0o6000,
                0,
                "{p:?} is setuid or setgid: {:o}",
                m.mode()
            );
            assert!(
                m.len() <= LIMITS.max_entry_bytes,
                "{p:?}: {} bytes",
                m.len()
            );
            let seen = inodes
                .entry((m.dev(), m.ino()))
                .or_insert((0, m.nlink(), m.len()));
            seen.0 += 1;
        } else {
            assert!(
                t.is_dir(),
                "{p:?} is neither a file, a directory nor a symlink: {t:?}"
            );
        }
    }
    for ((_, ino), (links, nlink, _)) in &inodes {
        assert_eq!(links, nlink, "inode {ino} has links outside the root");
    }

    if let Ok(s) = &checked {
        assert!(
            s.entries <= LIMITS.max_entries && s.bytes <= LIMITS.max_total_bytes,
            "{s:?}"
        );
    }
    if let Ok(u) = &unpacked {
        let on_disk: u64 = inodes.values().map(|(_, _, len)| len).sum();
        assert!(
            on_disk <= u.bytes,
            "{on_disk} bytes written, {} counted",
            u.bytes
        );
        if let Ok(c) = &checked {
            assert_eq!(c, u, "the checker and the extractor counted differently");
        }
    }
});
