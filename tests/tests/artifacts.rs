//! Artifacts, the whole path with the real binaries on this x86_64 host (root): a busybox rootfs
//! tarball pushed with `bramble artifact push`, pulled and unpacked by the worker, a pod running
//! from it; resumed uploads; a `../` entry refused at push; the scheduler's reasons.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bramble_tests::{MasterProc, require_root, start_worker, wait_for};
use bramble_wire::Arch;
use bramble_wire::msg::{RequestBody, ResponseBody};

/// A rootfs with Debian's static busybox as `/bin/busybox` and `/bin/sh`, as a tarball.
fn busybox_tarball(dir: &Path) -> PathBuf {
    let bb = Path::new("/bin/busybox");
    assert!(
        bb.exists(),
        "/bin/busybox is missing: install Debian's busybox-static (./scripts/dev test does)"
    );
    let root = dir.join("bbroot");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy(bb, root.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", root.join("bin/sh")).unwrap();
    // gzip-compressed: the master checks and the worker unpacks it inflating on the fly (the
    // other tarballs here, and the QEMU suite's, are plain).
    let out = dir.join("busybox.tar.gz");
    tar_dir(&root, &out);
    out
}

fn tar_dir(root: &Path, out: &Path) {
    let gz = out.extension().is_some_and(|e| e == "gz");
    let st = Command::new("tar")
        .arg("-C")
        .arg(root)
        .arg(if gz { "-czf" } else { "-cf" })
        .arg(out)
        .arg(".")
        .status()
        .expect("run tar");
    assert!(st.success(), "tar failed");
}

/// A tarball with a `../evil` entry (written raw: tar tools refuse to make one).
fn evil_tarball(path: &Path) {
    let mut h = tar::Header::new_gnu();
    h.as_old_mut().name[..7].copy_from_slice(b"../evil");
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(5);
    h.set_mode(0o644);
    h.set_cksum();
    let mut v = h.as_bytes().to_vec();
    v.extend_from_slice(b"evil\n");
    v.resize(1024, 0);
    v.extend_from_slice(&[0; 1024]);
    std::fs::write(path, v).unwrap();
}

fn pod(name: &str, rootfs: &str, script: &str) -> String {
    format!(
        r#"
[[pod]]
name = "{name}"
restart_policy = "Never"
rootfs = "{rootfs}"
[[pod.process]]
name = "main"
command = ["/bin/busybox", "sh", "-c", "{script}"]
memory = "32Mi"
"#
    )
}

#[test]
fn a_pod_runs_from_a_pushed_busybox_artifact() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("master");
    let m = MasterProc::start(&data, &["--heartbeat-interval", "500ms"]);
    // MasterProc::start returns once admin.token exists and the port accepts, which can be
    // before join.token is written (the listener is bound before the tokens are made).
    wait_for(Duration::from_secs(10), "join.token", || {
        data.join("join.token").exists().then_some(())
    });
    let state = tmp.path().join("n1");
    let _w = start_worker(&m, "n1", &state, &[]);
    let t = std::time::Instant::now();
    while !m.node_ready("n1") {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "node n1 not Ready after 30 s; worker log:\n{}\nmaster log:\n{}",
            std::fs::read_to_string(state.with_extension("worker.log")).unwrap_or_default(),
            m.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let tarball = busybox_tarball(tmp.path());
    let out = m.ok(&[
        "artifact",
        "push",
        tarball.to_str().unwrap(),
        "--arch",
        "x86_64",
    ]);
    assert!(out.contains("artifact/busybox x86_64"), "{out}");
    let list = m.ok(&["artifact", "list"]);
    assert!(
        list.lines()
            .any(|l| l.starts_with("busybox") && l.contains("x86_64")),
        "{list}"
    );
    // Pushing again is a no-op.
    let again = m.ok(&[
        "artifact",
        "push",
        tarball.to_str().unwrap(),
        "--arch",
        "x86_64",
    ]);
    assert!(again.contains("already uploaded"), "{again}");

    // A service known before the pod starts: a pod with its own root finds it by name.
    let svc = tmp.path().join("svc.toml");
    std::fs::write(
        &svc,
        "[[service]]\nname = \"web-api\"\nselector = { app = \"web\" }\nport = 18090\ntarget_port = 18091\n",
    )
    .unwrap();
    m.ok(&["apply", "-f", svc.to_str().unwrap()]);
    wait_for(Duration::from_secs(10), "endpoints of web-api", || {
        m.cli(&["get", "ep", "web-api"])
            .status
            .success()
            .then_some(())
    });
    // The push to the worker: it keeps the last set in its state dir.
    wait_for(Duration::from_secs(10), "web-api pushed to n1", || {
        std::fs::read(state.join("endpoints"))
            .ok()
            .filter(|b| b.windows(7).any(|w| w == b"web-api"))
            .map(|_| ())
    });
    let f = tmp.path().join("pod.toml");
    std::fs::write(
        &f,
        pod(
            "bb",
            "artifact:busybox",
            "echo hi from artifact; ls /; cat /etc/hosts",
        ),
    )
    .unwrap();
    m.ok(&["apply", "-f", f.to_str().unwrap()]);
    wait_for(Duration::from_secs(60), "pod bb Succeeded", || {
        m.pod_status("bb").and_then(|(p, msg)| {
            assert_ne!(p, "Failed", "pod bb failed: {msg}");
            (p == "Succeeded").then_some(())
        })
    });
    let logs = m.ok(&["logs", "bb"]);
    assert!(logs.contains("hi from artifact"), "{logs}");
    assert!(
        // The pod has its own network (the default): the service is at its node's bridge.
        logs.contains("\tweb-api") && logs.contains("\tbb"),
        "the pod's /etc/hosts names the service and the pod: {logs}"
    );
    // `ls /` lists the artifact's root, not the host's.
    let entries: Vec<&str> = logs
        .lines()
        .skip(1)
        .flat_map(|l| l.split_whitespace())
        .collect();
    assert!(entries.contains(&"bin"), "{logs}");
    assert!(
        !entries.contains(&"usr") && !entries.contains(&"home"),
        "{logs}"
    );
    // The tree is cached on the node by sha256, the tarball gone.
    let sha = bramble_artifact::sha256_file(&tarball).unwrap();
    assert!(
        state
            .join("artifacts")
            .join(&sha)
            .join("bin/busybox")
            .is_file()
    );
    assert!(
        !state
            .join("artifacts")
            .join(format!("{sha}.partial"))
            .exists()
    );

    // A second pod shares the unpacked tree and cannot write to it.
    std::fs::write(
        &f,
        pod(
            "bb2",
            "artifact:busybox",
            "touch /bin/x 2>/dev/null && echo writable || echo read-only; touch /tmp/x && echo tmp ok",
        ),
    )
    .unwrap();
    m.ok(&["apply", "-f", f.to_str().unwrap()]);
    wait_for(Duration::from_secs(30), "pod bb2 Succeeded", || {
        m.pod_status("bb2")
            .and_then(|(p, _)| (p == "Succeeded").then_some(()))
    });
    let logs = m.ok(&["logs", "bb2"]);
    assert!(
        logs.contains("read-only") && logs.contains("tmp ok"),
        "{logs}"
    );

    // An artifact with no x86_64 variant: the pod stays Pending with the scheduler's reason.
    let arm_root = tmp.path().join("armroot");
    std::fs::create_dir_all(arm_root.join("bin")).unwrap();
    std::fs::write(arm_root.join("bin/hello"), b"not really arm").unwrap();
    let arm = tmp.path().join("armonly.tar");
    tar_dir(&arm_root, &arm);
    m.ok(&[
        "artifact",
        "push",
        arm.to_str().unwrap(),
        "--arch",
        "aarch64",
    ]);
    std::fs::write(&f, pod("armpod", "artifact:armonly", "true")).unwrap();
    m.ok(&["apply", "-f", f.to_str().unwrap()]);
    let want =
        "0/1 nodes available: 1 no artifact variant for their architecture (armonly has aarch64)";
    wait_for(Duration::from_secs(20), "armpod's reason", || {
        m.pod_status("armpod")
            .and_then(|(p, msg)| (p == "Pending" && msg == want).then_some(()))
    });
    // A missing artifact says how to push it.
    std::fs::write(&f, pod("nopod", "artifact:nope", "true")).unwrap();
    m.ok(&["apply", "-f", f.to_str().unwrap()]);
    wait_for(Duration::from_secs(20), "nopod's reason", || {
        m.pod_status("nopod").and_then(|(_, msg)| {
            (msg == "artifact nope not found: push it with bramble artifact push").then_some(())
        })
    });

    // Deleting an artifact removes its blob from the master.
    let blobs = data.join("artifacts");
    assert!(blobs.join(&sha).exists());
    m.ok(&["delete", "pod", "bb"]);
    m.ok(&["delete", "pod", "bb2"]);
    m.ok(&["delete", "artifact", "busybox"]);
    // An artifact pods still use cannot be deleted.
    let o = m.cli(&["delete", "artifact", "armonly"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(
        err.contains("default/armpod") && err.contains("delete them first"),
        "{err}"
    );
    assert!(!blobs.join(&sha).exists(), "blob left after delete");
}

#[test]
fn uploads_resume_and_unsafe_tarballs_are_refused_at_push() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("master");
    let m = MasterProc::start(&data, &[]);

    // A 4 MiB tarball; upload its first 1 MiB through the API, then drop the connection.
    let root = tmp.path().join("big");
    std::fs::create_dir_all(&root).unwrap();
    let mut x: u64 = 0x9e3779b97f4a7c15;
    let blob: Vec<u8> = (0..4 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(root.join("blob"), &blob).unwrap();
    let big = tmp.path().join("big.tar");
    tar_dir(&root, &big);
    let bytes = std::fs::read(&big).unwrap();
    let sha = bramble_artifact::sha256_hex(&bytes);
    {
        let mut c = m.client();
        smol::block_on(async {
            let r = c
                .call(RequestBody::ArtifactBegin {
                    name: "big".into(),
                    arch: Arch::X86_64,
                    sha256: sha.clone(),
                    size: bytes.len() as u64,
                })
                .await
                .unwrap();
            assert_eq!(r, ResponseBody::ArtifactProgress { offset: 0 });
            for (i, chunk) in bytes[..1 << 20].chunks(32 << 10).enumerate() {
                let r = c
                    .call(RequestBody::ArtifactChunk {
                        sha256: sha.clone(),
                        offset: (i * (32 << 10)) as u64,
                        data: chunk.to_vec(),
                    })
                    .await
                    .unwrap();
                assert_eq!(
                    r,
                    ResponseBody::ArtifactProgress {
                        offset: ((i + 1) * (32 << 10)) as u64
                    }
                );
            }
            // A chunk at the wrong offset is refused with where to resume.
            let e = c
                .call(RequestBody::ArtifactChunk {
                    sha256: sha.clone(),
                    offset: 7,
                    data: vec![0; 10],
                })
                .await
                .unwrap_err();
            assert!(e.to_string().contains("holds 1048576 bytes"), "{e}");
        });
    }
    let args = [
        "artifact",
        "push",
        big.to_str().unwrap(),
        "--arch",
        "x86_64",
    ];
    let o = m.cli(&args);
    let out = bramble_tests::succeeded(&args, o);
    assert!(out.contains("(resumed at 1048576)"), "{out}");
    assert_eq!(
        bramble_artifact::sha256_file(&data.join("artifacts").join(&sha)).unwrap(),
        sha
    );

    // `../evil` is refused at push, naming the file and the entry; nothing is kept.
    let evil = tmp.path().join("evil.tar");
    evil_tarball(&evil);
    let o = m.cli(&[
        "artifact",
        "push",
        evil.to_str().unwrap(),
        "--arch",
        "x86_64",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(6), "{err}");
    assert!(err.contains("evil.tar"), "{err}");
    assert!(err.contains("tar entry \"../evil\""), "{err}");
    assert!(err.contains("\"..\""), "{err}");
    let left: Vec<_> = std::fs::read_dir(data.join("artifacts"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, vec![sha.clone()], "only the good blob is kept");
    let list = m.ok(&["get", "artifacts"]);
    assert!(!list.contains("evil"), "{list}");

    // A pod naming an artifact that cannot exist is refused at apply, naming the field.
    let f = tmp.path().join("bad.toml");
    std::fs::write(&f, pod("badpod", "artifact:Bad_Name", "true")).unwrap();
    let o = m.cli(&["apply", "-f", f.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(6), "{err}");
    assert!(err.contains("rootfs"), "{err}");

    // A name that is not a DNS label is refused before anything is sent.
    let o = m.cli(&[
        "artifact",
        "push",
        big.to_str().unwrap(),
        "--arch",
        "x86_64",
        "--name",
        "Bad_Name",
    ]);
    assert_eq!(o.status.code(), Some(6));
}
