//! A stage for whole-system tests: three regional nodes, the real provisioner, two classes, and
//! the controller/kubelet emulator; pods, claims and data written through the pods' volume dirs.

use crate::emulator::{Emulator, Mounted};
use crate::{bin, Cluster};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// A world file of regional VMs (name, size) in one availability set, the rest as the default world.
pub fn world(dir: &std::path::Path, nodes: &[(&str, &str)]) -> std::path::PathBuf {
    let out = std::process::Command::new(bin("flexdisk-sim"))
        .arg("world")
        .output()
        .expect("world");
    let mut w: Value = serde_json::from_slice(&out.stdout).expect("json");
    w["nodes"] = json!(nodes
        .iter()
        .map(
            |(name, size)| json!({"name": name, "vmSize": size, "zone": null,
            "systemAssignedIdentity": true, "availabilitySet": "pool-as"})
        )
        .collect::<Vec<_>>());
    let path = dir.join("world.json");
    std::fs::write(&path, w.to_string()).expect("world file");
    path
}

/// Three regional nodes with 8 data-disk slots each.
pub fn three_node_world(dir: &std::path::Path) -> std::path::PathBuf {
    world(dir, &NODES.map(|n| (n, "Standard_D4s_v3")))
}

pub const NODES: [&str; 3] = ["k8s-pool-0", "k8s-pool-1", "k8s-pool-2"];

pub struct Scene {
    pub emu: Emulator,
    pub cluster: Cluster,
    _world: tempfile::TempDir,
}

impl Drop for Scene {
    /// The emulator stops first; then what the emulated kubelets left mounted (pods still
    /// running when a test ends) goes, so that the simulator can free its loop devices.
    fn drop(&mut self) {
        self.emu.stop();
        let root = self.cluster.tmp.path().to_string_lossy().to_string();
        let mut points: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
            .filter(|p| p.starts_with(&root))
            .collect();
        points.sort_by(|a, b| b.cmp(a));
        for p in points {
            let _ = nix::mount::umount2(p.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// Three nodes, the provisioner, classes `ssd` (StandardSSD_LRS, ext4) and `xfs` (Premium_LRS,
/// expandable), and the emulator. `sim_args` are added to the simulator's.
pub fn setup_with(sim_args: &[&str]) -> Scene {
    let world = tempfile::tempdir().expect("tmp");
    let file = three_node_world(world.path());
    let mut args = vec![
        "--world",
        file.to_str().expect("utf-8"),
        "--vm-op-ms",
        "150",
        "--disk-op-ms",
        "50",
    ];
    args.extend_from_slice(sim_args);
    let mut cluster = Cluster::start(&args);
    cluster.start_default_provisioner(&[]);
    for (name, params, expand) in [
        ("ssd", json!({"skuName": "StandardSSD_LRS"}), false),
        (
            "xfs",
            json!({"skuName": "Premium_LRS", "fsType": "xfs"}),
            true,
        ),
    ] {
        cluster
            .kube
            .create(&json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                "metadata": {"name": name}, "provisioner": "flexdisk/azure-disk", "parameters": params,
                "reclaimPolicy": "Delete", "allowVolumeExpansion": expand}))
            .expect("class");
    }
    let emu = Emulator::start(&cluster.sim.field("kube"), cluster.hosts());
    Scene {
        cluster,
        emu,
        _world: world,
    }
}

pub fn setup() -> Scene {
    setup_with(&[])
}

impl Scene {
    pub fn claim(&self, name: &str, class: &str, size: &str) {
        self.cluster
            .kube
            .create(&json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": class,
                         "resources": {"requests": {"storage": size}}}}))
            .expect("claim");
    }

    /// A pod scheduled to `node` using `claims`; its uid.
    pub fn pod(&self, name: &str, node: &str, claims: &[&str]) -> String {
        let volumes: Vec<Value> = claims
            .iter()
            .map(|c| json!({"name": c, "persistentVolumeClaim": {"claimName": c}}))
            .collect();
        let p = self
            .cluster
            .kube
            .create(&json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"nodeName": node, "containers": [{"name": "app", "image": "busybox"}],
                         "volumes": volumes}}))
            .expect("pod");
        p["metadata"]["uid"].as_str().expect("uid").to_string()
    }

    pub fn delete_pod(&self, name: &str) {
        self.cluster
            .kube
            .delete(&format!("/api/v1/namespaces/default/pods/{name}"))
            .expect("delete pod");
    }

    /// Waits for the pod to be Running; its mounted volumes.
    pub fn running(&self, name: &str, uid: &str) -> Vec<Mounted> {
        let path = format!("/api/v1/namespaces/default/pods/{name}");
        self.cluster
            .kube
            .wait_for(
                &path,
                &format!("{name} Running"),
                Duration::from_secs(120),
                |p| p.is_some_and(|p| p["status"]["phase"] == "Running"),
            )
            .unwrap_or_else(|e| panic!("{e}\n{}", self.diagnostics()));
        self.emu.mounted(uid)
    }

    pub fn until(&self, what: &str, f: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !f() {
            assert!(
                Instant::now() < deadline,
                "timed out: {what}\n{}",
                self.diagnostics()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn diagnostics(&self) -> String {
        format!(
            "emulator: {:?}\n{}\nattachments: {:?}\nprovisioner:\n{}",
            self.emu.counts(),
            self.emu.log().join("\n"),
            self.cluster.attachments(),
            self.cluster.provisioner_log()
        )
    }

    /// No disk is attached to more than one VM.
    pub fn no_double_attach(&self) {
        for (disk, vms) in self.cluster.attachments() {
            assert!(vms.len() <= 1, "{disk} attached to {vms:?}");
        }
    }
}

/// Reproducible contents for a volume: 256 KiB from a seed.
pub fn payload(seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    (0..256 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub fn write(m: &Mounted, seed: u64) {
    let f = m.pod_dir.join("data.bin");
    std::fs::write(&f, payload(seed)).expect("write");
    std::fs::File::open(&f)
        .and_then(|f| f.sync_all())
        .expect("sync");
}

pub fn check(m: &Mounted, seed: u64) {
    let got = std::fs::read(m.pod_dir.join("data.bin"))
        .unwrap_or_else(|e| panic!("{} on {}: {e}", m.pv, m.node));
    assert!(got == payload(seed), "{} differs on {}", m.pv, m.node);
}
