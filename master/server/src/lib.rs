//! Bramble's control plane: the SQLite store, the scheduler, the controllers and the API server.
//!
//! Invariants: only [`store`] knows SQL; [`sched`] never does I/O or reads the clock.
//!
//! The manifest rules and the API client are in `bramble-client`; the `bramble` binary
//! (`bramble-cli`) wires the command line to both.

pub mod api;
pub mod controllers;
pub mod sched;
pub mod server;
pub mod store;

// The object checks the master applies to every write are the client's (one set of rules); the
// server's modules reach them as `crate::validate` and `crate::config_data`.
pub use bramble_client::{config_data, validate};
