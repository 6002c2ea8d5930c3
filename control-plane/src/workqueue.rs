//! A work queue for the control loops (subscriptions, retained volumes,
//! nodes, drains, mail delivery, fleet incidents):
//! keys, one pending entry per key, delayed requeue and per-key
//! exponential backoff with jitter, after kube-runtime's controller
//! (its scheduler keeps one entry per object at the earliest time asked;
//! `reconcile` answers an `Action`, `error_policy` decides the retry).
//!
//! - [`WorkQueue::add`]: look at this key now (a change). A key waiting out
//!   a backoff keeps its time: the retry sees the latest state anyway.
//! - [`WorkQueue::add_now`]: now, even during a backoff (a person asked).
//! - [`WorkQueue::add_after`]: look at it after a delay; the earliest of
//!   the pending times wins.
//! - [`WorkQueue::resync`]: the periodic pass. Never adds a second entry to
//!   a key already waiting, and never shortens a backoff.
//! - [`WorkQueue::process`]: runs one [`Reconcile::reconcile`], then
//!   schedules what its [`Action`] says, or on an error what
//!   [`Reconcile::error_policy`] says, by default the key's next backoff:
//!   a delay drawn uniformly in `[base, ceiling]` where the ceiling starts
//!   at `base` and doubles after each failure up to `max` (`min(prev * 2,
//!   max)`); a success resets it.
//!
//! Infrastructure: this module knows nothing of what the keys mean.

use std::{
    collections::{BTreeSet, HashMap},
    fmt::Display,
    hash::Hash,
    sync::Mutex,
    time::Duration,
};

use rand::Rng;
use tokio::{sync::Notify, time::Instant};

/// What a successful pass asks for next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing until something changes (or the next resync).
    Done,
    /// Look again after this long.
    RequeueAfter(Duration),
}

/// A control loop over keys of type `Key`: the struct owns its state.
pub trait Reconcile {
    /// What the queue holds (an id).
    type Key;
    /// A failed pass.
    type Error: Display;

    /// Makes the world what `key` says, once.
    fn reconcile(
        &mut self,
        key: &Self::Key,
    ) -> impl std::future::Future<Output = Result<Action, Self::Error>> + Send;

    /// What to do after `error`; `backoff` is the key's next backoff delay
    /// (already counted). The default retries after it.
    fn error_policy(&mut self, key: &Self::Key, error: &Self::Error, backoff: Duration) -> Action {
        let _ = (key, error);
        Action::RequeueAfter(backoff)
    }
}

/// How failed keys are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first retry's ceiling, and the shortest retry.
    pub base: Duration,
    /// The ceiling's cap.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(120),
        }
    }
}

/// A key's run of failures.
#[derive(Debug, Clone, Copy)]
struct Failing {
    /// Failures in a row.
    count: u32,
    /// The current ceiling.
    ceiling: Duration,
    /// Until when the key waits out its backoff.
    until: Instant,
    /// The first failure of the run.
    since: Instant,
}

#[derive(Debug)]
struct State<K> {
    /// Pending keys and when they are due.
    due: HashMap<K, Instant>,
    /// The same, ordered by time.
    order: BTreeSet<(Instant, K)>,
    failing: HashMap<K, Failing>,
}

/// The queue. Shared by reference (put it in an `Arc` or a struct that is).
#[derive(Debug)]
pub struct WorkQueue<K> {
    state: Mutex<State<K>>,
    wake: Notify,
    backoff: Backoff,
}

impl<K: Clone + Eq + Hash + Ord> WorkQueue<K> {
    /// An empty queue retrying failures with `backoff`.
    pub fn new(backoff: Backoff) -> Self {
        WorkQueue {
            state: Mutex::new(State {
                due: HashMap::new(),
                order: BTreeSet::new(),
                failing: HashMap::new(),
            }),
            wake: Notify::new(),
            backoff: Backoff {
                base: backoff.base.max(Duration::from_millis(1)),
                max: backoff.max.max(backoff.base),
            },
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State<K>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Puts `key` at `at` unless it is pending earlier already.
    fn put(&self, s: &mut State<K>, key: K, at: Instant) {
        match s.due.get(&key) {
            Some(d) if *d <= at => return,
            Some(d) => {
                s.order.remove(&(*d, key.clone()));
            }
            None => {}
        }
        s.due.insert(key.clone(), at);
        s.order.insert((at, key));
        self.wake.notify_one();
    }

    /// Asks for these keys now; a key waiting out its backoff keeps its
    /// time.
    pub fn add(&self, keys: impl IntoIterator<Item = K>) {
        let now = Instant::now();
        let mut s = self.state();
        for k in keys {
            let at = s.failing.get(&k).map_or(now, |f| f.until.max(now));
            self.put(&mut s, k, at);
        }
    }

    /// Asks for `key` now, even if it waits out a backoff (a person asked;
    /// its failures still count, so a failure now waits longer next).
    pub fn add_now(&self, key: K) {
        let mut s = self.state();
        self.put(&mut s, key, Instant::now());
    }

    /// Asks for `key` after `delay` (or earlier if already pending earlier).
    pub fn add_after(&self, key: K, delay: Duration) {
        let mut s = self.state();
        self.put(&mut s, key, Instant::now() + delay);
    }

    /// The periodic pass: adds each key that neither waits already nor
    /// waits out a backoff.
    pub fn resync(&self, keys: impl IntoIterator<Item = K>) {
        let now = Instant::now();
        let mut s = self.state();
        for k in keys {
            if s.due.contains_key(&k) || s.failing.get(&k).is_some_and(|f| f.until > now) {
                continue;
            }
            self.put(&mut s, k, now);
        }
    }

    /// Forgets `key` (its object is gone): no pending entry, no backoff.
    pub fn forget(&self, key: &K) {
        let mut s = self.state();
        if let Some(d) = s.due.remove(key) {
            s.order.remove(&(d, key.clone()));
        }
        s.failing.remove(key);
    }

    /// The number of pending keys.
    pub fn len(&self) -> usize {
        self.state().due.len()
    }

    /// Whether no key is pending.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// When `key` is due, if it is pending.
    pub fn due(&self, key: &K) -> Option<Instant> {
        self.state().due.get(key).copied()
    }

    /// Since when `key` has failed without a success in between, and how
    /// many times.
    pub fn failing(&self, key: &K) -> Option<(Instant, u32)> {
        self.state().failing.get(key).map(|f| (f.since, f.count))
    }

    /// Takes the next key that is due, without waiting.
    pub fn pop_due(&self) -> Option<K> {
        let now = Instant::now();
        let mut s = self.state();
        let (at, _) = s.order.first()?;
        if *at > now {
            return None;
        }
        let (_, k) = s.order.pop_first()?;
        s.due.remove(&k);
        Some(k)
    }

    /// When the next key is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.state().order.first().map(|(at, _)| *at)
    }

    /// Waits for the next key that is due and takes it.
    pub async fn next(&self) -> K {
        loop {
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(k) = self.pop_due() {
                return k;
            }
            match self.next_due() {
                Some(at) => {
                    tokio::select! {
                        () = notified => {}
                        () = tokio::time::sleep_until(at) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// Counts a failure of `key` and returns its next backoff delay (the
    /// key is not scheduled: see [`WorkQueue::process`]).
    pub fn fail(&self, key: &K) -> Duration {
        let now = Instant::now();
        let mut s = self.state();
        let f = s.failing.entry(key.clone()).or_insert(Failing {
            count: 0,
            ceiling: Duration::ZERO,
            until: now,
            since: now,
        });
        f.count = f.count.saturating_add(1);
        f.ceiling = if f.ceiling.is_zero() {
            self.backoff.base
        } else {
            (f.ceiling * 2).min(self.backoff.max)
        };
        let delay = jitter(self.backoff.base, f.ceiling);
        f.until = now + delay;
        delay
    }

    /// Forgets `key`'s failures: its next failure starts at `base` again.
    pub fn succeed(&self, key: &K) {
        self.state().failing.remove(key);
    }

    /// Runs one pass of `r` over `key` and schedules what follows. Returns
    /// the pass's result, for the caller's log.
    pub async fn process<R>(&self, r: &mut R, key: K) -> Result<Action, R::Error>
    where
        R: Reconcile<Key = K>,
    {
        let out = r.reconcile(&key).await;
        let action = match &out {
            Ok(a) => {
                self.succeed(&key);
                *a
            }
            Err(e) => {
                let backoff = self.fail(&key);
                r.error_policy(&key, e, backoff)
            }
        };
        if let Action::RequeueAfter(d) = action {
            self.add_after(key, d);
        }
        out
    }
}

/// A delay drawn uniformly in `[low, high]` ("full jitter" with a floor, so
/// a retry never comes sooner than the base).
fn jitter(low: Duration, high: Duration) -> Duration {
    if high <= low {
        return low;
    }
    let ms = rand::rng().random_range(low.as_millis() as u64..=high.as_millis() as u64);
    Duration::from_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BACKOFF: Backoff = Backoff {
        base: Duration::from_secs(1),
        max: Duration::from_secs(60),
    };

    /// A loop that fails while `failing` and counts its passes.
    struct Counter {
        failing: bool,
        passes: u32,
    }

    impl Reconcile for Counter {
        type Key = &'static str;
        type Error = &'static str;
        async fn reconcile(&mut self, _: &&'static str) -> Result<Action, &'static str> {
            self.passes += 1;
            if self.failing {
                Err("refused")
            } else {
                Ok(Action::Done)
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn one_pending_entry_per_key_at_its_earliest_time() {
        let q = WorkQueue::new(BACKOFF);
        q.add_after("a", Duration::from_secs(10));
        q.add_after("a", Duration::from_secs(20));
        q.add(["b", "b", "b"]);
        assert_eq!(q.len(), 2);
        assert_eq!(q.pop_due(), Some("b"));
        assert_eq!(q.pop_due(), None, "a is not due yet and b was taken once");
        let start = Instant::now();
        assert_eq!(q.next().await, "a");
        assert_eq!(start.elapsed(), Duration::from_secs(10));
        // An earlier request moves a pending key forward.
        q.add_after("c", Duration::from_secs(30));
        q.add(["c"]);
        assert_eq!(q.due(&"c"), Some(Instant::now()));
        assert_eq!(q.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_grows_to_its_cap_and_resets_on_success() {
        let q = WorkQueue::new(BACKOFF);
        let mut ceiling = BACKOFF.base;
        for n in 1..=12 {
            let d = q.fail(&"k");
            assert!(
                d >= BACKOFF.base && d <= ceiling,
                "failure {n}: {d:?} not in [{:?}, {ceiling:?}]",
                BACKOFF.base
            );
            assert_eq!(q.failing(&"k").map(|f| f.1), Some(n));
            ceiling = (ceiling * 2).min(BACKOFF.max);
        }
        assert_eq!(ceiling, BACKOFF.max, "the cap was reached within the loop");
        // At the cap, the delays spread over [base, max]: some above half.
        let long = (0..200)
            .map(|_| q.fail(&"k"))
            .filter(|d| *d > BACKOFF.max / 2)
            .count();
        assert!(long > 50, "{long} of 200 capped delays above max/2");
        q.succeed(&"k");
        assert_eq!(q.failing(&"k"), None);
        assert_eq!(q.fail(&"k"), BACKOFF.base, "after a success it starts over");
    }

    #[test]
    fn jitter_stays_within_its_bounds_and_spreads() {
        let (lo, hi) = (Duration::from_millis(1000), Duration::from_millis(8000));
        let draws: Vec<Duration> = (0..2000).map(|_| jitter(lo, hi)).collect();
        assert!(draws.iter().all(|d| *d >= lo && *d <= hi));
        let low_half = draws
            .iter()
            .filter(|d| **d < Duration::from_millis(4500))
            .count();
        assert!(
            (700..1300).contains(&low_half),
            "{low_half} of 2000 in the lower half"
        );
        assert_eq!(jitter(hi, lo), hi, "an empty range is its low end");
    }

    #[tokio::test(start_paused = true)]
    async fn resync_never_stacks_and_never_shortens_a_backoff() {
        let q = WorkQueue::new(BACKOFF);
        let mut r = Counter {
            failing: true,
            passes: 0,
        };
        // Ten failures: the ceiling is at the cap.
        for _ in 0..10 {
            q.add(["k"]);
            while q.pop_due().is_none() {
                tokio::time::advance(Duration::from_millis(100)).await;
            }
            assert!(q.process(&mut r, "k").await.is_err());
        }
        let due = q.due(&"k").expect("a failed key is requeued");
        // Resyncs and changes while it waits: one entry, at the same time.
        for _ in 0..50 {
            q.resync(["k"]);
            q.add(["k"]);
        }
        assert_eq!(q.len(), 1);
        assert_eq!(q.due(&"k"), Some(due));
        // A resync of a key in backoff whose entry was taken adds nothing.
        assert_eq!(q.pop_due(), None);
        // Over ten minutes of resyncs every 10 s, the failing key runs at
        // most once per backoff delay (at least `base`, mostly far more).
        let before = r.passes;
        let end = Instant::now() + Duration::from_secs(600);
        while Instant::now() < end {
            q.resync(["k"]);
            while let Some(k) = q.pop_due() {
                let _ = q.process(&mut r, k).await;
            }
            tokio::time::advance(Duration::from_secs(10)).await;
        }
        let passes = r.passes - before;
        assert!(
            (5..=40).contains(&passes),
            "{passes} passes in 10 minutes against a 60 s cap with resyncs every 10 s"
        );
        // Once it succeeds, resyncs bring it back every time.
        r.failing = false;
        tokio::time::advance(BACKOFF.max).await;
        while let Some(k) = q.pop_due() {
            q.process(&mut r, k).await.unwrap();
        }
        assert_eq!(q.failing(&"k"), None);
        q.resync(["k"]);
        assert_eq!(q.pop_due(), Some("k"));
    }

    /// A loop whose error policy gives up on a refusal and retries the
    /// rest after the queue's backoff.
    struct Picky {
        error: &'static str,
        given_up: Vec<&'static str>,
    }

    impl Reconcile for Picky {
        type Key = &'static str;
        type Error = &'static str;
        async fn reconcile(&mut self, _: &&'static str) -> Result<Action, &'static str> {
            Err(self.error)
        }
        fn error_policy(
            &mut self,
            key: &&'static str,
            e: &&'static str,
            backoff: Duration,
        ) -> Action {
            if *e == "forbidden" {
                self.given_up.push(key);
                Action::Done
            } else {
                Action::RequeueAfter(backoff)
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_error_policy_decides_between_a_retry_and_giving_up() {
        let q = WorkQueue::new(BACKOFF);
        let mut r = Picky {
            error: "unavailable",
            given_up: vec![],
        };
        // A transient error: back after the backoff, counted as a failure.
        assert_eq!(q.process(&mut r, "a").await, Err("unavailable"));
        let due = q.due(&"a").expect("a transient error is retried");
        assert_eq!(
            due - Instant::now(),
            BACKOFF.base,
            "the first backoff is the base"
        );
        assert_eq!(q.failing(&"a").map(|f| f.1), Some(1));
        // A refusal: the policy gives up, nothing is pending, and the key
        // waits for the next change (or resync), or a person's `add_now`.
        r.error = "forbidden";
        assert_eq!(q.process(&mut r, "b").await, Err("forbidden"));
        assert_eq!(q.due(&"b"), None);
        assert_eq!(r.given_up, vec!["b"]);
        q.add_now("b");
        assert_eq!(q.due(&"b"), Some(Instant::now()));
        // The default policy retries after the backoff.
        let mut c = Counter {
            failing: true,
            passes: 0,
        };
        assert!(q.process(&mut c, "c").await.is_err());
        assert!(
            q.due(&"c")
                .is_some_and(|d| d >= Instant::now() + BACKOFF.base)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn next_wakes_for_an_added_key() {
        let q = std::sync::Arc::new(WorkQueue::new(BACKOFF));
        let q2 = q.clone();
        let t = tokio::spawn(async move { q2.next().await });
        tokio::time::sleep(Duration::from_secs(5)).await;
        q.add(["x"]);
        assert_eq!(t.await.unwrap(), "x");
    }
}
