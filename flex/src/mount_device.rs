//! `mountdevice`: the one call that may format a disk, so the one that checks most before it
//! touches anything.
//!
//! 1. The device's lock (`mounts::lock_device`) is taken first and held until the filesystem is
//!    made and mounted, so that the checks below still hold when mkfs runs, and no other
//!    `mountdevice` probes a device while this one formats it (`mkfs.ext4` does not refuse an
//!    existing filesystem when stdin is not a terminal: the probe is the only guard).
//! 2. The device is the disk asked for: its LUN (from the kernel's SCSI address) is looked up in
//!    the Instance Metadata Service's list of this VM's data disks (no ARM request). A stale link
//!    to another disk's device is refused before any read or write.
//! 3. One writer: a read-write mount asks Azure which VMs hold the disk (`managedBy`,
//!    `managedByExtended`) and goes on only when this VM is the only one (`format::decide`,
//!    [`sole_holder`]).
//! 4. The probe reads through an exclusive open (the kernel refuses it while the device is
//!    mounted, or held by a mkfs), taken right after the lock and held through the checks and the
//!    probe. mkfs needs an exclusive open of its own — `mkfs.ext4` (even with `-F -F`),
//!    `mkfs.xfs` and `mkfs.btrfs` all fail with EBUSY while another is held — so ours is closed
//!    just before mkfs starts; the device's lock stays held through mkfs and the mount. The probe
//!    counts only with blkid's (`mounts::inspect`): without blkid nothing is formatted.

use crate::attach::{connect_with, load_config};
use crate::device;
use crate::error::{Error, Result};
use crate::format::{decide, Plan};
use crate::mounts;
use crate::options::VolumeOptions;
use crate::settings::Settings;
use flexdisk_azure::error::vm_name_from_id;
use flexdisk_azure::imds;
use flexdisk_azure::naming::ResourceId;
use flexdisk_azure::{AzureError, Config};
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
) -> Result<()> {
    match listed.iter().find(|d| d.lun == lun as i32) {
        Some(d) if wanted.same_as(&d.disk_id) => Ok(()),
        Some(d) => Err(Error::Device(format!(
            "{} is the device of LUN {lun}, which holds disk {} according to the Instance Metadata Service, \
             not {} (the disk this volume asks for); a stale device link? flexdisk neither formats nor mounts it — \
             check /dev/disk/azure/scsi1 on the node",
            device.display(),
            if d.disk_id.is_empty() { &d.name } else { &d.disk_id },
            wanted
        ))),
        None => Err(Error::Device(format!(
            "{} is the device of LUN {lun}, but the Instance Metadata Service lists no data disk at LUN {lun}; \
             flexdisk mounts only a device it can prove is disk {wanted}",
            device.display()
        ))),
    }
}

async fn verify_device(
    s: &Settings,
    config: &Config,
    device: &Path,
    rdev: u64,
    wanted: &ResourceId,
) -> Result<String> {
    let lun = device::lun_of(s, rdev).ok_or_else(|| {
        Error::Device(format!(
            "cannot tell which LUN {} is (neither {} nor {} lead to it); flexdisk mounts only a device it can prove is disk {wanted}",
            device.display(),
            s.host("dev/disk/azure/scsi1").display(),
            s.host("sys/bus/scsi/devices").display()
        ))
    })?;
    let deadline = Instant::now() + IMDS_LAG;
    loop {
        let listed = imds::instance(&config.imds_endpoint).await.map_err(|e| {
            Error::Device(format!(
                "cannot check that {} is disk {wanted}: {e}",
                device.display()
            ))
        });
        let outcome = listed.and_then(|view| {
            check_identity(device, lun, &view.data_disks, wanted).map(|()| view.resource_id)
        });
        match outcome {
            Ok(vm) => return Ok(vm),
            Err(m) if Instant::now() >= deadline => return Err(m),
            // IMDS follows the VM's model a moment after an operation ends.
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// A read-write mount needs this VM among the disk's holders: Azure may list a fresh attach a
/// moment late, and a list without this VM says nothing about who else writes (no I/O).
pub fn sole_holder(this_vm: &str, holders: &[String], disk: &str) -> Result<()> {
    if holders.iter().any(|h| h.eq_ignore_ascii_case(this_vm)) {
        return Ok(());
    }
    let listed = if holders.is_empty() {
        "it lists none".to_string()
    } else {
        let names: Vec<String> = holders.iter().map(|h| vm_name_from_id(h)).collect();
        format!("it lists {}", names.join(", "))
    };
    Err(Error::Refused(format!(
        "Azure does not list this VM ({}) among the VMs holding disk {disk} yet ({listed}); flexdisk mounts a disk \
         read-write only when it can see that this VM alone holds it — kubelet retries",
        vm_name_from_id(this_vm)
    )))
}

/// How long ago the device node was made (its inode's change time: devtmpfs and udev make it
/// when the disk appears).
fn device_age(device: &Path) -> Option<Duration> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(device).ok()?;
    let made = std::time::UNIX_EPOCH
        + Duration::new(meta.ctime().max(0) as u64, meta.ctime_nsec().max(0) as u32);
    std::time::SystemTime::now().duration_since(made).ok()
}

/// A device that appeared less than [`IMDS_LAG`] ago is mounted (read-only) only when Azure lists
/// this VM among the disk's holders: IMDS's confirmation may predate the attach (no I/O).
pub fn attached_here(this_vm: &str, holders: &[String], disk: &str) -> Result<()> {
    if holders.iter().any(|h| h.eq_ignore_ascii_case(this_vm)) {
        return Ok(());
    }
    Err(Error::Refused(format!(
        "disk {disk} is not attached to this VM ({}) as far as Azure says, though the Instance Metadata Service, which \
         follows a moment late, lists it at this device's LUN; flexdisk mounts only a device it can prove is the disk — \
         kubelet retries",
        vm_name_from_id(this_vm)
    )))
}

/// The VMs that hold the disk (resource IDs).
async fn holders(s: &Settings, config: &Config, disk: &ResourceId) -> Result<Vec<String>> {
    let arm = connect_with(s, config).await?;
    let info = arm
        .get_disk_by_id(disk)
        .await
        .map_err(|source| Error::AzureDuring {
            what: format!(
                "cannot tell which VMs hold disk {}, so it is not mounted",
                disk.name
            ),
            source,
        })?
        .ok_or_else(|| {
            Error::Azure(AzureError::NotFound {
                message: format!("disk {disk} does not exist"),
            })
        })?;
    Ok(info.attached_to())
}

pub fn mount_device(s: &Settings, dir: &Path, device: &Path, o: &VolumeOptions) -> Result<String> {
    let rdev = mounts::device_number(device)?;
    std::fs::create_dir_all(dir).map_err(Error::file(dir))?;
    if let Some((mounted, fs)) = mounts::mounted_at(dir) {
        return if mounted == rdev {
            Ok(format!("already mounted ({fs})"))
        } else {
            Err(Error::Refused(format!(
                "{} already has another filesystem mounted ({fs}); unmount it first",
                dir.display()
            )))
        };
    }
    let config = load_config(s)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    let _lock = mounts::lock_device(device, Duration::from_secs(60))?;
    // Another call may have mounted it while this one waited for the lock.
    if let Some((mounted, fs)) = mounts::mounted_at(dir) {
        if mounted == rdev {
            return Ok(format!("already mounted ({fs})"));
        }
    }
    // Claimed from here: no mount or mkfs elsewhere while the device is checked and probed.
    let exclusive = mounts::open_exclusive(device)?;
    let this_vm = rt.block_on(verify_device(s, &config, device, rdev, &o.disk))?;
    let young = device_age(device).is_none_or(|age| age < IMDS_LAG);
    let holders: Vec<String> = if o.read_only && !young {
        Vec::new()
    } else if o.read_only {
        // IMDS follows the VM's model some seconds late: for a device that appeared since, its
        // answer may be from before the attach — the LUN's previous disk. Azure itself says
        // whether the disk is attached here.
        let ids = rt.block_on(holders(s, &config, &o.disk))?;
        attached_here(&this_vm, &ids, &o.disk.name)?;
        Vec::new()
    } else {
        let ids = rt.block_on(holders(s, &config, &o.disk))?;
        if ids.len() <= 1 {
            sole_holder(&this_vm, &ids, &o.disk.name)?;
        }
        ids.iter().map(|h| vm_name_from_id(h)).collect()
    };
    let found = match exclusive {
        Some(mut exclusive) => mounts::inspect(&mut exclusive, device)?,
        // Mounted elsewhere on this host: that filesystem is there, whatever a probe would say.
        None => match mounts::mounted_fs_of(rdev) {
            Some(fs) => Some(crate::signatures::Found::Filesystem(fs)),
            None => {
                return Err(Error::Refused(format!(
                    "{} is in use by another program (it is held exclusively); flexdisk leaves it alone — kubelet retries",
                    device.display()
                )))
            }
        },
    };
    // The exclusive open is closed here (`found` took it): mkfs and mount claim the device
    // themselves. The lock stays held until both are done.
    match decide(found.as_ref(), &o.fs_type, o.read_only, &holders) {
        Plan::Refuse(m) => Err(Error::Refused(format!("{}: {m}", device.display()))),
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
    fn read_write_needs_this_vm_as_the_holder() {
        let me =
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/node-a";
        let other =
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/node-b";
        assert!(sole_holder(me, &[me.to_uppercase()], "d").is_ok());
        let e = sole_holder(me, &[other.to_string()], "d")
            .expect_err("another VM")
            .to_string();
        assert!(e.contains("node-a") && e.contains("it lists node-b"), "{e}");
        assert!(sole_holder(me, &[], "d")
            .expect_err("none")
            .to_string()
            .contains("lists none"));
    }

    #[test]
    fn a_young_device_needs_azure_to_say_the_disk_is_here() {
        let me =
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/node-a";
        let other =
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/node-b";
        assert!(attached_here(me, &[other.into(), me.to_uppercase()], "d").is_ok());
        let e = attached_here(me, &[other.into()], "d")
            .expect_err("elsewhere")
            .to_string();
        assert!(e.contains("not attached to this VM (node-a)"), "{e}");
        assert!(attached_here(me, &[], "d").is_err());
        // A device node made just now is young.
        let tmp = tempfile::tempdir().expect("tmp");
        let f = tmp.path().join("sdx");
        std::fs::write(&f, b"").expect("file");
        assert!(device_age(&f).expect("age") < IMDS_LAG);
    }

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
        assert!(check_identity(dev, 0, &listed, &wanted).is_ok());
        let e = check_identity(dev, 1, &listed, &wanted)
            .expect_err("another disk")
            .to_string();
        assert!(
            e.contains("disks/other") && e.contains("stale device link"),
            "{e}"
        );
        let e = check_identity(dev, 7, &listed, &wanted)
            .expect_err("no disk there")
            .to_string();
        assert!(e.contains("no data disk at LUN 7"), "{e}");
    }
}
