//! History rows: batched writes (sums that add up on conflict) and reads
//! grouped into the answer's steps by the database.

use sqlx::QueryBuilder;

use crate::{
    error::AppResult,
    store::{Db, Tx},
    with_conn,
};

/// Sums over the heartbeat figures of one worker in one step; the means
/// are `value / samples`. Sums, not means, so two writes of one point add
/// up exactly.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sums {
    /// Heartbeat figures counted.
    pub samples: i64,
    /// CPU use, percent.
    pub cpu_percent: f64,
    /// Memory in use, bytes.
    pub memory_used: f64,
    /// Allocatable memory, bytes.
    pub memory_total: f64,
    /// Disk in use, bytes.
    pub storage_used: f64,
    /// Allocatable disk, bytes.
    pub storage_total: f64,
}

impl Sums {
    /// Adds `other`'s figures.
    pub fn add(&mut self, other: &Sums) {
        self.samples += other.samples;
        self.cpu_percent += other.cpu_percent;
        self.memory_used += other.memory_used;
        self.memory_total += other.memory_total;
        self.storage_used += other.storage_used;
        self.storage_total += other.storage_total;
    }

    /// The means, as one sample.
    pub fn mean(&self) -> Sums {
        let n = self.samples.max(1) as f64;
        Sums {
            samples: 1,
            cpu_percent: self.cpu_percent / n,
            memory_used: self.memory_used / n,
            memory_total: self.memory_total / n,
            storage_used: self.storage_used / n,
            storage_total: self.storage_total / n,
        }
    }
}

/// One fleet point: over the workers that reported, the sums of their
/// means (`workers` of them).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FleetSums {
    /// Workers that reported (a mean, for coarse points).
    pub workers: f64,
    /// Sum of their mean CPU use, percent.
    pub cpu_percent: f64,
    /// Memory in use, bytes.
    pub memory_used: f64,
    /// Allocatable memory, bytes.
    pub memory_total: f64,
    /// Disk in use, bytes.
    pub storage_used: f64,
    /// Allocatable disk, bytes.
    pub storage_total: f64,
}

impl FleetSums {
    /// Counts one worker's means.
    pub fn add_worker(&mut self, s: &Sums) {
        let m = s.mean();
        self.workers += 1.0;
        self.cpu_percent += m.cpu_percent;
        self.memory_used += m.memory_used;
        self.memory_total += m.memory_total;
        self.storage_used += m.storage_used;
        self.storage_total += m.storage_total;
    }
}

/// Rows per statement: 9 binds each, well under both backends' limits.
const ROWS_PER_STATEMENT: usize = 500;

/// Adds worker points (`worker id, step start, sums`) of width `step_ms`.
pub async fn add_worker_points(
    tx: &mut Tx,
    step_ms: i64,
    rows: &[(String, i64, Sums)],
) -> AppResult<()> {
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        with_conn!(&mut *tx, |c| {
            let mut q = QueryBuilder::new(
                "INSERT INTO worker_history (worker_id, step_ms, at, samples, cpu_percent,
                    memory_used, memory_total, storage_used, storage_total) ",
            );
            q.push_values(chunk, |mut row, (id, at, s)| {
                row.push_bind(id.as_str())
                    .push_bind(step_ms)
                    .push_bind(*at)
                    .push_bind(s.samples)
                    .push_bind(s.cpu_percent)
                    .push_bind(s.memory_used)
                    .push_bind(s.memory_total)
                    .push_bind(s.storage_used)
                    .push_bind(s.storage_total);
            });
            q.push(
                " ON CONFLICT (worker_id, step_ms, at) DO UPDATE SET
                    samples = worker_history.samples + excluded.samples,
                    cpu_percent = worker_history.cpu_percent + excluded.cpu_percent,
                    memory_used = worker_history.memory_used + excluded.memory_used,
                    memory_total = worker_history.memory_total + excluded.memory_total,
                    storage_used = worker_history.storage_used + excluded.storage_used,
                    storage_total = worker_history.storage_total + excluded.storage_total",
            );
            q.build()
                .persistent(chunk.len() == ROWS_PER_STATEMENT)
                .execute(c)
                .await
                .map(|_| ())
        })?;
    }
    Ok(())
}

/// Adds fine fleet points: each replica adds the workers it holds.
pub async fn add_fleet_points(
    tx: &mut Tx,
    step_ms: i64,
    rows: &[(i64, FleetSums)],
) -> AppResult<()> {
    for (at, f) in rows {
        with_conn!(&mut *tx, |c| sqlx::query(
            "INSERT INTO fleet_history (step_ms, at, workers, cpu_percent, memory_used,
                memory_total, storage_used, storage_total)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (step_ms, at) DO UPDATE SET
                workers = fleet_history.workers + excluded.workers,
                cpu_percent = fleet_history.cpu_percent + excluded.cpu_percent,
                memory_used = fleet_history.memory_used + excluded.memory_used,
                memory_total = fleet_history.memory_total + excluded.memory_total,
                storage_used = fleet_history.storage_used + excluded.storage_used,
                storage_total = fleet_history.storage_total + excluded.storage_total"
        )
        .bind(step_ms)
        .bind(*at)
        .bind(f.workers)
        .bind(f.cpu_percent)
        .bind(f.memory_used)
        .bind(f.memory_total)
        .bind(f.storage_used)
        .bind(f.storage_total)
        .execute(c)
        .await
        .map(|_| ()))?;
    }
    Ok(())
}

/// Writes the coarse fleet point starting at `at` as the mean of the fine
/// points within it (replacing an earlier roll-up: any replica may do it).
pub async fn roll_up_fleet(tx: &mut Tx, fine_ms: i64, coarse_ms: i64, at: i64) -> AppResult<()> {
    with_conn!(&mut *tx, |c| sqlx::query(
        "INSERT INTO fleet_history (step_ms, at, workers, cpu_percent, memory_used,
            memory_total, storage_used, storage_total)
         SELECT $2, $3, AVG(workers), AVG(cpu_percent), AVG(memory_used), AVG(memory_total),
            AVG(storage_used), AVG(storage_total)
         FROM fleet_history WHERE step_ms = $1 AND at >= $3 AND at < $4
         HAVING COUNT(*) > 0
         ON CONFLICT (step_ms, at) DO UPDATE SET
            workers = excluded.workers, cpu_percent = excluded.cpu_percent,
            memory_used = excluded.memory_used, memory_total = excluded.memory_total,
            storage_used = excluded.storage_used, storage_total = excluded.storage_total"
    )
    .bind(fine_ms)
    .bind(coarse_ms)
    .bind(at)
    .bind(at + coarse_ms)
    .execute(c)
    .await
    .map(|_| ()))?;
    Ok(())
}

/// A subscription's state from `at` on.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SubscriptionMark {
    /// When it was seen, Unix ms.
    pub at: i64,
    /// Its status (as stored in `subscriptions.status`).
    pub status: String,
    /// Its containers' restarts, summed over its pods.
    pub restarts: i64,
}

/// Records subscriptions' changes (`id, mark`).
pub async fn add_subscription_marks(
    tx: &mut Tx,
    rows: &[(String, SubscriptionMark)],
) -> AppResult<()> {
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        with_conn!(&mut *tx, |c| {
            let mut q = QueryBuilder::new(
                "INSERT INTO subscription_history (subscription_id, at, status, restarts) ",
            );
            q.push_values(chunk, |mut row, (id, m)| {
                row.push_bind(id.as_str())
                    .push_bind(m.at)
                    .push_bind(m.status.as_str())
                    .push_bind(m.restarts);
            });
            q.push(
                " ON CONFLICT (subscription_id, at) DO UPDATE SET
                    status = excluded.status, restarts = excluded.restarts",
            );
            q.build().persistent(false).execute(c).await.map(|_| ())
        })?;
    }
    Ok(())
}

/// What a prune removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    /// Worker and fleet points.
    pub points: u64,
    /// Subscription marks.
    pub marks: u64,
}

/// Removes fine points older than `fine_before`, coarse points and
/// subscription marks older than `coarse_before`, and (with `orphans`)
/// the marks of subscriptions that are gone.
pub async fn prune(
    tx: &mut Tx,
    fine_ms: i64,
    fine_before: i64,
    coarse_ms: i64,
    coarse_before: i64,
    orphans: bool,
) -> AppResult<Pruned> {
    let mut out = Pruned::default();
    for table in ["worker_history", "fleet_history"] {
        for (step, before) in [(fine_ms, fine_before), (coarse_ms, coarse_before)] {
            let sql = format!("DELETE FROM {table} WHERE step_ms = $1 AND at < $2");
            out.points += with_conn!(&mut *tx, |c| sqlx::query(&sql)
                .bind(step)
                .bind(before)
                .execute(c)
                .await
                .map(|r| r.rows_affected()))?;
        }
    }
    out.marks += with_conn!(&mut *tx, |c| sqlx::query(
        "DELETE FROM subscription_history WHERE at < $1"
    )
    .bind(coarse_before)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    if orphans {
        out.marks += with_conn!(&mut *tx, |c| sqlx::query(
            "DELETE FROM subscription_history
             WHERE subscription_id NOT IN (SELECT id FROM subscriptions)"
        )
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
    }
    Ok(out)
}

/// Every subscription's id and stored status.
pub async fn subscription_statuses(db: &Db) -> AppResult<Vec<(String, String)>> {
    Ok(with_conn!(db.read(), |c| sqlx::query_as(
        "SELECT id, status FROM subscriptions"
    )
    .fetch_all(c)
    .await)?)
}

/// A worker's points of width `resolution` in `[start, end)`, summed per
/// step of `step`: (step index, sums).
pub async fn worker_points(
    db: &Db,
    worker_id: &str,
    resolution: i64,
    start: i64,
    end: i64,
    step: i64,
) -> AppResult<Vec<(i64, Sums)>> {
    type Row = (i64, i64, f64, f64, f64, f64, f64);
    let rows: Vec<Row> = with_conn!(db.read(), |c| sqlx::query_as(
        "SELECT (at - $3) / $5 AS b, CAST(SUM(samples) AS BIGINT), SUM(cpu_percent),
            SUM(memory_used), SUM(memory_total), SUM(storage_used), SUM(storage_total)
         FROM worker_history
         WHERE worker_id = $1 AND step_ms = $2 AND at >= $3 AND at < $4
         GROUP BY b ORDER BY b"
    )
    .bind(worker_id)
    .bind(resolution)
    .bind(start)
    .bind(end)
    .bind(step)
    .fetch_all(c)
    .await)?;
    Ok(rows
        .into_iter()
        .map(|(b, samples, cpu, mu, mt, su, st)| {
            (
                b,
                Sums {
                    samples,
                    cpu_percent: cpu,
                    memory_used: mu,
                    memory_total: mt,
                    storage_used: su,
                    storage_total: st,
                },
            )
        })
        .collect())
}

/// The fleet's points of width `resolution` in `[start, end)` per step of
/// `step`: (step index, means of the stored points, with `cpu_percent`
/// already the mean over workers).
pub async fn fleet_points(
    db: &Db,
    resolution: i64,
    start: i64,
    end: i64,
    step: i64,
) -> AppResult<Vec<(i64, FleetSums)>> {
    type Row = (i64, f64, f64, f64, f64, f64, f64, f64);
    let rows: Vec<Row> = with_conn!(db.read(), |c| sqlx::query_as(
        "SELECT (at - $2) / $4 AS b, AVG(workers), SUM(cpu_percent), SUM(workers),
            AVG(memory_used), AVG(memory_total), AVG(storage_used), AVG(storage_total)
         FROM fleet_history
         WHERE step_ms = $1 AND at >= $2 AND at < $3
         GROUP BY b ORDER BY b"
    )
    .bind(resolution)
    .bind(start)
    .bind(end)
    .bind(step)
    .fetch_all(c)
    .await)?;
    Ok(rows
        .into_iter()
        .map(|(b, workers, cpu, worker_sum, mu, mt, su, st)| {
            (
                b,
                FleetSums {
                    workers,
                    cpu_percent: if worker_sum > 0.0 {
                        cpu / worker_sum
                    } else {
                        0.0
                    },
                    memory_used: mu,
                    memory_total: mt,
                    storage_used: su,
                    storage_total: st,
                },
            )
        })
        .collect())
}

/// Most marks one answer reads: one a minute for 31 days is 44,640.
pub const MAX_MARKS: i64 = 50_000;

/// A subscription's last mark before `start` and its marks in
/// `[start, end)`, oldest first.
pub async fn subscription_marks(
    db: &Db,
    id: &str,
    start: i64,
    end: i64,
) -> AppResult<(Option<SubscriptionMark>, Vec<SubscriptionMark>)> {
    let before: Option<SubscriptionMark> = with_conn!(db.read(), |c| sqlx::query_as(
        "SELECT at, status, restarts FROM subscription_history
         WHERE subscription_id = $1 AND at < $2 ORDER BY at DESC LIMIT 1"
    )
    .bind(id)
    .bind(start)
    .fetch_optional(c)
    .await)?;
    let marks: Vec<SubscriptionMark> = with_conn!(db.read(), |c| sqlx::query_as(
        "SELECT at, status, restarts FROM subscription_history
         WHERE subscription_id = $1 AND at >= $2 AND at < $3 ORDER BY at LIMIT $4"
    )
    .bind(id)
    .bind(start)
    .bind(end)
    .bind(MAX_MARKS)
    .fetch_all(c)
    .await)?;
    Ok((before, marks))
}
