//! SQL of the worker fleet and of enrollment tokens.

use std::collections::HashMap;

use minispod_proto::v1::{MachineFacts, WorkerOrder, WorkerStatus};
use serde::{Deserialize, Serialize};
use sqlx::{FromRow, QueryBuilder};

use super::status::{self, StatusFacts};
use crate::{
    error::{AppError, AppResult},
    store::{Backend, Conn, Db, Page, Tx, contains_pattern, now_ms},
    with_conn,
};

/// A worker as stored.
#[derive(Debug, Clone, FromRow)]
#[allow(missing_docs)]
pub struct WorkerRow {
    pub id: String,
    pub name: String,
    pub machine_id: String,
    pub status: String,
    pub maintenance: bool,
    pub online: bool,
    pub ready: bool,
    pub cordoned: bool,
    pub ever_connected: bool,
    pub ip_address: String,
    pub cpu_model: String,
    pub cpu_cores: i64,
    pub architecture: String,
    pub memory_bytes: i64,
    pub storage_bytes: i64,
    pub os: String,
    pub kernel_version: String,
    pub kubelet_version: String,
    pub container_runtime: String,
    pub agent_version: String,
    pub labels: String,
    pub taints: String,
    pub notes: String,
    pub allocatable_cpu_millicores: i64,
    pub allocatable_memory_bytes: i64,
    pub allocatable_storage_bytes: i64,
    pub allocatable_pods: i64,
    pub allocated_cpu_millicores: i64,
    pub allocated_memory_bytes: i64,
    pub allocated_storage_bytes: i64,
    pub allocated_pods: i64,
    pub cpu_used_percent: f64,
    pub memory_used_bytes: i64,
    pub storage_used_bytes: i64,
    pub pod_count: i64,
    pub max_pods: i64,
    pub last_heartbeat_at: Option<i64>,
    pub last_health_check_at: Option<i64>,
    pub cert_serial: String,
    pub cert_expires_at: i64,
    pub k3s_join_error: String,
    pub enrolled_at: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub stream_replica: Option<String>,
    pub stream_id: Option<String>,
    pub node_ready: bool,
    pub node_reason: String,
    pub kubernetes_node: String,
    /// One more at every write watchers see (not the metrics flush).
    pub version: i64,
    /// Another machine asking to enroll under this worker's name.
    pub takeover_machine_id: Option<String>,
    pub takeover_ip_address: String,
    pub takeover_requested_at: Option<i64>,
    /// When an administrator approved that machine's takeover.
    pub takeover_approved_at: Option<i64>,
}

impl WorkerRow {
    /// The facts its status follows from.
    pub fn facts(&self) -> StatusFacts {
        StatusFacts {
            maintenance: self.maintenance,
            online: self.online,
            ready: self.ready,
            node_ready: self.node_ready,
            ever_connected: self.ever_connected,
        }
    }
}

/// A taint as stored in the `taints` JSON column.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TaintJson {
    /// Key.
    pub key: String,
    /// Value.
    #[serde(default)]
    pub value: String,
    /// Effect.
    pub effect: String,
}

/// The worker with this id.
pub async fn by_id<'c>(exec: impl Into<Conn<'c>>, id: &str) -> AppResult<Option<WorkerRow>> {
    Ok(with_conn!(exec, |c| sqlx::query_as(
        "SELECT * FROM workers WHERE id = $1"
    )
    .bind(id)
    .fetch_optional(c)
    .await)?)
}

/// The worker with this id, or NOT_FOUND.
pub async fn require<'c>(exec: impl Into<Conn<'c>>, id: &str) -> AppResult<WorkerRow> {
    by_id(exec, id)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("no worker with id {id:?}")))
}

/// The worker with this name (names are unique).
pub async fn by_name<'c>(exec: impl Into<Conn<'c>>, name: &str) -> AppResult<Option<WorkerRow>> {
    Ok(with_conn!(exec, |c| sqlx::query_as(
        "SELECT * FROM workers WHERE name = $1"
    )
    .bind(name)
    .fetch_optional(c)
    .await)?)
}

/// The worker `key` names: its id, else its name (the one resolution of
/// every WorkerService method that takes either); NOT_FOUND when neither.
pub async fn resolve<'c>(exec: impl Into<Conn<'c>>, key: &str) -> AppResult<WorkerRow> {
    let key = key.trim();
    if key.is_empty() {
        return Err(AppError::invalid("id", "give a worker's id or name"));
    }
    let row: Option<WorkerRow> = with_conn!(exec, |c| sqlx::query_as(
        "SELECT * FROM workers WHERE id = $1 OR name = $1
         ORDER BY CASE WHEN id = $1 THEN 0 ELSE 1 END LIMIT 1"
    )
    .bind(key)
    .fetch_optional(c)
    .await)?;
    row.ok_or_else(|| AppError::NotFound(format!("no worker with id or name {key:?}")))
}

/// The worker of this machine.
pub async fn by_machine_id(tx: &mut Tx, machine_id: &str) -> AppResult<Option<WorkerRow>> {
    Ok(with_conn!(&mut *tx, |c| sqlx::query_as(
        "SELECT * FROM workers WHERE machine_id = $1"
    )
    .bind(machine_id)
    .fetch_optional(c)
    .await)?)
}

/// Creates a worker for a newly enrolled machine (PENDING until it connects).
pub async fn insert(
    tx: &mut Tx,
    id: &str,
    facts: &MachineFacts,
    cert_serial: &str,
    cert_expires_at: i64,
) -> AppResult<()> {
    let now = now_ms();
    with_conn!(&mut *tx, |c| sqlx::query(
        "INSERT INTO workers (id, name, machine_id, status, cert_serial, cert_expires_at,
            enrolled_at, created_at, updated_at)
         VALUES ($1, $2, $3, 'PENDING', $4, $5, $6, $6, $6)",
    )
    .bind(id)
    .bind(&facts.hostname)
    .bind(&facts.machine_id)
    .bind(cert_serial)
    .bind(cert_expires_at)
    .bind(now)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))
    .map_err(crate::store::unique_violation(&format!(
        "a worker named {:?} exists",
        facts.hostname
    )))?;
    write_facts(tx, id, facts, None).await.map(|_| ())
}

/// Records a machine's facts and, when given, the Kubernetes node the
/// agent says it runs on. The host name becomes the worker's name unless
/// another worker has it: then the worker keeps its name and the answer is
/// false (names are unique; the caller says so in its log).
pub async fn write_facts(
    tx: &mut Tx,
    id: &str,
    f: &MachineFacts,
    kubernetes_node: Option<&str>,
) -> AppResult<bool> {
    let taken = with_conn!(&mut *tx, |c| sqlx::query_scalar::<_, String>(
        "SELECT id FROM workers WHERE name = $1 AND id <> $2"
    )
    .bind(&f.hostname)
    .bind(id)
    .fetch_optional(c)
    .await)?
    .is_some();
    with_conn!(&mut *tx, |c| {
        sqlx::query(
        "UPDATE workers SET name = CASE WHEN $16 THEN name ELSE $2 END, version = version + 1, ip_address = $3, cpu_model = $4, cpu_cores = $5,
            architecture = $6, memory_bytes = $7, storage_bytes = $8, os = $9, kernel_version = $10,
            kubelet_version = $11, container_runtime = $12, agent_version = $13, updated_at = $14,
            kubernetes_node = COALESCE($15, kubernetes_node)
         WHERE id = $1",
    )
    .bind(id)
    .bind(&f.hostname)
    .bind(&f.ip_address)
    .bind(&f.cpu_model)
    .bind(i64::from(f.cpu_cores))
    .bind(&f.architecture)
    .bind(f.memory_bytes)
    .bind(f.storage_bytes)
    .bind(&f.os)
    .bind(&f.kernel_version)
    .bind(&f.kubelet_version)
    .bind(&f.container_runtime)
    .bind(&f.agent_version)
    .bind(now_ms())
    .bind(kubernetes_node)
    .bind(taken)
    .execute(c)
    .await
    .map(|r| r.rows_affected())
    })?;
    Ok(!taken)
}

/// Replaces the certificate the worker may use (re-enrollment, renewal).
pub async fn set_certificate(
    tx: &mut Tx,
    id: &str,
    serial: &str,
    expires_at: i64,
    enrolled: bool,
) -> AppResult<()> {
    let now = now_ms();
    with_conn!(&mut *tx, |c| sqlx::query(
        "UPDATE workers SET cert_serial = $2, cert_expires_at = $3, version = version + 1,
            enrolled_at = CASE WHEN $4 THEN $5 ELSE enrolled_at END, updated_at = $5
         WHERE id = $1",
    )
    .bind(id)
    .bind(serial)
    .bind(expires_at)
    .bind(enrolled)
    .bind(now)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

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

/// Replaces the administrator's fields that are Some.
pub async fn update_meta(
    tx: &mut Tx,
    id: &str,
    labels: Option<&str>,
    taints: Option<&str>,
    notes: Option<&str>,
) -> AppResult<Option<WorkerRow>> {
    Ok(with_conn!(&mut *tx, |c| sqlx::query_as(
        "UPDATE workers SET labels = COALESCE($2, labels), taints = COALESCE($3, taints),
            notes = COALESCE($4, notes), updated_at = $5, version = version + 1
         WHERE id = $1 RETURNING *",
    )
    .bind(id)
    .bind(labels)
    .bind(taints)
    .bind(notes)
    .bind(now_ms())
    .fetch_optional(c)
    .await)?)
}

/// Deletes a worker; false when absent.
pub async fn delete(tx: &mut Tx, id: &str) -> AppResult<bool> {
    let done = with_conn!(&mut *tx, |c| sqlx::query(
        "DELETE FROM workers WHERE id = $1"
    )
    .bind(id)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(done == 1)
}

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

/// What a listing keeps.
#[derive(Debug, Default)]
pub struct WorkerFilter {
    /// Status to keep.
    pub status: Option<WorkerStatus>,
    /// Schedulable or not.
    pub schedulable: Option<bool>,
    /// Ready or not.
    pub ready: Option<bool>,
    /// Online or not.
    pub online: Option<bool>,
    /// Substring of name, IP or machine id.
    pub search: String,
}

/// Appends the WHERE clause of `f`: only the conditions it sets, so the
/// planner can seek the `workers_listing` index on status and check the rest
/// inside that index. `pattern` is [`contains_pattern`] of the search (or
/// empty); `like` is the case-insensitive LIKE of the backend.
fn push_filter<'a, DB: sqlx::Database>(
    q: &mut QueryBuilder<'a, DB>,
    f: &WorkerFilter,
    pattern: &'a str,
    like: &str,
) where
    bool: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    &'a str: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    q.push(" WHERE 1 = 1");
    if let Some(s) = f.status {
        q.push(" AND status = ").push_bind(status::to_db(s));
    }
    match f.schedulable {
        Some(true) => q.push(" AND status = 'ACTIVE' AND NOT cordoned"),
        Some(false) => q.push(" AND (status <> 'ACTIVE' OR cordoned)"),
        None => q,
    };
    if let Some(ready) = f.ready {
        q.push(" AND ready = ").push_bind(ready);
    }
    if let Some(online) = f.online {
        q.push(" AND online = ").push_bind(online);
    }
    if !pattern.is_empty() {
        for (i, column) in ["name", "ip_address", "machine_id"].iter().enumerate() {
            q.push(if i == 0 { " AND (" } else { " OR " });
            // `(? || '')`, not a bare `?`: SQLite re-plans a statement
            // whose LIKE pattern is a bare parameter on every execution
            // (to try its prefix optimisation, useless for `%...%`).
            q.push(format_args!("{column} {like} ("))
                .push_bind(pattern)
                .push(" || '') ESCAPE '\\'");
        }
        q.push(")");
    }
}

/// Counts of recent listings by filter, each with the
/// [`Db::write_generation`] it was counted under. Paging through a large
/// fleet, or an administrator's screen refreshing, asks the same count again
/// and again; while no transaction has committed since (heartbeat metrics
/// aside), the kept count is exact, and the listing skips a scan of every
/// matching worker. Nothing is kept on PostgreSQL.
#[derive(Debug, Default)]
pub struct CountCache(std::sync::Mutex<HashMap<String, (u64, i64)>>);

impl CountCache {
    /// Filters remembered at most; all are forgotten when full.
    const CAPACITY: usize = 256;

    fn get(&self, key: &str, generation: u64) -> Option<i64> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.get(key)
            .filter(|(g, _)| *g == generation)
            .map(|(_, n)| *n)
    }

    fn put(&self, key: String, generation: u64, count: i64) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= Self::CAPACITY && !map.contains_key(&key) {
            map.clear();
        }
        map.insert(key, (generation, count));
    }
}

/// One page of workers and the number matching.
///
/// The number comes from `counts` when nothing was written since it was
/// counted, and from the page itself when that is the last page; otherwise
/// it is counted (in the `workers_listing` index, without the wide rows).
pub async fn list(
    db: &Db,
    counts: &CountCache,
    f: &WorkerFilter,
    order: WorkerOrder,
    page: Page,
) -> AppResult<(Vec<WorkerRow>, i64)> {
    let pattern = if f.search.is_empty() {
        String::new()
    } else {
        contains_pattern(&f.search)
    };
    // The pattern is lower case. SQLite's LIKE already ignores ASCII case
    // (and its lower() folds nothing more), so the columns go in as they are
    // and the index holds them; PostgreSQL needs ILIKE.
    let like = match db.backend() {
        Backend::Sqlite => "LIKE",
        Backend::Postgres => "ILIKE",
    };
    let order_by = match order {
        WorkerOrder::CreatedAtDesc => "created_at DESC, id",
        WorkerOrder::LastHeartbeatDesc => "last_heartbeat_at DESC NULLS LAST, id",
        WorkerOrder::NameAsc | WorkerOrder::Unspecified => "name, id",
    };
    // With a generation (SQLite), the count is looked up and kept by filter.
    let kept = db.write_generation().map(|g| {
        let key = format!(
            "{:?}|{:?}|{:?}|{:?}|{pattern}",
            f.status, f.schedulable, f.ready, f.online
        );
        (g, key)
    });
    let cached = kept.as_ref().and_then(|(g, key)| counts.get(key, *g));
    let (rows, counted): (Vec<WorkerRow>, Option<i64>) = with_conn!(db.read(), |c| {
        let mut q = QueryBuilder::new("SELECT * FROM workers");
        push_filter(&mut q, f, &pattern, like);
        q.push(format_args!(" ORDER BY {order_by} LIMIT "))
            .push_bind(page.limit)
            .push(" OFFSET ")
            .push_bind(page.offset);
        let rows: Vec<WorkerRow> = q.build_query_as().fetch_all(&mut *c).await?;
        let last_page = (rows.len() as i64) < page.limit && (!rows.is_empty() || page.offset == 0);
        let counted = if cached.is_some() || last_page {
            None
        } else {
            let mut q = QueryBuilder::new("SELECT COUNT(*) FROM workers");
            push_filter(&mut q, f, &pattern, like);
            Some(q.build_query_scalar().fetch_one(&mut *c).await?)
        };
        (rows, counted)
    });
    let total = match (cached, counted) {
        (Some(n), _) => n,
        (None, Some(n)) => n,
        (None, None) => page.offset + rows.len() as i64,
    };
    if cached.is_none()
        && let Some((g, key)) = kept
    {
        counts.put(key, g, total);
    }
    Ok((rows, total))
}

/// (id, online, ever connected) of every worker, for the cluster link's
/// sweeps.
pub async fn presence(db: &Db) -> AppResult<Vec<(String, bool, bool)>> {
    Ok(with_conn!(db.read(), |c| sqlx::query_as(
        "SELECT id, online, ever_connected FROM workers",
    )
    .fetch_all(c)
    .await)?)
}

/// (status, online, count) over all workers, for metrics.
pub async fn counts_by_status(db: &Db) -> AppResult<Vec<(String, bool, i64)>> {
    Ok(with_conn!(db.read(), |c| sqlx::query_as(
        "SELECT status, online, COUNT(*) FROM workers GROUP BY status, online ORDER BY status",
    )
    .fetch_all(c)
    .await)?)
}

/// Fleet totals.
#[derive(Debug, Default, FromRow)]
#[allow(missing_docs)]
pub struct FleetTotals {
    pub total: i64,
    pub online: i64,
    pub schedulable: i64,
    pub cpu_cores: i64,
    pub memory_bytes: i64,
    pub storage_bytes: i64,
    pub max_pods: i64,
    pub allocatable_cpu_millicores: i64,
    pub allocatable_memory_bytes: i64,
    pub allocatable_storage_bytes: i64,
    pub allocatable_pods: i64,
    pub used_cpu_millicores: f64,
    pub memory_used_bytes: i64,
    pub storage_used_bytes: i64,
    pub pod_count: i64,
}

/// Fleet totals and the count per stored status.
pub async fn stats(db: &Db) -> AppResult<(FleetTotals, Vec<(String, i64)>)> {
    let totals = with_conn!(db.read(), |c| {
        sqlx::query_as(
        "SELECT COUNT(*) AS total,
            COALESCE(SUM(CASE WHEN online THEN 1 ELSE 0 END), 0) AS online,
            COALESCE(SUM(CASE WHEN status = 'ACTIVE' AND NOT cordoned THEN 1 ELSE 0 END), 0) AS schedulable,
            CAST(COALESCE(SUM(cpu_cores), 0) AS BIGINT) AS cpu_cores,
            CAST(COALESCE(SUM(memory_bytes), 0) AS BIGINT) AS memory_bytes,
            CAST(COALESCE(SUM(storage_bytes), 0) AS BIGINT) AS storage_bytes,
            CAST(COALESCE(SUM(max_pods), 0) AS BIGINT) AS max_pods,
            CAST(COALESCE(SUM(allocatable_cpu_millicores), 0) AS BIGINT) AS allocatable_cpu_millicores,
            CAST(COALESCE(SUM(allocatable_memory_bytes), 0) AS BIGINT) AS allocatable_memory_bytes,
            CAST(COALESCE(SUM(allocatable_storage_bytes), 0) AS BIGINT) AS allocatable_storage_bytes,
            CAST(COALESCE(SUM(allocatable_pods), 0) AS BIGINT) AS allocatable_pods,
            CAST(COALESCE(SUM(cpu_used_percent * cpu_cores * 10.0), 0.0) AS DOUBLE PRECISION) AS used_cpu_millicores,
            CAST(COALESCE(SUM(memory_used_bytes), 0) AS BIGINT) AS memory_used_bytes,
            CAST(COALESCE(SUM(storage_used_bytes), 0) AS BIGINT) AS storage_used_bytes,
            CAST(COALESCE(SUM(pod_count), 0) AS BIGINT) AS pod_count
         FROM workers",
    )
    .fetch_one(c)
    .await
    })?;
    let by_status = with_conn!(db.read(), |c| sqlx::query_as(
        "SELECT status, COUNT(*) FROM workers GROUP BY status"
    )
    .fetch_all(c)
    .await)?;
    Ok((totals, by_status))
}

/// What the online workers offer, summed, as their agents report it.
#[derive(Debug, Default, FromRow)]
#[allow(missing_docs)]
pub struct OnlineTotals {
    pub cpu_cores: i64,
    pub memory_bytes: i64,
    pub storage_bytes: i64,
    pub max_pods: i64,
    pub allocatable_cpu_millicores: i64,
    pub allocatable_memory_bytes: i64,
    pub allocatable_storage_bytes: i64,
    pub allocatable_pods: i64,
    pub allocated_cpu_millicores: i64,
    pub allocated_memory_bytes: i64,
    pub allocated_storage_bytes: i64,
    pub pod_count: i64,
}

/// The online workers' capacity, summed in SQL (no cluster linked).
pub async fn online_totals(db: &Db) -> AppResult<OnlineTotals> {
    Ok(with_conn!(db.read(), |c| {
        sqlx::query_as(
        "SELECT CAST(COALESCE(SUM(cpu_cores), 0) AS BIGINT) AS cpu_cores,
            CAST(COALESCE(SUM(memory_bytes), 0) AS BIGINT) AS memory_bytes,
            CAST(COALESCE(SUM(storage_bytes), 0) AS BIGINT) AS storage_bytes,
            CAST(COALESCE(SUM(max_pods), 0) AS BIGINT) AS max_pods,
            CAST(COALESCE(SUM(allocatable_cpu_millicores), 0) AS BIGINT) AS allocatable_cpu_millicores,
            CAST(COALESCE(SUM(allocatable_memory_bytes), 0) AS BIGINT) AS allocatable_memory_bytes,
            CAST(COALESCE(SUM(allocatable_storage_bytes), 0) AS BIGINT) AS allocatable_storage_bytes,
            CAST(COALESCE(SUM(allocatable_pods), 0) AS BIGINT) AS allocatable_pods,
            CAST(COALESCE(SUM(allocated_cpu_millicores), 0) AS BIGINT) AS allocated_cpu_millicores,
            CAST(COALESCE(SUM(allocated_memory_bytes), 0) AS BIGINT) AS allocated_memory_bytes,
            CAST(COALESCE(SUM(allocated_storage_bytes), 0) AS BIGINT) AS allocated_storage_bytes,
            CAST(COALESCE(SUM(pod_count), 0) AS BIGINT) AS pod_count
         FROM workers WHERE online",
    )
    .fetch_one(c)
    .await
    })?)
}

/// The ids of the online workers (a cluster linked: their figures come
/// from their nodes).
pub async fn online_ids(db: &Db) -> AppResult<Vec<String>> {
    Ok(with_conn!(db.read(), |c| sqlx::query_scalar(
        "SELECT id FROM workers WHERE online"
    )
    .fetch_all(c)
    .await)?)
}

/// Workers per (architecture, OS), for the counts by each.
pub async fn counts_by_platform(db: &Db) -> AppResult<Vec<(String, String, i64)>> {
    Ok(with_conn!(db.read(), |c| sqlx::query_as(
        "SELECT architecture, os, COUNT(*) FROM workers GROUP BY architecture, os"
    )
    .fetch_all(c)
    .await)?)
}

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
