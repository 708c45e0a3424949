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
use std::time::Instant;

#[test]
fn azure_go_sdk_drives_the_simulator() {
    let started = Instant::now();
    let program = sdk::build("go-sdk/build");
    let built = started.elapsed();
    let sim = Sim::start(&[]);
    let mut cmd = sdk::program(&sim, &program, SS_0);
    // The simulator's private CA for Entra ID's TLS endpoint (Go's crypto/x509 reads it).
    cmd.env("SSL_CERT_FILE", sim.s("caBundle"));
    let summary = sdk::run(&sim, cmd, "go SDK", 14, built);

    // The SDK really went through the protocol: status resources polled, final reads made, every
    // kind of write sent, and the answers checked.
    sdk::assert_requests(
        &summary,
        &[
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
        ],
    );
    assert!(summary["exchanges"].as_u64().unwrap_or(0) > 80, "{summary}");
    let agents = summary["userAgents"].to_string();
    assert!(agents.contains("azsdk-go-armcompute/v7.3.0"), "{agents}");

    sdk::assert_nothing_left(&sim, &[AS_A, AS_B, SS_0, SS_1], "go-sdk");
    sim.check_schemas();
}
