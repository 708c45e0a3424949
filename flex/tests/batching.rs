//! Concurrent attach processes for one VM are combined into few ARM operations (cross-process
//! batching), each process getting its own answer.

mod common;

use common::*;
use serde_json::json;

#[test]
fn sixteen_concurrent_attaches_share_few_arm_writes() {
    // A node with room for 32 data disks.
    let mut world: serde_json::Value = serde_json::from_slice(
        &std::process::Command::new(flexdisk_sim::process::binary())
            .arg("world")
            .output()
            .expect("world")
            .stdout,
    )
    .expect("world JSON");
    world["nodes"][0]["vmSize"] = json!("Standard_D16s_v3");
    let tmp = tempfile::tempdir().expect("tmp");
    let world_file = tmp.path().join("world.json");
    std::fs::write(&world_file, world.to_string()).expect("write");
    let env = Env::start_with(&[
        "--world",
        world_file.to_str().expect("utf-8"),
        "--vm-op-ms",
        "400",
    ]);

    let opts: Vec<String> = (0..16)
        .map(|i| {
            let name = format!("pvc-batch-{i}");
            let disk = env.disk(&name, 1);
            env.options(&disk, &name, json!({}))
        })
        .collect();
    env.sim.control("DELETE", "/counters", None).expect("reset");
    let children: Vec<_> = opts
        .iter()
        .map(|o| env.controller_spawn(&["attach", o, AS_A]))
        .collect();
    let mut luns: Vec<i64> = children
        .into_iter()
        .map(|c| {
            let out = Out::from_output(c.wait_with_output().expect("attach ends"));
            out.ok()["device"]
                .as_str()
                .expect("lun")
                .parse()
                .expect("number")
        })
        .collect();
    luns.sort();
    luns.dedup();
    assert_eq!(luns.len(), 16, "distinct LUNs: {luns:?}");
    let (_, counters) = env.sim.control("GET", "/counters", None).expect("counters");
    let writes = counters["VirtualMachines_AttachDetachDataDisks"]
        .as_u64()
        .unwrap_or(0);
    println!("16 concurrent attaches: {writes} attachDetachDataDisks requests");
    assert!(
        writes <= 6,
        "batched: {writes} ARM writes for 16 attaches ({counters})"
    );

    env.sim.control("DELETE", "/counters", None).expect("reset");
    let children: Vec<_> = (0..16)
        .map(|i| env.controller_spawn(&["detach", &format!("pvc-batch-{i}"), AS_A]))
        .collect();
    for c in children {
        Out::from_output(c.wait_with_output().expect("detach ends")).ok();
    }
    let (_, counters) = env.sim.control("GET", "/counters", None).expect("counters");
    let writes = counters["VirtualMachines_AttachDetachDataDisks"]
        .as_u64()
        .unwrap_or(0);
    println!("16 concurrent detaches: {writes} attachDetachDataDisks requests");
    assert!(writes <= 6, "batched: {writes} ARM writes for 16 detaches");
    for o in &opts {
        assert_eq!(
            env.controller(&["isattached", o, AS_A]).ok()["attached"],
            false
        );
    }
}
