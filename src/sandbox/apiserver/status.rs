//! Kubernetes `Status` objects: every error the server answers, with the code and reason
//! a real API server would give.

use super::store::StoreError;
use serde_json::{Value, json};

/// An error answer.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// `Status.reason` (`NotFound`, `Conflict`, …).
    pub reason: &'static str,
    /// `Status.message`.
    pub message: String,
    /// `Status.details`, when the error is about one object.
    pub details: Option<Value>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }
    /// 401 Unauthorized.
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }
    /// 404 NotFound for a path the server does not serve.
    pub fn no_route(path: &str) -> Self {
        let mut e = Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        );
        e.details = Some(
            json!({"causes": [{"reason": "UnexpectedServerResponse", "message": format!("404 page not found: {path}")}]}),
        );
        e
    }
    /// 405 MethodNotAllowed.
    pub fn method_not_allowed(method: &str, what: &str) -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            format!(
                "the server does not allow this method on the requested resource: {method} {what}"
            ),
        )
    }
    /// 406 NotAcceptable.
    pub fn not_acceptable(accept: &str) -> Self {
        Self::new(
            406,
            "NotAcceptable",
            format!(
                "only the following media types are accepted: application/json (asked: {accept})"
            ),
        )
    }
    /// 409 Conflict, injected by faults.
    pub fn injected_conflict() -> Self {
        Self::new(
            409,
            "Conflict",
            "Operation cannot be fulfilled: the object has been modified; please apply your changes to the latest version and try again (injected fault)",
        )
    }
    /// 413 RequestEntityTooLarge.
    pub fn too_large() -> Self {
        Self::new(
            413,
            "RequestEntityTooLarge",
            "the request body is too large",
        )
    }
    /// 415 UnsupportedMediaType.
    pub fn unsupported_media_type(ct: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format: {ct}"),
        )
    }
    /// 422 Invalid.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(422, "Invalid", message)
    }
    /// 429 TooManyRequests.
    pub fn too_many_requests() -> Self {
        Self::new(
            429,
            "TooManyRequests",
            "too many requests, please try again later",
        )
    }
    /// 500 InternalError.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }
    /// 500 InternalError, injected by faults.
    pub fn injected_error() -> Self {
        Self::internal("Internal error occurred: injected fault")
    }
    /// 410 Expired (a continue token the server cannot honour).
    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    /// The `Status` object.
    pub fn status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }
}

/// Group and plural of a qualified resource (`deployments.apps`).
fn details(resource: &str, name: &str) -> Value {
    let (kind, group) = resource.split_once('.').unwrap_or((resource, ""));
    let mut d = json!({"name": name, "kind": kind});
    if !group.is_empty() {
        d["group"] = Value::String(group.into());
    }
    d
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let message = e.to_string();
        match &e {
            StoreError::NotFound { resource, name, .. } => ApiError {
                details: Some(details(resource, name)),
                ..ApiError::new(404, "NotFound", message)
            },
            StoreError::AlreadyExists { resource, name, .. } => ApiError {
                details: Some(details(resource, name)),
                ..ApiError::new(409, "AlreadyExists", message)
            },
            StoreError::Conflict { resource, name, .. } => ApiError {
                details: Some(details(resource, name)),
                ..ApiError::new(409, "Conflict", message)
            },
            StoreError::Invalid(_) => ApiError::invalid(message),
            StoreError::Io { .. } | StoreError::Busy { .. } => {
                let chain = miette::Report::new(e);
                ApiError::internal(format!("{chain:#}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_map_to_statuses() {
        let e: ApiError = StoreError::NotFound {
            resource: "deployments.apps".into(),
            namespace: Some("x".into()),
            name: "d".into(),
        }
        .into();
        let s = e.status();
        assert_eq!(s["code"], 404);
        assert_eq!(s["reason"], "NotFound");
        assert_eq!(s["message"], "deployments.apps \"d\" not found");
        assert_eq!(
            s["details"],
            json!({"name": "d", "kind": "deployments", "group": "apps"})
        );
        assert_eq!(ApiError::unauthorized().status()["code"], 401);
    }
}
