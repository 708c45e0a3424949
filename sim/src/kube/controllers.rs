//! The parts of kube-controller-manager a provisioner relies on: the PersistentVolume controller
//! (claims annotated for their class's provisioner, binding, Released, Lost; Immediate and
//! WaitForFirstConsumer), the PVC/PV protection controllers, and the expand controller's no-op
//! "expansion" of FlexVolume claims (`expand.rs`). Decisions are made by [`plan`] (no I/O) and
//! carried out as patches.

use super::quantity;
use super::resources::{find, ResourceType};
use super::store::{PatchKind, Writer};
use super::validation::{PVC_PROTECTION, PV_PROTECTION};
use super::KubeApi;
use serde_json::{json, Value};
use std::sync::Arc;
use tokio::sync::broadcast::error::RecvError;

pub const MANAGER: &str = "kube-controller-manager";
pub const PROVISIONER_KEY: &str = "volume.kubernetes.io/storage-provisioner";
pub const PROVISIONER_BETA_KEY: &str = "volume.beta.kubernetes.io/storage-provisioner";
pub const SELECTED_NODE_KEY: &str = "volume.kubernetes.io/selected-node";
const BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
const BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";

#[derive(Debug, Clone, PartialEq)]
pub enum Patch {
    Merge(Value),
    Json(Value),
}

/// One write the controllers want.
#[derive(Debug, Clone, PartialEq)]
pub struct Action {
    pub plural: &'static str,
    pub namespace: String,
    pub name: String,
    pub status: bool,
    pub patch: Patch,
}

fn s<'a>(o: &'a Value, pointer: &str) -> Option<&'a str> {
    o.pointer(pointer).and_then(Value::as_str)
}

fn name(o: &Value) -> String {
    s(o, "/metadata/name").unwrap_or_default().to_string()
}

fn ns(o: &Value) -> String {
    s(o, "/metadata/namespace").unwrap_or_default().to_string()
}

fn deleting(o: &Value) -> bool {
    o.pointer("/metadata/deletionTimestamp").is_some()
}

fn phase(o: &Value) -> &str {
    s(o, "/status/phase").unwrap_or("")
}

fn has_finalizer(o: &Value, f: &str) -> bool {
    o.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|a| a.iter().any(|x| x == f))
}

fn storage(o: &Value, pointer: &str) -> u128 {
    s(o, pointer).and_then(quantity::parse).unwrap_or(0)
}

fn modes(o: &Value) -> Vec<&str> {
    o.pointer("/spec/accessModes")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn volume_mode(o: &Value) -> &str {
    s(o, "/spec/volumeMode").unwrap_or("Filesystem")
}

fn class_of(o: &Value) -> &str {
    s(o, "/spec/storageClassName").unwrap_or("")
}

fn act(plural: &'static str, o: &Value, status: bool, patch: Patch) -> Action {
    Action {
        plural,
        namespace: ns(o),
        name: name(o),
        status,
        patch,
    }
}

fn remove_finalizer(plural: &'static str, o: &Value, f: &str) -> Action {
    let list = o
        .pointer("/metadata/finalizers")
        .cloned()
        .unwrap_or(json!([]));
    let kept: Vec<Value> = list
        .as_array()
        .map(|a| a.iter().filter(|x| *x != f).cloned().collect())
        .unwrap_or_default();
    act(
        plural,
        o,
        false,
        Patch::Json(json!([
            {"op": "test", "path": "/metadata/finalizers", "value": list},
            {"op": "replace", "path": "/metadata/finalizers", "value": kept}
        ])),
    )
}

/// Whether `pv` is pre-bound to `claim` (claimRef names it, uid empty or the claim's).
fn refers_to(pv: &Value, claim: &Value) -> bool {
    s(pv, "/spec/claimRef/name") == Some(name(claim).as_str())
        && s(pv, "/spec/claimRef/namespace") == Some(ns(claim).as_str())
        && s(pv, "/spec/claimRef/uid")
            .is_none_or(|u| u.is_empty() || Some(u) == s(claim, "/metadata/uid"))
}

/// The claim's or volume's VolumeAttributesClass, "" for none (nil and "" are the same to the
/// PV controller).
fn vac(o: &Value) -> &str {
    s(o, "/spec/volumeAttributesClassName").unwrap_or_default()
}

/// Whether the volume may serve the claim as FindMatchingVolume (component-helpers
/// `storage/volume/pv_helpers.go`) and checkVolumeSatisfyClaim (`pv_controller.go`) see it:
/// large enough, the same volumeMode and the same VolumeAttributesClass.
fn satisfies(pv: &Value, pvc: &Value) -> bool {
    storage(pv, "/spec/capacity/storage") >= storage(pvc, "/spec/resources/requests/storage")
        && volume_mode(pv) == volume_mode(pvc)
        && vac(pv) == vac(pvc)
}

/// The controller binding a volume to a claim (it says so in an annotation).
fn bind_volume(pv: &Value, pvc: &Value) -> Action {
    act(
        "persistentvolumes",
        pv,
        false,
        Patch::Merge(json!({
            "metadata": {"annotations": {BOUND_BY_CONTROLLER: "yes"}},
            "spec": {"claimRef": {"kind": "PersistentVolumeClaim", "apiVersion": "v1",
                "namespace": ns(pvc), "name": name(pvc), "uid": s(pvc, "/metadata/uid").unwrap_or_default()}}})),
    )
}

/// What the controllers would do now.
pub fn plan(claims: &[Value], volumes: &[Value], classes: &[Value], pods: &[Value]) -> Vec<Action> {
    let mut out = Vec::new();
    let claim_named = |ns_: &str, n: &str| claims.iter().find(|c| ns(c) == ns_ && name(c) == n);
    let volume_named = |n: &str| volumes.iter().find(|v| name(v) == n);

    for pv in volumes {
        // The PV protection controller lets a volume go once it is not Bound
        // (pv_protection_controller.go, isBeingUsed); the PV controller still syncs a volume being
        // deleted, so one whose claim goes is Released first (what HonorPVReclaimPolicy relies on).
        if deleting(pv) && has_finalizer(pv, PV_PROTECTION) && phase(pv) != "Bound" {
            out.push(remove_finalizer("persistentvolumes", pv, PV_PROTECTION));
            continue;
        }
        // A volume without a claimRef is Available, whatever its phase (pv_controller.go,
        // syncVolume: "volume is unused") — e.g. a Released one whose claimRef an admin removed.
        if pv.pointer("/spec/claimRef").is_none_or(Value::is_null) {
            if phase(pv) != "Available" {
                out.push(act(
                    "persistentvolumes",
                    pv,
                    true,
                    Patch::Merge(json!({"status": {"phase": "Available"}})),
                ));
            }
            continue;
        }
        // A volume bound to a claim (its claimRef has the claim's uid) whose claim is gone is
        // Released, whatever its phase.
        let claim_gone = s(pv, "/spec/claimRef/uid").is_some_and(|u| !u.is_empty())
            && s(pv, "/spec/claimRef/namespace")
                .zip(s(pv, "/spec/claimRef/name"))
                .and_then(|(n, c)| claim_named(n, c))
                .is_none_or(|c| s(c, "/metadata/uid") != s(pv, "/spec/claimRef/uid"));
        if claim_gone && !matches!(phase(pv), "Released" | "Failed") {
            out.push(act(
                "persistentvolumes",
                pv,
                true,
                Patch::Merge(json!({"status": {"phase": "Released"}})),
            ));
            continue;
        }
        match phase(pv) {
            "" | "Pending" => out.push(act(
                "persistentvolumes",
                pv,
                true,
                Patch::Merge(json!({"status": {"phase": "Available"}})),
            )),
            "Bound" => {
                let claim = s(pv, "/spec/claimRef/namespace")
                    .zip(s(pv, "/spec/claimRef/name"))
                    .and_then(|(n, c)| claim_named(n, c));
                let same = claim.is_some_and(|c| {
                    s(pv, "/spec/claimRef/uid").is_none_or(|u| Some(u) == s(c, "/metadata/uid"))
                });
                if !same {
                    out.push(act(
                        "persistentvolumes",
                        pv,
                        true,
                        Patch::Merge(json!({"status": {"phase": "Released"}})),
                    ));
                }
            }
            _ => {}
        }
    }

    for pvc in claims {
        if deleting(pvc) {
            let in_use = pods.iter().any(|p| {
                ns(p) == ns(pvc)
                    && !matches!(phase(p), "Succeeded" | "Failed")
                    && p.pointer("/spec/volumes")
                        .and_then(Value::as_array)
                        .is_some_and(|vs| {
                            vs.iter().any(|v| {
                                s(v, "/persistentVolumeClaim/claimName") == Some(name(pvc).as_str())
                            })
                        })
            });
            if has_finalizer(pvc, PVC_PROTECTION) && !in_use {
                out.push(remove_finalizer(
                    "persistentvolumeclaims",
                    pvc,
                    PVC_PROTECTION,
                ));
            }
            continue;
        }
        let uid = s(pvc, "/metadata/uid").unwrap_or_default();
        if phase(pvc) == "Bound" {
            // Its volume gone, or bound to another claim (syncBoundClaim: "Two claims are bound
            // to the same volume, this one is bound incorrectly", ClaimMisbound): Lost, a
            // terminal phase.
            let gone = s(pvc, "/spec/volumeName").is_none_or(|v| {
                volume_named(v).is_none_or(|pv| {
                    s(pv, "/spec/claimRef/uid").is_some_and(|u| !u.is_empty() && u != uid)
                })
            });
            if gone {
                out.push(act(
                    "persistentvolumeclaims",
                    pvc,
                    true,
                    Patch::Merge(json!({"status": {"phase": "Lost"}})),
                ));
            }
            continue;
        }
        if phase(pvc) == "Lost" {
            continue;
        }
        if let Some(vname) = s(pvc, "/spec/volumeName").filter(|v| !v.is_empty()) {
            let Some(pv) = volume_named(vname) else {
                continue;
            };
            if deleting(pv) {
                continue;
            }
            if pv.pointer("/spec/claimRef").is_none() {
                // A claim naming a volume nobody claimed binds only if the volume satisfies
                // it (else a VolumeMismatch event and the claim stays Pending); one the volume
                // already names binds without that check (syncUnboundClaim).
                if satisfies(pv, pvc) {
                    out.push(bind_volume(pv, pvc));
                }
                continue;
            }
            if !refers_to(pv, pvc) {
                continue;
            }
            if s(pv, "/spec/claimRef/uid").is_none_or(str::is_empty) {
                out.push(act(
                    "persistentvolumes",
                    pv,
                    false,
                    Patch::Merge(json!({"spec": {"claimRef": {"uid": uid}}})),
                ));
                continue;
            }
            if phase(pv) != "Bound" {
                out.push(act(
                    "persistentvolumes",
                    pv,
                    true,
                    Patch::Merge(json!({"status": {"phase": "Bound"}})),
                ));
            }
            if s(
                pvc,
                &format!(
                    "/metadata/annotations/{}",
                    BIND_COMPLETED.replace('/', "~1")
                ),
            )
            .is_none()
            {
                out.push(act(
                    "persistentvolumeclaims",
                    pvc,
                    false,
                    Patch::Merge(json!({"metadata": {"annotations": {BIND_COMPLETED: "yes"}}})),
                ));
            }
            // The claim's current class comes from the volume at binding only
            // (updateClaimStatus: Pending → Bound); afterwards it is the modifier's.
            out.push(act(
                "persistentvolumeclaims",
                pvc,
                true,
                Patch::Merge(json!({"status": {
                    "phase": "Bound",
                    "accessModes": pv.pointer("/spec/accessModes").cloned().unwrap_or(json!([])),
                    "capacity": pv.pointer("/spec/capacity").cloned().unwrap_or(json!({})),
                    "currentVolumeAttributesClassName": pv.pointer("/spec/volumeAttributesClassName").cloned().unwrap_or(Value::Null),
                }})),
            ));
            continue;
        }
        // A volume pre-bound to the claim (a provisioned one) is found by FindMatchingVolume,
        // whose checks it must pass like any other.
        if let Some(pv) = volumes
            .iter()
            .find(|v| !deleting(v) && refers_to(v, pvc) && satisfies(v, pvc))
        {
            out.push(act(
                "persistentvolumeclaims",
                pvc,
                false,
                Patch::Merge(json!({
                "metadata": {"annotations": {BOUND_BY_CONTROLLER: "yes"}},
                "spec": {"volumeName": name(pv)}})),
            ));
            continue;
        }
        let class = classes.iter().find(|c| name(c) == class_of(pvc));
        let delayed =
            class.is_some_and(|c| s(c, "/volumeBindingMode") == Some("WaitForFirstConsumer"));
        let selected = s(
            pvc,
            &format!(
                "/metadata/annotations/{}",
                SELECTED_NODE_KEY.replace('/', "~1")
            ),
        )
        .is_some();
        if !delayed {
            // Static binding: the smallest available volume of the class that fits.
            let want = storage(pvc, "/spec/resources/requests/storage");
            let fits = volumes
                .iter()
                .filter(|v| {
                    !deleting(v) && phase(v) == "Available" && v.pointer("/spec/claimRef").is_none()
                })
                .filter(|v| class_of(v) == class_of(pvc))
                .filter(|v| storage(v, "/spec/capacity/storage") >= want)
                .filter(|v| modes(pvc).iter().all(|m| modes(v).contains(m)))
                // As FindMatchingVolume (component-helpers storage/volume/pv_helpers.go): the
                // same volumeMode (Filesystem when absent) and class of attributes, and the
                // claim's selector.
                .filter(|v| satisfies(v, pvc))
                .filter(|v| {
                    pvc.pointer("/spec/selector").is_none_or(|sel| {
                        super::selectors::matches_structured(
                            sel,
                            v.pointer("/metadata/labels").unwrap_or(&Value::Null),
                        )
                    })
                })
                .min_by_key(|v| storage(v, "/spec/capacity/storage"));
            if let Some(pv) = fits {
                out.push(bind_volume(pv, pvc));
                continue;
            }
        }
        let Some(class) = class else { continue };
        let provisioner = s(class, "/provisioner").unwrap_or_default();
        if provisioner.is_empty()
            || provisioner == "kubernetes.io/no-provisioner"
            || (delayed && !selected)
        {
            continue;
        }
        let annotated = |k: &str| {
            s(
                pvc,
                &format!("/metadata/annotations/{}", k.replace('/', "~1")),
            ) == Some(provisioner)
        };
        if !annotated(PROVISIONER_KEY) || !annotated(PROVISIONER_BETA_KEY) {
            out.push(act("persistentvolumeclaims", pvc, false, Patch::Merge(json!({
                "metadata": {"annotations": {PROVISIONER_KEY: provisioner, PROVISIONER_BETA_KEY: provisioner}}}))));
        }
    }
    out
}

fn rt(plural: &str) -> Option<&'static ResourceType> {
    match plural {
        "storageclasses" => find("storage.k8s.io", "v1", plural),
        _ => find("", "v1", plural),
    }
}

/// One pass: plan against the store as it is now and carry out the plan. Writes that lose a race
/// are left to the next pass.
fn sweep(api: &KubeApi, expand: &mut super::expand::ExpandController) -> usize {
    let all = |plural: &str| {
        rt(plural)
            .map(|t| api.store.list(t, None, &|_| true).0)
            .unwrap_or_default()
    };
    let claims = all("persistentvolumeclaims");
    let volumes = all("persistentvolumes");
    let mut actions = plan(&claims, &volumes, &all("storageclasses"), &all("pods"));
    actions.extend(expand.plan(&claims, &volumes));
    let mut done = 0;
    for a in &actions {
        let Some(t) = rt(a.plural) else { continue };
        let (kind, body) = match &a.patch {
            Patch::Merge(b) => (PatchKind::Merge, b),
            Patch::Json(b) => (PatchKind::Json, b),
        };
        match api.store.patch(
            t,
            &a.namespace,
            &a.name,
            kind,
            body,
            Writer {
                manager: MANAGER,
                status: a.status,
            },
        ) {
            Ok(_) => done += 1,
            Err(e) => {
                tracing::debug!(target: "kube", "controller write to {} {}/{} lost: {}", a.plural, a.namespace, a.name, e.message)
            }
        }
    }
    done
}

/// Runs the controllers until `stop` turns true: a sweep after every batch of changes.
pub async fn run(api: Arc<KubeApi>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut changes = api.store.subscribe();
    let mut expand = super::expand::ExpandController::default();
    loop {
        // Repeat while passes still change things (each write is itself a change).
        for _ in 0..20 {
            if sweep(&api, &mut expand) == 0 {
                break;
            }
        }
        tokio::select! {
            _ = stop.changed() => return,
            got = changes.recv() => match got {
                Ok(_) | Err(RecvError::Lagged(_)) => {
                    while let Ok(_) | Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) = changes.try_recv() {}
                }
                Err(RecvError::Closed) => return,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(name: &str, class: &str, extra: Value) -> Value {
        let mut c = json!({"metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"),
                "finalizers": [PVC_PROTECTION]},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}, "storageClassName": class},
            "status": {"phase": "Pending"}});
        super::super::patch::merge_patch(&mut c, &extra);
        c
    }

    fn class(name: &str, mode: &str) -> Value {
        json!({"metadata": {"name": name}, "provisioner": "flexdisk/azure-disk", "volumeBindingMode": mode})
    }

    fn volume(name: &str, extra: Value) -> Value {
        let mut v = json!({"metadata": {"name": name, "finalizers": [PV_PROTECTION]},
            "spec": {"accessModes": ["ReadWriteOnce"], "capacity": {"storage": "1Gi"}, "flexVolume": {"driver": "flexdisk/azure-disk"}},
            "status": {"phase": "Available"}});
        super::super::patch::merge_patch(&mut v, &extra);
        v
    }

    #[test]
    fn immediate_claims_are_annotated_for_their_provisioner() {
        let actions = plan(
            &[claim("a", "fast", json!({}))],
            &[],
            &[class("fast", "Immediate")],
            &[],
        );
        assert_eq!(actions.len(), 1);
        let Patch::Merge(p) = &actions[0].patch else {
            panic!()
        };
        assert_eq!(
            p["metadata"]["annotations"][PROVISIONER_KEY],
            "flexdisk/azure-disk"
        );
        assert_eq!(
            p["metadata"]["annotations"][PROVISIONER_BETA_KEY],
            "flexdisk/azure-disk"
        );
    }

    #[test]
    fn delayed_claims_wait_for_a_selected_node() {
        let waiting = claim("a", "late", json!({}));
        assert!(plan(
            &[waiting],
            &[],
            &[class("late", "WaitForFirstConsumer")],
            &[]
        )
        .is_empty());
        let chosen = claim(
            "a",
            "late",
            json!({"metadata": {"annotations": {SELECTED_NODE_KEY: "n1"}}}),
        );
        assert_eq!(
            plan(
                &[chosen],
                &[],
                &[class("late", "WaitForFirstConsumer")],
                &[]
            )
            .len(),
            1
        );
    }

    #[test]
    fn a_claim_with_attributes_binds_only_a_volume_of_that_class_or_one_it_names() {
        let pv = volume(
            "pv-a",
            json!({"spec": {"claimRef": {"namespace": "default", "name": "a", "uid": "uid-a"}}}),
        );
        let classes = [class("fast", "Immediate")];
        let silver = claim(
            "a",
            "fast",
            json!({"spec": {"volumeAttributesClassName": "silver"}}),
        );
        let a = plan(
            std::slice::from_ref(&silver),
            std::slice::from_ref(&pv),
            &classes,
            &[],
        );
        assert!(
            a.iter().all(|a| a.plural != "persistentvolumeclaims"
                || !matches!(&a.patch, Patch::Merge(p) if p.pointer("/spec/volumeName").is_some())),
            "a FlexVolume PV (no class of attributes) does not satisfy the claim"
        );
        // Pre-bound both ways, as the provisioner does for such claims: bound, and the claim's
        // current class is the volume's (none).
        let named = claim(
            "a",
            "fast",
            json!({"spec": {"volumeAttributesClassName": "silver", "volumeName": "pv-a"}}),
        );
        let a = plan(
            std::slice::from_ref(&named),
            std::slice::from_ref(&pv),
            &classes,
            &[],
        );
        let status = a
            .iter()
            .find_map(|a| match &a.patch {
                Patch::Merge(p) if a.status && a.plural == "persistentvolumeclaims" => Some(p),
                _ => None,
            })
            .expect("claim status");
        assert_eq!(status["status"]["phase"], "Bound");
        assert_eq!(
            status["status"]["currentVolumeAttributesClassName"],
            Value::Null
        );
        // Static binding compares the classes too.
        let free = volume("pv-free", json!({"spec": {"storageClassName": "fast"}}));
        let plain = claim("a", "fast", json!({}));
        let a = plan(
            std::slice::from_ref(&plain),
            std::slice::from_ref(&free),
            &classes,
            &[],
        );
        assert!(
            a.iter().any(|a| a.plural == "persistentvolumes"),
            "binds without a class"
        );
        let a = plan(std::slice::from_ref(&silver), &[free], &classes, &[]);
        assert!(a.iter().all(|a| a.plural != "persistentvolumes"));
    }

    #[test]
    fn a_prebound_volume_binds_its_claim_in_steps() {
        let pv = volume(
            "pv-a",
            json!({"spec": {"claimRef": {"namespace": "default", "name": "a", "uid": "uid-a"}}}),
        );
        let c = claim("a", "fast", json!({}));
        let a = plan(
            std::slice::from_ref(&c),
            std::slice::from_ref(&pv),
            &[class("fast", "Immediate")],
            &[],
        );
        assert_eq!(a[0].plural, "persistentvolumeclaims");
        let Patch::Merge(p) = &a[0].patch else {
            panic!()
        };
        assert_eq!(p["spec"]["volumeName"], "pv-a");
        let bound_claim = claim("a", "fast", json!({"spec": {"volumeName": "pv-a"}}));
        let a = plan(&[bound_claim], &[pv], &[class("fast", "Immediate")], &[]);
        let statuses: Vec<(&str, bool)> = a.iter().map(|x| (x.plural, x.status)).collect();
        assert_eq!(
            statuses,
            vec![
                ("persistentvolumes", true),
                ("persistentvolumeclaims", false),
                ("persistentvolumeclaims", true)
            ]
        );
    }

    #[test]
    fn released_when_the_claim_goes_and_protection_lifted() {
        let pv = volume(
            "pv-a",
            json!({"spec": {"claimRef": {"namespace": "default", "name": "a", "uid": "uid-a"}}, "status": {"phase": "Bound"}}),
        );
        let a = plan(&[], &[pv], &[], &[]);
        assert_eq!(a.len(), 1);
        assert_eq!(
            a[0].patch,
            Patch::Merge(json!({"status": {"phase": "Released"}}))
        );
        let gone = claim(
            "a",
            "fast",
            json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}}),
        );
        let pod = json!({"metadata": {"name": "p", "namespace": "default"}, "spec": {"volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "a"}}]}, "status": {"phase": "Running"}});
        assert!(
            plan(std::slice::from_ref(&gone), &[], &[], &[pod]).is_empty(),
            "in use: protected"
        );
        let a = plan(&[gone], &[], &[], &[]);
        assert_eq!(a.len(), 1);
        assert!(matches!(&a[0].patch, Patch::Json(_)));
    }

    #[test]
    fn static_volumes_bind_smallest_fit() {
        let big = volume(
            "big",
            json!({"spec": {"capacity": {"storage": "10Gi"}, "storageClassName": ""}}),
        );
        let small = volume(
            "small",
            json!({"spec": {"capacity": {"storage": "2Gi"}, "storageClassName": ""}}),
        );
        let c = claim("a", "", json!({}));
        let a = plan(&[c], &[big, small], &[], &[]);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].name, "small");
    }

    #[test]
    fn static_binding_needs_the_same_volume_mode_and_the_claim_s_selector() {
        let classes = [class("", "Immediate")];
        let bind_target = |claim_extra: Value, vols: &[Value]| -> Option<String> {
            plan(&[claim("a", "", claim_extra)], vols, &classes, &[])
                .into_iter()
                .find(|a| a.plural == "persistentvolumes")
                .map(|a| a.name)
        };
        let block = volume("block", json!({"spec": {"volumeMode": "Block"}}));
        let labelled = volume("gold", json!({"metadata": {"labels": {"tier": "gold"}}}));
        let plain = volume("plain", json!({}));
        assert_eq!(bind_target(json!({}), std::slice::from_ref(&block)), None);
        assert_eq!(
            bind_target(
                json!({"spec": {"volumeMode": "Block"}}),
                &[block.clone(), plain.clone()]
            ),
            Some("block".into())
        );
        let gold = json!({"spec": {"selector": {"matchLabels": {"tier": "gold"}}}});
        assert_eq!(
            bind_target(gold.clone(), std::slice::from_ref(&plain)),
            None
        );
        assert_eq!(
            bind_target(gold, &[plain.clone(), labelled.clone()]),
            Some("gold".into())
        );
        let not_gold = json!({"spec": {"selector": {"matchExpressions": [
            {"key": "tier", "operator": "NotIn", "values": ["gold"]}]}}});
        assert_eq!(
            bind_target(not_gold, &[labelled, plain]),
            Some("plain".into())
        );
    }

    #[test]
    fn a_volume_deleted_before_its_claim_is_released_when_the_claim_goes() {
        let pv = volume(
            "pv-a",
            json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"},
                "spec": {"claimRef": {"namespace": "default", "name": "a", "uid": "uid-a"}},
                "status": {"phase": "Bound"}}),
        );
        let bound = claim(
            "a",
            "",
            json!({"spec": {"volumeName": "pv-a"}, "status": {"phase": "Bound"}}),
        );
        // Still in use: protected, still Bound.
        assert!(plan(&[bound], std::slice::from_ref(&pv), &[], &[])
            .iter()
            .all(|a| a.plural != "persistentvolumes"));
        // The claim gone: Released (then the protection goes, on the next pass).
        let a = plan(&[], std::slice::from_ref(&pv), &[], &[]);
        assert_eq!(a.len(), 1, "{a:?}");
        assert_eq!(
            a[0].patch,
            Patch::Merge(json!({"status": {"phase": "Released"}}))
        );
        let released = volume(
            "pv-a",
            json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"},
                "spec": {"claimRef": {"namespace": "default", "name": "a", "uid": "uid-a"}},
                "status": {"phase": "Released"}}),
        );
        let a = plan(&[], &[released], &[], &[]);
        assert!(
            matches!(&a[0].patch, Patch::Json(_)),
            "the protection goes: {a:?}"
        );
    }
}
