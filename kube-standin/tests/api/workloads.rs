//! Deployments and StatefulSets: the pods the controllers make, where the
//! scheduler puts them, what the kubelet reports, and the workloads'
//! status — as the control plane's subscription reconciler sees them.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Node, PersistentVolumeClaim, Pod, ResourceQuota};
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use minispod_kube_standin::TestCluster;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(10);
const MANAGER: &str = "minispod-control-plane";

fn apply() -> PatchParams {
    PatchParams::apply(MANAGER).force()
}

/// A Recreate Deployment of one container, as the reconciler writes one.
fn deployment(name: &str, image: &str, cpu: &str, extra_template: Value) -> Value {
    let mut template = json!({
        "metadata": {"labels": {"app": name}},
        "spec": {"containers": [{"name": "main", "image": image,
                                 "resources": {"requests": {"cpu": cpu, "memory": "64Mi"}}}]},
    });
    merge(&mut template, extra_template);
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
           "spec": {"replicas": 1, "strategy": {"type": "Recreate"},
                    "selector": {"matchLabels": {"app": name}}, "template": template}})
}

fn merge(target: &mut Value, patch: Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                merge(t.entry(k).or_insert(Value::Null), v);
            }
        }
        (t, p) => *t = p,
    }
}

async fn apply_deployment(cluster: &TestCluster, ns: &str, body: &Value) -> Deployment {
    let deployments: Api<Deployment> = Api::namespaced(cluster.client().await, ns);
    let name = body["metadata"]["name"].as_str().unwrap();
    deployments
        .patch(name, &apply(), &Patch::Apply(body))
        .await
        .unwrap()
}

fn ready(pod: &Pod) -> bool {
    condition(pod, "Ready").is_some_and(|c| c.status == "True")
}

fn condition<'a>(pod: &'a Pod, kind: &str) -> Option<&'a k8s_openapi::api::core::v1::PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind)
}

fn node_of(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .unwrap()
        .node_name
        .clone()
        .unwrap_or_default()
}

fn one_ready(pods: &[Pod]) -> bool {
    pods.len() == 1 && ready(&pods[0])
}

async fn quick_cluster() -> TestCluster {
    minispod_kube_standin::require_kubernetes_if_asked();
    let cluster = TestCluster::start().await.unwrap();
    // Real clusters take their kubelets' time.
    let _ = cluster.set_pod_ready_delay(Duration::from_millis(50)).await;
    cluster
}

async fn cordon(cluster: &TestCluster, node: &str) {
    let nodes: Api<Node> = Api::all(cluster.client().await);
    nodes
        .patch(
            node,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"unschedulable": true}})),
        )
        .await
        .unwrap();
}

async fn wait_deployment(
    deployments: &Api<Deployment>,
    name: &str,
    what: &str,
    done: impl Fn(&Deployment) -> bool,
) -> Deployment {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let d = deployments.get(name).await.unwrap();
        if done(&d) {
            return d;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: {:?}",
            d.status
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_deployment_gets_a_ready_pod_on_a_schedulable_node_and_says_so() {
    let cluster = quick_cluster().await;
    let cordoned = cluster.create_node("cordoned", &[]).await.unwrap();
    let cordoned = cordoned.metadata.name.unwrap();
    cordon(&cluster, &cordoned).await;
    let open = cluster.create_node("open", &[]).await.unwrap();
    let open = open.metadata.name.unwrap();
    let ns = cluster.create_namespace().await.unwrap();
    let created = apply_deployment(
        &cluster,
        &ns,
        &deployment("web", "nginx:1.27", "100m", json!({})),
    )
    .await;

    let pods = cluster
        .wait_for(&ns, "app=web", one_ready, WAIT)
        .await
        .unwrap();
    let pod = &pods[0];
    assert_eq!(node_of(pod), open);
    let name = pod.metadata.name.clone().unwrap();
    let hash = pod.metadata.labels.as_ref().unwrap()["pod-template-hash"].clone();
    let rs_name = format!("web-{hash}");
    assert!(name.starts_with(&format!("{rs_name}-")), "{name}");
    assert_eq!(name.len(), rs_name.len() + 6, "{name}");
    let owner = &pod.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("ReplicaSet", rs_name.as_str(), Some(true))
    );
    let replica_sets: Api<ReplicaSet> = Api::namespaced(cluster.client().await, &ns);
    let rs = replica_sets.get(&rs_name).await.unwrap();
    let rs_owner = &rs.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(rs_owner.uid, created.metadata.uid.clone().unwrap());

    let status = pod.status.as_ref().unwrap();
    assert_eq!(status.phase.as_deref(), Some("Running"));
    let container = &status.container_statuses.as_ref().unwrap()[0];
    assert!(container.ready);
    assert_eq!(container.restart_count, 0);
    assert_eq!(container.image, "docker.io/library/nginx:1.27");
    assert!(
        container
            .image_id
            .starts_with("docker.io/library/nginx@sha256:")
    );
    assert!(
        container
            .state
            .as_ref()
            .unwrap()
            .running
            .as_ref()
            .unwrap()
            .started_at
            .is_some()
    );
    for kind in ["PodScheduled", "Initialized", "ContainersReady", "Ready"] {
        assert_eq!(condition(pod, kind).unwrap().status, "True", "{kind}");
    }

    let deployments: Api<Deployment> = Api::namespaced(cluster.client().await, &ns);
    let d = wait_deployment(&deployments, "web", "ready", |d| {
        d.status.as_ref().and_then(|s| s.available_replicas) == Some(1)
    })
    .await;
    let s = d.status.unwrap();
    assert_eq!(
        (
            s.observed_generation,
            s.replicas,
            s.updated_replicas,
            s.ready_replicas,
            s.unavailable_replicas
        ),
        (Some(1), Some(1), Some(1), Some(1), None)
    );
    let conditions = s.conditions.unwrap();
    let available = conditions.iter().find(|c| c.type_ == "Available").unwrap();
    assert_eq!(
        (available.status.as_str(), available.reason.as_deref()),
        ("True", Some("MinimumReplicasAvailable"))
    );
    let progressing = conditions
        .iter()
        .find(|c| c.type_ == "Progressing")
        .unwrap();
    assert_eq!(
        progressing.reason.as_deref(),
        Some("NewReplicaSetAvailable")
    );
    assert_eq!(
        progressing.message.as_deref(),
        Some(format!("ReplicaSet \"{rs_name}\" has successfully progressed.").as_str())
    );
    assert_eq!(
        d.metadata.annotations.unwrap()["deployment.kubernetes.io/revision"],
        "1"
    );
}

#[tokio::test]
async fn a_pod_with_no_room_waits_with_the_schedulers_reasons_until_a_node_comes() {
    let cluster = quick_cluster().await;
    let full = cluster
        .create_node("full", &[])
        .await
        .unwrap()
        .metadata
        .name
        .unwrap();
    let cordoned = cluster
        .create_node("cordoned", &[])
        .await
        .unwrap()
        .metadata
        .name
        .unwrap();
    cordon(&cluster, &cordoned).await;
    let ns = cluster.create_namespace().await.unwrap();
    // A pod already there takes 2 of the 4 CPUs.
    cluster
        .create_pod(
            &ns,
            "big",
            &full,
            &[("app", "big")],
            &[("cpu", "2")],
            true,
            None,
        )
        .await
        .unwrap();
    apply_deployment(
        &cluster,
        &ns,
        &deployment("db", "postgres:17", "3", json!({})),
    )
    .await;
    let pods = cluster
        .wait_for(
            &ns,
            "app=db",
            |p| p.len() == 1 && condition(&p[0], "PodScheduled").is_some(),
            WAIT,
        )
        .await
        .unwrap();
    let scheduled = condition(&pods[0], "PodScheduled").unwrap();
    assert_eq!(scheduled.status, "False");
    assert_eq!(scheduled.reason.as_deref(), Some("Unschedulable"));
    let message = scheduled.message.clone().unwrap();
    assert!(
        message.starts_with(
            "0/2 nodes are available: 1 Insufficient cpu, 1 node(s) were unschedulable."
        ),
        "{message}"
    );
    assert_eq!(
        pods[0].status.as_ref().unwrap().phase.as_deref(),
        Some("Pending")
    );
    assert_eq!(node_of(&pods[0]), "");

    let roomy = cluster
        .create_node("roomy", &[])
        .await
        .unwrap()
        .metadata
        .name
        .unwrap();
    let pods = cluster
        .wait_for(&ns, "app=db", one_ready, WAIT)
        .await
        .unwrap();
    assert_eq!(node_of(&pods[0]), roomy);
}

#[tokio::test]
async fn an_unpullable_image_waits_in_err_image_pull_then_image_pull_back_off() {
    let cluster = quick_cluster().await;
    if cluster.set_image_unpullable("ghost:404").await.is_err() {
        return; // A real registry decides what pulls.
    }
    cluster.create_node("n", &[]).await.unwrap();
    let ns = cluster.create_namespace().await.unwrap();
    apply_deployment(
        &cluster,
        &ns,
        &deployment("blog", "ghost:404", "100m", json!({})),
    )
    .await;
    let waiting = |pods: &[Pod], reason: &str| {
        pods.len() == 1
            && pods[0]
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|c| c[0].state.as_ref())
                .and_then(|s| s.waiting.as_ref())
                .is_some_and(|w| w.reason.as_deref() == Some(reason))
    };
    let pods = cluster
        .wait_for(&ns, "app=blog", |p| waiting(p, "ErrImagePull"), WAIT)
        .await
        .unwrap();
    let state = pods[0]
        .status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0]
        .state
        .clone()
        .unwrap();
    let message = state.waiting.unwrap().message.unwrap();
    assert!(
        message.contains("failed to pull and unpack image \"docker.io/library/ghost:404\"")
            && message.ends_with("not found"),
        "{message}"
    );
    let pods = cluster
        .wait_for(&ns, "app=blog", |p| waiting(p, "ImagePullBackOff"), WAIT)
        .await
        .unwrap();
    let status = pods[0].status.as_ref().unwrap();
    assert_eq!(status.phase.as_deref(), Some("Pending"));
    let w = status.container_statuses.as_ref().unwrap()[0]
        .state
        .clone()
        .unwrap()
        .waiting
        .unwrap();
    assert_eq!(
        w.message.as_deref(),
        Some("Back-off pulling image \"ghost:404\"")
    );
    let not_ready = condition(&pods[0], "Ready").unwrap();
    assert_eq!(
        (not_ready.status.as_str(), not_ready.reason.as_deref()),
        ("False", Some("ContainersNotReady"))
    );

    let deployments: Api<Deployment> = Api::namespaced(cluster.client().await, &ns);
    let d = wait_deployment(&deployments, "blog", "unavailable", |d| {
        d.status.as_ref().and_then(|s| s.unavailable_replicas) == Some(1)
    })
    .await;
    let available = d
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Available")
        .unwrap();
    assert_eq!(
        (available.status.as_str(), available.reason.as_deref()),
        ("False", Some("MinimumReplicasUnavailable"))
    );
}

#[tokio::test]
async fn a_no_execute_taint_moves_the_pod_to_another_node() {
    let cluster = quick_cluster().await;
    let first = cluster
        .create_node("first", &[])
        .await
        .unwrap()
        .metadata
        .name
        .unwrap();
    let ns = cluster.create_namespace().await.unwrap();
    apply_deployment(
        &cluster,
        &ns,
        &deployment("n8n", "n8nio/n8n:1.0", "100m", json!({})),
    )
    .await;
    // A pod that tolerates the taint for good stays.
    let tolerant = deployment(
        "tolerant",
        "nginx",
        "100m",
        json!({"spec": {"tolerations": [{"key": "minispod.dev/offline", "operator": "Exists", "effect": "NoExecute"}]}}),
    );
    apply_deployment(&cluster, &ns, &tolerant).await;
    let before = cluster
        .wait_for(&ns, "app=n8n", one_ready, WAIT)
        .await
        .unwrap();
    assert_eq!(node_of(&before[0]), first);
    let stays = cluster
        .wait_for(&ns, "app=tolerant", one_ready, WAIT)
        .await
        .unwrap();
    let second = cluster
        .create_node("second", &[])
        .await
        .unwrap()
        .metadata
        .name
        .unwrap();

    let nodes: Api<Node> = Api::all(cluster.client().await);
    let taint = json!({"spec": {"taints": [{"key": "minispod.dev/offline", "effect": "NoExecute",
                                           "timeAdded": "2026-01-01T00:00:00Z"}]}});
    nodes
        .patch(&first, &PatchParams::default(), &Patch::Merge(&taint))
        .await
        .unwrap();
    let old_uid = before[0].metadata.uid.clone();
    let after = cluster
        .wait_for(
            &ns,
            "app=n8n",
            |p| one_ready(p) && p[0].metadata.uid != old_uid,
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(node_of(&after[0]), second);
    let pods: Api<Pod> = Api::namespaced(cluster.client().await, &ns);
    let gone = pods.get(before[0].metadata.name.as_deref().unwrap()).await;
    assert_eq!(crate::api_error(gone).1, 404);
    let still = pods
        .get(stays[0].metadata.name.as_deref().unwrap())
        .await
        .unwrap();
    assert_eq!(node_of(&still), first);
}

#[tokio::test]
async fn a_template_change_replaces_the_pod_and_scale_zero_and_delete_remove_them() {
    let cluster = quick_cluster().await;
    cluster.create_node("n", &[]).await.unwrap();
    let ns = cluster.create_namespace().await.unwrap();
    let body = deployment("app", "nginx", "100m", json!({}));
    apply_deployment(&cluster, &ns, &body).await;
    let first = cluster
        .wait_for(&ns, "app=app", one_ready, WAIT)
        .await
        .unwrap();

    let restarted = json!({"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "2026-12-01T00:00:00Z"}}});
    let changed = deployment("app", "nginx", "100m", restarted);
    apply_deployment(&cluster, &ns, &changed).await;
    let old_uid = first[0].metadata.uid.clone();
    let second = cluster
        .wait_for(
            &ns,
            "app=app",
            |p| one_ready(p) && p[0].metadata.uid != old_uid,
            WAIT,
        )
        .await
        .unwrap();
    let annotations = second[0].metadata.annotations.clone().unwrap();
    assert_eq!(
        annotations["kubectl.kubernetes.io/restartedAt"],
        "2026-12-01T00:00:00Z"
    );
    let hash = |p: &Pod| p.metadata.labels.as_ref().unwrap()["pod-template-hash"].clone();
    assert_ne!(hash(&first[0]), hash(&second[0]));
    let deployments: Api<Deployment> = Api::namespaced(cluster.client().await, &ns);
    let d = wait_deployment(&deployments, "app", "revision 2", |d| {
        d.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("deployment.kubernetes.io/revision"))
            .map(String::as_str)
            == Some("2")
    })
    .await;
    assert_eq!(d.metadata.generation, Some(2));

    let mut zero = changed.clone();
    zero["spec"]["replicas"] = json!(0);
    apply_deployment(&cluster, &ns, &zero).await;
    cluster
        .wait_for(&ns, "app=app", |p| p.is_empty(), WAIT)
        .await
        .unwrap();
    wait_deployment(&deployments, "app", "no replicas", |d| {
        d.status
            .as_ref()
            .is_some_and(|s| s.replicas.is_none() && s.observed_generation == Some(3))
    })
    .await;

    apply_deployment(&cluster, &ns, &changed).await;
    cluster
        .wait_for(&ns, "app=app", one_ready, WAIT)
        .await
        .unwrap();
    deployments
        .delete("app", &DeleteParams::default())
        .await
        .unwrap();
    cluster
        .wait_for(&ns, "app=app", |p| p.is_empty(), WAIT)
        .await
        .unwrap();
    let replica_sets: Api<ReplicaSet> = Api::namespaced(cluster.client().await, &ns);
    let deadline = tokio::time::Instant::now() + WAIT;
    while !replica_sets
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .is_empty()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the replica sets stay"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_stateful_set_names_its_pods_by_ordinal_and_claims_their_volumes() {
    let cluster = quick_cluster().await;
    cluster.create_node("n", &[]).await.unwrap();
    let ns = cluster.create_namespace().await.unwrap();
    let sts = |env: &str| {
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
            "spec": {"replicas": 1, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                "template": {"metadata": {"labels": {"app": "db"}},
                    "spec": {"containers": [{"name": "postgres", "image": "postgres:17",
                        "env": [{"name": "MODE", "value": env}]}]}},
                "volumeClaimTemplates": [{"metadata": {"name": "data"},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}})
    };
    let sets: Api<StatefulSet> = Api::namespaced(cluster.client().await, &ns);
    sets.patch("db", &apply(), &Patch::Apply(sts("a")))
        .await
        .unwrap();
    let pods = cluster
        .wait_for(&ns, "app=db", one_ready, WAIT)
        .await
        .unwrap();
    let pod = &pods[0];
    assert_eq!(pod.metadata.name.as_deref(), Some("db-0"));
    let labels = pod.metadata.labels.as_ref().unwrap();
    assert_eq!(labels["statefulset.kubernetes.io/pod-name"], "db-0");
    assert_eq!(
        pod.metadata.owner_references.as_ref().unwrap()[0].kind,
        "StatefulSet"
    );
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(cluster.client().await, &ns);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let claim = claims.get("data-db-0").await.unwrap();
        let status = claim.status.unwrap_or_default();
        if status.phase.as_deref() == Some("Bound") {
            assert_eq!(status.capacity.unwrap()["storage"].0, "1Gi");
            // Bound on the node its pod went to, as local-path binds.
            let annotations = claim.metadata.annotations.unwrap_or_default();
            assert_eq!(
                annotations
                    .get("volume.kubernetes.io/selected-node")
                    .map(String::as_str),
                pod.spec.as_ref().unwrap().node_name.as_deref()
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the claim never bound"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let deadline = tokio::time::Instant::now() + WAIT;
    let status = loop {
        let s = sets.get("db").await.unwrap().status.unwrap_or_default();
        if s.ready_replicas == Some(1) {
            break s;
        }
        assert!(tokio::time::Instant::now() < deadline, "{s:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        (
            status.replicas,
            status.current_replicas,
            status.updated_replicas,
            status.available_replicas,
            status.observed_generation
        ),
        (1, Some(1), Some(1), Some(1), Some(1))
    );

    sets.patch("db", &apply(), &Patch::Apply(sts("b")))
        .await
        .unwrap();
    let old_uid = pod.metadata.uid.clone();
    let replaced = cluster
        .wait_for(
            &ns,
            "app=db",
            |p| one_ready(p) && p[0].metadata.uid != old_uid,
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(replaced[0].metadata.name.as_deref(), Some("db-0"));
    let env = replaced[0].spec.as_ref().unwrap().containers[0]
        .env
        .clone()
        .unwrap();
    assert_eq!(env[0].value.as_deref(), Some("b"));
}

#[tokio::test]
async fn a_quota_reports_what_the_namespace_uses() {
    let cluster = quick_cluster().await;
    cluster.create_node("n", &[]).await.unwrap();
    let ns = cluster.create_namespace().await.unwrap();
    let quotas: Api<ResourceQuota> = Api::namespaced(cluster.client().await, &ns);
    let quota = json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "q"},
        "spec": {"hard": {"pods": "10", "requests.cpu": "2", "requests.memory": "4Gi"}}});
    quotas
        .patch("q", &apply(), &Patch::Apply(&quota))
        .await
        .unwrap();
    apply_deployment(
        &cluster,
        &ns,
        &deployment("web", "nginx", "250m", json!({})),
    )
    .await;
    cluster
        .wait_for(&ns, "app=web", one_ready, WAIT)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let status = quotas.get("q").await.unwrap().status.unwrap_or_default();
        let used = status.used.unwrap_or_default();
        if used.get("pods").map(|q| q.0.as_str()) == Some("1") {
            assert_eq!(used["requests.cpu"].0, "250m");
            assert_eq!(used["requests.memory"].0, "64Mi");
            assert_eq!(status.hard.unwrap()["requests.memory"].0, "4Gi");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{used:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stand_in_fixtures_say_so_on_a_real_cluster() {
    let (standin, _client) = crate::standin().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    std::fs::write(&path, standin.kubeconfig(None)).unwrap();
    let cluster = TestCluster::start_real_with(&path, &path).await.unwrap();
    let error = cluster.set_image_unpullable("x").await.unwrap_err();
    assert!(
        error.to_string().contains("needs the kube stand-in"),
        "{error}"
    );
    let error = cluster
        .append_pod_log("ns", "p", "c", &["x"])
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("append_pod_log needs the kube stand-in"),
        "{error}"
    );
    assert!(cluster.set_pod_ready_delay(Duration::ZERO).await.is_err());
}

#[tokio::test]
async fn a_failing_readiness_probe_leaves_the_container_running_and_never_ready() {
    let cluster = quick_cluster().await;
    if cluster
        .set_image_readiness_failing("nginx:broken")
        .await
        .is_err()
    {
        return; // A real kubelet runs the probe.
    }
    cluster.create_node("n", &[]).await.unwrap();
    let ns = cluster.create_namespace().await.unwrap();
    let mut probed = deployment("probed", "nginx:broken", "100m", json!({}));
    probed["spec"]["template"]["spec"]["containers"][0]["readinessProbe"] =
        json!({"httpGet": {"path": "/", "port": 80}});
    apply_deployment(&cluster, &ns, &probed).await;
    // The same image without a probe: Ready once running.
    apply_deployment(
        &cluster,
        &ns,
        &deployment("plain", "nginx:broken", "100m", json!({})),
    )
    .await;
    let running = |pods: &[Pod]| {
        pods.len() == 1
            && pods[0]
                .status
                .as_ref()
                .is_some_and(|s| s.phase.as_deref() == Some("Running"))
    };
    let pods = cluster
        .wait_for(&ns, "app=probed", running, WAIT)
        .await
        .unwrap();
    // Still not ready well after the readiness delay.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pods = cluster
        .wait_for(&ns, "app=probed", |p| running(p), WAIT)
        .await
        .unwrap_or(pods);
    let c = &pods[0]
        .status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0];
    assert!(c.state.as_ref().unwrap().running.is_some());
    assert!(!c.ready);
    assert_eq!(c.started, Some(true));
    let not_ready = condition(&pods[0], "Ready").unwrap();
    assert_eq!(
        (not_ready.status.as_str(), not_ready.reason.as_deref()),
        ("False", Some("ContainersNotReady"))
    );
    cluster
        .wait_for(
            &ns,
            "app=plain",
            |p| p.len() == 1 && condition(&p[0], "Ready").is_some_and(|c| c.status == "True"),
            WAIT,
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn pods_on_a_node_that_is_not_ready_are_not_ready_until_it_is_back() {
    let cluster = quick_cluster().await;
    let node = cluster
        .create_node("n", &[])
        .await
        .unwrap()
        .metadata
        .name
        .unwrap();
    let ns = cluster.create_namespace().await.unwrap();
    apply_deployment(
        &cluster,
        &ns,
        &deployment("web", "nginx", "100m", json!({})),
    )
    .await;
    let before = cluster
        .wait_for(&ns, "app=web", one_ready, WAIT)
        .await
        .unwrap();
    cluster
        .set_node_condition(
            &node,
            "Ready",
            "Unknown",
            "NodeStatusUnknown",
            "Kubelet stopped posting node status.",
        )
        .await
        .unwrap();
    let same_pod = |p: &[Pod]| p.len() == 1 && p[0].metadata.uid == before[0].metadata.uid;
    cluster
        .wait_for(&ns, "app=web", |p| same_pod(p) && !ready(&p[0]), WAIT)
        .await
        .unwrap();
    // A new pod cannot go there meanwhile.
    apply_deployment(
        &cluster,
        &ns,
        &deployment("late", "nginx", "100m", json!({})),
    )
    .await;
    let late = cluster
        .wait_for(
            &ns,
            "app=late",
            |p| p.len() == 1 && condition(&p[0], "PodScheduled").is_some(),
            WAIT,
        )
        .await
        .unwrap();
    let message = condition(&late[0], "PodScheduled")
        .unwrap()
        .message
        .clone()
        .unwrap();
    assert!(
        message.starts_with("0/1 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/unreachable: }."),
        "{message}"
    );
    cluster
        .set_node_condition(
            &node,
            "Ready",
            "True",
            "KubeletReady",
            "kubelet is posting ready status",
        )
        .await
        .unwrap();
    cluster
        .wait_for(&ns, "app=web", |p| same_pod(p) && ready(&p[0]), WAIT)
        .await
        .unwrap();
    cluster
        .wait_for(&ns, "app=late", one_ready, WAIT)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_toleration_with_seconds_delays_the_eviction() {
    let cluster = quick_cluster().await;
    let node = cluster
        .create_node("n", &[])
        .await
        .unwrap()
        .metadata
        .name
        .unwrap();
    let ns = cluster.create_namespace().await.unwrap();
    let patient = deployment(
        "patient",
        "nginx",
        "100m",
        json!({"spec": {"tolerations": [{"key": "minispod.dev/offline", "operator": "Exists",
                                         "effect": "NoExecute", "tolerationSeconds": 2}]}}),
    );
    apply_deployment(&cluster, &ns, &patient).await;
    let before = cluster
        .wait_for(&ns, "app=patient", one_ready, WAIT)
        .await
        .unwrap();
    let nodes: Api<Node> = Api::all(cluster.client().await);
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let taint = json!({"spec": {"taints": [{"key": "minispod.dev/offline", "effect": "NoExecute", "timeAdded": now}]}});
    nodes
        .patch(&node, &PatchParams::default(), &Patch::Merge(&taint))
        .await
        .unwrap();
    let tainted = std::time::Instant::now();
    let old_uid = before[0].metadata.uid.clone();
    cluster
        .wait_for(
            &ns,
            "app=patient",
            |p| p.iter().all(|p| p.metadata.uid != old_uid),
            WAIT,
        )
        .await
        .unwrap();
    let waited = tainted.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "evicted after {waited:?}"
    );
}

#[tokio::test]
async fn the_controllers_write_nothing_once_everything_settled() {
    let cluster = quick_cluster().await;
    if cluster.is_real() {
        return; // Real nodes heartbeat, moving the resourceVersion.
    }
    cluster.create_node("n", &[]).await.unwrap();
    let ns = cluster.create_namespace().await.unwrap();
    apply_deployment(
        &cluster,
        &ns,
        &deployment("web", "nginx", "100m", json!({})),
    )
    .await;
    cluster
        .wait_for(&ns, "app=web", one_ready, WAIT)
        .await
        .unwrap();
    let deployments: Api<Deployment> = Api::namespaced(cluster.client().await, &ns);
    wait_deployment(&deployments, "web", "available", |d| {
        d.status.as_ref().and_then(|s| s.available_replicas) == Some(1)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let version = || async {
        let pods: Api<Pod> = Api::namespaced(cluster.client().await, &ns);
        pods.list(&ListParams::default())
            .await
            .unwrap()
            .metadata
            .resource_version
    };
    let settled = version().await;
    // Longer than the resync: timers and resyncs change nothing.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(version().await, settled);
}

#[tokio::test]
async fn a_claim_gets_a_local_volume_kept_while_used_and_removed_with_it() {
    use k8s_openapi::api::core::v1::PersistentVolume;
    let cluster = quick_cluster().await;
    cluster.create_node("n", &[]).await.unwrap();
    let ns = cluster.create_namespace().await.unwrap();
    let client = cluster.client().await;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let claim: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}))
    .unwrap();
    let claim = claims.create(&Default::default(), &claim).await.unwrap();
    // Protected from the start, as StorageObjectInUseProtection admits it.
    assert!(
        claim
            .metadata
            .finalizers
            .unwrap_or_default()
            .contains(&"kubernetes.io/pvc-protection".to_owned())
    );
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "app", "labels": {"app": "app"}},
        "spec": {"containers": [{"name": "app", "image": "busybox:1.37"}],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]}}))
    .unwrap();
    pods.create(&Default::default(), &pod).await.unwrap();
    let running = cluster
        .wait_for(&ns, "app=app", one_ready, WAIT)
        .await
        .unwrap();
    let node = running[0].spec.as_ref().unwrap().node_name.clone().unwrap();

    // Bound to a volume on the pod's node, as local-path provisions it.
    let deadline = tokio::time::Instant::now() + WAIT;
    let claim = loop {
        let c = claims.get("data").await.unwrap();
        if c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound") {
            break c;
        }
        assert!(tokio::time::Instant::now() < deadline, "never bound");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let volume_name = claim.spec.as_ref().unwrap().volume_name.clone().unwrap();
    let volume = volumes.get(&volume_name).await.unwrap();
    let spec = volume.spec.clone().unwrap();
    let claim_ref = spec.claim_ref.unwrap();
    assert_eq!(claim_ref.uid, claim.metadata.uid);
    assert_eq!(
        spec.persistent_volume_reclaim_policy.as_deref(),
        Some("Delete")
    );
    let path = std::path::PathBuf::from(spec.host_path.expect("a hostPath volume").path);
    let terms = spec
        .node_affinity
        .unwrap()
        .required
        .unwrap()
        .node_selector_terms;
    assert_eq!(
        terms[0].match_expressions.as_ref().unwrap()[0].values,
        Some(vec![node.clone()])
    );
    if let Some(root) = cluster.volume_root(&node) {
        // The stand-in's node disk holds it, named as K3s names it.
        assert_eq!(path.parent(), Some(root.as_path()));
        assert!(path.ends_with(format!("{volume_name}_{ns}_data")));
        std::fs::write(path.join("kept"), b"data").unwrap();
    }

    // Deleted while the pod uses it: it stays, Terminating.
    claims
        .delete("data", &DeleteParams::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let terminating = claims.get("data").await.unwrap();
    assert!(terminating.metadata.deletion_timestamp.is_some());
    assert!(volumes.get(&volume_name).await.is_ok());
    if cluster.volume_root(&node).is_some() {
        assert_eq!(std::fs::read(path.join("kept")).unwrap(), b"data");
    }

    // Once the pod is gone, so are the claim, its volume and its directory.
    pods.delete("app", &DeleteParams::default()).await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while claims.get_opt("data").await.unwrap().is_some()
        || volumes.get_opt(&volume_name).await.unwrap().is_some()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the claim or its volume stays"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if cluster.volume_root(&node).is_some() {
        assert!(!path.exists(), "{} stays", path.display());
    }
}
