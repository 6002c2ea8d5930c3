//! A customer's subscription (#14) when what runs it dies, end to end
//! against the stand-in cluster with real `minispod-agent` processes:
//! `kill -9` of the agent whose node holds the subscription's pod, and (on
//! PostgreSQL) `kill -9` of the control-plane replica that holds the
//! subscription's lease.

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
pub(crate) struct NodeAgent {
    pub(crate) agent: Agent,
    pub(crate) worker_id: String,
    pub(crate) node: String,
    pub(crate) state: TempDir,
}

/// An agent on its own stand-in node, started with `extra` arguments.
pub(crate) async fn agent_on_node(
    cp: &ControlPlane,
    cluster: &TestCluster,
    watch: &mut super::Watch,
    token: &str,
    base: &str,
    extra: &[&str],
) -> NodeAgent {
    let state = TempDir::new();
    let node = cluster.name(base);
    let mut args = vec!["--machine-id", base, "--kubernetes-node", &node];
    args.extend_from_slice(extra);
    let agent = spawn_agent(cp, &state.0, token, &args);
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
        state,
    }
}

/// The next UPSERTED subscription that satisfies `pred`, within `secs`.
pub(crate) async fn next_upsert(
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
        a.cluster.kubeconfig = Some(kubeconfig);
        a.cluster.offline_taint_grace = grace;
        a.cluster.offline_taint_after_start = Duration::ZERO;
        a.subscriptions.apps_domain = "apps.example.test".into();
    })
    .await;
    let mut workers = cp.watch().await;
    let token = cp.token(0).await;
    let mut a = agent_on_node(&cp, &cluster, &mut workers, &token, "sub-a", &[]).await;

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
    // The pods' workers and nodes are administrators' facts (a customer's
    // view names neither), so the operator's view is the one watched.
    let mut watch = subs
        .watch_subscriptions(authed(
            pb::WatchSubscriptionsRequest {
                all: true,
                ..Default::default()
            },
            &cp.admin,
        ))
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
                ..Default::default()
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
    let b = agent_on_node(&cp, &cluster, &mut workers, &token, "sub-b", &[]).await;

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

/// Polls `check` every 50 ms until it gives Some, for at most `secs`.
async fn until<T, Fut: std::future::Future<Output = Option<T>>>(
    secs: u64,
    what: &str,
    mut check: impl FnMut() -> Fut,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn subscription_on(ch: &Channel, token: &str, id: &str) -> Option<pb::Subscription> {
    SubscriptionServiceClient::new(ch.clone())
        .get_subscription(authed(pb::GetSubscriptionRequest { id: id.into() }, token))
        .await
        .ok()?
        .into_inner()
        .subscription
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_the_subscriptions_of_a_replica_killed_with_kill_9_pass_to_the_survivor() {
    const LEASE: Duration = Duration::from_secs(2);
    const RESYNC: Duration = Duration::from_secs(1);
    let cluster = TestCluster::start().await.unwrap();
    if cluster.standin().is_none() {
        eprintln!("skipped: needs the stand-in's scheduler");
        return;
    }
    // Replica A is a process (to kill -9); B runs here. One database, one
    // data dir (one CA, one JWT key), one cluster.
    let dir = super::replica_database().await;
    let ca_hash = minispod_control_plane::pki::Pki::load_or_create(&dir.0, &[])
        .unwrap()
        .ca_hash();
    let kubeconfig = cluster.kubeconfig_path().to_str().unwrap().to_owned();
    let (port_a, port_b) = (free_port(), free_port());
    let mut a = super::spawn_control_plane_process_with(
        &dir.0,
        dir.1.as_deref(),
        port_a,
        &[
            "--replica-lease",
            "2s",
            "--kubeconfig",
            &kubeconfig,
            "--offline-taint-after-start",
            "0s",
            "--subscription-resync",
            "1s",
            "--apps-domain",
            "apps.example.test",
        ],
    );
    let (ch_a, admin_a) = super::admin_channel(port_a, &dir.0).await;
    let token = super::WorkerServiceClient::new(ch_a.clone())
        .create_enrollment_token(authed(
            pb::CreateEnrollmentTokenRequest {
                ttl_seconds: 3600,
                description: "replicas".into(),
                ..Default::default()
            },
            &admin_a,
        ))
        .await
        .unwrap()
        .into_inner()
        .token;
    // The agent knows both replicas: it streams to A, and fails over to B.
    let state = TempDir::new();
    let node = cluster.name("cp-killed");
    let _agent = super::spawn_agent_to(
        &[
            format!("https://localhost:{port_a}"),
            format!("https://localhost:{port_b}"),
        ],
        &ca_hash,
        &state.0,
        &token,
        &["--machine-id", "cp-killed", "--kubernetes-node", &node],
    );
    let workers = |ch: Channel, admin: String| async move {
        super::WorkerServiceClient::new(ch)
            .list_workers(authed(pb::ListWorkersRequest::default(), &admin))
            .await
            .ok()
            .map(|r| r.into_inner().workers)
    };
    let worker = until(20, "the worker online on A", || {
        let w = workers(ch_a.clone(), admin_a.clone());
        async move { w.await?.into_iter().find(|w| w.online) }
    })
    .await;
    cluster
        .create_node("cp-killed", &[(WORKER_ID_LABEL, &worker.id)])
        .await
        .unwrap();
    until(20, "the worker ACTIVE with its node", || {
        let w = workers(ch_a.clone(), admin_a.clone());
        async move {
            w.await?
                .into_iter()
                .find(|w| status(w) == WorkerStatus::Active && w.node.is_some())
        }
    })
    .await;

    // A subscription made while A is the only replica: A holds its lease.
    let customer = AuthServiceClient::new(ch_a.clone())
        .register(pb::RegisterRequest {
            email: "stays@example.org".into(),
            password: "correct horse battery".into(),
            name: "Stays".into(),
            ..Default::default()
        })
        .await
        .expect("register")
        .into_inner()
        .access_token;
    let s = SubscriptionServiceClient::new(ch_a.clone())
        .create_subscription(authed(
            pb::CreateSubscriptionRequest {
                service_id: "ghost".into(),
                name: "stays".into(),
                variables: Default::default(),
                ..Default::default()
            },
            &customer,
        ))
        .await
        .expect("subscribed through A")
        .into_inner()
        .subscription
        .unwrap();
    until(30, "RUNNING through A", || {
        let (ch, t, id) = (ch_a.clone(), customer.clone(), s.id.clone());
        async move {
            subscription_on(&ch, &t, &id)
                .await
                .filter(|s| s.status == SubscriptionStatus::Running as i32)
        }
    })
    .await;
    let db = sqlx::PgPool::connect(dir.1.as_deref().unwrap())
        .await
        .unwrap();
    let lease_owner = async || -> String {
        sqlx::query_scalar("SELECT lease_owner FROM subscriptions WHERE id = $1")
            .bind(&s.id)
            .fetch_one(&db)
            .await
            .unwrap()
    };
    let a_id: String = sqlx::query_scalar("SELECT id FROM replicas")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(lease_owner().await, a_id);

    let kubeconfig = cluster.kubeconfig_path().to_owned();
    let b = ControlPlane::start_in(dir.clone(), port_b, |args| {
        args.store.replica_lease = LEASE;
        args.cluster.kubeconfig = Some(kubeconfig);
        args.cluster.offline_taint_after_start = Duration::ZERO;
        args.subscriptions.subscription_resync = RESYNC;
        args.subscriptions.apps_domain = "apps.example.test".into();
    })
    .await;
    a.start_kill().unwrap(); // SIGKILL: A leaves its replica row and leases.
    a.wait().await.unwrap();
    let killed = Instant::now();

    // A change through B reaches the cluster once A's replica lease lapsed.
    SubscriptionServiceClient::new(b.channel.clone())
        .update_subscription(authed(
            pb::UpdateSubscriptionRequest {
                id: s.id.clone(),
                variables: [("LOG_LEVEL".to_string(), "warn".to_string())].into(),
            },
            &customer,
        ))
        .await
        .expect("updated through B");
    let deployments: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        kube::Api::all(cluster.client().await);
    until(20, "B to apply the change", || {
        let d = deployments.clone();
        async move {
            let dep = d
                .list(&Default::default())
                .await
                .ok()?
                .items
                .into_iter()
                .find(|d| d.metadata.name.as_deref() == Some("stays-ghost"))?;
            let env = dep.spec?.template.spec?.containers[0].env.clone()?;
            env.iter()
                .any(|e| e.name == "logging__level" && e.value.as_deref() == Some("warn"))
                .then_some(())
        }
    })
    .await;
    let took = killed.elapsed();
    println!(
        "replica kill -9 to its subscription's update applied by the survivor: {} ms (replica lease {} ms, resync {} ms)",
        took.as_millis(),
        LEASE.as_millis(),
        RESYNC.as_millis()
    );
    assert!(took >= LEASE / 2, "not while A's lease held: {took:?}");
    assert!(took < LEASE + RESYNC * 3, "{took:?}");
    assert_ne!(lease_owner().await, a_id, "B holds the lease now");
    // The agent failed over to B: the subscription runs again.
    until(30, "RUNNING through B", || {
        let (ch, t, id) = (b.channel.clone(), customer.clone(), s.id.clone());
        async move {
            subscription_on(&ch, &t, &id)
                .await
                .filter(|s| s.status == SubscriptionStatus::Running as i32)
        }
    })
    .await;
    b.stop().await;
}
