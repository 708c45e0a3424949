//! Which changes of a claim wake the claims controller: those that can change what it does, never
//! its own status writes. external-resizer's `updatePVC` (pkg/controller/controller.go) filters
//! the same way — a claim is queued when its request grows, its capacity grows (the node finished)
//! or on a resync, not for conditions or statuses the resizer wrote itself. A controller woken by
//! its own writes tried a size Azure refused 1,200 times in 12 s.

use crate::keys::{PROVISIONER_BETA_KEY, PROVISIONER_KEY, SELECTED_NODE_KEY};
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
///   controller) and the capacity (kubelet, when it grew the filesystem).
///
/// Not the conditions, `allocatedResources`, `allocatedResourceStatuses`, `modifyVolumeStatus` or
/// `currentVolumeAttributesClassName`: this provisioner writes those, and kubelet's
/// `NodeResizeInfeasible` is handed back on a new request or the slow resync, as external-resizer
/// does (an immediate hand-back would ping-pong with kubelet while the node's failure lasts).
pub fn claim_fingerprint(pvc: &PersistentVolumeClaim) -> Option<u64> {
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
    Some(h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claim(v: serde_json::Value) -> PersistentVolumeClaim {
        serde_json::from_value(v).expect("claim")
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
        let before = claim_fingerprint(&claim(base()));
        let mut own = base();
        own["status"]["conditions"] = json!([{"type": "ControllerResizeError", "status": "True",
            "message": "Azure refused", "lastTransitionTime": "2026-12-07T05:00:00Z"}]);
        own["status"]["allocatedResourceStatuses"]["storage"] = json!("ControllerResizeInfeasible");
        let mut kubelet = own.clone();
        kubelet["status"]["allocatedResourceStatuses"]["storage"] = json!("NodeResizeInfeasible");
        assert_eq!(
            claim_fingerprint(&claim(kubelet)),
            before,
            "handed back on a new request or the slow resync, not at once"
        );
        own["status"]["allocatedResources"]["storage"] = json!("9Gi");
        own["status"]["modifyVolumeStatus"] =
            json!({"status": "InProgress", "targetVolumeAttributesClassName": "gold"});
        own["status"]["currentVolumeAttributesClassName"] = json!("gold");
        own["metadata"]["resourceVersion"] = json!("99");
        own["metadata"]["labels"] = json!({"app": "db"});
        assert_eq!(claim_fingerprint(&claim(own)), before);
    }

    #[test]
    fn what_users_kubelet_and_the_pv_controller_change_wakes_it() {
        let before = claim_fingerprint(&claim(base()));
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
            assert_ne!(claim_fingerprint(&claim(c)), before, "change {i}");
        }
    }
}
