//! The node backend: what a guest sees when Azure attaches a disk. Each attached LUN becomes a loop
//! device over the disk's sparse file, with the device node, udev's `/dev/disk/azure/scsi1/lun<N>`
//! link and a sysfs-like SCSI entry under the node's host root.
//!
//! Layout under a node root (host numbers as on Azure Gen1 VMs: OS disk on host 0, resource disk on
//! host 1, data disks on host 3):
//!
//! ```text
//! dev/sda, dev/sdb                        OS and resource disks (placeholders, never data disks)
//! dev/sd<x>                               block device node of an attached data disk
//! dev/disk/azure/{root,resource}          -> ../../sda, ../../sdb
//! dev/disk/azure/scsi1/lun<N>             -> ../../../sd<x>
//! sys/bus/scsi/devices/H:C:T:L/{vendor,model,block/<name>/dev}
//! sys/class/scsi_host/host<H>/scan        written by the driver to ask for a rescan
//! ```

use nix::sys::stat::{mknod, Mode, SFlag};
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

pub const DATA_DISK_HOST: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("losetup {args}: {stderr}")]
    Losetup { args: String, stderr: String },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> NodeError {
    let what = what.into();
    move |source| NodeError::Io { what, source }
}

/// Loop devices this process made, by (node, LUN).
#[derive(Default)]
pub struct NodeBackend {
    loops: Mutex<HashMap<(String, i64), PathBuf>>,
}

/// Vendor and model strings padded as the SCSI inquiry data shows them in sysfs.
const VENDOR: &str = "Msft    \n";
const MODEL: &str = "Virtual Disk    \n";

impl NodeBackend {
    /// Lays out the parts of a node root that exist whatever is attached.
    pub fn prepare(&self, root: &Path) -> Result<(), NodeError> {
        let azure = root.join("dev/disk/azure");
        std::fs::create_dir_all(azure.join("scsi1")).map_err(io(azure.display().to_string()))?;
        for (dev, hctl, link) in [("sda", "0:0:0:0", "root"), ("sdb", "1:0:1:0", "resource")] {
            let node = root.join("dev").join(dev);
            if !node.exists() {
                std::fs::write(&node, b"").map_err(io(node.display().to_string()))?;
            }
            relink(&azure.join(link), &format!("../../{dev}"))?;
            write_scsi_entry(root, hctl, dev, "8:0")?;
        }
        for host in 0..4 {
            let dir = root.join(format!("sys/class/scsi_host/host{host}"));
            std::fs::create_dir_all(&dir).map_err(io(dir.display().to_string()))?;
            let scan = dir.join("scan");
            if !scan.exists() {
                std::fs::write(&scan, b"").map_err(io(scan.display().to_string()))?;
            }
        }
        Ok(())
    }

    /// Makes `file` appear at `lun` on the node as block device `dev_name`.
    pub fn plug(
        &self,
        node: &str,
        root: &Path,
        lun: i64,
        dev_name: &str,
        file: &Path,
    ) -> Result<(), NodeError> {
        self.unplug(node, root, lun, dev_name)?;
        let loopdev = losetup(&["--find", "--show", &file.display().to_string()])?;
        let loopdev = PathBuf::from(loopdev.trim());
        self.loops
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((node.to_string(), lun), loopdev.clone());
        let rdev = std::fs::metadata(&loopdev)
            .map_err(io(loopdev.display().to_string()))?
            .rdev();
        let dev_node = root.join("dev").join(dev_name);
        let _ = std::fs::remove_file(&dev_node);
        mknod(
            &dev_node,
            SFlag::S_IFBLK,
            Mode::from_bits_truncate(0o660),
            rdev,
        )
        .map_err(|e| NodeError::Io {
            what: format!("mknod {}", dev_node.display()),
            source: e.into(),
        })?;
        let majmin = format!(
            "{}:{}",
            nix::sys::stat::major(rdev),
            nix::sys::stat::minor(rdev)
        );
        write_scsi_entry(
            root,
            &format!("{DATA_DISK_HOST}:0:0:{lun}"),
            dev_name,
            &majmin,
        )?;
        relink(
            &root.join(format!("dev/disk/azure/scsi1/lun{lun}")),
            &format!("../../../{dev_name}"),
        )
    }

    /// Removes what `plug` made; a LUN that is not plugged is fine.
    pub fn unplug(
        &self,
        node: &str,
        root: &Path,
        lun: i64,
        dev_name: &str,
    ) -> Result<(), NodeError> {
        let _ = std::fs::remove_file(root.join(format!("dev/disk/azure/scsi1/lun{lun}")));
        let entry = root.join(format!("sys/bus/scsi/devices/{DATA_DISK_HOST}:0:0:{lun}"));
        let _ = std::fs::remove_dir_all(&entry);
        let _ = std::fs::remove_file(root.join("dev").join(dev_name));
        let taken = self
            .loops
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(node.to_string(), lun));
        if let Some(dev) = taken {
            // A still-mounted device cannot be freed at once; losetup -d then marks it autoclear
            // and the kernel frees it at the last unmount.
            losetup(&["--detach", &dev.display().to_string()])?;
        }
        Ok(())
    }

    /// Tells every loop device over `file` that the file grew (the guest's view of a resize).
    /// Every one is tried: a device of a VM the disk just left (detached, freed by the kernel at
    /// its last unmount) may refuse, and must not keep the VM that has the disk now from seeing
    /// the new size. The errors are returned for the log; the resize itself is Azure's and stands.
    pub fn refresh_capacity(&self, file: &Path) -> Vec<NodeError> {
        let out = match losetup(&["--associated", &file.display().to_string()]) {
            Ok(out) => out,
            Err(e) => return vec![e],
        };
        out.lines()
            .filter_map(|line| line.split(':').next().filter(|d| !d.is_empty()))
            .filter_map(|dev| losetup(&["--set-capacity", dev]).err())
            .collect()
    }

    /// Detaches loop devices a previous, killed run left over `file`.
    pub fn release_stale(&self, file: &Path) -> Result<(), NodeError> {
        let out = losetup(&["--associated", &file.display().to_string()])?;
        for dev in out
            .lines()
            .filter_map(|l| l.split(':').next())
            .filter(|d| !d.is_empty())
        {
            losetup(&["--detach", dev])?;
        }
        Ok(())
    }

    /// Detaches every loop device this process made (at shutdown).
    pub fn release_all(&self) -> Vec<NodeError> {
        let loops: Vec<_> = self
            .loops
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .map(|(_, dev)| dev)
            .collect();
        loops
            .into_iter()
            .filter_map(|dev| losetup(&["--detach", &dev.display().to_string()]).err())
            .collect()
    }

    pub fn loop_count(&self) -> usize {
        self.loops.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

fn relink(link: &Path, target: &str) -> Result<(), NodeError> {
    let _ = std::fs::remove_file(link);
    std::os::unix::fs::symlink(target, link).map_err(io(format!("symlink {}", link.display())))
}

fn write_scsi_entry(root: &Path, hctl: &str, dev: &str, majmin: &str) -> Result<(), NodeError> {
    let dir = root.join("sys/bus/scsi/devices").join(hctl);
    let block = dir.join("block").join(dev);
    std::fs::create_dir_all(&block).map_err(io(block.display().to_string()))?;
    for (name, content) in [
        (dir.join("vendor"), VENDOR.to_string()),
        (dir.join("model"), MODEL.to_string()),
        (block.join("dev"), format!("{majmin}\n")),
    ] {
        std::fs::write(&name, content).map_err(io(name.display().to_string()))?;
    }
    Ok(())
}

fn losetup(args: &[&str]) -> Result<String, NodeError> {
    let out = Command::new("losetup")
        .args(args)
        .output()
        .map_err(io(format!("losetup {}", args.join(" "))))?;
    if !out.status.success() {
        return Err(NodeError::Losetup {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The lowest `sd<x>` name not yet used on a node (`sda`/`sdb` are the OS and resource disks).
pub fn next_device_name<'a>(used: impl Iterator<Item = &'a String>) -> String {
    let used: Vec<&String> = used.collect();
    let mut n = 2usize;
    loop {
        let name = sd_name(n);
        if !used.iter().any(|u| **u == name) {
            return name;
        }
        n += 1;
    }
}

/// `sd` names as the kernel assigns them: sda..sdz, sdaa..sdzz.
fn sd_name(n: usize) -> String {
    let letters = b"abcdefghijklmnopqrstuvwxyz";
    if n < 26 {
        format!("sd{}", letters[n] as char)
    } else {
        format!(
            "sd{}{}",
            letters[n / 26 - 1] as char,
            letters[n % 26] as char
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_skip_os_and_resource_disks_and_reuse_gaps() {
        let used = ["sdc".to_string(), "sde".to_string()];
        assert_eq!(next_device_name(used.iter()), "sdd");
        assert_eq!(next_device_name([].iter()), "sdc");
        assert_eq!(sd_name(26), "sdaa");
    }
}
