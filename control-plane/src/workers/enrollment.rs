//! Admitting machines: enrollment tokens, Enroll, RenewCertificate, and
//! identifying a worker by its client certificate.

use std::{net::IpAddr, sync::Arc, time::Duration};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use minispod_proto::v1::{self as pb, MachineFacts};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::Request;

use super::{
    hub::FleetHub,
    queries::{self as workers_db, TokenRow, WorkerRow},
};
use crate::{
    error::{AppError, AppResult, Violations},
    pki::{PeerIdentity, Pki, peer_identity},
    rate_limit::{RateLimiter, address_key},
    store::{new_id, now_ms, timestamp},
};

/// Settings of enrollment.
#[derive(Debug, Clone)]
pub struct EnrollmentConfig {
    /// Lifetime of worker certificates.
    pub cert_ttl: Duration,
    /// SHA-256 of the static token from `--enrollment-token-file`, if any.
    pub static_token_hash: Option<[u8; 32]>,
    /// K3s server URL handed to agents.
    pub k3s_server_url: String,
    /// K3s join token handed to agents.
    pub k3s_token: String,
    /// Enroll calls one address may burst.
    pub rate_burst: u32,
    /// Sustained Enroll calls per second per address.
    pub rate_per_second: u32,
}

/// Enrollment and certificate authority for workers.
#[derive(Clone)]
pub struct Enrollment {
    hub: FleetHub,
    pki: Arc<Pki>,
    config: EnrollmentConfig,
    limiter: Arc<RateLimiter>,
}

impl std::fmt::Debug for Enrollment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enrollment").finish_non_exhaustive()
    }
}

/// A new token: (id, full token `<id>.<secret>`, SHA-256 of the secret).
pub fn new_token() -> (String, String, Vec<u8>) {
    let mut id = [0u8; 6];
    rand::rng().fill_bytes(&mut id);
    let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    let secret = URL_SAFE_NO_PAD.encode(secret);
    let hash = Sha256::digest(secret.as_bytes()).to_vec();
    (id.clone(), format!("{id}.{secret}"), hash)
}

/// Checks the facts an agent reports.
pub fn validate_facts(f: &MachineFacts) -> Result<(), String> {
    let short = |s: &str, max: usize| s.chars().count() <= max && !s.chars().any(char::is_control);
    if f.hostname.is_empty() || f.hostname.len() > 253 || !short(&f.hostname, 253) {
        return Err("hostname must be 1 to 253 characters".into());
    }
    if f.machine_id.is_empty()
        || f.machine_id.len() > 128
        || !f
            .machine_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err("machine_id must be 1 to 128 letters, digits, dashes or underscores".into());
    }
    for (name, v) in [
        ("ip_address", &f.ip_address),
        ("cpu_model", &f.cpu_model),
        ("architecture", &f.architecture),
        ("os", &f.os),
        ("kernel_version", &f.kernel_version),
        ("kubelet_version", &f.kubelet_version),
        ("container_runtime", &f.container_runtime),
        ("agent_version", &f.agent_version),
    ] {
        if !short(v, 256) {
            return Err(format!("{name} must be at most 256 characters"));
        }
    }
    if f.cpu_cores < 0 || f.memory_bytes < 0 || f.storage_bytes < 0 {
        return Err("sizes must not be negative".into());
    }
    Ok(())
}

impl Enrollment {
    /// Enrollment over `hub`'s store, signing with `pki`.
    pub fn new(hub: FleetHub, pki: Arc<Pki>, config: EnrollmentConfig) -> Self {
        let per = Duration::from_secs(1) / config.rate_per_second.max(1);
        let limiter = Arc::new(RateLimiter::for_store(
            hub.db(),
            "enroll-ip",
            config.rate_burst,
            per,
        ));
        Enrollment {
            hub,
            pki,
            config,
            limiter,
        }
    }

    /// Forgets the Enroll rate-limit buckets that have refilled.
    pub fn purge_idle_limits(&self) -> usize {
        self.limiter.purge_idle()
    }

    /// The CA chain handed to agents.
    pub fn ca_pem(&self) -> &str {
        self.pki.ca_cert_pem()
    }

    /// Checks the token in constant time; `Some(id)` for a database token
    /// (to spend in the transaction), `None` for the static one.
    async fn check_token(&self, token: &str) -> AppResult<Option<String>> {
        let refused = |why: &str| AppError::Unauthenticated(format!("enrollment token {why}"));
        if let Some(static_hash) = &self.config.static_token_hash {
            let given = Sha256::digest(token.as_bytes());
            if bool::from(given[..].ct_eq(static_hash)) {
                return Ok(None);
            }
        }
        let Some((id, secret)) = token.split_once('.') else {
            return Err(refused("is invalid"));
        };
        let row = workers_db::token(self.hub.db().read(), id).await?;
        // Compare against a dummy when the id is unknown, so timing does not
        // tell which ids exist.
        let stored = row
            .as_ref()
            .map_or(vec![0u8; 32], |r| r.secret_hash.clone());
        let given = Sha256::digest(secret.as_bytes());
        let matches = bool::from(given[..].ct_eq(&stored));
        let Some(row) = row.filter(|_| matches) else {
            return Err(refused("is invalid"));
        };
        if row.revoked_at.is_some() {
            return Err(refused("was revoked"));
        }
        if row.expires_at <= now_ms() {
            return Err(refused("expired"));
        }
        if row.max_uses > 0 && row.uses >= row.max_uses {
            return Err(refused("is used up"));
        }
        Ok(Some(row.id))
    }

    /// Admits a machine (see AgentService.Enroll).
    pub async fn enroll(
        &self,
        ip: Option<IpAddr>,
        r: pb::EnrollRequest,
    ) -> AppResult<pb::EnrollResponse> {
        let outcome = self.admit(ip, r).await;
        let counter = match &outcome {
            Ok(_) => &self.hub.metrics().enrollments,
            Err(_) => &self.hub.metrics().enrollment_failures,
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        outcome
    }

    async fn admit(
        &self,
        ip: Option<IpAddr>,
        r: pb::EnrollRequest,
    ) -> AppResult<pb::EnrollResponse> {
        let key = ip.map(|i| address_key(i).to_string()).unwrap_or_default();
        self.limiter
            .take(&key)
            .await
            .map_err(|wait| AppError::ResourceExhausted {
                message: "too many enrollments from this address".into(),
                retry_after: Some(wait),
            })?;
        let mut v = Violations::new();
        if r.token.is_empty() {
            v.add("token", "is required");
        }
        if r.csr_pem.is_empty() || r.csr_pem.len() > 16 * 1024 {
            v.add("csr_pem", "must be a PEM CSR of at most 16 KiB");
        }
        let facts = r.facts.unwrap_or_default();
        if let Err(e) = validate_facts(&facts) {
            v.add("facts", e);
        }
        v.finish()?;
        let token_id = self.check_token(&r.token).await?;

        let mut tx = self.hub.db().begin().await?;
        if let Some(id) = &token_id
            && !workers_db::consume_token(&mut tx, id).await?
        {
            // Spent or revoked between the check and now.
            return Err(AppError::Unauthenticated(
                "enrollment token is used up".into(),
            ));
        }
        let existing = workers_db::by_machine_id(&mut tx, &facts.machine_id).await?;
        let worker_id = existing.as_ref().map_or_else(new_id, |w| w.id.clone());
        let cert = self
            .pki
            .sign_worker_csr(&r.csr_pem, &worker_id, self.config.cert_ttl)
            .map_err(|e| AppError::invalid("csr_pem", e))?;
        if existing.is_some() {
            workers_db::write_facts(&mut tx, &worker_id, &facts).await?;
            workers_db::set_certificate(
                &mut tx,
                &worker_id,
                &cert.serial,
                cert.expires_at_ms,
                true,
            )
            .await?;
        } else {
            workers_db::insert(
                &mut tx,
                &worker_id,
                &facts,
                &cert.serial,
                cert.expires_at_ms,
            )
            .await?;
        }
        let row = workers_db::require(&mut tx, &worker_id).await?;
        tx.commit().await?;
        // A re-enrolled machine's old certificate is void: close its stream.
        self.hub.disconnect(&worker_id);
        self.hub.publish(&row);
        tracing::info!(worker_id, name = %facts.hostname, reused = existing.is_some(), "worker enrolled");
        Ok(pb::EnrollResponse {
            worker_id,
            certificate_pem: cert.pem,
            ca_pem: self.ca_pem().to_owned(),
            certificate_expires_at: Some(timestamp(cert.expires_at_ms)),
            k3s_server_url: self.config.k3s_server_url.clone(),
            k3s_token: self.config.k3s_token.clone(),
            heartbeat_interval_seconds: self.hub.config().heartbeat_interval.as_secs().max(1)
                as i32,
        })
    }

    /// The worker behind the request's client certificate. The TLS layer
    /// verified the chain against the CA; here the certificate must still be
    /// the one the store accepts for an existing worker.
    pub async fn authenticate_peer<T>(
        &self,
        request: &Request<T>,
    ) -> AppResult<(PeerIdentity, WorkerRow)> {
        let certs = request
            .peer_certs()
            .ok_or_else(|| AppError::Unauthenticated("a client certificate is required".into()))?;
        let identity = certs
            .first()
            .and_then(|c| peer_identity(c.as_ref()))
            .ok_or_else(|| AppError::Unauthenticated("unreadable client certificate".into()))?;
        let worker = workers_db::by_id(self.hub.db().read(), &identity.worker_id)
            .await?
            .ok_or_else(|| AppError::PermissionDenied("the worker was deleted".into()))?;
        if !bool::from(
            worker
                .cert_serial
                .as_bytes()
                .ct_eq(identity.serial.as_bytes()),
        ) {
            return Err(AppError::PermissionDenied(
                "the certificate was revoked or replaced".into(),
            ));
        }
        Ok((identity, worker))
    }

    /// Signs a fresh certificate for an authenticated worker.
    pub async fn renew(
        &self,
        worker: &WorkerRow,
        csr_pem: &str,
    ) -> AppResult<pb::RenewCertificateResponse> {
        if csr_pem.is_empty() || csr_pem.len() > 16 * 1024 {
            return Err(AppError::invalid(
                "csr_pem",
                "must be a PEM CSR of at most 16 KiB",
            ));
        }
        let cert = self
            .pki
            .sign_worker_csr(csr_pem, &worker.id, self.config.cert_ttl)
            .map_err(|e| AppError::invalid("csr_pem", e))?;
        let mut tx = self.hub.db().begin().await?;
        workers_db::set_certificate(&mut tx, &worker.id, &cert.serial, cert.expires_at_ms, false)
            .await?;
        tx.commit().await?;
        tracing::info!(worker_id = %worker.id, "worker certificate renewed");
        Ok(pb::RenewCertificateResponse {
            certificate_pem: cert.pem,
            certificate_expires_at: Some(timestamp(cert.expires_at_ms)),
            ca_pem: self.ca_pem().to_owned(),
        })
    }
}

impl From<&TokenRow> for pb::EnrollmentToken {
    fn from(t: &TokenRow) -> Self {
        pb::EnrollmentToken {
            id: t.id.clone(),
            description: t.description.clone(),
            expires_at: Some(timestamp(t.expires_at)),
            max_uses: t.max_uses as i32,
            uses: t.uses as i32,
            revoked: t.revoked_at.is_some(),
            created_at: Some(timestamp(t.created_at)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_have_an_id_and_a_hashed_secret() {
        let (id, token, hash) = new_token();
        let (tid, secret) = token.split_once('.').unwrap();
        assert_eq!(tid, id);
        assert_eq!(id.len(), 12);
        assert!(secret.len() >= 43);
        assert_eq!(Sha256::digest(secret.as_bytes()).to_vec(), hash);
        assert_ne!(new_token().1, token);
    }

    #[test]
    fn facts_are_bounded() {
        let ok = MachineFacts {
            hostname: "w1".into(),
            machine_id: "abc123".into(),
            ..Default::default()
        };
        assert!(validate_facts(&ok).is_ok());
        assert!(
            validate_facts(&MachineFacts {
                hostname: String::new(),
                ..ok.clone()
            })
            .is_err()
        );
        assert!(
            validate_facts(&MachineFacts {
                machine_id: "../etc".into(),
                ..ok.clone()
            })
            .is_err()
        );
        assert!(
            validate_facts(&MachineFacts {
                os: "x".repeat(300),
                ..ok.clone()
            })
            .is_err()
        );
        assert!(
            validate_facts(&MachineFacts {
                memory_bytes: -1,
                ..ok
            })
            .is_err()
        );
    }
}
