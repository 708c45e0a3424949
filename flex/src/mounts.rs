//! The kernel side: what is mounted where, mkfs, mount and unmount, and reading a device's head.

use crate::error::{Error, Result};
use crate::signatures::{from_blkid, probe, Found, PROBE_BYTES};
use nix::fcntl::{Flock, FlockArg};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// What is mounted at `dir`: the device number and filesystem type.
pub fn mounted_at(dir: &Path) -> Option<(u64, String)> {
    let dir = std::fs::canonicalize(dir).ok()?;
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().rev().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let point = fields
            .get(4)?
            .replace("\\040", " ")
            .replace("\\011", "\t")
            .replace("\\134", "\\");
        if Path::new(&point) != dir {
            return None;
        }
        let (major, minor) = fields.get(2)?.split_once(':')?;
        let dev = nix::sys::stat::makedev(major.parse().ok()?, minor.parse().ok()?);
        let sep = fields.iter().position(|f| *f == "-")?;
        Some((dev, fields.get(sep + 1)?.to_string()))
    })
}

/// The device number of a block device file.
pub fn device_number(device: &Path) -> Result<u64> {
    let meta = std::fs::metadata(device).map_err(Error::file(device))?;
    if !meta.file_type().is_block_device() {
        return Err(Error::Device(format!(
            "{} is not a block device",
            device.display()
        )));
    }
    Ok(meta.rdev())
}

/// The type of the filesystem mounted from device `rdev` anywhere on this host, if any.
pub fn mounted_fs_of(rdev: u64) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want = format!(
        "{}:{}",
        nix::sys::stat::major(rdev),
        nix::sys::stat::minor(rdev)
    );
    info.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        if fields.get(2) != Some(&want.as_str()) {
            return None;
        }
        let sep = fields.iter().position(|f| *f == "-")?;
        Some(fields.get(sep + 1)?.to_string())
    })
}

/// Takes the device's BSD lock, the one systemd's udev and other careful tools take before
/// touching a block device (systemd.io/BLOCK_DEVICE_LOCKING): held from before the probe until
/// the filesystem is made and mounted, it keeps another `mountdevice` of this host (and udev's
/// probing) away from a device that is being formatted. Waits up to `wait` for another holder.
pub fn lock_device(device: &Path, wait: Duration) -> Result<Flock<File>> {
    let deadline = Instant::now() + wait;
    loop {
        let file = File::open(device).map_err(Error::file(device))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(lock),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err((_, e)) => {
                return Err(Error::Kernel(format!(
                    "{} stays locked by another program ({e}); it is being set up elsewhere — kubelet retries",
                    device.display()
                )))
            }
        }
    }
}

/// Opens the device exclusively (`O_EXCL` on a block device: the kernel refuses while it is
/// mounted or another program holds it so, and refuses them while we hold it). `None`: busy.
pub fn open_exclusive(device: &Path) -> Result<Option<File>> {
    match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_EXCL)
        .open(device)
    {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.raw_os_error() == Some(nix::libc::EBUSY) => Ok(None),
        Err(e) => Err(Error::file(device)(e)),
    }
}

/// What is on the device, by our own probe (through `f`, the device opened by the caller) and
/// by `blkid -p`: either finding something means "not blank". Our probe reads the first
/// [`PROBE_BYTES`]; signatures elsewhere (RAID metadata at the end of the disk, backup
/// superblocks) only blkid sees, so without blkid a device is never taken for blank: `Err`, and
/// nothing is formatted (`doctor` reports blkid missing).
pub fn inspect(f: &mut File, device: &Path) -> Result<Option<Found>> {
    let mut buf = vec![0u8; PROBE_BYTES];
    let mut read = 0;
    while read < buf.len() {
        match f.read(&mut buf[read..]) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(e) => return Err(Error::file(device)(e)),
        }
    }
    if let Some(found) = probe(&buf[..read]) {
        return Ok(Some(found));
    }
    match Command::new("blkid")
        .args(["-p", "-o", "export"])
        .arg(device)
        .output()
    {
        Ok(out) if out.status.success() => Ok(from_blkid(&String::from_utf8_lossy(&out.stdout))),
        // 2: nothing found.
        Ok(out) if out.status.code() == Some(2) => Ok(None),
        Ok(out) => Err(Error::Tool(format!(
            "blkid -p {} failed: {}",
            device.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))),
        Err(e) => Err(Error::Tool(format!(
            "cannot run blkid ({e}): {} looks blank in its first {} KiB, but only blkid -p sees every \
             signature (RAID metadata at the end of a disk, for one), so flexdisk does not format it; \
             install util-linux's blkid on the node",
            device.display(),
            PROBE_BYTES / 1024
        ))),
    }
}

/// Makes the filesystem with fast options. mkfs opens the device exclusively itself, so ours is
/// closed before; the device's lock (`lock_device`) stays held. Nothing here is a second guard:
/// `mkfs.ext4` reformats an existing filesystem without asking when stdin is not a terminal
/// (`mkfs.xfs` and `mkfs.btrfs` refuse one without `-f`), so the probe before is the guard.
pub fn mkfs(device: &Path, fs_type: &str) -> Result<()> {
    let mut cmd = match fs_type {
        "ext4" | "ext3" => {
            let mut c = Command::new(format!("mkfs.{fs_type}"));
            c.args(["-q", "-E", "lazy_itable_init=1,lazy_journal_init=1"]);
            c
        }
        "xfs" => {
            let mut c = Command::new("mkfs.xfs");
            c.arg("-q");
            c
        }
        "btrfs" => {
            let mut c = Command::new("mkfs.btrfs");
            c.arg("-q");
            c
        }
        other => return Err(Error::Tool(format!("cannot make a {other} filesystem"))),
    };
    let out = cmd
        .arg(device)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| {
            Error::Tool(format!(
                "cannot run mkfs.{fs_type} ({e}); install its package on the node"
            ))
        })?;
    if !out.status.success() {
        return Err(Error::Tool(format!(
            "mkfs.{fs_type} {} failed: {}",
            device.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

pub fn mount_device(
    device: &Path,
    dir: &Path,
    fs_type: &str,
    read_only: bool,
    options: &[String],
) -> Result<()> {
    let mut flags = MsFlags::empty();
    if read_only {
        flags |= MsFlags::MS_RDONLY;
    }
    let mut data = Vec::new();
    for o in options {
        match o.as_str() {
            "ro" => flags |= MsFlags::MS_RDONLY,
            "rw" | "defaults" => {}
            "noatime" => flags |= MsFlags::MS_NOATIME,
            "nodiratime" => flags |= MsFlags::MS_NODIRATIME,
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            "sync" => flags |= MsFlags::MS_SYNCHRONOUS,
            other => data.push(other.to_string()),
        }
    }
    // A clone of an XFS volume keeps its source's UUID and XFS refuses a second filesystem with a
    // known UUID on one host, so a clone could never be used beside its source (container-storage-
    // interface/spec#482; CSI drivers mount XFS with `nouuid` for this reason).
    if fs_type == "xfs" && !data.iter().any(|d| d == "nouuid") {
        data.push("nouuid".to_string());
    }
    if flags.contains(MsFlags::MS_RDONLY) {
        // A read-only mount must not write either: ext4 and xfs replay their journal at mount
        // even read-only, which on a disk another VM writes would corrupt it.
        let quiet = match fs_type {
            "ext4" | "ext3" => Some("noload"),
            "xfs" => Some("norecovery"),
            "btrfs" => Some("rescue=nologreplay"),
            _ => None,
        };
        if let Some(q) = quiet.filter(|q| !data.iter().any(|d| d == q)) {
            data.push(q.to_string());
        }
    }
    let data = data.join(",");
    mount(
        Some(device),
        dir,
        Some(fs_type),
        flags,
        (!data.is_empty()).then_some(data.as_str()),
    )
    .map_err(|e| {
        Error::Kernel(format!(
            "mount {} on {} ({fs_type}): {e}",
            device.display(),
            dir.display()
        ))
    })
}

/// Unmounts; "not mounted" is success.
pub fn unmount(dir: &Path) -> Result<()> {
    match umount2(dir, MntFlags::empty()) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(Error::Kernel(format!("unmount {}: {e}", dir.display()))),
    }
}

/// Grows the filesystem to the device's (new) size, online: the device is asked to re-read its
/// capacity first.
pub fn grow_filesystem(
    s: &crate::settings::Settings,
    device: &Path,
    dir: &Path,
    fs_type: &str,
    new_bytes: u64,
) -> Result<String> {
    // A device that cannot be rescanned may still show the size already (attached after the
    // growth): the wait below decides, and its error says what the rescan found.
    let rescanned = crate::device::rescan_capacity(s, device);
    match &rescanned {
        Ok(entry) => tracing::info!(device = %device.display(), "rescanned {}", entry.display()),
        Err(e) => tracing::warn!(device = %device.display(), "no rescan: {e}"),
    }
    // The device shows its new size a moment after the rescan: growing before that grows nothing,
    // yet kubelet would record the claim as grown and never ask again. Wait for it, or fail so
    // that kubelet asks again.
    let size = || -> Option<u64> {
        use std::io::Seek;
        std::fs::File::open(device)
            .and_then(|mut f| f.seek(std::io::SeekFrom::End(0)))
            .ok()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while size().is_some_and(|b| b < new_bytes) {
        if std::time::Instant::now() > deadline {
            return Err(Error::Device(format!(
                "{} ({}) shows {} bytes, not yet the {new_bytes} the volume was grown to ({}); tried again later",
                device.display(),
                std::fs::canonicalize(device)
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|e| e.to_string()),
                size().unwrap_or(0),
                match &rescanned {
                    Ok(entry) => format!("rescanned {}", entry.display()),
                    Err(e) => format!("no rescan: {e}"),
                }
            )));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let found = match mounted_at(dir) {
        Some((_, fs)) => fs,
        None => {
            return Err(Error::Kernel(format!(
                "{} is not mounted; kubelet grows the filesystem of a mounted volume",
                dir.display()
            )))
        }
    };
    let fs = if found.is_empty() {
        fs_type.to_string()
    } else {
        found
    };
    let (program, args): (&str, Vec<String>) = match fs.as_str() {
        "ext4" | "ext3" | "ext2" => ("resize2fs", vec![device.display().to_string()]),
        "xfs" => ("xfs_growfs", vec![dir.display().to_string()]),
        "btrfs" => (
            "btrfs",
            vec![
                "filesystem".into(),
                "resize".into(),
                "max".into(),
                dir.display().to_string(),
            ],
        ),
        other => return Err(Error::Tool(format!("cannot grow a {other} filesystem"))),
    };
    let out = Command::new(program)
        .args(&args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| {
            Error::Tool(format!(
                "cannot run {program} ({e}); install it on the node"
            ))
        })?;
    if !out.status.success() {
        let why = String::from_utf8_lossy(&out.stderr).trim().to_string();
        let hint = if why.contains("Permission denied") {
            " (an online resize needs CAP_SYS_RESOURCE: run the driver with full root capabilities)"
        } else {
            ""
        };
        return Err(Error::Tool(format!("{program} failed: {why}{hint}")));
    }
    Ok(format!("grew the {fs} filesystem"))
}
