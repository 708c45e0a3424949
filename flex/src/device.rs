//! Finding the block device of a LUN on this node: `/dev/disk/azure/scsi1/lun<N>` when udev made
//! it, else the SCSI devices in sysfs (vendor `Msft`, model `Virtual Disk`) on the data-disk
//! controller, after asking the SCSI hosts to rescan. Waiting is driven by inotify, bounded.
//!
//! Which SCSI host carries data disks is found as udev finds it, never assumed from host numbers
//! (they follow probe order: on Generation 2 VMs the OS and resource disks share host 0 and data
//! disks sit on host 1). Azure's storage rules — WALinuxAgent's `config/66-azure-storage.rules`,
//! azure-vm-utils' `udev/80-azure-disk.rules` — name the links `scsi1/lun<N>` for devices whose
//! VMBus parent has `device_id` `{f8b3781b-1e82-4818-a1c3-63d806ec15bb}` (`ATTRS{device_id}`:
//! the attribute of any parent device). [`DATA_CONTROLLER`] is matched the same way here, by
//! walking up the SCSI device's sysfs path.

use crate::error::{Error, Result};
use crate::settings::Settings;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Asks every SCSI host to scan for new devices (as Azure's agent does after an attach).
pub fn rescan(s: &Settings) {
    if let Ok(hosts) = std::fs::read_dir(s.host("sys/class/scsi_host")) {
        for h in hosts.flatten() {
            let _ = std::fs::write(h.path().join("scan"), "- - -");
        }
    }
}

/// Asks the SCSI device behind block device `device` to read its capacity again, as a guest must
/// after Azure grew the disk online (Microsoft Learn, "Expand virtual hard disks on a Linux VM":
/// `echo 1 > …/device/rescan`). Linux also rescans by itself, but only once an I/O meets
/// Hyper-V's "capacity data has changed" unit attention (`storvsc_device_scan`,
/// drivers/scsi/storvsc_drv.c): on an idle volume that may be never. The kernel's handler
/// (`store_rescan_field`, drivers/scsi/scsi_sysfs.c) re-reads the capacity before the write
/// returns. The device is found in this node's sysfs (`FLEXDISK_HOST_ROOT`) by its device
/// number, never by its name: the number is what the node's own kernel gave it, while a name
/// may mean another disk in another mount namespace's view. Answers the SCSI device's entry.
pub fn rescan_capacity(s: &Settings, device: &Path) -> Result<PathBuf> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let meta = std::fs::metadata(device)
        .map_err(|e| Error::Device(format!("{}: {e}", device.display())))?;
    if !meta.file_type().is_block_device() {
        return Err(Error::Device(format!(
            "{} is not a block device",
            device.display()
        )));
    }
    let entry = scsi_entry_of(s, meta.rdev()).ok_or_else(|| {
        Error::Device(format!(
            "no SCSI device in {} has block device {} ({}:{})",
            s.host("sys/bus/scsi/devices").display(),
            device.display(),
            nix::sys::stat::major(meta.rdev()),
            nix::sys::stat::minor(meta.rdev())
        ))
    })?;
    let attr = entry.join("rescan");
    std::fs::write(&attr, "1")
        .map_err(|e| Error::Kernel(format!("rescan {}: {e}", attr.display())))?;
    Ok(entry)
}

/// The SCSI device (`sys/bus/scsi/devices/H:C:T:L`) whose block device has number `rdev`.
fn scsi_entry_of(s: &Settings, rdev: u64) -> Option<PathBuf> {
    let majmin = format!(
        "{}:{}",
        nix::sys::stat::major(rdev),
        nix::sys::stat::minor(rdev)
    );
    std::fs::read_dir(s.host("sys/bus/scsi/devices"))
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|entry| block_of(entry).is_some_and(|b| read_trimmed(&b.join("dev")) == majmin))
}

fn udev_link(s: &Settings, lun: u32) -> Option<PathBuf> {
    std::fs::canonicalize(s.host(&format!("dev/disk/azure/scsi1/lun{lun}"))).ok()
}

fn read_trimmed(p: &Path) -> String {
    std::fs::read_to_string(p)
        .map(|v| v.trim().to_string())
        .unwrap_or_default()
}

/// The VMBus `device_id` of the SCSI controller that carries data disks (the `scsi1` of
/// `/dev/disk/azure/scsi1`).
pub const DATA_CONTROLLER: &str = "{f8b3781b-1e82-4818-a1c3-63d806ec15bb}";

/// Whether the SCSI device at `entry` (`sys/bus/scsi/devices/H:C:T:L`, a link into
/// `sys/devices`) hangs off the data-disk controller: the first `device_id` found walking up
/// its real path must be [`DATA_CONTROLLER`].
fn on_data_controller(entry: &Path) -> bool {
    let Ok(real) = std::fs::canonicalize(entry) else {
        return false;
    };
    real.ancestors()
        .skip(1)
        .find_map(|dir| std::fs::read_to_string(dir.join("device_id")).ok())
        .is_some_and(|id| id.trim().eq_ignore_ascii_case(DATA_CONTROLLER))
}

/// The data disks the kernel shows: (LUN, SCSI device entry) for each `Msft Virtual Disk` on the
/// data-disk controller.
fn data_disks(s: &Settings) -> Vec<(u32, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(s.host("sys/bus/scsi/devices")) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let parts: Vec<&str> = name.split(':').collect();
            let lun = match parts.as_slice() {
                [_, _, _, l] => l.parse::<u32>().ok()?,
                _ => return None,
            };
            let path = e.path();
            (read_trimmed(&path.join("vendor")) == "Msft"
                && read_trimmed(&path.join("model")) == "Virtual Disk"
                && on_data_controller(&path))
            .then_some((lun, path))
        })
        .collect()
}

/// The block device's name under a SCSI device entry (`block/<name>`).
fn block_of(entry: &Path) -> Option<PathBuf> {
    Some(
        std::fs::read_dir(entry.join("block"))
            .ok()?
            .flatten()
            .next()?
            .path(),
    )
}

/// The sysfs way: the data-disk controller's device at LUN `lun`.
fn sysfs_device(s: &Settings, lun: u32) -> Option<PathBuf> {
    data_disks(s)
        .into_iter()
        .filter(|(l, _)| *l == lun)
        .find_map(|(_, entry)| {
            let block = block_of(&entry)?;
            let dev = s.host(&format!("dev/{}", block.file_name()?.to_string_lossy()));
            dev.exists().then_some(dev)
        })
}

/// The LUN of the data disk whose block device has number `rdev`: from the SCSI address the
/// kernel gives the device in sysfs (`H:C:T:L`), else from udev's links when exactly one leads to
/// it. The links are what a stale udev state gets wrong, so they are never preferred to the
/// kernel, and two links to one device tell nothing.
pub fn lun_of(s: &Settings, rdev: u64) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let majmin = format!(
        "{}:{}",
        nix::sys::stat::major(rdev),
        nix::sys::stat::minor(rdev)
    );
    let by_kernel = data_disks(s).into_iter().find_map(|(lun, entry)| {
        (read_trimmed(&block_of(&entry)?.join("dev")) == majmin).then_some(lun)
    });
    by_kernel.or_else(|| {
        let links: Vec<u32> = std::fs::read_dir(s.host("dev/disk/azure/scsi1"))
            .ok()?
            .flatten()
            .filter_map(|e| {
                let lun = e.file_name().to_str()?.strip_prefix("lun")?.parse().ok()?;
                (std::fs::metadata(e.path()).ok()?.rdev() == rdev).then_some(lun)
            })
            .collect();
        match links.as_slice() {
            [lun] => Some(*lun),
            _ => None,
        }
    })
}

pub fn find(s: &Settings, lun: u32) -> Option<PathBuf> {
    udev_link(s, lun)
        .filter(|p| p.exists())
        .or_else(|| sysfs_device(s, lun))
}

/// Waits for the LUN's device; `Err` with what was tried when it does not come in time.
pub fn wait_for(s: &Settings, lun: u32) -> Result<PathBuf> {
    rescan(s);
    let deadline = Instant::now() + s.device_wait;
    let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
        .map_err(|e| Error::Kernel(format!("inotify: {e}")))?;
    let flags = AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO | AddWatchFlags::IN_ATTRIB;
    // udev may create `scsi1/` (even `azure/`) with the first disk: a directory that appears is
    // watched from then on, so the link made inside it wakes us too.
    const DIRS: [&str; 4] = [
        "dev/disk/azure/scsi1",
        "dev/disk/azure",
        "dev",
        "sys/bus/scsi/devices",
    ];
    let mut unwatched: Vec<&str> = DIRS.to_vec();
    let watch_new = |unwatched: &mut Vec<&str>| {
        unwatched.retain(|dir| inotify.add_watch(&s.host(dir), flags).is_err());
    };
    watch_new(&mut unwatched);
    loop {
        if let Some(dev) = find(s, lun) {
            return Ok(dev);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::Device(format!(
                "no device appeared for LUN {lun} within {}s (looked at {} and {})",
                s.device_wait.as_secs(),
                s.host(&format!("dev/disk/azure/scsi1/lun{lun}")).display(),
                s.host("sys/bus/scsi/devices").display()
            )));
        }
        // Wake on a change in the watched trees, or every second at most (nothing is lost
        // between the look above and the poll: events queue in the inotify descriptor).
        let nothing_watched = unwatched.len() == DIRS.len();
        let ms = left
            .as_millis()
            .min(if nothing_watched { 100 } else { 1000 }) as u16;
        let mut fds = [PollFd::new(inotify.as_fd(), PollFlags::POLLIN)];
        let _ = poll(&mut fds, PollTimeout::from(ms));
        let _ = inotify.read_events();
        watch_new(&mut unwatched);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An empty node root (with its `dev`) and settings whose host root it is.
    fn node_root() -> (tempfile::TempDir, Settings) {
        let tmp = tempfile::tempdir().expect("tmp");
        std::fs::create_dir_all(tmp.path().join("dev")).expect("dev");
        let mut s = Settings::from_lookup(&|_| None);
        s.host_root = tmp.path().to_path_buf();
        (tmp, s)
    }

    /// A SCSI disk `H:0:0:L` under VMBus controller `id`, its block device `name` (`majmin`).
    fn scsi(root: &Path, id: &str, host: u32, lun: u32, name: &str, majmin: &str) {
        let vmbus = root.join("sys/devices/VMBUS:00").join(id);
        std::fs::create_dir_all(&vmbus).expect("vmbus");
        std::fs::write(vmbus.join("device_id"), format!("{{{id}}}\n")).expect("id");
        let dir = vmbus.join(format!("host{host}/target{host}:0:0/{host}:0:0:{lun}"));
        std::fs::create_dir_all(dir.join("block").join(name)).expect("dirs");
        std::fs::write(dir.join("vendor"), "Msft    \n").expect("vendor");
        std::fs::write(dir.join("model"), "Virtual Disk    \n").expect("model");
        std::fs::write(
            dir.join("block").join(name).join("dev"),
            format!("{majmin}\n"),
        )
        .expect("dev");
        let bus = root.join("sys/bus/scsi/devices");
        std::fs::create_dir_all(&bus).expect("bus");
        std::os::unix::fs::symlink(&dir, bus.join(format!("{host}:0:0:{lun}"))).expect("link");
        std::fs::write(root.join("dev").join(name), b"").expect("node");
    }

    #[test]
    fn data_disks_are_those_of_the_data_controller_whatever_its_host_number() {
        let (tmp, s) = node_root();
        let root = tmp.path();
        // Gen1 numbering with the data controller probed late (host 5), and Gen2's OS
        // controller at host 2 holding the OS disk at LUN 0: never taken for a data disk.
        scsi(
            root,
            "00000000-0000-8899-0000-000000000000",
            0,
            0,
            "sda",
            "8:0",
        );
        scsi(
            root,
            "f8b3781a-1e82-4818-a1c3-63d806ec15bb",
            2,
            0,
            "sdb",
            "8:16",
        );
        assert_eq!(find(&s, 0), None, "the OS disks are no data disks");
        assert_eq!(lun_of(&s, nix::sys::stat::makedev(8, 16)), None);
        scsi(
            root,
            "f8b3781b-1e82-4818-a1c3-63d806ec15bb",
            5,
            0,
            "sdc",
            "8:32",
        );
        assert_eq!(find(&s, 0), Some(root.join("dev/sdc")));
        assert_eq!(lun_of(&s, nix::sys::stat::makedev(8, 32)), Some(0));
        // Data disks on host 1 (Generation 2 VMs) too.
        scsi(
            root,
            "f8b3781b-1e82-4818-a1c3-63d806ec15bb",
            1,
            3,
            "sdd",
            "8:48",
        );
        assert_eq!(find(&s, 3), Some(root.join("dev/sdd")));
    }

    /// A block device node for loop device `minor` (major 7) at `path`.
    fn block_node(path: &Path, minor: u64) -> PathBuf {
        nix::sys::stat::mknod(
            path,
            nix::sys::stat::SFlag::S_IFBLK,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
            nix::sys::stat::makedev(7, minor),
        )
        .expect("mknod");
        path.to_path_buf()
    }

    #[test]
    fn a_rescan_goes_to_the_scsi_device_with_the_block_devices_number() {
        let (tmp, s) = node_root();
        let root = tmp.path();
        let data = "f8b3781b-1e82-4818-a1c3-63d806ec15bb";
        scsi(root, data, 1, 0, "sdc", "7:40");
        scsi(root, data, 1, 1, "sdd", "7:41");
        // The node's device node has the number of LUN 1's device, whatever its name.
        let node = block_node(&root.join("dev/pvc-volume"), 41);
        let entry = rescan_capacity(&s, &node).expect("rescanned");
        assert!(entry.ends_with("1:0:0:1"), "{}", entry.display());
        assert_eq!(
            std::fs::read_to_string(entry.join("rescan")).expect("written"),
            "1"
        );
        assert!(!entry.with_file_name("1:0:0:0").join("rescan").exists());

        // A device the node's sysfs does not show: nothing written, and the message says where
        // it looked.
        let stranger = block_node(&root.join("dev/stranger"), 99);
        let e = rescan_capacity(&s, &stranger).expect_err("not ours");
        assert!(
            e.to_string()
                .contains(&format!("{}", root.join("sys/bus/scsi/devices").display())),
            "{e}"
        );
        // Not a block device at all.
        assert!(rescan_capacity(&s, &root.join("dev/sdc")).is_err());
    }
}
