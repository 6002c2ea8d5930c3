//! Subscriptions: a customer's instance of a catalog service, run as
//! Kubernetes objects in the customer's namespace (issue #14).
//!
//! - `render`: template and values → the objects applied.
//! - `queries`: the rows, their events, leases.
//! - `limits`: what one customer may take (fair shares), checked at
//!   admission and carried by the namespace's quota.
//! - `reconcile`: keeps the cluster equal to the store and the status
//!   equal to what the pods say; level triggered, one replica at a time per
//!   subscription (a lease on the row).
//! - `admission`: whether a new or changed subscription fits (limits,
//!   the cluster's room); the gRPC SubscriptionService is in `crate::api`.
//! - `logs`: log streams, read in bounded chunks and cut into bounded
//!   lines; per-user slots.
//! - `relay`: changes told to and heard from other replicas (PostgreSQL).
//! - `domains`: customers' own host names, proven and then served.
//!
//! `Subscriptions` is the state they share: the store, the cluster link,
//! the pods of subscriptions as a watch last saw them, the reconciler's
//! queue and the broadcast the watch RPC reads.

pub mod admission;
pub mod autoupdate;
pub mod domains;
pub mod gate;
pub mod limits;
pub mod logs;
pub mod queries;
pub mod reconcile;
pub mod relay;
pub mod render;
pub mod upgrade;
pub mod words;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use k8s_openapi::api::core::v1::Pod;
use minispod_proto::v1 as pb;
use prost::Message;
use tokio::sync::broadcast;

use crate::{
    cluster::ClusterLink,
    error::{AppError, AppResult},
    notifications::Notifier,
    sealed::Sealer,
    store::{Db, timestamp},
    with_conn,
    workqueue::{Backoff, WorkQueue},
};
use queries::SubscriptionRow;
use render::{COMPONENT_LABEL, RenderSettings, SUBSCRIPTION_LABEL};

/// How subscriptions are run.
#[derive(Debug, Clone)]
pub struct SubscriptionSettings {
    /// What the objects look like.
    pub render: RenderSettings,
    /// How long a deleted subscription's volumes are kept.
    pub volume_retention: Duration,
    /// How often every subscription is looked at even without a change.
    pub resync: Duration,
    /// What one customer may take unless an administrator said otherwise.
    pub tenant: limits::TenantDefaults,
    /// How failed passes are retried.
    pub backoff: Backoff,
    /// How long the cluster may refuse a subscription's objects before a
    /// subscription that is not running turns FAILED.
    pub refusal_grace: Duration,
    /// How long an upgrade's new version has to become ready before it is
    /// rolled back (`--upgrade-deadline`).
    pub upgrade_deadline: Duration,
    /// How often auto-update policies are looked at
    /// (`--auto-update-every`).
    pub auto_update_every: Duration,
    /// At most one SUBSCRIBE_BLOCKED notice per cause in this window
    /// (`--notify-blocked-every`).
    pub blocked_notice_every: Duration,
    /// How customers' own domains are checked and served.
    pub domains: domains::DomainSettings,
}

/// A change a watch shows.
#[derive(Debug, Clone)]
pub enum Change {
    /// Created or changed, with the owner (for filtering) and the event if
    /// its status changed.
    Upserted(String, Option<pb::SubscriptionEvent>),
    /// Gone: (id, owner).
    Deleted(String, String),
}

/// What is kept of one pod of a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    /// Pod name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// Template component.
    pub component: String,
    /// status.phase.
    pub phase: String,
    /// The Ready condition.
    pub ready: bool,
    /// Why not ready, in the cluster's words ("ImagePullBackOff: ...").
    pub reason: String,
    /// The waiting reason alone (ErrImagePull, CrashLoopBackOff, ...).
    pub waiting: String,
    /// Restarts of its containers.
    pub restarts: i32,
    /// spec.nodeName.
    pub node: String,
    /// Being deleted.
    pub terminating: bool,
    /// metadata.creationTimestamp, Unix ms (whole seconds); 0 when unknown.
    pub created_ms: i64,
}

impl PodInfo {
    /// The subscription id and what is kept of `p`, if it is one of ours.
    pub fn of(p: &Pod) -> Option<(String, PodInfo)> {
        let labels = p.metadata.labels.as_ref()?;
        let sub = labels.get(SUBSCRIPTION_LABEL)?.clone();
        let component = labels.get(COMPONENT_LABEL).cloned().unwrap_or_default();
        let status = p.status.clone().unwrap_or_default();
        let conditions = status.conditions.unwrap_or_default();
        let ready = conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        let mut reason = String::new();
        let mut waiting = String::new();
        let mut restarts = 0;
        for cs in status.container_statuses.iter().flatten() {
            restarts += cs.restart_count;
            if let Some(w) = cs.state.as_ref().and_then(|s| s.waiting.as_ref()) {
                let r = w.reason.clone().unwrap_or_default();
                if reason.is_empty() {
                    reason = match w.message.as_deref() {
                        Some(m) if !m.is_empty() => format!("{r}: {m}"),
                        _ => r.clone(),
                    };
                    waiting = r;
                }
            }
        }
        if reason.is_empty() && !ready {
            // Unschedulable and the like: the condition that is not True.
            if let Some(c) = conditions
                .iter()
                .find(|c| c.status != "True" && c.reason.is_some())
            {
                let r = c.reason.clone().unwrap_or_default();
                reason = match c.message.as_deref() {
                    Some(m) if !m.is_empty() => format!("{r}: {m}"),
                    _ => r.clone(),
                };
                if r == "Unschedulable" {
                    waiting = r;
                }
            }
        }
        Some((
            sub,
            PodInfo {
                name: p.metadata.name.clone().unwrap_or_default(),
                namespace: p.metadata.namespace.clone().unwrap_or_default(),
                component,
                phase: status.phase.unwrap_or_default(),
                ready,
                reason,
                waiting,
                restarts,
                node: p
                    .spec
                    .as_ref()
                    .and_then(|s| s.node_name.clone())
                    .unwrap_or_default(),
                terminating: p.metadata.deletion_timestamp.is_some(),
                created_ms: p
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0.as_millisecond())
                    .unwrap_or(0),
            },
        ))
    }
}

/// The shared state of subscriptions. Cheap to clone.
#[derive(Clone)]
pub struct Subscriptions {
    inner: Arc<Inner>,
}

struct Inner {
    /// Seals the values rows keep (see `crate::sealed`).
    sealer: Sealer,
    db: Db,
    link: ClusterLink,
    settings: SubscriptionSettings,
    replica_id: String,
    notifier: Notifier,
    /// Subscription id → pod name → pod.
    pods: RwLock<HashMap<String, BTreeMap<String, PodInfo>>>,
    /// Whether the pod watch has listed everything.
    pods_synced: Mutex<bool>,
    /// Subscriptions to look at, with their backoff.
    queue: WorkQueue<String>,
    changes: broadcast::Sender<Change>,
    /// Notices for the other replicas, once the relay runs.
    relay: Mutex<Option<tokio::sync::mpsc::UnboundedSender<String>>>,
    /// When administrators were last told that customers cannot subscribe.
    blocked: words::BlockedNotices,
    /// Owners whose domains to look at (`domains`), with their backoff.
    domain_queue: WorkQueue<String>,
}

impl std::fmt::Debug for Subscriptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriptions").finish_non_exhaustive()
    }
}

/// What the gate token is sealed to: its row and column, so a sealed
/// value cannot be moved to another column or row.
fn gate_row(row_id: &str) -> String {
    format!("{row_id}/gate")
}

impl Subscriptions {
    /// Starts the pod watch, the worker listener and the reconciler
    /// (`reconcile`), the domain loop (`domains`) and the auto-update loop
    /// (`autoupdate`); none without a linked cluster.
    pub fn spawn(&self, hub: crate::workers::hub::FleetHub) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = reconcile::spawn(self, hub);
        tasks.extend(domains::spawn(self));
        tasks.extend(autoupdate::spawn(self));
        tasks
    }

    /// The state over `db` and `link`; `replica_id` names this replica's
    /// leases; failures are told to administrators through `notifier`.
    pub fn new(
        db: Db,
        link: ClusterLink,
        settings: SubscriptionSettings,
        replica_id: String,
        notifier: Notifier,
        sealer: Sealer,
    ) -> Self {
        let queue = WorkQueue::new(settings.backoff);
        let domain_queue = WorkQueue::new(settings.backoff);
        let blocked = words::BlockedNotices::new(settings.blocked_notice_every);
        Subscriptions {
            inner: Arc::new(Inner {
                sealer,
                db,
                link,
                settings,
                replica_id,
                notifier,
                pods: RwLock::default(),
                pods_synced: Mutex::new(false),
                queue,
                changes: broadcast::channel(1024).0,
                relay: Mutex::new(None),
                blocked,
                domain_queue,
            }),
        }
    }

    /// The store.
    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    /// `map` as stored in the row `row_id`: sealed (variables may hold
    /// SECRET values, generated values are passwords).
    pub fn seal_map(&self, row_id: &str, map: &BTreeMap<String, String>) -> String {
        self.inner.sealer.seal(row_id, &queries::encode_map(map))
    }

    /// A new owner's gate for the row `row_id`: the token (for the gate and
    /// the owner's link) and the token as stored, sealed.
    pub fn new_gate(&self, row_id: &str) -> (String, String) {
        let token = gate::new_token();
        let sealed = self.inner.sealer.seal(&gate_row(row_id), &token);
        (token, sealed)
    }

    /// The owner's gate token of the row `row_id`, None when the
    /// subscription is open to everyone. An error when it does not open:
    /// the reconciler must never open the gate for want of its token.
    pub fn open_gate(&self, row_id: &str, stored: &str) -> AppResult<Option<String>> {
        if stored.is_empty() {
            return Ok(None);
        }
        self.inner
            .sealer
            .open(&gate_row(row_id), stored)
            .map(Some)
            .map_err(|e| AppError::Internal(e.context(format!("subscription {row_id}: gate"))))
    }

    /// The map stored in the row `row_id` (sealed, or plain from before
    /// sealing). An error when it does not open: the reconciler must never
    /// apply empty passwords in place of the real ones.
    pub fn open_map(&self, row_id: &str, stored: &str) -> AppResult<BTreeMap<String, String>> {
        let plain = self
            .inner
            .sealer
            .open(row_id, stored)
            .map_err(|e| AppError::Internal(e.context(format!("subscription {row_id}"))))?;
        serde_json::from_str(&plain).map_err(|e| {
            AppError::Internal(
                anyhow::Error::new(e).context(format!("subscription {row_id}: stored values")),
            )
        })
    }

    /// Account `user_id`'s storage in use (volumes, retained volumes and
    /// backups, GiB) and its limit.
    pub async fn storage_of(&self, user_id: &str) -> AppResult<(i64, i64)> {
        let mut tx = self.db().begin().await?;
        let out = limits::storage(&mut tx, &self.settings().tenant, user_id).await?;
        tx.commit().await?;
        Ok(out)
    }

    /// The key values are sealed with.
    pub fn sealer(&self) -> &Sealer {
        &self.inner.sealer
    }

    /// The cluster link.
    pub fn link(&self) -> &ClusterLink {
        &self.inner.link
    }

    /// Where failures are told.
    pub fn notifier(&self) -> &Notifier {
        &self.inner.notifier
    }

    /// When administrators were last told that customers cannot subscribe.
    fn blocked_notices(&self) -> &words::BlockedNotices {
        &self.inner.blocked
    }

    /// The settings.
    pub fn settings(&self) -> &SubscriptionSettings {
        &self.inner.settings
    }

    /// Asks the reconciler to look at these subscriptions (one waiting
    /// out a backoff after a failure keeps its time).
    pub fn enqueue(&self, ids: impl IntoIterator<Item = String>) {
        self.inner.queue.add(ids);
    }

    /// Asks the reconciler to look at a subscription now, even one waiting
    /// out a backoff: its owner or an administrator just changed it.
    pub fn enqueue_now(&self, id: String) {
        self.inner.queue.add_now(id);
    }

    fn queue(&self) -> &WorkQueue<String> {
        &self.inner.queue
    }

    /// Announces what a committed account change did to its owner's
    /// subscriptions: watchers hear of each with its event, and the
    /// reconciler scales them now rather than at its next resync.
    pub fn owner_changed(&self, changes: impl IntoIterator<Item = queries::OwnerChange>) {
        for c in changes {
            for id in &c.ids {
                self.publish(Change::Upserted(
                    id.clone(),
                    Some(pb::SubscriptionEvent {
                        status: c.status as i32,
                        reason: c.reason.clone(),
                        at: Some(timestamp(c.at)),
                    }),
                ));
            }
            self.enqueue(c.ids);
        }
    }

    /// Tells watchers, here and on every other replica.
    pub fn publish(&self, change: Change) {
        self.relay(&change);
        self.publish_here(change);
    }

    /// Tells this replica's watchers only (a change another replica made).
    fn publish_here(&self, change: Change) {
        let _ = self.inner.changes.send(change);
    }

    /// A receiver of every change from now on.
    pub fn changes(&self) -> broadcast::Receiver<Change> {
        self.inner.changes.subscribe()
    }

    /// The pods of a subscription, by name.
    pub fn pods_of(&self, id: &str) -> Vec<PodInfo> {
        self.inner
            .pods
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The subscriptions with a pod on `node`.
    pub fn on_node(&self, node: &str) -> Vec<String> {
        self.inner
            .pods
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, pods)| pods.values().any(|p| p.node == node))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Whether the pod watch has listed everything since it (re)started.
    pub fn pods_synced(&self) -> bool {
        *self
            .inner
            .pods_synced
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The API's message for `row`: decoded template values, URL, notes and
    /// the components' pods. An administrator (`admin`) sees the namespace,
    /// the workers and nodes the pods run on and the reasons in the
    /// cluster's words; a customer sees none of that, and reasons in
    /// customer words (`words::for_customer`).
    pub async fn to_pb(&self, row: &SubscriptionRow, admin: bool) -> AppResult<pb::Subscription> {
        let mut out = self.to_pb_many(std::slice::from_ref(row), admin).await?;
        Ok(out.remove(0))
    }

    /// [`Subscriptions::to_pb`] for many rows, with one worker lookup.
    pub async fn to_pb_many(
        &self,
        rows: &[SubscriptionRow],
        admin: bool,
    ) -> AppResult<Vec<pb::Subscription>> {
        let pods: Vec<Vec<PodInfo>> = rows.iter().map(|r| self.pods_of(&r.id)).collect();
        let link = self.link();
        let mut workers: BTreeMap<String, String> = BTreeMap::new();
        for p in pods.iter().flatten().filter(|_| admin) {
            if let Some(w) = link.worker_of_node(&p.node) {
                workers.insert(p.node.clone(), w);
            }
        }
        let names = worker_names(self.db(), workers.values().cloned().collect()).await?;
        let mut services: Vec<String> = rows.iter().map(|r| r.service_id.clone()).collect();
        services.sort();
        services.dedup();
        let versions = crate::catalog::versions::summaries(self.db(), &services).await?;
        let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
        let mut auto = autoupdate::fields(self.db(), &ids).await?;
        let settings = &self.settings().render;
        Ok(rows
            .iter()
            .zip(pods)
            .map(|(r, pods)| {
                let template =
                    pb::ServiceTemplate::decode(r.template.as_slice()).unwrap_or_default();
                // For display only: a row that does not open shows no values
                // (and says so in the log) rather than failing the list.
                let open = |stored: &str| {
                    self.open_map(&r.id, stored).unwrap_or_else(|e| {
                        tracing::error!(error = %e, "cannot open a subscription's values");
                        BTreeMap::new()
                    })
                };
                let mut variables = open(&r.variables);
                let generated = open(&r.generated);
                let inst = render::Instance {
                    id: &r.id,
                    name: &r.name,
                    user_id: &r.user_id,
                    slug: &r.service_slug,
                    template: &template,
                    variables: &variables,
                    generated: &generated,
                    suspended: false,
                    live: &[],
                    restarted_at: 0,
                    gate: None,
                };
                let notes = render::notes(&inst, settings);
                let url = if template
                    .components
                    .iter()
                    .any(|c| !c.expose_port.is_empty())
                {
                    format!("https://{}", render::host(&r.name, settings))
                } else {
                    String::new()
                };
                for v in &template.variables {
                    if v.r#type() == pb::VariableType::Secret
                        && let Some(x) = variables.get_mut(&v.name)
                    {
                        x.clear();
                    }
                }
                let components = template
                    .components
                    .iter()
                    .map(|c| {
                        let pods: Vec<pb::PodStatus> = pods
                            .iter()
                            .filter(|p| p.component == c.name)
                            .map(|p| {
                                if !admin {
                                    return pb::PodStatus {
                                        name: p.name.clone(),
                                        phase: p.phase.clone(),
                                        ready: p.ready,
                                        reason: words::pod_reason_for_customer(&p.waiting),
                                        restarts: p.restarts,
                                        ..pb::PodStatus::default()
                                    };
                                }
                                let worker_id = workers.get(&p.node).cloned().unwrap_or_default();
                                pb::PodStatus {
                                    name: p.name.clone(),
                                    phase: p.phase.clone(),
                                    ready: p.ready,
                                    reason: p.reason.clone(),
                                    restarts: p.restarts,
                                    node_name: p.node.clone(),
                                    worker_name: names
                                        .get(&worker_id)
                                        .map(|(n, _)| n.clone())
                                        .unwrap_or_default(),
                                    worker_id,
                                }
                            })
                            .collect();
                        pb::ComponentStatus {
                            name: c.name.clone(),
                            ready: pods.iter().any(|p| p.ready),
                            pods,
                        }
                    })
                    .collect();
                let auto = auto.remove(&r.id).unwrap_or_default();
                pb::Subscription {
                    auto_update: Some(auto.auto_update.unwrap_or_default()),
                    auto_update_tried: auto.auto_update_tried,
                    auto_update_next_window: auto.auto_update_next_window,
                    id: r.id.clone(),
                    name: r.name.clone(),
                    user_id: r.user_id.clone(),
                    user_email: r.user_email.clone(),
                    service_id: r.service_id.clone(),
                    service_slug: r.service_slug.clone(),
                    service_name: r.service_name.clone(),
                    status: status_from_db(&r.status) as i32,
                    status_reason: if admin {
                        r.status_reason.clone()
                    } else {
                        words::for_customer(&r.status_reason)
                    },
                    variables: variables.into_iter().collect(),
                    url,
                    notes,
                    namespace: if admin {
                        r.namespace.clone()
                    } else {
                        String::new()
                    },
                    components,
                    monthly_price_cents: r.monthly_price_cents,
                    created_at: Some(timestamp(r.created_at)),
                    updated_at: Some(timestamp(r.updated_at)),
                    status_changed_at: Some(timestamp(r.status_changed_at)),
                    public: r.gate.is_empty(),
                    ..upgrade::version_fields(r, versions.get(&r.service_id))
                }
            })
            .collect())
    }
}

/// Names and online flags of workers, by id.
pub async fn worker_names(db: &Db, ids: Vec<String>) -> AppResult<HashMap<String, (String, bool)>> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(String, String, bool)> = with_conn!(db.read(), |c| {
        let mut q = sqlx::QueryBuilder::new("SELECT id, name, online FROM workers WHERE id IN (");
        let mut sep = q.separated(", ");
        for id in &ids {
            sep.push_bind(id.as_str());
        }
        q.push(")");
        q.build_query_as().fetch_all(c).await?
    });
    Ok(rows.into_iter().map(|(id, n, o)| (id, (n, o))).collect())
}

/// The stored name of a status.
pub fn status_to_db(s: pb::SubscriptionStatus) -> &'static str {
    use pb::SubscriptionStatus as S;
    match s {
        S::Pending | S::Unspecified => "PENDING",
        S::Provisioning => "PROVISIONING",
        S::Running => "RUNNING",
        S::Degraded => "DEGRADED",
        S::Suspended => "SUSPENDED",
        S::Deleting => "DELETING",
        S::Failed => "FAILED",
        S::Upgrading => "UPGRADING",
    }
}

/// The status of a stored name.
pub fn status_from_db(s: &str) -> pb::SubscriptionStatus {
    use pb::SubscriptionStatus as S;
    match s {
        "PROVISIONING" => S::Provisioning,
        "RUNNING" => S::Running,
        "DEGRADED" => S::Degraded,
        "SUSPENDED" => S::Suspended,
        "DELETING" => S::Deleting,
        "FAILED" => S::Failed,
        "UPGRADING" => S::Upgrading,
        _ => S::Pending,
    }
}
