//! Images through the master's real code paths on a real store: blob upload + import of a
//! hand-made two-architecture OCI index, removal refused while pods use it, the blob GC, the
//! scheduler's reasons, the node's assignment and what the node may fetch, and the background
//! puller (with the placeholder image crate every pull fails: its message, events and backoff).

use std::sync::Arc;
use std::time::Duration;

use bramble_wire::image_ref::ImageRef;
use bramble_wire::msg::{ErrorCode, NodeDown, RequestBody, ResponseBody};
use bramble_wire::objects::{
    Arch, Image, Kind, Meta, Node, NodeInfo, Object, Pod, PodSpec, ProcessSpec, Registry,
    RegistrySpec,
};

use super::{Config, Master, NodeLive};

fn open(dir: &std::path::Path) -> Arc<Master> {
    let cfg = Config::new(dir.to_path_buf(), "127.0.0.1:0".into());
    smol::block_on(Master::open(cfg)).unwrap()
}

fn sha(data: &[u8]) -> String {
    bramble_artifact::sha256_hex(data)
}

/// Uploads `data` as a blob in 32 KiB chunks, stopping once half-way and resuming.
async fn upload(m: &Master, data: &[u8]) -> String {
    let s = sha(data);
    let call = |body| super::client::handle_unfiltered(m, body);
    let held = |r: ResponseBody| match r {
        ResponseBody::ArtifactProgress { offset } => offset,
        other => panic!("{other:?}"),
    };
    let size = data.len() as u64;
    let mut off = held(
        call(RequestBody::BlobBegin {
            sha256: s.clone(),
            size,
        })
        .await
        .unwrap(),
    );
    let mut resumed = false;
    while off < size {
        if !resumed && off >= size / 2 && off > 0 {
            // A re-run resumes where the master is.
            resumed = true;
            let again = held(
                call(RequestBody::BlobBegin {
                    sha256: s.clone(),
                    size,
                })
                .await
                .unwrap(),
            );
            assert_eq!(again, off);
        }
        let end = (off as usize + bramble_artifact::CHUNK).min(data.len());
        off = held(
            call(RequestBody::BlobChunk {
                sha256: s.clone(),
                offset: off,
                data: data[off as usize..end].to_vec(),
            })
            .await
            .unwrap(),
        );
    }
    s
}

/// A hand-made OCI image: per architecture a layer (`layer_len` bytes), a config and a manifest;
/// an index over them. Returns (blobs, index sha256).
fn oci_index(
    tag: &str,
    archs: &[(&str, Option<&str>)],
    layer_len: usize,
) -> (Vec<Vec<u8>>, String) {
    let mut blobs = Vec::new();
    let mut manifests = Vec::new();
    for (i, (arch, variant)) in archs.iter().enumerate() {
        let layer: Vec<u8> = (0..layer_len)
            .map(|k| (k * 7 + i * 13 + tag.len()) as u8)
            .collect();
        let config = serde_json::json!({
            "architecture": arch, "os": "linux",
            "config": { "Entrypoint": ["/bin/app"], "Cmd": ["--serve"], "Env": ["PATH=/bin", "MODE=prod"],
                        "WorkingDir": "/srv", "User": "1000:1000", "ExposedPorts": { "80/tcp": {} } },
            "rootfs": { "type": "layers", "diff_ids": [] }
        })
        .to_string()
        .into_bytes();
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": { "mediaType": "application/vnd.oci.image.config.v1+json",
                        "digest": format!("sha256:{}", sha(&config)), "size": config.len() },
            "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                         "digest": format!("sha256:{}", sha(&layer)), "size": layer.len() }]
        })
        .to_string()
        .into_bytes();
        let mut platform = serde_json::json!({ "architecture": arch, "os": "linux" });
        if let Some(v) = variant {
            platform["variant"] = (*v).into();
        }
        manifests.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{}", sha(&manifest)), "size": manifest.len(),
            "platform": platform
        }));
        blobs.extend([layer, config, manifest]);
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests
    })
    .to_string()
    .into_bytes();
    let root = sha(&index);
    blobs.push(index);
    (blobs, root)
}

const REF: &str = "registry.lan:5000/home/app:1.4";

/// Uploads and imports an arm64 + amd64 image under `reference`.
async fn import(m: &Master, reference: &str) -> Image {
    import_sized(m, reference, 70_000).await
}

async fn import_sized(m: &Master, reference: &str, layer_len: usize) -> Image {
    let (blobs, root) = oci_index(reference, &[("arm64", None), ("amd64", None)], layer_len);
    for b in &blobs {
        upload(m, b).await;
    }
    match super::client::handle_unfiltered(
        m,
        RequestBody::ImageImport {
            reference: reference.into(),
            sha256: root,
        },
    )
    .await
    .unwrap()
    {
        ResponseBody::Object(Object::Image(i)) => i,
        other => panic!("{other:?}"),
    }
}

fn blob_files(m: &Master) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(super::artifact::dir(m))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| bramble_artifact::is_sha256_hex(n))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn pod(name: &str, image: &str, host: Option<&str>) -> Object {
    Object::Pod(Pod {
        meta: Meta {
            name: name.into(),
            namespace: "default".into(),
            ..Default::default()
        },
        spec: PodSpec {
            image: Some(image.into()),
            node_selector: host
                .map(|h| [(crate::sched::LABEL_HOSTNAME.to_string(), h.to_string())].into())
                .unwrap_or_default(),
            processes: vec![ProcessSpec {
                name: "main".into(),
                ..Default::default()
            }],
            ..Default::default()
        },
        ..Default::default()
    })
}

fn node(name: &str, arch: Arch) -> Object {
    let mut n = Node {
        meta: Meta {
            name: name.into(),
            ..Default::default()
        },
        ..Default::default()
    };
    n.status.info = Some(Box::new(NodeInfo {
        name: bramble_wire::Name::try_from(name).unwrap(),
        arch,
        os: Default::default(),
        kernel: Default::default(),
        board: Default::default(),
        cpus: 4,
        memory_bytes: 4 << 30,
        pids: 1000,
        cgroup: bramble_wire::CgroupVersion::V2,
        controllers: bramble_wire::Controllers(7),
        agent_version: Default::default(),
        labels: Default::default(),
    }));
    n.status.conditions = vec![bramble_wire::objects::Condition {
        kind: bramble_wire::objects::ConditionKind::Ready,
        status: true,
        message: String::new(),
        since_ms: 1,
    }];
    Object::Node(n)
}

#[test]
fn import_a_two_arch_index_then_remove_it_when_unused() {
    let dir = tempfile::tempdir().unwrap();
    let m = open(dir.path());
    smol::block_on(async {
        let img = import(&m, REF).await;
        let r = ImageRef::parse(REF).unwrap();
        assert_eq!(img.meta.name, r.object_name());
        assert_eq!(img.reference, r.normalized());
        assert!(img.pulled_ms > 0 && img.meta.revision > 0);
        let archs: Vec<Arch> = img.variants.iter().map(|v| v.arch).collect();
        assert_eq!(archs, [Arch::Aarch64, Arch::X86_64]);
        let v = &img.variants[0];
        assert_eq!(v.config.entrypoint, ["/bin/app"]);
        assert_eq!(v.config.workdir.as_deref(), Some("/srv"));
        assert_eq!(v.layers.len(), 1);
        assert_eq!(v.layers[0].size, 70_000);
        // 2 layers, 2 configs, 2 manifests, the index: all kept by the GC.
        let used = super::image::blobs_of(&img);
        assert_eq!(used.len(), 7);
        super::artifact::remove_unused_blobs(&m).await;
        assert_eq!(blob_files(&m), used);

        // A blob whose bytes do not match its announced sha256 is discarded.
        let data = vec![1u8; 100];
        let wrong = sha(b"something else");
        super::client::handle_unfiltered(
            &m,
            RequestBody::BlobBegin {
                sha256: wrong.clone(),
                size: 100,
            },
        )
        .await
        .unwrap();
        let e = super::client::handle_unfiltered(
            &m,
            RequestBody::BlobChunk {
                sha256: wrong.clone(),
                offset: 0,
                data,
            },
        )
        .await
        .unwrap_err();
        assert!(
            e.message.contains("sha256") && e.message.contains("discarded"),
            "{e:?}"
        );
        assert!(!blob_files(&m).contains(&wrong));
        // An import naming a blob that is not there says so, and records nothing.
        let e = super::client::handle_unfiltered(
            &m,
            RequestBody::ImageImport {
                reference: "127.0.0.1:1/other:1".into(),
                sha256: sha(b"never uploaded"),
            },
        )
        .await
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::Invalid);
        assert!(e.message.contains("127.0.0.1:1/other:1"), "{e:?}");

        // Used by a pod (written without a tag: matched by normalized reference): refused,
        // naming the pod, by `image rm` and by the generic delete.
        super::client::apply(&m, vec![pod("web", "registry.lan:5000/home/app:1.4", None)])
            .await
            .unwrap();
        let e = super::client::handle_unfiltered(
            &m,
            RequestBody::ImageRemove {
                reference: REF.into(),
            },
        )
        .await
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::Invalid);
        assert!(
            e.message.contains("default/web") && e.message.contains("delete them first"),
            "{e:?}"
        );
        let e = super::client::handle_unfiltered(
            &m,
            RequestBody::Delete {
                kind: Kind::Image,
                namespace: String::new(),
                name: img.meta.name.clone(),
                expected_revision: None,
            },
        )
        .await
        .unwrap_err();
        assert!(e.message.contains("default/web"), "{e:?}");
        assert_eq!(blob_files(&m), used);

        // A second image sharing nothing; an uploaded blob not imported yet (pinned).
        let other = import(&m, "registry.lan:5000/other:2").await;
        let pending = upload(&m, b"a blob of an import in progress").await;
        // Unused: removed, with its blobs only.
        m.store
            .delete(Kind::Pod, "default", "web", None)
            .await
            .unwrap();
        let r = super::client::handle_unfiltered(
            &m,
            RequestBody::ImageRemove {
                reference: REF.into(),
            },
        )
        .await
        .unwrap();
        assert!(matches!(r, ResponseBody::Deleted { .. }), "{r:?}");
        let mut left = super::image::blobs_of(&other);
        left.push(pending.clone());
        left.sort();
        assert_eq!(blob_files(&m), left);
        let e = super::client::handle_unfiltered(
            &m,
            RequestBody::ImageRemove {
                reference: REF.into(),
            },
        )
        .await
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::NotFound);
        // Re-imported with other content (the tag moved): the old content's blobs go.
        let moved = import_sized(&m, "registry.lan:5000/other:2", 1000).await;
        assert_eq!(moved.meta.uid, other.meta.uid, "the same object, updated");
        assert_ne!(moved.digest, other.digest);
        let mut left = super::image::blobs_of(&moved);
        left.push(pending);
        left.sort();
        assert_eq!(blob_files(&m), left);
        // An image cannot be applied by a client.
        let e = super::client::apply(&m, vec![Object::Image(img)])
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::Forbidden);
    });
}

#[test]
fn images_schedule_by_variant_and_reach_their_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let m = open(dir.path());
    smol::block_on(async {
        let feeder = smol::spawn(m.cache.clone().run(m.store.clone()));
        let img = import(&m, REF).await;
        let other = import(&m, "registry.lan:5000/other:2").await;
        for o in [node("pi7", Arch::Armv7), node("pi64", Arch::Aarch64)] {
            m.store.create(o).await.unwrap();
        }
        super::client::apply(
            &m,
            vec![
                pod("on-armv7", REF, Some("pi7")),
                pod("on-arm64", REF, Some("pi64")),
            ],
        )
        .await
        .unwrap();
        assert!(m.cache.catch_up(&m.store).await);
        super::dispatch::schedule_once(&m, 1).await.unwrap();
        assert!(m.cache.catch_up(&m.store).await);
        let p7 = m.cache.pod("default", "on-armv7").unwrap();
        assert_eq!(p7.spec.node_name, None);
        assert!(
            p7.status
                .message
                .contains(&format!("no linux/arm/v7 variant of image {REF}")),
            "{}",
            p7.status.message
        );
        let p64 = m.cache.pod("default", "on-arm64").unwrap();
        assert_eq!(p64.spec.node_name.as_deref(), Some("pi64"));

        // The node's assignment carries the image.
        let (tx, rx) = async_channel::bounded(64);
        m.nodes.lock().await.insert(
            "pi64".into(),
            NodeLive {
                session: Some((1, tx)),
                ..Default::default()
            },
        );
        super::dispatch::push_assignment(&m, "pi64").await;
        assert!(matches!(rx.try_recv(), Ok(NodeDown::Secrets(_))));
        let Ok(NodeDown::Assign(a)) = rx.try_recv() else {
            panic!("no assignment pushed");
        };
        assert_eq!(a.pods.len(), 1);
        assert_eq!(a.images.len(), 1);
        assert_eq!(a.images[0].reference, img.reference);
        // Unchanged: not pushed again; the image re-imported (a new revision): pushed again.
        super::dispatch::push_assignment(&m, "pi64").await;
        assert!(rx.try_recv().is_err());
        let again = import(&m, REF).await;
        assert!(again.meta.revision > img.meta.revision);
        assert!(m.cache.catch_up(&m.store).await);
        super::dispatch::push_assignment(&m, "pi64").await;
        assert!(matches!(rx.try_recv(), Ok(NodeDown::Secrets(_))));
        assert!(matches!(rx.try_recv(), Ok(NodeDown::Assign(_))));

        // The node may fetch the layers of its image, not its config, nor other images' blobs.
        let allowed = |n: &'static str, s: String| {
            let m = m.clone();
            async move { super::node::artifact_allowed(&m, n, &s).await }
        };
        for v in &img.variants {
            assert!(allowed("pi64", v.layers[0].sha256.clone()).await);
            assert!(!allowed("pi64", v.config_sha256.clone()).await);
            assert!(
                !allowed("pi7", v.layers[0].sha256.clone()).await,
                "no pod of pi7 runs"
            );
        }
        assert!(!allowed("pi64", other.variants[0].layers[0].sha256.clone()).await);
        feeder.cancel().await;
    });
}

#[test]
fn a_pod_whose_image_cannot_be_pulled_waits_with_the_error_and_no_retry_storm() {
    let dir = tempfile::tempdir().unwrap();
    let m = open(dir.path());
    smol::block_on(async {
        let feeder = smol::spawn(m.cache.clone().run(m.store.clone()));
        m.store.create(node("x86", Arch::X86_64)).await.unwrap();
        // A registry whose credentials secret is missing.
        super::client::apply(
            &m,
            vec![Object::Registry(Registry {
                meta: Meta {
                    name: "secure".into(),
                    ..Default::default()
                },
                spec: RegistrySpec {
                    host: "127.0.0.1:2".into(),
                    credentials: Some("regcred".into()),
                    ..Default::default()
                },
            })],
        )
        .await
        .unwrap();
        super::client::apply(
            &m,
            vec![
                pod("a", "127.0.0.1:1/app:1", None),
                pod("b", "127.0.0.1:1/app:1", None),
                pod("c", "127.0.0.1:2/app", None),
            ],
        )
        .await
        .unwrap();
        // (The puller starts once the pods are cached, so each failure finds both pods of ref 1.)
        assert!(m.cache.catch_up(&m.store).await);
        let puller = smol::spawn(super::image::pull_loop(m.clone()));
        // Until both pulls failed (a refused connection is retried inside a pull for ~3.5 s),
        // then a few seconds more: one pull per reference, however many pods and passes.
        let mut failed_at = None;
        for i in 0..150 {
            smol::Timer::after(Duration::from_millis(100)).await;
            super::dispatch::schedule_once(&m, 1).await.unwrap();
            assert!(m.cache.catch_up(&m.store).await);
            let msg = |n| m.cache.pod("default", n).unwrap().status.message;
            if failed_at.is_none()
                && msg("a").starts_with("image ")
                && msg("c").starts_with("image ")
            {
                failed_at = Some(i);
            }
            if failed_at.is_some_and(|f| i >= f + 20) {
                break;
            }
        }
        assert_eq!(
            m.images.attempts.load(std::sync::atomic::Ordering::Relaxed),
            2,
            "one pull per reference, then backoff"
        );
        assert!(m.cache.catch_up(&m.store).await);
        let a = m.cache.pod("default", "a").unwrap();
        assert!(a.spec.node_name.is_none());
        assert!(
            a.status.message.starts_with("image 127.0.0.1:1/app:1: ")
                && a.status
                    .message
                    .contains("cannot reach registry 127.0.0.1:1"),
            "{}",
            a.status.message
        );
        let c = m.cache.pod("default", "c").unwrap();
        assert!(
            c.status.message.contains("default/regcred")
                && c.status.message.contains("username and password"),
            "{}",
            c.status.message
        );
        // One event per failure and waiting pod.
        let events = m.events.list(Some("default")).await.unwrap();
        let failed: Vec<String> = events
            .iter()
            .filter_map(|o| match o {
                Object::Event(e) if e.reason == "FailedPull" => Some(e.object_name.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(failed.len(), 3, "{failed:?}");
        // The message is written once: the scheduler's later passes change nothing.
        let rev = m.cache.pod("default", "a").unwrap().meta.revision;
        super::dispatch::schedule_once(&m, 2).await.unwrap();
        assert!(m.cache.catch_up(&m.store).await);
        assert_eq!(m.cache.pod("default", "a").unwrap().meta.revision, rev);

        // Creating the missing secret retries that reference at once (not after the backoff).
        super::client::apply(
            &m,
            vec![Object::Secret(bramble_wire::objects::Secret {
                meta: Meta {
                    name: "regcred".into(),
                    namespace: "default".into(),
                    ..Default::default()
                },
                data: [
                    ("username".to_string(), b"u".to_vec()),
                    ("password".to_string(), b"p".to_vec()),
                ]
                .into(),
            })],
        )
        .await
        .unwrap();
        let mut retried = false;
        for _ in 0..100 {
            smol::Timer::after(Duration::from_millis(100)).await;
            super::dispatch::schedule_once(&m, 3).await.unwrap();
            assert!(m.cache.catch_up(&m.store).await);
            if m.cache
                .pod("default", "c")
                .unwrap()
                .status
                .message
                .contains("cannot reach registry 127.0.0.1:2")
            {
                retried = true;
                break;
            }
        }
        assert!(
            retried,
            "{}",
            m.cache.pod("default", "c").unwrap().status.message
        );
        // Both references were retried (the reset is for every failing reference), once each.
        smol::Timer::after(Duration::from_millis(4000)).await;
        assert_eq!(
            m.images.attempts.load(std::sync::atomic::Ordering::Relaxed),
            4
        );

        // `bramble image pull` answers the error as the last frame of its stream.
        let (tx, rx) = super::client::Outbox::new(16);
        super::image::pull_stream(m.clone(), 9, "127.0.0.1:1/app:1".into(), tx).await;
        let mut last = None;
        while let Ok((r, _)) = rx.try_recv() {
            assert_eq!(r.id, 9);
            last = Some(r.body);
        }
        match last {
            Some(ResponseBody::Error(e)) => {
                assert!(e.message.contains("cannot reach registry"), "{e:?}")
            }
            other => panic!("{other:?}"),
        }
        // A reference that does not parse is refused at once.
        let (tx, rx) = super::client::Outbox::new(16);
        super::image::pull_stream(m.clone(), 10, "Bad Ref".into(), tx).await;
        assert!(matches!(
            rx.try_recv().map(|(r, _)| r.body),
            Ok(ResponseBody::Error(e)) if e.code == ErrorCode::Invalid
        ));
        puller.cancel().await;
        feeder.cancel().await;
    });
}

#[test]
fn a_second_registry_for_the_same_host_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let m = open(dir.path());
    let reg = |name: &str, host: &str| {
        Object::Registry(Registry {
            meta: Meta {
                name: name.into(),
                ..Default::default()
            },
            spec: RegistrySpec {
                host: host.into(),
                insecure: true,
                ..Default::default()
            },
        })
    };
    smol::block_on(async {
        super::client::apply(&m, vec![reg("lan", "registry.lan:5000")])
            .await
            .unwrap();
        // Applying the same registry again (changed) is fine.
        let mut again = reg("lan", "registry.lan:5000");
        if let Object::Registry(r) = &mut again {
            r.spec.insecure = false;
        }
        super::client::apply(&m, vec![again]).await.unwrap();
        // Another name for the same host is refused, naming the one that has it.
        let e = super::client::apply(&m, vec![reg("lan2", "Registry.lan:5000")])
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::Conflict, "{e:?}");
        assert!(e.message.contains("\"lan\""), "{e:?}");
        // And so are two in one apply.
        let e = super::client::apply(&m, vec![reg("a", "h.lan"), reg("b", "h.lan")])
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::Conflict, "{e:?}");
    });
}
