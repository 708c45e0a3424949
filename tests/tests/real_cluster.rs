//! flexdisk under real Kubernetes: upstream kube-apiserver, kube-controller-manager, kube-scheduler
//! and kubelets with containerd (`system_tests::real_cluster`), Azure simulated, flexdisk installed
//! with `kubectl apply -k` of `install/`. The driver is called by the real attach/detach controller
//! and the real kubelet and the provisioner runs in pods, so what these tests show is what a cluster
//! does with flexdisk, not what our emulators think it does.
//!
//! One cluster serves every scenario, one after the other (starting one takes a while, and the
//! simulator's login certificate names the cluster's address: one cluster per test process).

use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};
use system_tests::real_cluster::{RealCluster, TOOLS_IMAGE};
use system_tests::scene::world;

const NODES: [&str; 2] = ["k8s-pool-0", "k8s-pool-1"];
const LONG: Duration = Duration::from_secs(180);

/// A pod on `node` that runs `script` with the claim mounted at /data.
fn pod(name: &str, node: &str, claim: &str, script: &str) -> Value {
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

/// The disks the simulated Azure has, by name, with the VMs each is attached to.
fn disks(c: &RealCluster) -> Vec<(String, Vec<String>)> {
    let (_, state) = c.sim.control("GET", "/state", None).expect("state");
    state["disks"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(_, d)| {
            (
                d["name"].as_str().unwrap_or_default().to_string(),
                d["attachedTo"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str()?.rsplit('/').next().map(str::to_string))
                    .collect(),
            )
        })
        .collect()
}

fn exec(c: &RealCluster, pod: &str, script: &str) -> String {
    c.kubectl(&["exec", pod, "--", "/bin/sh", "-c", script])
        .unwrap_or_else(|e| panic!("{e}\n{}", c.diagnostics()))
}

#[test]
fn flexdisk_on_a_real_cluster() {
    let tmp = tempfile::tempdir().expect("tmp");
    let world_file = world(tmp.path(), &NODES.map(|n| (n, "Standard_D4s_v3")));
    let started = Instant::now();
    let c = RealCluster::start(&world_file, &NODES);
    c.install_flexdisk();
    eprintln!(
        "[{:>6.1}s] cluster up, flexdisk installed",
        started.elapsed().as_secs_f64()
    );
    for (name, scenario) in [
        (
            "a static volume moves between nodes",
            static_volume_moves as fn(&RealCluster),
        ),
        (
            "a StatefulSet's volumes survive a drain, grow, and go",
            statefulset_drain_resize_delete,
        ),
    ] {
        let t = Instant::now();
        scenario(&c);
        eprintln!(
            "[{:>6.1}s] {name}: {:.1}s",
            started.elapsed().as_secs_f64(),
            t.elapsed().as_secs_f64()
        );
    }
}

/// A static PV of an existing disk: the real controller attaches it through the driver, the real
/// kubelet mounts it into a container that writes; the pod goes, the disk is detached, a pod on
/// the other node reads the same bytes.
fn static_volume_moves(c: &RealCluster) {
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
    c.wait_until("the writer done", LONG, |c| {
        phase(c, "writer") == "Succeeded"
    });
    let written = c.kubectl(&["logs", "writer"]).expect("logs");
    c.kubectl(&["delete", "pod", "writer", "--wait=true"])
        .expect("delete");
    c.wait_until("the disk detached from node 0", LONG, |c| {
        disks(c)
            .iter()
            .any(|(n, vms)| n == "existing-data" && vms.is_empty())
    });
    c.apply(&[pod(
        "reader",
        NODES[1],
        "existing-data",
        "md5sum /data/blob && cat /data/blob.md5",
    )]);
    c.wait_until("the reader done", LONG, |c| {
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
    // The real callers called the driver: kube-controller-manager attached and detached.
    let controller = c.log("flexdisk-controller");
    assert!(
        controller.contains("call=attach") && controller.contains("call=detach"),
        "{controller}"
    );
    c.kubectl(&["delete", "pod", "reader", "--wait=true"])
        .expect("delete");
}

/// The project's own example StorageClass; a StatefulSet of three writes a checksummed file per
/// replica; `kubectl drain` of the node holding some moves them (disks detached there, attached on
/// the other node) with their bytes; one claim grows and the container sees it; scaling down and
/// deleting the claims deletes their disks.
fn statefulset_drain_resize_delete(c: &RealCluster) {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    c.kubectl(&[
        "apply",
        "-f",
        examples
            .join("storageclass-premium.yaml")
            .to_str()
            .expect("utf-8"),
    ])
    .expect("class");
    let script = "[ -f /data/sum ] || { dd if=/dev/urandom of=/data/blob bs=1k count=256 && md5sum /data/blob > /data/sum && sync; }; \
                  md5sum -c /data/sum && touch /tmp/ready && exec sleep 100000";
    c.apply(&[json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "db", "namespace": "default"},
        "spec": {"serviceName": "db", "replicas": 3, "selector": {"matchLabels": {"app": "db"}},
            "template": {"metadata": {"labels": {"app": "db"}},
                "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "db",
                    "image": TOOLS_IMAGE, "imagePullPolicy": "Never",
                    "command": ["/bin/sh", "-c", script],
                    "readinessProbe": {"exec": {"command": ["/bin/test", "-f", "/tmp/ready"]}, "periodSeconds": 1},
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "flexdisk-premium",
                    "resources": {"requests": {"storage": "1Gi"}}}}]}})]);
    let ready = |c: &RealCluster| {
        c.kubectl_json(&["get", "statefulset", "db"])
            .ok()
            .is_some_and(|s| s["status"]["readyReplicas"] == 3)
    };
    c.wait_until("the StatefulSet ready", LONG, ready);
    let sums = |c: &RealCluster| -> Vec<String> {
        (0..3)
            .map(|i| exec(c, &format!("db-{i}"), "cat /data/sum"))
            .collect()
    };
    let before = sums(c);
    let node_of = |c: &RealCluster, pod: &str| {
        c.kubectl_json(&["get", "pod", pod])
            .ok()
            .and_then(|p| p["spec"]["nodeName"].as_str().map(str::to_string))
            .unwrap_or_default()
    };
    let drained = node_of(c, "db-0");
    c.kubectl(&[
        "drain",
        &drained,
        "--ignore-daemonsets",
        "--delete-emptydir-data",
        "--force",
        "--timeout=170s",
    ])
    .unwrap_or_else(|e| panic!("{e}\n{}", c.diagnostics()));
    c.wait_until("the StatefulSet ready again", LONG, ready);
    for i in 0..3 {
        assert_ne!(
            node_of(c, &format!("db-{i}")),
            drained,
            "db-{i} left the node"
        );
    }
    assert_eq!(sums(c), before, "the replicas' bytes moved with them");
    assert!(
        disks(c)
            .iter()
            .all(|(_, vms)| !vms.contains(&drained)),
        "every disk detached from the drained node: {:?}",
        disks(c)
    );
    c.kubectl(&["uncordon", &drained]).expect("uncordon");

    // Growth: the provisioner grows disk and PV, kubelet the filesystem; the container sees it.
    let before_kib: u64 = exec(c, "db-1", "df -k /data | tail -1")
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("df");
    c.kubectl(&[
        "patch",
        "pvc",
        "data-db-1",
        "--type=merge",
        "-p",
        r#"{"spec":{"resources":{"requests":{"storage":"3Gi"}}}}"#,
    ])
    .expect("grow");
    c.wait_until("the claim grown to 3Gi", LONG, |c| {
        c.kubectl_json(&["get", "pvc", "data-db-1"])
            .ok()
            .is_some_and(|p| p["status"]["capacity"]["storage"] == "3Gi")
    });
    let after_kib: u64 = exec(c, "db-1", "df -k /data | tail -1")
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("df");
    assert!(
        before_kib < 1_100_000 && after_kib > 2_900_000,
        "{before_kib} KiB → {after_kib} KiB"
    );

    // Gone: the StatefulSet and its claims; their disks with them (reclaimPolicy Delete).
    let volumes: Vec<String> = (0..3)
        .map(|i| {
            c.kubectl_json(&["get", "pvc", &format!("data-db-{i}")])
                .ok()
                .and_then(|p| p["spec"]["volumeName"].as_str().map(str::to_string))
                .expect("bound")
        })
        .collect();
    c.kubectl(&["delete", "statefulset", "db", "--wait=true"])
        .expect("delete");
    c.kubectl(&[
        "delete",
        "pvc",
        "data-db-0",
        "data-db-1",
        "data-db-2",
        "--wait=true",
    ])
    .expect("delete claims");
    c.wait_until("the disks deleted", LONG, |c| {
        let d = disks(c);
        volumes.iter().all(|v| !d.iter().any(|(n, _)| n == v))
    });
}
