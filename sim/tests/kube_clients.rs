//! kube-rs against the Kubernetes API simulator over HTTP: watcher and reflector (through dropped
//! watches and 410 Gone re-lists), a Controller with a finalizer, the events Recorder, and
//! kube-lease-manager's leader election with a crashed leader.

use flexdisk_sim::process::SimProcess;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolumeClaim, Secret};
use k8s_openapi::api::events::v1::Event as K8sEvent;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::{finalizer, reflector, watcher, WatchStreamExt};
use kube::{Client, Config, ResourceExt};
use kube_lease_manager::LeaseManagerBuilder;
use serde_json::json;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn start(args: &[&str]) -> SimProcess {
    SimProcess::start(Path::new(env!("CARGO_BIN_EXE_flexdisk-sim")), args).expect("sim starts")
}

/// Runs a test body against a fresh simulator; the simulator (and its blocking control client)
/// lives outside the async runtime.
fn with_sim<F, Fut>(args: &[&str], body: F)
where
    F: FnOnce(Arc<SimProcess>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    // In a workspace build rustls has both ring and aws-lc-rs (azure_identity brings the latter),
    // so the process must name its provider, as flexdisk's binaries do.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sim = Arc::new(start(args));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(body(sim.clone()));
    drop(rt);
}

/// A control call from async code.
fn control(sim: &SimProcess, method: &str, path: &str, body: Option<serde_json::Value>) -> u16 {
    tokio::task::block_in_place(|| sim.control_at("kube", method, path, body.as_ref()))
        .expect("control call")
        .0
}

async fn client(sim: &SimProcess) -> Client {
    let kubeconfig =
        kube::config::Kubeconfig::read_from(sim.field("kubeconfig")).expect("kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("config");
    Client::try_from(config).expect("client")
}

fn secret(name: &str) -> Secret {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": {"app": "flexdisk-test"}}}))
        .expect("secret")
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn names_in(store: &reflector::Store<Secret>) -> BTreeSet<String> {
    store.state().iter().map(|s| s.name_any()).collect()
}

#[test]
fn reflector_survives_dropped_watches_and_gone_relists() {
    with_sim(&["--kube-watch-window", "40"], |sim| async move {
        let client = client(&sim).await;
        let api: Api<Secret> = Api::namespaced(client, "default");
        let (reader, writer) = reflector::store();
        let stream = reflector(
            writer,
            watcher(
                api.clone(),
                watcher::Config::default().labels("app=flexdisk-test"),
            ),
        )
        .default_backoff()
        .applied_objects();
        let task = tokio::spawn(stream.for_each(|_| async {}));

        for i in 0..3 {
            api.create(&PostParams::default(), &secret(&format!("s{i}")))
                .await
                .expect("create");
        }
        eventually("three in the store", || names_in(&reader).len() == 3).await;

        // A dropped watch: the watcher re-watches from its last resourceVersion.
        assert_eq!(control(&sim, "DELETE", "/_sim/watches", None), 200);
        api.create(&PostParams::default(), &secret("s3"))
            .await
            .expect("create");
        eventually("the fourth after a reconnect", || {
            names_in(&reader).contains("s3")
        })
        .await;

        // A dropped watch whose resourceVersion ages out meanwhile: 410 Gone, then a re-list that
        // also sees a deletion it never watched.
        assert_eq!(
            control(
                &sim,
                "POST",
                "/_sim/faults",
                Some(json!({"operation": "watch secrets", "times": 1,
            "action": {"kind": "latency", "ms": 1500}}))
            ),
            201
        );
        let lists_before =
            tokio::task::block_in_place(|| sim.control_at("kube", "GET", "/_sim/counters", None))
                .expect("counters")
                .1["list secrets"]
                .as_u64()
                .unwrap_or(0);
        assert_eq!(control(&sim, "DELETE", "/_sim/watches", None), 200);
        api.delete("s0", &DeleteParams::default())
            .await
            .expect("delete");
        for i in 0..50 {
            api.create(&PostParams::default(), &secret(&format!("churn-{i}")))
                .await
                .expect("create");
        }
        let expected: BTreeSet<String> = api
            .list(&ListParams::default().labels("app=flexdisk-test"))
            .await
            .expect("list")
            .items
            .iter()
            .map(|s| s.name_any())
            .collect();
        assert_eq!(expected.len(), 53);
        eventually("the store matches the server after a 410 re-list", || {
            names_in(&reader) == expected
        })
        .await;
        let lists_after =
            tokio::task::block_in_place(|| sim.control_at("kube", "GET", "/_sim/counters", None))
                .expect("counters")
                .1["list secrets"]
                .as_u64()
                .unwrap_or(0);
        assert!(
            lists_after > lists_before + 1,
            "the watcher re-listed after 410 Gone ({lists_before} → {lists_after}; one list is the test's own)"
        );
        task.abort();
    });
}

#[derive(Debug, thiserror::Error)]
enum TestError {
    #[error(transparent)]
    Kube(#[from] kube::Error),
}

struct Ctx {
    api: Api<Secret>,
    cleaned: Mutex<Vec<String>>,
}

const FINALIZER: &str = "flexdisk.test/cleanup";

async fn reconcile(obj: Arc<Secret>, ctx: Arc<Ctx>) -> Result<Action, finalizer::Error<TestError>> {
    finalizer(&ctx.api, FINALIZER, obj, |event| async {
        match event {
            finalizer::Event::Apply(s) => {
                let patch = json!({"metadata": {"labels": {"reconciled": "yes"}}});
                ctx.api
                    .patch(
                        &s.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await?;
                Ok(Action::await_change())
            }
            finalizer::Event::Cleanup(s) => {
                ctx.cleaned.lock().expect("lock").push(s.name_any());
                Ok(Action::await_change())
            }
        }
    })
    .await
}

fn error_policy(_: Arc<Secret>, _: &finalizer::Error<TestError>, _: Arc<Ctx>) -> Action {
    Action::requeue(Duration::from_millis(200))
}

#[test]
fn a_controller_with_a_finalizer_runs_cleanup_before_deletion() {
    with_sim(&[], |sim| async move {
        let client = client(&sim).await;
        let api: Api<Secret> = Api::namespaced(client, "default");
        let ctx = Arc::new(Ctx {
            api: api.clone(),
            cleaned: Mutex::new(Vec::new()),
        });
        let controller = Controller::new(api.clone(), watcher::Config::default())
            .run(reconcile, error_policy, ctx.clone())
            .for_each(|_| async {});
        let task = tokio::spawn(controller);

        api.create(&PostParams::default(), &secret("managed"))
            .await
            .expect("create");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let s = api.get("managed").await.expect("get");
            if s.finalizers().iter().any(|f| f == FINALIZER)
                && s.labels().get("reconciled").map(String::as_str) == Some("yes")
            {
                break;
            }
            assert!(Instant::now() < deadline, "never reconciled: {s:?}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        api.delete("managed", &DeleteParams::default())
            .await
            .expect("delete");
        let deadline = Instant::now() + Duration::from_secs(20);
        while api.get_opt("managed").await.expect("get").is_some() {
            assert!(Instant::now() < deadline, "never deleted");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert_eq!(
            *ctx.cleaned.lock().expect("lock"),
            vec!["managed".to_string()]
        );
        task.abort();
    });
}

#[test]
fn the_events_recorder_creates_and_counts_events() {
    with_sim(&[], |sim| async move {
        let client = client(&sim).await;
        let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
        let pvc: PersistentVolumeClaim = serde_json::from_value(json!({"metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "", "resources": {"requests": {"storage": "1Gi"}}}}))
    .expect("pvc");
        let pvc = pvcs
            .create(&PostParams::default(), &pvc)
            .await
            .expect("create");
        let reference: ObjectReference = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("PersistentVolumeClaim".into()),
            name: pvc.metadata.name.clone(),
            namespace: Some("default".into()),
            uid: pvc.metadata.uid.clone(),
            ..Default::default()
        };
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: "flexdisk-provisioner".into(),
                instance: Some("test-0".into()),
            },
        );
        let event = Event {
            type_: EventType::Warning,
            reason: "ProvisioningFailed".into(),
            note: Some("StorageClass parameter `cachngMode`: is not a parameter".into()),
            action: "Provision".into(),
            secondary: None,
        };
        recorder.publish(&event, &reference).await.expect("first");
        recorder.publish(&event, &reference).await.expect("second");
        let events: Api<K8sEvent> = Api::namespaced(client, "default");
        let list = events.list(&ListParams::default()).await.expect("list");
        assert_eq!(list.items.len(), 1, "{:?}", list.items);
        let e = &list.items[0];
        assert_eq!(e.reason.as_deref(), Some("ProvisioningFailed"));
        assert_eq!(
            e.regarding.as_ref().and_then(|r| r.name.as_deref()),
            Some("data")
        );
        assert_eq!(e.series.as_ref().map(|s| s.count), Some(2));
        assert_eq!(
            e.reporting_controller.as_deref(),
            Some("flexdisk-provisioner")
        );
    });
}

#[test]
fn lease_manager_elects_one_leader_and_fails_over_when_it_dies() {
    with_sim(&[], |sim| async move {
        let client = client(&sim).await;
        let build = |id: &str| {
            LeaseManagerBuilder::new(client.clone(), "flexdisk-provisioner")
                .with_namespace("kube-system")
                .with_identity(id)
                .with_duration(3)
                .with_grace(1)
                .build()
        };
        let a = build("replica-a").await.expect("a");
        let (mut a_lead, a_task) = a.watch().await;
        let deadline = Instant::now() + Duration::from_secs(20);
        while !*a_lead.borrow_and_update() {
            assert!(Instant::now() < deadline, "a never led");
            let _ = tokio::time::timeout(Duration::from_millis(200), a_lead.changed()).await;
        }
        let b = build("replica-b").await.expect("b");
        let (mut b_lead, b_task) = b.watch().await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(!*b_lead.borrow_and_update(), "two leaders at once");

        // The leader dies without releasing: b takes over once the lease expires.
        a_task.abort();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !*b_lead.borrow_and_update() {
            assert!(Instant::now() < deadline, "b never took over");
            let _ = tokio::time::timeout(Duration::from_millis(200), b_lead.changed()).await;
        }
        let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
            Api::namespaced(client, "kube-system");
        let lease = leases.get("flexdisk-provisioner").await.expect("lease");
        assert_eq!(
            lease.spec.and_then(|s| s.holder_identity).as_deref(),
            Some("replica-b")
        );
        drop(b_lead);
        let _ = b_task.await;
    });
}
