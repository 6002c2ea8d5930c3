use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Api;
use kube::api::EvictParams;
use minispod_kube_standin::TestCluster;

use crate::api_error;

async fn wait_for_budget(pdbs: &Api<PodDisruptionBudget>, name: &str, allowed: i32) {
    // A real disruption controller updates the status shortly after.
    for _ in 0..100 {
        let status = pdbs.get(name).await.unwrap().status.unwrap_or_default();
        if status.disruptions_allowed == allowed {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the budget never allowed {allowed} disruptions");
}

#[tokio::test]
async fn eviction_respects_the_disruption_budget() {
    minispod_kube_standin::require_kubernetes_if_asked();
    let cluster = TestCluster::start().await.unwrap();
    let node = cluster.create_node("n", &[]).await.unwrap();
    let node = node.metadata.name.unwrap();
    let ns = cluster.create_namespace().await.unwrap();
    let web = [("app", "web")];
    for name in ["web-1", "web-2"] {
        cluster
            .create_pod(&ns, name, &node, &web, &[("cpu", "100m")], true, None)
            .await
            .unwrap();
    }
    cluster
        .create_pod(&ns, "web-3", &node, &web, &[], false, None)
        .await
        .unwrap();
    cluster.create_pdb(&ns, "web", &web, 2).await.unwrap();
    let client = cluster.client().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client, &ns);
    wait_for_budget(&pdbs, "web", 0).await;
    let status = pdbs.get("web").await.unwrap().status.unwrap();
    assert_eq!(
        (
            status.current_healthy,
            status.desired_healthy,
            status.expected_pods
        ),
        (2, 2, 3)
    );

    let (reason, code, message) = api_error(pods.evict("web-1", &EvictParams::default()).await);
    assert_eq!((reason.as_str(), code), ("TooManyRequests", 429));
    assert_eq!(
        message,
        "Cannot evict pod as it would violate the pod's disruption budget."
    );
    if let Some(standin) = cluster.standin() {
        let refused = standin
            .requests()
            .into_iter()
            .rev()
            .find(|r| r.status == 429)
            .unwrap();
        assert_eq!(refused.verb, minispod_kube_standin::Verb::Evict);
    }

    cluster.set_pod_ready(&ns, "web-3", true).await.unwrap();
    wait_for_budget(&pdbs, "web", 1).await;
    pods.evict("web-1", &EvictParams::default()).await.unwrap();
    // Evicted is deleted gracefully: Terminating (and no longer healthy)
    // until its kubelet has stopped it.
    let terminating = pods.get("web-1").await.unwrap();
    assert!(terminating.metadata.deletion_timestamp.is_some());
    assert_eq!(terminating.metadata.deletion_grace_period_seconds, Some(30));
    wait_for_budget(&pdbs, "web", 0).await;
    cluster.pod_until_gone(&ns, "web-1").await.unwrap();
}

#[tokio::test]
async fn evicting_a_missing_pod_is_not_found() {
    minispod_kube_standin::require_kubernetes_if_asked();
    let cluster = TestCluster::start().await.unwrap();
    let ns = cluster.create_namespace().await.unwrap();
    let pods: Api<Pod> = Api::namespaced(cluster.client().await, &ns);
    let (reason, code, _) = api_error(pods.evict("missing", &EvictParams::default()).await);
    assert_eq!((reason.as_str(), code), ("NotFound", 404));
}

#[tokio::test]
async fn a_pod_under_two_budgets_cannot_be_evicted() {
    minispod_kube_standin::require_kubernetes_if_asked();
    let cluster = TestCluster::start().await.unwrap();
    let node = cluster.create_node("n", &[]).await.unwrap();
    let node = node.metadata.name.unwrap();
    let ns = cluster.create_namespace().await.unwrap();
    cluster
        .create_pod(&ns, "p", &node, &[("app", "web")], &[], true, None)
        .await
        .unwrap();
    cluster
        .create_pdb(&ns, "one", &[("app", "web")], 0)
        .await
        .unwrap();
    cluster.create_pdb(&ns, "two", &[], 0).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(cluster.client().await, &ns);
    let (_, code, message) = api_error(pods.evict("p", &EvictParams::default()).await);
    assert_eq!(code, 500);
    assert!(
        message.contains("more than one PodDisruptionBudget"),
        "{message}"
    );
}
