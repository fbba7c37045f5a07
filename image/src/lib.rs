//! PLACEHOLDER crate (MASTER helper's worktree only). It has exactly the public API of
//! /work/notes/image-contract.md so that the master builds and tests against it; the REGISTRY
//! helper's `bramble-image` replaces it whole at merge. `store::BlobStore` works; `formats`
//! resolves a stored OCI index/manifest minimally (enough for the master's import tests);
//! `registry::pull` always fails with "not built yet".

pub mod formats;
pub mod platform;
pub mod registry;
pub mod store;

pub use store::{BlobStore, StoreError};
