//! Boot each QEMU board with the cross-built worker and check the guest from its console:
//! kernel booted, cgroup2 with cpu/memory/pids, `unshare -p -f -m`, eth0 up, the ext4 state
//! disk mounted, and a TCP connection from the guest to a listener on the host's loopback
//! through QEMU's guestfwd. Prints the boot-to-marker time.
//!
//! Needs qemu-system-arm, the cross toolchains and rust targets (see cross/README.md); the
//! first run downloads Debian's arm64/armhf kernels into the cache. Missing pieces FAIL the
//! test with the fix; nothing is skipped. One QEMU at a time (the tests take a lock).

use std::path::PathBuf;
use std::sync::Mutex;

use bramble_cross::build::{self, Bin};

static ONE_QEMU_AT_A_TIME: Mutex<()> = Mutex::new(());

fn smoke(name: &str) {
    let _one = ONE_QEMU_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
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
    let report = bramble_cross::smoke::run_with_relay(board, &worker.stripped, Some(relay))
        .unwrap_or_else(|e| panic!("QEMU smoke test of {name} failed: {e:#}"));
    eprintln!("{report}");
    assert!(report.ready_after < bramble_cross::smoke::BOOT_TIMEOUT);
}

#[test]
fn qemu_virt_aarch64_boots_the_worker() {
    smoke("qemu-virt-aarch64");
}

#[test]
fn qemu_virt_armv7_boots_the_worker() {
    smoke("qemu-virt-armv7");
}
