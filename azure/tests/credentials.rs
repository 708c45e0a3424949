//! Each credential kind against the simulator's Entra ID (client secret, workload identity) and
//! IMDS (system- and user-assigned managed identity), and what a refused credential looks like.

mod common;

use common::*;
use flexdisk_azure::{Arm, Auth, AzureError, Config};
use serde_json::Value;
use std::path::Path;

/// Proves a credential works: a read of the cluster's resource group through ARM.
fn read_works(rt: &tokio::runtime::Runtime, arm: &Arm) -> Result<(), AzureError> {
    rt.block_on(arm.get_disk(&arm.resource_group, "pvc-probe"))
        .map(|_| ())
}

#[test]
fn client_secret_from_the_control_plane_config() {
    let sim = sim(&[]);
    let rt = runtime();
    let config = control_plane_config(&sim);
    assert!(matches!(config.auth, Auth::ClientSecret { .. }));
    let arm = connect(&rt, &config);
    assert_eq!(arm.credential().kind(), "client secret");
    // The custom cloud's endpoints came from its metadata document.
    assert!(arm
        .endpoints
        .authority_host
        .as_str()
        .starts_with("https://127.0.0.1:"));
    read_works(&rt, &arm).expect("service principal reads");
}

#[test]
fn a_wrong_secret_is_unauthorized_and_names_no_secret() {
    let sim = sim(&[]);
    let rt = runtime();
    let path = sim.field("azureJson");
    let bogus = "definitely-not-the-secret-7f3a";
    let config = Config::load_with(Path::new(&path), &env(&[("AZURE_CLIENT_SECRET", bogus)]))
        .expect("config");
    let arm = connect(&rt, &config);
    match read_works(&rt, &arm) {
        Err(e @ AzureError::Unauthorized { .. }) => {
            let shown = format!("{e} {e:?}");
            assert!(shown.contains("client secret"), "{shown}");
            assert!(!shown.contains(bogus), "the secret leaked: {shown}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn managed_identity_user_assigned_and_system_assigned_through_imds() {
    let sim = sim(&[]);
    let rt = runtime();
    let user = node_config(&sim, SS_0);
    assert!(
        matches!(&user.auth, Auth::ManagedIdentity { client_id: Some(_) }),
        "{:?}",
        user.auth
    );
    let arm = connect(&rt, &user);
    assert_eq!(arm.credential().kind(), "user-assigned managed identity");
    read_works(&rt, &arm).expect("kubelet identity reads");

    // The same node file without userAssignedIdentityID: the VM's system-assigned identity.
    let dir = tempfile::tempdir().expect("tmp");
    let mut file: Value = serde_json::from_slice(
        &std::fs::read(sim.node_field(SS_0, "azureJson")).expect("node azure.json"),
    )
    .expect("json");
    file.as_object_mut()
        .expect("object")
        .remove("userAssignedIdentityID");
    let path = json_file(dir.path(), "azure.json", &file);
    let imds = sim.node_field(SS_0, "imds");
    let system = Config::load_with(&path, &env(&[("IMDS_ENDPOINT", &imds)])).expect("config");
    let arm = connect(&rt, &system);
    assert_eq!(arm.credential().kind(), "system-assigned managed identity");
    read_works(&rt, &arm).expect("system identity reads");

    // An identity the VM does not have is refused by IMDS.
    let stranger = Config::load_with(
        &path,
        &env(&[
            ("IMDS_ENDPOINT", &imds),
            ("AZURE_CLIENT_ID", "00000000-0000-4000-8000-000000000000"),
        ]),
    )
    .expect("config");
    let arm = connect(&rt, &stranger);
    assert_eq!(
        read_works(&rt, &arm).expect_err("unknown identity").label(),
        "unauthorized"
    );
}

#[test]
fn workload_identity_rereads_the_token_file() {
    let sim = sim(&[]);
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tmp");
    let token_file = dir.path().join("azure-identity-token");
    std::fs::write(&token_file, "not-a-jwt").expect("write");
    let client_id = sim.field("clientId");
    let config = Config::load_with(
        Path::new(&sim.field("azureJson")),
        &env(&[
            (
                "AZURE_FEDERATED_TOKEN_FILE",
                token_file.to_str().expect("utf-8"),
            ),
            ("AZURE_CLIENT_ID", &client_id),
            ("AZURE_TENANT_ID", &sim.field("tenant")),
        ]),
    )
    .expect("config");
    assert!(matches!(config.auth, Auth::WorkloadIdentity { .. }));
    let arm = connect(&rt, &config);
    assert_eq!(arm.credential().kind(), "workload identity");
    let refused = read_works(&rt, &arm).expect_err("a garbage assertion is refused");
    assert_eq!(refused.label(), "unauthorized", "{refused}");

    // kubelet rotates the projected token; the same credential picks the new one up.
    let (status, fresh) = sim
        .control("POST", "/federated-token?ttlSecs=600", None)
        .expect("fresh assertion");
    assert_eq!(status, 200);
    std::fs::write(&token_file, fresh["token"].as_str().expect("token")).expect("write");
    read_works(&rt, &arm).expect("the rotated token is used");
}
