//! The wire: TLS, reflection and health for grpcurl, grpc-web for browsers,
//! CORS, restarts and the binary's own process life cycle.

use std::{path::PathBuf, time::Duration};

use tokio::process::Command;

use minispod_proto::v1 as pb;
use tonic::Code;

use crate::helpers::*;

/// The grpcurl binary: `$MINISPOD_GRPCURL`, else `grpcurl` on PATH. The
/// README's test command installs it; without it this test fails, it is
/// never skipped.
pub(crate) fn grpcurl() -> Command {
    let bin = std::env::var("MINISPOD_GRPCURL").unwrap_or_else(|_| "grpcurl".into());
    Command::new(bin)
}

/// Runs a client process without blocking the server sharing this runtime.
pub(crate) async fn run(cmd: &mut Command) -> (bool, String, String) {
    cmd.kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{cmd:?} did not finish within 60 s"))
        .unwrap_or_else(|e| {
        panic!(
            "cannot run {cmd:?}: {e} (run the README's test command, which installs the test tools)"
        )
    });
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn grpcurl_lists_services_checks_health_and_logs_in_over_tls() {
    let app = spawn_app().await;
    let ca = app.data_dir.0.join("pki/ca.crt");
    let target = format!("localhost:{}", app.addr.port());

    let (ok, list, err) = run(grpcurl().arg("-cacert").arg(&ca).arg(&target).arg("list")).await;
    assert!(ok, "grpcurl list failed: {err}");
    for svc in [
        "grpc.health.v1.Health",
        "minispod.v1.AuthService",
        "minispod.v1.CatalogService",
        "minispod.v1.UserService",
        "minispod.v1.NotificationService",
    ] {
        assert!(
            list.lines().any(|l| l == svc),
            "{svc} missing from:\n{list}"
        );
    }

    let (ok, health, err) = run(grpcurl()
        .arg("-cacert")
        .arg(&ca)
        .arg(&target)
        .arg("grpc.health.v1.Health/Check"))
    .await;
    assert!(ok, "health check failed: {err}");
    assert!(health.contains("\"SERVING\""), "{health}");

    let body = format!(r#"{{"email":"{ADMIN_EMAIL}","password":"{ADMIN_PASSWORD}"}}"#);
    let (ok, login, err) = run(grpcurl()
        .arg("-cacert")
        .arg(&ca)
        .arg("-d")
        .arg(&body)
        .arg(&target)
        .arg("minispod.v1.AuthService/Login"))
    .await;
    assert!(ok, "login failed: {err}");
    let v: serde_json::Value = serde_json::from_str(&login).unwrap();
    assert!(v["accessToken"].as_str().unwrap().len() > 20);
    assert!(v["refreshToken"].as_str().unwrap().starts_with("msr_"));

    // Without the CA the handshake must fail: TLS is real.
    let (ok, _, _) = run(grpcurl().arg(&target).arg("list")).await;
    assert!(!ok, "grpcurl trusted an unknown CA");
}

#[tokio::test]
async fn a_grpc_web_client_logs_in_lists_services_watches_and_passes_cors() {
    let app = spawn_app().await;
    let web = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/web");
    assert!(
        web.join("node_modules/@connectrpc/connect-node").exists(),
        "run `npm ci` in {} (the README's test command does)",
        web.display()
    );
    let fds = app.data_dir.0.join("descriptors.binpb");
    std::fs::write(&fds, minispod_proto::FILE_DESCRIPTOR_SET).unwrap();
    let (ok, out, err) = run(Command::new("node")
        .current_dir(&web)
        .arg("grpc-web-client.mjs")
        .arg(format!("https://localhost:{}", app.addr.port()))
        .arg(app.data_dir.0.join("pki/ca.crt"))
        .arg(&fds)
        .arg(ADMIN_EMAIL)
        .arg(ADMIN_PASSWORD)
        .arg("https://app.example.org"))
    .await;
    assert!(ok, "grpc-web client failed:\n{out}\n{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["loginHasTokens"], true);
    assert_eq!(v["profileEmail"], ADMIN_EMAIL);
    assert_eq!(
        v["serviceSlugs"],
        serde_json::json!(["ghost", "n8n", "wordpress"])
    );
    assert_eq!(v["totalSize"], 3);
    // WatchWorkers streams over grpc-web: an empty fleet's snapshot ends at once.
    assert_eq!(
        v["watchFirstEventType"],
        pb::WorkerEventType::SnapshotEnd as i32
    );
    // NotificationService answers over grpc-web too (an empty outbox).
    assert_eq!(v["outboxPending"], 0);
    // connect's Code.Unauthenticated is 16, as in gRPC.
    assert_eq!(v["wrongPasswordCode"], 16);

    let allowed = &v["allowedPreflight"];
    assert_eq!(
        allowed["alpn"], "http/1.1",
        "the preflight went over HTTP/1.1 on TLS"
    );
    assert!(allowed["status"].as_u64().unwrap() < 300, "{allowed}");
    assert_eq!(
        allowed["headers"]["access-control-allow-origin"],
        "https://app.example.org"
    );
    let allow_headers = allowed["headers"]["access-control-allow-headers"]
        .as_str()
        .unwrap();
    assert!(allow_headers.contains("authorization") && allow_headers.contains("x-grpc-web"));
    assert!(
        v["otherPreflight"]["headers"]["access-control-allow-origin"].is_null(),
        "an origin not configured was allowed: {}",
        v["otherPreflight"]
    );
}

#[tokio::test]
async fn data_survives_a_restart_on_the_same_data_dir() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let ca_hash = app.ca_hash.clone();
    app.users()
        .create_user(authed(
            pb::CreateUserRequest {
                email: "kept@example.org".into(),
                password: "kept-password".into(),
                name: "Kept".into(),
                role: pb::Role::User as i32,
            },
            &admin,
        ))
        .await
        .unwrap();
    // Deleting a seeded entry must stick: seeding happens once.
    let ghost = app
        .catalog()
        .get_service(pb::GetServiceRequest {
            lookup: Some(pb::get_service_request::Lookup::Slug("ghost".into())),
        })
        .await
        .unwrap()
        .into_inner()
        .service
        .unwrap();
    app.catalog()
        .delete_service(authed(pb::DeleteServiceRequest { id: ghost.id }, &admin))
        .await
        .unwrap();
    let (_, refresh) = app
        .login("kept@example.org", "kept-password")
        .await
        .unwrap();
    let dir = app.stop().await;

    let app = start(dir, |_| {}).await;
    assert_eq!(app.ca_hash, ca_hash, "the CA is kept");
    app.login("kept@example.org", "kept-password")
        .await
        .expect("user kept");
    // The refresh token (and the JWT key) survive too.
    app.auth()
        .refresh(pb::RefreshRequest {
            refresh_token: refresh,
        })
        .await
        .expect("refresh token kept");
    let list = app
        .catalog()
        .list_services(pb::ListServicesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let slugs: Vec<_> = list.services.iter().map(|s| s.slug.as_str()).collect();
    assert_eq!(slugs, ["n8n", "wordpress"]);
}

fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_minispod-control-plane"))
}

#[tokio::test]
async fn the_binary_serves_prints_its_ca_hash_and_stops_on_sigterm() {
    let dir = TempDir::for_server().await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    // Type=notify: the server must say READY=1 on $NOTIFY_SOCKET.
    let notify_path = dir.0.join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_minispod-control-plane"))
        .arg("serve")
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(&dir.0)
        .args(dir.1.iter().flat_map(|url| ["--database-url", url]))
        .env("MINISPOD_ADMIN_EMAIL", "ops@example.org")
        .env("MINISPOD_ADMIN_PASSWORD", "ops-password-1")
        .env("MINISPOD_LOG_FORMAT", "json")
        .env("NOTIFY_SOCKET", &notify_path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut connected = None;
    for _ in 0..100 {
        if let Ok(pem) = std::fs::read_to_string(dir.0.join("pki/ca.crt"))
            && tokio::net::TcpStream::connect(addr).await.is_ok()
        {
            connected = Some(tls_channel(addr, &pem).await);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let channel = connected.expect("the server came up");
    let ready = tokio::task::spawn_blocking(move || {
        let mut buf = [0u8; 64];
        let n = notify.recv(&mut buf).expect("READY=1 on the notify socket");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    })
    .await
    .unwrap();
    assert_eq!(ready, "READY=1");
    let mut auth = pb::auth_service_client::AuthServiceClient::new(channel);
    let login = auth
        .login(pb::LoginRequest {
            email: "ops@example.org".into(),
            password: "ops-password-1".into(),
            ..Default::default()
        })
        .await
        .expect("admin from the environment");
    assert!(!login.into_inner().access_token.is_empty());

    // ca-hash prints the pin of the CA the server uses.
    let (ok, printed, err) = run(binary().arg("ca-hash").arg("--data-dir").arg(&dir.0)).await;
    assert!(ok, "{err}");
    let pem = std::fs::read_to_string(dir.0.join("pki/ca.crt")).unwrap();
    let der = minispod_control_plane::pki::pem_to_der(&pem).unwrap();
    assert_eq!(
        printed.trim(),
        minispod_control_plane::pki::ca_hash_of(&der)
    );

    let pid = child.id().unwrap().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .unwrap()
            .success()
    );
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("stopped within 10 s after SIGTERM")
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
    let mut logs = String::new();
    use tokio::io::AsyncReadExt;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .await
        .unwrap();
    assert!(
        logs.lines()
            .all(|l| l.trim().is_empty() || l.starts_with('{')),
        "JSON logs:\n{logs}"
    );
    assert!(
        logs.contains("/minispod.v1.AuthService/Login"),
        "one span per RPC:\n{logs}"
    );
    assert!(!logs.contains("ops-password-1"), "a secret reached the log");
}

#[tokio::test]
async fn plaintext_mode_serves_without_tls() {
    let app = spawn_app_with(|a| a.plaintext = true).await;
    let channel =
        tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{}", app.addr.port()))
            .unwrap()
            .connect()
            .await
            .unwrap();
    let mut catalog = pb::catalog_service_client::CatalogServiceClient::new(channel);
    let r = catalog
        .list_categories(pb::ListCategoriesRequest {})
        .await
        .unwrap();
    assert_eq!(r.into_inner().categories.len(), 2);
}

#[tokio::test]
async fn oversized_requests_are_refused() {
    let app = spawn_app().await;
    let big = "x".repeat(2 * 1024 * 1024);
    let r = app
        .auth()
        .login(pb::LoginRequest {
            email: big,
            password: "p".into(),
            ..Default::default()
        })
        .await;
    // tonic answers OUT_OF_RANGE for a message over the decoding limit.
    let s = expect_code(r, Code::OutOfRange);
    assert!(s.message().contains("too large"), "{}", s.message());
    // The server still serves.
    app.admin_token().await;
}

#[tokio::test]
async fn health_reports_every_service_serving_and_not_serving_once_shutdown_begins() {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let app = spawn_app().await;
    let mut health = HealthClient::new(app.channel.clone());
    for service in [
        "",
        "minispod.v1.AuthService",
        "minispod.v1.UserService",
        "minispod.v1.CatalogService",
        "minispod.v1.WorkerService",
        "minispod.v1.AgentService",
        "minispod.v1.SubscriptionService",
        "minispod.v1.NotificationService",
    ] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap_or_else(|e| panic!("{service:?}: {e:?}"))
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }
    let mut watch = health
        .watch(HealthCheckRequest {
            service: "minispod.v1.WorkerService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);
    let stopping = tokio::spawn(app.stop());
    let next = tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await
        .expect("a status change when shutdown begins")
        .expect("before the connection closes")
        .expect("a message");
    assert_eq!(next.status, ServingStatus::NotServing as i32);
    stopping.await.unwrap();
}

#[tokio::test]
async fn a_heartbeat_interval_agents_cannot_be_told_is_refused_at_start() {
    let dir = TempDir::for_server().await;
    let mut args = test_args(&dir.0);
    args.store.database_url = dir.1.clone();
    args.fleet.heartbeat_interval = Duration::from_millis(500);
    let err = minispod_control_plane::Application::build(args)
        .await
        .expect_err("500ms is refused");
    assert!(
        format!("{err:#}").contains("--heartbeat-interval"),
        "{err:#}"
    );
}

#[tokio::test]
async fn the_bootstrap_administrator_is_made_once_and_not_brought_back() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    // The bootstrap administrator takes another address.
    app.auth()
        .update_profile(authed(
            pb::UpdateProfileRequest {
                email: Some("renamed@example.org".into()),
                current_password: ADMIN_PASSWORD.into(),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .unwrap();
    let dir = app.stop().await;
    // The next start (the install script passes the same --admin-email)
    // finds an administrator and creates nobody.
    let app = start(dir, |_| {}).await;
    expect_code(
        app.login(ADMIN_EMAIL, ADMIN_PASSWORD).await,
        Code::Unauthenticated,
    );
    app.login("renamed@example.org", ADMIN_PASSWORD)
        .await
        .expect("the renamed administrator");
}

#[tokio::test]
async fn a_generated_bootstrap_password_goes_to_a_private_file_not_the_log() {
    use std::os::unix::fs::PermissionsExt;
    let app = spawn_app_with(|a| a.login.admin_password = None).await;
    let path = app.data_dir.0.join("admin.password");
    let meta = std::fs::metadata(&path).expect("admin.password written");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let password = std::fs::read_to_string(&path).unwrap();
    app.login(ADMIN_EMAIL, password.trim())
        .await
        .expect("the file holds the password");
}
