//! Prometheus metrics, `/healthz` and `/readyz` on `--metrics-addr`.

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tracing::info;

type Labels = Vec<(String, String)>;

pub struct Metrics {
    registry: Registry,
    provisions: Family<Labels, Counter>,
    deletions: Family<Labels, Counter>,
    resizes: Family<Labels, Counter>,
    modifications: Family<Labels, Counter>,
    provision_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    arm: [Counter; 3],
    deferred: Counter,
    arm_seen: Mutex<(u64, u64, u64)>,
    pub leader: Gauge,
    ready: AtomicBool,
}

fn histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.25, 2.0, 12))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("flexdisk_provisioner");
        let provisions = Family::<Labels, Counter>::default();
        let deletions = Family::<Labels, Counter>::default();
        let resizes = Family::<Labels, Counter>::default();
        let modifications = Family::<Labels, Counter>::default();
        let provision_seconds =
            Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(histogram);
        let arm = [Counter::default(), Counter::default(), Counter::default()];
        let deferred = Counter::default();
        registry.register(
            "arm_writes_deferred",
            "ARM writes held back because their disk's write budget (5 in 30 s, 20 an hour) was spent",
            deferred.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "provisions",
            "Claims handled, by class and outcome (succeeded, refused, failed)",
            provisions.clone(),
        );
        registry.register(
            "deletions",
            "Released volumes handled, by outcome (deleted, kept, refused, failed)",
            deletions.clone(),
        );
        registry.register(
            "resizes",
            "Disk growths for claims, by outcome (grown, needs_detach, infeasible, failed)",
            resizes.clone(),
        );
        registry.register(
            "volume_modifications",
            "Claims' VolumeAttributesClass changes carried out on their disks, by outcome (modified, unchanged, pending, infeasible, failed)",
            modifications.clone(),
        );
        registry.register(
            "provision_duration_seconds",
            "From a claim's reconcile to its PV, by class",
            provision_seconds.clone(),
        );
        registry.register(
            "arm_requests",
            "Requests sent to Azure Resource Manager",
            arm[0].clone(),
        );
        registry.register(
            "arm_retries",
            "Requests to Azure Resource Manager sent again",
            arm[1].clone(),
        );
        registry.register(
            "arm_throttled",
            "Throttled (429) answers from Azure Resource Manager",
            arm[2].clone(),
        );
        registry.register("leader", "1 while this replica leads", leader.clone());
        Metrics {
            registry,
            provisions,
            deletions,
            resizes,
            modifications,
            provision_seconds,
            arm,
            deferred,
            arm_seen: Mutex::new((0, 0, 0)),
            leader,
            ready: AtomicBool::new(false),
        }
    }
}

impl Metrics {
    pub fn provision(&self, class: &str, outcome: &str, took: Option<Duration>) {
        let labels = vec![
            ("class".to_string(), class.to_string()),
            ("outcome".to_string(), outcome.to_string()),
        ];
        self.provisions.get_or_create(&labels).inc();
        if let Some(t) = took {
            self.provision_seconds
                .get_or_create(&vec![("class".to_string(), class.to_string())])
                .observe(t.as_secs_f64());
        }
    }

    pub fn deletion(&self, outcome: &str) {
        self.deletions
            .get_or_create(&vec![("outcome".to_string(), outcome.to_string())])
            .inc();
    }

    pub fn resize(&self, outcome: &str) {
        self.resizes
            .get_or_create(&vec![("outcome".to_string(), outcome.to_string())])
            .inc();
    }

    pub fn modification(&self, outcome: &str) {
        self.modifications
            .get_or_create(&vec![("outcome".to_string(), outcome.to_string())])
            .inc();
    }

    pub fn over_budget(&self) {
        self.deferred.inc();
    }

    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Relaxed);
    }

    /// The exposition text; ARM figures are brought up to date from the transport's counters.
    pub fn render(&self, arm_stats: (u64, u64, u64)) -> String {
        if let Ok(mut seen) = self.arm_seen.lock() {
            let now = [arm_stats.0, arm_stats.1, arm_stats.2];
            let before = [seen.0, seen.1, seen.2];
            for i in 0..3 {
                self.arm[i].inc_by(now[i].saturating_sub(before[i]));
            }
            *seen = arm_stats;
        }
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// Serves until the process ends; the bound address is logged (and returned).
pub async fn serve(
    addr: &str,
    metrics: Arc<Metrics>,
    arm_stats: Arc<dyn Fn() -> (u64, u64, u64) + Send + Sync>,
) -> anyhow::Result<std::net::SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    info!("metrics on {local}");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (metrics, stats) = (metrics.clone(), arm_stats.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (metrics, stats) = (metrics.clone(), stats.clone());
                    async move {
                        let (status, ctype, body) = match req.uri().path() {
                            "/metrics" => (
                                200,
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                                metrics.render(stats()),
                            ),
                            "/healthz" => (200, "text/plain", "ok\n".to_string()),
                            "/readyz" if metrics.ready.load(Ordering::Relaxed) => {
                                (200, "text/plain", "ready\n".to_string())
                            }
                            "/readyz" => (503, "text/plain", "starting\n".to_string()),
                            _ => (404, "text/plain", "not found\n".to_string()),
                        };
                        let mut rsp = hyper::Response::new(Full::new(Bytes::from(body)));
                        *rsp.status_mut() =
                            hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
                        if let Ok(v) = hyper::header::HeaderValue::from_str(ctype) {
                            rsp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
                        }
                        Ok::<_, std::convert::Infallible>(rsp)
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(local)
}
