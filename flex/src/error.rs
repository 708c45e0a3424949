//! What went wrong in a driver call, by what failed. The reply's message is the error's text:
//! kubelet and kube-controller-manager log it and show it in events, so it says what to do.

use flexdisk_azure::{AzureError, ConfigError};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The call's arguments or the volume's options are not what the driver needs.
    #[error("{0}")]
    Options(String),

    /// The cloud configuration (`azure.json`) cannot be used.
    #[error(transparent)]
    Config(#[from] ConfigError),

    /// An Azure call failed.
    #[error("{}", describe_azure(.0))]
    Azure(#[from] AzureError),

    /// An Azure call failed while the driver was doing `what`.
    #[error("{what}: {}", describe_azure(.source))]
    AzureDuring {
        what: String,
        #[source]
        source: AzureError,
    },

    /// The attach or detach operation this call's request went in failed; the message is the
    /// one the batch's sender recorded (it crosses processes as text).
    #[error("{0}")]
    Operation(String),

    /// The driver refuses: going on could lose or expose data, or give a disk to a second PV.
    #[error("{0}")]
    Refused(String),

    /// The device is not there, or cannot be proven to be the disk asked for.
    #[error("{0}")]
    Device(String),

    /// A file of the host (state, spool, device, mount point, the binary) failed.
    #[error("{}: {source}", .path.display())]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The cross-process batching spool is not as this process left it.
    #[error("{0}")]
    Spool(String),

    /// A program the driver runs (mkfs, blkid, a filesystem's grow tool) failed or is missing.
    #[error("{0}")]
    Tool(String),

    /// The kernel refused a mount, an unmount or a lock.
    #[error("{0}")]
    Kernel(String),

    /// The driver's own runtime could not start.
    #[error("cannot start: {0}")]
    Runtime(#[source] std::io::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// A failed file operation on `path`.
    pub fn file(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
        move |source| Error::File {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Azure's error as the driver's caller should read it (the data-disk limit says what to do).
pub fn describe_azure(e: &AzureError) -> String {
    match e {
        AzureError::DataDiskLimit { limit, message } => format!(
            "the VM has no room for another data disk{}: {message}; move the pod to a node with free slots or a larger VM size",
            limit.map(|l| format!(" (its size allows {l})")).unwrap_or_default()
        ),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_say_what_failed_and_what_to_do() {
        let full = Error::Azure(AzureError::DataDiskLimit {
            limit: Some(4),
            message: "The maximum number of data disks allowed is 4.".into(),
        });
        assert!(full
            .to_string()
            .starts_with("the VM has no room for another data disk (its size allows 4)"));
        let during = Error::AzureDuring {
            what: "cannot mark disk d as PV p's".into(),
            source: AzureError::Throttled {
                retry_after: None,
                message: "slow down".into(),
            },
        };
        assert_eq!(
            during.to_string(),
            "cannot mark disk d as PV p's: throttled by Azure: slow down"
        );
        let file = Error::file(Path::new("/var/lib/flexdisk/spool"))(std::io::Error::from(
            std::io::ErrorKind::PermissionDenied,
        ));
        assert!(file.to_string().starts_with("/var/lib/flexdisk/spool: "));
    }
}
