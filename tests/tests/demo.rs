//! The README's "run it" command: `flexdisk-sim demo` provisions, attaches, writes on one node,
//! moves to another, reads back and deletes, exiting 0 only when all of it worked; without root it
//! says why it cannot run.

use std::os::unix::process::CommandExt;
use std::process::Command;
use system_tests::bin;

#[test]
fn the_demo_moves_a_volume_between_nodes_and_cleans_up() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = Command::new(bin("flexdisk-sim"))
        .args(["demo", "--dir"])
        .arg(dir.path())
        .args(["--vm-op-ms", "100", "--disk-op-ms", "50"])
        // As an installed program, not under `cargo run` (which would rebuild the siblings).
        .env_remove("CARGO")
        .env_remove("CARGO_MANIFEST_DIR")
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for step in [
        "Bound to pvc-",
        "attach to k8s-agentpool1-31415926-0 (LUN 0)",
        "mkfs.ext4",
        "wrote hello.txt",
        "drain k8s-agentpool1-31415926-0",
        "attach to k8s-agentpool1-31415926-1",
        "read hello.txt: identical",
        "PV and Azure disk gone",
        "demo passed",
    ] {
        assert!(text.contains(step), "{step:?} missing from:\n{text}");
    }
    // Each timeline line carries its ARM writes: one per attach and detach.
    let writes = |needle: &str| -> u32 {
        let line = text.lines().find(|l| l.contains(needle)).expect("line");
        line.split("ARM")
            .nth(1)
            .and_then(|r| r.trim().split('w').next())
            .and_then(|n| n.trim().parse().ok())
            .expect("write count")
    };
    assert_eq!(writes("attach to k8s-agentpool1-31415926-1"), 1);
    assert_eq!(writes("drain"), 1);
    // The driver logged to files, never to its output (the demo parsed every reply as JSON).
    assert!(dir.path().join("flexdisk-controller.log").exists());
}

#[test]
fn without_root_the_demo_says_what_it_needs() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = Command::new(bin("flexdisk-sim"))
        .args(["demo", "--dir"])
        .arg(dir.path().join("nobody"))
        .env_remove("CARGO")
        .env_remove("CARGO_MANIFEST_DIR")
        .uid(65534)
        .gid(65534)
        .output()
        .expect("runs");
    assert_ne!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("the demo needs root"), "{text}");
    assert!(text.contains("loop devices"), "{text}");
}
