//! What the cluster does for the workers: each worker's record onto its
//! Kubernetes node, and the node's readiness back into the worker's status
//! (`reconcile`), and maintenance drains through the Eviction API
//! (`drain`). A floor above the workers (it reads and writes their records)
//! and the cluster link (it reads the watched nodes and writes through the
//! client); neither of those knows of this module.
//!
//! - `reconcile`: makes each worker's node what its record says: labels
//!   and cordon by server-side apply under our field manager, our taints
//!   (including the offline NoExecute taint after the grace), node
//!   readiness into the worker's status. One [`crate::workqueue`] keyed by
//!   worker id, filled by the link's watches (`ClusterLink::feed`), the
//!   hub's worker events and the offline timers.
//! - `drain`: maintenance drains, on a work queue of their own (one round
//!   per worker at a time, backoff after API errors, FAILED at once on
//!   401/403).
//!
//! [`Nodes`] also shows a worker's drain in its record
//! ([`workers::hub::ShowNode`], set on the hub by startup).

pub mod drain;
pub mod reconcile;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use minispod_proto::v1 as pb;
use prost_types::Timestamp;

use crate::{
    cluster::ClusterLink,
    store::{now_ms, timestamp},
    workers::{self, hub::FleetHub},
    workqueue::WorkQueue,
};

/// The node reconciler's and the drains' shared state: the link, the
/// queue of workers whose node must be looked at again, and each drain's
/// progress and job. Cheap to clone.
#[derive(Clone)]
pub struct Nodes {
    inner: Arc<Inner>,
}

struct Inner {
    link: ClusterLink,
    /// Workers whose node must be looked at again, with their backoff; the
    /// link's watches feed it.
    queue: Arc<WorkQueue<String>>,
    /// Progress of each worker's drain.
    drains: Mutex<HashMap<String, pb::WorkerDrain>>,
    /// What each drain is asked to do (`drain::DrainJob`).
    drain_jobs: Mutex<HashMap<String, drain::DrainJob>>,
    /// Workers whose drain is due a round, with their backoff.
    drain_queue: Arc<WorkQueue<String>>,
}

impl std::fmt::Debug for Nodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nodes")
            .field("link", &self.inner.link)
            .finish_non_exhaustive()
    }
}

impl Nodes {
    /// The nodes of `link`'s workers; the link's watches feed its queue
    /// from now on.
    pub fn new(link: ClusterLink) -> Nodes {
        let backoff = link.settings().backoff;
        let queue = Arc::new(WorkQueue::new(backoff));
        link.feed(queue.clone());
        Nodes {
            inner: Arc::new(Inner {
                link,
                queue,
                drains: Mutex::default(),
                drain_jobs: Mutex::default(),
                drain_queue: Arc::new(WorkQueue::new(backoff)),
            }),
        }
    }

    /// The cluster link.
    pub fn link(&self) -> &ClusterLink {
        &self.inner.link
    }

    /// Starts the node reconciler and the drain loop (one call, from
    /// startup); nothing when no cluster is linked.
    pub fn spawn(&self, hub: &FleetHub) -> Vec<tokio::task::JoinHandle<()>> {
        let Some(client) = self.link().kube_client() else {
            return Vec::new();
        };
        vec![
            tokio::spawn(reconcile::NodeReconciler::new(self.clone(), hub.clone()).run()),
            tokio::spawn(drain::DrainLoop::new(self.clone(), hub.clone(), client).run()),
        ]
    }

    fn set_drain(&self, worker_id: &str, drain: Option<pb::WorkerDrain>) {
        let mut d = self.inner.drains.lock().unwrap_or_else(|p| p.into_inner());
        match drain {
            Some(v) => d.insert(worker_id.to_owned(), v),
            None => d.remove(worker_id),
        };
    }

    fn drain_job(&self, worker_id: &str) -> Option<drain::DrainJob> {
        self.inner
            .drain_jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(worker_id)
            .cloned()
    }

    fn set_drain_job(&self, worker_id: &str, job: Option<drain::DrainJob>) {
        let mut j = self
            .inner
            .drain_jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match job {
            Some(v) => j.insert(worker_id.to_owned(), v),
            None => j.remove(worker_id),
        };
    }

    fn drain_of(&self, worker_id: &str) -> Option<pb::WorkerDrain> {
        self.inner
            .drains
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(worker_id)
            .cloned()
    }
}

impl workers::hub::ShowNode for Nodes {
    /// What the link says of the worker's node, and the drain's progress.
    fn decorate(&self, w: &mut pb::Worker) {
        if !self.link().is_linked() {
            return;
        }
        if let Some(d) = self.drain_of(&w.id) {
            w.drain = Some(d);
        }
        self.link().decorate(w);
    }

    fn k3s_join_token<'a>(
        &'a self,
        worker_id: &'a str,
        ttl: std::time::Duration,
    ) -> workers::hub::JoinToken<'a> {
        Box::pin(self.link().k3s_join_token(worker_id, ttl))
    }

    fn is_linked(&self) -> bool {
        self.link().is_linked()
    }
}

/// Now as a protobuf timestamp.
fn now() -> Timestamp {
    timestamp(now_ms())
}
