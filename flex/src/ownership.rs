//! Which PV a disk serves, told by its tags, and how an attach claims a disk for its PV (no I/O).
//!
//! `detach` is told only the PV's name, so the disk is found by its PV tag ([`PV_TAG`]); a tag
//! another PV's attach overwrote would make `detach` miss a disk that is attached. Azure's disk
//! API offers no conditional write to guard the tag with: `Disks_Update` and
//! `Disks_CreateOrUpdate` take no `If-Match` and the `Disk` model has no `etag`
//! (azure-rest-api-specs, `specification/compute/resource-manager/Microsoft.Compute/DiskRP/stable/2024-03-02/disk.json`,
//! the same in 2025-01-02; only the VM and scale-set operations of ComputeRP take `If-Match`).
//! So the tag is a lease instead:
//!
//! - An attach writes its PV's tag together with the moment it claimed the disk ([`CLAIM_TAG`],
//!   wall-clock seconds: other hosts read it). A claim older than [`REFRESH`] is renewed first.
//! - Another PV's attach leaves a disk alone while it is attached, and while its claim is younger
//!   than [`LEASE`] — attached or not, an attach of it may be in flight.
//! - An attach is sent only within [`SEND_WITHIN`] of its claim (the batch drops it after,
//!   `batch::Request::send_by`); Azure marks the disk owned the moment it accepts the attach. So
//!   no attach is ever in flight on a disk whose claim another PV may take over:
//!   `REFRESH + SEND_WITHIN` plus a margin for clock skew stays under `LEASE`.
//! - Every tag write goes out within [`CLAIM_WRITE_WITHIN`] of the read it was planned from, or
//!   not at all (`Arm::set_disk_tags`; the transport would otherwise retry it for minutes).
//! - After its attach, the attach reads the disk and writes its tag back if it is not its PV's
//!   (a writer that read the disk before the claim and wrote after); an attach that lost the disk
//!   to another VM puts back the tags it replaced. A claim read at least [`CONFIRM_AFTER`] old
//!   needs no such check: a writer that read the disk before it sent its last attempt within
//!   [`CLAIM_WRITE_WITHIN`] of that read, long before ([`needs_tag_check`]).

use flexdisk_azure::naming::{pv_of_tags, PV_TAG};
use flexdisk_azure::DiskInfo;
use std::collections::BTreeMap;
use std::time::Duration;

/// When the PV named by [`PV_TAG`] last claimed the disk for an attach: Unix seconds (UTC).
pub const CLAIM_TAG: &str = "k8s-flexdisk-claimed";

/// How long a claim keeps other PVs' attaches away from an unattached disk.
pub const LEASE: Duration = Duration::from_secs(60 * 60);

/// A claim older than this is renewed before the attach.
pub const REFRESH: Duration = Duration::from_secs(30 * 60);

/// How long after its claim an attach may still be sent.
pub const SEND_WITHIN: Duration = Duration::from_secs(20 * 60);

/// How long after the read it was planned from a tag write may still be sent, its retries
/// included.
pub const CLAIM_WRITE_WITHIN: Duration = Duration::from_secs(60);

/// A claim this old when the attach read it cannot be overwritten any more by a writer that read
/// the disk before the claim landed: the claim's own PATCH reached Azure at most
/// [`CLAIM_WRITE_WITHIN`] plus one attempt's time after its stamp, and that writer's last attempt
/// as long after its read. Ten minutes more for clock skew between hosts and for Azure's lag in
/// applying an accepted write (the margin the lease keeps too). Writers bound so are flexdisk's
/// from this version on: a PATCH of an older driver, still retrying across an upgrade, is not.
pub const CONFIRM_AFTER: Duration = Duration::from_secs(15 * 60);

/// Whether the attach must read the disk's tags again after attaching it (`attach::confirm_tag`):
/// after its own claim, and after a claim younger than [`CONFIRM_AFTER`] (or from another host's
/// clock ahead of ours: `age` 0) — a writer that read the disk before that claim may still write.
/// `age`: the claim's age when the disk was read.
pub fn needs_tag_check(plan: &TagPlan, age: Option<Duration>) -> bool {
    match plan {
        TagPlan::Keep => age.is_none_or(|a| a < CONFIRM_AFTER),
        TagPlan::Write(_) => true,
        TagPlan::Refuse(_) => false,
    }
}

/// What `attach` must do about the disk's tags before attaching it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagPlan {
    /// The disk says it serves this PV, claimed recently enough.
    Keep,
    /// Write these tags (the disk's own, our PV and a fresh claim).
    Write(BTreeMap<String, String>),
    Refuse(String),
}

/// The claim's age at `now` (Unix seconds); a claim from the future (another host's clock ahead)
/// is new. `None`: no claim (a disk tagged before claims, or by the provisioner).
pub fn claim_age(tags: &BTreeMap<String, String>, now: u64) -> Option<Duration> {
    let at: u64 = tags
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(CLAIM_TAG))?
        .1
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(now.saturating_sub(at)))
}

/// The disk's tags with `pv` claiming it at `now`; everyone else's tags kept.
pub fn claimed(tags: &BTreeMap<String, String>, pv: &str, now: u64) -> BTreeMap<String, String> {
    let mut tags = tags.clone();
    tags.retain(|k, _| !k.eq_ignore_ascii_case(PV_TAG) && !k.eq_ignore_ascii_case(CLAIM_TAG));
    tags.insert(PV_TAG.to_string(), pv.to_string());
    tags.insert(CLAIM_TAG.to_string(), now.to_string());
    tags
}

pub fn plan_tag(disk: &DiskInfo, pv: &str, now: u64) -> TagPlan {
    let age = claim_age(&disk.tags, now);
    match pv_of_tags(&disk.tags) {
        Some(p) if p == pv && age.is_some_and(|a| a < REFRESH) => TagPlan::Keep,
        Some(other) if other != pv && !disk.attached_to().is_empty() => TagPlan::Refuse(format!(
            "disk {} serves PV {other} (its tag {PV_TAG} or kubernetes.io-created-for-pv-name says so) and is attached to VM {}; \
             one disk backs one PV at a time — detach it from there (delete the pods using {other}) before using it as {pv}",
            disk.name,
            flexdisk_azure::error::vm_name_from_id(&disk.attached_to()[0])
        )),
        Some(other) if other != pv && age.is_some_and(|a| a < LEASE) => {
            let a = age.unwrap_or_default();
            TagPlan::Refuse(format!(
                "disk {} serves PV {other}: an attach of {other} claimed it {} min ago and may still be on its way ({CLAIM_TAG}); \
                 one disk backs one PV at a time — it can serve {pv} once that claim is {} min old and the disk still unattached \
                 (or once tags {PV_TAG} and {CLAIM_TAG} are removed from it)",
                disk.name,
                a.as_secs() / 60,
                LEASE.as_secs() / 60
            ))
        }
        _ => TagPlan::Write(claimed(&disk.tags, pv, now)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn disk(tags: &[(&str, &str)], attached: &[&str]) -> DiskInfo {
        DiskInfo {
            id: "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/disks/d".into(),
            name: "d".into(),
            location: "westus2".into(),
            size_gib: 1,
            sku: "Premium_LRS".into(),
            zones: vec![],
            managed_by: attached.first().map(|s| s.to_string()),
            managed_by_extended: vec![],
            provisioning_state: "Succeeded".into(),
            disk_state: "Unattached".into(),
            max_shares: None,
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            performance: Default::default(),
        }
    }

    fn ago(d: Duration) -> String {
        (NOW - d.as_secs()).to_string()
    }

    #[test]
    fn the_timing_leaves_no_attach_in_flight_past_the_lease() {
        // Ten minutes for clock skew between hosts and for Azure to show the disk owned.
        assert!(REFRESH + SEND_WITHIN + Duration::from_secs(600) <= LEASE);
    }

    #[test]
    fn an_aged_claim_outlives_every_stale_writer_before_it_is_renewed() {
        // The claim's landing and a stale writer's last attempt, each a window and one attempt
        // late, plus the margin for skew and Azure's lag.
        let late = CLAIM_WRITE_WITHIN + flexdisk_azure::ATTEMPT_TIMEOUT;
        assert!(2 * late + Duration::from_secs(600) <= CONFIRM_AFTER);
        // Else every kept claim would be checked: the skip would never apply.
        assert!(CONFIRM_AFTER < REFRESH);
    }

    #[test]
    fn the_tag_is_checked_after_a_fresh_or_young_claim_only() {
        let write = TagPlan::Write(BTreeMap::new());
        assert!(needs_tag_check(&write, None));
        assert!(needs_tag_check(&write, Some(REFRESH)));
        let young = CONFIRM_AFTER - Duration::from_secs(1);
        assert!(needs_tag_check(&TagPlan::Keep, Some(young)));
        assert!(needs_tag_check(&TagPlan::Keep, Some(Duration::ZERO)));
        assert!(!needs_tag_check(&TagPlan::Keep, Some(CONFIRM_AFTER)));
        assert!(!needs_tag_check(
            &TagPlan::Keep,
            Some(REFRESH - Duration::from_secs(1))
        ));
        assert!(!needs_tag_check(&TagPlan::Refuse("no".into()), None));
        // A claim from a host whose clock is ahead reads as age 0: young, checked.
        let ahead = (NOW + 300).to_string();
        let tags: BTreeMap<String, String> = [(CLAIM_TAG.to_string(), ahead)].into();
        assert!(needs_tag_check(&TagPlan::Keep, claim_age(&tags, NOW)));
    }

    #[test]
    fn a_recent_claim_of_this_pv_is_kept_and_an_old_one_renewed() {
        let recent = ago(Duration::from_secs(60));
        assert_eq!(
            plan_tag(
                &disk(&[(PV_TAG, "pv-1"), (CLAIM_TAG, &recent)], &[]),
                "pv-1",
                NOW
            ),
            TagPlan::Keep
        );
        let old = ago(REFRESH);
        match plan_tag(
            &disk(&[(PV_TAG, "pv-1"), (CLAIM_TAG, &old), ("team", "db")], &[]),
            "pv-1",
            NOW,
        ) {
            TagPlan::Write(t) => {
                assert_eq!(t.get(CLAIM_TAG), Some(&NOW.to_string()));
                assert_eq!(
                    t.get("team").map(String::as_str),
                    Some("db"),
                    "others' tags kept"
                );
            }
            other => panic!("{other:?}"),
        }
        // Tagged before claims existed, or by the provisioner only: claimed now.
        assert!(matches!(
            plan_tag(&disk(&[(PV_TAG, "pv-1")], &[]), "pv-1", NOW),
            TagPlan::Write(t) if t.get(PV_TAG).map(String::as_str) == Some("pv-1")
        ));
        assert!(matches!(
            plan_tag(&disk(&[("kubernetes.io-created-for-pv-name", "pvc-1")], &[]), "pvc-1", NOW),
            TagPlan::Write(t) if t.get(PV_TAG).map(String::as_str) == Some("pvc-1")
        ));
    }

    #[test]
    fn another_pvs_disk_is_taken_only_unattached_and_after_its_lease() {
        let vm =
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/node-b";
        assert!(matches!(
            plan_tag(&disk(&[(PV_TAG, "old")], &[vm]), "new", NOW),
            TagPlan::Refuse(m) if m.contains("serves PV old") && m.contains("node-b")
        ));
        // Unattached but claimed a minute ago: its attach may be in flight.
        let recent = ago(Duration::from_secs(60));
        assert!(matches!(
            plan_tag(&disk(&[(PV_TAG, "old"), (CLAIM_TAG, &recent)], &[]), "new", NOW),
            TagPlan::Refuse(m) if m.contains("serves PV old") && m.contains("may still be on its way")
        ));
        // A claim from a host whose clock is ahead counts as new.
        let ahead = (NOW + 300).to_string();
        assert!(matches!(
            plan_tag(
                &disk(&[(PV_TAG, "old"), (CLAIM_TAG, &ahead)], &[]),
                "new",
                NOW
            ),
            TagPlan::Refuse(_)
        ));
        // Free and its claim run out: reused for the new PV.
        let expired = ago(LEASE);
        assert!(matches!(
            plan_tag(&disk(&[(PV_TAG, "old"), (CLAIM_TAG, &expired)], &[]), "new", NOW),
            TagPlan::Write(t) if t.get(PV_TAG).map(String::as_str) == Some("new")
                && t.get(CLAIM_TAG) == Some(&NOW.to_string())
        ));
        assert!(matches!(
            plan_tag(&disk(&[(PV_TAG, "old")], &[]), "new", NOW),
            TagPlan::Write(_)
        ));
        // A disk the provisioner made before the flexdisk tag, attached: its own PV keeps it.
        assert!(matches!(
            plan_tag(
                &disk(&[("kubernetes.io-created-for-pv-name", "pvc-1")], &[vm]),
                "pvc-1",
                NOW
            ),
            TagPlan::Write(_)
        ));
    }
}
