//! The HTTP under both Azure SDK generations.
//!
//! - ARM (azure_core 0.21, under azure_mgmt_compute): [`ArmTransport`] sends with reqwest, trusts
//!   the extra CA bundle of `SSL_CERT_FILE` (private clouds such as Azure Stack Hub), and does all
//!   retrying ([`crate::retry`]), because it is the one layer that sees status, headers and body.
//! - Entra ID and IMDS (azure_core 1.x, under azure_identity): the SDK's own client, wrapped by
//!   [`ImdsRedirect`] so that `IMDS_ENDPOINT` (Azure Arc, IMDS proxies) is honoured — azure_identity
//!   1.x always asks the link-local address.

use crate::error::AzureError;
use crate::retry::{parse_retry_after, Attempt, RetryPolicy};
use crate::throttle_memory::{Budget, ThrottleMemory};
use azure_core::headers::Headers;
use azure_core::{Body, Context, Policy, PolicyResult, Request, Response, StatusCode};
use bytes::Bytes;
use rand::Rng;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, info, warn};
use url::Url;

/// How long one HTTP attempt may take, connection included: a request sent just before its
/// [`SendGuard`] closes may still reach Azure this long after.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(60);

/// Makes ring the process's TLS crypto provider (once; later calls and an earlier choice by the
/// embedding program are fine). azure_identity's reqwest 0.13 is built without a provider of its
/// own (see the workspace manifest) and panics without one.
pub(crate) fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The certificates of `SSL_CERT_FILE`, added to the built-in roots.
fn extra_roots() -> Result<Vec<reqwest::Certificate>, AzureError> {
    let Some(path) = std::env::var_os("SSL_CERT_FILE") else {
        return Ok(Vec::new());
    };
    let pem = std::fs::read(&path).map_err(|e| {
        AzureError::other(format!(
            "cannot read the CA bundle SSL_CERT_FILE={}: {e}",
            path.to_string_lossy()
        ))
    })?;
    reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
        AzureError::other(format!(
            "SSL_CERT_FILE={} holds no usable PEM certificate: {e}",
            path.to_string_lossy()
        ))
    })
}

/// The one reqwest client for ARM and cloud metadata.
pub(crate) fn http_client() -> Result<reqwest::Client, AzureError> {
    install_crypto_provider();
    let mut builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(ATTEMPT_TIMEOUT)
        // ARM does not redirect; following one would carry the bearer token elsewhere.
        .redirect(reqwest::redirect::Policy::none());
    for cert in extra_roots()? {
        builder = builder.add_root_certificate(cert);
    }
    builder
        .build()
        .map_err(|e| AzureError::other(format!("cannot build the HTTP client: {e}")))
}

/// Whether a write is still wanted: asked right before every attempt to send it, the first and
/// each retry. A batch's `attachDetachDataDisks` carries the requests of several driver
/// processes; the transport retries a 5xx or a lost answer for a minute and more, and a request
/// whose process died meanwhile must not be carried out by such a retry (DESIGN.md, behaviour 10).
#[derive(Clone)]
pub struct SendGuard(pub Arc<dyn Fn() -> bool + Send + Sync>);

tokio::task_local! {
    /// The guard of the request this task is sending, if its caller set one. A task-local because
    /// azure_mgmt_compute's builders send with a context of their own: the transport runs inside
    /// the same task as the caller's `send().await`, so the caller's scope reaches it.
    static GUARD: SendGuard;
}

/// Runs `send` (one request's `send()`, not the polls after it) under `guard`.
pub(crate) async fn guarded<F: std::future::Future>(guard: SendGuard, send: F) -> F::Output {
    GUARD.scope(guard, send).await
}

/// What the transport answers instead of sending when the guard says the request is no longer
/// wanted: `attempts` is how many attempts went out before (each may have been carried out).
#[derive(Debug, thiserror::Error)]
#[error("not sent: nobody waits for it any more ({attempts} earlier attempts)")]
pub(crate) struct Unwanted {
    pub attempts: u32,
}

/// A caller's budget of ARM writes, asked right before every write attempt — the first and each
/// retry — with the method and the path written: `Err(wait)` holds the attempt back (nothing is
/// sent; the caller gets [`Deferred`] and may try again after `wait`). The provisioner bounds each
/// disk's writes this way whatever fails and however often the transport retries.
#[derive(Clone)]
pub struct WriteGate(pub Arc<GateFn>);

/// `(method, path)` → go, or wait this long.
pub type GateFn = dyn Fn(&str, &str) -> Result<(), Duration> + Send + Sync;

impl std::fmt::Debug for WriteGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WriteGate")
    }
}

/// What the transport answers instead of sending a write the caller's [`WriteGate`] held back.
#[derive(Debug, thiserror::Error)]
#[error("not sent: {what} is over this client's write budget; the next write may go in {}s", wait.as_secs().max(1))]
pub(crate) struct Deferred {
    pub what: String,
    pub wait: Duration,
}

/// Counts what the transport did, for logs and metrics.
#[derive(Debug, Default)]
pub struct TransportStats {
    pub requests: AtomicU64,
    pub retries: AtomicU64,
    pub throttled: AtomicU64,
}

impl TransportStats {
    pub fn snapshot(&self) -> (u64, u64, u64) {
        (
            self.requests.load(Ordering::Relaxed),
            self.retries.load(Ordering::Relaxed),
            self.throttled.load(Ordering::Relaxed),
        )
    }
}

/// The last policy of the ARM pipeline: sends, and retries what [`RetryPolicy`] says to.
#[derive(Debug)]
pub(crate) struct ArmTransport {
    pub client: reqwest::Client,
    pub retry: RetryPolicy,
    pub stats: Arc<TransportStats>,
    pub throttle: Arc<ThrottleMemory>,
    pub write_gate: Option<WriteGate>,
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Bytes,
}

impl ArmTransport {
    async fn once(&self, request: &Request) -> Result<Answer, reqwest::Error> {
        let method = reqwest::Method::from_bytes(request.method().as_ref().as_bytes())
            .unwrap_or(reqwest::Method::GET);
        let mut req = self.client.request(method, request.url().clone());
        for (name, value) in request.headers().iter() {
            req = req.header(name.as_str(), value.as_str());
        }
        if let Body::Bytes(bytes) = request.body() {
            if !bytes.is_empty() {
                req = req.body(bytes.clone());
            }
        }
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let rsp = req.send().await?;
        let status = rsp.status().as_u16();
        let headers = rsp.headers().clone();
        let body = rsp.bytes().await?;
        Ok(Answer {
            status,
            headers,
            body,
        })
    }
}

#[async_trait::async_trait]
impl Policy for ArmTransport {
    async fn send(
        &self,
        _ctx: &Context,
        request: &mut Request,
        _next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        let what = format!("{} {}", request.method(), request.url().path());
        let budget = Budget::of_method(request.method().as_ref());
        let mut retries = 0;
        let mut attempts = 0;
        loop {
            // What Azure said to this or another process still holds: wait it out, or answer
            // "throttled" without sending when it is longer than this caller would wait.
            if let Some(left) = self.throttle.remaining(budget) {
                if left > self.retry.max_retry_after {
                    self.stats.throttled.fetch_add(1, Ordering::Relaxed);
                    return Ok(remembered_throttling(budget, left));
                }
                let spread = Duration::from_millis(rand::thread_rng().gen_range(0..=500));
                info!(request = %what, wait_ms = (left + spread).as_millis() as u64, "Azure throttled this subscription a moment ago; waiting before sending");
                tokio::time::sleep(left + spread).await;
                continue;
            }
            if !GUARD.try_with(|g| (g.0)()).unwrap_or(true) {
                info!(request = %what, attempts, "not sending: nobody waits for the request any more");
                return Err(azure_core::Error::new(
                    azure_core::error::ErrorKind::Other,
                    Unwanted { attempts },
                ));
            }
            if let Some(gate) = &self.write_gate {
                let method = request.method().as_ref().to_ascii_uppercase();
                if matches!(method.as_str(), "PUT" | "PATCH" | "POST" | "DELETE") {
                    if let Err(wait) = (gate.0)(&method, request.url().path()) {
                        info!(request = %what, attempts, wait_ms = wait.as_millis() as u64, "not sending: over the write budget");
                        return Err(azure_core::Error::new(
                            azure_core::error::ErrorKind::Other,
                            Deferred {
                                what: what.clone(),
                                wait,
                            },
                        ));
                    }
                }
            }
            attempts += 1;
            let result = self.once(request).await;
            let jitter = rand::thread_rng().gen::<f64>();
            let wait = match &result {
                Ok(a) if a.status < 400 => None,
                Ok(a) => {
                    let (code, message) = error_code_message(&a.body);
                    let retry_after = a
                        .headers
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(parse_retry_after);
                    let attempt = Attempt::Status {
                        status: a.status,
                        code: &code,
                        message: &message,
                        retry_after,
                    };
                    let wait = self.retry.decide(retries, attempt, jitter);
                    if a.status == 429 {
                        self.stats.throttled.fetch_add(1, Ordering::Relaxed);
                        self.throttle.record(
                            budget,
                            retry_after.or(wait).unwrap_or(Duration::from_secs(1)),
                        );
                    }
                    if let Some(w) = wait {
                        info!(request = %what, status = a.status, code = %code, wait_ms = w.as_millis() as u64, "ARM answered an error worth retrying");
                    }
                    wait
                }
                Err(e) => {
                    let wait = self.retry.decide(retries, Attempt::Io, jitter);
                    warn!(request = %what, error = %e, retry = wait.is_some(), "ARM request got no answer");
                    wait
                }
            };
            match (result, wait) {
                (Ok(a), None) => {
                    debug!(request = %what, status = a.status, "ARM answered");
                    return Ok(to_response(a));
                }
                (Err(e), None) => {
                    return Err(azure_core::Error::full(
                        azure_core::error::ErrorKind::Io,
                        e,
                        format!("{what}: no answer from Azure Resource Manager"),
                    ))
                }
                (_, Some(w)) => {
                    retries += 1;
                    self.stats.retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(w).await;
                }
            }
        }
    }
}

/// The answer a throttled budget gets without asking Azure again: a 429 as ARM writes it, with
/// the time left as `Retry-After`, so callers handle it as they handle Azure's own.
fn remembered_throttling(budget: Budget, left: Duration) -> Response {
    let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
    let body = serde_json::json!({"error": {
        "code": "SubscriptionRequestsThrottled",
        "message": format!(
            "Azure throttled this subscription's {} and asked callers to stay away; flexdisk sends nothing for another {secs}s (not sent)",
            match budget { Budget::Reads => "reads", Budget::Writes => "writes" }
        ),
    }});
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::RETRY_AFTER,
        reqwest::header::HeaderValue::from(secs),
    );
    headers.insert(
        reqwest::header::CONTENT_TYPE,
        reqwest::header::HeaderValue::from_static("application/json"),
    );
    to_response(Answer {
        status: 429,
        headers,
        body: Bytes::from(body.to_string()),
    })
}

fn to_response(a: Answer) -> Response {
    let mut headers = Headers::new();
    for (name, value) in &a.headers {
        if let Ok(v) = value.to_str() {
            headers.insert(name.as_str().to_string(), v.to_string());
        }
    }
    let status = StatusCode::try_from(a.status).unwrap_or(StatusCode::InternalServerError);
    Response::new(
        status,
        headers,
        Box::pin(azure_core::BytesStream::new(a.body)),
    )
}

/// `code` and `message` of an ARM error body (wrapped in `error` or not).
pub(crate) fn error_code_message(body: &[u8]) -> (String, String) {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let e = v.get("error").unwrap_or(&v);
    let s = |lower: &str, upper: &str| {
        e.get(lower)
            .or_else(|| e.get(upper))
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    (s("code", "Code"), s("message", "Message"))
}

/// Sends azure_identity's IMDS requests to `IMDS_ENDPOINT` when one is configured.
#[derive(Debug)]
pub(crate) struct ImdsRedirect {
    pub inner: Arc<dyn azure_core_1::http::HttpClient>,
    pub imds: Url,
}

const LINK_LOCAL_IMDS: &str = "169.254.169.254";

#[async_trait::async_trait]
impl azure_core_1::http::HttpClient for ImdsRedirect {
    async fn execute_request(
        &self,
        request: &azure_core_1::http::Request,
    ) -> azure_core_1::Result<azure_core_1::http::AsyncRawResponse> {
        let to_imds = request.url().host_str() == Some(LINK_LOCAL_IMDS)
            && self.imds.host_str() != Some(LINK_LOCAL_IMDS);
        if !to_imds {
            return self.inner.execute_request(request).await;
        }
        let mut redirected = request.clone();
        let url = redirected.url_mut();
        // Url setters only fail for cannot-be-a-base URLs; IMDS_ENDPOINT was checked to be http(s).
        let _ = url.set_scheme(self.imds.scheme());
        let _ = url.set_host(self.imds.host_str());
        let _ = url.set_port(self.imds.port());
        self.inner.execute_request(&redirected).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_wrapped_or_bare() {
        assert_eq!(
            error_code_message(br#"{"error":{"code":"NotFound","message":"gone"}}"#),
            ("NotFound".to_string(), "gone".to_string())
        );
        assert_eq!(
            error_code_message(br#"{"Code":"TooManyRequests","Message":"slow"}"#),
            ("TooManyRequests".to_string(), "slow".to_string())
        );
        assert_eq!(error_code_message(b""), (String::new(), String::new()));
    }
}
