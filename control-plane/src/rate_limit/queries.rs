//! SQL of rate limits kept in the store (when replicas share it).

use super::Bucket;
use crate::{
    error::AppResult,
    store::{Db, Tx},
    with_conn,
};

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
