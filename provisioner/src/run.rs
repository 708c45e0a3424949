//! Wiring: clients, the two controllers (claims, volumes), leader election, shutdown.

use crate::cli::Cli;
use crate::decide::Cluster;
use flexdisk_azure::{Arm, ArmOptions, AzureError, Config};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::runtime::controller::{Config as ControllerConfig, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource, ResourceExt};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{error, info, warn};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("Azure: {0}")]
    Azure(#[from] AzureError),
    #[error("{0}")]
    Internal(String),
    /// Something has to happen elsewhere first (a StorageClass created, a clone's source bound):
    /// tried again with back-off.
    #[error("{0}")]
    Waiting(String),
    /// A write lost to a newer version of the object: tried again with back-off, no event.
    #[error("{0}")]
    Stale(String),
}

impl Error {
    /// What Azure asked for (throttling), if anything.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Azure(e) => e.retry_after(),
            _ => None,
        }
    }
}

/// Per-object exponential back-off, 1 s doubling to 5 min — external-provisioner's
/// `--retry-interval-start` and `--retry-interval-max` defaults (its workqueue's
/// ItemExponentialFailureRateLimiter) — forgotten on success; Azure's Retry-After wins when longer.
/// Only objects that are failing have an entry; one not seen failing for twice the longest delay
/// (deleted meanwhile, or well again) is forgotten too.
#[derive(Default)]
pub struct Backoff(std::sync::Mutex<std::collections::HashMap<String, (u32, Instant)>>);

const BACKOFF_MAX: Duration = Duration::from_secs(300);

impl Backoff {
    pub fn next(&self, key: &str, e: &Error) -> Duration {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        m.retain(|_, (_, last)| now.duration_since(*last) < 2 * BACKOFF_MAX);
        let (n, last) = m.entry(key.to_string()).or_insert((0, now));
        let d = Duration::from_secs(1u64 << (*n).min(9)).min(BACKOFF_MAX);
        *n = n.saturating_add(1);
        *last = now;
        e.retry_after().map_or(d, |r| r.max(d))
    }

    pub fn forget(&self, key: &str) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }

    /// How many objects are backing off.
    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How often a claim that waits for a change is looked at anyway, as the library's informers
/// resync (`DefaultResyncPeriod`, 15 min, in sig-storage-lib-external-provisioner).
pub const RESYNC: Duration = Duration::from_secs(15 * 60);

pub struct Ctx {
    /// Watch caches (as the library reads informers): answers that may lag a moment behind the
    /// API server, for decisions a fresh read confirms where lagging would matter.
    pub volumes: Store<PersistentVolume>,
    pub classes: Store<StorageClass>,
    pub backoff: Backoff,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub client: Client,
    pub arm: Arm,
    pub name: String,
    pub cluster: Cluster,
    pub recorder: Recorder,
}

impl Ctx {
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
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: "Provision".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &obj.object_ref(&())).await {
            warn!("cannot publish event {reason}: {e}");
        }
    }
}

async fn kube_client(cli: &Cli) -> anyhow::Result<Client> {
    let config = match &cli.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?
        }
        None => kube::Config::infer().await?,
    };
    Ok(Client::try_from(config)?)
}

pub async fn main(cli: Cli) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(format!(
            "{},{}",
            cli.log,
            flexdisk_azure::QUIET_DEPENDENCIES
        ))?)
        .with_writer(std::io::stderr)
        .init();
    // kube's TLS and azure_identity's both bring rustls crypto providers: name one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = kube_client(&cli).await?;
    let config = Config::load(&cli.cloud_config)?;
    for w in &config.warnings {
        warn!("{w}");
    }
    let arm = Arm::connect(&config, ArmOptions::default()).await?;
    let metrics = Arc::new(crate::metrics::Metrics::default());
    let identity = cli
        .identity
        .clone()
        .unwrap_or_else(|| format!("flexdisk-provisioner-{}", std::process::id()));
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "flexdisk-provisioner".into(),
            instance: Some(identity.clone()),
        },
    );
    let volumes = Controller::new(
        Api::<PersistentVolume>::all(client.clone()),
        watcher::Config::default(),
    );
    let (classes, class_writer) = reflector::store::<StorageClass>();
    let ctx = Arc::new(Ctx {
        volumes: volumes.store(),
        classes,
        backoff: Backoff::default(),
        metrics: metrics.clone(),
        client: client.clone(),
        cluster: Cluster {
            subscription: arm.subscription.clone(),
            resource_group: arm.resource_group.clone(),
            location: arm.location.clone(),
        },
        arm,
        name: cli.provisioner_name.clone(),
        recorder,
    });

    let stats_ctx = ctx.clone();
    crate::metrics::serve(
        &cli.metrics_addr,
        metrics.clone(),
        Arc::new(move || stats_ctx.arm.stats()),
    )
    .await?;

    // The classes' watch cache, whole, before anything else: a class missing from it is missing.
    // Ready (the readiness probe) only then; a cache that cannot fill says why.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut class_cache = tokio::spawn(
        reflector::reflector(
            class_writer,
            watcher(
                Api::<StorageClass>::all(client.clone()),
                watcher::Config::default(),
            ),
        )
        .default_backoff()
        .for_each(|r| async move {
            if let Err(e) = r {
                warn!(error = %e, "watching StorageClasses");
            }
        }),
    );
    tokio::select! {
        r = ctx.classes.wait_until_ready() => r?,
        _ = tokio::time::sleep(Duration::from_secs(60)) => anyhow::bail!(
            "could not list StorageClasses in 60 s: the provisioner's ClusterRole must grant list and \
             watch on storage.k8s.io storageclasses (see install/rbac.yaml)"
        ),
        _ = term.recv() => return Ok(()),
    }
    metrics.set_ready();

    let mut leadership = None;
    if cli.leader_elect {
        let manager =
            kube_lease_manager::LeaseManagerBuilder::new(client.clone(), "flexdisk-provisioner")
                .with_namespace(cli.lease_namespace.clone())
                .with_identity(identity.clone())
                .with_duration(cli.lease_duration_secs.max(2))
                .with_grace((cli.lease_duration_secs / 3).clamp(1, 5))
                .build()
                .await?;
        let (mut leader, task) = manager.watch().await;
        info!(%identity, "waiting to lead");
        while !*leader.borrow_and_update() {
            leader.changed().await?;
        }
        info!(%identity, "leading");
        metrics.leader.set(1);
        leadership = Some((leader, task));
    }

    let workers = cli.workers.max(1);
    let claims = Controller::new(
        Api::<PersistentVolumeClaim>::all(client.clone()),
        watcher::Config::default(),
    );
    // A claim may come before its StorageClass (a directory applied at once, GitOps ordering):
    // a class appearing or changing looks at the unbound claims that name it at once.
    let waiting = claims.store();
    let claims = claims
        .watches(
            Api::<StorageClass>::all(client.clone()),
            watcher::Config::default(),
            move |class| crate::claims::naming_class(&waiting.state(), &class.name_any()),
        )
        .with_config(ControllerConfig::default().concurrency(workers))
        .run(
            crate::claims::reconcile,
            crate::claims::error_policy,
            ctx.clone(),
        )
        .for_each(|_| async {});
    let volumes = volumes
        .with_config(ControllerConfig::default().concurrency(workers))
        .run(
            crate::volumes::reconcile,
            crate::volumes::error_policy,
            ctx.clone(),
        )
        .for_each(|_| async {});
    let lost = async {
        match &mut leadership {
            Some((leader, _)) => loop {
                if leader.changed().await.is_err() || !*leader.borrow() {
                    return;
                }
            },
            None => std::future::pending().await,
        }
    };
    let stopped = tokio::select! {
        _ = claims => Some("the claims controller stopped"),
        _ = volumes => Some("the volumes controller stopped"),
        _ = &mut class_cache => Some("the StorageClass watch stopped"),
        _ = lost => { error!("lost the leader lease; exiting so that another replica leads"); std::process::exit(1); }
        _ = term.recv() => { info!("SIGTERM: stopping"); None }
        _ = tokio::signal::ctrl_c() => { info!("interrupted: stopping"); None }
    };
    class_cache.abort();
    // Hand the lease over now rather than make the standby wait out its duration (a rolling
    // update would otherwise pause provisioning for --lease-duration-secs): the manager releases
    // the lease once every receiver is gone.
    if let Some((leader, task)) = leadership {
        drop(leader);
        match tokio::time::timeout(Duration::from_secs(5), task).await {
            Ok(_) => info!("released the leader lease"),
            Err(_) => warn!("could not release the leader lease in 5 s; it expires on its own"),
        }
    }
    match stopped {
        Some(why) => {
            error!("{why}");
            anyhow::bail!("{why}")
        }
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
