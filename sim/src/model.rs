//! The simulated resources as they are kept (and persisted), and how ARM renders them.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

use crate::world::World;

pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, false)
}

/// `rg/name`, lower case: ARM names are case-insensitive.
pub fn key(rg: &str, name: &str) -> String {
    format!("{}/{}", rg.to_lowercase(), name.to_lowercase())
}

pub fn resource_id(sub: &str, rg: &str, kind: &str, name: &str) -> String {
    format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/{kind}/{name}")
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Disk {
    pub id: String,
    pub name: String,
    pub location: String,
    pub sku: String,
    pub zones: Vec<String>,
    pub tags: BTreeMap<String, String>,
    pub size_gb: i64,
    pub create_option: String,
    pub source_resource_id: Option<String>,
    pub source_unique_id: Option<String>,
    pub max_shares: Option<i64>,
    pub iops: Option<i64>,
    pub mbps: Option<i64>,
    /// When the disk's performance (IOPS/MB/s) was set, its creation included: Azure allows
    /// four such settings in 24 hours.
    #[serde(default)]
    pub performance_set: Vec<DateTime<Utc>>,
    /// Writable properties the simulator does not interpret, kept and echoed as sent.
    pub other_properties: Map<String, Value>,
    pub provisioning_state: String,
    /// VM resource IDs this disk is attached to (one unless `maxShares` > 1).
    pub attached_to: Vec<String>,
    pub time_created: DateTime<Utc>,
    pub last_ownership_update: Option<DateTime<Utc>>,
    pub unique_id: String,
}

impl Disk {
    pub fn is_zrs(&self) -> bool {
        self.sku.to_ascii_uppercase().ends_with("_ZRS")
    }

    pub fn is_shared(&self) -> bool {
        self.max_shares.unwrap_or(1) > 1
    }

    /// PremiumV2 and Ultra disks: caching None only, online resize at any size.
    pub fn is_v2_class(&self) -> bool {
        self.sku.eq_ignore_ascii_case("PremiumV2_LRS")
            || self.sku.eq_ignore_ascii_case("UltraSSD_LRS")
    }

    pub fn tier(&self) -> Option<&'static str> {
        if !self.sku.to_ascii_lowercase().starts_with("premium_") {
            return None;
        }
        const TIERS: &[(i64, &str)] = &[
            (4, "P1"),
            (8, "P2"),
            (16, "P3"),
            (32, "P4"),
            (64, "P6"),
            (128, "P10"),
            (256, "P15"),
            (512, "P20"),
            (1024, "P30"),
            (2048, "P40"),
            (4096, "P50"),
            (8192, "P60"),
            (16384, "P70"),
            (32767, "P80"),
        ];
        TIERS
            .iter()
            .find(|(gb, _)| self.size_gb <= *gb)
            .map(|(_, t)| *t)
    }

    pub fn to_json(&self) -> Value {
        let mut props = self.other_properties.clone();
        let mut creation = json!({"createOption": self.create_option});
        if let Some(src) = &self.source_resource_id {
            creation["sourceResourceId"] = json!(src);
        }
        if let Some(u) = &self.source_unique_id {
            creation["sourceUniqueId"] = json!(u);
        }
        props.insert("creationData".into(), creation);
        props.insert("diskSizeGB".into(), json!(self.size_gb));
        props.insert(
            "diskSizeBytes".into(),
            json!(self.size_gb * 1024 * 1024 * 1024),
        );
        props.insert("uniqueId".into(), json!(self.unique_id));
        props.insert("provisioningState".into(), json!(self.provisioning_state));
        props.insert("timeCreated".into(), json!(rfc3339(self.time_created)));
        let state = if self.attached_to.is_empty() {
            "Unattached"
        } else {
            "Attached"
        };
        props.insert("diskState".into(), json!(state));
        if let Some(t) = self.last_ownership_update {
            props.insert("LastOwnershipUpdateTime".into(), json!(rfc3339(t)));
        }
        if let Some(m) = self.max_shares {
            props.insert("maxShares".into(), json!(m));
        }
        if let Some(i) = self.iops {
            props.insert("diskIOPSReadWrite".into(), json!(i));
        }
        if let Some(m) = self.mbps {
            props.insert("diskMBpsReadWrite".into(), json!(m));
        }
        if let Some(t) = self.tier() {
            props.insert("tier".into(), json!(t));
        }
        let mut disk = json!({
            "id": self.id,
            "name": self.name,
            "type": "Microsoft.Compute/disks",
            "location": self.location,
            "sku": {"name": self.sku, "tier": sku_tier(&self.sku)},
            "properties": props,
        });
        if !self.tags.is_empty() {
            disk["tags"] = json!(self.tags);
        }
        if !self.zones.is_empty() {
            disk["zones"] = json!(self.zones);
        }
        if self.is_shared() {
            if !self.attached_to.is_empty() {
                disk["managedByExtended"] = json!(self.attached_to);
            }
        } else if let Some(vm) = self.attached_to.first() {
            disk["managedBy"] = json!(vm);
        }
        disk
    }
}

fn sku_tier(sku: &str) -> &'static str {
    if sku.to_ascii_lowercase().starts_with("premium") || sku.eq_ignore_ascii_case("UltraSSD_LRS") {
        "Premium"
    } else {
        "Standard"
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    pub id: String,
    pub name: String,
    pub location: String,
    pub sku: String,
    pub tags: BTreeMap<String, String>,
    pub size_gb: i64,
    pub source_resource_id: String,
    pub source_unique_id: String,
    pub incremental: bool,
    pub provisioning_state: String,
    pub time_created: DateTime<Utc>,
    pub unique_id: String,
}

impl Snapshot {
    pub fn to_json(&self) -> Value {
        let mut snap = json!({
            "id": self.id,
            "name": self.name,
            "type": "Microsoft.Compute/snapshots",
            "location": self.location,
            "sku": {"name": self.sku, "tier": "Standard"},
            "properties": {
                "creationData": {
                    "createOption": "Copy",
                    "sourceResourceId": self.source_resource_id,
                    "sourceUniqueId": self.source_unique_id,
                },
                "diskSizeGB": self.size_gb,
                "diskSizeBytes": self.size_gb * 1024 * 1024 * 1024,
                "incremental": self.incremental,
                "uniqueId": self.unique_id,
                "provisioningState": self.provisioning_state,
                "timeCreated": rfc3339(self.time_created),
                "diskState": "Unattached",
            },
        });
        if !self.tags.is_empty() {
            snap["tags"] = json!(self.tags);
        }
        snap
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataDisk {
    pub lun: i64,
    pub name: String,
    /// The disk's key (`rg/name`, lower case) in the disk table.
    pub disk_key: String,
    pub disk_id: String,
    pub caching: String,
    pub write_accelerator: bool,
    pub delete_option: String,
    pub to_be_detached: bool,
    pub detach_option: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum VmKind {
    Standard { availability_set: String },
    ScaleSetInstance { scale_set: String, instance_id: u32 },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Vm {
    pub node: String,
    /// ARM's name: the VM name, or `<scale set>_<instance id>`.
    pub name: String,
    pub id: String,
    pub kind: VmKind,
    pub vm_size: String,
    pub zone: Option<String>,
    pub vm_id: String,
    pub system_principal_id: Option<String>,
    pub data_disks: Vec<DataDisk>,
    pub provisioning_state: String,
    pub etag: u64,
    /// The long-running operation now running on this VM, if any.
    pub busy: Option<String>,
    pub time_created: DateTime<Utc>,
    /// Device name each attached LUN has in the guest (`sdc`, …).
    pub devices: BTreeMap<i64, String>,
}

impl Vm {
    pub fn etag_header(&self) -> String {
        format!("\"{}\"", self.etag)
    }

    pub fn storage_profile(&self, disks: &BTreeMap<String, Disk>) -> Value {
        let data: Vec<Value> = self
            .data_disks
            .iter()
            .map(|d| {
                let disk = disks.get(&d.disk_key);
                let mut v = json!({
                    "lun": d.lun,
                    "name": d.name,
                    "createOption": "Attach",
                    "caching": d.caching,
                    "writeAcceleratorEnabled": d.write_accelerator,
                    "toBeDetached": d.to_be_detached,
                    "deleteOption": d.delete_option,
                    "managedDisk": {
                        "id": d.disk_id,
                        "storageAccountType": disk.map(|k| k.sku.clone()).unwrap_or_else(|| "Standard_LRS".into()),
                    },
                });
                if let Some(disk) = disk {
                    v["diskSizeGB"] = json!(disk.size_gb);
                    if let Some(i) = disk.iops {
                        v["diskIOPSReadWrite"] = json!(i);
                    }
                    if let Some(m) = disk.mbps {
                        v["diskMBpsReadWrite"] = json!(m);
                    }
                }
                if let Some(o) = &d.detach_option {
                    v["detachOption"] = json!(o);
                }
                v
            })
            .collect();
        let os_name = format!(
            "{}_OsDisk_1_{}",
            self.name,
            &self.vm_id.replace('-', "")[..16]
        );
        json!({
            "imageReference": {
                "publisher": "microsoft-aks",
                "offer": "aks",
                "sku": "aks-ubuntu-2204-gen2",
                "version": "2024.11.01",
            },
            "osDisk": {
                "osType": "Linux",
                "name": os_name,
                "createOption": "FromImage",
                "caching": "ReadWrite",
                "managedDisk": {"storageAccountType": "Premium_LRS"},
                "diskSizeGB": 128,
                "deleteOption": "Delete",
            },
            "dataDisks": data,
        })
    }

    pub fn to_json(&self, world: &World, disks: &BTreeMap<String, Disk>) -> Value {
        let mut identity = json!({
            "type": if self.system_principal_id.is_some() { "SystemAssigned, UserAssigned" } else { "UserAssigned" },
            "userAssignedIdentities": world.user_assigned_identities(),
        });
        // The system-assigned identity's principal and tenant (VirtualMachineIdentity: "only
        // provided for a system assigned identity").
        if let Some(p) = &self.system_principal_id {
            identity["principalId"] = json!(p);
            identity["tenantId"] = json!(world.tenant);
        }
        let mut props = json!({
            "vmId": self.vm_id,
            "hardwareProfile": {"vmSize": self.vm_size},
            "storageProfile": self.storage_profile(disks),
            "osProfile": {
                "computerName": self.node,
                "adminUsername": "azureuser",
                "linuxConfiguration": {"disablePasswordAuthentication": true},
            },
            "provisioningState": self.provisioning_state,
            "timeCreated": rfc3339(self.time_created),
        });
        let mut vm = json!({
            "id": self.id,
            "name": self.name,
            "location": world.location,
            "etag": self.etag_header(),
            "identity": identity,
        });
        match &self.kind {
            VmKind::Standard { availability_set } => {
                let as_id = self
                    .id
                    .split("/providers/")
                    .next()
                    .unwrap_or_default()
                    .to_string()
                    + "/providers/Microsoft.Compute/availabilitySets/"
                    + &availability_set.to_uppercase();
                props["availabilitySet"] = json!({"id": as_id});
                vm["type"] = json!("Microsoft.Compute/virtualMachines");
            }
            VmKind::ScaleSetInstance { instance_id, .. } => {
                props["latestModelApplied"] = json!(true);
                vm["type"] = json!("Microsoft.Compute/virtualMachineScaleSets/virtualMachines");
                vm["instanceId"] = json!(instance_id.to_string());
                vm["sku"] = json!({"name": self.vm_size, "tier": "Standard"});
            }
        }
        if let Some(z) = &self.zone {
            vm["zones"] = json!([z]);
        }
        vm["properties"] = props;
        vm
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum OpStatus {
    InProgress,
    Succeeded,
    Failed,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    pub status: u16,
    pub code: String,
    pub message: String,
    pub target: Option<String>,
}

impl ErrorBody {
    pub fn to_json(&self) -> Value {
        let mut e = json!({"code": self.code, "message": self.message});
        if let Some(t) = &self.target {
            e["target"] = json!(t);
        }
        json!({ "error": e })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum OpKind {
    DiskCreate {
        disk: String,
    },
    DiskUpdate {
        disk: String,
        old_size_gb: i64,
    },
    DiskDelete {
        disk: String,
    },
    SnapshotCreate {
        snapshot: String,
    },
    SnapshotDelete {
        snapshot: String,
    },
    /// Attach and detach on one VM; `final_body` says what the Location poll answers at the end.
    VmDisks {
        node: String,
        attach: Vec<String>,
        detach: Vec<String>,
        final_body: VmFinalBody,
    },
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub enum VmFinalBody {
    StorageProfile,
    VirtualMachine,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    pub id: String,
    pub kind: OpKind,
    pub started: DateTime<Utc>,
    pub due: DateTime<Utc>,
    pub ended: Option<DateTime<Utc>>,
    pub status: OpStatus,
    pub error: Option<ErrorBody>,
    /// A failure a fault rule planted: the operation ends Failed with this error.
    pub planted_failure: Option<ErrorBody>,
    /// What the Location poll answers once Succeeded.
    pub result: Option<Value>,
}

/// A Compute resource ID taken apart: (subscription, resource group, type, name). Case is kept.
pub fn parse_id(id: &str) -> Option<(String, String, String, String)> {
    let s: Vec<&str> = id.trim_matches('/').split('/').collect();
    match s.as_slice() {
        [su, sub, g, rg, p, ns, kind, name]
            if su.eq_ignore_ascii_case("subscriptions")
                && g.eq_ignore_ascii_case("resourceGroups")
                && p.eq_ignore_ascii_case("providers")
                && ns.eq_ignore_ascii_case("Microsoft.Compute") =>
        {
            Some((
                sub.to_string(),
                rg.to_string(),
                kind.to_string(),
                name.to_string(),
            ))
        }
        _ => None,
    }
}
