//! `?watch=true`: newline-delimited JSON events (ADDED, MODIFIED, DELETED, BOOKMARK, ERROR) from a
//! resourceVersion, filtered by namespace and selectors — an object that stops matching is
//! DELETED for this watch, one that starts matching is ADDED, as kube-apiserver does.

use super::resources::ResourceType;
use super::selectors::{FieldSelector, LabelSelector};
use super::status::ApiError;
use super::store::{Change, EventKind, Store};
use bytes::Bytes;
use serde_json::{json, Value};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, watch};

pub struct WatchRequest {
    pub rt: &'static ResourceType,
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub from: Option<u64>,
    pub timeout: Duration,
    pub bookmarks: bool,
    pub bookmark_every: Duration,
}

impl WatchRequest {
    fn selects(&self, o: &Value) -> bool {
        let ns_ok = self
            .namespace
            .as_deref()
            .is_none_or(|ns| o.pointer("/metadata/namespace").and_then(Value::as_str) == Some(ns));
        ns_ok
            && self
                .labels
                .matches(o.pointer("/metadata/labels").unwrap_or(&Value::Null))
            && self.fields.matches(o)
    }

    /// What this watch reports of a change, if anything.
    fn event_for(&self, c: &Change) -> Option<(&'static str, Value)> {
        if c.rt.group != self.rt.group || c.rt.plural != self.rt.plural {
            return None;
        }
        let now = self.selects(&c.object);
        let before = c.previous.as_ref().is_some_and(|p| self.selects(p));
        let kind = match (c.kind, before, now) {
            (EventKind::Added, _, true) => EventKind::Added,
            (EventKind::Deleted, _, true) => EventKind::Deleted,
            (EventKind::Modified, true, true) => EventKind::Modified,
            (EventKind::Modified, false, true) => EventKind::Added,
            (EventKind::Modified, true, false) => EventKind::Deleted,
            _ => return None,
        };
        Some((kind.as_str(), c.object.clone()))
    }
}

fn line(kind: &str, object: &Value) -> Bytes {
    let mut s = json!({"type": kind, "object": object}).to_string();
    s.push('\n');
    Bytes::from(s)
}

/// A watch ended for this reason, as an ERROR event (the HTTP status was 200 already).
pub fn error_line(e: &ApiError) -> Bytes {
    line("ERROR", &e.status_body())
}

/// Starts the watch; events flow into the returned channel until the timeout, a dropped-watches
/// signal, or the client going away.
pub fn start(
    store: &Store,
    req: WatchRequest,
    mut drop_signal: watch::Receiver<u64>,
) -> mpsc::Receiver<Bytes> {
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let started = store.watch(req.rt, req.from);
    tokio::spawn(async move {
        let start = match started {
            Ok(s) => s,
            Err(e) => {
                let _ = tx.send(error_line(&e)).await;
                return;
            }
        };
        let mut last_rv = start.rv;
        for o in &start.initial {
            if req.selects(o) && tx.send(line("ADDED", o)).await.is_err() {
                return;
            }
        }
        for c in &start.backlog {
            last_rv = last_rv.max(c.rv);
            if let Some((kind, o)) = req.event_for(c) {
                if tx.send(line(kind, &o)).await.is_err() {
                    return;
                }
            }
        }
        let mut live = start.live;
        let deadline = tokio::time::sleep(req.timeout);
        tokio::pin!(deadline);
        let mut bookmark = tokio::time::interval(req.bookmark_every);
        bookmark.tick().await;
        let _ = drop_signal.borrow_and_update();
        loop {
            tokio::select! {
                _ = &mut deadline => break,
                _ = drop_signal.changed() => return,
                _ = tx.closed() => return,
                _ = bookmark.tick(), if req.bookmarks => {
                    let o = json!({"kind": req.rt.kind, "apiVersion": req.rt.api_version(),
                        "metadata": {"resourceVersion": last_rv.to_string()}});
                    if tx.send(line("BOOKMARK", &o)).await.is_err() {
                        return;
                    }
                }
                got = live.recv() => match got {
                    Ok(c) => {
                        last_rv = last_rv.max(c.rv);
                        if let Some((kind, o)) = req.event_for(&c) {
                            if tx.send(line(kind, &o)).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let e = ApiError::gone(format!("too old resource version: {last_rv}: the watch fell behind"));
                        let _ = tx.send(error_line(&e)).await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    });
    rx
}
