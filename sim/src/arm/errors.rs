//! ARM's error shapes: `{"error":{"code","message","target"}}` with the status ARM uses for each.

use crate::http::Response;
use crate::model::ErrorBody;

pub type ArmResult<T> = Result<T, ErrorBody>;

pub fn error(status: u16, code: &str, message: impl Into<String>) -> ErrorBody {
    ErrorBody {
        status,
        code: code.into(),
        message: message.into(),
        target: None,
    }
}

impl ErrorBody {
    pub fn with_target(mut self, target: &str) -> ErrorBody {
        self.target = Some(target.into());
        self
    }

    pub fn response(&self) -> Response {
        Response::json(self.status, &self.to_json())
            .with_header("x-ms-error-code", self.code.clone())
    }
}

pub fn invalid(message: impl Into<String>) -> ErrorBody {
    error(400, "InvalidParameter", message)
}

pub fn not_found(kind: &str, rg: &str, name: &str) -> ErrorBody {
    error(
        404,
        "ResourceNotFound",
        format!(
            "The Resource 'Microsoft.Compute/{kind}/{name}' under resource group '{rg}' was not found. \
             For more details please go to https://aka.ms/ARMResourceNotFoundFix"
        ),
    )
}

pub fn busy(what: &str, name: &str) -> ErrorBody {
    error(
        409,
        "OperationNotAllowed",
        format!(
            "Operation on {what} '{name}' is not allowed since another operation is in progress on it. \
             Retry after it completes."
        ),
    )
}
