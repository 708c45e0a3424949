//! The cluster as kubeadm makes it ([`RealCluster::start_kubeadm`]): a control-plane node whose
//! etcd, kube-apiserver, kube-controller-manager and kube-scheduler are static pods written by
//! `kubeadm init` and run by its kubelet from OCI images named as upstream names them (built
//! here from the pinned binaries, imported into that node's containerd: no registry), and
//! workers that `kubeadm join`. kube-controller-manager gets exactly the change the README tells
//! kubeadm users to make (its `controllerManager.extraVolumes` block, parsed from README.md), so
//! the driver the DaemonSet installs into the control-plane node's plugin dir runs inside the
//! distroless controller-manager container, as on a user's cluster.
//!
//! The nodes are those of the host-mode cluster (`prepare_node`: network and mount namespaces,
//! containerd, the VM's `/dev`); what differs is who configures them. kubeadm expects an init
//! system that starts kubelet once kubeadm has written its config; here kubelet is a "service"
//! (`kubelet_service`) that waits for those files, as the kubeadm packages' systemd drop-in
//! (10-kubeadm.conf) would restart it until they exist.
//!
//! Upstream code relied upon is cited as `K/…`, relative to
//! k8s.io/kubernetes@v1.37.2/cmd/kubeadm/app.

use super::*;

/// The bootstrap token the workers join with (kubeadm's format `[a-z0-9]{6}.[a-z0-9]{16}`,
/// K/apis/bootstraptoken/v1/utils.go). Fixed: the cluster lives for one test run.
const TOKEN: &str = "flexdk.0123456789abcdef";

/// Where the simulator's CA goes on the control-plane node: in kubeadm's pki dir, which kubeadm
/// already mounts into kube-controller-manager (`k8s-certs`, K/phases/controlplane/volumes.go),
/// so the driver's `SSL_CERT_FILE` (the only extra trust it takes, azure/src/transport.rs) needs
/// no volume beside the README's.
const SIM_CA_IN_PKI: &str = "/etc/kubernetes/pki/flexdisk-sim-ca.pem";

/// A version pinned in tests/kube/versions (`KUBERNETES`, `ETCD`).
pub fn pinned(what: &str) -> String {
    let versions = Path::new(env!("CARGO_MANIFEST_DIR")).join("kube/versions");
    std::fs::read_to_string(&versions)
        .expect("tests/kube/versions")
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{what}=")).map(str::to_string))
        .unwrap_or_else(|| panic!("{what} is not pinned in {}", versions.display()))
}

/// The image tag of etcd kubeadm is told to use: the pinned version as upstream tags it
/// (`registry.k8s.io/etcd:3.6.16-0`). kubeadm 1.37 would ask for etcd 3.7.0-0, the highest of its
/// own map (K/constants/constants.go `SupportedEtcdVersion`); `etcd.local.imageTag` overrides it
/// (K/images/images.go `GetEtcdImage`).
pub fn etcd_tag() -> String {
    format!("{}-0", pinned("ETCD").trim_start_matches('v'))
}

/// The image of a control-plane component as kubeadm names it (K/images/images.go
/// `GetKubernetesImage`, repository `registry.k8s.io`).
pub fn control_plane_image(component: &str) -> String {
    match component {
        "etcd" => format!("registry.k8s.io/etcd:{}", etcd_tag()),
        c => format!("registry.k8s.io/{c}:{}", pinned("KUBERNETES")),
    }
}

/// The control-plane components kubeadm runs as static pods.
pub const CONTROL_PLANE: [&str; 4] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
];

/// The OCI archives of the control-plane images, made once per pin beside the components
/// (`<kube cache>/images`). Each is distroless as upstream's are (build/server-image: the
/// binary in /usr/local/bin of a static base, no shell, no libc): kubeadm's manifests run the
/// commands by bare name (`kube-controller-manager`, K/phases/controlplane/manifests.go; `etcd`,
/// K/phases/etcd/local.go), hence `PATH` with /usr/local/bin.
pub fn control_plane_images(bin: &Path) -> Vec<PathBuf> {
    let dir = bin.parent().expect("the kube cache").join("images");
    std::fs::create_dir_all(&dir).expect("images dir");
    CONTROL_PLANE
        .iter()
        .map(|c| {
            let archive = dir.join(format!("{c}.tar"));
            if !archive.exists() {
                // Written aside and renamed: an interrupted run leaves no half archive.
                let partial = dir.join(format!("{c}.tar.partial"));
                oci_archive(
                    &partial,
                    &Image {
                        name: &control_plane_image(c),
                        files: vec![(bin.join(c), PathBuf::from("usr/local/bin").join(c))],
                        applets: &[],
                        entrypoint: &[],
                        cmd: &[],
                        user: None,
                        env: &["PATH=/usr/local/bin:/usr/bin:/bin"],
                    },
                );
                std::fs::rename(&partial, &archive).expect("image archive");
            }
            archive
        })
        .collect()
}

/// The `controllerManager.extraVolumes` of the README's kubeadm block ("Install on a cluster"):
/// the change kubeadm users are told to make, read from the README so that the test applies
/// exactly what it says.
pub fn readme_controller_manager_volumes() -> Vec<Value> {
    let readme = std::fs::read_to_string(crate::repo().join("README.md")).expect("README.md");
    let block = readme
        .split("```yaml\n")
        .skip(1)
        .filter_map(|b| b.split("\n```").next())
        .find(|b| b.contains("kind: ClusterConfiguration") && b.contains("extraVolumes"))
        .expect("the README's kubeadm ClusterConfiguration block");
    let doc: Value = serde_yaml_ng::from_str(block).expect("the README's block is YAML");
    doc["controllerManager"]["extraVolumes"]
        .as_array()
        .expect("controllerManager.extraVolumes")
        .clone()
}

impl RealCluster {
    /// A kubeadm cluster: `control_plane` (`kubeadm init`) and `workers` (`kubeadm join`), all VMs
    /// of `world`. The admin kubeconfig is kubeadm's `admin.conf`.
    pub fn start_kubeadm(world: &Path, control_plane: &str, workers: &[&str]) -> RealCluster {
        let mut c = RealCluster::base(world);
        let logs = c.dir.path().join("logs");
        // The API server listens on the control-plane node (node 0), so the nodes' route to the
        // `kubernetes` service (set up in `prepare_node`) leads there.
        c.api_ip = c.node_ip(0);
        let images = control_plane_images(&c.bin);
        let names: Vec<&str> = std::iter::once(control_plane)
            .chain(workers.iter().copied())
            .collect();
        for (i, name) in names.iter().enumerate() {
            let node = c.prepare_node(&logs, i as u8, name);
            c.nodes.push(node);
        }
        let cp = &c.nodes[0];
        for image in &images {
            import_into(cp, &c.bin, image);
        }
        // The control plane's cloud config (a client secret: kube-controller-manager's container
        // has no IMDS), where the DaemonSet's cloud-config volume takes it from.
        std::fs::copy(c.sim.field("azureJson"), cp.dir.join("etc/azure.json")).expect("azure.json");
        std::fs::create_dir_all(cp.dir.join("etc/pki")).expect("pki");
        std::fs::copy(
            c.sim.field("caBundle"),
            cp.dir.join("etc/pki/flexdisk-sim-ca.pem"),
        )
        .expect("the simulator's CA");
        for n in &c.nodes {
            c.kubelet_service(n, &logs);
        }
        let config = c.kubeadm_config(&c.nodes[0], None);
        let out = c.kubeadm(&c.nodes[0], &["init", "--config", &config]);
        // The CA's hash workers pin, from the join command init prints.
        let hash = out
            .split_whitespace()
            .find(|w| w.starts_with("sha256:"))
            .unwrap_or_else(|| panic!("no CA hash in kubeadm init's output:\n{out}"))
            .to_string();
        c.admin = c.nodes[0].dir.join("etc/admin.conf");
        std::thread::scope(|s| {
            for n in &c.nodes[1..] {
                let (c, hash) = (&c, &hash);
                s.spawn(move || {
                    let config = c.kubeadm_config(n, Some(hash));
                    c.kubeadm(n, &["join", "--config", &config]);
                });
            }
        });
        c.ready(&names);
        c
    }

    /// kubelet as kubeadm's packages run it (the systemd drop-in 10-kubeadm.conf): started before
    /// kubeadm, it waits until kubeadm has written its config (`/var/lib/kubelet/config.yaml`,
    /// `kubeadm-flags.env`) and a kubeconfig (`kubelet.conf` on init, `bootstrap-kubelet.conf` on
    /// join), then runs with them. kubeadm finds no init system to start it (PATH without
    /// systemctl, see `kubeadm`) and only waits on its healthz (K/phases/kubelet/kubelet.go,
    /// K/cmd/phases/init/waitcontrolplane.go). The files are written one after the other, and
    /// not in the same order by init and join (K/cmd/phases/init/kubelet.go,
    /// K/cmd/phases/join/kubelet.go): it waits for all of them, then a moment for the last write
    /// to end. The command never changes, so `kill`, `restart` and `boot` work as for the
    /// host-mode cluster.
    fn kubelet_service(&self, node: &Node, logs: &Path) {
        let script = "k=/var/lib/kubelet e=/etc/kubernetes
            until [ -s $k/config.yaml ] && [ -s $k/kubeadm-flags.env ] &&
                  { [ -s $e/kubelet.conf ] || [ -s $e/bootstrap-kubelet.conf ]; }; do
              sleep 0.2
            done
            sleep 0.5
            . $k/kubeadm-flags.env
            exec kubelet --bootstrap-kubeconfig=$e/bootstrap-kubelet.conf \
              --kubeconfig=$e/kubelet.conf --config=$k/config.yaml $KUBELET_KUBEADM_ARGS";
        let kubelet = spawn(
            &format!("kubelet-{}", node.name),
            logs,
            node.command("sh")
                .args(["-c", script])
                .envs(self.kubelet_env(node)),
        );
        self.procs.lock().expect("procs").push(kubelet);
    }

    /// kubeadm's config for `node` (JSON documents, which are YAML): init on the control-plane
    /// node, join (pinning `ca_hash`) elsewhere; its path.
    fn kubeadm_config(&self, node: &Node, ca_hash: Option<&str>) -> String {
        let endpoint = format!("{}:6443", self.api_ip);
        // What cloud-controller-manager would give the node (labels, providerID; see
        // `cloud_identity`), and kubelet's cgroup root of the node's own: per node, so as
        // kubelet flags and a patch of its config (K/util/patches/patches.go, target
        // `kubeletconfiguration`; applied at K/phases/kubelet/config.go).
        let (labels, provider_id) = cloud_identity(&node.imds);
        let patches = node.dir.join("kubeadm-patches");
        std::fs::create_dir_all(&patches).expect("patches dir");
        std::fs::write(
            patches.join("kubeletconfiguration+merge.json"),
            json!({"cgroupRoot": format!("/{}", node.netns), "providerID": provider_id})
                .to_string(),
        )
        .expect("kubelet patch");
        let mut registration = json!({
            "name": node.name,
            // Not detected: the host's /var/run may hold other runtimes' sockets too
            // (K/util/config/initconfiguration.go, "multiple sockets").
            "criSocket": "unix:///run/containerd/containerd.sock",
            // The images are imported; nothing is pulled. With Never, kubeadm's ImagePull check
            // returns before it compares containerd's sandbox image with its own
            // (registry.k8s.io/pause:3.10.2, K/preflight/checks.go `ImagePullCheck`), and
            // nothing else of kubeadm uses that image: containerd keeps the test pause image
            // (`PAUSE_IMAGE`) as every node's sandbox, as in host mode.
            "imagePullPolicy": "Never",
            // Every node shares this machine: its kernel and cgroup v1 (which kubelet is told to
            // accept, failCgroupV1), its swap (failSwapOn), its 2 CPUs and its memory say
            // nothing about a node (K/preflight/checks.go, checks_linux.go).
            "ignorePreflightErrors": ["SystemVerification", "Swap", "NumCPU", "Mem"],
            "kubeletExtraArgs": [
                // Without it kubelet would take an address of the default route, which a node
                // here has not.
                {"name": "node-ip", "value": node.ip.to_string()},
                {"name": "node-labels", "value": labels},
                {"name": "v", "value": "2"},
            ],
        });
        // Shorter than kubeadm's 4 and 5 minutes (K/constants/constants.go): a stuck start
        // fails the run sooner.
        let timeouts = json!({"controlPlaneComponentHealthCheck": "2m0s",
            "kubeletHealthCheck": "2m0s", "tlsBootstrap": "2m0s", "discovery": "2m0s"});
        let mut docs = Vec::new();
        match ca_hash {
            None => {
                // The control plane keeps kubeadm's taint: only the DaemonSet, which tolerates
                // every taint, runs there.
                registration["taints"] = json!([{"key": "node-role.kubernetes.io/control-plane",
                                                 "effect": "NoSchedule"}]);
                docs.push(json!({
                    "apiVersion": "kubeadm.k8s.io/v1beta4", "kind": "InitConfiguration",
                    "bootstrapTokens": [{"token": TOKEN, "ttl": "2h0m0s"}],
                    // Set, not guessed: a node here has no default route, and kubeadm would fall
                    // back to 0.0.0.0 (K/util/config/initconfiguration.go).
                    "localAPIEndpoint": {"advertiseAddress": node.ip.to_string(), "bindPort": 6443},
                    "nodeRegistration": registration,
                    "patches": {"directory": patches},
                    "timeouts": timeouts,
                }));
                let policy = self.audit_policy();
                let logs = self.dir.path().join("logs");
                docs.push(json!({
                    "apiVersion": "kubeadm.k8s.io/v1beta4", "kind": "ClusterConfiguration",
                    // Explicit: otherwise kubeadm looks up "stable-1" on the internet.
                    "kubernetesVersion": pinned("KUBERNETES"),
                    "controlPlaneEndpoint": endpoint,
                    "networking": {"serviceSubnet": SERVICE_CIDR},
                    "etcd": {"local": {"imageTag": etcd_tag()}},
                    // No CoreDNS and no kube-proxy: the host-mode cluster has neither, and the
                    // nodes forward the `kubernetes` service themselves.
                    "dns": {"disabled": true},
                    "proxy": {"disabled": true},
                    "apiServer": {
                        // The audit log of writes to claims and volumes, as in host mode (the
                        // diagnostics and `writes` read it).
                        "extraArgs": [
                            {"name": "audit-policy-file", "value": policy},
                            {"name": "audit-log-path", "value": logs.join("audit.log")},
                        ],
                        "extraVolumes": [
                            {"name": "audit-policy", "hostPath": policy, "mountPath": policy,
                             "readOnly": true, "pathType": "File"},
                            {"name": "audit-log", "hostPath": logs, "mountPath": logs,
                             "pathType": "DirectoryOrCreate"},
                        ],
                    },
                    "controllerManager": {
                        "extraArgs": [
                            {"name": "attach-detach-reconcile-sync-period", "value": "10s"},
                            // A dead node is noticed in 20 s rather than 50.
                            {"name": "node-monitor-grace-period", "value": "20s"},
                        ],
                        // Test-only: the simulator's login has a private CA.
                        "extraEnvs": [{"name": "SSL_CERT_FILE", "value": SIM_CA_IN_PKI}],
                        // Exactly the README's change.
                        "extraVolumes": readme_controller_manager_volumes(),
                    },
                }));
                // kubelet's config on every node (kubeadm uploads it for the joins), as the
                // host-mode cluster's (`start_node`) but for what kubeadm sets itself: TLS,
                // authentication, the API server and healthz (kubeadm waits on it).
                docs.push(json!({
                    "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
                    // containerd runs with SystemdCgroup = false; kubeadm's default is systemd
                    // (K/componentconfigs/kubelet.go).
                    "cgroupDriver": "cgroupfs",
                    "cgroupsPerQOS": true, "enforceNodeAllocatable": [],
                    "failCgroupV1": false, "failSwapOn": false, "readOnlyPort": 0,
                    "containerRuntimeEndpoint": "unix:///run/containerd/containerd.sock",
                    "resolvConf": "", "clusterDomain": "cluster.local",
                    "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
                    "evictionHard": {}, "evictionSoft": {}, "evictionPressureTransitionPeriod": "0s",
                    "serializeImagePulls": false,
                    "volumeStatsAggPeriod": "10s",
                }));
            }
            Some(hash) => {
                docs.push(json!({
                    "apiVersion": "kubeadm.k8s.io/v1beta4", "kind": "JoinConfiguration",
                    "discovery": {"bootstrapToken": {"apiServerEndpoint": endpoint,
                        "token": TOKEN, "caCertHashes": [hash]}},
                    "nodeRegistration": registration,
                    "patches": {"directory": patches},
                    "timeouts": timeouts,
                }));
            }
        }
        let path = node.dir.join("kubeadm.yaml");
        std::fs::write(
            &path,
            docs.iter()
                .map(Value::to_string)
                .collect::<Vec<_>>()
                .join("\n---\n"),
        )
        .expect("kubeadm config");
        path.to_str().expect("utf-8").to_string()
    }

    /// Runs kubeadm in `node` (its mount and network namespaces) with a clean environment: no
    /// `*_proxy` variable for it to copy into the static pods (K/util/env.go,
    /// K/phases/controlplane/manifests.go), and a PATH of only what it needs (its preflight's
    /// mandatory `losetup`, `mount`, `cp`, K/preflight/checks_linux.go; `kubelet` for the version
    /// check): no `systemctl`, which would make it manage the host's kubelet service
    /// (K/util/initsystem/initsystem_unix.go). Its output goes to `logs/kubeadm-<node>.log`;
    /// returns its stdout, or panics with it.
    fn kubeadm(&self, node: &Node, args: &[&str]) -> String {
        let path = self.dir.path().join("kubeadm-path");
        if !path.exists() {
            let tmp = self.dir.path().join("kubeadm-path.partial");
            std::fs::create_dir_all(&tmp).expect("kubeadm's PATH");
            for tool in ["nsenter", "losetup", "mount", "cp"] {
                let found = sh(&format!("command -v {tool}"));
                std::os::unix::fs::symlink(found.trim(), tmp.join(tool)).expect("a tool");
            }
            std::os::unix::fs::symlink(self.bin.join("kubelet"), tmp.join("kubelet"))
                .expect("kubelet");
            // (Two joins at once: the first one's rename wins.)
            let _ = std::fs::rename(&tmp, &path);
        }
        let log = self
            .dir
            .path()
            .join(format!("logs/kubeadm-{}.log", node.name));
        // (`nsenter` itself is found in that PATH.)
        let out = node
            .command(self.bin.join("kubeadm").to_str().expect("utf-8"))
            .env_clear()
            .env("PATH", &path)
            .env("HOME", node.dir.join("home"))
            .args(args)
            .arg("--v=1")
            .output()
            .expect("kubeadm");
        let text = format!(
            "{}\n--- stderr\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(&log, &text).expect("kubeadm log");
        if !out.status.success() {
            panic!(
                "kubeadm {args:?} on {} failed:\n{text}\n{}",
                node.name,
                self.diagnostics()
            );
        }
        String::from_utf8_lossy(&out.stdout).to_string()
    }
}
