//! Enrollment tokens.

use sqlx::FromRow;

use crate::{
    error::AppResult,
    store::{Conn, Db, Tx, now_ms},
    with_conn,
};

/// An enrollment token as stored.
#[derive(Debug, Clone, FromRow)]
#[allow(missing_docs)]
pub struct TokenRow {
    pub id: String,
    pub secret_hash: Vec<u8>,
    pub description: String,
    pub expires_at: i64,
    pub max_uses: i64,
    pub uses: i64,
    pub revoked_at: Option<i64>,
    pub created_by: Option<String>,
    pub created_at: i64,
    /// The one machine this token may (re-)enroll; None for new machines only.
    pub machine_id: Option<String>,
}

/// The token with this id.
pub async fn token<'c>(exec: impl Into<Conn<'c>>, id: &str) -> AppResult<Option<TokenRow>> {
    Ok(with_conn!(exec, |c| sqlx::query_as(
        "SELECT * FROM enrollment_tokens WHERE id = $1"
    )
    .bind(id)
    .fetch_optional(c)
    .await)?)
}

/// Tokens, newest first; only usable ones unless `all`.
pub async fn tokens(db: &Db, all: bool) -> AppResult<Vec<TokenRow>> {
    Ok(with_conn!(db.read(), |c| sqlx::query_as(
        "SELECT * FROM enrollment_tokens
         WHERE $1 OR (revoked_at IS NULL AND expires_at > $2 AND (max_uses = 0 OR uses < max_uses))
         ORDER BY created_at DESC",
    )
    .bind(all)
    .bind(now_ms())
    .fetch_all(c)
    .await)?)
}

/// Spends one use of a token, if it is still usable.
pub async fn consume_token(tx: &mut Tx, id: &str) -> AppResult<bool> {
    let done = with_conn!(&mut *tx, |c| {
        sqlx::query(
        "UPDATE enrollment_tokens SET uses = uses + 1
         WHERE id = $1 AND revoked_at IS NULL AND expires_at > $2 AND (max_uses = 0 OR uses < max_uses)",
    )
    .bind(id)
    .bind(now_ms())
    .execute(c)
    .await
.map(|r| r.rows_affected())
    })?;
    Ok(done == 1)
}

/// Revokes a token; None when absent.
pub async fn revoke_token(tx: &mut Tx, id: &str) -> AppResult<Option<TokenRow>> {
    Ok(with_conn!(&mut *tx, |c| {
        sqlx::query_as(
        "UPDATE enrollment_tokens SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1 RETURNING *",
    )
    .bind(id)
    .bind(now_ms())
    .fetch_optional(c)
    .await
    })?)
}

/// Stores a token unless one with its id exists; true when added. A static
/// token imported at every start keeps its first expiry, uses and
/// revocation this way; a new random token's 48-bit id is already taken
/// with odds of (tokens stored) in 2^48, which its caller answers
/// ALREADY_EXISTS.
pub async fn insert_token_once(tx: &mut Tx, t: &TokenRow) -> AppResult<bool> {
    let done = with_conn!(&mut *tx, |c| {
        sqlx::query(
            "INSERT INTO enrollment_tokens (id, secret_hash, description, expires_at, max_uses, uses, created_by, created_at, machine_id)
             VALUES ($1, $2, $3, $4, $5, 0, $6, $7, $8)
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(&t.id)
        .bind(&t.secret_hash)
        .bind(&t.description)
        .bind(t.expires_at)
        .bind(t.max_uses)
        .bind(&t.created_by)
        .bind(t.created_at)
        .bind(&t.machine_id)
        .execute(c)
        .await
        .map(|r| r.rows_affected())
    })?;
    Ok(done == 1)
}
