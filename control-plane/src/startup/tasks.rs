//! The background tasks: each control loop, reporter and listener is
//! started by one call in [`Loops::spawn`], under one [`Tasks`] (a
//! `TaskTracker` and a `CancellationToken`) that stops them all at shutdown.

use std::{
    future::Future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    api::subscriptions::CallerLimits,
    auth::{AccountMail, AuthState, queries as refresh_db},
    cluster::ClusterLink,
    history::{HistorySettings, recorder::Recorder},
    metrics::{FleetGauges, Metrics},
    nodes::Nodes,
    notifications::{
        Notifier, customers::OutageLoop, fleet::FleetNotices, incidents::Timing,
        thresholds::ThresholdWatch,
    },
    store::{Db, now_ms},
    subscriptions::Subscriptions,
    workers::{enrollment::Enrollment, hub::FleetHub, queries as workers_db},
};

use super::health::{report_cluster_health, report_database_health};

/// How often in-memory rate-limit buckets that refilled are forgotten.
const LIMITER_PURGE_INTERVAL: Duration = Duration::from_secs(60);

/// The background tasks of a running server: stopped together by
/// [`Tasks::stop`], each at its next await point.
#[derive(Debug, Clone, Default)]
pub(super) struct Tasks {
    tracker: TaskTracker,
    token: CancellationToken,
    running: Arc<Running>,
}

/// The names of the tasks that have not ended, for the log when some do
/// not stop in time.
#[derive(Debug, Default)]
struct Running {
    next: AtomicU64,
    names: Mutex<Vec<(u64, &'static str)>>,
}

/// Removes its task's name from [`Running`] when the task ends.
struct Named {
    running: Arc<Running>,
    id: u64,
}

impl Drop for Named {
    fn drop(&mut self) {
        let mut names = self.running.names.lock().unwrap_or_else(|p| p.into_inner());
        names.retain(|(id, _)| *id != self.id);
    }
}

impl Tasks {
    fn named(&self, name: &'static str) -> Named {
        let id = self.running.next.fetch_add(1, Ordering::Relaxed);
        self.running
            .names
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((id, name));
        Named {
            running: self.running.clone(),
            id,
        }
    }

    /// Runs `task` until it ends or shutdown begins (it is then dropped at
    /// its next await point).
    pub(super) fn spawn(
        &self,
        name: &'static str,
        task: impl Future<Output = ()> + Send + 'static,
    ) {
        let named = self.named(name);
        let token = self.token.clone();
        self.tracker.spawn(async move {
            let _named = named;
            tokio::select! {
                () = token.cancelled() => {}
                () = task => {}
            }
        });
    }

    /// Tracks a task another module spawned: when shutdown begins it is
    /// aborted (it stops at its next await point) and waited for.
    pub(super) fn adopt(&self, name: &'static str, mut handle: JoinHandle<()>) {
        let named = self.named(name);
        let token = self.token.clone();
        self.tracker.spawn(async move {
            let _named = named;
            tokio::select! {
                _ = &mut handle => {}
                () = token.cancelled() => {
                    handle.abort();
                    let _ = handle.await;
                }
            }
        });
    }

    /// Tracks every task of `handles` under `name`.
    pub(super) fn adopt_all(&self, name: &'static str, handles: Vec<JoinHandle<()>>) {
        for handle in handles {
            self.adopt(name, handle);
        }
    }

    /// Cancels every task and waits up to `bound` for them to end; logs
    /// the ones that did not.
    pub(super) async fn stop(self, bound: Duration) {
        self.token.cancel();
        self.tracker.close();
        if tokio::time::timeout(bound, self.tracker.wait())
            .await
            .is_err()
        {
            let names = self
                .running
                .names
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .map(|(_, name)| *name)
                .collect::<Vec<_>>();
            tracing::warn!(
                tasks = ?names,
                "background tasks still running after the stop timeout; leaving them"
            );
        }
    }
}

/// Everything the background tasks need, made by `build`.
pub(super) struct Loops {
    /// Sign-in: the store, the login limiter.
    pub auth: AuthState,
    /// The mail handle (its delivery loop, its counters).
    pub account_mail: AccountMail,
    /// The node reconciler and drains.
    pub nodes: Nodes,
    /// The agents' streams.
    pub hub: FleetHub,
    /// Notices to users.
    pub notifier: Notifier,
    /// When administrators are told about workers.
    pub timing: Timing,
    /// grpc.health.v1 statuses.
    pub health: tonic_health::server::HealthReporter,
    /// Process metrics.
    pub metrics: Arc<Metrics>,
    /// Where `/metrics` is served, if anywhere.
    pub metrics_listener: Option<TcpListener>,
    /// The cluster link (perhaps unlinked).
    pub cluster: ClusterLink,
    /// The subscriptions.
    pub subscriptions: Subscriptions,
    /// Backups and restores (their runner).
    pub backups: crate::backups::Backups,
    /// The subscriptions' relay between replicas, started by `build`.
    pub subscription_relay: Vec<JoinHandle<()>>,
    /// How history is kept.
    pub history: HistorySettings,
    /// Enrollment (its limits are purged).
    pub enrollment: Enrollment,
    /// Per-user limits of SubscriptionService (purged).
    pub subscription_limits: CallerLimits,
    /// The versions-behind digest.
    pub digest: crate::notifications::digest::DigestSettings,
}

impl Loops {
    /// Starts every background task under `tasks`.
    pub(super) fn spawn(self, tasks: &Tasks) {
        let Loops {
            auth,
            account_mail,
            nodes,
            hub,
            notifier,
            timing,
            health,
            metrics,
            metrics_listener,
            cluster,
            subscriptions,
            backups,
            subscription_relay,
            history,
            enrollment,
            subscription_limits,
            digest,
        } = self;
        tasks.spawn("token cleanup", expire_refresh_tokens(auth.db.clone()));
        tasks.adopt(
            "mail delivery",
            account_mail
                .mail
                .spawn(auth.db.clone(), hub.replica_id().to_owned()),
        );
        tasks.adopt(
            "subscription notices",
            OutageLoop::new(auth.db.clone(), notifier.clone()).spawn(),
        );
        tasks.adopt(
            "worker thresholds",
            ThresholdWatch::new(hub.clone(), notifier.clone()).spawn(),
        );
        if let Some(h) =
            crate::notifications::digest::spawn(auth.db.clone(), notifier.clone(), digest)
        {
            tasks.adopt("versions-behind digest", h);
        }
        tasks.adopt(
            "fleet notices",
            FleetNotices::new(hub.clone(), notifier, timing.started_at(now_ms())).spawn(),
        );
        tasks.spawn(
            "database health",
            report_database_health(auth.db.clone(), health.clone()),
        );
        if let Some(listener) = metrics_listener {
            tasks.spawn(
                "metrics listener",
                minispod_support::serve_metrics(
                    listener,
                    metrics_render(&auth, &account_mail, &cluster, &hub, &metrics),
                ),
            );
        }
        tasks.adopt("metrics flusher", hub.spawn_flusher());
        tasks.adopt_all("cluster watch", cluster.spawn_watches());
        tasks.adopt_all("node reconciler", nodes.spawn(&hub));
        tasks.adopt_all("subscription reconciler", subscriptions.spawn(hub.clone()));
        tasks.adopt_all("subscription relay", subscription_relay);
        tasks.adopt("backup runner", backups.spawn());
        tasks.adopt(
            "history recorder",
            Recorder::new(auth.db.clone(), history, Some(subscriptions), metrics).spawn(&hub),
        );
        if cluster.is_linked() {
            tasks.spawn("cluster health", report_cluster_health(cluster, health));
        }
        tasks.spawn(
            "limit purge",
            purge_idle_limits(auth, enrollment, subscription_limits),
        );
    }
}

/// What `/metrics` shows: the process's counters and the fleet's gauges.
fn metrics_render(
    auth: &AuthState,
    account_mail: &AccountMail,
    cluster: &ClusterLink,
    hub: &FleetHub,
    metrics: &Arc<Metrics>,
) -> minispod_support::Render {
    let (db, hub, metrics, mail, cluster) = (
        auth.db.clone(),
        hub.clone(),
        metrics.clone(),
        account_mail.mail.clone(),
        cluster.clone(),
    );
    Arc::new(move || {
        let (db, hub, metrics, mail, cluster) = (
            db.clone(),
            hub.clone(),
            metrics.clone(),
            mail.clone(),
            cluster.clone(),
        );
        Box::pin(async move {
            let workers = workers_db::counts_by_status(&db).await.unwrap_or_default();
            let outbox = crate::mail::outbox::counts(db.read())
                .await
                .unwrap_or_default();
            let c = mail.counters();
            let load = |n: &std::sync::atomic::AtomicU64| n.load(Ordering::Relaxed);
            metrics.render(&FleetGauges {
                workers,
                streams_open: hub.online_count(),
                cluster: cluster.gauges(),
                kube_api: Some(&cluster)
                    .filter(|c| c.is_linked())
                    .map(ClusterLink::api_stats),
                outbox,
                deliveries: (load(&c.sent), load(&c.attempt_failures), load(&c.given_up)),
            })
        })
    })
}

/// Forgets in-memory rate-limit buckets that refilled, every minute.
async fn purge_idle_limits(auth: AuthState, enrollment: Enrollment, subscriptions: CallerLimits) {
    let mut every = tokio::time::interval(LIMITER_PURGE_INTERVAL);
    loop {
        every.tick().await;
        let n =
            auth.limiter.purge_idle() + enrollment.purge_idle_limits() + subscriptions.purge_idle();
        tracing::debug!(purged = n, "idle rate-limit buckets forgotten");
    }
}

/// Deletes refresh tokens a day after they expired, and rate-limit buckets
/// and known addresses that no longer limit anything, hourly.
async fn expire_refresh_tokens(db: Db) {
    let mut every = tokio::time::interval(Duration::from_secs(3600));
    loop {
        every.tick().await;
        let outcome = async {
            let now = now_ms();
            let mut tx = db.begin().await?;
            let n = refresh_db::delete_expired(&mut tx, now - 86_400_000).await?
                + crate::auth::recovery::delete_expired(&mut tx, now - 86_400_000).await?;
            // Buckets idle for a day have long refilled.
            let limits = crate::rate_limit::queries::delete_stale_limits(
                &mut tx,
                now - 86_400_000,
                crate::rate_limit::known_address_cutoff(now),
            )
            .await?;
            tx.commit().await?;
            Ok::<_, crate::error::AppError>(n + limits)
        }
        .await;
        match outcome {
            Ok(n) if n > 0 => tracing::info!(
                deleted = n,
                "expired refresh and account tokens and idle rate limits removed"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "refresh token cleanup failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shutdown ends the tasks started here and the ones adopted from other
    /// modules, though neither would end by itself.
    #[tokio::test]
    async fn stop_ends_spawned_and_adopted_tasks() {
        let tasks = Tasks::default();
        let held = Arc::new(());
        let mine = held.clone();
        tasks.spawn("forever", async move {
            let _held = mine;
            std::future::pending::<()>().await;
        });
        let theirs = held.clone();
        tasks.adopt(
            "adopted forever",
            tokio::spawn(async move {
                let _held = theirs;
                std::future::pending::<()>().await;
            }),
        );
        tokio::task::yield_now().await;
        assert_eq!(Arc::strong_count(&held), 3, "both tasks run");
        let tracker = tasks.tracker.clone();
        let running = tasks.running.clone();
        tokio::time::timeout(Duration::from_secs(5), tasks.stop(Duration::from_secs(2)))
            .await
            .expect("stop is bounded");
        assert!(tracker.is_empty(), "every task ended");
        assert_eq!(Arc::strong_count(&held), 1, "both futures were dropped");
        assert!(
            running.names.lock().unwrap().is_empty(),
            "no task is left listed as running"
        );
    }
}
