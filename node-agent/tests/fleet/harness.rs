//! The fleet tests' harness: a control plane in this process with fast
//! fleet timing (`ControlPlane`), or as child processes; real agents;
//! enrolling and streaming by hand; the bearer and mTLS helpers.

use std::{
    path::Path,
    process::Stdio,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use minispod_agent::{
    secret::Secret,
    tls::{self, ClientIdentity, Trust},
};
use minispod_control_plane::{Application, config::ServeArgs};
use minispod_proto::v1::{
    self as pb, WorkerStatus, agent_service_client::AgentServiceClient,
    auth_service_client::AuthServiceClient, worker_service_client::WorkerServiceClient,
};
use tokio::{process::Child, sync::oneshot};
use tonic::{Request, metadata::MetadataValue, transport::Channel};

pub(crate) use minispod_testkit::{TempDir, process::free_port};
use tokio_stream::StreamExt as _;

pub(crate) const ADMIN_EMAIL: &str = "fleet-admin@example.org";
pub(crate) const ADMIN_PASSWORD: &str = "fleet-admin-password";

pub(crate) struct ControlPlane {
    pub(crate) port: u16,
    pub(crate) dir: std::sync::Arc<TempDir>,
    pub(crate) ca_hash: String,
    pub(crate) ca_pem: String,
    pub(crate) metrics: Option<std::net::SocketAddr>,
    pub(crate) channel: Channel,
    pub(crate) admin: String,
    pub(crate) stop: Option<oneshot::Sender<()>>,
    pub(crate) task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// Fast fleet timing so tests take seconds: heartbeats every second, two
/// missed close the stream, keepalive 1 s + 1 s.
pub(crate) fn fleet_args(dir: &Path, port: u16) -> ServeArgs {
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
    pub(crate) async fn start() -> ControlPlane {
        Self::start_in(
            std::sync::Arc::new(TempDir::for_server().await),
            free_port(),
            |_| {},
        )
        .await
    }

    pub(crate) async fn start_in(
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

    pub(crate) async fn stop(mut self) -> (std::sync::Arc<TempDir>, u16) {
        let _ = self.stop.take().unwrap().send(());
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task.take().unwrap()).await;
        (self.dir.clone(), self.port)
    }

    pub(crate) fn url(&self) -> String {
        format!("https://localhost:{}", self.port)
    }

    pub(crate) fn workers(&self) -> WorkerServiceClient<Channel> {
        WorkerServiceClient::new(self.channel.clone())
    }

    pub(crate) fn authed<T>(&self, msg: T) -> Request<T> {
        authed(msg, &self.admin)
    }

    pub(crate) async fn token(&self, max_uses: i32) -> String {
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

    pub(crate) async fn list(&self) -> Vec<pb::Worker> {
        self.workers()
            .list_workers(self.authed(pb::ListWorkersRequest::default()))
            .await
            .unwrap()
            .into_inner()
            .workers
    }

    pub(crate) async fn watch(&self) -> Watch {
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
pub(crate) fn maybe_authed<T>(msg: T, token: Option<&str>) -> Request<T> {
    match token {
        Some(t) => authed(msg, t),
        None => Request::new(msg),
    }
}

pub(crate) fn authed<T>(msg: T, token: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert(
        "authorization",
        MetadataValue::try_from(format!("Bearer {token}")).unwrap(),
    );
    r
}

pub(crate) struct Watch {
    pub(crate) stream: tonic::Streaming<pb::WatchWorkersResponse>,
}

impl Watch {
    /// The first upsert that satisfies `pred`, and when the control plane observed it (Unix ms).
    pub(crate) async fn until(
        &mut self,
        what: &str,
        pred: impl Fn(&pb::Worker) -> bool,
    ) -> (pb::Worker, i64) {
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

pub(crate) fn status(w: &pb::Worker) -> WorkerStatus {
    WorkerStatus::try_from(w.status).unwrap()
}

pub(crate) struct Agent {
    pub(crate) child: Child,
}

pub(crate) fn spawn_agent(cp: &ControlPlane, state: &Path, token: &str, extra: &[&str]) -> Agent {
    spawn_agent_to(&[cp.url()], &cp.ca_hash, state, token, extra)
}

/// An agent that knows `servers`, in that order.
pub(crate) fn spawn_agent_to(
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
pub(crate) fn agent_command(
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

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

pub(crate) async fn raw_enroll(
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

pub(crate) async fn mtls_channel(
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

pub(crate) async fn open_stream(
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

pub(crate) fn spawn_control_plane_process(
    data: &Path,
    database_url: Option<&str>,
    port: u16,
) -> tokio::process::Child {
    spawn_control_plane_process_with(data, database_url, port, &[])
}

pub(crate) fn spawn_control_plane_process_with(
    data: &Path,
    database_url: Option<&str>,
    port: u16,
    extra: &[&str],
) -> tokio::process::Child {
    minispod_testkit::process::control_plane_command(data, database_url, port)
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
        .spawn()
        .unwrap()
}

pub(crate) async fn admin_channel(port: u16, data: &Path) -> (Channel, String) {
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

pub(crate) async fn fleet_counts(ch: &Channel, admin: &str) -> (usize, usize) {
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

/// The PostgreSQL database the replica tests share between replicas.
pub(crate) async fn replica_database() -> std::sync::Arc<TempDir> {
    let dir = TempDir::for_server().await;
    assert!(
        dir.1.is_some(),
        "replica tests need PostgreSQL: set MINISPOD_TEST_POSTGRES (the README's test command does)"
    );
    std::sync::Arc::new(dir)
}
