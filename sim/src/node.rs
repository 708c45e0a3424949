//! The node backend: what a guest sees when Azure attaches a disk. Each attached LUN becomes a loop
//! device over a port of the storage bus (`bus`: the disk's sparse file served through FUSE, cut
//! when the disk is detached), with the device node, udev's `/dev/disk/azure/scsi1/lun<N>` link
//! and a sysfs-like SCSI entry under the node's host root, whose `rescan` attribute makes the
//! device take the disk's new size after Azure grew it.
//!
//! Without FUSE (no `/dev/fuse`, or mounting refused) the loop device is made over the sparse
//! file itself: a world gentler than Azure — a disk detached while mounted keeps working and a
//! grown disk shows its size without a rescan — which the simulator says loudly at start and in
//! its ready line (`nodeBackend`).
//!
//! Layout under a node root, as a Generation 2 VM shows it: the OS disk (LUN 0) and the resource
//! disk (LUN 1) on the VMBus SCSI controller `{f8b3781a-…}`, probed first (host 0); data disks on
//! the controller `{f8b3781b-…}` (host 1) — the `device_id`s Azure's udev rules match
//! (WALinuxAgent `config/66-azure-storage.rules`: `scsi0` and `scsi1`). SCSI devices live under
//! their controller's VMBus device in `sys/devices`, and `sys/bus/scsi/devices` links to them, as
//! the kernel lays them out; the links are absolute so that the tree may be bind-mounted over a
//! real `/sys/bus/scsi/devices` and still lead here.
//!
//! ```text
//! dev/sda, dev/sdb                        OS and resource disks (placeholders, never data disks)
//! dev/sd<x>                               block device node of an attached data disk
//! dev/disk/azure/{root,resource}          -> ../../sda, ../../sdb
//! dev/disk/azure/scsi1/lun<N>             -> ../../../sd<x>
//! sys/devices/…/VMBUS:00/<id>/device_id   "{<id>}"
//! sys/devices/…/VMBUS:00/<id>/host<H>/target<H>:0:0/H:0:0:L/{vendor,model,block/<name>/dev}
//! sys/devices/…/H:0:0:L/rescan            -> the port's control file on the bus
//! sys/bus/scsi/devices/H:0:0:L            -> the SCSI device above
//! sys/class/scsi_host/host<H>/scan        written by the driver to ask for a rescan
//! ```

use crate::bus::{Bus, BusError};
use crate::loopdev::{self, LoopError};
use nix::sys::stat::{mknod, Mode, SFlag};
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The SCSI host of data disks on the simulated (Generation 2) VMs.
pub const DATA_DISK_HOST: u32 = 1;

/// The VMBus devices of the SCSI controllers: OS and resource disks, data disks.
const OS_CONTROLLER: &str = "f8b3781a-1e82-4818-a1c3-63d806ec15bb";
const DATA_CONTROLLER: &str = "f8b3781b-1e82-4818-a1c3-63d806ec15bb";
const VMBUS: &str = "sys/devices/LNXSYSTM:00/LNXSYBUS:00/ACPI0004:00/VMBUS:00";

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Loop(#[from] LoopError),
    #[error(transparent)]
    Bus(#[from] BusError),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> NodeError {
    let what = what.into();
    move |source| NodeError::Io { what, source }
}

/// How disks reach the nodes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum BackendKind {
    /// Through the FUSE bus: detaching cuts the path, growth waits for a rescan.
    Fuse,
    /// Loop devices over the sparse files themselves, because FUSE could not be used (`why`).
    LoopOverFile { why: String, gentler: String },
}

/// What the fallback does not do that Azure does.
const GENTLER: &str = "a disk detached while mounted keeps working on the node, and a grown disk \
                       shows its new size without the guest's rescan";

/// A plugged LUN: its loop device, and its port on the bus (none without FUSE).
struct Plugged {
    loop_device: PathBuf,
    port: Option<u64>,
}

/// Loop devices this process made, by (node, LUN).
pub struct NodeBackend {
    bus: Option<Bus>,
    kind: BackendKind,
    loops: Mutex<HashMap<(String, i64), Plugged>>,
}

/// Vendor and model strings padded as the SCSI inquiry data shows them in sysfs.
const VENDOR: &str = "Msft    \n";
const MODEL: &str = "Virtual Disk    \n";

impl NodeBackend {
    /// The FUSE bus mounted at `bus_dir`; without FUSE, the gentler loop-over-file backend, said
    /// loudly.
    pub fn open(bus_dir: &Path) -> NodeBackend {
        match Bus::mount(bus_dir) {
            Ok(bus) => NodeBackend {
                bus: Some(bus),
                kind: BackendKind::Fuse,
                loops: Mutex::default(),
            },
            Err(e) => {
                tracing::error!(
                    "THE STORAGE BUS IS NOT AVAILABLE ({e}): the node backend falls back to loop \
                     devices over the disk files, a world gentler than Azure: {GENTLER}. Tests of \
                     those failures will fail; where FUSE is the cause, load the fuse module \
                     (modprobe fuse) and give this process /dev/fuse."
                );
                NodeBackend::without_fuse(e.to_string())
            }
        }
    }

    /// The loop-over-file backend (also what `open` falls back to).
    pub fn without_fuse(why: String) -> NodeBackend {
        NodeBackend {
            bus: None,
            kind: BackendKind::LoopOverFile {
                why,
                gentler: GENTLER.into(),
            },
            loops: Mutex::default(),
        }
    }

    pub fn kind(&self) -> &BackendKind {
        &self.kind
    }

    /// Lays out the parts of a node root that exist whatever is attached.
    pub fn prepare(&self, root: &Path) -> Result<(), NodeError> {
        let azure = root.join("dev/disk/azure");
        std::fs::create_dir_all(azure.join("scsi1")).map_err(io(azure.display().to_string()))?;
        // The SCSI tree is rebuilt from what is attached (`plug` follows for each data disk).
        for dir in ["sys/bus/scsi/devices", "sys/devices"] {
            let _ = std::fs::remove_dir_all(root.join(dir));
        }
        for (id, host) in [(OS_CONTROLLER, 0), (DATA_CONTROLLER, DATA_DISK_HOST)] {
            let dev = root.join(VMBUS).join(id);
            std::fs::create_dir_all(dev.join(format!("host{host}")))
                .map_err(io(dev.display().to_string()))?;
            std::fs::write(dev.join("device_id"), format!("{{{id}}}\n"))
                .map_err(io(dev.display().to_string()))?;
            std::fs::write(
                dev.join("class_id"),
                "{ba6163d9-04a1-4d29-b605-72e2ffb1dc7f}\n",
            )
            .map_err(io(dev.display().to_string()))?;
        }
        for (dev, lun, link, majmin) in [("sda", 0, "root", "8:0"), ("sdb", 1, "resource", "8:16")]
        {
            let node = root.join("dev").join(dev);
            if !node.exists() {
                std::fs::write(&node, b"").map_err(io(node.display().to_string()))?;
            }
            relink(&azure.join(link), &format!("../../{dev}"))?;
            write_scsi_entry(root, OS_CONTROLLER, 0, lun, dev, majmin, None)?;
        }
        for host in 0..2 {
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
        let port = match &self.bus {
            Some(bus) => Some(bus.connect(node, lun, file)?),
            None => None,
        };
        let made = loopdev::attach(port.as_ref().map_or(file, |p| p.data.as_path()));
        let loop_device = match (made, &self.bus, &port) {
            (Ok(dev), Some(bus), Some(p)) => {
                bus.bind_loop(p.serial, &dev);
                dev
            }
            (Ok(dev), _, _) => dev,
            (Err(e), bus, port) => {
                if let (Some(bus), Some(p)) = (bus, port) {
                    bus.cut(p.serial);
                }
                return Err(e.into());
            }
        };
        self.loops.lock().unwrap_or_else(|e| e.into_inner()).insert(
            (node.to_string(), lun),
            Plugged {
                loop_device: loop_device.clone(),
                port: port.as_ref().map(|p| p.serial),
            },
        );
        // Azure undoes an attach whose plugging failed: nothing of it may stay reachable (a port
        // and loop device left would reach a disk Azure says is not attached here).
        self.show_on_node(
            root,
            lun,
            dev_name,
            &loop_device,
            port.as_ref().map(|p| p.rescan.as_path()),
        )
        .inspect_err(|_| {
            let _ = self.unplug(node, root, lun, dev_name);
        })
    }

    /// The guest's view of a plugged LUN: its block device node, SCSI entry and udev link.
    fn show_on_node(
        &self,
        root: &Path,
        lun: i64,
        dev_name: &str,
        loop_device: &Path,
        rescan: Option<&Path>,
    ) -> Result<(), NodeError> {
        let rdev = std::fs::metadata(loop_device)
            .map_err(io(loop_device.display().to_string()))?
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
            DATA_CONTROLLER,
            DATA_DISK_HOST,
            lun,
            dev_name,
            &majmin,
            rescan,
        )?;
        relink(
            &root.join(format!("dev/disk/azure/scsi1/lun{lun}")),
            &format!("../../../{dev_name}"),
        )
    }

    /// Removes what `plug` made, as Azure's detach does to a guest: the disk's path is cut first,
    /// so a filesystem still mounted on it gets I/O errors from then on. A LUN that is not
    /// plugged is fine.
    pub fn unplug(
        &self,
        node: &str,
        root: &Path,
        lun: i64,
        dev_name: &str,
    ) -> Result<(), NodeError> {
        let taken = self
            .loops
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(node.to_string(), lun));
        if let (Some(bus), Some(serial)) = (&self.bus, taken.as_ref().and_then(|p| p.port)) {
            bus.cut(serial);
        }
        let _ = std::fs::remove_file(root.join(format!("dev/disk/azure/scsi1/lun{lun}")));
        let hctl = format!("{DATA_DISK_HOST}:0:0:{lun}");
        let _ = std::fs::remove_file(root.join("sys/bus/scsi/devices").join(&hctl));
        let _ =
            std::fs::remove_dir_all(scsi_device_dir(root, DATA_CONTROLLER, DATA_DISK_HOST, lun));
        let _ = std::fs::remove_file(root.join("dev").join(dev_name));
        if let Some(p) = taken {
            // A still-mounted device cannot be freed at once; losetup -d then marks it autoclear
            // and the kernel frees it at the last unmount.
            loopdev::detach(&p.loop_device)?;
        }
        Ok(())
    }

    /// What the nodes see when Azure has grown the disk of `file`. Through the bus: nothing yet,
    /// each VM's device keeps its size until the guest rescans it. Without FUSE every loop device
    /// over the file takes the new size at once; every one is tried (a device of a VM the disk
    /// just left may refuse) and the errors are returned for the log.
    pub fn disk_grown(&self, file: &Path) -> Vec<NodeError> {
        if self.bus.is_some() {
            return Vec::new();
        }
        match loopdev::over_file(file) {
            Ok(devs) => devs
                .iter()
                .filter_map(|d| loopdev::set_capacity(d).err().map(NodeError::from))
                .collect(),
            Err(e) => vec![e.into()],
        }
    }

    /// Detaches loop devices a previous, killed run left over `file` (the bus clears its own when
    /// mounted).
    pub fn release_stale(&self, file: &Path) -> Result<(), NodeError> {
        for dev in loopdev::over_file(file)? {
            loopdev::detach(&dev)?;
        }
        Ok(())
    }

    /// At shutdown: every port is cut, every loop device this process made detached, the bus
    /// unmounted. The simulated VMs stop with the simulator: a filesystem left mounted on one
    /// gets I/O errors.
    pub fn release_all(&self) -> Vec<NodeError> {
        let plugged: Vec<Plugged> = self
            .loops
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .map(|(_, p)| p)
            .collect();
        let errors = plugged
            .into_iter()
            .filter_map(|p| {
                if let (Some(bus), Some(serial)) = (&self.bus, p.port) {
                    bus.cut(serial);
                }
                loopdev::detach(&p.loop_device).err().map(NodeError::from)
            })
            .collect();
        if let Some(bus) = &self.bus {
            bus.shutdown();
        }
        errors
    }

    pub fn loop_count(&self) -> usize {
        self.loops.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

fn relink(link: &Path, target: &str) -> Result<(), NodeError> {
    let _ = std::fs::remove_file(link);
    std::os::unix::fs::symlink(target, link).map_err(io(format!("symlink {}", link.display())))
}

/// Where the kernel puts SCSI device `H:0:0:L` of a VMBus controller.
fn scsi_device_dir(root: &Path, controller: &str, host: u32, lun: i64) -> PathBuf {
    root.join(VMBUS)
        .join(controller)
        .join(format!("host{host}/target{host}:0:0/{host}:0:0:{lun}"))
}

/// A SCSI device's sysfs entry; its `rescan` attribute leads to `rescan` (the port's control
/// file on the bus), else is a plain file whose writes change nothing.
fn write_scsi_entry(
    root: &Path,
    controller: &str,
    host: u32,
    lun: i64,
    dev: &str,
    majmin: &str,
    rescan: Option<&Path>,
) -> Result<(), NodeError> {
    let dir = scsi_device_dir(root, controller, host, lun);
    let block = dir.join("block").join(dev);
    std::fs::create_dir_all(&block).map_err(io(block.display().to_string()))?;
    for (name, content) in [
        (dir.join("vendor"), VENDOR.to_string()),
        (dir.join("model"), MODEL.to_string()),
        (block.join("dev"), format!("{majmin}\n")),
    ] {
        std::fs::write(&name, content).map_err(io(name.display().to_string()))?;
    }
    match rescan {
        Some(target) => relink(&dir.join("rescan"), &target.to_string_lossy())?,
        None => std::fs::write(dir.join("rescan"), b"").map_err(io(dir.display().to_string()))?,
    }
    let bus = root.join("sys/bus/scsi/devices");
    std::fs::create_dir_all(&bus).map_err(io(bus.display().to_string()))?;
    let link = bus.join(format!("{host}:0:0:{lun}"));
    let target = std::fs::canonicalize(&dir).map_err(io(dir.display().to_string()))?;
    relink(&link, &target.to_string_lossy())
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
