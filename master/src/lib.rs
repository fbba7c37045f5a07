//! Bramble's control plane: the SQLite store, the scheduler, the API server and the CLI client.
//!
//! Invariants: only [`store`] knows SQL; [`sched`] never does I/O or reads the clock.

pub mod sched;
pub mod store;
