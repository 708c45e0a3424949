//! Both api-versions of each resource provider are served side by side — disks 2024-03-02 (what
//! flexdisk's own client speaks) and 2025-01-02, compute 2024-07-01 and 2025-04-01 (what
//! `armcompute/v7`, and so Kubernetes' Azure code, speaks) — each request and answer checked
//! against its own version's specification.

mod common;
use common::*;
use serde_json::json;

#[test]
fn both_versions_are_served_each_against_its_own_specification() {
    let sim = Sim::start(&[]).at(DISK_API_2025, VM_API_2025);
    let d = sim.disk_id("v25");
    // A property that is new in 2025-01-02: a 2024-03-02 request with it is refused by name, as
    // ARM's 2024-03-02 model has no place for it.
    let body = json!({"location": "westus2", "sku": {"name": "Premium_LRS"},
        "properties": {"creationData": {"createOption": "Empty"}, "diskSizeGB": 4,
            "availabilityPolicy": {"actionOnDiskDelay": "AutomaticReattach"}}});
    let old = sim.arm("PUT", &format!("{d}?api-version={DISK_API}"), Some(&body));
    assert_eq!((old.status, old.code()), (400, "InvalidRequestContent"));
    assert_eq!(
        old.body["error"]["target"], "properties.availabilityPolicy",
        "{:?}",
        old.body
    );
    let put = sim.arm("PUT", &d, Some(&body));
    assert_eq!(put.status, 202, "{:?}", put.body);
    // The operation's URLs carry the api-version the write was made at.
    for h in ["azure-asyncoperation", "location"] {
        let url = put.header(h).expect("operation header");
        assert!(
            url.ends_with(&format!("api-version={DISK_API_2025}")),
            "{h}: {url}"
        );
    }
    let status = sim.wait_async(&put);
    assert_eq!(status["status"], "Succeeded");
    assert_eq!(
        status["properties"]["output"]["properties"]["availabilityPolicy"]["actionOnDiskDelay"],
        "AutomaticReattach"
    );

    // Read at each version: the 2024 answer leaves out what its model does not have.
    let new = sim.arm("GET", &d, None);
    assert_eq!(
        new.body["properties"]["availabilityPolicy"]["actionOnDiskDelay"],
        "AutomaticReattach"
    );
    let old = sim.arm("GET", &format!("{d}?api-version={DISK_API}"), None);
    assert_eq!(old.status, 200);
    assert!(
        old.body["properties"].get("availabilityPolicy").is_none(),
        "{}",
        old.body
    );
    assert_eq!(old.body["properties"]["diskSizeGB"], 4);
    // The 2024 operation poll of a 2025 write answers in 2024's shape too.
    let url = put.header("azure-asyncoperation").expect("header");
    let polled = sim.arm("GET", &url.replace(DISK_API_2025, DISK_API), None);
    assert_eq!(polled.status, 200);
    assert!(polled.body["properties"]["output"]["properties"]
        .get("availabilityPolicy")
        .is_none());

    // Compute at both versions, one VM.
    for api in [VM_API, VM_API_2025] {
        let vm = sim.arm(
            "GET",
            &format!("{}?api-version={api}", sim.vm_path(AS_A)),
            None,
        );
        assert_eq!(vm.status, 200, "{api}: {:?}", vm.body);
    }
    let attach = sim.attach(AS_A, &["v25"]);
    assert_eq!(attach.status, 202);
    assert!(attach
        .header("location")
        .is_some_and(|l| l.ends_with(&format!("api-version={VM_API_2025}"))));
    sim.wait_location(&attach);
    sim.done(sim.detach(AS_A, &["v25"]));

    // Versions neither provider serves are refused naming those it does, and a disk version is
    // not a compute version.
    let none = sim.arm("GET", &format!("{d}?api-version=2099-01-01"), None);
    assert_eq!(
        (none.status, none.code()),
        (400, "NoRegisteredProviderFound")
    );
    assert!(
        none.message().contains(DISK_API) && none.message().contains(DISK_API_2025),
        "{}",
        none.message()
    );
    let crossed = sim.arm(
        "GET",
        &format!("{}?api-version={DISK_API_2025}", sim.vm_path(AS_A)),
        None,
    );
    assert_eq!(crossed.code(), "NoRegisteredProviderFound");
    sim.check_schemas();
}
