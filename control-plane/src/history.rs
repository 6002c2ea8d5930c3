//! Metric history for charts (issue #23): the fleet's and each worker's
//! CPU, memory and disk, and each subscription's status and restarts, kept
//! in the store at two resolutions and answered already downsampled.
//!
//! - `recorder`: one task that follows the hub's metrics flushes and the
//!   subscriptions' changes, sums them per worker and per step in memory,
//!   and writes the closed steps in a few batched transactions per step
//!   (never one write per heartbeat), then prunes what outlived its
//!   retention.
//! - `window`: a request's range and step, checked and lined up.
//! - `queries`: the batched writes and the grouped reads.
//! - `service`: the gRPC HistoryService.
//!
//! Why these resolutions: the console's ranges are 6 h, 24 h and 30 d.
//! Fine points of 1 minute kept 25 hours draw the 6 h and 24 h charts at
//! full detail (360 and 1,440 points); coarse points of 1 hour kept 31
//! days draw 30 days in 720 points. At 10,000 workers that is 10,000 rows
//! a minute (167 rows/s, in 5 transactions) plus 10,000 an hour, and about
//! 15 million fine and 7.4 million coarse rows kept.

pub mod queries;
pub mod recorder;
pub mod window;

use std::time::Duration;

/// How history is kept.
#[derive(Debug, Clone)]
pub struct HistorySettings {
    /// Width of a fine point (default 1 minute).
    pub fine_step: Duration,
    /// How long fine points are kept (default 25 hours).
    pub fine_retention: Duration,
    /// Width of a coarse point (default 1 hour); a multiple of the fine step.
    pub coarse_step: Duration,
    /// How long coarse points and subscription changes are kept (default
    /// 31 days).
    pub coarse_retention: Duration,
    /// How long after a step ends it is written: heartbeats of the step
    /// reach the recorder with the next metrics flush.
    pub grace: Duration,
}

impl HistorySettings {
    /// The fine step in ms (at least 1).
    pub fn fine_ms(&self) -> i64 {
        (self.fine_step.as_millis() as i64).max(1)
    }

    /// The coarse step in ms: a multiple of the fine step.
    pub fn coarse_ms(&self) -> i64 {
        let fine = self.fine_ms();
        let coarse = (self.coarse_step.as_millis() as i64).max(fine);
        coarse / fine * fine
    }

    /// The fine retention in ms.
    pub fn fine_retention_ms(&self) -> i64 {
        self.fine_retention.as_millis() as i64
    }

    /// The coarse retention in ms (never shorter than the fine one).
    pub fn coarse_retention_ms(&self) -> i64 {
        (self.coarse_retention.as_millis() as i64).max(self.fine_retention_ms())
    }

    /// The grace in ms.
    pub fn grace_ms(&self) -> i64 {
        self.grace.as_millis() as i64
    }
}

impl Default for HistorySettings {
    fn default() -> Self {
        HistorySettings {
            fine_step: Duration::from_secs(60),
            fine_retention: Duration::from_secs(25 * 3600),
            coarse_step: Duration::from_secs(3600),
            coarse_retention: Duration::from_secs(31 * 24 * 3600),
            grace: Duration::from_secs(6),
        }
    }
}
