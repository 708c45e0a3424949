//! flexdisk on a cluster as kubeadm makes it (`RealCluster::start_kubeadm`): the control plane is
//! `kubeadm init`'s static pods, run from distroless images named as upstream's; the workers
//! `kubeadm join`; kube-controller-manager carries exactly the README's `extraVolumes`; flexdisk
//! is installed as users install it with Helm (`helm install` of the chart, `install/`, with the
//! images that ship), and its DaemonSet, not the harness,
//! puts the driver into the control-plane node's plugin dir, where the controller-manager's
//! container runs it. One scenario: the shipped static driver runs in that container, and a
//! claim of the example class is attached, moved to another node and detached through it.

use libtest_mimic::{Arguments, Trial};
use serde_json::{json, Value};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Instant;
use system_tests::real_cluster::{
    control_plane_image, phase, pod, readme_controller_manager_volumes, static_binaries, Installer,
    RealCluster,
};
use system_tests::scene::world;

const CONTROL_PLANE: &str = "k8s-cp-0";
const WORKERS: [&str; 2] = ["k8s-pool-0", "k8s-pool-1"];
/// Where kube-controller-manager (its default `--flex-volume-plugin-dir`) and kubelet find the
/// driver.
const DRIVER: &str =
    "/usr/libexec/kubernetes/kubelet-plugins/volume/exec/flexdisk~azure-disk/azure-disk";

/// The cluster, for the signal handler (a run interrupted leaves nothing behind).
static LIVE: OnceLock<Weak<RealCluster>> = OnceLock::new();

fn main() {
    system_tests::real_cluster::tear_down_on_signals(&LIVE);
    let args = Arguments::from_args();
    let trials = vec![Trial::test(
        "kubeadm_cluster::attach_move_detach_in_the_kubeadm_controller_manager",
        || {
            scenario();
            Ok(())
        },
    )];
    libtest_mimic::run(&args, trials).exit();
}

fn scenario() {
    system_tests::real_cluster::simulator();
    let tmp = tempfile::tempdir().expect("tmp");
    let nodes: Vec<(&str, &str)> = std::iter::once(CONTROL_PLANE)
        .chain(WORKERS)
        .map(|n| (n, "Standard_D4s_v3"))
        .collect();
    let world_file = world(tmp.path(), &nodes);
    let started = Instant::now();
    let c = Arc::new(RealCluster::start_kubeadm(
        &world_file,
        CONTROL_PLANE,
        &WORKERS,
    ));
    let _ = LIVE.set(Arc::downgrade(&c));
    eprintln!(
        "[{:>6.1}s] kubeadm cluster up",
        started.elapsed().as_secs_f64()
    );
    c.install_flexdisk_with(Installer::Helm);
    c.apply_example("storageclass-premium.yaml");
    eprintln!(
        "[{:>6.1}s] flexdisk installed",
        started.elapsed().as_secs_f64()
    );
    let scenario_started = Instant::now();
    controller_manager_runs_the_shipped_driver(&c);
    claim_attached_moved_detached(&c);
    eprintln!(
        "[{:>6.1}s] scenario done in {:.1}s",
        started.elapsed().as_secs_f64(),
        scenario_started.elapsed().as_secs_f64()
    );
}

/// The control-plane node.
fn cp(c: &RealCluster) -> &system_tests::real_cluster::Node {
    c.nodes
        .iter()
        .find(|n| n.name == CONTROL_PLANE)
        .expect("the control-plane node")
}

/// kubeadm's kube-controller-manager manifest has the upstream image and exactly the README's
/// volumes beside kubeadm's own; the driver in the control-plane node's plugin dir is the shipped
/// static binary, put there by the DaemonSet; run by `kubectl exec` in the controller-manager's
/// container (distroless: no shell), it answers `init`.
fn controller_manager_runs_the_shipped_driver(c: &RealCluster) {
    let cp = cp(c);
    let manifest_file = cp.dir.join("etc/manifests/kube-controller-manager.yaml");
    let manifest: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(&manifest_file).expect("kubeadm's kcm manifest"),
    )
    .expect("yaml");
    let container = &manifest["spec"]["containers"][0];
    assert_eq!(
        container["image"],
        json!(control_plane_image("kube-controller-manager")),
        "{manifest}"
    );
    // kubeadm's own volumes (K/phases/controlplane/volumes.go): the CA dirs of the host, the
    // pki dir and the kubeconfig; the rest is the README's, as it says.
    let own = [
        "ca-certs",
        "etc-ca-certificates",
        "etc-pki",
        "k8s-certs",
        "kubeconfig",
        "usr-local-share-ca-certificates",
        "usr-share-ca-certificates",
    ];
    let volumes: Vec<&Value> = manifest["spec"]["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .filter(|v| !own.contains(&v["name"].as_str().unwrap_or_default()))
        .collect();
    let readme = readme_controller_manager_volumes();
    assert_eq!(volumes.len(), readme.len(), "{manifest}");
    for want in &readme {
        let name = want["name"].as_str().expect("name");
        let volume = volumes
            .iter()
            .find(|v| v["name"] == want["name"])
            .unwrap_or_else(|| panic!("no volume {name} in {manifest}"));
        assert_eq!(volume["hostPath"]["path"], want["hostPath"], "{manifest}");
        assert_eq!(volume["hostPath"]["type"], want["pathType"], "{manifest}");
        let mount = container["volumeMounts"]
            .as_array()
            .expect("mounts")
            .iter()
            .find(|m| m["name"] == want["name"])
            .unwrap_or_else(|| panic!("no mount {name} in {manifest}"));
        assert_eq!(mount["mountPath"], want["mountPath"], "{manifest}");
    }
    // The DaemonSet's copy, byte for byte the shipped binary (statically linked: `shipped`
    // refuses a dynamic one).
    let installed =
        std::fs::read(cp.dir.join("plugins/flexdisk~azure-disk/azure-disk")).expect("driver");
    let shipped = std::fs::read(static_binaries().join("flexdisk")).expect("shipped driver");
    assert!(
        installed == shipped,
        "the driver on {CONTROL_PLANE} is not the shipped binary"
    );
    let pod = format!("kube-controller-manager-{CONTROL_PLANE}");
    let init = c
        .kubectl(&["-n", "kube-system", "exec", &pod, "--", DRIVER, "init"])
        .unwrap_or_else(|e| panic!("{e}\n{}", c.diagnostics()));
    let answer: Value = serde_json::from_str(init.trim()).expect("the driver's JSON");
    assert_eq!(answer["status"], "Success", "{init}");
    assert_eq!(answer["capabilities"]["attach"], true, "{init}");
    // The negative control: the container has no shell, so what ran above ran without one.
    let shell = c.kubectl(&[
        "-n",
        "kube-system",
        "exec",
        &pod,
        "--",
        "/bin/sh",
        "-c",
        "true",
    ]);
    assert!(
        shell.is_err(),
        "a shell in kube-controller-manager: {shell:?}"
    );
}

/// The VMs the simulated Azure shows disk `name` attached to; `None` when there is no such disk.
fn attached_to(c: &RealCluster, name: &str) -> Option<Vec<String>> {
    c.disk_record(name).map(|d| {
        d["attachedTo"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str()?.rsplit('/').next().map(str::to_string))
            .collect()
    })
}

/// A claim of the example class: a pod on one worker writes, goes; the disk is detached; a pod on
/// the other worker reads the same bytes, goes; the claim goes and the disk with it. Every attach
/// and detach was kube-controller-manager's, in its container (its driver log on the
/// control-plane node, through the README's `flexdisk-log` volume).
fn claim_attached_moved_detached(c: &RealCluster) {
    let long = system_tests::real_cluster::timing().long_wait();
    c.apply(&[
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "data", "namespace": "default"},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "flexdisk-premium",
                "resources": {"requests": {"storage": "2Gi"}}}}),
        pod(
            "writer",
            WORKERS[0],
            "data",
            "dd if=/dev/urandom of=/data/blob bs=1k count=512 && md5sum /data/blob && sync",
        ),
    ]);
    c.wait_until("the writer done", long, |c| {
        phase(c, "writer") == "Succeeded"
    });
    let pv = c
        .kubectl_json(&["get", "pvc", "data"])
        .ok()
        .and_then(|p| p["spec"]["volumeName"].as_str().map(str::to_string))
        .expect("bound");
    let disk_uri = c.kubectl_json(&["get", "pv", &pv]).expect("pv")["spec"]["flexVolume"]
        ["options"]["diskURI"]
        .as_str()
        .expect("diskURI")
        .to_string();
    let disk = disk_uri.rsplit('/').next().expect("disk name").to_string();
    let written = c.kubectl(&["logs", "writer"]).expect("logs");
    c.kubectl(&["delete", "pod", "writer", "--wait=true"])
        .expect("delete");
    c.wait_until("the disk detached from the first worker", long, |c| {
        attached_to(c, &disk).is_some_and(|vms| vms.is_empty())
    });
    c.apply(&[pod("reader", WORKERS[1], "data", "md5sum /data/blob")]);
    c.wait_until("the disk attached to the second worker", long, |c| {
        attached_to(c, &disk) == Some(vec![WORKERS[1].to_string()])
    });
    c.wait_until("the reader done", long, |c| {
        phase(c, "reader") == "Succeeded"
    });
    let read = c.kubectl(&["logs", "reader"]).expect("logs");
    let sum = |out: &str| {
        out.lines()
            .find(|l| l.ends_with("/data/blob"))
            .and_then(|l| l.split_whitespace().next())
            .map(str::to_string)
    };
    assert!(sum(&written).is_some(), "{written}");
    assert_eq!(
        sum(&written),
        sum(&read),
        "the bytes on the second worker are those written on the first"
    );
    c.kubectl(&["delete", "pod", "reader", "--wait=true"])
        .expect("delete");
    c.wait_until("the disk detached from the second worker", long, |c| {
        attached_to(c, &disk).is_some_and(|vms| vms.is_empty())
    });
    c.kubectl(&["delete", "pvc", "data", "--wait=true"])
        .expect("delete claim");
    c.wait_until("the disk deleted with its claim", long, |c| {
        attached_to(c, &disk).is_none()
    });
    // The controller side ran in kube-controller-manager's container on the control-plane node:
    // its calls are in that node's driver log (the README's flexdisk-log volume), the disk
    // attached to and detached from each worker in turn. (The call lines shorten their
    // arguments; the attach module's lines name the disk whole.)
    let log = std::fs::read_to_string(cp(c).dir.join("log/flexdisk.log")).unwrap_or_default();
    // (An attach names the node, its batch's holder having read the VM; a detach the VM it read.
    // The workers' node and VM names are the same.)
    for vm in WORKERS {
        for (what, on) in [("attached", "node"), ("detached", "vm")] {
            let line = format!("flexdisk::attach: {what} disk={disk} {on}={vm}");
            assert!(
                log.contains(&line),
                "kube-controller-manager's driver log on {CONTROL_PLANE} lacks {line:?}:\n{log}"
            );
        }
    }
    let successes = |call: &str| {
        log.lines()
            .filter(|l| l.contains(&format!("call={call} ")) && l.contains("outcome=Success"))
            .count()
    };
    assert!(
        successes("attach") >= 2 && successes("detach") >= 2,
        "{log}"
    );
}
