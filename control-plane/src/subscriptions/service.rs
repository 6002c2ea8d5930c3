//! SubscriptionService: customers run catalog services; administrators see
//! and control every subscription.

use std::{collections::BTreeMap, pin::Pin, sync::Arc, time::Duration};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, LogParams};
use minispod_proto::v1::{self as pb, subscription_service_server::SubscriptionService};
use prost::Message;
use rand::Rng;
use tokio_stream::Stream;
use tonic::{Code, Request, Response, Status};

use super::{
    Change, Subscriptions, gate, limits,
    logs::{CallerCheck, LOG_CHANNEL, LogPump, LogSlots},
    queries::{self, Filter, SubscriptionRow},
    render, status_to_db,
    words::{self, Blocked},
};
use crate::{
    auth::AuthState,
    catalog::template,
    error::{AppError, AppResult, Violations},
    rate_limit::{RateLimiter, too_many},
    store::{Page, Tx, new_id, now_ms, timestamp},
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
    auth: AuthState,
    subs: Subscriptions,
    limits: CallerLimits,
}

fn is_admin(u: &UserRow) -> bool {
    u.role == "ADMINISTRATOR"
}

/// A subscription name: a DNS label of 1 to 30, starting with a letter.
fn check_name(name: &str) -> Result<(), String> {
    let ok = (1..=30).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(
            "must be 1 to 30 lower-case letters, digits and inner dashes, starting with a letter"
                .into(),
        )
    }
}

/// A value made once per subscription.
fn generate(g: &pb::GeneratedValue) -> String {
    let len = if g.length == 0 { 32 } else { g.length as usize };
    let alphabet: &[u8] = match g.kind() {
        pb::GeneratedValueKind::Hex => b"0123456789abcdef",
        _ => b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
    };
    let mut rng = rand::rng();
    (0..len)
        .map(|_| alphabet[rng.random_range(0..alphabet.len())] as char)
        .collect()
}

/// The template of a catalog entry that has a deployable one, or the
/// refusal (NO_TEMPLATE) in the caller's words.
fn deployable_template(
    stored: Option<Vec<u8>>,
    slug: &str,
    name: &str,
    admin: bool,
) -> AppResult<pb::ServiceTemplate> {
    stored
        .and_then(|t| pb::ServiceTemplate::decode(t.as_slice()).ok())
        .filter(|t| !t.components.is_empty())
        .ok_or_else(|| {
            let message = if admin {
                format!(
                    "service {slug} has no deployment template: add one in the catalog (Edit \
                     template) or with UpdateService.template"
                )
            } else {
                format!("{name} cannot be subscribed to yet")
            };
            AppError::refused(Code::FailedPrecondition, "NO_TEMPLATE", message)
        })
}

fn mib(bytes: i64) -> i64 {
    bytes / (1024 * 1024)
}

impl SubscriptionApi {
    /// The service over `auth` and the shared subscription state.
    pub fn new(auth: AuthState, subs: Subscriptions, limits: CallerLimits) -> Self {
        SubscriptionApi { auth, subs, limits }
    }

    /// Spends one of `caller`'s CreateSubscription / UpdateSubscription
    /// tokens, or RESOURCE_EXHAUSTED with the wait.
    async fn limit_change(&self, caller: &UserRow) -> AppResult<()> {
        self.limits
            .changes
            .take(&caller.id)
            .await
            .map_err(|wait| too_many("subscription changes", wait))
    }

    /// The subscription `id` if `caller` may see it.
    async fn visible(&self, caller: &UserRow, id: &str) -> AppResult<SubscriptionRow> {
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

    /// Why the installation cannot take a subscription of `t` now: no
    /// linked cluster, or no room on the schedulable workers (the figures,
    /// for administrators). Runs inside the write transaction that stores
    /// it, and write transactions are serialised (SQLite has one writer; on
    /// PostgreSQL each first takes one transaction-scoped advisory lock,
    /// see `Db::begin`), so concurrent creates are admitted one after the
    /// other, each counting those admitted before it.
    async fn admit(&self, tx: &mut Tx, t: &pb::ServiceTemplate) -> AppResult<Option<Blocked>> {
        let link = self.subs.link();
        if !link.is_linked() {
            return Ok(Some(Blocked::NoCluster));
        }
        let schedulable: std::collections::HashSet<String> = queries::schedulable_workers(tx)
            .await?
            .into_iter()
            .collect();
        // Before the free figures: a pod the link starts counting between
        // the two reads is then counted twice (refusing too much for a
        // moment) rather than not at all.
        let (held_cpu, held_mem) = self.unscheduled_requests(tx).await?;
        let free: Vec<_> = link
            .free_by_worker()
            .into_iter()
            .filter(|(w, _, _, takes)| *takes && schedulable.contains(w))
            .map(|(_, _, r, _)| r)
            .collect();
        let (need_cpu, need_mem) = t.components.iter().fold((0i64, 0i64), |(c, m), x| {
            let r = render::pod_resources(x);
            (c + r.cpu_request_millicores, m + r.memory_request_mb)
        });
        let have_cpu: i64 = free.iter().map(|r| r.cpu).sum::<i64>() - held_cpu;
        let have_mem: i64 = free.iter().map(|r| mib(r.memory)).sum::<i64>() - held_mem;
        let biggest = t
            .components
            .iter()
            .map(|c| (c, render::pod_resources(c)))
            .find(|(_, r)| {
                !free.iter().any(|f| {
                    f.cpu >= r.cpu_request_millicores
                        && mib(f.memory) >= r.memory_request_mb
                        && f.pods >= 1
                })
            });
        if need_cpu > have_cpu || need_mem > have_mem || biggest.is_some() {
            let mut msg = format!(
                "not enough capacity: this service requests {need_cpu}m CPU and {need_mem} MiB \
                 memory; the {} schedulable worker(s) have {}m CPU and {} MiB free",
                free.len(),
                have_cpu.max(0),
                have_mem.max(0)
            );
            if held_cpu > 0 || held_mem > 0 {
                msg.push_str(&format!(
                    " (besides {held_cpu}m CPU and {held_mem} MiB for subscriptions not \
                     scheduled yet)"
                ));
            }
            if let Some((c, r)) = biggest {
                msg.push_str(&format!(
                    "; no worker can hold component {} ({}m CPU, {} MiB)",
                    c.name, r.cpu_request_millicores, r.memory_request_mb
                ));
            }
            return Ok(Some(Blocked::NoCapacity(msg)));
        }
        Ok(None)
    }

    /// CPU (millicores) and memory (MiB) requested by the components of
    /// admitted subscriptions that have no pod the cluster link counts yet
    /// (just created, pending, being moved): the link's free figures do
    /// not show what they will take.
    async fn unscheduled_requests(&self, tx: &mut Tx) -> AppResult<(i64, i64)> {
        let link = self.subs.link();
        let (mut cpu, mut mem) = (0i64, 0i64);
        for (id, template) in queries::running_templates(tx).await? {
            let Ok(t) = pb::ServiceTemplate::decode(template.as_slice()) else {
                continue;
            };
            let pods = self.subs.pods_of(&id);
            for c in &t.components {
                let counted = pods
                    .iter()
                    .any(|p| p.component == c.name && link.counts_pod(&p.namespace, &p.name));
                if !counted {
                    let r = render::pod_resources(c);
                    cpu += r.cpu_request_millicores;
                    mem += r.memory_request_mb;
                }
            }
        }
        Ok((cpu, mem))
    }

    async fn create(
        &self,
        caller: &UserRow,
        r: pb::CreateSubscriptionRequest,
    ) -> AppResult<String> {
        let mut v = Violations::new();
        v.take("name", check_name(&r.name));
        if r.service_id.is_empty() {
            v.add("service_id", "is required");
        }
        if r.variables.len() > 64 {
            v.add("variables", "at most 64 values");
        }
        v.finish()?;
        let service = queries::deployable(self.subs.db(), &r.service_id).await?;
        let Some((service_id, slug, service_name, active, price, template)) =
            service.filter(|s| s.3 || is_admin(caller))
        else {
            return Err(AppError::NotFound(format!("no service {:?}", r.service_id)));
        };
        let _ = active;
        let template = deployable_template(template, &slug, &service_name, is_admin(caller))?;
        let given: BTreeMap<String, String> = r.variables.into_iter().collect();
        let mut v = Violations::new();
        let variables = template::validate_values(&template, &given, &mut v);
        v.finish()?;
        let generated: BTreeMap<String, String> = template
            .generated
            .iter()
            .map(|g| (g.name.clone(), generate(g)))
            .collect();
        let now = now_ms();
        let id = new_id();
        // Closed until its owner opens it (`gate`): the first visitor of
        // n8n, Ghost or WordPress creates the administrator.
        let (_, gate) = self.subs.new_gate(&id);
        let row = SubscriptionRow {
            gate,
            variables: self.subs.seal_map(&id, &variables),
            generated: self.subs.seal_map(&id, &generated),
            id,
            name: r.name.clone(),
            user_id: caller.id.clone(),
            user_email: caller.email.clone(),
            service_id,
            service_slug: slug,
            service_name,
            namespace: render::namespace_of(&caller.id),
            template: template.encode_to_vec(),
            monthly_price_cents: price,
            desired: "RUNNING".into(),
            suspended_by: String::new(),
            status: "PENDING".into(),
            status_reason: "waiting to be applied to the cluster".into(),
            status_changed_at: now,
            ever_ran: false,
            generation: 1,
            applied_generation: 0,
            restarted_at: 0,
            workers: ",".into(),
            created_at: now,
            updated_at: now,
        };
        let mut tx = self.subs.db().begin().await?;
        // The customer's own limits first: past them, the cluster's room
        // is not theirs to take.
        limits::admit(&mut tx, &self.subs.settings().tenant, &caller.id, &template).await?;
        if let Some(blocked) = self.admit(&mut tx, &template).await? {
            drop(tx);
            let told = if is_admin(caller) {
                // An administrator trying it is told already.
                false
            } else {
                self.subs.tell_blocked(&blocked, &row.service_name).await
            };
            return Err(blocked.error(is_admin(caller), &row.service_name, told));
        }
        queries::insert(&mut tx, &row).await.map_err(|e| match e {
            AppError::AlreadyExists(m) => AppError::InvalidArgument {
                message: format!("name: {m}"),
                violations: vec![crate::error::FieldViolation {
                    field: "name".into(),
                    description: m,
                }],
            },
            e => e,
        })?;
        tx.commit().await.map_err(AppError::from)?;
        tracing::info!(subscription = %row.id, name = %row.name, service = %row.service_slug, user_id = %caller.id, "subscription created");
        self.changed(&row.id, None);
        Ok(row.id)
    }

    /// CreateSubscription's checks for `caller` and `service_id`, without
    /// creating anything: the template, the caller's own limits, then the
    /// installation's (a linked cluster, room on the workers; a customer
    /// blocked by these is told like one refused by CreateSubscription).
    async fn check(&self, caller: &UserRow, service_id: &str) -> AppResult<()> {
        let admin = is_admin(caller);
        let service = queries::deployable(self.subs.db(), service_id).await?;
        let Some((_, slug, name, _, _, template)) = service.filter(|s| s.3 || admin) else {
            return Err(AppError::NotFound(format!("no service {service_id:?}")));
        };
        let template = deployable_template(template, &slug, &name, admin)?;
        // The same transaction as CreateSubscription's admission, rolled
        // back: the answer counts what Create would count.
        let mut tx = self.subs.db().begin().await?;
        limits::admit(&mut tx, &self.subs.settings().tenant, &caller.id, &template).await?;
        let blocked = self.admit(&mut tx, &template).await?;
        drop(tx);
        match blocked {
            None => Ok(()),
            Some(b) => {
                let told = !admin && self.subs.tell_blocked(&b, &name).await;
                Err(b.error(admin, &name, told))
            }
        }
    }

    fn changed(&self, id: &str, event: Option<pb::SubscriptionEvent>) {
        self.subs.publish(Change::Upserted(id.to_owned(), event));
        self.subs.enqueue_now(id.to_owned());
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
        )
        .await?;
        tx.commit().await.map_err(AppError::from)?;
        self.changed(
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

type WatchStream =
    Pin<Box<dyn Stream<Item = Result<pb::WatchSubscriptionsResponse, Status>> + Send>>;
type LogStream =
    Pin<Box<dyn Stream<Item = Result<pb::StreamSubscriptionLogsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl SubscriptionService for SubscriptionApi {
    async fn create_subscription(
        &self,
        request: Request<pb::CreateSubscriptionRequest>,
    ) -> Result<Response<pb::CreateSubscriptionResponse>, Status> {
        let caller = self.auth.caller(&request).await?;
        self.limit_change(&caller).await?;
        let id = self.create(&caller, request.into_inner()).await?;
        Ok(Response::new(pb::CreateSubscriptionResponse {
            subscription: Some(self.reply(&caller, &id).await?),
        }))
    }

    async fn list_subscriptions(
        &self,
        request: Request<pb::ListSubscriptionsRequest>,
    ) -> Result<Response<pb::ListSubscriptionsResponse>, Status> {
        let caller = self.auth.caller(&request).await?;
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
        let caller = self.auth.caller(&request).await?;
        let row = self.visible(&caller, &request.get_ref().id).await?;
        let events = queries::events(self.subs.db(), &row.id, 50)
            .await?
            .into_iter()
            .map(|(s, reason, at)| pb::SubscriptionEvent {
                status: super::status_from_db(&s) as i32,
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
        let caller = self.auth.caller(&request).await?;
        self.limit_change(&caller).await?;
        let r = request.into_inner();
        let row = self.visible(&caller, &r.id).await?;
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
        self.changed(&row.id, None);
        Ok(Response::new(pb::UpdateSubscriptionResponse {
            subscription: Some(self.reply(&caller, &row.id).await?),
        }))
    }

    async fn restart_subscription(
        &self,
        request: Request<pb::RestartSubscriptionRequest>,
    ) -> Result<Response<pb::RestartSubscriptionResponse>, Status> {
        let caller = self.auth.caller(&request).await?;
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
        self.changed(&row.id, None);
        Ok(Response::new(pb::RestartSubscriptionResponse {
            subscription: Some(self.reply(&caller, &row.id).await?),
        }))
    }

    async fn delete_subscription(
        &self,
        request: Request<pb::DeleteSubscriptionRequest>,
    ) -> Result<Response<pb::DeleteSubscriptionResponse>, Status> {
        let caller = self.auth.caller(&request).await?;
        let row = self.visible(&caller, &request.get_ref().id).await?;
        let mut tx = self.subs.db().begin().await?;
        queries::change(&mut tx, &row.id, None, Some(("DELETED", "")), None).await?;
        queries::record_status(
            &mut tx,
            &row.id,
            "DELETING",
            "deletion asked for",
            row.ever_ran,
            &row.workers,
            row.applied_generation,
        )
        .await?;
        tx.commit().await.map_err(AppError::from)?;
        tracing::info!(subscription = %row.id, name = %row.name, by = %caller.id, "subscription deletion asked for");
        self.changed(
            &row.id,
            Some(pb::SubscriptionEvent {
                status: pb::SubscriptionStatus::Deleting as i32,
                reason: "deletion asked for".into(),
                at: Some(timestamp(now_ms())),
            }),
        );
        Ok(Response::new(pb::DeleteSubscriptionResponse {
            subscription: Some(self.reply(&caller, &row.id).await?),
        }))
    }

    type WatchSubscriptionsStream = WatchStream;

    async fn watch_subscriptions(
        &self,
        request: Request<pb::WatchSubscriptionsRequest>,
    ) -> Result<Response<Self::WatchSubscriptionsStream>, Status> {
        let caller = self.auth.caller(&request).await?;
        let r = request.get_ref().clone();
        if r.all && !is_admin(&caller) {
            return Err(
                AppError::PermissionDenied("all requires ROLE_ADMINISTRATOR".into()).into(),
            );
        }
        if !r.id.is_empty() {
            self.visible(&caller, &r.id).await?;
        }
        let credentials = request.metadata().clone();
        let auth = self.auth.clone();
        let subs = self.subs.clone();
        let caller_recheck = self.limits.caller_recheck;
        let mut changes = subs.changes();
        let owner = if r.all { None } else { Some(caller.id.clone()) };
        let admin = is_admin(&caller);
        let only = (!r.id.is_empty()).then(|| r.id.clone());
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        tokio::spawn(async move {
            let event = |kind: pb::SubscriptionEventType,
                         s: pb::Subscription,
                         e: Option<pb::SubscriptionEvent>| {
                pb::WatchSubscriptionsResponse {
                    r#type: kind as i32,
                    subscription: Some(s),
                    event: e,
                }
            };
            let keep = |row: &SubscriptionRow| {
                owner.as_ref().is_none_or(|o| &row.user_id == o)
                    && only.as_ref().is_none_or(|i| &row.id == i)
            };
            'snapshot: loop {
                let filter = Filter {
                    user_id: owner.clone().unwrap_or_default(),
                    ..Filter::default()
                };
                let mut page = Page {
                    offset: 0,
                    limit: 200,
                };
                loop {
                    let rows = match queries::list(subs.db(), &filter, page).await {
                        Ok((rows, _)) => rows,
                        Err(e) => {
                            let _ = tx.send(Err(Status::from(e))).await;
                            return;
                        }
                    };
                    let n = rows.len() as i64;
                    let rows: Vec<SubscriptionRow> = rows.into_iter().filter(|r| keep(r)).collect();
                    let Ok(list) = subs.to_pb_many(&rows, admin).await else {
                        return;
                    };
                    for s in list {
                        if tx
                            .send(Ok(event(pb::SubscriptionEventType::Snapshot, s, None)))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    if n < page.limit {
                        break;
                    }
                    page.offset += n;
                }
                if tx
                    .send(Ok(event(
                        pb::SubscriptionEventType::SnapshotEnd,
                        pb::Subscription::default(),
                        None,
                    )))
                    .await
                    .is_err()
                {
                    return;
                }
                let mut recheck = tokio::time::interval(caller_recheck);
                recheck.tick().await;
                loop {
                    let item = tokio::select! {
                        item = changes.recv() => item,
                        () = tx.closed() => return,
                        _ = recheck.tick() => {
                            let mut probe = Request::new(());
                            *probe.metadata_mut() = credentials.clone();
                            if let Err(e) = auth.caller(&probe).await {
                                let _ = tx.send(Err(Status::from(e))).await;
                                return;
                            }
                            continue;
                        }
                    };
                    let msg = match item {
                        Ok(Change::Upserted(id, e)) => {
                            let Ok(Some(row)) = queries::get(subs.db(), &id).await else {
                                continue;
                            };
                            if !keep(&row) {
                                continue;
                            }
                            let Ok(s) = subs.to_pb(&row, admin).await else {
                                continue;
                            };
                            let e = e.map(|mut e| {
                                if !admin {
                                    e.reason = words::for_customer(&e.reason);
                                }
                                e
                            });
                            event(pb::SubscriptionEventType::Upserted, s, e)
                        }
                        Ok(Change::Deleted(id, user)) => {
                            if owner.as_ref().is_some_and(|o| o != &user)
                                || only.as_ref().is_some_and(|i| i != &id)
                            {
                                continue;
                            }
                            event(
                                pb::SubscriptionEventType::Deleted,
                                pb::Subscription {
                                    id,
                                    ..Default::default()
                                },
                                None,
                            )
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                            continue 'snapshot;
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    };
                    if tx.send(Ok(msg)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    type StreamSubscriptionLogsStream = LogStream;

    async fn stream_subscription_logs(
        &self,
        request: Request<pb::StreamSubscriptionLogsRequest>,
    ) -> Result<Response<Self::StreamSubscriptionLogsStream>, Status> {
        let caller = self.auth.caller(&request).await?;
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
        let admin = self.auth.admin(&request).await?;
        let r = request.into_inner();
        if r.reason.chars().count() > 500 {
            return Err(AppError::invalid("reason", "must be at most 500 characters").into());
        }
        let row = self.visible(&admin, &r.id).await?;
        if row.desired == "RUNNING" {
            let mut tx = self.subs.db().begin().await?;
            queries::change(&mut tx, &row.id, None, Some(("SUSPENDED", "ADMIN")), None).await?;
            tx.commit().await.map_err(AppError::from)?;
            let reason = if r.reason.trim().is_empty() {
                "suspended by an administrator".to_owned()
            } else {
                format!("suspended by an administrator: {}", r.reason.trim())
            };
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
        let admin = self.auth.admin(&request).await?;
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
            tx.commit().await.map_err(AppError::from)?;
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
        let caller = self.auth.caller(&request).await?;
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
            self.changed(&row.id, None);
        }
        Ok(Response::new(pb::SetSubscriptionAccessResponse {
            subscription: Some(self.reply(&caller, &row.id).await?),
        }))
    }

    async fn check_subscription(
        &self,
        request: Request<pb::CheckSubscriptionRequest>,
    ) -> Result<Response<pb::CheckSubscriptionResponse>, Status> {
        let caller = self.auth.caller(&request).await?;
        let r = request.into_inner();
        if r.service_id.is_empty() {
            return Err(AppError::invalid("service_id", "is required").into());
        }
        let answer = match self.check(&caller, &r.service_id).await {
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
        request: Request<pb::GetSubscriptionStatsRequest>,
    ) -> Result<Response<pb::GetSubscriptionStatsResponse>, Status> {
        self.auth.admin(&request).await?;
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
}
