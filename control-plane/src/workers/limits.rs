//! Per-worker limits on what writes to the store at once.
//!
//! Each stream opened, certificate renewed and readiness change is a write
//! through the store's single writer (on SQLite, one for the whole fleet).
//! Enroll is limited per client address; these calls are authenticated by
//! a worker certificate, so they are limited per worker: one certificate —
//! a buggy agent or a stolen key — cannot keep the writer busy for the
//! fleet. In memory: a worker's calls reach one replica at a time, and the
//! map holds only workers whose certificate the store accepted.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

/// A rate: `burst` at once, then one every `every`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// How many calls may come at once.
    pub burst: u32,
    /// The sustained spacing of calls after the burst.
    pub every: Duration,
}

/// A token bucket per worker id (GCRA: one instant per worker).
#[derive(Debug)]
pub struct WorkerLimiter {
    rate: Rate,
    buckets: Mutex<Buckets>,
}

#[derive(Debug, Default)]
struct Buckets {
    /// Per worker, when its bucket is full again ("theoretical arrival time").
    /// Keyed by the worker id's 128 bits (worker ids are UUIDs), not its
    /// text: a 10,000-worker fleet keeps an entry per worker.
    full_at: HashMap<u128, Instant>,
    /// The size at which buckets that are full again are dropped (a full
    /// bucket and a missing one mean the same): twice what the last pruning
    /// left, so pruning costs O(1) per call however large the fleet.
    prune_at: usize,
}

/// The smallest map that is pruned.
const PRUNE_ABOVE: usize = 4096;

impl WorkerLimiter {
    /// A limiter allowing `rate` per worker.
    pub fn new(rate: Rate) -> Self {
        WorkerLimiter {
            rate,
            buckets: Mutex::new(Buckets {
                full_at: HashMap::new(),
                prune_at: PRUNE_ABOVE,
            }),
        }
    }

    /// Takes one call for `worker_id`, or says how long until one is free.
    pub fn take(&self, worker_id: &str) -> Result<(), Duration> {
        self.take_at(worker_id, Instant::now())
    }

    fn take_at(&self, worker_id: &str, now: Instant) -> Result<(), Duration> {
        let every = self.rate.every;
        let allowance = every * self.rate.burst.max(1).saturating_sub(1);
        let mut b = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if b.full_at.len() > b.prune_at {
            b.full_at.retain(|_, t| *t > now);
            b.prune_at = PRUNE_ABOVE.max(2 * b.full_at.len());
        }
        let key = worker_key(worker_id);
        let full_at = b.full_at.get(&key).copied().unwrap_or(now).max(now);
        let ahead = full_at - now;
        if ahead > allowance {
            return Err(ahead - allowance);
        }
        b.full_at.insert(key, full_at + every);
        Ok(())
    }
}

/// The per-worker limits of AgentService.
#[derive(Debug)]
pub struct WorkerLimits {
    /// Connect calls (each marks the worker online: a write).
    pub connect: WorkerLimiter,
    /// RenewCertificate calls (each stores a new serial).
    pub renew: WorkerLimiter,
    /// Readiness changes reported on a stream (each a status write). A
    /// change over the limit is not refused: it is written with a later
    /// heartbeat, once the limit allows, so the record catches up.
    pub ready: WorkerLimiter,
    /// ClaimTransfers and ReportTransfer calls (each reads or writes the
    /// store): a few a second per transfer is what an agent sends.
    pub transfers: WorkerLimiter,
}

/// The bound on one worker's transfer calls: a burst of 60, then 10 a
/// second (an agent reports each running transfer once a second).
const TRANSFER_RATE: Rate = Rate {
    burst: 60,
    every: std::time::Duration::from_millis(100),
};

impl WorkerLimits {
    /// Limits at these rates.
    pub fn new(connect: Rate, renew: Rate, ready: Rate) -> Self {
        WorkerLimits {
            connect: WorkerLimiter::new(connect),
            renew: WorkerLimiter::new(renew),
            ready: WorkerLimiter::new(ready),
            transfers: WorkerLimiter::new(TRANSFER_RATE),
        }
    }
}

/// A worker id as a map key: its UUID's bits, or for an id that is not a
/// UUID (none the store makes) a hash of it.
fn worker_key(worker_id: &str) -> u128 {
    uuid::Uuid::parse_str(worker_id).map_or_else(
        |_| {
            use std::hash::BuildHasher;
            static SEED: std::sync::LazyLock<std::collections::hash_map::RandomState> =
                std::sync::LazyLock::new(Default::default);
            u128::from(SEED.hash_one(worker_id))
        },
        |u| u.as_u128(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_calls_are_spaced() {
        let l = WorkerLimiter::new(Rate {
            burst: 3,
            every: Duration::from_secs(10),
        });
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(l.take_at("w1", t0).is_ok());
        }
        let wait = l.take_at("w1", t0).unwrap_err();
        assert_eq!(wait, Duration::from_secs(10));
        // Another worker has its own bucket.
        assert!(l.take_at("w2", t0).is_ok());
        // One call is free again after `every`, not two.
        let t1 = t0 + Duration::from_secs(10);
        assert!(l.take_at("w1", t1).is_ok());
        assert!(l.take_at("w1", t1).is_err());
        // A long pause refills the burst, no more.
        let t2 = t1 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert!(l.take_at("w1", t2).is_ok());
        }
        assert!(l.take_at("w1", t2).is_err());
    }

    #[test]
    fn full_buckets_are_dropped_when_many_workers_are_tracked() {
        let l = WorkerLimiter::new(Rate {
            burst: 1,
            every: Duration::from_secs(1),
        });
        let t0 = Instant::now();
        for i in 0..=PRUNE_ABOVE {
            l.take_at(&format!("w{i}"), t0).unwrap();
        }
        l.take_at("late", t0 + Duration::from_secs(2)).unwrap();
        assert_eq!(l.buckets.lock().unwrap().full_at.len(), 1);
    }
}
