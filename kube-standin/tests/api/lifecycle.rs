//! What a real cluster does after a write, which the control plane's tests
//! must wait for: graceful pod deletion, the not-ready taint of a new
//! node, a namespace's `default` ServiceAccount, garbage collection, and
//! namespace termination.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, ServiceAccount};
use kube::Api;
use kube::api::{DeleteParams, PostParams, WatchEvent, WatchParams};
use minispod_kube_standin::TestCluster;
use serde_json::json;

use crate::api_error;

/// Polls `check` every 20 ms for at most 20 s.
async fn until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_deleted_pod_stays_terminating_until_its_kubelet_is_done() {
    minispod_kube_standin::require_kubernetes_if_asked();
    let cluster = TestCluster::start().await.unwrap();
    let node = cluster.create_node("n", &[]).await.unwrap();
    let node = node.metadata.name.unwrap();
    let ns = cluster.create_namespace().await.unwrap();
    cluster
        .create_pod(&ns, "p", &node, &[], &[], true, None)
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(cluster.client().await, &ns);
    let since = pods
        .get("p")
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut events = pods
        .watch(&WatchParams::default(), &since)
        .await
        .unwrap()
        .boxed();
    let answered = pods.delete("p", &DeleteParams::default()).await.unwrap();
    let answered = answered.left().expect("the pod, still there");
    assert!(answered.metadata.deletion_timestamp.is_some());
    assert_eq!(answered.metadata.deletion_grace_period_seconds, Some(30));
    let listed = pods.get("p").await.unwrap();
    assert!(listed.metadata.deletion_timestamp.is_some(), "Terminating");
    // A second delete with a longer period changes nothing.
    let again = pods
        .delete(
            "p",
            &DeleteParams {
                grace_period_seconds: Some(60),
                ..DeleteParams::default()
            },
        )
        .await
        .unwrap()
        .left()
        .unwrap();
    assert_eq!(again.metadata.deletion_grace_period_seconds, Some(30));
    cluster.pod_until_gone(&ns, "p").await.unwrap();
    // Watchers saw it Terminating (MODIFIED), then gone (DELETED).
    let mut seen = Vec::new();
    while let Ok(Some(event)) = tokio::time::timeout(Duration::from_secs(5), events.next()).await {
        match event.unwrap() {
            WatchEvent::Modified(p) => {
                seen.push(("MODIFIED", p.metadata.deletion_timestamp.is_some()))
            }
            WatchEvent::Deleted(p) => {
                seen.push(("DELETED", p.metadata.deletion_timestamp.is_some()));
                break;
            }
            _ => {}
        }
    }
    assert_eq!(seen.first(), Some(&("MODIFIED", true)), "{seen:?}");
    assert_eq!(seen.last(), Some(&("DELETED", true)), "{seen:?}");

    // A pod no node has taken goes at once.
    let pending: Pod = serde_json::from_value(json!({
        "metadata": {"name": "pending"},
        "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}],
                 "nodeSelector": {"nowhere": "true"}},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pending).await.unwrap();
    pods.delete("pending", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(api_error(pods.get("pending").await).1, 404);
}

#[tokio::test]
async fn a_pod_on_a_node_that_is_not_ready_stays_terminating() {
    minispod_kube_standin::require_kubernetes_if_asked();
    let cluster = TestCluster::start().await.unwrap();
    let node = cluster.create_node("n", &[]).await.unwrap();
    let node = node.metadata.name.unwrap();
    let ns = cluster.create_namespace().await.unwrap();
    cluster
        .create_pod(&ns, "p", &node, &[], &[], true, None)
        .await
        .unwrap();
    cluster
        .set_node_condition(&node, "Ready", "Unknown", "NodeStatusUnknown", "gone")
        .await
        .unwrap();
    let nodes: Api<Node> = Api::all(cluster.client().await);
    until("the unreachable taint", async || {
        nodes
            .get(&node)
            .await
            .unwrap()
            .spec
            .unwrap()
            .taints
            .is_some_and(|t| {
                t.iter()
                    .any(|t| t.key == "node.kubernetes.io/unreachable" && t.effect == "NoSchedule")
            })
    })
    .await;
    let pods: Api<Pod> = Api::namespaced(cluster.client().await, &ns);
    pods.delete("p", &DeleteParams::default()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        pods.get("p")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some(),
        "no kubelet finalizes it"
    );
    // The kubelet is back: it finishes the deletion.
    cluster
        .set_node_condition(&node, "Ready", "True", "KubeletReady", "ready")
        .await
        .unwrap();
    cluster.node_until_untainted(&node).await.unwrap();
    cluster.pod_until_gone(&ns, "p").await.unwrap();
}

#[tokio::test]
async fn a_new_node_is_tainted_not_ready_until_it_reports_ready() {
    minispod_kube_standin::require_kubernetes_if_asked();
    let cluster = TestCluster::start().await.unwrap();
    let nodes: Api<Node> = Api::all(cluster.client().await);
    let name = cluster.name("bare");
    let node: Node = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    let created = nodes.create(&PostParams::default(), &node).await.unwrap();
    let taints = created.spec.unwrap().taints.unwrap_or_default();
    assert!(
        taints
            .iter()
            .any(|t| t.key == "node.kubernetes.io/not-ready" && t.effect == "NoSchedule"),
        "{taints:?}"
    );
    nodes.delete(&name, &DeleteParams::default()).await.unwrap();
    // The fixture reports Ready; the taint goes.
    let ready = cluster.create_node("ready", &[]).await.unwrap();
    assert!(
        ready
            .spec
            .unwrap()
            .taints
            .unwrap_or_default()
            .iter()
            .all(|t| !t.key.starts_with("node.kubernetes.io/")),
    );
}

#[tokio::test]
async fn pods_wait_for_the_namespaces_default_service_account() {
    minispod_kube_standin::require_kubernetes_if_asked();
    let cluster = TestCluster::start().await.unwrap();
    let client = cluster.client().await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let name = cluster.name("sa");
    let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    namespaces
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap();
    cluster.delete_on_drop(&name);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &name);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "early"},
        "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]},
    }))
    .unwrap();
    // Too early (on a real cluster this may already pass: its controller
    // is quick; the stand-in's waits 100 ms).
    if cluster.standin().is_some() {
        let (reason, code, message) = api_error(pods.create(&PostParams::default(), &pod).await);
        assert_eq!((reason.as_str(), code), ("Forbidden", 403));
        assert_eq!(
            message,
            format!(
                "pods \"early\" is forbidden: error looking up service account {name}/default: serviceaccount \"default\" not found"
            )
        );
    }
    cluster.service_account_until(&name).await.unwrap();
    let accounts: Api<ServiceAccount> = Api::namespaced(client, &name);
    accounts.get("default").await.unwrap();
    let created = pods.create(&PostParams::default(), &pod).await.unwrap();
    assert_eq!(
        created.spec.unwrap().service_account_name.as_deref(),
        Some("default")
    );
}

#[tokio::test]
async fn pods_of_a_gone_owner_are_collected_and_a_deleted_namespace_empties_first() {
    minispod_kube_standin::require_kubernetes_if_asked();
    let cluster = TestCluster::start().await.unwrap();
    let node = cluster.create_node("n", &[("logs", "yes")]).await.unwrap();
    let node = node.metadata.name.unwrap();
    let ns = cluster.create_namespace().await.unwrap();
    let client = cluster.client().await;
    let sets: Api<DaemonSet> = Api::namespaced(client.clone(), &ns);
    let set: DaemonSet = serde_json::from_value(json!({
        "metadata": {"name": "logs"},
        "spec": {
            "selector": {"matchLabels": {"app": "logs"}},
            "updateStrategy": {"type": "OnDelete"},
            "template": {"metadata": {"labels": {"app": "logs"}}, "spec": {
                "nodeSelector": {"logs": "yes"},
                "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]}},
        },
    }))
    .unwrap();
    let set = sets.create(&PostParams::default(), &set).await.unwrap();
    let owner = k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
        api_version: "apps/v1".into(),
        kind: "DaemonSet".into(),
        name: "logs".into(),
        uid: set.metadata.uid.clone().unwrap(),
        controller: Some(true),
        ..Default::default()
    };
    cluster
        .create_pod(
            &ns,
            "logs-x",
            &node,
            &[("app", "logs")],
            &[],
            true,
            Some(owner),
        )
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        pods.get("logs-x")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_none(),
        "its owner is there"
    );
    sets.delete("logs", &DeleteParams::background())
        .await
        .unwrap();
    cluster.pod_until_gone(&ns, "logs-x").await.unwrap();

    // A namespace is Terminating while its pods are.
    cluster
        .create_pod(&ns, "last", &node, &[], &[], true, None)
        .await
        .unwrap();
    let namespaces: Api<Namespace> = Api::all(client);
    let answered = namespaces
        .delete(&ns, &DeleteParams::default())
        .await
        .unwrap()
        .left()
        .unwrap();
    assert_eq!(
        answered.status.unwrap().phase.as_deref(),
        Some("Terminating")
    );
    let (reason, code, _) = api_error(
        pods.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "late"},
                "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]}}))
            .unwrap(),
        )
        .await,
    );
    assert_eq!((reason.as_str(), code), ("Forbidden", 403));
    until("the namespace gone", async || {
        namespaces.get_opt(&ns).await.unwrap().is_none()
    })
    .await;
}
