//! The figures we quote, in one table, measured by driving the real (release) binaries against the
//! simulators: `cargo build --release --workspace && cargo bench -p flexdisk-system-tests --bench system`.
//! Simulated VM operations (attach/detach) and disk creation take 1000 ms each (lone attaches and
//! detaches are also measured at 2000 ms), as the order of magnitude Azure shows; everything else
//! is real work on this machine.

use flexdisk_sim::kubelet::{Controller, Kubelet, PodRef};
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};
use system_tests::scene::world;
use system_tests::Cluster;

const OP_MS: u64 = 1000;
const BIG_VM: &str = "bench-vm-big";
const NODE_A: &str = "bench-vm-a";
const NODE_B: &str = "bench-vm-b";
const WORKERS: u64 = 8;

struct Table(Vec<(String, String)>);

impl Table {
    fn row(&mut self, what: impl Into<String>, figure: impl Into<String>) {
        let (w, f) = (what.into(), figure.into());
        eprintln!("{w}: {f}");
        self.0.push((w, f));
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:").map(|m| m.trim().to_string()))
        .unwrap_or_default();
    format!("{cores} cores ({cpu}), {mem} RAM, loop devices on the local disk")
}

fn pv(name: &str, disk: &str, fs: &str) -> Value {
    json!({"metadata": {"name": name}, "spec": {"flexVolume": {"driver": "flexdisk/azure-disk",
        "fsType": fs, "options": {"diskURI": disk}}}})
}

/// `n` attaches to one VM at once, each its own process; elapsed, ARM writes to the VM and ARM
/// reads (new disks: each claim is written and checked). Then detached.
fn concurrent_attaches(c: &Cluster, ctl: &Controller, n: usize) -> (Duration, u64, u64) {
    let pvs: Vec<Value> = (0..n)
        .map(|i| {
            let name = format!("pvc-bench-{n}-{i}");
            pv(&name, &c.create_disk(&name, "Premium_LRS", 1), "ext4")
        })
        .collect();
    c.sim.control("DELETE", "/counters", None).expect("reset");
    let t = Instant::now();
    std::thread::scope(|s| {
        for p in &pvs {
            s.spawn(move || ctl.attach(p, BIG_VM).expect("attach"));
        }
    });
    let took = t.elapsed();
    let writes = c.arm_count("VirtualMachines_AttachDetachDataDisks");
    let reads = c.arm_count("reads");
    std::thread::scope(|s| {
        for p in &pvs {
            s.spawn(move || {
                ctl.detach(p["metadata"]["name"].as_str().unwrap_or_default(), BIG_VM)
                    .expect("detach")
            });
        }
    });
    (took, writes, reads)
}

/// Sets how long the simulator's operations begun from now take.
fn set_vm_op(c: &Cluster, vm_ms: u64) {
    c.sim
        .control(
            "PUT",
            "/timing",
            Some(&json!({"vmOpMs": vm_ms, "diskOpMs": OP_MS})),
        )
        .expect("timing");
}

/// One call's elapsed time and ARM reads.
fn measured(c: &Cluster, call: impl FnOnce()) -> (Duration, u64) {
    c.sim.control("DELETE", "/counters", None).expect("reset");
    let t = Instant::now();
    call();
    (t.elapsed(), c.arm_count("reads"))
}

/// Lone attaches and detaches of one volume on an idle VM, `runs` times after `warm` unmeasured
/// rounds (the driver learns how long the VM's operations take from the ones before): medians
/// of time, the most reads any call took.
fn lone(
    c: &Cluster,
    ctl: &Controller,
    vm_ms: u64,
    warm: usize,
    runs: usize,
) -> [(Duration, u64); 2] {
    set_vm_op(c, vm_ms);
    let name = format!("pvc-bench-lone-{vm_ms}");
    let p = pv(&name, &c.create_disk(&name, "Premium_LRS", 1), "ext4");
    for _ in 0..warm {
        ctl.attach(&p, BIG_VM).expect("attach");
        ctl.detach(&name, BIG_VM).expect("detach");
    }
    let (mut attaches, mut detaches) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        attaches.push(measured(c, || {
            ctl.attach(&p, BIG_VM).expect("attach");
        }));
        detaches.push(measured(c, || ctl.detach(&name, BIG_VM).expect("detach")));
    }
    let summary = |v: Vec<(Duration, u64)>| {
        let reads = v.iter().map(|(_, r)| *r).max().unwrap_or(0);
        (median(v.into_iter().map(|(d, _)| d).collect()), reads)
    };
    [summary(attaches), summary(detaches)]
}

fn main() {
    let mut table = Table(Vec::new());
    let dir = tempfile::tempdir().expect("tmp");
    let world_file = world(
        dir.path(),
        &[
            (BIG_VM, "Standard_D16s_v3"),
            (NODE_A, "Standard_D4s_v3"),
            (NODE_B, "Standard_D4s_v3"),
        ],
    );
    let mut c = Cluster::start_timed(&world_file, OP_MS);
    let hosts = c.hosts();
    let ctl = hosts.controller();
    let node = |n: &str| -> &Kubelet { &hosts.nodes[n] };

    // init: the whole process, as kubelet's prober runs it.
    let inits: Vec<Duration> = (0..50)
        .map(|_| {
            let t = Instant::now();
            node(NODE_A).driver.call(&["init"], None).expect("init");
            t.elapsed()
        })
        .collect();
    // The same for /bin/true: what starting any process costs here.
    let trues: Vec<Duration> = (0..50)
        .map(|_| {
            let t = Instant::now();
            let ok = std::process::Command::new("/bin/true")
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "/bin/true");
            t.elapsed()
        })
        .collect();
    let (init, truth) = (median(inits), median(trues));
    table.row(
        "`init`, whole process (median of 50)",
        format!(
            "{} — ×{:.2} `/bin/true` ({})",
            ms(init),
            init.as_secs_f64() / truth.as_secs_f64(),
            ms(truth)
        ),
    );
    // What every node receives.
    for b in ["flexdisk", "flexdisk-provisioner"] {
        let size = std::fs::metadata(system_tests::bin(b))
            .map(|m| m.len())
            .unwrap_or(0);
        table.row(
            format!("`{b}` release binary size"),
            format!("{:.2} MB", size as f64 / 1e6),
        );
    }

    // Lone attach and detach, then concurrent attaches to one VM (1000 ms VM operations).
    let [(one, attach_reads), (detach_one, detach_reads)] = lone(&c, &ctl, OP_MS, 1, 5);
    let lone_row =
        |table: &mut Table, vm_ms: u64, attach: (Duration, u64), detach: (Duration, u64)| {
            let vs = |d: Duration| d.as_secs_f64() * 1000.0 / vm_ms as f64;
            table.row(
                format!("lone attach / lone detach, VM operation {vm_ms} ms (median of 5)"),
                format!(
                    "{} ×{:.2}, {} ARM reads / {} ×{:.2}, {} ARM reads",
                    secs(attach.0),
                    vs(attach.0),
                    attach.1,
                    secs(detach.0),
                    vs(detach.0),
                    detach.1
                ),
            );
        };
    lone_row(
        &mut table,
        OP_MS,
        (one, attach_reads),
        (detach_one, detach_reads),
    );
    for n in [1, 4, 8, 16] {
        let (took, writes, reads) = concurrent_attaches(&c, &ctl, n);
        table.row(
            format!("attach, {n} concurrent volume(s) on one VM"),
            format!(
                "{} — {writes} ARM write(s) to the VM, {reads} ARM reads (new disks: claims written and checked); ×{:.2} the lone attach",
                secs(took),
                took.as_secs_f64() / one.as_secs_f64()
            ),
        );
    }

    // waitforattach: from the device's appearance to the driver's answer.
    let disk = c.create_disk("pvc-bench-wait", "Premium_LRS", 1);
    let p = pv("pvc-bench-wait", &disk, "ext4");
    let options = flexdisk_sim::kubelet::volume_options(&p, false);
    let link = Path::new(&c.sim.node_field(NODE_A, "root")).join("dev/disk/azure/scsi1/lun0");
    let delay = std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            let r = node(NODE_A)
                .driver
                .call(&["waitforattach", "0", &options], None)
                .expect("waitforattach");
            (Instant::now(), r)
        });
        let attacher = s.spawn(|| ctl.attach(&p, NODE_A).expect("attach"));
        while !link.exists() {
            std::thread::sleep(Duration::from_micros(200));
        }
        let appeared = Instant::now();
        let (answered, _) = waiter.join().expect("waiter");
        let _ = attacher.join();
        answered.saturating_duration_since(appeared)
    });
    table.row(
        "waitforattach: answer after the device node appears",
        ms(delay),
    );
    ctl.detach("pvc-bench-wait", NODE_A).expect("detach");

    // mountdevice of a new 1 TiB disk.
    for fs in ["ext4", "xfs"] {
        let name = format!("pvc-bench-tib-{fs}");
        let p = pv(&name, &c.create_disk(&name, "Premium_LRS", 1024), fs);
        let lun = ctl.attach(&p, NODE_A).expect("attach");
        let o = flexdisk_sim::kubelet::volume_options(&p, false);
        let dev = node(NODE_A)
            .driver
            .call(&["waitforattach", &lun, &o], None)
            .expect("wait")
            .device
            .expect("device");
        let mnt = dir.path().join(format!("mnt-{fs}"));
        let m = mnt.to_string_lossy();
        let t = Instant::now();
        node(NODE_A)
            .driver
            .call(&["mountdevice", &m, &dev, &o], None)
            .expect("mountdevice");
        table.row(
            format!("mountdevice, new 1 TiB disk, {fs} (format + mount)"),
            secs(t.elapsed()),
        );
        node(NODE_A)
            .driver
            .call(&["unmountdevice", &m], None)
            .expect("unmount");
        ctl.detach(&name, NODE_A).expect("detach");
    }

    // A pod's move between nodes, split into its parts.
    let p = pv(
        "pvc-bench-move",
        &c.create_disk("pvc-bench-move", "Premium_LRS", 4),
        "ext4",
    );
    let lun = ctl.attach(&p, NODE_A).expect("attach");
    let (dir_a, _) = node(NODE_A)
        .set_up(&p, &lun, &PodRef::named("pod-a"), false)
        .expect("set up");
    std::fs::write(dir_a.join("f"), b"moved").expect("write");
    let t = Instant::now();
    node(NODE_A)
        .tear_down("pvc-bench-move", "pod-a")
        .expect("tear down");
    let unmount = t.elapsed();
    let t = Instant::now();
    ctl.detach("pvc-bench-move", NODE_A).expect("detach");
    let detach = t.elapsed();
    let t = Instant::now();
    let lun = ctl.attach(&p, NODE_B).expect("attach");
    let attach = t.elapsed();
    let t = Instant::now();
    let (dir_b, _) = node(NODE_B)
        .set_up(&p, &lun, &PodRef::named("pod-b"), false)
        .expect("set up");
    let mount = t.elapsed();
    assert_eq!(std::fs::read(dir_b.join("f")).expect("read"), b"moved");
    node(NODE_B)
        .tear_down("pvc-bench-move", "pod-b")
        .expect("tear down");
    ctl.detach("pvc-bench-move", NODE_B).expect("detach");
    table.row(
        "pod move A → B: unmount + detach, attach, waitforattach + mount",
        format!(
            "{} + {}, {}, {} — total {} (2 × VM operation + 0.3 s = {:.2} s)",
            secs(unmount),
            secs(detach),
            secs(attach),
            secs(mount),
            secs(unmount + detach + attach + mount),
            2.0 * OP_MS as f64 / 1000.0 + 0.3
        ),
    );

    // Lone attach and detach with 2000 ms VM operations (two rounds to learn the new time).
    let [attach_2s, detach_2s] = lone(&c, &ctl, 2 * OP_MS, 2, 5);
    lone_row(&mut table, 2 * OP_MS, attach_2s, detach_2s);
    set_vm_op(&c, OP_MS);

    // 200 claims to Bound, then 1000 PVs for memory.
    c.start_default_provisioner(&["--workers", &WORKERS.to_string(), "--log", "warn"]);
    c.kube
        .create(
            &json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": "bench"}, "provisioner": "flexdisk/azure-disk"}),
        )
        .expect("class");
    std::thread::sleep(Duration::from_secs(1));
    let bound = |c: &Cluster| {
        c.kube
            .list("/api/v1/namespaces/default/persistentvolumeclaims")
            .map(|l| l.iter().filter(|x| x["status"]["phase"] == "Bound").count())
            .unwrap_or(0)
    };
    let claims = |c: &Cluster, from: usize, to: usize| {
        for i in from..to {
            c.kube
                .create(&json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                    "metadata": {"name": format!("bench-{i}"), "namespace": "default"},
                    "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "bench",
                             "resources": {"requests": {"storage": "1Gi"}}}}))
                .expect("claim");
        }
    };
    let wait = |c: &Cluster, n: usize| {
        let deadline = Instant::now() + Duration::from_secs(1800);
        while bound(c) < n {
            assert!(Instant::now() < deadline, "claims never all bound");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    // 48 claims: six rounds of the 8 workers.
    c.sim.control("DELETE", "/counters", None).expect("reset");
    let t = Instant::now();
    claims(&c, 0, 48);
    wait(&c, 48);
    let took = t.elapsed();
    let provisioning_row = |table: &mut Table, c: &Cluster, n: u64, took: Duration| {
        let lower = (n as f64 / WORKERS as f64).ceil() * OP_MS as f64 / 1000.0;
        table.row(
            format!("{n} claims to Bound (--workers {WORKERS})"),
            format!(
                "{} vs lower bound ⌈{n}/{WORKERS}⌉ × {OP_MS} ms = {lower:.1} s — ratio {:.2}; per provision {:.2} ARM writes, {:.2} reads",
                secs(took),
                took.as_secs_f64() / lower,
                c.arm_count("writes") as f64 / n as f64,
                c.arm_count("reads") as f64 / n as f64,
            ),
        );
    };
    provisioning_row(&mut table, &c, 48, took);

    // 200 more, with the provisioner's Kubernetes API requests counted.
    c.sim.control("DELETE", "/counters", None).expect("reset");
    c.kube.call("DELETE", "/_sim/access", None).expect("reset");
    let t = Instant::now();
    claims(&c, 48, 248);
    wait(&c, 248);
    let took = t.elapsed();
    // The provisioner's Kubernetes API requests (everyone's but this benchmark's client), per
    // claim, by verb; watches are long-lived and counted apart.
    let access = c.kube.call("GET", "/_sim/access", None).expect("access").1;
    let mut by_verb = std::collections::BTreeMap::<String, u64>::new();
    for a in access
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["userAgent"].as_str() != Some(flexdisk_sim::kube_client::USER_AGENT))
    {
        *by_verb
            .entry(format!(
                "{} {}",
                a["verb"].as_str().unwrap_or("?"),
                a["resource"].as_str().unwrap_or("?")
            ))
            .or_default() += a["count"].as_u64().unwrap_or(0);
    }
    let requests: u64 = by_verb
        .iter()
        .filter(|(k, _)| !k.starts_with("watch "))
        .map(|(_, n)| n)
        .sum();
    table.row(
        "Kubernetes API requests per provisioned claim (provisioner, 200 claims)",
        format!(
            "{:.2} ({})",
            requests as f64 / 200.0,
            by_verb
                .iter()
                .filter(|(k, _)| !k.starts_with("watch "))
                .map(|(k, n)| format!("{k} {:.2}", *n as f64 / 200.0))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
    provisioning_row(&mut table, &c, 200, took);
    claims(&c, 248, 1000);
    wait(&c, 1000);
    let pid = c.provisioner_pid().expect("provisioner running");
    let hwm = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:").map(|v| v.trim().to_string()))
        .unwrap_or_else(|| "?".into());
    table.row("provisioner peak RSS with 1000 PVs", hwm);
    c.stop_provisioner();

    println!("\nMachine: {}\n", machine());
    println!("| what | figure |\n|---|---|");
    for (w, f) in &table.0 {
        println!("| {w} | {f} |");
    }
}
