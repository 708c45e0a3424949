//! StorageClass parameters → what the disk should be (no I/O).
//!
//! Keys are matched case-insensitively, as the in-tree azure-disk plugin did. Unknown keys are
//! refused by name rather than ignored: a typo in `skuName` would otherwise give a cheaper disk
//! than the admin asked for, silently.

use crate::naming::{parse_resource_id, ResourceKind};
use std::collections::BTreeMap;
use std::fmt;

/// The disk size from which Azure supports no host caching.
pub const NO_CACHING_FROM_GIB: u64 = 4096;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("StorageClass parameter `{key}`: {reason}")]
pub struct ParamError {
    pub key: String,
    pub reason: String,
}

fn err(key: &str, reason: impl Into<String>) -> ParamError {
    ParamError {
        key: key.to_string(),
        reason: reason.into(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sku {
    StandardLrs,
    PremiumLrs,
    StandardSsdLrs,
    UltraSsdLrs,
    PremiumZrs,
    StandardSsdZrs,
    PremiumV2Lrs,
}

impl Sku {
    pub const ALL: [Sku; 7] = [
        Sku::StandardLrs,
        Sku::PremiumLrs,
        Sku::StandardSsdLrs,
        Sku::UltraSsdLrs,
        Sku::PremiumZrs,
        Sku::StandardSsdZrs,
        Sku::PremiumV2Lrs,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Sku::StandardLrs => "Standard_LRS",
            Sku::PremiumLrs => "Premium_LRS",
            Sku::StandardSsdLrs => "StandardSSD_LRS",
            Sku::UltraSsdLrs => "UltraSSD_LRS",
            Sku::PremiumZrs => "Premium_ZRS",
            Sku::StandardSsdZrs => "StandardSSD_ZRS",
            Sku::PremiumV2Lrs => "PremiumV2_LRS",
        }
    }

    /// Zone-redundant: attachable in any zone, never pinned to one.
    pub fn is_zrs(self) -> bool {
        matches!(self, Sku::PremiumZrs | Sku::StandardSsdZrs)
    }

    /// Ultra and Premium SSD v2: provisioned IOPS/throughput, no host caching.
    pub fn is_v2_class(self) -> bool {
        matches!(self, Sku::UltraSsdLrs | Sku::PremiumV2Lrs)
    }
}

impl fmt::Display for Sku {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caching {
    None,
    ReadOnly,
    ReadWrite,
}

impl Caching {
    pub fn as_str(self) -> &'static str {
        match self {
            Caching::None => "None",
            Caching::ReadOnly => "ReadOnly",
            Caching::ReadWrite => "ReadWrite",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkAccess {
    AllowAll,
    AllowPrivate,
    DenyAll,
}

impl NetworkAccess {
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkAccess::AllowAll => "AllowAll",
            NetworkAccess::AllowPrivate => "AllowPrivate",
            NetworkAccess::DenyAll => "DenyAll",
        }
    }
}

/// A StorageClass's parameters, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskParams {
    pub sku: Sku,
    /// `None` when the class did not say (the default depends on the disk).
    pub caching: Option<Caching>,
    pub fs_type: String,
    pub location: Option<String>,
    pub resource_group: Option<String>,
    /// `zoned: "true"`: the disk goes in the zone of the node it is made for.
    pub zoned: bool,
    /// `zones`: the zones the disk may be put in (numbers, "1".."3").
    pub zones: Vec<String>,
    pub iops: Option<i64>,
    pub mbps: Option<i64>,
    pub max_shares: Option<i32>,
    pub tags: BTreeMap<String, String>,
    pub disk_encryption_set_id: Option<String>,
    pub network_access_policy: Option<NetworkAccess>,
    pub disk_access_id: Option<String>,
    pub logical_sector_size: Option<i32>,
    pub enable_bursting: Option<bool>,
}

pub const KNOWN_KEYS: &[&str] = &[
    "skuName",
    "storageAccountType",
    "kind",
    "cachingMode",
    "fsType",
    "location",
    "resourceGroup",
    "zoned",
    "zones",
    "diskIOPSReadWrite",
    "diskMBpsReadWrite",
    "maxShares",
    "tags",
    "diskEncryptionSetID",
    "networkAccessPolicy",
    "diskAccessID",
    "logicalSectorSize",
    "enableBursting",
];

pub const FS_TYPES: &[&str] = &["ext4", "ext3", "xfs", "btrfs"];

impl DiskParams {
    /// Checks a StorageClass's `parameters`.
    pub fn parse<'a>(
        params: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<DiskParams, ParamError> {
        let mut p = DiskParams {
            sku: Sku::StandardSsdLrs,
            caching: None,
            fs_type: "ext4".into(),
            location: None,
            resource_group: None,
            zoned: false,
            zones: Vec::new(),
            iops: None,
            mbps: None,
            max_shares: None,
            tags: BTreeMap::new(),
            disk_encryption_set_id: None,
            network_access_policy: None,
            disk_access_id: None,
            logical_sector_size: None,
            enable_bursting: None,
        };
        let mut seen: BTreeMap<&'static str, &str> = BTreeMap::new();
        for (key, value) in params {
            let canonical = KNOWN_KEYS
                .iter()
                .find(|k| k.eq_ignore_ascii_case(key))
                .ok_or_else(|| {
                    err(
                        key,
                        format!(
                            "is not a parameter of flexdisk/azure-disk; known parameters: {}",
                            KNOWN_KEYS.join(", ")
                        ),
                    )
                })?;
            let slot = if *canonical == "storageAccountType" {
                "skuName"
            } else {
                canonical
            };
            if let Some(previous) = seen.insert(slot, key) {
                return Err(err(key, format!("is given twice (also as `{previous}`)")));
            }
            p.set(canonical, key, value.trim())?;
        }
        p.check()?;
        Ok(p)
    }

    fn set(&mut self, canonical: &str, key: &str, v: &str) -> Result<(), ParamError> {
        match canonical {
            "skuName" | "storageAccountType" => {
                self.sku = Sku::ALL
                    .into_iter()
                    .find(|s| s.as_str().eq_ignore_ascii_case(v))
                    .ok_or_else(|| {
                        err(
                            key,
                            format!(
                                "{v:?} is not a managed disk SKU; use one of {}",
                                Sku::ALL.map(Sku::as_str).join(", ")
                            ),
                        )
                    })?
            }
            "kind" => match v.to_ascii_lowercase().as_str() {
                "managed" | "" => {}
                "shared" | "dedicated" => {
                    return Err(err(
                        key,
                        format!(
                            "{v:?} asks for an unmanaged (blob/VHD) disk; Azure retired unmanaged disks on \
                             2025-09-30, so only `managed` (the default) is possible — remove `kind`"
                        ),
                    ))
                }
                _ => return Err(err(key, format!("{v:?} is not a disk kind; the only kind is `managed`"))),
            },
            "cachingMode" => {
                self.caching = Some(
                    [Caching::None, Caching::ReadOnly, Caching::ReadWrite]
                        .into_iter()
                        .find(|c| c.as_str().eq_ignore_ascii_case(v))
                        .ok_or_else(|| err(key, format!("{v:?} is not a caching mode; use None, ReadOnly or ReadWrite")))?,
                )
            }
            "fsType" => {
                let f = v.to_ascii_lowercase();
                if !FS_TYPES.contains(&f.as_str()) {
                    return Err(err(key, format!("{v:?} is not supported; use one of {}", FS_TYPES.join(", "))));
                }
                self.fs_type = f;
            }
            "location" => self.location = Some(non_empty(key, v)?.to_ascii_lowercase().replace(' ', "")),
            "resourceGroup" => self.resource_group = Some(resource_group_name(key, v)?),
            "zoned" => self.zoned = boolean(key, v)?,
            "zones" => {
                self.zones = v
                    .split(',')
                    .map(str::trim)
                    .filter(|z| !z.is_empty())
                    .map(|z| zone_number(key, z))
                    .collect::<Result<_, _>>()?;
                if self.zones.is_empty() {
                    return Err(err(key, "is empty; list zones like \"1,2\""));
                }
            }
            "diskIOPSReadWrite" => self.iops = Some(positive(key, v)?),
            "diskMBpsReadWrite" => self.mbps = Some(positive(key, v)?),
            "maxShares" => {
                let n = positive(key, v)?;
                self.max_shares = Some(i32::try_from(n).map_err(|_| err(key, "is too large"))?);
            }
            "tags" => self.tags = tags(key, v)?,
            "diskEncryptionSetID" => {
                parse_resource_id(v, ResourceKind::DiskEncryptionSet).map_err(|e| err(key, e))?;
                self.disk_encryption_set_id = Some(v.to_string());
            }
            "networkAccessPolicy" => {
                self.network_access_policy = Some(
                    [NetworkAccess::AllowAll, NetworkAccess::AllowPrivate, NetworkAccess::DenyAll]
                        .into_iter()
                        .find(|n| n.as_str().eq_ignore_ascii_case(v))
                        .ok_or_else(|| err(key, format!("{v:?} is not a policy; use AllowAll, AllowPrivate or DenyAll")))?,
                )
            }
            "diskAccessID" => {
                parse_resource_id(v, ResourceKind::DiskAccess).map_err(|e| err(key, e))?;
                self.disk_access_id = Some(v.to_string());
            }
            "logicalSectorSize" => match v {
                "512" => self.logical_sector_size = Some(512),
                "4096" => self.logical_sector_size = Some(4096),
                _ => return Err(err(key, format!("{v:?} is not a sector size; use 512 or 4096"))),
            },
            "enableBursting" => self.enable_bursting = Some(boolean(key, v)?),
            _ => {}
        }
        Ok(())
    }

    /// Rules that involve more than one parameter.
    fn check(&self) -> Result<(), ParamError> {
        let v2_only = |key: &str| {
            err(
                key,
                format!(
                    "is only for UltraSSD_LRS and PremiumV2_LRS disks, not {}",
                    self.sku
                ),
            )
        };
        if self.iops.is_some() && !self.sku.is_v2_class() {
            return Err(v2_only("diskIOPSReadWrite"));
        }
        if self.mbps.is_some() && !self.sku.is_v2_class() {
            return Err(v2_only("diskMBpsReadWrite"));
        }
        if self.logical_sector_size.is_some() && !self.sku.is_v2_class() {
            return Err(v2_only("logicalSectorSize"));
        }
        if self.network_access_policy == Some(NetworkAccess::AllowPrivate)
            && self.disk_access_id.is_none()
        {
            return Err(err(
                "networkAccessPolicy",
                "AllowPrivate needs diskAccessID (the disk access resource to allow)",
            ));
        }
        if self.disk_access_id.is_some()
            && self.network_access_policy != Some(NetworkAccess::AllowPrivate)
        {
            return Err(err(
                "diskAccessID",
                "is only used with networkAccessPolicy: AllowPrivate",
            ));
        }
        if self.max_shares.unwrap_or(1) > 1
            && matches!(self.caching, Some(Caching::ReadOnly | Caching::ReadWrite))
        {
            return Err(err(
                "cachingMode",
                "shared disks (maxShares > 1) support caching None only",
            ));
        }
        if self.sku.is_zrs() && (self.zoned || !self.zones.is_empty()) {
            return Err(err(
                if self.zoned { "zoned" } else { "zones" },
                format!(
                    "{} disks are zone-redundant and cannot be pinned to a zone; remove it or use an LRS SKU",
                    self.sku
                ),
            ));
        }
        Ok(())
    }

    /// The host caching a disk of `size_gib` gets: the class's choice, but `None` where Azure
    /// supports nothing else (≥ 4096 GiB, Ultra, Premium SSD v2, shared disks). Defaults to
    /// `ReadOnly`, as the in-tree plugin did.
    pub fn caching_for(&self, size_gib: u64) -> Caching {
        if size_gib >= NO_CACHING_FROM_GIB
            || self.sku.is_v2_class()
            || self.max_shares.unwrap_or(1) > 1
        {
            Caching::None
        } else {
            self.caching.unwrap_or(Caching::ReadOnly)
        }
    }

    /// The zone for a new disk, given the zone of the node it is for (if known) and the zones
    /// the claim's topology allows. `Ok(None)`: a regional disk.
    pub fn zone_for(
        &self,
        node_zone: Option<&str>,
        allowed: &[String],
    ) -> Result<Option<String>, ParamError> {
        if self.sku.is_zrs() || (!self.zoned && self.zones.is_empty() && node_zone.is_none()) {
            return Ok(None);
        }
        let permitted = |z: &str| {
            (self.zones.is_empty() || self.zones.iter().any(|a| a == z))
                && (allowed.is_empty() || allowed.iter().any(|a| a == z))
        };
        if let Some(z) = node_zone.filter(|z| !z.is_empty()) {
            if permitted(z) {
                return Ok(Some(z.to_string()));
            }
            return Err(err(
                "zones",
                format!(
                    "the node is in zone {z}, which the class's zones {:?} do not include",
                    self.zones
                ),
            ));
        }
        if !self.zoned && self.zones.is_empty() {
            return Ok(None);
        }
        let candidates: Vec<&String> = if self.zones.is_empty() {
            allowed.iter().collect()
        } else {
            self.zones.iter().filter(|z| permitted(z)).collect()
        };
        candidates
            .first()
            .map(|z| Some(z.to_string()))
            .ok_or_else(|| {
                err(
                    "zoned",
                    "a zonal disk needs a zone: use volumeBindingMode WaitForFirstConsumer or list `zones`",
                )
            })
    }
}

fn non_empty<'a>(key: &str, v: &'a str) -> Result<&'a str, ParamError> {
    if v.is_empty() {
        Err(err(key, "is empty"))
    } else {
        Ok(v)
    }
}

fn boolean(key: &str, v: &str) -> Result<bool, ParamError> {
    match v.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(err(key, format!("{v:?} is not true or false"))),
    }
}

fn positive(key: &str, v: &str) -> Result<i64, ParamError> {
    v.parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| err(key, format!("{v:?} is not a positive whole number")))
}

/// "1", "westus2-1" (a topology label value) → "1".
fn zone_number(key: &str, z: &str) -> Result<String, ParamError> {
    let n = z.rsplit('-').next().unwrap_or(z);
    if !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()) {
        Ok(n.to_string())
    } else {
        Err(err(
            key,
            format!("{z:?} is not a zone; use numbers like \"1,2\""),
        ))
    }
}

fn resource_group_name(key: &str, v: &str) -> Result<String, ParamError> {
    let ok = !v.is_empty()
        && v.len() <= 90
        && !v.ends_with('.')
        && v.chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | '(' | ')'));
    if ok {
        Ok(v.to_string())
    } else {
        Err(err(key, format!("{v:?} is not a resource group name (1-90 letters, digits, - _ . ( ), not ending in .)")))
    }
}

/// `key1=value1,key2=value2`, as the in-tree plugin took them.
fn tags(key: &str, v: &str) -> Result<BTreeMap<String, String>, ParamError> {
    let mut out = BTreeMap::new();
    for pair in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, val) = pair
            .split_once('=')
            .ok_or_else(|| err(key, format!("{pair:?} is not key=value")))?;
        let k = k.trim();
        if k.is_empty() || k.len() > 512 || k.contains(['<', '>', '%', '&', '\\', '?', '/']) {
            return Err(err(key, format!("{k:?} is not a valid Azure tag name")));
        }
        if out.insert(k.to_string(), val.trim().to_string()).is_some() {
            return Err(err(key, format!("tag {k:?} is given twice")));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<DiskParams, ParamError> {
        DiskParams::parse(pairs.iter().copied())
    }

    #[test]
    fn defaults() {
        let p = parse(&[]).expect("empty is fine");
        assert_eq!(p.sku, Sku::StandardSsdLrs);
        assert_eq!(p.fs_type, "ext4");
        assert_eq!(p.caching_for(100), Caching::ReadOnly);
        assert_eq!(p.zone_for(None, &[]), Ok(None));
    }

    #[test]
    fn keys_are_case_insensitive_and_alias_works() {
        let p = parse(&[
            ("SKUNAME", "premium_lrs"),
            ("cachingmode", "none"),
            ("FsType", "XFS"),
        ])
        .expect("ok");
        assert_eq!(p.sku, Sku::PremiumLrs);
        assert_eq!(p.caching, Some(Caching::None));
        assert_eq!(p.fs_type, "xfs");
        let p = parse(&[("storageaccounttype", "Premium_ZRS")]).expect("alias");
        assert_eq!(p.sku, Sku::PremiumZrs);
        let e = parse(&[
            ("skuName", "Premium_LRS"),
            ("storageAccountType", "Standard_LRS"),
        ])
        .expect_err("twice");
        assert!(e.to_string().contains("given twice"), "{e}");
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let e = parse(&[("skuname", "Premium_LRS"), ("cachngMode", "None")]).expect_err("typo");
        assert_eq!(e.key, "cachngMode");
        assert!(e.to_string().contains("known parameters: skuName"), "{e}");
    }

    #[test]
    fn unmanaged_kinds_are_refused_with_the_retirement() {
        for kind in ["shared", "Dedicated"] {
            let e = parse(&[("kind", kind)]).expect_err("retired");
            assert!(
                e.to_string()
                    .contains("retired unmanaged disks on 2025-09-30"),
                "{e}"
            );
        }
        assert!(parse(&[("kind", "Managed")]).is_ok());
    }

    #[test]
    fn caching_is_forced_to_none_where_azure_requires() {
        let p = parse(&[("skuName", "Premium_LRS"), ("cachingMode", "ReadWrite")]).expect("ok");
        assert_eq!(p.caching_for(1024), Caching::ReadWrite);
        assert_eq!(p.caching_for(4096), Caching::None);
        let v2 = parse(&[("skuName", "PremiumV2_LRS"), ("cachingMode", "ReadOnly")]).expect("ok");
        assert_eq!(v2.caching_for(10), Caching::None);
        let ultra = parse(&[("skuName", "UltraSSD_LRS")]).expect("ok");
        assert_eq!(ultra.caching_for(10), Caching::None);
    }

    #[test]
    fn performance_knobs_only_for_v2_class() {
        let e =
            parse(&[("skuName", "Premium_LRS"), ("diskIOPSReadWrite", "5000")]).expect_err("no");
        assert_eq!(e.key, "diskIOPSReadWrite");
        let p = parse(&[
            ("skuName", "PremiumV2_LRS"),
            ("diskIOPSReadWrite", "5000"),
            ("diskMBpsReadWrite", "200"),
            ("logicalSectorSize", "4096"),
        ])
        .expect("ok");
        assert_eq!(
            (p.iops, p.mbps, p.logical_sector_size),
            (Some(5000), Some(200), Some(4096))
        );
        assert!(parse(&[("skuName", "UltraSSD_LRS"), ("diskIOPSReadWrite", "-1")]).is_err());
    }

    #[test]
    fn tags_and_ids() {
        let p = parse(&[("tags", "team=storage, env = prod")]).expect("ok");
        assert_eq!(p.tags.get("env").map(String::as_str), Some("prod"));
        assert!(parse(&[("tags", "novalue")]).is_err());
        let des =
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/diskEncryptionSets/des";
        assert!(parse(&[("diskEncryptionSetID", des)]).is_ok());
        let e = parse(&[(
            "diskEncryptionSetID",
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/disks/d",
        )])
        .expect_err("wrong kind");
        assert_eq!(e.key, "diskEncryptionSetID");
        let access =
            "/subscriptions/s/resourcegroups/rg/providers/Microsoft.Compute/diskAccesses/a";
        assert!(parse(&[
            ("networkAccessPolicy", "AllowPrivate"),
            ("diskAccessID", access)
        ])
        .is_ok());
        assert!(parse(&[("networkAccessPolicy", "AllowPrivate")]).is_err());
    }

    #[test]
    fn zones() {
        let p = parse(&[("zoned", "true")]).expect("ok");
        assert_eq!(p.zone_for(Some("2"), &[]), Ok(Some("2".into())));
        assert!(p.zone_for(None, &[]).is_err());
        assert_eq!(p.zone_for(None, &["3".into()]), Ok(Some("3".into())));
        let p = parse(&[("zones", "westus2-1, 3")]).expect("ok");
        assert_eq!(p.zones, vec!["1", "3"]);
        assert_eq!(p.zone_for(None, &[]), Ok(Some("1".into())));
        assert!(p.zone_for(Some("2"), &[]).is_err());
        let zrs = parse(&[("skuName", "Premium_ZRS")]).expect("ok");
        assert_eq!(zrs.zone_for(Some("2"), &[]), Ok(None));
        assert!(parse(&[("skuName", "Premium_ZRS"), ("zoned", "true")]).is_err());
        // An LRS disk made for a zonal node is zonal even without `zoned`.
        let lrs = parse(&[]).expect("ok");
        assert_eq!(lrs.zone_for(Some("1"), &[]), Ok(Some("1".into())));
    }

    #[test]
    fn shared_disks() {
        let p = parse(&[("skuName", "Premium_LRS"), ("maxShares", "2")]).expect("ok");
        assert_eq!(p.caching_for(10), Caching::None);
        assert!(parse(&[("maxShares", "2"), ("cachingMode", "ReadOnly")]).is_err());
        assert!(parse(&[("maxShares", "0")]).is_err());
    }
}
