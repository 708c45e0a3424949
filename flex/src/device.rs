//! Finding the block device of a LUN on this node: `/dev/disk/azure/scsi1/lun<N>` when udev made
//! it, else the SCSI devices in sysfs (vendor `Msft`, model `Virtual Disk`, never the OS or resource
//! disk), after asking the SCSI hosts to rescan. Waiting is driven by inotify, bounded.

use crate::settings::Settings;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Asks every SCSI host to scan for new devices (as Azure's agent does after an attach).
pub fn rescan(s: &Settings) {
    if let Ok(hosts) = std::fs::read_dir(s.host("sys/class/scsi_host")) {
        for h in hosts.flatten() {
            let _ = std::fs::write(h.path().join("scan"), "- - -");
        }
    }
}

fn udev_link(s: &Settings, lun: u32) -> Option<PathBuf> {
    std::fs::canonicalize(s.host(&format!("dev/disk/azure/scsi1/lun{lun}"))).ok()
}

fn read_trimmed(p: &Path) -> String {
    std::fs::read_to_string(p)
        .map(|v| v.trim().to_string())
        .unwrap_or_default()
}

/// The sysfs way: `H:C:T:L` with L = lun on a data-disk host (the OS and resource disks sit on
/// hosts 0 and 1).
fn sysfs_device(s: &Settings, lun: u32) -> Option<PathBuf> {
    let dir = s.host("sys/bus/scsi/devices");
    for entry in std::fs::read_dir(&dir).ok()?.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let parts: Vec<&str> = name.split(':').collect();
        if parts.len() != 4
            || parts[3].parse::<u32>().ok() != Some(lun)
            || matches!(parts[0], "0" | "1")
        {
            continue;
        }
        let path = entry.path();
        if read_trimmed(&path.join("vendor")) != "Msft"
            || read_trimmed(&path.join("model")) != "Virtual Disk"
        {
            continue;
        }
        let block = std::fs::read_dir(path.join("block"))
            .ok()?
            .flatten()
            .next()?;
        let dev = s.host(&format!("dev/{}", block.file_name().to_string_lossy()));
        if dev.exists() {
            return Some(dev);
        }
    }
    None
}

/// The LUN of the data disk whose block device has number `rdev`: from the SCSI address the
/// kernel gives the device in sysfs (`H:C:T:L`), else from udev's links when exactly one leads to
/// it. The links are what a stale udev state gets wrong, so they are never preferred to the
/// kernel, and two links to one device tell nothing.
pub fn lun_of(s: &Settings, rdev: u64) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let majmin = format!(
        "{}:{}",
        nix::sys::stat::major(rdev),
        nix::sys::stat::minor(rdev)
    );
    let by_kernel = std::fs::read_dir(s.host("sys/bus/scsi/devices"))
        .ok()
        .and_then(|entries| {
            entries.flatten().find_map(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                let parts: Vec<&str> = name.split(':').collect();
                if parts.len() != 4 || matches!(parts[0], "0" | "1") {
                    return None;
                }
                let block = std::fs::read_dir(e.path().join("block"))
                    .ok()?
                    .flatten()
                    .next()?;
                (read_trimmed(&block.path().join("dev")) == majmin)
                    .then(|| parts[3].parse().ok())
                    .flatten()
            })
        });
    by_kernel.or_else(|| {
        let links: Vec<u32> = std::fs::read_dir(s.host("dev/disk/azure/scsi1"))
            .ok()?
            .flatten()
            .filter_map(|e| {
                let lun = e.file_name().to_str()?.strip_prefix("lun")?.parse().ok()?;
                (std::fs::metadata(e.path()).ok()?.rdev() == rdev).then_some(lun)
            })
            .collect();
        match links.as_slice() {
            [lun] => Some(*lun),
            _ => None,
        }
    })
}

pub fn find(s: &Settings, lun: u32) -> Option<PathBuf> {
    udev_link(s, lun)
        .filter(|p| p.exists())
        .or_else(|| sysfs_device(s, lun))
}

/// Waits for the LUN's device; `Err` with what was tried when it does not come in time.
pub fn wait_for(s: &Settings, lun: u32) -> Result<PathBuf, String> {
    rescan(s);
    let deadline = Instant::now() + s.device_wait;
    let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
        .map_err(|e| format!("inotify: {e}"))?;
    let flags = AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO | AddWatchFlags::IN_ATTRIB;
    // udev may create `scsi1/` (even `azure/`) with the first disk: a directory that appears is
    // watched from then on, so the link made inside it wakes us too.
    const DIRS: [&str; 4] = [
        "dev/disk/azure/scsi1",
        "dev/disk/azure",
        "dev",
        "sys/bus/scsi/devices",
    ];
    let mut unwatched: Vec<&str> = DIRS.to_vec();
    let watch_new = |unwatched: &mut Vec<&str>| {
        unwatched.retain(|dir| inotify.add_watch(&s.host(dir), flags).is_err());
    };
    watch_new(&mut unwatched);
    loop {
        if let Some(dev) = find(s, lun) {
            return Ok(dev);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "no device appeared for LUN {lun} within {}s (looked at {} and {})",
                s.device_wait.as_secs(),
                s.host(&format!("dev/disk/azure/scsi1/lun{lun}")).display(),
                s.host("sys/bus/scsi/devices").display()
            ));
        }
        // Wake on a change in the watched trees, or every second at most (nothing is lost
        // between the look above and the poll: events queue in the inotify descriptor).
        let nothing_watched = unwatched.len() == DIRS.len();
        let ms = left
            .as_millis()
            .min(if nothing_watched { 100 } else { 1000 }) as u16;
        let mut fds = [PollFd::new(inotify.as_fd(), PollFlags::POLLIN)];
        let _ = poll(&mut fds, PollTimeout::from(ms));
        let _ = inotify.read_events();
        watch_new(&mut unwatched);
    }
}
