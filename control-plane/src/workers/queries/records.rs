//! A worker's record: looking it up, creating it, its facts, certificate
//! and administrator's fields, deleting it.

use minispod_proto::v1::MachineFacts;
use serde::{Deserialize, Serialize};
use sqlx::FromRow;

use crate::workers::status::StatusFacts;
use crate::{
    error::{AppError, AppResult},
    store::{Conn, Tx, now_ms},
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
