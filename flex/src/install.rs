//! `flexdisk install --plugin-dir DIR [--cloud-config FILE] [--stay [--refresh-secs N]]`: puts this binary where
//! kubelet looks for the driver, atomically — kubelet's prober watches that directory and must never
//! see a half-written file.
//!
//! The installer runs in a DaemonSet pod, but the driver it installs runs on the host (kubelet) and
//! in kube-controller-manager's container, neither of which sees the pod's environment or volumes.
//! So what the driver needs travels beside it in the plugin dir: `flexdisk.conf` (every `FLEXDISK_*`
//! variable of the installer's environment) and, with `--cloud-config`, a private copy of the cloud
//! config as `azure.json`, which `flexdisk.conf` names relative to the binary.

use crate::error::Error;
use crate::protocol::UsageError;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

pub const VENDOR_DRIVER: &str = "flexdisk~azure-disk";
pub const DRIVER: &str = "azure-disk";
/// Settings file beside the installed binary (see `settings.rs`).
pub const CONF: &str = "flexdisk.conf";
/// Name of the cloud config copied beside the binary by `--cloud-config`.
pub const CLOUD_CONFIG_COPY: &str = "azure.json";

const USAGE: &str =
    "install takes --plugin-dir <kubelet's volume plugin dir> [--cloud-config <azure.json>] [--stay [--refresh-secs <seconds, default 30>]]";

#[derive(Debug, Clone, PartialEq)]
pub struct InstallRequest {
    pub plugin_dir: PathBuf,
    /// Copied beside the binary (mode 0600) for hosts without `/etc/kubernetes/azure.json`.
    pub cloud_config: Option<PathBuf>,
    /// After installing, wait for SIGTERM/SIGINT (a DaemonSet container must keep running).
    pub stay: bool,
    /// With `--stay`: how often the cloud config is compared with its copy.
    pub refresh: std::time::Duration,
}

impl InstallRequest {
    pub fn parse(args: &[String]) -> Result<InstallRequest, UsageError> {
        let mut plugin_dir = None;
        let mut cloud_config = None;
        let mut stay = false;
        let mut refresh = DEFAULT_REFRESH;
        // Both `--flag value` and `--flag=value`, as manifests write either.
        let mut words = args.iter().flat_map(|a| match a.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                vec![flag.to_string(), value.to_string()]
            }
            _ => vec![a.clone()],
        });
        while let Some(flag) = words.next() {
            let mut value = || {
                words
                    .next()
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from)
                    .ok_or_else(|| UsageError(format!("{flag} needs a value; {USAGE}")))
            };
            match flag.as_str() {
                "--plugin-dir" => plugin_dir = Some(value()?),
                "--cloud-config" => cloud_config = Some(value()?),
                "--stay" => stay = true,
                "--refresh-secs" => {
                    let v = value()?;
                    let secs = v
                        .to_str()
                        .and_then(|v| v.parse::<u64>().ok())
                        .filter(|s| *s > 0)
                        .ok_or_else(|| {
                            UsageError(format!(
                                "--refresh-secs takes a positive number of seconds, not {v:?}"
                            ))
                        })?;
                    refresh = std::time::Duration::from_secs(secs);
                }
                other => return Err(UsageError(format!("unknown argument {other:?}; {USAGE}"))),
            }
        }
        Ok(InstallRequest {
            plugin_dir: plugin_dir.ok_or_else(|| UsageError(USAGE.into()))?,
            cloud_config,
            stay,
            refresh,
        })
    }
}

/// After a successful `install --stay`: keeps the copied cloud config current (a Secret's update
/// reaches the pod, and a node's azure.json may be rewritten when credentials rotate) until SIGTERM
/// or SIGINT. A DaemonSet's container is PID 1, which ignores signals it has no handler for, so
/// waiting for them explicitly is what lets the pod stop at once.
pub fn stay_if_asked(argv: &[String]) {
    let request = match argv.split_first() {
        Some((call, rest)) if call == "install" => match InstallRequest::parse(rest) {
            Ok(r) if r.stay => r,
            _ => return,
        },
        _ => return,
    };
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    // Blocked before the refresher starts, so that it inherits the mask and the signal comes here.
    if set.thread_block().is_err() {
        return;
    }
    if let Some(source) = request.cloud_config.clone() {
        let dir = request.plugin_dir.join(VENDOR_DRIVER);
        std::thread::spawn(move || loop {
            std::thread::sleep(request.refresh);
            let fresh = std::fs::read(&source).ok();
            let current = std::fs::read(dir.join(CLOUD_CONFIG_COPY)).ok();
            if let Some(bytes) = fresh.filter(|b| Some(b) != current.as_ref()) {
                let _ = replace(&dir, CLOUD_CONFIG_COPY, &mut bytes.as_slice(), 0o600);
            }
        });
    }
    let _ = set.wait();
}

/// How often `--stay` compares the cloud config with its copy, unless `--refresh-secs` says.
pub const DEFAULT_REFRESH: std::time::Duration = std::time::Duration::from_secs(30);

/// The `flexdisk.conf` an installer with this environment leaves beside the binary.
pub fn conf_text(env: &[(String, String)], cloud_config_copied: bool) -> String {
    let mut lines: Vec<String> = env
        .iter()
        .filter(|(k, _)| k.starts_with("FLEXDISK_"))
        .filter(|(k, _)| !(cloud_config_copied && k == "FLEXDISK_CONFIG"))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if cloud_config_copied {
        lines.push(format!("FLEXDISK_CONFIG={CLOUD_CONFIG_COPY}"));
    }
    lines.sort();
    let mut text = String::from(
        "# Written by `flexdisk install` from its environment; rewritten at every install.\n",
    );
    for l in lines {
        text.push_str(&l);
        text.push('\n');
    }
    text
}

pub fn install(request: &InstallRequest) -> crate::error::Result<String> {
    let me = std::env::current_exe().map_err(Error::file(Path::new("/proc/self/exe")))?;
    let dir = request.plugin_dir.join(VENDOR_DRIVER);
    std::fs::create_dir_all(&dir).map_err(Error::file(&dir))?;
    // What the driver reads comes first: the prober may run the binary the moment it appears.
    if let Some(source) = &request.cloud_config {
        let bytes = std::fs::read(source).map_err(|e| {
            Error::Options(format!(
                "cannot read the cloud config {}: {e}; mount it into the installer (a hostPath or a Secret)",
                source.display()
            ))
        })?;
        replace(&dir, CLOUD_CONFIG_COPY, &mut bytes.as_slice(), 0o600)?;
    }
    let env: Vec<(String, String)> = std::env::vars().collect();
    let conf = conf_text(&env, request.cloud_config.is_some());
    replace(&dir, CONF, &mut conf.as_bytes(), 0o644)?;
    // Streamed, not read whole: the installer's container has a small memory limit.
    let mut binary = std::fs::File::open(&me).map_err(Error::file(&me))?;
    let target = replace(&dir, DRIVER, &mut binary, 0o755)?;
    Ok(format!("installed {}", target.display()))
}

/// Writes `dir/name` through a staging file, fsync and rename, so readers see the old or the new
/// file, never a part.
fn replace(
    dir: &Path,
    name: &str,
    content: &mut dyn std::io::Read,
    mode: u32,
) -> crate::error::Result<PathBuf> {
    let target = dir.join(name);
    let staging = dir.join(format!(".{name}.{}", std::process::id()));
    let mut write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&staging)?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        std::io::copy(content, &mut f)?;
        f.sync_all()?;
        std::fs::rename(&staging, &target)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&staging);
        Error::file(&target)(e)
    })?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn arguments() {
        let r = InstallRequest::parse(&args(&[
            "--stay",
            "--plugin-dir",
            "/p",
            "--cloud-config=/c/azure.json",
        ]))
        .expect("valid");
        assert_eq!(r.plugin_dir, PathBuf::from("/p"));
        assert_eq!(r.cloud_config, Some(PathBuf::from("/c/azure.json")));
        assert!(r.stay);
        let e = InstallRequest::parse(&args(&["--plugin-dir"])).expect_err("no value");
        assert!(e.0.contains("--plugin-dir needs a value"), "{e}");
        let e = InstallRequest::parse(&args(&["/x"])).expect_err("positional");
        assert!(e.0.contains("unknown argument \"/x\""), "{e}");
        assert!(InstallRequest::parse(&args(&["--stay"])).is_err());
        assert!(InstallRequest::parse(&args(&["--plugin-dir="])).is_err());
        assert_eq!(r.refresh, DEFAULT_REFRESH);
        let r = InstallRequest::parse(&args(&["--plugin-dir=/p", "--refresh-secs=2"])).expect("ok");
        assert_eq!(r.refresh, std::time::Duration::from_secs(2));
        let e = InstallRequest::parse(&args(&["--plugin-dir=/p", "--refresh-secs", "0"]))
            .expect_err("zero");
        assert!(e.0.contains("positive number of seconds"), "{e}");
    }

    #[test]
    fn conf_carries_the_driver_settings_only() {
        let env = vec![
            ("PATH".to_string(), "/bin".to_string()),
            ("FLEXDISK_WAIT_SECS".to_string(), "60".to_string()),
            ("FLEXDISK_CONFIG".to_string(), "/etc/x.json".to_string()),
        ];
        assert_eq!(
            conf_text(&env, false).lines().skip(1).collect::<Vec<_>>(),
            ["FLEXDISK_CONFIG=/etc/x.json", "FLEXDISK_WAIT_SECS=60"]
        );
        assert_eq!(
            conf_text(&env, true).lines().skip(1).collect::<Vec<_>>(),
            ["FLEXDISK_CONFIG=azure.json", "FLEXDISK_WAIT_SECS=60"]
        );
    }
}
