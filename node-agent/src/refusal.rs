//! Why the control plane (or the agent itself) will not let this worker in,
//! and what the operator must do about it.
//!
//! The control plane puts a `google.rpc.ErrorInfo` (domain `minispod.dev`)
//! on its refusals; its `reason` says which one. None of them goes away by
//! asking again with the same credentials, so the agent does not loop: it
//! logs the operator's action, shows the reason in its metrics
//! (`minispod_agent_refused{reason=...}`) and retries at its longest
//! backoff, enrolling again only with a token it has not spent.

use std::fmt;

use tonic::Code;
use tonic_types::StatusExt;

/// The ErrorInfo domain of MiniSpod refusals.
pub const DOMAIN: &str = "minispod.dev";

/// A refusal that sending the same request again will not fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// `WORKER_REMOVED`: an administrator deleted this worker.
    WorkerRemoved,
    /// `MACHINE_REMOVED`: this machine id was removed and not readmitted.
    MachineRemoved,
    /// `CERTIFICATE_REPLACED`: the certificate was replaced or revoked.
    CertificateReplaced,
    /// `REENROLL_NEEDS_APPROVAL`: enrolling an existing worker needs a
    /// token bound to this machine (or the current certificate).
    ReenrollNeedsApproval,
    /// `TOKEN_INVALID`: the token is unknown, expired, revoked or used up.
    TokenInvalid,
    /// The certificate expired (Unix seconds) before it could be renewed.
    CertificateExpired(i64),
    /// A permission refusal without a reason the agent knows.
    Other(String),
}

impl Refusal {
    /// The refusal in `status`, if it is one: PERMISSION_DENIED and
    /// UNAUTHENTICATED, read through their ErrorInfo. Other codes (and
    /// WORKER_ONLINE's FAILED_PRECONDITION) are passing trouble.
    pub fn from_status(status: &tonic::Status) -> Option<Refusal> {
        if !matches!(
            status.code(),
            Code::PermissionDenied | Code::Unauthenticated
        ) {
            return None;
        }
        let reason = status
            .get_details_error_info()
            .filter(|i| i.domain == DOMAIN || i.domain.is_empty())
            .map(|i| i.reason);
        Some(match reason.as_deref() {
            Some("WORKER_REMOVED") => Refusal::WorkerRemoved,
            Some("MACHINE_REMOVED") => Refusal::MachineRemoved,
            Some("CERTIFICATE_REPLACED") => Refusal::CertificateReplaced,
            Some("REENROLL_NEEDS_APPROVAL") => Refusal::ReenrollNeedsApproval,
            Some("TOKEN_INVALID") => Refusal::TokenInvalid,
            _ => Refusal::Other(format!("{}: {}", status.code(), status.message())),
        })
    }

    /// The label shown in `minispod_agent_refused{reason=...}`.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::WorkerRemoved => "WORKER_REMOVED",
            Refusal::MachineRemoved => "MACHINE_REMOVED",
            Refusal::CertificateReplaced => "CERTIFICATE_REPLACED",
            Refusal::ReenrollNeedsApproval => "REENROLL_NEEDS_APPROVAL",
            Refusal::TokenInvalid => "TOKEN_INVALID",
            Refusal::CertificateExpired(_) => "CERTIFICATE_EXPIRED",
            Refusal::Other(_) => "OTHER",
        }
    }

    /// What the operator must do, for the log.
    pub fn operator_action(&self, machine_id: &str) -> String {
        let bound_token = format!(
            "create an enrollment token bound to machine id {machine_id} \
             (CreateEnrollmentToken with machine_id) and give it to the agent \
             (--token-file or MINISPOD_TOKEN)"
        );
        match self {
            Refusal::WorkerRemoved | Refusal::MachineRemoved => {
                format!("an administrator removed this machine; to readmit it, {bound_token}")
            }
            Refusal::CertificateReplaced => format!(
                "the control plane no longer accepts this certificate (replaced or revoked); \
                 {bound_token}"
            ),
            Refusal::ReenrollNeedsApproval => format!(
                "this machine is already a worker and enrolling it again needs approval: \
                 {bound_token}"
            ),
            Refusal::TokenInvalid => "the enrollment token is unknown, expired, revoked or used \
                 up: give the agent a new one (--token-file or MINISPOD_TOKEN)"
                .to_owned(),
            Refusal::CertificateExpired(at) => format!(
                "the certificate expired at {} (Unix {at}) while the agent could not renew it; {bound_token}",
                crate::state::rfc3339(*at)
            ),
            Refusal::Other(m) => format!("the control plane refused this worker ({m})"),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Other(m) => write!(f, "refused: {m}"),
            Refusal::CertificateExpired(at) => {
                write!(f, "certificate expired at {}", crate::state::rfc3339(*at))
            }
            r => write!(f, "refused: {}", r.reason()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_types::ErrorDetails;

    fn refused(code: Code, reason: &str) -> tonic::Status {
        tonic::Status::with_error_details(
            code,
            "no",
            ErrorDetails::with_error_info(reason, DOMAIN, std::collections::HashMap::new()),
        )
    }

    #[test]
    fn refusals_are_read_from_the_error_info() {
        for (code, reason, want) in [
            (
                Code::PermissionDenied,
                "WORKER_REMOVED",
                Refusal::WorkerRemoved,
            ),
            (
                Code::PermissionDenied,
                "MACHINE_REMOVED",
                Refusal::MachineRemoved,
            ),
            (
                Code::PermissionDenied,
                "CERTIFICATE_REPLACED",
                Refusal::CertificateReplaced,
            ),
            (
                Code::PermissionDenied,
                "REENROLL_NEEDS_APPROVAL",
                Refusal::ReenrollNeedsApproval,
            ),
            (
                Code::Unauthenticated,
                "TOKEN_INVALID",
                Refusal::TokenInvalid,
            ),
        ] {
            let r = Refusal::from_status(&refused(code, reason)).unwrap();
            assert_eq!(r, want);
            assert_eq!(r.reason(), reason);
        }
        assert_eq!(
            Refusal::from_status(&tonic::Status::permission_denied("x"))
                .unwrap()
                .reason(),
            "OTHER"
        );
        assert!(
            Refusal::from_status(&refused(Code::FailedPrecondition, "WORKER_ONLINE")).is_none()
        );
        assert!(Refusal::from_status(&tonic::Status::unavailable("down")).is_none());
    }

    #[test]
    fn the_operator_is_told_what_to_do() {
        let a = Refusal::CertificateExpired(0).operator_action("m1");
        assert!(
            a.contains("1970-01-01T00:00:00Z") && a.contains("machine id m1"),
            "{a}"
        );
        assert!(
            Refusal::MachineRemoved
                .operator_action("m1")
                .contains("bound to machine id m1")
        );
    }
}
