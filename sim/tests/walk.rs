//! The scripted walk of sim/README.md, with the real binary and plain HTTP.

mod common;
use common::*;
use serde_json::json;

#[test]
fn disk_moves_between_nodes_with_its_bytes_and_cannot_be_stolen() {
    let sim = Sim::start(&[]);
    // Token, then a regional disk both availability-set VMs can take.
    let put = sim.arm(
        "PUT",
        &sim.disk_id("walk"),
        Some(
            &json!({"location": "westus2", "sku": {"name": "StandardSSD_LRS"}, "tags": {"k": "v"},
            "properties": {"creationData": {"createOption": "Empty"}, "diskSizeGB": 4}}),
        ),
    );
    assert_eq!(put.status, 202, "{:?}", put.body);
    assert_eq!(put.body["properties"]["provisioningState"], "Updating");
    assert!(put.header("retry-after").is_some());
    let status = sim.wait_async(&put);
    assert_eq!(status["status"], "Succeeded");
    assert_eq!(status["properties"]["output"]["name"], "walk");
    let disk = sim.arm("GET", &sim.disk_id("walk"), None).body;
    assert_eq!(disk["properties"]["provisioningState"], "Succeeded");
    assert_eq!(disk["properties"]["diskState"], "Unattached");
    assert!(disk.get("managedBy").is_none());

    // Attach to node A: a real block device appears at A's LUN link.
    let attach = sim.attach(AS_A, &["walk"]);
    assert_eq!(attach.status, 202);
    assert!(
        attach.body.is_null(),
        "202 from attachDetachDataDisks has no body"
    );
    let fin = sim.wait_location(&attach);
    assert_eq!(fin.status, 200);
    assert_eq!(
        fin.body["dataDisks"][0]["name"], "walk",
        "final Location answer is the storage profile"
    );
    let lun = sim.lun_of(AS_A, "walk");
    let link = sim.lun_link(AS_A, lun);
    let dev = std::fs::canonicalize(&link).expect("link resolves");
    assert!(
        dev.starts_with(sim.root(AS_A).join("dev")),
        "{} points into the node's /dev",
        dev.display()
    );
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::metadata(&dev)
        .expect("device")
        .file_type()
        .is_block_device());
    assert_eq!(block_size_bytes(&link), 4 << 30);
    let disk = sim.arm("GET", &sim.disk_id("walk"), None).body;
    assert_eq!(disk["managedBy"], sim.vm_path(AS_A));
    assert_eq!(disk["properties"]["diskState"], "Attached");

    let payload = b"flexdisk walks: these bytes must survive a move";
    write_at(&link, 1 << 20, payload);

    // Detach: the device goes away from A.
    sim.done(sim.detach(AS_A, &["walk"]));
    assert!(!link.exists(), "LUN link removed on detach");
    assert!(!dev.exists(), "device node removed on detach");
    assert_eq!(
        sim.arm("GET", &sim.disk_id("walk"), None).body["properties"]["diskState"],
        "Unattached"
    );

    // Attach to B: the same bytes read back.
    sim.done(sim.attach(AS_B, &["walk"]));
    let link_b = sim.lun_link(AS_B, sim.lun_of(AS_B, "walk"));
    assert_eq!(read_at(&link_b, 1 << 20, payload.len()), payload);

    // Attach to A while on B is refused, naming B's VM.
    let steal = sim.attach(AS_A, &["walk"]);
    assert_eq!(steal.status, 409);
    assert_eq!(steal.code(), "ConflictingUserInput");
    assert!(
        steal.message().contains(&sim.vm_path(AS_B)),
        "{}",
        steal.message()
    );

    // Delete: refused while attached, then gone with its contents.
    let refused = sim.arm("DELETE", &sim.disk_id("walk"), None);
    assert_eq!(refused.status, 409, "{:?}", refused.body);
    assert!(refused.message().contains(&sim.vm_path(AS_B)));
    sim.done(sim.detach(AS_B, &["walk"]));
    let unique = disk["properties"]["uniqueId"]
        .as_str()
        .expect("uniqueId")
        .to_string();
    let file = sim.state.join(format!("disks/{unique}.img"));
    assert!(file.exists());
    let del = sim.arm("DELETE", &sim.disk_id("walk"), None);
    assert_eq!(del.status, 202);
    assert_eq!(sim.wait_location(&del).status, 200);
    assert_eq!(sim.arm("GET", &sim.disk_id("walk"), None).status, 404);
    assert!(!file.exists(), "deleting the disk deletes its contents");
    assert_eq!(
        sim.arm("DELETE", &sim.disk_id("walk"), None).status,
        204,
        "deleting what is gone"
    );
    sim.check_schemas();
}

#[test]
fn restart_keeps_disks_attachments_and_contents_and_sigterm_frees_loops() {
    let tmp = tempfile::tempdir().expect("tmp");
    let state = tmp.path().join("state");
    let mut sim = Sim::start_at(&state, &[]);
    sim.empty_disk("keep", 2, Some("1"));
    sim.done(sim.attach(SS_0, &["keep"]));
    let lun = sim.lun_of(SS_0, "keep");
    write_at(&sim.lun_link(SS_0, lun), 4096, b"still here");
    assert_eq!(sim.loops_over_state().len(), 1);
    sim.check_schemas();
    sim.stop();
    // A loop device the simulator detached goes at its last close (the kernel's deferred
    // autoclear): another process probing block devices (blkid, lsblk) can hold it a moment.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !sim.loops_over_state().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        sim.loops_over_state().is_empty(),
        "SIGTERM leaves no loop device: {:?}",
        sim.loops_over_state()
    );
    drop(sim);

    let sim = Sim::start_at(&state, &[]);
    assert_eq!(sim.lun_of(SS_0, "keep"), lun, "attachment kept");
    let disk = sim.arm("GET", &sim.disk_id("keep"), None).body;
    assert_eq!(disk["managedBy"], sim.vm_path(SS_0));
    assert_eq!(read_at(&sim.lun_link(SS_0, lun), 4096, 10), b"still here");
    // The service principal's secret is the same after a restart.
    let token = sim.secret_token();
    assert!(!token.is_empty());
    sim.check_schemas();
}

#[test]
#[should_panic(expected = "do not match the API specification")]
fn the_schema_check_catches_what_azure_would_not_send() {
    let disk_path = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/disks/d";
    check_schemas(&[Exchange {
        method: "GET".into(),
        path: format!("{disk_path}?api-version=2024-03-02"),
        status: 200,
        body: json!({"location": "westus2", "properties": {"diskSizeGB": "four", "madeUp": true}}),
    }]);
}
