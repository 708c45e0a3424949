//! Released volumes → deleted disks: the kube-rs edge around [`crate::decide::deletion`].

use crate::claims::{FINALIZER, PROVISIONED_BY};
use crate::decide::{deletion, Deletion, Volume};
use crate::run::{Ctx, Error};
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
    }
}

/// Removes our finalizer; the resourceVersion makes it a no-op if the PV changed meanwhile (the
/// next reconcile tries again).
async fn drop_finalizer(api: &Api<PersistentVolume>, pv: &PersistentVolume) -> Result<(), Error> {
    if !pv.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(());
    }
    let kept: Vec<&String> = pv.finalizers().iter().filter(|f| *f != FINALIZER).collect();
    let patch = json!({"metadata": {"resourceVersion": pv.resource_version(), "finalizers": kept}});
    api.patch(
        &pv.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}

pub async fn reconcile(pv: Arc<PersistentVolume>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let api: Api<PersistentVolume> = Api::all(ctx.client.clone());
    match deletion(&volume_of(&pv), &ctx.name) {
        Deletion::NotOurs | Deletion::Wait => Ok(Action::await_change()),
        Deletion::Keep => {
            if pv.metadata.deletion_timestamp.is_some() {
                ctx.metrics.deletion("kept");
                drop_finalizer(&api, &pv).await?;
            }
            Ok(Action::await_change())
        }
        Deletion::DeleteDisk(uri) => {
            let id = parse_resource_id(&uri, ResourceKind::Disk).map_err(Error::Internal)?;
            match ctx.arm.delete_disk(&id.resource_group, &id.name).await {
                Ok(_) => {}
                Err(AzureError::OwnedByOtherVm { owner, .. }) => {
                    ctx.metrics.deletion("refused");
                    ctx.event(
                        &*pv,
                        EventType::Warning,
                        "VolumeFailedDelete",
                        format!(
                            "disk {} is still attached to VM {owner}; it is deleted once detached",
                            id.name
                        ),
                    )
                    .await;
                    return Ok(Action::requeue(Duration::from_secs(15)));
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

pub fn error_policy(pv: Arc<PersistentVolume>, e: &Error, ctx: Arc<Ctx>) -> Action {
    ctx.metrics.deletion("failed");
    let delay = ctx.backoff.next(&pv.uid().unwrap_or_default(), e);
    tracing::warn!(error = %e, "deleting a volume failed; retrying");
    Action::requeue(delay)
}
