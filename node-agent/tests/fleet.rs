//! The worker fleet end to end: a real control plane (in this process, on a
//! random port, fresh data dir, real TLS) and real `minispod-agent`
//! processes enrolling and holding their streams.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use minispod_agent::{
    secret::Secret,
    tls::{self, ClientIdentity, Trust},
};
use minispod_control_plane::{
    Application,
    config::ServeArgs,
    store::{Db, StoreOptions, Tx},
};
use minispod_proto::v1::{
    self as pb, WorkerStatus, agent_service_client::AgentServiceClient,
    auth_service_client::AuthServiceClient, worker_service_client::WorkerServiceClient,
};
use tokio::{process::Child, sync::oneshot};
use tonic::{Code, Request, metadata::MetadataValue, transport::Channel};

#[path = "fleet/identity.rs"]
mod identity;
#[path = "fleet/kubernetes.rs"]
mod kubernetes;
#[path = "fleet/notifications.rs"]
mod notifications;
#[path = "../../control-plane/tests/common/smtp.rs"]
mod smtp;
#[path = "fleet/subscriptions.rs"]
mod subscriptions;

const ADMIN_EMAIL: &str = "fleet-admin@example.org";
const ADMIN_PASSWORD: &str = "fleet-admin-password";

/// A directory removed when dropped, and for a control plane's, its
/// database: None for SQLite in the directory, or a fresh PostgreSQL
/// database when `MINISPOD_TEST_POSTGRES` names a server.
struct TempDir(PathBuf, Option<String>);
impl TempDir {
    fn new() -> TempDir {
        let p = std::env::temp_dir().join(format!("minispod-fleet-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p, None)
    }

    async fn for_server() -> TempDir {
        let mut dir = TempDir::new();
        dir.1 = minispod_control_plane::store::fresh_test_database()
            .await
            .expect("a fresh test database");
        dir
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct ControlPlane {
    port: u16,
    dir: std::sync::Arc<TempDir>,
    ca_hash: String,
    ca_pem: String,
    metrics: Option<std::net::SocketAddr>,
    channel: Channel,
    admin: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Fast fleet timing so tests take seconds: heartbeats every second, two
/// missed close the stream, keepalive 1 s + 1 s.
fn fleet_args(dir: &Path, port: u16) -> ServeArgs {
    let mut a = ServeArgs::with_data_dir(dir);
    a.listen = format!("127.0.0.1:{port}").parse().unwrap();
    a.login.admin_email = Some(ADMIN_EMAIL.into());
    a.login.admin_password = Some(ADMIN_PASSWORD.into());
    a.fleet.heartbeat_interval = Duration::from_secs(1);
    a.fleet.missed_heartbeats = 2;
    a.keepalive_interval = Duration::from_secs(1);
    a.keepalive_timeout = Duration::from_secs(1);
    a.fleet.metrics_flush_interval = Duration::from_millis(200);
    a.login.login_ip_burst = 10_000;
    a.login.login_ip_per_minute = 10_000;
    // Every test agent connects from 127.0.0.1.
    a.transport.max_connections_per_address = 0;
    a.transport.max_handshakes_per_address = 100_000;
    a
}

impl ControlPlane {
    async fn start() -> ControlPlane {
        Self::start_in(
            std::sync::Arc::new(TempDir::for_server().await),
            free_port(),
            |_| {},
        )
        .await
    }

    async fn start_in(
        dir: std::sync::Arc<TempDir>,
        port: u16,
        configure: impl FnOnce(&mut ServeArgs),
    ) -> ControlPlane {
        let mut args = fleet_args(&dir.0, port);
        args.store.database_url = dir.1.clone();
        configure(&mut args);
        let app = Application::build(args).await.expect("build control plane");
        let (ca_hash, ca_pem, metrics) = (app.ca_hash(), app.ca_cert_pem(), app.metrics_addr());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until(async {
            let _ = rx.await;
        }));
        let channel = tls::channel(
            &format!("https://localhost:{port}"),
            tls::client_config(&Trust::CaPem(ca_pem.clone()), None).unwrap(),
        )
        .await
        .unwrap();
        let admin = AuthServiceClient::new(channel.clone())
            .login(pb::LoginRequest {
                email: ADMIN_EMAIL.into(),
                password: ADMIN_PASSWORD.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .access_token;
        ControlPlane {
            port,
            dir,
            ca_hash,
            ca_pem,
            metrics,
            channel,
            admin,
            stop: Some(tx),
            task: Some(task),
        }
    }

    async fn stop(mut self) -> (std::sync::Arc<TempDir>, u16) {
        let _ = self.stop.take().unwrap().send(());
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task.take().unwrap()).await;
        (self.dir.clone(), self.port)
    }

    fn url(&self) -> String {
        format!("https://localhost:{}", self.port)
    }

    fn workers(&self) -> WorkerServiceClient<Channel> {
        WorkerServiceClient::new(self.channel.clone())
    }

    fn authed<T>(&self, msg: T) -> Request<T> {
        authed(msg, &self.admin)
    }

    async fn token(&self, max_uses: i32) -> String {
        self.workers()
            .create_enrollment_token(self.authed(pb::CreateEnrollmentTokenRequest {
                ttl_seconds: 3600,
                max_uses,
                description: "test".into(),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner()
            .token
    }

    async fn list(&self) -> Vec<pb::Worker> {
        self.workers()
            .list_workers(self.authed(pb::ListWorkersRequest::default()))
            .await
            .unwrap()
            .into_inner()
            .workers
    }

    async fn watch(&self) -> Watch {
        let mut stream = self
            .workers()
            .watch_workers(self.authed(pb::WatchWorkersRequest::default()))
            .await
            .unwrap()
            .into_inner();
        // Skip the snapshot.
        loop {
            let e = stream.message().await.unwrap().unwrap();
            if e.r#type == pb::WorkerEventType::SnapshotEnd as i32 {
                break;
            }
        }
        Watch { stream }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// `msg` with the bearer token when there is one.
fn maybe_authed<T>(msg: T, token: Option<&str>) -> Request<T> {
    match token {
        Some(t) => authed(msg, t),
        None => Request::new(msg),
    }
}

fn authed<T>(msg: T, token: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert(
        "authorization",
        MetadataValue::try_from(format!("Bearer {token}")).unwrap(),
    );
    r
}

struct Watch {
    stream: tonic::Streaming<pb::WatchWorkersResponse>,
}

impl Watch {
    /// The first upsert that satisfies `pred`, and when the control plane observed it (Unix ms).
    async fn until(&mut self, what: &str, pred: impl Fn(&pb::Worker) -> bool) -> (pb::Worker, i64) {
        let deadline = Duration::from_secs(20);
        tokio::time::timeout(deadline, async {
            loop {
                let e = self.stream.message().await.unwrap().expect("watch ended");
                if e.r#type == pb::WorkerEventType::Upserted as i32 {
                    let w = e.worker.unwrap();
                    if pred(&w) {
                        let t = e.observed_at.unwrap();
                        return (w, t.seconds * 1000 + i64::from(t.nanos) / 1_000_000);
                    }
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no event within {deadline:?}: {what}"))
    }
}

fn status(w: &pb::Worker) -> WorkerStatus {
    WorkerStatus::try_from(w.status).unwrap()
}

struct Agent {
    child: Child,
}

fn spawn_agent(cp: &ControlPlane, state: &Path, token: &str, extra: &[&str]) -> Agent {
    spawn_agent_to(&[cp.url()], &cp.ca_hash, state, token, extra)
}

/// An agent that knows `servers`, in that order.
fn spawn_agent_to(
    servers: &[String],
    ca_hash: &str,
    state: &Path,
    token: &str,
    extra: &[&str],
) -> Agent {
    let child = agent_command(servers, ca_hash, state, token, extra)
        .spawn()
        .expect("start minispod-agent");
    Agent { child }
}

/// `minispod-agent run` as `spawn_agent_to` starts it, to add to.
fn agent_command(
    servers: &[String],
    ca_hash: &str,
    state: &Path,
    token: &str,
    extra: &[&str],
) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_minispod-agent"));
    cmd.arg("run")
        .args(servers.iter().flat_map(|s| ["--server", s.as_str()]))
        .arg("--state-dir")
        .arg(state)
        .arg("--token")
        .arg(token)
        .arg("--ca-hash")
        .arg(ca_hash)
        .arg("--k3s-config")
        .arg(state.join("k3s.yaml"))
        .arg("--max-backoff")
        .arg("1s")
        .args(extra)
        // Worker names are unique: agents of one test share this host.
        .env(
            "MINISPOD_WORKER_NAME",
            state.file_name().unwrap_or_default(),
        )
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(if std::env::var_os("TEST_LOG").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .kill_on_drop(true);
    cmd
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_enrolls_goes_active_and_kill_9_makes_it_inactive_at_once() {
    let cp = ControlPlane::start().await;
    let mut watch = cp.watch().await;
    let state = TempDir::new();
    let token = cp.token(0).await;
    let mut agent = spawn_agent(&cp, &state.0, &token, &[]);
    let (w, _) = watch
        .until("ACTIVE", |w| status(w) == WorkerStatus::Active)
        .await;
    assert!(w.online && w.ready && w.schedulable);
    assert!(
        !w.name.is_empty() && w.cpu_cores > 0 && w.memory_bytes > 0 && !w.architecture.is_empty()
    );
    assert!(!w.machine_id.is_empty() && !w.os.is_empty() && !w.kernel_version.is_empty());
    assert!(w.certificate_expires_at.is_some());

    // Heartbeats land in the store in batches.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let listed = cp.list().await;
    assert!(
        listed[0].last_heartbeat_at.is_some(),
        "heartbeat metrics were flushed"
    );

    let killed_at = now_ms();
    agent.child.start_kill().unwrap(); // SIGKILL
    let (w2, seen_at) = watch
        .until("INACTIVE", |w| status(w) == WorkerStatus::Inactive)
        .await;
    assert_eq!(w2.id, w.id);
    assert!(!w2.online && !w2.schedulable);
    let latency = seen_at - killed_at;
    println!("kill -9 to INACTIVE (seen by a WatchWorkers subscriber): {latency} ms");
    assert!(latency < 1000, "took {latency} ms");

    // The same machine comes back as the same worker.
    let _agent = spawn_agent(&cp, &state.0, &token, &[]);
    let (w3, _) = watch
        .until("ACTIVE again", |w| status(w) == WorkerStatus::Active)
        .await;
    assert_eq!(w3.id, w.id);
    assert_eq!(cp.list().await.len(), 1, "no duplicate worker");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_that_ask_get_each_workers_heartbeat_figures_once_per_flush() {
    let cp = ControlPlane::start().await;
    let mut plain = cp.watch().await;
    let mut stream = cp
        .workers()
        .watch_workers(cp.authed(pb::WatchWorkersRequest {
            include_metrics: true,
        }))
        .await
        .unwrap()
        .into_inner();
    while stream.message().await.unwrap().unwrap().r#type != pb::WorkerEventType::SnapshotEnd as i32
    {
    }
    let mut watch = Watch { stream };
    let state = TempDir::new();
    let token = cp.token(0).await;
    let _agent = spawn_agent(&cp, &state.0, &token, &[]);
    let (w, _) = watch
        .until("ACTIVE", |w| status(w) == WorkerStatus::Active)
        .await;
    // Heartbeats every second, flushed every 200 ms: the figures arrive as
    // METRICS events carrying only the id and the heartbeat fields.
    let mut updates = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), async {
        while updates.len() < 2 {
            let e = watch.stream.message().await.unwrap().expect("watch ended");
            if e.r#type == pb::WorkerEventType::Metrics as i32 {
                updates.push(e.worker.unwrap());
            }
        }
    })
    .await
    .expect("two METRICS events within 20 s");
    for u in &updates {
        assert_eq!(u.id, w.id);
        assert!(u.memory_used_bytes > 0 && u.last_heartbeat_at.is_some());
        assert!(
            u.name.is_empty() && u.status == 0,
            "a partial worker: {u:?}"
        );
    }
    let at = |u: &pb::Worker| {
        u.last_heartbeat_at.unwrap().seconds * 1000
            + i64::from(u.last_heartbeat_at.unwrap().nanos) / 1_000_000
    };
    assert!(
        at(&updates[1]) > at(&updates[0]),
        "each event is a newer heartbeat"
    );

    // A watcher that did not ask sees only status changes, however many
    // flushes pass.
    let until = tokio::time::Instant::now() + Duration::from_millis(1500);
    while let Ok(e) = tokio::time::timeout_at(until, plain.stream.message()).await {
        let e = e.unwrap().expect("watch ended");
        assert_ne!(
            e.r#type,
            pb::WorkerEventType::Metrics as i32,
            "METRICS without include_metrics"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_the_stream_and_the_worker_goes_inactive() {
    let cp = ControlPlane::start().await;
    let mut watch = cp.watch().await;
    let state = TempDir::new();
    let agent = spawn_agent(&cp, &state.0, &cp.token(1).await, &[]);
    watch
        .until("ACTIVE", |w| status(w) == WorkerStatus::Active)
        .await;
    let pid = agent.child.id().unwrap().to_string();
    let sent = Instant::now();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    watch
        .until("INACTIVE", |w| status(w) == WorkerStatus::Inactive)
        .await;
    assert!(sent.elapsed() < Duration::from_secs(3));
    let mut child = agent.child;
    let exit = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "{exit:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_reconnect_by_themselves_after_a_control_plane_restart() {
    let cp = ControlPlane::start().await;
    let token = cp.token(0).await;
    let (s1, s2) = (TempDir::new(), TempDir::new());
    let _a1 = spawn_agent(&cp, &s1.0, &token, &[]);
    // A second machine: its own generated machine id.
    std::fs::create_dir_all(&s2.0).unwrap();
    let _a2 = spawn_agent(&cp, &s2.0, &token, &["--machine-id", "second-machine"]);
    let mut watch = cp.watch().await;
    let mut active = std::collections::HashSet::new();
    while active.len() < 2 {
        let (w, _) = watch
            .until("two ACTIVE", |w| status(w) == WorkerStatus::Active)
            .await;
        active.insert(w.id);
    }
    drop(watch);
    let (dir, port) = cp.stop().await;

    let cp = ControlPlane::start_in(dir, port, |_| {}).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let workers = cp.list().await;
        if workers.len() == 2 && workers.iter().all(|w| status(w) == WorkerStatus::Active) {
            let ids: std::collections::HashSet<_> = workers.into_iter().map(|w| w.id).collect();
            assert_eq!(ids, active, "the same workers, no duplicates");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "agents did not come back: {workers:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn raw_enroll(
    cp: &ControlPlane,
    token: &str,
    machine_id: &str,
) -> Result<pb::EnrollResponse, tonic::Status> {
    let (_key, csr) = minispod_agent::enroll::key_and_csr("raw").unwrap();
    AgentServiceClient::new(cp.channel.clone())
        .enroll(pb::EnrollRequest {
            token: token.into(),
            csr_pem: csr,
            facts: Some(pb::MachineFacts {
                hostname: format!("host-{machine_id}"),
                machine_id: machine_id.into(),
                ..Default::default()
            }),
        })
        .await
        .map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_enrollment_tokens_are_refused_and_nothing_is_written() {
    let cp = ControlPlane::start().await;
    let once = cp.token(1).await;
    raw_enroll(&cp, &once, "m1").await.expect("first use");
    let used_up = raw_enroll(&cp, &once, "m2").await.unwrap_err();
    assert_eq!(used_up.code(), Code::Unauthenticated);
    assert!(
        used_up.message().contains("used up"),
        "{}",
        used_up.message()
    );

    let wrong = format!("{}.{}", once.split('.').next().unwrap(), "x".repeat(43));
    assert_eq!(
        raw_enroll(&cp, &wrong, "m3").await.unwrap_err().code(),
        Code::Unauthenticated
    );
    assert_eq!(
        raw_enroll(&cp, "garbage", "m3").await.unwrap_err().code(),
        Code::Unauthenticated
    );

    let revoked = cp.token(0).await;
    let id = revoked.split('.').next().unwrap().to_owned();
    cp.workers()
        .revoke_enrollment_token(cp.authed(pb::RevokeEnrollmentTokenRequest { id: id.clone() }))
        .await
        .unwrap();
    let e = raw_enroll(&cp, &revoked, "m4").await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(e.message().contains("revoked"));

    // Expiry: age a token in the store (the API's shortest TTL is a minute).
    let expired = cp.token(0).await;
    let db = Db::connect(cp.dir.1.as_deref(), &cp.dir.0, &StoreOptions::default())
        .await
        .unwrap();
    let mut tx = db.begin().await.unwrap();
    let sql = "UPDATE enrollment_tokens SET expires_at = 1 WHERE id = $1";
    let expired_id = expired.split('.').next().unwrap();
    let aged = match &mut tx {
        Tx::Sqlite(t, _) => sqlx::query(sql)
            .bind(expired_id)
            .execute(&mut **t)
            .await
            .map(|r| r.rows_affected()),
        Tx::Postgres(t) => sqlx::query(sql)
            .bind(expired_id)
            .execute(&mut **t)
            .await
            .map(|r| r.rows_affected()),
    };
    assert_eq!(aged.unwrap(), 1);
    tx.commit().await.unwrap();
    db.close().await;
    let e = raw_enroll(&cp, &expired, "m5").await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(e.message().contains("expired"));

    let workers = cp.list().await;
    assert_eq!(
        workers.len(),
        1,
        "only the one good enrollment wrote a worker"
    );
    let tokens = cp
        .workers()
        .list_enrollment_tokens(cp.authed(pb::ListEnrollmentTokensRequest {
            include_inactive: true,
        }))
        .await
        .unwrap()
        .into_inner()
        .enrollment_tokens;
    let revoked_row = tokens.iter().find(|t| t.id == id).unwrap();
    assert_eq!((revoked_row.uses, revoked_row.revoked), (0, true));
    let active = cp
        .workers()
        .list_enrollment_tokens(cp.authed(pb::ListEnrollmentTokensRequest {
            include_inactive: false,
        }))
        .await
        .unwrap()
        .into_inner()
        .enrollment_tokens;
    assert!(
        active.is_empty(),
        "used-up, revoked and expired tokens are not listed as active: {active:?}"
    );

    // Invalid CSR and facts are INVALID_ARGUMENT.
    let good = cp.token(0).await;
    let e = AgentServiceClient::new(cp.channel.clone())
        .enroll(pb::EnrollRequest {
            token: good,
            csr_pem: "not a csr".into(),
            facts: Some(pb::MachineFacts {
                hostname: "h".into(),
                machine_id: "../../x".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
}

async fn mtls_channel(
    cp: &ControlPlane,
    cert_pem: &str,
    key_pem: &Secret,
) -> anyhow::Result<Channel> {
    let id = ClientIdentity {
        cert_pem: cert_pem.into(),
        key_pem: key_pem.clone(),
    };
    tls::channel(
        &cp.url(),
        tls::client_config(&Trust::CaPem(cp.ca_pem.clone()), Some(&id))?,
    )
    .await
}

async fn open_stream(
    channel: Channel,
    machine_id: &str,
) -> Result<tonic::Streaming<pb::ConnectResponse>, tonic::Status> {
    let hello = pb::ConnectRequest {
        message: Some(pb::connect_request::Message::Hello(pb::Hello {
            facts: Some(pb::MachineFacts {
                hostname: "h".into(),
                machine_id: machine_id.into(),
                ..Default::default()
            }),
            ready: true,
            k3s_join_error: String::new(),
            kubernetes_node_name: String::new(),
        })),
    };
    let mut s = AgentServiceClient::new(channel)
        .connect(tokio_stream::iter(vec![hello]).chain(tokio_stream::pending()))
        .await?
        .into_inner();
    // The welcome (or the refusal) comes first.
    match s.message().await? {
        Some(_) => Ok(s),
        None => Err(tonic::Status::unavailable("closed")),
    }
}

use tokio_stream::StreamExt as _;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_need_a_current_certificate_from_this_ca() {
    let cp = ControlPlane::start().await;
    let (key, csr) = minispod_agent::enroll::key_and_csr("raw").unwrap();
    let token = cp.token(0).await;
    let enrolled = AgentServiceClient::new(cp.channel.clone())
        .enroll(pb::EnrollRequest {
            token: token.clone(),
            csr_pem: csr,
            facts: Some(pb::MachineFacts {
                hostname: "h".into(),
                machine_id: "raw-1".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();

    // No certificate.
    let e = open_stream(cp.channel.clone(), "raw-1").await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    let e = AgentServiceClient::new(cp.channel.clone())
        .renew_certificate(pb::RenewCertificateRequest {
            csr_pem: "x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);

    // The right certificate, but the hello claims another machine.
    let ch = mtls_channel(&cp, &enrolled.certificate_pem, &key)
        .await
        .unwrap();
    let e = open_stream(ch.clone(), "someone-else").await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);

    // The right certificate works; a second stream replaces the first.
    let mut first = open_stream(ch.clone(), "raw-1")
        .await
        .expect("stream with a valid certificate");
    let _second = open_stream(ch.clone(), "raw-1")
        .await
        .expect("second stream");
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(_)) = first.message().await {}
    })
    .await;
    assert!(ended.is_ok(), "the replaced stream was closed");

    // A certificate from another control plane's CA fails the handshake.
    let other = ControlPlane::start().await;
    let (okey, ocsr) = minispod_agent::enroll::key_and_csr("other").unwrap();
    let ocert = AgentServiceClient::new(other.channel.clone())
        .enroll(pb::EnrollRequest {
            token: other.token(0).await,
            csr_pem: ocsr,
            facts: Some(pb::MachineFacts {
                hostname: "o".into(),
                machine_id: "raw-1".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .certificate_pem;
    let refused = match mtls_channel(&cp, &ocert, &okey).await {
        Err(_) => true,
        Ok(ch) => open_stream(ch, "raw-1").await.is_err(),
    };
    assert!(refused, "a certificate from another CA was accepted");

    // Renewal over mTLS replaces the certificate; the old one is void.
    let (nkey, ncsr) = minispod_agent::enroll::key_and_csr("raw").unwrap();
    let renewed = AgentServiceClient::new(ch.clone())
        .renew_certificate(pb::RenewCertificateRequest { csr_pem: ncsr })
        .await
        .unwrap()
        .into_inner();
    let old = mtls_channel(&cp, &enrolled.certificate_pem, &key)
        .await
        .unwrap();
    assert_eq!(
        open_stream(old, "raw-1").await.unwrap_err().code(),
        Code::PermissionDenied
    );
    let new = mtls_channel(&cp, &renewed.certificate_pem, &nkey)
        .await
        .unwrap();
    open_stream(new.clone(), "raw-1")
        .await
        .expect("renewed certificate works");

    // A deleted worker's certificate is refused.
    cp.workers()
        .delete_worker(cp.authed(pb::DeleteWorkerRequest {
            id: enrolled.worker_id.clone(),
        }))
        .await
        .unwrap();
    assert_eq!(
        open_stream(new, "raw-1").await.unwrap_err().code(),
        Code::PermissionDenied
    );
    assert!(cp.list().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_administration_needs_an_administrator() {
    let cp = ControlPlane::start().await;
    let user = AuthServiceClient::new(cp.channel.clone())
        .register(pb::RegisterRequest {
            email: "u@example.org".into(),
            password: "user-password".into(),
            name: "U".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .access_token;
    let mut w = cp.workers();
    for token in [None, Some(user.as_str())] {
        let want = if token.is_some() {
            Code::PermissionDenied
        } else {
            Code::Unauthenticated
        };
        assert_eq!(
            w.list_workers(maybe_authed(pb::ListWorkersRequest::default(), token))
                .await
                .unwrap_err()
                .code(),
            want
        );
        assert_eq!(
            w.create_enrollment_token(maybe_authed(
                pb::CreateEnrollmentTokenRequest::default(),
                token
            ))
            .await
            .unwrap_err()
            .code(),
            want
        );
        assert_eq!(
            w.get_worker_stats(maybe_authed(pb::GetWorkerStatsRequest {}, token))
                .await
                .unwrap_err()
                .code(),
            want
        );
        assert_eq!(
            w.watch_workers(maybe_authed(pb::WatchWorkersRequest::default(), token))
                .await
                .unwrap_err()
                .code(),
            want
        );
        assert_eq!(
            w.delete_worker(maybe_authed(
                pb::DeleteWorkerRequest { id: "x".into() },
                token
            ))
            .await
            .unwrap_err()
            .code(),
            want
        );
    }
    let tokens = w
        .list_enrollment_tokens(cp.authed(pb::ListEnrollmentTokensRequest {
            include_inactive: true,
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(tokens.enrollment_tokens.is_empty(), "nothing was written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cordon_maintenance_lookups_and_stats_behave() {
    let cp = ControlPlane::start().await;
    let mut watch = cp.watch().await;
    let state = TempDir::new();
    let token = cp.token(0).await;
    let mut agent = spawn_agent(&cp, &state.0, &token, &[]);
    let (w, _) = watch
        .until("ACTIVE", |w| status(w) == WorkerStatus::Active)
        .await;
    let mut api = cp.workers();

    let by_id = api
        .get_worker(cp.authed(pb::GetWorkerRequest {
            lookup: Some(pb::get_worker_request::Lookup::Id(w.id.clone())),
        }))
        .await
        .unwrap()
        .into_inner()
        .worker
        .unwrap();
    let by_name = api
        .get_worker(cp.authed(pb::GetWorkerRequest {
            lookup: Some(pb::get_worker_request::Lookup::Name(w.name.clone())),
        }))
        .await
        .unwrap()
        .into_inner()
        .worker
        .unwrap();
    assert_eq!(
        (by_id.id.as_str(), by_name.id.as_str()),
        (w.id.as_str(), w.id.as_str())
    );
    let missing = api
        .get_worker(cp.authed(pb::GetWorkerRequest {
            lookup: Some(pb::get_worker_request::Lookup::Name("nope".into())),
        }))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);

    // Cordon: still ACTIVE, no longer schedulable.
    let c = api
        .set_worker_schedulable(cp.authed(pb::SetWorkerSchedulableRequest {
            id: w.id.clone(),
            schedulable: false,
        }))
        .await
        .unwrap()
        .into_inner()
        .worker
        .unwrap();
    assert!(c.cordoned && !c.schedulable && status(&c) == WorkerStatus::Active);
    watch.until("cordoned", |x| x.cordoned).await;
    let unsched = api
        .list_workers(cp.authed(pb::ListWorkersRequest {
            schedulable: Some(false),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(unsched.total_size, 1);
    api.set_worker_schedulable(cp.authed(pb::SetWorkerSchedulableRequest {
        id: w.id.clone(),
        schedulable: true,
    }))
    .await
    .unwrap();

    // Labels, taints, notes.
    let u = api
        .update_worker(cp.authed(pb::UpdateWorkerRequest {
            id: w.id.clone(),
            labels: Some(pb::LabelMap {
                labels: [("zone".to_string(), "eu-1".to_string())].into(),
            }),
            taints: Some(pb::TaintList {
                taints: vec![pb::Taint {
                    key: "dedicated".into(),
                    value: "db".into(),
                    effect: "NoSchedule".into(),
                }],
            }),
            notes: Some("rack 4".into()),
        }))
        .await
        .unwrap()
        .into_inner()
        .worker
        .unwrap();
    assert_eq!(
        (u.labels["zone"].as_str(), u.taints.len(), u.notes.as_str()),
        ("eu-1", 1, "rack 4")
    );
    let bad = api
        .update_worker(cp.authed(pb::UpdateWorkerRequest {
            id: w.id.clone(),
            taints: Some(pb::TaintList {
                taints: vec![pb::Taint {
                    key: "k".into(),
                    value: "".into(),
                    effect: "Sometimes".into(),
                }],
            }),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);

    // Maintenance survives a reconnect.
    let m = api
        .set_worker_status(cp.authed(pb::SetWorkerStatusRequest {
            id: w.id.clone(),
            status: WorkerStatus::Maintenance as i32,
        }))
        .await
        .unwrap()
        .into_inner()
        .worker
        .unwrap();
    assert_eq!(status(&m), WorkerStatus::Maintenance);
    agent.child.start_kill().unwrap();
    watch
        .until("offline in maintenance", |x| {
            !x.online && status(x) == WorkerStatus::Maintenance
        })
        .await;
    let _agent = spawn_agent(&cp, &state.0, &token, &[]);
    watch
        .until("online in maintenance", |x| {
            x.online && status(x) == WorkerStatus::Maintenance
        })
        .await;
    api.set_worker_status(cp.authed(pb::SetWorkerStatusRequest {
        id: w.id.clone(),
        status: WorkerStatus::Active as i32,
    }))
    .await
    .unwrap();
    watch
        .until("ACTIVE after maintenance", |x| {
            status(x) == WorkerStatus::Active
        })
        .await;
    let bad = api
        .set_worker_status(cp.authed(pb::SetWorkerStatusRequest {
            id: w.id.clone(),
            status: WorkerStatus::Inactive as i32,
        }))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);

    // Let a heartbeat arrive and be flushed.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let stats = api
        .get_worker_stats(cp.authed(pb::GetWorkerStatsRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (stats.total, stats.online, stats.offline, stats.schedulable),
        (1, 1, 0, 1)
    );
    let active = stats
        .by_status
        .iter()
        .find(|s| s.status == WorkerStatus::Active as i32)
        .unwrap();
    assert_eq!(active.count, 1);
    assert_eq!(
        stats.capacity.unwrap().cpu_millicores,
        i64::from(w.cpu_cores) * 1000
    );
    assert!(stats.memory_utilization_percent > 0.0 && stats.memory_utilization_percent <= 100.0);

    let filtered = api
        .list_workers(cp.authed(pb::ListWorkersRequest {
            status: WorkerStatus::Inactive as i32,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(filtered.total_size, 0);
    let found = api
        .list_workers(cp.authed(pb::ListWorkersRequest {
            search: w.name.to_uppercase(),
            online: Some(true),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.total_size, 1);
}

/// The total of a one-worker page of `req`, and that page's next token.
async fn total_of(cp: &ControlPlane, req: pb::ListWorkersRequest) -> (i64, String) {
    let r = cp
        .workers()
        .list_workers(cp.authed(pb::ListWorkersRequest {
            page_size: 1,
            ..req
        }))
        .await
        .unwrap()
        .into_inner();
    (r.total_size, r.next_page_token)
}

fn with_status(s: WorkerStatus) -> pb::ListWorkersRequest {
    pb::ListWorkersRequest {
        status: s as i32,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_totals_follow_every_change_while_heartbeats_flush() {
    // Totals are counted once and kept until a write may change them; pages
    // of one worker over four make every total a count, not the page length.
    let cp = ControlPlane::start().await;
    let token = cp.token(0).await;
    let swarm = minispod_agent::swarm::Swarm::start(minispod_agent::swarm::SwarmConfig {
        servers: vec![cp.url()],
        token: token.into(),
        trust: Trust::CaPem(cp.ca_pem.clone()),
        agents: 4,
        first_index: 0,
        state_root: cp.dir.0.join("agents"),
        enroll_concurrency: 4,
        max_backoff: Duration::from_secs(1),
    })
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while total_of(&cp, with_status(WorkerStatus::Active)).await.0 < 4 {
        assert!(Instant::now() < deadline, "not all 4 ACTIVE");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Asked again across several heartbeat flushes: still exact, and paging
    // on gives the other workers under the same total.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(total_of(&cp, with_status(WorkerStatus::Active)).await.0, 4);
    }
    let mut seen = std::collections::HashSet::new();
    let mut next = String::new();
    loop {
        let r = cp
            .workers()
            .list_workers(cp.authed(pb::ListWorkersRequest {
                page_size: 1,
                page_token: next,
                search: "SWARM-".into(),
                online: Some(true),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.total_size, 4);
        seen.extend(r.workers.iter().map(|w| w.id.clone()));
        next = r.next_page_token;
        if next.is_empty() {
            break;
        }
    }
    assert_eq!(seen.len(), 4, "every worker once over the pages");

    let ids: Vec<String> = swarm.agents.iter().map(|a| a.worker_id.clone()).collect();
    // Each change shows in the very next total, with no waiting.
    cp.workers()
        .set_worker_status(cp.authed(pb::SetWorkerStatusRequest {
            id: ids[0].clone(),
            status: WorkerStatus::Maintenance as i32,
        }))
        .await
        .unwrap();
    assert_eq!(total_of(&cp, with_status(WorkerStatus::Active)).await.0, 3);
    assert_eq!(
        total_of(&cp, with_status(WorkerStatus::Maintenance))
            .await
            .0,
        1
    );
    let schedulable = || pb::ListWorkersRequest {
        schedulable: Some(true),
        ..Default::default()
    };
    assert_eq!(total_of(&cp, schedulable()).await.0, 3);
    cp.workers()
        .set_worker_schedulable(cp.authed(pb::SetWorkerSchedulableRequest {
            id: ids[1].clone(),
            schedulable: false,
        }))
        .await
        .unwrap();
    assert_eq!(total_of(&cp, schedulable()).await.0, 2);
    cp.workers()
        .update_worker(cp.authed(pb::UpdateWorkerRequest {
            id: ids[2].clone(),
            notes: Some("notes are not filtered on".into()),
            ..Default::default()
        }))
        .await
        .unwrap();
    assert_eq!(total_of(&cp, schedulable()).await.0, 2);

    // The fleet drops: once GetWorker shows each offline, so do the totals.
    swarm.stop().await;
    for id in &ids {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let w = cp
                .workers()
                .get_worker(cp.authed(pb::GetWorkerRequest {
                    lookup: Some(pb::get_worker_request::Lookup::Id(id.clone())),
                }))
                .await
                .unwrap()
                .into_inner()
                .worker
                .unwrap();
            if !w.online {
                break;
            }
            assert!(Instant::now() < deadline, "{id} still online");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_eq!(total_of(&cp, with_status(WorkerStatus::Active)).await.0, 0);
    assert_eq!(
        total_of(&cp, with_status(WorkerStatus::Inactive)).await.0,
        3
    );
    let online = pb::ListWorkersRequest {
        online: Some(true),
        ..Default::default()
    };
    assert_eq!(total_of(&cp, online).await.0, 0);
    assert_eq!(total_of(&cp, schedulable()).await.0, 0);
    assert_eq!(total_of(&cp, Default::default()).await.0, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_k3s_join_hook_is_reported_and_the_worker_is_not_ready() {
    let dir = std::sync::Arc::new(TempDir::for_server().await);
    let k3s_token = dir.0.join("k3s-token");
    std::fs::write(&k3s_token, "K10secret::server:abc\n").unwrap();
    let cp = ControlPlane::start_in(dir.clone(), free_port(), |a| {
        a.fleet.k3s_server_url = "https://k3s.example.org:6443".into();
        a.fleet.k3s_token_file = Some(k3s_token.clone());
    })
    .await;
    let mut watch = cp.watch().await;
    let state = TempDir::new();
    let _agent = spawn_agent(
        &cp,
        &state.0,
        &cp.token(0).await,
        &["--k3s-join-command", "echo no k3s here >&2; exit 1"],
    );
    let (w, _) = watch
        .until("NOT_READY", |w| status(w) == WorkerStatus::NotReady)
        .await;
    assert!(w.online && !w.ready && !w.schedulable);
    assert!(
        w.k3s_join_error.contains("no k3s here"),
        "{}",
        w.k3s_join_error
    );
    let written = std::fs::read_to_string(state.0.join("k3s.yaml")).unwrap();
    assert!(
        written.contains("https://k3s.example.org:6443")
            && written.contains("K10secret::server:abc")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_token_from_a_file_enrolls_and_enrollment_is_rate_limited() {
    let dir = std::sync::Arc::new(TempDir::for_server().await);
    let token_file = dir.0.join("enroll.token");
    std::fs::write(&token_file, "static-token-for-unattended-installs\n").unwrap();
    let cp = ControlPlane::start_in(dir.clone(), free_port(), |a| {
        a.fleet.enrollment_token_file = Some(token_file.clone());
        // Two machines share it here; by default a static token admits one.
        a.fleet.enrollment_token_max_uses = 2;
        a.fleet.enroll_burst = 3;
        a.fleet.enroll_per_second = 1;
    })
    .await;
    raw_enroll(&cp, "static-token-for-unattended-installs", "s1")
        .await
        .expect("static token");
    raw_enroll(&cp, "static-token-for-unattended-installs", "s2")
        .await
        .expect("the static token's second use");
    let _ = raw_enroll(&cp, "wrong-static-token", "s3").await;
    let limited = raw_enroll(&cp, "static-token-for-unattended-installs", "s4")
        .await
        .unwrap_err();
    assert_eq!(limited.code(), Code::ResourceExhausted);
    assert_eq!(cp.list().await.len(), 2);
}

/// A TCP relay the test controls: forwards bytes until frozen, then holds
/// both connections open and silent — a partition that closes nothing.
async fn relay(upstream: u16) -> (u16, tokio::sync::watch::Sender<bool>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (frozen_tx, frozen_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        while let Ok((down, _)) = listener.accept().await {
            let Ok(up) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await else {
                continue;
            };
            let (dr, dw) = down.into_split();
            let (ur, uw) = up.into_split();
            for (mut r, mut w, mut frozen) in [
                (
                    Box::new(dr) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
                    Box::new(uw) as Box<dyn tokio::io::AsyncWrite + Unpin + Send>,
                    frozen_rx.clone(),
                ),
                (Box::new(ur), Box::new(dw), frozen_rx.clone()),
            ] {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        let n = tokio::select! {
                            n = r.read(&mut buf) => n.unwrap_or(0),
                            _ = frozen.wait_for(|f| *f) => 0,
                        };
                        if *frozen.borrow() {
                            // Hold both halves open, pass nothing.
                            std::future::pending::<()>().await;
                        }
                        if n == 0 || w.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        }
    });
    (port, frozen_tx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_partition_is_caught_within_the_keepalive_bound() {
    let cp = ControlPlane::start().await;
    let mut watch = cp.watch().await;
    let (relay_port, freeze) = relay(cp.port).await;
    let state = TempDir::new();
    let token = cp.token(0).await;
    let _agent = tokio::process::Command::new(env!("CARGO_BIN_EXE_minispod-agent"))
        .args([
            "run",
            "--server",
            &format!("https://localhost:{relay_port}"),
            "--token",
            &token,
            "--ca-hash",
            &cp.ca_hash,
        ])
        .arg("--state-dir")
        .arg(&state.0)
        .arg("--k3s-config")
        .arg(state.0.join("k3s.yaml"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    watch
        .until("ACTIVE through the relay", |w| {
            status(w) == WorkerStatus::Active
        })
        .await;
    let frozen_at = now_ms();
    freeze.send(true).unwrap();
    let (_, seen_at) = watch
        .until("INACTIVE after the partition", |w| {
            status(w) == WorkerStatus::Inactive
        })
        .await;
    let took = seen_at - frozen_at;
    // Bound: keepalive 1 s ping + 1 s timeout, or 2 missed 1 s heartbeats.
    println!("silent partition to INACTIVE: {took} ms (bound 2000 ms + scheduling)");
    assert!(took <= 3500, "took {took} ms");
}

/// GET /metrics over plain HTTP; the value of the first sample named `name`
/// (with its labels, if any, as written).
async fn scrape(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    c.read_to_string(&mut body).await.unwrap();
    assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
    assert!(
        body.contains("Content-Type: text/plain; version=0.0.4"),
        "{body}"
    );
    body
}

fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no sample {name} in:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_as_an_agent_connects_and_leaves_and_the_agent_notifies_systemd() {
    let cp = ControlPlane::start_in(
        std::sync::Arc::new(TempDir::for_server().await),
        free_port(),
        |a| {
            a.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
        },
    )
    .await;
    let maddr = cp.metrics.expect("metrics address");
    let before = scrape(maddr).await;
    assert_eq!(sample(&before, "minispod_streams_open"), 0.0);
    assert_eq!(sample(&before, "minispod_workers_online"), 0.0);

    // The agent with a notify socket, as systemd's Type=notify gives it.
    let state = TempDir::new();
    let notify_path = state.0.join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let agent_metrics = free_port();
    let mut watch = cp.watch().await;
    let token = cp.token(0).await;
    let mut agent = tokio::process::Command::new(env!("CARGO_BIN_EXE_minispod-agent"))
        .args([
            "run",
            "--server",
            &cp.url(),
            "--token",
            &token,
            "--ca-hash",
            &cp.ca_hash,
        ])
        .arg("--state-dir")
        .arg(&state.0)
        .arg("--k3s-config")
        .arg(state.0.join("k3s.yaml"))
        .args(["--metrics-listen", &format!("127.0.0.1:{agent_metrics}")])
        .env("NOTIFY_SOCKET", &notify_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let ready = tokio::task::spawn_blocking(move || {
        let mut buf = [0u8; 256];
        let n = notify.recv(&mut buf).expect("READY=1 within 20 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    })
    .await
    .unwrap();
    assert_eq!(ready, "READY=1");
    watch
        .until("ACTIVE", |w| status(w) == WorkerStatus::Active)
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let during = scrape(maddr).await;
    assert_eq!(sample(&during, "minispod_streams_open"), 1.0);
    assert_eq!(sample(&during, "minispod_workers_online"), 1.0);
    assert_eq!(
        sample(
            &during,
            "minispod_workers{status=\"ACTIVE\",online=\"true\"}"
        ),
        1.0
    );
    assert_eq!(sample(&during, "minispod_enrollments_total"), 1.0);
    assert!(sample(&during, "minispod_heartbeats_received_total") >= 1.0);
    assert_eq!(
        sample(
            &during,
            "minispod_rpc_requests_total{method=\"/minispod.v1.AgentService/Enroll\",code=\"OK\"}"
        ),
        1.0
    );
    assert!(sample(&during, "minispod_store_flush_batch_workers_count") >= 1.0);
    let agent_text = scrape(format!("127.0.0.1:{agent_metrics}").parse().unwrap()).await;
    assert_eq!(sample(&agent_text, "minispod_agent_stream_up"), 1.0);
    assert!(sample(&agent_text, "minispod_agent_heartbeats_sent_total") >= 1.0);

    agent.start_kill().unwrap();
    watch
        .until("INACTIVE", |w| status(w) == WorkerStatus::Inactive)
        .await;
    let after = scrape(maddr).await;
    assert_eq!(sample(&after, "minispod_streams_open"), 0.0);
    assert_eq!(sample(&after, "minispod_workers_online"), 0.0);
    assert_eq!(sample(&after, "minispod_streams_closed_total"), 1.0);
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_is_refused_with_the_right_codes_and_the_server_keeps_serving() {
    let cp = ControlPlane::start().await;
    let rss_before = rss_kib();

    // A flood of Connect attempts without certificates.
    let attempts: Vec<_> = (0..300)
        .map(|_| {
            let ch = cp.channel.clone();
            tokio::spawn(async move { open_stream(ch, "flood").await.map(|_| ()) })
        })
        .collect();
    for a in attempts {
        assert_eq!(a.await.unwrap().unwrap_err().code(), Code::Unauthenticated);
    }

    // Oversized, huge repeated fields, unknown enum values.
    let huge = AgentServiceClient::new(cp.channel.clone())
        .enroll(pb::EnrollRequest {
            token: "t".into(),
            csr_pem: "x".repeat(2 << 20),
            facts: None,
        })
        .await
        .unwrap_err();
    assert_eq!(huge.code(), Code::OutOfRange);
    let big_csr = AgentServiceClient::new(cp.channel.clone())
        .enroll(pb::EnrollRequest {
            token: "t".into(),
            // Within AgentService's 64 KiB message limit, over the CSR's 16 KiB.
            csr_pem: "x".repeat(30_000),
            facts: None,
        })
        .await
        .unwrap_err();
    assert_eq!(big_csr.code(), Code::InvalidArgument);
    let mut users =
        minispod_proto::v1::user_service_client::UserServiceClient::new(cp.channel.clone());
    let many = users
        .bulk_update_users(cp.authed(pb::BulkUpdateUsersRequest {
            ids: (0..5000).map(|i| format!("id-{i}")).collect(),
            action: pb::BulkUserAction::Delete as i32,
        }))
        .await
        .unwrap_err();
    assert_eq!(many.code(), Code::InvalidArgument);
    let mut catalog =
        minispod_proto::v1::catalog_service_client::CatalogServiceClient::new(cp.channel.clone());
    let tags = catalog
        .list_services(pb::ListServicesRequest {
            tags: (0..1000).map(|i| format!("t{i}")).collect(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(tags.code(), Code::InvalidArgument);
    for status in [99, -1] {
        let e = cp
            .workers()
            .list_workers(cp.authed(pb::ListWorkersRequest {
                status,
                ..Default::default()
            }))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
    }

    // A stream that sends nothing is closed after the heartbeat deadline and
    // its worker never goes online.
    let (key, csr) = minispod_agent::enroll::key_and_csr("quiet").unwrap();
    let enrolled = AgentServiceClient::new(cp.channel.clone())
        .enroll(pb::EnrollRequest {
            token: cp.token(0).await,
            csr_pem: csr,
            facts: Some(pb::MachineFacts {
                hostname: "quiet".into(),
                machine_id: "quiet-1".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let ch = mtls_channel(&cp, &enrolled.certificate_pem, &key)
        .await
        .unwrap();
    let started = Instant::now();
    let mut silent = AgentServiceClient::new(ch)
        .connect(tokio_stream::pending::<pb::ConnectRequest>())
        .await
        .unwrap()
        .into_inner();
    let end = tokio::time::timeout(Duration::from_secs(10), silent.message())
        .await
        .expect("closed within 10 s");
    assert!(matches!(end, Ok(None) | Err(_)), "{end:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "closed after the 2 s deadline, not before"
    );
    let quiet = cp
        .list()
        .await
        .into_iter()
        .find(|w| w.id == enrolled.worker_id)
        .unwrap();
    assert_eq!(status(&quiet), WorkerStatus::Pending);

    // Still serving, memory bounded.
    assert_eq!(cp.list().await.len(), 1);
    let grown_mib = rss_kib().saturating_sub(rss_before) / 1024;
    println!("RSS growth over the hostile run: {grown_mib} MiB");
    assert!(grown_mib < 256, "memory grew by {grown_mib} MiB");
}

/// The control plane binary, built beside the test binaries by
/// `cargo test --workspace`.
fn control_plane_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("minispod-control-plane");
    assert!(
        bin.exists(),
        "{} is missing: run the workspace's tests (cargo test --workspace)",
        bin.display()
    );
    bin
}

fn spawn_control_plane_process(
    data: &Path,
    database_url: Option<&str>,
    port: u16,
) -> tokio::process::Child {
    spawn_control_plane_process_with(data, database_url, port, &[])
}

fn spawn_control_plane_process_with(
    data: &Path,
    database_url: Option<&str>,
    port: u16,
    extra: &[&str],
) -> tokio::process::Child {
    tokio::process::Command::new(control_plane_bin())
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(data)
        .args(database_url.iter().flat_map(|url| ["--database-url", url]))
        .args([
            "--admin-email",
            ADMIN_EMAIL,
            "--admin-password",
            ADMIN_PASSWORD,
        ])
        .args([
            "--heartbeat-interval",
            "1s",
            "--metrics-flush-interval",
            "100ms",
        ])
        .args(["--enroll-burst", "100000", "--enroll-per-second", "100000"])
        // Every test agent connects from 127.0.0.1.
        .args([
            "--max-connections-per-address",
            "0",
            "--max-handshakes-per-address",
            "100000",
        ])
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

async fn admin_channel(port: u16, data: &Path) -> (Channel, String) {
    for _ in 0..200 {
        if let Ok(pem) = std::fs::read_to_string(data.join("pki/ca.crt"))
            && let Ok(ch) = tls::channel(
                &format!("https://localhost:{port}"),
                tls::client_config(&Trust::CaPem(pem), None).unwrap(),
            )
            .await
            && let Ok(r) = AuthServiceClient::new(ch.clone())
                .login(pb::LoginRequest {
                    email: ADMIN_EMAIL.into(),
                    password: ADMIN_PASSWORD.into(),
                    ..Default::default()
                })
                .await
        {
            return (ch, r.into_inner().access_token);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the control plane did not come up");
}

async fn fleet_counts(ch: &Channel, admin: &str) -> (usize, usize) {
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let page = WorkerServiceClient::new(ch.clone())
            .list_workers(authed(
                pb::ListWorkersRequest {
                    page_size: 500,
                    page_token: token,
                    ..Default::default()
                },
                admin,
            ))
            .await
            .unwrap()
            .into_inner();
        all.extend(page.workers);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let active = all
        .iter()
        .filter(|w| status(w) == WorkerStatus::Active)
        .count();
    (all.len(), active)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_control_plane_under_500_agents_loses_nothing() {
    const N: usize = 500;
    minispod_agent::swarm::raise_fd_limit();
    let dir = TempDir::for_server().await;
    let data = dir.0.join("cp");
    let port = free_port();
    let mut cp = spawn_control_plane_process(&data, dir.1.as_deref(), port);
    let (ch, admin) = admin_channel(port, &data).await;
    let token = WorkerServiceClient::new(ch.clone())
        .create_enrollment_token(authed(
            pb::CreateEnrollmentTokenRequest {
                ttl_seconds: 3600,
                max_uses: 0,
                description: "swarm".into(),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .token;
    let pem = std::fs::read_to_string(data.join("pki/ca.crt")).unwrap();
    let swarm = minispod_agent::swarm::Swarm::start(minispod_agent::swarm::SwarmConfig {
        servers: vec![format!("https://localhost:{port}")],
        token: token.into(),
        trust: Trust::CaPem(pem),
        agents: N,
        first_index: 0,
        state_root: dir.0.join("agents"),
        enroll_concurrency: 32,
        max_backoff: Duration::from_secs(4),
    })
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while fleet_counts(&ch, &admin).await.1 < N {
        assert!(Instant::now() < deadline, "not all {N} ACTIVE");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Heavy heartbeat load for a moment, then kill -9 mid-flight.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let reconnects_before = swarm.reconnects();
    cp.start_kill().unwrap(); // SIGKILL
    cp.wait().await.unwrap();
    let killed_at = Instant::now();

    // On SQLite, the file survived the kill intact (PostgreSQL keeps its
    // own integrity: the server was not killed).
    if dir.1.is_none() {
        let db =
            sqlx::SqlitePool::connect(&format!("sqlite:{}", data.join("minispod.db").display()))
                .await
                .unwrap();
        let check: String = sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_one(&db)
            .await
            .unwrap();
        assert_eq!(check, "ok");
        db.close().await;
    }

    // Restart on the same data dir and port: every agent comes back by itself.
    let _cp = spawn_control_plane_process(&data, dir.1.as_deref(), port);
    let (ch, admin) = admin_channel(port, &data).await;
    let restarted_at = Instant::now();
    let mut first_back = None;
    loop {
        let (total, active) = fleet_counts(&ch, &admin).await;
        assert_eq!(total, N, "no worker lost or duplicated");
        if active > 0 && first_back.is_none() {
            first_back = Some(restarted_at.elapsed());
        }
        if active == N {
            break;
        }
        assert!(
            restarted_at.elapsed() < Duration::from_secs(60),
            "{active}/{N} ACTIVE after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all_back = restarted_at.elapsed();
    println!(
        "kill -9 with {N} agents: down for {:?}; after restart first ACTIVE at {:?}, all {N} ACTIVE at {:?} (reconnects spread by jitter); {} reconnects",
        restarted_at - killed_at,
        first_back.unwrap(),
        all_back,
        swarm.reconnects() - reconnects_before
    );
    assert!(swarm.reconnects() > reconnects_before, "agents reconnected");
    swarm.stop().await;
}

/// The PostgreSQL database the replica tests share between replicas.
async fn replica_database() -> std::sync::Arc<TempDir> {
    let dir = TempDir::for_server().await;
    assert!(
        dir.1.is_some(),
        "replica tests need PostgreSQL: set MINISPOD_TEST_POSTGRES (the README's test command does)"
    );
    std::sync::Arc::new(dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_replicas_take_over_the_workers_of_a_replica_killed_with_kill_9() {
    const LEASE: Duration = Duration::from_secs(2);
    // Replica A is a process (to kill -9); B runs here. Both share one
    // database and one data dir (so one CA and one JWT key).
    let dir = replica_database().await;
    let (port_a, port_b) = (free_port(), free_port());
    let mut a = spawn_control_plane_process_with(
        &dir.0,
        dir.1.as_deref(),
        port_a,
        &["--replica-lease", "2s"],
    );
    let (ch_a, admin_a) = admin_channel(port_a, &dir.0).await;
    let b =
        ControlPlane::start_in(dir.clone(), port_b, |args| args.store.replica_lease = LEASE).await;
    let mut watch_b = b.watch().await;
    let token = WorkerServiceClient::new(ch_a.clone())
        .create_enrollment_token(authed(
            pb::CreateEnrollmentTokenRequest {
                ttl_seconds: 3600,
                max_uses: 0,
                description: "replicas".into(),
                ..Default::default()
            },
            &admin_a,
        ))
        .await
        .unwrap()
        .into_inner()
        .token;
    let url_a = format!("https://localhost:{port_a}");
    // One agent knows only A; the other fails over from A to B.
    let (s1, s2) = (TempDir::new(), TempDir::new());
    let _only_a = spawn_agent_to(
        std::slice::from_ref(&url_a),
        &b.ca_hash,
        &s1.0,
        &token,
        &["--machine-id", "replica-test-only-a"],
    );
    let _both = spawn_agent_to(
        &[url_a.clone(), b.url()],
        &b.ca_hash,
        &s2.0,
        &token,
        &["--machine-id", "replica-test-both"],
    );
    // Both enrolled and streaming on A; B's watchers see it (LISTEN/NOTIFY).
    let mut active = std::collections::HashSet::new();
    while active.len() < 2 {
        let (w, _) = watch_b
            .until("both ACTIVE via A", |w| status(w) == WorkerStatus::Active)
            .await;
        active.insert(w.machine_id);
    }
    let listed = b.list().await;
    assert_eq!(listed.len(), 2);
    let only_a = listed
        .iter()
        .find(|w| w.machine_id == "replica-test-only-a")
        .unwrap()
        .clone();

    a.start_kill().unwrap(); // SIGKILL: A cleans nothing up.
    a.wait().await.unwrap();
    let killed_at = now_ms();
    let (gone, seen_at) = watch_b
        .until("the worker only A held goes INACTIVE", |w| {
            w.id == only_a.id && status(w) == WorkerStatus::Inactive
        })
        .await;
    assert!(!gone.online);
    let latency = seen_at - killed_at;
    println!(
        "replica kill -9 to INACTIVE (lease {} ms, seen by a watcher on the other replica): {latency} ms",
        LEASE.as_millis()
    );
    // The lease, plus up to a third of it until the next reaping.
    assert!(
        latency <= (LEASE.as_millis() * 4 / 3 + 500) as i64,
        "took {latency} ms"
    );

    // The other agent reconnected to B by itself and is ACTIVE there.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let listed = b.list().await;
        assert_eq!(listed.len(), 2, "no duplicate worker");
        let both = listed
            .iter()
            .find(|w| w.machine_id == "replica-test-both")
            .unwrap();
        if status(both) == WorkerStatus::Active && both.online {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the agent did not fail over to B"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // And it stays ACTIVE past another lease: nobody reaps B's stream.
    tokio::time::sleep(LEASE * 2).await;
    let both = b
        .list()
        .await
        .into_iter()
        .find(|w| w.machine_id == "replica-test-both")
        .unwrap();
    assert_eq!(status(&both), WorkerStatus::Active);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_a_stream_claimed_on_another_replica_closes_the_older_copy() {
    let dir = replica_database().await;
    // A long heartbeat deadline: a stream that ends within seconds was
    // closed by the takeover, not for silence.
    let slow = |args: &mut ServeArgs| args.fleet.heartbeat_interval = Duration::from_secs(60);
    let a = ControlPlane::start_in(dir.clone(), free_port(), slow).await;
    let b = ControlPlane::start_in(dir, free_port(), slow).await;
    let mut watch_a = a.watch().await;
    let (key, csr) = minispod_agent::enroll::key_and_csr("twice").unwrap();
    let enrolled = AgentServiceClient::new(a.channel.clone())
        .enroll(pb::EnrollRequest {
            token: a.token(0).await,
            csr_pem: csr,
            facts: Some(pb::MachineFacts {
                hostname: "twice".into(),
                machine_id: "twice-1".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let cert = enrolled.certificate_pem;
    let mut on_a = open_stream(mtls_channel(&a, &cert, &key).await.unwrap(), "twice-1")
        .await
        .expect("stream on A");
    watch_a
        .until("ACTIVE on A", |w| status(w) == WorkerStatus::Active)
        .await;

    // The same worker streams on B (say the agent lost its path to A): A
    // closes its copy, and the worker stays online, held by B.
    let on_b = open_stream(mtls_channel(&b, &cert, &key).await.unwrap(), "twice-1")
        .await
        .expect("stream on B");
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(_)) = on_a.message().await {}
    })
    .await;
    assert!(closed.is_ok(), "A kept its copy of the stream");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let w = &b.list().await[0];
    assert!(
        w.online && status(w) == WorkerStatus::Active,
        "A's closing did not take the worker offline: {w:?}"
    );

    // When B's stream ends (B shuts down), A's watchers see the worker go
    // INACTIVE.
    b.stop().await;
    drop(on_b);
    let (w, _) = watch_a
        .until("INACTIVE after B's stream ended", |w| {
            status(w) == WorkerStatus::Inactive
        })
        .await;
    assert!(!w.online);
}
