//! Every answer is what Azure did (DESIGN.md, behaviour 15), across control-plane hosts, failed
//! sends and dead callers: two state directories stand for two hosts; the VM's batching lock
//! and announcements, held by the test, order the processes without relying on timing.

mod common;

use common::*;
use flexdisk::ownership::CLAIM_TAG;
use flexdisk_azure::naming::PV_TAG;
use serde_json::json;
use std::time::{Duration, Instant};

/// Views kept long enough that a test never depends on how fast it runs.
const LONG_VIEW: (&str, &str) = ("FLEXDISK_VM_VIEW_SECS", "600");
/// The lock holder keeps its batch open for announced requests this long at most.
const LONG_WINDOW: (&str, &str) = ("FLEXDISK_BATCH_WINDOW_MS", "120000");

fn finish(child: std::process::Child) -> Out {
    Out::from_output(child.wait_with_output().expect("ends"))
}

fn kill(child: &mut std::process::Child) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill");
    let _ = child.wait();
}

/// Host 1 read the VM, host 2 attached a disk to it: host 1's `isattached` of that disk says
/// attached (its view predates the attach: only "attached" may come from it).
#[test]
fn isattached_never_denies_another_hosts_attach() {
    let env = Env::start();
    let d5 = env.options(&env.disk("pvc-view-5", 1), "pvc-view-5", json!({}));
    let d6 = env.options(&env.disk("pvc-view-6", 1), "pvc-view-6", json!({}));
    env.controller_on_with("cp-1", &["attach", &d5, AS_A], &[LONG_VIEW])
        .ok();
    env.controller_on_with("cp-2", &["attach", &d6, AS_A], &[LONG_VIEW])
        .ok();
    let asked = env.controller_on_with("cp-1", &["isattached", &d6, AS_A], &[LONG_VIEW]);
    assert_eq!(
        asked.ok()["attached"],
        true,
        "host 1 denied host 2's attach: {}",
        asked.raw
    );
    // What the view shows attached costs no read; "not attached" costs one, even right after
    // this host's own detach (its view then lacks the disk: only a read now may say so).
    env.sim.control("DELETE", "/counters", None).expect("reset");
    let kept = env.controller_on_with("cp-1", &["isattached", &d5, AS_A], &[LONG_VIEW]);
    assert_eq!(kept.ok()["attached"], true);
    assert_eq!(env.counter("reads"), 0, "answered from the view");
    env.controller_on_with("cp-2", &["detach", "pvc-view-6", AS_A], &[LONG_VIEW])
        .ok();
    env.sim.control("DELETE", "/counters", None).expect("reset");
    let gone = env.controller_on_with("cp-2", &["isattached", &d6, AS_A], &[LONG_VIEW]);
    assert_eq!(gone.ok()["attached"], false, "{}", gone.raw);
    assert_eq!(env.counter("reads"), 1, "a fresh read of the VM");
}

/// A batch of two detaches whose lock holder read the VM before host 2 attached the second
/// disk: both are carried out, and each answer is what Azure did.
#[test]
fn a_batch_is_answered_from_azure_not_from_the_holders_old_read() {
    let env = Env::start();
    let d1 = env.options(&env.disk("pvc-old-1", 1), "pvc-old-1", json!({}));
    let d2 = env.options(&env.disk("pvc-old-2", 1), "pvc-old-2", json!({}));
    env.controller_on("cp-1", &["attach", &d1, AS_A]).ok();
    // Someone is on the way: the holder keeps the batch open until the test lets it go.
    let coming = env.announce_coming("cp-1", AS_A);
    let holder = env.controller_spawn_on("cp-1", &["detach", "pvc-old-1", AS_A], &[LONG_WINDOW]);
    env.wait_for_requests("cp-1", AS_A, 1);
    // Host 2 attaches the second disk after the holder's read of the VM.
    env.controller_on("cp-2", &["attach", &d2, AS_A]).ok();
    let second = env.controller_spawn_on("cp-1", &["detach", "pvc-old-2", AS_A], &[LONG_WINDOW]);
    env.wait_for_requests("cp-1", AS_A, 2);
    drop(coming);
    let (first, second) = (finish(holder), finish(second));
    first.ok();
    second.ok();
    let left = env.vm_disks(AS_A);
    assert!(
        !left.contains(&"pvc-old-1".to_string()) && !left.contains(&"pvc-old-2".to_string()),
        "both detaches answered Success while the VM lists {left:?}"
    );
    let log = std::fs::read_to_string(env.tmp.path().join("flexdisk.log")).expect("log");
    assert!(
        log.contains("sending a batch") && log.contains("detach=2"),
        "the two detaches shared one batch:\n{log}"
    );
}

/// A batch's POST fails (ARM 500) while one requester is killed: the transport's retries carry
/// on without its request — an attach and a detach alike.
#[test]
fn a_killed_callers_request_leaves_a_retried_batch() {
    let env = Env::start();
    let opts: Vec<String> = ["pvc-retry-a", "pvc-retry-b", "pvc-retry-c", "pvc-retry-d"]
        .iter()
        .map(|pv| env.options(&env.disk(pv, 1), pv, json!({})))
        .collect();
    // d is attached; its detach will be the killed request of the second round.
    env.controller(&["attach", &opts[3], AS_A]).ok();

    for (holder_args, victim_args, victim_disk) in [
        (
            vec!["attach", opts[0].as_str(), AS_A],
            vec!["attach", opts[1].as_str(), AS_A],
            "pvc-retry-b",
        ),
        (
            vec!["attach", opts[2].as_str(), AS_A],
            vec!["detach", "pvc-retry-d", AS_A],
            "pvc-retry-d",
        ),
    ] {
        let before = env.vm_disks(AS_A).contains(&victim_disk.to_string());
        let coming = env.announce_coming("controller", AS_A);
        let holder = env.controller_spawn_on("controller", &holder_args, &[LONG_WINDOW]);
        env.wait_for_requests("controller", AS_A, 1);
        let mut victim = env.controller_spawn_on("controller", &victim_args, &[LONG_WINDOW]);
        env.wait_for_requests("controller", AS_A, 2);
        let rule = env.fault(json!({"operation": "VirtualMachines_AttachDetachDataDisks",
            "action": {"kind": "status", "status": 500}}));
        env.sim.control("DELETE", "/counters", None).expect("reset");
        drop(coming);
        let deadline = Instant::now() + Duration::from_secs(60);
        while env.counter("VirtualMachines_AttachDetachDataDisks") == 0 {
            assert!(Instant::now() < deadline, "the batch was never sent");
            std::thread::sleep(Duration::from_millis(5));
        }
        // The batch failed at least once with both requests in it; its caller dies now.
        kill(&mut victim);
        env.remove_fault(rule);
        finish(holder).ok();
        let after = env.vm_disks(AS_A).contains(&victim_disk.to_string());
        assert_eq!(
            after, before,
            "the killed caller's {} of {victim_disk} was carried out by a retry",
            victim_args[0]
        );
    }
    let on_a = env.vm_disks(AS_A);
    assert!(on_a.contains(&"pvc-retry-a".to_string()) && on_a.contains(&"pvc-retry-c".to_string()));
}

fn disk_tags(env: &Env, name: &str) -> std::collections::BTreeMap<String, String> {
    env.rt
        .block_on(env.arm.get_disk(&env.arm.resource_group, name))
        .expect("disk read")
        .expect("disk exists")
        .tags
}

/// Two PVs name one disk. PV X's attach is held between its claim and its attach (its VM's
/// batch lock is taken); PV Y's attach, on another host and node, must not retag the disk
/// meanwhile — else X's attach wins and `detach X` no longer finds its disk.
#[test]
fn another_pvs_attach_never_retags_a_disk_on_its_way() {
    let env = Env::start();
    let disk = env.disk("shared-name", 1);
    let x = env.options(&disk, "pv-x", json!({}));
    let y = env.options(&disk, "pv-y", json!({}));

    let held_a = env.hold_batches("cp-1", AS_A);
    let held_b = env.hold_batches("cp-2", AS_B);
    let attach_x = env.controller_spawn_on("cp-1", &["attach", &x, AS_A], &[]);
    env.wait_for_requests("cp-1", AS_A, 1);
    assert_eq!(
        disk_tags(&env, "shared-name")
            .get(PV_TAG)
            .map(String::as_str),
        Some("pv-x"),
        "X claimed the disk before waiting"
    );
    let mut attach_y = env.controller_spawn_on("cp-2", &["attach", &y, AS_B], &[]);
    // Y either refuses at once or (retagging) waits for its batch behind the held lock.
    let spool_b = env.spool("cp-2", AS_B);
    let deadline = Instant::now() + Duration::from_secs(60);
    let y_refused = loop {
        if attach_y.try_wait().expect("wait").is_some() {
            break true;
        }
        let posted = std::fs::read_dir(&spool_b)
            .expect("spool")
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".req"));
        if posted {
            break false;
        }
        assert!(
            Instant::now() < deadline,
            "Y's attach neither refused nor posted"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    drop(held_a);
    let x_out = finish(attach_x);
    drop(held_b);
    let y_out = finish(attach_y);
    x_out.ok();
    assert_eq!(y_out.status, "Failure", "{}", y_out.raw);
    assert!(
        y_refused && y_out.message().contains("serves PV pv-x"),
        "Y retagged the disk X was attaching: {}",
        y_out.raw
    );
    let detach_x = env.controller_on("cp-3", &["detach", "pv-x", AS_A]);
    detach_x.ok();
    assert!(
        !env.vm_disks(AS_A).contains(&"shared-name".to_string()),
        "detach of pv-x answered {} while its disk is on {AS_A}",
        detach_x.raw
    );
}

/// A writer that read the disk before X's claim and writes another PV's tag after it (held
/// here between claim and attach, the tag rewritten behind its back) is undone by X's check
/// after its attach: `detach X` still finds its disk.
#[test]
fn an_attach_puts_its_tag_back_over_a_stale_writer() {
    let env = Env::start();
    let disk = env.disk("stale-tag", 1);
    let x = env.options(&disk, "pv-x", json!({}));
    let held_a = env.hold_batches("cp-1", AS_A);
    let attach_x = env.controller_spawn_on("cp-1", &["attach", &x, AS_A], &[]);
    env.wait_for_requests("cp-1", AS_A, 1);
    let mut stale = disk_tags(&env, "stale-tag");
    stale.insert(PV_TAG.into(), "pv-y".into());
    stale.insert(CLAIM_TAG.into(), "1".into());
    env.rt
        .block_on(env.arm.set_disk_tags(
            &env.arm.resource_group,
            "stale-tag",
            &stale,
            in_a_minute(),
        ))
        .expect("retag");
    drop(held_a);
    finish(attach_x).ok();
    assert_eq!(
        disk_tags(&env, "stale-tag").get(PV_TAG).map(String::as_str),
        Some("pv-x"),
        "the attach left another PV's tag on its disk"
    );
    let detach_x = env.controller_on("cp-3", &["detach", "pv-x", AS_A]);
    detach_x.ok();
    assert!(
        !env.vm_disks(AS_A).contains(&"stale-tag".to_string()),
        "detach of pv-x answered {} while its disk is on {AS_A}",
        detach_x.raw
    );
}

/// Host 2 attached D; host 1's attach of D waits behind its VM's batch lock while host 2 detaches
/// D. Host 1's answer comes from a read made after its request was posted: D is attached again,
/// at the LUN it answered — not "attached" from a read older than the detach.
#[test]
fn an_attached_disk_is_answered_from_a_read_made_after_posting() {
    let env = Env::start();
    let d = env.options(&env.disk("pvc-late-read", 1), "pvc-late-read", json!({}));
    env.controller_on("cp-2", &["attach", &d, AS_A]).ok();
    let held = env.hold_batches("cp-1", AS_A);
    let attach = env.controller_spawn_on("cp-1", &["attach", &d, AS_A], &[]);
    env.wait_for_requests("cp-1", AS_A, 1);
    let before = env.rt.block_on(env.arm.node_vm(AS_A)).expect("vm");
    let old_lun = before
        .disks
        .iter()
        .find(|x| x.name == "pvc-late-read")
        .expect("attached by host 2")
        .lun;
    env.controller_on("cp-2", &["detach", "pvc-late-read", AS_A])
        .ok();
    // Another disk takes the LUN it had: an answer from a read older than the detach would
    // name that LUN.
    let other = env.options(&env.disk("pvc-late-other", 1), "pvc-late-other", json!({}));
    let other_lun = env.controller_on("cp-2", &["attach", &other, AS_A]).ok()["device"]
        .as_str()
        .expect("lun")
        .parse::<i32>()
        .expect("number");
    assert_eq!(other_lun, old_lun, "the freed LUN is reused");
    drop(held);
    let out = finish(attach);
    let lun: i32 = out.ok()["device"]
        .as_str()
        .expect("lun")
        .parse()
        .expect("number");
    let vm = env.rt.block_on(env.arm.node_vm(AS_A)).expect("vm");
    let listed = vm.disks.iter().find(|x| x.name == "pvc-late-read");
    assert_eq!(
        listed.map(|x| x.lun),
        Some(lun),
        "answered LUN {lun} while the VM lists {:?}",
        vm.disks
    );
}
