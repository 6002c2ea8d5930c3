//! SQL of the outbox: queueing in the caller's transaction, finding when
//! pending messages are due, claiming one under a lease, and recording what
//! delivery did.

use minispod_proto::v1 as pb;
use sqlx::FromRow;

use crate::{
    error::{AppError, AppResult},
    store::{Conn, Db, Tx, new_id, now_ms, timestamp},
    with_conn,
};

/// A message to queue.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// MAIL or WEBHOOK.
    pub kind: Kind,
    /// Why, e.g. `password_reset` (also the webhook's event header).
    pub purpose: &'static str,
    /// Mail address, or webhook URL.
    pub recipient: String,
    /// Subject line, or the webhook event's summary.
    pub subject: String,
    /// Text body, or the webhook's JSON.
    pub body_text: String,
    /// HTML body (mail only).
    pub body_html: String,
    /// The administrator whose secret signs a webhook.
    pub signer_user_id: String,
}

/// How a message is delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// SMTP.
    Mail,
    /// Signed HTTPS POST.
    Webhook,
}

impl Kind {
    fn as_db(self) -> &'static str {
        match self {
            Kind::Mail => "MAIL",
            Kind::Webhook => "WEBHOOK",
        }
    }
}

/// A stored message.
#[derive(Debug, Clone, FromRow)]
pub struct MessageRow {
    /// Row id.
    pub id: String,
    /// MAIL or WEBHOOK.
    pub kind: String,
    /// See [`NewMessage::purpose`].
    pub purpose: String,
    /// Mail address or URL.
    pub recipient: String,
    /// Subject line.
    pub subject: String,
    /// Text body or JSON.
    pub body_text: String,
    /// HTML body.
    pub body_html: String,
    /// Whose secret signs a webhook.
    pub signer_user_id: String,
    /// PENDING, SENT or FAILED.
    pub status: String,
    /// Deliveries tried.
    pub attempts: i32,
    /// Unix ms of the next try.
    pub next_attempt_at: i64,
    /// The last failure.
    pub last_error: String,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms, once sent.
    pub sent_at: Option<i64>,
}

impl MessageRow {
    /// The message as the API shows it (no bodies).
    pub fn to_pb(&self) -> pb::OutboxMessage {
        pb::OutboxMessage {
            id: self.id.clone(),
            kind: match self.kind.as_str() {
                "MAIL" => pb::OutboxKind::Mail,
                _ => pb::OutboxKind::Webhook,
            } as i32,
            recipient: self.recipient.clone(),
            subject: self.subject.clone(),
            status: match self.status.as_str() {
                "PENDING" => pb::OutboxStatus::Pending,
                "SENT" => pb::OutboxStatus::Sent,
                _ => pb::OutboxStatus::Failed,
            } as i32,
            attempts: self.attempts,
            last_error: self.last_error.clone(),
            created_at: Some(timestamp(self.created_at)),
            next_attempt_at: (self.status == "PENDING").then(|| timestamp(self.next_attempt_at)),
            sent_at: self.sent_at.map(timestamp),
            purpose: self.purpose.clone(),
        }
    }
}

const COLUMNS: &str = "id, kind, purpose, recipient, subject, body_text, body_html, \
    signer_user_id, status, attempts, next_attempt_at, last_error, created_at, sent_at";

/// Queues `m` in `tx`: it is sent only if `tx` commits. Returns its id.
pub async fn enqueue(tx: &mut Tx, m: &NewMessage) -> AppResult<MessageRow> {
    let now = now_ms();
    let sql = format!(
        "INSERT INTO outbox (id, kind, purpose, recipient, subject, body_text, body_html,
             signer_user_id, status, next_attempt_at, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'PENDING', $9, $9) RETURNING {COLUMNS}"
    );
    Ok(with_conn!(&mut *tx, |c| sqlx::query_as(&sql)
        .bind(new_id())
        .bind(m.kind.as_db())
        .bind(m.purpose)
        .bind(&m.recipient)
        .bind(&m.subject)
        .bind(&m.body_text)
        .bind(&m.body_html)
        .bind(&m.signer_user_id)
        .bind(now)
        .fetch_one(c)
        .await)?)
}

/// The condition under which a pending row's lease is free as of `$N`
/// (Unix ms): no owner, a lease that ran out, or an owner whose replica
/// lease is gone (a killed control plane's messages go out at once after
/// its restart).
fn lease_free(now: &str) -> String {
    format!(
        "(lease_owner = '' OR lease_until < {now}
          OR lease_owner NOT IN (SELECT id FROM replicas WHERE lease_expires_at >= {now}))"
    )
}

/// Leases the message `id` to `owner` for `ttl_ms` and returns it, when it
/// is pending, due and not leased by a replica alive (this one included: a
/// message in flight here is not taken twice).
pub async fn claim(db: &Db, id: &str, owner: &str, ttl_ms: i64) -> AppResult<Option<MessageRow>> {
    let now = now_ms();
    let sql = format!(
        "UPDATE outbox SET lease_owner = $2, lease_until = $3
         WHERE id = $1 AND status = 'PENDING' AND next_attempt_at <= $4 AND {}
         RETURNING {COLUMNS}",
        lease_free("$4")
    );
    let mut tx = db.begin().await?;
    let row: Option<MessageRow> = with_conn!(&mut tx, |c| sqlx::query_as(&sql)
        .bind(id)
        .bind(owner)
        .bind(now + ttl_ms)
        .bind(now)
        .fetch_optional(c)
        .await)?;
    tx.commit_no_listing_change().await?;
    Ok(row)
}

/// A pending row's id, `next_attempt_at`, lease owner, lease end, and the
/// owner's replica lease end (None when that replica is gone).
type DueRow = (String, i64, String, i64, Option<i64>);

/// When a pending row can next be tried: its `next_attempt_at`, or later
/// the end of its lease while a replica holds it (the lease's own end or
/// the replica's, whichever comes first: a live replica renews its own, so
/// a row in flight there is looked at again at that pace until it is done).
fn due_of((_, next, owner, until, replica): &DueRow) -> i64 {
    if owner.is_empty() {
        return *next;
    }
    let lease_ends = replica.map_or(0, |r| (*until).min(r).saturating_add(1));
    (*next).max(lease_ends)
}

const DUE_SQL: &str = "SELECT o.id, o.next_attempt_at, o.lease_owner, o.lease_until,
        (SELECT r.lease_expires_at FROM replicas r WHERE r.id = o.lease_owner)
     FROM outbox o WHERE o.status = 'PENDING'";

/// Up to `limit` pending rows, the earliest due first: (id, when due in
/// Unix ms, see [`due_at`]). A read only: an idle outbox costs the single
/// writer nothing.
pub async fn pending(db: &Db, limit: i64) -> AppResult<Vec<(String, i64)>> {
    let sql = format!("{DUE_SQL} ORDER BY o.next_attempt_at LIMIT $1");
    let rows: Vec<DueRow> = with_conn!(db.read(), |c| sqlx::query_as(&sql)
        .bind(limit)
        .fetch_all(c)
        .await)?;
    Ok(rows.iter().map(|r| (r.0.clone(), due_of(r))).collect())
}

/// When the pending message `id` can next be tried; None when it is not
/// pending (sent, failed, gone).
pub async fn due_at(db: &Db, id: &str) -> AppResult<Option<i64>> {
    let sql = format!("{DUE_SQL} AND o.id = $1");
    let row: Option<DueRow> = with_conn!(db.read(), |c| sqlx::query_as(&sql)
        .bind(id)
        .fetch_optional(c)
        .await)?;
    Ok(row.as_ref().map(due_of))
}

/// Records a delivery: SENT, bodies cleared (links in them are secrets).
/// False when the lease was lost meanwhile.
pub async fn mark_sent(db: &Db, id: &str, owner: &str) -> AppResult<bool> {
    let mut tx = db.begin().await?;
    let done = with_conn!(&mut tx, |c| sqlx::query(
        "UPDATE outbox SET status = 'SENT', sent_at = $3, attempts = attempts + 1,
             body_text = '', body_html = '', lease_owner = '', lease_until = 0, last_error = ''
         WHERE id = $1 AND lease_owner = $2 AND status = 'PENDING'"
    )
    .bind(id)
    .bind(owner)
    .bind(now_ms())
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    tx.commit_no_listing_change().await?;
    Ok(done == 1)
}

/// Records a failed delivery: tried again at `retry_at` (Unix ms), or
/// FAILED for good when `retry_at` is None.
pub async fn mark_failed(
    db: &Db,
    id: &str,
    owner: &str,
    error: &str,
    retry_at: Option<i64>,
) -> AppResult<()> {
    let error: String = error.chars().take(1000).collect();
    let mut tx = db.begin().await?;
    with_conn!(&mut tx, |c| sqlx::query(
        "UPDATE outbox SET attempts = attempts + 1, last_error = $3,
             status = CASE WHEN $4 THEN 'PENDING' ELSE 'FAILED' END,
             next_attempt_at = $5, lease_owner = '', lease_until = 0
         WHERE id = $1 AND lease_owner = $2 AND status = 'PENDING'"
    )
    .bind(id)
    .bind(owner)
    .bind(&error)
    .bind(retry_at.is_some())
    .bind(retry_at.unwrap_or_else(now_ms))
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    tx.commit_no_listing_change().await?;
    Ok(())
}

/// Marks a message FAILED without trying it (e.g. its webhook was turned
/// off before it went out).
pub async fn cancel(db: &Db, id: &str, owner: &str, why: &str) -> AppResult<()> {
    let mut tx = db.begin().await?;
    with_conn!(&mut tx, |c| sqlx::query(
        "UPDATE outbox SET status = 'FAILED', last_error = $3, lease_owner = '', lease_until = 0
         WHERE id = $1 AND lease_owner = $2 AND status = 'PENDING'"
    )
    .bind(id)
    .bind(owner)
    .bind(why)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    tx.commit_no_listing_change().await?;
    Ok(())
}

/// Counts by status: (pending, failed).
pub async fn counts<'c>(exec: impl Into<Conn<'c>>) -> AppResult<(i64, i64)> {
    let rows: Vec<(String, i64)> = with_conn!(exec, |c| sqlx::query_as(
        "SELECT status, CAST(COUNT(*) AS BIGINT) FROM outbox
         WHERE status IN ('PENDING', 'FAILED') GROUP BY status"
    )
    .fetch_all(c)
    .await)?;
    let get = |s: &str| rows.iter().find(|(k, _)| k == s).map_or(0, |(_, n)| *n);
    Ok((get("PENDING"), get("FAILED")))
}

/// One page of messages, newest first, optionally in one status, after
/// the row `(created_at, id)` of the previous page.
pub async fn list<'c>(
    exec: impl Into<Conn<'c>>,
    status: Option<&str>,
    after: Option<(i64, String)>,
    limit: i64,
) -> AppResult<Vec<MessageRow>> {
    let (after_at, after_id) = after.unwrap_or((i64::MAX, String::new()));
    let sql = format!(
        "SELECT {COLUMNS} FROM outbox
         WHERE ($1 = '' OR status = $1) AND (created_at < $2 OR (created_at = $2 AND id < $3))
         ORDER BY created_at DESC, id DESC LIMIT $4"
    );
    Ok(with_conn!(exec, |c| sqlx::query_as(&sql)
        .bind(status.unwrap_or(""))
        .bind(after_at)
        .bind(&after_id)
        .bind(limit)
        .fetch_all(c)
        .await)?)
}

/// One message.
pub async fn get<'c>(exec: impl Into<Conn<'c>>, id: &str) -> AppResult<MessageRow> {
    let sql = format!("SELECT {COLUMNS} FROM outbox WHERE id = $1");
    let row: Option<MessageRow> = with_conn!(exec, |c| sqlx::query_as(&sql)
        .bind(id)
        .fetch_optional(c)
        .await)?;
    row.ok_or_else(|| AppError::NotFound(format!("no outbox message {id}")))
}

/// Puts a FAILED message back in the queue, due now; false when it is not
/// FAILED or its body was pruned.
pub async fn retry(tx: &mut Tx, id: &str) -> AppResult<bool> {
    let done = with_conn!(&mut *tx, |c| sqlx::query(
        "UPDATE outbox SET status = 'PENDING', next_attempt_at = $2, lease_owner = '',
             lease_until = 0
         WHERE id = $1 AND status = 'FAILED' AND (body_text <> '' OR body_html <> '')"
    )
    .bind(id)
    .bind(now_ms())
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(done == 1)
}

/// Sent messages are kept this long (for the administrators' list); their
/// bodies went when they were sent.
pub const KEEP_SENT_MS: i64 = 30 * 86_400_000;
/// Failed messages keep their bodies (links are secrets) this long, for a
/// retry; then only the row (recipient, subject, error) is kept.
pub const KEEP_FAILED_BODY_MS: i64 = 3 * 86_400_000;
/// Failed messages are kept this long in all.
pub const KEEP_FAILED_MS: i64 = 30 * 86_400_000;

/// What [`prune`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// SENT rows deleted.
    pub sent: u64,
    /// FAILED rows whose bodies were cleared.
    pub failed_bodies: u64,
    /// FAILED rows deleted.
    pub failed: u64,
}

/// Prunes the outbox as of `now_ms`: SENT rows after [`KEEP_SENT_MS`];
/// FAILED rows' bodies after [`KEEP_FAILED_BODY_MS`] (a message without
/// its body can no longer be retried) and the rows after
/// [`KEEP_FAILED_MS`], counted from their last attempt.
pub async fn prune(db: &Db, now_ms: i64) -> AppResult<Pruned> {
    let mut tx = db.begin().await?;
    let sent = with_conn!(&mut tx, |c| sqlx::query(
        "DELETE FROM outbox WHERE status = 'SENT' AND sent_at < $1"
    )
    .bind(now_ms - KEEP_SENT_MS)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    let failed_bodies = with_conn!(&mut tx, |c| sqlx::query(
        "UPDATE outbox SET body_text = '', body_html = ''
         WHERE status = 'FAILED' AND next_attempt_at < $1
           AND (body_text <> '' OR body_html <> '')"
    )
    .bind(now_ms - KEEP_FAILED_BODY_MS)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    let failed = with_conn!(&mut tx, |c| sqlx::query(
        "DELETE FROM outbox WHERE status = 'FAILED' AND next_attempt_at < $1"
    )
    .bind(now_ms - KEEP_FAILED_MS)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    tx.commit_no_listing_change().await?;
    Ok(Pruned {
        sent,
        failed_bodies,
        failed,
    })
}
