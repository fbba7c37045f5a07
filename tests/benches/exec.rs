//! `bramble exec` latency against `nsenter` on the node, same run: the round trip of
//! `bramble exec POD -- true` (CLI → master → worker → helper entering the pod → exit code back)
//! against `nsenter -t PID -a true` (what an operator on the board does), and the first byte of
//! an interactive shell on a terminal (`bramble exec -it POD -- sh` against `nsenter -t PID -a
//! sh -i`, each under a pseudo-terminal of the bench).
//!
//! ```text
//! sudo cargo bench -p bramble-tests --bench exec     # release binaries (build them first)
//! sudo cargo test -p bramble-tests --bench exec      # debug binaries
//! ```
//! And `bramble port-forward` throughput: a 32 MiB HTTP download from busybox `httpd` in an
//! isolated pod through the tunnel (client → master → agent → the pod's network namespace)
//! against the same download straight from the pod's address over the node's bridge.
//!
//! `BENCH_EXECS` (default 30, at most 300) round trips of each. Root (namespaces, cgroups).
//! Everything it starts is killed by PID.
#![forbid(unsafe_code)]

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bramble_testkit::bin;
use bramble_tests::{MasterProc, require_root, start_cluster, wait_for};
use bramble_wire::objects::ProcessState;
use bramble_worker::sys::exec as pty;

const POD: &str = r#"
[[pod]]
name = "bench"
network = "none"
[[pod.process]]
name = "main"
command = ["/bin/sh", "-c", "sleep 100000"]
"#;

/// The median of `n` runs of `f` (each timed).
fn p50(n: usize, mut f: impl FnMut()) -> Duration {
    let mut v: Vec<Duration> = (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    v.sort();
    v[v.len() / 2]
}

/// Time from spawning `cmd` on a new terminal (its controlling one) to its first output byte.
fn first_byte(mut cmd: Command) -> Duration {
    let (master, slave) = pty::openpty(24, 80).unwrap();
    let io = || Stdio::from(slave.try_clone().unwrap());
    let t = Instant::now();
    let mut child = cmd.stdin(io()).stdout(io()).stderr(io()).spawn().unwrap();
    drop(slave);
    let mut r = std::fs::File::from(master);
    let mut b = [0u8; 1];
    let got = r.read(&mut b).unwrap_or(0);
    let d = t.elapsed();
    child.kill().unwrap();
    let _ = child.wait();
    assert_eq!(got, 1, "no output from {cmd:?}");
    d
}

fn main() {
    require_root();
    let n = std::env::var("BENCH_EXECS")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(30)
        .clamp(3, 300);
    let tmp = tempfile::tempdir().unwrap();
    let (m, _w) = start_cluster(tmp.path(), &["--heartbeat-interval", "500ms"], &["n1"]);
    let f = tmp.path().join("pod.toml");
    std::fs::write(&f, POD).unwrap();
    m.ok(&["apply", "-f", f.to_str().unwrap()]);
    let pid = wait_for(Duration::from_secs(60), "bench Running", || {
        let p = m.pod("bench")?;
        match p.status.processes.first()?.state {
            ProcessState::Running { pid, .. } if pid > 0 => Some(pid),
            _ => None,
        }
    });
    let pid = pid.to_string();
    let cli = |m: &MasterProc, args: &[&str]| {
        let mut c = Command::new(bin("bramble"));
        c.args(args)
            .env("BRAMBLE_SERVER", &m.addr)
            .env("BRAMBLE_TOKEN_FILE", m.data_dir.join("admin.token"));
        c
    };
    let ok = |mut c: Command| assert!(c.output().unwrap().status.success(), "{c:?}");
    // Warm both paths once.
    ok(cli(&m, &["exec", "bench", "--", "true"]));
    ok({
        let mut c = Command::new("nsenter");
        c.args(["-t", &pid, "-a", "true"]);
        c
    });
    let exec = p50(n, || ok(cli(&m, &["exec", "bench", "--", "true"])));
    let nsenter = p50(n, || {
        let mut c = Command::new("nsenter");
        c.args(["-t", &pid, "-a", "true"]);
        ok(c)
    });
    let shells = n.min(15);
    let shell = {
        let mut v: Vec<Duration> = (0..shells)
            .map(|_| {
                let mut c = Command::new("setsid");
                c.arg("-c").arg(bin("bramble"));
                c.args(["exec", "-it", "bench", "--", "sh"])
                    .env("BRAMBLE_SERVER", &m.addr)
                    .env("BRAMBLE_TOKEN_FILE", m.data_dir.join("admin.token"));
                first_byte(c)
            })
            .collect();
        v.sort();
        v[v.len() / 2]
    };
    let direct_shell = {
        let mut v: Vec<Duration> = (0..shells)
            .map(|_| {
                let mut c = Command::new("setsid");
                c.args(["-c", "nsenter", "-t", &pid, "-a", "sh", "-i"]);
                first_byte(c)
            })
            .collect();
        v.sort();
        v[v.len() / 2]
    };
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "exec round trip (`bramble exec POD -- true`), p50 of {n}: {:.1} ms; `nsenter -t PID -a true` {:.1} ms: {:.1}x",
        ms(exec),
        ms(nsenter),
        ms(exec) / ms(nsenter)
    );
    println!(
        "interactive shell, first byte, p50 of {shells}: `bramble exec -it POD -- sh` {:.1} ms; `nsenter -t PID -a sh -i` {:.1} ms: {:.1}x",
        ms(shell),
        ms(direct_shell),
        ms(shell) / ms(direct_shell)
    );
    m.ok(&["delete", "pod", "bench"]);
    port_forward(&m, tmp.path());
}

fn port_forward(m: &MasterProc, dir: &std::path::Path) {
    let root = dir.join("webroot");
    for d in ["bin", "etc", "tmp", "proc", "sys", "dev", "www"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy(
        bramble_testkit::busybox::busybox("amd64"),
        root.join("bin/busybox"),
    )
    .unwrap();
    std::fs::write(root.join("www/big"), vec![b'x'; 32 << 20]).unwrap();
    let pod = format!(
        r#"
[[pod]]
name = "web"
rootfs = "{}"
network = "isolated"
[[pod.process]]
name = "httpd"
command = ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]
"#,
        root.display()
    );
    let f = dir.join("web.toml");
    std::fs::write(&f, pod).unwrap();
    m.ok(&["apply", "-f", f.to_str().unwrap()]);
    let ip = wait_for(Duration::from_secs(60), "web Running", || {
        let p = m.pod("web")?;
        (p.status.phase == bramble_wire::PodPhase::Running && !p.status.ip.is_empty())
            .then(|| p.status.ip.clone())
    });
    let direct = format!("{ip}:8080");
    wait_for(Duration::from_secs(20), "httpd up", || {
        std::net::TcpStream::connect(&direct).ok()
    });
    let local = bramble_testkit::free_port();
    let mut pf = Command::new(bin("bramble"))
        .args(["port-forward", "web", &format!("{local}:8080")])
        .env("BRAMBLE_SERVER", &m.addr)
        .env("BRAMBLE_TOKEN_FILE", m.data_dir.join("admin.token"))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let tunnel = format!("127.0.0.1:{local}");
    wait_for(Duration::from_secs(20), "the forwarder", || {
        std::net::TcpStream::connect(&tunnel).ok()
    });
    let rate = |addr: &str| {
        let mut v: Vec<f64> = (0..5)
            .map(|_| {
                let t = Instant::now();
                let n = bramble_tests::http_get(addr, "/big").len();
                let s = t.elapsed().as_secs_f64();
                assert!(n > 32 << 20, "short download from {addr}: {n}");
                n as f64 / s / 1e6
            })
            .collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let d = rate(&direct);
    let t = rate(&tunnel);
    println!(
        "port-forward throughput, 32 MiB download, median of 5: {t:.0} MB/s through the tunnel, {d:.0} MB/s direct to the pod: {:.2}x",
        t / d
    );
    pf.kill().unwrap();
    let _ = pf.wait();
    m.ok(&["delete", "pod", "web"]);
}
