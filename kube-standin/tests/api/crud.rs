use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod};
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use minispod_kube_standin::TestCluster;
use serde_json::json;

use crate::api_error;

fn config_map(name: &str, labels: &[(&str, &str)]) -> ConfigMap {
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some(name.into());
    cm.metadata.labels = Some(
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    cm.data = Some(BTreeMap::from([("k".to_string(), "v".to_string())]));
    cm
}

#[tokio::test]
async fn created_objects_get_server_metadata_and_can_be_listed_with_selectors() {
    minispod_kube_standin::require_kubernetes_if_asked();
    let cluster = TestCluster::start().await.unwrap();
    let ns = cluster.create_namespace().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(cluster.client().await, &ns);
    let pp = PostParams::default();
    let a = cms
        .create(&pp, &config_map("a", &[("app", "web"), ("tier", "front")]))
        .await
        .unwrap();
    cms.create(&pp, &config_map("b", &[("app", "web"), ("tier", "back")]))
        .await
        .unwrap();
    cms.create(&pp, &config_map("c", &[("app", "db")]))
        .await
        .unwrap();
    assert!(a.metadata.uid.is_some());
    assert!(a.metadata.creation_timestamp.is_some());
    assert!(a.metadata.resource_version.is_some());

    let names = |list: kube::core::ObjectList<ConfigMap>| {
        let mut names: Vec<String> = list
            .items
            .into_iter()
            .filter_map(|c| c.metadata.name)
            .collect();
        names.sort();
        names
    };
    let select = |s: &str| ListParams::default().labels(s);
    assert_eq!(
        names(cms.list(&select("app=web")).await.unwrap()),
        ["a", "b"]
    );
    assert_eq!(
        names(cms.list(&select("app=web,tier!=front")).await.unwrap()),
        ["b"]
    );
    assert_eq!(
        names(cms.list(&select("tier in (front,back)")).await.unwrap()),
        ["a", "b"]
    );
    assert_eq!(names(cms.list(&select("!tier")).await.unwrap()), ["c"]);
    assert_eq!(
        names(cms.list(&select("app notin (web)")).await.unwrap()),
        ["c"]
    );
    let by_name = ListParams::default().fields("metadata.name=b");
    assert_eq!(names(cms.list(&by_name).await.unwrap()), ["b"]);
    let list = cms.list(&ListParams::default()).await.unwrap();
    assert!(list.metadata.resource_version.is_some());
}

#[tokio::test]
async fn creating_twice_is_already_exists_and_a_missing_object_is_not_found() {
    minispod_kube_standin::require_kubernetes_if_asked();
    let cluster = TestCluster::start().await.unwrap();
    let ns = cluster.create_namespace().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(cluster.client().await, &ns);
    cms.create(&PostParams::default(), &config_map("a", &[]))
        .await
        .unwrap();
    let (reason, code, message) = api_error(
        cms.create(&PostParams::default(), &config_map("a", &[]))
            .await,
    );
    assert_eq!((reason.as_str(), code), ("AlreadyExists", 409));
    assert_eq!(message, "configmaps \"a\" already exists");
    let (reason, code, message) = api_error(cms.get("missing").await);
    assert_eq!((reason.as_str(), code), ("NotFound", 404));
    assert_eq!(message, "configmaps \"missing\" not found");
    let (reason, code, _) = api_error(cms.delete("missing", &DeleteParams::default()).await);
    assert_eq!((reason.as_str(), code), ("NotFound", 404));
}

#[tokio::test]
async fn creating_in_a_missing_namespace_is_not_found() {
    minispod_kube_standin::require_kubernetes_if_asked();
    let cluster = TestCluster::start().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(cluster.client().await, &cluster.name("nowhere"));
    let (reason, code, message) = api_error(
        cms.create(&PostParams::default(), &config_map("a", &[]))
            .await,
    );
    assert_eq!((reason.as_str(), code), ("NotFound", 404));
    assert!(message.starts_with("namespaces \""), "{message}");
}

#[tokio::test]
async fn generate_name_makes_a_fresh_name() {
    minispod_kube_standin::require_kubernetes_if_asked();
    let cluster = TestCluster::start().await.unwrap();
    let ns = cluster.create_namespace().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(cluster.client().await, &ns);
    let mut cm = config_map("", &[]);
    cm.metadata.name = None;
    cm.metadata.generate_name = Some("gen-".into());
    let created = cms.create(&PostParams::default(), &cm).await.unwrap();
    let name = created.metadata.name.unwrap();
    assert!(name.starts_with("gen-") && name.len() == 9, "{name}");
}

#[tokio::test]
async fn an_update_with_a_stale_resource_version_is_a_conflict() {
    minispod_kube_standin::require_kubernetes_if_asked();
    let cluster = TestCluster::start().await.unwrap();
    let ns = cluster.create_namespace().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(cluster.client().await, &ns);
    let first = cms
        .create(&PostParams::default(), &config_map("a", &[]))
        .await
        .unwrap();
    let mut second = first.clone();
    second.data = Some(BTreeMap::from([("k".to_string(), "2".to_string())]));
    cms.replace("a", &PostParams::default(), &second)
        .await
        .unwrap();
    let (reason, code, message) = api_error(cms.replace("a", &PostParams::default(), &first).await);
    assert_eq!((reason.as_str(), code), ("Conflict", 409));
    assert!(
        message.contains("the object has been modified"),
        "{message}"
    );
}

#[tokio::test]
async fn a_merge_patch_with_a_stale_resource_version_is_a_conflict() {
    minispod_kube_standin::require_kubernetes_if_asked();
    let cluster = TestCluster::start().await.unwrap();
    let ns = cluster.create_namespace().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(cluster.client().await, &ns);
    let first = cms
        .create(&PostParams::default(), &config_map("a", &[]))
        .await
        .unwrap();
    let stale = first.metadata.resource_version.clone().unwrap();
    let patch = json!({"metadata": {"resourceVersion": stale}, "data": {"k": "2"}});
    let patched = cms
        .patch("a", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    assert_eq!(patched.data.unwrap()["k"], "2");
    let (reason, code, _) = api_error(
        cms.patch("a", &PatchParams::default(), &Patch::Merge(&patch))
            .await,
    );
    assert_eq!((reason.as_str(), code), ("Conflict", 409));
    let removal = json!({"data": {"k": null}});
    let patched = cms
        .patch("a", &PatchParams::default(), &Patch::Merge(&removal))
        .await
        .unwrap();
    assert!(patched.data.unwrap_or_default().is_empty());
}

#[tokio::test]
async fn delete_preconditions_are_honoured() {
    minispod_kube_standin::require_kubernetes_if_asked();
    let cluster = TestCluster::start().await.unwrap();
    let ns = cluster.create_namespace().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(cluster.client().await, &ns);
    cms.create(&PostParams::default(), &config_map("a", &[]))
        .await
        .unwrap();
    let wrong = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: Some("not-it".into()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    let (reason, code, message) = api_error(cms.delete("a", &wrong).await);
    assert_eq!((reason.as_str(), code), ("Conflict", 409));
    assert!(
        message.contains("Precondition failed: UID in precondition: not-it"),
        "{message}"
    );
    cms.delete("a", &DeleteParams::default()).await.unwrap();
    assert_eq!(api_error(cms.get("a").await).1, 404);
}

#[tokio::test]
async fn the_start_namespaces_exist_and_pods_start_pending() {
    minispod_kube_standin::require_kubernetes_if_asked();
    let cluster = TestCluster::start().await.unwrap();
    let client = cluster.client().await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for name in ["default", "kube-system"] {
        namespaces.get(name).await.unwrap();
    }
    let node = cluster
        .create_node("worker", &[("role", "worker")])
        .await
        .unwrap();
    let node_name = node.metadata.name.clone().unwrap();
    let status = node.status.unwrap();
    assert_eq!(status.allocatable.unwrap()["cpu"].0, "4");
    let ready = status
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.status, "True");
    let nodes: Api<Node> = Api::all(client.clone());
    let by_label = nodes
        .list(&ListParams::default().labels("role=worker"))
        .await
        .unwrap();
    assert!(
        by_label
            .items
            .iter()
            .any(|n| n.metadata.name.as_deref() == Some(node_name.as_str()))
    );

    let ns = cluster.create_namespace().await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client, &ns);
    let mut pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "p"},
        "spec": {"nodeName": node_name, "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]},
    }))
    .unwrap();
    pod.status = Some(serde_json::from_value(json!({"phase": "Running"})).unwrap());
    let created = pods.create(&PostParams::default(), &pod).await.unwrap();
    assert_eq!(created.status.unwrap().phase.as_deref(), Some("Pending"));
    let on_node = pods
        .list(&ListParams::default().fields(&format!("spec.nodeName={node_name}")))
        .await
        .unwrap();
    assert_eq!(on_node.items.len(), 1);
}
