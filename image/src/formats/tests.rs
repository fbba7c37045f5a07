use super::*;
use bramble_artifact::sha256_hex;
use serde_json::json;

fn d(sha: &str) -> String {
    format!("sha256:{sha}")
}

struct Fix {
    _dir: tempfile::TempDir,
    store: BlobStore,
}

fn fix() -> Fix {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::new(dir.path());
    Fix { _dir: dir, store }
}

impl Fix {
    fn put(&self, v: &serde_json::Value) -> (String, u64) {
        let b = serde_json::to_vec(v).unwrap();
        let sha = sha256_hex(&b);
        self.store.put_bytes(&sha, &b).unwrap();
        (sha, b.len() as u64)
    }

    fn put_raw(&self, b: &[u8]) -> (String, u64) {
        let sha = sha256_hex(b);
        self.store.put_bytes(&sha, b).unwrap();
        (sha, b.len() as u64)
    }

    /// A manifest for `os/arch[/variant]` with layers of the given media types.
    fn manifest(
        &self,
        mt: &str,
        platform: (&str, &str, Option<&str>),
        layers: &[&str],
    ) -> (String, u64) {
        let mut cfg = json!({"os": platform.0, "architecture": platform.1, "config": {"Cmd": ["sh"], "Env": ["A=1", "B"]}});
        if let Some(v) = platform.2 {
            cfg["variant"] = json!(v);
        }
        let (csha, csize) = self.put(&cfg);
        let ls: Vec<_> = layers
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let (s, n) = self.put_raw(format!("layer {i} {m} {platform:?}").as_bytes());
                json!({"mediaType": m, "digest": d(&s), "size": n})
            })
            .collect();
        let cmt = if mt == DOCKER_MANIFEST {
            DOCKER_CONFIG
        } else {
            OCI_CONFIG
        };
        self.put(&json!({"schemaVersion": 2, "mediaType": mt, "config": {"mediaType": cmt, "digest": d(&csha), "size": csize}, "layers": ls}))
    }
}

fn r() -> ImageRef {
    ImageRef::parse("registry.lan:5000/app:1").unwrap()
}

const GZ: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

#[test]
fn docker_list_and_manifests() {
    let f = fix();
    let a = f.manifest(
        DOCKER_MANIFEST,
        ("linux", "arm", Some("v6")),
        &["application/vnd.docker.image.rootfs.diff.tar.gzip"],
    );
    let b = f.manifest(
        OCI_MANIFEST,
        ("linux", "riscv64", None),
        &[
            "application/vnd.oci.image.layer.v1.tar",
            "application/vnd.oci.image.layer.v1.tar+zstd",
        ],
    );
    let w = f.manifest(OCI_MANIFEST, ("windows", "amd64", None), &[GZ]);
    let (root, _) = f.put(&json!({"schemaVersion": 2, "mediaType": DOCKER_LIST, "manifests": [
        {"mediaType": DOCKER_MANIFEST, "digest": d(&a.0), "size": a.1, "platform": {"os": "linux", "architecture": "arm", "variant": "v6"}},
        {"mediaType": OCI_MANIFEST, "digest": d(&w.0), "size": w.1, "platform": {"os": "windows", "architecture": "amd64"}},
        // No platform in the index: the config decides.
        {"mediaType": OCI_MANIFEST, "digest": d(&b.0), "size": b.1},
    ]}));
    let img = resolve_stored(&r(), &root, &f.store).unwrap();
    assert_eq!(img.reference, "registry.lan:5000/app:1");
    assert_eq!(img.digest, d(&root));
    assert_eq!(img.variants.len(), 2);
    assert_eq!(img.variants[0].arch, Arch::Armv6);
    assert_eq!(
        img.variants[0].layers[0].compression,
        LayerCompression::Gzip
    );
    assert_eq!(img.variants[1].arch, Arch::Riscv64);
    let c: Vec<_> = img.variants[1]
        .layers
        .iter()
        .map(|l| l.compression)
        .collect();
    assert_eq!(c, vec![LayerCompression::None, LayerCompression::Zstd]);
    assert_eq!(img.variants[0].config.cmd, vec!["sh"]);
    assert_eq!(
        img.variants[0].config.env,
        vec![("A".into(), "1".into()), ("B".into(), String::new())]
    );
    // An armv7 node runs the armv6 variant.
    assert_eq!(img.variant(Arch::Armv7).unwrap().arch, Arch::Armv6);
    assert_eq!(blobs_of(&img).len(), 1 + 2 * 2 + 1 + 2);
}

#[test]
fn refusals() {
    let f = fix();
    let schema1 = json!({"schemaVersion": 1, "name": "x", "tag": "1", "fsLayers": []});
    let e = parse_document(
        "m",
        &serde_json::to_vec(&schema1).unwrap(),
        Some("application/vnd.docker.distribution.manifest.v1+prettyjws"),
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("application/vnd.docker.distribution.manifest.v1+prettyjws"),
        "{e}"
    );
    assert!(e.to_string().contains("schema 1"), "{e}");
    let e = parse_document("m", &serde_json::to_vec(&schema1).unwrap(), None).unwrap_err();
    assert!(e.to_string().contains("schema 1"), "{e}");

    let foreign = f.manifest(
        DOCKER_MANIFEST,
        ("linux", "amd64", None),
        &["application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"],
    );
    let e = resolve_stored(&r(), &foreign.0, &f.store).unwrap_err();
    assert!(e.to_string().contains("layer 1 of manifest sha256:"), "{e}");
    assert!(e.to_string().contains("foreign.diff.tar.gzip"), "{e}");
    assert!(e.to_string().contains("non-distributable"), "{e}");
    let nd = f.manifest(
        OCI_MANIFEST,
        ("linux", "amd64", None),
        &["application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"],
    );
    assert!(matches!(
        resolve_stored(&r(), &nd.0, &f.store),
        Err(FormatError::Unsupported { .. })
    ));
    let odd = f.manifest(
        OCI_MANIFEST,
        ("linux", "amd64", None),
        &["application/x-squashfs"],
    );
    let e = resolve_stored(&r(), &odd.0, &f.store).unwrap_err();
    assert!(
        e.to_string()
            .contains("application/x-squashfs, which is not supported"),
        "{e}"
    );
    let e = parse_document(
        "m",
        br#"{"mediaType":"application/vnd.cncf.helm.chart.v1+json"}"#,
        None,
    )
    .unwrap_err();
    assert!(matches!(e, FormatError::Unsupported { .. }), "{e}");
    let e = parse_document("m", b"not json", None).unwrap_err();
    assert!(matches!(e, FormatError::Malformed { .. }), "{e}");
    let e = parse_document("m", br#"{"schemaVersion":2}"#, None).unwrap_err();
    assert!(e.to_string().contains("neither an index"), "{e}");
    let big = vec![b' '; MAX_MANIFEST_BYTES as usize + 1];
    assert!(matches!(
        parse_document("m", &big, None),
        Err(FormatError::TooLarge { .. })
    ));
    let e = parse_document(
        "m",
        br#"{"manifests":[{"digest":"sha512:abc","size":1}]}"#,
        None,
    )
    .unwrap_err();
    assert!(e.to_string().contains("other algorithms"), "{e}");
    // A config announced over the limit.
    let e = parse_document("m", serde_json::to_vec(&json!({"config": {"digest": d(&"a".repeat(64)), "size": MAX_MANIFEST_BYTES + 1}, "layers": []})).unwrap().as_slice(), None).unwrap_err();
    assert!(matches!(e, FormatError::TooLarge { .. }), "{e}");

    // Only Windows: no variant, naming what the image has.
    let w = f.manifest(OCI_MANIFEST, ("windows", "amd64", None), &[GZ]);
    let (root, _) = f.put(&json!({"manifests": [{"mediaType": OCI_MANIFEST, "digest": d(&w.0), "size": w.1, "platform": {"os": "windows", "architecture": "amd64"}}]}));
    let e = resolve_stored(&r(), &root, &f.store).unwrap_err();
    assert!(e.to_string().contains("the image has windows/amd64"), "{e}");
    let e = resolve_stored(&r(), &w.0, &f.store).unwrap_err();
    assert!(matches!(e, FormatError::NoVariant { .. }), "{e}");

    // Nested index.
    let (nested, _) = f.put(&json!({"manifests": [{"mediaType": OCI_INDEX, "digest": d(&root), "size": 10, "platform": {"os": "linux", "architecture": "amd64"}}]}));
    let e = resolve_stored(&r(), &nested, &f.store).unwrap_err();
    assert!(e.to_string().contains("nested indexes"), "{e}");
}

#[test]
fn import_checks_every_blob() {
    let f = fix();
    // A manifest whose layer was never uploaded.
    let (csha, csize) = f.put(&json!({"os": "linux", "architecture": "amd64"}));
    let ghost = "b".repeat(64);
    let (m, _) = f.put(&json!({"mediaType": OCI_MANIFEST, "config": {"mediaType": OCI_CONFIG, "digest": d(&csha), "size": csize}, "layers": [{"mediaType": GZ, "digest": d(&ghost), "size": 5}]}));
    let e = resolve_stored(&r(), &m, &f.store).unwrap_err();
    assert!(matches!(e, FormatError::Missing { .. }), "{e}");
    assert!(e.to_string().contains(&ghost), "{e}");
    assert!(e.to_string().contains("layer 1 of linux/amd64"), "{e}");
    // A layer of another size than its descriptor.
    let (l, n) = f.put_raw(b"layer bytes");
    let (m, _) = f.put(&json!({"mediaType": OCI_MANIFEST, "config": {"mediaType": OCI_CONFIG, "digest": d(&csha), "size": csize}, "layers": [{"mediaType": GZ, "digest": d(&l), "size": n + 1}]}));
    let e = resolve_stored(&r(), &m, &f.store).unwrap_err();
    assert!(matches!(e, FormatError::SizeMismatch { .. }), "{e}");
    // The root itself missing.
    let e = resolve_stored(&r(), &"c".repeat(64), &f.store).unwrap_err();
    assert!(e.to_string().contains("root manifest"), "{e}");
    // Config without "config": empty defaults; good image.
    let (m, _) = f.put(&json!({"config": {"digest": d(&csha), "size": csize}, "layers": [{"mediaType": GZ, "digest": d(&l), "size": n}]}));
    let img = resolve_stored(&r(), &m, &f.store).unwrap();
    assert_eq!(img.variants[0].config, ImageConfig::default());
    assert_eq!(img.variants[0].manifest_digest, img.digest);
}
