//! The agent's side of backups (#26): it claims the transfers of volumes
//! on its node (AgentService.ClaimTransfers, asked when its stream comes
//! up and whenever the control plane rings with a `transfers_pending`
//! command), runs each with restic (`backup::restic`), and reports progress
//! once a second and the end (ReportTransfer).
//!
//! Across restarts: the control plane keeps an unfinished transfer open;
//! the agent claims it again after a restart and starts it over. A backup
//! first looks for a snapshot tagged `transfer-<id>`: one found was
//! completed before the restart and is reported at once, otherwise the copy
//! runs again (restic never lists a snapshot whose upload did not finish).
//! A restore repairs a swap cut short (`backup::recover_interrupted`) and
//! runs again.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context as _;
use minispod_proto::v1::{self as pb, agent_service_client::AgentServiceClient};
use minispod_support::secret::Secret;
use tokio::sync::watch;
use tonic::transport::Channel;

use crate::backup::{
    self,
    restic::{Progress, Repository, Restic},
};

/// The share of a repository's data a restore drill's check reads back.
const CHECK_SUBSET: &str = "10%";
/// How often a running transfer reports its progress.
const REPORT_EVERY: Duration = Duration::from_secs(1);
/// How long the final report is retried before it is left to the control
/// plane's silence timeout.
const FINAL_REPORT_FOR: Duration = Duration::from_secs(600);

/// The connection a claim came over: where a directory destination on
/// the control plane's host is reached (restic's REST protocol on the
/// control plane's port), and the worker's certificate restic presents.
#[derive(Debug, Clone)]
pub struct Link {
    /// The control plane's URL the stream is connected to.
    pub server: String,
    /// The worker's client certificate, PEM.
    pub cert_pem: String,
    /// Its private key, PEM.
    pub key_pem: Secret,
    /// The CA the control plane's certificate is checked against, PEM.
    pub ca_pem: String,
}

/// The transfers this agent runs.
#[derive(Debug)]
pub struct Transfers {
    restic: Restic,
    volumes_dir: PathBuf,
    /// Where restic's TLS files for directory destinations are written
    /// (0600): `client.pem` (certificate and key) and `ca.pem`.
    tls_dir: PathBuf,
    /// Transfer id → its task.
    running: Mutex<HashMap<String, tokio::task::AbortHandle>>,
    /// The channel of the current stream's connection (mTLS as the worker).
    channel: watch::Sender<Option<Channel>>,
    /// Transfers under way through the control plane (a directory
    /// destination): their restic presents the current certificate.
    through_control_plane: std::sync::atomic::AtomicUsize,
}

/// Counts a transfer through the control plane while it lives.
struct Through<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for Through<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Transfers {
    /// Transfers run with `restic` on volumes under `volumes_dir` only,
    /// writing the TLS files restic needs for a directory destination in
    /// `tls_dir`.
    pub fn new(restic: Restic, volumes_dir: PathBuf, tls_dir: PathBuf) -> Arc<Transfers> {
        // A restic a killed agent left would race the copy started again.
        let killed = restic.kill_leftovers();
        if killed > 0 {
            tracing::info!(killed, "stopped the restic processes a previous run left");
        }
        Arc::new(Transfers {
            restic,
            volumes_dir,
            tls_dir,
            running: Mutex::new(HashMap::new()),
            through_control_plane: std::sync::atomic::AtomicUsize::new(0),
            channel: watch::channel(None).0,
        })
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<String, tokio::task::AbortHandle>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many transfers run now through the control plane (into a
    /// directory destination): a certificate renewal now would refuse
    /// their restic, which presents the certificate it started with.
    pub fn through_control_plane(&self) -> usize {
        self.through_control_plane
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many transfers run now.
    pub fn active(&self) -> usize {
        self.running().len()
    }

    /// Claims the transfers over `channel` (the stream's connection to
    /// `link`'s server, which later reports use too): starts those not
    /// running, stops those no longer listed.
    pub async fn claim(self: &Arc<Self>, channel: Channel, link: Link) -> anyhow::Result<()> {
        self.channel.send_replace(Some(channel.clone()));
        let mut orders = AgentServiceClient::new(channel)
            .claim_transfers(pb::ClaimTransfersRequest {})
            .await
            .context("ClaimTransfers")?
            .into_inner()
            .orders;
        if orders.iter().any(|o| !o.control_plane_path.is_empty()) {
            self.write_tls(&link)?;
            for o in &mut orders {
                if !o.control_plane_path.is_empty() {
                    o.repository = format!(
                        "rest:{}{}",
                        link.server.trim_end_matches('/'),
                        o.control_plane_path
                    );
                }
            }
        }
        let mut running = self.running();
        running.retain(|id, task| {
            let listed = orders.iter().any(|o| &o.id == id);
            if !listed {
                tracing::info!(transfer = %id, "transfer no longer listed; stopping it");
                task.abort();
            }
            listed && !task.is_finished()
        });
        for order in orders {
            if running.contains_key(&order.id) {
                continue;
            }
            let id = order.id.clone();
            let me = self.clone();
            let task = tokio::spawn(async move { me.execute(order).await });
            running.insert(id, task.abort_handle());
        }
        Ok(())
    }

    /// Writes the files restic presents and trusts towards `link`'s
    /// control plane (the certificate may have been renewed since).
    fn write_tls(&self, link: &Link) -> anyhow::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.tls_dir)
            .with_context(|| format!("create {}", self.tls_dir.display()))?;
        let mut client = link.cert_pem.trim_end().to_owned();
        client.push('\n');
        client.push_str(link.key_pem.expose());
        crate::state::write_private(&self.tls_dir.join("client.pem"), client.as_bytes())
            .context("write restic's client certificate")?;
        crate::state::write_private(&self.tls_dir.join("ca.pem"), link.ca_pem.as_bytes())
            .context("write restic's CA file")?;
        Ok(())
    }

    /// Runs one transfer to its end and reports it.
    async fn execute(self: Arc<Self>, order: pb::TransferOrder) {
        let id = order.id.clone();
        tracing::info!(transfer = %id, kind = ?order.kind(), volume = %order.volume_path, "transfer started");
        let _through = (!order.control_plane_path.is_empty()).then(|| {
            self.through_control_plane
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Through(&self.through_control_plane)
        });
        let (progress_tx, mut progress_rx) = watch::channel(Progress::default());
        let work = self.perform(&order, progress_tx);
        tokio::pin!(work);
        let mut tick = tokio::time::interval(REPORT_EVERY);
        let end = loop {
            tokio::select! {
                end = &mut work => break end,
                _ = tick.tick() => {
                    if progress_rx.has_changed().unwrap_or(false) {
                        let p = progress_rx.borrow_and_update().clone();
                        let report = running_report(&id, &p);
                        match self.report(report).await {
                            Ok(true) => {
                                tracing::info!(transfer = %id, "the control plane stopped the transfer");
                                self.running().remove(&id);
                                return;
                            }
                            Ok(false) => {}
                            Err(e) => tracing::debug!(transfer = %id, error = %format!("{e:#}"), "progress report failed"),
                        }
                    }
                }
            }
        };
        let p = progress_rx.borrow().clone();
        let report = match end {
            Ok(done) => {
                tracing::info!(transfer = %id, snapshot = %done.snapshot_id, bytes_added = done.bytes_added, "transfer done");
                let bytes = done.bytes.unwrap_or(p.total_bytes.max(p.bytes_done)) as i64;
                pb::ReportTransferRequest {
                    id: id.clone(),
                    state: pb::TransferState::Done as i32,
                    bytes_done: bytes,
                    bytes_total: bytes,
                    seconds_remaining: 0,
                    snapshot_id: done.snapshot_id,
                    bytes_added: done.bytes_added as i64,
                    error: String::new(),
                }
            }
            Err(e) => {
                let error = format!("{e:#}");
                tracing::warn!(transfer = %id, error = %error, "transfer failed");
                pb::ReportTransferRequest {
                    id: id.clone(),
                    state: pb::TransferState::Failed as i32,
                    bytes_done: p.bytes_done as i64,
                    bytes_total: p.total_bytes as i64,
                    seconds_remaining: -1,
                    error,
                    ..Default::default()
                }
            }
        };
        // The end must reach the control plane: retried (over whichever
        // connection is current) until it does.
        let deadline = tokio::time::Instant::now() + FINAL_REPORT_FOR;
        let mut wait = Duration::from_millis(200);
        loop {
            match self.report(report.clone()).await {
                Ok(_) => break,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!(transfer = %id, error = %format!("{e:#}"), "final report failed; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(10));
                }
                Err(e) => {
                    tracing::warn!(transfer = %id, error = %format!("{e:#}"), "final report failed; giving up");
                    break;
                }
            }
        }
        self.running().remove(&id);
    }

    /// Sends `report`; whether the control plane asks to stop.
    async fn report(&self, report: pb::ReportTransferRequest) -> anyhow::Result<bool> {
        let channel = self
            .channel
            .borrow()
            .clone()
            .context("no connection to the control plane")?;
        let r = tokio::time::timeout(
            Duration::from_secs(10),
            AgentServiceClient::new(channel).report_transfer(report),
        )
        .await
        .context("ReportTransfer timed out")?;
        match r {
            Ok(r) => Ok(r.into_inner().cancel),
            // The transfer is gone (its job was removed): stop.
            Err(s) if s.code() == tonic::Code::NotFound => Ok(true),
            Err(s) => Err(anyhow::anyhow!(
                "ReportTransfer: {}: {}",
                s.code(),
                s.message()
            )),
        }
    }

    async fn perform(
        &self,
        order: &pb::TransferOrder,
        progress: watch::Sender<Progress>,
    ) -> anyhow::Result<Done> {
        let repo = repository(order, &self.tls_dir);
        if order.kind() == pb::TransferKind::Check {
            self.restic.unlock(&repo).await?;
            self.restic.check(&repo, CHECK_SUBSET).await?;
            return Ok(Done {
                snapshot_id: String::new(),
                bytes_added: 0,
                bytes: Some(0),
            });
        }
        if order.kind() == pb::TransferKind::Forget {
            self.restic.unlock(&repo).await?;
            self.restic
                .forget_ids(&repo, &order.forget_snapshot_ids)
                .await?;
            return Ok(Done {
                snapshot_id: String::new(),
                bytes_added: 0,
                bytes: Some(0),
            });
        }
        let volume = self.volume(&order.volume_path)?;
        let set = |p: &Progress| {
            progress.send_replace(p.clone());
        };
        match order.kind() {
            pb::TransferKind::Backup => {
                if crate::backup::is_empty_dir(&volume)? {
                    return Ok(Done {
                        snapshot_id: crate::backup::EMPTY_SNAPSHOT.to_owned(),
                        bytes_added: 0,
                        bytes: Some(0),
                    });
                }
                self.restic.ensure_repository(&repo).await?;
                // Locks a killed restic left (stale by restic's rules).
                self.restic.unlock(&repo).await?;
                let tag = format!("transfer-{}", order.id);
                // Completed before a restart: report it, copy nothing.
                if let Some(s) = self
                    .restic
                    .snapshots(&repo, std::slice::from_ref(&tag))
                    .await?
                    .pop()
                {
                    let (bytes, _) = self.restic.snapshot_size(&repo, &s.id).await?;
                    return Ok(Done {
                        snapshot_id: s.id,
                        bytes_added: 0,
                        bytes: Some(bytes),
                    });
                }
                let mut tags = order.tags.clone();
                if !tags.contains(&tag) {
                    tags.push(tag);
                }
                let summary = self.restic.backup(&repo, &volume, &tags, set).await?;
                Ok(Done {
                    snapshot_id: summary.snapshot_id,
                    bytes_added: summary.data_added,
                    bytes: Some(summary.bytes_processed),
                })
            }
            pb::TransferKind::Restore => {
                if order.snapshot_id.is_empty() {
                    anyhow::bail!("a restore names its snapshot");
                }
                self.restic.unlock(&repo).await?;
                backup::restore_in_place(&self.restic, &repo, &order.snapshot_id, &volume, set)
                    .await?;
                Ok(Done {
                    snapshot_id: order.snapshot_id.clone(),
                    bytes_added: 0,
                    bytes: None,
                })
            }
            pb::TransferKind::Forget | pb::TransferKind::Check | pb::TransferKind::Unspecified => {
                anyhow::bail!("unknown transfer kind")
            }
        }
    }

    /// `path` if it is a directory inside `--volumes-dir` (after resolving
    /// links): an order never makes the agent read or replace anything else.
    fn volume(&self, path: &str) -> anyhow::Result<PathBuf> {
        let root = self
            .volumes_dir
            .canonicalize()
            .with_context(|| format!("--volumes-dir {}", self.volumes_dir.display()))?;
        let p = Path::new(path);
        if !p.is_absolute() {
            anyhow::bail!("volume path {path} is not absolute");
        }
        let real = p.canonicalize().with_context(|| format!("volume {path}"))?;
        if real == root || !real.starts_with(&root) || !real.is_dir() {
            anyhow::bail!(
                "volume {path} is not a directory inside --volumes-dir {}",
                root.display()
            );
        }
        Ok(real)
    }
}

/// What a finished transfer reports.
struct Done {
    snapshot_id: String,
    bytes_added: u64,
    /// The bytes read or written, when known better than the last progress
    /// (a backup's summary).
    bytes: Option<u64>,
}

fn running_report(id: &str, p: &Progress) -> pb::ReportTransferRequest {
    pb::ReportTransferRequest {
        id: id.to_owned(),
        state: pb::TransferState::Running as i32,
        bytes_done: p.bytes_done as i64,
        bytes_total: p.total_bytes as i64,
        seconds_remaining: p.seconds_remaining.map_or(-1, |s| s as i64),
        ..Default::default()
    }
}

fn repository(order: &pb::TransferOrder, tls_dir: &Path) -> Repository {
    let bound = |k: i32| (k > 0).then_some(k as u32);
    Repository {
        tls: (!order.control_plane_path.is_empty()).then(|| backup::restic::ResticTls {
            ca_file: tls_dir.join("ca.pem"),
            client_pem: tls_dir.join("client.pem"),
        }),
        location: order.repository.clone(),
        password: Secret::new(order.password.clone()),
        credentials: order
            .environment
            .iter()
            .map(|(k, v)| (k.clone(), Secret::new(v.clone())))
            .collect(),
        limit_upload_kib: bound(order.limit_upload_kib),
        limit_download_kib: bound(order.limit_download_kib),
    }
}
