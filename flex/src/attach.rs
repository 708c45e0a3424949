//! The controller-side calls (attach, isattached, detach): Azure through the azure library, one
//! operation per VM at a time, batched across processes (`batch.rs`), and a record of which disk each
//! attached volume is, since `detach` is told only the volume's name.

use crate::batch::{self, Answer, Op};
use crate::options::VolumeOptions;
use crate::settings::Settings;
use flexdisk_azure::naming::{disk_name_for_pv, parse_resource_id, ResourceKind};
use flexdisk_azure::{Arm, ArmOptions, AzureError, Caching, Config};
use std::path::PathBuf;
use tracing::{info, warn};

pub async fn connect(s: &Settings) -> Result<Arm, String> {
    let config = Config::load(&s.cloud_config).map_err(|e| e.to_string())?;
    for w in &config.warnings {
        warn!("{w}");
    }
    Arm::connect(&config, ArmOptions::default())
        .await
        .map_err(|e| e.to_string())
}

fn record_path(s: &Settings, volume: &str) -> PathBuf {
    s.state_dir.join("volumes").join(volume)
}

fn remember(s: &Settings, volume: &str, disk_uri: &str) {
    let path = record_path(s, volume);
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let tmp = path.with_extension("tmp");
    if std::fs::write(&tmp, disk_uri)
        .and_then(|_| std::fs::rename(&tmp, &path))
        .is_err()
    {
        warn!(
            volume,
            "could not record the volume's disk; detach will look for a disk named after it"
        );
    }
}

/// Attaches the volume's disk to the node's VM; the LUN.
pub async fn attach(s: &Settings, opts: &VolumeOptions, node: &str) -> Result<i32, String> {
    let arm = connect(s).await?;
    let disk = arm
        .get_disk(&opts.disk.resource_group, &opts.disk.name)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("disk {} does not exist", opts.disk_uri))?;
    let vm = arm.node_vm(node).await.map_err(|e| e.to_string())?;
    if let Some(d) = vm.find(&disk.id) {
        if !d.to_be_detached {
            if let Some(v) = &opts.volume_name {
                remember(s, v, &opts.disk_uri);
            }
            return Ok(d.lun);
        }
    }
    let vm_id = vm.vm.id(&arm.subscription);
    let owners: Vec<String> = disk
        .attached_to()
        .into_iter()
        .filter(|o| !o.eq_ignore_ascii_case(&vm_id))
        .collect();
    if !owners.is_empty() && disk.max_shares.unwrap_or(1) <= 1 {
        return Err(format!(
            "disk {} is attached to VM {}; it attaches here once detached there (maxShares is 1)",
            disk.name,
            flexdisk_azure::error::vm_name_from_id(&owners[0])
        ));
    }
    let v2 = disk.sku.starts_with("PremiumV2") || disk.sku.starts_with("UltraSSD");
    let caching = if disk.size_gib >= flexdisk_azure::params::NO_CACHING_FROM_GIB
        || v2
        || disk.max_shares.unwrap_or(1) > 1
    {
        Caching::None
    } else {
        opts.caching.unwrap_or(Caching::ReadOnly)
    };
    let op = Op::Attach {
        caching: caching.as_str().to_string(),
    };
    let lun = match batch::submit(s, &arm, &vm.vm, &disk.id, op).await? {
        Answer::Attached { lun } => lun,
        Answer::Failed { message } => return Err(message),
        Answer::Detached => return Err("the attach was answered as a detach".into()),
    };
    if let Some(v) = &opts.volume_name {
        remember(s, v, &opts.disk_uri);
    }
    info!(disk = %disk.name, vm = %vm.vm.name(), lun, "attached");
    Ok(lun)
}

pub async fn is_attached(s: &Settings, opts: &VolumeOptions, node: &str) -> Result<bool, String> {
    let arm = connect(s).await?;
    match arm.node_vm(node).await {
        Ok(vm) => Ok(vm.find(&opts.disk_uri).is_some_and(|d| !d.to_be_detached)),
        Err(AzureError::NotFound { .. }) => Ok(false),
        Err(e) => Err(e.to_string()),
    }
}

/// Detaches the volume's disk from the node's VM. Gone disk, gone node, not attached: success.
pub async fn detach(s: &Settings, volume: &str, node: &str) -> Result<String, String> {
    let arm = connect(s).await?;
    let recorded = std::fs::read_to_string(record_path(s, volume)).ok();
    let disk_id = match recorded.as_deref().map(str::trim) {
        Some(uri) => parse_resource_id(uri, ResourceKind::Disk)
            .map_err(|e| format!("the record of {volume}: {e}"))?,
        None => arm.disk_id(&arm.resource_group, &disk_name_for_pv(volume)),
    };
    let vm = match arm.node_vm(node).await {
        Ok(vm) => vm,
        Err(AzureError::NotFound { message }) => {
            return Ok(format!("nothing to detach: {message}"))
        }
        Err(e) => return Err(e.to_string()),
    };
    let id = disk_id.to_string();
    if vm.find(&id).is_none() {
        let _ = std::fs::remove_file(record_path(s, volume));
        return Ok(format!(
            "disk {} is not attached to {}",
            disk_id.name,
            vm.vm.name()
        ));
    }
    match batch::submit(s, &arm, &vm.vm, &id, Op::Detach).await? {
        Answer::Detached => {}
        Answer::Failed { message } => return Err(message),
        Answer::Attached { .. } => return Err("the detach was answered as an attach".into()),
    }
    let _ = std::fs::remove_file(record_path(s, volume));
    info!(disk = %disk_id.name, vm = %vm.vm.name(), "detached");
    Ok(format!("detached {} from {}", disk_id.name, vm.vm.name()))
}

/// Grows the disk to hold `new_bytes` (whole GiB). Where Azure cannot grow it in place, says what
/// to do.
pub async fn expand(s: &Settings, opts: &VolumeOptions, new_bytes: u64) -> Result<String, String> {
    let arm = connect(s).await?;
    let gib = flexdisk_azure::disks::gib_for_bytes(new_bytes);
    match arm.grow_disk(&opts.disk.resource_group, &opts.disk.name, gib).await {
        Ok(d) => Ok(format!("disk {} is {} GiB", d.name, d.size_gib)),
        Err(AzureError::Other { status: Some(409), message, .. }) => Err(format!(
            "Azure cannot grow disk {} to {gib} GiB while it is attached: {message}; stop the pod using it \
             (so the disk is detached) and the resize will go through",
            opts.disk.name
        )),
        Err(e) => Err(e.to_string()),
    }
}
