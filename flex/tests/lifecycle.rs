//! The whole life of a volume as kubelet and kube-controller-manager drive it, on real loop
//! devices: attach, wait, format, mount, write; then the pod moves to another node and finds its
//! data; every call repeated gives the same answer.

mod common;

use common::*;
use serde_json::json;

#[test]
fn a_volume_lives_moves_nodes_and_keeps_its_data() {
    let env = Env::start();
    let disk = env.disk("pvc-life", 1);
    let opts = env.options(&disk, "pvc-life", json!({}));

    let init = env.controller(&["init"]);
    let caps = &init.ok()["capabilities"];
    for cap in [
        "attach",
        "selinuxRelabel",
        "supportsMetrics",
        "fsGroup",
        "requiresFSResize",
    ] {
        assert_eq!(caps[cap], true, "{cap}: {}", init.raw);
    }
    let attached = env.controller(&["attach", &opts, AS_A]);
    let lun = attached.ok()["device"]
        .as_str()
        .expect("device")
        .to_string();
    assert_eq!(
        env.controller(&["attach", &opts, AS_A]).ok()["device"],
        lun.as_str(),
        "repeatable"
    );
    assert_eq!(
        env.controller(&["isattached", &opts, AS_A]).ok()["attached"],
        true
    );
    assert_eq!(
        env.controller(&["isattached", &opts, AS_B]).ok()["attached"],
        false
    );

    let waited = env.kubelet(AS_A, &["waitforattach", &lun, &opts]);
    let dev = waited.ok()["device"].as_str().expect("device").to_string();
    assert!(dev.starts_with(&env.sim.node_field(AS_A, "root")), "{dev}");
    assert_eq!(
        env.kubelet(AS_A, &["waitforattach", &lun, &opts]).ok()["device"],
        dev.as_str()
    );

    let mnt_a = env.dir("a/globalmount");
    let mnt_a = mnt_a.to_str().expect("utf-8");
    let first = env.kubelet(AS_A, &["mountdevice", mnt_a, &dev, &opts]);
    assert!(
        first.ok()["message"]
            .as_str()
            .expect("m")
            .contains("formatted ext4"),
        "{}",
        first.raw
    );
    assert!(
        env.kubelet(AS_A, &["mountdevice", mnt_a, &dev, &opts]).ok()["message"]
            .as_str()
            .expect("m")
            .contains("already mounted")
    );
    let payload: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(format!("{mnt_a}/data.bin"), &payload).expect("write");
    nix::unistd::sync();

    // The pod moves: unmount and detach on A (kubelet and the controller retry: same answers).
    env.kubelet(AS_A, &["unmountdevice", mnt_a]).ok();
    env.kubelet(AS_A, &["unmountdevice", mnt_a]).ok();
    env.controller(&["detach", "pvc-life", AS_A]).ok();
    assert!(
        env.controller(&["detach", "pvc-life", AS_A]).ok()["message"]
            .as_str()
            .expect("m")
            .contains("not attached")
    );
    assert_eq!(
        env.controller(&["isattached", &opts, AS_A]).ok()["attached"],
        false
    );

    let lun_b = env.controller(&["attach", &opts, AS_B]).ok()["device"]
        .as_str()
        .expect("lun")
        .to_string();
    let dev_b = env.kubelet(AS_B, &["waitforattach", &lun_b, &opts]).ok()["device"]
        .as_str()
        .expect("dev")
        .to_string();
    let mnt_b = env.dir("b/globalmount");
    let mnt_b = mnt_b.to_str().expect("utf-8");
    let m = env.kubelet(AS_B, &["mountdevice", mnt_b, &dev_b, &opts]);
    assert!(
        m.ok()["message"]
            .as_str()
            .expect("m")
            .contains("mounted existing ext4"),
        "{}",
        m.raw
    );
    assert_eq!(
        std::fs::read(format!("{mnt_b}/data.bin")).expect("read"),
        payload,
        "byte-identical on the new node"
    );
    env.kubelet(AS_B, &["unmountdevice", mnt_b]).ok();
    env.controller(&["detach", "pvc-life", AS_B]).ok();
    // Detach from a node whose VM is gone is a success too.
    env.controller(&["detach", "pvc-life", "no-such-node"]).ok();
}

#[test]
fn a_disk_owned_elsewhere_or_missing_is_refused_by_name() {
    let env = Env::start();
    let disk = env.disk("pvc-owned", 1);
    let opts = env.options(&disk, "pvc-owned", json!({}));
    env.controller(&["attach", &opts, AS_A]).ok();
    let refused = env.controller(&["attach", &opts, AS_B]);
    assert_eq!(refused.status, "Failure");
    assert!(refused.message().contains(AS_A), "{}", refused.raw);
    let ghost = env.options(
        &disk.replace("pvc-owned", "pvc-ghost"),
        "pvc-ghost",
        json!({}),
    );
    let missing = env.controller(&["attach", &ghost, AS_A]);
    assert!(
        missing.message().contains("does not exist"),
        "{}",
        missing.raw
    );
    // A free disk: one attached elsewhere is refused for that before the node is looked up.
    let free = env.options(&env.disk("pvc-free", 1), "pvc-free", json!({}));
    let unknown_node = env.controller(&["attach", &free, "nowhere"]);
    assert_eq!(unknown_node.status, "Failure");
    assert!(
        unknown_node.message().contains("no VM for node nowhere"),
        "{}",
        unknown_node.raw
    );
}

#[test]
fn bad_calls_get_one_failure_line() {
    let env = Env::start();
    for args in [
        vec!["frobnicate"],
        vec![],
        vec!["attach", "{not json", AS_A],
        vec!["attach", "{}"],
        vec!["attach", "{}", AS_A],
        vec!["attach", r#"{"diskURI":"not-an-id"}"#, AS_A],
        vec![
            "mountdevice",
            "/tmp/x",
            "/dev/null",
            r#"{"diskURI":"/subscriptions/s/resourceGroups/r/providers/Microsoft.Compute/disks/d","kubernetes.io/fsType":"zfs"}"#,
        ],
        vec![
            "waitforattach",
            "not-a-lun",
            r#"{"diskURI":"/subscriptions/s/resourceGroups/r/providers/Microsoft.Compute/disks/d"}"#,
        ],
        vec!["unmountdevice"],
    ] {
        let out = env.controller(&args);
        assert_eq!(out.status, "Failure", "{args:?}: {}", out.raw);
        assert_eq!(out.code, 1);
        assert!(!out.message().is_empty());
        assert!(!out.raw.contains("panicked"), "{}", out.raw);
    }
    assert_eq!(
        env.controller(&["mount", "/x", "{}"]).status,
        "Not supported"
    );
}

#[test]
fn limits_static_volumes_sysfs_fallback_and_big_growth() {
    let env = Env::start();
    // The VM size's data-disk limit (B2s: 4), with what to do.
    let opts: Vec<String> = (0..5)
        .map(|i| {
            let name = format!("pvc-limit-{i}");
            let d = env.disk(&name, 1);
            env.options(&d, &name, json!({}))
        })
        .collect();
    for o in &opts[..4] {
        env.controller(&["attach", o, AS_B]).ok();
    }
    let full = env.controller(&["attach", &opts[4], AS_B]);
    assert_eq!(full.status, "Failure");
    assert!(
        full.message()
            .contains("no room for another data disk (its size allows 4)"),
        "{}",
        full.raw
    );

    // A static PV of an existing disk: the volume name is not the disk's; detach still finds it.
    let existing = env.disk("existing-data", 1);
    let static_opts = env.options(&existing, "static-pv", json!({}));
    let lun = env.controller(&["attach", &static_opts, AS_A]).ok()["device"]
        .as_str()
        .expect("lun")
        .to_string();
    // Without udev's link the device is found through sysfs.
    let link = std::path::Path::new(&env.sim.node_field(AS_A, "root"))
        .join(format!("dev/disk/azure/scsi1/lun{lun}"));
    std::fs::remove_file(&link).expect("remove the udev link");
    let dev = env.kubelet(AS_A, &["waitforattach", &lun, &static_opts]);
    assert!(
        dev.ok()["device"]
            .as_str()
            .expect("dev")
            .contains("/dev/sd"),
        "{}",
        dev.raw
    );
    let detached = env.controller(&["detach", "static-pv", AS_A]);
    assert!(
        detached.ok()["message"]
            .as_str()
            .expect("m")
            .contains("detached existing-data"),
        "{}",
        detached.raw
    );
    assert_eq!(
        env.controller(&["isattached", &static_opts, AS_A]).ok()["attached"],
        false
    );

    // Growing across 4 TiB while attached needs a detach: the message says so.
    let big = env.disk("pvc-big", 4000);
    let big_opts = env.options(&big, "pvc-big", json!({}));
    env.controller(&["attach", &big_opts, AS_A]).ok();
    let new = (4200u64 << 30).to_string();
    let old = (4000u64 << 30).to_string();
    let refused = env.controller(&["expandvolume", &big_opts, "/unused", &new, &old]);
    assert_eq!(refused.status, "Failure");
    assert!(
        refused.message().contains("stop the pod"),
        "{}",
        refused.raw
    );
    env.controller(&["detach", "pvc-big", AS_A]).ok();
    env.controller(&["expandvolume", &big_opts, "/unused", &new, &old])
        .ok();
}

/// kubelet reports a volume unmounted, and kube-controller-manager may detach it, once
/// `unmountdevice` answers (kubernetes `pkg/volume/util/operationexecutor/operation_generator.go`:
/// UnmountDevice marks the device unmounted on success — after its own check that a device path
/// is no longer open, `isDeviceOpened`, which sees a mount still there only while the path it
/// holds is the block device — and `GetVolumesInUse` stops listing it; the attach/detach
/// controller's reconciler then detaches). The unmount's flush is what puts a pod's unsynced
/// writes on the disk, so the answer must come after it: on the simulator's nodes, as on Azure,
/// a detach takes the disk from under a filesystem still mounted, and what it had not written
/// is lost.
#[test]
fn unsynced_writes_reach_the_disk_before_unmountdevice_answers() {
    let env = Env::start();
    let disk = env.disk("pvc-unsynced", 1);
    let opts = env.options(&disk, "pvc-unsynced", json!({}));
    let (_, dev) = env.attach_and_wait(AS_A, &opts);
    let mnt_a = env.dir("a/globalmount");
    let mnt_a = mnt_a.to_str().expect("utf-8");
    env.kubelet(AS_A, &["mountdevice", mnt_a, &dev, &opts]).ok();
    // Written as most programs write, without fsync: in the page cache when the pod ends.
    let payload: Vec<u8> = (0..300_000u32).map(|i| (i * 13 % 251) as u8).collect();
    std::fs::write(format!("{mnt_a}/unsynced.bin"), &payload).expect("write");

    env.kubelet(AS_A, &["unmountdevice", mnt_a]).ok();
    env.controller(&["detach", "pvc-unsynced", AS_A]).ok();

    let (_, dev_b) = env.attach_and_wait(AS_B, &opts);
    let mnt_b = env.dir("b/globalmount");
    let mnt_b = mnt_b.to_str().expect("utf-8");
    env.kubelet(AS_B, &["mountdevice", mnt_b, &dev_b, &opts])
        .ok();
    assert!(
        std::fs::read(format!("{mnt_b}/unsynced.bin")).ok() == Some(payload),
        "the bytes written on A before its unmount are not all on the disk"
    );
    env.kubelet(AS_B, &["unmountdevice", mnt_b]).ok();
    env.controller(&["detach", "pvc-unsynced", AS_B]).ok();
}
