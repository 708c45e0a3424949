//! Azure's throttling, remembered beyond one request and one process.
//!
//! ARM throttles a subscription with separate budgets for reads and writes and says for how long
//! with `Retry-After` (learn.microsoft.com, "Understand how Azure Resource Manager throttles
//! requests"). kube-controller-manager and kubelet start a fresh driver process for every call: with
//! no memory, each new process would ask again at once and keep the subscription throttled. So the
//! moment until which Azure asked us to stay away is kept per budget, in this process and — when a
//! directory is given — in a file per subscription and budget that every process reads before it
//! sends anything.

//!
//! The moment is bounded and immune to clock steps:
//!
//! - No wait is remembered for longer than [`LONGEST_RETRY_AFTER`], the longest Azure asks for:
//!   ARM's own limits refill within the hour, and the Compute resource provider — the one
//!   flexdisk talks to — throttles by windows of 3 and 30 minutes, its `Retry-After` at most the
//!   rest of a 30-minute window (learn.microsoft.com, "Troubleshooting API throttling errors",
//!   virtual-machines: policies such as `HighCostGet3Min`/`HighCostGet30Min`, an example answer
//!   `Retry-After: 1200`). A longer value (a bad header, a damaged file) is cut to it.
//! - Time is counted on the host's boot-time clock (`/proc/uptime`, which NTP and operators do not
//!   step), tagged with the boot's id (`/proc/sys/kernel/random/boot_id`): a record from before a
//!   reboot is void. Only where neither can be read is the wall clock used, still bounded.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The longest `Retry-After` Azure sends (see the module's documentation).
pub const LONGEST_RETRY_AFTER: Duration = Duration::from_secs(30 * 60);

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

/// A moment every process of the host reads the same way: milliseconds on the boot-time clock of
/// one boot, or (without `/proc`) of the wall clock.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Moment {
    Boot { boot: String, ms: u64 },
    Wall { ms: u64 },
}

/// The host's clock as [`Moment`]s count it.
#[derive(Debug, Clone)]
pub struct HostClock {
    proc_dir: PathBuf,
}

impl HostClock {
    pub fn system() -> HostClock {
        HostClock {
            proc_dir: PathBuf::from("/proc"),
        }
    }

    fn now(&self) -> Moment {
        let boot = std::fs::read_to_string(self.proc_dir.join("sys/kernel/random/boot_id"))
            .ok()
            .map(|b| b.trim().to_string())
            .filter(|b| !b.is_empty() && !b.contains(char::is_whitespace));
        let uptime_ms = std::fs::read_to_string(self.proc_dir.join("uptime"))
            .ok()
            .and_then(|u| u.split_whitespace().next()?.parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(|s| (s * 1000.0) as u64);
        match (boot, uptime_ms) {
            (Some(boot), Some(ms)) => Moment::Boot { boot, ms },
            _ => Moment::Wall { ms: wall_ms() },
        }
    }
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

impl Moment {
    fn plus(&self, d: Duration) -> Moment {
        let add = |ms: u64| ms.saturating_add(d.as_millis() as u64);
        match self {
            Moment::Boot { boot, ms } => Moment::Boot {
                boot: boot.clone(),
                ms: add(*ms),
            },
            Moment::Wall { ms } => Moment::Wall { ms: add(*ms) },
        }
    }

    /// How long from `now` until this moment, bounded by [`LONGEST_RETRY_AFTER`]; `None` when it
    /// is past or of another boot. A wall-clock moment (a host without `/proc`, a file of an
    /// older flexdisk) is compared with the wall clock.
    fn left(&self, now: &Moment) -> Option<Duration> {
        let ms = match (self, now) {
            (Moment::Boot { boot: b, ms: until }, Moment::Boot { boot, ms }) if b == boot => {
                until.checked_sub(*ms)?
            }
            (Moment::Boot { .. }, _) => return None,
            (Moment::Wall { ms: until }, _) => until.checked_sub(wall_ms())?,
        };
        Some(Duration::from_millis(ms).min(LONGEST_RETRY_AFTER)).filter(|d| !d.is_zero())
    }

    fn encode(&self) -> String {
        match self {
            Moment::Boot { boot, ms } => format!("boot {boot} {ms}"),
            Moment::Wall { ms } => format!("wall {ms}"),
        }
    }

    fn decode(text: &str) -> Option<Moment> {
        let mut parts = text.split_whitespace();
        match parts.next()? {
            "boot" => Some(Moment::Boot {
                boot: parts.next()?.to_string(),
                ms: parts.next()?.parse().ok()?,
            }),
            "wall" => Some(Moment::Wall {
                ms: parts.next()?.parse().ok()?,
            }),
            // A file written before the boot-time clock: wall-clock milliseconds.
            old => Some(Moment::Wall {
                ms: old.parse().ok()?,
            }),
        }
    }
}

#[derive(Debug)]
pub struct ThrottleMemory {
    dir: Option<PathBuf>,
    subscription: String,
    clock: HostClock,
    /// This process's own memory, on the monotonic clock.
    until: Mutex<[Option<Instant>; 2]>,
}

impl ThrottleMemory {
    /// `dir`: where processes share what they learnt (`None`: this process only).
    pub fn new(dir: Option<PathBuf>, subscription: &str) -> ThrottleMemory {
        ThrottleMemory::with_clock(dir, subscription, HostClock::system())
    }

    /// With the clock of another `/proc` (tests).
    pub fn with_clock(
        dir: Option<PathBuf>,
        subscription: &str,
        clock: HostClock,
    ) -> ThrottleMemory {
        ThrottleMemory {
            dir,
            subscription: subscription.to_string(),
            clock,
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

    fn read_file(path: &Path) -> Option<Moment> {
        Moment::decode(&std::fs::read_to_string(path).ok()?)
    }

    /// How long callers should still stay away from this budget, if at all (never longer than
    /// [`LONGEST_RETRY_AFTER`]).
    pub fn remaining(&self, budget: Budget) -> Option<Duration> {
        let mine = self.until.lock().unwrap_or_else(|e| e.into_inner())[budget.index()]
            .and_then(|u| u.checked_duration_since(Instant::now()))
            .filter(|d| !d.is_zero());
        let now = self.clock.now();
        let shared = self
            .file(budget)
            .and_then(|p| Self::read_file(&p))
            .and_then(|m| m.left(&now));
        mine.max(shared).map(|d| d.min(LONGEST_RETRY_AFTER))
    }

    /// Azure asked to stay away from `budget` for `wait` (at most [`LONGEST_RETRY_AFTER`] is
    /// remembered).
    pub fn record(&self, budget: Budget, wait: Duration) {
        let wait = wait.min(LONGEST_RETRY_AFTER);
        {
            let until = Instant::now() + wait;
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
        let now = self.clock.now();
        let until = now.plus(wait);
        // Write then rename: a reader sees the old moment or the new one, never half a record.
        // Another process may write a shorter wait between our look and our rename; looking
        // again after it settles that (a later moment always wins within a few rounds).
        let tmp = path.with_extension(format!("{}.{}.tmp", budget.name(), std::process::id()));
        for _ in 0..3 {
            let there = Self::read_file(&path).and_then(|m| m.left(&now));
            if there.is_some_and(|t| t >= wait) {
                return;
            }
            if std::fs::write(&tmp, until.encode())
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

    /// A `/proc` whose uptime and boot id the test sets.
    fn fake_proc(dir: &Path, boot: &str, uptime_secs: f64) -> HostClock {
        std::fs::create_dir_all(dir.join("sys/kernel/random")).expect("dirs");
        std::fs::write(dir.join("sys/kernel/random/boot_id"), format!("{boot}\n")).expect("boot");
        std::fs::write(dir.join("uptime"), format!("{uptime_secs:.2} 1.00\n")).expect("uptime");
        HostClock {
            proc_dir: dir.to_path_buf(),
        }
    }

    #[test]
    fn never_longer_than_azure_asks() {
        let dir = tempfile::tempdir().expect("tmp");
        let shared = dir.path().join("throttle");
        let a = ThrottleMemory::new(Some(shared.clone()), "sub-1");
        // A day asked for (a bad header): half an hour remembered, here and in other processes.
        a.record(Budget::Writes, Duration::from_secs(86_400));
        assert!(a.remaining(Budget::Writes).expect("throttled") <= LONGEST_RETRY_AFTER);
        let b = ThrottleMemory::new(Some(shared.clone()), "sub-1");
        assert!(b.remaining(Budget::Writes).expect("shared") <= LONGEST_RETRY_AFTER);
        // A record a day ahead on the wall clock (written by an old version, or with the clock
        // stepped back since): bounded too.
        let day_ahead = SystemTime::now() + Duration::from_secs(86_400);
        let ms = day_ahead
            .duration_since(UNIX_EPOCH)
            .expect("epoch")
            .as_millis();
        std::fs::write(shared.join("sub-2.reads"), ms.to_string()).expect("write");
        let c = ThrottleMemory::new(Some(shared), "sub-2");
        let left = c.remaining(Budget::Reads).expect("remembered");
        assert!(left <= LONGEST_RETRY_AFTER, "{left:?}");
    }

    #[test]
    fn counted_on_the_boot_clock_and_forgotten_with_the_boot() {
        let dir = tempfile::tempdir().expect("tmp");
        let shared = dir.path().join("throttle");
        let proc_dir = dir.path().join("proc");
        let at = |boot: &str, uptime: f64| {
            ThrottleMemory::with_clock(
                Some(shared.clone()),
                "sub-1",
                fake_proc(&proc_dir, boot, uptime),
            )
        };
        at("boot-1", 100.0).record(Budget::Writes, Duration::from_secs(30));
        // The wall clock plays no part: 10 s of uptime later, 20 s are left, whatever the date.
        let left = at("boot-1", 110.0).remaining(Budget::Writes).expect("left");
        assert_eq!(left, Duration::from_secs(20));
        assert_eq!(at("boot-1", 131.0).remaining(Budget::Writes), None, "over");
        // After a reboot the record is void (uptime started again from 0).
        assert_eq!(at("boot-2", 105.0).remaining(Budget::Writes), None);
        // A record on another boot is replaced, not compared.
        at("boot-2", 5.0).record(Budget::Writes, Duration::from_secs(3));
        assert_eq!(
            at("boot-2", 6.0).remaining(Budget::Writes),
            Some(Duration::from_secs(2))
        );
    }
}
