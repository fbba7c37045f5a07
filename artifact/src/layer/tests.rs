use super::*;
use std::cell::RefCell;
use tar::EntryType as T;

/// A tar of (name, kind, link or data).
fn tarball(entries: &[(&str, T, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, x) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(*kind);
        h.set_mode(if *kind == T::Directory { 0o755 } else { 0o644 });
        h.set_uid(1000);
        h.set_gid(1001);
        h.set_mtime(1_600_000_000);
        match kind {
            T::Symlink | T::Link => {
                h.set_size(0);
                b.append_link(&mut h, name, x).unwrap();
            }
            T::Regular => {
                h.set_size(x.len() as u64);
                b.append_data(&mut h, name, x.as_bytes()).unwrap();
            }
            _ => {
                h.set_size(0);
                b.append_data(&mut h, name, &[][..]).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn opts() -> LayerOptions {
    LayerOptions {
        limits: Limits::default(),
        keep_owners: false,
    }
}

/// Whiteouts recorded (and shown as empty files named `NAME`, so no root is needed).
#[derive(Default)]
struct Fake {
    whiteouts: RefCell<Vec<PathBuf>>,
    opaque: RefCell<Vec<PathBuf>>,
}

impl Whiteouts for &Fake {
    fn whiteout(&mut self, path: &Path) -> io::Result<()> {
        fs::write(path, b"")?;
        self.whiteouts.borrow_mut().push(path.to_path_buf());
        Ok(())
    }
    fn opaque(&mut self, dir: &Path) -> io::Result<()> {
        self.opaque.borrow_mut().push(dir.to_path_buf());
        Ok(())
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn overlay_format_turns_markers_into_whiteouts() {
    let t = tarball(&[
        ("etc/", T::Directory, ""),
        ("etc/.wh.gone", T::Regular, ""),
        ("data/.wh..wh..opq", T::Regular, ""),
        ("data/new", T::Regular, "upper"),
        ("bin/sh", T::Symlink, "/bin/busybox"),
        ("dev/console", T::Char, ""),
    ]);
    let base = tempfile::tempdir().unwrap();
    let dest = base.path().join("layer");
    let fake = Fake::default();
    let sum = unpack_layer(&t[..], Compression::None, &dest, &opts(), &mut &fake).unwrap();
    assert_eq!(sum.entries, 6);
    // Made while the layer was being built, before the rename.
    let tmp = unpacking_dir(&dest);
    assert_eq!(*fake.whiteouts.borrow(), vec![tmp.join("etc/gone")]);
    assert_eq!(*fake.opaque.borrow(), vec![tmp.join("data")]);
    assert_eq!(names(&dest.join("data")), vec!["new"]);
    assert_eq!(names(&dest.join("etc")), vec!["gone"]);
    assert!(!dest.join("dev/console").exists());
    assert!(!unpacking_dir(&dest).exists());
    // A second unpack into the same directory is refused.
    assert!(unpack_layer(&t[..], Compression::None, &dest, &opts(), &mut &fake).is_err());
}

#[test]
fn flatten_applies_whiteouts_and_opaque_directories() {
    let l1 = tarball(&[
        ("etc/gone", T::Regular, "x"),
        ("etc/kept", T::Regular, "k"),
        ("data/old", T::Regular, "o"),
        ("data/sub/deep", T::Regular, "d"),
        ("swap", T::Symlink, "etc"),
        ("becomes-file/inner", T::Regular, "i"),
    ]);
    let l2 = tarball(&[
        ("etc/.wh.gone", T::Regular, ""),
        ("data/mine", T::Regular, "m"),
        ("data/.wh..wh..opq", T::Regular, ""),
        ("swap/", T::Directory, ""),
        ("swap/real", T::Regular, "r"),
        ("becomes-file", T::Regular, "f"),
        ("etc/.wh.never-there", T::Regular, ""),
    ]);
    let l3 = tarball(&[("data/top", T::Regular, "t")]);
    let tree = tempfile::tempdir().unwrap();
    for l in [&l1, &l2, &l3] {
        apply_layer(&l[..], Compression::None, tree.path(), &opts()).unwrap();
    }
    let p = tree.path();
    assert_eq!(names(&p.join("etc")), vec!["kept"]);
    assert_eq!(names(&p.join("data")), vec!["mine", "top"]);
    assert!(p.join("swap").symlink_metadata().unwrap().is_dir());
    assert_eq!(names(&p.join("swap")), vec!["real"]);
    assert_eq!(fs::read(p.join("becomes-file")).unwrap(), b"f");
}

#[test]
fn a_whiteout_never_deletes_through_a_symlink() {
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("victim"), b"v").unwrap();
    let tree = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), tree.path().join("link")).unwrap();
    let l = tarball(&[("link/.wh.victim", T::Regular, "")]);
    // Either refused or a no-op: never the file outside.
    let _ = apply_layer(&l[..], Compression::None, tree.path(), &opts());
    assert!(outside.path().join("victim").exists());
    let l = tarball(&[("link/.wh..wh..opq", T::Regular, "")]);
    let _ = apply_layer(&l[..], Compression::None, tree.path(), &opts());
    assert!(outside.path().join("victim").exists());
}

#[test]
fn gzip_and_zstd_layers_unpack() {
    let t = tarball(&[("a/b", T::Regular, "hello")]);
    let base = tempfile::tempdir().unwrap();
    let fake = Fake::default();
    let gz = base.path().join("gz");
    unpack_layer(&gzip(&t)[..], Compression::Gzip, &gz, &opts(), &mut &fake).unwrap();
    assert_eq!(fs::read(gz.join("a/b")).unwrap(), b"hello");
    let zst =
        ruzstd::encoding::compress_to_vec(&t[..], ruzstd::encoding::CompressionLevel::Fastest);
    let z = base.path().join("zst");
    unpack_layer(&zst[..], Compression::Zstd, &z, &opts(), &mut &fake).unwrap();
    assert_eq!(fs::read(z.join("a/b")).unwrap(), b"hello");
    // Several frames (zstd -T, pzstd) are one stream.
    let (h1, h2) = t.split_at(512);
    let mut two =
        ruzstd::encoding::compress_to_vec(h1, ruzstd::encoding::CompressionLevel::Fastest);
    two.extend(ruzstd::encoding::compress_to_vec(
        h2,
        ruzstd::encoding::CompressionLevel::Fastest,
    ));
    let z3 = base.path().join("zst3");
    unpack_layer(&two[..], Compression::Zstd, &z3, &opts(), &mut &fake).unwrap();
    assert_eq!(fs::read(z3.join("a/b")).unwrap(), b"hello");
    // Undeclared compression (docker save's layers) is recognised.
    let z2 = base.path().join("zst2");
    unpack_layer(&zst[..], Compression::None, &z2, &opts(), &mut &fake).unwrap();
    // A declared compression the bytes do not have is refused.
    let e = unpack_layer(
        &t[..],
        Compression::Gzip,
        &base.path().join("bad"),
        &opts(),
        &mut &fake,
    )
    .unwrap_err();
    assert!(e.to_string().contains("corrupt"), "{e}");
    assert!(!base.path().join("bad").exists());
}

#[test]
fn a_gzip_bomb_stops_at_the_limit_and_leaves_nothing() {
    // 64 MiB of zeros in one file: ~64 KiB compressed.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(64 << 20);
    h.set_mode(0o644);
    b.append_data(&mut h, "zeros", io::repeat(0).take(64 << 20))
        .unwrap();
    let bomb = gzip(&b.into_inner().unwrap());
    assert!(bomb.len() < 1 << 20);
    let limits = Limits {
        max_entry_bytes: 1 << 30,
        max_total_bytes: 8 << 20,
        max_entries: 100,
    };
    let o = LayerOptions {
        limits,
        keep_owners: false,
    };
    let base = tempfile::tempdir().unwrap();
    let dest = base.path().join("l");
    let e = unpack_layer(
        &bomb[..],
        Compression::Gzip,
        &dest,
        &o,
        &mut &Fake::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("limit"), "{e}");
    assert!(!dest.exists());
    assert!(!unpacking_dir(&dest).exists());
    // Zeros after the end of the tar count too (the stream is capped, not only the files).
    let mut t = tarball(&[("f", T::Regular, "x")]);
    t.extend(std::iter::repeat_n(0u8, 10 << 20));
    let e = unpack_layer(
        &gzip(&t)[..],
        Compression::Gzip,
        &dest,
        &o,
        &mut &Fake::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("compression bomb"), "{e}");
    assert!(!dest.exists());
}

#[test]
fn unsafe_entries_are_refused_as_in_artifacts() {
    let base = tempfile::tempdir().unwrap();
    let mut raw = Vec::new();
    let mut h = tar::Header::new_gnu();
    h.as_old_mut().name[..6].copy_from_slice(b"../esc");
    h.set_entry_type(T::Regular);
    h.set_size(0);
    h.set_cksum();
    raw.extend_from_slice(h.as_bytes());
    raw.extend_from_slice(&[0; 1024]);
    let dest = base.path().join("l");
    let e = unpack_layer(
        &raw[..],
        Compression::None,
        &dest,
        &opts(),
        &mut &Fake::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains(".."), "{e}");
    assert!(!dest.exists() && !unpacking_dir(&dest).exists());
    let bad = tarball(&[("x/.wh..wh.foo", T::Regular, "")]);
    assert!(
        unpack_layer(
            &bad[..],
            Compression::None,
            &dest,
            &opts(),
            &mut &Fake::default()
        )
        .is_err()
    );
}

#[test]
fn a_truncated_gzip_layer_is_an_error() {
    let t = gzip(&tarball(&[("a", T::Regular, "hello world")]));
    let base = tempfile::tempdir().unwrap();
    let dest = base.path().join("l");
    assert!(
        unpack_layer(
            &t[..t.len() - 12],
            Compression::Gzip,
            &dest,
            &opts(),
            &mut &Fake::default()
        )
        .is_err()
    );
    assert!(!dest.exists());
}

#[test]
fn owners_are_kept_when_asked() {
    if !nix_free_is_root() {
        panic!("this test needs root (chown)");
    }
    let t = tarball(&[
        ("d/", T::Directory, ""),
        ("d/f", T::Regular, "x"),
        ("l", T::Symlink, "d/f"),
    ]);
    let base = tempfile::tempdir().unwrap();
    let dest = base.path().join("l");
    let o = LayerOptions {
        limits: Limits::default(),
        keep_owners: true,
    };
    unpack_layer(&t[..], Compression::None, &dest, &o, &mut &Fake::default()).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(dest.join("d/f").metadata().unwrap().mtime(), 1_600_000_000);
    for p in ["d", "d/f", "l"] {
        let m = dest.join(p).symlink_metadata().unwrap();
        assert_eq!((m.uid(), m.gid()), (1000, 1001), "{p}");
    }
}

/// Root without libc: the owner of `/proc/self`.
fn nix_free_is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}
