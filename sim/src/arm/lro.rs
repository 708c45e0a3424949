//! Long-running operations as ARM runs them: the write is accepted at once (200/202 with
//! `Azure-AsyncOperation`, `Location` and `Retry-After`), its effect lands when the operation ends,
//! and a failure may show only in the polled status.

use super::errors::{error, ArmResult};
use super::{disks, snapshots, vms};
use crate::http::Response;
use crate::model::{rfc3339, ErrorBody, OpKind, OpStatus, Operation};
use crate::simulator::Simulator;
use crate::store::State;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

pub enum Began {
    /// The operation took no time: its result, as the final Location poll would give it.
    Done(Option<Value>),
    Pending(Box<Operation>),
}

pub fn begin(
    sim: &Arc<Simulator>,
    state: &mut State,
    kind: OpKind,
    duration: Duration,
    planted: Option<ErrorBody>,
) -> ArmResult<Began> {
    let now = Simulator::now();
    let mut op = Operation {
        id: uuid::Uuid::new_v4().to_string(),
        kind,
        started: now,
        due: now + chrono::Duration::from_std(duration).unwrap_or_default(),
        ended: None,
        status: OpStatus::InProgress,
        error: None,
        planted_failure: planted,
        result: None,
    };
    if duration.is_zero() && op.planted_failure.is_none() {
        let result = finish(sim, state, &op)?;
        return Ok(Began::Done(result));
    }
    state.operations.insert(op.id.clone(), op.clone());
    schedule(sim, op.id.clone(), duration);
    op.status = OpStatus::InProgress;
    Ok(Began::Pending(Box::new(op)))
}

fn schedule(sim: &Arc<Simulator>, id: String, after: Duration) {
    let sim = sim.clone();
    tokio::spawn(async move {
        tokio::time::sleep(after).await;
        complete(&sim, &id);
    });
}

/// Operations a previous run left in progress resume with the time they had left.
pub fn resume_all(sim: &Arc<Simulator>) {
    let state = sim.lock();
    let now = Simulator::now();
    for op in state
        .operations
        .values()
        .filter(|o| o.status == OpStatus::InProgress)
    {
        let left = (op.due - now).to_std().unwrap_or_default();
        schedule(sim, op.id.clone(), left);
    }
}

fn complete(sim: &Simulator, id: &str) {
    let mut state = sim.lock();
    let Some(op) = state.operations.get(id).cloned() else {
        return;
    };
    if op.status != OpStatus::InProgress {
        return;
    }
    let outcome = finish(sim, &mut state, &op);
    let now = Simulator::now();
    if let Some(stored) = state.operations.get_mut(id) {
        stored.ended = Some(now);
        match outcome {
            Ok(result) => {
                stored.status = OpStatus::Succeeded;
                stored.result = result;
            }
            Err(e) => {
                stored.status = OpStatus::Failed;
                stored.error = Some(e);
            }
        }
    }
    prune(&mut state, now);
    if let Err(e) = sim.save(&state) {
        tracing::error!("persisting the end of operation {id}: {e}");
    }
}

/// Ended operations stay pollable for an hour, as ARM keeps them.
fn prune(state: &mut State, now: chrono::DateTime<chrono::Utc>) {
    state
        .operations
        .retain(|_, o| o.ended.is_none_or(|e| now - e < chrono::Duration::hours(1)));
}

/// Lands (or, for a planted failure, rolls back) the operation's effect.
fn finish(sim: &Simulator, state: &mut State, op: &Operation) -> Result<Option<Value>, ErrorBody> {
    let failure = op.planted_failure.as_ref();
    let result = match &op.kind {
        OpKind::DiskCreate { disk } => disks::finish_create(sim, state, disk, failure),
        OpKind::DiskUpdate { disk, old_size_gb } => {
            disks::finish_update(sim, state, disk, *old_size_gb, failure)
        }
        OpKind::DiskDelete { disk } => disks::finish_delete(sim, state, disk, failure),
        OpKind::SnapshotCreate { snapshot } => {
            snapshots::finish_create(sim, state, snapshot, failure)
        }
        OpKind::SnapshotDelete { snapshot } => {
            snapshots::finish_delete(sim, state, snapshot, failure)
        }
        OpKind::VmDisks {
            node,
            attach,
            detach,
            final_body,
        } => vms::finish_disks(sim, state, node, attach, detach, *final_body, failure),
    };
    match (result, failure) {
        (Err(e), _) => Err(e),
        (Ok(_), Some(f)) => Err(f.clone()),
        (Ok(v), None) => Ok(v),
    }
}

/// Headers of an accepted long-running write; the operation's URLs carry the api-version the
/// write was made at, as ARM's do.
pub fn accepted_headers(
    sim: &Simulator,
    op: &Operation,
    disk: bool,
    api: &str,
) -> Vec<(&'static str, String)> {
    let segment = if disk { "DiskOperations" } else { "operations" };
    let base = format!(
        "{}/subscriptions/{}/providers/Microsoft.Compute/locations/{}/{segment}/{}",
        sim.arm_url(),
        sim.world.subscription,
        sim.world.location,
        op.id
    );
    vec![
        ("azure-asyncoperation", format!("{base}?api-version={api}")),
        ("location", format!("{base}?monitor=true&api-version={api}")),
        ("retry-after", retry_after(op).to_string()),
    ]
}

/// Whole seconds left, rounded down: sub-second operations say 0 and clients poll at their own pace.
fn retry_after(op: &Operation) -> i64 {
    (op.due - Simulator::now()).num_seconds().max(0)
}

pub fn with_headers(mut r: Response, headers: Vec<(&'static str, String)>) -> Response {
    for (k, v) in headers {
        r = r.with_header(k, v);
    }
    r
}

pub fn poll(
    sim: &Simulator,
    api: &str,
    location: &str,
    id: &str,
    disk: bool,
    monitor: bool,
) -> ArmResult<Response> {
    let state = sim.lock();
    let op = state
        .operations
        .get(id)
        .filter(|_| location.eq_ignore_ascii_case(&sim.world.location))
        .filter(|o| is_disk_op(o) == disk)
        .ok_or_else(|| {
            error(
                404,
                "NotFound",
                format!("The operation '{id}' was not found."),
            )
        })?;
    // A disk's result was rendered when its operation ended; the poll answers at its own
    // api-version (see disks::render).
    let result = op.result.clone().map(|mut body| {
        if matches!(
            op.kind,
            OpKind::DiskCreate { .. } | OpKind::DiskUpdate { .. }
        ) {
            disks::retain_declared(sim, api, &mut body);
        }
        body
    });
    if monitor {
        return Ok(match op.status {
            OpStatus::InProgress => with_headers(
                Response::empty(202),
                accepted_headers(sim, op, disk, api)[1..].to_vec(),
            ),
            OpStatus::Succeeded => match &result {
                Some(body) => Response::json(200, body),
                None => Response::empty(200),
            },
            OpStatus::Failed => op
                .error
                .as_ref()
                .map(ErrorBody::response)
                .unwrap_or_else(|| Response::empty(500)),
        });
    }
    let mut status = json!({
        "name": op.id,
        "startTime": rfc3339(op.started),
        "status": match op.status {
            OpStatus::InProgress => "InProgress",
            OpStatus::Succeeded => "Succeeded",
            OpStatus::Failed => "Failed",
        },
    });
    if let Some(end) = op.ended {
        status["endTime"] = json!(rfc3339(end));
    }
    if let Some(e) = &op.error {
        status["error"] = e.to_json()["error"].clone();
    }
    if disk && op.status == OpStatus::Succeeded {
        if let Some(body) = &result {
            status["properties"] = json!({ "output": body });
        }
    }
    let r = Response::json(200, &status);
    Ok(if op.status == OpStatus::InProgress {
        r.with_header("retry-after", retry_after(op).to_string())
    } else {
        r
    })
}

fn is_disk_op(op: &Operation) -> bool {
    !matches!(op.kind, OpKind::VmDisks { .. })
}
