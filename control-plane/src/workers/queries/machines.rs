//! Removed machines kept out until readmitted, and takeovers of a
//! worker's identity by a new machine.

use sqlx::FromRow;

use super::records::{WorkerRow, by_id, delete};
use crate::{
    error::AppResult,
    store::{Conn, Db, Tx, now_ms},
    with_conn,
};

/// A machine an administrator removed, kept out until readmitted.
#[derive(Debug, Clone, FromRow)]
#[allow(missing_docs)]
pub struct RemovedMachineRow {
    pub machine_id: String,
    pub worker_id: String,
    pub name: String,
    pub removed_by: Option<String>,
    pub removed_at: i64,
}

/// Deletes a worker and records its machine as removed, in `tx`; the
/// deleted worker, or None when absent.
pub async fn delete_and_remove_machine(
    tx: &mut Tx,
    id: &str,
    removed_by: &str,
) -> AppResult<Option<WorkerRow>> {
    let Some(worker) = by_id(&mut *tx, id).await? else {
        return Ok(None);
    };
    if !delete(tx, id).await? {
        return Ok(None);
    }
    with_conn!(&mut *tx, |c| {
        sqlx::query(
        "INSERT INTO removed_machines (machine_id, worker_id, name, removed_by, removed_at)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (machine_id) DO UPDATE SET worker_id = excluded.worker_id,
             name = excluded.name, removed_by = excluded.removed_by, removed_at = excluded.removed_at",
    )
    .bind(&worker.machine_id)
    .bind(&worker.id)
    .bind(&worker.name)
    .bind(removed_by)
    .bind(now_ms())
    .execute(c)
    .await
    .map(|r| r.rows_affected())
    })?;
    Ok(Some(worker))
}

/// The removal record of a machine id, if it was removed.
pub async fn removed_machine<'c>(
    exec: impl Into<Conn<'c>>,
    machine_id: &str,
) -> AppResult<Option<RemovedMachineRow>> {
    Ok(with_conn!(exec, |c| sqlx::query_as(
        "SELECT * FROM removed_machines WHERE machine_id = $1"
    )
    .bind(machine_id)
    .fetch_optional(c)
    .await)?)
}

/// Removed machines, most recently removed first.
pub async fn removed_machines(db: &Db) -> AppResult<Vec<RemovedMachineRow>> {
    Ok(with_conn!(db.read(), |c| sqlx::query_as(
        "SELECT * FROM removed_machines ORDER BY removed_at DESC, machine_id"
    )
    .fetch_all(c)
    .await)?)
}

/// Lets a removed machine enroll again; its record, or None when it was not
/// removed.
pub async fn readmit_machine(
    tx: &mut Tx,
    machine_id: &str,
) -> AppResult<Option<RemovedMachineRow>> {
    Ok(with_conn!(&mut *tx, |c| sqlx::query_as(
        "DELETE FROM removed_machines WHERE machine_id = $1 RETURNING *"
    )
    .bind(machine_id)
    .fetch_optional(c)
    .await)?)
}

/// Records that machine `machine_id` (at `ip_address`) asked to enroll
/// under worker `id`'s name: its pending takeover, replacing an older
/// request (an approval of another machine lapses). The row after.
pub async fn request_takeover(
    tx: &mut Tx,
    id: &str,
    machine_id: &str,
    ip_address: &str,
) -> AppResult<Option<WorkerRow>> {
    Ok(with_conn!(&mut *tx, |c| sqlx::query_as(
        "UPDATE workers SET takeover_approved_at = CASE WHEN takeover_machine_id = $2
                THEN takeover_approved_at ELSE NULL END,
            takeover_machine_id = $2, takeover_ip_address = $3, takeover_requested_at = $4,
            updated_at = $4, version = version + 1
         WHERE id = $1 RETURNING *",
    )
    .bind(id)
    .bind(machine_id)
    .bind(ip_address)
    .bind(now_ms())
    .fetch_optional(c)
    .await)?)
}

/// Approves the pending takeover of worker `id` by `machine_id`; None
/// when that machine's request is not the one pending.
pub async fn approve_takeover(
    tx: &mut Tx,
    id: &str,
    machine_id: &str,
) -> AppResult<Option<WorkerRow>> {
    Ok(with_conn!(&mut *tx, |c| sqlx::query_as(
        "UPDATE workers SET takeover_approved_at = COALESCE(takeover_approved_at, $3),
            updated_at = $3, version = version + 1
         WHERE id = $1 AND takeover_machine_id = $2 RETURNING *",
    )
    .bind(id)
    .bind(machine_id)
    .bind(now_ms())
    .fetch_optional(c)
    .await)?)
}

/// Gives worker `id` its new machine (an approved takeover being
/// enrolled) and forgets the request.
pub async fn complete_takeover(tx: &mut Tx, id: &str, machine_id: &str) -> AppResult<()> {
    with_conn!(&mut *tx, |c| sqlx::query(
        "UPDATE workers SET machine_id = $2, takeover_machine_id = NULL, takeover_ip_address = '',
            takeover_requested_at = NULL, takeover_approved_at = NULL, version = version + 1
         WHERE id = $1",
    )
    .bind(id)
    .bind(machine_id)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}
