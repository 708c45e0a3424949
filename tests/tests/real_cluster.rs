//! flexdisk under real Kubernetes: upstream kube-apiserver, kube-controller-manager, kube-scheduler
//! and kubelets with containerd (`system_tests::real_cluster`), Azure simulated. The driver is
//! called by the real attach/detach controller and the real kubelet, so what these tests show is
//! what a cluster does with it, not what our emulators think it does.

use serde_json::json;
use std::time::Duration;
use system_tests::real_cluster::{RealCluster, TOOLS_IMAGE};
use system_tests::scene::world;

const NODES: [&str; 2] = ["k8s-pool-0", "k8s-pool-1"];

/// A pod on `node` that runs `script` with the claim mounted at /data.
fn pod(name: &str, node: &str, claim: &str, script: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"nodeName": node, "restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "app", "image": TOOLS_IMAGE, "imagePullPolicy": "Never",
                "command": ["/bin/sh", "-c", script],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]}})
}

fn phase(c: &RealCluster, pod: &str) -> String {
    c.kubectl_json(&["get", "pod", pod])
        .ok()
        .and_then(|p| p["status"]["phase"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// A static PV of an existing disk: the real controller attaches it through the driver, the real
/// kubelet mounts it into a container that writes; the pod goes, the disk is detached, a pod on
/// the other node reads the same bytes.
#[test]
fn a_static_volume_moves_between_real_nodes_with_its_data() {
    let tmp = tempfile::tempdir().expect("tmp");
    let world_file = world(tmp.path(), &NODES.map(|n| (n, "Standard_D4s_v3")));
    let c = RealCluster::start(&world_file, &NODES);
    c.install_flexdisk();
    // The disk, as an admin would have made it.
    let disk_id = system_tests::create_disk(&c.sim, "existing-data", "Premium_LRS", 2);
    c.apply(&[
        json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "existing-data"},
            "spec": {"capacity": {"storage": "2Gi"}, "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "",
                "flexVolume": {"driver": "flexdisk/azure-disk", "fsType": "ext4",
                    "options": {"diskURI": disk_id}}}}),
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "existing-data", "namespace": "default"},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "",
                "volumeName": "existing-data", "resources": {"requests": {"storage": "2Gi"}}}}),
        pod(
            "writer",
            NODES[0],
            "existing-data",
            "dd if=/dev/urandom of=/data/blob bs=1k count=512 && md5sum /data/blob > /data/blob.md5 && sync && cat /data/blob.md5",
        ),
    ]);
    c.wait_until("the writer done", Duration::from_secs(180), |c| {
        phase(c, "writer") == "Succeeded"
    });
    let written = c.kubectl(&["logs", "writer"]).expect("logs");
    c.kubectl(&["delete", "pod", "writer", "--wait=true"])
        .expect("delete");
    c.wait_until(
        "the disk detached from node 0",
        Duration::from_secs(180),
        |c| {
            c.sim
                .control("GET", "/state", None)
                .map(|(_, s)| {
                    s["disks"]
                        .as_object()
                        .into_iter()
                        .flatten()
                        .all(|(_, d)| d["attachedTo"].as_array().is_none_or(Vec::is_empty))
                })
                .unwrap_or(false)
        },
    );
    c.apply(&[pod(
        "reader",
        NODES[1],
        "existing-data",
        "md5sum /data/blob && cat /data/blob.md5",
    )]);
    c.wait_until("the reader done", Duration::from_secs(180), |c| {
        phase(c, "reader") == "Succeeded"
    });
    let read = c.kubectl(&["logs", "reader"]).expect("logs");
    let sums: Vec<&str> = read
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(sums.len(), 2, "{read}");
    assert_eq!(
        sums[0], sums[1],
        "the bytes on node 1 are those written on node 0"
    );
    let written_sum = written
        .lines()
        .find(|l| l.ends_with("/data/blob"))
        .and_then(|l| l.split_whitespace().next());
    assert_eq!(written_sum, Some(sums[0]), "{written} vs {read}");
    // The real callers called the driver: kube-controller-manager attached, kubelet mounted.
    let controller = c.log("flexdisk-controller");
    assert!(
        controller.contains("call=attach") && controller.contains("call=detach"),
        "{controller}"
    );
}
