//! Whatever kubelet (or anyone) passes, the driver answers exactly one JSON line on stdout,
//! nothing on stderr, exit 0 only with Success, and never panics. Arguments are generated from a
//! fixed-seed generator over the calls and hostile values (a property test, reproducible).

use std::process::Command;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545F4914F6CDD1D)
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

#[test]
fn any_arguments_get_one_json_reply() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().to_str().expect("utf-8").to_string();
    let calls = [
        "init",
        "attach",
        "waitforattach",
        "isattached",
        "mountdevice",
        "unmountdevice",
        "detach",
        "mount",
        "unmount",
        "getvolumename",
        "expandvolume",
        "expandfs",
        "version",
        "install",
        "bogus",
        "",
        "ATTACH",
    ];
    let long = "x".repeat(10_000);
    let values = [
        "{}",
        "{",
        "[]",
        "null",
        "\"str\"",
        "42",
        "",
        " ",
        "ünïcødé",
        "\u{0}",
        "/dev/null",
        "-1",
        "3",
        "99999999999999999999",
        "../../etc/passwd",
        "--plugin-dir",
        r#"{"diskURI":"/subscriptions/s/resourceGroups/r/providers/Microsoft.Compute/disks/d"}"#,
        r#"{"diskURI":"/subscriptions/s/resourceGroups/r/providers/Microsoft.Compute/disks/d","kubernetes.io/fsType":"ntfs"}"#,
        r#"{"diskURI":"/subscriptions/s/resourceGroups/r/providers/Microsoft.Compute/disks/d","kubernetes.io/readwrite":"maybe"}"#,
        r#"{"diskURI":42}"#,
        r#"{"diskURI":"/subscriptions/s"}"#,
        long.as_str(),
        dir.as_str(),
    ];
    let mut rng = Rng(0x9E3779B97F4A7C15);
    for case in 0..300 {
        let mut argv = vec![rng.pick(&calls).to_string()];
        for _ in 0..rng.next() % 6 {
            argv.push(rng.pick(&values).to_string());
        }
        if argv[0] == "install" && argv.len() > 2 {
            argv[2] = format!("{dir}/plugins-{case}");
        }
        let out = Command::new(env!("CARGO_BIN_EXE_flexdisk"))
            .args(argv.iter().map(|a| a.replace('\u{0}', "")))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("FLEXDISK_CONFIG", format!("{dir}/missing-azure.json"))
            .env("FLEXDISK_HOST_ROOT", format!("{dir}/host"))
            .env("FLEXDISK_STATE_DIR", format!("{dir}/state"))
            .env("FLEXDISK_LOG", format!("{dir}/flexdisk.log"))
            .env("FLEXDISK_WAIT_SECS", "0")
            .output()
            .expect("runs");
        flexdisk_sim::kubelet::strict_reply(&out).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    }
}
