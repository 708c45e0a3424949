//! The install manifests against the binaries they deploy: every document parses into its
//! Kubernetes type with no unknown field; the provisioner Deployment's arguments, environment,
//! ports and probes are the binary's own, and running the binary exactly as the Deployment says
//! serves its probes and makes only the API requests the RBAC rules grant — each rule used; the
//! DaemonSet's command installs the driver, configured as its environment says; the Secret overlay
//! patches what it means to; the images' paths are the manifests' (tests/tests/images.rs).

use clap::{CommandFactory, Parser};
use flexdisk_provisioner::cli::Cli;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Container, Namespace, PodSpec, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use system_tests::{bin, install_manifests, repo, strictly_typed, yaml_docs, Cluster};

const NAMESPACE: &str = "flexdisk-system";

fn kind_and_name(d: &Value) -> (String, String) {
    (
        d["kind"].as_str().unwrap_or_default().to_string(),
        d["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

/// Every document of install/, by kind and name.
fn install_docs() -> BTreeMap<(String, String), Value> {
    let mut out = BTreeMap::new();
    for f in install_manifests() {
        for d in yaml_docs(&f).expect("parses") {
            let key = kind_and_name(&d);
            assert!(out.insert(key.clone(), d).is_none(), "{key:?} twice");
        }
    }
    out
}

fn doc(kind: &str, name: &str) -> Value {
    install_docs()
        .remove(&(kind.to_string(), name.to_string()))
        .unwrap_or_else(|| panic!("install/ has no {kind} {name}"))
}

fn pod_spec(workload: &Value) -> PodSpec {
    strictly_typed::<PodSpec>(&workload["spec"]["template"]["spec"])
}

fn only_container(spec: &PodSpec) -> Container {
    assert_eq!(spec.containers.len(), 1);
    spec.containers[0].clone()
}

#[test]
fn every_manifest_is_a_well_formed_kubernetes_object() {
    let docs = install_docs();
    for ((kind, name), d) in &docs {
        match kind.as_str() {
            "Namespace" => drop(strictly_typed::<Namespace>(d)),
            "ServiceAccount" => drop(strictly_typed::<ServiceAccount>(d)),
            "ClusterRole" => drop(strictly_typed::<ClusterRole>(d)),
            "ClusterRoleBinding" => drop(strictly_typed::<ClusterRoleBinding>(d)),
            "Role" => drop(strictly_typed::<Role>(d)),
            "RoleBinding" => drop(strictly_typed::<RoleBinding>(d)),
            "Deployment" => drop(strictly_typed::<Deployment>(d)),
            "DaemonSet" => drop(strictly_typed::<DaemonSet>(d)),
            "Service" => drop(strictly_typed::<Service>(d)),
            other => panic!("unexpected kind {other} ({name})"),
        }
        let namespaced = !matches!(
            kind.as_str(),
            "Namespace" | "ClusterRole" | "ClusterRoleBinding"
        );
        assert_eq!(
            d["metadata"]["namespace"].as_str(),
            namespaced.then_some(NAMESPACE),
            "{kind} {name}"
        );
        assert_eq!(
            d["metadata"]["labels"]["app.kubernetes.io/part-of"], "flexdisk",
            "{kind} {name}"
        );
    }
    // The kustomization lists every manifest file, and nothing else.
    let k = &yaml_docs(&repo().join("install/base/kustomization.yaml")).expect("parses")[0];
    let listed: BTreeSet<String> = k["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|r| r.as_str().unwrap_or_default().to_string())
        .collect();
    let present: BTreeSet<String> = install_manifests()
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().to_string()))
        .collect();
    assert_eq!(listed, present);
    // Bindings name the ServiceAccount and roles that exist.
    for (kind, name) in [
        ("ClusterRoleBinding", "flexdisk-provisioner"),
        ("RoleBinding", "flexdisk-provisioner-leader-election"),
    ] {
        let b = &docs[&(kind.to_string(), name.to_string())];
        let role_kind = b["roleRef"]["kind"].as_str().unwrap_or_default();
        let role = b["roleRef"]["name"].as_str().unwrap_or_default();
        assert!(docs.contains_key(&(role_kind.to_string(), role.to_string())));
        assert_eq!(
            b["subjects"][0],
            json!({"kind": "ServiceAccount", "name": "flexdisk-provisioner", "namespace": NAMESPACE})
        );
    }
}

#[test]
fn the_provisioner_deployment_speaks_the_binary_s_language() {
    let d = doc("Deployment", "flexdisk-provisioner");
    let spec = pod_spec(&d);
    let c = only_container(&spec);
    let args = c.args.clone().unwrap_or_default();
    let cli = Cli::try_parse_from(std::iter::once("flexdisk-provisioner".to_string()).chain(args))
        .unwrap_or_else(|e| panic!("the Deployment's args do not parse: {e}"));
    assert!(cli.leader_elect, "two replicas need leader election");
    assert_eq!(d["spec"]["replicas"], 2);
    // Every variable set is one the binary reads.
    let known: BTreeSet<String> = Cli::command()
        .get_arguments()
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().to_string())
        .collect();
    for e in c.env.clone().unwrap_or_default() {
        assert!(
            known.contains(&e.name),
            "{} is not read by the provisioner",
            e.name
        );
    }
    let field = |var: &str| {
        c.env
            .iter()
            .flatten()
            .find(|e| e.name == var)
            .and_then(|e| e.value_from.clone())
            .and_then(|v| v.field_ref)
            .map(|f| f.field_path)
    };
    assert_eq!(field("POD_NAME").as_deref(), Some("metadata.name"));
    assert_eq!(
        field("LEASE_NAMESPACE").as_deref(),
        Some("metadata.namespace")
    );
    // Metrics port: the flag, the container port, the probes, the Service, the scrape annotation.
    let port: i32 = cli
        .metrics_addr
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .expect("a port");
    let ports = c.ports.clone().unwrap_or_default();
    assert_eq!(
        ports
            .iter()
            .map(|p| (p.name.clone(), p.container_port))
            .collect::<Vec<_>>(),
        [(Some("metrics".to_string()), port)]
    );
    let probe_paths: Vec<(String, Value)> = [&c.liveness_probe, &c.readiness_probe]
        .into_iter()
        .map(|p| {
            let g = p.clone().and_then(|p| p.http_get).expect("http probe");
            (
                g.path.unwrap_or_default(),
                serde_json::to_value(g.port).unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        probe_paths,
        [
            ("/healthz".to_string(), json!("metrics")),
            ("/readyz".to_string(), json!("metrics"))
        ]
    );
    let svc = doc("Service", "flexdisk-provisioner-metrics");
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], "metrics");
    assert_eq!(
        svc["spec"]["selector"],
        d["spec"]["selector"]["matchLabels"]
    );
    assert_eq!(
        d["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"],
        port.to_string()
    );
    // Hardened: non-root, read-only root, no privilege escalation, no capabilities; requests set.
    let psc = spec.security_context.clone().expect("pod security context");
    assert_eq!(psc.run_as_non_root, Some(true));
    let sc = c
        .security_context
        .clone()
        .expect("container security context");
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(
        sc.capabilities.and_then(|c| c.drop),
        Some(vec!["ALL".to_string()])
    );
    let requests = c
        .resources
        .clone()
        .and_then(|r| r.requests)
        .expect("requests");
    assert!(requests.contains_key("cpu") && requests.contains_key("memory"));
    // The cloud config path is inside the Secret's mount.
    let mount = c
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| cli.cloud_config.starts_with(&m.mount_path))
        .expect("--cloud-config lies in a mounted volume");
    let volume = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)
        .expect("volume");
    assert_eq!(
        volume.secret.clone().and_then(|s| s.secret_name).as_deref(),
        Some("flexdisk-cloud-config")
    );
    assert_eq!(
        spec.service_account_name.as_deref(),
        Some("flexdisk-provisioner")
    );
    drop(doc("ServiceAccount", "flexdisk-provisioner"));
}

/// A container's path mapped onto the test's directories by its volume mounts (as the kubelet
/// would mount them), so the real binary can run with the manifest's own arguments.
fn host_path(container_path: &str, mounts: &[(String, PathBuf)]) -> String {
    for (mount, host) in mounts {
        match Path::new(container_path).strip_prefix(mount) {
            Ok(rest) if rest.as_os_str().is_empty() => return host.to_string_lossy().to_string(),
            Ok(rest) => return host.join(rest).to_string_lossy().to_string(),
            Err(_) => {}
        }
    }
    container_path.to_string()
}

fn map_args(args: &[String], mounts: &[(String, PathBuf)]) -> Vec<String> {
    args.iter()
        .map(|a| match a.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") && value.starts_with('/') => {
                format!("{flag}={}", host_path(value, mounts))
            }
            _ if a.starts_with('/') => host_path(a, mounts),
            _ => a.clone(),
        })
        .collect()
}

fn rules_of(kind: &str, name: &str) -> Vec<PolicyRule> {
    let d = doc(kind, name);
    d["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .map(strictly_typed::<PolicyRule>)
        .collect()
}

fn grants(rules: &[PolicyRule], group: &str, resource: &str, verb: &str) -> bool {
    rules.iter().any(|r| {
        r.api_groups.iter().flatten().any(|g| g == group)
            && r.resources.iter().flatten().any(|x| x == resource)
            && r.verbs.iter().any(|v| v == verb)
    })
}

/// The README's table of what the manifests grant is what security reviewers read: it says
/// exactly what `install/base/rbac.yaml` grants, resource by resource and verb by verb.
#[test]
fn the_readme_says_exactly_what_the_rbac_rules_grant() {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README");
    let row = readme
        .lines()
        .find(|l| l.starts_with("| ClusterRole `flexdisk-provisioner` |"))
        .expect("the README's row for the ClusterRole");
    let text = row.split('|').nth(2).expect("what it grants").trim();
    let (cluster_text, role_text) = text
        .split_once("Role in `flexdisk-system`:")
        .expect("the Role's part");
    // README names → (API group, resource).
    let names: BTreeMap<&str, (&str, &str)> = [
        ("claims", ("", "persistentvolumeclaims")),
        ("claims/status", ("", "persistentvolumeclaims/status")),
        ("PVs", ("", "persistentvolumes")),
        ("StorageClasses", ("storage.k8s.io", "storageclasses")),
        (
            "VolumeAttributesClasses",
            ("storage.k8s.io", "volumeattributesclasses"),
        ),
        ("Pods", ("", "pods")),
        ("Nodes", ("", "nodes")),
        ("Events", ("events.k8s.io", "events")),
        ("Leases", ("coordination.k8s.io", "leases")),
    ]
    .into_iter()
    .collect();
    let said = |text: &str| -> BTreeSet<(String, String, String)> {
        let text = text.split(". Exactly").next().unwrap_or(text);
        text.split(';')
            .map(|part| part.trim().trim_end_matches('.'))
            .filter(|part| !part.is_empty())
            .flat_map(|part| {
                let (name, verbs) = part.split_once(':').unwrap_or_else(|| panic!("{part:?}"));
                let (group, resource) = names.get(name.trim()).unwrap_or_else(|| {
                    panic!("the README names {name:?}, which this test does not know")
                });
                verbs
                    .split(',')
                    .map(|v| {
                        (
                            group.to_string(),
                            resource.to_string(),
                            v.trim().to_string(),
                        )
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let granted = |rules: &[PolicyRule]| -> BTreeSet<(String, String, String)> {
        let mut out = BTreeSet::new();
        for r in rules {
            for g in r.api_groups.iter().flatten() {
                for res in r.resources.iter().flatten() {
                    for v in &r.verbs {
                        out.insert((g.clone(), res.clone(), v.clone()));
                    }
                }
            }
        }
        out
    };
    assert_eq!(
        said(cluster_text),
        granted(&rules_of("ClusterRole", "flexdisk-provisioner")),
        "the README's ClusterRole row and install/base/rbac.yaml"
    );
    assert_eq!(
        said(role_text),
        granted(&rules_of("Role", "flexdisk-provisioner-leader-election")),
        "the README's Role and install/base/rbac.yaml"
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[test]
fn the_provisioner_run_as_deployed_needs_exactly_its_rbac_rules() {
    let mut cluster = Cluster::start(&["--vm-op-ms", "100", "--disk-op-ms", "50"]);
    let kube = &cluster.kube;
    let ns = &yaml_docs(&repo().join("install/base/namespace.yaml")).expect("parses")[0];
    kube.create(ns).expect("namespace");

    // The Deployment's container, run on this machine: its Secret volume is a directory holding the
    // simulators' cloud config; the downward API gives its pod name and namespace.
    let d = doc("Deployment", "flexdisk-provisioner");
    let c = only_container(&pod_spec(&d));
    let secret_dir = cluster.tmp.path().join("secret");
    std::fs::create_dir_all(&secret_dir).expect("dir");
    std::fs::copy(
        cluster.sim.field("azureJson"),
        secret_dir.join("azure.json"),
    )
    .expect("copy");
    let mounts: Vec<(String, PathBuf)> = c
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| (m.mount_path.clone(), secret_dir.clone()))
        .collect();
    let port = free_port();
    let args: Vec<String> = map_args(&c.args.clone().unwrap_or_default(), &mounts)
        .into_iter()
        .map(|a| {
            if a.starts_with("--metrics-addr=") {
                format!("--metrics-addr=127.0.0.1:{port}")
            } else {
                a
            }
        })
        .collect();
    let mut env = vec![
        ("KUBECONFIG".to_string(), cluster.sim.field("kubeconfig")),
        (
            "POD_NAME".to_string(),
            "flexdisk-provisioner-7d9f8-abcde".to_string(),
        ),
        ("LEASE_NAMESPACE".to_string(), NAMESPACE.to_string()),
    ];
    for e in c.env.clone().unwrap_or_default() {
        if let Some(v) = e.value {
            env.push((e.name, v));
        }
    }
    kube.call("DELETE", "/_sim/access", None).expect("reset");
    cluster.start_provisioner(&args, &env);

    // The probes answer where the Deployment looks.
    let http = reqwest::blocking::Client::new();
    for probe in [&c.liveness_probe, &c.readiness_probe] {
        let path = probe
            .clone()
            .and_then(|p| p.http_get)
            .and_then(|g| g.path)
            .expect("path");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = http
                .get(format!("http://127.0.0.1:{port}{path}"))
                .send()
                .is_ok_and(|r| r.status().is_success());
            if ok {
                break;
            }
            assert!(Instant::now() < deadline, "{path} never answered 200");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    // Everything the provisioner does: provision (Immediate, WaitForFirstConsumer with the node's
    // zone, a clone), refuse (an event), refuse to delete an attached disk (repeated events), delete.
    let kube = &cluster.kube;
    for f in [
        "storageclass-standardssd.yaml",
        "storageclass-wait-for-first-consumer.yaml",
    ] {
        for d in yaml_docs(&repo().join("examples").join(f)).expect("parses") {
            kube.create(&d).expect("class");
        }
    }
    let claim = |name: &str, class: &str, extra: Value| {
        let mut c = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": class,
                     "resources": {"requests": {"storage": "4Gi"}}}});
        if let (Some(m), Some(e)) = (c["spec"].as_object_mut(), extra.as_object()) {
            m.extend(e.clone());
        }
        kube.create(&c).expect("claim");
    };
    claim("plain", "flexdisk-standardssd", json!({}));
    let plain_pv = cluster.bound_pv("default", "plain");
    claim(
        "copy",
        "flexdisk-standardssd",
        json!({"dataSource": {"kind": "PersistentVolumeClaim", "name": "plain"}}),
    );
    cluster.bound_pv("default", "copy");
    // Grown: the provisioner resizes its volumes (the claim's status, the PV's capacity).
    let grown = plain_pv["spec"]["capacity"]["storage"]
        .as_str()
        .and_then(flexdisk_sim::kube::quantity::parse)
        .expect("capacity")
        + (1 << 30);
    kube.merge_patch(
        "/api/v1/namespaces/default/persistentvolumeclaims/plain",
        &json!({"spec": {"resources": {"requests": {"storage": grown.to_string()}}}}),
    )
    .expect("grow");
    let deadline = Instant::now() + Duration::from_secs(30);
    while kube
        .get("/api/v1/namespaces/default/persistentvolumeclaims/plain")
        .expect("claim")
        .is_none_or(|c| c["status"]["allocatedResourceStatuses"]["storage"] != "NodeResizePending")
    {
        assert!(
            Instant::now() < deadline,
            "the claim never grew:\n{}",
            cluster.provisioner_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A WaitForFirstConsumer class naming zones with the CSI driver's label, on nodes without it:
    // the provisioner looks whether any node carries it, and says what to use instead.
    kube.create(
        &json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": "csi-zones"}, "provisioner": "flexdisk/azure-disk",
        "volumeBindingMode": "WaitForFirstConsumer",
        "allowedTopologies": [{"matchLabelExpressions": [
            {"key": "topology.disk.csi.azure.com/zone", "values": ["westus2-1"]}]}]}),
    )
    .expect("class");
    claim("csi-zoned", "csi-zones", json!({}));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !kube
        .list("/apis/events.k8s.io/v1/namespaces/default/events")
        .expect("events")
        .iter()
        .any(|e| e["regarding"]["name"] == "csi-zoned" && e["reason"] == "ProvisioningFailed")
    {
        assert!(
            Instant::now() < deadline,
            "no event for a class no node can meet:\n{}",
            cluster.provisioner_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let zonal_node = cluster.nodes(true)[0].clone();
    claim("zonal", "flexdisk-premium-zonal", json!({}));
    kube.merge_patch(
        "/api/v1/namespaces/default/persistentvolumeclaims/zonal",
        &json!({"metadata": {"annotations": {"volume.kubernetes.io/selected-node": zonal_node}}}),
    )
    .expect("scheduled");
    cluster.bound_pv("default", "zonal");
    // A claim naming a VolumeAttributesClass: the class read, the claim bound to its volume by
    // the provisioner and the class made current in its status.
    kube.create(
        &json!({"apiVersion": "storage.k8s.io/v1", "kind": "VolumeAttributesClass",
        "metadata": {"name": "fast-v2"}, "driverName": "flexdisk/azure-disk",
        "parameters": {"diskMBpsReadWrite": "150"}}),
    )
    .expect("attributes class");
    kube.create(
        &json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": "v2"}, "provisioner": "flexdisk/azure-disk",
        "volumeBindingMode": "WaitForFirstConsumer", "parameters": {"skuName": "PremiumV2_LRS"}}),
    )
    .expect("class");
    claim(
        "tuned",
        "v2",
        json!({"volumeAttributesClassName": "fast-v2"}),
    );
    kube.merge_patch(
        "/api/v1/namespaces/default/persistentvolumeclaims/tuned",
        &json!({"metadata": {"annotations": {"volume.kubernetes.io/selected-node": zonal_node}}}),
    )
    .expect("scheduled");
    cluster.bound_pv("default", "tuned");
    let deadline = Instant::now() + Duration::from_secs(30);
    while kube
        .get("/api/v1/namespaces/default/persistentvolumeclaims/tuned")
        .expect("claim")
        .is_none_or(|c| c["status"]["currentVolumeAttributesClassName"] != "fast-v2")
    {
        assert!(
            Instant::now() < deadline,
            "the class never became current:\n{}",
            cluster.provisioner_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    claim(
        "block",
        "flexdisk-standardssd",
        json!({"volumeMode": "Block"}),
    );

    let controller = cluster.hosts().controller();
    let regional_node = cluster.nodes(false)[0].clone();
    controller
        .attach(&plain_pv, &regional_node)
        .expect("attach");
    for name in ["plain", "copy", "zonal", "tuned", "block"] {
        kube.delete(&format!(
            "/api/v1/namespaces/default/persistentvolumeclaims/{name}"
        ))
        .expect("delete");
    }
    // Refused while attached, again and again (an event series), until detached.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cluster
        .kube
        .call("GET", "/_sim/access", None)
        .expect("access")
        .1
        .as_array()
        .into_iter()
        .flatten()
        .any(|a| a["verb"] == "patch" && a["resource"] == "events")
    {
        assert!(
            Instant::now() < deadline,
            "no repeated VolumeFailedDelete event:\n{}",
            cluster.provisioner_log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let pv_name = plain_pv["metadata"]["name"].as_str().unwrap_or_default();
    controller.detach(pv_name, &regional_node).expect("detach");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cluster
        .kube
        .list("/api/v1/persistentvolumes")
        .expect("list")
        .is_empty()
        || !cluster.disks().is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "volumes or disks left:\n{}",
            cluster.provisioner_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // What it asked for, against what the roles grant.
    let cluster_rules = rules_of("ClusterRole", "flexdisk-provisioner");
    let lease_rules = rules_of("Role", "flexdisk-provisioner-leader-election");
    let access = cluster
        .kube
        .call("GET", "/_sim/access", None)
        .expect("access")
        .1;
    let mut used: BTreeSet<(String, String, String, bool)> = BTreeSet::new();
    let mut denied = Vec::new();
    let agents: BTreeSet<String> = access
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| a["userAgent"].to_string())
        .collect();
    eprintln!("clients seen: {agents:?}");
    let theirs = access
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["userAgent"].as_str() != Some(flexdisk_sim::kube_client::USER_AGENT));
    for a in theirs {
        let (verb, group, resource) = (
            a["verb"].as_str().unwrap_or_default(),
            a["apiGroup"].as_str().unwrap_or_default(),
            a["resource"].as_str().unwrap_or_default(),
        );
        if grants(&cluster_rules, group, resource, verb) {
            used.insert((group.into(), resource.into(), verb.into(), true));
        } else if a["namespace"] == NAMESPACE && grants(&lease_rules, group, resource, verb) {
            used.insert((group.into(), resource.into(), verb.into(), false));
        } else {
            denied.push(a.clone());
        }
    }
    assert!(
        denied.is_empty(),
        "requests the RBAC rules do not grant: {denied:#?}"
    );
    for (rules, cluster_wide) in [(&cluster_rules, true), (&lease_rules, false)] {
        for r in rules {
            for g in r.api_groups.iter().flatten() {
                for res in r.resources.iter().flatten() {
                    for v in &r.verbs {
                        assert!(
                            used.contains(&(g.clone(), res.clone(), v.clone(), cluster_wide)),
                            "rule {g}/{res} {v} is never used: least privilege says drop it"
                        );
                    }
                }
            }
        }
    }
    eprintln!("RBAC checked against {} distinct requests", used.len());
}

#[test]
fn the_node_daemonset_installs_the_driver_as_its_manifest_says() {
    let cluster = Cluster::start(&[]);
    let d = doc("DaemonSet", "flexdisk-node");
    let spec = pod_spec(&d);
    let c = only_container(&spec);
    // On every node, tainted or not, and only Linux ones; no API access.
    let tolerations = spec.tolerations.clone().unwrap_or_default();
    assert!(tolerations
        .iter()
        .any(|t| t.operator.as_deref() == Some("Exists") && t.key.is_none() && t.effect.is_none()));
    assert_eq!(
        spec.node_selector
            .clone()
            .unwrap_or_default()
            .get("kubernetes.io/os")
            .map(String::as_str),
        Some("linux")
    );
    assert_eq!(spec.automount_service_account_token, Some(false));
    // The host paths are kubelet's plugin dir and the node's cloud config.
    let hosts: BTreeMap<String, String> = spec
        .volumes
        .iter()
        .flatten()
        .filter_map(|v| Some((v.name.clone(), v.host_path.clone()?.path)))
        .collect();
    assert_eq!(
        hosts.get("flexvolume").map(String::as_str),
        Some("/usr/libexec/kubernetes/kubelet-plugins/volume/exec")
    );
    assert_eq!(
        hosts.get("cloud-config").map(String::as_str),
        Some("/etc/kubernetes/azure.json")
    );

    // Run the command as written, with the host paths mapped to this test's directories.
    let node = cluster.nodes(false)[0].clone();
    let plugins = cluster.tmp.path().join("plugins");
    let mounts: Vec<(String, PathBuf)> = c
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| {
            let host = match m.name.as_str() {
                "flexvolume" => plugins.clone(),
                "cloud-config" => PathBuf::from(cluster.sim.node_field(&node, "azureJson")),
                other => panic!("unexpected mount {other}"),
            };
            (m.mount_path.clone(), host)
        })
        .collect();
    let command = c.command.clone().expect("command");
    assert_eq!(
        command[0], "/flexdisk",
        "the image's binary (install/build-images)"
    );
    let mut child = std::process::Command::new(bin("flexdisk"))
        .args(map_args(&command[1..], &mounts))
        .env_clear()
        .envs(
            c.env
                .iter()
                .flatten()
                .filter_map(|e| Some((e.name.clone(), e.value.clone()?))),
        )
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("runs");
    let installed = plugins.join("flexdisk~azure-disk/azure-disk");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !installed.exists() {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut out = String::new();
            std::io::Read::read_to_string(&mut child.stdout.take().expect("stdout"), &mut out)
                .expect("read");
            panic!("the installer exited ({status}): {out}");
        }
        assert!(Instant::now() < deadline, "never installed");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        child.try_wait().expect("wait").is_none(),
        "the container keeps running"
    );
    let conf =
        std::fs::read_to_string(plugins.join("flexdisk~azure-disk/flexdisk.conf")).expect("conf");
    for e in c.env.iter().flatten() {
        let line = format!("{}={}", e.name, e.value.clone().unwrap_or_default());
        assert!(
            conf.lines().any(|l| l == line),
            "{line} missing from:\n{conf}"
        );
    }
    assert!(
        conf.lines().any(|l| l == "FLEXDISK_CONFIG=azure.json"),
        "{conf}"
    );
    assert_eq!(
        std::fs::read(plugins.join("flexdisk~azure-disk/azure.json")).expect("copy"),
        std::fs::read(cluster.sim.node_field(&node, "azureJson")).expect("source")
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("signal");
    let out = child.wait_with_output().expect("exits");
    assert_eq!(
        out.status.code(),
        Some(0),
        "terminationGracePeriod is not needed"
    );
}

/// What `kubectl apply -k DIR` applies (kubectl's own kustomize, as users run it), by kind and
/// name.
fn kustomized(dir: &str) -> BTreeMap<(String, String), Value> {
    let yaml = system_tests::real_cluster::run(
        std::process::Command::new(system_tests::real_cluster::components().join("kubectl"))
            .arg("kustomize")
            .arg(repo().join(dir)),
    );
    let file = tempfile::NamedTempFile::new().expect("tmp");
    std::fs::write(file.path(), yaml).expect("write");
    yaml_docs(file.path())
        .expect("parses")
        .into_iter()
        .map(|d| (kind_and_name(&d), d))
        .collect()
}

/// kustomize itself builds the overlay, and it changes the node DaemonSet's cloud config alone.
/// (kustomize refuses a base that contains its overlay as a cycle: the overlay named `../` and
/// could not be built at all, which this test missed while it applied the patch by hand.)
#[test]
fn the_secret_overlay_swaps_the_node_s_cloud_config_for_the_provisioner_s_secret() {
    let mut overlay = kustomized("install/cloud-config-secret");
    let mut base = kustomized("install");
    let key = ("DaemonSet".to_string(), "flexdisk-node".to_string());
    let patched = overlay.remove(&key).expect("the DaemonSet");
    let unpatched = base.remove(&key).expect("the DaemonSet");
    assert_eq!(overlay, base, "the rest as the base has it");
    assert_eq!(
        unpatched,
        doc("DaemonSet", "flexdisk-node"),
        "install/ applies the base"
    );
    let (mut a, mut b) = (patched.clone(), unpatched);
    for v in [&mut a, &mut b] {
        let spec = &mut v["spec"]["template"]["spec"];
        spec["volumes"][1] = Value::Null;
        spec["containers"][0]["volumeMounts"][1]["mountPath"] = Value::Null;
    }
    assert_eq!(a, b, "only the cloud config's volume and mount change");
    strictly_typed::<DaemonSet>(&patched);
    let spec = pod_spec(&patched);
    let c = only_container(&spec);
    let mount = c
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name == "cloud-config")
        .expect("mount");
    let arg = c
        .command
        .iter()
        .flatten()
        .find_map(|a| a.strip_prefix("--cloud-config="))
        .expect("--cloud-config");
    assert!(
        Path::new(arg).starts_with(&mount.mount_path),
        "{arg} outside {}",
        mount.mount_path
    );
    let volume = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "cloud-config")
        .expect("volume");
    assert!(volume.host_path.is_none());
    let provisioner_secret = pod_spec(&doc("Deployment", "flexdisk-provisioner"))
        .volumes
        .into_iter()
        .flatten()
        .find_map(|v| v.secret)
        .and_then(|s| s.secret_name);
    assert_eq!(
        volume.secret.clone().and_then(|s| s.secret_name),
        provisioner_secret
    );
}
