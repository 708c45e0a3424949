//! Azure's throttling, remembered beyond one request and one process.
//!
//! ARM throttles a subscription with separate budgets for reads and writes and says for how long
//! with `Retry-After` (learn.microsoft.com, "Understand how Azure Resource Manager throttles
//! requests"). kube-controller-manager and kubelet start a fresh driver process for every call: with
//! no memory, each new process would ask again at once and keep the subscription throttled. So the
//! moment until which Azure asked us to stay away is kept per budget, in this process and — when a
//! directory is given — in a file per subscription and budget that every process reads before it
//! sends anything.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// ARM's two budgets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    Reads,
    Writes,
}

impl Budget {
    /// GET and HEAD spend reads (polls of long-running operations too); the rest spend writes.
    pub fn of_method(method: &str) -> Budget {
        if method.eq_ignore_ascii_case("GET") || method.eq_ignore_ascii_case("HEAD") {
            Budget::Reads
        } else {
            Budget::Writes
        }
    }

    fn index(self) -> usize {
        match self {
            Budget::Reads => 0,
            Budget::Writes => 1,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Budget::Reads => "reads",
            Budget::Writes => "writes",
        }
    }
}

#[derive(Debug)]
pub struct ThrottleMemory {
    dir: Option<PathBuf>,
    subscription: String,
    until: Mutex<[Option<SystemTime>; 2]>,
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

impl ThrottleMemory {
    /// `dir`: where processes share what they learnt (`None`: this process only).
    pub fn new(dir: Option<PathBuf>, subscription: &str) -> ThrottleMemory {
        ThrottleMemory {
            dir,
            subscription: subscription.to_string(),
            until: Mutex::new([None; 2]),
        }
    }

    fn file(&self, budget: Budget) -> Option<PathBuf> {
        // Subscription IDs are GUIDs; anything else is kept out of the file name.
        let sub: String = self
            .subscription
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        self.dir
            .as_ref()
            .map(|d| d.join(format!("{sub}.{}", budget.name())))
    }

    fn read_file(path: &Path) -> Option<SystemTime> {
        let ms: u64 = std::fs::read_to_string(path).ok()?.trim().parse().ok()?;
        Some(UNIX_EPOCH + Duration::from_millis(ms))
    }

    /// How long callers should still stay away from this budget, if at all.
    pub fn remaining(&self, budget: Budget) -> Option<Duration> {
        let mine = self.until.lock().unwrap_or_else(|e| e.into_inner())[budget.index()];
        let shared = self.file(budget).and_then(|p| Self::read_file(&p));
        let until = mine.max(shared)?;
        until
            .duration_since(SystemTime::now())
            .ok()
            .filter(|d| !d.is_zero())
    }

    /// Azure asked to stay away from `budget` for `wait`.
    pub fn record(&self, budget: Budget, wait: Duration) {
        let until = SystemTime::now() + wait;
        {
            let mut u = self.until.lock().unwrap_or_else(|e| e.into_inner());
            let slot = &mut u[budget.index()];
            *slot = (*slot).max(Some(until));
        }
        let Some(path) = self.file(budget) else {
            return;
        };
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        // Write then rename: a reader sees the old moment or the new one, never half a number.
        // Another process may write a shorter wait between our look and our rename; looking
        // again after it settles that (a later moment always wins within a few rounds).
        let tmp = path.with_extension(format!("{}.{}.tmp", budget.name(), std::process::id()));
        for _ in 0..3 {
            if Self::read_file(&path).is_some_and(|t| t >= until) {
                return;
            }
            if std::fs::write(&tmp, millis(until).to_string())
                .and_then(|_| std::fs::rename(&tmp, &path))
                .is_err()
            {
                let _ = std::fs::remove_file(&tmp);
                tracing::warn!(file = %path.display(), "cannot share Azure's throttling with other processes");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_follow_the_method() {
        assert_eq!(Budget::of_method("GET"), Budget::Reads);
        assert_eq!(Budget::of_method("post"), Budget::Writes);
        assert_eq!(Budget::of_method("PATCH"), Budget::Writes);
    }

    #[test]
    fn remembered_in_process_and_across_processes() {
        let dir = tempfile::tempdir().expect("tmp");
        let a = ThrottleMemory::new(Some(dir.path().to_path_buf()), "sub-1");
        assert_eq!(a.remaining(Budget::Writes), None);
        a.record(Budget::Writes, Duration::from_secs(30));
        let left = a.remaining(Budget::Writes).expect("throttled");
        assert!(left > Duration::from_secs(28) && left <= Duration::from_secs(30));
        assert_eq!(a.remaining(Budget::Reads), None, "reads are another budget");
        // Another process of the same subscription sees it; another subscription does not.
        let b = ThrottleMemory::new(Some(dir.path().to_path_buf()), "sub-1");
        assert!(b.remaining(Budget::Writes).is_some());
        let c = ThrottleMemory::new(Some(dir.path().to_path_buf()), "sub-2");
        assert_eq!(c.remaining(Budget::Writes), None);
        // A shorter wait never shortens a longer one.
        b.record(Budget::Writes, Duration::from_secs(1));
        assert!(a.remaining(Budget::Writes).expect("still") > Duration::from_secs(20));
        // Without a directory it stays in the process.
        let alone = ThrottleMemory::new(None, "sub-1");
        assert_eq!(alone.remaining(Budget::Reads), None);
        alone.record(Budget::Reads, Duration::from_secs(5));
        assert!(alone.remaining(Budget::Reads).is_some());
    }
}
