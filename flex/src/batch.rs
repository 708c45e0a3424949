//! Cross-process batching of attach and detach requests for one VM.
//!
//! kube-controller-manager execs one short-lived `flexdisk` per volume, so requests that arrive
//! together are in different processes. Each process drops its request in the VM's spool
//! directory, then takes the VM's lock. Whoever holds the lock sends every pending request of that
//! VM in one `attachDetachDataDisks` and writes each requester its answer; a process that finds its
//! answer waiting when it gets the lock just reads it. Requests that arrive during an operation go
//! in the next one.
//!
//! Gathering costs a lone request nothing: every process announces itself in the spool the moment
//! it knows its VM, before its Azure reads, so the holder knows who is on the way. Alone, it sends
//! at once; with company, it waits until everyone announced has posted their request and no new one
//! came for a short gap (`FLEXDISK_BATCH_GAP_MS`, 20 ms — a burst's processes start a few ms apart),
//! never longer than `FLEXDISK_BATCH_WINDOW_MS` (500 ms) in all. kube-controller-manager's
//! reconciler starts a burst's attaches within one pass (every 100 ms, one goroutine each —
//! `pkg/controller/volume/attachdetach/reconciler/reconciler.go`), so they share an operation
//! without a fixed wait.
//!
//! A request is carried out only while its requester lives: each requester holds a lock on its own
//! request file from before the file is visible until it has read its answer. A request whose lock
//! is free belongs to a process that died (kube-controller-manager restarted, or killed a call it
//! gave up on): it is removed unsent, by this holder or any later one, and so is an answer nobody
//! is left to read. Otherwise a later, unrelated batch would pull a disk from under a running pod.
//! Announcements are locked the same way; a dead one is removed and waited for by nobody.
//! Liveness is asked again right before every attempt to send, the transport's retries of a
//! failed POST included: a request whose requester died meanwhile is dropped from the batch and
//! the rest sent without it; a batch nobody waits for is not sent at all.
//!
//! Answers are what Azure did, never what the plan expected: a disk the operation changed is
//! where Azure's success of that change put it, any other request is answered from a read of
//! the VM made by the holder (see `Arm::change_data_disks`).

use crate::error::{describe_azure, Error, Result};
use crate::settings::Settings;
use flexdisk_azure::vms::{Known, Wanted};
use flexdisk_azure::{Arm, AttachSpec, AzureError, Caching, VmDisks, VmRef};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
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
    /// Not sent at or after this moment (`clock::boot_ms`): an attach holds a claim on its disk
    /// only so long (see `attach::CLAIM_SEND_WITHIN`).
    #[serde(default)]
    pub send_by: Option<u64>,
    /// The VM the requester read for the node ([`Basis::Seen`]): the request is sent to no other.
    #[serde(default)]
    pub vm: Option<String>,
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

fn write_atomic(path: &Path, value: &impl Serialize) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let bytes = serde_json::to_vec(value).map_err(|e| Error::Spool(e.to_string()))?;
    std::fs::write(&tmp, bytes)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(Error::file(path))
}

fn read<T: for<'de> Deserialize<'de>>(path: &Path) -> Option<T> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

fn lock(dir: &Path) -> Result<Flock<std::fs::File>> {
    let path = dir.join(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(Error::file(&path))?;
    Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, e)| Error::Kernel(format!("locking {}: {e}", path.display())))
}

/// Writes the request under a lock that lives as long as the returned guard: the file is
/// written and locked under a temporary name and renamed into place, so no holder ever sees it
/// unlocked while its requester lives (a lock belongs to the file, whatever its name).
fn place_request(path: &Path, req: &Request) -> Result<Flock<std::fs::File>> {
    use std::io::Write;
    let tmp = path.with_extension("new");
    let mut file = std::fs::File::create(&tmp).map_err(Error::file(&tmp))?;
    let bytes = serde_json::to_vec(req).map_err(|e| Error::Spool(e.to_string()))?;
    file.write_all(&bytes).map_err(Error::file(&tmp))?;
    let guard = Flock::lock(file, FlockArg::LockExclusiveNonblock)
        .map_err(|(_, e)| Error::Kernel(format!("locking {}: {e}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(Error::file(path))?;
    Ok(guard)
}

/// This process on its way to post a request for a VM; removed when dropped.
pub struct Announcement {
    path: PathBuf,
    _lock: Flock<std::fs::File>,
}

impl Drop for Announcement {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Tells the holder of `vm`'s lock that a request of this process is coming. Best effort: without
/// it the request still goes, in this batch or the next.
pub fn announce(s: &Settings, vm: &VmRef) -> Option<Announcement> {
    let dir = spool(s, vm);
    std::fs::create_dir_all(&dir).ok()?;
    let id = unique_id();
    // Locked before it is visible, as requests are: a holder never takes it for a dead one.
    let tmp = dir.join(format!("{id}-coming.new"));
    let file = std::fs::File::create(&tmp).ok()?;
    let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock).ok()?;
    let path = dir.join(format!("{id}.coming"));
    std::fs::rename(&tmp, &path).ok()?;
    Some(Announcement { path, _lock: lock })
}

/// A read of the VM a requester made, and when it started (`vm_view::now_ms`).
pub struct Seen<'a> {
    pub vm: &'a VmDisks,
    pub read_at_ms: u64,
}

/// What the lock holder plans a batch from when the request is its own.
pub enum Basis<'a> {
    /// The requester's own read of the VM (a detach reads it to find its disk): it plans the
    /// operation when no operation of this host changed the VM since.
    Seen(Seen<'a>),
    /// No read: the holder reads the node's VM once the batch is gathered — one read for every
    /// request in it, made after each was posted, so it may answer a request it shows done.
    Node(&'a str),
}

/// When the last operation on the VM was sent or ended, whichever is later (`.last`): a read
/// that started after it shows every change this host made. It decides only what plans the
/// operation — never an answer: another host's change since is caught by Azure's refusal of
/// the plan, or by the fresh read a request the view shows done already costs
/// (`Arm::change_data_disks`).
fn last_change_path(dir: &Path) -> PathBuf {
    dir.join(".last")
}

fn mark_change(dir: &Path) {
    let _ = write_atomic(&last_change_path(dir), &crate::vm_view::now_ms());
}

/// Whether the VM read `seen` still shows the VM's disks as flexdisk left them.
fn current(dir: &Path, seen: &Seen) -> bool {
    read::<u64>(&last_change_path(dir)).is_none_or(|last| seen.read_at_ms > last)
}

/// Whether the process that wrote this request still waits for its answer.
fn requester_alive(path: &Path) -> bool {
    let Ok(file) = std::fs::File::open(path) else {
        return false;
    };
    // The requester's lock makes ours fail; a free lock means nobody holds it any more.
    Flock::lock(file, FlockArg::LockExclusiveNonblock).is_err()
}

fn unique_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("{}-{nanos}", std::process::id())
}

/// Submits one request and returns its answer, sending it (with whatever else is pending for the
/// VM) when this process gets the VM's lock first. `spool_vm` names the batch: the node's likely
/// VM, the one its announcement went to, whichever VM the node turns out to be — one lock per
/// node. `basis`: what the batch is planned from if this process sends it. `send_by`: the
/// request is not sent at or after that moment (`clock::boot_ms`).
#[allow(clippy::too_many_arguments)]
pub async fn submit(
    s: &Settings,
    arm: &Arm,
    spool_vm: &VmRef,
    basis: Basis<'_>,
    disk_id: &str,
    op: Op,
    send_by: Option<u64>,
    coming: Option<Announcement>,
) -> Result<Answer> {
    let dir = spool(s, spool_vm);
    std::fs::create_dir_all(&dir).map_err(Error::file(&dir))?;
    let req = Request {
        id: unique_id(),
        disk_id: disk_id.to_string(),
        op,
        send_by,
        vm: match &basis {
            Basis::Seen(seen) => Some(seen.vm.vm.name()),
            Basis::Node(_) => None,
        },
    };
    let req_path = dir.join(format!("{}.req", req.id));
    let ans_path = dir.join(format!("{}.ans", req.id));
    let mine = place_request(&req_path, &req)?;
    // Posted: the holder now waits for the request itself.
    drop(coming);
    let guard = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || lock(&dir))
            .await
            .map_err(|e| Error::Spool(format!("waiting for the VM's batch lock: {e}")))??
    };
    let done = |answer: Answer| {
        let _ = std::fs::remove_file(&ans_path);
        let _ = std::fs::remove_file(&req_path);
        answer
    };
    if let Some(answer) = read::<Answer>(&ans_path) {
        let answer = done(answer);
        drop(guard);
        drop(mine);
        return Ok(answer);
    }
    let pending = gather(s, &dir).await;
    let answers = match plan_from(s, arm, &dir, basis).await {
        Ok((vm, known)) => {
            mark_change(&dir);
            let answers = send_to(s, arm, &vm, known, &pending, &dir, &req.id).await;
            mark_change(&dir);
            answers
        }
        // Nothing sent. Not even a detach counts as done on a VM that is "not found" now: it
        // existed when its requester read it, and a 404 may be ARM's lag; asked again, the
        // detach reads the VM itself.
        Err(e) => failed_all(&pending, e),
    };
    for (r, a) in pending.iter().zip(&answers) {
        if r.id == req.id {
            continue;
        }
        let theirs = dir.join(format!("{}.req", r.id));
        if requester_alive(&theirs) {
            if let Err(e) = write_atomic(&dir.join(format!("{}.ans", r.id)), a) {
                warn!("cannot answer request {}: {e}", r.id);
            }
        } else {
            let _ = std::fs::remove_file(&theirs);
        }
    }
    let mine_answered = pending
        .iter()
        .zip(answers)
        .find(|(r, _)| r.id == req.id)
        .map(|(_, a)| done(a));
    drop(guard);
    drop(mine);
    mine_answered.ok_or_else(|| Error::Spool("this request vanished from the spool".into()))
}

/// The VM the batch goes to and what it is planned from: the holder's own read if it is current
/// (no operation of this host since), or a read of the node's VM made now.
async fn plan_from(
    s: &Settings,
    arm: &Arm,
    dir: &Path,
    basis: Basis<'_>,
) -> std::result::Result<(VmRef, Known), AzureError> {
    match basis {
        Basis::Seen(seen) => {
            let known = if current(dir, &seen) {
                Known::View(seen.vm.clone())
            } else {
                Known::Unknown
            };
            Ok((seen.vm.vm.clone(), known))
        }
        Basis::Node(node) => {
            let read_at = crate::vm_view::now_ms();
            let vm = arm.node_vm(node).await?;
            crate::vm_view::store(s, &vm, read_at);
            Ok((vm.vm.clone(), Known::Fresh(vm)))
        }
    }
}

/// The batch sent to `vm`, but for requests whose requester read another VM for the node (a
/// node whose VM changed between two reads): those are answered unsent — asked again, they are
/// planned anew.
async fn send_to(
    s: &Settings,
    arm: &Arm,
    vm: &VmRef,
    known: Known,
    pending: &[Request],
    dir: &Path,
    own: &str,
) -> Vec<Answer> {
    let name = vm.name();
    let elsewhere = |r: &Request| {
        r.vm.as_ref()
            .is_some_and(|v| !v.eq_ignore_ascii_case(&name))
    };
    let here: Vec<Request> = pending.iter().filter(|r| !elsewhere(r)).cloned().collect();
    let mut sent = if here.is_empty() {
        Vec::new()
    } else {
        send(s, arm, vm, known, &here, dir, own).await
    }
    .into_iter();
    pending
        .iter()
        .map(|r| match &r.vm {
            Some(v) if elsewhere(r) => Answer::Failed {
                message: format!(
                    "not sent: the node's VM was {v} when this request read it and is {name} now; \
                     asked again, the request is planned anew"
                ),
            },
            _ => sent.next().unwrap_or_else(|| Answer::Failed {
                message: "the batch ended without an answer for this request".into(),
            }),
        })
        .collect()
}

/// The requests to send now: alone, at once; with company, once every announced process has
/// posted its request and none came for `batch_gap`, or `batch_window` after the lock was taken.
async fn gather(s: &Settings, dir: &Path) -> Vec<Request> {
    let began = Instant::now();
    let mut last_arrival = began;
    let mut seen = 0;
    loop {
        let pending = collect(dir);
        let coming = announced(dir);
        if pending.len() + coming != seen {
            seen = pending.len() + coming;
            last_arrival = Instant::now();
        }
        let company = pending.len() > 1 || coming > 0;
        let settled = coming == 0 && last_arrival.elapsed() >= s.batch_gap;
        if !company || settled || began.elapsed() >= s.batch_window {
            if company {
                info!(
                    requests = pending.len(),
                    still_coming = coming,
                    waited_ms = began.elapsed().as_millis() as u64,
                    "gathered a batch"
                );
            }
            return pending;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// How many processes announced a request that is not posted yet; announcements of dead
/// processes are removed.
fn announced(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut live = 0;
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().and_then(|x| x.to_str()) == Some("coming") {
            if requester_alive(&path) {
                live += 1;
            } else {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    live
}

/// The VM's pending requests, each from a live requester and not answered yet. Requests of dead
/// requesters are removed unsent, with any answer waiting for them; so are leftovers of writes
/// that never finished.
fn collect(dir: &Path) -> Vec<Request> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    let old = |e: &std::fs::DirEntry| {
        e.metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > Duration::from_secs(3600))
    };
    for e in entries.flatten() {
        let path = e.path();
        match path.extension().and_then(|x| x.to_str()) {
            Some("req") => {
                let answer = path.with_extension("ans");
                if !requester_alive(&path) {
                    info!(request = %path.display(), "dropping a request whose requester is gone");
                    let _ = std::fs::remove_file(&path);
                    let _ = std::fs::remove_file(&answer);
                } else if !answer.exists() {
                    if let Some(r) = read::<Request>(&path) {
                        out.push(r);
                    }
                }
            }
            Some("ans") if !path.with_extension("req").exists() => {
                let _ = std::fs::remove_file(&path);
            }
            Some("new" | "tmp") if old(&e) => {
                let _ = std::fs::remove_file(&path);
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

/// Who still waits for a request of the batch for each disk: this process, or a requester whose
/// lock on its request file is still held — and, for an attach, whose claim on the disk still
/// holds ([`Request::send_by`]). Asked before every attempt to send, the transport's retries
/// included.
fn wanted(spool_dir: &Path, pending: &[Request], own: &str) -> Wanted {
    let dir = spool_dir.to_path_buf();
    let reqs: Vec<Request> = pending.to_vec();
    let own = own.to_string();
    Arc::new(move |disk: &str| {
        reqs.iter().any(|r| {
            r.disk_id.eq_ignore_ascii_case(disk)
                && r.send_by.is_none_or(|by| crate::clock::boot_ms() < by)
                && (r.id == own || requester_alive(&dir.join(format!("{}.req", r.id))))
        })
    })
}

/// Sends the batch as one operation; if Azure refuses it as a whole, each request alone, so that
/// one bad request does not fail the others — unless Azure throttled us or did not finish in time:
/// then sending the requests one by one would only multiply the load, so all share the failure.
///
/// Every answer is what Azure did (`Arm::change_data_disks`): a disk the operation changed, by
/// Azure's success; any other, by a read of the VM made after every request of the batch was
/// posted — the holder's own (`Known::Fresh`) or one made now. A `Known::View` only plans.
async fn send(
    s: &Settings,
    arm: &Arm,
    vm: &VmRef,
    known: Known,
    pending: &[Request],
    spool_dir: &Path,
    own: &str,
) -> Vec<Answer> {
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
    let read_at = crate::vm_view::now_ms();
    let sent = arm
        .change_data_disks(vm, known, &attach, &detach, wanted(spool_dir, pending, own))
        .await;
    match sent {
        Ok(after) => {
            crate::vm_view::store(s, &after, read_at);
            pending.iter().map(|r| answer_from(&after, r)).collect()
        }
        Err(e)
            if pending.len() == 1
                || matches!(
                    e,
                    AzureError::Throttled { .. } | AzureError::Transient { .. }
                ) =>
        {
            failed_all(pending, e)
        }
        Err(e) => {
            warn!(vm = %vm.name(), error = %e, "the batch was refused; sending its requests one by one");
            let mut out = Vec::new();
            for r in pending {
                let (a, d) = split(std::slice::from_ref(r));
                let read_at = crate::vm_view::now_ms();
                let alone = wanted(spool_dir, std::slice::from_ref(r), own);
                out.push(
                    match arm
                        .change_data_disks(vm, Known::Unknown, &a, &d, alone)
                        .await
                    {
                        Ok(after) => {
                            crate::vm_view::store(s, &after, read_at);
                            answer_from(&after, r)
                        }
                        Err(e) => Answer::Failed {
                            message: describe(e),
                        },
                    },
                );
            }
            out
        }
    }
}

/// Every request of the batch answered with one failure.
fn failed_all(pending: &[Request], e: AzureError) -> Vec<Answer> {
    let message = describe(e);
    pending
        .iter()
        .map(|_| Answer::Failed {
            message: message.clone(),
        })
        .collect()
}

/// Azure's error as the requester will read it (text: it crosses processes in the spool).
pub fn describe(e: AzureError) -> String {
    describe_azure(&e)
}
