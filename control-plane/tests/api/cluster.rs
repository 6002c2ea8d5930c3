//! The cluster link (issue #13): a control plane with `--kubeconfig`
//! against the stand-in API server (`kube-standin`), or a real cluster when
//! MINISPOD_TEST_KUBECONFIG names one. Fixtures play the kubelet: they
//! create Nodes and Pods through the API as a kubelet would.

use std::{future::Future, time::Duration};

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, PersistentVolumeClaim, Pod, Secret};
use kube::{
    Api,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use minispod_kube_standin::TestCluster;
use minispod_proto::v1 as pb;
use minispod_support::WORKER_ID_LABEL;
use serde_json::json;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::{
    helpers::{TestApp, authed, link_args, spawn_app_with},
    workers::{Admin, Stream, connect, connect_as, enroll, mtls},
};

/// A control plane linked to `cluster`, with a short offline-taint grace.
async fn linked(cluster: &TestCluster) -> TestApp {
    spawn_app_with(|a| {
        link_args(a, cluster.kubeconfig_path());
        a.fleet.metrics_flush_interval = Duration::from_millis(100);
    })
    .await
}

/// Polls `check` every 50 ms until it gives Some, for at most `secs`.
async fn until<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An enrolled worker with its stream open, and its id.
async fn online_worker(app: &TestApp, admin: &mut Admin, machine_id: &str) -> (String, Stream) {
    let token = admin.token(1, "").await.token;
    let agent = enroll(app, &token, machine_id).await.expect("enroll");
    let channel = mtls(app, &agent).await;
    let stream = connect(channel, machine_id).await.expect("connect");
    (agent.enrolled.worker_id, stream)
}

async fn link_state(admin: &mut Admin) -> pb::GetClusterLinkResponse {
    admin
        .client
        .get_cluster_link(authed(pb::GetClusterLinkRequest {}, &admin.token))
        .await
        .expect("GetClusterLink")
        .into_inner()
}

async fn get(admin: &Admin, id: &str) -> pb::Worker {
    let mut client = admin.client.clone();
    client
        .get_worker(authed(
            pb::GetWorkerRequest {
                lookup: Some(pb::get_worker_request::Lookup::Id(id.into())),
            },
            &admin.token,
        ))
        .await
        .expect("GetWorker")
        .into_inner()
        .worker
        .unwrap()
}

/// Waits until the worker satisfies `ok`; on a timeout, shows it.
pub(crate) async fn worker_until(
    admin: &Admin,
    id: &str,
    what: &str,
    ok: impl Fn(&pb::Worker) -> bool,
) -> pb::Worker {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let w = get(admin, id).await;
        if ok(&w) {
            return w;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}; the worker: {w:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the node satisfies `ok`.
async fn node_until(nodes: &Api<Node>, name: &str, what: &str, ok: impl Fn(&Node) -> bool) -> Node {
    until(20, what, || async {
        let n = nodes.get(name).await.ok()?;
        ok(&n).then_some(n)
    })
    .await
}

fn labels(n: &Node) -> std::collections::BTreeMap<String, String> {
    n.metadata.labels.clone().unwrap_or_default()
}

fn taints(n: &Node) -> Vec<(String, String)> {
    n.spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|t| (t.key, t.effect))
        .collect()
}

#[tokio::test]
async fn without_a_cluster_the_api_says_none_is_linked() {
    let app = spawn_app_with(|_| {}).await;
    let mut admin = Admin::of(&app).await;
    let link = link_state(&mut admin).await;
    assert_eq!(link.state, pb::ClusterLinkState::Unlinked as i32);
    let stats = admin
        .client
        .get_worker_stats(authed(pb::GetWorkerStatsRequest {}, &admin.token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.cluster_link, pb::ClusterLinkState::Unlinked as i32);
}

#[tokio::test]
async fn a_workers_figures_follow_its_node_and_its_pods() {
    let cluster = TestCluster::start().await.unwrap();
    let app = linked(&cluster).await;
    let mut admin = Admin::of(&app).await;
    app.until_linked(&admin.token).await;
    let (id, mut stream) = online_worker(&app, &mut admin, "m-figures").await;

    // Stream up, no node yet: NOT_READY, and why.
    let w = worker_until(&admin, &id, "NOT_READY without a node", |w| {
        w.status == pb::WorkerStatus::NotReady as i32
    })
    .await;
    assert!(
        w.not_ready_reason.contains("node not joined"),
        "{}",
        w.not_ready_reason
    );

    let node = cluster
        .create_node("figures", &[(WORKER_ID_LABEL, &id)])
        .await
        .unwrap();
    let node_name = node.metadata.name.unwrap();
    let ns = cluster.create_namespace().await.unwrap();
    cluster
        .create_pod(
            &ns,
            "a",
            &node_name,
            &[("app", "a")],
            &[("cpu", "250m"), ("memory", "128Mi")],
            true,
            None,
        )
        .await
        .unwrap();
    cluster
        .create_pod(
            &ns,
            "b",
            &node_name,
            &[("app", "b")],
            &[("cpu", "1"), ("memory", "1Gi")],
            true,
            None,
        )
        .await
        .unwrap();

    let w = worker_until(&admin, &id, "ACTIVE with its node's figures", |w| {
        w.status == pb::WorkerStatus::Active as i32 && w.pod_count == 2
    })
    .await;
    let n = w.node.as_ref().expect("the node");
    assert_eq!(n.name, node_name);
    assert!(n.ready && !n.stale);
    assert_eq!(n.kubelet_version, "v1.33.5+k3s1");
    assert_eq!(
        w.kubelet_version, "v1.33.5+k3s1",
        "the node's version, not the agent's guess"
    );
    assert_eq!(w.max_pods, 110);
    let allocated = w.allocated.unwrap();
    assert_eq!(
        (
            allocated.cpu_millicores,
            allocated.memory_bytes,
            allocated.pods
        ),
        (1250, (128 << 20) + (1 << 30), 2)
    );
    assert_eq!(w.allocatable.unwrap().memory_bytes, 8 << 30);
    assert_eq!(w.capacity.unwrap().cpu_millicores, 4000);
    assert!(w.not_ready_reason.is_empty());
    assert_eq!(allocated.storage_bytes, 0, "no volume on the node yet");

    // A volume provisioned on the node (its claim given the node, as the
    // scheduler does for K3s's local-path class) takes from the node's
    // disk: the worker's allocated storage counts it. A claim on no node
    // (network storage) takes nothing from any worker.
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(cluster.client().await, &ns);
    for (name, node) in [("local", Some(node_name.as_str())), ("network", None)] {
        let claim: PersistentVolumeClaim = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "annotations": node
                .map(|n| json!({"volume.kubernetes.io/selected-node": n}))
                .unwrap_or_else(|| json!({}))},
            "spec": {"accessModes": ["ReadWriteOnce"],
                     "resources": {"requests": {"storage": "3Gi"}}},
        }))
        .unwrap();
        claims.create(&PostParams::default(), &claim).await.unwrap();
    }
    let w = worker_until(&admin, &id, "the volume's storage allocated", |w| {
        w.allocated.as_ref().is_some_and(|a| a.storage_bytes > 0)
    })
    .await;
    assert_eq!(w.allocated.unwrap().storage_bytes, 3 << 30);
    let stats = admin
        .client
        .get_worker_stats(authed(pb::GetWorkerStatsRequest {}, &admin.token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.allocated.unwrap().storage_bytes, 3 << 30);
    assert_eq!(
        stats.headroom.unwrap().storage_bytes,
        w.allocatable.unwrap().storage_bytes - (3 << 30)
    );

    // A pod that goes away gives its requests back.
    let pods: Api<Pod> = Api::namespaced(cluster.client().await, &ns);
    pods.delete("b", &Default::default()).await.unwrap();
    let w = worker_until(&admin, &id, "one pod left", |w| w.pod_count == 1).await;
    assert_eq!(w.allocated.unwrap().cpu_millicores, 250);

    // Fleet totals over online workers, with headroom.
    let stats = admin
        .client
        .get_worker_stats(authed(pb::GetWorkerStatsRequest {}, &admin.token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.cluster_link, pb::ClusterLinkState::Connected as i32);
    assert_eq!(stats.online_allocatable.unwrap().cpu_millicores, 4000);
    assert_eq!(stats.allocated.unwrap().cpu_millicores, 250);
    assert_eq!(stats.headroom.unwrap().cpu_millicores, 3750);
    let link = link_state(&mut admin).await;
    assert_eq!(link.linked_nodes, 1);
    assert!(link.nodes >= 1);
    assert_eq!(link.field_manager, "minispod-control-plane");

    // The kubelet stops posting: NOT_READY with the kubelet's words; back.
    cluster
        .set_node_condition(
            &node_name,
            "Ready",
            "Unknown",
            "NodeStatusUnknown",
            "Kubelet stopped posting node status.",
        )
        .await
        .unwrap();
    let w = worker_until(&admin, &id, "NOT_READY from the node", |w| {
        w.status == pb::WorkerStatus::NotReady as i32
    })
    .await;
    assert_eq!(
        w.not_ready_reason,
        "node not ready: kubelet stopped posting node status"
    );
    cluster
        .set_node_condition(
            &node_name,
            "Ready",
            "True",
            "KubeletReady",
            "kubelet is posting ready status",
        )
        .await
        .unwrap();
    worker_until(&admin, &id, "ACTIVE again", |w| {
        w.status == pb::WorkerStatus::Active as i32
    })
    .await;
    stream.beat(true).await;
}

#[tokio::test]
async fn cordon_labels_and_taints_reach_the_node_and_others_survive() {
    let cluster = TestCluster::start().await.unwrap();
    let app = linked(&cluster).await;
    let mut admin = Admin::of(&app).await;
    app.until_linked(&admin.token).await;
    let (id, _stream) = online_worker(&app, &mut admin, "m-labels").await;
    let node = cluster
        .create_node("labels", &[(WORKER_ID_LABEL, &id), ("team", "infra")])
        .await
        .unwrap();
    let name = node.metadata.name.unwrap();
    let nodes: Api<Node> = Api::all(cluster.client().await);
    // Someone else's taint, as the node lifecycle controller would set it.
    nodes
        .patch(
            &name,
            &PatchParams { field_manager: Some("someone-else".into()), ..Default::default() },
            &Patch::Merge(json!({ "spec": { "taints": [{ "key": "example.com/theirs", "effect": "NoSchedule" }] } })),
        )
        .await
        .unwrap();
    worker_until(&admin, &id, "the node", |w| w.node.is_some()).await;

    admin
        .client
        .update_worker(authed(
            pb::UpdateWorkerRequest {
                id: id.clone(),
                labels: Some(pb::LabelMap {
                    labels: [("tier".to_owned(), "gold".to_owned())].into(),
                }),
                taints: Some(pb::TaintList {
                    taints: vec![pb::Taint {
                        key: "dedicated".into(),
                        value: "db".into(),
                        effect: "NoSchedule".into(),
                    }],
                }),
                notes: None,
            },
            &admin.token,
        ))
        .await
        .unwrap();
    admin
        .client
        .set_worker_schedulable(authed(
            pb::SetWorkerSchedulableRequest {
                id: id.clone(),
                schedulable: false,
            },
            &admin.token,
        ))
        .await
        .unwrap();
    let n = node_until(&nodes, &name, "labels, taint and cordon on the node", |n| {
        labels(n).get("tier").map(String::as_str) == Some("gold")
            && n.spec.as_ref().and_then(|s| s.unschedulable) == Some(true)
            && taints(n).contains(&("dedicated".into(), "NoSchedule".into()))
    })
    .await;
    assert_eq!(
        labels(&n).get("team").map(String::as_str),
        Some("infra"),
        "another manager's label survives"
    );
    assert!(
        taints(&n).contains(&("example.com/theirs".into(), "NoSchedule".into())),
        "another manager's taint survives"
    );
    let w = worker_until(&admin, &id, "the worker to show the cordoned node", |w| {
        w.node.as_ref().is_some_and(|n| n.unschedulable)
    })
    .await;
    assert!(w.cordoned);

    // Take them away again: only ours go.
    admin
        .client
        .update_worker(authed(
            pb::UpdateWorkerRequest {
                id: id.clone(),
                labels: Some(pb::LabelMap::default()),
                taints: Some(pb::TaintList::default()),
                notes: None,
            },
            &admin.token,
        ))
        .await
        .unwrap();
    admin
        .client
        .set_worker_schedulable(authed(
            pb::SetWorkerSchedulableRequest {
                id: id.clone(),
                schedulable: true,
            },
            &admin.token,
        ))
        .await
        .unwrap();
    // On a real cluster the node lifecycle controller mirrors the cordon
    // as the `node.kubernetes.io/unschedulable` taint and takes it away a
    // moment after the uncordon.
    let n = node_until(&nodes, &name, "our labels, taint and cordon gone", |n| {
        !labels(n).contains_key("tier")
            && n.spec.as_ref().and_then(|s| s.unschedulable) != Some(true)
            && !taints(n)
                .iter()
                .any(|t| t.0 == "dedicated" || t.0 == "node.kubernetes.io/unschedulable")
    })
    .await;
    assert_eq!(labels(&n).get("team").map(String::as_str), Some("infra"));
    assert_eq!(
        labels(&n).get(WORKER_ID_LABEL),
        Some(&id),
        "the worker id label stays"
    );
    assert_eq!(
        taints(&n),
        vec![("example.com/theirs".to_owned(), "NoSchedule".to_owned())]
    );
}

#[tokio::test]
async fn a_lost_stream_taints_the_node_noexecute_after_the_grace_and_reconnecting_removes_it() {
    let cluster = TestCluster::start().await.unwrap();
    let app = linked(&cluster).await;
    let mut admin = Admin::of(&app).await;
    app.until_linked(&admin.token).await;
    let token = admin.token(0, "").await.token;
    let agent = enroll(&app, &token, "m-offline").await.unwrap();
    let id = agent.enrolled.worker_id.clone();
    let stream = connect(mtls(&app, &agent).await, "m-offline")
        .await
        .unwrap();
    let node = cluster
        .create_node("offline", &[(WORKER_ID_LABEL, &id)])
        .await
        .unwrap();
    let name = node.metadata.name.unwrap();
    worker_until(&admin, &id, "ACTIVE", |w| {
        w.status == pb::WorkerStatus::Active as i32
    })
    .await;
    let nodes: Api<Node> = Api::all(cluster.client().await);

    // The agent dies: its connection drops with the stream.
    let dropped = std::time::Instant::now();
    drop(stream);
    let n = node_until(&nodes, &name, "the offline taint", |n| {
        taints(n).contains(&("minispod.dev/offline".into(), "NoExecute".into()))
    })
    .await;
    let after = dropped.elapsed();
    assert!(
        after >= Duration::from_millis(300),
        "not before the grace: {after:?}"
    );
    let t = n
        .spec
        .unwrap()
        .taints
        .unwrap()
        .into_iter()
        .find(|t| t.key == "minispod.dev/offline")
        .unwrap();
    assert!(
        t.time_added.is_some(),
        "a NoExecute taint says when it was added"
    );

    // It comes back: the taint goes.
    let _back = connect(mtls(&app, &agent).await, "m-offline")
        .await
        .unwrap();
    node_until(&nodes, &name, "the taint removed", |n| {
        !taints(n).iter().any(|t| t.0 == "minispod.dev/offline")
    })
    .await;
}

#[tokio::test]
async fn maintenance_drains_the_node_through_evictions_respecting_a_disruption_budget() {
    let cluster = TestCluster::start().await.unwrap();
    let app = linked(&cluster).await;
    let mut admin = Admin::of(&app).await;
    app.until_linked(&admin.token).await;
    let (id, _stream) = online_worker(&app, &mut admin, "m-drain").await;
    let node = cluster
        .create_node("drain", &[(WORKER_ID_LABEL, &id)])
        .await
        .unwrap();
    let name = node.metadata.name.unwrap();
    let elsewhere = cluster
        .create_node("elsewhere", &[])
        .await
        .unwrap()
        .metadata
        .name
        .unwrap();
    let ns = cluster.create_namespace().await.unwrap();
    // Two replicas of "web" here, a budget that wants one of them up, a
    // plain pod, and a DaemonSet pod that stays.
    for p in ["web-1", "web-2"] {
        cluster
            .create_pod(
                &ns,
                p,
                &name,
                &[("app", "web")],
                &[("cpu", "100m")],
                true,
                None,
            )
            .await
            .unwrap();
    }
    cluster
        .create_pdb(&ns, "web", &[("app", "web")], 1)
        .await
        .unwrap();
    cluster
        .create_pod(&ns, "batch", &name, &[("app", "batch")], &[], true, None)
        .await
        .unwrap();
    // The DaemonSet exists (the garbage collector deletes pods whose
    // owner does not); its controller would run it on the drained node.
    let sets: Api<DaemonSet> = Api::namespaced(cluster.client().await, &ns);
    let set: DaemonSet = serde_json::from_value(json!({
        "metadata": {"name": "logs"},
        "spec": {
            "selector": {"matchLabels": {"app": "logs"}},
            "updateStrategy": {"type": "OnDelete"},
            "template": {"metadata": {"labels": {"app": "logs"}}, "spec": {
                "nodeSelector": {WORKER_ID_LABEL: id},
                "containers": [{"name": "logs", "image": "registry.k8s.io/pause:3.10"}]}},
        },
    }))
    .unwrap();
    let set = sets.create(&PostParams::default(), &set).await.unwrap();
    let daemon = k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
        api_version: "apps/v1".into(),
        kind: "DaemonSet".into(),
        name: "logs".into(),
        uid: set.metadata.uid.unwrap(),
        controller: Some(true),
        ..Default::default()
    };
    cluster
        .create_pod(
            &ns,
            "logs-x",
            &name,
            &[("app", "logs")],
            &[],
            true,
            Some(daemon),
        )
        .await
        .unwrap();
    worker_until(&admin, &id, "the pods counted", |w| w.pod_count == 4).await;

    admin
        .client
        .set_worker_status(authed(
            pb::SetWorkerStatusRequest {
                id: id.clone(),
                status: pb::WorkerStatus::Maintenance as i32,
            },
            &admin.token,
        ))
        .await
        .unwrap();
    let nodes: Api<Node> = Api::all(cluster.client().await);
    node_until(&nodes, &name, "the node cordoned", |n| {
        n.spec.as_ref().and_then(|s| s.unschedulable) == Some(true)
    })
    .await;
    // One web pod may go, the other is held by the budget.
    let w = worker_until(&admin, &id, "the drain blocked by the budget", |w| {
        w.drain
            .as_ref()
            .is_some_and(|d| d.state == pb::DrainState::Blocked as i32)
    })
    .await;
    let d = w.drain.unwrap();
    assert!(d.error.contains("disruption budget"), "{}", d.error);
    // Evicted pods are Terminating until their kubelet is done.
    cluster.pod_until_gone(&ns, "batch").await.unwrap();
    let pods: Api<Pod> = Api::namespaced(cluster.client().await, &ns);
    let left: Vec<String> = until(20, "one web pod gone", || async {
        let left: Vec<String> = pods
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .filter_map(|p| p.metadata.name)
            .collect();
        (left.iter().filter(|p| p.starts_with("web-")).count() == 1).then_some(left)
    })
    .await;
    assert!(
        left.contains(&"logs-x".to_owned()),
        "DaemonSet pods stay: {left:?}"
    );
    assert!(!left.contains(&"batch".to_owned()), "{left:?}");
    assert_eq!(
        left.iter().filter(|p| p.starts_with("web-")).count(),
        1,
        "{left:?}"
    );

    // The evicted replica comes up elsewhere (its controller's work): the
    // budget allows the last one to go.
    cluster
        .create_pod(
            &ns,
            "web-3",
            &elsewhere,
            &[("app", "web")],
            &[("cpu", "100m")],
            true,
            None,
        )
        .await
        .unwrap();
    let w = worker_until(&admin, &id, "the drain done", |w| {
        w.drain
            .as_ref()
            .is_some_and(|d| d.state == pb::DrainState::Done as i32)
    })
    .await;
    let d = w.drain.unwrap();
    assert_eq!((d.pods_evicted, d.pods_remaining), (3, 0));
    assert!(d.finished_at.is_some());

    // Leaving maintenance uncordons the node.
    admin
        .client
        .set_worker_status(authed(
            pb::SetWorkerStatusRequest {
                id: id.clone(),
                status: pb::WorkerStatus::Active as i32,
            },
            &admin.token,
        ))
        .await
        .unwrap();
    node_until(&nodes, &name, "the node uncordoned", |n| {
        n.spec.as_ref().and_then(|s| s.unschedulable) != Some(true)
    })
    .await;
}

#[tokio::test]
async fn each_enrollment_gets_a_bootstrap_token_of_its_own() {
    let cluster = TestCluster::start().await.unwrap();
    let app = linked(&cluster).await;
    let mut admin = Admin::of(&app).await;
    app.until_linked(&admin.token).await;
    let token = admin.token(0, "").await.token;
    let a = enroll(&app, &token, "m-token-a").await.unwrap().enrolled;
    let b = enroll(&app, &token, "m-token-b").await.unwrap().enrolled;
    assert_ne!(a.k3s_token, b.k3s_token);
    let secrets: Api<Secret> = Api::namespaced(cluster.client().await, "kube-system");
    for e in [&a, &b] {
        // K10<sha256 of the cluster CA>::<id>.<secret>
        let (prefix, credentials) = e.k3s_token.split_once("::").expect("the secure K3s form");
        assert!(
            prefix.starts_with("K10") && prefix.len() == 3 + 64,
            "{prefix}"
        );
        let (token_id, secret) = credentials.split_once('.').unwrap();
        assert_eq!((token_id.len(), secret.len()), (6, 16));
        let s = secrets
            .get(&format!("bootstrap-token-{token_id}"))
            .await
            .expect("the token's Secret");
        assert_eq!(s.type_.as_deref(), Some("bootstrap.kubernetes.io/token"));
        let data = s.data.unwrap();
        assert_eq!(data["token-secret"].0, secret.as_bytes());
        assert_eq!(data["usage-bootstrap-authentication"].0, b"true");
        assert_eq!(s.metadata.labels.unwrap()[WORKER_ID_LABEL], e.worker_id);
        let expiration = String::from_utf8(data["expiration"].0.clone()).unwrap();
        assert!(
            expiration.ends_with('Z') && expiration.len() == 20,
            "{expiration}"
        );
    }
}

#[tokio::test]
async fn losing_the_api_server_shows_and_the_link_recovers_without_touching_the_streams() {
    let cluster = TestCluster::start().await.unwrap();
    let app = linked(&cluster).await;
    let mut admin = Admin::of(&app).await;
    app.until_linked(&admin.token).await;
    let (id, mut stream) = online_worker(&app, &mut admin, "m-lost").await;
    let node = cluster
        .create_node("lost", &[(WORKER_ID_LABEL, &id)])
        .await
        .unwrap();
    let name = node.metadata.name.unwrap();
    worker_until(&admin, &id, "ACTIVE", |w| {
        w.status == pb::WorkerStatus::Active as i32
    })
    .await;
    let mut health = HealthClient::new(app.channel.clone());
    let check = |h: &mut HealthClient<_>| {
        let mut h = h.clone();
        async move {
            h.check(HealthCheckRequest {
                service: "minispod.cluster".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status
        }
    };
    until(5, "health SERVING", || {
        let mut h = health.clone();
        async move { (check(&mut h).await == ServingStatus::Serving as i32).then_some(()) }
    })
    .await;

    cluster.cut();
    let token = admin.token.clone();
    let client = admin.client.clone();
    until(20, "the link LOST", || {
        let (mut client, token) = (client.clone(), token.clone());
        async move {
            let r = client
                .get_cluster_link(authed(pb::GetClusterLinkRequest {}, &token))
                .await
                .ok()?
                .into_inner();
            (r.state == pb::ClusterLinkState::Lost as i32 && !r.error.is_empty()).then_some(())
        }
    })
    .await;
    let w = get(&admin, &id).await;
    assert!(w.node.unwrap().stale, "the last figures seen, marked stale");
    assert_eq!(
        w.status,
        pb::WorkerStatus::Active as i32,
        "a lost link is not a lost node"
    );
    until(5, "health NOT_SERVING", || {
        let mut h = health.clone();
        async move { (check(&mut h).await == ServingStatus::NotServing as i32).then_some(()) }
    })
    .await;
    let overall = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(
        overall,
        ServingStatus::Serving as i32,
        "the control plane itself still serves"
    );
    // The agent's stream does not notice.
    stream.beat(true).await;
    // A change made meanwhile reaches the node once the link is back.
    admin
        .client
        .update_worker(authed(
            pb::UpdateWorkerRequest {
                id: id.clone(),
                labels: Some(pb::LabelMap {
                    labels: [("during".to_owned(), "outage".to_owned())].into(),
                }),
                taints: None,
                notes: None,
            },
            &admin.token,
        ))
        .await
        .unwrap();

    cluster.restore();
    app.until_linked(&admin.token).await;
    let nodes: Api<Node> = Api::all(cluster.client().await);
    node_until(&nodes, &name, "the change made during the outage", |n| {
        labels(n).get("during").map(String::as_str) == Some("outage")
    })
    .await;
    let w = worker_until(&admin, &id, "fresh figures", |w| {
        w.node.as_ref().is_some_and(|n| !n.stale)
    })
    .await;
    assert_eq!(w.status, pb::WorkerStatus::Active as i32);
    stream.beat(true).await;
}

#[tokio::test]
async fn an_agent_of_the_daemonset_names_its_node_and_the_control_plane_labels_it() {
    let cluster = TestCluster::start().await.unwrap();
    let app = linked(&cluster).await;
    let mut admin = Admin::of(&app).await;
    app.until_linked(&admin.token).await;
    // A node already in the cluster, without our label.
    let node = cluster
        .create_node("daemonset", &[("kubernetes.io/os", "linux")])
        .await
        .unwrap();
    let name = node.metadata.name.unwrap();
    // A live view open from the start must end where the store does.
    let mut watch = admin
        .client
        .watch_workers(authed(pb::WatchWorkersRequest::default(), &admin.token))
        .await
        .unwrap()
        .into_inner();
    let token = admin.token(1, "").await.token;
    let agent = enroll(&app, &token, "m-daemonset").await.unwrap();
    let id = agent.enrolled.worker_id.clone();
    let mut stream = connect_as(mtls(&app, &agent).await, "m-daemonset", &name)
        .await
        .unwrap();
    // Heartbeats while the test waits: on a loaded machine the waits below
    // can outlast the silence deadline of a stream that says nothing.
    let beating = tokio::spawn(async move {
        loop {
            stream.beat(true).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let nodes: Api<Node> = Api::all(cluster.client().await);
    let n = node_until(
        &nodes,
        &name,
        "the worker-id label on the named node",
        |n| labels(n).get(WORKER_ID_LABEL) == Some(&id),
    )
    .await;
    assert_eq!(
        labels(&n).get("kubernetes.io/os").map(String::as_str),
        Some("linux")
    );
    let w = worker_until(&admin, &id, "ACTIVE with the node", |w| {
        w.status == pb::WorkerStatus::Active as i32 && w.node.is_some()
    })
    .await;
    assert_eq!(w.node.unwrap().name, name);
    // The watcher's last word on the worker is ACTIVE too (it was left on
    // NOT_READY "node not joined" when the node reconciler published a row
    // read before the hello). Events for it may still be on their way.
    let mut last = None;
    let quiet = Duration::from_secs(2);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while let Ok(Some(ev)) = tokio::time::timeout(quiet, watch.message())
        .await
        .map(Result::unwrap)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the watch never went quiet"
        );
        if ev.r#type == pb::WorkerEventType::Upserted as i32
            && let Some(w) = ev.worker.filter(|w| w.id == id)
        {
            last = Some(w.status);
        }
    }
    assert_eq!(
        last,
        Some(pb::WorkerStatus::Active as i32),
        "the watch ends on the stored status"
    );
    beating.abort();
}

#[tokio::test]
async fn a_node_the_control_plane_sees_after_its_agent_named_it_is_labelled_too() {
    // A DaemonSet agent can say hello before the control plane's node
    // watch has seen its node (the watch lags, or the node is new): the
    // node's first event must still bring the worker's label.
    let cluster = TestCluster::start().await.unwrap();
    let app = linked(&cluster).await;
    let mut admin = Admin::of(&app).await;
    app.until_linked(&admin.token).await;
    // The name the fixture below gives the node, known before it exists.
    let name = cluster.name("late");
    let token = admin.token(1, "").await.token;
    let agent = enroll(&app, &token, "m-late-node").await.unwrap();
    let id = agent.enrolled.worker_id.clone();
    let mut stream = connect_as(mtls(&app, &agent).await, "m-late-node", &name)
        .await
        .unwrap();
    worker_until(&admin, &id, "NOT_READY: no node yet", |w| {
        w.status == pb::WorkerStatus::NotReady as i32
    })
    .await;
    stream.beat(true).await;
    let beating = tokio::spawn(async move {
        loop {
            stream.beat(true).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let created = cluster
        .create_node("late", &[("kubernetes.io/os", "linux")])
        .await
        .unwrap();
    assert_eq!(created.metadata.name.as_deref(), Some(name.as_str()));
    let nodes: Api<Node> = Api::all(cluster.client().await);
    node_until(&nodes, &name, "the worker-id label on the late node", |n| {
        labels(n).get(WORKER_ID_LABEL) == Some(&id)
    })
    .await;
    let w = worker_until(&admin, &id, "ACTIVE with the node", |w| {
        w.status == pb::WorkerStatus::Active as i32 && w.node.is_some()
    })
    .await;
    assert_eq!(w.node.unwrap().name, name);
    beating.abort();
}

#[tokio::test]
async fn deleting_a_worker_drains_and_deletes_its_node() {
    let cluster = TestCluster::start().await.unwrap();
    let app = linked(&cluster).await;
    let mut admin = Admin::of(&app).await;
    app.until_linked(&admin.token).await;
    let (id, _stream) = online_worker(&app, &mut admin, "m-delete").await;
    let name = cluster
        .create_node("deleted", &[(WORKER_ID_LABEL, &id)])
        .await
        .unwrap()
        .metadata
        .name
        .unwrap();
    let ns = cluster.create_namespace().await.unwrap();
    cluster
        .create_pod(
            &ns,
            "app",
            &name,
            &[("app", "x")],
            &[("cpu", "100m")],
            true,
            None,
        )
        .await
        .unwrap();
    worker_until(&admin, &id, "the pod counted", |w| w.pod_count == 1).await;

    admin.delete(&id).await;
    let nodes: Api<Node> = Api::all(cluster.client().await);
    until(20, "the node deleted", || async {
        nodes
            .get_opt(&name)
            .await
            .ok()
            .flatten()
            .is_none()
            .then_some(())
    })
    .await;
    // The drain waited for the evicted pod to be gone (finalized by its
    // kubelet) before the node went.
    let pods: Api<Pod> = Api::namespaced(cluster.client().await, &ns);
    assert!(
        pods.get_opt("app").await.unwrap().is_none(),
        "the pod was evicted first"
    );
    if let Some(standin) = cluster.standin() {
        let evicted = standin.requests().iter().any(|r| {
            r.verb == minispod_kube_standin::Verb::Evict && r.path.ends_with("/pods/app/eviction")
        });
        assert!(evicted, "through the Eviction API, not a delete");
    }
}

#[tokio::test]
async fn a_live_view_gets_the_nodes_figures_with_the_metrics() {
    let cluster = TestCluster::start().await.unwrap();
    let app = linked(&cluster).await;
    let mut admin = Admin::of(&app).await;
    app.until_linked(&admin.token).await;
    let (id, mut stream) = online_worker(&app, &mut admin, "m-watch").await;
    let name = cluster
        .create_node("watched", &[(WORKER_ID_LABEL, &id)])
        .await
        .unwrap()
        .metadata
        .name
        .unwrap();
    let ns = cluster.create_namespace().await.unwrap();
    cluster
        .create_pod(&ns, "p", &name, &[], &[("cpu", "500m")], true, None)
        .await
        .unwrap();
    worker_until(&admin, &id, "the pod counted", |w| w.pod_count == 1).await;
    let mut watch = admin
        .client
        .watch_workers(authed(
            pb::WatchWorkersRequest {
                include_metrics: true,
            },
            &admin.token,
        ))
        .await
        .unwrap()
        .into_inner();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        stream.beat(true).await;
        let ev = tokio::time::timeout_at(deadline, watch.message())
            .await
            .expect("a metrics event")
            .unwrap()
            .unwrap();
        if ev.r#type == pb::WorkerEventType::Metrics as i32
            && ev.worker.as_ref().is_some_and(|w| w.id == id)
        {
            let w = ev.worker.unwrap();
            assert_eq!(w.pod_count, 1);
            assert_eq!(w.allocated.unwrap().cpu_millicores, 500);
            assert_eq!(w.max_pods, 110);
            assert_eq!(w.capacity.unwrap().memory_bytes, 8 << 30);
            break;
        }
    }
}
