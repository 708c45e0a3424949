//! ARM cost at scale, measured by driving the real (release) binaries against the simulator:
//! `cargo build --release --workspace && cargo bench -p flexdisk-system-tests --bench scale`.
//!
//! 100 nodes with 10 volumes each: the attach burst that puts them there, then
//! kube-controller-manager's periodic check of every attached volume, played as its
//! attach/detach reconciler plays it for a FlexVolume plugin — one operation per node, all nodes
//! at once, and within a node one `isattached` process per volume, one after another
//! (`pkg/controller/volume/attachdetach/reconciler/reconciler.go` `syncStates` →
//! `pkg/volume/util/operationexecutor/operation_executor.go` `VerifyVolumesAreAttachedPerNode` →
//! `pkg/volume/flexvolume/attacher.go` `VolumesAreAttached`). kcm's round comes every
//! `--attach-detach-reconcile-sync-period` (1 min); here every 16 s, just past the driver's VM
//! view (`FLEXDISK_VM_VIEW_SECS`, 15 s), so each round starts from nothing as a 1-min round does.
//! Then 1,000 claims provisioned in a burst. Counts, not times, are the point: ARM reads and
//! writes, extrapolated to an hour and set against Azure's published limits in BENCHMARKS.md.

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use system_tests::scene::world;
use system_tests::Cluster;

const NODES: usize = 100;
const VOLUMES: usize = 10;
const ROUNDS: usize = 10;
/// Nodes whose attaches start together in the burst (ten processes each).
const WAVE: usize = 10;
const OP_MS: u64 = 200;
const CLAIMS: usize = 1000;
const WORKERS: usize = 8;

fn node(i: usize) -> String {
    format!("scale-vm-{i:03}")
}

fn pv(name: &str, disk: &str) -> Value {
    json!({"metadata": {"name": name}, "spec": {"flexVolume": {"driver": "flexdisk/azure-disk",
        "fsType": "ext4", "options": {"diskURI": disk}}}})
}

/// The simulator's counters since the last reset, and a reset.
fn take(c: &Cluster) -> Value {
    let (_, counters) = c.sim.control("GET", "/counters", None).expect("counters");
    c.sim.control("DELETE", "/counters", None).expect("reset");
    counters
}

fn n(c: &Value, key: &str) -> u64 {
    c[key].as_u64().unwrap_or(0)
}

/// Operation → count, reads and writes apart from the per-resource lines.
fn by_operation(c: &Value) -> String {
    c.as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| !k.starts_with("writes to ") && *k != "reads" && *k != "writes")
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

fn main() {
    let dir = tempfile::tempdir().expect("tmp");
    let vms: Vec<String> = (0..NODES).map(node).collect();
    let sizes: Vec<(&str, &str)> = vms
        .iter()
        .map(|v| (v.as_str(), "Standard_D16s_v3"))
        .collect();
    let world_file = world(dir.path(), &sizes);
    // The simulator's hourly budget is not what is measured here: Azure's limits are quoted
    // beside the figures.
    let mut w: Value =
        serde_json::from_slice(&std::fs::read(&world_file).expect("world")).expect("world JSON");
    w["throttle"] = json!({"reads": 100_000_000u64, "writes": 100_000_000u64, "windowSecs": 3600});
    std::fs::write(&world_file, w.to_string()).expect("world file");
    let mut c = Cluster::start_timed(&world_file, OP_MS);
    let hosts = c.hosts();
    let ctl = hosts.controller();

    // The disks, 20 at a time.
    let names: Vec<(String, String)> = (0..NODES)
        .flat_map(|i| (0..VOLUMES).map(move |v| (node(i), format!("pvc-scale-{i:03}-{v}"))))
        .collect();
    let mut pvs: BTreeMap<String, Value> = BTreeMap::new();
    for chunk in names.chunks(20) {
        let made: Vec<(String, Value)> = std::thread::scope(|s| {
            let handles: Vec<_> = chunk
                .iter()
                .map(|(_, name)| {
                    let c = &c;
                    s.spawn(move || {
                        (
                            name.clone(),
                            pv(name, &c.create_disk(name, "Premium_LRS", 1)),
                        )
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("disk"))
                .collect()
        });
        pvs.extend(made);
    }
    take(&c);

    // The attach burst, WAVE nodes at a time, each node's ten attaches at once.
    let t = Instant::now();
    for wave in (0..NODES).collect::<Vec<_>>().chunks(WAVE) {
        std::thread::scope(|s| {
            for &i in wave {
                for (nd, name) in names.iter().filter(|(nd, _)| *nd == node(i)) {
                    let (ctl, p) = (&ctl, &pvs[name]);
                    s.spawn(move || ctl.attach(p, nd).expect("attach"));
                }
            }
        });
    }
    let burst_took = t.elapsed();
    let burst = take(&c);
    let attaches = (NODES * VOLUMES) as f64;
    let vm_writes = n(&burst, "VirtualMachines_AttachDetachDataDisks");
    println!(
        "attach burst: {} volumes on {NODES} VMs in {:.1} s: {} ARM writes ({vm_writes} to VMs: \
         {:.2} per VM), {} reads ({:.2} per attach) — {}",
        NODES * VOLUMES,
        burst_took.as_secs_f64(),
        n(&burst, "writes"),
        vm_writes as f64 / NODES as f64,
        n(&burst, "reads"),
        n(&burst, "reads") as f64 / attaches,
        by_operation(&burst)
    );

    // kube-controller-manager's periodic check, ROUNDS times.
    let mut per_round = Vec::new();
    for r in 0..ROUNDS {
        std::thread::sleep(Duration::from_secs(16));
        take(&c);
        let round_started = Instant::now();
        std::thread::scope(|s| {
            for i in 0..NODES {
                let (ctl, names, pvs) = (&ctl, &names, &pvs);
                s.spawn(move || {
                    for (nd, name) in names.iter().filter(|(nd, _)| *nd == node(i)) {
                        assert!(
                            ctl.is_attached(&pvs[name], nd).expect("isattached"),
                            "{name} not attached to {nd}"
                        );
                    }
                });
            }
        });
        let round = take(&c);
        println!(
            "reconcile round {}: {} isattached calls in {:.1} s: {} ARM reads ({:.2} per VM), {} writes — {}",
            r + 1,
            NODES * VOLUMES,
            round_started.elapsed().as_secs_f64(),
            n(&round, "reads"),
            n(&round, "reads") as f64 / NODES as f64,
            n(&round, "writes"),
            by_operation(&round)
        );
        per_round.push((n(&round, "reads"), n(&round, "writes")));
    }
    let reads: u64 = per_round.iter().map(|(r, _)| r).sum();
    let writes: u64 = per_round.iter().map(|(_, w)| w).sum();
    let max_round = per_round.iter().map(|(r, _)| *r).max().unwrap_or(0);
    println!(
        "{ROUNDS} rounds: {reads} ARM reads, {writes} writes; most in a round {max_round} \
         ({:.2} per VM); at one round a minute: {} reads/h, {} writes/h",
        max_round as f64 / NODES as f64,
        reads * 60 / ROUNDS as u64,
        writes * 60 / ROUNDS as u64
    );

    // 1,000 claims provisioned in a burst.
    c.start_default_provisioner(&["--workers", &WORKERS.to_string(), "--log", "warn"]);
    c.kube
        .create(
            &json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": "scale"}, "provisioner": "flexdisk/azure-disk"}),
        )
        .expect("class");
    std::thread::sleep(Duration::from_secs(1));
    take(&c);
    let t = Instant::now();
    for i in 0..CLAIMS {
        c.kube
            .create(&json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": format!("scale-{i}"), "namespace": "default"},
                "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "scale",
                         "resources": {"requests": {"storage": "1Gi"}}}}))
            .expect("claim");
    }
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        let bound = c
            .kube
            .list("/api/v1/namespaces/default/persistentvolumeclaims")
            .map(|l| l.iter().filter(|x| x["status"]["phase"] == "Bound").count())
            .unwrap_or(0);
        if bound >= CLAIMS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{bound} of {CLAIMS} claims bound"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let took = t.elapsed();
    let provision = take(&c);
    println!(
        "{CLAIMS} claims to Bound (--workers {WORKERS}, {OP_MS} ms disk operations) in {:.1} s: \
         {} ARM writes ({:.2} per claim), {} reads ({:.2} per claim) — {}",
        took.as_secs_f64(),
        n(&provision, "writes"),
        n(&provision, "writes") as f64 / CLAIMS as f64,
        n(&provision, "reads"),
        n(&provision, "reads") as f64 / CLAIMS as f64,
        by_operation(&provision)
    );
}
