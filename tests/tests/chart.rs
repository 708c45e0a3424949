//! The Helm chart (`install/` is the chart: its templates render the kustomize base, `install/base/`,
//! with the values applied): with its defaults it renders exactly what `kubectl kustomize` makes
//! of `install/` and of the Secret overlay, every value reaches its place, a bad value is refused
//! with a message that says what to use, and the packaged chart holds what it renders from.
//! Helm is the pinned upstream one, built by `tests/helm/build`; kustomize is kubectl's.

use serde_json::Value;
use std::process::Command;
use system_tests::real_cluster::{components, helm, run};
use system_tests::repo;

fn docs(yaml: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|d| Value::deserialize(d).expect("YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

/// Objects by kind, namespace and name (each once).
fn by_name(objects: Vec<Value>) -> std::collections::BTreeMap<String, Value> {
    let mut out = std::collections::BTreeMap::new();
    for o in objects {
        let key = format!(
            "{} {}/{}",
            o["kind"].as_str().unwrap_or_default(),
            o["metadata"]["namespace"].as_str().unwrap_or_default(),
            o["metadata"]["name"].as_str().unwrap_or_default()
        );
        assert!(out.insert(key.clone(), o).is_none(), "{key} twice");
    }
    out
}

fn template(namespace: &str, set: &[&str]) -> Result<Vec<Value>, String> {
    let mut c = Command::new(helm());
    c.args(["template", "flexdisk"])
        .arg(repo().join("install"))
        .args(["--namespace", namespace]);
    for s in set {
        c.args(["--set", s]);
    }
    let out = c.output().expect("helm runs");
    if out.status.success() {
        Ok(docs(&String::from_utf8_lossy(&out.stdout)))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).to_string())
    }
}

/// `kubectl kustomize` of a directory of the repository, without the Namespace (a chart installs
/// into the release's namespace, made by `helm install --create-namespace` or beforehand).
fn kustomize(dir: &str) -> Vec<Value> {
    let yaml = run(Command::new(components().join("kubectl"))
        .arg("kustomize")
        .arg(repo().join(dir)));
    docs(&yaml)
        .into_iter()
        .filter(|o| o["kind"] != "Namespace")
        .collect()
}

fn assert_same(chart: Vec<Value>, base: Vec<Value>, what: &str) {
    let (chart, base) = (by_name(chart), by_name(base));
    assert_eq!(
        chart.keys().collect::<Vec<_>>(),
        base.keys().collect::<Vec<_>>(),
        "{what}: the same objects"
    );
    for (key, o) in &base {
        assert_eq!(&chart[key], o, "{what}: {key}");
    }
}

/// The element of a list of named things (volumes, env) called `name`; null if none.
fn named(list: &Value, name: &str) -> Value {
    list.as_array()
        .into_iter()
        .flatten()
        .find(|v| v["name"] == name)
        .cloned()
        .unwrap_or(Value::Null)
}

#[test]
fn the_defaults_render_the_kustomize_base() {
    assert_same(
        template("flexdisk-system", &[]).expect("renders"),
        kustomize("install"),
        "install/",
    );
    assert_same(
        template("flexdisk-system", &["cloudConfig.nodeSource=secret"]).expect("renders"),
        kustomize("install/cloud-config-secret"),
        "install/cloud-config-secret/",
    );
    let lint = Command::new(helm())
        .arg("lint")
        .arg(repo().join("install"))
        .output()
        .expect("helm lint");
    assert!(
        lint.status.success(),
        "{}",
        String::from_utf8_lossy(&lint.stdout)
    );
}

#[test]
fn every_value_reaches_its_place() {
    let objects = by_name(
        template(
            "storage",
            &[
                "images.driver.repository=registry.example/flexdisk",
                "images.driver.tag=0.2.0",
                "images.driver.pullPolicy=Always",
                "images.provisioner.repository=registry.example/flexdisk-provisioner",
                "images.provisioner.tag=0.2.1",
                "cloudConfig.secretName=azure-config",
                "cloudConfig.hostPath=/etc/azure/cloud.json",
                "pluginDir=/opt/kubelet/volume/exec",
                "node.log=/var/log/fd.log",
                "node.stateDir=/var/lib/fd",
                "node.resources.limits.memory=64Mi",
                "provisioner.replicas=3",
                "provisioner.logLevel=debug",
                "provisioner.metricsPort=9090",
                "provisioner.extraEnv[0].name=SSL_CERT_FILE",
                "provisioner.extraEnv[0].value=/etc/flexdisk/ca.pem",
            ],
        )
        .expect("renders"),
    );
    for (key, o) in &objects {
        let cluster_wide =
            ["ClusterRole", "ClusterRoleBinding"].contains(&o["kind"].as_str().unwrap_or_default());
        assert_eq!(
            o["metadata"]["namespace"].as_str(),
            (!cluster_wide).then_some("storage"),
            "{key}"
        );
        for s in o["subjects"].as_array().into_iter().flatten() {
            assert_eq!(s["namespace"], "storage", "{key}");
        }
    }
    let ds = &objects["DaemonSet storage/flexdisk-node"];
    let pod = &ds["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(c["image"], "registry.example/flexdisk:0.2.0");
    assert_eq!(c["imagePullPolicy"], "Always");
    assert_eq!(c["resources"]["limits"]["memory"], "64Mi");
    let env = |c: &Value, name: &str| named(&c["env"], name)["value"].clone();
    assert_eq!(env(c, "FLEXDISK_LOG"), "/var/log/fd.log");
    assert_eq!(env(c, "FLEXDISK_STATE_DIR"), "/var/lib/fd");
    let volume = |pod: &Value, name: &str| named(&pod["volumes"], name);
    assert_eq!(
        volume(pod, "flexvolume")["hostPath"]["path"],
        "/opt/kubelet/volume/exec"
    );
    assert_eq!(
        volume(pod, "cloud-config")["hostPath"]["path"],
        "/etc/azure/cloud.json"
    );
    let deploy = &objects["Deployment storage/flexdisk-provisioner"];
    assert_eq!(deploy["spec"]["replicas"], 3);
    assert_eq!(
        deploy["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"],
        "9090"
    );
    let pod = &deploy["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(c["image"], "registry.example/flexdisk-provisioner:0.2.1");
    assert_eq!(env(c, "LOG"), "debug");
    assert_eq!(env(c, "SSL_CERT_FILE"), "/etc/flexdisk/ca.pem");
    assert!(
        named(&c["env"], "POD_NAME")["valueFrom"].is_object(),
        "the base's own variables stay"
    );
    assert!(
        c["args"]
            .as_array()
            .expect("args")
            .contains(&Value::from("--metrics-addr=0.0.0.0:9090")),
        "{}",
        c["args"]
    );
    assert_eq!(c["ports"][0]["containerPort"], 9090);
    assert_eq!(
        volume(pod, "cloud-config")["secret"]["secretName"],
        "azure-config"
    );
    let svc = &objects["Service storage/flexdisk-provisioner-metrics"];
    assert_eq!(svc["spec"]["ports"][0]["port"], 9090);
    // The Secret variant takes the Secret the provisioner reads.
    let secret = by_name(
        template(
            "storage",
            &[
                "cloudConfig.nodeSource=secret",
                "cloudConfig.secretName=azure-config",
            ],
        )
        .expect("renders"),
    );
    let pod = &secret["DaemonSet storage/flexdisk-node"]["spec"]["template"]["spec"];
    assert_eq!(
        volume(pod, "cloud-config")["secret"]["secretName"],
        "azure-config"
    );
    assert!(volume(pod, "cloud-config")["hostPath"].is_null());
}

#[test]
fn a_bad_value_is_refused_with_what_to_use() {
    let e = template("flexdisk-system", &["cloudConfig.nodeSource=node"]).expect_err("refused");
    assert!(
        e.contains("cloudConfig.nodeSource is \"node\": use host")
            && e.contains("or secret (the Secret flexdisk-cloud-config)"),
        "{e}"
    );
}

#[test]
fn the_packaged_chart_holds_its_base_and_not_the_image_build() {
    let out = tempfile::tempdir().expect("tmp");
    run(Command::new(helm())
        .arg("package")
        .arg(repo().join("install"))
        .arg("--destination")
        .arg(out.path()));
    let tgz = out.path().join("flexdisk-0.1.0.tgz");
    let listing = run(Command::new("tar").arg("-tzf").arg(&tgz));
    let files: Vec<&str> = listing.lines().collect();
    for f in [
        "flexdisk/Chart.yaml",
        "flexdisk/values.yaml",
        "flexdisk/templates/node.yaml",
        "flexdisk/base/node.yaml",
        "flexdisk/base/provisioner.yaml",
        "flexdisk/base/rbac.yaml",
    ] {
        assert!(files.contains(&f), "{f} not in {files:?}");
    }
    for f in files {
        assert!(
            !f.ends_with("build-images") && !f.ends_with("kustomization.yaml"),
            "{f} packaged"
        );
    }
    // What is packaged renders as the directory does.
    let unpacked = tempfile::tempdir().expect("tmp");
    run(Command::new("tar")
        .arg("-xzf")
        .arg(&tgz)
        .arg("-C")
        .arg(unpacked.path()));
    let packaged = Command::new(helm())
        .args(["template", "flexdisk"])
        .arg(unpacked.path().join("flexdisk"))
        .args(["--namespace", "flexdisk-system"])
        .output()
        .expect("helm");
    assert!(packaged.status.success());
    assert_same(
        docs(&String::from_utf8_lossy(&packaged.stdout)),
        template("flexdisk-system", &[]).expect("renders"),
        "packaged",
    );
}
