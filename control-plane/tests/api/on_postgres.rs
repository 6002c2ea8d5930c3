//! What only PostgreSQL offers: two control-plane replicas on one database
//! and one data dir (one CA, one JWT key), where any replica answers any
//! call; and a database that comes up late or goes away. Needs
//! `MINISPOD_TEST_POSTGRES` (the README's test command sets it).

use minispod_proto::v1 as pb;
use tonic::Code;

use crate::helpers::{TempDir, authed, expect_code, start};

async fn two_replicas() -> (crate::helpers::TestApp, crate::helpers::TestApp) {
    let dir = TempDir::for_server().await;
    assert!(
        dir.1.is_some(),
        "replica tests need PostgreSQL: set MINISPOD_TEST_POSTGRES (the README's test command does)"
    );
    let dir = std::sync::Arc::new(dir);
    let a = start(dir.clone(), |_| {}).await;
    let b = start(dir, |_| {}).await;
    (a, b)
}

#[tokio::test]
async fn a_user_created_through_one_replica_logs_in_through_another() {
    let (a, b) = two_replicas().await;
    let admin = a.admin_token().await;
    a.users()
        .create_user(authed(
            pb::CreateUserRequest {
                email: "replica@example.org".into(),
                password: "replica-password".into(),
                name: "Replica User".into(),
                role: pb::Role::User as i32,
            },
            &admin,
        ))
        .await
        .expect("created through A");
    let (access, _) = b
        .login("replica@example.org", "replica-password")
        .await
        .expect("logs in through B");
    // An access token from B works on A: one signing key.
    let profile = a
        .auth()
        .get_profile(authed(pb::GetProfileRequest {}, &access))
        .await
        .expect("B's token on A")
        .into_inner();
    assert_eq!(profile.user.unwrap().email, "replica@example.org");
    // Both serve the same CA.
    assert_eq!(a.ca_hash, b.ca_hash);
}

#[tokio::test]
async fn a_refresh_token_rotated_on_one_replica_and_replayed_on_another_is_reuse() {
    let (a, b) = two_replicas().await;
    a.register("rotate@example.org", "rotate-password").await;
    let (_, first) = a
        .login("rotate@example.org", "rotate-password")
        .await
        .unwrap();
    let second = a
        .auth()
        .refresh(pb::RefreshRequest {
            refresh_token: first.clone(),
        })
        .await
        .expect("rotated on A")
        .into_inner();
    let reuse = expect_code(
        b.auth()
            .refresh(pb::RefreshRequest {
                refresh_token: first,
            })
            .await,
        Code::Unauthenticated,
    );
    assert!(reuse.message().contains("reuse"), "{}", reuse.message());
    // The whole family is revoked, on every replica.
    expect_code(
        a.auth()
            .refresh(pb::RefreshRequest {
                refresh_token: second.refresh_token,
            })
            .await,
        Code::Unauthenticated,
    );
}

#[tokio::test]
async fn rate_limits_hold_across_replicas() {
    let dir = TempDir::for_server().await;
    assert!(dir.1.is_some(), "replica tests need PostgreSQL");
    let dir = std::sync::Arc::new(dir);
    let limits = |args: &mut minispod_control_plane::config::ServeArgs| {
        args.login_ip_burst = 4;
        args.login_ip_per_minute = 1;
    };
    let a = start(dir.clone(), limits).await;
    let b = start(dir, limits).await;
    // Four attempts from this address, spread over both replicas, use the
    // burst; the fifth is refused by either.
    for app in [&a, &b, &a, &b] {
        expect_code(
            app.login("nobody@example.org", "wrong-password").await,
            Code::Unauthenticated,
        );
    }
    let refused = expect_code(
        b.login("nobody@example.org", "wrong-password").await,
        Code::ResourceExhausted,
    );
    assert!(refused.metadata().get("retry-after").is_some());
    expect_code(
        a.login("nobody@example.org", "wrong-password").await,
        Code::ResourceExhausted,
    );
}

/// A TCP relay on 127.0.0.1 in front of `upstream`, which the test can cut
/// (closing every connection and refusing new ones) and restore.
struct Relay {
    port: u16,
    cut: tokio::sync::watch::Sender<bool>,
}

impl Relay {
    /// A relay on `port` (0: any) to `upstream`, passing bytes at once.
    async fn start(port: u16, upstream: std::net::SocketAddr) -> Relay {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let (cut, cut_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if *cut_rx.borrow() {
                    continue; // dropped: the connection closes at once
                }
                let mut cut_rx = cut_rx.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut_rx.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Relay { port, cut }
    }

    fn set_cut(&self, cut: bool) {
        self.cut.send_replace(cut);
    }
}

/// The database URL of `dir`, and where its server listens.
fn database_behind(dir: &TempDir) -> (String, std::net::SocketAddr) {
    let url = dir
        .1
        .clone()
        .expect("tests on PostgreSQL need MINISPOD_TEST_POSTGRES");
    let host_port = url
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split('@').next_back())
        .and_then(|rest| rest.split('/').next())
        .unwrap()
        .to_owned();
    (
        url.clone(),
        host_port.parse().expect("a 127.0.0.1:port URL"),
    )
}

fn through(url: &str, upstream: std::net::SocketAddr, port: u16) -> String {
    url.replace(&upstream.to_string(), &format!("127.0.0.1:{port}"))
}

async fn health_of(app: &crate::helpers::TestApp, service: &str) -> i32 {
    tonic_health::pb::health_client::HealthClient::new(app.channel.clone())
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.into(),
        })
        .await
        .expect("health answers")
        .into_inner()
        .status
}

#[tokio::test]
async fn health_is_not_serving_while_the_database_is_unreachable() {
    use tonic_health::pb::health_check_response::ServingStatus;
    let dir = TempDir::for_server().await;
    let (url, upstream) = database_behind(&dir);
    let relay = Relay::start(0, upstream).await;
    let relayed = through(&url, upstream, relay.port);
    let app = start(std::sync::Arc::new(dir), |args| {
        args.database_url = Some(relayed);
        args.database_acquire_timeout = std::time::Duration::from_secs(1);
    })
    .await;
    assert_eq!(health_of(&app, "").await, ServingStatus::Serving as i32);

    relay.set_cut(true);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while health_of(&app, "").await != ServingStatus::NotServing as i32 {
        assert!(
            std::time::Instant::now() < deadline,
            "still SERVING without a database"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(
        health_of(&app, "minispod.v1.AuthService").await,
        ServingStatus::NotServing as i32
    );

    relay.set_cut(false);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while health_of(&app, "").await != ServingStatus::Serving as i32 {
        assert!(std::time::Instant::now() < deadline, "not SERVING again");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // And it answers calls again.
    app.admin_token().await;
}

#[tokio::test]
async fn the_control_plane_waits_for_a_database_that_comes_up_late() {
    let dir = TempDir::for_server().await;
    let (url, upstream) = database_behind(&dir);
    // Nothing listens on this port yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let relayed = through(&url, upstream, port);
    let late = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        Relay::start(port, upstream).await
    });
    let started = std::time::Instant::now();
    let app = start(std::sync::Arc::new(dir), |args| {
        args.database_url = Some(relayed);
    })
    .await;
    assert!(started.elapsed() >= std::time::Duration::from_millis(1500));
    let _relay = late.await.unwrap();
    app.admin_token().await;
}

#[tokio::test]
async fn a_worker_offline_past_the_grace_is_told_once_although_both_replicas_saw_it() {
    use std::time::Duration;

    use crate::{
        helpers::ADMIN_EMAIL,
        mail::with_mail,
        notifications::{WebhookSink, online_worker, opt_in, until_online},
        smtp::SmtpSink,
        workers::{Admin, connect},
    };

    let dir = TempDir::for_server().await;
    assert!(dir.1.is_some(), "replica tests need PostgreSQL");
    let sink = SmtpSink::start(&dir.0);
    let hooks = WebhookSink::start(&dir.0).await;
    let dir = std::sync::Arc::new(dir);
    let configure = |a: &mut minispod_control_plane::config::ServeArgs| {
        with_mail(a, &sink);
        a.webhook_ca_file = Some(hooks.ca_file.clone());
        a.notify_offline_grace = Duration::from_secs(1);
    };
    let a = start(dir.clone(), configure).await;
    let b = start(dir, configure).await;
    let token = b.admin_token().await;
    let secret = opt_in(&b, &token, &hooks.url, true).await;

    // The worker's stream is on A; B hears of its changes through the relay.
    let mut admin = Admin::of(&a).await;
    let (id, stream, _, agent) = online_worker(&a, &mut admin, "replicated").await;
    let mut on_b = Admin::of(&b).await;
    until_online(&mut on_b, &id, true).await;
    drop(stream);
    until_online(&mut on_b, &id, false).await;
    let offline = hooks
        .wait_for(1, |h| h.event() == "worker_offline" && h.worker_id() == id)
        .await;
    offline[0].assert_signed_with(&secret);

    // Back, now through B: its return is told once too, and it is the
    // barrier after which a second offline notice would have shown.
    let channel_b = crate::workers::mtls(&b, &agent).await;
    let mut stream = connect(channel_b, "replicated").await.unwrap();
    stream.beat(true).await;
    hooks
        .wait_for(1, |h| h.event() == "worker_online" && h.worker_id() == id)
        .await;
    let mails = sink.wait_for(ADMIN_EMAIL, 3, Duration::from_secs(30)).await;
    let count = |event: &str| {
        hooks
            .received()
            .iter()
            .filter(|h| h.event() == event && h.worker_id() == id)
            .count()
    };
    assert_eq!(
        (
            count("worker_enrolled"),
            count("worker_offline"),
            count("worker_online")
        ),
        (1, 1, 1)
    );
    let subjects: Vec<&str> = mails.iter().map(|m| m.subject.as_str()).collect();
    assert_eq!(
        subjects
            .iter()
            .filter(|s| **s == "Worker host-replicated is offline")
            .count(),
        1,
        "{subjects:?}"
    );
    assert_eq!(mails.len(), 3, "enrolled, offline, online: {subjects:?}");
}
