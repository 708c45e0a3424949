//! What the Instance Metadata Service tells a VM about itself: which managed disk sits at which
//! LUN (`compute.storageProfile.dataDisks`). It is read on the node, costs no ARM request, and
//! lets the node check that the device it found for a LUN is the disk it was asked to mount.

use crate::error::AzureError;
use serde::Deserialize;
use std::time::Duration;
use url::Url;

/// The version that lists data disks with their managed disk IDs (all later ones do too).
const API_VERSION: &str = "2021-02-01";

/// A data disk as IMDS lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceDisk {
    pub lun: i32,
    /// The managed disk's resource ID (empty for unmanaged disks).
    pub disk_id: String,
    pub name: String,
}

/// This VM as IMDS describes it: its resource ID and data disks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceView {
    pub resource_id: String,
    pub data_disks: Vec<InstanceDisk>,
}

#[derive(Deserialize)]
struct Instance {
    #[serde(rename = "resourceId", default)]
    resource_id: String,
    #[serde(rename = "storageProfile", default)]
    storage_profile: StorageProfile,
}

#[derive(Deserialize, Default)]
struct StorageProfile {
    #[serde(rename = "dataDisks", default)]
    data_disks: Vec<DataDisk>,
}

#[derive(Deserialize)]
struct DataDisk {
    // IMDS writes every scalar as a string.
    lun: String,
    #[serde(default)]
    name: String,
    #[serde(rename = "managedDisk", default)]
    managed_disk: Option<ManagedDisk>,
}

#[derive(Deserialize)]
struct ManagedDisk {
    #[serde(default)]
    id: String,
}

/// Reads `/metadata/instance/compute` as IMDS answers it (no I/O).
pub fn instance_of(body: &[u8]) -> Result<InstanceView, String> {
    let i: Instance =
        serde_json::from_slice(body).map_err(|e| format!("IMDS answered something else: {e}"))?;
    let data_disks = i
        .storage_profile
        .data_disks
        .into_iter()
        .map(|d| {
            Ok(InstanceDisk {
                lun: d
                    .lun
                    .trim()
                    .parse()
                    .map_err(|_| format!("IMDS lists a data disk at LUN {:?}", d.lun))?,
                disk_id: d.managed_disk.map(|m| m.id).unwrap_or_default(),
                name: d.name,
            })
        })
        .collect::<Result<_, String>>()?;
    Ok(InstanceView {
        resource_id: i.resource_id,
        data_disks,
    })
}

/// This VM, from IMDS at `endpoint` (`IMDS_ENDPOINT` or the link-local address).
pub async fn instance(endpoint: &Url) -> Result<InstanceView, AzureError> {
    let mut url = endpoint
        .join("metadata/instance/compute")
        .map_err(|e| AzureError::other(format!("IMDS endpoint {endpoint}: {e}")))?;
    url.set_query(Some(&format!("api-version={API_VERSION}")));
    let fail = |why: String| AzureError::Transient {
        message: format!("the Instance Metadata Service ({endpoint}) did not answer: {why}"),
    };
    // IMDS refuses proxied requests, and a proxy must never see this traffic.
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| fail(e.to_string()))?;
    let rsp = http
        .get(url)
        .header("Metadata", "true")
        .send()
        .await
        .map_err(|e| fail(e.to_string()))?;
    if !rsp.status().is_success() {
        return Err(fail(format!("HTTP {}", rsp.status())));
    }
    let body = rsp.bytes().await.map_err(|e| fail(e.to_string()))?;
    instance_of(&body).map_err(AzureError::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luns_and_ids_as_imds_writes_them() {
        let body = br#"{"name":"vm","resourceId":"/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm",
            "storageProfile":{"dataDisks":[
            {"lun":"0","name":"pvc-1","managedDisk":{"id":"/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/disks/pvc-1","storageAccountType":"Premium_LRS"}},
            {"lun":"3","name":"old","vhd":{"uri":"https://x/y.vhd"}}]}}"#;
        let view = instance_of(body).expect("parses");
        assert!(view.resource_id.ends_with("/virtualMachines/vm"));
        let disks = view.data_disks;
        assert_eq!(disks.len(), 2);
        assert_eq!(disks[0].lun, 0);
        assert!(disks[0].disk_id.ends_with("/disks/pvc-1"));
        assert_eq!((disks[1].lun, disks[1].disk_id.as_str()), (3, ""));
        assert_eq!(
            instance_of(br#"{"name":"vm"}"#).expect("none").data_disks,
            vec![]
        );
        assert!(instance_of(br#"{"storageProfile":{"dataDisks":[{"lun":"x"}]}}"#).is_err());
    }
}
