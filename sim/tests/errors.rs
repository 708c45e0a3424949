//! Every refusal Azure makes that flexdisk must handle, as the simulator makes it.

mod common;
use common::*;
use serde_json::{json, Value};

#[test]
fn authentication_api_version_and_body_errors() {
    let sim = Sim::start(&[]);
    let d = sim.disk_id("x");
    let none = sim.arm_with("GET", &d, None, &[], None);
    assert_eq!((none.status, none.code()), (401, "AuthenticationFailed"));
    assert!(none
        .header("www-authenticate")
        .is_some_and(|h| h.contains("authorization_uri")));
    let forged = sim.arm_with(
        "GET",
        &d,
        None,
        &[],
        Some("eyJhbGciOiJIUzI1NiJ9.e30.c2lnbmF0dXJl"),
    );
    assert_eq!(
        (forged.status, forged.code()),
        (401, "InvalidAuthenticationToken")
    );

    let missing = sim.arm("GET", &format!("{d}?x=1"), None);
    assert_eq!(
        (missing.status, missing.code()),
        (400, "MissingApiVersionParameter")
    );
    let old = sim.arm("GET", &format!("{d}?api-version=2019-07-01"), None);
    assert_eq!((old.status, old.code()), (400, "NoRegisteredProviderFound"));
    assert!(old.message().contains("2024-03-02"));

    let bad = sim.arm("PUT", &d, Some(&json!({"location": "westus2", "properties": {"creationData": {"createOption": "Empty"}, "diskSizeGB": "ten"}})));
    assert_eq!((bad.status, bad.code()), (400, "InvalidRequestContent"));
    assert_eq!(bad.body["error"]["target"], "properties.diskSizeGB");
    let undeclared = sim.arm("PUT", &d, Some(&json!({"location": "westus2", "properties": {"creationData": {"createOption": "Empty"}, "diskSizeGB": 1, "speed": "max"}})));
    assert_eq!(undeclared.status, 400);
    assert!(
        undeclared.message().contains("properties.speed"),
        "{}",
        undeclared.message()
    );
    let no_size = sim.arm("PUT", &d, Some(&json!({"location": "westus2", "properties": {"creationData": {"createOption": "Empty"}}})));
    assert_eq!(
        (no_size.status, no_size.body["error"]["target"].as_str()),
        (400, Some("properties.diskSizeGB"))
    );
    let unmanaged = sim.arm("PUT", &d, Some(&json!({"location": "westus2", "properties": {"creationData": {"createOption": "Import"}, "diskSizeGB": 1}})));
    assert_eq!(unmanaged.status, 400);
    let not_json = sim.arm_with(
        "PUT",
        &d,
        None,
        &[("content-type", "application/json")],
        Some(&sim.secret_token()),
    );
    assert_eq!(
        (not_json.status, not_json.code()),
        (400, "InvalidRequestContent")
    );

    let rg = d.replace(&sim.s("resourceGroup"), "no-such-rg");
    assert_eq!(sim.arm("GET", &rg, None).code(), "ResourceGroupNotFound");
    let gone = sim.arm("GET", &d, None);
    assert_eq!((gone.status, gone.code()), (404, "ResourceNotFound"));
    let vm = sim.arm(
        "GET",
        &sim.vm_path(AS_A).replace("31415926-0", "nope"),
        None,
    );
    assert_eq!(vm.status, 404);
    sim.check_schemas();
}

#[test]
fn attach_rules_limits_luns_zones_ownership_and_one_operation_per_vm() {
    let sim = Sim::start(&["--vm-op-ms", "400"]);
    // Standard_B2s takes 4 data disks.
    for i in 0..5 {
        sim.empty_disk(&format!("b{i}"), 1, None);
    }
    let five = sim.attach(AS_B, &["b0", "b1", "b2", "b3", "b4"]);
    assert_eq!((five.status, five.code()), (409, "OperationNotAllowed"));
    assert_eq!(five.body["error"]["target"], "dataDisks");
    assert!(five.message().contains("is 4"), "{}", five.message());

    let first = sim.attach(AS_B, &["b0"]);
    assert_eq!(first.status, 202);
    let concurrent = sim.attach(AS_B, &["b1"]);
    assert_eq!(
        (concurrent.status, concurrent.code()),
        (409, "OperationNotAllowed")
    );
    assert!(concurrent
        .message()
        .contains("another operation is in progress"));
    let during = sim.arm("GET", &sim.vm_path(AS_B), None);
    assert_eq!(during.body["properties"]["provisioningState"], "Updating");
    sim.done(first);

    // A LUN that is taken; Azure's own choice when none is given.
    let path = format!("{}/attachDetachDataDisks", sim.vm_path(AS_B));
    let lun0 = sim.lun_of(AS_B, "b0");
    let taken = sim.arm(
        "POST",
        &path,
        Some(&json!({"dataDisksToAttach": [{"diskId": sim.disk_id("b1"), "lun": lun0}]})),
    );
    assert_eq!((taken.status, taken.code()), (400, "InvalidParameter"));
    assert!(taken.message().contains(&format!("LUN {lun0}")));
    sim.done(sim.arm("POST", &path, Some(&json!({"dataDisksToAttach": [{"diskId": sim.disk_id("b1"), "lun": 7}, {"diskId": sim.disk_id("b2")}]}))));
    assert_eq!(sim.lun_of(AS_B, "b1"), 7);
    assert_eq!(sim.lun_of(AS_B, "b2"), 1, "lowest free LUN");

    // Owned by another VM (shared disks aside).
    let other = sim.attach(AS_A, &["b0"]);
    assert_eq!(other.code(), "ConflictingUserInput");
    assert!(other.message().contains(&sim.vm_path(AS_B)));
    sim.create_disk("shared", json!({"location": "westus2", "sku": {"name": "Premium_LRS"},
        "properties": {"creationData": {"createOption": "Empty"}, "diskSizeGB": 8, "maxShares": 2}}));
    sim.done(sim.attach(AS_A, &["shared"]));
    sim.done(sim.attach(AS_B, &["shared"]));
    let shared = sim.arm("GET", &sim.disk_id("shared"), None).body;
    assert_eq!(
        shared["managedByExtended"].as_array().map(Vec::len),
        Some(2)
    );

    // Attach while the disk is being detached.
    let detaching = sim.detach(AS_B, &["b2"]);
    assert_eq!(detaching.status, 202);
    let vm = sim.arm("GET", &sim.vm_path(AS_B), None).body;
    let entry = vm["properties"]["storageProfile"]["dataDisks"]
        .as_array()
        .expect("disks")
        .iter()
        .find(|d| d["name"] == "b2")
        .cloned()
        .expect("b2");
    assert_eq!(entry["toBeDetached"], true);
    let racing = sim.attach(AS_A, &["b2"]);
    assert_eq!(
        (racing.status, racing.code()),
        (409, "AttachDiskWhileBeingDetached")
    );
    sim.done(detaching);

    // Zones: a zonal disk only where its zone is; ZRS anywhere.
    sim.empty_disk("z1", 1, Some("1"));
    let wrong_zone = sim.attach(SS_1, &["z1"]);
    assert_eq!(wrong_zone.status, 400);
    assert!(
        wrong_zone.message().contains("same zone"),
        "{}",
        wrong_zone.message()
    );
    sim.create_disk(
        "zrs",
        json!({"location": "westus2", "sku": {"name": "Premium_ZRS"},
        "properties": {"creationData": {"createOption": "Empty"}, "diskSizeGB": 1}}),
    );
    sim.done(sim.attach(SS_1, &["zrs"]));

    // Host caching is refused on large disks.
    sim.empty_disk("huge", 4096, Some("1"));
    let ss0 = format!("{}/attachDetachDataDisks", sim.vm_path(SS_0));
    let cached = sim.arm(
        "POST",
        &ss0,
        Some(
            &json!({"dataDisksToAttach": [{"diskId": sim.disk_id("huge"), "caching": "ReadOnly"}]}),
        ),
    );
    assert_eq!(
        (cached.status, cached.body["error"]["target"].as_str()),
        (400, Some("caching"))
    );
    sim.done(sim.arm(
        "POST",
        &ss0,
        Some(&json!({"dataDisksToAttach": [{"diskId": sim.disk_id("huge")}]})),
    ));
    let vm = sim.arm("GET", &sim.vm_path(SS_0), None).body;
    assert_eq!(
        vm["properties"]["storageProfile"]["dataDisks"][0]["caching"],
        "None"
    );

    let missing = sim.attach(AS_A, &["nope"]);
    assert_eq!(missing.status, 404);
    let not_attached = sim.detach(AS_A, &["b3"]);
    assert_eq!(not_attached.status, 400);
    sim.check_schemas();
}

#[test]
fn classic_vm_update_attaches_and_detaches_under_etag() {
    let sim = Sim::start(&[]);
    sim.empty_disk("c1", 1, None);
    let vm = sim.arm("GET", &sim.vm_path(AS_A), None);
    let etag = vm.header("etag").expect("etag").to_string();
    assert_eq!(vm.body["etag"], etag.as_str());
    let mut body = vm.body.clone();
    body["properties"]["storageProfile"]["dataDisks"] = json!([{"lun": 3, "createOption": "Attach", "managedDisk": {"id": sim.disk_id("c1")}, "caching": "ReadOnly"}]);
    let stale = sim.arm_with(
        "PUT",
        &sim.vm_path(AS_A),
        Some(&body),
        &[("if-match", "\"999\"")],
        Some(&sim.secret_token()),
    );
    assert_eq!((stale.status, stale.code()), (412, "PreconditionFailed"));
    let put = sim.arm_with(
        "PUT",
        &sim.vm_path(AS_A),
        Some(&body),
        &[("if-match", &etag)],
        Some(&sim.secret_token()),
    );
    assert_eq!(put.status, 200, "{:?}", put.body);
    assert_eq!(put.body["properties"]["provisioningState"], "Updating");
    sim.done(put);
    assert_eq!(sim.lun_of(AS_A, "c1"), 3);
    assert!(sim.lun_link(AS_A, 3).exists());
    let after = sim.arm("GET", &sim.vm_path(AS_A), None);
    assert_ne!(
        after.header("etag"),
        Some(etag.as_str()),
        "etag moves on change"
    );

    // Detach the classic way: toBeDetached on the entry, by PATCH.
    let mut patch = json!({"properties": {"storageProfile": {"dataDisks": after.body["properties"]["storageProfile"]["dataDisks"].clone()}}});
    patch["properties"]["storageProfile"]["dataDisks"][0]["toBeDetached"] = json!(true);
    let p = sim.arm("PATCH", &sim.vm_path(AS_A), Some(&patch));
    assert_eq!(p.status, 200, "{:?}", p.body);
    sim.done(p);
    assert!(!sim.lun_link(AS_A, 3).exists());
    assert_eq!(
        sim.arm("GET", &sim.disk_id("c1"), None).body["properties"]["diskState"],
        "Unattached"
    );

    // Scale-set instances take the same update by PUT.
    sim.empty_disk("c2", 1, Some("1"));
    let ssvm = sim.arm("GET", &sim.vm_path(SS_0), None).body;
    let mut body = ssvm.clone();
    body["properties"]["storageProfile"]["dataDisks"] =
        json!([{"lun": 0, "createOption": "Attach", "managedDisk": {"id": sim.disk_id("c2")}}]);
    sim.done(sim.arm("PUT", &sim.vm_path(SS_0), Some(&body)));
    assert!(sim.lun_link(SS_0, 0).exists());
    let resize = json!({"properties": {"hardwareProfile": {"vmSize": "Standard_D8s_v3"}}});
    assert_eq!(
        sim.arm("PATCH", &sim.vm_path(AS_A), Some(&resize)).status,
        409
    );
    sim.check_schemas();
}

#[test]
fn disks_grow_only_online_within_azure_rules_and_copy_from_snapshots() {
    let sim = Sim::start(&[]);
    sim.empty_disk("g", 1, Some("1"));
    sim.done(sim.attach(SS_0, &["g"]));
    let link = sim.lun_link(SS_0, sim.lun_of(SS_0, "g"));
    write_at(&link, 0, b"snapshot me");
    let shrink = sim.arm(
        "PATCH",
        &sim.disk_id("g"),
        Some(&json!({"properties": {"diskSizeGB": 0}})),
    );
    assert_eq!(shrink.status, 400);
    let grow = sim.arm(
        "PATCH",
        &sim.disk_id("g"),
        Some(&json!({"properties": {"diskSizeGB": 3}})),
    );
    assert_eq!(grow.status, 202, "{:?}", grow.body);
    sim.done(grow);
    // The guest sees the new size once it rescans (node_backend.rs).
    assert_eq!(block_size_bytes(&link), 1 << 30);
    let cross = sim.arm(
        "PATCH",
        &sim.disk_id("g"),
        Some(&json!({"properties": {"diskSizeGB": 5000}})),
    );
    assert_eq!((cross.status, cross.code()), (409, "OperationNotAllowed"));
    let same = sim.arm(
        "PUT",
        &sim.disk_id("g"),
        Some(
            &json!({"location": "westus2", "zones": ["1"], "sku": {"name": "Premium_LRS"},
        "properties": {"creationData": {"createOption": "Empty"}, "diskSizeGB": 3}}),
        ),
    );
    assert_eq!(
        same.status, 200,
        "an identical PUT is idempotent: {:?}",
        same.body
    );
    let moved = sim.arm(
        "PUT",
        &sim.disk_id("g"),
        Some(&json!({"location": "westus2", "zones": ["2"],
        "properties": {"creationData": {"createOption": "Empty"}, "diskSizeGB": 3}})),
    );
    assert_eq!(
        (moved.status, moved.code()),
        (409, "PropertyChangeNotAllowed")
    );

    let snap_id = sim.disk_id("g").replace("/disks/g", "/snapshots/s1");
    let snap = sim.arm("PUT", &snap_id, Some(&json!({"location": "westus2",
        "properties": {"creationData": {"createOption": "Copy", "sourceResourceId": sim.disk_id("g")}}})));
    assert_eq!(snap.status, 202, "{:?}", snap.body);
    sim.done(snap);
    assert_eq!(
        sim.arm("GET", &snap_id, None).body["properties"]["diskSizeGB"],
        3
    );
    sim.create_disk(
        "fromsnap",
        json!({"location": "westus2", "zones": ["1"],
        "properties": {"creationData": {"createOption": "Copy", "sourceResourceId": snap_id}}}),
    );
    sim.create_disk("clone", json!({"location": "westus2", "zones": ["1"],
        "properties": {"creationData": {"createOption": "Copy", "sourceResourceId": sim.disk_id("g")}, "diskSizeGB": 4}}));
    let small = sim.arm("PUT", &sim.disk_id("tiny"), Some(&json!({"location": "westus2",
        "properties": {"creationData": {"createOption": "Copy", "sourceResourceId": sim.disk_id("g")}, "diskSizeGB": 1}})));
    assert_eq!(small.status, 400);
    sim.done(sim.attach(SS_0, &["fromsnap", "clone"]));
    for d in ["fromsnap", "clone"] {
        let l = sim.lun_link(SS_0, sim.lun_of(SS_0, d));
        assert_eq!(
            read_at(&l, 0, 11),
            b"snapshot me",
            "{d} carries the source's bytes"
        );
    }
    assert_eq!(
        block_size_bytes(&sim.lun_link(SS_0, sim.lun_of(SS_0, "clone"))),
        4 << 30
    );
    let list = sim.arm(
        "GET",
        &format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/disks",
            sim.s("subscription"),
            sim.s("resourceGroup")
        ),
        None,
    );
    assert_eq!(list.body["value"].as_array().map(Vec::len), Some(3));
    sim.done(sim.arm("DELETE", &snap_id, None));
    assert_eq!(sim.arm("GET", &snap_id, None).status, 404);
    let v2 = sim.arm(
        "PUT",
        &sim.disk_id("v2"),
        Some(
            &json!({"location": "westus2", "sku": {"name": "PremiumV2_LRS"},
        "properties": {"creationData": {"createOption": "Empty"}, "diskSizeGB": 8}}),
        ),
    );
    assert_eq!(
        (v2.status, v2.body["error"]["target"].as_str()),
        (400, Some("zones")),
        "PremiumV2 must be zonal"
    );
    sim.check_schemas();
}

#[test]
fn premium_v2_performance_has_azure_s_ranges_defaults_and_daily_limit() {
    let sim = Sim::start(&[]);
    let body = |gb: i64, perf: Value| {
        let mut props = json!({"creationData": {"createOption": "Empty"}, "diskSizeGB": gb});
        merge_props(&mut props, perf);
        json!({"location": "westus2", "zones": ["1"], "sku": {"name": "PremiumV2_LRS"}, "properties": props})
    };
    // Created without: the baseline.
    let d = sim.create_disk("base", body(8, json!({})));
    assert_eq!(d["properties"]["diskIOPSReadWrite"], 3000);
    assert_eq!(d["properties"]["diskMBpsReadWrite"], 125);
    // 8 GiB allows 3000 + 2 × 500 IOPS.
    let too_many = sim.arm(
        "PUT",
        &sim.disk_id("big"),
        Some(&body(8, json!({"diskIOPSReadWrite": 6000}))),
    );
    assert_eq!((too_many.status, too_many.code()), (400, "BadRequest"));
    assert!(too_many.body["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .contains("3000 to 4000"));
    // 100 GiB: 6000 IOPS and 300 MB/s fit (≤ 0.25 MB/s per IOPS = 1500).
    let d = sim.create_disk(
        "tuned",
        body(
            100,
            json!({"diskIOPSReadWrite": 6000, "diskMBpsReadWrite": 300}),
        ),
    );
    assert_eq!(d["properties"]["diskIOPSReadWrite"], 6000);
    let id = sim.disk_id("tuned");
    let patch = |i: i64, m: i64| {
        sim.arm(
            "PATCH",
            &id,
            Some(&json!({"properties": {"diskIOPSReadWrite": i, "diskMBpsReadWrite": m}})),
        )
    };
    let slow = patch(6000, 3000);
    assert_eq!(
        (slow.status, slow.code()),
        (400, "BadRequest"),
        "MB/s above 0.25 per IOPS"
    );
    // Creation was the first setting of the day; three more are allowed, then refused.
    for (i, m) in [(7000, 350), (8000, 400), (9000, 450)] {
        let r = patch(i, m);
        assert_eq!(r.status, 200, "{:?}", r.body);
    }
    let fifth = patch(10000, 500);
    assert_eq!((fifth.status, fifth.code()), (409, "OperationNotAllowed"));
    assert_eq!(
        sim.arm("GET", &id, None).body["properties"]["diskIOPSReadWrite"],
        9000,
        "the refused change changed nothing"
    );
    // Tags are not a performance setting.
    assert_eq!(
        sim.arm("PATCH", &id, Some(&json!({"tags": {"a": "b"}})))
            .status,
        200
    );
    sim.check_schemas();
}

fn merge_props(into: &mut Value, from: Value) {
    if let (Some(a), Value::Object(b)) = (into.as_object_mut(), from) {
        a.extend(b);
    }
}
