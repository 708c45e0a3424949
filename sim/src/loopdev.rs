//! Loop devices, through util-linux's `losetup` (the workspace forbids `unsafe`, so no ioctls of
//! our own): the block devices the simulated VMs see.

use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    #[error("losetup {args}: {stderr}")]
    Losetup { args: String, stderr: String },
    #[error("losetup {args}: {source}")]
    Run {
        args: String,
        source: std::io::Error,
    },
}

fn losetup(args: &[&str]) -> Result<String, LoopError> {
    let out = Command::new("losetup")
        .args(args)
        .output()
        .map_err(|source| LoopError::Run {
            args: args.join(" "),
            source,
        })?;
    if !out.status.success() {
        return Err(LoopError::Losetup {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A new loop device over `file`, sized as the file is now.
pub fn attach(file: &Path) -> Result<PathBuf, LoopError> {
    let out = losetup(&["--find", "--show", &file.display().to_string()])?;
    Ok(PathBuf::from(out.trim()))
}

/// Frees `dev`; a device still in use (mounted) is only marked autoclear, and the kernel frees it
/// at its last close.
pub fn detach(dev: &Path) -> Result<(), LoopError> {
    losetup(&["--detach", &dev.display().to_string()]).map(drop)
}

/// Makes `dev` take its backing file's current size (`LOOP_SET_CAPACITY`).
pub fn set_capacity(dev: &Path) -> Result<(), LoopError> {
    losetup(&["--set-capacity", &dev.display().to_string()]).map(drop)
}

/// The loop devices over `file`.
pub fn over_file(file: &Path) -> Result<Vec<PathBuf>, LoopError> {
    let out = losetup(&["--associated", &file.display().to_string()])?;
    Ok(devices_in(&out))
}

/// The loop devices whose backing file lies under `dir`, from the kernel's own record
/// (`/sys/block/loopN/loop/backing_file`): no `stat` of the backing file, which on a dead FUSE
/// mount would fail.
pub fn under_dir(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("loop"))
        .filter(|e| {
            std::fs::read_to_string(e.path().join("loop/backing_file"))
                .is_ok_and(|b| Path::new(b.trim_end()).starts_with(dir))
        })
        .map(|e| Path::new("/dev").join(e.file_name()))
        .collect()
}

/// The device names at the start of `losetup` listing lines (`/dev/loop3: [..]: (..)`).
fn devices_in(listing: &str) -> Vec<PathBuf> {
    listing
        .lines()
        .filter_map(|l| l.split(':').next())
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_lines_give_their_devices() {
        let out = "/dev/loop3: [2049]:131 (/s/disks/a.img)\n/dev/loop7: []: (/s/bus/disk-2)\n";
        assert_eq!(
            devices_in(out),
            [PathBuf::from("/dev/loop3"), PathBuf::from("/dev/loop7")]
        );
        assert!(devices_in("").is_empty());
    }
}
