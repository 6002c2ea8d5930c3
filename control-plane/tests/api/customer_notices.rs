//! Customers are told (issue #25): a subscription's owner gets a mail (the
//! real SMTP sink) and a signed webhook (the HTTPS receiver of the fleet
//! notice tests) when their subscription stays down past the grace and
//! when it recovers, when it crash-loops, and when an administrator
//! suspends or resumes it; a blip tells nothing; they choose what they
//! get, among the subscription events only. Administrators' thresholds on
//! the workers' figures are told once when crossed and once when cleared,
//! driven by an agent's real mTLS stream reporting chosen figures.

use std::time::{Duration, Instant};

use minispod_control_plane::config::ServeArgs;
use minispod_proto::v1::{self as pb, notification_service_client::NotificationServiceClient};
use minispod_support::WORKER_ID_LABEL;
use tonic::{Code, transport::Channel};

use crate::{
    helpers::{TempDir, TestApp, authed, expect_code, spawn_app_with, violated_fields},
    history::Beating,
    mail::{PUBLIC_URL, with_mail},
    notifications::{Hook, WebhookSink, allow_local_webhooks},
    smtp::SmtpSink,
    subscriptions::{Env, create, env_with, status_until, subs, until},
    workers::{Stream, connect, enroll, mtls},
};

/// Longest wait for a notice.
const WAIT: Duration = Duration::from_secs(30);

fn notifications(app: &TestApp) -> NotificationServiceClient<Channel> {
    NotificationServiceClient::new(app.channel.clone())
}

/// Mail to `sink`, webhooks to `hooks` allowed, owners told after `grace`.
fn told_after(a: &mut ServeArgs, sink: &SmtpSink, hooks: &WebhookSink, grace: Duration) {
    with_mail(a, sink);
    allow_local_webhooks(a);
    a.mail.webhook_ca_file = Some(hooks.ca_file.clone());
    a.notify.notify_subscription_grace = grace;
    a.notify.notify_flap_window = Duration::from_secs(120);
}

/// The customer's preferences: `events`, mail on, the webhook at `url`;
/// returns the signing secret.
async fn choose(app: &TestApp, token: &str, url: &str, events: &[pb::NotificationEvent]) -> String {
    let r = notifications(app)
        .update_notification_preferences(authed(
            pb::UpdateNotificationPreferencesRequest {
                mail: Some(true),
                webhook_url: Some(url.into()),
                events: events.iter().map(|e| *e as i32).collect(),
                update_events: true,
                rotate_webhook_secret: false,
            },
            token,
        ))
        .await
        .expect("a customer sets their preferences")
        .into_inner();
    assert_eq!(r.webhook_secret.len(), 64);
    r.webhook_secret
}

fn of_subscription<'a>(event: &'a str, id: &'a str) -> impl Fn(&Hook) -> bool + 'a {
    move |h: &Hook| h.event() == event && h.json()["subscription"]["id"] == id
}

/// A worker with a node, whose mTLS channel the test keeps to connect
/// again: (worker id, channel, stream).
async fn worker(env: &mut Env, machine: &str) -> (String, Channel, Stream) {
    let token = env.admin.token(1, "").await.token;
    let agent = enroll(&env.app, &token, machine).await.expect("enroll");
    let channel = mtls(&env.app, &agent).await;
    let stream = connect(channel.clone(), machine).await.expect("connect");
    let id = agent.enrolled.worker_id;
    env.cluster
        .create_node(machine, &[(WORKER_ID_LABEL, &id)])
        .await
        .unwrap();
    until_active(env, &id).await;
    (id, channel, stream)
}

async fn until_active(env: &mut Env, id: &str) {
    let deadline = Instant::now() + WAIT;
    while env.admin.worker(id).await.status != pb::WorkerStatus::Active as i32 {
        assert!(Instant::now() < deadline, "worker {id} not ACTIVE");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_outage_past_the_grace_is_told_to_the_owner_once_and_its_end_too_and_a_blip_not_at_all()
{
    let dir = TempDir::new();
    let sink = SmtpSink::start(&dir.0);
    let hooks = WebhookSink::start(&dir.0).await;
    // Long enough that the blip is surely over within it on a loaded
    // machine.
    let grace = Duration::from_secs(5);
    let mut env = env_with(|a| told_after(a, &sink, &hooks, grace)).await;
    let (w, channel, stream) = worker(&mut env, "m-owner-told").await;
    let email = "owner-told@example.com";
    let (_user, token) = env.customer(email).await;
    let secret = choose(
        &env.app,
        &token,
        &hooks.url,
        &[
            pb::NotificationEvent::SubscriptionDegraded,
            pb::NotificationEvent::SubscriptionRecovered,
        ],
    )
    .await;
    let s = create(&env.app, &token, "ghost", "journal", &[])
        .await
        .unwrap();
    status_until(&env.app, &token, &s.id, pb::SubscriptionStatus::Running, 30).await;

    // A blip: the worker's stream drops and is back at once.
    drop(stream);
    let blip = Instant::now();
    status_until(
        &env.app,
        &token,
        &s.id,
        pb::SubscriptionStatus::Degraded,
        10,
    )
    .await;
    let mut stream = connect(channel.clone(), "m-owner-told").await.unwrap();
    stream.beat(true).await;
    status_until(&env.app, &token, &s.id, pb::SubscriptionStatus::Running, 30).await;
    assert!(
        blip.elapsed() < grace,
        "the blip was not short: {:?}",
        blip.elapsed()
    );

    // An outage that lasts.
    drop(stream);
    let dropped = Instant::now();
    until_online(&mut env, &w, false).await;
    let down = hooks
        .wait_for(1, of_subscription("subscription_degraded", &s.id))
        .await;
    assert!(dropped.elapsed() >= grace, "not before the grace");
    down[0].assert_signed_with(&secret);
    let event = down[0].json();
    assert_eq!(event["subscription"]["name"], "journal");
    assert_eq!(event["subscription"]["status"], "DEGRADED");
    assert_eq!(
        event["link"],
        format!("{PUBLIC_URL}/subscriptions/{}", s.id)
    );
    // The customer's words: no worker name, no cluster message.
    let body = &down[0].body;
    assert!(
        !body.contains("m-owner-told") && !body.contains(&w),
        "{body}"
    );
    assert!(!body.contains("Taint") && !body.contains("node"), "{body}");

    let mut stream = connect(channel, "m-owner-told").await.unwrap();
    stream.beat(true).await;
    let back = hooks
        .wait_for(1, of_subscription("subscription_recovered", &s.id))
        .await;
    back[0].assert_signed_with(&secret);
    let mails = until(20, "the two mails", || {
        let got: Vec<_> = sink
            .received_by(email)
            .into_iter()
            .filter(|m| m.subject.starts_with("journal"))
            .collect();
        async move { (got.len() >= 2).then_some(got) }
    })
    .await;
    let subjects: Vec<&str> = mails.iter().map(|m| m.subject.as_str()).collect();
    assert_eq!(
        subjects,
        ["journal is not fully working", "journal works again"]
    );
    assert!(mails[0].text.contains("under Profile"), "{}", mails[0].text);
    // Once each: the blip told nothing, and nothing else was told.
    let all: Vec<Hook> = hooks
        .received()
        .into_iter()
        .filter(|h| h.event().starts_with("subscription_"))
        .collect();
    assert_eq!(all.len(), 2, "{all:#?}");
}

async fn until_online(env: &mut Env, id: &str, online: bool) {
    let deadline = Instant::now() + WAIT;
    while env.admin.worker(id).await.online != online {
        assert!(Instant::now() < deadline, "worker {id} online != {online}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_administrator_s_suspension_is_told_and_a_resumption_the_owner_turned_off_is_not() {
    let dir = TempDir::new();
    let sink = SmtpSink::start(&dir.0);
    let hooks = WebhookSink::start(&dir.0).await;
    let mut env = env_with(|a| told_after(a, &sink, &hooks, Duration::from_secs(60))).await;
    let (_w, _channel, _stream) = worker(&mut env, "m-suspended").await;
    let email = "suspended@example.com";
    let (_user, token) = env.customer(email).await;
    // Every subscription event but RESUMED.
    let secret = choose(
        &env.app,
        &token,
        &hooks.url,
        &[
            pb::NotificationEvent::SubscriptionFailed,
            pb::NotificationEvent::SubscriptionSuspended,
        ],
    )
    .await;
    let s = create(&env.app, &token, "ghost", "paused", &[])
        .await
        .unwrap();
    status_until(&env.app, &token, &s.id, pb::SubscriptionStatus::Running, 30).await;
    let admin = env.admin.token.clone();
    let suspend = |reason: &str| pb::SuspendSubscriptionRequest {
        id: s.id.clone(),
        reason: reason.into(),
    };
    subs(&env.app)
        .suspend_subscription(authed(suspend("unpaid invoice"), &admin))
        .await
        .unwrap();
    let told = hooks
        .wait_for(1, of_subscription("subscription_suspended", &s.id))
        .await;
    told[0].assert_signed_with(&secret);
    assert!(
        told[0].json()["subscription"]["reason"]
            .as_str()
            .unwrap()
            .contains("unpaid invoice"),
        "{}",
        told[0].body
    );
    subs(&env.app)
        .resume_subscription(authed(
            pb::ResumeSubscriptionRequest { id: s.id.clone() },
            &admin,
        ))
        .await
        .unwrap();
    // Suspended again: the second notice is the barrier after the
    // resumption.
    subs(&env.app)
        .suspend_subscription(authed(suspend(""), &admin))
        .await
        .unwrap();
    hooks
        .wait_for(2, of_subscription("subscription_suspended", &s.id))
        .await;
    until(20, "two suspension mails", || {
        let n = sink
            .received_by(email)
            .iter()
            .filter(|m| m.subject == "paused was suspended")
            .count();
        async move { (n == 2).then_some(()) }
    })
    .await;
    let outbox = notifications(&env.app)
        .list_outbox_messages(authed(
            pb::ListOutboxMessagesRequest {
                page_size: 200,
                ..Default::default()
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    let purposes: Vec<&str> = outbox.messages.iter().map(|m| m.purpose.as_str()).collect();
    assert!(
        !purposes.contains(&"subscription_resumed"),
        "turned off, never queued: {purposes:?}"
    );
    assert_eq!(
        purposes
            .iter()
            .filter(|p| **p == "subscription_suspended")
            .count(),
        4,
        "two mails and two webhooks: {purposes:?}"
    );
}

#[tokio::test]
async fn a_crash_loop_is_told_to_the_owner_once_per_spell() {
    let dir = TempDir::new();
    let hooks = WebhookSink::start(&dir.0).await;
    let mut env = env_with(|a| {
        allow_local_webhooks(a);
        a.mail.webhook_ca_file = Some(hooks.ca_file.clone());
        a.notify.notify_subscription_grace = Duration::from_secs(1);
        a.notify.notify_crash_restarts = 3;
        a.notify.notify_crash_window = Duration::from_secs(60);
    })
    .await;
    if env.cluster.standin().is_none() {
        // A crashing image needs the stand-in's kubelet.
        return;
    }
    let (_w, _channel, _stream) = worker(&mut env, "m-crashing").await;
    let image = "docker.io/minispod/crashing:1.0";
    env.cluster.set_image_crashing(image).await.unwrap();
    let admin = env.admin.token.clone();
    entry_with_image(&env.app, &admin, "crashing", image).await;
    let (_user, token) = env.customer("crash@example.com").await;
    let secret = choose(
        &env.app,
        &token,
        &hooks.url,
        &[
            pb::NotificationEvent::SubscriptionCrashLoop,
            pb::NotificationEvent::SubscriptionFailed,
        ],
    )
    .await;
    let s = create(&env.app, &token, "crashing", "crashy", &[])
        .await
        .unwrap();
    let looped = hooks
        .wait_for(1, of_subscription("subscription_crash_loop", &s.id))
        .await;
    looped[0].assert_signed_with(&secret);
    assert!(looped[0].json()["restarts"].as_i64().unwrap() >= 3);
    // It keeps restarting and turns FAILED; that is told after the grace,
    // and the crash loop is not told again.
    status_until(&env.app, &token, &s.id, pb::SubscriptionStatus::Failed, 30).await;
    hooks
        .wait_for(1, of_subscription("subscription_down", &s.id))
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let loops = hooks
        .received()
        .into_iter()
        .filter(of_subscription("subscription_crash_loop", &s.id))
        .count();
    assert_eq!(loops, 1);
}

#[tokio::test]
async fn a_customer_chooses_among_the_subscription_events_only() {
    let dir = TempDir::new();
    let hooks = WebhookSink::start(&dir.0).await;
    let app = spawn_app_with(|a| {
        allow_local_webhooks(a);
        a.mail.webhook_ca_file = Some(hooks.ca_file.clone());
    })
    .await;
    let (_, user) = app
        .register("chooser@example.org", "plain-password-1")
        .await;
    let mut client = notifications(&app);
    let fresh = client
        .get_notification_preferences(authed(pb::GetNotificationPreferencesRequest {}, &user))
        .await
        .unwrap()
        .into_inner();
    let subscription_events: Vec<i32> = vec![5, 7, 8, 9, 10, 11, 12, 16];
    assert_eq!(fresh.available_events, subscription_events);
    let prefs = fresh.preferences.unwrap();
    assert!(
        prefs.mail,
        "a customer is told by mail unless they say otherwise"
    );
    assert_eq!(prefs.events, subscription_events);

    let refused = expect_code(
        client
            .update_notification_preferences(authed(
                pb::UpdateNotificationPreferencesRequest {
                    events: vec![
                        pb::NotificationEvent::SubscriptionFailed as i32,
                        pb::NotificationEvent::WorkerOffline as i32,
                    ],
                    update_events: true,
                    ..Default::default()
                },
                &user,
            ))
            .await,
        Code::PermissionDenied,
    );
    assert!(refused.message().contains("WORKER_OFFLINE"), "{refused:?}");
    // Unchanged.
    let now = client
        .get_notification_preferences(authed(pb::GetNotificationPreferencesRequest {}, &user))
        .await
        .unwrap()
        .into_inner()
        .preferences
        .unwrap();
    assert_eq!(now.events, subscription_events);

    // Their own webhook, and a test notice to it, signed with their secret.
    let secret = choose(
        &app,
        &user,
        &hooks.url,
        &[pb::NotificationEvent::SubscriptionRolledBack],
    )
    .await;
    client
        .send_test_notification(authed(pb::SendTestNotificationRequest {}, &user))
        .await
        .unwrap();
    hooks.wait_for(1, |h| h.event() == "test").await[0].assert_signed_with(&secret);

    // The outbox and the fleet's thresholds stay the operator's.
    expect_code(
        client
            .list_outbox_messages(authed(pb::ListOutboxMessagesRequest::default(), &user))
            .await,
        Code::PermissionDenied,
    );
    expect_code(
        client
            .get_worker_thresholds(authed(pb::GetWorkerThresholdsRequest {}, &user))
            .await,
        Code::PermissionDenied,
    );
}

/// A catalog entry `slug`: n8n's template with `image`.
async fn entry_with_image(app: &TestApp, admin: &str, slug: &str, image: &str) {
    let mut catalog = pb::catalog_service_client::CatalogServiceClient::new(app.channel.clone());
    let n8n = catalog
        .get_service(pb::GetServiceRequest {
            lookup: Some(pb::get_service_request::Lookup::Slug("n8n".into())),
        })
        .await
        .unwrap()
        .into_inner()
        .service
        .unwrap();
    let mut template = n8n.template.clone().unwrap();
    template.components[0].image = image.into();
    catalog
        .create_service(authed(
            pb::CreateServiceRequest {
                slug: slug.into(),
                name: slug.into(),
                description: "x".into(),
                category: "test".into(),
                version: "1".into(),
                image: image.into(),
                port: 5678,
                resources: n8n.resources,
                monthly_price_cents: 100,
                active: true,
                template: Some(template),
                ..Default::default()
            },
            admin,
        ))
        .await
        .unwrap();
}

fn cpu(above: f64, clear_below: f64, for_seconds: u32) -> pb::WorkerThreshold {
    pb::WorkerThreshold {
        metric: pb::WorkerMetric::Cpu as i32,
        worker_id: String::new(),
        above_percent: above,
        clear_below_percent: clear_below,
        for_seconds,
    }
}

#[tokio::test]
async fn a_worker_threshold_is_told_once_when_crossed_and_once_when_it_clears() {
    let dir = TempDir::new();
    let hooks = WebhookSink::start(&dir.0).await;
    let app = spawn_app_with(|a| {
        allow_local_webhooks(a);
        a.mail.webhook_ca_file = Some(hooks.ca_file.clone());
        a.fleet.metrics_flush_interval = Duration::from_millis(200);
    })
    .await;
    let admin = app.admin_token().await;
    let mut client = notifications(&app);
    let secret = choose(
        &app,
        &admin,
        &hooks.url,
        &[
            pb::NotificationEvent::WorkerThreshold,
            pb::NotificationEvent::WorkerThresholdCleared,
        ],
    )
    .await;

    // Checked: levels with hysteresis, one per metric, known workers.
    let bad = expect_code(
        client
            .set_worker_thresholds(authed(
                pb::SetWorkerThresholdsRequest {
                    thresholds: vec![cpu(80.0, 90.0, 1), cpu(80.0, 50.0, 1)],
                },
                &admin,
            ))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(
        violated_fields(&bad),
        ["thresholds[0].clear_below_percent", "thresholds[1].metric"]
    );
    expect_code(
        client
            .set_worker_thresholds(authed(
                pb::SetWorkerThresholdsRequest {
                    thresholds: vec![pb::WorkerThreshold {
                        worker_id: "no-such-worker".into(),
                        ..cpu(80.0, 50.0, 1)
                    }],
                },
                &admin,
            ))
            .await,
        Code::NotFound,
    );

    // Over 80 % for 1 s crosses; under 50 % for 1 s clears.
    let set = client
        .set_worker_thresholds(authed(
            pb::SetWorkerThresholdsRequest {
                thresholds: vec![cpu(80.0, 50.0, 1)],
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(set.thresholds, [cpu(80.0, 50.0, 1)]);
    let enrollment = app
        .workers()
        .create_enrollment_token(authed(
            pb::CreateEnrollmentTokenRequest {
                max_uses: 1,
                ..Default::default()
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .token;
    let (id, mut agent) = Beating::open(&app, &enrollment, "hot").await;

    // A spike shorter than the duration, then a sustained load.
    agent.beat_for(400, 95.0, 1 << 30).await;
    agent.beat_for(600, 20.0, 1 << 30).await;
    agent.beat_for(2500, 95.0, 1 << 30).await;
    let crossed = hooks.wait_for(1, |h| h.event() == "worker_threshold").await;
    crossed[0].assert_signed_with(&secret);
    let event = crossed[0].json();
    assert_eq!(event["worker"]["id"], id.as_str());
    assert_eq!(event["threshold"]["metric"], "CPU");
    assert_eq!(event["threshold"]["above_percent"], 80.0);
    let now = client
        .get_worker_thresholds(authed(pb::GetWorkerThresholdsRequest {}, &admin))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(now.crossed.len(), 1, "{now:?}");
    assert_eq!(now.crossed[0].worker_id, id);

    // Between the levels nothing changes; below the lower one it clears.
    agent.beat_for(1500, 65.0, 1 << 30).await;
    agent.beat_for(2500, 10.0, 1 << 30).await;
    let cleared = hooks
        .wait_for(1, |h| h.event() == "worker_threshold_cleared")
        .await;
    cleared[0].assert_signed_with(&secret);
    agent.beat_for(1000, 10.0, 1 << 30).await;
    let all = hooks.received();
    let count = |e: &str| all.iter().filter(|h| h.event() == e).count();
    assert_eq!(count("worker_threshold"), 1, "{all:#?}");
    assert_eq!(count("worker_threshold_cleared"), 1, "{all:#?}");
    let now = client
        .get_worker_thresholds(authed(pb::GetWorkerThresholdsRequest {}, &admin))
        .await
        .unwrap()
        .into_inner();
    assert!(now.crossed.is_empty(), "{now:?}");
}
