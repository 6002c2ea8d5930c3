//! What follows a backup once it ends: the upgrade past a one-way version
//! it was taken for, or the deletion the customer asked to back up first.
//! Done when the backup completes, not when it fails (the subscription
//! then stays as it was, and the backup's reason says so).
//!
//! Each runner pass looks for ended backups whose follow-up is not done.
//! A replica claims one (`then_claimed_at`; a claim older than
//! [`CLAIM`] is taken over), does it, and records it done with what became
//! of it (`then_done_at`, the backup's reason). An error that may pass (the
//! store busy) drops the claim, and the next pass tries again. A follow-up
//! found done already (the subscription upgraded to the version, or
//! deleted: a replica that stopped between doing and recording) is
//! recorded as done, not as failed.

use std::time::Duration;

use minispod_proto::v1 as pb;

use super::{Backups, queries};
use crate::{
    error::AppError,
    store::now_ms,
    subscriptions::{queries as subs_db, upgrade::By},
};

/// How long a replica's claim on a follow-up stands.
const CLAIM: Duration = Duration::from_secs(300);

/// Does every follow-up due.
pub(super) async fn pass(b: &Backups) -> crate::error::AppResult<()> {
    for backup in queries::follow_ups(b.db()).await? {
        if !queries::claim_follow_up(b.db(), &backup.job.id, now_ms(), CLAIM.as_millis() as i64)
            .await?
        {
            continue;
        }
        match follow(b, &backup).await {
            Ok(reason) => {
                if queries::follow_up_done(b.db(), &backup.job.id, &reason, now_ms()).await? {
                    tracing::info!(backup = %backup.job.id, subscription = %backup.job.subscription_id,
                        action = %backup.then_action, reason, "backup follow-up done");
                }
            }
            Err(e) => {
                tracing::warn!(backup = %backup.job.id, error = %format!("{e:#}"),
                    "backup follow-up failed; trying again");
                queries::release_follow_up(b.db(), &backup.job.id).await?;
            }
        }
    }
    Ok(())
}

/// Does `backup`'s follow-up: the backup's reason afterwards, or an error
/// that may pass.
async fn follow(b: &Backups, backup: &queries::BackupRow) -> Result<String, AppError> {
    let upgrade = backup.then_action == "UPGRADE";
    let what = if upgrade {
        format!("the upgrade to {}", backup.then_version)
    } else {
        "the deletion".to_owned()
    };
    let said = |s: &str| {
        if backup.job.reason.is_empty() {
            s.to_owned()
        } else {
            format!("{}; {s}", backup.job.reason)
        }
    };
    if backup.job.status != "COMPLETE" {
        return Ok(said(&format!("{what} was not done")));
    }
    let sub = match subs_db::get(b.db(), &backup.job.subscription_id).await? {
        Some(sub) if sub.desired == "DELETED" && !upgrade => {
            return Ok(said(&format!("{what} started")));
        }
        Some(sub) if sub.desired != "DELETED" => sub,
        _ => {
            return Ok(said(&format!(
                "{what} was not done: the subscription is gone"
            )));
        }
    };
    if upgrade && sub.version == backup.then_version {
        return Ok(said(&format!("{what} started")));
    }
    let done = if upgrade {
        b.inner
            .subs
            .upgrade_by(
                By::Caller {
                    admin: false,
                    user_id: &sub.user_id,
                },
                &pb::UpgradeSubscriptionRequest {
                    id: sub.id.clone(),
                    version: backup.then_version.clone(),
                    ..Default::default()
                },
            )
            .await
            .and_then(|plan| {
                if plan.backup_first {
                    // Not this backup's version any more, or too old.
                    Err(AppError::FailedPrecondition(
                        "no complete backup of the version it runs from the last 24 hours".into(),
                    ))
                } else {
                    Ok(())
                }
            })
    } else {
        b.inner.subs.delete(&sub).await
    };
    match done {
        Ok(()) => Ok(said(&format!("{what} started"))),
        Err(e @ AppError::Internal(_)) => Err(e),
        Err(e) => Ok(said(&format!("{what} was not done: {e}"))),
    }
}
