//! The driver's configuration, from the environment, with production defaults.

use std::path::{Path, PathBuf};
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
    /// The longest the holder of a VM's lock waits for requests on their way
    /// (`FLEXDISK_BATCH_WINDOW_MS`); see `batch`.
    pub batch_window: Duration,
    /// How long a batch with company stays open after the last arrival (`FLEXDISK_BATCH_GAP_MS`).
    pub batch_gap: Duration,
    /// How long `isattached` answers from a VM view another call of this host read
    /// (`FLEXDISK_VM_VIEW_SECS`, 0 to read every time); see `vm_view`.
    pub vm_view: Duration,
}

impl Settings {
    /// The environment, then `flexdisk.conf` beside the binary (`KEY=VALUE` lines of these same
    /// variables, as an installer may leave them), then the defaults.
    pub fn from_env() -> Settings {
        let exe = std::env::current_exe().ok();
        let file = exe
            .as_ref()
            .and_then(|exe| std::fs::read_to_string(exe.with_file_name(crate::install::CONF)).ok())
            .unwrap_or_default();
        let beside = exe.as_ref().and_then(|e| e.parent()).map(Path::to_path_buf);
        Settings::from_lookup(&|k: &str| {
            std::env::var(k)
                .ok()
                .filter(|v| !v.is_empty())
                .or_else(|| conf_path(&file, k, beside.as_deref()))
        })
    }

    pub fn from_lookup(var: &dyn Fn(&str) -> Option<String>) -> Settings {
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
                    .unwrap_or(500),
            ),
            batch_gap: Duration::from_millis(
                var("FLEXDISK_BATCH_GAP_MS")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(20),
            ),
            device_wait: Duration::from_secs(
                var("FLEXDISK_WAIT_SECS")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(300),
            ),
            vm_view: Duration::from_secs(
                var("FLEXDISK_VM_VIEW_SECS")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(15),
            ),
        }
    }

    /// Where driver processes share Azure's throttling (see `flexdisk_azure::throttle_memory`).
    pub fn throttle_dir(&self) -> PathBuf {
        self.state_dir.join("throttle")
    }

    /// Where driver processes share how long Azure's operations take (see
    /// `flexdisk_azure::op_durations`).
    pub fn durations_dir(&self) -> PathBuf {
        self.state_dir.join("durations")
    }

    /// A host path under the host root.
    pub fn host(&self, path: &str) -> PathBuf {
        self.host_root.join(path.trim_start_matches('/'))
    }
}

/// A conf value, with relative paths taken from the conf file's directory: the installer cannot
/// know where the host mounts the plugin dir, so it names files beside the binary relatively.
fn conf_path(text: &str, key: &str, beside: Option<&Path>) -> Option<String> {
    let v = conf_value(text, key)?;
    let is_path = matches!(
        key,
        "FLEXDISK_CONFIG" | "FLEXDISK_LOG" | "FLEXDISK_STATE_DIR"
    );
    match beside {
        Some(dir) if is_path && Path::new(&v).is_relative() => {
            Some(dir.join(&v).to_string_lossy().into_owned())
        }
        _ => Some(v),
    }
}

/// `KEY=VALUE` from a conf file (blank lines and `#` comments skipped; quotes around the value
/// removed).
fn conf_value(text: &str, key: &str) -> Option<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim().trim_matches('"').to_string())
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_files_and_defaults() {
        let text = "# installed by the DaemonSet\nFLEXDISK_CONFIG=/etc/azure/azure.json\nFLEXDISK_WAIT_SECS = \"60\"\n";
        assert_eq!(
            conf_value(text, "FLEXDISK_CONFIG").as_deref(),
            Some("/etc/azure/azure.json")
        );
        assert_eq!(
            conf_value(text, "FLEXDISK_WAIT_SECS").as_deref(),
            Some("60")
        );
        assert_eq!(conf_value(text, "FLEXDISK_LOG"), None);
        let s = Settings::from_lookup(&|k| conf_value(text, k));
        assert_eq!(s.cloud_config, PathBuf::from("/etc/azure/azure.json"));
        assert_eq!(s.device_wait, Duration::from_secs(60));
        assert_eq!(s.host_root, PathBuf::from("/"));
        assert_eq!(s.host("/dev/disk/azure"), PathBuf::from("/dev/disk/azure"));
        let beside = Path::new("/plugins/flexdisk~azure-disk");
        assert_eq!(
            conf_path(
                "FLEXDISK_CONFIG=azure.json\nFLEXDISK_WAIT_SECS=9",
                "FLEXDISK_CONFIG",
                Some(beside)
            )
            .as_deref(),
            Some("/plugins/flexdisk~azure-disk/azure.json")
        );
        assert_eq!(
            conf_path("FLEXDISK_WAIT_SECS=9", "FLEXDISK_WAIT_SECS", Some(beside)).as_deref(),
            Some("9")
        );
    }
}
