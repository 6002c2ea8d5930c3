//! BackupService: administrators' destinations; customers' backups and
//! restores of their own subscriptions (another's is NOT_FOUND).

use minispod_proto::v1::{self as pb, backup_service_server::BackupService};
use tonic::{Request, Response, Status};

use super::access::caller;
use crate::{
    backups::{Backups, Then, queries::BackupRow},
    error::{AppError, AppResult},
    subscriptions::{admission::is_admin, queries as subs_db},
    users::queries::UserRow,
};

/// The gRPC BackupService.
#[derive(Debug, Clone)]
pub struct BackupApi {
    backups: Backups,
}

impl BackupApi {
    /// The service over `backups`.
    pub fn new(backups: Backups) -> BackupApi {
        BackupApi { backups }
    }

    /// Subscription `id` if `caller` may see it.
    async fn subscription(
        &self,
        caller: &UserRow,
        id: &str,
    ) -> AppResult<subs_db::SubscriptionRow> {
        if id.is_empty() {
            return Err(AppError::invalid("subscription_id", "is required"));
        }
        match subs_db::get(self.backups.db(), id).await? {
            Some(r) if r.desired != "DELETED" && (is_admin(caller) || r.user_id == caller.id) => {
                Ok(r)
            }
            _ => Err(subs_db::not_found(id)),
        }
    }

    /// Backup `id` if `caller` may see it.
    async fn visible_backup(&self, caller: &UserRow, id: &str) -> AppResult<BackupRow> {
        if id.is_empty() {
            return Err(AppError::invalid("id", "is required"));
        }
        match self.backups.backup(id).await? {
            Some(b) if is_admin(caller) || b.job.user_id == caller.id => Ok(b),
            _ => Err(AppError::NotFound(format!("backup {id} not found"))),
        }
    }
}

#[tonic::async_trait]
impl BackupService for BackupApi {
    async fn create_backup_destination(
        &self,
        request: Request<pb::CreateBackupDestinationRequest>,
    ) -> Result<Response<pb::CreateBackupDestinationResponse>, Status> {
        let d = self
            .backups
            .create_destination(request.into_inner())
            .await?;
        Ok(Response::new(pb::CreateBackupDestinationResponse {
            destination: Some(d),
        }))
    }

    async fn import_backups(
        &self,
        request: Request<pb::ImportBackupsRequest>,
    ) -> Result<Response<pb::ImportBackupsResponse>, Status> {
        Ok(Response::new(
            self.backups.import(request.into_inner()).await?,
        ))
    }

    async fn list_backup_destinations(
        &self,
        _request: Request<pb::ListBackupDestinationsRequest>,
    ) -> Result<Response<pb::ListBackupDestinationsResponse>, Status> {
        Ok(Response::new(pb::ListBackupDestinationsResponse {
            destinations: self.backups.destinations().await?,
        }))
    }

    async fn create_backup(
        &self,
        request: Request<pb::CreateBackupRequest>,
    ) -> Result<Response<pb::CreateBackupResponse>, Status> {
        let caller = caller(&request)?;
        let r = request.into_inner();
        let sub = self.subscription(&caller, &r.subscription_id).await?;
        let backup = self
            .backups
            .create_backup(&sub, &r.destination_id, "MANUAL", Then::Nothing)
            .await?;
        tracing::info!(backup = %backup.id, subscription = %sub.id, by = %caller.id, "backup started");
        Ok(Response::new(pb::CreateBackupResponse {
            backup: Some(backup),
        }))
    }

    async fn get_backup(
        &self,
        request: Request<pb::GetBackupRequest>,
    ) -> Result<Response<pb::GetBackupResponse>, Status> {
        let caller = caller(&request)?;
        let b = self.visible_backup(&caller, &request.get_ref().id).await?;
        Ok(Response::new(pb::GetBackupResponse {
            backup: Some(self.backups.backup_pb(&b).await?),
        }))
    }

    async fn list_backups(
        &self,
        request: Request<pb::ListBackupsRequest>,
    ) -> Result<Response<pb::ListBackupsResponse>, Status> {
        let caller = caller(&request)?;
        let user = if is_admin(&caller) {
            ""
        } else {
            caller.id.as_str()
        };
        let backups = self
            .backups
            .list(user, &request.get_ref().subscription_id)
            .await?;
        Ok(Response::new(pb::ListBackupsResponse { backups }))
    }

    async fn restore_backup(
        &self,
        request: Request<pb::RestoreBackupRequest>,
    ) -> Result<Response<pb::RestoreBackupResponse>, Status> {
        let caller = caller(&request)?;
        let b = self
            .visible_backup(&caller, &request.get_ref().backup_id)
            .await?;
        let new_name = request.get_ref().new_subscription_name.trim();
        if !new_name.is_empty() {
            let restore = self.backups.restore_into_new(&b, new_name).await?;
            tracing::info!(restore = %restore.id, backup = %b.job.id, subscription = %restore.subscription_id, by = %caller.id, "restore into a new subscription started");
            return Ok(Response::new(pb::RestoreBackupResponse {
                restore: Some(restore),
            }));
        }
        let sub = match self.subscription(&caller, &b.job.subscription_id).await {
            Ok(s) => s,
            Err(AppError::NotFound(_)) => {
                return Err(AppError::FailedPrecondition(format!(
                    "the subscription backup {} was taken of no longer exists",
                    b.job.id
                ))
                .into());
            }
            Err(e) => return Err(e.into()),
        };
        let restore = self.backups.restore(&b, &sub).await?;
        tracing::info!(restore = %restore.id, backup = %b.job.id, by = %caller.id, "restore started");
        Ok(Response::new(pb::RestoreBackupResponse {
            restore: Some(restore),
        }))
    }

    async fn get_restore(
        &self,
        request: Request<pb::GetRestoreRequest>,
    ) -> Result<Response<pb::GetRestoreResponse>, Status> {
        let caller = caller(&request)?;
        let id = &request.get_ref().id;
        let r = match self.backups.restore_row(id).await? {
            Some(r) if is_admin(&caller) || r.job.user_id == caller.id => r,
            _ => return Err(AppError::NotFound(format!("restore {id} not found")).into()),
        };
        Ok(Response::new(pb::GetRestoreResponse {
            restore: Some(self.backups.restore_pb(&r).await?),
        }))
    }

    async fn set_backup_schedule(
        &self,
        request: Request<pb::SetBackupScheduleRequest>,
    ) -> Result<Response<pb::SetBackupScheduleResponse>, Status> {
        let caller = caller(&request)?;
        let r = request.into_inner();
        let s = r
            .schedule
            .ok_or_else(|| AppError::invalid("schedule", "is required"))?;
        let sub = self.subscription(&caller, &s.subscription_id).await?;
        let schedule = self.backups.set_schedule(&sub, &s, r.run_now).await?;
        tracing::info!(subscription = %sub.id, by = %caller.id, enabled = s.enabled, "backup schedule set");
        Ok(Response::new(pb::SetBackupScheduleResponse {
            schedule: Some(schedule),
        }))
    }

    async fn get_backup_schedule(
        &self,
        request: Request<pb::GetBackupScheduleRequest>,
    ) -> Result<Response<pb::GetBackupScheduleResponse>, Status> {
        let caller = caller(&request)?;
        let sub = self
            .subscription(&caller, &request.get_ref().subscription_id)
            .await?;
        Ok(Response::new(pb::GetBackupScheduleResponse {
            schedule: Some(self.backups.schedule_of(&sub.id).await?),
        }))
    }

    async fn start_restore_drill(
        &self,
        request: Request<pb::StartRestoreDrillRequest>,
    ) -> Result<Response<pb::StartRestoreDrillResponse>, Status> {
        let caller = caller(&request)?;
        let b = self
            .visible_backup(&caller, &request.get_ref().backup_id)
            .await?;
        let restore = self.backups.start_drill(&b).await?;
        tracing::info!(restore = %restore.id, backup = %b.job.id, by = %caller.id, "restore drill started");
        Ok(Response::new(pb::StartRestoreDrillResponse {
            restore: Some(restore),
        }))
    }

    async fn list_backup_overview(
        &self,
        _request: Request<pb::ListBackupOverviewRequest>,
    ) -> Result<Response<pb::ListBackupOverviewResponse>, Status> {
        Ok(Response::new(pb::ListBackupOverviewResponse {
            subscriptions: self.backups.overview().await?,
        }))
    }

    async fn create_backup_download(
        &self,
        request: Request<pb::CreateBackupDownloadRequest>,
    ) -> Result<Response<pb::CreateBackupDownloadResponse>, Status> {
        let caller = caller(&request)?;
        let r = request.into_inner();
        if r.claim.is_empty() {
            return Err(AppError::invalid("claim", "is required").into());
        }
        let b = self.visible_backup(&caller, &r.backup_id).await?;
        Ok(Response::new(
            self.backups.create_download(&b, &r.claim).await?,
        ))
    }
}
