//! ARM's per-subscription read and write budgets: a fixed window refilled whole.

use crate::world::Throttle;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct Throttler {
    inner: Mutex<Inner>,
}

struct Inner {
    budget: Throttle,
    window_start: Instant,
    reads: u32,
    writes: u32,
}

#[derive(Debug, PartialEq)]
pub struct Verdict {
    pub allowed: bool,
    pub remaining_reads: u32,
    pub remaining_writes: u32,
    /// Seconds until the window refills (what `Retry-After` says when refused).
    pub retry_after: u64,
}

impl Throttler {
    pub fn new(budget: Throttle) -> Throttler {
        Throttler {
            inner: Mutex::new(Inner {
                budget,
                window_start: Instant::now(),
                reads: 0,
                writes: 0,
            }),
        }
    }

    pub fn set(&self, budget: Throttle) {
        let mut i = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        i.budget = budget;
        i.window_start = Instant::now();
        i.reads = 0;
        i.writes = 0;
    }

    pub fn budget(&self) -> Throttle {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .budget
            .clone()
    }

    pub fn take(&self, write: bool) -> Verdict {
        self.take_at(write, Instant::now())
    }

    fn take_at(&self, write: bool, now: Instant) -> Verdict {
        let mut i = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let window = Duration::from_secs(i.budget.window_secs.max(1));
        if now.duration_since(i.window_start) >= window {
            i.window_start = now;
            i.reads = 0;
            i.writes = 0;
        }
        let (used, limit) = if write {
            (i.writes, i.budget.writes)
        } else {
            (i.reads, i.budget.reads)
        };
        let allowed = used < limit;
        if allowed {
            if write {
                i.writes += 1;
            } else {
                i.reads += 1;
            }
        }
        let left = window.saturating_sub(now.duration_since(i.window_start));
        Verdict {
            allowed,
            remaining_reads: i.budget.reads.saturating_sub(i.reads),
            remaining_writes: i.budget.writes.saturating_sub(i.writes),
            retry_after: left.as_secs() + u64::from(left.subsec_nanos() > 0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_past_the_budget_until_the_window_turns() {
        let t = Throttler::new(Throttle {
            reads: 2,
            writes: 1,
            window_secs: 10,
        });
        let start = Instant::now();
        assert!(t.take_at(true, start).allowed);
        let refused = t.take_at(true, start + Duration::from_secs(3));
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after, 7);
        assert_eq!(refused.remaining_writes, 0);
        assert!(
            t.take_at(false, start).allowed,
            "reads have their own budget"
        );
        assert!(t.take_at(true, start + Duration::from_secs(10)).allowed);
    }
}
