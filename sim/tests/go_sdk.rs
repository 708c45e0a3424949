//! Conformance with Azure's official Go SDK: the program in `sim/tests/go-sdk/` (armcompute/v7
//! v7.3, azidentity, and cloud-provider-azure's azclient clients with their poller and throttling
//! policy — what Kubernetes' Azure code is built on), built from the Go module proxy by its
//! `build` script into a cache outside the clone, runs against the real simulator over loopback:
//! cloud discovery, both credentials, disks created, listed, attached through each VM kind's API
//! (availability-set VM full-model PUT with If-Match, cloud-provider-azure's PUT shapes,
//! `attachDetachDataDisks`, the scale-set instance's storage-profile-only update), grown,
//! snapshotted, deleted; throttled and failed operations. Every answer the SDK received is
//! decoded into the SDK's own model and checked for unknown and missing fields (check.go).

mod common;
use common::*;
use serde_json::Value;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

fn build_program() -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/go-sdk/build");
    let out = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .expect("runs sim/tests/go-sdk/build");
    assert!(out.status.success(), "sim/tests/go-sdk/build failed");
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_string()
}

#[test]
fn azure_go_sdk_drives_the_simulator() {
    let started = Instant::now();
    let program = build_program();
    let built = started.elapsed();
    let sim = Sim::start(&[]);
    let node = SS_0;
    let mut child = Command::new(&program)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", std::env::temp_dir())
        // The simulator's private CA for Entra ID's TLS endpoint (Go's crypto/x509 reads it).
        .env("SSL_CERT_FILE", sim.s("caBundle"))
        // The node's managed identity through the App Service protocol.
        .env("IDENTITY_ENDPOINT", sim.node(node, "identityEndpoint"))
        .env("IDENTITY_HEADER", sim.node(node, "identityHeader"))
        .env("NO_PROXY", "*")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the conformance program starts");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(sim.ready.to_string().as_bytes())
        .expect("ready line written");
    let out = child.wait_with_output().expect("the program ends");
    let stdout = String::from_utf8_lossy(&out.stdout);
    print!("{stdout}");
    println!(
        "go SDK conformance: program ready in {:.1}s, run {:.1}s",
        built.as_secs_f64(),
        (started.elapsed() - built).as_secs_f64()
    );
    let summary: Value = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no summary line: {stdout}"));
    let scenarios = summary["scenarios"].as_array().expect("scenarios");
    let failed: Vec<&Value> = scenarios.iter().filter(|s| s["ok"] != true).collect();
    assert!(failed.is_empty(), "failed scenarios: {failed:#?}");
    assert_eq!(scenarios.len(), 14, "{scenarios:#?}");
    let problems = summary["modelProblems"].as_array().expect("modelProblems");
    assert!(problems.is_empty(), "the SDK's models found: {problems:#?}");
    assert!(out.status.success(), "exit status {:?}", out.status);

    // The SDK really went through the protocol: status resources polled, final reads made, every
    // kind of write sent, and the answers checked.
    let requests = &summary["requests"];
    for key in [
        "GET operations",
        "GET DiskOperations",
        "PUT disks",
        "PATCH disks",
        "DELETE disks",
        "PUT virtualMachines",
        "POST attachDetachDataDisks",
        "GET virtualMachineScaleSets (list)",
        "GET disks (list)",
        "PUT snapshots",
    ] {
        assert!(
            requests[key].as_u64().unwrap_or(0) > 0,
            "no {key:?} among {requests}"
        );
    }
    assert!(summary["exchanges"].as_u64().unwrap_or(0) > 80, "{summary}");
    let agents = summary["userAgents"].to_string();
    assert!(agents.contains("azsdk-go-armcompute/v7.3.0"), "{agents}");

    // What the SDK did is what the simulator holds: nothing left attached or behind.
    for n in [AS_A, AS_B, SS_0, SS_1] {
        let vm = sim.arm("GET", &sim.vm_path(n), None);
        let disks = vm.body["properties"]["storageProfile"]["dataDisks"].to_string();
        assert!(!disks.contains("go-sdk"), "{n}: {disks}");
    }
    let sub = format!(
        "/subscriptions/{}/providers/Microsoft.Compute/disks",
        sim.s("subscription")
    );
    let left = sim.arm("GET", &sub, None).body.to_string();
    assert!(!left.contains("go-sdk"), "{left}");
    sim.check_schemas();
}
