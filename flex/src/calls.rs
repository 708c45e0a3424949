//! One call from kubelet or kube-controller-manager, start to reply.

use crate::attach;
use crate::device;
use crate::error::Error;
use crate::mounts;
use crate::options::VolumeOptions;
use crate::protocol::{Call, Capabilities, Reply};
use crate::settings::Settings;
use serde_json::{Map, Value};
use std::path::Path;

fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)
}

fn opts(m: &Map<String, Value>) -> Result<VolumeOptions, Reply> {
    VolumeOptions::parse(m).map_err(|e| Reply::failure(e.to_string()))
}

pub fn run(s: &Settings, call: Call) -> Reply {
    match call {
        Call::Init => Reply {
            capabilities: Some(Capabilities {
                attach: true,
                // ext4, xfs and btrfs keep SELinux labels: kubelet passes this to the container
                // runtime as the mount's selinux_relabel (volume.Attributes.SELinuxRelabel from
                // the driver's capabilities, kubernetes pkg/volume/flexvolume/mounter-defaults.go
                // GetAttributes), which relabels the volume for the pod on SELinux-enforcing
                // nodes; false would leave the pod denied its own volume there.
                selinux_relabel: true,
                // kubelet then reports the volume's usage (kubelet_volume_stats_*) from a statfs
                // of the pod's volume dir, the bind mount of our filesystem (kubernetes
                // pkg/volume/flexvolume/plugin.go, newMounterInternal).
                supports_metrics: true,
                fs_group: true,
                requires_fs_resize: true,
            }),
            // A checked prerequisite of formatting: said here (kubelet logs it) and by `doctor`.
            message: if crate::doctor::in_path("blkid") {
                String::new()
            } else {
                "blkid is not installed on this host: mountdevice formats no new disk until it is (util-linux; see flexdisk doctor)".into()
            },
            ..Reply::success()
        },
        Call::Version => {
            Reply::success().with_message(format!("flexdisk {}", env!("CARGO_PKG_VERSION")))
        }
        Call::Unsupported(name) => Reply::not_supported(&name),
        Call::Attach { options, node } => {
            let o = match opts(&options) {
                Ok(o) => o,
                Err(r) => return r,
            };
            match runtime().and_then(|rt| rt.block_on(attach::attach(s, &o, &node))) {
                Ok(lun) => Reply {
                    device: Some(lun.to_string()),
                    ..Reply::success()
                },
                Err(e) => Reply::failure(e.to_string()),
            }
        }
        Call::IsAttached { options, node } => {
            let o = match opts(&options) {
                Ok(o) => o,
                Err(r) => return r,
            };
            match runtime().and_then(|rt| rt.block_on(attach::is_attached(s, &o, &node))) {
                Ok(a) => Reply {
                    attached: Some(a),
                    ..Reply::success()
                },
                Err(e) => Reply::failure(e.to_string()),
            }
        }
        Call::Detach { volume, node } => {
            match runtime().and_then(|rt| rt.block_on(attach::detach(s, &volume, &node))) {
                Ok(m) => Reply::success().with_message(m),
                Err(e) => Reply::failure(e.to_string()),
            }
        }
        Call::WaitForAttach { device, options } => {
            if let Err(r) = opts(&options) {
                return r;
            }
            if device.starts_with('/') && Path::new(&device).exists() {
                return Reply {
                    device: Some(device),
                    ..Reply::success()
                };
            }
            let Ok(lun) = device.trim().parse::<u32>() else {
                return Reply::failure(format!(
                    "waitforattach: {device:?} is not a LUN (attach answers the LUN)"
                ));
            };
            match device::wait_for(s, lun) {
                Ok(dev) => Reply {
                    device: Some(dev.display().to_string()),
                    ..Reply::success()
                },
                Err(e) => Reply::failure(e.to_string()),
            }
        }
        Call::MountDevice {
            dir,
            device,
            options,
        } => {
            let o = match opts(&options) {
                Ok(o) => o,
                Err(r) => return r,
            };
            match crate::mount_device::mount_device(s, Path::new(&dir), Path::new(&device), &o) {
                Ok(m) => Reply::success().with_message(m),
                Err(e) => Reply::failure(e.to_string()),
            }
        }
        Call::ExpandVolume { options, new_bytes } => {
            let o = match opts(&options) {
                Ok(o) => o,
                Err(r) => return r,
            };
            match runtime().and_then(|rt| rt.block_on(attach::expand(s, &o, new_bytes))) {
                Ok(m) => Reply::success().with_message(m),
                Err(e) => Reply::failure(e.to_string()),
            }
        }
        Call::ExpandFs {
            options,
            device,
            dir,
            new_bytes,
        } => {
            let o = match opts(&options) {
                Ok(o) => o,
                Err(r) => return r,
            };
            match mounts::grow_filesystem(
                s,
                Path::new(&device),
                Path::new(&dir),
                &o.fs_type,
                new_bytes,
            ) {
                Ok(m) => Reply::success().with_message(m),
                Err(e) => Reply::failure(e.to_string()),
            }
        }
        Call::Install(request) => match crate::install::install(&request) {
            Ok(m) => Reply::success().with_message(m),
            Err(e) => Reply::failure(e.to_string()),
        },
        Call::UnmountDevice { dir } => match mounts::unmount(Path::new(&dir)) {
            Ok(()) => Reply::success(),
            Err(e) => Reply::failure(e.to_string()),
        },
    }
}
