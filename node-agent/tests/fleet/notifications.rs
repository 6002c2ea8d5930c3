//! Fleet notices with real agent processes and a real SMTP server: a
//! `kill -9` shorter than the grace is silent, a longer one is one mail,
//! and the return is another.

use std::time::{Duration, Instant};

use minispod_proto::v1::{self as pb, notification_service_client::NotificationServiceClient};

use super::{ADMIN_EMAIL, ControlPlane, TempDir, WorkerStatus, free_port, spawn_agent, status};
use crate::smtp::SmtpSink;

const GRACE: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_an_agent_is_told_once_past_the_grace_and_not_at_all_below_it() {
    let mail_dir = TempDir::new();
    let sink = SmtpSink::start(&mail_dir.0);
    let cp = ControlPlane::start_in(
        std::sync::Arc::new(TempDir::for_server().await),
        free_port(),
        |a| {
            a.mail.smtp_url = Some(sink.url().into());
            a.mail.smtp_ca_file = Some(sink.ca_file.clone());
            a.mail.mail_from = "noreply@minispod.test".into();
            a.notify.notify_offline_grace = GRACE;
            a.mail.outbox_retry_initial = Duration::from_millis(200);
        },
    )
    .await;
    NotificationServiceClient::new(cp.channel.clone())
        .update_notification_preferences(cp.authed(pb::UpdateNotificationPreferencesRequest {
            mail: Some(true),
            events: vec![
                pb::NotificationEvent::WorkerOffline as i32,
                pb::NotificationEvent::WorkerOnline as i32,
            ],
            update_events: true,
            ..Default::default()
        }))
        .await
        .unwrap();
    let mut watch = cp.watch().await;
    let state = TempDir::new();
    let token = cp.token(0).await;
    let mut agent = spawn_agent(&cp, &state.0, &token, &[]);
    let (w, _) = watch
        .until("ACTIVE", |w| status(w) == WorkerStatus::Active)
        .await;

    // A blip: killed and back well within the grace.
    let blip = Instant::now();
    agent.child.start_kill().unwrap();
    watch
        .until("INACTIVE", |w| status(w) == WorkerStatus::Inactive)
        .await;
    agent = spawn_agent(&cp, &state.0, &token, &[]);
    watch
        .until("ACTIVE again", |w| status(w) == WorkerStatus::Active)
        .await;
    assert!(blip.elapsed() < GRACE, "the blip took {:?}", blip.elapsed());

    // An outage: killed and left down past the grace.
    let killed = Instant::now();
    agent.child.start_kill().unwrap();
    let offline = sink
        .wait_for(ADMIN_EMAIL, 1, GRACE + Duration::from_secs(20))
        .await;
    let told_after = killed.elapsed();
    println!(
        "kill -9 to the offline mail: {} ms (grace {} ms)",
        told_after.as_millis(),
        GRACE.as_millis()
    );
    assert!(told_after >= GRACE, "told before the grace: {told_after:?}");
    assert_eq!(offline[0].subject, format!("Worker {} is offline", w.name));
    assert!(
        offline[0].text.contains(&format!("/workers/{}", w.id)),
        "{}",
        offline[0].text
    );

    // Its return is told too; and that is the barrier: the blip was never told.
    let _agent = spawn_agent(&cp, &state.0, &token, &[]);
    let mails = sink.wait_for(ADMIN_EMAIL, 2, Duration::from_secs(20)).await;
    let subjects: Vec<&str> = mails.iter().map(|m| m.subject.as_str()).collect();
    assert_eq!(
        subjects,
        [
            format!("Worker {} is offline", w.name),
            format!("Worker {} is back online", w.name)
        ],
        "one notice per incident, none for the blip"
    );
}
