//! The link to the Kubernetes (K3s) cluster the workers join.
//!
//! - `view`: what is kept of Nodes and Pods, indexed by worker, and the
//!   figures a worker record shows from them.
//! - `watch`: the Node and Pod watches that keep the index current, and the
//!   link's state (CONNECTING, CONNECTED, LOST) with backoff.
//! - `watch` also hands the ids of the workers whose node changed to the
//!   queue given by [`ClusterLink::feed`] (the node reconciler's, in
//!   `crate::nodes`, which makes each node what its worker's record says
//!   and runs the drains). The link itself knows nothing of the workers'
//!   records: a worker is the `minispod.dev/worker-id` label of a node.
//! - `api_stats`: requests and error answers per resource kind, recorded by
//!   a layer of the client (metrics, GetClusterLink).
//! - `bootstrap`: a K3s bootstrap token for each enrollment.
//! - `quantity`: Kubernetes quantities as integers (from `minispod_support`).
//!
//! Without `--kubeconfig` or `--kube-in-cluster` there is no link: the
//! worker records show what the agents report and nothing reaches a node.
//! The link never blocks the agents' streams: it reads the store and the
//! hub's events, and the streams never wait for it.

pub mod api_stats;
pub mod bootstrap;
pub mod view;
pub mod watch;

pub use minispod_support::quantity;

use std::{
    sync::{Arc, Mutex, OnceLock, RwLock},
    time::Duration,
};

use anyhow::Context;
use minispod_proto::v1 as pb;
use tokio::sync::Notify;

use crate::{
    store::{now_ms, timestamp},
    workqueue::{Backoff, WorkQueue},
};
use view::Index;

/// The field manager of every write the control plane makes to the cluster.
pub const FIELD_MANAGER: &str = "minispod-control-plane";

/// How the link is configured.
#[derive(Debug, Clone)]
pub struct LinkSettings {
    /// After this long without a stream, a worker's node gets the offline
    /// NoExecute taint.
    pub offline_taint_grace: Duration,
    /// No offline taint this soon after the control plane starts: every
    /// agent reconnects after a restart, which must not move every pod.
    pub offline_taint_after_start: Duration,
    /// How a worker whose node could not be written (or whose drain
    /// failed a round on an API error) is retried.
    pub backoff: Backoff,
}

/// Where the link is, as GetClusterLink says.
#[derive(Debug, Clone)]
struct LinkStatus {
    state: pb::ClusterLinkState,
    error: String,
    since_ms: i64,
    server_version: String,
}

/// The cluster link: a Kubernetes client, what its watches saw, and the
/// link's state. Cheap to clone.
#[derive(Clone)]
pub struct ClusterLink {
    inner: Arc<Inner>,
}

struct Inner {
    /// None when no cluster is configured.
    client: Option<kube::Client>,
    /// What the client's requests met.
    api: Arc<api_stats::ApiStats>,
    server: String,
    settings: LinkSettings,
    status: Mutex<LinkStatus>,
    index: RwLock<Index>,
    /// Which watches have listed everything since the link was (re)made:
    /// (nodes, pods).
    synced: Mutex<(bool, bool)>,
    /// Where the ids of the workers whose node changed go (the node
    /// reconciler's queue, [`ClusterLink::feed`]); dropped until then.
    queue: OnceLock<Arc<WorkQueue<String>>>,
    /// Wakes the reconciler for its sweep once the watches have listed.
    wake: Notify,
    /// sha256 (hex) of the cluster CA bundle as K3s hashes it, for secure
    /// join tokens; None when the credentials name no CA.
    cluster_ca_hash: Option<String>,
}

impl std::fmt::Debug for ClusterLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterLink")
            .field("server", &self.inner.server)
            .finish_non_exhaustive()
    }
}

impl ClusterLink {
    /// No cluster: every figure comes from the agents.
    pub fn unlinked() -> ClusterLink {
        ClusterLink::with_client(
            None,
            Arc::default(),
            String::new(),
            None,
            LinkSettings {
                offline_taint_grace: Duration::from_secs(5),
                offline_taint_after_start: Duration::from_secs(30),
                backoff: Backoff::default(),
            },
        )
    }

    fn with_client(
        client: Option<kube::Client>,
        api: Arc<api_stats::ApiStats>,
        server: String,
        cluster_ca_hash: Option<String>,
        settings: LinkSettings,
    ) -> ClusterLink {
        let state = if client.is_some() {
            pb::ClusterLinkState::Connecting
        } else {
            pb::ClusterLinkState::Unlinked
        };
        ClusterLink {
            inner: Arc::new(Inner {
                queue: OnceLock::new(),
                client,
                api,
                server,
                settings,
                status: Mutex::new(LinkStatus {
                    state,
                    error: String::new(),
                    since_ms: now_ms(),
                    server_version: String::new(),
                }),
                index: RwLock::default(),
                synced: Mutex::default(),
                wake: Notify::new(),
                cluster_ca_hash,
            }),
        }
    }

    /// A link to the cluster of `kubeconfig`, or of the pod's service
    /// account with `in_cluster`. Reads the credentials now (a bad file is
    /// an error at start); the API server is first reached by the watches.
    pub async fn connect(
        kubeconfig: Option<&std::path::Path>,
        in_cluster: bool,
        settings: LinkSettings,
    ) -> anyhow::Result<ClusterLink> {
        let (mut config, ca_bundle) = match (kubeconfig, in_cluster) {
            (Some(path), _) => {
                let kc = kube::config::Kubeconfig::read_from(path)
                    .with_context(|| format!("read kubeconfig {}", path.display()))?;
                let ca = kubeconfig_ca(&kc, path);
                let config = kube::Config::from_custom_kubeconfig(
                    kc,
                    &kube::config::KubeConfigOptions::default(),
                )
                .await
                .with_context(|| format!("kubeconfig {}", path.display()))?;
                (config, ca)
            }
            (None, true) => (
                kube::Config::incluster().context("in-cluster Kubernetes credentials")?,
                std::fs::read("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt").ok(),
            ),
            (None, false) => return Ok(ClusterLink::unlinked()),
        };
        let cluster_ca_hash = ca_bundle.map(|b| {
            use sha2::Digest;
            minispod_support::hex(&sha2::Sha256::digest(&b))
        });
        // A lost API server shows within seconds, not after the default 30.
        config.connect_timeout = Some(Duration::from_secs(5));
        // kube retries 429 up to 15 times with backoff up to 1000 s, which
        // would hold a drain on one PodDisruptionBudget refusal for minutes;
        // the drain and the reconciler retry on their own terms.
        config.default_retry = false;
        let server = config.cluster_url.to_string();
        let api: Arc<api_stats::ApiStats> = Arc::default();
        let recorder = api.clone();
        let client = kube::client::ClientBuilder::try_from(config)
            .context("Kubernetes client")?
            .with_layer(&tower::layer::layer_fn(move |s| {
                api_stats::Recorded::new(s, recorder.clone())
            }))
            .build();
        tracing::info!(%server, "cluster link configured");
        Ok(ClusterLink::with_client(
            Some(client),
            api,
            server,
            cluster_ca_hash,
            settings,
        ))
    }

    /// Whether a cluster is configured.
    pub fn is_linked(&self) -> bool {
        self.inner.client.is_some()
    }

    /// The Kubernetes client; None when no cluster is configured.
    pub fn client(&self) -> Option<&kube::Client> {
        self.inner.client.as_ref()
    }

    /// The Kubernetes client, for the other controllers (subscriptions).
    pub fn kube_client(&self) -> Option<kube::Client> {
        self.inner.client.clone()
    }

    /// The worker a node belongs to, if it is one of ours.
    pub fn worker_of_node(&self, node: &str) -> Option<String> {
        self.index().node(node).and_then(|v| v.worker_id.clone())
    }

    /// Whether the pod `namespace/name` is bound and counted in its node's
    /// requests ([`ClusterLink::free_by_worker`] has taken it off).
    pub fn counts_pod(&self, namespace: &str, name: &str) -> bool {
        self.index().counts_pod(namespace, name)
    }

    /// Each worker's node: (worker id, node name, allocatable less the
    /// requests of its pods, whether the node takes new pods: Ready, not
    /// cordoned, no NoSchedule or NoExecute taint).
    pub fn free_by_worker(&self) -> Vec<(String, String, view::Resources, bool)> {
        let index = self.index();
        index
            .workers()
            .into_iter()
            .filter_map(|w| {
                let v = index.node_of(&w)?;
                let f = index.figures(&w)?;
                let takes = v.ready.0
                    && !v.node.unschedulable
                    && !v
                        .node
                        .taints
                        .iter()
                        .any(|t| t.effect == "NoSchedule" || t.effect == "NoExecute");
                Some((
                    w,
                    v.name.clone(),
                    f.allocatable.headroom(f.allocated),
                    takes,
                ))
            })
            .collect()
    }

    fn status(&self) -> std::sync::MutexGuard<'_, LinkStatus> {
        self.inner.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What the watches keep of nodes and pods.
    pub fn index(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.inner.index.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The same, to write what a write to the cluster answered.
    pub fn index_mut(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        self.inner.index.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The link's state now.
    pub fn state(&self) -> pb::ClusterLinkState {
        self.status().state
    }

    /// True once both watches have listed everything and the link is up:
    /// only then is a missing node really missing.
    pub fn synced(&self) -> bool {
        *self.inner.synced.lock().unwrap_or_else(|p| p.into_inner()) == (true, true)
            && self.state() == pb::ClusterLinkState::Connected
    }

    fn set_state(&self, state: pb::ClusterLinkState, error: String) -> bool {
        let mut s = self.status();
        let changed = s.state != state;
        if changed {
            s.since_ms = now_ms();
            match state {
                pb::ClusterLinkState::Lost => {
                    tracing::warn!(server = %self.inner.server, %error, "cluster link lost")
                }
                pb::ClusterLinkState::Connected => {
                    tracing::info!(server = %self.inner.server, "cluster link connected")
                }
                _ => {}
            }
        }
        s.state = state;
        s.error = error;
        changed
    }

    /// The state's short name for metrics and health ("CONNECTED", ...).
    pub fn state_name(&self) -> &'static str {
        match self.state() {
            pb::ClusterLinkState::Connected => "CONNECTED",
            pb::ClusterLinkState::Connecting => "CONNECTING",
            pb::ClusterLinkState::Lost => "LOST",
            pb::ClusterLinkState::Unlinked | pb::ClusterLinkState::Unspecified => "UNLINKED",
        }
    }

    /// What the metrics show: state, nodes, nodes with a worker.
    pub fn gauges(&self) -> Option<(&'static str, i64, i64)> {
        if !self.is_linked() {
            return None;
        }
        let (nodes, linked) = self.index().counts();
        Some((self.state_name(), nodes as i64, linked as i64))
    }

    /// What the client's requests met so far.
    pub fn api_stats(&self) -> api_stats::ApiSnapshot {
        self.inner.api.snapshot()
    }

    /// What GetClusterLink answers.
    pub fn describe(&self) -> pb::GetClusterLinkResponse {
        let s = self.status().clone();
        let (nodes, linked) = self.index().counts();
        let api = self.api_stats();
        pb::GetClusterLinkResponse {
            state: s.state as i32,
            server: self.inner.server.clone(),
            server_version: s.server_version,
            error: s.error,
            since: Some(timestamp(s.since_ms)),
            nodes: nodes as i64,
            linked_nodes: linked as i64,
            field_manager: if self.is_linked() {
                FIELD_MANAGER.into()
            } else {
                String::new()
            },
            api_errors: api
                .errors
                .iter()
                .map(|((kind, code), n)| pb::KubeApiErrorCount {
                    kind: kind.clone(),
                    code: i32::from(*code),
                    count: *n as i64,
                })
                .collect(),
            last_api_error: api.last.map(|e| pb::KubeApiError {
                kind: e.kind,
                code: i32::from(e.code),
                message: e.message,
                at: Some(timestamp(e.at_ms)),
            }),
        }
    }

    /// Adds what the cluster says of the worker's node to `w`: the node
    /// itself, capacity, allocatable, allocated, pods and versions (the
    /// drain's progress is `crate::nodes`'). Leaves `w` as it is without a
    /// link or a node.
    pub fn decorate(&self, w: &mut pb::Worker) {
        if !self.is_linked() {
            return;
        }
        let Some(f) = self.index().figures(&w.id) else {
            return;
        };
        let stale = self.state() != pb::ClusterLinkState::Connected;
        let mut node = f.node;
        node.stale = stale;
        if !node.kubelet_version.is_empty() {
            w.kubelet_version.clone_from(&node.kubelet_version);
        }
        if !node.container_runtime_version.is_empty() {
            w.container_runtime
                .clone_from(&node.container_runtime_version);
        }
        w.node = Some(node);
        self.decorate_figures(w);
    }

    /// Sets the figures a metrics event carries (pods, allocatable,
    /// allocated, capacity) from the worker's node, when it has one.
    pub fn decorate_figures(&self, w: &mut pb::Worker) {
        let Some(f) = self.index().figures(&w.id) else {
            return;
        };
        w.capacity = Some(f.capacity.to_pb());
        w.allocatable = Some(f.allocatable.to_pb());
        w.allocated = Some(f.allocated.to_pb());
        w.pod_count = f.allocated.pods.clamp(0, i32::MAX as i64) as i32;
        w.max_pods = f.allocatable.pods.clamp(0, i32::MAX as i64) as i32;
    }

    /// The figures of a worker's node, for fleet totals.
    pub fn figures(&self, worker_id: &str) -> Option<view::NodeFigures> {
        self.index().figures(worker_id)
    }

    /// From now on the ids of the workers whose node changed go to
    /// `queue` (the node reconciler's, once; a second call is ignored).
    pub fn feed(&self, queue: Arc<WorkQueue<String>>) {
        let _ = self.inner.queue.set(queue);
    }

    /// Hands these workers (their node changed) to the fed queue; one
    /// waiting out a backoff after a failure keeps its time.
    fn enqueue(&self, workers: impl IntoIterator<Item = String>) {
        if let Some(q) = self.inner.queue.get() {
            q.add(workers);
        }
    }

    /// The same, now, backoff or not (the link came back).
    fn enqueue_now(&self, workers: impl IntoIterator<Item = String>) {
        if let Some(q) = self.inner.queue.get() {
            for w in workers {
                q.add_now(w);
            }
        }
    }

    /// How the link is configured.
    pub fn settings(&self) -> &LinkSettings {
        &self.inner.settings
    }

    /// Resolves when the watches have listed everything again (the node
    /// reconciler's sweep waits for it).
    pub async fn listed(&self) {
        self.inner.wake.notified().await;
    }
}

/// The CA bundle of the kubeconfig's current cluster, as bytes: K3s
/// hashes exactly these for its secure join tokens.
fn kubeconfig_ca(kc: &kube::config::Kubeconfig, path: &std::path::Path) -> Option<Vec<u8>> {
    use base64::Engine;
    let current = kc.current_context.as_deref()?;
    let context = kc
        .contexts
        .iter()
        .find(|c| c.name == current)?
        .context
        .as_ref()?;
    let cluster = kc
        .clusters
        .iter()
        .find(|c| c.name == context.cluster)?
        .cluster
        .as_ref()?;
    if let Some(data) = &cluster.certificate_authority_data {
        return base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .ok();
    }
    let file = std::path::Path::new(cluster.certificate_authority.as_deref()?);
    let file = if file.is_relative() {
        path.parent()
            .unwrap_or(std::path::Path::new("."))
            .join(file)
    } else {
        file.to_owned()
    };
    std::fs::read(file).ok()
}

/// Now as a protobuf timestamp.
fn now() -> prost_types::Timestamp {
    timestamp(now_ms())
}
