//! Fixtures for cluster tests: fake Nodes (status set through `/status` as
//! a kubelet would) and Pods bound to them, namespaces and disruption
//! budgets. Names carry the cluster's random suffix; what a test creates is
//! deleted when the `TestCluster` drops (on a real cluster; a stand-in
//! simply goes).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::cluster::TestCluster;
use crate::standin::StandIn;

/// The field manager fixtures write status with, standing for the kubelet.
pub const FIXTURE_KUBELET: &str = "minispod-test-kubelet";

/// What a test created, to delete on drop.
#[derive(Debug, Default)]
pub struct Created {
    pub(crate) nodes: Vec<String>,
    pub(crate) namespaces: Vec<String>,
    /// On a real cluster: the customer namespaces (`managed-by: minispod`)
    /// there before the test; those made during it are deleted with it, or
    /// their Deployments' pods would land on the next test's nodes.
    pub(crate) customers_before: Option<std::collections::BTreeSet<String>>,
}

impl Created {
    /// Nothing created yet, on a real cluster with these customer namespaces.
    pub(crate) fn with_customers_before(before: std::collections::BTreeSet<String>) -> Created {
        Created {
            customers_before: Some(before),
            ..Default::default()
        }
    }
}

/// The label of the namespaces the control plane makes for customers.
pub(crate) const CUSTOMER_NAMESPACES: &str = "app.kubernetes.io/managed-by=minispod";

/// The names of the customer namespaces on the cluster now.
pub(crate) async fn customer_namespaces(
    client: &kube::Client,
) -> anyhow::Result<std::collections::BTreeSet<String>> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    Ok(namespaces
        .list(&ListParams::default().labels(CUSTOMER_NAMESPACES))
        .await
        .context("list the customer namespaces")?
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect())
}

/// How long the fixture kubelet takes to stop a deleted pod's containers
/// before it deletes the pod for good (`gracePeriodSeconds=0`).
pub const FIXTURE_POD_STOP_DELAY: Duration = Duration::from_millis(200);

/// How long fixtures wait for what a real cluster does after a create
/// (a node's not-ready taint gone, a namespace's `default`
/// ServiceAccount).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether a taint is one the node lifecycle controller keeps on a node
/// that is not Ready.
fn is_condition_taint(key: &str) -> bool {
    key == crate::admission::NOT_READY_TAINT || key == crate::admission::UNREACHABLE_TAINT
}

fn labels_of(labels: &[(&str, &str)]) -> BTreeMap<String, String> {
    labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn condition(kind: &str, status: &str, reason: &str, message: &str) -> Value {
    let now = crate::meta::now();
    json!({"type": kind, "status": status, "reason": reason, "message": message,
           "lastHeartbeatTime": now, "lastTransitionTime": now})
}

fn pod_conditions(ready: bool) -> Value {
    let now = crate::meta::now();
    let ready = if ready { "True" } else { "False" };
    json!([
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
        {"type": "Initialized", "status": "True", "lastTransitionTime": now},
        {"type": "ContainersReady", "status": ready, "lastTransitionTime": now},
        {"type": "Ready", "status": ready, "lastTransitionTime": now},
    ])
}

impl TestCluster {
    /// `base` with this cluster's random suffix: the name fixtures give
    /// nodes and namespaces, unique across runs on a shared cluster.
    pub fn name(&self, base: &str) -> String {
        format!("{base}-{}", self.suffix)
    }

    fn status_params() -> PatchParams {
        PatchParams {
            field_manager: Some(FIXTURE_KUBELET.into()),
            ..PatchParams::default()
        }
    }

    /// A fake Node named `name(base)` with these labels, made Ready with 4
    /// CPUs, 8Gi of memory, 100Gi of ephemeral storage and 110 pods through
    /// the `/status` subresource, as a kubelet would.
    pub async fn create_node(&self, base: &str, labels: &[(&str, &str)]) -> anyhow::Result<Node> {
        let name = self.name(base);
        let nodes: Api<Node> = Api::all(self.client().await);
        let mut node = Node::default();
        node.metadata.name = Some(name.clone());
        node.metadata.labels = Some(labels_of(labels));
        nodes
            .create(&PostParams::default(), &node)
            .await
            .with_context(|| format!("create node {name}"))?;
        self.created
            .lock()
            .expect("not poisoned")
            .nodes
            .push(name.clone());
        self.nodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(name.clone());
        let resources =
            json!({"cpu": "4", "memory": "8Gi", "ephemeral-storage": "100Gi", "pods": "110"});
        let status = json!({"status": {
            "capacity": resources, "allocatable": resources,
            "conditions": [condition("Ready", "True", "KubeletReady", "kubelet is posting ready status")],
            "addresses": [{"type": "Hostname", "address": name}],
            "nodeInfo": {
                "machineID": "0", "systemUUID": "0", "bootID": "0",
                "kernelVersion": "6.1.0-minispod", "osImage": "Debian GNU/Linux 12 (bookworm)",
                "containerRuntimeVersion": "containerd://1.7.0", "kubeletVersion": "v1.33.5+k3s1",
                "kubeProxyVersion": "v1.33.5+k3s1", "operatingSystem": "linux", "architecture": "amd64",
            },
        }});
        nodes
            .patch_status(&name, &Self::status_params(), &Patch::Merge(&status))
            .await
            .with_context(|| format!("set the status of node {name}"))?;
        self.ensure_fixture_kubelet();
        // A new Node carries node.kubernetes.io/not-ready:NoSchedule until
        // the node lifecycle controller sees it Ready: nothing lands on it
        // before that.
        self.node_until_untainted(&name).await
    }

    /// Waits until the node lifecycle controller has taken the not-ready
    /// and unreachable taints off a node, and returns it.
    pub async fn node_until_untainted(&self, name: &str) -> anyhow::Result<Node> {
        let nodes: Api<Node> = Api::all(self.client().await);
        let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
        loop {
            let node = nodes.get(name).await?;
            let tainted = node
                .spec
                .as_ref()
                .and_then(|s| s.taints.as_ref())
                .is_some_and(|t| t.iter().any(|t| is_condition_taint(&t.key)));
            if !tainted {
                return Ok(node);
            }
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!("node {name} still has a not-ready taint after {SETTLE_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Set one condition of a node (replacing the one of that type), as the
    /// kubelet or the node lifecycle controller would.
    pub async fn set_node_condition(
        &self,
        name: &str,
        kind: &str,
        status: &str,
        reason: &str,
        message: &str,
    ) -> anyhow::Result<Node> {
        let nodes: Api<Node> = Api::all(self.client().await);
        let node = nodes.get(name).await?;
        let mut conditions: Vec<Value> = node
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c.type_ != kind)
            .map(|c| serde_json::to_value(c).expect("conditions serialize"))
            .collect();
        conditions.push(condition(kind, status, reason, message));
        let patch = json!({"status": {"conditions": conditions}});
        Ok(nodes
            .patch_status(name, &Self::status_params(), &Patch::Merge(&patch))
            .await?)
    }

    /// A fresh namespace `minispod-test-<suffix>-<n>`.
    pub async fn create_namespace(&self) -> anyhow::Result<String> {
        let count = self.created.lock().expect("not poisoned").namespaces.len();
        let name = self.name(&format!("minispod-test-{count}"));
        let namespaces: Api<Namespace> = Api::all(self.client().await);
        let mut namespace = Namespace::default();
        namespace.metadata.name = Some(name.clone());
        namespaces
            .create(&PostParams::default(), &namespace)
            .await?;
        self.created
            .lock()
            .expect("not poisoned")
            .namespaces
            .push(name.clone());
        self.service_account_until(&name).await?;
        Ok(name)
    }

    /// Waits until kube-controller-manager has made the namespace's
    /// `default` ServiceAccount: before that the ServiceAccount admission
    /// plugin refuses the namespace's pods.
    pub async fn service_account_until(&self, namespace: &str) -> anyhow::Result<()> {
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client().await, namespace);
        let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
        while accounts.get_opt("default").await?.is_none() {
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!(
                    "namespace {namespace} has no default ServiceAccount after {SETTLE_TIMEOUT:?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Delete this namespace when the cluster is dropped (on a real
    /// cluster): for the namespaces the control plane under test made
    /// (a customer's), which the test owns like its fixtures'.
    pub fn delete_on_drop(&self, namespace: &str) {
        let mut created = self.created.lock().expect("not poisoned");
        if !created.namespaces.iter().any(|n| n == namespace) {
            created.namespaces.push(namespace.to_string());
        }
    }

    /// Waits until the pod is gone (deleted and, if it was Terminating,
    /// finalized by its kubelet).
    pub async fn pod_until_gone(&self, namespace: &str, name: &str) -> anyhow::Result<()> {
        let pods: Api<Pod> = Api::namespaced(self.client().await, namespace);
        let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
        while pods.get_opt(name).await?.is_some() {
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!("pod {namespace}/{name} still there after {SETTLE_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Starts (once) the fixture kubelet: every 100 ms it finalizes the
    /// Terminating pods bound to this test's nodes, as their kubelet
    /// would once their containers stopped: `FIXTURE_POD_STOP_DELAY` after
    /// it first saw them Terminating, it deletes them with
    /// `gracePeriodSeconds=0` and their uid as precondition. Not for a
    /// node whose Ready condition is not True (its kubelet is not
    /// there); a node whose object is gone still has its machine. The
    /// stand-in's own kubelet does the same for the pods its scheduler
    /// bound.
    fn ensure_fixture_kubelet(&self) {
        let mut kubelet = self.kubelet.lock().unwrap_or_else(|e| e.into_inner());
        if kubelet.is_some() {
            return;
        }
        let client = self.client.clone();
        let created = self.created_nodes();
        *kubelet = Some(tokio::spawn(fixture_kubelet(client, created)));
    }

    /// The names of the nodes fixtures created, shared with the fixture
    /// kubelet.
    fn created_nodes(&self) -> std::sync::Arc<std::sync::Mutex<Vec<String>>> {
        self.nodes.clone()
    }

    /// A Pod bound to `node` (no scheduler, no kubelet) with one container
    /// requesting `requests` (`[("cpu", "500m")]`), Running, and Ready or
    /// not, through `/status`.
    #[allow(clippy::too_many_arguments)]
    pub async fn create_pod(
        &self,
        namespace: &str,
        name: &str,
        node: &str,
        labels: &[(&str, &str)],
        requests: &[(&str, &str)],
        ready: bool,
        owner: Option<OwnerReference>,
    ) -> anyhow::Result<Pod> {
        let pods: Api<Pod> = Api::namespaced(self.client().await, namespace);
        let requests: BTreeMap<&str, &str> = requests.iter().copied().collect();
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": labels_of(labels), "ownerReferences": owner.into_iter().collect::<Vec<_>>()},
            "spec": {
                "nodeName": node,
                // No token volume: nothing runs in it (and a cluster that
                // still mounts Secret-based tokens would refuse the pod
                // until the namespace's token Secret exists).
                "automountServiceAccountToken": false,
                "containers": [{"name": "main", "image": "registry.k8s.io/pause:3.10",
                                "resources": {"requests": requests}}],
            },
        }))?;
        pods.create(&PostParams::default(), &pod)
            .await
            .with_context(|| format!("create pod {namespace}/{name}"))?;
        self.set_pod_ready(namespace, name, ready).await
    }

    /// Mark a pod Running and Ready (or not), as its kubelet would.
    pub async fn set_pod_ready(
        &self,
        namespace: &str,
        name: &str,
        ready: bool,
    ) -> anyhow::Result<Pod> {
        let pods: Api<Pod> = Api::namespaced(self.client().await, namespace);
        let patch = json!({"status": {
            "phase": "Running",
            "conditions": pod_conditions(ready),
            "startTime": crate::meta::now(),
        }});
        Ok(pods
            .patch_status(name, &Self::status_params(), &Patch::Merge(&patch))
            .await?)
    }

    /// A PodDisruptionBudget over the pods with these labels.
    pub async fn create_pdb(
        &self,
        namespace: &str,
        name: &str,
        selector: &[(&str, &str)],
        min_available: i32,
    ) -> anyhow::Result<PodDisruptionBudget> {
        let pdbs: Api<PodDisruptionBudget> = Api::namespaced(self.client().await, namespace);
        let pdb: PodDisruptionBudget = serde_json::from_value(json!({
            "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": name},
            "spec": {"minAvailable": min_available, "selector": {"matchLabels": labels_of(selector)}},
        }))?;
        Ok(pdbs.create(&PostParams::default(), &pdb).await?)
    }
}

impl TestCluster {
    /// The stand-in, or an error saying that `fixture` needs one (tests
    /// skip that part on a real cluster).
    fn standin_for(&self, fixture: &str) -> anyhow::Result<&StandIn> {
        self.standin().with_context(|| {
            format!(
                "{fixture} needs the kube stand-in: on a real cluster it has no hook for it (skip this part of the test there)"
            )
        })
    }

    /// From now on pulls of `image` (exactly as pod specs name it) fail on
    /// the stand-in's nodes: its containers wait with ErrImagePull, then
    /// ImagePullBackOff. Stand-in only.
    pub async fn set_image_unpullable(&self, image: &str) -> anyhow::Result<()> {
        self.standin_for("set_image_unpullable")?
            .set_image_unpullable(image);
        Ok(())
    }

    /// From now on containers of `image` (exactly as pod specs name it)
    /// exit as they start on the stand-in's nodes: CrashLoopBackOff, their
    /// restartCount climbing every back-off (the readiness delay, at least
    /// half a second; a kubelet's starts at 10 s). Stand-in only.
    pub async fn set_image_crashing(&self, image: &str) -> anyhow::Result<()> {
        self.standin_for("set_image_crashing")?
            .set_image_crashing(image);
        Ok(())
    }

    /// From now on containers of `image` (exactly as pod specs name it)
    /// that have a readiness probe run but fail it on the stand-in's nodes:
    /// Running, never Ready (ContainersNotReady). Stand-in only.
    pub async fn set_image_readiness_failing(&self, image: &str) -> anyhow::Result<()> {
        self.standin_for("set_image_readiness_failing")?
            .set_image_readiness_failing(image);
        Ok(())
    }

    /// Append lines to the log of one container of a pod, as its process
    /// would print them. Stand-in only.
    pub async fn append_pod_log(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        lines: &[&str],
    ) -> anyhow::Result<()> {
        self.standin_for("append_pod_log")?
            .append_pod_log(namespace, pod, container, lines)
            .map_err(|e| anyhow::anyhow!("append to the log of {namespace}/{pod}: {}", e.message))
    }

    /// Append one line of `bytes` bytes (`x`, then a newline) to the log
    /// of one container of a pod, as a process printing that much without
    /// a newline would. Generated lazily while served, never stored: a
    /// 1 GiB line costs the stand-in a 64 KiB frame at a time. Stand-in
    /// only.
    pub async fn append_generated_pod_log_line(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        bytes: u64,
    ) -> anyhow::Result<()> {
        self.standin_for("append_generated_pod_log_line")?
            .append_generated_pod_log_line(namespace, pod, container, bytes)
            .map_err(|e| anyhow::anyhow!("append to the log of {namespace}/{pod}: {}", e.message))
    }

    /// How long after their binding the stand-in's pods run and are Ready
    /// (default 300 ms); pods bound from now on. Stand-in only (a real
    /// cluster's pods are ready when their kubelet says).
    pub async fn set_pod_ready_delay(&self, delay: Duration) -> anyhow::Result<()> {
        self.standin_for("set_pod_ready_delay")?
            .set_pod_ready_delay(delay);
        Ok(())
    }

    /// Wait until the pods of `namespace` that `label_selector` selects
    /// satisfy `predicate` (looking every 50 ms), and return them; an error
    /// naming the pods and their phases after `timeout`.
    pub async fn wait_for(
        &self,
        namespace: &str,
        label_selector: &str,
        predicate: impl Fn(&[Pod]) -> bool,
        timeout: Duration,
    ) -> anyhow::Result<Vec<Pod>> {
        let pods: Api<Pod> = Api::namespaced(self.client().await, namespace);
        let params = ListParams::default().labels(label_selector);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let list = pods
                .list(&params)
                .await
                .with_context(|| format!("list pods {label_selector:?} in {namespace}"))?
                .items;
            if predicate(&list) {
                return Ok(list);
            }
            if tokio::time::Instant::now() >= deadline {
                let seen: Vec<String> = list
                    .iter()
                    .map(|p| {
                        format!(
                            "{} ({})",
                            p.metadata.name.as_deref().unwrap_or_default(),
                            p.status
                                .as_ref()
                                .and_then(|s| s.phase.as_deref())
                                .unwrap_or("no phase")
                        )
                    })
                    .collect();
                anyhow::bail!(
                    "pods {label_selector:?} in {namespace} did not get there in {timeout:?}; last seen: {seen:?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The fixture kubelet's loop (see `TestCluster::ensure_fixture_kubelet`).
async fn fixture_kubelet(
    client: kube::Client,
    nodes: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    let pods: Api<Pod> = Api::all(client.clone());
    let node_api: Api<Node> = Api::all(client.clone());
    let mut stopping: std::collections::HashMap<String, tokio::time::Instant> = Default::default();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let ours = nodes.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let Ok(list) = pods.list(&ListParams::default()).await else {
            continue;
        };
        let now = tokio::time::Instant::now();
        let mut seen = std::collections::HashSet::new();
        for pod in list.items {
            let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
            let Some(node) = node.filter(|n| ours.contains(n)) else {
                continue;
            };
            if pod.metadata.deletion_timestamp.is_none() {
                continue;
            }
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            seen.insert(uid.clone());
            let since = *stopping.entry(uid.clone()).or_insert(now);
            if now < since + FIXTURE_POD_STOP_DELAY {
                continue;
            }
            let ready = match node_api.get_opt(&node).await {
                Ok(Some(n)) => n
                    .status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True"),
                Ok(None) => true,
                Err(_) => false,
            };
            if !ready {
                continue;
            }
            let namespace = pod.metadata.namespace.clone().unwrap_or_default();
            let name = pod.metadata.name.clone().unwrap_or_default();
            let delete = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(kube::api::Preconditions {
                    uid: Some(uid),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            let namespaced: Api<Pod> = Api::namespaced(client.clone(), &namespace);
            if let Err(error) = namespaced.delete(&name, &delete).await {
                tracing::debug!(%error, name, "the fixture kubelet could not delete a pod");
            }
        }
        stopping.retain(|uid, _| seen.contains(uid));
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if let Some(kubelet) = self
            .kubelet
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            kubelet.abort();
        }
        if !self.is_real() {
            if !std::thread::panicking() {
                self.assert_nothing_forbidden();
            }
            return;
        }
        let created = std::mem::take(&mut *self.created.lock().unwrap_or_else(|e| e.into_inner()));
        if created.nodes.is_empty()
            && created.namespaces.is_empty()
            && created.customers_before.is_none()
        {
            return;
        }
        // The test's runtime may be shutting down: delete from a runtime of
        // our own, with a client of its own.
        let config = self.config().clone();
        let cleanup = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                let Ok(client) = kube::Client::try_from(config) else {
                    return;
                };
                let delete = DeleteParams::default();
                let nodes: Api<Node> = Api::all(client.clone());
                for name in &created.nodes {
                    if let Err(error) = nodes.delete(name, &delete).await {
                        tracing::warn!(%error, name, "could not delete a test node");
                    }
                }
                let mut made: std::collections::BTreeSet<String> =
                    created.namespaces.iter().cloned().collect();
                if let Some(before) = &created.customers_before {
                    match customer_namespaces(&client).await {
                        Ok(now) => made.extend(now.difference(before).cloned()),
                        Err(error) => {
                            tracing::warn!(%error, "could not list the customer namespaces")
                        }
                    }
                }
                let namespaces: Api<Namespace> = Api::all(client);
                for name in &made {
                    if let Err(error) = namespaces.delete(name, &delete).await {
                        tracing::warn!(%error, name, "could not delete a test namespace");
                    }
                }
            });
        });
        let _ = cleanup.join();
    }
}
