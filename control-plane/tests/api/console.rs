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

fn console_login_request(headers: &[(&'static str, &str)]) -> Request<pb::LoginRequest> {
    let mut req = Request::new(pb::LoginRequest {
        email: ADMIN_EMAIL.into(),
        password: ADMIN_PASSWORD.into(),
        session_cookie: true,
    });
    for (k, v) in headers {
        req.metadata_mut()
            .insert(*k, MetadataValue::try_from(*v).unwrap());
    }
    req
}

async fn console_login(app: &TestApp) -> String {
    let res = app
        .auth()
        .login(console_login_request(SAME_ORIGIN))
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
async fn another_site_cannot_plant_a_session_cookie_either() {
    // A same-site page (a sibling subdomain) could otherwise sign the
    // console into the attacker's account (login CSRF).
    let app = spawn_app().await;
    for headers in [
        &[("sec-fetch-site", "same-site")][..],
        &[("origin", "https://blog.example.org")],
        &[],
    ] {
        let status = expect_code(
            app.auth().login(console_login_request(headers)).await,
            Code::PermissionDenied,
        );
        assert!(status.message().contains("origin"), "{status:?}");
    }
    let mut register = Request::new(pb::RegisterRequest {
        email: "planted@example.org".into(),
        password: "planted-password".into(),
        name: "Planted".into(),
        session_cookie: true,
    });
    register
        .metadata_mut()
        .insert("sec-fetch-site", MetadataValue::from_static("cross-site"));
    expect_code(app.auth().register(register).await, Code::PermissionDenied);
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

/// A new enrollment token from `app`, as an administrator asks for it.
async fn new_enrollment_token(app: &TestApp) -> pb::CreateEnrollmentTokenResponse {
    let token = app.admin_token().await;
    minispod_proto::v1::worker_service_client::WorkerServiceClient::new(app.channel.clone())
        .create_enrollment_token(authed(
            pb::CreateEnrollmentTokenRequest {
                ttl_seconds: 600,
                max_uses: 1,
                description: "console".into(),
                ..Default::default()
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test]
async fn an_enrollment_token_comes_with_the_ca_pin_for_the_join_command() {
    let app = spawn_app().await;
    let res = new_enrollment_token(&app).await;
    assert_eq!(res.ca_hash, app.ca_hash);
    assert!(res.ca_hash.starts_with("sha256:"));
}

/// One raw HTTP/1.1 exchange: the status code and the whole response.
async fn http1(addr: std::net::SocketAddr, request: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tcp.read_to_end(&mut out),
    )
    .await
    .expect("the server answers and closes")
    .unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

#[tokio::test]
async fn the_loopback_console_answers_only_to_localhost_and_refuses_simple_posts() {
    let app = spawn_app_with(|a| a.console_listen = Some("127.0.0.1:0".parse().unwrap())).await;
    let addr = app.console_addr.expect("console listener");
    let port = addr.port();
    let get =
        |host: &str| format!("GET /workers HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let (status, page) = http1(addr, &get(&format!("localhost:{port}"))).await;
    assert_eq!(status, 200, "{page}");
    assert!(
        page.to_ascii_lowercase()
            .contains("content-security-policy")
    );
    let (status, _) = http1(addr, &get(&format!("127.0.0.1:{port}"))).await;
    assert_eq!(status, 200);
    // A DNS-rebinding page reaches 127.0.0.1 under its own name.
    let (status, _) = http1(addr, &get(&format!("rebind.evil.example:{port}"))).await;
    assert_eq!(status, 421);

    // A "simple" cross-site POST (no CORS preflight) never reaches an RPC.
    let post = format!(
        "POST /minispod.v1.AuthService/Login HTTP/1.1\r\nHost: localhost:{port}\r\n\
         Content-Type: text/plain\r\nContent-Length: 5\r\nConnection: close\r\n\r\n\0\0\0\0\0"
    );
    let (status, _) = http1(addr, &post).await;
    assert_eq!(status, 415);
}

#[tokio::test]
async fn the_join_command_names_the_tls_port_agents_use() {
    let app = spawn_app().await;
    let res = new_enrollment_token(&app).await;
    assert_eq!(
        res.server_url,
        format!("https://localhost:{}", app.addr.port())
    );
    let app = spawn_app_with(|a| a.agent_url = Some("https://cp.example.org:7443/".into())).await;
    let res = new_enrollment_token(&app).await;
    assert_eq!(res.server_url, "https://cp.example.org:7443");
}

#[tokio::test]
async fn a_watch_ends_soon_after_its_administrator_is_deactivated() {
    let app = spawn_app().await;
    let root = app.admin_token().await;
    let sam = app
        .users()
        .create_user(authed(
            pb::CreateUserRequest {
                email: "sam@example.org".into(),
                password: "sam-password-1".into(),
                name: "Sam".into(),
                role: pb::Role::Administrator as i32,
            },
            &root,
        ))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    let (sam_token, _) = app
        .login("sam@example.org", "sam-password-1")
        .await
        .unwrap();
    let mut workers =
        minispod_proto::v1::worker_service_client::WorkerServiceClient::new(app.channel.clone());
    let mut watch = workers
        .watch_workers(authed(pb::WatchWorkersRequest::default(), &sam_token))
        .await
        .unwrap()
        .into_inner();
    // The (empty) snapshot, then the stream stays open.
    let end = watch.message().await.unwrap().unwrap();
    assert_eq!(end.r#type, pb::WorkerEventType::SnapshotEnd as i32);

    app.users()
        .set_user_active(authed(
            pb::SetUserActiveRequest {
                id: sam.id,
                active: false,
            },
            &root,
        ))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let ended = tokio::time::timeout(std::time::Duration::from_secs(10), watch.message())
        .await
        .expect("the watch ends within 10 s");
    let status = ended.expect_err("it ends with an error");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    println!("watch ended {:?} after the deactivation", started.elapsed());
}
