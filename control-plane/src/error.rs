//! The one error type of the control plane and its mapping to gRPC status.
//!
//! User mistakes carry their own code and a message meant for the caller;
//! everything else is `Internal`, logged with its cause chain and answered
//! with a generic message.

use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// One violated rule of one request field, for google.rpc.BadRequest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// The field's name as in the proto, e.g. `email`.
    pub field: String,
    /// What is wrong with it.
    pub description: String,
}

/// Every way a request can fail.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The request is malformed; `violations` name the offending fields.
    #[error("{message}")]
    InvalidArgument {
        /// Summary for the status message.
        message: String,
        /// Field violations for the BadRequest detail.
        violations: Vec<FieldViolation>,
    },
    /// The named thing does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A unique name is already taken.
    #[error("{0}")]
    AlreadyExists(String),
    /// No valid credentials.
    #[error("{0}")]
    Unauthenticated(String),
    /// Valid credentials, not allowed.
    #[error("{0}")]
    PermissionDenied(String),
    /// The system is not in a state that allows the operation.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A rate limit or capacity bound was hit; retry after the delay.
    #[error("{message}")]
    ResourceExhausted {
        /// What was exhausted.
        message: String,
        /// When a retry may succeed.
        retry_after: Option<Duration>,
    },
    /// A refusal a client acts on by its reason: answered with `code` and a
    /// google.rpc.ErrorInfo detail (domain [`ERROR_DOMAIN`], `reason`), as
    /// the worker identity contract lists them (`MACHINE_REMOVED`, ...).
    #[error("{message}")]
    Refused {
        /// The gRPC code.
        code: Code,
        /// ErrorInfo.reason, UPPER_SNAKE_CASE.
        reason: &'static str,
        /// What happened and what to do, for people.
        message: String,
    },
    /// A bug or an outage; never shown to the client.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// ErrorInfo.domain of the control plane's refusals.
pub const ERROR_DOMAIN: &str = "minispod.dev";

/// Result of the control plane's domain code.
pub type AppResult<T> = Result<T, AppError>;

impl AppError {
    /// An INVALID_ARGUMENT for one field.
    pub fn invalid(field: &str, description: impl Into<String>) -> Self {
        let description = description.into();
        AppError::InvalidArgument {
            message: format!("{field}: {description}"),
            violations: vec![FieldViolation {
                field: field.to_owned(),
                description,
            }],
        }
    }

    /// A refusal with `code` and ErrorInfo `reason`.
    pub fn refused(code: Code, reason: &'static str, message: impl Into<String>) -> Self {
        AppError::Refused {
            code,
            reason,
            message: message.into(),
        }
    }

    /// The ErrorInfo reason of a [`AppError::Refused`], if this is one.
    pub fn reason(&self) -> Option<&'static str> {
        match self {
            AppError::Refused { reason, .. } => Some(reason),
            _ => None,
        }
    }

    /// The gRPC code this error answers with.
    pub fn code(&self) -> Code {
        match self {
            AppError::InvalidArgument { .. } => Code::InvalidArgument,
            AppError::NotFound(_) => Code::NotFound,
            AppError::AlreadyExists(_) => Code::AlreadyExists,
            AppError::Unauthenticated(_) => Code::Unauthenticated,
            AppError::PermissionDenied(_) => Code::PermissionDenied,
            AppError::FailedPrecondition(_) => Code::FailedPrecondition,
            AppError::ResourceExhausted { .. } => Code::ResourceExhausted,
            AppError::Refused { code, .. } => *code,
            AppError::Internal(_) => Code::Internal,
        }
    }
}

/// Whole seconds, rounded up, at least one: the `retry-after` a client is
/// told.
pub fn ceil_secs(d: Duration) -> u64 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
}

/// RESOURCE_EXHAUSTED for too many `what`, with the wait as the retry hint.
pub fn too_many(what: &str, wait: Duration) -> AppError {
    AppError::ResourceExhausted {
        // Rounded up: "retry in 59s" for a wait of 59.9 s would be too early.
        message: format!("too many {what}; retry in {}s", ceil_secs(wait)),
        retry_after: Some(wait),
    }
}

impl From<sqlx::Error> for AppError {
    fn from(e: sqlx::Error) -> Self {
        AppError::Internal(anyhow::Error::new(e).context("database"))
    }
}

impl From<AppError> for Status {
    fn from(e: AppError) -> Self {
        match e {
            AppError::InvalidArgument {
                message,
                violations,
            } => {
                let mut details = ErrorDetails::new();
                for v in violations {
                    details.add_bad_request_violation(v.field, v.description);
                }
                Status::with_error_details(Code::InvalidArgument, message, details)
            }
            AppError::ResourceExhausted {
                message,
                retry_after,
            } => {
                let mut status = Status::with_error_details(
                    Code::ResourceExhausted,
                    message,
                    ErrorDetails::with_retry_info(retry_after),
                );
                if let Some(d) = retry_after {
                    let secs = ceil_secs(d).to_string();
                    if let Ok(v) = secs.parse() {
                        status.metadata_mut().insert("retry-after", v);
                    }
                }
                status
            }
            AppError::Refused {
                code,
                reason,
                message,
            } => Status::with_error_details(
                code,
                message,
                ErrorDetails::with_error_info(
                    reason,
                    ERROR_DOMAIN,
                    std::collections::HashMap::<String, String>::new(),
                ),
            ),
            AppError::Internal(cause) => {
                tracing::error!(error = ?cause, "internal error");
                Status::internal("internal error")
            }
            other => Status::new(other.code(), other.to_string()),
        }
    }
}

/// The canonical name of a gRPC code, e.g. `NOT_FOUND`.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Collects field violations of one request, then fails with all of them.
#[derive(Debug, Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    /// An empty collection.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a violation of `field`.
    pub fn add(&mut self, field: &str, description: impl Into<String>) {
        self.0.push(FieldViolation {
            field: field.to_owned(),
            description: description.into(),
        });
    }

    /// Keeps the value of a parse, or records its error under `field`.
    pub fn take<T>(&mut self, field: &str, parsed: Result<T, String>) -> Option<T> {
        match parsed {
            Ok(v) => Some(v),
            Err(e) => {
                self.add(field, e);
                None
            }
        }
    }

    /// Ok when nothing was recorded, else INVALID_ARGUMENT with every violation.
    pub fn finish(self) -> AppResult<()> {
        if self.0.is_empty() {
            return Ok(());
        }
        let message = self
            .0
            .iter()
            .map(|v| format!("{}: {}", v.field, v.description))
            .collect::<Vec<_>>()
            .join("; ");
        Err(AppError::InvalidArgument {
            message,
            violations: self.0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn violations_become_bad_request_details() {
        let mut v = Violations::new();
        v.add("email", "is not an email address");
        v.add("password", "must be at least 8 characters");
        let status: Status = v.finish().unwrap_err().into();
        assert_eq!(status.code(), Code::InvalidArgument);
        let br = status.get_details_bad_request().expect("BadRequest detail");
        assert_eq!(br.field_violations.len(), 2);
        assert_eq!(br.field_violations[0].field, "email");
    }

    #[test]
    fn refusals_carry_their_reason_in_error_info() {
        let status: Status =
            AppError::refused(Code::PermissionDenied, "MACHINE_REMOVED", "removed").into();
        assert_eq!(status.code(), Code::PermissionDenied);
        let info = status.get_details_error_info().expect("ErrorInfo detail");
        assert_eq!(info.reason, "MACHINE_REMOVED");
        assert_eq!(info.domain, ERROR_DOMAIN);
    }

    #[test]
    fn internal_errors_hide_their_cause() {
        let status: Status = AppError::Internal(anyhow::anyhow!("secret path /x")).into();
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("secret"));
    }
}
