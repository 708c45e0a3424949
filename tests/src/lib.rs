//! System tests of the whole of flexdisk: the real binaries, the simulators, the shipped manifests
//! and examples. Helpers shared by the test files live here.

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The repository's top directory.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or_else(|| Path::new(".."))
        .to_path_buf()
}

/// A workspace binary, beside the running test's directory (`target/<profile>/`), where
/// `cargo test --workspace` builds every binary.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    exe.parent()
        .and_then(Path::parent)
        .unwrap_or_else(|| Path::new("."))
        .join(name)
}

/// The documents of a YAML file, as JSON values (empty documents skipped).
pub fn yaml_docs(path: &Path) -> Result<Vec<Value>, String> {
    use serde::Deserialize;
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let v = Value::deserialize(doc).map_err(|e| format!("{}: {e}", path.display()))?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}

/// Every `*.yaml` file directly in `dir`, sorted.
pub fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// The manifest files of the kustomize base (`install/base/`, which the Helm chart renders too).
pub fn install_manifests() -> Vec<PathBuf> {
    yaml_files(&repo().join("install/base"))
        .into_iter()
        .filter(|p| p.file_name().is_none_or(|n| n != "kustomization.yaml"))
        .collect()
}

/// Parses a document into its typed form, naming the file and object on failure.
pub fn typed<T: serde::de::DeserializeOwned>(doc: &Value) -> T {
    serde_json::from_value(doc.clone()).unwrap_or_else(|e| {
        panic!(
            "{} {} does not parse as {}: {e}",
            doc["kind"],
            doc["metadata"]["name"],
            std::any::type_name::<T>()
        )
    })
}

/// Where a document holds keys its typed form dropped (a misspelt or misplaced field, which
/// kube-apiserver would reject or silently ignore): the first such path, if any.
pub fn unknown_field(original: &Value, typed: &Value, at: &str) -> Option<String> {
    match (original, typed) {
        (Value::Object(o), Value::Object(t)) => o.iter().find_map(|(k, v)| match t.get(k) {
            None if !v.is_null() => Some(format!("{at}.{k}")),
            None => None,
            Some(tv) => unknown_field(v, tv, &format!("{at}.{k}")),
        }),
        (Value::Array(o), Value::Array(t)) => o
            .iter()
            .zip(t)
            .enumerate()
            .find_map(|(i, (a, b))| unknown_field(a, b, &format!("{at}[{i}]"))),
        _ => None,
    }
}

/// Parses a document into its typed form and back, failing on any field the type does not have.
pub fn strictly_typed<T: serde::de::DeserializeOwned + serde::Serialize>(doc: &Value) -> T {
    let t: T = typed(doc);
    let back = serde_json::to_value(&t).unwrap_or_default();
    if let Some(path) = unknown_field(doc, &back, "") {
        panic!(
            "{} {}: unknown field {path}",
            doc["kind"], doc["metadata"]["name"]
        );
    }
    t
}

/// The simulators, a client of their Kubernetes API, and the provisioner when started.
pub struct Cluster {
    pub sim: flexdisk_sim::process::SimProcess,
    pub kube: flexdisk_sim::kube_client::KubeClient,
    pub tmp: tempfile::TempDir,
    provisioner: Option<std::process::Child>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_provisioner();
    }
}

impl Cluster {
    /// The simulators on the world file `world`, every VM and disk operation taking `op_ms`.
    pub fn start_timed(world: &Path, op_ms: u64) -> Cluster {
        let op = op_ms.to_string();
        Cluster::start(&[
            "--world",
            world.to_str().expect("utf-8"),
            "--vm-op-ms",
            &op,
            "--disk-op-ms",
            &op,
        ])
    }

    pub fn start(sim_args: &[&str]) -> Cluster {
        let tls = flexdisk_sim::process::shared_tls_dir(
            &std::env::temp_dir().join("flexdisk-system-tests-ca"),
        );
        let mut args = vec!["--tls-dir", tls.to_str().unwrap_or_default()];
        args.extend_from_slice(sim_args);
        let sim = flexdisk_sim::process::SimProcess::start(&bin("flexdisk-sim"), &args)
            .expect("the simulators start");
        Cluster {
            kube: flexdisk_sim::kube_client::KubeClient::new(&sim.field("kube")),
            sim,
            tmp: tempfile::tempdir().expect("tmp"),
            provisioner: None,
        }
    }

    /// Starts `flexdisk-provisioner` with these arguments (a kubeconfig and cloud config of the
    /// simulators are the caller's to give); its log goes to `provisioner.log`.
    pub fn start_provisioner(&mut self, args: &[String], env: &[(String, String)]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.tmp.path().join("provisioner.log"))
            .expect("log");
        let child = std::process::Command::new(bin("flexdisk-provisioner"))
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("SSL_CERT_FILE", self.sim.field("caBundle"))
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("the provisioner starts");
        self.provisioner = Some(child);
    }

    pub fn stop_provisioner(&mut self) {
        if let Some(mut c) = self.provisioner.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn provisioner_pid(&self) -> Option<u32> {
        self.provisioner.as_ref().map(std::process::Child::id)
    }

    pub fn provisioner_log(&self) -> String {
        std::fs::read_to_string(self.tmp.path().join("provisioner.log")).unwrap_or_default()
    }

    /// Waits for a claim to be Bound and returns its PV.
    pub fn bound_pv(&self, namespace: &str, claim: &str) -> Value {
        let path = format!("/api/v1/namespaces/{namespace}/persistentvolumeclaims/{claim}");
        let c = self
            .kube
            .wait_for(
                &path,
                &format!("claim {namespace}/{claim} Bound"),
                std::time::Duration::from_secs(60),
                |c| c.is_some_and(|c| c["status"]["phase"] == "Bound"),
            )
            .unwrap_or_else(|e| panic!("{e}\nprovisioner log:\n{}", self.provisioner_log()))
            .unwrap_or_default();
        let pv = c["spec"]["volumeName"].as_str().unwrap_or_default();
        self.kube
            .get(&format!("/api/v1/persistentvolumes/{pv}"))
            .expect("kube answers")
            .unwrap_or_else(|| panic!("PV {pv} of {namespace}/{claim} is missing"))
    }

    /// The disks the simulated Azure holds, keyed by resource ID.
    pub fn disks(&self) -> serde_json::Map<String, Value> {
        self.sim
            .control("GET", "/state", None)
            .map(|(_, v)| v["disks"].as_object().cloned().unwrap_or_default())
            .unwrap_or_default()
    }
}

pub mod emulator;
pub mod real_cluster;
pub mod scene;

impl Cluster {
    /// The driver as each host of the simulated cluster runs it (see `Hosts::of_simulator`), with
    /// logs and state under the test's directory.
    pub fn hosts(&self) -> emulator::Hosts {
        let mut h = emulator::Hosts::of_simulator(
            &self.sim,
            &bin("flexdisk"),
            emulator::DRIVER,
            self.tmp.path(),
        );
        for d in
            std::iter::once(&mut h.controller).chain(h.nodes.values_mut().map(|k| &mut k.driver))
        {
            d.env.push(("FLEXDISK_WAIT_SECS".into(), "60".into()));
        }
        h
    }

    /// Requests the simulated ARM has served, by operation id or `reads`/`writes`.
    pub fn arm_count(&self, key: &str) -> u64 {
        self.sim
            .control("GET", "/counters", None)
            .map(|(_, c)| c[key].as_u64().unwrap_or(0))
            .unwrap_or(0)
    }

    /// The simulated nodes in availability zones (`zoned`) or not, sorted.
    pub fn nodes(&self, zoned: bool) -> Vec<String> {
        let mut out: Vec<String> = self.sim.ready["nodes"]
            .as_object()
            .map(|n| {
                n.iter()
                    .filter(|(_, v)| v["zone"].is_null() != zoned)
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }

    /// Starts the provisioner with the simulators' kubeconfig and cloud config.
    pub fn start_default_provisioner(&mut self, extra: &[&str]) {
        let mut args: Vec<String> = vec![
            "--kubeconfig".into(),
            self.sim.field("kubeconfig"),
            "--cloud-config".into(),
            self.sim.field("azureJson"),
            "--metrics-addr".into(),
            "127.0.0.1:0".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        self.start_provisioner(&args, &[]);
    }

    /// Attachments as Azure has them: disk name → VMs it is attached to.
    pub fn attachments(&self) -> BTreeMap<String, Vec<String>> {
        self.disks()
            .values()
            .map(|d| {
                (
                    d["name"].as_str().unwrap_or_default().to_string(),
                    d["attachedTo"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|v| {
                            v.as_str()
                                .map(|s| s.rsplit('/').next().unwrap_or(s).to_string())
                        })
                        .collect(),
                )
            })
            .collect()
    }
}

impl Cluster {
    /// A managed disk made directly in the simulated Azure, as an admin would beforehand; its ID.
    pub fn create_disk(&self, name: &str, sku: &str, gib: u64) -> String {
        create_disk(&self.sim, name, sku, gib)
    }
}

/// `sim`'s Azure as the control plane's cloud config reaches it, with a runtime to call it on.
fn arm_of(
    sim: &flexdisk_sim::process::SimProcess,
) -> (tokio::runtime::Runtime, flexdisk_azure::Arm) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let config = flexdisk_azure::Config::load(Path::new(&sim.field("azureJson"))).expect("config");
    let arm = rt
        .block_on(flexdisk_azure::Arm::connect(&config, Default::default()))
        .expect("arm");
    (rt, arm)
}

/// Deletes a detached managed disk of `sim`'s Azure, as an admin would.
pub fn delete_disk(sim: &flexdisk_sim::process::SimProcess, name: &str) {
    let (rt, arm) = arm_of(sim);
    rt.block_on(arm.delete_disk(&arm.resource_group, name))
        .expect("delete disk");
}

/// A managed disk made in `sim`'s Azure with the control plane's cloud config; its ID.
pub fn create_disk(
    sim: &flexdisk_sim::process::SimProcess,
    name: &str,
    sku: &str,
    gib: u64,
) -> String {
    let (rt, arm) = arm_of(sim);
    let params = flexdisk_azure::DiskParams::parse([("skuName", sku)]).expect("params");
    let spec = flexdisk_azure::DiskSpec::from_params(
        &params,
        name,
        gib,
        None,
        &arm.resource_group,
        &arm.location,
    );
    rt.block_on(arm.create_disk(&spec)).expect("disk").id
}
