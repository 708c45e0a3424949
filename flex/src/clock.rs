//! Time as the driver's decisions need it.
//!
//! Deadlines shared by the processes of one host (a request's "send by", see `batch`) count on
//! the boot-time clock: it never jumps when the wall clock is stepped (NTP, an operator) and every
//! process of the host reads the same one. Marks that other hosts read (a disk's claim, see
//! `ownership`) can only be wall-clock time.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the host booted (CLOCK_BOOTTIME: monotonic, counts suspend too).
pub fn boot_ms() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(|t| {
            Duration::new(t.tv_sec().max(0) as u64, t.tv_nsec().max(0) as u32).as_millis() as u64
        })
        // Unreachable on Linux; a deadline then only counts from 0.
        .unwrap_or(0)
}

/// Wall-clock seconds since the epoch.
pub fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_time_moves_forward() {
        let a = boot_ms();
        std::thread::sleep(Duration::from_millis(5));
        assert!(boot_ms() >= a + 5);
        assert!(a > 0);
    }
}
