//! SQL of refresh tokens.

use sqlx::FromRow;

use crate::{
    error::AppResult,
    store::{Conn, Tx, new_id, now_ms},
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
    /// When the session (the family's first login) began, Unix ms; None
    /// for tokens from before it was recorded.
    pub session_started_at: Option<i64>,
}

/// Stores a refresh token's hash.
pub async fn insert(
    tx: &mut Tx,
    user_id: &str,
    family_id: &str,
    token_hash: &[u8],
    expires_at: i64,
    session_started_at: i64,
) -> AppResult<()> {
    with_conn!(&mut *tx, |c| sqlx::query(
        "INSERT INTO refresh_tokens
             (id, user_id, family_id, token_hash, created_at, expires_at, session_started_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(new_id())
    .bind(user_id)
    .bind(family_id)
    .bind(token_hash)
    .bind(now_ms())
    .bind(expires_at)
    .bind(session_started_at)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

/// The token with this hash.
pub async fn by_hash(tx: &mut Tx, token_hash: &[u8]) -> AppResult<Option<RefreshTokenRow>> {
    Ok(with_conn!(&mut *tx, |c| sqlx::query_as(
        "SELECT id, user_id, family_id, expires_at, used_at, revoked_at, session_started_at
         FROM refresh_tokens WHERE token_hash = $1",
    )
    .bind(token_hash)
    .fetch_optional(c)
    .await)?)
}

/// Whether session `family_id` still has a token that was not revoked: a
/// session ends when Logout (or reuse detection, or a password change)
/// revokes its family, and its access tokens with it.
pub async fn family_is_live<'c>(exec: impl Into<Conn<'c>>, family_id: &str) -> AppResult<bool> {
    let live: Option<i32> = with_conn!(exec, |c| sqlx::query_scalar(
        "SELECT 1 FROM refresh_tokens WHERE family_id = $1 AND revoked_at IS NULL LIMIT 1"
    )
    .bind(family_id)
    .fetch_optional(c)
    .await)?;
    Ok(live.is_some())
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
