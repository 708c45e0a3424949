//! ARM writes per disk, bounded whatever the logic above decides and however often the transport
//! retries: every write attempt asks this budget first (the `WriteGate` of flexdisk-azure's
//! transport), and one over it is not sent but deferred. Azure throttles writes per subscription
//! (ARM's request limits, learn.microsoft.com/azure/azure-resource-manager/management/
//! request-limits-and-throttling) and kube-controller-manager's attaches share that budget: one
//! claim whose growth Azure refused, tried again at once, once spent an hour's writes in 12 s.
//!
//! Two bounds. Per disk, [`LIMITS`]: at most 5 writes in 30 s and 20 an hour. And across all
//! disks, [`REPEAT_LIMITS`] on repeats — a write of a disk by the same method as one within the
//! last hour (a retry, after a failure or a refusal): many claims failing the same way (a quota,
//! a missing role) cannot together take more than that, while first writes (new disks, their
//! deletion, a growth) are never held back by other disks' failures.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most this many writes per disk within each window.
pub const LIMITS: [(usize, Duration); 2] = [
    (5, Duration::from_secs(30)),
    (20, Duration::from_secs(3600)),
];

/// At most this many repeated writes, all disks together, within each window.
pub const REPEAT_LIMITS: [(usize, Duration); 2] = [
    (30, Duration::from_secs(60)),
    (300, Duration::from_secs(3600)),
];

const HOUR: Duration = Duration::from_secs(3600);

/// How long until one more write keeps within `limits`, given the times of earlier writes
/// (oldest first); `None`: it may go now.
pub fn wait_for<'a>(
    history: impl Iterator<Item = &'a Instant> + Clone,
    now: Instant,
    limits: &[(usize, Duration)],
) -> Option<Duration> {
    limits
        .iter()
        .filter_map(|&(n, window)| {
            // The n-th most recent write within the window must leave it first.
            let recent: Vec<&Instant> = history
                .clone()
                .filter(|t| now.duration_since(**t) < window)
                .collect();
            (recent.len() >= n).then(|| {
                let oldest_counted = *recent[recent.len() - n];
                window.saturating_sub(now.duration_since(oldest_counted))
            })
        })
        .max()
}

/// The disk a write goes to (`…/disks/<name>`, lower case), if it is a disk's.
pub fn disk_of(path: &str) -> Option<String> {
    let mut segments = path.split('/');
    segments.find(|s| s.eq_ignore_ascii_case("disks"))?;
    segments
        .next()
        .filter(|n| !n.is_empty())
        .map(str::to_ascii_lowercase)
}

#[derive(Default)]
struct Writes {
    /// Per disk: when, and by which method.
    disks: HashMap<String, VecDeque<(Instant, String)>>,
    repeats: VecDeque<Instant>,
}

#[derive(Default)]
pub struct WriteBudget {
    writes: Mutex<Writes>,
}

impl WriteBudget {
    /// Takes one write (`method` to `path`) if the budget allows it; otherwise how long to wait.
    /// Writes to anything but a disk are not counted.
    pub fn take(&self, method: &str, path: &str) -> Result<(), Duration> {
        let Some(disk) = disk_of(path) else {
            return Ok(());
        };
        let now = Instant::now();
        let mut w = self.writes.lock().unwrap_or_else(|p| p.into_inner());
        // Only what the longest window still counts is remembered.
        w.disks.retain(|_, h| {
            while h
                .front()
                .is_some_and(|(t, _)| now.duration_since(*t) >= HOUR)
            {
                h.pop_front();
            }
            !h.is_empty()
        });
        while w
            .repeats
            .front()
            .is_some_and(|t| now.duration_since(*t) >= HOUR)
        {
            w.repeats.pop_front();
        }
        let history = w.disks.get(&disk);
        let mut wait = history.and_then(|h| wait_for(h.iter().map(|(t, _)| t), now, &LIMITS));
        let repeat = history.is_some_and(|h| h.iter().any(|(_, m)| m == method));
        if repeat {
            wait = wait.max(wait_for(w.repeats.iter(), now, &REPEAT_LIMITS));
        }
        if let Some(wait) = wait {
            return Err(wait.max(Duration::from_millis(100)));
        }
        if repeat {
            w.repeats.push_back(now);
        }
        w.disks
            .entry(disk)
            .or_default()
            .push_back((now, method.to_string()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_in_thirty_seconds_and_twenty_in_an_hour() {
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let mut h: Vec<Instant> = Vec::new();
        // A write every second: the sixth waits until the first leaves the 30 s window.
        for s in 0..5 {
            assert_eq!(wait_for(h.iter(), at(s), &LIMITS), None, "write {s}");
            h.push(at(s));
        }
        assert_eq!(
            wait_for(h.iter(), at(5), &LIMITS),
            Some(Duration::from_secs(25))
        );
        assert_eq!(wait_for(h.iter(), at(30), &LIMITS), None);
        // Taking every write the 30 s limit allows, the hour's 20 are spent in under 2 minutes;
        // the 21st waits for the first to be an hour old.
        let mut h: Vec<Instant> = Vec::new();
        let mut t = at(0);
        while h.len() < 20 {
            match wait_for(h.iter(), t, &LIMITS) {
                None => h.push(t),
                Some(w) => t += w,
            }
        }
        assert!(t < at(120), "{:?}", t - at(0));
        assert_eq!(wait_for(h.iter(), t, &LIMITS), Some(at(3600) - t));
        assert_eq!(wait_for(h.iter(), at(3600), &LIMITS), None);
    }

    const DISK: &str = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/disks";

    #[test]
    fn disks_have_budgets_of_their_own_and_names_ignore_case() {
        let b = WriteBudget::default();
        for _ in 0..5 {
            b.take("PATCH", &format!("{DISK}/pvc-a"))
                .expect("within budget");
        }
        let wait = b
            .take("PATCH", &format!("{DISK}/PVC-A"))
            .expect_err("over budget");
        assert!(wait > Duration::from_secs(29) && wait <= Duration::from_secs(30));
        b.take("PUT", &format!("{DISK}/pvc-b"))
            .expect("another disk");
        b.take("POST", "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm/attachDetachDataDisks")
            .expect("not a disk's: not counted");
        assert_eq!(disk_of(&format!("{DISK}/X")), Some("x".into()));
        assert_eq!(disk_of("/subscriptions/s/providers/y"), None);
    }

    #[test]
    fn repeats_across_disks_share_one_bound_and_first_writes_never_wait_for_them() {
        let b = WriteBudget::default();
        // 40 disks each refused once and tried again: the repeats, all together, stop at 30 a
        // minute.
        let mut held = 0;
        for i in 0..40 {
            let disk = format!("{DISK}/pvc-{i}");
            b.take("PUT", &disk).expect("a first write");
            if b.take("PUT", &disk).is_err() {
                held += 1;
            }
        }
        assert_eq!(held, 10, "repeats over 30 in a minute are held back");
        // A new disk's first write, and another method on a disk already written, still go.
        b.take("PUT", &format!("{DISK}/fresh"))
            .expect("a first write goes");
        b.take("DELETE", &format!("{DISK}/pvc-0"))
            .expect("a deletion after a create");
    }
}
