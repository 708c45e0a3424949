//! Client secrets and tokens never reach logs (at the most verbose level the binaries allow),
//! errors, or Debug output, through a whole session of work including failures and retries.

mod common;

use common::*;
use flexdisk_azure::{AttachSpec, Caching, Config, DiskParams, DiskSpec, QUIET_DEPENDENCIES};
use serde_json::json;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn secrets_and_tokens_stay_out_of_logs_errors_and_debug() {
    let logs = Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(format!(
            "trace,{QUIET_DEPENDENCIES}"
        )))
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    let sim = sim(&[]);
    let rt = runtime();
    let config = control_plane_config(&sim);
    let secret = sim.field("clientSecret");
    let arm = connect(&rt, &config);
    let token = rt
        .block_on(arm.credential().token(&arm.endpoints.scope()))
        .expect("token")
        .secret()
        .to_string();
    assert!(token.len() > 20);

    // A session: create, a throttling storm, attach, a refusal, detach.
    let p = DiskParams::parse([]).expect("params");
    let spec = DiskSpec::from_params(&p, "pvc-s", 1, None, &arm.resource_group, &arm.location);
    rt.block_on(arm.create_disk(&spec)).expect("disk");
    fault(
        &sim,
        json!({"operation": "VirtualMachines_Get", "times": 2,
               "action": {"kind": "status", "status": 429, "retryAfter": 0}}),
    );
    let vm = rt.block_on(arm.node_vm(AS_A)).expect("vm");
    let a = AttachSpec {
        disk_id: arm.disk_id(&arm.resource_group, "pvc-s").to_string(),
        lun: None,
        caching: Caching::None,
    };
    rt.block_on(arm.attach_detach(&vm.vm, std::slice::from_ref(&a), &[]))
        .expect("attach");
    let b = rt.block_on(arm.node_vm(AS_B)).expect("vm");
    let refused = rt
        .block_on(arm.attach_detach(&b.vm, std::slice::from_ref(&a), &[]))
        .expect_err("owned by A");
    rt.block_on(arm.attach_detach(&vm.vm, &[], std::slice::from_ref(&a.disk_id)))
        .expect("detach");

    // A refused secret.
    let wrong = "wrong-secret-0d6f1c2b9a";
    let bad_config = Config::load_with(
        Path::new(&sim.field("azureJson")),
        &env(&[("AZURE_CLIENT_SECRET", wrong)]),
    )
    .expect("config");
    let bad = connect(&rt, &bad_config);
    let unauthorized = rt
        .block_on(bad.get_disk(&bad.resource_group, "pvc-s"))
        .expect_err("refused");

    let logged = String::from_utf8_lossy(&logs.0.lock().expect("lock")).to_string();
    assert!(
        logged.contains("ARM answered an error worth retrying"),
        "the capture works: {logged}"
    );
    let shown = [
        logged,
        format!("{refused} {refused:?}"),
        format!("{unauthorized} {unauthorized:?}"),
        format!("{arm:?} {bad:?} {config:?} {bad_config:?}"),
        format!("{:?}", arm.credential()),
    ]
    .join("\n");
    for (what, value) in [
        ("client secret", &secret),
        ("token", &token),
        ("wrong secret", &wrong.to_string()),
    ] {
        assert!(!shown.contains(value.as_str()), "the {what} appears");
    }
    // The token's signature alone must not appear either.
    let signature = token.rsplit('.').next().expect("jwt");
    assert!(!shown.contains(signature), "the token's signature appears");
}
