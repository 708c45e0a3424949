//! What every reconcile shares: clients, watch caches, back-off, the ARM write budget, events.

use crate::decide::Cluster;
use crate::error::Error;
use crate::events::Recorder;
use flexdisk_azure::Arm;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Per-object exponential back-off (by default 1 s doubling to 5 min — external-provisioner's
/// `--retry-interval-start` and `--retry-interval-max` defaults (its workqueue's
/// ItemExponentialFailureRateLimiter)), forgotten on success; a longer wait the error asks for
/// (Azure's Retry-After, the write budget) wins. Only objects that are failing have an entry; one
/// not seen failing for twice the longest delay (deleted meanwhile, or well again) is forgotten.
pub struct Backoff {
    entries: std::sync::Mutex<std::collections::HashMap<String, (u32, Instant)>>,
    base: Duration,
    max: Duration,
}

pub const BACKOFF_MAX: Duration = Duration::from_secs(300);

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(Duration::from_secs(1), BACKOFF_MAX)
    }
}

impl Backoff {
    /// `base` doubling up to `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            entries: Default::default(),
            base,
            max,
        }
    }

    pub fn next(&self, key: &str, e: &Error) -> Duration {
        let mut m = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let forget_after = 2 * self.max;
        m.retain(|_, (_, last)| now.duration_since(*last) < forget_after);
        let (n, last) = m.entry(key.to_string()).or_insert((0, now));
        let d = self.base.saturating_mul(1u32 << (*n).min(20)).min(self.max);
        *n = n.saturating_add(1);
        *last = now;
        e.retry_after().map_or(d, |r| r.max(d))
    }

    pub fn forget(&self, key: &str) {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    /// How many objects are backing off.
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// When a bound claim's resize or modify wants to be looked at again: both run, and the sooner
/// of the two wins (kube-runtime's `Action` keeps its delay to itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Again {
    /// When something that matters changes (triggers.rs), or the slow resync.
    OnChange,
    After(Duration),
}

impl Again {
    pub fn sooner(a: Option<Again>, b: Option<Again>) -> Option<Again> {
        match (a, b) {
            (Some(Again::After(x)), Some(Again::After(y))) => Some(Again::After(x.min(y))),
            (Some(Again::After(x)), _) | (_, Some(Again::After(x))) => Some(Again::After(x)),
            (a, b) => a.or(b),
        }
    }

    pub fn action(self) -> kube::runtime::controller::Action {
        match self {
            Again::OnChange => kube::runtime::controller::Action::await_change(),
            Again::After(d) => kube::runtime::controller::Action::requeue(d),
        }
    }
}

/// How often a claim that waits for a change is looked at anyway, as the library's informers
/// resync (`DefaultResyncPeriod`, 15 min, in sig-storage-lib-external-provisioner).
pub const RESYNC: Duration = Duration::from_secs(15 * 60);

/// The sizes Azure refused to grow each claim to, by claim uid (the last one): tried again
/// only on the slow resync or when the request changes (external-resizer's slowSet, [`recent`]),
/// and remembered until the claim grows — or for a day — so that kube-controller-manager's
/// hand-over of such a size to the node wakes the controller whenever it comes ([`ever`]).
///
/// [`recent`]: Refusals::recent
/// [`ever`]: Refusals::ever
#[derive(Default)]
pub struct Refusals(std::sync::Mutex<HashMap<String, (u64, Instant, String)>>);

/// How long a refusal is remembered for the trigger at most (a claim gone meanwhile leaves
/// its entry until then).
const REFUSALS_KEPT: Duration = Duration::from_secs(24 * 3600);

impl Refusals {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, (u64, Instant, String)>) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn record(&self, uid: &str, target: u64, why: &str) {
        self.record_at(uid, target, why, Instant::now());
    }

    fn record_at(&self, uid: &str, target: u64, why: &str, now: Instant) {
        self.with(|all| {
            all.retain(|_, (_, at, _)| now.saturating_duration_since(*at) < REFUSALS_KEPT);
            all.insert(uid.to_string(), (target, now, why.to_string()));
        });
    }

    /// Why growing `uid` to `target` was refused, if that was less than [`RESYNC`] ago.
    pub fn recent(&self, uid: &str, target: u64) -> Option<String> {
        self.recent_at(uid, target, Instant::now())
    }

    fn recent_at(&self, uid: &str, target: u64, now: Instant) -> Option<String> {
        self.with(|all| {
            all.get(uid)
                .filter(|(t, at, _)| *t == target && now.saturating_duration_since(*at) < RESYNC)
                .map(|(_, _, why)| why.clone())
        })
    }

    /// Whether growing `uid` to `target` was refused and the claim has not grown since.
    pub fn ever(&self, uid: &str, target: u64) -> bool {
        self.with(|all| all.get(uid).is_some_and(|(t, _, _)| *t == target))
    }

    /// The claim grew: what was refused before no longer holds.
    pub fn forget(&self, uid: &str) {
        self.with(|all| all.remove(uid));
    }
}

pub struct Ctx {
    /// Watch caches (as the library reads informers): answers that may lag a moment behind the
    /// API server, for decisions a fresh read confirms where lagging would matter.
    pub volumes: Store<PersistentVolume>,
    pub classes: Store<StorageClass>,
    /// Pods, for the claims they use (external-resizer's `inuse_pvc_store.go`): a disk Azure
    /// grows only while detached waits until no pod uses its claim.
    pub pods: Store<Pod>,
    pub backoff: Backoff,
    /// For changes Azure refuses for a while (a disk's performance set too often today): a minute
    /// doubling to an hour.
    pub slow_backoff: Backoff,
    /// Claims whose growth Azure refused while the disk was attached: looked at again when a pod
    /// that used one goes.
    /// Each with the claim's uid and the size Azure refused to grow to while attached.
    pub detach_waiters: std::sync::Mutex<HashMap<ObjectRef<PersistentVolumeClaim>, (String, u64)>>,
    /// Sizes Azure refused to grow claims to (see [`Refusals`]).
    pub refused_sizes: Refusals,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub client: Client,
    pub arm: Arm,
    pub name: String,
    pub cluster: Cluster,
    pub recorder: Arc<Recorder>,
}

impl Ctx {
    /// Whether the claim waits for its disk to be detached before growing to `target`. An entry
    /// of another claim of that name, or for another size, is dropped.
    pub fn waits_for_detach(
        &self,
        claim: &ObjectRef<PersistentVolumeClaim>,
        uid: &str,
        target: Option<u64>,
    ) -> bool {
        let mut all = self
            .detach_waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match all.get(claim) {
            Some((u, t)) if u == uid && Some(*t) == target => true,
            Some(_) => {
                all.remove(claim);
                false
            }
            None => false,
        }
    }

    pub fn wait_for_detach(&self, claim: ObjectRef<PersistentVolumeClaim>, uid: &str, target: u64) {
        self.detach_waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(claim, (uid.to_string(), target));
    }

    pub fn stop_waiting_for_detach(&self, claim: &ObjectRef<PersistentVolumeClaim>) {
        self.detach_waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(claim);
    }

    /// Why growing the claim `uid` to `target` was refused, if that was less than [`RESYNC`]
    /// ago.
    pub fn refused_recently(&self, uid: &str, target: u64) -> Option<String> {
        self.refused_sizes.recent(uid, target)
    }

    pub fn size_refused(&self, uid: &str, target: u64, why: &str) {
        self.refused_sizes.record(uid, target, why);
    }

    /// [`Ctx::event`] from where nothing can be awaited (a controller's error policy).
    pub fn event_soon<K>(
        self: &Arc<Self>,
        obj: Arc<K>,
        type_: EventType,
        reason: &'static str,
        note: String,
    ) where
        K: Resource<DynamicType = ()> + Send + Sync + 'static,
    {
        let ctx = self.clone();
        tokio::spawn(async move { ctx.event(&*obj, type_, reason, note).await });
    }

    pub async fn event<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        self.recorder
            .publish(&obj.object_ref(&()), type_, reason, "Provision", note)
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flexdisk_azure::AzureError;

    #[test]
    fn a_refusal_is_retried_after_the_resync_and_remembered_until_the_claim_grows() {
        let r = Refusals::default();
        r.record("u1", 40 << 30, "too big");
        assert_eq!(r.recent("u1", 40 << 30).as_deref(), Some("too big"));
        assert!(r.recent("u1", 8 << 30).is_none(), "another size");
        assert!(r.ever("u1", 40 << 30) && !r.ever("u2", 40 << 30));
        // Older than the resync: asked again, but still known to the trigger.
        let now = Instant::now();
        assert!(r.recent_at("u1", 40 << 30, now + RESYNC).is_none());
        assert!(r.ever("u1", 40 << 30));
        r.forget("u1");
        assert!(!r.ever("u1", 40 << 30));
        // A day old: dropped when the next refusal is recorded.
        r.record_at("u3", 1, "x", now);
        r.record_at("u4", 2, "y", now + REFUSALS_KEPT);
        assert!(!r.ever("u3", 1) && r.ever("u4", 2));
    }

    #[test]
    fn backoff_doubles_caps_resets_and_honours_retry_after() {
        let b = Backoff::default();
        let plain = Error::Internal("x".into());
        let d: Vec<u64> = (0..12).map(|_| b.next("a", &plain).as_secs()).collect();
        assert_eq!(d, vec![1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(b.next("other", &plain).as_secs(), 1, "per object");
        b.forget("a");
        assert_eq!(b.next("a", &plain).as_secs(), 1);
        b.forget("a");
        b.forget("other");
        assert!(b.is_empty(), "a success leaves nothing behind");
        let throttled = Error::Azure(AzureError::Throttled {
            retry_after: Some(Duration::from_secs(40)),
            message: String::new(),
        });
        assert_eq!(b.next("c", &throttled).as_secs(), 40);
        let deferred = Error::Azure(AzureError::Deferred {
            retry_after: Duration::from_secs(600),
            message: String::new(),
        });
        assert_eq!(b.next("d", &deferred).as_secs(), 600);
    }
}
