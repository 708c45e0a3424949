//! Disks left behind by a crash: the provisioner died after a disk's PUT and before its PV, and
//! the claim went away before it came back. Such a disk carries the tags `provision` gave it; with
//! no PV of that name and no claim of that uid, nobody will ever use it.

use crate::run::{Ctx, Error};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::Api;
use kube::ResourceExt;
use tracing::{info, warn};

const PV_TAG: &str = "kubernetes.io-created-for-pv-name";
const CLAIM_TAG: &str = "kubernetes.io-created-for-pvc-name";
const NAMESPACE_TAG: &str = "kubernetes.io-created-for-pvc-namespace";

/// Deletes orphaned disks of the cluster's resource group; how many.
pub async fn sweep(ctx: &Ctx) -> Result<usize, Error> {
    let pvs: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let mut deleted = 0;
    for disk in ctx.arm.list_disks(&ctx.cluster.resource_group).await? {
        let Some(pv) = disk.tags.get(PV_TAG) else {
            continue;
        };
        let Some(uid) = pv.strip_prefix("pvc-") else {
            continue;
        };
        if !disk.attached_to().is_empty() || pvs.get_opt(pv).await?.is_some() {
            continue;
        }
        let (Some(ns), Some(claim)) = (disk.tags.get(NAMESPACE_TAG), disk.tags.get(CLAIM_TAG))
        else {
            continue;
        };
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), ns);
        if claims
            .get_opt(claim)
            .await?
            .is_some_and(|c| c.uid().as_deref() == Some(uid))
        {
            // Still being provisioned.
            continue;
        }
        info!(disk = %disk.name, claim = %format!("{ns}/{claim}"), "deleting an orphaned disk (its claim is gone and it has no PV)");
        match ctx
            .arm
            .delete_disk(&ctx.cluster.resource_group, &disk.name)
            .await
        {
            Ok(_) => deleted += 1,
            Err(e) => warn!(disk = %disk.name, error = %e, "could not delete an orphaned disk"),
        }
    }
    Ok(deleted)
}
