//! OCI and Docker images on the master (and the CLI): platforms, manifest formats, the
//! content-addressed blob store and the registry client. The worker never links this crate.
pub mod archive;
pub mod formats;
pub mod platform;
pub mod registry;
pub mod store;

pub use bramble_wire::image_ref::{ImageRef, ImageRefError, normalize};
