//! The runner: drives each backup and restore not ended, one step per
//! pass, every second and whenever an agent reports or a job is asked for.
//!
//! A job moves PENDING → RUNNING → COMPLETE or FAILED. PENDING holds the
//! subscription stopped (`subscription_holds`: the reconciler renders it
//! with no replicas) and waits for its pods to be gone; then it finds each
//! claim's volume and records one transfer per volume, in the transaction
//! that makes it RUNNING (guarded by the status it was in, so with several
//! replicas one of them moves it); the agents are told. RUNNING ends when
//! every transfer is DONE (COMPLETE) or one FAILED (FAILED), or a transfer
//! went silent past `silence_timeout` (its agent is gone: FAILED). The end
//! releases the hold in the same transaction, and the pods start again.

use std::{collections::BTreeSet, time::Duration};

use minispod_proto::v1 as pb;
use prost::Message;

use super::{
    Backups,
    queries::{self, BackupRow, Job, JobRow, TransferRow},
    volumes,
};
use crate::{
    error::AppResult,
    store::{new_id, now_ms},
    subscriptions::queries as subs_db,
};

/// How often the runner looks at jobs without being woken.
const PASS: Duration = Duration::from_secs(1);
/// What an agent reports for a volume with no files: restic stores no
/// empty snapshot, and restoring it empties the volume.
pub(super) const EMPTY_SNAPSHOT: &str = "empty";
/// How long a replica's claim to create a repository stands.
const INIT_CLAIM: Duration = Duration::from_secs(120);
/// How often a waiting transfer's agent is reminded.
const REMIND: Duration = Duration::from_secs(15);

pub(super) async fn run(b: Backups) {
    let mut last_remind = std::time::Instant::now();
    loop {
        tokio::select! {
            () = b.inner.wake.notified() => {}
            () = tokio::time::sleep(PASS) => {}
        }
        let remind = last_remind.elapsed() >= REMIND;
        if remind {
            last_remind = std::time::Instant::now();
        }
        if let Err(e) = pass(&b, remind).await {
            tracing::warn!(error = %format!("{e:#}"), "backups: a pass failed; retrying");
        }
    }
}

async fn pass(b: &Backups, remind: bool) -> AppResult<()> {
    scheduled(b).await?;
    weekly_drills(b).await?;
    forgetting(b).await?;
    super::follow_up::pass(b).await?;
    super::recovery::pass(b).await?;
    let (backups, restores) = queries::active(b.db()).await?;
    for backup in backups {
        let snapshots = Vec::new();
        if let Err(e) = step(b, Job::Backup, &backup.job, &backup, snapshots, remind).await {
            tracing::warn!(backup = %backup.job.id, error = %format!("{e:#}"), "backup step failed");
        }
    }
    for restore in restores {
        let Some(source) = queries::backup(b.db(), &restore.backup_id).await? else {
            finish(
                b,
                Job::Restore,
                &restore.job,
                "FAILED",
                "its backup no longer exists",
            )
            .await?;
            continue;
        };
        if restore.drill && restore.job.status == "RUNNING" {
            if let Err(e) = follow_drill(b, &restore.job).await {
                tracing::warn!(restore = %restore.job.id, error = %format!("{e:#}"), "drill step failed");
            }
            continue;
        }
        let snapshots = queries::transfers_of(b.db(), &source.job.id).await?;
        if let Err(e) = step(b, Job::Restore, &restore.job, &source, snapshots, remind).await {
            tracing::warn!(restore = %restore.job.id, error = %format!("{e:#}"), "restore step failed");
        }
    }
    Ok(())
}

/// One step of `job` (of `kind`); `backup` is the backup taken or
/// restored, `source` a restore's backup's transfers (the snapshot of each
/// claim).
async fn step(
    b: &Backups,
    kind: Job,
    job: &JobRow,
    backup: &BackupRow,
    source: Vec<TransferRow>,
    remind: bool,
) -> AppResult<()> {
    match job.status.as_str() {
        "PENDING" => start(b, kind, job, backup, source).await,
        "RUNNING" => follow(b, kind, job, remind).await,
        _ => Ok(()),
    }
}

async fn start(
    b: &Backups,
    kind: Job,
    job: &JobRow,
    backup: &BackupRow,
    source: Vec<TransferRow>,
) -> AppResult<()> {
    let Some(sub) = subs_db::get(b.db(), &job.subscription_id).await? else {
        return finish(b, kind, job, "FAILED", "its subscription was deleted").await;
    };
    if sub.desired == "DELETED" {
        return finish(b, kind, job, "FAILED", "its subscription was deleted").await;
    }
    // The customer's repository is locked while old backups are forgotten.
    if queries::user_forgetting(b.db(), &job.user_id).await? {
        return Ok(());
    }
    let template =
        pb::ServiceTemplate::decode(sub.template.as_slice()).map_err(anyhow::Error::from)?;
    let claims = volumes::claims(&sub.name, &template);
    if claims.is_empty() {
        // Nothing on disk: the manifest is the whole backup.
        return finish(b, kind, job, "COMPLETE", "").await;
    }
    // Where each volume is, and (a restore) which snapshot goes back. A
    // claim not bound yet (a new subscription's, before its first pod)
    // is waited for, within the stop timeout.
    let waited = Duration::from_millis((now_ms() - job.created_at).max(0) as u64);
    let timeout = b.inner.settings.stop_timeout;
    let mut located = Vec::new();
    for claim in &claims {
        let snapshot = match kind {
            Job::Backup => String::new(),
            // The same component's same volume: claims are named
            // <subscription>-<component>-<volume>, and a new subscription
            // restored into has a name of its own.
            Job::Restore => match source.iter().find(|t| {
                t.state == "DONE"
                    && t.claim
                        .strip_prefix(&format!("{}-", backup.subscription_name))
                        == claim.strip_prefix(&format!("{}-", sub.name))
            }) {
                Some(t) => t.snapshot_id.clone(),
                None => {
                    return finish(
                        b,
                        kind,
                        job,
                        "FAILED",
                        &format!("the backup has no copy of the volume {claim}"),
                    )
                    .await;
                }
            },
        };
        match volumes::locate(b.inner.subs.link(), &sub.namespace, claim).await {
            Ok(v) => located.push((v, snapshot)),
            Err(volumes::Unlocated::Waiting(why)) if waited <= timeout => {
                tracing::debug!(job = %job.id, why, "waiting for a volume");
                return Ok(());
            }
            Err(volumes::Unlocated::Waiting(why) | volumes::Unlocated::Refused(why)) => {
                return finish(b, kind, job, "FAILED", &why).await;
            }
        }
    }
    // The customer's repository at the destination, created once before
    // any transfer into it is ordered (two volumes' agents creating it at
    // once would leave one unable to open it).
    if kind == Job::Backup
        && !queries::key_initialized(b.db(), &job.user_id, &backup.destination_id).await?
    {
        if !queries::claim_init(
            b.db(),
            &job.user_id,
            &backup.destination_id,
            now_ms(),
            INIT_CLAIM.as_millis() as i64,
        )
        .await?
        {
            return Ok(());
        }
        let Some(repo) = b.repository(&job.user_id, &backup.destination_id).await? else {
            return finish(b, kind, job, "FAILED", "its destination is gone").await;
        };
        // Off the runner's pass (an unreachable destination takes up to two
        // minutes to give up): the job waits, PENDING, and goes on at the
        // pass after the repository is there.
        let (b2, job2, dest) = (b.clone(), job.clone(), backup.destination_id.clone());
        tokio::spawn(async move {
            let created = b2.create_repository(&repo).await;
            let recorded = match created {
                Ok(()) => {
                    tracing::info!(user = %job2.user_id, destination = %dest, "backup repository ready");
                    queries::key_created(b2.db(), &job2.user_id, &dest).await
                }
                Err(why) => {
                    tracing::warn!(job = %job2.id, why, "a repository could not be opened or created");
                    let why = format!(
                        "the repository at the destination could not be opened or created: {why}"
                    );
                    let failed = finish(&b2, Job::Backup, &job2, "FAILED", &why).await;
                    // The next backup tries again at once.
                    failed.and(queries::release_init(b2.db(), &job2.user_id, &dest).await)
                }
            };
            if let Err(e) = recorded {
                tracing::warn!(job = %job2.id, error = %format!("{e:#}"), "recording a repository's creation failed");
            }
            b2.inner.wake.notify_one();
        });
        return Ok(());
    }
    // Hold it stopped (once), and wait for its pods to be gone: a backup
    // leaves the components its template says are copied live running; a
    // restore stops them all.
    let live: Vec<String> = match kind {
        Job::Backup => template
            .components
            .iter()
            .filter(|c| c.backup() == pb::BackupMode::Live)
            .map(|c| c.name.clone())
            .collect(),
        Job::Restore => Vec::new(),
    };
    let what = match kind {
        Job::Backup => "a backup",
        Job::Restore => "a restore",
    };
    let stopped = if live.is_empty() {
        String::new()
    } else {
        let names: Vec<&str> = template
            .components
            .iter()
            .filter(|c| !live.contains(&c.name))
            .map(|c| c.name.as_str())
            .collect();
        format!("{} ", names.join(", "))
    };
    let mut tx = b.db().begin().await?;
    let now = now_ms();
    let held = queries::hold(
        &mut tx,
        &sub.id,
        &job.id,
        &format!("{stopped}stopped for {what}; it starts again when it ends"),
        &live.join(","),
        now,
    )
    .await?;
    if !held {
        drop(tx);
        return Ok(());
    }
    queries::touch_subscription(&mut tx, &sub.id, now).await?;
    tx.commit().await?;
    b.inner.subs.enqueue_now(sub.id.clone());
    if b.inner
        .subs
        .pods_of(&sub.id)
        .iter()
        .any(|p| !live.contains(&p.component))
    {
        if waited > timeout * 2 {
            return finish(
                b,
                kind,
                job,
                "FAILED",
                &format!("its pods did not stop within {}s", timeout.as_secs()),
            )
            .await;
        }
        return Ok(());
    }
    let mut transfers = Vec::new();
    for (volume, snapshot) in located {
        transfers.push(TransferRow {
            id: new_id(),
            job_id: job.id.clone(),
            kind: match kind {
                Job::Backup => "BACKUP",
                Job::Restore => "RESTORE",
            }
            .into(),
            claim: volume.claim,
            worker_id: volume.worker_id,
            volume_path: volume.path,
            state: "PENDING".into(),
            snapshot_id: snapshot,
            bytes_done: 0,
            bytes_total: 0,
            seconds_remaining: -1,
            bytes_added: 0,
            error: String::new(),
            created_at: now_ms(),
            updated_at: now_ms(),
        });
    }
    let mut tx = b.db().begin().await?;
    let reason = match kind {
        Job::Backup => "copying its volumes",
        Job::Restore => "replacing its volumes' files",
    };
    if !queries::set_status(
        &mut tx,
        kind,
        &job.id,
        "PENDING",
        "RUNNING",
        reason,
        now_ms(),
    )
    .await?
    {
        drop(tx);
        return Ok(());
    }
    for t in &transfers {
        queries::insert_transfer(&mut tx, t).await?;
    }
    tx.commit().await?;
    tracing::info!(job = %job.id, volumes = transfers.len(), "volume transfers ordered");
    let workers: BTreeSet<&str> = transfers.iter().map(|t| t.worker_id.as_str()).collect();
    for w in workers {
        ring(b, w);
    }
    Ok(())
}

async fn follow(b: &Backups, kind: Job, job: &JobRow, remind: bool) -> AppResult<()> {
    let transfers = queries::transfers_of(b.db(), &job.id).await?;
    if let Some(t) = transfers.iter().find(|t| t.state == "FAILED") {
        let why = format!("the volume {}: {}", t.claim, t.error);
        return finish(b, kind, job, "FAILED", &why).await;
    }
    if transfers.iter().all(|t| t.state == "DONE") {
        return finish(b, kind, job, "COMPLETE", "").await;
    }
    let silence = b.inner.settings.silence_timeout.as_millis() as i64;
    let now = now_ms();
    if let Some(t) = transfers
        .iter()
        .find(|t| t.state != "DONE" && now - t.updated_at > silence)
    {
        let why = format!(
            "the volume {}: its worker's agent did not report for {}s",
            t.claim,
            silence / 1000
        );
        return finish(b, kind, job, "FAILED", &why).await;
    }
    if remind {
        let waiting: BTreeSet<&str> = transfers
            .iter()
            .filter(|t| t.state == "PENDING")
            .map(|t| t.worker_id.as_str())
            .collect();
        for w in waiting {
            ring(b, w);
        }
    }
    Ok(())
}

/// Ends `job` as `status` (COMPLETE or FAILED) with `reason`: its open
/// transfers fail, its hold is released (the pods start again), in one
/// transaction.
async fn finish(b: &Backups, kind: Job, job: &JobRow, status: &str, reason: &str) -> AppResult<()> {
    let now = now_ms();
    let mut tx = b.db().begin().await?;
    if !queries::set_status(&mut tx, kind, &job.id, &job.status, status, reason, now).await? {
        drop(tx);
        return Ok(());
    }
    queries::fail_open_transfers(&mut tx, &job.id, reason, now).await?;
    let released = queries::release(&mut tx, &job.subscription_id, &job.id).await?;
    if released {
        queries::touch_subscription(&mut tx, &job.subscription_id, now).await?;
    }
    let backup = match kind {
        Job::Backup => queries::backup(b.db(), &job.id).await?,
        Job::Restore => None,
    };
    let scheduled = backup
        .as_ref()
        .is_some_and(|r| r.trigger_kind == "SCHEDULE");
    // An upgrade or a deletion waits for it: the next pass does it.
    if backup.is_some_and(|r| !r.then_action.is_empty()) {
        b.inner.wake.notify_one();
    }
    let mut told = 0;
    if scheduled {
        told =
            scheduled_outcome(b, &mut tx, &job.subscription_id, status == "FAILED", reason).await?;
    }
    tx.commit().await?;
    if told > 0 {
        b.inner.subs.notifier().wake();
    }
    if scheduled
        && status == "COMPLETE"
        && let Err(e) = retain(b, &job.subscription_id, &job.user_id).await
    {
        tracing::warn!(subscription = %job.subscription_id, error = %format!("{e:#}"),
            "backup retention failed; tried again after the next scheduled backup");
    }

    if kind == Job::Restore
        && queries::restore(b.db(), &job.id)
            .await?
            .is_some_and(|r| r.drill)
    {
        end_drill(b, job, status, reason).await?;
    }
    if released {
        b.inner.subs.enqueue_now(job.subscription_id.clone());
    }
    // Agents running one of its transfers hear that it ended.
    for t in queries::transfers_of(b.db(), &job.id).await? {
        if status == "FAILED" {
            ring(b, &t.worker_id);
        }
    }
    match status {
        "COMPLETE" => {
            tracing::info!(job = %job.id, ?kind, subscription = %job.subscription_id, "job complete")
        }
        _ => {
            tracing::warn!(job = %job.id, ?kind, subscription = %job.subscription_id, reason, "job failed")
        }
    }
    Ok(())
}

/// Tells worker `w`'s agent to claim its transfers (on whichever replica
/// holds its stream).
fn ring(b: &Backups, w: &str) {
    b.inner
        .hub
        .send_command(w, pb::command::Command::TransfersPending(true));
}

/// Starts the scheduled backups that are due, each claimed by moving its
/// schedule to its next run (one replica wins). One that cannot start
/// counts as a failed scheduled backup.
async fn scheduled(b: &Backups) -> AppResult<()> {
    let now = now_ms();
    for s in queries::due_schedules(b.db(), now).await? {
        let next = super::schedule::next_at(now, s.hour as i32, s.minute as i32);
        if !queries::claim_run(b.db(), &s.subscription_id, s.next_at, next).await? {
            continue;
        }
        let sub = match subs_db::get(b.db(), &s.subscription_id).await? {
            Some(sub) if sub.desired != "DELETED" => sub,
            _ => {
                let mut tx = b.db().begin().await?;
                queries::delete_schedule(&mut tx, &s.subscription_id).await?;
                tx.commit().await?;
                continue;
            }
        };
        if let Err(e) = b
            .create_backup(&sub, "", "SCHEDULE", super::Then::Nothing)
            .await
        {
            tracing::warn!(subscription = %sub.id, error = %e, "a scheduled backup could not start");
            let mut tx = b.db().begin().await?;
            let told = scheduled_outcome(b, &mut tx, &sub.id, true, &e.to_string()).await?;
            tx.commit().await?;
            if told > 0 {
                b.inner.subs.notifier().wake();
            }
        }
    }
    Ok(())
}

/// Records a scheduled backup's end on its schedule in `tx`; from the
/// second failure in a row, the administrators are told (in `tx`).
async fn scheduled_outcome(
    b: &Backups,
    tx: &mut crate::store::Tx,
    sub: &str,
    failed: bool,
    reason: &str,
) -> AppResult<usize> {
    let failures = queries::scheduled_outcome(tx, sub, failed).await?;
    if !failed || failures < 2 {
        return Ok(0);
    }
    let name = subs_db::get(b.db(), sub)
        .await?
        .map(|s| s.name)
        .unwrap_or_else(|| sub.to_owned());
    let notice =
        crate::notifications::notices::backup_failed(sub, &name, failures, reason, now_ms());
    b.inner.subs.notifier().queue(tx, &notice).await
}

/// Applies subscription `sub`'s retention: the scheduled backups it no
/// longer keeps become EXPIRING, each with a FORGET transfer for the agent
/// that took it (a backup without volumes goes at once, its record
/// forgotten by the control plane's restic). Deferred while the customer
/// has another job under way (a forget locks their repository). A backup
/// whose repository still has a record to store waits (a record stored
/// after its backup's forget would outlive it, and storing it takes a
/// lock the forget would fail on): storing a record applies the
/// customer's retentions again (`recovery.rs`).
pub(super) async fn retain(b: &Backups, sub: &str, user: &str) -> AppResult<()> {
    let Some(s) = queries::schedule(b.db(), sub).await? else {
        return Ok(());
    };
    if queries::user_busy(b.db(), user).await? {
        return Ok(());
    }
    let complete = queries::scheduled_complete(b.db(), sub).await?;
    let expired = super::schedule::expired(&complete, s.keep_daily as i32, s.keep_weekly as i32);
    let mut workers = BTreeSet::new();
    for id in expired {
        let Some(row) = queries::backup(b.db(), &id).await? else {
            continue;
        };
        if queries::records_pending(b.db(), user, &row.destination_id).await? {
            continue;
        }
        // Read again: its record may have been stored since.
        let Some(row) = queries::backup(b.db(), &id).await? else {
            continue;
        };
        let copies: Vec<TransferRow> = queries::transfers_of(b.db(), &id)
            .await?
            .into_iter()
            // An empty volume's copy is no snapshot: nothing to forget.
            .filter(|t| t.kind == "BACKUP" && t.state == "DONE" && t.snapshot_id != EMPTY_SNAPSHOT)
            .collect();
        let record = Some(row.manifest_snapshot.clone()).filter(|s| !s.is_empty());
        if copies.is_empty() {
            if let Some(record) = &record
                && let Err(why) = super::recovery::forget_record(b, &row, record).await
            {
                tracing::warn!(backup = %id, why, "forgetting a backup's record failed; tried at the next retention");
                continue;
            }
            let mut tx = b.db().begin().await?;
            queries::delete_backup(&mut tx, &id).await?;
            tx.commit().await?;
            continue;
        }
        let now = now_ms();
        let mut tx = b.db().begin().await?;
        if !queries::set_status(
            &mut tx,
            Job::Backup,
            &id,
            "COMPLETE",
            "EXPIRING",
            "past its retention; being removed",
            now,
        )
        .await?
        {
            continue;
        }
        let worker = copies[0].worker_id.clone();
        // Its record in the repository goes with its volumes' snapshots.
        queries::insert_transfer(
            &mut tx,
            &TransferRow {
                id: new_id(),
                job_id: id.clone(),
                kind: "FORGET".into(),
                claim: String::new(),
                worker_id: worker.clone(),
                volume_path: String::new(),
                state: "PENDING".into(),
                snapshot_id: copies
                    .iter()
                    .map(|t| t.snapshot_id.as_str())
                    .chain(record.as_deref())
                    .collect::<Vec<_>>()
                    .join(","),
                bytes_done: 0,
                bytes_total: 0,
                seconds_remaining: -1,
                bytes_added: 0,
                error: String::new(),
                created_at: now,
                updated_at: now,
            },
        )
        .await?;
        tx.commit().await?;
        tracing::info!(backup = %id, subscription = %sub, "backup past its retention; forgetting it");
        workers.insert(worker);
    }
    for w in workers {
        ring(b, &w);
    }
    Ok(())
}

/// Follows the backups being forgotten: one whose FORGET is done goes
/// (its row and its transfers); one whose FORGET failed, or whose agent
/// went silent, is COMPLETE again (the next retention tries again).
async fn forgetting(b: &Backups) -> AppResult<()> {
    let silence = b.inner.settings.silence_timeout.as_millis() as i64;
    for backup in queries::expiring(b.db()).await? {
        let forgets: Vec<TransferRow> = queries::transfers_of(b.db(), &backup.job.id)
            .await?
            .into_iter()
            .filter(|t| t.kind == "FORGET")
            .collect();
        let Some(last) = forgets.iter().max_by_key(|t| t.created_at) else {
            continue;
        };
        let now = now_ms();
        match last.state.as_str() {
            "DONE" => {
                let mut tx = b.db().begin().await?;
                queries::delete_backup(&mut tx, &backup.job.id).await?;
                tx.commit().await?;
                tracing::info!(backup = %backup.job.id, "backup forgotten at its destination");
            }
            "FAILED" => {
                let mut tx = b.db().begin().await?;
                queries::set_status(
                    &mut tx,
                    Job::Backup,
                    &backup.job.id,
                    "EXPIRING",
                    "COMPLETE",
                    "",
                    backup.job.finished_at,
                )
                .await?;
                tx.commit().await?;
                tracing::warn!(backup = %backup.job.id, error = %last.error, "forgetting a backup failed; kept for now");
            }
            _ if now - last.updated_at > silence => {
                let mut tx = b.db().begin().await?;
                queries::fail_open_transfers(
                    &mut tx,
                    &backup.job.id,
                    "its agent did not report",
                    now,
                )
                .await?;
                tx.commit().await?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// A restore drill whose volumes are restored: the hold is released (the
/// scratch copy starts), a CHECK transfer reads the archive back, and the
/// drill passes once that check is done and the scratch subscription runs;
/// it fails on a failed check, or when the app is not ready within the
/// stop timeout after the restore.
async fn follow_drill(b: &Backups, job: &JobRow) -> AppResult<()> {
    let transfers = queries::transfers_of(b.db(), &job.id).await?;
    let restores: Vec<&TransferRow> = transfers.iter().filter(|t| t.kind == "RESTORE").collect();
    let check = transfers.iter().find(|t| t.kind == "CHECK");
    if let Some(t) = restores.iter().find(|t| t.state == "FAILED") {
        let why = format!("restoring the volume {}: {}", t.claim, t.error);
        return finish(b, Job::Restore, job, "FAILED", &why).await;
    }
    if !restores.iter().all(|t| t.state == "DONE") {
        return follow(b, Job::Restore, job, false).await;
    }
    let now = now_ms();
    let Some(check) = check else {
        // Restored: start the copy and check the archive.
        let worker = restores
            .first()
            .map(|t| t.worker_id.clone())
            .unwrap_or_default();
        let mut tx = b.db().begin().await?;
        if queries::release(&mut tx, &job.subscription_id, &job.id).await? {
            queries::touch_subscription(&mut tx, &job.subscription_id, now).await?;
        }
        queries::insert_transfer(
            &mut tx,
            &TransferRow {
                id: new_id(),
                job_id: job.id.clone(),
                kind: "CHECK".into(),
                claim: String::new(),
                worker_id: worker.clone(),
                volume_path: String::new(),
                state: "PENDING".into(),
                snapshot_id: String::new(),
                bytes_done: 0,
                bytes_total: 0,
                seconds_remaining: -1,
                bytes_added: 0,
                error: String::new(),
                created_at: now,
                updated_at: now,
            },
        )
        .await?;
        queries::set_reason(
            &mut tx,
            &job.id,
            "restored; checking the archive and waiting for the app to be ready",
        )
        .await?;
        tx.commit().await?;
        b.inner.subs.enqueue_now(job.subscription_id.clone());
        ring(b, &worker);
        return Ok(());
    };
    match check.state.as_str() {
        "FAILED" => {
            let why = format!("the archive's check failed: {}", check.error);
            return finish(b, Job::Restore, job, "FAILED", &why).await;
        }
        "DONE" => {}
        _ => {
            if now - check.updated_at > b.inner.settings.silence_timeout.as_millis() as i64 {
                return finish(
                    b,
                    Job::Restore,
                    job,
                    "FAILED",
                    "the archive's check did not report",
                )
                .await;
            }
            return Ok(());
        }
    }
    let sub = subs_db::get(b.db(), &job.subscription_id).await?;
    let running = sub.as_ref().is_some_and(|s| s.status == "RUNNING");
    if running {
        let bytes: i64 = restores.iter().map(|t| t.bytes_total).sum();
        let secs = (check.created_at - job.started_at).max(0) as f64 / 1000.0;
        let result = format!(
            "drill passed: {} MiB restored in {secs:.1} s, the archive checked, the app ready",
            bytes >> 20
        );
        return finish(b, Job::Restore, job, "COMPLETE", &result).await;
    }
    let waited = Duration::from_millis((now - check.updated_at).max(0) as u64);
    if waited > b.inner.settings.stop_timeout {
        let why = format!(
            "the restored app was not ready within {}s: {}",
            b.inner.settings.stop_timeout.as_secs(),
            sub.map(|s| s.status_reason).unwrap_or_default()
        );
        return finish(b, Job::Restore, job, "FAILED", &why).await;
    }
    Ok(())
}

/// A drill ended: its scratch subscription goes, and a failure is told to
/// the administrators.
async fn end_drill(b: &Backups, job: &JobRow, status: &str, reason: &str) -> AppResult<()> {
    if let Some(sub) = subs_db::get(b.db(), &job.subscription_id).await?
        && sub.desired != "DELETED"
    {
        b.inner.subs.delete(&sub).await?;
    }
    if status == "FAILED" {
        let name = match queries::restore(b.db(), &job.id).await? {
            Some(r) => queries::backup(b.db(), &r.backup_id)
                .await?
                .map(|x| x.subscription_name)
                .unwrap_or_default(),
            None => String::new(),
        };
        let notice = crate::notifications::notices::backup_failed(
            &job.subscription_id,
            &name,
            1,
            &format!("its restore drill failed: {reason}"),
            now_ms(),
        );
        let mut tx = b.db().begin().await?;
        let told = b.inner.subs.notifier().queue(&mut tx, &notice).await?;
        tx.commit().await?;
        if told > 0 {
            b.inner.subs.notifier().wake();
        }
    }
    tracing::info!(restore = %job.id, status, reason, "restore drill ended");
    Ok(())
}

/// Starts the weekly drills that are due: the newest complete backup of
/// each subscription whose schedule asks for one.
async fn weekly_drills(b: &Backups) -> AppResult<()> {
    let now = now_ms();
    for s in queries::drills_due(b.db(), now - 7 * 86_400_000).await? {
        if !queries::claim_drill(b.db(), &s.subscription_id, s.last_drill_at, now).await? {
            continue;
        }
        let Some(newest) = queries::newest_complete(b.db(), &s.subscription_id).await? else {
            continue;
        };
        if let Err(e) = b.start_drill(&newest).await {
            tracing::warn!(subscription = %s.subscription_id, error = %e, "a weekly restore drill could not start");
        }
    }
    Ok(())
}
