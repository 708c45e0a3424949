//! The lifecycle as a cluster drives it: the real provisioner and driver, the attach/detach and
//! expand controllers and kubelets emulated around them (`system_tests::emulator`), Pods in the
//! simulated Kubernetes API. Data is written through the pods' volume dirs and compared byte for
//! byte after every move.

use serde_json::json;
use std::collections::BTreeMap;
use system_tests::emulator::Mounted;
use system_tests::scene::{check, setup, write, NODES};

#[test]
fn twenty_claims_and_pods_over_three_nodes_then_all_moved() {
    let s = setup();
    let n = 20;
    for i in 0..n {
        s.claim(&format!("www-web-{i}"), "ssd", "1Gi");
    }
    let mut uids = BTreeMap::new();
    for i in 0..n {
        let uid = s.pod(
            &format!("web-{i}"),
            NODES[i % 3],
            &[&format!("www-web-{i}")],
        );
        uids.insert(i, uid);
    }
    for i in 0..n {
        let ms = s.running(&format!("web-{i}"), &uids[&i]);
        assert_eq!(ms.len(), 1);
        assert_eq!(ms[0].node, NODES[i % 3]);
        write(&ms[0], i as u64);
    }
    s.no_double_attach();
    let writes_before = s.cluster.arm_count("writes");
    // Every pod moves to the next node, as a rolling restart onto a shifted schedule would.
    for i in 0..n {
        s.delete_pod(&format!("web-{i}"));
    }
    s.until("every disk detached", || {
        s.emu.attached().is_empty() && s.cluster.attachments().values().all(Vec::is_empty)
    });
    for i in 0..n {
        let uid = s.pod(
            &format!("web-{i}"),
            NODES[(i + 1) % 3],
            &[&format!("www-web-{i}")],
        );
        uids.insert(i, uid);
    }
    for i in 0..n {
        let ms = s.running(&format!("web-{i}"), &uids[&i]);
        assert_eq!(ms[0].node, NODES[(i + 1) % 3]);
        check(&ms[0], i as u64);
    }
    s.no_double_attach();
    let writes = s.cluster.arm_count("writes") - writes_before;
    eprintln!(
        "20 volumes detached and re-attached on 3 VMs with {writes} ARM writes (40 operations); {:?}",
        s.emu.counts()
    );
    assert!(
        writes < 40,
        "attaches and detaches of one VM are batched: {writes} writes"
    );
}

#[test]
fn draining_a_node_with_five_volumes_moves_them_all_intact() {
    let s = setup();
    let claims: Vec<String> = (0..5).map(|i| format!("drain-{i}")).collect();
    for c in &claims {
        // drain-0 in the class that allows growth: it grows after the move.
        s.claim(c, if c == "drain-0" { "xfs" } else { "ssd" }, "2Gi");
    }
    let refs: Vec<&str> = claims.iter().map(String::as_str).collect();
    let uid = s.pod("app", NODES[0], &refs);
    let ms = s.running("app", &uid);
    assert_eq!(ms.len(), 5);
    for (i, m) in ms.iter().enumerate() {
        write(m, 100 + i as u64);
    }
    let by_pv: BTreeMap<String, u64> = ms
        .iter()
        .enumerate()
        .map(|(i, m)| (m.pv.clone(), 100 + i as u64))
        .collect();
    // kubectl drain: the pod is evicted; its controller recreates it on another node.
    s.delete_pod("app");
    let uid = s.pod("app", NODES[1], &refs);
    let moved = s.running("app", &uid);
    assert_eq!(moved.len(), 5);
    for m in &moved {
        assert_eq!(m.node, NODES[1]);
        check(m, by_pv[&m.pv]);
    }
    s.no_double_attach();
    let on_a: usize = s
        .cluster
        .attachments()
        .values()
        .filter(|v| v.iter().any(|vm| vm == NODES[0]))
        .count();
    assert_eq!(on_a, 0, "nothing left on the drained node");
    // A moved volume grows where it is now (the real cluster's drain-then-grow).
    let pv = s
        .cluster
        .kube
        .get("/api/v1/namespaces/default/persistentvolumeclaims/drain-0")
        .expect("get")
        .and_then(|c| c["spec"]["volumeName"].as_str().map(str::to_string))
        .expect("bound");
    let grown = moved.iter().find(|m| m.pv == pv).expect("drain-0's volume");
    s.cluster
        .kube
        .merge_patch(
            "/api/v1/namespaces/default/persistentvolumeclaims/drain-0",
            &json!({"spec": {"resources": {"requests": {"storage": "5Gi"}}}}),
        )
        .expect("resize");
    s.until("the moved claim shows 5Gi", || {
        s.cluster
            .kube
            .get("/api/v1/namespaces/default/persistentvolumeclaims/drain-0")
            .expect("get")
            .is_some_and(|c| c["status"]["capacity"]["storage"] == "5Gi")
    });
    let st = nix::sys::statvfs::statvfs(&grown.pod_dir).expect("statvfs");
    assert!(st.blocks() as u64 * st.fragment_size() as u64 > 4 << 30);
    check(grown, by_pv[&pv]);
}

#[test]
fn a_deleted_node_s_volumes_reattach_elsewhere() {
    let s = setup();
    s.claim("orphaned-a", "ssd", "1Gi");
    s.claim("orphaned-b", "ssd", "1Gi");
    let uid = s.pod("stateful", NODES[2], &["orphaned-a", "orphaned-b"]);
    let ms = s.running("stateful", &uid);
    for (i, m) in ms.iter().enumerate() {
        write(m, 200 + i as u64);
    }
    let seeds: BTreeMap<String, u64> = ms
        .iter()
        .enumerate()
        .map(|(i, m)| (m.pv.clone(), 200 + i as u64))
        .collect();
    // The node is deleted (scaled in): its pod is garbage-collected, its mounts vanish with it,
    // and the attach/detach controller detaches what was on it.
    s.cluster
        .kube
        .delete(&format!("/api/v1/nodes/{}", NODES[2]))
        .expect("delete node");
    s.until("the pod is gone", || {
        s.cluster
            .kube
            .get("/api/v1/namespaces/default/pods/stateful")
            .expect("get")
            .is_none()
    });
    s.until("both disks detached from the deleted node", || {
        s.cluster
            .attachments()
            .values()
            .all(|vms| !vms.iter().any(|vm| vm == NODES[2]))
    });
    let uid = s.pod("stateful", NODES[0], &["orphaned-a", "orphaned-b"]);
    for m in s.running("stateful", &uid) {
        assert_eq!(m.node, NODES[0]);
        check(&m, seeds[&m.pv]);
    }
    s.no_double_attach();
}

#[test]
fn a_static_pv_of_an_existing_disk_moves_between_nodes() {
    let s = setup();
    let disk = s.cluster.create_disk("legacy-database", "Premium_LRS", 8);
    let kube = &s.cluster.kube;
    kube.create(&json!({"apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": "legacy"},
        "spec": {"capacity": {"storage": "8Gi"}, "accessModes": ["ReadWriteOnce"],
                 "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "",
                 "claimRef": {"namespace": "default", "name": "legacy"},
                 "flexVolume": {"driver": "flexdisk/azure-disk", "fsType": "ext4",
                                "options": {"diskURI": disk}}}}))
        .expect("pv");
    kube.create(&json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "legacy", "namespace": "default"},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "", "volumeName": "legacy",
                 "resources": {"requests": {"storage": "8Gi"}}}}))
        .expect("claim");
    let uid = s.pod("db", NODES[0], &["legacy"]);
    let ms = s.running("db", &uid);
    write(&ms[0], 300);
    s.delete_pod("db");
    // Detach gets only the PV name "legacy": the disk "legacy-database" is found from the record.
    s.until("the disk detached", || {
        s.cluster.attachments()["legacy-database"].is_empty()
    });
    let uid = s.pod("db", NODES[1], &["legacy"]);
    let ms = s.running("db", &uid);
    assert_eq!(ms[0].node, NODES[1]);
    check(&ms[0], 300);
}

#[test]
fn a_bound_mounted_volume_grows_and_its_filesystem_with_it() {
    let s = setup();
    s.claim("grow", "xfs", "2Gi");
    let uid = s.pod("grower", NODES[0], &["grow"]);
    let ms = s.running("grower", &uid);
    write(&ms[0], 400);
    let size = |m: &Mounted| {
        let st = nix::sys::statvfs::statvfs(&m.pod_dir).expect("statvfs");
        st.blocks() as u64 * st.fragment_size() as u64
    };
    let before = size(&ms[0]);
    s.cluster
        .kube
        .merge_patch(
            "/api/v1/namespaces/default/persistentvolumeclaims/grow",
            &json!({"spec": {"resources": {"requests": {"storage": "5Gi"}}}}),
        )
        .expect("resize");
    s.until("the claim shows 5Gi", || {
        s.cluster
            .kube
            .get("/api/v1/namespaces/default/persistentvolumeclaims/grow")
            .expect("get")
            .is_some_and(|c| c["status"]["capacity"]["storage"] == "5Gi")
    });
    let after = size(&ms[0]);
    eprintln!("filesystem {before} → {after} bytes");
    assert!(before < 2 << 30 && after > 4 << 30, "{before} → {after}");
    let disk = s.cluster.attachments();
    assert!(
        disk.values().any(|v| v == &[NODES[0].to_string()]),
        "still attached"
    );
    check(&ms[0], 400);
}

#[test]
fn a_clone_carries_its_source_s_data() {
    let s = setup();
    s.claim("origin", "ssd", "2Gi");
    let uid = s.pod("writer", NODES[0], &["origin"]);
    write(&s.running("writer", &uid)[0], 500);
    s.delete_pod("writer");
    s.until("origin detached", || s.emu.attached().is_empty());
    s.cluster
        .kube
        .create(&json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "copy", "namespace": "default"},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "ssd",
                     "dataSource": {"kind": "PersistentVolumeClaim", "name": "origin"},
                     "resources": {"requests": {"storage": "2Gi"}}}}))
        .expect("clone");
    let uid = s.pod("reader", NODES[2], &["copy", "origin"]);
    let ms = s.running("reader", &uid);
    assert_eq!(ms.len(), 2);
    for m in &ms {
        check(m, 500);
    }
    assert_ne!(ms[0].pv, ms[1].pv);
}

/// A class's `mountOptions` reach the mount: the provisioner puts them in the PV's
/// `flexVolume.options.mountOptions` (never `spec.mountOptions`, which kubelet refuses for
/// FlexVolume, as the emulated kubelet does too), and the driver mounts with them.
#[test]
fn class_mount_options_mount_and_spec_mount_options_are_refused_as_kubelet_does() {
    let s = setup();
    s.cluster
        .kube
        .create(
            &json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": "noatime"}, "provisioner": "flexdisk/azure-disk",
            "parameters": {"skuName": "StandardSSD_LRS"}, "mountOptions": ["noatime"]}),
        )
        .expect("class");
    s.claim("quiet", "noatime", "1Gi");
    let uid = s.pod("quiet", NODES[0], &["quiet"]);
    let ms = s.running("quiet", &uid);
    let pv_name = s
        .cluster
        .kube
        .get("/api/v1/namespaces/default/persistentvolumeclaims/quiet")
        .expect("claim")
        .expect("exists")["spec"]["volumeName"]
        .as_str()
        .expect("bound")
        .to_string();
    let pv = s
        .cluster
        .kube
        .get(&format!("/api/v1/persistentvolumes/{pv_name}"))
        .expect("pv")
        .expect("exists");
    assert_eq!(
        pv["spec"]["flexVolume"]["options"]["mountOptions"],
        "noatime"
    );
    assert!(pv["spec"]["mountOptions"].is_null(), "{pv}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let dir = ms[0].pod_dir.to_string_lossy().to_string();
    let line = mounts
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(dir.as_str()))
        .unwrap_or_else(|| panic!("{dir} is not mounted"));
    assert!(
        line.split(' ')
            .nth(5)
            .is_some_and(|o| o.contains("noatime")),
        "{line}"
    );
    write(&ms[0], 7);

    // A hand-made PV with spec.mountOptions never mounts, as on a real cluster.
    let disk = s
        .cluster
        .create_disk("static-with-options", "StandardSSD_LRS", 1);
    s.cluster
        .kube
        .create(&json!({"apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": "static-with-options"},
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                "storageClassName": "", "mountOptions": ["noatime"],
                "flexVolume": {"driver": "flexdisk/azure-disk", "fsType": "ext4", "options": {"diskURI": disk}}}}))
        .expect("pv");
    s.cluster
        .kube
        .create(&json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "static-with-options", "namespace": "default"},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "", "volumeName": "static-with-options",
                     "resources": {"requests": {"storage": "1Gi"}}}}))
        .expect("claim");
    s.pod("refused", NODES[1], &["static-with-options"]);
    s.until("kubelet refuses the mount options", || {
        s.emu
            .log()
            .iter()
            .any(|l| l.contains("Mount options are not supported for this volume type"))
    });
}

/// Azure grows a shared disk only while it is detached: the claim says so (an event and a
/// `ControllerResizeError` condition) while the pod runs, and the growth completes once the pod
/// is gone and the disk detached; the next pod finds the filesystem grown.
#[test]
fn a_growth_that_needs_a_detach_waits_for_it_and_then_completes() {
    let s = setup();
    s.cluster
        .kube
        .create(&json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": "shared"}, "provisioner": "flexdisk/azure-disk",
            "parameters": {"skuName": "Premium_LRS", "maxShares": "2", "fsType": "xfs"}, "allowVolumeExpansion": true}))
        .expect("class");
    s.claim("wide", "shared", "2Gi");
    let uid = s.pod("user", NODES[0], &["wide"]);
    let ms = s.running("user", &uid);
    write(&ms[0], 600);
    let claim_path = "/api/v1/namespaces/default/persistentvolumeclaims/wide";
    s.cluster
        .kube
        .merge_patch(
            claim_path,
            &json!({"spec": {"resources": {"requests": {"storage": "4Gi"}}}}),
        )
        .expect("resize");
    let claim = || s.cluster.kube.get(claim_path).expect("get").expect("claim");
    s.until("the claim says a detach is needed", || {
        claim()["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| {
                c["type"] == "ControllerResizeError"
                    && c["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("only while it is detached"))
            })
    });
    assert_eq!(claim()["status"]["capacity"]["storage"], "2Gi");
    s.delete_pod("user");
    s.until("detached", || s.emu.attached().is_empty());
    s.until("the node's turn", || {
        claim()["status"]["allocatedResourceStatuses"]["storage"] == "NodeResizePending"
    });
    let uid = s.pod("user-again", NODES[1], &["wide"]);
    let ms = s.running("user-again", &uid);
    s.until("the claim shows 4Gi", || {
        claim()["status"]["capacity"]["storage"] == "4Gi"
    });
    let st = nix::sys::statvfs::statvfs(&ms[0].pod_dir).expect("statvfs");
    assert!(st.blocks() as u64 * st.fragment_size() as u64 > 3 << 30);
    check(&ms[0], 600);
}

/// The calls each host's driver logged, by call name (`call=<name>` in its log).
fn calls(s: &system_tests::scene::Scene, host: &str, call: &str) -> usize {
    std::fs::read_to_string(s.cluster.tmp.path().join(format!("flexdisk-{host}.log")))
        .unwrap_or_default()
        .matches(&format!("call={call} "))
        .count()
}

/// As kubelet and the attach/detach controller do: two pods of one node share a volume and the
/// first to go leaves the device mounted (no `unmountdevice` while another pod uses it); a
/// ReadWriteOnce volume wanted on a second node is refused as a Multi-Attach without any driver
/// call; a volume `isattached` reports gone while still wanted is attached again.
#[test]
fn kubelet_and_controller_rules_for_shared_pods_multi_attach_and_lost_attachments() {
    let s = setup();
    s.claim("common", "ssd", "1Gi");
    let a = s.pod("first", NODES[0], &["common"]);
    let b = s.pod("second", NODES[0], &["common"]);
    let ms_a = s.running("first", &a);
    s.running("second", &b);
    write(&ms_a[0], 700);
    s.delete_pod("first");
    s.until("the first pod torn down", || s.emu.mounted(&a).is_empty());
    assert_eq!(
        calls(&s, NODES[0], "unmountdevice"),
        0,
        "unmountdevice while another pod of the node uses the volume"
    );
    let ms_b = s.emu.mounted(&b);
    check(&ms_b[0], 700);

    // The same ReadWriteOnce volume wanted on another node: refused before any driver call.
    let attaches = calls(&s, "controller", "attach");
    let c = s.pod("elsewhere", NODES[1], &["common"]);
    s.until("a Multi-Attach error", || {
        s.emu.counts().multi_attach_refused > 0
    });
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(
        calls(&s, "controller", "attach"),
        attaches,
        "no attach was tried"
    );
    assert!(s.emu.mounted(&c).is_empty());
    s.delete_pod("elsewhere");

    // Detached behind the controller's back: isattached says so and it attaches again.
    let pv = ms_b[0].pv.clone();
    s.cluster
        .hosts()
        .controller()
        .detach(&pv, NODES[0])
        .expect("detach");
    s.until("attached again", || {
        s.cluster
            .attachments()
            .values()
            .any(|v| v == &[NODES[0].to_string()])
    });
    s.delete_pod("second");
    s.until("the last pod torn down", || {
        calls(&s, NODES[0], "unmountdevice") == 1
    });
}
