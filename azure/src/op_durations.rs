//! How long ARM's long-running operations of each kind have been taking, so that their end is
//! looked for when it is due rather than on a fixed ramp.
//!
//! ARM often answers `Retry-After: 0` (or nothing) for operations of a few seconds, which leaves
//! the pace of polling to the client: a fixed ramp either reads many times or sees the end late
//! (a 1 s operation seen at ~1.55 s with the former 50 ms → 1 s ramp). The durations of recent
//! operations of the same kind predict the next one well (a VM's attach, a disk's creation). They
//! are kept per kind — method and resource type or action, e.g. `POST attachDetachDataDisks` —
//! in this process and, when a directory is given, in a file per kind that every driver process
//! of the host shares (each process does one operation and exits).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

/// How many recent durations of a kind are kept.
const KEPT: usize = 8;

#[derive(Debug, Default)]
pub struct OpDurations {
    dir: Option<PathBuf>,
    recent: Mutex<HashMap<String, Vec<u64>>>,
}

/// The kind of the operation a write to `path` starts: its action (`.../attachDetachDataDisks`)
/// or resource type (`.../disks/{name}`), with the method.
pub fn kind_of(method: &str, path: &str) -> String {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    // Resource paths alternate type/name after the provider: an even count past it ends in an
    // action, an odd one in a name.
    let after_provider = segments
        .iter()
        .rposition(|s| s.eq_ignore_ascii_case("providers"))
        .map(|p| segments.len() - p - 2)
        .unwrap_or(0);
    let what = if after_provider % 2 == 1 {
        segments.last()
    } else {
        segments.len().checked_sub(2).and_then(|i| segments.get(i))
    };
    let what: String = what
        .unwrap_or(&"unknown")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    format!("{}-{what}", method.to_ascii_uppercase())
}

/// What to expect of the next operation from recent durations: the upper quartile, so that most
/// operations are over at the first look and a slow one costs a few more.
pub fn expectation(recent: &[u64]) -> Option<Duration> {
    if recent.is_empty() {
        return None;
    }
    let mut sorted = recent.to_vec();
    sorted.sort_unstable();
    Some(Duration::from_millis(sorted[(sorted.len() * 3) / 4]))
}

impl OpDurations {
    /// `dir`: where processes share what they learnt (`None`: this process only).
    pub fn new(dir: Option<PathBuf>) -> OpDurations {
        OpDurations {
            dir,
            recent: Mutex::default(),
        }
    }

    fn file(&self, kind: &str) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join(format!("{kind}.json")))
    }

    fn load(&self, kind: &str) -> Vec<u64> {
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = recent.get(kind) {
            return v.clone();
        }
        let v: Vec<u64> = self
            .file(kind)
            .and_then(|f| std::fs::read(f).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        recent.insert(kind.to_string(), v.clone());
        v
    }

    /// How long an operation of this kind is expected to take; `None` before the first one.
    pub fn expected(&self, kind: &str) -> Option<Duration> {
        expectation(&self.load(kind))
    }

    /// Learns how long one operation took. Sharing is best effort: a lost update only costs a
    /// later process a less informed schedule.
    pub fn record(&self, kind: &str, took: Duration) {
        let mut v = self.load(kind);
        v.push(took.as_millis() as u64);
        if v.len() > KEPT {
            v.drain(..v.len() - KEPT);
        }
        if let Some(path) = self.file(kind) {
            if let Some(dir) = path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
            if let Ok(bytes) = serde_json::to_vec(&v) {
                if std::fs::write(&tmp, bytes).is_ok() {
                    let _ = std::fs::rename(&tmp, &path);
                }
            }
        }
        self.recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(kind.to_string(), v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_name_the_action_or_the_resource_type() {
        assert_eq!(
            kind_of(
                "post",
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm-1/attachDetachDataDisks"
            ),
            "POST-attachDetachDataDisks"
        );
        assert_eq!(
            kind_of(
                "POST",
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/ss/virtualmachines/3/attachDetachDataDisks"
            ),
            "POST-attachDetachDataDisks"
        );
        assert_eq!(
            kind_of(
                "PUT",
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/disks/pvc-1"
            ),
            "PUT-disks"
        );
        assert_eq!(
            kind_of(
                "DELETE",
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/snapshots/s.1"
            ),
            "DELETE-snapshots"
        );
    }

    #[test]
    fn the_expectation_is_the_upper_quartile_of_recent_ones() {
        assert_eq!(expectation(&[]), None);
        assert_eq!(expectation(&[900]), Some(Duration::from_millis(900)));
        assert_eq!(
            expectation(&[1000, 3000, 1100, 1050, 990, 1020, 1010, 1030]),
            Some(Duration::from_millis(1100))
        );
    }

    #[test]
    fn processes_share_what_they_learnt_and_keep_the_recent_ones() {
        let dir = tempfile::tempdir().expect("tmp");
        let one = OpDurations::new(Some(dir.path().to_path_buf()));
        for ms in [5000, 5000, 5000, 5000, 5000, 5000, 5000, 5000] {
            one.record("POST-attachDetachDataDisks", Duration::from_millis(ms));
        }
        for _ in 0..KEPT {
            one.record("POST-attachDetachDataDisks", Duration::from_millis(2000));
        }
        let other = OpDurations::new(Some(dir.path().to_path_buf()));
        assert_eq!(
            other.expected("POST-attachDetachDataDisks"),
            Some(Duration::from_millis(2000)),
            "older durations forgotten"
        );
        assert_eq!(other.expected("PUT-disks"), None);
    }
}
