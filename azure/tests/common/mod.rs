//! Harness for the library's tests against the real `flexdisk-sim` binary.
#![allow(dead_code)]

use flexdisk_azure::{Arm, ArmOptions, Config};
use flexdisk_sim::process::{binary, SimProcess};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub const AS_A: &str = "k8s-agentpool1-31415926-0";
pub const AS_B: &str = "k8s-agentpool1-31415926-1";
pub const SS_0: &str = "aks-nodepool1-31415926-vmss000000";
pub const SS_1: &str = "aks-nodepool1-31415926-vmss000001";

/// One CA for every simulator of this test process, trusted through `SSL_CERT_FILE` as a private
/// cloud's CA is: the variable is process-wide, so all simulators share the CA (`--tls-dir`).
fn tls_dir() -> &'static Path {
    flexdisk_sim::process::shared_tls_dir(
        &Path::new(env!("CARGO_TARGET_TMPDIR")).join("flexdisk-sim-ca"),
    )
}

/// A simulator with quick operations (150 ms VM, 100 ms disk) unless `args` say otherwise.
pub fn sim(args: &[&str]) -> SimProcess {
    let tls = tls_dir().to_string_lossy().to_string();
    let mut all: Vec<&str> = vec!["--tls-dir", &tls];
    if !args.contains(&"--vm-op-ms") {
        all.extend(["--vm-op-ms", "150"]);
    }
    if !args.contains(&"--disk-op-ms") {
        all.extend(["--disk-op-ms", "100"]);
    }
    all.extend(args);
    SimProcess::start(&binary(), &all).expect("flexdisk-sim starts")
}

/// An environment of only these variables.
pub fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k: &str| map.get(k).cloned()
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Quick retries so fault tests do not dawdle; the same shape as production's.
pub fn options() -> ArmOptions {
    let mut o = ArmOptions::default();
    o.retry.base = std::time::Duration::from_millis(20);
    o.retry.cap = std::time::Duration::from_millis(200);
    o
}

/// The control plane's view: the simulator's azure.json (service principal).
pub fn control_plane_config(sim: &SimProcess) -> Config {
    Config::load_with(Path::new(&sim.field("azureJson")), &env(&[])).expect("control-plane config")
}

/// A node's view: its azure.json (managed identity) and its IMDS.
pub fn node_config(sim: &SimProcess, node: &str) -> Config {
    let imds = sim.node_field(node, "imds");
    Config::load_with(
        Path::new(&sim.node_field(node, "azureJson")),
        &env(&[("IMDS_ENDPOINT", &imds)]),
    )
    .expect("node config")
}

pub fn connect(rt: &tokio::runtime::Runtime, config: &Config) -> Arm {
    rt.block_on(Arm::connect(config, options()))
        .expect("connects")
}

pub fn counters(sim: &SimProcess) -> Value {
    let (status, body) = sim.control("GET", "/counters", None).expect("counters");
    assert_eq!(status, 200);
    body
}

pub fn count(counters: &Value, operation: &str) -> u64 {
    counters[operation].as_u64().unwrap_or(0)
}

pub fn reset_counters(sim: &SimProcess) {
    let (status, _) = sim.control("DELETE", "/counters", None).expect("reset");
    assert_eq!(status, 204);
}

pub fn fault(sim: &SimProcess, rule: Value) {
    let (status, body) = sim.control("POST", "/faults", Some(&rule)).expect("fault");
    assert_eq!(status, 201, "{body}");
}

pub fn clear_faults(sim: &SimProcess) {
    let (status, _) = sim.control("DELETE", "/faults", None).expect("clear");
    assert_eq!(status, 204);
}

pub fn lun_link(sim: &SimProcess, node: &str, lun: i32) -> PathBuf {
    PathBuf::from(sim.node_field(node, "root")).join(format!("dev/disk/azure/scsi1/lun{lun}"))
}

pub fn json_file(dir: &Path, name: &str, value: &Value) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, serde_json::to_vec_pretty(value).expect("json")).expect("write");
    p
}

pub fn empty_json() -> Value {
    json!({})
}
