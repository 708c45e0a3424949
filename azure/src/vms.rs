//! VMs and their data disks: which VM a node is, what is attached where, and attaching or
//! detaching several disks in one operation (`attachDetachDataDisks`).

use crate::arm::{from_core, Arm, Want};
use crate::config::VmType;
use crate::error::AzureError;
use crate::params::Caching;
use crate::transport::{guarded, SendGuard, Unwanted};
use azure_core::Method;
use azure_mgmt_compute::package_2024_07_01::models;
use std::sync::Arc;
use tracing::info;

pub const VM_API_VERSION: &str = "2024-07-01";

/// A VM that can hold data disks.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum VmRef {
    /// Standalone or availability-set VM (also a flexible scale set's VM).
    Standard {
        resource_group: String,
        name: String,
    },
    /// A uniform scale set's instance.
    ScaleSet {
        resource_group: String,
        scale_set: String,
        instance_id: String,
    },
}

impl VmRef {
    pub fn id(&self, subscription: &str) -> String {
        match self {
            VmRef::Standard {
                resource_group,
                name,
            } => format!(
                "/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/Microsoft.Compute/virtualMachines/{name}"
            ),
            VmRef::ScaleSet {
                resource_group,
                scale_set,
                instance_id,
            } => format!(
                "/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/Microsoft.Compute/virtualMachineScaleSets/{scale_set}/virtualMachines/{instance_id}"
            ),
        }
    }

    /// The VM's name as Azure shows it (`<scale set>_<instance id>` for scale-set instances).
    pub fn name(&self) -> String {
        match self {
            VmRef::Standard { name, .. } => name.clone(),
            VmRef::ScaleSet {
                scale_set,
                instance_id,
                ..
            } => format!("{scale_set}_{instance_id}"),
        }
    }

    /// The VMs a Kubernetes node may be, most likely first (no I/O).
    ///
    /// - `standard`, `vmssflex`: the node name is the VM name.
    /// - `vmss`: AKS names nodes `<scale set><instance id as 6 base-36 digits>`; clusters may mix
    ///   in availability-set VMs, so the plain VM name is the second guess.
    pub fn candidates_for_node(node: &str, vm_type: VmType, resource_group: &str) -> Vec<VmRef> {
        let standard = VmRef::Standard {
            resource_group: resource_group.to_string(),
            name: node.to_string(),
        };
        match (vm_type, split_scale_set_node(node)) {
            (VmType::Vmss, Some((scale_set, instance_id))) => vec![
                VmRef::ScaleSet {
                    resource_group: resource_group.to_string(),
                    scale_set,
                    instance_id,
                },
                standard,
            ],
            _ => vec![standard],
        }
    }
}

/// `aks-nodepool1-12345678-vmss00000a` → (`aks-nodepool1-12345678-vmss`, `10`).
pub fn split_scale_set_node(node: &str) -> Option<(String, String)> {
    if node.len() <= 6 || !node.is_ascii() {
        return None;
    }
    let (prefix, suffix) = node.split_at(node.len() - 6);
    let id = u64::from_str_radix(&suffix.to_ascii_lowercase(), 36).ok()?;
    let suffix_ok = suffix
        .chars()
        .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase());
    (suffix_ok && !prefix.is_empty()).then(|| (prefix.to_string(), id.to_string()))
}

/// A data disk as a VM lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachedDisk {
    pub lun: i32,
    /// The managed disk's resource ID.
    pub disk_id: String,
    pub name: String,
    pub caching: Option<String>,
    /// Detach asked for and not finished.
    pub to_be_detached: bool,
}

/// A VM's data disks and what matters about the VM for attaching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmDisks {
    pub vm: VmRef,
    pub disks: Vec<AttachedDisk>,
    pub zone: Option<String>,
    pub vm_size: Option<String>,
    pub provisioning_state: Option<String>,
}

impl VmDisks {
    /// From the parts a VM and a scale-set VM share (their models differ around them).
    fn from_parts(
        vm: &VmRef,
        zones: &[String],
        sku: Option<String>,
        hardware: Option<models::HardwareProfile>,
        provisioning_state: Option<String>,
        storage: Option<models::StorageProfile>,
    ) -> VmDisks {
        VmDisks {
            vm: vm.clone(),
            zone: zones.first().cloned(),
            vm_size: sku.or_else(|| vm_size_name(hardware.as_ref())),
            provisioning_state,
            disks: attached_disks(storage),
        }
    }

    /// The disk's entry, compared by ID case-insensitively as ARM does.
    pub fn find(&self, disk_id: &str) -> Option<&AttachedDisk> {
        self.disks
            .iter()
            .find(|d| d.disk_id.eq_ignore_ascii_case(disk_id))
    }
}

fn attached_disks(profile: Option<models::StorageProfile>) -> Vec<AttachedDisk> {
    profile
        .map(|p| p.data_disks)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|d| {
            let disk_id = d.managed_disk.as_ref()?.sub_resource.id.clone()?;
            Some(AttachedDisk {
                lun: d.lun,
                name: d
                    .name
                    .clone()
                    .unwrap_or_else(|| disk_id.rsplit('/').next().unwrap_or_default().to_string()),
                disk_id,
                caching: d
                    .caching
                    .as_ref()
                    .and_then(|c| serde_json::to_value(c).ok())
                    .and_then(|v| v.as_str().map(str::to_string)),
                to_be_detached: d.to_be_detached.unwrap_or(false),
            })
        })
        .collect()
}

fn vm_size_name(h: Option<&models::HardwareProfile>) -> Option<String> {
    h.and_then(|h| h.vm_size.as_ref())
        .and_then(|s| serde_json::to_value(s).ok())
        .and_then(|v| v.as_str().map(str::to_string))
}

/// One disk to attach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachSpec {
    pub disk_id: String,
    /// `None`: the lowest LUN free on the VM (chosen by [`plan_change`]).
    pub lun: Option<i32>,
    pub caching: Caching,
}

/// What has to be sent, after looking at the VM as it is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChangePlan {
    pub attach: Vec<AttachSpec>,
    pub detach: Vec<String>,
}

impl ChangePlan {
    pub fn is_empty(&self) -> bool {
        self.attach.is_empty() && self.detach.is_empty()
    }
}

/// LUNs a VM can have: Azure's data-disk LUNs are 0–63 on every size (the size's disk count
/// limits how many are used, and Azure refuses the attach beyond it).
const LUNS: std::ops::Range<i32> = 0..64;

/// Drops what is already so: disks attached already (to this VM) and detaches of disks this VM
/// does not have. A disk this VM is still detaching cannot be attached again yet (no I/O).
///
/// Every attach gets its LUN here — the lowest not in use on the VM (a disk being detached still
/// holds its LUN) — so that Azure's "Succeeded" alone says where each disk is: no read of the
/// VM after the operation. Azure refuses a LUN another writer took meanwhile (`LunConflict`).
pub fn plan_change(
    current: &VmDisks,
    attach: &[AttachSpec],
    detach: &[String],
) -> Result<ChangePlan, AzureError> {
    let mut plan = ChangePlan::default();
    for a in attach {
        match current.find(&a.disk_id) {
            Some(d) if d.to_be_detached => {
                return Err(AzureError::BeingDetached {
                    message: format!(
                    "disk {} is being detached from VM {}; attach it again when that has finished",
                    d.name,
                    current.vm.name()
                ),
                })
            }
            Some(_) => {}
            None => {
                if !plan
                    .attach
                    .iter()
                    .any(|p: &AttachSpec| p.disk_id.eq_ignore_ascii_case(&a.disk_id))
                {
                    plan.attach.push(a.clone());
                }
            }
        }
    }
    for id in detach {
        if current.find(id).is_some_and(|d| !d.to_be_detached)
            && !plan.detach.iter().any(|p| p.eq_ignore_ascii_case(id))
        {
            plan.detach.push(id.clone());
        }
    }
    let mut taken: Vec<i32> = current.disks.iter().map(|d| d.lun).collect();
    taken.extend(plan.attach.iter().filter_map(|a| a.lun));
    for a in plan.attach.iter_mut().filter(|a| a.lun.is_none()) {
        a.lun = LUNS.clone().find(|l| !taken.contains(l));
        taken.extend(a.lun);
    }
    Ok(plan)
}

impl VmDisks {
    /// The VM as Azure's success of `plan` leaves it, when every attach in it has its LUN;
    /// `None` when Azure chose some LUN (then only a read of the VM tells).
    pub fn after(&self, plan: &ChangePlan) -> Option<VmDisks> {
        let mut after = self.clone();
        after.disks.retain(|d| {
            !plan
                .detach
                .iter()
                .any(|id| id.eq_ignore_ascii_case(&d.disk_id))
        });
        for a in &plan.attach {
            after.disks.push(AttachedDisk {
                lun: a.lun?,
                name: a.disk_id.rsplit('/').next().unwrap_or_default().to_string(),
                disk_id: a.disk_id.clone(),
                caching: Some(a.caching.as_str().to_string()),
                to_be_detached: false,
            });
        }
        Some(after)
    }
}

/// Whether the VM shows the change done: every attach listed (and not leaving), every detach gone.
pub fn change_done(current: &VmDisks, attach: &[AttachSpec], detach: &[String]) -> bool {
    attach
        .iter()
        .all(|a| current.find(&a.disk_id).is_some_and(|d| !d.to_be_detached))
        && detach.iter().all(|id| current.find(id).is_none())
}

impl Arm {
    /// The VM's data disks, fresh from Azure.
    pub async fn vm_disks(&self, vm: &VmRef) -> Result<VmDisks, AzureError> {
        let not_found = |e: AzureError| match e {
            AzureError::NotFound { message } => AzureError::NotFound {
                message: format!("VM {} ({message})", vm.name()),
            },
            other => other,
        };
        match vm {
            VmRef::Standard {
                resource_group,
                name,
            } => {
                let v: models::VirtualMachine = self
                    .client
                    .virtual_machines_client()
                    .get(resource_group, name, &self.subscription)
                    .send()
                    .await
                    .map_err(|e| not_found(from_core(e)))?
                    .into_body()
                    .await
                    .map_err(from_core)?;
                let p = v.properties.unwrap_or_default();
                Ok(VmDisks::from_parts(
                    vm,
                    &v.zones,
                    None,
                    p.hardware_profile,
                    p.provisioning_state,
                    p.storage_profile,
                ))
            }
            VmRef::ScaleSet {
                resource_group,
                scale_set,
                instance_id,
            } => {
                let v: models::VirtualMachineScaleSetVm = self
                    .client
                    .virtual_machine_scale_set_v_ms_client()
                    .get(resource_group, scale_set, instance_id, &self.subscription)
                    .send()
                    .await
                    .map_err(|e| not_found(from_core(e)))?
                    .into_body()
                    .await
                    .map_err(from_core)?;
                let p = v.properties.unwrap_or_default();
                let sku = v.sku.and_then(|s| s.name);
                Ok(VmDisks::from_parts(
                    vm,
                    &v.zones,
                    sku,
                    p.hardware_profile,
                    p.provisioning_state,
                    p.storage_profile,
                ))
            }
        }
    }

    /// The node's VM and its data disks. Tries the names the node may have (see
    /// [`VmRef::candidates_for_node`]); a node whose VM is gone is `NotFound`.
    pub async fn node_vm(&self, node: &str) -> Result<VmDisks, AzureError> {
        let candidates = VmRef::candidates_for_node(node, self.vm_type, &self.resource_group);
        let mut tried = Vec::new();
        for vm in candidates {
            match self.vm_disks(&vm).await {
                Err(AzureError::NotFound { .. }) => tried.push(vm.name()),
                other => return other,
            }
        }
        Err(AzureError::NotFound {
            message: format!(
                "no VM for node {node} in resource group {} (looked for {})",
                self.resource_group,
                tried.join(", ")
            ),
        })
    }

    /// Attaches and detaches disks on one VM in one Azure operation, after a fresh read of the
    /// VM so that what is already so is not asked again. Returns the VM's disks afterwards.
    pub async fn attach_detach(
        &self,
        vm: &VmRef,
        attach: &[AttachSpec],
        detach: &[String],
    ) -> Result<VmDisks, AzureError> {
        self.change_data_disks(vm, Known::Unknown, attach, detach, everyone())
            .await
    }

    /// Attaches and detaches disks on one VM in one operation. The VM returned is what Azure did
    /// for every disk asked about: a disk the operation changed is where Azure's success of
    /// exactly that change put it; any other is as a read of the VM made during this call shows
    /// it — never as an older view says.
    ///
    /// `known` is a read of the VM. A [`Known::Fresh`] one, made after every request of the change
    /// was made, plans and answers like a read of this call's own. A [`Known::View`], which the
    /// caller believes current, plans the operation only when every request needs doing in it
    /// ([`plannable`]); a request it shows done already (or not
    /// doable yet) may be contradicted by another writer since — another control-plane host — so
    /// the VM is read then. A change by another writer that `known` misses makes Azure refuse the
    /// plan (the disk already there, gone, or its LUN taken): the VM is read, the change counts
    /// as done if the read shows it, and is planned again from that read once.
    ///
    /// `wanted` is asked before every attempt to send, the transport's retries included: a
    /// request no longer wanted (its requester died) is dropped and the rest sent without it —
    /// planned from a fresh read when an earlier attempt went out, as it may have been carried
    /// out. With nobody left, nothing is sent ([`AzureError::Abandoned`]).
    pub async fn change_data_disks(
        &self,
        vm: &VmRef,
        known: Known,
        attach: &[AttachSpec],
        detach: &[String],
        wanted: Wanted,
    ) -> Result<VmDisks, AzureError> {
        let mut base = match known {
            Known::View(k) | Known::Fresh(k) if &k.vm != vm => Known::Unknown,
            k => k,
        };
        let mut replanned = false;
        // Judged on every request asked, wanted or not: one the view shows done already is
        // answered from a fresh read, even when it is dropped from what is sent.
        let (all_attach, all_detach) = (attach, detach);
        loop {
            let attach: Vec<AttachSpec> = attach
                .iter()
                .filter(|a| wanted(&a.disk_id))
                .cloned()
                .collect();
            let detach: Vec<String> = detach.iter().filter(|id| wanted(id)).cloned().collect();
            if attach.is_empty() && detach.is_empty() {
                return Err(AzureError::Abandoned {
                    message: format!("every requester of the change on VM {} is gone", vm.name()),
                });
            }
            let (current, fresh) = match std::mem::replace(&mut base, Known::Unknown) {
                Known::View(k) if plannable(&k, all_attach, all_detach) => (k, false),
                Known::Fresh(k) => (k, true),
                _ => (self.vm_disks(vm).await?, true),
            };
            let plan = plan_change(&current, &attach, &detach)?;
            if plan.is_empty() {
                // Only a fresh read shows everything done already (a view that did would not
                // be plannable).
                return Ok(current);
            }
            info!(vm = %vm.name(), attach = plan.attach.len(), detach = plan.detach.len(), fresh, "changing data disks");
            let guard = {
                let wanted = wanted.clone();
                let ids: Vec<String> = plan
                    .attach
                    .iter()
                    .map(|a| a.disk_id.clone())
                    .chain(plan.detach.iter().cloned())
                    .collect();
                SendGuard(Arc::new(move || ids.iter().all(|id| wanted(id))))
            };
            match self.send_attach_detach(vm, &plan, guard).await {
                Ok(()) => {
                    return match current.after(&plan) {
                        Some(after) => Ok(after),
                        None => self.vm_disks(vm).await,
                    }
                }
                Err(Sent::Unwanted { attempts }) => {
                    info!(vm = %vm.name(), attempts, "a requester of the change is gone; sending the rest without it");
                    base = match (attempts, fresh) {
                        (0, true) => Known::Fresh(current),
                        (0, false) => Known::View(current),
                        _ => Known::Unknown,
                    };
                }
                Err(Sent::Failed(
                    e @ (AzureError::Transient { .. }
                    | AzureError::InvalidParameter { .. }
                    | AzureError::LunConflict { .. }),
                )) => {
                    // A retried request whose first try went through is refused as "already
                    // attached" (or a LUN clash with itself); a lost answer is "transient"; a
                    // plan over a view another writer made stale is refused the same ways.
                    let after = self.vm_disks(vm).await?;
                    if change_done(&after, &plan.attach, &plan.detach) {
                        info!(vm = %vm.name(), error = %e, "the VM shows the change done; the error was about a request that went through");
                        return Ok(after);
                    }
                    if replanned || matches!(e, AzureError::Transient { .. }) {
                        return Err(e);
                    }
                    info!(vm = %vm.name(), error = %e, "Azure refused the plan; planning again from a fresh read");
                    replanned = true;
                    base = Known::Fresh(after);
                }
                Err(Sent::Failed(e)) => return Err(e),
            }
        }
    }

    /// One `attachDetachDataDisks`, followed to its end. The plan names every LUN, so success
    /// is all that is needed of Azure's answer.
    async fn send_attach_detach(
        &self,
        vm: &VmRef,
        plan: &ChangePlan,
        guard: SendGuard,
    ) -> Result<(), Sent> {
        let mut request = models::AttachDetachDataDisksRequest::new();
        request.data_disks_to_attach = plan
            .attach
            .iter()
            .map(|a| {
                let mut d = models::DataDisksToAttach::new(a.disk_id.clone());
                d.lun = a.lun;
                d.caching = Some(match a.caching {
                    Caching::None => models::Caching::None,
                    Caching::ReadOnly => models::Caching::ReadOnly,
                    Caching::ReadWrite => models::Caching::ReadWrite,
                });
                d
            })
            .collect();
        request.data_disks_to_detach = plan
            .detach
            .iter()
            .map(|id| models::DataDisksToDetach::new(id.clone()))
            .collect();
        let url = self
            .url(
                &format!("{}/attachDetachDataDisks", vm.id(&self.subscription)),
                VM_API_VERSION,
            )
            .map_err(Sent::Failed)?;
        let send = async {
            match vm {
                VmRef::Standard {
                    resource_group,
                    name,
                } => self
                    .client
                    .virtual_machines_client()
                    .attach_detach_data_disks(resource_group, name, request, &self.subscription)
                    .send()
                    .await
                    .map(|r| r.into_raw_response()),
                VmRef::ScaleSet {
                    resource_group,
                    scale_set,
                    instance_id,
                } => self
                    .client
                    .virtual_machine_scale_set_v_ms_client()
                    .attach_detach_data_disks(
                        resource_group,
                        scale_set,
                        instance_id,
                        request,
                        &self.subscription,
                    )
                    .send()
                    .await
                    .map(|r| r.into_raw_response()),
            }
        };
        // Only the POST is guarded: once Azure accepted it, it is Azure's to finish.
        let sent = guarded(guard, send).await;
        if let Some(u) = sent
            .as_ref()
            .err()
            .and_then(|e| e.downcast_ref::<Unwanted>())
        {
            return Err(Sent::Unwanted {
                attempts: u.attempts,
            });
        }
        self.write(sent, Method::Post, &url, Want::Outcome)
            .await
            .map(|_| ())
            .map_err(Sent::Failed)
    }
}

/// Who still wants the change of a disk (by resource ID); asked before every attempt to send.
pub type Wanted = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Every request wanted (a caller that lives as long as its call).
pub fn everyone() -> Wanted {
    Arc::new(|_| true)
}

/// What a change is planned from.
#[derive(Debug, Clone)]
pub enum Known {
    /// Nothing: read the VM.
    Unknown,
    /// The caller's read, perhaps older than another writer's change.
    View(VmDisks),
    /// A read made during this call, after every request of the change was made: it may answer
    /// a request it shows done already.
    Fresh(VmDisks),
}

/// How one send of a change ended.
enum Sent {
    /// Not sent (again): a requester is gone; `attempts` went out before.
    Unwanted {
        attempts: u32,
    },
    Failed(AzureError),
}

/// Whether `view` can plan every request: each attach names a disk the VM does not list, each
/// detach one the VM lists and is not detaching already (no I/O). A request the view shows done
/// (or not doable yet) is answered only from a fresh read of the VM.
pub fn plannable(view: &VmDisks, attach: &[AttachSpec], detach: &[String]) -> bool {
    attach.iter().all(|a| view.find(&a.disk_id).is_none())
        && detach
            .iter()
            .all(|id| view.find(id).is_some_and(|d| !d.to_be_detached))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aks_node_names_split_into_scale_set_and_instance() {
        assert_eq!(
            split_scale_set_node("aks-nodepool1-31415926-vmss000000"),
            Some(("aks-nodepool1-31415926-vmss".into(), "0".into()))
        );
        assert_eq!(
            split_scale_set_node("aks-np-vmss00000a"),
            Some(("aks-np-vmss".into(), "10".into()))
        );
        assert_eq!(split_scale_set_node("k8s-agentpool1-31415926-0"), None);
        assert_eq!(split_scale_set_node("vm0001"), None);
        assert_eq!(split_scale_set_node("aks-np-vmss00000A"), None);
    }

    #[test]
    fn candidates_follow_vm_type() {
        let c = VmRef::candidates_for_node("aks-np-vmss000003", VmType::Vmss, "rg");
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].name(), "aks-np-vmss_3");
        assert_eq!(c[1].name(), "aks-np-vmss000003");
        assert_eq!(
            c[0].id("s"),
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/aks-np-vmss/virtualMachines/3"
        );
        let c = VmRef::candidates_for_node("aks-np-vmss000003", VmType::Standard, "rg");
        assert_eq!(
            c,
            vec![VmRef::Standard {
                resource_group: "rg".into(),
                name: "aks-np-vmss000003".into()
            }]
        );
        let c = VmRef::candidates_for_node("k8s-agentpool1-31415926-0", VmType::Vmss, "rg");
        assert_eq!(c.len(), 1);
    }

    fn vm_with(disks: &[(&str, i32, bool)]) -> VmDisks {
        VmDisks {
            vm: VmRef::Standard {
                resource_group: "rg".into(),
                name: "vm".into(),
            },
            disks: disks
                .iter()
                .map(|(id, lun, leaving)| AttachedDisk {
                    lun: *lun,
                    disk_id: id.to_string(),
                    name: id.rsplit('/').next().unwrap_or_default().into(),
                    caching: None,
                    to_be_detached: *leaving,
                })
                .collect(),
            zone: None,
            vm_size: None,
            provisioning_state: None,
        }
    }

    fn spec(id: &str) -> AttachSpec {
        AttachSpec {
            disk_id: id.into(),
            lun: None,
            caching: Caching::None,
        }
    }

    #[test]
    fn plans_skip_what_is_already_so() {
        let vm = vm_with(&[("/d/A", 0, false), ("/d/B", 1, false)]);
        let plan = plan_change(
            &vm,
            &[spec("/d/a"), spec("/d/c"), spec("/d/C")],
            &["/d/b".into(), "/d/z".into()],
        )
        .expect("plan");
        // B's LUN stays taken until its detach is over: c gets the lowest free one.
        let c_at_2 = AttachSpec {
            lun: Some(2),
            ..spec("/d/c")
        };
        assert_eq!(plan.attach, vec![c_at_2]);
        assert_eq!(plan.detach, vec!["/d/b".to_string()]);
        let nothing = plan_change(&vm, &[spec("/d/A")], &[]).expect("plan");
        assert!(nothing.is_empty());
    }

    #[test]
    fn luns_fill_gaps_and_success_alone_says_where_disks_are() {
        let vm = vm_with(&[("/d/A", 0, false), ("/d/B", 2, true), ("/d/C", 4, false)]);
        let asked = AttachSpec {
            lun: Some(1),
            ..spec("/d/asked")
        };
        let plan =
            plan_change(&vm, &[spec("/d/x"), asked, spec("/d/y")], &["/d/C".into()]).expect("plan");
        let luns: Vec<_> = plan.attach.iter().map(|a| a.lun).collect();
        assert_eq!(luns, [Some(3), Some(1), Some(5)]);
        let after = vm.after(&plan).expect("every LUN chosen");
        assert!(change_done(&after, &plan.attach, &plan.detach));
        assert_eq!(after.find("/d/X").map(|d| d.lun), Some(3));
        assert!(after.find("/d/c").is_none());
        // A VM with all 64 LUNs used: Azure decides (and refuses); only a read tells then.
        let full: Vec<(String, i32, bool)> =
            (0..64).map(|l| (format!("/d/{l}"), l, false)).collect();
        let full = vm_with(
            &full
                .iter()
                .map(|(id, l, b)| (id.as_str(), *l, *b))
                .collect::<Vec<_>>(),
        );
        let plan = plan_change(&full, &[spec("/d/x")], &[]).expect("plan");
        assert_eq!(plan.attach[0].lun, None);
        assert_eq!(full.after(&plan), None);
    }

    #[test]
    fn only_requests_that_need_doing_are_planned_from_a_view() {
        let view = vm_with(&[("/d/A", 0, false), ("/d/B", 1, true)]);
        assert!(plannable(&view, &[spec("/d/c")], &["/d/a".into()]));
        assert!(plannable(&view, &[], &[]));
        // Shown done already, or not doable yet: only a fresh read may answer.
        assert!(!plannable(&view, &[spec("/d/A")], &[]), "attached already");
        assert!(!plannable(&view, &[spec("/d/b")], &[]), "being detached");
        assert!(!plannable(&view, &[], &["/d/z".into()]), "not attached");
        assert!(
            !plannable(&view, &[], &["/d/B".into()]),
            "detaching already"
        );
        assert!(!plannable(&view, &[spec("/d/c")], &["/d/z".into()]));
    }

    #[test]
    fn attaching_a_disk_that_is_leaving_waits() {
        let vm = vm_with(&[("/d/A", 0, true)]);
        let e = plan_change(&vm, &[spec("/d/A")], &[]).expect_err("being detached");
        assert_eq!(e.label(), "being_detached");
        assert!(change_done(&vm, &[], &[]));
        assert!(!change_done(&vm, &[spec("/d/A")], &[]));
        assert!(!change_done(&vm, &[], &["/d/A".into()]));
    }
}
