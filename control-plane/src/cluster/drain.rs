//! Maintenance drains: every pod but DaemonSet and mirror pods leaves the
//! node through the Eviction API, so PodDisruptionBudgets are respected
//! (a refused eviction is retried; the worker shows the budget's words).
//!
//! The node is cordoned by the reconciler (maintenance means
//! `spec.unschedulable`), so evicted pods are rescheduled elsewhere. The
//! drain ends DONE when no such pod is left, CANCELLED when maintenance
//! ends first, FAILED on a refusal no retry can fix (e.g. RBAC).

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::Eviction;
use kube::{
    Api,
    api::{ListParams, ObjectMeta, PostParams},
};
use minispod_proto::v1 as pb;

use super::{ClusterLink, now};
use crate::workers::{hub::FleetHub, queries as workers_db};

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

impl ClusterLink {
    /// Starts a drain of `node` for worker `id` unless one is running or
    /// done; called by the reconciler while the worker is in maintenance.
    pub(super) fn ensure_drain(&self, hub: &FleetHub, id: &str, node: &str) {
        let running = self.drain_of(id).is_some_and(|d| {
            matches!(
                pb::DrainState::try_from(d.state),
                Ok(pb::DrainState::Running | pb::DrainState::Blocked | pb::DrainState::Done)
            )
        });
        if running {
            return;
        }
        let Some(client) = self.client().cloned() else {
            return;
        };
        self.set_drain(
            id,
            Some(pb::WorkerDrain {
                state: pb::DrainState::Running as i32,
                started_at: Some(now()),
                ..Default::default()
            }),
        );
        let (link, hub, id, node) = (self.clone(), hub.clone(), id.to_owned(), node.to_owned());
        tokio::spawn(async move {
            link.drain(&hub, client, &id, &node).await;
        });
    }

    /// Ends a drain because maintenance ended first.
    pub(super) fn cancel_drain(&self, hub: &FleetHub, id: &str) {
        let Some(mut d) = self.drain_of(id) else {
            return;
        };
        if matches!(
            pb::DrainState::try_from(d.state),
            Ok(pb::DrainState::Running | pb::DrainState::Blocked)
        ) {
            d.state = pb::DrainState::Cancelled as i32;
            d.finished_at = Some(now());
            self.set_drain(id, Some(d));
            self.announce(hub, id);
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

    pub(super) async fn drain(&self, hub: &FleetHub, client: kube::Client, id: &str, node: &str) {
        let pods: Api<Pod> = Api::all(client.clone());
        let on_node = ListParams::default().fields(&format!("spec.nodeName={node}"));
        let mut evicted = 0;
        let mut announced: Option<pb::WorkerDrain> = None;
        tracing::info!(worker_id = id, node, "draining the node for maintenance");
        loop {
            let Some(mut progress) = self.drain_of(id) else {
                return;
            };
            if progress.state == pb::DrainState::Cancelled as i32 {
                tracing::info!(worker_id = id, node, "drain cancelled: maintenance ended");
                return;
            }
            let mut wait = ROUND;
            match pods.list(&on_node).await {
                Err(e) => {
                    progress.error = format!("list pods: {e}");
                    wait = BLOCKED_RETRY;
                }
                Ok(list) => {
                    let leaving: Vec<&Pod> = list.items.iter().filter(|p| !stays(p)).collect();
                    progress.pods_remaining = leaving.len() as i32;
                    progress.pods_to_evict =
                        progress.pods_to_evict.max(evicted + leaving.len() as i32);
                    if leaving.is_empty() {
                        progress.state = pb::DrainState::Done as i32;
                        progress.error.clear();
                        progress.finished_at = Some(now());
                        self.set_drain(id, Some(progress));
                        self.announce(hub, id);
                        tracing::info!(worker_id = id, node, evicted, "node drained");
                        return;
                    }
                    progress.state = pb::DrainState::Running as i32;
                    for p in leaving {
                        if p.metadata.deletion_timestamp.is_some() {
                            continue;
                        }
                        let ns = p.metadata.namespace.as_deref().unwrap_or("default");
                        let name = p.metadata.name.as_deref().unwrap_or_default();
                        let api: Api<Pod> = Api::namespaced(client.clone(), ns);
                        match evict(&api, ns, name).await {
                            Ok(_) => {
                                evicted += 1;
                                progress.error.clear();
                            }
                            Err(kube::Error::Api(s)) if s.is_not_found() => {}
                            Err(kube::Error::Api(s)) if s.code == 429 => {
                                // A PodDisruptionBudget says not now.
                                progress.state = pb::DrainState::Blocked as i32;
                                progress.error = format!("{ns}/{name}: {}", budget_words(&s));
                                wait = BLOCKED_RETRY;
                            }
                            Err(kube::Error::Api(s)) if s.code == 403 || s.code == 401 => {
                                progress.state = pb::DrainState::Failed as i32;
                                progress.error = format!("{ns}/{name}: {}", s.message);
                                progress.finished_at = Some(now());
                                self.set_drain(id, Some(progress));
                                self.announce(hub, id);
                                tracing::warn!(
                                    worker_id = id,
                                    node,
                                    "drain failed: eviction forbidden"
                                );
                                return;
                            }
                            Err(e) => {
                                progress.error = format!("{ns}/{name}: {e}");
                                wait = BLOCKED_RETRY;
                            }
                        }
                    }
                    progress.pods_evicted = evicted;
                }
            }
            // Maintenance may have ended while this round ran.
            if self
                .drain_of(id)
                .is_some_and(|d| d.state == pb::DrainState::Cancelled as i32)
            {
                return;
            }
            self.set_drain(id, Some(progress.clone()));
            let seen = announced
                .as_ref()
                .map(|a| (a.state, a.pods_evicted, a.pods_remaining, &a.error));
            if seen
                != Some((
                    progress.state,
                    progress.pods_evicted,
                    progress.pods_remaining,
                    &progress.error,
                ))
            {
                self.announce(hub, id);
                announced = Some(progress);
            }
            tokio::time::sleep(wait).await;
        }
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
        field_manager: Some(super::FIELD_MANAGER.into()),
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
