//! Errors as kube-apiserver reports them: `Status` objects with a reason and
//! an HTTP code, which kube-rs turns into `kube::Error::Api`.

use serde_json::{Value, json};

use crate::kinds::Kind;

/// A failed request, rendered as a `Status` object.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// `Status.reason` (`NotFound`, `Conflict`, ...).
    pub reason: &'static str,
    /// `Status.message`.
    pub message: String,
    /// `Status.details`, if any.
    pub details: Option<Value>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    fn named(kind: &Kind, name: &str) -> Value {
        json!({"name": name, "group": kind.group, "kind": kind.plural})
    }

    /// 403 Forbidden with this message and details (see `rbac`).
    pub fn forbidden(message: String, details: Value) -> Self {
        Self::new(403, "Forbidden", message).with_details(details)
    }

    /// 404: `pods "x" not found`.
    pub fn not_found(kind: &Kind, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", kind.qualified()),
        )
        .with_details(Self::named(kind, name))
    }

    /// 409: `pods "x" already exists`.
    pub fn already_exists(kind: &Kind, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", kind.qualified()),
        )
        .with_details(Self::named(kind, name))
    }

    /// 409: the write was based on a stale resourceVersion.
    pub fn stale(kind: &Kind, name: &str) -> Self {
        Self::conflict(
            kind,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 409 Conflict with kube-apiserver's "Operation cannot be fulfilled" prefix.
    pub fn conflict(kind: &Kind, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                kind.qualified()
            ),
        )
        .with_details(Self::named(kind, name))
    }

    /// 409 Conflict from server-side apply, with one cause per field.
    pub fn apply_conflict(kind: &Kind, name: &str, message: String, causes: Vec<Value>) -> Self {
        let mut details = Self::named(kind, name);
        details["causes"] = Value::Array(causes);
        Self::new(409, "Conflict", message).with_details(details)
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 422 Invalid, as validation answers: `Pod "x" is invalid: field: why`.
    pub fn invalid(kind: &Kind, name: &str, field: &str, why: &str) -> Self {
        let mut details = Self::named(kind, name);
        details["kind"] = json!(kind.kind);
        details["causes"] =
            json!([{"reason": "FieldValueRequired", "message": why, "field": field}]);
        Self::new(
            422,
            "Invalid",
            format!("{} \"{name}\" is invalid: {field}: {why}", kind.kind),
        )
        .with_details(details)
    }

    /// 405 for a verb the resource does not support.
    pub fn method_not_allowed() -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
    }

    /// 404 for a path no resource is served at.
    pub fn no_route() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    /// 415 for a body in a format the stand-in does not take.
    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format ({content_type}) - accepted media types include: application/json, application/merge-patch+json, application/apply-patch+yaml"
            ),
        )
    }

    /// 413 for a body over the limit.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            413,
            "RequestEntityTooLarge",
            format!("Request entity too large: limit is {limit}"),
        )
    }

    /// 401 for a request without the bearer token.
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    /// 410 for a watch from a resourceVersion no longer in the history.
    pub fn expired(message: String) -> Self {
        Self::new(410, "Expired", message)
    }

    /// 429 with causes, as the eviction subresource answers.
    pub fn too_many_requests(message: &str, causes: Vec<Value>) -> Self {
        Self::new(429, "TooManyRequests", message)
            .with_details(json!({"causes": causes, "retryAfterSeconds": 0}))
    }

    /// 500 InternalError.
    pub fn internal(message: impl Into<String>) -> Self {
        let message = message.into();
        Self::new(
            500,
            "InternalError",
            format!("Internal error occurred: {message}"),
        )
        .with_details(json!({"causes": [{"message": message}]}))
    }

    /// The `Status` object for this error.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

/// A `Status` object for success (what eviction answers).
pub fn success_status(code: u16) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": code})
}
