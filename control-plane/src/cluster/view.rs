//! What the cluster link keeps of Nodes, Pods and PersistentVolumeClaims:
//! a compact view of each, indexed by worker, and the figures a worker
//! record shows from them.
//!
//! Watch events land here; nothing here talks to the API server, so all of
//! it is plain data and tested as such.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Node, PersistentVolumeClaim, Pod};
use minispod_proto::v1 as pb;
use minispod_support::WORKER_ID_LABEL;
use prost_types::Timestamp;

use super::quantity::{millicores, whole};

/// The annotation in which the control plane records which of a node's
/// taints are its own (JSON list of `{key, effect}`), so that it removes
/// only those and leaves everyone else's. Taints are an atomic list in the
/// Node schema, so server-side apply cannot share them between managers.
pub const OWN_TAINTS_ANNOTATION: &str = "minispod.dev/taints";

/// The NoExecute taint a node gets once its worker's stream has been gone
/// for the grace period.
pub const OFFLINE_TAINT_KEY: &str = "minispod.dev/offline";

/// CPU, memory, storage and pods. A node's capacity and allocatable
/// storage is its ephemeral storage (the kubelet's filesystem, where K3s's
/// local-path volumes live too); what is allocated of it is the pods'
/// ephemeral-storage requests plus the claims provisioned on the node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    /// Millicores.
    pub cpu: i64,
    /// Bytes.
    pub memory: i64,
    /// Bytes of storage.
    pub storage: i64,
    /// Pods.
    pub pods: i64,
}

impl Resources {
    fn of(
        list: Option<
            &std::collections::BTreeMap<
                String,
                k8s_openapi::apimachinery::pkg::api::resource::Quantity,
            >,
        >,
    ) -> Resources {
        let get = |k: &str| list.and_then(|l| l.get(k)).map(|q| q.0.as_str());
        Resources {
            cpu: get("cpu").map_or(0, millicores),
            memory: get("memory").map_or(0, whole),
            storage: get("ephemeral-storage").map_or(0, whole),
            pods: get("pods").map_or(0, whole),
        }
    }

    /// What is left of `self` after `used`, per resource, never below zero.
    pub fn headroom(self, used: Resources) -> Resources {
        Resources {
            cpu: (self.cpu - used.cpu).max(0),
            memory: (self.memory - used.memory).max(0),
            storage: (self.storage - used.storage).max(0),
            pods: (self.pods - used.pods).max(0),
        }
    }

    /// Adds `o`, saturating.
    pub fn add(&mut self, o: Resources) {
        self.cpu = self.cpu.saturating_add(o.cpu);
        self.memory = self.memory.saturating_add(o.memory);
        self.storage = self.storage.saturating_add(o.storage);
        self.pods = self.pods.saturating_add(o.pods);
    }

    fn max(self, o: Resources) -> Resources {
        Resources {
            cpu: self.cpu.max(o.cpu),
            memory: self.memory.max(o.memory),
            storage: self.storage.max(o.storage),
            pods: self.pods.max(o.pods),
        }
    }

    /// As the API's message.
    pub fn to_pb(self) -> pb::WorkerResources {
        pb::WorkerResources {
            cpu_millicores: self.cpu,
            memory_bytes: self.memory,
            storage_bytes: self.storage,
            pods: self.pods,
        }
    }
}

/// A taint as the control plane compares them.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct TaintKey {
    /// The taint's key.
    pub key: String,
    /// Its effect.
    pub effect: String,
}

/// What the link keeps of one Node.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeView {
    /// The node's name.
    pub name: String,
    /// The worker its label names, if any.
    pub worker_id: Option<String>,
    /// The node's resourceVersion (a precondition for taint patches).
    pub resource_version: String,
    /// The API's view of the node.
    pub node: pb::WorkerNode,
    /// Readiness and, when not ready, why.
    pub ready: (bool, String),
    /// status.capacity.
    pub capacity: Resources,
    /// status.allocatable.
    pub allocatable: Resources,
    /// The taints the control plane set (its annotation).
    pub own_taints: Vec<TaintKey>,
    /// The labels the control plane's applies own (managedFields).
    pub own_labels: Vec<String>,
    /// Whether its applies own spec.unschedulable.
    pub owns_unschedulable: bool,
}

/// The label keys and whether spec.unschedulable are owned by `manager`'s
/// server-side applies, from the node's managedFields (fieldsV1 format:
/// `{"f:metadata": {"f:labels": {"f:<key>": {}}}, "f:spec": {"f:unschedulable": {}}}`).
fn owned_by(n: &Node, manager: &str) -> (Vec<String>, bool) {
    let mut labels = Vec::new();
    let mut unschedulable = false;
    for e in n.metadata.managed_fields.iter().flatten() {
        if e.manager.as_deref() != Some(manager) || e.operation.as_deref() != Some("Apply") {
            continue;
        }
        let Some(f) = e.fields_v1.as_ref().map(|f| &f.0) else {
            continue;
        };
        if let Some(l) = f
            .pointer("/f:metadata/f:labels")
            .and_then(|v| v.as_object())
        {
            labels.extend(
                l.keys()
                    .filter_map(|k| k.strip_prefix("f:"))
                    .map(str::to_owned),
            );
        }
        unschedulable |= f.pointer("/f:spec/f:unschedulable").is_some();
    }
    (labels, unschedulable)
}

fn timestamp(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> Timestamp {
    Timestamp {
        seconds: t.0.as_second(),
        nanos: t.0.subsec_nanosecond(),
    }
}

impl NodeView {
    /// The view of `n`.
    pub fn of(n: &Node, observed_at: Timestamp) -> NodeView {
        let meta = &n.metadata;
        let labels = meta.labels.clone().unwrap_or_default();
        let status = n.status.clone().unwrap_or_default();
        let spec = n.spec.clone().unwrap_or_default();
        let conditions: Vec<pb::NodeCondition> = status
            .conditions
            .unwrap_or_default()
            .into_iter()
            .map(|c| pb::NodeCondition {
                r#type: c.type_,
                status: c.status,
                reason: c.reason.unwrap_or_default(),
                message: c.message.unwrap_or_default(),
                last_transition_at: c.last_transition_time.as_ref().map(timestamp),
                last_heartbeat_at: c.last_heartbeat_time.as_ref().map(timestamp),
            })
            .collect();
        let ready = readiness(&conditions);
        let info = status.node_info.unwrap_or_default();
        let (own_labels, owns_unschedulable) = owned_by(n, super::FIELD_MANAGER);
        let own_taints = meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(OWN_TAINTS_ANNOTATION))
            .and_then(|v| serde_json::from_str(v).ok())
            .unwrap_or_default();
        NodeView {
            name: meta.name.clone().unwrap_or_default(),
            worker_id: labels.get(WORKER_ID_LABEL).cloned(),
            resource_version: meta.resource_version.clone().unwrap_or_default(),
            capacity: Resources::of(status.capacity.as_ref()),
            allocatable: Resources::of(status.allocatable.as_ref()),
            node: pb::WorkerNode {
                name: meta.name.clone().unwrap_or_default(),
                ready: ready.0,
                conditions,
                unschedulable: spec.unschedulable.unwrap_or(false),
                taints: spec
                    .taints
                    .unwrap_or_default()
                    .into_iter()
                    .map(|t| pb::Taint {
                        key: t.key,
                        value: t.value.unwrap_or_default(),
                        effect: t.effect,
                    })
                    .collect(),
                labels: labels.into_iter().collect(),
                os_image: info.os_image,
                kernel_version: info.kernel_version,
                kubelet_version: info.kubelet_version,
                container_runtime_version: info.container_runtime_version,
                architecture: info.architecture,
                stale: false,
                observed_at: Some(observed_at),
            },
            ready,
            own_taints,
            own_labels,
            owns_unschedulable,
        }
    }
}

/// A node is ready when its Ready condition is True; otherwise the reason
/// is the condition's message (the kubelet's words), or what is missing.
pub fn readiness(conditions: &[pb::NodeCondition]) -> (bool, String) {
    match conditions.iter().find(|c| c.r#type == "Ready") {
        None => (false, "node has not reported a Ready condition yet".into()),
        Some(c) if c.status == "True" => (true, String::new()),
        Some(c) => {
            let why = if !c.message.is_empty() {
                c.message.trim_end_matches('.').to_owned()
            } else if !c.reason.is_empty() {
                c.reason.clone()
            } else {
                format!("Ready is {}", c.status)
            };
            // "Kubelet stopped posting node status." reads as a sentence
            // start; lower-case the first letter to fit after "node: ".
            let mut chars = why.chars();
            let why = match chars.next() {
                Some(f) => f.to_lowercase().chain(chars).collect(),
                None => why,
            };
            (false, format!("node not ready: {why}"))
        }
    }
}

/// The reason a worker whose stream is up but has no node is NOT_READY.
pub const NODE_NOT_JOINED: &str = "node not joined: no Kubernetes node carries this worker's id";

/// What the link keeps of one Pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodView {
    /// The node it is bound to.
    pub node: String,
    /// Its effective requests (pods: 1).
    pub requests: Resources,
}

impl PodView {
    /// The view of `p`, or None when it takes nothing from a node (not
    /// bound yet, or finished).
    pub fn of(p: &Pod) -> Option<PodView> {
        let spec = p.spec.as_ref()?;
        let node = spec.node_name.clone().filter(|n| !n.is_empty())?;
        let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded" | "Failed")) {
            return None;
        }
        // As the scheduler counts: the sum of the containers, or the
        // largest init container if that is more, plus the pod's overhead.
        let mut sum = Resources::default();
        for c in &spec.containers {
            sum.add(Resources::of(
                c.resources.as_ref().and_then(|r| r.requests.as_ref()),
            ));
        }
        let mut init = Resources::default();
        for c in spec.init_containers.iter().flatten() {
            let r = Resources::of(c.resources.as_ref().and_then(|r| r.requests.as_ref()));
            if c.restart_policy.as_deref() == Some("Always") {
                // A sidecar runs beside the containers.
                sum.add(r);
            } else {
                init = init.max(r);
            }
        }
        let mut requests = sum.max(init);
        requests.add(Resources::of(spec.overhead.as_ref()));
        requests.pods = 1;
        Some(PodView { node, requests })
    }
}

/// The annotation the scheduler puts on a claim of a storage class that
/// binds on first use (WaitForFirstConsumer, as K3s's default
/// `local-path`): the node its first pod went to, where its volume is
/// provisioned and stays.
pub const SELECTED_NODE_ANNOTATION: &str = "volume.kubernetes.io/selected-node";

/// The view of a claim as what it takes from a node: its storage (bound:
/// its capacity, else what it requests) on the node the scheduler chose
/// for it; None when it takes nothing from any node's disk (no node chosen:
/// network storage, or a claim no pod used yet; Lost: its volume is gone).
pub fn claim_view(c: &PersistentVolumeClaim) -> Option<PodView> {
    let node = c
        .metadata
        .annotations
        .as_ref()?
        .get(SELECTED_NODE_ANNOTATION)
        .filter(|n| !n.is_empty())?
        .clone();
    let status = c.status.as_ref();
    if status.and_then(|s| s.phase.as_deref()) == Some("Lost") {
        return None;
    }
    let bound = status
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get("storage"));
    let requested = c
        .spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"));
    let storage = bound.or(requested).map_or(0, |q| whole(&q.0));
    Some(PodView {
        node,
        requests: Resources {
            storage,
            ..Resources::default()
        },
    })
}

/// The figures of one worker's node.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeFigures {
    /// The node as the API shows it.
    pub node: pb::WorkerNode,
    /// Readiness and why not.
    pub ready: (bool, String),
    /// Capacity.
    pub capacity: Resources,
    /// Allocatable.
    pub allocatable: Resources,
    /// The sums of its pods' requests (pods: how many) and of its claims'
    /// storage.
    pub allocated: Resources,
}

/// Which of the two things that take from a node an entry is.
#[derive(Debug, Clone, Copy)]
enum Held {
    Pod,
    Claim,
}

/// Nodes, pods and claims as the watches last said, by name and by worker.
#[derive(Debug, Default)]
pub struct Index {
    nodes: HashMap<String, NodeView>,
    /// Worker id → node name.
    by_worker: HashMap<String, String>,
    /// Pod key (namespace/name) → view.
    pods: HashMap<String, PodView>,
    /// Claim key (namespace/name) → what it takes from its node.
    claims: HashMap<String, PodView>,
    /// Node name → sums over its pods and claims.
    allocated: HashMap<String, Resources>,
    /// Node name → the worker whose in-cluster agent named it (DaemonSet
    /// mode), until the node carries that worker's label: the node's
    /// watch event may come after the worker's first pass, and an
    /// unlabelled node names no worker by itself.
    named: HashMap<String, String>,
}

impl Index {
    /// Records a node as the watch last saw it; returns the worker it
    /// belongs to, and the worker it no longer belongs to, if that changed.
    pub fn put_node(&mut self, view: NodeView) -> Vec<String> {
        let mut touched = Vec::new();
        if let Some(old) = self.nodes.get(&view.name)
            && let Some(w) = &old.worker_id
            && old.worker_id != view.worker_id
        {
            self.by_worker.remove(w);
            touched.push(w.clone());
        }
        if let Some(w) = &view.worker_id {
            self.by_worker.insert(w.clone(), view.name.clone());
            touched.push(w.clone());
        }
        if let Some(w) = self.named.get(&view.name) {
            if view.worker_id.as_ref() == Some(w) {
                self.named.remove(&view.name);
            } else {
                touched.push(w.clone());
            }
        }
        self.nodes.insert(view.name.clone(), view);
        touched
    }

    /// Records that a worker's agent names `node` as its own, so the node's
    /// next watch event queues the worker even before it carries the label.
    pub fn name_node(&mut self, node: &str, worker_id: &str) {
        if self.nodes.get(node).and_then(|v| v.worker_id.as_deref()) != Some(worker_id) {
            self.named.insert(node.to_owned(), worker_id.to_owned());
        }
    }

    /// Forgets a node; returns its worker.
    pub fn remove_node(&mut self, name: &str) -> Option<String> {
        let old = self.nodes.remove(name)?;
        let w = old.worker_id?;
        if self.by_worker.get(&w).is_some_and(|n| n == name) {
            self.by_worker.remove(&w);
        }
        Some(w)
    }

    /// Records a pod (None: it no longer takes anything); returns the
    /// workers whose figures changed.
    pub fn put_pod(&mut self, key: String, view: Option<PodView>) -> Vec<String> {
        self.put(Held::Pod, key, view)
    }

    /// Records a claim (None: it no longer takes anything from a node);
    /// returns the workers whose figures changed.
    pub fn put_claim(&mut self, key: String, view: Option<PodView>) -> Vec<String> {
        self.put(Held::Claim, key, view)
    }

    fn put(&mut self, held: Held, key: String, view: Option<PodView>) -> Vec<String> {
        let map = match held {
            Held::Pod => &mut self.pods,
            Held::Claim => &mut self.claims,
        };
        let old = match &view {
            Some(v) => map.insert(key, v.clone()),
            None => map.remove(&key),
        };
        if old == view {
            return Vec::new();
        }
        let new = view;
        let mut nodes = Vec::new();
        if let Some(o) = old {
            let a = self.allocated.entry(o.node.clone()).or_default();
            a.cpu -= o.requests.cpu;
            a.memory -= o.requests.memory;
            a.storage -= o.requests.storage;
            a.pods -= o.requests.pods;
            if *a == Resources::default() {
                self.allocated.remove(&o.node);
            }
            nodes.push(o.node);
        }
        if let Some(n) = new {
            self.allocated
                .entry(n.node.clone())
                .or_default()
                .add(n.requests);
            nodes.push(n.node);
        }
        nodes.dedup();
        nodes
            .iter()
            .filter_map(|n| self.nodes.get(n).and_then(|v| v.worker_id.clone()))
            .collect()
    }

    /// Replaces every node (a watch restarted); returns every worker
    /// whose node appeared, changed or went.
    pub fn replace_nodes(&mut self, views: Vec<NodeView>) -> Vec<String> {
        let mut touched: Vec<String> = self.by_worker.keys().cloned().collect();
        self.nodes.clear();
        self.by_worker.clear();
        for v in views {
            touched.extend(self.put_node(v));
        }
        touched.sort_unstable();
        touched.dedup();
        touched
    }

    /// Replaces every pod (a watch restarted); returns the workers touched.
    pub fn replace_pods(&mut self, views: Vec<(String, PodView)>) -> Vec<String> {
        self.replace(Held::Pod, views)
    }

    /// Replaces every claim (a watch restarted); returns the workers touched.
    pub fn replace_claims(&mut self, views: Vec<(String, PodView)>) -> Vec<String> {
        self.replace(Held::Claim, views)
    }

    fn replace(&mut self, held: Held, views: Vec<(String, PodView)>) -> Vec<String> {
        let old: Vec<String> = match held {
            Held::Pod => self.pods.keys().cloned().collect(),
            Held::Claim => self.claims.keys().cloned().collect(),
        };
        let mut touched = Vec::new();
        for key in old {
            touched.extend(self.put(held, key, None));
        }
        for (key, v) in views {
            touched.extend(self.put(held, key, Some(v)));
        }
        touched.sort_unstable();
        touched.dedup();
        touched
    }

    /// The node of a worker.
    pub fn node_of(&self, worker_id: &str) -> Option<&NodeView> {
        self.by_worker
            .get(worker_id)
            .and_then(|n| self.nodes.get(n))
    }

    /// A node by name.
    pub fn node(&self, name: &str) -> Option<&NodeView> {
        self.nodes.get(name)
    }

    /// Whether pod `namespace/name` is bound and its requests are in its
    /// node's `allocated`.
    pub fn counts_pod(&self, namespace: &str, name: &str) -> bool {
        self.pods.contains_key(&format!("{namespace}/{name}"))
    }

    /// The figures of a worker's node, None when it has none.
    pub fn figures(&self, worker_id: &str) -> Option<NodeFigures> {
        let v = self.node_of(worker_id)?;
        Some(NodeFigures {
            node: v.node.clone(),
            ready: v.ready.clone(),
            capacity: v.capacity,
            allocatable: v.allocatable,
            allocated: self.allocated.get(&v.name).copied().unwrap_or_default(),
        })
    }

    /// How many nodes there are, and how many belong to a worker.
    pub fn counts(&self) -> (usize, usize) {
        (self.nodes.len(), self.by_worker.len())
    }

    /// Every worker that has a node.
    pub fn workers(&self) -> Vec<String> {
        self.by_worker.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests;
