//! A worker's state as its stream and heartbeats change it, and the
//! heartbeats' metrics.

use sqlx::QueryBuilder;

use super::records::{WorkerRow, by_id};
use crate::workers::status;
use crate::{
    error::AppResult,
    store::{Tx, now_ms},
    with_conn,
};

/// What a state change does to the record of the worker's live stream.
#[derive(Debug, Clone, Copy, Default)]
pub enum StreamChange<'a> {
    /// Leave it.
    #[default]
    Keep,
    /// A stream opened: `stream` on `replica` is now the worker's.
    Open {
        /// The replica holding it.
        replica: &'a str,
        /// The stream.
        stream: &'a str,
    },
    /// Stream `stream` ended; the change applies only while it is still the
    /// worker's stream (a newer one, on any replica, wins).
    Close {
        /// The stream that ended.
        stream: &'a str,
    },
}

/// A change of the facts a status follows from; `None` keeps a fact.
#[derive(Debug, Clone, Copy, Default)]
pub struct StateChange<'a> {
    /// Maintenance on or off.
    pub maintenance: Option<bool>,
    /// Stream opened or closed.
    pub online: Option<bool>,
    /// Readiness reported.
    pub ready: Option<bool>,
    /// Cordoned or not.
    pub cordoned: Option<bool>,
    /// The Kubernetes node's readiness and, when not ready, why.
    pub node: Option<(bool, &'a str)>,
    /// The live stream's record.
    pub stream: StreamChange<'a>,
}

/// Applies `change` to worker `id`, re-deriving its status; None when the
/// worker does not exist, or when `change` closes a stream that is no
/// longer the worker's.
pub async fn apply_state(
    tx: &mut Tx,
    id: &str,
    change: StateChange<'_>,
) -> AppResult<Option<WorkerRow>> {
    let Some(row) = by_id(&mut *tx, id).await? else {
        return Ok(None);
    };
    let (set_stream, replica, stream) = match change.stream {
        StreamChange::Keep => (false, None, None),
        StreamChange::Open { replica, stream } => (true, Some(replica), Some(stream)),
        StreamChange::Close { stream } if row.stream_id.as_deref() == Some(stream) => {
            (true, None, None)
        }
        StreamChange::Close { .. } => return Ok(None),
    };
    let mut f = row.facts();
    f.maintenance = change.maintenance.unwrap_or(f.maintenance);
    f.online = change.online.unwrap_or(f.online);
    // Readiness is the agent's word while its stream is up; a worker
    // without a stream is not ready.
    f.ready = change.ready.unwrap_or(f.ready) && f.online;
    if let Some((node_ready, _)) = change.node {
        f.node_ready = node_ready;
    }
    f.ever_connected |= f.online;
    let now = now_ms();
    let row = with_conn!(&mut *tx, |c| sqlx::query_as(
        "UPDATE workers SET status = $2, maintenance = $3, online = $4, ready = $5,
            ever_connected = $6, cordoned = COALESCE($7, cordoned), version = version + 1,
            last_health_check_at = CASE WHEN $4 THEN $8 ELSE last_health_check_at END,
            updated_at = $8,
            stream_replica = CASE WHEN $9 THEN $10 ELSE stream_replica END,
            stream_id = CASE WHEN $9 THEN $11 ELSE stream_id END,
            node_ready = $12, node_reason = COALESCE($13, node_reason)
         WHERE id = $1 RETURNING *",
    )
    .bind(id)
    .bind(status::to_db(status::derive(f)))
    .bind(f.maintenance)
    .bind(f.online)
    .bind(f.ready)
    .bind(f.ever_connected)
    .bind(change.cordoned)
    .bind(now)
    .bind(set_stream)
    .bind(replica)
    .bind(stream)
    .bind(f.node_ready)
    .bind(change.node.map(|(_, reason)| reason))
    .fetch_optional(c)
    .await)?;
    Ok(row)
}

/// Records the K3s join hook's last error.
pub async fn set_join_error(tx: &mut Tx, id: &str, error: &str) -> AppResult<()> {
    with_conn!(&mut *tx, |c| sqlx::query(
        "UPDATE workers SET k3s_join_error = $2, version = version + 1 WHERE id = $1"
    )
    .bind(id)
    .bind(error)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

/// The last heartbeat of one worker, as the metrics flush writes it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct HeartbeatMetrics {
    /// CPU use, percent.
    pub cpu_used_percent: f64,
    /// Memory in use.
    pub memory_used_bytes: i64,
    /// Disk in use.
    pub storage_used_bytes: i64,
    /// Pods running.
    pub pod_count: i64,
    /// Allocatable CPU.
    pub allocatable_cpu_millicores: i64,
    /// Allocatable memory.
    pub allocatable_memory_bytes: i64,
    /// Allocatable storage.
    pub allocatable_storage_bytes: i64,
    /// Allocatable pods.
    pub allocatable_pods: i64,
    /// When it arrived, Unix ms.
    pub at: i64,
}

/// Rows per statement of the metrics flush: 10 binds each, well under
/// SQLite's 32,766 and PostgreSQL's 65,535 bind limits.
const METRICS_ROWS_PER_STATEMENT: usize = 500;

/// Writes a batch of heartbeat metrics inside `tx`, and nothing a listing
/// filters on (the flush commits with [`Tx::commit_no_listing_change`]): one `UPDATE ... FROM
/// (VALUES ...)` per 500 workers rather than one statement per worker, which
/// took a 10,000-worker flush from about 700 ms to a few tens.
pub async fn write_metrics(tx: &mut Tx, batch: &[(String, HeartbeatMetrics)]) -> AppResult<()> {
    for chunk in batch.chunks(METRICS_ROWS_PER_STATEMENT) {
        with_conn!(&mut *tx, |c| {
            // VALUES columns are named column1, column2, ... on both backends.
            let mut q = QueryBuilder::new(
                "UPDATE workers SET cpu_used_percent = v.column2, memory_used_bytes = v.column3,
                    storage_used_bytes = v.column4, pod_count = v.column5,
                    allocatable_cpu_millicores = v.column6, allocatable_memory_bytes = v.column7,
                    allocatable_storage_bytes = v.column8, allocatable_pods = v.column9,
                    last_heartbeat_at = v.column10, last_health_check_at = v.column10
                 FROM (",
            );
            q.push_values(chunk, |mut row, (id, m)| {
                row.push_bind(id.as_str())
                    .push_bind(m.cpu_used_percent)
                    .push_bind(m.memory_used_bytes)
                    .push_bind(m.storage_used_bytes)
                    .push_bind(m.pod_count)
                    .push_bind(m.allocatable_cpu_millicores)
                    .push_bind(m.allocatable_memory_bytes)
                    .push_bind(m.allocatable_storage_bytes)
                    .push_bind(m.allocatable_pods)
                    .push_bind(m.at);
            });
            q.push(") AS v WHERE workers.id = v.column1");
            // Only the full-size statement is worth keeping prepared: the
            // last chunk's size varies from flush to flush, and each size
            // kept would hold a large prepared statement in the cache.
            q.build()
                .persistent(chunk.len() == METRICS_ROWS_PER_STATEMENT)
                .execute(c)
                .await?
                .rows_affected()
        });
    }
    Ok(())
}
