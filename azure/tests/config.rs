//! Cloud configs as clusters really have them, the environment overrides, and broken files with
//! the exact words the operator reads.

mod common;

use common::env;
use flexdisk_azure::{Auth, CloudName, Config, VmType};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Parses text as if it were /etc/kubernetes/azure.json; the error text.
fn broken(text: &str) -> String {
    Config::parse(Path::new("/etc/kubernetes/azure.json"), text, &env(&[]))
        .expect_err("must be refused")
        .to_string()
}

const BASE: &str =
    r#""tenantId":"t-1","subscriptionId":"s-1","resourceGroup":"rg","location":"westeurope""#;

#[test]
fn aks_node_with_its_kubelet_identity() {
    let c = Config::load_with(&fixture("aks-managed-identity.json"), &env(&[])).expect("aks");
    assert_eq!(c.cloud, CloudName::Public);
    assert_eq!(c.vm_type, VmType::Vmss);
    assert_eq!(c.resource_group, "MC_prod-rg_prod-aks_westeurope");
    assert_eq!(c.location, "westeurope");
    assert_eq!(
        c.auth,
        Auth::ManagedIdentity {
            client_id: Some("8d3f0e2a-5b6c-4d7e-9f80-1a2b3c4d5e6f".into())
        }
    );
    assert_eq!(c.imds_endpoint.as_str(), "http://169.254.169.254/");
    assert!(!c.file_holds_secret, "\"msi\" is not a secret");
}

#[test]
fn aks_engine_service_principal() {
    let c = Config::load_with(&fixture("aks-engine-client-secret.json"), &env(&[]))
        .expect("aks-engine");
    assert_eq!(c.vm_type, VmType::Standard);
    match &c.auth {
        Auth::ClientSecret { client_id, secret } => {
            assert_eq!(client_id, "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d");
            assert_eq!(secret.expose(), "Xq8~fixture-secret-value-1234567890abcdef");
        }
        other => panic!("{other:?}"),
    }
    assert!(c.file_holds_secret);
    let shown = format!("{c:?}");
    assert!(
        !shown.contains("fixture-secret-value"),
        "Debug shows the secret: {shown}"
    );
}

#[test]
fn capz_workload_identity_in_china_cloud() {
    let c = Config::load_with(&fixture("capz-workload-identity.json"), &env(&[])).expect("capz");
    assert_eq!(c.cloud, CloudName::China);
    assert_eq!(c.vm_type, VmType::VmssFlex);
    assert_eq!(
        c.auth,
        Auth::WorkloadIdentity {
            client_id: "5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9".into(),
            token_file: "/var/run/secrets/azure/tokens/azure-identity-token".into(),
        }
    );
}

#[test]
fn the_workload_identity_webhook_overrides_a_node_file() {
    let c = Config::load_with(
        &fixture("aks-managed-identity.json"),
        &env(&[
            ("AZURE_CLIENT_ID", "c-9"),
            ("AZURE_TENANT_ID", "t-9"),
            (
                "AZURE_FEDERATED_TOKEN_FILE",
                "/var/run/secrets/azure/tokens/azure-identity-token",
            ),
            ("AZURE_AUTHORITY_HOST", "https://login.microsoftonline.com/"),
        ]),
    )
    .expect("webhook env");
    assert_eq!(c.tenant_id, "t-9");
    assert_eq!(
        c.auth,
        Auth::WorkloadIdentity {
            client_id: "c-9".into(),
            token_file: "/var/run/secrets/azure/tokens/azure-identity-token".into()
        }
    );
    assert_eq!(
        c.authority_host.map(|u| u.to_string()).as_deref(),
        Some("https://login.microsoftonline.com/")
    );
    let c = Config::load_with(
        &fixture("aks-managed-identity.json"),
        &env(&[
            ("AZURE_CLIENT_ID", "c-7"),
            ("AZURE_CLIENT_SECRET", "s3cret"),
            ("AZURE_SUBSCRIPTION_ID", "s-7"),
            ("IMDS_ENDPOINT", "http://127.0.0.1:40342"),
        ]),
    )
    .expect("secret env");
    assert!(matches!(&c.auth, Auth::ClientSecret { client_id, .. } if client_id == "c-7"));
    assert_eq!(c.subscription_id, "s-7");
    assert_eq!(c.imds_endpoint.as_str(), "http://127.0.0.1:40342/");
}

#[test]
fn azure_stack_needs_its_resource_manager_endpoint() {
    let text =
        format!(r#"{{"cloud":"AzureStackCloud",{BASE},"aadClientId":"a","aadClientSecret":"b"}}"#);
    assert_eq!(
        broken(&text),
        "the cloud config /etc/kubernetes/azure.json lacks `resourceManagerEndpoint`: AzureStackCloud \
         publishes its endpoints there; set it to the cloud's Resource Manager URL"
    );
    let text = format!(
        r#"{{"cloud":"AzureStackCloud","resourceManagerEndpoint":"https://management.local.azurestack.external/",{BASE},"aadClientId":"a","aadClientSecret":"b"}}"#
    );
    let c = Config::parse(Path::new("azure.json"), &text, &env(&[])).expect("stack");
    assert_eq!(c.cloud, CloudName::Custom);
}

#[test]
fn broken_files_say_which_field_and_what_to_do() {
    let cases: Vec<(String, &str)> = vec![
        (
            r#"{"cloud": "AzurePublicCloud", }"#.into(),
            "the cloud config /etc/kubernetes/azure.json is not a valid JSON object: syntax error at line 1 column 31",
        ),
        (
            "[]".into(),
            "the cloud config /etc/kubernetes/azure.json is not a valid JSON object: the top level must be an object",
        ),
        (
            r#"{"tenantId":"t","resourceGroup":"rg","location":"l","aadClientId":"a","aadClientSecret":"b"}"#.into(),
            "the cloud config /etc/kubernetes/azure.json lacks `subscriptionId`: the subscription that holds the cluster's disks and VMs",
        ),
        (
            format!(r#"{{{BASE},"vmType":"vmas","aadClientId":"a","aadClientSecret":"b"}}"#),
            "`vmType` in the cloud config /etc/kubernetes/azure.json is \"vmas\": use standard, vmss or vmssflex",
        ),
        (
            format!(r#"{{{BASE},"useManagedIdentityExtension":"true"}}"#),
            "`useManagedIdentityExtension` in the cloud config /etc/kubernetes/azure.json must be true or false, found a string",
        ),
        (
            format!(r#"{{{BASE},"cloud":"AzureGermanCloud","aadClientId":"a","aadClientSecret":"b"}}"#),
            "`cloud` in the cloud config /etc/kubernetes/azure.json names an unknown cloud \"AZUREGERMANCLOUD\": use \
             AzurePublicCloud, AzureChinaCloud, AzureUSGovernmentCloud, or AzureStackCloud with resourceManagerEndpoint",
        ),
        (
            format!(r#"{{{BASE},"aadClientId":"a"}}"#),
            "the cloud config /etc/kubernetes/azure.json lacks `aadClientSecret`: the service principal's secret \
             (or AZURE_CLIENT_SECRET); for a managed identity set useManagedIdentityExtension",
        ),
        (
            format!(r#"{{{BASE}}}"#),
            "the cloud config /etc/kubernetes/azure.json lacks `aadClientId`: set aadClientId and aadClientSecret \
             (a service principal), useManagedIdentityExtension (the VM's identity) or \
             useFederatedWorkloadIdentityExtension (workload identity)",
        ),
        (
            format!(r#"{{{BASE},"aadClientId":"msi","aadClientSecret":"msi"}}"#),
            "`aadClientId` in the cloud config /etc/kubernetes/azure.json is \"msi\" but useManagedIdentityExtension \
             is not true: set it to use the VM's identity",
        ),
        (
            format!(
                r#"{{{BASE},"useManagedIdentityExtension":true,"userAssignedIdentityID":"/subscriptions/s/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/kubelet"}}"#
            ),
            "`userAssignedIdentityID` in the cloud config /etc/kubernetes/azure.json must be the identity's client ID \
             (a GUID), not its resource ID",
        ),
        (
            format!(r#"{{{BASE},"resourceManagerEndpoint":"management.local","aadClientId":"a","aadClientSecret":"b"}}"#),
            "`resourceManagerEndpoint` in the cloud config /etc/kubernetes/azure.json is not a URL (relative URL without a base): management.local",
        ),
        (
            r#"{"subscriptionId":"s","resourceGroup":"rg","location":"l","aadClientId":"a","aadClientSecret":"b"}"#.into(),
            "the cloud config /etc/kubernetes/azure.json lacks `tenantId`: the Entra ID tenant of the service principal or workload identity",
        ),
        (
            format!(r#"{{{BASE},"location":42,"aadClientId":"a","aadClientSecret":"b"}}"#),
            "`location` in the cloud config /etc/kubernetes/azure.json must be a string, found a number",
        ),
    ];
    for (text, want) in cases {
        assert_eq!(broken(&text), want, "for {text}");
    }
}

#[test]
fn a_secret_in_a_bad_field_is_never_quoted() {
    let e = broken(&format!(
        r#"{{{BASE},"aadClientId":"a","aadClientSecret":"b","useManagedIdentityExtension":"hunter2-leak"}}"#
    ));
    assert!(!e.contains("hunter2-leak"), "{e}");
    let e = broken(r#"{"aadClientSecret": "hunter2-leak" "#);
    assert!(!e.contains("hunter2-leak"), "{e}");
}

#[test]
fn missing_file_and_world_readable_secret() {
    let e = Config::load_with(Path::new("/nonexistent/azure.json"), &env(&[]))
        .expect_err("missing")
        .to_string();
    assert_eq!(
        e,
        "cannot read the cloud config /nonexistent/azure.json: No such file or directory (os error 2) \
         (set --cloud-config or AZURE_CLOUD_CONFIG to its path)"
    );

    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("azure.json");
    std::fs::copy(fixture("aks-engine-client-secret.json"), &path).expect("copy");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let c = Config::load_with(&path, &env(&[])).expect("loads");
    assert_eq!(c.warnings.len(), 1);
    assert!(
        c.warnings[0].contains("readable by every user (mode 644); chmod 600 it"),
        "{:?}",
        c.warnings
    );
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    assert!(Config::load_with(&path, &env(&[]))
        .expect("loads")
        .warnings
        .is_empty());

    // A managed-identity file is no secret: no warning at 0644.
    let mi = dir.path().join("mi.json");
    std::fs::copy(fixture("aks-managed-identity.json"), &mi).expect("copy");
    std::fs::set_permissions(&mi, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    assert!(Config::load_with(&mi, &env(&[]))
        .expect("loads")
        .warnings
        .is_empty());
}
