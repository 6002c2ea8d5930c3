//! AuthService over the network.

use minispod_proto::v1 as pb;
use tonic::{Code, Request};

use crate::helpers::*;

fn register_req(email: &str, password: &str, name: &str) -> pb::RegisterRequest {
    pb::RegisterRequest {
        email: email.into(),
        password: password.into(),
        name: name.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn register_creates_a_user_who_is_signed_in() {
    let app = spawn_app().await;
    let r = app
        .auth()
        .register(register_req("Ada@Example.org", "lovelace-1843", " Ada "))
        .await
        .unwrap()
        .into_inner();
    let user = r.user.unwrap();
    assert_eq!(user.email, "ada@example.org");
    assert_eq!(user.name, "Ada");
    assert_eq!(user.role, pb::Role::User as i32);
    assert!(user.active);
    let tokens = r.tokens.unwrap();
    assert_eq!(tokens.access_token, r.access_token);
    assert!(tokens.access_token_expires_at.unwrap().seconds > 0);

    let profile = app
        .auth()
        .get_profile(authed(pb::GetProfileRequest {}, &r.access_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(profile.user.unwrap().id, user.id);
    app.login("ADA@example.org", "lovelace-1843")
        .await
        .expect("login in any case");
}

#[tokio::test]
async fn register_reports_every_invalid_field() {
    let app = spawn_app().await;
    let status = expect_code(
        app.auth()
            .register(register_req("not-an-email", "short", ""))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&status), ["email", "password", "name"]);
    let long = "p".repeat(129);
    let status = expect_code(
        app.auth()
            .register(register_req("a@example.org", &long, "A"))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&status), ["password"]);
}

#[tokio::test]
async fn register_with_a_taken_email_is_already_exists() {
    let app = spawn_app().await;
    app.register("dup@example.org", "password-one").await;
    expect_code(
        app.auth()
            .register(register_req("DUP@example.org", "password-two", "B"))
            .await,
        Code::AlreadyExists,
    );
}

#[tokio::test]
async fn login_failures_look_the_same_for_unknown_and_known_emails() {
    let app = spawn_app().await;
    app.register("known@example.org", "right-password").await;
    let wrong = expect_code(
        app.login("known@example.org", "wrong-password").await,
        Code::Unauthenticated,
    );
    let unknown = expect_code(
        app.login("nobody@example.org", "wrong-password").await,
        Code::Unauthenticated,
    );
    assert_eq!(wrong.message(), unknown.message());
    let empty = expect_code(app.login("", "").await, Code::InvalidArgument);
    assert_eq!(violated_fields(&empty), ["email", "password"]);
}

#[tokio::test]
async fn refresh_rotates_tokens_and_reuse_revokes_the_family() {
    let app = spawn_app().await;
    app.register("rot@example.org", "rotate-password").await;
    let (_, first) = app
        .login("rot@example.org", "rotate-password")
        .await
        .unwrap();
    let second = app
        .auth()
        .refresh(pb::RefreshRequest {
            refresh_token: first.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(second.refresh_token, first);
    app.auth()
        .get_profile(authed(pb::GetProfileRequest {}, &second.access_token))
        .await
        .expect("new access token works");

    // The spent token again: reuse. The whole family dies, including the
    // token that replaced it.
    let reuse = expect_code(
        app.auth()
            .refresh(pb::RefreshRequest {
                refresh_token: first,
            })
            .await,
        Code::Unauthenticated,
    );
    assert!(reuse.message().contains("reuse"), "{}", reuse.message());
    expect_code(
        app.auth()
            .refresh(pb::RefreshRequest {
                refresh_token: second.refresh_token,
            })
            .await,
        Code::Unauthenticated,
    );

    // Another login (another family) is unaffected.
    let (_, other) = app
        .login("rot@example.org", "rotate-password")
        .await
        .unwrap();
    app.auth()
        .refresh(pb::RefreshRequest {
            refresh_token: other,
        })
        .await
        .expect("other session still works");

    expect_code(
        app.auth()
            .refresh(pb::RefreshRequest {
                refresh_token: "msr_forged".into(),
            })
            .await,
        Code::Unauthenticated,
    );
    expect_code(
        app.auth()
            .refresh(pb::RefreshRequest {
                refresh_token: String::new(),
            })
            .await,
        Code::InvalidArgument,
    );
}

#[tokio::test]
async fn logout_ends_one_session_or_all() {
    let app = spawn_app().await;
    app.register("out@example.org", "logout-password").await;
    let (_, a) = app
        .login("out@example.org", "logout-password")
        .await
        .unwrap();
    let (_, b) = app
        .login("out@example.org", "logout-password")
        .await
        .unwrap();
    let (_, c) = app
        .login("out@example.org", "logout-password")
        .await
        .unwrap();
    app.auth()
        .logout(pb::LogoutRequest {
            refresh_token: a.clone(),
            all_sessions: false,
        })
        .await
        .unwrap();
    expect_code(
        app.auth()
            .refresh(pb::RefreshRequest { refresh_token: a })
            .await,
        Code::Unauthenticated,
    );
    app.auth()
        .logout(pb::LogoutRequest {
            refresh_token: b.clone(),
            all_sessions: true,
        })
        .await
        .unwrap();
    for t in [b, c] {
        expect_code(
            app.auth()
                .refresh(pb::RefreshRequest { refresh_token: t })
                .await,
            Code::Unauthenticated,
        );
    }
    expect_code(
        app.auth()
            .logout(pb::LogoutRequest {
                refresh_token: "msr_nope".into(),
                all_sessions: false,
            })
            .await,
        Code::Unauthenticated,
    );
}

#[tokio::test]
async fn protected_methods_refuse_missing_malformed_and_forged_tokens() {
    let app = spawn_app().await;
    expect_code(
        app.auth().get_profile(pb::GetProfileRequest {}).await,
        Code::Unauthenticated,
    );
    let mut r = Request::new(pb::GetProfileRequest {});
    r.metadata_mut()
        .insert("authorization", "Basic YTpi".parse().unwrap());
    expect_code(app.auth().get_profile(r).await, Code::Unauthenticated);
    expect_code(
        app.auth()
            .get_profile(authed(pb::GetProfileRequest {}, "not.a.jwt"))
            .await,
        Code::Unauthenticated,
    );
    // A token signed by another server's key.
    let other = spawn_app().await;
    let foreign = other.admin_token().await;
    expect_code(
        app.auth()
            .get_profile(authed(pb::GetProfileRequest {}, &foreign))
            .await,
        Code::Unauthenticated,
    );
}

#[tokio::test]
async fn update_profile_changes_name_and_email_with_the_password() {
    let app = spawn_app().await;
    let (_, token) = app.register("me@example.org", "my-password-1").await;
    let r = app
        .auth()
        .update_profile(authed(
            pb::UpdateProfileRequest {
                name: Some("New Name".into()),
                ..Default::default()
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.user.unwrap().name, "New Name");

    let no_password = pb::UpdateProfileRequest {
        email: Some("new@example.org".into()),
        ..Default::default()
    };
    let s = expect_code(
        app.auth().update_profile(authed(no_password, &token)).await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&s), ["current_password"]);
    let wrong = pb::UpdateProfileRequest {
        email: Some("new@example.org".into()),
        current_password: "wrong-password".into(),
        ..Default::default()
    };
    // A wrong password is the field's error, not an ended session (a client
    // must not take it for an expired token and sign the user out).
    let s = expect_code(
        app.auth().update_profile(authed(wrong, &token)).await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&s), ["current_password"]);
    let taken = pb::UpdateProfileRequest {
        email: Some(ADMIN_EMAIL.into()),
        current_password: "my-password-1".into(),
        ..Default::default()
    };
    expect_code(
        app.auth().update_profile(authed(taken, &token)).await,
        Code::AlreadyExists,
    );
    let ok = pb::UpdateProfileRequest {
        email: Some("new@example.org".into()),
        current_password: "my-password-1".into(),
        ..Default::default()
    };
    app.auth().update_profile(authed(ok, &token)).await.unwrap();
    app.login("new@example.org", "my-password-1")
        .await
        .expect("new email logs in");
    let bad = pb::UpdateProfileRequest {
        name: Some(" ".into()),
        ..Default::default()
    };
    expect_code(
        app.auth().update_profile(authed(bad, &token)).await,
        Code::InvalidArgument,
    );
    expect_code(
        app.auth()
            .update_profile(pb::UpdateProfileRequest::default())
            .await,
        Code::Unauthenticated,
    );
}

#[tokio::test]
async fn change_password_revokes_old_sessions_and_access_tokens() {
    let app = spawn_app().await;
    app.register("pw@example.org", "old-password-1").await;
    let (old_access, old_refresh) = app.login("pw@example.org", "old-password-1").await.unwrap();
    let wrong = pb::ChangePasswordRequest {
        current_password: "not-it-at-all".into(),
        new_password: "new-password-1".into(),
        ..Default::default()
    };
    let s = expect_code(
        app.auth().change_password(authed(wrong, &old_access)).await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&s), ["current_password"]);
    let weak = pb::ChangePasswordRequest {
        current_password: "old-password-1".into(),
        new_password: "short".into(),
        ..Default::default()
    };
    expect_code(
        app.auth().change_password(authed(weak, &old_access)).await,
        Code::InvalidArgument,
    );
    let ok = pb::ChangePasswordRequest {
        current_password: "old-password-1".into(),
        new_password: "new-password-1".into(),
        ..Default::default()
    };
    let fresh = app
        .auth()
        .change_password(authed(ok, &old_access))
        .await
        .unwrap()
        .into_inner();

    expect_code(
        app.auth()
            .get_profile(authed(pb::GetProfileRequest {}, &old_access))
            .await,
        Code::Unauthenticated,
    );
    expect_code(
        app.auth()
            .refresh(pb::RefreshRequest {
                refresh_token: old_refresh,
            })
            .await,
        Code::Unauthenticated,
    );
    app.auth()
        .get_profile(authed(pb::GetProfileRequest {}, &fresh.access_token))
        .await
        .expect("the new session works");
    expect_code(
        app.login("pw@example.org", "old-password-1").await,
        Code::Unauthenticated,
    );
    app.login("pw@example.org", "new-password-1")
        .await
        .expect("new password");
}

#[tokio::test]
async fn a_deactivated_account_cannot_log_in_or_use_its_tokens() {
    let app = spawn_app().await;
    let (_, access) = app.register("bye@example.org", "goodbye-password").await;
    let (_, refresh) = app
        .login("bye@example.org", "goodbye-password")
        .await
        .unwrap();
    expect_code(
        app.auth()
            .deactivate_account(authed(
                pb::DeactivateAccountRequest {
                    password: "wrong-one!".into(),
                },
                &access,
            ))
            .await,
        Code::InvalidArgument,
    );
    app.auth()
        .deactivate_account(authed(
            pb::DeactivateAccountRequest {
                password: "goodbye-password".into(),
            },
            &access,
        ))
        .await
        .unwrap();
    let s = expect_code(
        app.auth()
            .get_profile(authed(pb::GetProfileRequest {}, &access))
            .await,
        Code::Unauthenticated,
    );
    assert!(s.message().contains("deactivated"), "{}", s.message());
    expect_code(
        app.auth()
            .refresh(pb::RefreshRequest {
                refresh_token: refresh,
            })
            .await,
        Code::Unauthenticated,
    );
    let s = expect_code(
        app.login("bye@example.org", "goodbye-password").await,
        Code::Unauthenticated,
    );
    assert!(s.message().contains("deactivated"));
}

#[tokio::test]
async fn the_last_administrator_cannot_deactivate_their_own_account() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let s = expect_code(
        app.auth()
            .deactivate_account(authed(
                pb::DeactivateAccountRequest {
                    password: ADMIN_PASSWORD.into(),
                },
                &admin,
            ))
            .await,
        Code::FailedPrecondition,
    );
    assert!(s.message().contains("last active administrator"));
    app.admin_token().await;
}

#[tokio::test]
async fn login_is_rate_limited_per_address() {
    let app = spawn_app_with(|a| {
        a.login.login_ip_burst = 3;
        a.login.login_ip_per_minute = 1;
    })
    .await;
    for _ in 0..3 {
        expect_code(
            app.login("x@example.org", "whatever-pw").await,
            Code::Unauthenticated,
        );
    }
    let s = expect_code(
        app.login(ADMIN_EMAIL, ADMIN_PASSWORD).await,
        Code::ResourceExhausted,
    );
    assert!(s.metadata().get("retry-after").is_some());
    // Register shares the per-address budget.
    expect_code(
        app.auth()
            .register(register_req("new@example.org", "password-123", "N"))
            .await,
        Code::ResourceExhausted,
    );
}

#[tokio::test]
async fn failed_logins_slow_one_account_for_a_while_not_forever() {
    // Two failures per (account, address), one more every second.
    let app = spawn_app_with(|a| {
        a.login.login_account_burst = 2;
        a.login.login_account_per_hour = 3600;
    })
    .await;
    app.register("victim@example.org", "victim-password").await;
    for _ in 0..2 {
        expect_code(
            app.login("victim@example.org", "guess-guess").await,
            Code::Unauthenticated,
        );
    }
    // Out of failures: even the right password waits, or guessing would go on.
    let s = expect_code(
        app.login("victim@example.org", "victim-password").await,
        Code::ResourceExhausted,
    );
    assert!(
        s.message().contains("failed password checks"),
        "{}",
        s.message()
    );
    // Other accounts from the same address are unaffected.
    app.admin_token().await;
    // The bucket refills: the owner gets in after the wait.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    app.login("victim@example.org", "victim-password")
        .await
        .expect("not locked out");
}

/// A Login with `x-forwarded-for` set, from this test's loopback address.
async fn login_forwarded_for(
    app: &TestApp,
    forwarded_for: &'static str,
) -> Result<tonic::Response<pb::LoginResponse>, tonic::Status> {
    let mut r = Request::new(pb::LoginRequest {
        email: "nobody@example.org".into(),
        password: "whatever-pw".into(),
        ..Default::default()
    });
    r.metadata_mut()
        .insert("x-forwarded-for", forwarded_for.parse().unwrap());
    app.auth().login(r).await
}

#[tokio::test]
async fn behind_a_trusted_proxy_limits_follow_its_right_most_untrusted_hop() {
    let app = spawn_app_with(|a| {
        a.transport.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
        a.login.login_ip_burst = 1;
        a.login.login_ip_per_minute = 1;
    })
    .await;
    expect_code(
        login_forwarded_for(&app, "203.0.113.1").await,
        Code::Unauthenticated,
    );
    expect_code(
        login_forwarded_for(&app, "203.0.113.1").await,
        Code::ResourceExhausted,
    );
    // A client forging hops to the left of the one the proxy appended is
    // still the address the proxy saw.
    expect_code(
        login_forwarded_for(&app, "198.51.100.77, 203.0.113.1").await,
        Code::ResourceExhausted,
    );
    // Another client behind the proxy has its own bucket.
    expect_code(
        login_forwarded_for(&app, "203.0.113.2").await,
        Code::Unauthenticated,
    );
}

#[tokio::test]
async fn an_untrusted_client_cannot_name_another_address() {
    // No trusted proxies: x-forwarded-for from a direct client means nothing.
    let app = spawn_app_with(|a| {
        a.login.login_ip_burst = 1;
        a.login.login_ip_per_minute = 1;
    })
    .await;
    expect_code(
        login_forwarded_for(&app, "203.0.113.1").await,
        Code::Unauthenticated,
    );
    expect_code(
        login_forwarded_for(&app, "203.0.113.99").await,
        Code::ResourceExhausted,
    );
}

#[tokio::test]
async fn only_a_live_refresh_token_ends_every_session() {
    let app = spawn_app().await;
    app.register("all@example.org", "all-sessions-pw").await;
    let (_, spent) = app
        .login("all@example.org", "all-sessions-pw")
        .await
        .unwrap();
    let (_, other) = app
        .login("all@example.org", "all-sessions-pw")
        .await
        .unwrap();
    // Spend the first token; its successor is the live one.
    let live = app
        .auth()
        .refresh(pb::RefreshRequest {
            refresh_token: spent.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .refresh_token;
    expect_code(
        app.auth()
            .logout(pb::LogoutRequest {
                refresh_token: spent,
                all_sessions: true,
            })
            .await,
        Code::Unauthenticated,
    );
    // Nothing was ended: both sessions still refresh.
    for t in [live, other] {
        app.auth()
            .refresh(pb::RefreshRequest { refresh_token: t })
            .await
            .expect("the session survived a stale all_sessions logout");
    }
}

#[tokio::test]
async fn oversized_credentials_are_refused_before_any_limiter_or_lookup() {
    // A limit of one attempt per address: an oversized login must not use it.
    let app = spawn_app_with(|a| {
        a.login.login_ip_burst = 1;
        a.login.login_ip_per_minute = 1;
    })
    .await;
    // Within AuthService's message limit but over the field limits.
    let long_email = format!("{}@example.org", "a".repeat(8 * 1024));
    for (email, password, field) in [
        (long_email.as_str(), "password-1", "email"),
        ("someone@example.org", &"p".repeat(200)[..], "password"),
    ] {
        let s = expect_code(app.login(email, password).await, Code::InvalidArgument);
        assert_eq!(violated_fields(&s), [field]);
    }
    // Beyond the message limit the message is not even decoded.
    let huge_email = format!("{}@example.org", "a".repeat(1 << 19));
    expect_code(app.login(&huge_email, "password-1").await, Code::OutOfRange);
    // The one allowed attempt is still there.
    app.login(ADMIN_EMAIL, ADMIN_PASSWORD)
        .await
        .expect("the address's bucket was not spent by oversized requests");
}

#[tokio::test]
async fn a_closed_registration_refuses_sign_ups_but_administrators_still_create_users() {
    let app = spawn_app_with(|a| a.login.close_registration = true).await;
    let s = expect_code(
        app.auth()
            .register(register_req("new@example.org", "new-password-1", "New"))
            .await,
        Code::PermissionDenied,
    );
    assert!(s.message().contains("registration is closed"), "{s:?}");
    let admin = app.admin_token().await;
    app.users()
        .create_user(authed(
            pb::CreateUserRequest {
                email: "new@example.org".into(),
                password: "new-password-1".into(),
                name: "New".into(),
                role: pb::Role::User as i32,
            },
            &admin,
        ))
        .await
        .expect("administrators still create accounts");
}

#[tokio::test]
async fn password_checks_outside_login_are_limited_like_logins() {
    let app = spawn_app_with(|a| {
        a.login.login_account_burst = 2;
        a.login.login_account_per_hour = 1;
    })
    .await;
    let (_, access) = app.register("guess@example.org", "guess-password-1").await;
    let wrong = || pb::ChangePasswordRequest {
        current_password: "not-it-at-all".into(),
        new_password: "new-password-1".into(),
        ..Default::default()
    };
    for _ in 0..2 {
        expect_code(
            app.auth().change_password(authed(wrong(), &access)).await,
            Code::InvalidArgument,
        );
    }
    // Out of checks: ChangePassword, DeactivateAccount, an email change and
    // a Login of the same account all wait, even with the right password.
    expect_code(
        app.auth().change_password(authed(wrong(), &access)).await,
        Code::ResourceExhausted,
    );
    expect_code(
        app.auth()
            .deactivate_account(authed(
                pb::DeactivateAccountRequest {
                    password: "guess-password-1".into(),
                },
                &access,
            ))
            .await,
        Code::ResourceExhausted,
    );
    expect_code(
        app.auth()
            .update_profile(authed(
                pb::UpdateProfileRequest {
                    email: Some("moved@example.org".into()),
                    current_password: "guess-password-1".into(),
                    ..Default::default()
                },
                &access,
            ))
            .await,
        Code::ResourceExhausted,
    );
    expect_code(
        app.login("guess@example.org", "guess-password-1").await,
        Code::ResourceExhausted,
    );
}

#[tokio::test]
async fn logout_ends_the_sessions_access_token_at_once() {
    let app = spawn_app().await;
    app.register("out@example.org", "logout-password").await;
    let (access, refresh) = app
        .login("out@example.org", "logout-password")
        .await
        .unwrap();
    let (other_access, _) = app
        .login("out@example.org", "logout-password")
        .await
        .unwrap();
    let profile = |token: String| {
        let mut auth = app.auth();
        async move {
            auth.get_profile(authed(pb::GetProfileRequest {}, &token))
                .await
        }
    };
    profile(access.clone()).await.expect("signed in");
    app.auth()
        .logout(pb::LogoutRequest {
            refresh_token: refresh,
            all_sessions: false,
        })
        .await
        .unwrap();
    let s = expect_code(profile(access).await, Code::Unauthenticated);
    assert!(s.message().contains("session was ended"), "{s:?}");
    // The other session is untouched.
    profile(other_access)
        .await
        .expect("another session survives");
}

/// `exp - iat` of an access token, read from its payload.
fn access_token_life(token: &str) -> u64 {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
    v["exp"].as_u64().unwrap() - v["iat"].as_u64().unwrap()
}

#[tokio::test]
async fn a_session_ends_at_its_maximum_age_however_often_refreshed() {
    let app = spawn_app_with(|a| a.login.session_max_age = std::time::Duration::from_secs(3)).await;
    app.register("aged@example.org", "aged-password-1").await;
    let (access, mut refresh) = app
        .login("aged@example.org", "aged-password-1")
        .await
        .unwrap();
    // Access tokens do not outlive the session (15 minutes otherwise).
    assert!(
        access_token_life(&access) <= 3,
        "{}",
        access_token_life(&access)
    );
    for _ in 0..2 {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        refresh = app
            .auth()
            .refresh(pb::RefreshRequest {
                refresh_token: refresh,
            })
            .await
            .expect("refreshes within the age")
            .into_inner()
            .refresh_token;
    }
    tokio::time::sleep(std::time::Duration::from_millis(2200)).await;
    let s = expect_code(
        app.auth()
            .refresh(pb::RefreshRequest {
                refresh_token: refresh,
            })
            .await,
        Code::Unauthenticated,
    );
    assert!(
        s.message().contains("maximum age") || s.message().contains("expired"),
        "{s:?}"
    );
}
