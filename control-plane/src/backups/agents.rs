//! What agents call: their transfers' orders, and their reports.

use minispod_proto::v1 as pb;

use super::{
    Backups,
    queries::{self, Report},
};
use crate::{
    error::{AppError, AppResult},
    store::now_ms,
};

/// The tag a backup's snapshot carries, naming its transfer: what an agent
/// looks for after a restart before copying again.
pub fn transfer_tag(id: &str) -> String {
    format!("transfer-{id}")
}

/// Whether `id` is a snapshot id as restic writes them (8 to 64 lower-case
/// hex digits) or the empty volume's `empty`.
pub(super) fn snapshot_id_ok(id: &str) -> bool {
    id == super::run::EMPTY_SNAPSHOT
        || ((8..=64).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

impl Backups {
    /// Worker `worker`'s open transfers, with what opens their
    /// repositories.
    pub async fn claim_transfers(&self, worker: &str) -> AppResult<pb::ClaimTransfersResponse> {
        let mut orders = Vec::new();
        for t in queries::open_transfers_of_worker(self.db(), worker).await? {
            let backup = match t.kind.as_str() {
                "BACKUP" | "FORGET" => queries::backup(self.db(), &t.job_id).await?,
                // A drill's check: the job is the restore.
                _ => match queries::restore(self.db(), &t.job_id).await? {
                    Some(r) => queries::backup(self.db(), &r.backup_id).await?,
                    None => None,
                },
            };
            let Some(backup) = backup else { continue };
            let Some(repo) = self.repository_of(&backup).await? else {
                continue;
            };
            let backup_kind = t.kind == "BACKUP";
            let forget = t.kind == "FORGET";
            orders.push(pb::TransferOrder {
                id: t.id.clone(),
                kind: match t.kind.as_str() {
                    "BACKUP" => pb::TransferKind::Backup,
                    "FORGET" => pb::TransferKind::Forget,
                    "CHECK" => pb::TransferKind::Check,
                    _ => pb::TransferKind::Restore,
                } as i32,
                volume_path: t.volume_path.clone(),
                // A directory destination is reached through the control
                // plane, not at the path only this host can open.
                repository: if repo.served_at.is_some() {
                    String::new()
                } else {
                    repo.location
                },
                control_plane_path: repo.served_at.unwrap_or_default(),
                password: repo.password,
                environment: repo.environment.into_iter().collect(),
                tags: if backup_kind {
                    vec![
                        transfer_tag(&t.id),
                        format!("backup-{}", backup.job.id),
                        format!("subscription-{}", backup.job.subscription_id),
                        format!("claim-{}", t.claim),
                    ]
                } else {
                    Vec::new()
                },
                snapshot_id: if forget {
                    String::new()
                } else {
                    t.snapshot_id.clone()
                },
                forget_snapshot_ids: if forget {
                    t.snapshot_id.split(',').map(str::to_owned).collect()
                } else {
                    Vec::new()
                },
                limit_upload_kib: self.inner.settings.limit_upload_kib as i32,
                limit_download_kib: self.inner.settings.limit_download_kib as i32,
            });
        }
        Ok(pb::ClaimTransfersResponse { orders })
    }

    /// Records worker `worker`'s report on one of its transfers; whether
    /// the agent should stop it (the transfer or its job ended).
    pub async fn report_transfer(
        &self,
        worker: &str,
        r: pb::ReportTransferRequest,
    ) -> AppResult<bool> {
        let Some(t) = queries::transfer_of_worker(self.db(), &r.id, worker).await? else {
            return Err(AppError::NotFound(format!("transfer {} not found", r.id)));
        };
        let state = match pb::TransferState::try_from(r.state) {
            Ok(pb::TransferState::Running) => "RUNNING",
            Ok(pb::TransferState::Done) => "DONE",
            Ok(pb::TransferState::Failed) => "FAILED",
            _ => {
                return Err(AppError::invalid(
                    "state",
                    "must be running, done or failed",
                ));
            }
        };
        if state == "DONE" && t.kind == "BACKUP" && r.snapshot_id.is_empty() {
            return Err(AppError::invalid(
                "snapshot_id",
                "a finished backup names its snapshot",
            ));
        }
        // A snapshot id goes back to restic (restores, forgets, the control
        // plane's own downloads): only restic's hex ids, or "empty", so a
        // worker can never slip a flag into another restic's command line.
        if !r.snapshot_id.is_empty() && !snapshot_id_ok(&r.snapshot_id) {
            return Err(AppError::invalid(
                "snapshot_id",
                "is 8 to 64 lower-case hex digits, or \"empty\"",
            ));
        }
        let mut error: String = r.error.chars().take(1000).collect();
        if state == "FAILED" && error.is_empty() {
            error = "the agent gave no reason".into();
        }
        let report = Report {
            state: state.into(),
            bytes_done: r.bytes_done.max(0),
            bytes_total: r.bytes_total.max(0),
            seconds_remaining: r.seconds_remaining.max(-1),
            snapshot_id: if t.kind == "BACKUP" {
                r.snapshot_id.clone()
            } else {
                String::new()
            },
            bytes_added: r.bytes_added.max(0),
            error,
        };
        let written = queries::report(self.db(), &t.id, &report, now_ms()).await?;
        if state != "RUNNING" {
            self.inner.wake.notify_one();
            tracing::info!(transfer = %t.id, job = %t.job_id, worker, state, "transfer ended");
        }
        Ok(!written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_restic_snapshot_ids_are_taken_from_an_agent() {
        assert!(snapshot_id_ok("4f9a2c1d"));
        assert!(snapshot_id_ok(&"ab".repeat(32)));
        assert!(snapshot_id_ok("empty"));
        for bad in [
            "--password-command=sh",
            "-r",
            "4F9A2C1D",
            "4f9a2c1",
            &"a".repeat(65),
            "4f9a 2c1d",
            "",
        ] {
            assert!(!snapshot_id_ok(bad), "{bad:?}");
        }
    }
}
