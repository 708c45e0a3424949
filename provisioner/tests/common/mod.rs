//! What the provisioner's tests share: the real `flexdisk-provisioner` binary against the
//! simulator's Azure and Kubernetes, and readers of what they did.
#![allow(dead_code)]

use flexdisk_azure::{Arm, ArmOptions, Config};
use flexdisk_sim::process::{binary, shared_tls_dir, SimProcess};
use reqwest::blocking::Client;
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Setup {
    pub sim: SimProcess,
    pub provisioner: Child,
    pub kube: String,
    pub http: Client,
    pub rt: tokio::runtime::Runtime,
    pub arm: Arm,
    pub _tmp: tempfile::TempDir,
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = self.provisioner.kill();
        let _ = self.provisioner.wait();
    }
}

/// Random-looking but reproducible pauses of `min..min + spread` ms (xorshift from `seed`), for
/// crash moments.
pub fn pauses(mut seed: u64, min: u64, spread: u64) -> impl FnMut() -> Duration {
    move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        Duration::from_millis(min + seed % spread)
    }
}

/// The provisioner as deployed (one replica), its log appended to `log`.
pub fn spawn_provisioner(sim: &SimProcess, log: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log");
    Command::new(env!("CARGO_BIN_EXE_flexdisk-provisioner"))
        .args([
            "--kubeconfig",
            &sim.field("kubeconfig"),
            "--cloud-config",
            &sim.field("azureJson"),
        ])
        .args(["--log", "info", "--metrics-addr", "127.0.0.1:0"])
        .env("SSL_CERT_FILE", sim.field("caBundle"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("provisioner starts")
}

impl Setup {
    /// SIGKILL and start again (a crash and kubelet's restart).
    pub fn crash_and_restart(&mut self) {
        let _ = self.provisioner.kill();
        let _ = self.provisioner.wait();
        self.provisioner = spawn_provisioner(&self.sim, &self._tmp.path().join("provisioner.log"));
    }

    pub fn start() -> Setup {
        let tls = shared_tls_dir(&Path::new(env!("CARGO_TARGET_TMPDIR")).join("flexdisk-sim-ca"));
        let sim = SimProcess::start(
            &binary(),
            &[
                "--tls-dir",
                tls.to_str().expect("utf-8"),
                "--vm-op-ms",
                "150",
                "--disk-op-ms",
                "100",
            ],
        )
        .expect("sim");
        let tmp = tempfile::tempdir().expect("tmp");
        let provisioner = spawn_provisioner(&sim, &tmp.path().join("provisioner.log"));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        let config = Config::load(Path::new(&sim.field("azureJson"))).expect("config");
        let arm = rt
            .block_on(Arm::connect(&config, ArmOptions::default()))
            .expect("arm");
        Setup {
            kube: sim.field("kube"),
            sim,
            provisioner,
            http: Client::new(),
            rt,
            arm,
            _tmp: tmp,
        }
    }

    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut r = self.http.request(
            method.parse().expect("method"),
            format!("{}{path}", self.kube),
        );
        if let Some(b) = body {
            r = r
                .header(
                    "content-type",
                    if method == "PATCH" {
                        "application/merge-patch+json"
                    } else {
                        "application/json"
                    },
                )
                .body(b.to_string());
        }
        let rsp = r.send().expect("kube answers");
        let status = rsp.status().as_u16();
        (status, rsp.json().unwrap_or(Value::Null))
    }

    pub fn until(&self, path: &str, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, body) = self.call("GET", path, None);
            if status == 200 && f(&body) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "never {what}: {body}\nprovisioner log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn gone(&self, path: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.call("GET", path, None).0 != 404 {
            assert!(
                Instant::now() < deadline,
                "{path} never went\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self._tmp.path().join("provisioner.log")).unwrap_or_default()
    }

    /// The Premium class `grows` (`allowVolumeExpansion: true`), made once.
    pub fn expandable_class(&self) {
        let sc = json!({"metadata": {"name": "grows"}, "provisioner": "flexdisk/azure-disk",
            "parameters": {"skuName": "Premium_LRS"}, "allowVolumeExpansion": true});
        let (status, body) = self.call("POST", "/apis/storage.k8s.io/v1/storageclasses", Some(sc));
        assert!(status == 201 || status == 409, "{body}");
    }

    /// A claim of the `grows` class, Bound: the claim and its disk's name.
    pub fn expandable_claim(&self, name: &str, size: &str) -> (Value, String) {
        self.expandable_class();
        let c = self.claim(name, "grows", size);
        self.until(&format!("{PVCS}/{name}"), "Bound", |o| {
            o["status"]["phase"] == "Bound"
        });
        let disk = format!("pvc-{}", c["metadata"]["uid"].as_str().expect("uid"));
        (c, disk)
    }

    pub fn class(&self, name: &str, params: Value, extra: Value) {
        let mut sc = json!({"metadata": {"name": name}, "provisioner": "flexdisk/azure-disk", "parameters": params});
        if let (Some(m), Some(e)) = (sc.as_object_mut(), extra.as_object()) {
            m.extend(e.clone());
        }
        assert_eq!(
            self.call("POST", "/apis/storage.k8s.io/v1/storageclasses", Some(sc))
                .0,
            201
        );
    }

    /// A claim of `class` provisioned, bound, then deleted: its volume's name once Released.
    pub fn released(&self, name: &str, class: &str) -> String {
        let c = self.claim(name, class, "1Gi");
        let pv = format!("pvc-{}", c["metadata"]["uid"].as_str().expect("uid"));
        self.until(&format!("{PVCS}/{name}"), "Bound", |o| {
            o["status"]["phase"] == "Bound"
        });
        self.call("DELETE", &format!("{PVCS}/{name}"), None);
        self.until(
            &format!("/api/v1/persistentvolumes/{pv}"),
            "Released",
            |o| o["status"]["phase"] == "Released",
        );
        pv
    }

    pub fn claim(&self, name: &str, class: &str, size: &str) -> Value {
        let (status, body) = self.call("POST", "/api/v1/namespaces/default/persistentvolumeclaims", Some(json!({
            "metadata": {"name": name},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": class, "resources": {"requests": {"storage": size}}}})));
        assert_eq!(status, 201, "{body}");
        body
    }

    /// The simulator's disks named like provisioned ones, and the PVs, both sorted.
    pub fn disks_and_pvs(&self) -> (Vec<String>, Vec<String>) {
        let (_, state) = self.sim.control("GET", "/state", None).expect("state");
        let mut disks: Vec<String> = match &state["disks"] {
            Value::Object(m) => m
                .values()
                .filter_map(|d| d["name"].as_str().map(str::to_string))
                .collect(),
            Value::Array(a) => a
                .iter()
                .filter_map(|d| d["name"].as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        };
        disks.retain(|d| d.starts_with("pvc-"));
        disks.sort();
        let (_, pvs) = self.call("GET", "/api/v1/persistentvolumes", None);
        let mut pvs: Vec<String> = pvs["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
            .collect();
        pvs.sort();
        (disks, pvs)
    }

    /// Deletes the claims and waits until no provisioned disk and no PV is left.
    pub fn delete_all_and_converge(&self, names: &[String], within: Duration) {
        for n in names {
            self.call("DELETE", &format!("{PVCS}/{n}"), None);
        }
        self.converge(within);
    }

    /// Waits until no provisioned disk and no PV is left.
    pub fn converge(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let (disks, pvs) = self.disks_and_pvs();
            if disks.is_empty() && pvs.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "left behind: disks {disks:?}, PVs {pvs:?}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Attaches the disk named `disk` to `node`'s VM as a pod's attach would: the VM and what was
    /// asked.
    pub fn attach(
        &self,
        disk: &str,
        node: &str,
    ) -> (flexdisk_azure::VmDisks, flexdisk_azure::AttachSpec) {
        let vm = self.rt.block_on(self.arm.node_vm(node)).expect("vm");
        let spec = flexdisk_azure::AttachSpec {
            disk_id: self.arm.disk_id(&self.arm.resource_group, disk).to_string(),
            lun: None,
            caching: flexdisk_azure::Caching::None,
        };
        self.rt
            .block_on(
                self.arm
                    .attach_detach(&vm.vm, std::slice::from_ref(&spec), &[]),
            )
            .expect("attach");
        (vm, spec)
    }

    /// Waits until the disk `name` is `gib` GiB: kube-controller-manager's no-op expansion hands
    /// a grown claim to the node at once, and the disk follows a moment later.
    pub fn disk_reaches(&self, name: &str, gib: u64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let size = self.disk(name).map(|d| d.size_gib);
            if size == Some(gib) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "disk {name} is {size:?} GiB, not {gib}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn disk(&self, name: &str) -> Option<flexdisk_azure::DiskInfo> {
        self.rt
            .block_on(self.arm.get_disk(&self.arm.resource_group, name))
            .expect("get disk")
    }
}

pub const PVCS: &str = "/api/v1/namespaces/default/persistentvolumeclaims";

/// The events about one object, by reason.
pub fn reasons(s: &Setup, name: &str) -> Vec<String> {
    events(s, name)
        .into_iter()
        .map(|(reason, _)| reason)
        .collect()
}

/// The events about one object: reason and note of each.
pub fn events(s: &Setup, name: &str) -> Vec<(String, String)> {
    events_in(s, "default", name)
}

/// The events about one object of namespace `ns`: reason and note of each.
pub fn events_in(s: &Setup, ns: &str, name: &str) -> Vec<(String, String)> {
    let (_, list) = s.call(
        "GET",
        &format!("/apis/events.k8s.io/v1/namespaces/{ns}/events"),
        None,
    );
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["regarding"]["name"] == name)
        .map(|e| {
            let text = |k: &str| e[k].as_str().unwrap_or_default().to_string();
            (text("reason"), text("note"))
        })
        .collect()
}

/// The notes of the events about `name` with `reason`.
pub fn notes(s: &Setup, name: &str, reason: &str) -> Vec<String> {
    events(s, name)
        .into_iter()
        .filter(|(r, _)| r == reason)
        .map(|(_, note)| note)
        .collect()
}

/// Waits (10 s at most) for an event about `name` with `reason` whose note satisfies `f`; the
/// notes of that reason either way (an event is published just after the write it tells of).
pub fn note_soon(s: &Setup, name: &str, reason: &str, f: impl Fn(&str) -> bool) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let said = notes(s, name, reason);
        if said.iter().any(|n| f(n)) || Instant::now() > deadline {
            return said;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
