//! An image pod's root end to end on this host (root): a three-layer image built here (one
//! layer deletes a file with `.wh.`, one makes a directory opaque) is unpacked with the
//! worker's layer code and run through the runtime with an overlayfs root; the image's
//! Entrypoint/Cmd/Env/WorkingDir/User take effect, `command`/`args` override them, the pod
//! writes to its own upper layer, which is gone with the pod.

mod runtime_support;

use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bramble_artifact::layer::{Compression, LayerOptions, unpack_layer};
use bramble_wire::objects::{ImageConfig, NetworkMode, PodPhase, ProcessSpec, RestartPolicy};
use bramble_worker::runtime::{PodImage, PodToRun};
use runtime_support::*;

enum E<'a> {
    Dir(&'a str, u32),
    File(&'a str, &'a [u8], u32, u32),
    Link(&'a str, &'a str),
}

fn layer(entries: &[E<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        match e {
            E::Dir(p, uid) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_uid(u64::from(*uid));
                h.set_gid(u64::from(*uid));
                h.set_size(0);
                b.append_data(&mut h, p, &[][..]).unwrap();
            }
            E::File(p, data, mode, uid) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_uid(u64::from(*uid));
                h.set_gid(u64::from(*uid));
                h.set_size(data.len() as u64);
                b.append_data(&mut h, p, *data).unwrap();
            }
            E::Link(p, target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, p, target).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    // The worker's own dev-dependencies have no gzip encoder: use the host's gzip.
    let mut child = std::process::Command::new("gzip")
        .arg("-c")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("gzip (Debian package gzip)");
    let mut stdin = child.stdin.take().unwrap();
    let data = bytes.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data).unwrap());
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(out.status.success());
    out.stdout
}

/// The three layer blobs, bottom first.
fn blobs() -> Vec<(Vec<u8>, Compression)> {
    let busybox = std::fs::read("/bin/busybox").expect("/bin/busybox (busybox-static)");
    let base = layer(&[
        E::Dir("bin", 0),
        E::File("bin/busybox", &busybox, 0o755, 0),
        E::Link("bin/sh", "busybox"),
        E::Dir("etc", 0),
        E::File(
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\napp:x:1234:1234:app:/app:/bin/sh\n",
            0o644,
            0,
        ),
        E::File("etc/group", b"root:x:0:\napp:x:1234:\n", 0o644, 0),
        E::File("etc/gone", b"deleted by layer 2\n", 0o644, 0),
        E::Dir("data", 0),
        E::File("data/old-1", b"lower\n", 0o644, 0),
        E::File("data/old-2", b"lower\n", 0o644, 0),
        E::Dir("app", 1234),
    ]);
    let middle = layer(&[
        E::File("etc/.wh.gone", b"", 0o644, 0),
        E::File("data/.wh..wh..opq", b"", 0o644, 0),
        E::File("data/new", b"upper\n", 0o644, 0),
    ]);
    // Layers carry their parents' entries (as docker and buildkit write them): without one,
    // overlayfs would show the directory as its upper layer's implicit, root-owned copy.
    let top = layer(&[
        E::Dir("app", 1234),
        E::File("app/hello.txt", b"hello from layer 3\n", 0o644, 1234),
    ]);
    vec![
        (gzip(&base), Compression::Gzip),
        (middle, Compression::None),
        (gzip(&top), Compression::Gzip),
    ]
}

/// Unpacks the three layers into `<dir>/<sha>/`; returns their names, bottom first.
fn build_image(dir: &Path) -> Vec<String> {
    let blobs = blobs();
    let opts = LayerOptions {
        limits: bramble_artifact::Limits::default(),
        keep_owners: true,
    };
    let mut names = Vec::new();
    for (blob, c) in &blobs {
        let sha = bramble_artifact::sha256_hex(blob);
        unpack_layer(
            &blob[..],
            *c,
            &dir.join(&sha),
            &opts,
            &mut bramble_worker::sys::layers::OverlayWhiteouts,
        )
        .unwrap();
        names.push(sha);
    }
    names
}

fn image_pod(name: &str, processes: Vec<ProcessSpec>, layers: &Path, names: &[String]) -> PodToRun {
    let mut p = pod(name, processes, RestartPolicy::Never);
    p.spec.network = NetworkMode::None;
    p.spec.image = Some("registry.test:5000/app:1".into());
    let mut run = PodToRun::new(p);
    run.image = Some(PodImage {
        reference: "registry.test:5000/app:1".into(),
        config: ImageConfig {
            entrypoint: vec!["/bin/sh".into(), "-c".into()],
            cmd: vec![
                "echo cwd=$(pwd) uid=$(id -u) gid=$(id -g) greet=$GREETING mode=$MODE; \
                 echo data=$(ls /data | tr '\\n' ' '); \
                 test -e /etc/gone && echo gone=present || echo gone=absent; \
                 echo mine > /app/written && echo wrote=$(cat /app/written)"
                    .into(),
            ],
            env: vec![
                ("PATH".into(), "/bin".into()),
                ("GREETING".into(), "from-image".into()),
                ("MODE".into(), "image".into()),
            ],
            workdir: Some("/app".into()),
            user: Some("1234:1234".into()),
            exposed_ports: Vec::new(),
        },
        overlay: Some((layers.to_path_buf(), names.iter().rev().cloned().collect())),
    });
    run
}

fn proc(command: &[&str], args: &[&str]) -> ProcessSpec {
    ProcessSpec {
        name: "main".into(),
        command: command.iter().map(|s| s.to_string()).collect(),
        args: args.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

#[test]
fn an_image_pod_runs_on_an_overlay_of_its_layers() {
    assert!(
        bramble_worker::sys::layers::overlay_supported(),
        "this test needs overlayfs in the kernel"
    );
    let env = Env::new("imgroot");
    let store = tempfile::tempdir().unwrap();
    let layers = store.path().join("layers");
    std::fs::create_dir_all(&layers).unwrap();
    let names = build_image(&layers);

    // The overlay format on disk: a char device 0:0 for the deleted file, the opaque xattr.
    let wh = std::fs::symlink_metadata(layers.join(&names[1]).join("etc/gone")).unwrap();
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0, "{wh:?}");
    assert_eq!(
        bramble_worker::sys::layers::opaque_of(&layers.join(&names[1]).join("data")),
        Some(b"y".to_vec())
    );
    assert_eq!(
        std::fs::symlink_metadata(layers.join(&names[0]).join("app"))
            .unwrap()
            .uid(),
        1234,
        "owners kept"
    );

    // No command, no args: Entrypoint + Cmd, the image's Env/WorkingDir/User.
    let mut main = proc(&[], &[]);
    main.env = vec![("MODE".into(), "pod".into())];
    let run = image_pod("imgroot", vec![main], &layers, &names);
    let mut h = env.rt.start_pod_with(&run, env.logs.path(), None).unwrap();
    let st = wait_for(&h, 20, "completion", finished);
    let log = env.log("imgroot", "main");
    assert_eq!(st.phase, PodPhase::Succeeded, "{st:?}\n{log}");
    assert!(
        log.contains("cwd=/app uid=1234 gid=1234 greet=from-image mode=pod"),
        "{log}"
    );
    assert!(
        log.contains("data=new \n") || log.contains("data=new\n"),
        "{log}"
    );
    assert!(log.contains("gone=absent"), "{log}");
    assert!(log.contains("wrote=mine"), "{log}");
    // The write went to the pod's own upper layer, not to a layer.
    let writable = env.state.path().join(h.key().to_string()).join("rw");
    assert_eq!(
        std::fs::read(writable.join("upper/app/written")).unwrap(),
        b"mine\n"
    );
    for n in &names {
        assert!(!layers.join(n).join("app/written").exists());
    }
    h.stop(Duration::from_secs(2)).unwrap();
    assert!(
        !writable.exists(),
        "the writable layer is removed with the pod"
    );
    assert!(!env.state.path().join(h.key().to_string()).exists());

    // `args` replaces Cmd (the Entrypoint stays); `command` replaces the Entrypoint.
    let run = image_pod(
        "imgargs",
        vec![
            proc(&[], &["echo args-replaced-cmd in $(pwd)"]),
            ProcessSpec {
                name: "other".into(),
                workdir: Some("/".into()),
                user: Some(bramble_wire::objects::IdRef::Id(0)),
                ..proc(&["/bin/busybox", "echo"], &["command", "wins"])
            },
        ],
        &layers,
        &names,
    );
    let mut h = env.rt.start_pod_with(&run, env.logs.path(), None).unwrap();
    let st = wait_for(&h, 20, "completion", finished);
    let (a, b) = (env.log("imgargs", "main"), env.log("imgargs", "other"));
    assert_eq!(st.phase, PodPhase::Succeeded, "{st:?}\n{a}\n{b}");
    assert!(a.contains("args-replaced-cmd in /app"), "{a}");
    assert!(b.contains("command wins"), "{b}");
    h.stop(Duration::from_secs(2)).unwrap();
    let _: PathBuf = layers;
}

/// Without overlayfs: the same layers flattened into one tree, shared read-only.
#[test]
fn a_flattened_image_applies_whiteouts_and_opaque_directories() {
    use bramble_wire::objects::{ImageLayer, ImageVariant, LayerCompression};
    let env = Env::new("imgflat");
    let store = tempfile::tempdir().unwrap();
    let layers = store.path().join("layers");
    let images = store.path().join("images");
    std::fs::create_dir_all(&layers).unwrap();
    std::fs::create_dir_all(&images).unwrap();
    let mut v = ImageVariant {
        arch: bramble_wire::Arch::X86_64,
        manifest_digest: format!("sha256:{}", "5".repeat(64)),
        config_sha256: "6".repeat(64),
        config: ImageConfig::default(),
        layers: Vec::new(),
    };
    for (blob, c) in blobs() {
        let sha = bramble_artifact::sha256_hex(&blob);
        std::fs::write(layers.join(format!("{sha}.blob")), &blob).unwrap();
        v.layers.push(ImageLayer {
            sha256: sha,
            size: blob.len() as u64,
            compression: match c {
                Compression::Gzip => LayerCompression::Gzip,
                _ => LayerCompression::None,
            },
        });
    }
    bramble_worker::agent::images::flatten_image(&layers, &images, "registry.test:5000/app:1", &v)
        .unwrap();
    let tree = images.join("5".repeat(64));
    assert!(!tree.join("etc/gone").exists());
    assert!(tree.join("etc/passwd").exists());
    let mut data: Vec<_> = std::fs::read_dir(tree.join("data"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    data.sort();
    assert_eq!(data, ["new"]);
    assert_eq!(
        std::fs::read(tree.join("app/hello.txt")).unwrap(),
        b"hello from layer 3\n"
    );
    assert!(!images.join(format!("{}.tmp", "5".repeat(64))).exists());

    let mut p = pod(
        "imgflat",
        vec![ProcessSpec {
            name: "main".into(),
            command: vec![
                "/bin/sh".into(),
                "-c".into(),
                "echo data=$(ls /data); test -e /etc/gone && echo gone=present || echo gone=absent; \
                 touch /app/x 2>/dev/null && echo root=rw || echo root=ro"
                    .into(),
            ],
            env: vec![("PATH".into(), "/bin".into())],
            ..Default::default()
        }],
        RestartPolicy::Never,
    );
    p.spec.network = NetworkMode::None;
    p.spec.image = Some("registry.test:5000/app:1".into());
    let mut run = PodToRun::new(p);
    run.rootfs = Some(tree.display().to_string());
    run.image = Some(PodImage {
        reference: "registry.test:5000/app:1".into(),
        config: ImageConfig::default(),
        overlay: None,
    });
    let mut h = env.rt.start_pod_with(&run, env.logs.path(), None).unwrap();
    let st = wait_for(&h, 20, "completion", finished);
    let log = env.log("imgflat", "main");
    assert_eq!(st.phase, PodPhase::Succeeded, "{st:?}\n{log}");
    assert!(
        log.contains("data=new") && log.contains("gone=absent"),
        "{log}"
    );
    assert!(log.contains("root=ro"), "{log}");
    h.stop(Duration::from_secs(2)).unwrap();
}
