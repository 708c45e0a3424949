//! The provisioner on failure and adversarial paths (issue 24): a claim cannot copy a volume its
//! source is not bound to, a size Azure refuses is not tried in a loop, growth Azure makes only
//! on a detached disk waits for the pods to go, a claim the node could not grow goes back to the
//! node when asked for more, a read-only volume is refused growth up front, a source claim stays
//! while it is copied — and a ledger of every permanent failure, bounded.

mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const NODE: &str = "k8s-agentpool1-31415926-0";

fn counters(s: &Setup) -> (BTreeMap<String, u64>, BTreeMap<String, u64>) {
    let as_map = |v: Value| -> BTreeMap<String, u64> {
        v.as_object()
            .into_iter()
            .flatten()
            .map(|(k, n)| (k.clone(), n.as_u64().unwrap_or(0)))
            .collect()
    };
    let (_, arm) = s
        .sim
        .control("GET", "/counters", None)
        .expect("ARM counters");
    let (_, kube) = s
        .sim
        .control_at("kube", "GET", "/_sim/counters", None)
        .expect("kube counters");
    (as_map(arm), as_map(kube))
}

fn writes_to(map: &BTreeMap<String, u64>, object: &str) -> u64 {
    map.get(&format!("writes to {}", object.to_ascii_lowercase()))
        .copied()
        .unwrap_or(0)
}

fn uid(claim: &Value) -> String {
    claim["metadata"]["uid"].as_str().expect("uid").to_string()
}

fn claims_in(ns: &str) -> String {
    format!("/api/v1/namespaces/{ns}/persistentvolumeclaims")
}

fn namespace(s: &Setup, ns: &str) {
    let (status, body) = s.call(
        "POST",
        "/api/v1/namespaces",
        Some(json!({"metadata": {"name": ns}})),
    );
    assert_eq!(status, 201, "{body}");
}

fn post_claim(s: &Setup, ns: &str, body: Value) -> Value {
    let (status, c) = s.call("POST", &claims_in(ns), Some(body));
    assert_eq!(status, 201, "{c}");
    c
}

fn grow(s: &Setup, ns: &str, name: &str, size: &str) {
    let (status, body) = s.call(
        "PATCH",
        &format!("{}/{name}", claims_in(ns)),
        Some(json!({"spec": {"resources": {"requests": {"storage": size}}}})),
    );
    assert_eq!(status, 200, "{body}");
}

/// Waits until nobody has written the object for 3 s (the provisioner and kube-controller-manager
/// both act on a claim's growth; a retry of the one that lost a race comes within a few seconds).
fn settled(s: &Setup, path: &str) {
    let version = || s.until(path, "the object", |_| true)["metadata"]["resourceVersion"].clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut last, mut since) = (version(), Instant::now());
    while since.elapsed() < Duration::from_secs(3) {
        assert!(
            Instant::now() < deadline,
            "{path} kept changing\n{}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(250));
        let now = version();
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
}

/// Polls `f` to a deadline; the provisioner's log on failure.
fn eventually(s: &Setup, what: &str, within: Duration, f: impl Fn() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "never {what}\nprovisioner log:\n{}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn provisioned_disk(s: &Setup, claim_uid: &str) -> Option<flexdisk_azure::DiskInfo> {
    s.disk(&format!("pvc-{claim_uid}"))
}

/// The attack of issue 24. In namespace `attacker`, claim `x` names the volume of `default/wide`
/// in `spec.volumeName` (any user who may create claims can write that) and claim `y` clones
/// `x`. Before, `y` became a copy of `wide`'s disk. Now nothing is copied: `x` is not bound
/// (waited for, with an event), and even a status forged to say Bound does not make `wide`'s
/// volume `x`'s (refused: the volume is not bound back to it).
#[test]
fn a_claim_never_clones_a_volume_its_source_is_not_bound_to() {
    let s = Setup::start();
    s.class("fast", json!({}), json!({}));
    let wide = s.claim("wide", "fast", "2Gi");
    s.until(&format!("{PVCS}/wide"), "Bound", |o| {
        o["status"]["phase"] == "Bound"
    });
    let victim_pv = format!("pvc-{}", uid(&wide));
    namespace(&s, "attacker");
    let x = post_claim(
        &s,
        "attacker",
        json!({"metadata": {"name": "x"},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "fast", "volumeName": victim_pv,
                 "resources": {"requests": {"storage": "2Gi"}}}}),
    );
    let y = post_claim(
        &s,
        "attacker",
        json!({"metadata": {"name": "y"},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "fast",
                 "resources": {"requests": {"storage": "2Gi"}},
                 "dataSource": {"kind": "PersistentVolumeClaim", "name": "x"}}}),
    );
    eventually(&s, "y told why it waits", Duration::from_secs(20), || {
        events_in(&s, "attacker", "y")
            .iter()
            .any(|(r, n)| r == "ProvisioningFailed" && n.contains("not bound"))
    });
    assert_eq!(
        provisioned_disk(&s, &uid(&y)),
        None,
        "no copy of wide's disk"
    );

    // A tenant that may write claim status forges x as Bound: the PV controller makes it Lost
    // at once (its volume names another claim, syncBoundClaim's ClaimMisbound), and whatever
    // the provisioner reads meanwhile, the volume is not bound back to x (decide.rs's unit tests
    // show the refusal itself).
    let (status, body) = s.call(
        "PATCH",
        &format!("{}/x/status", claims_in("attacker")),
        Some(json!({"status": {"phase": "Bound"}})),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(uid(&body), uid(&x));
    s.until(&format!("{}/x", claims_in("attacker")), "x Lost", |o| {
        o["status"]["phase"] == "Lost"
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(provisioned_disk(&s, &uid(&y)), None, "still no copy");
    assert!(
        events_in(&s, "attacker", "y")
            .iter()
            .all(|(_, n)| !n.contains("wide") && !n.contains(&victim_pv)),
        "the refusal says nothing of the other tenant's volume"
    );
    // Its own namespace's source works (the check is not simply "never clone").
    let (status, _) = s.call("POST", PVCS, Some(json!({"metadata": {"name": "wide-copy"},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "fast", "resources": {"requests": {"storage": "2Gi"}},
                 "dataSource": {"kind": "PersistentVolumeClaim", "name": "wide"}}})));
    assert_eq!(status, 201);
    s.until(&format!("{PVCS}/wide-copy"), "Bound", |o| {
        o["status"]["phase"] == "Bound"
    });
}

/// A `dataSourceRef` naming another namespace never reaches the provisioner as a clone: with
/// Kubernetes' default gates the API server drops it (the claim asks for an empty volume); and
/// the provisioner itself refuses one (decide.rs's unit tests).
#[test]
fn a_cross_namespace_data_source_ref_is_an_empty_volume() {
    let s = Setup::start();
    s.class("fast", json!({}), json!({}));
    s.claim("wide", "fast", "2Gi");
    s.until(&format!("{PVCS}/wide"), "Bound", |o| {
        o["status"]["phase"] == "Bound"
    });
    namespace(&s, "attacker");
    let z = post_claim(
        &s,
        "attacker",
        json!({"metadata": {"name": "z"},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "fast", "resources": {"requests": {"storage": "2Gi"}},
                 "dataSourceRef": {"kind": "PersistentVolumeClaim", "name": "wide", "namespace": "default"}}}),
    );
    assert!(z["spec"].get("dataSourceRef").is_none(), "{z}");
    s.until(&format!("{}/z", claims_in("attacker")), "Bound", |o| {
        o["status"]["phase"] == "Bound"
    });
    let (_, state) = s.sim.control("GET", "/state", None).expect("state");
    let made = state["disks"]
        .as_object()
        .into_iter()
        .flat_map(|m| m.values())
        .find(|d| d["name"] == format!("pvc-{}", uid(&z)).as_str())
        .cloned()
        .expect("z's disk");
    assert!(
        !made
            .to_string()
            .contains(&uid(&s.until(&format!("{PVCS}/wide"), "wide", |_| true))),
        "an empty disk, not a copy: {made}"
    );
}

/// Raising a claim beyond any disk: one write, `ControllerResizeInfeasible` with Azure's reason,
/// then nothing until the request changes (before: 1,200 writes in 12 s). Lowering it afterwards
/// is honoured.
#[test]
fn a_size_azure_refuses_is_written_once_not_in_a_loop() {
    let s = Setup::start();
    let (_, disk) = s.expandable_claim("big", "5Gi");
    let claim = format!("{PVCS}/big");
    let (arm0, kube0) = counters(&s);
    grow(&s, "default", "big", "40000Gi");
    s.until(&claim, "Infeasible", |o| {
        o["status"]["allocatedResourceStatuses"]["storage"] == "ControllerResizeInfeasible"
    });
    // Long enough for a loop to show (it made 100 writes a second).
    std::thread::sleep(Duration::from_secs(8));
    let (arm1, kube1) = counters(&s);
    let disk_writes =
        writes_to(&arm1, &format!("disks/{disk}")) - writes_to(&arm0, &format!("disks/{disk}"));
    let claim_writes = writes_to(&kube1, "persistentvolumeclaims/default/big")
        - writes_to(&kube0, "persistentvolumeclaims/default/big");
    let event_writes =
        writes_to(&kube1, "events/default/big") - writes_to(&kube0, "events/default/big");
    eprintln!("refused size: {disk_writes} ARM writes, {claim_writes} claim writes, {event_writes} event writes in 8 s");
    assert_eq!(disk_writes, 1, "one try");
    assert!(claim_writes <= 3, "{claim_writes} claim writes");
    assert!(event_writes <= 3, "{event_writes} event writes");
    assert_eq!(s.disk(&disk).expect("disk").size_gib, 5, "nothing grown");
    // kube-controller-manager's worker comes after the refusal: taken back at once, without
    // asking Azure again.
    controller_manager_hands_to_node(&s, &claim, &disk, "40000Gi", "5Gi");
    taken_back(&s, &claim, &disk, "5Gi");
    let (arm2, _) = counters(&s);
    assert_eq!(
        writes_to(&arm2, &format!("disks/{disk}")),
        writes_to(&arm1, &format!("disks/{disk}")),
        "not asked again"
    );
    // Recovery: a lower request (still above the volume's 5 GiB) is honoured.
    grow(&s, "default", "big", "7Gi");
    let claim = s.until(&claim, "the lowered size", |o| {
        o["status"]["allocatedResourceStatuses"]["storage"] == "NodeResizePending"
    });
    assert_eq!(claim["status"]["allocatedResources"]["storage"], "7Gi");
    s.disk_reaches(&disk, 7);
}

/// Growth Azure makes only on a detached disk (a shared disk, attached): one write, a condition
/// and an event naming the pod that uses the claim, then no write while it does (before: 9,110
/// writes in 30 s); once the pod is gone and the disk detached, the growth goes through.
#[test]
fn growth_that_needs_a_detached_disk_waits_for_the_pods_to_go() {
    let s = Setup::start();
    s.class(
        "shared",
        json!({"skuName": "Premium_LRS", "maxShares": "2"}),
        json!({"allowVolumeExpansion": true}),
    );
    let c = s.claim("db", "shared", "4Gi");
    let disk = format!("pvc-{}", uid(&c));
    let claim = format!("{PVCS}/db");
    s.until(&claim, "Bound", |o| o["status"]["phase"] == "Bound");
    let (vm, spec) = s.attach(&disk, NODE);
    let (status, pod) = s.call(
        "POST",
        "/api/v1/namespaces/default/pods",
        Some(json!({
        "metadata": {"name": "db-0"},
        "spec": {"nodeName": NODE, "containers": [{"name": "c", "image": "busybox"}],
                 "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "db"}}]}})),
    );
    assert_eq!(status, 201, "{pod}");
    let (arm0, _) = counters(&s);
    grow(&s, "default", "db", "8Gi");
    eventually(&s, "told to detach", Duration::from_secs(20), || {
        events_in(&s, "default", "db").iter().any(|(r, n)| {
            r == "VolumeResizeFailed"
                && n.contains("only while it is detached")
                && n.contains("db-0")
        })
    });
    std::thread::sleep(Duration::from_secs(8));
    let (arm1, _) = counters(&s);
    let writes = |m: &BTreeMap<String, u64>| writes_to(m, &format!("disks/{disk}"));
    assert_eq!(
        writes(&arm1) - writes(&arm0),
        1,
        "one try while the pod runs"
    );
    let now = s.until(&claim, "the claim", |_| true);
    assert!(
        now["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "ControllerResizeError"),
        "{now}"
    );
    // The pod goes; the disk is still attached a moment (kube-controller-manager detaches it):
    // reads only.
    s.call("DELETE", "/api/v1/namespaces/default/pods/db-0", None);
    std::thread::sleep(Duration::from_secs(3));
    let (arm2, _) = counters(&s);
    assert_eq!(
        writes(&arm2) - writes(&arm0),
        1,
        "no write while still attached"
    );
    s.rt.block_on(
        s.arm
            .attach_detach(&vm.vm, &[], std::slice::from_ref(&spec.disk_id)),
    )
    .expect("detach");
    let grown = s.until(&claim, "grown once detached", |o| {
        o["status"]["allocatedResourceStatuses"]["storage"] == "NodeResizePending"
    });
    assert_eq!(grown["status"]["allocatedResources"]["storage"], "8Gi");
    s.disk_reaches(&disk, 8);
    let (arm3, _) = counters(&s);
    assert_eq!(
        writes(&arm3) - writes(&arm0),
        2,
        "the refused try and the growth"
    );
}

/// kubelet treats a FlexVolume `expandfs` failure as final and marks the claim
/// `NodeResizeInfeasible`; when the user then asks for more, the growth the node has to do is
/// handed back to it (`NodeResizePending`, the size last tried — KEP-1790, external-resizer's
/// expandAndRecover) and, once the node has done it, the new request is grown. Before, nothing
/// happened, ever.
#[test]
fn a_claim_the_node_could_not_grow_goes_back_to_the_node_when_asked_for_more() {
    let s = Setup::start();
    let (_, disk) = s.expandable_claim("logs", "5Gi");
    let claim = format!("{PVCS}/logs");
    grow(&s, "default", "logs", "8Gi");
    s.until(&claim, "the node's turn", |o| {
        o["status"]["allocatedResourceStatuses"]["storage"] == "NodeResizePending"
    });
    eventually(&s, "the disk grown", Duration::from_secs(20), || {
        s.disk(&disk).expect("disk").size_gib == 8
    });
    settled(&s, &claim);
    // kubelet: NodeResizeInProgress, then expandfs failed — infeasible (util.MarkNodeExpansionInfeasible).
    let (status, body) = s.call(
        "PATCH",
        &format!("{claim}/status"),
        Some(
            json!({"status": {"allocatedResourceStatuses": {"storage": "NodeResizeInfeasible"},
            "conditions": [{"type": "NodeResizeError", "status": "True",
                            "message": "expandfs failed: resize2fs: Device or resource busy"}]}}),
        ),
    );
    assert_eq!(status, 200, "{body}");
    // kubelet's own write does not wake the provisioner (an immediate hand-back would ping-pong
    // with kubelet while the node's failure lasts): nothing happens until the request changes.
    std::thread::sleep(Duration::from_secs(2));
    let waiting = s.until(&claim, "the claim", |_| true);
    assert_eq!(
        waiting["status"]["allocatedResourceStatuses"]["storage"], "NodeResizeInfeasible",
        "{waiting}"
    );
    grow(&s, "default", "logs", "10Gi");
    let back = s.until(&claim, "handed back to the node", |o| {
        o["status"]["allocatedResourceStatuses"]["storage"] == "NodeResizePending"
    });
    assert_eq!(back["status"]["allocatedResources"]["storage"], "8Gi");
    assert_eq!(
        s.disk(&disk).expect("disk").size_gib,
        8,
        "the size the node has to do first; the new request follows once it has"
    );
    // The node does it now (kubelet's MarkFSResizeFinished): capacity 8Gi, status cleared.
    let (status, body) = s.call(
        "PATCH",
        &format!("{claim}/status"),
        Some(json!({"status": {"capacity": {"storage": "8Gi"},
            "allocatedResourceStatuses": null, "conditions": []}})),
    );
    assert_eq!(status, 200, "{body}");
    let grown = s.until(&claim, "the new request grown", |o| {
        o["status"]["allocatedResources"]["storage"] == "10Gi"
            && o["status"]["allocatedResourceStatuses"]["storage"] == "NodeResizePending"
    });
    assert_eq!(grown["status"]["capacity"]["storage"], "8Gi");
    // kube-controller-manager hands the claim to the node at once (its no-op expansion); the
    // disk follows.
    eventually(
        &s,
        "the disk grown to 10 GiB",
        Duration::from_secs(20),
        || s.disk(&disk).expect("disk").size_gib == 10,
    );
    // The PV says a capacity the claim had before the growth, for the PV controller
    // (AnnPreResizeCapacity; kube-controller-manager keeps the first one while a growth follows
    // another, AddAnnPreResizeCapacity).
    let pv = s.until(&format!("/api/v1/persistentvolumes/{disk}"), "PV", |_| true);
    assert_eq!(pv["spec"]["capacity"]["storage"], "10Gi");
    let before = &pv["metadata"]["annotations"]["volume.alpha.kubernetes.io/pre-resize-capacity"];
    assert!(before == "5Gi" || before == "8Gi", "{pv}");
    // The node finishes: the annotation goes.
    s.call(
        "PATCH",
        &format!("{claim}/status"),
        Some(json!({"status": {"capacity": {"storage": "10Gi"},
            "allocatedResourceStatuses": null, "conditions": []}})),
    );
    s.until(
        &format!("/api/v1/persistentvolumes/{disk}"),
        "the pre-resize capacity gone",
        |pv| {
            pv["metadata"]["annotations"]
                .get("volume.alpha.kubernetes.io/pre-resize-capacity")
                .is_none()
        },
    );
}

/// `allocatedResources` holds the request exactly as written (`2500Mi`), not the whole GiB the disk
/// is made of.
#[test]
fn the_allocated_size_is_the_request_exactly() {
    let s = Setup::start();
    let (c, _disk) = s.expandable_claim("odd", "1Gi");
    let claim = format!("{PVCS}/odd");
    grow(&s, "default", "odd", "2500Mi");
    let grown = s.until(&claim, "grown", |o| {
        o["status"]["allocatedResourceStatuses"]["storage"] == "NodeResizePending"
    });
    assert_eq!(grown["status"]["allocatedResources"]["storage"], "2500Mi");
    eventually(
        &s,
        "the disk grown to 3 GiB",
        Duration::from_secs(20),
        || s.disk(&format!("pvc-{}", uid(&c))).expect("disk").size_gib == 3,
    );
}

/// kube-controller-manager's expand controller as its worker acts when it comes after the
/// provisioner (on a real cluster it sometimes does): its no-op expansion of the FlexVolume claim,
/// in its order (kubernetes v1.37 `operation_generator.go` expandAndRecoverFunction:
/// MarkControllerReisizeInProgress, UpdatePVSize, markForPendingNodeExpansion), merge patches
/// without a resourceVersion.
fn controller_manager_hands_to_node(s: &Setup, claim: &str, pv: &str, size: &str, before: &str) {
    let writes = [
        (
            format!("{claim}/status"),
            json!({"status": {"allocatedResources": {"storage": size},
                "allocatedResourceStatuses": {"storage": "ControllerResizeInProgress"},
                "conditions": [{"type": "Resizing", "status": "True"}]}}),
        ),
        (
            format!("/api/v1/persistentvolumes/{pv}"),
            json!({"spec": {"capacity": {"storage": size}}}),
        ),
        (
            format!("{claim}/status"),
            json!({"status": {"allocatedResourceStatuses": {"storage": "NodeResizePending"},
                "conditions": [{"type": "FileSystemResizePending", "status": "True",
                    "message": "Waiting for user to (re-)start a pod to finish file system resize of volume on node."}]}}),
        ),
        (
            format!("/api/v1/persistentvolumes/{pv}"),
            json!({"metadata": {"annotations": {"volume.alpha.kubernetes.io/pre-resize-capacity": before}}}),
        ),
    ];
    for (path, body) in writes {
        let (status, answer) = s.call("PATCH", &path, Some(body));
        assert_eq!(status, 200, "{path}: {answer}");
    }
}

/// After such a hand-over of a growth the provisioner refused: the volume says what the disk is
/// again and the claim is refused again, soon (before: only on the 15-minute resync, and kubelet
/// meanwhile ran expandfs past the device and kept the claim's new pods from starting).
fn taken_back(s: &Setup, claim: &str, pv: &str, disk_size: &str) {
    s.until(
        &format!("/api/v1/persistentvolumes/{pv}"),
        "the volume back to its disk's size",
        |o| o["spec"]["capacity"]["storage"] == disk_size,
    );
    s.until(claim, "the claim refused again", |o| {
        o["status"]["allocatedResourceStatuses"]["storage"] == "ControllerResizeInfeasible"
    });
}

/// A ReadOnlyMany claim is mounted read-only on every node: no node could grow its filesystem,
/// and kubelet's attempt would keep its pods from starting. Its growth is refused up front, with
/// no ARM write.
#[test]
fn a_read_only_many_claim_is_refused_growth_up_front() {
    let s = Setup::start();
    s.class(
        "shared",
        json!({"skuName": "Premium_LRS", "maxShares": "3"}),
        json!({"allowVolumeExpansion": true}),
    );
    let (status, c) = s.call("POST", PVCS, Some(json!({"metadata": {"name": "published"},
        "spec": {"accessModes": ["ReadOnlyMany"], "storageClassName": "shared", "resources": {"requests": {"storage": "2Gi"}}}})));
    assert_eq!(status, 201, "{c}");
    let claim = format!("{PVCS}/published");
    s.until(&claim, "Bound", |o| o["status"]["phase"] == "Bound");
    let disk = format!("pvc-{}", uid(&c));
    // Read-only in every driver call through the driver's own option: kube-apiserver refuses
    // PV options in the kubernetes.io namespace (the simulator as validation.go does).
    let (_, pv) = s.call("GET", &format!("/api/v1/persistentvolumes/{disk}"), None);
    assert_eq!(
        pv["spec"]["flexVolume"]["options"]["readOnly"], "true",
        "{pv}"
    );
    assert_eq!(pv["spec"]["flexVolume"]["readOnly"], true, "{pv}");
    let (arm0, _) = counters(&s);
    grow(&s, "default", "published", "4Gi");
    let refused = s.until(&claim, "refused", |o| {
        o["status"]["allocatedResourceStatuses"]["storage"] == "ControllerResizeInfeasible"
    });
    assert!(
        refused["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["message"]
                .as_str()
                .is_some_and(|m| m.contains("read-only"))),
        "{refused}"
    );
    assert!(events_in(&s, "default", "published")
        .iter()
        .any(|(r, n)| r == "VolumeResizeFailed" && n.contains("read-only")));
    let (arm1, _) = counters(&s);
    assert_eq!(
        writes_to(&arm1, &format!("disks/{disk}")),
        writes_to(&arm0, &format!("disks/{disk}")),
        "no ARM write"
    );
    assert_eq!(s.disk(&disk).expect("disk").size_gib, 2);

    // kube-controller-manager's worker comes after the refusal: taken back at once, no ARM write,
    // and no loop once it is.
    settled(&s, &claim);
    controller_manager_hands_to_node(&s, &claim, &disk, "4Gi", "2Gi");
    taken_back(&s, &claim, &disk, "2Gi");
    settled(&s, &claim);
    let (_, kube2) = counters(&s);
    std::thread::sleep(Duration::from_secs(3));
    let (arm3, kube3) = counters(&s);
    assert_eq!(
        writes_to(&arm3, &format!("disks/{disk}")),
        writes_to(&arm0, &format!("disks/{disk}")),
        "no ARM write"
    );
    assert_eq!(
        writes_to(&kube3, "persistentvolumeclaims/default/published"),
        writes_to(&kube2, "persistentvolumeclaims/default/published"),
        "settled"
    );
    assert_eq!(s.disk(&disk).expect("disk").size_gib, 2);
}

/// The source of a copy carries `provisioner.storage.kubernetes.io/cloning-protection` while the
/// copy is made (here held for ten seconds by a slow disk PUT): deleted meanwhile, it stays —
/// held by that finalizer alone while the copy is still Pending — until the copy exists, then
/// goes.
#[test]
fn a_source_claim_stays_while_it_is_copied_and_goes_after() {
    let s = Setup::start();
    s.class("fast", json!({}), json!({}));
    s.claim("src", "fast", "2Gi");
    s.until(&format!("{PVCS}/src"), "Bound", |o| {
        o["status"]["phase"] == "Bound"
    });
    s.sim
        .control(
            "POST",
            "/faults",
            Some(&json!({"operation": "Disks_CreateOrUpdate", "times": 1,
                "action": {"kind": "latency", "ms": 10000}})),
        )
        .expect("fault");
    let (status, _) = s.call("POST", PVCS, Some(json!({"metadata": {"name": "copy"},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "fast", "resources": {"requests": {"storage": "2Gi"}},
                 "dataSource": {"kind": "PersistentVolumeClaim", "name": "src"}}})));
    assert_eq!(status, 201);
    let protected = s.until(&format!("{PVCS}/src"), "protected", |o| {
        o["metadata"]["finalizers"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|f| f == "provisioner.storage.kubernetes.io/cloning-protection")
    });
    assert!(protected["metadata"]["annotations"]["flexdisk/last-clone"].is_string());
    s.call("DELETE", &format!("{PVCS}/src"), None);
    // Deleted, and no pod uses it (kubernetes.io/pvc-protection goes): only the copy holds it.
    s.until(&format!("{PVCS}/src"), "src held by the copy alone", |o| {
        o["metadata"]["deletionTimestamp"].is_string()
            && o["metadata"]["finalizers"]
                == json!(["provisioner.storage.kubernetes.io/cloning-protection"])
    });
    let copy = s.until(&format!("{PVCS}/copy"), "the copy", |_| true);
    assert_eq!(
        copy["status"]["phase"], "Pending",
        "the copy is still being made: {copy}"
    );
    s.until(&format!("{PVCS}/copy"), "the copy Bound", |o| {
        o["status"]["phase"] == "Bound"
    });
    s.gone(&format!("{PVCS}/src"));
}

/// One claim per permanent failure, all at once for a minute, with every write counted per disk
/// and per claim: the table is printed (BENCHMARKS.md keeps it) and the bounds are asserted — at
/// most 5 ARM writes to a disk in any 30 s (so at most 10 in the minute), a handful of event and
/// claim writes per claim, and each claim ends Bound, refused with its event, or waiting with its
/// reason.
#[test]
fn a_failure_ledger_bounds_every_permanent_failure() {
    let s = Setup::start();
    let vac = |name: &str, iops: &str| {
        let (status, body) = s.call(
            "POST",
            "/apis/storage.k8s.io/v1/volumeattributesclasses",
            Some(
                json!({"metadata": {"name": name}, "driverName": "flexdisk/azure-disk",
                "parameters": {"diskIOPSReadWrite": iops}}),
            ),
        );
        assert_eq!(status, 201, "{body}");
    };
    vac("iops-4000", "4000");
    vac("iops-5000", "5000");
    s.class(
        "grows",
        json!({"skuName": "Premium_LRS"}),
        json!({"allowVolumeExpansion": true}),
    );
    s.class(
        "shared",
        json!({"skuName": "Premium_LRS", "maxShares": "2"}),
        json!({"allowVolumeExpansion": true}),
    );
    s.class(
        "v2",
        json!({"skuName": "PremiumV2_LRS"}),
        json!({"volumeBindingMode": "WaitForFirstConsumer"}),
    );
    s.class("fast", json!({}), json!({}));

    // Claims whose disk PUT Azure refuses for good: made before their class, so that the fault
    // (matched on the disk's name) is in place before the provisioner sees them.
    let refusals = [
        ("sku", 409, "SkuNotAvailable", "The requested size for resource is currently not available in location 'westus2'."),
        ("quota", 409, "QuotaExceeded", "Operation results in exceeding quota limits of Total Disks."),
        ("forbidden", 403, "AuthorizationFailed", "The client does not have authorization to perform action 'Microsoft.Compute/disks/write'."),
    ];
    let mut rows: Vec<(String, String, String)> = Vec::new(); // (scenario, claim, disk)
    for (name, status, code, message) in refusals {
        let class = format!("ledger-{name}");
        let c = s.claim(name, &class, "1Gi");
        let disk = format!("pvc-{}", uid(&c));
        s.sim
            .control(
                "POST",
                "/faults",
                Some(&json!({"operation": "Disks_CreateOrUpdate", "pathContains": disk,
                    "action": {"kind": "status", "status": status, "code": code, "message": message}})),
            )
            .expect("fault");
        rows.push((format!("{status} {code} on create"), name.into(), disk));
    }
    // A class deleted after kube-controller-manager handed the claim over (which it does only
    // while the class exists, pv_controller.go provisionClaim — so the hand-over is written
    // here as it would have been): the claim waits, with no ARM write at all.
    let (st, orphan) = s.call(
        "POST",
        PVCS,
        Some(json!({"metadata": {"name": "orphan",
            "annotations": {"volume.kubernetes.io/storage-provisioner": "flexdisk/azure-disk"}},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "doomed",
                 "resources": {"requests": {"storage": "1Gi"}}}})),
    );
    assert_eq!(st, 201, "{orphan}");
    rows.push((
        "class deleted".into(),
        "orphan".into(),
        format!("pvc-{}", uid(&orphan)),
    ));
    // A size Azure refuses.
    let big = s.claim("big", "grows", "5Gi");
    // A growth that needs a detached disk, with a pod using it.
    let shared = s.claim("busy", "shared", "4Gi");
    // A growth Azure answers with 500 every time (the transport retries each call).
    let flaky = s.claim("flaky", "grows", "5Gi");
    // A disk's performance set too often today (Azure allows four settings a day, creation
    // included): the fifth waits.
    let (status, tuned) = s.call("POST", PVCS, Some(json!({"metadata": {"name": "tuned"},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "v2", "volumeAttributesClassName": "iops-4000",
                 "resources": {"requests": {"storage": "10Gi"}}}})));
    assert_eq!(status, 201, "{tuned}");
    // PremiumV2 is zonal: made for the pod's node, a scale-set VM in a zone.
    let (st, body) = s.call(
        "PATCH",
        &format!("{PVCS}/tuned"),
        Some(json!({"metadata": {"annotations": {"volume.kubernetes.io/selected-node": "aks-nodepool1-31415926-vmss000001"}}})),
    );
    assert_eq!(st, 200, "{body}");
    // A source claim deleted while its copy is made.
    s.claim("origin", "fast", "1Gi");
    for claim in ["big", "busy", "tuned", "origin", "flaky"] {
        s.until(&format!("{PVCS}/{claim}"), "Bound", |o| {
            o["status"]["phase"] == "Bound"
        });
    }
    let busy_disk = format!("pvc-{}", uid(&shared));
    s.attach(&busy_disk, NODE);
    let (st, pod) = s.call(
        "POST",
        "/api/v1/namespaces/default/pods",
        Some(json!({
        "metadata": {"name": "busy-0"},
        "spec": {"nodeName": NODE, "containers": [{"name": "c", "image": "busybox"}],
                 "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "busy"}}]}})),
    );
    assert_eq!(st, 201, "{pod}");
    let tuned_claim = format!("{PVCS}/tuned");
    for (i, to) in ["iops-5000", "iops-4000", "iops-5000"].iter().enumerate() {
        let (st, body) = s.call(
            "PATCH",
            &tuned_claim,
            Some(json!({"spec": {"volumeAttributesClassName": to}})),
        );
        assert_eq!(st, 200, "{body}");
        s.until(&tuned_claim, &format!("switch {i} done"), |o| {
            o["status"]["currentVolumeAttributesClassName"] == *to
        });
    }
    s.sim
        .control(
            "POST",
            "/faults",
            Some(&json!({"operation": "Disks_CreateOrUpdate", "times": 1,
                "action": {"kind": "latency", "ms": 4000}})),
        )
        .expect("fault");
    let copy = post_claim(
        &s,
        "default",
        json!({"metadata": {"name": "copy"},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "fast", "resources": {"requests": {"storage": "1Gi"}},
                 "dataSource": {"kind": "PersistentVolumeClaim", "name": "origin"}}}),
    );
    s.until(&format!("{PVCS}/origin"), "origin protected", |o| {
        o["metadata"]["finalizers"]
            .to_string()
            .contains("cloning-protection")
    });

    // The failures, all at once.
    let (arm0, kube0) = counters(&s);
    let started = Instant::now();
    for (name, ..) in refusals {
        s.class(&format!("ledger-{name}"), json!({}), json!({}));
    }
    s.call("DELETE", &format!("{PVCS}/origin"), None);
    grow(&s, "default", "big", "40000Gi");
    grow(&s, "default", "busy", "8Gi");
    let flaky_disk = format!("pvc-{}", uid(&flaky));
    s.sim
        .control(
            "POST",
            "/faults",
            Some(
                &json!({"operation": "Disks_Update", "pathContains": flaky_disk,
                "action": {"kind": "status", "status": 500, "code": "InternalServerError",
                           "message": "An internal server error occurred."}}),
            ),
        )
        .expect("fault");
    grow(&s, "default", "flaky", "8Gi");
    let (st, body) = s.call(
        "PATCH",
        &tuned_claim,
        Some(json!({"spec": {"volumeAttributesClassName": "iops-4000"}})),
    );
    assert_eq!(st, 200, "{body}");
    rows.push((
        "size refused (40000Gi)".into(),
        "big".into(),
        format!("pvc-{}", uid(&big)),
    ));
    rows.push((
        "growth needs a detached disk".into(),
        "busy".into(),
        busy_disk.clone(),
    ));
    rows.push((
        "500 on every growth (transport retries)".into(),
        "flaky".into(),
        flaky_disk.clone(),
    ));
    rows.push((
        "5th performance change today".into(),
        "tuned".into(),
        format!("pvc-{}", uid(&tuned)),
    ));
    rows.push((
        "source deleted mid-clone".into(),
        "copy".into(),
        format!("pvc-{}", uid(&copy)),
    ));

    // A minute, sampled every second: the most ARM writes any disk took in 30 s.
    let window = Duration::from_secs(60);
    let mut samples: Vec<(Instant, BTreeMap<String, u64>)> = Vec::new();
    while started.elapsed() < window {
        samples.push((Instant::now(), counters(&s).0));
        std::thread::sleep(Duration::from_secs(1));
    }
    let (arm1, kube1) = counters(&s);
    let max_in_30s = |disk: &str| -> u64 {
        let key = format!("disks/{disk}");
        let mut peak = 0;
        for (t0, a) in &samples {
            for (t1, b) in &samples {
                if t1 >= t0 && t1.duration_since(*t0) <= Duration::from_secs(30) {
                    peak = peak.max(writes_to(b, &key) - writes_to(a, &key));
                }
            }
        }
        peak
    };
    let claim_state = |name: &str| -> String {
        let (st, c) = s.call("GET", &format!("{PVCS}/{name}"), None);
        if st == 404 {
            return "gone".into();
        }
        let status = &c["status"];
        let mut state = status["phase"].as_str().unwrap_or("?").to_string();
        if let Some(r) = status["allocatedResourceStatuses"]["storage"].as_str() {
            state.push_str(&format!(", {r}"));
        }
        if let Some(m) = status["modifyVolumeStatus"]["status"].as_str() {
            state.push_str(&format!(", modify {m}"));
        }
        state
    };
    println!(
        "\nfailure ledger: one claim per permanent failure, {}s",
        window.as_secs()
    );
    println!(
        "| failure | claim | ARM writes | max in 30 s | claim writes | event writes | events (reasons) | end state |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut failures = Vec::new();
    for (scenario, claim, disk) in &rows {
        let arm =
            writes_to(&arm1, &format!("disks/{disk}")) - writes_to(&arm0, &format!("disks/{disk}"));
        let claim_w = writes_to(&kube1, &format!("persistentvolumeclaims/default/{claim}"))
            - writes_to(&kube0, &format!("persistentvolumeclaims/default/{claim}"));
        let events_w = writes_to(&kube1, &format!("events/default/{claim}"))
            - writes_to(&kube0, &format!("events/default/{claim}"));
        let reasons: std::collections::BTreeSet<String> = events_in(&s, "default", claim)
            .into_iter()
            .filter(|(r, _)| r.contains("Failed") || r.contains("Error"))
            .map(|(r, _)| r)
            .collect();
        let peak = max_in_30s(disk);
        let state = claim_state(claim);
        println!(
            "| {scenario} | {claim} | {arm} | {peak} | {claim_w} | {events_w} | {} | {state} |",
            reasons.into_iter().collect::<Vec<_>>().join(", ")
        );
        if peak > 5 {
            failures.push(format!("{scenario}: {peak} ARM writes in 30 s"));
        }
        if arm > 10 {
            failures.push(format!("{scenario}: {arm} ARM writes in a minute"));
        }
        if events_w > 8 {
            failures.push(format!("{scenario}: {events_w} event writes in a minute"));
        }
        if claim_w > 8 {
            failures.push(format!("{scenario}: {claim_w} claim writes in a minute"));
        }
    }
    assert!(failures.is_empty(), "{failures:?}\n{}", s.log());
    // How each ended.
    for name in ["sku", "quota", "forbidden"] {
        assert!(
            events_in(&s, "default", name)
                .iter()
                .any(|(r, _)| r == "ProvisioningFailed"),
            "{name} told why"
        );
        assert_eq!(claim_state(name), "Pending");
    }
    assert!(events_in(&s, "default", "orphan")
        .iter()
        .any(|(r, n)| r == "ProvisioningFailed" && n.contains("does not exist")));
    assert_eq!(claim_state("big"), "Bound, ControllerResizeInfeasible");
    assert_eq!(claim_state("busy"), "Bound, ControllerResizeInProgress");
    // kube-controller-manager handed it to the node (its no-op expansion); the disk did not grow.
    assert_eq!(claim_state("flaky"), "Bound, NodeResizePending");
    assert_eq!(s.disk(&flaky_disk).expect("disk").size_gib, 5);
    assert_eq!(claim_state("tuned"), "Bound, modify InProgress");
    assert_eq!(claim_state("copy"), "Bound");
    assert_eq!(claim_state("origin"), "gone");
}

/// A claim whose disk was made but whose PV the API server refused (here three times): each
/// retry reads the disk it made rather than writing it again — one ARM write in all, however long
/// the API server keeps refusing.
#[test]
fn retries_after_the_disk_was_made_read_it_rather_than_write_it_again() {
    let s = Setup::start();
    s.class("std", json!({}), json!({}));
    let (status, rule) = s.call(
        "POST",
        "/_sim/faults",
        Some(json!({"operation": "create persistentvolumes", "times": 3,
            "action": {"kind": "status", "status": 500}})),
    );
    assert_eq!(status, 201, "{rule}");
    let c = s.claim("again", "std", "1Gi");
    let disk = format!("pvc-{}", uid(&c));
    s.until(&format!("{PVCS}/again"), "Bound", |o| {
        o["status"]["phase"] == "Bound"
    });
    let (arm, _) = counters(&s);
    assert_eq!(
        writes_to(&arm, &format!("disks/{disk}")),
        1,
        "one disk PUT across four attempts: {arm:?}\n{}",
        s.log()
    );
    let told = note_soon(&s, "again", "ProvisioningFailed", |_| true);
    assert!(!told.is_empty(), "the refusals were told");
}
