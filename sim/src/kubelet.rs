//! Calling a FlexVolume driver the way kubernetes' `pkg/volume/flexvolume` does, for the programs
//! that play kubelet and the attach/detach controller around the real `flexdisk` (the demo, system
//! tests): argument shapes per call, stdout and stderr read together and parsed as one JSON
//! object, the options kubelet builds from a PV, the device mount dir under the kubelet root
//! (created 0750, `mountdevice` skipped when it is already a mount point), and the bind mount into
//! the pod's volume dir when the driver does not support `mount`.

use crate::process::SimProcess;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// kubelet stops `waitforattach` after this long (and no other call gets a deadline:
/// `NewDriverCall` passes none, only `waitforattach` uses `NewDriverCallWithTimeout` — kubernetes
/// `pkg/volume/flexvolume/driver-call.go` and `attacher.go`).
pub const WAIT_FOR_ATTACH_LIMIT: Duration = Duration::from_secs(600);

/// How a running driver call is ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    /// kubelet's timeout: `DriverCall.Run` calls `cmd.Stop()`, which is SIGTERM and, 10 s later,
    /// SIGKILL if the process still runs (`k8s.io/utils/exec`, cmdWrapper.Stop).
    Stop(Duration),
    /// SIGKILL at this moment: a fault (the caller's host crashed, its container restarted).
    Kill(Duration),
}

/// How long after SIGTERM a stopped call is SIGKILLed.
const STOP_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum FlexError {
    #[error("cannot run the driver {0}: {1}")]
    Exec(String, String),
    #[error("driver call {call} killed after {limit:?}")]
    Killed { call: String, limit: Duration },
    #[error("driver call {call}: output is not one JSON object: {output:?}")]
    NotJson { call: String, output: String },
    #[error("driver call {call} failed: {message}")]
    Failed { call: String, message: String },
    #[error("{0}")]
    Host(String),
}

/// One answer of the driver.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: String,
    pub message: String,
    pub device: Option<String>,
    pub attached: Option<bool>,
    pub json: Value,
    pub elapsed: Duration,
}

/// The driver as one of its callers runs it: a binary and the environment that caller's host gives it.
#[derive(Debug, Clone)]
pub struct Driver {
    pub bin: PathBuf,
    pub env: Vec<(String, String)>,
}

impl Driver {
    /// The value this host's driver gets for an environment variable.
    pub fn env_var(&self, key: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Runs one call; its combined output must be exactly one JSON object. A `Failure` reply is an
    /// error; `Success` and `Not supported` are replies.
    pub fn call(&self, args: &[&str], deadline: Option<Deadline>) -> Result<Reply, FlexError> {
        let name = args.first().copied().unwrap_or_default().to_string();
        let started = Instant::now();
        let (reader, writer) = std::io::pipe()
            .map_err(|e| FlexError::Exec(self.bin.display().to_string(), e.to_string()))?;
        let writer2 = writer
            .try_clone()
            .map_err(|e| FlexError::Exec(self.bin.display().to_string(), e.to_string()))?;
        let mut cmd = Command::new(&self.bin);
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .stdin(Stdio::null())
            .stdout(writer)
            .stderr(writer2);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| FlexError::Exec(self.bin.display().to_string(), e.to_string()))?;
        // The Command still holds the pipe's write ends; drop it so that EOF comes with the child.
        drop(cmd);
        let collector = std::thread::spawn(move || {
            let mut out = String::new();
            let mut reader = reader;
            let _ = reader.read_to_string(&mut out);
            out
        });
        let (limit, grace) = match deadline {
            None => {
                let _ = child.wait();
                (None, Duration::ZERO)
            }
            Some(Deadline::Stop(d)) => (Some(d), STOP_GRACE),
            Some(Deadline::Kill(d)) => (Some(d), Duration::ZERO),
        };
        if let Some(limit) = limit {
            let mut termed = false;
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                let elapsed = started.elapsed();
                if elapsed > limit + grace {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(FlexError::Killed { call: name, limit });
                }
                if elapsed > limit && !termed && !grace.is_zero() {
                    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
                    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
                    termed = true;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            if termed {
                return Err(FlexError::Killed { call: name, limit });
            }
        }
        let output = collector.join().unwrap_or_default();
        let json: Value = match serde_json::from_str(output.trim()) {
            Ok(v @ Value::Object(_)) => v,
            _ => return Err(FlexError::NotJson { call: name, output }),
        };
        let reply = Reply {
            status: json["status"].as_str().unwrap_or_default().to_string(),
            message: json["message"].as_str().unwrap_or_default().to_string(),
            device: json["device"].as_str().map(str::to_string),
            attached: json["attached"].as_bool(),
            elapsed: started.elapsed(),
            json,
        };
        match reply.status.as_str() {
            "Success" | "Not supported" => Ok(reply),
            _ => Err(FlexError::Failed {
                call: name,
                message: reply.message,
            }),
        }
    }
}

/// The driver's output held to the contract strictly (for tests of the driver itself): nothing on
/// stderr, exactly one line on stdout holding one JSON object with a known status, exit code 0
/// exactly when it says Success, no panic text, and a non-empty message with every Failure.
/// The reply, or what broke the contract.
pub fn strict_reply(out: &std::process::Output) -> Result<Value, String> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.stderr.is_empty() {
        return Err(format!("stderr: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let lines: Vec<&str> = stdout.lines().collect();
    let [line] = lines.as_slice() else {
        return Err(format!("{} lines on stdout: {stdout:?}", lines.len()));
    };
    let reply: Value = match serde_json::from_str(line) {
        Ok(v @ Value::Object(_)) => v,
        _ => return Err(format!("not a JSON object: {stdout}")),
    };
    let status = reply["status"].as_str().unwrap_or_default();
    if !["Success", "Failure", "Not supported"].contains(&status) {
        return Err(format!("unknown status: {stdout}"));
    }
    if (out.status.code() == Some(0)) != (status == "Success") {
        return Err(format!("exit {:?} with {stdout}", out.status.code()));
    }
    if stdout.contains("panicked") {
        return Err(format!("panic text: {stdout}"));
    }
    if status == "Failure"
        && reply["message"]
            .as_str()
            .is_none_or(|m| m.trim().is_empty())
    {
        return Err(format!("a Failure without a message: {stdout}"));
    }
    Ok(reply)
}

/// The options kubelet and the controller pass for a PV: fsType, read/write, the volume's name,
/// then the PV's `flexVolume.options`, which may overwrite them (kubernetes
/// `pkg/volume/flexvolume/driver-call.go`, NewOptionsForDriver). For a PV, read/write is the
/// spec's `ReadOnly` — the pod's `persistentVolumeClaim.readOnly` — never the PV's
/// `flexVolume.readOnly` (`pkg/volume/flexvolume/util.go`, getReadOnly).
pub fn volume_options(pv: &Value, read_only: bool) -> String {
    options_with(pv, read_only, &Map::new())
}

/// The pod a volume is set up for, as kubelet's FlexVolume mounter describes it to `mount`.
#[derive(Debug, Clone, Default)]
pub struct PodRef {
    pub uid: String,
    pub name: String,
    pub namespace: String,
    pub service_account: String,
    pub fs_group: Option<i64>,
    /// The PV's `flexVolume.secretRef` Secret: key → base64 value.
    pub secrets: std::collections::BTreeMap<String, String>,
}

impl PodRef {
    /// A pod known by its uid alone (named after it, default namespace and service account).
    pub fn named(uid: &str) -> PodRef {
        PodRef {
            uid: uid.into(),
            name: uid.into(),
            namespace: "default".into(),
            service_account: "default".into(),
            ..PodRef::default()
        }
    }

    /// The keys kubelet adds for `mount` (kubernetes `pkg/volume/flexvolume/mounter.go`,
    /// SetUpAt: pod, service account, secrets, fsGroup).
    fn extra_options(&self) -> Map<String, Value> {
        let mut o = Map::new();
        o.insert("kubernetes.io/pod.name".into(), self.name.clone().into());
        o.insert(
            "kubernetes.io/pod.namespace".into(),
            self.namespace.clone().into(),
        );
        o.insert("kubernetes.io/pod.uid".into(), self.uid.clone().into());
        o.insert(
            "kubernetes.io/serviceAccount.name".into(),
            self.service_account.clone().into(),
        );
        for (k, v) in &self.secrets {
            o.insert(format!("kubernetes.io/secret/{k}"), v.clone().into());
        }
        if let Some(g) = self.fs_group {
            o.insert(
                "kubernetes.io/mounterArgs.FsGroup".into(),
                g.to_string().into(),
            );
        }
        o
    }
}

/// [`volume_options`] with the extra keys of one call (kubelet's `extraOptions`), which the PV's
/// own options may still overwrite.
fn options_with(pv: &Value, read_only: bool, extra: &Map<String, Value>) -> String {
    let flex = &pv["spec"]["flexVolume"];
    let mut o = Map::new();
    o.insert(
        "kubernetes.io/fsType".into(),
        flex["fsType"].as_str().unwrap_or_default().into(),
    );
    o.insert(
        "kubernetes.io/readwrite".into(),
        if read_only { "ro" } else { "rw" }.into(),
    );
    o.insert(
        "kubernetes.io/pvOrVolumeName".into(),
        pv["metadata"]["name"].as_str().unwrap_or_default().into(),
    );
    for (k, v) in extra {
        o.insert(k.clone(), v.clone());
    }
    if let Some(extra) = flex["options"].as_object() {
        for (k, v) in extra {
            o.insert(k.clone(), v.clone());
        }
    }
    Value::Object(o).to_string()
}

/// `<kubelet root>/plugins/kubernetes.io/flexvolume/<vendor>/<driver>/mounts/<volume>`.
pub fn device_mount_dir(kubelet_root: &Path, driver: &str, volume: &str) -> PathBuf {
    let (vendor, name) = driver.split_once('/').unwrap_or(("", driver));
    kubelet_root
        .join("plugins/kubernetes.io/flexvolume")
        .join(vendor)
        .join(name)
        .join("mounts")
        .join(volume)
}

/// `<kubelet root>/pods/<uid>/volumes/<vendor>~<driver>/<volume>`.
pub fn pod_volume_dir(kubelet_root: &Path, pod_uid: &str, driver: &str, volume: &str) -> PathBuf {
    kubelet_root
        .join("pods")
        .join(pod_uid)
        .join("volumes")
        .join(driver.replace('/', "~"))
        .join(volume)
}

/// Whether `dir` is a mount point (from /proc/self/mountinfo, as kubelet's mounter checks).
pub fn is_mount_point(dir: &Path) -> bool {
    let Ok(canon) = dir.canonicalize() else {
        return false;
    };
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| Path::new(&m.replace("\\040", " ")) == canon)
}

/// The other mounts of the filesystem mounted at `dir` (the pods' bind mounts of a device mount
/// dir), as kubelet's `GetDeviceMountRefs` finds them in mountinfo.
pub fn device_mount_refs(dir: &Path) -> Vec<PathBuf> {
    let Ok(canon) = dir.canonicalize() else {
        return Vec::new();
    };
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let entries: Vec<(String, PathBuf)> = info
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            Some((
                f.get(2)?.to_string(),
                PathBuf::from(f.get(4)?.replace("\\040", " ")),
            ))
        })
        .collect();
    let Some((dev, _)) = entries.iter().rev().find(|(_, m)| *m == canon) else {
        return Vec::new();
    };
    entries
        .iter()
        .filter(|(d, m)| d == dev && *m != canon)
        .map(|(_, m)| m.clone())
        .collect()
}

/// kubelet's part for one node: attach is the controller's (see [`Controller`]).
pub struct Kubelet {
    pub root: PathBuf,
    pub driver: Driver,
    pub driver_name: String,
}

impl Kubelet {
    /// waitforattach, then mountdevice unless already mounted, then `mount` — on "Not supported",
    /// a bind mount of the device mount dir into the pod's volume dir. Returns the pod's dir and
    /// the device path waitforattach answered.
    pub fn set_up(
        &self,
        pv: &Value,
        attach_device: &str,
        pod: &PodRef,
        read_only: bool,
    ) -> Result<(PathBuf, String), FlexError> {
        // FlexVolume plugins do not support mount options (SupportsMountOption is false): kubelet
        // refuses a PV that has them before any driver call (kubernetes
        // `pkg/volume/util/operationexecutor/operation_generator.go`, checkMountOptionSupport).
        let annotated = pv["metadata"]["annotations"]["volume.beta.kubernetes.io/mount-options"]
            .as_str()
            .is_some_and(|o| !o.is_empty());
        if pv["spec"]["mountOptions"]
            .as_array()
            .is_some_and(|o| !o.is_empty())
            || annotated
        {
            return Err(FlexError::Host(
                "Mount options are not supported for this volume type".into(),
            ));
        }
        let volume = pv["metadata"]["name"].as_str().unwrap_or_default();
        let options = volume_options(pv, read_only);
        let device = self
            .driver
            .call(
                &["waitforattach", attach_device, &options],
                Some(Deadline::Stop(WAIT_FOR_ATTACH_LIMIT)),
            )?
            .device
            .ok_or_else(|| FlexError::Host("waitforattach answered no device".into()))?;
        let dir = device_mount_dir(&self.root, &self.driver_name, volume);
        make_dir(&dir, 0o750)?;
        if !is_mount_point(&dir) {
            let dir_s = dir.to_string_lossy();
            self.driver
                .call(&["mountdevice", &dir_s, &device, &options], None)?;
        }
        let pod_dir = pod_volume_dir(&self.root, &pod.uid, &self.driver_name, volume);
        make_dir(&pod_dir, 0o750)?;
        let pod_s = pod_dir.to_string_lossy();
        let mount_options = options_with(pv, read_only, &pod.extra_options());
        let r = self.driver.call(&["mount", &pod_s, &mount_options], None)?;
        if r.status == "Not supported" && !is_mount_point(&pod_dir) {
            // kubelet's fallback: a plain bind mount (no `ro`; the driver enforces read-only).
            bind_mount(&dir, &pod_dir)?;
        }
        Ok((pod_dir, device))
    }

    /// `unmount` (on "Not supported", unmounting the bind mount), then `unmountdevice` — only when
    /// no other pod on the node still mounts the volume and the device dir is mounted, as kubelet
    /// decides (reconciler.unmountDetachDevices and GenerateUnmountDeviceFunc in kubernetes
    /// `pkg/kubelet/volumemanager/reconciler` and `pkg/volume/util/operationexecutor`).
    pub fn tear_down(&self, volume: &str, pod_uid: &str) -> Result<(), FlexError> {
        let pod_dir = pod_volume_dir(&self.root, pod_uid, &self.driver_name, volume);
        let pod_s = pod_dir.to_string_lossy();
        let r = self.driver.call(&["unmount", &pod_s], None)?;
        if r.status == "Not supported" && is_mount_point(&pod_dir) {
            unmount(&pod_dir)?;
        }
        let _ = std::fs::remove_dir(&pod_dir);
        let dir = device_mount_dir(&self.root, &self.driver_name, volume);
        if !is_mount_point(&dir) || !device_mount_refs(&dir).is_empty() {
            return Ok(());
        }
        let dir_s = dir.to_string_lossy();
        self.driver.call(&["unmountdevice", &dir_s], None)?;
        let _ = std::fs::remove_dir(&dir);
        Ok(())
    }
}

/// The driver as each host of a simulated cluster runs it: kube-controller-manager with the
/// cluster's cloud config; each node's kubelet with the node's config, device tree and IMDS, its
/// root under `dir`. Logs (`flexdisk-<host>.log`) and state dirs under `dir` too.
pub struct Hosts {
    pub controller: Driver,
    pub nodes: BTreeMap<String, Kubelet>,
}

impl Hosts {
    pub fn of_simulator(sim: &SimProcess, bin: &Path, driver_name: &str, dir: &Path) -> Hosts {
        let common = |who: &str| -> Vec<(String, String)> {
            vec![
                ("SSL_CERT_FILE".into(), sim.field("caBundle")),
                (
                    "FLEXDISK_LOG".into(),
                    dir.join(format!("flexdisk-{who}.log"))
                        .to_string_lossy()
                        .into(),
                ),
                (
                    "FLEXDISK_STATE_DIR".into(),
                    dir.join(format!("state-{who}")).to_string_lossy().into(),
                ),
            ]
        };
        let controller = Driver {
            bin: bin.to_path_buf(),
            env: [
                common("controller"),
                vec![("FLEXDISK_CONFIG".into(), sim.field("azureJson"))],
            ]
            .concat(),
        };
        let kubelet = |node: &str| Kubelet {
            root: dir.join(format!("kubelet-{node}")),
            driver_name: driver_name.into(),
            driver: Driver {
                bin: bin.to_path_buf(),
                env: [
                    common(node),
                    vec![
                        ("FLEXDISK_CONFIG".into(), sim.node_field(node, "azureJson")),
                        ("FLEXDISK_HOST_ROOT".into(), sim.node_field(node, "root")),
                        ("IMDS_ENDPOINT".into(), sim.node_field(node, "imds")),
                    ],
                ]
                .concat(),
            },
        };
        let nodes = sim.ready["nodes"]
            .as_object()
            .map(|n| n.keys().map(|name| (name.clone(), kubelet(name))).collect())
            .unwrap_or_default();
        Hosts { controller, nodes }
    }

    pub fn controller(&self) -> Controller {
        Controller {
            driver: self.controller.clone(),
        }
    }
}

/// The attach/detach controller's calls (kube-controller-manager's host and config).
pub struct Controller {
    pub driver: Driver,
}

impl Controller {
    /// attach; the answer is what kubelet's waitforattach gets.
    pub fn attach(&self, pv: &Value, node: &str) -> Result<String, FlexError> {
        let options = volume_options(pv, false);
        self.driver
            .call(&["attach", &options, node], None)?
            .device
            .ok_or_else(|| FlexError::Host("attach answered no device".into()))
    }

    pub fn is_attached(&self, pv: &Value, node: &str) -> Result<bool, FlexError> {
        let options = volume_options(pv, false);
        Ok(self
            .driver
            .call(&["isattached", &options, node], None)?
            .attached
            .unwrap_or(false))
    }

    pub fn detach(&self, volume: &str, node: &str) -> Result<(), FlexError> {
        self.driver
            .call(&["detach", volume, node], None)
            .map(|_| ())
    }
}

fn make_dir(dir: &Path, mode: u32) -> Result<(), FlexError> {
    std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)))
        .map_err(|e| FlexError::Host(format!("{}: {e}", dir.display())))
}

fn bind_mount(from: &Path, to: &Path) -> Result<(), FlexError> {
    nix::mount::mount(
        Some(from),
        to,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| {
        FlexError::Host(format!(
            "bind mount {} on {}: {e}",
            from.display(),
            to.display()
        ))
    })
}

fn unmount(dir: &Path) -> Result<(), FlexError> {
    nix::mount::umount(dir).map_err(|e| FlexError::Host(format!("umount {}: {e}", dir.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strict_replies() {
        use std::os::unix::process::ExitStatusExt;
        let out = |code: i32, stdout: &str, stderr: &str| std::process::Output {
            status: std::process::ExitStatus::from_raw(code << 8),
            stdout: stdout.into(),
            stderr: stderr.into(),
        };
        assert!(strict_reply(&out(0, "{\"status\":\"Success\"}\n", "")).is_ok());
        assert!(strict_reply(&out(1, "{\"status\":\"Failure\",\"message\":\"m\"}\n", "")).is_ok());
        for (code, stdout, stderr, broken) in [
            (0, "{\"status\":\"Success\"}", "log line", "stderr"),
            (0, "{\"status\":\"Success\"}\n{}", "", "2 lines"),
            (0, "[1]", "", "not a JSON object"),
            (0, "{\"status\":\"Fine\"}", "", "unknown status"),
            (1, "{\"status\":\"Success\"}", "", "exit Some(1)"),
            (1, "{\"status\":\"Failure\"}", "", "without a message"),
        ] {
            let e = strict_reply(&out(code, stdout, stderr)).expect_err(broken);
            assert!(e.contains(broken), "{e}");
        }
    }

    #[test]
    fn options_and_dirs_as_kubelet_builds_them() {
        let pv = json!({"metadata": {"name": "pvc-1"}, "spec": {"flexVolume": {"driver": "flexdisk/azure-disk",
            "fsType": "xfs", "options": {"diskURI": "/d", "kubernetes.io/fsType": "ext4"}}}});
        let o: Value = serde_json::from_str(&volume_options(&pv, true)).expect("json");
        assert_eq!(
            o,
            json!({"kubernetes.io/fsType": "ext4", "kubernetes.io/readwrite": "ro",
            "kubernetes.io/pvOrVolumeName": "pvc-1", "diskURI": "/d"})
        );
        assert_eq!(
            device_mount_dir(Path::new("/var/lib/kubelet"), "flexdisk/azure-disk", "pvc-1"),
            PathBuf::from("/var/lib/kubelet/plugins/kubernetes.io/flexvolume/flexdisk/azure-disk/mounts/pvc-1")
        );
        assert_eq!(
            pod_volume_dir(Path::new("/k"), "u1", "flexdisk/azure-disk", "pvc-1"),
            PathBuf::from("/k/pods/u1/volumes/flexdisk~azure-disk/pvc-1")
        );
        assert!(is_mount_point(Path::new("/")));
        assert!(!is_mount_point(Path::new("/nonexistent")));
    }
}
