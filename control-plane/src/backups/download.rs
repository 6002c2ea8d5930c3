//! Downloading one volume of a backup as a tar archive.
//!
//! CreateBackupDownload checks who asks and answers a link,
//! `/downloads/<token>`: 32 random bytes, of which the store keeps only the
//! SHA-256, good once and for [`LINK_TTL`]. A plain HTTPS GET of it (the
//! console's link, `curl`) is served by the console layer in front of the
//! API ([`Backups::serve_download`]): the control plane runs `restic dump`
//! against the customer's repository and streams its standard output to
//! the client as it comes, [`CHUNK`] at a time through a channel of
//! [`IN_FLIGHT`] chunks, so a slow client slows restic down and the volume
//! is never held. The download bound (`--backup-limit-download`) applies.
//! At most [`PER_USER`] downloads of one customer and [`IN_ALL`] in all run
//! at once. A restic that fails mid-way ends the response with an error
//! (a reset stream, an incomplete body), never a truncated archive that
//! looks whole.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::{Full, StreamBody};
use minispod_proto::v1 as pb;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use tonic::body::Body;

use super::{Backups, queries, restorable};
use crate::{
    error::{AppError, AppResult},
    store::{now_ms, timestamp},
};

/// How long a link works if unused.
pub const LINK_TTL: Duration = Duration::from_secs(300);
/// Downloads one customer may run at once.
const PER_USER: usize = 2;
/// Downloads the control plane runs at once.
const IN_ALL: usize = 8;
/// The largest read from restic, and so the largest data frame.
const CHUNK: usize = 64 * 1024;
/// Chunks between restic and the client.
const IN_FLIGHT: usize = 4;
/// How long restic may take to write the archive's first bytes, and so
/// what bounds the answer's headers (`--request-timeout` bounds API calls
/// only); the link is not spent when it does not.
const FIRST_CHUNK: Duration = Duration::from_secs(20);
/// How long a client may leave a chunk unread before the download is
/// ended.
const STALL: Duration = Duration::from_secs(60);

/// Downloads running, per customer.
#[derive(Debug, Default)]
pub(super) struct Slots {
    running: Mutex<HashMap<String, usize>>,
}

/// One running download's place; given back when dropped.
struct Slot {
    backups: Backups,
    user: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut running = self
            .backups
            .inner
            .downloads
            .running
            .lock()
            .expect("poisoned");
        if let Some(n) = running.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                running.remove(&self.user);
            }
        }
    }
}

impl Backups {
    /// A link that downloads claim `claim` of backup `b` (its visibility to
    /// the caller checked already).
    pub async fn create_download(
        &self,
        b: &queries::BackupRow,
        claim: &str,
    ) -> AppResult<pb::CreateBackupDownloadResponse> {
        restorable(b)?;
        let transfers = queries::transfers_of(self.db(), &b.job.id).await?;
        if !transfers
            .iter()
            .any(|t| t.kind == "BACKUP" && t.claim == claim && !t.snapshot_id.is_empty())
        {
            return Err(AppError::NotFound(format!(
                "backup {} has no volume {claim:?}",
                b.job.id
            )));
        }
        let token = super::random_password();
        let now = now_ms();
        let expires_at = now + LINK_TTL.as_millis() as i64;
        queries::insert_download(
            self.db(),
            &hash(&token),
            &b.job.id,
            claim,
            &b.job.user_id,
            now,
            expires_at,
        )
        .await?;
        tracing::info!(backup = %b.job.id, claim, "backup download link made");
        Ok(pb::CreateBackupDownloadResponse {
            url: format!("/downloads/{token}"),
            file_name: file_name(&b.subscription_name, claim, &b.job.id),
            expires_at: Some(timestamp(expires_at)),
        })
    }

    /// The answer to a GET of `/downloads/<token>`.
    pub async fn serve_download(&self, token: &str) -> Response<Body> {
        match self.download(token).await {
            Ok(response) => response,
            Err((status, text)) => plain(status, text),
        }
    }

    async fn download(&self, token: &str) -> Result<Response<Body>, (StatusCode, String)> {
        let gone = || {
            (
                StatusCode::NOT_FOUND,
                "this download link is unknown, used or expired; ask for a new one\n".to_owned(),
            )
        };
        let internal = |e: AppError| {
            tracing::warn!(error = %format!("{e:#}"), "backup download failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the download failed; try again\n".to_owned(),
            )
        };
        if token.len() != 64 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(gone());
        }
        let hash = hash(token);
        let Some((backup_id, claim, user)) = queries::peek_download(self.db(), &hash, now_ms())
            .await
            .map_err(internal)?
        else {
            return Err(gone());
        };
        // The place first, so a refused download keeps its link.
        let slot = self.take_slot(&user).ok_or_else(|| {
            (
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "at most {PER_USER} downloads of one customer run at once; try again when \
                     one ends\n"
                ),
            )
        })?;
        let backup = queries::backup(self.db(), &backup_id)
            .await
            .map_err(internal)?
            .filter(|b| b.job.status == "COMPLETE")
            .ok_or_else(gone)?;
        let snapshot = queries::transfers_of(self.db(), &backup_id)
            .await
            .map_err(internal)?
            .into_iter()
            .find(|t| t.kind == "BACKUP" && t.claim == claim)
            .map(|t| t.snapshot_id)
            .filter(|s| super::agents::snapshot_id_ok(s))
            .ok_or_else(gone)?;
        let repo = self
            .repository_of(&backup)
            .await
            .map_err(internal)?
            .ok_or_else(gone)?;
        // Spends the link: only once the archive is on its way.
        let spend = || async {
            match queries::take_download(self.db(), &hash, now_ms()).await {
                Ok(Some(_)) => Ok(()),
                Ok(None) => Err(gone()),
                Err(e) => Err(internal(e)),
            }
        };

        let headers = |status| {
            crate::console::locked_down(status)
                .header(header::CONTENT_TYPE, "application/x-tar")
                .header(
                    header::CONTENT_DISPOSITION,
                    format!(
                        "attachment; filename=\"{}\"",
                        file_name(&backup.subscription_name, &claim, &backup_id)
                    ),
                )
                .header(header::CACHE_CONTROL, "no-store")
        };
        if snapshot == super::run::EMPTY_SNAPSHOT {
            // A volume with no files: a tar of nothing (its two zero
            // end-of-archive blocks).
            spend().await?;
            drop(slot);
            return Ok(headers(StatusCode::OK)
                .body(Body::new(Full::new(Bytes::from(vec![0u8; 1024]))))
                .expect("valid headers"));
        }
        let mut cmd = self.restic(&repo, "dump");
        cmd.args(["--archive", "tar"]);
        if self.inner.settings.limit_download_kib > 0 {
            cmd.arg("--limit-download")
                .arg(self.inner.settings.limit_download_kib.to_string());
        }
        cmd.arg("--")
            .arg(&snapshot)
            .arg("/")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| {
            tracing::warn!(restic = %self.inner.settings.restic.display(), error = %e,
                "cannot run restic for a backup download");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "this control plane cannot read backups (restic is not installed here)\n"
                    .to_owned(),
            )
        })?;
        let mut stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let tail = tokio::spawn(super::restic::stderr_tail(stderr));

        // The first chunk before the headers (a repository that cannot be
        // read is an error status, not an empty archive), within
        // FIRST_CHUNK; the link is spent only then.
        let mut first = vec![0u8; CHUNK];
        let n = match tokio::time::timeout(FIRST_CHUNK, stdout.read(&mut first)).await {
            Ok(read) => read.unwrap_or(0),
            Err(_) => {
                super::restic::interrupt(&mut child).await;
                return Err((
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the backup's destination is slow to answer; the link still works, try it \
                     again\n"
                        .to_owned(),
                ));
            }
        };
        if n == 0 {
            let status = child.wait().await;
            let tail = tail.await.unwrap_or_default();
            tracing::warn!(backup = %backup_id, claim, ?status, restic = %tail,
                "backup download: restic wrote nothing");
            return Err((
                StatusCode::BAD_GATEWAY,
                "the backup could not be read from its destination\n".to_owned(),
            ));
        }
        first.truncate(n);
        if let Err(e) = spend().await {
            super::restic::interrupt(&mut child).await;
            return Err(e);
        }

        let (tx, rx) =
            tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, tonic::Status>>(IN_FLIGHT);
        let backup_log = backup_id.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let mut sent = n as u64;
            let mut chunk = Bytes::from(first);
            loop {
                // A client that stopped reading (or went away) ends it: the
                // place and restic are not held for it.
                match tokio::time::timeout(STALL, tx.send(Ok(http_body::Frame::data(chunk)))).await
                {
                    Ok(Ok(())) => {}
                    _ => {
                        tracing::info!(backup = %backup_log, sent, "backup download abandoned");
                        super::restic::interrupt(&mut child).await;
                        return;
                    }
                }
                let mut buf = vec![0u8; CHUNK];
                match stdout.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => {
                        sent += n as u64;
                        buf.truncate(n);
                        chunk = Bytes::from(buf);
                    }
                    Err(e) => {
                        let _ = tx.send(Err(tonic::Status::internal(e.to_string()))).await;
                        super::restic::interrupt(&mut child).await;
                        return;
                    }
                }
            }
            match child.wait().await {
                Ok(s) if s.success() => {
                    tracing::info!(backup = %backup_log, sent, "backup download complete");
                }
                status => {
                    let tail = tail.await.unwrap_or_default();
                    tracing::warn!(backup = %backup_log, ?status, restic = %tail, sent,
                        "backup download: restic failed mid-way");
                    let _ = tx
                        .send(Err(tonic::Status::internal("restic failed mid-way")))
                        .await;
                }
            }
        });
        let body = Body::new(StreamBody::new(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ));
        Ok(headers(StatusCode::OK).body(body).expect("valid headers"))
    }

    fn take_slot(&self, user: &str) -> Option<Slot> {
        let mut running = self.inner.downloads.running.lock().expect("poisoned");
        let all: usize = running.values().sum();
        let mine = running.get(user).copied().unwrap_or(0);
        if all >= IN_ALL || mine >= PER_USER {
            return None;
        }
        running.insert(user.to_owned(), mine + 1);
        Some(Slot {
            backups: self.clone(),
            user: user.to_owned(),
        })
    }
}

/// `<subscription>-<claim>-<first 8 of the backup id>.tar`, in characters
/// safe in a header.
fn file_name(subscription: &str, claim: &str, backup: &str) -> String {
    let name = format!(
        "{subscription}-{claim}-{}.tar",
        backup.get(..8).unwrap_or(backup)
    );
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn hash(token: &str) -> String {
    minispod_support::hex(&Sha256::digest(token.as_bytes()))
}

fn plain(status: StatusCode, text: String) -> Response<Body> {
    crate::console::locked_down(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-store")
        .body(Body::new(Full::new(Bytes::from(text))))
        .expect("valid headers")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_header_safe() {
        assert_eq!(
            file_name("blog", "data-blog-0", "0123456789ab"),
            "blog-data-blog-0-01234567.tar"
        );
        assert_eq!(file_name("a\"b", "c;d", "x"), "a_b-c_d-x.tar");
    }
}
