//! Image bench (root): in the same run,
//! 1. unpack of the same gzip layers with the worker's layer code against `tar -xzf` (and the
//!    plain tar against `tar -xf`), and
//! 2. start-to-exit of a pod running `busybox true` on a cached image (overlayfs root of its
//!    layers) against the same files as an artifact root (read-only bind).
//!
//! `cargo bench -p bramble-worker --bench image`

#[path = "../tests/runtime_support/mod.rs"]
mod runtime_support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use bramble_artifact::layer::{Compression, LayerOptions, unpack_layer};
use bramble_wire::objects::{ImageConfig, NetworkMode, ProcessSpec, RestartPolicy};
use bramble_worker::runtime::{PodImage, PodToRun};
use runtime_support::*;

/// A layer of `files` files of `size` bytes (compressible, not trivially) under `dir/`.
fn make_layer(dir: &str, files: usize, size: usize) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for i in 0..files {
        let mut data = Vec::with_capacity(size);
        while data.len() < size {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Text-like: a small alphabet, so gzip has something to do.
            data.push(b"abcdefgh ijklmnop\n"[(x % 18) as usize]);
        }
        let mut h = tar::Header::new_gnu();
        h.set_size(size as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, format!("{dir}/d{}/f{i}", i % 50), &data[..])
            .unwrap();
    }
    b.into_inner().unwrap()
}

fn gzip_file(plain: &Path) -> std::path::PathBuf {
    let st = Command::new("gzip")
        .args(["-k", "-1", "-f"])
        .arg(plain)
        .status()
        .unwrap();
    assert!(st.success());
    plain.with_extension("tar.gz")
}

fn best_of(n: usize, mut f: impl FnMut() -> Duration) -> Duration {
    (0..n).map(|_| f()).min().unwrap()
}

fn unpack_bench(work: &Path) {
    let layers: Vec<Vec<u8>> = (0..3)
        .map(|i| make_layer(&format!("l{i}"), 1500, 24 * 1024))
        .collect();
    let total: usize = layers.iter().map(Vec::len).sum();
    let opts = LayerOptions {
        limits: bramble_artifact::Limits::default(),
        keep_owners: true,
    };
    for (k, (label, gz)) in [("plain", false), ("gzip -1", true)]
        .into_iter()
        .enumerate()
    {
        let files: Vec<_> = layers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let p = work.join(format!("layer{i}.tar"));
                std::fs::write(&p, l).unwrap();
                if gz { gzip_file(&p) } else { p }
            })
            .collect();
        let mut n = 0;
        let ours = best_of(3, || {
            n += 1;
            let t = Instant::now();
            for (i, f) in files.iter().enumerate() {
                let r = std::io::BufReader::new(std::fs::File::open(f).unwrap());
                let c = if gz {
                    Compression::Gzip
                } else {
                    Compression::None
                };
                unpack_layer(
                    r,
                    c,
                    &work.join(format!("ours{k}-{n}-{i}")),
                    &opts,
                    &mut bramble_worker::sys::layers::OverlayWhiteouts,
                )
                .unwrap();
            }
            t.elapsed()
        });
        let mut m = 0;
        let tar = best_of(3, || {
            m += 1;
            let t = Instant::now();
            for (i, f) in files.iter().enumerate() {
                let d = work.join(format!("tar{k}-{m}-{i}"));
                std::fs::create_dir_all(&d).unwrap();
                let flag = if gz { "-xzf" } else { "-xf" };
                let st = Command::new("tar")
                    .arg(flag)
                    .arg(f)
                    .arg("-C")
                    .arg(&d)
                    .status()
                    .unwrap();
                assert!(st.success());
            }
            t.elapsed()
        });
        for e in std::fs::read_dir(work).unwrap().flatten() {
            if e.path().is_dir() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        println!(
            "unpack {label}: 3 layers, {} MB expanded: bramble {:.0} ms, tar -x {:.0} ms, speed ratio (tar time / ours) {:.2}",
            total >> 20,
            ours.as_secs_f64() * 1e3,
            tar.as_secs_f64() * 1e3,
            tar.as_secs_f64() / ours.as_secs_f64()
        );
    }
}

fn start_bench(work: &Path) {
    let env = Env::new("imgbench");
    // The same content as layers and as an artifact root.
    let busybox = std::fs::read("/bin/busybox").expect("/bin/busybox (busybox-static)");
    let mut b = tar::Builder::new(Vec::new());
    for d in ["bin", "etc", "proc", "dev", "tmp"] {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        b.append_data(&mut h, d, &[][..]).unwrap();
    }
    let mut h = tar::Header::new_gnu();
    h.set_size(busybox.len() as u64);
    h.set_mode(0o755);
    b.append_data(&mut h, "bin/busybox", &busybox[..]).unwrap();
    for f in ["etc/hosts", "etc/resolv.conf"] {
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        h.set_mode(0o644);
        b.append_data(&mut h, f, &[][..]).unwrap();
    }
    let layer = b.into_inner().unwrap();
    let layers = work.join("layers");
    std::fs::create_dir_all(&layers).unwrap();
    let opts = LayerOptions {
        limits: bramble_artifact::Limits::default(),
        keep_owners: true,
    };
    unpack_layer(
        &layer[..],
        Compression::None,
        &layers.join("base"),
        &opts,
        &mut bramble_worker::sys::layers::OverlayWhiteouts,
    )
    .unwrap();
    let artifact = work.join("artifact");
    std::fs::create_dir_all(&artifact).unwrap();
    bramble_artifact::unpack(&layer[..], &artifact, &bramble_artifact::Limits::default()).unwrap();

    let run_one = |name: &str, image: bool| -> Duration {
        let p = ProcessSpec {
            name: "main".into(),
            command: vec!["/bin/busybox".into(), "true".into()],
            ..Default::default()
        };
        let mut pod = pod(name, vec![p], RestartPolicy::Never);
        pod.spec.network = NetworkMode::None;
        let mut run = PodToRun::new(pod);
        if image {
            run.pod.spec.image = Some("bench/img:1".into());
            run.image = Some(PodImage {
                reference: "bench/img:1".into(),
                config: ImageConfig::default(),
                overlay: Some((layers.clone(), vec!["base".into()])),
            });
        } else {
            run.rootfs = Some(artifact.display().to_string());
        }
        let t = Instant::now();
        let mut h = env.rt.start_pod_with(&run, env.logs.path(), None).unwrap();
        // Polled finely (the test kit's wait polls every 20 ms).
        while !finished(&h.status()) {
            assert!(t.elapsed() < Duration::from_secs(20), "pod did not finish");
            std::thread::sleep(Duration::from_micros(200));
        }
        let d = t.elapsed();
        h.stop(Duration::from_secs(1)).unwrap();
        d
    };
    let mut img = Vec::new();
    let mut art = Vec::new();
    for i in 0..15 {
        art.push(run_one(&format!("art{i}"), false));
        img.push(run_one(&format!("img{i}"), true));
    }
    img.sort();
    art.sort();
    let (mi, ma) = (img[img.len() / 2], art[art.len() / 2]);
    println!(
        "pod start to exit (busybox true), median of 15: cached image (overlay) {:.2} ms, artifact root {:.2} ms, difference {:+.2} ms",
        mi.as_secs_f64() * 1e3,
        ma.as_secs_f64() * 1e3,
        (mi.as_secs_f64() - ma.as_secs_f64()) * 1e3
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let work = tempfile::tempdir_in("/var/tmp").unwrap();
    unpack_bench(work.path());
    start_bench(work.path());
}
