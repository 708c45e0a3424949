//! Growing a bound claim's disk: kube-controller-manager's expand controller never loads FlexVolume
//! plugins (`ProbeExpandableVolumePlugins` has none; kubernetes issue #126881), so for our volumes
//! this provisioner is the external resizer. It follows kubernetes-csi/external-resizer
//! (`pkg/controller/expand_and_recover.go`, `resize_status.go`): the claim's status says
//! `ControllerResizeInProgress` with the size tried (`allocatedResources`, the request exactly as
//! written) and a `Resizing` condition; the disk grows in Azure; the PV's capacity follows, with the
//! claim's capacity before in `volume.alpha.kubernetes.io/pre-resize-capacity`; the claim then says
//! `NodeResizePending` with `FileSystemResizePending`, which is what makes kubelet run the driver's
//! `expandfs` on the node and finish the claim (`status.capacity`).
//!
//! Failures never loop: a size Azure refuses (`ControllerResizeInfeasible`) is tried again only
//! when the request changes or on the slow resync; where Azure needs the disk detached first
//! (shared disks, growth across 4 TiB) the growth waits until no pod uses the claim
//! (external-resizer's `inuse_pvc_store.go`) and its disk is detached; a read-only volume is
//! refused up front.
//!
//! kube-controller-manager's expand controller is not idle meanwhile: lacking a plugin, it runs a
//! no-op expansion of FlexVolume claims itself (the PV's capacity raised, the claim handed to the
//! node, the disk untouched), often before this provisioner; a claim waiting for the node has its
//! disk checked and grown to the volume's size ([`catch_up`]).

use crate::claim_status;
use crate::context::{Again, Ctx, RESYNC};
use crate::decide::{node_needs, resize_to, Sizes};
use crate::error::Error;
use crate::keys::{PRE_RESIZE_CAPACITY, PROVISIONED_BY};
use crate::quantity::bytes_of;
use flexdisk_azure::disks::gib_for_bytes;
use flexdisk_azure::AzureError;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::ResourceExt;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;
use tracing::info;

const RESIZE_CONDITIONS: [&str; 4] = [
    "Resizing",
    "FileSystemResizePending",
    "ControllerResizeError",
    "NodeResizeError",
];

fn storage(q: Option<&BTreeMap<String, Quantity>>) -> Option<&str> {
    q.and_then(|m| m.get("storage")).map(|q| q.0.as_str())
}

fn sizes(pvc: &PersistentVolumeClaim, pv: &PersistentVolume) -> Sizes {
    let status = pvc.status.clone().unwrap_or_default();
    let condition = |t: &str| {
        status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == t && c.status == "True")
    };
    Sizes {
        request: storage(
            pvc.spec
                .as_ref()
                .and_then(|s| s.resources.as_ref())
                .and_then(|r| r.requests.as_ref()),
        )
        .map_or(0, bytes_of),
        capacity: storage(status.capacity.as_ref()).map_or(0, bytes_of),
        volume: storage(pv.spec.as_ref().and_then(|s| s.capacity.as_ref())).map_or(0, bytes_of),
        allocated: storage(status.allocated_resources.as_ref()).map(bytes_of),
        status: status
            .allocated_resource_statuses
            .as_ref()
            .and_then(|s| s.get("storage"))
            .cloned(),
        fs_resize_pending: condition("FileSystemResizePending"),
        failed_for_good: condition("ControllerResizeError"),
    }
}

/// The quantity to record as allocated for `target` bytes: the request or the earlier allocation
/// exactly as written (`2500Mi` stays `2500Mi`, not a rounded-up `3Gi`), else plain bytes.
fn quantity_for(pvc: &PersistentVolumeClaim, target: u64) -> String {
    let request = storage(
        pvc.spec
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref()),
    );
    let allocated = storage(
        pvc.status
            .as_ref()
            .and_then(|s| s.allocated_resources.as_ref()),
    );
    [request, allocated]
        .into_iter()
        .flatten()
        .find(|q| bytes_of(q) == target)
        .map_or_else(|| target.to_string(), str::to_string)
}

/// The claim's conditions without the resize ones (`keep`: those kept), plus `add`.
fn conditions(pvc: &PersistentVolumeClaim, keep: &[&str], add: &[(&str, &str)]) -> Vec<Value> {
    claim_status::conditions(pvc, &RESIZE_CONDITIONS, keep, add)
}

fn condition_says(pvc: &PersistentVolumeClaim, type_: &str, message: &str) -> bool {
    pvc.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == type_ && c.message.as_deref() == Some(message))
}

/// Whether `pvc` is bound to `pv`, a volume of this provisioner: the binding finished
/// ([`claim_status::bound`]) and the volume names the claim.
pub fn bound_to(ctx: &Ctx, pvc: &PersistentVolumeClaim, pv: &PersistentVolume) -> bool {
    claim_status::bound(pvc)
        && pv.annotations().get(PROVISIONED_BY) == Some(&ctx.name)
        && pv
            .spec
            .as_ref()
            .and_then(|s| s.claim_ref.as_ref())
            .and_then(|r| r.uid.as_deref())
            == pvc.uid().as_deref()
}

/// The node has grown the filesystem to the volume's size (`isNodeExpandComplete`).
fn node_done(pvc: &PersistentVolumeClaim, pv: &PersistentVolume) -> bool {
    let z = sizes(pvc, pv);
    z.capacity >= z.volume
}

/// Whether the resizer has something to do for `pvc` bound to `pv` (ours): grow, or tidy up after
/// the node finished.
pub fn needs_work(ctx: &Ctx, pvc: &PersistentVolumeClaim, pv: &PersistentVolume) -> bool {
    let z = sizes(pvc, pv);
    bound_to(ctx, pvc, pv)
        && (resize_to(&z).is_some()
            || node_needs(&z).is_some()
            || (pv.annotations().contains_key(PRE_RESIZE_CAPACITY) && node_done(pvc, pv)))
}

/// Read-only wherever it is mounted (ReadOnlyMany, or a PV that says so): no node can grow its
/// filesystem, and kubelet would try (it skips only pods that mount the claim `readOnly`,
/// operation_generator.go nodeExpandVolume) and fail the pods' mount.
fn read_only(pvc: &PersistentVolumeClaim, pv: &PersistentVolume) -> bool {
    let pv_ro = pv
        .spec
        .as_ref()
        .and_then(|s| s.flex_volume.as_ref())
        .and_then(|f| f.read_only)
        .unwrap_or(false);
    pv_ro || claim_status::read_only_many(pvc)
}

/// Whether the pod names the claim among its volumes — directly or through a generic ephemeral
/// volume (whose claim is named `<pod>-<volume>`).
pub fn names_claim(pod: &Pod, claim: &str) -> bool {
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .any(|v| {
            v.persistent_volume_claim
                .as_ref()
                .is_some_and(|c| c.claim_name == claim)
                || (v.ephemeral.is_some() && format!("{}-{}", pod.name_any(), v.name) == claim)
        })
}

fn read_only_refusal(pv: &PersistentVolume) -> String {
    format!(
        "volume {} is read-only on every node, so no node can grow its filesystem (and kubelet's attempt would \
         keep the claim's pods from starting): the disk is not grown; set the claim's request back to its capacity",
        pv.name_any()
    )
}

/// The pods of `ns` (not finished) that use the claim, by name.
pub fn pods_using(pods: &[std::sync::Arc<Pod>], ns: &str, claim: &str) -> Vec<String> {
    pods.iter()
        .filter(|p| p.namespace().as_deref() == Some(ns))
        .filter(|p| {
            !matches!(
                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            )
        })
        .filter(|p| names_claim(p, claim))
        .map(|p| p.name_any())
        .collect()
}

/// Whether Azure's 409 means "detach the disk first" (a shared disk, or growth across 4 TiB of a
/// Standard/Premium disk: Azure's expand-without-downtime does neither) rather than another
/// conflict.
fn needs_detach(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("detach") || m.contains("while attached") || m.contains("deallocat")
}

/// The claim is bound to `pv`; grows its disk if the claim asks for more. `None`: nothing to do.
pub async fn reconcile(
    ctx: &Ctx,
    pvc: &PersistentVolumeClaim,
    pv: &PersistentVolume,
) -> Result<Option<Again>, Error> {
    if !bound_to(ctx, pvc, pv) {
        return Ok(None);
    }
    let pvs: Api<PersistentVolume> = Api::all(ctx.client.clone());
    // The node's part is done: the capacity before the growth is no longer needed.
    let mut annotated = pv.annotations().contains_key(PRE_RESIZE_CAPACITY);
    if annotated && node_done(pvc, pv) {
        annotated = false;
        pvs.patch(
            &pv.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"annotations": {PRE_RESIZE_CAPACITY: null}}})),
        )
        .await?;
    }
    let ns = pvc.namespace().unwrap_or_default();
    let uid = pvc.uid().unwrap_or_default();
    let key = ObjectRef::<PersistentVolumeClaim>::new(&pvc.name_any()).within(&ns);
    let z = sizes(pvc, pv);
    let target = resize_to(&z);
    // Waiting for a detach holds only for the size Azure refused (a lowered request, or none,
    // starts afresh).
    let waiting = ctx.waits_for_detach(&key, &uid, target);
    let Some(target) = target else {
        return match node_needs(&z) {
            Some(bytes) => catch_up(ctx, pvc, pv, bytes).await,
            None => Ok(None),
        };
    };
    let Some(id) = claim_status::disk_of(pv) else {
        return Ok(None);
    };
    let id = id?;
    let gib = gib_for_bytes(target);
    let allocated = quantity_for(pvc, target);
    let status = sizes(pvc, pv).status;

    if read_only(pvc, pv) {
        infeasible(ctx, pvc, &allocated, &read_only_refusal(pv)).await?;
        return Ok(Some(Again::After(RESYNC)));
    }
    // A size Azure refused is tried again only on the slow resync or when the request changes
    // (external-resizer's slowSet).
    // kube-controller-manager's no-op expansion first writes ControllerResizeInProgress with the
    // same size: not a reason to ask Azure again either.
    if matches!(
        status.as_deref(),
        Some("ControllerResizeInfeasible" | "ControllerResizeInProgress")
    ) && ctx.refused_recently(&uid, target).is_some()
    {
        return Ok(Some(Again::After(RESYNC)));
    }

    // Azure wanted the disk detached: nothing is tried while a pod uses the claim, and then only
    // once Azure shows the disk detached (kube-controller-manager detaches it a moment after the
    // last pod goes). The pod watch wakes the claim (run.rs).
    if waiting {
        if let Some(again) = still_attached(ctx, &key, pvc, &id).await? {
            return Ok(Some(again));
        }
    }

    // 1. The claim says what is being tried — once per size (a retry of the same size, as
    // external-resizer's updateStatus=false, writes nothing).
    let recorded = storage(
        pvc.status
            .as_ref()
            .and_then(|s| s.allocated_resources.as_ref()),
    ) == Some(allocated.as_str())
        && matches!(
            status.as_deref(),
            Some("ControllerResizeInProgress" | "ControllerResizeInfeasible")
        );
    let pvc = if recorded {
        pvc.clone()
    } else {
        let pvc = claim_status::patch(
            ctx,
            pvc,
            json!({"conditions": conditions(pvc, &[], &[("Resizing", "")]),
                "allocatedResources": {"storage": allocated},
                "allocatedResourceStatuses": {"storage": "ControllerResizeInProgress"}}),
        )
        .await?;
        ctx.event(
            &pvc,
            EventType::Normal,
            "Resizing",
            format!(
                "growing disk {} to {gib} GiB for volume {}",
                id.name,
                pv.name_any()
            ),
        )
        .await;
        pvc
    };

    // 2. The disk.
    let disk = match ctx.arm.grow_disk(&id.resource_group, &id.name, gib).await {
        Ok(d) => {
            ctx.refused_sizes.forget(&uid);
            d
        }
        Err(AzureError::Other {
            status: Some(409),
            message,
            ..
        }) if needs_detach(&message) => {
            return told_to_detach(ctx, &pvc, key, &id, target, &message).await;
        }
        Err(
            e @ (AzureError::InvalidParameter { .. }
            | AzureError::Other {
                status: Some(400), ..
            }),
        ) => {
            let why = format!(
                "disk {} cannot grow to {gib} GiB: {e}; lower the claim's request to a size Azure allows",
                id.name
            );
            ctx.size_refused(&uid, target, &why);
            infeasible(ctx, &pvc, &allocated, &why).await?;
            return Ok(Some(Again::After(RESYNC)));
        }
        Err(e) => {
            ctx.metrics.resize("failed");
            ctx.event(
                &pvc,
                EventType::Warning,
                "VolumeResizeFailed",
                format!("growing disk {} to {gib} GiB: {e} (retried)", id.name),
            )
            .await;
            return Err(e.into());
        }
    };

    // 3. The volume, with the claim's capacity before (the PV controller gives it to a claim
    // bound to the volume later, so that kubelet still grows the filesystem), then 4. the
    // node's part.
    let before = storage(pvc.status.as_ref().and_then(|s| s.capacity.as_ref()))
        .unwrap_or_default()
        .to_string();
    let mut meta = json!({});
    if !before.is_empty() && !annotated {
        meta = json!({"annotations": {PRE_RESIZE_CAPACITY: before}});
    }
    pvs.patch(
        &pv.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&json!({"metadata": meta,
            "spec": {"capacity": {"storage": format!("{}Gi", disk.size_gib)}}})),
    )
    .await?;
    claim_status::patch(
        ctx,
        &pvc,
        json!({"conditions": conditions(&pvc, &["Resizing"], &[("FileSystemResizePending",
                "Waiting for user to (re-)start a pod to finish file system resize of volume on node.")]),
            "allocatedResourceStatuses": {"storage": "NodeResizePending"}}),
    )
    .await?;
    ctx.event(
        &pvc,
        EventType::Normal,
        "FileSystemResizeRequired",
        format!(
            "disk {} is {} GiB; the filesystem grows on the node",
            id.name, disk.size_gib
        ),
    )
    .await;
    ctx.metrics.resize("grown");
    info!(claim = %format!("{ns}/{}", pvc.name_any()), disk = %id.name, gib = disk.size_gib, "grown");
    // The node's answer (kubelet found it infeasible) is looked at on the slow resync, as
    // external-resizer's resync does; a new request wakes the claim at once.
    Ok(Some(Again::After(RESYNC)))
}

/// Azure wants the disk detached before it grows to `target` bytes: the claim says so — once — with
/// the pods that use it (`ControllerResizeInProgress` and a `ControllerResizeError` condition),
/// and waits: for those pods to go (the pod watch wakes it), or, with none, for Azure to show the
/// disk detached (reads only, soon).
async fn told_to_detach(
    ctx: &Ctx,
    pvc: &PersistentVolumeClaim,
    key: ObjectRef<PersistentVolumeClaim>,
    id: &flexdisk_azure::naming::ResourceId,
    target: u64,
    message: &str,
) -> Result<Option<Again>, Error> {
    ctx.metrics.resize("needs_detach");
    let ns = pvc.namespace().unwrap_or_default();
    ctx.wait_for_detach(key, &pvc.uid().unwrap_or_default(), target);
    let users = pods_using(&ctx.pods.state(), &ns, &pvc.name_any());
    let why = format!(
        "Azure grows disk {} to {} GiB only while it is detached ({message}); it grows once no pod uses \
         the claim{}",
        id.name,
        gib_for_bytes(target),
        if users.is_empty() {
            String::new()
        } else {
            format!(" (now: {})", users.join(", "))
        }
    );
    ctx.event(pvc, EventType::Warning, "VolumeResizeFailed", why.clone())
        .await;
    let allocated = quantity_for(pvc, target);
    let status = pvc.status.as_ref();
    let said = condition_says(pvc, "ControllerResizeError", &why)
        && storage(status.and_then(|s| s.allocated_resources.as_ref())) == Some(allocated.as_str())
        && status
            .and_then(|s| s.allocated_resource_statuses.as_ref())
            .and_then(|s| s.get("storage"))
            .is_some_and(|s| s == "ControllerResizeInProgress");
    if !said {
        claim_status::patch(
            ctx,
            pvc,
            json!({"conditions": conditions(pvc, &["Resizing"], &[("ControllerResizeError", &why)]),
                "allocatedResources": {"storage": allocated},
                "allocatedResourceStatuses": {"storage": "ControllerResizeInProgress"}}),
        )
        .await?;
    }
    Ok(Some(Again::After(if users.is_empty() {
        Duration::from_secs(10)
    } else {
        RESYNC
    })))
}

/// Azure wanted the disk detached before growing it: whether that still holds — a pod uses the
/// claim (looked at again when one goes), or Azure shows the disk attached (reads only,
/// with back-off). `None`: the growth may be tried.
async fn still_attached(
    ctx: &Ctx,
    key: &ObjectRef<PersistentVolumeClaim>,
    pvc: &PersistentVolumeClaim,
    id: &flexdisk_azure::naming::ResourceId,
) -> Result<Option<Again>, Error> {
    let ns = pvc.namespace().unwrap_or_default();
    if !pods_using(&ctx.pods.state(), &ns, &pvc.name_any()).is_empty() {
        return Ok(Some(Again::After(RESYNC)));
    }
    let disk = ctx.arm.get_disk(&id.resource_group, &id.name).await?;
    if let Some(vms) = disk.map(|d| d.attached_to()).filter(|v| !v.is_empty()) {
        return Err(Error::Waiting(format!(
            "disk {} is still attached to {}; it grows once detached",
            id.name,
            vms.join(", ")
        )));
    }
    ctx.stop_waiting_for_detach(key);
    Ok(None)
}

/// The claim waits for the node to grow the filesystem to the volume's `bytes`: the disk must have
/// them first. kube-controller-manager's expand controller hands every FlexVolume claim to the
/// node itself, with a no-op "expansion" that raises the PV's capacity and leaves the disk as it
/// is (see [`node_needs`]), and it often does so before this provisioner acts; the disk is grown
/// here to what the volume says. Where Azure refuses that size, the volume is made to say what
/// the disk is (a PV larger than its disk would have kubelet grow a filesystem past the device)
/// and the claim is `ControllerResizeInfeasible`; where Azure wants the disk detached first, the
/// claim waits for that as any growth does.
async fn catch_up(
    ctx: &Ctx,
    pvc: &PersistentVolumeClaim,
    pv: &PersistentVolume,
    bytes: u64,
) -> Result<Option<Again>, Error> {
    let Some(id) = claim_status::disk_of(pv) else {
        return Ok(None);
    };
    let id = id?;
    let gib = gib_for_bytes(bytes);
    let Some(disk) = ctx.arm.get_disk(&id.resource_group, &id.name).await? else {
        return Ok(None);
    };
    // Looked at again on the slow resync: kubelet may find its part infeasible.
    let later = Some(Again::After(RESYNC));
    let ns = pvc.namespace().unwrap_or_default();
    let uid = pvc.uid().unwrap_or_default();
    let key = ObjectRef::<PersistentVolumeClaim>::new(&pvc.name_any()).within(&ns);
    let pvs: Api<PersistentVolume> = Api::all(ctx.client.clone());
    // A PV larger than its disk would have kubelet grow a filesystem past the device.
    let back_to_the_disk = || async {
        pvs.patch(
            &pv.name_any(),
            &PatchParams::default(),
            &Patch::Merge(
                &json!({"spec": {"capacity": {"storage": format!("{}Gi", disk.size_gib)}}}),
            ),
        )
        .await
    };
    // A growth no node may do, handed to the node by kube-controller-manager (whose worker may
    // come after this provisioner's refusal, and may have raised the volume already or not):
    // the volume says what the disk is again — before kubelet's attempt keeps a pod from
    // starting (kubelet expands only a claim that says NodeResizePending) — and the claim is
    // refused again. A size refused a moment ago (by this provisioner's own try, which
    // kube-controller-manager's hand-over overtook) is not asked again.
    let tried = sizes(pvc, pv).allocated.unwrap_or(bytes);
    let refusal = if read_only(pvc, pv) {
        Some(read_only_refusal(pv))
    } else if gib_for_bytes(tried.max(bytes)) > disk.size_gib {
        ctx.refused_recently(&uid, tried)
            .or_else(|| ctx.refused_recently(&uid, bytes))
    } else {
        // The disk has that size already (grown since the refusal): nothing to refuse.
        None
    };
    if let Some(why) = refusal {
        if gib > disk.size_gib {
            back_to_the_disk().await?;
        }
        infeasible(ctx, pvc, &quantity_for(pvc, tried), &why).await?;
        return Ok(later);
    }
    if disk.size_gib >= gib {
        return Ok(later);
    }
    // Already told to wait for a detach (this provisioner's own growth met it first).
    if ctx.waits_for_detach(&key, &uid, Some(bytes)) {
        if let Some(again) = still_attached(ctx, &key, pvc, &id).await? {
            return Ok(Some(again));
        }
    }
    let allocated = quantity_for(pvc, bytes);
    ctx.event(
        pvc,
        EventType::Normal,
        "Resizing",
        format!(
            "growing disk {} to {gib} GiB for volume {}",
            id.name,
            pv.name_any()
        ),
    )
    .await;
    match ctx.arm.grow_disk(&id.resource_group, &id.name, gib).await {
        Ok(grown) => {
            ctx.refused_sizes.forget(&uid);
            ctx.metrics.resize("grown");
            ctx.event(
                pvc,
                EventType::Normal,
                "FileSystemResizeRequired",
                format!(
                    "disk {} is {} GiB, as volume {} says; the filesystem grows on the node",
                    id.name,
                    grown.size_gib,
                    pv.name_any()
                ),
            )
            .await;
            info!(claim = %format!("{ns}/{}", pvc.name_any()), disk = %id.name,
                gib = grown.size_gib, "grown to the volume's size for the node");
            Ok(later)
        }
        Err(AzureError::Other {
            status: Some(409),
            message,
            ..
        }) if needs_detach(&message) => {
            // The controller's part again, waiting for the detach: the node cannot do its part
            // on a disk that has not grown.
            told_to_detach(ctx, pvc, key, &id, bytes, &message).await
        }
        Err(
            e @ (AzureError::InvalidParameter { .. }
            | AzureError::Other {
                status: Some(400), ..
            }),
        ) => {
            back_to_the_disk().await?;
            let why = format!(
                "disk {} cannot grow to {gib} GiB: {e}; volume {} says {} GiB again, what the disk is — lower the \
                 claim's request to a size Azure allows",
                id.name,
                pv.name_any(),
                disk.size_gib
            );
            ctx.size_refused(&uid, bytes, &why);
            infeasible(ctx, pvc, &allocated, &why).await?;
            Ok(later)
        }
        Err(e) => {
            ctx.metrics.resize("failed");
            ctx.event(
                pvc,
                EventType::Warning,
                "VolumeResizeFailed",
                format!("growing disk {} to {gib} GiB: {e} (retried)", id.name),
            )
            .await;
            Err(e.into())
        }
    }
}

/// `ControllerResizeInfeasible` with the reason (a condition and an event) — written once per
/// reason and size: a later refusal of the same finds it so and writes nothing but the event
/// (folded into its series).
async fn infeasible(
    ctx: &Ctx,
    pvc: &PersistentVolumeClaim,
    allocated: &str,
    why: &str,
) -> Result<(), Error> {
    let already = pvc
        .status
        .as_ref()
        .and_then(|s| s.allocated_resource_statuses.as_ref())
        .and_then(|s| s.get("storage"))
        .is_some_and(|s| s == "ControllerResizeInfeasible")
        && condition_says(pvc, "ControllerResizeError", why)
        && storage(
            pvc.status
                .as_ref()
                .and_then(|s| s.allocated_resources.as_ref()),
        ) == Some(allocated);
    if already {
        return Ok(());
    }
    ctx.metrics.resize("infeasible");
    ctx.event(
        pvc,
        EventType::Warning,
        "VolumeResizeFailed",
        why.to_string(),
    )
    .await;
    claim_status::patch(
        ctx,
        pvc,
        json!({"conditions": conditions(pvc, &[], &[("ControllerResizeError", why)]),
            "allocatedResources": {"storage": allocated},
            "allocatedResourceStatuses": {"storage": "ControllerResizeInfeasible"}}),
    )
    .await?;
    Ok(())
}
