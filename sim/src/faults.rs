//! Fault injection on ARM requests, set through the control API, and per-operation call counters.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Mutex;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultRule {
    /// Assigned by the simulator.
    #[serde(default)]
    pub id: u64,
    /// HTTP method to match (any when absent).
    #[serde(default)]
    pub method: Option<String>,
    /// ARM operation id to match, e.g. `Disks_CreateOrUpdate` (any when absent).
    #[serde(default)]
    pub operation: Option<String>,
    /// Case-insensitive substring of the request path to match (any when absent).
    #[serde(default)]
    pub path_contains: Option<String>,
    /// Matching requests to let through before the rule fires.
    #[serde(default)]
    pub skip: u32,
    /// How many times the rule fires before it retires itself (forever when absent).
    #[serde(default)]
    pub times: Option<u32>,
    pub action: FaultAction,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    tag = "kind",
    deny_unknown_fields
)]
pub enum FaultAction {
    /// Delay the answer.
    Latency { ms: u64 },
    /// Answer with this status and an ARM error body instead of doing the work. 429 and 503 carry
    /// `Retry-After` (`retryAfter` seconds, default 1).
    Status {
        status: u16,
        #[serde(default)]
        code: Option<String>,
        #[serde(default)]
        message: Option<String>,
        #[serde(default)]
        retry_after: Option<u64>,
    },
    /// Close the connection with a TCP reset without doing the work.
    Reset,
    /// Do the work, then reset the connection instead of answering.
    LoseResponse,
    /// Accept the long-running operation, then end it Failed with this error.
    LroFail {
        #[serde(default)]
        code: Option<String>,
        #[serde(default)]
        message: Option<String>,
    },
}

#[derive(Default)]
pub struct Faults {
    inner: Mutex<FaultsInner>,
}

#[derive(Default)]
struct FaultsInner {
    next_id: u64,
    rules: Vec<(FaultRule, u32)>,
}

impl Faults {
    pub fn add(&self, mut rule: FaultRule) -> FaultRule {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.next_id += 1;
        rule.id = inner.next_id;
        inner.rules.push((rule.clone(), 0));
        rule
    }

    pub fn list(&self) -> Vec<FaultRule> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.rules.iter().map(|(r, _)| r.clone()).collect()
    }

    pub fn remove(&self, id: u64) -> bool {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let before = inner.rules.len();
        inner.rules.retain(|(r, _)| r.id != id);
        before != inner.rules.len()
    }

    pub fn clear(&self) {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .rules
            .clear();
    }

    /// The actions of every rule that fires for this request, in the order the rules were added.
    pub fn fire(&self, method: &str, operation: &str, path: &str) -> Vec<FaultAction> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let path = path.to_ascii_lowercase();
        let mut fired = Vec::new();
        for (rule, seen) in inner.rules.iter_mut() {
            let matches = rule
                .method
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(method))
                && rule
                    .operation
                    .as_deref()
                    .is_none_or(|o| o.eq_ignore_ascii_case(operation))
                && rule
                    .path_contains
                    .as_deref()
                    .is_none_or(|p| path.contains(&p.to_ascii_lowercase()));
            if !matches {
                continue;
            }
            *seen += 1;
            if *seen <= rule.skip {
                continue;
            }
            if let Some(t) = rule.times.as_mut() {
                if *t == 0 {
                    continue;
                }
                *t -= 1;
            }
            fired.push(rule.action.clone());
        }
        inner.rules.retain(|(r, _)| r.times != Some(0));
        fired
    }
}

/// Requests received per ARM operation id (after authentication), and read/write totals.
#[derive(Default)]
pub struct Counters {
    inner: Mutex<BTreeMap<String, u64>>,
}

impl Counters {
    pub fn count(&self, operation: &str, write: bool) {
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry(operation.to_string()).or_default() += 1;
        *m.entry(if write { "writes" } else { "reads" }.to_string())
            .or_default() += 1;
    }

    /// One write to `object` (`disks/<name>`, `persistentvolumeclaims/<namespace>/<name>`, or
    /// `events/<namespace>/<name of the object the event is about>`), counted as
    /// `writes to <object>` beside the per-operation counts: what a failure path costs one disk
    /// or one claim.
    pub fn count_write_to(&self, object: &str) {
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry(format!("writes to {object}")).or_default() += 1;
    }

    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn reset(&self) {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(json: &str) -> FaultRule {
        serde_json::from_str(json).expect("rule parses")
    }

    #[test]
    fn rules_match_skip_and_retire() {
        let f = Faults::default();
        f.add(rule(
            r#"{"operation":"Disks_Get","skip":1,"times":2,"action":{"kind":"reset"}}"#,
        ));
        assert!(
            f.fire("GET", "Disks_Get", "/x").is_empty(),
            "first one skipped"
        );
        assert_eq!(f.fire("GET", "Disks_Get", "/x"), vec![FaultAction::Reset]);
        assert!(
            f.fire("GET", "VirtualMachines_Get", "/x").is_empty(),
            "other operation"
        );
        assert_eq!(f.fire("get", "disks_get", "/x"), vec![FaultAction::Reset]);
        assert!(
            f.fire("GET", "Disks_Get", "/x").is_empty(),
            "retired after two"
        );
        assert!(f.list().is_empty());
    }

    #[test]
    fn unknown_fields_in_rules_are_refused() {
        assert!(
            serde_json::from_str::<FaultRule>(r#"{"action":{"kind":"reset"},"colour":1}"#).is_err()
        );
        assert!(serde_json::from_str::<FaultRule>(r#"{"action":{"kind":"explode"}}"#).is_err());
    }
}
