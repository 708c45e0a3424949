//! `flexdisk-sim demo`: the whole system on one machine. Starts the simulated Azure and Kubernetes,
//! the real provisioner, creates a StorageClass and a claim, then plays kube-controller-manager and
//! kubelet with the real `flexdisk`: attach to node A, mount, write a file, drain A, attach and
//! mount on node B, check the file, delete the claim and see the disk go. Prints a timeline.

use crate::kube_client::KubeClient;
use crate::kubelet::{Hosts, PodRef};
use crate::process::SimProcess;
use anyhow::{bail, Context};
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const DRIVER: &str = "flexdisk/azure-disk";
const CLASS: &str = "flexdisk-demo";
const CLAIM: &str = "demo-data";
const NAMESPACE: &str = "default";
const POD_A: &str = "5f0c6b1e-demo-pod-on-node-a";
const POD_B: &str = "9a3d2c7f-demo-pod-on-node-b";

pub struct DemoOptions {
    /// Where logs and state go (kept after the run, for reading).
    pub dir: PathBuf,
    pub vm_op_ms: u64,
    pub disk_op_ms: u64,
}

/// What the demo prints, one line per step, with the time since the start, how long the step
/// took and the ARM requests it caused.
struct Timeline<'a> {
    start: Instant,
    step: Instant,
    sim: &'a SimProcess,
    last: (u64, u64),
    out: std::io::Stdout,
}

impl<'a> Timeline<'a> {
    fn new(sim: &'a SimProcess, start: Instant) -> Timeline<'a> {
        let mut t = Timeline {
            start,
            step: start,
            sim,
            last: (0, 0),
            out: std::io::stdout(),
        };
        t.last = t.arm_calls();
        t
    }

    fn arm_calls(&self) -> (u64, u64) {
        let c = self
            .sim
            .control("GET", "/counters", None)
            .map(|(_, v)| v)
            .unwrap_or_default();
        (
            c["writes"].as_u64().unwrap_or(0),
            c["reads"].as_u64().unwrap_or(0),
        )
    }

    fn done(&mut self, what: &str) {
        let now = Instant::now();
        let (w, r) = self.arm_calls();
        let _ = writeln!(
            self.out,
            "[{:>6.2}s] {:>5.2}s  ARM {:>2}w {:>3}r  {what}",
            now.duration_since(self.start).as_secs_f64(),
            now.duration_since(self.step).as_secs_f64(),
            w - self.last.0,
            r - self.last.1,
        );
        self.last = (w, r);
        self.step = now;
    }

    fn note(&mut self, what: &str) {
        let _ = writeln!(self.out, "{:>28}{what}", "");
    }
}

/// The driver and provisioner beside this program (`target/<profile>/`). Under `cargo run` they
/// are built first (a no-op when current): `cargo run --bin flexdisk-sim` builds only the
/// simulator's package, and a stale driver would show yesterday's behaviour.
fn programs() -> anyhow::Result<(PathBuf, PathBuf)> {
    let me = std::env::current_exe().context("cannot find this binary")?;
    if let (Some(cargo), Some(manifest)) = (
        std::env::var_os("CARGO"),
        std::env::var_os("CARGO_MANIFEST_DIR"),
    ) {
        let release = me
            .parent()
            .and_then(Path::file_name)
            .is_some_and(|p| p == "release");
        println!("cargo build -p flexdisk -p flexdisk-provisioner (quick when they are current) …");
        let mut build = Command::new(cargo);
        build
            .args(["build", "--quiet", "--manifest-path"])
            .arg(Path::new(&manifest).join("../Cargo.toml"))
            .args(["-p", "flexdisk", "-p", "flexdisk-provisioner"]);
        if release {
            build.arg("--release");
        }
        if !build.status().context("running cargo build")?.success() {
            bail!("building flexdisk and flexdisk-provisioner failed (see cargo's output above)");
        }
    }
    let beside = |name: &str| {
        let path = me.with_file_name(name);
        if path.exists() {
            Ok(path)
        } else {
            Err(anyhow::anyhow!(
                "{} is missing; build it beside {} (cargo build --release --workspace)",
                path.display(),
                me.display()
            ))
        }
    };
    Ok((beside("flexdisk")?, beside("flexdisk-provisioner")?))
}

/// `Ok(false)`: the demo ran and something did not work (already reported on stdout).
pub fn run(options: DemoOptions) -> anyhow::Result<bool> {
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "the demo needs root: the simulated nodes' disks are loop devices that flexdisk formats \
             and mounts for real. Run it as root (for example `sudo -E $(which cargo) run --release \
             --bin flexdisk-sim -- demo`), or run the simulators alone with `flexdisk-sim serve`."
        );
    }
    let (flexdisk, provisioner_bin) = programs()?;
    let me = std::env::current_exe()?;
    std::fs::create_dir_all(&options.dir)
        .with_context(|| format!("creating {}", options.dir.display()))?;
    let dir = options.dir.canonicalize()?;
    let state = dir.join("sim");
    let _ = std::fs::remove_dir_all(&state);
    println!(
        "flexdisk demo — logs and state in {} (re-run to start afresh)\n",
        dir.display()
    );
    println!("[    at ]  step   ARM calls  what happened");

    let vm_op = options.vm_op_ms.to_string();
    let disk_op = options.disk_op_ms.to_string();
    let started = Instant::now();
    let mut sim = SimProcess::start_at(
        &me,
        &state,
        &["--vm-op-ms", &vm_op, "--disk-op-ms", &disk_op],
    )
    .context("starting the simulators")?;
    let result = play(&sim, started, &dir, &flexdisk, &provisioner_bin);
    sim.stop();
    match &result {
        Ok(()) => println!(
            "\ndemo passed: the data moved between nodes intact and nothing was left behind"
        ),
        Err(e) => println!("\ndemo FAILED: {e:#}\nlogs: {}", dir.display()),
    }
    Ok(result.is_ok())
}

struct Provisioner(Child);

impl Drop for Provisioner {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn play(
    sim: &SimProcess,
    started: Instant,
    dir: &Path,
    flexdisk: &Path,
    provisioner: &Path,
) -> anyhow::Result<()> {
    let mut t = Timeline::new(sim, started);
    t.done("Azure (ARM, Entra ID, IMDS) and Kubernetes simulators up");
    let kube = KubeClient::new(&sim.field("kube"));
    // Two regional (non-zonal) nodes: a locally redundant disk may move between them.
    let mut nodes: Vec<String> = sim.ready["nodes"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(_, n)| n["zone"].is_null())
                .map(|(name, _)| name.clone())
                .collect()
        })
        .unwrap_or_default();
    nodes.sort();
    let (node_a, node_b) = match nodes.as_slice() {
        [a, b, ..] => (a.clone(), b.clone()),
        _ => bail!("the simulated world needs two nodes outside availability zones"),
    };
    let log = std::fs::File::create(dir.join("provisioner.log"))?;
    let _provisioner = Provisioner(
        Command::new(provisioner)
            .args(["--kubeconfig", &sim.field("kubeconfig")])
            .args(["--cloud-config", &sim.field("azureJson")])
            .args(["--metrics-addr", "127.0.0.1:0"])
            .env("SSL_CERT_FILE", sim.field("caBundle"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting flexdisk-provisioner")?,
    );
    t.done("flexdisk-provisioner started");

    kube.create(
        &json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": CLASS}, "provisioner": DRIVER,
        "parameters": {"skuName": "StandardSSD_LRS", "fsType": "ext4"},
        "reclaimPolicy": "Delete", "volumeBindingMode": "Immediate"}),
    )?;
    kube.create(&json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": CLAIM, "namespace": NAMESPACE},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": CLASS,
                 "resources": {"requests": {"storage": "10Gi"}}}}))?;
    let claim_path = format!("/api/v1/namespaces/{NAMESPACE}/persistentvolumeclaims/{CLAIM}");
    let claim = kube
        .wait_for(
            &claim_path,
            "the claim to be Bound",
            Duration::from_secs(60),
            |c| c.is_some_and(|c| c["status"]["phase"] == "Bound"),
        )
        .context("the provisioner did not bind the claim; see provisioner.log")?
        .unwrap_or_default();
    let pv_name = claim["spec"]["volumeName"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let pv = kube
        .get(&format!("/api/v1/persistentvolumes/{pv_name}"))?
        .context("the bound PV is missing")?;
    let disk_uri = pv["spec"]["flexVolume"]["options"]["diskURI"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    t.done(&format!(
        "claim {CLAIM} Bound to {pv_name} (10 GiB StandardSSD_LRS)"
    ));
    t.note(&format!("disk {disk_uri}"));

    let mut hosts = Hosts::of_simulator(sim, flexdisk, DRIVER, dir);
    let controller = hosts.controller();
    let mut kubelet = |node: &str| {
        hosts
            .nodes
            .remove(node)
            .ok_or_else(|| anyhow::anyhow!("no node {node} in the simulated world"))
    };
    let (on_a, on_b) = (kubelet(&node_a)?, kubelet(&node_b)?);

    let init = controller.driver.call(&["init"], None)?;
    t.done(&format!(
        "flexdisk init: capabilities {}",
        init.json["capabilities"]
    ));

    let lun = controller.attach(&pv, &node_a)?;
    t.done(&format!("attach to {node_a} (LUN {lun})"));
    let (pod_dir, _) = on_a.set_up(&pv, &lun, &PodRef::named(POD_A), false)?;
    t.done("waitforattach + mountdevice (mkfs.ext4) + bind into the pod");
    let payload = format!(
        "written on {node_a} at {:?} by the flexdisk demo\n",
        std::time::SystemTime::now()
    );
    std::fs::write(pod_dir.join("hello.txt"), &payload)?;
    std::fs::File::open(pod_dir.join("hello.txt"))?.sync_all()?;
    t.done(&format!("pod on {node_a} wrote hello.txt"));

    on_a.tear_down(&pv_name, POD_A)?;
    controller.detach(&pv_name, &node_a)?;
    if controller.is_attached(&pv, &node_a)? {
        bail!("isattached still says the disk is on {node_a} after detach");
    }
    t.done(&format!("drain {node_a}: unmount, unmountdevice, detach"));

    let lun = controller.attach(&pv, &node_b)?;
    t.done(&format!("attach to {node_b} (LUN {lun})"));
    let (pod_dir, _) = on_b.set_up(&pv, &lun, &PodRef::named(POD_B), false)?;
    t.done("waitforattach + mountdevice (existing ext4 kept) + bind");
    let read = std::fs::read_to_string(pod_dir.join("hello.txt"))
        .context("hello.txt is missing on the second node")?;
    if read != payload {
        bail!("hello.txt differs on {node_b}: {read:?} instead of {payload:?}");
    }
    t.done(&format!("pod on {node_b} read hello.txt: identical"));

    on_b.tear_down(&pv_name, POD_B)?;
    controller.detach(&pv_name, &node_b)?;
    t.done(&format!("pod gone: unmount and detach from {node_b}"));

    kube.delete(&claim_path)?;
    kube.wait_for(
        &format!("/api/v1/persistentvolumes/{pv_name}"),
        "the PV to be deleted",
        Duration::from_secs(60),
        |pv| pv.is_none(),
    )
    .context("the provisioner did not delete the released volume; see provisioner.log")?;
    let disks = sim
        .control("GET", "/state", None)
        .map(|(_, v)| v["disks"].clone())
        .unwrap_or(Value::Null);
    let left = disks.as_object().map(|d| d.len()).unwrap_or(0);
    if left != 0 {
        bail!("{left} disk(s) left in Azure after the claim was deleted: {disks}");
    }
    t.done("claim deleted: PV and Azure disk gone");
    Ok(())
}
