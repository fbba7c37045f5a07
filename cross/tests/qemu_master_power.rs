//! A master board losing power (see `bramble_cross::cluster::master_power`): the master,
//! cross-built for aarch64, runs in a `qemu-virt-aarch64` guest with its store on the virtio
//! state disk; QEMU is SIGKILLed during a stream of `bramble apply` from the host, the guest
//! boots again on the same disk, and every acknowledged write must be there; after the last cut
//! `e2fsck` is clean, and the host's master opens the database read from the disk (its
//! integrity check at boot passes) with every acknowledged write.
//!
//! 5 rounds here; `BRAMBLE_POWER_CUT_ROUNDS=50` for the longer run (about 40 s a round).

use std::path::PathBuf;

use bramble_cross::cluster::master_power::{PowerCutOptions, master_power_cuts};
use bramble_cross::cluster::refuse_dev_overrides;

#[test]
fn a_master_board_losing_power_keeps_every_acknowledged_write() {
    if let Err(e) = refuse_dev_overrides() {
        panic!("{e:#}");
    }
    let rounds = match std::env::var("BRAMBLE_POWER_CUT_ROUNDS") {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("BRAMBLE_POWER_CUT_ROUNDS={v:?} is not a whole number")),
        Err(_) => 5,
    };
    let relay = PathBuf::from(env!("CARGO_BIN_EXE_cross"));
    match master_power_cuts(&PowerCutOptions {
        rounds,
        relay: Some(relay),
    }) {
        Ok(report) => {
            eprintln!("{report}");
            assert!(report.lost.is_empty(), "{report}");
        }
        Err(e) => panic!("{e:#}"),
    }
}
