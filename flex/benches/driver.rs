//! Driver benchmarks against the simulator (figures, not pass/fail):
//! `cargo build --release -p flexdisk-sim && cargo bench -p flexdisk --bench driver`
//!
//! - `init`: whole-process time (kubelet probes every driver).
//! - 8 concurrent attaches vs 1, with the simulator's VM operations fixed at 2 s: elapsed ratio
//!   and ARM writes (cross-process batching).
//! - waitforattach: delay from the device node appearing to the call returning.
//! - mountdevice of a new 1 TiB (sparse) disk: ext4 and xfs, format + mount.

use flexdisk_azure::{Arm, ArmOptions, Config, DiskParams, DiskSpec};
use flexdisk_sim::process::{binary, SimProcess};
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const NODE: &str = "k8s-agentpool1-31415926-0";
const VM_OP_MS: u64 = 2000;

struct Bench {
    sim: SimProcess,
    tmp: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
    arm: Arm,
}

impl Bench {
    fn flexdisk(&self, args: &[&str], node_side: bool) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_flexdisk"));
        c.args(args)
            .env("SSL_CERT_FILE", self.sim.field("caBundle"))
            .env("FLEXDISK_LOG", self.tmp.path().join("flexdisk.log"))
            .env("FLEXDISK_STATE_DIR", self.tmp.path().join("state"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if node_side {
            c.env("FLEXDISK_CONFIG", self.sim.node_field(NODE, "azureJson"))
                .env("FLEXDISK_HOST_ROOT", self.sim.node_field(NODE, "root"))
                .env("IMDS_ENDPOINT", self.sim.node_field(NODE, "imds"));
        } else {
            c.env("FLEXDISK_CONFIG", self.sim.field("azureJson"));
        }
        c
    }

    fn reply(out: Output) -> Value {
        let v: Value = serde_json::from_slice(&out.stdout).expect("JSON reply");
        assert_eq!(v["status"], "Success", "{v}");
        v
    }

    fn disk(&self, name: &str, gib: u64) -> String {
        let p = DiskParams::parse([("skuName", "Premium_LRS")]).expect("params");
        let spec = DiskSpec::from_params(
            &p,
            name,
            gib,
            None,
            &self.arm.resource_group,
            &self.arm.location,
        );
        self.rt
            .block_on(self.arm.create_disk(&spec))
            .expect("disk")
            .id
    }

    fn options(disk: &str, name: &str, fs: &str) -> String {
        json!({"diskURI": disk, "kubernetes.io/fsType": fs, "kubernetes.io/readwrite": "rw",
               "kubernetes.io/pvOrVolumeName": name})
        .to_string()
    }

    fn writes(&self) -> u64 {
        let (_, c) = self
            .sim
            .control("GET", "/counters", None)
            .expect("counters");
        c["VirtualMachines_AttachDetachDataDisks"]
            .as_u64()
            .unwrap_or(0)
    }

    fn detach_all(&self, names: &[String]) {
        let kids: Vec<_> = names
            .iter()
            .map(|n| {
                self.flexdisk(&["detach", n, NODE], false)
                    .spawn()
                    .expect("detach")
            })
            .collect();
        for k in kids {
            Bench::reply(k.wait_with_output().expect("detach"));
        }
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let ca_dir = std::env::temp_dir().join(format!("flexdisk-bench-ca-{}", std::process::id()));
    std::env::set_var("SSL_CERT_FILE", ca_dir.join("ca.pem"));
    let vm_ms = VM_OP_MS.to_string();
    let sim = SimProcess::start(
        &binary(),
        &[
            "--tls-dir",
            ca_dir.to_str().expect("utf-8"),
            "--vm-op-ms",
            &vm_ms,
            "--disk-op-ms",
            "50",
        ],
    )
    .expect("simulator (cargo build --release -p flexdisk-sim first)");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let config = Config::load(Path::new(&sim.field("azureJson"))).expect("config");
    let arm = rt
        .block_on(Arm::connect(&config, ArmOptions::default()))
        .expect("arm");
    let b = Bench {
        sim,
        tmp: tempfile::tempdir().expect("tmp"),
        rt,
        arm,
    };

    // init
    let inits: Vec<Duration> = (0..50)
        .map(|_| {
            let t = Instant::now();
            Bench::reply(b.flexdisk(&["init"], true).output().expect("init"));
            t.elapsed()
        })
        .collect();
    println!(
        "init (whole process, median of 50): {:.2} ms",
        median(inits).as_secs_f64() * 1e3
    );

    // 1 attach vs 8 concurrent attaches
    let names: Vec<String> = (0..9).map(|i| format!("pvc-bench-{i}")).collect();
    let opts: Vec<String> = names
        .iter()
        .map(|n| Bench::options(&b.disk(n, 1), n, "ext4"))
        .collect();
    b.sim.control("DELETE", "/counters", None).expect("reset");
    let t = Instant::now();
    Bench::reply(
        b.flexdisk(&["attach", &opts[8], NODE], false)
            .output()
            .expect("attach"),
    );
    let one = t.elapsed();
    let one_writes = b.writes();
    b.detach_all(&names[8..]);
    b.sim.control("DELETE", "/counters", None).expect("reset");
    let t = Instant::now();
    let kids: Vec<_> = opts[..8]
        .iter()
        .map(|o| {
            b.flexdisk(&["attach", o, NODE], false)
                .spawn()
                .expect("attach")
        })
        .collect();
    for k in kids {
        Bench::reply(k.wait_with_output().expect("attach"));
    }
    let eight = t.elapsed();
    let eight_writes = b.writes();
    println!(
        "attach, VM operations {VM_OP_MS} ms: 1 attach {:.2} s ({one_writes} ARM write); 8 concurrent {:.2} s ({eight_writes} ARM writes); ratio {:.2} (one-per-operation would be ~8)",
        one.as_secs_f64(),
        eight.as_secs_f64(),
        eight.as_secs_f64() / one.as_secs_f64()
    );
    b.detach_all(&names[..8]);

    // waitforattach detection delay: the device appears when the attach completes.
    let name = "pvc-bench-wait";
    let o = Bench::options(&b.disk(name, 1), name, "ext4");
    let attach = b
        .flexdisk(&["attach", &o, NODE], false)
        .spawn()
        .expect("attach");
    // The LUN Azure will choose is the lowest free one: 0 after the detaches above.
    let waiter_started = Instant::now();
    let waiter = b
        .flexdisk(&["waitforattach", "0", &o], true)
        .spawn()
        .expect("wait");
    let link = Path::new(&b.sim.node_field(NODE, "root")).join("dev/disk/azure/scsi1/lun0");
    while !link.exists() {
        std::thread::sleep(Duration::from_micros(200));
    }
    let appeared = waiter_started.elapsed();
    let out = waiter.wait_with_output().expect("wait");
    let returned = waiter_started.elapsed();
    let dev = Bench::reply(out)["device"]
        .as_str()
        .expect("dev")
        .to_string();
    Bench::reply(attach.wait_with_output().expect("attach"));
    println!(
        "waitforattach: returned {:.1} ms after the device appeared",
        (returned.saturating_sub(appeared)).as_secs_f64() * 1e3
    );
    let _ = dev;
    b.detach_all(&[name.to_string()]);

    // mountdevice on a new 1 TiB disk
    for fs in ["ext4", "xfs"] {
        let name = format!("pvc-bench-tib-{fs}");
        let o = Bench::options(&b.disk(&name, 1024), &name, fs);
        let lun = Bench::reply(
            b.flexdisk(&["attach", &o, NODE], false)
                .output()
                .expect("attach"),
        )["device"]
            .as_str()
            .expect("lun")
            .to_string();
        let dev = Bench::reply(
            b.flexdisk(&["waitforattach", &lun, &o], true)
                .output()
                .expect("wait"),
        )["device"]
            .as_str()
            .expect("dev")
            .to_string();
        let mnt = b.tmp.path().join(format!("mnt-{fs}"));
        let m = mnt.to_str().expect("utf-8");
        let t = Instant::now();
        Bench::reply(
            b.flexdisk(&["mountdevice", m, &dev, &o], true)
                .output()
                .expect("mount"),
        );
        let took = t.elapsed();
        println!(
            "mountdevice, new 1 TiB disk, {fs}: {:.2} s (format + mount)",
            took.as_secs_f64()
        );
        Bench::reply(
            b.flexdisk(&["unmountdevice", m], true)
                .output()
                .expect("unmount"),
        );
        b.detach_all(&[name]);
    }
    let _ = std::fs::remove_dir_all(&ca_dir);
}
