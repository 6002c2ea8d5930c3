//! The incident state machine of one worker: which notices its changes
//! call for. Pure: the fleet task ([`super::fleet`]) loads the row, feeds it
//! what the worker did and the time, stores it back and queues the alerts,
//! all in one transaction.
//!
//! - Offline: an outage that lasts the offline grace is told once; a
//!   shorter one is not told at all. Back online after a told outage is
//!   told too.
//! - Flapping: a told outage opens the flap window. Outages that begin in
//!   it are counted, not told one by one; when it ends with any counted,
//!   one summary says how many (and a new window opens, so a worker that
//!   keeps flapping sends one summary per window).
//! - Not ready: NOT_READY that lasts the not-ready grace is told once per
//!   spell.

use minispod_proto::v1::WorkerStatus;
use sqlx::FromRow;

/// The graces and the window, in ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// `--notify-offline-grace`.
    pub offline_grace: i64,
    /// `--notify-not-ready-grace`.
    pub not_ready_grace: i64,
    /// `--notify-flap-window`.
    pub flap_window: i64,
    /// No offline notice before this moment (Unix ms): the offline grace
    /// counted from this process's start. Streams end when a control plane
    /// stops and their agents reconnect once it is back: an upgrade that
    /// took longer than the grace must not report the whole fleet offline.
    pub quiet_until: i64,
}

impl Timing {
    /// From the flags' durations.
    pub fn new(
        offline_grace: std::time::Duration,
        not_ready_grace: std::time::Duration,
        flap_window: std::time::Duration,
    ) -> Timing {
        let ms = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4);
        Timing {
            offline_grace: ms(offline_grace),
            not_ready_grace: ms(not_ready_grace),
            flap_window: ms(flap_window),
            quiet_until: 0,
        }
    }

    /// These timings for a process started at `started_at` (Unix ms).
    pub fn started_at(self, started_at: i64) -> Timing {
        Timing {
            quiet_until: started_at + self.offline_grace,
            ..self
        }
    }

    /// When an outage that began at `since` is told.
    fn offline_deadline(&self, since: i64) -> i64 {
        (since + self.offline_grace).max(self.quiet_until)
    }
}

/// One worker's incident state, as stored in `worker_incidents`.
#[derive(Debug, Clone, Default, PartialEq, Eq, FromRow)]
pub struct Incident {
    /// The worker.
    pub worker_id: String,
    /// The worker's `updated_at` of the last change applied.
    pub observed_at: i64,
    /// When the current outage began.
    pub offline_since: Option<i64>,
    /// The current outage was told.
    pub offline_notified: bool,
    /// When the current NOT_READY spell began.
    pub not_ready_since: Option<i64>,
    /// The current NOT_READY spell was told.
    pub not_ready_notified: bool,
    /// When the flap window opened.
    pub flap_window_start: Option<i64>,
    /// When the flap window ends.
    pub flap_window_end: Option<i64>,
    /// Outages begun in the window.
    pub flap_outages: i32,
    /// The next deadline (see [`Incident::next_due`]).
    pub due_at: Option<i64>,
}

/// What a worker's record said at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// The record's `updated_at` (Unix ms).
    pub at: i64,
    /// Its status.
    pub status: WorkerStatus,
}

impl Seen {
    /// Down: it had a stream and lost it. PENDING (never connected) and
    /// MAINTENANCE (an administrator's choice) are not outages.
    fn down(&self) -> bool {
        self.status == WorkerStatus::Inactive
    }
}

/// A notice the state machine calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alert {
    /// Offline since then, past the grace.
    Offline {
        /// When the outage began.
        since: i64,
    },
    /// Back online after a told outage that began then.
    Online {
        /// When the outage began.
        since: i64,
    },
    /// Outages counted in a flap window.
    Flapping {
        /// How many.
        outages: i32,
        /// The window's length.
        window: i64,
        /// Whether the worker is down now.
        still_offline: bool,
    },
    /// NOT_READY since then, past the grace.
    NotReady {
        /// When the spell began.
        since: i64,
    },
}

impl Incident {
    /// A worker never seen before.
    pub fn new(worker_id: &str) -> Incident {
        Incident {
            worker_id: worker_id.to_owned(),
            ..Incident::default()
        }
    }

    /// Nothing going on: no outage, no NOT_READY spell, no window. A
    /// worker in this state needs no row.
    pub fn is_quiet(&self) -> bool {
        self.offline_since.is_none()
            && self.not_ready_since.is_none()
            && self.flap_window_end.is_none()
            && !self.offline_notified
    }

    fn in_flap_window(&self, at: i64) -> bool {
        self.flap_window_end.is_some_and(|end| at < end)
    }

    /// Applies what the record said, unless an equal or newer view was
    /// applied already (every replica feeds every change; a relayed one may
    /// be read after a newer one).
    pub fn observe(&mut self, seen: Seen) -> Vec<Alert> {
        if seen.at <= self.observed_at {
            return Vec::new();
        }
        self.observed_at = seen.at;
        let mut alerts = Vec::new();
        match (self.offline_since, seen.down()) {
            (None, true) => {
                self.offline_since = Some(seen.at);
                if self.in_flap_window(seen.at) {
                    self.flap_outages += 1;
                }
            }
            (Some(since), false) => {
                self.offline_since = None;
                // Back from maintenance or a re-enrollment is no recovery
                // to tell: only a stream that is up again.
                if std::mem::take(&mut self.offline_notified)
                    && matches!(seen.status, WorkerStatus::Active | WorkerStatus::NotReady)
                {
                    alerts.push(Alert::Online { since });
                }
            }
            _ => {}
        }
        if seen.status == WorkerStatus::NotReady {
            self.not_ready_since.get_or_insert(seen.at);
        } else {
            self.not_ready_since = None;
            self.not_ready_notified = false;
        }
        alerts
    }

    /// Fires the deadlines that passed by `now`.
    pub fn tick(&mut self, now: i64, t: &Timing) -> Vec<Alert> {
        let mut alerts = Vec::new();
        if let (Some(start), Some(end)) = (self.flap_window_start, self.flap_window_end)
            && end <= now
        {
            if self.flap_outages > 0 {
                let still_offline = self.offline_since.is_some();
                alerts.push(Alert::Flapping {
                    outages: self.flap_outages,
                    window: end - start,
                    still_offline,
                });
                // The summary tells the outage going on now, if any.
                self.offline_notified |= still_offline;
                self.open_flap_window(now, t);
            } else {
                self.flap_window_start = None;
                self.flap_window_end = None;
            }
        }
        if let Some(since) = self.offline_since
            && !self.offline_notified
            && self.flap_window_end.is_none()
            && t.offline_deadline(since) <= now
        {
            alerts.push(Alert::Offline { since });
            self.offline_notified = true;
            self.open_flap_window(now, t);
        }
        if let Some(since) = self.not_ready_since
            && !self.not_ready_notified
            && since + t.not_ready_grace <= now
        {
            alerts.push(Alert::NotReady { since });
            self.not_ready_notified = true;
        }
        self.due_at = self.next_due(t);
        alerts
    }

    fn open_flap_window(&mut self, now: i64, t: &Timing) {
        self.flap_window_start = Some(now);
        self.flap_window_end = Some(now + t.flap_window);
        self.flap_outages = 0;
    }

    /// The earliest moment [`Incident::tick`] would do something.
    pub fn next_due(&self, t: &Timing) -> Option<i64> {
        let offline = self
            .offline_since
            .filter(|_| !self.offline_notified && self.flap_window_end.is_none())
            .map(|s| t.offline_deadline(s));
        let not_ready = self
            .not_ready_since
            .filter(|_| !self.not_ready_notified)
            .map(|s| s + t.not_ready_grace);
        [self.flap_window_end, offline, not_ready]
            .into_iter()
            .flatten()
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timing = Timing {
        offline_grace: 60_000,
        not_ready_grace: 300_000,
        flap_window: 600_000,
        quiet_until: 0,
    };

    fn seen(at: i64, status: WorkerStatus) -> Seen {
        Seen { at, status }
    }

    /// Feeds (time, status) changes and ticks at each and at `until`;
    /// returns the alerts with when they fired.
    fn run(i: &mut Incident, changes: &[(i64, WorkerStatus)], until: i64) -> Vec<(i64, Alert)> {
        let mut out = Vec::new();
        // Tick at every deadline on the way, as the timer would.
        let mut now = 0;
        let mut changes = changes.iter().peekable();
        while now <= until {
            while let Some((at, s)) = changes.next_if(|c| c.0 <= now) {
                out.extend(i.observe(seen(*at, *s)).into_iter().map(|a| (*at, a)));
            }
            out.extend(i.tick(now, &T).into_iter().map(|a| (now, a)));
            let next = [i.due_at, changes.peek().map(|c| c.0)]
                .into_iter()
                .flatten()
                .filter(|&d| d > now)
                .min();
            match next {
                Some(n) if n <= until => now = n,
                _ => break,
            }
        }
        out
    }

    use WorkerStatus::{Active, Inactive, Maintenance, NotReady};

    #[test]
    fn an_outage_shorter_than_the_grace_is_not_told() {
        let mut i = Incident::new("w");
        let alerts = run(
            &mut i,
            &[(1_000, Active), (2_000, Inactive), (50_000, Active)],
            3_600_000,
        );
        assert_eq!(alerts, vec![]);
        assert_eq!(i.due_at, None);
    }

    #[test]
    fn a_long_outage_is_told_once_and_its_end_too() {
        let mut i = Incident::new("w");
        let alerts = run(
            &mut i,
            &[(1_000, Active), (2_000, Inactive), (900_000, Active)],
            3_600_000,
        );
        assert_eq!(
            alerts,
            vec![
                (62_000, Alert::Offline { since: 2_000 }),
                (900_000, Alert::Online { since: 2_000 })
            ]
        );
    }

    #[test]
    fn outages_in_the_flap_window_are_summarised_once() {
        let mut i = Incident::new("w");
        let mut changes = vec![(1_000, Active), (2_000, Inactive), (70_000, Active)];
        // Seven short outages within the window after the notice at 62 s.
        for k in 0..7 {
            changes.push((100_000 + k * 20_000, Inactive));
            changes.push((105_000 + k * 20_000, Active));
        }
        let alerts = run(&mut i, &changes, 3_600_000);
        assert_eq!(
            alerts,
            vec![
                (62_000, Alert::Offline { since: 2_000 }),
                (70_000, Alert::Online { since: 2_000 }),
                (
                    662_000,
                    Alert::Flapping {
                        outages: 7,
                        window: 600_000,
                        still_offline: false
                    }
                ),
            ]
        );
        // The next window saw nothing: it closes quietly.
        assert_eq!(i.flap_window_end, None);
    }

    #[test]
    fn a_worker_down_when_the_window_ends_is_told_in_the_summary_and_back_after() {
        let mut i = Incident::new("w");
        let changes = [
            (1_000, Active),
            (2_000, Inactive),
            (70_000, Active),
            (200_000, Inactive),
            (2_000_000, Active),
        ];
        let alerts = run(&mut i, &changes, 3_600_000);
        assert_eq!(
            alerts,
            vec![
                (62_000, Alert::Offline { since: 2_000 }),
                (70_000, Alert::Online { since: 2_000 }),
                (
                    662_000,
                    Alert::Flapping {
                        outages: 1,
                        window: 600_000,
                        still_offline: true
                    }
                ),
                (2_000_000, Alert::Online { since: 200_000 }),
            ]
        );
    }

    #[test]
    fn an_older_view_is_ignored() {
        let mut i = Incident::new("w");
        i.observe(seen(5_000, Active));
        assert_eq!(i.observe(seen(4_000, Inactive)), vec![]);
        assert_eq!(i.offline_since, None);
        // The same view twice (two replicas) applies once.
        i.observe(seen(6_000, Inactive));
        let before = i.clone();
        i.observe(seen(6_000, Inactive));
        assert_eq!(i, before);
    }

    #[test]
    fn not_ready_past_its_grace_is_told_once_per_spell() {
        let mut i = Incident::new("w");
        let changes = [
            (1_000, Active),
            (2_000, NotReady),
            (400_000, Active),
            (500_000, NotReady),
            (600_000, Active),
        ];
        let alerts = run(&mut i, &changes, 3_600_000);
        assert_eq!(alerts, vec![(302_000, Alert::NotReady { since: 2_000 })]);
    }

    #[test]
    fn after_a_restart_outages_get_the_grace_again_from_the_start() {
        // Streams ended at 2 s when the control plane stopped; it is back
        // at 500 s and agents reconnect at 530 s: nothing to tell.
        let t = Timing {
            quiet_until: 500_000 + T.offline_grace,
            ..T
        };
        let mut i = Incident::new("w");
        i.observe(seen(1_000, Active));
        i.observe(seen(2_000, Inactive));
        assert_eq!(i.tick(500_000, &t), vec![]);
        assert_eq!(i.due_at, Some(560_000));
        i.observe(seen(530_000, Active));
        assert_eq!(i.tick(530_000, &t), vec![]);
        assert_eq!(i.due_at, None);
        // One that stays away is told a grace after the start.
        i.observe(seen(540_000, Inactive));
        let mut j = i.clone();
        j.offline_since = Some(2_000);
        assert_eq!(j.tick(560_000, &t), vec![Alert::Offline { since: 2_000 }]);
    }

    #[test]
    fn maintenance_is_no_outage() {
        let mut i = Incident::new("w");
        let alerts = run(&mut i, &[(1_000, Active), (2_000, Maintenance)], 3_600_000);
        assert_eq!(alerts, vec![]);
    }
}
