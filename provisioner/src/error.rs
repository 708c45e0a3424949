//! What can go wrong in a reconcile, and how each kind is tried again.

use flexdisk_azure::AzureError;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("Azure: {0}")]
    Azure(#[from] AzureError),
    #[error("{0}")]
    Internal(String),
    /// Something has to happen elsewhere first (a StorageClass created, a clone's source bound):
    /// tried again with back-off.
    #[error("{0}")]
    Waiting(String),
    /// A write lost to a newer version of the object: tried again with back-off, no event.
    #[error("{0}")]
    Stale(String),
}

impl Error {
    /// When to try again at the earliest, if the error says (Azure's Retry-After, the write
    /// budget's wait).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Azure(e) => e.retry_after(),
            _ => None,
        }
    }

    /// A short, fixed name for the kind of error (logs and metrics labels).
    pub fn label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Azure(_) => "azure",
            Error::Internal(_) => "internal",
            Error::Waiting(_) => "waiting",
            Error::Stale(_) => "stale",
        }
    }

    /// Whether the failure is worth an event on the object (the ones that say what to do).
    pub fn tells_the_user(&self) -> bool {
        !matches!(self, Error::Stale(_))
    }
}
