//! The ARM requests the simulator answered, newest last: who asked (the peer's address and the
//! client's request id), what, and what it was told — with a disk's size and provisioning state
//! when the answer describes a disk. A test that sees Azure disagree with a client reads here
//! which requests that client really made. Bounded: the oldest entries go first.

use serde::Serialize;
use std::collections::VecDeque;
use std::sync::Mutex;

/// How many requests are kept.
const KEPT: usize = 20_000;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// When the answer was ready (RFC 3339, milliseconds).
    pub at: String,
    /// The client's address, as the simulator's socket saw it.
    pub peer: Option<String>,
    pub method: String,
    pub path: String,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_request_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// `properties.diskSizeGB` of the answer, when it has one (a disk, or a disk operation's
    /// output).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_size_gb: Option<i64>,
    /// `properties.provisioningState` of the answer, or a status resource's `status`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// The connection was reset instead of answered (a fault rule).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub reset: bool,
}

impl Entry {
    /// What an answer's body says of a disk: its size and state, if it describes one.
    pub fn describe(body: &[u8]) -> (Option<i64>, Option<String>) {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
            return (None, None);
        };
        let props = v
            .pointer("/properties/output/properties")
            .or_else(|| v.get("properties"));
        let size = props
            .and_then(|p| p.get("diskSizeGB"))
            .and_then(serde_json::Value::as_i64);
        let state = props
            .and_then(|p| p.get("provisioningState"))
            .or_else(|| v.get("status"))
            .and_then(serde_json::Value::as_str)
            .map(str::to_string);
        (size, state)
    }
}

#[derive(Default)]
pub struct Journal {
    entries: Mutex<VecDeque<Entry>>,
}

impl Journal {
    pub fn record(&self, entry: Entry) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() == KEPT {
            entries.pop_front();
        }
        entries.push_back(entry);
    }

    /// The entries whose path contains `path_contains` (case-insensitive; all when `None`).
    pub fn snapshot(&self, path_contains: Option<&str>) -> Vec<Entry> {
        let needle = path_contains.map(str::to_lowercase);
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .iter()
            .filter(|e| {
                needle
                    .as_deref()
                    .is_none_or(|n| e.path.to_lowercase().contains(n))
            })
            .cloned()
            .collect()
    }

    pub fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_disk_answer_is_described() {
        let disk = br#"{"name":"d","properties":{"diskSizeGB":3,"provisioningState":"Updating"}}"#;
        assert_eq!(Entry::describe(disk), (Some(3), Some("Updating".into())));
        let status =
            br#"{"status":"Succeeded","properties":{"output":{"properties":{"diskSizeGB":4}}}}"#;
        assert_eq!(Entry::describe(status), (Some(4), Some("Succeeded".into())));
        assert_eq!(Entry::describe(b""), (None, None));
    }

    #[test]
    fn keeps_the_newest() {
        let j = Journal::default();
        for i in 0..KEPT + 2 {
            j.record(Entry {
                at: String::new(),
                peer: None,
                method: "GET".into(),
                path: format!("/p/{i}"),
                status: 200,
                client_request_id: None,
                user_agent: None,
                disk_size_gb: None,
                state: None,
                reset: false,
            });
        }
        let all = j.snapshot(None);
        assert_eq!(all.len(), KEPT);
        assert_eq!(all[0].path, "/p/2");
        assert_eq!(j.snapshot(Some(&format!("/P/{}", KEPT + 1))).len(), 1);
    }
}
