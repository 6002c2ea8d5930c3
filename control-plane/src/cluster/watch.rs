//! The Node, Pod and PersistentVolumeClaim watches, and the link's state.
//!
//! Each watch is kube-runtime's watcher (list, then watch from the list's
//! resourceVersion, relist on 410 Gone). Its events land in the index; the
//! workers they touch go to the reconciler. An error of the node or pod
//! watch marks the link LOST and the watch is polled again after a backoff
//! (0.2 s doubling to 10 s); the first event after that marks it CONNECTED
//! again. The claim watch only adds the storage of the volumes provisioned
//! on each node to its allocated figures: its failure (say, RBAC not
//! re-applied after an upgrade) is a WARN, retried with the same backoff,
//! and leaves the link's state alone.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, PersistentVolumeClaim, Pod};
use kube::{
    Api,
    runtime::watcher::{self, Event},
};
use minispod_proto::v1 as pb;
use tokio_stream::StreamExt;

use super::{
    ClusterLink, now,
    view::{NodeView, PodView, claim_view},
};

/// Shortest and longest wait before polling a failed watch again.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(200), Duration::from_secs(10));

/// Pods that take nothing from a node are left out by the API server:
/// unscheduled ones and finished ones (a pod that finishes leaves the
/// selection, which the watch reports as a deletion).
const POD_FIELDS: &str = "spec.nodeName!=,status.phase!=Succeeded,status.phase!=Failed";

impl ClusterLink {
    /// Starts the watches; nothing when no cluster is linked.
    pub fn spawn_watches(&self) -> Vec<tokio::task::JoinHandle<()>> {
        let Some(client) = self.client().cloned() else {
            return Vec::new();
        };
        vec![
            tokio::spawn(self.clone().watch_nodes(Api::all(client.clone()))),
            tokio::spawn(self.clone().watch_pods(Api::all(client.clone()))),
            tokio::spawn(self.clone().watch_claims(Api::all(client.clone()))),
            tokio::spawn(self.clone().probe_version(client)),
        ]
    }

    /// Records a watch's failure; returns how long to wait before polling it again.
    fn watch_failed(&self, what: &str, e: &watcher::Error, backoff: &mut Duration) -> Duration {
        self.set_state(pb::ClusterLinkState::Lost, format!("{what} watch: {e}"));
        let wait = *backoff;
        *backoff = (*backoff * 2).min(BACKOFF.1);
        wait
    }

    /// Records a watch's success.
    fn watch_ok(&self, backoff: &mut Duration) {
        *backoff = BACKOFF.0;
        if self.state() != pb::ClusterLinkState::Connected && self.synced_flags() == (true, true) {
            self.set_state(pb::ClusterLinkState::Connected, String::new());
            // What failed while the link was down is tried again now,
            // backoff or not: the link is back.
            let workers = self.index().workers();
            self.enqueue_now(workers);
        }
    }

    fn synced_flags(&self) -> (bool, bool) {
        *self.inner.synced.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_synced(&self, nodes: Option<bool>, pods: Option<bool>) {
        let mut s = self.inner.synced.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = nodes {
            s.0 = n;
        }
        if let Some(p) = pods {
            s.1 = p;
        }
    }

    async fn watch_nodes(self, api: Api<Node>) {
        let mut stream = Box::pin(watcher::watcher(api, watcher::Config::default()));
        let mut listing: Vec<NodeView> = Vec::new();
        let mut backoff = BACKOFF.0;
        while let Some(event) = stream.next().await {
            match event {
                Err(e) => {
                    let wait = self.watch_failed("node", &e, &mut backoff);
                    tokio::time::sleep(wait).await;
                    continue;
                }
                Ok(Event::Init) => listing.clear(),
                Ok(Event::InitApply(n)) => listing.push(NodeView::of(&n, now())),
                Ok(Event::InitDone) => {
                    let touched = self.index_mut().replace_nodes(std::mem::take(&mut listing));
                    self.set_synced(Some(true), None);
                    self.enqueue(touched);
                    // The reconciler sweeps every worker once both are listed.
                    self.inner.wake.notify_one();
                }
                Ok(Event::Apply(n)) => {
                    let touched = self.index_mut().put_node(NodeView::of(&n, now()));
                    self.enqueue(touched);
                }
                Ok(Event::Delete(n)) => {
                    let name = n.metadata.name.unwrap_or_default();
                    let touched = self.index_mut().remove_node(&name);
                    self.enqueue(touched);
                }
            }
            self.watch_ok(&mut backoff);
        }
    }

    async fn watch_pods(self, api: Api<Pod>) {
        let config = watcher::Config::default().fields(POD_FIELDS);
        let mut stream = Box::pin(watcher::watcher(api, config));
        let mut listing: Vec<(String, PodView)> = Vec::new();
        let mut backoff = BACKOFF.0;
        let key = |p: &Pod| {
            format!(
                "{}/{}",
                p.metadata.namespace.as_deref().unwrap_or_default(),
                p.metadata.name.as_deref().unwrap_or_default()
            )
        };
        while let Some(event) = stream.next().await {
            match event {
                Err(e) => {
                    let wait = self.watch_failed("pod", &e, &mut backoff);
                    tokio::time::sleep(wait).await;
                    continue;
                }
                Ok(Event::Init) => listing.clear(),
                Ok(Event::InitApply(p)) => {
                    if let Some(v) = PodView::of(&p) {
                        listing.push((key(&p), v));
                    }
                }
                Ok(Event::InitDone) => {
                    let touched = self.index_mut().replace_pods(std::mem::take(&mut listing));
                    self.set_synced(None, Some(true));
                    self.enqueue(touched);
                }
                Ok(Event::Apply(p)) => {
                    let touched = self.index_mut().put_pod(key(&p), PodView::of(&p));
                    self.enqueue(touched);
                }
                Ok(Event::Delete(p)) => {
                    let touched = self.index_mut().put_pod(key(&p), None);
                    self.enqueue(touched);
                }
            }
            self.watch_ok(&mut backoff);
        }
    }

    async fn watch_claims(self, api: Api<PersistentVolumeClaim>) {
        let mut stream = Box::pin(watcher::watcher(api, watcher::Config::default()));
        let mut listing: Vec<(String, PodView)> = Vec::new();
        let mut backoff = BACKOFF.0;
        let mut failing = false;
        let key = |c: &PersistentVolumeClaim| {
            format!(
                "{}/{}",
                c.metadata.namespace.as_deref().unwrap_or_default(),
                c.metadata.name.as_deref().unwrap_or_default()
            )
        };
        while let Some(event) = stream.next().await {
            let touched = match event {
                Err(e) => {
                    if !failing {
                        tracing::warn!(
                            error = %e,
                            "the claim watch failed: workers' allocated storage leaves out \
                             their volumes until it works (does the control plane's \
                             ClusterRole grant list and watch on persistentvolumeclaims?)"
                        );
                        failing = true;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF.1);
                    continue;
                }
                Ok(Event::Init) => {
                    listing.clear();
                    Vec::new()
                }
                Ok(Event::InitApply(c)) => {
                    if let Some(v) = claim_view(&c) {
                        listing.push((key(&c), v));
                    }
                    Vec::new()
                }
                Ok(Event::InitDone) => self
                    .index_mut()
                    .replace_claims(std::mem::take(&mut listing)),
                Ok(Event::Apply(c)) => self.index_mut().put_claim(key(&c), claim_view(&c)),
                Ok(Event::Delete(c)) => self.index_mut().put_claim(key(&c), None),
            };
            self.enqueue(touched);
            if failing {
                tracing::info!("the claim watch works again");
                failing = false;
            }
            backoff = BACKOFF.0;
        }
    }

    /// Reads the API server's version at start and whenever the link is
    /// lost: a quiet watch says nothing, so this is what notices the server
    /// is back when nothing changes in the cluster.
    async fn probe_version(self, client: kube::Client) {
        let mut backoff = BACKOFF.0;
        loop {
            let connected = self.state() == pb::ClusterLinkState::Connected;
            if connected && !self.status().server_version.is_empty() {
                backoff = BACKOFF.0;
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            match client.apiserver_version().await {
                Ok(v) => {
                    self.status().server_version = v.git_version;
                    backoff = BACKOFF.0;
                    if self.synced_flags() == (true, true) && !connected {
                        self.watch_ok(&mut backoff);
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => {
                    if self.state() != pb::ClusterLinkState::Connecting
                        || !self.status().error.is_empty()
                    {
                        self.set_state(pb::ClusterLinkState::Lost, format!("API server: {e}"));
                    } else {
                        self.status().error = format!("API server: {e}");
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF.1);
                }
            }
        }
    }
}
