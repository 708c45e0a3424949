//! Snapshots: a point-in-time copy of a disk (createOption Copy), readable and deletable.

use super::disks::make_backing_file;
use super::errors::{busy, error, invalid, not_found, ArmResult};
use super::lro::{self, Began};
use crate::http::Response;
use crate::model::{key, parse_id, resource_id, ErrorBody, OpKind, Snapshot};
use crate::simulator::Simulator;
use crate::store::State;
use serde_json::{json, Value};
use std::sync::Arc;

pub fn list(sim: &Simulator, rg: &str) -> ArmResult<Response> {
    let state = sim.lock();
    let prefix = format!("{}/", rg.to_lowercase());
    let value: Vec<Value> = state
        .snapshots
        .iter()
        .filter(|(k, _)| k.starts_with(&prefix))
        .map(|(_, s)| s.to_json())
        .collect();
    Ok(Response::json(200, &json!({ "value": value })))
}

pub fn get(sim: &Simulator, rg: &str, name: &str) -> ArmResult<Response> {
    let state = sim.lock();
    let snap = state
        .snapshots
        .get(&key(rg, name))
        .ok_or_else(|| not_found("snapshots", rg, name))?;
    Ok(Response::json(200, &snap.to_json()))
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
    let props = &body["properties"];
    let option = props
        .pointer("/creationData/createOption")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !option.eq_ignore_ascii_case("Copy") {
        return Err(invalid(format!(
            "creationData.createOption '{option}' is not supported for snapshots by this simulator; use Copy."
        ))
        .with_target("properties.creationData.createOption"));
    }
    let source_id = props
        .pointer("/creationData/sourceResourceId")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            invalid("creationData.sourceResourceId is required when createOption is Copy.")
                .with_target("properties.creationData.sourceResourceId")
        })?;
    if let Some(existing) = state.snapshots.get(&k) {
        if !existing.source_resource_id.eq_ignore_ascii_case(source_id) {
            return Err(error(
                409,
                "PropertyChangeNotAllowed",
                "Changing property 'creationData.sourceResourceId' is not allowed.",
            ));
        }
        return Ok(Response::json(200, &existing.to_json()));
    }
    let missing = || {
        error(
            404,
            "NotFound",
            format!("Source disk '{source_id}' was not found."),
        )
        .with_target("properties.creationData.sourceResourceId")
    };
    let (sub, src_rg, kind, src_name) = parse_id(source_id).ok_or_else(missing)?;
    if !sub.eq_ignore_ascii_case(&sim.world.subscription) || !kind.eq_ignore_ascii_case("disks") {
        return Err(missing());
    }
    let disk = state
        .disks
        .get(&key(&src_rg, &src_name))
        .ok_or_else(missing)?;
    if disk.provisioning_state != "Succeeded" {
        return Err(busy("disk", &disk.name));
    }
    let snap = Snapshot {
        id: resource_id(&sim.world.subscription, rg, "snapshots", name),
        name: name.to_string(),
        location: sim.world.location.clone(),
        sku: body
            .pointer("/sku/name")
            .and_then(Value::as_str)
            .unwrap_or("Standard_LRS")
            .to_string(),
        tags: body
            .get("tags")
            .and_then(Value::as_object)
            .map(|t| {
                t.iter()
                    .map(|(a, b)| (a.clone(), b.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default(),
        size_gb: disk.size_gb,
        source_resource_id: disk.id.clone(),
        source_unique_id: disk.unique_id.clone(),
        incremental: props
            .get("incremental")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        provisioning_state: "Updating".into(),
        time_created: Simulator::now(),
        unique_id: uuid::Uuid::new_v4().to_string(),
    };
    let source_file = sim.store.disk_file(&disk.unique_id);
    make_backing_file(
        &sim.store.snapshot_file(&snap.unique_id),
        Some(&source_file),
        snap.size_gb,
    )?;
    state.snapshots.insert(k.clone(), snap);
    let began = lro::begin(
        sim,
        &mut state,
        OpKind::SnapshotCreate {
            snapshot: k.clone(),
        },
        sim.timing().draw_disk_op(),
        planted,
    )?;
    sim.commit(&state)?;
    let body = state
        .snapshots
        .get(&k)
        .map(Snapshot::to_json)
        .unwrap_or(Value::Null);
    Ok(match began {
        Began::Done(_) => Response::json(200, &body),
        Began::Pending(op) => lro::with_headers(
            Response::json(202, &body),
            lro::accepted_headers(sim, &op, true, api),
        ),
    })
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
    let Some(snap) = state.snapshots.get_mut(&k) else {
        return Ok(Response::empty(204));
    };
    if snap.provisioning_state != "Succeeded" {
        return Err(busy("snapshot", &snap.name));
    }
    snap.provisioning_state = "Deleting".into();
    let began = lro::begin(
        sim,
        &mut state,
        OpKind::SnapshotDelete { snapshot: k },
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
        if let Some(s) = state.snapshots.remove(k) {
            let _ = std::fs::remove_file(sim.store.snapshot_file(&s.unique_id));
        }
        return Ok(None);
    }
    let snap = state.snapshots.get_mut(k).ok_or_else(|| {
        error(
            500,
            "InternalExecutionError",
            "the snapshot vanished while being created",
        )
    })?;
    snap.provisioning_state = "Succeeded".into();
    Ok(Some(snap.to_json()))
}

pub fn finish_delete(
    sim: &Simulator,
    state: &mut State,
    k: &str,
    failure: Option<&ErrorBody>,
) -> ArmResult<Option<Value>> {
    if failure.is_some() {
        if let Some(s) = state.snapshots.get_mut(k) {
            s.provisioning_state = "Succeeded".into();
        }
        return Ok(None);
    }
    if let Some(s) = state.snapshots.remove(k) {
        let _ = std::fs::remove_file(sim.store.snapshot_file(&s.unique_id));
    }
    Ok(None)
}
