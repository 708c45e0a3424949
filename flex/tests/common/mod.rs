//! Harness: the simulator, and the real `flexdisk` binary run as kubelet and
//! kube-controller-manager run it (a fresh process per call, environment as installed).
#![allow(dead_code)]

use flexdisk_azure::{Arm, ArmOptions, Config, DiskParams, DiskSpec};
use flexdisk_sim::process::{binary, SimProcess};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

pub const AS_A: &str = "k8s-agentpool1-31415926-0";
pub const AS_B: &str = "k8s-agentpool1-31415926-1";

fn tls_dir() -> &'static Path {
    flexdisk_sim::process::shared_tls_dir(
        &Path::new(env!("CARGO_TARGET_TMPDIR")).join("flexdisk-sim-ca"),
    )
}

pub struct Env {
    pub sim: SimProcess,
    pub tmp: tempfile::TempDir,
    pub rt: tokio::runtime::Runtime,
    pub arm: Arm,
}

pub struct Out {
    pub status: String,
    pub reply: Value,
    pub raw: String,
    pub code: i32,
}

impl Env {
    pub fn start() -> Env {
        Env::start_with(&[])
    }

    /// With extra simulator arguments (e.g. `--world FILE`, `--vm-op-ms N`).
    pub fn start_with(extra: &[&str]) -> Env {
        let tls = tls_dir().to_string_lossy().to_string();
        let mut args = vec!["--tls-dir", tls.as_str(), "--disk-op-ms", "50"];
        if !extra.contains(&"--vm-op-ms") {
            args.extend(["--vm-op-ms", "150"]);
        }
        args.extend(extra);
        let sim = SimProcess::start(&binary(), &args).expect("sim starts");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        let config = Config::load(Path::new(&sim.field("azureJson"))).expect("config");
        let arm = rt
            .block_on(Arm::connect(&config, ArmOptions::default()))
            .expect("arm");
        Env {
            sim,
            tmp: tempfile::tempdir().expect("tmp"),
            rt,
            arm,
        }
    }

    pub fn disk(&self, name: &str, gib: u64) -> String {
        self.disk_with(&self.arm.resource_group, name, gib, &[])
    }

    /// A Premium_LRS disk in `resource_group` with extra class parameters (e.g. maxShares).
    pub fn disk_with(
        &self,
        resource_group: &str,
        name: &str,
        gib: u64,
        params: &[(&str, &str)],
    ) -> String {
        let p = DiskParams::parse([("skuName", "Premium_LRS")].iter().chain(params).copied())
            .expect("params");
        let spec = DiskSpec::from_params(&p, name, gib, None, resource_group, &self.arm.location);
        self.rt
            .block_on(self.arm.create_disk(&spec))
            .expect("disk")
            .id
    }

    /// The disks Azure lists on the node's VM (by name, lower case), read fresh.
    pub fn vm_disks(&self, node: &str) -> Vec<String> {
        self.rt
            .block_on(self.arm.node_vm(node))
            .expect("vm")
            .disks
            .iter()
            .map(|d| d.name.to_lowercase())
            .collect()
    }

    /// A controller call from control-plane host `host` (its own state directory: another host,
    /// or kube-controller-manager restarted in a fresh container).
    pub fn controller_on(&self, host: &str, args: &[&str]) -> Out {
        self.flexdisk(
            args,
            &[("FLEXDISK_CONFIG", self.sim.field("azureJson"))],
            host,
        )
    }

    /// [`Env::controller_on`] with extra environment (e.g. a longer batch window).
    pub fn controller_on_with(&self, host: &str, args: &[&str], env: &[(&str, &str)]) -> Out {
        let mut all = vec![("FLEXDISK_CONFIG", self.sim.field("azureJson"))];
        all.extend(env.iter().map(|(k, v)| (*k, v.to_string())));
        self.flexdisk(args, &all, host)
    }

    /// A controller call on control-plane host `host`, started now and finished later.
    pub fn controller_spawn_on(
        &self,
        host: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> std::process::Child {
        let mut all = vec![("FLEXDISK_CONFIG", self.sim.field("azureJson"))];
        all.extend(env.iter().map(|(k, v)| (*k, v.to_string())));
        self.command(args, &all, host)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("flexdisk starts")
    }

    /// The batching spool of `node`'s VM on control-plane host `host` (created).
    pub fn spool(&self, host: &str, node: &str) -> PathBuf {
        let dir = self.state_dir(host).join("spool").join(node);
        std::fs::create_dir_all(&dir).expect("spool");
        dir
    }

    /// Holds the VM's batching lock on `host` as an operation in flight would: requests of that
    /// host wait in the spool (an attach after its disk's claim, a detach after its VM read) until
    /// it is dropped; the VM is read for an attach once the lock is had.
    pub fn hold_batches(&self, host: &str, node: &str) -> nix::fcntl::Flock<std::fs::File> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.spool(host, node).join(".lock"))
            .expect("lock file");
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| e)
            .expect("lock")
    }

    /// A request announced on `host` for `node`'s VM and never posted while the returned lock
    /// lives: the lock holder keeps its batch open for it (up to `FLEXDISK_BATCH_WINDOW_MS`).
    pub fn announce_coming(&self, host: &str, node: &str) -> nix::fcntl::Flock<std::fs::File> {
        let path = self.spool(host, node).join("999999-0.coming");
        let file = std::fs::File::create(&path).expect("announcement");
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| e)
            .expect("lock")
    }

    /// Waits until `n` requests are posted in the spool of `node`'s VM on `host`.
    pub fn wait_for_requests(&self, host: &str, node: &str, n: usize) {
        let spool = self.spool(host, node);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let posted = std::fs::read_dir(&spool)
                .expect("spool")
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".req"))
                .count();
            if posted >= n {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{posted} of {n} requests reached {}",
                spool.display()
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// Adds a fault rule; its id.
    pub fn fault(&self, rule: Value) -> u64 {
        let (status, rule) = self
            .sim
            .control("POST", "/faults", Some(&rule))
            .expect("fault");
        assert_eq!(status, 201, "{rule}");
        rule["id"].as_u64().expect("rule id")
    }

    pub fn remove_fault(&self, id: u64) {
        let (status, _) = self
            .sim
            .control("DELETE", &format!("/faults/{id}"), None)
            .expect("remove fault");
        assert_eq!(status, 204);
    }

    /// ARM requests counted by the simulator (reads, writes, per operation).
    pub fn counter(&self, key: &str) -> u64 {
        self.sim
            .control("GET", "/counters", None)
            .expect("counters")
            .1[key]
            .as_u64()
            .unwrap_or(0)
    }

    /// Dates the disk's claim (flexdisk's claim tag) `age` back, as if its attach had claimed it
    /// that long ago; its other tags stay.
    pub fn age_claim(&self, name: &str, age: std::time::Duration) {
        let rg = &self.arm.resource_group;
        let mut tags = self
            .rt
            .block_on(self.arm.get_disk(rg, name))
            .expect("disk read")
            .expect("disk exists")
            .tags;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        tags.insert(
            flexdisk::ownership::CLAIM_TAG.into(),
            (now - age.as_secs()).to_string(),
        );
        self.rt
            .block_on(self.arm.set_disk_tags(rg, name, &tags, in_a_minute()))
            .expect("tags");
    }

    /// The controller host's state directory.
    pub fn state_dir(&self, host: &str) -> PathBuf {
        self.tmp.path().join(format!("state-{host}"))
    }

    pub fn options(&self, disk_id: &str, volume: &str, extra: Value) -> String {
        let mut o = json!({"diskURI": disk_id, "kubernetes.io/fsType": "ext4", "kubernetes.io/readwrite": "rw",
            "kubernetes.io/pvOrVolumeName": volume});
        if let (Some(m), Some(e)) = (o.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                m.insert(k.clone(), v.clone());
            }
        }
        o.to_string()
    }

    /// A call as kube-controller-manager makes it (the control plane's config).
    pub fn controller(&self, args: &[&str]) -> Out {
        self.flexdisk(
            args,
            &[("FLEXDISK_CONFIG", self.sim.field("azureJson"))],
            "controller",
        )
    }

    /// The environment kubelet on `node` runs the driver with (the node's config and device
    /// tree), plus `extra`.
    fn node_env<'a>(&self, node: &str, extra: &[(&'a str, &str)]) -> Vec<(&'a str, String)> {
        let mut env = vec![
            ("FLEXDISK_CONFIG", self.sim.node_field(node, "azureJson")),
            ("FLEXDISK_HOST_ROOT", self.sim.node_field(node, "root")),
            ("IMDS_ENDPOINT", self.sim.node_field(node, "imds")),
            ("FLEXDISK_WAIT_SECS", "20".into()),
        ];
        env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        env
    }

    /// A call as kubelet on `node` makes it.
    pub fn kubelet(&self, node: &str, args: &[&str]) -> Out {
        self.flexdisk(args, &self.node_env(node, &[]), node)
    }

    /// [`Env::kubelet`] with extra environment (e.g. another `PATH`).
    pub fn kubelet_with(&self, node: &str, args: &[&str], extra: &[(&str, &str)]) -> Out {
        self.flexdisk(args, &self.node_env(node, extra), node)
    }

    /// [`Env::kubelet`], the driver run by `wrapper` (e.g. `unshare … --`): `wrapper[0]` is run
    /// with the rest of `wrapper`, then the driver and its arguments, in the driver's environment.
    pub fn kubelet_under(&self, node: &str, wrapper: &[&str], args: &[&str]) -> Out {
        let driver = self.command(args, &self.node_env(node, &[]), node);
        let mut cmd = Command::new(wrapper[0]);
        cmd.args(&wrapper[1..])
            .arg(driver.get_program())
            .args(driver.get_args())
            .env_clear();
        for (k, v) in driver.get_envs() {
            if let Some(v) = v {
                cmd.env(k, v);
            }
        }
        Out::from_output(cmd.output().expect("flexdisk runs"))
    }

    /// attach (controller) then waitforattach (kubelet on `node`), both expected to succeed:
    /// the LUN and the device path.
    pub fn attach_and_wait(&self, node: &str, opts: &str) -> (String, String) {
        let lun = self.controller(&["attach", opts, node]).ok()["device"]
            .as_str()
            .expect("lun")
            .to_string();
        let dev = self.kubelet(node, &["waitforattach", &lun, opts]).ok()["device"]
            .as_str()
            .expect("dev")
            .to_string();
        (lun, dev)
    }

    /// A controller call started now and finished later (for concurrency tests).
    pub fn controller_spawn(&self, args: &[&str]) -> std::process::Child {
        self.command(
            args,
            &[("FLEXDISK_CONFIG", self.sim.field("azureJson"))],
            "controller",
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("flexdisk starts")
    }

    fn command(&self, args: &[&str], env: &[(&str, String)], who: &str) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_flexdisk"));
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("SSL_CERT_FILE", self.sim.field("caBundle"))
            .env("FLEXDISK_LOG", self.tmp.path().join("flexdisk.log"))
            .env(
                "FLEXDISK_STATE_DIR",
                self.tmp.path().join(format!("state-{who}")),
            );
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }

    fn flexdisk(&self, args: &[&str], env: &[(&str, String)], who: &str) -> Out {
        let out = self
            .command(args, env, who)
            .output()
            .expect("flexdisk runs");
        Out::from_output(out)
    }

    pub fn dir(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }
}

impl Out {
    pub fn from_output(out: std::process::Output) -> Out {
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.stderr.is_empty(),
            "flexdisk wrote to stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 1, "exactly one line of output: {stdout:?}");
        let reply: Value =
            serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"));
        let status = reply["status"].as_str().expect("status").to_string();
        let code = out.status.code().unwrap_or(-1);
        assert_eq!(
            code == 0,
            status == "Success",
            "exit code {code} with {status}"
        );
        Out {
            status,
            reply,
            raw: stdout,
            code,
        }
    }

    pub fn ok(&self) -> &Value {
        assert_eq!(self.status, "Success", "{}", self.raw);
        &self.reply
    }

    pub fn message(&self) -> &str {
        self.reply["message"].as_str().unwrap_or_default()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // Leave no mounts behind whatever happened.
        if let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") {
            let root = self.tmp.path().to_string_lossy().to_string();
            for line in info.lines() {
                if let Some(point) = line.split(' ').nth(4) {
                    if point.starts_with(&root) {
                        let _ = nix::mount::umount2(point, nix::mount::MntFlags::MNT_DETACH);
                    }
                }
            }
        }
    }
}

/// A deadline for the tests' own tag writes.
pub fn in_a_minute() -> std::time::Instant {
    std::time::Instant::now() + std::time::Duration::from_secs(60)
}

/// The whole device's digest (md5sum: fast, and it reads every byte).
pub fn checksum(dev: &str) -> String {
    let out = Command::new("md5sum").arg(dev).output().expect("md5sum");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .split(' ')
        .next()
        .unwrap_or_default()
        .to_string()
}
