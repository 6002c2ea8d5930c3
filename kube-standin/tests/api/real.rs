//! The real-cluster path of TestCluster, pointed at a stand-in's kubeconfig.

use k8s_openapi::api::core::v1::{Namespace, Node};
use kube::Api;
use minispod_kube_standin::TestCluster;

use crate::{api_error, standin};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_cluster_is_reached_through_the_proxy_and_cleaned_up_on_drop() {
    let (standin, client) = standin().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    std::fs::write(&path, standin.kubeconfig(None)).unwrap();
    let own = dir.path().join("control-plane.kubeconfig");
    std::fs::write(
        &own,
        standin.kubeconfig_with_token(None, standin.control_plane_token()),
    )
    .unwrap();
    let cluster = TestCluster::start_real_with(&path, &own).await.unwrap();
    assert!(cluster.is_real());
    let node = cluster
        .create_node("n", &[])
        .await
        .unwrap()
        .metadata
        .name
        .unwrap();
    let ns = cluster.create_namespace().await.unwrap();

    // The proxied kubeconfig reaches the same server.
    let kubeconfig = kube::config::Kubeconfig::read_from(cluster.kubeconfig_path()).unwrap();
    let server = kubeconfig.clusters[0]
        .cluster
        .as_ref()
        .unwrap()
        .server
        .clone()
        .unwrap();
    assert_ne!(server, standin.url());
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    let proxied: Api<Node> = Api::all(kube::Client::try_from(config).unwrap());
    proxied.get(&node).await.unwrap();
    // ... as the control plane, not as the administrator.
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(proxied.into_client(), &ns);
    assert_eq!(api_error(secrets.list(&Default::default()).await).1, 403);

    drop(cluster);
    let nodes: Api<Node> = Api::all(client.clone());
    assert_eq!(api_error(nodes.get(&node).await).1, 404);
    // A namespace is Terminating until the namespace controller has
    // emptied it.
    let namespaces: Api<Namespace> = Api::all(client);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while namespaces.get_opt(&ns).await.unwrap().is_some() {
        assert!(std::time::Instant::now() < deadline, "{ns} still there");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
