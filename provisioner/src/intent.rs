//! A claim's disk in the making: recorded on the claim (a finalizer and an annotation naming the
//! disk) before the disk's PUT, cleared once the claim's PV exists. A claim deleted in between —
//! also while the provisioner was down — cannot go before the provisioner has seen it, so the disk
//! it made for that claim is deleted then, by proof rather than by guessing: no sweep of the
//! resource group has to infer from tags (which other clusters and the Azure Disk CSI driver set
//! too) whose a disk is, and a disk kept by a `Retain` PV is never taken for an orphan.

use crate::context::Ctx;
use crate::error::Error;
use crate::keys::{provisioning_finalizer, PROVISIONER_BETA_KEY, PROVISIONER_KEY};
use flexdisk_azure::naming::{disk_name_for_pv, parse_resource_id, pv_of_tags, ResourceKind};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::ResourceExt;
use serde_json::json;
use std::time::Duration;
use tracing::info;

/// The resource ID of the disk being made for the claim.
pub const ANNOTATION: &str = "flexdisk/disk-in-progress";

/// The finalizer of the provisioner named `name` ([`provisioning_finalizer`]).
pub fn finalizer(name: &str) -> String {
    provisioning_finalizer(name)
}

/// Whether this claim carries the record of a provisioning by `name` that has not finished.
pub fn recorded(pvc: &PersistentVolumeClaim, name: &str) -> bool {
    let f = finalizer(name);
    pvc.finalizers().contains(&f)
}

/// Whether an earlier attempt of `name` recorded `disk_uri` as the claim's disk in the making.
pub fn recorded_for(pvc: &PersistentVolumeClaim, name: &str, disk_uri: &str) -> bool {
    recorded(pvc, name) && pvc.annotations().get(ANNOTATION).map(String::as_str) == Some(disk_uri)
}

/// Whether the claim asks this provisioner (`name`) for its volume.
fn addressed_to(pvc: &PersistentVolumeClaim, name: &str) -> bool {
    let a = pvc.annotations();
    a.get(PROVISIONER_KEY)
        .or_else(|| a.get(PROVISIONER_BETA_KEY))
        .is_some_and(|p| p == name)
}

/// Records that `disk_uri` is being made for the claim. `false`: the claim changed since it was
/// read (the caller looks again later); nothing is made then.
pub async fn record(
    api: &Api<PersistentVolumeClaim>,
    pvc: &PersistentVolumeClaim,
    name: &str,
    disk_uri: &str,
) -> Result<bool, Error> {
    let ours = finalizer(name);
    if recorded_for(pvc, name, disk_uri) {
        // Recorded by an earlier attempt: nothing to write.
        return Ok(true);
    }
    let mut finalizers: Vec<String> = pvc.finalizers().to_vec();
    if !finalizers.contains(&ours) {
        finalizers.push(ours);
    }
    let patch = json!({"metadata": {"resourceVersion": pvc.resource_version(),
        "finalizers": finalizers, "annotations": {ANNOTATION: disk_uri}}});
    match api
        .patch(
            &pvc.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Clears the record (the claim's PV exists, or its disk is gone). The finalizer list is
/// replaced whole, guarded by the resourceVersion: on a conflict it is read again.
pub async fn clear(api: &Api<PersistentVolumeClaim>, claim: &str, name: &str) -> Result<(), Error> {
    let ours = finalizer(name);
    let mut tries = 0;
    loop {
        let Some(pvc) = api.get_opt(claim).await? else {
            return Ok(());
        };
        if !pvc.finalizers().contains(&ours) {
            return Ok(());
        }
        let kept: Vec<&String> = pvc.finalizers().iter().filter(|f| **f != ours).collect();
        let patch = json!({"metadata": {"resourceVersion": pvc.resource_version(),
            "finalizers": kept, "annotations": {ANNOTATION: null}}});
        match api
            .patch(claim, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 && tries < 5 => tries += 1,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Brings a claim with a recorded provisioning to its end: its PV exists → the record goes;
/// the claim is being deleted and no PV was made → the disk made for it is deleted, then the
/// record goes. `None`: provisioning goes on (the claim lives and has no PV yet).
///
/// The disk deleted is never simply the one the annotation names: its name must be the one this
/// provisioner gives the claim's disk (from the claim's UID), and the disk must carry the tag
/// that says it was made for this claim's PV. Anything else is left alone, with an event.
pub async fn finish(ctx: &Ctx, pvc: &PersistentVolumeClaim) -> Result<Option<Action>, Error> {
    let ns = pvc.namespace().unwrap_or_default();
    let claim = pvc.name_any();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    let pvs: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let pv_name = format!("pvc-{}", pvc.uid().unwrap_or_default());
    if pvs.get_opt(&pv_name).await?.is_some() {
        clear(&claims, &claim, &ctx.name).await?;
        // A copy finished by an earlier attempt that stopped before releasing its source.
        if let Some(source) = crate::clone::source_of(pvc) {
            crate::clone::release(ctx, &ns, &source).await?;
        }
        return Ok(Some(Action::await_change()));
    }
    if pvc.metadata.deletion_timestamp.is_none() {
        return Ok(None);
    }
    if !addressed_to(pvc, &ctx.name) {
        // Our record on a claim that is not (or no longer) ours to provision: it goes, and
        // nothing else is done.
        clear(&claims, &claim, &ctx.name).await?;
        return Ok(Some(Action::await_change()));
    }
    if !delete_made_disk(
        ctx,
        pvc,
        "the claim was deleted while its disk was being made",
    )
    .await?
    {
        // Its PV appeared meanwhile: the PV owns the disk.
        clear(&claims, &claim, &ctx.name).await?;
        return Ok(Some(Action::await_change()));
    }
    clear(&claims, &claim, &ctx.name).await?;
    // A copy that will not be made no longer holds its source.
    if let Some(source) = crate::clone::source_of(pvc) {
        crate::clone::release(ctx, &ns, &source).await?;
    }
    Ok(Some(Action::requeue(Duration::from_secs(1))))
}

/// Gives up a provisioning for the scheduler to choose another node: the disk made for the claim
/// (if any — with the same proof as [`finish`]) is deleted, as it may sit in the wrong zone, and
/// the record goes. The next attempt starts afresh. `false`: the claim's PV exists after all
/// (made by a replica that led a moment ago); nothing is given up.
pub async fn abandon(ctx: &Ctx, pvc: &PersistentVolumeClaim) -> Result<bool, Error> {
    if !recorded(pvc, &ctx.name) {
        return Ok(true);
    }
    if !delete_made_disk(ctx, pvc, "provisioning for the selected node was given up").await? {
        return Ok(false);
    }
    let claims: Api<PersistentVolumeClaim> =
        Api::namespaced(ctx.client.clone(), &pvc.namespace().unwrap_or_default());
    clear(&claims, &pvc.name_any(), &ctx.name).await?;
    Ok(true)
}

/// Deletes the disk recorded on the claim when it is the one made for it: named from the
/// claim's UID and tagged for its PV. Anything else is left alone, with an event; `why` says
/// what happened to the provisioning. `false`: the claim's PV exists; nothing was done.
async fn delete_made_disk(
    ctx: &Ctx,
    pvc: &PersistentVolumeClaim,
    why: &str,
) -> Result<bool, Error> {
    let ns = pvc.namespace().unwrap_or_default();
    let claim = pvc.name_any();
    let pv_name = format!("pvc-{}", pvc.uid().unwrap_or_default());
    // A PV of the claim made meanwhile (by another replica that led a moment ago) owns the disk.
    let pvs: Api<PersistentVolume> = Api::all(ctx.client.clone());
    if pvs.get_opt(&pv_name).await?.is_some() {
        return Ok(false);
    }
    let expected = disk_name_for_pv(&pv_name);
    let id = pvc
        .annotations()
        .get(ANNOTATION)
        .and_then(|uri| parse_resource_id(uri, ResourceKind::Disk).ok())
        .filter(|id| {
            id.name == expected && id.subscription.eq_ignore_ascii_case(&ctx.arm.subscription)
        });
    let Some(id) = id else {
        ctx.event(pvc, EventType::Warning, "ProvisioningFailed", format!(
            "{why}, and the claim's annotation {ANNOTATION} does not name \
             disk {expected}; nothing is deleted — if a disk {expected} exists in Azure, delete it yourself"
        )).await;
        return Ok(true);
    };
    match ctx.arm.get_disk(&id.resource_group, &id.name).await? {
        None => {}
        Some(disk) if pv_of_tags(&disk.tags) == Some(pv_name.as_str()) => {
            info!(claim = %format!("{ns}/{claim}"), disk = %id.name,
                "{why}; deleting the disk made for it");
            if let Err(e) = ctx.arm.delete_disk(&id.resource_group, &id.name).await {
                ctx.event(
                    pvc,
                    EventType::Warning,
                    "ProvisioningFailed",
                    format!(
                        "{why}; deleting disk {} made for it failed: {e} (retried)",
                        id.name
                    ),
                )
                .await;
                return Err(e.into());
            }
        }
        Some(_) => {
            ctx.event(
                pvc,
                EventType::Warning,
                "ProvisioningFailed",
                format!(
                    "{why}, but disk {} in {} is not tagged as made for \
                 PV {pv_name}; it is left alone",
                    id.name, id.resource_group
                ),
            )
            .await;
        }
    }
    Ok(true)
}
