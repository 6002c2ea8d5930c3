//! Makes each worker's node what the worker's record says, and the
//! worker's status what its node says.
//!
//! One task, [`NodeReconciler`], takes workers from a work queue
//! (`crate::workqueue`: filled by the link's watches, the hub's worker
//! events and the offline timers; a failed pass is retried after a
//! per-worker backoff with jitter, never stacked: [`NodeReconciler`]'s
//! `error_policy`)
//! and, for each, compares the record with the node as last watched:
//! - labels (the administrator's, plus the worker-id label) and cordon
//!   (`spec.unschedulable` while cordoned or in maintenance) by server-side
//!   apply under [`FIELD_MANAGER`], forced: what the control plane stops
//!   applying is removed, what other managers set survives;
//! - taints by a merge patch with the node's resourceVersion as
//!   precondition: taints are an atomic list in the Node schema, so an
//!   apply would take the whole list from the kubelet and the node
//!   controller. The node's `minispod.dev/taints` annotation records which
//!   taints are ours; only those are added or removed;
//! - the offline taint (`minispod.dev/offline:NoExecute`) once a worker's
//!   stream has been gone for the grace, removed when it returns;
//! - the node's readiness into the worker's status (NOT_READY with the
//!   reason), once the watches have listed everything;
//! - maintenance: a drain (`drain`, on its own queue) once the node is
//!   cordoned; a deleted worker's node is drained there, then deleted.
//!
//! Every step is idempotent, so a worker queued twice costs a comparison.

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Node;
use kube::{
    Api,
    api::{Patch, PatchParams},
};
use minispod_proto::v1 as pb;
use minispod_support::WORKER_ID_LABEL;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use super::{Nodes, now};
use crate::{
    cluster::{
        ClusterLink, FIELD_MANAGER, LinkSettings,
        view::{NODE_NOT_JOINED, NodeView, OFFLINE_TAINT_KEY, OWN_TAINTS_ANNOTATION, TaintKey},
    },
    workers::{
        hub::{FleetHub, WorkerEvent},
        queries::{self as workers_db, StateChange, TaintJson, WorkerRow},
        session::change_state,
    },
    workqueue::{Action, Reconcile},
};

/// When more than this share of the linked workers is offline, the fault
/// is more likely here (or in the network) than in the workers: no new
/// offline taints until it passes, as Kubernetes' node lifecycle
/// controller stops evicting in a full disruption.
const DISRUPTION_SHARE: f64 = 0.55;

/// How long the drain of a deleted worker's node may take before the node
/// is deleted anyway.
const RETIRE_DRAIN_TIMEOUT: Duration = Duration::from_secs(120);

/// Watchers see a worker's node change at most this often.
const SHOW_EVERY: Duration = Duration::from_millis(500);

/// The reconciler's memory of which workers are offline since when.
#[derive(Debug)]
struct Presence {
    started: Instant,
    offline_since: HashMap<String, Instant>,
    /// What watchers were last shown of each worker's node, and when.
    shown: HashMap<String, (u64, Instant)>,
}

impl Presence {
    /// When the worker's node is due its offline taint.
    fn due(&self, id: &str, s: &LinkSettings) -> Option<Instant> {
        let since = *self.offline_since.get(id)?;
        Some((since + s.offline_taint_grace).max(self.started + s.offline_taint_after_start))
    }
}

/// The node reconciler: its loop, and what it remembers (which workers
/// are offline since when, what watchers were shown).
pub(super) struct NodeReconciler {
    nodes: Nodes,
    link: ClusterLink,
    hub: FleetHub,
    presence: Presence,
}

impl Reconcile for NodeReconciler {
    type Key = String;
    type Error = anyhow::Error;

    async fn reconcile(&mut self, id: &String) -> anyhow::Result<Action> {
        self.reconcile_worker(id).await
    }

    /// Every failure is retried after the worker's backoff: a node that
    /// could not be written now may be written later (the link back, a
    /// conflict gone), and the record keeps saying what it should be.
    fn error_policy(&mut self, id: &String, e: &anyhow::Error, backoff: Duration) -> Action {
        tracing::warn!(worker_id = %id, error = %format!("{e:#}"), retry_in_ms = backoff.as_millis() as u64,
            "cluster link: could not update the node");
        Action::RequeueAfter(backoff)
    }
}

impl NodeReconciler {
    /// The reconciler of `nodes`' workers, over `hub`.
    pub(super) fn new(nodes: Nodes, hub: FleetHub) -> NodeReconciler {
        NodeReconciler {
            link: nodes.link().clone(),
            nodes,
            hub,
            presence: Presence {
                started: Instant::now(),
                offline_since: HashMap::new(),
                shown: HashMap::new(),
            },
        }
    }

    fn settings(&self) -> &LinkSettings {
        self.link.settings()
    }

    fn client(&self) -> Option<&kube::Client> {
        self.link.client()
    }

    /// Runs until the hub closes.
    pub(super) async fn run(mut self) {
        let hub = self.hub.clone();
        let link = self.link.clone();
        let queue = self.nodes.inner.queue.clone();
        let settings = self.settings().clone();
        let mut events = hub.subscribe();
        let r = &mut self;
        let mut swept = false;
        loop {
            let presence = &r.presence;
            let next_due = presence
                .offline_since
                .keys()
                .filter_map(|id| presence.due(id, &settings))
                .filter(|d| *d > Instant::now())
                .min();
            let wake = async {
                match next_due {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            };
            let mut next = None;
            tokio::select! {
                // Shutting down: streams closing now are not workers failing.
                () = hub.closed() => return,
                ev = events.recv() => match ev {
                    Ok((WorkerEvent::Upserted(w), _)) => {
                        track(&mut r.presence, &w);
                        queue.add([w.id.clone()]);
                    }
                    Ok((WorkerEvent::Deleted(id), _)) => {
                        r.presence.offline_since.remove(&id);
                        r.presence.shown.remove(&id);
                        queue.add([id]);
                    }
                    Ok((WorkerEvent::Metrics(_), _)) => continue,
                    Err(RecvError::Lagged(_)) => swept = false,
                    Err(RecvError::Closed) => return,
                },
                () = link.listed() => {}
                () = wake => {
                    let now = Instant::now();
                    let due: Vec<String> = r.presence.offline_since.keys()
                        .filter(|id| r.presence.due(id, &settings).is_some_and(|d| d <= now + Duration::from_millis(1)))
                        .cloned().collect();
                    // Due now, backoff or not: the taint's time came.
                    for id in due {
                        queue.add_now(id);
                    }
                }
                id = queue.next() => next = Some(id),
            }
            if !swept && link.synced() {
                // Once everything is listed: every worker, for its node
                // readiness and its offline state after a restart.
                match workers_db::presence(hub.db()).await {
                    Ok(all) => {
                        for (id, online, ever) in &all {
                            if !online && *ever {
                                r.presence
                                    .offline_since
                                    .entry(id.clone())
                                    .or_insert_with(Instant::now);
                            }
                        }
                        queue.resync(all.into_iter().map(|(id, ..)| id));
                        swept = true;
                    }
                    Err(e) => tracing::warn!(error = %e, "cluster link: could not list workers"),
                }
            }
            if let Some(id) = next {
                // Retried by the queue with backoff (`error_policy`).
                let _ = queue.process(r, id).await;
            }
        }
    }

    /// Whether the offline taint is due on this worker's node now; None
    /// in a full disruption, when the taints stay as they are.
    fn offline_taint_due(&self, id: &str) -> Option<bool> {
        let presence = &self.presence;
        let Some(due) = presence.due(id, self.settings()) else {
            return Some(false);
        };
        if due > Instant::now() {
            return Some(false);
        }
        let ix = self.link.index();
        let linked = ix.counts().1.max(1);
        let offline = presence
            .offline_since
            .keys()
            .filter(|w| ix.node_of(w).is_some())
            .count();
        if offline > 2 && offline as f64 / linked as f64 > DISRUPTION_SHARE {
            tracing::warn!(
                offline,
                linked,
                "most workers are offline: holding back offline taints"
            );
            return None;
        }
        Some(true)
    }

    /// One pass over worker `id`'s node.
    async fn reconcile_worker(&mut self, id: &str) -> anyhow::Result<Action> {
        let hub = &self.hub.clone();
        let Some(client) = self.client() else {
            return Ok(Action::Done);
        };
        let nodes: Api<Node> = Api::all(client.clone());
        let row = workers_db::by_id(hub.db().read(), id).await?;
        if let Some(r) = row.as_ref().filter(|r| !r.kubernetes_node.is_empty()) {
            self.link.index_mut().name_node(&r.kubernetes_node, id);
        }
        let node = {
            let ix = self.link.index();
            ix.node_of(id)
                .or_else(|| {
                    row.as_ref()
                        .filter(|r| !r.kubernetes_node.is_empty())
                        .and_then(|r| ix.node(&r.kubernetes_node))
                })
                .cloned()
        };
        let Some(row) = row else {
            // The worker was deleted: the drain loop cordons and drains its
            // node, then deletes the node object.
            if let Some(n) = node
                && self
                    .nodes
                    .drain_job(id)
                    .is_none_or(|j| j.retire_by.is_none())
            {
                let by = tokio::time::Instant::now() + RETIRE_DRAIN_TIMEOUT;
                self.nodes.start_drain(id, &n.name, Some(by));
            }
            return Ok(Action::Done);
        };
        if self.link.synced() {
            let (ready, reason) = node
                .as_ref()
                .map_or((false, NODE_NOT_JOINED.to_owned()), |n| n.ready.clone());
            if row.node_ready != ready || row.node_reason != reason {
                change_state(
                    hub,
                    id,
                    StateChange {
                        node: Some((ready, &reason)),
                        ..Default::default()
                    },
                )
                .await?;
            }
        }
        let Some(mut node) = node else {
            return Ok(Action::Done);
        };

        if let Some(updated) = self.apply_labels_and_cordon(&nodes, &row, &node).await? {
            node = updated;
        }
        let offline = !row.online
            && self
                .offline_taint_due(id)
                .unwrap_or_else(|| node.own_taints.iter().any(|t| t.key == OFFLINE_TAINT_KEY));
        let name = node.name.clone();
        self.patch_taints(&nodes, &row, node, offline).await?;
        let show_later = self.show_node_changes(&row);
        // After the cordon above, so evicted pods land elsewhere.
        if row.maintenance {
            self.nodes.ensure_drain(id, &name);
        } else {
            self.nodes.cancel_drain(hub, id);
        }
        Ok(show_later.map_or(Action::Done, Action::RequeueAfter))
    }

    async fn apply_labels_and_cordon(
        &self,
        nodes: &Api<Node>,
        row: &WorkerRow,
        node: &NodeView,
    ) -> anyhow::Result<Option<NodeView>> {
        let mut labels: BTreeMap<String, String> =
            serde_json::from_str(&row.labels).unwrap_or_default();
        labels.insert(WORKER_ID_LABEL.to_owned(), row.id.clone());
        let cordon = row.cordoned || row.maintenance;
        let have = &node.node.labels;
        let labels_ok = labels.iter().all(|(k, v)| have.get(k) == Some(v))
            && node.own_labels.iter().all(|k| labels.contains_key(k));
        let cordon_ok = if cordon {
            node.node.unschedulable && node.owns_unschedulable
        } else {
            !node.owns_unschedulable
        };
        if labels_ok && cordon_ok {
            return Ok(None);
        }
        let mut body = json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": { "name": node.name, "labels": labels },
        });
        if cordon {
            body["spec"] = json!({ "unschedulable": true });
        }
        let updated = nodes
            .patch(
                &node.name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await?;
        tracing::info!(worker_id = %row.id, node = %node.name, cordon, "applied labels and cordon to the node");
        Ok(Some(self.observe(&updated)))
    }

    /// Records a node the API server answered with, ahead of its watch
    /// event, so the next comparison sees it.
    fn observe(&self, n: &Node) -> NodeView {
        let v = NodeView::of(n, now());
        self.link.index_mut().put_node(v.clone());
        v
    }

    async fn patch_taints(
        &self,
        nodes: &Api<Node>,
        row: &WorkerRow,
        mut node: NodeView,
        offline: bool,
    ) -> anyhow::Result<()> {
        let mut desired: Vec<TaintJson> = serde_json::from_str(&row.taints).unwrap_or_default();
        if offline {
            desired.push(TaintJson {
                key: OFFLINE_TAINT_KEY.into(),
                value: String::new(),
                effect: "NoExecute".into(),
            });
        }
        let mut own: Vec<TaintKey> = desired
            .iter()
            .map(|t| TaintKey {
                key: t.key.clone(),
                effect: t.effect.clone(),
            })
            .collect();
        own.sort();
        own.dedup();
        for attempt in 0.. {
            let current = &node.node.taints;
            let present = desired.iter().all(|d| {
                current
                    .iter()
                    .any(|t| t.key == d.key && t.effect == d.effect && t.value == d.value)
            });
            let mut recorded = node.own_taints.clone();
            recorded.sort();
            let stray = node.own_taints.iter().any(|o| {
                !own.contains(o)
                    && current
                        .iter()
                        .any(|t| t.key == o.key && t.effect == o.effect)
            });
            if present && !stray && recorded == own {
                return Ok(());
            }
            // Everyone else's taints as they are, then ours.
            let mut taints: Vec<serde_json::Value> = current
                .iter()
                .filter(|t| {
                    let k = TaintKey {
                        key: t.key.clone(),
                        effect: t.effect.clone(),
                    };
                    !own.contains(&k) && !node.own_taints.contains(&k)
                })
                .map(|t| taint_json(&t.key, &t.value, &t.effect, None))
                .collect();
            let stamp = now();
            for d in &desired {
                let added = (d.effect == "NoExecute").then(|| rfc3339(stamp.seconds));
                taints.push(taint_json(&d.key, &d.value, &d.effect, added));
            }
            let patch = json!({
                "metadata": {
                    "resourceVersion": node.resource_version,
                    "annotations": { OWN_TAINTS_ANNOTATION: serde_json::to_string(&own)? },
                },
                "spec": { "taints": taints },
            });
            let params = PatchParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..Default::default()
            };
            match nodes
                .patch(&node.name, &params, &Patch::Merge(&patch))
                .await
            {
                Ok(updated) => {
                    tracing::info!(worker_id = %row.id, node = %node.name, offline, taints = own.len(), "set the node's taints");
                    self.observe(&updated);
                    return Ok(());
                }
                Err(kube::Error::Api(s)) if s.is_conflict() && attempt < 3 => {
                    // Someone wrote the node since we saw it: read it again.
                    let fresh = nodes.get(&node.name).await?;
                    node = self.observe(&fresh);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Tells this replica's watchers when what the API shows of a worker's
    /// node changed (conditions, taints, figures; not the kubelet's
    /// heartbeat times), at most once per [`SHOW_EVERY`] per worker; a
    /// change within that is shown when it has passed: the answer is when
    /// to look again.
    fn show_node_changes(&mut self, row: &WorkerRow) -> Option<Duration> {
        let mut f = self.link.figures(&row.id)?;
        let (hub, presence) = (&self.hub, &mut self.presence);
        f.node.observed_at = None;
        for c in &mut f.node.conditions {
            c.last_heartbeat_at = None;
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        std::hash::Hash::hash(&prost::Message::encode_to_vec(&f.node), &mut h);
        std::hash::Hash::hash(
            &format!("{:?}{:?}{:?}", f.capacity, f.allocatable, f.allocated),
            &mut h,
        );
        let print = std::hash::Hasher::finish(&h);
        let now = Instant::now();
        match presence.shown.get(&row.id) {
            Some((p, _)) if *p == print => None,
            Some((_, at)) if now.duration_since(*at) < SHOW_EVERY => {
                Some(SHOW_EVERY - now.duration_since(*at))
            }
            _ => {
                presence.shown.insert(row.id.clone(), (print, now));
                hub.publish_here(row);
                None
            }
        }
    }
}

/// Remembers when a worker went offline (and forgets it when it returns).
fn track(p: &mut Presence, w: &pb::Worker) {
    if w.online {
        p.offline_since.remove(&w.id);
    } else if w.status != pb::WorkerStatus::Pending as i32 {
        p.offline_since
            .entry(w.id.clone())
            .or_insert_with(Instant::now);
    }
}

fn taint_json(
    key: &str,
    value: &str,
    effect: &str,
    time_added: Option<String>,
) -> serde_json::Value {
    let mut t = json!({ "key": key, "effect": effect });
    if !value.is_empty() {
        t["value"] = json!(value);
    }
    if let Some(at) = time_added {
        t["timeAdded"] = json!(at);
    }
    t
}

/// Unix seconds as RFC 3339 in UTC, as the API writes times.
fn rfc3339(seconds: i64) -> String {
    k8s_openapi::jiff::Timestamp::from_second(seconds).map_or_else(
        |_| "1970-01-01T00:00:00Z".into(),
        |t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
    )
}
