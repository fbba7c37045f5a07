//! The worker's TLS client: the `bramble-worker-tls` crate (worker/tls), which holds all of it so
//! that the record cipher's generic code is instantiated there and built for speed while the
//! rest of the worker is built for size (see the release profile in the workspace Cargo.toml).

pub use bramble_worker_tls::*;
