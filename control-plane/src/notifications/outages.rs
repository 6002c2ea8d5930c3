//! The incident state machine of one subscription, for its owner: which
//! notices its statuses and its containers' restarts call for. Pure, as
//! the workers' ([`super::incidents`]): [`super::customers`] loads the row,
//! feeds it what the reconciler recorded and the time, stores it back and
//! queues the notices, all in one transaction.
//!
//! - Down: DEGRADED or FAILED that lasts the grace is told once (as it is
//!   at the deadline); a shorter spell (a rollout, a worker reconnecting)
//!   is not told at all. RUNNING again after a told outage is told too;
//!   suspended or deleted is not a recovery.
//! - Flapping: a told outage opens the flap window; outages that begin in
//!   it are counted and summarised once at its end.
//! - Crash loop: `crash_restarts` restarts seen within `crash_window` is
//!   told once; the spell ends after a window without a restart.

use sqlx::FromRow;

/// The grace, the windows (ms) and the crash-loop count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutageTiming {
    /// `--notify-subscription-grace`.
    pub grace: i64,
    /// `--notify-flap-window`.
    pub flap_window: i64,
    /// `--notify-crash-restarts` (at least 1).
    pub crash_restarts: i32,
    /// `--notify-crash-window`.
    pub crash_window: i64,
}

impl Default for OutageTiming {
    /// The flags' defaults: 2 min, 10 min, 3 restarts in 10 min.
    fn default() -> Self {
        OutageTiming {
            grace: 120_000,
            flap_window: 600_000,
            crash_restarts: 3,
            crash_window: 600_000,
        }
    }
}

/// One subscription's incident state, as stored in `subscription_incidents`.
#[derive(Debug, Clone, Default, PartialEq, Eq, FromRow)]
pub struct Outage {
    /// The subscription.
    pub subscription_id: String,
    /// Its owner.
    pub user_id: String,
    /// Its name.
    pub name: String,
    /// The status last recorded (as stored: `DEGRADED`, ...).
    pub status: String,
    /// Its reason, in the customer's words.
    pub reason: String,
    /// When the current outage began.
    pub down_since: Option<i64>,
    /// The current outage was told.
    pub down_notified: bool,
    /// When the flap window opened.
    pub flap_window_start: Option<i64>,
    /// When it ends.
    pub flap_window_end: Option<i64>,
    /// Outages begun in the window.
    pub flap_outages: i32,
    /// The containers' restarts last seen.
    pub restarts: i32,
    /// When the latest restarts were seen: `t1,t2,...`, oldest first.
    pub crash_marks: String,
    /// The current crash loop was told.
    pub crash_notified: bool,
    /// The next deadline.
    pub due_at: Option<i64>,
}

/// A notice the state machine calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Told {
    /// Down since then, past the grace; `failed` when FAILED (else
    /// DEGRADED).
    Down {
        /// When the outage began.
        since: i64,
        /// FAILED rather than DEGRADED.
        failed: bool,
    },
    /// Running again after a told outage that began then.
    Recovered {
        /// When the outage began.
        since: i64,
    },
    /// Outages counted in a flap window.
    Flapping {
        /// How many.
        outages: i32,
        /// The window's length.
        window: i64,
        /// Down now.
        still_down: bool,
    },
    /// `restarts` restarts within `window`.
    CrashLoop {
        /// How many.
        restarts: i32,
        /// Within how long.
        window: i64,
    },
}

fn is_down(status: &str) -> bool {
    matches!(status, "DEGRADED" | "FAILED")
}

impl Outage {
    /// A subscription never seen before; restarts before now are no crash
    /// loop (the first look counts from what it sees).
    pub fn new(subscription_id: &str, user_id: &str, name: &str, restarts: i32) -> Outage {
        Outage {
            subscription_id: subscription_id.to_owned(),
            user_id: user_id.to_owned(),
            name: name.to_owned(),
            restarts,
            ..Outage::default()
        }
    }

    /// Nothing going on and nothing to remember: no row is needed (the
    /// restart count is remembered once there is one).
    pub fn is_quiet(&self) -> bool {
        self.down_since.is_none()
            && !self.down_notified
            && self.flap_window_end.is_none()
            && self.restarts == 0
            && self.crash_marks.is_empty()
            && !self.crash_notified
    }

    fn marks(&self) -> Vec<i64> {
        self.crash_marks
            .split(',')
            .filter_map(|m| m.parse().ok())
            .collect()
    }

    fn set_marks(&mut self, marks: &[i64]) {
        self.crash_marks = marks
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(",");
    }

    fn in_flap_window(&self, at: i64) -> bool {
        self.flap_window_end.is_some_and(|end| at < end)
    }

    /// Applies a recorded status (`reason` in the customer's words) and the
    /// containers' restarts at `now`.
    pub fn observe(
        &mut self,
        status: &str,
        reason: &str,
        restarts: i32,
        now: i64,
        t: &OutageTiming,
    ) -> Vec<Told> {
        let mut told = Vec::new();
        match (self.down_since, is_down(status)) {
            (None, true) => {
                self.down_since = Some(now);
                if self.in_flap_window(now) {
                    self.flap_outages += 1;
                }
            }
            (Some(since), false) => {
                self.down_since = None;
                if std::mem::take(&mut self.down_notified) && status == "RUNNING" {
                    told.push(Told::Recovered { since });
                }
            }
            _ => {}
        }
        status.clone_into(&mut self.status);
        reason.clone_into(&mut self.reason);
        if restarts > self.restarts {
            let keep = usize::try_from(t.crash_restarts.max(1)).unwrap_or(1);
            let mut marks = self.marks();
            let new = usize::try_from(restarts - self.restarts)
                .unwrap_or(0)
                .min(keep);
            marks.extend(std::iter::repeat_n(now, new));
            let excess = marks.len().saturating_sub(keep);
            marks.drain(..excess);
            self.set_marks(&marks);
        }
        // Fewer: pods were replaced, their counts start again.
        self.restarts = restarts;
        told
    }

    /// Fires the deadlines that passed by `now`.
    pub fn tick(&mut self, now: i64, t: &OutageTiming) -> Vec<Told> {
        let mut told = Vec::new();
        if let (Some(start), Some(end)) = (self.flap_window_start, self.flap_window_end)
            && end <= now
        {
            if self.flap_outages > 0 {
                let still_down = self.down_since.is_some();
                told.push(Told::Flapping {
                    outages: self.flap_outages,
                    window: end - start,
                    still_down,
                });
                self.down_notified |= still_down;
                self.open_flap_window(now, t);
            } else {
                self.flap_window_start = None;
                self.flap_window_end = None;
            }
        }
        if let Some(since) = self.down_since
            && !self.down_notified
            && self.flap_window_end.is_none()
            && since + t.grace <= now
        {
            told.push(Told::Down {
                since,
                failed: self.status == "FAILED",
            });
            self.down_notified = true;
            self.open_flap_window(now, t);
        }
        let marks = self.marks();
        if let Some(&last) = marks.last() {
            if last + t.crash_window <= now {
                // A window without a restart: the spell is over.
                self.crash_marks.clear();
                self.crash_notified = false;
            } else if !self.crash_notified
                && marks.len() >= usize::try_from(t.crash_restarts.max(1)).unwrap_or(1)
                && last - marks[0] <= t.crash_window
            {
                told.push(Told::CrashLoop {
                    restarts: i32::try_from(marks.len()).unwrap_or(i32::MAX),
                    window: t.crash_window,
                });
                self.crash_notified = true;
            }
        }
        self.due_at = self.next_due(t);
        told
    }

    fn open_flap_window(&mut self, now: i64, t: &OutageTiming) {
        self.flap_window_start = Some(now);
        self.flap_window_end = Some(now + t.flap_window);
        self.flap_outages = 0;
    }

    /// The earliest moment [`Outage::tick`] would do something.
    pub fn next_due(&self, t: &OutageTiming) -> Option<i64> {
        let down = self
            .down_since
            .filter(|_| !self.down_notified && self.flap_window_end.is_none())
            .map(|s| s + t.grace);
        let crash_end = self.marks().last().map(|l| l + t.crash_window);
        [self.flap_window_end, down, crash_end]
            .into_iter()
            .flatten()
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: OutageTiming = OutageTiming {
        grace: 60_000,
        flap_window: 600_000,
        crash_restarts: 3,
        crash_window: 300_000,
    };

    /// Feeds (time, status, restarts) and ticks at each change and at
    /// every deadline up to `until`; returns what was told and when.
    fn run(o: &mut Outage, changes: &[(i64, &str, i32)], until: i64) -> Vec<(i64, Told)> {
        let mut out = Vec::new();
        let mut now = 0;
        let mut changes = changes.iter().peekable();
        loop {
            while let Some((at, s, r)) = changes.next_if(|c| c.0 <= now) {
                out.extend(o.observe(s, "", *r, *at, &T).into_iter().map(|t| (*at, t)));
            }
            out.extend(o.tick(now, &T).into_iter().map(|t| (now, t)));
            let next = [o.due_at, changes.peek().map(|c| c.0)]
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

    #[test]
    fn a_blip_shorter_than_the_grace_tells_nothing() {
        let mut o = Outage::new("s", "u", "shop", 0);
        let told = run(
            &mut o,
            &[
                (1_000, "RUNNING", 0),
                (2_000, "DEGRADED", 0),
                (50_000, "RUNNING", 0),
            ],
            3_600_000,
        );
        assert_eq!(told, vec![]);
        assert!(o.is_quiet());
    }

    #[test]
    fn a_lasting_outage_is_told_once_as_it_is_and_its_end_too() {
        let mut o = Outage::new("s", "u", "shop", 0);
        let told = run(
            &mut o,
            &[
                (1_000, "RUNNING", 0),
                (2_000, "FAILED", 0),
                (30_000, "DEGRADED", 0),
                (900_000, "RUNNING", 0),
            ],
            3_600_000,
        );
        assert_eq!(
            told,
            vec![
                (
                    62_000,
                    Told::Down {
                        since: 2_000,
                        failed: false
                    }
                ),
                (900_000, Told::Recovered { since: 2_000 }),
            ]
        );
    }

    #[test]
    fn suspension_ends_an_outage_without_a_recovery() {
        let mut o = Outage::new("s", "u", "shop", 0);
        let told = run(
            &mut o,
            &[(2_000, "FAILED", 0), (200_000, "SUSPENDED", 0)],
            3_600_000,
        );
        assert_eq!(
            told,
            vec![(
                62_000,
                Told::Down {
                    since: 2_000,
                    failed: true
                }
            )]
        );
    }

    #[test]
    fn outages_in_the_flap_window_are_summarised_once() {
        let mut o = Outage::new("s", "u", "shop", 0);
        let mut changes = vec![(2_000, "DEGRADED", 0), (70_000, "RUNNING", 0)];
        for k in 0..5 {
            changes.push((100_000 + k * 20_000, "DEGRADED", 0));
            changes.push((105_000 + k * 20_000, "RUNNING", 0));
        }
        let told = run(&mut o, &changes, 3_600_000);
        assert_eq!(
            told,
            vec![
                (
                    62_000,
                    Told::Down {
                        since: 2_000,
                        failed: false
                    }
                ),
                (70_000, Told::Recovered { since: 2_000 }),
                (
                    662_000,
                    Told::Flapping {
                        outages: 5,
                        window: 600_000,
                        still_down: false
                    }
                ),
            ]
        );
        assert_eq!(o.flap_window_end, None);
    }

    #[test]
    fn restarts_climbing_within_the_window_are_one_crash_loop_per_spell() {
        let mut o = Outage::new("s", "u", "shop", 2);
        // Restarts from before the first look are no crash loop.
        let told = run(
            &mut o,
            &[
                (1_000, "RUNNING", 2),
                (10_000, "RUNNING", 3),
                (20_000, "RUNNING", 4),
                (30_000, "RUNNING", 5),
                (40_000, "RUNNING", 9),
                // A window without a restart ends the spell; a new one is
                // told again.
                (1_000_000, "RUNNING", 10),
                (1_010_000, "RUNNING", 13),
            ],
            3_600_000,
        );
        assert_eq!(
            told,
            vec![
                (
                    30_000,
                    Told::CrashLoop {
                        restarts: 3,
                        window: 300_000
                    }
                ),
                (
                    1_010_000,
                    Told::CrashLoop {
                        restarts: 3,
                        window: 300_000
                    }
                ),
            ]
        );
    }

    #[test]
    fn slow_restarts_are_no_crash_loop() {
        let mut o = Outage::new("s", "u", "shop", 0);
        let told = run(
            &mut o,
            &[
                (1_000, "RUNNING", 1),
                (400_000, "RUNNING", 2),
                (800_000, "RUNNING", 3),
            ],
            3_600_000,
        );
        assert_eq!(told, vec![]);
    }
}
