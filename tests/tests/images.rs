//! The images as they ship, made by `install/build-images` (no container engine): they hold
//! exactly what the manifests run, as the manifests run it — names, entrypoints, users — the
//! binaries in them are static, and building again gives the same bytes.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::PodSpec;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use system_tests::real_cluster::{build_images, is_dynamic, run, shipped};
use system_tests::{install_manifests, strictly_typed, yaml_docs};

/// One OCI image archive, read back.
struct Image {
    name: String,
    config: Value,
    /// Each file of its one layer: path → (mode as `tar` shows it, owner), and the files' bytes
    /// under `root`.
    files: BTreeMap<String, (String, String)>,
    root: tempfile::TempDir,
}

fn read_image(archive: &Path) -> Image {
    let dir = tempfile::tempdir().expect("tmp");
    run(Command::new("tar")
        .arg("-xf")
        .arg(archive)
        .arg("-C")
        .arg(dir.path()));
    let json = |p: &Path| -> Value {
        serde_json::from_slice(&std::fs::read(p).expect("blob")).expect("json")
    };
    let blob = |digest: &str| {
        dir.path()
            .join("blobs/sha256")
            .join(digest.strip_prefix("sha256:").expect("a sha256 digest"))
    };
    let index = json(&dir.path().join("index.json"));
    let entries = index["manifests"].as_array().expect("manifests");
    assert_eq!(entries.len(), 1, "one image per archive: {index}");
    let name = entries[0]["annotations"]["io.containerd.image.name"]
        .as_str()
        .expect("the image's name")
        .to_string();
    let manifest = json(&blob(entries[0]["digest"].as_str().expect("digest")));
    let config = json(&blob(
        manifest["config"]["digest"].as_str().expect("digest"),
    ));
    let layers = manifest["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 1, "one layer: {manifest}");
    let layer = blob(layers[0]["digest"].as_str().expect("digest"));
    assert_eq!(
        config["rootfs"]["diff_ids"][0], layers[0]["digest"],
        "an uncompressed layer is its own diff id"
    );
    let listing = run(Command::new("tar")
        .args(["--numeric-owner", "-tvf"])
        .arg(&layer));
    let files = listing
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let path = f
                .last()
                .expect("path")
                .trim_start_matches("./")
                .trim_end_matches('/')
                .to_string();
            (path, (f[0].to_string(), f[1].to_string()))
        })
        .filter(|(p, _)| !p.is_empty())
        .collect();
    let root = tempfile::tempdir().expect("tmp");
    run(Command::new("tar")
        .arg("-xf")
        .arg(&layer)
        .arg("-C")
        .arg(root.path()));
    Image {
        name,
        config,
        files,
        root,
    }
}

fn workload<T: serde::de::DeserializeOwned + serde::Serialize>(kind: &str, name: &str) -> T {
    let doc = install_manifests()
        .iter()
        .flat_map(|f| yaml_docs(f).expect("parses"))
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{kind} {name} in install/"));
    strictly_typed(&doc)
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

#[test]
fn the_images_hold_what_the_manifests_run() {
    let shipped = shipped();
    let node: DaemonSet = workload("DaemonSet", "flexdisk-node");
    let provisioner: Deployment = workload("Deployment", "flexdisk-provisioner");
    let spec = |p: Option<PodSpec>| p.expect("a pod spec");
    let node_spec = spec(node.spec.and_then(|s| s.template.spec));
    let prov_spec = spec(provisioner.spec.and_then(|s| s.template.spec));

    let driver = read_image(&shipped.driver);
    let installer = &node_spec.containers[0];
    assert_eq!(
        Some(&driver.name),
        installer.image.as_ref(),
        "the DaemonSet's image"
    );
    let command = installer.command.clone().expect("the DaemonSet's command");
    assert_eq!(
        strings(&driver.config["config"]["Entrypoint"]),
        command[..1],
        "the DaemonSet runs the image's binary"
    );
    assert_eq!(
        driver.config["config"]["User"], "0:0",
        "the installer writes to the host"
    );
    assert_eq!(
        driver.files.keys().collect::<Vec<_>>(),
        ["flexdisk"],
        "the driver's image holds the driver alone"
    );
    assert_eq!(
        driver.files["flexdisk"],
        ("-rwxr-xr-x".into(), "0/0".into())
    );
    let binary = std::fs::read(driver.root.path().join("flexdisk")).expect("driver");
    assert!(!is_dynamic(&binary), "the shipped driver is static");
    assert_eq!(
        binary,
        std::fs::read(shipped.bins.join("flexdisk")).expect("built"),
        "the image's driver is the release build"
    );

    let prov = read_image(&shipped.provisioner);
    let c = &prov_spec.containers[0];
    assert_eq!(Some(&prov.name), c.image.as_ref(), "the Deployment's image");
    assert!(
        c.command.is_none(),
        "the Deployment runs the image's entrypoint"
    );
    assert_eq!(
        strings(&prov.config["config"]["Entrypoint"]),
        ["/flexdisk-provisioner"]
    );
    let user = prov_spec
        .security_context
        .as_ref()
        .and_then(|s| s.run_as_user)
        .expect("the Deployment's user");
    assert_eq!(
        prov.config["config"]["User"],
        format!("{user}:{user}"),
        "the image's user is the Deployment's"
    );
    let passwd = std::fs::read_to_string(prov.root.path().join("etc/passwd")).expect("passwd");
    assert!(
        passwd
            .lines()
            .any(|l| l.split(':').nth(2) == Some(&user.to_string())),
        "the user is named in /etc/passwd: {passwd}"
    );
    let bundle =
        std::fs::read_to_string(prov.root.path().join("etc/ssl/certs/ca-certificates.crt"))
            .expect("the CA bundle Entra ID's login is checked against");
    assert!(
        bundle.matches("BEGIN CERTIFICATE").count() > 50,
        "a whole CA bundle"
    );
    assert_eq!(prov.files["tmp"].0, "drwxrwxrwt", "a /tmp for everyone");
    let binary = std::fs::read(prov.root.path().join("flexdisk-provisioner")).expect("provisioner");
    assert!(!is_dynamic(&binary), "the shipped provisioner is static");
    for (path, (mode, owner)) in driver.files.iter().chain(&prov.files) {
        assert_eq!(owner, "0/0", "{path} belongs to root");
        // `tar -tv` modes: type, then owner, group and others' rwx; others' w is the ninth.
        let others_write = mode.as_bytes().get(8) == Some(&b'w');
        assert!(
            !others_write || path == "tmp",
            "{path} is not world-writable: {mode}"
        );
    }
}

/// Building again, elsewhere, gives the same bytes, digests included.
#[test]
fn the_images_build_reproducibly() {
    let shipped = shipped();
    let again = tempfile::tempdir().expect("tmp");
    let target = shipped
        .bins
        .ancestors()
        .nth(2)
        .expect("the target dir")
        .to_path_buf();
    build_images(&target, again.path());
    for first in [&shipped.driver, &shipped.provisioner] {
        let second = again.path().join(first.file_name().expect("name"));
        assert!(
            std::fs::read(first).expect("first") == std::fs::read(&second).expect("second"),
            "{} differs when built again",
            first.display()
        );
    }
}
