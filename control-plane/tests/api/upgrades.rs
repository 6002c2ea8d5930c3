//! Versions of a catalog entry and upgrades that roll back (issue #25):
//! the seeded entries ship two versions each; a customer moves a
//! subscription to the newer one under the reconciler; a version that never
//! becomes ready is rolled back by itself past --upgrade-deadline.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use minispod_proto::v1 as pb;
use tonic::Code;

use crate::{
    helpers::{TestApp, authed, expect_code},
    subscriptions::{
        Env, env, env_with, get, namespace_of, status_until, subs, until, worker_with_node,
    },
};

const OLD: &str = "1.64.0";
const NEW: &str = "1.70.3";
const OLD_IMAGE: &str = "docker.io/n8nio/n8n:1.64.0";
const NEW_IMAGE: &str = "docker.io/n8nio/n8n:1.70.3";

pub(crate) async fn create_at(
    app: &TestApp,
    token: &str,
    service: &str,
    name: &str,
    version: &str,
) -> Result<pb::Subscription, tonic::Status> {
    subs(app)
        .create_subscription(authed(
            pb::CreateSubscriptionRequest {
                service_id: service.into(),
                name: name.into(),
                version: version.into(),
                ..Default::default()
            },
            token,
        ))
        .await
        .map(|r| r.into_inner().subscription.unwrap())
}

pub(crate) async fn upgrade(
    app: &TestApp,
    token: &str,
    id: &str,
    version: &str,
    force: bool,
    dry_run: bool,
) -> Result<pb::UpgradeSubscriptionResponse, tonic::Status> {
    subs(app)
        .upgrade_subscription(authed(
            pb::UpgradeSubscriptionRequest {
                id: id.into(),
                version: version.into(),
                force,
                dry_run,
            },
            token,
        ))
        .await
        .map(|r| r.into_inner())
}

pub(crate) async fn versions(app: &TestApp, admin: &str, service: &str) -> Vec<pb::ServiceVersion> {
    app.catalog()
        .list_service_versions(authed(
            pb::ListServiceVersionsRequest {
                service_id: service.into(),
            },
            admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .versions
}

/// The image the Deployment of `sub`'s component `component` asks for.
pub(crate) async fn deployment_image(
    env: &Env,
    user: &str,
    sub: &str,
    component: &str,
) -> Option<String> {
    let api: Api<Deployment> = Api::namespaced(env.cluster.client().await, &namespace_of(user));
    let d = api.get_opt(&format!("{sub}-{component}")).await.ok()??;
    d.spec?
        .template
        .spec?
        .containers
        .into_iter()
        .find(|c| c.name == component)?
        .image
}

/// A customer's n8n on version 1.64.0, RUNNING.
async fn running_old_n8n(
    env: &mut Env,
    email: &str,
    name: &str,
) -> (String, String, pb::Subscription) {
    let (user, token) = env.customer(email).await;
    let s = create_at(&env.app, &token, "n8n", name, OLD).await.unwrap();
    assert_eq!(s.version, OLD);
    let s = status_until(&env.app, &token, &s.id, pb::SubscriptionStatus::Running, 30).await;
    (user, token, s)
}

#[tokio::test]
async fn an_upgrade_shows_what_changes_then_rolls_out_the_new_image_and_records_the_version() {
    let mut env = env().await;
    let (_w, _n, _stream) = worker_with_node(&mut env, "m-upgrade").await;
    let admin = env.app.admin_token().await;
    // The seeded entry ships both versions; new subscriptions get the newest.
    let listed = versions(&env.app, &admin, "n8n").await;
    let names: Vec<&str> = listed.iter().map(|v| v.version.as_str()).collect();
    assert_eq!(names, vec![NEW, OLD]);
    assert!(!listed[0].notes.is_empty());

    let (user, token, s) = running_old_n8n(&mut env, "up@example.com", "flows").await;
    assert_eq!(s.latest_version, NEW, "update available");
    assert_eq!(s.latest_notes, listed[0].notes);

    // A dry run says what changes and changes nothing.
    let plan = upgrade(&env.app, &token, &s.id, "", false, true)
        .await
        .unwrap()
        .plan
        .unwrap();
    assert_eq!(
        (plan.from_version.as_str(), plan.to_version.as_str()),
        (OLD, NEW)
    );
    assert_eq!(plan.image_changes.len(), 1);
    let change = &plan.image_changes[0];
    assert_eq!(
        (
            change.component.as_str(),
            change.from_image.as_str(),
            change.to_image.as_str()
        ),
        ("n8n", OLD_IMAGE, NEW_IMAGE)
    );
    assert_eq!(plan.notes.len(), 1);
    assert_eq!(plan.notes[0].version, NEW);
    assert!(plan.one_way_version.is_empty());
    let same = get(&env.app, &token, &s.id)
        .await
        .unwrap()
        .subscription
        .unwrap();
    assert_eq!(same.status, pb::SubscriptionStatus::Running as i32);
    assert_eq!(same.version, OLD);

    let started = upgrade(&env.app, &token, &s.id, NEW, false, false)
        .await
        .unwrap()
        .subscription
        .unwrap();
    assert_eq!(started.status, pb::SubscriptionStatus::Upgrading as i32);
    assert_eq!(started.version, NEW);
    assert_eq!(started.upgrading_from, OLD);
    assert!(
        started
            .status_reason
            .starts_with("upgrading from 1.64.0 to 1.70.3"),
        "{}",
        started.status_reason
    );
    // One upgrade at a time.
    let e = expect_code(
        upgrade(&env.app, &token, &s.id, NEW, false, false).await,
        Code::FailedPrecondition,
    );
    assert!(e.message().contains("upgrading"), "{}", e.message());

    let done = status_until(&env.app, &token, &s.id, pb::SubscriptionStatus::Running, 60).await;
    assert_eq!(done.version, NEW);
    assert!(done.upgrading_from.is_empty());
    assert!(done.latest_version.is_empty(), "up to date");
    assert!(done.upgrade_failure.is_empty());
    assert_eq!(
        deployment_image(&env, &user, "flows", "n8n")
            .await
            .as_deref(),
        Some(NEW_IMAGE)
    );
    // Ready pods of the new image only.
    env.cluster
        .wait_for(
            &namespace_of(&user),
            "minispod.dev/component=n8n",
            |pods| {
                !pods.is_empty()
                    && pods.iter().all(|p| {
                        p.spec.as_ref().is_some_and(|s| {
                            s.containers
                                .iter()
                                .any(|c| c.image.as_deref() == Some(NEW_IMAGE))
                        })
                    })
            },
            Duration::from_secs(20),
        )
        .await
        .unwrap();
    let events = get(&env.app, &token, &s.id).await.unwrap().events;
    assert!(
        events
            .iter()
            .any(|e| e.reason == "upgraded from 1.64.0 to 1.70.3"),
        "{events:?}"
    );
    // Counts per version.
    let listed = versions(&env.app, &admin, "n8n").await;
    let count = |v: &str| {
        listed
            .iter()
            .find(|x| x.version == v)
            .unwrap()
            .subscription_count
    };
    assert_eq!((count(NEW), count(OLD)), (1, 0));
    // Nothing newer to go to.
    expect_code(
        upgrade(&env.app, &token, &s.id, "", false, true).await,
        Code::FailedPrecondition,
    );
}

#[tokio::test]
async fn a_new_version_that_never_becomes_ready_is_rolled_back_by_itself_after_the_deadline() {
    let deadline = Duration::from_secs(5);
    let dir = crate::helpers::TempDir::new();
    let sink = crate::smtp::SmtpSink::start(&dir.0);
    let mut env = env_with(|a| {
        a.subscriptions.upgrade_deadline = deadline;
        crate::mail::with_mail(a, &sink);
    })
    .await;
    if env.cluster.standin().is_none() {
        eprintln!("skipped: needs the stand-in to make a readiness probe fail");
        return;
    }
    let (_w, _n, _stream) = worker_with_node(&mut env, "m-rollback").await;
    // The new image runs, and its readiness probe (/healthz) keeps failing.
    env.cluster
        .set_image_readiness_failing(NEW_IMAGE)
        .await
        .unwrap();
    let (user, token, s) = running_old_n8n(&mut env, "back@example.com", "stays").await;
    let started = upgrade(&env.app, &token, &s.id, NEW, false, false)
        .await
        .unwrap()
        .subscription
        .unwrap();
    assert_eq!(started.status, pb::SubscriptionStatus::Upgrading as i32);
    let due = started.upgrade_deadline.unwrap();
    let due = std::time::UNIX_EPOCH + Duration::new(due.seconds as u64, due.nanos as u32);
    // Progress while it waits.
    let (e, u, t, id) = (&env, user.as_str(), token.as_str(), s.id.as_str());
    until(10, "the new image to be applied", || async move {
        (deployment_image(e, u, "stays", "n8n").await.as_deref() == Some(NEW_IMAGE)).then_some(())
    })
    .await;
    let waiting = until(10, "progress in the status", || async move {
        let s = get(&e.app, t, id).await.ok()?.subscription?;
        (s.status == pb::SubscriptionStatus::Upgrading as i32
            && s.status_reason.contains("running but not ready"))
        .then_some(s)
    })
    .await;
    assert!(
        waiting.status_reason.contains("0 of 1 components ready"),
        "{}",
        waiting.status_reason
    );

    // Past the deadline the previous version's objects come back.
    let after_deadline = until(30, "the old image to be applied again", || async move {
        (deployment_image(e, u, "stays", "n8n").await.as_deref() == Some(OLD_IMAGE))
            .then(std::time::SystemTime::now)
    })
    .await;
    let took = after_deadline.duration_since(due).unwrap_or_default();
    eprintln!(
        "figure: deadline passed → previous objects applied in {} ms",
        took.as_millis()
    );
    let back = status_until(&env.app, &token, &s.id, pb::SubscriptionStatus::Running, 30).await;
    assert_eq!(back.version, OLD);
    assert!(back.upgrading_from.is_empty());
    assert_eq!(
        back.upgrade_failure,
        "version 1.70.3 did not become ready in 5 seconds: component n8n: running but not \
         ready (its readiness probe fails)"
    );
    assert_eq!(back.latest_version, NEW, "still offered");
    let events = get(&env.app, &token, &s.id).await.unwrap().events;
    assert!(
        events.iter().any(|e| e.reason.starts_with(
            "upgrade to 1.70.3 rolled back to 1.64.0: version 1.70.3 did not become ready"
        )),
        "{events:?}"
    );
    // The owner is told, once, in their words (a customer who never chose
    // gets mail of a rolled-back upgrade).
    let told = until(20, "the owner's rolled-back mail", || async {
        let mails: Vec<_> = sink
            .received_by("back@example.com")
            .into_iter()
            .filter(|m| m.subject.contains("was rolled back"))
            .collect();
        (!mails.is_empty()).then_some(mails)
    })
    .await;
    assert_eq!(told.len(), 1, "{told:?}");
    assert!(
        told[0].subject.contains("stays") && told[0].subject.contains(NEW),
        "{}",
        told[0].subject
    );
    assert!(told[0].text.contains(OLD), "{}", told[0].text);
    // The old version's pods are what runs.
    env.cluster
        .wait_for(
            &namespace_of(&user),
            "minispod.dev/component=n8n",
            |pods| {
                !pods.is_empty()
                    && pods.iter().all(|p| {
                        p.spec.as_ref().is_some_and(|s| {
                            s.containers
                                .iter()
                                .any(|c| c.image.as_deref() == Some(OLD_IMAGE))
                        })
                    })
            },
            Duration::from_secs(20),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn a_one_way_version_is_refused_unless_an_administrator_forces_it() {
    let mut env = env().await;
    let (_w, _n, _stream) = worker_with_node(&mut env, "m-oneway").await;
    let admin = env.app.admin_token().await;
    let n8n = versions(&env.app, &admin, "n8n").await.remove(0);
    let mut template = n8n.template.unwrap();
    template.components[0].image = "docker.io/n8nio/n8n:1.80.0".into();
    let mut catalog = env.app.catalog();
    // Bad versions are refused field by field; a version is published once.
    let publish = |version: &str, one_way: bool| pb::PublishServiceVersionRequest {
        service_id: "n8n".into(),
        version: version.into(),
        template: Some(template.clone()),
        notes: "Moves the database to a new schema.".into(),
        one_way,
    };
    let e = expect_code(
        catalog
            .publish_service_version(authed(publish("v2", false), &admin))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(crate::helpers::violated_fields(&e), vec!["version"]);
    let published = catalog
        .publish_service_version(authed(publish("1.80.0", true), &admin))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        published.service.unwrap().version,
        "1.80.0",
        "the newest is the entry's"
    );
    expect_code(
        catalog
            .publish_service_version(authed(publish("1.80.0", true), &admin))
            .await,
        Code::AlreadyExists,
    );

    let (_user, token, s) = running_old_n8n(&mut env, "oneway@example.com", "careful").await;
    assert_eq!(s.latest_version, "1.80.0");
    // Up to 1.70.3 is fine; to (or past) 1.80.0 is not.
    upgrade(&env.app, &token, &s.id, NEW, false, true)
        .await
        .unwrap();
    let e = expect_code(
        upgrade(&env.app, &token, &s.id, "", false, true).await,
        Code::FailedPrecondition,
    );
    assert_eq!(crate::words::reason(&e), "ONE_WAY_VERSION");
    assert!(
        e.message().contains("ask an administrator"),
        "{}",
        e.message()
    );
    expect_code(
        upgrade(&env.app, &token, &s.id, "1.80.0", true, true).await,
        Code::PermissionDenied,
    );
    let e = expect_code(
        upgrade(&env.app, &admin, &s.id, "1.80.0", false, true).await,
        Code::FailedPrecondition,
    );
    assert!(e.message().contains("set force"), "{}", e.message());
    let plan = upgrade(&env.app, &admin, &s.id, "1.80.0", true, true)
        .await
        .unwrap()
        .plan
        .unwrap();
    assert_eq!(plan.one_way_version, "1.80.0");
    assert_eq!(plan.notes.len(), 2, "1.70.3's and 1.80.0's");
}

#[tokio::test]
async fn a_withdrawn_version_takes_no_new_subscriptions_and_its_subscriptions_are_told_to_move() {
    let mut env = env().await;
    let (_w, _n, _stream) = worker_with_node(&mut env, "m-withdraw").await;
    let admin = env.app.admin_token().await;
    let (_user, token, s) = running_old_n8n(&mut env, "old@example.com", "older").await;
    let withdrawn = env
        .app
        .catalog()
        .withdraw_service_version(authed(
            pb::WithdrawServiceVersionRequest {
                service_id: "n8n".into(),
                version: OLD.into(),
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .version
        .unwrap();
    assert!(withdrawn.withdrawn);
    assert_eq!(withdrawn.subscription_count, 1, "kept while it runs");
    let (_other, token2) = env.customer("new@example.com").await;
    let e = expect_code(
        create_at(&env.app, &token2, "n8n", "refused", OLD).await,
        Code::FailedPrecondition,
    );
    assert!(e.message().contains("withdrawn"), "{}", e.message());
    let fresh = create_at(&env.app, &token2, "n8n", "newer", "")
        .await
        .unwrap();
    assert_eq!(fresh.version, NEW);
    let older = get(&env.app, &token, &s.id)
        .await
        .unwrap()
        .subscription
        .unwrap();
    assert!(older.version_withdrawn);
    assert_eq!(older.latest_version, NEW);
    let listed = versions(&env.app, &admin, "n8n").await;
    let counts: Vec<(&str, i64, bool)> = listed
        .iter()
        .map(|v| (v.version.as_str(), v.subscription_count, v.withdrawn))
        .collect();
    assert_eq!(counts, vec![(NEW, 1, false), (OLD, 1, true)]);
}

#[tokio::test]
async fn a_customer_cannot_upgrade_another_customers_subscription() {
    let mut env = env().await;
    let (_w, _n, _stream) = worker_with_node(&mut env, "m-other").await;
    let (_user, _token, s) = running_old_n8n(&mut env, "mine@example.com", "mine").await;
    let (_other, intruder) = env.customer("intruder@example.com").await;
    for dry_run in [true, false] {
        expect_code(
            upgrade(&env.app, &intruder, &s.id, NEW, false, dry_run).await,
            Code::NotFound,
        );
    }
    expect_code(
        subs(&env.app)
            .upgrade_service_subscriptions(authed(
                pb::UpgradeServiceSubscriptionsRequest {
                    service_id: "n8n".into(),
                    ..Default::default()
                },
                &intruder,
            ))
            .await,
        Code::PermissionDenied,
    );
    // An administrator upgrades every subscription of the entry at once
    // (here as a dry run).
    let admin = env.app.admin_token().await;
    let all = subs(&env.app)
        .upgrade_service_subscriptions(authed(
            pb::UpgradeServiceSubscriptionsRequest {
                service_id: "n8n".into(),
                dry_run: true,
                ..Default::default()
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.to_version, NEW);
    assert_eq!(all.upgraded, vec![s.id.clone()]);
    assert!(all.refused.is_empty());
}

#[tokio::test]
async fn a_crash_loop_or_an_unpullable_image_rolls_back_at_once_not_at_the_deadline() {
    let deadline = Duration::from_secs(300);
    let mut env = env_with(|a| a.subscriptions.upgrade_deadline = deadline).await;
    if env.cluster.standin().is_none() {
        eprintln!("skipped: needs the stand-in to make an image crash or fail to pull");
        return;
    }
    let (_w, _n, _stream) = worker_with_node(&mut env, "m-definite").await;
    let admin = env.app.admin_token().await;
    // 1.70.3 crashes as soon as it starts; 1.64.1 is not in the registry.
    const UNPULLABLE: &str = "docker.io/n8nio/n8n:1.64.1";
    env.cluster.set_image_crashing(NEW_IMAGE).await.unwrap();
    env.cluster.set_image_unpullable(UNPULLABLE).await.unwrap();
    let mut template = versions(&env.app, &admin, "n8n")
        .await
        .into_iter()
        .find(|v| v.version == OLD)
        .unwrap()
        .template
        .unwrap();
    template.components[0].image = UNPULLABLE.into();
    env.app
        .catalog()
        .publish_service_version(authed(
            pb::PublishServiceVersionRequest {
                service_id: "n8n".into(),
                version: "1.64.1".into(),
                template: Some(template),
                notes: "Fixes.".into(),
                one_way: false,
            },
            &admin,
        ))
        .await
        .unwrap();
    let (_u1, crash_token, crash) = running_old_n8n(&mut env, "crash@example.com", "crashes").await;
    let (_u2, pull_token, pull) = running_old_n8n(&mut env, "pull@example.com", "nopull").await;
    let started = std::time::Instant::now();
    for (token, id, to) in [
        (&crash_token, &crash.id, NEW),
        (&pull_token, &pull.id, "1.64.1"),
    ] {
        let s = upgrade(&env.app, token, id, to, false, false)
            .await
            .unwrap()
            .subscription
            .unwrap();
        assert_eq!(s.status, pb::SubscriptionStatus::Upgrading as i32);
    }
    let app = &env.app;
    let back = |token: &str, id: &str| {
        let (token, id) = (token.to_owned(), id.to_owned());
        async move {
            until(60, "the rollback", || {
                let (token, id) = (token.clone(), id.clone());
                async move {
                    let s = get(app, &token, &id).await.ok()?.subscription?;
                    (s.version == OLD && !s.upgrade_failure.is_empty())
                        .then(|| (s, started.elapsed()))
                }
            })
            .await
        }
    };
    let (crashed, crash_took) = back(&crash_token, &crash.id).await;
    assert!(
        crashed
            .upgrade_failure
            .starts_with("version 1.70.3 cannot run: component n8n: crash loop ("),
        "{}",
        crashed.upgrade_failure
    );
    let (pulled, pull_took) = back(&pull_token, &pull.id).await;
    assert_eq!(
        pulled.upgrade_failure,
        "version 1.64.1 cannot run: component n8n: its image cannot be pulled"
    );
    eprintln!(
        "figure: upgrade started → rolled back: crash loop {} ms, unpullable image {} ms \
         (deadline {} s)",
        crash_took.as_millis(),
        pull_took.as_millis(),
        deadline.as_secs()
    );
    for (token, id) in [(&crash_token, &crash.id), (&pull_token, &pull.id)] {
        let s = status_until(&env.app, token, id, pb::SubscriptionStatus::Running, 30).await;
        assert_eq!(s.version, OLD);
        assert!(s.upgrading_from.is_empty());
    }
}

#[tokio::test]
async fn an_upgrade_past_the_customers_limits_is_refused_naming_the_limit() {
    let mut env = env().await;
    let (_w, _n, _stream) = worker_with_node(&mut env, "m-limits").await;
    let admin = env.app.admin_token().await;
    // 1.64.2 asks for 4 CPUs: with the gate, past the default 4000m.
    let mut template = versions(&env.app, &admin, "n8n")
        .await
        .into_iter()
        .find(|v| v.version == OLD)
        .unwrap()
        .template
        .unwrap();
    let r = template.components[0].resources.as_mut().unwrap();
    r.cpu_request_millicores = 4000;
    r.cpu_limit_millicores = r.cpu_limit_millicores.max(4000);
    env.app
        .catalog()
        .publish_service_version(authed(
            pb::PublishServiceVersionRequest {
                service_id: "n8n".into(),
                version: "1.64.2".into(),
                template: Some(template),
                notes: "Needs more.".into(),
                one_way: false,
            },
            &admin,
        ))
        .await
        .unwrap();
    let (_user, token, s) = running_old_n8n(&mut env, "limits@example.com", "small").await;
    // 1.70.3 needs what 1.64.0 needs: it fits.
    upgrade(&env.app, &token, &s.id, NEW, false, true)
        .await
        .unwrap();
    for dry_run in [true, false] {
        let e = expect_code(
            upgrade(&env.app, &token, &s.id, "1.64.2", false, dry_run).await,
            Code::FailedPrecondition,
        );
        assert_eq!(crate::words::reason(&e), "OVER_LIMITS");
        assert!(
            e.message().contains("its CPU limit: it needs 4")
                && e.message().contains("of your 4000m"),
            "{}",
            e.message()
        );
        assert!(!e.message().contains("memory"), "{}", e.message());
    }
    // An administrator's upgrade is refused too: the limits are the owner's.
    expect_code(
        upgrade(&env.app, &admin, &s.id, "1.64.2", false, true).await,
        Code::FailedPrecondition,
    );
    let same = get(&env.app, &token, &s.id)
        .await
        .unwrap()
        .subscription
        .unwrap();
    assert_eq!(
        (same.version.as_str(), same.status),
        (OLD, pb::SubscriptionStatus::Running as i32)
    );
}
