//! kube-apiserver's failures: a `Status` object with the HTTP code, a reason clients switch on
//! (`NotFound`, `AlreadyExists`, `Conflict`, `Invalid`, `Expired`…) and its exact message forms.

use crate::http::Response;
use serde_json::{json, Value};

#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Value,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: Value::Null,
        }
    }

    fn about(mut self, kind: &str, name: &str) -> ApiError {
        self.details = json!({"name": name, "kind": kind});
        self
    }

    /// `persistentvolumeclaims "x" not found`
    pub fn not_found(qualified: &str, name: &str) -> ApiError {
        ApiError::new(404, "NotFound", format!("{qualified} \"{name}\" not found"))
            .about(qualified.split('.').next().unwrap_or(qualified), name)
    }

    pub fn already_exists(qualified: &str, name: &str) -> ApiError {
        ApiError::new(
            409,
            "AlreadyExists",
            format!("{qualified} \"{name}\" already exists"),
        )
        .about(qualified.split('.').next().unwrap_or(qualified), name)
    }

    pub fn conflict(qualified: &str, name: &str) -> ApiError {
        ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {qualified} \"{name}\": the object has been modified; \
                 please apply your changes to the latest version and try again"
            ),
        )
        .about(qualified.split('.').next().unwrap_or(qualified), name)
    }

    /// 422: `Kind.group "name" is invalid: field: reason`
    pub fn invalid(kind: &str, name: &str, field: &str, why: &str) -> ApiError {
        let mut e = ApiError::new(
            422,
            "Invalid",
            format!("{kind} \"{name}\" is invalid: {field}: {why}"),
        );
        e.details = json!({"name": name, "kind": kind,
            "causes": [{"reason": "FieldValueInvalid", "message": why, "field": field}]});
        e
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "BadRequest", message)
    }

    pub fn gone(message: impl Into<String>) -> ApiError {
        ApiError::new(410, "Expired", message)
    }

    pub fn status_body(&self) -> Value {
        let mut v = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if !self.details.is_null() {
            v["details"] = self.details.clone();
        }
        v
    }

    pub fn response(&self) -> Response {
        Response::json(self.code, &self.status_body())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_kube_apiservers() {
        let e = ApiError::not_found("persistentvolumeclaims", "data");
        assert_eq!(e.message, "persistentvolumeclaims \"data\" not found");
        let body = e.status_body();
        assert_eq!(body["reason"], "NotFound");
        assert_eq!(body["code"], 404);
        assert_eq!(body["details"]["kind"], "persistentvolumeclaims");
        let c = ApiError::conflict("leases.coordination.k8s.io", "l");
        assert!(c
            .message
            .starts_with("Operation cannot be fulfilled on leases.coordination.k8s.io \"l\""));
    }
}
