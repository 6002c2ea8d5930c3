//! The incident engine: follows the fleet hub's changes and the incidents'
//! deadlines, and queues the notices the state machine calls for.
//!
//! Every replica runs it and sees every change (PostgreSQL relays them).
//! Each step reads the worker's incident row, applies the change or the
//! deadline and writes the row back together with the notice's outbox rows
//! in one write transaction; write transactions are serialised on both
//! backends, and a step that finds the row already advanced (by a replica
//! that got there first) changes nothing. So each notice is written once.
//! The state is in the store: after a restart the engine looks at every
//! worker once and the deadlines carry on from the stored rows.

use std::time::Duration;

use minispod_proto::v1 as pb;
use tokio::sync::broadcast::error::RecvError;

use super::{
    Notifier,
    incidents::{Alert, Incident, Seen, Timing},
    notices::{self, WorkerRef},
    queries,
};
use crate::{
    error::AppResult,
    store::{Db, now_ms},
    workers::{
        hub::{FleetHub, WorkerEvent},
        queries::{self as workers_db, WorkerRow},
        status,
    },
};

/// Longest sleep without looking at the deadlines: they are also set by
/// other replicas, whose changes arrive as events, so this is a safety net.
const RESCAN: Duration = Duration::from_secs(10);

/// The incident engine of one replica.
#[derive(Debug, Clone)]
pub struct FleetNotices {
    hub: FleetHub,
    notifier: Notifier,
    timing: Timing,
}

impl FleetNotices {
    /// The engine over `hub`'s events.
    pub fn new(hub: FleetHub, notifier: Notifier, timing: Timing) -> FleetNotices {
        FleetNotices {
            hub,
            notifier,
            timing,
        }
    }

    /// Runs until the task is aborted.
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.run())
    }

    async fn run(self) {
        // Subscribed before the catch-up, so nothing falls between them.
        let mut events = self.hub.subscribe();
        self.catch_up().await;
        loop {
            let wait = match queries::next_due(self.hub.db().read()).await {
                Ok(Some(due)) => Duration::from_millis(u64::try_from(due - now_ms()).unwrap_or(0)),
                Ok(None) => RESCAN,
                Err(e) => {
                    tracing::warn!(error = %e, "notifications: cannot read the next deadline");
                    RESCAN
                }
            }
            .min(RESCAN);
            tokio::select! {
                event = events.recv() => match event {
                    Ok((WorkerEvent::Upserted(w), _)) => self.step_logged(&w.id, Some(seen_of_pb(&w))).await,
                    Ok((WorkerEvent::Deleted(id), _)) => self.step_logged(&id, None).await,
                    Ok((WorkerEvent::Metrics(_), _)) => {}
                    Err(RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "notifications: fell behind the fleet's changes; looking at every worker");
                        self.catch_up().await;
                    }
                    Err(RecvError::Closed) => return,
                },
                () = tokio::time::sleep(wait) => self.fire_due().await,
            }
        }
    }

    /// Looks at every worker that may have something going on.
    async fn catch_up(&self) {
        match queries::workers_to_look_at(self.hub.db().read()).await {
            Ok(ids) => {
                for id in ids {
                    self.step_logged(&id, None).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "notifications: cannot list the workers"),
        }
    }

    async fn fire_due(&self) {
        match queries::due_incidents(self.hub.db().read(), now_ms()).await {
            Ok(ids) => {
                for id in ids {
                    self.step_logged(&id, None).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "notifications: cannot read due incidents"),
        }
    }

    async fn step_logged(&self, worker_id: &str, seen: Option<Seen>) {
        if let Err(e) = self.step(worker_id, seen).await {
            tracing::warn!(worker_id, error = %e, "notifications: cannot update the incident");
        }
    }

    /// Applies `seen` (a change as an event showed it), then the worker's
    /// record as stored now, then the deadlines, to its incident; stores it
    /// and queues the notices in one transaction. A quick read first skips
    /// the transaction when nothing would change (the common case on every
    /// replica but the first to look).
    async fn step(&self, worker_id: &str, seen: Option<Seen>) -> AppResult<()> {
        let db = self.hub.db();
        let now = now_ms();
        if !self.would_change(db, worker_id, seen, now).await? {
            return Ok(());
        }
        let mut tx = db.begin().await?;
        let Some(row) = workers_db::by_id(&mut tx, worker_id).await? else {
            queries::delete_incident(&mut tx, worker_id).await?;
            tx.commit_no_listing_change().await?;
            return Ok(());
        };
        let stored = queries::incident(&mut tx, worker_id).await?;
        let mut incident = stored.clone().unwrap_or_else(|| Incident::new(worker_id));
        let alerts = self.advance(&mut incident, seen, &row, now);
        if unchanged(stored.as_ref(), &incident) {
            return Ok(());
        }
        queries::save_incident(&mut tx, &incident).await?;
        let worker = WorkerRef {
            id: row.id.clone(),
            name: row.name.clone(),
        };
        let mut queued = 0;
        for alert in &alerts {
            let notice = match *alert {
                Alert::Offline { since } => notices::worker_offline(&worker, since, now),
                Alert::Online { since } => notices::worker_online(&worker, since, now),
                Alert::Flapping {
                    outages,
                    window,
                    still_offline,
                } => notices::worker_flapping(&worker, outages, window, still_offline, now),
                Alert::NotReady { since } => {
                    let reason = self.hub.worker(&row).not_ready_reason;
                    notices::worker_not_ready(&worker, since, &reason, now)
                }
            };
            let messages = self.notifier.queue(&mut tx, &notice).await?;
            tracing::info!(worker_id, notice = %notice.summary, messages, "fleet notice");
            queued += messages;
        }
        tx.commit_no_listing_change().await?;
        if queued > 0 {
            self.notifier.wake();
        }
        Ok(())
    }

    fn advance(
        &self,
        incident: &mut Incident,
        seen: Option<Seen>,
        row: &WorkerRow,
        now: i64,
    ) -> Vec<Alert> {
        let mut alerts = Vec::new();
        if let Some(seen) = seen {
            alerts.extend(incident.observe(seen));
        }
        alerts.extend(incident.observe(seen_of_row(row)));
        alerts.extend(incident.tick(now, &self.timing));
        alerts
    }

    async fn would_change(
        &self,
        db: &Db,
        worker_id: &str,
        seen: Option<Seen>,
        now: i64,
    ) -> AppResult<bool> {
        let Some(row) = workers_db::by_id(db.read(), worker_id).await? else {
            return Ok(queries::incident(db.read(), worker_id).await?.is_some());
        };
        let stored = queries::incident(db.read(), worker_id).await?;
        let mut incident = stored.clone().unwrap_or_else(|| Incident::new(worker_id));
        self.advance(&mut incident, seen, &row, now);
        Ok(!unchanged(stored.as_ref(), &incident))
    }
}

/// Whether `now` needs no write over `stored`: the same, or quiet with no
/// row (a healthy fleet writes nothing).
fn unchanged(stored: Option<&Incident>, now: &Incident) -> bool {
    match stored {
        Some(s) => s == now,
        None => now.is_quiet(),
    }
}

/// What an event's worker says.
fn seen_of_pb(w: &pb::Worker) -> Seen {
    let at = w
        .updated_at
        .as_ref()
        .map_or(0, |t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000);
    Seen {
        at,
        status: pb::WorkerStatus::try_from(w.status).unwrap_or(pb::WorkerStatus::Unspecified),
    }
}

/// What a stored record says.
fn seen_of_row(row: &WorkerRow) -> Seen {
    Seen {
        at: row.updated_at,
        status: status::from_db(&row.status),
    }
}
