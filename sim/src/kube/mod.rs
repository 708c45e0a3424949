//! A Kubernetes API server, enough of kube-apiserver (and of kube-controller-manager's volume
//! controllers) for kube-rs clients, watchers and controllers to run against over real HTTP.
//! Objects live in memory: a restart starts a fresh cluster.

pub mod api;
pub mod control;
pub mod controllers;
pub mod expand;
pub mod patch;
pub mod quantity;
pub mod resources;
pub mod selectors;
pub mod status;
pub mod store;
pub mod validation;
pub mod watch;

use crate::faults::{Counters, Faults};
use serde_json::json;
use std::path::Path;
use std::time::Duration;
use store::Store;

/// How many changes a watch can resume from before it gets 410 Gone.
pub const DEFAULT_WINDOW: usize = 10_000;

pub struct KubeApi {
    pub store: Store,
    pub faults: Faults,
    /// Requests per operation (`list secrets`, `watch leases`, `patch persistentvolumeclaims/status`).
    pub counters: Counters,
    /// Every distinct kind of request, in RBAC's terms (what a client's Role must grant), with how
    /// many were made.
    pub access: Access,
    /// host:port, for discovery.
    pub address: String,
    pub drop_watches: tokio::sync::watch::Sender<u64>,
    pub bookmark_every: Duration,
}

/// One kind of request as an RBAC rule names it; `namespace` is None for cluster-scoped resources
/// and for requests across all namespaces (which only a ClusterRole can grant).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessEntry {
    pub verb: String,
    pub api_group: String,
    /// `persistentvolumes`, or `persistentvolumeclaims/status` for a subresource.
    pub resource: String,
    pub namespace: Option<String>,
    /// Who asked, as far as an unauthenticated server can tell (audit logs record it too).
    pub user_agent: Option<String>,
}

/// An [`AccessEntry`] and how many requests of it were made.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AccessCount {
    #[serde(flatten)]
    pub entry: AccessEntry,
    pub count: u64,
}

#[derive(Default)]
pub struct Access {
    seen: std::sync::Mutex<std::collections::BTreeMap<AccessEntry, u64>>,
}

impl Access {
    pub fn record(&self, entry: AccessEntry) {
        *self
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(entry)
            .or_default() += 1;
    }

    pub fn snapshot(&self) -> Vec<AccessCount> {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.iter()
            .map(|(entry, count)| AccessCount {
                entry: entry.clone(),
                count: *count,
            })
            .collect()
    }

    pub fn reset(&self) {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// A node of the cluster, as the Azure world has it.
pub struct NodeInfo {
    pub name: String,
    /// The VM's resource ID.
    pub vm_id: String,
    pub vm_size: String,
    pub zone: Option<String>,
    pub max_data_disks: Option<u32>,
}

impl KubeApi {
    pub fn new(address: String, window: usize, bookmark_every: Duration) -> KubeApi {
        let (drop_watches, _) = tokio::sync::watch::channel(0);
        KubeApi {
            store: Store::new(window),
            faults: Faults::default(),
            counters: Counters::default(),
            access: Access::default(),
            address,
            drop_watches,
            bookmark_every,
        }
    }

    /// Ends every open watch (clients see the stream close and must re-watch).
    pub fn drop_all_watches(&self) -> u64 {
        let mut n = 0;
        self.drop_watches.send_modify(|g| {
            *g += 1;
            n = *g;
        });
        n
    }

    /// What a new cluster has: the system namespaces and a Node for every VM, labelled and with
    /// `spec.providerID` as Azure's cloud provider does.
    pub fn seed(&self, location: &str, nodes: &[NodeInfo]) -> Result<(), status::ApiError> {
        let ns = resources::find("", "v1", "namespaces")
            .ok_or_else(|| status::ApiError::bad_request("no namespaces"))?;
        for name in ["default", "kube-system", "kube-node-lease", "kube-public"] {
            self.store
                .create(ns, "", json!({"metadata": {"name": name}}), "flexdisk-sim")?;
        }
        let node_rt = resources::find("", "v1", "nodes")
            .ok_or_else(|| status::ApiError::bad_request("no nodes"))?;
        for n in nodes {
            let zone = match &n.zone {
                Some(z) => format!("{location}-{z}"),
                // Azure's cloud provider labels VMs outside zones with their fault domain.
                None => "0".to_string(),
            };
            let mut capacity = json!({"cpu": "2", "memory": "8Gi", "pods": "110"});
            if let Some(max) = n.max_data_disks {
                capacity["attachable-volumes-azure-disk"] = json!(max.to_string());
            }
            let node = json!({
                "metadata": {"name": n.name, "labels": {
                    "kubernetes.io/hostname": n.name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "node.kubernetes.io/instance-type": n.vm_size,
                    "beta.kubernetes.io/instance-type": n.vm_size,
                    "topology.kubernetes.io/region": location,
                    "topology.kubernetes.io/zone": zone,
                    "failure-domain.beta.kubernetes.io/region": location,
                    "failure-domain.beta.kubernetes.io/zone": zone,
                }},
                "spec": {"providerID": format!("azure://{}", n.vm_id)},
                "status": {
                    "capacity": capacity,
                    "allocatable": capacity,
                    "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                        "message": "kubelet is posting ready status", "lastHeartbeatTime": store::now(),
                        "lastTransitionTime": store::now()}],
                    "addresses": [{"type": "Hostname", "address": n.name}],
                    "nodeInfo": {"kubeletVersion": "v1.33.0", "operatingSystem": "linux", "architecture": "amd64"},
                },
            });
            self.store.create(node_rt, "", node, "flexdisk-sim")?;
        }
        Ok(())
    }

    /// A kubeconfig for this server. Like kube-apiserver's old insecure port, plain HTTP on
    /// loopback asks for no credentials (clients do not send tokens over plain HTTP anyway).
    pub fn write_kubeconfig(&self, path: &Path, url: &str) -> std::io::Result<()> {
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: flexdisk-sim\n  cluster:\n    server: {url}\nusers:\n- name: flexdisk-sim\n  user: {{}}\ncontexts:\n- name: flexdisk-sim\n  context:\n    cluster: flexdisk-sim\n    user: flexdisk-sim\n    namespace: default\ncurrent-context: flexdisk-sim\n"
        );
        std::fs::write(path, text)
    }
}
