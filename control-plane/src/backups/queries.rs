//! SQL of backups: destinations, customers' repository keys, backups,
//! restores, the volumes' transfers and the holds that keep a subscription
//! stopped while its volumes are copied.

use sqlx::FromRow;

use crate::{
    error::AppResult,
    store::{Db, Tx, unique_violation},
    with_conn,
};

/// A destination as stored.
#[derive(Debug, Clone, FromRow)]
pub struct DestinationRow {
    /// UUID.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// S3 endpoint URL.
    pub endpoint: String,
    /// Region.
    pub region: String,
    /// Bucket.
    pub bucket: String,
    /// Path under the bucket.
    pub prefix: String,
    /// `<access key id>\n<secret>`, sealed.
    pub credentials: String,
    /// New backups go here.
    pub is_default: bool,
    /// Unix ms.
    pub created_at: i64,
    /// A directory on the control plane's host instead of a bucket ('' for
    /// a bucket).
    pub directory: String,
}

const DESTINATION: &str =
    "id, name, endpoint, region, bucket, prefix, credentials, is_default, created_at, directory";

/// Stores a destination; the first, or one made default, becomes the only
/// default. ALREADY_EXISTS for a name in use.
pub async fn insert_destination(tx: &mut Tx, d: &DestinationRow) -> AppResult<()> {
    if d.is_default {
        with_conn!(&mut *tx, |c| sqlx::query(
            "UPDATE backup_destinations SET is_default = FALSE"
        )
        .execute(c)
        .await
        .map(|_| ()))?;
    }
    with_conn!(tx, |c| sqlx::query(
        "INSERT INTO backup_destinations (id, name, endpoint, region, bucket, prefix, credentials,
            is_default, created_at, directory) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
    )
    .bind(&d.id)
    .bind(&d.name)
    .bind(&d.endpoint)
    .bind(&d.region)
    .bind(&d.bucket)
    .bind(&d.prefix)
    .bind(&d.credentials)
    .bind(d.is_default)
    .bind(d.created_at)
    .bind(&d.directory)
    .execute(c)
    .await
    .map(|_| ()))
    .map_err(unique_violation("a backup destination of this name exists"))
}

/// How many destinations there are.
pub async fn count_destinations(tx: &mut Tx) -> AppResult<i64> {
    Ok(with_conn!(tx, |c| sqlx::query_scalar(
        "SELECT COUNT(*) FROM backup_destinations"
    )
    .fetch_one(c)
    .await)?)
}

/// Every destination, oldest first.
pub async fn destinations(db: &Db) -> AppResult<Vec<DestinationRow>> {
    Ok(with_conn!(db.read(), |c| sqlx::query_as(&format!(
        "SELECT {DESTINATION} FROM backup_destinations ORDER BY created_at, id"
    ))
    .fetch_all(c)
    .await)?)
}

/// Destination `id`, or the default one when `id` is empty.
pub async fn destination(db: &Db, id: &str) -> AppResult<Option<DestinationRow>> {
    Ok(with_conn!(db.read(), |c| sqlx::query_as(&format!(
        "SELECT {DESTINATION} FROM backup_destinations
         WHERE ($1 = '' AND is_default) OR id = $1"
    ))
    .bind(id)
    .fetch_optional(c)
    .await)?)
}

/// The sealed password of `user`'s repository at `destination`, and the
/// id of the key it opens ('' until the recovery key is added: `recovery.rs`).
pub async fn key(db: &Db, user: &str, destination: &str) -> AppResult<Option<(String, String)>> {
    Ok(with_conn!(db.read(), |c| sqlx::query_as(
        "SELECT password, key_hint FROM backup_keys WHERE user_id = $1 AND destination_id = $2"
    )
    .bind(user)
    .bind(destination)
    .fetch_optional(c)
    .await)?)
}

/// Stores `user`'s sealed password at `destination` unless one exists
/// (another call made it first); the one stored.
pub async fn insert_key(
    tx: &mut Tx,
    user: &str,
    destination: &str,
    sealed: &str,
    at: i64,
) -> AppResult<String> {
    with_conn!(&mut *tx, |c| sqlx::query(
        "INSERT INTO backup_keys (user_id, destination_id, password, created_at)
         VALUES ($1, $2, $3, $4) ON CONFLICT (user_id, destination_id) DO NOTHING"
    )
    .bind(user)
    .bind(destination)
    .bind(sealed)
    .bind(at)
    .execute(c)
    .await
    .map(|_| ()))?;
    Ok(with_conn!(tx, |c| sqlx::query_scalar(
        "SELECT password FROM backup_keys WHERE user_id = $1 AND destination_id = $2"
    )
    .bind(user)
    .bind(destination)
    .fetch_one(c)
    .await)?)
}

/// A backup or a restore: the rows share their shape.
#[derive(Debug, Clone, FromRow)]
pub struct JobRow {
    /// UUID.
    pub id: String,
    /// The backup's subscription, or the one restored into.
    pub subscription_id: String,
    /// The owner.
    pub user_id: String,
    /// PENDING, RUNNING, COMPLETE or FAILED.
    pub status: String,
    /// Why.
    pub reason: String,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms the copies started, 0 before.
    pub started_at: i64,
    /// Unix ms, 0 before the end.
    pub finished_at: i64,
}

/// A backup as stored.
#[derive(Debug, Clone, FromRow)]
pub struct BackupRow {
    /// What it shares with a restore.
    #[sqlx(flatten)]
    pub job: JobRow,
    /// The subscription's name then.
    pub subscription_name: String,
    /// Where it is stored.
    pub destination_id: String,
    /// The catalog version the subscription ran.
    pub service_version: String,
    /// What rebuilds the subscription, sealed.
    pub manifest: String,
    /// MANUAL or SCHEDULE.
    pub trigger_kind: String,
    /// What follows it once it completes: '', UPGRADE or DELETE.
    pub then_action: String,
    /// The version an UPGRADE goes to.
    pub then_version: String,
    /// Unix ms the follow-up was done, 0 before.
    pub then_done_at: i64,
    /// The id of its record's snapshot in the repository ('' before it is
    /// stored: `recovery.rs`).
    pub manifest_snapshot: String,
    /// An imported backup's repository path segment ('' for a backup
    /// taken here: its owner's id).
    pub repository_user: String,
}

impl BackupRow {
    /// The path segment of its repository at its destination.
    pub fn repository_user(&self) -> &str {
        if self.repository_user.is_empty() {
            &self.job.user_id
        } else {
            &self.repository_user
        }
    }
}

const BACKUP: &str = "id, subscription_id, user_id, status, reason, created_at, started_at, \
    finished_at, subscription_name, destination_id, service_version, manifest, trigger_kind, \
    then_action, then_version, then_done_at, manifest_snapshot, repository_user";

/// A restore as stored.
#[derive(Debug, Clone, FromRow)]
pub struct RestoreRow {
    /// What it shares with a backup.
    #[sqlx(flatten)]
    pub job: JobRow,
    /// The backup restored.
    pub backup_id: String,
    /// A restore drill into a scratch subscription.
    pub drill: bool,
}

const RESTORE: &str = "id, subscription_id, user_id, status, reason, created_at, started_at, \
    finished_at, backup_id, drill";

/// Stores a new backup.
pub async fn insert_backup(tx: &mut Tx, b: &BackupRow) -> AppResult<()> {
    with_conn!(tx, |c| sqlx::query(
        "INSERT INTO backups (id, subscription_id, subscription_name, user_id, destination_id,
            service_version, manifest, status, reason, created_at, trigger_kind, then_action,
            then_version)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
    )
    .bind(&b.job.id)
    .bind(&b.job.subscription_id)
    .bind(&b.subscription_name)
    .bind(&b.job.user_id)
    .bind(&b.destination_id)
    .bind(&b.service_version)
    .bind(&b.manifest)
    .bind(&b.job.status)
    .bind(&b.job.reason)
    .bind(b.job.created_at)
    .bind(&b.trigger_kind)
    .bind(&b.then_action)
    .bind(&b.then_version)
    .execute(c)
    .await
    .map(|_| ()))?;
    Ok(())
}

/// Stores a new restore.
pub async fn insert_restore(tx: &mut Tx, r: &RestoreRow) -> AppResult<()> {
    with_conn!(tx, |c| sqlx::query(
        "INSERT INTO restores (id, backup_id, subscription_id, user_id, status, reason, created_at,
            drill)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
    )
    .bind(&r.job.id)
    .bind(&r.backup_id)
    .bind(&r.job.subscription_id)
    .bind(&r.job.user_id)
    .bind(&r.job.status)
    .bind(&r.job.reason)
    .bind(r.job.created_at)
    .bind(r.drill)
    .execute(c)
    .await
    .map(|_| ()))?;
    Ok(())
}

/// Backup `id`.
pub async fn backup(db: &Db, id: &str) -> AppResult<Option<BackupRow>> {
    Ok(with_conn!(db.read(), |c| sqlx::query_as(&format!(
        "SELECT {BACKUP} FROM backups WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(c)
    .await)?)
}

/// Restore `id`.
pub async fn restore(db: &Db, id: &str) -> AppResult<Option<RestoreRow>> {
    Ok(with_conn!(db.read(), |c| sqlx::query_as(&format!(
        "SELECT {RESTORE} FROM restores WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(c)
    .await)?)
}

/// Backups, newest first, at most 500: of `user` (empty: everyone's) and
/// of `subscription` (empty: all).
pub async fn backups(db: &Db, user: &str, subscription: &str) -> AppResult<Vec<BackupRow>> {
    Ok(with_conn!(db.read(), |c| sqlx::query_as(&format!(
        "SELECT {BACKUP} FROM backups
         WHERE ($1 = '' OR user_id = $1) AND ($2 = '' OR subscription_id = $2)
         ORDER BY created_at DESC, id DESC LIMIT 500"
    ))
    .bind(user)
    .bind(subscription)
    .fetch_all(c)
    .await)?)
}

/// Backups and restores not ended, oldest first: what the runner drives.
pub async fn active(db: &Db) -> AppResult<(Vec<BackupRow>, Vec<RestoreRow>)> {
    let b = with_conn!(db.read(), |c| sqlx::query_as(&format!(
        "SELECT {BACKUP} FROM backups WHERE status IN ('PENDING', 'RUNNING')
         ORDER BY created_at, id"
    ))
    .fetch_all(c)
    .await)?;
    let r = with_conn!(db.read(), |c| sqlx::query_as(&format!(
        "SELECT {RESTORE} FROM restores WHERE status IN ('PENDING', 'RUNNING')
         ORDER BY created_at, id"
    ))
    .fetch_all(c)
    .await)?;
    Ok((b, r))
}

/// Which table a job's row is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Job {
    /// `backups`.
    Backup,
    /// `restores`.
    Restore,
}

impl Job {
    fn table(self) -> &'static str {
        match self {
            Job::Backup => "backups",
            Job::Restore => "restores",
        }
    }
}

/// Moves job `id` from status `was` to `status` with `reason`, setting
/// `started_at`/`finished_at` as the status says; whether it was in `was`.
pub async fn set_status(
    tx: &mut Tx,
    job: Job,
    id: &str,
    was: &str,
    status: &str,
    reason: &str,
    at: i64,
) -> AppResult<bool> {
    let table = job.table();
    let n = with_conn!(tx, |c| sqlx::query(&format!(
        "UPDATE {table} SET status = $3, reason = $4,
            started_at = CASE WHEN $3 = 'RUNNING' THEN $5 ELSE started_at END,
            finished_at = CASE WHEN $3 IN ('COMPLETE', 'FAILED') THEN $5 ELSE finished_at END
         WHERE id = $1 AND status = $2"
    ))
    .bind(id)
    .bind(was)
    .bind(status)
    .bind(reason)
    .bind(at)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

/// Whether subscription `sub` has a backup or a restore under way.
pub async fn busy(tx: &mut Tx, sub: &str) -> AppResult<bool> {
    crate::subscriptions::queries::copying(tx, sub).await
}

/// One volume's copy as stored.
#[derive(Debug, Clone, FromRow)]
pub struct TransferRow {
    /// UUID.
    pub id: String,
    /// The backup's or restore's id.
    pub job_id: String,
    /// BACKUP or RESTORE.
    pub kind: String,
    /// The claim's name.
    pub claim: String,
    /// The worker whose agent copies it.
    pub worker_id: String,
    /// The volume's directory on the node.
    pub volume_path: String,
    /// PENDING, RUNNING, DONE or FAILED.
    pub state: String,
    /// The snapshot written (backup) or read (restore).
    pub snapshot_id: String,
    /// Progress.
    pub bytes_done: i64,
    /// Size, 0 while unknown.
    pub bytes_total: i64,
    /// Estimate, -1 when unknown.
    pub seconds_remaining: i64,
    /// What a finished backup uploaded.
    pub bytes_added: i64,
    /// Why it failed.
    pub error: String,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms of the last report.
    pub updated_at: i64,
}

const TRANSFER: &str = "id, job_id, kind, claim, worker_id, volume_path, state, snapshot_id, \
    bytes_done, bytes_total, seconds_remaining, bytes_added, error, created_at, updated_at";

/// Stores a new transfer.
pub async fn insert_transfer(tx: &mut Tx, t: &TransferRow) -> AppResult<()> {
    with_conn!(tx, |c| sqlx::query(
        "INSERT INTO volume_transfers (id, job_id, kind, claim, worker_id, volume_path, state,
            snapshot_id, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)"
    )
    .bind(&t.id)
    .bind(&t.job_id)
    .bind(&t.kind)
    .bind(&t.claim)
    .bind(&t.worker_id)
    .bind(&t.volume_path)
    .bind(&t.state)
    .bind(&t.snapshot_id)
    .bind(t.created_at)
    .execute(c)
    .await
    .map(|_| ()))?;
    Ok(())
}

/// The transfers of job `job`, by claim.
pub async fn transfers_of(db: &Db, job: &str) -> AppResult<Vec<TransferRow>> {
    Ok(with_conn!(db.read(), |c| sqlx::query_as(&format!(
        "SELECT {TRANSFER} FROM volume_transfers WHERE job_id = $1 ORDER BY claim, id"
    ))
    .bind(job)
    .fetch_all(c)
    .await)?)
}

/// Worker `worker`'s transfers not ended, oldest first.
pub async fn open_transfers_of_worker(db: &Db, worker: &str) -> AppResult<Vec<TransferRow>> {
    Ok(with_conn!(db.read(), |c| sqlx::query_as(&format!(
        "SELECT {TRANSFER} FROM volume_transfers
         WHERE worker_id = $1 AND state IN ('PENDING', 'RUNNING') ORDER BY created_at, id"
    ))
    .bind(worker)
    .fetch_all(c)
    .await)?)
}

/// How many transfers `worker` has open (pending or running) into
/// `user`'s repository at destination `dest`, and how many of them write
/// it: a backup's or a forget's (their job is the backup) write, a
/// restore's or a drill check's (their job is a restore of a backup
/// there) read.
pub async fn worker_transfers_into(
    db: &Db,
    worker: &str,
    user: &str,
    dest: &str,
) -> AppResult<(i64, i64)> {
    Ok(with_conn!(db.read(), |c| {
        sqlx::query_as(
        "SELECT COUNT(*), COALESCE(SUM(CASE WHEN t.kind IN ('BACKUP', 'FORGET') THEN 1 ELSE 0 END), 0)
         FROM volume_transfers t
         LEFT JOIN restores r ON t.kind IN ('RESTORE', 'CHECK') AND r.id = t.job_id
         JOIN backups b ON b.id = CASE WHEN t.kind IN ('BACKUP', 'FORGET') THEN t.job_id ELSE r.backup_id END
         WHERE t.worker_id = $1 AND t.state IN ('PENDING', 'RUNNING')
           AND CASE WHEN b.repository_user = '' THEN b.user_id ELSE b.repository_user END = $2
           AND b.destination_id = $3"
    )
    .bind(worker)
    .bind(user)
    .bind(dest)
    .fetch_one(c)
    .await
    })?)
}

/// Transfer `id` if it is `worker`'s.
pub async fn transfer_of_worker(db: &Db, id: &str, worker: &str) -> AppResult<Option<TransferRow>> {
    Ok(with_conn!(db.read(), |c| sqlx::query_as(&format!(
        "SELECT {TRANSFER} FROM volume_transfers WHERE id = $1 AND worker_id = $2"
    ))
    .bind(id)
    .bind(worker)
    .fetch_optional(c)
    .await)?)
}

/// A report's change to a transfer.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// RUNNING, DONE or FAILED.
    pub state: String,
    /// Progress.
    pub bytes_done: i64,
    /// Size.
    pub bytes_total: i64,
    /// Estimate.
    pub seconds_remaining: i64,
    /// The snapshot written (a finished backup).
    pub snapshot_id: String,
    /// What it uploaded.
    pub bytes_added: i64,
    /// Why it failed.
    pub error: String,
}

/// Records report `r` on transfer `id` unless it already ended; whether it
/// was written.
pub async fn report(db: &Db, id: &str, r: &Report, at: i64) -> AppResult<bool> {
    let mut tx = db.begin().await?;
    let n = with_conn!(&mut tx, |c| sqlx::query(
        "UPDATE volume_transfers SET state = $2, bytes_done = $3, bytes_total = $4,
            seconds_remaining = $5,
            snapshot_id = CASE WHEN $6 = '' THEN snapshot_id ELSE $6 END,
            bytes_added = $7, error = $8, updated_at = $9
         WHERE id = $1 AND state IN ('PENDING', 'RUNNING')"
    )
    .bind(id)
    .bind(&r.state)
    .bind(r.bytes_done)
    .bind(r.bytes_total)
    .bind(r.seconds_remaining)
    .bind(&r.snapshot_id)
    .bind(r.bytes_added)
    .bind(&r.error)
    .bind(at)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    tx.commit().await?;
    Ok(n == 1)
}

/// Ends job `job`'s transfers not ended as FAILED with `error` (the job
/// failed or was given up).
pub async fn fail_open_transfers(tx: &mut Tx, job: &str, error: &str, at: i64) -> AppResult<()> {
    with_conn!(tx, |c| sqlx::query(
        "UPDATE volume_transfers SET state = 'FAILED', error = $2, updated_at = $3
         WHERE job_id = $1 AND state IN ('PENDING', 'RUNNING')"
    )
    .bind(job)
    .bind(error)
    .bind(at)
    .execute(c)
    .await
    .map(|_| ()))?;
    Ok(())
}

/// Holds subscription `sub` stopped for job `job`, but for the components
/// `live` (comma-separated) names; false when another job holds it.
pub async fn hold(
    tx: &mut Tx,
    sub: &str,
    job: &str,
    reason: &str,
    live: &str,
    at: i64,
) -> AppResult<bool> {
    with_conn!(&mut *tx, |c| sqlx::query(
        "INSERT INTO subscription_holds (subscription_id, job_id, reason, created_at, live)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (subscription_id) DO NOTHING"
    )
    .bind(sub)
    .bind(job)
    .bind(reason)
    .bind(at)
    .bind(live)
    .execute(c)
    .await
    .map(|_| ()))?;
    let holder: Option<String> = with_conn!(tx, |c| sqlx::query_scalar(
        "SELECT job_id FROM subscription_holds WHERE subscription_id = $1"
    )
    .bind(sub)
    .fetch_optional(c)
    .await)?;
    Ok(holder.as_deref() == Some(job))
}

/// Releases job `job`'s hold on `sub`; whether there was one.
pub async fn release(tx: &mut Tx, sub: &str, job: &str) -> AppResult<bool> {
    let n = with_conn!(tx, |c| sqlx::query(
        "DELETE FROM subscription_holds WHERE subscription_id = $1 AND job_id = $2"
    )
    .bind(sub)
    .bind(job)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

/// Bumps subscription `sub`'s generation, so the reconciler applies its
/// objects again (a hold taken or released changes its replicas).
pub async fn touch_subscription(tx: &mut Tx, sub: &str, at: i64) -> AppResult<()> {
    with_conn!(tx, |c| sqlx::query(
        "UPDATE subscriptions SET generation = generation + 1, updated_at = $2 WHERE id = $1"
    )
    .bind(sub)
    .bind(at)
    .execute(c)
    .await
    .map(|_| ()))?;
    Ok(())
}

/// A subscription's daily backup as stored.
#[derive(Debug, Clone, FromRow)]
pub struct ScheduleRow {
    /// The subscription.
    pub subscription_id: String,
    /// Its owner.
    pub user_id: String,
    /// UTC hour.
    pub hour: i64,
    /// Minute.
    pub minute: i64,
    /// Days kept.
    pub keep_daily: i64,
    /// Weeks kept.
    pub keep_weekly: i64,
    /// Unix ms of the next run.
    pub next_at: i64,
    /// Scheduled backups failed since the last complete one.
    pub failures_in_a_row: i64,
    /// A restore drill every week.
    pub weekly_drill: bool,
    /// Unix ms of the last weekly drill's start.
    pub last_drill_at: i64,
    /// Unix ms.
    pub updated_at: i64,
}

const SCHEDULE: &str = "subscription_id, user_id, hour, minute, keep_daily, keep_weekly, next_at, \
    failures_in_a_row, weekly_drill, last_drill_at, updated_at";

/// Stores (or replaces) a schedule, keeping its count of failures.
pub async fn upsert_schedule(tx: &mut Tx, s: &ScheduleRow) -> AppResult<()> {
    with_conn!(tx, |c| sqlx::query(
        "INSERT INTO backup_schedules (subscription_id, user_id, hour, minute, keep_daily,
            keep_weekly, next_at, failures_in_a_row, weekly_drill, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $9, $8)
         ON CONFLICT (subscription_id) DO UPDATE SET hour = $3, minute = $4, keep_daily = $5,
            keep_weekly = $6, next_at = $7, updated_at = $8, weekly_drill = $9"
    )
    .bind(&s.subscription_id)
    .bind(&s.user_id)
    .bind(s.hour)
    .bind(s.minute)
    .bind(s.keep_daily)
    .bind(s.keep_weekly)
    .bind(s.next_at)
    .bind(s.updated_at)
    .bind(s.weekly_drill)
    .execute(c)
    .await
    .map(|_| ()))?;
    Ok(())
}

/// Removes subscription `sub`'s schedule.
pub async fn delete_schedule(tx: &mut Tx, sub: &str) -> AppResult<()> {
    with_conn!(tx, |c| sqlx::query(
        "DELETE FROM backup_schedules WHERE subscription_id = $1"
    )
    .bind(sub)
    .execute(c)
    .await
    .map(|_| ()))?;
    Ok(())
}

/// Subscription `sub`'s schedule.
pub async fn schedule(db: &Db, sub: &str) -> AppResult<Option<ScheduleRow>> {
    Ok(with_conn!(db.read(), |c| sqlx::query_as(&format!(
        "SELECT {SCHEDULE} FROM backup_schedules WHERE subscription_id = $1"
    ))
    .bind(sub)
    .fetch_optional(c)
    .await)?)
}

/// Schedules due at `now`.
pub async fn due_schedules(db: &Db, now: i64) -> AppResult<Vec<ScheduleRow>> {
    Ok(with_conn!(db.read(), |c| sqlx::query_as(&format!(
        "SELECT {SCHEDULE} FROM backup_schedules WHERE next_at <= $1 ORDER BY next_at LIMIT 100"
    ))
    .bind(now)
    .fetch_all(c)
    .await)?)
}

/// Moves schedule `sub` from run `was` to `next`; whether this call did
/// (another replica may have).
pub async fn claim_run(db: &Db, sub: &str, was: i64, next: i64) -> AppResult<bool> {
    let mut tx = db.begin().await?;
    let n = with_conn!(&mut tx, |c| sqlx::query(
        "UPDATE backup_schedules SET next_at = $3 WHERE subscription_id = $1 AND next_at = $2"
    )
    .bind(sub)
    .bind(was)
    .bind(next)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    tx.commit().await?;
    Ok(n == 1)
}

/// Records a scheduled backup's end on its schedule: a failure adds one to
/// the failures in a row (answered), a success resets them.
pub async fn scheduled_outcome(tx: &mut Tx, sub: &str, failed: bool) -> AppResult<i64> {
    let n: Option<i64> = with_conn!(tx, |c| sqlx::query_scalar(
        "UPDATE backup_schedules
         SET failures_in_a_row = CASE WHEN $2 THEN failures_in_a_row + 1 ELSE 0 END
         WHERE subscription_id = $1 RETURNING failures_in_a_row"
    )
    .bind(sub)
    .bind(failed)
    .fetch_optional(c)
    .await)?;
    Ok(n.unwrap_or(0))
}

/// Subscription `sub`'s complete scheduled backups: (id, finished at).
pub async fn scheduled_complete(db: &Db, sub: &str) -> AppResult<Vec<(String, i64)>> {
    Ok(with_conn!(db.read(), |c| sqlx::query_as(
        "SELECT id, finished_at FROM backups
         WHERE subscription_id = $1 AND trigger_kind = 'SCHEDULE' AND status = 'COMPLETE'"
    )
    .bind(sub)
    .fetch_all(c)
    .await)?)
}

/// Whether user `user` has a backup or restore under way, or a forget.
pub async fn user_busy(db: &Db, user: &str) -> AppResult<bool> {
    let n: i64 = with_conn!(db.read(), |c| sqlx::query_scalar(
        "SELECT (SELECT COUNT(*) FROM backups WHERE user_id = $1
                    AND status IN ('PENDING', 'RUNNING', 'EXPIRING'))
              + (SELECT COUNT(*) FROM restores WHERE user_id = $1
                    AND status IN ('PENDING', 'RUNNING'))"
    )
    .bind(user)
    .fetch_one(c)
    .await)?;
    Ok(n > 0)
}

/// Whether user `user` has a forget under way (their repository is then
/// locked exclusively).
pub async fn user_forgetting(db: &Db, user: &str) -> AppResult<bool> {
    let n: i64 = with_conn!(db.read(), |c| sqlx::query_scalar(
        "SELECT COUNT(*) FROM backups WHERE user_id = $1 AND status = 'EXPIRING'"
    )
    .bind(user)
    .fetch_one(c)
    .await)?;
    Ok(n > 0)
}

/// Backups being forgotten.
pub async fn expiring(db: &Db) -> AppResult<Vec<BackupRow>> {
    Ok(with_conn!(db.read(), |c| sqlx::query_as(&format!(
        "SELECT {BACKUP} FROM backups WHERE status = 'EXPIRING' ORDER BY created_at, id"
    ))
    .fetch_all(c)
    .await)?)
}

/// Deletes backup `id` and its transfers (it was forgotten).
pub async fn delete_backup(tx: &mut Tx, id: &str) -> AppResult<()> {
    with_conn!(&mut *tx, |c| sqlx::query(
        "DELETE FROM volume_transfers WHERE job_id = $1"
    )
    .bind(id)
    .execute(c)
    .await
    .map(|_| ()))?;
    with_conn!(tx, |c| sqlx::query("DELETE FROM backups WHERE id = $1")
        .bind(id)
        .execute(c)
        .await
        .map(|_| ()))?;
    Ok(())
}

/// One subscription's backups summed (ListBackupOverview).
#[derive(Debug, Clone, FromRow)]
pub struct OverviewRow {
    /// The subscription.
    pub subscription_id: String,
    /// Its name at its newest backup.
    pub subscription_name: String,
    /// Its owner.
    pub user_id: String,
    /// Complete backups.
    pub complete: i64,
    /// Bytes their copies uploaded.
    pub bytes_stored: i64,
    /// Unix ms of the newest complete one's end, 0 if none.
    pub last_success_at: i64,
}

/// Every subscription with backups, summed.
pub async fn overview(db: &Db) -> AppResult<Vec<OverviewRow>> {
    Ok(with_conn!(db.read(), |c| sqlx::query_as(
        "SELECT b.subscription_id, MAX(b.subscription_name) AS subscription_name,
                MAX(b.user_id) AS user_id,
                CAST(SUM(CASE WHEN b.status = 'COMPLETE' THEN 1 ELSE 0 END) AS BIGINT) AS complete,
                CAST(COALESCE(SUM(CASE WHEN b.status = 'COMPLETE'
                    THEN (SELECT COALESCE(SUM(t.bytes_added), 0) FROM volume_transfers t
                          WHERE t.job_id = b.id) ELSE 0 END), 0) AS BIGINT) AS bytes_stored,
                COALESCE(MAX(CASE WHEN b.status = 'COMPLETE' THEN b.finished_at ELSE 0 END), 0)
                    AS last_success_at
         FROM backups b GROUP BY b.subscription_id ORDER BY 2 LIMIT 5000"
    )
    .fetch_all(c)
    .await)?)
}

/// The newest backup's status of subscription `sub`.
pub async fn last_status(db: &Db, sub: &str) -> AppResult<Option<String>> {
    Ok(with_conn!(db.read(), |c| sqlx::query_scalar(
        "SELECT status FROM backups WHERE subscription_id = $1
         ORDER BY created_at DESC, id DESC LIMIT 1"
    )
    .bind(sub)
    .fetch_optional(c)
    .await)?)
}

/// Every schedule (the overview's).
pub async fn schedules(db: &Db) -> AppResult<Vec<ScheduleRow>> {
    Ok(with_conn!(db.read(), |c| sqlx::query_as(&format!(
        "SELECT {SCHEDULE} FROM backup_schedules LIMIT 5000"
    ))
    .fetch_all(c)
    .await)?)
}

/// Bytes stored by user `user`'s complete backups (what their uploads
/// added): counted against their storage limit.
pub async fn user_stored_bytes(db: &Db, user: &str) -> AppResult<i64> {
    let n: Option<i64> = with_conn!(db.read(), |c| sqlx::query_scalar(
        crate::subscriptions::limits::BACKUP_BYTES
    )
    .bind(user)
    .fetch_one(c)
    .await)?;
    Ok(n.unwrap_or(0))
}

/// Schedules whose weekly drill is due (its last started before
/// `before`).
pub async fn drills_due(db: &Db, before: i64) -> AppResult<Vec<ScheduleRow>> {
    Ok(with_conn!(db.read(), |c| sqlx::query_as(&format!(
        "SELECT {SCHEDULE} FROM backup_schedules WHERE weekly_drill AND last_drill_at < $1
         ORDER BY last_drill_at LIMIT 100"
    ))
    .bind(before)
    .fetch_all(c)
    .await)?)
}

/// Moves schedule `sub`'s last drill from `was` to `now`; whether this call
/// did (one replica starts it).
pub async fn claim_drill(db: &Db, sub: &str, was: i64, now: i64) -> AppResult<bool> {
    let mut tx = db.begin().await?;
    let n = with_conn!(&mut tx, |c| sqlx::query(
        "UPDATE backup_schedules SET last_drill_at = $3
         WHERE subscription_id = $1 AND last_drill_at = $2"
    )
    .bind(sub)
    .bind(was)
    .bind(now)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    tx.commit().await?;
    Ok(n == 1)
}

/// Subscription `sub`'s newest complete backup.
pub async fn newest_complete(db: &Db, sub: &str) -> AppResult<Option<BackupRow>> {
    Ok(with_conn!(db.read(), |c| sqlx::query_as(&format!(
        "SELECT {BACKUP} FROM backups WHERE subscription_id = $1 AND status = 'COMPLETE'
         ORDER BY finished_at DESC, id DESC LIMIT 1"
    ))
    .bind(sub)
    .fetch_optional(c)
    .await)?)
}

/// Sets restore `id`'s reason while it runs.
pub async fn set_reason(tx: &mut Tx, id: &str, reason: &str) -> AppResult<()> {
    with_conn!(tx, |c| sqlx::query(
        "UPDATE restores SET reason = $2 WHERE id = $1"
    )
    .bind(id)
    .bind(reason)
    .execute(c)
    .await
    .map(|_| ()))?;
    Ok(())
}

/// Ended backups whose follow-up (an upgrade, a deletion) is not done yet.
pub async fn follow_ups(db: &Db) -> AppResult<Vec<BackupRow>> {
    Ok(with_conn!(db.read(), |c| sqlx::query_as(&format!(
        "SELECT {BACKUP} FROM backups
         WHERE then_action <> '' AND then_done_at = 0 AND status IN ('COMPLETE', 'FAILED')
         LIMIT 100"
    ))
    .fetch_all(c)
    .await)?)
}

/// Claims backup `id`'s follow-up for this replica (unless another
/// claimed it within `stale_ms`); whether this call did.
pub async fn claim_follow_up(db: &Db, id: &str, now: i64, stale_ms: i64) -> AppResult<bool> {
    let mut tx = db.begin().await?;
    let n = with_conn!(&mut tx, |c| sqlx::query(
        "UPDATE backups SET then_claimed_at = $2
         WHERE id = $1 AND then_done_at = 0 AND then_claimed_at < $3"
    )
    .bind(id)
    .bind(now)
    .bind(now - stale_ms)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    tx.commit().await?;
    Ok(n == 1)
}

/// Drops this replica's claim on backup `id`'s follow-up (it failed for a
/// reason that may pass: the next pass tries again).
pub async fn release_follow_up(db: &Db, id: &str) -> AppResult<()> {
    let mut tx = db.begin().await?;
    with_conn!(&mut tx, |c| sqlx::query(
        "UPDATE backups SET then_claimed_at = 0 WHERE id = $1 AND then_done_at = 0"
    )
    .bind(id)
    .execute(c)
    .await
    .map(|_| ()))?;
    tx.commit().await?;
    Ok(())
}

/// Records that backup `id`'s follow-up was done, with the backup's new
/// reason (what became of it); false when another replica did it first.
pub async fn follow_up_done(db: &Db, id: &str, reason: &str, at: i64) -> AppResult<bool> {
    let mut tx = db.begin().await?;
    let done = with_conn!(&mut tx, |c| sqlx::query(
        "UPDATE backups SET then_done_at = $2, reason = $3 WHERE id = $1 AND then_done_at = 0"
    )
    .bind(id)
    .bind(at)
    .bind(reason)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    tx.commit().await?;
    Ok(done == 1)
}

/// Unused, unexpired download links one customer may hold.
const MAX_OPEN_DOWNLOADS: i64 = 20;

/// Stores a download link (the token's hash), dropping expired ones;
/// RESOURCE_EXHAUSTED past [`MAX_OPEN_DOWNLOADS`] of `user`'s.
pub async fn insert_download(
    db: &Db,
    token_hash: &str,
    backup: &str,
    claim: &str,
    user: &str,
    now: i64,
    expires_at: i64,
) -> AppResult<()> {
    let mut tx = db.begin().await?;
    with_conn!(&mut tx, |c| sqlx::query(
        "DELETE FROM backup_downloads WHERE expires_at < $1"
    )
    .bind(now)
    .execute(c)
    .await
    .map(|_| ()))?;
    let open: i64 = with_conn!(&mut tx, |c| sqlx::query_scalar(
        "SELECT COUNT(*) FROM backup_downloads WHERE user_id = $1"
    )
    .bind(user)
    .fetch_one(c)
    .await)?;
    if open >= MAX_OPEN_DOWNLOADS {
        return Err(crate::error::AppError::ResourceExhausted {
            message: format!(
                "{MAX_OPEN_DOWNLOADS} download links are open already; use one or wait for them \
                 to expire"
            ),
            retry_after: Some(std::time::Duration::from_secs(60)),
        });
    }
    with_conn!(&mut tx, |c| sqlx::query(
        "INSERT INTO backup_downloads (token_hash, backup_id, claim, user_id, expires_at)
         VALUES ($1, $2, $3, $4, $5)"
    )
    .bind(token_hash)
    .bind(backup)
    .bind(claim)
    .bind(user)
    .bind(expires_at)
    .execute(c)
    .await
    .map(|_| ()))?;
    tx.commit().await?;
    Ok(())
}

/// Uses the download link whose token hashes to `token_hash`: its backup
/// and claim, once, if it has not expired at `now`.
pub async fn take_download(
    db: &Db,
    token_hash: &str,
    now: i64,
) -> AppResult<Option<(String, String, String)>> {
    let mut tx = db.begin().await?;
    let row = with_conn!(&mut tx, |c| sqlx::query_as(
        "DELETE FROM backup_downloads WHERE token_hash = $1 AND expires_at >= $2
         RETURNING backup_id, claim, user_id"
    )
    .bind(token_hash)
    .bind(now)
    .fetch_optional(c)
    .await)?;
    tx.commit().await?;
    Ok(row)
}

/// The download link whose token hashes to `token_hash`, if unused and
/// unexpired at `now`: its backup, claim and owner.
pub async fn peek_download(
    db: &Db,
    token_hash: &str,
    now: i64,
) -> AppResult<Option<(String, String, String)>> {
    Ok(with_conn!(db.read(), |c| sqlx::query_as(
        "SELECT backup_id, claim, user_id FROM backup_downloads
         WHERE token_hash = $1 AND expires_at >= $2"
    )
    .bind(token_hash)
    .bind(now)
    .fetch_optional(c)
    .await)?)
}

/// Whether `user`'s repository at `destination` was created.
pub async fn key_initialized(db: &Db, user: &str, destination: &str) -> AppResult<bool> {
    let found: Option<bool> = with_conn!(db.read(), |c| sqlx::query_scalar(
        "SELECT initialized FROM backup_keys WHERE user_id = $1 AND destination_id = $2"
    )
    .bind(user)
    .bind(destination)
    .fetch_optional(c)
    .await)?;
    Ok(found.unwrap_or(false))
}

/// Claims the creation of `user`'s repository at `destination` for this
/// replica (unless another claimed it in the last `stale_ms`); whether
/// this call did.
pub async fn claim_init(
    db: &Db,
    user: &str,
    destination: &str,
    now: i64,
    stale_ms: i64,
) -> AppResult<bool> {
    let mut tx = db.begin().await?;
    let n = with_conn!(&mut tx, |c| sqlx::query(
        "UPDATE backup_keys SET init_claimed_at = $3
         WHERE user_id = $1 AND destination_id = $2 AND initialized = FALSE
            AND init_claimed_at < $4"
    )
    .bind(user)
    .bind(destination)
    .bind(now)
    .bind(now - stale_ms)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    tx.commit().await?;
    Ok(n == 1)
}

/// Records that `user`'s repository at `destination` exists.
pub async fn key_created(db: &Db, user: &str, destination: &str) -> AppResult<()> {
    let mut tx = db.begin().await?;
    with_conn!(&mut tx, |c| sqlx::query(
        "UPDATE backup_keys SET initialized = TRUE WHERE user_id = $1 AND destination_id = $2"
    )
    .bind(user)
    .bind(destination)
    .execute(c)
    .await
    .map(|_| ()))?;
    tx.commit().await?;
    Ok(())
}

/// Drops a failed claim to create `user`'s repository at `destination`,
/// so that the next backup tries again at once.
pub async fn release_init(db: &Db, user: &str, destination: &str) -> AppResult<()> {
    let mut tx = db.begin().await?;
    with_conn!(&mut tx, |c| sqlx::query(
        "UPDATE backup_keys SET init_claimed_at = 0
         WHERE user_id = $1 AND destination_id = $2 AND initialized = FALSE"
    )
    .bind(user)
    .bind(destination)
    .execute(c)
    .await
    .map(|_| ()))?;
    tx.commit().await?;
    Ok(())
}

/// Stores a backup imported from a repository (`recovery.rs`), ended, with
/// its volumes' copies.
pub async fn insert_imported(tx: &mut Tx, b: &BackupRow, copies: &[TransferRow]) -> AppResult<()> {
    with_conn!(&mut *tx, |c| sqlx::query(
        "INSERT INTO backups (id, subscription_id, subscription_name, user_id, destination_id,
            service_version, manifest, status, reason, created_at, started_at, finished_at,
            trigger_kind, then_done_at, manifest_snapshot, repository_user)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
    )
    .bind(&b.job.id)
    .bind(&b.job.subscription_id)
    .bind(&b.subscription_name)
    .bind(&b.job.user_id)
    .bind(&b.destination_id)
    .bind(&b.service_version)
    .bind(&b.manifest)
    .bind(&b.job.status)
    .bind(&b.job.reason)
    .bind(b.job.created_at)
    .bind(b.job.started_at)
    .bind(b.job.finished_at)
    .bind(&b.trigger_kind)
    .bind(b.then_done_at)
    .bind(&b.manifest_snapshot)
    .bind(&b.repository_user)
    .execute(c)
    .await
    .map(|_| ()))
    .map_err(unique_violation(
        "a backup of this repository was imported by another call at the same time; call again",
    ))?;
    for t in copies {
        with_conn!(&mut *tx, |c| sqlx::query(
            "INSERT INTO volume_transfers (id, job_id, kind, claim, worker_id, volume_path, state,
                snapshot_id, bytes_done, bytes_total, bytes_added, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12)"
        )
        .bind(&t.id)
        .bind(&t.job_id)
        .bind(&t.kind)
        .bind(&t.claim)
        .bind(&t.worker_id)
        .bind(&t.volume_path)
        .bind(&t.state)
        .bind(&t.snapshot_id)
        .bind(t.bytes_done)
        .bind(t.bytes_total)
        .bind(t.bytes_added)
        .bind(t.created_at)
        .execute(c)
        .await
        .map(|_| ()))?;
    }
    Ok(())
}

/// Which of `ids` are backups stored here.
pub async fn existing_backups(db: &Db, ids: &[String]) -> AppResult<Vec<String>> {
    let mut found = Vec::new();
    for id in ids {
        let hit: Option<String> = with_conn!(db.read(), |c| sqlx::query_scalar(
            "SELECT id FROM backups WHERE id = $1"
        )
        .bind(id)
        .fetch_optional(c)
        .await)?;
        found.extend(hit);
    }
    Ok(found)
}

/// Complete backups taken here whose record is not stored in their
/// repository yet, and not claimed since `claimed_before`.
pub async fn records_to_store(db: &Db, claimed_before: i64) -> AppResult<Vec<BackupRow>> {
    Ok(with_conn!(db.read(), |c| sqlx::query_as(&format!(
        "SELECT {BACKUP} FROM backups
         WHERE status = 'COMPLETE' AND manifest_snapshot = '' AND repository_user = ''
           AND manifest_claimed_at < $1
         ORDER BY finished_at LIMIT 20"
    ))
    .bind(claimed_before)
    .fetch_all(c)
    .await)?)
}

/// Claims storing backup `id`'s record for this replica (unless claimed
/// since `claimed_before`); whether this call did.
pub async fn claim_record(db: &Db, id: &str, now: i64, claimed_before: i64) -> AppResult<bool> {
    let mut tx = db.begin().await?;
    let n = with_conn!(&mut tx, |c| sqlx::query(
        "UPDATE backups SET manifest_claimed_at = $2
         WHERE id = $1 AND manifest_snapshot = '' AND manifest_claimed_at < $3"
    )
    .bind(id)
    .bind(now)
    .bind(claimed_before)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    tx.commit().await?;
    Ok(n == 1)
}

/// Records that backup `id`'s record is stored as `snapshot`.
pub async fn record_stored(db: &Db, id: &str, snapshot: &str) -> AppResult<()> {
    let mut tx = db.begin().await?;
    with_conn!(&mut tx, |c| sqlx::query(
        "UPDATE backups SET manifest_snapshot = $2 WHERE id = $1 AND manifest_snapshot = ''"
    )
    .bind(id)
    .bind(snapshot)
    .execute(c)
    .await
    .map(|_| ()))?;
    tx.commit().await?;
    Ok(())
}

/// Records that `user`'s repository at `destination` has its recovery key,
/// with the id of the key its own password opens (`hint`: restic tries it
/// first).
pub async fn recovery_added(db: &Db, user: &str, destination: &str, hint: &str) -> AppResult<()> {
    let mut tx = db.begin().await?;
    with_conn!(&mut tx, |c| sqlx::query(
        "UPDATE backup_keys SET key_hint = $3 WHERE user_id = $1 AND destination_id = $2"
    )
    .bind(user)
    .bind(destination)
    .bind(hint)
    .execute(c)
    .await
    .map(|_| ()))?;
    tx.commit().await?;
    Ok(())
}

/// Whether user `user` has a complete backup taken here at `destination`
/// whose record is not stored in its repository yet.
pub async fn records_pending(db: &Db, user: &str, destination: &str) -> AppResult<bool> {
    let n: i64 = with_conn!(db.read(), |c| sqlx::query_scalar(
        "SELECT COUNT(*) FROM backups
         WHERE user_id = $1 AND destination_id = $2 AND status = 'COMPLETE'
           AND manifest_snapshot = '' AND repository_user = ''"
    )
    .bind(user)
    .bind(destination)
    .fetch_one(c)
    .await)?;
    Ok(n > 0)
}

/// The subscriptions of user `user` with a schedule.
pub async fn scheduled_subscriptions_of(db: &Db, user: &str) -> AppResult<Vec<String>> {
    Ok(with_conn!(db.read(), |c| sqlx::query_scalar(
        "SELECT subscription_id FROM backup_schedules WHERE user_id = $1"
    )
    .bind(user)
    .fetch_all(c)
    .await)?)
}

/// Who owns the backups imported here from repository `repository` at
/// `destination` (the newest's owner), if any were.
pub async fn imported_owner(
    db: &Db,
    destination: &str,
    repository: &str,
) -> AppResult<Option<String>> {
    Ok(with_conn!(db.read(), |c| sqlx::query_scalar(
        "SELECT user_id FROM backups WHERE destination_id = $1 AND repository_user = $2
         ORDER BY finished_at DESC LIMIT 1"
    )
    .bind(destination)
    .bind(repository)
    .fetch_optional(c)
    .await)?)
}
