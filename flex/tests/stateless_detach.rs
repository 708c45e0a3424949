//! `detach <pv> <node>` finds the PV's disk from Azure alone: from a control-plane host with an
//! empty state directory (another leader, or kube-controller-manager restarted in a fresh
//! container), for a static PV of a differently named disk, a disk in another resource group and a
//! shared disk on two VMs. It never answers Success while the disk is still on that VM: when it
//! cannot tell, it fails and the controller retries.

mod common;

use common::*;
use serde_json::json;

fn detached_on_another_host(env: &Env, host: &str, pv: &str, node: &str, disk: &str) {
    assert!(
        env.vm_disks(node).contains(&disk.to_lowercase()),
        "{disk} is on {node} before the detach"
    );
    let out = env.controller_on(host, &["detach", pv, node]);
    assert!(
        out.ok()["message"]
            .as_str()
            .unwrap_or_default()
            .contains("detached"),
        "{}",
        out.raw
    );
    assert!(
        !env.vm_disks(node).contains(&disk.to_lowercase()),
        "detach of {pv} answered Success while {disk} is still on {node}"
    );
    // Asked again (the controller retries): nothing attached, still Success.
    env.controller_on(host, &["detach", pv, node]).ok();
}

#[test]
fn detach_needs_no_record_of_the_attach() {
    let env = Env::start();
    let rg = env.arm.resource_group.clone();

    // A static PV whose disk has another name.
    let disk = env.disk("existing-data-disk", 1);
    let opts = env.options(&disk, "pv-static", json!({}));
    env.controller_on("cp-1", &["attach", &opts, AS_A]).ok();
    detached_on_another_host(&env, "cp-2", "pv-static", AS_A, "existing-data-disk");

    // A disk in a class's own resource group.
    let disk = env.disk_with("flexdisk-volumes", "pvc-other-rg", 1, &[]);
    let opts = env.options(&disk, "pvc-other-rg", json!({}));
    env.controller_on("cp-1", &["attach", &opts, AS_B]).ok();
    detached_on_another_host(&env, "cp-3", "pvc-other-rg", AS_B, "pvc-other-rg");

    // A shared disk on two VMs: detached from A by one host, from B by another.
    let disk = env.disk_with(&rg, "shared-disk", 1, &[("maxShares", "2")]);
    let opts = env.options(&disk, "pv-shared", json!({"kubernetes.io/readwrite": "ro"}));
    env.controller_on("cp-1", &["attach", &opts, AS_A]).ok();
    env.controller_on("cp-1", &["attach", &opts, AS_B]).ok();
    detached_on_another_host(&env, "cp-1", "pv-shared", AS_A, "shared-disk");
    assert!(env.vm_disks(AS_B).contains(&"shared-disk".to_string()));
    detached_on_another_host(&env, "cp-4", "pv-shared", AS_B, "shared-disk");

    // Another PV's disk on the VM is never taken for this one.
    let mine = env.disk("mine", 1);
    let theirs = env.disk("theirs", 1);
    env.controller_on(
        "cp-1",
        &["attach", &env.options(&mine, "pv-mine", json!({})), AS_A],
    )
    .ok();
    env.controller_on(
        "cp-1",
        &[
            "attach",
            &env.options(&theirs, "pv-theirs", json!({})),
            AS_A,
        ],
    )
    .ok();
    detached_on_another_host(&env, "cp-5", "pv-mine", AS_A, "mine");
    assert!(env.vm_disks(AS_A).contains(&"theirs".to_string()));

    // A disk attached by a flexdisk from before the tag (untagged), whose host still has its
    // record of the attach: that record identifies it.
    let legacy = env.disk("legacy-disk", 1);
    let vm = env.rt.block_on(env.arm.node_vm(AS_B)).expect("vm").vm;
    env.rt
        .block_on(env.arm.attach_detach(
            &vm,
            &[flexdisk_azure::AttachSpec {
                disk_id: legacy.clone(),
                lun: None,
                caching: flexdisk_azure::Caching::None,
            }],
            &[],
        ))
        .expect("attach");
    let records = env.state_dir("cp-old").join("volumes");
    std::fs::create_dir_all(&records).expect("dir");
    std::fs::write(records.join("pv-legacy"), &legacy).expect("record");
    detached_on_another_host(&env, "cp-old", "pv-legacy", AS_B, "legacy-disk");

    // A disk tagged for one PV and attached is not handed to another PV.
    let stolen = env.controller_on(
        "cp-1",
        &["attach", &env.options(&theirs, "pv-thief", json!({})), AS_B],
    );
    assert_eq!(stolen.status, "Failure", "{}", stolen.raw);
    assert!(
        stolen.message().contains("serves PV pv-theirs"),
        "{}",
        stolen.raw
    );
}

#[test]
fn detach_that_cannot_tell_fails_instead_of_answering_success() {
    let env = Env::start();
    let disk = env.disk("unreadable", 1);
    let opts = env.options(&disk, "pv-unreadable", json!({}));
    env.controller(&["attach", &opts, AS_A]).ok();
    // The identity may not read disks (a role missing): the detach must not guess.
    let (status, rule) = env
        .sim
        .control(
            "POST",
            "/faults",
            Some(&json!({"operation": "Disks_Get", "action": {"kind": "status", "status": 403, "code": "AuthorizationFailed", "message": "The client does not have authorization to perform action Microsoft.Compute/disks/read"}})),
        )
        .expect("fault");
    assert_eq!(status, 201, "{rule}");
    let out = env.controller_on("fresh", &["detach", "pv-unreadable", AS_A]);
    assert_eq!(out.status, "Failure", "{}", out.raw);
    assert!(out.message().contains("cannot tell"), "{}", out.raw);
    assert!(env.vm_disks(AS_A).contains(&"unreadable".to_string()));
    env.sim.control("DELETE", "/faults", None).expect("clear");
    detached_on_another_host(&env, "fresh", "pv-unreadable", AS_A, "unreadable");
}
