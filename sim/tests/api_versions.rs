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

/// The requests Kubernetes' Azure code (cloud-provider-azure over `armcompute/v7`) sends, in its
/// own shapes: pkg/provider/azure_controller_standard.go and azure_controller_vmss.go.
#[test]
fn cloud_provider_azure_request_shapes_are_taken() {
    let sim = Sim::start(&[]).at(DISK_API_2025, VM_API_2025);
    sim.empty_disk("cpa-a", 2, None);
    sim.empty_disk("cpa-s", 2, Some("1"));
    let other_rg = sim
        .disk_id("cpa-x")
        .replace(&sim.s("resourceGroup"), "flexdisk-volumes");
    let put = sim.arm(
        "PUT",
        &other_rg,
        Some(&json!({"location": "westus2", "properties": {"creationData": {"createOption": "Empty"}, "diskSizeGB": 1}})),
    );
    sim.done(put);

    // Disks_List: the whole subscription, every resource group.
    let sub = format!(
        "/subscriptions/{}/providers/Microsoft.Compute/disks",
        sim.s("subscription")
    );
    let all = sim.arm("GET", &sub, None);
    assert_eq!(all.status, 200, "{:?}", all.body);
    let mut names: Vec<&str> = all.body["value"]
        .as_array()
        .expect("value")
        .iter()
        .filter_map(|d| d["name"].as_str())
        .collect();
    names.sort();
    assert_eq!(names, ["cpa-a", "cpa-s", "cpa-x"]);

    // Scale sets: list and get, 404 for one that is not there.
    let rg_path = format!(
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/virtualMachineScaleSets",
        sim.s("subscription"),
        sim.s("resourceGroup")
    );
    let list = sim.arm("GET", &rg_path, None);
    assert_eq!(list.status, 200, "{:?}", list.body);
    let sets = list.body["value"].as_array().expect("value");
    assert_eq!(sets.len(), 1, "{sets:?}");
    assert_eq!(sets[0]["name"], "aks-nodepool1-31415926-vmss");
    assert_eq!(sets[0]["sku"]["capacity"], 2);
    assert_eq!(sets[0]["properties"]["orchestrationMode"], "Uniform");
    assert_eq!(sets[0]["zones"], json!(["1", "2"]));
    let one = sim.arm(
        "GET",
        &format!("{rg_path}/aks-nodepool1-31415926-vmss"),
        None,
    );
    assert_eq!(one.status, 200);
    assert_eq!(one.body, sets[0]);
    let old = sim.arm("GET", &format!("{rg_path}?api-version={VM_API}"), None);
    assert_eq!(old.body["value"], list.body["value"]);
    let none = sim.arm("GET", &format!("{rg_path}/no-such-pool"), None);
    assert_eq!((none.status, none.code()), (404, "ResourceNotFound"));

    // The `{}` refresh of an availability-set VM: taken, nothing changes.
    let vm_path = sim.vm_path(AS_A);
    let before = sim.arm("GET", &vm_path, None);
    let refresh = sim.arm("PUT", &vm_path, Some(&json!({})));
    assert_eq!(refresh.status, 200, "{:?}", refresh.body);
    assert_eq!(refresh.body["properties"]["provisioningState"], "Succeeded");
    assert_eq!(
        sim.arm("GET", &vm_path, None).header("etag"),
        before.header("etag")
    );

    // Attach by a PUT of location and the whole data-disk list, guarded by the etag.
    let etag = before.header("etag").expect("etag").to_string();
    let mut disks = before.body["properties"]["storageProfile"]["dataDisks"]
        .as_array()
        .expect("dataDisks")
        .clone();
    disks.push(
        json!({"name": "cpa-a", "lun": 4, "caching": "ReadOnly", "createOption": "Attach",
        "managedDisk": {"id": sim.disk_id("cpa-a")}, "writeAcceleratorEnabled": false}),
    );
    let body =
        json!({"location": "westus2", "properties": {"storageProfile": {"dataDisks": disks}}});
    let token = sim.secret_token();
    let attach = sim.arm_with(
        "PUT",
        &vm_path,
        Some(&body),
        &[("if-match", &etag)],
        Some(&token),
    );
    assert_eq!(attach.status, 200, "{:?}", attach.body);
    // One operation per VM: the refresh too waits its turn.
    let busy = sim.arm("PUT", &vm_path, Some(&json!({})));
    assert_eq!((busy.status, busy.code()), (409, "OperationNotAllowed"));
    sim.done(attach);
    assert_eq!(sim.lun_of(AS_A, "cpa-a"), 4);
    assert!(sim.lun_link(AS_A, 4).exists());
    let stale = sim.arm_with(
        "PUT",
        &vm_path,
        Some(&body),
        &[("if-match", &etag)],
        Some(&token),
    );
    assert_eq!((stale.status, stale.code()), (412, "PreconditionFailed"));

    // Detach: the list read back, the entry marked toBeDetached.
    let now = sim.arm("GET", &vm_path, None).body;
    let mut disks = now["properties"]["storageProfile"]["dataDisks"].clone();
    for d in disks.as_array_mut().expect("dataDisks") {
        if d["name"] == "cpa-a" {
            d["toBeDetached"] = json!(true);
        }
    }
    let detach = json!({"location": now["location"], "properties": {"storageProfile": {"dataDisks": disks}}});
    sim.done(sim.arm("PUT", &vm_path, Some(&detach)));
    assert!(!sim.lun_link(AS_A, 4).exists());

    // A scale-set instance: the update carries only properties.storageProfile (no location).
    let ss_path = sim.vm_path(SS_0);
    let only_disks = json!({"properties": {"storageProfile": {"dataDisks": [
        {"name": "cpa-s", "lun": 0, "caching": "None", "createOption": "Attach",
         "managedDisk": {"id": sim.disk_id("cpa-s")}, "writeAcceleratorEnabled": false}]}}});
    let put = sim.arm("PUT", &ss_path, Some(&only_disks));
    assert_eq!(put.status, 200, "{:?}", put.body);
    sim.done(put);
    assert!(sim.lun_link(SS_0, 0).exists());
    let refresh = sim.arm("PUT", &ss_path, Some(&json!({})));
    assert_eq!(refresh.status, 200, "{:?}", refresh.body);
    assert!(
        sim.lun_link(SS_0, 0).exists(),
        "an empty PUT detaches nothing"
    );
    // Other requirements still hold: an update naming a wrong field is refused by name.
    let wrong = json!({"properties": {"storageProfile": {"dataDisks": [{"lun": "zero"}]}}});
    let bad = sim.arm("PUT", &ss_path, Some(&wrong));
    assert_eq!((bad.status, bad.code()), (400, "InvalidRequestContent"));
    sim.check_schemas();
}

/// `{arm}/metadata/endpoints` in both of Resource Manager's forms: the object without an
/// api-version (Azure Stack Hub's 2015-01-01), the array of clouds from 2019-05-01 on, whose entry
/// cloud-provider-azure's azclient picks by the cloud config's `cloud`.
#[test]
fn cloud_metadata_in_both_forms() {
    let sim = Sim::start(&[]);
    let arm = sim.s("arm");
    let login = format!("{}/", sim.s("login"));
    let old = sim.get(&format!("{arm}/metadata/endpoints"), &[]);
    assert_eq!(old.status, 200);
    assert_eq!(old.body["authentication"]["loginEndpoint"], login);
    let dated = sim.get(
        &format!("{arm}/metadata/endpoints?api-version=2015-01-01"),
        &[],
    );
    assert_eq!(dated.body, old.body);
    let config: serde_json::Value = serde_json::from_slice(
        &std::fs::read(sim.s("azureJson")).expect("control-plane azure.json"),
    )
    .expect("json");
    for v in ["2019-05-01", "2022-09-01"] {
        let clouds = sim.get(&format!("{arm}/metadata/endpoints?api-version={v}"), &[]);
        assert_eq!(clouds.status, 200, "{v}: {:?}", clouds.body);
        let list = clouds.body.as_array().expect("an array of clouds");
        let ours = list
            .iter()
            .find(|c| c["name"] == config["cloud"])
            .expect("an entry named as the cloud config's cloud");
        assert_eq!(ours["resourceManager"], format!("{arm}/"));
        assert_eq!(ours["authentication"]["loginEndpoint"], login);
        assert_eq!(
            ours["authentication"]["audiences"][0],
            "https://management.core.windows.net/"
        );
    }
    let bad = sim.get(
        &format!("{arm}/metadata/endpoints?api-version=2099-01-01"),
        &[],
    );
    assert_eq!(
        (bad.status, bad.code()),
        (400, "InvalidApiVersionParameter")
    );
}

/// Managed identity through the App Service protocol on each node: `X-IDENTITY-HEADER` checked,
/// api-version 2019-08-01 only, `client_id` / `principal_id` (or `object_id`) / `mi_res_id` name
/// the user-assigned identity, one at most, and the token is one ARM takes.
#[test]
fn app_service_identity_protocol() {
    let sim = Sim::start(&[]);
    let endpoint = sim.node(AS_A, "identityEndpoint");
    let header = sim.node(AS_A, "identityHeader");
    let resource = "https%3A%2F%2Fmanagement.azure.com%2F";
    let url = |q: &str| format!("{endpoint}?api-version=2019-08-01&resource={resource}{q}");
    let h = [("X-IDENTITY-HEADER", header.as_str())];

    let system = sim.get(&url(""), &h);
    assert_eq!(system.status, 200, "{:?}", system.body);
    assert_eq!(system.body["token_type"], "Bearer");
    assert_eq!(system.body["resource"], "https://management.azure.com/");
    let expires: i64 = system.body["expires_on"]
        .as_str()
        .expect("expires_on is a string")
        .parse()
        .expect("seconds");
    assert!(expires > chrono::Utc::now().timestamp());
    let kubelet_client = {
        let c: serde_json::Value =
            serde_json::from_slice(&std::fs::read(sim.node(AS_A, "azureJson")).expect("read"))
                .expect("json");
        c["userAssignedIdentityID"]
            .as_str()
            .expect("id")
            .to_string()
    };
    assert_ne!(system.body["client_id"], kubelet_client.as_str());
    let by_client = sim.get(&url(&format!("&client_id={kubelet_client}")), &h);
    assert_eq!(by_client.body["client_id"], kubelet_client.as_str());
    let res_id = format!(
        "/subscriptions/{}/resourcegroups/{}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/",
        sim.s("subscription"),
        sim.s("resourceGroup")
    );
    let identities =
        sim.arm("GET", &sim.vm_path(AS_A), None).body["identity"]["userAssignedIdentities"].clone();
    let (rg_identities, values) = identities
        .as_object()
        .expect("identities")
        .iter()
        .next()
        .expect("one");
    assert!(rg_identities
        .to_lowercase()
        .starts_with(&res_id.to_lowercase()));
    // The VM names the identity's client and principal IDs (read-only in the answer).
    assert_eq!(values["clientId"], kubelet_client.as_str(), "{identities}");
    let principal = values["principalId"].as_str().expect("principalId");
    let by_res = sim.get(&url(&format!("&mi_res_id={rg_identities}")), &h);
    assert_eq!(by_res.body["client_id"], kubelet_client.as_str());
    // By its object ID, under either name clients send it: never the system identity instead.
    for name in ["principal_id", "object_id"] {
        let by_object = sim.get(&url(&format!("&{name}={principal}")), &h);
        assert_eq!(by_object.status, 200, "{name}: {:?}", by_object.body);
        assert_eq!(
            by_object.body["client_id"],
            kubelet_client.as_str(),
            "{name}"
        );
    }
    let two = sim.get(
        &url(&format!(
            "&client_id={kubelet_client}&object_id={principal}"
        )),
        &h,
    );
    assert_eq!(two.status, 400, "{:?}", two.body);
    let unknown = sim.get(&url("&client_id=00000000-0000-0000-0000-000000000000"), &h);
    assert_eq!(unknown.status, 400);

    // The token works at ARM.
    let token = by_client.body["access_token"].as_str().expect("token");
    let vm = sim.arm_with("GET", &sim.vm_path(AS_A), None, &[], Some(token));
    assert_eq!(vm.status, 200, "{:?}", vm.body);

    // Strict where the protocol is: the header, its value, the api-version, the resource.
    assert_eq!(sim.get(&url(""), &[]).status, 400);
    assert_eq!(
        sim.get(&url(""), &[("X-IDENTITY-HEADER", "guess")]).status,
        401
    );
    let other_node = sim.node(AS_B, "identityHeader");
    assert_ne!(other_node, header);
    assert_eq!(
        sim.get(&url(""), &[("X-IDENTITY-HEADER", &other_node)])
            .status,
        401
    );
    let old = format!("{endpoint}?api-version=2017-09-01&resource={resource}");
    assert_eq!(sim.get(&old, &h).status, 400);
    assert_eq!(
        sim.get(&format!("{endpoint}?api-version=2019-08-01"), &h)
            .status,
        400
    );
    // IMDS itself still asks for its own header.
    let imds = sim.node(AS_A, "imds");
    let plain =
        format!("{imds}/metadata/identity/oauth2/token?api-version=2018-02-01&resource={resource}");
    assert_eq!(sim.get(&plain, &h).status, 400);
}
