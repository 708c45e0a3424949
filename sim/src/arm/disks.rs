//! Managed disks: create (Empty, Copy), read, grow, delete — with Azure's rules on size, SKU, zones,
//! sharing and expand-without-downtime.

use super::errors::{busy, error, invalid, not_found, ArmResult};
use super::lro::{self, Began};
use crate::http::Response;
use crate::model::{key, parse_id, resource_id, rfc3339, Disk, ErrorBody, OpKind};
use crate::simulator::Simulator;
use crate::store::State;
use serde_json::{json, Map, Value};
use std::path::Path;
use std::sync::Arc;

pub const SKUS: &[&str] = &[
    "Standard_LRS",
    "Premium_LRS",
    "StandardSSD_LRS",
    "UltraSSD_LRS",
    "Premium_ZRS",
    "StandardSSD_ZRS",
    "PremiumV2_LRS",
];

/// Properties the simulator computes or interprets itself; anything else writable is kept as sent.
const OWN_PROPERTIES: &[&str] = &[
    "creationData",
    "diskSizeGB",
    "diskSizeBytes",
    "maxShares",
    "diskIOPSReadWrite",
    "diskMBpsReadWrite",
    "provisioningState",
    "diskState",
    "timeCreated",
    "uniqueId",
    "LastOwnershipUpdateTime",
    "tier",
    "shareInfo",
];

/// Azure's "4 TiB" line for expand-without-downtime and for host caching.
pub const CACHING_LIMIT_GB: i64 = 4096;

/// A disk as ARM renders it at `api`: a writable property a newer api-version's request stored
/// (kept as sent) is left out of an older version's answer, as ARM's per-version model has no
/// place for it.
pub fn render(sim: &Simulator, api: &str, disk: &Disk) -> Value {
    let mut v = disk.to_json();
    retain_declared(sim, api, &mut v);
    v
}

/// Drops the disk properties `api`'s specification does not declare (see [`render`]).
pub fn retain_declared(sim: &Simulator, api: &str, disk: &mut Value) {
    let declared = sim.specs.declared_properties(api, "DiskProperties");
    if let Some(props) = disk.get_mut("properties").and_then(Value::as_object_mut) {
        props.retain(|k, _| declared.iter().any(|d| d == k));
    }
}

/// The disks of one resource group, or of the whole subscription (`Disks_List`).
pub fn list(sim: &Simulator, api: &str, rg: Option<&str>) -> ArmResult<Response> {
    let state = sim.lock();
    let prefix = rg.map(|rg| format!("{}/", rg.to_lowercase()));
    let value: Vec<Value> = state
        .disks
        .iter()
        .filter(|(k, _)| prefix.as_ref().is_none_or(|p| k.starts_with(p)))
        .map(|(_, d)| render(sim, api, d))
        .collect();
    Ok(Response::json(200, &json!({ "value": value })))
}

pub fn get(sim: &Simulator, api: &str, rg: &str, name: &str) -> ArmResult<Response> {
    let state = sim.lock();
    let disk = state
        .disks
        .get(&key(rg, name))
        .ok_or_else(|| not_found("disks", rg, name))?;
    Ok(Response::json(200, &render(sim, api, disk)))
}

fn canonical_sku(sku: &str) -> ArmResult<String> {
    SKUS.iter()
        .find(|s| s.eq_ignore_ascii_case(sku))
        .map(|s| s.to_string())
        .ok_or_else(|| {
            invalid(format!(
                "Disk SKU '{sku}' is not supported. Supported SKUs: {}.",
                SKUS.join(", ")
            ))
            .with_target("sku.name")
        })
}

fn max_size_gb(v2_class: bool) -> i64 {
    if v2_class {
        65536
    } else {
        32767
    }
}

fn same_location(a: &str, b: &str) -> bool {
    let norm = |s: &str| s.replace(' ', "").to_lowercase();
    norm(a) == norm(b)
}

fn tags_of(body: &Value) -> std::collections::BTreeMap<String, String> {
    body.get("tags")
        .and_then(Value::as_object)
        .map(|t| {
            t.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

fn other_properties(props: &Value) -> Map<String, Value> {
    props
        .as_object()
        .map(|p| {
            p.iter()
                .filter(|(k, _)| !OWN_PROPERTIES.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// The rules on sharing and performance settings that depend on the SKU.
fn check_sku_rules(
    sku: &str,
    max_shares: Option<i64>,
    iops: Option<i64>,
    mbps: Option<i64>,
) -> ArmResult<()> {
    let v2 = sku == "PremiumV2_LRS" || sku == "UltraSSD_LRS";
    if let Some(m) = max_shares {
        if !(1..=10).contains(&m) {
            return Err(
                invalid(format!("maxShares must be between 1 and 10, not {m}."))
                    .with_target("properties.maxShares"),
            );
        }
        if m > 1 && sku == "Standard_LRS" {
            return Err(invalid(
                "Shared disks (maxShares > 1) are not supported for Standard_LRS.",
            )
            .with_target("properties.maxShares"));
        }
    }
    if (iops.is_some() || mbps.is_some()) && !v2 {
        return Err(invalid(format!(
            "diskIOPSReadWrite and diskMBpsReadWrite can only be set on PremiumV2_LRS and UltraSSD_LRS disks, not {sku}."
        ))
        .with_target("properties.diskIOPSReadWrite"));
    }
    Ok(())
}

/// The performance a PremiumV2 or Ultra disk of `size_gb` may be given, as learn.microsoft.com
/// ("Azure managed disk types", disks-types) states it: Premium SSD v2 — 3,000 IOPS baseline,
/// 500 more per GiB above 6 GiB up to 80,000; 125 MB/s baseline, 0.25 MB/s per IOPS up to
/// 2,000. Ultra — 100 IOPS minimum, 1,000 per GiB up to 400,000; 1 MB/s minimum, 0.25 MB/s per
/// IOPS up to 10,000. (IOPS range, MB/s range for the given IOPS.)
pub fn performance_ranges(sku: &str, size_gb: i64, iops: i64) -> ((i64, i64), (i64, i64)) {
    if sku == "UltraSSD_LRS" {
        let iops_max = (1000 * size_gb).clamp(100, 400_000);
        ((100, iops_max), (1, (iops / 4).clamp(1, 10_000)))
    } else {
        let iops_max = (3000 + 500 * (size_gb - 6).max(0)).min(80_000);
        ((3000, iops_max), (125, (iops / 4).clamp(125, 2000)))
    }
}

/// Azure's defaults for a Premium SSD v2 disk created without them (its baseline); Ultra disks
/// are left as asked (the simulator does not model Ultra's defaults).
fn default_performance(
    sku: &str,
    iops: Option<i64>,
    mbps: Option<i64>,
) -> (Option<i64>, Option<i64>) {
    if sku == "PremiumV2_LRS" {
        (iops.or(Some(3000)), mbps.or(Some(125)))
    } else {
        (iops, mbps)
    }
}

/// Refuses performance outside what the disk's SKU and size allow, as Azure does: 400
/// `BadRequest` naming the value and the range ("The value 500 of parameter
/// disk.diskIOPSReadWrite is not valid…", kubernetes-sigs/azuredisk-csi-driver#1442).
fn check_performance(
    sku: &str,
    size_gb: i64,
    iops: Option<i64>,
    mbps: Option<i64>,
) -> ArmResult<()> {
    if sku != "PremiumV2_LRS" && sku != "UltraSSD_LRS" {
        return Ok(());
    }
    let ((imin, imax), _) = performance_ranges(sku, size_gb, 0);
    if let Some(i) = iops {
        if !(imin..=imax).contains(&i) {
            return Err(error(400, "BadRequest", format!(
                "The value {i} of parameter disk.diskIOPSReadWrite is not valid. The supported range for a {size_gb} GiB {sku} disk is {imin} to {imax}."
            ))
            .with_target("properties.diskIOPSReadWrite"));
        }
    }
    if let Some(m) = mbps {
        let (_, (mmin, mmax)) = performance_ranges(sku, size_gb, iops.unwrap_or(imin));
        if !(mmin..=mmax).contains(&m) {
            return Err(error(400, "BadRequest", format!(
                "The value {m} of parameter disk.diskMBpsReadWrite is not valid. The supported range for {} IOPS on a {sku} disk is {mmin} to {mmax}.",
                iops.unwrap_or(imin)
            ))
            .with_target("properties.diskMBpsReadWrite"));
        }
    }
    Ok(())
}

/// How many performance settings Azure allows in 24 hours (creation counts as one —
/// learn.microsoft.com disks-types, Premium SSD v2 and Ultra "adjust performance").
const PERFORMANCE_SETTINGS_PER_DAY: usize = 4;

/// Whether `disk` may grow to `new_gb` now (grow-only; online unless shared or crossing 4 TiB).
pub fn check_resize(disk: &Disk, new_gb: i64) -> ArmResult<()> {
    if new_gb < disk.size_gb {
        return Err(invalid(format!(
            "Disk '{}' cannot shrink from {} GB to {new_gb} GB: managed disks can only grow.",
            disk.name, disk.size_gb
        ))
        .with_target("properties.diskSizeGB"));
    }
    if new_gb > max_size_gb(disk.is_v2_class()) {
        return Err(invalid(format!(
            "Disk size {new_gb} GB exceeds the maximum of {} GB for {}.",
            max_size_gb(disk.is_v2_class()),
            disk.sku
        ))
        .with_target("properties.diskSizeGB"));
    }
    if disk.attached_to.is_empty() || new_gb == disk.size_gb {
        return Ok(());
    }
    if disk.is_shared() {
        return Err(error(
            409,
            "OperationNotAllowed",
            format!(
                "Shared disk '{}' cannot be resized while attached (to {}). Detach it from every VM first.",
                disk.name,
                disk.attached_to.join(", ")
            ),
        ));
    }
    if !disk.is_v2_class() && disk.size_gb <= CACHING_LIMIT_GB && new_gb > CACHING_LIMIT_GB {
        return Err(error(
            409,
            "OperationNotAllowed",
            format!(
                "Disk '{}' is attached to VM '{}': growing it from {} GB past 4096 GB requires the disk to be \
                 detached or the VM deallocated.",
                disk.name, disk.attached_to[0], disk.size_gb
            ),
        ));
    }
    Ok(())
}

pub fn put(
    sim: &Arc<Simulator>,
    api: &str,
    rg: &str,
    name: &str,
    body: Value,
    planted: Option<ErrorBody>,
) -> ArmResult<Response> {
    let mut state = sim.lock();
    let k = key(rg, name);
    if state.disks.contains_key(&k) {
        return update_existing(sim, api, &mut state, &k, &body, true, planted);
    }
    let world = &sim.world;
    let location = body["location"].as_str().unwrap_or_default();
    if !same_location(location, &world.location) {
        return Err(error(
            400,
            "LocationNotAvailableForResourceType",
            format!("The provided location '{location}' is not available for resource type 'Microsoft.Compute/disks'. List of available regions for the resource type is '{}'.", world.location),
        ));
    }
    let sku = canonical_sku(
        body.pointer("/sku/name")
            .and_then(Value::as_str)
            .unwrap_or("Standard_LRS"),
    )?;
    let props = &body["properties"];
    let zones: Vec<String> = body
        .get("zones")
        .and_then(Value::as_array)
        .map(|z| {
            z.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let zrs = sku.ends_with("_ZRS");
    let v2 = sku == "PremiumV2_LRS" || sku == "UltraSSD_LRS";
    if zones.len() > 1 {
        return Err(
            invalid("A disk can be placed in at most one availability zone.").with_target("zones"),
        );
    }
    if let Some(z) = zones.first() {
        if !world.zones.contains(z) {
            return Err(invalid(format!(
                "Zone '{z}' is not available in location '{}'; available zones: {}.",
                world.location,
                world.zones.join(", ")
            ))
            .with_target("zones"));
        }
        if zrs {
            return Err(invalid(format!(
                "Zone-redundant disks ({sku}) cannot be pinned to a zone."
            ))
            .with_target("zones"));
        }
    } else if v2 && !world.zones.is_empty() {
        return Err(invalid(format!(
            "{sku} disks must be created in an availability zone in location '{}'.",
            world.location
        ))
        .with_target("zones"));
    }
    let max_shares = props.get("maxShares").and_then(Value::as_i64);
    let iops = props.get("diskIOPSReadWrite").and_then(Value::as_i64);
    let mbps = props.get("diskMBpsReadWrite").and_then(Value::as_i64);
    check_sku_rules(&sku, max_shares, iops, mbps)?;
    let (iops, mbps) = default_performance(&sku, iops, mbps);
    let create_option = props
        .pointer("/creationData/createOption")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let requested = props.get("diskSizeGB").and_then(Value::as_i64);
    let (create_option, size_gb, source) = match create_option.to_ascii_lowercase().as_str() {
        "empty" => {
            let size = requested.ok_or_else(|| {
                invalid("diskSizeGB is required when creationData.createOption is Empty.")
                    .with_target("properties.diskSizeGB")
            })?;
            ("Empty", size, None)
        }
        "copy" => {
            let src = props
                .pointer("/creationData/sourceResourceId")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    invalid("creationData.sourceResourceId is required when createOption is Copy.")
                        .with_target("properties.creationData.sourceResourceId")
                })?;
            let source = find_source(sim, &state, src)?;
            let size = requested.unwrap_or(source.size_gb);
            if size < source.size_gb {
                return Err(invalid(format!(
                    "diskSizeGB {size} is smaller than the source's {} GB.",
                    source.size_gb
                ))
                .with_target("properties.diskSizeGB"));
            }
            ("Copy", size, Some(source))
        }
        other => {
            return Err(invalid(format!(
                "creationData.createOption '{other}' is not supported by this simulator; use Empty or Copy."
            ))
            .with_target("properties.creationData.createOption"))
        }
    };
    if size_gb < 1 || size_gb > max_size_gb(v2) {
        return Err(invalid(format!(
            "diskSizeGB must be between 1 and {} for {sku}, not {size_gb}.",
            max_size_gb(v2)
        ))
        .with_target("properties.diskSizeGB"));
    }
    check_performance(&sku, size_gb, iops, mbps)?;
    let disk = Disk {
        id: resource_id(&world.subscription, rg, "disks", name),
        name: name.to_string(),
        location: world.location.clone(),
        sku,
        zones,
        tags: tags_of(&body),
        size_gb,
        create_option: create_option.into(),
        source_resource_id: source.as_ref().map(|s| s.id.clone()),
        source_unique_id: source.as_ref().map(|s| s.unique_id.clone()),
        max_shares,
        iops,
        mbps,
        performance_set: if v2 {
            vec![Simulator::now()]
        } else {
            Vec::new()
        },
        other_properties: other_properties(props),
        provisioning_state: "Updating".into(),
        attached_to: Vec::new(),
        time_created: Simulator::now(),
        last_ownership_update: None,
        unique_id: uuid::Uuid::new_v4().to_string(),
    };
    let file = sim.store.disk_file(&disk.unique_id);
    make_backing_file(&file, source.as_ref().map(|s| s.file.as_path()), size_gb)?;
    state.disks.insert(k.clone(), disk);
    let began = lro::begin(
        sim,
        &mut state,
        OpKind::DiskCreate { disk: k.clone() },
        sim.timing().draw_disk_op(),
        planted,
    )?;
    sim.commit(&state)?;
    Ok(respond_with_disk(sim, api, &state, &k, began))
}

fn respond_with_disk(sim: &Simulator, api: &str, state: &State, k: &str, began: Began) -> Response {
    let body = state
        .disks
        .get(k)
        .map(|d| render(sim, api, d))
        .unwrap_or(Value::Null);
    match began {
        Began::Done(_) => Response::json(200, &body),
        Began::Pending(op) => lro::with_headers(
            Response::json(202, &body),
            lro::accepted_headers(sim, &op, true, api),
        ),
    }
}

struct Source {
    id: String,
    unique_id: String,
    size_gb: i64,
    file: std::path::PathBuf,
}

fn find_source(sim: &Simulator, state: &State, id: &str) -> ArmResult<Source> {
    let missing = || {
        error(
            404,
            "NotFound",
            format!("Source resource '{id}' was not found."),
        )
        .with_target("properties.creationData.sourceResourceId")
    };
    let (sub, rg, kind, name) = parse_id(id).ok_or_else(|| {
        invalid(format!("'{id}' is not a disk or snapshot resource ID."))
            .with_target("properties.creationData.sourceResourceId")
    })?;
    if !sub.eq_ignore_ascii_case(&sim.world.subscription) {
        return Err(missing());
    }
    if kind.eq_ignore_ascii_case("disks") {
        let d = state.disks.get(&key(&rg, &name)).ok_or_else(missing)?;
        if d.provisioning_state != "Succeeded" {
            return Err(busy("disk", &d.name));
        }
        Ok(Source {
            id: d.id.clone(),
            unique_id: d.unique_id.clone(),
            size_gb: d.size_gb,
            file: sim.store.disk_file(&d.unique_id),
        })
    } else if kind.eq_ignore_ascii_case("snapshots") {
        let s = state.snapshots.get(&key(&rg, &name)).ok_or_else(missing)?;
        if s.provisioning_state != "Succeeded" {
            return Err(busy("snapshot", &s.name));
        }
        Ok(Source {
            id: s.id.clone(),
            unique_id: s.unique_id.clone(),
            size_gb: s.size_gb,
            file: sim.store.snapshot_file(&s.unique_id),
        })
    } else {
        Err(
            invalid(format!("'{id}' is not a disk or snapshot resource ID."))
                .with_target("properties.creationData.sourceResourceId"),
        )
    }
}

/// A sparse file of `size_gb`, or a sparse copy of `source` grown to it.
pub fn make_backing_file(file: &Path, source: Option<&Path>, size_gb: i64) -> ArmResult<()> {
    let internal = |what: String| error(500, "InternalExecutionError", what);
    if let Some(src) = source {
        let out = std::process::Command::new("cp")
            .args(["--sparse=always", "--reflink=auto"])
            .arg(src)
            .arg(file)
            .output()
            .map_err(|e| internal(format!("copying disk contents: {e}")))?;
        if !out.status.success() {
            return Err(internal(format!(
                "copying disk contents: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
    }
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(file)
        .map_err(|e| internal(format!("creating disk contents: {e}")))?;
    f.set_len(size_gb as u64 * 1024 * 1024 * 1024)
        .map_err(|e| internal(format!("sizing disk contents: {e}")))
}

pub fn patch(
    sim: &Arc<Simulator>,
    api: &str,
    rg: &str,
    name: &str,
    body: Value,
    planted: Option<ErrorBody>,
) -> ArmResult<Response> {
    let mut state = sim.lock();
    let k = key(rg, name);
    if !state.disks.contains_key(&k) {
        return Err(not_found("disks", rg, name));
    }
    update_existing(sim, api, &mut state, &k, &body, false, planted)
}

/// PUT on an existing disk and PATCH: the same rules, except that PUT replaces tags and may not
/// change what the disk was created as.
fn update_existing(
    sim: &Arc<Simulator>,
    api: &str,
    state: &mut State,
    k: &str,
    body: &Value,
    is_put: bool,
    planted: Option<ErrorBody>,
) -> ArmResult<Response> {
    let disk = state
        .disks
        .get(k)
        .cloned()
        .ok_or_else(|| error(500, "InternalExecutionError", "disk vanished"))?;
    if disk.provisioning_state != "Succeeded" {
        return Err(busy("disk", &disk.name));
    }
    let props = body.get("properties").cloned().unwrap_or(Value::Null);
    if is_put {
        let location = body["location"].as_str().unwrap_or_default();
        if !same_location(location, &disk.location) {
            return Err(error(
                409,
                "InvalidResourceLocation",
                format!(
                    "The resource '{}' already exists in location '{}'. A resource with the same name cannot be created in location '{location}'.",
                    disk.name, disk.location
                ),
            ));
        }
        let option = props
            .pointer("/creationData/createOption")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !option.eq_ignore_ascii_case(&disk.create_option) {
            return Err(error(
                409,
                "PropertyChangeNotAllowed",
                "Changing property 'creationData.createOption' is not allowed.",
            )
            .with_target("properties.creationData.createOption"));
        }
        let zones: Vec<String> = body
            .get("zones")
            .and_then(Value::as_array)
            .map(|z| {
                z.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if zones != disk.zones {
            return Err(error(
                409,
                "PropertyChangeNotAllowed",
                "Changing property 'zones' is not allowed.",
            )
            .with_target("zones"));
        }
    }
    let mut updated = disk.clone();
    if is_put || body.get("tags").is_some() {
        updated.tags = tags_of(body);
    }
    if let Some(sku) = body.pointer("/sku/name").and_then(Value::as_str) {
        let sku = canonical_sku(sku)?;
        if sku != disk.sku {
            if !disk.attached_to.is_empty() {
                return Err(error(
                    409,
                    "OperationNotAllowed",
                    format!(
                        "The SKU of disk '{}' cannot change while it is attached to '{}'.",
                        disk.name,
                        disk.attached_to.join(", ")
                    ),
                ));
            }
            if (sku.ends_with("_ZRS") != disk.is_zrs())
                || sku == "PremiumV2_LRS"
                || disk.is_v2_class()
            {
                return Err(invalid(format!(
                    "Disk '{}' cannot change SKU from {} to {sku}.",
                    disk.name, disk.sku
                ))
                .with_target("sku.name"));
            }
            updated.sku = sku;
        }
    }
    if let Some(m) = props.get("maxShares").and_then(Value::as_i64) {
        if Some(m) != disk.max_shares && !disk.attached_to.is_empty() {
            return Err(error(
                409,
                "OperationNotAllowed",
                format!(
                    "maxShares of disk '{}' cannot change while it is attached.",
                    disk.name
                ),
            ));
        }
        updated.max_shares = Some(m);
    }
    if let Some(i) = props.get("diskIOPSReadWrite").and_then(Value::as_i64) {
        updated.iops = Some(i);
    }
    if let Some(m) = props.get("diskMBpsReadWrite").and_then(Value::as_i64) {
        updated.mbps = Some(m);
    }
    check_sku_rules(&updated.sku, updated.max_shares, updated.iops, updated.mbps)?;
    let new_size = props
        .get("diskSizeGB")
        .and_then(Value::as_i64)
        .unwrap_or(disk.size_gb);
    if (updated.iops, updated.mbps) != (disk.iops, disk.mbps) {
        check_performance(
            &updated.sku,
            new_size.max(disk.size_gb),
            updated.iops,
            updated.mbps,
        )?;
        let now = Simulator::now();
        updated
            .performance_set
            .retain(|t| now - *t < chrono::Duration::hours(24));
        if updated.performance_set.len() >= PERFORMANCE_SETTINGS_PER_DAY {
            // The code and wording are the simulator's: Azure's own for this refusal is not
            // documented where we could read it.
            return Err(error(
                409,
                "OperationNotAllowed",
                format!(
                    "The performance of disk '{}' was already set {PERFORMANCE_SETTINGS_PER_DAY} times in the last 24 hours (its creation counts as one); try again after {}.",
                    disk.name,
                    rfc3339(updated.performance_set[0] + chrono::Duration::hours(24))
                ),
            ));
        }
        updated.performance_set.push(now);
    }
    for (k2, v) in other_properties(&props) {
        updated.other_properties.insert(k2, v);
    }
    let new_size = props
        .get("diskSizeGB")
        .and_then(Value::as_i64)
        .unwrap_or(disk.size_gb);
    check_resize(&disk, new_size)?;
    let grows = new_size > disk.size_gb;
    updated.size_gb = new_size;
    if grows {
        updated.provisioning_state = "Updating".into();
    }
    state.disks.insert(k.to_string(), updated);
    if !grows {
        sim.commit(state)?;
        let body = state
            .disks
            .get(k)
            .map(|d| render(sim, api, d))
            .unwrap_or(Value::Null);
        return Ok(Response::json(200, &body));
    }
    let kind = OpKind::DiskUpdate {
        disk: k.to_string(),
        old_size_gb: disk.size_gb,
    };
    let began = lro::begin(sim, state, kind, sim.timing().draw_disk_op(), planted)?;
    sim.commit(state)?;
    Ok(respond_with_disk(sim, api, state, k, began))
}

pub fn delete(
    sim: &Arc<Simulator>,
    api: &str,
    rg: &str,
    name: &str,
    planted: Option<ErrorBody>,
) -> ArmResult<Response> {
    let mut state = sim.lock();
    let k = key(rg, name);
    let Some(disk) = state.disks.get_mut(&k) else {
        return Ok(Response::empty(204));
    };
    if disk.provisioning_state != "Succeeded" {
        return Err(busy("disk", &disk.name));
    }
    if !disk.attached_to.is_empty() {
        return Err(error(
            409,
            "OperationNotAllowed",
            format!(
                "Disk {} is attached to VM {}.",
                disk.name,
                disk.attached_to.join(", ")
            ),
        ));
    }
    disk.provisioning_state = "Deleting".into();
    let began = lro::begin(
        sim,
        &mut state,
        OpKind::DiskDelete { disk: k },
        sim.timing().draw_disk_op(),
        planted,
    )?;
    sim.commit(&state)?;
    Ok(match began {
        Began::Done(_) => Response::empty(200),
        Began::Pending(op) => lro::with_headers(
            Response::empty(202),
            lro::accepted_headers(sim, &op, true, api),
        ),
    })
}

pub fn finish_create(
    sim: &Simulator,
    state: &mut State,
    k: &str,
    failure: Option<&ErrorBody>,
) -> ArmResult<Option<Value>> {
    if failure.is_some() {
        if let Some(d) = state.disks.remove(k) {
            let _ = std::fs::remove_file(sim.store.disk_file(&d.unique_id));
        }
        return Ok(None);
    }
    let disk = state.disks.get_mut(k).ok_or_else(|| {
        error(
            500,
            "InternalExecutionError",
            "the disk vanished while being created",
        )
    })?;
    disk.provisioning_state = "Succeeded".into();
    Ok(Some(disk.to_json()))
}

pub fn finish_update(
    sim: &Simulator,
    state: &mut State,
    k: &str,
    old_size_gb: i64,
    failure: Option<&ErrorBody>,
) -> ArmResult<Option<Value>> {
    let disk = state.disks.get_mut(k).ok_or_else(|| {
        error(
            500,
            "InternalExecutionError",
            "the disk vanished while being updated",
        )
    })?;
    disk.provisioning_state = "Succeeded".into();
    if failure.is_some() {
        disk.size_gb = old_size_gb;
        return Ok(None);
    }
    let file = sim.store.disk_file(&disk.unique_id);
    make_backing_file(&file, None, disk.size_gb)?;
    for e in sim.nodes.disk_grown(&file) {
        tracing::warn!(disk = %disk.name, "a VM's device did not take the new size: {e}");
    }
    Ok(Some(disk.to_json()))
}

pub fn finish_delete(
    sim: &Simulator,
    state: &mut State,
    k: &str,
    failure: Option<&ErrorBody>,
) -> ArmResult<Option<Value>> {
    if failure.is_some() {
        if let Some(d) = state.disks.get_mut(k) {
            d.provisioning_state = "Succeeded".into();
        }
        return Ok(None);
    }
    if let Some(d) = state.disks.remove(k) {
        let _ = std::fs::remove_file(sim.store.disk_file(&d.unique_id));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(sku: &str, size_gb: i64, attached: bool, max_shares: Option<i64>) -> Disk {
        Disk {
            id: "/d".into(),
            name: "d".into(),
            location: "westus2".into(),
            sku: sku.into(),
            zones: vec![],
            tags: Default::default(),
            size_gb,
            create_option: "Empty".into(),
            source_resource_id: None,
            source_unique_id: None,
            max_shares,
            iops: None,
            mbps: None,
            performance_set: Vec::new(),
            other_properties: Default::default(),
            provisioning_state: "Succeeded".into(),
            attached_to: if attached { vec!["/vm".into()] } else { vec![] },
            time_created: Simulator::now(),
            last_ownership_update: None,
            unique_id: "u".into(),
        }
    }

    #[test]
    fn resize_follows_expand_without_downtime() {
        assert!(
            check_resize(&disk("Premium_LRS", 64, true, None), 128).is_ok(),
            "online grow"
        );
        assert_eq!(
            check_resize(&disk("Premium_LRS", 64, false, None), 32)
                .unwrap_err()
                .status,
            400
        );
        let crossing = check_resize(&disk("Premium_LRS", 4096, true, None), 8192).unwrap_err();
        assert_eq!(crossing.status, 409);
        assert!(
            check_resize(&disk("Premium_LRS", 4096, false, None), 8192).is_ok(),
            "detached may cross"
        );
        assert!(check_resize(&disk("PremiumV2_LRS", 1024, true, None), 8192).is_ok());
        assert!(
            check_resize(&disk("Premium_LRS", 5000, true, None), 6000).is_ok(),
            "above the line already"
        );
        assert_eq!(
            check_resize(&disk("Premium_LRS", 64, true, Some(2)), 128)
                .unwrap_err()
                .status,
            409
        );
    }

    #[test]
    fn sku_rules() {
        assert!(check_sku_rules("Standard_LRS", Some(2), None, None).is_err());
        assert!(check_sku_rules("Premium_LRS", Some(2), None, None).is_ok());
        assert!(check_sku_rules("Premium_LRS", None, Some(3000), None).is_err());
        assert!(check_sku_rules("PremiumV2_LRS", None, Some(3000), Some(125)).is_ok());
    }
}
