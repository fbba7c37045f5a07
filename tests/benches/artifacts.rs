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
//! - baselines: a plain TCP copy of the same bytes over loopback in 32 KiB writes, a TLS 1.3
//!   copy (rustls server and client, AES-128-GCM, a self-signed rcgen certificate) over loopback
//!   with 16 KiB records and with the master's 4 KiB records, and sha256 of the file;
//! - push: `bramble artifact push` (client sha256, 32 KiB chunks 8 in flight, the master's
//!   incremental sha256, safe-tar check, fsync, rename);
//! - pull: apply → Running of a pod whose rootfs is the artifact, on a real worker (pull in
//!   32 KiB chunks 8 in flight, sha256, safe unpack, pod start), minus the same for a tiny
//!   artifact measured in the same run (pod start and a one-chunk pull);
//! - transfer alone: from the worker's `.partial` file appearing to it holding every byte
//!   (polled every 2 ms), as a ratio to the loopback TLS copy, with the worker's CPU seconds over
//!   that time (all threads, and its `tls` thread) from /proc;
//! - syscalls per chunk: a second pull (another artifact) under `strace -c -f` until the
//!   transfer is complete (`BENCH_STRACE=0` skips it), total calls over the number of 32 KiB
//!   chunks.
#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use bramble_tests::{MasterProc, start_worker, wait_for};

#[path = "common/throughput.rs"]
mod throughput;
use throughput::{mb_s, tls_baseline};

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

/// CPU seconds (user + system) of a process, or of one of its threads, from /proc.
fn cpu_seconds(stat: &str) -> f64 {
    let s = std::fs::read_to_string(stat).unwrap_or_default();
    let fields: Vec<&str> = s
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    // After the command: state is field 3, utime 14 and stime 15 (1-based).
    let tick = |i: usize| {
        fields
            .get(i - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (tick(14) + tick(15)) as f64 / clock_ticks()
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// The /proc stat file of the worker's thread named `name`.
fn thread_stat(pid: u32, name: &str) -> Option<String> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    for t in tasks.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.trim() == name {
            return Some(t.path().join("stat").to_string_lossy().into_owned());
        }
    }
    None
}

/// What a watcher saw of one pull: when the partial file appeared and when it held every byte,
/// and the worker's CPU seconds (all threads, the `tls` thread) over that time.
#[derive(Debug, Default)]
struct Transfer {
    took: Duration,
    cpu: f64,
    tls_cpu: f64,
}

/// Polls the worker's artifact dir for a `.partial` file until it holds `size` bytes.
fn watch_transfer(
    artifacts: std::path::PathBuf,
    size: u64,
    pid: u32,
) -> std::thread::JoinHandle<Transfer> {
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(300);
        let partial = loop {
            assert!(Instant::now() < deadline, "no pull started");
            let found = std::fs::read_dir(&artifacts).ok().and_then(|d| {
                d.flatten()
                    .map(|e| e.path())
                    .find(|p| p.extension().is_some_and(|x| x == "partial"))
            });
            if let Some(p) = found {
                break p;
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        let t0 = Instant::now();
        let all = format!("/proc/{pid}/stat");
        let tls = thread_stat(pid, "tls").unwrap_or_default();
        let (cpu0, tls0) = (cpu_seconds(&all), cpu_seconds(&tls));
        loop {
            assert!(Instant::now() < deadline, "pull did not complete");
            let len = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(size);
            if len >= size {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Transfer {
            took: t0.elapsed(),
            cpu: cpu_seconds(&all) - cpu0,
            tls_cpu: cpu_seconds(&tls) - tls0,
        }
    })
}

fn rootfs_tarball(dir: &Path, name: &str, payload: u64) -> std::path::PathBuf {
    let root = dir.join(format!("{name}-root"));
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox"))
        .expect("/bin/busybox is missing: install busybox-static");
    let mut x: u64 = 0x243f6a8885a308d3 ^ name.len() as u64;
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
            let phase = v["status"]["phase"].as_str()?.to_string();
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
    let tls = tls_baseline(size, None);
    println!(
        "baseline: loopback TLS copy (rustls, AES-128-GCM, 16 KiB records) {:.0} MB/s ({:.2} s)",
        mb_s(size, tls),
        tls.as_secs_f64()
    );
    let tls4k = tls_baseline(size, Some(4096));
    println!(
        "baseline: loopback TLS copy with 4 KiB records {:.0} MB/s ({:.2} s)",
        mb_s(size, tls4k),
        tls4k.as_secs_f64()
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
    let watch = watch_transfer(state.join("artifacts"), size, w.pid());
    let full = apply_to_running(&m, dir, "large", "big");
    let xfer = watch.join().unwrap();
    let pull = full.saturating_sub(tiny);
    println!(
        "pull + verify + unpack on the worker: {:.0} MB/s ({:.2} s = apply->Running {:.2} s minus {:.2} s for a tiny artifact)",
        mb_s(size, pull),
        pull.as_secs_f64(),
        full.as_secs_f64(),
        tiny.as_secs_f64()
    );
    let chunks = size.div_ceil(bramble_artifact::CHUNK as u64);
    println!(
        "transfer master -> worker: {:.0} MB/s ({:.2} s) = {:.2}x loopback TLS; worker CPU {:.2} s ({:.2} s per 100 MB; tls thread {:.2} s)",
        mb_s(size, xfer.took),
        xfer.took.as_secs_f64(),
        tls.as_secs_f64() / xfer.took.as_secs_f64(),
        xfer.cpu,
        xfer.cpu * 100e6 / size as f64,
        xfer.tls_cpu
    );
    let strace = std::env::var("BENCH_STRACE").map_or(true, |v| v != "0");
    if strace {
        let big2 = rootfs_tarball(dir, "big-two", mib << 20);
        m.ok(&[
            "artifact",
            "push",
            big2.to_str().unwrap(),
            "--arch",
            "x86_64",
        ]);
        let out = dir.join("strace.txt");
        let mut st = Command::new("strace")
            .args(["-c", "-f", "-S", "calls", "-o"])
            .arg(&out)
            .args(["-p", &w.pid().to_string()])
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("strace is missing (apt-get install strace; BENCH_STRACE=0 skips this)");
        std::thread::sleep(Duration::from_millis(500));
        let watch = watch_transfer(state.join("artifacts"), size, w.pid());
        std::thread::scope(|sc| {
            let apply = sc.spawn(|| apply_to_running(&m, dir, "large2", "big-two"));
            // Only the transfer: strace detaches once every byte is held.
            watch.join().unwrap();
            let _ = Command::new("kill")
                .args(["-INT", &st.id().to_string()])
                .status();
            let _ = st.wait();
            apply.join().unwrap();
        });
        let report = std::fs::read_to_string(&out).unwrap_or_default();
        // The "total" line: % time, seconds, usecs/call, calls, errors, "total".
        let total: Option<u64> = report
            .lines()
            .find(|l| l.trim_end().ends_with("total"))
            .and_then(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.get(3)?.parse().ok()
            });
        let top: Vec<String> = report
            .lines()
            .skip(2)
            .take(6)
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let calls: u64 = f.get(3)?.parse().ok()?;
                let name = f.last()?;
                Some(format!("{name} {:.1}", calls as f64 / chunks as f64))
            })
            .collect();
        match total {
            Some(t) => println!(
                "worker syscalls per 32 KiB chunk (the transfer only): {:.1} ({})",
                t as f64 / chunks as f64,
                top.join(", ")
            ),
            None => println!("strace gave no summary:\n{report}"),
        }
    }
    std::thread::sleep(Duration::from_secs(2));
    w.terminate(Duration::from_secs(10));
}
