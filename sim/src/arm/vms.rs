//! VMs and scale-set instances: reads, the classic whole-list update of `storageProfile.dataDisks`
//! (guarded by `etag`), and `attachDetachDataDisks` — all funnelled into one change validated the
//! way Azure does (one operation per VM, LUNs, data-disk limit, ownership, zones, caching).

use super::disks::CACHING_LIMIT_GB;
use super::errors::{busy, error, invalid, not_found, ArmResult};
use super::lro::{self, Began};
use super::route::Target;
use super::Call;
use crate::http::Response;
use crate::model::{key, parse_id, DataDisk, ErrorBody, OpKind, Vm, VmFinalBody, VmKind};
use crate::node::next_device_name;
use crate::simulator::Simulator;
use crate::store::State;
use serde_json::{json, Value};
use std::sync::Arc;

const MAX_LUN: i64 = 63;

#[derive(Debug, Clone)]
pub struct AttachRequest {
    pub disk_id: String,
    pub lun: Option<i64>,
    pub caching: Option<String>,
    pub write_accelerator: bool,
    pub delete_option: Option<String>,
}

#[derive(Debug, Clone)]
pub struct DetachRequest {
    pub disk_id: String,
    pub detach_option: Option<String>,
}

fn find_node(sim: &Simulator, state: &State, target: &Target) -> ArmResult<String> {
    let rg_ok = |rg: &str| rg.eq_ignore_ascii_case(&sim.world.resource_group);
    let found = state.vms.values().find(|vm| match (target, &vm.kind) {
        (
            Target::Vm { rg, name } | Target::VmAttachDetach { rg, name },
            VmKind::Standard { .. },
        ) => rg_ok(rg) && vm.name.eq_ignore_ascii_case(name),
        (
            Target::ScaleSetVm {
                rg,
                scale_set,
                instance,
            }
            | Target::ScaleSetVmAttachDetach {
                rg,
                scale_set,
                instance,
            },
            VmKind::ScaleSetInstance {
                scale_set: ss,
                instance_id,
            },
        ) => {
            rg_ok(rg) && ss.eq_ignore_ascii_case(scale_set) && instance_id.to_string() == *instance
        }
        _ => false,
    });
    found.map(|vm| vm.node.clone()).ok_or_else(|| match target {
        Target::ScaleSetVm {
            rg,
            scale_set,
            instance,
        }
        | Target::ScaleSetVmAttachDetach {
            rg,
            scale_set,
            instance,
        } => not_found(
            "virtualMachineScaleSets",
            rg,
            &format!("{scale_set}/virtualMachines/{instance}"),
        ),
        Target::Vm { rg, name } | Target::VmAttachDetach { rg, name } => {
            not_found("virtualMachines", rg, name)
        }
        _ => error(404, "NotFound", "no such virtual machine"),
    })
}

fn vm_json(sim: &Simulator, state: &State, vm: &Vm) -> Value {
    vm.to_json(&sim.world, &state.disks)
}

pub fn list(sim: &Simulator, rg: &str, scale_set: Option<&str>) -> ArmResult<Response> {
    let state = sim.lock();
    if !rg.eq_ignore_ascii_case(&sim.world.resource_group) {
        return Ok(Response::json(200, &json!({"value": []})));
    }
    let value: Vec<Value> = state
        .vms
        .values()
        .filter(|vm| match (&vm.kind, scale_set) {
            (VmKind::Standard { .. }, None) => true,
            (VmKind::ScaleSetInstance { scale_set: ss, .. }, Some(want)) => {
                ss.eq_ignore_ascii_case(want)
            }
            _ => false,
        })
        .map(|vm| vm_json(sim, &state, vm))
        .collect();
    if let Some(ss) = scale_set {
        if value.is_empty() {
            return Err(not_found("virtualMachineScaleSets", rg, ss));
        }
    }
    Ok(Response::json(200, &json!({ "value": value })))
}

pub fn get(sim: &Simulator, target: &Target) -> ArmResult<Response> {
    let state = sim.lock();
    let node = find_node(sim, &state, target)?;
    let vm = &state.vms[&node];
    Ok(Response::json(200, &vm_json(sim, &state, vm)).with_header("etag", vm.etag_header()))
}

pub fn attach_detach(
    sim: &Arc<Simulator>,
    call: &Call,
    body: Value,
    planted: Option<ErrorBody>,
) -> ArmResult<Response> {
    let target = &call.route.target;
    let attach: Vec<AttachRequest> = body
        .get("dataDisksToAttach")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|d| AttachRequest {
            disk_id: d["diskId"].as_str().unwrap_or_default().to_string(),
            lun: d.get("lun").and_then(Value::as_i64),
            caching: d.get("caching").and_then(Value::as_str).map(str::to_string),
            write_accelerator: d
                .get("writeAcceleratorEnabled")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            delete_option: d
                .get("deleteOption")
                .and_then(Value::as_str)
                .map(str::to_string),
        })
        .collect();
    let detach: Vec<DetachRequest> = body
        .get("dataDisksToDetach")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|d| DetachRequest {
            disk_id: d["diskId"].as_str().unwrap_or_default().to_string(),
            detach_option: d
                .get("detachOption")
                .and_then(Value::as_str)
                .map(str::to_string),
        })
        .collect();
    if attach.is_empty() && detach.is_empty() {
        return Err(invalid(
            "At least one of dataDisksToAttach and dataDisksToDetach must name a disk.",
        )
        .with_target("dataDisksToAttach"));
    }
    let mut state = sim.lock();
    let node = find_node(sim, &state, target)?;
    let began = start_change(
        sim,
        &mut state,
        &node,
        attach,
        detach,
        VmFinalBody::StorageProfile,
        planted,
    )?;
    sim.commit(&state)?;
    Ok(match began {
        Began::Done(result) => Response::json(200, &result.unwrap_or(Value::Null)),
        Began::Pending(op) => lro::with_headers(
            Response::empty(202),
            lro::accepted_headers(sim, &op, false, call.api_version),
        ),
    })
}

/// PUT or PATCH of a VM or scale-set instance: only `storageProfile.dataDisks` may change here.
pub fn update(
    sim: &Arc<Simulator>,
    call: &Call,
    body: Value,
    planted: Option<ErrorBody>,
) -> ArmResult<Response> {
    let (req, target) = (call.req, &call.route.target);
    let mut state = sim.lock();
    let node = find_node(sim, &state, target)?;
    let vm = state.vms[&node].clone();
    if let Some(m) = req.header("if-match") {
        if m != "*" && m != vm.etag_header() {
            return Err(error(
                412,
                "PreconditionFailed",
                format!(
                    "The specified precondition 'If-Match = {m}' failed: the VM's etag is now {}. Read it again and retry.",
                    vm.etag_header()
                ),
            ));
        }
    }
    if req.header("if-none-match") == Some("*") {
        return Err(error(
            412,
            "PreconditionFailed",
            "The specified precondition 'If-None-Match = *' failed: the VM exists.",
        ));
    }
    if let Some(loc) = body.get("location").and_then(Value::as_str) {
        if !loc
            .replace(' ', "")
            .eq_ignore_ascii_case(&sim.world.location)
        {
            return Err(error(
                409,
                "InvalidResourceLocation",
                format!(
                    "The VM '{}' exists in location '{}', not '{loc}'.",
                    vm.name, sim.world.location
                ),
            ));
        }
    }
    if let Some(size) = body
        .pointer("/properties/hardwareProfile/vmSize")
        .and_then(Value::as_str)
    {
        if !size.eq_ignore_ascii_case(&vm.vm_size) {
            return Err(error(
                409,
                "OperationNotAllowed",
                format!(
                    "The simulator does not resize VMs ('{}' is {}, not {size}).",
                    vm.name, vm.vm_size
                ),
            ));
        }
    }
    // Every write to a VM is an operation on it, a no-op too: Azure runs one at a time.
    if vm.busy.is_some() {
        return Err(busy("VM", &vm.name));
    }
    let Some(wanted) = body
        .pointer("/properties/storageProfile/dataDisks")
        .and_then(Value::as_array)
    else {
        // Nothing the simulator models changes (cloud-provider-azure's `{}` refresh among
        // them): the update succeeds as it is.
        return Ok(
            Response::json(200, &vm_json(sim, &state, &vm)).with_header("etag", vm.etag_header())
        );
    };
    let (attach, detach) = diff_data_disks(&vm, wanted)?;
    if attach.is_empty() && detach.is_empty() {
        return Ok(
            Response::json(200, &vm_json(sim, &state, &vm)).with_header("etag", vm.etag_header())
        );
    }
    let began = start_change(
        sim,
        &mut state,
        &node,
        attach,
        detach,
        VmFinalBody::VirtualMachine,
        planted,
    )?;
    sim.commit(&state)?;
    let vm = &state.vms[&node];
    let body = vm_json(sim, &state, vm);
    Ok(match began {
        Began::Done(_) => Response::json(200, &body).with_header("etag", vm.etag_header()),
        Began::Pending(op) => {
            let async_only = lro::accepted_headers(sim, &op, false, call.api_version)
                .into_iter()
                .filter(|(k, _)| *k == "azure-asyncoperation")
                .collect();
            lro::with_headers(Response::json(200, &body), async_only)
                .with_header("etag", vm.etag_header())
        }
    })
}

/// The classic way: the wanted list against what is attached. Entries marked `toBeDetached`, and
/// attached disks missing from the list, are detached; new `Attach` entries are attached.
fn diff_data_disks(
    vm: &Vm,
    wanted: &[Value],
) -> ArmResult<(Vec<AttachRequest>, Vec<DetachRequest>)> {
    let mut attach = Vec::new();
    let mut detach = Vec::new();
    let mut mentioned = Vec::new();
    for (i, d) in wanted.iter().enumerate() {
        let at = format!("properties.storageProfile.dataDisks[{i}]");
        let lun = d["lun"].as_i64().unwrap_or(-1);
        let option = d["createOption"].as_str().unwrap_or_default();
        let id = d.pointer("/managedDisk/id").and_then(Value::as_str);
        let existing = vm.data_disks.iter().find(|e| match id {
            Some(id) => e.disk_id.eq_ignore_ascii_case(id),
            None => e.lun == lun,
        });
        let to_be_detached = d
            .get("toBeDetached")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if let Some(e) = existing {
            mentioned.push(e.disk_key.clone());
            if e.lun != lun {
                return Err(error(
                    409,
                    "PropertyChangeNotAllowed",
                    "Changing property 'dataDisk.lun' is not allowed.",
                )
                .with_target(&format!("{at}.lun")));
            }
            if to_be_detached && !e.to_be_detached {
                detach.push(DetachRequest {
                    disk_id: e.disk_id.clone(),
                    detach_option: d
                        .get("detachOption")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                });
            }
            continue;
        }
        if to_be_detached {
            continue;
        }
        if !option.eq_ignore_ascii_case("Attach") {
            return Err(invalid(format!(
                "createOption '{option}' is not supported by this simulator: only existing managed disks are attached (createOption Attach)."
            ))
            .with_target(&format!("{at}.createOption")));
        }
        let Some(id) = id else {
            return Err(
                invalid("managedDisk.id is required to attach a managed disk.")
                    .with_target(&format!("{at}.managedDisk.id")),
            );
        };
        attach.push(AttachRequest {
            disk_id: id.to_string(),
            lun: Some(lun),
            caching: d.get("caching").and_then(Value::as_str).map(str::to_string),
            write_accelerator: d
                .get("writeAcceleratorEnabled")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            delete_option: d
                .get("deleteOption")
                .and_then(Value::as_str)
                .map(str::to_string),
        });
    }
    for e in &vm.data_disks {
        if !mentioned.contains(&e.disk_key) && !e.to_be_detached {
            detach.push(DetachRequest {
                disk_id: e.disk_id.clone(),
                detach_option: None,
            });
        }
    }
    Ok((attach, detach))
}

/// Validates a change against the VM and its disks as Azure would, then starts it.
fn start_change(
    sim: &Arc<Simulator>,
    state: &mut State,
    node: &str,
    attach: Vec<AttachRequest>,
    detach: Vec<DetachRequest>,
    final_body: VmFinalBody,
    planted: Option<ErrorBody>,
) -> ArmResult<Began> {
    let mut vm = state.vms[node].clone();
    if vm.busy.is_some() {
        return Err(busy("VM", &vm.name));
    }
    let mut detach_keys = Vec::new();
    for d in &detach {
        let entry = vm
            .data_disks
            .iter()
            .find(|e| e.disk_id.eq_ignore_ascii_case(&d.disk_id))
            .ok_or_else(|| {
                invalid(format!(
                    "Disk '{}' is not attached to VM '{}'.",
                    d.disk_id, vm.id
                ))
                .with_target("dataDisksToDetach")
            })?;
        detach_keys.push(entry.disk_key.clone());
    }
    let mut used_luns: Vec<i64> = vm
        .data_disks
        .iter()
        .filter(|e| !detach_keys.contains(&e.disk_key))
        .map(|e| e.lun)
        .collect();
    let max = crate::vm_sizes::max_data_disks(&vm.vm_size).unwrap_or(0) as usize;
    let remaining = vm.data_disks.len() - detach_keys.len();
    if remaining + attach.len() > max {
        return Err(error(
            409,
            "OperationNotAllowed",
            format!(
                "The maximum number of data disks allowed to be attached to a VM of this size is {max}. \
                 VM '{}' ({}) has {remaining} and {} more were requested.",
                vm.name,
                vm.vm_size,
                attach.len()
            ),
        )
        .with_target("dataDisks"));
    }
    let mut attach_keys = Vec::new();
    let mut new_entries = Vec::new();
    for a in &attach {
        let (sub, rg, _, name) = parse_id(&a.disk_id)
            .filter(|(_, _, kind, _)| kind.eq_ignore_ascii_case("disks"))
            .ok_or_else(|| {
                invalid(format!(
                    "'{}' is not a managed disk resource ID.",
                    a.disk_id
                ))
                .with_target("diskId")
            })?;
        let k = key(&rg, &name);
        let disk = state
            .disks
            .get(&k)
            .filter(|_| sub.eq_ignore_ascii_case(&sim.world.subscription))
            .ok_or_else(|| {
                error(
                    404,
                    "NotFound",
                    format!("Disk '{}' was not found.", a.disk_id),
                )
            })?;
        if attach_keys.contains(&k) {
            return Err(invalid(format!(
                "Disk '{}' is named twice in one request.",
                disk.name
            )));
        }
        if let Some(e) = vm.data_disks.iter().find(|e| e.disk_key == k) {
            if e.to_be_detached || detach_keys.contains(&k) {
                return Err(attach_while_detaching(&disk.name, &vm.name));
            }
            return Err(invalid(format!(
                "Disk '{}' is already attached to VM '{}' at LUN {}.",
                disk.name, vm.name, e.lun
            )));
        }
        if disk.provisioning_state != "Succeeded" {
            return Err(busy("disk", &disk.name));
        }
        if state.vms.values().any(|other| {
            other
                .data_disks
                .iter()
                .any(|e| e.disk_key == k && e.to_be_detached)
        }) {
            return Err(attach_while_detaching(&disk.name, &vm.name));
        }
        let limit = disk.max_shares.unwrap_or(1);
        if !disk.attached_to.is_empty() && limit <= 1 {
            return Err(error(
                409,
                "ConflictingUserInput",
                format!(
                    "Disk '{}' cannot be attached as the disk is already owned by VM '{}'.",
                    disk.id, disk.attached_to[0]
                ),
            ));
        }
        if disk.attached_to.len() as i64 >= limit {
            return Err(error(
                409,
                "OperationNotAllowed",
                format!(
                    "Shared disk '{}' is already attached to {} VMs, its maxShares: {}.",
                    disk.name,
                    disk.attached_to.len(),
                    disk.attached_to.join(", ")
                ),
            ));
        }
        if !disk.is_zrs() && disk.zones.first() != vm.zone.as_ref() {
            return Err(error(
                400,
                "BadRequest",
                format!(
                    "Disk {} cannot be attached to the VM because it is not in the same zone with the VM. VM zone: '{}'. Disk zone: '{}'.",
                    disk.id,
                    vm.zone.as_deref().unwrap_or(""),
                    disk.zones.first().map(String::as_str).unwrap_or("")
                ),
            ));
        }
        let caching = match a.caching.as_deref() {
            Some(c) => ["None", "ReadOnly", "ReadWrite"]
                .into_iter()
                .find(|v| v.eq_ignore_ascii_case(c))
                .unwrap_or("None")
                .to_string(),
            None if disk.sku.starts_with("Premium_") && disk.size_gb < CACHING_LIMIT_GB => {
                "ReadOnly".into()
            }
            None => "None".into(),
        };
        if caching != "None" && (disk.is_v2_class() || disk.size_gb >= CACHING_LIMIT_GB) {
            return Err(invalid(format!(
                "Caching '{caching}' is not supported for disk '{}' ({}, {} GB): disks of 4096 GB and more, \
                 PremiumV2_LRS and UltraSSD_LRS disks support caching None only.",
                disk.name, disk.sku, disk.size_gb
            ))
            .with_target("caching"));
        }
        if a.write_accelerator {
            return Err(invalid(format!(
                "Write Accelerator is not supported for VM size {}.",
                vm.vm_size
            ))
            .with_target("writeAcceleratorEnabled"));
        }
        let lun = match a.lun {
            Some(l) if !(0..=MAX_LUN).contains(&l) => {
                return Err(invalid(format!(
                    "LUN {l} is out of range: LUNs go from 0 to {MAX_LUN}."
                ))
                .with_target("lun"))
            }
            Some(l) if used_luns.contains(&l) => {
                return Err(
                    invalid(format!("A disk at LUN {l} already exists.")).with_target("dataDisks")
                )
            }
            Some(l) => l,
            None => (0..=MAX_LUN)
                .find(|l| !used_luns.contains(l))
                .ok_or_else(|| {
                    invalid("No free LUN is left on the VM.").with_target("dataDisks")
                })?,
        };
        used_luns.push(lun);
        attach_keys.push(k.clone());
        new_entries.push(DataDisk {
            lun,
            name: disk.name.clone(),
            disk_key: k,
            disk_id: disk.id.clone(),
            caching,
            write_accelerator: false,
            delete_option: a.delete_option.clone().unwrap_or_else(|| "Detach".into()),
            to_be_detached: false,
            detach_option: None,
        });
    }
    for (d, k) in detach.iter().zip(&detach_keys) {
        if let Some(e) = vm.data_disks.iter_mut().find(|e| &e.disk_key == k) {
            e.to_be_detached = true;
            e.detach_option = d.detach_option.clone();
        }
    }
    for k in &attach_keys {
        if let Some(disk) = state.disks.get_mut(k) {
            disk.attached_to.push(vm.id.clone());
        }
    }
    vm.data_disks.extend(new_entries);
    vm.provisioning_state = "Updating".into();
    vm.etag += 1;
    let kind = OpKind::VmDisks {
        node: node.to_string(),
        attach: attach_keys,
        detach: detach_keys,
        final_body,
    };
    state.vms.insert(node.to_string(), vm);
    let began = lro::begin(sim, state, kind, sim.timing().draw_vm_op(), planted)?;
    if let Began::Pending(op) = &began {
        if let Some(vm) = state.vms.get_mut(node) {
            vm.busy = Some(op.id.clone());
        }
    }
    Ok(began)
}

fn attach_while_detaching(disk: &str, vm: &str) -> ErrorBody {
    error(
        409,
        "AttachDiskWhileBeingDetached",
        format!(
            "Cannot attach data disk '{disk}' to virtual machine '{vm}' because the disk is currently being detached \
             or the last detach operation failed. Please wait until the disk is completely detached and then try again \
             or delete/detach the disk explicitly again."
        ),
    )
}

/// The end of an attach/detach operation: devices appear and disappear on the node.
pub fn finish_disks(
    sim: &Simulator,
    state: &mut State,
    node: &str,
    attach: &[String],
    detach: &[String],
    final_body: VmFinalBody,
    failure: Option<&ErrorBody>,
) -> ArmResult<Option<Value>> {
    let mut vm = state
        .vms
        .get(node)
        .cloned()
        .ok_or_else(|| error(500, "InternalExecutionError", "the VM vanished"))?;
    vm.busy = None;
    vm.provisioning_state = "Succeeded".into();
    vm.etag += 1;
    let now = Simulator::now();
    let root = sim.store.node_root(node);
    let mut failed: Option<ErrorBody> = None;
    let mut undo_attach: Vec<String> = Vec::new();
    if failure.is_some() {
        undo_attach.extend(attach.iter().cloned());
        for e in vm
            .data_disks
            .iter_mut()
            .filter(|e| detach.contains(&e.disk_key))
        {
            e.to_be_detached = false;
            e.detach_option = None;
        }
    } else {
        for k in detach {
            let Some(pos) = vm.data_disks.iter().position(|e| &e.disk_key == k) else {
                continue;
            };
            let entry = vm.data_disks.remove(pos);
            if let Some(dev) = vm.devices.remove(&entry.lun) {
                if let Err(e) = sim.nodes.unplug(node, &root, entry.lun, &dev) {
                    tracing::warn!("unplugging LUN {} of {node}: {e}", entry.lun);
                }
            }
            if let Some(disk) = state.disks.get_mut(k) {
                disk.attached_to.retain(|id| id != &vm.id);
                disk.last_ownership_update = Some(now);
            }
        }
        for k in attach {
            let Some(entry) = vm.data_disks.iter().find(|e| &e.disk_key == k).cloned() else {
                continue;
            };
            let Some(disk) = state.disks.get_mut(k) else {
                continue;
            };
            let dev = next_device_name(vm.devices.values());
            match sim.nodes.plug(
                node,
                &root,
                entry.lun,
                &dev,
                &sim.store.disk_file(&disk.unique_id),
            ) {
                Ok(()) => {
                    vm.devices.insert(entry.lun, dev);
                    disk.last_ownership_update = Some(now);
                }
                Err(e) => {
                    undo_attach.push(k.clone());
                    failed = Some(error(
                        500,
                        "InternalExecutionError",
                        format!("attaching {} failed on the host: {e}", disk.name),
                    ));
                }
            }
        }
    }
    for k in &undo_attach {
        vm.data_disks.retain(|e| &e.disk_key != k);
        if let Some(disk) = state.disks.get_mut(k) {
            disk.attached_to.retain(|id| id != &vm.id);
        }
    }
    state.vms.insert(node.to_string(), vm.clone());
    if let Some(e) = failed {
        return Err(e);
    }
    Ok(Some(match final_body {
        VmFinalBody::StorageProfile => vm.storage_profile(&state.disks),
        VmFinalBody::VirtualMachine => vm_json(sim, state, &vm),
    }))
}
