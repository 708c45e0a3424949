//! Which changes of a claim wake the claims controller: those that can change what it does, never
//! its own status writes. external-resizer's `updatePVC` (pkg/controller/controller.go) filters
//! the same way — a claim is queued when its request grows, its capacity grows (the node finished)
//! or on a resync, not for conditions or statuses the resizer wrote itself. A controller woken by
//! its own writes tried a size Azure refused 1,200 times in 12 s.

use crate::claim_status::read_only_many;
use crate::keys::{PROVISIONER_BETA_KEY, PROVISIONER_KEY, SELECTED_NODE_KEY};
use crate::quantity::bytes_of;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::ResourceExt;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

/// A hash of what in a claim matters to the claims controller (kube-runtime's predicate filter
/// passes a claim on only when it changes):
/// - who it is and whether it is going (uid, deletion), its finalizers (the records of work in
///   progress, each written once);
/// - its spec, all of it (the request, the class, the class of attributes, the data source, the
///   volume it names — what users and the PV controller change);
/// - the annotations that hand it to a provisioner or a node;
/// - from the status only what others write and the controller must act on: the phase (the PV
///   controller), the capacity (kubelet, when it grew the filesystem), and whether the claim was
///   handed to the node for a growth this provisioner refused ([`handed_over_despite_refusal`]).
///
/// `refused(uid, bytes)`: whether growing the claim `uid` to `bytes` was refused (and the claim
/// has not grown since).
///
/// Not the conditions, `allocatedResources`, `allocatedResourceStatuses`, `modifyVolumeStatus` or
/// `currentVolumeAttributesClassName`: this provisioner writes those, and kubelet's
/// `NodeResizeInfeasible` is handed back on a new request or the slow resync, as external-resizer
/// does (an immediate hand-back would ping-pong with kubelet while the node's failure lasts).
pub fn claim_fingerprint(
    pvc: &PersistentVolumeClaim,
    refused: impl Fn(&str, u64) -> bool,
) -> Option<u64> {
    let mut h = DefaultHasher::new();
    pvc.uid().hash(&mut h);
    pvc.metadata.deletion_timestamp.is_some().hash(&mut h);
    pvc.finalizers().hash(&mut h);
    for key in [PROVISIONER_KEY, PROVISIONER_BETA_KEY, SELECTED_NODE_KEY] {
        pvc.annotations().get(key).hash(&mut h);
    }
    serde_json::to_string(&pvc.spec).ok().hash(&mut h);
    let status = pvc.status.as_ref();
    status.and_then(|s| s.phase.as_deref()).hash(&mut h);
    status
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get("storage"))
        .map(|q| q.0.as_str())
        .hash(&mut h);
    handed_over_despite_refusal(pvc, refused).hash(&mut h);
    Some(h.finish())
}

/// kube-controller-manager handed the claim to the node (`NodeResizePending`, or kubelet's
/// `NodeResizeInProgress` after it) for a growth that
/// no node may do: a ReadOnlyMany claim (no node can grow a filesystem mounted read-only), or a
/// size Azure refused. Its expand controller runs a no-op expansion of every FlexVolume claim
/// whose request grows (kubernetes v1.37 `pkg/volume/plugins.go` FindExpandablePluginBySpec →
/// `noopExpandableVolumePluginInstance`; `operation_generator.go` expandAndRecoverFunction) and,
/// when its worker comes after this provisioner's refusal, overwrites `ControllerResizeInfeasible`
/// with its own statuses (merge patches without a resourceVersion) and raises the PV's capacity:
/// kubelet would then grow the filesystem past the device and keep the claim's pods from
/// starting. Seen on the real cluster (a reader of a ReadOnlyMany claim stuck until the 15-minute
/// resync). The controller takes such a hand-over back at once; kubelet never writes
/// `NodeResizePending`, and the take-back (`ControllerResizeInfeasible`) leaves kube-controller-
/// manager nothing to queue (it queues on a grown request or capacity), so nothing ping-pongs.
fn handed_over_despite_refusal(
    pvc: &PersistentVolumeClaim,
    refused: impl Fn(&str, u64) -> bool,
) -> bool {
    let Some(status) = pvc.status.as_ref() else {
        return false;
    };
    // kubelet's NodeResizeInProgress too: it may have read the hand-over before the take-back
    // and write it after (no resourceVersion); it starts an expansion only on these two.
    let pending = status
        .allocated_resource_statuses
        .as_ref()
        .and_then(|s| s.get("storage"))
        .is_some_and(|s| s == "NodeResizePending" || s == "NodeResizeInProgress");
    if !pending {
        return false;
    }
    let allocated = status
        .allocated_resources
        .as_ref()
        .and_then(|a| a.get("storage"))
        .map(|q| bytes_of(&q.0));
    read_only_many(pvc) || allocated.is_some_and(|b| refused(&pvc.uid().unwrap_or_default(), b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claim(v: serde_json::Value) -> PersistentVolumeClaim {
        serde_json::from_value(v).expect("claim")
    }

    fn never(_: &str, _: u64) -> bool {
        false
    }

    fn base() -> serde_json::Value {
        json!({"metadata": {"name": "c", "namespace": "ns", "uid": "u1"},
            "spec": {"resources": {"requests": {"storage": "8Gi"}}, "volumeName": "pvc-u1"},
            "status": {"phase": "Bound", "capacity": {"storage": "5Gi"},
                "allocatedResources": {"storage": "8Gi"},
                "allocatedResourceStatuses": {"storage": "NodeResizePending"},
                "conditions": [{"type": "FileSystemResizePending", "status": "True"}]}})
    }

    #[test]
    fn the_controller_s_own_status_writes_do_not_wake_it() {
        let before = claim_fingerprint(&claim(base()), never);
        let mut own = base();
        own["status"]["conditions"] = json!([{"type": "ControllerResizeError", "status": "True",
            "message": "Azure refused", "lastTransitionTime": "2026-12-07T05:00:00Z"}]);
        own["status"]["allocatedResourceStatuses"]["storage"] = json!("ControllerResizeInfeasible");
        let mut kubelet = own.clone();
        kubelet["status"]["allocatedResourceStatuses"]["storage"] = json!("NodeResizeInfeasible");
        assert_eq!(
            claim_fingerprint(&claim(kubelet), never),
            before,
            "handed back on a new request or the slow resync, not at once"
        );
        own["status"]["allocatedResources"]["storage"] = json!("9Gi");
        own["status"]["modifyVolumeStatus"] =
            json!({"status": "InProgress", "targetVolumeAttributesClassName": "gold"});
        own["status"]["currentVolumeAttributesClassName"] = json!("gold");
        own["metadata"]["resourceVersion"] = json!("99");
        own["metadata"]["labels"] = json!({"app": "db"});
        assert_eq!(claim_fingerprint(&claim(own), never), before);
    }

    #[test]
    fn what_users_kubelet_and_the_pv_controller_change_wakes_it() {
        let before = claim_fingerprint(&claim(base()), never);
        type Change = Box<dyn Fn(&mut serde_json::Value)>;
        let changes: Vec<Change> = vec![
            Box::new(|c| c["spec"]["resources"]["requests"]["storage"] = json!("9Gi")),
            Box::new(|c| c["spec"]["volumeAttributesClassName"] = json!("gold")),
            Box::new(|c| c["status"]["capacity"]["storage"] = json!("8Gi")),
            Box::new(|c| c["status"]["phase"] = json!("Lost")),
            Box::new(|c| c["metadata"]["deletionTimestamp"] = json!("2026-12-07T05:00:00Z")),
            Box::new(|c| c["metadata"]["finalizers"] = json!(["kubernetes.io/pvc-protection"])),
            Box::new(|c| {
                c["metadata"]["annotations"] =
                    json!({"volume.kubernetes.io/selected-node": "node-1"})
            }),
            Box::new(|c| c["metadata"]["uid"] = json!("u2")),
        ];
        for (i, change) in changes.iter().enumerate() {
            let mut c = base();
            change(&mut c);
            assert_ne!(claim_fingerprint(&claim(c), never), before, "change {i}");
        }
    }

    #[test]
    fn a_hand_over_to_the_node_of_a_refused_growth_wakes_it() {
        // kube-controller-manager's statuses after its no-op expansion.
        let handed = base();
        let mut refused = base();
        refused["status"]["allocatedResourceStatuses"]["storage"] =
            json!("ControllerResizeInfeasible");
        // A size Azure refused a moment ago (8Gi): the hand-over changes the fingerprint.
        let azure_refused = |uid: &str, bytes: u64| uid == "u1" && bytes == 8 << 30;
        assert_ne!(
            claim_fingerprint(&claim(handed.clone()), azure_refused),
            claim_fingerprint(&claim(refused.clone()), azure_refused)
        );
        let mut in_progress = handed.clone();
        in_progress["status"]["allocatedResourceStatuses"]["storage"] =
            json!("NodeResizeInProgress");
        assert_ne!(
            claim_fingerprint(&claim(in_progress), azure_refused),
            claim_fingerprint(&claim(refused.clone()), azure_refused)
        );
        // Another size, or none refused: it does not (the node's ordinary turn).
        let other = |_: &str, bytes: u64| bytes == 9 << 30;
        assert_eq!(
            claim_fingerprint(&claim(handed.clone()), other),
            claim_fingerprint(&claim(refused.clone()), other)
        );
        // A ReadOnlyMany claim: always (no node may grow it).
        let (mut handed, mut refused) = (handed, refused);
        for c in [&mut handed, &mut refused] {
            c["spec"]["accessModes"] = json!(["ReadOnlyMany"]);
        }
        assert_ne!(
            claim_fingerprint(&claim(handed), never),
            claim_fingerprint(&claim(refused), never)
        );
    }
}
