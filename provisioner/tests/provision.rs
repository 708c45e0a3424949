//! The real `flexdisk-provisioner` binary against the simulator's Azure and Kubernetes:
//! Immediate and WaitForFirstConsumer classes end Bound with the right disk and PV, a bad class is
//! one clear event and no ARM write, deletion removes disk and PV, Retain keeps the disk.

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn claims_become_disks_and_volumes_and_go_away_again() {
    let s = Setup::start();
    s.class(
        "fast",
        json!({"skuName": "Premium_LRS", "tags": "team=storage"}),
        json!({}),
    );
    let c = s.claim("data", "fast", "3Gi");
    let uid = c["metadata"]["uid"].as_str().expect("uid").to_string();
    let pv_name = format!("pvc-{uid}");
    let bound = s.until(&format!("{PVCS}/data"), "Bound", |o| {
        o["status"]["phase"] == "Bound"
    });
    assert_eq!(bound["spec"]["volumeName"], pv_name.as_str());
    let pv = s.until(
        &format!("/api/v1/persistentvolumes/{pv_name}"),
        "bound PV",
        |o| o["status"]["phase"] == "Bound",
    );
    assert_eq!(
        pv["metadata"]["annotations"]["pv.kubernetes.io/provisioned-by"],
        "flexdisk/azure-disk"
    );
    assert!(pv["metadata"]["finalizers"]
        .as_array()
        .expect("finalizers")
        .iter()
        .any(|f| f == "external-provisioner.volume.kubernetes.io/finalizer"));
    assert_eq!(pv["spec"]["claimRef"]["uid"], uid.as_str());
    assert_eq!(pv["spec"]["storageClassName"], "fast");
    assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Delete");
    assert_eq!(pv["spec"]["capacity"]["storage"], "3Gi");
    assert_eq!(pv["spec"]["flexVolume"]["driver"], "flexdisk/azure-disk");
    assert_eq!(
        pv["spec"]["flexVolume"]["options"]["cachingMode"],
        "ReadOnly"
    );
    let uri = pv["spec"]["flexVolume"]["options"]["diskURI"]
        .as_str()
        .expect("diskURI");
    assert!(uri.ends_with(&format!("/disks/{pv_name}")), "{uri}");
    let disk = s.disk(&pv_name).expect("the disk exists");
    assert_eq!((disk.sku.as_str(), disk.size_gib), ("Premium_LRS", 3));
    assert_eq!(disk.tags.get("team").map(String::as_str), Some("storage"));
    assert_eq!(
        disk.tags
            .get("kubernetes.io-created-for-pvc-name")
            .map(String::as_str),
        Some("data")
    );

    // Metrics, health and readiness.
    let addr = s
        .log()
        .lines()
        .find_map(|l| l.split("metrics on ").nth(1).map(|a| a.trim().to_string()))
        .expect("the metrics address is logged");
    let get = |path: &str| {
        let r = s
            .http
            .get(format!("http://{addr}{path}"))
            .send()
            .expect("metrics server");
        (r.status().as_u16(), r.text().expect("text"))
    };
    // The claim is Bound (the PV controller's doing) a moment before the provisioner counts it.
    let succeeded = r#"flexdisk_provisioner_provisions_total{class="fast",outcome="succeeded"} 1"#;
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let (status, text) = get("/metrics");
        assert_eq!(status, 200);
        if text.contains(succeeded) || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(text.contains(succeeded), "{text}");
    assert!(
        text.contains("flexdisk_provisioner_arm_requests_total"),
        "{text}"
    );
    assert!(
        text.contains("flexdisk_provisioner_provision_duration_seconds_count"),
        "{text}"
    );
    assert_eq!(get("/healthz").0, 200);
    assert_eq!(get("/readyz").0, 200);

    // Deleting the claim deletes the volume and its disk.
    assert_eq!(s.call("DELETE", &format!("{PVCS}/data"), None).0, 200);
    s.gone(&format!("/api/v1/persistentvolumes/{pv_name}"));
    assert_eq!(s.disk(&pv_name), None, "the disk was deleted");

    // Retain keeps the disk and the Released volume.
    s.class("keep", json!({}), json!({"reclaimPolicy": "Retain"}));
    let kept_pv = s.released("kept", "keep");
    std::thread::sleep(Duration::from_millis(500));
    assert!(s.disk(&kept_pv).is_some(), "Retain keeps the disk");
    assert_eq!(
        s.call("GET", &format!("/api/v1/persistentvolumes/{kept_pv}"), None)
            .0,
        200
    );
}

#[test]
fn wait_for_first_consumer_follows_the_node_and_bad_classes_are_one_clear_event() {
    let s = Setup::start();
    s.class(
        "late",
        json!({"skuName": "Premium_LRS"}),
        json!({"volumeBindingMode": "WaitForFirstConsumer"}),
    );
    let c = s.claim("late", "late", "1Gi");
    let pv_name = format!("pvc-{}", c["metadata"]["uid"].as_str().expect("uid"));
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(
        s.call("GET", &format!("/api/v1/persistentvolumes/{pv_name}"), None)
            .0,
        404,
        "nothing before the scheduler picks a node"
    );
    s.call("PATCH", &format!("{PVCS}/late"), Some(json!({"metadata": {"annotations": {"volume.kubernetes.io/selected-node": "aks-nodepool1-31415926-vmss000001"}}})));
    s.until(&format!("{PVCS}/late"), "Bound", |o| {
        o["status"]["phase"] == "Bound"
    });
    let pv = s.until(
        &format!("/api/v1/persistentvolumes/{pv_name}"),
        "PV",
        |_| true,
    );
    assert_eq!(
        pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]
            ["values"],
        json!(["westus2-2"])
    );
    assert_eq!(s.disk(&pv_name).expect("disk").zones, vec!["2".to_string()]);

    // A class with a typo: one ProvisioningFailed event naming the key, no disk written.
    s.class(
        "broken",
        json!({"skuName": "Premium_LRS", "cachngMode": "None"}),
        json!({}),
    );
    s.sim.control("DELETE", "/counters", None).expect("reset");
    s.claim("bad", "broken", "1Gi");
    let deadline = Instant::now() + Duration::from_secs(20);
    let event = loop {
        let (_, list) = s.call(
            "GET",
            "/apis/events.k8s.io/v1/namespaces/default/events",
            None,
        );
        let found = list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["regarding"]["name"] == "bad" && e["reason"] == "ProvisioningFailed")
            .cloned();
        if let Some(e) = found {
            break e;
        }
        assert!(
            Instant::now() < deadline,
            "no ProvisioningFailed event\n{}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        event["note"]
            .as_str()
            .expect("note")
            .contains("`cachngMode`"),
        "{event}"
    );
    assert_eq!(event["type"], "Warning");
    std::thread::sleep(Duration::from_millis(500));
    let (_, counters) = s.sim.control("GET", "/counters", None).expect("counters");
    assert_eq!(
        counters["writes"].as_u64().unwrap_or(0),
        0,
        "no ARM write for a refused claim: {counters}"
    );
    assert_eq!(
        s.call("GET", &format!("{PVCS}/bad"), None).1["status"]["phase"],
        "Pending"
    );
}

fn log_of(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// One replica of an HA pair (provisioner name `example.com/ha`), its log in `dir/<id>.log`.
fn replica(s: &Setup, dir: &Path, id: &str, lease_secs: u64) -> (Child, std::path::PathBuf) {
    let log = dir.join(format!("{id}.log"));
    let child = Command::new(env!("CARGO_BIN_EXE_flexdisk-provisioner"))
        .args([
            "--kubeconfig",
            &s.sim.field("kubeconfig"),
            "--cloud-config",
            &s.sim.field("azureJson"),
        ])
        .args(["--leader-elect", "--identity", id, "--lease-duration-secs"])
        .arg(lease_secs.to_string())
        .args([
            "--provisioner-name",
            "example.com/ha",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .env("SSL_CERT_FILE", s.sim.field("caBundle"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("replica starts");
    (child, log)
}

fn wait_log(log: &Path, line: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !log_of(log).contains(line) {
        assert!(
            Instant::now() < deadline,
            "{line:?} never logged:\n{}",
            log_of(log)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_terminated_leader_releases_its_lease_for_the_next_replica() {
    // A lease far longer than this test waits: the replica that replaces the leader (a rolling
    // update) can only lead at once if the leader released it on SIGTERM. (A standby that was
    // already waiting sleeps until the expiry it last saw: kube-lease-manager does not watch.)
    let s = Setup::start();
    let tmp = tempfile::tempdir().expect("tmp");
    let (a, a_log) = replica(&s, tmp.path(), "replica-a", 600);
    wait_log(&a_log, "leading");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(a.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let status = a.wait_with_output().expect("exits").status;
    assert_eq!(status.code(), Some(0), "{}", log_of(&a_log));
    assert!(log_of(&a_log).contains("released the leader lease"));
    let (mut b, b_log) = replica(&s, tmp.path(), "replica-b", 600);
    wait_log(&b_log, "leading");
    let sc = json!({"metadata": {"name": "ha"}, "provisioner": "example.com/ha"});
    assert_eq!(
        s.call("POST", "/apis/storage.k8s.io/v1/storageclasses", Some(sc))
            .0,
        201
    );
    s.claim("after-handover", "ha", "1Gi");
    s.until(
        &format!("{PVCS}/after-handover"),
        "Bound by the new leader",
        |o| o["status"]["phase"] == "Bound",
    );
    let _ = b.kill();
    let _ = b.wait();
}

#[test]
fn two_replicas_one_leader_and_a_handover_when_it_dies() {
    let s = Setup::start();
    s.class("fast", json!({}), json!({}));
    let tmp = tempfile::tempdir().expect("tmp");
    let start = |id: &str| replica(&s, tmp.path(), id, 3);
    let (mut a, a_log) = start("replica-a");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !log_of(&a_log).contains("leading") {
        assert!(
            Instant::now() < deadline,
            "a never led:\n{}",
            log_of(&a_log)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (mut b, b_log) = start("replica-b");
    // Claims for this provisioner name (the other test's provisioner ignores them).
    let sc = json!({"metadata": {"name": "ha"}, "provisioner": "example.com/ha"});
    assert_eq!(
        s.call("POST", "/apis/storage.k8s.io/v1/storageclasses", Some(sc))
            .0,
        201
    );
    s.claim("first", "ha", "1Gi");
    s.until(&format!("{PVCS}/first"), "Bound", |o| {
        o["status"]["phase"] == "Bound"
    });
    // The leader logs after its event is published, which can be just after the claim binds.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !log_of(&a_log).contains("provisioned") {
        assert!(
            Instant::now() < deadline,
            "the leader acted:\n{}",
            log_of(&a_log)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !log_of(&b_log).contains("leading") && !log_of(&b_log).contains("provisioned"),
        "the standby did nothing:\n{}",
        log_of(&b_log)
    );

    // The leader dies without a word; the standby takes over after the lease.
    a.kill().expect("SIGKILL");
    let _ = a.wait();
    s.claim("second", "ha", "1Gi");
    s.until(&format!("{PVCS}/second"), "Bound after the handover", |o| {
        o["status"]["phase"] == "Bound"
    });
    assert!(log_of(&b_log).contains("leading"));
    let _ = b.kill();
    let _ = b.wait();
}

#[test]
fn under_azure_faults_every_claim_ends_bound_and_nothing_leaks() {
    let s = Setup::start();
    s.class("fast", json!({}), json!({}));
    let fault = |rule: Value| {
        let (status, body) = s
            .sim
            .control("POST", "/faults", Some(&rule))
            .expect("fault");
        assert_eq!(status, 201, "{body}");
    };
    fault(
        json!({"operation": "Disks_CreateOrUpdate", "times": 4, "action": {"kind": "status", "status": 429, "retryAfter": 1}}),
    );
    // The reads a provision makes are its operation's polls (the status carries the disk).
    fault(
        json!({"operation": "OperationStatus", "times": 3, "action": {"kind": "status", "status": 503, "retryAfter": 0}}),
    );
    fault(
        json!({"operation": "Disks_CreateOrUpdate", "skip": 6, "times": 2, "action": {"kind": "lroFail", "code": "InternalDiskManagementError"}}),
    );
    fault(
        json!({"operation": "Disks_CreateOrUpdate", "skip": 8, "times": 1, "action": {"kind": "loseResponse"}}),
    );
    let names: Vec<String> = (0..10).map(|i| format!("storm-{i}")).collect();
    for n in &names {
        s.claim(n, "fast", "1Gi");
    }
    for n in &names {
        s.until(&format!("{PVCS}/{n}"), "Bound under faults", |o| {
            o["status"]["phase"] == "Bound"
        });
    }
    let (_, left) = s.sim.control("GET", "/faults", None).expect("faults");
    assert_eq!(
        left,
        json!([]),
        "every injected fault fired (and was retired)"
    );
    // Every disk belongs to a PV and every PV has its disk.
    let (disks, pvs) = s.disks_and_pvs();
    assert_eq!(disks, pvs, "one disk per PV, nothing else");
    assert_eq!(pvs.len(), 10);

    fault(
        json!({"operation": "Disks_Delete", "times": 3, "action": {"kind": "status", "status": 503, "retryAfter": 0}}),
    );
    s.delete_all_and_converge(&names, Duration::from_secs(60));
}

#[test]
fn a_clone_copies_its_bound_source() {
    let s = Setup::start();
    s.class("fast", json!({}), json!({}));
    let src = s.claim("src", "fast", "2Gi");
    s.until(&format!("{PVCS}/src"), "Bound", |o| {
        o["status"]["phase"] == "Bound"
    });
    let (status, copy) = s.call("POST", "/api/v1/namespaces/default/persistentvolumeclaims", Some(json!({
        "metadata": {"name": "copy"},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "fast", "resources": {"requests": {"storage": "2Gi"}},
                 "dataSource": {"kind": "PersistentVolumeClaim", "name": "src"}}})));
    assert_eq!(status, 201, "{copy}");
    s.until(&format!("{PVCS}/copy"), "Bound", |o| {
        o["status"]["phase"] == "Bound"
    });
    let copy_disk = format!("pvc-{}", copy["metadata"]["uid"].as_str().expect("uid"));
    let src_disk = format!("pvc-{}", src["metadata"]["uid"].as_str().expect("uid"));
    let (_, state) = s.sim.control("GET", "/state", None).expect("state");
    let disks: Vec<&Value> = match &state["disks"] {
        Value::Object(m) => m.values().collect(),
        Value::Array(a) => a.iter().collect(),
        _ => Vec::new(),
    };
    let made = disks
        .iter()
        .find(|d| d["name"] == copy_disk.as_str())
        .expect("the clone's disk");
    let text = made.to_string();
    assert!(
        text.contains(&src_disk),
        "created from the source's disk: {text}"
    );
}

#[test]
fn crashes_at_random_moments_leak_nothing_and_duplicate_nothing() {
    let mut s = Setup::start();
    s.class("fast", json!({}), json!({}));
    let mut pause = pauses(0x2545F4914F6CDD1D, 50, 400);
    let names: Vec<String> = (0..100).map(|i| format!("crash-{i}")).collect();
    for chunk in names.chunks(10) {
        for n in chunk {
            s.claim(n, "fast", "1Gi");
        }
        std::thread::sleep(pause());
        s.crash_and_restart();
    }
    for n in &names {
        s.until(&format!("{PVCS}/{n}"), "Bound after crashes", |o| {
            o["status"]["phase"] == "Bound"
        });
    }
    let (disks, pvs) = s.disks_and_pvs();
    assert_eq!(pvs.len(), 100, "one PV per claim, no duplicates");
    assert_eq!(disks, pvs, "one disk per PV, no leaks");

    // Deleting everything, with crashes in the middle.
    for chunk in names.chunks(25) {
        for n in chunk {
            s.call("DELETE", &format!("{PVCS}/{n}"), None);
        }
        std::thread::sleep(pause());
        s.crash_and_restart();
    }
    s.converge(Duration::from_secs(90));
}

#[test]
fn every_refusal_is_one_clear_event_and_no_arm_write() {
    let s = Setup::start();
    s.class("fast", json!({}), json!({}));
    std::thread::sleep(Duration::from_millis(300));
    s.sim.control("DELETE", "/counters", None).expect("reset");
    let spec = |extra: Value| {
        let mut spec = json!({"accessModes": ["ReadWriteOnce"], "storageClassName": "fast", "resources": {"requests": {"storage": "1Gi"}}});
        if let (Some(m), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
            m.extend(e.clone());
        }
        spec
    };
    let cases = [
        (
            "sel",
            spec(json!({"selector": {"matchLabels": {"disk": "old"}}})),
            "selector",
        ),
        (
            "blk",
            spec(json!({"volumeMode": "Block"})),
            "volumeMode Block",
        ),
        (
            "rwx",
            spec(json!({"accessModes": ["ReadWriteMany"]})),
            "ReadWriteMany is not supported",
        ),
        (
            "rox",
            spec(json!({"accessModes": ["ReadOnlyMany"]})),
            "maxShares > 1",
        ),
        (
            "snap",
            spec(
                json!({"dataSource": {"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": "s1"}}),
            ),
            "VolumeSnapshot is not supported",
        ),
    ];
    for (name, spec, _) in &cases {
        let (status, body) = s.call(
            "POST",
            "/api/v1/namespaces/default/persistentvolumeclaims",
            Some(json!({"metadata": {"name": name}, "spec": spec})),
        );
        assert_eq!(status, 201, "{body}");
    }
    for (name, _, words) in &cases {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (_, list) = s.call(
                "GET",
                "/apis/events.k8s.io/v1/namespaces/default/events",
                None,
            );
            let events: Vec<&Value> = list["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|e| e["regarding"]["name"] == *name)
                .collect();
            if let Some(e) = events.first() {
                assert_eq!(events.len(), 1, "one event for {name}: {events:?}");
                assert_eq!(e["reason"], "ProvisioningFailed");
                assert!(
                    e["note"].as_str().expect("note").contains(words),
                    "{name}: {e}"
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no event for {name}\n{}",
                s.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let (_, counters) = s.sim.control("GET", "/counters", None).expect("counters");
    assert_eq!(counters["writes"].as_u64().unwrap_or(0), 0, "{counters}");
}

#[test]
fn a_disk_still_attached_is_not_deleted_until_it_is_detached() {
    let s = Setup::start();
    s.class("fast", json!({}), json!({}));
    let c = s.claim("busy", "fast", "1Gi");
    let pv_name = format!("pvc-{}", c["metadata"]["uid"].as_str().expect("uid"));
    s.until(&format!("{PVCS}/busy"), "Bound", |o| {
        o["status"]["phase"] == "Bound"
    });
    let (vm, spec) = s.attach(&pv_name, "k8s-agentpool1-31415926-0");
    s.call("DELETE", &format!("{PVCS}/busy"), None);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, list) = s.call("GET", "/apis/events.k8s.io/v1/events", None);
        let found = list["items"].as_array().into_iter().flatten().any(|e| {
            e["reason"] == "VolumeFailedDelete"
                && e["note"]
                    .as_str()
                    .is_some_and(|n| n.contains("still attached to VM k8s-agentpool1-31415926-0"))
        });
        if found {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no VolumeFailedDelete event\n{}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        s.disk(&pv_name).is_some(),
        "an attached disk is not deleted"
    );
    assert_eq!(
        s.call("GET", &format!("/api/v1/persistentvolumes/{pv_name}"), None)
            .0,
        200
    );
    s.rt.block_on(
        s.arm
            .attach_detach(&vm.vm, &[], std::slice::from_ref(&spec.disk_id)),
    )
    .expect("detach");
    s.gone(&format!("/api/v1/persistentvolumes/{pv_name}"));
    assert_eq!(s.disk(&pv_name), None, "deleted once detached");
}

/// Nothing is deleted by inference: a Retain volume's disk stays after the admin deletes the
/// Released PV, and disks other drivers or clusters tagged in the same resource group (the same
/// `kubernetes.io-created-for-*` tags) are never touched, across provisioner restarts.
#[test]
fn kept_disks_and_other_drivers_disks_are_never_deleted() {
    let mut s = Setup::start();
    s.class("keep", json!({}), json!({"reclaimPolicy": "Retain"}));
    let kept_pv = s.released("kept", "keep");
    // The admin deletes the Released PV (the usual step before reusing the disk).
    s.call(
        "DELETE",
        &format!("/api/v1/persistentvolumes/{kept_pv}"),
        None,
    );
    s.gone(&format!("/api/v1/persistentvolumes/{kept_pv}"));
    // Another cluster's (or the Azure Disk CSI driver's) unattached disk with the same tags.
    let foreign = "pvc-00000000-0000-4000-8000-000000000001";
    let params = flexdisk_azure::DiskParams::parse([]).expect("params");
    let mut spec = flexdisk_azure::DiskSpec::from_params(
        &params,
        foreign,
        1,
        None,
        &s.arm.resource_group,
        &s.arm.location,
    );
    for (k, v) in [
        ("kubernetes.io-created-for-pv-name", foreign),
        ("kubernetes.io-created-for-pvc-name", "gone"),
        ("kubernetes.io-created-for-pvc-namespace", "default"),
    ] {
        spec.tags.insert(k.to_string(), v.to_string());
    }
    s.rt.block_on(s.arm.create_disk(&spec)).expect("disk");
    // A claim's owner forges this provisioner's intent, naming the kept disk, and deletes the
    // claim: the intent names only the disk the claim's own UID gives, so nothing is deleted.
    let kept_uri = s.disk(&kept_pv).expect("kept").id;
    let sc = json!({"metadata": {"name": "other"}, "provisioner": "example.com/other"});
    assert_eq!(
        s.call("POST", "/apis/storage.k8s.io/v1/storageclasses", Some(sc))
            .0,
        201
    );
    let (status, _) = s.call(
        "POST",
        PVCS,
        Some(json!({
        "metadata": {"name": "forged", "finalizers": ["flexdisk/azure-disk-disk-in-progress"], "annotations": {
            "volume.kubernetes.io/storage-provisioner": "flexdisk/azure-disk",
            "flexdisk/disk-in-progress": kept_uri}},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "other",
                 "resources": {"requests": {"storage": "1Gi"}}}})),
    );
    assert_eq!(status, 201);
    s.call("DELETE", &format!("{PVCS}/forged"), None);
    s.gone(&format!("{PVCS}/forged"));
    for _ in 0..3 {
        s.crash_and_restart();
        std::thread::sleep(Duration::from_secs(2));
    }
    s.sim.control("DELETE", "/counters", None).expect("reset");
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        s.disk(&kept_pv).is_some(),
        "the Retain volume's disk was deleted"
    );
    assert!(
        s.disk(foreign).is_some(),
        "another driver's disk was deleted"
    );
    let (_, c) = s.sim.control("GET", "/counters", None).expect("counters");
    assert_eq!(c["Disks_Delete"].as_u64().unwrap_or(0), 0, "{c}");
}

/// A claim deleted while its disk is being made — with the provisioner killed in the middle —
/// leaves no disk: the intent recorded on the claim before the disk's PUT holds the claim until
/// the restarted provisioner has deleted the disk.
#[test]
fn a_claim_deleted_while_its_disk_is_made_leaves_no_disk() {
    let mut s = Setup::start();
    s.class("fast", json!({}), json!({}));
    // The disk's creation is followed slowly enough to delete the claim and kill the
    // provisioner meanwhile (the disk exists in Azure by then).
    s.sim
        .control(
            "POST",
            "/faults",
            Some(&json!({"operation": "OperationStatus", "times": 1, "action": {"kind": "latency", "ms": 4000}})),
        )
        .expect("fault");
    let c = s.claim("doomed", "fast", "1Gi");
    let disk = format!("pvc-{}", c["metadata"]["uid"].as_str().expect("uid"));
    let claim = s.until(&format!("{PVCS}/doomed"), "the intent recorded", |o| {
        o["metadata"]["finalizers"].as_array().is_some_and(|f| {
            f.iter()
                .any(|f| f == "flexdisk/azure-disk-disk-in-progress")
        })
    });
    assert!(
        claim["metadata"]["annotations"]["flexdisk/disk-in-progress"]
            .as_str()
            .is_some_and(|u| u.ends_with(&format!("/disks/{disk}"))),
        "{claim}"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while s.disk(&disk).is_none() {
        assert!(Instant::now() < deadline, "the disk was never created");
        std::thread::sleep(Duration::from_millis(50));
    }
    s.call("DELETE", &format!("{PVCS}/doomed"), None);
    s.crash_and_restart();
    s.gone(&format!("{PVCS}/doomed"));
    assert_eq!(
        s.disk(&disk),
        None,
        "the disk made for the deleted claim is gone"
    );
    assert_eq!(
        s.call("GET", &format!("/api/v1/persistentvolumes/{disk}"), None)
            .0,
        404
    );
}

#[test]
fn crashes_while_claims_come_and_go_leave_nothing_behind() {
    let mut s = Setup::start();
    s.class("fast", json!({}), json!({}));
    let mut pause = pauses(0x9E3779B97F4A7C15, 20, 300);
    let names: Vec<String> = (0..60).map(|i| format!("churn-{i}")).collect();
    for (round, chunk) in names.chunks(10).enumerate() {
        for n in chunk {
            s.claim(n, "fast", "1Gi");
        }
        std::thread::sleep(pause());
        // Claims deleted while they are being provisioned, then a crash.
        for n in chunk.iter().take(5) {
            s.call("DELETE", &format!("{PVCS}/{n}"), None);
        }
        if round % 2 == 0 {
            std::thread::sleep(pause());
        }
        s.crash_and_restart();
    }
    for n in names.iter().filter(|n| {
        n.trim_start_matches("churn-")
            .parse::<usize>()
            .is_ok_and(|i| i % 10 >= 5)
    }) {
        s.until(&format!("{PVCS}/{n}"), "Bound", |o| {
            o["status"]["phase"] == "Bound"
        });
    }
    // PVs of claims deleted after their PV was made are on their way out; the survivors all have one.
    let (_, pvs) = s.disks_and_pvs();
    assert!(pvs.len() >= 30, "{pvs:?}");
    s.delete_all_and_converge(&names, Duration::from_secs(120));
}

/// kube-controller-manager never grows FlexVolume PVs: the provisioner does, as the external
/// resizer would — disk, PV, then the claim's status handing the filesystem to the node. A request
/// Azure refuses is Infeasible, and lowering it afterwards (recovery from expansion failure) is
/// honoured.
#[test]
fn a_grown_claim_grows_its_disk_and_volume_and_waits_for_the_node() {
    let s = Setup::start();
    let (_, pv) = s.expandable_claim("big", "5Gi");
    let grow = |size: &str| {
        let (status, body) = s.call(
            "PATCH",
            &format!("{PVCS}/big"),
            Some(json!({"spec": {"resources": {"requests": {"storage": size}}}})),
        );
        assert_eq!(status, 200, "{body}");
    };
    grow("8Gi");
    let claim = s.until(&format!("{PVCS}/big"), "the node's turn", |o| {
        o["status"]["allocatedResourceStatuses"]["storage"] == "NodeResizePending"
    });
    assert_eq!(claim["status"]["allocatedResources"]["storage"], "8Gi");
    assert_eq!(
        claim["status"]["capacity"]["storage"], "5Gi",
        "the node has not grown it yet"
    );
    let types: Vec<&str> = claim["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["type"].as_str())
        .collect();
    assert!(types.contains(&"FileSystemResizePending"), "{claim}");
    s.disk_reaches(&pv, 8);
    let (_, volume) = s.call("GET", &format!("/api/v1/persistentvolumes/{pv}"), None);
    assert_eq!(volume["spec"]["capacity"]["storage"], "8Gi");
    let deadline = Instant::now() + Duration::from_secs(10);
    for r in ["Resizing", "FileSystemResizeRequired"] {
        while !reasons(&s, "big").iter().any(|x| x == r) {
            assert!(Instant::now() < deadline, "{r} in {:?}", reasons(&s, "big"));
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    // The node finishes (as kubelet does after expandfs), then a request beyond what Azure allows.
    let (status, body) = s.call(
        "PATCH",
        &format!("{PVCS}/big/status"),
        Some(json!({"status": {"capacity": {"storage": "8Gi"},
            "allocatedResourceStatuses": {"storage": null}, "conditions": []}})),
    );
    assert_eq!(status, 200, "{body}");
    grow("40000Gi");
    let claim = s.until(&format!("{PVCS}/big"), "Infeasible", |o| {
        o["status"]["allocatedResourceStatuses"]["storage"] == "ControllerResizeInfeasible"
    });
    assert!(claim["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "ControllerResizeError"
            && c["message"]
                .as_str()
                .is_some_and(|m| m.contains("lower the claim's request"))));
    assert!(reasons(&s, "big").iter().any(|r| r == "VolumeResizeFailed"));
    assert_eq!(s.disk(&pv).expect("disk").size_gib, 8, "nothing grown");
    // Recovery: a lower request (still above the volume's 8Gi) is honoured.
    grow("10Gi");
    let claim = s.until(&format!("{PVCS}/big"), "the lowered size", |o| {
        o["status"]["allocatedResourceStatuses"]["storage"] == "NodeResizePending"
    });
    assert_eq!(claim["status"]["allocatedResources"]["storage"], "10Gi");
    s.disk_reaches(&pv, 10);
}

/// kube-controller-manager's expand controller does take FlexVolume claims — with a no-op
/// "expansion" that only raises the PV's capacity and hands the claim to the node (kubernetes
/// v1.37 `pkg/volume/plugins.go` FindExpandablePluginBySpec → `noopExpandableVolumePluginInstance`;
/// `operationexecutor/operation_generator.go` expandAndRecoverFunction: MarkControllerReisizeInProgress,
/// UpdatePVSize, MarkForFSResize), and on a real cluster it often gets there before the
/// provisioner (the simulator plays it: sim/src/kube/expand.rs). Made deterministic: the
/// provisioner is down while those writes land. The disk must still grow to what the volume says
/// (else the node's expandfs waits for it forever), and the claim stays the node's.
#[test]
fn a_claim_the_controller_manager_handed_to_the_node_still_gets_its_disk_grown() {
    let mut s = Setup::start();
    let (_, pv) = s.expandable_claim("raced", "5Gi");
    let claim = format!("{PVCS}/raced");
    let _ = s.provisioner.kill();
    let _ = s.provisioner.wait();
    let (status, body) = s.call(
        "PATCH",
        &claim,
        Some(json!({"spec": {"resources": {"requests": {"storage": "8Gi"}}}})),
    );
    assert_eq!(status, 200, "{body}");
    // kube-controller-manager's part, with nobody else acting.
    s.until(&claim, "handed to the node", |o| {
        o["status"]["allocatedResourceStatuses"]["storage"] == "NodeResizePending"
    });
    s.until(
        &format!("/api/v1/persistentvolumes/{pv}"),
        "the PV raised",
        |o| o["spec"]["capacity"]["storage"] == "8Gi",
    );
    assert_eq!(s.disk(&pv).expect("disk").size_gib, 5, "the disk untouched");

    s.provisioner = spawn_provisioner(&s.sim, &s._tmp.path().join("provisioner.log"));
    s.disk_reaches(&pv, 8);
    let (_, now) = s.call("GET", &claim, None);
    assert_eq!(
        now["status"]["allocatedResourceStatuses"]["storage"], "NodeResizePending",
        "the claim stays the node's: {now}"
    );
    assert_eq!(now["status"]["allocatedResources"]["storage"], "8Gi");
    let said = note_soon(&s, "raced", "FileSystemResizeRequired", |n| {
        n.contains("as volume")
    });
    assert!(said.iter().any(|n| n.contains("as volume")), "{said:?}");
}

const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";

fn select_node(s: &Setup, claim: &str, node: &str) {
    let (status, body) = s.call(
        "PATCH",
        &format!("{PVCS}/{claim}"),
        Some(json!({"metadata": {"annotations": {SELECTED_NODE: node}}})),
    );
    assert_eq!(status, 200, "{body}");
}

/// WaitForFirstConsumer: the node the scheduler chose is gone, or Azure cannot make the disk in its
/// zone. Either way no disk is left made and `selected-node` goes, so that the scheduler chooses
/// again (the library's rescheduleProvisioning); the next choice is provisioned.
#[test]
fn a_gone_node_or_a_zonal_refusal_sends_the_claim_back_to_the_scheduler() {
    let s = Setup::start();
    s.class(
        "late",
        json!({"skuName": "Premium_LRS"}),
        json!({"volumeBindingMode": "WaitForFirstConsumer"}),
    );
    let unselected = |o: &Value| o["metadata"]["annotations"].get(SELECTED_NODE).is_none();

    // The node is gone.
    s.sim.control("DELETE", "/counters", None).expect("reset");
    let ghost = s.claim("ghost", "late", "1Gi");
    select_node(&s, "ghost", "aks-nodepool1-31415926-vmss000099");
    s.until(
        &format!("{PVCS}/ghost"),
        "selected-node removed",
        unselected,
    );
    let said = note_soon(&s, "ghost", "ProvisioningFailed", |n| {
        n.contains("vmss000099 selected for the claim's pod does not exist")
    });
    assert!(
        said.iter().any(
            |n| n.contains("vmss000099 selected for the claim's pod does not exist")
                && n.contains("choose another node")
        ),
        "{said:?}"
    );
    let (_, counters) = s.sim.control("GET", "/counters", None).expect("counters");
    assert_eq!(counters["writes"].as_u64().unwrap_or(0), 0, "{counters}");
    let ghost_pv = format!("pvc-{}", ghost["metadata"]["uid"].as_str().expect("uid"));
    assert!(s.disk(&ghost_pv).is_none());

    // Azure has no room in the node's zone: the failed disk (if any) and the record go.
    let (status, _) = s
        .sim
        .control(
            "POST",
            "/faults",
            Some(&json!({"operation": "Disks_CreateOrUpdate", "times": 1,
                "action": {"kind": "lroFail", "code": "ZonalAllocationFailed",
                    "message": "Allocation failed. We do not have sufficient capacity for the requested VM size in this zone."}})),
        )
        .expect("fault");
    assert_eq!(status, 201);
    let full = s.claim("full", "late", "1Gi");
    let full_pv = format!("pvc-{}", full["metadata"]["uid"].as_str().expect("uid"));
    select_node(&s, "full", "aks-nodepool1-31415926-vmss000001");
    let after = s.until(&format!("{PVCS}/full"), "selected-node removed", unselected);
    assert!(
        after["metadata"]["finalizers"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|f| !f.as_str().unwrap_or_default().contains("disk-in-progress")),
        "the provisioning record is cleared: {after}"
    );
    assert!(s.disk(&full_pv).is_none(), "no disk left in the full zone");
    let said = note_soon(&s, "full", "ProvisioningFailed", |n| {
        n.contains("ZonalAllocationFailed")
    });
    assert!(
        said.iter()
            .any(|n| n.contains("ZonalAllocationFailed") && n.contains("choose another node")),
        "{said:?}"
    );
    // The scheduler's next choice is provisioned.
    select_node(&s, "full", "aks-nodepool1-31415926-vmss000001");
    s.until(&format!("{PVCS}/full"), "Bound", |o| {
        o["status"]["phase"] == "Bound"
    });
    assert_eq!(s.disk(&full_pv).expect("disk").zones, vec!["2".to_string()]);

    // A disk made for a node (its PV not made yet: the API server refuses it for a while) whose
    // node then goes: the disk, in that node's zone, is deleted before the scheduler chooses again.
    let (status, rule) = s.call(
        "POST",
        "/_sim/faults",
        Some(json!({"operation": "create persistentvolumes",
            "action": {"kind": "status", "status": 500}})),
    );
    assert_eq!(status, 201, "{rule}");
    let moved = s.claim("moved", "late", "1Gi");
    let moved_pv = format!("pvc-{}", moved["metadata"]["uid"].as_str().expect("uid"));
    select_node(&s, "moved", "aks-nodepool1-31415926-vmss000001");
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.disk(&moved_pv).is_none() {
        assert!(Instant::now() < deadline, "no disk made\n{}", s.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    s.sim.control("DELETE", "/counters", None).expect("reset");
    select_node(&s, "moved", "aks-nodepool1-31415926-vmss000098");
    s.until(
        &format!("{PVCS}/moved"),
        "selected-node removed",
        unselected,
    );
    s.call("DELETE", &format!("/_sim/faults/{}", rule["id"]), None);
    assert!(
        s.disk(&moved_pv).is_none(),
        "the disk made for the gone node's zone is deleted"
    );
    let (_, counters) = s.sim.control("GET", "/counters", None).expect("counters");
    assert_eq!(counters["Disks_Delete"].as_u64(), Some(1), "{counters}");
    let (_, pv) = s.call(
        "GET",
        &format!("/api/v1/persistentvolumes/{moved_pv}"),
        None,
    );
    assert_eq!(pv["code"], 404, "no PV: {pv}");
}

/// The PV finalizer as the library keeps it: a Delete volume switched to Retain loses it, so after
/// its claim goes the admin deletes the PV at once and the disk stays; a kept (Retain) volume made
/// Available again can be deleted too.
#[test]
fn a_volume_switched_to_retain_is_deleted_at_once_and_keeps_its_disk() {
    let s = Setup::start();
    s.class("std", json!({}), json!({}));
    let c = s.claim("keep", "std", "1Gi");
    let pv = format!("pvc-{}", c["metadata"]["uid"].as_str().expect("uid"));
    s.until(&format!("{PVCS}/keep"), "Bound", |o| {
        o["status"]["phase"] == "Bound"
    });
    let pv_path = format!("/api/v1/persistentvolumes/{pv}");
    let has_finalizer = |o: &Value| {
        o["metadata"]["finalizers"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|f| f == "external-provisioner.volume.kubernetes.io/finalizer")
    };
    s.until(&pv_path, "the finalizer on a Delete volume", has_finalizer);
    let (status, body) = s.call(
        "PATCH",
        &pv_path,
        Some(json!({"spec": {"persistentVolumeReclaimPolicy": "Retain"}})),
    );
    assert_eq!(status, 200, "{body}");
    s.until(&pv_path, "the finalizer gone", |o| !has_finalizer(o));
    // Back to Delete: the finalizer comes back (the volume is Bound); then Retain again.
    for (policy, with) in [("Delete", true), ("Retain", false)] {
        let (status, body) = s.call(
            "PATCH",
            &pv_path,
            Some(json!({"spec": {"persistentVolumeReclaimPolicy": policy}})),
        );
        assert_eq!(status, 200, "{body}");
        s.until(&pv_path, "the finalizer following the policy", |o| {
            has_finalizer(o) == with
        });
    }
    s.call("DELETE", &format!("{PVCS}/keep"), None);
    s.until(&pv_path, "Released", |o| o["status"]["phase"] == "Released");
    s.call("DELETE", &pv_path, None);
    s.gone(&pv_path);
    std::thread::sleep(Duration::from_secs(3));
    assert!(s.disk(&pv).is_some(), "the kept disk stays");

    // A Retain class: its volumes never carry the finalizer; one made Available is deletable.
    s.class("kept", json!({}), json!({"reclaimPolicy": "Retain"}));
    let c = s.claim("kept", "kept", "1Gi");
    let pv = format!("pvc-{}", c["metadata"]["uid"].as_str().expect("uid"));
    let pv_path = format!("/api/v1/persistentvolumes/{pv}");
    s.until(&format!("{PVCS}/kept"), "Bound", |o| {
        o["status"]["phase"] == "Bound"
    });
    assert!(!has_finalizer(&s.call("GET", &pv_path, None).1));
    s.call("DELETE", &format!("{PVCS}/kept"), None);
    s.until(&pv_path, "Released", |o| o["status"]["phase"] == "Released");
    let (status, body) = s.call("PATCH", &pv_path, Some(json!({"spec": {"claimRef": null}})));
    assert_eq!(status, 200, "{body}");
    s.until(&pv_path, "Available", |o| {
        o["status"]["phase"] == "Available"
    });
    s.call("DELETE", &pv_path, None);
    s.gone(&pv_path);
    std::thread::sleep(Duration::from_secs(2));
    assert!(s.disk(&pv).is_some(), "the kept disk stays");
}

/// A claim applied before its StorageClass (a directory applied at once, GitOps ordering) is
/// provisioned once the class appears. kube-controller-manager names the provisioner on the claim
/// only once it finds the class (pv_controller.go, provisionClaim, on its 15 s resync; the
/// simulator at once); a claim already addressed to us whose class is missing (deleted and made
/// again) says so in an event and is woken by the class's creation, not by its next retry.
#[test]
fn a_claim_made_before_its_class_is_provisioned_when_the_class_comes() {
    let s = Setup::start();
    s.claim("early", "arrives-later", "1Gi");
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        s.call("GET", &format!("{PVCS}/early"), None).1["status"]["phase"],
        "Pending"
    );
    s.class("arrives-later", json!({}), json!({}));
    s.until(&format!("{PVCS}/early"), "Bound", |o| {
        o["status"]["phase"] == "Bound"
    });

    let (status, body) = s.call(
        "POST",
        PVCS,
        Some(json!({"metadata": {"name": "addressed", "annotations": {
                "volume.kubernetes.io/storage-provisioner": "flexdisk/azure-disk",
                "volume.beta.kubernetes.io/storage-provisioner": "flexdisk/azure-disk"}},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "recreated",
                "resources": {"requests": {"storage": "1Gi"}}}})),
    );
    assert_eq!(status, 201, "{body}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !notes(&s, "addressed", "ProvisioningFailed")
        .iter()
        .any(|n| n.contains("\"recreated\" does not exist"))
    {
        assert!(Instant::now() < deadline, "no event\n{}", s.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    // Retries at 1, 3, 7 and 15 s: at 8 s the next is 7 s away.
    std::thread::sleep(Duration::from_secs(8));
    s.class("recreated", json!({}), json!({}));
    let created = Instant::now();
    s.until(&format!("{PVCS}/addressed"), "Bound", |o| {
        o["status"]["phase"] == "Bound"
    });
    let took = created.elapsed();
    assert!(
        took < Duration::from_secs(4),
        "bound {took:?} after the class appeared: its creation did not wake the claim"
    );
}

/// Azure refuses every disk PUT (a missing role): each attempt is a ProvisioningFailed event with
/// Azure's code, attempts back off (1 s doubling), and the claim goes cleanly.
#[test]
fn azure_refusing_every_disk_is_an_event_with_its_code_and_backs_off() {
    let s = Setup::start();
    s.class("std", json!({}), json!({}));
    let (status, _) = s
        .sim
        .control(
            "POST",
            "/faults",
            Some(&json!({"operation": "Disks_CreateOrUpdate",
                "action": {"kind": "status", "status": 403, "code": "AuthorizationFailed",
                    "message": "The client 'flexdisk' does not have authorization to perform action 'Microsoft.Compute/disks/write'."}})),
        )
        .expect("fault");
    assert_eq!(status, 201);
    s.sim.control("DELETE", "/counters", None).expect("reset");
    let started = Instant::now();
    s.claim("denied", "std", "1Gi");
    let deadline = started + Duration::from_secs(10);
    while !notes(&s, "denied", "ProvisioningFailed")
        .iter()
        .any(|n| n.contains("AuthorizationFailed"))
    {
        assert!(
            Instant::now() < deadline,
            "no event with Azure's code\n{}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // When each PUT came, watched for 20 s.
    let mut seen = Vec::new();
    let mut last = 0;
    while started.elapsed() < Duration::from_secs(20) {
        let (_, counters) = s.sim.control("GET", "/counters", None).expect("counters");
        let puts = counters["Disks_CreateOrUpdate"].as_u64().unwrap_or(0);
        if puts > last {
            seen.push(started.elapsed().as_secs_f64());
            last = puts;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    // PUTs within 0.3 s of each other are one attempt (see below).
    seen.dedup_by(|later, earlier| *later - *earlier < 0.3);
    let gaps: Vec<f64> = seen.windows(2).map(|w| w[1] - w[0]).collect();
    eprintln!("disk PUTs at {seen:.2?} s: gaps {gaps:.2?}");
    // Attempts at 0, 1, 3, 7 and 15 s: each wait about twice the one before. The first attempt's
    // own write (the provisioning record) wakes the claim once more at once, as any change does
    // (a workqueue Add is not rate-limited either): one PUT more, no more.
    assert!(
        last <= seen.len() as u64 + 1,
        "one PUT per attempt: {last}, {seen:?}"
    );
    assert!((4..=6).contains(&seen.len()), "{seen:?}");
    assert!(gaps[0] >= 0.8, "{gaps:?}");
    for w in gaps.windows(2).take(3) {
        assert!(
            w[1] >= 1.6 * w[0] && w[1] <= 2.6 * w[0],
            "doubling: {gaps:?}"
        );
    }
    s.sim.control("DELETE", "/faults", None).expect("clear");
    s.delete_all_and_converge(&["denied".to_string()], Duration::from_secs(30));
}

/// A claim's VolumeAttributesClass: the disk is made with its IOPS and MB/s (the PV cannot name
/// the class — kube-apiserver allows that on CSI volumes only — so the provisioner binds the claim
/// to its volume itself and makes the class current); switching the claim to another class changes
/// the live disk; a class Azure refuses is Infeasible with Azure's reason, written once; a class
/// that does not exist is Pending.
#[test]
fn a_claim_s_volume_attributes_class_shapes_its_disk_and_switches_live() {
    let s = Setup::start();
    let vac = |name: &str, params: Value| {
        let (status, body) = s.call(
            "POST",
            "/apis/storage.k8s.io/v1/volumeattributesclasses",
            Some(json!({"metadata": {"name": name}, "driverName": "flexdisk/azure-disk", "parameters": params})),
        );
        assert_eq!(status, 201, "{body}");
    };
    vac(
        "silver",
        json!({"diskIOPSReadWrite": "6000", "diskMBpsReadWrite": "300"}),
    );
    vac(
        "gold",
        json!({"DiskIOPSReadWrite": "8000", "diskMBpsReadWrite": "400"}),
    );
    vac("too-fast", json!({"diskIOPSReadWrite": "500000"}));
    s.class(
        "v2",
        json!({"skuName": "PremiumV2_LRS"}),
        json!({"volumeBindingMode": "WaitForFirstConsumer"}),
    );
    let (status, c) = s.call("POST", PVCS, Some(json!({
        "metadata": {"name": "tuned"},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "v2", "volumeAttributesClassName": "silver",
                 "resources": {"requests": {"storage": "100Gi"}}}})));
    assert_eq!(status, 201, "{c}");
    select_node(&s, "tuned", "aks-nodepool1-31415926-vmss000001");
    let pv_name = format!("pvc-{}", c["metadata"]["uid"].as_str().expect("uid"));
    let claim = format!("{PVCS}/tuned");
    let bound = s.until(&claim, "Bound with silver current", |o| {
        o["status"]["phase"] == "Bound"
            && o["status"]["currentVolumeAttributesClassName"] == "silver"
    });
    assert_eq!(bound["spec"]["volumeName"], pv_name.as_str());
    assert!(
        bound["status"]
            .get("modifyVolumeStatus")
            .is_none_or(Value::is_null),
        "{bound}"
    );
    let perf = |s: &Setup| s.disk(&pv_name).expect("disk").performance;
    assert_eq!((perf(&s).iops, perf(&s).mbps), (Some(6000), Some(300)));
    let pv = s.until(
        &format!("/api/v1/persistentvolumes/{pv_name}"),
        "PV",
        |_| true,
    );
    assert!(
        pv["spec"].get("volumeAttributesClassName").is_none(),
        "{pv}"
    );

    // Switched live: the disk attached to the pod's node (PremiumV2 is zonal: the selected node's
    // VM, in the disk's zone) while its performance changes.
    s.attach(&pv_name, "aks-nodepool1-31415926-vmss000001");
    s.sim.control("DELETE", "/counters", None).expect("reset");
    let switch = |to: &str| {
        let (status, body) = s.call(
            "PATCH",
            &claim,
            Some(json!({"spec": {"volumeAttributesClassName": to}})),
        );
        assert_eq!(status, 200, "{body}");
    };
    switch("gold");
    s.until(&claim, "gold current", |o| {
        o["status"]["currentVolumeAttributesClassName"] == "gold"
            && o["status"]
                .get("modifyVolumeStatus")
                .is_none_or(Value::is_null)
    });
    assert_eq!((perf(&s).iops, perf(&s).mbps), (Some(8000), Some(400)));
    assert!(
        !s.disk(&pv_name).expect("disk").attached_to().is_empty(),
        "changed while attached"
    );
    let (_, counters) = s.sim.control("GET", "/counters", None).expect("counters");
    assert_eq!(counters["Disks_Update"], 1, "one PATCH: {counters}");
    assert!(note_soon(&s, "tuned", "VolumeModifySuccessful", |n| n
        .contains("8000 IOPS"))
    .iter()
    .any(|n| n.contains("8000 IOPS")));

    // Azure refuses 500000 IOPS for 100 GiB: Infeasible with Azure's reason, one write only.
    s.sim.control("DELETE", "/counters", None).expect("reset");
    switch("too-fast");
    let refused = s.until(&claim, "Infeasible", |o| {
        o["status"]["modifyVolumeStatus"]["status"] == "Infeasible"
    });
    assert_eq!(
        refused["status"]["modifyVolumeStatus"]["targetVolumeAttributesClassName"],
        "too-fast"
    );
    assert_eq!(
        refused["status"]["currentVolumeAttributesClassName"],
        "gold"
    );
    assert!(
        notes(&s, "tuned", "VolumeModifyFailed")
            .iter()
            .any(|n| n.contains("500000") && n.contains("BadRequest")),
        "{:?}",
        events(&s, "tuned")
    );
    // Resynced and woken again, it is not sent again.
    s.call(
        "PATCH",
        &claim,
        Some(json!({"metadata": {"labels": {"poke": "1"}}})),
    );
    std::thread::sleep(Duration::from_secs(2));
    let (_, counters) = s.sim.control("GET", "/counters", None).expect("counters");
    assert_eq!(
        counters["Disks_Update"], 1,
        "Infeasible is not retried: {counters}"
    );
    assert_eq!(perf(&s).iops, Some(8000));

    // A class that does not exist: Pending; once it exists, applied.
    switch("platinum");
    s.until(&claim, "Pending", |o| {
        o["status"]["modifyVolumeStatus"]["status"] == "Pending"
            && o["status"]["modifyVolumeStatus"]["targetVolumeAttributesClassName"] == "platinum"
    });
    // Dropping an applied class is kube-apiserver's to refuse.
    let (status, _) = s.call(
        "PATCH",
        &claim,
        Some(json!({"spec": {"volumeAttributesClassName": null}})),
    );
    assert_eq!(status, 422);
    vac(
        "platinum",
        json!({"diskIOPSReadWrite": "10000", "diskMBpsReadWrite": "500"}),
    );
    // Its appearance wakes the claim (no change of the claim is needed).
    s.until(&claim, "platinum current", |o| {
        o["status"]["currentVolumeAttributesClassName"] == "platinum"
    });
    assert_eq!(perf(&s).iops, Some(10000));
}

/// Fresh claims are provisioned and bound, and nothing else: the PV controller names the volume
/// on the claim before it writes the claim Bound with its capacity, and a claim seen in between
/// is no request to grow (no resize status, no resize event, no Azure read, the PV as made).
#[test]
fn a_claim_being_bound_is_not_taken_for_a_growth() {
    let s = Setup::start();
    s.class("plain", json!({}), json!({}));
    let names: Vec<String> = (0..60).map(|i| format!("fresh-{i}")).collect();
    for n in &names {
        s.claim(n, "plain", "1Gi");
    }
    for n in &names {
        s.until(&format!("{PVCS}/{n}"), "Bound", |o| {
            o["status"]["phase"] == "Bound"
        });
    }
    s.sim.control("DELETE", "/counters", None).expect("reset");
    // Long enough for any late reconcile of a claim woken by its binding.
    std::thread::sleep(Duration::from_secs(3));
    for n in &names {
        let (_, claim) = s.call("GET", &format!("{PVCS}/{n}"), None);
        let status = &claim["status"];
        assert!(
            status.get("allocatedResources").is_none()
                && status.get("allocatedResourceStatuses").is_none()
                && status
                    .get("conditions")
                    .is_none_or(|c| c.as_array().is_none_or(Vec::is_empty)),
            "{n} carries a resize status: {status}"
        );
        let resized: Vec<String> = reasons(&s, n)
            .into_iter()
            .filter(|r| r == "Resizing" || r == "FileSystemResizeRequired")
            .collect();
        assert!(resized.is_empty(), "{n}: {resized:?}");
        let pv = claim["spec"]["volumeName"].as_str().expect("volume");
        let (_, pv) = s.call("GET", &format!("/api/v1/persistentvolumes/{pv}"), None);
        assert_eq!(pv["spec"]["capacity"]["storage"], "1Gi", "{pv}");
    }
    let (_, counters) = s.sim.control("GET", "/counters", None).expect("counters");
    assert_eq!(counters["reads"].as_u64().unwrap_or(0), 0, "{counters}");
}
