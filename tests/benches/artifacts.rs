//! Artifact throughput on loopback with the real binaries:
//!
//! ```text
//! cargo build --release -p bramble-cli -p bramble-worker
//! sudo cargo bench -p bramble-tests --bench artifacts
//! ```
//!
//! Like the cluster bench it builds nothing and uses `target/release/bramble` and
//! `target/release/bramble-worker`. `BENCH_ARTIFACT_MIB` (default 64) sets the size.
//!
//! - baselines: a plain TCP copy of the same bytes over loopback in 32 KiB writes, and sha256
//!   of the file;
//! - push: `bramble artifact push` (client sha256, 32 KiB chunks 8 in flight, the master's
//!   incremental sha256, safe-tar check, fsync, rename);
//! - pull: apply → Running of a pod whose rootfs is the artifact, on a real worker (pull in
//!   32 KiB chunks 8 in flight, sha256, safe unpack, pod start), minus the same for a tiny
//!   artifact measured in the same run (pod start and a one-chunk pull).
#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use bramble_tests::{MasterProc, start_worker, wait_for};

fn mb_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64()
}

fn tcp_baseline(bytes: u64) -> Duration {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let t = Instant::now();
    let rx = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut buf = vec![0u8; 64 << 10];
        let mut got = 0u64;
        while got < bytes {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0);
            got += n as u64;
        }
    });
    let mut s = TcpStream::connect(addr).unwrap();
    let chunk = vec![7u8; 32 << 10];
    let mut sent = 0u64;
    while sent < bytes {
        s.write_all(&chunk).unwrap();
        sent += chunk.len() as u64;
    }
    rx.join().unwrap();
    t.elapsed()
}

fn rootfs_tarball(dir: &Path, name: &str, payload: u64) -> std::path::PathBuf {
    let root = dir.join(format!("{name}-root"));
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox"))
        .expect("/bin/busybox is missing: install busybox-static");
    let mut x: u64 = 0x243f6a8885a308d3;
    let mut f = std::fs::File::create(root.join("payload")).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut left = payload;
    while left > 0 {
        for b in buf.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    let out = dir.join(format!("{name}.tar"));
    let st = Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&out)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    out
}

fn apply_to_running(m: &MasterProc, dir: &Path, pod: &str, artifact: &str) -> Duration {
    let f = dir.join(format!("{pod}.toml"));
    std::fs::write(
        &f,
        format!(
            "[[pod]]\nname = \"{pod}\"\nrestart_policy = \"Never\"\nrootfs = \"artifact:{artifact}\"\n[[pod.process]]\nname = \"main\"\ncommand = [\"/bin/busybox\", \"sleep\", \"60\"]\n"
        ),
    )
    .unwrap();
    let t = Instant::now();
    m.ok(&["apply", "-f", f.to_str().unwrap()]);
    wait_for(
        Duration::from_secs(300),
        &format!("pod {pod} Running"),
        || {
            let o = m.cli(&["get", "pod", pod, "-o", "json"]);
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
            let phase = v["Pod"]["status"]["phase"].as_str()?.to_string();
            assert_ne!(phase, "Failed", "{v}");
            (phase == "Running").then_some(())
        },
    );
    let d = t.elapsed();
    m.ok(&["delete", "pod", pod]);
    d
}

fn main() {
    let mib: u64 = std::env::var("BENCH_ARTIFACT_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let big = rootfs_tarball(dir, "big", mib << 20);
    let small = rootfs_tarball(dir, "small", 0);
    let size = std::fs::metadata(&big).unwrap().len();
    println!(
        "artifact bench: {:.1} MiB tarball",
        size as f64 / (1 << 20) as f64
    );

    let base = tcp_baseline(size);
    println!(
        "baseline: plain loopback TCP copy {:.0} MB/s ({:.2} s)",
        mb_s(size, base),
        base.as_secs_f64()
    );

    let t = Instant::now();
    bramble_artifact::sha256_file(&big).unwrap();
    let hash = t.elapsed();
    println!(
        "baseline: sha256 of the file {:.0} MB/s ({:.2} s; push and pull each hash it twice)",
        mb_s(size, hash),
        hash.as_secs_f64()
    );

    let m = MasterProc::start(&dir.join("master"), &["--heartbeat-interval", "1s"]);
    let t = Instant::now();
    m.ok(&[
        "artifact",
        "push",
        big.to_str().unwrap(),
        "--arch",
        "x86_64",
    ]);
    let push = t.elapsed();
    println!(
        "push: {:.0} MB/s ({:.2} s; {:.1}x slower than the TCP baseline)",
        mb_s(size, push),
        push.as_secs_f64(),
        push.as_secs_f64() / base.as_secs_f64()
    );
    m.ok(&[
        "artifact",
        "push",
        small.to_str().unwrap(),
        "--arch",
        "x86_64",
    ]);

    wait_for(Duration::from_secs(10), "join.token", || {
        dir.join("master/join.token").exists().then_some(())
    });
    let state = dir.join("n1");
    let mut w = start_worker(&m, "n1", &state, &[]);
    wait_for(Duration::from_secs(30), "node n1 Ready", || {
        // The STATUS column exactly: "NotReady" contains "Ready".
        m.ok(&["get", "nodes"])
            .lines()
            .any(|l| l.starts_with("n1 ") && l.split_whitespace().nth(1) == Some("Ready"))
            .then_some(())
    });
    let tiny = apply_to_running(&m, dir, "tiny", "small");
    let full = apply_to_running(&m, dir, "large", "big");
    let pull = full.saturating_sub(tiny);
    println!(
        "pull + verify + unpack on the worker: {:.0} MB/s ({:.2} s = apply->Running {:.2} s minus {:.2} s for a tiny artifact)",
        mb_s(size, pull),
        pull.as_secs_f64(),
        full.as_secs_f64(),
        tiny.as_secs_f64()
    );
    std::thread::sleep(Duration::from_secs(2));
    w.terminate(Duration::from_secs(10));
}
