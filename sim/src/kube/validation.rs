//! Per-type defaulting and validation, as kube-apiserver's strategies and admission do it for the
//! types flexdisk touches: strict, because a lenient server hides client bugs.

use super::quantity;
use super::resources::ResourceType;
use super::status::{ApiError, ApiResult};
use super::store::Defaults;
use serde_json::{json, Value};

pub const PVC_PROTECTION: &str = "kubernetes.io/pvc-protection";
pub const PV_PROTECTION: &str = "kubernetes.io/pv-protection";
const ACCESS_MODES: &[&str] = &[
    "ReadWriteOnce",
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOncePod",
];
/// PersistentVolume sources (one is required).
const PV_SOURCES: &[&str] = &[
    "flexVolume",
    "csi",
    "hostPath",
    "local",
    "azureDisk",
    "azureFile",
    "nfs",
    "iscsi",
    "fc",
    "awsElasticBlockStore",
    "gcePersistentDisk",
    "cephfs",
    "rbd",
    "cinder",
    "glusterfs",
    "vsphereVolume",
    "portworxVolume",
    "scaleIO",
    "storageos",
    "photonPersistentDisk",
    "quobyte",
    "flocker",
];

fn name_of(o: &Value) -> String {
    o.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn valid_subdomain(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 253
        && n.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && n.starts_with(|c: char| c.is_ascii_alphanumeric())
        && n.ends_with(|c: char| c.is_ascii_alphanumeric())
}

fn add_finalizer(o: &mut Value, f: &str) {
    let list = o["metadata"]
        .as_object_mut()
        .map(|m| m.entry("finalizers").or_insert(json!([])));
    if let Some(Value::Array(a)) = list {
        if !a.iter().any(|x| x == f) {
            a.push(json!(f));
        }
    }
}

fn default(o: &mut Value, pointer: &str, value: Value) {
    if o.pointer(pointer).is_none() {
        let (parent, last) = pointer.rsplit_once('/').unwrap_or(("", pointer));
        if o.pointer(parent).is_none() {
            let (pp, pl) = parent.rsplit_once('/').unwrap_or(("", parent));
            if let Some(Value::Object(m)) = o.pointer_mut(pp) {
                m.insert(pl.to_string(), json!({}));
            }
        }
        if let Some(Value::Object(m)) = o.pointer_mut(parent) {
            m.insert(last.to_string(), value);
        }
    }
}

fn storage_of(o: &Value, pointer: &str) -> Option<u128> {
    o.pointer(pointer)
        .and_then(Value::as_str)
        .and_then(quantity::parse)
}

fn access_modes(kind: &str, name: &str, o: &Value) -> ApiResult<()> {
    let modes = o.pointer("/spec/accessModes").and_then(Value::as_array);
    match modes {
        None => Err(ApiError::invalid(kind, name, "spec.accessModes", "Required value: at least 1 access mode is required")),
        Some(m) if m.is_empty() => Err(ApiError::invalid(kind, name, "spec.accessModes", "Required value: at least 1 access mode is required")),
        Some(m) => match m.iter().find(|x| !x.as_str().is_some_and(|s| ACCESS_MODES.contains(&s))) {
            Some(bad) => Err(ApiError::invalid(kind, name, "spec.accessModes", &format!("Unsupported value: {bad}: supported values: \"ReadOnlyMany\", \"ReadWriteMany\", \"ReadWriteOnce\", \"ReadWriteOncePod\""))),
            None => Ok(()),
        },
    }
}

pub fn on_create(rt: &ResourceType, o: &mut Value, defaults: &Defaults) -> ApiResult<()> {
    let name = name_of(o);
    if !valid_subdomain(&name) {
        return Err(ApiError::invalid(
            rt.kind,
            &name,
            "metadata.name",
            &format!("Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"),
        ));
    }
    match (rt.group, rt.plural) {
        ("", "persistentvolumeclaims") => {
            access_modes(rt.kind, &name, o)?;
            if storage_of(o, "/spec/resources/requests/storage").is_none() {
                return Err(ApiError::invalid(
                    rt.kind,
                    &name,
                    "spec.resources[storage]",
                    "Required value",
                ));
            }
            default(o, "/spec/volumeMode", json!("Filesystem"));
            data_sources_on_create(o);
            if o.pointer("/spec/storageClassName").is_none() {
                if let Some(sc) = &defaults.default_storage_class {
                    o["spec"]["storageClassName"] = json!(sc);
                }
            }
            o["status"] = json!({"phase": "Pending"});
            add_finalizer(o, PVC_PROTECTION);
        }
        ("", "persistentvolumes") => {
            access_modes(rt.kind, &name, o)?;
            if storage_of(o, "/spec/capacity/storage").is_none() {
                return Err(ApiError::invalid(
                    rt.kind,
                    &name,
                    "spec.capacity",
                    "Required value",
                ));
            }
            let sources = PV_SOURCES
                .iter()
                .filter(|s| o.pointer(&format!("/spec/{s}")).is_some())
                .count();
            if sources != 1 {
                return Err(ApiError::invalid(
                    rt.kind,
                    &name,
                    "spec",
                    "Required value: must specify exactly one volume type",
                ));
            }
            flex_volume(rt.kind, &name, "spec.flexVolume", &o["spec"]["flexVolume"])?;
            volume_attributes_class(rt.kind, &name, o)?;
            default(o, "/spec/persistentVolumeReclaimPolicy", json!("Retain"));
            default(o, "/spec/volumeMode", json!("Filesystem"));
            o["status"] = json!({"phase": "Pending"});
            add_finalizer(o, PV_PROTECTION);
        }
        ("storage.k8s.io", "storageclasses") => {
            if o.get("provisioner")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                return Err(ApiError::invalid(
                    rt.kind,
                    &name,
                    "provisioner",
                    "Required value",
                ));
            }
            default(o, "/reclaimPolicy", json!("Delete"));
            default(o, "/volumeBindingMode", json!("Immediate"));
            let mode = o["volumeBindingMode"].as_str().unwrap_or_default();
            if !["Immediate", "WaitForFirstConsumer"].contains(&mode) {
                return Err(ApiError::invalid(rt.kind, &name, "volumeBindingMode", &format!("Unsupported value: \"{mode}\": supported values: \"Immediate\", \"WaitForFirstConsumer\"")));
            }
        }
        ("storage.k8s.io", "volumeattributesclasses")
            if o.get("driverName")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty) =>
        {
            return Err(ApiError::invalid(
                rt.kind,
                &name,
                "driverName",
                "Required value",
            ));
        }
        ("", "pods") => {
            if o.pointer("/spec/containers")
                .and_then(Value::as_array)
                .is_none_or(Vec::is_empty)
            {
                return Err(ApiError::invalid(
                    rt.kind,
                    &name,
                    "spec.containers",
                    "Required value",
                ));
            }
            let volumes = o.pointer("/spec/volumes").and_then(Value::as_array);
            for (i, v) in volumes.into_iter().flatten().enumerate() {
                let field = format!("spec.volumes[{i}].flexVolume");
                flex_volume(rt.kind, &name, &field, &v["flexVolume"])?;
            }
            default(o, "/status", json!({}));
            default(o, "/status/phase", json!("Pending"));
        }
        ("", "namespaces") => {
            o["status"] = json!({"phase": "Active"});
        }
        ("", "secrets") => {
            default(o, "/type", json!("Opaque"));
        }
        _ => {}
    }
    Ok(())
}

/// A FlexVolume source (of a PV or a pod's inline volume) as validateFlexVolumeSource and
/// validateFlexPersistentVolumeSource check it (kubernetes `pkg/apis/core/validation/
/// validation.go`): a driver, and no option key in the `kubernetes.io` or `k8s.io` namespaces —
/// those are the keys kubelet and kube-controller-manager add themselves (NewOptionsForDriver).
/// `Null` (no FlexVolume source) passes.
fn flex_volume(kind: &str, name: &str, field: &str, source: &Value) -> ApiResult<()> {
    if source.is_null() {
        return Ok(());
    }
    if source
        .get("driver")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Err(ApiError::invalid(
            kind,
            name,
            &format!("{field}.driver"),
            "Required value",
        ));
    }
    let options = source.get("options").and_then(Value::as_object);
    for key in options.into_iter().flat_map(|m| m.keys()) {
        let namespace = key.split_once('/').map_or(key.as_str(), |(ns, _)| ns);
        let normalized = format!(".{}", namespace.to_lowercase());
        if normalized.ends_with(".kubernetes.io") || normalized.ends_with(".k8s.io") {
            return Err(ApiError::invalid(
                kind,
                name,
                &format!("{field}.options[{key}]"),
                &format!(
                    "Invalid value: \"{key}\": kubernetes.io and k8s.io namespaces are reserved"
                ),
            ));
        }
    }
    Ok(())
}

/// A new claim's data sources as kube-apiserver leaves them (kubernetes
/// `pkg/api/persistentvolumeclaim/util.go`, with the default gates of v1.37: AnyVolumeDataSource
/// on, the alpha CrossNamespaceVolumeDataSource off): a `dataSourceRef` naming another namespace
/// is dropped (DropDisabledSpecFields) — the claim asks for an empty volume; without a
/// `dataSourceRef`, a `dataSource` that is neither a claim nor a snapshot is dropped
/// (EnforceDataSourceBackwardsCompatibility); then each of the two fills the other where only
/// one is set (NormalizeDataSources).
fn data_sources_on_create(o: &mut Value) {
    let Some(spec) = o.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    if spec
        .get("dataSourceRef")
        .and_then(|r| r.get("namespace"))
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty())
    {
        spec.remove("dataSourceRef");
    }
    let group = |r: &Value| {
        r.get("apiGroup")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    if !spec.contains_key("dataSourceRef") {
        let keep = spec.get("dataSource").is_some_and(|d| {
            let kind = d.get("kind").and_then(Value::as_str).unwrap_or("");
            (kind == "PersistentVolumeClaim" && group(d).is_empty())
                || (kind == "VolumeSnapshot" && group(d) == "snapshot.storage.k8s.io")
        });
        if !keep {
            spec.remove("dataSource");
        }
    }
    let copy = |r: &Value| {
        let mut out = json!({"kind": r.get("kind").cloned().unwrap_or(Value::Null),
            "name": r.get("name").cloned().unwrap_or(Value::Null)});
        if let Some(g) = r.get("apiGroup") {
            out["apiGroup"] = g.clone();
        }
        out
    };
    match (
        spec.get("dataSource").cloned(),
        spec.get("dataSourceRef").cloned(),
    ) {
        (Some(ds), None) => {
            spec.insert("dataSourceRef".into(), copy(&ds));
        }
        (None, Some(r)) => {
            spec.insert("dataSource".into(), copy(&r));
        }
        _ => {}
    }
}

/// A volume's VolumeAttributesClass needs a CSI source (kubernetes
/// `pkg/apis/core/validation/validation.go`, ValidatePersistentVolumeSpec: "has to be specified
/// when using volumeAttributesClassName"): a FlexVolume PV cannot name one.
fn volume_attributes_class(kind: &str, name: &str, o: &Value) -> ApiResult<()> {
    match o.pointer("/spec/volumeAttributesClassName") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(v)) if v.is_empty() => Err(ApiError::invalid(
            kind,
            name,
            "spec.volumeAttributesClassName",
            "Required value: an empty string is disallowed",
        )),
        Some(_) if o.pointer("/spec/csi").is_none() => Err(ApiError::invalid(
            kind,
            name,
            "spec.csi",
            "Required value: has to be specified when using volumeAttributesClassName",
        )),
        Some(_) => Ok(()),
    }
}

fn without(o: &Value, pointers: &[&str]) -> Value {
    let mut c = o.clone();
    for p in pointers {
        if let Some((parent, last)) = p.rsplit_once('/') {
            if let Some(Value::Object(m)) = c.pointer_mut(parent) {
                m.remove(last);
            }
        }
    }
    c
}

/// Whether the named StorageClass allows volume expansion (`None`: no such class).
pub type Expandable<'a> = &'a dyn Fn(&str) -> Option<bool>;

/// The `PersistentVolumeClaimResize` admission plugin: a claim grows only when bound and of a
/// class that allows expansion (kubernetes `plugin/pkg/admission/storage/persistentvolume/resize/
/// admission.go`, Validate and allowResize).
fn admit_growth(old: &Value, new: &Value, expandable: Expandable<'_>) -> ApiResult<()> {
    let (Some(a), Some(b)) = (
        storage_of(old, "/spec/resources/requests/storage"),
        storage_of(new, "/spec/resources/requests/storage"),
    ) else {
        return Ok(());
    };
    if b <= a {
        return Ok(());
    }
    let forbidden = |why: &str| {
        ApiError::new(
            403,
            "Forbidden",
            format!(
                "persistentvolumeclaims \"{}\" is forbidden: {why}",
                name_of(old)
            ),
        )
    };
    if old.pointer("/status/phase").and_then(Value::as_str) != Some("Bound") {
        return Err(forbidden(
            "only bound persistent volume claims can be expanded",
        ));
    }
    let class = old
        .pointer("/spec/storageClassName")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let same_class = new
        .pointer("/spec/storageClassName")
        .and_then(Value::as_str)
        == Some(class);
    if class.is_empty() || !same_class || expandable(class) != Some(true) {
        return Err(forbidden("only dynamically provisioned pvc can be resized and the storageclass that provisions the pvc must support resize"));
    }
    Ok(())
}

pub fn on_update(
    rt: &ResourceType,
    old: &Value,
    new: &mut Value,
    expandable: Expandable<'_>,
) -> ApiResult<()> {
    let name = name_of(old);
    match (rt.group, rt.plural) {
        ("", "persistentvolumeclaims") => {
            admit_growth(old, new, expandable)?;
            // ValidatePersistentVolumeClaimUpdate: requests and volumeAttributesClassName may
            // change only on a bound claim (the clone takes the old values only then).
            let bound = old.pointer("/status/phase").and_then(Value::as_str) == Some("Bound");
            let mutable: &[&str] = if bound {
                &[
                    "/resources/requests",
                    "/volumeName",
                    "/volumeAttributesClassName",
                ]
            } else {
                &["/resources/requests", "/volumeName"]
            };
            let before = without(&old["spec"], mutable);
            let after = without(&new["spec"], mutable);
            let resized =
                old.pointer("/spec/resources/requests") != new.pointer("/spec/resources/requests");
            if before != after || (resized && !bound) {
                return Err(ApiError::invalid(rt.kind, &name, "spec", "Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims"));
            }
            // Once a class is applied it cannot be taken away.
            let vac = new.pointer("/spec/volumeAttributesClassName");
            if old.pointer("/spec/volumeAttributesClassName") != vac
                && old
                    .pointer("/status/currentVolumeAttributesClassName")
                    .is_some_and(|c| !c.is_null())
            {
                match vac {
                    None | Some(Value::Null) => return Err(ApiError::invalid(rt.kind, &name, "spec.volumeAttributesClassName", "Forbidden: update to nil is forbidden when status.currentVolumeAttributesClassName is not nil")),
                    Some(Value::String(v)) if v.is_empty() => return Err(ApiError::invalid(rt.kind, &name, "spec.volumeAttributesClassName", "Forbidden: update to empty string is forbidden when status.currentVolumeAttributesClassName is not nil")),
                    _ => {}
                }
            }
            if let (Some(a), Some(b)) = (
                old.pointer("/spec/volumeName"),
                new.pointer("/spec/volumeName"),
            ) {
                if a != b && a.as_str().is_some_and(|s| !s.is_empty()) {
                    return Err(ApiError::invalid(
                        rt.kind,
                        &name,
                        "spec.volumeName",
                        "Forbidden: spec is immutable after creation",
                    ));
                }
            }
            match (
                storage_of(old, "/spec/resources/requests/storage"),
                storage_of(new, "/spec/resources/requests/storage"),
            ) {
                (_, None) => {
                    return Err(ApiError::invalid(
                        rt.kind,
                        &name,
                        "spec.resources[storage]",
                        "Required value",
                    ))
                }
                // Recovery from expansion failure (GA in 1.34, ValidatePersistentVolumeClaimUpdate
                // in kubernetes `pkg/apis/core/validation/validation.go`): a request may come down
                // again, but must stay above what the volume is known to have.
                (Some(a), Some(b))
                    if b < a
                        && storage_of(old, "/status/capacity/storage").is_none_or(|c| b <= c) =>
                {
                    return Err(ApiError::invalid(
                        rt.kind,
                        &name,
                        "spec.resources.requests.storage",
                        "Forbidden: field can not be less than status.capacity",
                    ))
                }
                _ => {}
            }
        }
        ("", "persistentvolumes") => {
            for source in PV_SOURCES {
                let p = format!("/spec/{source}");
                if old.pointer(&p) != new.pointer(&p) {
                    return Err(ApiError::invalid(
                        rt.kind,
                        &name,
                        "spec.persistentvolumesource",
                        "Forbidden: spec.persistentvolumesource is immutable after creation",
                    ));
                }
            }
            if storage_of(new, "/spec/capacity/storage").is_none() {
                return Err(ApiError::invalid(
                    rt.kind,
                    &name,
                    "spec.capacity",
                    "Required value",
                ));
            }
            volume_attributes_class(rt.kind, &name, new)?;
            let vac = |o: &Value| {
                o.pointer("/spec/volumeAttributesClassName")
                    .filter(|v| !v.is_null())
                    .cloned()
            };
            if vac(old).is_some() && vac(new).is_none() {
                return Err(ApiError::invalid(
                    rt.kind,
                    &name,
                    "spec.volumeAttributesClassName",
                    "Forbidden: update from non-nil value to nil is forbidden",
                ));
            }
        }
        ("storage.k8s.io", "volumeattributesclasses") => {
            for (field, what) in [("driverName", "driverName"), ("parameters", "parameters")] {
                if old.get(field) != new.get(field) {
                    return Err(ApiError::invalid(
                        rt.kind,
                        &name,
                        field,
                        &format!("Forbidden: updates to {what} are forbidden."),
                    ));
                }
            }
        }
        ("storage.k8s.io", "storageclasses") => {
            for field in [
                "parameters",
                "provisioner",
                "reclaimPolicy",
                "volumeBindingMode",
            ] {
                if old.get(field) != new.get(field) {
                    return Err(ApiError::invalid(
                        rt.kind,
                        &name,
                        field,
                        &format!("Forbidden: updates to {field} are forbidden."),
                    ));
                }
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::resources::find;

    fn defaults() -> Defaults {
        Defaults {
            default_storage_class: Some("standard".into()),
        }
    }

    #[test]
    fn claims_data_sources_are_normalized_and_other_namespaces_dropped() {
        let rt = find("", "v1", "persistentvolumeclaims").expect("claims");
        let claim = |spec_extra: Value| {
            let mut o = json!({"metadata": {"name": "c", "namespace": "attacker"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}});
            if let (Some(spec), Some(extra)) = (o["spec"].as_object_mut(), spec_extra.as_object()) {
                spec.extend(extra.clone());
            }
            on_create(rt, &mut o, &defaults()).expect("created");
            o
        };
        let across = claim(
            json!({"dataSourceRef": {"kind": "PersistentVolumeClaim", "name": "wide", "namespace": "default"}}),
        );
        assert!(across["spec"].get("dataSourceRef").is_none(), "{across}");
        assert!(across["spec"].get("dataSource").is_none(), "{across}");
        let by_source =
            claim(json!({"dataSource": {"kind": "PersistentVolumeClaim", "name": "x"}}));
        assert_eq!(by_source["spec"]["dataSourceRef"]["name"], "x");
        let by_ref =
            claim(json!({"dataSourceRef": {"kind": "PersistentVolumeClaim", "name": "x"}}));
        assert_eq!(by_ref["spec"]["dataSource"]["name"], "x");
        let odd = claim(json!({"dataSource": {"kind": "ConfigMap", "name": "x"}}));
        assert!(odd["spec"].get("dataSource").is_none(), "{odd}");
    }

    #[test]
    fn claims_are_defaulted_and_protected() {
        let rt = find("", "v1", "persistentvolumeclaims").expect("pvc");
        let mut pvc = json!({"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}});
        on_create(rt, &mut pvc, &defaults()).expect("valid");
        assert_eq!(pvc["spec"]["storageClassName"], "standard");
        assert_eq!(pvc["spec"]["volumeMode"], "Filesystem");
        assert_eq!(pvc["status"]["phase"], "Pending");
        assert_eq!(pvc["metadata"]["finalizers"], json!([PVC_PROTECTION]));
        let expandable = |c: &str| match c {
            "standard" => Some(true),
            "fixed" => Some(false),
            _ => None,
        };
        let mut grown = pvc.clone();
        grown["spec"]["resources"]["requests"]["storage"] = json!("2Gi");
        let e = on_update(rt, &pvc, &mut grown, &expandable).expect_err("pending");
        assert_eq!(e.code, 403);
        assert!(e
            .message
            .contains("only bound persistent volume claims can be expanded"));
        let mut bound = pvc.clone();
        bound["status"] = json!({"phase": "Bound", "capacity": {"storage": "1Gi"}});
        let mut grown = bound.clone();
        grown["spec"]["resources"]["requests"]["storage"] = json!("4Gi");
        on_update(rt, &bound, &mut grown, &expandable).expect("growing a bound claim");
        let mut fixed = bound.clone();
        fixed["spec"]["storageClassName"] = json!("fixed");
        let mut grown = fixed.clone();
        grown["spec"]["resources"]["requests"]["storage"] = json!("4Gi");
        assert!(on_update(rt, &fixed, &mut grown, &expandable)
            .expect_err("class forbids")
            .message
            .contains("storageclass that provisions the pvc must support resize"));
        // Down again after a failed growth, but not to the volume's size or below.
        let mut asked = bound.clone();
        asked["spec"]["resources"]["requests"]["storage"] = json!("4Gi");
        let mut lowered = asked.clone();
        lowered["spec"]["resources"]["requests"]["storage"] = json!("2Gi");
        on_update(rt, &asked, &mut lowered, &expandable).expect("recovery");
        let mut shrunk = asked.clone();
        shrunk["spec"]["resources"]["requests"]["storage"] = json!("1Gi");
        assert!(on_update(rt, &asked, &mut shrunk, &expandable)
            .expect_err("shrink")
            .message
            .contains("can not be less than status.capacity"));
        let mut changed = pvc.clone();
        changed["spec"]["accessModes"] = json!(["ReadWriteMany"]);
        assert!(on_update(rt, &pvc, &mut changed, &expandable)
            .expect_err("immutable")
            .message
            .contains("spec is immutable"));
        let mut bad = json!({"metadata": {"name": "Bad_Name"}, "spec": {}});
        assert_eq!(
            on_create(rt, &mut bad, &defaults())
                .expect_err("name")
                .reason,
            "Invalid"
        );
    }

    #[test]
    fn volume_attributes_classes_follow_kube_apiserver() {
        let rt = find("", "v1", "persistentvolumeclaims").expect("pvc");
        let mut pvc = json!({"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}}, "volumeAttributesClassName": "silver"}});
        on_create(rt, &mut pvc, &defaults()).expect("valid");
        let none = |_: &str| None;
        let mut switched = pvc.clone();
        switched["spec"]["volumeAttributesClassName"] = json!("gold");
        assert!(on_update(rt, &pvc, &mut switched, &none)
            .expect_err("pending claims keep their class")
            .message
            .contains("spec is immutable"));
        let mut bound = pvc.clone();
        bound["status"] = json!({"phase": "Bound", "currentVolumeAttributesClassName": "silver"});
        let mut switched = bound.clone();
        switched["spec"]["volumeAttributesClassName"] = json!("gold");
        on_update(rt, &bound, &mut switched, &none).expect("bound claims switch");
        let mut dropped = bound.clone();
        dropped["spec"]["volumeAttributesClassName"] = Value::Null;
        assert!(on_update(rt, &bound, &mut dropped, &none)
            .expect_err("applied")
            .message
            .contains("update to nil is forbidden"));

        let pv = find("", "v1", "persistentvolumes").expect("pv");
        let mut flex = json!({"metadata": {"name": "pv1"}, "spec": {"accessModes": ["ReadWriteOnce"],
            "capacity": {"storage": "1Gi"}, "flexVolume": {"driver": "flexdisk/azure-disk"},
            "volumeAttributesClassName": "silver"}});
        let e = on_create(pv, &mut flex, &defaults()).expect_err("CSI only");
        assert!(e.message.contains("spec.csi"), "{}", e.message);

        let vac = find("storage.k8s.io", "v1", "volumeattributesclasses").expect("vac");
        let mut class = json!({"metadata": {"name": "silver"}, "driverName": "flexdisk/azure-disk",
            "parameters": {"diskIOPSReadWrite": "6000"}});
        on_create(vac, &mut class, &defaults()).expect("valid");
        let mut edited = class.clone();
        edited["parameters"]["diskIOPSReadWrite"] = json!("8000");
        assert!(on_update(vac, &class, &mut edited, &none).is_err());
        let mut nameless = json!({"metadata": {"name": "x"}, "parameters": {}});
        assert!(on_create(vac, &mut nameless, &defaults()).is_err());
    }

    #[test]
    fn volumes_need_one_source_and_classes_are_immutable() {
        let pv = find("", "v1", "persistentvolumes").expect("pv");
        let mut none = json!({"metadata": {"name": "pv1"}, "spec": {"accessModes": ["ReadWriteOnce"], "capacity": {"storage": "1Gi"}}});
        assert!(on_create(pv, &mut none, &defaults()).is_err());
        let mut ok = json!({"metadata": {"name": "pv1"}, "spec": {"accessModes": ["ReadWriteOnce"], "capacity": {"storage": "1Gi"}, "flexVolume": {"driver": "flexdisk/azure-disk"}}});
        on_create(pv, &mut ok, &defaults()).expect("valid");
        assert_eq!(ok["spec"]["persistentVolumeReclaimPolicy"], "Retain");
        // The keys kubelet adds are not the PV's to set (validateFlexPersistentVolumeSource).
        for key in [
            "kubernetes.io/readwrite",
            "Kubernetes.IO/fsType",
            "foo.k8s.io/x",
            "k8s.io",
        ] {
            let mut reserved = json!({"metadata": {"name": "pv2"}, "spec": {"accessModes": ["ReadWriteOnce"],
                "capacity": {"storage": "1Gi"}, "flexVolume": {"driver": "flexdisk/azure-disk",
                    "options": {"diskURI": "d", key: "ro"}}}});
            let e = on_create(pv, &mut reserved, &defaults()).expect_err(key);
            assert!(
                e.message.contains("namespaces are reserved"),
                "{}",
                e.message
            );
        }
        let mut own = json!({"metadata": {"name": "pv3"}, "spec": {"accessModes": ["ReadWriteOnce"],
            "capacity": {"storage": "1Gi"}, "flexVolume": {"driver": "flexdisk/azure-disk",
                "options": {"readOnly": "true", "flexdisk.example.com/x": "y", "notkubernetes.io/y": "z"}}}});
        on_create(pv, &mut own, &defaults()).expect("keys outside the reserved namespaces");
        let pod = find("", "v1", "pods").expect("pod");
        let mut inline = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}],
            "volumes": [{"name": "v", "flexVolume": {"driver": "flexdisk/azure-disk",
                "options": {"kubernetes.io/readwrite": "ro"}}}]}});
        let e = on_create(pod, &mut inline, &defaults()).expect_err("reserved");
        assert!(
            e.message.contains("spec.volumes[0].flexVolume.options"),
            "{}",
            e.message
        );
        let sc = find("storage.k8s.io", "v1", "storageclasses").expect("sc");
        let mut class = json!({"metadata": {"name": "fast"}, "provisioner": "flexdisk/azure-disk", "parameters": {"skuName": "Premium_LRS"}});
        on_create(sc, &mut class, &defaults()).expect("valid");
        assert_eq!(class["volumeBindingMode"], "Immediate");
        let mut edited = class.clone();
        edited["parameters"]["skuName"] = json!("Standard_LRS");
        assert!(on_update(sc, &class, &mut edited, &|_| None).is_err());
    }
}
