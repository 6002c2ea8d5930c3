//! SQL of customers' domains (`subscription_domains`).

use sqlx::FromRow;

use crate::{
    error::AppResult,
    store::{Db, Tx, unique_violation},
    with_conn,
};

/// One domain as stored.
#[derive(Debug, Clone, FromRow)]
pub struct DomainRow {
    /// UUID.
    pub id: String,
    /// The subscription it serves.
    pub subscription_id: String,
    /// The subscription's owner (the domain loop's key).
    pub user_id: String,
    /// Lower-case host name; one live claim per host.
    pub host: String,
    /// 32 hex characters, served at the check URL while PENDING.
    pub token: String,
    /// PENDING, VERIFIED, CERTIFICATE_ISSUED, CERTIFICATE_FAILING or FAILED.
    pub state: String,
    /// Why (the last check's words, the certificate's state).
    pub reason: String,
    /// Ownership checks made so far (the backoff's exponent).
    pub checks: i64,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms of the last check, 0 before the first.
    pub checked_at: i64,
    /// Unix ms of the next check while PENDING.
    pub next_check_at: i64,
    /// Unix ms of the verification, 0 before.
    pub verified_at: i64,
    /// Unix ms of its removal (its objects are being deleted), 0 while
    /// attached.
    pub removed_at: i64,
}

const COLUMNS: &str = "id, subscription_id, user_id, host, token, state, reason, checks, \
    created_at, checked_at, next_check_at, verified_at, removed_at";

/// What ALREADY_EXISTS says: the same whoever holds it.
pub const HOST_TAKEN: &str = "this domain is already attached to a subscription; a domain can \
    serve one subscription only";

/// Stores a new domain; ALREADY_EXISTS when a live claim holds its host.
pub async fn insert(tx: &mut Tx, r: &DomainRow) -> AppResult<()> {
    with_conn!(tx, |c| sqlx::query(
        "INSERT INTO subscription_domains (id, subscription_id, user_id, host, token, state,
            reason, checks, created_at, checked_at, next_check_at, verified_at, removed_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
    )
    .bind(&r.id)
    .bind(&r.subscription_id)
    .bind(&r.user_id)
    .bind(&r.host)
    .bind(&r.token)
    .bind(&r.state)
    .bind(&r.reason)
    .bind(r.checks)
    .bind(r.created_at)
    .bind(r.checked_at)
    .bind(r.next_check_at)
    .bind(r.verified_at)
    .bind(r.removed_at)
    .execute(c)
    .await
    .map(|_| ()))
    .map_err(unique_violation(HOST_TAKEN))
}

/// How many domains hold a claim for subscription `sub` (attached and not
/// FAILED): what --domains-per-subscription bounds.
pub async fn count_live(tx: &mut Tx, sub: &str) -> AppResult<i64> {
    Ok(with_conn!(tx, |c| sqlx::query_scalar(
        "SELECT COUNT(*) FROM subscription_domains
         WHERE subscription_id = $1 AND removed_at = 0 AND state <> 'FAILED'"
    )
    .bind(sub)
    .fetch_one(c)
    .await)?)
}

/// Deletes `sub`'s FAILED rows for `host` (it is being added again; a
/// FAILED row has no objects in the cluster).
pub async fn drop_failed(tx: &mut Tx, sub: &str, host: &str) -> AppResult<()> {
    with_conn!(tx, |c| sqlx::query(
        "DELETE FROM subscription_domains
         WHERE subscription_id = $1 AND host = $2 AND state = 'FAILED' AND removed_at = 0"
    )
    .bind(sub)
    .bind(host)
    .execute(c)
    .await
    .map(|_| ()))?;
    Ok(())
}

/// The attached domains of subscription `sub`, oldest first.
pub async fn of_subscription(db: &Db, sub: &str) -> AppResult<Vec<DomainRow>> {
    Ok(with_conn!(db.read(), |c| sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM subscription_domains
         WHERE subscription_id = $1 AND removed_at = 0 ORDER BY created_at, id"
    ))
    .bind(sub)
    .fetch_all(c)
    .await)?)
}

/// The domain `id`.
pub async fn get(db: &Db, id: &str) -> AppResult<Option<DomainRow>> {
    Ok(with_conn!(db.read(), |c| sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM subscription_domains WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(c)
    .await)?)
}

/// Every row of user `user`'s domains, removed ones included.
pub async fn of_user(db: &Db, user: &str) -> AppResult<Vec<DomainRow>> {
    Ok(with_conn!(db.read(), |c| sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM subscription_domains WHERE user_id = $1 ORDER BY created_at, id"
    ))
    .bind(user)
    .fetch_all(c)
    .await)?)
}

/// The users who have domain rows (the loop's resync).
pub async fn users(db: &Db) -> AppResult<Vec<String>> {
    Ok(with_conn!(db.read(), |c| sqlx::query_scalar(
        "SELECT DISTINCT user_id FROM subscription_domains"
    )
    .fetch_all(c)
    .await)?)
}

/// Whether user `user` has a PENDING domain (their namespace then runs the
/// token responder, which the quota makes room for).
pub async fn has_pending(tx: &mut Tx, user: &str) -> AppResult<bool> {
    let n: i64 = with_conn!(tx, |c| sqlx::query_scalar(
        "SELECT COUNT(*) FROM subscription_domains
         WHERE user_id = $1 AND removed_at = 0 AND state = 'PENDING'"
    )
    .bind(user)
    .fetch_one(c)
    .await)?;
    Ok(n > 0)
}

/// Marks domain `id` of subscription `sub` removed at `at`; false when
/// there is no such attached domain.
pub async fn mark_removed(tx: &mut Tx, id: &str, sub: &str, at: i64) -> AppResult<bool> {
    let done = with_conn!(tx, |c| sqlx::query(
        "UPDATE subscription_domains SET removed_at = $3
         WHERE id = $1 AND subscription_id = $2 AND removed_at = 0"
    )
    .bind(id)
    .bind(sub)
    .bind(at)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(done == 1)
}

/// What one pass of the domain loop learnt about a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The new state.
    pub state: String,
    /// Why.
    pub reason: String,
    /// Checks made.
    pub checks: i64,
    /// Unix ms of the last check.
    pub checked_at: i64,
    /// Unix ms of the next one.
    pub next_check_at: i64,
    /// Unix ms of the verification.
    pub verified_at: i64,
}

/// Records `o` on domain `id` if it is still attached and in state `was`
/// (another replica may have moved it on); whether it was written.
pub async fn record(db: &Db, id: &str, was: &str, o: &Outcome) -> AppResult<bool> {
    let mut tx = db.begin().await?;
    let done = record_in(&mut tx, id, was, o).await?;
    tx.commit().await?;
    Ok(done)
}

/// [`record`] in the caller's transaction.
pub async fn record_in(
    tx: &mut crate::store::Tx,
    id: &str,
    was: &str,
    o: &Outcome,
) -> AppResult<bool> {
    let done = with_conn!(&mut *tx, |c| sqlx::query(
        "UPDATE subscription_domains SET state = $3, reason = $4, checks = $5, checked_at = $6,
            next_check_at = $7, verified_at = $8
         WHERE id = $1 AND state = $2 AND removed_at = 0"
    )
    .bind(id)
    .bind(was)
    .bind(&o.state)
    .bind(&o.reason)
    .bind(o.checks)
    .bind(o.checked_at)
    .bind(o.next_check_at)
    .bind(o.verified_at)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(done == 1)
}

/// Deletes the row of domain `id` (its objects are gone from the cluster).
pub async fn delete(db: &Db, id: &str) -> AppResult<()> {
    let mut tx = db.begin().await?;
    with_conn!(&mut tx, |c| sqlx::query(
        "DELETE FROM subscription_domains WHERE id = $1"
    )
    .bind(id)
    .execute(c)
    .await
    .map(|_| ()))?;
    tx.commit().await?;
    Ok(())
}
