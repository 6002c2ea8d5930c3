//! Admitting machines: enrollment tokens, Enroll, RenewCertificate, and
//! identifying a worker by its client certificate.

use std::{net::IpAddr, sync::Arc, time::Duration};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use minispod_proto::v1::{self as pb, MachineFacts};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::{Code, Request};

use super::{
    hub::FleetHub,
    queries::{self as workers_db, TokenRow, WorkerRow},
};
use crate::{
    error::{AppError, AppResult, Violations},
    pki::{PeerIdentity, Pki, peer_identity},
    rate_limit::{RateLimiter, address_key},
    store::{Db, Tx, new_id, now_ms, timestamp},
};

/// Queuing a notice in the enrollment's transaction
/// ([`EnrollmentNotices::enrolled`]).
pub type Queued<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = AppResult<usize>> + Send + 'a>>;

/// Who is told of a new machine, in the enrollment's own transaction (so
/// the notice is written once, with the enrollment). `crate::notifications`
/// implements it for its `Notifier`; startup hands it over: the workers
/// know nothing of notices.
pub trait EnrollmentNotices: Send + Sync {
    /// Queues the "new worker enrolled" notice of `worker` in `tx`;
    /// returns how many messages were queued.
    fn enrolled<'a>(&'a self, tx: &'a mut Tx, worker: &'a WorkerRow, at_ms: i64) -> Queued<'a>;
    /// Wakes the delivery after the commit, when something was queued.
    fn wake(&self);
}

/// ErrorInfo reasons of refused agent calls (the worker identity contract).
pub mod reason {
    /// Enroll for a machine an administrator removed and has not readmitted.
    pub const MACHINE_REMOVED: &str = "MACHINE_REMOVED";
    /// Connect or RenewCertificate with a deleted worker's certificate.
    pub const WORKER_REMOVED: &str = "WORKER_REMOVED";
    /// Connect or RenewCertificate with a certificate the store no longer
    /// accepts (renewed or re-enrolled since).
    pub const CERTIFICATE_REPLACED: &str = "CERTIFICATE_REPLACED";
    /// Enroll for an existing worker while it is online.
    pub const WORKER_ONLINE: &str = "WORKER_ONLINE";
    /// Enroll for an existing worker with neither its current certificate
    /// nor a token bound to its machine.
    pub const REENROLL_NEEDS_APPROVAL: &str = "REENROLL_NEEDS_APPROVAL";
    /// Enroll of a machine whose host name is another machine's worker
    /// (ALREADY_EXISTS): refused until an administrator approves the
    /// takeover (WorkerService.ApproveWorkerTakeover) or deletes that
    /// worker. The enrollment token is not spent.
    pub const WORKER_NAME_TAKEN: &str = "WORKER_NAME_TAKEN";
    /// Enroll with an unknown, expired, revoked or used-up token, or one
    /// bound to another machine.
    pub const TOKEN_INVALID: &str = "TOKEN_INVALID";
    /// Enroll while the linked cluster cannot make a K3s join token (and no
    /// --k3s-token-file fallback): UNAVAILABLE, retry later; the enrollment
    /// token is not spent.
    pub const CLUSTER_UNAVAILABLE: &str = "CLUSTER_UNAVAILABLE";
}

pub use minispod_support::secret::Secret;

/// The token of `--enrollment-token-file`: imported into the token table at
/// start (once: restarts keep its expiry, uses and revocation), so it
/// expires, is used up, and can be listed and revoked like any other.
#[derive(Debug, Clone)]
pub struct StaticToken {
    /// The token as the file holds it.
    pub token: Secret,
    /// Where it came from, for its description.
    pub source: String,
    /// Lifetime from its first import.
    pub ttl: Duration,
    /// Enrollments it admits; 0 for unlimited.
    pub max_uses: u32,
}

/// Settings of enrollment.
#[derive(Debug, Clone)]
pub struct EnrollmentConfig {
    /// Lifetime of worker certificates.
    pub cert_ttl: Duration,
    /// The token from `--enrollment-token-file`, if any.
    pub static_token: Option<StaticToken>,
    /// K3s server URL handed to agents.
    pub k3s_server_url: String,
    /// K3s join token handed to agents.
    pub k3s_token: Secret,
    /// How long the per-worker K3s bootstrap tokens of a linked cluster last.
    pub k3s_token_ttl: std::time::Duration,
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
    notifier: Arc<dyn EnrollmentNotices>,
}

impl std::fmt::Debug for Enrollment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enrollment").finish_non_exhaustive()
    }
}

/// A new token: (id, full token `<id>.<secret>`, SHA-256 of the secret).
pub fn new_token() -> (String, Secret, Vec<u8>) {
    let mut id = [0u8; 6];
    rand::rng().fill_bytes(&mut id);
    let id = minispod_support::hex(&id);
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    let secret = URL_SAFE_NO_PAD.encode(secret);
    let hash = Sha256::digest(secret.as_bytes()).to_vec();
    (id.clone(), Secret::new(format!("{id}.{secret}")), hash)
}

/// The id a token is stored under and its secret part: `<id>.<secret>` as
/// CreateEnrollmentToken makes them; any other token (a static one an
/// operator wrote) is stored under `static-<12 hex digits of its SHA-256>`,
/// the whole token being its secret.
pub fn token_parts(token: &str) -> (String, &str) {
    match token.split_once('.') {
        Some((id, secret)) => (id.to_owned(), secret),
        None => {
            let hash = Sha256::digest(token.as_bytes());
            let hex = minispod_support::hex(&hash[..6]);
            (format!("static-{hex}"), token)
        }
    }
}

/// What a new enrollment token admits.
#[derive(Debug, Clone, Default)]
pub struct NewToken {
    /// Lifetime.
    pub ttl: Duration,
    /// Enrollments it admits; 0 for unlimited.
    pub max_uses: u32,
    /// What it is for.
    pub description: String,
    /// The one machine it may (re-)enroll, if bound.
    pub machine_id: Option<String>,
}

/// Stores a new token made by `created_by` (None: the command line), in
/// one transaction; answers its secret, shown only now, and its record.
pub async fn store_new_token(
    db: &Db,
    spec: NewToken,
    created_by: Option<&str>,
) -> AppResult<(Secret, TokenRow)> {
    let (id, token, secret_hash) = new_token();
    let now = now_ms();
    let row = TokenRow {
        id,
        secret_hash,
        description: spec.description.trim().to_owned(),
        expires_at: now + i64::try_from(spec.ttl.as_millis()).unwrap_or(i64::MAX / 2),
        max_uses: i64::from(spec.max_uses),
        uses: 0,
        revoked_at: None,
        created_by: created_by.map(str::to_owned),
        created_at: now,
        machine_id: spec.machine_id.filter(|m| !m.is_empty()),
    };
    let mut tx = db.begin().await?;
    if !workers_db::insert_token_once(&mut tx, &row).await? {
        return Err(AppError::AlreadyExists(
            "a token with this id exists; create another".into(),
        ));
    }
    tx.commit().await?;
    tracing::info!(by = created_by.unwrap_or("command line"), token_id = %row.id,
        ttl = ?spec.ttl, max_uses = spec.max_uses, machine_id = row.machine_id.as_deref().unwrap_or(""),
        "enrollment token created");
    Ok((token, row))
}

/// `minispod-control-plane create-enrollment-token`: stores `spec` as a new
/// token in the database at `database_url`, or SQLite in `data_dir`
/// (creating or migrating it as `serve` would), and answers its secret.
pub async fn create_token_offline(
    data_dir: &std::path::Path,
    database_url: Option<&str>,
    spec: NewToken,
) -> anyhow::Result<Secret> {
    if let Some(m) = &spec.machine_id {
        let probe = MachineFacts {
            hostname: "h".into(),
            machine_id: m.clone(),
            ..Default::default()
        };
        validate_facts(&probe).map_err(|e| anyhow::anyhow!("--machine-id: {e}"))?;
    }
    anyhow::ensure!(
        spec.ttl >= Duration::from_secs(60),
        "--ttl must be at least 60s"
    );
    std::fs::create_dir_all(data_dir)?;
    let db = Db::connect(
        database_url.filter(|u| !u.is_empty()),
        data_dir,
        &crate::store::StoreOptions::default(),
    )
    .await?;
    let spec = NewToken {
        description: spec.description.chars().take(200).collect(),
        ..spec
    };
    let (token, _) = store_new_token(&db, spec, None).await?;
    db.close().await;
    Ok(token)
}

fn token_refused(why: &str) -> AppError {
    AppError::refused(
        Code::Unauthenticated,
        reason::TOKEN_INVALID,
        format!("enrollment token {why}"),
    )
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
    /// Enrollment over `hub`'s store, signing with `pki`; new machines are
    /// told to administrators through `notifier`.
    pub fn new(
        hub: FleetHub,
        pki: Arc<Pki>,
        config: EnrollmentConfig,
        notifier: Arc<dyn EnrollmentNotices>,
    ) -> Self {
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
            notifier,
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

    /// Imports the static token of `--enrollment-token-file` into the token
    /// table unless it is there already; called once at start.
    pub async fn import_static_token(&self) -> AppResult<()> {
        let Some(st) = &self.config.static_token else {
            return Ok(());
        };
        let (id, secret) = token_parts(st.token.expose());
        let now = now_ms();
        let row = TokenRow {
            id,
            secret_hash: Sha256::digest(secret.as_bytes()).to_vec(),
            description: format!("static token from {}", st.source)
                .chars()
                .take(200)
                .collect(),
            expires_at: now + i64::try_from(st.ttl.as_millis()).unwrap_or(i64::MAX / 2),
            max_uses: i64::from(st.max_uses),
            uses: 0,
            revoked_at: None,
            created_by: None,
            created_at: now,
            machine_id: None,
        };
        let mut tx = self.hub.db().begin().await?;
        let added = workers_db::insert_token_once(&mut tx, &row).await?;
        tx.commit().await?;
        if added {
            tracing::info!(token_id = %row.id, ttl = ?st.ttl, max_uses = st.max_uses, "imported the static enrollment token");
        } else {
            tracing::info!(token_id = %row.id, "the static enrollment token was imported before; its expiry and uses stand");
        }
        Ok(())
    }

    /// Checks the token in constant time; its record when usable.
    async fn check_token(&self, token: &str) -> AppResult<TokenRow> {
        let (id, secret) = token_parts(token);
        let row = workers_db::token(self.hub.db().read(), &id).await?;
        // Compare against a dummy when the id is unknown, so timing does not
        // tell which ids exist.
        let stored = row
            .as_ref()
            .map_or(vec![0u8; 32], |r| r.secret_hash.clone());
        let given = Sha256::digest(secret.as_bytes());
        let matches = bool::from(given[..].ct_eq(&stored));
        let Some(row) = row.filter(|_| matches) else {
            return Err(token_refused("is invalid"));
        };
        if row.revoked_at.is_some() {
            return Err(token_refused("was revoked"));
        }
        if row.expires_at <= now_ms() {
            return Err(token_refused("expired"));
        }
        if row.max_uses > 0 && row.uses >= row.max_uses {
            return Err(token_refused("is used up"));
        }
        Ok(row)
    }

    /// Admits a machine (see AgentService.Enroll). `peer` is the client
    /// certificate the call came with, if any: the current certificate of
    /// an existing worker lets that worker re-enroll.
    pub async fn enroll(
        &self,
        ip: Option<IpAddr>,
        peer: Option<PeerIdentity>,
        r: pb::EnrollRequest,
    ) -> AppResult<pb::EnrollResponse> {
        let outcome = self.admit(ip, peer, r).await;
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
        peer: Option<PeerIdentity>,
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
        let token = self.check_token(&r.token).await?;
        // A bound token approves exactly one machine.
        let approved = match &token.machine_id {
            Some(m) if *m == facts.machine_id => true,
            Some(_) => return Err(token_refused("is bound to another machine")),
            None => false,
        };

        // Every check below runs in the transaction that spends the token,
        // so a refusal rolls the use back and spends nothing.
        let mut tx = self.hub.db().begin().await?;
        if !workers_db::consume_token(&mut tx, &token.id).await? {
            // Spent or revoked between the check and now.
            return Err(token_refused("is used up"));
        }
        if let Some(removed) = workers_db::removed_machine(&mut tx, &facts.machine_id).await? {
            if !approved {
                return Err(AppError::refused(
                    Code::PermissionDenied,
                    reason::MACHINE_REMOVED,
                    format!(
                        "an administrator removed this machine (worker {:?}); it may enroll again once \
                         readmitted (WorkerService.ReadmitMachine, or a token bound to machine id {:?})",
                        removed.name, removed.machine_id
                    ),
                ));
            }
            // Using a token bound to the machine readmits it.
            workers_db::readmit_machine(&mut tx, &facts.machine_id).await?;
            tracing::info!(machine_id = %facts.machine_id, token_id = %token.id, "removed machine readmitted by a bound token");
        }
        let mut existing = workers_db::by_machine_id(&mut tx, &facts.machine_id).await?;
        // A new machine under a taken name (a reinstalled machine has a new
        // machine id and its old host name): never a second worker of that
        // name. It becomes that worker only once an administrator approved.
        let mut takeover = false;
        if existing.is_none()
            && let Some(named) = workers_db::by_name(&mut tx, &facts.hostname).await?
        {
            let approved_takeover = named.takeover_approved_at.is_some()
                && named.takeover_machine_id.as_deref() == Some(facts.machine_id.as_str());
            if !approved_takeover {
                drop(tx);
                return Err(self.refuse_name_taken(named, &facts, ip).await);
            }
            takeover = true;
            existing = Some(named);
        }
        if let Some(w) = &existing {
            // Machine ids are not secret: taking over a worker (its record,
            // labels, maintenance) needs the worker's own certificate or an
            // administrator's approval.
            let own_certificate = peer.as_ref().is_some_and(|p| {
                p.worker_id == w.id
                    && bool::from(p.serial.as_bytes().ct_eq(w.cert_serial.as_bytes()))
            });
            if !approved && !own_certificate && !takeover {
                return Err(AppError::refused(
                    Code::PermissionDenied,
                    reason::REENROLL_NEEDS_APPROVAL,
                    format!(
                        "machine id {:?} belongs to worker {:?}: re-enrolling it needs that worker's \
                         current certificate on the call or a token bound to the machine id",
                        facts.machine_id, w.name
                    ),
                ));
            }
            if w.online {
                return Err(AppError::refused(
                    Code::FailedPrecondition,
                    reason::WORKER_ONLINE,
                    format!(
                        "worker {:?} of this machine is online; re-enroll once its stream has ended",
                        w.name
                    ),
                ));
            }
        }
        let worker_id = existing.as_ref().map_or_else(new_id, |w| w.id.clone());
        let cert = self
            .pki
            .sign_worker_csr(&r.csr_pem, &worker_id, self.config.cert_ttl)
            .map_err(|e| AppError::invalid("csr_pem", e))?;
        if existing.is_some() {
            if takeover {
                workers_db::complete_takeover(&mut tx, &worker_id, &facts.machine_id).await?;
                tracing::warn!(worker_id, machine_id = %facts.machine_id, token_id = %token.id,
                    "a new machine took over the worker of its host name, as an administrator approved");
            }
            if !workers_db::write_facts(&mut tx, &worker_id, &facts, None).await? {
                tracing::warn!(worker_id, hostname = %facts.hostname,
                    "another worker has this host name: the worker keeps its name");
            }
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
        // With a linked cluster, a join token of this worker's own, made
        // before the enrollment is committed: if the API server cannot make
        // one, the enrollment fails (UNAVAILABLE, the agent retries) and its
        // token is not spent — unless --k3s-token-file gives a fallback.
        let k3s_token = match self.hub.nodes() {
            Some(c) if c.is_linked() => match c
                .k3s_join_token(&worker_id, self.config.k3s_token_ttl)
                .await
            {
                Ok(Some(t)) => t,
                Ok(None) => self.config.k3s_token.clone(),
                Err(e) if !self.config.k3s_token.expose().is_empty() => {
                    tracing::warn!(worker_id, error = %format!("{e:#}"), "no bootstrap token from the cluster; handing out the --k3s-token-file token");
                    self.config.k3s_token.clone()
                }
                Err(e) => {
                    return Err(AppError::refused(
                        tonic::Code::Unavailable,
                        reason::CLUSTER_UNAVAILABLE,
                        format!("the cluster could not make a K3s join token ({e}); try again"),
                    ));
                }
            },
            _ => self.config.k3s_token.clone(),
        };
        // A new machine is told in the enrollment's own transaction.
        let notices = if existing.is_none() {
            self.notifier.enrolled(&mut tx, &row, now_ms()).await?
        } else {
            0
        };
        tx.commit().await?;
        if notices > 0 {
            self.notifier.wake();
        }
        // A re-enrolled machine's old certificate is void: close any stream
        // (one another replica may not have reported closed yet).
        self.hub.disconnect(&worker_id);
        self.hub.publish(&row);
        tracing::info!(worker_id, name = %facts.hostname, reused = existing.is_some(), token_id = %token.id, "worker enrolled");
        Ok(pb::EnrollResponse {
            worker_id,
            certificate_pem: cert.pem,
            ca_pem: self.ca_pem().to_owned(),
            certificate_expires_at: Some(timestamp(cert.expires_at_ms)),
            k3s_server_url: self.config.k3s_server_url.clone(),
            k3s_token: k3s_token.expose().to_owned(),
            heartbeat_interval_seconds: self.hub.config().heartbeat_interval.as_secs().max(1)
                as i32,
        })
    }

    /// Records the request of a machine to enroll under `named`'s name (the
    /// pending takeover an administrator can approve), says so in the log
    /// and to watchers, and answers the refusal naming the worker and what
    /// to do.
    async fn refuse_name_taken(
        &self,
        named: WorkerRow,
        facts: &MachineFacts,
        ip: Option<IpAddr>,
    ) -> AppError {
        let ip_address = if facts.ip_address.is_empty() {
            ip.map(|i| i.to_string()).unwrap_or_default()
        } else {
            facts.ip_address.clone()
        };
        // Its own transaction: the enrollment's rolled back, spending nothing.
        let recorded = async {
            let mut tx = self.hub.db().begin().await?;
            let row =
                workers_db::request_takeover(&mut tx, &named.id, &facts.machine_id, &ip_address)
                    .await?;
            tx.commit().await?;
            AppResult::Ok(row)
        }
        .await;
        match recorded {
            Ok(Some(row)) => self.hub.publish(&row),
            Ok(None) => {}
            Err(e) => {
                tracing::error!(worker_id = %named.id, error = %e, "could not record the pending takeover")
            }
        }
        let last_seen = named
            .last_health_check_at
            .or(named.last_heartbeat_at)
            .map_or_else(|| "never".to_owned(), crate::workers::rfc3339);
        let status = named.status.to_lowercase().replace('_', " ");
        tracing::warn!(worker_id = %named.id, name = %named.name, old_machine_id = %named.machine_id,
            new_machine_id = %facts.machine_id, ip = %ip_address,
            "enrollment refused: another machine has this worker's host name; an administrator must approve the takeover or delete the worker");
        AppError::refused(
            Code::AlreadyExists,
            reason::WORKER_NAME_TAKEN,
            format!(
                "host name {name:?} is already worker {id} ({status}, last seen {last_seen}) of another \
                 machine (machine id {old}); this machine (machine id {new}) enrolls once an \
                 administrator either approves the takeover (WorkerService.ApproveWorkerTakeover \
                 with worker {id}, or Approve on the worker's page in the console: the record, its \
                 labels and history go to this machine) or deletes worker {id} (this machine then \
                 enrolls as a new worker)",
                name = named.name,
                id = named.id,
                old = named.machine_id,
                new = facts.machine_id,
            ),
        )
    }

    /// The worker behind the request's client certificate. The TLS layer
    /// verified the chain against the CA; here the certificate must still be
    /// the one the store accepts for an existing worker.
    pub async fn authenticate_peer<T>(
        &self,
        request: &Request<T>,
    ) -> AppResult<(PeerIdentity, WorkerRow)> {
        let identity = request_identity(request)
            .ok_or_else(|| AppError::Unauthenticated("a client certificate is required".into()))?;
        // Only this CA signs worker certificates, so a certificate naming no
        // stored worker is a deleted worker's.
        let worker = workers_db::by_id(self.hub.db().read(), &identity.worker_id)
            .await?
            .ok_or_else(|| {
                AppError::refused(
                    Code::PermissionDenied,
                    reason::WORKER_REMOVED,
                    "an administrator deleted this worker; its machine enrolls again only once readmitted",
                )
            })?;
        if !bool::from(
            worker
                .cert_serial
                .as_bytes()
                .ct_eq(identity.serial.as_bytes()),
        ) {
            return Err(AppError::refused(
                Code::PermissionDenied,
                reason::CERTIFICATE_REPLACED,
                "the certificate was revoked or replaced",
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

/// The worker identity in a request's client certificate, if it has one
/// (the TLS layer verified it chains to the CA).
pub fn request_identity<T>(request: &Request<T>) -> Option<PeerIdentity> {
    let certs = request.peer_certs()?;
    certs.first().and_then(|c| peer_identity(c.as_ref()))
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
            machine_id: t.machine_id.clone().unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_have_an_id_and_a_hashed_secret() {
        let (id, token, hash) = new_token();
        let token = token.expose().to_owned();
        let (tid, secret) = token.split_once('.').unwrap();
        assert_eq!(tid, id);
        assert_eq!(id.len(), 12);
        assert!(secret.len() >= 43);
        assert_eq!(Sha256::digest(secret.as_bytes()).to_vec(), hash);
        assert_ne!(new_token().1.expose(), token);
        assert_eq!(token_parts(&token), (id, secret));
    }

    #[test]
    fn static_tokens_are_stored_under_an_id_from_their_hash() {
        let (id, secret) = token_parts("static-token-for-unattended-installs");
        assert!(id.starts_with("static-") && id.len() == 19, "{id}");
        assert_eq!(secret, "static-token-for-unattended-installs");
        assert_ne!(token_parts("another-static-token").0, id);
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        let s = Secret::new("hunter2-very-secret");
        assert!(!format!("{s:?}").contains("hunter2"));
        let c = StaticToken {
            token: s,
            source: "/etc/t".into(),
            ttl: Duration::from_secs(1),
            max_uses: 1,
        };
        assert!(!format!("{c:?}").contains("hunter2"));
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
