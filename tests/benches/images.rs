//! Image distribution on loopback with the real binaries (issue 15):
//!
//! ```text
//! cargo build --release -p bramble-cli -p bramble-worker
//! sudo cargo bench -p bramble-tests --bench images
//! ```
//!
//! Like the other benches it builds nothing and uses `target/release/bramble` and
//! `target/release/bramble-worker`. `BENCH_IMAGE_MIB` (default 100) sets the payload layer's
//! size. The image is the kit's `oci::bench_layout` (the demo image's three busybox layers plus
//! one layer of incompressible bytes), pushed to a `docker-registry` on loopback (plain HTTP).
//!
//! - baselines, same run: a loopback TLS copy of the same number of bytes (rustls, AES-128-GCM
//!   as the worker speaks, 32 KiB writes; `common/throughput.rs`); `skopeo copy` of the image from the registry to a local OCI dir; `tar -xzf` of
//!   the image's layers (what the node's unpack does);
//! - pull: `bramble image pull` (registry → master, digests verified, blobs stored);
//! - node: apply → Running of a pod with the image on a real worker (layer fetch master → node,
//!   verify, unpack, overlay root, start), minus the same for the small demo image measured
//!   in the same run;
//! - start with a cached image: apply → Running of a second pod with the same image, against
//!   a pod whose root is an artifact of the same busybox.
#![forbid(unsafe_code)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use bramble_testkit::oci::{self, Platform};
use bramble_testkit::registry::{Mode, Registry};
use bramble_tests::{MasterProc, start_worker, wait_for};

#[path = "common/throughput.rs"]
mod throughput;
use throughput::{mb_s, tls_baseline};

fn apply_to_running(m: &MasterProc, dir: &Path, pod: &str, root: &str) -> Duration {
    let f = dir.join(format!("{pod}.toml"));
    let proc = if root.starts_with("artifact:") {
        format!(
            "rootfs = \"{root}\"\n[[pod.process]]\nname = \"main\"\ncommand = [\"/bin/busybox\", \"sleep\", \"60\"]\n"
        )
    } else {
        format!("image = \"{root}\"\n[[pod.process]]\nname = \"main\"\n")
    };
    std::fs::write(
        &f,
        format!("[[pod]]\nname = \"{pod}\"\nrestart_policy = \"Never\"\n{proc}"),
    )
    .unwrap();
    let t = Instant::now();
    m.ok(&["apply", "-f", f.to_str().unwrap()]);
    wait_for(
        Duration::from_secs(600),
        &format!("pod {pod} Running"),
        || {
            let o = m.cli(&["get", "pod", pod, "-o", "json"]);
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
            let phase = v["status"]["phase"].as_str()?.to_string();
            assert_ne!(phase, "Failed", "{v}");
            (phase == "Running").then_some(())
        },
    );
    t.elapsed()
}

fn main() {
    let mib: usize = std::env::var("BENCH_IMAGE_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let big = oci::bench_layout(&dir.join("big"), "1", mib << 20);
    let small = oci::demo_layout(&dir.join("small"), "1", &[Platform::Amd64]);
    let blobs: Vec<String> = big.layers[0].1.clone();
    let size: u64 = blobs
        .iter()
        .map(|d| std::fs::metadata(big.blob(d)).unwrap().len())
        .sum();
    println!(
        "image bench: {:.1} MiB in {} layers",
        size as f64 / (1 << 20) as f64,
        blobs.len()
    );
    let reg = Registry::start(Mode::Http);
    let big_ref = reg.push(&big, "bench/big:1");
    let small_ref = reg.push(&small, "bench/small:1");

    let tls = tls_baseline(size, None);
    println!(
        "baseline: loopback TLS copy {:.0} MB/s ({:.2} s)",
        mb_s(size, tls),
        tls.as_secs_f64()
    );
    let out = dir.join("skopeo-copy");
    let t = Instant::now();
    let st = Command::new("skopeo")
        .args([
            "--insecure-policy",
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{big_ref}"),
            &format!("oci:{}:1", out.display()),
        ])
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "skopeo copy");
    let skopeo = t.elapsed();
    println!(
        "baseline: skopeo copy registry -> local OCI dir {:.0} MB/s ({:.2} s)",
        mb_s(size, skopeo),
        skopeo.as_secs_f64()
    );
    let x = dir.join("tar-x");
    std::fs::create_dir_all(&x).unwrap();
    let t = Instant::now();
    for d in &blobs {
        let st = Command::new("tar")
            .arg("-C")
            .arg(&x)
            .arg("-xzf")
            .arg(big.blob(d))
            .status()
            .unwrap();
        assert!(st.success());
    }
    let untar = t.elapsed();
    println!(
        "baseline: tar -xzf of the layers {:.0} MB/s ({:.2} s)",
        mb_s(size, untar),
        untar.as_secs_f64()
    );

    let m = MasterProc::start(&dir.join("master"), &["--heartbeat-interval", "1s"]);
    let f = dir.join("registry.toml");
    std::fs::write(
        &f,
        format!(
            "[[registry]]\nname = \"bench\"\nhost = \"{}\"\ninsecure = true\n",
            reg.host()
        ),
    )
    .unwrap();
    m.ok(&["apply", "-f", f.to_str().unwrap()]);
    let t = Instant::now();
    m.ok(&["image", "pull", &big_ref]);
    let pull = t.elapsed();
    println!(
        "pull: registry -> master {:.0} MB/s ({:.2} s; skopeo copy {:.2} s)",
        mb_s(size, pull),
        pull.as_secs_f64(),
        skopeo.as_secs_f64()
    );
    m.ok(&["image", "pull", &small_ref]);
    // A busybox artifact: the cached-start comparison.
    let root = dir.join("bbroot");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    let tarball = dir.join("bb.tar");
    assert!(
        Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&tarball)
            .arg(".")
            .status()
            .unwrap()
            .success()
    );
    m.ok(&[
        "artifact",
        "push",
        tarball.to_str().unwrap(),
        "--arch",
        "x86_64",
        "--name",
        "bb",
    ]);

    let state = dir.join("n1");
    let mut w = start_worker(&m, "n1", &state, &[]);
    wait_for(Duration::from_secs(30), "node n1 Ready", || {
        m.ok(&["get", "nodes"])
            .lines()
            .any(|l| l.starts_with("n1 ") && l.split_whitespace().nth(1) == Some("Ready"))
            .then_some(())
    });
    let tiny = apply_to_running(&m, dir, "tiny", &small_ref);
    let full = apply_to_running(&m, dir, "large", &big_ref);
    let node = full.saturating_sub(tiny);
    println!(
        "master -> node fetch + verify + unpack: {:.0} MB/s ({:.2} s = apply->Running {:.2} s minus {:.2} s for the small image; {:.2}x loopback TLS, unpack baseline tar -xzf {:.2} s)",
        mb_s(size, node),
        node.as_secs_f64(),
        full.as_secs_f64(),
        tiny.as_secs_f64(),
        tls.as_secs_f64() / node.as_secs_f64(),
        untar.as_secs_f64()
    );
    // Cached starts: the image's layers are on the node; the artifact's tree too after its
    // first pod.
    apply_to_running(&m, dir, "art0", "artifact:bb");
    let mut img = Vec::new();
    let mut art = Vec::new();
    for i in 0..5 {
        img.push(apply_to_running(&m, dir, &format!("img{i}"), &small_ref));
        art.push(apply_to_running(
            &m,
            dir,
            &format!("art{}", i + 1),
            "artifact:bb",
        ));
    }
    img.sort();
    art.sort();
    println!(
        "pod start, cached image: median {:.1} ms vs artifact root {:.1} ms ({:+.1} ms)",
        img[2].as_secs_f64() * 1e3,
        art[2].as_secs_f64() * 1e3,
        (img[2].as_secs_f64() - art[2].as_secs_f64()) * 1e3
    );
    std::thread::sleep(Duration::from_secs(1));
    w.terminate(Duration::from_secs(10));
}
