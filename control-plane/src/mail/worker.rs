//! The delivery worker: leases due outbox messages, delivers them, and
//! records the outcome, retrying with backoff.

use std::{sync::atomic::Ordering, time::Duration};

use futures::StreamExt;

use super::{
    Mail, outbox,
    outbox::MessageRow,
    smtp::{Outgoing, SendError},
};
use crate::{
    error::AppResult,
    store::{Db, now_ms},
    with_conn,
};

/// How long a claimed message is ours: longer than any one delivery
/// (SMTP's 30 s timeout), so nobody else tries it meanwhile.
const LEASE_MS: i64 = 120_000;

/// Messages claimed at once.
const BATCH: i64 = 32;

/// Deliveries in flight at once.
const CONCURRENCY: usize = 4;

/// How often the outbox is looked at without a wake-up (other replicas'
/// messages, and retries that came due).
const POLL: Duration = Duration::from_secs(1);

impl Mail {
    /// Runs the delivery worker of replica `owner` until the task is aborted.
    pub fn spawn(&self, db: Db, owner: String) -> tokio::task::JoinHandle<()> {
        let mail = self.clone();
        tokio::spawn(async move {
            let mut last_prune = 0;
            loop {
                let claimed = match outbox::claim_due(&db, &owner, BATCH, LEASE_MS).await {
                    Ok(rows) => rows,
                    Err(e) => {
                        tracing::warn!(error = %e, "outbox: cannot claim messages");
                        tokio::time::sleep(POLL).await;
                        continue;
                    }
                };
                let full = claimed.len() as i64 == BATCH;
                futures::stream::iter(claimed)
                    .for_each_concurrent(CONCURRENCY, |m| {
                        let (mail, db, owner) = (&mail, &db, &owner);
                        async move {
                            if let Err(e) = mail.deliver(db, owner, &m).await {
                                tracing::warn!(id = %m.id, error = %e, "outbox: cannot record a delivery");
                            }
                        }
                    })
                    .await;
                if now_ms() - last_prune > 3_600_000 {
                    last_prune = now_ms();
                    match outbox::prune(&db, now_ms()).await {
                        Ok(p) => tracing::debug!(?p, "outbox: pruned"),
                        Err(e) => tracing::warn!(error = %e, "outbox: cannot prune"),
                    }
                }
                if !full {
                    tokio::select! {
                        () = mail.inner.wake.notified() => {}
                        () = tokio::time::sleep(POLL) => {}
                    }
                }
            }
        })
    }

    /// Tries `m` once and records what happened.
    async fn deliver(&self, db: &Db, owner: &str, m: &MessageRow) -> AppResult<()> {
        let outcome = match m.kind.as_str() {
            "MAIL" => match &self.inner.smtp {
                Some(smtp) => {
                    smtp.send(&Outgoing {
                        to: &m.recipient,
                        subject: &m.subject,
                        text: &m.body_text,
                        html: &m.body_html,
                        id: &m.id,
                    })
                    .await
                }
                None => Err(SendError::Transient(
                    "this control plane has no --smtp-url now".into(),
                )),
            },
            _ => match webhook_secret(db, &m.signer_user_id, &m.recipient).await? {
                Some(secret) => {
                    self.inner
                        .webhooks
                        .send(
                            &m.recipient,
                            secret.as_bytes(),
                            &m.purpose,
                            &m.id,
                            &m.body_text,
                        )
                        .await
                }
                None => {
                    outbox::cancel(
                        db,
                        &m.id,
                        owner,
                        "not sent: the administrator's webhook was changed or turned off",
                    )
                    .await?;
                    return Ok(());
                }
            },
        };
        let counters = &self.inner.counters;
        match outcome {
            Ok(()) => {
                if outbox::mark_sent(db, &m.id, owner).await? {
                    counters.sent.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(id = %m.id, purpose = %m.purpose, kind = %m.kind, "outbox: delivered");
                }
            }
            Err(SendError::Transient(why)) => {
                counters.attempt_failures.fetch_add(1, Ordering::Relaxed);
                let retry = self.inner.retry.delay(m.attempts + 1);
                if retry.is_none() {
                    counters.given_up.fetch_add(1, Ordering::Relaxed);
                }
                tracing::warn!(id = %m.id, purpose = %m.purpose, attempts = m.attempts + 1, error = %why,
                    retry_in_ms = retry.map(|d| d.as_millis() as u64), "outbox: delivery failed");
                let at = retry.map(|d| now_ms() + d.as_millis() as i64);
                outbox::mark_failed(db, &m.id, owner, &why, at).await?;
            }
            Err(SendError::Permanent(why)) => {
                counters.attempt_failures.fetch_add(1, Ordering::Relaxed);
                counters.given_up.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(id = %m.id, purpose = %m.purpose, error = %why, "outbox: delivery refused for good");
                outbox::mark_failed(db, &m.id, owner, &why, None).await?;
            }
        }
        Ok(())
    }
}

/// The signing secret of `user_id`'s webhook, if it still points at `url`.
async fn webhook_secret(db: &Db, user_id: &str, url: &str) -> AppResult<Option<String>> {
    let secret: Option<String> = with_conn!(db.read(), |c| sqlx::query_scalar(
        "SELECT webhook_secret FROM notification_preferences
         WHERE user_id = $1 AND webhook_url = $2 AND webhook_secret <> ''"
    )
    .bind(user_id)
    .bind(url)
    .fetch_optional(c)
    .await)?;
    Ok(secret)
}
