//! SQL of refresh tokens and of rate limits kept in the store.

use sqlx::FromRow;

use super::rate_limit::Bucket;
use crate::{
    error::AppResult,
    store::{Db, Tx, new_id, now_ms},
    with_conn,
};

/// A stored refresh token (its hash, never the secret).
#[derive(Debug, Clone, FromRow)]
pub struct RefreshTokenRow {
    /// Row id.
    pub id: String,
    /// Owner.
    pub user_id: String,
    /// The login this token descends from.
    pub family_id: String,
    /// Unix ms.
    pub expires_at: i64,
    /// Set once the token was exchanged.
    pub used_at: Option<i64>,
    /// Set once the token was revoked.
    pub revoked_at: Option<i64>,
}

/// Stores a refresh token's hash.
pub async fn insert(
    tx: &mut Tx,
    user_id: &str,
    family_id: &str,
    token_hash: &[u8],
    expires_at: i64,
) -> AppResult<()> {
    with_conn!(&mut *tx, |c| sqlx::query(
        "INSERT INTO refresh_tokens (id, user_id, family_id, token_hash, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(new_id())
    .bind(user_id)
    .bind(family_id)
    .bind(token_hash)
    .bind(now_ms())
    .bind(expires_at)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

/// The token with this hash.
pub async fn by_hash(tx: &mut Tx, token_hash: &[u8]) -> AppResult<Option<RefreshTokenRow>> {
    Ok(with_conn!(&mut *tx, |c| sqlx::query_as(
        "SELECT id, user_id, family_id, expires_at, used_at, revoked_at
         FROM refresh_tokens WHERE token_hash = $1",
    )
    .bind(token_hash)
    .fetch_optional(c)
    .await)?)
}

/// Spends a token; false when it was already spent or revoked (a race lost).
pub async fn mark_used(tx: &mut Tx, id: &str) -> AppResult<bool> {
    let done = with_conn!(&mut *tx, |c| {
        sqlx::query(
        "UPDATE refresh_tokens SET used_at = $2 WHERE id = $1 AND used_at IS NULL AND revoked_at IS NULL",
    )
    .bind(id)
    .bind(now_ms())
    .execute(c)
    .await
.map(|r| r.rows_affected())
    })?;
    Ok(done == 1)
}

/// Revokes every token of a family.
pub async fn revoke_family(tx: &mut Tx, family_id: &str) -> AppResult<u64> {
    let done = with_conn!(&mut *tx, |c| sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = $2 WHERE family_id = $1 AND revoked_at IS NULL",
    )
    .bind(family_id)
    .bind(now_ms())
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(done)
}

/// Revokes every token of a user.
pub async fn revoke_user(tx: &mut Tx, user_id: &str) -> AppResult<u64> {
    let done = with_conn!(&mut *tx, |c| sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL",
    )
    .bind(user_id)
    .bind(now_ms())
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(done)
}

/// Deletes tokens that expired before `before_ms`; they can never be used.
pub async fn delete_expired(tx: &mut Tx, before_ms: i64) -> AppResult<u64> {
    let done = with_conn!(&mut *tx, |c| sqlx::query(
        "DELETE FROM refresh_tokens WHERE expires_at < $1"
    )
    .bind(before_ms)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(done)
}

/// A rate-limit bucket kept in the store (replicas share the store).
pub async fn bucket(db: &Db, key: &str) -> AppResult<Option<Bucket>> {
    let row: Option<(f64, i64)> = with_conn!(db, |c| sqlx::query_as(
        "SELECT tokens, updated_at FROM rate_limits WHERE key = $1"
    )
    .bind(key)
    .fetch_optional(c)
    .await)?;
    Ok(row.map(|(tokens, updated_ms)| Bucket { tokens, updated_ms }))
}

/// The bucket, read inside the write transaction that will replace it.
pub async fn bucket_for_update(tx: &mut Tx, key: &str) -> AppResult<Option<Bucket>> {
    let row: Option<(f64, i64)> = with_conn!(tx, |c| sqlx::query_as(
        "SELECT tokens, updated_at FROM rate_limits WHERE key = $1"
    )
    .bind(key)
    .fetch_optional(c)
    .await)?;
    Ok(row.map(|(tokens, updated_ms)| Bucket { tokens, updated_ms }))
}

/// Stores a bucket.
pub async fn put_bucket(tx: &mut Tx, key: &str, b: Bucket) -> AppResult<()> {
    with_conn!(tx, |c| sqlx::query(
        "INSERT INTO rate_limits (key, tokens, updated_at) VALUES ($1, $2, $3)
         ON CONFLICT (key) DO UPDATE SET tokens = $2, updated_at = $3"
    )
    .bind(key)
    .bind(b.tokens)
    .bind(b.updated_ms)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

/// Forgets a bucket (it is full again).
pub async fn delete_bucket(db: &Db, key: &str) -> AppResult<()> {
    let mut tx = db.begin().await?;
    with_conn!(&mut tx, |c| sqlx::query(
        "DELETE FROM rate_limits WHERE key = $1"
    )
    .bind(key)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    tx.commit().await?;
    Ok(())
}

/// Records that `pair` (`email|address`) signed in at `now`.
pub async fn remember_address(db: &Db, pair: &str, now: i64) -> AppResult<()> {
    let mut tx = db.begin().await?;
    with_conn!(&mut tx, |c| sqlx::query(
        "INSERT INTO known_addresses (pair, seen_at) VALUES ($1, $2)
         ON CONFLICT (pair) DO UPDATE SET seen_at = $2"
    )
    .bind(pair)
    .bind(now)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    tx.commit().await?;
    Ok(())
}

/// When `pair` last signed in, if it did.
pub async fn address_seen_at(db: &Db, pair: &str) -> AppResult<Option<i64>> {
    Ok(with_conn!(db, |c| sqlx::query_scalar(
        "SELECT seen_at FROM known_addresses WHERE pair = $1"
    )
    .bind(pair)
    .fetch_optional(c)
    .await)?)
}

/// Deletes buckets untouched since `idle_before` (long full again) and
/// addresses last seen before `known_before`.
pub async fn delete_stale_limits(
    tx: &mut Tx,
    idle_before: i64,
    known_before: i64,
) -> AppResult<u64> {
    let buckets = with_conn!(&mut *tx, |c| sqlx::query(
        "DELETE FROM rate_limits WHERE updated_at < $1"
    )
    .bind(idle_before)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    let addresses = with_conn!(tx, |c| sqlx::query(
        "DELETE FROM known_addresses WHERE seen_at < $1"
    )
    .bind(known_before)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(buckets + addresses)
}
