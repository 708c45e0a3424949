//! Test harness: runs the real `flexdisk-sim` binary, speaks plain HTTP to it, records every ARM
//! answer and checks them all against the official API descriptions vendored in `sim/specs/`.
#![allow(dead_code)]

pub mod sdk;

use flexdisk_sim::process::SimProcess;
use reqwest::blocking::Client;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct Sim {
    process: SimProcess,
    pub ready: Value,
    pub state: PathBuf,
    client: Client,
    token: String,
    exchanges: Mutex<Vec<Exchange>>,
    /// The api-versions `arm` adds to paths without a query: (disks and snapshots, compute).
    apis: (&'static str, &'static str),
}

#[derive(Debug, Clone)]
pub struct Exchange {
    pub method: String,
    pub path: String,
    pub status: u16,
    pub body: Value,
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn code(&self) -> &str {
        self.body
            .pointer("/error/code")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    pub fn message(&self) -> &str {
        self.body
            .pointer("/error/message")
            .and_then(Value::as_str)
            .unwrap_or("")
    }
}

pub const DISK_API: &str = "2024-03-02";
pub const VM_API: &str = "2024-07-01";
/// The api-versions Azure's current Go clients speak (armcompute/v7).
pub const DISK_API_2025: &str = "2025-01-02";
pub const VM_API_2025: &str = "2025-04-01";
pub const AS_A: &str = "k8s-agentpool1-31415926-0";
pub const AS_B: &str = "k8s-agentpool1-31415926-1";
pub const SS_0: &str = "aks-nodepool1-31415926-vmss000000";
pub const SS_1: &str = "aks-nodepool1-31415926-vmss000001";

/// Short operations unless a test asks otherwise.
fn with_test_timing<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut all = args.to_vec();
    if !args.contains(&"--vm-op-ms") {
        all.extend(["--vm-op-ms", "150"]);
    }
    if !args.contains(&"--disk-op-ms") {
        all.extend(["--disk-op-ms", "100"]);
    }
    all
}

impl Sim {
    pub fn start(args: &[&str]) -> Sim {
        let bin = Path::new(env!("CARGO_BIN_EXE_flexdisk-sim"));
        Sim::wrap(SimProcess::start(bin, &with_test_timing(args)).expect("flexdisk-sim starts"))
    }

    /// Starts on a given state directory (for restart tests); the caller keeps it alive.
    pub fn start_at(state: &Path, args: &[&str]) -> Sim {
        let bin = Path::new(env!("CARGO_BIN_EXE_flexdisk-sim"));
        Sim::wrap(
            SimProcess::start_at(bin, state, &with_test_timing(args)).expect("flexdisk-sim starts"),
        )
    }

    fn wrap(process: SimProcess) -> Sim {
        let client = client_trusting(&process.ready);
        let mut sim = Sim {
            ready: process.ready.clone(),
            state: process.state.clone(),
            process,
            client,
            token: String::new(),
            exchanges: Mutex::new(Vec::new()),
            apis: (DISK_API, VM_API),
        };
        sim.token = sim.secret_token();
        sim
    }

    /// Speaks these api-versions from now on (disks and snapshots, compute).
    pub fn at(mut self, disk: &'static str, compute: &'static str) -> Sim {
        self.apis = (disk, compute);
        self
    }

    pub fn s(&self, field: &str) -> String {
        self.ready[field]
            .as_str()
            .unwrap_or_else(|| panic!("ready line lacks {field}"))
            .to_string()
    }

    pub fn node(&self, node: &str, field: &str) -> String {
        self.ready["nodes"][node][field]
            .as_str()
            .unwrap_or_else(|| panic!("ready line lacks nodes.{node}.{field}"))
            .to_string()
    }

    pub fn root(&self, node: &str) -> PathBuf {
        PathBuf::from(self.node(node, "root"))
    }

    /// A token for the service principal from the Entra ID endpoint.
    pub fn secret_token(&self) -> String {
        let r = self.login_form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &self.s("clientId")),
            ("client_secret", &self.s("clientSecret")),
            ("scope", "https://management.azure.com/.default"),
        ]);
        assert_eq!(r.status, 200, "{:?}", r.body);
        r.body["access_token"]
            .as_str()
            .expect("access_token")
            .to_string()
    }

    pub fn login_form(&self, form: &[(&str, &str)]) -> Resp {
        let url = format!("{}/{}/oauth2/v2.0/token", self.s("login"), self.s("tenant"));
        let r = self
            .client
            .post(url)
            .form(form)
            .send()
            .expect("login answers");
        to_resp(r)
    }

    pub fn disk_id(&self, name: &str) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/disks/{name}",
            self.s("subscription"),
            self.s("resourceGroup")
        )
    }

    /// ARM path of a node's VM (a scale-set instance's path for scale-set nodes).
    pub fn vm_path(&self, node: &str) -> String {
        self.node(node, "vm")
    }

    pub fn arm(&self, method: &str, path: &str, body: Option<&Value>) -> Resp {
        self.arm_with(method, path, body, &[], Some(&self.token.clone()))
    }

    /// An ARM call; `path` may carry its own query, otherwise the right api-version is added.
    pub fn arm_with(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
        token: Option<&str>,
    ) -> Resp {
        let url = if path.starts_with("http") {
            path.to_string()
        } else if path.contains('?') {
            format!("{}{path}", self.s("arm"))
        } else {
            let api = if path.to_lowercase().contains("/disks")
                || path.to_lowercase().contains("/snapshots")
            {
                self.apis.0
            } else {
                self.apis.1
            };
            format!("{}{path}?api-version={api}", self.s("arm"))
        };
        let mut req = self.client.request(method.parse().expect("method"), &url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let r = to_resp(req.send().unwrap_or_else(|e| panic!("{method} {url}: {e}")));
        let rel = url
            .splitn(4, '/')
            .nth(3)
            .map(|p| format!("/{p}"))
            .unwrap_or_default();
        self.exchanges.lock().expect("lock").push(Exchange {
            method: method.to_string(),
            path: rel,
            status: r.status,
            body: r.body.clone(),
        });
        r
    }

    /// A plain GET outside ARM's front door (cloud metadata, IMDS, the identity endpoint).
    pub fn get(&self, url: &str, headers: &[(&str, &str)]) -> Resp {
        let mut req = self.client.get(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        to_resp(req.send().expect("answers"))
    }

    pub fn try_arm(&self, method: &str, path: &str) -> Result<Resp, reqwest::Error> {
        let url = format!("{}{path}", self.s("arm"));
        let r = self
            .client
            .request(method.parse().expect("method"), &url)
            .bearer_auth(&self.token)
            .send()?;
        Ok(to_resp(r))
    }

    pub fn control(&self, method: &str, path: &str, body: Option<&Value>) -> Resp {
        let url = format!("{}{path}", self.s("control"));
        let mut req = self.client.request(method.parse().expect("method"), &url);
        if let Some(b) = body {
            req = req.json(b);
        }
        to_resp(req.send().expect("control answers"))
    }

    pub fn fault(&self, rule: Value) {
        let r = self.control("POST", "/faults", Some(&rule));
        assert_eq!(r.status, 201, "{:?}", r.body);
    }

    /// Follows `Azure-AsyncOperation` to the end; returns the final status resource.
    pub fn wait_async(&self, accepted: &Resp) -> Value {
        let url = accepted
            .header("azure-asyncoperation")
            .expect("Azure-AsyncOperation header");
        self.poll_until(url, |r| {
            assert_eq!(r.status, 200, "status polls are always 200: {:?}", r.body);
            r.body["status"] != "InProgress"
        })
        .body
    }

    /// Follows `Location` to the end; returns the final answer.
    pub fn wait_location(&self, accepted: &Resp) -> Resp {
        let url = accepted.header("location").expect("Location header");
        self.poll_until(url, |r| {
            assert!(
                r.status != 202 || r.body.is_null(),
                "a 202 poll has no body"
            );
            r.status != 202
        })
    }

    fn poll_until(&self, url: &str, done: impl Fn(&Resp) -> bool) -> Resp {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let r = self.arm("GET", url, None);
            if done(&r) {
                return r;
            }
            assert!(Instant::now() < deadline, "operation never ended: {url}");
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Writes that answer 202 are followed to the end (Succeeded asserted); 200 is taken as is.
    pub fn done(&self, r: Resp) -> Resp {
        match r.status {
            202 => {
                let status = self.wait_async(&r);
                assert_eq!(status["status"], "Succeeded", "{status}");
                r
            }
            200 if r.header("azure-asyncoperation").is_some() => {
                let status = self.wait_async(&r);
                assert_eq!(status["status"], "Succeeded", "{status}");
                r
            }
            _ => r,
        }
    }

    pub fn create_disk(&self, name: &str, body: Value) -> Value {
        let r = self.arm("PUT", &self.disk_id(name), Some(&body));
        assert!(
            r.status == 200 || r.status == 202,
            "{} {:?}",
            r.status,
            r.body
        );
        self.done(r);
        let got = self.arm("GET", &self.disk_id(name), None);
        assert_eq!(got.status, 200);
        got.body
    }

    pub fn empty_disk(&self, name: &str, gb: i64, zone: Option<&str>) -> Value {
        let mut body = json!({"location": self.s("location"), "sku": {"name": "Premium_LRS"},
            "properties": {"creationData": {"createOption": "Empty"}, "diskSizeGB": gb}});
        if let Some(z) = zone {
            body["zones"] = json!([z]);
        }
        self.create_disk(name, body)
    }

    pub fn attach(&self, node: &str, disks: &[&str]) -> Resp {
        self.attach_detach(node, "dataDisksToAttach", disks)
    }

    pub fn detach(&self, node: &str, disks: &[&str]) -> Resp {
        self.attach_detach(node, "dataDisksToDetach", disks)
    }

    fn attach_detach(&self, node: &str, list_name: &str, disks: &[&str]) -> Resp {
        let list: Vec<Value> = disks
            .iter()
            .map(|d| json!({"diskId": self.disk_id(d)}))
            .collect();
        let path = format!("{}/attachDetachDataDisks", self.vm_path(node));
        self.arm("POST", &path, Some(&json!({ list_name: list })))
    }

    pub fn lun_of(&self, node: &str, disk: &str) -> i64 {
        let vm = self.arm("GET", &self.vm_path(node), None);
        vm.body["properties"]["storageProfile"]["dataDisks"]
            .as_array()
            .expect("dataDisks")
            .iter()
            .find(|d| {
                d["name"]
                    .as_str()
                    .is_some_and(|n| n.eq_ignore_ascii_case(disk))
            })
            .and_then(|d| d["lun"].as_i64())
            .unwrap_or_else(|| panic!("{disk} not on {node}: {}", vm.body))
    }

    pub fn lun_link(&self, node: &str, lun: i64) -> PathBuf {
        self.root(node)
            .join(format!("dev/disk/azure/scsi1/lun{lun}"))
    }

    /// SIGTERM and wait; the state directory stays.
    pub fn stop(&mut self) {
        assert!(self.process.stop(), "simulator exits cleanly");
    }

    /// SIGKILL and wait, as a crash; the state directory stays.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// The storage bus's mount point (`state/bus`), and whether this mount namespace has it mounted.
    pub fn bus_mounted(&self) -> bool {
        let bus = Path::new(&self.s("state"))
            .join("bus")
            .display()
            .to_string();
        std::fs::read_to_string("/proc/self/mountinfo")
            .expect("mountinfo")
            .lines()
            .any(|l| l.split(' ').nth(4) == Some(bus.as_str()))
    }

    /// Checks every ARM answer this test received against the official API descriptions.
    pub fn check_schemas(&self) {
        let exchanges = self.exchanges.lock().expect("lock").clone();
        check_schemas(&exchanges);
    }

    /// Loop devices backed by files under this simulator's state directory.
    pub fn loops_over_state(&self) -> Vec<String> {
        let out = Command::new("losetup").arg("-a").output().expect("losetup");
        let state = self.state.display().to_string();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains(&state))
            .map(str::to_string)
            .collect()
    }
}

/// An HTTP client that trusts the simulator's private CA (and nothing else), as a node configured
/// with `SSL_CERT_FILE` would.
pub fn client_trusting(ready: &Value) -> Client {
    let ca = std::fs::read(ready["caBundle"].as_str().expect("caBundle")).expect("CA file");
    Client::builder()
        .timeout(Duration::from_secs(30))
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("CA PEM"))
        .build()
        .expect("client")
}

fn to_resp(r: reqwest::blocking::Response) -> Resp {
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().unwrap_or_default();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    Resp {
        status,
        headers,
        body,
    }
}

/// Checks many answers against the official API descriptions vendored in `sim/specs/` (each
/// answer against its own operation and status; error answers as `CloudError`). Operation-status
/// resources are not in the specifications.
pub fn check_schemas(exchanges: &[Exchange]) {
    let specs = flexdisk_sim::schema::Specs::load();
    let mut checked = 0;
    let mut failures = Vec::new();
    for e in exchanges {
        let p = e.path.split('?').next().unwrap_or_default().to_lowercase();
        if p.contains("/diskoperations/") || p.contains("/locations/") || p.starts_with("/_sim") {
            continue;
        }
        checked += 1;
        let problems = if e.status >= 400 {
            specs.check_definition("CloudError", &e.body)
        } else {
            specs.check_response(&e.method, &e.path, e.status, &e.body)
        };
        if !problems.is_empty() {
            failures.push(json!({"case": format!("{} {} -> {}", e.method, e.path, e.status), "report": problems}));
        }
    }
    assert!(checked > 0, "no ARM answers to check");
    assert!(
        failures.is_empty(),
        "answers that do not match the API specification:\n{}",
        serde_json::to_string_pretty(&failures).unwrap_or_default()
    );
}

/// Writes `data` at `offset` of a block device (through the LUN link, as a guest would).
pub fn write_at(dev: &Path, offset: u64, data: &[u8]) {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(dev)
        .unwrap_or_else(|e| panic!("open {}: {e}", dev.display()));
    f.seek(SeekFrom::Start(offset)).expect("seek");
    f.write_all(data).expect("write");
    f.sync_all().expect("sync");
}

pub fn read_at(dev: &Path, offset: u64, len: usize) -> Vec<u8> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(dev).unwrap_or_else(|e| panic!("open {}: {e}", dev.display()));
    f.seek(SeekFrom::Start(offset)).expect("seek");
    let mut buf = vec![0u8; len];
    f.read_exact(&mut buf).expect("read");
    buf
}

pub fn block_size_bytes(dev: &Path) -> u64 {
    let out = Command::new("blockdev")
        .arg("--getsize64")
        .arg(dev)
        .output()
        .expect("blockdev");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("size")
}
