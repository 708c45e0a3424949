//! Provisioner benchmark against the simulator (figures, not pass/fail):
//! `cargo build --release -p flexdisk-sim && cargo bench -p flexdisk-provisioner --bench provision`
//!
//! - 200 claims to Bound vs the lower bound ⌈200/workers⌉ × the simulated disk-create latency;
//! - ARM requests per provision (reads and writes);
//! - the provisioner's peak RSS once 1000 PVs exist.

use flexdisk_sim::process::{binary, SimProcess};
use reqwest::blocking::Client;
use serde_json::{json, Value};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const WORKERS: u64 = 8;
const CREATE_MS: u64 = 1000;

fn bound(http: &Client, kube: &str) -> usize {
    let list: Value = http
        .get(format!(
            "{kube}/api/v1/namespaces/default/persistentvolumeclaims"
        ))
        .send()
        .and_then(|r| r.json())
        .unwrap_or(Value::Null);
    list["items"]
        .as_array()
        .map(|a| a.iter().filter(|c| c["status"]["phase"] == "Bound").count())
        .unwrap_or(0)
}

fn create_claims(http: &Client, kube: &str, from: usize, to: usize) {
    for i in from..to {
        let body = json!({"metadata": {"name": format!("bench-{i}")}, "spec": {"accessModes": ["ReadWriteOnce"],
            "storageClassName": "bench", "resources": {"requests": {"storage": "1Gi"}}}});
        let r = http
            .post(format!(
                "{kube}/api/v1/namespaces/default/persistentvolumeclaims"
            ))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .expect("create claim");
        assert_eq!(r.status().as_u16(), 201);
    }
}

fn wait_bound(http: &Client, kube: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(1800);
    while bound(http, kube) < n {
        assert!(Instant::now() < deadline, "claims never all bound");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn main() {
    let tmp = tempfile::tempdir().expect("tmp");
    let create = CREATE_MS.to_string();
    let sim = SimProcess::start(&binary(), &["--disk-op-ms", &create, "--vm-op-ms", "100"])
        .expect("simulator (cargo build --release -p flexdisk-sim first)");
    let kube = sim.field("kube");
    let workers = WORKERS.to_string();
    let mut provisioner = Command::new(env!("CARGO_BIN_EXE_flexdisk-provisioner"))
        .args([
            "--kubeconfig",
            &sim.field("kubeconfig"),
            "--cloud-config",
            &sim.field("azureJson"),
        ])
        .args([
            "--workers",
            &workers,
            "--metrics-addr",
            "127.0.0.1:0",
            "--log",
            "warn",
        ])
        .env("SSL_CERT_FILE", sim.field("caBundle"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(tmp.path().join("provisioner.log")).expect("log"))
        .spawn()
        .expect("provisioner");
    let http = Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let sc = json!({"metadata": {"name": "bench"}, "provisioner": "flexdisk/azure-disk"});
    http.post(format!("{kube}/apis/storage.k8s.io/v1/storageclasses"))
        .header("content-type", "application/json")
        .body(sc.to_string())
        .send()
        .expect("class");
    std::thread::sleep(Duration::from_secs(1));
    sim.control("DELETE", "/counters", None).expect("reset");

    let t = Instant::now();
    create_claims(&http, &kube, 0, 200);
    wait_bound(&http, &kube, 200);
    let took = t.elapsed().as_secs_f64();
    let lower = (200f64 / WORKERS as f64).ceil() * CREATE_MS as f64 / 1000.0;
    let (_, c) = sim.control("GET", "/counters", None).expect("counters");
    let reads = c["reads"].as_u64().unwrap_or(0) as f64 / 200.0;
    let writes = c["writes"].as_u64().unwrap_or(0) as f64 / 200.0;
    println!("200 claims Bound in {took:.1} s; lower bound ⌈200/{WORKERS}⌉ × {CREATE_MS} ms = {lower:.1} s; ratio {:.2}", took / lower);
    println!(
        "ARM requests per provision: {:.2} ({reads:.2} reads, {writes:.2} writes)",
        reads + writes
    );

    create_claims(&http, &kube, 200, 1000);
    wait_bound(&http, &kube, 1000);
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", provisioner.id())).unwrap_or_default();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .unwrap_or("VmHWM: ?")
        .trim()
        .to_string();
    println!(
        "provisioner with 1000 PVs: peak RSS {}",
        hwm.trim_start_matches("VmHWM:").trim()
    );
    let _ = provisioner.kill();
    let _ = provisioner.wait();
}
