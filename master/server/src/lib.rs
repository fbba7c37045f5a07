//! Bramble's control plane: the SQLite store, the scheduler, the controllers and the API server.
//!
//! Invariants: only [`store`] knows SQL; [`sched`] never does I/O or reads the clock.
//! [`config_data`] and [`validate`] are the client's, shared with the CLI.

pub mod api;
pub mod cache;
pub use bramble_client::config_data;
pub mod controllers;
pub mod sched;
pub mod server;
pub mod store;
pub use bramble_client::validate;
