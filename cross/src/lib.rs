//! `bramble-cross`: per-board cross builds and the QEMU ARM emulation harness.
//!
//! - [`build`]: `cargo cross build --board NAME` — `bramble-worker` and `bramble` for a board.
//! - [`qemu`]: boot a QEMU ARM guest with the cross-built worker ([`qemu::Guest`]).
//! - [`debian`]: fetch and cache Debian's ARM kernels and busybox for the guests.
//! - [`cluster`]: the whole-cluster scenarios on QEMU guests against a real master (used by
//!   `cargo cross qemu-test` and `cross/tests/qemu_cluster.rs`).
//! - [`image`]: `cargo cross image` — a ready-to-flash SD-card image for one node.
//! - [`smoke`]: the harness's own end-to-end check (used by `cargo cross qemu-test` and
//!   `cross/tests/qemu_smoke.rs`).
#![forbid(unsafe_code)]

pub mod build;
pub mod cluster;
pub mod debian;
pub mod image;
pub mod initramfs;
pub mod qemu;
pub mod relay;
pub mod smoke;
pub mod util;
