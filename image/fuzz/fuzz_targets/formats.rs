//! Fuzzes what Bramble reads from a registry or an imported image archive: OCI / Docker
//! indexes, manifests and configs (`bramble_image::formats`), and the walk from a root document
//! through its manifests and configs to a wire `Image` (`resolve`).
//!
//! Input layout: `[content type selector] [root] (SEP [blob])*`. Blobs are served by their
//! sha256; a digest no blob has gets the next blob not served yet (so the walk reaches configs
//! without the fuzzer forging hashes; a real registry's bytes are verified, which only narrows
//! what reaches the parser). Besides "no panic":
//! - every parsed digest is `sha256:` + 64 lowercase hex (manifests' config and layers, index
//!   entries), and no document over the size limit is parsed;
//! - a resolved image has variants, sorted by arch, one per arch, and every blob it names is
//!   a valid sha256; the layers asked for are each asked once; configs fetched were named by a
//!   manifest.
#![no_main]

use std::collections::{HashMap, HashSet};

use bramble_artifact::{is_sha256_hex, sha256_hex};
use bramble_image::formats::{
    self, Blobs, Document, FormatError, MAX_MANIFEST_BYTES, SmallKind, blobs_of, parse_config,
    parse_document, resolve,
};
use bramble_wire::image_ref::ImageRef;
use bramble_wire::objects::ImageLayer;
use libfuzzer_sys::fuzz_target;

const SEP: &[u8] = b"\n--blob--\n";
const TYPES: [Option<&str>; 8] = [
    None,
    Some(formats::OCI_INDEX),
    Some(formats::OCI_MANIFEST),
    Some(formats::DOCKER_LIST),
    Some(formats::DOCKER_MANIFEST),
    Some("application/json; charset=utf-8"),
    Some("application/vnd.docker.distribution.manifest.v1+prettyjws"),
    Some("text/html"),
];

struct Fake {
    by_sha: HashMap<String, Vec<u8>>,
    order: Vec<Vec<u8>>,
    next: usize,
    configs: Vec<String>,
    layers_asked: usize,
}

impl Blobs for Fake {
    type Error = FormatError;

    fn small(
        &mut self,
        what: &str,
        kind: SmallKind,
        sha256: &str,
        size: u64,
    ) -> Result<(Vec<u8>, Option<String>), FormatError> {
        assert!(is_sha256_hex(sha256), "{what}: asked for {sha256:?}");
        assert!(size <= MAX_MANIFEST_BYTES, "{what}: asked for {size} bytes");
        if kind == SmallKind::Config {
            self.configs.push(sha256.to_string());
        }
        if let Some(b) = self.by_sha.get(sha256) {
            return Ok((b.clone(), None));
        }
        let Some(b) = self.order.get(self.next) else {
            return Err(FormatError::Missing {
                what: what.into(),
                sha256: sha256.into(),
            });
        };
        self.next += 1;
        Ok((b.clone(), None))
    }

    fn layers(&mut self, layers: &[(String, ImageLayer)]) -> Result<(), FormatError> {
        self.layers_asked += 1;
        let mut seen = HashSet::new();
        for (what, l) in layers {
            assert!(is_sha256_hex(&l.sha256), "{what}: {:?}", l.sha256);
            assert!(seen.insert(&l.sha256), "{what}: layer asked twice");
        }
        Ok(())
    }
}

fn split(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while let Some(i) = rest.windows(SEP.len()).position(|w| w == SEP) {
        out.push(&rest[..i]);
        rest = &rest[i + SEP.len()..];
    }
    out.push(rest);
    out
}

fn check_document(bytes: &[u8], ct: Option<&str>) {
    match parse_document("fuzz", bytes, ct) {
        Ok(Document::Manifest(m)) => {
            assert!(bytes.len() as u64 <= MAX_MANIFEST_BYTES);
            assert!(is_sha256_hex(&m.config_sha256), "{:?}", m.config_sha256);
            for l in &m.layers {
                assert!(is_sha256_hex(&l.sha256), "{:?}", l.sha256);
            }
        }
        Ok(Document::Index(entries)) => {
            for d in &entries {
                // Index digests are checked when the walk follows them; parsing keeps them.
                let _ = formats::digest_hex("entry", &d.digest);
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let ct = TYPES[usize::from(sel) % TYPES.len()];
    let parts = split(rest);
    for p in &parts {
        check_document(p, ct);
        if let Ok(c) = parse_config("fuzz", p) {
            assert!(c.variant.as_deref() != Some(""));
            assert!(c.config.workdir.as_deref() != Some(""));
        }
    }

    let root = parts[0];
    let mut fake = Fake {
        by_sha: parts[1..]
            .iter()
            .map(|b| (sha256_hex(b), b.to_vec()))
            .collect(),
        order: parts[1..].iter().map(|b| b.to_vec()).collect(),
        next: 0,
        configs: Vec::new(),
        layers_asked: 0,
    };
    let reference = ImageRef::parse("registry.example/fuzz:1").unwrap();
    let root_sha = sha256_hex(root);
    if let Ok(image) = resolve(&reference, &root_sha, root, ct, &mut fake) {
        assert_eq!(fake.layers_asked, 1);
        assert!(!image.variants.is_empty());
        assert!(
            image.variants.windows(2).all(|w| w[0].arch < w[1].arch),
            "variants not sorted or repeated"
        );
        assert_eq!(image.digest, format!("sha256:{root_sha}"));
        for v in &image.variants {
            assert!(formats::digest_hex("v", &v.manifest_digest).is_ok());
            assert!(fake.configs.contains(&v.config_sha256));
        }
        for b in blobs_of(&image) {
            assert!(is_sha256_hex(&b), "{b:?}");
        }
    }
});
