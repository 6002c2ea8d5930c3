//! Customer words and operator words (issue #23): a customer who cannot
//! subscribe is told what it means for them, never the operator's
//! instructions or the fleet's figures; an administrator is told what is
//! short and how to fix it; administrators who asked for it get one
//! SUBSCRIBE_BLOCKED notice per cause and window, and only then does the
//! customer read that the operator has been told.

use minispod_proto::v1::{
    self as pb, notification_service_client::NotificationServiceClient,
    worker_service_client::WorkerServiceClient,
};
use tonic::{Code, Status, transport::Channel};

use crate::{
    helpers::{TestApp, authed, expect_code, spawn_app, spawn_app_with},
    subscriptions::{create, customer, env, get, status_until, subs, worker_with_node},
};

/// The ErrorInfo reason of a refusal (domain minispod.dev).
#[track_caller]
pub(crate) fn reason(status: &Status) -> String {
    use tonic_types::StatusExt;
    let info = status
        .get_details_error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
    assert_eq!(info.domain, "minispod.dev");
    info.reason
}

fn notifications(app: &TestApp) -> NotificationServiceClient<Channel> {
    NotificationServiceClient::new(app.channel.clone())
}

/// The administrator asks for SUBSCRIBE_BLOCKED notices by webhook.
async fn ask_for_blocked_notices(app: &TestApp, admin: &str) {
    notifications(app)
        .update_notification_preferences(authed(
            pb::UpdateNotificationPreferencesRequest {
                webhook_url: Some("https://hooks.example.invalid/minispod".into()),
                events: vec![pb::NotificationEvent::SubscribeBlocked as i32],
                update_events: true,
                ..Default::default()
            },
            admin,
        ))
        .await
        .expect("preferences saved");
}

/// The SUBSCRIBE_BLOCKED messages in the outbox: (subject, recipient).
async fn blocked_notices(app: &TestApp, admin: &str) -> Vec<(String, String)> {
    notifications(app)
        .list_outbox_messages(authed(pb::ListOutboxMessagesRequest::default(), admin))
        .await
        .unwrap()
        .into_inner()
        .messages
        .into_iter()
        .filter(|m| m.purpose == "subscribe_blocked")
        .map(|m| (m.subject, m.recipient))
        .collect()
}

async fn check(app: &TestApp, token: &str, service: &str) -> pb::CheckSubscriptionResponse {
    subs(app)
        .check_subscription(authed(
            pb::CheckSubscriptionRequest {
                service_id: service.into(),
            },
            token,
        ))
        .await
        .expect("CheckSubscription")
        .into_inner()
}

/// Words a customer must never read.
const OPERATOR_WORDS: &[&str] = &[
    "--kubeconfig",
    "kube-in-cluster",
    "Kubernetes",
    "schedulable",
    "worker",
    "MiB",
    "CPU",
];

#[track_caller]
fn assert_customer_words(message: &str) {
    for w in OPERATOR_WORDS {
        assert!(
            !message.contains(w),
            "{w:?} in a customer's message: {message}"
        );
    }
}

#[tokio::test]
async fn without_a_cluster_customers_are_told_in_their_words_and_administrators_how_to_link_one() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    ask_for_blocked_notices(&app, &admin).await;
    let (_ann, ann) = customer(&app, "ann.words@example.com").await;

    let e = expect_code(
        create(&app, &ann, "n8n", "flows", &[]).await,
        Code::FailedPrecondition,
    );
    assert_eq!(reason(&e), "NO_CLUSTER_LINKED");
    assert_eq!(
        e.message(),
        "n8n cannot be started right now; the operator has been told"
    );
    assert_customer_words(e.message());
    // Told, once: the notice names the cause and the fix.
    let told = blocked_notices(&app, &admin).await;
    assert_eq!(told.len(), 1, "{told:?}");
    assert_eq!(
        told[0].0,
        "Customers cannot subscribe: no Kubernetes cluster is linked"
    );

    // Another customer, another try: the same words, no second notice
    // within the window.
    let (_ben, ben) = customer(&app, "ben.words@example.com").await;
    let e = expect_code(
        create(&app, &ben, "ghost", "blog", &[]).await,
        Code::FailedPrecondition,
    );
    assert_eq!(
        e.message(),
        "Ghost cannot be started right now; the operator has been told"
    );
    let c = check(&app, &ben, "wordpress").await;
    assert!(!c.allowed);
    assert_eq!(c.reason, "NO_CLUSTER_LINKED");
    assert_eq!(
        c.message,
        "WordPress cannot be started right now; the operator has been told"
    );
    assert_eq!(blocked_notices(&app, &admin).await.len(), 1);

    // The administrator reads what is wrong and how to fix it.
    let e = expect_code(
        create(&app, &admin, "n8n", "mine", &[]).await,
        Code::FailedPrecondition,
    );
    assert_eq!(reason(&e), "NO_CLUSTER_LINKED");
    for w in [
        "--kubeconfig",
        "/etc/rancher/k3s/k3s.yaml",
        "--kube-in-cluster",
    ] {
        assert!(e.message().contains(w), "{w:?} in {}", e.message());
    }
    let c = check(&app, &admin, "n8n").await;
    assert_eq!((c.allowed, c.reason.as_str()), (false, "NO_CLUSTER_LINKED"));
    assert!(c.message.contains("--kubeconfig"), "{}", c.message);
}

#[tokio::test]
async fn a_customer_is_not_told_the_operator_knows_when_no_administrator_is_told() {
    // No administrator asked for the notice: nobody is told, and the
    // customer's words do not pretend otherwise.
    let app = spawn_app_with(|a| a.notify.notify_blocked_every = std::time::Duration::ZERO).await;
    let admin = app.admin_token().await;
    let (_u, token) = customer(&app, "nobody.told@example.com").await;
    let e = expect_code(
        create(&app, &token, "n8n", "flows", &[]).await,
        Code::FailedPrecondition,
    );
    assert_eq!(
        e.message(),
        "n8n cannot be started right now; please try again later"
    );
    assert!(blocked_notices(&app, &admin).await.is_empty());
    // Once an administrator asks for it, the next refusal tells them (the
    // window is zero here) and says so.
    ask_for_blocked_notices(&app, &admin).await;
    let e = expect_code(
        create(&app, &token, "n8n", "flows", &[]).await,
        Code::FailedPrecondition,
    );
    assert_eq!(
        e.message(),
        "n8n cannot be started right now; the operator has been told"
    );
    assert_eq!(blocked_notices(&app, &admin).await.len(), 1);
}

#[tokio::test]
async fn short_capacity_shows_figures_to_administrators_only_and_where_it_runs_too() {
    let mut env = env().await;
    ask_for_blocked_notices(&env.app, &env.admin.token).await;
    let (_user, token) = env.customer("cap.words@example.com").await;
    // No worker: no room.
    let e = expect_code(
        create(&env.app, &token, "ghost", "blog", &[]).await,
        Code::FailedPrecondition,
    );
    assert_eq!(reason(&e), "NO_CAPACITY");
    assert_eq!(
        e.message(),
        "Ghost cannot be started right now; the operator has been told"
    );
    assert_customer_words(e.message());
    let told = blocked_notices(&env.app, &env.admin.token).await;
    assert_eq!(
        told.iter().map(|t| t.0.as_str()).collect::<Vec<_>>(),
        ["Customers cannot subscribe: the workers have no room"]
    );
    let c = check(&env.app, &token, "ghost").await;
    assert_eq!((c.allowed, c.reason.as_str()), (false, "NO_CAPACITY"));
    assert_customer_words(&c.message);
    let e = expect_code(
        create(&env.app, &env.admin.token, "ghost", "blog", &[]).await,
        Code::FailedPrecondition,
    );
    assert_eq!(reason(&e), "NO_CAPACITY");
    assert!(
        e.message().contains("not enough capacity")
            && e.message().contains("0 schedulable worker(s)")
            && e.message().contains("add a worker"),
        "{}",
        e.message()
    );

    // A worker with room: the check says yes, and the subscription runs.
    let (worker, node, _stream) = worker_with_node(&mut env, "m-words").await;
    let c = check(&env.app, &token, "ghost").await;
    assert!(c.allowed, "{c:?}");
    assert_eq!((c.reason.as_str(), c.message.as_str()), ("", ""));
    let s = create(&env.app, &token, "ghost", "blog", &[])
        .await
        .unwrap();
    let mine = status_until(&env.app, &token, &s.id, pb::SubscriptionStatus::Running, 30).await;
    // The customer's view: no namespace, no worker, no node.
    assert_eq!(mine.namespace, "");
    for p in mine.components.iter().flat_map(|c| &c.pods) {
        assert_eq!(
            (
                p.worker_id.as_str(),
                p.worker_name.as_str(),
                p.node_name.as_str()
            ),
            ("", "", ""),
            "{p:?}"
        );
    }
    // The administrator's: all of it.
    let seen = get(&env.app, &env.admin.token, &s.id)
        .await
        .unwrap()
        .subscription
        .unwrap();
    assert!(seen.namespace.starts_with("ms-"), "{seen:?}");
    let pod = &seen.components[0].pods[0];
    assert_eq!(
        (pod.worker_id.as_str(), pod.node_name.as_str()),
        (worker.as_str(), node.as_str())
    );
    assert_eq!(pod.worker_name, "host-m-words");
}

#[tokio::test]
async fn a_worker_without_its_node_says_how_to_join_it() {
    let mut env = env().await;
    let token = env.admin.token(1, "").await.token;
    let agent = crate::workers::enroll(&env.app, &token, "m-unjoined")
        .await
        .expect("enroll");
    let id = agent.enrolled.worker_id.clone();
    let channel = crate::workers::mtls(&env.app, &agent).await;
    let mut stream = crate::workers::connect(channel, "m-unjoined")
        .await
        .unwrap();
    stream.beat(true).await;
    let admin = env.admin.token.clone();
    let w = crate::subscriptions::until(20, "NOT_READY: node not joined", || {
        let (app, admin, id) = (&env.app, admin.clone(), id.clone());
        async move {
            let w = WorkerServiceClient::new(app.channel.clone())
                .get_worker(authed(
                    pb::GetWorkerRequest {
                        lookup: Some(pb::get_worker_request::Lookup::Id(id)),
                    },
                    &admin,
                ))
                .await
                .ok()?
                .into_inner()
                .worker?;
            (w.status == pb::WorkerStatus::NotReady as i32
                && w.not_ready_reason.starts_with("node not joined"))
            .then_some(w)
        }
    })
    .await;
    assert!(
        w.not_ready_hint.contains(&format!(
            "`kubectl label node host-m-unjoined minispod.dev/worker-id={id}`"
        )) && w
            .not_ready_hint
            .contains("`systemctl enable --now k3s-agent`"),
        "{}",
        w.not_ready_hint
    );
    // Ready again once a node carries its id: no hint left.
    env.cluster
        .create_node(
            "host-m-unjoined",
            &[(minispod_support::WORKER_ID_LABEL, &id)],
        )
        .await
        .unwrap();
    stream.beat(true).await;
    let w = crate::subscriptions::until(20, "ACTIVE with its node", || {
        let (app, admin, id) = (&env.app, admin.clone(), id.clone());
        async move {
            let w = WorkerServiceClient::new(app.channel.clone())
                .get_worker(authed(
                    pb::GetWorkerRequest {
                        lookup: Some(pb::get_worker_request::Lookup::Id(id)),
                    },
                    &admin,
                ))
                .await
                .ok()?
                .into_inner()
                .worker?;
            (w.status == pb::WorkerStatus::Active as i32).then_some(w)
        }
    })
    .await;
    assert_eq!(w.not_ready_hint, "");
}
