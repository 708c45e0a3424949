//! Running the simulator as a child process, for the tests of every crate: start
//! `flexdisk-sim serve`, read its ready line, speak to its control API, stop it with SIGTERM (which
//! detaches its loop devices).

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The simulator binary: `FLEXDISK_SIM_BIN`, else `flexdisk-sim` beside the running test's
/// directory (`target/<profile>/`), where `cargo test --workspace` builds it.
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("FLEXDISK_SIM_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap_or_else(|| Path::new("."));
    profile_dir.join("flexdisk-sim")
}

/// One CA for every simulator a test process starts (pass the directory to `--tls-dir`), trusted
/// through `SSL_CERT_FILE` as a private cloud's CA is. The variable is process-wide, so it is set
/// once, before any client exists: call this before anything else in each test.
pub fn shared_tls_dir(dir: &Path) -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        std::env::set_var("SSL_CERT_FILE", dir.join("ca.pem"));
        dir.to_path_buf()
    })
}

/// A running simulator.
pub struct SimProcess {
    child: Option<Child>,
    pub ready: Value,
    pub state: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    http: reqwest::blocking::Client,
}

impl SimProcess {
    /// Starts `bin serve --state <fresh temp dir> args…` and waits for the ready line.
    pub fn start(bin: &Path, args: &[&str]) -> std::io::Result<SimProcess> {
        let tmp = tempfile::tempdir()?;
        let mut sim = SimProcess::start_at(bin, &tmp.path().join("state"), args)?;
        sim._tmp = Some(tmp);
        Ok(sim)
    }

    /// Starts on a given state directory (restart tests); the caller keeps it.
    pub fn start_at(bin: &Path, state: &Path, args: &[&str]) -> std::io::Result<SimProcess> {
        let mut child = Command::new(bin)
            .arg("serve")
            .arg("--state")
            .arg(state)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!(
                        "cannot run {} ({e}); build it with `cargo build -p flexdisk-sim` or set FLEXDISK_SIM_BIN",
                        bin.display()
                    ),
                )
            })?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("no stdout"))?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let ready: Value = serde_json::from_str(&line).map_err(|e| {
            std::io::Error::other(format!(
                "the simulator's ready line {line:?} is not JSON: {e}"
            ))
        })?;
        if ready["nodeBackend"]["kind"] != "fuse" {
            // Tests whose world just got gentler must say so where their output is read.
            eprintln!(
                "WARNING: the simulator's nodes are gentler than Azure's ({}): {}",
                ready["nodeBackend"]["why"].as_str().unwrap_or("unknown"),
                ready["nodeBackend"]["gentler"].as_str().unwrap_or("")
            );
        }
        Ok(SimProcess {
            child: Some(child),
            ready,
            state: state.to_path_buf(),
            _tmp: None,
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .map_err(std::io::Error::other)?,
        })
    }

    /// A string field of the ready line.
    pub fn field(&self, name: &str) -> String {
        self.ready[name].as_str().unwrap_or_default().to_string()
    }

    /// A string field of one node in the ready line.
    pub fn node_field(&self, node: &str, name: &str) -> String {
        self.ready["nodes"][node][name]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// A call to the control API (`{arm}/_sim{path}`); the status and the JSON answer.
    pub fn control(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), reqwest::Error> {
        self.control_at("control", method, path, body)
    }

    /// A call to `{ready[base]}{path}`, e.g. the Kubernetes API's own `/_sim/…` under `kube`.
    pub fn control_at(
        &self,
        base: &str,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), reqwest::Error> {
        let url = format!("{}{path}", self.field(base));
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::GET);
        let mut req = self.http.request(method, url);
        if let Some(b) = body {
            req = req.json(b);
        }
        let rsp = req.send()?;
        let status = rsp.status().as_u16();
        let text = rsp.text()?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// SIGTERM and wait; `true` when it exited cleanly. The state directory stays.
    /// The simulator's process id while it runs under this handle.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn stop(&mut self) -> bool {
        match self.child.take() {
            Some(mut child) => {
                let pid = nix::unistd::Pid::from_raw(child.id() as i32);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
                child.wait().is_ok_and(|s| s.success())
            }
            None => true,
        }
    }
}

impl SimProcess {
    /// SIGKILL and wait, as a crash: none of the simulator's own shutdown runs.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        self.stop();
    }
}
