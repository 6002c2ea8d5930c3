use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use minispod_kube_standin::TestCluster;
use serde_json::json;

#[tokio::test]
async fn status_changes_only_through_the_status_subresource() {
    minispod_kube_standin::require_kubernetes_if_asked();
    let cluster = TestCluster::start().await.unwrap();
    let node = cluster.create_node("n", &[]).await.unwrap();
    let name = node.metadata.name.unwrap();
    let nodes: Api<Node> = Api::all(cluster.client().await);
    let pp = PatchParams::default();
    let both = json!({"metadata": {"labels": {"a": "1"}}, "status": {"capacity": {"cpu": "99"}}});
    let main = nodes.patch(&name, &pp, &Patch::Merge(&both)).await.unwrap();
    assert_eq!(main.metadata.labels.as_ref().unwrap()["a"], "1");
    assert_eq!(
        main.status.as_ref().unwrap().capacity.as_ref().unwrap()["cpu"].0,
        "4"
    );

    let both = json!({"metadata": {"labels": {"b": "2"}}, "spec": {"unschedulable": true}, "status": {"capacity": {"cpu": "8"}}});
    let status = nodes
        .patch_status(&name, &pp, &Patch::Merge(&both))
        .await
        .unwrap();
    assert_eq!(status.status.unwrap().capacity.unwrap()["cpu"].0, "8");
    assert!(status.spec.unwrap_or_default().unschedulable.is_none());
    let got = nodes.get_status(&name).await.unwrap();
    assert_eq!(got.status.unwrap().capacity.unwrap()["cpu"].0, "8");
}

#[tokio::test]
async fn generation_counts_spec_changes_only() {
    minispod_kube_standin::require_kubernetes_if_asked();
    let cluster = TestCluster::start().await.unwrap();
    let ns = cluster.create_namespace().await.unwrap();
    let deployments: Api<Deployment> = Api::namespaced(cluster.client().await, &ns);
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "d"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "d"}},
                 "template": {"metadata": {"labels": {"app": "d"}},
                              "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]}}},
    }))
    .unwrap();
    let created = deployments
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    let pp = PatchParams::default();
    let labelled = deployments
        .patch(
            "d",
            &pp,
            &Patch::Merge(json!({"metadata": {"labels": {"x": "1"}}})),
        )
        .await
        .unwrap();
    assert_eq!(labelled.metadata.generation, Some(1));
    let scaled = deployments
        .patch("d", &pp, &Patch::Merge(json!({"spec": {"replicas": 3}})))
        .await
        .unwrap();
    assert_eq!(scaled.metadata.generation, Some(2));
}
