//! A real Kubernetes cluster on this machine, around the simulated Azure: etcd, kube-apiserver (TLS,
//! service-account keys, RBAC), kube-controller-manager with the real `flexdisk` in its FlexVolume
//! plugin dir, kube-scheduler, and nodes that are each a real kubelet with its own containerd.
//!
//! Every node lives in its own network namespace (a veth on a host-only bridge: no route leaves
//! it) and its own mount namespace, in which the host paths a node has are the node's own: the
//! default FlexVolume plugin dir, `/var/lib/kubelet`, containerd's dirs, `/var/lib/flexdisk`,
//! `/var/log`, `/etc/kubernetes/azure.json` (the simulator's config of that VM) and `/dev` (the
//! simulator's device tree of that VM, where attached disks appear as `/dev/sdX` with udev's
//! `/dev/disk/azure/scsi1/lunN` links). The driver therefore runs with production defaults; what
//! is per node reaches it as on a real node: the config file and `IMDS_ENDPOINT`.
//!
//! Two ways to start it: [`RealCluster::start`] runs the control plane as processes on the host,
//! with a harness-made PKI and the driver copied into each controller-manager's plugin dir;
//! [`RealCluster::start_kubeadm`] (`kubeadm.rs`) has `kubeadm init` run it as static pods on a
//! control-plane node and the workers `kubeadm join`, so that the driver reaches the
//! controller-manager only as on a user's kubeadm cluster (the DaemonSet, the README's volumes).
//!
//! The components are built by `tests/kube/build` (pinned in `tests/kube/versions`). Everything
//! listens on the bridge's address or loopback; nodes reach the API server and the simulator
//! through the bridge only.

use crate::bin;
use flexdisk_sim::process::SimProcess;
use serde_json::{json, Value};
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Runs a command to completion; its stdout, or a panic with what it said.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

mod kubeadm;
pub mod waterfall;
pub use kubeadm::{control_plane_image, pinned, readme_controller_manager_volumes};

fn sh(script: &str) -> String {
    run(Command::new("sh").args(["-euc", script]))
}

/// A test interrupted (CI's timeout, Ctrl-C) tears the cluster in `live` down before it goes: its
/// components, bridge, namespaces, mounts and the simulator's loop devices would otherwise
/// outlive it. Handlers, not a blocked signal mask with a waiting thread: every child would
/// inherit the mask (exec keeps it, and std's spawn leaves it as it is), and a simulator started
/// with SIGTERM blocked never stopped — the run hung after its last scenario. Handlers are
/// reset at exec.
pub fn tear_down_on_signals(live: &'static std::sync::OnceLock<std::sync::Weak<RealCluster>>) {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals =
        signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]).expect("signal handlers");
    std::thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            eprintln!("signal {signal}: tearing the cluster down");
            if let Some(cluster) = live.get().and_then(std::sync::Weak::upgrade) {
                cluster.teardown();
            }
            std::process::exit(128 + signal);
        }
    });
}

/// A pod on `node` that runs `script` with the claim mounted at /data.
pub fn pod(name: &str, node: &str, claim: &str, script: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"nodeName": node, "restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "app", "image": TOOLS_IMAGE, "imagePullPolicy": "Never",
                "command": ["/bin/sh", "-c", script],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]}})
}

/// A pod's phase; empty while it does not exist.
pub fn phase(c: &RealCluster, pod: &str) -> String {
    c.kubectl_json(&["get", "pod", pod])
        .ok()
        .and_then(|p| p["status"]["phase"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// How [`RealCluster::install_flexdisk_with`] installs flexdisk: the two ways the README gives.
pub enum Installer {
    /// `kubectl apply -k` of the kustomize base (through an overlay).
    Kustomize,
    /// `helm install` of the chart.
    Helm,
}

/// The pinned Helm, built (or found) by `tests/helm/build`.
pub fn helm() -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("helm/build");
    PathBuf::from(run(&mut Command::new(script)).trim())
}

/// The pinned components, built (or found) by `tests/kube/build`.
pub fn components() -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("kube/build");
    PathBuf::from(run(&mut Command::new(script)).trim())
}

/// A private CA and the certificates the cluster's parts present.
struct Pki {
    dir: PathBuf,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl Pki {
    fn new(dir: &Path) -> Pki {
        std::fs::create_dir_all(dir).expect("pki dir");
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "flexdisk-test-cluster-ca");
        let cert = params.self_signed(&key).expect("ca");
        std::fs::write(dir.join("ca.pem"), cert.pem()).expect("ca.pem");
        Pki {
            dir: dir.to_path_buf(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A certificate for `cn` in `orgs`, valid for `names` (server) or as a client; its files.
    fn issue(&self, file: &str, cn: &str, orgs: &[&str], names: &[String]) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(names.to_vec()).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        for o in orgs {
            params
                .distinguished_name
                .push(rcgen::DnType::OrganizationName, *o);
        }
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &self.issuer).expect("cert");
        let (c, k) = (
            self.dir.join(format!("{file}.pem")),
            self.dir.join(format!("{file}.key")),
        );
        std::fs::write(&c, cert.pem()).expect("cert file");
        std::fs::write(&k, key.serialize_pem()).expect("key file");
        (c, k)
    }

    /// A kubeconfig for `user` (a client certificate) at `server`.
    fn kubeconfig(&self, file: &str, server: &str, cn: &str, orgs: &[&str]) -> PathBuf {
        let (cert, key) = self.issue(file, cn, orgs, &[]);
        let path = self.dir.join(format!("{file}.kubeconfig"));
        let config = json!({
            "apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "test", "cluster": {"server": server,
                "certificate-authority": self.ca()}}],
            "users": [{"name": cn, "user": {"client-certificate": cert, "client-key": key}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": cn}}],
        });
        std::fs::write(&path, config.to_string()).expect("kubeconfig");
        path
    }
}

/// A process of the cluster, with its log.
struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
    /// How it was started, to start it again the same way.
    program: std::ffi::OsString,
    args: Vec<std::ffi::OsString>,
    envs: Vec<(std::ffi::OsString, std::ffi::OsString)>,
}

fn start_logged(cmd: &mut Command, log: &Path) -> Child {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log");
    // Its own process group: a component killed "as a crash would" takes the processes it
    // started with it (kube-controller-manager's and kubelet's driver calls), as a container's
    // end does.
    cmd.stdin(Stdio::null())
        .stdout(file.try_clone().expect("log"))
        .stderr(file)
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", log.display()))
}

fn spawn(name: &str, log_dir: &Path, cmd: &mut Command) -> Proc {
    let log = log_dir.join(format!("{name}.log"));
    let child = start_logged(cmd, &log);
    Proc {
        name: name.to_string(),
        child,
        log,
        program: cmd.get_program().to_owned(),
        args: cmd.get_args().map(ToOwned::to_owned).collect(),
        envs: cmd
            .get_envs()
            .filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned())))
            .collect(),
    }
}

/// How long the simulated Azure's operations take in this run: `FLEXDISK_REAL_CLUSTER_TIMING=azure`
/// spreads them as Azure's are (the simulator's `Timing`: VM operations 12 s median with a tail
/// past two minutes, disk operations 2.5 s), so that kube-controller-manager's and kubelet's
/// timeouts and retries are reached; unset, fast fixed times (300 ms, 200 ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterTiming {
    Fast,
    AzureLike,
}

impl ClusterTiming {
    fn sim_args(self) -> &'static [&'static str] {
        match self {
            ClusterTiming::Fast => &["--vm-op-ms", "300", "--disk-op-ms", "200"],
            ClusterTiming::AzureLike => &[
                "--vm-op-ms",
                "12000",
                "--vm-op-sigma",
                "1.0",
                "--disk-op-ms",
                "2500",
                "--disk-op-sigma",
                "0.5",
            ],
        }
    }

    /// How long a test waits for what a few Azure operations and Kubernetes' reactions take.
    pub fn long_wait(self) -> Duration {
        match self {
            ClusterTiming::Fast => Duration::from_secs(180),
            ClusterTiming::AzureLike => Duration::from_secs(900),
        }
    }
}

/// This run's timing (see [`ClusterTiming`]); anything but `azure` or unset is refused.
pub fn timing() -> ClusterTiming {
    match std::env::var("FLEXDISK_REAL_CLUSTER_TIMING").as_deref() {
        Err(_) | Ok("") | Ok("fast") => ClusterTiming::Fast,
        Ok("azure") => ClusterTiming::AzureLike,
        Ok(other) => {
            panic!("FLEXDISK_REAL_CLUSTER_TIMING={other:?}: use azure, fast or leave it unset")
        }
    }
}

/// kubelet's `nodeStatusUpdateFrequency` in this run: `FLEXDISK_REAL_CLUSTER_NODE_STATUS=1s` (a
/// Go duration of whole seconds or milliseconds) sets it on every node, with
/// `nodeStatusReportFrequency` kept at 5m (its default copies the update frequency otherwise,
/// pkg/kubelet/apis/config/v1beta1/defaults.go); unset, kubelet's default (10 s). The tick gates
/// every new mount of an attachable volume and every detach (kubelet reports `volumesInUse` only
/// on it; README, Operations), so the waterfalls measure what an operator gains by lowering it.
pub fn node_status_frequency() -> Option<String> {
    let v = std::env::var("FLEXDISK_REAL_CLUSTER_NODE_STATUS").ok()?;
    if v.is_empty() {
        return None;
    }
    let number = v.strip_suffix("ms").or_else(|| v.strip_suffix('s'));
    match number.map(|n| n.parse::<u32>()) {
        Some(Ok(n)) if n > 0 => Some(v),
        _ => panic!("FLEXDISK_REAL_CLUSTER_NODE_STATUS={v:?}: use a duration such as 1s or 500ms, or leave it unset"),
    }
}

/// The control plane's kube-controller-managers (component names, and each one's hostname).
pub const CONTROLLER_MANAGERS: [&str; 2] = ["kube-controller-manager", "kube-controller-manager-b"];

/// The component name of the driver's log of a kube-controller-manager's calls.
pub fn controller_driver_log(kcm: &str) -> String {
    kcm.replacen("kube-controller-manager", "flexdisk-controller", 1)
}

/// One node: its namespaces and directories.
pub struct Node {
    pub name: String,
    pub ip: Ipv4Addr,
    /// `ip netns` name.
    pub netns: String,
    /// A link to the node's mount namespace (renewed when it boots).
    pub mntns: PathBuf,
    pub dir: PathBuf,
    /// The simulator's tree of this VM (its `/dev`).
    pub sim_root: PathBuf,
    pub imds: String,
}

impl Node {
    /// A command run inside the node (its mount and network namespaces).
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--mount={}", self.mntns.display()))
            .arg(format!("--net=/run/netns/{}", self.netns))
            .arg("--")
            .arg(program);
        c
    }

    /// The node's mount table (the mountinfo of its namespace's holder); `None` while it is off.
    pub fn mount_table(&self) -> Option<String> {
        let ns = std::fs::read_link(&self.mntns).ok()?;
        std::fs::read_to_string(ns.parent()?.parent()?.join("mountinfo")).ok()
    }
}

pub struct RealCluster {
    pub dir: tempfile::TempDir,
    pub bin: PathBuf,
    pub sim: SimProcess,
    pub bridge: String,
    pub host_ip: Ipv4Addr,
    /// Where the API server listens: the bridge's address (the control plane on the host), or
    /// the control-plane node's (kubeadm's, [`RealCluster::start_kubeadm`]).
    pub api_ip: Ipv4Addr,
    pub admin: PathBuf,
    pub nodes: Vec<Node>,
    procs: std::sync::Mutex<Vec<Proc>>,
    /// Shell commands that undo what was set up on the host, run last to first.
    undo: Vec<String>,
    /// Stops the thread that keeps copies of the provisioner pods' logs.
    keeper: Option<std::sync::mpsc::Sender<()>>,
    torn_down: std::sync::atomic::AtomicBool,
}

const SERVICE_CIDR: &str = "10.96.0.0/16";

impl RealCluster {
    /// A cluster of `node_names` (which must be VMs of `world`, a simulator world file).
    pub fn start(world: &Path, node_names: &[&str]) -> RealCluster {
        let mut c = RealCluster::base(world);
        let logs = c.dir.path().join("logs");
        let pki = Pki::new(&c.dir.path().join("pki"));
        c.start_control_plane(&pki, &logs);
        for (i, name) in node_names.iter().enumerate() {
            c.start_node(&pki, &logs, i as u8, name);
        }
        c.ready(node_names);
        c
    }

    /// What every cluster starts from: the components built, a host-only bridge and the
    /// simulator of `world` listening on it. No control plane, no node yet.
    fn base(world: &Path) -> RealCluster {
        let bin_dir = components();
        let dir = tempfile::tempdir().expect("tmp");
        let logs = dir.path().join("logs");
        std::fs::create_dir_all(&logs).expect("logs");
        // A host-only bridge of our own: 10.200.<n>.1/24, a free <n>.
        let n = (1..250u8)
            .find(|n| !Path::new(&format!("/sys/class/net/fdk{n}")).exists())
            .expect("a free bridge");
        let bridge = format!("fdk{n}");
        let host_ip = Ipv4Addr::new(10, 200, n, 1);
        sh(&format!(
            "ip link add {bridge} type bridge && ip addr add {host_ip}/24 dev {bridge} && ip link set {bridge} up"
        ));
        let undo = vec![format!("ip link delete {bridge}")];
        // The simulator's CA, trusted process-wide through SSL_CERT_FILE (set before any client
        // exists); its login certificate names the bridge's address, so one cluster at a time
        // per test process.
        let tls = flexdisk_sim::process::shared_tls_dir(
            &std::env::temp_dir().join(format!("flexdisk-real-cluster-ca-{}", std::process::id())),
        );
        let sim = SimProcess::start(
            &simulator(),
            &[
                "--world",
                world.to_str().expect("utf-8"),
                "--listen",
                &host_ip.to_string(),
                "--tls-dir",
                tls.to_str().expect("utf-8"),
            ]
            .into_iter()
            .chain(timing().sim_args().iter().copied())
            .collect::<Vec<_>>(),
        )
        .expect("the simulator starts");
        RealCluster {
            bin: bin_dir,
            sim,
            bridge,
            host_ip,
            api_ip: host_ip,
            admin: PathBuf::new(),
            nodes: Vec::new(),
            procs: std::sync::Mutex::new(Vec::new()),
            undo,
            keeper: None,
            torn_down: std::sync::atomic::AtomicBool::new(false),
            dir,
        }
    }

    /// Once the control plane and the nodes run: keeps the provisioner's logs and waits until the
    /// cluster takes workloads (the default service account, every node Ready).
    fn ready(&mut self, node_names: &[&str]) {
        self.keeper = Some(keep_pod_logs(
            self.nodes.iter().map(|n| n.dir.join("log/pods")).collect(),
            "flexdisk-provisioner",
            self.dir.path().join("logs/pods"),
        ));
        self.wait_until(
            "the default service account",
            Duration::from_secs(60),
            |c| c.kubectl(&["get", "serviceaccount", "default"]).is_ok(),
        );
        for name in node_names {
            self.wait_until(
                &format!("node {name} Ready"),
                Duration::from_secs(120),
                |c| c.node_ready(name),
            );
        }
    }

    /// Whether the node's Ready condition is True.
    pub fn node_ready(&self, name: &str) -> bool {
        self.kubectl_json(&["get", "node", name])
            .ok()
            .is_some_and(|n| {
                n["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|x| x["type"] == "Ready" && x["status"] == "True")
            })
    }

    fn api(&self) -> String {
        format!("https://{}:6443", self.api_ip)
    }

    fn start_control_plane(&mut self, pki: &Pki, logs: &Path) {
        let d = self.dir.path().to_path_buf();
        let ip = self.host_ip.to_string();
        let etcd = spawn(
            "etcd",
            logs,
            Command::new(self.bin.join("etcd"))
                .arg("--data-dir")
                .arg(d.join("etcd"))
                .args(["--listen-client-urls", &format!("http://{ip}:2379")])
                .args(["--advertise-client-urls", &format!("http://{ip}:2379")])
                .args(["--listen-peer-urls", &format!("http://{ip}:2380")])
                .args([
                    "--initial-advertise-peer-urls",
                    &format!("http://{ip}:2380"),
                ])
                .args(["--initial-cluster", &format!("default=http://{ip}:2380")])
                .args(["--log-level", "warn"]),
        );
        self.procs.get_mut().expect("procs").push(etcd);
        let names: Vec<String> = vec![
            ip.clone(),
            "10.96.0.1".into(),
            "127.0.0.1".into(),
            "kubernetes".into(),
            "kubernetes.default".into(),
            "kubernetes.default.svc".into(),
            "kubernetes.default.svc.cluster.local".into(),
            "localhost".into(),
        ];
        let (api_cert, api_key) = pki.issue("apiserver", "kube-apiserver", &[], &names);
        let (kc_cert, kc_key) = pki.issue(
            "apiserver-kubelet-client",
            "kube-apiserver-kubelet-client",
            &["system:masters"],
            &[],
        );
        let sa_key = rcgen::KeyPair::generate().expect("sa key");
        let (sa_pub, sa_priv) = (d.join("pki/sa.pub"), d.join("pki/sa.key"));
        std::fs::write(&sa_pub, sa_key.public_key_pem()).expect("sa.pub");
        std::fs::write(&sa_priv, sa_key.serialize_pem()).expect("sa.key");
        // Who wrote what to claims and volumes, for the diagnostics: the API server's audit log
        // of those writes, with their bodies.
        let audit_policy = self.audit_policy();
        let apiserver = spawn(
            "kube-apiserver",
            logs,
            Command::new(self.bin.join("kube-apiserver"))
                .arg("--audit-policy-file")
                .arg(&audit_policy)
                .arg("--audit-log-path")
                .arg(logs.join("audit.log"))
                .args(["--etcd-servers", &format!("http://{ip}:2379")])
                .args(["--bind-address", &ip, "--advertise-address", &ip])
                .args(["--secure-port", "6443"])
                .arg("--tls-cert-file")
                .arg(&api_cert)
                .arg("--tls-private-key-file")
                .arg(&api_key)
                .arg("--client-ca-file")
                .arg(pki.ca())
                .arg("--kubelet-client-certificate")
                .arg(&kc_cert)
                .arg("--kubelet-client-key")
                .arg(&kc_key)
                .arg("--kubelet-certificate-authority")
                .arg(pki.ca())
                .arg("--service-account-key-file")
                .arg(&sa_pub)
                .arg("--service-account-signing-key-file")
                .arg(&sa_priv)
                .args([
                    "--service-account-issuer",
                    "https://kubernetes.default.svc.cluster.local",
                ])
                .args(["--service-cluster-ip-range", SERVICE_CIDR])
                .args(["--authorization-mode", "Node,RBAC"])
                // Nodes are reached at their address: no name of theirs resolves, and no lookup
                // may leave the machine.
                .args(["--kubelet-preferred-address-types", "InternalIP"])
                .args(["--enable-admission-plugins", "NodeRestriction"])
                .arg("--allow-privileged=true"),
        );
        self.procs.get_mut().expect("procs").push(apiserver);
        self.admin = pki.kubeconfig(
            "admin",
            &self.api(),
            "kubernetes-admin",
            &["system:masters"],
        );
        self.wait_until("the API server", Duration::from_secs(90), |c| {
            c.kubectl(&["get", "--raw", "/readyz"]).is_ok()
        });

        // Two kube-controller-managers, leader-elected as on a control plane of several hosts (the
        // lease kube-system/kube-controller-manager). Each runs as on its own host: a UTS namespace
        // named after it (the lease's holder identity is the hostname and a UUID, controllermanager.go
        // `id`), its own plugin dir with the driver, configured as an operator would (flexdisk.conf
        // beside the binary names the control plane's cloud config), its own driver state and log.
        let kcm_config = pki.kubeconfig(
            "controller-manager",
            &self.api(),
            "system:kube-controller-manager",
            &[],
        );
        for (i, name) in CONTROLLER_MANAGERS.iter().enumerate() {
            let suffix = name.trim_start_matches("kube-controller-manager");
            let plugins = d.join(format!("kcm-plugins{suffix}"));
            self.install_driver(
                &plugins,
                &self.sim.field("azureJson"),
                &d.join(format!("kcm-state{suffix}")),
                &logs.join(format!("{}.log", controller_driver_log(name))),
            );
            let kcm = spawn(
                name,
                logs,
                Command::new("unshare")
                    .args([
                        "--uts",
                        "--",
                        "sh",
                        "-c",
                        "hostname \"$0\" && exec \"$@\"",
                        name,
                    ])
                    .arg(self.bin.join("kube-controller-manager"))
                    .arg("--kubeconfig")
                    .arg(&kcm_config)
                    .arg("--authentication-kubeconfig")
                    .arg(&kcm_config)
                    .arg("--authorization-kubeconfig")
                    .arg(&kcm_config)
                    .args(["--bind-address", &ip, "--secure-port"])
                    .arg((10257 + 10 * i).to_string())
                    .arg("--flex-volume-plugin-dir")
                    .arg(&plugins)
                    .arg("--service-account-private-key-file")
                    .arg(&sa_priv)
                    .arg("--root-ca-file")
                    .arg(pki.ca())
                    .arg("--use-service-account-credentials=true")
                    .arg("--leader-elect=true")
                    .args(["--controllers", "*"])
                    .args(["--attach-detach-reconcile-sync-period", "10s"])
                    // A dead node is noticed in 20 s rather than 50.
                    .args(["--node-monitor-grace-period", "20s"])
                    .env("SSL_CERT_FILE", self.sim.field("caBundle")),
            );
            self.procs.get_mut().expect("procs").push(kcm);
            if i == 0 {
                // The first leads from the start; the other stands by.
                self.wait_until(
                    "a kube-controller-manager leading",
                    Duration::from_secs(90),
                    |c| c.controller_leader().is_some(),
                );
            }
        }
        let sched_config = pki.kubeconfig("scheduler", &self.api(), "system:kube-scheduler", &[]);
        let scheduler = spawn(
            "kube-scheduler",
            logs,
            Command::new(self.bin.join("kube-scheduler"))
                .arg("--kubeconfig")
                .arg(&sched_config)
                .arg("--authentication-kubeconfig")
                .arg(&sched_config)
                .arg("--authorization-kubeconfig")
                .arg(&sched_config)
                .args(["--bind-address", &ip, "--secure-port", "10259"])
                .arg("--leader-elect=false"),
        );
        self.procs.get_mut().expect("procs").push(scheduler);
    }

    /// The API server's audit policy (writes to claims and volumes, pods, and the attach/detach
    /// controller's node statuses, with their bodies), written
    /// into the cluster's dir; its path. Its log is `logs/audit.log` ([`RealCluster::writes`]).
    fn audit_policy(&self) -> PathBuf {
        let audit_policy = self.dir.path().join("audit-policy.json");
        std::fs::write(
            &audit_policy,
            json!({"apiVersion": "audit.k8s.io/v1", "kind": "Policy",
                "omitStages": ["RequestReceived"],
                "rules": [
                    {"level": "Request", "verbs": ["create", "update", "patch", "delete"],
                     "resources": [{"group": "", "resources": [
                        "persistentvolumes", "persistentvolumeclaims", "persistentvolumeclaims/status"]}]},
                    // For the waterfalls (waterfall.rs): pods, their bindings, evictions and
                    // kubelet's status writes, events, and the attach/detach controller's node
                    // status writes (not kubelet's: large and every 10 s).
                    {"level": "Request", "verbs": ["create", "update", "patch"],
                     "resources": [{"group": "", "resources": [
                        "pods", "pods/binding", "pods/eviction", "pods/status"]}]},
                    {"level": "Request", "verbs": ["create", "update", "patch"],
                     "resources": [{"group": "", "resources": ["events"]},
                                   {"group": "events.k8s.io", "resources": ["events"]}]},
                    {"level": "Request", "verbs": ["update", "patch"],
                     "users": ["system:serviceaccount:kube-system:attachdetach-controller"],
                     "resources": [{"group": "", "resources": ["nodes/status"]}]},
                    {"level": "None"}]})
            .to_string(),
        )
        .expect("audit policy");
        audit_policy
    }

    /// The driver and its conf in a FlexVolume plugin dir, as `flexdisk install` lays them out.
    fn install_driver(&self, plugins: &Path, cloud_config: &str, state: &Path, log: &Path) {
        let dir = plugins.join("flexdisk~azure-disk");
        std::fs::create_dir_all(&dir).expect("plugin dir");
        std::fs::copy(static_binaries().join("flexdisk"), dir.join("azure-disk")).expect("driver");
        std::fs::write(
            dir.join("flexdisk.conf"),
            format!(
                "FLEXDISK_CONFIG={cloud_config}\nFLEXDISK_STATE_DIR={}\nFLEXDISK_LOG={}\n",
                state.display(),
                log.display()
            ),
        )
        .expect("conf");
    }

    fn start_node(&mut self, pki: &Pki, logs: &Path, i: u8, name: &str) {
        let node = self.prepare_node(logs, i, name);
        let (d, ip) = (node.dir.clone(), node.ip);
        // kubelet.
        let kubeconfig = pki.kubeconfig(
            &format!("kubelet-{name}"),
            &self.api(),
            &format!("system:node:{name}"),
            &["system:nodes"],
        );
        let (serving_cert, serving_key) = pki.issue(
            &format!("kubelet-serving-{name}"),
            &format!("system:node:{name}"),
            &["system:nodes"],
            &[ip.to_string(), name.to_string()],
        );
        // localStorageCapacityIsolation stays at its default (true): without it kubelet's cAdvisor
        // collects no filesystem usage (pkg/kubelet/cadvisor/cadvisor_linux.go adds
        // DiskUsageMetrics only then), the stats summary fails on the root filesystem, and so do
        // the kubelet_volume_stats_* of every volume (collectors/volume_stats.go needs
        // ListPodStats).
        let config = json!({
            "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            "tlsCertFile": serving_cert, "tlsPrivateKeyFile": serving_key,
            "address": ip.to_string(), "port": 10250, "readOnlyPort": 0, "healthzPort": 0,
            "authentication": {"x509": {"clientCAFile": pki.ca()}, "webhook": {"enabled": true},
                               "anonymous": {"enabled": false}},
            "authorization": {"mode": "Webhook"},
            "cgroupDriver": "cgroupfs", "cgroupRoot": format!("/{}", node.netns),
            "cgroupsPerQOS": true, "enforceNodeAllocatable": [],
            "failCgroupV1": false, "failSwapOn": false,
            "containerRuntimeEndpoint": "unix:///run/containerd/containerd.sock",
            "resolvConf": "", "clusterDNS": [], "clusterDomain": "cluster.local",
            "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
            "evictionHard": {}, "evictionSoft": {}, "evictionPressureTransitionPeriod": "0s",
            "serializeImagePulls": false,
            "volumeStatsAggPeriod": "10s",
        });
        let (labels, provider_id) = cloud_identity(&node.imds);
        let mut config = config;
        config["providerID"] = json!(provider_id);
        if let Some(every) = node_status_frequency() {
            config["nodeStatusUpdateFrequency"] = json!(every);
            config["nodeStatusReportFrequency"] = json!("5m");
        }
        let config_file = d.join("kubelet-config.json");
        std::fs::write(&config_file, config.to_string()).expect("kubelet config");
        let kubelet = spawn(
            &format!("kubelet-{name}"),
            logs,
            node.command(self.bin.join("kubelet").to_str().expect("utf-8"))
                .arg("--config")
                .arg(&config_file)
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .args(["--hostname-override", name, "--node-ip", &ip.to_string()])
                .arg(format!("--node-labels={labels}"))
                .args(["--v", "2"])
                .envs(self.kubelet_env(&node)),
        );
        self.procs.get_mut().expect("procs").push(kubelet);
        self.nodes.push(node);
    }

    /// `PATH` with the components first (containerd finds its shim there, kubelet the CNI
    /// plugins' neighbours and `kubeadm`'s helpers).
    fn components_path(&self) -> String {
        format!(
            "{}:{}",
            self.bin.display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }

    /// A kubelet's environment: what is per node reaches the driver it runs as on a real node
    /// (IMDS's address), the CA of the simulator's login (a private cloud's CA), the components'
    /// `PATH`.
    fn kubelet_env(&self, node: &Node) -> [(&'static str, String); 3] {
        [
            ("IMDS_ENDPOINT", node.imds.clone()),
            ("SSL_CERT_FILE", self.sim.field("caBundle")),
            ("PATH", self.components_path()),
        ]
    }

    /// Node `i`'s address on the bridge.
    fn node_ip(&self, i: u8) -> Ipv4Addr {
        let [a, b, c, _] = self.host_ip.octets();
        Ipv4Addr::new(a, b, c, 10 + i)
    }

    /// Node `i`, `name` (a VM of the simulator's world), up to its services: its network and
    /// mount namespaces, directories, `/dev`, cgroups, cloud config and a running containerd with
    /// the test images. No kubelet yet.
    fn prepare_node(&mut self, logs: &Path, i: u8, name: &str) -> Node {
        let d = self.dir.path().join(format!("node-{name}"));
        let ip = self.node_ip(i);
        let netns = format!("{}-n{i}", self.bridge);
        let sim_root = PathBuf::from(self.sim.node_field(name, "root"));
        // The network: a veth from the bridge; the node's only route is the bridge's /24, plus
        // the API server's service address, forwarded to the API server as kube-proxy would.
        self.undo.push(format!(
            "for p in $(ip netns pids {netns}); do kill -9 $p; done; ip netns delete {netns}"
        ));
        sh(&format!(
            "ip netns add {netns}
             ip link add {b}h{i} type veth peer name eth0 netns {netns}
             ip link set {b}h{i} master {b} up
             ip -n {netns} addr add {ip}/24 dev eth0
             ip -n {netns} link set eth0 up
             ip -n {netns} link set lo up
             ip netns exec {netns} sysctl -qw net.ipv4.ip_forward=1
             ip netns exec {netns} sysctl -qw net.ipv4.conf.all.route_localnet=1
             ip netns exec {netns} iptables -t nat -A OUTPUT -d 10.96.0.1 -p tcp --dport 443 -j DNAT --to-destination {h}:6443
             ip netns exec {netns} iptables -t nat -A PREROUTING -d 10.96.0.1 -p tcp --dport 443 -j DNAT --to-destination {h}:6443",
            b = self.bridge,
            h = self.api_ip,
        ));
        // The node's own directories, and the device nodes a /dev needs beside the simulator's
        // disks.
        for sub in [
            "plugins",
            "kubelet",
            "containerd",
            "run-containerd",
            "flexdisk",
            "log",
            "etc",
            "cni",
            "pods-log",
            "netns",
            "etcd",
        ] {
            std::fs::create_dir_all(d.join(sub)).expect("node dir");
        }
        let dev = sim_root.join("dev");
        sh(&format!(
            "cd {dev}
             for x in null:1:3 zero:1:5 full:1:7 random:1:8 urandom:1:9 tty:5:0 kmsg:1:11; do
               n=${{x%%:*}}; r=${{x#*:}}; [ -e $n ] || mknod -m 666 $n c ${{r%%:*}} ${{r#*:}}
             done
             mkdir -p pts shm mqueue
             [ -e ptmx ] || ln -s pts/ptmx ptmx
             [ -e fd ] || ln -s /proc/self/fd fd
             [ -e stdin ] || ln -s /proc/self/fd/0 stdin
             [ -e stdout ] || ln -s /proc/self/fd/1 stdout
             [ -e stderr ] || ln -s /proc/self/fd/2 stderr
             # The block device of the host's root filesystem, where kubelet's and containerd's
             # dirs are: kubelet's stats (cAdvisor) look it up in /dev.
             root=$(awk '$5 == \"/\" {{for (i = 7; $i != \"-\"; i++); print $3, $(i+2)}}' /proc/self/mountinfo | tail -1)
             majmin=${{root%% *}}; src=${{root#* }}
             case $src in /dev/*) n=${{src#/dev/}}; [ -e $n ] || mknod -m 660 $n b ${{majmin%%:*}} ${{majmin#*:}};; esac",
            dev = dev.display()
        ));
        std::fs::copy(
            self.sim.node_field(name, "azureJson"),
            d.join("etc/azure.json"),
        )
        .expect("azure.json");
        // cgroup v1 (this machine's): the node's own root in every hierarchy. Going, it takes
        // what the node's containers left running (their processes live in pod network
        // namespaces, which the node's netns cleanup does not reach).
        self.undo.push(format!(
            "for h in /sys/fs/cgroup/*/; do find \"${{h}}{netns}\" -name cgroup.procs -exec cat {{}} + 2>/dev/null; done | sort -u | xargs -r kill -9 2>/dev/null; sleep 0.2
             for h in /sys/fs/cgroup/*/; do find \"${{h}}{netns}\" -depth -type d -exec rmdir {{}} + 2>/dev/null; done; true"
        ));
        sh(&format!(
            "for h in /sys/fs/cgroup/*/; do [ -d \"$h\" ] && mkdir -p \"${{h}}{}\" || true; done",
            netns
        ));
        let node = Node {
            name: name.to_string(),
            ip,
            netns,
            mntns: d.join("mnt-ns"),
            dir: d.clone(),
            sim_root: sim_root.clone(),
            imds: self.sim.node_field(name, "imds"),
        };
        self.mount_node(&node);
        // The driver comes with the DaemonSet (`install_flexdisk`); what is per node reaches it as
        // on a real node: IMDS's address (IMDS_ENDPOINT, in kubelet's environment) and the CA of
        // the simulator's login (SSL_CERT_FILE, a private cloud's CA).

        // containerd: its own root, state and socket; CNI: a bridge of pod addresses per node.
        let cni = json!({"cniVersion": "1.0.0", "name": "pods", "plugins": [
            {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": format!("10.88.{i}.0/24")}]],
                      "routes": [{"dst": "0.0.0.0/0"}]}},
            {"type": "portmap", "capabilities": {"portMappings": true}}]});
        std::fs::write(d.join("cni/10-pods.conflist"), cni.to_string()).expect("cni");
        let containerd_toml = d.join("containerd.toml");
        std::fs::write(
            &containerd_toml,
            format!(
                "version = 3
root = \"/var/lib/containerd\"
state = \"/run/containerd\"
[grpc]
  address = \"/run/containerd/containerd.sock\"
[plugins.'io.containerd.cri.v1.images'.pinned_images]
  sandbox = \"{PAUSE_IMAGE}\"
[plugins.'io.containerd.cri.v1.runtime']
  # This machine grants root no CAP_SYS_RESOURCE: OOM scores may only go up.
  restrict_oom_score_adj = true
[plugins.'io.containerd.cri.v1.runtime'.cni]
  bin_dirs = [\"/usr/lib/cni\"]
  conf_dir = \"/etc/cni/net.d\"
[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
  SystemdCgroup = false
"
            ),
        )
        .expect("containerd.toml");
        let containerd = spawn(
            &format!("containerd-{name}"),
            logs,
            node.command(self.bin.join("containerd").to_str().expect("utf-8"))
                .arg("--config")
                .arg(&containerd_toml)
                .env("PATH", self.components_path()),
        );
        self.procs.get_mut().expect("procs").push(containerd);
        self.wait_until(
            &format!("containerd of {name}"),
            Duration::from_secs(30),
            |_| d.join("run-containerd/containerd.sock").exists(),
        );
        for image in images(&self.dir.path().join("images")) {
            import_into(&node, &self.bin, &image);
        }
        node
    }

    /// The node's mount table as a boot makes it: a new mount namespace (held by a process of the
    /// node's network namespace, so that a power-off takes it and every mount in it) with the
    /// node's directories, its VM's `/dev` and SCSI tree bound where a node has them. `node.mntns`
    /// is a link to the namespace, renewed here, so that components started again after a boot
    /// (their command lines name the link) enter the new one.
    fn mount_node(&self, node: &Node) {
        let (name, d, sim_root) = (&node.name, &node.dir, &node.sim_root);
        // (A namespace bound to a file cannot be made from inside another private mount
        // namespace, as CI's: a process holds it.)
        let holder = format!("mntns-{name}");
        let known = self
            .procs
            .lock()
            .expect("procs")
            .iter()
            .any(|p| p.name == holder);
        if known {
            self.kill(&holder);
            self.restart(&holder);
        } else {
            let p = spawn(
                &holder,
                &self.dir.path().join("logs"),
                Command::new("nsenter")
                    .arg(format!("--net=/run/netns/{}", node.netns))
                    .args([
                        "--",
                        "unshare",
                        "--mount",
                        "--propagation",
                        "slave",
                        "sleep",
                        "infinity",
                    ]),
            );
            self.procs.lock().expect("procs").push(p);
        }
        let pid = self
            .procs
            .lock()
            .expect("procs")
            .iter()
            .find(|p| p.name == holder)
            .map(|p| p.child.id())
            .expect("the holder");
        let ns = PathBuf::from(format!("/proc/{pid}/ns/mnt"));
        self.wait_until(
            &format!("the mount namespace of {name}"),
            Duration::from_secs(10),
            |_| {
                let mine = std::fs::read_link("/proc/self/ns/mnt").ok();
                std::fs::read_link(&ns)
                    .ok()
                    .is_some_and(|ns| Some(ns) != mine)
            },
        );
        // Linked once unshared: until then the holder's namespace is the host's.
        let _ = std::fs::remove_file(&node.mntns);
        std::os::unix::fs::symlink(&ns, &node.mntns).expect("the mount namespace's link");
        let binds = [
            (sim_root.join("dev"), PathBuf::from("/dev")),
            (
                sim_root.join("sys/class/scsi_host"),
                PathBuf::from("/sys/class/scsi_host"),
            ),
            (
                d.join("plugins"),
                PathBuf::from("/usr/libexec/kubernetes/kubelet-plugins/volume/exec"),
            ),
            (d.join("kubelet"), PathBuf::from("/var/lib/kubelet")),
            (d.join("containerd"), PathBuf::from("/var/lib/containerd")),
            (d.join("run-containerd"), PathBuf::from("/run/containerd")),
            (d.join("flexdisk"), PathBuf::from("/var/lib/flexdisk")),
            (d.join("log"), PathBuf::from("/var/log")),
            (d.join("etc"), PathBuf::from("/etc/kubernetes")),
            (d.join("cni"), PathBuf::from("/etc/cni/net.d")),
            // The pods' network namespaces: the node's own, gone with it.
            (d.join("netns"), PathBuf::from("/run/netns")),
            // etcd's data on a kubeadm control-plane node (its `etcd.local.dataDir` default):
            // bound, so that `kubeadm init` never writes the host's.
            (d.join("etcd"), PathBuf::from("/var/lib/etcd")),
        ];
        // (sysfs stays the host's: a fresh one would hide the cgroup hierarchies mounted in it.)
        let mut script = String::new();
        for (from, to) in &binds {
            // sysfs has a SCSI tree only where the kernel has SCSI: no tree, nothing to cover.
            let optional = to.starts_with("/sys");
            script.push_str(&format!(
                "{guard}mkdir -p {to} && mount --bind {from} {to}{end}\n",
                guard = if optional {
                    format!("if [ -d {} ]; then ", to.display())
                } else {
                    String::new()
                },
                end = if optional { "; fi" } else { "" },
                from = from.display(),
                to = to.display()
            ));
        }
        // The node's SCSI bus is its VM's (the simulator's tree, whose devices' `rescan` leads to
        // the simulator's storage bus): the driver finds data disks and rescans grown ones there,
        // never in the host's sysfs. The host's other buses stay in view (cAdvisor reads
        // `/sys/bus/cpu`): a tmpfs over `/sys/bus` holds a bind of each.
        let host_bus = d.join("host-sys-bus");
        std::fs::create_dir_all(&host_bus).expect("host bus dir");
        script.push_str(&format!(
            "mount --bind /sys/bus {host}
             mount -t tmpfs -o mode=0755 sysbus /sys/bus
             for b in {host}/*; do
               n=${{b##*/}}; [ \"$n\" = scsi ] && continue
               mkdir /sys/bus/$n && mount --bind $b /sys/bus/$n
             done
             mkdir /sys/bus/scsi && mount --bind {scsi} /sys/bus/scsi
             umount {host}\n",
            host = host_bus.display(),
            scsi = sim_root.join("sys/bus/scsi").display()
        ));
        script.push_str(
            "mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts
             mount -t tmpfs shm /dev/shm
             mount --make-rshared /var/lib/kubelet\n",
        );
        run(node.command("sh").args(["-euc", &script]));
    }

    /// flexdisk as users install it with kustomize: its two images as they ship
    /// (`install/build-images`) in every node's containerd, then `kubectl apply -k` of an overlay
    /// of `install/` that adds the cloud config Secret (the simulator's, with its CA) and never
    /// pulls. Waits for the driver on every node and a leading provisioner.
    pub fn install_flexdisk(&self) {
        self.install_flexdisk_with(Installer::Kustomize);
    }

    /// flexdisk installed by `how` (see [`Installer`]), then the same waits.
    pub fn install_flexdisk_with(&self, how: Installer) {
        let Shipped {
            driver,
            provisioner,
            ..
        } = shipped();
        for image in [driver, provisioner] {
            self.import_image(image);
        }
        let install = Path::new(env!("CARGO_MANIFEST_DIR")).join("../install");
        match how {
            Installer::Kustomize => self.apply_install_overlay(&install),
            Installer::Helm => self.helm_install(&install),
        }
        for node in &self.nodes {
            // The installer writes the binary last.
            let conf = node.dir.join("plugins/flexdisk~azure-disk/azure-disk");
            self.wait_until(
                &format!("the driver installed on {}", node.name),
                Duration::from_secs(120),
                |_| conf.exists(),
            );
        }
        self.wait_until("a leading provisioner", Duration::from_secs(120), |c| {
            c.kubectl_json(&[
                "-n",
                "flexdisk-system",
                "get",
                "deployment",
                "flexdisk-provisioner",
            ])
            .ok()
            .is_some_and(|d| d["status"]["readyReplicas"].as_u64().unwrap_or(0) >= 1)
        });
    }

    /// `kubectl apply -k` of an overlay of `install/`: the cloud config Secret (the simulator's
    /// config and its CA), images never pulled, the provisioner's debug log.
    fn apply_install_overlay(&self, install: &Path) {
        let overlay = self.dir.path().join("install-overlay");
        std::fs::create_dir_all(&overlay).expect("overlay");
        std::fs::copy(self.sim.field("azureJson"), overlay.join("azure.json")).expect("azure.json");
        std::fs::copy(self.sim.field("caBundle"), overlay.join("ca.pem")).expect("ca.pem");
        let never = |kind: &str, name: &str| {
            json!({"target": {"kind": kind, "name": name},
                "patch": json!([{"op": "replace", "path": "/spec/template/spec/containers/0/imagePullPolicy", "value": "Never"}]).to_string()})
        };
        let kustomization = json!({
            "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
            // kustomize takes bases only by relative path.
            "resources": [relative(&overlay, &install.canonicalize().expect("install/"))],
            "secretGenerator": [{"name": "flexdisk-cloud-config", "namespace": "flexdisk-system",
                "files": ["azure.json", "ca.pem"], "options": {"disableNameSuffixHash": true}}],
            "patches": [
                never("DaemonSet", "flexdisk-node"),
                never("Deployment", "flexdisk-provisioner"),
                {"target": {"kind": "Deployment", "name": "flexdisk-provisioner"},
                 "patch": json!([{"op": "add", "path": "/spec/template/spec/containers/0/env/-",
                     "value": {"name": "SSL_CERT_FILE", "value": "/etc/flexdisk/ca.pem"}}]).to_string()},
                // Every ARM request and decision of ours in the logs, for the diagnostics.
                {"target": {"kind": "Deployment", "name": "flexdisk-provisioner"},
                 "patch": json!([
                     {"op": "test", "path": "/spec/template/spec/containers/0/env/2/name", "value": "LOG"},
                     {"op": "replace", "path": "/spec/template/spec/containers/0/env/2/value",
                      "value": "info,flexdisk_provisioner=debug,flexdisk_azure=debug"}]).to_string()},
            ],
        });
        std::fs::write(
            overlay.join("kustomization.yaml"),
            kustomization.to_string(),
        )
        .expect("kustomization");
        self.kubectl(&["apply", "-k", overlay.to_str().expect("utf-8")])
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// `helm install` of the chart (`install/`), as the README tells users: the namespace and the
    /// cloud config Secret first (the simulator's config and its CA), then the chart with values
    /// a user could give (images never pulled, the CA named by `provisioner.extraEnv`, the
    /// provisioner's debug log).
    fn helm_install(&self, install: &Path) {
        let secret = self.dir.path().join("cloud-config");
        std::fs::create_dir_all(&secret).expect("dir");
        std::fs::copy(self.sim.field("azureJson"), secret.join("azure.json")).expect("azure.json");
        std::fs::copy(self.sim.field("caBundle"), secret.join("ca.pem")).expect("ca.pem");
        self.kubectl(&["create", "namespace", "flexdisk-system"])
            .unwrap_or_else(|e| panic!("{e}"));
        self.kubectl(&[
            "-n",
            "flexdisk-system",
            "create",
            "secret",
            "generic",
            "flexdisk-cloud-config",
            &format!("--from-file={}", secret.display()),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        let values = self.dir.path().join("values.json");
        std::fs::write(
            &values,
            json!({
                "images": {"driver": {"pullPolicy": "Never"}, "provisioner": {"pullPolicy": "Never"}},
                "provisioner": {
                    "logLevel": "info,flexdisk_provisioner=debug,flexdisk_azure=debug",
                    "extraEnv": [{"name": "SSL_CERT_FILE", "value": "/etc/flexdisk/ca.pem"}]},
            })
            .to_string(),
        )
        .expect("values");
        let home = self.dir.path().join("helm");
        run(Command::new(helm())
            // Helm's cache, config and data in the cluster's dir, not the user's home.
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_DATA_HOME", home.join("data"))
            .arg("install")
            .arg("flexdisk")
            .arg(install)
            .args(["--namespace", "flexdisk-system", "--kubeconfig"])
            .arg(&self.admin)
            .arg("--values")
            .arg(&values));
    }

    /// An OCI archive imported into every node's containerd (no registry: pods never pull).
    fn import_image(&self, archive: &Path) {
        for node in &self.nodes {
            import_into(node, &self.bin, archive);
        }
    }

    /// Imports into every node the driver image `ghcr.io/flexdisk/flexdisk:<tag>`, its binary
    /// this checkout's with `marker` appended: another file, as an upgrade's is, and a test can
    /// tell from a node's plugin dir which of the two it has. The path of that binary.
    pub fn import_driver_image(&self, tag: &str, marker: &str) -> PathBuf {
        let images = self.dir.path().join("images");
        let binary = images.join(format!("flexdisk-{tag}"));
        let mut elf = std::fs::read(static_binaries().join("flexdisk")).expect("driver");
        elf.extend_from_slice(marker.as_bytes());
        std::fs::write(&binary, elf).expect("driver");
        // Executable, as the image's entrypoint must be (runc: "exec: permission denied").
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755))
            .expect("driver mode");
        self.import_image(&driver_image(&images, tag, &binary));
        binary
    }

    /// kubectl as the cluster's admin; stdout, or what went wrong.
    /// The simulated Azure's record of disk `name` (`zones`, `attachedTo` with full VM IDs, …).
    pub fn disk_record(&self, name: &str) -> Option<Value> {
        let (_, state) = self.sim.control("GET", "/state", None).expect("state");
        state["disks"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(_, d)| d)
            .find(|d| d["name"] == name)
            .cloned()
    }

    /// `kubectl apply -f` of one of the project's examples (`examples/FILE`), as a user applies it.
    pub fn apply_example(&self, file: &str) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../examples")
            .join(file);
        self.kubectl(&["apply", "-f", path.to_str().expect("utf-8")])
            .unwrap_or_else(|e| panic!("examples/{file}: {e}"));
    }

    pub fn kubectl(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new(self.bin.join("kubectl"))
            .arg("--kubeconfig")
            .arg(&self.admin)
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).to_string())
        } else {
            Err(format!(
                "kubectl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    pub fn kubectl_json(&self, args: &[&str]) -> Result<Value, String> {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        let out = self.kubectl(&a)?;
        serde_json::from_str(&out).map_err(|e| format!("{e}: {out}"))
    }

    /// `kubectl apply` of these objects.
    pub fn apply(&self, objects: &[Value]) {
        let mut child = Command::new(self.bin.join("kubectl"))
            .arg("--kubeconfig")
            .arg(&self.admin)
            .args(["apply", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl");
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().expect("stdin");
            let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
            stdin.write_all(list.to_string().as_bytes()).expect("write");
        }
        let out = child.wait_with_output().expect("kubectl");
        assert!(
            out.status.success(),
            "kubectl apply: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Polls until `ok`, or panics after `limit` with the components' last log lines.
    pub fn wait_until(&self, what: &str, limit: Duration, ok: impl Fn(&RealCluster) -> bool) {
        let deadline = Instant::now() + limit;
        while !ok(self) {
            if Instant::now() > deadline {
                panic!("timed out waiting for {what}\n{}", self.diagnostics());
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The tail of every component's log.
    pub fn diagnostics(&self) -> String {
        let mut out = String::new();
        // What Azure and the API server hold: the disks and operations, the claims and volumes.
        if let Ok((_, state)) = self.sim.control("GET", "/state", None) {
            out.push_str("--- simulated Azure\n");
            for d in state["disks"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(_, d)| d)
            {
                out.push_str(&format!(
                    "disk {} {} GiB {} attached to {}\n",
                    d["name"], d["sizeGb"], d["provisioningState"], d["attachedTo"]
                ));
            }
            for o in state["operations"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(_, o)| o)
            {
                out.push_str(&format!(
                    "operation {} {} {}\n",
                    o["kind"], o["status"], o["error"]
                ));
            }
        }
        // What the simulated Azure was asked about disks, and by whom (the last requests).
        if let Ok((_, journal)) = self.sim.control("GET", "/requests", None) {
            let entries: Vec<Value> = journal
                .as_array()
                .into_iter()
                .flatten()
                .filter(|e| {
                    e["path"]
                        .as_str()
                        .is_some_and(|p| p.contains("/disks/") || p.contains("/DiskOperations/"))
                })
                .cloned()
                .collect();
            out.push_str(&format!(
                "--- ARM requests about disks ({} in all, the last 150)\n",
                entries.len()
            ));
            for e in &entries[entries.len().saturating_sub(150)..] {
                out.push_str(&format!(
                    "{} {} {} {} {} size {} state {}\n",
                    e["at"],
                    e["peer"],
                    e["method"],
                    e["path"],
                    e["status"],
                    e["diskSizeGb"],
                    e["state"]
                ));
            }
        }
        // The provisioner runs as pods: their container logs, kept as they were written (an
        // evicted pod's logs go with it).
        let mut kept: Vec<PathBuf> = std::fs::read_dir(self.dir.path().join("logs/pods"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect();
        kept.sort();
        for log in kept {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out.push_str(&format!(
                "--- {} (the last 200 lines)\n{}\n",
                log.display(),
                lines[lines.len().saturating_sub(200)..].join("\n")
            ));
        }
        // Who wrote to claims and volumes (the API server's audit log).
        let writes: Vec<String> = self
            .writes()
            .iter()
            .map(|e| {
                let mut body = e["requestObject"].to_string();
                body.truncate(400);
                format!(
                    "{} {} {} {} {}/{} {} {}: {}",
                    e["requestReceivedTimestamp"],
                    e["user"]["username"],
                    e["userAgent"],
                    e["verb"],
                    e["objectRef"]["resource"],
                    e["objectRef"]["subresource"],
                    e["objectRef"]["name"],
                    e["responseStatus"]["code"],
                    body
                )
            })
            .collect();
        out.push_str(&format!(
            "--- writes to claims and volumes ({} in all, the last 80)\n{}\n",
            writes.len(),
            writes[writes.len().saturating_sub(80)..].join("\n")
        ));
        if let Ok(list) = self.kubectl_json(&["get", "pods", "-A"]) {
            out.push_str("--- pods\n");
            for p in list["items"].as_array().into_iter().flatten() {
                out.push_str(&format!(
                    "{}/{} on {} {} deleting {}\n",
                    p["metadata"]["namespace"],
                    p["metadata"]["name"],
                    p["spec"]["nodeName"],
                    p["status"]["phase"],
                    p["metadata"]["deletionTimestamp"]
                ));
            }
        }
        // Who did what to the claims and volumes (the controllers' events).
        if let Ok(list) = self.kubectl_json(&["get", "events", "-A", "--sort-by=.lastTimestamp"]) {
            out.push_str("--- events of claims and volumes\n");
            for e in list["items"].as_array().into_iter().flatten().filter(|e| {
                matches!(
                    e["involvedObject"]["kind"].as_str(),
                    Some("PersistentVolumeClaim" | "PersistentVolume")
                )
            }) {
                out.push_str(&format!(
                    "{} {} {} {} {}: {}\n",
                    e["lastTimestamp"],
                    e["involvedObject"]["name"],
                    e["reportingComponent"],
                    e["source"]["component"],
                    e["reason"],
                    e["message"]
                ));
            }
        }
        for kind in ["pvc", "pv"] {
            if let Ok(list) = self.kubectl_json(&["get", kind, "-A"]) {
                out.push_str(&format!("--- {kind}\n"));
                for o in list["items"].as_array().into_iter().flatten() {
                    out.push_str(&format!(
                        "{} spec {} status {}\n",
                        o["metadata"]["name"],
                        o["spec"]
                            .get("resources")
                            .or(o["spec"].get("capacity"))
                            .unwrap_or(&Value::Null),
                        o["status"]
                    ));
                }
            }
        }
        for p in self.procs.lock().expect("procs").iter() {
            let text = std::fs::read_to_string(&p.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(25)..];
            out.push_str(&format!(
                "--- {} ({})\n{}\n",
                p.name,
                p.log.display(),
                tail.join("\n")
            ));
        }
        // The static pods' container logs (a kubeadm control plane: etcd, kube-apiserver,
        // kube-controller-manager, kube-scheduler), which no process of ours writes.
        for node in &self.nodes {
            let mut logs: Vec<PathBuf> = std::fs::read_dir(node.dir.join("log/pods"))
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("kube-system_"))
                .flat_map(|pod| {
                    std::fs::read_dir(pod.path())
                        .into_iter()
                        .flatten()
                        .flatten()
                })
                .flat_map(|c| std::fs::read_dir(c.path()).into_iter().flatten().flatten())
                .map(|e| e.path())
                .collect();
            logs.sort();
            for log in logs {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                out.push_str(&format!(
                    "--- {} (the last 30 lines)\n{}\n",
                    log.display(),
                    lines[lines.len().saturating_sub(30)..].join("\n")
                ));
            }
        }
        // The driver's own logs: kube-controller-manager's calls and each node's.
        let mut drivers: Vec<PathBuf> = CONTROLLER_MANAGERS
            .iter()
            .map(|k| {
                self.dir
                    .path()
                    .join(format!("logs/{}.log", controller_driver_log(k)))
            })
            .collect();
        drivers.extend(self.nodes.iter().map(|n| n.dir.join("log/flexdisk.log")));
        for log in drivers {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out.push_str(&format!(
                "--- {} (the last 80 lines)\n{}\n",
                log.display(),
                lines[lines.len().saturating_sub(80)..].join("\n")
            ));
        }
        out
    }

    /// The API server's audit events of writes to claims and volumes, oldest first (user, verb,
    /// object, answer and request body of each).
    pub fn writes(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.path().join("logs/audit.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .collect()
    }

    /// SIGKILLs a component (`kube-controller-manager`, `kubelet-<node>`…) with every process it
    /// started (its process group: the driver calls it is waiting for), as a crash would.
    pub fn kill(&self, name: &str) {
        let mut procs = self.procs.lock().expect("procs");
        let p = procs
            .iter_mut()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no component {name}"));
        // A component already reaped has no group left to signal: its id may be another's now.
        if !matches!(p.child.try_wait(), Ok(None)) {
            return;
        }
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(p.child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = p.child.kill();
        let _ = p.child.wait();
    }

    /// Starts a killed component again, as it was started.
    pub fn restart(&self, name: &str) {
        let mut procs = self.procs.lock().expect("procs");
        let p = procs
            .iter_mut()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no component {name}"));
        let mut cmd = Command::new(&p.program);
        cmd.args(&p.args).envs(p.envs.iter().map(|(k, v)| (k, v)));
        p.child = start_logged(&mut cmd, &p.log);
    }

    /// Starts again every component that is not running (killed by a scenario that then failed
    /// before restarting it); their names.
    pub fn revive(&self) -> Vec<String> {
        let dead: Vec<String> = {
            let mut procs = self.procs.lock().expect("procs");
            procs
                .iter_mut()
                .filter_map(|p| (!matches!(p.child.try_wait(), Ok(None))).then(|| p.name.clone()))
                .collect()
        };
        // A node whose mount namespace went was powered off: it boots, its components with it.
        let off: Vec<&str> = self
            .nodes
            .iter()
            .filter(|n| dead.contains(&format!("mntns-{}", n.name)))
            .map(|n| n.name.as_str())
            .collect();
        for node in &off {
            self.boot(node);
        }
        for name in &dead {
            let booted = off.iter().any(|node| {
                [
                    format!("mntns-{node}"),
                    format!("containerd-{node}"),
                    format!("kubelet-{node}"),
                ]
                .contains(name)
            });
            if !booted {
                self.restart(name);
            }
        }
        dead
    }

    /// The node loses power: every process of the node is SIGKILLed — kubelet, containerd, and
    /// the pods' containers, which live in network namespaces of their own but in the node's
    /// cgroups (kubelet's `cgroupRoot`) — frozen first, so that none writes after the others are
    /// gone. Azure still shows its disks attached to its VM. On one machine the kernel is shared:
    /// a filesystem the node had mounted lives until its last process is gone, so a container left
    /// running would keep it alive, and writing (XFS's log worker flushes and covers its log),
    /// while another node mounts the same disk — two filesystems over one disk, which corrupts it
    /// (seen: a moved StatefulSet pod found its volume without the bytes it had synced). Once all
    /// are dead the kernel unmounts it, cleanly, which a real power cut does not do; what was
    /// synced is on the disk either way.
    pub fn power_off(&self, node: &str) {
        let n = self.nodes.iter().find(|n| n.name == node).expect("node");
        let freezer = format!("/sys/fs/cgroup/freezer/{}", n.netns);
        let freeze = |state: &str| {
            if Path::new(&freezer).exists() {
                let _ = std::fs::write(format!("{freezer}/freezer.state"), state);
            }
        };
        freeze("FROZEN");
        self.kill(&format!("kubelet-{node}"));
        self.kill(&format!("containerd-{node}"));
        sh(&format!(
            "for p in $(ip netns pids {}); do kill -9 $p; done",
            n.netns
        ));
        // Every process in the node's cgroups, every hierarchy.
        let survivors = || -> Vec<i32> {
            sh(&format!(
                "for h in /sys/fs/cgroup/*/; do find \"${{h}}{}\" -name cgroup.procs -exec cat {{}} + 2>/dev/null; done | sort -u",
                n.netns
            ))
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
        };
        eprintln!(
            "{node} powers off: {} processes of its pods killed with it",
            survivors().len()
        );
        self.wait_until(
            &format!("every process of {node} dead"),
            Duration::from_secs(30),
            |_| {
                let left = survivors();
                freeze("FROZEN");
                for pid in &left {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(*pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                // A frozen task takes its SIGKILL when thawed (cgroup v1 freezer).
                freeze("THAWED");
                left.is_empty()
            },
        );
        freeze("THAWED");
    }

    /// A powered-off node boots: what lived in memory is gone — `/run` (containerd's state, the
    /// pods' network namespace files) and the pods' cgroups — while its disks keep kubelet's and
    /// containerd's directories; it gets a new mount table (`mount_node`: no volume mounted), then
    /// containerd and kubelet start as the node's services would. Its VM's data disks stay
    /// attached and show at the same LUNs, as they do across a guest reboot on Azure.
    pub fn boot(&self, node: &str) {
        let n = self.nodes.iter().find(|n| n.name == node).expect("node");
        let alive: Vec<String> = {
            let mut procs = self.procs.lock().expect("procs");
            procs
                .iter_mut()
                .filter(|p| p.name.ends_with(&format!("-{node}")))
                .filter_map(|p| matches!(p.child.try_wait(), Ok(None)).then(|| p.name.clone()))
                .collect()
        };
        assert!(
            alive.is_empty(),
            "{node} boots only once off (power_off), yet {alive:?} run"
        );
        sh(&format!(
            "rm -rf {d}/run-containerd/* {d}/netns/*
             for h in /sys/fs/cgroup/*/; do [ -d \"${{h}}{netns}\" ] && find \"${{h}}{netns}\" -mindepth 1 -depth -type d -exec rmdir {{}} + 2>/dev/null; done; true",
            d = n.dir.display(),
            netns = n.netns
        ));
        self.mount_node(n);
        self.restart(&format!("containerd-{node}"));
        self.wait_until(
            &format!("containerd of {node}"),
            Duration::from_secs(30),
            |_| n.dir.join("run-containerd/containerd.sock").exists(),
        );
        self.restart(&format!("kubelet-{node}"));
    }

    /// The kube-controller-manager holding the lease, by component name.
    pub fn controller_leader(&self) -> Option<String> {
        let lease = self
            .kubectl_json(&[
                "-n",
                "kube-system",
                "get",
                "lease",
                "kube-controller-manager",
            ])
            .ok()?;
        let holder = lease["spec"]["holderIdentity"].as_str()?;
        let host = holder.split('_').next()?;
        CONTROLLER_MANAGERS
            .iter()
            .find(|k| **k == host)
            .map(|k| k.to_string())
    }

    /// What the driver logged of the calls of every kube-controller-manager.
    pub fn controller_driver_logs(&self) -> String {
        CONTROLLER_MANAGERS
            .iter()
            .map(|k| self.log(&controller_driver_log(k)))
            .collect()
    }

    /// The log of one component (e.g. `kubelet-<node>`), whole.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join("logs").join(format!("{name}.log")))
            .unwrap_or_default()
    }
}

impl RealCluster {
    /// Stops every component — nodes first (kubelet, then containerd), then the control plane,
    /// last started first — and the simulator, and undoes what was set up on the host. Once:
    /// on drop, or earlier from a signal handler (so that a test interrupted by a timeout or
    /// Ctrl-C leaves no cluster, bridge, mount or loop device behind).
    pub fn teardown(&self) {
        if self
            .torn_down
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return;
        }
        let mut procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
        for p in procs.iter_mut().rev() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(p.child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = p.child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
        drop(procs);
        // Whatever the nodes left running (container shims) and mounted goes with them.
        for cmd in self.undo.iter().rev() {
            let _ = Command::new("sh").args(["-c", cmd]).output();
        }
        if let Some(pid) = self.sim.pid() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            // Its handle reaps it; here it is only waited for, so that its disks are let go.
            let running = || {
                std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| !s.contains(") Z "))
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && running() {
                std::thread::sleep(Duration::from_millis(50));
            }
            // A simulator deaf to SIGTERM (a blocked signal mask) must not hang the run in its
            // handle's wait.
            if running() {
                eprintln!("the simulator ({pid}) did not stop in 10 s after SIGTERM: SIGKILLed");
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

impl Drop for RealCluster {
    fn drop(&mut self) {
        drop(self.keeper.take());
        self.teardown();
    }
}

/// A thread that keeps copies of the container logs of pods whose name contains `pod` (from
/// the nodes' `/var/log/pods`, `pods_dirs`) in `into`, as they grow: kubelet deletes a pod's
/// logs with the pod, and an evicted or restarted provisioner's log is what explains what it
/// did. Stops when the sender it returns is dropped.
fn keep_pod_logs(pods_dirs: Vec<PathBuf>, pod: &str, into: PathBuf) -> std::sync::mpsc::Sender<()> {
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let pod = pod.to_string();
    std::thread::spawn(move || loop {
        let _ = std::fs::create_dir_all(&into);
        for pods in &pods_dirs {
            for dir in std::fs::read_dir(pods).into_iter().flatten().flatten() {
                let name = dir.file_name().to_string_lossy().to_string();
                if !name.contains(&pod) {
                    continue;
                }
                for container in std::fs::read_dir(dir.path())
                    .into_iter()
                    .flatten()
                    .flatten()
                {
                    for log in std::fs::read_dir(container.path())
                        .into_iter()
                        .flatten()
                        .flatten()
                    {
                        let to = into.join(format!(
                            "{name}-{}-{}",
                            container.file_name().to_string_lossy(),
                            log.file_name().to_string_lossy()
                        ));
                        let len = |p: &Path| std::fs::metadata(p).map(|m| m.len()).ok();
                        if len(&log.path()) != len(&to) {
                            let _ = std::fs::copy(log.path(), &to);
                        }
                    }
                }
            }
        }
        if !matches!(
            stopped.recv_timeout(Duration::from_millis(500)),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout)
        ) {
            return;
        }
    });
    stop
}

/// `to` as a path relative to the directory `from` (both absolute).
/// What cloud-controller-manager's node controller gives the node of a VM, read from the VM's
/// instance metadata as cloud-provider-azure reads it: the zone label is `<location>-<zone>` for a
/// VM in a zone and its fault domain outside zones (`GetZone`, pkg/provider/azure_zones.go; the
/// beta labels too), the region its location, the instance type its size, and
/// `spec.providerID` `azure://` + its resource ID. There is no cloud-controller-manager here, so
/// kubelet registers the node with them (`--node-labels`, `providerID`; kubelet may set these
/// keys: `kubeletLabels`, k8s.io/kubelet pkg/apis/well_known_labels.go): the Node object is the
/// one flexdisk and the scheduler would see on Azure. Returns the `--node-labels` value.
fn cloud_identity(imds: &str) -> (String, String) {
    let http = reqwest::blocking::Client::new();
    let compute: Value = http
        .get(format!(
            "{imds}/metadata/instance/compute?api-version=2021-02-01"
        ))
        .header("Metadata", "true")
        .send()
        .and_then(|r| r.error_for_status())
        .and_then(|r| r.json())
        .unwrap_or_else(|e| panic!("the VM's instance metadata at {imds}: {e}"));
    let text = |k: &str| compute[k].as_str().unwrap_or_default().to_string();
    let location = text("location").to_ascii_lowercase();
    let zone = match text("zone") {
        z if z.is_empty() => text("platformFaultDomain"),
        z => format!("{location}-{z}"),
    };
    let size = text("vmSize");
    let labels = [
        ("topology.kubernetes.io/zone", zone.as_str()),
        ("failure-domain.beta.kubernetes.io/zone", &zone),
        ("topology.kubernetes.io/region", &location),
        ("failure-domain.beta.kubernetes.io/region", &location),
        ("node.kubernetes.io/instance-type", &size),
        ("beta.kubernetes.io/instance-type", &size),
    ]
    .map(|(k, v)| format!("{k}={v}"))
    .join(",");
    (labels, format!("azure://{}", text("resourceId")))
}

fn relative(from: &Path, to: &Path) -> String {
    let up = from.components().count().saturating_sub(1);
    let rest = to.strip_prefix("/").unwrap_or(to);
    format!("{}{}", "../".repeat(up), rest.display())
}

/// The image containerd runs as every pod's sandbox.
pub const PAUSE_IMAGE: &str = "flexdisk.local/pause:1";
/// A small image with a shell and the usual tools (busybox), for test pods.
pub const TOOLS_IMAGE: &str = "flexdisk.local/tools:1";

/// The OCI archives of the test images, made once in `dir` (no registry and no docker here:
/// each is a hand-assembled OCI layout — one layer, a config, a manifest, an index).
pub fn images(dir: &Path) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).expect("images dir");
    let busybox = Path::new("/bin/busybox");
    assert!(
        busybox.exists(),
        "/bin/busybox is missing: tests/kube/build installs Debian's busybox-static"
    );
    let mut out = Vec::new();
    let applets = [
        "sh", "sleep", "cat", "dd", "md5sum", "df", "ls", "echo", "sync", "mkdir", "test", "stat",
        "wc", "touch", "rm",
    ];
    for (file, name, cmd) in [
        (
            "pause.tar",
            PAUSE_IMAGE,
            vec!["/bin/busybox", "sleep", "2147483647"],
        ),
        ("tools.tar", TOOLS_IMAGE, vec!["/bin/sh"]),
    ] {
        let archive = dir.join(file);
        if !archive.exists() {
            oci_archive(
                &archive,
                &Image {
                    name,
                    files: vec![(busybox.to_path_buf(), "bin/busybox".into())],
                    applets: &applets,
                    entrypoint: &[],
                    cmd: &cmd,
                    user: None,
                    env: &[],
                },
            );
        }
        out.push(archive);
    }
    out
}

/// What goes into a test image.
pub struct Image<'a> {
    pub name: &'a str,
    /// Host path → path in the image.
    pub files: Vec<(PathBuf, PathBuf)>,
    /// busybox applets linked in `/bin`.
    pub applets: &'a [&'a str],
    pub entrypoint: &'a [&'a str],
    pub cmd: &'a [&'a str],
    pub user: Option<&'a str>,
    /// The environment of its processes; empty: `PATH=/bin`.
    pub env: &'a [&'a str],
}

/// Writes an OCI image archive of `image`.
pub fn oci_archive(archive: &Path, image: &Image<'_>) {
    let (name, files, applets) = (image.name, &image.files, image.applets);
    use sha2::{Digest, Sha256};
    let work = archive.with_extension("work");
    let _ = std::fs::remove_dir_all(&work);
    let rootfs = work.join("rootfs");
    for (from, to) in files {
        let dest = rootfs.join(to);
        std::fs::create_dir_all(dest.parent().expect("parent")).expect("dir");
        std::fs::copy(from, &dest).expect("copy into the image");
    }
    std::fs::create_dir_all(&rootfs).expect("rootfs");
    if !applets.is_empty() {
        std::fs::create_dir_all(rootfs.join("bin")).expect("bin");
    }
    for a in applets.iter() {
        let link = rootfs.join("bin").join(a);
        if !link.exists() {
            std::os::unix::fs::symlink("busybox", &link).expect("applet");
        }
    }
    for d in ["tmp", "etc", "proc", "sys", "dev", "data"] {
        std::fs::create_dir_all(rootfs.join(d)).expect("dir");
    }
    let layout = work.join("layout");
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).expect("blobs");
    let layer = work.join("layer.tar");
    run(Command::new("tar")
        .args(["--numeric-owner", "--owner=0", "--group=0", "-C"])
        .arg(&rootfs)
        .arg("-cf")
        .arg(&layer)
        .arg("."));
    let digest = |bytes: &[u8]| format!("{:x}", Sha256::digest(bytes));
    let layer_bytes = std::fs::read(&layer).expect("layer");
    let layer_digest = digest(&layer_bytes);
    std::fs::write(blobs.join(&layer_digest), &layer_bytes).expect("layer blob");
    let env: &[&str] = if image.env.is_empty() {
        &["PATH=/bin"]
    } else {
        image.env
    };
    let mut run_config = json!({"Env": env, "WorkingDir": "/"});
    if !image.entrypoint.is_empty() {
        run_config["Entrypoint"] = json!(image.entrypoint);
    }
    if !image.cmd.is_empty() {
        run_config["Cmd"] = json!(image.cmd);
    }
    if let Some(u) = image.user {
        run_config["User"] = json!(u);
    }
    let config = json!({"architecture": "amd64", "os": "linux", "config": run_config,
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_digest}")]}})
    .to_string();
    let config_digest = digest(config.as_bytes());
    std::fs::write(blobs.join(&config_digest), &config).expect("config blob");
    let manifest =
        json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": format!("sha256:{config_digest}"), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": format!("sha256:{layer_digest}"), "size": layer_bytes.len()}]})
        .to_string();
    let manifest_digest = digest(manifest.as_bytes());
    std::fs::write(blobs.join(&manifest_digest), &manifest).expect("manifest blob");
    let index = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{manifest_digest}"), "size": manifest.len(),
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {"io.containerd.image.name": name,
                            "org.opencontainers.image.ref.name": name.rsplit(':').next().unwrap_or("latest")}}]});
    std::fs::write(layout.join("index.json"), index.to_string()).expect("index");
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .expect("layout");
    run(Command::new("tar")
        .args(["--numeric-owner", "--owner=0", "--group=0", "-C"])
        .arg(&layout)
        .arg("-cf")
        .arg(archive)
        .arg("."));
    let _ = std::fs::remove_dir_all(&work);
}

/// Cargo, to build from within a test as from a shell: without the variables cargo sets for the
/// test (`CARGO_MANIFEST_DIR`, `CARGO_PKG_*`…), which build scripts such as ring's watch
/// (`rerun-if-env-changed`) — with them, every build here and the next one outside would rebuild
/// ring and all above it, each undoing the other.
fn cargo() -> Command {
    as_from_a_shell(Command::new(
        std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()),
    ))
}

/// `c` without the variables cargo sets for a test (see [`cargo`]), run from this package's dir.
fn as_from_a_shell(mut c: Command) -> Command {
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    for (name, _) in std::env::vars_os() {
        let n = name.to_string_lossy();
        let set_by_cargo = n.starts_with("CARGO_PKG_")
            || n.starts_with("CARGO_BIN_")
            || n.starts_with("CARGO_MANIFEST_")
            || n.starts_with("CARGO_CRATE_")
            || matches!(
                n.as_ref(),
                "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
                    | "CARGO_RUSTC_CURRENT_DIR"
                    | "OUT_DIR"
            );
        if set_by_cargo {
            c.env_remove(&name);
        }
    }
    c
}

/// The simulator's binary, built now from this checkout where `cargo test --workspace` puts it
/// (`target/<profile>/flexdisk-sim`, what [`crate::bin`] names): a `cargo test` of this package
/// alone builds no other package's binaries, and one left from an older build would simulate old
/// code. Call it before anything runs the simulator (the world file is made with it too).
pub fn simulator() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let path = bin("flexdisk-sim");
            // <target>/<profile dir>/flexdisk-sim; "debug" is the dev profile's directory.
            let profile_dir = path.parent().expect("the profile directory");
            let target = profile_dir.parent().expect("the target directory");
            let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
                Some("debug") | None => "dev".to_string(),
                Some(other) => other.to_string(),
            };
            run(cargo()
                .args(["build", "--quiet", "--profile", &profile])
                .args(["-p", "flexdisk-sim", "--bin", "flexdisk-sim"])
                .env("CARGO_TARGET_DIR", target));
            path
        })
        .clone()
}

/// An OCI archive imported into `node`'s containerd with the cluster's `ctr` (in `bin`).
fn import_into(node: &Node, bin: &Path, archive: &Path) {
    run(node
        .command(bin.join("ctr").to_str().expect("utf-8"))
        .args([
            "-n",
            "k8s.io",
            "images",
            "import",
            "--platform",
            "linux/amd64",
        ])
        .arg(archive));
}

/// A driver image laid out as `install/build-images` lays out the one that ships (the installer
/// that copies itself into the node's plugin dir, then stays), tagged `tag`, with `binary` as its
/// driver — another version of it, for the upgrade scenario; the archive.
fn driver_image(images: &Path, tag: &str, binary: &Path) -> PathBuf {
    let archive = images.join(format!("flexdisk-{tag}.tar"));
    oci_archive(
        &archive,
        &Image {
            name: &format!("ghcr.io/flexdisk/flexdisk:{tag}"),
            files: vec![(binary.to_path_buf(), "flexdisk".into())],
            applets: &[],
            entrypoint: &["/flexdisk"],
            cmd: &["install", "--plugin-dir=/flexvolume", "--stay"],
            user: None,
            env: &[],
        },
    );
    archive
}

/// flexdisk's images as they ship, made now by `install/build-images` (so they are never stale)
/// into `<target>/images`: the statically linked release binaries (`crt-static` on the gnu
/// target: the driver runs on any node OS and in the distroless controller-manager image) in
/// OCI archives.
pub struct Shipped {
    /// The directory of the binaries in the images.
    pub bins: PathBuf,
    pub driver: PathBuf,
    pub provisioner: PathBuf,
}

/// The tag `install/` names.
pub const SHIPPED_TAG: &str = "0.1.0";

pub fn shipped() -> &'static Shipped {
    static BUILT: std::sync::OnceLock<Shipped> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        let exe = std::env::current_exe().expect("test binary");
        // <target>/debug/deps/<test> → <target>
        let target = exe
            .ancestors()
            .nth(3)
            .expect("the target directory")
            .to_path_buf();
        let out = target.join("images");
        build_images(&target, &out);
        let bins = target.join("x86_64-unknown-linux-gnu/release");
        for b in ["flexdisk", "flexdisk-provisioner"] {
            let elf = std::fs::read(bins.join(b)).expect("binary");
            assert!(
                !is_dynamic(&elf),
                "{b} is dynamically linked: it would not run on every node OS"
            );
        }
        Shipped {
            bins,
            driver: out.join(format!("flexdisk-{SHIPPED_TAG}.tar")),
            provisioner: out.join(format!("flexdisk-provisioner-{SHIPPED_TAG}.tar")),
        }
    })
}

/// `install/build-images --out out --tag SHIPPED_TAG`, building in `target`, run as from a
/// shell.
pub fn build_images(target: &Path, out: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../install/build-images");
    run(as_from_a_shell(Command::new(script))
        .arg("--out")
        .arg(out)
        .args(["--tag", SHIPPED_TAG])
        .env("CARGO_TARGET_DIR", target));
}

/// The directory of the binaries that ship (see [`shipped`]).
pub fn static_binaries() -> PathBuf {
    shipped().bins.clone()
}

/// Whether an ELF file asks for a dynamic loader (a PT_INTERP program header).
pub fn is_dynamic(elf: &[u8]) -> bool {
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let u64_at = |o: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&elf[o..o + 8]);
        u64::from_le_bytes(b) as usize
    };
    if elf.len() < 64 || &elf[..4] != b"\x7fELF" || elf[4] != 2 {
        return true;
    }
    let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    (0..phnum).any(|i| {
        let o = phoff + i * phentsize;
        elf.len() >= o + 4 && u32::from_le_bytes([elf[o], elf[o + 1], elf[o + 2], elf[o + 3]]) == 3
    })
}
