//! The history recorder: one task that owns the sums of the steps in
//! progress. It hears every metrics flush of the hub (one event per flush,
//! not per heartbeat) and every subscription change, and once per fine step
//! writes the steps that closed: the workers' points in transactions of at
//! most [`ROWS_PER_TRANSACTION`] rows (so a status change queued behind the
//! single writer waits for one of them, not for all), the fleet's point,
//! the coarse points whose hour closed, and the prune.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, atomic::Ordering},
};

use tokio::sync::broadcast::error::RecvError;

use super::{
    HistorySettings,
    queries::{self, FleetSums, SubscriptionMark, Sums},
};
use crate::{
    error::AppResult,
    metrics::Metrics,
    store::{Db, now_ms},
    subscriptions::{Change, Subscriptions, status_to_db},
    workers::{
        hub::{FleetHub, WorkerEvent},
        queries::HeartbeatMetrics,
    },
};
use minispod_proto::v1 as pb;

/// Most worker points one transaction writes: about 20 ms of writing.
pub const ROWS_PER_TRANSACTION: usize = 2000;
/// Most subscription changes kept waiting for the next write.
const MAX_PENDING_MARKS: usize = 20_000;

/// What the steps in progress add up to, per worker; pure, so tests feed it
/// figures and times directly.
#[derive(Debug)]
pub struct Tiers {
    fine_ms: i64,
    coarse_ms: i64,
    /// Worker → (start of its fine step in progress, sums).
    fine: HashMap<String, (i64, Sums)>,
    /// Worker → (start of its coarse step in progress, sums).
    coarse: HashMap<String, (i64, Sums)>,
    /// Fine steps a newer heartbeat closed before the next write.
    closed: Vec<(String, i64, Sums)>,
}

/// The points a write stores.
#[derive(Debug, Default, PartialEq)]
pub struct Closed {
    /// Fine worker points.
    pub fine: Vec<(String, i64, Sums)>,
    /// Fine fleet points, one per step.
    pub fleet: Vec<(i64, FleetSums)>,
    /// Coarse worker points.
    pub coarse: Vec<(String, i64, Sums)>,
}

fn sample(m: &HeartbeatMetrics) -> Sums {
    Sums {
        samples: 1,
        cpu_percent: m.cpu_used_percent,
        memory_used: m.memory_used_bytes as f64,
        memory_total: m.allocatable_memory_bytes as f64,
        storage_used: m.storage_used_bytes as f64,
        storage_total: m.allocatable_storage_bytes as f64,
    }
}

/// Merges rows of one key (a late heartbeat can close a step twice), so a
/// statement never upserts one row twice (PostgreSQL refuses that).
fn merged(rows: Vec<(String, i64, Sums)>) -> Vec<(String, i64, Sums)> {
    let mut by: BTreeMap<(String, i64), Sums> = BTreeMap::new();
    for (id, at, s) in rows {
        by.entry((id, at)).or_default().add(&s);
    }
    by.into_iter().map(|((id, at), s)| (id, at, s)).collect()
}

impl Tiers {
    /// Empty sums for steps of `fine_ms` and `coarse_ms` (a multiple).
    pub fn new(fine_ms: i64, coarse_ms: i64) -> Tiers {
        Tiers {
            fine_ms,
            coarse_ms,
            fine: HashMap::new(),
            coarse: HashMap::new(),
            closed: Vec::new(),
        }
    }

    /// Counts one heartbeat's figures in its worker's step.
    pub fn record(&mut self, worker_id: &str, m: &HeartbeatMetrics) {
        let step = m.at.div_euclid(self.fine_ms) * self.fine_ms;
        match self.fine.get_mut(worker_id) {
            Some((at, sums)) if *at == step => sums.add(&sample(m)),
            Some((at, sums)) => {
                let old = std::mem::replace(sums, sample(m));
                self.closed.push((worker_id.to_owned(), *at, old));
                *at = step;
            }
            None => {
                self.fine.insert(worker_id.to_owned(), (step, sample(m)));
            }
        }
    }

    /// Takes every step that ended at or before `until`: the fine points,
    /// the fleet's points made of them, and the coarse steps they closed.
    pub fn close(&mut self, until: i64) -> Closed {
        let fine_ms = self.fine_ms;
        let mut fine = std::mem::take(&mut self.closed);
        self.fine.retain(|id, (at, sums)| {
            if *at + fine_ms <= until {
                fine.push((id.clone(), *at, *sums));
                false
            } else {
                true
            }
        });
        let fine = merged(fine);
        let mut fleet: BTreeMap<i64, FleetSums> = BTreeMap::new();
        let mut coarse = Vec::new();
        for (id, at, sums) in &fine {
            fleet.entry(*at).or_default().add_worker(sums);
            let step = at.div_euclid(self.coarse_ms) * self.coarse_ms;
            match self.coarse.get_mut(id) {
                Some((c, s)) if *c == step => s.add(sums),
                Some((c, s)) => {
                    coarse.push((id.clone(), *c, std::mem::replace(s, *sums)));
                    *c = step;
                }
                None => {
                    self.coarse.insert(id.clone(), (step, *sums));
                }
            }
        }
        let coarse_ms = self.coarse_ms;
        self.coarse.retain(|id, (at, sums)| {
            if *at + coarse_ms <= until {
                coarse.push((id.clone(), *at, *sums));
                false
            } else {
                true
            }
        });
        Closed {
            fine,
            fleet: fleet.into_iter().collect(),
            coarse: merged(coarse),
        }
    }

    /// Workers with a step in progress.
    pub fn len(&self) -> usize {
        self.fine.len()
    }

    /// True when no step is in progress.
    pub fn is_empty(&self) -> bool {
        self.fine.is_empty() && self.coarse.is_empty()
    }
}

/// The recorder's state: the workers' sums, what subscriptions were last
/// recorded as, and which coarse fleet step was last rolled up.
pub struct Recorder {
    db: Db,
    settings: HistorySettings,
    tiers: Tiers,
    subs: Option<Subscriptions>,
    /// Subscription → what was last recorded of it.
    marked: HashMap<String, (String, i64)>,
    /// Subscription changes heard since the last write.
    pending_marks: Vec<(String, SubscriptionMark)>,
    /// Start of the last coarse step the fleet was rolled up for.
    rolled: i64,
    metrics: Arc<Metrics>,
}

impl Recorder {
    /// A recorder writing to `db`; with `subs`, subscriptions too.
    pub fn new(
        db: Db,
        settings: HistorySettings,
        subs: Option<Subscriptions>,
        metrics: Arc<Metrics>,
    ) -> Recorder {
        let tiers = Tiers::new(settings.fine_ms(), settings.coarse_ms());
        Recorder {
            db,
            settings,
            tiers,
            subs,
            marked: HashMap::new(),
            pending_marks: Vec::new(),
            rolled: 0,
            metrics,
        }
    }

    /// Follows `hub` (and the subscriptions) until the hub closes; spawned
    /// at start-up. Subscribes before returning, so no flush is missed.
    pub fn spawn(mut self, hub: &FleetHub) -> tokio::task::JoinHandle<()> {
        let mut events = hub.subscribe();
        let mut changes = self.subs.as_ref().map(|s| s.changes());
        tokio::spawn(async move {
            let mut next = self.next_write(now_ms());
            loop {
                let wait = std::time::Duration::from_millis((next - now_ms()).max(0) as u64);
                tokio::select! {
                    e = events.recv() => match e {
                        Ok((WorkerEvent::Metrics(batch), _)) => {
                            for (id, m) in batch.iter() {
                                self.tiers.record(id, m);
                            }
                        }
                        Ok(_) => {}
                        Err(RecvError::Lagged(n)) => {
                            tracing::warn!(missed = n, "history recorder fell behind the fleet's events; some figures are not in the history");
                        }
                        Err(RecvError::Closed) => break,
                    },
                    c = async { match changes.as_mut() { Some(c) => c.recv().await, None => std::future::pending().await } } => match c {
                        Ok(Change::Upserted(id, Some(event))) => self.heard_status(id, &event),
                        Ok(_) | Err(RecvError::Lagged(_)) => {}
                        Err(RecvError::Closed) => changes = None,
                    },
                    () = tokio::time::sleep(wait) => {
                        let now = now_ms();
                        if let Err(e) = self.write(now).await {
                            tracing::warn!(error = %e, "history write failed");
                        }
                        next = self.next_write(now);
                    }
                }
            }
        })
    }

    /// When the step in progress at `now` is written: its end plus the
    /// grace.
    fn next_write(&self, now: i64) -> i64 {
        let fine = self.settings.fine_ms();
        let grace = self.settings.grace_ms();
        ((now - grace).div_euclid(fine) + 1) * fine + grace
    }

    fn heard_status(&mut self, id: String, event: &pb::SubscriptionEvent) {
        if self.pending_marks.len() >= MAX_PENDING_MARKS {
            return;
        }
        let status = pb::SubscriptionStatus::try_from(event.status)
            .map(status_to_db)
            .unwrap_or("PENDING")
            .to_owned();
        let restarts = self.marked.get(&id).map_or(0, |(_, r)| *r);
        let at = event.at.as_ref().map_or_else(now_ms, |t| {
            t.seconds * 1000 + i64::from(t.nanos / 1_000_000)
        });
        self.marked.insert(id.clone(), (status.clone(), restarts));
        self.pending_marks.push((
            id,
            SubscriptionMark {
                at,
                status,
                restarts,
            },
        ));
    }

    /// Reads every subscription's status and restarts and keeps a mark for
    /// those that changed since last recorded.
    async fn look_at_subscriptions(&mut self, now: i64) -> AppResult<()> {
        let Some(subs) = &self.subs else {
            return Ok(());
        };
        let rows = queries::subscription_statuses(&self.db).await?;
        let mut seen = HashMap::with_capacity(rows.len());
        for (id, status) in rows {
            let restarts: i64 = subs
                .pods_of(&id)
                .iter()
                .map(|p| i64::from(p.restarts))
                .sum();
            let now_state = (status, restarts);
            if self.marked.get(&id) != Some(&now_state)
                && self.pending_marks.len() < MAX_PENDING_MARKS
            {
                self.pending_marks.push((
                    id.clone(),
                    SubscriptionMark {
                        at: now,
                        status: now_state.0.clone(),
                        restarts,
                    },
                ));
            }
            seen.insert(id, now_state);
        }
        self.marked = seen;
        Ok(())
    }

    /// Writes what closed by `now` and prunes; returns the closed points.
    pub async fn write(&mut self, now: i64) -> AppResult<Closed> {
        let s = self.settings.clone();
        let (fine_ms, coarse_ms) = (s.fine_ms(), s.coarse_ms());
        let until = now - s.grace_ms();
        let started = std::time::Instant::now();
        let closed = self.tiers.close(until);
        let mut transactions = 0;
        for chunk in closed.fine.chunks(ROWS_PER_TRANSACTION) {
            let mut tx = self.db.begin().await?;
            queries::add_worker_points(&mut tx, fine_ms, chunk).await?;
            tx.commit_no_listing_change().await?;
            transactions += 1;
        }
        for chunk in closed.coarse.chunks(ROWS_PER_TRANSACTION) {
            let mut tx = self.db.begin().await?;
            queries::add_worker_points(&mut tx, coarse_ms, chunk).await?;
            tx.commit_no_listing_change().await?;
            transactions += 1;
        }
        self.look_at_subscriptions(now).await?;
        let marks = std::mem::take(&mut self.pending_marks);
        // The coarse step that ended by `until`, once.
        let last_coarse = until.div_euclid(coarse_ms) * coarse_ms - coarse_ms;
        let roll = last_coarse > self.rolled;
        let mut tx = self.db.begin().await?;
        queries::add_fleet_points(&mut tx, fine_ms, &closed.fleet).await?;
        queries::add_subscription_marks(&mut tx, &marks).await?;
        if roll {
            queries::roll_up_fleet(&mut tx, fine_ms, coarse_ms, last_coarse).await?;
        }
        let pruned = queries::prune(
            &mut tx,
            fine_ms,
            now - s.fine_retention_ms(),
            coarse_ms,
            now - s.coarse_retention_ms(),
            roll,
        )
        .await?;
        tx.commit_no_listing_change().await?;
        if roll {
            self.rolled = last_coarse;
        }
        let rows = closed.fine.len() + closed.coarse.len() + closed.fleet.len() + marks.len();
        let m = &self.metrics;
        m.history_rows
            .fetch_add(rows as u64 + u64::from(roll), Ordering::Relaxed);
        m.history_transactions
            .fetch_add(transactions + 1, Ordering::Relaxed);
        m.history_write_micros
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        tracing::debug!(
            fine = closed.fine.len(),
            coarse = closed.coarse.len(),
            marks = marks.len(),
            pruned = pruned.points + pruned.marks,
            "history written"
        );
        Ok(closed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hb(at: i64, cpu: f64, mem: i64) -> HeartbeatMetrics {
        HeartbeatMetrics {
            cpu_used_percent: cpu,
            memory_used_bytes: mem,
            storage_used_bytes: 10,
            pod_count: 0,
            allocatable_cpu_millicores: 1000,
            allocatable_memory_bytes: 1000,
            allocatable_storage_bytes: 100,
            allocatable_pods: 110,
            at,
        }
    }

    #[test]
    fn heartbeats_average_into_steps_and_the_fleet_sums_the_workers_means() {
        let mut t = Tiers::new(60_000, 3_600_000);
        for i in 0..12 {
            t.record("a", &hb(i * 5000, 10.0, 100));
            t.record("b", &hb(i * 5000, 30.0, 300));
        }
        assert!(t.close(59_999).fine.is_empty(), "the step is still going");
        t.record("a", &hb(61_000, 50.0, 500));
        let c = t.close(60_000);
        assert_eq!(c.fine.len(), 2);
        assert_eq!(c.fine[0].0, "a");
        assert_eq!(c.fine[0].2.samples, 12);
        assert!((c.fine[0].2.mean().cpu_percent - 10.0).abs() < 1e-9);
        assert_eq!(c.fleet.len(), 1);
        let f = c.fleet[0].1;
        assert_eq!(f.workers, 2.0);
        assert!((f.cpu_percent - 40.0).abs() < 1e-9 && (f.memory_used - 400.0).abs() < 1e-9);
        assert!(c.coarse.is_empty(), "the hour is still going");
        assert_eq!(t.len(), 1, "a's next step is in progress");
    }

    #[test]
    fn an_hour_closes_into_one_coarse_point_per_worker() {
        let mut t = Tiers::new(60_000, 3_600_000);
        let mut coarse = Vec::new();
        for minute in 0..61 {
            t.record("a", &hb(minute * 60_000 + 1000, minute as f64, 0));
            coarse.extend(t.close(minute * 60_000 + 1).coarse);
        }
        coarse.extend(t.close(2 * 3_600_000).coarse);
        assert_eq!(coarse.len(), 2, "{coarse:?}");
        assert_eq!((coarse[0].1, coarse[0].2.samples), (0, 60));
        assert!((coarse[0].2.mean().cpu_percent - 29.5).abs() < 1e-9);
        assert_eq!(coarse[1].1, 3_600_000);
        assert!(t.is_empty(), "nothing left in progress");
    }

    #[test]
    fn a_late_heartbeat_adds_to_its_own_step() {
        let mut t = Tiers::new(60_000, 3_600_000);
        t.record("a", &hb(1000, 10.0, 0));
        t.record("a", &hb(61_000, 20.0, 0));
        t.record("a", &hb(2000, 30.0, 0));
        let c = t.close(130_000);
        let steps: Vec<(i64, i64)> = c.fine.iter().map(|(_, at, s)| (*at, s.samples)).collect();
        assert_eq!(steps, vec![(0, 2), (60_000, 1)]);
    }
}
