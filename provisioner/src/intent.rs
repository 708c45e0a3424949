//! A claim's disk in the making: recorded on the claim (a finalizer and an annotation naming the
//! disk) before the disk's PUT, cleared once the claim's PV exists. A claim deleted in between —
//! also while the provisioner was down — cannot go before the provisioner has seen it, so the disk
//! it made for that claim is deleted then, by proof rather than by guessing: no sweep of the
//! resource group has to infer from tags (which other clusters and the Azure Disk CSI driver set
//! too) whose a disk is, and a disk kept by a `Retain` PV is never taken for an orphan.

use crate::run::{Ctx, Error};
use flexdisk_azure::naming::{parse_resource_id, ResourceKind};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::ResourceExt;
use serde_json::json;
use std::time::Duration;
use tracing::info;

pub const FINALIZER: &str = "flexdisk/disk-in-progress";
/// The resource ID of the disk being made for the claim.
pub const ANNOTATION: &str = "flexdisk/disk-in-progress";

/// The disk this claim's provisioning started, if it has not finished.
pub fn recorded(pvc: &PersistentVolumeClaim) -> Option<String> {
    pvc.finalizers()
        .iter()
        .any(|f| f == FINALIZER)
        .then(|| pvc.annotations().get(ANNOTATION).cloned())
        .flatten()
}

/// Records that `disk_uri` is being made for the claim. `false`: the claim changed since it was
/// read (the caller looks again later); nothing is made then.
pub async fn record(
    api: &Api<PersistentVolumeClaim>,
    pvc: &PersistentVolumeClaim,
    disk_uri: &str,
) -> Result<bool, Error> {
    let mut finalizers: Vec<String> = pvc.finalizers().to_vec();
    if !finalizers.iter().any(|f| f == FINALIZER) {
        finalizers.push(FINALIZER.to_string());
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

/// Clears the record (the claim's PV exists, or its disk is gone).
async fn clear(api: &Api<PersistentVolumeClaim>, name: &str) -> Result<(), Error> {
    // Read fresh: the finalizer list is replaced whole, guarded by the resourceVersion.
    let Some(pvc) = api.get_opt(name).await? else {
        return Ok(());
    };
    if !pvc.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(());
    }
    let kept: Vec<&String> = pvc
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .collect();
    let patch = json!({"metadata": {"resourceVersion": pvc.resource_version(),
        "finalizers": kept, "annotations": {ANNOTATION: null}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

/// Brings a claim with a recorded provisioning to its end: its PV exists → the record goes;
/// the claim is being deleted and no PV was made → the disk is deleted, then the record goes.
/// `None`: provisioning goes on (the claim lives and has no PV yet).
pub async fn finish(
    ctx: &Ctx,
    pvc: &PersistentVolumeClaim,
    disk_uri: &str,
) -> Result<Option<Action>, Error> {
    let ns = pvc.namespace().unwrap_or_default();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    let pvs: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let pv_name = format!("pvc-{}", pvc.uid().unwrap_or_default());
    if pvs.get_opt(&pv_name).await?.is_some() {
        clear(&claims, &pvc.name_any()).await?;
        return Ok(Some(Action::await_change()));
    }
    if pvc.metadata.deletion_timestamp.is_none() {
        return Ok(None);
    }
    let id = parse_resource_id(disk_uri, ResourceKind::Disk).map_err(Error::Internal)?;
    info!(claim = %format!("{ns}/{}", pvc.name_any()), disk = %id.name,
        "the claim was deleted before its volume existed; deleting the disk made for it");
    ctx.arm.delete_disk(&id.resource_group, &id.name).await?;
    clear(&claims, &pvc.name_any()).await?;
    Ok(Some(Action::requeue(Duration::from_secs(1))))
}
