//! Images through the real protocol: an in-process master serving TLS on loopback and the CLI's
//! client. Blob upload and import of a hand-made two-architecture OCI index, `get images`, the
//! pull stream's frames for one request (the placeholder image crate of the MASTER helper's
//! branch fails every pull; the REGISTRY helper's tests pull from a real registry), and removal.

use async_net::TcpListener;
use bramble_client::{Client, ClientError};
use bramble_server::api::{Config, Master};
use bramble_wire::msg::{ErrorCode, RequestBody, ResponseBody};
use bramble_wire::objects::{Kind, Object};

fn sha(b: &[u8]) -> String {
    bramble_artifact::sha256_hex(b)
}

/// Starts a master; answers its address and an admin token that pins its certificate.
fn start() -> (String, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let listener = smol::block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let cfg = Config::new(dir.path().to_path_buf(), addr.clone());
    let m = smol::block_on(Master::open(cfg)).unwrap();
    std::thread::spawn(move || smol::block_on(m.serve(listener)));
    let token = std::fs::read_to_string(dir.path().join("admin.token"))
        .unwrap()
        .trim()
        .to_string();
    (addr, token, dir)
}

/// An index over linux/arm64 and linux/arm/v7 manifests, one layer each: (blobs, root).
fn index() -> (Vec<Vec<u8>>, String) {
    let mut blobs = Vec::new();
    let mut manifests = Vec::new();
    for (arch, variant) in [("arm64", None), ("arm", Some("v7"))] {
        let layer: Vec<u8> = (0..100_000u32)
            .map(|i| (i % 251) as u8 ^ arch.len() as u8)
            .collect();
        let config = serde_json::json!({"architecture": arch, "os": "linux", "config": {"Cmd": ["/bin/sh"]}})
            .to_string()
            .into_bytes();
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": format!("sha256:{}", sha(&config)), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": format!("sha256:{}", sha(&layer)), "size": layer.len()}]
        })
        .to_string()
        .into_bytes();
        let mut platform = serde_json::json!({"architecture": arch, "os": "linux"});
        if let Some(v) = variant {
            platform["variant"] = v.into();
        }
        manifests.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{}", sha(&manifest)), "size": manifest.len(), "platform": platform
        }));
        blobs.extend([layer, config, manifest]);
    }
    let index = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests})
        .to_string()
        .into_bytes();
    let root = sha(&index);
    blobs.push(index);
    (blobs, root)
}

#[test]
fn import_list_pull_and_remove_over_the_wire() {
    let (addr, token, _dir) = start();
    smol::block_on(async {
        let mut c = Client::connect(&addr, &token).await.unwrap();
        let (blobs, root) = index();
        for b in &blobs {
            let s = sha(b);
            let ResponseBody::ArtifactProgress { mut offset } = c
                .call(RequestBody::BlobBegin {
                    sha256: s.clone(),
                    size: b.len() as u64,
                })
                .await
                .unwrap()
            else {
                panic!("BlobBegin answers the bytes held");
            };
            while offset < b.len() as u64 {
                let end = (offset as usize + bramble_artifact::CHUNK).min(b.len());
                let r = c
                    .call(RequestBody::BlobChunk {
                        sha256: s.clone(),
                        offset,
                        data: b[offset as usize..end].to_vec(),
                    })
                    .await
                    .unwrap();
                let ResponseBody::ArtifactProgress { offset: o } = r else {
                    panic!("{r:?}");
                };
                offset = o;
            }
        }
        let r = c
            .call(RequestBody::ImageImport {
                reference: "registry.lan:5000/home/app".into(),
                sha256: root.clone(),
            })
            .await
            .unwrap();
        let ResponseBody::Object(Object::Image(img)) = r else {
            panic!("{r:?}");
        };
        assert_eq!(img.reference, "registry.lan:5000/home/app:latest");
        assert_eq!(img.digest, format!("sha256:{root}"));
        assert_eq!(img.variants.len(), 2);
        // `bramble get images`.
        let r = c
            .call(RequestBody::List {
                kind: Kind::Image,
                namespace: None,
                selector: String::new(),
            })
            .await
            .unwrap();
        let ResponseBody::List { items, .. } = r else {
            panic!("{r:?}");
        };
        assert_eq!(items.len(), 1);
        // A pull: its frames share the request's id and end with the error.
        let id = c
            .start(RequestBody::ImagePull {
                reference: "127.0.0.1:1/home/other:1".into(),
            })
            .await
            .unwrap();
        loop {
            let r = c.next().await.unwrap();
            assert_eq!(r.id, id);
            match r.body {
                ResponseBody::ImageProgress { .. } => continue,
                ResponseBody::Error(e) => {
                    assert!(e.message.contains("127.0.0.1:1/home/other:1"), "{e:?}");
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
        // The connection still serves other calls; then the image goes.
        let r = c
            .call(RequestBody::ImageRemove {
                reference: "registry.lan:5000/home/app:latest".into(),
            })
            .await
            .unwrap();
        assert!(matches!(r, ResponseBody::Deleted { .. }), "{r:?}");
        let e = c
            .call(RequestBody::ImageRemove {
                reference: "registry.lan:5000/home/app".into(),
            })
            .await
            .unwrap_err();
        assert!(
            matches!(&e, ClientError::Api(a) if a.code == ErrorCode::NotFound),
            "{e:?}"
        );
    });
}
