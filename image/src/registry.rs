//! PLACEHOLDER: the contract's pull API; every pull fails with "not built yet".

use bramble_wire::image_ref::ImageRef;
use bramble_wire::objects::Image;

use crate::store::BlobStore;

/// How to reach a registry.
#[derive(Debug, Clone, Default)]
pub struct RegistrySettings {
    /// Plain HTTP.
    pub insecure: bool,
    /// Basic-auth user.
    pub username: Option<String>,
    /// Basic-auth password.
    pub password: Option<String>,
    /// Pull through this host instead.
    pub mirror: Option<String>,
    /// Extra trusted CA certificates (PEM).
    pub ca_pem: Option<String>,
}

/// Limits of a pull.
#[derive(Debug, Clone)]
pub struct PullLimits {
    /// Largest blob.
    pub max_blob_bytes: u64,
}

/// Progress of a pull.
#[derive(Debug, Clone)]
pub struct Progress {
    /// What is being done.
    pub message: String,
    /// Bytes fetched.
    pub done: u64,
    /// Bytes to fetch (0 until known).
    pub total: u64,
}

/// Why a pull failed.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The placeholder's only error.
    #[error("{0}: pulling is not built yet in this master (placeholder image crate)")]
    NotBuilt(String),
}

impl PullError {
    /// Whether retrying may help (429, 5xx, network).
    pub fn retryable(&self) -> bool {
        true
    }
}

/// Pulls `reference` into `store` (blocking).
pub fn pull(
    reference: &ImageRef,
    _settings: &RegistrySettings,
    _store: &BlobStore,
    _limits: &PullLimits,
    _progress: &mut dyn FnMut(Progress),
) -> Result<Image, PullError> {
    Err(PullError::NotBuilt(reference.normalized()))
}
