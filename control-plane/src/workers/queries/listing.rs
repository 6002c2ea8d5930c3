//! Listing workers with filters and counts, and the fleet's figures.

use std::collections::HashMap;

use minispod_proto::v1::{WorkerOrder, WorkerStatus};
use sqlx::{FromRow, QueryBuilder};

use super::records::WorkerRow;
use crate::workers::status;
use crate::{
    error::AppResult,
    store::{Backend, Db, Page, contains_pattern},
    with_conn,
};

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
