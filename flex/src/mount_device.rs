//! `mountdevice`: the one call that may format a disk, so the one that checks most before it
//! touches anything.
//!
//! 1. The device is the disk asked for: its LUN (from udev's links or sysfs) is looked up in the
//!    Instance Metadata Service's list of this VM's data disks (no ARM request). A stale link to
//!    another disk's device is refused before any read or write.
//! 2. One writer: a read-write mount asks Azure which VMs hold the disk (`managedBy`,
//!    `managedByExtended`); held by more than one, it is refused (`format::decide`).
//! 3. The device's lock (`mounts::lock_device`) is held from before the probe until the filesystem
//!    is made and mounted, and the probe reads through an exclusive open, so no other
//!    `mountdevice` probes a device while this one formats it (`mkfs.ext4` does not refuse an
//!    existing filesystem when stdin is not a terminal: the probe is the only guard).

use crate::attach::{connect_with, load_config};
use crate::device;
use crate::format::{decide, Plan};
use crate::mounts;
use crate::options::VolumeOptions;
use crate::settings::Settings;
use flexdisk_azure::error::vm_name_from_id;
use flexdisk_azure::imds;
use flexdisk_azure::naming::ResourceId;
use flexdisk_azure::Config;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long IMDS may lag behind an attach before a LUN it does not list is an error.
const IMDS_LAG: Duration = Duration::from_secs(10);

/// What a device found at a LUN is, against what the volume asks for (no I/O).
pub fn check_identity(
    device: &Path,
    lun: u32,
    listed: &[imds::InstanceDisk],
    wanted: &ResourceId,
) -> Result<(), String> {
    match listed.iter().find(|d| d.lun == lun as i32) {
        Some(d) if wanted.same_as(&d.disk_id) => Ok(()),
        Some(d) => Err(format!(
            "{} is the device of LUN {lun}, which holds disk {} according to the Instance Metadata Service, \
             not {} (the disk this volume asks for); a stale device link? flexdisk neither formats nor mounts it — \
             check /dev/disk/azure/scsi1 on the node",
            device.display(),
            if d.disk_id.is_empty() { &d.name } else { &d.disk_id },
            wanted
        )),
        None => Err(format!(
            "{} is the device of LUN {lun}, but the Instance Metadata Service lists no data disk at LUN {lun}; \
             flexdisk mounts only a device it can prove is disk {wanted}",
            device.display()
        )),
    }
}

async fn verify_device(
    s: &Settings,
    config: &Config,
    device: &Path,
    rdev: u64,
    wanted: &ResourceId,
) -> Result<(), String> {
    let lun = device::lun_of(s, rdev).ok_or_else(|| {
        format!(
            "cannot tell which LUN {} is (neither {} nor {} lead to it); flexdisk mounts only a device it can prove is disk {wanted}",
            device.display(),
            s.host("dev/disk/azure/scsi1").display(),
            s.host("sys/bus/scsi/devices").display()
        )
    })?;
    let deadline = Instant::now() + IMDS_LAG;
    loop {
        let listed = imds::data_disks(&config.imds_endpoint).await.map_err(|e| {
            format!(
                "cannot check that {} is disk {wanted}: {e}",
                device.display()
            )
        });
        let outcome = listed.and_then(|l| check_identity(device, lun, &l, wanted));
        match outcome {
            Ok(()) => return Ok(()),
            Err(m) if Instant::now() >= deadline => return Err(m),
            // IMDS follows the VM's model a moment after an operation ends.
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// The VMs that hold the disk, by name.
async fn holders(s: &Settings, config: &Config, disk: &ResourceId) -> Result<Vec<String>, String> {
    let arm = connect_with(s, config).await?;
    let info = arm
        .get_disk_by_id(disk)
        .await
        .map_err(|e| {
            format!("cannot tell whether another VM holds disk {}, so it is not mounted read-write: {e}", disk.name)
        })?
        .ok_or_else(|| format!("disk {disk} does not exist"))?;
    Ok(info
        .attached_to()
        .iter()
        .map(|id| vm_name_from_id(id))
        .collect())
}

pub fn mount_device(
    s: &Settings,
    dir: &Path,
    device: &Path,
    o: &VolumeOptions,
) -> Result<String, String> {
    let rdev = mounts::device_number(device)?;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    if let Some((mounted, fs)) = mounts::mounted_at(dir) {
        return if mounted == rdev {
            Ok(format!("already mounted ({fs})"))
        } else {
            Err(format!(
                "{} already has another filesystem mounted ({fs}); unmount it first",
                dir.display()
            ))
        };
    }
    let config = load_config(s)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start: {e}"))?;
    rt.block_on(verify_device(s, &config, device, rdev, &o.disk))?;
    let holders = if o.read_only {
        Vec::new()
    } else {
        rt.block_on(holders(s, &config, &o.disk))?
    };

    let _lock = mounts::lock_device(device, Duration::from_secs(60))?;
    let found = match mounts::open_exclusive(device)? {
        Some(mut exclusive) => mounts::inspect(&mut exclusive, device)?,
        // Mounted elsewhere on this host: that filesystem is there, whatever a probe would say.
        None => match mounts::mounted_fs_of(rdev) {
            Some(fs) => Some(crate::signatures::Found::Filesystem(fs)),
            None => {
                return Err(format!(
                    "{} is in use by another program (it is held exclusively); flexdisk leaves it alone — kubelet retries",
                    device.display()
                ))
            }
        },
    };
    // The exclusive open is closed here: mkfs and mount claim the device themselves. The lock
    // stays held until both are done.
    match decide(found.as_ref(), &o.fs_type, o.read_only, &holders) {
        Plan::Refuse(m) => Err(format!("{}: {m}", device.display())),
        Plan::Format(fs) => {
            mounts::mkfs(device, &fs)?;
            mounts::mount_device(device, dir, &fs, o.read_only, &o.mount_options)?;
            Ok(format!("formatted {fs} and mounted"))
        }
        Plan::Mount(fs) => {
            mounts::mount_device(device, dir, &fs, o.read_only, &o.mount_options)?;
            Ok(format!(
                "mounted existing {fs}{}",
                if o.read_only { " read-only" } else { "" }
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flexdisk_azure::naming::ResourceKind;

    #[test]
    fn the_device_must_be_the_disk_asked_for() {
        let wanted = ResourceId::new("s", "rg", ResourceKind::Disk, "pvc-1");
        let listed = vec![
            imds::InstanceDisk {
                lun: 0,
                disk_id:
                    "/subscriptions/s/resourcegroups/RG/providers/Microsoft.Compute/disks/PVC-1"
                        .into(),
                name: "pvc-1".into(),
            },
            imds::InstanceDisk {
                lun: 1,
                disk_id:
                    "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/disks/other"
                        .into(),
                name: "other".into(),
            },
        ];
        let dev = Path::new("/dev/sdc");
        assert_eq!(check_identity(dev, 0, &listed, &wanted), Ok(()));
        let e = check_identity(dev, 1, &listed, &wanted).expect_err("another disk");
        assert!(
            e.contains("disks/other") && e.contains("stale device link"),
            "{e}"
        );
        let e = check_identity(dev, 7, &listed, &wanted).expect_err("no disk there");
        assert!(e.contains("no data disk at LUN 7"), "{e}");
    }
}
