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
    let template =
        pb::ServiceTemplate::decode(sub.template.as_slice()).map_err(anyhow::Error::from)?;
    let claims = volumes::claims(&sub.name, &template);
    if claims.is_empty() {
        // Nothing on disk: the manifest is the whole backup.
        return finish(b, kind, job, "COMPLETE", "").await;
    }
    // Hold it stopped (once), and wait for its pods to be gone.
    let what = match kind {
        Job::Backup => "a backup",
        Job::Restore => "a restore",
    };
    let mut tx = b.db().begin().await?;
    let now = now_ms();
    let held = queries::hold(
        &mut tx,
        &sub.id,
        &job.id,
        &format!("stopped for {what}; it starts again when it ends"),
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
    let pods = b.inner.subs.pods_of(&sub.id);
    if !pods.is_empty() {
        let waited = Duration::from_millis((now - job.created_at).max(0) as u64);
        if waited > b.inner.settings.stop_timeout {
            return finish(
                b,
                kind,
                job,
                "FAILED",
                &format!(
                    "its pods did not stop within {}s",
                    b.inner.settings.stop_timeout.as_secs()
                ),
            )
            .await;
        }
        return Ok(());
    }
    // Where each volume is, and (a restore) which snapshot goes back.
    let mut transfers = Vec::new();
    for claim in &claims {
        let snapshot = match kind {
            Job::Backup => String::new(),
            Job::Restore => match source
                .iter()
                .find(|t| &t.claim == claim && t.state == "DONE")
            {
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
        let volume = match volumes::locate(b.inner.subs.link(), &sub.namespace, claim).await {
            Ok(v) => v,
            Err(why) => return finish(b, kind, job, "FAILED", &why).await,
        };
        transfers.push(TransferRow {
            id: new_id(),
            job_id: job.id.clone(),
            kind: match kind {
                Job::Backup => "BACKUP",
                Job::Restore => "RESTORE",
            }
            .into(),
            claim: claim.clone(),
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
    let _ = backup;
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
    tx.commit().await?;
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
