//! The nodes fail as Azure's do: a disk detached under a mounted filesystem gives it I/O errors,
//! and a grown disk keeps its old size on the node until the guest rescans it.

mod common;
use common::*;
use serde_json::json;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A filesystem mounted for the test's span; unmounted (lazily, whatever it went through) at
/// the end, also when the test fails.
struct Mounted(PathBuf);

impl Mounted {
    /// A fresh `fs` made on `dev`, mounted at `dir`.
    fn new(dev: &Path, dir: &Path, fs: &str) -> Mounted {
        let out = Command::new(format!("mkfs.{fs}"))
            .arg(if fs == "xfs" { "-f" } else { "-F" })
            .arg("-q")
            .arg(dev)
            .output()
            .expect("mkfs");
        assert!(out.status.success(), "mkfs.{fs}: {out:?}");
        Mounted::existing(dev, dir)
    }

    /// The filesystem on `dev`, mounted at `dir`.
    fn existing(dev: &Path, dir: &Path) -> Mounted {
        std::fs::create_dir_all(dir).expect("mount dir");
        let out = Command::new("mount")
            .arg(dev)
            .arg(dir)
            .output()
            .expect("mount");
        assert!(out.status.success(), "mount {}: {out:?}", dev.display());
        Mounted(dir.to_path_buf())
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Writes `data` to a new file under `dir` and syncs it: the errno of the first step that fails.
fn write_synced(dir: &Path, name: &str, data: &[u8]) -> Result<(), i32> {
    use std::io::Write;
    let errno = |e: std::io::Error| e.raw_os_error().unwrap_or(-1);
    let mut f = std::fs::File::create(dir.join(name)).map_err(errno)?;
    f.write_all(data).map_err(errno)?;
    f.sync_all().map_err(errno)
}

/// Reads a file's first block past every cache (O_DIRECT): what the disk answers now.
fn read_direct(path: &Path) -> Result<Vec<u8>, i32> {
    use std::io::Read;
    let errno = |e: std::io::Error| e.raw_os_error().unwrap_or(-1);
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_DIRECT.bits())
        .open(path)
        .map_err(errno)?;
    // O_DIRECT wants an aligned buffer: a 4 KiB window of a larger one.
    let mut buf = vec![0u8; 8192];
    let start = buf.as_ptr().align_offset(4096);
    let n = f.read(&mut buf[start..start + 4096]).map_err(errno)?;
    Ok(buf[start..start + n].to_vec())
}

const EIO: i32 = nix::errno::Errno::EIO as i32;

#[test]
fn the_nodes_are_served_through_the_fuse_bus() {
    let sim = Sim::start(&[]);
    assert_eq!(
        sim.ready["nodeBackend"],
        json!({"kind": "fuse"}),
        "without FUSE the nodes are gentler than Azure's"
    );
}

#[test]
fn a_disk_detached_under_its_mounted_filesystem_gives_it_io_errors() {
    let sim = Sim::start(&[]);
    let tmp = tempfile::tempdir().expect("tmp");
    for (i, fs) in ["ext4", "xfs"].into_iter().enumerate() {
        let disk = format!("yanked-{fs}");
        sim.empty_disk(&disk, 1, None);
        sim.done(sim.attach(AS_A, &[&disk]));
        let lun = sim.lun_of(AS_A, &disk);
        let dev = std::fs::canonicalize(sim.lun_link(AS_A, lun)).expect("device");
        let dir = tmp.path().join(format!("mnt-{i}"));
        let mounted = Mounted::new(&dev, &dir, fs);
        let old_rdev = std::fs::metadata(&dev).expect("device").rdev();
        write_synced(&dir, "before", b"synced before the detach").expect("write while attached");
        assert_eq!(
            read_direct(&dir.join("before")).expect("read while attached"),
            b"synced before the detach"
        );

        // Azure detaches the disk while the node still has it mounted (a detach-before-unmount
        // bug): the guest's device is gone and its filesystem fails.
        sim.done(sim.detach(AS_A, &[&disk]));
        assert!(!dev.exists(), "{}: device node gone", dev.display());
        assert_eq!(
            write_synced(&dir, "after", b"lost"),
            Err(EIO),
            "{fs}: a synced write after the detach"
        );
        assert_eq!(
            read_direct(&dir.join("before")),
            Err(EIO),
            "{fs}: a read from the disk after the detach"
        );

        // Attached again, to the same node: a new device, which the stale mount never reaches;
        // what was synced before the detach is on the disk.
        sim.done(sim.attach(AS_A, &[&disk]));
        let again = std::fs::canonicalize(sim.lun_link(AS_A, sim.lun_of(AS_A, &disk)))
            .expect("device again");
        assert_ne!(
            std::fs::metadata(&again).expect("device again").rdev(),
            old_rdev,
            "{fs}: a fresh block device, not the one the stale mount holds"
        );
        assert_eq!(
            read_direct(&dir.join("before")),
            Err(EIO),
            "{fs}: the stale mount stays cut"
        );
        drop(mounted);
        let dir2 = tmp.path().join(format!("again-{i}"));
        let remounted = Mounted::existing(&again, &dir2);
        assert_eq!(
            std::fs::read(dir2.join("before")).expect("synced bytes kept"),
            b"synced before the detach"
        );
        drop(remounted);
        sim.done(sim.detach(AS_A, &[&disk]));
    }
    // The stale mounts gone, so are their loop devices (the kernel's autoclear at last close).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !sim.loops_over_state().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(sim.loops_over_state(), Vec::<String>::new());
    sim.check_schemas();
}

/// The sysfs `rescan` attribute of the data disk at `lun` on a node, as the guest writes it.
fn rescan(sim: &Sim, node: &str, lun: i64) {
    let attr = sim
        .root(node)
        .join(format!("sys/bus/scsi/devices/1:0:0:{lun}/rescan"));
    std::fs::write(&attr, "1").unwrap_or_else(|e| panic!("{}: {e}", attr.display()));
}

#[test]
fn a_grown_disk_shows_its_new_size_on_a_node_only_after_that_node_rescans_it() {
    let sim = Sim::start(&[]);
    sim.empty_disk("grown", 1, None);
    sim.empty_disk("other", 1, None);
    sim.done(sim.attach(AS_A, &["grown"]));
    sim.done(sim.attach(AS_B, &["other"]));
    let lun = sim.lun_of(AS_A, "grown");
    let dev = sim.lun_link(AS_A, lun);
    write_at(&dev, 4096, b"kept across growth");

    // Azure grows the disk online; the guest's device keeps its size until it asks again.
    sim.done(sim.arm(
        "PATCH",
        &sim.disk_id("grown"),
        Some(&json!({"properties": {"diskSizeGB": 2}})),
    ));
    assert_eq!(
        sim.arm("GET", &sim.disk_id("grown"), None).body["properties"]["diskSizeGB"],
        2
    );
    assert_eq!(
        block_size_bytes(&dev),
        1 << 30,
        "no rescan yet: the old size"
    );
    // Another node's rescan (at the same LUN number) is that node's own business.
    rescan(&sim, AS_B, sim.lun_of(AS_B, "other"));
    assert_eq!(block_size_bytes(&dev), 1 << 30, "another node's rescan");

    // The guest rescans the SCSI device: the new size as soon as the write returns.
    rescan(&sim, AS_A, lun);
    assert_eq!(block_size_bytes(&dev), 2 << 30, "after the rescan");
    assert_eq!(read_at(&dev, 4096, 18), b"kept across growth");
    write_at(&dev, (2 << 30) - 4096, b"in the new space");
    assert_eq!(read_at(&dev, (2 << 30) - 4096, 16), b"in the new space");
    rescan(&sim, AS_A, lun);
    assert_eq!(
        block_size_bytes(&dev),
        2 << 30,
        "a rescan again changes nothing"
    );

    // Attached after a growth: the new size from the start.
    sim.done(sim.detach(AS_B, &["other"]));
    sim.done(sim.detach(AS_A, &["grown"]));
    sim.done(sim.arm(
        "PATCH",
        &sim.disk_id("grown"),
        Some(&json!({"properties": {"diskSizeGB": 3}})),
    ));
    sim.done(sim.attach(AS_B, &["grown"]));
    let on_b = sim.lun_link(AS_B, sim.lun_of(AS_B, "grown"));
    assert_eq!(block_size_bytes(&on_b), 3 << 30);
    assert_eq!(read_at(&on_b, (2 << 30) - 4096, 16), b"in the new space");
    sim.check_schemas();
}

/// Polls `done` for up to 20 s; whether it came true.
fn eventually(mut done: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !done() {
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    true
}

#[test]
fn a_killed_simulator_leaves_no_bus_mount_nor_loop_device_and_a_restart_serves_the_same_bytes() {
    let tmp = tempfile::tempdir().expect("tmp");
    let state = tmp.path().join("state");
    let mut sim = Sim::start_at(&state, &[]);
    sim.empty_disk("held", 1, None);
    sim.empty_disk("idle", 1, None);
    sim.done(sim.attach(AS_A, &["held", "idle"]));
    let dev = std::fs::canonicalize(sim.lun_link(AS_A, sim.lun_of(AS_A, "held"))).expect("dev");
    let dir = tmp.path().join("mnt");
    let mounted = Mounted::new(&dev, &dir, "ext4");
    write_synced(&dir, "kept", b"synced before the crash").expect("write");
    assert!(sim.bus_mounted());
    assert_eq!(
        sim.loops_over_state().len(),
        2,
        "{:?}",
        sim.loops_over_state()
    );

    // A crash: nothing of the simulator's own shutdown runs. Its guard frees the loop device
    // nobody uses and unmounts the bus; the node's filesystem on the other fails from now on.
    // Once the bus is unmounted the kernel names a loop device's file from the detached mount
    // (`/disk-2`), no longer under the state: the devices are followed by name.
    let before = sim.loops_over_state();
    sim.kill();
    assert!(
        eventually(|| !sim.bus_mounted() && still_attached(&before).len() <= 1),
        "left behind: bus mounted {}, {:?}",
        sim.bus_mounted(),
        still_attached(&before)
    );
    assert_eq!(write_synced(&dir, "after", b"lost"), Err(EIO));
    // The node's last unmount frees the last loop device (autoclear).
    drop(mounted);
    let loops = || {
        Command::new("losetup")
            .arg("-a")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    let bus = Path::new(&sim.s("state")).join("bus");
    assert!(
        eventually(|| still_attached(&before).is_empty()),
        "{}",
        loops()
    );

    // Restarted on the same state: both disks are attached again, through a new bus.
    let sim = Sim::start_at(&state, &[]);
    assert!(sim.bus_mounted());
    assert_eq!(
        sim.loops_over_state().len(),
        2,
        "{:?}",
        sim.loops_over_state()
    );
    let dev = std::fs::canonicalize(sim.lun_link(AS_A, sim.lun_of(AS_A, "held"))).expect("dev");
    let remounted = Mounted::existing(&dev, &dir);
    assert_eq!(
        std::fs::read(dir.join("kept")).expect("kept"),
        b"synced before the crash"
    );
    drop(remounted);
    // A clean stop leaves nothing either, by the time it returns.
    let mut sim = sim;
    let before = sim.loops_over_state();
    sim.stop();
    assert!(!sim.bus_mounted(), "{}", bus.display());
    assert_eq!(still_attached(&before), Vec::<String>::new(), "{}", loops());
}

/// Those of `losetup -a`'s lines whose loop device is still attached to the same file (by its
/// name: the path the kernel shows changes when the bus is unmounted under it).
fn still_attached(losetup_lines: &[String]) -> Vec<String> {
    losetup_lines
        .iter()
        .filter(|line| {
            let Some((dev, rest)) = line.split_once(':') else {
                return false;
            };
            let file = |path: &str| {
                Path::new(path.trim().trim_end_matches(" (deleted)"))
                    .file_name()
                    .map(|n| n.to_os_string())
            };
            let was = rest
                .rsplit_once('(')
                .and_then(|(_, p)| file(p.trim_end_matches(')')));
            let name = dev.trim_start_matches("/dev/");
            std::fs::read_to_string(format!("/sys/block/{name}/loop/backing_file"))
                .ok()
                .is_some_and(|now| was.is_some() && file(&now) == was)
        })
        .cloned()
        .collect()
}
