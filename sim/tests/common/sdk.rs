//! Running an Azure SDK's conformance program (sim/tests/go-sdk, sim/tests/py-sdk) against the
//! simulator: its build script, the program with the ready line on stdin, its summary line.

use super::Sim;
use serde_json::Value;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs a build script of `sim/tests/` and returns the path it prints (what it built, kept in a
/// cache outside the clone).
pub fn build(script: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(script);
    let out = Command::new("bash")
        .arg(&path)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("runs sim/tests/{script}: {e}"));
    assert!(out.status.success(), "sim/tests/{script} failed");
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_string()
}

/// A program's command with nothing of this process's environment but PATH, and what every
/// conformance program is given: a HOME of no one's, no proxy, and one node's managed identity
/// through the App Service protocol.
pub fn program(sim: &Sim, exe: &str, node: &str) -> Command {
    let mut cmd = Command::new(exe);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", std::env::temp_dir())
        .env("NO_PROXY", "*")
        .env("IDENTITY_ENDPOINT", sim.node(node, "identityEndpoint"))
        .env("IDENTITY_HEADER", sim.node(node, "identityHeader"));
    cmd
}

/// Runs a conformance program to its end: the ready line on its stdin, its output printed, its
/// last line (the summary) returned once every scenario passed, its models found nothing wrong,
/// `scenarios` scenarios ran and it exited 0.
pub fn run(sim: &Sim, mut cmd: Command, what: &str, scenarios: usize, built: Duration) -> Value {
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: the conformance program starts: {e}"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(sim.ready.to_string().as_bytes())
        .expect("ready line written");
    let out = child.wait_with_output().expect("the program ends");
    let stdout = String::from_utf8_lossy(&out.stdout);
    print!("{stdout}");
    println!(
        "{what} conformance: program ready in {:.1}s, run {:.1}s",
        built.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    let summary: Value = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("{what}: no summary line: {stdout}"));
    let ran = summary["scenarios"].as_array().expect("scenarios");
    let failed: Vec<&Value> = ran.iter().filter(|s| s["ok"] != true).collect();
    assert!(failed.is_empty(), "{what}: failed scenarios: {failed:#?}");
    assert_eq!(ran.len(), scenarios, "{what}: {ran:#?}");
    let problems = summary["modelProblems"].as_array().expect("modelProblems");
    assert!(
        problems.is_empty(),
        "{what}: the SDK's models found: {problems:#?}"
    );
    assert!(out.status.success(), "{what}: exit status {:?}", out.status);
    summary
}

/// The SDK sent each of these kinds of request at least once (summary `requests`, keyed
/// "METHOD kind").
pub fn assert_requests(summary: &Value, kinds: &[&str]) {
    let requests = &summary["requests"];
    for key in kinds {
        assert!(
            requests[key].as_u64().unwrap_or(0) > 0,
            "no {key:?} among {requests}"
        );
    }
}

/// What the SDK did is what the simulator holds: no disk named with `marker` is left attached to
/// any VM or left in the subscription.
pub fn assert_nothing_left(sim: &Sim, nodes: &[&str], marker: &str) {
    for n in nodes {
        let vm = sim.arm("GET", &sim.vm_path(n), None);
        let disks = vm.body["properties"]["storageProfile"]["dataDisks"].to_string();
        assert!(!disks.contains(marker), "{n}: {disks}");
    }
    let sub = format!(
        "/subscriptions/{}/providers/Microsoft.Compute/disks",
        sim.s("subscription")
    );
    let left = sim.arm("GET", &sub, None).body.to_string();
    assert!(!left.contains(marker), "{left}");
}
