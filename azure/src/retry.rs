//! When to send an ARM request again, and after how long (no I/O here).
//!
//! Throttling (429) and unavailability (503) wait for `Retry-After`; other server errors, resets and
//! timeouts back off exponentially with jitter; a VM busy with another operation is waited for,
//! since Azure runs one operation per VM at a time. Everything is bounded: when the budget is spent
//! the caller gets the last answer, classified.

use crate::error::is_busy;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// First back-off; doubles per retry.
    pub base: Duration,
    /// Longest single back-off.
    pub cap: Duration,
    /// A `Retry-After` longer than this is not waited for: the caller should hear of the
    /// throttling now rather than hang.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 8,
            base: Duration::from_millis(500),
            cap: Duration::from_secs(20),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

/// What one attempt came to.
#[derive(Debug, Clone, Copy)]
pub enum Attempt<'a> {
    /// An HTTP answer that was not a success.
    Status {
        status: u16,
        code: &'a str,
        message: &'a str,
        retry_after: Option<Duration>,
    },
    /// No answer: connection refused or reset, timeout.
    Io,
}

impl RetryPolicy {
    /// The wait before retry number `retries + 1`, or `None` to give up and report. `jitter` is a
    /// random number in [0, 1).
    pub fn decide(&self, retries: u32, attempt: Attempt<'_>, jitter: f64) -> Option<Duration> {
        if retries >= self.max_retries {
            return None;
        }
        let backoff = self.backoff(retries, jitter);
        match attempt {
            Attempt::Io => Some(backoff),
            Attempt::Status {
                status,
                code,
                message,
                retry_after,
            } => {
                // However the answer asks to be retried, a wait past `max_retry_after` is not
                // made: a 5xx or a busy VM with Retry-After of an hour would otherwise hold the
                // caller (and a write planned from an old read) that long.
                let wait = match retry_after {
                    Some(d) if d > self.max_retry_after => return None,
                    Some(d) => d,
                    None => backoff,
                };
                match status {
                    429 | 503 | 408 | 500 | 502 | 504 => Some(wait),
                    _ if is_busy(status, code, message) => Some(wait),
                    _ => None,
                }
            }
        }
    }

    /// "Equal jitter": half the exponential step fixed, half random, so that many clients
    /// throttled together do not come back together.
    fn backoff(&self, retries: u32, jitter: f64) -> Duration {
        let step = self
            .base
            .saturating_mul(1u32 << retries.min(16))
            .min(self.cap);
        step.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
    }
}

/// `Retry-After` as ARM sends it: whole seconds (an HTTP date is accepted too).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when =
        time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc2822).ok()?;
    let secs = (when - time::OffsetDateTime::now_utc()).whole_seconds();
    Some(Duration::from_secs(secs.max(0) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16, code: &'static str, retry_after: Option<u64>) -> Attempt<'static> {
        Attempt::Status {
            status,
            code,
            message: "",
            retry_after: retry_after.map(Duration::from_secs),
        }
    }

    #[test]
    fn throttling_waits_exactly_retry_after() {
        let p = RetryPolicy::default();
        assert_eq!(
            p.decide(0, status(429, "", Some(7)), 0.9),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            p.decide(3, status(503, "", Some(2)), 0.1),
            Some(Duration::from_secs(2))
        );
    }

    #[test]
    fn a_long_retry_after_is_reported_not_waited() {
        let p = RetryPolicy::default();
        assert_eq!(p.decide(0, status(429, "", Some(3600)), 0.5), None);
        assert_eq!(p.decide(0, status(500, "", Some(3600)), 0.5), None);
        assert_eq!(
            p.decide(0, status(500, "", Some(30)), 0.5),
            Some(Duration::from_secs(30))
        );
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let p = RetryPolicy {
            max_retries: 20,
            ..RetryPolicy::default()
        };
        let d = |n, j| p.decide(n, Attempt::Io, j).expect("retry");
        assert_eq!(d(0, 0.0), Duration::from_millis(250));
        assert_eq!(d(0, 1.0), Duration::from_millis(500));
        assert_eq!(d(2, 1.0), Duration::from_millis(2000));
        assert_eq!(d(12, 1.0), Duration::from_secs(20));
        assert_eq!(d(12, 0.0), Duration::from_secs(10));
    }

    #[test]
    fn busy_vm_is_waited_for_but_refusals_are_not_retried() {
        let p = RetryPolicy::default();
        let busy = Attempt::Status {
            status: 409,
            code: "OperationNotAllowed",
            message:
                "Operation on VM 'a' is not allowed since another operation is in progress on it.",
            retry_after: None,
        };
        assert!(p.decide(0, busy, 0.5).is_some());
        let limit = Attempt::Status {
            status: 409,
            code: "OperationNotAllowed",
            message:
                "The maximum number of data disks allowed to be attached to a VM of this size is 4.",
            retry_after: None,
        };
        assert_eq!(p.decide(0, limit, 0.5), None);
        assert_eq!(
            p.decide(0, status(400, "InvalidParameter", None), 0.5),
            None
        );
        assert_eq!(p.decide(0, status(404, "NotFound", None), 0.5), None);
        assert_eq!(
            p.decide(0, status(409, "ConflictingUserInput", None), 0.5),
            None
        );
    }

    #[test]
    fn the_budget_ends_retries() {
        let p = RetryPolicy {
            max_retries: 2,
            ..RetryPolicy::default()
        };
        assert!(p.decide(1, status(500, "", None), 0.5).is_some());
        assert_eq!(p.decide(2, status(500, "", None), 0.5), None);
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after(" 12 "), Some(Duration::from_secs(12)));
        assert_eq!(
            parse_retry_after("Mon, 01 Jan 1990 00:00:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
