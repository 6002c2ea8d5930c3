//! SubscriptionService: customers run catalog services; administrators see
//! and control every subscription.

use std::{pin::Pin, sync::Arc, time::Duration};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, LogParams};
use minispod_proto::v1::{self as pb, subscription_service_server::SubscriptionService};
use prost::Message;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::{
    api::access::caller,
    auth::AuthState,
    backups::{Backups, Then},
    catalog::template,
    error::{AppError, AppResult, Violations},
    notifications::{customers, owner_notices::SubscriptionRef},
    rate_limit::{RateLimiter, too_many},
    store::{Page, now_ms, timestamp},
    subscriptions::{
        Subscriptions,
        admission::is_admin,
        gate,
        logs::{CallerCheck, LOG_CHANNEL, LogPump, LogSlots},
        queries::{self, Filter, SubscriptionRow},
        status_to_db,
        upgrade::one_way_refusal,
        words::{self, Blocked},
    },
    users::queries::UserRow,
};

/// What one user may ask of the SubscriptionService, and how often.
#[derive(Debug, Clone)]
pub struct CallerLimits {
    /// CreateSubscription and UpdateSubscription, per user.
    pub changes: Arc<RateLimiter>,
    /// StreamSubscriptionLogs calls, per user.
    pub log_opens: Arc<RateLimiter>,
    /// Log streams open at once, per user.
    pub log_slots: LogSlots,
    /// `limitBytes` of each log request: the most one stream reads.
    pub log_limit_bytes: u64,
    /// How often a watch or a log stream checks that its caller may still
    /// read (signed in, active).
    pub caller_recheck: Duration,
}

impl CallerLimits {
    /// Forgets idle in-memory rate-limit buckets.
    pub fn purge_idle(&self) -> usize {
        self.changes.purge_idle() + self.log_opens.purge_idle()
    }
}

/// The gRPC SubscriptionService.
#[derive(Debug, Clone)]
pub struct SubscriptionApi {
    pub(super) auth: AuthState,
    pub(super) subs: Subscriptions,
    pub(super) limits: CallerLimits,
    /// Backups taken before a one-way upgrade or a deletion.
    pub(super) backups: Option<Backups>,
}

impl SubscriptionApi {
    /// The service over `auth` and the shared subscription state.
    pub fn new(auth: AuthState, subs: Subscriptions, limits: CallerLimits) -> Self {
        SubscriptionApi {
            auth,
            subs,
            limits,
            backups: None,
        }
    }

    /// Takes backups before one-way upgrades and, when asked, deletions.
    pub fn with_backups(mut self, backups: Backups) -> Self {
        self.backups = Some(backups);
        self
    }

    /// Starts a backup of `row` followed by `then`; FAILED_PRECONDITION
    /// when there is nowhere to store it.
    async fn backup_first(&self, row: &SubscriptionRow, then: Then) -> AppResult<pb::Backup> {
        let Some(backups) = &self.backups else {
            return Err(AppError::FailedPrecondition(
                "backups are not served here".into(),
            ));
        };
        backups.create_backup(row, "", "MANUAL", then).await
    }

    /// Spends one of `caller`'s CreateSubscription / UpdateSubscription
    /// tokens, or RESOURCE_EXHAUSTED with the wait.
    pub(super) async fn limit_change(&self, caller: &UserRow) -> AppResult<()> {
        self.limits
            .changes
            .take(&caller.id)
            .await
            .map_err(|wait| too_many("subscription changes", wait))
    }

    /// The subscription `id` if `caller` may see it.
    pub(super) async fn visible(&self, caller: &UserRow, id: &str) -> AppResult<SubscriptionRow> {
        if id.is_empty() {
            return Err(AppError::invalid("id", "is required"));
        }
        match queries::get(self.subs.db(), id).await? {
            Some(r) if r.desired != "DELETED" && (is_admin(caller) || r.user_id == caller.id) => {
                Ok(r)
            }
            _ => Err(queries::not_found(id)),
        }
    }

    /// Subscription `id` as `caller` may see it (see `Subscriptions::to_pb`).
    async fn reply(&self, caller: &UserRow, id: &str) -> AppResult<pb::Subscription> {
        let row = queries::get(self.subs.db(), id)
            .await?
            .ok_or_else(|| queries::not_found(id))?;
        self.subs.to_pb(&row, is_admin(caller)).await
    }

    /// Sets the status at once (suspend, resume), with its event.
    async fn set_status(
        &self,
        id: &str,
        status: pb::SubscriptionStatus,
        reason: &str,
    ) -> AppResult<()> {
        let row = queries::get(self.subs.db(), id)
            .await?
            .ok_or_else(|| queries::not_found(id))?;
        let mut tx = self.subs.db().begin().await?;
        queries::record_status(
            &mut tx,
            id,
            status_to_db(status),
            reason,
            row.ever_ran,
            &row.workers,
            row.applied_generation,
            None,
        )
        .await?;
        tx.commit().await.map_err(AppError::from)?;
        self.subs.changed(
            id,
            Some(pb::SubscriptionEvent {
                status: status as i32,
                reason: reason.to_owned(),
                at: Some(timestamp(now_ms())),
            }),
        );
        Ok(())
    }
}

/// A subscription as its owner's notices name it.
fn sub_ref(row: &SubscriptionRow) -> SubscriptionRef {
    SubscriptionRef {
        id: row.id.clone(),
        name: row.name.clone(),
    }
}

pub(super) type WatchStream = crate::api::watch::WatchStream<pb::WatchSubscriptionsResponse>;
type LogStream =
    Pin<Box<dyn Stream<Item = Result<pb::StreamSubscriptionLogsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl SubscriptionService for SubscriptionApi {
    async fn create_subscription(
        &self,
        request: Request<pb::CreateSubscriptionRequest>,
    ) -> Result<Response<pb::CreateSubscriptionResponse>, Status> {
        let caller = caller(&request)?;
        self.limit_change(&caller).await?;
        let id = self.subs.create(&caller, request.into_inner()).await?;
        Ok(Response::new(pb::CreateSubscriptionResponse {
            subscription: Some(self.reply(&caller, &id).await?),
        }))
    }

    async fn list_subscriptions(
        &self,
        request: Request<pb::ListSubscriptionsRequest>,
    ) -> Result<Response<pb::ListSubscriptionsResponse>, Status> {
        let caller = caller(&request)?;
        let r = request.into_inner();
        let page = Page::parse(r.page_size, &r.page_token)?;
        if r.all && !is_admin(&caller) {
            return Err(
                AppError::PermissionDenied("all requires ROLE_ADMINISTRATOR".into()).into(),
            );
        }
        if r.search.chars().count() > 200 {
            return Err(AppError::invalid("search", "must be at most 200 characters").into());
        }
        let status = pb::SubscriptionStatus::try_from(r.status)
            .map_err(|_| AppError::invalid("status", format!("unknown status {}", r.status)))?;
        let filter = Filter {
            user_id: if r.all { r.user_id } else { caller.id.clone() },
            service_id: r.service_id,
            status: if status == pb::SubscriptionStatus::Unspecified {
                String::new()
            } else {
                status_to_db(status).to_owned()
            },
            worker_id: r.worker_id,
            search: r.search.trim().to_owned(),
        };
        let (rows, total) = queries::list(self.subs.db(), &filter, page).await?;
        Ok(Response::new(pb::ListSubscriptionsResponse {
            subscriptions: self.subs.to_pb_many(&rows, is_admin(&caller)).await?,
            next_page_token: page.next_token(total),
            total_size: total,
        }))
    }

    async fn get_subscription(
        &self,
        request: Request<pb::GetSubscriptionRequest>,
    ) -> Result<Response<pb::GetSubscriptionResponse>, Status> {
        let caller = caller(&request)?;
        let row = self.visible(&caller, &request.get_ref().id).await?;
        let events = queries::events(self.subs.db(), &row.id, 50)
            .await?
            .into_iter()
            .map(|(s, reason, at)| pb::SubscriptionEvent {
                status: crate::subscriptions::status_from_db(&s) as i32,
                reason: if is_admin(&caller) {
                    reason
                } else {
                    words::for_customer(&reason)
                },
                at: Some(timestamp(at)),
            })
            .collect();
        let subscription = self.subs.to_pb(&row, is_admin(&caller)).await?;
        // The link through the gate is the owner's alone: an
        // administrator who could open it would be the first visitor.
        let owner_url = match self.subs.open_gate(&row.id, &row.gate)? {
            Some(token) if row.user_id == caller.id && !subscription.url.is_empty() => {
                gate::owner_url(&subscription.url, &token)
            }
            _ => String::new(),
        };
        Ok(Response::new(pb::GetSubscriptionResponse {
            subscription: Some(subscription),
            events,
            owner_url,
        }))
    }

    async fn update_subscription(
        &self,
        request: Request<pb::UpdateSubscriptionRequest>,
    ) -> Result<Response<pb::UpdateSubscriptionResponse>, Status> {
        let caller = caller(&request)?;
        self.limit_change(&caller).await?;
        let r = request.into_inner();
        let row = self.visible(&caller, &r.id).await?;
        if !row.previous_version.is_empty() {
            // A rollback puts the previous values back: a change now
            // would be lost with it.
            return Err(AppError::FailedPrecondition(format!(
                "subscription {} is upgrading; change its values once the upgrade is done",
                row.name
            ))
            .into());
        }
        let template = pb::ServiceTemplate::decode(row.template.as_slice())
            .map_err(|e| AppError::Internal(anyhow::Error::new(e).context("stored template")))?;
        let mut merged = self.subs.open_map(&row.id, &row.variables)?;
        for (k, val) in r.variables {
            let secret = template
                .variables
                .iter()
                .any(|v| v.name == k && v.r#type() == pb::VariableType::Secret);
            // A SECRET is never sent back: empty keeps the stored value.
            if secret && val.is_empty() {
                continue;
            }
            merged.insert(k, val);
        }
        let mut v = Violations::new();
        let variables = template::validate_values(&template, &merged, &mut v);
        v.finish()?;
        let mut tx = self.subs.db().begin().await?;
        if !queries::change(
            &mut tx,
            &row.id,
            Some(&self.subs.seal_map(&row.id, &variables)),
            None,
            None,
        )
        .await?
        {
            return Err(queries::not_found(&row.id).into());
        }
        tx.commit().await.map_err(AppError::from)?;
        self.subs.changed(&row.id, None);
        Ok(Response::new(pb::UpdateSubscriptionResponse {
            subscription: Some(self.reply(&caller, &row.id).await?),
        }))
    }

    async fn upgrade_subscription(
        &self,
        request: Request<pb::UpgradeSubscriptionRequest>,
    ) -> Result<Response<pb::UpgradeSubscriptionResponse>, Status> {
        let caller = caller(&request)?;
        self.limit_change(&caller).await?;
        let r = request.into_inner();
        let plan = self.subs.upgrade(&caller, &r).await?;
        let mut backup_id = String::new();
        if plan.backup_first {
            // Past a one-way version with no fresh backup: one first, and
            // the upgrade once it completes (backups/follow_up.rs).
            let can = match &self.backups {
                Some(b) => b.has_destination().await?,
                None => false,
            };
            if !can {
                return Err(one_way_refusal(&plan, is_admin(&caller)).into());
            }
            if !r.dry_run {
                let row = self.visible(&caller, &r.id).await?;
                let backup = self
                    .backup_first(&row, Then::Upgrade(plan.to_version.clone()))
                    .await?;
                tracing::info!(subscription = %row.id, by = %caller.id, backup = %backup.id,
                    to = %plan.to_version, "one-way upgrade waits for a backup");
                backup_id = backup.id;
            }
        }
        Ok(Response::new(pb::UpgradeSubscriptionResponse {
            subscription: Some(self.reply(&caller, &r.id).await?),
            plan: Some(plan),
            backup_id,
        }))
    }

    async fn upgrade_service_subscriptions(
        &self,
        request: Request<pb::UpgradeServiceSubscriptionsRequest>,
    ) -> Result<Response<pb::UpgradeServiceSubscriptionsResponse>, Status> {
        let caller = caller(&request)?;
        let r = request.into_inner();
        Ok(Response::new(self.subs.upgrade_service(&caller, &r).await?))
    }

    async fn restart_subscription(
        &self,
        request: Request<pb::RestartSubscriptionRequest>,
    ) -> Result<Response<pb::RestartSubscriptionResponse>, Status> {
        let caller = caller(&request)?;
        let row = self.visible(&caller, &request.get_ref().id).await?;
        if row.desired != "RUNNING" {
            return Err(AppError::FailedPrecondition(
                "a suspended subscription cannot be restarted; resume it first".into(),
            )
            .into());
        }
        let mut tx = self.subs.db().begin().await?;
        queries::change(&mut tx, &row.id, None, None, Some(now_ms())).await?;
        tx.commit().await.map_err(AppError::from)?;
        self.subs.changed(&row.id, None);
        Ok(Response::new(pb::RestartSubscriptionResponse {
            subscription: Some(self.reply(&caller, &row.id).await?),
        }))
    }

    async fn delete_subscription(
        &self,
        request: Request<pb::DeleteSubscriptionRequest>,
    ) -> Result<Response<pb::DeleteSubscriptionResponse>, Status> {
        let caller = caller(&request)?;
        let row = self.visible(&caller, &request.get_ref().id).await?;
        if request.get_ref().backup_first {
            let backup = self.backup_first(&row, Then::Delete).await?;
            tracing::info!(subscription = %row.id, name = %row.name, by = %caller.id,
                backup = %backup.id, "subscription deletion waits for a backup");
            return Ok(Response::new(pb::DeleteSubscriptionResponse {
                subscription: Some(self.reply(&caller, &row.id).await?),
                backup_id: backup.id,
            }));
        }
        self.subs.delete(&row).await?;
        tracing::info!(subscription = %row.id, name = %row.name, by = %caller.id, "subscription deletion asked for");
        Ok(Response::new(pb::DeleteSubscriptionResponse {
            subscription: Some(self.reply(&caller, &row.id).await?),
            backup_id: String::new(),
        }))
    }

    type WatchSubscriptionsStream = WatchStream;

    async fn watch_subscriptions(
        &self,
        request: Request<pb::WatchSubscriptionsRequest>,
    ) -> Result<Response<Self::WatchSubscriptionsStream>, Status> {
        Ok(Response::new(self.watch(request).await?))
    }

    type StreamSubscriptionLogsStream = LogStream;

    async fn stream_subscription_logs(
        &self,
        request: Request<pb::StreamSubscriptionLogsRequest>,
    ) -> Result<Response<Self::StreamSubscriptionLogsStream>, Status> {
        let caller = caller(&request)?;
        self.limits
            .log_opens
            .take(&caller.id)
            .await
            .map_err(|wait| too_many("log streams asked for", wait))?;
        let credentials = request.metadata().clone();
        let r = request.into_inner();
        let row = self.visible(&caller, &r.id).await?;
        let mut v = Violations::new();
        if !(0..=10_000).contains(&r.tail_lines) {
            v.add("tail_lines", "must be between 0 and 10000");
        }
        if r.since_seconds < 0 {
            v.add("since_seconds", "must be 0 or more");
        }
        v.finish()?;
        let template = pb::ServiceTemplate::decode(row.template.as_slice()).unwrap_or_default();
        let component = if r.component.is_empty() {
            template
                .components
                .iter()
                .find(|c| !c.expose_port.is_empty())
                .or(template.components.first())
                .map(|c| c.name.clone())
                .unwrap_or_default()
        } else if template.components.iter().any(|c| c.name == r.component) {
            r.component.clone()
        } else {
            return Err(AppError::invalid(
                "component",
                format!("{:?} is not a component of this subscription", r.component),
            )
            .into());
        };
        let mut pods = self.subs.pods_of(&row.id);
        pods.retain(|p| p.component == component && !p.node.is_empty() && p.phase != "Pending");
        pods.sort_by_key(|p| (!p.ready, p.terminating));
        let pod = pods.into_iter().next().ok_or_else(|| {
            AppError::FailedPrecondition(format!("no pod of component {component} is running"))
        })?;
        let client =
            self.subs.link().kube_client().ok_or_else(|| {
                Blocked::NoCluster.error(is_admin(&caller), &row.service_name, false)
            })?;
        // Taken before the cluster is asked, held by the pump until the
        // stream ends.
        let slot = self.limits.log_slots.take(&caller.id)?;
        let api: Api<Pod> = Api::namespaced(client, &pod.namespace);
        let limit_bytes = self.limits.log_limit_bytes;
        let params = LogParams {
            container: Some(component.clone()),
            follow: r.follow,
            tail_lines: Some(if r.tail_lines == 0 {
                100
            } else {
                i64::from(r.tail_lines)
            }),
            since_seconds: (r.since_seconds > 0).then_some(r.since_seconds),
            limit_bytes: Some(i64::try_from(limit_bytes).unwrap_or(i64::MAX)),
            ..LogParams::default()
        };
        let reader = api
            .log_stream(&pod.name, &params)
            .await
            .map_err(|e| AppError::Internal(anyhow::Error::new(e).context("open pod log")))?;
        let (tx, rx) = tokio::sync::mpsc::channel(LOG_CHANNEL);
        let pump = LogPump {
            reader: Box::pin(reader),
            tx,
            pod: pod.name.clone(),
            limit_bytes,
            caller: CallerCheck {
                auth: self.auth.clone(),
                credentials,
                every: self.limits.caller_recheck,
                admin: false,
            },
            slot,
        };
        tokio::spawn(pump.run());
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn suspend_subscription(
        &self,
        request: Request<pb::SuspendSubscriptionRequest>,
    ) -> Result<Response<pb::SuspendSubscriptionResponse>, Status> {
        let admin = caller(&request)?;
        let r = request.into_inner();
        if r.reason.chars().count() > 500 {
            return Err(AppError::invalid("reason", "must be at most 500 characters").into());
        }
        let row = self.visible(&admin, &r.id).await?;
        if row.desired == "RUNNING" {
            let reason = if r.reason.trim().is_empty() {
                "suspended by an administrator".to_owned()
            } else {
                format!("suspended by an administrator: {}", r.reason.trim())
            };
            let mut tx = self.subs.db().begin().await?;
            queries::change(&mut tx, &row.id, None, Some(("SUSPENDED", "ADMIN")), None).await?;
            let told = customers::tell_suspended(
                self.subs.notifier(),
                &mut tx,
                &row.user_id,
                &sub_ref(&row),
                &reason,
            )
            .await?;
            tx.commit().await.map_err(AppError::from)?;
            if told > 0 {
                self.subs.notifier().wake();
            }
            self.set_status(&row.id, pb::SubscriptionStatus::Suspended, &reason)
                .await?;
            tracing::info!(subscription = %row.id, by = %admin.id, "subscription suspended");
        }
        Ok(Response::new(pb::SuspendSubscriptionResponse {
            subscription: Some(self.reply(&admin, &row.id).await?),
        }))
    }

    async fn resume_subscription(
        &self,
        request: Request<pb::ResumeSubscriptionRequest>,
    ) -> Result<Response<pb::ResumeSubscriptionResponse>, Status> {
        let admin = caller(&request)?;
        let row = self.visible(&admin, &request.get_ref().id).await?;
        if row.desired == "SUSPENDED" {
            let owner_active = queries::owner_active(self.subs.db(), &row.user_id).await?;
            match owner_active {
                Some(true) => {}
                Some(false) => {
                    return Err(AppError::FailedPrecondition(
                        "its owner is deactivated: activate the account first".into(),
                    )
                    .into());
                }
                None => {
                    return Err(AppError::FailedPrecondition(
                        "its owner's account was deleted".into(),
                    )
                    .into());
                }
            }
            let mut tx = self.subs.db().begin().await?;
            queries::change(&mut tx, &row.id, None, Some(("RUNNING", "")), None).await?;
            let told = customers::tell_resumed(
                self.subs.notifier(),
                &mut tx,
                &row.user_id,
                &sub_ref(&row),
            )
            .await?;
            tx.commit().await.map_err(AppError::from)?;
            if told > 0 {
                self.subs.notifier().wake();
            }
            self.set_status(&row.id, pb::SubscriptionStatus::Provisioning, "resumed")
                .await?;
            tracing::info!(subscription = %row.id, by = %admin.id, "subscription resumed");
        }
        Ok(Response::new(pb::ResumeSubscriptionResponse {
            subscription: Some(self.reply(&admin, &row.id).await?),
        }))
    }

    async fn set_subscription_access(
        &self,
        request: Request<pb::SetSubscriptionAccessRequest>,
    ) -> Result<Response<pb::SetSubscriptionAccessResponse>, Status> {
        let caller = caller(&request)?;
        self.limit_change(&caller).await?;
        let r = request.into_inner();
        let row = self.visible(&caller, &r.id).await?;
        if row.gate.is_empty() != r.public {
            // Closing again makes a new token: a link given out while it
            // was closed before does not open it now.
            let gate = if r.public {
                String::new()
            } else {
                self.subs.new_gate(&row.id).1
            };
            let mut tx = self.subs.db().begin().await?;
            if !queries::set_gate(&mut tx, &row.id, &gate).await? {
                return Err(queries::not_found(&row.id).into());
            }
            tx.commit().await.map_err(AppError::from)?;
            tracing::info!(subscription = %row.id, name = %row.name, by = %caller.id, public = r.public, "subscription access changed");
            self.subs.changed(&row.id, None);
        }
        Ok(Response::new(pb::SetSubscriptionAccessResponse {
            subscription: Some(self.reply(&caller, &row.id).await?),
        }))
    }

    async fn check_subscription(
        &self,
        request: Request<pb::CheckSubscriptionRequest>,
    ) -> Result<Response<pb::CheckSubscriptionResponse>, Status> {
        let caller = caller(&request)?;
        let r = request.into_inner();
        if r.service_id.is_empty() {
            return Err(AppError::invalid("service_id", "is required").into());
        }
        let answer = match self.subs.check(&caller, &r.service_id).await {
            Ok(()) => pb::CheckSubscriptionResponse {
                allowed: true,
                ..Default::default()
            },
            Err(e @ AppError::Refused { .. }) => pb::CheckSubscriptionResponse {
                allowed: false,
                reason: e.reason().unwrap_or_default().to_owned(),
                message: e.to_string(),
            },
            Err(AppError::ResourceExhausted { message, .. }) => pb::CheckSubscriptionResponse {
                allowed: false,
                reason: "OVER_LIMITS".into(),
                message,
            },
            Err(e) => return Err(e.into()),
        };
        Ok(Response::new(answer))
    }

    async fn get_subscription_stats(
        &self,
        _request: Request<pb::GetSubscriptionStatsRequest>,
    ) -> Result<Response<pb::GetSubscriptionStatsResponse>, Status> {
        let (by_status, by_service) = queries::stats(self.subs.db()).await?;
        use pb::SubscriptionStatus as S;
        let statuses = [
            S::Pending,
            S::Provisioning,
            S::Running,
            S::Degraded,
            S::Suspended,
            S::Deleting,
            S::Failed,
            S::Upgrading,
        ];
        let count = |s: S| {
            by_status
                .iter()
                .find(|(n, _)| n == status_to_db(s))
                .map_or(0, |(_, c)| *c)
        };
        Ok(Response::new(pb::GetSubscriptionStatsResponse {
            total: by_status.iter().map(|(_, c)| c).sum(),
            by_status: statuses
                .iter()
                .map(|s| pb::SubscriptionStatusCount {
                    status: *s as i32,
                    count: count(*s),
                })
                .collect(),
            monthly_revenue_cents: by_service.iter().map(|s| s.3).sum(),
            by_service: by_service
                .into_iter()
                .map(|(id, name, count, revenue)| pb::SubscriptionServiceCount {
                    service_id: id,
                    service_name: name,
                    count,
                    monthly_revenue_cents: revenue,
                })
                .collect(),
        }))
    }

    async fn add_subscription_domain(
        &self,
        request: Request<pb::AddSubscriptionDomainRequest>,
    ) -> Result<Response<pb::AddSubscriptionDomainResponse>, Status> {
        Ok(Response::new(self.add_domain(request).await?))
    }

    async fn remove_subscription_domain(
        &self,
        request: Request<pb::RemoveSubscriptionDomainRequest>,
    ) -> Result<Response<pb::RemoveSubscriptionDomainResponse>, Status> {
        Ok(Response::new(self.remove_domain(request).await?))
    }

    async fn list_subscription_domains(
        &self,
        request: Request<pb::ListSubscriptionDomainsRequest>,
    ) -> Result<Response<pb::ListSubscriptionDomainsResponse>, Status> {
        Ok(Response::new(self.list_domains(request).await?))
    }

    async fn set_subscription_auto_update(
        &self,
        request: Request<pb::SetSubscriptionAutoUpdateRequest>,
    ) -> Result<Response<pb::SetSubscriptionAutoUpdateResponse>, Status> {
        let caller = caller(&request)?;
        self.limit_change(&caller).await?;
        let r = request.into_inner();
        let Some(policy) = r.policy.as_ref() else {
            return Err(AppError::invalid("policy", "is required").into());
        };
        let policy = crate::subscriptions::autoupdate::Policy::from_pb(policy)?;
        let row = self.visible(&caller, &r.id).await?;
        crate::subscriptions::autoupdate::set(self.subs.db(), &row.id, &policy).await?;
        tracing::info!(subscription = %row.id, name = %row.name, by = %caller.id,
            enabled = policy.enabled, "subscription auto-update policy set");
        self.subs.changed(&row.id, None);
        Ok(Response::new(pb::SetSubscriptionAutoUpdateResponse {
            subscription: Some(self.reply(&caller, &row.id).await?),
        }))
    }
}
