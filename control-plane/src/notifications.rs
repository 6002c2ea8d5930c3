//! What administrators are told about the fleet, and how.
//!
//! A notice ([`notices::Notice`]) is written to the outbox — one mail and
//! one signed webhook per administrator who wants its event — in the same
//! transaction as the change that causes it ([`Notifier::queue`]); the mail
//! module's delivery worker sends it. Worker outages, recoveries, flapping
//! and readiness come from the incident engine ([`fleet`], over the state
//! machine in [`incidents`]); enrollments and failed subscriptions are
//! queued where those changes are written. [`service`] is the gRPC
//! NotificationService: preferences, a test notice, the outbox list.

pub mod fields;
pub mod fleet;
pub mod incidents;
pub mod notices;
pub mod queries;

use minispod_proto::v1 as pb;

use self::notices::Notice;
use crate::{error::AppResult, mail::Mail, store::Tx};

/// Queues notices for the administrators who want them; cheap to clone.
#[derive(Debug, Clone)]
pub struct Notifier {
    mail: Mail,
}

impl Notifier {
    /// Notices through `mail`'s outbox.
    pub fn new(mail: Mail) -> Notifier {
        Notifier { mail }
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
        let mut written = Vec::new();
        if to.mail && self.mail.configured() && !to.email.is_empty() {
            let rendered = notice.mail(&to.name, &self.mail);
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
