//! Bramble's control plane: the SQLite store, the scheduler, the API server and the CLI client.
//!
//! Invariants: only [`store`] knows SQL; [`sched`] never does I/O or reads the clock.

pub mod api;
pub mod cache;
pub mod cli;
pub mod config_data;
pub mod controllers;
pub mod demo;
pub mod manifest;
pub mod sched;
pub mod server;
pub mod store;
pub mod validate;
