//! Enrollment (token + CSR) and certificate renewal (over mTLS).
//!
//! The key pair is generated here and only the CSR leaves the machine. A
//! response is saved only once it checks out (its CA matches the pin), and
//! saving it swaps the whole identity in one rename, so a failed or refused
//! attempt leaves the old identity as it was.

use anyhow::Context;
use minispod_proto::v1::{self as pb, agent_service_client::AgentServiceClient};
use rcgen::{CertificateParams, DnType, KeyPair};
use tonic::transport::Channel;

use crate::{
    refusal::Refusal,
    secret::Secret,
    state::{self, Credentials, Identity, K3sJoin, StateDir},
    tls::{self, ClientIdentity, Trust},
    token::Token,
};

/// Why an enrollment or renewal did not happen.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// The control plane refused it for a reason asking again won't fix.
    #[error("{0}")]
    Refused(Refusal),
    /// The control plane keeps this machine out until an administrator
    /// decides (`WORKER_NAME_TAKEN`: another machine's worker has this
    /// host name); its words say which worker and what to do. The token is
    /// not spent: the agent asks again, slowly, with the same one.
    #[error("{0}")]
    AwaitingApproval(String),
    /// Anything else (network, a server in trouble, a bad response).
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

/// ErrorInfo reason of an Enroll refused because another machine's
/// worker has this host name.
pub const WORKER_NAME_TAKEN: &str = "WORKER_NAME_TAKEN";

impl From<tonic::Status> for EnrollError {
    fn from(s: tonic::Status) -> EnrollError {
        if s.code() == tonic::Code::AlreadyExists
            && tonic_types::StatusExt::get_details_error_info(&s)
                .is_some_and(|i| i.reason == WORKER_NAME_TAKEN)
        {
            return EnrollError::AwaitingApproval(s.message().to_owned());
        }
        match Refusal::from_status(&s) {
            Some(r) => {
                // The server's words say which case of the reason it is
                // ("was revoked", "expired"); the caller logs what to do.
                tracing::warn!(code = ?s.code(), message = %s.message(), "the control plane refused the enrollment");
                EnrollError::Refused(r)
            }
            None => EnrollError::Failed(anyhow::anyhow!("{}: {}", s.code(), s.message())),
        }
    }
}

/// A fresh key pair and a CSR for it: (key PEM, CSR PEM).
pub fn key_and_csr(common_name: &str) -> anyhow::Result<(Secret, String)> {
    let key = KeyPair::generate().context("generate key")?;
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    let csr = params.serialize_request(&key).context("build CSR")?;
    Ok((
        Secret::new(key.serialize_pem()),
        csr.pem().context("encode CSR")?,
    ))
}

fn unix(ts: Option<minispod_proto::prost_types::Timestamp>) -> i64 {
    ts.map_or(0, |t| t.seconds)
}

/// Enrolls with `token` against the first server that answers, trusting it
/// per `trust` and presenting `current`'s certificate when it has not
/// expired (the contract lets an unbound token re-enroll an existing worker
/// that way). On success: saves the credentials (replacing `current`),
/// spends the token (records its hash, deletes its file) and records the
/// K3s join settings as not yet joined. A refusal stops at once: the
/// servers share one database, so another would refuse too.
pub async fn enroll(
    servers: &[String],
    trust: &Trust,
    token: &Token,
    facts: pb::MachineFacts,
    state: &StateDir,
    current: Option<&Credentials>,
) -> Result<(Credentials, K3sJoin), EnrollError> {
    let (key_pem, csr_pem) = key_and_csr(&facts.hostname)?;
    let presented = current
        .filter(|c| !c.identity.expired_at(state::now()))
        .map(|c| ClientIdentity {
            cert_pem: c.cert_pem.clone(),
            key_pem: c.key_pem.clone(),
        });
    let mut last_error = None;
    for server in servers {
        let attempt = async {
            let channel =
                tls::channel(server, tls::client_config(trust, presented.as_ref())?).await?;
            let r = AgentServiceClient::new(channel)
                .enroll(pb::EnrollRequest {
                    token: token.value.expose().to_owned(),
                    csr_pem: csr_pem.clone(),
                    facts: Some(facts.clone()),
                })
                .await?
                .into_inner();
            tls::check_ca_bundle(trust, &r.ca_pem)?;
            Ok::<_, EnrollError>(r)
        };
        match attempt.await {
            Ok(r) => {
                let creds = Credentials {
                    identity: Identity {
                        worker_id: r.worker_id.clone(),
                        issued_at: state::now(),
                        expires_at: unix(r.certificate_expires_at),
                    },
                    key_pem: key_pem.clone(),
                    cert_pem: r.certificate_pem,
                    ca_pem: r.ca_pem,
                };
                state.save_credentials(&creds)?;
                tracing::info!(worker_id = %r.worker_id, %server, "enrolled");
                if let Err(e) = token.spend(state) {
                    tracing::error!(error = %format!("{e:#}"), "could not spend the enrollment token (record its hash, delete its file)");
                }
                let join = K3sJoin {
                    server_url: r.k3s_server_url,
                    token: Secret::new(r.k3s_token),
                    worker_id: r.worker_id,
                    succeeded: false,
                    last_error: String::new(),
                };
                if let Err(e) = state.save_k3s_join(&join) {
                    tracing::error!(error = %format!("{e:#}"), "could not record the K3s join settings");
                }
                return Ok((creds, join));
            }
            Err(EnrollError::Refused(r)) => {
                tracing::warn!(%server, reason = r.reason(), "enrollment refused");
                return Err(EnrollError::Refused(r));
            }
            Err(e @ EnrollError::AwaitingApproval(_)) => return Err(e),
            Err(EnrollError::Failed(e)) => {
                tracing::warn!(%server, error = %format!("{e:#}"), "enrollment failed");
                last_error = Some(e);
            }
        }
    }
    Err(EnrollError::Failed(match last_error {
        Some(e) => e.context("enrollment failed on every server"),
        None => anyhow::anyhow!("no server given"),
    }))
}

/// Renews the certificate over `channel` (mTLS with the current one) with a
/// new key pair; checks the returned CA against the saved one, then stores
/// and returns the new credentials.
pub async fn renew(
    channel: Channel,
    current: &Credentials,
    state: &StateDir,
) -> Result<Credentials, EnrollError> {
    let (key_pem, csr_pem) = key_and_csr(&current.identity.worker_id)?;
    let r = AgentServiceClient::new(channel)
        .renew_certificate(pb::RenewCertificateRequest { csr_pem })
        .await?
        .into_inner();
    tls::check_ca_bundle(&Trust::CaPem(current.ca_pem.clone()), &r.ca_pem)?;
    let creds = Credentials {
        identity: Identity {
            worker_id: current.identity.worker_id.clone(),
            issued_at: state::now(),
            expires_at: unix(r.certificate_expires_at),
        },
        key_pem,
        cert_pem: r.certificate_pem,
        ca_pem: r.ca_pem,
    };
    state.save_credentials(&creds)?;
    tracing::info!(worker_id = %creds.identity.worker_id, "certificate renewed");
    Ok(creds)
}
