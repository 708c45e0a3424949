//! The ARM compute front door: authentication, routing, api-version, fault injection, throttling,
//! then the resource handlers.

pub mod disks;
pub mod errors;
pub mod lro;
pub mod route;
pub mod scale_sets;
pub mod snapshots;
pub mod vms;

use crate::faults::FaultAction;
use crate::http::{Outcome, Request, Response};
use crate::model::ErrorBody;
use crate::simulator::Simulator;
use crate::tokens::{Claims, TokenError};
use errors::{error, ArmResult};
use http::Method;
use route::{Route, Target};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// Audiences ARM accepts in a token (public cloud names; the simulator stands in for them).
const AUDIENCES: &[&str] = &[
    "https://management.azure.com/",
    "https://management.azure.com",
    "https://management.core.windows.net/",
    "https://management.core.windows.net",
];

pub async fn handle(sim: Arc<Simulator>, req: Request) -> Outcome {
    if req.method == Method::GET && req.path.eq_ignore_ascii_case("/metadata/endpoints") {
        return metadata_endpoints(&sim, req.query("api-version")).into();
    }
    let request_id = uuid::Uuid::new_v4().to_string();
    let mut outcome = front_door(&sim, &req).await;
    journal(&sim, &req, &outcome);
    if let Outcome::Reply(r) = &mut outcome {
        r.headers.push((
            http::HeaderName::from_static("x-ms-request-id"),
            request_id.clone(),
        ));
        r.headers.push((
            http::HeaderName::from_static("x-ms-correlation-request-id"),
            request_id,
        ));
        if let Some(client) = req.header("x-ms-client-request-id") {
            r.headers.push((
                http::HeaderName::from_static("x-ms-client-request-id"),
                client.to_string(),
            ));
        }
    }
    outcome
}

/// Notes the request and its answer in the simulator's journal.
fn journal(sim: &Simulator, req: &Request, outcome: &Outcome) {
    let (status, body, reset) = match outcome {
        Outcome::Reply(r) => (r.status.as_u16(), r.body.as_slice(), false),
        Outcome::Stream(r, _) => (r.status.as_u16(), &[][..], false),
        Outcome::Reset => (0, &[][..], true),
    };
    let (disk_size_gb, state) = crate::journal::Entry::describe(body);
    sim.journal.record(crate::journal::Entry {
        at: Simulator::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        peer: req.peer.map(|p| p.to_string()),
        method: req.method.to_string(),
        path: req.path.clone(),
        status,
        client_request_id: req.header("x-ms-client-request-id").map(str::to_string),
        user_agent: req.header("user-agent").map(str::to_string),
        disk_size_gb,
        state,
        reset,
    });
}

async fn front_door(sim: &Arc<Simulator>, req: &Request) -> Outcome {
    if let Err(e) = authenticate(sim, req) {
        let www = format!(
            "Bearer authorization_uri=\"{}/{}\", error=\"invalid_token\", error_description=\"{}\"",
            sim.login_url(),
            sim.world.tenant,
            e.message
        );
        return e.response().with_header("www-authenticate", www).into();
    }
    let route = match route::route(&req.method, &req.path, &sim.world.subscription) {
        Ok(r) => r,
        Err(e) => return e.response().into(),
    };
    sim.counters.count(route.operation, route.write);
    if route.write {
        if let Some(object) = written_object(&req.path) {
            sim.counters.count_write_to(&object);
        }
    }
    let api_version = match check_api_version(req, &route) {
        Ok(v) => v,
        Err(e) => return e.response().into(),
    };
    let mut planted = None;
    let mut lose_response = false;
    for action in sim
        .faults
        .fire(req.method.as_str(), route.operation, &req.path)
    {
        match action {
            FaultAction::Latency { ms } => tokio::time::sleep(Duration::from_millis(ms)).await,
            FaultAction::Reset => return Outcome::Reset,
            FaultAction::LoseResponse => lose_response = true,
            FaultAction::Status {
                status,
                code,
                message,
                retry_after,
            } => return injected_status(status, code, message, retry_after).into(),
            FaultAction::LroFail { code, message } => {
                planted = Some(error(
                    500,
                    code.as_deref().unwrap_or("InternalExecutionError"),
                    message.unwrap_or_else(|| {
                        "An internal execution error occurred. Please retry later.".into()
                    }),
                ));
            }
        }
    }
    let verdict = sim.throttle.take(route.write);
    let limits = [
        (
            "x-ms-ratelimit-remaining-subscription-reads",
            verdict.remaining_reads,
        ),
        (
            "x-ms-ratelimit-remaining-subscription-writes",
            verdict.remaining_writes,
        ),
    ];
    let mut response = if verdict.allowed {
        let call = Call {
            req,
            route: &route,
            api_version,
        };
        dispatch(sim, &call, planted).unwrap_or_else(|e| e.response())
    } else {
        let kind = if route.write { "write" } else { "read" };
        error(
            429,
            "SubscriptionRequestsThrottled",
            format!(
                "Number of '{kind}' requests for subscription '{}' exceeded the limit of '{}' for time interval. \
                 Please try again after '{}' seconds.",
                sim.world.subscription,
                if route.write { sim.throttle.budget().writes } else { sim.throttle.budget().reads },
                verdict.retry_after
            ),
        )
        .response()
        .with_header("retry-after", verdict.retry_after.to_string())
    };
    for (name, left) in limits {
        response = response.with_header(name, left.to_string());
    }
    if lose_response {
        return Outcome::Reset;
    }
    response.into()
}

fn injected_status(
    status: u16,
    code: Option<String>,
    message: Option<String>,
    retry_after: Option<u64>,
) -> Response {
    let default_code = match status {
        429 => "TooManyRequests",
        500 => "InternalServerError",
        502 => "BadGateway",
        503 => "ServiceUnavailable",
        504 => "GatewayTimeout",
        _ => "InjectedFault",
    };
    let r = error(
        status,
        code.as_deref().unwrap_or(default_code),
        message
            .unwrap_or_else(|| format!("The simulator answered {status} as a fault rule asked.")),
    )
    .response();
    match (status, retry_after) {
        (_, Some(s)) => r.with_header("retry-after", s.to_string()),
        (429 | 503, None) => r.with_header("retry-after", "1"),
        _ => r,
    }
}

fn authenticate(sim: &Simulator, req: &Request) -> ArmResult<Claims> {
    let Some(auth) = req.header("authorization") else {
        return Err(error(
            401,
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is missing.",
        ));
    };
    let Some(token) = auth
        .strip_prefix("Bearer ")
        .or_else(|| auth.strip_prefix("bearer "))
    else {
        return Err(error(
            401,
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is provided in an invalid format.",
        ));
    };
    let now = Simulator::now().timestamp();
    let claims: Claims = sim.signer.verify(token.trim(), now).map_err(|e| match e {
        TokenError::Expired => error(
            401,
            "ExpiredAuthenticationToken",
            "The access token expiry UTC time is earlier than current UTC time.",
        ),
        TokenError::Malformed | TokenError::BadSignature => error(
            401,
            "InvalidAuthenticationToken",
            "The access token is invalid.",
        ),
    })?;
    if !AUDIENCES.contains(&claims.aud.as_str()) {
        return Err(error(
            401,
            "InvalidAuthenticationTokenAudience",
            format!(
                "The access token has been obtained for wrong audience or resource '{}'. It should exactly match \
                 with one of the allowed audiences 'https://management.core.windows.net/','https://management.azure.com/'.",
                claims.aud
            ),
        ));
    }
    if claims.tid != sim.world.tenant {
        return Err(error(
            401,
            "InvalidAuthenticationTokenTenant",
            format!(
                "The access token is from the wrong issuer '{}'. It must match the tenant associated with this subscription.",
                claims.iss
            ),
        ));
    }
    Ok(claims)
}

/// One request on its way through the handlers: what it asks, and at which api-version (the
/// version picks the specification its body and answer are checked against, and the version
/// the operation URLs it is given carry).
pub struct Call<'a> {
    pub req: &'a Request,
    pub route: &'a Route,
    pub api_version: &'static str,
}

/// The api-version the request names, if the operation is served at it (ARM matches it exactly).
fn check_api_version(req: &Request, route: &Route) -> ArmResult<&'static str> {
    match req.query("api-version") {
        None => Err(error(
            400,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        )),
        Some(v) => route
            .api_versions
            .iter()
            .find(|served| **served == v)
            .copied()
            .ok_or_else(|| {
                error(
                    400,
                    "NoRegisteredProviderFound",
                    format!(
                        "No registered resource provider found for API version '{v}' of operation '{}'. \
                         The supported api-versions are '{}'.",
                        route.operation,
                        route.api_versions.join(", ")
                    ),
                )
            }),
    }
}

/// The request body as JSON, checked against the operation's model in the specification of the
/// request's api-version.
pub fn body(sim: &Simulator, call: &Call) -> ArmResult<Value> {
    let (req, operation) = (call.req, call.route.operation);
    if req.body.is_empty() {
        return Err(error(
            400,
            "InvalidRequestContent",
            "The request content was empty; a JSON body is required.",
        ));
    }
    let value: Value = serde_json::from_slice(&req.body).map_err(|e| {
        error(
            400,
            "InvalidRequestContent",
            format!("The request content was invalid and could not be deserialized: {e}"),
        )
    })?;
    let mut problems = sim.specs.check_request(call.api_version, operation, &value);
    problems.retain(|p| !waived(operation, p));
    if let Some(first) = problems.first() {
        let field = first.split(':').next().unwrap_or_default().to_string();
        return Err(error(
            400,
            "InvalidRequestContent",
            format!("The request content was invalid: {}", problems.join("; ")),
        )
        .with_target(&field));
    }
    Ok(value)
}

/// Requirements of the specification ARM does not enforce. `location` is required by the VM and
/// scale-set VM models, yet an update of an existing VM without it is taken: cloud-provider-azure
/// refreshes a VM with an empty PUT (`UpdateVM`: `CreateOrUpdate(…, armcompute.VirtualMachine{})`
/// and `VirtualMachineScaleSetVMsClient.Update(…, VirtualMachineScaleSetVM{})`) and attaches and
/// detaches on a scale-set instance with a PUT of only `properties.storageProfile.dataDisks`
/// (pkg/provider/azure_controller_standard.go and azure_controller_vmss.go), in production. The
/// simulator creates no VMs, so every such PUT is an update.
fn waived(operation: &str, problem: &str) -> bool {
    matches!(
        operation,
        "VirtualMachines_CreateOrUpdate" | "VirtualMachineScaleSetVMs_Update"
    ) && problem == "location: required but missing"
}

fn dispatch(sim: &Arc<Simulator>, call: &Call, planted: Option<ErrorBody>) -> ArmResult<Response> {
    let route = call.route;
    if let Some(rg) = route.target.resource_group() {
        if !sim.world.resource_group_exists(rg) {
            return Err(error(
                404,
                "ResourceGroupNotFound",
                format!("Resource group '{rg}' could not be found."),
            ));
        }
    }
    let api = call.api_version;
    match (&route.target, call.req.method.as_str()) {
        (Target::AllDisks, _) => disks::list(sim, api, None),
        (Target::Disks { rg }, _) => disks::list(sim, api, Some(rg)),
        (Target::Disk { rg, name }, "GET") => disks::get(sim, api, rg, name),
        (Target::Disk { rg, name }, "PUT") => {
            disks::put(sim, api, rg, name, body(sim, call)?, planted)
        }
        (Target::Disk { rg, name }, "PATCH") => {
            disks::patch(sim, api, rg, name, body(sim, call)?, planted)
        }
        (Target::Disk { rg, name }, _) => disks::delete(sim, api, rg, name, planted),
        (Target::Snapshots { rg }, _) => snapshots::list(sim, rg),
        (Target::Snapshot { rg, name }, "GET") => snapshots::get(sim, rg, name),
        (Target::Snapshot { rg, name }, "PUT") => {
            snapshots::put(sim, api, rg, name, body(sim, call)?, planted)
        }
        (Target::Snapshot { rg, name }, _) => snapshots::delete(sim, api, rg, name, planted),
        (Target::Vms { rg }, _) => vms::list(sim, rg, None),
        (Target::ScaleSets { rg }, _) => scale_sets::list(sim, rg),
        (Target::ScaleSet { rg, name }, _) => scale_sets::get(sim, rg, name),
        (Target::ScaleSetVms { rg, scale_set }, _) => vms::list(sim, rg, Some(scale_set)),
        (Target::Vm { .. } | Target::ScaleSetVm { .. }, "GET") => vms::get(sim, &route.target),
        (Target::Vm { .. } | Target::ScaleSetVm { .. }, _) => {
            vms::update(sim, call, body(sim, call)?, planted)
        }
        (Target::VmAttachDetach { .. } | Target::ScaleSetVmAttachDetach { .. }, _) => {
            vms::attach_detach(sim, call, body(sim, call)?, planted)
        }
        (Target::Operation { location, id, disk }, _) => lro::poll(
            sim,
            api,
            location,
            id,
            *disk,
            call.req
                .query("monitor")
                .is_some_and(|v| v.eq_ignore_ascii_case("true")),
        ),
    }
}

/// The name of the simulated cloud in its metadata: the `cloud` its cloud configs give
/// (`crate::serve`), as clients pick their entry of the array form by that name.
pub const CLOUD_NAME: &str = "AzureStackCloud";

/// `GET {arm}/metadata/endpoints`: how clients of a custom cloud learn its login endpoint and
/// token audience from the resource manager URL alone. Resource Manager answers two forms, by
/// api-version: without one, or at `2015-01-01` (the version Azure Stack Hub's documentation
/// uses), one object `{galleryEndpoint, graphEndpoint, portalEndpoint, authentication:
/// {loginEndpoint, audiences}}`; from `2019-05-01` on, an array of clouds, each `{name,
/// resourceManager, authentication: {loginEndpoint, audiences, tenant, identityProvider},
/// suffixes, …}`. cloud-provider-azure's azclient asks `2019-05-01` and decodes the array only,
/// taking the entry whose `name` is the cloud config's `cloud` and `audiences[0]` as the token
/// audience (pkg/azclient/cloud.go, `OverrideAzureCloudConfigAndEnvConfigFromMetadataService`);
/// azure-cli's `az cloud register --endpoint-resource-manager` asks `2022-09-01`. Other versions
/// are refused, so that a client asking something else is noticed here and not in production.
fn metadata_endpoints(sim: &Simulator, api_version: Option<&str>) -> Response {
    const ARRAY_FORM: &[&str] = &["2019-05-01", "2020-06-01", "2022-09-01"];
    let login = format!("{}/", sim.login_url());
    let audiences = json!([
        "https://management.core.windows.net/",
        "https://management.azure.com/"
    ]);
    match api_version {
        None | Some("2015-01-01") => Response::json(
            200,
            &json!({
                "galleryEndpoint": "",
                "graphEndpoint": "https://graph.windows.net/",
                "portalEndpoint": "",
                "authentication": {"loginEndpoint": login, "audiences": audiences},
            }),
        ),
        Some(v) if ARRAY_FORM.contains(&v) => Response::json(
            200,
            &json!([{
                "name": CLOUD_NAME,
                "resourceManager": format!("{}/", sim.arm_url()),
                "authentication": {
                    "loginEndpoint": login,
                    "audiences": audiences,
                    "tenant": "common",
                    "identityProvider": "AAD",
                },
                "portal": "",
                "gallery": "",
                "graph": "https://graph.windows.net/",
                "graphAudience": "https://graph.windows.net/",
                "suffixes": {},
            }]),
        ),
        Some(v) => error(
            400,
            "InvalidApiVersionParameter",
            format!(
                "The api-version '{v}' is invalid. The supported versions are '2015-01-01, {}'.",
                ARRAY_FORM.join(", ")
            ),
        )
        .response(),
    }
}

/// The resource an ARM write is to, as `<type>/<name>` in lower case (`disks/pvc-1`,
/// `virtualmachines/vm-0` also for its `attachDetachDataDisks`).
fn written_object(path: &str) -> Option<String> {
    let path = path.split('?').next().unwrap_or(path);
    let segments: Vec<&str> = path.split('/').collect();
    let i = segments.iter().rposition(|s| {
        matches!(
            s.to_ascii_lowercase().as_str(),
            "disks" | "snapshots" | "virtualmachines"
        )
    })?;
    let name = segments.get(i + 1).filter(|n| !n.is_empty())?;
    Some(format!("{}/{}", segments[i], name).to_ascii_lowercase())
}

#[cfg(test)]
mod written_object_tests {
    use super::written_object;

    #[test]
    fn writes_are_counted_per_disk_and_vm() {
        let rg = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute";
        assert_eq!(
            written_object(&format!("{rg}/disks/PVC-1?api-version=2024-03-02")).as_deref(),
            Some("disks/pvc-1")
        );
        assert_eq!(
            written_object(&format!("{rg}/virtualMachines/vm-0/attachDetachDataDisks")).as_deref(),
            Some("virtualmachines/vm-0")
        );
        assert_eq!(
            written_object(&format!(
                "{rg}/virtualMachineScaleSets/ss/virtualmachines/3/attachDetachDataDisks"
            ))
            .as_deref(),
            Some("virtualmachines/3")
        );
        assert_eq!(written_object("/subscriptions/s/providers/x"), None);
    }
}
