//! A VM's data disks as this host last read them, shared by the driver processes of the host for
//! a short time (`FLEXDISK_VM_VIEW_SECS`, 15 s).
//!
//! kube-controller-manager checks every attached volume once per reconciler sync (`syncStates` →
//! `VolumesAreAttached`, one `isattached` process per volume, one after another — kubernetes
//! `pkg/volume/flexvolume/attacher.go`, `pkg/controller/volume/attachdetach/reconciler`). Reading
//! the VM in each would cost one ARM read per volume per minute; answered from one view, a round
//! costs one read per VM. Only `isattached` answers from the view, and only "attached": a wrong
//! "attached" only delays the controller's noticing, while a wrong "not attached" — the view
//! predating another control-plane host's attach — makes kube-controller-manager forget an
//! attachment, so "not attached" always comes from a read made for the call. Attach and detach
//! read the VM fresh (a detach before it posts its request, a batch's holder once for all);
//! every fresh read (and every batch's result) refreshes the view.

use crate::settings::Settings;
use flexdisk_azure::{VmDisks, VmRef};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct View {
    /// Milliseconds since the epoch when Azure answered.
    pub read_at_ms: u64,
    /// (disk resource ID, LUN, being detached).
    pub disks: Vec<(String, i32, bool)>,
}

impl View {
    /// The view of a VM read that started at `read_at_ms`.
    pub fn of(vm: &VmDisks, read_at_ms: u64) -> View {
        View {
            read_at_ms,
            disks: vm
                .disks
                .iter()
                .map(|d| (d.disk_id.clone(), d.lun, d.to_be_detached))
                .collect(),
        }
    }

    /// Whether the disk is attached and staying, as `isattached` means it.
    pub fn has(&self, disk_id: &str) -> bool {
        self.disks
            .iter()
            .any(|(id, _, leaving)| id.eq_ignore_ascii_case(disk_id) && !leaving)
    }

    fn age(&self) -> Duration {
        Duration::from_millis(now_ms().saturating_sub(self.read_at_ms))
    }
}

/// Now, as views count time: take it before the read whose answer is stored.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

fn path(s: &Settings, vm: &VmRef) -> PathBuf {
    s.state_dir.join("vms").join(format!("{}.json", vm.name()))
}

/// Keeps what Azure said about the VM in a read that started at `read_at_ms`, unless a view from
/// a later read is there already (a slow read must not replace a newer batch's result).
pub fn store(s: &Settings, vm: &VmDisks, read_at_ms: u64) {
    let p = path(s, &vm.vm);
    if let Some(dir) = p.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let newer_there = std::fs::read(&p)
        .ok()
        .and_then(|b| serde_json::from_slice::<View>(&b).ok())
        .is_some_and(|v| v.read_at_ms > read_at_ms);
    if newer_there {
        return;
    }
    let tmp = p.with_extension(format!("{}.tmp", std::process::id()));
    let ok = serde_json::to_vec(&View::of(vm, read_at_ms))
        .ok()
        .is_some_and(|b| std::fs::write(&tmp, b).is_ok() && std::fs::rename(&tmp, &p).is_ok());
    if !ok {
        let _ = std::fs::remove_file(&tmp);
    }
}

/// The view of the first of `candidates` read within the last `s.vm_view` (none when 0).
pub fn recent(s: &Settings, candidates: &[VmRef]) -> Option<View> {
    if s.vm_view.is_zero() {
        return None;
    }
    candidates.iter().find_map(|vm| {
        let v: View = serde_json::from_slice(&std::fs::read(path(s, vm)).ok()?).ok()?;
        (v.age() < s.vm_view).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_are_shared_briefly() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut s = Settings::from_lookup(&|_| None);
        s.state_dir = dir.path().to_path_buf();
        let vm = VmRef::Standard {
            resource_group: "rg".into(),
            name: "node-a".into(),
        };
        let disks = VmDisks {
            vm: vm.clone(),
            disks: vec![
                flexdisk_azure::AttachedDisk {
                    lun: 0,
                    disk_id: "/s/d/A".into(),
                    name: "A".into(),
                    caching: None,
                    to_be_detached: false,
                },
                flexdisk_azure::AttachedDisk {
                    lun: 1,
                    disk_id: "/s/d/B".into(),
                    name: "B".into(),
                    caching: None,
                    to_be_detached: true,
                },
            ],
            zone: None,
            vm_size: None,
            provisioning_state: None,
        };
        assert_eq!(recent(&s, std::slice::from_ref(&vm)), None);
        let t0 = now_ms();
        store(&s, &disks, t0);
        let v = recent(&s, std::slice::from_ref(&vm)).expect("fresh");
        assert!(v.has("/S/D/a"), "IDs compare as ARM compares them");
        assert!(!v.has("/s/d/B"), "a disk being detached is not attached");
        assert!(!v.has("/s/d/C"));
        // A read that started earlier does not replace it.
        let mut older = disks.clone();
        older.disks.clear();
        store(&s, &older, t0 - 1);
        let v = recent(&s, std::slice::from_ref(&vm)).expect("fresh");
        assert!(v.has("/s/d/A"), "the older read lost");
        s.vm_view = Duration::ZERO;
        assert_eq!(
            recent(&s, std::slice::from_ref(&vm)),
            None,
            "0 turns it off"
        );
        s.vm_view = Duration::from_millis(1);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(
            recent(&s, std::slice::from_ref(&vm)),
            None,
            "old views are not used"
        );
    }
}
