//! Where a pod's seconds go: one volume's way to a running pod (a new claim, or a move by a
//! drain), step by step, from the components' own clocks — the API server's audit log (claims,
//! volumes, pods, their bindings, evictions and statuses, and the attach/detach controller's
//! node status writes), the driver's call log (kube-controller-manager's calls and each node's:
//! every line ends a call and says how long it took) and the simulated Azure's request journal.
//! Every clock is this machine's, so the steps compare.
//!
//! flexdisk's share is what the driver and the provisioner spend beyond Azure's operations (the
//! simulator's configured times, [`AzureTimes`]); Kubernetes' is the rest of the pod's time.

use super::RealCluster;
use serde_json::Value;
use std::fmt;

/// Seconds since the epoch, from an RFC 3339 time (the audit log's and the driver's, with
/// microseconds; the journal's, with milliseconds).
fn secs(rfc3339: &str) -> Option<f64> {
    let t: k8s_openapi::jiff::Timestamp = rfc3339.parse().ok()?;
    Some(t.as_microsecond() as f64 / 1e6)
}

/// One driver call as its log line tells it.
#[derive(Debug, Clone)]
pub struct Call {
    pub call: String,
    /// When it answered and how long it took (seconds).
    pub end: f64,
    pub took: f64,
    /// The whole line (arguments, outcome), to find a volume in.
    pub line: String,
}

impl Call {
    pub fn start(&self) -> f64 {
        self.end - self.took
    }
}

/// The calls of a driver log (`<time>  INFO flexdisk: call call=<name> … duration_ms=<n>`).
pub fn calls(log: &str) -> Vec<Call> {
    log.lines()
        .filter_map(|l| {
            let end = secs(l.split_whitespace().next()?)?;
            let call = l
                .split(" call=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .to_string();
            let (took, unit) = match (l.rsplit_once("duration_ms="), l.rsplit_once("duration_us="))
            {
                (Some((_, ms)), _) => (ms, 1e3),
                (None, Some((_, us))) => (us, 1e6),
                _ => return None,
            };
            let took = took.split_whitespace().next()?.parse::<f64>().ok()? / unit;
            Some(Call {
                call,
                end,
                took,
                line: l.to_string(),
            })
        })
        .collect()
}

/// Azure's operation times in this run (the simulator's medians).
#[derive(Debug, Clone, Copy)]
pub struct AzureTimes {
    pub vm_op: f64,
    pub disk_op: f64,
}

impl AzureTimes {
    pub fn of(c: &RealCluster) -> AzureTimes {
        let t = c
            .sim
            .control("GET", "/timing", None)
            .map(|(_, t)| t)
            .unwrap_or_default();
        let ms = |k: &str| t[k].as_f64().unwrap_or(0.0) / 1e3;
        AzureTimes {
            vm_op: ms("vmOpMs"),
            disk_op: ms("diskOpMs"),
        }
    }
}

/// Whose time a step's wait was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    Kubernetes,
    Flexdisk,
    Azure,
}

#[derive(Debug, Clone)]
pub struct Step {
    pub what: String,
    pub at: Option<f64>,
    /// Who the wait since the step before was (the first step's is nobody's).
    pub who: Who,
}

/// A volume's way to a running pod.
#[derive(Debug, Clone)]
pub struct Waterfall {
    pub title: String,
    pub steps: Vec<Step>,
    pub azure: AzureTimes,
    /// Azure's operations on the way (seconds).
    pub azure_share: f64,
    /// The driver's and the provisioner's time beyond Azure's operations (seconds).
    pub flexdisk_share: f64,
}

impl Waterfall {
    fn start(&self) -> Option<f64> {
        self.steps.first().and_then(|s| s.at)
    }

    /// First step to last (seconds); `None` if either is missing.
    pub fn total(&self) -> Option<f64> {
        Some(self.steps.last()?.at? - self.start()?)
    }

    /// What is neither Azure's nor flexdisk's.
    pub fn kubernetes_share(&self) -> Option<f64> {
        Some(self.total()? - self.azure_share - self.flexdisk_share)
    }

    /// Steps that could not be found, by name.
    pub fn missing(&self) -> Vec<&str> {
        self.steps
            .iter()
            .filter(|s| s.at.is_none())
            .map(|s| s.what.as_str())
            .collect()
    }
}

impl fmt::Display for Waterfall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "waterfall: {} (Azure: VM operations {:.2} s, disk operations {:.2} s)",
            self.title, self.azure.vm_op, self.azure.disk_op
        )?;
        let t0 = self.start().unwrap_or(0.0);
        let mut before = t0;
        // In the order they happened (a drain's steps on two nodes interleave); unseen last.
        let mut steps: Vec<&Step> = self.steps.iter().collect();
        steps.sort_by(|a, b| match (a.at, b.at) {
            (Some(x), Some(y)) => x.total_cmp(&y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        });
        for s in steps {
            match s.at {
                Some(at) => {
                    writeln!(
                        f,
                        "  {:>8.3} s  (+{:>6.3})  {:<44} {}",
                        at - t0,
                        at - before,
                        s.what,
                        match s.who {
                            Who::Kubernetes => "kubernetes",
                            Who::Flexdisk => "flexdisk",
                            Who::Azure => "azure (+ flexdisk)",
                        }
                    )?;
                    before = at;
                }
                None => writeln!(f, "  {:>8}    {:>9}  {:<44} not seen", "-", "", s.what)?,
            }
        }
        match (self.total(), self.kubernetes_share()) {
            (Some(total), Some(k8s)) => write!(
                f,
                "  total {total:.2} s = Azure {:.2} s + flexdisk {:.2} s + Kubernetes {k8s:.2} s \
                 (flexdisk {:.2}x Azure's operation time)",
                self.azure_share,
                self.flexdisk_share,
                if self.azure_share > 0.0 {
                    self.flexdisk_share / self.azure_share
                } else {
                    0.0
                }
            ),
            _ => write!(f, "  incomplete"),
        }
    }
}

/// What the logs say, read once.
struct Sources {
    audit: Vec<Value>,
    controller_calls: Vec<Call>,
    journal: Vec<Value>,
}

fn audit_at(e: &Value) -> Option<f64> {
    secs(e["stageTimestamp"].as_str()?)
}

impl Sources {
    fn read(c: &RealCluster, volume: &str) -> Sources {
        Sources {
            audit: c.writes(),
            controller_calls: calls(&c.controller_driver_logs()),
            journal: c
                .sim
                .control("GET", &format!("/requests?pathContains={volume}"), None)
                .ok()
                .and_then(|(_, j)| j.as_array().cloned())
                .unwrap_or_default(),
        }
    }

    /// The first successful write after `since` that `f` picks.
    fn first(&self, since: f64, f: impl Fn(&Value) -> bool) -> Option<f64> {
        self.audit
            .iter()
            .filter(|e| {
                e["responseStatus"]["code"]
                    .as_i64()
                    .is_some_and(|c| c < 300)
            })
            .filter_map(|e| Some((audit_at(e)?, e)))
            .filter(|(at, _)| *at >= since)
            .find(|(_, e)| f(e))
            .map(|(at, _)| at)
    }
}

fn names(e: &Value, resource: &str, subresource: Option<&str>, name: &str) -> bool {
    e["objectRef"]["resource"] == resource
        && e["objectRef"]["subresource"].as_str() == subresource
        && e["objectRef"]["name"] == name
}

fn user_has(e: &Value, part: &str) -> bool {
    e["user"]["username"]
        .as_str()
        .is_some_and(|u| u.contains(part))
}

/// kubelet's first status write of the pod that says a container runs / the pod is Ready.
fn pod_status(s: &Sources, since: f64, pod: &str, ready: bool) -> Option<f64> {
    s.first(since, |e| {
        names(e, "pods", Some("status"), pod)
            && user_has(e, "system:node:")
            && if ready {
                e["requestObject"]["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            } else {
                e["requestObject"]["status"]["containerStatuses"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["state"].get("running").is_some())
            }
    })
}

/// kubelet's first event of the pod with `reason` (Pulled, Created, Started), core or
/// events.k8s.io.
fn pod_event(s: &Sources, since: f64, pod: &str, reason: &str) -> Option<f64> {
    s.first(since, |e| {
        e["objectRef"]["resource"] == "events"
            && e["verb"] == "create"
            && e["requestObject"]["reason"] == reason
            && (e["requestObject"]["involvedObject"]["name"] == pod
                || e["requestObject"]["regarding"]["name"] == pod)
    })
}

/// The attach/detach controller's node status write that first shows the volume attached.
fn node_shows_attached(s: &Sources, since: f64, node: &str, volume: &str) -> Option<f64> {
    s.first(since, |e| {
        names(e, "nodes", Some("status"), node)
            && e["requestObject"]["status"]["volumesAttached"]
                .to_string()
                .contains(volume)
    })
}

fn call_of<'a>(calls: &'a [Call], since: f64, call: &str, volume: &str) -> Option<&'a Call> {
    calls
        .iter()
        .find(|c| c.start() >= since && c.call == call && c.line.contains(volume))
}

fn step(what: &str, at: Option<f64>, who: Who) -> Step {
    Step {
        what: what.to_string(),
        at,
        who,
    }
}

/// A call's start and end as two steps: who waited for its start, and that the call's own time
/// was `during`'s.
fn call_steps(name: &str, caller: &str, call: Option<&Call>, during: Who) -> [Step; 2] {
    [
        step(
            &format!("{name} called ({caller})"),
            call.map(Call::start),
            Who::Kubernetes,
        ),
        step(
            &format!("{name} answered (driver)"),
            call.map(|c| c.end),
            during,
        ),
    ]
}

/// The way shared by a new pod and a moved one, from the attach to Ready on `node`.
struct Arrival<'a> {
    attach: Option<&'a Call>,
    shown: Option<f64>,
    wait: Option<Call>,
    mount: Option<Call>,
    events: [Option<f64>; 4],
}

impl<'a> Arrival<'a> {
    fn read(
        c: &RealCluster,
        s: &'a Sources,
        since: f64,
        pod: &str,
        node: &str,
        volume: &str,
    ) -> Self {
        let calls = c.node_calls(node);
        let on_node = |call: &str| call_of(&calls, since, call, volume).cloned();
        Arrival {
            attach: call_of(&s.controller_calls, since, "attach", volume),
            shown: node_shows_attached(s, since, node, volume),
            wait: on_node("waitforattach"),
            mount: on_node("mountdevice"),
            events: [
                pod_event(s, since, pod, "Pulled"),
                pod_event(s, since, pod, "Started"),
                pod_status(s, since, pod, false),
                pod_status(s, since, pod, true),
            ],
        }
    }

    /// The driver's time on the way beyond the VM operation.
    fn driver(&self, azure: AzureTimes) -> f64 {
        self.attach.map_or(0.0, |a| (a.took - azure.vm_op).max(0.0))
            + self.wait.as_ref().map_or(0.0, |c| c.took)
            + self.mount.as_ref().map_or(0.0, |c| c.took)
    }

    fn steps(&self) -> Vec<Step> {
        let [pulled, started, running, ready] = self.events;
        let mut out = Vec::from(call_steps(
            "attach",
            "kube-controller-manager",
            self.attach,
            Who::Azure,
        ));
        out.push(step(
            "node status shows it attached",
            self.shown,
            Who::Kubernetes,
        ));
        out.push(step(
            "waitforattach answered (kubelet's verify)",
            self.wait.as_ref().map(|c| c.end),
            Who::Kubernetes,
        ));
        out.extend(call_steps(
            "mountdevice",
            "kubelet",
            self.mount.as_ref(),
            Who::Flexdisk,
        ));
        out.extend([
            step(
                "sandbox up, image there (Pulled event)",
                pulled,
                Who::Kubernetes,
            ),
            step(
                "container started (Started event)",
                started,
                Who::Kubernetes,
            ),
            step(
                "a container running (kubelet's status)",
                running,
                Who::Kubernetes,
            ),
            step("pod Ready (kubelet's status)", ready, Who::Kubernetes),
        ]);
        out
    }
}

impl RealCluster {
    /// The driver calls of `node`'s kubelet.
    fn node_calls(&self, node: &str) -> Vec<Call> {
        self.nodes
            .iter()
            .find(|n| n.name == node)
            .map(|n| {
                calls(&std::fs::read_to_string(n.dir.join("log/flexdisk.log")).unwrap_or_default())
            })
            .unwrap_or_default()
    }

    /// A new claim's way to its first pod on `node`: the claim created, (WaitForFirstConsumer)
    /// its node chosen, the disk made, the volume made and bound, the pod bound to the node, the
    /// disk attached and shown in the node's status, the device found and mounted, a container
    /// running, the pod Ready.
    pub fn create_waterfall(&self, pod: &str, claim: &str, volume: &str, node: &str) -> Waterfall {
        let s = Sources::read(self, volume);
        let azure = AzureTimes::of(self);
        let created = s.first(0.0, |e| {
            names(e, "persistentvolumeclaims", None, claim) && e["verb"] == "create"
        });
        let since = created.unwrap_or(0.0);
        let selected = s.first(since, |e| {
            names(e, "persistentvolumeclaims", None, claim)
                && user_has(e, "kube-scheduler")
                && e["requestObject"]
                    .to_string()
                    .contains("volume.kubernetes.io/selected-node")
        });
        // The PV controller hands the claim to the provisioner with an annotation
        // (`volume.kubernetes.io/storage-provisioner`, pv_controller.go setClaimProvisioner);
        // the provisioner acts on that, not on the claim's creation.
        let handed = s.first(since, |e| {
            names(e, "persistentvolumeclaims", None, claim)
                && user_has(e, "persistent-volume-binder")
                && e["requestObject"]
                    .to_string()
                    .contains("volume.kubernetes.io/storage-provisioner")
        });
        let disk_put = s
            .journal
            .iter()
            .filter(|j| {
                j["method"] == "PUT"
                    && j["path"]
                        .as_str()
                        .is_some_and(|p| p.contains(&format!("/disks/{volume}")))
            })
            .filter_map(|j| secs(j["at"].as_str()?))
            .find(|at| *at >= since);
        let pv_made = s.first(since, |e| {
            names(e, "persistentvolumes", None, volume) && e["verb"] == "create"
        });
        let bound = s.first(since, |e| {
            names(e, "persistentvolumeclaims", Some("status"), claim)
                && e["requestObject"]["status"]["phase"] == "Bound"
        });
        let scheduled = s.first(since, |e| names(e, "pods", Some("binding"), pod));
        let arrival = Arrival::read(self, &s, since, pod, node, volume);
        let asked = [created, handed, selected]
            .into_iter()
            .flatten()
            .reduce(f64::max);
        let provisioner = match (pv_made, asked) {
            (Some(made), Some(asked)) => (made - asked - azure.disk_op).max(0.0),
            _ => 0.0,
        };
        let mut steps = vec![step("claim created", created, Who::Kubernetes)];
        for (what, at) in [
            ("node selected (scheduler)", selected),
            ("claim handed to the provisioner (PV controller)", handed),
        ] {
            if at.is_some() {
                steps.push(step(what, at, Who::Kubernetes));
            }
        }
        steps.extend([
            step("disk PUT answered (Azure)", disk_put, Who::Flexdisk),
            step("PV created (provisioner)", pv_made, Who::Azure),
            step("claim Bound (PV controller)", bound, Who::Kubernetes),
            step(
                "pod bound to its node (scheduler)",
                scheduled,
                Who::Kubernetes,
            ),
        ]);
        steps.extend(arrival.steps());
        Waterfall {
            title: format!("{pod} with new claim {claim} on {node}"),
            steps,
            azure,
            azure_share: azure.disk_op + azure.vm_op,
            flexdisk_share: provisioner + arrival.driver(azure),
        }
    }

    /// A pod's move to `to` by a drain of `from`: the eviction, the filesystem unmounted on the
    /// old node, the disk detached, the new pod bound to `to`, the disk attached there and shown
    /// in its status, found and mounted, the new pod running and Ready.
    pub fn drain_waterfall(
        &self,
        pod: &str,
        volume: &str,
        from: &str,
        to: &str,
        since: f64,
    ) -> Waterfall {
        let s = Sources::read(self, volume);
        let azure = AzureTimes::of(self);
        let evicted = s.first(since, |e| names(e, "pods", Some("eviction"), pod));
        let after = evicted.unwrap_or(since);
        let old = self.node_calls(from);
        let unmount = call_of(&old, after, "unmountdevice", volume);
        let detach = call_of(&s.controller_calls, after, "detach", volume);
        let recreated = s.first(after, |e| {
            names(e, "pods", None, pod) && e["verb"] == "create"
        });
        let scheduled = s.first(after, |e| names(e, "pods", Some("binding"), pod));
        let arrival = Arrival::read(self, &s, after, pod, to, volume);
        let driver = unmount.map_or(0.0, |c| c.took)
            + detach.map_or(0.0, |c| (c.took - azure.vm_op).max(0.0))
            + arrival.driver(azure);
        let mut steps = vec![
            step("evicted", evicted, Who::Kubernetes),
            step("new pod created (StatefulSet)", recreated, Who::Kubernetes),
            step(
                "pod bound to its node (scheduler)",
                scheduled,
                Who::Kubernetes,
            ),
        ];
        steps.extend(call_steps(
            "unmountdevice",
            "old node's kubelet",
            unmount,
            Who::Flexdisk,
        ));
        steps.extend(call_steps(
            "detach",
            "kube-controller-manager",
            detach,
            Who::Azure,
        ));
        steps.extend(arrival.steps());
        Waterfall {
            title: format!("{pod} moved from {from} to {to} by a drain"),
            steps,
            azure,
            azure_share: 2.0 * azure.vm_op,
            flexdisk_share: driver,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_lines_become_calls() {
        let log = "2026-12-07T20:22:54.097602Z  INFO flexdisk: call call=mountdevice args=[\"/x/pvc-1\", \"/dev/sdc\"] outcome=Success formatted xfs and mounted duration_ms=63\n\
                   2026-12-07T20:22:20.941888Z  INFO flexdisk: call call=init outcome=Success duration_us=194\n\
                   not a call\n";
        let c = calls(log);
        assert_eq!(c.len(), 2, "{c:?}");
        assert_eq!(c[0].call, "mountdevice");
        assert!((c[0].took - 0.063).abs() < 1e-9);
        assert!((c[0].end - secs("2026-12-07T20:22:54.097602Z").unwrap()).abs() < 1e-6);
        assert!((c[0].start() - (c[0].end - 0.063)).abs() < 1e-9);
        assert_eq!(c[1].call, "init");
        assert!((c[1].took - 0.000194).abs() < 1e-9);
    }
}
