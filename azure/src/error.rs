//! What went wrong when talking to Azure, in classes a caller can act on.
//!
//! ARM reports failures in three places — the HTTP status of a request, the `error` object of its
//! body, and the `error` of a polled long-running operation — and [`classify`] turns all three into
//! one [`AzureError`]. Messages carry Azure's own words (they name disks and VMs, never secrets).

use std::time::Duration;

/// A failed Azure call, by what the caller can do about it.
#[derive(Debug, thiserror::Error)]
pub enum AzureError {
    /// The disk, VM or resource group does not exist.
    #[error("not found: {message}")]
    NotFound { message: String },

    /// The disk is attached to another VM (and `maxShares` does not allow one more).
    #[error("the disk is attached to VM {owner}: {message}")]
    OwnedByOtherVm {
        /// The owner's VM name (a scale-set instance as `<scale set>_<instance id>`).
        owner: String,
        message: String,
    },

    /// The disk is still being detached from a VM; attach again when that has finished.
    #[error("the disk is being detached: {message}")]
    BeingDetached { message: String },

    /// The LUN asked for is taken on that VM.
    #[error("LUN conflict: {message}")]
    LunConflict { message: String },

    /// The VM size allows no more data disks.
    #[error("data-disk limit reached{}: {message}", limit.map(|l| format!(" ({l} disks)")).unwrap_or_default())]
    DataDiskLimit { limit: Option<u32>, message: String },

    /// Azure throttled the subscription and the retry budget is spent.
    #[error("throttled by Azure{}: {message}", retry_after.map(|d| format!(" (retry after {}s)", d.as_secs())).unwrap_or_default())]
    Throttled {
        retry_after: Option<Duration>,
        message: String,
    },

    /// The resource changed since it was read (`If-Match` with a stale etag).
    #[error("precondition failed: {message}")]
    PreconditionFailed { message: String },

    /// Azure refused a parameter; the message is Azure's.
    #[error("invalid parameter ({code}): {message}")]
    InvalidParameter { code: String, message: String },

    /// Credentials were refused, or the identity lacks the role for the operation.
    #[error("unauthorized: {message}")]
    Unauthorized { message: String },

    /// A failure that may go away: server errors, resets, timeouts, a VM busy with another
    /// operation for longer than the retry budget.
    #[error("transient failure: {message}")]
    Transient { message: String },

    /// Not sent: everyone who asked for it is gone (their processes died), so nobody wants it
    /// carried out any more.
    #[error("not sent: {message}")]
    Abandoned { message: String },

    /// The caller's own write budget held the write back (nothing was sent); it may go after
    /// `retry_after` ([`crate::WriteGate`]).
    #[error("{message}")]
    Deferred {
        retry_after: Duration,
        message: String,
    },

    /// Anything else Azure said, with its status and code.
    #[error("Azure error{}{}: {message}", status.map(|s| format!(" {s}")).unwrap_or_default(), if code.is_empty() { String::new() } else { format!(" ({code})") })]
    Other {
        status: Option<u16>,
        code: String,
        message: String,
    },
}

impl AzureError {
    /// A short stable name for metrics labels and logs.
    pub fn label(&self) -> &'static str {
        match self {
            AzureError::NotFound { .. } => "not_found",
            AzureError::OwnedByOtherVm { .. } => "owned_by_other_vm",
            AzureError::BeingDetached { .. } => "being_detached",
            AzureError::LunConflict { .. } => "lun_conflict",
            AzureError::DataDiskLimit { .. } => "data_disk_limit",
            AzureError::Throttled { .. } => "throttled",
            AzureError::PreconditionFailed { .. } => "precondition_failed",
            AzureError::InvalidParameter { .. } => "invalid_parameter",
            AzureError::Unauthorized { .. } => "unauthorized",
            AzureError::Transient { .. } => "transient",
            AzureError::Abandoned { .. } => "abandoned",
            AzureError::Deferred { .. } => "deferred",
            AzureError::Other { .. } => "other",
        }
    }

    /// How long Azure asked callers to stay away (throttling), if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            AzureError::Throttled { retry_after, .. } => *retry_after,
            AzureError::Deferred { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// Azure's error code, where it is kept (`""` otherwise).
    pub fn code(&self) -> &str {
        match self {
            AzureError::InvalidParameter { code, .. } | AzureError::Other { code, .. } => code,
            _ => "",
        }
    }

    /// Whether trying the same thing again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            AzureError::Throttled { .. }
                | AzureError::Transient { .. }
                | AzureError::BeingDetached { .. }
                | AzureError::PreconditionFailed { .. }
                | AzureError::Deferred { .. }
        )
    }

    pub(crate) fn other(message: impl Into<String>) -> Self {
        AzureError::Other {
            status: None,
            code: String::new(),
            message: message.into(),
        }
    }

    pub(crate) fn transient(message: impl Into<String>) -> Self {
        AzureError::Transient {
            message: message.into(),
        }
    }
}

/// Whether an ARM answer says the resource is busy with another operation (worth waiting for).
pub fn is_busy(status: u16, code: &str, message: &str) -> bool {
    (status == 409 || status == 0)
        && (code.eq_ignore_ascii_case("OperationNotAllowed")
            || code.eq_ignore_ascii_case("Conflict"))
        && message.to_ascii_lowercase().contains("in progress")
        || code.eq_ignore_ascii_case("OperationPreempted")
        || code.eq_ignore_ascii_case("RetryableError")
}

/// Classifies one ARM failure. `status` is `None` for the `error` of a polled operation status,
/// which carries no HTTP status of its own.
pub fn classify(
    status: Option<u16>,
    code: &str,
    message: &str,
    retry_after: Option<Duration>,
) -> AzureError {
    let message = message.trim().to_string();
    let lower = message.to_ascii_lowercase();
    let code_is = |c: &str| code.eq_ignore_ascii_case(c);
    let s = status.unwrap_or(0);

    if code_is("ConflictingUserInput") || lower.contains("already owned by vm") {
        if let Some(owner) = owner_vm(&message) {
            return AzureError::OwnedByOtherVm { owner, message };
        }
    }
    if code_is("AttachDiskWhileBeingDetached") {
        return AzureError::BeingDetached { message };
    }
    if lower.contains("maximum number of data disks") {
        return AzureError::DataDiskLimit {
            limit: number_after(&lower, "is "),
            message,
        };
    }
    if s == 429
        || code_is("SubscriptionRequestsThrottled")
        || code_is("TooManyRequests")
        || code_is("ResourceRequestsThrottled")
    {
        return AzureError::Throttled {
            retry_after,
            message,
        };
    }
    if s == 412 || code_is("PreconditionFailed") {
        return AzureError::PreconditionFailed { message };
    }
    if s == 401
        || s == 403
        || code_is("AuthenticationFailed")
        || code_is("AuthorizationFailed")
        || code_is("LinkedAuthorizationFailed")
        || code
            .to_ascii_lowercase()
            .starts_with("invalidauthenticationtoken")
        || code_is("ExpiredAuthenticationToken")
    {
        // Azure's code (AuthorizationFailed, …) tells an admin which role or login is wrong.
        let message = if code.is_empty() || message.contains(code) {
            message
        } else {
            format!("{code}: {message}")
        };
        return AzureError::Unauthorized { message };
    }
    if s == 404
        || code_is("ResourceNotFound")
        || code_is("NotFound")
        || code_is("ResourceGroupNotFound")
        || code_is("SubscriptionNotFound")
    {
        return AzureError::NotFound { message };
    }
    if (code_is("InvalidParameter") || code_is("BadRequest"))
        && lower.contains("lun")
        && (lower.contains("already") || lower.contains("taken") || lower.contains("exists"))
    {
        return AzureError::LunConflict { message };
    }
    if is_busy(s, code, &message) || s >= 500 || s == 408 {
        return AzureError::Transient {
            message: if message.is_empty() {
                format!("HTTP {s}")
            } else {
                message
            },
        };
    }
    if s == 400
        || code_is("InvalidParameter")
        || code_is("BadRequest")
        || code_is("InvalidRequestContent")
        || code_is("InvalidResourceName")
    {
        return AzureError::InvalidParameter {
            code: code.to_string(),
            message,
        };
    }
    AzureError::Other {
        status,
        code: code.to_string(),
        message,
    }
}

/// The VM named in "... already owned by VM '<id>'", as a VM name.
fn owner_vm(message: &str) -> Option<String> {
    let lower = message.to_ascii_lowercase();
    let start = lower.find("owned by vm")? + "owned by vm".len();
    let rest = message[start..].trim_start();
    let rest = rest.strip_prefix('\'').unwrap_or(rest);
    let end = rest.find(['\'', ' ']).unwrap_or(rest.len());
    let id = rest[..end].trim_end_matches('.');
    (!id.is_empty()).then(|| vm_name_from_id(id))
}

/// `…/virtualMachines/vm-1` → `vm-1`; `…/virtualMachineScaleSets/ss/virtualMachines/3` → `ss_3`
/// (the instance name Azure shows).
pub fn vm_name_from_id(id: &str) -> String {
    let parts: Vec<&str> = id.trim_matches('/').split('/').collect();
    let pos = |kind: &str| {
        parts
            .iter()
            .position(|p| p.eq_ignore_ascii_case(kind))
            .and_then(|i| parts.get(i + 1).copied())
    };
    match (pos("virtualMachineScaleSets"), pos("virtualMachines")) {
        (Some(ss), Some(instance)) => format!("{ss}_{instance}"),
        (None, Some(vm)) => vm.to_string(),
        _ => parts.last().copied().unwrap_or(id).to_string(),
    }
}

fn number_after(text: &str, marker: &str) -> Option<u32> {
    let start = text.rfind(marker)? + marker.len();
    let digits: String = text[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_is_named_for_plain_and_scale_set_vms() {
        let e = classify(
            Some(409),
            "ConflictingUserInput",
            "Disk '/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/disks/d' cannot be attached as the disk is already owned by VM '/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/node-b'.",
            None,
        );
        match e {
            AzureError::OwnedByOtherVm { owner, .. } => assert_eq!(owner, "node-b"),
            other => panic!("{other:?}"),
        }
        let e = classify(
            Some(409),
            "ConflictingUserInput",
            "Disk 'd' cannot be attached as the disk is already owned by VM '/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/aks-np-vmss/virtualMachines/3'.",
            None,
        );
        assert!(
            matches!(&e, AzureError::OwnedByOtherVm { owner, .. } if owner == "aks-np-vmss_3"),
            "{e:?}"
        );
        assert!(e.to_string().contains("aks-np-vmss_3"));
    }

    #[test]
    fn each_class_is_recognised() {
        let cases: Vec<(Option<u16>, &str, &str, &str)> = vec![
            (Some(404), "ResourceNotFound", "gone", "not_found"),
            (None, "NotFound", "Disk 'x' was not found.", "not_found"),
            (Some(409), "AttachDiskWhileBeingDetached", "busy detaching", "being_detached"),
            (Some(400), "InvalidParameter", "A disk at LUN 3 already exists.", "lun_conflict"),
            (
                Some(409),
                "OperationNotAllowed",
                "The maximum number of data disks allowed to be attached to a VM of this size is 4.",
                "data_disk_limit",
            ),
            (Some(429), "", "", "throttled"),
            (Some(200), "SubscriptionRequestsThrottled", "slow down", "throttled"),
            (Some(412), "PreconditionFailed", "etag", "precondition_failed"),
            (Some(400), "InvalidParameter", "diskSizeGB must grow", "invalid_parameter"),
            (Some(401), "InvalidAuthenticationTokenAudience", "aud", "unauthorized"),
            (Some(403), "AuthorizationFailed", "no role", "unauthorized"),
            (Some(503), "ServiceUnavailable", "later", "transient"),
            (
                Some(409),
                "OperationNotAllowed",
                "Operation on VM 'a' is not allowed since another operation is in progress on it.",
                "transient",
            ),
            (None, "InternalExecutionError", "boom", "other"),
            (Some(409), "Conflict", "shared disks need a detach", "other"),
        ];
        for (status, code, message, label) in cases {
            let e = classify(status, code, message, None);
            assert_eq!(e.label(), label, "{status:?} {code} {message}: {e:?}");
        }
    }

    #[test]
    fn data_disk_limit_carries_the_limit() {
        let e = classify(
            Some(409),
            "OperationNotAllowed",
            "The maximum number of data disks allowed to be attached to a VM of this size is 8.",
            None,
        );
        assert!(matches!(
            e,
            AzureError::DataDiskLimit { limit: Some(8), .. }
        ));
        assert!(e.to_string().contains("(8 disks)"));
    }

    #[test]
    fn throttling_keeps_retry_after() {
        let e = classify(Some(429), "", "", Some(Duration::from_secs(17)));
        assert!(e.to_string().contains("retry after 17s"), "{e}");
        assert!(e.is_retryable());
    }
}
