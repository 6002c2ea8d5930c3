//! The administrators' digest of subscriptions more than N versions behind
//! (issue #25): one notice through the administrators' own preferences,
//! nothing while nobody is that far behind, not again within the period.

use std::time::{Duration, Instant};

use minispod_proto::v1 as pb;
use minispod_proto::v1::notification_service_client::NotificationServiceClient;

use crate::{
    helpers::{ADMIN_EMAIL, authed},
    subscriptions::{env_with, until, worker_with_node},
    upgrades::{create_at, versions},
};

fn digests(sink: &crate::smtp::SmtpSink, to: &str) -> Vec<crate::smtp::Received> {
    sink.received_by(to)
        .into_iter()
        .filter(|m| m.subject.contains("behind"))
        .collect()
}

#[tokio::test]
async fn administrators_get_one_digest_of_the_subscriptions_too_far_behind_per_period() {
    let period = Duration::from_secs(3);
    let dir = crate::helpers::TempDir::new();
    let sink = crate::smtp::SmtpSink::start(&dir.0);
    let mut env = env_with(|a| {
        a.notify.versions_behind_digest = 1;
        a.notify.versions_behind_digest_every = period;
        crate::mail::with_mail(a, &sink);
    })
    .await;
    let (_w, _n, _stream) = worker_with_node(&mut env, "m-digest").await;
    let admin = env.app.admin_token().await;
    NotificationServiceClient::new(env.app.channel.clone())
        .update_notification_preferences(authed(
            pb::UpdateNotificationPreferencesRequest {
                mail: Some(true),
                webhook_url: None,
                events: vec![pb::NotificationEvent::VersionsBehind as i32],
                update_events: true,
                rotate_webhook_secret: false,
            },
            &admin,
        ))
        .await
        .unwrap();
    let (_user, token) = env.customer("behind@example.com").await;
    // On 1.64.0 with 1.70.3 out: one version behind, not more.
    create_at(&env.app, &token, "n8n", "flows", "1.64.0")
        .await
        .unwrap();
    tokio::time::sleep(period * 2 + Duration::from_millis(500)).await;
    assert!(
        digests(&sink, ADMIN_EMAIL).is_empty(),
        "nothing while nobody is more than one behind"
    );

    // 1.64.1 published: two behind.
    let mut template = versions(&env.app, &admin, "n8n")
        .await
        .into_iter()
        .find(|v| v.version == "1.64.0")
        .unwrap()
        .template
        .unwrap();
    template.components[0].image = "docker.io/n8nio/n8n:1.64.1".into();
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
    let first = until(20, "the digest", || async {
        let d = digests(&sink, ADMIN_EMAIL);
        (!d.is_empty()).then_some(d)
    })
    .await;
    let first_at = Instant::now();
    assert_eq!(first.len(), 1, "{first:?}");
    let m = &first[0];
    assert_eq!(m.subject, "1 subscription more than 1 version behind");
    assert!(
        m.text.contains(
            "flows (n8n) of behind@example.com: version 1.64.0, newest 1.70.3, 2 versions behind."
        ),
        "{}",
        m.text
    );
    assert!(
        digests(&sink, "behind@example.com").is_empty(),
        "administrators only"
    );
    // Not again within the period; again after it (still behind).
    let second = until(20, "the next period's digest", || async {
        let d = digests(&sink, ADMIN_EMAIL);
        (d.len() > 1).then(Instant::now)
    })
    .await;
    assert!(
        second.duration_since(first_at) >= period - Duration::from_millis(600),
        "resent after {:?}, within the {period:?} period",
        second.duration_since(first_at)
    );
    assert_eq!(digests(&sink, ADMIN_EMAIL).len(), 2);
}
