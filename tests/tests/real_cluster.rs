//! flexdisk under real Kubernetes: upstream kube-apiserver, kube-controller-manager, kube-scheduler
//! and kubelets with containerd (`system_tests::real_cluster`), Azure simulated, flexdisk installed
//! with `kubectl apply -k` of `install/`. The driver is called by the real attach/detach controller
//! and the real kubelet and the provisioner runs in pods, so what these tests show is what a cluster
//! does with flexdisk, not what our emulators think it does.
//!
//! One cluster serves every scenario, one after the other (starting one takes a while, and the
//! simulator's login certificate names the cluster's address: one cluster per test process); each
//! scenario is its own test (libtest-mimic, so that the cluster is torn down after the last), and
//! each must leave the cluster as it found it (`Footprint`).

use libtest_mimic::{Arguments, Failed, Trial};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};
use system_tests::real_cluster::{
    controller_driver_log, phase, pod, RealCluster, CONTROLLER_MANAGERS, TOOLS_IMAGE,
};
use system_tests::scene::world;

const NODES: [&str; 2] = ["k8s-pool-0", "k8s-pool-1"];

/// A uniform scale set's node pool named as AKS names them, one VM in zone 1 and one in zone 2, of
/// a size with 4 data-disk slots (`Standard_D2s_v3`), tainted as a dedicated pool is: only the
/// scenarios about zones and scale sets run there.
const SCALE_SET: &str = "aks-zonal-31415926-vmss";
const ZONAL: [&str; 2] = [
    "aks-zonal-31415926-vmss000000",
    "aks-zonal-31415926-vmss000001",
];
const ZONAL_TAINT: &str = "pool=zonal:NoSchedule";

/// How long to wait for what a few Azure operations and Kubernetes' reactions take (longer with
/// Azure-like timing, `FLEXDISK_REAL_CLUSTER_TIMING=azure`).
fn long() -> Duration {
    system_tests::real_cluster::timing().long_wait()
}

/// The disks the simulated Azure has, by name, with the VMs each is attached to.
fn disks(c: &RealCluster) -> Vec<(String, Vec<String>)> {
    try_disks(c).expect("the simulator's state")
}

fn try_disks(c: &RealCluster) -> Result<Vec<(String, Vec<String>)>, String> {
    let (_, state) = c
        .sim
        .control("GET", "/state", None)
        .map_err(|e| e.to_string())?;
    Ok(state["disks"]
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
        .collect())
}

/// The VMs Azure shows disk `name` attached to (none for a disk that does not exist).
fn attached_to(c: &RealCluster, name: &str) -> Vec<String> {
    disks(c)
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, vms)| vms)
        .unwrap_or_default()
}

/// Deletes a one-replica StatefulSet of `checksummed_statefulset`, then, once its pod is gone,
/// the pod's claim.
fn delete_statefulset_of_one(c: &RealCluster, name: &str) {
    c.kubectl(&["delete", "statefulset", name, "--wait=true"])
        .expect("delete");
    let pod = format!("{name}-0");
    c.wait_until(&format!("{pod} gone"), long(), |c| {
        c.kubectl(&["get", "pod", &pod]).is_err()
    });
    c.kubectl(&["delete", "pvc", &format!("data-{pod}"), "--wait=true"])
        .expect("delete");
}

/// Deletes a pod, then (once it is gone) its claim.
fn delete_pod_and_claim(c: &RealCluster, pod: &str, claim: &str) {
    c.kubectl(&["delete", "pod", pod, "--wait=true"])
        .expect("delete");
    c.kubectl(&["delete", "pvc", claim, "--wait=true"])
        .expect("delete");
}

fn exec(c: &RealCluster, pod: &str, script: &str) -> String {
    c.kubectl(&["exec", pod, "--", "/bin/sh", "-c", script])
        .unwrap_or_else(|e| panic!("{e}\n{}", c.diagnostics()))
}

/// A scenario: what it does to the shared cluster, asserting as it goes.
type Scenario = fn(&RealCluster);

/// Each scenario under its function's name.
macro_rules! scenarios {
    ($($f:ident),* $(,)?) => { &[$((stringify!($f), $f as Scenario)),*] };
}

/// The scenarios, in the order they run (each is its own test: `cargo test --test real_cluster
/// -- NAME` runs the ones whose name contains NAME).
const SCENARIOS: &[(&str, Scenario)] = scenarios![
    static_volume_moves,
    statefulset_drain_resize_delete,
    retain_keeps_the_disk,
    access_modes,
    two_pods_of_one_claim_on_one_node,
    kubelet_restarted_with_volumes_mounted,
    driver_upgraded_with_volumes_mounted,
    a_non_root_pod_and_a_block_claim,
    controller_restart_mid_detach,
    controller_failover_mid_attach,
    provisioner_leader_killed,
    provisioner_failure_paths,
    volume_attributes_classes,
    provisioner_adversarial_paths,
    node_rebooted,
    out_of_service_node,
    zonal_statefulset_across_zones,
    regional_volume_kept_off_zonal_nodes,
    data_disk_limit_of_a_zonal_scale_set_vm,
];

/// What a scenario must leave as it found it: Azure's disks and their attachments, the claims,
/// volumes, namespaces and workload pods, and the simulator's loop devices.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Footprint {
    disks: BTreeSet<String>,
    attachments: BTreeSet<String>,
    claims: BTreeSet<String>,
    volumes: BTreeSet<String>,
    namespaces: BTreeSet<String>,
    pods: BTreeSet<String>,
    loop_devices: BTreeSet<String>,
}

/// The namespaces whose pods are the cluster's own (flexdisk's included), not a scenario's.
const SYSTEM_NAMESPACES: &[&str] = &[
    "kube-system",
    "kube-public",
    "kube-node-lease",
    "flexdisk-system",
];

impl Footprint {
    fn of(c: &RealCluster) -> Result<Footprint, String> {
        let names = |kind: &str| -> Result<BTreeSet<String>, String> {
            let list = c.kubectl_json(&["get", kind, "--all-namespaces"])?;
            Ok(list["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|o| {
                    !SYSTEM_NAMESPACES.contains(&o["metadata"]["namespace"].as_str().unwrap_or(""))
                })
                .map(|o| {
                    let name = o["metadata"]["name"].as_str().unwrap_or_default();
                    match o["metadata"]["namespace"].as_str() {
                        Some(ns) => format!("{ns}/{name}"),
                        None => name.to_string(),
                    }
                })
                .collect())
        };
        let state = c.sim.field("state");
        let loops = Command::new("losetup")
            .arg("--list")
            .arg("--noheadings")
            .args(["--output", "NAME,BACK-FILE"])
            .output()
            .map_err(|e| format!("losetup: {e}"))?;
        let disks = disks(c);
        Ok(Footprint {
            attachments: disks
                .iter()
                .flat_map(|(d, vms)| vms.iter().map(move |vm| format!("{d} on {vm}")))
                .collect(),
            disks: disks.into_iter().map(|(d, _)| d).collect(),
            claims: names("persistentvolumeclaims")?,
            volumes: names("persistentvolumes")?,
            namespaces: names("namespaces")?,
            pods: names("pods")?,
            loop_devices: String::from_utf8_lossy(&loops.stdout)
                .lines()
                .filter(|l| !state.is_empty() && l.contains(&state))
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
                .collect(),
        })
    }

    /// What `self` has that `before` had not, and what it lost, field by field.
    fn differences(&self, before: &Footprint) -> Vec<String> {
        let fields = [
            ("disk", &before.disks, &self.disks),
            ("attachment", &before.attachments, &self.attachments),
            ("claim", &before.claims, &self.claims),
            ("volume", &before.volumes, &self.volumes),
            ("namespace", &before.namespaces, &self.namespaces),
            ("pod", &before.pods, &self.pods),
            ("loop device", &before.loop_devices, &self.loop_devices),
        ];
        let mut out = Vec::new();
        for (what, was, now) in fields {
            out.extend(
                now.difference(was)
                    .map(|x| format!("{what} left behind: {x}")),
            );
            out.extend(was.difference(now).map(|x| format!("{what} gone: {x}")));
        }
        out
    }
}

/// One cluster for every scenario (starting one takes a while, and the simulator's login
/// certificate names the cluster's address), made by the first scenario that runs.
struct Shared {
    cluster: Arc<RealCluster>,
    /// The footprint of the cluster as installed: every scenario leaves it so.
    baseline: Footprint,
    started: Instant,
    _tmp: tempfile::TempDir,
}

fn start() -> Shared {
    system_tests::real_cluster::simulator();
    let tmp = tempfile::tempdir().expect("tmp");
    let world_file = world(tmp.path(), &NODES.map(|n| (n, "Standard_D4s_v3")));
    let mut w: Value =
        serde_json::from_slice(&std::fs::read(&world_file).expect("world")).expect("json");
    for (i, zone) in ["1", "2"].into_iter().enumerate() {
        w["nodes"].as_array_mut().expect("nodes").push(json!({
            "vmSize": "Standard_D2s_v3", "zone": zone, "systemAssignedIdentity": true,
            "scaleSet": SCALE_SET, "instanceId": i}));
    }
    std::fs::write(&world_file, w.to_string()).expect("world");
    let started = Instant::now();
    let all: Vec<&str> = NODES.iter().chain(&ZONAL).copied().collect();
    let cluster = Arc::new(RealCluster::start(&world_file, &all));
    let _ = LIVE.set(Arc::downgrade(&cluster));
    for node in ZONAL {
        cluster
            .kubectl(&["taint", "node", node, ZONAL_TAINT])
            .expect("taint");
    }
    cluster.install_flexdisk();
    // The example StorageClass most scenarios use, applied as a user would after installing (so
    // that any scenario runs alone).
    cluster.apply_example("storageclass-premium.yaml");
    eprintln!(
        "[{:>6.1}s] cluster up, flexdisk installed",
        started.elapsed().as_secs_f64()
    );
    let baseline = Footprint::of(&cluster).expect("the installed cluster's footprint");
    Shared {
        cluster,
        baseline,
        started,
        _tmp: tmp,
    }
}

/// Runs one scenario on the shared cluster, then checks it left nothing behind (polling: disks
/// and loop devices go a while after their claims). A scenario that fails is cleaned up after
/// as far as deleting its workloads goes, so that the next ones start from the baseline.
fn run_scenario(
    shared: &Mutex<Option<Shared>>,
    name: &str,
    scenario: Scenario,
) -> Result<(), Failed> {
    let mut guard = shared.lock().unwrap_or_else(|e| e.into_inner());
    let s = guard.get_or_insert_with(start);
    let t = Instant::now();
    // The simulated Azure's timing as the run set it: a scenario that slows it for a while and
    // fails before it restores it must not slow the rest.
    let timing = s
        .cluster
        .sim
        .control("GET", "/timing", None)
        .map(|(_, t)| t);
    // Sampled while it runs (every second), not only after: a stale mount that a scenario's own
    // clean-up unmounts would otherwise go unseen.
    let cluster = s.cluster.clone();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let stale = Mutex::new(BTreeSet::new());
    let outcome = std::thread::scope(|scope| {
        scope.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let found = stale_mounts(&cluster);
                stale.lock().expect("stale").extend(found);
                std::thread::sleep(Duration::from_secs(1));
            }
        });
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| scenario(&cluster)));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        outcome
    });
    let stale = stale.into_inner().expect("stale");
    let stale_report = |after: &[String]| {
        format!(
            "volumes mounted on devices their node's VM no longer has (while it ran, then after \
             it):\n{}\n{}",
            stale.iter().cloned().collect::<Vec<_>>().join("\n"),
            after.join("\n")
        )
    };
    if let Ok(timing) = &timing {
        let _ = s.cluster.sim.control("PUT", "/timing", Some(timing));
    }
    eprintln!(
        "[{:>6.1}s] {name}: {:.1}s",
        s.started.elapsed().as_secs_f64(),
        t.elapsed().as_secs_f64()
    );
    if let Err(panic) = outcome {
        if !stale.is_empty() {
            eprintln!("{name}: {}", stale_report(&[]));
        }
        clean_up(&s.cluster);
        // What the failure left past the clean-up is this scenario's, not the next one's.
        let deadline = Instant::now() + long();
        while Footprint::of(&s.cluster).is_ok_and(|f| f != s.baseline) && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_secs(1));
        }
        if let Ok(now) = Footprint::of(&s.cluster) {
            let left = now.differences(&s.baseline);
            if !left.is_empty() {
                eprintln!("{name} failed and left:\n{}", left.join("\n"));
            }
            s.baseline = now;
        }
        std::panic::resume_unwind(panic);
    }
    let deadline = Instant::now() + long();
    loop {
        let now = Footprint::of(&s.cluster)?;
        let left = now.differences(&s.baseline);
        if left.is_empty() {
            let after = stale_mounts(&s.cluster);
            if stale.is_empty() && after.is_empty() {
                return Ok(());
            }
            return Err(format!(
                "{name}: {}\n{}",
                stale_report(&after),
                s.cluster.diagnostics()
            )
            .into());
        }
        if Instant::now() > deadline {
            let message = format!(
                "{name} left the cluster otherwise than it found it:\n{}\n{}\n{}",
                left.join("\n"),
                if stale.is_empty() {
                    String::new()
                } else {
                    stale_report(&[])
                },
                s.cluster.diagnostics()
            );
            clean_up(&s.cluster);
            // The next scenario compares with what is left now.
            s.baseline = Footprint::of(&s.cluster)?;
            return Err(message.into());
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Where kubelet has the driver mount a volume's device (its global mount, one per volume and
/// node), and where it binds that into a pod
/// (pkg/volume/flexvolume/plugin.go: the plugin `flexdisk/azure-disk` escaped).
const GLOBAL_MOUNTS: &str =
    "/var/lib/kubelet/plugins/kubernetes.io/flexvolume/flexdisk/azure-disk/mounts/";
const POD_VOLUMES: &str = "/volumes/flexdisk~azure-disk/";

/// One of flexdisk's volume mounts in a node's mount table.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct VolumeMount {
    /// The mount's id and its filesystem's device (`maj:min`): the same pair in two reads is the
    /// same mount (an id alone may be handed out again).
    id: String,
    device: String,
    volume: String,
    point: String,
}

/// flexdisk's volume mounts in a node's mount table (`/proc/<pid>/mountinfo`: id, parent,
/// maj:min, root, mount point, …).
fn volume_mounts(table: &str) -> BTreeSet<VolumeMount> {
    table
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let point = *f.get(4)?;
            let volume = point
                .strip_prefix(GLOBAL_MOUNTS)
                .or_else(|| point.split_once(POD_VOLUMES).map(|(_, v)| v))?;
            Some(VolumeMount {
                id: f[0].to_string(),
                device: f[2].to_string(),
                volume: volume.to_string(),
                point: point.to_string(),
            })
        })
        .collect()
}

/// The data disks the node's VM has now, as its guest sees them: `maj:min` of the block device at
/// each LUN (`/dev/disk/azure/scsi1/lun*` in the VM's tree), by LUN.
fn plugged_devices(node: &system_tests::real_cluster::Node) -> BTreeSet<String> {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(node.sim_root.join("dev/disk/azure/scsi1"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::metadata(e.path()).ok())
        .map(|m| {
            let rdev = m.rdev();
            format!(
                "{}:{}",
                nix::sys::stat::major(rdev),
                nix::sys::stat::minor(rdev)
            )
        })
        .collect()
}

/// Mounts of a volume on a node that is up (its mount table readable) whose device is not a data
/// disk of the node's VM: a filesystem left on a device that is gone — what a detach before the
/// unmount (ours, or an ordering bug with kubelet) makes, or a detach behind Kubernetes' back,
/// and what the data in it does not survive on Azure. Keyed on the device, not on Azure's list of
/// attachments, so a detach and re-attach between two samples (a new device) shows too. Seen
/// without a race: the same mount is in the table before and after the VM's devices are read
/// (an attach plugs the device before anything mounts it; a detach comes after the unmount).
fn stale_mounts(c: &RealCluster) -> Vec<String> {
    let before: Vec<_> = c
        .nodes
        .iter()
        .map(|n| n.mount_table().map(|t| volume_mounts(&t)))
        .collect();
    if before.iter().flatten().all(BTreeSet::is_empty) {
        return Vec::new();
    }
    let plugged: Vec<_> = c.nodes.iter().map(plugged_devices).collect();
    let mut stale = Vec::new();
    for ((node, before), plugged) in c.nodes.iter().zip(before).zip(plugged) {
        let (Some(before), Some(after)) = (before, node.mount_table().map(|t| volume_mounts(&t)))
        else {
            continue;
        };
        for m in before.intersection(&after) {
            if !plugged.contains(&m.device) {
                let azure = try_disks(c)
                    .ok()
                    .and_then(|d| {
                        d.into_iter()
                            .find(|(d, _)| d.eq_ignore_ascii_case(&m.volume))
                    })
                    .map_or("no disk of that name".to_string(), |(_, vms)| {
                        format!("its disk attached to {vms:?}")
                    });
                stale.push(format!(
                    "{}: {} (mount {}, device {}) is mounted on a device the VM no longer has \
                     ({azure} in Azure)",
                    node.name, m.point, m.id, m.device
                ));
            }
        }
    }
    stale
}

/// Undoes what a failed scenario may have left: components it killed are started again, its
/// pods, claims and namespaces deleted (their disks go with them, by their reclaim policy).
fn clean_up(c: &RealCluster) {
    let revived = c.revive();
    if !revived.is_empty() {
        eprintln!("started again after a failed scenario: {revived:?}");
    }
    for node in NODES {
        let _ = c.kubectl(&[
            "taint",
            "node",
            node,
            "node.kubernetes.io/out-of-service=nodeshutdown:NoExecute-",
        ]);
    }
    for node in NODES.iter().chain(&ZONAL) {
        let _ = c.kubectl(&["uncordon", node]);
    }
    // flexdisk as installed (a failed upgrade scenario may have left another driver image).
    let _ = c.kubectl(&[
        "-n",
        "flexdisk-system",
        "set",
        "image",
        "daemonset/flexdisk-node",
        "install=ghcr.io/flexdisk/flexdisk:0.1.0",
    ]);
    let _ = c.kubectl(&[
        "-n",
        "flexdisk-system",
        "rollout",
        "status",
        "daemonset/flexdisk-node",
        "--timeout=120s",
    ]);
    let namespaces = c
        .kubectl_json(&["get", "namespaces"])
        .map(|l| {
            l["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|n| n["metadata"]["name"].as_str().map(str::to_string))
                .filter(|n| !SYSTEM_NAMESPACES.contains(&n.as_str()) && n != "default")
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    for ns in namespaces.iter().map(String::as_str).chain(["default"]) {
        let _ = c.kubectl(&[
            "delete",
            "statefulsets,pods,pvc",
            "--all",
            "-n",
            ns,
            "--wait=true",
            "--timeout=120s",
        ]);
    }
    for ns in &namespaces {
        let _ = c.kubectl(&["delete", "namespace", ns, "--wait=true", "--timeout=120s"]);
    }
}

/// The cluster while it runs, for the signal handler (`tear_down_on_signals`).
static LIVE: OnceLock<Weak<RealCluster>> = OnceLock::new();

fn main() {
    system_tests::real_cluster::tear_down_on_signals(&LIVE);
    let mut args = Arguments::from_args();
    // One cluster, one scenario at a time.
    args.test_threads = Some(1);
    let shared: Arc<Mutex<Option<Shared>>> = Arc::new(Mutex::new(None));
    let trials = SCENARIOS
        .iter()
        .map(|&(name, scenario)| {
            let shared = shared.clone();
            // Named under `real_cluster::`, so that `--skip real_cluster` leaves them all out.
            Trial::test(format!("real_cluster::{name}"), move || {
                run_scenario(&shared, name, scenario)
            })
        })
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    // The cluster goes before the process ends (a static would never be dropped).
    drop(shared.lock().unwrap_or_else(|e| e.into_inner()).take());
    conclusion.exit();
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
    c.wait_until("the writer done", long(), |c| {
        phase(c, "writer") == "Succeeded"
    });
    let written = c.kubectl(&["logs", "writer"]).expect("logs");
    c.kubectl(&["delete", "pod", "writer", "--wait=true"])
        .expect("delete");
    c.wait_until("the disk detached from node 0", long(), |c| {
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
    c.wait_until("the reader done", long(), |c| {
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
    let controller = c.controller_driver_logs();
    assert!(
        controller.contains("call=attach") && controller.contains("call=detach"),
        "{controller}"
    );
    c.kubectl(&["delete", "pod", "reader", "--wait=true"])
        .expect("delete");
    // A Retain volume: the admin deletes the claim, the volume and then the disk.
    c.kubectl(&["delete", "pvc", "existing-data", "--wait=true"])
        .expect("delete claim");
    c.kubectl(&["delete", "pv", "existing-data", "--wait=true"])
        .expect("delete volume");
    c.wait_until("existing-data detached", long(), |c| {
        disks(c)
            .iter()
            .any(|(n, vms)| n == "existing-data" && vms.is_empty())
    });
    system_tests::delete_disk(&c.sim, "existing-data");
}

/// The project's own example StorageClass (applied at the start); a StatefulSet of three writes a checksummed file per
/// replica; `kubectl drain` of the node holding some moves them (disks detached there, attached on
/// the other node) with their bytes; one claim grows and the container sees it; scaling down and
/// deleting the claims deletes their disks.
fn statefulset_drain_resize_delete(c: &RealCluster) {
    let created = Instant::now();
    c.apply(&[checksummed_statefulset("db", 3)]);
    let ready = |c: &RealCluster| {
        c.kubectl_json(&["get", "statefulset", "db"])
            .ok()
            .is_some_and(|s| s["status"]["readyReplicas"] == 3)
    };
    c.wait_until("the StatefulSet ready", long(), ready);
    eprintln!(
        "figure: 3 StatefulSet pods with new volumes, created to ready (one after the other): {:.1}s",
        created.elapsed().as_secs_f64()
    );
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
    let volume_of = |c: &RealCluster, claim: &str| {
        c.kubectl_json(&["get", "pvc", claim])
            .ok()
            .and_then(|p| p["spec"]["volumeName"].as_str().map(str::to_string))
            .unwrap_or_default()
    };
    // Where each pod's seconds went (issue 28): every step found, flexdisk's share printed.
    for i in 0..3 {
        let (pod, claim) = (format!("db-{i}"), format!("data-db-{i}"));
        let w = c.create_waterfall(&pod, &claim, &volume_of(c, &claim), &node_of(c, &pod));
        eprintln!("{w}");
        assert!(w.missing().is_empty(), "{w}");
    }
    let drained = node_of(c, "db-0");
    let movers: Vec<String> = (0..3)
        .map(|i| format!("db-{i}"))
        .filter(|p| node_of(c, p) == drained)
        .collect();
    let moving = movers.len();
    let drain_since = now_secs();
    let drain_started = Instant::now();
    c.kubectl(&[
        "drain",
        &drained,
        "--ignore-daemonsets",
        "--delete-emptydir-data",
        "--force",
        "--timeout=170s",
    ])
    .unwrap_or_else(|e| panic!("{e}\n{}", c.diagnostics()));
    c.wait_until("the StatefulSet ready again", long(), ready);
    eprintln!(
        "figure: kubectl drain of a node with {moving} of the pods, to all ready elsewhere: {:.1}s",
        drain_started.elapsed().as_secs_f64()
    );
    for i in 0..3 {
        assert_ne!(
            node_of(c, &format!("db-{i}")),
            drained,
            "db-{i} left the node"
        );
    }
    assert_eq!(sums(c), before, "the replicas' bytes moved with them");
    assert!(
        disks(c).iter().all(|(_, vms)| !vms.contains(&drained)),
        "every disk detached from the drained node: {:?}",
        disks(c)
    );
    for pod in &movers {
        let claim = format!("data-{pod}");
        let w = c.drain_waterfall(
            pod,
            &volume_of(c, &claim),
            &drained,
            &node_of(c, pod),
            drain_since,
        );
        eprintln!("{w}");
        assert!(w.missing().is_empty(), "{w}");
    }
    c.kubectl(&["uncordon", &drained]).expect("uncordon");

    // Growth: the provisioner grows disk and PV, kubelet the filesystem; the container sees it.
    let before_kib: u64 = exec(c, "db-1", "df -k /data | tail -1")
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("df");
    ask_for(c, "data-db-1", "3Gi");
    c.wait_until("the claim grown to 3Gi", long(), |c| {
        c.kubectl_json(&["get", "pvc", "data-db-1"])
            .ok()
            .is_some_and(|p| p["status"]["capacity"]["storage"] == "3Gi")
    });
    // Two controllers race to hand the claim to the node: kube-controller-manager's expand
    // controller, with a no-op expansion of FlexVolume claims (the disk untouched), and the
    // provisioner after growing the disk. Either way the disk grows; which one won is told.
    let handed_by: Vec<String> = c
        .writes()
        .iter()
        .filter(|e| {
            e["objectRef"]["name"] == "data-db-1"
                && e["objectRef"]["subresource"] == "status"
                && e["responseStatus"]["code"] == 200
                && e["requestObject"].to_string().contains("NodeResizePending")
        })
        .filter_map(|e| e["user"]["username"].as_str().map(str::to_string))
        .collect();
    eprintln!("the claim was handed to the node by {handed_by:?}");
    let after_kib: u64 = exec(c, "db-1", "df -k /data | tail -1")
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("df");
    assert!(
        before_kib < 1_100_000 && after_kib > 2_900_000,
        "{before_kib} KiB → {after_kib} KiB"
    );

    // Usage: the driver says it supports metrics, so kubelet statfs'es the pod's mount of the
    // volume and exports kubelet_volume_stats_* per claim (pkg/volume/flexvolume/plugin.go's
    // NewMetricsStatFS when `supportsMetrics`; pkg/kubelet/metrics/collectors/volume_stats.go).
    // They follow what the container sees: the grown size, and bytes it writes.
    exec(
        c,
        "db-1",
        "dd if=/dev/zero of=/data/fill bs=1M count=48 && sync",
    );
    let df_bytes: u64 = exec(c, "db-1", "df -B1 /data | tail -1")
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("df");
    let node = node_of(c, "db-1");
    let stat = |c: &RealCluster, name: &str| -> Option<f64> {
        let metrics = c
            .kubectl(&[
                "get",
                "--raw",
                &format!("/api/v1/nodes/{node}/proxy/metrics"),
            ])
            .ok()?;
        let prefix =
            format!("kubelet_volume_stats_{name}{{namespace=\"default\",persistentvolumeclaim=\"data-db-1\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())
    };
    c.wait_until(
        "kubelet's volume stats of data-db-1 to show the growth and the 48 MiB",
        Duration::from_secs(60),
        |c| {
            stat(c, "capacity_bytes") == Some(df_bytes as f64)
                && stat(c, "used_bytes").is_some_and(|u| u >= 48.0 * 1024.0 * 1024.0)
        },
    );
    assert!(
        stat(c, "inodes").is_some_and(|i| i > 0.0) && stat(c, "available_bytes").is_some(),
        "every kubelet_volume_stats_* series for the claim"
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
    c.wait_until("the disks deleted", long(), |c| {
        let d = disks(c);
        volumes.iter().all(|v| !d.iter().any(|(n, _)| n == v))
    });
}

/// A StatefulSet of `replicas` on the example premium class whose pods each write a checksummed
/// file once and are ready while it checks out.
fn checksummed_statefulset(name: &str, replicas: u32) -> Value {
    let script = "[ -f /data/sum ] || { dd if=/dev/urandom of=/data/blob bs=1k count=256 && md5sum /data/blob > /data/sum && sync; }; \
                  md5sum -c /data/sum && touch /tmp/ready && exec sleep 100000";
    json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"serviceName": name, "replicas": replicas, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": name,
                    "image": TOOLS_IMAGE, "imagePullPolicy": "Never",
                    "command": ["/bin/sh", "-c", script],
                    "readinessProbe": {"exec": {"command": ["/bin/test", "-f", "/tmp/ready"]}, "periodSeconds": 1},
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "flexdisk-premium",
                    "resources": {"requests": {"storage": "1Gi"}}}}]}})
}

fn claim(name: &str, class: &str, modes: &[&str], size: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"accessModes": modes, "storageClassName": class,
                 "resources": {"requests": {"storage": size}}}})
}

fn bound_volume(c: &RealCluster, claim: &str) -> String {
    c.wait_until(&format!("claim {claim} Bound"), long(), |c| {
        c.kubectl_json(&["get", "pvc", claim])
            .ok()
            .is_some_and(|p| p["status"]["phase"] == "Bound")
    });
    c.kubectl_json(&["get", "pvc", claim])
        .ok()
        .and_then(|p| p["spec"]["volumeName"].as_str().map(str::to_string))
        .expect("bound")
}

/// The example Retain class: the claim goes, the PV is Released and its disk stays; the admin
/// deletes the PV and the disk still stays (nothing sweeps it away).
fn retain_keeps_the_disk(c: &RealCluster) {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    c.kubectl(&[
        "apply",
        "-f",
        examples
            .join("storageclass-retain.yaml")
            .to_str()
            .expect("utf-8"),
    ])
    .expect("class");
    c.apply(&[claim(
        "kept",
        "flexdisk-standardssd-retain",
        &["ReadWriteOnce"],
        "1Gi",
    )]);
    let pv = bound_volume(c, "kept");
    c.kubectl(&["delete", "pvc", "kept", "--wait=true"])
        .expect("delete claim");
    c.wait_until("the volume Released", long(), |c| {
        c.kubectl_json(&["get", "pv", &pv])
            .ok()
            .is_some_and(|p| p["status"]["phase"] == "Released")
    });
    c.kubectl(&["delete", "pv", &pv, "--wait=true"])
        .unwrap_or_else(|e| panic!("the admin deletes the Released PV: {e}"));
    holds(c, "the kept disk stays", Duration::from_secs(5), |c| {
        disks(c).iter().any(|(n, _)| *n == pv)
    });
    let kept = pv;

    // A Delete volume switched to Retain: its claim goes, the admin deletes the PV at once (no
    // finalizer holds it) and the disk stays.
    c.apply(&[claim(
        "switched",
        "flexdisk-premium",
        &["ReadWriteOnce"],
        "1Gi",
    )]);
    let pv = bound_volume(c, "switched");
    c.kubectl(&[
        "patch",
        "pv",
        &pv,
        "-p",
        r#"{"spec":{"persistentVolumeReclaimPolicy":"Retain"}}"#,
    ])
    .expect("switch to Retain");
    c.wait_until("the provisioner's finalizer gone", long(), |c| {
        c.kubectl_json(&["get", "pv", &pv]).ok().is_some_and(|p| {
            p["metadata"]["finalizers"]
                .as_array()
                .into_iter()
                .flatten()
                .all(|f| f != "external-provisioner.volume.kubernetes.io/finalizer")
        })
    });
    c.kubectl(&["delete", "pvc", "switched", "--wait=true"])
        .expect("delete claim");
    c.kubectl(&["delete", "pv", &pv, "--wait=true", "--timeout=30s"])
        .unwrap_or_else(|e| panic!("the switched PV is deleted at once: {e}"));
    holds(
        c,
        "the disk of the volume switched to Retain stays",
        Duration::from_secs(5),
        |c| disks(c).iter().any(|(n, _)| *n == pv),
    );
    // The admin deletes the kept disks once their data is no longer wanted.
    for disk in [kept, pv] {
        c.wait_until(&format!("{disk} detached"), long(), |c| {
            disks(c).iter().any(|(n, vms)| *n == disk && vms.is_empty())
        });
        system_tests::delete_disk(&c.sim, &disk);
    }
}

/// Asserts `f` at every look for `window`: what must stay so (nothing deletes a kept disk) is
/// watched for the whole window, not looked at once after a sleep.
fn holds(c: &RealCluster, what: &str, window: Duration, f: impl Fn(&RealCluster) -> bool) {
    let end = Instant::now() + window;
    while Instant::now() < end {
        assert!(f(c), "no longer so: {what}\n{}", c.diagnostics());
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The claim asks for `size` (a growth).
fn ask_for(c: &RealCluster, claim: &str, size: &str) {
    let patch = json!({"spec": {"resources": {"requests": {"storage": size}}}}).to_string();
    c.kubectl(&["patch", "pvc", claim, "--type=merge", "-p", &patch])
        .expect("grow");
}

/// Now, seconds since the epoch (the waterfalls' clock).
fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The size of the disk named `name` in the simulated Azure, GiB.
fn disk_size_gib(c: &RealCluster, name: &str) -> Option<i64> {
    c.sim
        .control("GET", "/state", None)
        .ok()
        .and_then(|(_, s)| {
            s["disks"]
                .as_object()?
                .values()
                .find(|d| d["name"] == name)
                .and_then(|d| d["sizeGb"].as_i64())
        })
}

/// The events of `object` with `reason`, as `kubectl describe` shows them.
fn event_messages(c: &RealCluster, object: &str, reason: &str) -> Vec<String> {
    events_in(c, "default", object, reason)
}

/// A disk's provisioned performance in the simulated Azure: (IOPS, MB/s).
fn performance(c: &RealCluster, disk: &str) -> (Option<i64>, Option<i64>) {
    let d = sim_disk(c, disk);
    (d["iops"].as_i64(), d["mbps"].as_i64())
}

/// VolumeAttributesClass with the real kube-apiserver (which refuses the class on a FlexVolume
/// PV) and the real PV controller (which would never match such a claim to a PV without it): the
/// provisioner binds the claim from its side, the class's performance shapes the disk, switching
/// classes changes it and the status follows, a class Azure refuses is Infeasible with Azure's
/// reason and sent once. Regional nodes here, so no pod: the class is zonal with Immediate
/// binding (a zonal disk cannot attach to a regional VM); the simulator tests change an attached
/// disk.
fn volume_attributes_classes(c: &RealCluster) {
    let vac = |name: &str, params: Value| {
        json!({"apiVersion": "storage.k8s.io/v1", "kind": "VolumeAttributesClass",
            "metadata": {"name": name}, "driverName": "flexdisk/azure-disk", "parameters": params})
    };
    c.apply(&[
        vac(
            "silver",
            json!({"diskIOPSReadWrite": "6000", "diskMBpsReadWrite": "300"}),
        ),
        vac(
            "gold",
            json!({"diskIOPSReadWrite": "8000", "diskMBpsReadWrite": "400"}),
        ),
        vac("too-fast", json!({"diskIOPSReadWrite": "500000"})),
        json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": "v2-zone-1"}, "provisioner": "flexdisk/azure-disk",
            "parameters": {"skuName": "PremiumV2_LRS", "zones": "1"}}),
    ]);
    let mut tuned = claim("tuned", "v2-zone-1", &["ReadWriteOnce"], "100Gi");
    tuned["spec"]["volumeAttributesClassName"] = json!("silver");
    c.apply(&[tuned]);
    let pv = bound_volume(c, "tuned");
    let current = |c: &RealCluster| {
        c.kubectl_json(&["get", "pvc", "tuned"])
            .ok()
            .map(|p| p["status"].clone())
            .unwrap_or_default()
    };
    c.wait_until("silver current", long(), |c| {
        current(c)["currentVolumeAttributesClassName"] == "silver"
    });
    assert_eq!(performance(c, &pv), (Some(6000), Some(300)));
    let on_pv = c.kubectl_json(&["get", "pv", &pv]).expect("pv");
    assert!(
        on_pv["spec"].get("volumeAttributesClassName").is_none(),
        "{on_pv}"
    );

    let switch = |to: &str| {
        c.kubectl(&[
            "patch",
            "pvc",
            "tuned",
            "--type=merge",
            "-p",
            &json!({"spec": {"volumeAttributesClassName": to}}).to_string(),
        ])
        .unwrap_or_else(|e| panic!("{e}\n{}", c.diagnostics()))
    };
    switch("gold");
    c.wait_until("gold current", long(), |c| {
        let s = current(c);
        s["currentVolumeAttributesClassName"] == "gold" && s["modifyVolumeStatus"].is_null()
    });
    assert_eq!(performance(c, &pv), (Some(8000), Some(400)));

    c.sim.control("DELETE", "/counters", None).expect("reset");
    switch("too-fast");
    c.wait_until("too-fast Infeasible", long(), |c| {
        current(c)["modifyVolumeStatus"]["status"] == "Infeasible"
    });
    assert_eq!(current(c)["currentVolumeAttributesClassName"], "gold");
    assert!(
        event_messages(c, "tuned", "VolumeModifyFailed")
            .iter()
            .any(|m| m.contains("500000")),
        "{}",
        c.diagnostics()
    );
    // The real kube-apiserver keeps an applied class from being dropped.
    let dropped = c.kubectl(&[
        "patch",
        "pvc",
        "tuned",
        "--type=merge",
        "-p",
        r#"{"spec":{"volumeAttributesClassName":null}}"#,
    ]);
    assert!(
        dropped
            .as_ref()
            .is_err_and(|e| e.contains("currentVolumeAttributesClassName")),
        "{dropped:?}"
    );
    let updates = |c: &RealCluster| {
        c.sim
            .control("GET", "/counters", None)
            .map(|(_, counters)| counters["Disks_Update"].as_u64().unwrap_or(0))
            .unwrap_or(0)
    };
    holds(c, "Infeasible is sent once", Duration::from_secs(3), |c| {
        updates(c) <= 1
    });
    assert_eq!(updates(c), 1, "Infeasible is sent once");
    assert_eq!(performance(c, &pv), (Some(8000), Some(400)));
    c.kubectl(&["delete", "pvc", "tuned", "--wait=true"])
        .expect("delete");
    c.wait_until("the disk deleted", long(), |c| {
        disks(c).iter().all(|(name, _)| *name != pv)
    });
}

/// What the provisioner does when things go wrong, with the real kube-controller-manager and
/// scheduler around it: a claim applied before its class is provisioned once the class comes (the
/// controller-manager hands it over on its resync); a WaitForFirstConsumer claim whose selected
/// node is gone goes back to the scheduler, which chooses a live node for its pod; Azure refusing
/// disk writes is an event with Azure's code.
fn provisioner_failure_paths(c: &RealCluster) {
    c.apply(&[claim("early", "arrives-later", &["ReadWriteOnce"], "1Gi")]);
    holds(
        c,
        "a claim without its class Pending",
        Duration::from_secs(5),
        |c| {
            c.kubectl_json(&["get", "pvc", "early"])
                .is_ok_and(|p| p["status"]["phase"] == "Pending")
        },
    );
    c.apply(&[
        json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": "arrives-later"}, "provisioner": "flexdisk/azure-disk",
        "volumeBindingMode": "Immediate"}),
    ]);
    let appeared = Instant::now();
    bound_volume(c, "early");
    eprintln!(
        "figure: a claim made 5 s before its class, Bound {:.1}s after the class appeared",
        appeared.elapsed().as_secs_f64()
    );

    c.apply(&[
        json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": "zonal-late"}, "provisioner": "flexdisk/azure-disk",
            "volumeBindingMode": "WaitForFirstConsumer", "parameters": {"skuName": "Premium_LRS"}}),
        claim("wanderer", "zonal-late", &["ReadWriteOnce"], "1Gi"),
    ]);
    // As if the scheduler had chosen a node that was deleted since.
    c.kubectl(&[
        "annotate",
        "pvc",
        "wanderer",
        "volume.kubernetes.io/selected-node=k8s-pool-deleted",
    ])
    .expect("annotate");
    c.wait_until("selected-node removed", long(), |c| {
        c.kubectl_json(&["get", "pvc", "wanderer"])
            .ok()
            .is_some_and(|p| {
                p["metadata"]["annotations"]
                    .get("volume.kubernetes.io/selected-node")
                    .is_none()
            })
    });
    let said = event_messages(c, "wanderer", "ProvisioningFailed");
    assert!(
        said.iter()
            .any(|m| m.contains("k8s-pool-deleted") && m.contains("choose another node")),
        "{said:?}"
    );
    c.apply(&[json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "wanderer", "namespace": "default"},
        "spec": {"terminationGracePeriodSeconds": 1,
            "containers": [{"name": "app", "image": TOOLS_IMAGE, "imagePullPolicy": "Never",
                "command": ["/bin/sh", "-c", "echo here > /data/f && sync && exec sleep 100000"],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "wanderer"}}]}})]);
    c.wait_until(
        "the pod Running on a node the scheduler chose",
        long(),
        |c| phase(c, "wanderer") == "Running",
    );
    c.kubectl(&["delete", "pod", "wanderer", "--wait=true"])
        .expect("delete pod");

    let (status, rule) = c
        .sim
        .control(
            "POST",
            "/faults",
            Some(&json!({"operation": "Disks_CreateOrUpdate",
                "action": {"kind": "status", "status": 403, "code": "AuthorizationFailed",
                    "message": "The client does not have authorization to perform action 'Microsoft.Compute/disks/write'."}})),
        )
        .expect("fault");
    assert_eq!(status, 201);
    c.apply(&[claim(
        "denied",
        "flexdisk-premium",
        &["ReadWriteOnce"],
        "1Gi",
    )]);
    c.wait_until(
        "a ProvisioningFailed event with Azure's code",
        long(),
        |c| {
            event_messages(c, "denied", "ProvisioningFailed")
                .iter()
                .any(|m| m.contains("AuthorizationFailed"))
        },
    );
    c.sim
        .control("DELETE", &format!("/faults/{}", rule["id"]), None)
        .expect("fault removed");
    c.kubectl(&[
        "delete",
        "pvc",
        "denied",
        "early",
        "wanderer",
        "--wait=true",
    ])
    .expect("delete claims");
}

/// A ReadWriteMany claim gets one event that says why and no disk; a shared disk (maxShares 2)
/// written once on one node is then mounted read-only on both nodes at once.
fn access_modes(c: &RealCluster) {
    c.apply(&[
        claim("everyone", "flexdisk-premium", &["ReadWriteMany"], "1Gi"),
        json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": "shared"}, "provisioner": "flexdisk/azure-disk",
            "parameters": {"skuName": "Premium_LRS", "maxShares": "2"}}),
        claim(
            "published",
            "shared",
            &["ReadWriteOnce", "ReadOnlyMany"],
            "1Gi",
        ),
    ]);
    c.wait_until("the ReadWriteMany refusal", long(), |c| {
        c.kubectl_json(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=everyone",
        ])
        .ok()
        .is_some_and(|l| {
            l["items"].as_array().into_iter().flatten().any(|e| {
                e["reason"] == "ProvisioningFailed"
                    && e["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("ReadWriteMany is not supported"))
            })
        })
    });
    let uid = c
        .kubectl_json(&["get", "pvc", "everyone"])
        .ok()
        .and_then(|p| p["metadata"]["uid"].as_str().map(str::to_string))
        .expect("uid");
    assert!(!disks(c).iter().any(|(n, _)| n.contains(&uid)), "no disk");
    c.kubectl(&["delete", "pvc", "everyone"]).expect("delete");

    c.apply(&[pod(
        "publisher",
        NODES[0],
        "published",
        "echo the same everywhere > /data/page && sync",
    )]);
    c.wait_until("published", long(), |c| {
        phase(c, "publisher") == "Succeeded"
    });
    c.kubectl(&["delete", "pod", "publisher", "--wait=true"])
        .expect("delete");
    let pv = bound_volume(c, "published");
    // Readers that stay: both hold the disk open at the same moment.
    let reader = |name: &str, node: &str| {
        let mut p = pod(
            name,
            node,
            "published",
            "cat /data/page > /tmp/read && exec sleep 100000",
        );
        p["spec"]["volumes"][0]["persistentVolumeClaim"]["readOnly"] = json!(true);
        p
    };
    c.apply(&[reader("reader-0", NODES[0]), reader("reader-1", NODES[1])]);
    for r in ["reader-0", "reader-1"] {
        c.wait_until(&format!("{r} read"), long(), |c| {
            c.kubectl(&["exec", r, "--", "/bin/cat", "/tmp/read"])
                .is_ok_and(|t| t.trim() == "the same everywhere")
        });
    }
    // Both at once: both pods running, the disk on both VMs as Azure has it, and on each node
    // the driver's own mount of the device is read-only (the node's mount table: kubelet's
    // read-only bind into the container would hide a read-write mount underneath).
    for r in ["reader-0", "reader-1"] {
        assert_eq!(phase(c, r), "Running", "{r} still holds the disk");
    }
    let on = attached_to(c, &pv);
    assert!(
        NODES.iter().all(|n| on.iter().any(|v| v == n)),
        "attached to both VMs at once: {on:?}"
    );
    let global = format!(
        "/var/lib/kubelet/plugins/kubernetes.io/flexvolume/flexdisk/azure-disk/mounts/{pv}"
    );
    for node in c.nodes.iter().filter(|n| NODES.contains(&n.name.as_str())) {
        let options = system_tests::real_cluster::run(
            node.command("findmnt")
                .args(["--noheadings", "--output", "OPTIONS", "--mountpoint"])
                .arg(&global),
        );
        assert!(
            options.trim().split(',').any(|o| o == "ro"),
            "the driver's mount on {} is read-only: {options}",
            node.name
        );
    }
    for r in ["reader-0", "reader-1"] {
        let write = c.kubectl(&["exec", r, "--", "/bin/sh", "-c", "touch /data/mine"]);
        assert!(write.is_err(), "{r} cannot write: {write:?}");
    }
    for r in ["reader-0", "reader-1"] {
        c.kubectl(&["delete", "pod", r, "--wait=true"])
            .expect("delete");
    }
    c.kubectl(&["delete", "pvc", "published", "--wait=true"])
        .expect("delete");
}

/// The driver's log on `node` (its calls, one line each).
fn driver_log(c: &RealCluster, node: &str) -> String {
    let n = c.nodes.iter().find(|n| n.name == node).expect("node");
    std::fs::read_to_string(n.dir.join("log/flexdisk.log")).unwrap_or_default()
}

/// How many `call` lines of the driver's log on `node` name `pv`.
fn calls_for(c: &RealCluster, node: &str, call: &str, pv: &str) -> usize {
    driver_log(c, node)
        .lines()
        .filter(|l| l.contains(&format!("call={call} ")) && l.contains(pv))
        .count()
}

/// Two pods of one claim on one node share its one device mount (kubelet counts the pods that
/// use it): the first going leaves the mount and the attachment to the second, which still reads
/// and writes; `unmountdevice` and the detach come only after the second is gone.
fn two_pods_of_one_claim_on_one_node(c: &RealCluster) {
    c.apply(&[claim("pair", "flexdisk-premium", &["ReadWriteOnce"], "1Gi")]);
    let pv = bound_volume(c, "pair");
    let stay = |name: &str, script: &str| {
        pod(
            name,
            NODES[0],
            "pair",
            &format!("{script} && exec sleep 100000"),
        )
    };
    c.apply(&[stay("first", "echo one > /data/one && sync")]);
    c.wait_until("first running", long(), |c| phase(c, "first") == "Running");
    c.apply(&[stay("second", "true")]);
    c.wait_until("second running", long(), |c| {
        phase(c, "second") == "Running"
    });
    let unmounts = calls_for(c, NODES[0], "unmountdevice", &pv);
    c.kubectl(&["delete", "pod", "first", "--wait=true"])
        .expect("delete");
    holds(
        c,
        "the device mount and the attachment stay while the second pod uses them",
        Duration::from_secs(5),
        |c| {
            calls_for(c, NODES[0], "unmountdevice", &pv) == unmounts
                && disks(c)
                    .iter()
                    .any(|(n, vms)| *n == pv && vms.iter().any(|v| v == NODES[0]))
        },
    );
    assert_eq!(
        exec(
            c,
            "second",
            "cat /data/one && echo two > /data/two && sync && cat /data/two"
        ),
        "one\ntwo\n"
    );
    c.kubectl(&["delete", "pod", "second", "--wait=true"])
        .expect("delete");
    c.wait_until("unmountdevice after the last pod", long(), |c| {
        calls_for(c, NODES[0], "unmountdevice", &pv) > unmounts
    });
    c.wait_until("the disk detached", long(), |c| {
        disks(c).iter().any(|(n, vms)| *n == pv && vms.is_empty())
    });
    c.kubectl(&["delete", "pvc", "pair", "--wait=true"])
        .expect("delete");
}

/// The pod `pod` of `claim` (volume `pv`) on the first node goes: the driver there unmounts the
/// device, the disk is detached, and a pod on the other node finds `/data/log` holding `log`.
fn moves_on(c: &RealCluster, pod_name: &str, claim: &str, pv: &str, log: &str) {
    let unmounts = calls_for(c, NODES[0], "unmountdevice", pv);
    c.kubectl(&["delete", "pod", pod_name, "--wait=true"])
        .expect("delete");
    c.wait_until(&format!("{pod_name}'s unmountdevice"), long(), |c| {
        calls_for(c, NODES[0], "unmountdevice", pv) > unmounts
    });
    c.wait_until("the disk detached", long(), |c| {
        disks(c).iter().any(|(n, vms)| *n == pv && vms.is_empty())
    });
    c.apply(&[pod("successor", NODES[1], claim, "cat /data/log")]);
    c.wait_until("read on the other node", long(), |c| {
        phase(c, "successor") == "Succeeded"
    });
    assert_eq!(c.kubectl(&["logs", "successor"]).expect("logs"), log);
    c.kubectl(&["delete", "pod", "successor", "--wait=true"])
        .expect("delete");
}

/// kubelet dies (SIGKILL, with the driver calls it had running) and comes back while a pod's
/// volume is mounted: the pod keeps running and writing (its container is containerd's), kubelet
/// rebuilds its view of the volume from the node (reconstruction, kubernetes
/// `pkg/kubelet/volumemanager/reconciler/reconstruct.go`), and when the pod goes the device is
/// unmounted by the driver and the disk detached as if nothing had happened.
fn kubelet_restarted_with_volumes_mounted(c: &RealCluster) {
    c.apply(&[claim(
        "steady",
        "flexdisk-premium",
        &["ReadWriteOnce"],
        "1Gi",
    )]);
    let pv = bound_volume(c, "steady");
    c.apply(&[pod(
        "keeper",
        NODES[0],
        "steady",
        "echo before > /data/log && sync && exec sleep 100000",
    )]);
    c.wait_until("keeper running", long(), |c| {
        phase(c, "keeper") == "Running"
    });
    c.wait_until("keeper wrote", long(), |c| {
        c.kubectl(&["exec", "keeper", "--", "/bin/cat", "/data/log"])
            .is_ok_and(|t| t.trim() == "before")
    });
    // kubectl exec goes through kubelet: while it is down, containerd runs the command.
    let container = c.kubectl_json(&["get", "pod", "keeper"]).expect("pod")["status"]
        ["containerStatuses"][0]["containerID"]
        .as_str()
        .and_then(|id| id.strip_prefix("containerd://"))
        .map(str::to_string)
        .expect("the container's id");
    let node = c.nodes.iter().find(|n| n.name == NODES[0]).expect("node");
    let kubelet = format!("kubelet-{}", NODES[0]);
    c.kill(&kubelet);
    // The container does not need kubelet to go on writing to its volume.
    system_tests::real_cluster::run(
        node.command(c.bin.join("ctr").to_str().expect("utf-8"))
            .args(["-n", "k8s.io", "tasks", "exec", "--exec-id", "while-down"])
            .arg(&container)
            .args([
                "/bin/sh",
                "-c",
                "echo while kubelet was down >> /data/log && sync",
            ]),
    );
    c.restart(&kubelet);
    c.wait_until("the node Ready again", long(), |c| c.node_ready(NODES[0]));
    holds(c, "the pod keeps running", Duration::from_secs(5), |c| {
        phase(c, "keeper") == "Running"
    });
    assert_eq!(
        exec(
            c,
            "keeper",
            "echo after >> /data/log && sync && cat /data/log"
        ),
        "before\nwhile kubelet was down\nafter\n"
    );
    moves_on(
        c,
        "keeper",
        "steady",
        &pv,
        "before\nwhile kubelet was down\nafter\n",
    );
    c.kubectl(&["delete", "pvc", "steady", "--wait=true"])
        .expect("delete");
}

/// Whether `node`'s installed driver is `binary` (byte for byte).
fn installed_driver_is(c: &RealCluster, node: &str, binary: &[u8]) -> bool {
    installed_driver(c, node).is_some_and(|i| i == binary)
}

/// The driver installed in `node`'s plugin dir.
fn installed_driver(c: &RealCluster, node: &str) -> Option<Vec<u8>> {
    let n = c.nodes.iter().find(|n| n.name == node).expect("node");
    std::fs::read(n.dir.join("plugins/flexdisk~azure-disk/azure-disk")).ok()
}

/// The node DaemonSet rolled to a new driver image while a pod's volume is mounted: the pod goes
/// on, every node gets the new driver, and the new driver unmounts and detaches what the old one
/// mounted and attached; then rolled back the same way.
fn driver_upgraded_with_volumes_mounted(c: &RealCluster) {
    c.apply(&[claim(
        "carried",
        "flexdisk-premium",
        &["ReadWriteOnce"],
        "1Gi",
    )]);
    let pv = bound_volume(c, "carried");
    c.apply(&[pod(
        "resident",
        NODES[0],
        "carried",
        "echo old driver > /data/log && sync && exec sleep 100000",
    )]);
    c.wait_until("resident running", long(), |c| {
        phase(c, "resident") == "Running"
    });
    let roll = |c: &RealCluster, tag: &str, binary: &[u8]| {
        c.kubectl(&[
            "-n",
            "flexdisk-system",
            "set",
            "image",
            "daemonset/flexdisk-node",
            &format!("install=ghcr.io/flexdisk/flexdisk:{tag}"),
        ])
        .expect("set image");
        c.kubectl(&[
            "-n",
            "flexdisk-system",
            "rollout",
            "status",
            "daemonset/flexdisk-node",
            "--timeout=170s",
        ])
        .unwrap_or_else(|e| panic!("{e}\n{}", c.diagnostics()));
        for node in NODES {
            c.wait_until(&format!("{tag} installed on {node}"), long(), |c| {
                installed_driver_is(c, node, binary)
            });
        }
    };
    let old = installed_driver(c, NODES[0]).expect("0.1.0 installed");
    let new = c.import_driver_image("0.1.1", "\nflexdisk 0.1.1 (upgrade test)\n");
    let new = std::fs::read(new).expect("0.1.1's driver");
    assert_ne!(old, new, "another driver");
    roll(c, "0.1.1", &new);
    assert_eq!(
        exec(
            c,
            "resident",
            "echo new driver >> /data/log && sync && cat /data/log"
        ),
        "old driver\nnew driver\n"
    );
    moves_on(c, "resident", "carried", &pv, "old driver\nnew driver\n");
    roll(c, "0.1.0", &old);
    c.kubectl(&["delete", "pvc", "carried", "--wait=true"])
        .expect("delete");
}

/// A pod that runs as a user without root, with an `fsGroup`, mounting a `subPath` of the claim:
/// kubelet gives the volume to the group (the driver leaves ownership to kubelet, its `fsGroup`
/// capability, kubernetes `pkg/volume/flexvolume/mounter.go`) and the subdirectory is where the
/// pod wrote. A `volumeMode: Block` claim is refused with one clear event and no disk.
fn a_non_root_pod_and_a_block_claim(c: &RealCluster) {
    c.apply(&[claim(
        "owned",
        "flexdisk-premium",
        &["ReadWriteOnce"],
        "1Gi",
    )]);
    bound_volume(c, "owned");
    let mut p = pod(
        "tenant",
        NODES[0],
        "owned",
        "id -u && touch /data/f && stat -c %g /data/f",
    );
    p["spec"]["securityContext"] = json!({"runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 2000});
    p["spec"]["containers"][0]["volumeMounts"][0]["subPath"] = json!("app");
    c.apply(&[p]);
    c.wait_until("the tenant wrote", long(), |c| {
        phase(c, "tenant") == "Succeeded"
    });
    assert_eq!(
        c.kubectl(&["logs", "tenant"])
            .expect("logs")
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["1000", "2000"],
        "runs as 1000, its file in group 2000"
    );
    c.kubectl(&["delete", "pod", "tenant", "--wait=true"])
        .expect("delete");
    c.apply(&[pod(
        "auditor",
        NODES[1],
        "owned",
        "stat -c '%u %g' /data/app/f",
    )]);
    c.wait_until("the auditor looked", long(), |c| {
        phase(c, "auditor") == "Succeeded"
    });
    assert_eq!(
        c.kubectl(&["logs", "auditor"]).expect("logs").trim(),
        "1000 2000",
        "the subPath is the volume's app/"
    );
    delete_pod_and_claim(c, "auditor", "owned");

    let mut raw = claim("raw", "flexdisk-premium", &["ReadWriteOnce"], "1Gi");
    raw["spec"]["volumeMode"] = json!("Block");
    c.apply(&[raw]);
    c.wait_until("the Block claim refused", long(), |c| {
        event_messages(c, "raw", "ProvisioningFailed")
            .iter()
            .any(|m| m.contains("volumeMode Block is not supported"))
    });
    let uid = uid_of(c, "default", "raw");
    holds(
        c,
        "no disk for the Block claim",
        Duration::from_secs(3),
        |c| !disks(c).iter().any(|(n, _)| n.contains(&uid)),
    );
    assert_eq!(
        event_messages(c, "raw", "ProvisioningFailed").len(),
        1,
        "one event"
    );
    c.kubectl(&["delete", "pvc", "raw", "--wait=true"])
        .expect("delete");
}

/// The leading kube-controller-manager dies, with its process group, while the driver's detach is
/// in flight — accepted by Azure, the driver polling it — and comes back in a fresh container (its
/// state dir empty). Azure finishes the detach it accepted; the next leader (the other one or the
/// restarted one) has nothing to undo — the dead one had taken the volume out of the node's
/// `volumesAttached` before the detach (the reconciler marks it detached in the node's status
/// before it calls the plugin, kubernetes
/// `pkg/controller/volume/attachdetach/reconciler/reconciler.go`) — and the other node gets the
/// disk with its bytes.
///
/// Not covered, because upstream has no answer for it with FlexVolume: a detach killed before
/// Azure accepted it leaves the disk attached while no node status names it, and no restarted
/// controller detaches it (CSI and the in-tree plugin recover through VolumeAttachments and
/// DanglingAttachError, which a FlexVolume driver cannot return).
fn controller_restart_mid_detach(c: &RealCluster) {
    c.apply(&[claim(
        "moving",
        "flexdisk-premium",
        &["ReadWriteOnce"],
        "1Gi",
    )]);
    let pv = bound_volume(c, "moving");
    c.apply(&[pod(
        "before",
        NODES[0],
        "moving",
        "echo kept across a restart > /data/note && sync && exec sleep 100000",
    )]);
    c.wait_until("the pod running", long(), |c| {
        phase(c, "before") == "Running"
    });
    c.wait_until("the note written", long(), |c| {
        c.kubectl(&["exec", "before", "--", "/bin/cat", "/data/note"])
            .is_ok()
    });
    let timing = slow_vm_operations(c);
    c.kubectl(&["delete", "pod", "before", "--wait=false"])
        .expect("delete");
    let detaching = |c: &RealCluster| in_flight(c, "detach", &pv);
    c.wait_until("the driver's detach accepted by Azure", long(), detaching);
    let calls = |c: &RealCluster| c.controller_driver_logs().matches("call=detach").count();
    let detaches_before = calls(c);
    let leader = c.controller_leader().expect("a leader");
    c.kill(&leader);
    c.sim
        .control("PUT", "/timing", Some(&timing))
        .expect("timing back");
    let state = c.dir.path().join(format!(
        "kcm-state{}",
        leader.trim_start_matches("kube-controller-manager")
    ));
    let _ = std::fs::remove_dir_all(&state);
    assert!(detaching(c), "the detach still in flight in Azure");
    // The driver's detach died with its caller: no answer was logged for it.
    assert_eq!(
        calls(c),
        detaches_before,
        "the detach in flight was killed with the controller"
    );
    c.restart(&leader);
    c.wait_until("the disk detached after the restart", long(), |c| {
        disks(c).iter().any(|(n, vms)| *n == pv && vms.is_empty())
    });
    c.apply(&[pod("after", NODES[1], "moving", "cat /data/note")]);
    c.wait_until("read on the other node", long(), |c| {
        phase(c, "after") == "Succeeded"
    });
    assert_eq!(
        c.kubectl(&["logs", "after"]).expect("logs").trim(),
        "kept across a restart"
    );
    delete_pod_and_claim(c, "after", "moving");
}

/// Whether Azure is running a VM operation that does `change` (`attach` or `detach`) to `pv`'s disk.
fn in_flight(c: &RealCluster, change: &str, pv: &str) -> bool {
    c.sim.control("GET", "/state", None).is_ok_and(|(_, s)| {
        s["operations"]
            .as_object()
            .into_iter()
            .flatten()
            .any(|(_, o)| {
                o["status"] == "InProgress"
                    && o["kind"]["vmDisks"][change]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|d| d.as_str().is_some_and(|d| d.ends_with(pv)))
            })
    })
}

/// VM operations of 20 s from now on (a controller can die while the driver polls one); the
/// timing before, to put back (`run_scenario` puts it back too, should the scenario fail).
fn slow_vm_operations(c: &RealCluster) -> Value {
    let (_, timing) = c.sim.control("GET", "/timing", None).expect("timing");
    let mut slow = timing.clone();
    slow["vmOpMs"] = json!(20_000);
    c.sim.control("PUT", "/timing", Some(&slow)).expect("slow");
    timing
}

/// Two kube-controller-managers, leader-elected: the leader is SIGKILLed (its process group, the
/// driver's attach with it) while Azure runs the attach it asked for; the other takes the lease,
/// attaches the volume again (the disk already on the VM: the driver answers from Azure) and the
/// pod runs with it.
fn controller_failover_mid_attach(c: &RealCluster) {
    c.apply(&[claim(
        "handover",
        "flexdisk-premium",
        &["ReadWriteOnce"],
        "1Gi",
    )]);
    let pv = bound_volume(c, "handover");
    let timing = slow_vm_operations(c);
    c.apply(&[pod(
        "handed",
        NODES[0],
        "handover",
        "echo attached by the next leader > /data/note && sync && cat /data/note",
    )]);
    let attaching = |c: &RealCluster| in_flight(c, "attach", &pv);
    c.wait_until("the leader's attach accepted by Azure", long(), attaching);
    let leader = c.controller_leader().expect("a leader");
    let answered = |c: &RealCluster, log: &str| {
        c.log(log)
            .lines()
            .filter(|l| l.contains("call=attach") && l.contains(&pv[..30]))
            .count()
    };
    c.kill(&leader);
    c.sim
        .control("PUT", "/timing", Some(&timing))
        .expect("timing back");
    assert!(attaching(c), "the attach still in flight in Azure");
    // The leader's driver was still waiting for Azure: it never answered for this volume.
    assert_eq!(
        answered(c, &controller_driver_log(&leader)),
        0,
        "the attach was in flight when its controller died: {}",
        c.log(&controller_driver_log(&leader))
    );
    let other = CONTROLLER_MANAGERS
        .iter()
        .find(|k| **k != leader)
        .expect("another")
        .to_string();
    c.wait_until("the other controller-manager leading", long(), |c| {
        c.controller_leader().as_deref() == Some(other.as_str())
    });
    c.wait_until("the pod done", long(), |c| {
        phase(c, "handed") == "Succeeded"
    });
    assert_eq!(
        c.kubectl(&["logs", "handed"]).expect("logs").trim(),
        "attached by the next leader"
    );
    assert!(
        answered(c, &controller_driver_log(&other)) > 0,
        "the new leader attached the volume: {}",
        c.log(&controller_driver_log(&other))
    );
    c.restart(&leader);
    delete_pod_and_claim(c, "handed", "handover");
}

/// The provisioner's leading replica is SIGKILLed in its container (no lease released); a
/// replica leads again — the other one once the lease runs out, or the killed one restarted —
/// and the next claim is provisioned.
fn provisioner_leader_killed(c: &RealCluster) {
    let lease = |c: &RealCluster| {
        c.kubectl_json(&[
            "-n",
            "flexdisk-system",
            "get",
            "lease",
            "flexdisk-provisioner",
        ])
        .ok()
        .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_string))
        .unwrap_or_default()
    };
    let leader = lease(c);
    let pod = c
        .kubectl_json(&["-n", "flexdisk-system", "get", "pod", &leader])
        .expect("the leader's pod");
    let node = pod["spec"]["nodeName"].as_str().expect("node");
    let restarts = pod["status"]["containerStatuses"][0]["restartCount"]
        .as_u64()
        .unwrap_or(0);
    let container = pod["status"]["containerStatuses"][0]["containerID"]
        .as_str()
        .and_then(|id| id.strip_prefix("containerd://"))
        .expect("container");
    let n = c.nodes.iter().find(|n| n.name == node).expect("node");
    system_tests::real_cluster::run(
        n.command(c.bin.join("ctr").to_str().expect("utf-8"))
            .args(["-n", "k8s.io", "tasks", "kill", "-s", "SIGKILL", container]),
    );
    // The claim comes once kubelet has seen the leader's container die (a SIGKILL is delivered
    // after `ctr` returns: a claim made at once may still meet the old leader).
    c.wait_until("the leader's container restarted", long(), |c| {
        c.kubectl_json(&["-n", "flexdisk-system", "get", "pod", &leader])
            .ok()
            .and_then(|p| p["status"]["containerStatuses"][0]["restartCount"].as_u64())
            .is_some_and(|n| n > restarts)
    });
    c.apply(&[claim(
        "after-failover",
        "flexdisk-premium",
        &["ReadWriteOnce"],
        "1Gi",
    )]);
    bound_volume(c, "after-failover");
    eprintln!("leader before the kill: {leader}; after: {}", lease(c));
    c.kubectl(&["delete", "pvc", "after-failover", "--wait=true"])
        .expect("delete");
}

/// Non-graceful node shutdown: the node of a StatefulSet's pod loses power; the admin taints it
/// `node.kubernetes.io/out-of-service`; kube-controller-manager force-deletes the pod and
/// force-detaches its volume (the driver's detach, to a VM that no kubelet answers for), and the
/// pod comes up on the other node with its bytes.
fn out_of_service_node(c: &RealCluster) {
    c.apply(&[checksummed_statefulset("solo", 1)]);
    let ready = |c: &RealCluster| {
        c.kubectl_json(&["get", "statefulset", "solo"])
            .ok()
            .is_some_and(|s| s["status"]["readyReplicas"] == 1)
    };
    c.wait_until("the pod ready", long(), ready);
    let sum = exec(c, "solo-0", "cat /data/sum");
    let node = c
        .kubectl_json(&["get", "pod", "solo-0"])
        .ok()
        .and_then(|p| p["spec"]["nodeName"].as_str().map(str::to_string))
        .expect("node");
    let pv = bound_volume(c, "data-solo-0");
    let old_uid = c
        .kubectl_json(&["get", "pod", "solo-0"])
        .ok()
        .and_then(|p| p["metadata"]["uid"].as_str().map(str::to_string))
        .expect("the pod's uid");
    let zombie = Zombie::start(c, &node, &pv);
    c.wait_until("the zombie's first write", long(), |_| {
        zombie.outcomes().first().is_some_and(|o| {
            assert_eq!(o, "ok", "the writer on the live mount failed");
            true
        })
    });
    c.power_off(&node);
    c.wait_until("the node NotReady", long(), |c| !c.node_ready(&node));
    c.kubectl(&[
        "taint",
        "node",
        &node,
        "node.kubernetes.io/out-of-service=nodeshutdown:NoExecute",
    ])
    .expect("taint");
    c.wait_until(
        "the volume force-detached from the dead node",
        long(),
        |c| {
            disks(c)
                .iter()
                .any(|(n, vms)| *n == pv && !vms.contains(&node))
        },
    );
    // Fencing: once the pod runs elsewhere, the dead node's mount of the disk takes no write any
    // more — checked at the first sight of the pod running elsewhere, before it is ready.
    c.wait_until("the pod running on the other node", long(), |c| {
        let running = c
            .kubectl_json(&["get", "pod", "solo-0"])
            .ok()
            .is_some_and(|p| {
                p["status"]["phase"] == "Running" && p["spec"]["nodeName"] != node.as_str()
            });
        if running {
            let seen = zombie.outcomes();
            assert!(
                seen.iter().any(|o| o == "EIO"),
                "the pod runs on the other node while the dead node's mount still takes writes \
                 (its writer saw {seen:?})\n{}",
                c.diagnostics()
            );
        }
        running
    });
    let seen = zombie.outcomes();
    let first_eio = seen.iter().position(|o| o == "EIO").expect("an EIO");
    assert!(
        seen[..first_eio].iter().all(|o| o == "ok") && seen[first_eio..].iter().all(|o| o == "EIO"),
        "the dead node's writes succeeded until the detach, then failed for good: {seen:?}"
    );
    eprintln!(
        "figure: the dead node's writer: {first_eio} writes reached the disk, {} refused with EIO \
         by the time the pod ran elsewhere",
        seen.len() - first_eio
    );
    drop(zombie);
    c.wait_until("the pod ready on the other node", long(), ready);
    let moved_to = c
        .kubectl_json(&["get", "pod", "solo-0"])
        .ok()
        .and_then(|p| p["spec"]["nodeName"].as_str().map(str::to_string))
        .unwrap_or_default();
    assert_ne!(moved_to, node);
    let after = exec(c, "solo-0", "cat /data/sum");
    assert_eq!(after, sum, "its bytes came along\n{}", c.diagnostics());
    // The dead node boots and is let back in: its kubelet finds, in its pods directory, the
    // volume of a pod that now runs elsewhere (reconstruction, pkg/kubelet/volumemanager/
    // reconciler/reconstruct.go) and cleans it up with nothing mounted any more — the driver's
    // `unmountdevice` of a path that is not mounted must answer Success — and the old pod's
    // directory goes; the disk stays where the pod is.
    let n = c.nodes.iter().find(|n| n.name == node).expect("node");
    let old_pod_dir = n.dir.join("kubelet/pods").join(&old_uid);
    assert!(
        old_pod_dir.exists(),
        "the dead node kept the old pod's directory"
    );
    c.boot(&node);
    c.wait_until("the node Ready again", long(), |c| c.node_ready(&node));
    c.kubectl(&[
        "taint",
        "node",
        &node,
        "node.kubernetes.io/out-of-service=nodeshutdown:NoExecute-",
    ])
    .expect("untaint");
    c.wait_until(
        "the old pod's volume and directory cleaned up on the booted node",
        long(),
        |_| !old_pod_dir.exists(),
    );
    holds(
        c,
        "the pod stays ready where it runs",
        Duration::from_secs(5),
        ready,
    );
    assert_eq!(
        attached_to(c, &pv),
        [moved_to],
        "the disk stays attached where the pod runs"
    );
    delete_statefulset_of_one(c, "solo");
}

/// A node loses power under a mounted volume and boots again: the volume's filesystem stops
/// where it is (shut down without flushing its log, as a power cut leaves it), every process of
/// the node dies, pods included, and its mounts go with its mount table; it boots with its disks
/// still attached at the same LUNs (a guest reboot on Azure keeps them), kubelet finds its pod's
/// containers gone, mounts the volume again — `mountdevice` after the boot must find the
/// filesystem (its log replayed) and not format it — and starts the same pod anew on the same
/// node, what it had synced intact. No detach: the controller never saw the pod go.
fn node_rebooted(c: &RealCluster) {
    c.apply(&[checksummed_statefulset("reboot", 1)]);
    let pod_state = |c: &RealCluster| {
        let p = c.kubectl_json(&["get", "pod", "reboot-0"]).ok()?;
        let ready = p["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        Some((
            p["metadata"]["uid"].as_str()?.to_string(),
            p["spec"]["nodeName"].as_str()?.to_string(),
            p["status"]["containerStatuses"][0]["containerID"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            ready,
        ))
    };
    c.wait_until("the pod ready", long(), |c| {
        pod_state(c).is_some_and(|(.., ready)| ready)
    });
    let sum = exec(c, "reboot-0", "cat /data/sum");
    let (uid, node, container, _) = pod_state(c).expect("the pod");
    let pv = bound_volume(c, "data-reboot-0");
    let n = c.nodes.iter().find(|n| n.name == node).expect("node");
    let global = format!("{GLOBAL_MOUNTS}{pv}");
    let device_mount = |n: &system_tests::real_cluster::Node| {
        n.mount_table().and_then(|t| {
            volume_mounts(&t)
                .into_iter()
                .find(|m| m.point == global)
                .map(|m| m.device)
        })
    };
    let device = device_mount(n).expect("the volume's device mounted on its node");
    let detaches = |c: &RealCluster| {
        c.controller_driver_logs()
            .lines()
            .filter(|l| l.contains("call=detach ") && l.contains(&pv))
            .count()
    };
    let detaches_before = detaches(c);
    let mounts_before = calls_for(c, &node, "mountdevice", &pv);
    system_tests::real_cluster::run(
        n.command("xfs_io")
            .args(["-x", "-c", "shutdown"])
            .arg(&global),
    );
    c.power_off(&node);
    // Gone everywhere, not only from the node's table: no process on the machine has the
    // volume's filesystem mounted any more.
    let still: Vec<String> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let table = std::fs::read_to_string(e.path().join("mountinfo")).ok()?;
            table
                .lines()
                .any(|l| l.split_whitespace().nth(2) == Some(device.as_str()))
                .then(|| e.file_name().to_string_lossy().into_owned())
        })
        .collect();
    assert!(
        still.is_empty(),
        "{node} is off, yet processes {still:?} have its volume's filesystem ({device}) mounted"
    );
    c.wait_until("the node NotReady", long(), |c| !c.node_ready(&node));
    c.boot(&node);
    c.wait_until("the node Ready again", long(), |c| c.node_ready(&node));
    c.wait_until("the pod started anew on its node and ready", long(), |c| {
        pod_state(c).is_some_and(|(_, on, id, ready)| {
            ready && on == node && !id.is_empty() && id != container
        })
    });
    let (uid_after, ..) = pod_state(c).expect("the pod");
    assert_eq!(uid_after, uid, "the same pod, not a new one");
    assert!(
        calls_for(c, &node, "mountdevice", &pv) > mounts_before,
        "kubelet had the driver mount the volume again after the boot\n{}",
        driver_log(c, &node)
    );
    assert!(
        device_mount(n).is_some(),
        "the volume's device is mounted on {node} again"
    );
    assert_eq!(
        exec(
            c,
            "reboot-0",
            "cat /data/sum && md5sum -c /data/sum >/dev/null && echo intact"
        ),
        format!("{sum}intact\n"),
        "what it had synced survived the power cut\n{}",
        c.diagnostics()
    );
    assert_eq!(detaches(c), detaches_before, "nothing detached the disk");
    assert_eq!(
        attached_to(c, &pv),
        [node.as_str()],
        "the disk stayed attached to {node} alone"
    );
    delete_statefulset_of_one(c, "reboot");
}

/// A writer left behind on a powered-off node: what a node that is not really off (a hung kernel,
/// a partitioned host) would still do with the volume's filesystem. It lives outside the node's
/// cgroups and network namespace, so `power_off` leaves it, and holds the node's mount namespace
/// (and with it the mount of the disk). Every 200 ms it appends to a file on the volume with
/// O_DSYNC, so each attempt reaches the disk, and notes `ok` or `EIO`.
struct Zombie {
    child: std::process::Child,
    log: std::path::PathBuf,
}

impl Zombie {
    fn start(c: &RealCluster, node: &str, pv: &str) -> Zombie {
        let n = c.nodes.iter().find(|n| n.name == node).expect("node");
        assert_eq!(
            c.sim.ready["nodeBackend"]["kind"], "fuse",
            "fencing needs the simulator's storage bus (FUSE): {}",
            c.sim.ready["nodeBackend"]
        );
        let log = c.dir.path().join(format!("zombie-{pv}.log"));
        let mount = format!(
            "/var/lib/kubelet/plugins/kubernetes.io/flexvolume/flexdisk/azure-disk/mounts/{pv}"
        );
        let script = format!(
            "while :; do
               if out=$(echo \"$(date +%s.%N)\" | dd of={mount}/zombie oflag=append,dsync conv=notrunc status=none 2>&1)
               then echo ok; else echo \"failed: $out\"; fi
               sleep 0.2
             done"
        );
        let child = Command::new("nsenter")
            .arg(format!("--mount={}", n.mntns.display()))
            .args(["--", "sh", "-c", &script])
            .stdout(std::fs::File::create(&log).expect("zombie log"))
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nsenter");
        Zombie { child, log }
    }

    /// Each write attempt's outcome so far: `ok`, `EIO`, or what else dd said.
    fn outcomes(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                if l.starts_with("failed:") && l.contains("Input/output error") {
                    "EIO".to_string()
                } else {
                    l.to_string()
                }
            })
            .collect()
    }
}

impl Drop for Zombie {
    /// Its end lets the dead node's mount namespace, the mount and the loop device go.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Events of `reason` about `object` in namespace `ns`, their messages.
fn events_in(c: &RealCluster, ns: &str, object: &str, reason: &str) -> Vec<String> {
    c.kubectl_json(&[
        "get",
        "events",
        "-n",
        ns,
        "--field-selector",
        &format!("involvedObject.name={object},reason={reason}"),
    ])
    .ok()
    .and_then(|l| l["items"].as_array().cloned())
    .unwrap_or_default()
    .iter()
    .filter_map(|e| e["message"].as_str().map(str::to_string))
    .collect()
}

/// ARM writes the simulated Azure counted to a disk.
fn disk_writes(c: &RealCluster, disk: &str) -> u64 {
    let (_, counters) = c.sim.control("GET", "/counters", None).expect("counters");
    counters[format!("writes to disks/{}", disk.to_ascii_lowercase())]
        .as_u64()
        .unwrap_or(0)
}

fn uid_of(c: &RealCluster, ns: &str, claim: &str) -> String {
    c.kubectl_json(&["get", "pvc", "-n", ns, claim])
        .ok()
        .and_then(|p| p["metadata"]["uid"].as_str().map(str::to_string))
        .expect("uid")
}

/// Issue 24 on upstream Kubernetes. A claim naming another namespace's volume in
/// `spec.volumeName` lends nothing to a clone of it (the real PV controller leaves it Pending), and
/// a `dataSourceRef` naming another
/// namespace is dropped by kube-apiserver (an empty volume). A size Azure refuses costs one ARM
/// write — with kube-controller-manager's no-op expansion racing the provisioner — and the PV
/// says what the disk holds again. A ReadOnlyMany claim's growth is refused and its readers still
/// start; a read-write-once-or-read-only-many claim on a shared disk grows once its pods are gone,
/// a read-only pod still starts (kubelet skips a read-only mount's growth) and the next writer's
/// filesystem is the new size.
fn provisioner_adversarial_paths(c: &RealCluster) {
    c.apply(&[
        json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": "flexdisk-now"}, "provisioner": "flexdisk/azure-disk",
            "allowVolumeExpansion": true, "parameters": {"skuName": "Premium_LRS"}}),
        json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": "flexdisk-shared-now"}, "provisioner": "flexdisk/azure-disk",
            // XFS: this machine withholds CAP_SYS_RESOURCE even from root, and ext4's online
            // resize needs it (ext4_resize_begin); the node's growth would fail with EPERM.
            "allowVolumeExpansion": true, "parameters": {"skuName": "Premium_LRS", "maxShares": "2", "fsType": "xfs"}}),
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "attacker"}}),
        claim("wide", "flexdisk-now", &["ReadWriteOnce"], "1Gi"),
    ]);
    let victim = bound_volume(c, "wide");
    let mut x = claim("x", "flexdisk-now", &["ReadWriteOnce"], "1Gi");
    x["metadata"]["namespace"] = json!("attacker");
    x["spec"]["volumeName"] = json!(victim);
    let mut y = claim("y", "flexdisk-now", &["ReadWriteOnce"], "1Gi");
    y["metadata"]["namespace"] = json!("attacker");
    y["spec"]["dataSource"] = json!({"kind": "PersistentVolumeClaim", "name": "x"});
    let mut z = claim("z", "flexdisk-now", &["ReadWriteOnce"], "1Gi");
    z["metadata"]["namespace"] = json!("attacker");
    z["spec"]["dataSourceRef"] =
        json!({"kind": "PersistentVolumeClaim", "name": "wide", "namespace": "default"});
    c.apply(&[x, y, z]);
    c.wait_until("y told it waits for x", long(), |c| {
        events_in(c, "attacker", "y", "ProvisioningFailed")
            .iter()
            .any(|m| m.contains("not bound"))
    });
    let y_uid = uid_of(c, "attacker", "y");
    assert!(
        !disks(c).iter().any(|(n, _)| n.contains(&y_uid)),
        "no copy of wide's disk for y"
    );
    // (A status forged to say x is Bound would not help either: the real PV controller makes a
    // claim whose volume names another claim Lost at once — syncBoundClaim, ClaimMisbound — and
    // the provisioner checks the volume's claimRef anyway; decide.rs's unit tests.)
    // z: kube-apiserver dropped the cross-namespace reference; an empty volume.
    let z_now = c
        .kubectl_json(&["get", "pvc", "-n", "attacker", "z"])
        .expect("z");
    assert!(z_now["spec"].get("dataSourceRef").is_none(), "{z_now}");
    c.wait_until("z Bound", long(), |c| {
        c.kubectl_json(&["get", "pvc", "-n", "attacker", "z"])
            .ok()
            .is_some_and(|p| p["status"]["phase"] == "Bound")
    });
    let (_, state) = c.sim.control("GET", "/state", None).expect("state");
    let z_uid = uid_of(c, "attacker", "z");
    let z_disk = state["disks"]
        .as_object()
        .into_iter()
        .flat_map(|m| m.values())
        .find(|d| d["name"].as_str().is_some_and(|n| n.contains(&z_uid)))
        .cloned()
        .expect("z's disk");
    assert!(
        !z_disk.to_string().contains(&victim),
        "z is not a copy of wide: {z_disk}"
    );

    // A size Azure refuses: one write, whoever of kube-controller-manager and the provisioner
    // gets there first; the PV back at the disk's size.
    let writes_before = disk_writes(c, &victim);
    ask_for(c, "wide", "40000Gi");
    c.wait_until("wide ControllerResizeInfeasible", long(), |c| {
        c.kubectl_json(&["get", "pvc", "wide"])
            .ok()
            .is_some_and(|p| {
                p["status"]["allocatedResourceStatuses"]["storage"] == "ControllerResizeInfeasible"
            })
    });
    std::thread::sleep(Duration::from_secs(10));
    let writes = disk_writes(c, &victim) - writes_before;
    eprintln!("figure: a size Azure refuses, on the real cluster: {writes} ARM write(s) in 10 s");
    assert_eq!(writes, 1, "one try, no loop");
    let pv = c.kubectl_json(&["get", "pv", &victim]).expect("pv");
    assert_eq!(pv["spec"]["capacity"]["storage"], "1Gi", "{pv}");
    assert!(
        !event_messages(c, "wide", "VolumeResizeFailed").is_empty(),
        "told why"
    );

    // ReadOnlyMany: a copy of a written claim, read-only everywhere. Its growth is refused up
    // front; a reader still starts.
    c.apply(&[claim(
        "shelf",
        "flexdisk-shared-now",
        &["ReadWriteOnce", "ReadOnlyMany"],
        "1Gi",
    )]);
    bound_volume(c, "shelf");
    c.apply(&[pod(
        "shelver",
        NODES[0],
        "shelf",
        "echo on the shelf > /data/book && sync",
    )]);
    c.wait_until("shelved", long(), |c| phase(c, "shelver") == "Succeeded");
    c.kubectl(&["delete", "pod", "shelver", "--wait=true"])
        .expect("delete");
    let mut catalog = claim("catalog", "flexdisk-shared-now", &["ReadOnlyMany"], "1Gi");
    catalog["spec"]["dataSource"] = json!({"kind": "PersistentVolumeClaim", "name": "shelf"});
    c.apply(&[catalog]);
    let catalog_pv = bound_volume(c, "catalog");
    ask_for(c, "catalog", "2Gi");
    c.wait_until("catalog's growth refused", long(), |c| {
        event_messages(c, "catalog", "VolumeResizeFailed")
            .iter()
            .any(|m| m.contains("read-only"))
    });
    let reader = |name: &str, claim: &str, read_only: bool| {
        let mut p = pod(
            name,
            NODES[1],
            claim,
            "cat /data/book && df -k /data | tail -1",
        );
        p["spec"]["volumes"][0]["persistentVolumeClaim"]["readOnly"] = json!(read_only);
        p
    };
    c.apply(&[reader("browser", "catalog", false)]);
    c.wait_until("the catalog's reader ran", long(), |c| {
        phase(c, "browser") == "Succeeded"
    });
    assert!(c
        .kubectl(&["logs", "browser"])
        .expect("logs")
        .contains("on the shelf"));
    let catalog_now = c.kubectl_json(&["get", "pv", &catalog_pv]).expect("pv");
    assert_eq!(
        catalog_now["spec"]["capacity"]["storage"], "1Gi",
        "{catalog_now}"
    );

    // The order that flaked (about one run in twelve): kube-controller-manager's expand controller
    // comes after the provisioner's refusal. Made certain: no controller-manager runs while the
    // claim asks for more and the provisioner refuses; the one started next finds the claim
    // asking for more (its informer's add) and runs its no-op expansion over the refusal — PV
    // raised, claim NodeResizePending. The provisioner takes it back at once (before: on its
    // 15-minute resync, and a reader meanwhile stayed ContainerCreating while kubelet's expandfs
    // failed), and a new reader starts.
    for kcm in CONTROLLER_MANAGERS {
        c.kill(kcm);
    }
    ask_for(c, "catalog", "3Gi");
    c.wait_until("catalog's 3Gi refused", long(), |c| {
        c.kubectl_json(&["get", "pvc", "catalog"])
            .ok()
            .is_some_and(|p| {
                p["status"]["allocatedResources"]["storage"] == "3Gi"
                    && p["status"]["allocatedResourceStatuses"]["storage"]
                        == "ControllerResizeInfeasible"
            })
    });
    for kcm in CONTROLLER_MANAGERS {
        c.restart(kcm);
    }
    let raised_by_the_controller_manager = |c: &RealCluster| {
        c.writes().iter().any(|e| {
            e["objectRef"]["resource"] == "persistentvolumes"
                && e["objectRef"]["name"] == catalog_pv.as_str()
                && e["responseStatus"]["code"] == 200
                && e["user"]["username"]
                    .as_str()
                    .is_some_and(|u| !u.contains("flexdisk"))
                && e["requestObject"].to_string().contains("3Gi")
        })
    };
    c.wait_until(
        "kube-controller-manager's no-op expansion of catalog",
        long(),
        raised_by_the_controller_manager,
    );
    let handed = Instant::now();
    c.wait_until("catalog's volume back to its disk's size", long(), |c| {
        c.kubectl_json(&["get", "pv", &catalog_pv])
            .ok()
            .is_some_and(|pv| pv["spec"]["capacity"]["storage"] == "1Gi")
            && c.kubectl_json(&["get", "pvc", "catalog"])
                .ok()
                .is_some_and(|p| {
                    p["status"]["allocatedResourceStatuses"]["storage"]
                        == "ControllerResizeInfeasible"
                })
    });
    eprintln!(
        "figure: a hand-over of a refused growth taken back in {:.1?}",
        handed.elapsed()
    );
    c.apply(&[reader("browser-2", "catalog", false)]);
    c.wait_until("the catalog's second reader ran", long(), |c| {
        phase(c, "browser-2") == "Succeeded"
    });
    assert_eq!(disk_size_gib(c, &catalog_pv), Some(1), "the disk untouched");

    // The shared disk the pods have left grows; a read-only pod starts on the new size without
    // growing anything; the next writer's filesystem is the new size.
    ask_for(c, "shelf", "2Gi");
    let shelf_pv = bound_volume(c, "shelf");
    c.wait_until("shelf's disk grown", long(), |c| {
        disk_size_gib(c, &shelf_pv).is_some_and(|gb| gb >= 2)
    });
    c.apply(&[reader("glancer", "shelf", true)]);
    c.wait_until("the read-only reader ran", long(), |c| {
        phase(c, "glancer") == "Succeeded"
    });
    assert!(c
        .kubectl(&["logs", "glancer"])
        .expect("logs")
        .contains("on the shelf"));
    // One writer per filesystem: the writer mounts read-write only once the disk is on its node
    // alone.
    c.kubectl(&["delete", "pod", "glancer", "--wait=true"])
        .expect("delete");
    c.wait_until("shelf detached from the reader's node", long(), |c| {
        disks(c)
            .iter()
            .any(|(n, vms)| *n == shelf_pv && !vms.iter().any(|v| v == NODES[1]))
    });
    c.apply(&[pod("writer", NODES[0], "shelf", "df -k /data | tail -1")]);
    c.wait_until("the writer ran", long(), |c| {
        phase(c, "writer") == "Succeeded"
    });
    let kib: u64 = c
        .kubectl(&["logs", "writer"])
        .expect("logs")
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("df");
    assert!(kib > 1_900_000, "the writer's filesystem grew: {kib} KiB");

    for p in ["browser", "browser-2", "writer"] {
        c.kubectl(&["delete", "pod", p, "--wait=true"])
            .expect("delete");
    }
    let gone: Vec<String> = ["wide", "shelf", "catalog"]
        .iter()
        .filter_map(|n| {
            c.kubectl_json(&["get", "pvc", n])
                .ok()
                .and_then(|p| p["spec"]["volumeName"].as_str().map(str::to_string))
        })
        .chain(
            ["y", "z"]
                .iter()
                .map(|n| format!("pvc-{}", uid_of(c, "attacker", n))),
        )
        .collect();
    c.kubectl(&["delete", "pvc", "wide", "shelf", "catalog", "--wait=true"])
        .expect("delete claims");
    c.kubectl(&["delete", "namespace", "attacker", "--wait=true"])
        .expect("delete namespace");
    c.wait_until("their disks deleted", long(), |c| {
        let d = disks(c);
        gone.iter().all(|v| !d.iter().any(|(n, _)| n == v))
    });
}

/// The toleration of the scale-set pool's taint.
fn zonal_toleration() -> Value {
    let (kv, effect) = ZONAL_TAINT.split_once(':').expect("key=value:effect");
    let (key, value) = kv.split_once('=').expect("key=value");
    json!({"key": key, "operator": "Equal", "value": value, "effect": effect})
}

fn node_label(c: &RealCluster, node: &str, key: &str) -> String {
    c.kubectl_json(&["get", "node", node])
        .ok()
        .and_then(|n| n["metadata"]["labels"][key].as_str().map(str::to_string))
        .unwrap_or_default()
}

fn node_of(c: &RealCluster, pod: &str) -> String {
    c.kubectl_json(&["get", "pod", pod])
        .ok()
        .and_then(|p| p["spec"]["nodeName"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The simulated Azure's record of disk `name` (`zones`, `attachedTo` with full VM IDs, …); null
/// if there is none.
fn sim_disk(c: &RealCluster, name: &str) -> Value {
    c.disk_record(name).unwrap_or(Value::Null)
}

/// The full IDs of the VMs disk `name` is attached to.
fn attached_vm_ids(c: &RealCluster, name: &str) -> Vec<String> {
    sim_disk(c, name)["attachedTo"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}

/// The simulated Azure's counter `key` (an operation id, `writes to …`).
fn counter(c: &RealCluster, key: &str) -> u64 {
    let (_, counters) = c.sim.control("GET", "/counters", None).expect("counters");
    counters[key].as_u64().unwrap_or(0)
}

/// Data-disk operations on scale-set VMs, by either of the API's two ways.
fn scale_set_vm_writes(c: &RealCluster) -> u64 {
    counter(c, "VirtualMachineScaleSetVMs_Update")
        + counter(c, "VirtualMachineScaleSetVMs_AttachDetachDataDisks")
}

/// The PV's node-affinity term on the zone label: (operator, values).
fn zone_affinity(c: &RealCluster, pv: &str) -> (String, Vec<String>) {
    let pv = c.kubectl_json(&["get", "pv", pv]).expect("pv");
    let e = &pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0];
    assert_eq!(e["key"], "topology.kubernetes.io/zone", "{pv}");
    (
        e["operator"].as_str().unwrap_or_default().to_string(),
        e["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
    )
}

/// Issue 27: a StatefulSet on the example zonal WaitForFirstConsumer class, spread across the
/// scale-set pool's two zones. Each disk is made in its pod's zone (the node labelled as
/// cloud-controller-manager labels it), its PV pinned there, and attached through the scale-set VM
/// API to that instance. A pod whose node is cordoned stays Pending with the scheduler saying why
/// (its disk cannot follow it to the other zone), and starts again where its disk is, bytes
/// intact, once the node is back.
fn zonal_statefulset_across_zones(c: &RealCluster) {
    c.apply_example("storageclass-wait-for-first-consumer.yaml");
    let location = c.sim.field("location");
    let writes_before = scale_set_vm_writes(c);
    let mut sts = checksummed_statefulset("zonal", 2);
    sts["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"] =
        json!("flexdisk-premium-zonal");
    let spec = &mut sts["spec"]["template"]["spec"];
    spec["tolerations"] = json!([zonal_toleration()]);
    spec["affinity"] = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
        {"nodeSelectorTerms": [{"matchExpressions": [
            {"key": "kubernetes.io/hostname", "operator": "In", "values": ZONAL}]}]}}});
    spec["topologySpreadConstraints"] = json!([{"maxSkew": 1,
        "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule",
        "labelSelector": {"matchLabels": {"app": "zonal"}}}]);
    c.apply(&[sts]);
    let ready = |n: u64| {
        move |c: &RealCluster| {
            c.kubectl_json(&["get", "statefulset", "zonal"])
                .ok()
                .is_some_and(|s| s["status"]["readyReplicas"] == n)
        }
    };
    c.wait_until("the zonal StatefulSet ready", long(), ready(2));
    let mut zones = BTreeSet::new();
    for i in 0..2 {
        let pod = format!("zonal-{i}");
        let node = node_of(c, &pod);
        assert!(ZONAL.contains(&node.as_str()), "{pod} on {node}");
        let zone = node_label(c, &node, "topology.kubernetes.io/zone");
        let number = zone
            .strip_prefix(&format!("{location}-"))
            .unwrap_or_else(|| panic!("{node}'s zone label {zone:?} is not <location>-<n>"))
            .to_string();
        let provider = c
            .kubectl_json(&["get", "node", &node])
            .ok()
            .and_then(|n| n["spec"]["providerID"].as_str().map(str::to_string))
            .unwrap_or_default();
        let instance = &node[node.len() - 1..];
        assert!(
            provider.starts_with("azure:///subscriptions/")
                && provider.ends_with(&format!(
                    "/virtualMachineScaleSets/{SCALE_SET}/virtualMachines/{instance}"
                )),
            "{node}'s providerID {provider:?}"
        );
        let pv = bound_volume(c, &format!("data-{pod}"));
        // WaitForFirstConsumer's way (the scheduler's choice and its 1 s poll for the binding).
        let w = c.create_waterfall(&pod, &format!("data-{pod}"), &pv, &node);
        eprintln!("{w}");
        assert!(w.missing().is_empty(), "{w}");
        assert!(
            w.steps.iter().any(|s| s.what.starts_with("node selected")),
            "{w}"
        );
        assert_eq!(
            zone_affinity(c, &pv),
            ("In".to_string(), vec![zone.clone()]),
            "{pv} pinned to its pod's zone"
        );
        let disk = sim_disk(c, &pv);
        assert_eq!(disk["zones"], json!([number]), "{pv} made in zone {number}");
        assert_eq!(
            attached_vm_ids(c, &pv),
            vec![provider["azure://".len()..].to_string()],
            "{pv} attached to {node}'s scale-set VM, and only there"
        );
        zones.insert(zone);
    }
    assert_eq!(zones.len(), 2, "spread across both zones: {zones:?}");
    assert!(
        scale_set_vm_writes(c) > writes_before,
        "attached through the scale-set VM API"
    );

    // The disk cannot follow its pod to the other zone: Pending, and the scheduler says why.
    let node = node_of(c, "zonal-0");
    c.kubectl(&["cordon", &node]).expect("cordon");
    c.kubectl(&["delete", "pod", "zonal-0", "--wait=true"])
        .expect("delete");
    c.wait_until("zonal-0 refused by the scheduler", long(), |c| {
        event_messages(c, "zonal-0", "FailedScheduling")
            .iter()
            // VolumeBinding's ErrReasonNodeConflict (pkg/scheduler/framework/plugins/
            // volumebinding/binder.go).
            .any(|m| m.contains("didn't match PersistentVolume's node affinity"))
    });
    holds(c, "zonal-0 Pending, nowhere", Duration::from_secs(5), |c| {
        phase(c, "zonal-0") == "Pending" && node_of(c, "zonal-0").is_empty()
    });
    c.kubectl(&["uncordon", &node]).expect("uncordon");
    c.wait_until("the zonal StatefulSet ready again", long(), ready(2));
    assert_eq!(node_of(c, "zonal-0"), node, "back where its disk is");
    // Ready means `md5sum -c` of what the first pod wrote passed.
    c.kubectl(&["delete", "statefulset", "zonal", "--wait=true"])
        .expect("delete");
    for i in 0..2 {
        let pod = format!("zonal-{i}");
        c.wait_until(&format!("{pod} gone"), long(), |c| {
            c.kubectl(&["get", "pod", &pod]).is_err()
        });
        c.kubectl(&["delete", "pvc", &format!("data-{pod}"), "--wait=true"])
            .expect("delete");
    }
}

/// Issue 27: a regional (locally redundant, no zone) disk cannot be attached to a VM in a zone
/// (Azure: "not in the same zone with the VM"), so its PV keeps it off the zonal nodes of a mixed
/// cluster: a pod that prefers the zonal pool and tolerates its taint still runs on a node outside
/// zones.
fn regional_volume_kept_off_zonal_nodes(c: &RealCluster) {
    let location = c.sim.field("location");
    c.apply(&[claim(
        "regional",
        "flexdisk-premium",
        &["ReadWriteOnce"],
        "1Gi",
    )]);
    let pv = bound_volume(c, "regional");
    assert_eq!(
        zone_affinity(c, &pv),
        (
            "NotIn".to_string(),
            (1..=3).map(|z| format!("{location}-{z}")).collect()
        ),
        "{pv}: a regional disk's PV names the zones it cannot go to"
    );
    let mut p = pod("regional", "", "regional", "exec sleep 100000");
    p["spec"].as_object_mut().expect("spec").remove("nodeName");
    p["spec"]["tolerations"] = json!([zonal_toleration()]);
    p["spec"]["affinity"] = json!({"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution":
        [{"weight": 100, "preference": {"matchExpressions": [
            {"key": "kubernetes.io/hostname", "operator": "In", "values": ZONAL}]}}]}});
    c.apply(&[p]);
    c.wait_until("regional Running", long(), |c| {
        phase(c, "regional") == "Running"
    });
    let node = node_of(c, "regional");
    assert!(NODES.contains(&node.as_str()), "regional on {node}");
    assert_eq!(attached_to(c, &pv), vec![node.clone()]);
    delete_pod_and_claim(c, "regional", "regional");
}

/// Issue 27: a scale-set VM of 4 data-disk slots with 4 volumes attached. The fifth pod's attach
/// is refused by Azure: the pod waits with an event that says why and what to do, its disk is
/// attached nowhere, the VM still has its 4, and kube-controller-manager's back-off bounds the
/// ARM writes the refusals cost. Once a slot frees, the fifth pod starts.
fn data_disk_limit_of_a_zonal_scale_set_vm(c: &RealCluster) {
    c.apply_example("storageclass-wait-for-first-consumer.yaml");
    let node = ZONAL[1];
    let instance = &node[node.len() - 1..];
    let on_node = |i: usize| {
        let name = format!("full-{i}");
        let mut p = pod(&name, "", &name, "exec sleep 100000");
        p["spec"].as_object_mut().expect("spec").remove("nodeName");
        p["spec"]["tolerations"] = json!([zonal_toleration()]);
        p["spec"]["nodeSelector"] = json!({"kubernetes.io/hostname": node});
        vec![
            claim(&name, "flexdisk-premium-zonal", &["ReadWriteOnce"], "1Gi"),
            p,
        ]
    };
    for i in 0..4 {
        c.apply(&on_node(i));
    }
    c.wait_until("4 pods Running on one VM", long(), |c| {
        (0..4).all(|i| phase(c, &format!("full-{i}")) == "Running")
    });
    let pvs: Vec<String> = (0..4)
        .map(|i| bound_volume(c, &format!("full-{i}")))
        .collect();
    let vm_writes = || counter(c, &format!("writes to virtualmachines/{instance}"));
    let before = vm_writes();
    let waited = Instant::now();
    c.apply(&on_node(4));
    let fifth = bound_volume(c, "full-4");
    c.wait_until("the fifth attach refused with a clear event", long(), |c| {
        event_messages(c, "full-4", "FailedAttachVolume")
            .iter()
            .any(|m| m.contains("no room for another data disk (its size allows 4)"))
    });
    holds(
        c,
        "the fifth pod waits, its disk attached nowhere, the VM keeps its 4",
        Duration::from_secs(20),
        |c| {
            phase(c, "full-4") == "Pending"
                && attached_vm_ids(c, &fifth).is_empty()
                && pvs.iter().all(|pv| attached_vm_ids(c, pv).len() == 1)
        },
    );
    let refused = vm_writes() - before;
    let seconds = waited.elapsed().as_secs_f64();
    eprintln!("figure: a full VM's refused attach: {refused} ARM writes in {seconds:.0}s");
    // kube-controller-manager retries a failed attach with exponential back-off from 500 ms
    // (pkg/util/goroutinemap/exponentialbackoff: initialDurationBeforeRetry), so about
    // log2(seconds / 0.5) + 1 attempts, one write each.
    let bound = (seconds / 0.5).log2().ceil() as u64 + 2;
    assert!(
        (1..=bound).contains(&refused),
        "{refused} ARM writes to the full VM in {seconds:.0}s (at most {bound})"
    );
    c.kubectl(&["delete", "pod", "full-0", "--wait=true"])
        .expect("delete");
    c.wait_until("the fifth pod Running once a slot is free", long(), |c| {
        phase(c, "full-4") == "Running"
    });
    assert_eq!(attached_to(c, &fifth).len(), 1);
    for i in 0..5 {
        let _ = c.kubectl(&["delete", "pod", &format!("full-{i}"), "--wait=true"]);
        c.kubectl(&["delete", "pvc", &format!("full-{i}"), "--wait=true"])
            .expect("delete");
    }
}
