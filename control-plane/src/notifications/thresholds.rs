//! Thresholds on the workers' CPU, memory and disk, with hysteresis: a
//! figure at or above `above` for `for_ms` crosses (WORKER_THRESHOLD, told
//! once), and a crossed one that stays below `clear_below` for `for_ms`
//! clears (WORKER_THRESHOLD_CLEARED, told once).
//!
//! Heartbeats arrive by the thousand a second; they are evaluated in
//! memory, on the hub's metrics flush (one event per flush with the newest
//! figures of every worker that beat, which the history recorder hears
//! too), by [`ThresholdWatch`], which owns the per-worker state. The store
//! is written only on a crossing or a clear: the crossing's row
//! (`worker_threshold_crossings`) is inserted or deleted together with the
//! notice's outbox rows, and only the insert or delete that changed a row
//! queues it, so each is told once. Each replica evaluates the workers
//! whose streams it holds; the crossings in the store carry over when a
//! worker's stream moves or the control plane restarts.

use std::{collections::HashMap, time::Duration};

use minispod_proto::v1 as pb;
use tokio::sync::broadcast::error::RecvError;

use super::{Notifier, notices, queries};
use crate::{
    error::AppResult,
    store::now_ms,
    workers::{
        hub::{FleetHub, WorkerEvent},
        queries::{self as workers_db, HeartbeatMetrics},
    },
};

/// How often the thresholds are read again (other replicas' changes; this
/// replica's own are seen at once).
const RELOAD: Duration = Duration::from_secs(30);

/// A figure thresholds watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Metric {
    /// CPU in use, percent.
    Cpu,
    /// Memory in use, percent of allocatable.
    Memory,
    /// Disk in use, percent of allocatable.
    Disk,
}

impl Metric {
    /// Every metric, in index order.
    pub const ALL: [Metric; 3] = [Metric::Cpu, Metric::Memory, Metric::Disk];

    fn index(self) -> usize {
        self as usize
    }

    /// As stored.
    pub fn to_db(self) -> &'static str {
        match self {
            Metric::Cpu => "CPU",
            Metric::Memory => "MEMORY",
            Metric::Disk => "DISK",
        }
    }

    /// From the store.
    pub fn from_db(s: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.to_db() == s)
    }

    /// From the API.
    pub fn from_pb(m: pb::WorkerMetric) -> Option<Metric> {
        match m {
            pb::WorkerMetric::Cpu => Some(Metric::Cpu),
            pb::WorkerMetric::Memory => Some(Metric::Memory),
            pb::WorkerMetric::Disk => Some(Metric::Disk),
            pb::WorkerMetric::Unspecified => None,
        }
    }

    /// For the API.
    pub fn to_pb(self) -> pb::WorkerMetric {
        match self {
            Metric::Cpu => pb::WorkerMetric::Cpu,
            Metric::Memory => pb::WorkerMetric::Memory,
            Metric::Disk => pb::WorkerMetric::Disk,
        }
    }

    /// How people name it.
    pub fn words(self) -> &'static str {
        match self {
            Metric::Cpu => "CPU",
            Metric::Memory => "memory",
            Metric::Disk => "disk",
        }
    }

    /// The figure in `m`, percent; None when the heartbeat has nothing to
    /// divide by.
    pub fn percent(self, m: &HeartbeatMetrics) -> Option<f64> {
        let of = |used: i64, total: i64| (total > 0).then(|| used as f64 * 100.0 / total as f64);
        match self {
            Metric::Cpu => Some(m.cpu_used_percent),
            Metric::Memory => of(m.memory_used_bytes, m.allocatable_memory_bytes),
            Metric::Disk => of(m.storage_used_bytes, m.allocatable_storage_bytes),
        }
    }
}

/// One threshold's levels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rule {
    /// Crosses at or above this percentage.
    pub above: f64,
    /// Clears below this one.
    pub clear_below: f64,
    /// Past either level this long.
    pub for_ms: i64,
}

/// A stored threshold: `worker_id` empty for every worker.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    /// The worker, or empty.
    pub worker_id: String,
    /// The figure.
    pub metric: Metric,
    /// Its levels.
    pub rule: Rule,
}

impl Threshold {
    /// For the API.
    pub fn to_pb(&self) -> pb::WorkerThreshold {
        pb::WorkerThreshold {
            metric: self.metric.to_pb() as i32,
            worker_id: self.worker_id.clone(),
            above_percent: self.rule.above,
            clear_below_percent: self.rule.clear_below,
            for_seconds: u32::try_from(self.rule.for_ms / 1000).unwrap_or(u32::MAX),
        }
    }
}

/// The thresholds, by who they apply to.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    fleet: [Option<Rule>; 3],
    own: HashMap<String, [Option<Rule>; 3]>,
}

impl Rules {
    /// From the stored list.
    pub fn new(list: &[Threshold]) -> Rules {
        let mut r = Rules::default();
        for t in list {
            let slot = if t.worker_id.is_empty() {
                &mut r.fleet
            } else {
                r.own.entry(t.worker_id.clone()).or_default()
            };
            slot[t.metric.index()] = Some(t.rule);
        }
        r
    }

    /// None at all: nothing to evaluate.
    pub fn is_empty(&self) -> bool {
        self.fleet.iter().all(Option::is_none) && self.own.is_empty()
    }

    /// The rule for `metric` on `worker_id`: its own, else the fleet's.
    pub fn rule_for(&self, worker_id: &str, metric: Metric) -> Option<Rule> {
        self.own
            .get(worker_id)
            .and_then(|o| o[metric.index()])
            .or(self.fleet[metric.index()])
    }
}

/// A crossing or a clear.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Crossing {
    /// Past `above` since then, for the duration; the figure now.
    Crossed {
        /// When the figure went past.
        since: i64,
        /// The figure now.
        percent: f64,
    },
    /// Below `clear_below` since then, for the duration.
    Cleared {
        /// When the figure went below.
        since: i64,
        /// The figure now.
        percent: f64,
    },
}

/// One worker's state for one metric.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Watch {
    /// Crossed and not cleared yet.
    pub crossed: bool,
    /// Since when the figure is past the level that would change that.
    pub since: Option<i64>,
    /// The last heartbeat applied (Unix ms).
    pub last_at: i64,
}

impl Watch {
    /// Applies the figure `value` of a heartbeat at `at`. A gap longer
    /// than `max_gap_ms` (the worker was offline) starts the duration
    /// again.
    pub fn observe(
        &mut self,
        value: f64,
        at: i64,
        rule: &Rule,
        max_gap_ms: i64,
    ) -> Option<Crossing> {
        if at <= self.last_at {
            return None;
        }
        if self.last_at > 0 && at - self.last_at > max_gap_ms {
            self.since = None;
        }
        self.last_at = at;
        let past = if self.crossed {
            value < rule.clear_below
        } else {
            value >= rule.above
        };
        if !past {
            self.since = None;
            return None;
        }
        let since = *self.since.get_or_insert(at);
        if at - since < rule.for_ms {
            return None;
        }
        self.since = None;
        self.crossed = !self.crossed;
        Some(if self.crossed {
            Crossing::Crossed {
                since,
                percent: value,
            }
        } else {
            Crossing::Cleared {
                since,
                percent: value,
            }
        })
    }
}

/// Evaluates the thresholds on every metrics flush of this replica.
pub struct ThresholdWatch {
    hub: FleetHub,
    notifier: Notifier,
    rules: Rules,
    /// Worker → its watches, by metric index.
    watches: HashMap<String, [Watch; 3]>,
}

impl ThresholdWatch {
    /// The watch over `hub`'s flushes.
    pub fn new(hub: FleetHub, notifier: Notifier) -> ThresholdWatch {
        ThresholdWatch {
            hub,
            notifier,
            rules: Rules::default(),
            watches: HashMap::new(),
        }
    }

    /// Runs until the task is aborted.
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.run())
    }

    async fn run(mut self) {
        let mut events = self.hub.subscribe();
        let notifier = self.notifier.clone();
        let mut reload = tokio::time::interval(RELOAD);
        reload.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Ok((WorkerEvent::Metrics(batch), _)) => self.evaluate(&batch).await,
                    Ok((WorkerEvent::Deleted(id), _)) => {
                        self.watches.remove(&id);
                    }
                    Ok(_) => {}
                    // The next flush has every worker's newest figures.
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return,
                },
                () = notifier.thresholds_change() => self.reload().await,
                _ = reload.tick() => self.reload().await,
            }
        }
    }

    /// Reads the thresholds and the crossings again: a crossing in the
    /// store is crossed here too (another replica or a previous run told
    /// it); one that is not is not.
    async fn reload(&mut self) {
        let loaded = match queries::thresholds(self.hub.db().read()).await {
            Ok(list) => queries::crossings(self.hub.db().read())
                .await
                .map(|crossed| (list, crossed)),
            Err(e) => Err(e),
        };
        let (list, crossed) = match loaded {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "thresholds: cannot read them");
                return;
            }
        };
        self.rules = Rules::new(&list);
        for w in self.watches.values_mut() {
            for watch in w.iter_mut() {
                watch.crossed = false;
            }
        }
        for c in crossed {
            if let Some(m) = Metric::from_db(&c.metric) {
                let w = self.watches.entry(c.worker_id).or_default();
                if !w[m.index()].crossed {
                    w[m.index()].crossed = true;
                    w[m.index()].since = None;
                }
            }
        }
    }

    /// Applies one flush's figures; writes the crossings.
    async fn evaluate(&mut self, batch: &[(String, HeartbeatMetrics)]) {
        if self.rules.is_empty() {
            return;
        }
        let max_gap = i64::try_from(self.hub.config().silence_deadline().as_millis())
            .unwrap_or(i64::MAX)
            .max(1000);
        let mut changes = Vec::new();
        for (id, m) in batch {
            for metric in Metric::ALL {
                let Some(rule) = self.rules.rule_for(id, metric) else {
                    continue;
                };
                let Some(value) = metric.percent(m) else {
                    continue;
                };
                if !self.watches.contains_key(id) {
                    self.watches.insert(id.clone(), Default::default());
                }
                let Some(watches) = self.watches.get_mut(id) else {
                    continue;
                };
                let watch = &mut watches[metric.index()];
                if let Some(c) = watch.observe(value, m.at, &rule, max_gap) {
                    changes.push((id.clone(), metric, rule, c));
                }
            }
        }
        for (id, metric, rule, c) in changes {
            if let Err(e) = self.write(&id, metric, &rule, c).await {
                tracing::warn!(worker_id = %id, metric = metric.to_db(), error = %e,
                    "thresholds: cannot record a crossing; it is looked at again");
                // Undone, so the next flush tries again.
                if let Some(w) = self.watches.get_mut(&id) {
                    let w = &mut w[metric.index()];
                    w.crossed = !w.crossed;
                    w.since = None;
                }
            }
        }
    }

    /// Records a crossing or a clear and queues its notice, once.
    async fn write(
        &self,
        worker_id: &str,
        metric: Metric,
        rule: &Rule,
        c: Crossing,
    ) -> AppResult<()> {
        let mut tx = self.hub.db().begin().await?;
        let Some(row) = workers_db::by_id(&mut tx, worker_id).await? else {
            return Ok(());
        };
        let w = notices::WorkerRef {
            id: row.id.clone(),
            name: row.name.clone(),
        };
        let now = now_ms();
        let notice = match c {
            Crossing::Crossed { since, percent } => {
                if !queries::add_crossing(&mut tx, worker_id, metric.to_db(), since, percent)
                    .await?
                {
                    return Ok(());
                }
                notices::worker_threshold(&w, metric.words(), percent, rule, since, now)
            }
            Crossing::Cleared { since, percent } => {
                let Some(crossed_at) =
                    queries::remove_crossing(&mut tx, worker_id, metric.to_db()).await?
                else {
                    return Ok(());
                };
                notices::worker_threshold_cleared(
                    &w,
                    metric.words(),
                    percent,
                    rule,
                    crossed_at,
                    since,
                    now,
                )
            }
        };
        let queued = self.notifier.queue(&mut tx, &notice).await?;
        tx.commit_no_listing_change().await?;
        tracing::info!(worker_id, notice = %notice.summary, messages = queued, "threshold notice");
        if queued > 0 {
            self.notifier.wake();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: Rule = Rule {
        above: 90.0,
        clear_below: 80.0,
        for_ms: 300_000,
    };

    /// Figures every 10 s from `start`; returns the crossings with when.
    fn feed(w: &mut Watch, start: i64, figures: &[f64]) -> Vec<(i64, Crossing)> {
        let mut out = Vec::new();
        for (k, f) in figures.iter().enumerate() {
            let at = start + k as i64 * 10_000;
            if let Some(c) = w.observe(*f, at, &R, 60_000) {
                out.push((at, c));
            }
        }
        out
    }

    #[test]
    fn a_sustained_figure_crosses_once_and_clears_once_below_the_lower_level() {
        let mut w = Watch::default();
        // 95 % for 6 minutes: crossed after 5.
        let mut figures = vec![95.0; 37];
        // 85 %: under the crossing level but above the clear level.
        figures.extend([85.0; 60]);
        // 70 % for 6 minutes: cleared after 5.
        figures.extend([70.0; 37]);
        let got = feed(&mut w, 1_000, &figures);
        assert_eq!(
            got,
            vec![
                (
                    301_000,
                    Crossing::Crossed {
                        since: 1_000,
                        percent: 95.0
                    }
                ),
                (
                    1_271_000,
                    Crossing::Cleared {
                        since: 971_000,
                        percent: 70.0
                    }
                ),
            ]
        );
    }

    #[test]
    fn a_spike_shorter_than_the_duration_tells_nothing() {
        let mut w = Watch::default();
        let mut figures = vec![99.0; 20];
        figures.push(50.0);
        figures.extend([99.0; 20]);
        assert_eq!(feed(&mut w, 1_000, &figures), vec![]);
        assert!(!w.crossed);
    }

    #[test]
    fn a_gap_in_the_heartbeats_starts_the_duration_again() {
        let mut w = Watch::default();
        assert_eq!(w.observe(95.0, 1_000, &R, 60_000), None);
        // Offline for 10 minutes, then over again: not yet 5 minutes.
        assert_eq!(w.observe(95.0, 601_000, &R, 60_000), None);
        assert_eq!(w.since, Some(601_000));
    }

    #[test]
    fn a_worker_s_own_threshold_wins_over_the_fleet_s() {
        let own = Rule {
            above: 50.0,
            clear_below: 40.0,
            for_ms: 0,
        };
        let rules = Rules::new(&[
            Threshold {
                worker_id: String::new(),
                metric: Metric::Cpu,
                rule: R,
            },
            Threshold {
                worker_id: "w2".into(),
                metric: Metric::Cpu,
                rule: own,
            },
        ]);
        assert_eq!(rules.rule_for("w1", Metric::Cpu), Some(R));
        assert_eq!(rules.rule_for("w2", Metric::Cpu), Some(own));
        assert_eq!(rules.rule_for("w2", Metric::Disk), None);
    }
}
