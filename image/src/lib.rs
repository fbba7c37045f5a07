//! OCI and Docker images on the master and in the CLI (the worker never links this crate).

pub mod archive;
