//! kube-controller-manager's volume expand controller as it treats FlexVolume claims. No plugin it
//! loads can grow a FlexVolume (`ProbeExpandableVolumePlugins` has none), so
//! `FindExpandablePluginBySpec` (kubernetes v1.37 `pkg/volume/plugins.go`) hands it
//! `noopExpandableVolumePluginInstance` for every `IsKubeletExpandable` spec — which FlexVolume
//! PVs are — and `expandAndRecoverFunction` (`pkg/volume/util/operationexecutor/
//! operation_generator.go`) "grows" the volume with it: the claim says
//! `ControllerResizeInProgress` with the size, the PV's capacity is raised to it, and the claim
//! is handed to the node (`NodeResizePending`, `FileSystemResizePending`, the PV annotated with
//! the claim's capacity before) — while the disk stays as it is. A provisioner that grows the disk
//! races this.
//!
//! It runs when its informer handler runs (`expand_controller.go` NewExpandController): for a
//! claim it sees for the first time, and when a claim's request or capacity grows — not for
//! other writes (a lowered request, another controller's status). Its status writes are merge
//! patches without a resourceVersion (`util.PatchPVCStatus`): they never lose a race.

use super::controllers::{Action, Patch};
use super::quantity;
use serde_json::{json, Value};
use std::collections::HashMap;

pub const PRE_RESIZE_CAPACITY: &str = "volume.alpha.kubernetes.io/pre-resize-capacity";
const RESIZE_CONDITIONS: [&str; 4] = [
    "Resizing",
    "FileSystemResizePending",
    "ControllerResizeError",
    "NodeResizeError",
];

fn s<'a>(o: &'a Value, pointer: &str) -> Option<&'a str> {
    o.pointer(pointer).and_then(Value::as_str)
}

fn bytes(o: &Value, pointer: &str) -> u128 {
    s(o, pointer).and_then(quantity::parse).unwrap_or(0)
}

fn annotation<'a>(o: &'a Value, key: &str) -> Option<&'a str> {
    o.pointer("/metadata/annotations")
        .and_then(|a| a.get(key))
        .and_then(Value::as_str)
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The claim's conditions with the resize ones replaced by `add` (kept too when `keep_old`),
/// as MergeResizeConditionOnPVC writes them.
fn conditions(claim: &Value, add: Value, keep_old: bool) -> Value {
    let mut out: Vec<Value> = claim
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|c| {
            let t = c["type"].as_str().unwrap_or("");
            keep_old || !RESIZE_CONDITIONS.contains(&t)
        })
        .filter(|c| c["type"] != add["type"])
        .cloned()
        .collect();
    out.push(add);
    Value::Array(out)
}

fn claim_status(claim: &Value, status: Value) -> Action {
    Action {
        plural: "persistentvolumeclaims",
        namespace: s(claim, "/metadata/namespace").unwrap_or("").into(),
        name: s(claim, "/metadata/name").unwrap_or("").into(),
        status: true,
        patch: Patch::Merge(json!({ "status": status })),
    }
}

fn volume(pv: &Value, patch: Value) -> Action {
    Action {
        plural: "persistentvolumes",
        namespace: String::new(),
        name: s(pv, "/metadata/name").unwrap_or("").into(),
        status: false,
        patch: Patch::Merge(patch),
    }
}

/// markForPendingNodeExpansion: MarkForFSResize, then AddAnnPreResizeCapacity (only where the PV
/// has none).
fn hand_to_node(claim: &Value, pv: &Value, out: &mut Vec<Action>) {
    let pending = json!({"type": "FileSystemResizePending", "status": "True", "lastProbeTime": null,
        "lastTransitionTime": now(),
        "message": "Waiting for user to (re-)start a pod to finish file system resize of volume on node."});
    out.push(claim_status(
        claim,
        json!({"conditions": conditions(claim, pending, true),
            "allocatedResourceStatuses": {"storage": "NodeResizePending"}}),
    ));
    if annotation(pv, PRE_RESIZE_CAPACITY).is_none() {
        let before = s(claim, "/status/capacity/storage").unwrap_or("0");
        out.push(volume(
            pv,
            json!({"metadata": {"annotations": {PRE_RESIZE_CAPACITY: before}}}),
        ));
    }
}

/// expandAndRecoverFunction with the no-op plugin: the writes for one claim bound to `pv`.
pub fn expand_and_recover(claim: &Value, pv: &Value) -> Vec<Action> {
    let mut out = Vec::new();
    let spec = bytes(claim, "/spec/resources/requests/storage");
    let pv_size = bytes(pv, "/spec/capacity/storage");
    let status = s(claim, "/status/allocatedResourceStatuses/storage").unwrap_or("");
    let allocated = s(claim, "/status/allocatedResources/storage");
    let request = s(claim, "/spec/resources/requests/storage").unwrap_or("0");
    let new_size = if pv_size < spec {
        match status {
            "ControllerResizeInProgress"
            | "NodeResizePending"
            | "NodeResizeInProgress"
            | "NodeResizeInfeasible" => allocated.unwrap_or(request),
            _ => request,
        }
    } else {
        match status {
            "NodeResizeInProgress" | "NodeResizePending" => return out,
            "NodeResizeInfeasible" => {
                hand_to_node(claim, pv, &mut out);
                return out;
            }
            "ControllerResizeInProgress" | "ControllerResizeInfeasible" => {
                allocated.unwrap_or(request)
            }
            "" if allocated.is_some() => allocated.unwrap_or(request),
            _ => request,
        }
    };
    // MarkControllerReisizeInProgress.
    let resizing = json!({"type": "Resizing", "status": "True", "lastProbeTime": null,
        "lastTransitionTime": now()});
    out.push(claim_status(
        claim,
        json!({"conditions": conditions(claim, resizing.clone(), false),
            "allocatedResources": {"storage": new_size},
            "allocatedResourceStatuses": {"storage": "ControllerResizeInProgress"}}),
    ));
    // The no-op ExpandVolumeDevice answers the size asked; UpdatePVSize.
    out.push(volume(
        pv,
        json!({"spec": {"capacity": {"storage": new_size}}}),
    ));
    // The claim as the writes so far left it, for the hand-over's conditions.
    let mut after = claim.clone();
    after["status"]["conditions"] = conditions(claim, resizing, false);
    hand_to_node(&after, pv, &mut out);
    out
}

/// The controller's memory of the claims its informer has seen (request and capacity).
#[derive(Default)]
pub struct ExpandController {
    seen: HashMap<String, (u128, u128)>,
}

impl ExpandController {
    /// What it does now: for the claims its handlers would queue, `syncHandler` and `expand`.
    pub fn plan(&mut self, claims: &[Value], volumes: &[Value]) -> Vec<Action> {
        let mut out = Vec::new();
        let mut alive = std::collections::HashSet::new();
        for claim in claims {
            let uid = s(claim, "/metadata/uid").unwrap_or_default().to_string();
            alive.insert(uid.clone());
            let now = (
                bytes(claim, "/spec/resources/requests/storage"),
                bytes(claim, "/status/capacity/storage"),
            );
            let before = self.seen.insert(uid, now);
            let queued = before.is_none_or(|(req, cap)| now.0 > req || now.1 > cap);
            // enqueuePVC: only Bound claims.
            if !queued || s(claim, "/status/phase") != Some("Bound") {
                continue;
            }
            let Some(pv) = s(claim, "/spec/volumeName")
                .and_then(|v| volumes.iter().find(|pv| s(pv, "/metadata/name") == Some(v)))
            else {
                continue;
            };
            if s(pv, "/spec/claimRef/uid") != s(claim, "/metadata/uid")
                || pv.pointer("/spec/flexVolume").is_none()
            {
                continue;
            }
            let annotated = annotation(pv, PRE_RESIZE_CAPACITY).is_some();
            if now.0 <= now.1 && !annotated {
                continue;
            }
            // isNodeExpandComplete: the annotation goes, nothing else.
            if now.1 >= now.0 && now.1 >= bytes(pv, "/spec/capacity/storage") && annotated {
                out.push(volume(
                    pv,
                    json!({"metadata": {"annotations": {PRE_RESIZE_CAPACITY: null}}}),
                ));
                continue;
            }
            out.extend(expand_and_recover(claim, pv));
        }
        self.seen.retain(|uid, _| alive.contains(uid));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(
        request: &str,
        capacity: &str,
        status: Option<&str>,
        allocated: Option<&str>,
    ) -> Value {
        let mut c = json!({"metadata": {"name": "c", "namespace": "ns", "uid": "u"},
            "spec": {"volumeName": "pv", "resources": {"requests": {"storage": request}}},
            "status": {"phase": "Bound", "capacity": {"storage": capacity}}});
        if let Some(s) = status {
            c["status"]["allocatedResourceStatuses"] = json!({"storage": s});
        }
        if let Some(a) = allocated {
            c["status"]["allocatedResources"] = json!({"storage": a});
        }
        c
    }

    fn pv(capacity: &str) -> Value {
        json!({"metadata": {"name": "pv"}, "spec": {"capacity": {"storage": capacity},
            "claimRef": {"uid": "u"}, "flexVolume": {"driver": "flexdisk/azure-disk"}}})
    }

    fn patches(actions: &[Action]) -> Vec<Value> {
        actions
            .iter()
            .map(|a| match &a.patch {
                Patch::Merge(v) | Patch::Json(v) => v.clone(),
            })
            .collect()
    }

    #[test]
    fn a_grown_request_is_grown_on_paper_and_handed_to_the_node() {
        let mut kcm = ExpandController::default();
        // First seen already asking for more: queued (the informer's add).
        let actions = kcm.plan(&[claim("8Gi", "5Gi", None, None)], &[pv("5Gi")]);
        let p = patches(&actions);
        assert_eq!(p.len(), 4, "{p:?}");
        assert_eq!(p[0]["status"]["allocatedResources"]["storage"], "8Gi");
        assert_eq!(
            p[0]["status"]["allocatedResourceStatuses"]["storage"],
            "ControllerResizeInProgress"
        );
        assert_eq!(p[1]["spec"]["capacity"]["storage"], "8Gi");
        assert_eq!(
            p[2]["status"]["allocatedResourceStatuses"]["storage"],
            "NodeResizePending"
        );
        assert_eq!(p[3]["metadata"]["annotations"][PRE_RESIZE_CAPACITY], "5Gi");
        // Seen again unchanged (another controller wrote its status): nothing.
        let again = kcm.plan(
            &[claim(
                "8Gi",
                "5Gi",
                Some("ControllerResizeInfeasible"),
                Some("8Gi"),
            )],
            &[pv("5Gi")],
        );
        assert!(again.is_empty(), "{again:?}");
        // A lowered request: nothing either (only growth queues).
        assert!(kcm
            .plan(
                &[claim(
                    "7Gi",
                    "5Gi",
                    Some("ControllerResizeInfeasible"),
                    Some("8Gi")
                )],
                &[pv("5Gi")]
            )
            .is_empty());
    }

    #[test]
    fn a_claim_the_node_found_infeasible_is_handed_back() {
        let p = patches(&expand_and_recover(
            &claim("8Gi", "5Gi", Some("NodeResizeInfeasible"), Some("8Gi")),
            &pv("8Gi"),
        ));
        assert_eq!(p.len(), 2, "{p:?}");
        assert_eq!(
            p[0]["status"]["allocatedResourceStatuses"]["storage"],
            "NodeResizePending"
        );
        assert!(expand_and_recover(
            &claim("8Gi", "5Gi", Some("NodeResizePending"), Some("8Gi")),
            &pv("8Gi")
        )
        .is_empty());
    }
}
