//! The driver's configuration, from the environment, with production defaults.

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Settings {
    /// cloud-provider-azure's config (`FLEXDISK_CONFIG`).
    pub cloud_config: PathBuf,
    /// Prefix of the host trees the driver reads itself (`/dev/disk/azure`, `/sys`), for
    /// containerised kubelets (`FLEXDISK_HOST_ROOT`).
    pub host_root: PathBuf,
    /// Log file (`FLEXDISK_LOG`); never stdout or stderr, which kubelet parses.
    pub log: PathBuf,
    /// Locks and the record of attached volumes (`FLEXDISK_STATE_DIR`).
    pub state_dir: PathBuf,
    /// How long waitforattach waits for the device (`FLEXDISK_WAIT_SECS`), well under kubelet's 10 min.
    pub device_wait: Duration,
    /// How long the holder of a VM's lock gathers requests before sending them
    /// (`FLEXDISK_BATCH_WINDOW_MS`).
    pub batch_window: Duration,
}

impl Settings {
    pub fn from_env() -> Settings {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Settings {
            cloud_config: var("FLEXDISK_CONFIG")
                .unwrap_or_else(|| "/etc/kubernetes/azure.json".into())
                .into(),
            host_root: var("FLEXDISK_HOST_ROOT")
                .unwrap_or_else(|| "/".into())
                .into(),
            log: var("FLEXDISK_LOG")
                .unwrap_or_else(|| "/var/log/flexdisk.log".into())
                .into(),
            state_dir: var("FLEXDISK_STATE_DIR")
                .unwrap_or_else(|| "/var/lib/flexdisk".into())
                .into(),
            batch_window: Duration::from_millis(
                var("FLEXDISK_BATCH_WINDOW_MS")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(200),
            ),
            device_wait: Duration::from_secs(
                var("FLEXDISK_WAIT_SECS")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(300),
            ),
        }
    }

    /// A host path under the host root.
    pub fn host(&self, path: &str) -> PathBuf {
        self.host_root.join(path.trim_start_matches('/'))
    }
}
