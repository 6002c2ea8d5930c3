//! The subscription reconciler: the cluster made equal to the store, and
//! each subscription's status made equal to what its pods say.
//!
//! Level triggered: a pass over one subscription reads its row, applies
//! every object it should have (server-side apply, forced, under our field
//! manager) when its generation moved or a minute went by, deletes what a
//! deleted one had, and derives the status from its pods and their
//! workers. Passes are queued by changes (the API, an owner's account
//! deactivated or activated, the pod watch, worker status, other replicas'
//! notices) and by a periodic resync, so a restart of the control plane
//! picks up where it stopped. With several replicas on PostgreSQL a lease
//! on the row makes one replica at a time act on a subscription. An
//! upgrading subscription's passes are `rollout.rs`'s.

mod rollout;

use std::{
    collections::{BTreeSet, HashMap},
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api,
    api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams},
    runtime::watcher::{self, Event},
};
use minispod_proto::v1 as pb;
use prost::Message;
use serde_json::Value;
use tokio_stream::StreamExt;

use super::{
    Change, PodInfo, Subscriptions, limits, queries, render, status_from_db, status_to_db,
    worker_names,
};
use crate::{
    cluster::FIELD_MANAGER,
    error::AppResult,
    notifications::{customers, notices},
    store::{Tx, now_ms, timestamp},
    workers::hub::{FleetHub, WorkerEvent},
    workqueue::{Action, Reconcile, WorkQueue},
};

/// How long a replica's lease on a subscription lasts without renewal.
const LEASE: Duration = Duration::from_secs(30);
/// Objects are applied again every this many resyncs even when nothing
/// changed, so a hand edit or a deleted object is put back (a minute with
/// the default 10 s resync).
const REAPPLY_EVERY: u32 = 6;
/// Waiting reasons that mean the image cannot be had.
const IMAGE_ERRORS: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
];
/// Restarts after which a crash loop is a failure rather than a blip.
const CRASH_RESTARTS: i32 = 5;

/// The subscription reconciler's loop: what it applied, and when.
struct Reconciler {
    subs: Subscriptions,
    /// Subscription id → (generation applied, when).
    applied: HashMap<String, (i64, Instant)>,
    /// Upgrading subscription id → when a new pod of it was first seen
    /// unable to pull its image (`rollout.rs`).
    pull_failing: HashMap<String, Instant>,
}

impl Reconcile for Reconciler {
    type Key = String;
    type Error = anyhow::Error;

    async fn reconcile(&mut self, id: &String) -> anyhow::Result<Action> {
        let out = self.reconcile_one(id).await;
        match &out {
            Ok(_) => {}
            Err(e) => {
                self.applied.remove(id);
                if let Some(refused) = e.downcast_ref::<Refused>() {
                    // Its status tells why, and turns FAILED once the
                    // refusal has lasted (the run of failures counts from
                    // its first).
                    let since = self.subs.queue().failing(id).map(|(since, _)| since);
                    if let Err(e) = self.note_refusal(id, &refused.0, since).await {
                        tracing::warn!(subscription = %id, error = %e, "could not record a refusal");
                    }
                }
            }
        }
        out.map(|again| again.map_or(Action::Done, Action::RequeueAfter))
    }

    /// Every failure is retried after the subscription's backoff (with
    /// jitter): nothing here gives up, since quotas, permissions and
    /// admission rules change. A [`Refused`] one was also written into the
    /// subscription's status by `reconcile` (a write needs the store), and
    /// turns it FAILED once the refusal has lasted.
    fn error_policy(&mut self, id: &String, e: &anyhow::Error, backoff: Duration) -> Action {
        tracing::warn!(subscription = %id, error = %format!("{e:#}"), retry_in_ms = backoff.as_millis() as u64,
            "subscription reconcile failed; retrying");
        Action::RequeueAfter(backoff)
    }
}

/// A request the cluster refused for good reasons of its own (a 4xx other
/// than 409 Conflict and 429 Too Many Requests: forbidden, unauthorized,
/// invalid, ...), in words for the customer: what was refused and the
/// API's message. Retried with backoff like any failure: permissions and
/// admission rules change.
#[derive(Debug)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// `e` as a [`Refused`] when the cluster refused `verb` on `kind` `name`,
/// else as it is with what was tried.
fn refusal(e: kube::Error, verb: &str, kind: &str, name: &str) -> anyhow::Error {
    match e {
        kube::Error::Api(s) if (400..500).contains(&s.code) && ![409, 429].contains(&s.code) => {
            let why = if s.message.is_empty() {
                format!("{} {}", s.code, s.reason)
            } else {
                s.message.clone()
            };
            anyhow::Error::new(Refused(format!(
                "the cluster refused to {verb} the {kind} {name}: {why}"
            )))
        }
        e => anyhow::Error::new(e).context(format!("{verb} {kind} {name}")),
    }
}

/// Starts the pod watch, the worker listener and the reconciler; none
/// without a linked cluster.
pub fn spawn(subs: &Subscriptions, hub: FleetHub) -> Vec<tokio::task::JoinHandle<()>> {
    let Some(client) = subs.link().kube_client() else {
        return Vec::new();
    };
    vec![
        tokio::spawn(watch_pods(subs.clone(), Api::all(client))),
        tokio::spawn(follow_workers(subs.clone(), hub)),
        tokio::spawn(Reconciler::new(subs.clone()).run()),
    ]
}

/// Keeps the subscriptions' pods (their labels name them) as the watch
/// sees them, and queues the subscriptions whose pods changed.
async fn watch_pods(subs: Subscriptions, api: Api<Pod>) {
    let config = watcher::Config::default().labels(&format!(
        "{}={}",
        render::MANAGED_BY.0,
        render::MANAGED_BY.1
    ));
    let mut stream = Box::pin(watcher::watcher(api, config));
    let mut listing: HashMap<String, std::collections::BTreeMap<String, PodInfo>> = HashMap::new();
    let mut backoff = Duration::from_millis(200);
    while let Some(event) = stream.next().await {
        match event {
            Err(e) => {
                tracing::debug!(error = %e, "subscription pod watch failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
            Ok(Event::Init) => listing.clear(),
            Ok(Event::InitApply(p)) => {
                if let Some((sub, info)) = PodInfo::of(&p) {
                    listing
                        .entry(sub)
                        .or_default()
                        .insert(info.name.clone(), info);
                }
            }
            Ok(Event::InitDone) => {
                let mut pods = subs.inner.pods.write().unwrap_or_else(|p| p.into_inner());
                let mut touched: BTreeSet<String> = pods.keys().cloned().collect();
                touched.extend(listing.keys().cloned());
                *pods = std::mem::take(&mut listing);
                drop(pods);
                *subs
                    .inner
                    .pods_synced
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = true;
                subs.enqueue(touched);
            }
            Ok(Event::Apply(p)) => {
                if let Some((sub, info)) = PodInfo::of(&p) {
                    let mut pods = subs.inner.pods.write().unwrap_or_else(|p| p.into_inner());
                    let m = pods.entry(sub.clone()).or_default();
                    if m.get(&info.name) != Some(&info) {
                        m.insert(info.name.clone(), info);
                        drop(pods);
                        subs.enqueue([sub]);
                    }
                }
            }
            Ok(Event::Delete(p)) => {
                if let Some((sub, info)) = PodInfo::of(&p) {
                    let mut pods = subs.inner.pods.write().unwrap_or_else(|p| p.into_inner());
                    if let Some(m) = pods.get_mut(&sub) {
                        m.remove(&info.name);
                        if m.is_empty() {
                            pods.remove(&sub);
                        }
                    }
                    drop(pods);
                    subs.enqueue([sub]);
                }
            }
        }
        backoff = Duration::from_millis(200);
    }
}

/// A worker's stream dropping (or coming back) changes the status of
/// the subscriptions with pods on its node at once, long before the
/// node controller would mark the pods not ready.
async fn follow_workers(subs: Subscriptions, hub: FleetHub) {
    let mut events = hub.subscribe();
    loop {
        match events.recv().await {
            Ok((WorkerEvent::Upserted(w), _)) => {
                let ids: Vec<String> = {
                    let pods = subs.inner.pods.read().unwrap_or_else(|p| p.into_inner());
                    pods.iter()
                        .filter(|(_, m)| {
                            m.values().any(|p| {
                                subs.link().worker_of_node(&p.node).as_deref() == Some(&w.id)
                            })
                        })
                        .map(|(id, _)| id.clone())
                        .collect()
                };
                subs.enqueue(ids);
            }
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                let all = queries::all_ids(subs.db()).await.unwrap_or_default();
                subs.queue().resync(all);
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

impl Reconciler {
    /// The reconciler of `subs`, remembering nothing yet.
    pub(super) fn new(subs: Subscriptions) -> Reconciler {
        Reconciler {
            subs,
            applied: HashMap::new(),
            pull_failing: HashMap::new(),
        }
    }

    /// Runs the loop (and the retained volumes' reaper) for good.
    pub(super) async fn run(mut self) {
        let subs = self.subs.clone();
        let volumes = WorkQueue::new(subs.settings().backoff);
        let mut reaper = subs.link().kube_client().map(|client| VolumeReaper {
            subs: subs.clone(),
            client,
        });
        let mut next_resync = Instant::now();
        loop {
            let now = Instant::now();
            if now >= next_resync {
                next_resync = now + subs.settings().resync;
                match queries::all_ids(subs.db()).await {
                    Ok(ids) => subs.queue().resync(ids),
                    Err(e) => tracing::warn!(error = %e, "subscriptions: listing failed"),
                }
                match queries::expired_volumes(subs.db()).await {
                    // One entry per claim; one that failed waits out its
                    // backoff, resync or not.
                    Ok(expired) => volumes.resync(expired),
                    Err(e) => {
                        tracing::warn!(error = %e, "subscriptions: listing expired volumes failed")
                    }
                }
            }
            if !subs.pods_synced() {
                // Statuses from a half-listed watch would be wrong: wait
                // (the queued subscriptions stay queued).
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            let id = tokio::select! {
                id = subs.queue().next() => id,
                claim = volumes.next(), if reaper.is_some() => {
                    if let Some(reaper) = reaper.as_mut() {
                        let _ = volumes.process(reaper, claim).await;
                    }
                    continue;
                }
                () = tokio::time::sleep_until(next_resync.into()) => continue,
            };
            // The backoff and the retry are the queue's (`error_policy`).
            let _ = subs.queue().process(&mut self, id).await;
        }
    }

    /// One pass over subscription `id`; when to look again, if sooner
    /// than a change or the resync (an upgrade waiting for its deadline).
    async fn reconcile_one(&mut self, id: &str) -> anyhow::Result<Option<Duration>> {
        let Some(row) = queries::get(self.subs.db(), id).await? else {
            self.applied.remove(id);
            return Ok(None);
        };
        if !queries::lease(
            self.subs.db(),
            id,
            &self.subs.inner.replica_id,
            LEASE.as_millis() as i64,
        )
        .await?
        {
            return Ok(None);
        }
        let Some(client) = self.subs.link().kube_client() else {
            return Ok(None);
        };
        let template = pb::ServiceTemplate::decode(row.template.as_slice())?;
        let variables = self.subs.open_map(&row.id, &row.variables)?;
        let generated = self.subs.open_map(&row.id, &row.generated)?;
        let gate = self.subs.open_gate(&row.id, &row.gate)?;
        // A backup or a restore holds it stopped while its volumes are
        // copied (`crate::backups`).
        // A hold whose components all keep running (BACKUP_MODE_LIVE)
        // stops nothing and is not shown.
        let (held, live) = match queries::held(self.subs.db(), id).await? {
            Some((why, live)) => {
                let live: Vec<String> = live
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect();
                if template.components.iter().all(|c| live.contains(&c.name)) {
                    (None, Vec::new())
                } else {
                    (Some(why), live)
                }
            }
            None => (None, Vec::new()),
        };
        let live: &[String] = if row.desired == "SUSPENDED" {
            &[]
        } else {
            &live
        };
        let inst = render::Instance {
            id: &row.id,
            name: &row.name,
            user_id: &row.user_id,
            slug: &row.service_slug,
            template: &template,
            variables: &variables,
            generated: &generated,
            suspended: row.desired == "SUSPENDED" || held.is_some(),
            live,
            restarted_at: row.restarted_at,
            gate: gate.as_deref(),
        };
        let objects = render::subscription_objects(&inst, &self.subs.settings().render)
            .map_err(|e| anyhow::anyhow!("render: {e}"))?;

        if row.desired == "DELETED" {
            if row.status != "DELETING" {
                self.record(
                    &row,
                    "DELETING",
                    "removing its objects from the cluster",
                    row.ever_ran,
                    ",",
                )
                .await?;
            }
            let mut volumes = Vec::new();
            for o in objects.iter().rev() {
                let (api, name) = dynamic(&client, o);
                if kind_of(o) == "PersistentVolumeClaim" {
                    volumes.push((name, claim_gib(o)));
                    continue;
                }
                match api.delete(&name, &DeleteParams::background()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(refusal(e, "delete", kind_of(o), &name)),
                }
            }
            let mut tx = self.subs.db().begin().await?;
            let keep_until = now_ms() + self.subs.settings().volume_retention.as_millis() as i64;
            queries::retain_volumes(&mut tx, &row.namespace, &volumes, keep_until).await?;
            queries::delete(&mut tx, id).await?;
            tx.commit().await?;
            self.applied.remove(id);
            self.apply_namespace(&client, &row.user_id).await?;
            self.subs
                .publish(Change::Deleted(row.id.clone(), row.user_id.clone()));
            tracing::info!(subscription = %row.id, name = %row.name, "subscription deleted");
            return Ok(None);
        }

        let stale = self.applied.get(id).is_none_or(|(g, at)| {
            *g != row.generation || at.elapsed() >= self.subs.settings().resync * REAPPLY_EVERY
        });
        if stale {
            self.apply_namespace(&client, &row.user_id).await?;
            for o in &objects {
                let (api, name) = dynamic(&client, o);
                let kind = kind_of(o);
                api.patch(
                    &name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(o),
                )
                .await
                .map_err(|e| refusal(e, "apply", kind, &name))?;
                if kind == "PersistentVolumeClaim" {
                    queries::forget_volume(self.subs.db(), &row.namespace, &name).await?;
                }
            }
            self.applied
                .insert(id.to_owned(), (row.generation, Instant::now()));
        }
        if !row.previous_version.is_empty() && row.desired == "RUNNING" {
            return self
                .follow_upgrade(&client, &row, &template, &objects)
                .await;
        }

        let pods = self.subs.pods_of(id);
        let mut nodes: HashMap<String, String> = HashMap::new();
        for p in &pods {
            if let Some(w) = self.subs.link().worker_of_node(&p.node) {
                nodes.insert(p.node.clone(), w);
            }
        }
        let workers = worker_names(self.subs.db(), nodes.values().cloned().collect()).await?;
        let (status, reason) = derive(&row, &template, &pods, &|node: &str| {
            nodes
                .get(node)
                .and_then(|w| workers.get(w))
                .map(|(name, online)| (name.clone(), *online))
        });
        let ever_ran = row.ever_ran || status == pb::SubscriptionStatus::Running;
        let mut on: Vec<&String> = nodes.values().collect();
        on.sort();
        on.dedup();
        let on = if on.is_empty() {
            ",".to_owned()
        } else {
            format!(
                ",{},",
                on.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",")
            )
        };
        let (status, reason) = match held {
            Some(why) if row.desired == "RUNNING" => (pb::SubscriptionStatus::Suspended, why),
            _ if status == pb::SubscriptionStatus::Suspended => (status, row.status_reason.clone()),
            _ => (status, reason),
        };
        let mut tx = self.subs.db().begin().await?;
        let recorded = queries::record_status(
            &mut tx,
            id,
            status_to_db(status),
            &reason,
            ever_ran,
            &on,
            row.generation,
            Some(row.generation),
        )
        .await?;
        let told = self.tell_failed(&mut tx, &row, recorded, &reason).await?;
        tx.commit().await?;
        if told > 0 {
            self.subs.notifier().wake();
        }
        if recorded.changed {
            self.publish_row_change(&row, status, &reason);
        }
        Ok(None)
    }

    /// Records that the cluster refused `id`'s objects (`why`), the first
    /// time at `since` (None: now): the status stays what it was with `why`
    /// as its reason, and one that is not running turns FAILED once the
    /// refusal has lasted `refusal_grace` (told to administrators). The
    /// retry goes on: a pass the cluster accepts derives the status again.
    async fn note_refusal(
        &self,
        id: &str,
        why: &str,
        since: Option<tokio::time::Instant>,
    ) -> anyhow::Result<()> {
        let Some(row) = queries::get(self.subs.db(), id).await? else {
            return Ok(());
        };
        let lasted = since.map_or(Duration::ZERO, |s| s.elapsed());
        let status = match row.status.as_str() {
            "RUNNING" | "SUSPENDED" | "DELETING" | "FAILED" => row.status.as_str(),
            _ if lasted >= self.subs.settings().refusal_grace => "FAILED",
            other => other,
        };
        self.record(&row, status, why, row.ever_ran, &row.workers)
            .await?;
        Ok(())
    }

    /// Records a status the reconciler decided without the pods.
    async fn record(
        &self,
        row: &queries::SubscriptionRow,
        status: &str,
        reason: &str,
        ever_ran: bool,
        workers: &str,
    ) -> AppResult<()> {
        let mut tx = self.subs.db().begin().await?;
        let recorded = queries::record_status(
            &mut tx,
            &row.id,
            status,
            reason,
            ever_ran,
            workers,
            row.generation,
            Some(row.generation),
        )
        .await?;
        let told = self.tell_failed(&mut tx, row, recorded, reason).await?;
        tx.commit().await?;
        if told > 0 {
            self.subs.notifier().wake();
        }
        if recorded.changed {
            self.publish_row_change(row, status_from_db(status), reason);
        }
        Ok(())
    }

    /// Queues the SUBSCRIPTION_FAILED notice in `tx` when `recorded` says
    /// the status turned FAILED: in the transaction that writes it, so it is
    /// told once whichever replica reconciles. The owner's incident (an
    /// outage past the grace, its end, a crash loop) moves in it too.
    async fn tell_failed(
        &self,
        tx: &mut Tx,
        row: &queries::SubscriptionRow,
        recorded: queries::Recorded,
        reason: &str,
    ) -> AppResult<usize> {
        let seen = customers::Recorded {
            id: &row.id,
            user_id: &row.user_id,
            name: &row.name,
            reason_for_customer: &super::words::for_customer(reason),
            restarts: self.subs.pods_of(&row.id).iter().map(|p| p.restarts).sum(),
        };
        let owner = customers::observe(self.subs.notifier(), tx, &seen).await?;
        if !recorded.turned_failed {
            return Ok(owner);
        }
        let notice = notices::subscription_failed(&row.id, &row.name, reason, now_ms());
        Ok(owner + self.subs.notifier().queue(tx, &notice).await?)
    }

    fn publish_row_change(
        &self,
        row: &queries::SubscriptionRow,
        status: pb::SubscriptionStatus,
        reason: &str,
    ) {
        let event =
            (status_to_db(status) != row.status || reason != row.status_reason).then(|| {
                pb::SubscriptionEvent {
                    status: status as i32,
                    reason: reason.to_owned(),
                    at: Some(timestamp(now_ms())),
                }
            });
        if let Some(e) = &event {
            tracing::info!(subscription = %row.id, name = %row.name, status = status_to_db(status), reason = %e.reason, "subscription status");
        }
        self.subs.publish(Change::Upserted(row.id.clone(), event));
    }

    /// Applies the customer's namespace, quota, limit range and network
    /// policy, the quota sized for their live subscriptions.
    async fn apply_namespace(&self, client: &kube::Client, user_id: &str) -> anyhow::Result<()> {
        let quota = {
            let mut tx = self.subs.db().begin().await?;
            limits::quota(&mut tx, &self.subs.settings().tenant, user_id).await?
        };
        for o in render::namespace_objects(user_id, &quota, &self.subs.settings().render) {
            let (api, name) = dynamic(client, &o);
            api.patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&o),
            )
            .await
            .map_err(|e| refusal(e, "apply", kind_of(&o), &name))?;
        }
        Ok(())
    }
}

/// Deletes the retained volumes whose `--volume-retention` passed (key:
/// namespace and claim name, from each resync's list): a claim the
/// cluster would not delete waits out the queue's backoff, not just the
/// next resync.
struct VolumeReaper {
    subs: Subscriptions,
    client: kube::Client,
}

impl Reconcile for VolumeReaper {
    type Key = (String, String);
    type Error = anyhow::Error;

    async fn reconcile(&mut self, (ns, name): &(String, String)) -> anyhow::Result<Action> {
        // Still retained and expired: a new subscription of the same name
        // may have taken the claim back meanwhile.
        if !queries::volume_expired(self.subs.db(), ns, name).await? {
            return Ok(Action::Done);
        }
        let api: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
            Api::namespaced(self.client.clone(), ns);
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => {
                return Err(refusal(
                    e,
                    "delete",
                    "PersistentVolumeClaim",
                    &format!("{ns}/{name}"),
                ));
            }
        }
        tracing::info!(namespace = %ns, claim = %name, "retained volume deleted");
        queries::forget_volume(self.subs.db(), ns, name).await?;
        Ok(Action::Done)
    }

    fn error_policy(
        &mut self,
        (ns, name): &(String, String),
        e: &anyhow::Error,
        backoff: Duration,
    ) -> Action {
        tracing::warn!(namespace = %ns, claim = %name, error = %format!("{e:#}"),
            retry_in_ms = backoff.as_millis() as u64, "retained volume not deleted yet");
        Action::RequeueAfter(backoff)
    }
}

/// The size a claim rendered by `render` asks for, in GiB (`"<n>Gi"`).
fn claim_gib(o: &Value) -> i64 {
    o["spec"]["resources"]["requests"]["storage"]
        .as_str()
        .and_then(|q| q.strip_suffix("Gi"))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

pub(super) fn kind_of(o: &Value) -> &str {
    o["kind"].as_str().unwrap_or_default()
}

/// The API of object `o`'s kind (in its namespace) and its name.
pub(super) fn dynamic(client: &kube::Client, o: &Value) -> (Api<DynamicObject>, String) {
    let api_version = o["apiVersion"].as_str().unwrap_or_default();
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind_of(o)));
    let name = o["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let api = match o["metadata"]["namespace"].as_str() {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    (api, name)
}

/// The status of `row` from its pods. `worker` names the worker of a node
/// and whether its stream is up (None: not one of ours).
pub fn derive(
    row: &queries::SubscriptionRow,
    template: &pb::ServiceTemplate,
    pods: &[PodInfo],
    worker: &dyn Fn(&str) -> Option<(String, bool)>,
) -> (pb::SubscriptionStatus, String) {
    use pb::SubscriptionStatus as S;
    match row.desired.as_str() {
        "SUSPENDED" => return (S::Suspended, String::new()),
        "DELETED" => return (S::Deleting, String::new()),
        _ => {}
    }
    let mut failed = Vec::new();
    let mut waiting = Vec::new();
    for c in &template.components {
        let mine: Vec<&PodInfo> = pods
            .iter()
            .filter(|p| p.component == c.name && !p.terminating)
            .collect();
        let ready = mine
            .iter()
            .any(|p| p.ready && worker(&p.node).is_none_or(|(_, online)| online));
        if ready {
            continue;
        }
        let Some(p) = mine.first() else {
            waiting.push(format!("component {}: waiting for its pod", c.name));
            continue;
        };
        if let Some((name, false)) = worker(&p.node) {
            waiting.push(format!("component {}: worker {name} is offline", c.name));
        } else if IMAGE_ERRORS.contains(&p.waiting.as_str()) {
            failed.push(format!(
                "component {}: image {} cannot be pulled: {}",
                c.name, c.image, p.reason
            ));
        } else if p.waiting == "CrashLoopBackOff" && p.restarts >= CRASH_RESTARTS {
            failed.push(format!(
                "component {}: keeps crashing ({} restarts): {}",
                c.name, p.restarts, p.reason
            ));
        } else if p.waiting == "Unschedulable" {
            waiting.push(format!("component {}: no capacity: {}", c.name, p.reason));
        } else if !p.reason.is_empty() {
            waiting.push(format!("component {}: {}", c.name, p.reason));
        } else {
            waiting.push(format!(
                "component {}: pod {} is {}",
                c.name, p.name, p.phase
            ));
        }
    }
    if !failed.is_empty() {
        failed.extend(waiting);
        return (S::Failed, failed.join("; "));
    }
    if waiting.is_empty() {
        return (S::Running, String::new());
    }
    let status = if row.ever_ran {
        S::Degraded
    } else {
        S::Provisioning
    };
    (status, waiting.join("; "))
}
