//! "May this device be formatted?" — decided from what the probe found, the fsType asked for and
//! whether the mount is read-only. Nothing here touches a device.

use crate::signatures::Found;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Mount the filesystem that is there (its own type).
    Mount(String),
    /// Blank and read-write: make the filesystem, then mount.
    Format(String),
    /// Leave the device untouched and fail with this message.
    Refuse(String),
}

/// ext2, ext3 and ext4 are one family: an ext4 request mounts an ext3 disk and vice versa.
fn family(fs: &str) -> &str {
    match fs {
        "ext2" | "ext3" | "ext4" => "ext4",
        other => other,
    }
}

/// `holders`: the VMs the disk is attached to (the disk's `managedBy`/`managedByExtended`), by
/// name. ext4, xfs and btrfs are single-host filesystems: two writers corrupt them, so a disk
/// held by more than one VM is neither formatted nor mounted read-write.
pub fn decide(found: Option<&Found>, fs_type: &str, read_only: bool, holders: &[String]) -> Plan {
    if !read_only && holders.len() > 1 {
        return Plan::Refuse(format!(
            "the disk is attached to {} VMs ({}) and a {fs_type} filesystem can have only one writer, so flexdisk \
             never mounts (or formats) it read-write while it is shared; mount it read-only (readOnly: true in the \
             pod's volume, a ReadOnlyMany claim) or detach it from the other VMs first",
            holders.len(),
            holders.join(", ")
        ));
    }
    match found {
        None if read_only => Plan::Refuse(format!(
            "the device is blank and the volume is mounted read-only, so there is nothing to mount; \
             flexdisk formats only for read-write mounts (mount it read-write once to create the {fs_type} filesystem)"
        )),
        None => Plan::Format(fs_type.to_string()),
        Some(Found::Filesystem(t)) if family(t) == family(fs_type) => Plan::Mount(t.clone()),
        Some(Found::Filesystem(t)) => Plan::Refuse(format!(
            "the device holds a {t} filesystem but the volume asks for {fs_type}; flexdisk never reformats a disk \
             with data — set the PV's fsType to {t} (or move the data off and wipe the disk yourself)"
        )),
        Some(f @ Found::PartitionTable(_)) => Plan::Refuse(format!(
            "the device carries {}; flexdisk mounts whole-disk filesystems only and never formats a partitioned disk",
            f.describe()
        )),
        Some(Found::Data) => Plan::Refuse(
            "the device holds data of an unknown kind (no filesystem flexdisk knows); it is left untouched".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vms(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("vm-{i}")).collect()
    }

    #[test]
    fn the_data_safety_rules() {
        let one = vms(1);
        assert_eq!(
            decide(None, "ext4", false, &one),
            Plan::Format("ext4".into())
        );
        assert!(
            matches!(decide(None, "ext4", true, &one), Plan::Refuse(m) if m.contains("read-only"))
        );
        assert_eq!(
            decide(Some(&Found::Filesystem("xfs".into())), "xfs", true, &one),
            Plan::Mount("xfs".into())
        );
        assert_eq!(
            decide(Some(&Found::Filesystem("ext3".into())), "ext4", false, &one),
            Plan::Mount("ext3".into())
        );
        assert!(
            matches!(decide(Some(&Found::Filesystem("xfs".into())), "ext4", false, &one), Plan::Refuse(m) if m.contains("holds a xfs filesystem"))
        );
        assert!(
            matches!(decide(Some(&Found::PartitionTable("gpt".into())), "ext4", false, &one), Plan::Refuse(m) if m.contains("gpt partition table"))
        );
        assert!(matches!(
            decide(Some(&Found::Data), "ext4", false, &one),
            Plan::Refuse(_)
        ));
    }

    #[test]
    fn one_writer_per_filesystem() {
        let two = vms(2);
        let ext4 = Found::Filesystem("ext4".into());
        // Shared: read-write refused whatever is on the disk, and a blank disk never formatted.
        assert!(
            matches!(decide(Some(&ext4), "ext4", false, &two), Plan::Refuse(m) if m.contains("attached to 2 VMs (vm-0, vm-1)") && m.contains("read-only"))
        );
        assert!(matches!(decide(None, "ext4", false, &two), Plan::Refuse(_)));
        assert!(matches!(decide(None, "ext4", true, &two), Plan::Refuse(_)));
        // Read-only stays possible.
        assert_eq!(
            decide(Some(&ext4), "ext4", true, &two),
            Plan::Mount("ext4".into())
        );
        // Attached to no VM as far as Azure says (read-only mounts do not ask): the usual rules.
        assert_eq!(decide(None, "xfs", false, &[]), Plan::Format("xfs".into()));
    }
}
