//! Events on claims and volumes, folded as client-go's events.k8s.io broadcaster folds them
//! (k8s.io/client-go `tools/events/event_broadcaster.go`, recordToSink): the first occurrence is
//! created, the next one within [`FINISH`] turns it into a series of two, and later ones only
//! count up in memory — written at most once per [`REFRESH`] (client-go refreshes its series every
//! 30 minutes) — until [`FINISH`] passes without one, when the next occurrence is a new event.
//!
//! Two differences from client-go, both on purpose. The note is part of what makes occurrences
//! the same event: client-go's key leaves it out, so a new message would only count up an old
//! event's series and never be shown. And kube-runtime's `Recorder`, which this replaces, writes
//! every occurrence (one PATCH each): a failure repeated in a loop was once 18,000 event writes in
//! 30 s.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::EventType;
use kube::Client;
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::warn;

/// A series with no occurrence for this long is over (client-go's `finishTime`).
pub const FINISH: Duration = Duration::from_secs(6 * 60);
/// A series' count is written at most this often.
pub const REFRESH: Duration = Duration::from_secs(60);

#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    regarding: (String, String, String, String),
    warning: bool,
    reason: String,
    action: String,
    note: String,
}

struct Series {
    /// Namespace and name of the event written for it.
    event: (String, String),
    count: i32,
    last_seen: Instant,
    last_observed: Timestamp,
    /// The count the API server has.
    written: i32,
    written_at: Instant,
    /// Writes of its count that failed in a row: after a few (or a 404: the event or its
    /// namespace is gone) the series is forgotten.
    failures: u32,
}

/// What an occurrence needs written, decided under the lock and done outside it.
enum Write {
    Create(Box<Event>),
    Count {
        event: (String, String),
        count: i32,
        observed: Timestamp,
    },
    Nothing,
}

pub struct Recorder {
    client: Client,
    controller: String,
    instance: String,
    series: Mutex<HashMap<Key, Series>>,
}

impl Recorder {
    pub fn new(client: Client, controller: &str, instance: &str) -> Arc<Recorder> {
        Arc::new(Recorder {
            client,
            controller: controller.into(),
            instance: instance.into(),
            series: Mutex::default(),
        })
    }

    /// Writes, now and then, the counts of series that occurred since they were last written.
    pub fn spawn_refresh(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(REFRESH / 2);
            loop {
                tick.tick().await;
                me.refresh().await;
            }
        })
    }

    pub async fn publish(
        &self,
        regarding: &ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let key = Key {
            regarding: (
                regarding.namespace.clone().unwrap_or_default(),
                regarding.kind.clone().unwrap_or_default(),
                regarding.name.clone().unwrap_or_default(),
                regarding.uid.clone().unwrap_or_default(),
            ),
            warning: matches!(type_, EventType::Warning),
            reason: reason.into(),
            action: action.into(),
            note: note.clone(),
        };
        let now = Instant::now();
        let observed = Timestamp::now();
        let write = {
            let mut all = self.series.lock().unwrap_or_else(|p| p.into_inner());
            match all.get_mut(&key) {
                Some(s) if now.duration_since(s.last_seen) < FINISH => {
                    s.count += 1;
                    s.last_seen = now;
                    s.last_observed = observed;
                    // The first repeat is written at once (it makes the event a series), later
                    // ones once per REFRESH; none before the event itself is written.
                    if s.written == 1
                        || (s.written > 1 && now.duration_since(s.written_at) >= REFRESH)
                    {
                        Write::Count {
                            event: s.event.clone(),
                            count: s.count,
                            observed,
                        }
                    } else {
                        Write::Nothing
                    }
                }
                _ => {
                    let event = self.event(regarding, type_, reason, action, note, observed);
                    all.insert(
                        key.clone(),
                        Series {
                            event: (
                                event.metadata.namespace.clone().unwrap_or_default(),
                                event.metadata.name.clone().unwrap_or_default(),
                            ),
                            count: 1,
                            last_seen: now,
                            last_observed: observed,
                            written: 0,
                            written_at: now,
                            failures: 0,
                        },
                    );
                    Write::Create(Box::new(event))
                }
            }
        };
        let created = matches!(write, Write::Create(_));
        match self.write(write).await {
            Some(count) => self.mark_written(&key, count),
            // Not created: the next occurrence tries again from scratch.
            None if created => {
                self.series
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&key);
            }
            None => self.mark_failed(&key),
        }
    }

    async fn refresh(&self) {
        let now = Instant::now();
        let due: Vec<(Key, Write)> = {
            let mut all = self.series.lock().unwrap_or_else(|p| p.into_inner());
            let due = all
                .iter()
                .filter(|(_, s)| {
                    s.written > 0
                        && s.count > s.written
                        && now.duration_since(s.written_at) >= REFRESH
                })
                .map(|(k, s)| {
                    (
                        k.clone(),
                        Write::Count {
                            event: s.event.clone(),
                            count: s.count,
                            observed: s.last_observed,
                        },
                    )
                })
                .collect();
            // Finished series whose count is written are forgotten.
            all.retain(|_, s| now.duration_since(s.last_seen) < FINISH || s.count > s.written);
            due
        };
        for (key, write) in due {
            match self.write(write).await {
                Some(count) => self.mark_written(&key, count),
                None => self.mark_failed(&key),
            }
        }
    }

    fn mark_failed(&self, key: &Key) {
        let mut all = self.series.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = all.get_mut(key) {
            s.failures += 1;
            s.written_at = Instant::now();
            if s.failures >= 3 {
                all.remove(key);
            }
        }
    }

    fn forget_event(&self, ns: &str, name: &str) {
        self.series
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, s| s.event.0 != ns || s.event.1 != name);
    }

    fn mark_written(&self, key: &Key, count: i32) {
        let mut all = self.series.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = all.get_mut(key) {
            s.written = s.written.max(count);
            s.written_at = Instant::now();
            s.failures = 0;
        }
    }

    /// The count written, if something was.
    async fn write(&self, write: Write) -> Option<i32> {
        match write {
            Write::Nothing => None,
            Write::Create(event) => {
                let ns = event.metadata.namespace.clone().unwrap_or_default();
                let api: Api<Event> = Api::namespaced(self.client.clone(), &ns);
                match api.create(&PostParams::default(), &event).await {
                    Ok(_) => Some(1),
                    Err(e) => {
                        warn!(
                            reason = event.reason.as_deref().unwrap_or_default(),
                            "cannot create event: {e}"
                        );
                        None
                    }
                }
            }
            Write::Count {
                event: (ns, name),
                count,
                observed,
            } => {
                let api: Api<Event> = Api::namespaced(self.client.clone(), &ns);
                let patch = json!({"series": {"count": count,
                    "lastObservedTime": MicroTime(observed)}});
                match api
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => Some(count),
                    Err(kube::Error::Api(e)) if e.code == 404 => {
                        // The event (or its namespace) is gone: the series ends here; a later
                        // occurrence makes a new event.
                        self.forget_event(&ns, &name);
                        None
                    }
                    Err(e) => {
                        warn!(event = %name, "cannot update event series: {e}");
                        None
                    }
                }
            }
        }
    }

    fn event(
        &self,
        regarding: &ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
        now: Timestamp,
    ) -> Event {
        // Events of cluster-scoped objects (volumes) go to `default`, as client-go puts them.
        let namespace = regarding
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".into());
        Event {
            metadata: ObjectMeta {
                name: Some(format!(
                    "{}.{:x}",
                    regarding.name.as_deref().unwrap_or(&self.controller),
                    now.as_nanosecond()
                )),
                namespace: Some(namespace),
                ..Default::default()
            },
            event_time: Some(MicroTime(now)),
            action: Some(action.into()),
            reason: Some(reason.into()),
            // The API server refuses notes over 1 kB.
            note: Some(truncate(note, 1024)),
            regarding: Some(regarding.clone()),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            type_: Some(
                match type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .into(),
            ),
            ..Default::default()
        }
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max - 3;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::truncate;

    #[test]
    fn notes_fit_the_api_server_s_limit() {
        assert_eq!(truncate("short".into(), 1024), "short");
        let long = "é".repeat(1000);
        let cut = truncate(long, 1024);
        assert!(cut.len() <= 1024 && cut.ends_with("..."), "{}", cut.len());
    }
}
