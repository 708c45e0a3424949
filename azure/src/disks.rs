//! Managed disks and snapshots: create (idempotent PUT, Empty or Copy), read, grow, delete.

use crate::arm::{from_core, Arm, Want};
use crate::error::{vm_name_from_id, AzureError};
use crate::naming::{ResourceId, ResourceKind};
use crate::params::{DiskParams, NetworkAccess, Sku};
use crate::transport::{guarded, SendGuard, Unwanted};
use azure_core::Method;
use azure_mgmt_compute::package_2024_07_01::models;
use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

pub const DISK_API_VERSION: &str = "2024-03-02";

/// What a new disk should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSpec {
    pub resource_group: String,
    pub name: String,
    pub location: String,
    pub size_gib: u64,
    pub sku: Sku,
    pub zone: Option<String>,
    pub iops: Option<i64>,
    pub mbps: Option<i64>,
    pub max_shares: Option<i32>,
    pub tags: BTreeMap<String, String>,
    pub disk_encryption_set_id: Option<String>,
    pub network_access_policy: Option<NetworkAccess>,
    pub disk_access_id: Option<String>,
    pub logical_sector_size: Option<i32>,
    pub enable_bursting: Option<bool>,
    /// Copy from this disk or snapshot (resource ID) instead of starting empty.
    pub source: Option<String>,
}

impl DiskSpec {
    /// The disk a class's parameters describe, `size_gib` big, in `zone`. The class's location and
    /// resource group win over the cluster's.
    pub fn from_params(
        params: &DiskParams,
        name: &str,
        size_gib: u64,
        zone: Option<String>,
        cluster_resource_group: &str,
        cluster_location: &str,
    ) -> DiskSpec {
        DiskSpec {
            resource_group: params
                .resource_group
                .clone()
                .unwrap_or_else(|| cluster_resource_group.to_string()),
            name: name.to_string(),
            location: params
                .location
                .clone()
                .unwrap_or_else(|| cluster_location.to_string()),
            size_gib,
            sku: params.sku,
            zone,
            iops: params.iops,
            mbps: params.mbps,
            max_shares: params.max_shares,
            tags: params.tags.clone(),
            disk_encryption_set_id: params.disk_encryption_set_id.clone(),
            network_access_policy: params.network_access_policy,
            disk_access_id: params.disk_access_id.clone(),
            logical_sector_size: params.logical_sector_size,
            enable_bursting: params.enable_bursting,
            source: None,
        }
    }

    fn to_model(&self) -> models::Disk {
        let mut creation = models::CreationData::new(if self.source.is_some() {
            models::creation_data::CreateOption::Copy
        } else {
            models::creation_data::CreateOption::Empty
        });
        creation.source_resource_id = self.source.clone();
        creation.logical_sector_size = self.logical_sector_size;
        let mut props = models::DiskProperties::new(creation);
        props.disk_size_gb = i32::try_from(self.size_gib).ok();
        props.disk_iops_read_write = self.iops;
        props.disk_m_bps_read_write = self.mbps;
        props.max_shares = self.max_shares;
        props.bursting_enabled = self.enable_bursting;
        props.disk_access_id = self.disk_access_id.clone();
        props.network_access_policy = self.network_access_policy.map(|n| match n {
            NetworkAccess::AllowAll => models::NetworkAccessPolicy::AllowAll,
            NetworkAccess::AllowPrivate => models::NetworkAccessPolicy::AllowPrivate,
            NetworkAccess::DenyAll => models::NetworkAccessPolicy::DenyAll,
        });
        if let Some(des) = &self.disk_encryption_set_id {
            let mut enc = models::Encryption::new();
            enc.disk_encryption_set_id = Some(des.clone());
            enc.type_ = Some(models::EncryptionType::EncryptionAtRestWithCustomerKey);
            props.encryption = Some(enc);
        }
        let mut resource = models::Resource::new(self.location.clone());
        if !self.tags.is_empty() {
            resource.tags = serde_json::to_value(&self.tags).ok();
        }
        let mut disk = models::Disk::new(resource);
        let mut sku = models::DiskSku::new();
        sku.name = models::disk_sku::Name::from_str(self.sku.as_str()).ok();
        disk.sku = Some(sku);
        disk.zones = self.zone.iter().cloned().collect();
        disk.properties = Some(props);
        disk
    }
}

/// A disk as Azure reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskInfo {
    pub id: String,
    pub name: String,
    pub location: String,
    pub size_gib: u64,
    pub sku: String,
    pub zones: Vec<String>,
    /// The VM it is attached to (resource ID).
    pub managed_by: Option<String>,
    /// All VMs of a shared disk.
    pub managed_by_extended: Vec<String>,
    pub provisioning_state: String,
    pub disk_state: String,
    pub max_shares: Option<i32>,
    pub tags: BTreeMap<String, String>,
    /// Provisioned performance (Premium SSD v2 and Ultra only).
    pub performance: Performance,
}

/// A Premium SSD v2 or Ultra disk's provisioned IOPS and MB/s (`None`: not set / not such a disk).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Performance {
    pub iops: Option<i64>,
    pub mbps: Option<i64>,
}

impl Performance {
    /// Whether a disk with `self` already has what `wanted` asks (what it leaves unset is free).
    pub fn satisfies(&self, wanted: &Performance) -> bool {
        wanted.iops.is_none_or(|i| self.iops == Some(i))
            && wanted.mbps.is_none_or(|m| self.mbps == Some(m))
    }
}

impl DiskInfo {
    fn from_model(d: models::Disk) -> DiskInfo {
        let props = d.properties;
        let tags = d
            .resource
            .tags
            .and_then(|t| serde_json::from_value(t).ok())
            .unwrap_or_default();
        DiskInfo {
            id: d.resource.id.unwrap_or_default(),
            name: d.resource.name.unwrap_or_default(),
            location: d.resource.location,
            size_gib: props
                .as_ref()
                .and_then(|p| p.disk_size_gb)
                .map_or(0, |s| s.max(0) as u64),
            sku: d
                .sku
                .and_then(|s| s.name)
                .and_then(|n| serde_json::to_value(n).ok())
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            zones: d.zones,
            managed_by: d.managed_by.filter(|m| !m.is_empty()),
            managed_by_extended: d.managed_by_extended,
            provisioning_state: props
                .as_ref()
                .and_then(|p| p.provisioning_state.clone())
                .unwrap_or_default(),
            disk_state: props
                .as_ref()
                .and_then(|p| p.disk_state.as_ref())
                .and_then(|s| serde_json::to_value(s).ok())
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            max_shares: props.as_ref().and_then(|p| p.max_shares),
            tags,
            performance: Performance {
                iops: props.as_ref().and_then(|p| p.disk_iops_read_write),
                mbps: props.as_ref().and_then(|p| p.disk_m_bps_read_write),
            },
        }
    }

    /// Every VM the disk is attached to.
    pub fn attached_to(&self) -> Vec<String> {
        let mut vms = self.managed_by_extended.clone();
        if let Some(m) = &self.managed_by {
            if !vms.iter().any(|v| v.eq_ignore_ascii_case(m)) {
                vms.push(m.clone());
            }
        }
        vms
    }
}

fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> Result<T, AzureError> {
    serde_json::from_slice(body)
        .map_err(|e| AzureError::other(format!("Azure's description of {what} is unreadable: {e}")))
}

/// What `delete_disk` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    Deleted,
    /// There was nothing to delete (a success: deletes are idempotent).
    AlreadyGone,
}

impl Arm {
    pub fn disk_id(&self, resource_group: &str, name: &str) -> ResourceId {
        ResourceId::new(&self.subscription, resource_group, ResourceKind::Disk, name)
    }

    fn disk_url(&self, resource_group: &str, name: &str) -> Result<url::Url, AzureError> {
        self.url(
            &format!(
                "/subscriptions/{}/resourceGroups/{resource_group}/providers/Microsoft.Compute/disks/{name}",
                self.subscription
            ),
            DISK_API_VERSION,
        )
    }

    /// The disk, or `None` when it does not exist.
    pub async fn get_disk(
        &self,
        resource_group: &str,
        name: &str,
    ) -> Result<Option<DiskInfo>, AzureError> {
        let sent = self
            .client
            .disks_client()
            .get(&self.subscription, resource_group, name)
            .send()
            .await;
        match sent {
            Ok(rsp) => Ok(Some(DiskInfo::from_model(
                rsp.into_body().await.map_err(from_core)?,
            ))),
            Err(e) => match from_core(e) {
                AzureError::NotFound { .. } => Ok(None),
                other => Err(other),
            },
        }
    }

    /// The disk of a resource ID (any resource group of this subscription), or `None`.
    pub async fn get_disk_by_id(&self, id: &ResourceId) -> Result<Option<DiskInfo>, AzureError> {
        self.get_disk(&id.resource_group, &id.name).await
    }

    /// Replaces the disk's tags (a PATCH: allowed while the disk is attached). Callers pass the
    /// tags they read plus their own, so nothing of others is lost. No attempt goes out at or
    /// after `send_before`, the transport's retries included (then [`AzureError::Abandoned`]):
    /// tags planned from a read land soon after it or not at all. `Disks_Update` takes no
    /// `If-Match`, so a late write would overwrite whatever another writer claimed since the read
    /// (flexdisk's `ownership` counts on the bound).
    pub async fn set_disk_tags(
        &self,
        resource_group: &str,
        name: &str,
        tags: &BTreeMap<String, String>,
        send_before: Instant,
    ) -> Result<DiskInfo, AzureError> {
        let mut update = models::DiskUpdate::new();
        update.tags = serde_json::to_value(tags).ok();
        let guard = SendGuard(Arc::new(move || Instant::now() < send_before));
        self.update_disk(resource_group, name, update, "tagged", Some(guard))
            .await
    }

    /// Changes a Premium SSD v2 or Ultra disk's IOPS and MB/s (online, attached or not); what
    /// `wanted` leaves unset stays. Azure refuses other SKUs, values outside the size's range and
    /// more than a few changes a day (its error says which).
    pub async fn set_disk_performance(
        &self,
        resource_group: &str,
        name: &str,
        wanted: &Performance,
    ) -> Result<DiskInfo, AzureError> {
        let properties = models::DiskUpdateProperties {
            disk_iops_read_write: wanted.iops,
            disk_m_bps_read_write: wanted.mbps,
            ..Default::default()
        };
        let mut update = models::DiskUpdate::new();
        update.properties = Some(properties);
        self.update_disk(resource_group, name, update, "tuned", None)
            .await
    }

    /// One PATCH of the disk, followed to its end; the disk as it is afterwards. `guard`, if any,
    /// is asked before every attempt to send the PATCH (not the polls after it).
    async fn update_disk(
        &self,
        resource_group: &str,
        name: &str,
        update: models::DiskUpdate,
        what: &str,
        guard: Option<SendGuard>,
    ) -> Result<DiskInfo, AzureError> {
        let url = self.disk_url(resource_group, name)?;
        let send = async {
            self.client
                .disks_client()
                .update(&self.subscription, resource_group, name, update)
                .send()
                .await
                .map(|r| r.into_raw_response())
        };
        let sent = match guard {
            Some(g) => guarded(g, send).await,
            None => send.await,
        };
        if let Some(u) = sent
            .as_ref()
            .err()
            .and_then(|e| e.downcast_ref::<Unwanted>())
        {
            return Err(AzureError::Abandoned {
                message: format!(
                    "the disk {name} was not {what}: its time to send ran out ({} earlier attempts)",
                    u.attempts
                ),
            });
        }
        match self.write(sent, Method::Patch, &url, Want::Result).await? {
            Some(b) => Ok(DiskInfo::from_model(parse_body(
                &b,
                &format!("the {what} disk"),
            )?)),
            None => {
                self.get_disk(resource_group, name)
                    .await?
                    .ok_or_else(|| AzureError::NotFound {
                        message: format!("disk {name} vanished while being {what}"),
                    })
            }
        }
    }

    /// Every disk of a resource group (all pages).
    pub async fn list_disks(&self, resource_group: &str) -> Result<Vec<DiskInfo>, AzureError> {
        use futures::StreamExt;
        let mut out = Vec::new();
        let mut pages = self
            .client
            .disks_client()
            .list_by_resource_group(&self.subscription, resource_group)
            .into_stream();
        while let Some(page) = pages.next().await {
            out.extend(
                page.map_err(from_core)?
                    .value
                    .into_iter()
                    .map(DiskInfo::from_model),
            );
        }
        Ok(out)
    }

    /// Creates the disk, or finds it made already: PUT is idempotent, so a provisioner that
    /// crashed half-way simply asks again.
    pub async fn create_disk(&self, spec: &DiskSpec) -> Result<DiskInfo, AzureError> {
        let url = self.disk_url(&spec.resource_group, &spec.name)?;
        let sent = self
            .client
            .disks_client()
            .create_or_update(
                &self.subscription,
                &spec.resource_group,
                &spec.name,
                spec.to_model(),
            )
            .send()
            .await
            .map(|r| r.into_raw_response());
        let body = self.write(sent, Method::Put, &url, Want::Result).await?;
        match body {
            Some(b) => Ok(DiskInfo::from_model(parse_body(&b, "the new disk")?)),
            None => self
                .get_disk(&spec.resource_group, &spec.name)
                .await?
                .ok_or_else(|| {
                    AzureError::other(format!(
                        "disk {} vanished right after it was created",
                        spec.name
                    ))
                }),
        }
    }

    /// Grows the disk to `size_gib` (never shrinks: Azure cannot). Online while attached, except
    /// where Azure needs a detach (it says so, as an error).
    pub async fn grow_disk(
        &self,
        resource_group: &str,
        name: &str,
        size_gib: u64,
    ) -> Result<DiskInfo, AzureError> {
        let current =
            self.get_disk(resource_group, name)
                .await?
                .ok_or_else(|| AzureError::NotFound {
                    message: format!(
                        "disk {name} in resource group {resource_group} does not exist"
                    ),
                })?;
        if current.size_gib >= size_gib {
            return Ok(current);
        }
        let size = i32::try_from(size_gib).map_err(|_| AzureError::InvalidParameter {
            code: "InvalidParameter".into(),
            message: format!("{size_gib} GiB is beyond any managed disk size"),
        })?;
        let mut props = models::DiskUpdateProperties::new();
        props.disk_size_gb = Some(size);
        let mut update = models::DiskUpdate::new();
        update.properties = Some(props);
        self.update_disk(resource_group, name, update, "grown", None)
            .await
    }

    /// Deletes the disk unless a VM still has it (then it says which). A disk that is already
    /// gone is a success.
    pub async fn delete_disk(
        &self,
        resource_group: &str,
        name: &str,
    ) -> Result<Deleted, AzureError> {
        let Some(disk) = self.get_disk(resource_group, name).await? else {
            return Ok(Deleted::AlreadyGone);
        };
        if let Some(vm) = disk.attached_to().first() {
            let owner = vm_name_from_id(vm);
            return Err(AzureError::OwnedByOtherVm {
                message: format!(
                    "disk {name} is still attached to VM {owner}; it is deleted once detached"
                ),
                owner,
            });
        }
        let url = self.disk_url(resource_group, name)?;
        let sent = self
            .client
            .disks_client()
            .delete(&self.subscription, resource_group, name)
            .send()
            .await
            .map(|r| r.into_raw_response());
        self.delete(sent, &url).await
    }

    fn snapshot_url(&self, resource_group: &str, name: &str) -> Result<url::Url, AzureError> {
        self.url(
            &format!(
                "/subscriptions/{}/resourceGroups/{resource_group}/providers/Microsoft.Compute/snapshots/{name}",
                self.subscription
            ),
            DISK_API_VERSION,
        )
    }

    /// Snapshots a disk (incremental, as Azure recommends for managed disks). Idempotent.
    pub async fn create_snapshot(
        &self,
        resource_group: &str,
        name: &str,
        source_disk_id: &str,
        location: &str,
    ) -> Result<String, AzureError> {
        let mut creation = models::CreationData::new(models::creation_data::CreateOption::Copy);
        creation.source_resource_id = Some(source_disk_id.to_string());
        let mut props = models::SnapshotProperties::new(creation);
        props.incremental = Some(true);
        let mut snapshot = models::Snapshot::new(models::Resource::new(location.to_string()));
        snapshot.properties = Some(props);
        let url = self.snapshot_url(resource_group, name)?;
        let sent = self
            .client
            .snapshots_client()
            .create_or_update(&self.subscription, resource_group, name, snapshot)
            .send()
            .await
            .map(|r| r.into_raw_response());
        self.write(sent, Method::Put, &url, Want::Outcome).await?;
        Ok(ResourceId::new(
            &self.subscription,
            resource_group,
            ResourceKind::Snapshot,
            name,
        )
        .to_string())
    }

    /// Deletes a snapshot; one already gone is a success.
    pub async fn delete_snapshot(
        &self,
        resource_group: &str,
        name: &str,
    ) -> Result<Deleted, AzureError> {
        let url = self.snapshot_url(resource_group, name)?;
        let sent = self
            .client
            .snapshots_client()
            .delete(&self.subscription, resource_group, name)
            .send()
            .await
            .map(|r| r.into_raw_response());
        self.delete(sent, &url).await
    }
}

/// Whole GiB for a claim's bytes (Azure sizes disks in GiB; at least 1).
pub fn gib_for_bytes(bytes: u64) -> u64 {
    bytes.div_ceil(1 << 30).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_becomes_the_put_body() {
        let params = DiskParams::parse([
            ("skuName", "PremiumV2_LRS"),
            ("diskIOPSReadWrite", "4000"),
            ("tags", "team=storage"),
        ])
        .expect("params");
        let spec = DiskSpec::from_params(&params, "pvc-1", 10, Some("2".into()), "rg", "westus2");
        let body = serde_json::to_value(spec.to_model()).expect("json");
        assert_eq!(body["location"], "westus2");
        assert_eq!(body["sku"]["name"], "PremiumV2_LRS");
        assert_eq!(body["zones"], serde_json::json!(["2"]));
        assert_eq!(body["tags"]["team"], "storage");
        assert_eq!(body["properties"]["diskSizeGB"], 10);
        assert_eq!(body["properties"]["diskIOPSReadWrite"], 4000);
        assert_eq!(body["properties"]["creationData"]["createOption"], "Empty");
    }

    #[test]
    fn sizes_round_up_to_gib() {
        assert_eq!(gib_for_bytes(1), 1);
        assert_eq!(gib_for_bytes(1 << 30), 1);
        assert_eq!(gib_for_bytes((1 << 30) + 1), 2);
        assert_eq!(gib_for_bytes(0), 1);
    }
}
