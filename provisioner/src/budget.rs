//! ARM writes per disk, bounded whatever the logic above decides. Azure throttles writes per
//! subscription (Compute's "HighCostGet/Put" buckets and ARM's per-subscription write limit,
//! learn.microsoft.com/azure/azure-resource-manager/management/request-limits-and-throttling) and
//! kube-controller-manager's attaches share that budget: one claim whose growth Azure refused,
//! tried again at once, once spent an hour's writes in 12 s. So no disk gets more than
//! [`LIMITS`] writes from this provisioner; a write over budget is not sent but tried again when
//! the budget allows (an `OverBudget` error).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most this many writes per disk within each window.
pub const LIMITS: [(usize, Duration); 2] = [
    (5, Duration::from_secs(30)),
    (20, Duration::from_secs(3600)),
];

/// How long until one more write keeps within `limits`, given the times of earlier writes
/// (oldest first); `None`: it may go now.
pub fn wait_for(
    history: &VecDeque<Instant>,
    now: Instant,
    limits: &[(usize, Duration)],
) -> Option<Duration> {
    limits
        .iter()
        .filter_map(|&(n, window)| {
            // The n-th most recent write within the window must leave it first.
            let recent: Vec<&Instant> = history
                .iter()
                .filter(|t| now.duration_since(**t) < window)
                .collect();
            (recent.len() >= n).then(|| {
                let oldest_counted = *recent[recent.len() - n];
                window.saturating_sub(now.duration_since(oldest_counted))
            })
        })
        .max()
}

#[derive(Default)]
pub struct WriteBudget {
    writes: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl WriteBudget {
    /// Takes one write for `disk` if the budget allows it; otherwise how long to wait.
    pub fn spend(&self, disk: &str) -> Result<(), Duration> {
        let longest = LIMITS.iter().map(|(_, w)| *w).max().unwrap_or_default();
        let now = Instant::now();
        let mut all = self.writes.lock().unwrap_or_else(|p| p.into_inner());
        // Only disks written within the longest window are remembered.
        all.retain(|_, h| {
            while h.front().is_some_and(|t| now.duration_since(*t) >= longest) {
                h.pop_front();
            }
            !h.is_empty()
        });
        let history = all.entry(disk.to_ascii_lowercase()).or_default();
        if let Some(wait) = wait_for(history, now, &LIMITS) {
            return Err(wait.max(Duration::from_millis(100)));
        }
        history.push_back(now);
        Ok(())
    }

    /// Gives back the last write taken for `disk`: the call found, before writing, that there
    /// was nothing to write (a disk still attached that is not to be deleted yet).
    pub fn refund(&self, disk: &str) {
        let mut all = self.writes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = all.get_mut(&disk.to_ascii_lowercase()) {
            h.pop_back();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_in_thirty_seconds_and_twenty_in_an_hour() {
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let mut h = VecDeque::new();
        // A write every second: the sixth waits until the first leaves the 30 s window.
        for s in 0..5 {
            assert_eq!(wait_for(&h, at(s), &LIMITS), None, "write {s}");
            h.push_back(at(s));
        }
        assert_eq!(wait_for(&h, at(5), &LIMITS), Some(Duration::from_secs(25)));
        assert_eq!(wait_for(&h, at(30), &LIMITS), None);
        // Taking every write the 30 s limit allows, the hour's 20 are spent in under 2 minutes;
        // the 21st waits for the first to be an hour old.
        let mut h = VecDeque::new();
        let mut t = at(0);
        let mut sent = 0;
        while sent < 20 {
            match wait_for(&h, t, &LIMITS) {
                None => {
                    h.push_back(t);
                    sent += 1;
                }
                Some(w) => t += w,
            }
        }
        assert!(t < at(120), "{:?}", t - at(0));
        assert_eq!(wait_for(&h, t, &LIMITS), Some(at(3600) - t));
        assert_eq!(wait_for(&h, at(3600), &LIMITS), None);
    }

    #[test]
    fn disks_have_budgets_of_their_own_and_names_ignore_case() {
        let b = WriteBudget::default();
        for _ in 0..5 {
            b.spend("pvc-a").expect("within budget");
        }
        let wait = b.spend("PVC-A").expect_err("over budget");
        assert!(wait > Duration::from_secs(29) && wait <= Duration::from_secs(30));
        b.spend("pvc-b").expect("another disk");
        b.refund("pvc-a");
        b.spend("pvc-a")
            .expect("a refunded write can be taken again");
    }
}
