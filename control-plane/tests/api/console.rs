//! The web console's session cookie over the network: set on Login, rotated
//! by Refresh, cleared by Logout, and refused to requests from other sites.

use minispod_proto::v1 as pb;
use tonic::{Code, Request, metadata::MetadataValue};

use crate::helpers::*;

/// The `minispod_session` value of a response's `Set-Cookie`, and the whole header.
fn set_cookie(metadata: &tonic::metadata::MetadataMap) -> (String, String) {
    let header = metadata
        .get("set-cookie")
        .expect("a Set-Cookie header")
        .to_str()
        .unwrap()
        .to_owned();
    let value = header
        .split(';')
        .next()
        .and_then(|kv| kv.strip_prefix("minispod_session="))
        .expect("the session cookie")
        .to_owned();
    (value, header)
}

/// A Refresh or Logout body sent the way the console sends it: no token in
/// the body, the cookie and the browser's Fetch Metadata in the headers.
fn from_browser<T>(msg: T, cookie: &str, headers: &[(&'static str, &str)]) -> Request<T> {
    let mut req = Request::new(msg);
    req.metadata_mut().insert(
        "cookie",
        MetadataValue::try_from(format!("theme=dark; minispod_session={cookie}")).unwrap(),
    );
    for (k, v) in headers {
        req.metadata_mut()
            .insert(*k, MetadataValue::try_from(*v).unwrap());
    }
    req
}

const SAME_ORIGIN: &[(&str, &str)] = &[("sec-fetch-site", "same-origin")];

async fn console_login(app: &TestApp) -> String {
    let res = app
        .auth()
        .login(pb::LoginRequest {
            email: ADMIN_EMAIL.into(),
            password: ADMIN_PASSWORD.into(),
            session_cookie: true,
        })
        .await
        .unwrap();
    let (cookie, header) = set_cookie(res.metadata());
    for attr in [
        "HttpOnly",
        "Secure",
        "SameSite=Strict",
        "Path=/minispod.v1.AuthService/",
    ] {
        assert!(header.contains(attr), "{header} lacks {attr}");
    }
    let body = res.into_inner();
    assert!(
        body.refresh_token.is_empty() && body.tokens.as_ref().unwrap().refresh_token.is_empty(),
        "a console login must not put the refresh token where scripts read it"
    );
    assert!(!body.access_token.is_empty());
    assert!(cookie.starts_with("msr_"));
    cookie
}

#[tokio::test]
async fn a_console_session_lives_in_the_cookie_and_rotates_on_refresh() {
    let app = spawn_app().await;
    let cookie = console_login(&app).await;

    let res = app
        .auth()
        .refresh(from_browser(
            pb::RefreshRequest::default(),
            &cookie,
            SAME_ORIGIN,
        ))
        .await
        .expect("a same-origin refresh with the cookie works");
    let (rotated, _) = set_cookie(res.metadata());
    assert_ne!(rotated, cookie, "the cookie carries the new refresh token");
    let body = res.into_inner();
    assert!(body.refresh_token.is_empty());
    let token = body.access_token;
    app.auth()
        .get_profile(authed(pb::GetProfileRequest {}, &token))
        .await
        .expect("the new access token works");

    // The spent cookie replayed (a stolen copy): the whole session ends.
    expect_code(
        app.auth()
            .refresh(from_browser(
                pb::RefreshRequest::default(),
                &cookie,
                SAME_ORIGIN,
            ))
            .await,
        Code::Unauthenticated,
    );
    expect_code(
        app.auth()
            .refresh(from_browser(
                pb::RefreshRequest::default(),
                &rotated,
                SAME_ORIGIN,
            ))
            .await,
        Code::Unauthenticated,
    );
}

#[tokio::test]
async fn another_site_cannot_use_the_session_cookie() {
    let app = spawn_app().await;
    let cookie = console_login(&app).await;
    let authority = format!("localhost:{}", app.addr.port());
    let cross: [&[(&str, &str)]; 5] = [
        &[("sec-fetch-site", "cross-site")],
        &[("sec-fetch-site", "same-site")],
        // Fetch Metadata outranks a forged-looking but matching Origin.
        &[
            ("sec-fetch-site", "cross-site"),
            ("origin", "https://localhost"),
        ],
        &[("origin", "https://evil.example.org")],
        // Neither header: not the console in a browser.
        &[],
    ];
    for headers in cross {
        let status = expect_code(
            app.auth()
                .refresh(from_browser(
                    pb::RefreshRequest::default(),
                    &cookie,
                    headers,
                ))
                .await,
            Code::PermissionDenied,
        );
        assert!(status.message().contains("origin"), "{status:?}");
        expect_code(
            app.auth()
                .logout(from_browser(pb::LogoutRequest::default(), &cookie, headers))
                .await,
            Code::PermissionDenied,
        );
    }
    // None of those spent or revoked the token: a browser without Fetch
    // Metadata but with our own Origin refreshes fine.
    let origin = format!("https://{authority}");
    app.auth()
        .refresh(from_browser(
            pb::RefreshRequest::default(),
            &cookie,
            &[("origin", &origin)],
        ))
        .await
        .expect("same Origin as the request's authority");
}

#[tokio::test]
async fn logout_with_the_cookie_ends_the_session_and_clears_it() {
    let app = spawn_app().await;
    let cookie = console_login(&app).await;
    let res = app
        .auth()
        .logout(from_browser(
            pb::LogoutRequest::default(),
            &cookie,
            SAME_ORIGIN,
        ))
        .await
        .unwrap();
    let header = res.metadata().get("set-cookie").unwrap().to_str().unwrap();
    assert!(
        header.starts_with("minispod_session=;") && header.contains("Max-Age=0"),
        "{header}"
    );
    expect_code(
        app.auth()
            .refresh(from_browser(
                pb::RefreshRequest::default(),
                &cookie,
                SAME_ORIGIN,
            ))
            .await,
        Code::Unauthenticated,
    );
    // Without token or cookie, Refresh says what it needs.
    let status = expect_code(
        app.auth().refresh(pb::RefreshRequest::default()).await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&status), ["refresh_token"]);
}

#[tokio::test]
async fn clients_without_the_console_flag_still_get_the_token_in_the_body() {
    let app = spawn_app().await;
    let res = app
        .auth()
        .login(pb::LoginRequest {
            email: ADMIN_EMAIL.into(),
            password: ADMIN_PASSWORD.into(),
            session_cookie: false,
        })
        .await
        .unwrap();
    assert!(res.metadata().get("set-cookie").is_none());
    assert!(res.into_inner().refresh_token.starts_with("msr_"));
}

#[tokio::test]
async fn an_enrollment_token_comes_with_the_ca_pin_for_the_join_command() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let mut workers =
        minispod_proto::v1::worker_service_client::WorkerServiceClient::new(app.channel.clone());
    let res = workers
        .create_enrollment_token(authed(
            pb::CreateEnrollmentTokenRequest {
                ttl_seconds: 600,
                max_uses: 1,
                description: "console".into(),
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(res.ca_hash, app.ca_hash);
    assert!(res.ca_hash.starts_with("sha256:"));
}
