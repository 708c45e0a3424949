//! ARM reads and writes are a budget shared by the whole subscription: kube-controller-manager's
//! per-minute `isattached` round costs about one VM read per VM, a throttled batch is not re-sent
//! request by request, and Azure's `Retry-After` holds for every driver process, not just the one
//! that heard it. Per-call read counts are printed for BENCHMARKS.md.

mod common;

use common::*;
use serde_json::json;
use std::time::{Duration, Instant};

fn counters(env: &Env) -> serde_json::Value {
    env.sim
        .control("GET", "/counters", None)
        .expect("counters")
        .1
}

fn count(c: &serde_json::Value, key: &str) -> u64 {
    c[key].as_u64().unwrap_or(0)
}

fn reset(env: &Env) {
    env.sim.control("DELETE", "/counters", None).expect("reset");
}

#[test]
fn an_isattached_round_reads_each_vm_once() {
    let env = Env::start();
    let opts: Vec<String> = (0..6)
        .map(|i| {
            let pv = format!("pvc-round-{i}");
            env.options(&env.disk(&pv, 1), &pv, json!({}))
        })
        .collect();
    reset(&env);
    env.controller(&["attach", &opts[0], AS_A]).ok();
    let attach_reads = count(&counters(&env), "reads");
    for o in &opts[1..] {
        env.controller(&["attach", o, AS_A]).ok();
    }
    // A minute later the view of the last attach is stale: the round starts from nothing.
    std::fs::remove_dir_all(env.state_dir("controller").join("vms")).expect("views");
    reset(&env);
    for o in &opts {
        assert_eq!(
            env.controller(&["isattached", o, AS_A]).ok()["attached"],
            true
        );
    }
    let round = counters(&env);
    println!(
        "isattached round for 6 volumes on one VM: {} ARM reads ({round})",
        count(&round, "reads")
    );
    assert!(count(&round, "reads") <= 2, "{round}");
    assert_eq!(count(&round, "writes"), 0);

    reset(&env);
    env.controller_on("fresh", &["detach", "pvc-round-0", AS_A])
        .ok();
    let detach = counters(&env);
    reset(&env);
    env.controller_on("fresh", &["detach", "pvc-round-0", AS_A])
        .ok();
    let detach_absent = counters(&env);
    println!(
        "reads per call: attach (first, with tagging) {attach_reads}; detach {} {detach}; \
         detach of a disk not on the VM {} {detach_absent}",
        count(&detach, "reads"),
        count(&detach_absent, "reads")
    );
    // Not on the VM: the VM and each of its 5 other disks, and no write.
    assert_eq!(count(&detach_absent, "reads"), 6, "{detach_absent}");
    assert_eq!(count(&detach_absent, "writes"), 0, "{detach_absent}");
    assert!(!env.vm_disks(AS_A).contains(&"pvc-round-0".to_string()));
}

/// A throttled attach with Retry-After 30 s: no driver process writes to ARM before the 30 s
/// are up — not the throttled one (it fails at once instead of carrying its batch through a wait),
/// not fresh processes for this or another VM, retried as kube-controller-manager retries them —
/// and the same calls succeed after.
#[test]
fn retry_after_holds_for_every_driver_process() {
    let env = Env::start();
    let a = env.options(&env.disk("pvc-thr-a", 1), "pvc-thr-a", json!({}));
    let b = env.options(&env.disk("pvc-thr-b", 1), "pvc-thr-b", json!({}));
    let (status, _) = env
        .sim
        .control(
            "POST",
            "/faults",
            Some(&json!({"operation": "VirtualMachines_AttachDetachDataDisks", "times": 1,
                "action": {"kind": "status", "status": 429, "code": "SubscriptionRequestsThrottled", "retryAfter": 30}})),
        )
        .expect("fault");
    assert_eq!(status, 201);
    let first = env.controller(&["attach", &a, AS_A]);
    let throttled_at = Instant::now();
    assert_eq!(first.status, "Failure", "{}", first.raw);
    assert!(first.message().contains("throttled"), "{}", first.raw);
    let writes_then = count(&counters(&env), "writes");
    let mut refused = 0;
    loop {
        let (attach_a, attach_b) = (
            env.controller(&["attach", &a, AS_A]),
            env.controller(&["attach", &b, AS_B]),
        );
        if attach_a.status == "Success" && attach_b.status == "Success" {
            break;
        }
        let elapsed = throttled_at.elapsed();
        for out in [&attach_a, &attach_b] {
            if out.status != "Success" {
                assert!(out.message().contains("not sent"), "{}", out.raw);
            }
        }
        let writes = count(&counters(&env), "writes");
        if elapsed < Duration::from_secs(29) {
            assert_eq!(
                writes,
                writes_then,
                "an ARM write {:.1}s into a 30 s Retry-After",
                elapsed.as_secs_f64()
            );
        }
        refused += 1;
        assert!(
            elapsed < Duration::from_secs(90),
            "the attaches never went through"
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    println!(
        "{refused} rounds of retried attaches refused without a write; both done {:.1}s after the 429",
        throttled_at.elapsed().as_secs_f64()
    );
    assert!(refused >= 5, "retries happened during the 30 s");
    assert!(env.vm_disks(AS_A).contains(&"pvc-thr-a".to_string()));
    assert!(env.vm_disks(AS_B).contains(&"pvc-thr-b".to_string()));
}

/// A batch throttled for longer than a call waits (90 s): every request of the batch fails with
/// the throttling — none is re-sent alone — and a fresh process fails at once without writing.
#[test]
fn a_throttled_batch_is_not_resent_one_by_one() {
    let env = Env::start_with(&["--vm-op-ms", "150"]);
    let opts: Vec<String> = (0..3)
        .map(|i| {
            let pv = format!("pvc-storm-{i}");
            let o = env.options(&env.disk(&pv, 1), &pv, json!({}));
            // Tagged beforehand, so the attaches below write nothing but their batch.
            env.controller(&["attach", &o, AS_B]).ok();
            env.controller(&["detach", &pv, AS_B]).ok();
            o
        })
        .collect();
    env.sim
        .control(
            "POST",
            "/faults",
            Some(&json!({"operation": "VirtualMachines_AttachDetachDataDisks",
                "action": {"kind": "status", "status": 429, "code": "SubscriptionRequestsThrottled", "retryAfter": 90}})),
        )
        .expect("fault");
    reset(&env);
    // Two requests that arrive together share one batch: both wait behind the VM's lock (held
    // here, as by an operation in flight) until both are in the spool.
    let spool = env.state_dir("controller").join("spool").join(AS_A);
    std::fs::create_dir_all(&spool).expect("spool");
    let lock = std::fs::File::create(spool.join(".lock")).expect("lock file");
    let held = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .expect("lock");
    let children: Vec<_> = opts[..2]
        .iter()
        .map(|o| env.controller_spawn(&["attach", o, AS_A]))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_dir(&spool)
        .expect("spool")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".req"))
        .count()
        < 2
    {
        assert!(
            Instant::now() < deadline,
            "the requests never reached the spool"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(held);
    for c in children {
        let out = Out::from_output(c.wait_with_output().expect("ends"));
        assert_eq!(out.status, "Failure", "{}", out.raw);
        assert!(out.message().contains("throttled"), "{}", out.raw);
    }
    let c = counters(&env);
    assert_eq!(
        count(&c, "VirtualMachines_AttachDetachDataDisks"),
        1,
        "one batch, not re-sent: {c}"
    );
    let log = std::fs::read_to_string(env.tmp.path().join("flexdisk.log")).expect("log");
    assert!(
        log.contains("sending a batch") && log.contains("attach=2"),
        "the two requests shared one batch:\n{log}"
    );
    assert!(!log.contains("one by one"), "re-sent one by one:\n{log}");
    let fresh = env.controller(&["attach", &opts[2], AS_A]);
    assert_eq!(fresh.status, "Failure", "{}", fresh.raw);
    assert!(fresh.message().contains("not sent"), "{}", fresh.raw);
    let c = counters(&env);
    assert_eq!(count(&c, "writes"), 1, "{c}");
    assert_eq!(env.vm_disks(AS_A), Vec::<String>::new());
}

/// A throttling record far ahead (a `Retry-After` of a day, a clock stepped back since it was
/// written) keeps processes away no longer than the longest `Retry-After` Azure sends (30 min).
#[test]
fn a_throttling_record_far_ahead_is_bounded() {
    let env = Env::start();
    let a = env.options(&env.disk("pvc-far", 1), "pvc-far", json!({}));
    let dir = env.state_dir("controller").join("throttle");
    std::fs::create_dir_all(&dir).expect("dir");
    let day_ahead = std::time::SystemTime::now() + Duration::from_secs(86_400);
    let ms = day_ahead
        .duration_since(std::time::UNIX_EPOCH)
        .expect("epoch")
        .as_millis();
    std::fs::write(
        dir.join(format!("{}.writes", env.arm.subscription)),
        ms.to_string(),
    )
    .expect("record");
    let out = env.controller(&["attach", &a, AS_A]);
    assert_eq!(out.status, "Failure", "{}", out.raw);
    let secs: u64 = out
        .message()
        .split("for another ")
        .nth(1)
        .and_then(|rest| rest.split('s').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no wait in {}", out.raw));
    assert!(secs <= 1800, "refuses for {secs}s: {}", out.raw);
}

/// A lone attach and detach after a warm round (the poller has learnt how long the VM's
/// operations take). The attach of a disk claimed long enough ago reads 3 times — the disk, the
/// VM (read by the batch's holder), one poll; of a disk claimed minutes ago 4 — its tag is read
/// again after the attach, a writer that read the disk before the claim may still write. The
/// detach: the VM, the PV's disk, one poll.
#[test]
fn lone_attach_reads_three_times_four_after_a_young_claim() {
    let env = Env::start();
    let o = env.options(&env.disk("pvc-lone", 1), "pvc-lone", json!({}));
    for _ in 0..2 {
        env.controller(&["attach", &o, AS_A]).ok();
        env.controller(&["detach", "pvc-lone", AS_A]).ok();
    }
    reset(&env);
    env.controller(&["attach", &o, AS_A]).ok();
    let young = counters(&env);
    env.controller(&["detach", "pvc-lone", AS_A]).ok();
    env.age_claim("pvc-lone", Duration::from_secs(15 * 60));
    reset(&env);
    env.controller(&["attach", &o, AS_A]).ok();
    let aged = counters(&env);
    reset(&env);
    env.controller(&["detach", "pvc-lone", AS_A]).ok();
    let detach = counters(&env);
    println!(
        "lone attach {} ARM reads {aged} ({} with a claim minutes old {young}); lone detach {} ARM reads {detach}",
        count(&aged, "reads"),
        count(&young, "reads"),
        count(&detach, "reads")
    );
    assert!(count(&aged, "reads") <= 3, "{aged}");
    assert!(count(&young, "reads") <= 4, "{young}");
    assert!(count(&detach, "reads") <= 3, "{detach}");
    for c in [&aged, &young] {
        assert_eq!(count(c, "writes"), 1, "the claim is kept: no tag write {c}");
    }
    assert_eq!(count(&detach, "writes"), 1);
}

/// Attaches to `node` of `opts`, started together and released at once from behind the VM's
/// batching lock (as one pass of kube-controller-manager's reconciler starts them); their LUNs.
fn burst(env: &Env, opts: &[String], node: &str) -> Vec<i64> {
    let held = env.hold_batches("controller", node);
    let children: Vec<_> = opts
        .iter()
        .map(|o| env.controller_spawn(&["attach", o, node]))
        .collect();
    env.wait_for_requests("controller", node, opts.len());
    drop(held);
    children
        .into_iter()
        .map(|c| {
            Out::from_output(c.wait_with_output().expect("attach ends")).ok()["device"]
                .as_str()
                .expect("lun")
                .parse()
                .expect("number")
        })
        .collect()
}

/// A burst of 8 attaches to one VM: one write, and N + 2 reads when the disks' claims are old
/// enough (each process reads its disk, the holder reads the VM once for all and polls once);
/// every answered LUN is where the VM lists the disk. Fresh claims add a check of each tag.
#[test]
fn a_burst_of_n_attaches_reads_n_plus_two() {
    let env = Env::start();
    let names: Vec<String> = (0..8).map(|i| format!("pvc-burst-{i}")).collect();
    let opts: Vec<String> = names
        .iter()
        .map(|n| env.options(&env.disk(n, 1), n, json!({})))
        .collect();
    // A warm round: the poller learns the operation's length; every disk is claimed.
    reset(&env);
    burst(&env, &opts, AS_A);
    let fresh = counters(&env);
    let detach: Vec<_> = names
        .iter()
        .map(|n| env.controller_spawn(&["detach", n, AS_A]))
        .collect();
    for c in detach {
        Out::from_output(c.wait_with_output().expect("detach ends")).ok();
    }
    for n in &names {
        env.age_claim(n, Duration::from_secs(15 * 60));
    }
    reset(&env);
    let luns = burst(&env, &opts, AS_A);
    let aged = counters(&env);
    println!(
        "a burst of 8 attaches to one VM: {} ARM reads, {} attachDetachDataDisks ({aged}); \
         the first, claiming each disk: {} reads, {} writes ({fresh})",
        count(&aged, "reads"),
        count(&aged, "VirtualMachines_AttachDetachDataDisks"),
        count(&fresh, "reads"),
        count(&fresh, "writes")
    );
    assert_eq!(
        count(&aged, "VirtualMachines_AttachDetachDataDisks"),
        1,
        "{aged}"
    );
    assert_eq!(count(&aged, "writes"), 1, "{aged}");
    assert!(count(&aged, "reads") <= 8 + 2, "{aged}");
    let vm = env.rt.block_on(env.arm.node_vm(AS_A)).expect("vm");
    for (name, lun) in names.iter().zip(&luns) {
        let listed = vm
            .disks
            .iter()
            .find(|d| &d.name == name)
            .unwrap_or_else(|| panic!("{name} not on the VM"));
        assert_eq!(i64::from(listed.lun), *lun, "{name}");
    }
}

/// A host's first attach and first detach (nothing learnt yet about how long the VM's operations
/// take; 1 s here) read at most 5 times each: the disk and the VM, and at most 3 polls.
#[test]
fn a_hosts_first_operation_reads_at_most_five_times() {
    let env = Env::start_with(&["--vm-op-ms", "1000"]);
    let o = env.options(&env.disk("pvc-first", 1), "pvc-first", json!({}));
    env.controller_on("warm", &["attach", &o, AS_A]).ok();
    env.controller_on("warm", &["detach", "pvc-first", AS_A])
        .ok();
    env.age_claim("pvc-first", Duration::from_secs(15 * 60));
    reset(&env);
    env.controller_on("fresh-1", &["attach", &o, AS_A]).ok();
    let attach = counters(&env);
    reset(&env);
    env.controller_on("fresh-2", &["detach", "pvc-first", AS_A])
        .ok();
    let detach = counters(&env);
    println!(
        "a host's first attach (1 s operation) {} ARM reads {attach}; first detach {} {detach}",
        count(&attach, "reads"),
        count(&detach, "reads")
    );
    assert!(count(&attach, "reads") <= 5, "{attach}");
    assert!(count(&detach, "reads") <= 5, "{detach}");
    assert!(!env.vm_disks(AS_A).contains(&"pvc-first".to_string()));
}
