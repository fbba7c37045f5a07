//! Boot each QEMU board with the cross-built worker and check the guest from its console:
//! kernel booted, cgroup2 with cpu/memory/pids, `unshare -p -f -m`, eth0 up, the ext4 state
//! disk mounted, and a TCP connection from the guest to a listener on the host's loopback
//! through QEMU's guestfwd. Prints the boot-to-marker time.
//!
//! Needs qemu-system-arm, the cross toolchains and rust targets (see cross/README.md); the
//! first run downloads Debian's arm64/armhf kernels into the cache. Missing pieces FAIL the
//! test with the fix; nothing is skipped. One QEMU at a time (the tests take a lock). The
//! worker is cross-built from the current sources; the development variables of `cargo cross
//! qemu-test` (`BRAMBLE_QEMU_ONLY`, `BRAMBLE_BIN`, `BRAMBLE_WORKER_*`) fail the tests.

use std::path::PathBuf;
use std::sync::Mutex;

use std::time::Duration;

use bramble_cross::build::{self, Bin};
use bramble_cross::qemu::{GuestSpec, READY_MARKER, StateDisk, WorkerMode};

static ONE_QEMU_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Takes the one-QEMU lock, after refusing the development variables.
fn one_qemu() -> std::sync::MutexGuard<'static, ()> {
    if let Err(e) = bramble_cross::cluster::refuse_dev_overrides() {
        panic!("{e:#}");
    }
    ONE_QEMU_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// QEMU's process state letter from `/proc/PID/stat` (`T` while stopped), or `None` once the
/// process is gone.
fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.chars().next()
}

/// Polls [`process_state`] (≤ 5 s: signals are delivered asynchronously) until `want` holds.
fn wait_state(pid: u32, what: &str, want: impl Fn(Option<char>) -> bool) {
    let t = std::time::Instant::now();
    loop {
        let s = process_state(pid);
        if want(s) {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "QEMU (pid {pid}) is not {what}: state {s:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn smoke(name: &str) {
    let _one = one_qemu();
    let board = bramble_boards::find(name).unwrap();
    let built = build::build(board, true, &[Bin::Worker])
        .unwrap_or_else(|e| panic!("cross-building the worker for {name} failed: {e:#}"));
    eprintln!("{}", build::report(board, &built));
    let worker = &built[0];
    assert!(
        !worker.elf.dynamic,
        "{} is not static",
        worker.stripped.display()
    );
    // Cargo builds the `cross` binary (QEMU's guestfwd relay) for this test.
    let relay = PathBuf::from(env!("CARGO_BIN_EXE_cross"));
    // The run fails unless the kernel booted, cgroup2/unshare/pivot_root/eth0/the state disk
    // are there, both probes reached the host and the worker then connected to the host
    // (`worker_connections` >= 1, checked in `smoke::run_with_relay`).
    let report = bramble_cross::smoke::run_with_relay(board, &worker.stripped, Some(relay))
        .unwrap_or_else(|e| panic!("QEMU smoke test of {name} failed: {e:#}"));
    eprintln!("{report}");
}

#[test]
fn qemu_virt_aarch64_boots_the_worker() {
    smoke("qemu-virt-aarch64");
}

#[test]
fn qemu_virt_armv7_boots_the_worker() {
    smoke("qemu-virt-armv7");
}

fn aarch64_worker() -> (&'static bramble_boards::Board, PathBuf) {
    let board = bramble_boards::find("qemu-virt-aarch64").unwrap();
    let built = build::build(board, true, &[Bin::Worker])
        .unwrap_or_else(|e| panic!("cross-building the worker failed: {e:#}"));
    (board, built[0].stripped.clone())
}

fn scratch(name: &str) -> PathBuf {
    let dir = bramble_cross::util::target_dir().join("bramble-qemu");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// What power-cut scenarios do: write state, cut power, check the disk on the host, boot again
/// on the same disk.
#[test]
fn power_cut_keeps_synced_state_and_the_disk_boots_again() {
    let _one = one_qemu();
    let (board, worker) = aarch64_worker();
    let disk = StateDisk::create(&scratch("power-cut.img"), 32).unwrap();
    let relay = PathBuf::from(env!("CARGO_BIN_EXE_cross"));
    let mut spec = GuestSpec::new(board, &worker, 1, "t", Some(&disk));
    spec.relay = Some(relay);
    spec.worker_mode = WorkerMode::None;
    spec.pre_worker = vec!["echo synced > /var/lib/bramble-worker/note && sync".into()];
    let mut guest = spec.boot().unwrap();
    let t = guest
        .wait_for(READY_MARKER, Duration::from_secs(120))
        .unwrap();
    eprintln!("first boot: marker after {:.2} s", t.as_secs_f64());
    let pid = guest.pid();
    guest.kill().unwrap();
    assert_eq!(
        process_state(pid),
        None,
        "QEMU (pid {pid}) survived the power cut"
    );
    bramble_cross::qemu::StateDisk::fsck(&disk).expect("ext4 journal keeps the disk consistent");
    assert_eq!(StateDisk::read_file(&disk, "note").unwrap(), b"synced\n");

    spec.pre_worker = vec!["grep -q synced /var/lib/bramble-worker/note".into()];
    let mut again = spec.boot().unwrap();
    let t = again
        .wait_for(READY_MARKER, Duration::from_secs(120))
        .unwrap();
    eprintln!(
        "boot after the power cut: marker after {:.2} s",
        t.as_secs_f64()
    );
    // pause/resume really stop and continue the machine (SIGSTOP/SIGCONT to QEMU).
    let pid = again.pid();
    again.pause().unwrap();
    wait_state(pid, "stopped after pause()", |s| s == Some('T'));
    again.resume().unwrap();
    wait_state(pid, "running after resume()", |s| {
        s.is_some_and(|c| c != 'T')
    });
    assert!(again.is_running());
}

/// Failures are loud and fast: a state disk that is not ext4 stops /init, and the error carries
/// the console log.
#[test]
fn a_broken_state_disk_fails_fast_with_the_console_log() {
    let _one = one_qemu();
    let (board, worker) = aarch64_worker();
    let disk = scratch("not-ext4.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let mut spec = GuestSpec::new(board, &worker, 1, "t", Some(&disk));
    spec.relay = Some(PathBuf::from(env!("CARGO_BIN_EXE_cross")));
    let mut guest = spec.boot().unwrap();
    let started = std::time::Instant::now();
    let e = guest
        .wait_for(READY_MARKER, Duration::from_secs(120))
        .unwrap_err()
        .to_string();
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
    assert!(e.contains("BRAMBLE-GUEST-FAIL: mount /dev/vda"), "{e}");
    assert!(
        e.contains("--- console") && e.contains("BRAMBLE-CHECK kernel="),
        "{e}"
    );
}
