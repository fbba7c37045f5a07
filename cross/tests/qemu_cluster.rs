//! The QEMU ARM cluster scenarios (see `bramble_cross::cluster`): a real `bramble master` on the
//! host's loopback, `qemu-virt-aarch64` and `qemu-virt-armv7` guests running the cross-built
//! `bramble-worker`, everything asserted through the real `bramble` CLI:
//!
//! 1. registration of both boards (arch, cgroup v2 with cpu/memory/pids), boot-to-Ready timed;
//! 2. arch pinning with both boards up; containment: `bramble-attack` as root in a default pod
//!    (every attack refused) and a privileged one on each board;
//! 3. a pod's logs through `bramble logs` and an OOMKilled 32Mi pod on aarch64;
//! 4. cgroup v2 limits enforced by the guest's kernel: a 250m pod holds 10-40 % of a core
//!    (next to an unlimited one that gets clearly more), a fork bomb stops at `pids.max`;
//! 5. a pod runs from an uploaded busybox artifact (`bramble artifact push --arch aarch64`);
//! 6. an isolated pod on aarch64: its address in the node's pod subnet, a route via the bridge;
//! 7. power cut: the worker restarts its pods from the state disk with the master down, then
//!    the master returns and the pods are Running once.
//!
//! Prints per-scenario results, boot-to-Ready per board and the suite's duration. Nothing is
//! skipped: missing tools or a worker that does not build fail the test with the reason. The
//! master and workers are built from the current sources; the development variables
//! (`BRAMBLE_QEMU_ONLY`, `BRAMBLE_BIN`, `BRAMBLE_WORKER_*`, for `cargo cross qemu-test`) make
//! the test fail at once.

use std::path::PathBuf;

use bramble_cross::cluster::{SuiteOptions, refuse_dev_overrides, run_suite};

#[test]
fn qemu_cluster_scenarios() {
    if let Err(e) = refuse_dev_overrides() {
        panic!("{e:#}");
    }
    // Cargo builds the `cross` binary (QEMU's guestfwd relay) for this test.
    let relay = PathBuf::from(env!("CARGO_BIN_EXE_cross"));
    let report = run_suite(&SuiteOptions {
        relay: Some(relay),
        ..SuiteOptions::default()
    })
    .unwrap_or_else(|e| panic!("the QEMU cluster suite could not start: {e:#}"));
    eprintln!("{report}");
    let problems = report.problems();
    assert!(
        report.passed() && problems.is_empty(),
        "{} scenario(s) failed or did not run:\n{}\n{report}",
        problems.len(),
        problems.join("\n\n")
    );
}

/// Only the artifact scenario, on the aarch64 board alone (development:
/// `cargo test -p bramble-cross --test qemu_cluster -- --ignored artifact`).
#[test]
#[ignore = "part of qemu_cluster_scenarios; run alone while developing"]
fn qemu_artifact_scenario_alone() {
    let relay = PathBuf::from(env!("CARGO_BIN_EXE_cross"));
    match bramble_cross::cluster::run_artifact_only(None, Some(relay), false) {
        Ok(s) => eprintln!("PASS: {s}"),
        Err(e) => panic!("artifact scenario failed: {e:#}"),
    }
}
