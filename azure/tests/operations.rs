//! Every ARM operation of the library against the simulator, with outcomes, device nodes and the
//! simulator's call counters.

mod common;

use common::*;
use flexdisk_azure::disks::Deleted;
use flexdisk_azure::vms::VmRef;
use flexdisk_azure::{Arm, AttachSpec, AzureError, Caching, DiskParams, DiskSpec};

fn spec(arm: &Arm, name: &str, gib: u64, params: &[(&str, &str)], zone: Option<&str>) -> DiskSpec {
    let p = DiskParams::parse(params.iter().copied()).expect("params");
    DiskSpec::from_params(
        &p,
        name,
        gib,
        zone.map(str::to_string),
        &arm.resource_group,
        &arm.location,
    )
}

fn attach_spec(arm: &Arm, name: &str) -> AttachSpec {
    AttachSpec {
        disk_id: arm.disk_id(&arm.resource_group, name).to_string(),
        lun: None,
        caching: Caching::None,
    }
}

#[test]
fn disk_lifecycle_create_idempotently_grow_snapshot_copy_delete() {
    let sim = sim(&[]);
    let rt = runtime();
    let arm = connect(&rt, &control_plane_config(&sim));
    let rg = arm.resource_group.clone();

    assert_eq!(rt.block_on(arm.get_disk(&rg, "pvc-a")).expect("get"), None);

    let s = spec(
        &arm,
        "pvc-a",
        4,
        &[("skuName", "Premium_LRS"), ("tags", "team=storage")],
        None,
    );
    reset_counters(&sim);
    let made = rt.block_on(arm.create_disk(&s)).expect("created");
    assert_eq!(made.name, "pvc-a");
    assert_eq!(made.size_gib, 4);
    assert_eq!(made.sku, "Premium_LRS");
    assert_eq!(made.provisioning_state, "Succeeded");
    assert_eq!(made.tags.get("team").map(String::as_str), Some("storage"));
    let c = counters(&sim);
    assert_eq!(count(&c, "Disks_CreateOrUpdate"), 1, "{c}");
    assert!(
        count(&c, "OperationStatus") >= 1,
        "the operation was polled: {c}"
    );

    // Crash-safe: asking again for the same disk is a success with the same disk.
    let again = rt.block_on(arm.create_disk(&s)).expect("idempotent");
    assert_eq!(again.id, made.id);

    let grown = rt.block_on(arm.grow_disk(&rg, "pvc-a", 8)).expect("grown");
    assert_eq!(grown.size_gib, 8);
    reset_counters(&sim);
    let same = rt
        .block_on(arm.grow_disk(&rg, "pvc-a", 6))
        .expect("no shrink");
    assert_eq!(same.size_gib, 8);
    assert_eq!(
        count(&counters(&sim), "Disks_Update"),
        0,
        "a smaller size sends nothing"
    );

    let snap = rt
        .block_on(arm.create_snapshot(&rg, "snap-a", &made.id, &arm.location))
        .expect("snapshot");
    let mut copy = spec(&arm, "pvc-copy", 8, &[], None);
    copy.source = Some(snap.clone());
    let copied = rt.block_on(arm.create_disk(&copy)).expect("copy");
    assert_eq!(copied.size_gib, 8);
    assert_eq!(
        rt.block_on(arm.delete_snapshot(&rg, "snap-a"))
            .expect("del"),
        Deleted::Deleted
    );
    assert_eq!(
        rt.block_on(arm.delete_snapshot(&rg, "snap-a"))
            .expect("del"),
        Deleted::AlreadyGone
    );

    assert_eq!(
        rt.block_on(arm.delete_disk(&rg, "pvc-copy")).expect("del"),
        Deleted::Deleted
    );
    assert_eq!(
        rt.block_on(arm.delete_disk(&rg, "pvc-copy")).expect("del"),
        Deleted::AlreadyGone
    );
    assert_eq!(
        rt.block_on(arm.get_disk(&rg, "pvc-copy")).expect("get"),
        None
    );
}

#[test]
fn eight_disks_attach_in_one_write_and_detach_in_another() {
    let sim = sim(&[]);
    let rt = runtime();
    let arm = connect(&rt, &control_plane_config(&sim));
    let names: Vec<String> = (0..9).map(|i| format!("pvc-eight-{i}")).collect();
    for n in &names {
        rt.block_on(arm.create_disk(&spec(&arm, n, 1, &[], None)))
            .expect("disk");
    }
    let vm = rt.block_on(arm.node_vm(AS_A)).expect("node resolves");
    assert_eq!(vm.vm.name(), AS_A);
    assert_eq!(vm.vm_size.as_deref(), Some("Standard_DS2_v2"));
    let eight: Vec<AttachSpec> = names[..8].iter().map(|n| attach_spec(&arm, n)).collect();

    reset_counters(&sim);
    let after = rt
        .block_on(arm.attach_detach(&vm.vm, &eight, &[]))
        .expect("attached");
    let c = counters(&sim);
    assert_eq!(
        count(&c, "VirtualMachines_AttachDetachDataDisks"),
        1,
        "one write: {c}"
    );
    assert_eq!(c["writes"].as_u64(), Some(1), "{c}");
    assert!(count(&c, "OperationStatus") >= 1, "{c}");

    let mut luns: Vec<i32> = eight
        .iter()
        .map(|a| after.find(&a.disk_id).expect("listed").lun)
        .collect();
    luns.sort();
    assert_eq!(luns, (0..8).collect::<Vec<_>>());
    for lun in luns {
        assert!(lun_link(&sim, AS_A, lun).exists(), "device for LUN {lun}");
    }

    // Idempotent: asking again sends no write.
    reset_counters(&sim);
    rt.block_on(arm.attach_detach(&vm.vm, &eight[..2], &[]))
        .expect("again");
    assert_eq!(counters(&sim)["writes"].as_u64().unwrap_or(0), 0);

    // The VM size's limit, with the limit.
    let ninth = attach_spec(&arm, &names[8]);
    match rt.block_on(arm.attach_detach(&vm.vm, &[ninth], &[])) {
        Err(AzureError::DataDiskLimit { limit, .. }) => assert_eq!(limit, Some(8)),
        other => panic!("expected the data-disk limit, got {other:?}"),
    }

    let ids: Vec<String> = eight.iter().map(|a| a.disk_id.clone()).collect();
    reset_counters(&sim);
    let after = rt
        .block_on(arm.attach_detach(&vm.vm, &[], &ids))
        .expect("detached");
    assert!(after.disks.is_empty(), "{after:?}");
    assert_eq!(
        count(&counters(&sim), "VirtualMachines_AttachDetachDataDisks"),
        1
    );
    assert!(!lun_link(&sim, AS_A, 0).exists());
    // Detaching what is not attached is a success without a write.
    reset_counters(&sim);
    rt.block_on(arm.attach_detach(&vm.vm, &[], &ids[..1]))
        .expect("nothing to do");
    assert_eq!(counters(&sim)["writes"].as_u64().unwrap_or(0), 0);
}

#[test]
fn scale_set_nodes_zones_owners_luns_and_refusals() {
    let sim = sim(&[]);
    let rt = runtime();
    let arm = connect(&rt, &control_plane_config(&sim));
    let rg = arm.resource_group.clone();

    let ss0 = rt.block_on(arm.node_vm(SS_0)).expect("scale-set node");
    assert!(
        matches!(&ss0.vm, VmRef::ScaleSet { instance_id, .. } if instance_id == "0"),
        "{:?}",
        ss0.vm
    );
    assert_eq!(ss0.zone.as_deref(), Some("1"));
    let ss1 = rt.block_on(arm.node_vm(SS_1)).expect("scale-set node");
    let a = rt
        .block_on(arm.node_vm(AS_A))
        .expect("availability-set node in a vmss cluster");
    let b = rt.block_on(arm.node_vm(AS_B)).expect("node");
    match rt.block_on(arm.node_vm("no-such-node")) {
        Err(AzureError::NotFound { message }) => {
            assert!(message.contains("no-such-node"), "{message}")
        }
        other => panic!("{other:?}"),
    }

    // A zonal LRS disk attaches in its zone, and is refused in another.
    rt.block_on(arm.create_disk(&spec(&arm, "pvc-z1", 1, &[], Some("1"))))
        .expect("zonal disk");
    let z1 = attach_spec(&arm, "pvc-z1");
    let on_ss0 = rt
        .block_on(arm.attach_detach(&ss0.vm, std::slice::from_ref(&z1), &[]))
        .expect("same zone");
    let lun = on_ss0.find(&z1.disk_id).expect("listed").lun;
    assert!(lun_link(&sim, SS_0, lun).exists());
    match rt.block_on(arm.attach_detach(&ss1.vm, std::slice::from_ref(&z1), &[])) {
        Err(AzureError::OwnedByOtherVm { owner, .. }) => assert_eq!(owner, ss0.vm.name()),
        other => panic!("{other:?}"),
    }
    rt.block_on(arm.attach_detach(&ss0.vm, &[], std::slice::from_ref(&z1.disk_id)))
        .expect("detached");
    match rt.block_on(arm.attach_detach(&ss1.vm, std::slice::from_ref(&z1), &[])) {
        Err(AzureError::InvalidParameter { message, .. }) => {
            assert!(message.contains("zone"), "{message}")
        }
        other => panic!("zone mismatch: {other:?}"),
    }

    // Owned by another VM, named; and the disk cannot be deleted while attached.
    rt.block_on(arm.create_disk(&spec(&arm, "pvc-own", 1, &[], None)))
        .expect("disk");
    let own = attach_spec(&arm, "pvc-own");
    rt.block_on(arm.attach_detach(&a.vm, std::slice::from_ref(&own), &[]))
        .expect("on A");
    match rt.block_on(arm.attach_detach(&b.vm, std::slice::from_ref(&own), &[])) {
        Err(e @ AzureError::OwnedByOtherVm { .. }) => assert!(e.to_string().contains(AS_A), "{e}"),
        other => panic!("{other:?}"),
    }
    match rt.block_on(arm.delete_disk(&rg, "pvc-own")) {
        Err(AzureError::OwnedByOtherVm { owner, .. }) => assert_eq!(owner, AS_A),
        other => panic!("{other:?}"),
    }

    // A LUN that is taken.
    rt.block_on(arm.create_disk(&spec(&arm, "pvc-lun", 1, &[], None)))
        .expect("disk");
    let taken = a.find(&own.disk_id).map(|d| d.lun);
    let taken = taken.unwrap_or_else(|| {
        rt.block_on(arm.vm_disks(&a.vm))
            .expect("vm")
            .find(&own.disk_id)
            .expect("own")
            .lun
    });
    let mut clash = attach_spec(&arm, "pvc-lun");
    clash.lun = Some(taken);
    match rt.block_on(arm.attach_detach(&a.vm, &[clash], &[])) {
        Err(AzureError::LunConflict { message }) => {
            assert!(message.contains(&taken.to_string()), "{message}")
        }
        other => panic!("{other:?}"),
    }

    // Caching Azure does not allow (PremiumV2): Azure's own message comes back.
    rt.block_on(arm.create_disk(&spec(
        &arm,
        "pvc-v2",
        1,
        &[("skuName", "PremiumV2_LRS")],
        Some("1"),
    )))
    .expect("v2 disk");
    let mut cached = attach_spec(&arm, "pvc-v2");
    cached.caching = Caching::ReadOnly;
    match rt.block_on(arm.attach_detach(&ss0.vm, &[cached], &[])) {
        Err(AzureError::InvalidParameter { code, message }) => {
            assert_eq!(code, "InvalidParameter");
            assert!(message.contains("Caching"), "{message}");
        }
        other => panic!("{other:?}"),
    }

    // A disk that does not exist.
    let ghost = attach_spec(&arm, "pvc-ghost");
    match rt.block_on(arm.attach_detach(&a.vm, &[ghost], &[])) {
        Err(AzureError::NotFound { .. }) => {}
        other => panic!("{other:?}"),
    }
    match rt.block_on(arm.grow_disk(&rg, "pvc-ghost", 2)) {
        Err(AzureError::NotFound { .. }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_disk_being_detached_is_refused_elsewhere_until_done() {
    let sim = sim(&["--vm-op-ms", "1500"]);
    let rt = runtime();
    let arm = connect(&rt, &control_plane_config(&sim));
    rt.block_on(arm.create_disk(&spec(&arm, "pvc-move", 1, &[], None)))
        .expect("disk");
    let a = rt.block_on(arm.node_vm(AS_A)).expect("A");
    let b = rt.block_on(arm.node_vm(AS_B)).expect("B");
    let d = attach_spec(&arm, "pvc-move");
    rt.block_on(arm.attach_detach(&a.vm, std::slice::from_ref(&d), &[]))
        .expect("on A");

    let outcome = rt.block_on(async {
        let detach = arm.attach_detach(&a.vm, &[], std::slice::from_ref(&d.disk_id));
        let attach = async {
            // Once the detach is under way (the VM lists the disk as leaving), try B.
            loop {
                let on_a = arm.vm_disks(&a.vm).await.expect("A");
                if on_a.find(&d.disk_id).is_some_and(|e| e.to_be_detached) {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            arm.attach_detach(&b.vm, std::slice::from_ref(&d), &[])
                .await
        };
        let (detached, attached) = tokio::join!(detach, attach);
        detached.expect("detach finishes");
        attached
    });
    match outcome {
        Err(e @ AzureError::BeingDetached { .. }) => assert!(e.is_retryable()),
        other => panic!("{other:?}"),
    }
    // Once detached, the move goes through.
    let on_b = rt
        .block_on(arm.attach_detach(&b.vm, std::slice::from_ref(&d), &[]))
        .expect("on B");
    assert!(on_b.find(&d.disk_id).is_some());
}
