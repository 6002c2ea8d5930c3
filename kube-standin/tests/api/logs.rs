//! Pod logs through kube-rs: what the kubelet prints first, lines a test
//! appends, tail/since/timestamps/limit, following, and the errors.

use std::time::Duration;

use futures::{AsyncBufReadExt, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, LogParams, Patch, PatchParams};
use minispod_kube_standin::TestCluster;
use serde_json::json;

use crate::api_error;

const WAIT: Duration = Duration::from_secs(10);

/// A running pod of a Deployment with these containers; its name.
async fn running_pod(cluster: &TestCluster, ns: &str, app: &str, containers: &[&str]) -> String {
    let containers: Vec<_> = containers
        .iter()
        .map(|c| json!({"name": c, "image": format!("{c}:1")}))
        .collect();
    let body = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": app},
        "spec": {"replicas": 1, "strategy": {"type": "Recreate"}, "selector": {"matchLabels": {"app": app}},
                 "template": {"metadata": {"labels": {"app": app}}, "spec": {"containers": containers}}}});
    let deployments: Api<Deployment> = Api::namespaced(cluster.client().await, ns);
    deployments
        .patch(
            app,
            &PatchParams::apply("minispod-control-plane").force(),
            &Patch::Apply(&body),
        )
        .await
        .unwrap();
    let ready = |pods: &[Pod]| {
        pods.len() == 1
            && pods[0]
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    };
    let pods = cluster
        .wait_for(ns, &format!("app={app}"), ready, WAIT)
        .await
        .unwrap();
    pods[0].metadata.name.clone().unwrap()
}

async fn logging_cluster() -> Option<(TestCluster, String)> {
    minispod_kube_standin::require_kubernetes_if_asked();
    let cluster = TestCluster::start().await.unwrap();
    // Appending lines needs the stand-in; a real cluster skips these.
    if cluster.is_real() {
        return None;
    }
    cluster
        .set_pod_ready_delay(Duration::from_millis(50))
        .await
        .unwrap();
    cluster.create_node("n", &[]).await.unwrap();
    let ns = cluster.create_namespace().await.unwrap();
    Some((cluster, ns))
}

#[tokio::test]
async fn logs_start_with_the_kubelets_lines_and_select_by_tail_since_and_limit() {
    let Some((cluster, ns)) = logging_cluster().await else {
        return;
    };
    let pod = running_pod(&cluster, &ns, "web", &["nginx"]).await;
    let pods: Api<Pod> = Api::namespaced(cluster.client().await, &ns);
    let first = pods.logs(&pod, &LogParams::default()).await.unwrap();
    assert!(
        first.starts_with("Starting docker.io/library/nginx:1\n"),
        "{first:?}"
    );
    cluster
        .append_pod_log(&ns, &pod, "nginx", &["one", "two", "three"])
        .await
        .unwrap();
    let tail = LogParams {
        tail_lines: Some(2),
        ..LogParams::default()
    };
    assert_eq!(pods.logs(&pod, &tail).await.unwrap(), "two\nthree\n");
    let all = pods.logs(&pod, &LogParams::default()).await.unwrap();
    assert!(all.ends_with("one\ntwo\nthree\n"), "{all:?}");
    let recent = LogParams {
        since_seconds: Some(60),
        ..LogParams::default()
    };
    assert_eq!(pods.logs(&pod, &recent).await.unwrap(), all);
    let stamped = LogParams {
        timestamps: true,
        tail_lines: Some(1),
        ..LogParams::default()
    };
    let line = pods.logs(&pod, &stamped).await.unwrap();
    let (stamp, text) = line.split_once(' ').unwrap();
    assert_eq!(text, "three\n");
    assert_eq!(
        stamp.len(),
        "2026-12-02T07:00:00.000000000Z".len(),
        "{stamp}"
    );
    assert!(stamp.ends_with('Z'));
    let limited = LogParams {
        limit_bytes: Some(5),
        tail_lines: Some(2),
        ..LogParams::default()
    };
    assert_eq!(pods.logs(&pod, &limited).await.unwrap(), "two\nt");
}

/// The next line of a followed log, within the wait.
async fn next_line<S>(lines: &mut S) -> Option<std::io::Result<String>>
where
    S: futures::Stream<Item = std::io::Result<String>> + Unpin,
{
    tokio::time::timeout(WAIT, lines.next())
        .await
        .expect("a line in time")
}

#[tokio::test]
async fn following_a_log_streams_new_lines_until_the_pod_goes() {
    let Some((cluster, ns)) = logging_cluster().await else {
        return;
    };
    let pod = running_pod(&cluster, &ns, "web", &["nginx"]).await;
    let pods: Api<Pod> = Api::namespaced(cluster.client().await, &ns);
    let follow = LogParams {
        follow: true,
        tail_lines: Some(0),
        ..LogParams::default()
    };
    let mut lines = pods.log_stream(&pod, &follow).await.unwrap().lines();
    cluster
        .append_pod_log(&ns, &pod, "nginx", &["hello", "world"])
        .await
        .unwrap();
    assert_eq!(next_line(&mut lines).await.unwrap().unwrap(), "hello");
    assert_eq!(next_line(&mut lines).await.unwrap().unwrap(), "world");
    cluster
        .append_pod_log(&ns, &pod, "nginx", &["later"])
        .await
        .unwrap();
    assert_eq!(next_line(&mut lines).await.unwrap().unwrap(), "later");
    pods.delete(&pod, &DeleteParams::default()).await.unwrap();
    assert!(
        next_line(&mut lines).await.is_none(),
        "the stream ends with the pod"
    );
}

#[tokio::test]
async fn a_log_request_names_its_container_and_pod() {
    let Some((cluster, ns)) = logging_cluster().await else {
        return;
    };
    let pod = running_pod(&cluster, &ns, "blog", &["ghost", "mysql"]).await;
    let pods: Api<Pod> = Api::namespaced(cluster.client().await, &ns);
    let (reason, code, message) = api_error(pods.logs(&pod, &LogParams::default()).await);
    assert_eq!((reason.as_str(), code), ("BadRequest", 400));
    assert_eq!(
        message,
        format!("a container name must be specified for pod {pod}, choose one of: [ghost mysql]")
    );
    let mysql = LogParams {
        container: Some("mysql".into()),
        ..LogParams::default()
    };
    let text = pods.logs(&pod, &mysql).await.unwrap();
    assert!(
        text.starts_with("Starting docker.io/library/mysql:1\n"),
        "{text:?}"
    );
    let missing = LogParams {
        container: Some("redis".into()),
        ..LogParams::default()
    };
    let (_, code, message) = api_error(pods.logs(&pod, &missing).await);
    assert_eq!(code, 400);
    assert_eq!(
        message,
        format!("container redis is not valid for pod {pod}")
    );
    let (reason, code, message) = api_error(pods.logs("nope", &LogParams::default()).await);
    assert_eq!((reason.as_str(), code), ("NotFound", 404));
    assert_eq!(message, "pods \"nope\" not found");
    let error = cluster
        .append_pod_log(&ns, "nope", "c", &["x"])
        .await
        .unwrap_err();
    assert!(error.to_string().contains("not found"), "{error}");
}

#[tokio::test]
async fn a_container_waiting_for_its_image_has_no_log_yet() {
    let Some((cluster, ns)) = logging_cluster().await else {
        return;
    };
    cluster.set_image_unpullable("broken:1").await.unwrap();
    let body = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "broken", "image": "broken:1"}]}});
    let pods: Api<Pod> = Api::namespaced(cluster.client().await, &ns);
    pods.create(&Default::default(), &serde_json::from_value(body).unwrap())
        .await
        .unwrap();
    let waiting = |p: &[Pod]| {
        p.iter().any(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .is_some_and(|c| {
                    c[0].state.as_ref().is_some_and(|s| {
                        s.waiting
                            .as_ref()
                            .is_some_and(|w| w.reason.as_deref() != Some("ContainerCreating"))
                    })
                })
        })
    };
    cluster.wait_for(&ns, "", waiting, WAIT).await.unwrap();
    let (_, code, message) = api_error(pods.logs("p", &LogParams::default()).await);
    assert_eq!(code, 400);
    assert_eq!(
        message,
        "container \"broken\" in pod \"p\" is waiting to start: trying and failing to pull image"
    );
}
