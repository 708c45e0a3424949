//! Azure's bad days, injected by the simulator: throttling storms, 503s, resets, operations that
//! fail only in their status, answers lost after the work was done, VMs busy with another
//! operation. Outcomes and call counts are asserted, never durations.

mod common;

use common::*;
use flexdisk_azure::disks::Deleted;
use flexdisk_azure::{Arm, ArmOptions, AttachSpec, AzureError, Caching, DiskParams, DiskSpec};
use serde_json::json;

fn disk(
    rt: &tokio::runtime::Runtime,
    arm: &Arm,
    name: &str,
) -> Result<flexdisk_azure::DiskInfo, AzureError> {
    let p = DiskParams::parse([]).expect("params");
    let spec = DiskSpec::from_params(&p, name, 1, None, &arm.resource_group, &arm.location);
    rt.block_on(arm.create_disk(&spec))
}

fn attach(arm: &Arm, name: &str) -> AttachSpec {
    AttachSpec {
        disk_id: arm.disk_id(&arm.resource_group, name).to_string(),
        lun: None,
        caching: Caching::None,
    }
}

#[test]
fn throttling_storm_is_waited_out_with_retry_after() {
    let sim = sim(&[]);
    let rt = runtime();
    let arm = connect(&rt, &control_plane_config(&sim));
    disk(&rt, &arm, "pvc-t").expect("disk");
    fault(
        &sim,
        json!({"operation": "Disks_Get", "times": 3,
               "action": {"kind": "status", "status": 429, "retryAfter": 1}}),
    );
    reset_counters(&sim);
    let (_, retries_before, throttled_before) = arm.stats();
    let got = rt
        .block_on(arm.get_disk(&arm.resource_group, "pvc-t"))
        .expect("got through");
    assert!(got.is_some());
    let (_, retries, throttled) = arm.stats();
    assert_eq!(throttled - throttled_before, 3);
    assert_eq!(retries - retries_before, 3);
    assert_eq!(count(&counters(&sim), "Disks_Get"), 4, "{}", counters(&sim));
}

#[test]
fn a_long_retry_after_is_reported_as_throttling_at_once() {
    let sim = sim(&[]);
    let rt = runtime();
    let arm = connect(&rt, &control_plane_config(&sim));
    fault(
        &sim,
        json!({"operation": "Disks_Get",
               "action": {"kind": "status", "status": 429, "retryAfter": 3600}}),
    );
    reset_counters(&sim);
    match rt.block_on(arm.get_disk(&arm.resource_group, "pvc-x")) {
        Err(e @ AzureError::Throttled { .. }) => {
            assert!(e.is_retryable());
            // The caller learns how long to stay away (the provisioner's back-off uses it).
            assert_eq!(
                e.retry_after(),
                Some(std::time::Duration::from_secs(3600)),
                "{e}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(count(&counters(&sim), "Disks_Get"), 1, "not retried");
}

#[test]
fn unavailability_and_resets_are_retried_then_reported_as_transient() {
    let sim = sim(&[]);
    let rt = runtime();
    let arm = connect(&rt, &control_plane_config(&sim));
    fault(
        &sim,
        json!({"operation": "Disks_CreateOrUpdate", "times": 2,
               "action": {"kind": "status", "status": 503, "retryAfter": 0}}),
    );
    fault(
        &sim,
        json!({"operation": "Disks_CreateOrUpdate", "skip": 2, "times": 2, "action": {"kind": "reset"}}),
    );
    reset_counters(&sim);
    disk(&rt, &arm, "pvc-503").expect("created after 503s and resets");
    assert_eq!(
        count(&counters(&sim), "Disks_CreateOrUpdate"),
        5,
        "{}",
        counters(&sim)
    );

    // A budget that runs out: the caller hears "transient", after exactly that many tries.
    let mut opts = options();
    opts.retry.max_retries = 3;
    let short = rt
        .block_on(Arm::connect(&control_plane_config(&sim), opts))
        .expect("connects");
    fault(
        &sim,
        json!({"operation": "Disks_Get", "action": {"kind": "status", "status": 500}}),
    );
    reset_counters(&sim);
    match rt.block_on(short.get_disk(&short.resource_group, "pvc-503")) {
        Err(e @ AzureError::Transient { .. }) => assert!(e.is_retryable()),
        other => panic!("{other:?}"),
    }
    assert_eq!(count(&counters(&sim), "Disks_Get"), 4);
}

#[test]
fn failures_visible_only_in_the_operation_status() {
    let sim = sim(&[]);
    let rt = runtime();
    let arm = connect(&rt, &control_plane_config(&sim));
    fault(
        &sim,
        json!({"operation": "Disks_CreateOrUpdate", "times": 1,
               "action": {"kind": "lroFail", "code": "InternalDiskManagementError",
                          "message": "An internal error occurred."}}),
    );
    match disk(&rt, &arm, "pvc-lro") {
        Err(AzureError::Other {
            code,
            message,
            status,
        }) => {
            assert_eq!(code, "InternalDiskManagementError");
            assert_eq!(status, None, "the failure came from the status resource");
            assert!(message.contains("internal error"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    disk(&rt, &arm, "pvc-lro").expect("the next try works");

    let vm = rt.block_on(arm.node_vm(AS_A)).expect("vm");
    fault(
        &sim,
        json!({"operation": "VirtualMachines_AttachDetachDataDisks", "times": 1,
               "action": {"kind": "lroFail", "code": "AttachDiskWhileBeingDetached",
                          "message": "Disk is being detached."}}),
    );
    match rt.block_on(arm.attach_detach(&vm.vm, &[attach(&arm, "pvc-lro")], &[])) {
        Err(AzureError::BeingDetached { .. }) => {}
        other => panic!("{other:?}"),
    }
    let after = rt.block_on(arm.vm_disks(&vm.vm)).expect("vm");
    assert!(
        after.disks.is_empty(),
        "a failed attach is rolled back: {after:?}"
    );
}

#[test]
fn lost_answers_after_the_work_was_done_end_in_success() {
    let sim = sim(&[]);
    let rt = runtime();
    let arm = connect(&rt, &control_plane_config(&sim));
    fault(
        &sim,
        json!({"operation": "Disks_CreateOrUpdate", "times": 1, "action": {"kind": "loseResponse"}}),
    );
    let made = disk(&rt, &arm, "pvc-lost").expect("the PUT is sent again and is idempotent");
    assert_eq!(made.provisioning_state, "Succeeded");

    let vm = rt.block_on(arm.node_vm(AS_A)).expect("vm");
    let a = attach(&arm, "pvc-lost");
    fault(
        &sim,
        json!({"operation": "VirtualMachines_AttachDetachDataDisks", "times": 1,
               "action": {"kind": "loseResponse"}}),
    );
    reset_counters(&sim);
    let after = rt
        .block_on(arm.attach_detach(&vm.vm, std::slice::from_ref(&a), &[]))
        .expect("the VM shows the attach");
    let entry = after.find(&a.disk_id).expect("attached");
    assert!(lun_link(&sim, AS_A, entry.lun).exists());
    let on_vm = rt.block_on(arm.vm_disks(&vm.vm)).expect("vm");
    assert_eq!(on_vm.disks.len(), 1, "attached once: {on_vm:?}");

    fault(
        &sim,
        json!({"operation": "VirtualMachines_AttachDetachDataDisks", "times": 1,
               "action": {"kind": "loseResponse"}}),
    );
    let after = rt
        .block_on(arm.attach_detach(&vm.vm, &[], std::slice::from_ref(&a.disk_id)))
        .expect("the VM shows the detach");
    assert!(after.disks.is_empty());

    fault(
        &sim,
        json!({"operation": "Disks_Delete", "times": 1, "action": {"kind": "loseResponse"}}),
    );
    let gone = rt
        .block_on(arm.delete_disk(&arm.resource_group, "pvc-lost"))
        .expect("deleted");
    assert!(matches!(gone, Deleted::Deleted | Deleted::AlreadyGone));
    assert_eq!(
        rt.block_on(arm.get_disk(&arm.resource_group, "pvc-lost"))
            .expect("get"),
        None
    );
}

#[test]
fn a_vm_busy_with_another_operation_is_waited_for() {
    let sim = sim(&["--vm-op-ms", "600"]);
    let rt = runtime();
    let config = control_plane_config(&sim);
    let one = connect(&rt, &config);
    let two = rt
        .block_on(Arm::connect(&config, ArmOptions::default()))
        .expect("connects");
    disk(&rt, &one, "pvc-b1").expect("disk");
    disk(&rt, &one, "pvc-b2").expect("disk");
    let vm = rt.block_on(one.node_vm(AS_A)).expect("vm");
    let (b1, b2) = ([attach(&one, "pvc-b1")], [attach(&two, "pvc-b2")]);
    reset_counters(&sim);
    let (r1, r2) = rt.block_on(async {
        tokio::join!(one.attach_detach(&vm.vm, &b1, &[]), async {
            // Once the first attach is under way (the VM lists its disk), send the second.
            loop {
                let now = two.vm_disks(&vm.vm).await.expect("vm");
                if now.find(&b1[0].disk_id).is_some() {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            two.attach_detach(&vm.vm, &b2, &[]).await
        })
    });
    r1.expect("first attach");
    r2.expect("second attach waited for the first");
    let after = rt.block_on(one.vm_disks(&vm.vm)).expect("vm");
    assert_eq!(after.disks.len(), 2);
    let c = counters(&sim);
    assert!(
        count(&c, "VirtualMachines_AttachDetachDataDisks") >= 3,
        "the second was refused as busy at least once: {c}"
    );
}

#[test]
fn stale_writes_and_refused_tokens_are_classified() {
    let sim = sim(&[]);
    let rt = runtime();
    let arm = connect(&rt, &control_plane_config(&sim));
    fault(
        &sim,
        json!({"operation": "Disks_Get", "times": 1,
               "action": {"kind": "status", "status": 412, "code": "PreconditionFailed",
                          "message": "The etag does not match."}}),
    );
    match rt.block_on(arm.get_disk(&arm.resource_group, "pvc-x")) {
        Err(e @ AzureError::PreconditionFailed { .. }) => assert!(e.is_retryable()),
        other => panic!("{other:?}"),
    }
    fault(
        &sim,
        json!({"operation": "Disks_Get", "times": 1,
               "action": {"kind": "status", "status": 403, "code": "AuthorizationFailed",
                          "message": "The client does not have authorization to perform action."}}),
    );
    match rt.block_on(arm.get_disk(&arm.resource_group, "pvc-x")) {
        Err(AzureError::Unauthorized { message }) => assert!(message.contains("authorization")),
        other => panic!("{other:?}"),
    }
}

/// A tag write whose PATCH keeps failing is given up once its time to send has run out: no
/// attempt goes out after it (`Disks_Update` takes no If-Match, so a late write would overwrite
/// whatever another writer claimed since the read it was planned from).
#[test]
fn a_tag_write_goes_out_in_its_time_or_not_at_all() {
    let sim = sim(&[]);
    let rt = runtime();
    let arm = connect(&rt, &control_plane_config(&sim));
    disk(&rt, &arm, "pvc-late-tag").expect("disk");
    fault(
        &sim,
        json!({"operation": "Disks_Update", "action": {"kind": "status", "status": 500}}),
    );
    reset_counters(&sim);
    let tags = [("k8s-flexdisk-pv".to_string(), "pv-late".to_string())].into();
    // The tests' retry policy (20 ms doubling to 200 ms, jittered) makes its 8 retries over
    // more than a second: most fall after the bound.
    let send_before = std::time::Instant::now() + std::time::Duration::from_millis(300);
    match rt.block_on(arm.set_disk_tags(&arm.resource_group, "pvc-late-tag", &tags, send_before)) {
        Err(AzureError::Abandoned { message }) => {
            assert!(message.contains("time to send ran out"), "{message}")
        }
        other => panic!("a tag write carried on past its time: {other:?}"),
    }
    let attempts = count(&counters(&sim), "Disks_Update");
    assert!(attempts >= 1, "{}", counters(&sim));
    // Not the first try and 8 retries the transport makes without the bound.
    assert!(attempts < 9, "{attempts} attempts: {}", counters(&sim));
}
