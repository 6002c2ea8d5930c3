//! The namespace guard rails the control plane writes per customer:
//! ResourceQuota, LimitRange and NetworkPolicy.

use k8s_openapi::api::core::v1::{LimitRange, ResourceQuota};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams};
use minispod_kube_standin::TestCluster;
use serde_json::json;

use crate::api_error;

fn apply() -> PatchParams {
    PatchParams::apply("minispod-control-plane").force()
}

#[tokio::test]
async fn discovery_lists_quotas_limit_ranges_and_network_policies() {
    minispod_kube_standin::require_kubernetes_if_asked();
    let cluster = TestCluster::start().await.unwrap();
    let client = cluster.client().await;
    let core = client.list_core_api_resources("v1").await.unwrap();
    let names: Vec<&str> = core.resources.iter().map(|r| r.name.as_str()).collect();
    for name in ["resourcequotas", "resourcequotas/status", "limitranges"] {
        assert!(names.contains(&name), "{name} in {names:?}");
    }
    assert!(!names.contains(&"limitranges/status"));
    let networking = client
        .list_api_group_resources("networking.k8s.io/v1")
        .await
        .unwrap();
    let policy = networking
        .resources
        .iter()
        .find(|r| r.name == "networkpolicies")
        .expect("networkpolicies are listed");
    assert!(policy.namespaced);
    assert_eq!(policy.kind, "NetworkPolicy");
}

#[tokio::test]
async fn quotas_limit_ranges_and_network_policies_round_trip_through_apply() {
    minispod_kube_standin::require_kubernetes_if_asked();
    let cluster = TestCluster::start().await.unwrap();
    let ns = cluster.create_namespace().await.unwrap();
    let client = cluster.client().await;

    let quotas: Api<ResourceQuota> = Api::namespaced(client.clone(), &ns);
    let quota = json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "quota"},
        "spec": {"hard": {"requests.cpu": "2", "requests.memory": "4Gi", "pods": "10"}}});
    let applied = quotas
        .patch("quota", &apply(), &Patch::Apply(&quota))
        .await
        .unwrap();
    let hard = applied.spec.unwrap().hard.unwrap();
    assert_eq!(hard["requests.memory"].0, "4Gi");
    assert_eq!(hard["pods"].0, "10");

    let ranges: Api<LimitRange> = Api::namespaced(client.clone(), &ns);
    let range = json!({"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "limits"},
        "spec": {"limits": [{"type": "Container", "default": {"cpu": "500m", "memory": "512Mi"},
                             "defaultRequest": {"cpu": "100m", "memory": "128Mi"}}]}});
    ranges
        .patch("limits", &apply(), &Patch::Apply(&range))
        .await
        .unwrap();
    let got = ranges.get("limits").await.unwrap();
    let limit = &got.spec.unwrap().limits[0];
    assert_eq!(limit.type_, "Container");
    assert_eq!(limit.default.as_ref().unwrap()["memory"].0, "512Mi");

    let policies: Api<NetworkPolicy> = Api::namespaced(client, &ns);
    let policy = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "same-namespace"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"],
                 "ingress": [{"from": [{"podSelector": {}}]}]}});
    let created = policies
        .patch("same-namespace", &apply(), &Patch::Apply(&policy))
        .await
        .unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    let managers: Vec<String> = created
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert_eq!(managers, ["minispod-control-plane"]);
    let mut changed = policy.clone();
    changed["spec"]["policyTypes"] = json!(["Ingress", "Egress"]);
    let changed = policies
        .patch("same-namespace", &apply(), &Patch::Apply(&changed))
        .await
        .unwrap();
    assert_eq!(changed.metadata.generation, Some(2));
    assert_eq!(
        changed.spec.unwrap().policy_types.unwrap(),
        ["Ingress", "Egress"]
    );

    policies
        .delete("same-namespace", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(api_error(policies.get("same-namespace").await).1, 404);
    ranges
        .delete("limits", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(api_error(ranges.get("limits").await).1, 404);
}
