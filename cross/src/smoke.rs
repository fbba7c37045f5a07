//! The harness's smoke test: boot a QEMU board with a worker binary and check, from the guest's
//! console, that everything the worker relies on is there.

use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bramble_boards::Board;

use crate::qemu::{Guest, GuestSpec, READY_MARKER, StateDisk};

/// Boot deadline under TCG.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
/// After the ready marker, the worker must have connected to the host's listener within this.
pub const WORKER_CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

/// What a smoke run saw.
#[derive(Debug)]
pub struct Report {
    /// Board name.
    pub board: String,
    /// Debian kernel package booted.
    pub kernel_package: String,
    /// From starting QEMU to the ready marker on the console.
    pub ready_after: Duration,
    /// The guest's own uptime when /init printed the marker.
    pub guest_uptime: String,
    /// `cgroup.controllers` in the guest.
    pub controllers: String,
    /// What the host listener received from the guest's `nc`.
    pub probe: String,
    /// Connections the worker opened to the fake master after the probe (at least one, or the
    /// run fails).
    pub worker_connections: usize,
    /// Console lines after the marker (the worker's output and kernel messages).
    pub after_ready: String,
    /// Where the logs are.
    pub dir: std::path::PathBuf,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "board {}: kernel {}", self.board, self.kernel_package)?;
        writeln!(
            f,
            "  ready marker after {:.2} s (QEMU start), guest uptime {} s",
            self.ready_after.as_secs_f64(),
            self.guest_uptime
        )?;
        writeln!(f, "  cgroup2 controllers: {}", self.controllers)?;
        writeln!(
            f,
            "  host listener got (2 connections via guestfwd): {:?}",
            self.probe.trim_end()
        )?;
        writeln!(
            f,
            "  worker connections to the fake master: {}",
            self.worker_connections
        )?;
        writeln!(f, "  console after the marker:")?;
        for l in self.after_ready.lines().take(20) {
            writeln!(f, "    | {l}")?;
        }
        write!(f, "  logs: {}", self.dir.display())
    }
}

/// Boot `board` with `worker` and check kernel, cgroup2 controllers, `unshare`, eth0, the
/// state disk and a TCP connection from the guest to a listener on the host's loopback.
pub fn run(board: &Board, worker: &Path) -> Result<Report> {
    run_with_relay(board, worker, None)
}

/// [`run`] with an explicit `cross` relay executable (see [`crate::qemu::find_relay`]).
pub fn run_with_relay(
    board: &Board,
    worker: &Path,
    relay: Option<std::path::PathBuf>,
) -> Result<Report> {
    let q = board.qemu()?;
    let kernel = crate::debian::kernel(q)?;
    let listener = TcpListener::bind("127.0.0.1:0").context("bind a listener on 127.0.0.1")?;
    let port = listener.local_addr()?.port();
    listener.set_nonblocking(true)?;
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel::<String>();
    let stop2 = stop.clone();
    let worker_conns = Arc::new(AtomicUsize::new(0));
    let worker_conns2 = worker_conns.clone();
    let acceptor = std::thread::spawn(move || {
        let mut held = Vec::new();
        let mut probes = 0;
        while !stop2.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((mut s, _)) => {
                    let _ = s.set_nonblocking(false);
                    if probes < 2 {
                        probes += 1;
                        let _ = s.set_read_timeout(Some(Duration::from_secs(20)));
                        let mut buf = Vec::new();
                        let _ = (&mut s).take(4096).read_to_end(&mut buf);
                        let _ = tx.send(String::from_utf8_lossy(&buf).into_owned());
                    } else {
                        // The worker: keep the connection open, say nothing.
                        held.push(s);
                        worker_conns2.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        held.len()
    });

    let dir = crate::util::target_dir().join("bramble-qemu");
    std::fs::create_dir_all(&dir)?;
    let disk = StateDisk::create(&dir.join(format!("smoke-{}.img", board.name)), 64)?;
    // A well-formed pinned token (the worker refuses to start without a pin); the listener
    // never completes TLS, so the worker just holds its connection.
    let token = format!("K10{}::smoke.test-token", "0".repeat(64));
    let mut spec = GuestSpec::new(board, worker, port, &token, Some(&disk));
    spec.probe_master = true;
    spec.relay = relay;
    let mut guest = Guest::boot_spec(&spec)?;
    let result = check(&mut guest, &rx, board, &worker_conns);
    stop.store(true, Ordering::Relaxed);
    let _ = guest.kill();
    let worker_connections = acceptor.join().unwrap_or(0);
    let (ready_after, probe) = result?;
    let log = guest.console_log();
    let after_ready = log
        .split_once(READY_MARKER)
        .map(|(_, rest)| rest.lines().skip(1).collect::<Vec<_>>().join("\n"))
        .unwrap_or_default();
    for bad in [
        "can't execute",
        "not found",
        "Exec format error",
        "Illegal instruction",
    ] {
        if after_ready.contains(bad) {
            return Err(guest.failure(&format!(
                "the worker did not start: `{bad}` after the ready marker"
            )));
        }
    }
    Ok(Report {
        board: board.name.clone(),
        kernel_package: kernel.package,
        ready_after,
        guest_uptime: guest.check("uptime").unwrap_or_default(),
        controllers: guest.check("cgroup.controllers").unwrap_or_default(),
        probe,
        worker_connections,
        after_ready,
        dir: guest.dir().to_path_buf(),
    })
}

fn check(
    guest: &mut Guest,
    rx: &mpsc::Receiver<String>,
    board: &Board,
    worker_conns: &AtomicUsize,
) -> Result<(Duration, String)> {
    let ready_after = guest.wait_for(READY_MARKER, BOOT_TIMEOUT)?;
    let log = guest.console_log();
    if !log.contains("Linux version") {
        return Err(guest.failure("no `Linux version` line: did the kernel boot?"));
    }
    let need = |key: &str, pred: &dyn Fn(&str) -> bool, what: &str| -> Result<()> {
        match guest.check(key) {
            Some(v) if pred(&v) => Ok(()),
            other => Err(guest.failure(&format!("{what}: BRAMBLE-CHECK {key}={other:?}"))),
        }
    };
    let has_all = |v: &str| {
        ["cpu", "memory", "pids"]
            .iter()
            .all(|c| v.split_whitespace().any(|w| w == *c))
    };
    need(
        "cgroup.controllers",
        &has_all,
        "cgroup2 lacks cpu/memory/pids",
    )?;
    need(
        "cgroup.subtree_control",
        &has_all,
        "could not enable +cpu +memory +pids",
    )?;
    need(
        "unshare",
        &|v| v == "ok",
        "`unshare -p -f -m true` failed in the guest",
    )?;
    need(
        "pivot_root",
        &|v| v == "ok",
        "pivot_root in a new mount namespace failed in the guest",
    )?;
    need("eth0", &|v| v.starts_with("up"), "eth0 is not up")?;
    need(
        "state",
        &|v| v.contains("/dev/vda") && v.contains("ext4"),
        "the state disk is not mounted",
    )?;
    need(
        "probe",
        &|v| v == "ok",
        "the guest could not connect to the host listener",
    )?;
    let mut probe = String::new();
    for want in [
        format!("hi from {}", board.name),
        format!("again from {}", board.name),
    ] {
        let got = rx
            .recv_timeout(Duration::from_secs(20))
            .map_err(|_| guest.failure(&format!("the host listener did not receive {want:?}")))?;
        if !got.contains(&want) {
            bail!(guest.failure(&format!("the host listener got {got:?}, expected {want:?}")));
        }
        probe.push_str(&got);
    }
    // The worker (exec'd by /init after the marker) dials the master through the forward: the
    // host's listener must see that connection (the two probes do not count).
    let t = std::time::Instant::now();
    while worker_conns.load(Ordering::Relaxed) == 0 {
        if !guest.is_running() {
            bail!(guest.failure("QEMU exited before the worker connected to the host's listener"));
        }
        if t.elapsed() > WORKER_CONNECT_TIMEOUT {
            bail!(guest.failure(&format!(
                "the worker did not connect to the host's listener (192.0.2.100:PORT through \
                 guestfwd) within {WORKER_CONNECT_TIMEOUT:?} of the ready marker"
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok((ready_after, probe))
}
