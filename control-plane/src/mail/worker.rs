//! The delivery loop: outbox rows on a work queue (`crate::workqueue`),
//! each delivered when due, its outcome recorded, retried with backoff.
//!
//! The queue's key is the outbox row's id, not a channel (SMTP, or each
//! webhook URL). The outbox already keeps the backoff per row (`attempts`,
//! `next_attempt_at`: shown to administrators, kept across restarts, shared
//! by every replica) and leases per row; keyed by row, a message's queue
//! entry is exactly its `next_attempt_at`, with no second backoff to
//! disagree with what the outbox shows. (A channel that is down costs one
//! attempt per queued row per backoff step, each row's own.) The queue's
//! own backoff is only for the store failing under the loop.
//!
//! What fills the queue: a scan of the outbox's pending rows (at start, on
//! [`Mail::wake`] after a commit of this process, every [`RESYNC`] for other
//! replicas' rows), which puts each row at its `next_attempt_at`, or, when
//! another replica holds its lease, at the lease's end. Nothing polls: an
//! idle outbox costs one read per [`RESYNC`].

use std::{sync::Arc, sync::atomic::Ordering, time::Duration};

use tokio::task::JoinSet;

use super::{
    Mail, outbox,
    outbox::MessageRow,
    smtp::{Outgoing, SendError},
};
use crate::{
    error::{AppError, AppResult},
    store::{Db, now_ms},
    with_conn,
    workqueue::{Action, Backoff, Reconcile, WorkQueue},
};

/// How long a claimed message is ours: longer than any one delivery
/// (SMTP's 30 s timeout), so nobody else tries it meanwhile.
const LEASE_MS: i64 = 120_000;

/// Deliveries in flight at once (one queue, this many takers).
const CONCURRENCY: usize = 4;

/// Pending rows one scan puts on the queue (the earliest due): bounds the
/// queue; a full scan is followed by another after [`BACKLOG_SCAN`].
const SCAN_LIMIT: i64 = 1000;

/// The next scan after a full one (a backlog).
const BACKLOG_SCAN: Duration = Duration::from_secs(1);

/// How often the outbox is scanned without a wake-up: other replicas'
/// messages (their own process delivers them at once; this one only if
/// that one is gone).
const RESYNC: Duration = Duration::from_secs(10);

/// How often SENT and FAILED rows are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Why a pass over a row failed: the store did (the delivery's own failures
/// are outcomes, recorded in the row).
#[derive(Debug)]
pub struct StoreFailed(AppError);

impl std::fmt::Display for StoreFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One taker of the delivery queue; [`CONCURRENCY`] of them share it.
struct Delivery {
    mail: Mail,
    db: Db,
    owner: String,
}

impl Reconcile for Delivery {
    type Key = String;
    type Error = StoreFailed;

    /// Claims the row, delivers it and records the outcome; a failed
    /// delivery comes back after the delay recorded as its
    /// `next_attempt_at`.
    async fn reconcile(&mut self, id: &String) -> Result<Action, StoreFailed> {
        // A read first: a row sent or leased elsewhere costs the single
        // writer nothing.
        let due = outbox::due_at(&self.db, id).await.map_err(StoreFailed)?;
        let claimed = match due {
            // Sent, given up, or gone.
            None => return Ok(Action::Done),
            Some(at) if at > now_ms() => return Ok(Action::RequeueAfter(ms_until(at))),
            Some(_) => outbox::claim(&self.db, id, &self.owner, LEASE_MS)
                .await
                .map_err(StoreFailed)?,
        };
        let Some(m) = claimed else {
            // Taken meanwhile: when it is due again, if still pending.
            let due = outbox::due_at(&self.db, id).await.map_err(StoreFailed)?;
            return Ok(due.map_or(Action::Done, |at| {
                Action::RequeueAfter(ms_until(at).max(Duration::from_millis(1)))
            }));
        };
        self.mail
            .deliver(&self.db, &self.owner, &m)
            .await
            .map_err(StoreFailed)
    }

    fn error_policy(&mut self, id: &String, e: &StoreFailed, backoff: Duration) -> Action {
        tracing::warn!(id = %id, error = %e, retry_in_ms = backoff.as_millis() as u64,
            "outbox: cannot record a delivery; retrying");
        Action::RequeueAfter(backoff)
    }
}

/// The time until Unix ms `at` (zero when past).
fn ms_until(at: i64) -> Duration {
    Duration::from_millis(u64::try_from(at - now_ms()).unwrap_or(0))
}

impl Mail {
    /// Runs the delivery loop of replica `owner` until the task is aborted
    /// (its takers with it).
    pub fn spawn(&self, db: Db, owner: String) -> tokio::task::JoinHandle<()> {
        let mail = self.clone();
        let queue = Arc::new(WorkQueue::new(Backoff {
            base: self.inner.retry.initial,
            max: self.inner.retry.max,
        }));
        tokio::spawn(async move {
            let mut takers = JoinSet::new();
            for _ in 0..CONCURRENCY {
                let mut d = Delivery {
                    mail: mail.clone(),
                    db: db.clone(),
                    owner: owner.clone(),
                };
                let queue = queue.clone();
                takers.spawn(async move {
                    loop {
                        let id = queue.next().await;
                        // Retried by the queue (`error_policy`).
                        let _ = queue.process(&mut d, id).await;
                    }
                });
            }
            let mut last_prune: Option<tokio::time::Instant> = None;
            loop {
                let next_scan = match scan(&db, &queue).await {
                    Ok(n) if n as i64 >= SCAN_LIMIT => BACKLOG_SCAN,
                    Ok(_) => RESYNC,
                    Err(e) => {
                        tracing::warn!(error = %e, "outbox: cannot scan for messages");
                        RESYNC
                    }
                };
                if last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
                    last_prune = Some(tokio::time::Instant::now());
                    match outbox::prune(&db, now_ms()).await {
                        Ok(p) => tracing::debug!(?p, "outbox: pruned"),
                        Err(e) => tracing::warn!(error = %e, "outbox: cannot prune"),
                    }
                }
                tokio::select! {
                    () = mail.inner.wake.notified() => {}
                    () = tokio::time::sleep(next_scan) => {}
                }
            }
        })
    }

    /// Tries `m` once and records what happened.
    /// What follows: nothing, or the next try after the delay recorded.
    async fn deliver(&self, db: &Db, owner: &str, m: &MessageRow) -> AppResult<Action> {
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
                    return Ok(Action::Done);
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
                // Back when the row says: its next_attempt_at.
                return Ok(retry.map_or(Action::Done, Action::RequeueAfter));
            }
            Err(SendError::Permanent(why)) => {
                counters.attempt_failures.fetch_add(1, Ordering::Relaxed);
                counters.given_up.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(id = %m.id, purpose = %m.purpose, error = %why, "outbox: delivery refused for good");
                outbox::mark_failed(db, &m.id, owner, &why, None).await?;
            }
        }
        Ok(Action::Done)
    }
}

/// Puts the pending rows on `queue`, each when it is due; returns how
/// many rows it saw.
async fn scan(db: &Db, queue: &WorkQueue<String>) -> AppResult<usize> {
    let rows = outbox::pending(db, SCAN_LIMIT).await?;
    let n = rows.len();
    let now = now_ms();
    for (id, at) in rows {
        if at <= now {
            // Due: now, unless the store failed it a moment ago.
            queue.add([id]);
        } else {
            queue.add_after(id, ms_until(at));
        }
    }
    Ok(n)
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
