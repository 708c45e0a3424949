//! The HTTP face of the Kubernetes API: authentication, discovery, paths, verbs, content types,
//! fault rules.

use super::resources::{self, ResourceType, TYPES};
use super::selectors::{FieldSelector, LabelSelector};
use super::status::{ApiError, ApiResult};
use super::store::{PatchKind, Writer};
use super::watch::{self, WatchRequest};
use super::KubeApi;
use crate::faults::FaultAction;
use crate::http::{percent_decode, Outcome, Request, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::Method;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// Where a request points.
struct Target {
    rt: &'static ResourceType,
    namespace: Option<String>,
    name: Option<String>,
    status: bool,
}

pub async fn handle(api: Arc<KubeApi>, req: Request) -> Outcome {
    if req.path.starts_with("/_sim/") {
        return super::control::handle(&api, &req).into();
    }
    match route(&api, req).await {
        Ok(outcome) => outcome,
        Err(e) => e.response().into(),
    }
}

async fn route(api: &Arc<KubeApi>, req: Request) -> ApiResult<Outcome> {
    let segs: Vec<String> = req
        .path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect();
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    if req.method == Method::GET {
        match s.as_slice() {
            ["version"] => return Ok(Response::json(200, &version()).into()),
            ["api"] => return Ok(Response::json(200, &json!({"kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": api.address}]})).into()),
            ["apis"] => return Ok(Response::json(200, &api_groups()).into()),
            ["api", "v1"] => return Ok(Response::json(200, &resource_list("", "v1")).into()),
            ["apis", g, v] if resources::groups().contains(g) => {
                return Ok(Response::json(200, &resource_list(g, v)).into())
            }
            _ => {}
        }
    }
    let (group, version, rest) = match s.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => {
            return Err(ApiError::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ))
        }
    };
    let target = target(group, version, rest)?;
    let verb = verb(&req, &target);
    let operation = format!(
        "{verb} {}{}",
        target.rt.plural,
        if target.status { "/status" } else { "" }
    );
    let write = !matches!(verb, "get" | "list" | "watch");
    api.counters.count(&operation, write);
    if write {
        if let Some(object) = written_object(&target, &req.body) {
            api.counters.count_write_to(&object);
        }
    }
    api.access.record(super::AccessEntry {
        verb: verb.to_string(),
        api_group: target.rt.group.to_string(),
        resource: format!(
            "{}{}",
            target.rt.plural,
            if target.status { "/status" } else { "" }
        ),
        namespace: target.namespace.clone(),
        user_agent: req.header("user-agent").map(str::to_string),
    });
    let mut lose = false;
    for action in api.faults.fire(req.method.as_str(), &operation, &req.path) {
        match action {
            FaultAction::Latency { ms } => tokio::time::sleep(Duration::from_millis(ms)).await,
            FaultAction::Reset => return Ok(Outcome::Reset),
            FaultAction::LoseResponse => lose = true,
            FaultAction::Status {
                status,
                code,
                message,
                retry_after,
            } => {
                let reason = match status {
                    429 => "TooManyRequests",
                    500 => "InternalError",
                    503 => "ServiceUnavailable",
                    504 => "Timeout",
                    _ => "InternalError",
                };
                let mut e = ApiError::new(
                    status,
                    reason,
                    message.unwrap_or_else(|| "injected by flexdisk-sim".into()),
                );
                if let Some(c) = code {
                    e.details = json!({"causes": [{"reason": c}]});
                }
                let mut r = e.response();
                if matches!(status, 429 | 503) {
                    r = r.with_header("retry-after", retry_after.unwrap_or(1).to_string());
                }
                return Ok(r.into());
            }
            FaultAction::LroFail { .. } => {}
        }
    }
    let outcome = serve(api, &req, &target, verb)?;
    Ok(if lose { Outcome::Reset } else { outcome })
}

fn not_allowed() -> ApiError {
    ApiError::new(
        405,
        "MethodNotAllowed",
        "the server does not allow this method on the requested resource",
    )
}

fn verb(req: &Request, t: &Target) -> &'static str {
    match (&req.method, t.name.is_some()) {
        (&Method::GET, true) => "get",
        (&Method::GET, false) if req.query("watch").is_some_and(|w| w == "true" || w == "1") => {
            "watch"
        }
        (&Method::GET, false) => "list",
        (&Method::POST, _) => "create",
        (&Method::PUT, _) => "update",
        (&Method::PATCH, _) => "patch",
        (&Method::DELETE, true) => "delete",
        (&Method::DELETE, false) => "deletecollection",
        _ => "unknown",
    }
}

fn target(group: &str, version: &str, rest: &[&str]) -> ApiResult<Target> {
    let find = |plural: &str| {
        resources::find(group, version, plural).ok_or_else(|| {
            ApiError::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            )
        })
    };
    let t = match rest {
        ["namespaces", ns, plural] if *plural != "status" && *plural != "finalize" => Target {
            rt: find(plural)?,
            namespace: Some(ns.to_string()),
            name: None,
            status: false,
        },
        ["namespaces", ns, plural, name] => Target {
            rt: find(plural)?,
            namespace: Some(ns.to_string()),
            name: Some(name.to_string()),
            status: false,
        },
        ["namespaces", ns, plural, name, "status"] => Target {
            rt: find(plural)?,
            namespace: Some(ns.to_string()),
            name: Some(name.to_string()),
            status: true,
        },
        [plural] => Target {
            rt: find(plural)?,
            namespace: None,
            name: None,
            status: false,
        },
        [plural, name] => Target {
            rt: find(plural)?,
            namespace: None,
            name: Some(name.to_string()),
            status: false,
        },
        [plural, name, "status"] => Target {
            rt: find(plural)?,
            namespace: None,
            name: Some(name.to_string()),
            status: true,
        },
        _ => {
            return Err(ApiError::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ))
        }
    };
    if t.status && !t.rt.status {
        return Err(ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        ));
    }
    if t.rt.namespaced && t.name.is_some() && t.namespace.is_none() {
        return Err(ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        ));
    }
    if !t.rt.namespaced && t.namespace.is_some() {
        return Err(ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        ));
    }
    Ok(t)
}

fn body_json(req: &Request) -> ApiResult<Value> {
    if req.body.is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_slice(&req.body).map_err(|e| {
        ApiError::bad_request(format!("the body of the request was in an unknown format - accepted media types include: application/json ({e})"))
    })
}

fn manager(req: &Request) -> String {
    req.query("fieldManager")
        .map(str::to_string)
        .unwrap_or_else(|| {
            req.header("user-agent")
                .and_then(|ua| ua.split('/').next())
                .unwrap_or("unknown")
                .to_string()
        })
}

fn serve(api: &Arc<KubeApi>, req: &Request, t: &Target, verb: &str) -> ApiResult<Outcome> {
    if req.query("dryRun").is_some() {
        return Err(ApiError::bad_request(
            "dryRun is not supported by flexdisk-sim",
        ));
    }
    let ns = t.namespace.clone().unwrap_or_default();
    let store = &api.store;
    let ok = |code: u16, v: Value| Ok(Response::json(code, &v).into());
    match verb {
        "get" => ok(
            200,
            store.get(t.rt, &ns, t.name.as_deref().unwrap_or_default())?,
        ),
        "list" => list(api, req, t),
        "watch" => {
            let w = WatchRequest {
                rt: t.rt,
                namespace: t.namespace.clone(),
                labels: LabelSelector::parse(req.query("labelSelector").unwrap_or(""))?,
                fields: FieldSelector::parse(
                    req.query("fieldSelector").unwrap_or(""),
                    t.rt.kind,
                    t.rt.fields,
                )?,
                from: match req.query("resourceVersion").filter(|v| !v.is_empty()) {
                    None => None,
                    Some(v) => Some(v.parse::<u64>().map_err(|_| {
                        ApiError::bad_request(format!("invalid resource version: {v}"))
                    })?),
                },
                timeout: Duration::from_secs(
                    req.query("timeoutSeconds")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(1800),
                ),
                bookmarks: req.query("allowWatchBookmarks") == Some("true"),
                bookmark_every: api.bookmark_every,
            };
            let rx = watch::start(store, w, api.drop_watches.subscribe());
            let head = Response {
                status: http::StatusCode::OK,
                headers: vec![(http::header::CONTENT_TYPE, "application/json".into())],
                body: Vec::new(),
            };
            Ok(Outcome::Stream(head, rx))
        }
        "create" => {
            if t.status || t.name.is_some() {
                return Err(ApiError::new(
                    405,
                    "MethodNotAllowed",
                    "the server does not allow this method on the requested resource",
                ));
            }
            if t.rt.namespaced && t.namespace.is_none() {
                return Err(ApiError::new(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                ));
            }
            ok(
                201,
                store.create(t.rt, &ns, body_json(req)?, &manager(req))?,
            )
        }
        "update" => {
            let name = t.name.as_deref().ok_or_else(not_allowed)?;
            ok(
                200,
                store.replace(
                    t.rt,
                    &ns,
                    name,
                    body_json(req)?,
                    Writer {
                        manager: &manager(req),
                        status: t.status,
                    },
                )?,
            )
        }
        "patch" => {
            let name = t.name.as_deref().ok_or_else(not_allowed)?;
            let ctype = req
                .header("content-type")
                .unwrap_or("")
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_string();
            let kind = match ctype.as_str() {
                "application/merge-patch+json" => PatchKind::Merge,
                "application/json-patch+json" => PatchKind::Json,
                "application/strategic-merge-patch+json" => PatchKind::Strategic,
                "application/apply-patch+yaml" | "application/apply-patch+json" => {
                    if req.query("fieldManager").is_none_or(str::is_empty) {
                        return Err(ApiError::new(422, "Invalid", "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"));
                    }
                    PatchKind::Apply { force: req.query("force") == Some("true") }
                }
                other => {
                    return Err(ApiError::new(415, "UnsupportedMediaType", format!(
                        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {other:?})"
                    )))
                }
            };
            let body = body_json(req)?;
            ok(
                200,
                store.patch(
                    t.rt,
                    &ns,
                    name,
                    kind,
                    &body,
                    Writer {
                        manager: &manager(req),
                        status: t.status,
                    },
                )?,
            )
        }
        "delete" => {
            let name = t.name.as_deref().unwrap_or_default();
            if t.status {
                return Err(ApiError::new(
                    405,
                    "MethodNotAllowed",
                    "the server does not allow this method on the requested resource",
                ));
            }
            ok(200, store.delete(t.rt, &ns, name, &body_json(req)?)?)
        }
        _ => Err(ApiError::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )),
    }
}

fn list(api: &Arc<KubeApi>, req: &Request, t: &Target) -> ApiResult<Outcome> {
    let labels = LabelSelector::parse(req.query("labelSelector").unwrap_or(""))?;
    let fields = FieldSelector::parse(
        req.query("fieldSelector").unwrap_or(""),
        t.rt.kind,
        t.rt.fields,
    )?;
    let keep = |o: &Value| {
        labels.matches(o.pointer("/metadata/labels").unwrap_or(&Value::Null)) && fields.matches(o)
    };
    let (items, rv) = api.store.list(t.rt, t.namespace.as_deref(), &keep);
    let offset = match req.query("continue").filter(|c| !c.is_empty()) {
        None => 0,
        Some(token) => URL_SAFE_NO_PAD
            .decode(token)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.parse::<usize>().ok())
            .ok_or_else(|| {
                ApiError::bad_request("continue key is not valid: illegal base64 data")
            })?,
    };
    let limit = req
        .query("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0);
    let end = limit.map_or(items.len(), |l| (offset + l).min(items.len()));
    let page: Vec<Value> = items
        .get(offset..end)
        .unwrap_or_default()
        .iter()
        .map(|o| {
            // Lists carry their items without kind and apiVersion, as kube-apiserver's do.
            let mut o = o.clone();
            if let Some(m) = o.as_object_mut() {
                m.remove("kind");
                m.remove("apiVersion");
            }
            o
        })
        .collect();
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if end < items.len() {
        metadata["continue"] = json!(URL_SAFE_NO_PAD.encode(end.to_string()));
        metadata["remainingItemCount"] = json!(items.len() - end);
    }
    Ok(Response::json(
        200,
        &json!({
            "kind": t.rt.list_kind(),
            "apiVersion": t.rt.api_version(),
            "metadata": metadata,
            "items": page,
        }),
    )
    .into())
}

fn version() -> Value {
    json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0+flexdisk-sim", "gitCommit": "",
        "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "",
        "compiler": "rustc", "platform": "linux/amd64"})
}

fn api_groups() -> Value {
    let groups: Vec<Value> = resources::groups()
        .into_iter()
        .map(|g| {
            let gv = json!({"groupVersion": format!("{g}/v1"), "version": "v1"});
            json!({"name": g, "versions": [gv.clone()], "preferredVersion": gv})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

fn resource_list(group: &str, version: &str) -> Value {
    let mut out = Vec::new();
    for t in TYPES
        .iter()
        .filter(|t| t.group == group && t.version == version)
    {
        out.push(
            json!({"name": t.plural, "singularName": t.singular, "namespaced": t.namespaced,
            "kind": t.kind, "shortNames": t.short_names,
            "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]}),
        );
        if t.status {
            out.push(
                json!({"name": format!("{}/status", t.plural), "singularName": "",
                "namespaced": t.namespaced, "kind": t.kind, "verbs": ["get", "patch", "update"]}),
            );
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": out})
}

/// What a write is to, for the per-object counters: `<resource>/<namespace>/<name>`, and for an
/// event the object it is about (`events/<namespace>/<regarding name>`), from the body when it is
/// created and from its name (`<regarding>.<suffix>`) when it is patched.
fn written_object(target: &Target, body: &[u8]) -> Option<String> {
    let from_body = || -> Option<String> {
        let v: serde_json::Value = serde_json::from_slice(body).ok()?;
        if target.rt.plural == "events" {
            v.pointer("/regarding/name")
                .or_else(|| v.pointer("/involvedObject/name"))
                .and_then(|n| n.as_str())
                .map(str::to_string)
        } else {
            v.pointer("/metadata/name")
                .and_then(|n| n.as_str())
                .map(str::to_string)
        }
    };
    let name = match (&target.name, target.rt.plural) {
        (Some(n), "events") => n.rsplit_once('.').map_or(n.clone(), |(r, _)| r.to_string()),
        (Some(n), _) => n.clone(),
        (None, _) => from_body()?,
    };
    Some(match &target.namespace {
        Some(ns) => format!("{}/{ns}/{name}", target.rt.plural),
        None => format!("{}/{name}", target.rt.plural),
    })
}
