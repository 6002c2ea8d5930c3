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
//!
//! The steps run on a work queue keyed by worker id (`crate::workqueue`):
//! one pending step per worker, requeued at its incident's deadline, and a
//! step the store failed retried after a backoff with jitter.

use std::{
    collections::{HashMap, VecDeque},
    time::Duration,
};

use minispod_proto::v1 as pb;
use tokio::sync::broadcast::error::RecvError;

use super::{
    Notifier,
    incidents::{Alert, Incident, Seen, Timing},
    notices::{self, WorkerRef},
    queries,
};
use crate::{
    error::{AppError, AppResult},
    store::{Db, now_ms},
    workers::{
        hub::{FleetHub, WorkerEvent},
        queries::{self as workers_db, WorkerRow},
        status,
    },
    workqueue::{Action, Backoff, Reconcile, WorkQueue},
};

/// How often the stored deadlines are looked at besides each incident's
/// own requeue: a safety net (other replicas' changes arrive as events).
const RESCAN: Duration = Duration::from_secs(10);

/// Changes an event showed that a step has not applied yet, kept per
/// worker: a flap (offline, online) between two steps still counts.
const SEEN_PER_WORKER: usize = 32;

/// When an incident whose deadline a step left in the past is looked at.
const OVERDUE: Duration = Duration::from_secs(1);

/// How a step the store failed is retried.
const BACKOFF: Backoff = Backoff {
    base: Duration::from_millis(500),
    max: Duration::from_secs(30),
};

/// The incident engine of one replica.
#[derive(Debug, Clone)]
pub struct FleetNotices {
    hub: FleetHub,
    notifier: Notifier,
    timing: Timing,
}

/// The engine's loop on a work queue keyed by worker id: each step brings
/// one worker's incident up to date and comes back at its next deadline
/// (`due_at`); a step the store failed waits out the queue's backoff
/// instead of being tried again at once.
struct IncidentLoop {
    engine: FleetNotices,
    /// Per worker, the changes events showed since its last step.
    seen: HashMap<String, VecDeque<Seen>>,
}

impl IncidentLoop {
    /// Keeps what an event showed for the worker's next step.
    fn note(&mut self, worker_id: &str, seen: Seen) {
        let q = self.seen.entry(worker_id.to_owned()).or_default();
        if q.len() == SEEN_PER_WORKER {
            q.pop_front();
        }
        q.push_back(seen);
    }
}

impl Reconcile for IncidentLoop {
    type Key = String;
    type Error = AppError;

    async fn reconcile(&mut self, id: &String) -> Result<Action, AppError> {
        let seen: Vec<Seen> = self.seen.remove(id).map(Vec::from).unwrap_or_default();
        match self.engine.step(id, &seen).await {
            // At its deadline; one the step left in the past (it should
            // not) is looked at again after a pause, not at once.
            Ok(due) => Ok(due.map_or(Action::Done, |at| {
                Action::RequeueAfter(
                    u64::try_from(at - now_ms()).map_or(OVERDUE, Duration::from_millis),
                )
            })),
            Err(e) => {
                // Applied at the retry, before what came since.
                let q = self.seen.entry(id.clone()).or_default();
                for s in seen.into_iter().rev() {
                    if q.len() < SEEN_PER_WORKER {
                        q.push_front(s);
                    }
                }
                Err(e)
            }
        }
    }

    fn error_policy(&mut self, id: &String, e: &AppError, backoff: Duration) -> Action {
        tracing::warn!(worker_id = %id, error = %e, retry_in_ms = backoff.as_millis() as u64,
            "notifications: cannot update the incident");
        Action::RequeueAfter(backoff)
    }
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
        let queue = WorkQueue::new(BACKOFF);
        self.catch_up(&queue).await;
        let mut r = IncidentLoop {
            engine: self.clone(),
            seen: HashMap::new(),
        };
        let mut rescan = tokio::time::interval(RESCAN);
        rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Ok((WorkerEvent::Upserted(w), _)) => {
                        r.note(&w.id, seen_of_pb(&w));
                        queue.add([w.id]);
                    }
                    Ok((WorkerEvent::Deleted(id), _)) => queue.add([id]),
                    Ok((WorkerEvent::Metrics(_), _)) => {}
                    Err(RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "notifications: fell behind the fleet's changes; looking at every worker");
                        self.catch_up(&queue).await;
                    }
                    Err(RecvError::Closed) => return,
                },
                _ = rescan.tick() => self.fire_due(&queue).await,
                id = queue.next() => {
                    // Retried by the queue (`error_policy`).
                    let _ = queue.process(&mut r, id).await;
                }
            }
        }
    }

    /// Looks at every worker that may have something going on.
    async fn catch_up(&self, queue: &WorkQueue<String>) {
        match queries::workers_to_look_at(self.hub.db().read()).await {
            Ok(ids) => queue.resync(ids),
            Err(e) => tracing::warn!(error = %e, "notifications: cannot list the workers"),
        }
    }

    /// Queues the incidents whose deadline passed (a safety net: each step
    /// requeues its incident at its deadline).
    async fn fire_due(&self, queue: &WorkQueue<String>) {
        match queries::due_incidents(self.hub.db().read(), now_ms()).await {
            Ok(ids) => queue.resync(ids),
            Err(e) => tracing::warn!(error = %e, "notifications: cannot read due incidents"),
        }
    }

    /// Applies `seen` (changes as events showed them), then the worker's
    /// record as stored now, then the deadlines, to its incident; stores it
    /// and queues the notices in one transaction. A quick read first skips
    /// the transaction when nothing would change (the common case on every
    /// replica but the first to look). Returns the incident's next deadline.
    async fn step(&self, worker_id: &str, seen: &[Seen]) -> AppResult<Option<i64>> {
        let db = self.hub.db();
        let now = now_ms();
        let (change, due) = self.would_change(db, worker_id, seen, now).await?;
        if !change {
            return Ok(due);
        }
        let mut tx = db.begin().await?;
        let Some(row) = workers_db::by_id(&mut tx, worker_id).await? else {
            queries::delete_incident(&mut tx, worker_id).await?;
            tx.commit_no_listing_change().await?;
            return Ok(None);
        };
        let stored = queries::incident(&mut tx, worker_id).await?;
        let mut incident = stored.clone().unwrap_or_else(|| Incident::new(worker_id));
        let alerts = self.advance(&mut incident, seen, &row, now);
        if unchanged(stored.as_ref(), &incident) {
            return Ok(incident.due_at);
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
        Ok(incident.due_at)
    }

    fn advance(
        &self,
        incident: &mut Incident,
        seen: &[Seen],
        row: &WorkerRow,
        now: i64,
    ) -> Vec<Alert> {
        let mut alerts = Vec::new();
        for s in seen {
            alerts.extend(incident.observe(*s));
        }
        alerts.extend(incident.observe(seen_of_row(row)));
        alerts.extend(incident.tick(now, &self.timing));
        alerts
    }

    /// Whether a step would write, and the incident's deadline after it.
    async fn would_change(
        &self,
        db: &Db,
        worker_id: &str,
        seen: &[Seen],
        now: i64,
    ) -> AppResult<(bool, Option<i64>)> {
        let Some(row) = workers_db::by_id(db.read(), worker_id).await? else {
            return Ok((
                queries::incident(db.read(), worker_id).await?.is_some(),
                None,
            ));
        };
        let stored = queries::incident(db.read(), worker_id).await?;
        let mut incident = stored.clone().unwrap_or_else(|| Incident::new(worker_id));
        self.advance(&mut incident, seen, &row, now);
        Ok((!unchanged(stored.as_ref(), &incident), incident.due_at))
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
