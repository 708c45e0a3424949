//! `change_data_disks`: what it answers is what Azure did, and it sends nothing nobody wants.

mod common;

use common::*;
use flexdisk_azure::vms::{Known, Wanted};
use flexdisk_azure::{Arm, AttachSpec, AzureError, Caching, DiskParams, DiskSpec};
use std::sync::Arc;

fn disk(rt: &tokio::runtime::Runtime, arm: &Arm, name: &str) -> String {
    let p = DiskParams::parse([]).expect("params");
    let spec = DiskSpec::from_params(&p, name, 1, None, &arm.resource_group, &arm.location);
    rt.block_on(arm.create_disk(&spec)).expect("disk").id
}

fn spec(id: &str) -> AttachSpec {
    AttachSpec {
        disk_id: id.to_string(),
        lun: None,
        caching: Caching::None,
    }
}

#[test]
fn a_change_nobody_wants_is_not_sent() {
    let sim = sim(&[]);
    let rt = runtime();
    let arm = connect(&rt, &control_plane_config(&sim));
    let a = disk(&rt, &arm, "pvc-unwanted");
    let vm = rt.block_on(arm.node_vm(AS_A)).expect("vm");
    reset_counters(&sim);
    let nobody: Wanted = Arc::new(|_| false);
    match rt.block_on(arm.change_data_disks(
        &vm.vm,
        Known::View(vm.clone()),
        &[spec(&a)],
        &[],
        nobody,
    )) {
        Err(AzureError::Abandoned { .. }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(count(&counters(&sim), "writes"), 0, "{}", counters(&sim));
    assert!(rt
        .block_on(arm.node_vm(AS_A))
        .expect("vm")
        .find(&a)
        .is_none());
}

#[test]
fn answers_come_from_azure_not_from_a_stale_view() {
    let sim = sim(&[]);
    let rt = runtime();
    let arm = connect(&rt, &control_plane_config(&sim));
    let a = disk(&rt, &arm, "pvc-view-a");
    let b = disk(&rt, &arm, "pvc-view-b");
    let stale = rt.block_on(arm.node_vm(AS_A)).expect("vm");
    // Another writer attaches a and b after the view was read.
    rt.block_on(arm.attach_detach(&stale.vm, &[spec(&a), spec(&b)], &[]))
        .expect("attach");
    // Detaching b from a view that lacks it: not planned from the view, read and done.
    let after = rt
        .block_on(arm.change_data_disks(
            &stale.vm,
            Known::View(stale.clone()),
            &[],
            std::slice::from_ref(&b),
            flexdisk_azure::vms::everyone(),
        ))
        .expect("detach");
    assert!(after.find(&b).is_none());
    let now = rt.block_on(arm.node_vm(AS_A)).expect("vm");
    assert!(now.find(&b).is_none(), "detached in Azure too");
    // Attaching a disk the stale view lacks but Azure has: its LUN is Azure's.
    let lun_in_azure = now.find(&a).expect("a attached").lun;
    let after = rt
        .block_on(arm.change_data_disks(
            &stale.vm,
            Known::View(stale.clone()),
            &[spec(&a)],
            &[],
            flexdisk_azure::vms::everyone(),
        ))
        .expect("attach");
    assert_eq!(after.find(&a).map(|d| d.lun), Some(lun_in_azure));
}
