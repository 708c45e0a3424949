//! kube-controller-manager's attach/detach and expand controllers and every node's kubelet, as far
//! as FlexVolume volumes go, around the real `flexdisk`: it watches Pods, claims, PVs and Nodes in
//! the simulated Kubernetes API and makes the driver calls a cluster would make, the way
//! `pkg/volume/flexvolume` makes them (see `flexdisk_sim::kubelet`).
//!
//! Watches on Pods, claims, PVs and Nodes wake it (and a resync every second, for retries); each
//! pass reads the cluster, decides what is missing (attach, set up, tear down, detach, grow),
//! runs those actions at once — as the controllers' operation executors do, one operation per
//! volume at a time — and retries failures with back-off. Pods whose volumes are all set up are
//! marked Running; pods of a Node that no longer exists are deleted, as the pod garbage collector
//! does, and that node's mounts vanish with it.

use flexdisk_sim::kube::quantity;
use flexdisk_sim::kube_client::KubeClient;
pub use flexdisk_sim::kubelet::Hosts;
use flexdisk_sim::kubelet::{
    device_mount_dir, volume_options, Deadline, FlexError, Kubelet, PodRef,
};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

pub const DRIVER: &str = "flexdisk/azure-disk";

/// A fault the emulator can inject into its own driver calls: processes SIGKILLed after a seeded
/// random delay below `max_ms`, for the first `times` calls of a kind.
#[derive(Debug, Clone)]
pub struct SeededKills {
    pub seed: u64,
    pub max_ms: u64,
    pub times: u32,
}

impl SeededKills {
    /// The next kill's delay, if any kills are left.
    fn next(&mut self) -> Option<Duration> {
        if self.times == 0 {
            return None;
        }
        self.times -= 1;
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        Some(Duration::from_millis(self.seed % self.max_ms.max(1)))
    }
}

#[derive(Debug, Clone, Default)]
pub struct Counts {
    pub attaches: u32,
    pub detaches: u32,
    pub set_ups: u32,
    pub tear_downs: u32,
    pub failures: u32,
    pub killed_attaches: u32,
    /// Detaches killed by a controller-manager restart.
    pub killed_detaches: u32,
    pub grown: u32,
    /// Attaches refused because the volume is on another node and may be on one only.
    pub multi_attach_refused: u32,
}

/// One mounted volume of one pod.
#[derive(Debug, Clone)]
pub struct Mounted {
    pub node: String,
    pub pv: String,
    pub device: String,
    pub pod_dir: PathBuf,
}

#[derive(Default)]
struct State {
    /// (pv, node) → what attach answered.
    attached: BTreeMap<(String, String), String>,
    /// pod uid → its mounted volumes.
    mounted: BTreeMap<String, Vec<Mounted>>,
    /// action key → (failures so far, not before).
    backoff: BTreeMap<String, (u32, Instant)>,
    counts: Counts,
    /// Failures and notable decisions, for the tests' diagnostics.
    log: Vec<String>,
    kill: Option<SeededKills>,
    restart_mid_detach: Option<SeededKills>,
    last_verify: Option<Instant>,
    /// (pv, node) refused as a Multi-Attach, reported once while it lasts.
    multi_attach: BTreeSet<(String, String)>,
}

struct Shared {
    kube: KubeClient,
    hosts: Hosts,
    state: Mutex<State>,
    started: Instant,
}

fn notify(wake: &(Mutex<bool>, Condvar)) {
    *wake.0.lock().unwrap_or_else(|e| e.into_inner()) = true;
    wake.1.notify_one();
}

pub struct Emulator {
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Emulator {
    /// Stops acting (idempotent); whatever it mounted stays mounted.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.stop();
    }
}

#[derive(Debug, Clone)]
enum Action {
    Attach {
        pv: Value,
        node: String,
    },
    Detach {
        pv: String,
        node: String,
    },
    SetUp {
        pod: String,
        pv: Value,
        node: String,
        device: String,
        /// The pod's `persistentVolumeClaim.readOnly`, which kubelet passes as
        /// `kubernetes.io/readwrite` (kubernetes `pkg/volume/flexvolume/util.go`, getReadOnly).
        read_only: bool,
        /// What kubelet tells `mount` about the pod (secrets are read when the call is made).
        pod_ref: PodRef,
    },
    TearDown {
        pod: String,
        m: Mounted,
    },
    Vanish {
        pod: String,
        m: Mounted,
    },
    Running {
        path: String,
    },
    DeletePod {
        path: String,
    },
    ExpandFs {
        pod: String,
        m: Mounted,
        pv: Value,
        claim_status: String,
        new_bytes: u128,
        old_bytes: u128,
    },
}

impl Action {
    fn key(&self) -> String {
        match self {
            Action::Attach { pv, node } => format!("attach {} {node}", name(pv)),
            Action::Detach { pv, node } => format!("detach {pv} {node}"),
            // kubelet runs one mount operation at a time per volume of an attachable plugin,
            // whichever pod it is for (operation_executor.MountVolume keys it without the pod).
            Action::SetUp { pv, node, .. } => format!("setup {node} {}", name(pv)),
            Action::TearDown { pod, m } | Action::Vanish { pod, m } => {
                format!("teardown {pod} {}", m.pv)
            }
            Action::Running { path } => format!("running {path}"),
            Action::DeletePod { path } => format!("delete {path}"),
            Action::ExpandFs { pod, m, .. } => format!("expandfs {pod} {}", m.pv),
        }
    }
}

fn name(v: &Value) -> &str {
    v["metadata"]["name"].as_str().unwrap_or_default()
}

fn bytes(q: &Value) -> u128 {
    q.as_str().and_then(quantity::parse).unwrap_or(0)
}

impl Emulator {
    /// Probes the driver on every host (`init`, as kubelet's and the controller-manager's plugin
    /// probers do; the driver must declare `attach`), then starts the passes.
    pub fn start(kube_url: &str, hosts: Hosts) -> Emulator {
        for driver in
            std::iter::once(&hosts.controller).chain(hosts.nodes.values().map(|k| &k.driver))
        {
            let reply = driver.call(&["init"], None).expect("init answers");
            assert_eq!(
                reply.json["capabilities"]["attach"], true,
                "an attachable driver: {}",
                reply.json
            );
        }
        let shared = Arc::new(Shared {
            kube: KubeClient::new(kube_url),
            hosts,
            state: Mutex::new(State::default()),
            started: Instant::now(),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let wake = Arc::new((Mutex::new(true), Condvar::new()));
        for collection in [
            "/api/v1/pods",
            "/api/v1/persistentvolumeclaims",
            "/api/v1/persistentvolumes",
            "/api/v1/nodes",
        ] {
            let (wake, stop) = (wake.clone(), stop.clone());
            let kube = KubeClient::new(kube_url);
            // Not joined: it notices `stop` within a watch's timeout, or when the API is gone.
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let result = kube.watch(collection, 5, |_| {
                        notify(&wake);
                        !stop.load(Ordering::SeqCst)
                    });
                    if result.is_err() {
                        std::thread::sleep(Duration::from_millis(200));
                    }
                }
            });
        }
        let thread = {
            let (shared, stop, wake) = (shared.clone(), stop.clone(), wake.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    {
                        let (woken, cv) = &*wake;
                        let guard = woken.lock().unwrap_or_else(|e| e.into_inner());
                        let (mut guard, _) = cv
                            .wait_timeout_while(guard, Duration::from_secs(1), |w| !*w)
                            .unwrap_or_else(|e| e.into_inner());
                        *guard = false;
                    }
                    match shared.pass() {
                        // What the pass did changes what the next one decides (an attach makes a
                        // set-up due) though nothing in the API changed: go again at once.
                        Ok(true) => notify(&wake),
                        Ok(false) => {}
                        Err(e) => shared.note(format!("pass failed: {e}")),
                    }
                }
            })
        };
        Emulator {
            shared,
            stop,
            thread: Some(thread),
        }
    }

    pub fn kill_attaches(&self, k: SeededKills) {
        self.shared.lock().kill = Some(k);
    }

    /// kube-controller-manager restarts in a fresh container while detaches run: each of the first
    /// `times` `detach` processes is SIGKILLed after a seeded delay and the controller's state
    /// directory is emptied, so the retried detach knows the volume only by the PV name it takes
    /// from node status (`populateActualStateOfWorld` in
    /// `pkg/controller/volume/attachdetach/attach_detach_controller.go`).
    pub fn restart_controller_mid_detaches(&self, k: SeededKills) {
        self.shared.lock().restart_mid_detach = Some(k);
    }

    pub fn counts(&self) -> Counts {
        self.shared.lock().counts.clone()
    }

    pub fn log(&self) -> Vec<String> {
        self.shared.lock().log.clone()
    }

    /// The volumes mounted for a pod (by uid).
    pub fn mounted(&self, pod_uid: &str) -> Vec<Mounted> {
        self.shared
            .lock()
            .mounted
            .get(pod_uid)
            .cloned()
            .unwrap_or_default()
    }

    /// What the emulator believes is attached: (pv, node).
    pub fn attached(&self) -> BTreeSet<(String, String)> {
        self.shared.lock().attached.keys().cloned().collect()
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn note(&self, line: String) {
        let at = self.started.elapsed().as_secs_f64();
        self.lock().log.push(format!("[{at:>7.2}s] {line}"));
    }

    /// One pass; whether it acted.
    fn pass(&self) -> Result<bool, String> {
        let e = |e: flexdisk_sim::kube_client::KubeCallError| e.to_string();
        let pods = self.kube.list("/api/v1/pods").map_err(e)?;
        let claims = self
            .kube
            .list("/api/v1/persistentvolumeclaims")
            .map_err(e)?;
        let pvs: BTreeMap<String, Value> = self
            .kube
            .list("/api/v1/persistentvolumes")
            .map_err(e)?
            .into_iter()
            .map(|p| (name(&p).to_string(), p))
            .collect();
        let nodes: BTreeSet<String> = self
            .kube
            .list("/api/v1/nodes")
            .map_err(e)?
            .iter()
            .map(|n| name(n).to_string())
            .collect();
        let claim_of = |ns: &str, n: &str| {
            claims
                .iter()
                .find(|c| c["metadata"]["namespace"] == ns && name(c) == n)
        };
        let (actions, multi_attach) = {
            let st = self.lock();
            let mut actions = Vec::new();
            // (pv, node) wanted attached, and each live pod's volumes.
            let mut wanted: BTreeSet<(String, String)> = BTreeSet::new();
            let mut multi_attach: Vec<(String, String)> = Vec::new();
            let mut live: BTreeSet<String> = BTreeSet::new();
            for pod in &pods {
                let uid = pod["metadata"]["uid"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let ns = pod["metadata"]["namespace"].as_str().unwrap_or_default();
                let path = format!("/api/v1/namespaces/{ns}/pods/{}", name(pod));
                let Some(node) = pod["spec"]["nodeName"].as_str() else {
                    continue;
                };
                if !nodes.contains(node) {
                    actions.push(Action::DeletePod { path });
                    continue;
                }
                if !pod["metadata"]["deletionTimestamp"].is_null() {
                    continue;
                }
                live.insert(uid.clone());
                let mut ready = true;
                for v in pod["spec"]["volumes"].as_array().into_iter().flatten() {
                    let Some(claim) = v["persistentVolumeClaim"]["claimName"].as_str() else {
                        continue;
                    };
                    let pv = claim_of(ns, claim)
                        .and_then(|c| c["spec"]["volumeName"].as_str())
                        .and_then(|p| pvs.get(p))
                        .filter(|p| p["spec"]["flexVolume"]["driver"] == DRIVER);
                    let Some(pv) = pv else {
                        ready = false;
                        continue;
                    };
                    let key = (name(pv).to_string(), node.to_string());
                    wanted.insert(key.clone());
                    let set_up = st
                        .mounted
                        .get(&uid)
                        .is_some_and(|ms| ms.iter().any(|m| m.pv == key.0));
                    let Some(device) = st.attached.get(&key) else {
                        // Wanted and not attached (also after isattached said it is gone): the
                        // attach/detach controller attaches it (again), mounted or not
                        // (reconciler.attachDesiredVolumes in pkg/controller/volume/attachdetach/
                        // reconciler). A volume only one node may have is refused while it is
                        // attached elsewhere, before any driver call (reportMultiAttachError;
                        // util.IsMultiAttachAllowed: ReadWriteMany, ReadOnlyMany or no modes).
                        if !set_up {
                            ready = false;
                        }
                        let modes: Vec<&str> = pv["spec"]["accessModes"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(Value::as_str)
                            .collect();
                        let multi = modes.is_empty()
                            || modes
                                .iter()
                                .any(|m| matches!(*m, "ReadWriteMany" | "ReadOnlyMany"));
                        let elsewhere = st.attached.keys().any(|(p, n)| *p == key.0 && n != node);
                        if !multi && elsewhere {
                            multi_attach.push(key.clone());
                        } else {
                            actions.push(Action::Attach {
                                pv: pv.clone(),
                                node: node.to_string(),
                            });
                        }
                        continue;
                    };
                    if set_up {
                        continue;
                    }
                    ready = false;
                    actions.push(Action::SetUp {
                        pod: uid.clone(),
                        pv: pv.clone(),
                        node: node.to_string(),
                        device: device.clone(),
                        read_only: v["persistentVolumeClaim"]["readOnly"] == true,
                        pod_ref: PodRef {
                            uid: uid.clone(),
                            name: name(pod).to_string(),
                            namespace: ns.to_string(),
                            service_account: pod["spec"]["serviceAccountName"]
                                .as_str()
                                .unwrap_or("default")
                                .to_string(),
                            fs_group: pod["spec"]["securityContext"]["fsGroup"].as_i64(),
                            secrets: Default::default(),
                        },
                    });
                }
                if ready && pod["status"]["phase"] != "Running" {
                    actions.push(Action::Running { path });
                }
            }
            // Pods gone: their volumes torn down (or, with their node, simply gone).
            for (uid, ms) in &st.mounted {
                if live.contains(uid) {
                    continue;
                }
                for m in ms {
                    if nodes.contains(&m.node) {
                        actions.push(Action::TearDown {
                            pod: uid.clone(),
                            m: m.clone(),
                        });
                    } else {
                        actions.push(Action::Vanish {
                            pod: uid.clone(),
                            m: m.clone(),
                        });
                    }
                }
            }
            // Attached but neither wanted nor mounted anywhere on that node: detach.
            for (pv, node) in st.attached.keys() {
                let in_use = st
                    .mounted
                    .values()
                    .flatten()
                    .any(|m| &m.pv == pv && &m.node == node);
                if !wanted.contains(&(pv.clone(), node.clone())) && !in_use {
                    actions.push(Action::Detach {
                        pv: pv.clone(),
                        node: node.clone(),
                    });
                }
            }
            // Growth. No controller-side step: kube-controller-manager's expand controller never
            // loads FlexVolume plugins (cmd/kube-controller-manager/app/plugins.go,
            // ProbeExpandableVolumePlugins), so the provisioner grows the disk and the PV. kubelet
            // then grows the filesystem of a mounted volume whose PV is larger than the claim's
            // status capacity (checkVolumeFSResize in pkg/kubelet/volumemanager/populator), if the
            // claim lets the node proceed (NodeExpander.runPreCheck in
            // pkg/volume/util/operationexecutor/node_expander.go).
            for c in &claims {
                let Some(pv) = c["spec"]["volumeName"].as_str().and_then(|p| pvs.get(p)) else {
                    continue;
                };
                if pv["spec"]["flexVolume"]["driver"] != DRIVER {
                    continue;
                }
                let has = bytes(&pv["spec"]["capacity"]["storage"]);
                let shown = bytes(&c["status"]["capacity"]["storage"]);
                let resize_status = c["status"]["allocatedResourceStatuses"]["storage"].as_str();
                let node_may = match resize_status {
                    Some(s) => matches!(s, "NodeResizePending" | "NodeResizeInProgress"),
                    // Without any resize status: the legacy path, unless a size was allocated.
                    None => c["status"]["allocatedResources"]["storage"].is_null(),
                };
                if has > shown && node_may {
                    let mounted = st
                        .mounted
                        .iter()
                        .find_map(|(uid, ms)| Some((uid, ms.iter().find(|m| m.pv == name(pv))?)));
                    if let Some((uid, m)) = mounted {
                        let ns = c["metadata"]["namespace"].as_str().unwrap_or_default();
                        actions.push(Action::ExpandFs {
                            pod: uid.clone(),
                            m: m.clone(),
                            pv: pv.clone(),
                            claim_status: format!(
                                "/api/v1/namespaces/{ns}/persistentvolumeclaims/{}/status",
                                name(c)
                            ),
                            new_bytes: has,
                            old_bytes: shown,
                        });
                    }
                }
            }
            let now = Instant::now();
            actions.retain(|a| st.backoff.get(&a.key()).is_none_or(|(_, t)| *t <= now));
            let mut seen = BTreeSet::new();
            actions.retain(|a| seen.insert(a.key()));
            (actions, multi_attach)
        };
        let fresh: Vec<(String, String)> = {
            let mut st = self.lock();
            let now: BTreeSet<(String, String)> = multi_attach.into_iter().collect();
            let fresh: Vec<_> = now.difference(&st.multi_attach).cloned().collect();
            st.counts.multi_attach_refused += fresh.len() as u32;
            st.multi_attach = now;
            fresh
        };
        for (pv, node) in fresh {
            self.note(format!(
                "Multi-Attach error for volume {pv:?} on {node}: Volume is already exclusively attached to one node and can't be attached to another"
            ));
        }
        let acted = !actions.is_empty();
        std::thread::scope(|s| {
            for a in actions {
                s.spawn(move || self.act(a));
            }
        });
        self.verify_attached(&pvs);
        Ok(acted)
    }

    /// Like the attach/detach controller's periodic `isattached` check: what Azure says wins.
    fn verify_attached(&self, pvs: &BTreeMap<String, Value>) {
        let due = {
            let mut st = self.lock();
            let due = st
                .last_verify
                .is_none_or(|t| t.elapsed() > Duration::from_secs(5));
            if due {
                st.last_verify = Some(Instant::now());
            }
            due.then(|| st.attached.keys().cloned().collect::<Vec<_>>())
        };
        for (pv, node) in due.unwrap_or_default() {
            let Some(obj) = pvs.get(&pv) else { continue };
            if let Ok(false) = self.hosts.controller().is_attached(obj, &node) {
                self.note(format!("isattached: {pv} is not on {node}; forgetting it"));
                self.lock().attached.remove(&(pv, node));
            }
        }
    }

    fn act(&self, a: Action) {
        let key = a.key();
        let result = self.run(&a);
        let mut st = self.lock();
        match result {
            Ok(()) => {
                st.backoff.remove(&key);
            }
            Err(e) => {
                st.counts.failures += 1;
                let n = st.backoff.get(&key).map(|(n, _)| n + 1).unwrap_or(1);
                let wait = Duration::from_millis((250u64 << n.min(5)).min(5000));
                st.backoff.insert(key.clone(), (n, Instant::now() + wait));
                drop(st);
                self.note(format!("{key}: {e} (retry {n} in {wait:?})"));
            }
        }
    }

    fn run(&self, a: &Action) -> Result<(), String> {
        let fe = |e: FlexError| e.to_string();
        match a {
            Action::Attach { pv, node } => {
                let limit = self
                    .lock()
                    .kill
                    .as_mut()
                    .and_then(SeededKills::next)
                    .map(Deadline::Kill);
                let options = volume_options(pv, false);
                let r = self
                    .hosts
                    .controller
                    .call(&["attach", &options, node], limit);
                let mut st = self.lock();
                match r {
                    Ok(reply) => {
                        let device = reply.device.ok_or("attach answered no device")?;
                        st.counts.attaches += 1;
                        st.attached
                            .insert((name(pv).to_string(), node.clone()), device);
                        Ok(())
                    }
                    Err(e @ FlexError::Killed { .. }) => {
                        st.counts.killed_attaches += 1;
                        Err(e.to_string())
                    }
                    Err(e) => Err(e.to_string()),
                }
            }
            Action::Detach { pv, node } => {
                let limit = self
                    .lock()
                    .restart_mid_detach
                    .as_mut()
                    .and_then(SeededKills::next)
                    .map(Deadline::Kill);
                match self.hosts.controller.call(&["detach", pv, node], limit) {
                    Ok(_) => {}
                    Err(e @ FlexError::Killed { .. }) => {
                        if let Some(dir) = self.hosts.controller.env_var("FLEXDISK_STATE_DIR") {
                            let _ = std::fs::remove_dir_all(dir);
                        }
                        self.lock().counts.killed_detaches += 1;
                        return Err(format!("{e} (controller-manager restarted)"));
                    }
                    Err(e) => return Err(fe(e)),
                }
                let mut st = self.lock();
                st.counts.detaches += 1;
                st.attached.remove(&(pv.clone(), node.clone()));
                Ok(())
            }
            Action::SetUp {
                pod,
                pv,
                node,
                device,
                read_only,
                pod_ref,
            } => {
                let mut pod_ref = pod_ref.clone();
                pod_ref.secrets = self.secrets_of(pv, &pod_ref.namespace)?;
                let (dir, dev) = self
                    .kubelet(node)?
                    .set_up(pv, device, &pod_ref, *read_only)
                    .map_err(fe)?;
                let mut st = self.lock();
                st.counts.set_ups += 1;
                st.mounted.entry(pod.clone()).or_default().push(Mounted {
                    node: node.clone(),
                    pv: name(pv).to_string(),
                    device: dev,
                    pod_dir: dir,
                });
                Ok(())
            }
            Action::TearDown { pod, m } => {
                self.kubelet(&m.node)?.tear_down(&m.pv, pod).map_err(fe)?;
                self.forget(pod, m);
                self.lock().counts.tear_downs += 1;
                Ok(())
            }
            Action::Vanish { pod, m } => {
                // The node is gone, and its mounts with it: nothing is called.
                let root = self.kubelet(&m.node)?.root.clone();
                for dir in [m.pod_dir.clone(), device_mount_dir(&root, DRIVER, &m.pv)] {
                    let _ = nix::mount::umount2(&dir, nix::mount::MntFlags::MNT_DETACH);
                }
                self.forget(pod, m);
                Ok(())
            }
            Action::Running { path } => self
                .kube
                .merge_patch(
                    &format!("{path}/status"),
                    &json!({"status": {"phase": "Running"}}),
                )
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Action::DeletePod { path } => self
                .kube
                .call("DELETE", &format!("{path}?gracePeriodSeconds=0"), None)
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Action::ExpandFs {
                m,
                pv,
                claim_status,
                new_bytes,
                old_bytes,
                ..
            } => {
                let kubelet = self.kubelet(&m.node)?;
                let dir = device_mount_dir(&kubelet.root, DRIVER, &m.pv);
                kubelet
                    .driver
                    .call(
                        &[
                            "expandfs",
                            &volume_options(pv, false),
                            &m.device,
                            &dir.to_string_lossy(),
                            &new_bytes.to_string(),
                            &old_bytes.to_string(),
                        ],
                        None,
                    )
                    .map_err(fe)?;
                // MarkFSResizeFinished (pkg/volume/util/resize_util.go): the claim's capacity is the
                // volume's, its resize status and conditions go.
                let claim = self.kube.get(claim_status).map_err(|e| e.to_string())?;
                let conditions: Vec<Value> = claim
                    .as_ref()
                    .and_then(|c| c["status"]["conditions"].as_array().cloned())
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|c| {
                        !matches!(
                            c["type"].as_str(),
                            Some(
                                "Resizing"
                                    | "FileSystemResizePending"
                                    | "ControllerResizeError"
                                    | "NodeResizeError"
                            )
                        )
                    })
                    .collect();
                self.kube
                    .merge_patch(
                        claim_status,
                        &json!({"status": {"capacity": {"storage": pv["spec"]["capacity"]["storage"]},
                            "allocatedResourceStatuses": {"storage": null}, "conditions": conditions}}),
                    )
                    .map_err(|e| e.to_string())?;
                self.lock().counts.grown += 1;
                Ok(())
            }
        }
    }

    /// The Secret a PV's `flexVolume.secretRef` names (in the pod's namespace unless it says),
    /// as kubelet hands it to `mount` (`addSecretsToOptions` in pkg/volume/flexvolume/util.go).
    fn secrets_of(
        &self,
        pv: &Value,
        pod_namespace: &str,
    ) -> Result<std::collections::BTreeMap<String, String>, String> {
        let r = &pv["spec"]["flexVolume"]["secretRef"];
        let Some(secret) = r["name"].as_str() else {
            return Ok(Default::default());
        };
        let ns = r["namespace"].as_str().unwrap_or(pod_namespace);
        let obj = self
            .kube
            .get(&format!("/api/v1/namespaces/{ns}/secrets/{secret}"))
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("secret {ns}/{secret} of the volume does not exist"))?;
        Ok(obj["data"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
            .collect())
    }

    fn kubelet(&self, node: &str) -> Result<&Kubelet, String> {
        self.hosts
            .nodes
            .get(node)
            .ok_or_else(|| format!("no kubelet for node {node}"))
    }

    fn forget(&self, pod: &str, m: &Mounted) {
        let mut st = self.lock();
        if let Some(ms) = st.mounted.get_mut(pod) {
            ms.retain(|x| x.pv != m.pv);
            if ms.is_empty() {
                st.mounted.remove(pod);
            }
        }
    }
}
