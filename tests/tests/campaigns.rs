//! Fault campaigns with fixed seeds. Each runs the same workload — claims provisioned, pods on
//! three nodes writing data, every pod moved to another node, then everything deleted — under one
//! kind of fault, and checks after it: no disk leaked or duplicated, no data lost, every claim
//! Bound, no disk ever attached to two VMs (sampled throughout). A summary table is printed.
//! `FLEXDISK_CAMPAIGN_CLAIMS` (default 9) sizes the workload; a long run sets it higher.

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use system_tests::emulator::SeededKills;
use system_tests::scene::{check, setup, write, Scene, NODES};

/// A seeded xorshift generator: the same campaign, the same moments.
struct Seeded(u64);

impl Seeded {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below.max(1)
    }
}

struct Report {
    campaign: &'static str,
    seed: u64,
    faults: String,
    claims: usize,
    arm_writes: u64,
    failures_retried: u32,
    double_attach: usize,
    secs: f64,
}

fn claims_per_campaign() -> usize {
    std::env::var("FLEXDISK_CAMPAIGN_CLAIMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(9)
}

/// Samples Azure's attachments until stopped; counts disks seen on two VMs at once.
fn watch_attachments(s: &Scene, stop: &AtomicBool) -> usize {
    let mut seen = 0;
    while !stop.load(Ordering::SeqCst) {
        seen += s
            .cluster
            .attachments()
            .values()
            .filter(|vms| vms.len() > 1)
            .count();
        std::thread::sleep(Duration::from_millis(100));
    }
    seen
}

fn pvc_disks(s: &Scene) -> Vec<String> {
    let mut d: Vec<String> = s
        .cluster
        .disks()
        .values()
        .filter_map(|d| d["name"].as_str().map(str::to_string))
        .filter(|n| n.starts_with("pvc-"))
        .collect();
    d.sort();
    d
}

/// The workload. `chaos` runs beside it (with the scene) until the workload ends; `between` is
/// called at a few seeded moments of the workload with mutable access (provisioner restarts).
fn workload(
    s: &mut Scene,
    tag: &str,
    seed: u64,
    chaos: impl Fn(&Scene, &AtomicBool) + Send + Sync,
    mut between: impl FnMut(&mut Scene, &mut Seeded),
) -> Outcome {
    let n = claims_per_campaign();
    let mut rng = Seeded(seed | 1);
    let stop = AtomicBool::new(false);
    let writes0 = s.cluster.arm_count("writes");
    let names: Vec<String> = (0..n).map(|i| format!("{tag}-{i}")).collect();
    for name in &names {
        s.claim(name, "ssd", "1Gi");
    }
    between(s, &mut rng);
    let s: &Scene = s;
    let (doubles, ()) = std::thread::scope(|scope| {
        let watcher = scope.spawn(|| watch_attachments(s, &stop));
        let chaos_thread = scope.spawn(|| chaos(s, &stop));
        let mut uids = BTreeMap::new();
        for (i, name) in names.iter().enumerate() {
            uids.insert(i, s.pod(name, NODES[i % 3], &[name.as_str()]));
        }
        for (i, name) in names.iter().enumerate() {
            let ms = s.running(name, &uids[&i]);
            write(&ms[0], seed + i as u64);
        }
        for name in &names {
            s.delete_pod(name);
        }
        s.until("every disk detached", || s.emu.attached().is_empty());
        for (i, name) in names.iter().enumerate() {
            uids.insert(i, s.pod(name, NODES[(i + 1) % 3], &[name.as_str()]));
        }
        for (i, name) in names.iter().enumerate() {
            let ms = s.running(name, &uids[&i]);
            assert_eq!(ms[0].node, NODES[(i + 1) % 3]);
            check(&ms[0], seed + i as u64);
        }
        // Every claim Bound, one disk per PV and nothing else.
        let pvs: Vec<String> = {
            let mut p: Vec<String> = s
                .cluster
                .kube
                .list("/api/v1/persistentvolumes")
                .expect("pvs")
                .iter()
                .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
                .collect();
            p.sort();
            p
        };
        assert_eq!(pvs.len(), n, "{}", s.diagnostics());
        assert_eq!(pvc_disks(s), pvs, "one disk per PV, nothing else");
        for name in &names {
            s.delete_pod(name);
        }
        s.until("every disk detached again", || s.emu.attached().is_empty());
        for name in &names {
            s.cluster
                .kube
                .delete(&format!(
                    "/api/v1/namespaces/default/persistentvolumeclaims/{name}"
                ))
                .expect("delete claim");
        }
        s.until("no PV and no disk left", || {
            s.cluster
                .kube
                .list("/api/v1/persistentvolumes")
                .is_ok_and(|l| l.is_empty())
                && pvc_disks(s).is_empty()
        });
        stop.store(true, Ordering::SeqCst);
        let _ = chaos_thread.join();
        (watcher.join().unwrap_or(usize::MAX), ())
    });
    (n, s.cluster.arm_count("writes") - writes0, doubles)
}

fn arm_faults(s: &Scene, rules: &[Value]) -> usize {
    for r in rules {
        let (status, body) = s
            .cluster
            .sim
            .control("POST", "/faults", Some(r))
            .expect("fault");
        assert_eq!(status, 201, "{body}");
    }
    rules.len()
}

/// How many of the injected ARM rules fired to exhaustion (each retires itself).
fn retired(s: &Scene, injected: usize) -> usize {
    let (_, left) = s
        .cluster
        .sim
        .control("GET", "/faults", None)
        .expect("faults");
    injected - left.as_array().map(Vec::len).unwrap_or(0)
}

/// What a campaign's workload gave: claims, ARM writes, double attaches seen.
type Outcome = (usize, u64, usize);

fn report(
    campaign: &'static str,
    seed: u64,
    faults: String,
    s: &Scene,
    started: Instant,
    (claims, arm_writes, double_attach): Outcome,
) -> Report {
    Report {
        campaign,
        seed,
        faults,
        claims,
        arm_writes,
        failures_retried: s.emu.counts().failures,
        double_attach,
        secs: started.elapsed().as_secs_f64(),
    }
}

fn row(r: &Report) -> String {
    format!(
        "| {:<26} | {:>8x} | {:<62} | {:>6} | {:>10} | {:>7} | {:>13} | {:>5.1} |",
        r.campaign,
        r.seed,
        r.faults,
        r.claims,
        r.arm_writes,
        r.failures_retried,
        r.double_attach,
        r.secs
    )
}

fn run_arm_campaign(
    campaign: &'static str,
    seed: u64,
    rules: Vec<Value>,
    describe: &str,
) -> Report {
    let started = Instant::now();
    let mut s = setup();
    let injected = arm_faults(&s, &rules);
    let outcome = workload(&mut s, "c", seed, |_, _| {}, |_, _| {});
    let fired = retired(&s, injected);
    assert_eq!(
        fired,
        injected,
        "every injected fault fired:\n{}",
        s.diagnostics()
    );
    report(
        campaign,
        seed,
        format!("{fired}/{injected} rules: {describe}"),
        &s,
        started,
        outcome,
    )
}

fn arm_429_storm() -> Report {
    run_arm_campaign(
        "ARM 429 storm",
        0x429,
        vec![
            json!({"operation": "VirtualMachines_AttachDetachDataDisks", "times": 6,
                   "action": {"kind": "status", "status": 429, "retryAfter": 1}}),
            json!({"operation": "Disks_CreateOrUpdate", "times": 4,
                   "action": {"kind": "status", "status": 429, "retryAfter": 1}}),
            json!({"operation": "VirtualMachines_Get", "times": 10,
                   "action": {"kind": "status", "status": 429, "retryAfter": 0}}),
        ],
        "429: attach ×6, create ×4, VM GET ×10",
    )
}

fn arm_5xx_and_resets() -> Report {
    run_arm_campaign(
        "ARM 5xx + resets",
        0x5e5,
        vec![
            json!({"operation": "VirtualMachines_AttachDetachDataDisks", "times": 4,
                   "action": {"kind": "status", "status": 503, "retryAfter": 0}}),
            json!({"operation": "VirtualMachines_AttachDetachDataDisks", "skip": 5, "times": 2,
                   "action": {"kind": "status", "status": 500}}),
            json!({"operation": "Disks_Get", "times": 5, "action": {"kind": "reset"}}),
            json!({"operation": "Disks_Delete", "times": 3,
                   "action": {"kind": "status", "status": 502}}),
        ],
        "503 ×4, 500 ×2 attach; reset GET ×5; 502 delete ×3",
    )
}

fn lro_failed() -> Report {
    run_arm_campaign(
        "LRO Failed",
        0x1f0,
        vec![
            json!({"operation": "VirtualMachines_AttachDetachDataDisks", "skip": 1, "times": 3,
                   "action": {"kind": "lroFail", "code": "InternalExecutionError"}}),
            json!({"operation": "Disks_CreateOrUpdate", "skip": 2, "times": 2,
                   "action": {"kind": "lroFail", "code": "InternalDiskManagementError"}}),
        ],
        "LRO Failed: attach ×3, create ×2",
    )
}

fn lost_responses() -> Report {
    run_arm_campaign(
        "lost responses",
        0x105e,
        vec![
            json!({"operation": "VirtualMachines_AttachDetachDataDisks", "skip": 2, "times": 3,
                   "action": {"kind": "loseResponse"}}),
            json!({"operation": "Disks_CreateOrUpdate", "skip": 3, "times": 2,
                   "action": {"kind": "loseResponse"}}),
            json!({"operation": "Disks_Delete", "skip": 1, "times": 2,
                   "action": {"kind": "loseResponse"}}),
        ],
        "answer lost: attach ×3, create ×2, delete ×2",
    )
}

fn watch_drops() -> Report {
    let started = Instant::now();
    let seed = 0xd0d0;
    let mut s = setup_with_short_watch_window();
    let drops = AtomicU32::new(0);
    let outcome = workload(
        &mut s,
        "w",
        seed,
        |s, stop| {
            let mut rng = Seeded(seed);
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(150 + rng.next(500)));
                if s.cluster.kube.call("DELETE", "/_sim/watches", None).is_ok() {
                    drops.fetch_add(1, Ordering::SeqCst);
                }
            }
        },
        |_, _| {},
    );
    let drops = drops.load(Ordering::SeqCst);
    assert!(drops > 3, "watches were dropped during the workload");
    report(
        "watch drops",
        seed,
        format!("every watch ended {drops}× (watch window 64)"),
        &s,
        started,
        outcome,
    )
}

/// A short watch window, so that re-watches after drops also meet 410 Gone and re-list.
fn setup_with_short_watch_window() -> Scene {
    system_tests::scene::setup_with(&["--kube-watch-window", "64"])
}

fn provisioner_sigkill_at_random_moments() -> Report {
    let started = Instant::now();
    let seed = 0x5161;
    let mut s = setup();
    let kills = Arc::new(AtomicU32::new(0));
    let k = kills.clone();
    let outcome = workload(
        &mut s,
        "k",
        seed,
        |_, _| {},
        move |s, rng| {
            // While the claims are being provisioned: SIGKILL, restart, at seeded moments.
            for _ in 0..4 {
                std::thread::sleep(Duration::from_millis(50 + rng.next(400)));
                s.cluster.stop_provisioner();
                s.cluster.start_default_provisioner(&[]);
                k.fetch_add(1, Ordering::SeqCst);
            }
        },
    );
    report(
        "provisioner SIGKILL",
        seed,
        format!(
            "{} kills + restarts while provisioning",
            kills.load(Ordering::SeqCst)
        ),
        &s,
        started,
        outcome,
    )
}

fn driver_sigkill_mid_attach() -> Report {
    let started = Instant::now();
    let seed = 0xa77ac4;
    let mut s = setup();
    s.emu.kill_attaches(SeededKills {
        seed,
        max_ms: 400,
        times: 10,
    });
    let outcome = workload(&mut s, "d", seed, |_, _| {}, |_, _| {});
    let killed = s.emu.counts().killed_attaches;
    assert!(killed >= 3, "attaches were killed: {:?}", s.emu.counts());
    report(
        "driver SIGKILL mid-attach",
        seed,
        format!("{killed} attach processes SIGKILLed (< 0.4 s in)"),
        &s,
        started,
        outcome,
    )
}

fn controller_restart_mid_detach() -> Report {
    let started = Instant::now();
    let seed = 0xde7ac4;
    let mut s = setup();
    // A detach here takes ~0.5–0.7 s (150 ms VM operations, the 200 ms gathering window): kills
    // drawn within 0.7 s land in it — before, during and after the write — rather than after it.
    s.emu.restart_controller_mid_detaches(SeededKills {
        seed,
        max_ms: 700,
        times: 10,
    });
    let outcome = workload(&mut s, "r", seed, |_, _| {}, |_, _| {});
    let killed = s.emu.counts().killed_detaches;
    assert!(killed >= 3, "detaches were killed: {:?}", s.emu.counts());
    report(
        "KCM restart mid-detach",
        seed,
        format!("{killed} detaches SIGKILLed (< 0.7 s in), state dir emptied each time"),
        &s,
        started,
        outcome,
    )
}

type Campaign = (&'static str, fn() -> Report);

/// One test runs every campaign in turn (each on fresh simulators), so that the table comes out
/// whole; a failing campaign is reported in it and fails the test after the others have run.
#[test]
fn fault_campaigns() {
    let campaigns: [Campaign; 8] = [
        ("ARM 429 storm", arm_429_storm),
        ("ARM 5xx + resets", arm_5xx_and_resets),
        ("LRO Failed", lro_failed),
        ("lost responses", lost_responses),
        ("watch drops", watch_drops),
        ("provisioner SIGKILL", provisioner_sigkill_at_random_moments),
        ("driver SIGKILL mid-attach", driver_sigkill_mid_attach),
        ("KCM restart mid-detach", controller_restart_mid_detach),
    ];
    let mut rows = Vec::new();
    let mut failed = Vec::new();
    for (name, campaign) in campaigns {
        match std::panic::catch_unwind(campaign) {
            Ok(r) => {
                if r.double_attach > 0 {
                    failed.push(name);
                }
                rows.push(row(&r));
            }
            Err(_) => {
                failed.push(name);
                rows.push(format!("| {name:<26} | FAILED (see the panic above)"));
            }
        }
    }
    eprintln!(
        "\n| campaign                   |     seed | faults                                                         | claims | ARM writes | retried | double attach | secs  |"
    );
    eprintln!("|{}|", "-".repeat(172));
    for r in &rows {
        eprintln!("{r}");
    }
    assert!(failed.is_empty(), "campaigns failed: {failed:?}");
}

/// What one driver call came to in the answers campaign.
enum Called {
    Answered(Value),
    Killed,
}

/// A control-plane host of the answers campaign: its own state directory (views, spools).
fn host_env(c: &system_tests::Cluster, host: &str) -> Vec<(String, String)> {
    let dir = c.tmp.path();
    vec![
        ("SSL_CERT_FILE".into(), c.sim.field("caBundle")),
        ("FLEXDISK_CONFIG".into(), c.sim.field("azureJson")),
        (
            "FLEXDISK_LOG".into(),
            dir.join(format!("flexdisk-{host}.log"))
                .to_string_lossy()
                .into(),
        ),
        (
            "FLEXDISK_STATE_DIR".into(),
            dir.join(format!("state-{host}")).to_string_lossy().into(),
        ),
        // Views kept long: host 1's read is as old as it can be when host 2 acts.
        ("FLEXDISK_VM_VIEW_SECS".into(), "600".into()),
    ]
}

/// Runs `flexdisk args` as host `host` would; SIGKILLed after `kill_after` if still running.
fn call(
    c: &system_tests::Cluster,
    host: &str,
    args: &[&str],
    kill_after: Option<Duration>,
) -> Called {
    let mut child = std::process::Command::new(system_tests::bin("flexdisk"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(host_env(c, host))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("flexdisk starts");
    if let Some(after) = kill_after {
        let deadline = Instant::now() + after;
        while child.try_wait().expect("wait").is_none() {
            if Instant::now() >= deadline {
                nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(child.id() as i32),
                    nix::sys::signal::Signal::SIGKILL,
                )
                .expect("kill");
                let _ = child.wait();
                return Called::Killed;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let out = child.wait_with_output().expect("flexdisk ends");
    assert!(out.stderr.is_empty(), "flexdisk wrote to stderr");
    Called::Answered(serde_json::from_slice(&out.stdout).expect("one JSON reply"))
}

/// The disk's LUN on the node's VM as Azure has it, and whether it is being detached.
fn in_azure(c: &system_tests::Cluster, node: &str, disk: &str) -> Option<(i64, bool)> {
    let (_, state) = c.sim.control("GET", "/state", None).expect("state");
    state["vms"][node]["dataDisks"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|d| {
            d["name"]
                .as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case(disk))
        })
        .map(|d| {
            (
                d["lun"].as_i64().unwrap_or(-1),
                d["toBeDetached"].as_bool().unwrap_or(false),
            )
        })
}

#[derive(Default)]
struct Tally {
    operations: AtomicU32,
    answered: AtomicU32,
    killed: AtomicU32,
    failures: AtomicU32,
    false_answers: AtomicU32,
}

/// Checks one answer against Azure's state of the disk (nobody else acts on that disk
/// meanwhile: each disk has one worker); a false answer is counted and logged.
fn check_answer(
    c: &system_tests::Cluster,
    t: &Tally,
    what: &str,
    node: &str,
    disk: &str,
    reply: &Value,
) {
    t.answered.fetch_add(1, Ordering::SeqCst);
    if reply["status"] != "Success" {
        t.failures.fetch_add(1, Ordering::SeqCst);
        return;
    }
    let azure = in_azure(c, node, disk);
    let truthful = match what {
        "attach" => {
            let lun: Option<i64> = reply["device"].as_str().and_then(|l| l.parse().ok());
            lun.is_some() && azure.is_some_and(|(l, leaving)| Some(l) == lun && !leaving)
        }
        "isattached" => {
            reply["attached"].as_bool() == Some(azure.is_some_and(|(_, leaving)| !leaving))
        }
        "detach" => azure.is_none(),
        other => panic!("{other}"),
    };
    if !truthful {
        t.false_answers.fetch_add(1, Ordering::SeqCst);
        eprintln!("FALSE ANSWER: {what} of {disk} on {node}: {reply} while Azure has {azure:?}");
    }
}

/// Two control-plane hosts (two state directories) drive attaches, `isattached` and detaches of
/// six disks over two VMs, one worker per disk, each call on a host drawn by a seeded generator;
/// ARM answers batches with 500 and 503 at times, and some attach and detach callers are
/// SIGKILLed at seeded moments. Every answer is checked against Azure's state right away; none
/// may be false. A table is printed.
#[test]
fn driver_answers_across_hosts_5xx_and_killed_callers() {
    let started = Instant::now();
    let seed = 0x7ea5_u64;
    let c = system_tests::Cluster::start(&["--vm-op-ms", "300", "--disk-op-ms", "50"]);
    let nodes = c.nodes(false);
    assert!(nodes.len() >= 2, "two VMs: {nodes:?}");
    let nodes = [nodes[0].clone(), nodes[1].clone()];
    let disks: Vec<(String, String)> = (0..6)
        .map(|i| {
            let name = format!("pvc-truth-{i}");
            let id = c.create_disk(&name, "Premium_LRS", 1);
            (name, id)
        })
        .collect();
    let rules = [
        json!({"operation": "VirtualMachines_AttachDetachDataDisks", "skip": 2, "times": 6,
               "action": {"kind": "status", "status": 500}}),
        json!({"operation": "VirtualMachines_AttachDetachDataDisks", "skip": 14, "times": 4,
               "action": {"kind": "status", "status": 503, "retryAfter": 0}}),
    ];
    for r in &rules {
        let (status, body) = c.sim.control("POST", "/faults", Some(r)).expect("fault");
        assert_eq!(status, 201, "{body}");
    }
    let tally = Tally::default();
    let hosts = ["cp-1", "cp-2"];
    std::thread::scope(|scope| {
        for (i, (name, id)) in disks.iter().enumerate() {
            let (c, tally, nodes) = (&c, &tally, &nodes);
            scope.spawn(move || {
                let mut rng = Seeded(seed + i as u64 * 7919);
                for round in 0..3 {
                    let node = &nodes[(i + round) % 2];
                    let opts = json!({"diskURI": id, "kubernetes.io/fsType": "ext4",
                        "kubernetes.io/readwrite": "rw", "kubernetes.io/pvOrVolumeName": name})
                    .to_string();
                    let kill = |rng: &mut Seeded| {
                        (rng.next(4) == 0).then(|| Duration::from_millis(20 + rng.next(600)))
                    };
                    let calls: [(&str, Vec<&str>, bool); 3] = [
                        ("attach", vec!["attach", &opts, node], true),
                        ("isattached", vec!["isattached", &opts, node], false),
                        ("detach", vec!["detach", name, node], true),
                    ];
                    for (what, args, killable) in calls {
                        let host = hosts[rng.next(2) as usize];
                        let kill_after = if killable { kill(&mut rng) } else { None };
                        tally.operations.fetch_add(1, Ordering::SeqCst);
                        match call(c, host, &args, kill_after) {
                            Called::Killed => {
                                tally.killed.fetch_add(1, Ordering::SeqCst);
                            }
                            Called::Answered(reply) => {
                                check_answer(c, tally, what, node, name, &reply)
                            }
                        }
                    }
                }
            });
        }
    });
    let (_, left) = c.sim.control("GET", "/faults", None).expect("faults");
    let fired = 10
        - left
            .as_array()
            .map(|rules| {
                rules
                    .iter()
                    .map(|r| r["times"].as_u64().unwrap_or(0))
                    .sum::<u64>()
            })
            .unwrap_or(0);
    let doubles = c.attachments().values().filter(|vms| vms.len() > 1).count();
    let count = |a: &AtomicU32| a.load(Ordering::SeqCst);
    eprintln!(
        "\n| driver answers campaign | seed | operations | answered | callers SIGKILLed | failures | ARM 5xx fired | false answers | disks on two VMs | secs |"
    );
    eprintln!("|{}|", "-".repeat(140));
    eprintln!(
        "| two hosts, 5xx, SIGKILL | {seed:>4x} | {:>10} | {:>8} | {:>17} | {:>8} | {fired:>13} | {:>13} | {doubles:>16} | {:>4.1} |",
        count(&tally.operations),
        count(&tally.answered),
        count(&tally.killed),
        count(&tally.failures),
        count(&tally.false_answers),
        started.elapsed().as_secs_f64()
    );
    assert!(count(&tally.operations) >= 50);
    assert!(count(&tally.killed) >= 3, "callers were killed");
    assert!(fired >= 5, "ARM 5xx fired during batches ({fired})");
    assert_eq!(count(&tally.false_answers), 0, "false answers (see above)");
    assert_eq!(doubles, 0, "a disk on two VMs");
}
