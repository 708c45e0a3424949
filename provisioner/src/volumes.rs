//! Released volumes → deleted disks: the kube-rs edge around [`crate::decide::deletion`].

use crate::context::Ctx;
use crate::decide::{deletion, pv_finalizer, Deletion, FinalizerChange, Volume};
use crate::error::Error;
use crate::keys::{FINALIZER, PROVISIONED_BY};
use flexdisk_azure::naming::{parse_resource_id, ResourceKind};
use flexdisk_azure::AzureError;
use k8s_openapi::api::core::v1::PersistentVolume;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::ResourceExt;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tracing::info;

fn volume_of(pv: &PersistentVolume) -> Volume {
    let spec = pv.spec.clone().unwrap_or_default();
    Volume {
        provisioned_by: pv.annotations().get(PROVISIONED_BY).cloned(),
        phase: pv
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default(),
        reclaim_policy: spec
            .persistent_volume_reclaim_policy
            .clone()
            .unwrap_or_else(|| "Retain".into()),
        disk_uri: spec
            .flex_volume
            .and_then(|f| f.options)
            .and_then(|o| o.get("diskURI").cloned()),
        being_deleted: pv.metadata.deletion_timestamp.is_some(),
        has_finalizer: pv.finalizers().iter().any(|f| f == FINALIZER),
    }
}

/// Replaces the PV's finalizers; the resourceVersion makes it a no-op if the PV changed
/// meanwhile (the next reconcile tries again).
async fn set_finalizers(
    api: &Api<PersistentVolume>,
    pv: &PersistentVolume,
    finalizers: Vec<&str>,
) -> Result<(), Error> {
    let patch =
        json!({"metadata": {"resourceVersion": pv.resource_version(), "finalizers": finalizers}});
    api.patch(
        &pv.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}

async fn add_finalizer(api: &Api<PersistentVolume>, pv: &PersistentVolume) -> Result<(), Error> {
    let mut all: Vec<&str> = pv.finalizers().iter().map(String::as_str).collect();
    all.push(FINALIZER);
    set_finalizers(api, pv, all).await
}

async fn drop_finalizer(api: &Api<PersistentVolume>, pv: &PersistentVolume) -> Result<(), Error> {
    if !pv.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(());
    }
    let kept = pv
        .finalizers()
        .iter()
        .map(String::as_str)
        .filter(|f| *f != FINALIZER)
        .collect();
    set_finalizers(api, pv, kept).await
}

pub async fn reconcile(pv: Arc<PersistentVolume>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let action = attempt(&pv, &ctx).await?;
    ctx.backoff.forget(&pv.uid().unwrap_or_default());
    Ok(action)
}

async fn attempt(pv: &Arc<PersistentVolume>, ctx: &Arc<Ctx>) -> Result<Action, Error> {
    let api: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let volume = volume_of(pv);
    match pv_finalizer(&volume, &ctx.name) {
        FinalizerChange::Add => add_finalizer(&api, pv).await?,
        FinalizerChange::Remove => {
            if volume.being_deleted {
                ctx.metrics.deletion("kept");
            }
            drop_finalizer(&api, pv).await?;
        }
        FinalizerChange::Leave => {}
    }
    match deletion(&volume, &ctx.name) {
        Deletion::NotOurs | Deletion::Wait | Deletion::Keep => Ok(Action::await_change()),
        Deletion::DeleteDisk(uri) => {
            let id = parse_resource_id(&uri, ResourceKind::Disk).map_err(Error::Internal)?;
            match ctx.arm.delete_disk(&id.resource_group, &id.name).await {
                Ok(_) => {}
                Err(AzureError::OwnedByOtherVm { owner, .. }) => {
                    // Found by a read before any write: the volume is looked at again (reads
                    // only) until the disk is detached.
                    ctx.metrics.deletion("refused");
                    return Err(Error::Waiting(format!(
                        "disk {} is still attached to VM {owner}; it is deleted once detached",
                        id.name
                    )));
                }
                Err(e) => return Err(e.into()),
            }
            ctx.metrics.deletion("deleted");
            info!(pv = %pv.name_any(), disk = %id.name, "deleted the disk of a released volume");
            if pv.metadata.deletion_timestamp.is_none() {
                api.delete(&pv.name_any(), &DeleteParams::default()).await?;
            }
            if let Some(fresh) = api.get_opt(&pv.name_any()).await? {
                drop_finalizer(&api, &fresh).await?;
            }
            Ok(Action::await_change())
        }
    }
}

/// A failed attempt: for a volume whose disk is being deleted, an event saying why each time (the
/// library's deleteVolumeOperation), and a retry after its back-off.
pub fn error_policy(pv: Arc<PersistentVolume>, e: &Error, ctx: Arc<Ctx>) -> Action {
    let mut delay = ctx.backoff.next(&pv.uid().unwrap_or_default(), e);
    if matches!(e, Error::Waiting(_)) {
        // A disk still attached: kube-controller-manager detaches it within moments of the last
        // pod; it is deleted soon after, whatever the back-off has grown to.
        delay = delay.min(Duration::from_secs(30));
    }
    if matches!(
        deletion(&volume_of(&pv), &ctx.name),
        Deletion::DeleteDisk(_)
    ) && e.tells_the_user()
    {
        if !matches!(e, Error::Waiting(_)) {
            ctx.metrics.deletion("failed");
        }
        ctx.event_soon(
            pv.clone(),
            EventType::Warning,
            "VolumeFailedDelete",
            format!("deleting the volume's disk failed: {e} (tried again with back-off)"),
        );
    }
    tracing::warn!(pv = %pv.name_any(), error = %e, retry_in_secs = delay.as_secs(), "a volume's reconcile failed");
    Action::requeue(delay)
}
