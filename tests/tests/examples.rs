//! The examples as an admin would apply them: each parses into its Kubernetes type with no unknown
//! field and uses only parameters the provisioner accepts; on the simulated cluster with the real
//! provisioner every claim ends Bound to a disk of its class (the StatefulSet's claims in their
//! pods' zones, the clone copied from its source, the static PV on the pre-existing disk), and
//! deleting them leaves only the disks that were meant to stay.

use flexdisk_azure::naming::{parse_resource_id, ResourceKind};
use flexdisk_azure::params::DiskParams;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod, Service};
use k8s_openapi::api::storage::v1::StorageClass;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use system_tests::{repo, strictly_typed, yaml_docs, yaml_files, Cluster};

const PROVISIONER: &str = "flexdisk/azure-disk";

fn examples() -> Vec<(String, Value)> {
    yaml_files(&repo().join("examples"))
        .iter()
        .flat_map(|f| {
            let name = f
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            yaml_docs(f)
                .expect("parses")
                .into_iter()
                .map(move |d| (name.clone(), d))
        })
        .collect()
}

fn of_kind<'a>(all: &'a [(String, Value)], kind: &str) -> Vec<&'a Value> {
    all.iter()
        .filter(|(_, d)| d["kind"] == kind)
        .map(|(_, d)| d)
        .collect()
}

#[test]
fn every_example_is_well_formed_and_uses_only_accepted_parameters() {
    let all = examples();
    let mut classes = BTreeMap::new();
    for (file, d) in &all {
        match d["kind"].as_str().unwrap_or_default() {
            "StorageClass" => {
                let sc = strictly_typed::<StorageClass>(d);
                assert_eq!(sc.provisioner, PROVISIONER, "{file}");
                let params = sc.parameters.clone().unwrap_or_default();
                DiskParams::parse(params.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                    .unwrap_or_else(|e| panic!("{file}: {e}"));
                classes.insert(sc.metadata.name.clone().unwrap_or_default(), sc);
            }
            "PersistentVolumeClaim" => drop(strictly_typed::<PersistentVolumeClaim>(d)),
            "PersistentVolume" => {
                let pv = strictly_typed::<PersistentVolume>(d);
                let flex = pv.spec.and_then(|s| s.flex_volume).expect("flexVolume");
                assert_eq!(flex.driver, PROVISIONER, "{file}");
                let uri = flex.options.unwrap_or_default()["diskURI"]
                    .replace("<subscription-id>", "9b8c7d6e-1a2b-4c3d-9e8f-7a6b5c4d3e2f")
                    .replace("<resource-group>", "rg")
                    .replace("<disk-name>", "disk");
                parse_resource_id(&uri, ResourceKind::Disk)
                    .unwrap_or_else(|e| panic!("{file}: diskURI {e}"));
            }
            "VolumeAttributesClass" => {
                assert_eq!(d["driverName"], PROVISIONER, "{file}");
                let vac = flexdisk_provisioner::decide::AttributesClass {
                    name: d["metadata"]["name"].as_str().unwrap_or_default().into(),
                    driver: PROVISIONER.into(),
                    parameters: serde_json::from_value(d["parameters"].clone()).expect("strings"),
                };
                flexdisk_provisioner::decide::performance_of(&vac, PROVISIONER)
                    .unwrap_or_else(|e| panic!("{file}: {e}"));
            }
            "Pod" => drop(strictly_typed::<Pod>(d)),
            "Service" => drop(strictly_typed::<Service>(d)),
            "StatefulSet" => drop(strictly_typed::<StatefulSet>(d)),
            other => panic!("{file}: unexpected kind {other}"),
        }
    }
    // One default class; the kinds the README promises.
    let defaults: Vec<&String> = classes
        .iter()
        .filter(|(_, c)| {
            c.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("storageclass.kubernetes.io/is-default-class"))
                .is_some_and(|v| v == "true")
        })
        .map(|(n, _)| n)
        .collect();
    assert_eq!(defaults, ["flexdisk-standardssd"]);
    let sku = |c: &StorageClass| {
        c.parameters
            .clone()
            .unwrap_or_default()
            .get("skuName")
            .cloned()
            .unwrap_or_default()
    };
    let skus: Vec<String> = classes.values().map(sku).collect();
    for wanted in [
        "StandardSSD_LRS",
        "Premium_LRS",
        "PremiumV2_LRS",
        "StandardSSD_ZRS",
    ] {
        assert!(skus.iter().any(|s| s == wanted), "no {wanted} class");
    }
    assert!(classes
        .values()
        .any(|c| c.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer")));
    assert!(classes
        .values()
        .any(|c| c.reclaim_policy.as_deref() == Some("Retain")));
    // Every claim names an example class (or none: the static PV's).
    let mut claims: Vec<Value> = of_kind(&all, "PersistentVolumeClaim")
        .into_iter()
        .cloned()
        .collect();
    for s in of_kind(&all, "StatefulSet") {
        claims.extend(
            s["spec"]["volumeClaimTemplates"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
        );
    }
    for c in claims {
        let class = c["spec"]["storageClassName"].as_str().unwrap_or_default();
        assert!(class.is_empty() || classes.contains_key(class), "{class}");
    }
}

fn disk_of<'a>(disks: &'a serde_json::Map<String, Value>, pv: &Value) -> &'a Value {
    let uri = pv["spec"]["flexVolume"]["options"]["diskURI"]
        .as_str()
        .unwrap_or_default();
    disks
        .values()
        .find(|d| {
            d["id"]
                .as_str()
                .is_some_and(|id| id.eq_ignore_ascii_case(uri))
        })
        .unwrap_or_else(|| panic!("no disk {uri}"))
}

#[test]
fn the_examples_work_on_the_simulated_cluster() {
    let mut cluster = Cluster::start(&["--vm-op-ms", "100", "--disk-op-ms", "50"]);
    let args: Vec<String> = vec![
        "--kubeconfig".into(),
        cluster.sim.field("kubeconfig"),
        "--cloud-config".into(),
        cluster.sim.field("azureJson"),
        "--metrics-addr".into(),
        "127.0.0.1:0".into(),
    ];
    cluster.start_provisioner(&args, &[]);
    let all = examples();
    let kube = &cluster.kube;
    let mut class_sku = BTreeMap::new();
    for sc in of_kind(&all, "StorageClass") {
        kube.create(sc).expect("class");
        class_sku.insert(
            sc["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            sc["parameters"]["skuName"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
    }

    // The claim and its pod; then its clone.
    for (file, d) in &all {
        if file == "claim-and-pod.yaml" {
            kube.create(d).expect("claim and pod");
        }
    }
    let data = cluster.bound_pv("default", "data");
    for (file, d) in &all {
        if file == "clone.yaml" {
            kube.create(d).expect("clone");
        }
    }
    let copy = cluster.bound_pv("default", "data-copy");

    // The StatefulSet's claims, as its controller names them, each scheduled (the scheduler's
    // annotation) to a zonal node in turn.
    let zonal: Vec<(String, String)> = cluster.sim.ready["nodes"]
        .as_object()
        .map(|n| {
            n.iter()
                .filter_map(|(k, v)| Some((k.clone(), v["zone"].as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    assert!(zonal.len() >= 2, "the default world has zonal nodes");
    let sts = of_kind(&all, "StatefulSet")[0];
    let replicas = sts["spec"]["replicas"].as_u64().expect("replicas");
    let mut sts_claims = Vec::new();
    for template in sts["spec"]["volumeClaimTemplates"]
        .as_array()
        .expect("templates")
    {
        for i in 0..replicas {
            let name = format!(
                "{}-{}-{i}",
                template["metadata"]["name"].as_str().unwrap_or_default(),
                sts["metadata"]["name"].as_str().unwrap_or_default()
            );
            let (node, zone) = &zonal[i as usize % zonal.len()];
            let mut claim = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": name, "namespace": "default",
                    "annotations": {"volume.kubernetes.io/selected-node": node}},
                "spec": template["spec"].clone()});
            claim["metadata"]["labels"] = sts["spec"]["selector"]["matchLabels"].clone();
            kube.create(&claim).expect("sts claim");
            sts_claims.push((name, zone.clone()));
        }
    }

    // The claim with a VolumeAttributesClass (PremiumV2: scheduled like the others).
    for (file, d) in &all {
        if file == "volume-attributes-classes.yaml" {
            let mut d = d.clone();
            if d["kind"] == "PersistentVolumeClaim" {
                d["metadata"]["annotations"] =
                    json!({"volume.kubernetes.io/selected-node": zonal[0].0});
            }
            kube.create(&d).expect("attributes classes and their claim");
        }
    }

    // A claim for each class nothing above used (PremiumV2 is zonal: scheduled like the others).
    let used: Vec<String> = vec![
        "flexdisk-standardssd".into(),
        "flexdisk-premium-zonal".into(),
    ];
    let mut per_class = Vec::new();
    for (class, _) in class_sku.iter().filter(|(c, _)| !used.contains(c)) {
        let name = format!("claim-{class}");
        // Premium SSD v2's IOPS grow with size (3,000 + 500 per GiB above 6): the class's 5,000
        // need 10 GiB.
        let size = if class.contains("premiumv2") {
            "10Gi"
        } else {
            "8Gi"
        };
        let mut claim = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": class,
                     "resources": {"requests": {"storage": size}}}});
        if class.contains("premiumv2") {
            claim["metadata"]["annotations"] =
                json!({"volume.kubernetes.io/selected-node": zonal[0].0});
        }
        kube.create(&claim).expect("claim");
        per_class.push((name, class.clone()));
    }

    // The static PV, on a disk made beforehand as an admin would have.
    let existing = cluster.create_disk("legacy-app-data", "StandardSSD_LRS", 32);
    for (file, d) in &all {
        if file == "static-pv.yaml" {
            let text = d
                .to_string()
                .replace(
                    "/subscriptions/<subscription-id>/resourceGroups/<resource-group>/providers/Microsoft.Compute/disks/<disk-name>",
                    &existing,
                );
            kube.create(&serde_json::from_str(&text).expect("json"))
                .expect("static PV and claim");
        }
    }

    // Everything Bound, each to a disk of its class.
    let disks = {
        let mut pvs = Vec::new();
        for (name, class) in per_class.iter().cloned().chain(
            sts_claims
                .iter()
                .map(|(n, _)| (n.clone(), "flexdisk-premium-zonal".into())),
        ) {
            pvs.push((name.clone(), class, cluster.bound_pv("default", &name)));
        }
        let disks = cluster.disks();
        for (name, class, pv) in &pvs {
            let disk = disk_of(&disks, pv);
            assert_eq!(disk["sku"], class_sku[class].as_str(), "{name}");
        }
        for (name, zone) in &sts_claims {
            let pv = pvs
                .iter()
                .find(|(n, _, _)| n == name)
                .map(|(_, _, p)| p)
                .expect("pv");
            let disk = disk_of(&disks, pv);
            assert_eq!(disk["zones"], json!([zone]), "{name} in its pod's zone");
            assert_eq!(
                pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"]
                    [0]["values"],
                json!([format!("{}-{zone}", cluster.sim.field("location"))])
            );
        }
        let v2 = pvs
            .iter()
            .find(|(_, c, _)| c.contains("premiumv2"))
            .map(|(_, _, p)| disk_of(&disks, p))
            .expect("v2");
        assert_eq!(
            (v2["iops"].as_i64(), v2["mbps"].as_i64()),
            (Some(5000), Some(200))
        );
        // The attributes class's performance, not the StorageClass's; then switched live.
        let tuned_pv = cluster.bound_pv("default", "tuned-data");
        let tuned = disk_of(&disks, &tuned_pv);
        assert_eq!(
            (tuned["iops"].as_i64(), tuned["mbps"].as_i64()),
            (Some(6000), Some(300))
        );
        kube.merge_patch(
            "/api/v1/namespaces/default/persistentvolumeclaims/tuned-data",
            &json!({"spec": {"volumeAttributesClassName": "flexdisk-v2-gold"}}),
        )
        .expect("switch");
        let deadline = Instant::now() + Duration::from_secs(30);
        while kube
            .get("/api/v1/namespaces/default/persistentvolumeclaims/tuned-data")
            .expect("claim")
            .is_none_or(|c| c["status"]["currentVolumeAttributesClassName"] != "flexdisk-v2-gold")
        {
            assert!(
                Instant::now() < deadline,
                "never switched:\n{}",
                cluster.provisioner_log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let now = cluster.disks();
        let tuned = disk_of(&now, &tuned_pv);
        assert_eq!(
            (tuned["iops"].as_i64(), tuned["mbps"].as_i64()),
            (Some(8000), Some(400))
        );
        assert_eq!(disk_of(&disks, &data)["sku"], "StandardSSD_LRS");
        let copied = disk_of(&disks, &copy);
        assert!(
            copied["sourceResourceId"]
                .as_str()
                .is_some_and(|s| s.eq_ignore_ascii_case(
                    data["spec"]["flexVolume"]["options"]["diskURI"]
                        .as_str()
                        .unwrap_or_default()
                )),
            "the clone is a copy of data's disk: {copied}"
        );
        disks
    };
    let existing_pv = cluster.bound_pv("default", "existing-data");
    assert_eq!(existing_pv["metadata"]["name"], "existing-disk");
    assert!(disks.values().any(|d| d["id"] == existing.as_str()));

    // Delete every claim (and the pod): what remains is the Retain class's disk and the
    // pre-existing one.
    kube.delete("/api/v1/namespaces/default/pods/writer")
        .expect("pod");
    for c in kube
        .list("/api/v1/namespaces/default/persistentvolumeclaims")
        .expect("claims")
    {
        let name = c["metadata"]["name"].as_str().unwrap_or_default();
        kube.delete(&format!(
            "/api/v1/namespaces/default/persistentvolumeclaims/{name}"
        ))
        .expect("delete");
    }
    let retained = per_class
        .iter()
        .find(|(_, c)| c.contains("retain"))
        .map(|(n, _)| n.clone())
        .expect("retain claim");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left: Vec<String> = cluster
            .disks()
            .values()
            .map(|d| d["name"].as_str().unwrap_or_default().to_string())
            .collect();
        let pvs = kube.list("/api/v1/persistentvolumes").expect("pvs");
        let kept: Vec<&Value> = pvs
            .iter()
            .filter(|p| p["status"]["phase"] == "Released")
            .collect();
        if left.len() == 2 && pvs.len() == 2 && kept.len() == 2 {
            assert!(left.contains(&"legacy-app-data".to_string()), "{left:?}");
            eprintln!("left after deleting every claim: {left:?}");
            assert!(
                pvs.iter()
                    .any(|p| p["spec"]["claimRef"]["name"] == retained.as_str()),
                "the Retain class's PV stays, Released"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left: disks {left:?}, PVs {}\n{}",
            pvs.len(),
            cluster.provisioner_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
