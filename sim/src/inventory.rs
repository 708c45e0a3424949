//! Bringing the state in line with the world at start: a VM for every node, and the devices of every
//! attached disk back on its node (after a restart the loop devices of the last run are gone).

use crate::model::{resource_id, Vm, VmKind};
use crate::node::NodeError;
use crate::simulator::{Simulator, StartError};
use crate::store::State;
use crate::world::{Placement, World};

pub fn reconcile_vms(world: &World, state: &mut State) {
    for spec in &world.nodes {
        let node = spec.node_name();
        if state.vms.contains_key(&node) {
            continue;
        }
        let (id, kind) = match &spec.placement {
            Placement::AvailabilitySet { availability_set } => (
                resource_id(
                    &world.subscription,
                    &world.resource_group,
                    "virtualMachines",
                    &spec.vm_name(),
                ),
                VmKind::Standard {
                    availability_set: availability_set.clone(),
                },
            ),
            Placement::ScaleSet {
                scale_set,
                instance_id,
            } => (
                resource_id(
                    &world.subscription,
                    &world.resource_group,
                    "virtualMachineScaleSets",
                    &format!("{scale_set}/virtualMachines/{instance_id}"),
                ),
                VmKind::ScaleSetInstance {
                    scale_set: scale_set.clone(),
                    instance_id: *instance_id,
                },
            ),
        };
        state.vms.insert(
            node.clone(),
            Vm {
                node,
                name: spec.vm_name(),
                id,
                kind,
                vm_size: spec.vm_size.clone(),
                zone: spec.zone.clone(),
                vm_id: uuid::Uuid::new_v4().to_string(),
                system_principal_id: spec
                    .system_assigned_identity
                    .then(|| uuid::Uuid::new_v4().to_string()),
                data_disks: Vec::new(),
                provisioning_state: "Succeeded".into(),
                etag: 1,
                busy: None,
                time_created: Simulator::now(),
                devices: Default::default(),
            },
        );
    }
}

pub fn restore_devices(sim: &Simulator) -> Result<(), StartError> {
    let state = sim.lock();
    for disk in state.disks.values() {
        sim.nodes
            .release_stale(&sim.store.disk_file(&disk.unique_id))?;
    }
    for vm in state.vms.values() {
        let root = sim.store.node_root(&vm.node);
        sim.nodes.prepare(&root)?;
        for (lun, dev) in &vm.devices {
            let Some(entry) = vm.data_disks.iter().find(|d| d.lun == *lun) else {
                continue;
            };
            let Some(disk) = state.disks.get(&entry.disk_key) else {
                continue;
            };
            let file = sim.store.disk_file(&disk.unique_id);
            sim.nodes
                .plug(&vm.node, &root, *lun, dev, &file)
                .map_err(|e: NodeError| StartError::Node(e))?;
        }
    }
    Ok(())
}
