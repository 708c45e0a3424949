//! The bus's guard: a small process (`flexdisk-sim bus-guard`) that outlives the simulator to
//! clear its storage bus — the loop devices over the bus's ports and the FUSE mount — however the
//! simulator ends. A simulator that exits cleanly clears them itself; one that is SIGKILLed
//! cannot, and a FUSE mount whose server died stays behind ("Transport endpoint is not
//! connected"), with loop devices over its files, until someone unmounts and frees them.
//!
//! The guard learns of the simulator's end from its standard input: a pipe whose only writer is
//! the simulator, which the kernel closes when the simulator dies, whatever killed it. It holds
//! an exclusive lock on `<bus>.lock` from before the bus is mounted until it has cleared it, so a
//! simulator restarted on the same state waits for the last one's guard instead of racing it.

use crate::loopdev;
use nix::fcntl::{Flock, FlockArg};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("the bus guard for {0} stopped before it was ready")]
    NotReady(PathBuf),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> GuardError {
    let what = what.into();
    move |source| GuardError::Io { what, source }
}

/// What the guard prints once the previous run's leftovers are cleared and it holds the lock.
const READY: &str = "ready";

fn lock_path(mountpoint: &Path) -> PathBuf {
    mountpoint.with_extension("lock")
}

/// A running guard, started by the simulator before it mounts the bus.
pub struct Guard {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Guard {
    /// Starts `exe bus-guard <mountpoint>` and waits until it has cleared what an earlier run
    /// left at `mountpoint` (waiting first for that run's own guard).
    pub fn start(exe: &Path, mountpoint: &Path) -> Result<Guard, GuardError> {
        let mut child = Command::new(exe)
            .arg("bus-guard")
            .arg(mountpoint)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(io(format!("starting {} bus-guard", exe.display())))?;
        let stdin = child.stdin.take();
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            let _ = BufReader::new(out).read_line(&mut line);
        }
        let guard = Guard { child, stdin };
        if line.trim() != READY {
            // Dropped: its end is waited for.
            return Err(GuardError::NotReady(mountpoint.to_path_buf()));
        }
        Ok(guard)
    }
}

impl Drop for Guard {
    /// The simulator is done with the bus: the guard clears what is left and exits.
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

/// The guard's own life (`flexdisk-sim bus-guard <mountpoint>`).
pub fn run(mountpoint: &Path) -> Result<(), GuardError> {
    // Its own session: a signal to the simulator's process group (Ctrl-C in a terminal, a test
    // killing the group) leaves the guard to clear up after it.
    let _ = nix::unistd::setsid();
    let lock = lock_path(mountpoint);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock)
        .map_err(io(lock.display().to_string()))?;
    let _held = Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| GuardError::Io {
        what: format!("locking {}", lock.display()),
        source: e.into(),
    })?;
    release_leftovers(mountpoint);
    let mut out = std::io::stdout();
    writeln!(out, "{READY}")
        .and_then(|()| out.flush())
        .map_err(io("telling the simulator"))?;
    // Until the simulator's end closes the pipe; what it sends is of no interest.
    let _ = std::io::copy(&mut std::io::stdin().lock().by_ref(), &mut std::io::sink());
    release_leftovers(mountpoint);
    Ok(())
}

/// Frees the loop devices over files under `mountpoint` — a device a node still has mounted is
/// marked autoclear and freed by the kernel at its last unmount — then unmounts it, lazily (a
/// copy of the mount in a node's mount namespace goes with that namespace). Loop devices first:
/// the kernel names a loop device's backing file by its path, which stops leading under
/// `mountpoint` once the mount is detached.
pub fn release_leftovers(mountpoint: &Path) {
    for dev in loopdev::under_dir(mountpoint) {
        if let Err(e) = loopdev::detach(&dev) {
            tracing::warn!("bus {}: {e}", mountpoint.display());
        }
    }
    // Stacked mounts too; EINVAL once it is no mount point.
    while nix::mount::umount2(mountpoint, nix::mount::MntFlags::MNT_DETACH).is_ok() {}
}
