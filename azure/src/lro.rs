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

/// When an operation of a kind nothing was learnt about is first looked at.
pub const FIRST_LOOK: Duration = Duration::from_millis(300);

/// How long to wait before the next look at an operation that has run for `elapsed`.
///
/// `Retry-After` is a floor (ARM's minimum; never polled sooner). Past it, the schedule is the
/// client's: with an `expected` duration learnt from recent operations of the kind, the first
/// look is just after it is due (a 2 % margin, at least 20 ms, for clocks and timers); an
/// operation that runs past that is looked at every tenth of its age, so its end is seen within
/// ~10 % of it in a few reads. With nothing learnt yet (a host's first operation of a kind), the
/// first look at [`FIRST_LOOK`], then each at 2.2 times the operation's age: a 1 s operation is
/// seen done in 3 looks, a 7 s one in 5, its end seen at most 120 % late — once, as the
/// operation's length is learnt from its success. Never longer than `cap`, whatever was asked.
pub fn poll_delay(
    retry_after: Option<Duration>,
    elapsed: Duration,
    expected: Option<Duration>,
    cap: Duration,
) -> Duration {
    let own = match expected {
        Some(e) => {
            let due = e + (e / 50).max(Duration::from_millis(20));
            if elapsed < due {
                due - elapsed
            } else {
                (elapsed / 10).max(Duration::from_millis(20))
            }
        }
        None if elapsed < FIRST_LOOK => FIRST_LOOK - elapsed,
        None => elapsed * 6 / 5,
    };
    retry_after.unwrap_or_default().max(own).min(cap)
}

/// The resource an operation's status resource carries in `properties.output` (the disk RP puts
/// the disk there), when it is the resource at `resource_path`. ARM's RPC leaves `properties`
/// to the resource provider ("only returned on a successful operation" —
/// azure-resource-manager-rpc `v1.0/async-api-reference.md`), so anything else — no output,
/// another shape — means the resource is read instead.
pub fn status_resource_output(body: &[u8], resource_path: &str) -> Option<Bytes> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let out = v.pointer("/properties/output")?;
    let id = out.get("id")?.as_str()?;
    if !id.eq_ignore_ascii_case(resource_path.trim_end_matches('/')) {
        return None;
    }
    serde_json::to_vec(out).ok().map(Bytes::from)
}

/// How long an operation took by ARM's own clock: the status resource's `startTime` and
/// `endTime` (RFC 3339, which ARM gives with up to 7 fractional digits).
pub fn status_resource_duration(body: &[u8]) -> Option<Duration> {
    use time::format_description::well_known::Rfc3339;
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let at = |k: &str| {
        v.get(k)
            .and_then(|t| t.as_str())
            .and_then(|t| time::OffsetDateTime::parse(t, &Rfc3339).ok())
    };
    let took = at("endTime")? - at("startTime")?;
    Duration::try_from(took).ok()
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

#[cfg(test)]
mod tests {
    use super::*;

    const CAP: Duration = Duration::from_secs(15);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn an_expected_operation_is_looked_at_just_after_it_is_due() {
        // A 2 s operation for which ARM said Retry-After 1: one look at 2.04 s, not at 1 s.
        assert_eq!(
            poll_delay(Some(ms(1000)), ms(0), Some(ms(2000)), CAP),
            ms(2040)
        );
        assert_eq!(
            poll_delay(Some(ms(0)), ms(0), Some(ms(1000)), CAP),
            ms(1020)
        );
        // Running late: every tenth of its age.
        assert_eq!(poll_delay(None, ms(2040), Some(ms(2000)), CAP), ms(204));
        assert_eq!(poll_delay(None, ms(100), Some(ms(50)), CAP), ms(20));
    }

    #[test]
    fn retry_after_is_a_floor_and_the_cap_a_ceiling() {
        assert_eq!(
            poll_delay(Some(ms(30_000)), ms(0), Some(ms(1000)), CAP),
            CAP
        );
        assert_eq!(
            poll_delay(Some(ms(5000)), ms(1500), Some(ms(1000)), CAP),
            ms(5000)
        );
        assert_eq!(poll_delay(None, ms(600_000), None, CAP), CAP);
    }

    #[test]
    fn without_history_the_pace_follows_the_age() {
        assert_eq!(poll_delay(None, ms(0), None, CAP), ms(300));
        assert_eq!(poll_delay(Some(ms(0)), ms(150), None, CAP), ms(150));
        assert_eq!(poll_delay(None, ms(1000), None, CAP), ms(1200));
        assert_eq!(poll_delay(Some(ms(2000)), ms(300), None, CAP), ms(2000));
    }

    /// How many looks see an operation of length `d` done (no `Retry-After`, nothing learnt).
    fn looks(d: Duration) -> usize {
        let (mut at, mut n) = (Duration::ZERO, 0);
        loop {
            at += poll_delay(None, at, None, CAP);
            n += 1;
            if at >= d {
                return n;
            }
        }
    }

    #[test]
    fn a_hosts_first_operation_is_seen_done_in_a_few_looks() {
        assert_eq!(looks(ms(150)), 1);
        assert_eq!(looks(ms(1000)), 3);
        assert_eq!(looks(ms(7000)), 5);
        // An Azure attach of 20 s: 7 (every half of its age took 14).
        assert_eq!(looks(ms(20_000)), 7);
    }

    #[test]
    fn an_output_is_the_result_only_when_it_is_the_resource() {
        let path = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/disks/d1";
        let status = |output: &str| {
            format!(r#"{{"status":"Succeeded","properties":{{"output":{output}}}}}"#)
        };
        let disk = format!(r#"{{"id":"{}","name":"d1"}}"#, path.to_lowercase());
        assert!(status_resource_output(status(&disk).as_bytes(), path).is_some());
        let other =
            r#"{"id":"/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/disks/d2"}"#;
        assert_eq!(status_resource_output(status(other).as_bytes(), path), None);
        assert_eq!(
            status_resource_output(status(r#"{"result":"ok"}"#).as_bytes(), path),
            None
        );
        assert_eq!(
            status_resource_output(br#"{"status":"Succeeded"}"#, path),
            None
        );
    }

    #[test]
    fn durations_come_from_the_status_resource() {
        let body = br#"{"status":"Succeeded","startTime":"2026-11-30T10:00:00.1234567+00:00","endTime":"2026-11-30T10:00:02.1334567+00:00"}"#;
        assert_eq!(status_resource_duration(body), Some(ms(2010)));
        assert_eq!(status_resource_duration(br#"{"status":"Succeeded"}"#), None);
    }
}
