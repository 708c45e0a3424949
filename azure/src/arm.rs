//! The connection to Azure Resource Manager: azure_mgmt_compute's client over [`ArmTransport`],
//! a credential, and the long-running-operation follower every write goes through.

use crate::cloud::CloudEndpoints;
use crate::config::{Config, VmType};
use crate::credential::ArmCredential;
use crate::disks::Deleted;
use crate::error::{classify, AzureError};
use crate::lro::{
    failure, poll_delay, provisioning_state, status_resource_duration, status_resource_output,
    status_resource_state, Accepted, FinalVia, PollState,
};
use crate::op_durations::{kind_of, OpDurations};
use crate::retry::RetryPolicy;
use crate::throttle_memory::ThrottleMemory;
use crate::transport::{http_client, ArmTransport, TransportStats};
use azure_core::{ClientOptions, Context, Method, Pipeline, Request, TransportOptions};
use azure_mgmt_compute::package_2024_07_01::Client;
use bytes::Bytes;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::debug;
use url::Url;

#[derive(Debug, Clone)]
pub struct ArmOptions {
    pub retry: RetryPolicy,
    /// How long one long-running operation may take before the caller hears it is still running.
    pub operation_timeout: Duration,
    /// The longest wait between two polls, whatever `Retry-After` says.
    pub max_poll_interval: Duration,
    /// Where processes share Azure's throttling (see [`crate::throttle_memory`]); `None` keeps
    /// it within this process.
    pub throttle_dir: Option<std::path::PathBuf>,
    /// Where processes share how long operations take (see [`crate::op_durations`]); `None`
    /// keeps it within this process.
    pub durations_dir: Option<std::path::PathBuf>,
    /// Asked before every write attempt, retries included ([`crate::WriteGate`]).
    pub write_gate: Option<crate::transport::WriteGate>,
}

impl Default for ArmOptions {
    fn default() -> Self {
        ArmOptions {
            retry: RetryPolicy::default(),
            operation_timeout: Duration::from_secs(600),
            max_poll_interval: Duration::from_secs(15),
            throttle_dir: None,
            durations_dir: None,
            write_gate: None,
        }
    }
}

/// What a write's caller needs from its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Want {
    /// The resulting resource or the action's result.
    Result,
    /// Only whether it succeeded (the caller knows what success means): no final read.
    Outcome,
}

/// Resource Manager for one subscription, as configured.
pub struct Arm {
    pub(crate) client: Client,
    pipeline: Pipeline,
    credential: ArmCredential,
    scope: String,
    pub endpoints: CloudEndpoints,
    pub subscription: String,
    pub resource_group: String,
    pub location: String,
    pub vm_type: VmType,
    stats: Arc<TransportStats>,
    durations: OpDurations,
    options: ArmOptions,
}

impl std::fmt::Debug for Arm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Arm")
            .field("endpoint", &self.endpoints.resource_manager.as_str())
            .field("subscription", &self.subscription)
            .field("credential", &self.credential)
            .finish_non_exhaustive()
    }
}

impl Arm {
    /// Resolves the cloud's endpoints and sets up the credential; no token is fetched yet.
    pub async fn connect(config: &Config, options: ArmOptions) -> Result<Arm, AzureError> {
        let http = http_client()?;
        let endpoints = CloudEndpoints::resolve(config, &http).await?;
        let credential = ArmCredential::new(config, &endpoints)?;
        let stats = Arc::new(TransportStats::default());
        let transport = Arc::new(ArmTransport {
            client: http,
            retry: options.retry.clone(),
            stats: stats.clone(),
            throttle: Arc::new(ThrottleMemory::new(
                options.throttle_dir.clone(),
                &config.subscription_id,
            )),
            write_gate: options.write_gate.clone(),
        });
        let client_options = || {
            ClientOptions::new(TransportOptions::new_custom_policy(transport.clone()))
                // Retrying is the transport's job: it alone sees Retry-After.
                .retry(azure_core::RetryOptions::none())
        };
        let scope = endpoints.scope();
        let client = Client::new(
            endpoints.resource_manager.clone(),
            Arc::new(credential.clone()),
            vec![scope.clone()],
            client_options(),
        );
        let pipeline = Pipeline::new(
            option_env!("CARGO_PKG_NAME"),
            option_env!("CARGO_PKG_VERSION"),
            client_options(),
            Vec::new(),
            Vec::new(),
        );
        Ok(Arm {
            client,
            pipeline,
            credential,
            scope,
            endpoints,
            subscription: config.subscription_id.clone(),
            resource_group: config.resource_group.clone(),
            location: config.location.clone(),
            vm_type: config.vm_type,
            stats,
            durations: OpDurations::new(options.durations_dir.clone()),
            options,
        })
    }

    pub fn credential(&self) -> &ArmCredential {
        &self.credential
    }

    /// Requests sent, retries, throttled answers — since this connection was made.
    pub fn stats(&self) -> (u64, u64, u64) {
        self.stats.snapshot()
    }

    /// An authenticated GET of any ARM URL (status resources, `Location`, resources).
    pub(crate) async fn get(&self, url: &Url) -> Result<azure_core::Response, AzureError> {
        let token = self.credential.token(&self.scope).await?;
        let mut req = Request::new(url.clone(), Method::Get);
        req.insert_header(
            azure_core::headers::AUTHORIZATION,
            format!("Bearer {}", token.secret()),
        );
        self.pipeline
            .send(&Context::default(), &mut req)
            .await
            .map_err(from_core)
    }

    /// Sends a write built by azure_mgmt_compute and follows it to its end; the final body, if
    /// the operation has one and the caller wants it.
    pub(crate) async fn write(
        &self,
        sent: azure_core::Result<azure_core::Response>,
        method: Method,
        resource: &Url,
        want: Want,
    ) -> Result<Option<Bytes>, AzureError> {
        let first = Accepted::collect(sent.map_err(from_core)?).await?;
        let via = match want {
            Want::Result => FinalVia::for_method(&method),
            Want::Outcome => FinalVia::Nothing,
        };
        let kind = kind_of(method.as_ref(), resource.path());
        self.finish(first, via, resource, &kind).await
    }

    /// Sends a DELETE and follows it; ARM answers 204 at once when there was nothing to delete.
    pub(crate) async fn delete(
        &self,
        sent: azure_core::Result<azure_core::Response>,
        resource: &Url,
    ) -> Result<Deleted, AzureError> {
        let first = match sent.map_err(from_core) {
            Ok(rsp) => Accepted::collect(rsp).await?,
            Err(AzureError::NotFound { .. }) => return Ok(Deleted::AlreadyGone),
            Err(e) => return Err(e),
        };
        if first.status == 204 {
            return Ok(Deleted::AlreadyGone);
        }
        let kind = kind_of("DELETE", resource.path());
        match self.finish(first, FinalVia::Nothing, resource, &kind).await {
            Ok(_) => Ok(Deleted::Deleted),
            Err(AzureError::NotFound { .. }) => Ok(Deleted::AlreadyGone),
            Err(e) => Err(e),
        }
    }

    async fn finish(
        &self,
        first: Accepted,
        via: FinalVia,
        resource: &Url,
        kind: &str,
    ) -> Result<Option<Bytes>, AzureError> {
        let started = Instant::now();
        let deadline = started + self.options.operation_timeout;
        let cap = self.options.max_poll_interval;
        let expected = self.durations.expected(kind);
        let mut polls = 0;
        let mut retry_after = first.retry_after;
        let mut pause = |retry_after: Option<Duration>| {
            polls += 1;
            poll_delay(retry_after, started.elapsed(), expected, cap)
        };
        let overdue = |what: &Url| {
            AzureError::transient(format!(
                "the operation is still running after {}s ({what}); it goes on in Azure — ask again later",
                self.options.operation_timeout.as_secs()
            ))
        };
        let learn = |took: Option<Duration>| {
            let took = took.unwrap_or_else(|| started.elapsed());
            debug!(
                kind,
                took_ms = took.as_millis() as u64,
                ?expected,
                "operation succeeded"
            );
            self.durations.record(kind, took);
        };

        if let Some(op) = &first.async_operation {
            let status = loop {
                tokio::time::sleep(pause(retry_after)).await;
                if Instant::now() > deadline {
                    return Err(overdue(op));
                }
                let a = Accepted::collect(self.get(op).await?).await?;
                match status_resource_state(&a.body)? {
                    PollState::Running => retry_after = a.retry_after,
                    PollState::Succeeded => break a.body,
                    PollState::Failed(e) => return Err(failure(e)),
                }
            };
            learn(status_resource_duration(&status));
            debug!(operation = %op.path(), polls, "operation succeeded");
            return match (via, &first.location) {
                (FinalVia::Nothing, _) => Ok(None),
                // The status resource may carry the result (the disk RP's does): no GET then.
                (_, _) if status_resource_output(&status, resource.path()).is_some() => {
                    Ok(status_resource_output(&status, resource.path()))
                }
                (FinalVia::Resource, _) => self.body_of(resource).await.map(Some),
                (FinalVia::Location, Some(location)) => {
                    let a = Accepted::collect(self.get(location).await?).await?;
                    Ok((a.status != 204 && !a.body.is_empty()).then_some(a.body))
                }
                _ => Ok(None),
            };
        }

        if let (202, Some(location)) = (first.status, &first.location) {
            loop {
                tokio::time::sleep(pause(retry_after)).await;
                if Instant::now() > deadline {
                    return Err(overdue(location));
                }
                let a = Accepted::collect(self.get(location).await?).await?;
                match a.status {
                    202 => retry_after = a.retry_after,
                    204 => {
                        learn(None);
                        return Ok(None);
                    }
                    _ => {
                        learn(None);
                        return Ok((!a.body.is_empty()).then_some(a.body));
                    }
                }
            }
        }

        match first.status {
            204 => Ok(None),
            200 | 201 => {
                let mut body = first.body;
                loop {
                    match provisioning_state(&body) {
                        PollState::Succeeded => {
                            if polls > 0 {
                                learn(None);
                            }
                            return Ok((!body.is_empty()).then_some(body));
                        }
                        PollState::Failed(e) => return Err(failure(e)),
                        PollState::Running => {}
                    }
                    tokio::time::sleep(pause(None)).await;
                    if Instant::now() > deadline {
                        return Err(overdue(resource));
                    }
                    body = self.body_of(resource).await?;
                }
            }
            s => Err(AzureError::other(format!(
                "Azure accepted the request (HTTP {s}) but gave no way to follow it"
            ))),
        }
    }

    async fn body_of(&self, url: &Url) -> Result<Bytes, AzureError> {
        let rsp = self.get(url).await?;
        rsp.into_body()
            .collect()
            .await
            .map_err(|e| AzureError::transient(format!("reading ARM's answer: {e}")))
    }

    /// The full URL of a resource path under this connection's endpoint.
    pub(crate) fn url(&self, path: &str, api_version: &str) -> Result<Url, AzureError> {
        let mut url = self.endpoints.resource_manager.clone();
        url.set_path(path);
        url.set_query(Some(&format!("api-version={api_version}")));
        Ok(url)
    }
}

/// `Retry-After` (seconds) of a failed response. azure_core 0.21's `HttpError` keeps the response
/// headers but offers no accessor; its alternate Display lists them one per line as `name:value`
/// (names lowercased), which is read here. Without it a throttled caller could only guess how long
/// to stay away, and guessing short prolongs ARM's throttling.
fn retry_after_of(h: &azure_core::error::HttpError) -> Option<std::time::Duration> {
    format!("{h:#}").lines().find_map(|l| {
        let (name, value) = l.trim().split_once(':')?;
        name.eq_ignore_ascii_case("retry-after")
            .then(|| value.trim().parse::<u64>().ok())
            .flatten()
            .map(std::time::Duration::from_secs)
    })
}

/// azure_core 0.21's error, classified. Its HTTP error keeps Azure's code and message (and no
/// request headers, so no token).
pub(crate) fn from_core(e: azure_core::Error) -> AzureError {
    match e.kind() {
        azure_core::error::ErrorKind::HttpResponse { status, error_code } => {
            let (code, message) = match e.as_http_error() {
                Some(h) => (
                    h.error_code()
                        .or(error_code.as_deref())
                        .unwrap_or_default()
                        .to_string(),
                    h.error_message().unwrap_or_default().to_string(),
                ),
                None => (error_code.clone().unwrap_or_default(), String::new()),
            };
            let message = if message.is_empty() {
                format!("HTTP {}", u16::from(*status))
            } else {
                message
            };
            let retry_after = e.as_http_error().and_then(retry_after_of);
            classify(Some(u16::from(*status)), &code, &message, retry_after)
        }
        azure_core::error::ErrorKind::Io => AzureError::transient(e.to_string()),
        azure_core::error::ErrorKind::Credential => AzureError::Unauthorized {
            message: e.to_string(),
        },
        _ => match e.downcast_ref::<crate::transport::Deferred>() {
            Some(d) => AzureError::Deferred {
                retry_after: d.wait,
                message: d.to_string(),
            },
            None => AzureError::other(e.to_string()),
        },
    }
}
