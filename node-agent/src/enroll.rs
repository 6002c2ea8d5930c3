//! Enrollment (token + CSR, once) and certificate renewal (over mTLS).
//!
//! The key pair is generated here and only the CSR leaves the machine.

use anyhow::{Context, bail};
use minispod_proto::v1::{self as pb, agent_service_client::AgentServiceClient};
use rcgen::{CertificateParams, DnType, KeyPair};
use tonic::transport::Channel;

use crate::{
    state::{Credentials, Identity, StateDir},
    tls::{self, Trust},
};

/// A fresh key pair and a CSR for it: (key PEM, CSR PEM).
pub fn key_and_csr(common_name: &str) -> anyhow::Result<(String, String)> {
    let key = KeyPair::generate().context("generate key")?;
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    let csr = params.serialize_request(&key).context("build CSR")?;
    Ok((key.serialize_pem(), csr.pem().context("encode CSR")?))
}

fn unix(ts: Option<minispod_proto::prost_types::Timestamp>) -> i64 {
    ts.map_or(0, |t| t.seconds)
}

/// What enrollment hands the join hook.
#[derive(Debug, Clone, Default)]
pub struct JoinInfo {
    /// K3s server URL.
    pub k3s_server_url: String,
    /// K3s join token.
    pub k3s_token: String,
}

/// Enrolls with `token` against the first server that answers, trusting it
/// per `trust`; stores the credentials in `state`.
pub async fn enroll(
    servers: &[String],
    trust: &Trust,
    token: &str,
    facts: pb::MachineFacts,
    state: &StateDir,
) -> anyhow::Result<(Credentials, JoinInfo)> {
    let (key_pem, csr_pem) = key_and_csr(&facts.hostname)?;
    let mut last_error = None;
    for server in servers {
        let attempt = async {
            let channel = tls::channel(server, tls::client_config(trust, None)?).await?;
            let r = AgentServiceClient::new(channel)
                .enroll(pb::EnrollRequest {
                    token: token.to_owned(),
                    csr_pem: csr_pem.clone(),
                    facts: Some(facts.clone()),
                })
                .await
                .map_err(|s| anyhow::anyhow!("{}: {}", s.code(), s.message()))?
                .into_inner();
            Ok::<_, anyhow::Error>(r)
        };
        match attempt.await {
            Ok(r) => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64);
                let creds = Credentials {
                    identity: Identity {
                        worker_id: r.worker_id.clone(),
                        issued_at: now,
                        expires_at: unix(r.certificate_expires_at),
                    },
                    key_pem: key_pem.clone(),
                    cert_pem: r.certificate_pem,
                    ca_pem: r.ca_pem,
                };
                state.save_credentials(&creds)?;
                tracing::info!(worker_id = %r.worker_id, %server, "enrolled");
                return Ok((
                    creds,
                    JoinInfo {
                        k3s_server_url: r.k3s_server_url,
                        k3s_token: r.k3s_token,
                    },
                ));
            }
            Err(e) => {
                tracing::warn!(%server, error = %e, "enrollment failed");
                last_error = Some(e);
            }
        }
    }
    match last_error {
        Some(e) => Err(e.context("enrollment failed on every server")),
        None => bail!("no server given"),
    }
}

/// Renews the certificate over `channel` (mTLS with the current one) with a
/// new key pair; stores and returns the new credentials.
pub async fn renew(
    channel: Channel,
    current: &Credentials,
    state: &StateDir,
) -> anyhow::Result<Credentials> {
    let (key_pem, csr_pem) = key_and_csr(&current.identity.worker_id)?;
    let r = AgentServiceClient::new(channel)
        .renew_certificate(pb::RenewCertificateRequest { csr_pem })
        .await
        .map_err(|s| anyhow::anyhow!("{}: {}", s.code(), s.message()))?
        .into_inner();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let creds = Credentials {
        identity: Identity {
            worker_id: current.identity.worker_id.clone(),
            issued_at: now,
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
