//! The object store and its API machinery: uid, creationTimestamp, generation, one global
//! resourceVersion, optimistic concurrency, `/status` separation, finalizers and
//! deletionTimestamp, field ownership for server-side apply, and the change log watches read.

use super::patch;
use super::resources::ResourceType;
use super::status::{ApiError, ApiResult};
use super::validation;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::broadcast;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Added,
    Modified,
    Deleted,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Added => "ADDED",
            EventKind::Modified => "MODIFIED",
            EventKind::Deleted => "DELETED",
        }
    }
}

/// One committed change, as watches see it.
#[derive(Debug)]
pub struct Change {
    pub rv: u64,
    pub kind: EventKind,
    pub rt: &'static ResourceType,
    pub namespace: String,
    pub object: Value,
    /// The object before (for selector transitions).
    pub previous: Option<Value>,
}

type Key = (&'static str, &'static str, String, String);

fn key(rt: &'static ResourceType, ns: &str, name: &str) -> Key {
    (rt.group, rt.plural, ns.to_string(), name.to_string())
}

#[derive(Debug, Clone)]
struct Stored {
    object: Value,
    /// Field manager → the leaf paths it owns.
    owners: BTreeMap<String, BTreeSet<String>>,
}

struct Inner {
    objects: BTreeMap<Key, Stored>,
    rv: u64,
    log: VecDeque<Arc<Change>>,
}

/// Who writes, and to which part: the object or its `/status`.
#[derive(Debug, Clone, Copy)]
pub struct Writer<'a> {
    pub manager: &'a str,
    pub status: bool,
}

pub enum PatchKind {
    Merge,
    Json,
    Strategic,
    Apply { force: bool },
}

pub struct Store {
    inner: Mutex<Inner>,
    tx: broadcast::Sender<Arc<Change>>,
    /// How many changes watches can resume from; older resourceVersions are 410 Gone.
    window: usize,
}

/// What a watch starts with.
pub struct WatchStart {
    /// Objects to announce as ADDED first (a watch from "now" or from 0).
    pub initial: Vec<Value>,
    /// Changes after the requested resourceVersion.
    pub backlog: Vec<Arc<Change>>,
    pub live: broadcast::Receiver<Arc<Change>>,
    pub rv: u64,
}

pub fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn meta(o: &Value, field: &str) -> Option<String> {
    o.pointer(&format!("/metadata/{field}"))
        .and_then(Value::as_str)
        .map(str::to_string)
}

fn finalizers(o: &Value) -> Vec<String> {
    o.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Leaf paths of an object (lists are atomic), for field ownership.
fn leaves(v: &Value, prefix: &str, out: &mut BTreeMap<String, Value>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                let p = format!("{prefix}/{}", k.replace('~', "~0").replace('/', "~1"));
                if matches!(
                    p.as_str(),
                    "/apiVersion"
                        | "/kind"
                        | "/metadata/resourceVersion"
                        | "/metadata/managedFields"
                        | "/metadata/name"
                        | "/metadata/namespace"
                        | "/metadata/uid"
                        | "/metadata/creationTimestamp"
                        | "/metadata/generation"
                ) {
                    continue;
                }
                leaves(child, &p, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.clone());
        }
    }
}

fn changed_paths(old: &Value, new: &Value) -> BTreeSet<String> {
    let (mut a, mut b) = (BTreeMap::new(), BTreeMap::new());
    leaves(old, "", &mut a);
    leaves(new, "", &mut b);
    let mut out: BTreeSet<String> = b
        .iter()
        .filter(|(p, v)| a.get(*p) != Some(v))
        .map(|(p, _)| p.clone())
        .collect();
    out.extend(a.keys().filter(|p| !b.contains_key(*p)).cloned());
    out
}

/// The object without what differs on every write, for "did anything change?".
fn essence(o: &Value) -> Value {
    let mut c = o.clone();
    if let Some(m) = c.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
        m.remove("managedFields");
    }
    c
}

fn body_without_spec_and_status(o: &Value) -> Value {
    let mut c = o.clone();
    if let Some(m) = c.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
    }
    c
}

impl Store {
    pub fn new(window: usize) -> Store {
        let (tx, _) = broadcast::channel(4096);
        Store {
            inner: Mutex::new(Inner {
                objects: BTreeMap::new(),
                rv: 0,
                log: VecDeque::new(),
            }),
            tx,
            window: window.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every change from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.tx.subscribe()
    }

    pub fn resource_version(&self) -> u64 {
        self.lock().rv
    }

    fn commit(
        &self,
        inner: &mut Inner,
        rt: &'static ResourceType,
        kind: EventKind,
        mut object: Value,
        previous: Option<Value>,
        owners: BTreeMap<String, BTreeSet<String>>,
    ) -> Value {
        inner.rv += 1;
        let rv = inner.rv;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let ns = meta(&object, "namespace").unwrap_or_default();
        let name = meta(&object, "name").unwrap_or_default();
        let k = key(rt, &ns, &name);
        match kind {
            EventKind::Deleted => {
                inner.objects.remove(&k);
            }
            _ => {
                inner.objects.insert(
                    k,
                    Stored {
                        object: object.clone(),
                        owners,
                    },
                );
            }
        }
        let change = Arc::new(Change {
            rv,
            kind,
            rt,
            namespace: ns,
            object: object.clone(),
            previous,
        });
        inner.log.push_back(change.clone());
        while inner.log.len() > self.window {
            inner.log.pop_front();
        }
        let _ = self.tx.send(change);
        object
    }

    pub fn get(&self, rt: &'static ResourceType, ns: &str, name: &str) -> ApiResult<Value> {
        self.lock()
            .objects
            .get(&key(rt, ns, name))
            .map(|s| s.object.clone())
            .ok_or_else(|| ApiError::not_found(&rt.qualified(), name))
    }

    /// Objects of a type (in one namespace, or all) that `keep` accepts, and the list's
    /// resourceVersion.
    pub fn list(
        &self,
        rt: &'static ResourceType,
        ns: Option<&str>,
        keep: &dyn Fn(&Value) -> bool,
    ) -> (Vec<Value>, u64) {
        let inner = self.lock();
        let items = inner
            .objects
            .iter()
            .filter(|((g, p, n, _), _)| {
                *g == rt.group && *p == rt.plural && ns.is_none_or(|ns| ns == n)
            })
            .map(|(_, s)| &s.object)
            .filter(|o| keep(o))
            .cloned()
            .collect();
        (items, inner.rv)
    }

    /// Starts a watch: from `rv` (changes after it), or from now with every object announced
    /// first (`None` or 0). A resourceVersion older than the log's window is 410 Gone.
    pub fn watch(&self, rt: &'static ResourceType, from: Option<u64>) -> ApiResult<WatchStart> {
        let inner = self.lock();
        let live = self.tx.subscribe();
        match from.filter(|rv| *rv > 0) {
            None => {
                let initial = inner
                    .objects
                    .iter()
                    .filter(|((g, p, _, _), _)| *g == rt.group && *p == rt.plural)
                    .map(|(_, s)| s.object.clone())
                    .collect();
                Ok(WatchStart {
                    initial,
                    backlog: Vec::new(),
                    live,
                    rv: inner.rv,
                })
            }
            Some(rv) => {
                let oldest = inner.log.front().map(|c| c.rv).unwrap_or(inner.rv + 1);
                if rv < inner.rv && rv + 1 < oldest {
                    return Err(ApiError::gone(format!(
                        "too old resource version: {rv} ({})",
                        oldest.saturating_sub(1)
                    )));
                }
                let backlog = inner.log.iter().filter(|c| c.rv > rv).cloned().collect();
                Ok(WatchStart {
                    initial: Vec::new(),
                    backlog,
                    live,
                    rv: inner.rv,
                })
            }
        }
    }

    pub fn create(
        &self,
        rt: &'static ResourceType,
        ns: &str,
        mut body: Value,
        manager: &str,
    ) -> ApiResult<Value> {
        let mut inner = self.lock();
        self.check_identity(rt, ns, None, &body)?;
        if rt.namespaced {
            let ns_key = ("", "namespaces", String::new(), ns.to_string());
            if !inner.objects.contains_key(&ns_key) {
                return Err(ApiError::not_found("namespaces", ns));
            }
        }
        let name = match meta(&body, "name") {
            Some(n) => n,
            None => match meta(&body, "generateName") {
                Some(prefix) => format!("{prefix}{}", random_suffix()),
                None => {
                    return Err(ApiError::invalid(
                        rt.kind,
                        "",
                        "metadata.name",
                        "Required value: name or generateName is required",
                    ))
                }
            },
        };
        if inner.objects.contains_key(&key(rt, ns, &name)) {
            return Err(ApiError::already_exists(&rt.qualified(), &name));
        }
        if !body.is_object() {
            return Err(ApiError::bad_request("the body must be a JSON object"));
        }
        body["apiVersion"] = json!(rt.api_version());
        body["kind"] = json!(rt.kind);
        let m = body["metadata"]
            .as_object_mut()
            .ok_or_else(|| ApiError::bad_request("metadata must be an object"))?;
        m.insert("name".into(), json!(name));
        if rt.namespaced {
            m.insert("namespace".into(), json!(ns));
        } else {
            m.remove("namespace");
        }
        m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        m.insert("creationTimestamp".into(), json!(now()));
        m.insert("generation".into(), json!(1));
        m.remove("deletionTimestamp");
        m.remove("deletionGracePeriodSeconds");
        m.remove("resourceVersion");
        m.remove("managedFields");
        let defaults = Defaults::from_store(&inner);
        validation::on_create(rt, &mut body, &defaults)?;
        let mut owners = BTreeMap::new();
        let mut paths = BTreeMap::new();
        leaves(&body, "", &mut paths);
        owners.insert(manager.to_string(), paths.into_keys().collect());
        Ok(self.commit(&mut inner, rt, EventKind::Added, body, None, owners))
    }

    /// The URL names the object; a body that names another is refused, as kube-apiserver does.
    fn check_identity(
        &self,
        rt: &ResourceType,
        ns: &str,
        name: Option<&str>,
        body: &Value,
    ) -> ApiResult<()> {
        if let (Some(url), Some(b)) = (name, meta(body, "name")) {
            if url != b {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({b}) does not match the name on the URL ({url})"
                )));
            }
        }
        if rt.namespaced {
            if let Some(b) = meta(body, "namespace").filter(|b| b != ns) {
                return Err(ApiError::bad_request(format!(
                    "the namespace of the provided object does not match the namespace sent on the request: {b} != {ns}"
                )));
            }
        }
        Ok(())
    }

    /// PUT (the object or its `/status`).
    pub fn replace(
        &self,
        rt: &'static ResourceType,
        ns: &str,
        name: &str,
        body: Value,
        by: Writer<'_>,
    ) -> ApiResult<Value> {
        let mut inner = self.lock();
        self.check_identity(rt, ns, Some(name), &body)?;
        let current = inner
            .objects
            .get(&key(rt, ns, name))
            .cloned()
            .ok_or_else(|| ApiError::not_found(&rt.qualified(), name))?;
        self.write(&mut inner, rt, current, body, by, None)
    }

    pub fn patch(
        &self,
        rt: &'static ResourceType,
        ns: &str,
        name: &str,
        kind: PatchKind,
        body: &Value,
        by: Writer<'_>,
    ) -> ApiResult<Value> {
        let manager = by.manager;
        let mut inner = self.lock();
        let Some(current) = inner.objects.get(&key(rt, ns, name)).cloned() else {
            if let PatchKind::Apply { .. } = kind {
                drop(inner);
                self.check_identity(rt, ns, Some(name), body)?;
                let mut body = body.clone();
                body["metadata"]["name"] = json!(name);
                return self.create(rt, ns, body, manager);
            }
            return Err(ApiError::not_found(&rt.qualified(), name));
        };
        let mut new = current.object.clone();
        let invalid = |why: String| ApiError::new(422, "Invalid", why);
        let mut applied = None;
        match kind {
            PatchKind::Merge => patch::merge_patch(&mut new, body),
            PatchKind::Json => patch::json_patch(&mut new, body).map_err(invalid)?,
            PatchKind::Strategic => {
                patch::strategic_merge(&mut new, body, "").map_err(ApiError::bad_request)?
            }
            PatchKind::Apply { force } => {
                self.check_identity(rt, ns, Some(name), body)?;
                new = apply(&current, body, manager, force, rt, name)?;
                applied = Some(body.clone());
            }
        }
        self.write(&mut inner, rt, current, new, by, applied)
    }

    /// The one place an existing object changes.
    fn write(
        &self,
        inner: &mut Inner,
        rt: &'static ResourceType,
        current: Stored,
        mut new: Value,
        by: Writer<'_>,
        applied: Option<Value>,
    ) -> ApiResult<Value> {
        let (manager, status) = (by.manager, by.status);
        let old = &current.object;
        let name = meta(old, "name").unwrap_or_default();
        if !new.is_object() || !new.get("metadata").is_some_and(Value::is_object) {
            return Err(ApiError::bad_request("the object must have metadata"));
        }
        if let Some(rv) = meta(&new, "resourceVersion").filter(|rv| !rv.is_empty()) {
            if Some(&rv) != meta(old, "resourceVersion").as_ref() {
                return Err(ApiError::conflict(&rt.qualified(), &name));
            }
        }
        // What the client may not change.
        new["apiVersion"] = json!(rt.api_version());
        new["kind"] = json!(rt.kind);
        for field in [
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
        ] {
            match old["metadata"].get(field) {
                Some(v) => new["metadata"][field] = v.clone(),
                None => {
                    if let Some(m) = new["metadata"].as_object_mut() {
                        m.remove(field);
                    }
                }
            }
        }
        if rt.status {
            if status {
                // /status: only the status (and nothing else) changes.
                let mut only_status = old.clone();
                match new.get("status") {
                    Some(s) => only_status["status"] = s.clone(),
                    None => {
                        if let Some(m) = only_status.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
                only_status["metadata"]["resourceVersion"] =
                    old["metadata"]["resourceVersion"].clone();
                new = only_status;
            } else {
                match old.get("status") {
                    Some(s) => new["status"] = s.clone(),
                    None => {
                        if let Some(m) = new.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
            }
        }
        let terminating = old.pointer("/metadata/deletionTimestamp").is_some();
        if terminating {
            let before = finalizers(old);
            if let Some(added) = finalizers(&new).into_iter().find(|f| !before.contains(f)) {
                return Err(ApiError::new(
                    422,
                    "Invalid",
                    format!(
                        "{} \"{name}\" is invalid: metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers [\"{added}\"]",
                        rt.kind
                    ),
                ));
            }
        }
        let expandable = |class: &str| {
            inner
                .objects
                .iter()
                .find(|((g, p, _, n), _)| {
                    *g == "storage.k8s.io" && *p == "storageclasses" && n == class
                })
                .map(|(_, s)| s.object.get("allowVolumeExpansion") == Some(&json!(true)))
        };
        validation::on_update(rt, old, &mut new, &expandable)?;
        if essence(&new) == essence(old) {
            // A no-op write changes nothing, not even the resourceVersion.
            return Ok(old.clone());
        }
        if body_without_spec_and_status(&new) != body_without_spec_and_status(old) {
            let g = old
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            new["metadata"]["generation"] = json!(g + 1);
        }
        // Field ownership: what this manager set is now its own (and no longer others').
        let mut owners = current.owners.clone();
        let touched = match &applied {
            Some(a) => {
                let mut p = BTreeMap::new();
                leaves(a, "", &mut p);
                let mut t: BTreeSet<String> = p.into_keys().collect();
                t.extend(changed_paths(old, &new));
                t
            }
            None => changed_paths(old, &new),
        };
        for (m, paths) in owners.iter_mut() {
            if m != manager {
                paths.retain(|p| {
                    !touched.contains(p) || (applied.is_some() && new.pointer(p) == old.pointer(p))
                });
            }
        }
        owners
            .entry(manager.to_string())
            .or_default()
            .extend(touched);
        owners.retain(|_, p| !p.is_empty());

        if terminating && finalizers(&new).is_empty() {
            return Ok(self.commit(
                inner,
                rt,
                EventKind::Deleted,
                new,
                Some(old.clone()),
                owners,
            ));
        }
        Ok(self.commit(
            inner,
            rt,
            EventKind::Modified,
            new,
            Some(old.clone()),
            owners,
        ))
    }

    pub fn delete(
        &self,
        rt: &'static ResourceType,
        ns: &str,
        name: &str,
        options: &Value,
    ) -> ApiResult<Value> {
        let mut inner = self.lock();
        let current = inner
            .objects
            .get(&key(rt, ns, name))
            .cloned()
            .ok_or_else(|| ApiError::not_found(&rt.qualified(), name))?;
        let old = &current.object;
        if let Some(uid) = options
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
        {
            let actual = meta(old, "uid").unwrap_or_default();
            if uid != actual {
                return Err(ApiError::new(409, "Conflict", format!(
                    "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}",
                    rt.qualified()
                )));
            }
        }
        if let Some(rv) = options
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
        {
            let actual = meta(old, "resourceVersion").unwrap_or_default();
            if rv != actual {
                return Err(ApiError::new(409, "Conflict", format!(
                    "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {actual}",
                    rt.qualified()
                )));
            }
        }
        if finalizers(old).is_empty() {
            return Ok(self.commit(
                &mut inner,
                rt,
                EventKind::Deleted,
                old.clone(),
                Some(old.clone()),
                current.owners.clone(),
            ));
        }
        if old.pointer("/metadata/deletionTimestamp").is_some() {
            return Ok(old.clone());
        }
        let mut new = old.clone();
        new["metadata"]["deletionTimestamp"] = json!(now());
        new["metadata"]["deletionGracePeriodSeconds"] = json!(0);
        Ok(self.commit(
            &mut inner,
            rt,
            EventKind::Modified,
            new,
            Some(old.clone()),
            current.owners.clone(),
        ))
    }
}

/// Server-side apply: the applied fields merge into the object; fields this manager applied
/// before and no longer does are removed; a field another manager owns with a different value is
/// a conflict unless forced.
fn apply(
    current: &Stored,
    applied: &Value,
    manager: &str,
    force: bool,
    rt: &ResourceType,
    name: &str,
) -> ApiResult<Value> {
    let mut fields = BTreeMap::new();
    leaves(applied, "", &mut fields);
    let old = &current.object;
    if !force {
        let mut conflicts = Vec::new();
        for (path, value) in &fields {
            if old.pointer(path).is_some_and(|v| v != value) {
                for (m, owned) in &current.owners {
                    if m != manager && owned.contains(path) {
                        conflicts.push(format!(
                            "conflict with \"{m}\": .{}",
                            path.trim_start_matches('/').replace('/', ".")
                        ));
                    }
                }
            }
        }
        if !conflicts.is_empty() {
            let mut e = ApiError::new(
                409,
                "Conflict",
                format!(
                    "Apply failed with {} conflict{}: {}",
                    conflicts.len(),
                    if conflicts.len() == 1 { "" } else { "s" },
                    conflicts.join("\n")
                ),
            );
            e.details = json!({"name": name, "kind": rt.plural,
                "causes": conflicts.iter().map(|c| json!({"reason": "FieldManagerConflict", "message": c})).collect::<Vec<_>>()});
            return Err(e);
        }
    }
    let mut new = old.clone();
    if let Some(before) = current.owners.get(manager) {
        for path in before.iter().filter(|p| !fields.contains_key(*p)) {
            let others = current
                .owners
                .iter()
                .any(|(m, o)| m != manager && o.contains(path));
            if !others {
                if let Some((parent, last)) = path.rsplit_once('/') {
                    if let Some(Value::Object(m)) = new.pointer_mut(parent) {
                        m.remove(&last.replace("~1", "/").replace("~0", "~"));
                    }
                }
            }
        }
    }
    let mut patch_body = applied.clone();
    if let Some(m) = patch_body
        .get_mut("metadata")
        .and_then(Value::as_object_mut)
    {
        m.remove("resourceVersion");
    }
    patch::merge_patch(&mut new, &patch_body);
    Ok(new)
}

fn random_suffix() -> String {
    use rand::Rng;
    const CHARS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::thread_rng();
    (0..5)
        .map(|_| CHARS[rng.gen_range(0..CHARS.len())] as char)
        .collect()
}

/// What defaulting on create reads from other objects (the default StorageClass).
pub struct Defaults {
    pub default_storage_class: Option<String>,
}

impl Defaults {
    fn from_store(inner: &Inner) -> Defaults {
        let default_storage_class = inner
            .objects
            .iter()
            .filter(|((g, p, _, _), _)| *g == "storage.k8s.io" && *p == "storageclasses")
            .find(|(_, s)| {
                s.object
                    .pointer("/metadata/annotations/storageclass.kubernetes.io~1is-default-class")
                    .and_then(Value::as_str)
                    == Some("true")
            })
            .and_then(|(_, s)| meta(&s.object, "name"));
        Defaults {
            default_storage_class,
        }
    }
}
