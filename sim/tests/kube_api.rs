//! The Kubernetes API simulator over raw HTTP, point by point against kube-apiserver's documented
//! behaviour: discovery, the seeded cluster, CRUD errors, optimistic concurrency, /status,
//! finalizers, the patch formats, server-side apply, selectors, watch, the volume controllers and
//! fault hooks.

use flexdisk_sim::process::SimProcess;
use reqwest::blocking::Client;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::time::{Duration, Instant};

struct Kube {
    _sim: SimProcess,
    url: String,
    http: Client,
}

struct R {
    status: u16,
    body: Value,
}

impl Kube {
    fn start(args: &[&str]) -> Kube {
        let sim = SimProcess::start(Path::new(env!("CARGO_BIN_EXE_flexdisk-sim")), args)
            .expect("sim starts");
        let url = sim.field("kube");
        assert!(url.starts_with("http://127.0.0.1:"), "{url}");
        Kube {
            _sim: sim,
            url,
            http: Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
        }
    }

    fn call(&self, method: &str, path: &str, ctype: &str, body: Option<&Value>) -> R {
        let mut req = self.http.request(
            method.parse().expect("method"),
            format!("{}{path}", self.url),
        );
        if let Some(b) = body {
            req = req.header("content-type", ctype).body(b.to_string());
        }
        let rsp = req.send().expect("answers");
        let status = rsp.status().as_u16();
        let text = rsp.text().expect("body");
        R {
            status,
            body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
        }
    }

    fn get(&self, path: &str) -> R {
        self.call("GET", path, "", None)
    }
    fn post(&self, path: &str, body: Value) -> R {
        self.call("POST", path, "application/json", Some(&body))
    }
    fn put(&self, path: &str, body: Value) -> R {
        self.call("PUT", path, "application/json", Some(&body))
    }
    fn patch(&self, path: &str, ctype: &str, body: Value) -> R {
        self.call("PATCH", path, ctype, Some(&body))
    }
    fn delete(&self, path: &str) -> R {
        self.call("DELETE", path, "", None)
    }

    /// Waits until `f` holds for the object at `path`.
    fn until(&self, path: &str, f: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = self.get(path);
            if r.status == 200 && f(&r.body) {
                return r.body;
            }
            assert!(
                Instant::now() < deadline,
                "{path} never got there: {}",
                r.body
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Opens a watch and reads `n` events (or until the stream ends).
    fn watch(&self, path: &str, n: usize) -> Vec<Value> {
        let rsp = self
            .http
            .get(format!("{}{path}", self.url))
            .send()
            .expect("watch");
        assert_eq!(rsp.status().as_u16(), 200);
        BufReader::new(rsp)
            .lines()
            .take(n)
            .map(|l| serde_json::from_str(&l.expect("line")).expect("event JSON"))
            .collect()
    }
}

const PVCS: &str = "/api/v1/namespaces/default/persistentvolumeclaims";

fn claim(name: &str, class: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": class,
                 "resources": {"requests": {"storage": "1Gi"}}}})
}

fn rv(o: &Value) -> u64 {
    o["metadata"]["resourceVersion"]
        .as_str()
        .expect("rv")
        .parse()
        .expect("number")
}

#[test]
fn discovery_and_the_seeded_cluster() {
    let k = Kube::start(&[]);
    assert_eq!(k.get("/version").body["major"], "1");
    assert_eq!(k.get("/api").body["versions"], json!(["v1"]));
    let groups = k.get("/apis").body;
    let names: Vec<&str> = groups["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .filter_map(|g| g["name"].as_str())
        .collect();
    assert!(
        names.contains(&"coordination.k8s.io")
            && names.contains(&"storage.k8s.io")
            && names.contains(&"events.k8s.io")
    );
    let core = k.get("/api/v1").body;
    let res: Vec<&str> = core["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    for r in [
        "persistentvolumeclaims",
        "persistentvolumeclaims/status",
        "persistentvolumes/status",
        "nodes",
        "pods",
        "secrets",
        "events",
        "namespaces",
    ] {
        assert!(res.contains(&r), "{r} missing from {res:?}");
    }
    let ns = k.get("/api/v1/namespaces").body;
    let ns: Vec<&str> = ns["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|n| n["metadata"]["name"].as_str())
        .collect();
    for n in ["default", "kube-system", "kube-node-lease"] {
        assert!(ns.contains(&n));
    }
    let node = k
        .get("/api/v1/nodes/aks-nodepool1-31415926-vmss000000")
        .body;
    assert_eq!(
        node["metadata"]["labels"]["topology.kubernetes.io/zone"],
        "westus2-1"
    );
    assert_eq!(
        node["metadata"]["labels"]["kubernetes.io/hostname"],
        "aks-nodepool1-31415926-vmss000000"
    );
    assert_eq!(
        node["metadata"]["labels"]["node.kubernetes.io/instance-type"],
        "Standard_D4s_v3"
    );
    let pid = node["spec"]["providerID"].as_str().expect("providerID");
    assert!(
        pid.starts_with("azure:///subscriptions/")
            && pid.ends_with(
                "/virtualMachineScaleSets/aks-nodepool1-31415926-vmss/virtualMachines/0"
            ),
        "{pid}"
    );
    let plain = k.get("/api/v1/nodes/k8s-agentpool1-31415926-0").body;
    assert!(plain["spec"]["providerID"]
        .as_str()
        .expect("id")
        .ends_with("/virtualMachines/k8s-agentpool1-31415926-0"));
    assert_eq!(k.get("/api/v1/nodes/nope").status, 404);
    assert_eq!(k.get("/apis/bogus.io/v1/things").status, 404);
}

#[test]
fn create_get_update_conflicts_and_errors() {
    let k = Kube::start(&[]);
    let made = k.post(PVCS, claim("data", "fast"));
    assert_eq!(made.status, 201, "{}", made.body);
    let m = &made.body["metadata"];
    assert!(m["uid"].as_str().is_some_and(|u| u.len() == 36));
    assert!(m["creationTimestamp"].as_str().is_some());
    assert_eq!(m["generation"], 1);
    assert_eq!(made.body["status"]["phase"], "Pending");

    let again = k.post(PVCS, claim("data", "fast"));
    assert_eq!(again.status, 409);
    assert_eq!(again.body["kind"], "Status");
    assert_eq!(again.body["reason"], "AlreadyExists");
    assert_eq!(
        again.body["message"],
        "persistentvolumeclaims \"data\" already exists"
    );

    let missing = k.get(&format!("{PVCS}/nope"));
    assert_eq!(
        (missing.status, missing.body["reason"].as_str()),
        (404, Some("NotFound"))
    );
    assert_eq!(
        missing.body["message"],
        "persistentvolumeclaims \"nope\" not found"
    );
    assert_eq!(missing.body["details"]["name"], "nope");

    // Optimistic concurrency: a write based on an old resourceVersion is a Conflict.
    let mut stale = made.body.clone();
    let mut fresh = made.body.clone();
    fresh["metadata"]["labels"] = json!({"a": "1"});
    let updated = k.put(&format!("{PVCS}/data"), fresh);
    assert_eq!(updated.status, 200);
    assert!(rv(&updated.body) > rv(&made.body));
    assert_eq!(
        updated.body["metadata"]["generation"], 1,
        "metadata changes keep the generation"
    );
    stale["metadata"]["labels"] = json!({"a": "2"});
    let conflict = k.put(&format!("{PVCS}/data"), stale);
    assert_eq!(
        (conflict.status, conflict.body["reason"].as_str()),
        (409, Some("Conflict"))
    );
    assert!(conflict.body["message"]
        .as_str()
        .expect("msg")
        .contains("the object has been modified"));

    // A no-op write changes nothing, not even the resourceVersion.
    let same = k.put(&format!("{PVCS}/data"), updated.body.clone());
    assert_eq!(rv(&same.body), rv(&updated.body));

    // Name and namespace must agree with the URL; the namespace must exist.
    let mut other = updated.body.clone();
    other["metadata"]["name"] = json!("other");
    assert_eq!(k.put(&format!("{PVCS}/data"), other).status, 400);
    assert_eq!(
        k.post(
            "/api/v1/namespaces/ghost/persistentvolumeclaims",
            claim("x", "fast")
        )
        .status,
        404
    );
    // Invalid objects are 422 with the field.
    let bad = k.post(PVCS, json!({"metadata": {"name": "bad"}, "spec": {"resources": {"requests": {"storage": "1Gi"}}}}));
    assert_eq!(
        (bad.status, bad.body["reason"].as_str()),
        (422, Some("Invalid"))
    );
    assert!(bad.body["message"]
        .as_str()
        .expect("m")
        .contains("spec.accessModes"));
    // Claims are immutable but for requests, which only bound claims of an expandable class
    // may change (the PersistentVolumeClaimResize admission plugin).
    let mut grow = k.get(&format!("{PVCS}/data")).body;
    grow["spec"]["resources"]["requests"]["storage"] = json!("2Gi");
    let refused = k.put(&format!("{PVCS}/data"), grow.clone());
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(refused.body["message"]
        .as_str()
        .expect("m")
        .contains("only bound persistent volume claims can be expanded"));
    grow["spec"]["resources"]["requests"]["storage"] = json!("1Gi");
    grow["spec"]["accessModes"] = json!(["ReadWriteMany"]);
    grow["metadata"]["resourceVersion"] = json!("");
    assert_eq!(k.put(&format!("{PVCS}/data"), grow).status, 422);
    // generateName.
    let gen = k.post(
        "/api/v1/namespaces/default/secrets",
        json!({"metadata": {"generateName": "tok-"}}),
    );
    assert_eq!(gen.status, 201);
    assert!(gen.body["metadata"]["name"]
        .as_str()
        .expect("name")
        .starts_with("tok-"));
    assert_eq!(gen.body["type"], "Opaque");
}

#[test]
fn status_is_separate_and_generation_follows_spec() {
    let k = Kube::start(&[]);
    // No class: nothing else writes the claim meanwhile.
    let made = k.post(PVCS, claim("s", "")).body;
    let mut main = made.clone();
    main["status"] = json!({"phase": "Bound"});
    // What a Pending claim may change in its spec: the volume it names, once.
    main["spec"]["volumeName"] = json!("pv-s");
    let after = k.put(&format!("{PVCS}/s"), main).body;
    assert_eq!(
        after["status"]["phase"], "Pending",
        "the main resource ignores status"
    );
    assert_eq!(after["spec"]["volumeName"], "pv-s");
    assert_eq!(after["metadata"]["generation"], 2);
    let mut st = after.clone();
    st["status"] = json!({"phase": "Lost"});
    st["spec"]["resources"]["requests"]["storage"] = json!("9Gi");
    let after = k.put(&format!("{PVCS}/s/status"), st).body;
    assert_eq!(after["status"]["phase"], "Lost");
    assert_eq!(
        after["spec"]["resources"]["requests"]["storage"], "1Gi",
        "/status ignores spec"
    );
    assert_eq!(after["metadata"]["generation"], 2);
    assert_eq!(
        k.get("/api/v1/namespaces/default/secrets/x/status").status,
        404,
        "secrets have no /status"
    );
}

#[test]
fn finalizers_hold_deletion_until_the_last_goes() {
    let k = Kube::start(&[]);
    let path = "/api/v1/namespaces/default/secrets/held";
    k.post(
        "/api/v1/namespaces/default/secrets",
        json!({"metadata": {"name": "held", "finalizers": ["example.com/a", "example.com/b"]}}),
    );
    let deleting = k.delete(path);
    assert_eq!(deleting.status, 200);
    assert!(deleting.body["metadata"]["deletionTimestamp"]
        .as_str()
        .is_some());
    assert_eq!(
        k.get(path).status,
        200,
        "still there while finalizers remain"
    );
    let add = k.patch(
        path,
        "application/merge-patch+json",
        json!({"metadata": {"finalizers": ["example.com/a", "example.com/b", "example.com/c"]}}),
    );
    assert_eq!(add.status, 422);
    assert!(add.body["message"]
        .as_str()
        .expect("m")
        .contains("no new finalizers can be added"));
    let one = k.patch(
        path,
        "application/merge-patch+json",
        json!({"metadata": {"finalizers": ["example.com/b"]}}),
    );
    assert_eq!(one.status, 200);
    let last = k.patch(
        path,
        "application/json-patch+json",
        json!([{"op": "remove", "path": "/metadata/finalizers/0"}]),
    );
    assert_eq!(last.status, 200);
    assert_eq!(k.get(path).status, 404, "gone with the last finalizer");
    // Preconditions on delete.
    k.post(
        "/api/v1/namespaces/default/secrets",
        json!({"metadata": {"name": "pre"}}),
    );
    let r = k.call(
        "DELETE",
        "/api/v1/namespaces/default/secrets/pre",
        "application/json",
        Some(&json!({"preconditions": {"uid": "wrong"}})),
    );
    assert_eq!(r.status, 409);
}

#[test]
fn patch_formats_and_server_side_apply() {
    let k = Kube::start(&[]);
    let path = "/api/v1/namespaces/default/secrets/p";
    k.post("/api/v1/namespaces/default/secrets", json!({"metadata": {"name": "p", "labels": {"a": "1"}, "finalizers": ["x/one"]}, "data": {"k": "dg=="}}));
    let m = k.patch(
        path,
        "application/merge-patch+json",
        json!({"metadata": {"labels": {"a": null, "b": "2"}}}),
    );
    assert_eq!(m.body["metadata"]["labels"], json!({"b": "2"}));
    let ok = k.patch(
        path,
        "application/json-patch+json",
        json!([
        {"op": "test", "path": "/metadata/labels/b", "value": "2"},
        {"op": "add", "path": "/metadata/labels/c", "value": "3"}]),
    );
    assert_eq!(ok.status, 200);
    let failed = k.patch(
        path,
        "application/json-patch+json",
        json!([{"op": "test", "path": "/metadata/labels/b", "value": "9"}]),
    );
    assert_eq!(failed.status, 422, "{}", failed.body);
    let s = k.patch(
        path,
        "application/strategic-merge-patch+json",
        json!({"metadata": {"finalizers": ["x/two"]}}),
    );
    assert_eq!(
        s.body["metadata"]["finalizers"],
        json!(["x/one", "x/two"]),
        "finalizers merge as a set"
    );
    assert_eq!(k.patch(path, "text/plain", json!({})).status, 415);
    // A stale resourceVersion in a patch is a precondition, as in kube-apiserver.
    assert_eq!(
        k.patch(
            path,
            "application/merge-patch+json",
            json!({"metadata": {"resourceVersion": "1", "labels": {"z": "1"}}})
        )
        .status,
        409
    );

    // Server-side apply: create, ownership, conflicts, force.
    let lease = "/apis/coordination.k8s.io/v1/namespaces/default/leases/leader";
    let apply = |manager: &str, holder: &str, force: bool| {
        k.patch(
            &format!("{lease}?fieldManager={manager}{}", if force { "&force=true" } else { "" }),
            "application/apply-patch+yaml",
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "leader"},
                   "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15}}),
        )
    };
    let first = apply("a", "a", false);
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.body["spec"]["holderIdentity"], "a");
    let clash = apply("b", "b", false);
    assert_eq!(
        (clash.status, clash.body["reason"].as_str()),
        (409, Some("Conflict"))
    );
    assert!(
        clash.body["message"]
            .as_str()
            .expect("m")
            .contains("conflict with \"a\": .spec.holderIdentity"),
        "{}",
        clash.body
    );
    assert_eq!(
        apply("b", "a", false).status,
        200,
        "the same value is no conflict"
    );
    assert_eq!(
        apply("b", "b", true).body["spec"]["holderIdentity"],
        "b",
        "force takes the field"
    );
    // A field cleared by another manager's update is nobody's: applying it again is no conflict.
    k.patch(
        lease,
        "application/strategic-merge-patch+json",
        json!({"spec": {"holderIdentity": null}}),
    );
    assert_eq!(apply("a", "a", false).status, 200);
    let no_manager = k.patch(lease, "application/apply-patch+yaml", json!({"spec": {}}));
    assert_eq!(no_manager.status, 422);
}

#[test]
fn selectors_and_url_decoding() {
    let k = Kube::start(&[]);
    for (name, app, tier) in [
        ("a", "db", "storage"),
        ("b", "cache", "storage"),
        ("c", "web", "front"),
    ] {
        k.post(
            "/api/v1/namespaces/default/secrets",
            json!({"metadata": {"name": name, "labels": {"app": app, "tier": tier}}}),
        );
    }
    k.post(
        "/api/v1/namespaces/kube-system/secrets",
        json!({"metadata": {"name": "d", "labels": {"app": "db"}}}),
    );
    let names = |q: &str| -> Vec<String> {
        let r = k.get(&format!("/api/v1/secrets?{q}"));
        assert_eq!(r.status, 200, "{q}: {}", r.body);
        let mut n: Vec<String> = r.body["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|i| i["metadata"]["name"].as_str().expect("n").to_string())
            .collect();
        n.sort();
        n
    };
    assert_eq!(names("labelSelector=app%3Ddb"), ["a", "d"]);
    assert_eq!(names("labelSelector=app%3D%3Ddb,tier"), ["a"]);
    assert_eq!(names("labelSelector=app!%3Ddb"), ["b", "c"]);
    assert_eq!(
        names("labelSelector=app+in+%28db%2Ccache%29"),
        ["a", "b", "d"]
    );
    assert_eq!(names("labelSelector=app%20notin%20(db)"), ["b", "c"]);
    assert_eq!(names("labelSelector=!tier"), ["d"]);
    assert_eq!(
        names("fieldSelector=metadata.namespace%3Dkube-system"),
        ["d"]
    );
    assert_eq!(
        names("fieldSelector=metadata.name!%3Da,metadata.namespace%3Ddefault"),
        ["b", "c"]
    );
    let bad = k.get("/api/v1/secrets?fieldSelector=spec.nodeName%3Dx");
    assert_eq!(bad.status, 400);
    assert_eq!(
        bad.body["message"],
        "field label not supported: spec.nodeName"
    );
    assert_eq!(k.get("/api/v1/secrets?labelSelector=app+in+db").status, 400);
    // Pagination: limit and continue.
    let page = k.get("/api/v1/namespaces/default/secrets?limit=2").body;
    assert_eq!(page["items"].as_array().expect("items").len(), 2);
    let token = page["metadata"]["continue"].as_str().expect("continue");
    let rest = k
        .get(&format!(
            "/api/v1/namespaces/default/secrets?limit=2&continue={token}"
        ))
        .body;
    assert_eq!(rest["items"].as_array().expect("items").len(), 1);
    assert!(rest["metadata"].get("continue").is_none());
    assert!(
        page["items"][0].get("kind").is_none(),
        "list items carry no kind"
    );
}

#[test]
fn watch_streams_events_bookmarks_timeouts_and_gone() {
    let k = Kube::start(&["--kube-bookmark-ms", "200", "--kube-watch-window", "20"]);
    let list = k.get(PVCS).body;
    let from = list["metadata"]["resourceVersion"]
        .as_str()
        .expect("list rv")
        .to_string();
    k.post(
        "/apis/storage.k8s.io/v1/storageclasses",
        json!({"metadata": {"name": "none"}, "provisioner": "kubernetes.io/no-provisioner"}),
    );
    k.post(PVCS, claim("w", "none"));
    k.patch(
        &format!("{PVCS}/w"),
        "application/merge-patch+json",
        json!({"metadata": {"labels": {"x": "1"}}}),
    );
    k.delete(&format!("{PVCS}/w"));
    let events = k.watch(
        &format!("{PVCS}?watch=true&resourceVersion={from}&timeoutSeconds=5"),
        3,
    );
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["type"].as_str().expect("type"))
        .collect();
    assert_eq!(kinds, ["ADDED", "MODIFIED", "MODIFIED"], "{events:?}");
    assert!(
        events[2]["object"]["metadata"]["deletionTimestamp"]
            .as_str()
            .is_some(),
        "pvc-protection holds it"
    );

    // From "now": the existing objects first, as ADDED; then a bookmark; a timeout ends it.
    k.post(PVCS, claim("present", "none"));
    let events = k.watch(
        &format!("{PVCS}?watch=true&allowWatchBookmarks=true&timeoutSeconds=1"),
        10,
    );
    assert_eq!(events[0]["type"], "ADDED");
    assert!(events.iter().any(|e| e["type"] == "BOOKMARK"
        && e["object"]["metadata"]["resourceVersion"]
            .as_str()
            .is_some()));
    // The label selector turns a change that stops matching into DELETED.
    k.post(
        "/api/v1/namespaces/default/secrets",
        json!({"metadata": {"name": "sel", "labels": {"keep": "yes"}}}),
    );
    let rv_now = rv(&k.get("/api/v1/namespaces/default/secrets/sel").body);
    k.patch(
        "/api/v1/namespaces/default/secrets/sel",
        "application/merge-patch+json",
        json!({"metadata": {"labels": {"keep": "no"}}}),
    );
    let events = k.watch(&format!("/api/v1/namespaces/default/secrets?watch=true&labelSelector=keep%3Dyes&resourceVersion={rv_now}&timeoutSeconds=1"), 1);
    assert_eq!(events[0]["type"], "DELETED");

    // Past the window: 410 Gone, as an ERROR event.
    for i in 0..30 {
        k.post(
            "/api/v1/namespaces/default/secrets",
            json!({"metadata": {"name": format!("churn-{i}")}}),
        );
    }
    let events = k.watch(&format!("{PVCS}?watch=true&resourceVersion={from}"), 1);
    assert_eq!(events[0]["type"], "ERROR");
    assert_eq!(events[0]["object"]["code"], 410);
    assert_eq!(events[0]["object"]["reason"], "Expired");
}

#[test]
fn storage_class_claim_and_hand_made_volume_end_bound() {
    let k = Kube::start(&[]);
    k.post("/apis/storage.k8s.io/v1/storageclasses", json!({"metadata": {"name": "fast"}, "provisioner": "flexdisk/azure-disk", "parameters": {"skuName": "Premium_LRS"}}));
    let c = k.post(PVCS, claim("data", "fast")).body;
    let annotated = k.until(&format!("{PVCS}/data"), |o| {
        o["metadata"]["annotations"]["volume.kubernetes.io/storage-provisioner"]
            == "flexdisk/azure-disk"
    });
    assert_eq!(
        annotated["metadata"]["annotations"]["volume.beta.kubernetes.io/storage-provisioner"],
        "flexdisk/azure-disk"
    );
    let uid = c["metadata"]["uid"].as_str().expect("uid");
    let pv = json!({"metadata": {"name": format!("pvc-{uid}"), "annotations": {"pv.kubernetes.io/provisioned-by": "flexdisk/azure-disk"}},
        "spec": {"accessModes": ["ReadWriteOnce"], "capacity": {"storage": "1Gi"}, "storageClassName": "fast",
                 "persistentVolumeReclaimPolicy": "Delete",
                 "claimRef": {"kind": "PersistentVolumeClaim", "namespace": "default", "name": "data", "uid": uid},
                 "flexVolume": {"driver": "flexdisk/azure-disk", "fsType": "ext4"}}});
    assert_eq!(k.post("/api/v1/persistentvolumes", pv).status, 201);
    let pv_path = format!("/api/v1/persistentvolumes/pvc-{uid}");
    let bound = k.until(&format!("{PVCS}/data"), |o| o["status"]["phase"] == "Bound");
    assert_eq!(bound["spec"]["volumeName"], format!("pvc-{uid}"));
    assert_eq!(bound["status"]["capacity"]["storage"], "1Gi");
    k.until(&pv_path, |o| o["status"]["phase"] == "Bound");

    // A pod using the claim keeps it (pvc-protection) after deletion; then the volume is Released.
    k.post("/api/v1/namespaces/default/pods", json!({"metadata": {"name": "app"}, "spec": {"nodeName": "k8s-agentpool1-31415926-0",
        "containers": [{"name": "c", "image": "busybox"}], "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}]}}));
    k.delete(&format!("{PVCS}/data"));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        k.get(&format!("{PVCS}/data")).status,
        200,
        "in use: protected"
    );
    k.delete("/api/v1/namespaces/default/pods/app");
    let deadline = Instant::now() + Duration::from_secs(10);
    while k.get(&format!("{PVCS}/data")).status != 404 {
        assert!(Instant::now() < deadline, "the claim never went");
        std::thread::sleep(Duration::from_millis(20));
    }
    k.until(&pv_path, |o| o["status"]["phase"] == "Released");
    // A released volume can be deleted once not bound (pv-protection lifted).
    k.delete(&pv_path);
    let deadline = Instant::now() + Duration::from_secs(10);
    while k.get(&pv_path).status != 404 {
        assert!(Instant::now() < deadline, "the volume never went");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn wait_for_first_consumer_waits_for_the_scheduler() {
    let k = Kube::start(&[]);
    k.post("/apis/storage.k8s.io/v1/storageclasses", json!({"metadata": {"name": "late"}, "provisioner": "flexdisk/azure-disk", "volumeBindingMode": "WaitForFirstConsumer"}));
    k.post(PVCS, claim("late", "late"));
    std::thread::sleep(Duration::from_millis(300));
    let waiting = k.get(&format!("{PVCS}/late")).body;
    assert!(
        waiting["metadata"]["annotations"]["volume.kubernetes.io/storage-provisioner"].is_null(),
        "{waiting}"
    );
    // What kube-scheduler does when a pod using the claim is placed.
    k.patch(&format!("{PVCS}/late"), "application/merge-patch+json",
        json!({"metadata": {"annotations": {"volume.kubernetes.io/selected-node": "aks-nodepool1-31415926-vmss000001"}}}));
    k.until(&format!("{PVCS}/late"), |o| {
        o["metadata"]["annotations"]["volume.kubernetes.io/storage-provisioner"]
            == "flexdisk/azure-disk"
    });
}

#[test]
fn fault_hooks_answer_errors_stall_and_drop_watches() {
    let k = Kube::start(&[]);
    let control = |method: &str, path: &str, body: Option<Value>| {
        k.call(
            method,
            &format!("/_sim{path}"),
            "application/json",
            body.as_ref(),
        )
    };
    let r = control(
        "POST",
        "/faults",
        Some(
            json!({"operation": "list secrets", "times": 1, "action": {"kind": "status", "status": 429, "retryAfter": 2}}),
        ),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let throttled = k.get("/api/v1/namespaces/default/secrets");
    assert_eq!(
        (throttled.status, throttled.body["reason"].as_str()),
        (429, Some("TooManyRequests"))
    );
    assert_eq!(
        k.get("/api/v1/namespaces/default/secrets").status,
        200,
        "once only"
    );
    control(
        "POST",
        "/faults",
        Some(
            json!({"method": "POST", "pathContains": "/secrets", "times": 1, "action": {"kind": "status", "status": 500}}),
        ),
    );
    let failed = k.post(
        "/api/v1/namespaces/default/secrets",
        json!({"metadata": {"name": "s"}}),
    );
    assert_eq!(
        (failed.status, failed.body["reason"].as_str()),
        (500, Some("InternalError"))
    );
    assert_eq!(
        k.get("/api/v1/namespaces/default/secrets/s").status,
        404,
        "nothing was done"
    );
    assert_eq!(
        control(
            "POST",
            "/faults",
            Some(json!({"action": {"kind": "lroFail"}}))
        )
        .status,
        400
    );
    control(
        "POST",
        "/faults",
        Some(
            json!({"operation": "get secrets", "times": 1, "action": {"kind": "latency", "ms": 300}}),
        ),
    );
    let t = Instant::now();
    k.get("/api/v1/namespaces/default/secrets/none");
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "the stall happened"
    );

    // Dropping watches ends open streams.
    let url = format!("{}/api/v1/namespaces/default/secrets?watch=true", k.url);
    let http = k.http.clone();
    let reader = std::thread::spawn(move || {
        let rsp = http.get(url).send().expect("watch");
        BufReader::new(rsp).lines().count()
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(control("DELETE", "/watches", None).status, 200);
    let lines = reader.join().expect("reader ends");
    assert_eq!(lines, 0, "no objects, no events: the stream just ended");
}
