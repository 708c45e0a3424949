//! What the resizer and the modifier share when they write a claim's status as kubernetes-csi's
//! external-resizer does: timestamps, conditions of their own kind replaced, resourceVersion-
//! guarded status patches, and the disk a volume of ours is on.

use crate::context::Ctx;
use crate::error::Error;
use flexdisk_azure::naming::{parse_resource_id, ResourceId, ResourceKind};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::{Api, Patch, PatchParams};
use kube::ResourceExt;
use serde_json::{json, Value};

/// Now, as conditions carry it (whole seconds).
pub fn now() -> String {
    let t = k8s_openapi::jiff::Timestamp::now();
    t.round(k8s_openapi::jiff::Unit::Second)
        .unwrap_or(t)
        .to_string()
}

/// The claim's conditions without those of `kinds` (except `keep`), plus `add` (type, message).
pub fn conditions(
    pvc: &PersistentVolumeClaim,
    kinds: &[&str],
    keep: &[&str],
    add: &[(&str, &str)],
) -> Vec<Value> {
    let mut out: Vec<Value> = pvc
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|c| !kinds.contains(&c.type_.as_str()) || keep.contains(&c.type_.as_str()))
        .filter(|c| !add.iter().any(|(t, _)| *t == c.type_))
        .filter_map(|c| serde_json::to_value(c).ok())
        .collect();
    for (type_, message) in add {
        out.push(
            json!({"type": type_, "status": "True", "lastProbeTime": null,
            "lastTransitionTime": now(), "message": message}),
        );
    }
    out
}

/// A status patch guarded by the claim's resourceVersion: a claim changed meanwhile is looked at
/// again in its new version (a conflict is [`Error::Stale`]).
pub async fn patch(
    ctx: &Ctx,
    pvc: &PersistentVolumeClaim,
    status: Value,
) -> Result<PersistentVolumeClaim, Error> {
    let api: Api<PersistentVolumeClaim> =
        Api::namespaced(ctx.client.clone(), &pvc.namespace().unwrap_or_default());
    let body = json!({"metadata": {"resourceVersion": pvc.resource_version()}, "status": status});
    match api
        .patch_status(
            &pvc.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&body),
        )
        .await
    {
        Ok(c) => Ok(c),
        Err(kube::Error::Api(e)) if e.code == 409 => Err(Error::Stale(format!(
            "claim {}/{} changed while its status was being written",
            pvc.namespace().unwrap_or_default(),
            pvc.name_any()
        ))),
        Err(e) => Err(e.into()),
    }
}

/// The disk of a FlexVolume PV of ours; `None` for a PV without one.
pub fn disk_of(pv: &PersistentVolume) -> Option<Result<ResourceId, Error>> {
    pv.spec
        .as_ref()
        .and_then(|s| s.flex_volume.as_ref())
        .and_then(|f| f.options.as_ref())
        .and_then(|o| o.get("diskURI"))
        .map(|uri| parse_resource_id(uri, ResourceKind::Disk).map_err(Error::Internal))
}

/// Whether the PV controller has finished binding the claim: phase `Bound`. It binds in two
/// writes — the claim's `volumeName` first, then its status with the phase and the capacity
/// (`pkg/controller/volume/persistentvolume/pv_controller.go` bind: bindClaimToVolume, then
/// updateClaimStatus) — so between them a claim names its volume and has no capacity yet, which
/// reads as a request to grow from nothing. kubernetes-csi's external-resizer resizes Bound
/// claims only (`pkg/controller/controller.go` pvcNeedResize: "Only Bound pvc can be expanded").
pub fn bound(pvc: &PersistentVolumeClaim) -> bool {
    pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound")
}

/// Whether the claim asks only for ReadOnlyMany: mounted read-only on every node.
pub fn read_only_many(pvc: &PersistentVolumeClaim) -> bool {
    let modes = pvc
        .spec
        .as_ref()
        .and_then(|s| s.access_modes.as_deref())
        .unwrap_or_default();
    !modes.is_empty() && modes.iter().all(|m| m == "ReadOnlyMany")
}
