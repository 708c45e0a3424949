//! The simulated Azure world: tenant, subscription, the cluster's nodes and their VMs.
//!
//! A world file (`--world FILE`, JSON) replaces the default; every field but `nodes` has a default.

use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum WorldError {
    #[error("cannot read world file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("world file {path} is not a valid world: {source}")]
    Parse {
        path: String,
        source: serde_json::Error,
    },
    #[error("world: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct World {
    #[serde(default = "defaults::tenant")]
    pub tenant: String,
    #[serde(default = "defaults::subscription")]
    pub subscription: String,
    #[serde(default = "defaults::resource_group")]
    pub resource_group: String,
    /// Further resource groups that exist (e.g. one a StorageClass names for its disks).
    #[serde(default = "defaults::extra_resource_groups")]
    pub extra_resource_groups: Vec<String>,
    #[serde(default = "defaults::location")]
    pub location: String,
    /// Availability zones of the location; empty for a location without zones.
    #[serde(default = "defaults::zones")]
    pub zones: Vec<String>,
    /// The control plane's service principal.
    #[serde(default = "defaults::client_id")]
    pub client_id: String,
    /// Generated at first start (and kept in the state) when not given.
    #[serde(default)]
    pub client_secret: Option<String>,
    /// Federated credentials of the service principal (workload identity).
    #[serde(default = "defaults::federated")]
    pub federated: Vec<FederatedCredential>,
    /// The user-assigned identity every node carries (AKS's kubelet identity).
    #[serde(default = "defaults::kubelet_identity")]
    pub kubelet_identity: Identity,
    #[serde(default = "defaults::token_lifetime")]
    pub token_lifetime_secs: u64,
    #[serde(default)]
    pub throttle: Throttle,
    pub nodes: Vec<NodeSpec>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FederatedCredential {
    pub issuer: String,
    pub subject: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Identity {
    pub name: String,
    pub client_id: String,
    pub principal_id: String,
}

/// ARM's per-subscription request budgets, refilled every window.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Throttle {
    pub reads: u32,
    pub writes: u32,
    pub window_secs: u64,
}

impl Default for Throttle {
    fn default() -> Throttle {
        // Azure's documented subscription limits per hour.
        Throttle {
            reads: 12000,
            writes: 1200,
            window_secs: 3600,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "NodeSpecFile", into = "NodeSpecFile")]
pub struct NodeSpec {
    /// The Kubernetes node name; for scale-set instances it is derived and may be omitted.
    pub name: Option<String>,
    pub vm_size: String,
    pub zone: Option<String>,
    pub system_assigned_identity: bool,
    pub placement: Placement,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Placement {
    ScaleSet { scale_set: String, instance_id: u32 },
    AvailabilitySet { availability_set: String },
}

/// A node as written in a world file: either `availabilitySet`, or `scaleSet` with `instanceId`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NodeSpecFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    vm_size: String,
    #[serde(default)]
    zone: Option<String>,
    #[serde(default = "defaults::yes")]
    system_assigned_identity: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    availability_set: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scale_set: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    instance_id: Option<u32>,
}

impl TryFrom<NodeSpecFile> for NodeSpec {
    type Error = String;

    fn try_from(f: NodeSpecFile) -> Result<NodeSpec, String> {
        let placement = match (f.availability_set, f.scale_set, f.instance_id) {
            (Some(a), None, None) => Placement::AvailabilitySet {
                availability_set: a,
            },
            (None, Some(s), Some(i)) => Placement::ScaleSet {
                scale_set: s,
                instance_id: i,
            },
            _ => {
                return Err(format!(
                    "node {}: give either availabilitySet, or scaleSet with instanceId",
                    f.name.as_deref().unwrap_or("(unnamed)")
                ))
            }
        };
        Ok(NodeSpec {
            name: f.name,
            vm_size: f.vm_size,
            zone: f.zone,
            system_assigned_identity: f.system_assigned_identity,
            placement,
        })
    }
}

impl From<NodeSpec> for NodeSpecFile {
    fn from(n: NodeSpec) -> NodeSpecFile {
        let (availability_set, scale_set, instance_id) = match n.placement {
            Placement::AvailabilitySet { availability_set } => (Some(availability_set), None, None),
            Placement::ScaleSet {
                scale_set,
                instance_id,
            } => (None, Some(scale_set), Some(instance_id)),
        };
        NodeSpecFile {
            name: n.name,
            vm_size: n.vm_size,
            zone: n.zone,
            system_assigned_identity: n.system_assigned_identity,
            availability_set,
            scale_set,
            instance_id,
        }
    }
}

impl NodeSpec {
    /// The node name Kubernetes knows: the VM name, or for a scale-set instance the scale set's
    /// name followed by the instance id in six base-36 digits, as AKS names them.
    pub fn node_name(&self) -> String {
        match (&self.name, &self.placement) {
            (Some(n), _) => n.clone(),
            (
                None,
                Placement::ScaleSet {
                    scale_set,
                    instance_id,
                },
            ) => {
                format!("{scale_set}{}", base36_6(*instance_id))
            }
            (None, Placement::AvailabilitySet { availability_set }) => availability_set.clone(),
        }
    }

    /// The VM's name as ARM spells it (for a scale-set instance: `<scale set>_<id>`).
    pub fn vm_name(&self) -> String {
        match &self.placement {
            Placement::ScaleSet {
                scale_set,
                instance_id,
            } => format!("{scale_set}_{instance_id}"),
            Placement::AvailabilitySet { .. } => self.node_name(),
        }
    }
}

pub fn base36_6(mut n: u32) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = [b'0'; 6];
    for slot in out.iter_mut().rev() {
        *slot = DIGITS[(n % 36) as usize];
        n /= 36;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl World {
    /// The ARM resource ID of the kubelet identity.
    pub fn kubelet_identity_id(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{}",
            self.subscription, self.resource_group, self.kubelet_identity.name
        )
    }

    /// `identity.userAssignedIdentities` of a VM or scale set as Resource Manager answers it: each
    /// identity with its `principalId` and `clientId` (read-only, so a request's `{}` values come
    /// back filled: common-types v1 `UserAssignedIdentities`), which clients read to ask the
    /// node's identity endpoint for that identity's token.
    pub fn user_assigned_identities(&self) -> serde_json::Value {
        serde_json::json!({
            self.kubelet_identity_id(): {
                "principalId": self.kubelet_identity.principal_id,
                "clientId": self.kubelet_identity.client_id,
            }
        })
    }

    pub fn load(path: Option<&Path>) -> Result<World, WorldError> {
        let world = match path {
            None => World::default_world(),
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| WorldError::Read {
                    path: p.display().to_string(),
                    source,
                })?;
                serde_json::from_str(&text).map_err(|source| WorldError::Parse {
                    path: p.display().to_string(),
                    source,
                })?
            }
        };
        world.validate()?;
        Ok(world)
    }

    fn validate(&self) -> Result<(), WorldError> {
        if self.nodes.is_empty() {
            return Err(WorldError::Invalid("at least one node is needed".into()));
        }
        let mut names = std::collections::BTreeSet::new();
        for n in &self.nodes {
            let name = n.node_name();
            if !names.insert(name.to_lowercase()) {
                return Err(WorldError::Invalid(format!("node {name} appears twice")));
            }
            if crate::vm_sizes::max_data_disks(&n.vm_size).is_none() {
                return Err(WorldError::Invalid(format!(
                    "node {name}: unknown vmSize {} (known: {})",
                    n.vm_size,
                    crate::vm_sizes::known().join(", ")
                )));
            }
            match (&n.zone, &n.placement) {
                (Some(_), Placement::AvailabilitySet { .. }) => {
                    return Err(WorldError::Invalid(format!(
                        "node {name}: availability-set VMs cannot be zonal (Azure does not allow both)"
                    )))
                }
                (Some(z), _) if !self.zones.contains(z) => {
                    return Err(WorldError::Invalid(format!(
                        "node {name}: zone {z} is not one of the location's zones {:?}",
                        self.zones
                    )))
                }
                _ => {}
            }
        }
        Ok(())
    }

    pub fn resource_group_exists(&self, rg: &str) -> bool {
        std::iter::once(&self.resource_group)
            .chain(&self.extra_resource_groups)
            .any(|g| g.eq_ignore_ascii_case(rg))
    }

    /// The zone as Azure spells it in resource IDs and IMDS (`westus2-1`) — used by node labels.
    pub fn default_world() -> World {
        let ss = "aks-nodepool1-31415926-vmss".to_string();
        World {
            tenant: defaults::tenant(),
            subscription: defaults::subscription(),
            resource_group: defaults::resource_group(),
            extra_resource_groups: defaults::extra_resource_groups(),
            location: defaults::location(),
            zones: defaults::zones(),
            client_id: defaults::client_id(),
            client_secret: None,
            federated: defaults::federated(),
            kubelet_identity: defaults::kubelet_identity(),
            token_lifetime_secs: defaults::token_lifetime(),
            throttle: Throttle::default(),
            nodes: vec![
                NodeSpec {
                    name: Some("k8s-agentpool1-31415926-0".into()),
                    vm_size: "Standard_DS2_v2".into(),
                    zone: None,
                    system_assigned_identity: true,
                    placement: Placement::AvailabilitySet {
                        availability_set: "agentpool1-availabilitySet-31415926".into(),
                    },
                },
                NodeSpec {
                    name: Some("k8s-agentpool1-31415926-1".into()),
                    vm_size: "Standard_B2s".into(),
                    zone: None,
                    system_assigned_identity: true,
                    placement: Placement::AvailabilitySet {
                        availability_set: "agentpool1-availabilitySet-31415926".into(),
                    },
                },
                NodeSpec {
                    name: None,
                    vm_size: "Standard_D4s_v3".into(),
                    zone: Some("1".into()),
                    system_assigned_identity: true,
                    placement: Placement::ScaleSet {
                        scale_set: ss.clone(),
                        instance_id: 0,
                    },
                },
                NodeSpec {
                    name: None,
                    vm_size: "Standard_D2s_v3".into(),
                    zone: Some("2".into()),
                    system_assigned_identity: true,
                    placement: Placement::ScaleSet {
                        scale_set: ss,
                        instance_id: 1,
                    },
                },
            ],
        }
    }
}

mod defaults {
    use super::{FederatedCredential, Identity};

    pub fn tenant() -> String {
        "4a1f0c7e-5b2d-4c3e-8f9a-0b1c2d3e4f50".into()
    }
    pub fn subscription() -> String {
        "9b8c7d6e-1a2b-4c3d-9e8f-7a6b5c4d3e2f".into()
    }
    pub fn resource_group() -> String {
        "MC_flexdisk_sim_westus2".into()
    }
    pub fn extra_resource_groups() -> Vec<String> {
        vec!["flexdisk-volumes".into()]
    }
    pub fn location() -> String {
        "westus2".into()
    }
    pub fn zones() -> Vec<String> {
        vec!["1".into(), "2".into(), "3".into()]
    }
    pub fn client_id() -> String {
        "6f1e2d3c-4b5a-4697-8a8b-9c0d1e2f3a4b".into()
    }
    pub fn federated() -> Vec<FederatedCredential> {
        vec![FederatedCredential {
            issuer: "https://oidc.flexdisk-sim.invalid/".into(),
            subject: "system:serviceaccount:flexdisk-system:flexdisk-provisioner".into(),
        }]
    }
    pub fn kubelet_identity() -> Identity {
        Identity {
            name: "flexdisk-sim-agentpool".into(),
            client_id: "2c3d4e5f-6a7b-4c8d-9e0f-1a2b3c4d5e6f".into(),
            principal_id: "7e6d5c4b-3a29-4817-a6b5-c4d3e2f1a0b9".into(),
        }
    }
    pub fn token_lifetime() -> u64 {
        3600
    }
    pub fn yes() -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_set_node_names_follow_aks() {
        assert_eq!(base36_6(0), "000000");
        assert_eq!(base36_6(37), "000011");
        let w = World::default_world();
        let names: Vec<_> = w.nodes.iter().map(NodeSpec::node_name).collect();
        assert!(names.contains(&"aks-nodepool1-31415926-vmss000001".to_string()));
        assert_eq!(w.nodes[3].vm_name(), "aks-nodepool1-31415926-vmss_1");
        w.validate().expect("default world is valid");
    }

    #[test]
    fn world_files_round_trip_and_refuse_unknown_fields() {
        let w = World::default_world();
        let text = serde_json::to_string(&w).unwrap();
        let back: World = serde_json::from_str(&text).unwrap();
        assert_eq!(back.nodes[2].placement, w.nodes[2].placement);
        let bad = text.replacen("\"vmSize\"", "\"vmSise\"", 1);
        assert!(serde_json::from_str::<World>(&bad).is_err());
        let both = r#"{"nodes":[{"vmSize":"Standard_B2s","availabilitySet":"a","scaleSet":"s","instanceId":1}]}"#;
        assert!(serde_json::from_str::<World>(both)
            .unwrap_err()
            .to_string()
            .contains("either"));
    }

    #[test]
    fn rejects_zonal_availability_set_vms_and_unknown_sizes() {
        let mut w = World::default_world();
        w.nodes[0].zone = Some("1".into());
        assert!(w
            .validate()
            .unwrap_err()
            .to_string()
            .contains("cannot be zonal"));
        let mut w = World::default_world();
        w.nodes[1].vm_size = "Standard_Imaginary".into();
        assert!(w
            .validate()
            .unwrap_err()
            .to_string()
            .contains("unknown vmSize"));
    }
}
