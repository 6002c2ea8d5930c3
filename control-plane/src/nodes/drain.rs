//! Maintenance drains: every pod but DaemonSet and mirror pods leaves the
//! node through the Eviction API, so PodDisruptionBudgets are respected
//! (a refused eviction is retried; the worker shows the budget's words).
//!
//! The node is cordoned by the reconciler (maintenance means
//! `spec.unschedulable`), so evicted pods are rescheduled elsewhere. The
//! drain ends DONE when no such pod is left, CANCELLED when maintenance
//! ends first, FAILED at once when the cluster refuses it (401 or 403: no
//! retry fixes credentials or RBAC), the refusal in its reason.
//!
//! The drains run on the link's drain queue (`crate::workqueue`, keyed by
//! worker id): one pending round per drain, never two at once, and the
//! queue's backoff with jitter after API errors ([`DrainLoop`]).

use std::{collections::HashMap, time::Duration};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::Eviction;
use kube::{
    Api,
    api::{ListParams, ObjectMeta, PostParams},
};
use minispod_proto::v1 as pb;

use tokio::time::Instant;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use super::{Nodes, now};
use crate::{
    cluster::{ClusterLink, FIELD_MANAGER},
    workers::{hub::FleetHub, queries as workers_db},
    workqueue::{Action, Reconcile},
};

/// Pause between rounds while pods are still leaving.
const ROUND: Duration = Duration::from_millis(500);
/// Pause after a PodDisruptionBudget refused an eviction.
const BLOCKED_RETRY: Duration = Duration::from_secs(2);

/// Whether a pod stays on a drained node: DaemonSet pods (the DaemonSet
/// would put them right back, as `kubectl drain --ignore-daemonsets`
/// leaves them), mirror pods (the kubelet's static pods), finished pods.
fn stays(p: &Pod) -> bool {
    let daemon = p
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == "DaemonSet" && o.controller == Some(true));
    let mirror = p
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"));
    let finished = matches!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    );
    daemon || mirror || finished
}

/// What a drain is asked to do; set by the node reconciler, read by the
/// drain loop.
#[derive(Debug, Clone)]
pub(crate) struct DrainJob {
    /// The node drained.
    pub node: String,
    /// Set for a deleted worker's node: cordon it first, and delete it once
    /// drained, or at this time anyway (as `kubectl drain --timeout`).
    pub retire_by: Option<Instant>,
}

/// Whether the cluster refused us for good: 401 (our credentials are not
/// accepted) or 403 (RBAC denies it). No retry fixes these without a
/// person, so the drain ends FAILED with the API server's words.
fn refused(e: &kube::Error) -> Option<String> {
    match e {
        kube::Error::Api(s) if s.code == 401 || s.code == 403 => Some(if s.message.is_empty() {
            format!("{} {}", s.code, s.reason)
        } else {
            s.message.clone()
        }),
        _ => None,
    }
}

/// What the drain loop remembers of one drain between its rounds.
#[derive(Debug, Default)]
struct Round {
    /// Pods this drain evicted.
    evicted: i32,
    /// What watchers were last shown.
    announced: Option<(i32, i32, i32, String)>,
    /// A deleted worker's node was cordoned.
    cordoned: bool,
}

/// The drain loop: one round per key (a worker id) at a time, from the
/// link's drain queue. A round lists the node's pods and asks for the
/// eviction of those that must leave; then the key comes back after
/// [`ROUND`] while pods are leaving, after [`BLOCKED_RETRY`] while a
/// PodDisruptionBudget refuses, or after the queue's backoff (exponential,
/// with jitter) when the API server failed. A 401 or 403 ends the drain
/// FAILED at once, its reason the API server's refusal.
pub(super) struct DrainLoop {
    nodes: Nodes,
    link: ClusterLink,
    hub: FleetHub,
    client: kube::Client,
    rounds: HashMap<String, Round>,
}

impl Reconcile for DrainLoop {
    type Key = String;
    type Error = anyhow::Error;

    async fn reconcile(&mut self, id: &String) -> anyhow::Result<Action> {
        self.round(id).await
    }

    fn error_policy(&mut self, id: &String, e: &anyhow::Error, backoff: Duration) -> Action {
        tracing::warn!(worker_id = %id, error = %format!("{e:#}"), retry_in_ms = backoff.as_millis() as u64,
            "drain: a round failed; retrying");
        // A deleted worker's node is deleted at its deadline, backoff or not.
        let left = self
            .nodes
            .drain_job(id)
            .and_then(|j| j.retire_by)
            .map(|by| by.saturating_duration_since(Instant::now()));
        Action::RequeueAfter(left.map_or(backoff, |l| l.min(backoff)))
    }
}

impl DrainLoop {
    /// The drains of `nodes`, written through `client`.
    pub(super) fn new(nodes: Nodes, hub: FleetHub, client: kube::Client) -> DrainLoop {
        DrainLoop {
            link: nodes.link().clone(),
            nodes,
            hub,
            client,
            rounds: HashMap::new(),
        }
    }

    /// Runs the loop until the hub closes.
    pub(super) async fn run(mut self) {
        let queue = self.nodes.inner.drain_queue.clone();
        loop {
            let id = tokio::select! {
                () = self.hub.closed() => return,
                id = queue.next() => id,
            };
            // Retried by the queue (`error_policy`).
            let _ = queue.process(&mut self, id).await;
        }
    }

    /// Ends the drain of `id`: forgets its round and its job.
    fn finish(&mut self, id: &str) {
        self.rounds.remove(id);
        self.nodes.set_drain_job(id, None);
    }

    async fn round(&mut self, id: &str) -> anyhow::Result<Action> {
        let Some(job) = self.nodes.drain_job(id) else {
            self.rounds.remove(id);
            return Ok(Action::Done);
        };
        let Some(mut progress) = self.nodes.drain_of(id) else {
            self.finish(id);
            return Ok(Action::Done);
        };
        let node = job.node.as_str();
        let state = pb::DrainState::try_from(progress.state).unwrap_or_default();
        if let Some(by) = job.retire_by {
            let round = self.rounds.entry(id.to_owned()).or_default();
            if !round.cordoned {
                round.cordoned = true;
                self.cordon_for_retirement(node).await;
            }
            let over = matches!(state, pb::DrainState::Done | pb::DrainState::Failed);
            if over || Instant::now() >= by {
                if !over {
                    tracing::warn!(
                        node,
                        "pods still on the node of a deleted worker after the drain timeout; deleting it anyway"
                    );
                }
                // Retried with backoff until the node is gone.
                self.delete_node_named(node).await?;
                self.nodes.set_drain(id, None);
                self.finish(id);
                return Ok(Action::Done);
            }
        } else if !matches!(state, pb::DrainState::Running | pb::DrainState::Blocked) {
            if state == pb::DrainState::Cancelled {
                tracing::info!(worker_id = id, node, "drain cancelled: maintenance ended");
            }
            self.finish(id);
            return Ok(Action::Done);
        }
        let pods: Api<Pod> = Api::all(self.client.clone());
        let on_node = ListParams::default().fields(&format!("spec.nodeName={node}"));
        // Taken out for the round (`fail` and `finish` need `self`), put
        // back when the drain goes on.
        let mut round = self.rounds.remove(id).unwrap_or_default();
        if round.evicted == 0 && round.announced.is_none() {
            tracing::info!(worker_id = id, node, "draining the node for maintenance");
        }
        let mut next = Ok(Action::RequeueAfter(ROUND));
        match pods.list(&on_node).await {
            Err(e) => {
                if let Some(why) = refused(&e) {
                    return Ok(self.fail(id, round, progress, format!("list pods: {why}")));
                }
                progress.error = format!("list pods: {e}");
                next = Err(anyhow::Error::new(e).context("list the node's pods"));
            }
            Ok(list) => {
                let leaving: Vec<&Pod> = list.items.iter().filter(|p| !stays(p)).collect();
                progress.pods_remaining = leaving.len() as i32;
                progress.pods_to_evict = progress
                    .pods_to_evict
                    .max(round.evicted + leaving.len() as i32);
                if leaving.is_empty() {
                    progress.state = pb::DrainState::Done as i32;
                    progress.error.clear();
                    progress.finished_at = Some(now());
                    let evicted = round.evicted;
                    progress.pods_evicted = evicted;
                    self.nodes.set_drain(id, Some(progress));
                    self.nodes.announce(&self.hub, id);
                    tracing::info!(worker_id = id, node, evicted, "node drained");
                    if job.retire_by.is_some() {
                        // Back at once to delete the node.
                        self.rounds.insert(id.to_owned(), round);
                        return Ok(Action::RequeueAfter(Duration::ZERO));
                    }
                    self.finish(id);
                    return Ok(Action::Done);
                }
                progress.state = pb::DrainState::Running as i32;
                for p in leaving {
                    if p.metadata.deletion_timestamp.is_some() {
                        continue;
                    }
                    let ns = p.metadata.namespace.as_deref().unwrap_or("default");
                    let name = p.metadata.name.as_deref().unwrap_or_default();
                    let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
                    match evict(&api, ns, name).await {
                        Ok(_) => {
                            round.evicted += 1;
                            progress.error.clear();
                        }
                        Err(kube::Error::Api(s)) if s.is_not_found() => {}
                        Err(kube::Error::Api(s)) if s.code == 429 => {
                            // A PodDisruptionBudget says not now: the API
                            // server is fine, so a steady pace, as kubectl
                            // drain's, not a backoff.
                            progress.state = pb::DrainState::Blocked as i32;
                            progress.error = format!("{ns}/{name}: {}", budget_words(&s));
                            if next.is_ok() {
                                next = Ok(Action::RequeueAfter(BLOCKED_RETRY));
                            }
                        }
                        Err(e) => {
                            if let Some(why) = refused(&e) {
                                progress.pods_evicted = round.evicted;
                                let why = format!("evict {ns}/{name}: {why}");
                                return Ok(self.fail(id, round, progress, why));
                            }
                            progress.error = format!("{ns}/{name}: {e}");
                            next = Err(anyhow::Error::new(e).context(format!("evict {ns}/{name}")));
                        }
                    }
                }
                progress.pods_evicted = round.evicted;
            }
        }
        // Maintenance may have ended while this round ran.
        if self
            .nodes
            .drain_of(id)
            .is_none_or(|d| d.state == pb::DrainState::Cancelled as i32)
        {
            self.finish(id);
            return Ok(Action::Done);
        }
        self.nodes.set_drain(id, Some(progress.clone()));
        let seen = Some((
            progress.state,
            progress.pods_evicted,
            progress.pods_remaining,
            progress.error,
        ));
        if round.announced != seen {
            round.announced = seen;
            self.nodes.announce(&self.hub, id);
        }
        self.rounds.insert(id.to_owned(), round);
        next
    }

    /// Ends the drain FAILED with `why` (the cluster refused us).
    fn fail(
        &mut self,
        id: &str,
        round: Round,
        mut progress: pb::WorkerDrain,
        why: String,
    ) -> Action {
        tracing::warn!(worker_id = id, reason = %why, "drain failed: the cluster refused it");
        progress.state = pb::DrainState::Failed as i32;
        progress.error = format!("the cluster refused the drain: {why}");
        progress.finished_at = Some(now());
        self.nodes.set_drain(id, Some(progress));
        self.nodes.announce(&self.hub, id);
        if self
            .nodes
            .drain_job(id)
            .is_some_and(|j| j.retire_by.is_some())
        {
            // A deleted worker's node is still deleted (that may be allowed).
            self.rounds.insert(id.to_owned(), round);
            return Action::RequeueAfter(Duration::ZERO);
        }
        self.finish(id);
        Action::Done
    }
}

impl DrainLoop {
    /// Cordons a deleted worker's node before its drain (a failure is
    /// logged: the drain and the deletion go on).
    async fn cordon_for_retirement(&self, node: &str) {
        let Some(client) = self.link.client() else {
            return;
        };
        let nodes: Api<Node> = Api::all(client.clone());
        let cordon = json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": { "name": node },
            "spec": { "unschedulable": true },
        });
        if let Err(e) = nodes
            .patch(
                node,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&cordon),
            )
            .await
        {
            tracing::warn!(node, error = %e, "could not cordon the node of a deleted worker");
        }
    }

    /// Deletes a deleted worker's node (gone already is fine).
    async fn delete_node_named(&self, node: &str) -> anyhow::Result<()> {
        let Some(client) = self.link.client() else {
            return Ok(());
        };
        let nodes: Api<Node> = Api::all(client.clone());
        match nodes.delete(node, &Default::default()).await {
            Ok(_) => {
                tracing::info!(node, "deleted the node of a deleted worker");
                self.link.index_mut().remove_node(node);
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.is_not_found() => Ok(()),
            Err(e) => Err(anyhow::Error::new(e).context(format!("delete the node {node}"))),
        }
    }
}

impl Nodes {
    /// Starts a drain of `node` for worker `id` unless one is running, done
    /// or failed (a failed drain stays FAILED, its reason shown, until
    /// maintenance ends: entering it again drains again); called by the
    /// reconciler while the worker is in maintenance.
    pub(super) fn ensure_drain(&self, id: &str, node: &str) {
        let started = self.drain_of(id).is_some_and(|d| {
            matches!(
                pb::DrainState::try_from(d.state),
                Ok(pb::DrainState::Running
                    | pb::DrainState::Blocked
                    | pb::DrainState::Done
                    | pb::DrainState::Failed)
            )
        });
        if started || !self.link().is_linked() {
            return;
        }
        self.start_drain(id, node, None);
    }

    /// Records a drain RUNNING and queues its first round now.
    pub(super) fn start_drain(&self, id: &str, node: &str, retire_by: Option<Instant>) {
        self.set_drain(
            id,
            Some(pb::WorkerDrain {
                state: pb::DrainState::Running as i32,
                started_at: Some(now()),
                ..Default::default()
            }),
        );
        self.set_drain_job(
            id,
            Some(DrainJob {
                node: node.to_owned(),
                retire_by,
            }),
        );
        // A new drain starts without the last one's backoff.
        self.inner.drain_queue.forget(&id.to_owned());
        self.inner.drain_queue.add_now(id.to_owned());
    }

    /// Ends a drain because maintenance ended first.
    pub(super) fn cancel_drain(&self, hub: &FleetHub, id: &str) {
        let Some(mut d) = self.drain_of(id) else {
            return;
        };
        if self.drain_job(id).is_some_and(|j| j.retire_by.is_some()) {
            return;
        }
        if matches!(
            pb::DrainState::try_from(d.state),
            Ok(pb::DrainState::Running | pb::DrainState::Blocked)
        ) {
            d.state = pb::DrainState::Cancelled as i32;
            d.finished_at = Some(now());
            self.set_drain(id, Some(d));
            self.announce(hub, id);
            // Its loop lets go of it at once, backoff or not.
            self.inner.drain_queue.add_now(id.to_owned());
        } else {
            // A finished drain is forgotten when maintenance ends, so the
            // next maintenance drains again.
            self.set_drain(id, None);
        }
    }

    /// Tells watchers the worker changed (its drain did).
    fn announce(&self, hub: &FleetHub, id: &str) {
        let hub = hub.clone();
        let id = id.to_owned();
        tokio::spawn(async move {
            if let Ok(Some(row)) = workers_db::by_id(hub.db().read(), &id).await {
                hub.publish(&row);
            }
        });
    }
}

/// POSTs a policy/v1 Eviction for the pod. Not kube's `Api::evict`: its
/// body (kube 5.0) has no apiVersion and kind and names its options
/// `delete_options`, a field the Eviction schema does not have, which the
/// schema check of the test command caught.
async fn evict(api: &Api<Pod>, namespace: &str, name: &str) -> kube::Result<kube::core::Status> {
    let eviction = Eviction {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            ..Default::default()
        },
        delete_options: None,
    };
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    // k8s-openapi writes apiVersion and kind with the object.
    api.create_subresource("eviction", name, &params, &eviction)
        .await
}

/// The disruption budget's own words from a refused eviction: its cause's
/// message ("The disruption budget web needs 1 healthy pods and has 1
/// currently") or the status message.
fn budget_words(s: &kube::core::Status) -> String {
    s.details
        .as_ref()
        .and_then(|d| {
            d.causes
                .iter()
                .find_map(|c| (!c.message.is_empty()).then(|| c.message.clone()))
        })
        .unwrap_or_else(|| s.message.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16, reason: &str, message: &str) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure(message, reason)
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn unauthorized_and_forbidden_end_a_drain_and_nothing_else_does() {
        let forbidden = api_error(
            403,
            "Forbidden",
            "pods \"web-1\" is forbidden: User \"system:serviceaccount:minispod-system:minispod-control-plane\" cannot create resource \"pods/eviction\"",
        );
        assert!(refused(&forbidden).is_some_and(|w| w.contains("cannot create resource")));
        assert_eq!(
            refused(&api_error(401, "Unauthorized", "")).as_deref(),
            Some("401 Unauthorized")
        );
        for (code, reason) in [
            (429, "TooManyRequests"),
            (500, "InternalError"),
            (404, "NotFound"),
        ] {
            assert_eq!(refused(&api_error(code, reason, "x")), None, "{code}");
        }
    }
}
