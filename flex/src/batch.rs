//! Cross-process batching of attach and detach requests for one VM.
//!
//! kube-controller-manager execs one short-lived `flexdisk` per volume, so requests that arrive
//! together are in different processes. Each process drops its request in the VM's spool
//! directory, then takes the VM's lock. Whoever holds the lock sends every pending request of that
//! VM in one `attachDetachDataDisks` and writes each requester its answer; a process that finds its
//! answer waiting when it gets the lock just reads it. Requests that arrive during an operation go
//! in the next one. The holder waits a short window (`FLEXDISK_BATCH_WINDOW_MS`, 200 ms) before
//! collecting, so that a burst of requests shares one operation.

use crate::settings::Settings;
use flexdisk_azure::{Arm, AttachSpec, AzureError, Caching, VmDisks, VmRef};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use tracing::{info, warn};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Attach { caching: String },
    Detach,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub id: String,
    pub disk_id: String,
    pub op: Op,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Answer {
    Attached { lun: i32 },
    Detached,
    Failed { message: String },
}

fn spool(s: &Settings, vm: &VmRef) -> PathBuf {
    s.state_dir.join("spool").join(vm.name())
}

fn write_atomic(path: &Path, value: &impl Serialize) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    let bytes = serde_json::to_vec(value).map_err(|e| e.to_string())?;
    std::fs::write(&tmp, bytes)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn read<T: for<'de> Deserialize<'de>>(path: &Path) -> Option<T> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

fn lock(dir: &Path) -> Result<Flock<std::fs::File>, String> {
    let path = dir.join(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, e)| format!("locking {}: {e}", path.display()))
}

fn unique_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("{}-{nanos}", std::process::id())
}

/// Submits one request and returns its answer, sending it (with whatever else is pending for the
/// VM) when this process gets the VM's lock first.
pub async fn submit(
    s: &Settings,
    arm: &Arm,
    vm: &VmRef,
    disk_id: &str,
    op: Op,
) -> Result<Answer, String> {
    let dir = spool(s, vm);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let req = Request {
        id: unique_id(),
        disk_id: disk_id.to_string(),
        op,
    };
    let req_path = dir.join(format!("{}.req", req.id));
    let ans_path = dir.join(format!("{}.ans", req.id));
    write_atomic(&req_path, &req)?;
    let guard = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || lock(&dir))
            .await
            .map_err(|e| e.to_string())??
    };
    if let Some(answer) = read::<Answer>(&ans_path) {
        let _ = std::fs::remove_file(&ans_path);
        drop(guard);
        return Ok(answer);
    }
    // Requests of one burst (a node drained, a StatefulSet scheduled) arrive within moments of
    // each other: a short gathering window lets them share this operation.
    tokio::time::sleep(s.batch_window).await;
    let pending = collect(&dir);
    let answers = send(arm, vm, &pending).await;
    for (r, a) in pending.iter().zip(&answers) {
        if r.id != req.id {
            if let Err(e) = write_atomic(&dir.join(format!("{}.ans", r.id)), a) {
                warn!("cannot answer request {}: {e}", r.id);
            }
        }
        let _ = std::fs::remove_file(dir.join(format!("{}.req", r.id)));
    }
    drop(guard);
    pending
        .iter()
        .zip(answers)
        .find(|(r, _)| r.id == req.id)
        .map(|(_, a)| a)
        .ok_or_else(|| "this request vanished from the spool".to_string())
}

/// The VM's pending requests; answers nobody collected for an hour are cleared away.
fn collect(dir: &Path) -> Vec<Request> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let path = e.path();
        match path.extension().and_then(|x| x.to_str()) {
            Some("req") => {
                if let Some(r) = read::<Request>(&path) {
                    out.push(r);
                }
            }
            Some("ans") => {
                let old = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > Duration::from_secs(3600));
                if old {
                    let _ = std::fs::remove_file(&path);
                }
            }
            _ => {}
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

fn caching(c: &str) -> Caching {
    match c {
        "ReadOnly" => Caching::ReadOnly,
        "ReadWrite" => Caching::ReadWrite,
        _ => Caching::None,
    }
}

fn answer_from(vm: &VmDisks, r: &Request) -> Answer {
    match (&r.op, vm.find(&r.disk_id)) {
        (Op::Attach { .. }, Some(d)) if !d.to_be_detached => Answer::Attached { lun: d.lun },
        (Op::Attach { .. }, _) => Answer::Failed {
            message: format!(
                "Azure reported the attach of {} done but the VM does not list it",
                r.disk_id
            ),
        },
        (Op::Detach, None) => Answer::Detached,
        (Op::Detach, Some(_)) => Answer::Failed {
            message: format!(
                "Azure reported the detach of {} done but the VM still lists it",
                r.disk_id
            ),
        },
    }
}

/// Sends the batch as one operation; if Azure refuses it as a whole, each request alone, so that
/// one bad request does not fail the others.
async fn send(arm: &Arm, vm: &VmRef, pending: &[Request]) -> Vec<Answer> {
    let split = |reqs: &[Request]| {
        let attach: Vec<AttachSpec> = reqs
            .iter()
            .filter_map(|r| match &r.op {
                Op::Attach { caching: c } => Some(AttachSpec {
                    disk_id: r.disk_id.clone(),
                    lun: None,
                    caching: caching(c),
                }),
                Op::Detach => None,
            })
            .collect();
        let detach: Vec<String> = reqs
            .iter()
            .filter(|r| r.op == Op::Detach)
            .map(|r| r.disk_id.clone())
            .collect();
        (attach, detach)
    };
    let (attach, detach) = split(pending);
    info!(vm = %vm.name(), attach = attach.len(), detach = detach.len(), "sending a batch");
    match arm.attach_detach(vm, &attach, &detach).await {
        Ok(after) => pending.iter().map(|r| answer_from(&after, r)).collect(),
        Err(e) if pending.len() == 1 => vec![Answer::Failed {
            message: describe(e),
        }],
        Err(e) => {
            warn!(vm = %vm.name(), error = %e, "the batch was refused; sending its requests one by one");
            let mut out = Vec::new();
            for r in pending {
                let (a, d) = split(std::slice::from_ref(r));
                out.push(match arm.attach_detach(vm, &a, &d).await {
                    Ok(after) => answer_from(&after, r),
                    Err(e) => Answer::Failed {
                        message: describe(e),
                    },
                });
            }
            out
        }
    }
}

pub fn describe(e: AzureError) -> String {
    match e {
        AzureError::DataDiskLimit { limit, message } => format!(
            "the VM has no room for another data disk{}: {message}; move the pod to a node with free slots or a larger VM size",
            limit.map(|l| format!(" (its size allows {l})")).unwrap_or_default()
        ),
        other => other.to_string(),
    }
}
