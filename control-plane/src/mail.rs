//! Mail and webhooks, through a durable outbox in the store.
//!
//! A change that must tell somebody (a password reset asked for, a worker
//! down) writes an outbox row in its own transaction, so the notice exists
//! exactly when the change does. The delivery worker ([`worker`]) leases due
//! rows, hands mails to SMTP ([`smtp`], lettre over rustls) and POSTs signed
//! webhooks ([`webhook`]), retrying with backoff until a delivery succeeds
//! or is refused for good. Leases make one replica at a time try a message;
//! a killed control plane's leases count as free once its replica lease is
//! gone, so nothing queued is lost and each message goes out once (short of
//! a crash between the server's acceptance and our record of it).

pub mod outbox;
pub mod smtp;
pub mod templates;
pub mod webhook;
pub mod worker;

use std::{
    path::PathBuf,
    sync::{Arc, atomic::AtomicU64},
    time::Duration,
};

use anyhow::Context;
use tokio::sync::Notify;
use tonic::Code;

use self::{
    outbox::{Kind, NewMessage},
    smtp::{Smtp, SmtpUrl},
    templates::Rendered,
    webhook::{WebhookClient, WebhookPolicy},
};
use crate::{
    error::{AppError, AppResult},
    store::Tx,
};

/// What `serve` was told about mail.
#[derive(Debug, Clone, Default)]
pub struct MailSettings {
    /// `--smtp-url`; None: no mail.
    pub smtp_url: Option<SmtpUrl>,
    /// `--smtp-ca-file`: trusted besides the system's roots.
    pub smtp_ca_file: Option<PathBuf>,
    /// `--mail-from`.
    pub from: String,
    /// `--public-url`: where the console is, for links in mail.
    pub public_url: String,
    /// `--webhook-ca-file`: trusted besides the system's roots.
    pub webhook_ca_file: Option<PathBuf>,
    /// `--webhook-allow-range` and `--webhook-deny-range`.
    pub webhook_policy: WebhookPolicy,
    /// `--require-email-verification`.
    pub require_verification: bool,
    /// `--password-reset-ttl`.
    pub reset_ttl: Duration,
    /// `--email-verification-ttl`.
    pub verify_ttl: Duration,
    /// Retry backoff: first delay and cap, and attempts before giving up.
    pub retry: RetryPolicy,
}

/// How failed deliveries are retried.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Delay after the first failure; doubled after each next one.
    pub initial: Duration,
    /// Longest delay.
    pub max: Duration,
    /// Attempts before a message is FAILED.
    pub max_attempts: i32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial: Duration::from_secs(5),
            max: Duration::from_secs(1800),
            max_attempts: 12,
        }
    }
}

impl RetryPolicy {
    /// The delay after `attempts` failed tries (1 for the first failure),
    /// with up to a fifth of jitter so replicas do not retry in step; None
    /// once the message should be given up.
    pub fn delay(&self, attempts: i32) -> Option<Duration> {
        if attempts >= self.max_attempts {
            return None;
        }
        let doublings = u32::try_from(attempts.saturating_sub(1))
            .unwrap_or(0)
            .min(20);
        let base = self.initial.saturating_mul(1 << doublings).min(self.max);
        let jitter = base.mul_f64(rand::random::<f64>() * 0.2);
        Some(base + jitter)
    }
}

/// Counters of deliveries, for the metrics endpoint.
#[derive(Debug, Default)]
pub struct MailCounters {
    /// Messages delivered.
    pub sent: AtomicU64,
    /// Delivery attempts that failed (retried or not).
    pub attempt_failures: AtomicU64,
    /// Messages given up (FAILED).
    pub given_up: AtomicU64,
}

/// The mail side of the control plane; cheap to clone.
#[derive(Debug, Clone)]
pub struct Mail {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    smtp: Option<Smtp>,
    webhooks: WebhookClient,
    public_url: String,
    require_verification: bool,
    reset_ttl: Duration,
    verify_ttl: Duration,
    retry: RetryPolicy,
    wake: Notify,
    counters: MailCounters,
}

impl Mail {
    /// Mail as configured; errors name the flag that is wrong.
    pub fn new(settings: &MailSettings) -> anyhow::Result<Mail> {
        let smtp = match &settings.smtp_url {
            Some(url) => {
                if settings.from.is_empty() {
                    anyhow::bail!("--smtp-url needs --mail-from (the sender address)");
                }
                Some(Smtp::new(
                    url,
                    &settings.from,
                    settings.smtp_ca_file.as_deref(),
                )?)
            }
            None => None,
        };
        if settings.require_verification && smtp.is_none() {
            anyhow::bail!(
                "--require-email-verification needs --smtp-url: nobody could verify an address"
            );
        }
        let webhooks = WebhookClient::new(
            settings.webhook_ca_file.as_deref(),
            settings.webhook_policy.clone(),
        )
        .context("webhook client")?;
        Ok(Mail {
            inner: Arc::new(Inner {
                smtp,
                webhooks,
                public_url: settings.public_url.trim_end_matches('/').to_owned(),
                require_verification: settings.require_verification,
                reset_ttl: settings.reset_ttl,
                verify_ttl: settings.verify_ttl,
                retry: settings.retry,
                wake: Notify::new(),
                counters: MailCounters::default(),
            }),
        })
    }

    /// No SMTP: features that need mail say so; webhooks still work.
    pub fn without_smtp(public_url: &str) -> Mail {
        Mail::new(&MailSettings {
            public_url: public_url.to_owned(),
            reset_ttl: Duration::from_secs(1800),
            verify_ttl: Duration::from_secs(86_400),
            ..MailSettings::default()
        })
        .expect("mail without SMTP always builds")
    }

    /// Where webhooks may be sent.
    pub fn webhook_policy(&self) -> &WebhookPolicy {
        self.inner.webhooks.policy()
    }

    /// Whether `--smtp-url` is set.
    pub fn configured(&self) -> bool {
        self.inner.smtp.is_some()
    }

    /// FAILED_PRECONDITION (reason MAIL_NOT_CONFIGURED) without SMTP.
    pub fn require_configured(&self) -> AppResult<()> {
        if self.configured() {
            Ok(())
        } else {
            Err(AppError::refused(
                Code::FailedPrecondition,
                "MAIL_NOT_CONFIGURED",
                "this control plane sends no mail (no --smtp-url); ask an administrator",
            ))
        }
    }

    /// Whether sign-in needs a verified address.
    pub fn require_verification(&self) -> bool {
        self.inner.require_verification
    }

    /// Lifetime of password-reset tokens.
    pub fn reset_ttl(&self) -> Duration {
        self.inner.reset_ttl
    }

    /// Lifetime of verification tokens.
    pub fn verify_ttl(&self) -> Duration {
        self.inner.verify_ttl
    }

    /// A link into the console: `path` like `/reset-password#token=...`.
    pub fn link(&self, path: &str) -> String {
        format!("{}{path}", self.inner.public_url)
    }

    /// The console's address, for mails that point at it.
    pub fn public_url(&self) -> &str {
        &self.inner.public_url
    }

    /// Queues a mail in `tx`; call [`Mail::wake`] after the commit.
    pub async fn queue_mail(
        &self,
        tx: &mut Tx,
        purpose: &'static str,
        to: &str,
        mail: &Rendered,
    ) -> AppResult<()> {
        self.queue_mail_returning(tx, purpose, to, mail).await?;
        Ok(())
    }

    /// Queues a mail in `tx` and returns the stored message; call
    /// [`Mail::wake`] after the commit.
    pub async fn queue_mail_returning(
        &self,
        tx: &mut Tx,
        purpose: &'static str,
        to: &str,
        mail: &Rendered,
    ) -> AppResult<outbox::MessageRow> {
        outbox::enqueue(
            tx,
            &NewMessage {
                kind: Kind::Mail,
                purpose,
                recipient: to.to_owned(),
                subject: mail.subject.clone(),
                body_text: mail.text.clone(),
                body_html: mail.html.clone(),
                signer_user_id: String::new(),
            },
        )
        .await
    }

    /// Queues a webhook in `tx`, signed at delivery with `signer`'s secret.
    pub async fn queue_webhook(
        &self,
        tx: &mut Tx,
        purpose: &'static str,
        url: &str,
        signer_user_id: &str,
        summary: &str,
        json: &serde_json::Value,
    ) -> AppResult<outbox::MessageRow> {
        outbox::enqueue(
            tx,
            &NewMessage {
                kind: Kind::Webhook,
                purpose,
                recipient: url.to_owned(),
                subject: summary.to_owned(),
                body_text: json.to_string(),
                body_html: String::new(),
                signer_user_id: signer_user_id.to_owned(),
            },
        )
        .await
    }

    /// Tells this process's delivery worker that messages were committed.
    /// (Other replicas find them at their next poll.)
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// Delivery counters.
    pub fn counters(&self) -> &MailCounters {
        &self.inner.counters
    }
}
