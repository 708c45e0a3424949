//! Conformance with Azure's official Python SDK: the program in `sim/tests/py-sdk/`
//! (azure-mgmt-compute over azure-identity and azure-core), installed from PyPI by its `build`
//! script into virtualenvs outside the clone, runs against the real simulator over loopback at
//! both api-version sets the simulator serves — azure-mgmt-compute 33.1.0 (compute 2024-07-01,
//! disks 2024-03-02, what flexdisk speaks) and 37.2.0 (2025-04-01 and 2025-01-02): a client
//! secret against the simulated Entra ID and the node's managed identity through the App Service
//! protocol and IMDS (each way of naming the identity must yield that identity's token), disks
//! created, listed, attached through a VM's full-model PUT with If-Match and its PATCH, a
//! scale-set instance's PUT and `attachDetachDataDisks` on both, grown, snapshotted, deleted; a
//! read and a poll throttled (429 with Retry-After, waited out), a 503, operations that fail
//! after they were accepted, refusals — each long-running operation through the SDK's pollers.
//! Every answer the SDK received is decoded into the SDK's own model and checked (check.py):
//! fields the model does not know (its `additional_properties`, or dropped from a flattened
//! `properties`), values it reads as something else, fields callers read and did not get.

mod common;
use common::*;
use serde_json::Value;
use std::path::Path;
use std::time::Instant;

/// Runs the program with one SDK set and checks it spoke that set's api-versions.
fn drive(set: &str, disk_api: &str, compute_api: &str, agent: &str) {
    let started = Instant::now();
    let cache = sdk::build("py-sdk/build");
    let built = started.elapsed();
    let sim = Sim::start(&[]);
    let python = format!("{cache}/{set}/bin/python");
    let mut cmd = sdk::program(&sim, &python, SS_0);
    cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py-sdk/conformance.py"))
        // The simulator's private CA for Entra ID's TLS endpoint (requests reads it).
        .env("REQUESTS_CA_BUNDLE", sim.s("caBundle"))
        // Nothing written into the clone, nothing read from a user's site-packages.
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONNOUSERSITE", "1");
    let what = format!("python SDK {set}");
    let summary = sdk::run(&sim, cmd, &what, 13, built);

    // Every request went out at the set's api-versions.
    for (kind, versions) in summary["apiVersions"].as_object().expect("apiVersions") {
        let want = if kind.starts_with("disks")
            || kind.starts_with("snapshots")
            || kind == "DiskOperations"
        {
            disk_api
        } else {
            compute_api
        };
        assert_eq!(versions, &serde_json::json!([want]), "{what}: {kind}");
    }
    sdk::assert_requests(
        &summary,
        &[
            "PUT disks",
            "PATCH disks",
            "DELETE disks",
            "GET disks (list)",
            "PUT virtualMachines",
            "PATCH virtualMachines",
            "POST attachDetachDataDisks",
            "GET operations",
            "GET operations (monitor)",
            "GET DiskOperations",
            "GET virtualMachineScaleSets (list)",
            "PUT snapshots",
            "DELETE snapshots",
        ],
    );
    // The answers were checked as what they are, not skipped.
    let checked = &summary["checked"];
    for model in [
        "Disk",
        "DiskList",
        "Snapshot",
        "VirtualMachine",
        "VirtualMachineScaleSet",
        "VirtualMachineScaleSetVM",
        "StorageProfile",
        "status",
        "error",
    ] {
        assert!(
            checked[model].as_u64().unwrap_or(0) > 0,
            "{what}: no {model} answer checked: {checked}"
        );
    }
    assert_eq!(
        checked.get("unchecked"),
        None::<&Value>,
        "{what}: {checked}"
    );
    assert!(summary["exchanges"].as_u64().unwrap_or(0) > 80, "{summary}");
    let agents = summary["userAgents"].to_string();
    assert!(agents.contains(agent), "{what}: {agents}");

    sdk::assert_nothing_left(&sim, &[AS_A, AS_B, SS_0, SS_1], "py-sdk");
    sim.check_schemas();
}

#[test]
fn azure_python_sdk_at_the_2025_api_versions_drives_the_simulator() {
    drive(
        "2025",
        DISK_API_2025,
        VM_API_2025,
        "azsdk-python-mgmt-compute/37.2.0",
    );
}

#[test]
fn azure_python_sdk_at_the_2024_api_versions_drives_the_simulator() {
    drive(
        "2024",
        DISK_API,
        VM_API,
        "azsdk-python-azure-mgmt-compute/33.1.0",
    );
}
