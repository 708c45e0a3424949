//! Scale sets themselves (`VirtualMachineScaleSets_List`, `_Get`): read-only, made from the world's
//! scale-set instances. cloud-provider-azure reads them to map nodes to scale sets and to learn
//! their orchestration mode before it touches an instance's disks.

use super::errors::{not_found, ArmResult};
use crate::http::Response;
use crate::model::{rfc3339, Vm, VmKind};
use crate::simulator::Simulator;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub fn list(sim: &Simulator, rg: &str) -> ArmResult<Response> {
    let value: Vec<Value> = if rg.eq_ignore_ascii_case(&sim.world.resource_group) {
        names(sim)
            .iter()
            .filter_map(|name| render(sim, name))
            .collect()
    } else {
        Vec::new()
    };
    Ok(Response::json(200, &json!({ "value": value })))
}

pub fn get(sim: &Simulator, rg: &str, name: &str) -> ArmResult<Response> {
    let found = rg
        .eq_ignore_ascii_case(&sim.world.resource_group)
        .then(|| render(sim, name))
        .flatten();
    found
        .map(|body| Response::json(200, &body))
        .ok_or_else(|| not_found("virtualMachineScaleSets", rg, name))
}

/// The scale sets of the world, each once, in the order their first instance appears.
fn names(sim: &Simulator) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for node in &sim.world.nodes {
        if let crate::world::Placement::ScaleSet { scale_set, .. } = &node.placement {
            if !out.iter().any(|s| s.eq_ignore_ascii_case(scale_set)) {
                out.push(scale_set.clone());
            }
        }
    }
    out
}

/// The scale set `name` as ARM answers it (a Uniform scale set of its instances), if it exists.
fn render(sim: &Simulator, name: &str) -> Option<Value> {
    let state = sim.lock();
    let instances: Vec<&Vm> = state
        .vms
        .values()
        .filter(|vm| {
            matches!(&vm.kind, VmKind::ScaleSetInstance { scale_set, .. }
            if scale_set.eq_ignore_ascii_case(name))
        })
        .collect();
    let first = instances.first()?;
    let VmKind::ScaleSetInstance { scale_set, .. } = &first.kind else {
        return None;
    };
    let w = &sim.world;
    let id = format!(
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/virtualMachineScaleSets/{scale_set}",
        w.subscription, w.resource_group
    );
    let mut zones: Vec<String> = instances.iter().filter_map(|v| v.zone.clone()).collect();
    zones.sort();
    zones.dedup();
    let created = instances
        .iter()
        .map(|v| v.time_created)
        .min()
        .unwrap_or(first.time_created);
    // The instances' image and OS disk are the scale set's model (Vm::storage_profile).
    let instance_profile = first.storage_profile(&state.disks);
    let mut os_disk = json!({
        "osType": "Linux",
        "createOption": "FromImage",
        "caching": "ReadWrite",
        "managedDisk": {"storageAccountType": "Premium_LRS"},
        "diskSizeGB": 128,
    });
    if let Some(d) = instance_profile["osDisk"]["deleteOption"].as_str() {
        os_disk["deleteOption"] = json!(d);
    }
    let mut ss = json!({
        "id": id,
        "name": scale_set,
        "type": "Microsoft.Compute/virtualMachineScaleSets",
        "location": w.location,
        // Instances may differ in size in a world file; the scale set names its first's.
        "sku": {"name": first.vm_size, "tier": "Standard", "capacity": instances.len()},
        "identity": {
            "type": "UserAssigned",
            "userAssignedIdentities": w.user_assigned_identities(),
        },
        "properties": {
            "singlePlacementGroup": false,
            "orchestrationMode": "Uniform",
            "upgradePolicy": {"mode": "Manual"},
            "overprovision": false,
            "virtualMachineProfile": {
                "osProfile": {
                    "computerNamePrefix": scale_set,
                    "adminUsername": "azureuser",
                    "linuxConfiguration": {"disablePasswordAuthentication": true},
                },
                "storageProfile": {
                    "imageReference": instance_profile["imageReference"].clone(),
                    "osDisk": os_disk,
                },
            },
            "provisioningState": "Succeeded",
            "uniqueId": stable_uuid(&id),
            "timeCreated": rfc3339(created),
        },
    });
    if !zones.is_empty() {
        ss["zones"] = json!(zones);
    }
    Some(ss)
}

/// A UUID-shaped identifier that stays the same for the same resource ID across restarts.
fn stable_uuid(of: &str) -> String {
    let h = Sha256::digest(of.to_ascii_lowercase().as_bytes());
    let hex: String = h.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::stable_uuid;

    #[test]
    fn unique_id_is_stable_and_uuid_shaped() {
        let a = stable_uuid("/subscriptions/s/resourceGroups/rg/x");
        assert_eq!(a, stable_uuid("/SUBSCRIPTIONS/s/resourcegroups/RG/X"));
        assert_ne!(a, stable_uuid("/subscriptions/s/resourceGroups/rg/y"));
        let parts: Vec<usize> = a.split('-').map(str::len).collect();
        assert_eq!(parts, vec![8, 4, 4, 4, 12]);
    }
}
