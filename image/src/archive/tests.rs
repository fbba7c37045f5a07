//! Archives built here (and, through `skopeo`, real `docker-archive:`/`oci-archive:` files).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::*;

fn sha(b: &[u8]) -> String {
    bramble_artifact::sha256_hex(b)
}

/// A tar of `files` (regular files, mode 0644).
fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, *data).unwrap();
    }
    b.into_inner().unwrap()
}

/// Appends a symlink `path` → `target` to a tar built by hand.
fn tar_with_link(files: &[(&str, &[u8])], link: (&str, &str)) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, *data).unwrap();
    }
    let mut h = tar::Header::new_gnu();
    h.set_size(0);
    h.set_mode(0o777);
    h.set_entry_type(tar::EntryType::Symlink);
    b.append_link(&mut h, link.0, link.1).unwrap();
    b.into_inner().unwrap()
}

fn layer(n: u8) -> Vec<u8> {
    let body = format!("layer {n}\n").repeat(100 + usize::from(n));
    tar_of(&[(&format!("data/file{n}"), body.as_bytes())])
}

fn config(arch: &str, variant: Option<&str>, layers: &[&[u8]]) -> Vec<u8> {
    let diff: Vec<String> = layers
        .iter()
        .map(|l| format!("sha256:{}", sha(l)))
        .collect();
    let mut v = serde_json::json!({
        "architecture": arch, "os": "linux",
        "config": { "Cmd": ["/bin/sh"], "Env": ["PATH=/bin"] },
        "rootfs": { "type": "layers", "diff_ids": diff },
    });
    if let Some(var) = variant {
        v["variant"] = var.into();
    }
    serde_json::to_vec(&v).unwrap()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

fn read_blob(a: &ImageArchive, b: &Blob, from: u64) -> Vec<u8> {
    let mut v = Vec::new();
    a.reader(b, from).read_to_end(&mut v).unwrap();
    v
}

/// Every blob reads back with its size and sha256; the root is the last blob.
fn check_blobs(a: &ImageArchive) {
    for b in &a.blobs {
        let data = read_blob(a, b, 0);
        assert_eq!(data.len() as u64, b.size, "{b:?}");
        assert_eq!(sha(&data), b.sha256);
        if b.size > 3 {
            assert_eq!(read_blob(a, b, 3), data[3..]);
        }
    }
    assert_eq!(a.blobs.last().unwrap().sha256, a.root_sha256);
}

fn root_json(a: &ImageArchive) -> serde_json::Value {
    let root = a.blobs.last().unwrap();
    serde_json::from_slice(&read_blob(a, root, 0)).unwrap()
}

/// A legacy `docker save` (`<id>/layer.tar`, `<hex>.json`).
/// (architecture, variant, layer tars, RepoTags).
type DockerImage<'a> = (&'a str, Option<&'a str>, Vec<Vec<u8>>, Vec<&'a str>);
/// (architecture, variant, layer tars).
type OciImage<'a> = (&'a str, Option<&'a str>, Vec<Vec<u8>>);

fn docker_save(images: &[DockerImage]) -> Vec<u8> {
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let mut manifest = Vec::new();
    for (arch, variant, layers, tags) in images {
        let refs: Vec<&[u8]> = layers.iter().map(Vec::as_slice).collect();
        let cfg = config(arch, *variant, &refs);
        let cfg_name = format!("{}.json", sha(&cfg));
        let mut lnames = Vec::new();
        for l in layers {
            let n = format!("{}/layer.tar", &sha(l)[..16]);
            files.push((n.clone(), l.clone()));
            lnames.push(n);
        }
        files.push((cfg_name.clone(), cfg));
        manifest.push(serde_json::json!({"Config": cfg_name, "RepoTags": tags, "Layers": lnames}));
    }
    files.push((
        "manifest.json".into(),
        serde_json::to_vec(&manifest).unwrap(),
    ));
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(n, d)| (n.as_str(), d.as_slice()))
        .collect();
    tar_of(&refs)
}

/// An OCI layout's files: one manifest per (arch, variant, layers), gzip layers, and index.json
/// listing either each manifest (`nested = false`) or one index of them.
fn oci_layout(images: &[OciImage], nested: bool, ref_name: &str) -> Vec<(String, Vec<u8>)> {
    let mut files = vec![(
        "oci-layout".to_string(),
        br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
    )];
    let mut descs = Vec::new();
    for (arch, variant, layers) in images {
        let refs: Vec<&[u8]> = layers.iter().map(Vec::as_slice).collect();
        let cfg = config(arch, *variant, &refs);
        let mut ldescs = Vec::new();
        for l in layers {
            let gz = gzip(l);
            ldescs.push(serde_json::json!({"mediaType": OCI_LAYER_GZIP, "digest": format!("sha256:{}", sha(&gz)), "size": gz.len()}));
            files.push((format!("blobs/sha256/{}", sha(&gz)), gz));
        }
        let m = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": format!("sha256:{}", sha(&cfg)), "size": cfg.len()},
            "layers": ldescs,
        }))
        .unwrap();
        files.push((format!("blobs/sha256/{}", sha(&cfg)), cfg));
        let mut d = serde_json::json!({"mediaType": OCI_MANIFEST, "digest": format!("sha256:{}", sha(&m)), "size": m.len()});
        if nested {
            d["platform"] = serde_json::json!({"architecture": arch, "os": "linux"});
            if let Some(v) = variant {
                d["platform"]["variant"] = (*v).into();
            }
        } else {
            d["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": ref_name});
        }
        files.push((format!("blobs/sha256/{}", sha(&m)), m));
        descs.push(d);
    }
    let top = if nested {
        let idx = serde_json::to_vec(
            &serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descs}),
        )
        .unwrap();
        let d = serde_json::json!({"mediaType": OCI_INDEX, "digest": format!("sha256:{}", sha(&idx)), "size": idx.len(),
            "annotations": {"org.opencontainers.image.ref.name": ref_name}});
        files.push((format!("blobs/sha256/{}", sha(&idx)), idx));
        vec![d]
    } else {
        descs
    };
    files.push((
        "index.json".into(),
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": top})).unwrap(),
    ));
    files
}

fn tar_files(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(n, d)| (n.as_str(), d.as_slice()))
        .collect();
    tar_of(&refs)
}

#[test]
fn docker_save_single_image_gets_a_synthesized_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let (l1, l2) = (layer(1), layer(2));
    let t = docker_save(&[(
        "arm64",
        Some("v8"),
        vec![l1.clone(), l2.clone()],
        vec!["registry.lan:5000/app:1.4"],
    )]);
    let p = write(dir.path(), "app.tar", &t);
    let a = ImageArchive::open(&p).unwrap();
    assert_eq!(a.format, Format::DockerSave);
    assert!(!a.compressed);
    assert_eq!(a.root_kind, BlobKind::Manifest);
    check_blobs(&a);
    let kinds: Vec<BlobKind> = a.blobs.iter().map(|b| b.kind).collect();
    assert_eq!(
        kinds,
        [
            BlobKind::Config,
            BlobKind::Layer,
            BlobKind::Layer,
            BlobKind::Manifest
        ]
    );
    let m = root_json(&a);
    assert_eq!(m["mediaType"], OCI_MANIFEST);
    assert_eq!(m["layers"][0]["digest"], format!("sha256:{}", sha(&l1)));
    assert_eq!(m["layers"][1]["mediaType"], OCI_LAYER_TAR);
    assert_eq!(m["layers"][1]["size"], l2.len());
    assert_eq!(a.platforms, ["linux/arm64/v8"]);
    assert_eq!(
        a.reference(None, "app.tar").unwrap(),
        "registry.lan:5000/app:1.4"
    );
    assert_eq!(a.reference(Some("x:1"), "app.tar").unwrap(), "x:1");
    // Deterministic: the same file gives the same root (resumable uploads).
    assert_eq!(ImageArchive::open(&p).unwrap().root_sha256, a.root_sha256);
}

#[test]
fn docker_save_with_linked_layers_and_gzip_and_no_tags() {
    let dir = tempfile::tempdir().unwrap();
    let l1 = layer(1);
    let cfg = config("amd64", None, &[&l1, &l1]);
    let cfg_name = format!("{}.json", sha(&cfg));
    let manifest = serde_json::to_vec(&serde_json::json!([
        {"Config": cfg_name, "RepoTags": null, "Layers": ["aaa/layer.tar", "bbb/layer.tar"]}
    ]))
    .unwrap();
    let t = tar_with_link(
        &[
            ("aaa/layer.tar", &l1),
            (&cfg_name, &cfg),
            ("manifest.json", &manifest),
        ],
        ("bbb/layer.tar", "../aaa/layer.tar"),
    );
    let p = write(dir.path(), "x.tar.gz", &gzip(&t));
    let a = ImageArchive::open(&p).unwrap();
    assert!(a.compressed);
    check_blobs(&a);
    // The shared layer is uploaded once but listed twice.
    assert_eq!(a.blobs.len(), 3);
    assert_eq!(root_json(&a)["layers"].as_array().unwrap().len(), 2);
    let e = a.reference(None, "x.tar.gz").unwrap_err().message;
    assert!(e.contains("pass --reference"), "{e}");
}

#[test]
fn docker_save_of_several_arches_gets_an_index() {
    let dir = tempfile::tempdir().unwrap();
    let t = docker_save(&[
        ("amd64", None, vec![layer(1)], vec!["app:1"]),
        ("arm", Some("v7"), vec![layer(2), layer(3)], vec!["app:1"]),
    ]);
    let a = ImageArchive::open(&write(dir.path(), "multi.tar", &t)).unwrap();
    assert_eq!(a.root_kind, BlobKind::Index);
    check_blobs(&a);
    let idx = root_json(&a);
    assert_eq!(idx["mediaType"], OCI_INDEX);
    assert_eq!(idx["manifests"][1]["platform"]["variant"], "v7");
    assert_eq!(a.platforms, ["linux/amd64", "linux/arm/v7"]);
    assert_eq!(a.reference(None, "m").unwrap(), "app:1");

    // Two different images of one platform: refused.
    let t = docker_save(&[
        ("amd64", None, vec![layer(1)], vec!["a:1"]),
        ("amd64", None, vec![layer(2)], vec!["b:1"]),
    ]);
    let e = ImageArchive::open(&write(dir.path(), "two.tar", &t))
        .unwrap_err()
        .message;
    assert!(
        e.contains("2 different images for linux/amd64") && e.contains("a:1"),
        "{e}"
    );
}

#[test]
fn oci_archive_single_and_nested_index() {
    let dir = tempfile::tempdir().unwrap();
    // One manifest, gzip-compressed archive, ref.name a full reference.
    let files = oci_layout(
        &[("arm64", None, vec![layer(1), layer(2)])],
        false,
        "registry.lan:5000/app:2",
    );
    let p = write(dir.path(), "oci.tar.gz", &gzip(&tar_files(&files)));
    let a = ImageArchive::open(&p).unwrap();
    assert_eq!(a.format, Format::Oci);
    assert_eq!(a.root_kind, BlobKind::Manifest);
    check_blobs(&a);
    assert_eq!(a.blobs.len(), 4);
    assert_eq!(a.reference(None, "o").unwrap(), "registry.lan:5000/app:2");
    assert_eq!(a.platforms, ["linux/arm64"]);

    // A multi-arch index named by index.json: it is the root as it is.
    let files = oci_layout(
        &[
            ("amd64", None, vec![layer(1)]),
            ("arm64", None, vec![layer(1), layer(2)]),
            ("arm", Some("v7"), vec![layer(3)]),
        ],
        true,
        "3.20",
    );
    let a = ImageArchive::open(&write(dir.path(), "idx.tar", &tar_files(&files))).unwrap();
    assert_eq!(a.root_kind, BlobKind::Index);
    check_blobs(&a);
    let root = files.iter().find(|(n, _)| n == "index.json").unwrap();
    let top: serde_json::Value = serde_json::from_slice(&root.1).unwrap();
    assert_eq!(
        top["manifests"][0]["digest"],
        format!("sha256:{}", a.root_sha256)
    );
    assert_eq!(a.platforms, ["linux/amd64", "linux/arm/v7", "linux/arm64"]);
    // 3 configs + 3 manifests + 1 index + layers 1,2,3 gzip (layer 1 shared).
    assert_eq!(a.blobs.len(), 10);
    // A tag only: the reference must be given.
    let e = a.reference(None, "idx.tar").unwrap_err().message;
    assert!(
        e.contains("only the tag \"3.20\"") && e.contains("--reference"),
        "{e}"
    );
}

#[test]
fn oci_layout_listing_several_manifests_gets_a_synthesized_index() {
    let dir = tempfile::tempdir().unwrap();
    let files = oci_layout(
        &[
            ("amd64", None, vec![layer(1)]),
            ("arm64", None, vec![layer(2)]),
        ],
        false,
        "app:7",
    );
    let a = ImageArchive::open(&write(dir.path(), "two.tar", &tar_files(&files))).unwrap();
    assert_eq!(a.root_kind, BlobKind::Index);
    check_blobs(&a);
    let idx = root_json(&a);
    // The platform is filled in from each config.
    assert_eq!(idx["manifests"][1]["platform"]["architecture"], "arm64");
    assert_eq!(a.reference(None, "two.tar").unwrap(), "app:7");
}

#[test]
fn bad_archives_get_clear_messages() {
    let dir = tempfile::tempdir().unwrap();
    let open = |name: &str, bytes: &[u8]| {
        ImageArchive::open(&write(dir.path(), name, bytes))
            .unwrap_err()
            .message
    };
    let e = open("empty.tar", b"");
    assert!(e.contains("is empty"), "{e}");
    let e = open(
        "notes.txt",
        &b"hello, this is not a tar at all\n".repeat(40),
    );
    assert!(e.contains("is not a tar archive"), "{e}");
    let e = open(
        "rootfs.tar",
        &tar_of(&[("bin/busybox", b"\x7fELF"), ("etc/passwd", b"root")]),
    );
    assert!(
        e.contains("plain root filesystem tarball") && e.contains("bramble artifact push"),
        "{e}"
    );
    let t = docker_save(&[("amd64", None, vec![layer(1), layer(2)], vec!["a:1"])]);
    let e = open("cut.tar", &t[..t.len() / 2 + 100]);
    assert!(e.contains("truncated or damaged"), "{e}");
    let e = open("other.tar", &tar_of(&[("README", b"hi")]));
    assert!(
        e.contains("no manifest.json") && e.contains("index.json"),
        "{e}"
    );

    // A layer named in manifest.json but absent.
    let manifest = br#"[{"Config":"c.json","RepoTags":["a:1"],"Layers":["x/layer.tar"]}]"#;
    let cfg = config("amd64", None, &[]);
    let e = open(
        "missing.tar",
        &tar_of(&[("c.json", &cfg), ("manifest.json", manifest)]),
    );
    assert!(
        e.contains("layer x/layer.tar") && e.contains("missing"),
        "{e}"
    );

    // A layer whose bytes do not match the config's diff_id.
    let l = layer(1);
    let cfg = config("amd64", None, &[&layer(2)]);
    let manifest = br#"[{"Config":"c.json","RepoTags":["a:1"],"Layers":["x/layer.tar"]}]"#;
    let e = open(
        "mismatch.tar",
        &tar_of(&[
            ("c.json", &cfg),
            ("x/layer.tar", &l),
            ("manifest.json", manifest),
        ]),
    );
    assert!(e.contains("digest mismatch"), "{e}");

    // OCI: a blob renamed, one missing.
    let mut files = oci_layout(&[("arm64", None, vec![layer(1)])], false, "a:1");
    let i = files
        .iter()
        .position(|(_, d)| d.starts_with(&[0x1f, 0x8b]))
        .unwrap();
    let good = files[i].1.clone();
    files[i].1 = gzip(&layer(9));
    let e = open("bad-oci.tar", &tar_files(&files));
    assert!(
        e.contains("digest mismatch") || e.contains("bytes but"),
        "{e}"
    );
    files[i].1 = good;
    files.remove(i);
    let e = open("missing-oci.tar", &tar_files(&files));
    assert!(e.contains("missing from the archive"), "{e}");
    let files: Vec<(String, Vec<u8>)> = oci_layout(&[("arm64", None, vec![layer(1)])], false, "a")
        .into_iter()
        .filter(|(n, _)| n != "index.json")
        .collect();
    let e = open("noindex.tar", &tar_files(&files));
    assert!(e.contains("without index.json"), "{e}");
}

#[test]
fn detect_finds_image_archives_anywhere_in_the_tar() {
    let dir = tempfile::tempdir().unwrap();
    let t = docker_save(&[("amd64", None, vec![layer(1)], vec!["a:1"])]);
    assert_eq!(
        detect(&write(dir.path(), "d.tar", &t)).unwrap(),
        Some(Format::DockerSave)
    );
    let files = oci_layout(&[("arm64", None, vec![layer(1)])], false, "a:1");
    assert_eq!(
        detect(&write(dir.path(), "o.tar.gz", &gzip(&tar_files(&files)))).unwrap(),
        Some(Format::Oci)
    );
    let root = tar_of(&[("./bin/sh", b"x"), ("./etc/manifest.json", b"{}")]);
    assert_eq!(detect(&write(dir.path(), "r.tar", &root)).unwrap(), None);
    assert_eq!(
        detect(&write(dir.path(), "junk", b"not a tar")).unwrap(),
        None
    );
}

/// Real archives: skopeo turns an OCI layout written here into `docker-archive:` and
/// `oci-archive:` files.
#[test]
fn skopeo_archives_import() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    for (name, data) in oci_layout(
        &[("amd64", None, vec![layer(1), layer(2), layer(3)])],
        false,
        "v1",
    ) {
        let p = layout.join(&name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }
    let skopeo = |dest: &str| {
        let out = std::process::Command::new("skopeo")
            .args(["--insecure-policy", "copy", "-q"])
            .arg(format!("oci:{}:v1", layout.display()))
            .arg(dest)
            .output()
            .expect("skopeo is needed (apt-get install skopeo)");
        assert!(
            out.status.success(),
            "skopeo copy to {dest}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let docker = dir.path().join("docker.tar");
    skopeo(&format!(
        "docker-archive:{}:registry.lan:5000/app:v1",
        docker.display()
    ));
    let a = ImageArchive::open(&docker).unwrap();
    assert_eq!(a.format, Format::DockerSave, "{a:?}");
    check_blobs(&a);
    assert_eq!(root_json(&a)["layers"].as_array().unwrap().len(), 3);
    assert_eq!(a.platforms, ["linux/amd64"]);
    assert_eq!(a.reference(None, "d").unwrap(), "registry.lan:5000/app:v1");
    assert_eq!(detect(&docker).unwrap(), Some(Format::DockerSave));

    let oci = dir.path().join("oci.tar");
    skopeo(&format!(
        "oci-archive:{}:registry.lan:5000/app:v1",
        oci.display()
    ));
    let a = ImageArchive::open(&oci).unwrap();
    assert_eq!(a.format, Format::Oci);
    check_blobs(&a);
    assert_eq!(a.root_kind, BlobKind::Manifest);
    assert_eq!(a.reference(None, "o").unwrap(), "registry.lan:5000/app:v1");
    assert_eq!(detect(&oci).unwrap(), Some(Format::Oci));

    // Multi-arch: an index of three platforms, every variant copied (--all).
    let multi = dir.path().join("multi");
    for (name, data) in oci_layout(
        &[
            ("amd64", None, vec![layer(1), layer(2)]),
            ("arm64", None, vec![layer(1), layer(3)]),
            ("arm", Some("v7"), vec![layer(1), layer(4)]),
        ],
        true,
        "v2",
    ) {
        let p = multi.join(&name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }
    let all = dir.path().join("all.tar");
    let out = std::process::Command::new("skopeo")
        .args(["--insecure-policy", "copy", "-q", "--all"])
        .arg(format!("oci:{}:v2", multi.display()))
        .arg(format!(
            "oci-archive:{}:registry.lan:5000/app:v2",
            all.display()
        ))
        .output()
        .expect("skopeo is needed (apt-get install skopeo)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let a = ImageArchive::open(&all).unwrap();
    assert_eq!(a.root_kind, BlobKind::Index);
    check_blobs(&a);
    assert_eq!(a.platforms, ["linux/amd64", "linux/arm/v7", "linux/arm64"]);
    assert_eq!(a.reference(None, "a").unwrap(), "registry.lan:5000/app:v2");
}
