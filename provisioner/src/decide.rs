//! "Claim + class → disk + PV" and "released PV → delete the disk?", as plain functions.

use flexdisk_azure::disks::{gib_for_bytes, DiskSpec};
use flexdisk_azure::naming::{disk_name_for_pv, ResourceId, ResourceKind, PV_TAG};
use flexdisk_azure::{Caching, DiskParams, Performance};
use std::collections::BTreeMap;

pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// What the provisioner needs of a claim.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Claim {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub request_bytes: u64,
    pub access_modes: Vec<String>,
    /// `Filesystem` when absent.
    pub volume_mode: Option<String>,
    pub has_selector: bool,
    pub data_source: Option<DataSource>,
    /// A provisioning of it is recorded (the disk may exist, a copy may have begun).
    pub provisioning_recorded: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataSource {
    pub api_group: Option<String>,
    pub kind: String,
    pub name: String,
    /// `dataSourceRef.namespace` (`None`: the claim's own).
    pub namespace: Option<String>,
}

/// A claim this one would clone, and the volume it names, as read just now.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SourceClaim {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub phase: String,
    pub being_deleted: bool,
    /// Carries the cloning-protection finalizer: a copy of it has been started.
    pub protected: bool,
    pub storage_class: Option<String>,
    pub request_bytes: u64,
    /// `status.capacity`.
    pub capacity_bytes: u64,
    /// `spec.volumeName` ("" for none).
    pub volume_name: String,
    pub volume: Option<SourceVolume>,
}

/// The PV a source claim names.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SourceVolume {
    pub provisioned_by: Option<String>,
    pub phase: String,
    /// `spec.claimRef`: namespace, name, uid.
    pub claim_ref: Option<(String, String, String)>,
    pub disk_uri: Option<String>,
    pub capacity_bytes: u64,
    pub block: bool,
}

/// A source proven to be the claim's to copy: its disk and how large the copy must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloneSource {
    pub disk_uri: String,
    pub capacity_bytes: u64,
}

/// Whether `claim` may copy `source`, checked as external-provisioner's `getPVCSource` checks
/// (pkg/controller/controller.go): the source is a claim of the claim's own namespace, Bound, not
/// being deleted, of the same class, no larger than the request, and its volume is Bound, ours,
/// and bound back to it (`claimRef` namespace, name and uid) — a claim that merely names another
/// tenant's volume in `spec.volumeName` never lends that volume's disk. One exception to "not
/// being deleted": a source that carries the cloning-protection finalizer while this claim's
/// provisioning is recorded — the copy was started and the finalizer keeps the source until it is
/// made. `provisioner`: ours.
pub fn clone_source(
    claim: &Claim,
    class: &Class,
    source: Option<&SourceClaim>,
    provisioner: &str,
) -> Result<CloneSource, Decision> {
    let Some(ds) = &claim.data_source else {
        return Err(Decision::Refuse("the claim has no data source".into()));
    };
    if let Some(ns) = ds.namespace.as_deref().filter(|ns| *ns != claim.namespace) {
        return Err(Decision::Refuse(format!(
            "dataSourceRef names claim {} in namespace {ns}: flexdisk clones only claims of the claim's own namespace \
             ({}); a cross-namespace source would need Kubernetes' alpha CrossNamespaceVolumeDataSource gate and a \
             Gateway API ReferenceGrant, which flexdisk does not honour — clone in namespace {ns}, or copy the data",
            ds.name, claim.namespace
        )));
    }
    let Some(src) = source else {
        return Err(Decision::Wait(format!(
            "the source claim {} does not exist in namespace {}",
            ds.name, claim.namespace
        )));
    };
    if src.being_deleted && !(src.protected && claim.provisioning_recorded) {
        return Err(Decision::Wait(format!(
            "the source claim {} is being deleted; a clone needs a source that stays",
            src.name
        )));
    }
    if src.phase != "Bound" {
        return Err(Decision::Wait(format!(
            "the source claim {} is not bound yet (it is {}); a clone needs its disk",
            src.name,
            if src.phase.is_empty() {
                "new"
            } else {
                &src.phase
            }
        )));
    }
    match src.storage_class.as_deref() {
        Some(c) if c == class.name => {}
        other => {
            return Err(Decision::Refuse(format!(
                "the source claim {} is of class {}, not {}; clones stay in their class",
                src.name,
                other.unwrap_or("(none)"),
                class.name
            )))
        }
    }
    if src.volume_name.is_empty() {
        return Err(Decision::Wait(format!(
            "the source claim {} is not bound yet; a clone needs its disk",
            src.name
        )));
    }
    let Some(pv) = &src.volume else {
        return Err(Decision::Wait(format!(
            "the volume {} of the source claim {} does not exist (yet)",
            src.volume_name, src.name
        )));
    };
    let bound_back = pv.claim_ref.as_ref().is_some_and(|(ns, name, uid)| {
        *ns == src.namespace && *name == src.name && *uid == src.uid
    });
    if !bound_back {
        // The other claim's volume is not named: a claim cannot learn more about a volume than
        // that it is not its source's.
        return Err(Decision::Refuse(format!(
            "the source claim {} names a volume that is not bound to it; a clone copies only the volume its source \
             claim is bound to",
            src.name
        )));
    }
    if pv.provisioned_by.as_deref() != Some(provisioner) {
        return Err(Decision::Refuse(format!(
            "the volume {} of the source claim {} was not provisioned by {provisioner}; only its volumes can be cloned",
            src.volume_name, src.name
        )));
    }
    if pv.block {
        return Err(Decision::Refuse(format!(
            "the volume of the source claim {} is a raw block volume; flexdisk's clones are filesystems",
            src.name
        )));
    }
    if pv.phase != "Bound" {
        return Err(Decision::Wait(format!(
            "the volume {} of the source claim {} is {}, not Bound",
            src.volume_name,
            src.name,
            if pv.phase.is_empty() {
                "new"
            } else {
                &pv.phase
            }
        )));
    }
    let Some(uri) = &pv.disk_uri else {
        return Err(Decision::Refuse(format!(
            "the volume {} of the source claim {} has no Azure disk",
            src.volume_name, src.name
        )));
    };
    // The disk may have grown before the claim's status says so (the node's part of a resize
    // pending): a copy is at least as large as the disk.
    let capacity = src.capacity_bytes.max(pv.capacity_bytes);
    if claim.request_bytes < src.request_bytes.max(capacity) {
        return Err(Decision::Refuse(format!(
            "a clone must be at least as large as its source ({} bytes); raise the claim's request",
            src.request_bytes.max(capacity)
        )));
    }
    Ok(CloneSource {
        disk_uri: uri.clone(),
        capacity_bytes: capacity,
    })
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Class {
    pub name: String,
    pub parameters: BTreeMap<String, String>,
    /// `Delete` when absent.
    pub reclaim_policy: Option<String>,
    pub mount_options: Vec<String>,
    /// Zones from `allowedTopologies` (values of `topology.kubernetes.io/zone`).
    pub allowed_zones: Vec<String>,
    /// `allowedTopologies` names its zones with [`CSI_ZONE_LABEL`].
    pub csi_zone_key: bool,
}

/// The Azure Disk CSI driver's zone label: kubelet puts it on the nodes where that driver's node
/// plugin runs, and nothing puts it there for a FlexVolume driver.
pub const CSI_ZONE_LABEL: &str = "topology.disk.csi.azure.com/zone";

/// A WaitForFirstConsumer class whose `allowedTopologies` uses the CSI driver's zone label on a
/// cluster where no node carries it: the scheduler matches the class against node labels
/// (kubernetes pkg/scheduler/framework/plugins/volumebinding/binder.go, checkVolumeProvisions), so
/// it finds no node and the claim's pod never starts — and no node is ever selected for the
/// provisioner to see. What to tell the claim's owner; `None` when the class can work.
pub fn unschedulable_topology(
    class: &Class,
    delayed: bool,
    some_node_has_csi_label: bool,
) -> Option<String> {
    (delayed && class.csi_zone_key && !some_node_has_csi_label).then(|| {
        format!(
            "StorageClass {}: allowedTopologies uses {CSI_ZONE_LABEL}, which no node carries (only the Azure \
             Disk CSI driver's node plugin sets it), so the scheduler finds no node for this claim's pod; \
             use {ZONE_LABEL}",
            class.name
        )
    })
}

/// Where the cluster is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    pub subscription: String,
    pub resource_group: String,
    pub location: String,
}

/// The PV to create, in plain terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PvPlan {
    pub name: String,
    pub capacity_gib: u64,
    pub access_modes: Vec<String>,
    pub storage_class: String,
    pub reclaim_policy: String,
    pub mount_options: Vec<String>,
    pub fs_type: String,
    pub disk_uri: String,
    pub caching: Caching,
    /// Read-only wherever it is mounted (a `ReadOnlyMany` claim): one writer per filesystem.
    pub read_only: bool,
    /// Which nodes' VMs can attach the disk (the PV's node affinity).
    pub placement: Placement,
    pub claim: (String, String, String),
}

/// Where a disk can be attached, as the scheduler must know it: Azure attaches a zonal disk only
/// to a VM of its zone and a locally redundant disk outside zones only to a VM outside zones ("Disk
/// … cannot be attached to the VM because it is not in the same zone with the VM. VM zone: '1'.
/// Disk zone: ''."); a zone-redundant disk attaches to any VM of the region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// `topology.kubernetes.io/zone` In [`<location>-<n>`].
    Zone(String),
    /// `topology.kubernetes.io/zone` NotIn the location's zones: nodes outside zones (labelled
    /// with their fault domain, `0`, `1`, …) and nodes without the label.
    OutsideZones(Vec<String>),
    Anywhere,
}

/// Azure's availability zones are numbered 1 to 3 in every location that has them.
pub const AZURE_ZONES: [&str; 3] = ["1", "2", "3"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub disk: DiskSpec,
    pub pv: PvPlan,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Provision(Box<Plan>),
    /// Refuse once, with an event the admin can act on; no retry until the claim or class changes.
    Refuse(String),
    /// Not yet: something else has to happen first (a clone's source bound); tried again with
    /// back-off, an event each time, as the external provisioner retries a failed attempt.
    Wait(String),
}

/// The zone number from a zone label value: `westus2-2` → `2`; Azure's `0`/`1` fault-domain
/// labels of machines outside zones → none.
pub fn zone_of(label: &str, location: &str) -> Option<String> {
    let n = label.strip_prefix(&zone_label(location, ""))?;
    (!n.is_empty() && n.chars().all(|c| c.is_ascii_digit())).then(|| n.to_string())
}

/// Zone `n`'s label value as cloud-provider-azure writes it: `<location>-<n>`, the location in
/// lower case whatever azure.json or the class spells it (`makeZone`, `strings.ToLower`).
pub fn zone_label(location: &str, n: &str) -> String {
    format!("{}-{n}", location.to_ascii_lowercase())
}

/// Decides what to create for `claim` of `class`, provisioned for a pod on a node in
/// `node_zone_label` (WaitForFirstConsumer), copying `source` (checked by [`clone_source`]) when
/// the claim has a data source.
pub fn provision(
    claim: &Claim,
    class: &Class,
    node_zone_label: Option<&str>,
    source: Option<&CloneSource>,
    cluster: &Cluster,
) -> Decision {
    let params = match DiskParams::parse(
        class
            .parameters
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str())),
    ) {
        Ok(p) => p,
        Err(e) => return Decision::Refuse(format!("StorageClass {}: {e}", class.name)),
    };
    if claim.has_selector {
        return Decision::Refuse("claims with a selector are not provisioned dynamically (a selector picks an existing volume); remove spec.selector".into());
    }
    if claim
        .volume_mode
        .as_deref()
        .is_some_and(|m| m != "Filesystem")
    {
        return Decision::Refuse(
            "volumeMode Block is not supported by the flexdisk FlexVolume driver; use Filesystem"
                .into(),
        );
    }
    if claim.access_modes.iter().any(|m| m == "ReadWriteMany") {
        return Decision::Refuse(
            "access mode ReadWriteMany is not supported: FlexVolume has no raw block volumes and ext4, xfs and \
             btrfs are single-host filesystems (two writers corrupt them); use ReadWriteOnce, or ReadOnlyMany \
             with a class that sets maxShares > 1 (mounted read-only on every node)"
                .into(),
        );
    }
    let shared = params.max_shares.unwrap_or(1) > 1;
    if let Some(m) = claim
        .access_modes
        .iter()
        .find(|m| m.as_str() == "ReadOnlyMany")
    {
        if !shared {
            return Decision::Refuse(format!(
                "access mode {m} needs a shared disk: an Azure disk attaches to one VM unless the class sets maxShares > 1"
            ));
        }
    }
    let mut size_gib = gib_for_bytes(claim.request_bytes);
    let mut copy_from = None;
    if let Some(ds) = &claim.data_source {
        let core = ds.api_group.as_deref().is_none_or(str::is_empty);
        if !(core && ds.kind == "PersistentVolumeClaim") {
            return Decision::Refuse(format!(
                "dataSource of kind {}{} is not supported; only PersistentVolumeClaim (a clone) is",
                ds.api_group
                    .as_deref()
                    .map(|g| format!("{g}/"))
                    .unwrap_or_default(),
                ds.kind
            ));
        }
        let Some(src) = source else {
            return Decision::Wait(format!(
                "the source claim {} has not been checked yet",
                ds.name
            ));
        };
        size_gib = size_gib.max(gib_for_bytes(src.capacity_bytes));
        copy_from = Some(src.disk_uri.clone());
    }
    let node_zone = node_zone_label.and_then(|l| zone_of(l, &cluster.location));
    let allowed: Vec<String> = class
        .allowed_zones
        .iter()
        .filter_map(|z| zone_of(z, &cluster.location).or(Some(z.clone())))
        .collect();
    let zone = match params.zone_for(node_zone.as_deref(), &allowed) {
        Ok(z) => z,
        Err(e) => return Decision::Refuse(format!("StorageClass {}: {e}", class.name)),
    };
    let pv_name = format!("pvc-{}", claim.uid);
    let disk_name = disk_name_for_pv(&pv_name);
    let mut disk = DiskSpec::from_params(
        &params,
        &disk_name,
        size_gib,
        zone.clone(),
        &cluster.resource_group,
        &cluster.location,
    );
    disk.source = copy_from;
    for (k, v) in [
        (PV_TAG, pv_name.as_str()),
        ("kubernetes.io-created-for-pv-name", pv_name.as_str()),
        ("kubernetes.io-created-for-pvc-name", claim.name.as_str()),
        (
            "kubernetes.io-created-for-pvc-namespace",
            claim.namespace.as_str(),
        ),
    ] {
        disk.tags.insert(k.to_string(), v.to_string());
    }
    let disk_uri = ResourceId::new(
        &cluster.subscription,
        &disk.resource_group,
        ResourceKind::Disk,
        &disk_name,
    )
    .to_string();
    let pv = PvPlan {
        name: pv_name,
        capacity_gib: size_gib,
        access_modes: claim.access_modes.clone(),
        storage_class: class.name.clone(),
        reclaim_policy: class
            .reclaim_policy
            .clone()
            .unwrap_or_else(|| "Delete".into()),
        mount_options: class.mount_options.clone(),
        fs_type: params.fs_type.clone(),
        disk_uri,
        caching: params.caching_for(size_gib),
        read_only: !claim.access_modes.is_empty()
            && claim.access_modes.iter().all(|m| m == "ReadOnlyMany"),
        placement: match zone {
            Some(z) => Placement::Zone(zone_label(&disk.location, &z)),
            None if params.sku.is_zrs() => Placement::Anywhere,
            None => Placement::OutsideZones(
                AZURE_ZONES
                    .iter()
                    .map(|z| zone_label(&disk.location, z))
                    .collect(),
            ),
        },
        claim: (
            claim.namespace.clone(),
            claim.name.clone(),
            claim.uid.clone(),
        ),
    };
    Decision::Provision(Box::new(Plan { disk, pv }))
}

/// What the provisioner knows of a PV when deciding about deletion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// `pv.kubernetes.io/provisioned-by`.
    pub provisioned_by: Option<String>,
    pub phase: String,
    pub reclaim_policy: String,
    pub disk_uri: Option<String>,
    /// `metadata.deletionTimestamp` is set.
    pub being_deleted: bool,
    /// Carries this provisioner's PV finalizer.
    pub has_finalizer: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinalizerChange {
    Add,
    Remove,
    Leave,
}

/// The PV finalizer as sig-storage-lib-external-provisioner keeps it (`controller/controller.go`,
/// handleProtectionFinalizer): added to a Bound `Delete` volume that is not being deleted, removed
/// from a `Retain` (or `Recycle`) volume in any phase — so a kept PV can always be deleted, also one
/// switched from Delete to Retain, and its disk stays.
pub fn pv_finalizer(pv: &Volume, provisioner: &str) -> FinalizerChange {
    if pv.provisioned_by.as_deref() != Some(provisioner) {
        return FinalizerChange::Leave;
    }
    match pv.reclaim_policy.as_str() {
        "Retain" | "Recycle" if pv.has_finalizer => FinalizerChange::Remove,
        "Delete" if !pv.has_finalizer && !pv.being_deleted && pv.phase == "Bound" => {
            FinalizerChange::Add
        }
        _ => FinalizerChange::Leave,
    }
}

/// Whether Azure's refusal to make a disk in the selected node's zone could go away on a node in
/// another zone, so the scheduler is asked to choose again (external-provisioner does so for a
/// selected node when the driver reports ResourceExhausted, `checkError` in
/// `pkg/controller/controller.go`; the library then removes `volume.kubernetes.io/selected-node`,
/// rescheduleProvisioning). Only zonal refusals: quotas are per region or subscription, where
/// another node changes nothing and rescheduling would only go round.
pub fn another_node_may_help(code: &str) -> bool {
    matches!(
        code.to_ascii_lowercase().as_str(),
        "zonalallocationfailed" | "overconstrainedzonalallocationrequest" | "skunotavailable"
    )
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deletion {
    /// Another provisioner's, or a hand-made PV: never touched.
    NotOurs,
    /// Not released (yet).
    Wait,
    /// Retain: the disk stays (the finalizer goes, [`pv_finalizer`]).
    Keep,
    /// Delete this disk, then the PV.
    DeleteDisk(String),
}

/// Whether a volume's disk is to be deleted now: exactly when sig-storage-lib-external-provisioner
/// deletes (`shouldDelete`, controller/controller.go) — only a `Released` volume (since Kubernetes
/// 1.5 not a `Failed` one), with reclaim policy Delete, and not one being deleted whose finalizer
/// is already gone ("the finalizer was removed, i.e. the volume has been already deleted").
pub fn deletion(pv: &Volume, provisioner: &str) -> Deletion {
    if pv.provisioned_by.as_deref() != Some(provisioner) {
        return Deletion::NotOurs;
    }
    if pv.being_deleted && !pv.has_finalizer {
        return Deletion::Wait;
    }
    if pv.phase != "Released" {
        return Deletion::Wait;
    }
    match (pv.reclaim_policy.as_str(), &pv.disk_uri) {
        ("Delete", Some(uri)) => Deletion::DeleteDisk(uri.clone()),
        _ => Deletion::Keep,
    }
}

/// What a claim bound to one of our volumes says about its size, as the external resizer reads it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Sizes {
    /// `spec.resources.requests.storage`.
    pub request: u64,
    /// `status.capacity.storage`: what the node has grown the filesystem to.
    pub capacity: u64,
    /// The PV's `spec.capacity.storage` (what the disk has been grown to).
    pub volume: u64,
    /// `status.allocatedResources.storage`: the size last tried.
    pub allocated: Option<u64>,
    /// `status.allocatedResourceStatuses.storage`.
    pub status: Option<String>,
    /// A `FileSystemResizePending` condition.
    pub fs_resize_pending: bool,
    /// A `ControllerResizeError` condition: the last try failed for good (external-resizer keeps
    /// this in memory, `hasFinalError`; the condition also survives a restart).
    pub failed_for_good: bool,
}

/// The size to grow the disk to now, if any — kubernetes-csi/external-resizer's
/// `expandAndRecover` (pkg/controller/expand_and_recover.go, KEP-1790 recovery from expansion
/// failure), whose rules this follows case by case. Only a claim that asks for more than it has
/// (`pvcNeedResize`). While the node has a growth to finish, the size it works on stands; one the
/// node found infeasible is handed back to it at the size last tried (the control plane's part is
/// done again, idempotently, and the claim says `NodeResizePending`); one the controller found
/// infeasible gives way to the (possibly lowered) request.
pub fn resize_to(z: &Sizes) -> Option<u64> {
    if z.request <= z.capacity {
        return None;
    }
    let status = z.status.as_deref().unwrap_or("");
    let allocated_or_request = z.allocated.unwrap_or(z.request);
    if z.volume < z.request {
        match status {
            "NodeResizeInfeasible" => Some(allocated_or_request),
            "NodeResizePending" | "NodeResizeInProgress" => {
                (z.volume < allocated_or_request).then_some(allocated_or_request)
            }
            // Failed for good (Azure wants the disk detached first): the request, which the
            // user may have lowered, wins. Otherwise interrupted (a crash, a transient error):
            // the size tried is tried again.
            "ControllerResizeInProgress" if z.failed_for_good => Some(z.request),
            "ControllerResizeInProgress" => Some(allocated_or_request),
            _ => Some(z.request),
        }
    } else {
        match status {
            "NodeResizePending" | "NodeResizeInProgress" => None,
            "NodeResizeInfeasible"
            | "ControllerResizeInProgress"
            | "ControllerResizeInfeasible" => Some(allocated_or_request),
            "" if z.allocated.is_some() => z.allocated,
            _ if z.fs_resize_pending => None,
            _ => Some(z.request),
        }
    }
}

/// The size the disk must already have while the claim's node part is due: the volume's. Only
/// Azure can say whether it has it: kube-controller-manager's expand controller hands every
/// FlexVolume claim to the node itself, with a no-op "expansion" that only raises the PV's
/// capacity and marks the claim `NodeResizePending` (kubernetes v1.37 `pkg/volume/plugins.go`
/// FindExpandablePluginBySpec → `noopExpandableVolumePluginInstance` for `IsKubeletExpandable`
/// specs; `operation_generator.go` expandAndRecoverFunction) — racing this provisioner's growth,
/// and leaving [`resize_to`] nothing to do when it wins.
pub fn node_needs(z: &Sizes) -> Option<u64> {
    matches!(
        z.status.as_deref(),
        Some("NodeResizePending" | "NodeResizeInProgress")
    )
    .then_some(z.volume)
}

/// A VolumeAttributesClass as the provisioner sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AttributesClass {
    pub name: String,
    pub driver: String,
    pub parameters: BTreeMap<String, String>,
}

/// What a VolumeAttributesClass asks of a flexdisk disk: `diskIOPSReadWrite` and
/// `diskMBpsReadWrite` (names compared case-insensitively, as StorageClass parameters are — the
/// Azure Disk CSI driver's ParseDiskParameters does the same), positive integers. Err: why the
/// class cannot apply (another driver's, an unknown parameter, a bad value).
pub fn performance_of(vac: &AttributesClass, provisioner: &str) -> Result<Performance, String> {
    if vac.driver != provisioner {
        return Err(format!(
            "VolumeAttributesClass {} is for driver {}, not {provisioner}",
            vac.name, vac.driver
        ));
    }
    let mut p = Performance::default();
    for (k, v) in &vac.parameters {
        let value = || {
            v.trim()
                .parse::<i64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| {
                    format!(
                        "VolumeAttributesClass {}: {k} must be a positive whole number, not {v:?}",
                        vac.name
                    )
                })
        };
        match k.to_ascii_lowercase().as_str() {
            "diskiopsreadwrite" => p.iops = Some(value()?),
            "diskmbpsreadwrite" => p.mbps = Some(value()?),
            _ => {
                return Err(format!(
                    "VolumeAttributesClass {}: unknown parameter {k:?}; flexdisk's classes take diskIOPSReadWrite and diskMBpsReadWrite",
                    vac.name
                ))
            }
        }
    }
    Ok(p)
}

/// The class's parameters with a VolumeAttributesClass's performance in place of its own.
pub fn with_performance(class: &Class, p: &Performance) -> Class {
    let mut out = class.clone();
    let mut set = |key: &str, value: Option<i64>| {
        if let Some(v) = value {
            out.parameters.retain(|k, _| !k.eq_ignore_ascii_case(key));
            out.parameters.insert(key.to_string(), v.to_string());
        }
    };
    set("diskIOPSReadWrite", p.iops);
    set("diskMBpsReadWrite", p.mbps);
    out
}

/// Where a bound claim stands with its VolumeAttributesClass (the claim's spec and status).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AttributesState {
    /// `spec.volumeAttributesClassName` ("" for none).
    pub wanted: String,
    /// `status.currentVolumeAttributesClassName` ("" for none).
    pub current: String,
    /// `status.modifyVolumeStatus`: (target, status).
    pub modifying: Option<(String, String)>,
}

/// What to do about a bound claim's VolumeAttributesClass — kubernetes-csi/external-resizer's
/// modify controller (`pkg/modifycontroller`), which acts only on CSI volumes, done for ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Modify {
    Nothing,
    /// The class does not exist (yet): `Pending`, looked at again when the claim changes and on
    /// a slow resync.
    Pending {
        target: String,
        message: String,
    },
    /// The class cannot apply: `Infeasible`, and nothing is sent to Azure again until the claim
    /// names another class.
    Infeasible {
        target: String,
        message: String,
    },
    /// Give the disk this performance, then make `target` current.
    Apply {
        target: String,
        performance: Performance,
    },
}

pub fn modify(state: &AttributesState, vac: Option<&AttributesClass>, provisioner: &str) -> Modify {
    let target = state.wanted.clone();
    // No class asked (only possible while none was ever applied: kube-apiserver forbids
    // dropping an applied one).
    if target.is_empty() {
        return Modify::Nothing;
    }
    if target == state.current && state.modifying.is_none() {
        return Modify::Nothing;
    }
    if state
        .modifying
        .as_ref()
        .is_some_and(|(t, s)| *t == target && s == "Infeasible")
    {
        return Modify::Nothing;
    }
    let Some(vac) = vac else {
        return Modify::Pending {
            message: format!(
                "VolumeAttributesClass {target} does not exist; the volume is changed once it is created"
            ),
            target,
        };
    };
    match performance_of(vac, provisioner) {
        Ok(performance) => Modify::Apply {
            target,
            performance,
        },
        Err(message) => Modify::Infeasible { target, message },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vac(name: &str, driver: &str, params: &[(&str, &str)]) -> AttributesClass {
        AttributesClass {
            name: name.into(),
            driver: driver.into(),
            parameters: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn attributes_classes_give_iops_and_mbps_and_refuse_the_rest() {
        let ours = "flexdisk/azure-disk";
        let gold = vac(
            "gold",
            ours,
            &[("DiskIOPSReadWrite", "8000"), ("diskmbpsreadwrite", "400")],
        );
        assert_eq!(
            performance_of(&gold, ours),
            Ok(Performance {
                iops: Some(8000),
                mbps: Some(400)
            })
        );
        let theirs = vac("x", "disk.csi.azure.com", &[]);
        assert!(performance_of(&theirs, ours)
            .unwrap_err()
            .contains("disk.csi.azure.com"));
        let odd = vac("x", ours, &[("throughput", "1")]);
        assert!(performance_of(&odd, ours)
            .unwrap_err()
            .contains("unknown parameter"));
        let bad = vac("x", ours, &[("diskIOPSReadWrite", "-5")]);
        assert!(performance_of(&bad, ours).unwrap_err().contains("positive"));
        // The class's own values give way to the attributes class's.
        let class = Class {
            name: "v2".into(),
            parameters: [("skuName", "PremiumV2_LRS"), ("diskiopsreadwrite", "3000")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        };
        let merged = with_performance(
            &class,
            &Performance {
                iops: Some(6000),
                mbps: None,
            },
        );
        assert_eq!(merged.parameters.len(), 2);
        assert_eq!(merged.parameters["diskIOPSReadWrite"], "6000");
    }

    #[test]
    fn a_claim_s_class_change_is_applied_once_and_infeasible_is_final() {
        let ours = "flexdisk/azure-disk";
        let gold = vac("gold", ours, &[("diskIOPSReadWrite", "8000")]);
        let state =
            |wanted: &str, current: &str, modifying: Option<(&str, &str)>| AttributesState {
                wanted: wanted.into(),
                current: current.into(),
                modifying: modifying.map(|(t, s)| (t.into(), s.into())),
            };
        assert_eq!(modify(&state("", "", None), None, ours), Modify::Nothing);
        assert_eq!(
            modify(&state("gold", "gold", None), Some(&gold), ours),
            Modify::Nothing
        );
        assert!(matches!(
            modify(&state("gold", "silver", None), Some(&gold), ours),
            Modify::Apply { target, performance } if target == "gold" && performance.iops == Some(8000)
        ));
        // Provisioned with the class: bound with none current yet — applied (a no-op in Azure).
        assert!(matches!(
            modify(&state("gold", "", None), Some(&gold), ours),
            Modify::Apply { .. }
        ));
        // Interrupted while in progress: carried on.
        assert!(matches!(
            modify(
                &state("gold", "silver", Some(("gold", "InProgress"))),
                Some(&gold),
                ours
            ),
            Modify::Apply { .. }
        ));
        assert!(matches!(
            modify(&state("gold", "silver", None), None, ours),
            Modify::Pending { message, .. } if message.contains("does not exist")
        ));
        let theirs = vac("gold", "disk.csi.azure.com", &[]);
        assert!(matches!(
            modify(&state("gold", "silver", None), Some(&theirs), ours),
            Modify::Infeasible { .. }
        ));
        // Infeasible stays so until the claim names another class (or goes back).
        assert_eq!(
            modify(
                &state("gold", "silver", Some(("gold", "Infeasible"))),
                Some(&gold),
                ours
            ),
            Modify::Nothing
        );
        // Back to the current class: its values are applied again (nothing to send if the disk
        // has them) and the status cleared.
        let silver = vac("silver", ours, &[("diskIOPSReadWrite", "6000")]);
        assert!(matches!(
            modify(&state("silver", "silver", Some(("gold", "Infeasible"))), Some(&silver), ours),
            Modify::Apply { target, .. } if target == "silver"
        ));
    }

    fn cluster() -> Cluster {
        Cluster {
            subscription: "sub".into(),
            resource_group: "MC_rg".into(),
            location: "westus2".into(),
        }
    }

    fn claim() -> Claim {
        Claim {
            namespace: "apps".into(),
            name: "data".into(),
            uid: "0c9f6e34-6f5e-4c5e-8f0e-3b1f7c1e2d4a".into(),
            request_bytes: (10 << 30) + 1,
            access_modes: vec!["ReadWriteOnce".into()],
            ..Claim::default()
        }
    }

    fn class(params: &[(&str, &str)]) -> Class {
        Class {
            name: "fast".into(),
            parameters: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Class::default()
        }
    }

    fn plan(d: Decision) -> Plan {
        match d {
            Decision::Provision(p) => *p,
            Decision::Refuse(m) | Decision::Wait(m) => panic!("not provisioned: {m}"),
        }
    }

    fn refused(d: Decision) -> String {
        match d {
            Decision::Refuse(m) => m,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn a_zonal_premium_disk_for_a_node_in_zone_two() {
        let p = plan(provision(
            &claim(),
            &class(&[("skuName", "Premium_LRS"), ("fsType", "xfs")]),
            Some("westus2-2"),
            None,
            &cluster(),
        ));
        assert_eq!(p.pv.name, "pvc-0c9f6e34-6f5e-4c5e-8f0e-3b1f7c1e2d4a");
        assert_eq!(
            p.disk.name, p.pv.name,
            "disk named after the PV, so detach finds it"
        );
        assert_eq!(p.disk.size_gib, 11, "rounded up to whole GiB");
        assert_eq!(p.disk.zone.as_deref(), Some("2"));
        assert_eq!(p.pv.placement, Placement::Zone("westus2-2".into()));
        assert_eq!(p.pv.fs_type, "xfs");
        assert_eq!(p.pv.caching, Caching::ReadOnly);
        assert_eq!(p.pv.reclaim_policy, "Delete");
        assert_eq!(p.pv.disk_uri, "/subscriptions/sub/resourceGroups/MC_rg/providers/Microsoft.Compute/disks/pvc-0c9f6e34-6f5e-4c5e-8f0e-3b1f7c1e2d4a");
        assert_eq!(
            p.disk
                .tags
                .get("kubernetes.io-created-for-pvc-namespace")
                .map(String::as_str),
            Some("apps")
        );
    }

    #[test]
    fn zone_labels_are_lower_case_whatever_the_location_s_case() {
        let mut c = cluster();
        c.location = "WestUS2".into();
        let p = plan(provision(
            &claim(),
            &class(&[]),
            Some("westus2-2"),
            None,
            &c,
        ));
        assert_eq!(
            p.disk.zone.as_deref(),
            Some("2"),
            "the node's zone is found"
        );
        assert_eq!(p.pv.placement, Placement::Zone("westus2-2".into()));
        let p = plan(provision(&claim(), &class(&[]), Some("0"), None, &c));
        assert_eq!(
            p.pv.placement,
            Placement::OutsideZones(vec![
                "westus2-1".into(),
                "westus2-2".into(),
                "westus2-3".into()
            ])
        );
    }

    #[test]
    fn regional_and_zone_redundant_disks() {
        let p = plan(provision(
            &claim(),
            &class(&[]),
            Some("0"),
            None,
            &cluster(),
        ));
        assert_eq!(
            p.disk.zone, None,
            "a node outside zones gets a regional disk"
        );
        assert_eq!(
            p.pv.placement,
            Placement::OutsideZones(vec![
                "westus2-1".into(),
                "westus2-2".into(),
                "westus2-3".into()
            ]),
            "which zonal VMs cannot attach"
        );
        let p = plan(provision(
            &claim(),
            &class(&[("skuName", "Premium_ZRS")]),
            Some("westus2-1"),
            None,
            &cluster(),
        ));
        assert_eq!(p.disk.zone, None, "ZRS is never pinned");
        assert_eq!(p.pv.placement, Placement::Anywhere);
        let mut c = class(&[("zoned", "true")]);
        c.allowed_zones = vec!["westus2-3".into()];
        let p = plan(provision(&claim(), &c, None, None, &cluster()));
        assert_eq!(
            p.disk.zone.as_deref(),
            Some("3"),
            "allowedTopologies without a node"
        );
    }

    #[test]
    fn refusals_say_what_to_do() {
        assert!(refused(provision(
            &claim(),
            &class(&[("cachngMode", "None")]),
            None,
            None,
            &cluster()
        ))
        .contains("`cachngMode`"));
        let mut c = claim();
        c.has_selector = true;
        assert!(refused(provision(&c, &class(&[]), None, None, &cluster())).contains("selector"));
        let mut c = claim();
        c.volume_mode = Some("Block".into());
        assert!(refused(provision(&c, &class(&[]), None, None, &cluster())).contains("Block"));
        let mut c = claim();
        c.access_modes = vec!["ReadWriteMany".into()];
        let shared = class(&[("skuName", "Premium_LRS"), ("maxShares", "2")]);
        // Two writers corrupt a single-host filesystem: refused even on a shared disk.
        assert!(refused(provision(&c, &shared, None, None, &cluster()))
            .contains("ReadWriteMany is not supported"));
        c.access_modes = vec!["ReadOnlyMany".into()];
        assert!(refused(provision(&c, &class(&[]), None, None, &cluster())).contains("maxShares"));
        assert!(matches!(
            provision(&c, &shared, None, None, &cluster()),
            Decision::Provision(p) if p.pv.read_only
        ));
        c.access_modes = vec!["ReadWriteOnce".into(), "ReadOnlyMany".into()];
        assert!(matches!(
            provision(
                &c,
                &class(&[("skuName", "Premium_LRS"), ("maxShares", "2")]),
                None,
                None,
                &cluster()
            ),
            Decision::Provision(p) if !p.pv.read_only
        ));
        let mut c = claim();
        c.data_source = Some(DataSource {
            api_group: Some("snapshot.storage.k8s.io".into()),
            kind: "VolumeSnapshot".into(),
            name: "s".into(),
            namespace: None,
        });
        assert!(refused(provision(&c, &class(&[]), None, None, &cluster()))
            .contains("snapshot.storage.k8s.io/VolumeSnapshot is not supported"));
    }

    fn source() -> SourceClaim {
        SourceClaim {
            namespace: "apps".into(),
            name: "src".into(),
            uid: "src-uid".into(),
            phase: "Bound".into(),
            storage_class: Some("fast".into()),
            request_bytes: 10 << 30,
            capacity_bytes: 10 << 30,
            volume_name: "pvc-src-uid".into(),
            volume: Some(SourceVolume {
                provisioned_by: Some(OURS.into()),
                phase: "Bound".into(),
                claim_ref: Some(("apps".into(), "src".into(), "src-uid".into())),
                disk_uri: Some(
                    "/subscriptions/sub/resourceGroups/MC_rg/providers/Microsoft.Compute/disks/pvc-src"
                        .into(),
                ),
                capacity_bytes: 10 << 30,
                block: false,
            }),
            ..SourceClaim::default()
        }
    }

    const OURS: &str = "flexdisk/azure-disk";

    fn cloning(name: &str, namespace: Option<&str>) -> Claim {
        let mut c = claim();
        c.data_source = Some(DataSource {
            api_group: None,
            kind: "PersistentVolumeClaim".into(),
            name: name.into(),
            namespace: namespace.map(str::to_string),
        });
        c
    }

    fn checked(c: &Claim, src: Option<&SourceClaim>) -> Result<CloneSource, Decision> {
        clone_source(c, &class(&[]), src, OURS)
    }

    #[test]
    fn clones_copy_their_bound_source_in_the_same_class() {
        let c = cloning("src", None);
        let vetted = checked(&c, Some(&source())).expect("a good source");
        let p = plan(provision(&c, &class(&[]), None, Some(&vetted), &cluster()));
        assert_eq!(
            p.disk.source.as_deref(),
            source().volume.and_then(|v| v.disk_uri).as_deref()
        );
        let waits = |src: SourceClaim, why: &str| {
            assert!(
                matches!(checked(&c, Some(&src)), Err(Decision::Wait(m)) if m.contains(why)),
                "{why}"
            )
        };
        let refuses = |src: SourceClaim, why: &str| {
            assert!(
                matches!(checked(&c, Some(&src)), Err(Decision::Refuse(m)) if m.contains(why)),
                "{why}: {:?}",
                checked(&c, Some(&src))
            )
        };
        // Not bound yet, or not there yet: waited for (retried), not refused.
        waits(
            SourceClaim {
                phase: "Pending".into(),
                ..source()
            },
            "not bound",
        );
        waits(
            SourceClaim {
                volume: None,
                ..source()
            },
            "does not exist",
        );
        assert!(
            matches!(checked(&c, None), Err(Decision::Wait(m)) if m.contains("does not exist"))
        );
        refuses(
            SourceClaim {
                storage_class: Some("slow".into()),
                ..source()
            },
            "clones stay in their class",
        );
        refuses(
            SourceClaim {
                capacity_bytes: 20 << 30,
                ..source()
            },
            "at least as large",
        );
        let mut grown = source();
        if let Some(v) = grown.volume.as_mut() {
            v.capacity_bytes = 20 << 30;
        }
        refuses(grown, "at least as large");
        let mut theirs = source();
        if let Some(v) = theirs.volume.as_mut() {
            v.provisioned_by = Some("disk.csi.azure.com".into());
        }
        refuses(theirs, "not provisioned by flexdisk/azure-disk");
    }

    /// The attack of issue 24: in namespace `attacker`, a claim `x` names another tenant's volume
    /// in `spec.volumeName` (any user may write that), and a claim clones `x`. The volume is not
    /// bound back to `x`, so nothing is copied — whatever the rest says.
    #[test]
    fn a_claim_naming_another_tenant_s_volume_lends_nothing() {
        let c = cloning("x", None);
        let mut x = source();
        x.name = "x".into();
        x.uid = "x-uid".into();
        // The victim's volume, bound to `wide` in `default`.
        if let Some(v) = x.volume.as_mut() {
            v.claim_ref = Some(("default".into(), "wide".into(), "wide-uid".into()));
        }
        let refused = checked(&c, Some(&x));
        assert!(
            matches!(&refused, Err(Decision::Refuse(m)) if m.contains("not bound to it") && !m.contains("wide")),
            "{refused:?}"
        );
        // Same name, another claim that once had it (a uid differs): no better.
        let mut reused = source();
        if let Some(v) = reused.volume.as_mut() {
            v.claim_ref = Some(("apps".into(), "src".into(), "an-older-uid".into()));
        }
        assert!(matches!(
            checked(&cloning("src", None), Some(&reused)),
            Err(Decision::Refuse(_))
        ));
        // A PV bound to nobody either.
        let mut loose = source();
        if let Some(v) = loose.volume.as_mut() {
            v.claim_ref = None;
        }
        assert!(matches!(
            checked(&cloning("src", None), Some(&loose)),
            Err(Decision::Refuse(_))
        ));
        // A dataSourceRef naming another namespace is refused before anything is read.
        let across = cloning("wide", Some("default"));
        assert!(matches!(
            checked(&across, None),
            Err(Decision::Refuse(m)) if m.contains("own namespace") && m.contains("ReferenceGrant")
        ));
        // Naming its own namespace explicitly is fine.
        assert!(checked(&cloning("src", Some("apps")), Some(&source())).is_ok());
    }

    #[test]
    fn a_source_being_deleted_is_copied_only_where_the_copy_was_started() {
        let going = SourceClaim {
            being_deleted: true,
            ..source()
        };
        let c = cloning("src", None);
        assert!(
            matches!(checked(&c, Some(&going)), Err(Decision::Wait(m)) if m.contains("being deleted"))
        );
        // Protected by the cloning finalizer, and this claim's provisioning recorded: the copy
        // began before the deletion did.
        let protected = SourceClaim {
            protected: true,
            ..going.clone()
        };
        assert!(matches!(
            checked(&c, Some(&protected)),
            Err(Decision::Wait(_))
        ));
        let resumed = Claim {
            provisioning_recorded: true,
            ..c
        };
        assert!(checked(&resumed, Some(&protected)).is_ok());
        assert!(checked(&resumed, Some(&going)).is_err());
    }

    #[test]
    fn resizes_follow_the_external_resizer() {
        let gi = |n: u64| n << 30;
        let z = |request, capacity, volume, allocated: Option<u64>, status: Option<&str>| Sizes {
            request: gi(request),
            capacity: gi(capacity),
            volume: gi(volume),
            allocated: allocated.map(gi),
            status: status.map(str::to_string),
            ..Sizes::default()
        };
        // A new request.
        assert_eq!(resize_to(&z(8, 5, 5, None, None)), Some(gi(8)));
        assert_eq!(resize_to(&z(5, 5, 5, None, None)), None);
        // The disk is grown; the node finishes.
        assert_eq!(
            resize_to(&z(8, 5, 8, Some(8), Some("NodeResizePending"))),
            None
        );
        assert_eq!(resize_to(&z(8, 8, 8, Some(8), None)), None, "done");
        // Interrupted after the disk grew but before the PV said so: the same size again.
        assert_eq!(
            resize_to(&z(8, 5, 5, Some(8), Some("ControllerResizeInProgress"))),
            Some(gi(8))
        );
        // Interrupted after the volume grew too, before the claim said so: finished, same size.
        assert_eq!(
            resize_to(&z(8, 5, 8, Some(8), Some("ControllerResizeInProgress"))),
            Some(gi(8))
        );
        // The user asks for more while the first growth is under way: that one finishes first.
        assert_eq!(
            resize_to(&z(12, 5, 5, Some(8), Some("ControllerResizeInProgress"))),
            Some(gi(8))
        );
        // Failed for good (too big), then lowered: the lowered request is honoured.
        assert_eq!(
            resize_to(&z(
                7,
                5,
                5,
                Some(64_000),
                Some("ControllerResizeInfeasible")
            )),
            Some(gi(7))
        );
        let detach_first = Sizes {
            failed_for_good: true,
            ..z(7, 5, 5, Some(64_000), Some("ControllerResizeInProgress"))
        };
        assert_eq!(resize_to(&detach_first), Some(gi(7)));
        // A growth the node has yet to do blocks a new one until it is done.
        assert_eq!(
            resize_to(&z(12, 5, 8, Some(8), Some("NodeResizePending"))),
            None
        );
        // The node found its part infeasible and the user asks for more: the size last tried is
        // handed back to the node first (KEP-1790), then the new request once that is done.
        assert_eq!(
            resize_to(&z(12, 5, 8, Some(8), Some("NodeResizeInfeasible"))),
            Some(gi(8))
        );
        assert_eq!(
            resize_to(&z(8, 5, 8, Some(8), Some("NodeResizeInfeasible"))),
            Some(gi(8))
        );
        assert_eq!(
            resize_to(&z(12, 8, 8, Some(8), None)),
            Some(gi(12)),
            "the node done, the new request"
        );
        assert_eq!(
            resize_to(&Sizes {
                fs_resize_pending: true,
                ..z(8, 5, 8, None, None)
            }),
            None
        );
        assert_eq!(resize_to(&z(12, 8, 8, None, None)), Some(gi(12)));
    }

    #[test]
    fn the_node_s_turn_needs_the_volume_s_size_on_the_disk() {
        let gi = |n: u64| n << 30;
        let z = |volume, status: Option<&str>| Sizes {
            request: gi(8),
            capacity: gi(5),
            volume: gi(volume),
            allocated: Some(gi(8)),
            status: status.map(str::to_string),
            ..Sizes::default()
        };
        // kube-controller-manager's no-op expansion: the PV says 8 GiB, the node is to finish.
        for s in ["NodeResizePending", "NodeResizeInProgress"] {
            assert_eq!(node_needs(&z(8, Some(s))), Some(gi(8)), "{s}");
            assert_eq!(resize_to(&z(8, Some(s))), None, "{s}");
        }
        // The controller's part (this provisioner's) or nothing under way: nothing asked of it.
        assert_eq!(node_needs(&z(5, Some("ControllerResizeInProgress"))), None);
        assert_eq!(node_needs(&z(8, None)), None);
    }

    #[test]
    fn only_our_released_delete_volumes_lose_their_disk() {
        let ours = Volume {
            provisioned_by: Some("flexdisk/azure-disk".into()),
            phase: "Released".into(),
            reclaim_policy: "Delete".into(),
            disk_uri: Some("/d".into()),
            being_deleted: false,
            has_finalizer: true,
        };
        assert_eq!(
            deletion(&ours, "flexdisk/azure-disk"),
            Deletion::DeleteDisk("/d".into())
        );
        assert_eq!(
            deletion(
                &Volume {
                    provisioned_by: Some("other".into()),
                    ..ours.clone()
                },
                "flexdisk/azure-disk"
            ),
            Deletion::NotOurs
        );
        assert_eq!(
            deletion(
                &Volume {
                    provisioned_by: None,
                    ..ours.clone()
                },
                "flexdisk/azure-disk"
            ),
            Deletion::NotOurs
        );
        assert_eq!(
            deletion(
                &Volume {
                    phase: "Bound".into(),
                    ..ours.clone()
                },
                "flexdisk/azure-disk"
            ),
            Deletion::Wait
        );
        assert_eq!(
            deletion(
                &Volume {
                    reclaim_policy: "Retain".into(),
                    ..ours.clone()
                },
                "flexdisk/azure-disk"
            ),
            Deletion::Keep
        );
        // As the library's shouldDelete: a Failed volume is not deleted, nor one being deleted
        // whose finalizer is gone (its disk went already); one being deleted with the finalizer
        // is.
        for (phase, deleting, finalizer, expected) in [
            ("Failed", false, true, Deletion::Wait),
            ("Released", true, false, Deletion::Wait),
            ("Released", true, true, Deletion::DeleteDisk("/d".into())),
            ("Released", false, false, Deletion::DeleteDisk("/d".into())),
        ] {
            let v = Volume {
                phase: phase.into(),
                being_deleted: deleting,
                has_finalizer: finalizer,
                ..ours.clone()
            };
            assert_eq!(deletion(&v, "flexdisk/azure-disk"), expected, "{v:?}");
        }
    }

    #[test]
    fn the_pv_finalizer_follows_the_library() {
        let v = |policy: &str, phase: &str, deleting: bool, has: bool| Volume {
            provisioned_by: Some("p".into()),
            phase: phase.into(),
            reclaim_policy: policy.into(),
            disk_uri: Some("/d".into()),
            being_deleted: deleting,
            has_finalizer: has,
        };
        use FinalizerChange::*;
        // Retain (also switched from Delete) loses it in every phase, being deleted or not.
        for phase in ["Pending", "Available", "Bound", "Released", "Failed"] {
            for deleting in [false, true] {
                assert_eq!(
                    pv_finalizer(&v("Retain", phase, deleting, true), "p"),
                    Remove
                );
                assert_eq!(
                    pv_finalizer(&v("Retain", phase, deleting, false), "p"),
                    Leave
                );
            }
        }
        assert_eq!(
            pv_finalizer(&v("Recycle", "Bound", false, true), "p"),
            Remove
        );
        // Delete gets it back once Bound (switched from Retain), never while being deleted.
        assert_eq!(pv_finalizer(&v("Delete", "Bound", false, false), "p"), Add);
        assert_eq!(pv_finalizer(&v("Delete", "Bound", true, false), "p"), Leave);
        assert_eq!(
            pv_finalizer(&v("Delete", "Released", false, false), "p"),
            Leave
        );
        assert_eq!(pv_finalizer(&v("Delete", "Bound", false, true), "p"), Leave);
        // Not ours: never touched.
        assert_eq!(pv_finalizer(&v("Retain", "Bound", false, true), "q"), Leave);
    }

    #[test]
    fn zonal_refusals_go_back_to_the_scheduler() {
        for code in [
            "ZonalAllocationFailed",
            "OverconstrainedZonalAllocationRequest",
            "SkuNotAvailable",
        ] {
            assert!(another_node_may_help(code), "{code}");
        }
        // Regional or subscription-wide: another node would meet the same refusal.
        for code in [
            "QuotaExceeded",
            "OperationNotAllowed",
            "InvalidParameter",
            "AuthorizationFailed",
            "",
        ] {
            assert!(!another_node_may_help(code), "{code}");
        }
    }

    #[test]
    fn the_csi_zone_key_works_where_nodes_carry_it_and_says_why_where_not() {
        let c = Class {
            csi_zone_key: true,
            allowed_zones: vec!["westus2-3".into()],
            ..class(&[("skuName", "Premium_LRS"), ("zoned", "true")])
        };
        // Its zones are zones (Immediate binding, or nodes labelled by the CSI node plugin).
        let p = plan(provision(&claim(), &c, None, None, &cluster()));
        assert_eq!(p.disk.zone.as_deref(), Some("3"));
        assert_eq!(unschedulable_topology(&c, false, false), None, "Immediate");
        assert_eq!(
            unschedulable_topology(&c, true, true),
            None,
            "labelled nodes"
        );
        let m = unschedulable_topology(&c, true, false).expect("no node can be chosen");
        assert!(m.contains(CSI_ZONE_LABEL) && m.contains(ZONE_LABEL), "{m}");
        assert_eq!(unschedulable_topology(&class(&[]), true, false), None);
    }
}
