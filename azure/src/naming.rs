//! Names and resource IDs: which disk belongs to a PV, and reading the IDs people paste.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceKind {
    Disk,
    Snapshot,
    DiskEncryptionSet,
    DiskAccess,
}

impl ResourceKind {
    fn type_name(self) -> &'static str {
        match self {
            ResourceKind::Disk => "disks",
            ResourceKind::Snapshot => "snapshots",
            ResourceKind::DiskEncryptionSet => "diskEncryptionSets",
            ResourceKind::DiskAccess => "diskAccesses",
        }
    }
}

/// `/subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.Compute/{type}/{name}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceId {
    pub subscription: String,
    pub resource_group: String,
    pub kind: ResourceKind,
    pub name: String,
}

impl ResourceId {
    pub fn new(subscription: &str, resource_group: &str, kind: ResourceKind, name: &str) -> Self {
        ResourceId {
            subscription: subscription.to_string(),
            resource_group: resource_group.to_string(),
            kind,
            name: name.to_string(),
        }
    }

    /// Same resource? ARM compares IDs case-insensitively.
    pub fn same_as(&self, id: &str) -> bool {
        self.to_string()
            .eq_ignore_ascii_case(id.trim_end_matches('/'))
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/{}/{}",
            self.subscription,
            self.resource_group,
            self.kind.type_name(),
            self.name
        )
    }
}

/// Reads a resource ID of the given kind; segment names match case-insensitively (ARM and the
/// portal write `resourceGroups` and `resourcegroups` both).
pub fn parse_resource_id(id: &str, kind: ResourceKind) -> Result<ResourceId, String> {
    let expected = format!(
        "/subscriptions/<subscription>/resourceGroups/<group>/providers/Microsoft.Compute/{}/<name>",
        kind.type_name()
    );
    let parts: Vec<&str> = id.trim().trim_end_matches('/').split('/').collect();
    let shape_ok = parts.len() == 9
        && parts[0].is_empty()
        && parts[1].eq_ignore_ascii_case("subscriptions")
        && parts[3].eq_ignore_ascii_case("resourceGroups")
        && parts[5].eq_ignore_ascii_case("providers")
        && parts[6].eq_ignore_ascii_case("Microsoft.Compute");
    if !shape_ok {
        return Err(format!(
            "{id:?} is not an Azure resource ID of the form {expected}"
        ));
    }
    if !parts[7].eq_ignore_ascii_case(kind.type_name()) {
        return Err(format!(
            "{id:?} names a {} resource, not {}",
            parts[7],
            kind.type_name()
        ));
    }
    if [parts[2], parts[4], parts[8]].iter().any(|p| p.is_empty()) {
        return Err(format!("{id:?} has an empty segment; expected {expected}"));
    }
    Ok(ResourceId {
        subscription: parts[2].to_string(),
        resource_group: parts[4].to_string(),
        kind,
        name: parts[8].to_string(),
    })
}

/// Azure's rule for disk names: 1–80 of letters, digits, `_`, `-`, `.`; starting with a letter or
/// digit; ending with a letter, digit or `_`.
pub fn is_valid_disk_name(name: &str) -> bool {
    let first_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    let last_ok = name
        .chars()
        .last()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    (1..=80).contains(&name.len())
        && first_ok
        && last_ok
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// The managed disk of a dynamically provisioned PV has the PV's name, so that `detach`, which
/// FlexVolume gives only the PV name, finds it. PV names are DNS subdomains (≤ 253 of
/// `a-z0-9-.`), so a long one is cut and made unique again with a hash of the whole.
pub fn disk_name_for_pv(pv_name: &str) -> String {
    if is_valid_disk_name(pv_name) {
        return pv_name.to_string();
    }
    let cleaned: String = pv_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let hash = fnv1a(pv_name.as_bytes());
    let head: String = cleaned.chars().take(80 - 17).collect();
    let head = head.trim_start_matches(['-', '_', '.']);
    format!("{}-{hash:016x}", if head.is_empty() { "pv" } else { head })
}

/// The tag that says which PersistentVolume a disk serves. The provisioner sets it on the disks
/// it creates and `attach` on any disk before attaching it, so that `detach`, told only the PV's
/// name, finds the disk among a VM's data disks from Azure alone (no host-local record, which a
/// restarted controller-manager or another control-plane host does not have).
pub const PV_TAG: &str = "k8s-flexdisk-pv";

/// The tag Kubernetes' Azure provisioners (and ours before [`PV_TAG`]) set; others' disks carry
/// it too, so it counts only where [`PV_TAG`] is absent.
pub const CREATED_FOR_PV_TAG: &str = "kubernetes.io-created-for-pv-name";

/// The PV a disk's tags say it serves, if any.
pub fn pv_of_tags(tags: &std::collections::BTreeMap<String, String>) -> Option<&str> {
    let find = |key: &str| {
        tags.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    };
    find(PV_TAG).or_else(|| find(CREATED_FOR_PV_TAG))
}

/// Stable across releases (unlike `DefaultHasher`): names derived from it must never change.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_ids_parse_in_either_case() {
        let id = parse_resource_id(
            "/subscriptions/sub/resourcegroups/MC_rg/providers/microsoft.compute/Disks/pvc-1",
            ResourceKind::Disk,
        )
        .expect("parses");
        assert_eq!(
            (
                id.subscription.as_str(),
                id.resource_group.as_str(),
                id.name.as_str()
            ),
            ("sub", "MC_rg", "pvc-1")
        );
        assert_eq!(
            id.to_string(),
            "/subscriptions/sub/resourceGroups/MC_rg/providers/Microsoft.Compute/disks/pvc-1"
        );
        assert!(id.same_as(
            "/SUBSCRIPTIONS/sub/resourceGroups/mc_rg/providers/Microsoft.Compute/disks/PVC-1"
        ));
    }

    #[test]
    fn bad_ids_say_what_is_wrong() {
        let e = parse_resource_id("pvc-1", ResourceKind::Disk).expect_err("not an id");
        assert!(e.contains("is not an Azure resource ID"), "{e}");
        let e = parse_resource_id(
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/snapshots/x",
            ResourceKind::Disk,
        )
        .expect_err("wrong kind");
        assert!(e.contains("names a snapshots resource, not disks"), "{e}");
        assert!(parse_resource_id(
            "/subscriptions//resourceGroups/rg/providers/Microsoft.Compute/disks/x",
            ResourceKind::Disk
        )
        .is_err());
    }

    #[test]
    fn the_pv_tag_wins_over_the_kubernetes_one() {
        let tags = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<std::collections::BTreeMap<_, _>>()
        };
        assert_eq!(pv_of_tags(&tags(&[])), None);
        assert_eq!(
            pv_of_tags(&tags(&[(CREATED_FOR_PV_TAG, "pvc-1")])),
            Some("pvc-1")
        );
        assert_eq!(
            pv_of_tags(&tags(&[
                (CREATED_FOR_PV_TAG, "pvc-1"),
                ("K8S-flexdisk-PV", "data")
            ])),
            Some("data")
        );
    }

    #[test]
    fn pv_names_become_disk_names() {
        let pv = "pvc-0c9f6e34-6f5e-4c5e-8f0e-3b1f7c1e2d4a";
        assert_eq!(disk_name_for_pv(pv), pv);
        let long = format!("pv-{}", "a.b".repeat(60));
        let name = disk_name_for_pv(&long);
        assert!(is_valid_disk_name(&name), "{name}");
        assert_eq!(name, disk_name_for_pv(&long), "deterministic");
        assert_ne!(name, disk_name_for_pv(&format!("{long}x")));
        assert!(is_valid_disk_name(&disk_name_for_pv("-x-")));
    }
}
