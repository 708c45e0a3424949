//! The Instance Metadata Service of one node: `/metadata/instance` and the managed-identity token
//! endpoint, each demanding `Metadata: true`, every scalar a string as IMDS writes them; beside
//! them, the same identities through the App Service protocol (`IDENTITY_ENDPOINT`).

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
    if req
        .path
        .trim_end_matches('/')
        .eq_ignore_ascii_case(APP_SERVICE_TOKEN_PATH)
    {
        return app_service_token(sim, node, req);
    }
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

/// The identity a token request names, by the query parameters its protocol spells them with.
struct Selectors<'a> {
    client_id: Option<&'a str>,
    object_id: Option<&'a str>,
    resource_id: Option<&'a str>,
}

/// An identity of the node: (client id, object id, resource ID of a user-assigned one).
type NodeIdentity = (String, String, Option<String>);

/// The identity of `node` that `wanted` names — the system-assigned one when it names none (or,
/// without one, the only user-assigned identity) — or the error IMDS gives.
fn select_identity(
    sim: &Simulator,
    node: &str,
    wanted: &Selectors,
) -> Result<NodeIdentity, &'static str> {
    let state = sim.lock();
    let vm = state.vms.get(node).ok_or("Identity not found")?;
    let user = &sim.world.kubelet_identity;
    let user_res = format!(
        "/subscriptions/{}/resourcegroups/{}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{}",
        sim.world.subscription, sim.world.resource_group, user.name
    );
    let is = |v: Option<&str>, want: &str| v.is_some_and(|v| v.eq_ignore_ascii_case(want));
    let wants_user = is(wanted.client_id, &user.client_id)
        || is(wanted.object_id, &user.principal_id)
        || is(wanted.resource_id, &user_res);
    let names_any =
        wanted.client_id.is_some() || wanted.object_id.is_some() || wanted.resource_id.is_some();
    if wants_user {
        Ok((
            user.client_id.clone(),
            user.principal_id.clone(),
            Some(user_res),
        ))
    } else if names_any {
        Err("Identity not found")
    } else if let Some(p) = &vm.system_principal_id {
        Ok((p.clone(), p.clone(), None))
    } else {
        // Without a system-assigned identity, IMDS uses the only user-assigned one.
        Ok((
            user.client_id.clone(),
            user.principal_id.clone(),
            Some(user_res),
        ))
    }
}

/// A signed token for `resource` in the identity's name: (token, issued at, lifetime).
fn issue(sim: &Simulator, resource: &str, identity: &NodeIdentity) -> (String, i64, i64) {
    let now = Simulator::now().timestamp();
    let lifetime = sim.world.token_lifetime_secs as i64;
    let claims = Claims {
        aud: resource.to_string(),
        iss: format!("https://sts.windows.net/{}/", sim.world.tenant),
        tid: sim.world.tenant.clone(),
        appid: identity.0.clone(),
        oid: identity.1.clone(),
        iat: now,
        nbf: now,
        exp: now + lifetime,
    };
    (sim.signer.sign(&claims), now, lifetime)
}

fn token(sim: &Simulator, node: &str, req: &Request) -> Response {
    let Some(resource) = req.query("resource").filter(|r| !r.is_empty()) else {
        return identity_error("Required audience parameter not specified");
    };
    let wanted = Selectors {
        client_id: req.query("client_id"),
        object_id: req.query("object_id"),
        resource_id: req.query("msi_res_id"),
    };
    let identity = match select_identity(sim, node, &wanted) {
        Ok(i) => i,
        Err(e) => return identity_error(e),
    };
    let (token, now, lifetime) = issue(sim, resource, &identity);
    let mut body = json!({
        "access_token": token,
        "client_id": identity.0,
        "expires_in": lifetime.to_string(),
        "expires_on": (now + lifetime).to_string(),
        "ext_expires_in": lifetime.to_string(),
        "not_before": now.to_string(),
        "resource": resource,
        "token_type": "Bearer",
    });
    if let Some(r) = identity.2 {
        body["msi_res_id"] = json!(r);
    }
    Response::json(200, &body)
}

/// The path of the App Service managed-identity protocol's token endpoint on a node's listener
/// (App Service's own `IDENTITY_ENDPOINT` is such a local URL, e.g. `http://127.0.0.1:41741/MSI/token/`).
pub const APP_SERVICE_TOKEN_PATH: &str = "/MSI/token";

/// The App Service managed-identity protocol, as a host that is not a VM (or a client that is
/// not told about IMDS) reaches a managed identity: `GET $IDENTITY_ENDPOINT?api-version=2019-08-01
/// &resource=…[&client_id=|principal_id=|mi_res_id=]` with header `X-IDENTITY-HEADER:
/// $IDENTITY_HEADER` (the header guards against server-side request forgery, so it is checked
/// and no `Metadata` header is asked). The answer carries `access_token`, `expires_on` (seconds
/// since the epoch, as a string), `resource`, `token_type` and `client_id` — the REST endpoint
/// reference of learn.microsoft.com/azure/app-service/overview-managed-identity. azidentity
/// (through MSAL Go's `managedidentity`, `createAppServiceAuthRequest`) picks this protocol when
/// both `IDENTITY_ENDPOINT` and `IDENTITY_HEADER` are set. A user-assigned identity is named by
/// `client_id`, `mi_res_id`, or its object ID as `principal_id` or `object_id` — the spelling
/// Microsoft's own clients send (MSAL Go `createAppServiceAuthRequest` and MSAL Python
/// `_obtain_token_on_app_service` map an object ID to `object_id`); answering such a request with
/// the system-assigned identity would hand the caller another identity's token. Each parameter
/// "can't be used on a request that includes" another, so a request naming two is refused.
/// IMDS's `msi_res_id` is no selector here: the request is for the system-assigned identity.
fn app_service_token(sim: &Simulator, node: &str, req: &Request) -> Response {
    let refuse = |status: u16, message: String| {
        Response::json(status, &json!({"statusCode": status, "message": message}))
    };
    if req.method != http::Method::GET {
        return refuse(405, "Method not allowed.".into());
    }
    match req.header("x-identity-header") {
        None => return refuse(400, "The X-IDENTITY-HEADER header is required.".into()),
        Some(h) if h != identity_header(sim, node) => {
            return refuse(401, "The X-IDENTITY-HEADER header is not valid.".into())
        }
        Some(_) => {}
    }
    match req.query("api-version") {
        Some(APP_SERVICE_API) => {}
        other => {
            return refuse(
                400,
                format!(
                    "api-version {:?} is not supported: use {APP_SERVICE_API}.",
                    other.unwrap_or("")
                ),
            )
        }
    }
    let Some(resource) = req.query("resource").filter(|r| !r.is_empty()) else {
        return refuse(400, "The resource parameter is required.".into());
    };
    let named = ["client_id", "principal_id", "object_id", "mi_res_id"];
    if named.iter().filter(|p| req.query(p).is_some()).count() > 1 {
        return refuse(
            400,
            format!("Only one of {} may name the identity.", named.join(", ")),
        );
    }
    let wanted = Selectors {
        client_id: req.query("client_id"),
        object_id: req.query("principal_id").or(req.query("object_id")),
        resource_id: req.query("mi_res_id"),
    };
    let identity = match select_identity(sim, node, &wanted) {
        Ok(i) => i,
        Err(e) => return refuse(400, e.into()),
    };
    let (token, now, lifetime) = issue(sim, resource, &identity);
    Response::json(
        200,
        &json!({
            "access_token": token,
            "expires_on": (now + lifetime).to_string(),
            "resource": resource,
            "token_type": "Bearer",
            "client_id": identity.0,
        }),
    )
}

/// The only api-version of the App Service protocol that takes `X-IDENTITY-HEADER` (2017-09-01
/// took a `secret` header and is not served).
const APP_SERVICE_API: &str = "2019-08-01";

/// The node's `IDENTITY_HEADER`: derived from the simulator's signing key, so it stays the same
/// across restarts and no other simulator's value works.
pub fn identity_header(sim: &Simulator, node: &str) -> String {
    sim.signer.derive(&format!("identity-header/{node}"))
}
