//! Bramble's wire protocol: the messages that the master, the workers, the `bramble` CLI and
//! bare-metal devices exchange, and the size-bounded framing that carries them.
//!
//! The crate is `#![no_std]` and does no I/O of its own (the optional [`io`] module only adapts the
//! pure [`frame`] decoder to `futures-lite`'s `AsyncRead`/`AsyncWrite`).
//!
//! # Layers
//! - [`core_msg`]: the messages a microcontroller can speak without an allocator: the handshake
//!   ([`Hello`] / [`Welcome`] / [`Reject`]), [`NodeInfo`], [`Heartbeat`] and the device messages.
//!   Built from `heapless` types: every field has a fixed upper bound.
//! - [`objects`] and [`msg`] (feature `alloc`): the full protocol — pod specs, object lists, watch
//!   events, log chunks — used by Linux peers.
//! - [`frame`]: varint length prefix + postcard body for byte streams, COBS for serial links.
//!   The maximum frame size is checked *before* a byte of the body is buffered.
//!
//! # Features
//! - `alloc`: the full protocol. `std` (default): `alloc` + the async [`io`] helpers.
//! - `defmt`: derive `defmt::Format` on the core messages.
//!
//! # Evolution rules
//! 1. [`Hello`] is frozen: its first field is always the protocol version, so a peer of any
//!    version can read it and answer [`Reject`] with [`RejectReason::UnsupportedVersion`].
//! 2. Within one protocol version, encodings never change: golden tests pin the exact bytes of
//!    every message. postcard is not self-describing, so a struct can never gain, lose or reorder
//!    a field without a new protocol version.
//! 3. Additive evolution: new message kinds and new enum cases are added **at the end** of their
//!    enum (postcard encodes the case's position). An old peer that receives an unknown case gets
//!    [`WireError::UnknownTag`] and closes the connection with that reason.
//! 4. Changing a struct's fields means bumping [`PROTOCOL_VERSION`]; the master keeps accepting
//!    [`MIN_PROTOCOL_VERSION`]`..=`[`PROTOCOL_VERSION`] and speaks the peer's version.
//!
//! # Example
//! ```
//! use bramble_wire::{frame, Heartbeat};
//! let hb = Heartbeat { seq: 7, pods_running: 2, uptime_s: 60 };
//! let mut buf = [0u8; 64];
//! let n = frame::encode(&hb, &mut buf).unwrap().len();
//! let mut dec = frame::Decoder::new(heapless::Vec::<u8, 64>::new(), 64);
//! let (used, body) = dec.feed(&buf[..n]).unwrap();
//! assert_eq!(used, n);
//! let back: Heartbeat = frame::decode(body.unwrap()).unwrap();
//! assert_eq!(back, hb);
//! ```
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

#[cfg(feature = "alloc")]
pub mod bytes;
pub mod core_msg;
mod error;
pub mod frame;
#[cfg(feature = "alloc")]
pub mod image_ref;
#[cfg(feature = "std")]
pub mod io;
#[cfg(feature = "alloc")]
pub mod msg;
pub mod net;
#[cfg(feature = "alloc")]
pub mod objects;
#[cfg(feature = "alloc")]
pub mod security;
pub mod stream;
pub mod token;

pub use core_msg::*;
pub use error::WireError;

/// The protocol version this build speaks (and the newest it accepts).
///
/// Version 2 added probes, `env_from` and readiness to pods and config maps and artifacts to
/// assignments. Version 3 removed what no peer used: the heartbeat's status digest, the status
/// report's `full` and `applied_revision`, the master's `Resync` (a worker reports every pod once
/// after each connect, and deltas over one TCP connection cannot be lost), and the devices' pod
/// status (devices get messages of their own). Version 4 added the security context: users and
/// groups by name, supplementary groups, `run_as_non_root`, capabilities and the seccomp profile
/// per process, `privileged`, `host_pid` and `host_ipc` per pod. Version 5 added the service
/// virtual IP (`cluster_ip` on services and endpoints) and `NodeDown::ClusterNetwork` (the pod
/// and service ranges and the DNS domain, for NAT, kernel service rules and cluster DNS).
/// Version 6 added images: `image` on pods and `args` on processes, the `Image` and `Registry`
/// kinds, the images in assignments, and the image pull/import/remove and blob upload calls.
/// Version 7 added a pod's `ephemeral_storage` (its writable layer on disk or a capped tmpfs)
/// and lets a node ask for 256 KiB of a blob in one `ArtifactGet` (32 KiB before). The master
/// speaks the newest version only: agents are upgraded together with it.
pub const PROTOCOL_VERSION: u16 = 7;
/// The oldest protocol version this build still accepts.
pub const MIN_PROTOCOL_VERSION: u16 = 7;
/// Default maximum frame body size: 64 KiB.
pub const DEFAULT_MAX_FRAME: usize = 64 * 1024;
