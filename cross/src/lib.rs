//! `bramble-cross`: per-board cross builds and the QEMU ARM emulation harness.
//!
//! - [`build`]: `cargo cross build --board NAME` — `bramble-worker` and `bramble` for a board.
//! - [`qemu`]: boot a QEMU ARM guest with the cross-built worker ([`qemu::Guest`]).
//! - [`debian`]: fetch and cache Debian's ARM kernels and busybox for the guests.
//! - [`smoke`]: the harness's own end-to-end check (used by `cargo cross qemu-test` and
//!   `cross/tests/qemu_smoke.rs`).
#![forbid(unsafe_code)]

pub mod build;
pub mod debian;
pub mod initramfs;
pub mod qemu;
pub mod relay;
pub mod smoke;
pub mod util;
