use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{Patch, PatchParams};
use minispod_kube_standin::TestCluster;
use serde_json::json;

use crate::api_error;

fn apply_as(manager: &str) -> PatchParams {
    PatchParams::apply(manager)
}

#[tokio::test]
async fn another_managers_labels_survive_and_omitted_labels_go() {
    minispod_kube_standin::require_kubernetes_if_asked();
    let cluster = TestCluster::start().await.unwrap();
    let node = cluster
        .create_node("n", &[("kubelet-label", "1")])
        .await
        .unwrap();
    let name = node.metadata.name.unwrap();
    let nodes: Api<Node> = Api::all(cluster.client().await);
    let ours = |labels: serde_json::Value| json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}});
    nodes
        .patch(
            &name,
            &apply_as("minispod"),
            &Patch::Apply(ours(json!({"minispod.io/a": "1", "minispod.io/b": "2"}))),
        )
        .await
        .unwrap();
    let theirs = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {"other": "x"}}});
    nodes
        .patch(&name, &apply_as("kubectl"), &Patch::Apply(theirs))
        .await
        .unwrap();
    let after = nodes
        .patch(
            &name,
            &apply_as("minispod"),
            &Patch::Apply(ours(json!({"minispod.io/a": "1"}))),
        )
        .await
        .unwrap();
    let labels = after.metadata.labels.unwrap();
    assert_eq!(labels.get("minispod.io/a").map(String::as_str), Some("1"));
    assert!(
        !labels.contains_key("minispod.io/b"),
        "our omitted label went: {labels:?}"
    );
    assert_eq!(labels.get("other").map(String::as_str), Some("x"));
    assert_eq!(labels.get("kubelet-label").map(String::as_str), Some("1"));
    let managers: Vec<_> = after
        .metadata
        .managed_fields
        .unwrap()
        .into_iter()
        .map(|m| (m.manager.unwrap(), m.operation.unwrap()))
        .collect();
    assert!(
        managers.contains(&("minispod".into(), "Apply".into())),
        "{managers:?}"
    );
    assert!(
        managers.contains(&("kubectl".into(), "Apply".into())),
        "{managers:?}"
    );
}

#[tokio::test]
async fn a_conflicting_apply_fails_without_force_and_takes_over_with_it() {
    minispod_kube_standin::require_kubernetes_if_asked();
    let cluster = TestCluster::start().await.unwrap();
    let node = cluster.create_node("n", &[]).await.unwrap();
    let name = node.metadata.name.unwrap();
    let nodes: Api<Node> = Api::all(cluster.client().await);
    let unschedulable = |value: bool| json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "spec": {"unschedulable": value}});
    nodes
        .patch(
            &name,
            &apply_as("kubectl"),
            &Patch::Apply(unschedulable(true)),
        )
        .await
        .unwrap();
    let (reason, code, message) = api_error(
        nodes
            .patch(
                &name,
                &apply_as("minispod"),
                &Patch::Apply(unschedulable(false)),
            )
            .await,
    );
    assert_eq!((reason.as_str(), code), ("Conflict", 409));
    assert_eq!(
        message,
        "Apply failed with 1 conflict: conflict with \"kubectl\": .spec.unschedulable"
    );
    let forced = nodes
        .patch(
            &name,
            &apply_as("minispod").force(),
            &Patch::Apply(unschedulable(false)),
        )
        .await
        .unwrap();
    assert_eq!(forced.spec.unwrap().unschedulable, Some(false));
    // kubectl no longer owns it: applying without the field leaves ours.
    let without = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}});
    let after = nodes
        .patch(&name, &apply_as("kubectl"), &Patch::Apply(without))
        .await
        .unwrap();
    assert_eq!(after.spec.unwrap().unschedulable, Some(false));
}

#[tokio::test]
async fn taints_are_one_atomic_field() {
    minispod_kube_standin::require_kubernetes_if_asked();
    let cluster = TestCluster::start().await.unwrap();
    let node = cluster.create_node("n", &[]).await.unwrap();
    let name = node.metadata.name.unwrap();
    let nodes: Api<Node> = Api::all(cluster.client().await);
    let taints = |key: &str| {
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
               "spec": {"taints": [{"key": key, "effect": "NoSchedule"}]}})
    };
    nodes
        .patch(&name, &apply_as("kubectl"), &Patch::Apply(taints("theirs")))
        .await
        .unwrap();
    let (_, code, message) = api_error(
        nodes
            .patch(&name, &apply_as("minispod"), &Patch::Apply(taints("ours")))
            .await,
    );
    assert_eq!(code, 409);
    assert!(message.ends_with(".spec.taints"), "{message}");
}

#[tokio::test]
async fn apply_needs_a_field_manager() {
    minispod_kube_standin::require_kubernetes_if_asked();
    let cluster = TestCluster::start().await.unwrap();
    let nodes: Api<Node> = Api::all(cluster.client().await);
    let name = cluster.name("never");
    let body = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}});
    let result = nodes
        .patch(&name, &PatchParams::default(), &Patch::Apply(body))
        .await;
    match result {
        // kube-rs itself refuses an apply without a manager.
        Err(kube::Error::BuildRequest(_)) => {}
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 400),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn an_apply_creates_a_missing_object() {
    minispod_kube_standin::require_kubernetes_if_asked();
    let cluster = TestCluster::start().await.unwrap();
    let ns = cluster.create_namespace().await.unwrap();
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(cluster.client().await, &ns);
    let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}});
    let created = cms
        .patch("c", &apply_as("minispod"), &Patch::Apply(body))
        .await
        .unwrap();
    assert_eq!(created.data.unwrap()["a"], "1");
    assert!(created.metadata.uid.is_some());
}
