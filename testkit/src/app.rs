//! `spawn_app`: the real server on a random port with a fresh data dir,
//! reached over TLS like any client.

use std::{net::SocketAddr, time::Duration};

use crate::TempDir;

use minispod_control_plane::{Application, config::ServeArgs};
use minispod_proto::v1::{
    self as pb, auth_service_client::AuthServiceClient,
    catalog_service_client::CatalogServiceClient, user_service_client::UserServiceClient,
    worker_service_client::WorkerServiceClient,
};
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::{
    Code, Request, Status,
    metadata::MetadataValue,
    transport::{Certificate, Channel, ClientTlsConfig},
};

/// Password of the bootstrap administrator of every test app.
pub const ADMIN_EMAIL: &str = "root@example.org";
/// Password of the bootstrap administrator of every test app.
pub const ADMIN_PASSWORD: &str = "admin-password-1";

/// A running server and clients for it.
pub struct TestApp {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its data dir (removed when the app is dropped).
    pub data_dir: std::sync::Arc<TempDir>,
    /// Its CA pin.
    pub ca_hash: String,
    /// The plaintext loopback console listener, with `--console-listen`.
    pub console_addr: Option<SocketAddr>,
    /// The `/metrics` listener, with `--metrics-listen`.
    pub metrics_addr: Option<SocketAddr>,
    /// A TLS channel to it.
    pub channel: Channel,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

/// Server settings for tests: port 0 on loopback, generous rate limits
/// (the rate-limit tests set their own), a known administrator.
pub fn test_args(data_dir: &std::path::Path) -> ServeArgs {
    let mut args = ServeArgs::with_data_dir(data_dir);
    args.listen = "127.0.0.1:0".parse().unwrap();
    args.login.admin_email = Some(ADMIN_EMAIL.into());
    args.login.admin_password = Some(ADMIN_PASSWORD.into());
    args.login.login_ip_burst = 10_000;
    args.login.login_ip_per_minute = 10_000;
    args.login.login_account_burst = 1_000;
    args.subscriptions.subscription_change_burst = 10_000;
    args.subscriptions.log_stream_burst = 10_000;
    args.cors_origins = vec!["https://app.example.org".into()];
    args
}

/// Links the app to the cluster whose kubeconfig is `kubeconfig`, with the
/// short offline-taint grace the cluster tests wait out (300 ms, counted
/// from start-up too).
pub fn link_args(args: &mut ServeArgs, kubeconfig: &std::path::Path) {
    args.cluster.kubeconfig = Some(kubeconfig.to_owned());
    args.cluster.offline_taint_grace = Duration::from_millis(300);
    args.cluster.offline_taint_after_start = Duration::ZERO;
}

/// Starts the app with default test settings.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts the app after `configure` adjusted the settings.
pub async fn spawn_app_with(configure: impl FnOnce(&mut ServeArgs)) -> TestApp {
    let dir = std::sync::Arc::new(TempDir::for_server().await);
    start(dir, configure).await
}

/// Starts an app on an existing data dir.
pub async fn start(
    dir: std::sync::Arc<TempDir>,
    configure: impl FnOnce(&mut ServeArgs),
) -> TestApp {
    if std::env::var_os("TEST_LOG").is_some() {
        minispod_control_plane::telemetry::init(minispod_control_plane::config::LogFormat::Text);
    }
    let mut args = test_args(&dir.0);
    args.store.database_url = dir.1.clone();
    configure(&mut args);
    let plaintext = args.plaintext;
    let app = Application::build(args).await.expect("build app");
    let addr = app.local_addr();
    let ca_pem = app.ca_cert_pem();
    let ca_hash = app.ca_hash();
    let console_addr = app.console_addr();
    let metrics_addr = app.metrics_addr();
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(app.run_until(async {
        let _ = rx.await;
    }));
    let channel = if plaintext {
        Channel::from_shared(format!("http://127.0.0.1:{}", addr.port()))
            .unwrap()
            .connect()
            .await
            .expect("connect")
    } else {
        tls_channel(addr, &ca_pem).await
    };
    TestApp {
        addr,
        data_dir: dir,
        ca_hash,
        console_addr,
        metrics_addr,
        channel,
        shutdown: Some(tx),
        handle: Some(handle),
    }
}

/// A `TestApp` for a control plane running elsewhere (another process)
/// at `addr` with its data in `dir`: waits for its CA, then connects.
pub async fn attach(addr: SocketAddr, dir: std::sync::Arc<TempDir>) -> TestApp {
    let ca_file = dir.0.join("pki/ca.crt");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let ca_pem = loop {
        if let Ok(pem) = std::fs::read_to_string(&ca_file)
            && tokio::net::TcpStream::connect(addr).await.is_ok()
        {
            break pem;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the control plane at {addr} did not come up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let der = rustls_pemfile::certs(&mut ca_pem.as_bytes())
        .next()
        .expect("a CA certificate")
        .unwrap();
    let channel = tls_channel(addr, &ca_pem).await;
    TestApp {
        addr,
        data_dir: dir,
        ca_hash: minispod_control_plane::pki::ca_hash_of(&der),
        console_addr: None,
        metrics_addr: None,
        channel,
        shutdown: None,
        handle: None,
    }
}

/// A TLS channel to `addr` trusting `ca_pem`, for the name `localhost`.
pub async fn tls_channel(addr: SocketAddr, ca_pem: &str) -> Channel {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    Channel::from_shared(format!("https://localhost:{}", addr.port()))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("connect over TLS")
}

impl TestApp {
    /// AuthService client.
    pub fn auth(&self) -> AuthServiceClient<Channel> {
        AuthServiceClient::new(self.channel.clone())
    }

    /// UserService client.
    pub fn users(&self) -> UserServiceClient<Channel> {
        UserServiceClient::new(self.channel.clone())
    }

    /// CatalogService client.
    pub fn catalog(&self) -> CatalogServiceClient<Channel> {
        CatalogServiceClient::new(self.channel.clone())
    }

    /// Logs in and returns (access, refresh).
    pub async fn login(&self, email: &str, password: &str) -> Result<(String, String), Status> {
        let r = self
            .auth()
            .login(pb::LoginRequest {
                email: email.into(),
                password: password.into(),
                ..Default::default()
            })
            .await?
            .into_inner();
        Ok((r.access_token, r.refresh_token))
    }

    /// An access token of the bootstrap administrator.
    pub async fn admin_token(&self) -> String {
        self.login(ADMIN_EMAIL, ADMIN_PASSWORD)
            .await
            .expect("admin login")
            .0
    }

    /// Registers a ROLE_USER account; returns (id, access token).
    pub async fn register(&self, email: &str, password: &str) -> (String, String) {
        let r = self
            .auth()
            .register(pb::RegisterRequest {
                email: email.into(),
                password: password.into(),
                name: "Test User".into(),
                ..Default::default()
            })
            .await
            .expect("register")
            .into_inner();
        (r.user.unwrap().id, r.access_token)
    }

    /// WorkerService client.
    pub fn workers(&self) -> WorkerServiceClient<Channel> {
        WorkerServiceClient::new(self.channel.clone())
    }

    /// Waits (20 s at most) until the app's link to its cluster is
    /// CONNECTED, asking as `admin_token`.
    pub async fn until_linked(&self, admin_token: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let state = self
                .workers()
                .get_cluster_link(authed(pb::GetClusterLinkRequest {}, admin_token))
                .await
                .map(|r| r.into_inner().state);
            if matches!(state, Ok(s) if s == pb::ClusterLinkState::Connected as i32) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for the link to connect"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The Prometheus exposition (needs `--metrics-listen`).
    pub async fn metrics(&self) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = self.metrics_addr.expect("started with --metrics-listen");
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut body = String::new();
        conn.read_to_string(&mut body).await.unwrap();
        body
    }

    /// The value of the metric line starting with `series ` (0 if absent).
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self.metrics().await;
        text.lines()
            .find_map(|l| {
                l.strip_prefix(series)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or(0.0)
    }

    /// Stops the server and waits until it has shut down.
    pub async fn stop(mut self) -> std::sync::Arc<TempDir> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            tokio::time::timeout(Duration::from_secs(10), h)
                .await
                .expect("server stops within 10 s")
                .expect("server task")
                .expect("server ran cleanly");
        }
        self.data_dir.clone()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// `msg` with `authorization: Bearer <token>`.
pub fn authed<T>(msg: T, token: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert(
        "authorization",
        MetadataValue::try_from(format!("Bearer {token}")).unwrap(),
    );
    r
}

/// `msg` with the bearer token when there is one.
pub fn maybe_authed<T>(msg: T, token: Option<&str>) -> Request<T> {
    match token {
        Some(t) => authed(msg, t),
        None => Request::new(msg),
    }
}

/// Asserts that `result` failed with `code`, and returns the status.
#[track_caller]
pub fn expect_code<T: std::fmt::Debug>(result: Result<T, Status>, code: Code) -> Status {
    match result {
        Ok(v) => panic!("expected {code:?}, got Ok({v:?})"),
        Err(s) => {
            assert_eq!(s.code(), code, "unexpected status: {s:?}");
            s
        }
    }
}

/// The fields named in a status's BadRequest detail.
pub fn violated_fields(status: &Status) -> Vec<String> {
    use tonic_types::StatusExt;
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}
