//! Wiring: clients, watch caches, the two controllers (claims, volumes), leader election,
//! shutdown.

use crate::budget::WriteBudget;
use crate::cli::Cli;
use crate::context::{Backoff, Ctx};
use crate::decide::Cluster;
use crate::events::Recorder;
use crate::resize::names_claim;
use flexdisk_azure::{Arm, ArmOptions, Config, WriteGate};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::DynamicObject;
use kube::runtime::controller::{Config as ControllerConfig, Controller};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, ResourceExt};
use std::sync::Arc;
use std::time::Duration;
use tracing::{error, info, warn};

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
    let metrics = Arc::new(crate::metrics::Metrics::default());
    // Every ARM write attempt, retries included, within its disk's budget (budget.rs).
    let budget = Arc::new(WriteBudget::default());
    let gate = {
        let metrics = metrics.clone();
        WriteGate(Arc::new(move |method: &str, path: &str| {
            budget
                .take(method, path)
                .inspect_err(|_| metrics.over_budget())
        }))
    };
    let arm = Arm::connect(
        &config,
        ArmOptions {
            write_gate: Some(gate),
            ..ArmOptions::default()
        },
    )
    .await?;
    let identity = cli
        .identity
        .clone()
        .unwrap_or_else(|| format!("flexdisk-provisioner-{}", std::process::id()));
    let recorder = Recorder::new(client.clone(), "flexdisk-provisioner", &identity);
    let volumes = Controller::new(
        Api::<PersistentVolume>::all(client.clone()),
        watcher::Config::default(),
    );
    let (classes, class_writer) = reflector::store::<StorageClass>();
    let (pods, pod_writer) = reflector::store::<Pod>();
    let ctx = Arc::new(Ctx {
        volumes: volumes.store(),
        classes,
        pods,
        backoff: Backoff::default(),
        slow_backoff: Backoff::new(Duration::from_secs(60), Duration::from_secs(3600)),
        detach_waiters: Default::default(),
        refused_sizes: Default::default(),
        metrics: metrics.clone(),
        client: client.clone(),
        cluster: Cluster {
            subscription: arm.subscription.clone(),
            resource_group: arm.resource_group.clone(),
            location: arm.location.clone(),
        },
        arm,
        name: cli.provisioner_name.clone(),
        recorder: recorder.clone(),
    });
    let refresh = recorder.spawn_refresh();

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
             watch on storage.k8s.io storageclasses (see install/base/rbac.yaml)"
        ),
        _ = term.recv() => return Ok(()),
    }
    // Pods, for the claims they use: a growth Azure makes only while the disk is detached waits
    // until no pod uses the claim, and a pod that goes wakes the claims waiting for it.
    let (wake, woken) = futures::channel::mpsc::unbounded::<ObjectRef<PersistentVolumeClaim>>();
    let mut pod_cache = tokio::spawn({
        let ctx = ctx.clone();
        watcher(Api::<Pod>::all(client.clone()), watcher::Config::default())
            .default_backoff()
            .modify(strip_pod)
            .reflect(pod_writer)
            .touched_objects()
            .for_each(move |r| {
                match r {
                    Ok(pod) => wake_waiting_claims(&ctx, &pod, &wake),
                    Err(e) => warn!(error = %e, "watching pods"),
                }
                async {}
            })
    });
    tokio::select! {
        r = ctx.pods.wait_until_ready() => r?,
        _ = tokio::time::sleep(Duration::from_secs(60)) => anyhow::bail!(
            "could not list pods in 60 s: the provisioner's ClusterRole must grant list and watch on pods \
             (see install/base/rbac.yaml)"
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
        // A standby goes at once when told to (an evicted standby would otherwise wait out the
        // pod's grace period, and a drain with it).
        while !*leader.borrow_and_update() {
            tokio::select! {
                changed = leader.changed() => changed?,
                _ = term.recv() => {
                    info!("SIGTERM while waiting to lead: stopping");
                    return Ok(());
                }
            }
        }
        info!(%identity, "leading");
        metrics.leader.set(1);
        leadership = Some((leader, task));
    }

    let workers = cli.workers.max(1);
    // Claims wake the controller only when something that matters changed, never by its own
    // status writes (triggers.rs).
    let (claim_cache, claim_writer) = reflector::store::<PersistentVolumeClaim>();
    let claim_changes = watcher(
        Api::<PersistentVolumeClaim>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(claim_writer)
    .applied_objects()
    .predicate_filter(
        {
            let ctx = ctx.clone();
            move |pvc: &PersistentVolumeClaim| {
                crate::triggers::claim_fingerprint(pvc, |uid, bytes| {
                    ctx.refused_sizes.ever(uid, bytes)
                })
            }
        },
        Default::default(),
    );
    let claims = Controller::for_stream(claim_changes, claim_cache.clone());
    // A claim may come before its StorageClass (a directory applied at once, GitOps ordering):
    // a class appearing or changing looks at the unbound claims that name it at once.
    let waiting = claim_cache.clone();
    // Likewise a VolumeAttributesClass: the claims that name it (waiting to be provisioned with
    // it, or Pending to be changed to it) are looked at when it appears.
    let attributes = crate::modify::attributes_class_resource();
    let claims = claims
        .reconcile_on(woken)
        .watches(
            Api::<StorageClass>::all(client.clone()),
            watcher::Config::default(),
            move |class| crate::claims::naming_class(&waiting.state(), &class.name_any()),
        )
        .watches_with(
            Api::<DynamicObject>::all_with(client.clone(), &attributes),
            attributes,
            watcher::Config::default(),
            move |vac| {
                crate::modify::naming_attributes_class(&claim_cache.state(), &vac.name_any())
            },
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
        _ = &mut pod_cache => Some("the pod watch stopped"),
        _ = lost => { error!("lost the leader lease; exiting so that another replica leads"); std::process::exit(1); }
        _ = term.recv() => { info!("SIGTERM: stopping"); None }
        _ = tokio::signal::ctrl_c() => { info!("interrupted: stopping"); None }
    };
    class_cache.abort();
    pod_cache.abort();
    refresh.abort();
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

/// A pod as the provisioner keeps it: who it is, whether it is done, and its volumes (claims);
/// the rest (containers, most of the status) is dropped to keep a large cluster's pods small.
fn strip_pod(pod: &mut Pod) {
    pod.metadata.managed_fields = None;
    pod.metadata.annotations = None;
    pod.metadata.labels = None;
    pod.metadata.owner_references = None;
    if let Some(spec) = pod.spec.as_mut() {
        spec.containers.clear();
        spec.init_containers = None;
        spec.ephemeral_containers = None;
        spec.affinity = None;
        spec.tolerations = None;
        if let Some(volumes) = spec.volumes.as_mut() {
            volumes.retain(|v| v.persistent_volume_claim.is_some() || v.ephemeral.is_some());
        }
    }
    if let Some(status) = pod.status.as_mut() {
        let phase = status.phase.take();
        *status = Default::default();
        status.phase = phase;
    }
}

/// A pod changed or went: the claims it used that wait for their disk to be detached are looked
/// at again (external-resizer's inuse_pvc_store.go lets such a claim be retried once no pod uses
/// it).
fn wake_waiting_claims(
    ctx: &Ctx,
    pod: &Pod,
    wake: &futures::channel::mpsc::UnboundedSender<ObjectRef<PersistentVolumeClaim>>,
) {
    let ns = pod.namespace().unwrap_or_default();
    let waiting: Vec<ObjectRef<PersistentVolumeClaim>> = ctx
        .detach_waiters
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .keys()
        .filter(|c| c.namespace.as_deref() == Some(ns.as_str()))
        .cloned()
        .collect();
    for claim in waiting {
        // The pod uses it (this change may be its end); all pods decide when the claim is
        // reconciled.
        if names_claim(pod, &claim.name) {
            let _ = wake.unbounded_send(claim);
        }
    }
}
