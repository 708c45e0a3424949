//! The JSON options kubelet passes: the PV's `flexVolume.options` merged over the `kubernetes.io/*`
//! keys it adds.

use crate::error::{Error, Result};
use flexdisk_azure::naming::{parse_resource_id, ResourceId, ResourceKind};
use flexdisk_azure::params::FS_TYPES;
use flexdisk_azure::Caching;
use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq)]
pub struct VolumeOptions {
    pub disk: ResourceId,
    pub disk_uri: String,
    pub fs_type: String,
    pub read_only: bool,
    pub caching: Option<Caching>,
    pub volume_name: Option<String>,
    pub mount_options: Vec<String>,
}

fn get<'a>(m: &'a Map<String, Value>, keys: &[&str]) -> Option<&'a str> {
    keys.iter()
        .find_map(|k| {
            m.iter()
                .find(|(mk, _)| mk.eq_ignore_ascii_case(k))
                .map(|(_, v)| v)
        })
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

impl VolumeOptions {
    pub fn parse(m: &Map<String, Value>) -> Result<VolumeOptions> {
        let disk_uri = get(m, &["diskURI"]).ok_or_else(|| Error::Options(
            "the volume's options lack diskURI (the managed disk's resource ID); set flexVolume.options.diskURI in the PV".into(),
        ))?;
        let disk = parse_resource_id(disk_uri, ResourceKind::Disk)
            .map_err(|e| Error::Options(format!("diskURI: {e}")))?;
        let fs_type = get(m, &["kubernetes.io/fsType", "fsType"])
            .unwrap_or("ext4")
            .to_ascii_lowercase();
        if !FS_TYPES.contains(&fs_type.as_str()) {
            return Err(Error::Options(format!(
                "fsType {fs_type:?} is not supported; use one of {}",
                FS_TYPES.join(", ")
            )));
        }
        let read_only = match get(m, &["kubernetes.io/readwrite"]).unwrap_or("rw") {
            "ro" => true,
            "rw" => false,
            other => {
                return Err(Error::Options(format!(
                    "kubernetes.io/readwrite is {other:?}; expected ro or rw"
                )))
            }
        };
        // The PV's own way to be read-only in every call: kube-apiserver refuses PV options in
        // the kubernetes.io namespace (validateFlexPersistentVolumeSource), and kubelet's
        // `kubernetes.io/readwrite` follows the pod's claim, not the PV (getReadOnly, kubernetes
        // `pkg/volume/flexvolume/util.go`).
        let pinned = match get(m, &["readOnly"]) {
            None => false,
            Some(v) if v.eq_ignore_ascii_case("true") => true,
            Some(v) if v.eq_ignore_ascii_case("false") => false,
            Some(other) => {
                return Err(Error::Options(format!(
                    "readOnly is {other:?}; expected \"true\" or \"false\""
                )))
            }
        };
        let read_only = read_only || pinned;
        let caching = match get(m, &["cachingMode", "cachingmode"]) {
            None => None,
            Some(c) => Some(
                [Caching::None, Caching::ReadOnly, Caching::ReadWrite]
                    .into_iter()
                    .find(|x| x.as_str().eq_ignore_ascii_case(c))
                    .ok_or_else(|| {
                        Error::Options(format!(
                            "cachingMode {c:?} is not None, ReadOnly or ReadWrite"
                        ))
                    })?,
            ),
        };
        if let Some(kind) = get(m, &["kind"]) {
            if !kind.eq_ignore_ascii_case("managed") {
                return Err(Error::Options(format!(
                    "kind {kind:?}: Azure retired unmanaged disks on 2025-09-30; only managed disks are supported"
                )));
            }
        }
        let mount_options: Vec<String> = get(m, &["mountOptions"])
            .map(|o| {
                o.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        // A read-only mount option makes the volume read-only for every decision (never formatted).
        let read_only = read_only || mount_options.iter().any(|o: &String| o == "ro");
        Ok(VolumeOptions {
            disk_uri: disk.to_string(),
            disk,
            fs_type,
            read_only,
            caching,
            volume_name: get(m, &["kubernetes.io/pvOrVolumeName"]).map(str::to_string),
            mount_options,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn opts(v: Value) -> std::result::Result<VolumeOptions, String> {
        VolumeOptions::parse(v.as_object().expect("object")).map_err(|e| e.to_string())
    }

    #[test]
    fn options() {
        let o = opts(json!({"diskURI": "/subscriptions/s/resourcegroups/rg/providers/Microsoft.Compute/disks/d",
            "kubernetes.io/fsType": "XFS", "kubernetes.io/readwrite": "ro", "kubernetes.io/pvOrVolumeName": "pv-1",
            "cachingMode": "none", "mountOptions": "noatime, discard"})).expect("valid");
        assert_eq!(o.disk.name, "d");
        assert_eq!(o.fs_type, "xfs");
        assert!(o.read_only);
        assert_eq!(o.caching, Some(Caching::None));
        assert_eq!(o.volume_name.as_deref(), Some("pv-1"));
        assert_eq!(o.mount_options, vec!["noatime", "discard"]);
        assert!(opts(json!({}))
            .expect_err("no uri")
            .contains("lack diskURI"));
        assert!(opts(json!({"diskURI": "nope"}))
            .expect_err("bad uri")
            .starts_with("diskURI:"));
        let uri = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/disks/d";
        assert!(opts(json!({"diskURI": uri, "kubernetes.io/fsType": "zfs"}))
            .expect_err("fs")
            .contains("not supported"));
        // A read-only PV is read-only whatever the pod's claim says; a bad value is refused.
        let pinned =
            opts(json!({"diskURI": uri, "readOnly": "true", "kubernetes.io/readwrite": "rw"}))
                .expect("valid");
        assert!(pinned.read_only);
        let open =
            opts(json!({"diskURI": uri, "readOnly": "False", "kubernetes.io/readwrite": "rw"}))
                .expect("valid");
        assert!(!open.read_only);
        assert!(opts(json!({"diskURI": uri, "readOnly": "yes"}))
            .expect_err("readOnly")
            .contains("expected \"true\" or \"false\""));
        assert!(opts(json!({"diskURI": uri, "kind": "dedicated"}))
            .expect_err("kind")
            .contains("retired"));
    }
}
