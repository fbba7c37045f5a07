//! The QEMU ARM cluster scenarios (see `bramble_cross::cluster`): a real `bramble master` on the
//! host's loopback, `qemu-virt-aarch64` and `qemu-virt-armv7` guests running the cross-built
//! `bramble-worker`, everything asserted through the real `bramble` CLI:
//!
//! 1. registration of both boards (arch, cgroup v2 with cpu/memory/pids), boot-to-Ready timed;
//! 2. arch pinning with both boards up;
//! 3. a pod's logs through `bramble logs` and an OOMKilled 32Mi pod on aarch64;
//! 4. a pod runs from an uploaded busybox artifact (`bramble artifact push --arch aarch64`);
//! 5. an isolated pod on aarch64: its address in the node's pod subnet, a route via the bridge;
//! 6. power cut: the worker restarts its pods from the state disk with the master down, then
//!    the master returns and the pods are Running once.
//!
//! Prints per-scenario results, boot-to-Ready per board and the suite's duration. Nothing is
//! skipped: missing tools or a worker that does not build fail the test with the reason.
//! `BRAMBLE_WORKER_QEMU_VIRT_AARCH64` / `BRAMBLE_WORKER_QEMU_VIRT_ARMV7` use prebuilt workers.

use std::path::PathBuf;

#[test]
fn qemu_cluster_scenarios() {
    // Cargo builds the `cross` binary (QEMU's guestfwd relay) for this test.
    let relay = PathBuf::from(env!("CARGO_BIN_EXE_cross"));
    let report = bramble_cross::cluster::run_suite(&[], Some(relay))
        .unwrap_or_else(|e| panic!("the QEMU cluster suite could not start: {e:#}"));
    eprintln!("{report}");
    let failed: Vec<String> = report
        .outcomes
        .iter()
        .filter_map(|o| {
            o.result
                .as_ref()
                .err()
                .map(|e| format!("{}: {e:#}", o.name))
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{} scenario(s) failed:\n{}\n{report}",
        failed.len(),
        failed.join("\n\n")
    );
}

/// Only the artifact scenario, on the aarch64 board alone (development:
/// `cargo test -p bramble-cross --test qemu_cluster -- --ignored artifact`).
#[test]
#[ignore = "part of qemu_cluster_scenarios; run alone while developing"]
fn qemu_artifact_scenario_alone() {
    let relay = PathBuf::from(env!("CARGO_BIN_EXE_cross"));
    match bramble_cross::cluster::run_artifact_only(None, Some(relay)) {
        Ok(s) => eprintln!("PASS: {s}"),
        Err(e) => panic!("artifact scenario failed: {e:#}"),
    }
}
