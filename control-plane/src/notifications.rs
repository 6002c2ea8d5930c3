//! What administrators are told about the fleet, what customers are told
//! about their subscriptions, and how.
//!
//! A notice ([`notices::Notice`]) is written to the outbox — one mail and
//! one signed webhook per recipient who wants its event — in the same
//! transaction as the change that causes it ([`Notifier::queue`] for the
//! administrators, [`Notifier::tell_owner`] for a subscription's owner);
//! the mail module's delivery worker sends it. Worker outages, recoveries,
//! flapping and readiness come from the incident engine ([`fleet`], over
//! the state machine in [`incidents`]); a subscription's outages and crash
//! loops from [`customers`] (over [`outages`]), which the subscription
//! reconciler calls in the transaction that records a status; thresholds
//! on the workers' figures from [`thresholds`]; enrollments, failed
//! subscriptions and suspensions are queued where those changes are
//! written; the digest of subscriptions versions behind by [`digest`]. The gRPC NotificationService is `api/notifications.rs`.

pub mod customers;
pub mod digest;
pub mod fields;
pub mod fleet;
pub mod incidents;
pub mod notices;
pub mod outages;
pub mod owner_notices;
pub mod queries;
pub mod thresholds;

use std::sync::Arc;

use minispod_proto::v1 as pb;

use self::{notices::Notice, outages::OutageTiming};
use crate::{error::AppResult, mail::Mail, store::Tx, workqueue::WorkQueue};

/// The events a customer may choose: about their own subscriptions. A
/// customer who never set preferences gets mail for all of them.
pub const CUSTOMER_EVENTS: [pb::NotificationEvent; 8] = [
    pb::NotificationEvent::SubscriptionFailed,
    pb::NotificationEvent::SubscriptionDegraded,
    pb::NotificationEvent::SubscriptionRecovered,
    pb::NotificationEvent::SubscriptionCrashLoop,
    pb::NotificationEvent::SubscriptionSuspended,
    pb::NotificationEvent::SubscriptionResumed,
    pb::NotificationEvent::SubscriptionRolledBack,
    pb::NotificationEvent::DomainFailed,
];

/// Events an administrator gets about every subscription, not only their
/// own: an administrator who owns one hears of it once, as an
/// administrator.
const FLEET_WIDE_SUBSCRIPTION_EVENTS: [pb::NotificationEvent; 2] = [
    pb::NotificationEvent::SubscriptionFailed,
    pb::NotificationEvent::SubscriptionRolledBack,
];

/// Queues notices for the administrators and owners who want them; cheap
/// to clone.
#[derive(Debug, Clone)]
pub struct Notifier {
    mail: Mail,
    /// When owners are told about their subscriptions.
    outage_timing: OutageTiming,
    /// The subscriptions whose incident has a deadline (see
    /// [`customers::OutageLoop`]).
    outage_deadlines: Arc<WorkQueue<String>>,
    /// Woken when the workers' thresholds changed here.
    thresholds_changed: Arc<tokio::sync::Notify>,
}

impl Notifier {
    /// Notices through `mail`'s outbox, owners told at the default times.
    pub fn new(mail: Mail) -> Notifier {
        Notifier {
            mail,
            outage_timing: OutageTiming::default(),
            outage_deadlines: Arc::new(WorkQueue::new(customers::BACKOFF)),
            thresholds_changed: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// These notices with owners told at `timing`.
    pub fn with_outage_timing(self, timing: OutageTiming) -> Notifier {
        Notifier {
            outage_timing: timing,
            ..self
        }
    }

    /// When owners are told about their subscriptions.
    pub fn outage_timing(&self) -> &OutageTiming {
        &self.outage_timing
    }

    /// The queue of subscription incidents with a deadline.
    pub(crate) fn outage_deadlines(&self) -> &WorkQueue<String> {
        &self.outage_deadlines
    }

    /// Tells this replica's threshold watch that the thresholds changed.
    pub fn thresholds_changed(&self) {
        self.thresholds_changed.notify_one();
    }

    /// Resolves when [`Notifier::thresholds_changed`] was called.
    pub(crate) async fn thresholds_change(&self) {
        self.thresholds_changed.notified().await;
    }

    /// Queues `notice`, about a subscription of `owner_id`'s, for its owner
    /// as they chose (customers who never chose get mail). An
    /// administrator owner is skipped for events administrators get about
    /// every subscription when they get it that way. Returns how many
    /// messages were queued; call [`Notifier::wake`] after the commit when
    /// that is not zero.
    pub async fn tell_owner(
        &self,
        tx: &mut Tx,
        owner_id: &str,
        notice: &Notice,
    ) -> AppResult<usize> {
        let Some((to, admin)) = queries::owner_recipient(&mut *tx, owner_id, notice.event).await?
        else {
            return Ok(0);
        };
        if admin && FLEET_WIDE_SUBSCRIPTION_EVENTS.contains(&notice.event) {
            return Ok(0);
        }
        Ok(self.deliver(tx, notice, &to, true).await?.len())
    }

    /// The mail side (links, whether SMTP is configured).
    pub fn mail(&self) -> &Mail {
        &self.mail
    }

    /// Queues `notice` in `tx` for every active administrator who wants its
    /// event: a mail when they turned mail on (and SMTP is configured), a
    /// webhook when they set a URL. Returns how many messages were queued;
    /// call [`Notifier::wake`] after the commit when that is not zero.
    pub async fn queue(&self, tx: &mut Tx, notice: &Notice) -> AppResult<usize> {
        let recipients = queries::recipients(&mut *tx, notice.event).await?;
        let mut queued = 0;
        for r in &recipients {
            queued += self.queue_for(tx, notice, r).await?.len();
        }
        Ok(queued)
    }

    /// Queues `notice` for one recipient, as they set things up. Returns
    /// the messages written.
    pub async fn queue_for(
        &self,
        tx: &mut Tx,
        notice: &Notice,
        to: &queries::Recipient,
    ) -> AppResult<Vec<crate::mail::outbox::MessageRow>> {
        self.deliver(tx, notice, to, false).await
    }

    /// Queues `notice` for `to`: a mail (a customer's, `to_owner`, says
    /// why they get it and where to change that in their words) and a
    /// webhook, as they set things up. Returns the messages written.
    pub async fn deliver(
        &self,
        tx: &mut Tx,
        notice: &Notice,
        to: &queries::Recipient,
        to_owner: bool,
    ) -> AppResult<Vec<crate::mail::outbox::MessageRow>> {
        let mut written = Vec::new();
        if to.mail && self.mail.configured() && !to.email.is_empty() {
            let rendered = if to_owner {
                notice.mail_to_owner(&to.name, &self.mail)
            } else {
                notice.mail(&to.name, &self.mail)
            };
            written.push(
                self.mail
                    .queue_mail_returning(tx, notice.purpose, &to.email, &rendered)
                    .await?,
            );
        }
        if !to.webhook_url.is_empty() {
            written.push(
                self.mail
                    .queue_webhook(
                        tx,
                        notice.purpose,
                        &to.webhook_url,
                        &to.user_id,
                        &notice.summary,
                        &notice.json(&self.mail),
                    )
                    .await?,
            );
        }
        Ok(written)
    }

    /// Tells the delivery worker that notices were committed.
    pub fn wake(&self) {
        self.mail.wake();
    }
}

/// Whether a customer (ROLE_USER) may choose `event`.
pub fn customer_may_choose(event: pb::NotificationEvent) -> bool {
    CUSTOMER_EVENTS.contains(&event)
}

/// The name of `event` as stored and as webhooks carry it, upper case
/// without the prefix: `WORKER_OFFLINE`.
pub fn event_name(event: pb::NotificationEvent) -> &'static str {
    let name = event.as_str_name();
    name.strip_prefix("NOTIFICATION_EVENT_").unwrap_or(name)
}

impl crate::workers::enrollment::EnrollmentNotices for Notifier {
    fn enrolled<'a>(
        &'a self,
        tx: &'a mut Tx,
        worker: &'a crate::workers::queries::WorkerRow,
        at_ms: i64,
    ) -> crate::workers::enrollment::Queued<'a> {
        Box::pin(async move {
            let notice = notices::worker_enrolled(
                &notices::WorkerRef {
                    id: worker.id.clone(),
                    name: worker.name.clone(),
                },
                &worker.ip_address,
                at_ms,
            );
            self.queue(tx, &notice).await
        })
    }

    fn wake(&self) {
        Notifier::wake(self);
    }
}
