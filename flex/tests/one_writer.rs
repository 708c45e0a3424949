//! One writer per filesystem: a shared disk (maxShares 2) on two VMs is never mounted read-write
//! nor formatted; read-only mounts work everywhere and write nothing; two `mountdevice` of one
//! blank device format it once; a device that is not the disk asked for (a stale LUN link) is
//! refused before anything touches it.

mod common;

use common::*;
use serde_json::json;
use std::process::Command;

/// The filesystem stops as if its node lost power (FS_IOC_SHUTDOWN, which ext4 and xfs both
/// implement), after its log is flushed: what was written is in the journal, not yet in place.
fn shut_down(mnt: &str) {
    let out = Command::new("xfs_io")
        .args(["-x", "-c", "shutdown -f", mnt])
        .output()
        .expect("xfs_io runs");
    assert!(
        out.status.success(),
        "shutdown of {mnt}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn fsck_clean(fs: &str, dev: &str) {
    let out = match fs {
        "xfs" => Command::new("xfs_repair").args(["-n", dev]).output(),
        _ => Command::new("e2fsck").args(["-fn", dev]).output(),
    }
    .expect("fsck runs");
    assert!(
        out.status.success(),
        "{fs} on {dev} is not clean: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_shared_disk_has_no_second_writer_and_read_only_mounts_write_nothing() {
    let env = Env::start();
    let rg = env.arm.resource_group.clone();
    for fs in ["ext4", "xfs"] {
        let pv = format!("pvc-shared-{fs}");
        let disk = env.disk_with(&rg, &pv, 1, &[("maxShares", "2")]);
        let rw = env.options(&disk, &pv, json!({"kubernetes.io/fsType": fs}));
        let ro = env.options(
            &disk,
            &pv,
            json!({"kubernetes.io/fsType": fs, "kubernetes.io/readwrite": "ro"}),
        );
        // A alone: formatted and written.
        let (_, dev_a) = env.attach_and_wait(AS_A, &rw);
        let mnt_a = env.dir(&format!("{fs}-a"));
        let mnt_a = mnt_a.to_str().expect("utf-8");
        let first = env.kubelet(AS_A, &["mountdevice", mnt_a, &dev_a, &rw]);
        assert!(first.message().contains("formatted"), "{}", first.raw);
        std::fs::write(format!("{mnt_a}/precious"), "A's data").expect("write");
        nix::unistd::sync();

        // B joins: read-write refused, with why and what to do.
        let (_, dev_b) = env.attach_and_wait(AS_B, &rw);
        let mnt_b = env.dir(&format!("{fs}-b"));
        let mnt_b = mnt_b.to_str().expect("utf-8");
        let refused = env.kubelet(AS_B, &["mountdevice", mnt_b, &dev_b, &rw]);
        assert_eq!(refused.status, "Failure", "{}", refused.raw);
        assert!(
            refused.message().contains("attached to 2 VMs")
                && refused.message().contains("only one writer")
                && refused.message().contains("read-only"),
            "{}",
            refused.raw
        );
        // A's node dies with the filesystem mounted: its journal (log) still needs recovery, the
        // state in which a read-only mount that replayed it would write.
        shut_down(mnt_a);
        env.kubelet(AS_A, &["unmountdevice", mnt_a]).ok();

        // Read-only on both: not one byte of the device changes.
        let before = checksum(&dev_a);
        for (node, dev, mnt) in [(AS_A, &dev_a, mnt_a), (AS_B, &dev_b, mnt_b)] {
            let m = env.kubelet(node, &["mountdevice", mnt, dev, &ro]);
            assert!(m.message().contains("read-only"), "{}", m.raw);
            assert!(
                std::fs::write(format!("{mnt}/new"), "x").is_err(),
                "a read-only mount refuses writes"
            );
        }
        for (node, mnt) in [(AS_A, mnt_a), (AS_B, mnt_b)] {
            env.kubelet(node, &["unmountdevice", mnt]).ok();
        }
        assert_eq!(
            checksum(&dev_a),
            before,
            "{fs}: read-only mounts wrote to the disk"
        );

        // B lets go; A alone mounts read-write again, recovers the journal, and has its data.
        env.controller(&["detach", &pv, AS_B]).ok();
        let again = env.kubelet(AS_A, &["mountdevice", mnt_a, &dev_a, &rw]);
        assert!(
            again.message().contains("mounted existing"),
            "{}",
            again.raw
        );
        assert_eq!(
            std::fs::read_to_string(format!("{mnt_a}/precious")).expect("read"),
            "A's data"
        );
        env.kubelet(AS_A, &["unmountdevice", mnt_a]).ok();
        fsck_clean(fs, &dev_a);
    }

    // A blank shared disk held by two VMs is never formatted.
    let disk = env.disk_with(&rg, "pvc-shared-blank", 1, &[("maxShares", "2")]);
    let rw = env.options(&disk, "pvc-shared-blank", json!({}));
    let (_, dev_a) = env.attach_and_wait(AS_A, &rw);
    env.attach_and_wait(AS_B, &rw);
    let blank = checksum(&dev_a);
    let mnt = env.dir("blank-a");
    let out = env.kubelet(
        AS_A,
        &["mountdevice", mnt.to_str().expect("utf-8"), &dev_a, &rw],
    );
    assert_eq!(out.status, "Failure", "{}", out.raw);
    assert!(out.message().contains("attached to 2 VMs"), "{}", out.raw);
    assert_eq!(checksum(&dev_a), blank, "nothing written");
}

#[test]
fn two_mountdevice_of_one_blank_device_format_it_once() {
    let env = Env::start();
    for round in 0..3 {
        let pv = format!("pvc-race-{round}");
        let disk = env.disk(&pv, 1);
        let opts = env.options(&disk, &pv, json!({}));
        let (_, dev) = env.attach_and_wait(AS_A, &opts);
        // kubelet retried after a timeout while the first call still runs, or a second dir.
        let dirs: Vec<String> = (0..2)
            .map(|i| {
                env.dir(&format!("race-{round}-{i}"))
                    .to_string_lossy()
                    .to_string()
            })
            .collect();
        let outs: Vec<Out> = std::thread::scope(|scope| {
            let handles: Vec<_> = dirs
                .iter()
                .map(|d| {
                    let (env, dev, opts) = (&env, &dev, &opts);
                    scope.spawn(move || env.kubelet(AS_A, &["mountdevice", d, dev, opts]))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("thread"))
                .collect()
        });
        let formatted = outs
            .iter()
            .filter(|o| o.message().contains("formatted"))
            .count();
        assert_eq!(
            formatted,
            1,
            "{:?}",
            outs.iter().map(|o| &o.raw).collect::<Vec<_>>()
        );
        for o in &outs {
            o.ok();
        }
        std::fs::write(format!("{}/f", dirs[0]), "same filesystem").expect("write");
        assert_eq!(
            std::fs::read_to_string(format!("{}/f", dirs[1])).expect("read"),
            "same filesystem"
        );
        for d in &dirs {
            env.kubelet(AS_A, &["unmountdevice", d]).ok();
        }
    }
}

#[test]
fn a_stale_lun_link_is_refused_before_anything_is_written() {
    let env = Env::start();
    let d0 = env.disk("pvc-link-0", 1);
    let d1 = env.disk("pvc-link-1", 1);
    let o0 = env.options(&d0, "pvc-link-0", json!({}));
    let o1 = env.options(&d1, "pvc-link-1", json!({}));
    let lun0 = env.controller(&["attach", &o0, AS_A]).ok()["device"]
        .as_str()
        .expect("lun")
        .to_string();
    let (_, dev1) = env.attach_and_wait(AS_A, &o1);
    // udev missed an event: LUN 0's link points at LUN 1's device.
    let root = env.sim.node_field(AS_A, "root");
    let link = std::path::Path::new(&root).join(format!("dev/disk/azure/scsi1/lun{lun0}"));
    let target = std::fs::read_link(std::path::Path::new(&root).join("dev/disk/azure/scsi1/lun1"))
        .expect("lun1 link");
    std::fs::remove_file(&link).expect("rm link");
    std::os::unix::fs::symlink(&target, &link).expect("relink");

    let dev = env.kubelet(AS_A, &["waitforattach", &lun0, &o0]).ok()["device"]
        .as_str()
        .expect("dev")
        .to_string();
    assert_eq!(dev, dev1, "the stale link leads to the other disk's device");
    let blank = checksum(&dev1);
    let mnt = env.dir("stale");
    let out = env.kubelet(
        AS_A,
        &["mountdevice", mnt.to_str().expect("utf-8"), &dev, &o0],
    );
    assert_eq!(out.status, "Failure", "{}", out.raw);
    assert!(
        out.message().contains("pvc-link-1") && out.message().contains("stale device link"),
        "{}",
        out.raw
    );
    assert_eq!(checksum(&dev1), blank, "the other disk was not touched");
    // The right volume on that device is fine.
    let ok = env.kubelet(
        AS_A,
        &["mountdevice", mnt.to_str().expect("utf-8"), &dev1, &o1],
    );
    assert!(ok.message().contains("formatted"), "{}", ok.raw);
    env.kubelet(AS_A, &["unmountdevice", mnt.to_str().expect("utf-8")])
        .ok();
}
