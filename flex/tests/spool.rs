//! The cross-process batching spool carries out a request only while its requester lives: an
//! attach or detach whose process was SIGKILLed while another process's batch was in flight
//! never happens — not in that batch's successor, not in any later process's batch.

mod common;

use common::*;
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

/// Waits until the process's request file is in the VM's spool (so the kill leaves it behind).
fn wait_for_request(spool: &Path, pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let placed = std::fs::read_dir(spool).ok().is_some_and(|entries| {
            entries.flatten().any(|e| {
                let n = e.file_name().to_string_lossy().to_string();
                n.starts_with(&format!("{pid}-")) && n.ends_with(".req")
            })
        });
        if placed {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "process {pid} never placed its request"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn kill(child: &mut std::process::Child) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill");
    let _ = child.wait();
}

fn finish(child: std::process::Child) -> Out {
    Out::from_output(child.wait_with_output().expect("ends"))
}

#[test]
fn requests_of_killed_requesters_are_never_carried_out() {
    // A slow VM operation keeps a batch in flight long enough to queue behind it.
    let env = Env::start_with(&["--vm-op-ms", "2500"]);
    let opts: Vec<String> = (0..6)
        .map(|i| {
            let pv = format!("pvc-ghost-{i}");
            env.options(&env.disk(&pv, 1), &pv, json!({}))
        })
        .collect();
    let spool = env.state_dir("controller").join("spool").join(AS_A);

    // Attach: 0 in flight, 1 queued then killed, 2 queued (the successor batch).
    let holder = env.controller_spawn(&["attach", &opts[0], AS_A]);
    std::thread::sleep(Duration::from_millis(800));
    let mut ghost = env.controller_spawn(&["attach", &opts[1], AS_A]);
    wait_for_request(&spool, ghost.id());
    let successor = env.controller_spawn(&["attach", &opts[2], AS_A]);
    wait_for_request(&spool, successor.id());
    kill(&mut ghost);
    finish(holder).ok();
    finish(successor).ok();
    let on_a = env.vm_disks(AS_A);
    assert!(on_a.contains(&"pvc-ghost-0".into()) && on_a.contains(&"pvc-ghost-2".into()));
    assert!(
        !on_a.contains(&"pvc-ghost-1".into()),
        "the killed process's attach was carried out: {on_a:?}"
    );

    // Detach: 0 and 2 are attached; a detach of 0 is queued behind an attach in flight and
    // killed; later processes' batches leave 0 attached.
    let holder = env.controller_spawn(&["attach", &opts[3], AS_A]);
    std::thread::sleep(Duration::from_millis(800));
    let mut ghost = env.controller_spawn(&["detach", "pvc-ghost-0", AS_A]);
    wait_for_request(&spool, ghost.id());
    let successor = env.controller_spawn(&["attach", &opts[4], AS_A]);
    wait_for_request(&spool, successor.id());
    kill(&mut ghost);
    finish(holder).ok();
    finish(successor).ok();
    // Any later process's batch.
    env.controller(&["attach", &opts[5], AS_A]).ok();
    env.controller(&["detach", "pvc-ghost-2", AS_A]).ok();
    let on_a = env.vm_disks(AS_A);
    assert!(
        on_a.contains(&"pvc-ghost-0".into()),
        "the killed process's detach was carried out: {on_a:?}"
    );
    assert!(!on_a.contains(&"pvc-ghost-2".into()));
    // Nothing is left in the spool for anyone.
    let left: Vec<String> = std::fs::read_dir(&spool)
        .expect("spool")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "leftovers in the spool: {left:?}");
}

#[test]
fn announced_requests_are_waited_for_only_while_their_process_lives() {
    let env = Env::start();
    let spool = env.state_dir("controller").join("spool").join(AS_A);
    std::fs::create_dir_all(&spool).expect("spool");
    // A process that announced its request and died before posting it: nobody's lock on it.
    let dead = spool.join("999999-1.coming");
    std::fs::write(&dead, b"").expect("dead announcement");
    // One that lives (this test holds its lock) but never posts: the holder waits for it no
    // longer than the gathering window, then sends what it has.
    let live = spool.join("999998-1.coming");
    let file = std::fs::File::create(&live).expect("live announcement");
    let held = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|(_, e)| e)
        .expect("lock");
    let opts = env.options(&env.disk("pvc-announced", 1), "pvc-announced", json!({}));
    let out = env.controller(&["attach", &opts, AS_A]);
    assert_eq!(out.status, "Success", "{}", out.raw);
    assert!(env.vm_disks(AS_A).contains(&"pvc-announced".into()));
    assert!(!dead.exists(), "the dead process's announcement was left");
    assert!(live.exists(), "a live process's announcement was removed");
    drop(held);
    // Its own announcement is gone with the request.
    let left: Vec<String> = std::fs::read_dir(&spool)
        .expect("spool")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| !n.starts_with('.') && n.as_str() != "999998-1.coming")
        .collect();
    assert!(left.is_empty(), "leftovers in the spool: {left:?}");
}
