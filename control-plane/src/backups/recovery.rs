//! Backups a fresh control plane can bring back: the store holds each
//! backup's manifest and each customer's repository password, and a lost
//! store must not take the backups with it.
//!
//! - Each customer's repository gets a second restic key, whose password
//!   is derived from the operator's sealing key and the repository's path
//!   segment (`Sealer::recovery_password`): whoever holds `secrets.key`
//!   opens it, nobody else.
//! - Each complete backup stores a record of itself in its repository, as
//!   a snapshot of one file (`minispod-backup.json`, tagged
//!   `minispod-record` and `backup-<id>`): its manifest, sealed as in its
//!   row (so the record alone gives away no secret), and its volumes'
//!   snapshots. The runner stores it once the backup completes (`pass`),
//!   and again after a failed try once its claim lapses.
//! - ImportBackups (`Backups::import`) lists a repository's records, opens
//!   each, checks its volumes' snapshots are there, and stores the backups
//!   for an owner here, keeping their ids (the manifests are sealed for
//!   them).

use std::{collections::BTreeMap, process::Stdio, time::Duration};

use minispod_proto::v1 as pb;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

use super::{
    Backups, Repository,
    queries::{self, BackupRow, JobRow, TransferRow},
    run::EMPTY_SNAPSHOT,
};
use crate::{
    error::{AppError, AppResult},
    store::{new_id, now_ms},
    users::queries::UserRow,
};

/// The record's file name in its snapshot.
const RECORD_FILE: &str = "minispod-backup.json";
/// The tag of the records' snapshots.
const RECORD_TAG: &str = "minispod-record";
/// How long a replica's claim to store a record stands (a failed try is
/// retried after it): longer than a try may take (`STORE_DEADLINE`).
const CLAIM: Duration = Duration::from_secs(300);
/// How long storing one record may take, all its restic calls together.
const STORE_DEADLINE: Duration = Duration::from_secs(240);
/// How long one ImportBackups call reads records before it answers with
/// the rest as `remaining` (the request timeout is 30 s by default).
const IMPORT_DEADLINE: Duration = Duration::from_secs(20);
/// How long one restic call here may take.
const RESTIC_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest record read back.
const MAX_RECORD: usize = 4 << 20;
/// The largest snapshot list read.
const MAX_LIST: usize = 64 << 20;
/// Backups imported per call.
const IMPORT_BATCH: usize = 50;
/// Records stored at once by a replica.
pub(super) const RECORDING: usize = 2;

/// The record file: the record's JSON, and the tag that vouches for it
/// (`Sealer::recovery_tag`: made with the operator's key for this
/// repository, so a record written by anyone else, or copied from another
/// repository, is refused).
#[derive(Debug, Serialize, Deserialize)]
struct RecordFile {
    format: u32,
    record: String,
    tag: String,
}

/// What a backup's record holds.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    format: u32,
    backup_id: String,
    subscription_id: String,
    subscription_name: String,
    service_version: String,
    trigger_kind: String,
    created_at: i64,
    started_at: i64,
    finished_at: i64,
    /// The manifest, sealed for the backup's id.
    manifest: String,
    /// The owner's email address then: whom ImportBackups gives it to when
    /// no owner is named.
    #[serde(default)]
    owner_email: String,
    volumes: Vec<RecordVolume>,
}

#[derive(Debug, Serialize, Deserialize)]
struct RecordVolume {
    claim: String,
    snapshot_id: String,
    bytes_total: i64,
    bytes_added: i64,
}

/// A snapshot as `restic snapshots --json` lists it.
#[derive(Debug, Deserialize)]
struct Snapshot {
    id: String,
    short_id: String,
    #[serde(default)]
    tags: Vec<String>,
    time: String,
}

/// Starts storing the records of complete backups not stored yet, a few
/// at a time.
pub(super) async fn pass(b: &Backups) -> AppResult<()> {
    let now = now_ms();
    let before = now - CLAIM.as_millis() as i64;
    for row in queries::records_to_store(b.db(), before).await? {
        let Ok(permit) = b.inner.recording.clone().try_acquire_owned() else {
            break;
        };
        // The customer's repository is locked while old backups are
        // forgotten.
        if queries::user_forgetting(b.db(), &row.job.user_id).await?
            || !queries::claim_record(b.db(), &row.job.id, now, before).await?
        {
            continue;
        }
        let b = b.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let stored = tokio::time::timeout(STORE_DEADLINE, store_record(&b, &row))
                .await
                .unwrap_or_else(|_| Err(format!("took over {}s", STORE_DEADLINE.as_secs())));
            match stored {
                Ok(snapshot) => {
                    tracing::debug!(backup = %row.job.id, snapshot, "backup's record stored");
                    if let Err(e) = queries::record_stored(b.db(), &row.job.id, &snapshot).await {
                        tracing::warn!(backup = %row.job.id, error = %format!("{e:#}"), "recording a stored record failed");
                        return;
                    }
                    // The customer's retentions waited for their records.
                    if let Err(e) = retain_all(&b, &row.job.user_id).await {
                        tracing::warn!(user = %row.job.user_id, error = %format!("{e:#}"),
                            "backup retention failed; tried again after the next scheduled backup");
                    }
                }
                Err(why) => tracing::warn!(backup = %row.job.id, why,
                    "storing a backup's record in its repository failed; tried again in {}s",
                    CLAIM.as_secs()),
            }
        });
    }
    Ok(())
}

/// Stores backup `row`'s record in its repository (made first if it has
/// none: a backup without volumes), adding the repository's recovery key
/// when it lacks it; the record's snapshot id.
async fn store_record(b: &Backups, row: &BackupRow) -> Result<String, String> {
    let (user, dest) = (&row.job.user_id, &row.destination_id);
    let fail = |e: AppError| format!("{e:#}");
    let repo = b
        .repository(user, dest)
        .await
        .map_err(fail)?
        .ok_or("its destination or its key is gone")?;
    if !queries::key_initialized(b.db(), user, dest)
        .await
        .map_err(fail)?
    {
        if !queries::claim_init(b.db(), user, dest, now_ms(), CLAIM.as_millis() as i64)
            .await
            .map_err(fail)?
        {
            return Err("its repository is being made".into());
        }
        let made = b.create_repository(&repo).await;
        if made.is_err() {
            let _ = queries::release_init(b.db(), user, dest).await;
        }
        made?;
        queries::key_created(b.db(), user, dest)
            .await
            .map_err(fail)?;
    }
    // A key hint is recorded once the recovery key is added.
    if queries::key(b.db(), user, dest)
        .await
        .map_err(fail)?
        .is_none_or(|(_, hint)| hint.is_empty())
    {
        let hint = add_recovery_key(b, &repo, row.repository_user()).await?;
        queries::recovery_added(b.db(), user, dest, &hint)
            .await
            .map_err(fail)?;
        tracing::info!(user = %user, destination = %dest, "backup repository's recovery key added");
    }
    let volumes = queries::transfers_of(b.db(), &row.job.id)
        .await
        .map_err(fail)?
        .into_iter()
        .filter(|t| t.kind == "BACKUP" && t.state == "DONE")
        .map(|t| RecordVolume {
            claim: t.claim,
            snapshot_id: t.snapshot_id,
            bytes_total: t.bytes_total,
            bytes_added: t.bytes_added,
        })
        .collect();
    let record = Record {
        format: 1,
        backup_id: row.job.id.clone(),
        subscription_id: row.job.subscription_id.clone(),
        subscription_name: row.subscription_name.clone(),
        service_version: row.service_version.clone(),
        trigger_kind: row.trigger_kind.clone(),
        created_at: row.job.created_at,
        started_at: row.job.started_at,
        finished_at: row.job.finished_at,
        manifest: row.manifest.clone(),
        owner_email: crate::users::queries::by_id(b.db().read(), user)
            .await
            .map_err(fail)?
            .map(|u| u.email)
            .unwrap_or_default(),
        volumes,
    };
    let record = serde_json::to_string(&record).map_err(|e| e.to_string())?;
    let file = RecordFile {
        format: 1,
        tag: b
            .inner
            .sealer
            .recovery_tag(row.repository_user(), record.as_bytes()),
        record,
    };
    let json = serde_json::to_vec(&file).map_err(|e| e.to_string())?;
    let mut cmd = b.restic(&repo, "backup");
    cmd.args(["--json", "--stdin", "--stdin-filename", RECORD_FILE])
        .args(["--host", "minispod", "--tag", RECORD_TAG])
        .args(["--tag", &format!("backup-{}", row.job.id)]);
    let out = run(cmd, Some(json), 1 << 20).await?;
    // The last line is the summary, which names the snapshot.
    #[derive(Deserialize)]
    struct Summary {
        message_type: String,
        #[serde(default)]
        snapshot_id: String,
    }
    String::from_utf8_lossy(&out)
        .lines()
        .filter_map(|l| serde_json::from_str::<Summary>(l).ok())
        .find(|s| s.message_type == "summary" && super::agents::snapshot_id_ok(&s.snapshot_id))
        .map(|s| s.snapshot_id)
        .ok_or_else(|| "restic named no snapshot".to_owned())
}

/// Applies the retention of each of user `user`'s scheduled
/// subscriptions.
async fn retain_all(b: &Backups, user: &str) -> AppResult<()> {
    for sub in queries::scheduled_subscriptions_of(b.db(), user).await? {
        // One subscription's failure holds up no other's.
        if let Err(e) = super::run::retain(b, &sub, user).await {
            tracing::warn!(subscription = %sub, error = %format!("{e:#}"), "backup retention failed");
        }
    }
    Ok(())
}

/// Forgets backup `row`'s record, snapshot `record`, with the control
/// plane's restic (a backup without volumes' snapshots: no agent forgets
/// anything of it).
pub(super) async fn forget_record(
    b: &Backups,
    row: &BackupRow,
    record: &str,
) -> Result<(), String> {
    let repo = b
        .repository_of(row)
        .await
        .map_err(|e| format!("{e:#}"))?
        .ok_or("its destination or its key is gone")?;
    let mut cmd = b.restic(&repo, "forget");
    cmd.arg(record);
    run(cmd, None, 1 << 20).await.map(|_| ())
}

/// Adds `repo`'s recovery key (for path segment `path_user`) unless the
/// recovery password opens it already (a try that added it and was not
/// recorded); the id of the key `repo`'s own password opens.
async fn add_recovery_key(
    b: &Backups,
    repo: &Repository,
    path_user: &str,
) -> Result<String, String> {
    #[derive(Deserialize)]
    struct Key {
        current: bool,
        id: String,
    }
    let mut list = b.restic(repo, "key");
    list.args(["list", "--json"]);
    let keys: Vec<Key> = serde_json::from_slice(&run(list, None, 1 << 20).await?)
        .map_err(|e| format!("restic key list: {e}"))?;
    let own = keys
        .into_iter()
        .find(|k| k.current && !k.id.is_empty() && k.id.bytes().all(|c| c.is_ascii_hexdigit()))
        .map(|k| k.id)
        .ok_or("restic key list named no current key")?;
    let recovery = b.inner.sealer.recovery_password(path_user);
    let mut probe = b.restic(repo, "cat");
    probe.arg("config").env("RESTIC_PASSWORD", &recovery);
    match run(probe, None, 64 << 10).await {
        Ok(_) => return Ok(own),
        Err(e) if wrong_password(&e) => {}
        Err(e) => return Err(e),
    }
    // The new password from a pipe, never a file or an argument.
    let mut add = b.restic(repo, "key");
    add.args(["add", "--host", "minispod", "--user", "recovery"])
        .args(["--new-password-file", "/dev/stdin"]);
    run(add, Some(recovery.into_bytes()), 64 << 10).await?;
    Ok(own)
}

/// Whether restic's complaint says the password opens no key.
fn wrong_password(stderr: &str) -> bool {
    stderr.contains("wrong password") || stderr.contains("no key found")
}

/// Runs `cmd` (from `Backups::restic`) within `RESTIC_TIMEOUT`, `input` on
/// its stdin; its stdout (at most `max` bytes), or its stderr's end.
async fn run(
    mut cmd: tokio::process::Command,
    input: Option<Vec<u8>>,
    max: usize,
) -> Result<Vec<u8>, String> {
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("cannot run restic: {e}"))?;
    let (mut stdin, mut stdout, stderr) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let work = async {
        let feed = async {
            if let (Some(mut w), Some(data)) = (stdin.take(), input) {
                // restic may stop reading (a failure): its exit says why.
                let _ = w.write_all(&data).await;
            }
        };
        let read = async {
            let mut out = Vec::new();
            let mut buf = vec![0u8; 64 << 10];
            let Some(r) = stdout.as_mut() else {
                return Ok(out);
            };
            loop {
                let n = r.read(&mut buf).await.map_err(|e| e.to_string())?;
                if n == 0 {
                    return Ok(out);
                }
                if out.len() + n > max {
                    return Err(format!("restic answered over {max} bytes"));
                }
                out.extend_from_slice(&buf[..n]);
            }
        };
        let tail = async {
            match stderr {
                Some(e) => super::restic::stderr_tail(e).await,
                None => String::new(),
            }
        };
        let ((), out, tail) = tokio::join!(feed, read, tail);
        let status = child.wait().await.map_err(|e| e.to_string())?;
        let out = out?;
        if status.success() {
            Ok(out)
        } else if tail.is_empty() {
            Err(format!("restic failed ({status})"))
        } else {
            Err(tail)
        }
    };
    tokio::time::timeout(RESTIC_TIMEOUT, work)
        .await
        .unwrap_or_else(|_| Err(format!("restic took over {}s", RESTIC_TIMEOUT.as_secs())))
}

/// Whether `s` may be a repository's path segment (a user id).
fn repository_ok(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
}

impl Backups {
    /// ImportBackups: the backups recorded in repository `r.repository` at
    /// destination `r.destination_id`, stored for `r.owner_id`, or when it
    /// is empty for the user here with the email address the newest record
    /// names.
    pub async fn import(
        &self,
        r: pb::ImportBackupsRequest,
    ) -> AppResult<pb::ImportBackupsResponse> {
        if !repository_ok(&r.repository) {
            return Err(AppError::invalid(
                "repository",
                "must be a repository's last path segment (a user id: letters, digits and '-')",
            ));
        }
        if r.destination_id.is_empty() {
            return Err(AppError::invalid("destination_id", "is required"));
        }
        // Answered in time for the request timeout (30 s by default).
        let deadline = tokio::time::Instant::now() + IMPORT_DEADLINE;
        let dest = queries::destination(self.db(), &r.destination_id)
            .await?
            .filter(|d| d.id == r.destination_id)
            .ok_or_else(|| {
                AppError::NotFound(format!("backup destination {} not found", r.destination_id))
            })?;
        let named = if r.owner_id.is_empty() {
            None
        } else {
            Some(
                crate::users::queries::by_id(self.db().read(), &r.owner_id)
                    .await?
                    .filter(|u| u.active)
                    .ok_or_else(|| AppError::NotFound(format!("user {} not found", r.owner_id)))?,
            )
        };
        // This control plane's own repository is its backups' already.
        if queries::key(self.db(), &r.repository, &dest.id)
            .await?
            .is_some()
        {
            return Err(AppError::FailedPrecondition(format!(
                "repository {} at {} is one this control plane keeps (user {}'s): its backups are here",
                r.repository, dest.name, r.repository
            )));
        }
        let repo = self.repository_at(
            &dest,
            &r.repository,
            self.inner.sealer.recovery_password(&r.repository),
        )?;
        let mut list = self.restic(&repo, "snapshots");
        list.arg("--json");
        let listed = run(list, None, MAX_LIST).await.map_err(|e| {
            if wrong_password(&e) {
                AppError::FailedPrecondition(format!(
                    "repository {} at {} does not open with this control plane's secrets.key: \
                     start it with the key of the control plane that made the repository",
                    r.repository, dest.name
                ))
            } else if super::restic::is_missing(&e) {
                AppError::NotFound(format!("no repository {} at {}", r.repository, dest.name))
            } else {
                AppError::Refused {
                    code: Code::Unavailable,
                    reason: "DESTINATION_UNAVAILABLE",
                    message: format!("the destination {} cannot be read: {e}", dest.name),
                }
            }
        })?;
        let snapshots: Vec<Snapshot> =
            serde_json::from_slice(&listed).map_err(anyhow::Error::from)?;
        // Each backup's records, newest first (one stored twice, or one
        // planted beside it: the first vouched for counts).
        let mut records: BTreeMap<String, Vec<&Snapshot>> = BTreeMap::new();
        for s in snapshots
            .iter()
            .filter(|s| s.tags.iter().any(|t| t == RECORD_TAG))
        {
            let Some(id) = s.tags.iter().find_map(|t| t.strip_prefix("backup-")) else {
                continue;
            };
            records.entry(id.to_owned()).or_default().push(s);
        }
        for candidates in records.values_mut() {
            candidates.sort_by(|a, b| b.time.cmp(&a.time));
        }
        let ids: Vec<String> = records.keys().cloned().collect();
        let here = queries::existing_backups(self.db(), &ids).await?;
        let mut todo: Vec<(&String, &Vec<&Snapshot>)> = records
            .iter()
            .filter(|(id, _)| !here.contains(id))
            .collect();
        todo.sort_by(|a, b| b.1[0].time.cmp(&a.1[0].time));
        let has = |id: &str| {
            id == EMPTY_SNAPSHOT || snapshots.iter().any(|s| s.short_id == id || s.id == id)
        };
        // Records are read until 50 are taken or the time is up; the rest
        // is `remaining`, for the next call.
        let mut rows = Vec::new();
        let (mut incomplete, mut rejected, mut unread) = (0, 0, 0);
        for (id, candidates) in todo {
            if rows.len() >= IMPORT_BATCH || tokio::time::Instant::now() >= deadline {
                unread += 1;
                continue;
            }
            let mut found = None;
            let mut cut_off = false;
            for snap in candidates {
                let mut dump = self.restic(&repo, "dump");
                dump.args([snap.id.as_str(), &format!("/{RECORD_FILE}")]);
                let Ok(read) = tokio::time::timeout_at(deadline, run(dump, None, MAX_RECORD)).await
                else {
                    cut_off = true;
                    break;
                };
                // A snapshot that is no record (no such file, too large,
                // not vouched for) is passed over, never the whole import.
                match read.map(|raw| self.vouched(&r.repository, id, &raw)) {
                    Ok(Some(record)) => {
                        found = Some((record, snap.short_id.clone()));
                        break;
                    }
                    Ok(None) => {
                        tracing::warn!(backup = %id, repository = %r.repository, snapshot = %snap.id,
                        "a backup record not vouched for by this control plane's key; not imported")
                    }
                    Err(why) => {
                        tracing::warn!(backup = %id, repository = %r.repository, snapshot = %snap.id, why,
                        "a backup record could not be read; not imported")
                    }
                }
            }
            let Some((record, snapshot)) = found else {
                if cut_off {
                    unread += 1;
                } else {
                    rejected += 1;
                }
                continue;
            };
            if !record.volumes.iter().all(|v| has(&v.snapshot_id)) {
                incomplete += 1;
                continue;
            }
            rows.push((record, snapshot));
        }
        let owner = match named {
            Some(owner) => Some(owner),
            None if rows.is_empty() => None,
            None => Some(self.owner_by_record(&dest.id, &r.repository, &rows).await?),
        };
        let owner_id = owner.as_ref().map(|o| o.id.clone()).unwrap_or_default();
        let mut tx = self.db().begin().await?;
        let mut imported = Vec::new();
        for (record, snapshot) in rows {
            let row = BackupRow {
                job: JobRow {
                    id: record.backup_id.clone(),
                    subscription_id: record.subscription_id,
                    user_id: owner_id.clone(),
                    status: "COMPLETE".into(),
                    reason: format!("imported from {}", dest.name),
                    created_at: record.created_at,
                    started_at: record.started_at,
                    finished_at: record.finished_at,
                },
                subscription_name: record.subscription_name,
                destination_id: dest.id.clone(),
                service_version: record.service_version,
                manifest: record.manifest,
                trigger_kind: if record.trigger_kind == "SCHEDULE" {
                    "SCHEDULE".into()
                } else {
                    "MANUAL".into()
                },
                then_action: String::new(),
                then_version: String::new(),
                then_done_at: 0,
                manifest_snapshot: snapshot,
                repository_user: r.repository.clone(),
            };
            let copies: Vec<TransferRow> = record
                .volumes
                .into_iter()
                .map(|v| TransferRow {
                    id: new_id(),
                    job_id: row.job.id.clone(),
                    kind: "BACKUP".into(),
                    claim: v.claim,
                    worker_id: String::new(),
                    volume_path: String::new(),
                    state: "DONE".into(),
                    snapshot_id: v.snapshot_id,
                    bytes_done: v.bytes_total,
                    bytes_total: v.bytes_total,
                    seconds_remaining: 0,
                    bytes_added: v.bytes_added,
                    error: String::new(),
                    created_at: row.job.finished_at,
                    updated_at: row.job.finished_at,
                })
                .collect();
            queries::insert_imported(&mut tx, &row, &copies).await?;
            imported.push(row);
        }
        tx.commit().await?;
        tracing::info!(destination = %dest.id, repository = %r.repository, owner = %owner_id,
            imported = imported.len(), already_here = here.len(), incomplete, remaining = unread,
            "backups imported");
        let mut out = Vec::new();
        for row in &imported {
            out.push(self.backup_pb(row).await?);
        }
        Ok(pb::ImportBackupsResponse {
            imported: out,
            already_here: here.len() as i32,
            incomplete,
            remaining: unread,
            rejected,
            owner_id,
        })
    }

    /// The owner of an import that names none: who got this repository's
    /// backups before, else the active user with the address of the newest
    /// of `rows`' records.
    async fn owner_by_record(
        &self,
        dest: &str,
        repository: &str,
        rows: &[(Record, String)],
    ) -> AppResult<UserRow> {
        if let Some(user) = queries::imported_owner(self.db(), dest, repository).await?
            && let Some(owner) = crate::users::queries::by_id(self.db().read(), &user)
                .await?
                .filter(|u| u.active)
        {
            return Ok(owner);
        }
        let email = rows
            .iter()
            .max_by_key(|(r, _)| r.finished_at)
            .map(|(r, _)| r.owner_email.as_str())
            .unwrap_or_default();
        crate::users::queries::by_email(self.db(), email)
            .await?
            .filter(|u| u.active && !email.is_empty())
            .ok_or_else(|| {
                AppError::FailedPrecondition(format!(
                    "no active user here has the address {email:?} the repository's backups were \
                     made for: register them, or name owner_id"
                ))
            })
    }

    /// The record in `raw`, backup `id`'s in repository `repository`, when
    /// this control plane's key vouches for it and it is well formed.
    fn vouched(&self, repository: &str, id: &str, raw: &[u8]) -> Option<Record> {
        let file: RecordFile = serde_json::from_slice(raw).ok()?;
        if file.format != 1
            || !self
                .inner
                .sealer
                .verify_recovery_tag(repository, file.record.as_bytes(), &file.tag)
        {
            return None;
        }
        let mut record: Record = serde_json::from_str(&file.record).ok()?;
        let short = |s: &str, max: usize| s.len() <= max;
        let ok = record.format == 1
            && record.backup_id == id
            && record.backup_id.len() == 36
            && record
                .backup_id
                .bytes()
                .all(|c| c.is_ascii_hexdigit() || c == b'-')
            && short(&record.subscription_id, 64)
            && short(&record.subscription_name, 64)
            && short(&record.service_version, 64)
            && record.volumes.len() <= 64
            && record.volumes.iter().all(|v| {
                short(&v.claim, 253) && super::agents::snapshot_id_ok(&v.snapshot_id)
            })
            // A manifest sealed for this backup (a plain one would restore
            // whatever it names).
            && crate::sealed::Sealer::is_sealed(&record.manifest)
            && self.inner.sealer.open(id, &record.manifest).is_ok();
        for v in &mut record.volumes {
            v.bytes_total = v.bytes_total.max(0);
            v.bytes_added = v.bytes_added.max(0);
        }
        ok.then_some(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repository_is_named_by_a_path_segment_only() {
        assert!(repository_ok("0193a1b2-7c4d-7e8f-9a0b-1c2d3e4f5a6b"));
        for bad in ["", "..", "a/b", "a b", &"x".repeat(65)] {
            assert!(!repository_ok(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_wrong_password_is_told_from_other_failures() {
        assert!(wrong_password("Fatal: wrong password or no key found"));
        assert!(!wrong_password(
            "Fatal: unable to open config file: Stat: no such file"
        ));
    }
}
