//! Following ARM's long-running operations to their end.
//!
//! ARM's asynchronous protocol: an accepted write answers 200/201/202 with `Azure-AsyncOperation`
//! (a status resource, always HTTP 200, `{status: InProgress|Succeeded|Failed|Canceled, error}`)
//! and/or `Location` (202 until done, then the result), and `Retry-After`. A failure can be visible
//! only in the polled status. azure_mgmt_compute's own poller re-sends the PUT instead, so this one
//! is used for every write.

use crate::error::{classify, AzureError};
use crate::retry::parse_retry_after;
use bytes::Bytes;
use serde::Deserialize;
use std::time::Duration;
use url::Url;

/// The first answer to a write, collected.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub status: u16,
    pub async_operation: Option<Url>,
    pub location: Option<Url>,
    pub retry_after: Option<Duration>,
    pub body: Bytes,
}

impl Accepted {
    pub(crate) async fn collect(rsp: azure_core::Response) -> Result<Self, AzureError> {
        let (status, headers, body) = rsp.deconstruct();
        let header = |name: &'static str| {
            headers
                .get_optional_str(&azure_core::headers::HeaderName::from_static(name))
                .map(str::to_string)
        };
        let url = |name: &'static str| header(name).and_then(|v| Url::parse(&v).ok());
        let accepted = Accepted {
            status: u16::from(status),
            async_operation: url("azure-asyncoperation"),
            location: url("location"),
            retry_after: header("retry-after").and_then(|v| parse_retry_after(&v)),
            body: body
                .collect()
                .await
                .map_err(|e| AzureError::transient(format!("reading ARM's answer: {e}")))?,
        };
        Ok(accepted)
    }
}

/// Where an operation stands after one look.
#[derive(Debug, Clone, PartialEq)]
pub enum PollState {
    Running,
    Succeeded,
    Failed(ArmErrorBody),
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct ArmErrorBody {
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub message: String,
}

/// The `status` of an `Azure-AsyncOperation` status resource.
pub fn status_resource_state(body: &[u8]) -> Result<PollState, AzureError> {
    #[derive(Deserialize)]
    struct Status {
        status: String,
        #[serde(default)]
        error: Option<ArmErrorBody>,
    }
    let s: Status = serde_json::from_slice(body).map_err(|e| {
        AzureError::other(format!(
            "the operation status resource is not readable ({e})"
        ))
    })?;
    Ok(terminal(&s.status, s.error))
}

/// `properties.provisioningState` of a resource body (absent means done).
pub fn provisioning_state(body: &[u8]) -> PollState {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    match v
        .pointer("/properties/provisioningState")
        .and_then(|s| s.as_str())
    {
        None => PollState::Succeeded,
        Some(s) => terminal(s, None),
    }
}

fn terminal(state: &str, error: Option<ArmErrorBody>) -> PollState {
    if state.eq_ignore_ascii_case("Succeeded") {
        PollState::Succeeded
    } else if state.eq_ignore_ascii_case("Failed") || state.eq_ignore_ascii_case("Canceled") {
        PollState::Failed(error.unwrap_or(ArmErrorBody {
            code: state.to_string(),
            message: format!("the operation ended {state} without saying why"),
        }))
    } else {
        PollState::Running
    }
}

/// How long to wait before poll number `polls`: what the server asked, but never a busy loop
/// when it says 0 (a gentle ramp from 50 ms to 1 s instead), and never more than `cap`.
pub fn poll_delay(retry_after: Option<Duration>, polls: u32, cap: Duration) -> Duration {
    let floor = Duration::from_millis(50u64 << polls.min(4)).min(Duration::from_secs(1));
    retry_after
        .unwrap_or(Duration::from_secs(1))
        .max(floor)
        .min(cap)
}

/// How the final result is fetched once the status resource says Succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinalVia {
    /// PUT/PATCH: GET the resource itself.
    Resource,
    /// POST: GET `Location` if given.
    Location,
    /// DELETE: nothing to fetch.
    Nothing,
}

impl FinalVia {
    pub fn for_method(method: &azure_core::Method) -> FinalVia {
        match method {
            azure_core::Method::Put | azure_core::Method::Patch => FinalVia::Resource,
            azure_core::Method::Post => FinalVia::Location,
            _ => FinalVia::Nothing,
        }
    }
}

/// Turns an operation's failure into the caller's error.
pub fn failure(e: ArmErrorBody) -> AzureError {
    classify(None, &e.code, &e.message, None)
}
