//! Auto-update of patch versions in a maintenance window (issue #25): a
//! subscription whose policy is enabled moves by itself to a newer patch
//! version while its window is open, through UpgradeSubscription's path;
//! never to a minor version, never outside its window, never while
//! suspended.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use minispod_proto::v1 as pb;
use tonic::Code;

use crate::{
    helpers::{TestApp, authed, expect_code, violated_fields},
    subscriptions::{env_with, get, status_until, subs, worker_with_node},
    upgrades::{create_at, deployment_image, versions},
};

const OLD: &str = "1.64.0";
const PATCH: &str = "1.64.1";
const MINOR: &str = "1.70.3";
const PATCH_IMAGE: &str = "docker.io/n8nio/n8n:1.64.1";
const EVERY_DAY: [pb::Weekday; 7] = [
    pb::Weekday::Monday,
    pb::Weekday::Tuesday,
    pb::Weekday::Wednesday,
    pb::Weekday::Thursday,
    pb::Weekday::Friday,
    pb::Weekday::Saturday,
    pb::Weekday::Sunday,
];

/// A window on every day opening `offset_minutes` from now (UTC), open
/// for `length` minutes.
fn window_from_now(offset_minutes: i64, length: u32) -> pb::AutoUpdatePolicy {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let minute_of_day = ((now.as_secs() as i64 / 60) + offset_minutes).rem_euclid(24 * 60);
    pb::AutoUpdatePolicy {
        enabled: true,
        days: EVERY_DAY.iter().map(|d| *d as i32).collect(),
        start_hour: (minute_of_day / 60) as u32,
        start_minute: (minute_of_day % 60) as u32,
        length_minutes: length,
    }
}

async fn set_policy(
    app: &TestApp,
    token: &str,
    id: &str,
    policy: Option<pb::AutoUpdatePolicy>,
) -> Result<pb::Subscription, tonic::Status> {
    subs(app)
        .set_subscription_auto_update(authed(
            pb::SetSubscriptionAutoUpdateRequest {
                id: id.into(),
                policy,
            },
            token,
        ))
        .await
        .map(|r| r.into_inner().subscription.unwrap())
}

/// Publishes n8n 1.64.1: 1.64.0's template on the 1.64.1 image.
async fn publish_patch(app: &TestApp, admin: &str) {
    let old = versions(app, admin, "n8n")
        .await
        .into_iter()
        .find(|v| v.version == OLD)
        .unwrap();
    let mut template = old.template.unwrap();
    template.components[0].image = PATCH_IMAGE.into();
    app.catalog()
        .publish_service_version(authed(
            pb::PublishServiceVersionRequest {
                service_id: "n8n".into(),
                version: PATCH.into(),
                template: Some(template),
                notes: "Fixes a crash on start.".into(),
                one_way: false,
            },
            admin,
        ))
        .await
        .unwrap();
}

#[tokio::test]
async fn inside_its_window_a_patch_version_is_applied_by_itself_and_a_minor_never() {
    let every = Duration::from_millis(200);
    let mut env = env_with(|a| a.subscriptions.auto_update_every = every).await;
    let (_w, _n, _stream) = worker_with_node(&mut env, "m-auto").await;
    let admin = env.app.admin_token().await;
    publish_patch(&env.app, &admin).await;
    let (user, token) = env.customer("auto@example.com").await;
    let mut running = Vec::new();
    for name in ["inside", "outside", "paused"] {
        let s = create_at(&env.app, &token, "n8n", name, OLD).await.unwrap();
        let s = status_until(&env.app, &token, &s.id, pb::SubscriptionStatus::Running, 30).await;
        assert_eq!(s.version, OLD);
        assert_eq!(s.latest_version, MINOR, "the newest is offered by hand");
        assert!(!s.auto_update.as_ref().unwrap().enabled, "off until set");
        running.push(s);
    }
    let (inside, outside, paused) = (&running[0], &running[1], &running[2]);

    // Suspended before its open window is set: it is never upgraded.
    subs(&env.app)
        .suspend_subscription(authed(
            pb::SuspendSubscriptionRequest {
                id: paused.id.clone(),
                reason: "unpaid invoice".into(),
            },
            &admin,
        ))
        .await
        .unwrap();
    status_until(
        &env.app,
        &token,
        &paused.id,
        pb::SubscriptionStatus::Suspended,
        30,
    )
    .await;
    set_policy(&env.app, &token, &paused.id, Some(window_from_now(-10, 60)))
        .await
        .unwrap();
    // Its window opens in two hours: nothing happens now.
    let later = set_policy(
        &env.app,
        &token,
        &outside.id,
        Some(window_from_now(120, 60)),
    )
    .await
    .unwrap();
    let next = later.auto_update_next_window.unwrap();
    let ahead = next.seconds
        - SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
    assert!(
        (7000..=7260).contains(&ahead),
        "opens in 2 h, not {ahead} s"
    );
    // Open since ten minutes ago, for an hour.
    let policy = window_from_now(-10, 60);
    let set = set_policy(&env.app, &token, &inside.id, Some(policy.clone()))
        .await
        .unwrap();
    assert_eq!(set.auto_update.as_ref(), Some(&policy), "shown as set");
    let opened = set.auto_update_next_window.unwrap().seconds;
    assert!(
        opened
            <= SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64,
        "the open window's start"
    );

    // The patch version is applied by itself and recorded.
    let (app, t, id) = (&env.app, token.as_str(), inside.id.as_str());
    let upgraded =
        crate::subscriptions::until(60, "the automatic upgrade to 1.64.1", || async move {
            let s = get(app, t, id).await.ok()?.subscription?;
            (s.version == PATCH && s.status == pb::SubscriptionStatus::Running as i32).then_some(s)
        })
        .await;
    assert!(upgraded.upgrading_from.is_empty());
    assert!(upgraded.upgrade_failure.is_empty());
    assert_eq!(upgraded.auto_update_tried, vec![PATCH.to_owned()]);
    assert_eq!(upgraded.latest_version, MINOR, "still offered, by hand");
    assert_eq!(
        deployment_image(&env, &user, "inside", "n8n")
            .await
            .as_deref(),
        Some(PATCH_IMAGE)
    );
    let events = get(&env.app, &token, &inside.id).await.unwrap().events;
    assert!(
        events.iter().any(|e| e.reason.starts_with(
            "upgrading automatically in its maintenance window from 1.64.0 to 1.64.1"
        )),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e.reason == "upgraded from 1.64.0 to 1.64.1"),
        "{events:?}"
    );

    // Many passes later: 1.70.3 (a minor version) was not applied, the
    // closed window's and the suspended subscription's stayed.
    tokio::time::sleep(every * 15).await;
    let after = get(&env.app, &token, &inside.id)
        .await
        .unwrap()
        .subscription
        .unwrap();
    assert_eq!(after.version, PATCH);
    assert_eq!(after.status, pb::SubscriptionStatus::Running as i32);
    for (s, status) in [
        (outside, pb::SubscriptionStatus::Running),
        (paused, pb::SubscriptionStatus::Suspended),
    ] {
        let s = get(&env.app, &token, &s.id)
            .await
            .unwrap()
            .subscription
            .unwrap();
        assert_eq!(
            (s.version.as_str(), s.status),
            (OLD, status as i32),
            "{}",
            s.name
        );
        assert!(s.auto_update_tried.is_empty(), "{}", s.name);
    }
}

#[tokio::test]
async fn a_bad_window_is_refused_field_by_field_and_only_the_owner_sets_it() {
    let mut env = env_with(|_| {}).await;
    let (_w, _n, _stream) = worker_with_node(&mut env, "m-auto-bad").await;
    let (_user, token) = env.customer("window@example.com").await;
    let s = create_at(&env.app, &token, "n8n", "flows", OLD)
        .await
        .unwrap();
    let ok = window_from_now(0, 60);
    for (policy, field) in [
        (
            pb::AutoUpdatePolicy {
                days: vec![],
                ..ok.clone()
            },
            "policy.days",
        ),
        (
            pb::AutoUpdatePolicy {
                days: vec![8],
                ..ok.clone()
            },
            "policy.days",
        ),
        (
            pb::AutoUpdatePolicy {
                start_hour: 24,
                ..ok.clone()
            },
            "policy.start_hour",
        ),
        (
            pb::AutoUpdatePolicy {
                start_minute: 60,
                ..ok.clone()
            },
            "policy.start_minute",
        ),
        (
            pb::AutoUpdatePolicy {
                length_minutes: 0,
                ..ok.clone()
            },
            "policy.length_minutes",
        ),
        (
            pb::AutoUpdatePolicy {
                length_minutes: 7 * 24 * 60 + 1,
                ..ok.clone()
            },
            "policy.length_minutes",
        ),
    ] {
        let e = expect_code(
            set_policy(&env.app, &token, &s.id, Some(policy)).await,
            Code::InvalidArgument,
        );
        assert_eq!(violated_fields(&e), vec![field.to_owned()]);
    }
    expect_code(
        set_policy(&env.app, &token, &s.id, None).await,
        Code::InvalidArgument,
    );
    // Nothing was stored by the refusals.
    let still = get(&env.app, &token, &s.id)
        .await
        .unwrap()
        .subscription
        .unwrap();
    assert_eq!(still.auto_update, Some(pb::AutoUpdatePolicy::default()));

    // Another customer cannot see it, let alone set it.
    let (_other, other) = env.customer("other@example.com").await;
    expect_code(
        set_policy(&env.app, &other, &s.id, Some(ok.clone())).await,
        Code::NotFound,
    );
    // An administrator can; the owner turns it off again.
    let admin = env.app.admin_token().await;
    let on = set_policy(&env.app, &admin, &s.id, Some(ok.clone()))
        .await
        .unwrap();
    assert!(on.auto_update.unwrap().enabled);
    let off = set_policy(
        &env.app,
        &token,
        &s.id,
        Some(pb::AutoUpdatePolicy {
            enabled: false,
            ..ok.clone()
        }),
    )
    .await
    .unwrap();
    let kept = off.auto_update.unwrap();
    assert!(!kept.enabled);
    assert_eq!(kept.length_minutes, 60, "the window is kept");
    assert!(off.auto_update_next_window.is_none());
}

#[tokio::test]
async fn a_patch_version_that_rolled_back_is_not_tried_again_by_itself() {
    let every = Duration::from_millis(200);
    let mut env = env_with(|a| a.subscriptions.auto_update_every = every).await;
    if env.cluster.standin().is_none() {
        eprintln!("skipped: needs the stand-in to make an image crash");
        return;
    }
    let (_w, _n, _stream) = worker_with_node(&mut env, "m-auto-back").await;
    let admin = env.app.admin_token().await;
    env.cluster.set_image_crashing(PATCH_IMAGE).await.unwrap();
    publish_patch(&env.app, &admin).await;
    let (_user, token) = env.customer("again@example.com").await;
    let s = create_at(&env.app, &token, "n8n", "once", OLD)
        .await
        .unwrap();
    status_until(&env.app, &token, &s.id, pb::SubscriptionStatus::Running, 30).await;
    set_policy(&env.app, &token, &s.id, Some(window_from_now(-10, 60)))
        .await
        .unwrap();
    // Tried, crash-looped, rolled back.
    let (app, t, id) = (&env.app, token.as_str(), s.id.as_str());
    let back =
        crate::subscriptions::until(60, "the automatic upgrade rolled back", || async move {
            let s = get(app, t, id).await.ok()?.subscription?;
            (s.version == OLD && !s.upgrade_failure.is_empty()).then_some(s)
        })
        .await;
    assert!(
        back.upgrade_failure
            .starts_with("version 1.64.1 cannot run: component n8n: crash loop"),
        "{}",
        back.upgrade_failure
    );
    assert_eq!(back.auto_update_tried, vec![PATCH.to_owned()]);
    // Many passes later, still inside the window: not tried again.
    status_until(&env.app, &token, &s.id, pb::SubscriptionStatus::Running, 30).await;
    tokio::time::sleep(every * 15).await;
    let later = get(&env.app, &token, &s.id)
        .await
        .unwrap()
        .subscription
        .unwrap();
    assert_eq!(later.version, OLD);
    assert_eq!(later.status, pb::SubscriptionStatus::Running as i32);
    let upgrades = get(&env.app, &token, &s.id)
        .await
        .unwrap()
        .events
        .into_iter()
        .filter(|e| e.reason.starts_with("upgrading automatically"))
        .count();
    assert_eq!(upgrades, 1, "one attempt");
    // By hand it still can be.
    let plan = subs(&env.app)
        .upgrade_subscription(authed(
            pb::UpgradeSubscriptionRequest {
                id: s.id.clone(),
                version: PATCH.into(),
                force: false,
                dry_run: true,
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner()
        .plan
        .unwrap();
    assert_eq!(plan.to_version, PATCH);
}
