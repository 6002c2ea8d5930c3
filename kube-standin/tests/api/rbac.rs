//! The shipped RBAC enforced: what the control plane's own identity (the
//! kubeconfig `TestCluster` gives it) may and may not do, next to the
//! administrator's. Runs against a real cluster too.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Secret};
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use minispod_kube_standin::TestCluster;
use serde_json::json;

use crate::api_error;

async fn control_plane_client(cluster: &TestCluster) -> kube::Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(cluster.kubeconfig_path()).unwrap();
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    config.default_retry = false;
    kube::Client::try_from(config).unwrap()
}

fn deployment(name: &str) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}
    }))
    .unwrap()
}

fn tenant_binding(namespace: &str, role: &str) -> serde_json::Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "minispod-control-plane", "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": "minispod-control-plane",
            "namespace": "minispod-system"}],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_plane_gets_what_the_manifest_grants_and_nothing_more() {
    let cluster = TestCluster::start().await.unwrap();
    cluster.expect_forbidden();
    let admin = cluster.client().await;
    let own = control_plane_client(&cluster).await;
    let ns = cluster.create_namespace().await.unwrap();
    let apply = PatchParams::apply("minispod-control-plane").force();

    // Granted cluster-wide: nodes, pods everywhere, bootstrap tokens.
    let nodes: Api<Node> = Api::all(own.clone());
    nodes.list(&ListParams::default()).await.unwrap();
    let tokens: Api<Secret> = Api::namespaced(own.clone(), "kube-system");
    tokens.list(&ListParams::default()).await.unwrap();

    // Refused: Secrets and Deployments outside customer namespaces.
    let secrets: Api<Secret> = Api::namespaced(own.clone(), &ns);
    let (reason, code, message) = api_error(secrets.list(&ListParams::default()).await);
    assert_eq!((reason.as_str(), code), ("Forbidden", 403));
    assert_eq!(
        message,
        format!(
            "secrets is forbidden: User \"system:serviceaccount:minispod-system:minispod-control-plane\" \
             cannot list resource \"secrets\" in API group \"\" in the namespace \"{ns}\""
        )
    );
    let deployments: Api<Deployment> = Api::namespaced(own.clone(), &ns);
    let refused = deployments
        .create(&PostParams::default(), &deployment("d"))
        .await;
    assert_eq!(api_error(refused).1, 403);
    let everywhere: Api<Deployment> = Api::all(own.clone());
    assert_eq!(
        api_error(everywhere.list(&ListParams::default()).await).1,
        403
    );

    // It may bind minispod-tenant (and only under its own binding's name),
    // never cluster-admin.
    let bindings: Api<RoleBinding> = Api::namespaced(own.clone(), &ns);
    let (_, code, message) = api_error(
        bindings
            .patch(
                "minispod-control-plane",
                &apply,
                &Patch::Apply(tenant_binding(&ns, "cluster-admin")),
            )
            .await,
    );
    assert_eq!(code, 403, "{message}");
    let cluster_bindings: Api<ClusterRoleBinding> = Api::all(own.clone());
    let crb: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": cluster.name("minispod-admin")},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": "minispod-control-plane", "namespace": "minispod-system"}],
    }))
    .unwrap();
    assert_eq!(
        api_error(cluster_bindings.create(&PostParams::default(), &crb).await).1,
        403
    );
    let mut other_name = tenant_binding(&ns, "minispod-tenant");
    other_name["metadata"]["name"] = json!("another");
    assert_eq!(
        api_error(
            bindings
                .patch("another", &apply, &Patch::Apply(other_name))
                .await
        )
        .1,
        403
    );
    bindings
        .patch(
            "minispod-control-plane",
            &apply,
            &Patch::Apply(tenant_binding(&ns, "minispod-tenant")),
        )
        .await
        .unwrap();

    // Bound: tenant objects in that namespace, by server-side apply, and
    // still nothing it does not need (reading Secrets back).
    let secret = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "s", "namespace": ns}, "stringData": {"k": "v"}});
    let mut allowed = false;
    for _ in 0..50 {
        // A real API server's authorizer cache takes a moment to see the
        // new binding.
        if secrets
            .patch("s", &apply, &Patch::Apply(&secret))
            .await
            .is_ok()
        {
            allowed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        allowed,
        "the tenant binding lets the control plane apply a Secret"
    );
    assert_eq!(api_error(secrets.get("s").await).1, 403);

    // The administrator may do everything refused above.
    let admin_secrets: Api<Secret> = Api::namespaced(admin.clone(), &ns);
    assert_eq!(
        admin_secrets.get("s").await.unwrap().metadata.name.unwrap(),
        "s"
    );
    let admin_deployments: Api<Deployment> = Api::namespaced(admin.clone(), &ns);
    admin_deployments
        .create(&PostParams::default(), &deployment("d"))
        .await
        .unwrap();
    let admin_bindings: Api<RoleBinding> = Api::namespaced(admin, &ns);
    admin_bindings
        .patch(
            "minispod-control-plane",
            &apply,
            &Patch::Apply(tenant_binding(&ns, "cluster-admin")),
        )
        .await
        .unwrap();

    if !cluster.is_real() {
        assert!(cluster.forbidden_requests().len() >= 7);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_request_of_the_control_plane_fails_the_test() {
    let cluster = TestCluster::start().await.unwrap();
    let own = control_plane_client(&cluster).await;
    let secrets: Api<Secret> = Api::namespaced(own, "default");
    assert_eq!(api_error(secrets.list(&ListParams::default()).await).1, 403);
    let real = cluster.is_real();
    let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(cluster)));
    if real {
        // A real API server does not tell the harness what it refused: the
        // refusal shows as the failure it causes.
        assert!(dropped.is_ok());
        return;
    }
    let panic = dropped.expect_err("the drop fails the test");
    let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        message.starts_with(
            "the cluster refused 1 request(s) of system:serviceaccount:minispod-system:minispod-control-plane"
        ) && message.contains("GET /api/v1/namespaces/default/secrets"),
        "{message}"
    );
}
