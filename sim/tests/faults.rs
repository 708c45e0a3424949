//! Fault injection, throttling, counters, and the identity endpoints (Entra ID, IMDS).

mod common;
use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn disk_body() -> Value {
    json!({"location": "westus2", "properties": {"creationData": {"createOption": "Empty"}, "diskSizeGB": 1}})
}

#[test]
fn injected_statuses_resets_latency_failed_operations_and_lost_responses() {
    let sim = Sim::start(&[]);
    sim.fault(json!({"operation": "Disks_Get", "times": 2, "action": {"kind": "status", "status": 429, "retryAfter": 7}}));
    let storm = sim.arm("GET", &sim.disk_id("a"), None);
    assert_eq!(
        (storm.status, storm.header("retry-after")),
        (429, Some("7"))
    );
    assert_eq!(sim.arm("GET", &sim.disk_id("a"), None).status, 429);
    assert_eq!(
        sim.arm("GET", &sim.disk_id("a"), None).status,
        404,
        "the storm ends after two"
    );

    sim.fault(json!({"method": "GET", "pathContains": "/disks/b", "times": 1, "action": {"kind": "status", "status": 503}}));
    let unavailable = sim.arm("GET", &sim.disk_id("b"), None);
    assert_eq!(
        (unavailable.status, unavailable.code()),
        (503, "ServiceUnavailable")
    );
    assert!(unavailable.header("retry-after").is_some());
    sim.fault(
        json!({"operation": "Disks_Get", "times": 1, "action": {"kind": "status", "status": 500}}),
    );
    assert_eq!(
        sim.arm("GET", &sim.disk_id("b"), None).code(),
        "InternalServerError"
    );

    sim.fault(json!({"operation": "Disks_Get", "times": 1, "action": {"kind": "reset"}}));
    let reset = sim.try_arm(
        "GET",
        &format!("{}?api-version={DISK_API}", sim.disk_id("b")),
    );
    assert!(reset.is_err(), "connection reset: {reset:?}");

    sim.fault(
        json!({"operation": "Disks_Get", "times": 1, "action": {"kind": "latency", "ms": 300}}),
    );
    let t = Instant::now();
    assert_eq!(sim.arm("GET", &sim.disk_id("b"), None).status, 404);
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "the answer waited"
    );

    // A create whose operation fails: visible only in the polled status; nothing is left.
    sim.fault(json!({"operation": "Disks_CreateOrUpdate", "times": 1, "action": {"kind": "lroFail", "code": "InternalDiskManagementError"}}));
    let put = sim.arm("PUT", &sim.disk_id("failing"), Some(&disk_body()));
    assert_eq!(put.status, 202, "accepted first");
    let status = sim.wait_async(&put);
    assert_eq!(status["status"], "Failed");
    assert_eq!(status["error"]["code"], "InternalDiskManagementError");
    assert_eq!(
        sim.wait_location(&put).code(),
        "InternalDiskManagementError"
    );
    assert_eq!(sim.arm("GET", &sim.disk_id("failing"), None).status, 404);

    // An attach whose operation fails leaves the disk unattached and no device.
    sim.empty_disk("att", 1, None);
    sim.fault(json!({"operation": "VirtualMachines_AttachDetachDataDisks", "times": 1, "action": {"kind": "lroFail"}}));
    let att = sim.attach(AS_A, &["att"]);
    assert_eq!(sim.wait_async(&att)["status"], "Failed");
    let disk = sim.arm("GET", &sim.disk_id("att"), None).body;
    assert_eq!(disk["properties"]["diskState"], "Unattached");
    assert!(
        std::fs::read_dir(sim.root(AS_A).join("dev/disk/azure/scsi1"))
            .expect("dir")
            .next()
            .is_none()
    );

    // Applied, but the answer is lost: the client sees a reset, the disk exists.
    sim.fault(json!({"operation": "Disks_CreateOrUpdate", "times": 1, "action": {"kind": "loseResponse"}}));
    let url = format!(
        "{}{}?api-version={DISK_API}",
        sim.s("arm"),
        sim.disk_id("lost")
    );
    let lost = reqwest::blocking::Client::new()
        .put(url)
        .bearer_auth(sim.secret_token())
        .json(&disk_body())
        .send();
    assert!(lost.is_err(), "the response was lost");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        sim.arm("GET", &sim.disk_id("lost"), None).body["properties"]["provisioningState"],
        "Succeeded"
    );

    let rules = sim.control("GET", "/faults", None);
    assert_eq!(rules.body, json!([]), "every rule retired itself");
    let bad_rule = sim.control(
        "POST",
        "/faults",
        Some(&json!({"action": {"kind": "explode"}})),
    );
    assert_eq!(bad_rule.status, 400);
    sim.check_schemas();
}

#[test]
fn throttling_budgets_counters_and_state_dump() {
    let sim = Sim::start(&[]);
    assert_eq!(
        sim.control(
            "PUT",
            "/throttle",
            Some(&json!({"reads": 100, "writes": 2, "windowSecs": 60}))
        )
        .status,
        200
    );
    let first = sim.arm("PUT", &sim.disk_id("t1"), Some(&disk_body()));
    assert_eq!(
        first.header("x-ms-ratelimit-remaining-subscription-writes"),
        Some("1")
    );
    assert_eq!(
        sim.arm("PUT", &sim.disk_id("t2"), Some(&disk_body()))
            .header("x-ms-ratelimit-remaining-subscription-writes"),
        Some("0")
    );
    let refused = sim.arm("PUT", &sim.disk_id("t3"), Some(&disk_body()));
    assert_eq!(
        (refused.status, refused.code()),
        (429, "SubscriptionRequestsThrottled")
    );
    let wait: u64 = refused
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&wait));
    assert!(
        sim.arm("GET", &sim.disk_id("t1"), None).status < 400,
        "reads have their own budget"
    );

    sim.control("DELETE", "/counters", None);
    sim.control(
        "PUT",
        "/throttle",
        Some(&json!({"reads": 1000, "writes": 1000, "windowSecs": 60})),
    );
    sim.arm("GET", &sim.disk_id("t1"), None);
    sim.arm("GET", &sim.disk_id("t1"), None);
    sim.empty_disk("t4", 1, None);
    let counters = sim.control("GET", "/counters", None).body;
    assert_eq!(counters["Disks_Get"], 3);
    assert_eq!(counters["Disks_CreateOrUpdate"], 1);
    assert_eq!(counters["writes"], 1);

    // Operations begun after a timing change take the new time; a bad timing is refused.
    assert_eq!(
        sim.control(
            "PUT",
            "/timing",
            Some(&json!({"vmOpMs": 5, "diskOpMs": 1500}))
        )
        .status,
        200
    );
    // Unsaid spreads are none: a PUT gives the whole timing.
    assert_eq!(
        sim.control("GET", "/timing", None).body,
        json!({"vmOpMs": 5, "diskOpMs": 1500, "vmOpSigma": 0.0, "diskOpSigma": 0.0})
    );
    let slow = sim.arm("PUT", &sim.disk_id("t5"), Some(&disk_body()));
    assert_eq!(slow.header("retry-after"), Some("1"), "1.5 s left");
    assert_eq!(
        sim.control("PUT", "/timing", Some(&json!({"vmOpMs": "fast"})))
            .status,
        400
    );
    assert_eq!(
        sim.control(
            "PUT",
            "/timing",
            Some(&json!({"vmOpMs": 5, "diskOpMs": 1500, "vmOpSigma": 4.0}))
        )
        .status,
        400,
        "a spread beyond 3 is refused"
    );
    assert_eq!(
        sim.control("GET", "/timing", None).body["vmOpSigma"],
        0.0,
        "a refused timing changes nothing"
    );

    let dump = sim.control("GET", "/state", None).body;
    assert!(
        dump["disks"].as_object().is_some_and(|d| d.len() == 4),
        "{dump}"
    );
    assert!(
        dump.get("signingKey").is_none(),
        "the signing key stays inside"
    );
    assert_eq!(sim.control("GET", "/nothing", None).status, 404);
    sim.check_schemas();
}

#[test]
fn entra_and_imds_issue_the_only_tokens_arm_accepts() {
    let sim = Sim::start(&[]);
    let wrong = sim.login_form(&[
        ("grant_type", "client_credentials"),
        ("client_id", &sim.s("clientId")),
        ("client_secret", "guess"),
        ("scope", "https://management.azure.com/.default"),
    ]);
    assert_eq!(
        (wrong.status, wrong.body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    assert!(!wrong.body.to_string().contains(&sim.s("clientSecret")));
    let scope = sim.login_form(&[
        ("grant_type", "client_credentials"),
        ("client_id", &sim.s("clientId")),
        ("client_secret", &sim.s("clientSecret")),
        ("scope", "https://management.azure.com/"),
    ]);
    assert_eq!(scope.body["error"], "invalid_scope");

    // Workload identity: the federated token file is accepted as a client assertion.
    let assertion = std::fs::read_to_string(sim.s("federatedTokenFile")).expect("token file");
    let fed = sim.login_form(&[
        ("grant_type", "client_credentials"),
        ("client_id", &sim.s("clientId")),
        (
            "client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        ),
        ("client_assertion", assertion.trim()),
        ("scope", "https://management.azure.com/.default"),
    ]);
    assert_eq!(fed.status, 200, "{:?}", fed.body);
    let fed_token = fed.body["access_token"]
        .as_str()
        .expect("token")
        .to_string();
    assert_eq!(
        sim.arm_with("GET", &sim.vm_path(AS_A), None, &[], Some(&fed_token))
            .status,
        200
    );
    let tampered = format!("{}x", assertion.trim());
    let bad = sim.login_form(&[
        ("grant_type", "client_credentials"),
        ("client_id", &sim.s("clientId")),
        (
            "client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        ),
        ("client_assertion", &tampered),
        ("scope", "https://management.azure.com/.default"),
    ]);
    assert_eq!(bad.body["error"], "invalid_client");

    // A token for another audience is refused by ARM.
    let graph = sim.login_form(&[
        ("grant_type", "client_credentials"),
        ("client_id", &sim.s("clientId")),
        ("client_secret", &sim.s("clientSecret")),
        ("scope", "https://graph.microsoft.com/.default"),
    ]);
    let graph_token = graph.body["access_token"]
        .as_str()
        .expect("token")
        .to_string();
    assert_eq!(
        sim.arm_with("GET", &sim.vm_path(AS_A), None, &[], Some(&graph_token))
            .code(),
        "InvalidAuthenticationTokenAudience"
    );

    // IMDS of a node.
    let imds = sim.node(SS_0, "imds");
    let http = reqwest::blocking::Client::new();
    let no_header = http
        .get(format!("{imds}/metadata/instance?api-version=2023-07-01"))
        .send()
        .expect("imds");
    assert_eq!(no_header.status().as_u16(), 400);
    let inst: Value = http
        .get(format!("{imds}/metadata/instance?api-version=2023-07-01"))
        .header("Metadata", "true")
        .send()
        .expect("imds")
        .json()
        .expect("json");
    assert_eq!(
        inst["compute"]["vmScaleSetName"],
        "aks-nodepool1-31415926-vmss"
    );
    assert_eq!(inst["compute"]["zone"], "1");
    assert_eq!(inst["compute"]["resourceId"], sim.vm_path(SS_0));
    assert_eq!(
        inst["compute"]["platformFaultDomain"], "0",
        "scalars are strings"
    );
    check_imds_instance(&inst);

    let config: Value = serde_json::from_str(
        &std::fs::read_to_string(sim.node(SS_0, "azureJson")).expect("azure.json"),
    )
    .expect("json");
    assert_eq!(config["useManagedIdentityExtension"], true);
    let client_id = config["userAssignedIdentityID"]
        .as_str()
        .expect("identity")
        .to_string();
    let tok: Value = http
        .get(format!("{imds}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fmanagement.azure.com%2F&client_id={client_id}"))
        .header("Metadata", "true").send().expect("imds").json().expect("json");
    assert_eq!(tok["client_id"], client_id.as_str());
    assert!(tok["expires_on"].is_string() && tok["expires_in"].is_string());
    assert!(
        sim.s("login").starts_with("https://"),
        "Entra ID is served over TLS only"
    );
    let untrusted = reqwest::blocking::Client::builder()
        .use_rustls_tls()
        .build()
        .expect("client")
        .get(format!(
            "{}/{}/v2.0/.well-known/openid-configuration",
            sim.s("login"),
            sim.s("tenant")
        ))
        .send();
    assert!(
        untrusted.is_err(),
        "a client that does not trust the simulator's CA is refused"
    );
    let mi_token = tok["access_token"].as_str().expect("token").to_string();
    assert_eq!(
        sim.arm_with("GET", &sim.vm_path(SS_0), None, &[], Some(&mi_token))
            .status,
        200
    );
    let unknown = http
        .get(format!("{imds}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://management.azure.com/&client_id=00000000-0000-0000-0000-000000000000"))
        .header("Metadata", "true").send().expect("imds");
    assert_eq!(unknown.status().as_u16(), 400);
    let system: Value = http
        .get(format!("{imds}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://management.azure.com/"))
        .header("Metadata", "true").send().expect("imds").json().expect("json");
    assert_ne!(
        system["client_id"],
        client_id.as_str(),
        "without client_id the system-assigned identity answers"
    );

    // Expired tokens are refused (a world with one-second tokens).
    let world = tempfile::NamedTempFile::new().expect("tmp");
    let mut w: Value = serde_json::from_slice(
        &std::process::Command::new(env!("CARGO_BIN_EXE_flexdisk-sim"))
            .arg("world")
            .output()
            .expect("world")
            .stdout,
    )
    .expect("json");
    w["tokenLifetimeSecs"] = json!(1);
    std::fs::write(world.path(), w.to_string()).expect("write");
    let short = Sim::start(&["--world", world.path().to_str().expect("path")]);
    let t = short.secret_token();
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(
        short
            .arm_with("GET", &short.vm_path(AS_A), None, &[], Some(&t))
            .code(),
        "ExpiredAuthenticationToken"
    );
    sim.check_schemas();
}

fn check_imds_instance(inst: &Value) {
    // IMDS lives in another specification file; checked with the same tool by definition.
    check_schemas(&[Exchange {
        method: "GET".into(),
        path: "/instance".into(),
        status: 200,
        body: inst.clone(),
    }]);
}
