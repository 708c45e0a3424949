//! The Instance Metadata Service of one node: `/metadata/instance` and the managed-identity token
//! endpoint, each demanding `Metadata: true`, every scalar a string as IMDS writes them.

use crate::http::{Outcome, Request, Response};
use crate::model::VmKind;
use crate::simulator::Simulator;
use crate::tokens::Claims;
use serde_json::json;
use std::sync::Arc;

const INSTANCE_VERSIONS: &[&str] = &[
    "2017-03-01",
    "2017-04-02",
    "2017-08-01",
    "2017-12-01",
    "2018-02-01",
    "2018-04-02",
    "2018-10-01",
    "2019-02-01",
    "2019-03-11",
    "2019-04-30",
    "2019-06-01",
    "2019-06-04",
    "2019-08-01",
    "2019-08-15",
    "2019-11-01",
    "2020-06-01",
    "2020-07-15",
    "2020-09-01",
    "2020-10-01",
    "2020-12-01",
    "2021-01-01",
    "2021-02-01",
    "2021-03-01",
    "2021-05-01",
    "2021-08-01",
    "2021-10-01",
    "2021-11-01",
    "2021-11-15",
    "2021-12-13",
    "2023-07-01",
];

fn bad_request(message: &str) -> Response {
    Response::json(
        400,
        &json!({ "error": message, "newest-versions": ["2023-07-01", "2021-12-13", "2021-11-15"] }),
    )
}

fn identity_error(message: &str) -> Response {
    Response::json(
        400,
        &json!({ "error": "invalid_request", "error_description": message }),
    )
}

pub async fn handle(sim: Arc<Simulator>, node: String, req: Request) -> Outcome {
    serve(&sim, &node, &req).into()
}

fn serve(sim: &Simulator, node: &str, req: &Request) -> Response {
    if req.header("x-forwarded-for").is_some() {
        return bad_request(
            "Bad request. Requests through a proxy (X-Forwarded-For) are not accepted.",
        );
    }
    if !req
        .header("metadata")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    {
        return bad_request("Bad request. Required metadata header not specified");
    }
    if req.method != http::Method::GET {
        return Response::json(405, &json!({"error": "Method not allowed."}));
    }
    let Some(version) = req.query("api-version") else {
        return bad_request("Bad request. api-version was not specified in the request. For more information refer to aka.ms/azureimds");
    };
    if !INSTANCE_VERSIONS.contains(&version) {
        return bad_request("Bad request. api-version is invalid or was not specified in the request. For more information refer to aka.ms/azureimds");
    }
    match req.path.trim_end_matches('/') {
        "/metadata/instance" => instance(sim, node),
        "/metadata/instance/compute" => instance(sim, node).map_body(|b| b["compute"].clone()),
        "/metadata/identity/oauth2/token" => token(sim, node, req),
        _ => Response::json(404, &json!({"error": "Not found"})),
    }
}

trait MapBody {
    fn map_body(self, f: impl FnOnce(serde_json::Value) -> serde_json::Value) -> Response;
}

impl MapBody for Response {
    fn map_body(self, f: impl FnOnce(serde_json::Value) -> serde_json::Value) -> Response {
        let v: serde_json::Value = serde_json::from_slice(&self.body).unwrap_or_default();
        Response::json(self.status.as_u16(), &f(v))
    }
}

fn instance(sim: &Simulator, node: &str) -> Response {
    let state = sim.lock();
    let Some(vm) = state.vms.get(node) else {
        return Response::json(404, &json!({"error": "Not found"}));
    };
    let w = &sim.world;
    let (ss, fault_domain) = match &vm.kind {
        VmKind::ScaleSetInstance {
            scale_set,
            instance_id,
        } => (scale_set.clone(), (instance_id % 5).to_string()),
        VmKind::Standard { .. } => (String::new(), "0".into()),
    };
    let data_disks: Vec<_> = vm
        .data_disks
        .iter()
        .map(|d| {
            json!({
                "lun": d.lun.to_string(),
                "name": d.name,
                "caching": d.caching,
                "createOption": "Attach",
                "diskSizeGB": state.disks.get(&d.disk_key).map(|k| k.size_gb.to_string()).unwrap_or_default(),
                "managedDisk": {"id": d.disk_id, "storageAccountType": state.disks.get(&d.disk_key).map(|k| k.sku.clone()).unwrap_or_default()},
                "writeAcceleratorEnabled": "false",
                "image": {"uri": ""},
                "vhd": {"uri": ""},
            })
        })
        .collect();
    Response::json(
        200,
        &json!({
            "compute": {
                "azEnvironment": "AzurePublicCloud",
                "location": w.location,
                "name": vm.name,
                "offer": "aks",
                "osType": "Linux",
                "placementGroupId": "",
                "platformFaultDomain": fault_domain,
                "platformUpdateDomain": "0",
                "provider": "Microsoft.Compute",
                "publisher": "microsoft-aks",
                "resourceGroupName": w.resource_group,
                "resourceId": vm.id,
                "sku": "aks-ubuntu-2204-gen2",
                "subscriptionId": w.subscription,
                "tags": "",
                "version": "2024.11.01",
                "vmId": vm.vm_id,
                "vmScaleSetName": ss,
                "vmSize": vm.vm_size,
                "zone": vm.zone.clone().unwrap_or_default(),
                "osProfile": {"computerName": vm.node, "adminUsername": "azureuser", "disablePasswordAuthentication": "true"},
                "storageProfile": {"dataDisks": data_disks},
            },
            "network": {"interface": []},
        }),
    )
}

fn token(sim: &Simulator, node: &str, req: &Request) -> Response {
    let Some(resource) = req.query("resource").filter(|r| !r.is_empty()) else {
        return identity_error("Required audience parameter not specified");
    };
    let state = sim.lock();
    let Some(vm) = state.vms.get(node) else {
        return identity_error("Identity not found");
    };
    let user = &sim.world.kubelet_identity;
    let user_res = format!(
        "/subscriptions/{}/resourcegroups/{}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{}",
        sim.world.subscription, sim.world.resource_group, user.name
    );
    let wants_user = req
        .query("client_id")
        .is_some_and(|c| c.eq_ignore_ascii_case(&user.client_id))
        || req
            .query("object_id")
            .is_some_and(|o| o.eq_ignore_ascii_case(&user.principal_id))
        || req
            .query("msi_res_id")
            .is_some_and(|r| r.eq_ignore_ascii_case(&user_res));
    let names_any = ["client_id", "object_id", "msi_res_id"]
        .iter()
        .any(|k| req.query(k).is_some());
    let (client_id, object_id, res_id) = if wants_user {
        (
            user.client_id.clone(),
            user.principal_id.clone(),
            Some(user_res),
        )
    } else if names_any {
        return identity_error("Identity not found");
    } else if let Some(p) = &vm.system_principal_id {
        (p.clone(), p.clone(), None)
    } else {
        // Without a system-assigned identity, IMDS uses the only user-assigned one.
        (
            user.client_id.clone(),
            user.principal_id.clone(),
            Some(user_res),
        )
    };
    let now = Simulator::now().timestamp();
    let lifetime = sim.world.token_lifetime_secs as i64;
    let claims = Claims {
        aud: resource.to_string(),
        iss: format!("https://sts.windows.net/{}/", sim.world.tenant),
        tid: sim.world.tenant.clone(),
        appid: client_id.clone(),
        oid: object_id,
        iat: now,
        nbf: now,
        exp: now + lifetime,
    };
    let mut body = json!({
        "access_token": sim.signer.sign(&claims),
        "client_id": client_id,
        "expires_in": lifetime.to_string(),
        "expires_on": (now + lifetime).to_string(),
        "ext_expires_in": lifetime.to_string(),
        "not_before": now.to_string(),
        "resource": resource,
        "token_type": "Bearer",
    });
    if let Some(r) = res_id {
        body["msi_res_id"] = json!(r);
    }
    Response::json(200, &body)
}
