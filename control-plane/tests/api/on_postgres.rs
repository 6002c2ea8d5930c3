//! Two control-plane replicas on one PostgreSQL database and one data dir
//! (one CA, one JWT key): any replica answers any call. Needs
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
