//! How a worker's Kubernetes node is tied to it (#13), end to end against
//! a real control plane: an agent that joins K3s itself labels its node
//! with its worker id through the K3s configuration it writes; an agent
//! that already runs on a node (the DaemonSet, `--kubernetes-node`) writes
//! nothing and runs no join hook.

use std::{
    os::unix::fs::PermissionsExt,
    sync::Arc,
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Node;
use kube::Api;
use minispod_kube_standin::TestCluster;
use minispod_proto::v1::WorkerStatus;
use minispod_support::kubernetes::WORKER_ID_LABEL;

use super::{ControlPlane, TempDir, agent_command, free_port, spawn_agent, status};

/// A control plane that hands out K3s join settings, so that every
/// enrolled agent has a join hook to run unless it runs on a node already.
async fn control_plane_with_k3s() -> ControlPlane {
    let dir = Arc::new(TempDir::for_server().await);
    let k3s_token = dir.0.join("k3s-token");
    std::fs::write(&k3s_token, "K10secret::server:abc\n").unwrap();
    ControlPlane::start_in(dir.clone(), free_port(), |a| {
        a.fleet.k3s_server_url = "https://k3s.example.org:6443".into();
        a.fleet.k3s_token_file = Some(k3s_token.clone());
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_k3s_config_an_enrolled_agent_writes_labels_its_node_with_its_worker_id() {
    let cp = control_plane_with_k3s().await;
    let mut watch = cp.watch().await;
    let state = TempDir::new();
    let _agent = spawn_agent(
        &cp,
        &state.0,
        &cp.token(0).await,
        &["--k3s-join-command", "true"],
    );
    let (w, _) = watch
        .until("ACTIVE", |w| status(w) == WorkerStatus::Active)
        .await;
    assert!(w.ready, "the hook succeeded");
    uuid::Uuid::parse_str(&w.id).expect("worker ids are UUIDs");

    let config = state.0.join("k3s.yaml");
    let written = std::fs::read_to_string(&config).unwrap();
    assert_eq!(
        written,
        format!(
            "server: \"https://k3s.example.org:6443\"\n\
             token: \"K10secret::server:abc\"\n\
             node-label:\n  - \"{WORKER_ID_LABEL}={}\"\n",
            w.id
        )
    );
    let mode = std::fs::metadata(&config).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_on_a_kubernetes_node_writes_no_k3s_config_runs_no_hook_and_is_ready() {
    let cp = control_plane_with_k3s().await;
    let mut watch = cp.watch().await;
    let state = TempDir::new();
    let hook_ran = state.0.join("hook-ran");
    // As the DaemonSet starts it: the node's name from the environment.
    let hook = format!("touch {}; exit 1", hook_ran.display());
    let _agent = agent_command(
        &[cp.url()],
        &cp.ca_hash,
        &state.0,
        &cp.token(0).await,
        &["--k3s-join-command", &hook],
    )
    .env("MINISPOD_KUBERNETES_NODE", "node-a.cluster.example")
    .spawn()
    .expect("start minispod-agent");

    // An agent with a hook runs it once before its stream comes up, so by
    // ACTIVE it would have run.
    let (w, _) = watch
        .until("ACTIVE", |w| status(w) == WorkerStatus::Active)
        .await;
    assert!(w.online && w.ready && w.schedulable);
    assert!(w.k3s_join_error.is_empty(), "{}", w.k3s_join_error);
    assert_eq!(w.name, "node-a.cluster.example", "named after its node");
    assert!(!state.0.join("k3s.yaml").exists(), "no K3s config written");
    assert!(!hook_ran.exists(), "the join command did not run");
    // Enrollment records the K3s settings (a later start without
    // --kubernetes-node would join with them), but no hook ran.
    let j = minispod_agent::state::StateDir::open(&state.0)
        .unwrap()
        .k3s_join()
        .unwrap()
        .expect("settings recorded at enrollment");
    assert!(!j.succeeded && j.last_error.is_empty(), "{j:?}");
}

/// The node's taints as (key, effect).
fn taints(n: &Node) -> Vec<(String, String)> {
    n.spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|t| (t.key, t.effect))
        .collect()
}

/// Polls the node until `ok`, for at most 20 s; when it became so.
async fn node_until(
    nodes: &Api<Node>,
    name: &str,
    what: &str,
    ok: impl Fn(&Node) -> bool,
) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if nodes.get(name).await.is_ok_and(|n| ok(&n)) {
            return Instant::now();
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

const OFFLINE: (&str, &str) = ("minispod.dev/offline", "NoExecute");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_an_agent_taints_its_node_noexecute_after_the_grace_and_its_return_removes_it() {
    let cluster = TestCluster::start().await.unwrap();
    let dir = Arc::new(TempDir::for_server().await);
    let k3s_token = dir.0.join("k3s-token");
    std::fs::write(&k3s_token, "K10fallback::server:abc\n").unwrap();
    let kubeconfig = cluster.kubeconfig_path().to_owned();
    let grace = Duration::from_millis(500);
    let cp = ControlPlane::start_in(dir.clone(), free_port(), |a| {
        a.cluster.kubeconfig = Some(kubeconfig);
        a.cluster.offline_taint_grace = grace;
        a.cluster.offline_taint_after_start = Duration::ZERO;
        a.fleet.k3s_server_url = "https://k3s.example.org:6443".into();
        a.fleet.k3s_token_file = Some(k3s_token.clone());
    })
    .await;
    let mut watch = cp.watch().await;
    let state = TempDir::new();
    let token = cp.token(0).await;
    let mut agent = spawn_agent(&cp, &state.0, &token, &["--k3s-join-command", "true"]);
    watch.until("the worker online", |w| w.online).await;

    // The node registers as K3s registers it: with the labels the agent's
    // K3s configuration names.
    let config = std::fs::read_to_string(state.0.join("k3s.yaml")).unwrap();
    let label = config
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("- \"")
                .and_then(|l| l.strip_suffix('"'))
        })
        .expect("a node-label line");
    let (key, worker_id) = label.split_once('=').unwrap();
    assert_eq!(key, WORKER_ID_LABEL);
    assert!(
        config.contains("token: \"K10"),
        "a per-enrollment bootstrap token: {config}"
    );
    let node = cluster
        .create_node("killed", &[(key, worker_id)])
        .await
        .unwrap();
    let name = node.metadata.name.unwrap();
    watch
        .until("ACTIVE with its node", |w| {
            w.id == worker_id && status(w) == WorkerStatus::Active && w.node.is_some()
        })
        .await;
    let nodes: Api<Node> = Api::all(cluster.client().await);
    assert!(
        !taints(&nodes.get(&name).await.unwrap())
            .iter()
            .any(|t| t.0 == OFFLINE.0)
    );

    let pid = agent.child.id().unwrap().to_string();
    let killed = Instant::now();
    assert!(
        std::process::Command::new("kill")
            .args(["-KILL", &pid])
            .status()
            .unwrap()
            .success()
    );
    let _ = agent.child.wait().await;
    let tainted = node_until(&nodes, &name, "the offline taint", |n| {
        taints(n).contains(&(OFFLINE.0.into(), OFFLINE.1.into()))
    })
    .await;
    let after = tainted - killed;
    assert!(after >= grace, "not before the grace: {after:?}");
    eprintln!("kill -9 to NoExecute taint: {after:?} (grace {grace:?})");

    // The agent comes back with its identity: the taint goes.
    let restarted = Instant::now();
    let _agent = spawn_agent(&cp, &state.0, &token, &["--k3s-join-command", "true"]);
    let untainted = node_until(&nodes, &name, "the taint removed", |n| {
        !taints(n).iter().any(|t| t.0 == OFFLINE.0)
    })
    .await;
    eprintln!(
        "agent restart to taint removed: {:?}",
        untainted - restarted
    );
}
