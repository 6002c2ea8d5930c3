use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::config::Kubeconfig;
use kube::runtime::{WatchStreamExt, watcher};
use minispod_kube_standin::TestCluster;

#[tokio::test]
async fn a_watcher_through_a_cut_proxy_errs_and_recovers_after_restore() {
    minispod_kube_standin::require_kubernetes_if_asked();
    let cluster = TestCluster::start().await.unwrap();
    // The proxied kubeconfig is the control plane's: it may watch nodes.
    let kubeconfig = Kubeconfig::read_from(cluster.kubeconfig_path()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    let proxied = kube::Client::try_from(config).unwrap();
    let nodes: Api<Node> = Api::all(proxied);
    let mut events = watcher(nodes, watcher::Config::default()).boxed();
    // The initial list arrives through the proxy.
    let first = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .unwrap()
        .unwrap();
    assert!(first.is_ok(), "{first:?}");
    while let Ok(Some(Ok(event))) =
        tokio::time::timeout(Duration::from_millis(300), events.next()).await
    {
        if matches!(event, watcher::Event::InitDone) {
            break;
        }
    }

    cluster.cut();
    let mut saw_error = false;
    for _ in 0..10 {
        match tokio::time::timeout(Duration::from_secs(5), events.next()).await {
            Ok(Some(Err(_))) => {
                saw_error = true;
                break;
            }
            Ok(Some(Ok(_))) => continue,
            other => panic!("expected an error while cut, got {other:?}"),
        }
    }
    assert!(saw_error);

    cluster.restore();
    let node = cluster.create_node("after-restore", &[]).await.unwrap();
    let name = node.metadata.name;
    let mut applied = events.applied_objects();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, applied.next())
            .await
            .expect("recovered in time")
        {
            Some(Ok(n)) if n.metadata.name == name => break,
            Some(_) => continue,
            None => panic!("the watcher ended"),
        }
    }
}
