//! The control-plane replicas holding workers' streams, and the streams
//! an expired replica left behind.

use super::records::WorkerRow;
use crate::workers::status;
use crate::{
    error::AppResult,
    store::{Tx, now_ms},
    with_conn,
};

/// Registers a control-plane replica holding streams until `lease_until`.
pub async fn insert_replica(tx: &mut Tx, id: &str, lease_until: i64) -> AppResult<()> {
    with_conn!(tx, |c| sqlx::query(
        "INSERT INTO replicas (id, lease_expires_at, started_at) VALUES ($1, $2, $3)"
    )
    .bind(id)
    .bind(lease_until)
    .bind(now_ms())
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

/// Extends a replica's lease; false when its record is gone (the others
/// presumed it dead and took its workers offline).
pub async fn renew_replica(tx: &mut Tx, id: &str, lease_until: i64) -> AppResult<bool> {
    let done = with_conn!(tx, |c| sqlx::query(
        "UPDATE replicas SET lease_expires_at = $2 WHERE id = $1"
    )
    .bind(id)
    .bind(lease_until)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(done == 1)
}

/// Removes replica `id` (it leaves cleanly).
pub async fn delete_replica(tx: &mut Tx, id: &str) -> AppResult<()> {
    with_conn!(tx, |c| sqlx::query("DELETE FROM replicas WHERE id = $1")
        .bind(id)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(())
}

/// Removes replicas other than `keep`: with `all_but_keep` every other one
/// (a store only this process opens), else those whose lease lapsed by `now`.
pub async fn remove_replicas(
    tx: &mut Tx,
    keep: &str,
    all_but_keep: bool,
    now: i64,
) -> AppResult<u64> {
    Ok(with_conn!(tx, |c| sqlx::query(
        "DELETE FROM replicas WHERE id <> $1 AND ($2 OR lease_expires_at <= $3)"
    )
    .bind(keep)
    .bind(all_but_keep)
    .bind(now)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?)
}

/// Takes offline (INACTIVE, or still MAINTENANCE) every worker marked
/// online whose stream no live replica holds: its replica's lease lapsed or
/// its record is gone. Returns the changed workers.
pub async fn reap_orphaned_streams(tx: &mut Tx, now: i64) -> AppResult<Vec<WorkerRow>> {
    // The statuses come from the state machine (status.rs), not from SQL of
    // their own.
    static REAP: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "UPDATE workers SET online = FALSE, ready = FALSE, status = {},
                version = version + 1, stream_replica = NULL, stream_id = NULL, updated_at = $1
             WHERE (online OR status IN ({}))
               AND (stream_replica IS NULL OR stream_replica NOT IN
                    (SELECT id FROM replicas WHERE lease_expires_at > $1))
             RETURNING *",
            status::offline_status_sql(),
            status::online_statuses_sql()
        )
    });
    Ok(with_conn!(tx, |c| sqlx::query_as(REAP.as_str())
        .bind(now)
        .fetch_all(c)
        .await)?)
}
