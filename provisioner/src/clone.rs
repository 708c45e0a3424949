//! Copies of claims (`dataSource: PersistentVolumeClaim`): the source read afresh for
//! [`crate::decide::clone_source`] to prove, protected while its copy is made, released after —
//! external-provisioner's `setCloneFinalizer` and CloningProtection controller
//! (pkg/controller/controller.go, clone_controller.go).
//!
//! The protection is `provisioner.storage.kubernetes.io/cloning-protection` on the source claim,
//! added (guarded by the resourceVersion the checks read) before the disk's PUT, removed once no
//! claim of the namespace is still being copied from it. Every attempt to start a copy also
//! writes its own mark (the claim's uid and the time) to the source's [`LAST_CLONE`] annotation:
//! the write always changes the source's resourceVersion, so a release that read the source
//! before it (and listed the claims before that copy was recorded) fails its guarded write and
//! looks again.

use crate::context::Ctx;
use crate::decide::{SourceClaim, SourceVolume};
use crate::error::Error;
use crate::keys::{provisioning_finalizer, CLONE_FINALIZER, PROVISIONED_BY};
use crate::quantity::bytes_of;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::ResourceExt;
use serde_json::json;
use tracing::info;

/// `<uid>@<time>` of the last attempt to start a copy of this claim.
pub const LAST_CLONE: &str = "flexdisk/last-clone";

fn storage(
    q: Option<
        &std::collections::BTreeMap<
            String,
            k8s_openapi::apimachinery::pkg::api::resource::Quantity,
        >,
    >,
) -> u64 {
    q.and_then(|m| m.get("storage"))
        .map(|q| bytes_of(&q.0))
        .unwrap_or(0)
}

/// The claim `name` of namespace `ns` and the volume it names, read now (not from a cache: the
/// proof must hold at the moment the copy starts). `None`: no such claim.
pub async fn read_source(
    ctx: &Ctx,
    ns: &str,
    name: &str,
) -> Result<Option<(SourceClaim, PersistentVolumeClaim)>, Error> {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), ns);
    let Some(src) = claims.get_opt(name).await? else {
        return Ok(None);
    };
    let spec = src.spec.clone().unwrap_or_default();
    let volume_name = spec.volume_name.clone().unwrap_or_default();
    let volume = if volume_name.is_empty() {
        None
    } else {
        let pvs: Api<PersistentVolume> = Api::all(ctx.client.clone());
        pvs.get_opt(&volume_name).await?.map(|pv| {
            let pv_spec = pv.spec.clone().unwrap_or_default();
            SourceVolume {
                provisioned_by: pv.annotations().get(PROVISIONED_BY).cloned(),
                phase: pv
                    .status
                    .as_ref()
                    .and_then(|s| s.phase.clone())
                    .unwrap_or_default(),
                claim_ref: pv_spec.claim_ref.as_ref().map(|r| {
                    (
                        r.namespace.clone().unwrap_or_default(),
                        r.name.clone().unwrap_or_default(),
                        r.uid.clone().unwrap_or_default(),
                    )
                }),
                disk_uri: pv_spec
                    .flex_volume
                    .as_ref()
                    .and_then(|f| f.options.as_ref())
                    .and_then(|o| o.get("diskURI").cloned()),
                capacity_bytes: storage(pv_spec.capacity.as_ref()),
                block: pv_spec.volume_mode.as_deref() == Some("Block"),
            }
        })
    };
    let source = SourceClaim {
        namespace: src.namespace().unwrap_or_default(),
        name: src.name_any(),
        uid: src.uid().unwrap_or_default(),
        phase: src
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default(),
        being_deleted: src.metadata.deletion_timestamp.is_some(),
        protected: src.finalizers().iter().any(|f| f == CLONE_FINALIZER),
        storage_class: spec.storage_class_name.clone(),
        request_bytes: storage(spec.resources.as_ref().and_then(|r| r.requests.as_ref())),
        capacity_bytes: storage(src.status.as_ref().and_then(|s| s.capacity.as_ref())),
        volume_name,
        volume,
    };
    Ok(Some((source, src)))
}

/// Protects `source` (as read for the checks) for the copy `clone_uid` is about to make. A source
/// changed since it was read is [`Error::Stale`]: it is read and checked again.
pub async fn protect(
    ctx: &Ctx,
    source: &PersistentVolumeClaim,
    clone_uid: &str,
) -> Result<(), Error> {
    let mut finalizers = source.finalizers().to_vec();
    if !finalizers.iter().any(|f| f == CLONE_FINALIZER) {
        finalizers.push(CLONE_FINALIZER.to_string());
    }
    // Unique per attempt (a clone that starts over writes a new value): the write always
    // changes the source's resourceVersion, which kube-apiserver leaves alone for a no-op.
    let attempt = format!(
        "{clone_uid}@{}",
        k8s_openapi::jiff::Timestamp::now().as_nanosecond()
    );
    let patch = json!({"metadata": {"resourceVersion": source.resource_version(),
        "finalizers": finalizers, "annotations": {LAST_CLONE: attempt}}});
    let claims: Api<PersistentVolumeClaim> =
        Api::namespaced(ctx.client.clone(), &source.namespace().unwrap_or_default());
    match claims
        .patch(
            &source.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => Err(Error::Stale(format!(
            "the source claim {} changed while its copy was being started",
            source.name_any()
        ))),
        Err(e) => Err(e.into()),
    }
}

/// Removes the protection from the claim `source` of `ns` unless a copy of it is still being made
/// (a claim copying it carries this provisioner's provisioning record). `false`: one is.
pub async fn release(ctx: &Ctx, ns: &str, source: &str) -> Result<bool, Error> {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), ns);
    let in_progress = provisioning_finalizer(&ctx.name);
    for _ in 0..5 {
        let Some(src) = claims.get_opt(source).await? else {
            return Ok(true);
        };
        if !src.finalizers().iter().any(|f| f == CLONE_FINALIZER) {
            return Ok(true);
        }
        // Read after the source: every copy whose LAST_CLONE write came before that read is
        // listed here (a list without a resourceVersion is a consistent read).
        let copying: Vec<String> = claims
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter(|c| {
                c.finalizers().contains(&in_progress) && source_of(c).as_deref() == Some(source)
            })
            .map(|c| c.name_any())
            .collect();
        if !copying.is_empty() {
            info!(claim = %format!("{ns}/{source}"), ?copying, "kept: still being copied");
            return Ok(false);
        }
        let kept: Vec<&String> = src
            .finalizers()
            .iter()
            .filter(|f| *f != CLONE_FINALIZER)
            .collect();
        let patch =
            json!({"metadata": {"resourceVersion": src.resource_version(), "finalizers": kept}});
        match claims
            .patch(source, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => return Ok(true),
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Stale(format!(
        "claim {ns}/{source} kept changing while its cloning protection was being removed"
    )))
}

/// The claim this one copies, if it copies one of its own namespace.
pub fn source_of(pvc: &PersistentVolumeClaim) -> Option<String> {
    let spec = pvc.spec.as_ref()?;
    let own = pvc.namespace();
    spec.data_source_ref
        .as_ref()
        .filter(|d| {
            d.kind == "PersistentVolumeClaim"
                && d.api_group.as_deref().is_none_or(str::is_empty)
                && d.namespace
                    .as_deref()
                    .is_none_or(|n| Some(n) == own.as_deref())
        })
        .map(|d| d.name.clone())
        .or_else(|| {
            spec.data_source
                .as_ref()
                .filter(|d| {
                    d.kind == "PersistentVolumeClaim"
                        && d.api_group.as_deref().is_none_or(str::is_empty)
                })
                .map(|d| d.name.clone())
        })
}
