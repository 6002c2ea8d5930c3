use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

use crate::standin;

#[tokio::test]
async fn the_request_log_records_verbs_managers_and_bodies() {
    let (standin, client) = standin().await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some("c".into());
    cms.create(&PostParams::default(), &cm).await.unwrap();
    let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}});
    cms.patch(
        "c",
        &PatchParams::apply("minispod").force(),
        &Patch::Apply(body.clone()),
    )
    .await
    .unwrap();
    let log = standin.requests();
    let apply = log
        .iter()
        .find(|r| r.verb == minispod_kube_standin::Verb::Patch)
        .unwrap();
    assert_eq!(apply.field_manager.as_deref(), Some("minispod"));
    assert!(apply.force);
    assert_eq!(
        apply.content_type.as_deref(),
        Some("application/apply-patch+yaml")
    );
    assert_eq!(apply.body.as_ref(), Some(&body));
    assert_eq!(apply.status, 200);
    assert!(
        log.iter()
            .any(|r| r.verb == minispod_kube_standin::Verb::Create && r.status == 201)
    );
}

#[tokio::test]
async fn strategic_merge_and_json_patches_are_unsupported_media_types() {
    let (_standin, client) = standin().await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some("c".into());
    cms.create(&PostParams::default(), &cm).await.unwrap();
    let result = cms
        .patch(
            "c",
            &PatchParams::default(),
            &Patch::Strategic(json!({"data": {"a": "1"}})),
        )
        .await;
    assert_eq!(crate::api_error(result).1, 415);
}

#[tokio::test]
async fn mutating_bodies_are_dumped_as_complete_objects() {
    let dir = tempfile::tempdir().unwrap();
    let settings = minispod_kube_standin::Settings {
        dump_dir: Some(dir.path().to_path_buf()),
        ..minispod_kube_standin::Settings::default()
    };
    let (_standin, client) = crate::standin_with(settings).await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some("c".into());
    cms.create(&PostParams::default(), &cm).await.unwrap();
    let patch = json!({"data": {"a": "1"}});
    cms.patch("c", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let _ = cms.get("c").await.unwrap();
    let mut files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 2, "{files:?}");
    let name = files[1].file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.ends_with("-patch-configmap-c.json"), "{name}");
    let dumped: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&files[1]).unwrap()).unwrap();
    assert_eq!(
        dumped,
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "default"}, "data": {"a": "1"}})
    );
}
