//! A claim's VolumeAttributesClass, carried out on its disk.
//!
//! Kubernetes changes a volume's attributes only through a CSI driver: kubernetes-csi/
//! external-resizer's modify controller skips volumes that are not its driver's CSI volumes, and
//! kube-apiserver refuses a `volumeAttributesClassName` on any PV that is not CSI
//! (`ValidatePersistentVolumeSpec`, kubernetes v1.37 `pkg/apis/core/validation/validation.go`:
//! "has to be specified when using volumeAttributesClassName"). So for flexdisk's volumes this
//! provisioner is the modifier, following external-resizer's conventions on the claim
//! (`pkg/modifycontroller`): `status.modifyVolumeStatus` says `InProgress` with the target while
//! the disk changes, then `status.currentVolumeAttributesClassName` names the class and the status
//! goes; `Pending` while the class does not exist; `Infeasible` with Azure's reason when it
//! refuses (wrong SKU, out of range, too many changes a day) — and then nothing is sent again
//! until the claim names another class. Events: `VolumeModify`, `VolumeModifySuccessful`,
//! `VolumeModifyFailed`. The PV cannot name the class (not CSI); the claim's status is where it
//! shows.

use crate::claim_status;
use crate::decide::{modify, AttributesClass, AttributesState, Modify};
use crate::run::{Ctx, Error};
use flexdisk_azure::{AzureError, Performance};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::ResourceExt;
use serde_json::{json, Value};
use std::time::Duration;
use tracing::info;

const MODIFY_CONDITIONS: [&str; 2] = ["ModifyingVolume", "ModifyVolumeError"];

/// How often a claim whose class does not exist is looked at again (its creation does not wake
/// the claim: there is no watch on classes of attributes).
const PENDING_RETRY: Duration = Duration::from_secs(60);

/// The VolumeAttributesClass named `name`, read fresh (storage.k8s.io/v1; these are few and read
/// only when a claim's class changes).
pub async fn attributes_class(ctx: &Ctx, name: &str) -> Result<Option<AttributesClass>, Error> {
    let gvk = GroupVersionKind::gvk("storage.k8s.io", "v1", "VolumeAttributesClass");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "volumeattributesclasses");
    let api: Api<DynamicObject> = Api::all_with(ctx.client.clone(), &ar);
    Ok(api.get_opt(name).await?.map(|o| AttributesClass {
        name: o.name_any(),
        driver: o.data["driverName"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        parameters: o.data["parameters"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default(),
    }))
}

/// The claim's class name as asked (`spec`), "" for none.
pub fn wanted(pvc: &PersistentVolumeClaim) -> String {
    pvc.spec
        .as_ref()
        .and_then(|s| s.volume_attributes_class_name.clone())
        .unwrap_or_default()
}

fn state(pvc: &PersistentVolumeClaim) -> AttributesState {
    let status = pvc.status.clone().unwrap_or_default();
    AttributesState {
        wanted: wanted(pvc),
        current: status
            .current_volume_attributes_class_name
            .unwrap_or_default(),
        modifying: status.modify_volume_status.map(|m| {
            (
                m.target_volume_attributes_class_name.unwrap_or_default(),
                m.status,
            )
        }),
    }
}

/// Whether the claim's class of attributes may need work (no I/O): the common case — nothing
/// asked, or the asked class current — is answered without reading anything.
pub fn may_need_work(pvc: &PersistentVolumeClaim) -> bool {
    let s = state(pvc);
    !s.wanted.is_empty() && (s.wanted != s.current || s.modifying.is_some())
}

/// The claim's conditions without the modify ones, plus `add` (type, message).
fn conditions(pvc: &PersistentVolumeClaim, add: Option<(&str, &str)>) -> Vec<Value> {
    claim_status::conditions(pvc, &MODIFY_CONDITIONS, &[], add.as_slice())
}

/// Azure's refusals that will not change by asking again.
fn infeasible(e: &AzureError) -> bool {
    matches!(
        e,
        AzureError::InvalidParameter { .. }
            | AzureError::Other {
                status: Some(400 | 409),
                ..
            }
    )
}

/// The claim is bound to `pv` (ours); makes its disk what the claim's class of attributes says.
/// `None`: nothing to do.
pub async fn reconcile(
    ctx: &Ctx,
    pvc: &PersistentVolumeClaim,
    pv: &PersistentVolume,
) -> Result<Option<Action>, Error> {
    if !may_need_work(pvc) {
        return Ok(None);
    }
    let st = state(pvc);
    let vac = attributes_class(ctx, &st.wanted).await?;
    let claim = format!("{}/{}", pvc.namespace().unwrap_or_default(), pvc.name_any());
    let (target, performance) = match modify(&st, vac.as_ref(), &ctx.name) {
        Modify::Nothing => return Ok(None),
        Modify::Pending { target, message } => {
            if st.modifying != Some((target.clone(), "Pending".into())) {
                ctx.metrics.modification("pending");
                claim_status::patch(
                    ctx,
                    pvc,
                    json!({"modifyVolumeStatus": {"targetVolumeAttributesClassName": target, "status": "Pending"}}),
                )
                .await?;
                ctx.event(pvc, EventType::Warning, "VolumeModifyFailed", message)
                    .await;
            }
            return Ok(Some(Action::requeue(PENDING_RETRY)));
        }
        Modify::Infeasible { target, message } => {
            fail_for_good(ctx, pvc, &target, &message).await?;
            return Ok(Some(Action::await_change()));
        }
        Modify::Apply {
            target,
            performance,
        } => (target, performance),
    };
    let Some(id) = claim_status::disk_of(pv) else {
        return Ok(None);
    };
    let id = id?;

    // 1. The claim says what is being done.
    let pvc = claim_status::patch(
        ctx,
        pvc,
        json!({"modifyVolumeStatus": {"targetVolumeAttributesClassName": target, "status": "InProgress"},
            "conditions": conditions(pvc, Some(("ModifyingVolume", "ModifyVolume operation in progress.")))}),
    )
    .await?;

    // 2. The disk, unless it is so already (a disk made with the class, a change interrupted
    // after Azure made it): Azure counts every change against a daily few.
    let disk = ctx
        .arm
        .get_disk(&id.resource_group, &id.name)
        .await?
        .ok_or_else(|| {
            Error::Internal(format!(
                "disk {} of volume {} does not exist",
                id.name,
                pv.name_any()
            ))
        })?;
    let changed = if disk.performance.satisfies(&performance) {
        false
    } else {
        ctx.event(
            &pvc,
            EventType::Normal,
            "VolumeModify",
            format!(
                "setting disk {} to {} for VolumeAttributesClass {target}",
                id.name,
                describe(&performance)
            ),
        )
        .await;
        match ctx
            .arm
            .set_disk_performance(&id.resource_group, &id.name, &performance)
            .await
        {
            Ok(_) => true,
            Err(e) if infeasible(&e) => {
                let message = format!(
                    "Azure refused to set disk {} to {}: {e}",
                    id.name,
                    describe(&performance)
                );
                fail_for_good(ctx, &pvc, &target, &message).await?;
                return Ok(Some(Action::await_change()));
            }
            Err(e) => {
                ctx.metrics.modification("failed");
                let message = format!(
                    "ModifyVolume failed with error: {e}. Waiting for retry. Still modifying to VolumeAttributesClass {target}"
                );
                ctx.event(
                    &pvc,
                    EventType::Warning,
                    "VolumeModifyFailed",
                    message.clone(),
                )
                .await;
                claim_status::patch(
                    ctx,
                    &pvc,
                    json!({"conditions": conditions(&pvc, Some(("ModifyVolumeError", &message)))}),
                )
                .await?;
                return Err(e.into());
            }
        }
    };

    // 3. The class is current.
    claim_status::patch(
        ctx,
        &pvc,
        json!({"currentVolumeAttributesClassName": target, "modifyVolumeStatus": null,
            "conditions": conditions(&pvc, None)}),
    )
    .await?;
    if changed {
        ctx.event(
            &pvc,
            EventType::Normal,
            "VolumeModifySuccessful",
            format!(
                "disk {} is {} (VolumeAttributesClass {target})",
                id.name,
                describe(&performance)
            ),
        )
        .await;
    }
    ctx.metrics
        .modification(if changed { "modified" } else { "unchanged" });
    info!(%claim, disk = %id.name, class = %target, changed, "volume attributes class current");
    Ok(Some(Action::await_change()))
}

/// `Infeasible`, with the reason as an event and a condition; nothing more until the claim
/// changes.
async fn fail_for_good(
    ctx: &Ctx,
    pvc: &PersistentVolumeClaim,
    target: &str,
    message: &str,
) -> Result<(), Error> {
    ctx.metrics.modification("infeasible");
    ctx.event(
        pvc,
        EventType::Warning,
        "VolumeModifyFailed",
        message.to_string(),
    )
    .await;
    claim_status::patch(
        ctx,
        pvc,
        json!({"modifyVolumeStatus": {"targetVolumeAttributesClassName": target, "status": "Infeasible"},
            "conditions": conditions(pvc, Some(("ModifyVolumeError", message)))}),
    )
    .await?;
    Ok(())
}

fn describe(p: &Performance) -> String {
    let mut parts = Vec::new();
    if let Some(i) = p.iops {
        parts.push(format!("{i} IOPS"));
    }
    if let Some(m) = p.mbps {
        parts.push(format!("{m} MB/s"));
    }
    if parts.is_empty() {
        "its current performance".into()
    } else {
        parts.join(", ")
    }
}
