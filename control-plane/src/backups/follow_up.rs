//! What follows a backup once it ends: the upgrade past a one-way version
//! it was taken for, or the deletion the customer asked to back up first.
//! Done when the backup completes, not when it fails (the subscription
//! then stays as it was, and the backup's reason says so).
//!
//! Each runner pass looks for ended backups whose follow-up is not done,
//! does it, then records it done (`then_done_at`), so a restart between the
//! two does it again: an upgrade or a deletion asked twice is refused or
//! harmless the second time.

use minispod_proto::v1 as pb;

use super::{Backups, queries};
use crate::{
    store::now_ms,
    subscriptions::{queries as subs_db, upgrade::By},
};

/// Does every follow-up due.
pub(super) async fn pass(b: &Backups) -> crate::error::AppResult<()> {
    for backup in queries::follow_ups(b.db()).await? {
        let reason = follow(b, &backup).await;
        if queries::follow_up_done(b.db(), &backup.job.id, &reason, now_ms()).await? {
            tracing::info!(backup = %backup.job.id, subscription = %backup.job.subscription_id,
                action = %backup.then_action, reason, "backup follow-up done");
        }
    }
    Ok(())
}

/// Does `backup`'s follow-up; the backup's reason afterwards.
async fn follow(b: &Backups, backup: &queries::BackupRow) -> String {
    let complete = backup.job.status == "COMPLETE";
    let what = match backup.then_action.as_str() {
        "UPGRADE" => format!("the upgrade to {}", backup.then_version),
        _ => "the deletion".to_owned(),
    };
    let said = |s: &str| {
        if backup.job.reason.is_empty() {
            s.to_owned()
        } else {
            format!("{}; {s}", backup.job.reason)
        }
    };
    if !complete {
        return said(&format!("{what} was not done"));
    }
    let sub = match subs_db::get(b.db(), &backup.job.subscription_id).await {
        Ok(Some(sub)) if sub.desired != "DELETED" => sub,
        Ok(_) => return said(&format!("{what} was not done: the subscription is gone")),
        Err(e) => return said(&format!("{what} was not done: {e}")),
    };
    let done = match backup.then_action.as_str() {
        "UPGRADE" => b
            .inner
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
                    Err(crate::error::AppError::FailedPrecondition(
                        "no complete backup of the version it runs from the last 24 hours".into(),
                    ))
                } else {
                    Ok(())
                }
            }),
        _ => b.inner.subs.delete(&sub).await,
    };
    match done {
        Ok(()) => said(&format!("{what} started")),
        Err(e) => said(&format!("{what} was not done: {e}")),
    }
}
