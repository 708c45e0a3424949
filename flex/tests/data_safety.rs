//! No disk that carries something is ever formatted: ext4, xfs, btrfs, a GPT and an MBR partition
//! table, each with data; a blank disk for a read-only mount; an fsType mismatch. The whole device
//! is checksummed before and after.

mod common;

use common::*;
use serde_json::json;
use std::process::Command;

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Puts data on the device the way an admin might have.
fn prepare(kind: &str, dev: &str, scratch: &std::path::Path) {
    match kind {
        "ext4" | "xfs" | "btrfs" => {
            let mkfs = format!("mkfs.{kind}");
            let force = if kind == "ext4" { "-F" } else { "-f" };
            run(&mkfs, &[force, dev]);
            std::fs::create_dir_all(scratch).expect("dir");
            run("mount", &[dev, scratch.to_str().expect("utf-8")]);
            std::fs::write(scratch.join("precious.txt"), "do not lose me").expect("write");
            run("umount", &[scratch.to_str().expect("utf-8")]);
        }
        "gpt" => {
            run("sgdisk", &["-o", "-n", "1:2048:+64M", dev]);
        }
        "mbr" => {
            run(
                "parted",
                &[
                    "-s", dev, "mklabel", "msdos", "mkpart", "primary", "1MiB", "65MiB",
                ],
            );
        }
        other => panic!("{other}"),
    }
}

#[test]
fn nothing_with_a_signature_is_ever_formatted() {
    let env = Env::start();
    // (what is on the disk, the fsType the volume asks for)
    let cases = [
        ("ext4", "xfs"),
        ("xfs", "ext4"),
        ("btrfs", "ext4"),
        ("gpt", "ext4"),
        ("mbr", "xfs"),
    ];
    for (i, (kind, asked)) in cases.iter().enumerate() {
        let name = format!("pvc-safe-{i}");
        let disk = env.disk(&name, 1);
        let opts = env.options(&disk, &name, json!({"kubernetes.io/fsType": asked}));
        let (_, dev) = env.attach_and_wait(AS_A, &opts);
        prepare(kind, &dev, &env.dir(&format!("scratch-{i}")));
        let before = checksum(&dev);
        let mnt = env.dir(&format!("mnt-{i}"));
        let out = env.kubelet(
            AS_A,
            &["mountdevice", mnt.to_str().expect("utf-8"), &dev, &opts],
        );
        assert_eq!(
            out.status, "Failure",
            "{kind} asked as {asked}: {}",
            out.raw
        );
        let expected = match *kind {
            "gpt" => "gpt partition table".to_string(),
            "mbr" => "dos partition table".to_string(),
            fs => format!("holds a {fs} filesystem but the volume asks for {asked}"),
        };
        assert!(
            out.message().contains(&expected),
            "{kind}: {}",
            out.message()
        );
        assert_eq!(checksum(&dev), before, "{kind}: the device changed");
        // Asked for what is there, a filesystem is mounted as it is, data intact.
        if !matches!(*kind, "gpt" | "mbr") {
            let right = env.options(&disk, &name, json!({"kubernetes.io/fsType": kind}));
            let ok = env.kubelet(
                AS_A,
                &["mountdevice", mnt.to_str().expect("utf-8"), &dev, &right],
            );
            assert!(
                ok.ok()["message"]
                    .as_str()
                    .expect("m")
                    .contains("mounted existing"),
                "{}",
                ok.raw
            );
            assert_eq!(
                std::fs::read_to_string(mnt.join("precious.txt")).expect("data"),
                "do not lose me"
            );
            env.kubelet(AS_A, &["unmountdevice", mnt.to_str().expect("utf-8")])
                .ok();
        }
        env.controller(&["detach", &name, AS_A]).ok();
    }

    // A blank disk mounted read-only: nothing to mount, and it stays blank.
    let disk = env.disk("pvc-blank-ro", 1);
    let ro = env.options(
        &disk,
        "pvc-blank-ro",
        json!({"kubernetes.io/readwrite": "ro"}),
    );
    let (_, dev) = env.attach_and_wait(AS_A, &ro);
    let before = checksum(&dev);
    let out = env.kubelet(
        AS_A,
        &[
            "mountdevice",
            env.dir("mnt-ro").to_str().expect("utf-8"),
            &dev,
            &ro,
        ],
    );
    assert!(
        out.message()
            .contains("blank and the volume is mounted read-only"),
        "{}",
        out.raw
    );
    assert_eq!(checksum(&dev), before);

    // Read-only really is read-only once there is a filesystem.
    let rw = env.options(&disk, "pvc-blank-ro", json!({}));
    let mnt = env.dir("mnt-rw");
    env.kubelet(
        AS_A,
        &["mountdevice", mnt.to_str().expect("utf-8"), &dev, &rw],
    )
    .ok();
    env.kubelet(AS_A, &["unmountdevice", mnt.to_str().expect("utf-8")])
        .ok();
    let mnt = env.dir("mnt-ro2");
    env.kubelet(
        AS_A,
        &["mountdevice", mnt.to_str().expect("utf-8"), &dev, &ro],
    )
    .ok();
    let err = std::fs::write(mnt.join("x"), "y").expect_err("read-only mount");
    assert_eq!(err.raw_os_error(), Some(nix::libc::EROFS));
    env.kubelet(AS_A, &["unmountdevice", mnt.to_str().expect("utf-8")])
        .ok();
}

/// A disk blank in its first 68 KiB but a RAID member by the metadata at its end (Intel Matrix
/// Storage, which `blkid -p` finds there): on a node without blkid it is not formatted — our own
/// probe cannot see that far — and `init` says blkid is missing.
#[test]
fn without_blkid_nothing_is_formatted() {
    let env = Env::start();
    let disk = env.disk("pvc-raid-member", 1);
    let opts = env.options(&disk, "pvc-raid-member", json!({}));
    let (_, dev) = env.attach_and_wait(AS_A, &opts);
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&dev)
            .expect("device");
        f.seek(SeekFrom::End(-1024)).expect("seek");
        f.write_all(b"Intel Raid ISM Cfg Sig. 1.0.00")
            .expect("signature");
        f.sync_all().expect("sync");
    }
    // A PATH with the mkfs programs and without blkid.
    let bin = env.dir("bin-without-blkid");
    std::fs::create_dir_all(&bin).expect("bin");
    for tool in ["mkfs.ext4", "mkfs.xfs", "mkfs.btrfs"] {
        let found = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .map(|d| d.join(tool))
            .find(|p| p.is_file())
            .unwrap_or_else(|| panic!("{tool} is installed for this test"));
        std::os::unix::fs::symlink(found, bin.join(tool)).expect("link");
    }
    let path = bin.to_str().expect("utf-8");
    let init = env.kubelet_with(AS_A, &["init"], &[("PATH", path)]);
    assert!(init.ok()["message"]
        .as_str()
        .unwrap_or_default()
        .contains("blkid is not installed"));
    let before = checksum(&dev);
    let mnt = env.dir("mnt-raid");
    let out = env.kubelet_with(
        AS_A,
        &["mountdevice", mnt.to_str().expect("utf-8"), &dev, &opts],
        &[("PATH", path)],
    );
    assert_eq!(out.status, "Failure", "{}", out.raw);
    assert!(out.message().contains("blkid"), "{}", out.raw);
    assert_eq!(checksum(&dev), before, "the RAID member was formatted");
    // With blkid, the RAID metadata is seen and named.
    let out = env.kubelet(
        AS_A,
        &["mountdevice", mnt.to_str().expect("utf-8"), &dev, &opts],
    );
    assert_eq!(out.status, "Failure", "{}", out.raw);
    assert!(out.message().contains("isw_raid_member"), "{}", out.raw);
    assert_eq!(checksum(&dev), before);
}
