//! Which ARM operation a request is: ARM paths are matched case-insensitively, segment by segment.

use super::errors::{error, ArmResult};
use crate::http::percent_decode;
use http::Method;

/// The api-versions served for disks and snapshots, oldest first: the one flexdisk's own client
/// speaks and the one `armcompute/v7` (Kubernetes' Azure code) speaks. Each request and answer is
/// checked against its own version's specification (`crate::schema`).
pub const DISK_APIS: &[&str] = &["2024-03-02", "2025-01-02"];
/// The api-versions served for VMs and scale sets, oldest first (as [`DISK_APIS`]).
pub const COMPUTE_APIS: &[&str] = &["2024-07-01", "2025-04-01"];

#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// Every disk of the subscription (`Disks_List`).
    AllDisks,
    Disks {
        rg: String,
    },
    Disk {
        rg: String,
        name: String,
    },
    Snapshots {
        rg: String,
    },
    Snapshot {
        rg: String,
        name: String,
    },
    Vms {
        rg: String,
    },
    Vm {
        rg: String,
        name: String,
    },
    VmAttachDetach {
        rg: String,
        name: String,
    },
    ScaleSets {
        rg: String,
    },
    ScaleSet {
        rg: String,
        name: String,
    },
    ScaleSetVms {
        rg: String,
        scale_set: String,
    },
    ScaleSetVm {
        rg: String,
        scale_set: String,
        instance: String,
    },
    ScaleSetVmAttachDetach {
        rg: String,
        scale_set: String,
        instance: String,
    },
    Operation {
        location: String,
        id: String,
        disk: bool,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub target: Target,
    /// The specification's operationId (`OperationStatus` for long-running operation polls).
    pub operation: &'static str,
    /// The api-versions this operation is served at ([`DISK_APIS`] or [`COMPUTE_APIS`]).
    pub api_versions: &'static [&'static str],
    pub write: bool,
}

impl Target {
    pub fn resource_group(&self) -> Option<&str> {
        match self {
            Target::Disks { rg }
            | Target::Disk { rg, .. }
            | Target::Snapshots { rg }
            | Target::Snapshot { rg, .. }
            | Target::Vms { rg }
            | Target::Vm { rg, .. }
            | Target::VmAttachDetach { rg, .. }
            | Target::ScaleSets { rg }
            | Target::ScaleSet { rg, .. }
            | Target::ScaleSetVms { rg, .. }
            | Target::ScaleSetVm { rg, .. }
            | Target::ScaleSetVmAttachDetach { rg, .. } => Some(rg),
            Target::Operation { .. } | Target::AllDisks => None,
        }
    }
}

pub fn route(method: &Method, path: &str, subscription: &str) -> ArmResult<Route> {
    let segs: Vec<String> = path
        .trim_end_matches('/')
        .split('/')
        .skip(1)
        .map(percent_decode)
        .collect();
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let eq = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    let unknown = || {
        error(
            404,
            "InvalidResourceType",
            format!("The resource type for '{path}' could not be found in the namespace 'Microsoft.Compute'."),
        )
    };
    if s.len() < 2 || !eq(s[0], "subscriptions") {
        return Err(unknown());
    }
    if !eq(s[1], subscription) {
        return Err(error(
            404,
            "SubscriptionNotFound",
            format!("The subscription '{}' could not be found.", s[1]),
        ));
    }
    let target = match &s[2..] {
        [p, ns, t] if eq(p, "providers") && eq(ns, "Microsoft.Compute") && eq(t, "disks") => {
            Target::AllDisks
        }
        [p, ns, l, loc, o, id]
            if eq(p, "providers") && eq(ns, "Microsoft.Compute") && eq(l, "locations") =>
        {
            let disk = if eq(o, "DiskOperations") {
                true
            } else if eq(o, "operations") {
                false
            } else {
                return Err(unknown());
            };
            Target::Operation {
                location: loc.to_string(),
                id: id.to_string(),
                disk,
            }
        }
        [g, rg, p, ns, rest @ ..]
            if eq(g, "resourceGroups") && eq(p, "providers") && eq(ns, "Microsoft.Compute") =>
        {
            let rg = rg.to_string();
            match rest {
                [t] if eq(t, "disks") => Target::Disks { rg },
                [t, n] if eq(t, "disks") => Target::Disk {
                    rg,
                    name: n.to_string(),
                },
                [t] if eq(t, "snapshots") => Target::Snapshots { rg },
                [t, n] if eq(t, "snapshots") => Target::Snapshot {
                    rg,
                    name: n.to_string(),
                },
                [t] if eq(t, "virtualMachines") => Target::Vms { rg },
                [t, n] if eq(t, "virtualMachines") => Target::Vm {
                    rg,
                    name: n.to_string(),
                },
                [t, n, a] if eq(t, "virtualMachines") && eq(a, "attachDetachDataDisks") => {
                    Target::VmAttachDetach {
                        rg,
                        name: n.to_string(),
                    }
                }
                [t] if eq(t, "virtualMachineScaleSets") => Target::ScaleSets { rg },
                [t, n] if eq(t, "virtualMachineScaleSets") => Target::ScaleSet {
                    rg,
                    name: n.to_string(),
                },
                [t, ss, v] if eq(t, "virtualMachineScaleSets") && eq(v, "virtualMachines") => {
                    Target::ScaleSetVms {
                        rg,
                        scale_set: ss.to_string(),
                    }
                }
                [t, ss, v, i] if eq(t, "virtualMachineScaleSets") && eq(v, "virtualMachines") => {
                    Target::ScaleSetVm {
                        rg,
                        scale_set: ss.to_string(),
                        instance: i.to_string(),
                    }
                }
                [t, ss, v, i, a]
                    if eq(t, "virtualMachineScaleSets")
                        && eq(v, "virtualMachines")
                        && eq(a, "attachDetachDataDisks") =>
                {
                    Target::ScaleSetVmAttachDetach {
                        rg,
                        scale_set: ss.to_string(),
                        instance: i.to_string(),
                    }
                }
                _ => return Err(unknown()),
            }
        }
        _ => return Err(unknown()),
    };
    let m = method.as_str();
    const DISK_API: &[&str] = DISK_APIS;
    const COMPUTE_API: &[&str] = COMPUTE_APIS;
    let (operation, api_versions) = match (&target, m) {
        (Target::AllDisks, "GET") => ("Disks_List", DISK_API),
        (Target::Disks { .. }, "GET") => ("Disks_ListByResourceGroup", DISK_API),
        (Target::Disk { .. }, "GET") => ("Disks_Get", DISK_API),
        (Target::Disk { .. }, "PUT") => ("Disks_CreateOrUpdate", DISK_API),
        (Target::Disk { .. }, "PATCH") => ("Disks_Update", DISK_API),
        (Target::Disk { .. }, "DELETE") => ("Disks_Delete", DISK_API),
        (Target::Snapshots { .. }, "GET") => ("Snapshots_ListByResourceGroup", DISK_API),
        (Target::Snapshot { .. }, "GET") => ("Snapshots_Get", DISK_API),
        (Target::Snapshot { .. }, "PUT") => ("Snapshots_CreateOrUpdate", DISK_API),
        (Target::Snapshot { .. }, "DELETE") => ("Snapshots_Delete", DISK_API),
        (Target::Vms { .. }, "GET") => ("VirtualMachines_List", COMPUTE_API),
        (Target::Vm { .. }, "GET") => ("VirtualMachines_Get", COMPUTE_API),
        (Target::Vm { .. }, "PUT") => ("VirtualMachines_CreateOrUpdate", COMPUTE_API),
        (Target::Vm { .. }, "PATCH") => ("VirtualMachines_Update", COMPUTE_API),
        (Target::VmAttachDetach { .. }, "POST") => {
            ("VirtualMachines_AttachDetachDataDisks", COMPUTE_API)
        }
        (Target::ScaleSets { .. }, "GET") => ("VirtualMachineScaleSets_List", COMPUTE_API),
        (Target::ScaleSet { .. }, "GET") => ("VirtualMachineScaleSets_Get", COMPUTE_API),
        (Target::ScaleSetVms { .. }, "GET") => ("VirtualMachineScaleSetVMs_List", COMPUTE_API),
        (Target::ScaleSetVm { .. }, "GET") => ("VirtualMachineScaleSetVMs_Get", COMPUTE_API),
        (Target::ScaleSetVm { .. }, "PUT") => ("VirtualMachineScaleSetVMs_Update", COMPUTE_API),
        (Target::ScaleSetVmAttachDetach { .. }, "POST") => (
            "VirtualMachineScaleSetVMs_AttachDetachDataDisks",
            COMPUTE_API,
        ),
        (Target::Operation { disk: true, .. }, "GET") => ("OperationStatus", DISK_API),
        (Target::Operation { disk: false, .. }, "GET") => ("OperationStatus", COMPUTE_API),
        _ => {
            return Err(error(
                405,
                "MethodNotAllowed",
                format!("The requested resource does not support http method '{m}'."),
            ))
        }
    };
    Ok(Route {
        target,
        operation,
        api_versions,
        write: m != "GET",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUB: &str = "sub-1";

    #[test]
    fn matches_case_insensitively_and_decodes_segments() {
        let r = route(
            &Method::POST,
            "/subscriptions/SUB-1/resourcegroups/rg/providers/microsoft.compute/virtualMachineScaleSets/ss/virtualmachines/3/attachDetachDataDisks",
            SUB,
        )
        .expect("routes");
        assert_eq!(
            r.operation,
            "VirtualMachineScaleSetVMs_AttachDetachDataDisks"
        );
        assert!(r.write);
        let d = route(
            &Method::GET,
            "/subscriptions/sub-1/resourceGroups/rg/providers/Microsoft.Compute/disks/a%20b",
            SUB,
        )
        .expect("routes");
        assert_eq!(
            d.target,
            Target::Disk {
                rg: "rg".into(),
                name: "a b".into()
            }
        );
    }

    #[test]
    fn subscription_wide_disks_and_scale_sets() {
        let all = route(
            &Method::GET,
            "/subscriptions/sub-1/providers/Microsoft.Compute/disks",
            SUB,
        )
        .expect("routes");
        assert_eq!(
            (all.target, all.operation),
            (Target::AllDisks, "Disks_List")
        );
        let ss = route(
            &Method::GET,
            "/subscriptions/sub-1/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/pool",
            SUB,
        )
        .expect("routes");
        assert_eq!(ss.operation, "VirtualMachineScaleSets_Get");
        let list = route(
            &Method::GET,
            "/subscriptions/sub-1/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets",
            SUB,
        )
        .expect("routes");
        assert_eq!(list.operation, "VirtualMachineScaleSets_List");
        let p = "/subscriptions/sub-1/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/pool";
        assert_eq!(route(&Method::DELETE, p, SUB).unwrap_err().status, 405);
        let p = "/subscriptions/sub-1/providers/Microsoft.Compute/disks";
        assert_eq!(route(&Method::PUT, p, SUB).unwrap_err().status, 405);
    }

    #[test]
    fn refuses_other_subscriptions_unknown_types_and_methods() {
        let p = "/subscriptions/other/resourceGroups/rg/providers/Microsoft.Compute/disks/d";
        assert_eq!(
            route(&Method::GET, p, SUB).unwrap_err().code,
            "SubscriptionNotFound"
        );
        let p = "/subscriptions/sub-1/resourceGroups/rg/providers/Microsoft.Compute/galleries/g";
        assert_eq!(route(&Method::GET, p, SUB).unwrap_err().status, 404);
        let p = "/subscriptions/sub-1/resourceGroups/rg/providers/Microsoft.Compute/disks";
        assert_eq!(route(&Method::DELETE, p, SUB).unwrap_err().status, 405);
    }
}
