//! The storage path between the simulated VMs and their disks, served through FUSE, so that it
//! fails the way Azure's does.
//!
//! Each attachment of a disk to a VM is a *port*: a file `disk-<serial>` on the bus mount (under
//! the state directory) whose reads and writes go to the disk's sparse file, and over which the
//! node's loop device is made. When Azure detaches the disk the port is cut: from then on every
//! read, write and flush of it answers EIO, so a filesystem still mounted on the node gets I/O
//! errors, as a Linux guest does when Hyper-V takes the LUN away (storvsc answers the I/O with
//! `DID_NO_CONNECT` and removes the SCSI device: `storvsc_remove_lun` for
//! `SRB_STATUS_INVALID_LUN`, drivers/scsi/storvsc_drv.c). A loop device over the sparse file
//! itself would only be marked autoclear, and its filesystem would go on working. A new
//! attachment is a new port and a new loop device, so a stale mount never reaches a disk attached
//! again.
//!
//! A disk grown by Azure keeps its old size on the node until the guest rescans it (Microsoft
//! Learn, "Expand virtual hard disks on a Linux VM": after a live resize the guest writes `1` to
//! the SCSI device's `rescan` attribute in sysfs, whose handler, `store_rescan_field` in
//! drivers/scsi/scsi_sysfs.c, re-reads the capacity before the write returns). Each port has a
//! control file `rescan-<serial>` that the node's sysfs entry of that SCSI device links to; a
//! write to it makes the loop device take the disk's current size, and returns once it has. A
//! Linux guest also rescans by itself when an I/O meets Hyper-V's "capacity data has changed"
//! unit attention (`storvsc_device_scan`, same file); the bus never does, the stricter case: a
//! driver that forgot the rescan is caught.
//!
//! Ports are opened with `FOPEN_DIRECT_IO`: nothing the node wrote lingers in a page cache of the
//! bus, so a cut is seen by the very next I/O.

use crate::bus_guard::{Guard, GuardError};
use crate::loopdev;
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyWrite,
    Request, WriteFlags,
};
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Guard(#[from] GuardError),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BusError {
    let what = what.into();
    move |source| BusError::Io { what, source }
}

/// One attachment of a disk to a VM.
struct Port {
    node: String,
    lun: i64,
    /// The disk's sparse file while attached; `None` once cut.
    disk: RwLock<Option<File>>,
    /// The node's loop device over this port, once made.
    loop_device: Mutex<Option<PathBuf>>,
}

impl Port {
    fn is_cut(&self) -> bool {
        self.disk
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_none()
    }

    /// Runs `f` on the disk's file, or answers EIO when the port is cut. The read lock is held for
    /// the whole I/O, so that once `cut` returns no I/O reaches the disk any more.
    fn with_disk<T>(&self, f: impl FnOnce(&File) -> std::io::Result<T>) -> Result<T, Errno> {
        let disk = self.disk.read().unwrap_or_else(|e| e.into_inner());
        match disk.as_ref() {
            Some(file) => f(file).map_err(Errno::from),
            None => Err(Errno::EIO),
        }
    }
}

/// What a port is called on the bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    Root,
    Data(u64),
    Rescan(u64),
}

impl Entry {
    fn from_ino(ino: u64) -> Option<Entry> {
        match ino {
            1 => Some(Entry::Root),
            n if n >= 2 && n % 2 == 0 => Some(Entry::Data(n / 2)),
            n if n >= 3 => Some(Entry::Rescan(n / 2)),
            _ => None,
        }
    }

    fn ino(self) -> u64 {
        match self {
            Entry::Root => 1,
            Entry::Data(s) => 2 * s,
            Entry::Rescan(s) => 2 * s + 1,
        }
    }

    fn from_name(name: &str) -> Option<Entry> {
        let serial = |rest: &str| {
            rest.parse::<u64>()
                .ok()
                .filter(|s| *s >= 1 && rest == s.to_string())
        };
        if let Some(rest) = name.strip_prefix("disk-") {
            serial(rest).map(Entry::Data)
        } else if let Some(rest) = name.strip_prefix("rescan-") {
            serial(rest).map(Entry::Rescan)
        } else {
            None
        }
    }

    fn name(self) -> String {
        match self {
            Entry::Root => String::new(),
            Entry::Data(s) => format!("disk-{s}"),
            Entry::Rescan(s) => format!("rescan-{s}"),
        }
    }
}

struct Shared {
    mountpoint: PathBuf,
    ports: RwLock<BTreeMap<u64, Arc<Port>>>,
}

impl Shared {
    fn port(&self, serial: u64) -> Option<Arc<Port>> {
        self.ports
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&serial)
            .cloned()
    }

    /// The port of a name lookups may find: cut ports are gone from the bus's directory, as a
    /// hot-removed disk is from the guest's.
    fn live_port(&self, serial: u64) -> Option<Arc<Port>> {
        self.port(serial).filter(|p| !p.is_cut())
    }

    fn attr(&self, entry: Entry) -> Result<FileAttr, Errno> {
        let (kind, perm, size) = match entry {
            Entry::Root => (FileType::Directory, 0o755, 0),
            Entry::Data(s) => {
                let port = self.port(s).ok_or(Errno::ENOENT)?;
                (
                    FileType::RegularFile,
                    0o600,
                    port.with_disk(|f| f.metadata().map(|m| m.len()))?,
                )
            }
            // sysfs's `rescan` attribute is write-only.
            Entry::Rescan(s) => {
                self.port(s).ok_or(Errno::ENOENT)?;
                (FileType::RegularFile, 0o200, 0)
            }
        };
        Ok(FileAttr {
            ino: INodeNo(entry.ino()),
            size,
            blocks: size.div_ceil(512),
            atime: SystemTime::UNIX_EPOCH,
            mtime: SystemTime::UNIX_EPOCH,
            ctime: SystemTime::UNIX_EPOCH,
            crtime: SystemTime::UNIX_EPOCH,
            kind,
            perm,
            nlink: if kind == FileType::Directory { 2 } else { 1 },
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }

    /// The guest's rescan of a port's SCSI device: its loop device takes the disk's current size.
    fn rescan(&self, serial: u64) -> Result<(), Errno> {
        let port = self.live_port(serial).ok_or(Errno::ENODEV)?;
        // The kernel keeps the size of a FUSE file it has looked at, and LOOP_SET_CAPACITY takes
        // that size: looking again (attributes are never cached here) refreshes it first.
        std::fs::metadata(self.mountpoint.join(Entry::Data(serial).name())).map_err(Errno::from)?;
        let dev = port
            .loop_device
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or(Errno::ENODEV)?;
        loopdev::set_capacity(&dev).map_err(|e| {
            tracing::warn!(node = %port.node, lun = port.lun, "rescan: {e}");
            Errno::EIO
        })
    }
}

/// Attributes and names are never cached by the kernel: a cut port must vanish at once, and a
/// grown disk's size be seen by the next look.
const NO_CACHE: Duration = Duration::ZERO;

struct BusFs(Arc<Shared>);

impl Filesystem for BusFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let found = (parent == INodeNo::ROOT)
            .then(|| name.to_str().and_then(Entry::from_name))
            .flatten()
            .filter(|e| match e {
                Entry::Data(s) | Entry::Rescan(s) => self.0.live_port(*s).is_some(),
                Entry::Root => false,
            });
        match found.map(|e| self.0.attr(e)) {
            Some(Ok(attr)) => reply.entry(&NO_CACHE, &attr, Generation(0)),
            Some(Err(e)) => reply.error(e),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match Entry::from_ino(ino.0).map(|e| self.0.attr(e)) {
            Some(Ok(attr)) => reply.attr(&NO_CACHE, &attr),
            Some(Err(e)) => reply.error(e),
            None => reply.error(Errno::ENOENT),
        }
    }

    /// `O_TRUNC` on the rescan file (a shell's `echo 1 >`) comes as a truncation: nothing to do.
    /// A port's size is the disk's, which only Azure changes.
    #[allow(clippy::too_many_arguments)]
    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<fuser::TimeOrNow>,
        _mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let entry = Entry::from_ino(ino.0);
        let allowed = match entry {
            Some(Entry::Rescan(_)) => mode.is_none() && uid.is_none() && gid.is_none(),
            Some(Entry::Data(_)) => {
                mode.is_none() && uid.is_none() && gid.is_none() && size.is_none()
            }
            _ => false,
        };
        match entry.filter(|_| allowed).map(|e| self.0.attr(e)) {
            Some(Ok(attr)) => reply.attr(&NO_CACHE, &attr),
            Some(Err(e)) => reply.error(e),
            None => reply.error(Errno::EPERM),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match Entry::from_ino(ino.0) {
            Some(Entry::Data(s) | Entry::Rescan(s)) if self.0.live_port(s).is_some() => {
                reply.opened(FileHandle(s), FopenFlags::FOPEN_DIRECT_IO)
            }
            Some(Entry::Data(_) | Entry::Rescan(_)) => reply.error(Errno::ENODEV),
            _ => reply.error(Errno::EISDIR),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let Some(Entry::Data(s)) = Entry::from_ino(ino.0) else {
            return reply.error(Errno::EINVAL);
        };
        let Some(port) = self.0.port(s) else {
            return reply.error(Errno::EIO);
        };
        let mut buf = vec![0u8; size as usize];
        let got = port.with_disk(|f| {
            let mut done = 0;
            while done < buf.len() {
                match f.read_at(&mut buf[done..], offset + done as u64)? {
                    0 => break,
                    n => done += n,
                }
            }
            Ok(done)
        });
        match got {
            Ok(n) => reply.data(&buf[..n]),
            Err(e) => reply.error(e),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match Entry::from_ino(ino.0) {
            Some(Entry::Data(s)) => {
                let Some(port) = self.0.port(s) else {
                    return reply.error(Errno::EIO);
                };
                // Never past the end: a disk is as big as Azure made it.
                let written = port.with_disk(|f| {
                    let len = f.metadata()?.len();
                    if offset + data.len() as u64 > len {
                        return Err(std::io::Error::from_raw_os_error(
                            nix::errno::Errno::ENOSPC as i32,
                        ));
                    }
                    f.write_all_at(data, offset)
                });
                match written {
                    Ok(()) => reply.written(data.len() as u32),
                    Err(e) => reply.error(e),
                }
            }
            Some(Entry::Rescan(s)) => {
                // LOOP_SET_CAPACITY needs this bus to answer a lookup meanwhile: off the thread
                // that serves requests.
                let shared = self.0.clone();
                let len = data.len() as u32;
                std::thread::spawn(move || match shared.rescan(s) {
                    Ok(()) => reply.written(len),
                    Err(e) => reply.error(e),
                });
            }
            _ => reply.error(Errno::EISDIR),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match Entry::from_ino(ino.0) {
            Some(Entry::Data(s)) => match self.0.port(s).map(|p| p.with_disk(File::sync_data)) {
                Some(Ok(())) => reply.ok(),
                Some(Err(e)) => reply.error(e),
                None => reply.error(Errno::EIO),
            },
            _ => reply.ok(),
        }
    }

    /// Discards and zeroing from the node (mkfs's, a filesystem's `discard`) punch the disk's
    /// sparse file as the loop device over it would.
    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        use nix::fcntl::{fallocate, FallocateFlags};
        let Some(Entry::Data(s)) = Entry::from_ino(ino.0) else {
            return reply.error(Errno::EINVAL);
        };
        let Some(port) = self.0.port(s) else {
            return reply.error(Errno::EIO);
        };
        let flags = FallocateFlags::from_bits_truncate(mode);
        // A disk never grows from the guest's side.
        if !flags.contains(FallocateFlags::FALLOC_FL_KEEP_SIZE)
            && !flags.contains(FallocateFlags::FALLOC_FL_PUNCH_HOLE)
        {
            return reply.error(Errno::EOPNOTSUPP);
        }
        let done = port.with_disk(|f| {
            fallocate(f.as_raw_fd(), flags, offset as i64, length as i64)
                .map_err(std::io::Error::from)
        });
        match done {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if ino != INodeNo::ROOT {
            return reply.error(Errno::ENOTDIR);
        }
        let live: Vec<u64> = self
            .0
            .ports
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, p)| !p.is_cut())
            .map(|(s, _)| *s)
            .collect();
        let mut entries = vec![
            (Entry::Root, FileType::Directory, ".".to_string()),
            (Entry::Root, FileType::Directory, "..".to_string()),
        ];
        for s in live {
            for e in [Entry::Data(s), Entry::Rescan(s)] {
                entries.push((e, FileType::RegularFile, e.name()));
            }
        }
        for (i, (e, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(e.ino()), (i + 1) as u64, kind, name) {
                break;
            }
        }
        reply.ok();
    }
}

/// Where a port is, for the node's loop device and sysfs entry.
#[derive(Debug, Clone)]
pub struct PortPaths {
    pub serial: u64,
    /// What the node's loop device is made over.
    pub data: PathBuf,
    /// What the node's SCSI device's `rescan` attribute links to.
    pub rescan: PathBuf,
}

/// The mounted bus.
pub struct Bus {
    shared: Arc<Shared>,
    next: AtomicU64,
    session: Mutex<Option<fuser::BackgroundSession>>,
    /// Clears the bus after this process, however it ends (`bus_guard`).
    guard: Mutex<Option<Guard>>,
}

impl Bus {
    /// Mounts the bus at `mountpoint`, once its guard (this executable's `bus-guard`) has cleared
    /// what a previous run left there: loop devices (freed, or autoclear where still mounted)
    /// and the mount, dead with its process.
    pub fn mount(mountpoint: &Path) -> Result<Bus, BusError> {
        let exe = std::env::current_exe().map_err(io("finding this executable"))?;
        let guard = Guard::start(&exe, mountpoint)?;
        std::fs::create_dir_all(mountpoint).map_err(io(mountpoint.display().to_string()))?;
        let shared = Arc::new(Shared {
            mountpoint: mountpoint.to_path_buf(),
            ports: RwLock::new(BTreeMap::new()),
        });
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            fuser::MountOption::FSName("flexdisk-sim-bus".into()),
            fuser::MountOption::NoExec,
        ];
        // Root in other mount namespaces (the real cluster's nodes) and the kernel's loop
        // workers reach it as well.
        config.acl = fuser::SessionACL::All;
        config.n_threads = Some(4);
        config.clone_fd = true;
        let session = fuser::spawn_mount(BusFs(shared.clone()), mountpoint, &config).map_err(
            io(format!("mounting the FUSE bus at {}", mountpoint.display())),
        )?;
        Ok(Bus {
            shared,
            next: AtomicU64::new(1),
            session: Mutex::new(Some(session)),
            guard: Mutex::new(Some(guard)),
        })
    }

    /// A new port for `disk` attached to `node` at `lun`.
    pub fn connect(&self, node: &str, lun: i64, disk: &Path) -> Result<PortPaths, BusError> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(disk)
            .map_err(io(disk.display().to_string()))?;
        let serial = self.next.fetch_add(1, Ordering::Relaxed);
        self.shared
            .ports
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                serial,
                Arc::new(Port {
                    node: node.to_string(),
                    lun,
                    disk: RwLock::new(Some(file)),
                    loop_device: Mutex::new(None),
                }),
            );
        Ok(self.paths(serial))
    }

    fn paths(&self, serial: u64) -> PortPaths {
        PortPaths {
            serial,
            data: self.shared.mountpoint.join(Entry::Data(serial).name()),
            rescan: self.shared.mountpoint.join(Entry::Rescan(serial).name()),
        }
    }

    /// Records the node's loop device over a port (what its rescan resizes).
    pub fn bind_loop(&self, serial: u64, dev: &Path) {
        if let Some(p) = self.shared.port(serial) {
            *p.loop_device.lock().unwrap_or_else(|e| e.into_inner()) = Some(dev.to_path_buf());
        }
    }

    /// Cuts a port: I/O in flight finishes, every later one answers EIO. The port's number is
    /// never used again.
    pub fn cut(&self, serial: u64) {
        if let Some(p) = self.shared.port(serial) {
            p.disk.write().unwrap_or_else(|e| e.into_inner()).take();
            // A rescan racing the detach must not resize a loop device number the kernel may
            // already have given to another port.
            p.loop_device
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
        }
    }

    /// Unmounts, lazily: a loop device a node still has mounted keeps the connection until this
    /// process ends (its ports are cut: its I/O fails), and is freed by the kernel at its last
    /// unmount. Then the guard is told, and waited for: nothing of the bus is left once this
    /// returns.
    pub fn shutdown(&self) {
        // Every port cut first: a node's mount left on a loop device reaches no disk from now on.
        let serials: Vec<u64> = self
            .shared
            .ports
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .copied()
            .collect();
        for serial in serials {
            self.cut(serial);
        }
        crate::bus_guard::release_leftovers(&self.shared.mountpoint);
        drop(
            self.session
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(),
        );
        drop(self.guard.lock().unwrap_or_else(|e| e.into_inner()).take());
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_inode_numbers_map_one_to_one() {
        for e in [
            Entry::Data(1),
            Entry::Rescan(1),
            Entry::Data(41),
            Entry::Rescan(41),
        ] {
            assert_eq!(Entry::from_ino(e.ino()), Some(e));
            assert_eq!(Entry::from_name(&e.name()), Some(e));
        }
        assert_eq!(Entry::from_ino(1), Some(Entry::Root));
        assert_eq!(Entry::from_ino(0), None);
        for bad in [
            "disk-0",
            "disk-01",
            "disk-",
            "disk-x",
            "rescan-+3",
            "lun3",
            "",
        ] {
            assert_eq!(Entry::from_name(bad), None, "{bad}");
        }
    }
}
