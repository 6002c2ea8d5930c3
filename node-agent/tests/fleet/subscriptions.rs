//! A customer's subscription (#14) when the worker it runs on dies, end to
//! end: a real control plane linked to the stand-in cluster, two real
//! `minispod-agent` processes on two stand-in nodes, and `kill -9` of the
//! agent whose node holds the subscription's pod.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use minispod_kube_standin::TestCluster;
use minispod_proto::v1::{
    self as pb, SubscriptionStatus, WorkerStatus, auth_service_client::AuthServiceClient,
    subscription_service_client::SubscriptionServiceClient,
};
use minispod_support::kubernetes::WORKER_ID_LABEL;
use tonic::transport::Channel;

use super::{Agent, ControlPlane, TempDir, authed, free_port, spawn_agent, status};

/// An agent on its own stand-in node: the node is named after the agent
/// (`--kubernetes-node`, so each worker has a name of its own) and labelled
/// with the worker's id, as K3s labels a node the agent joined.
struct NodeAgent {
    agent: Agent,
    worker_id: String,
    node: String,
    _state: TempDir,
}

async fn agent_on_node(
    cp: &ControlPlane,
    cluster: &TestCluster,
    watch: &mut super::Watch,
    token: &str,
    base: &str,
) -> NodeAgent {
    let state = TempDir::new();
    let node = cluster.name(base);
    let agent = spawn_agent(
        cp,
        &state.0,
        token,
        &["--machine-id", base, "--kubernetes-node", &node],
    );
    let (w, _) = watch
        .until(&format!("{node} online"), |w| w.online && w.name == node)
        .await;
    cluster
        .create_node(base, &[(WORKER_ID_LABEL, &w.id)])
        .await
        .unwrap();
    watch
        .until(&format!("{node} ACTIVE with its node"), |w| {
            w.name == node && status(w) == WorkerStatus::Active && w.node.is_some()
        })
        .await;
    NodeAgent {
        agent,
        worker_id: w.id,
        node,
        _state: state,
    }
}

/// The next UPSERTED subscription that satisfies `pred`, within `secs`.
async fn next_upsert(
    stream: &mut tonic::Streaming<pb::WatchSubscriptionsResponse>,
    secs: u64,
    what: &str,
    pred: impl Fn(&pb::Subscription) -> bool,
) -> pb::Subscription {
    tokio::time::timeout(Duration::from_secs(secs), async {
        loop {
            let e = stream
                .message()
                .await
                .expect("the watch answers")
                .expect("the watch goes on");
            if e.r#type == pb::SubscriptionEventType::Upserted as i32 {
                let s = e.subscription.unwrap();
                if pred(&s) {
                    return s;
                }
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no watch event within {secs} s: {what}"))
}

/// The worker of the ready pod of the subscription's only component.
fn ready_on(s: &pb::Subscription) -> Option<&str> {
    s.components
        .first()?
        .pods
        .iter()
        .find(|p| p.ready)
        .map(|p| p.worker_id.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_agent_under_a_subscription_degrades_it_at_once_and_the_taint_moves_it() {
    let cluster = TestCluster::start().await.unwrap();
    if cluster.standin().is_none() {
        eprintln!("skipped: needs the stand-in's scheduler and taint eviction");
        return;
    }
    let kubeconfig = cluster.kubeconfig_path().to_owned();
    let grace = Duration::from_secs(1);
    let cp = ControlPlane::start_in(Arc::new(TempDir::for_server().await), free_port(), |a| {
        a.kubeconfig = Some(kubeconfig);
        a.offline_taint_grace = grace;
        a.offline_taint_after_start = Duration::ZERO;
        a.apps_domain = "apps.example.test".into();
    })
    .await;
    let mut workers = cp.watch().await;
    let token = cp.token(0).await;
    let mut a = agent_on_node(&cp, &cluster, &mut workers, &token, "sub-a").await;

    let customer = AuthServiceClient::new(cp.channel.clone())
        .register(pb::RegisterRequest {
            email: "mover@example.org".into(),
            password: "correct horse battery".into(),
            name: "Mover".into(),
            ..Default::default()
        })
        .await
        .expect("register")
        .into_inner()
        .access_token;
    let mut subs = SubscriptionServiceClient::<Channel>::new(cp.channel.clone());
    let mut watch = subs
        .watch_subscriptions(authed(pb::WatchSubscriptionsRequest::default(), &customer))
        .await
        .unwrap()
        .into_inner();
    loop {
        let e = watch.message().await.unwrap().unwrap();
        if e.r#type == pb::SubscriptionEventType::SnapshotEnd as i32 {
            break;
        }
    }
    let created = subs
        .create_subscription(authed(
            pb::CreateSubscriptionRequest {
                service_id: "n8n".into(),
                name: "flows".into(),
                variables: Default::default(),
            },
            &customer,
        ))
        .await
        .expect("subscribed")
        .into_inner()
        .subscription
        .unwrap();
    let running = next_upsert(&mut watch, 30, "RUNNING on A", |s| {
        s.id == created.id && s.status == SubscriptionStatus::Running as i32
    })
    .await;
    assert_eq!(ready_on(&running), Some(a.worker_id.as_str()));
    assert_eq!(running.components[0].pods[0].node_name, a.node);
    // The second worker and its node come now, so the pod had one place.
    let b = agent_on_node(&cp, &cluster, &mut workers, &token, "sub-b").await;

    let pid = a.agent.child.id().unwrap().to_string();
    let killed = Instant::now();
    assert!(
        std::process::Command::new("kill")
            .args(["-KILL", &pid])
            .status()
            .unwrap()
            .success()
    );
    let degraded = next_upsert(&mut watch, 10, "DEGRADED", |s| {
        s.id == created.id && s.status == SubscriptionStatus::Degraded as i32
    })
    .await;
    let latency = killed.elapsed();
    assert!(
        degraded
            .status_reason
            .contains(&format!("worker {} is offline", a.node)),
        "the cause names the offline worker: {}",
        degraded.status_reason
    );
    println!(
        "kill -9 of the agent to DEGRADED (seen by a WatchSubscriptions subscriber): {} ms",
        latency.as_millis()
    );
    assert!(
        latency < grace,
        "degraded at once, not after the taint: {latency:?}"
    );
    let _ = a.agent.child.wait().await;

    // After the grace the node is tainted NoExecute; the stand-in evicts the
    // pod and the Deployment's new one is scheduled on B.
    let moved = next_upsert(&mut watch, 30, "RUNNING on B", |s| {
        s.id == created.id
            && s.status == SubscriptionStatus::Running as i32
            && ready_on(s) == Some(b.worker_id.as_str())
    })
    .await;
    let back = killed.elapsed();
    assert!(back >= grace, "not before the taint grace: {back:?}");
    assert!(
        moved.components[0]
            .pods
            .iter()
            .filter(|p| p.ready)
            .all(|p| p.node_name == b.node),
        "{:?}",
        moved.components
    );
    println!(
        "kill -9 of the agent to RUNNING on the other worker: {} ms (taint grace {} ms)",
        back.as_millis(),
        grace.as_millis()
    );
}
