use super::*;
use tar::EntryType as T;

/// Appends a raw entry (names written straight into the header, so unsafe ones are possible).
fn entry(out: &mut Vec<u8>, name: &str, kind: T, link: &str, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    {
        let old = h.as_old_mut();
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    h.set_entry_type(kind);
    h.set_size(data.len() as u64);
    h.set_mode(if kind == T::Directory { 0o755 } else { 0o644 });
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

fn finish(mut out: Vec<u8>) -> Vec<u8> {
    out.extend_from_slice(&[0; 1024]);
    out
}

fn one(name: &str, kind: T, link: &str, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    entry(&mut v, "ok/", T::Directory, "", b"");
    entry(&mut v, name, kind, link, data);
    finish(v)
}

/// Both `check` and `unpack` refuse `tar`, naming `entry`, with `problem` in the message.
fn refused(tar: &[u8], entry_name: &str, problem: &str) {
    let limits = Limits::default();
    let e = check(tar, &limits).expect_err("check should refuse");
    let msg = e.to_string();
    assert!(
        matches!(&e, TarError::Entry { entry, .. } if entry == entry_name),
        "{msg}"
    );
    assert!(msg.contains(problem), "{msg}");
    let dir = tempfile::tempdir().unwrap();
    let e = unpack(tar, dir.path(), &limits).expect_err("unpack should refuse");
    assert!(
        matches!(&e, TarError::Entry { entry, .. } if entry == entry_name),
        "{e}"
    );
    assert!(e.to_string().contains(problem), "{e}");
}

#[test]
fn sha256_known_vector() {
    assert_eq!(
        sha256_hex(b"abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert!(is_sha256_hex(&sha256_hex(b"")));
    assert!(!is_sha256_hex("ABC"));
}

#[test]
fn a_good_tree_unpacks() {
    let mut v = Vec::new();
    entry(&mut v, "./", T::Directory, "", b"");
    entry(&mut v, "./bin/", T::Directory, "", b"");
    entry(&mut v, "./bin/busybox", T::Regular, "", b"#!fake");
    entry(&mut v, "./bin/sh", T::Symlink, "busybox", b"");
    entry(&mut v, "./bin/ls", T::Symlink, "/bin/busybox", b"");
    entry(&mut v, "./usr/lib/x", T::Symlink, "../../bin/busybox", b"");
    entry(&mut v, "./bin/cat", T::Link, "./bin/busybox", b"");
    entry(&mut v, "etc/hostname", T::Regular, "", b"pi\n");
    let v = finish(v);
    let s = check(&v[..], &Limits::default()).unwrap();
    assert_eq!(s.entries, 8);
    assert_eq!(s.bytes, 9);
    let dir = tempfile::tempdir().unwrap();
    unpack(&v[..], dir.path(), &Limits::default()).unwrap();
    let r = dir.path();
    assert_eq!(fs::read(r.join("bin/busybox")).unwrap(), b"#!fake");
    assert_eq!(
        fs::read_link(r.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    assert_eq!(fs::read(r.join("bin/cat")).unwrap(), b"#!fake");
    assert_eq!(fs::read(r.join("etc/hostname")).unwrap(), b"pi\n");
    assert!(r.join("usr/lib").is_dir());
}

#[test]
fn parent_dir_components_are_refused() {
    refused(&one("../evil", T::Regular, "", b"x"), "../evil", "\"..\"");
    refused(
        &one("ok/../../evil", T::Regular, "", b"x"),
        "ok/../../evil",
        "\"..\"",
    );
}

#[test]
fn absolute_paths_are_refused() {
    refused(
        &one("/etc/passwd", T::Regular, "", b"x"),
        "/etc/passwd",
        "absolute",
    );
}

#[test]
fn escaping_symlinks_are_refused() {
    refused(
        &one("ok/up", T::Symlink, "../../etc", b""),
        "ok/up",
        "escapes the root",
    );
    refused(
        &one("top", T::Symlink, "..", b""),
        "top",
        "escapes the root",
    );
    refused(
        &one("ok/empty", T::Symlink, "", b""),
        "ok/empty",
        "empty target",
    );
}

#[test]
fn escaping_hard_links_are_refused() {
    refused(
        &one("ok/h", T::Link, "/etc/shadow", b""),
        "ok/h",
        "absolute",
    );
    refused(
        &one("ok/h", T::Link, "../etc/shadow", b""),
        "ok/h",
        "\"..\"",
    );
    refused(
        &one("ok/h", T::Link, "nothing", b""),
        "ok/h",
        "not a file earlier",
    );
}

#[test]
fn a_hard_link_through_a_symlink_is_refused() {
    // `a -> /etc` is fine inside a pod, but linking `a/passwd` would reach the host's file.
    let mut v = Vec::new();
    entry(&mut v, "a", T::Symlink, "/etc", b"");
    entry(&mut v, "h", T::Link, "a/passwd", b"");
    let v = finish(v);
    refused(&v, "h", "not a file earlier");
}

#[test]
fn writing_through_a_symlink_is_refused() {
    let mut v = Vec::new();
    entry(&mut v, "a", T::Symlink, "/tmp", b"");
    entry(&mut v, "a/evil", T::Regular, "", b"x");
    let v = finish(v);
    // `check` models the tree, so the push is refused too; `unpack` never follows the symlink.
    refused(&v, "a/evil", "not a directory");
    assert!(!Path::new("/tmp/evil").exists() || fs::read("/tmp/evil").unwrap() != b"x");
}

/// Tarballs that a check without a model of the tree passed and every worker then failed to
/// unpack (a retry storm on each node): `check` and `unpack` now agree on each.
#[test]
fn check_and_unpack_agree_on_tree_conflicts() {
    type Entry = (&'static str, T, &'static str);
    /// The entry refused and a word of the problem; `None`: unpacks.
    type Verdict = Option<(&'static str, &'static str)>;
    let cases: &[(&[Entry], Verdict)] = &[
        // A file, then a directory of the same name.
        (
            &[("a", T::Regular, ""), ("a/", T::Directory, "")],
            Some(("a/", "not a directory")),
        ),
        // A directory, then a file of the same name.
        (
            &[("d/", T::Directory, ""), ("d", T::Regular, "")],
            Some(("d", "directory of that name")),
        ),
        // A hard link to a file that a symlink replaced.
        (
            &[
                ("f", T::Regular, ""),
                ("f", T::Symlink, "x"),
                ("h", T::Link, "f"),
            ],
            Some(("h", "not a file earlier")),
        ),
        // A hard link to a hard link is fine (it is a plain file).
        (
            &[
                ("f", T::Regular, ""),
                ("g", T::Link, "f"),
                ("h", T::Link, "g"),
            ],
            None,
        ),
        // A file under a directory given by a symlink to a directory in the tarball.
        (
            &[
                ("real/", T::Directory, ""),
                ("l", T::Symlink, "real"),
                ("l/f", T::Regular, ""),
            ],
            Some(("l/f", "not a directory")),
        ),
        // A file that replaces a file (tar's last-one-wins) is fine.
        (&[("f", T::Regular, ""), ("f", T::Regular, "")], None),
        // A rootfs whose /proc or /tmp the runtime cannot mount over.
        (
            &[("proc", T::Regular, "")],
            Some(("proc", "not a directory")),
        ),
        (
            &[("tmp", T::Symlink, "/var/tmp")],
            Some(("tmp", "not a directory")),
        ),
        (
            &[("dev/", T::Directory, ""), ("tmp/", T::Directory, "")],
            None,
        ),
    ];
    for (entries, verdict) in cases {
        let mut v = Vec::new();
        for (name, kind, link) in *entries {
            entry(
                &mut v,
                name,
                *kind,
                link,
                if *kind == T::Regular { b"x" } else { b"" },
            );
        }
        let v = finish(v);
        let checked = check(&v[..], &Limits::default());
        let dir = tempfile::tempdir().unwrap();
        let unpacked = unpack(&v[..], dir.path(), &Limits::default()).and_then(|s| {
            // The worker's rule after unpacking (`add_mount_points`).
            for d in MOUNT_DIRS {
                let p = dir.path().join(d);
                if fs::symlink_metadata(&p).is_ok_and(|m| !m.is_dir()) {
                    return Err(refuse(d, "/{d} is not a directory"));
                }
            }
            Ok(s)
        });
        match verdict {
            None => {
                checked.unwrap_or_else(|e| panic!("{entries:?}: check: {e}"));
                unpacked.unwrap_or_else(|e| panic!("{entries:?}: unpack: {e}"));
            }
            Some((name, problem)) => {
                let e = checked.expect_err(&format!("{entries:?}: check passed"));
                assert!(
                    matches!(&e, TarError::Entry { entry, .. } if entry == name),
                    "{entries:?}: {e}"
                );
                assert!(e.to_string().contains(problem), "{entries:?}: {e}");
                unpacked.expect_err(&format!("{entries:?}: unpack passed"));
            }
        }
    }
}

#[test]
fn one_limit_for_push_and_unpack() {
    // 2 GiB expanded: the master refuses at push what a worker would refuse at unpack.
    assert_eq!(Limits::default().max_total_bytes, 2 << 30);
    let limits = Limits {
        max_total_bytes: 10,
        ..Limits::default()
    };
    let mut v = Vec::new();
    entry(&mut v, "a", T::Regular, "", b"123456");
    entry(&mut v, "b", T::Regular, "", b"123456");
    let v = finish(v);
    let e = check(&v[..], &limits).unwrap_err();
    assert!(
        e.to_string()
            .contains("over the 10-byte limit per artifact"),
        "{e}"
    );
    let dir = tempfile::tempdir().unwrap();
    let e = unpack(&v[..], dir.path(), &limits).unwrap_err();
    assert!(
        e.to_string()
            .contains("over the 10-byte limit per artifact"),
        "{e}"
    );
}

#[test]
fn device_nodes_and_fifos_are_refused() {
    refused(&one("ok/null", T::Char, "", b""), "ok/null", "device nodes");
    refused(&one("ok/sda", T::Block, "", b""), "ok/sda", "device nodes");
    refused(&one("ok/p", T::Fifo, "", b""), "ok/p", "fifos");
    refused(&one("ok/s", T::new(b'Z'), "", b""), "ok/s", "not supported");
}

#[test]
fn oversize_entries_and_totals_are_refused() {
    let limits = Limits {
        max_entry_bytes: 10,
        max_total_bytes: 15,
        max_entries: 4,
    };
    let big = one("ok/big", T::Regular, "", &[1; 11]);
    let e = check(&big[..], &limits).unwrap_err();
    assert!(
        e.to_string()
            .contains("\"ok/big\": 11 bytes is over the 10-byte limit"),
        "{e}"
    );

    let mut v = Vec::new();
    entry(&mut v, "a", T::Regular, "", &[1; 8]);
    entry(&mut v, "b", T::Regular, "", &[1; 8]);
    let v = finish(v);
    let e = check(&v[..], &limits).unwrap_err();
    assert!(
        e.to_string()
            .contains("\"b\": the files up to here add up to 16 bytes"),
        "{e}"
    );

    let mut v = Vec::new();
    for n in ["a", "b", "c", "d", "e"] {
        entry(&mut v, n, T::Directory, "", b"");
    }
    let v = finish(v);
    let dir = tempfile::tempdir().unwrap();
    let e = unpack(&v[..], dir.path(), &limits).unwrap_err();
    assert!(e.to_string().contains("\"e\": more than 4 entries"), "{e}");
}

#[test]
fn a_truncated_tarball_is_an_error() {
    let v = one("ok/f", T::Regular, "", &[7; 1000]);
    let e = check(&v[..700], &Limits::default()).unwrap_err();
    let dir = tempfile::tempdir().unwrap();
    let e2 = unpack(&v[..700], dir.path(), &Limits::default()).unwrap_err();
    assert!(!e.to_string().is_empty() && !e2.to_string().is_empty());
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(bytes).unwrap();
    z.finish().unwrap()
}

#[test]
fn gzip_tarballs_are_inflated_and_checked_the_same() {
    let mut v = Vec::new();
    entry(&mut v, "./bin/", T::Directory, "", b"");
    entry(&mut v, "./bin/busybox", T::Regular, "", b"#!fake");
    entry(&mut v, "./bin/sh", T::Symlink, "busybox", b"");
    let z = gzip(&finish(v));
    assert_eq!(&z[..2], &[0x1f, 0x8b]);
    assert_eq!(check(&z[..], &Limits::default()).unwrap().entries, 3);
    let dir = tempfile::tempdir().unwrap();
    unpack(&z[..], dir.path(), &Limits::default()).unwrap();
    assert_eq!(fs::read(dir.path().join("bin/busybox")).unwrap(), b"#!fake");
    // Unsafe entries are refused the same way inside gzip.
    let e = check(
        &gzip(&one("../evil", T::Regular, "", b"x"))[..],
        &Limits::default(),
    )
    .unwrap_err();
    assert!(
        matches!(&e, TarError::Entry { entry, .. } if entry == "../evil"),
        "{e}"
    );
    // A gzip bomb (64 MiB of zeros in a few hundred KiB) stops at the entry limit.
    let mut bomb = Vec::new();
    entry(&mut bomb, "zeros", T::Regular, "", &vec![0u8; 64 << 20]);
    let bomb = gzip(&finish(bomb));
    assert!(bomb.len() < 1 << 20, "{}", bomb.len());
    let small = Limits {
        max_entry_bytes: 1 << 20,
        ..Limits::default()
    };
    let e = check(&bomb[..], &small).unwrap_err();
    assert!(
        matches!(&e, TarError::Entry { entry, .. } if entry == "zeros"),
        "{e}"
    );
    // A truncated gzip stream is an error, not a short tree.
    assert!(check(&z[..z.len() / 2], &Limits::default()).is_err());
}

#[test]
fn other_compressions_are_refused_with_the_fix() {
    for (magic, what) in [
        (&[0xfd, b'7', b'z', b'X', b'Z', 0][..], "xz"),
        (&[0x28, 0xb5, 0x2f, 0xfd][..], "zstd"),
        (&b"BZh91AY"[..], "bzip2"),
    ] {
        let mut data = magic.to_vec();
        data.resize(1024, 0);
        let e = check(&data[..], &Limits::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains(what) && e.contains(".tar.gz"), "{e}");
    }
}
