use std::collections::BTreeMap;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use minispod_kube_standin::{Settings, TestCluster};
use serde_json::json;

use crate::{quick, standin_with};

fn config_map(name: &str, app: &str) -> ConfigMap {
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some(name.into());
    cm.metadata.labels = Some(BTreeMap::from([("app".to_string(), app.to_string())]));
    cm
}

async fn next<S, T>(stream: &mut S) -> T
where
    S: futures::Stream<Item = Result<T, kube::Error>> + Unpin,
{
    tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("an event within 5 s")
        .expect("the stream goes on")
        .expect("no error")
}

fn kind_and_name(event: &WatchEvent<ConfigMap>) -> (&'static str, String) {
    match event {
        WatchEvent::Added(o) => ("ADDED", o.metadata.name.clone().unwrap()),
        WatchEvent::Modified(o) => ("MODIFIED", o.metadata.name.clone().unwrap()),
        WatchEvent::Deleted(o) => ("DELETED", o.metadata.name.clone().unwrap()),
        WatchEvent::Bookmark(_) => ("BOOKMARK", String::new()),
        WatchEvent::Error(e) => panic!("watch error {e:?}"),
    }
}

#[tokio::test]
async fn a_watch_sees_changes_at_once_and_resumes_from_a_resource_version() {
    minispod_kube_standin::require_kubernetes_if_asked();
    let cluster = TestCluster::start().await.unwrap();
    let ns = cluster.create_namespace().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(cluster.client().await, &ns);
    let created = cms
        .create(&PostParams::default(), &config_map("a", "web"))
        .await
        .unwrap();
    let rv = created.metadata.resource_version.unwrap();
    let mut events = cms
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    let patch = json!({"data": {"x": "1"}});
    let started = std::time::Instant::now();
    cms.patch("a", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    assert_eq!(
        kind_and_name(&next(&mut events).await),
        ("MODIFIED", "a".into())
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "pushed, not polled"
    );
    cms.delete("a", &Default::default()).await.unwrap();
    assert_eq!(
        kind_and_name(&next(&mut events).await),
        ("DELETED", "a".into())
    );

    // A second watch from the same version replays both.
    let mut replay = cms
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    assert_eq!(
        kind_and_name(&next(&mut replay).await),
        ("MODIFIED", "a".into())
    );
    assert_eq!(
        kind_and_name(&next(&mut replay).await),
        ("DELETED", "a".into())
    );
}

#[tokio::test]
async fn an_object_that_stops_matching_the_selector_is_deleted_for_the_watch() {
    minispod_kube_standin::require_kubernetes_if_asked();
    let cluster = TestCluster::start().await.unwrap();
    let ns = cluster.create_namespace().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(cluster.client().await, &ns);
    let created = cms
        .create(&PostParams::default(), &config_map("a", "web"))
        .await
        .unwrap();
    let rv = created.metadata.resource_version.unwrap();
    let params = WatchParams::default().labels("app=web");
    let mut events = cms.watch(&params, &rv).await.unwrap().boxed();
    let to_db = json!({"metadata": {"labels": {"app": "db"}}});
    cms.patch("a", &PatchParams::default(), &Patch::Merge(&to_db))
        .await
        .unwrap();
    assert_eq!(
        kind_and_name(&next(&mut events).await),
        ("DELETED", "a".into())
    );
    let to_web = json!({"metadata": {"labels": {"app": "web"}}});
    cms.patch("a", &PatchParams::default(), &Patch::Merge(&to_web))
        .await
        .unwrap();
    assert_eq!(
        kind_and_name(&next(&mut events).await),
        ("ADDED", "a".into())
    );
}

#[tokio::test]
async fn a_watch_from_a_version_older_than_the_history_gets_410_gone() {
    let (_standin, client) = standin_with(Settings {
        history_limit: 3,
        ..quick()
    })
    .await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let first = cms
        .create(&PostParams::default(), &config_map("a", "web"))
        .await
        .unwrap();
    for i in 0..5 {
        cms.create(&PostParams::default(), &config_map(&format!("b{i}"), "web"))
            .await
            .unwrap();
    }
    let rv = first.metadata.resource_version.unwrap();
    let mut events = cms
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    match next(&mut events).await {
        WatchEvent::Error(status) => {
            assert_eq!(status.code, 410);
            assert!(
                status.message.starts_with("too old resource version"),
                "{}",
                status.message
            );
        }
        other => panic!("expected 410, got {other:?}"),
    }
}

#[tokio::test]
async fn watches_that_allow_bookmarks_get_them() {
    let (_standin, client) = standin_with(quick()).await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let created = cms
        .create(&PostParams::default(), &config_map("a", "web"))
        .await
        .unwrap();
    let rv = created.metadata.resource_version.unwrap();
    let mut events = cms
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    match next(&mut events).await {
        WatchEvent::Bookmark(b) => assert_eq!(b.metadata.resource_version, rv),
        other => panic!("expected a bookmark, got {other:?}"),
    }
}

#[tokio::test]
async fn a_watch_ends_at_its_timeout() {
    let (_standin, client) = standin_with(quick()).await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let params = WatchParams::default().timeout(1).disable_bookmarks();
    let events = cms.watch(&params, "0").await.unwrap().boxed();
    let all: Vec<_> = tokio::time::timeout(Duration::from_secs(5), events.try_collect::<Vec<_>>())
        .await
        .expect("the stream ends")
        .unwrap();
    assert!(all.is_empty(), "{all:?}");
}

async fn reflector_sees(config: watcher::Config, cluster: &TestCluster, ns: &str) {
    let cms: Api<ConfigMap> = Api::namespaced(cluster.client().await, ns);
    cms.create(&PostParams::default(), &config_map("before", "web"))
        .await
        .unwrap();
    let (reader, writer) = reflector::store();
    let stream = reflector(writer, watcher(cms.clone(), config))
        .default_backoff()
        .applied_objects();
    let task = tokio::spawn(stream.for_each(|_| async {}));
    tokio::time::timeout(Duration::from_secs(5), reader.wait_until_ready())
        .await
        .unwrap()
        .unwrap();
    assert!(
        reader
            .state()
            .iter()
            .any(|c| c.metadata.name.as_deref() == Some("before"))
    );
    cms.create(&PostParams::default(), &config_map("after", "web"))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while reader.state().len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the reflector never saw the new object"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    task.abort();
}

#[tokio::test]
async fn kube_runtimes_watcher_lists_then_watches() {
    minispod_kube_standin::require_kubernetes_if_asked();
    let cluster = TestCluster::start().await.unwrap();
    let ns = cluster.create_namespace().await.unwrap();
    reflector_sees(watcher::Config::default(), &cluster, &ns).await;
}

#[tokio::test]
async fn kube_runtimes_watcher_streams_lists() {
    minispod_kube_standin::require_kubernetes_if_asked();
    let cluster = TestCluster::start().await.unwrap();
    let ns = cluster.create_namespace().await.unwrap();
    reflector_sees(watcher::Config::default().streaming_lists(), &cluster, &ns).await;
}
