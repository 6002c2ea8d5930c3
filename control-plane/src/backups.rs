//! Backups of subscriptions' volumes, and restores from them (#26).
//!
//! The data never passes through the control plane: for each volume the
//! agent of the node whose disk holds it runs restic against the
//! destination (an S3-compatible bucket), under orders it claims over its
//! mTLS channel (`agents.rs`: AgentService.ClaimTransfers and
//! ReportTransfer; a `transfers_pending` command on its stream rings the
//! bell). `run.rs` drives each backup and restore: it holds the
//! subscription stopped (a consistent copy: nothing writes while the files
//! are read or replaced), finds each claim's volume (`volumes.rs`), records
//! one transfer per volume, and ends the job when every transfer has
//! reported. Each customer has a repository of their own per destination
//! (`<prefix>/<user id>`) under a password of its own, sealed with the
//! operator's key: one customer's key opens nothing of another's.

mod agents;
mod download;
mod follow_up;
pub mod queries;
mod recovery;
pub mod rest;
mod restic;
mod run;
pub mod schedule;
pub mod volumes;

use std::{sync::Arc, time::Duration};

use minispod_proto::v1 as pb;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::{
    error::{AppError, AppResult},
    sealed::Sealer,
    store::{Db, new_id, now_ms, timestamp},
    subscriptions::{Subscriptions, queries::SubscriptionRow},
    workers::hub::FleetHub,
};

use queries::{BackupRow, DestinationRow, JobRow, RestoreRow, ScheduleRow, TransferRow};

/// How backups behave (`serve --backup-*`).
#[derive(Debug, Clone)]
pub struct BackupSettings {
    /// Upload bound of each volume's backup, KiB/s (0: none).
    pub limit_upload_kib: u32,
    /// Download bound of each volume's restore, KiB/s (0: none).
    pub limit_download_kib: u32,
    /// How long a job waits for the subscription's pods to stop.
    pub stop_timeout: Duration,
    /// How long a transfer may go without a report before it is failed
    /// (its agent is gone): the job then fails, nothing half-written is
    /// listed.
    pub silence_timeout: Duration,
    /// The restic binary that streams downloads.
    pub restic: std::path::PathBuf,
}

impl Default for BackupSettings {
    fn default() -> Self {
        BackupSettings {
            limit_upload_kib: 0,
            limit_download_kib: 0,
            stop_timeout: Duration::from_secs(300),
            silence_timeout: Duration::from_secs(600),
            restic: "restic".into(),
        }
    }
}

/// Backups and restores; cheap to clone.
#[derive(Clone)]
pub struct Backups {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    subs: Subscriptions,
    hub: FleetHub,
    sealer: Sealer,
    settings: BackupSettings,
    wake: Notify,
    downloads: download::Slots,
    /// Records being stored in their repositories (`recovery.rs`).
    recording: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for Backups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backups").finish_non_exhaustive()
    }
}

/// What rebuilds a subscription from a backup, sealed in the backup's row.
#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    service_id: String,
    service_slug: String,
    version: String,
    /// The prost-encoded template, base64.
    template: String,
    variables: std::collections::BTreeMap<String, String>,
    generated: std::collections::BTreeMap<String, String>,
}

/// What opens a customer's repository at a destination.
pub(crate) struct Repository {
    /// restic's repository location (`s3:<endpoint>/<bucket>/<path>`, or
    /// a directory destination's `<directory>/<user id>`) as the control
    /// plane's own restic opens it.
    pub location: String,
    /// Its password.
    pub password: String,
    /// The destination's credentials, as restic's environment.
    pub environment: Vec<(String, String)>,
    /// For a directory destination, the path of the control plane's URL
    /// where agents reach it (`rest.rs`).
    pub served_at: Option<String>,
    /// For a directory destination, its directory and id: checked
    /// (`rest::check_destination_dir`) before a repository is made there.
    pub directory: Option<(std::path::PathBuf, String)>,
}

impl Backups {
    /// What opens `user`'s repository at destination `dest` (None when
    /// the destination or the key is gone).
    pub(crate) async fn repository(&self, user: &str, dest: &str) -> AppResult<Option<Repository>> {
        let Some(dest) = queries::destination(self.db(), dest).await? else {
            return Ok(None);
        };
        let Some((sealed, hint)) = queries::key(self.db(), user, &dest.id).await? else {
            return Ok(None);
        };
        let password = self.inner.sealer.open(&key_row(user, &dest.id), &sealed)?;
        let mut repo = self.repository_at(&dest, user, password)?;
        // Its own key first, not the recovery key: each key restic tries
        // costs a key derivation (about half a second).
        if !hint.is_empty() {
            repo.environment.push(("RESTIC_KEY_HINT".to_owned(), hint));
        }
        Ok(Some(repo))
    }

    /// What opens backup `b`'s repository: its owner's, or for a backup
    /// imported from another control plane's repository, that one under
    /// its recovery password.
    pub(crate) async fn repository_of(&self, b: &BackupRow) -> AppResult<Option<Repository>> {
        if b.repository_user.is_empty() {
            return self.repository(&b.job.user_id, &b.destination_id).await;
        }
        let Some(dest) = queries::destination(self.db(), &b.destination_id).await? else {
            return Ok(None);
        };
        let password = self.inner.sealer.recovery_password(&b.repository_user);
        self.repository_at(&dest, &b.repository_user, password)
            .map(Some)
    }

    /// The repository `<prefix or directory>/<user>` at `dest`, opened
    /// with `password`.
    fn repository_at(
        &self,
        dest: &DestinationRow,
        user: &str,
        password: String,
    ) -> AppResult<Repository> {
        if !dest.directory.is_empty() {
            return Ok(Repository {
                location: format!("{}/{user}", dest.directory),
                password,
                environment: Vec::new(),
                served_at: Some(rest::repository_path(&dest.id, user)),
                directory: Some((dest.directory.clone().into(), dest.id.clone())),
            });
        }
        let creds = self.inner.sealer.open(&dest.id, &dest.credentials)?;
        let (key_id, secret) = creds.split_once('\n').unwrap_or((creds.as_str(), ""));
        let path = if dest.prefix.is_empty() {
            user.to_owned()
        } else {
            format!("{}/{user}", dest.prefix)
        };
        Ok(Repository {
            location: format!("s3:{}/{}/{path}", dest.endpoint, dest.bucket),
            password,
            environment: vec![
                ("AWS_ACCESS_KEY_ID".to_owned(), key_id.to_owned()),
                ("AWS_SECRET_ACCESS_KEY".to_owned(), secret.to_owned()),
                ("AWS_DEFAULT_REGION".to_owned(), dest.region.clone()),
            ],
            served_at: None,
            directory: None,
        })
    }
}

/// What follows a backup once it completes (nothing when it fails).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Then {
    /// Nothing: a backup asked for, or scheduled.
    Nothing,
    /// Upgrading the subscription to this version (past a one-way version).
    Upgrade(String),
    /// Deleting the subscription.
    Delete,
}

/// The longest destination name.
const MAX_NAME: usize = 64;

impl Backups {
    /// Backups over `subs`' subscriptions and `hub`'s agents.
    pub fn new(
        db: Db,
        subs: Subscriptions,
        hub: FleetHub,
        sealer: Sealer,
        settings: BackupSettings,
    ) -> Backups {
        Backups {
            inner: Arc::new(Inner {
                db,
                subs,
                hub,
                sealer,
                settings,
                wake: Notify::new(),
                downloads: download::Slots::default(),
                recording: Arc::new(tokio::sync::Semaphore::new(recovery::RECORDING)),
            }),
        }
    }

    /// Starts the runner.
    pub fn spawn(&self) -> tokio::task::JoinHandle<()> {
        let restic = self.inner.settings.restic.clone();
        tokio::spawn(async move { restic::check_installed(&restic).await });
        tokio::spawn(run::run(self.clone()))
    }

    pub(crate) fn db(&self) -> &Db {
        &self.inner.db
    }

    /// Adds a destination (an administrator's call).
    pub async fn create_destination(
        &self,
        r: pb::CreateBackupDestinationRequest,
    ) -> AppResult<pb::BackupDestination> {
        let name = r.name.trim();
        if name.is_empty() || name.chars().count() > MAX_NAME {
            return Err(AppError::invalid("name", "must be 1 to 64 characters"));
        }
        if !r.directory.is_empty() {
            let name = name.to_owned();
            return self.create_directory_destination(&name, r).await;
        }
        check_endpoint(&r.endpoint)?;
        let region = if r.region.is_empty() {
            "us-east-1"
        } else {
            r.region.as_str()
        };
        if region.len() > 64
            || !region
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(AppError::invalid(
                "region",
                "must be letters, digits and '-'",
            ));
        }
        check_bucket(&r.bucket)?;
        let prefix = r.prefix.trim_matches('/');
        if prefix.len() > 200
            || !prefix.split('/').all(|p| {
                prefix.is_empty()
                    || (!p.is_empty()
                        && p != "."
                        && p != ".."
                        && p.chars()
                            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)))
            })
        {
            return Err(AppError::invalid(
                "prefix",
                "must be path segments of letters, digits, '-', '_' and '.'",
            ));
        }
        for (field, v) in [
            ("access_key_id", &r.access_key_id),
            ("secret_access_key", &r.secret_access_key),
        ] {
            if v.is_empty() || v.len() > 256 || v.contains(['\n', '\r']) {
                return Err(AppError::invalid(
                    field,
                    "must be 1 to 256 characters on one line",
                ));
            }
        }
        let id = new_id();
        let mut tx = self.db().begin().await?;
        let first = queries::count_destinations(&mut tx).await? == 0;
        let row = DestinationRow {
            credentials: self.inner.sealer.seal(
                &id,
                &format!("{}\n{}", r.access_key_id, r.secret_access_key),
            ),
            id,
            name: name.to_owned(),
            endpoint: r.endpoint.trim_end_matches('/').to_owned(),
            region: region.to_owned(),
            bucket: r.bucket.clone(),
            prefix: prefix.to_owned(),
            is_default: first || r.make_default,
            created_at: now_ms(),
            directory: String::new(),
        };
        queries::insert_destination(&mut tx, &row).await?;
        tx.commit().await?;
        tracing::info!(destination = %row.id, name = %row.name, endpoint = %row.endpoint, bucket = %row.bucket, "backup destination added");
        Ok(destination_pb(&row))
    }

    /// Adds a directory on this host as a destination: created when
    /// missing (0700) and checked writable before it is stored.
    async fn create_directory_destination(
        &self,
        name: &str,
        r: pb::CreateBackupDestinationRequest,
    ) -> AppResult<pb::BackupDestination> {
        for (field, v) in [
            ("endpoint", &r.endpoint),
            ("region", &r.region),
            ("bucket", &r.bucket),
            ("prefix", &r.prefix),
            ("access_key_id", &r.access_key_id),
            ("secret_access_key", &r.secret_access_key),
        ] {
            if !v.is_empty() {
                return Err(AppError::invalid(
                    field,
                    "must be empty for a directory destination",
                ));
            }
        }
        let directory = check_directory(&r.directory)?;
        let id = new_id();
        // A directory another destination marks is that one's: two would
        // put two repositories of one customer in one place.
        let marker = std::path::Path::new(&directory).join(rest::MARKER);
        if let Ok(other) = std::fs::read_to_string(&marker)
            && queries::destination(self.db(), other.trim())
                .await?
                .is_some_and(|d| d.id == other.trim())
        {
            return Err(AppError::invalid(
                "directory",
                format!("is the backup destination {}'s already", other.trim()),
            ));
        }
        let (probe_dir, probe_id) = (directory.clone(), id.clone());
        tokio::task::spawn_blocking(move || {
            prepare_directory(std::path::Path::new(&probe_dir), &probe_id)
        })
        .await
        .map_err(|e| AppError::Internal(e.into()))?
        .map_err(|e| {
            AppError::invalid(
                "directory",
                format!("cannot be used by the control plane: {e}"),
            )
        })?;
        let mut tx = self.db().begin().await?;
        let first = queries::count_destinations(&mut tx).await? == 0;
        let row = DestinationRow {
            credentials: self.inner.sealer.seal(&id, ""),
            id,
            name: name.to_owned(),
            endpoint: String::new(),
            region: String::new(),
            bucket: String::new(),
            prefix: String::new(),
            is_default: first || r.make_default,
            created_at: now_ms(),
            directory,
        };
        queries::insert_destination(&mut tx, &row).await?;
        tx.commit().await?;
        tracing::info!(destination = %row.id, name = %row.name, directory = %row.directory, "backup destination added");
        Ok(destination_pb(&row))
    }

    /// Every destination.
    pub async fn destinations(&self) -> AppResult<Vec<pb::BackupDestination>> {
        Ok(queries::destinations(self.db())
            .await?
            .iter()
            .map(destination_pb)
            .collect())
    }

    /// Whether a default destination is configured.
    pub async fn has_destination(&self) -> AppResult<bool> {
        Ok(queries::destination(self.db(), "").await?.is_some())
    }

    /// Starts a backup of `sub` into `destination` ('' the default),
    /// followed by `then` once it completes.
    pub async fn create_backup(
        &self,
        sub: &SubscriptionRow,
        destination: &str,
        trigger: &str,
        then: Then,
    ) -> AppResult<pb::Backup> {
        let dest = queries::destination(self.db(), destination)
            .await?
            .ok_or_else(|| {
                if destination.is_empty() {
                    AppError::FailedPrecondition(
                        "no backup destination is configured; an administrator adds one with \
                         CreateBackupDestination"
                            .into(),
                    )
                } else {
                    AppError::NotFound(format!("backup destination {destination} not found"))
                }
            })?;
        if sub.desired != "RUNNING" || !sub.previous_version.is_empty() {
            return Err(AppError::FailedPrecondition(format!(
                "subscription {} is {}: only a running subscription that is not upgrading is \
                 backed up",
                sub.name,
                sub.status.to_lowercase()
            )));
        }
        let manifest = Manifest {
            service_id: sub.service_id.clone(),
            service_slug: sub.service_slug.clone(),
            version: sub.version.clone(),
            template: base64_encode(&sub.template),
            variables: self.inner.subs.open_map(&sub.id, &sub.variables)?,
            generated: self.inner.subs.open_map(&sub.id, &sub.generated)?,
        };
        let id = new_id();
        let now = now_ms();
        let row = BackupRow {
            job: JobRow {
                id: id.clone(),
                subscription_id: sub.id.clone(),
                user_id: sub.user_id.clone(),
                status: "PENDING".into(),
                reason: "stopping its pods for a consistent copy".into(),
                created_at: now,
                started_at: 0,
                finished_at: 0,
            },
            subscription_name: sub.name.clone(),
            destination_id: dest.id.clone(),
            service_version: sub.version.clone(),
            manifest: self.inner.sealer.seal(
                &id,
                &serde_json::to_string(&manifest).map_err(anyhow::Error::from)?,
            ),
            trigger_kind: trigger.into(),
            then_action: match then {
                Then::Nothing => "",
                Then::Upgrade(_) => "UPGRADE",
                Then::Delete => "DELETE",
            }
            .into(),
            then_version: match &then {
                Then::Upgrade(v) => v.clone(),
                _ => String::new(),
            },
            then_done_at: 0,
            manifest_snapshot: String::new(),
            repository_user: String::new(),
        };
        self.check_storage(&sub.user_id).await?;
        let mut tx = self.db().begin().await?;
        if queries::busy(&mut tx, &sub.id).await? {
            return Err(AppError::FailedPrecondition(format!(
                "a backup or a restore of subscription {} is under way",
                sub.name
            )));
        }
        if queries::key(self.db(), &sub.user_id, &dest.id)
            .await?
            .is_none()
        {
            let password = random_password();
            let sealed = self
                .inner
                .sealer
                .seal(&key_row(&sub.user_id, &dest.id), &password);
            queries::insert_key(&mut tx, &sub.user_id, &dest.id, &sealed, now).await?;
        }
        queries::insert_backup(&mut tx, &row).await?;
        tx.commit().await?;
        tracing::info!(backup = %id, subscription = %sub.id, destination = %dest.id, "backup asked for");
        self.inner.wake.notify_one();
        self.backup_pb(&row).await
    }

    /// Starts a restore of backup `b` into its own subscription `sub`.
    pub async fn restore(&self, b: &BackupRow, sub: &SubscriptionRow) -> AppResult<pb::Restore> {
        self.restore_as(b, sub, false).await
    }

    /// Starts a restore (a drill when `drill`) of backup `b` into `sub`.
    async fn restore_as(
        &self,
        b: &BackupRow,
        sub: &SubscriptionRow,
        drill: bool,
    ) -> AppResult<pb::Restore> {
        restorable(b)?;
        if sub.desired == "DELETED" || !sub.previous_version.is_empty() {
            return Err(AppError::FailedPrecondition(format!(
                "subscription {} is {}: it cannot be restored into now",
                sub.name,
                sub.status.to_lowercase()
            )));
        }
        let id = new_id();
        let row = RestoreRow {
            job: JobRow {
                id: id.clone(),
                subscription_id: sub.id.clone(),
                user_id: sub.user_id.clone(),
                status: "PENDING".into(),
                reason: "stopping its pods before its volumes are replaced".into(),
                created_at: now_ms(),
                started_at: 0,
                finished_at: 0,
            },
            backup_id: b.job.id.clone(),
            drill,
        };
        let mut tx = self.db().begin().await?;
        if queries::busy(&mut tx, &sub.id).await? {
            return Err(AppError::FailedPrecondition(format!(
                "a backup or a restore of subscription {} is under way",
                sub.name
            )));
        }
        queries::insert_restore(&mut tx, &row).await?;
        tx.commit().await?;
        tracing::info!(restore = %id, backup = %b.job.id, subscription = %sub.id, "restore asked for");
        self.inner.wake.notify_one();
        self.restore_pb(&row).await
    }

    /// RESOURCE_EXHAUSTED when user `user`'s volumes and backups already
    /// take their whole storage limit (backups count against it).
    async fn check_storage(&self, user: &str) -> AppResult<()> {
        let (used, limit) = self.inner.subs.storage_of(user).await?;
        if used >= limit {
            let stored = queries::user_stored_bytes(self.db(), user).await?;
            return Err(AppError::ResourceExhausted {
                message: format!(
                    "over your storage limit: volumes and backups take {used} GiB of your \
                     {limit} GiB (backups {} MiB); delete backups or volumes, or ask an \
                     administrator for more",
                    stored >> 20
                ),
                retry_after: None,
            });
        }
        Ok(())
    }

    /// Sets (or removes) subscription `sub`'s daily backup.
    pub async fn set_schedule(
        &self,
        sub: &SubscriptionRow,
        s: &pb::BackupSchedule,
        run_now: bool,
    ) -> AppResult<pb::BackupSchedule> {
        schedule::check(s)?;
        let mut tx = self.db().begin().await?;
        if s.enabled {
            let now = now_ms();
            let row = ScheduleRow {
                subscription_id: sub.id.clone(),
                user_id: sub.user_id.clone(),
                hour: s.hour.into(),
                minute: s.minute.into(),
                keep_daily: s.keep_daily.into(),
                keep_weekly: s.keep_weekly.into(),
                next_at: if run_now {
                    now
                } else {
                    schedule::next_at(now, s.hour, s.minute)
                },
                failures_in_a_row: 0,
                weekly_drill: s.weekly_drill,
                last_drill_at: 0,
                updated_at: now,
            };
            queries::upsert_schedule(&mut tx, &row).await?;
        } else {
            queries::delete_schedule(&mut tx, &sub.id).await?;
        }
        tx.commit().await?;
        if run_now {
            self.inner.wake.notify_one();
        }
        self.schedule_of(&sub.id).await
    }

    /// Subscription `sub`'s schedule (enabled false when none).
    pub async fn schedule_of(&self, sub: &str) -> AppResult<pb::BackupSchedule> {
        Ok(match queries::schedule(self.db(), sub).await? {
            Some(s) => pb::BackupSchedule {
                subscription_id: s.subscription_id,
                enabled: true,
                hour: s.hour as i32,
                minute: s.minute as i32,
                keep_daily: s.keep_daily as i32,
                keep_weekly: s.keep_weekly as i32,
                next_at: Some(timestamp(s.next_at)),
                failures_in_a_row: s.failures_in_a_row as i32,
                weekly_drill: s.weekly_drill,
                last_drill_at: (s.last_drill_at > 0).then(|| timestamp(s.last_drill_at)),
            },
            None => pb::BackupSchedule {
                subscription_id: sub.to_owned(),
                ..Default::default()
            },
        })
    }

    /// Every subscription with backups or a schedule, summed.
    pub async fn overview(&self) -> AppResult<Vec<pb::SubscriptionBackups>> {
        let schedules: std::collections::HashMap<String, ScheduleRow> =
            queries::schedules(self.db())
                .await?
                .into_iter()
                .map(|s| (s.subscription_id.clone(), s))
                .collect();
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for o in queries::overview(self.db()).await? {
            let s = schedules.get(&o.subscription_id);
            let last = queries::last_status(self.db(), &o.subscription_id).await?;
            seen.insert(o.subscription_id.clone());
            out.push(pb::SubscriptionBackups {
                subscription_id: o.subscription_id,
                subscription_name: o.subscription_name,
                user_id: o.user_id,
                complete: o.complete as i32,
                bytes_stored: o.bytes_stored,
                last_success_at: (o.last_success_at > 0).then(|| timestamp(o.last_success_at)),
                last_status: backup_status(last.as_deref().unwrap_or("")) as i32,
                scheduled: s.is_some(),
                failures_in_a_row: s.map_or(0, |s| s.failures_in_a_row as i32),
            });
        }
        for (id, s) in &schedules {
            if seen.contains(id) {
                continue;
            }
            let name = crate::subscriptions::queries::get(self.db(), id)
                .await?
                .map(|r| r.name)
                .unwrap_or_default();
            out.push(pb::SubscriptionBackups {
                subscription_id: id.clone(),
                subscription_name: name,
                user_id: s.user_id.clone(),
                scheduled: true,
                failures_in_a_row: s.failures_in_a_row as i32,
                ..Default::default()
            });
        }
        out.sort_by(|a, b| a.subscription_name.cmp(&b.subscription_name));
        Ok(out)
    }

    /// Makes a new subscription of backup `b`'s owner named `name` from the
    /// backup (its entry and version, variables and generated secrets) and
    /// starts a restore of `b` into it. The restore waits for the new
    /// subscription's volumes to be bound (its first pods), then stops it
    /// and replaces their files.
    pub async fn restore_into_new(&self, b: &BackupRow, name: &str) -> AppResult<pb::Restore> {
        self.restore_into_new_as(b, name, false).await
    }

    /// Starts a restore drill of backup `b`: into a scratch subscription
    /// `drill-<the id's last 8>` of its owner, checked, then deleted (`run.rs`).
    pub async fn start_drill(&self, b: &BackupRow) -> AppResult<pb::Restore> {
        // The id's last characters: its random part (the first ones are
        // the time it was made, shared by backups of the same minute).
        let hex = b.job.id.replace('-', "");
        let name = format!("drill-{}", &hex[hex.len() - 8..]);
        self.restore_into_new_as(b, &name, true).await
    }

    async fn restore_into_new_as(
        &self,
        b: &BackupRow,
        name: &str,
        drill: bool,
    ) -> AppResult<pb::Restore> {
        restorable(b)?;
        let owner = crate::users::queries::by_id(self.db().read(), &b.job.user_id)
            .await?
            .filter(|u| u.active)
            .ok_or_else(|| {
                AppError::FailedPrecondition("the backup's owner is gone or deactivated".into())
            })?;
        let manifest: Manifest =
            serde_json::from_str(&self.inner.sealer.open(&b.job.id, &b.manifest)?)
                .map_err(anyhow::Error::from)?;
        let template = {
            use base64::Engine;
            use prost::Message;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(&manifest.template)
                .map_err(anyhow::Error::from)?;
            pb::ServiceTemplate::decode(bytes.as_slice()).map_err(anyhow::Error::from)?
        };
        let id = self
            .inner
            .subs
            .create_from_backup(
                &owner,
                name,
                (&manifest.service_id, &manifest.service_slug),
                &manifest.version,
                template,
                &manifest.variables,
                &manifest.generated,
            )
            .await?;
        let sub = crate::subscriptions::queries::get(self.db(), &id)
            .await?
            .ok_or_else(|| crate::subscriptions::queries::not_found(&id))?;
        tracing::info!(subscription = %id, backup = %b.job.id, drill, "subscription made from a backup");
        self.restore_as(b, &sub, drill).await
    }

    /// Backup `id` as stored.
    pub async fn backup(&self, id: &str) -> AppResult<Option<BackupRow>> {
        queries::backup(self.db(), id).await
    }

    /// Restore `id` as stored.
    pub async fn restore_row(&self, id: &str) -> AppResult<Option<RestoreRow>> {
        queries::restore(self.db(), id).await
    }

    /// Backups of `user` ('' all) and `subscription` ('' all), newest first.
    pub async fn list(&self, user: &str, subscription: &str) -> AppResult<Vec<pb::Backup>> {
        let mut out = Vec::new();
        for b in queries::backups(self.db(), user, subscription).await? {
            out.push(self.backup_pb(&b).await?);
        }
        Ok(out)
    }

    /// `b` as answered, with its volumes' progress.
    pub async fn backup_pb(&self, b: &BackupRow) -> AppResult<pb::Backup> {
        let mut transfers = queries::transfers_of(self.db(), &b.job.id).await?;
        transfers.retain(|t| t.kind == "BACKUP");
        let p = Progress::of(&b.job, &transfers);
        Ok(pb::Backup {
            id: b.job.id.clone(),
            subscription_id: b.job.subscription_id.clone(),
            subscription_name: b.subscription_name.clone(),
            user_id: b.job.user_id.clone(),
            destination_id: b.destination_id.clone(),
            status: backup_status(&b.job.status) as i32,
            reason: b.job.reason.clone(),
            service_version: b.service_version.clone(),
            volumes: transfers.iter().map(volume_pb).collect(),
            bytes_done: p.done,
            bytes_total: p.total,
            bytes_per_second: p.rate,
            seconds_remaining: p.left,
            bytes_added: transfers.iter().map(|t| t.bytes_added).sum(),
            created_at: Some(timestamp(b.job.created_at)),
            finished_at: (b.job.finished_at > 0).then(|| timestamp(b.job.finished_at)),
            trigger: match (b.trigger_kind.as_str(), b.then_action.as_str()) {
                ("SCHEDULE", _) => pb::BackupTrigger::Schedule,
                (_, "UPGRADE") => pb::BackupTrigger::BeforeUpgrade,
                (_, "DELETE") => pb::BackupTrigger::BeforeDelete,
                _ => pb::BackupTrigger::Manual,
            } as i32,
            upgrade_to: b.then_version.clone(),
        })
    }

    /// `r` as answered, with its volumes' progress.
    pub async fn restore_pb(&self, r: &RestoreRow) -> AppResult<pb::Restore> {
        let mut transfers = queries::transfers_of(self.db(), &r.job.id).await?;
        transfers.retain(|t| t.kind == "RESTORE");
        let p = Progress::of(&r.job, &transfers);
        Ok(pb::Restore {
            id: r.job.id.clone(),
            backup_id: r.backup_id.clone(),
            subscription_id: r.job.subscription_id.clone(),
            status: restore_status(&r.job.status) as i32,
            reason: r.job.reason.clone(),
            volumes: transfers.iter().map(volume_pb).collect(),
            bytes_done: p.done,
            bytes_total: p.total,
            created_at: Some(timestamp(r.job.created_at)),
            finished_at: (r.job.finished_at > 0).then(|| timestamp(r.job.finished_at)),
            drill: r.drill,
        })
    }
}

/// A job's progress summed over its volumes.
struct Progress {
    done: i64,
    total: i64,
    rate: i64,
    left: i64,
}

impl Progress {
    fn of(job: &JobRow, transfers: &[TransferRow]) -> Progress {
        let done: i64 = transfers.iter().map(|t| t.bytes_done).sum();
        let total: i64 = transfers.iter().map(|t| t.bytes_total).sum();
        let end = if job.finished_at > 0 {
            job.finished_at
        } else {
            now_ms()
        };
        let secs = (end - job.started_at) as f64 / 1000.0;
        let rate = if job.started_at > 0 && secs > 0.0 {
            (done as f64 / secs) as i64
        } else {
            0
        };
        let left = if job.finished_at > 0 {
            0
        } else if rate > 0 && total >= done {
            (total - done) / rate
        } else {
            -1
        };
        Progress {
            done,
            total,
            rate,
            left,
        }
    }
}

fn volume_pb(t: &TransferRow) -> pb::BackupVolume {
    pb::BackupVolume {
        claim: t.claim.clone(),
        worker_id: t.worker_id.clone(),
        done: t.state == "DONE",
        bytes_done: t.bytes_done,
        bytes_total: t.bytes_total,
        snapshot_id: t.snapshot_id.clone(),
        error: t.error.clone(),
    }
}

fn backup_status(s: &str) -> pb::BackupStatus {
    match s {
        "PENDING" => pb::BackupStatus::Pending,
        "RUNNING" => pb::BackupStatus::Running,
        "COMPLETE" => pb::BackupStatus::Complete,
        "FAILED" => pb::BackupStatus::Failed,
        // Being forgotten: still complete until it is gone.
        "EXPIRING" => pb::BackupStatus::Complete,
        _ => pb::BackupStatus::Unspecified,
    }
}

fn restore_status(s: &str) -> pb::RestoreStatus {
    match s {
        "PENDING" => pb::RestoreStatus::Pending,
        "RUNNING" => pb::RestoreStatus::Running,
        "COMPLETE" => pb::RestoreStatus::Complete,
        "FAILED" => pb::RestoreStatus::Failed,
        _ => pb::RestoreStatus::Unspecified,
    }
}

fn destination_pb(d: &DestinationRow) -> pb::BackupDestination {
    pb::BackupDestination {
        id: d.id.clone(),
        name: d.name.clone(),
        endpoint: d.endpoint.clone(),
        region: d.region.clone(),
        bucket: d.bucket.clone(),
        prefix: d.prefix.clone(),
        is_default: d.is_default,
        created_at: Some(timestamp(d.created_at)),
        directory: d.directory.clone(),
    }
}

/// A directory destination's path: absolute, with no `.` or `..` part, on
/// one line; answered without a trailing `/`.
fn check_directory(dir: &str) -> AppResult<String> {
    use std::path::{Component, Path};
    let bad = || {
        AppError::invalid(
            "directory",
            "must be an absolute path (e.g. /var/lib/minispod/backups) without '.' or '..' parts",
        )
    };
    let trimmed = if dir.len() > 1 {
        dir.trim_end_matches('/')
    } else {
        dir
    };
    if trimmed.len() > 512 || trimmed.contains(['\0', '\n', '\r']) {
        return Err(bad());
    }
    let path = Path::new(trimmed);
    let mut components = path.components();
    if components.next() != Some(Component::RootDir)
        || components.clone().next().is_none()
        || !components.all(|c| matches!(c, Component::Normal(_)))
        || trimmed.contains("//")
    {
        return Err(bad());
    }
    Ok(trimmed.to_owned())
}

/// Creates `dir` (0700) when missing, checks it is the control plane's
/// own and writable by no one else, and marks it as destination `id`'s
/// (what `rest.rs` checks before it serves it).
fn prepare_directory(dir: &std::path::Path, id: &str) -> std::io::Result<()> {
    use std::{io::Write, os::unix::fs::DirBuilderExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let marker = dir.join(rest::MARKER);
    let mut f = std::fs::File::create(&marker)?;
    f.write_all(id.as_bytes())?;
    f.sync_all()?;
    std::fs::File::open(dir)?.sync_all()?;
    rest::check_destination_dir(dir, id)
}

/// FAILED_PRECONDITION unless backup `b` is COMPLETE.
fn restorable(b: &BackupRow) -> AppResult<()> {
    if b.job.status == "COMPLETE" {
        return Ok(());
    }
    Err(AppError::FailedPrecondition(format!(
        "backup {} is {}: only a complete backup is restored",
        b.job.id,
        b.job.status.to_lowercase()
    )))
}

/// What a customer's repository password is sealed to.
fn key_row(user: &str, destination: &str) -> String {
    format!("{user}/{destination}")
}

/// 32 random bytes, hex.
fn random_password() -> String {
    use rand::RngCore;
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// An endpoint is https://, or http:// to a loopback or private address
/// (a bucket on the operator's own network).
fn check_endpoint(endpoint: &str) -> AppResult<()> {
    let bad = || {
        AppError::invalid(
            "endpoint",
            "must be an https:// URL (http:// only to a loopback or private address)",
        )
    };
    let (scheme, rest) = endpoint.split_once("://").ok_or_else(bad)?;
    let host_port = rest.trim_end_matches('/');
    if host_port.is_empty() || host_port.contains(['/', '?', '#', '@', ' ']) || endpoint.len() > 256
    {
        return Err(bad());
    }
    match scheme {
        "https" => Ok(()),
        "http" => {
            let host = host_port
                .rsplit_once(':')
                .map_or(host_port, |(h, _)| h)
                .trim_start_matches('[')
                .trim_end_matches(']');
            let private = host == "localhost"
                || host.parse::<std::net::IpAddr>().is_ok_and(|ip| match ip {
                    std::net::IpAddr::V4(v4) => v4.is_loopback() || v4.is_private(),
                    std::net::IpAddr::V6(v6) => v6.is_loopback(),
                });
            if private { Ok(()) } else { Err(bad()) }
        }
        _ => Err(bad()),
    }
}

/// S3's bucket naming rules: 3-63 lower-case letters, digits, '.' and '-',
/// starting and ending with a letter or digit.
fn check_bucket(bucket: &str) -> AppResult<()> {
    let ok = (3..=63).contains(&bucket.len())
        && bucket
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
        && bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
        && bucket.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(AppError::invalid(
            "bucket",
            "must be 3 to 63 lower-case letters, digits, '.' and '-'",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_https_or_plain_http_to_a_private_address() {
        assert!(check_endpoint("https://s3.example.com").is_ok());
        assert!(check_endpoint("http://127.0.0.1:9000").is_ok());
        assert!(check_endpoint("http://10.1.2.3:9000/").is_ok());
        assert!(check_endpoint("http://s3.example.com").is_err());
        assert!(check_endpoint("ftp://x").is_err());
        assert!(check_endpoint("https://user@host").is_err());
        assert!(check_endpoint("https://").is_err());
    }

    #[test]
    fn bucket_names_follow_s3() {
        assert!(check_bucket("minispod-backups").is_ok());
        assert!(check_bucket("ab").is_err());
        assert!(check_bucket("Upper").is_err());
        assert!(check_bucket("-x-").is_err());
    }
}
