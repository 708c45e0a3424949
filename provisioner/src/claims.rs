//! Claims → disks and PVs: the kube-rs edge around [`crate::decide::provision`].

use crate::context::{Again, Ctx, RESYNC};
use crate::decide::{
    another_node_may_help, clone_source, performance_of, provision, unschedulable_topology,
    with_performance, Claim, Class, DataSource, Decision, Placement, PvPlan, CSI_ZONE_LABEL,
    ZONE_LABEL,
};
use crate::error::Error;
use crate::intent;
use crate::keys::{
    CLONE_FINALIZER, FINALIZER, PROVISIONED_BY, PROVISIONER_BETA_KEY, PROVISIONER_KEY,
    SELECTED_NODE_KEY,
};
use crate::quantity::bytes_of;
use flexdisk_azure::{DiskInfo, DiskSpec};
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::ResourceExt;
use serde_json::json;
use std::sync::Arc;
use tracing::info;

fn claim_of(pvc: &PersistentVolumeClaim) -> Claim {
    let spec = pvc.spec.clone().unwrap_or_default();
    Claim {
        namespace: pvc.namespace().unwrap_or_default(),
        name: pvc.name_any(),
        uid: pvc.uid().unwrap_or_default(),
        request_bytes: spec
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage"))
            .map(|q| bytes_of(&q.0))
            .unwrap_or(0),
        access_modes: spec.access_modes.clone().unwrap_or_default(),
        volume_mode: spec.volume_mode.clone(),
        has_selector: spec.selector.is_some(),
        data_source: spec
            .data_source_ref
            .as_ref()
            .map(|d| DataSource {
                api_group: d.api_group.clone(),
                kind: d.kind.clone(),
                name: d.name.clone(),
                namespace: d.namespace.clone().filter(|n| !n.is_empty()),
            })
            .or_else(|| {
                spec.data_source.as_ref().map(|d| DataSource {
                    api_group: d.api_group.clone(),
                    kind: d.kind.clone(),
                    name: d.name.clone(),
                    namespace: None,
                })
            }),
        provisioning_recorded: false,
    }
}

fn class_of(sc: &StorageClass) -> Class {
    Class {
        name: sc.name_any(),
        parameters: sc.parameters.clone().unwrap_or_default(),
        reclaim_policy: sc.reclaim_policy.clone(),
        mount_options: sc.mount_options.clone().unwrap_or_default(),
        allowed_zones: sc
            .allowed_topologies
            .iter()
            .flatten()
            .flat_map(|t| t.match_label_expressions.iter().flatten())
            .filter(|e| e.key == ZONE_LABEL || e.key == CSI_ZONE_LABEL)
            .flat_map(|e| e.values.clone())
            .collect(),
        csi_zone_key: sc
            .allowed_topologies
            .iter()
            .flatten()
            .flat_map(|t| t.match_label_expressions.iter().flatten())
            .any(|e| e.key == CSI_ZONE_LABEL),
    }
}

/// The unbound claims (of `claims`, a watch cache) that name the StorageClass `class`: looked at
/// again when it appears or changes.
pub fn naming_class(
    claims: &[Arc<PersistentVolumeClaim>],
    class: &str,
) -> Vec<ObjectRef<PersistentVolumeClaim>> {
    claims
        .iter()
        .filter(|c| {
            let spec = c.spec.as_ref();
            spec.and_then(|s| s.storage_class_name.as_deref()) == Some(class)
                && spec
                    .and_then(|s| s.volume_name.as_deref())
                    .is_none_or(str::is_empty)
        })
        .map(|c| ObjectRef::from_obj(&**c))
        .collect()
}

/// Asks the scheduler to choose another node for the claim's pod, as the library does
/// (`rescheduleProvisioning` in sig-storage-lib-external-provisioner's controller.go): whatever
/// was made for the node `attempted` goes, then `volume.kubernetes.io/selected-node` — only while
/// it still names `attempted` (a newer choice stays). The claim is read afresh: the one the
/// reconcile started with may not show the provisioning record yet.
async fn reschedule(
    ctx: &Ctx,
    pvc: &PersistentVolumeClaim,
    attempted: &str,
    why: String,
) -> Result<Action, Error> {
    let claims: Api<PersistentVolumeClaim> =
        Api::namespaced(ctx.client.clone(), &pvc.namespace().unwrap_or_default());
    let fresh = |c: Option<PersistentVolumeClaim>| c.filter(|c| c.uid() == pvc.uid());
    let Some(now) = fresh(claims.get_opt(&pvc.name_any()).await?) else {
        return Ok(Action::await_change());
    };
    if !intent::abandon(ctx, &now).await? {
        return Ok(Action::await_change());
    }
    let Some(now) = fresh(claims.get_opt(&pvc.name_any()).await?) else {
        return Ok(Action::await_change());
    };
    if now.annotations().get(SELECTED_NODE_KEY).map(String::as_str) != Some(attempted) {
        return Ok(Action::await_change());
    }
    let patch = json!({"metadata": {"resourceVersion": now.resource_version(),
        "annotations": {SELECTED_NODE_KEY: null}}});
    match claims
        .patch(
            &pvc.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {
            return Err(Error::Stale(format!(
                "claim {}/{} changed while being sent back to the scheduler",
                pvc.namespace().unwrap_or_default(),
                pvc.name_any()
            )))
        }
        Err(e) => return Err(e.into()),
    }
    ctx.metrics
        .provision(&class_name_of(pvc), "rescheduled", None);
    ctx.event(
        pvc,
        EventType::Warning,
        "ProvisioningFailed",
        format!("{why}; the scheduler is asked to choose another node"),
    )
    .await;
    info!(claim = %format!("{}/{}", pvc.namespace().unwrap_or_default(), pvc.name_any()), %why, "rescheduled");
    Ok(Action::await_change())
}

/// A claim not handed to us (yet). kube-controller-manager hands a WaitForFirstConsumer claim
/// over only once the scheduler has chosen a node (pv_controller.go, syncUnboundClaim); if the
/// class names zones with a label no node has, none ever is, and only here can the owner be told.
async fn unscheduled(ctx: &Ctx, pvc: &PersistentVolumeClaim) -> Result<Action, Error> {
    let waiting = pvc.metadata.deletion_timestamp.is_none()
        && pvc
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.as_deref())
            .is_none_or(str::is_empty)
        && !pvc.annotations().contains_key(SELECTED_NODE_KEY);
    let Some(sc) = ctx
        .classes
        .get(&ObjectRef::new(&class_name_of(pvc)))
        .filter(|sc| waiting && sc.provisioner == ctx.name)
    else {
        return Ok(Action::await_change());
    };
    let class = class_of(&sc);
    let delayed = sc.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer");
    if delayed && class.csi_zone_key {
        if let Some(why) =
            unschedulable_topology(&class, delayed, some_node_has_csi_label(ctx).await?)
        {
            ctx.event(pvc, EventType::Warning, "ProvisioningFailed", why)
                .await;
            return Ok(Action::requeue(RESYNC));
        }
    }
    Ok(Action::await_change())
}

/// Whether any node carries the CSI driver's zone label (one name listed is enough).
async fn some_node_has_csi_label(ctx: &Ctx) -> Result<bool, Error> {
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let list = nodes
        .list_metadata(&ListParams::default().labels(CSI_ZONE_LABEL).limit(1))
        .await?;
    Ok(!list.items.is_empty())
}

fn class_name_of(pvc: &PersistentVolumeClaim) -> String {
    pvc.spec
        .as_ref()
        .and_then(|s| s.storage_class_name.clone())
        .unwrap_or_default()
}

/// Whether this claim is for us to provision now.
fn ours(pvc: &PersistentVolumeClaim, name: &str) -> bool {
    let a = pvc.annotations();
    let asked = a
        .get(PROVISIONER_KEY)
        .or_else(|| a.get(PROVISIONER_BETA_KEY))
        .is_some_and(|p| p == name);
    let unbound = pvc
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.as_ref())
        .is_none_or(|v| v.is_empty());
    asked && unbound && pvc.metadata.deletion_timestamp.is_none()
}

pub fn pv_object(plan: &PvPlan, provisioner: &str) -> Result<PersistentVolume, Error> {
    let (ns, name, uid) = &plan.claim;
    let mut spec = json!({
        "capacity": {"storage": format!("{}Gi", plan.capacity_gib)},
        "accessModes": plan.access_modes,
        "persistentVolumeReclaimPolicy": plan.reclaim_policy,
        "storageClassName": plan.storage_class,
        "volumeMode": "Filesystem",
        "claimRef": {"kind": "PersistentVolumeClaim", "apiVersion": "v1", "namespace": ns, "name": name, "uid": uid},
        "flexVolume": {"driver": provisioner, "fsType": plan.fs_type,
            "options": {"diskURI": plan.disk_uri, "cachingMode": plan.caching.as_str(), "kind": "managed"}},
    });
    if plan.read_only {
        // Every driver call sees the volume read-only, whatever the pod says: the driver's own
        // `readOnly` option. Not `kubernetes.io/readwrite` (which kubelet derives from the pod's
        // claim, `pkg/volume/flexvolume/util.go` getReadOnly): kube-apiserver refuses PV options
        // in the kubernetes.io namespace (validateFlexPersistentVolumeSource) — seen on the real
        // cluster. `flexVolume.readOnly` makes kubelet's bind into the container read-only too.
        spec["flexVolume"]["readOnly"] = json!(true);
        spec["flexVolume"]["options"]["readOnly"] = json!("true");
    }
    if !plan.mount_options.is_empty() {
        // Not spec.mountOptions: kubelet refuses those for FlexVolume ("Mount options are not
        // supported for this volume type", checkMountOptionSupport in kubernetes
        // `pkg/volume/util/operationexecutor/operation_generator.go`). The driver reads these.
        spec["flexVolume"]["options"]["mountOptions"] = json!(plan.mount_options.join(","));
    }
    let zones = match &plan.placement {
        Placement::Zone(zone) => Some(("In", std::slice::from_ref(zone))),
        // A regional disk on a PV without affinity would be scheduled onto zonal nodes of a
        // mixed cluster, where every attach fails for good.
        Placement::OutsideZones(zones) => Some(("NotIn", zones.as_slice())),
        Placement::Anywhere => None,
    };
    if let Some((operator, values)) = zones {
        spec["nodeAffinity"] = json!({"required": {"nodeSelectorTerms": [{"matchExpressions": [
            {"key": ZONE_LABEL, "operator": operator, "values": values}]}]}});
    }
    // The finalizer only where the disk is to be deleted with the volume (a Retain volume never
    // carries it: see `decide::pv_finalizer`).
    let finalizers: Vec<&str> = if plan.reclaim_policy == "Delete" {
        vec![FINALIZER]
    } else {
        Vec::new()
    };
    let pv = json!({"apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": plan.name, "annotations": {PROVISIONED_BY: provisioner}, "finalizers": finalizers},
        "spec": spec});
    serde_json::from_value(pv).map_err(|e| Error::Internal(format!("building the PV: {e}")))
}

pub async fn reconcile(pvc: Arc<PersistentVolumeClaim>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let action = attempt(&pvc, &ctx).await?;
    ctx.backoff.forget(&pvc.uid().unwrap_or_default());
    Ok(action)
}

async fn attempt(pvc: &Arc<PersistentVolumeClaim>, ctx: &Arc<Ctx>) -> Result<Action, Error> {
    // A provisioning this provisioner started is brought to its end first, even for a claim
    // being deleted.
    if intent::recorded(pvc, &ctx.name) {
        if let Some(action) = intent::finish(ctx, pvc).await? {
            return Ok(action);
        }
    }
    // A source claim going while protected for a copy: it goes once no copy of it is being made.
    if pvc.metadata.deletion_timestamp.is_some()
        && pvc.finalizers().iter().any(|f| f == CLONE_FINALIZER)
    {
        let ns = pvc.namespace().unwrap_or_default();
        if !crate::clone::release(ctx, &ns, &pvc.name_any()).await? {
            return Err(Error::Waiting(format!(
                "claim {ns}/{} is being copied; it goes once the copy is made",
                pvc.name_any()
            )));
        }
        return Ok(Action::await_change());
    }
    // A bound claim of ours may ask for more: this provisioner is its resizer.
    if let Some(volume) = pvc
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.as_ref())
        .filter(|v| !v.is_empty())
    {
        // The watch caches answer the common case (nothing to grow or change); fresh reads of
        // the volume and the claim decide the rest: the status writes are guarded by the claim's
        // resourceVersion, and a cached claim that lags behind would fail them time after time
        // (with a growing back-off) until the watch catches up.
        // Both act once the claim is Bound (`claim_status::bound`): before, it has no capacity
        // yet, and the PV controller sets the claim's current class from the volume as it
        // binds (updateClaimStatus), which must not undo the modifier's.
        let cached = ctx.volumes.get(&ObjectRef::new(volume));
        let bound = crate::claim_status::bound(pvc);
        let resize = bound && cached.is_none_or(|pv| crate::resize::needs_work(ctx, pvc, &pv));
        let modify = bound && crate::modify::may_need_work(pvc);
        if resize || modify {
            let pvs: Api<PersistentVolume> = Api::all(ctx.client.clone());
            let claims: Api<PersistentVolumeClaim> =
                Api::namespaced(ctx.client.clone(), &pvc.namespace().unwrap_or_default());
            let fresh = claims
                .get_opt(&pvc.name_any())
                .await?
                .filter(|c| c.uid() == pvc.uid());
            if let (Some(pv), Some(fresh)) = (pvs.get_opt(volume).await?, fresh) {
                // Both run, whatever the other wants (a class change must not wait behind a
                // growth that waits), each on the claim as the other left it.
                let mut again = None;
                let mut fresh = fresh;
                if resize {
                    again = crate::resize::reconcile(ctx, &fresh, &pv).await?;
                    if again.is_some() && modify {
                        fresh = claims
                            .get_opt(&pvc.name_any())
                            .await?
                            .filter(|c| c.uid() == pvc.uid())
                            .unwrap_or(fresh);
                    }
                }
                if modify && crate::resize::bound_to(ctx, &fresh, &pv) {
                    again = Again::sooner(again, crate::modify::reconcile(ctx, &fresh, &pv).await?);
                }
                if let Some(again) = again {
                    return Ok(again.action());
                }
            }
        }
    }
    if !ours(pvc, &ctx.name) {
        return unscheduled(ctx, pvc).await;
    }
    let ns = pvc.namespace().unwrap_or_default();
    let claim = Claim {
        provisioning_recorded: intent::recorded(pvc, &ctx.name),
        ..claim_of(pvc)
    };
    let pv_name = format!("pvc-{}", claim.uid);
    let pvs: Api<PersistentVolume> = Api::all(ctx.client.clone());
    // Made already: the cache knows; a miss is confirmed by a read (a PV made a moment ago may not
    // be in the cache yet, and making it twice must not happen).
    if ctx.volumes.get(&ObjectRef::new(&pv_name)).is_some()
        || pvs.get_opt(&pv_name).await?.is_some()
    {
        prebind(ctx, pvc, &pv_name).await?;
        return Ok(Action::await_change());
    }
    let class_name = class_name_of(pvc);
    // From the watch cache (filled before the controllers start, run.rs); a miss is confirmed by
    // a read, as the claim may have been woken by the class's own watch event before the cache
    // has it.
    let sc = match ctx.classes.get(&ObjectRef::new(&class_name)) {
        Some(sc) => Some((*sc).clone()),
        None => {
            let classes: Api<StorageClass> = Api::all(ctx.client.clone());
            let named = ListParams::default()
                .fields(&format!("metadata.name={class_name}"))
                .limit(1);
            classes.list(&named).await?.items.into_iter().next()
        }
    };
    let Some(sc) = sc else {
        // The class may come later (the library retries too, "the storageClass can be
        // fixed/(re)created independently"); its creation also wakes the claim (run.rs).
        return Err(Error::Waiting(format!(
            "StorageClass {class_name:?} does not exist; the claim is provisioned once it is created"
        )));
    };
    if sc.provisioner != ctx.name {
        return Ok(Action::await_change());
    }
    // The claim's VolumeAttributesClass shapes the disk (external-provisioner passes it as
    // CreateVolume's mutable parameters): its performance replaces the class's own.
    let attributes = crate::modify::wanted(pvc);
    let mut class = class_of(&sc);
    if !attributes.is_empty() {
        let Some(vac) = crate::modify::attributes_class(ctx, &attributes).await? else {
            return Err(Error::Waiting(format!(
                "VolumeAttributesClass {attributes:?} does not exist; the claim is provisioned once it is created"
            )));
        };
        match performance_of(&vac, &ctx.name) {
            Ok(p) => class = with_performance(&class, &p),
            Err(message) => {
                ctx.metrics.provision(&class_name, "refused", None);
                ctx.event(&**pvc, EventType::Warning, "ProvisioningFailed", message)
                    .await;
                return Ok(Action::requeue(RESYNC));
            }
        }
    }
    let delayed = sc.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer");
    let selected = pvc.annotations().get(SELECTED_NODE_KEY).cloned();
    if delayed && selected.is_none() {
        return Ok(Action::await_change());
    }
    let zone_label = match &selected {
        Some(node) => {
            let nodes: Api<Node> = Api::all(ctx.client.clone());
            match nodes.get_opt(node).await? {
                Some(n) => n.labels().get(ZONE_LABEL).cloned(),
                // Gone since the scheduler chose it: a disk made without its zone may not
                // attach where the pod lands (the library reschedules on NotFound too).
                None => {
                    return reschedule(
                        ctx,
                        pvc,
                        node,
                        format!("node {node} selected for the claim's pod does not exist"),
                    )
                    .await
                }
            }
        }
        None => None,
    };
    // A clone: its source is read now and proven to be the claim's to copy (decide::clone_source).
    let copying = match &claim.data_source {
        Some(ds) if ds.kind == "PersistentVolumeClaim" => {
            let read = if ds.namespace.as_deref().is_none_or(|n| n == ns) {
                crate::clone::read_source(ctx, &ns, &ds.name).await?
            } else {
                None
            };
            match clone_source(&claim, &class, read.as_ref().map(|(s, _)| s), &ctx.name) {
                Ok(vetted) => read.map(|(_, object)| (vetted, object)),
                Err(decision) => {
                    return refuse_or_wait(ctx, pvc, &class_name, &attributes, decision).await
                }
            }
        }
        _ => None,
    };
    let started = std::time::Instant::now();
    let plan = match provision(
        &claim,
        &class,
        zone_label.as_deref(),
        copying.as_ref().map(|(vetted, _)| vetted),
        &ctx.cluster,
    ) {
        Decision::Provision(plan) => plan,
        decision => return refuse_or_wait(ctx, pvc, &class_name, &attributes, decision).await,
    };
    // The intent first: whatever happens from here (a crash, the claim deleted), the disk is
    // found again from the claim and either gets its PV or is deleted.
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    let retried = intent::recorded_for(pvc, &ctx.name, &plan.pv.disk_uri);
    if !intent::record(&claims, pvc, &ctx.name, &plan.pv.disk_uri).await? {
        // The claim changed since read: its newer version comes with the watch; until then,
        // back-off (a stale watch cache must not make this a loop).
        return Err(Error::Stale(format!(
            "claim {ns}/{} changed while being provisioned",
            claim.name
        )));
    }
    // The source cannot go while it is copied; a source changed since the checks read it is
    // read and checked again (crate::clone).
    if let Some((_, source)) = &copying {
        crate::clone::protect(ctx, source, &claim.uid).await?;
    }
    // An attempt after one that made the disk (and then failed, e.g. at the PV) reads it rather
    // than writing it again: a retry costs no ARM write (seen on the real cluster: a PV
    // kube-apiserver refused made one disk PUT per back-off step).
    let made = if retried {
        ctx.arm
            .get_disk(&plan.disk.resource_group, &plan.disk.name)
            .await?
            .filter(|d| d.provisioning_state == "Succeeded")
    } else {
        None
    };
    let disk = match made {
        Some(disk) => disk,
        None => match create_disk(ctx, pvc, &plan.disk, selected.as_deref()).await? {
            Ok(disk) => disk,
            Err(action) => return Ok(action),
        },
    };
    // The claim may be going while the disk was made: then the disk is deleted, by the intent.
    let same = |c: &PersistentVolumeClaim| c.uid().as_deref() == Some(claim.uid.as_str());
    let now = claims.get_opt(&claim.name).await?.filter(same);
    if let Some(c) = now.filter(|c| c.metadata.deletion_timestamp.is_some()) {
        if let Some(action) = intent::finish(ctx, &c).await? {
            return Ok(action);
        }
    }
    match pvs
        .create(&PostParams::default(), &pv_object(&plan.pv, &ctx.name)?)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    prebind(ctx, pvc, &plan.pv.name).await?;
    // The PV owns the disk now (its reclaim policy decides); the claim is free to go, and so is
    // its source.
    intent::clear(&claims, &claim.name, &ctx.name).await?;
    if let Some((_, source)) = &copying {
        crate::clone::release(ctx, &ns, &source.name_any()).await?;
    }
    ctx.event(
        &**pvc,
        EventType::Normal,
        "ProvisioningSucceeded",
        format!("provisioned volume {} on disk {}", plan.pv.name, disk.id),
    )
    .await;
    ctx.metrics
        .provision(&class_name, "succeeded", Some(started.elapsed()));
    info!(claim = %format!("{ns}/{}", claim.name), pv = %plan.pv.name, "provisioned");
    Ok(Action::await_change())
}

/// Creates the claim's disk (an event says so). `Err(action)`: Azure cannot make it in the
/// selected node's zone, and the claim went back to the scheduler.
async fn create_disk(
    ctx: &Ctx,
    pvc: &Arc<PersistentVolumeClaim>,
    spec: &DiskSpec,
    selected: Option<&str>,
) -> Result<Result<DiskInfo, Action>, Error> {
    ctx.event(
        &**pvc,
        EventType::Normal,
        "Provisioning",
        format!(
            "creating disk {} ({} GiB, {})",
            spec.name, spec.size_gib, spec.sku
        ),
    )
    .await;
    match (ctx.arm.create_disk(spec).await, selected) {
        (Ok(disk), _) => Ok(Ok(disk)),
        (Err(e), Some(node)) if another_node_may_help(e.code()) => {
            let why = format!("Azure cannot make the disk in the zone of node {node}: {e}");
            reschedule(ctx, pvc, node, why).await.map(Err)
        }
        (Err(e), _) => Err(e.into()),
    }
}

/// Binds a claim that names a VolumeAttributesClass to its new PV from the claim's side too, as
/// the PV controller's own binding does (`spec.volumeName`, which may be set once). A FlexVolume
/// PV cannot name the class (kube-apiserver allows it on CSI volumes only), so the PV controller
/// would never match the two (FindMatchingVolume and checkVolumeSatisfyClaim compare the
/// classes, component-helpers `storage/volume/pv_helpers.go`); a claim that names its volume,
/// which names the claim, is bound without that comparison (`syncUnboundClaim`, kubernetes
/// `pkg/controller/volume/persistentvolume/pv_controller.go`). This provisioner carries out the
/// class itself (`modify.rs`).
async fn prebind(ctx: &Ctx, pvc: &PersistentVolumeClaim, pv_name: &str) -> Result<(), Error> {
    let named = pvc
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .is_some_and(|v| !v.is_empty());
    if named || crate::modify::wanted(pvc).is_empty() {
        return Ok(());
    }
    let claims: Api<PersistentVolumeClaim> =
        Api::namespaced(ctx.client.clone(), &pvc.namespace().unwrap_or_default());
    let patch = json!({"metadata": {"uid": pvc.uid()}, "spec": {"volumeName": pv_name}});
    match claims
        .patch(
            &pvc.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        // Gone, or another claim by that name: nothing to bind.
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// A claim that cannot be provisioned as it is (refused: an event, looked at again on the slow
/// resync or when it changes) or not yet (waiting: retried with back-off, an event each time).
async fn refuse_or_wait(
    ctx: &Ctx,
    pvc: &PersistentVolumeClaim,
    class_name: &str,
    attributes: &str,
    decision: Decision,
) -> Result<Action, Error> {
    match decision {
        Decision::Refuse(message) => {
            let message = if attributes.is_empty() {
                message
            } else {
                format!("{message} (with the performance of the claim's VolumeAttributesClass {attributes})")
            };
            ctx.metrics.provision(class_name, "refused", None);
            ctx.event(pvc, EventType::Warning, "ProvisioningFailed", message)
                .await;
            Ok(Action::requeue(RESYNC))
        }
        Decision::Wait(message) => Err(Error::Waiting(message)),
        Decision::Provision(_) => Err(Error::Internal(
            "a provisioning decision reached the refusal path".into(),
        )),
    }
}

/// A failed attempt: an event on the claim saying why, every time (the library's
/// provisionVolumeErrorHandling; the events API folds repeats into a series), and a retry after
/// the claim's back-off. A bound claim's failures (its resize) have their own events.
pub fn error_policy(pvc: Arc<PersistentVolumeClaim>, e: &Error, ctx: Arc<Ctx>) -> Action {
    let class = class_name_of(&pvc);
    let delay = ctx.backoff.next(&pvc.uid().unwrap_or_default(), e);
    let bound = pvc
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .is_some_and(|v| !v.is_empty());
    if !bound && e.tells_the_user() {
        let outcome = if matches!(e, Error::Waiting(_)) {
            "waiting"
        } else {
            "failed"
        };
        ctx.metrics.provision(&class, outcome, None);
        ctx.event_soon(
            pvc.clone(),
            EventType::Warning,
            "ProvisioningFailed",
            format!("{e} (tried again with back-off)"),
        );
    }
    tracing::warn!(claim = %format!("{}/{}", pvc.namespace().unwrap_or_default(), pvc.name_any()),
        error = %e, retry_in_secs = delay.as_secs(), "provisioning failed");
    Action::requeue(delay)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flexdisk_azure::Caching;

    fn plan(placement: Placement) -> PvPlan {
        PvPlan {
            name: "pvc-1".into(),
            capacity_gib: 1,
            access_modes: vec!["ReadWriteOnce".into()],
            storage_class: "c".into(),
            reclaim_policy: "Delete".into(),
            mount_options: Vec::new(),
            fs_type: "ext4".into(),
            disk_uri: "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/disks/pvc-1"
                .into(),
            caching: Caching::None,
            read_only: false,
            placement,
            claim: ("ns".into(), "claim".into(), "uid".into()),
        }
    }

    fn zone_term(placement: Placement) -> Option<serde_json::Value> {
        let pv = pv_object(&plan(placement), "flexdisk/azure-disk").expect("a PV");
        let v = serde_json::to_value(pv).expect("json");
        let term = &v["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"];
        (!term.is_null()).then(|| term.clone())
    }

    #[test]
    fn node_affinity_says_which_vms_can_attach_the_disk() {
        assert_eq!(
            zone_term(Placement::Zone("westus2-2".into())),
            Some(json!([{"matchExpressions": [
                {"key": ZONE_LABEL, "operator": "In", "values": ["westus2-2"]}]}]))
        );
        assert_eq!(
            zone_term(Placement::OutsideZones(vec![
                "westus2-1".into(),
                "westus2-2".into(),
                "westus2-3".into()
            ])),
            Some(
                json!([{"matchExpressions": [{"key": ZONE_LABEL, "operator": "NotIn",
                "values": ["westus2-1", "westus2-2", "westus2-3"]}]}])
            )
        );
        assert_eq!(zone_term(Placement::Anywhere), None, "ZRS");
    }
}
