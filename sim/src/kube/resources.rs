//! The resource types this API server serves, and what the API machinery needs to know of each.

/// One resource type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceType {
    /// "" for the core group.
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    /// Served with a `/status` subresource: the main resource ignores status, `/status` ignores
    /// everything else.
    pub status: bool,
    pub short_names: &'static [&'static str],
    /// Field selectors this type supports beyond `metadata.name` and `metadata.namespace`.
    pub fields: &'static [&'static str],
}

impl ResourceType {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// `persistentvolumeclaims` or `leases.coordination.k8s.io`, as kube-apiserver names the
    /// resource in messages.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

const CORE: &str = "";

pub const TYPES: &[ResourceType] = &[
    ResourceType {
        group: CORE,
        version: "v1",
        plural: "namespaces",
        singular: "namespace",
        kind: "Namespace",
        namespaced: false,
        status: true,
        short_names: &["ns"],
        fields: &["status.phase"],
    },
    ResourceType {
        group: CORE,
        version: "v1",
        plural: "nodes",
        singular: "node",
        kind: "Node",
        namespaced: false,
        status: true,
        short_names: &["no"],
        fields: &["spec.unschedulable"],
    },
    ResourceType {
        group: CORE,
        version: "v1",
        plural: "persistentvolumes",
        singular: "persistentvolume",
        kind: "PersistentVolume",
        namespaced: false,
        status: true,
        short_names: &["pv"],
        fields: &[],
    },
    ResourceType {
        group: CORE,
        version: "v1",
        plural: "persistentvolumeclaims",
        singular: "persistentvolumeclaim",
        kind: "PersistentVolumeClaim",
        namespaced: true,
        status: true,
        short_names: &["pvc"],
        fields: &[],
    },
    ResourceType {
        group: CORE,
        version: "v1",
        plural: "pods",
        singular: "pod",
        kind: "Pod",
        namespaced: true,
        status: true,
        short_names: &["po"],
        fields: &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
    },
    ResourceType {
        group: CORE,
        version: "v1",
        plural: "secrets",
        singular: "secret",
        kind: "Secret",
        namespaced: true,
        status: false,
        short_names: &[],
        fields: &["type"],
    },
    ResourceType {
        group: CORE,
        version: "v1",
        plural: "events",
        singular: "event",
        kind: "Event",
        namespaced: true,
        status: false,
        short_names: &["ev"],
        fields: &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
    },
    ResourceType {
        group: "events.k8s.io",
        version: "v1",
        plural: "events",
        singular: "event",
        kind: "Event",
        namespaced: true,
        status: false,
        short_names: &["ev"],
        fields: &[
            "regarding.kind",
            "regarding.namespace",
            "regarding.name",
            "regarding.uid",
            "reason",
            "reportingController",
            "type",
        ],
    },
    ResourceType {
        group: "storage.k8s.io",
        version: "v1",
        plural: "storageclasses",
        singular: "storageclass",
        kind: "StorageClass",
        namespaced: false,
        status: false,
        short_names: &["sc"],
        fields: &[],
    },
    ResourceType {
        group: "storage.k8s.io",
        version: "v1",
        plural: "volumeattributesclasses",
        singular: "volumeattributesclass",
        kind: "VolumeAttributesClass",
        namespaced: false,
        status: false,
        short_names: &["vac"],
        fields: &[],
    },
    ResourceType {
        group: "coordination.k8s.io",
        version: "v1",
        plural: "leases",
        singular: "lease",
        kind: "Lease",
        namespaced: true,
        status: false,
        short_names: &[],
        fields: &[],
    },
];

/// The type served at `group/version/plural`.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceType> {
    TYPES
        .iter()
        .find(|t| t.group == group && t.version == version && t.plural == plural)
}

/// The groups served under `/apis`, in order.
pub fn groups() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for t in TYPES.iter().filter(|t| !t.group.is_empty()) {
        if !out.contains(&t.group) {
            out.push(t.group);
        }
    }
    out
}

/// Keys by which strategic merge patch merges the lists of these types (`patchMergeKey`);
/// `None` for lists of scalars merged as sets (`finalizers`). Paths use `*` for list items.
pub fn merge_key(path: &str) -> Option<Option<&'static str>> {
    let key = match path {
        "metadata.finalizers" => None,
        "metadata.ownerReferences" => Some("uid"),
        "spec.containers" | "spec.initContainers" | "spec.ephemeralContainers" => Some("name"),
        "spec.volumes" | "spec.imagePullSecrets" => Some("name"),
        "spec.containers.*.env" | "spec.initContainers.*.env" => Some("name"),
        "spec.containers.*.volumeMounts" | "spec.initContainers.*.volumeMounts" => {
            Some("mountPath")
        }
        "spec.containers.*.volumeDevices" => Some("devicePath"),
        "spec.containers.*.ports" => Some("containerPort"),
        "spec.tolerations" => return None,
        "status.conditions" => Some("type"),
        "status.addresses" => Some("type"),
        "status.containerStatuses" => Some("name"),
        "spec.taints" => Some("key"),
        _ => return None,
    };
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups() {
        let pvc = find("", "v1", "persistentvolumeclaims").expect("pvc");
        assert_eq!(pvc.kind, "PersistentVolumeClaim");
        assert_eq!(pvc.api_version(), "v1");
        let lease = find("coordination.k8s.io", "v1", "leases").expect("lease");
        assert_eq!(lease.api_version(), "coordination.k8s.io/v1");
        assert_eq!(lease.qualified(), "leases.coordination.k8s.io");
        assert!(find("", "v1", "leases").is_none());
        assert_eq!(
            groups(),
            vec!["events.k8s.io", "storage.k8s.io", "coordination.k8s.io"]
        );
        assert_eq!(merge_key("metadata.finalizers"), Some(None));
        assert_eq!(merge_key("status.conditions"), Some(Some("type")));
        assert_eq!(merge_key("spec.accessModes"), None);
    }
}
