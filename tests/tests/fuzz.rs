//! Structure-aware fuzzing of the driver's JSON options and argument shapes, against the live
//! simulators (so that well-formed cases reach Azure): option objects mutated from a valid one —
//! keys dropped, added, retyped, values replaced with hostile strings, numbers, nesting — and raw
//! byte-level corruptions of the JSON text, in every call's argument shape. Whatever comes in, the
//! driver prints exactly one JSON object, nothing on stderr, exits 0 only with Success, never
//! panics, and every Failure says something. A fixed seed; `FLEXDISK_FUZZ_CASES` sets the budget.

use flexdisk_sim::kubelet::strict_reply;
use serde_json::{json, Map, Value};
use std::process::Command;
use system_tests::{bin, Cluster};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

const KEYS: &[&str] = &[
    "diskURI",
    "cachingMode",
    "kind",
    "kubernetes.io/fsType",
    "kubernetes.io/readwrite",
    "kubernetes.io/pvOrVolumeName",
    "kubernetes.io/pod.name",
    "kubernetes.io/secret/key",
    "mountOptions",
    "",
    "diskuri",
    "\u{202e}diskURI",
];

fn hostile_string(r: &mut Rng) -> Value {
    let options = [
        String::new(),
        " ".into(),
        "ReadOnly".into(),
        "ext4".into(),
        "xfs".into(),
        "ntfs".into(),
        "ro".into(),
        "rw".into(),
        "maybe".into(),
        "../../../../etc/shadow".into(),
        "/subscriptions/".into(),
        "/subscriptions/x/resourceGroups/y/providers/Microsoft.Compute/disks/".into(),
        "/subscriptions/x/resourceGroups/y/providers/Microsoft.Compute/disks/d/../../virtualMachines/v".into(),
        "ünïcødé ✓ 𝔘".into(),
        "line\nbreak\r\n".into(),
        "\u{7f}\u{1b}[31m".into(),
        "%00%2e%2e".into(),
        "x".repeat(70_000),
        "9".repeat(400),
        "$(reboot)".into(),
        "; rm -rf /".into(),
    ];
    Value::String(options[r.below(options.len())].clone())
}

fn hostile_value(r: &mut Rng, depth: u32) -> Value {
    match r.below(if depth > 3 { 5 } else { 7 }) {
        0 => Value::Null,
        1 => json!(r.chance(50)),
        2 => json!(r.next() as i64),
        3 => json!(f64::from(r.below(1000) as u32) / 7.0),
        4 => hostile_string(r),
        5 => Value::Array(
            (0..r.below(4))
                .map(|_| hostile_value(r, depth + 1))
                .collect(),
        ),
        _ => {
            let mut m = Map::new();
            for _ in 0..r.below(4) {
                m.insert(
                    KEYS[r.below(KEYS.len())].to_string(),
                    hostile_value(r, depth + 1),
                );
            }
            Value::Object(m)
        }
    }
}

/// A mutation of the valid options, as text (sometimes no longer JSON at all).
fn options(r: &mut Rng, valid: &Value) -> String {
    let mut v = valid.clone();
    if let Some(m) = v.as_object_mut() {
        for _ in 0..1 + r.below(3) {
            let key = KEYS[r.below(KEYS.len())].to_string();
            match r.below(3) {
                0 => {
                    m.remove(&key);
                }
                1 => {
                    m.insert(key, hostile_value(r, 0));
                }
                _ => {
                    m.insert(key, hostile_string(r));
                }
            }
        }
    }
    if r.chance(10) {
        v = hostile_value(r, 0);
    }
    let mut text = v.to_string();
    if r.chance(15) && !text.is_empty() {
        // Byte-level damage: truncation, a flipped byte, a stray quote.
        let mut bytes = text.into_bytes();
        match r.below(3) {
            0 => bytes.truncate(r.below(bytes.len())),
            1 => {
                let i = r.below(bytes.len());
                bytes[i] ^= 1 << r.below(7);
            }
            _ => {
                let i = r.below(bytes.len());
                bytes.insert(i, b'"');
            }
        }
        text = String::from_utf8_lossy(&bytes).replace('\0', "");
    }
    text
}

#[test]
fn hostile_options_in_every_call_shape_get_one_json_reply() {
    let cluster = Cluster::start(&["--vm-op-ms", "50", "--disk-op-ms", "20"]);
    let node = cluster.nodes(false)[0].clone();
    let hosts = cluster.hosts();
    let dir = cluster.tmp.path();
    let file = dir.join("regular-file");
    std::fs::write(&file, b"not a device").expect("file");
    let disk = cluster.create_disk("fuzz-target", "StandardSSD_LRS", 4);
    let valid = json!({"diskURI": disk, "kubernetes.io/fsType": "ext4",
        "kubernetes.io/readwrite": "rw", "kubernetes.io/pvOrVolumeName": "fuzz-target"});
    let cases: usize = std::env::var("FLEXDISK_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    let mut rng = Rng(0xF022_1234_5678_9ABC);
    let mut statuses = std::collections::BTreeMap::<String, u32>::new();
    for case in 0..cases {
        let o = options(&mut rng, &valid);
        let devices = [
            "/dev/null".to_string(),
            file.to_string_lossy().to_string(),
            dir.to_string_lossy().to_string(),
            "0".into(),
            "/nonexistent/dev".into(),
        ];
        let device = devices[rng.below(devices.len())].clone();
        let mount_dir = dir
            .join(format!("mnt-{case}"))
            .to_string_lossy()
            .to_string();
        let sizes = ["1073741824", "0", "-5", "18446744073709551616", "x", ""];
        let size = sizes[rng.below(sizes.len())].to_string();
        let (argv, env): (Vec<String>, &Vec<(String, String)>) = match rng.below(8) {
            0 => (
                vec!["attach".into(), o, node.clone()],
                &hosts.controller.env,
            ),
            1 => (
                vec!["isattached".into(), o, node.clone()],
                &hosts.controller.env,
            ),
            2 => (
                vec!["waitforattach".into(), device, o],
                &hosts.nodes[&node].driver.env,
            ),
            3 => (
                vec!["mountdevice".into(), mount_dir, device, o],
                &hosts.nodes[&node].driver.env,
            ),
            4 => (
                vec![
                    "expandvolume".into(),
                    o,
                    mount_dir,
                    size.clone(),
                    "1".into(),
                ],
                &hosts.controller.env,
            ),
            5 => (
                vec!["expandfs".into(), o, device, mount_dir, size, "1".into()],
                &hosts.nodes[&node].driver.env,
            ),
            6 => (
                vec!["mount".into(), mount_dir, o],
                &hosts.nodes[&node].driver.env,
            ),
            _ => (
                vec!["detach".into(), o.chars().take(300).collect(), node.clone()],
                &hosts.controller.env,
            ),
        };
        let out = Command::new(bin("flexdisk"))
            .args(&argv)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("FLEXDISK_WAIT_SECS", "0")
            .output()
            .expect("runs");
        let shown: String = format!("{argv:?}").chars().take(400).collect();
        let reply = strict_reply(&out).unwrap_or_else(|e| panic!("{shown}: {e}"));
        let status = reply["status"].as_str().unwrap_or_default();
        *statuses.entry(format!("{} {status}", argv[0])).or_default() += 1;
    }
    eprintln!("{cases} cases: {statuses:?}");
    // Nothing was attached to a VM by accident, and nothing to two.
    for (disk, vms) in cluster.attachments() {
        assert!(vms.len() <= 1, "{disk}: {vms:?}");
    }
}
