//! What a subscription's owner is told, and when.
//!
//! The subscription reconciler records every status it derives in a write
//! transaction; in that transaction it calls [`observe`], which moves the
//! subscription's incident row ([`super::outages`]) and queues the notices
//! it calls for to the owner ([`super::Notifier::tell_owner`]). Write
//! transactions are serialised on both backends, so whichever replica
//! reconciles, each notice is written once. A deadline (the grace, a flap
//! window's end, a crash spell's end) is kept in the row's `due_at`;
//! [`OutageLoop`] runs the same step at it, on every replica (one finds
//! the row advanced and writes nothing), so a subscription that stays
//! DEGRADED is told at its grace, not at the reconciler's next resync.
//!
//! Suspensions and resumptions by an administrator, and rolled-back
//! upgrades, are single notices queued where those changes are written
//! ([`tell_suspended`], [`tell_resumed`], [`subscription_rolled_back`]).

use std::time::Duration;

use super::{
    Notifier,
    notices::Notice,
    outages::{Outage, OutageTiming, Told},
    owner_notices::{self, SubscriptionRef},
    queries,
};
use crate::{
    error::{AppError, AppResult},
    store::{Db, Tx, now_ms},
    workqueue::{Action, Backoff, Reconcile},
};

/// How a step the store failed is retried (and the deadline queue's
/// backoff).
pub(crate) const BACKOFF: Backoff = Backoff {
    base: Duration::from_millis(500),
    max: Duration::from_secs(30),
};

/// How often the stored deadlines are looked at besides the queue (other
/// replicas' deadlines, a restart).
const RESCAN: Duration = Duration::from_secs(10);

/// What the reconciler recorded about one subscription.
#[derive(Debug, Clone, Copy)]
pub struct Recorded<'a> {
    /// The subscription.
    pub id: &'a str,
    /// Its owner.
    pub user_id: &'a str,
    /// Its name.
    pub name: &'a str,
    /// The status's reason in the customer's words.
    pub reason_for_customer: &'a str,
    /// Its containers' restarts, summed over its pods.
    pub restarts: i32,
}

/// Moves the incident of the subscription the reconciler just recorded in
/// `tx` (its status as `tx` holds it now) and queues its owner's notices
/// in `tx`. Returns how many messages were queued (call
/// [`Notifier::wake`] after the commit when not zero).
pub async fn observe(notifier: &Notifier, tx: &mut Tx, seen: &Recorded<'_>) -> AppResult<usize> {
    let Some(status) = queries::subscription_status(&mut *tx, seen.id).await? else {
        return Ok(0);
    };
    let t = *notifier.outage_timing();
    let now = now_ms();
    let stored = queries::outage(&mut *tx, seen.id).await?;
    let mut outage = stored
        .clone()
        .unwrap_or_else(|| Outage::new(seen.id, seen.user_id, seen.name, seen.restarts));
    seen.user_id.clone_into(&mut outage.user_id);
    seen.name.clone_into(&mut outage.name);
    let mut told = outage.observe(&status, seen.reason_for_customer, seen.restarts, now, &t);
    told.extend(outage.tick(now, &t));
    let queued = store_and_tell(notifier, tx, stored.as_ref(), &outage, &told, now).await?;
    if let Some(due) = outage.due_at {
        notifier
            .outage_deadlines()
            .add_after(seen.id.to_owned(), until(due));
    }
    Ok(queued)
}

fn until(due: i64) -> Duration {
    u64::try_from(due - now_ms()).map_or(Duration::ZERO, Duration::from_millis)
}

/// Writes `outage` over `stored` (nothing when nothing changed, the row
/// gone when it is quiet) and queues `told` to the owner.
async fn store_and_tell(
    notifier: &Notifier,
    tx: &mut Tx,
    stored: Option<&Outage>,
    outage: &Outage,
    told: &[Told],
    now: i64,
) -> AppResult<usize> {
    match stored {
        Some(s) if s == outage => {}
        Some(_) if outage.is_quiet() => {
            queries::delete_outage(tx, &outage.subscription_id).await?;
        }
        None if outage.is_quiet() => {}
        _ => queries::save_outage(tx, outage).await?,
    }
    let s = SubscriptionRef {
        id: outage.subscription_id.clone(),
        name: outage.name.clone(),
    };
    let mut queued = 0;
    for t in told {
        let notice = notice_of(&s, outage, *t, now);
        let messages = notifier.tell_owner(tx, &outage.user_id, &notice).await?;
        tracing::info!(subscription = %s.id, notice = %notice.summary, messages, "owner notice");
        queued += messages;
    }
    Ok(queued)
}

fn notice_of(s: &SubscriptionRef, o: &Outage, told: Told, now: i64) -> Notice {
    match told {
        Told::Down { since, failed } => owner_notices::down(s, failed, &o.reason, since, now),
        Told::Recovered { since } => owner_notices::recovered(s, since, now),
        Told::Flapping {
            outages,
            window,
            still_down,
        } => owner_notices::flapping(s, outages, window, still_down, &o.reason, now),
        Told::CrashLoop { restarts, window } => {
            owner_notices::crash_loop(s, restarts, window, &o.status, now)
        }
    }
}

/// Tells the owner `user_id` that an administrator suspended subscription
/// `s` (`reason` as its status says it), in the suspension's transaction.
/// Not called when the owner's own account deactivation suspends it: they
/// did it themselves, and their account no longer signs in.
pub async fn tell_suspended(
    notifier: &Notifier,
    tx: &mut Tx,
    user_id: &str,
    s: &SubscriptionRef,
    reason: &str,
) -> AppResult<usize> {
    let notice = owner_notices::suspended(s, reason, now_ms());
    notifier.tell_owner(tx, user_id, &notice).await
}

/// Tells the owner `user_id` that an administrator resumed subscription
/// `s`, in the resumption's transaction.
pub async fn tell_resumed(
    notifier: &Notifier,
    tx: &mut Tx,
    user_id: &str,
    s: &SubscriptionRef,
) -> AppResult<usize> {
    let notice = owner_notices::resumed(s, now_ms());
    notifier.tell_owner(tx, user_id, &notice).await
}

/// A rolled-back upgrade, as the rollback knows it.
#[derive(Debug, Clone, Copy)]
pub struct RolledBack<'a> {
    /// The subscription.
    pub id: &'a str,
    /// Its owner.
    pub user_id: &'a str,
    /// Its name.
    pub name: &'a str,
    /// The version it runs again.
    pub from_version: &'a str,
    /// The version that did not become ready.
    pub to_version: &'a str,
    /// Why, in the customer's words (no worker names, no cluster messages).
    pub reason_for_customer: &'a str,
}

/// Tells the owner, and the administrators who want
/// SUBSCRIPTION_ROLLED_BACK, that an upgrade was rolled back: call it in
/// the transaction that records the rollback. Returns how many messages
/// were queued (call [`Notifier::wake`] after the commit when not zero).
pub async fn subscription_rolled_back(
    notifier: &Notifier,
    tx: &mut Tx,
    r: &RolledBack<'_>,
) -> AppResult<usize> {
    let s = SubscriptionRef {
        id: r.id.to_owned(),
        name: r.name.to_owned(),
    };
    let notice = owner_notices::rolled_back(
        &s,
        r.from_version,
        r.to_version,
        r.reason_for_customer,
        now_ms(),
    );
    Ok(notifier.tell_owner(tx, r.user_id, &notice).await? + notifier.queue(tx, &notice).await?)
}

/// The deadlines' loop: a step brings one subscription's incident up to
/// its deadline (the same transaction rules as [`observe`]) and comes back
/// at the next one.
pub struct OutageLoop {
    db: Db,
    notifier: Notifier,
}

impl Reconcile for OutageLoop {
    type Key = String;
    type Error = AppError;

    async fn reconcile(&mut self, id: &String) -> Result<Action, AppError> {
        Ok(match self.step(id).await? {
            Some(due) => Action::RequeueAfter(until(due).max(Duration::from_millis(100))),
            None => Action::Done,
        })
    }

    fn error_policy(&mut self, id: &String, e: &AppError, backoff: Duration) -> Action {
        tracing::warn!(subscription = %id, error = %e, retry_in_ms = backoff.as_millis() as u64,
            "notifications: cannot update the subscription's incident");
        Action::RequeueAfter(backoff)
    }
}

impl OutageLoop {
    /// The loop over `db`, telling through `notifier`.
    pub fn new(db: Db, notifier: Notifier) -> OutageLoop {
        OutageLoop { db, notifier }
    }

    /// Runs until the task is aborted.
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.run())
    }

    async fn run(mut self) {
        let notifier = self.notifier.clone();
        let queue = notifier.outage_deadlines();
        let mut rescan = tokio::time::interval(RESCAN);
        rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = rescan.tick() => match queries::due_outages(self.db.read(), now_ms()).await {
                    Ok(ids) => queue.resync(ids),
                    Err(e) => tracing::warn!(error = %e, "notifications: cannot read due subscription incidents"),
                },
                id = queue.next() => {
                    // Retried by the queue (`error_policy`).
                    let _ = queue.process(&mut self, id).await;
                }
            }
        }
    }

    /// Ticks the incident of `id`; returns its next deadline.
    async fn step(&self, id: &str) -> AppResult<Option<i64>> {
        let t = *self.notifier.outage_timing();
        let now = now_ms();
        // A quick read first: most steps (every replica but the first)
        // find nothing to do.
        let Some(mut read) = queries::outage(self.db.read(), id).await? else {
            return Ok(None);
        };
        let before = read.clone();
        read.tick(now, &t);
        if read == before {
            return Ok(read.due_at);
        }
        let mut tx = self.db.begin().await?;
        let Some(stored) = queries::outage(&mut tx, id).await? else {
            return Ok(None);
        };
        let mut outage = stored.clone();
        let told = outage.tick(now, &t);
        let queued =
            store_and_tell(&self.notifier, &mut tx, Some(&stored), &outage, &told, now).await?;
        tx.commit_no_listing_change().await?;
        if queued > 0 {
            self.notifier.wake();
        }
        Ok(outage.due_at)
    }
}

/// The timing from the flags' values.
pub fn timing(
    grace: Duration,
    flap_window: Duration,
    crash_restarts: u32,
    crash_window: Duration,
) -> OutageTiming {
    let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4);
    OutageTiming {
        grace: ms(grace),
        flap_window: ms(flap_window),
        crash_restarts: i32::try_from(crash_restarts.max(1)).unwrap_or(i32::MAX),
        crash_window: ms(crash_window),
    }
}
