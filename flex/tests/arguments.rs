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

/// kubelet passes a pod's secrets to `mount` (`kubernetes.io/secret/<key>`, base64): the call's
/// log line shows the options without their values, whatever the call.
#[test]
fn secrets_in_options_never_reach_the_log() {
    let tmp = tempfile::tempdir().expect("tmp");
    let log = tmp.path().join("flexdisk.log");
    let options = r#"{"diskURI":"/subscriptions/s/resourceGroups/r/providers/Microsoft.Compute/disks/d","kubernetes.io/secret/password":"aHVudGVyMi1zZWNyZXQ=","kubernetes.io/serviceAccount.token":"eyJhbGciOi.secret-token","clientSecret":"plain-secret-value"}"#;
    for args in [
        vec!["mount", "/var/lib/kubelet/pods/p/volumes/v", options],
        vec!["attach", options, "node-a"],
        vec!["mountdevice", "/nonexistent/dir", "/dev/null", options],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_flexdisk"))
            .args(&args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("FLEXDISK_CONFIG", tmp.path().join("missing-azure.json"))
            .env("FLEXDISK_STATE_DIR", tmp.path().join("state"))
            .env("FLEXDISK_LOG", &log)
            .output()
            .expect("runs");
        flexdisk_sim::kubelet::strict_reply(&out).unwrap_or_else(|e| panic!("{args:?}: {e}"));
    }
    let logged = std::fs::read_to_string(&log).expect("log");
    assert_eq!(logged.matches("call=").count(), 3, "{logged}");
    for secret in ["aHVudGVyMi1zZWNyZXQ=", "secret-token", "plain-secret-value"] {
        assert!(!logged.contains(secret), "{secret} in the log:\n{logged}");
    }
    assert!(logged.contains("kubernetes.io/secret/password"), "{logged}");
}
