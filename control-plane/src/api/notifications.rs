//! NotificationService: each user's notice preferences (a customer's
//! among the subscription events) and a test notice; for administrators,
//! the outbox and the workers' thresholds.

use minispod_proto::v1::{self as pb, notification_service_server::NotificationService};
use rand::RngCore;
use tonic::{Request, Response, Status};

use super::access::caller;
use crate::notifications::{
    CUSTOMER_EVENTS, Notifier, customer_may_choose, event_name,
    fields::{self, OutboxPage, PreferenceChanges, outbox_status},
    notices,
    queries::{self, Recipient, all_events, events_column},
};
use crate::{
    auth::AuthState,
    error::{AppError, AppResult},
    mail::outbox,
    store::{now_ms, timestamp},
    users::queries::UserRow,
    workers::queries as workers_db,
};

fn is_admin(u: &UserRow) -> bool {
    u.role == "ADMINISTRATOR"
}

/// The events `u` may choose.
fn available_events(u: &UserRow) -> Vec<i32> {
    if is_admin(u) {
        all_events().map(|e| e as i32).collect()
    } else {
        CUSTOMER_EVENTS.iter().map(|e| *e as i32).collect()
    }
}

/// The gRPC NotificationService.
#[derive(Debug, Clone)]
pub struct NotificationApi {
    auth: AuthState,
    notifier: Notifier,
}

/// A new webhook signing secret: 32 random bytes, hex.
fn new_secret() -> String {
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    minispod_support::hex(&raw)
}

impl NotificationApi {
    /// The service over `auth`, queueing through `notifier`.
    pub fn new(auth: AuthState, notifier: Notifier) -> Self {
        NotificationApi { auth, notifier }
    }

    async fn get_preferences(
        &self,
        req: Request<pb::GetNotificationPreferencesRequest>,
    ) -> AppResult<pb::GetNotificationPreferencesResponse> {
        let user = caller(&req)?;
        let prefs = queries::preferences(self.auth.db.read(), &user.id, is_admin(&user)).await?;
        Ok(pb::GetNotificationPreferencesResponse {
            preferences: Some(prefs.to_pb()),
            mail_configured: self.notifier.mail().configured(),
            available_events: available_events(&user),
        })
    }

    async fn update_preferences(
        &self,
        req: Request<pb::UpdateNotificationPreferencesRequest>,
    ) -> AppResult<pb::UpdateNotificationPreferencesResponse> {
        let admin = caller(&req)?;
        let changes =
            PreferenceChanges::parse(req.get_ref(), self.notifier.mail().webhook_policy())?;
        if !is_admin(&admin)
            && let Some(e) = changes
                .events
                .iter()
                .flatten()
                .find(|e| !customer_may_choose(**e))
        {
            return Err(AppError::PermissionDenied(format!(
                "{} is told to administrators only; a customer may choose {}",
                event_name(*e),
                CUSTOMER_EVENTS.map(event_name).join(", ")
            )));
        }
        let mut tx = self.auth.db.begin().await?;
        let mut prefs = queries::preferences(&mut tx, &admin.id, is_admin(&admin)).await?;
        if let Some(mail) = changes.mail {
            prefs.mail = mail;
        }
        if let Some(url) = changes.webhook_url {
            if url.is_empty() {
                // Off: the next URL is a first one, with a secret of its own.
                prefs.webhook_secret.clear();
            }
            prefs.webhook_url = url;
        }
        if let Some(events) = &changes.events {
            prefs.events = events_column(events);
        }
        if changes.rotate_secret && prefs.webhook_url.is_empty() {
            return Err(AppError::invalid(
                "rotate_webhook_secret",
                "needs a webhook URL to sign for",
            ));
        }
        let made = (changes.rotate_secret
            || (!prefs.webhook_url.is_empty() && prefs.webhook_secret.is_empty()))
        .then(new_secret);
        if let Some(secret) = &made {
            prefs.webhook_secret = secret.clone();
        }
        queries::save_preferences(&mut tx, &prefs).await?;
        tx.commit_no_listing_change().await?;
        tracing::info!(user_id = %admin.id, mail = prefs.mail, webhook = !prefs.webhook_url.is_empty(),
            events = %prefs.events, new_secret = made.is_some(), "notification preferences changed");
        Ok(pb::UpdateNotificationPreferencesResponse {
            preferences: Some(prefs.to_pb()),
            webhook_secret: made.unwrap_or_default(),
        })
    }

    async fn send_test(
        &self,
        req: Request<pb::SendTestNotificationRequest>,
    ) -> AppResult<pb::SendTestNotificationResponse> {
        let admin = caller(&req)?;
        let mut tx = self.auth.db.begin().await?;
        let prefs = queries::preferences(&mut tx, &admin.id, is_admin(&admin)).await?;
        let recipient = Recipient {
            user_id: admin.id.clone(),
            email: admin.email.clone(),
            name: admin.name.clone(),
            mail: prefs.mail,
            webhook_url: prefs.webhook_url,
        };
        let mail_ok = self.notifier.mail().configured();
        if !((recipient.mail && mail_ok) || !recipient.webhook_url.is_empty()) {
            return Err(AppError::FailedPrecondition(if mail_ok {
                "turn on mail or set a webhook URL first".into()
            } else {
                "set a webhook URL first: this control plane sends no mail (no --smtp-url)".into()
            }));
        }
        let written = self
            .notifier
            .deliver(
                &mut tx,
                &notices::test(now_ms(), is_admin(&admin)),
                &recipient,
                !is_admin(&admin),
            )
            .await?;
        tx.commit_no_listing_change().await?;
        self.notifier.wake();
        Ok(pb::SendTestNotificationResponse {
            queued: written.iter().map(outbox::MessageRow::to_pb).collect(),
        })
    }

    async fn list_outbox(
        &self,
        req: Request<pb::ListOutboxMessagesRequest>,
    ) -> AppResult<pb::ListOutboxMessagesResponse> {
        let r = req.into_inner();
        let status = outbox_status(r.status)?;
        let page = OutboxPage::parse(r.page_size, &r.page_token)?;
        let db = &self.auth.db;
        let mut rows = outbox::list(db.read(), status, page.after, page.size + 1).await?;
        let next_page_token = if rows.len() as i64 > page.size {
            rows.truncate(page.size as usize);
            rows.last()
                .map(|m| OutboxPage::token_after(m.created_at, &m.id))
                .unwrap_or_default()
        } else {
            String::new()
        };
        let (pending, failed) = outbox::counts(db.read()).await?;
        Ok(pb::ListOutboxMessagesResponse {
            messages: rows.iter().map(outbox::MessageRow::to_pb).collect(),
            next_page_token,
            pending,
            failed,
        })
    }

    async fn retry(
        &self,
        req: Request<pb::RetryOutboxMessageRequest>,
    ) -> AppResult<pb::RetryOutboxMessageResponse> {
        let admin = caller(&req)?;
        let id = req.get_ref().id.trim();
        if id.is_empty() {
            return Err(AppError::invalid("id", "is required"));
        }
        let mut tx = self.auth.db.begin().await?;
        let message = outbox::get(&mut tx, id).await?;
        if !outbox::retry(&mut tx, id).await? {
            return Err(AppError::FailedPrecondition(
                if message.status == "FAILED" {
                    format!(
                        "message {id} failed too long ago: its body was pruned, it cannot be sent again"
                    )
                } else {
                    format!(
                        "message {id} is {}: only a FAILED message can be retried",
                        message.status
                    )
                },
            ));
        }
        let message = outbox::get(&mut tx, id).await?;
        tx.commit_no_listing_change().await?;
        self.notifier.wake();
        tracing::info!(by = %admin.id, id, purpose = %message.purpose, "outbox message queued again");
        Ok(pb::RetryOutboxMessageResponse {
            message: Some(message.to_pb()),
        })
    }
}

impl NotificationApi {
    async fn get_thresholds(&self) -> AppResult<pb::GetWorkerThresholdsResponse> {
        let db = self.auth.db.read();
        let list = queries::thresholds(db).await?;
        let crossed = queries::crossings(self.auth.db.read()).await?;
        Ok(pb::GetWorkerThresholdsResponse {
            thresholds: list.iter().map(|t| t.to_pb()).collect(),
            crossed: crossed
                .into_iter()
                .filter_map(|c| {
                    let metric = crate::notifications::thresholds::Metric::from_db(&c.metric)?;
                    Some(pb::WorkerThresholdCrossing {
                        worker_id: c.worker_id,
                        worker_name: c.worker_name,
                        metric: metric.to_pb() as i32,
                        percent: c.percent,
                        since: Some(timestamp(c.since)),
                    })
                })
                .collect(),
        })
    }

    async fn set_thresholds(
        &self,
        req: Request<pb::SetWorkerThresholdsRequest>,
    ) -> AppResult<pb::SetWorkerThresholdsResponse> {
        let admin = caller(&req)?;
        let list = fields::thresholds(&req.get_ref().thresholds)?;
        let mut tx = self.auth.db.begin().await?;
        for t in list.iter().filter(|t| !t.worker_id.is_empty()) {
            if workers_db::by_id(&mut tx, &t.worker_id).await?.is_none() {
                return Err(AppError::NotFound(format!(
                    "worker {} not found",
                    t.worker_id
                )));
            }
        }
        queries::replace_thresholds(&mut tx, &list).await?;
        tx.commit_no_listing_change().await?;
        self.notifier.thresholds_changed();
        tracing::info!(by = %admin.id, thresholds = list.len(), "worker thresholds set");
        Ok(pb::SetWorkerThresholdsResponse {
            thresholds: queries::thresholds(self.auth.db.read())
                .await?
                .iter()
                .map(|t| t.to_pb())
                .collect(),
        })
    }
}

#[tonic::async_trait]
impl NotificationService for NotificationApi {
    async fn get_worker_thresholds(
        &self,
        _request: Request<pb::GetWorkerThresholdsRequest>,
    ) -> Result<Response<pb::GetWorkerThresholdsResponse>, Status> {
        Ok(Response::new(self.get_thresholds().await?))
    }

    async fn set_worker_thresholds(
        &self,
        request: Request<pb::SetWorkerThresholdsRequest>,
    ) -> Result<Response<pb::SetWorkerThresholdsResponse>, Status> {
        Ok(Response::new(self.set_thresholds(request).await?))
    }

    async fn get_notification_preferences(
        &self,
        request: Request<pb::GetNotificationPreferencesRequest>,
    ) -> Result<Response<pb::GetNotificationPreferencesResponse>, Status> {
        Ok(Response::new(self.get_preferences(request).await?))
    }

    async fn update_notification_preferences(
        &self,
        request: Request<pb::UpdateNotificationPreferencesRequest>,
    ) -> Result<Response<pb::UpdateNotificationPreferencesResponse>, Status> {
        Ok(Response::new(self.update_preferences(request).await?))
    }

    async fn send_test_notification(
        &self,
        request: Request<pb::SendTestNotificationRequest>,
    ) -> Result<Response<pb::SendTestNotificationResponse>, Status> {
        Ok(Response::new(self.send_test(request).await?))
    }

    async fn list_outbox_messages(
        &self,
        request: Request<pb::ListOutboxMessagesRequest>,
    ) -> Result<Response<pb::ListOutboxMessagesResponse>, Status> {
        Ok(Response::new(self.list_outbox(request).await?))
    }

    async fn retry_outbox_message(
        &self,
        request: Request<pb::RetryOutboxMessageRequest>,
    ) -> Result<Response<pb::RetryOutboxMessageResponse>, Status> {
        Ok(Response::new(self.retry(request).await?))
    }
}
