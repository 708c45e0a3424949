//! The controller-side calls (attach, isattached, detach): Azure through the azure library, one
//! operation per VM at a time, batched across processes (`batch.rs`).
//!
//! `detach` is told only the PV's name (kube-controller-manager detaches volumes it knows only
//! from node status after a restart — `populateActualStateOfWorld` in
//! `pkg/controller/volume/attachdetach/attach_detach_controller.go` — and another control-plane
//! host may lead), so the disk is found from Azure alone: `attach` claims every disk for the PV it
//! serves ([`PV_TAG`], see `ownership`) before attaching it and checks the tag after, and
//! `detach` looks for that tag among the VM's data disks. A host-local record of the attach is
//! only a hint of where to look first.

use crate::batch::{self, Answer, Op};
use crate::clock;
use crate::error::{Error, Result};
use crate::options::VolumeOptions;
use crate::ownership::{self, TagPlan};
use crate::settings::Settings;
use crate::vm_view;
use flexdisk_azure::naming::{
    disk_name_for_pv, parse_resource_id, pv_of_tags, ResourceKind, PV_TAG,
};
use flexdisk_azure::{Arm, ArmOptions, AttachedDisk, AzureError, Caching, Config, VmDisks, VmRef};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;
use tracing::{info, warn};

pub fn load_config(s: &Settings) -> Result<Config> {
    let config = Config::load(&s.cloud_config)?;
    for w in &config.warnings {
        warn!("{w}");
    }
    Ok(config)
}

/// Azure for one driver call. A throttled request is not waited for here (nor sent again):
/// kube-controller-manager and kubelet call again with their own back-off, and the throttling is
/// remembered for every process of the host, so none of them sends before Azure's Retry-After
/// is up. Waiting inside a batch would also carry the requests of processes that die meanwhile.
pub async fn connect_with(s: &Settings, config: &Config) -> Result<Arm> {
    let options = ArmOptions {
        throttle_dir: Some(s.throttle_dir()),
        durations_dir: Some(s.durations_dir()),
        retry: flexdisk_azure::retry::RetryPolicy {
            max_retry_after: std::time::Duration::ZERO,
            ..Default::default()
        },
        ..ArmOptions::default()
    };
    Ok(Arm::connect(config, options).await?)
}

pub async fn connect(s: &Settings) -> Result<Arm> {
    connect_with(s, &load_config(s)?).await
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
            "could not keep a hint of the volume's disk (detach finds it without)"
        );
    }
}

/// Attaches the volume's disk to the node's VM; the LUN.
pub async fn attach(s: &Settings, opts: &VolumeOptions, node: &str) -> Result<i32> {
    let pv = opts.volume_name.as_deref().ok_or_else(|| Error::Options(
        "attach: the options lack kubernetes.io/pvOrVolumeName (kube-controller-manager always passes it); \
         flexdisk needs the PV's name to mark the disk so that detach finds it".into(),
    ))?;
    let config = load_config(s)?;
    let coming = announce_for(s, &config, node);
    let arm = connect_with(s, &config).await?;
    let read_at = Instant::now();
    let mut disk = arm
        .get_disk(&opts.disk.resource_group, &opts.disk.name)
        .await?
        .ok_or_else(|| {
            Error::Azure(AzureError::NotFound {
                message: format!("disk {} does not exist", opts.disk_uri),
            })
        })?;
    // The claim first: a disk attached by flexdisk always says which PV it serves, and no other
    // PV's attach takes it while this one may be on its way (see `ownership`).
    let send_by = clock::boot_ms() + ownership::SEND_WITHIN.as_millis() as u64;
    let mut replaced = None;
    let now = clock::unix_secs();
    let plan = ownership::plan_tag(&disk, pv, now);
    let check_tag = ownership::needs_tag_check(&plan, ownership::claim_age(&disk.tags, now));
    match plan {
        TagPlan::Keep => {}
        TagPlan::Refuse(m) => return Err(Error::Refused(m)),
        TagPlan::Write(tags) => {
            let before = disk.tags.clone();
            disk = arm
                .set_disk_tags(
                    &opts.disk.resource_group,
                    &opts.disk.name,
                    &tags,
                    read_at + ownership::CLAIM_WRITE_WITHIN,
                )
                .await
                .map_err(|source| Error::AzureDuring {
                    what: format!("cannot mark disk {} as PV {pv}'s", disk.name),
                    source,
                })?;
            replaced = Some((before, tags));
            info!(disk = %disk.name, pv, "claimed the disk for its PV");
        }
    }
    // No read of the VM here: the batch's holder reads it once for every request of the batch
    // (`batch::Basis::Node`). The disk tells whether another VM holds it.
    let candidates = VmRef::candidates_for_node(node, config.vm_type, &config.resource_group);
    let ours = |id: &str| {
        candidates
            .iter()
            .any(|vm| vm.id(&arm.subscription).eq_ignore_ascii_case(id))
    };
    let owners: Vec<String> = disk
        .attached_to()
        .into_iter()
        .filter(|o| !ours(o))
        .collect();
    if !owners.is_empty() && disk.max_shares.unwrap_or(1) <= 1 {
        return Err(Error::Refused(format!(
            "disk {} is attached to VM {}; it attaches here once detached there (maxShares is 1)",
            disk.name,
            flexdisk_azure::error::vm_name_from_id(&owners[0])
        )));
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
    let spool_vm = announced_vm(&config, node);
    let basis = batch::Basis::Node(node);
    let answer = batch::submit(
        s,
        &arm,
        &spool_vm,
        basis,
        &disk.id,
        op,
        Some(send_by),
        coming,
    )
    .await?;
    let lun = match answer {
        Answer::Attached { lun } => lun,
        Answer::Failed { message } => {
            if let Some((before, claim)) = replaced {
                give_back(&arm, opts, &ours, &before, &claim).await;
            }
            return Err(Error::Operation(message));
        }
        Answer::Detached => return Err(Error::Spool("the attach was answered as a detach".into())),
    };
    remember(s, pv, &opts.disk_uri);
    info!(disk = %disk.name, node = %node, lun, "attached");
    if check_tag {
        confirm_tag(&arm, opts, pv).await;
    }
    Ok(lun)
}

/// After the attach: the disk must say it serves `pv` — a writer that read it before our claim
/// may have written another PV's tag since. The disk is attached to our VM now, so no other PV's
/// attach will write again; ours is put back. Failing here leaves the attach done (it is): the
/// next `detach` then cannot find the disk and fails rather than answer Success.
async fn confirm_tag(arm: &Arm, opts: &VolumeOptions, pv: &str) {
    let rg = &opts.disk.resource_group;
    let name = &opts.disk.name;
    let read_at = Instant::now();
    match arm.get_disk(rg, name).await {
        Ok(Some(d)) if pv_of_tags(&d.tags) == Some(pv) => {}
        Ok(Some(d)) => {
            warn!(disk = %name, pv, found = ?pv_of_tags(&d.tags), "another PV's attach tagged the disk while ours was on its way; tagging it again");
            let tags = ownership::claimed(&d.tags, pv, clock::unix_secs());
            let by = read_at + ownership::CLAIM_WRITE_WITHIN;
            if let Err(e) = arm.set_disk_tags(rg, name, &tags, by).await {
                warn!(disk = %name, pv, error = %e, "cannot tag the attached disk with its PV");
            }
        }
        Ok(None) => warn!(disk = %name, "the disk vanished after its attach"),
        Err(e) => warn!(disk = %name, error = %e, "cannot read the disk's tags after its attach"),
    }
}

/// An attach that failed after claiming the disk: when another VM holds the disk now and our
/// claim is still on it, the tags we replaced go back — they name the PV the disk serves there.
async fn give_back(
    arm: &Arm,
    opts: &VolumeOptions,
    our_vm: &dyn Fn(&str) -> bool,
    before: &BTreeMap<String, String>,
    ours: &BTreeMap<String, String>,
) {
    let rg = &opts.disk.resource_group;
    let name = &opts.disk.name;
    let read_at = Instant::now();
    let Ok(Some(d)) = arm.get_disk(rg, name).await else {
        return;
    };
    let elsewhere = d.attached_to().iter().any(|o| !our_vm(o));
    let still_ours = |k: &str| {
        let get = |t: &BTreeMap<String, String>| {
            t.iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.clone())
        };
        get(&d.tags) == get(ours)
    };
    if elsewhere && still_ours(PV_TAG) && still_ours(ownership::CLAIM_TAG) {
        info!(disk = %name, "the disk went to another VM; putting back the tags this attach replaced");
        let by = read_at + ownership::CLAIM_WRITE_WITHIN;
        if let Err(e) = arm.set_disk_tags(rg, name, before, by).await {
            warn!(disk = %name, error = %e, "cannot put back the disk's tags");
        }
    }
}

/// The VM a node most likely is, before Azure is asked (the first of its candidates).
fn announced_vm(config: &Config, node: &str) -> VmRef {
    VmRef::candidates_for_node(node, config.vm_type, &config.resource_group).swap_remove(0)
}

/// Announces this process's coming request to the batch of the node's likely VM, before the
/// connection to Azure is even set up (the sooner, the likelier a burst shares one operation);
/// the announcement is dropped when the VM turns out to be another.
fn announce_for(s: &Settings, config: &Config, node: &str) -> Option<batch::Announcement> {
    batch::announce(s, &announced_vm(config, node))
}

/// Whether the disk is attached to the node's VM. "Attached" may come from the host's recent
/// view of the VM (a wrong one only delays the controller's noticing); "not attached" only from a
/// read made now — the view may predate another control-plane host's attach, and
/// kube-controller-manager forgets an attachment it is told is not there.
pub async fn is_attached(s: &Settings, opts: &VolumeOptions, node: &str) -> Result<bool> {
    let config = load_config(s)?;
    let candidates = VmRef::candidates_for_node(node, config.vm_type, &config.resource_group);
    if vm_view::recent(s, &candidates).is_some_and(|view| view.has(&opts.disk_uri)) {
        return Ok(true);
    }
    let arm = connect_with(s, &config).await?;
    let read_at = vm_view::now_ms();
    match arm.node_vm(node).await {
        Ok(vm) => {
            vm_view::store(s, &vm, read_at);
            Ok(vm.find(&opts.disk_uri).is_some_and(|d| !d.to_be_detached))
        }
        Err(AzureError::NotFound { .. }) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The order in which the VM's disks are examined: the recorded disk, then the one named after
/// the PV (dynamically provisioned), then the rest (no I/O).
pub fn search_order<'a>(vm: &'a VmDisks, pv: &str, hint: Option<&str>) -> Vec<&'a AttachedDisk> {
    let named = disk_name_for_pv(pv);
    let rank = |d: &AttachedDisk| {
        if hint.is_some_and(|h| h.trim().eq_ignore_ascii_case(&d.disk_id)) {
            0
        } else if d.name.eq_ignore_ascii_case(&named) {
            1
        } else {
            2
        }
    };
    let mut disks: Vec<&AttachedDisk> = vm.disks.iter().collect();
    disks.sort_by_key(|d| rank(d));
    disks
}

/// The VM's data disk that serves `pv`, found by the disks' tags; `Err` when a disk could not be
/// read (then nobody can tell, and a detach must not answer Success). The number of disk reads
/// is returned too (for the log: ARM reads are a budget).
async fn find_pv_disk(
    arm: &Arm,
    vm: &VmDisks,
    pv: &str,
    hint: Option<&str>,
) -> Result<(Option<AttachedDisk>, usize)> {
    let mut reads = 0;
    let hinted = |d: &AttachedDisk| hint.is_some_and(|h| h.trim().eq_ignore_ascii_case(&d.disk_id));
    for d in search_order(vm, pv, hint) {
        let id = match parse_resource_id(&d.disk_id, ResourceKind::Disk) {
            // flexdisk attaches disks of its own subscription only.
            Ok(id) if id.subscription.eq_ignore_ascii_case(&arm.subscription) => id,
            _ => continue,
        };
        reads += 1;
        match arm.get_disk_by_id(&id).await {
            Ok(Some(info)) if pv_of_tags(&info.tags) == Some(pv) => {
                return Ok((Some(d.clone()), reads))
            }
            // Attached by a flexdisk from before the tag, whose record of the attach is here.
            Ok(Some(info)) if pv_of_tags(&info.tags).is_none() && hinted(d) => {
                return Ok((Some(d.clone()), reads))
            }
            Ok(_) => {}
            Err(source) => {
                return Err(Error::AzureDuring {
                    what: format!(
                    "cannot tell whether disk {} on VM {} serves PV {pv}, so the detach is retried",
                    d.name,
                    vm.vm.name()
                ),
                    source,
                })
            }
        }
    }
    Ok((None, reads))
}

/// Detaches the PV's disk from the node's VM. Gone node, no disk of that PV on the VM: success.
/// Never answers success while a disk serving the PV is on the VM.
pub async fn detach(s: &Settings, volume: &str, node: &str) -> Result<String> {
    let config = load_config(s)?;
    let coming = announce_for(s, &config, node);
    let arm = connect_with(s, &config).await?;
    let read_at = vm_view::now_ms();
    let vm = match arm.node_vm(node).await {
        Ok(vm) => vm,
        Err(AzureError::NotFound { message }) => {
            return Ok(format!("nothing to detach: {message}"))
        }
        Err(e) => return Err(e.into()),
    };
    vm_view::store(s, &vm, read_at);
    let hint = std::fs::read_to_string(record_path(s, volume)).ok();
    let (found, reads) = find_pv_disk(&arm, &vm, volume, hint.as_deref()).await?;
    let Some(disk) = found else {
        let _ = std::fs::remove_file(record_path(s, volume));
        info!(pv = volume, vm = %vm.vm.name(), disk_reads = reads, "no disk of the PV on the VM");
        return Ok(format!(
            "no disk of PV {volume} is attached to {} (not attached: nothing to do)",
            vm.vm.name()
        ));
    };
    let basis = batch::Basis::Seen(batch::Seen {
        vm: &vm,
        read_at_ms: read_at,
    });
    let spool_vm = announced_vm(&config, node);
    match batch::submit(
        s,
        &arm,
        &spool_vm,
        basis,
        &disk.disk_id,
        Op::Detach,
        None,
        coming,
    )
    .await?
    {
        Answer::Detached => {}
        Answer::Failed { message } => return Err(Error::Operation(message)),
        Answer::Attached { .. } => {
            return Err(Error::Spool("the detach was answered as an attach".into()))
        }
    }
    let _ = std::fs::remove_file(record_path(s, volume));
    info!(disk = %disk.name, vm = %vm.vm.name(), disk_reads = reads, "detached");
    Ok(format!("detached {} from {}", disk.name, vm.vm.name()))
}

/// Grows the disk to hold `new_bytes` (whole GiB). Where Azure cannot grow it in place, says what
/// to do.
pub async fn expand(s: &Settings, opts: &VolumeOptions, new_bytes: u64) -> Result<String> {
    let arm = connect(s).await?;
    let gib = flexdisk_azure::disks::gib_for_bytes(new_bytes);
    match arm.grow_disk(&opts.disk.resource_group, &opts.disk.name, gib).await {
        Ok(d) => Ok(format!("disk {} is {} GiB", d.name, d.size_gib)),
        Err(AzureError::Other { status: Some(409), message, .. }) => Err(Error::Refused(format!(
            "Azure cannot grow disk {} to {gib} GiB while it is attached: {message}; stop the pod using it \
             (so the disk is detached) and the resize will go through",
            opts.disk.name
        ))),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_looks_at_the_likely_disks_first() {
        let entry = |name: &str, lun| AttachedDisk {
            lun,
            disk_id: format!(
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/disks/{name}"
            ),
            name: name.into(),
            caching: None,
            to_be_detached: false,
        };
        let vm = VmDisks {
            vm: VmRef::Standard {
                resource_group: "rg".into(),
                name: "n".into(),
            },
            disks: vec![entry("other", 0), entry("pvc-1", 1), entry("static", 2)],
            zone: None,
            vm_size: None,
            provisioning_state: None,
        };
        let names = |v: Vec<&AttachedDisk>| v.iter().map(|d| d.name.clone()).collect::<Vec<_>>();
        assert_eq!(
            names(search_order(&vm, "pvc-1", None)),
            ["pvc-1", "other", "static"]
        );
        let hint = "/subscriptions/s/resourcegroups/rg/providers/Microsoft.Compute/disks/STATIC\n";
        assert_eq!(
            names(search_order(&vm, "pvc-1", Some(hint))),
            ["static", "pvc-1", "other"]
        );
    }
}
