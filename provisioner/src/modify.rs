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
//! refuses what can never succeed (a value outside the disk's range, a class that does not
//! apply) — and then nothing is sent again until the claim names another class; Azure's refusals
//! that pass (too many changes today) keep it `InProgress` with `ModifyVolumeError`, tried again
//! with a growing back-off. Events: `VolumeModify`, `VolumeModifySuccessful`,
//! `VolumeModifyFailed`. The PV cannot name the class (not CSI); the claim's status is where it
//! shows.

use crate::claim_status;
use crate::context::{Again, Ctx};
use crate::decide::{modify, AttributesClass, AttributesState, Modify};
use crate::error::Error;
use flexdisk_azure::{AzureError, Performance};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::events::EventType;
use kube::ResourceExt;
use serde_json::{json, Value};
use std::time::Duration;
use tracing::info;

const MODIFY_CONDITIONS: [&str; 2] = ["ModifyingVolume", "ModifyVolumeError"];

/// How often a claim whose class does not exist is looked at again (besides when it appears:
/// run.rs watches the classes).
const PENDING_RETRY: Duration = Duration::from_secs(60);

/// storage.k8s.io/v1 VolumeAttributesClass, as a dynamic resource (k8s-openapi's v1_33 types know
/// only v1beta1).
pub fn attributes_class_resource() -> ApiResource {
    let gvk = GroupVersionKind::gvk("storage.k8s.io", "v1", "VolumeAttributesClass");
    ApiResource::from_gvk_with_plural(&gvk, "volumeattributesclasses")
}

/// The claims (of `claims`, a watch cache) that name the VolumeAttributesClass `class`: looked at
/// again when it appears.
pub fn naming_attributes_class(
    claims: &[std::sync::Arc<PersistentVolumeClaim>],
    class: &str,
) -> Vec<kube::runtime::reflector::ObjectRef<PersistentVolumeClaim>> {
    claims
        .iter()
        .filter(|c| wanted(c) == class)
        .map(|c| kube::runtime::reflector::ObjectRef::from_obj(&**c))
        .collect()
}

/// The VolumeAttributesClass named `name`, read fresh (these are few and read only when a claim's
/// class changes).
pub async fn attributes_class(ctx: &Ctx, name: &str) -> Result<Option<AttributesClass>, Error> {
    let ar = attributes_class_resource();
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

/// The claim's conditions without the modify ones (`keep`: those kept), plus `add` (type,
/// message).
fn conditions(pvc: &PersistentVolumeClaim, keep: &[&str], add: Option<(&str, &str)>) -> Vec<Value> {
    claim_status::conditions(pvc, &MODIFY_CONDITIONS, keep, add.as_slice())
}

/// Azure's refusals that will not change by asking again: a value outside what the disk's SKU and
/// size allow — a 400 that names the parameter (external-resizer's Infeasible is the CSI
/// InvalidArgument). Azure's other refusals (too many performance changes today — whose code
/// Azure does not document — a busy disk) pass by themselves and are tried again, slowly; taking
/// one of them for infeasible would stop the class for good.
fn infeasible(e: &AzureError) -> bool {
    let names_a_value = |m: &str| {
        let m = m.to_ascii_lowercase();
        m.contains("diskiopsreadwrite") || m.contains("diskmbpsreadwrite")
    };
    match e {
        AzureError::InvalidParameter { message, .. } => names_a_value(message),
        AzureError::Other {
            status: Some(400),
            message,
            ..
        } => names_a_value(message),
        _ => false,
    }
}

/// The claim is bound to `pv` (ours); makes its disk what the claim's class of attributes says.
/// `None`: nothing to do.
pub async fn reconcile(
    ctx: &Ctx,
    pvc: &PersistentVolumeClaim,
    pv: &PersistentVolume,
) -> Result<Option<Again>, Error> {
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
            return Ok(Some(Again::After(PENDING_RETRY)));
        }
        Modify::Infeasible { target, message } => {
            fail_for_good(ctx, pvc, &target, &message).await?;
            return Ok(Some(Again::OnChange));
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

    // 1. The claim says what is being done (once: a retry finds it so).
    let in_progress = st.modifying == Some((target.clone(), "InProgress".into()))
        && pvc
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .any(|c| c.type_ == "ModifyingVolume");
    let pvc = if in_progress {
        pvc.clone()
    } else {
        claim_status::patch(
            ctx,
            pvc,
            json!({"modifyVolumeStatus": {"targetVolumeAttributesClassName": target, "status": "InProgress"},
                "conditions": conditions(pvc, &[], Some(("ModifyingVolume", "ModifyVolume operation in progress.")))}),
        )
        .await?
    };

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
                return Ok(Some(Again::OnChange));
            }
            Err(e) => {
                // As external-resizer's updateConditionBasedOnError: the claim stays InProgress,
                // ModifyingVolume beside ModifyVolumeError with the reason, tried again with a
                // back-off that grows — fast for what passes by itself (throttling, a busy disk),
                // from a minute up to an hour for Azure's refusals that last (a disk's performance
                // set too often today recovers within 24 hours by itself).
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
                    json!({"conditions": conditions(&pvc, &["ModifyingVolume"], Some(("ModifyVolumeError", &message)))}),
                )
                .await?;
                if e.is_retryable() {
                    return Err(e.into());
                }
                let e = Error::from(e);
                return Ok(Some(Again::After(
                    ctx.slow_backoff.next(&pvc.uid().unwrap_or_default(), &e),
                )));
            }
        }
    };

    // 3. The class is current.
    ctx.slow_backoff.forget(&pvc.uid().unwrap_or_default());
    claim_status::patch(
        ctx,
        &pvc,
        json!({"currentVolumeAttributesClassName": target, "modifyVolumeStatus": null,
            "conditions": conditions(&pvc, &[], None)}),
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
    Ok(Some(Again::OnChange))
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
            "conditions": conditions(pvc, &[], Some(("ModifyVolumeError", message)))}),
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
