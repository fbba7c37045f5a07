//! The registry client against a real registry (Debian's `docker-registry`, the CNCF
//! distribution registry) on loopback — plain HTTP, HTTPS with a test CA, htpasswd basic auth —
//! with images built here and pushed with skopeo; and against a small fake registry for bearer
//! tokens, corrupted blobs, lying sizes and 429/5xx retries.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use bramble_image::formats::{self, OCI_MANIFEST};
use bramble_image::registry::{PullError, PullLimits, RegistrySettings, pull};
use bramble_image::store::{BlobStore, StoreError};
use bramble_image::{ImageRef, formats::resolve_stored};
use bramble_wire::Arch;
use bramble_wire::objects::{Image, LayerCompression};
use common::*;

const BIG: PullLimits = PullLimits {
    max_blob_bytes: 1 << 30,
};

fn r(s: &str) -> ImageRef {
    ImageRef::parse(s).unwrap()
}

fn plain() -> RegistrySettings {
    RegistrySettings {
        insecure: true,
        ..RegistrySettings::default()
    }
}

fn pull_into(
    reference: &str,
    settings: &RegistrySettings,
    store: &BlobStore,
    limits: &PullLimits,
) -> (Result<Image, PullError>, Vec<String>) {
    let mut msgs = Vec::new();
    let res = pull(&r(reference), settings, store, limits, &mut |p| {
        assert!(p.done <= p.total || p.total == 0, "{p:?}");
        msgs.push(p.message)
    });
    (res, msgs)
}

/// The pulled image matches what was built: variants, digests, configs, every blob stored.
fn check_multi(image: &Image, index_sha: &str, built: &[Built], store: &BlobStore) {
    assert_eq!(image.digest, format!("sha256:{index_sha}"));
    let arches: Vec<Arch> = image.variants.iter().map(|v| v.arch).collect();
    assert_eq!(arches, vec![Arch::Aarch64, Arch::Armv7, Arch::X86_64]);
    for v in &image.variants {
        let b = built
            .iter()
            .find(|b| {
                bramble_image::platform::arch_of(&b.os, &b.arch, b.variant.as_deref())
                    == Some(v.arch)
            })
            .unwrap();
        assert_eq!(v.manifest_digest, format!("sha256:{}", b.manifest_sha));
        assert_eq!(v.config_sha256, b.config_sha);
        let ls: Vec<(String, u64)> = v
            .layers
            .iter()
            .map(|l| (l.sha256.clone(), l.size))
            .collect();
        assert_eq!(ls, b.layers);
        assert!(
            v.layers
                .iter()
                .all(|l| l.compression == LayerCompression::Gzip)
        );
        assert_eq!(v.config.entrypoint, vec!["/bin/app"]);
        assert_eq!(v.config.cmd, vec!["--serve".to_string(), b.arch.clone()]);
        assert_eq!(
            v.config.env,
            vec![
                ("PATH".to_string(), "/usr/bin:/bin".to_string()),
                ("MODE".to_string(), "test=yes".to_string())
            ]
        );
        assert_eq!(v.config.workdir.as_deref(), Some("/srv"));
        assert_eq!(v.config.user.as_deref(), Some("1000:1000"));
        assert_eq!(v.config.exposed_ports, vec!["53/udp", "8080/tcp"]);
    }
    // Every blob the image uses is in the store, and the store holds only verified blobs.
    let held = check_store(store.dir());
    for b in formats::blobs_of(image) {
        assert!(held.contains(&b), "blob {b} not stored");
    }
    // Shared base and top layers stored once: 3 arch layers + 2 shared + 3 manifests + 3
    // configs + the index. The attestation manifest was skipped without a fetch.
    assert_eq!(held.len(), 3 + 2 + 3 + 3 + 1, "{held:?}");
}

#[test]
fn multi_arch_index_over_plain_http() {
    let reg = Registry::start(false, None);
    let work = tempfile::tempdir().unwrap();
    let (layout, ix, built) = multi_arch(&work.path().join("oci"));
    reg.push(&layout.dir, "home/app:1.4", &["--preserve-digests"]);

    let store = BlobStore::new(work.path().join("artifacts"));
    let reference = format!("{}/home/app:1.4", reg.host());
    let (res, msgs) = pull_into(&reference, &plain(), &store, &BIG);
    let image = res.unwrap();
    assert_eq!(image.reference, reference);
    check_multi(&image, &ix, &built, &store);
    assert!(
        msgs.iter().any(|m| m.starts_with("pulling layer 1/5")),
        "{msgs:?}"
    );

    // Again: nothing new fetched, the same image.
    let (res, msgs) = pull_into(&reference, &plain(), &store, &BIG);
    assert_eq!(res.unwrap(), image);
    assert!(
        msgs.iter().filter(|m| m.contains("already held")).count() == 5,
        "{msgs:?}"
    );

    // By digest.
    let by_digest = format!("{}/home/app@sha256:{ix}", reg.host());
    let (res, _) = pull_into(&by_digest, &plain(), &store, &BIG);
    let again = res.unwrap();
    assert_eq!(again.variants, image.variants);
    assert_eq!(again.reference, by_digest);

    // resolve_stored (the import path) builds the same image from the store alone.
    let stored = resolve_stored(&r(&reference), &ix, &store).unwrap();
    assert_eq!(stored, image);

    // A wrong digest pin: the manifest the registry serves does not match.
    let wrong = format!("{}/home/app@sha256:{}", reg.host(), "0".repeat(64));
    let (res, _) = pull_into(&wrong, &plain(), &store, &BIG);
    let e = res.unwrap_err();
    assert!(matches!(e, PullError::NotFound { .. }), "{e}");
}

#[test]
fn single_manifest_docker_v2s2_and_not_found() {
    let reg = Registry::start(false, None);
    let work = tempfile::tempdir().unwrap();
    let l = Layout::new(&work.path().join("oci"));
    let b = l.image(
        "linux",
        "arm64",
        None,
        &[
            layer(&[("bin/app", b"app")]),
            layer(&[("etc/conf", b"x=1")]),
        ],
    );
    l.top(OCI_MANIFEST, &b.manifest_sha, b.manifest_size);
    // Converted to Docker's manifest v2 schema 2 (rootfs.diff.tar.gzip layers) by skopeo.
    reg.push(&l.dir, "tools/app:v1", &["--format", "v2s2"]);
    let store = BlobStore::new(work.path().join("artifacts"));
    let (res, _) = pull_into(
        &format!("{}/tools/app:v1", reg.host()),
        &plain(),
        &store,
        &BIG,
    );
    let image = res.unwrap();
    assert_eq!(image.variants.len(), 1);
    let v = &image.variants[0];
    assert_eq!(v.arch, Arch::Aarch64);
    assert_eq!(
        v.manifest_digest, image.digest,
        "a single manifest is its own root"
    );
    let ls: Vec<(String, u64)> = v
        .layers
        .iter()
        .map(|l| (l.sha256.clone(), l.size))
        .collect();
    assert_eq!(ls, b.layers);
    let root = store
        .read_small(image.digest.strip_prefix("sha256:").unwrap(), 1 << 22)
        .unwrap();
    assert!(
        String::from_utf8_lossy(&root)
            .contains("application/vnd.docker.distribution.manifest.v2+json"),
        "skopeo did not convert to v2s2"
    );
    check_store(store.dir());

    // 404: its own message.
    let missing = format!("{}/tools/nope:1", reg.host());
    let (res, _) = pull_into(&missing, &plain(), &store, &BIG);
    let e = res.unwrap_err();
    assert!(!e.retryable());
    assert_eq!(
        e.to_string(),
        format!(
            "image {missing}: not found in registry {} (404): check the name and tag",
            reg.host()
        )
    );
    let (res, _) = pull_into(
        &format!("{}/tools/app:v2", reg.host()),
        &plain(),
        &store,
        &BIG,
    );
    assert!(matches!(res.unwrap_err(), PullError::NotFound { .. }));
}

#[test]
fn blob_over_the_limit_leaves_nothing() {
    let reg = Registry::start(false, None);
    let work = tempfile::tempdir().unwrap();
    let (layout, _ix, built) = multi_arch(&work.path().join("oci"));
    reg.push(&layout.dir, "big/app:1", &["--preserve-digests"]);
    let largest = built
        .iter()
        .flat_map(|b| b.layers.iter().map(|l| l.1))
        .max()
        .unwrap();
    let store = BlobStore::new(work.path().join("artifacts"));
    let limits = PullLimits {
        max_blob_bytes: largest - 1,
    };
    let (res, _) = pull_into(
        &format!("{}/big/app:1", reg.host()),
        &plain(),
        &store,
        &limits,
    );
    let e = res.unwrap_err();
    assert!(
        matches!(
            &e,
            PullError::Blob {
                source: StoreError::TooLarge { .. },
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("--max-artifact-size"), "{e}");
    assert!(!e.retryable());
    // Only verified blobs (manifests, configs, smaller layers), no temporary file.
    check_store(store.dir());
}

#[test]
fn https_with_a_test_ca() {
    let reg = Registry::start(true, None);
    let work = tempfile::tempdir().unwrap();
    let (layout, ix, built) = multi_arch(&work.path().join("oci"));
    reg.push(&layout.dir, "secure/app:2", &["--preserve-digests"]);
    let reference = format!("{}/secure/app:2", reg.host());

    // Without the CA: a TLS error naming the fix, not retried.
    let store = BlobStore::new(work.path().join("artifacts"));
    let (res, _) = pull_into(&reference, &RegistrySettings::default(), &store, &BIG);
    let e = res.unwrap_err();
    assert!(matches!(e, PullError::Tls { .. }), "{e}");
    assert!(e.to_string().contains("[[registry]]'s ca"), "{e}");
    assert!(!e.retryable());

    let settings = RegistrySettings {
        ca_pem: reg.ca_pem.clone(),
        ..RegistrySettings::default()
    };
    let (res, _) = pull_into(&reference, &settings, &store, &BIG);
    check_multi(&res.unwrap(), &ix, &built, &store);
}

#[test]
fn htpasswd_basic_auth() {
    let reg = Registry::start(false, Some(("puller", "s3cret")));
    let work = tempfile::tempdir().unwrap();
    let (layout, ix, built) = multi_arch(&work.path().join("oci"));
    reg.push(&layout.dir, "private/app:1", &["--preserve-digests"]);
    let reference = format!("{}/private/app:1", reg.host());
    let store = BlobStore::new(work.path().join("artifacts"));

    let (res, _) = pull_into(&reference, &plain(), &store, &BIG);
    let e = res.unwrap_err();
    assert!(
        matches!(
            e,
            PullError::Unauthorized {
                with_credentials: false,
                ..
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string().contains("requires authentication (401)"),
        "{e}"
    );

    let wrong = RegistrySettings {
        username: Some("puller".into()),
        password: Some("nope".into()),
        ..plain()
    };
    let (res, _) = pull_into(&reference, &wrong, &store, &BIG);
    let e = res.unwrap_err();
    assert!(
        matches!(
            e,
            PullError::Unauthorized {
                with_credentials: true,
                ..
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string().contains("refused the credentials (401)"),
        "{e}"
    );
    assert!(!e.retryable());

    let good = RegistrySettings {
        password: Some("s3cret".into()),
        ..wrong
    };
    let (res, _) = pull_into(&reference, &good, &store, &BIG);
    check_multi(&res.unwrap(), &ix, &built, &store);
}

// ---- the fake registry ----------------------------------------------------------------------

/// Blobs of the multi-arch image, served by path.
fn fake_content(dir: &std::path::Path) -> (String, HashMap<String, Vec<u8>>, Vec<Built>) {
    let (layout, ix, built) = multi_arch(dir);
    let mut blobs = HashMap::new();
    for e in std::fs::read_dir(layout.dir.join("blobs/sha256")).unwrap() {
        let e = e.unwrap();
        blobs.insert(
            e.file_name().to_string_lossy().into_owned(),
            std::fs::read(e.path()).unwrap(),
        );
    }
    (ix, blobs, built)
}

fn serve_blob(
    blobs: &HashMap<String, Vec<u8>>,
    path: &str,
    index_sha: &str,
) -> Option<FakeResponse> {
    let (kind, reference) = path.strip_prefix("/v2/app/")?.split_once('/')?;
    let sha = if reference == "latest" {
        index_sha
    } else {
        reference.strip_prefix("sha256:")?
    };
    let body = blobs.get(sha)?.clone();
    let ct = if kind == "manifests" {
        serde_json::from_slice::<serde_json::Value>(&body).unwrap()["mediaType"]
            .as_str()
            .unwrap()
            .to_string()
    } else {
        "application/octet-stream".into()
    };
    Some(ok(&ct, body))
}

#[test]
fn bearer_token_flow_with_redirects_and_retries() {
    let work = tempfile::tempdir().unwrap();
    let (ix, blobs, built) = fake_content(&work.path().join("oci"));
    let port = Arc::new(AtomicU32::new(0));
    let hits = Arc::new(AtomicU32::new(0));
    let (p2, h2) = (port.clone(), hits.clone());
    let ix2 = ix.clone();
    let fake = Fake::start(Arc::new(
        move |path: &str, headers: &HashMap<String, String>| {
            // Blobs are redirected to a "CDN" path that needs no token (and gets none).
            if let Some(sha) = path.strip_prefix("/cdn/") {
                assert!(
                    !headers.contains_key("authorization"),
                    "the token leaked to the CDN"
                );
                return serve_blob(&blobs, &format!("/v2/app/blobs/sha256:{sha}"), &ix2)
                    .unwrap_or_else(|| status(404));
            }
            if let Some(q) = path.strip_prefix("/token?") {
                // Docker Hub's answer shape: access_token (and token); basic creds are passed through.
                assert!(q.contains("service=fake-registry"), "{q}");
                assert!(q.contains("scope=repository%3Aapp%3Apull"), "{q}");
                if headers.get("authorization").map(String::as_str) != Some("Basic dTpw") {
                    return status(401);
                }
                return ok(
                    "application/json",
                    br#"{"access_token":"tok-123","expires_in":300}"#.to_vec(),
                );
            }
            if headers.get("authorization").map(String::as_str) != Some("Bearer tok-123") {
                let mut r = status(401);
                r.headers.push((
                "WWW-Authenticate".into(),
                format!(
                    "Bearer realm=\"http://127.0.0.1:{}/token\",service=\"fake-registry\",scope=\"repository:app:pull\"",
                    p2.load(Ordering::SeqCst)
                ),
            ));
                return r;
            }
            // The first authorized blob request gets a 503, the second a 429 with Retry-After.
            if path.contains("/blobs/") {
                match h2.fetch_add(1, Ordering::SeqCst) {
                    0 => return status(503),
                    1 => {
                        let mut r = status(429);
                        r.headers.push(("Retry-After".into(), "1".into()));
                        return r;
                    }
                    _ => {}
                }
                let sha = path.rsplit_once("sha256:").unwrap().1;
                return FakeResponse {
                    status: 307,
                    headers: vec![(
                        "Location".into(),
                        format!("http://127.0.0.1:{}/cdn/{sha}", p2.load(Ordering::SeqCst)),
                    )],
                    body: vec![],
                };
            }
            serve_blob(&blobs, path, &ix2).unwrap_or_else(|| status(404))
        },
    ));
    port.store(u32::from(fake.port), Ordering::SeqCst);
    let store = BlobStore::new(work.path().join("artifacts"));
    let settings = RegistrySettings {
        insecure: true,
        username: Some("u".into()),
        password: Some("p".into()),
        ..RegistrySettings::default()
    };
    let reference = format!("{}/app:latest", fake.host());
    let (res, _) = pull_into(&reference, &settings, &store, &BIG);
    let image = res.unwrap();
    check_multi(&image, &ix, &built, &store);
    // One token request: the token serves every later request.
    let paths = fake.paths();
    assert_eq!(
        paths.iter().filter(|p| p.starts_with("/token")).count(),
        1,
        "{paths:?}"
    );
    assert!(paths.iter().any(|p| p.starts_with("/cdn/")), "{paths:?}");

    // Wrong credentials at the token service: 401 with its own message.
    let store2 = BlobStore::new(work.path().join("artifacts2"));
    let bad = RegistrySettings {
        password: Some("x".into()),
        ..settings.clone()
    };
    let (res, _) = pull_into(&reference, &bad, &store2, &BIG);
    let e = res.unwrap_err();
    assert!(
        matches!(
            e,
            PullError::Unauthorized {
                with_credentials: true,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn corrupted_and_oversized_blobs_from_a_fake() {
    let work = tempfile::tempdir().unwrap();
    let (ix, blobs, built) = fake_content(&work.path().join("oci"));
    let victim = built[0].layers[1].0.clone();
    let (ix2, victim2) = (ix.clone(), victim.clone());
    let mode = Arc::new(AtomicU32::new(0));
    let mode2 = mode.clone();
    let fake = Fake::start(Arc::new(move |path: &str, _: &HashMap<String, String>| {
        let mut r = serve_blob(&blobs, path, &ix2).unwrap_or_else(|| status(404));
        if path.ends_with(&victim2) {
            match mode2.load(Ordering::SeqCst) {
                // Same size, one byte flipped.
                0 => {
                    let last = r.body.len() - 1;
                    r.body[last] ^= 0xff;
                }
                // Far more than the manifest says.
                1 => r.body = vec![0u8; 4 << 20],
                // Gone.
                _ => r = status(404),
            }
        }
        r
    }));
    let reference = format!("{}/app:latest", fake.host());
    let store = BlobStore::new(work.path().join("artifacts"));

    let (res, _) = pull_into(&reference, &plain(), &store, &BIG);
    let e = res.unwrap_err();
    assert!(
        matches!(&e, PullError::Blob { source: StoreError::DigestMismatch { sha256, .. }, .. } if *sha256 == victim),
        "{e}"
    );
    assert!(
        e.to_string().contains(&format!("blob sha256:{victim}")),
        "{e}"
    );
    assert!(!e.retryable());
    let held = check_store(store.dir());
    assert!(!held.contains(&victim));

    mode.store(1, Ordering::SeqCst);
    let (res, _) = pull_into(&reference, &plain(), &store, &BIG);
    let e = res.unwrap_err();
    assert!(
        matches!(
            &e,
            PullError::Blob {
                source: StoreError::SizeMismatch { .. },
                ..
            }
        ),
        "{e}"
    );
    // A limit below what the registry streams (the manifest's size is within it).
    let limits = PullLimits {
        max_blob_bytes: built[0].layers[1].1 + 10,
    };
    let (res, _) = pull_into(&reference, &plain(), &store, &limits);
    assert!(res.is_err());
    let held = check_store(store.dir());
    assert!(!held.contains(&victim));

    mode.store(2, Ordering::SeqCst);
    let (res, _) = pull_into(&reference, &plain(), &store, &BIG);
    let e = res.unwrap_err();
    assert!(matches!(e, PullError::BlobNotFound { .. }), "{e}");
    assert!(e.to_string().contains("push it again"), "{e}");
    check_store(store.dir());
}

#[test]
fn connection_refused_is_retryable() {
    let port = free_port();
    let work = tempfile::tempdir().unwrap();
    let store = BlobStore::new(work.path());
    let (res, _) = pull_into(&format!("127.0.0.1:{port}/app:1"), &plain(), &store, &BIG);
    let e = res.unwrap_err();
    assert!(matches!(e, PullError::Network { .. }), "{e}");
    assert!(e.retryable());
    assert!(
        e.to_string()
            .contains(&format!("cannot reach registry 127.0.0.1:{port}")),
        "{e}"
    );
}

#[test]
fn mirror_is_used_instead_of_the_host() {
    let reg = Registry::start(false, None);
    let work = tempfile::tempdir().unwrap();
    let (layout, ix, built) = multi_arch(&work.path().join("oci"));
    reg.push(&layout.dir, "library/app:1", &["--preserve-digests"]);
    let store = BlobStore::new(work.path().join("artifacts"));
    let settings = RegistrySettings {
        insecure: true,
        mirror: Some(reg.host()),
        ..RegistrySettings::default()
    };
    // docker.io is never contacted: the mirror serves the same repository path.
    let (res, _) = pull_into("app:1", &settings, &store, &BIG);
    let image = res.unwrap();
    assert_eq!(image.reference, "docker.io/library/app:1");
    check_multi(&image, &ix, &built, &store);
}

#[test]
fn status_codes_each_have_their_message() {
    let fake = Fake::start(Arc::new(|path: &str, _: &HashMap<String, String>| {
        if path.starts_with("/v2/forbidden/") {
            status(403)
        } else if path.starts_with("/v2/limited/") {
            let mut r = status(429);
            r.headers.push(("Retry-After".into(), "0".into()));
            r
        } else if path.starts_with("/v2/broken/") {
            status(502)
        } else {
            status(404)
        }
    }));
    let work = tempfile::tempdir().unwrap();
    let store = BlobStore::new(work.path());
    let host = fake.host();
    let (res, _) = pull_into(&format!("{host}/forbidden:1"), &plain(), &store, &BIG);
    let e = res.unwrap_err();
    assert!(matches!(e, PullError::Forbidden { .. }), "{e}");
    assert!(e.to_string().contains("denied access (403)"), "{e}");
    assert!(!e.retryable());
    let (res, _) = pull_into(&format!("{host}/limited:1"), &plain(), &store, &BIG);
    let e = res.unwrap_err();
    assert!(matches!(e, PullError::RateLimited { .. }), "{e}");
    assert!(e.retryable());
    let (res, _) = pull_into(&format!("{host}/broken:1"), &plain(), &store, &BIG);
    let e = res.unwrap_err();
    assert!(matches!(e, PullError::Server { status: 502, .. }), "{e}");
    assert!(e.to_string().contains("HTTP 502 after 4 attempts"), "{e}");
    assert!(e.retryable());
    // Attempts: 4 each for the retried ones, 1 for 403.
    let paths = fake.paths();
    let count = |p: &str| paths.iter().filter(|x| x.starts_with(p)).count();
    assert_eq!(count("/v2/forbidden/"), 1, "{paths:?}");
    assert_eq!(count("/v2/limited/"), 4, "{paths:?}");
    assert_eq!(count("/v2/broken/"), 4, "{paths:?}");
    assert!(check_store(store.dir()).is_empty());
}
