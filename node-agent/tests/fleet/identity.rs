//! The agent's side of the worker identity contract (#12), against a small
//! fake control plane whose answers each test scripts: refusals with their
//! ErrorInfo, an expired certificate, a failed re-enrollment, a CA that
//! does not match the pin, a K3s join hook that fails across a restart.
//! The agent runs in-process (`stream::run`) so its metrics can be read.

use std::{
    collections::HashSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use minispod_agent::{
    enroll::{self, EnrollError},
    facts::HeartbeatSource,
    k3s::JoinHook,
    metrics::AgentMetrics,
    secret::Secret,
    state::{Credentials, StateDir},
    stream::{self, StreamConfig},
    tls::{self, ClientIdentity, Trust},
    token::{Token, TokenSource},
};
use minispod_control_plane::pki::{Pki, peer_identity};
use minispod_proto::v1::{
    self as pb,
    agent_service_server::{AgentService, AgentServiceServer},
    connect_request, connect_response,
};
use tokio::{sync::mpsc, task::JoinHandle};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{
    Code, Request, Response, Status, Streaming,
    transport::{Certificate, Identity, Server, ServerTlsConfig},
};
use tonic_types::{ErrorDetails, StatusExt};

use super::TempDir;

/// What the fake answers.
#[derive(Default)]
struct Script {
    /// Enroll fails with this code and ErrorInfo reason.
    enroll_refusal: Option<(Code, &'static str)>,
    /// Enroll fails with UNAVAILABLE.
    enroll_unavailable: bool,
    /// Worker ids whose Connect and RenewCertificate are refused with
    /// WORKER_REMOVED.
    removed: HashSet<String>,
    /// A CA bundle to hand out instead of the real one.
    other_ca: Option<String>,
    /// The K3s server URL handed out at enrollment.
    k3s_url: String,
}

/// What the fake saw.
#[derive(Default)]
struct Seen {
    /// Tokens of every Enroll call, in order.
    tokens: Vec<String>,
    /// Connect calls.
    connects: usize,
    /// (worker id, hello) of every stream that opened.
    hellos: Vec<(String, pb::Hello)>,
    /// Readiness of every heartbeat.
    heartbeat_ready: Vec<bool>,
}

struct Fake {
    pki: Pki,
    script: Mutex<Script>,
    seen: Mutex<Seen>,
    next_worker: AtomicUsize,
}

fn refusal(code: Code, reason: &str) -> Status {
    Status::with_error_details(
        code,
        format!("refused: {reason}"),
        ErrorDetails::with_error_info(reason, "minispod.dev", std::collections::HashMap::new()),
    )
}

impl Fake {
    fn issue(&self, csr_pem: &str, worker_id: &str) -> Result<(String, i64), Status> {
        let cert = self
            .pki
            .sign_worker_csr(csr_pem, worker_id, Duration::from_secs(3600))
            .map_err(Status::invalid_argument)?;
        Ok((cert.pem, cert.expires_at_ms / 1000))
    }

    fn ca(&self) -> String {
        let script = self.script.lock().unwrap();
        script
            .other_ca
            .clone()
            .unwrap_or_else(|| self.pki.ca_cert_pem().to_owned())
    }

    fn caller<T>(&self, r: &Request<T>) -> Result<String, Status> {
        let worker = r
            .peer_certs()
            .and_then(|c| c.first().and_then(|d| peer_identity(d.as_ref())))
            .map(|p| p.worker_id)
            .ok_or_else(|| Status::unauthenticated("no client certificate"))?;
        if self.script.lock().unwrap().removed.contains(&worker) {
            return Err(refusal(Code::PermissionDenied, "WORKER_REMOVED"));
        }
        Ok(worker)
    }
}

struct FakeService(Arc<Fake>);

fn timestamp(seconds: i64) -> Option<minispod_proto::prost_types::Timestamp> {
    Some(minispod_proto::prost_types::Timestamp { seconds, nanos: 0 })
}

#[tonic::async_trait]
impl AgentService for FakeService {
    async fn enroll(
        &self,
        request: Request<pb::EnrollRequest>,
    ) -> Result<Response<pb::EnrollResponse>, Status> {
        let r = request.into_inner();
        self.0.seen.lock().unwrap().tokens.push(r.token.clone());
        let (refused, unavailable, k3s_url) = {
            let s = self.0.script.lock().unwrap();
            (s.enroll_refusal, s.enroll_unavailable, s.k3s_url.clone())
        };
        if unavailable {
            return Err(Status::unavailable("database down"));
        }
        if let Some((code, reason)) = refused {
            return Err(refusal(code, reason));
        }
        let worker_id = format!("w{}", self.0.next_worker.fetch_add(1, Ordering::SeqCst));
        let (certificate_pem, expires) = self.0.issue(&r.csr_pem, &worker_id)?;
        Ok(Response::new(pb::EnrollResponse {
            worker_id,
            certificate_pem,
            ca_pem: self.0.ca(),
            certificate_expires_at: timestamp(expires),
            k3s_server_url: k3s_url,
            k3s_token: "K10fake::server:abc".into(),
            heartbeat_interval_seconds: 1,
        }))
    }

    type ConnectStream = ReceiverStream<Result<pb::ConnectResponse, Status>>;

    async fn connect(
        &self,
        request: Request<Streaming<pb::ConnectRequest>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        self.0.seen.lock().unwrap().connects += 1;
        let worker = self.0.caller(&request)?;
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(8);
        let fake = self.0.clone();
        tokio::spawn(async move {
            let Ok(Some(pb::ConnectRequest {
                message: Some(connect_request::Message::Hello(hello)),
            })) = inbound.message().await
            else {
                return;
            };
            fake.seen
                .lock()
                .unwrap()
                .hellos
                .push((worker.clone(), hello));
            let welcome = pb::ConnectResponse {
                message: Some(connect_response::Message::Welcome(pb::Welcome {
                    worker_id: worker,
                    heartbeat_interval_seconds: 1,
                    status: 0,
                })),
            };
            if tx.send(Ok(welcome)).await.is_err() {
                return;
            }
            while let Ok(Some(m)) = inbound.message().await {
                if let Some(connect_request::Message::Heartbeat(b)) = m.message {
                    fake.seen.lock().unwrap().heartbeat_ready.push(b.ready);
                    let ack = pb::ConnectResponse {
                        message: Some(connect_response::Message::Ack(pb::HeartbeatAck {
                            sequence: b.sequence,
                        })),
                    };
                    if tx.send(Ok(ack)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn renew_certificate(
        &self,
        request: Request<pb::RenewCertificateRequest>,
    ) -> Result<Response<pb::RenewCertificateResponse>, Status> {
        let worker = self.0.caller(&request)?;
        let (certificate_pem, expires) = self.0.issue(&request.get_ref().csr_pem, &worker)?;
        Ok(Response::new(pb::RenewCertificateResponse {
            certificate_pem,
            certificate_expires_at: timestamp(expires),
            ca_pem: self.0.ca(),
        }))
    }

    async fn claim_transfers(
        &self,
        _request: Request<pb::ClaimTransfersRequest>,
    ) -> Result<Response<pb::ClaimTransfersResponse>, Status> {
        Ok(Response::new(pb::ClaimTransfersResponse::default()))
    }

    async fn report_transfer(
        &self,
        _request: Request<pb::ReportTransferRequest>,
    ) -> Result<Response<pb::ReportTransferResponse>, Status> {
        Err(Status::not_found("no transfers here"))
    }
}

/// A running fake control plane.
struct FakeControlPlane {
    fake: Arc<Fake>,
    url: String,
    _dir: TempDir,
}

impl FakeControlPlane {
    async fn start() -> FakeControlPlane {
        let dir = TempDir::new();
        let pki = Pki::load_or_create(&dir.0, &[]).unwrap();
        let tls = ServerTlsConfig::new()
            .identity(Identity::from_pem(
                &pki.server_chain_pem,
                &pki.server_key_pem,
            ))
            .client_ca_root(Certificate::from_pem(pki.ca_cert_pem()))
            .client_auth_optional(true);
        let fake = Arc::new(Fake {
            pki,
            script: Mutex::default(),
            seen: Mutex::default(),
            next_worker: AtomicUsize::new(0),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let service = AgentServiceServer::from_arc(Arc::new(FakeService(fake.clone())));
        tokio::spawn(
            Server::builder()
                .tls_config(tls)
                .unwrap()
                .add_service(service)
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        FakeControlPlane {
            fake,
            url: format!("https://localhost:{port}"),
            _dir: dir,
        }
    }

    fn pin(&self) -> String {
        self.fake.pki.ca_hash()
    }

    fn script(&self) -> std::sync::MutexGuard<'_, Script> {
        self.fake.script.lock().unwrap()
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.fake.seen.lock().unwrap()
    }

    fn tokens(&self) -> Vec<String> {
        self.seen().tokens.clone()
    }
}

/// An agent running `stream::run` in this process.
struct InProcessAgent {
    metrics: Arc<AgentMetrics>,
    stop: tokio::sync::watch::Sender<bool>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl InProcessAgent {
    fn start(
        cp: &FakeControlPlane,
        state: &StateDir,
        token: TokenSource,
        k3s: Option<JoinHook>,
    ) -> InProcessAgent {
        let metrics = Arc::new(AgentMetrics::default());
        let cfg = StreamConfig {
            servers: vec![cp.url.clone()],
            state: state.clone(),
            facts: facts(),
            token,
            enroll_trust: Some(Trust::Pin(cp.pin())),
            k3s,
            kubernetes_node: None,
            max_backoff: Duration::from_secs(1),
            metrics: metrics.clone(),
            heartbeats: HeartbeatSource::Synthetic,
            transfers: None,
        };
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let creds = state.credentials().unwrap();
        let task = tokio::spawn(stream::run(cfg, creds, stop_rx));
        InProcessAgent {
            metrics,
            stop,
            task,
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the agent stops")
            .unwrap()
            .unwrap();
    }
}

fn facts() -> pb::MachineFacts {
    pb::MachineFacts {
        hostname: "fake-host".into(),
        machine_id: "machine-1".into(),
        ..Default::default()
    }
}

/// Waits (up to 10 s) until `what` holds.
async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Enrolls once with `token` through a short agent run; the credentials.
async fn enrolled(cp: &FakeControlPlane, state: &StateDir, token: &str) -> Credentials {
    let agent = InProcessAgent::start(cp, state, TokenSource::inline(token), None);
    let hellos = cp.seen().hellos.len();
    until("the stream", || cp.seen().hellos.len() > hellos).await;
    agent.stop().await;
    state.credentials().unwrap().expect("enrolled")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_worker_does_not_re_enroll_in_a_loop_and_a_new_token_readmits_it() {
    let cp = FakeControlPlane::start().await;
    let dir = TempDir::new();
    let state = StateDir::open(&dir.0.join("state")).unwrap();
    let token_file = dir.0.join("token");
    std::fs::write(&token_file, "t1\n").unwrap();
    let source = TokenSource {
        file: Some(token_file.clone()),
        // As when MINISPOD_TOKEN stays in agent.env after enrollment.
        inline: Some(Secret::new("t1")),
    };
    let agent = InProcessAgent::start(&cp, &state, source.clone(), None);
    until("the stream", || !cp.seen().hellos.is_empty()).await;
    assert!(!token_file.exists(), "the spent token's file is deleted");
    assert!(state.token_spent("t1").unwrap());
    agent.stop().await;

    cp.script().removed.insert("w0".into());
    let agent = InProcessAgent::start(&cp, &state, source, None);
    until("the refusal in the metrics", || {
        agent.metrics.refused() == Some("WORKER_REMOVED")
    })
    .await;
    let connects = cp.seen().connects;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(cp.tokens(), ["t1"], "a spent token is never sent again");
    let retries = cp.seen().connects - connects;
    // Slow retries: at most one per half of --max-backoff (1 s here).
    assert!(retries <= 7, "{retries} connects in 3 s");
    assert!(
        agent
            .metrics
            .render()
            .contains("minispod_agent_refused{reason=\"WORKER_REMOVED\"} 1"),
        "{}",
        agent.metrics.render()
    );

    // The operator's action: a new token (bound to the machine, in the real
    // control plane) dropped into the token file, no restart.
    std::fs::write(&token_file, "t2").unwrap();
    until("the new worker's stream", || {
        cp.seen().hellos.iter().any(|(w, _)| w == "w1")
    })
    .await;
    assert_eq!(cp.tokens(), ["t1", "t2"]);
    assert!(!token_file.exists());
    until("the refusal to clear", || agent.metrics.refused().is_none()).await;
    assert_eq!(
        state.credentials().unwrap().unwrap().identity.worker_id,
        "w1"
    );
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_enrollment_is_not_repeated_with_the_same_token() {
    let cp = FakeControlPlane::start().await;
    cp.script().enroll_refusal = Some((Code::PermissionDenied, "REENROLL_NEEDS_APPROVAL"));
    let dir = TempDir::new();
    let state = StateDir::open(&dir.0.join("state")).unwrap();
    let agent = InProcessAgent::start(&cp, &state, TokenSource::inline("unbound"), None);
    until("the refusal in the metrics", || {
        agent.metrics.refused() == Some("REENROLL_NEEDS_APPROVAL")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(cp.tokens(), ["unbound"]);
    assert!(state.credentials().unwrap().is_none());
    assert!(
        !state.token_spent("unbound").unwrap(),
        "only an enrollment spends a token"
    );
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_whose_certificate_expired_offline_says_why_and_re_enrolls_with_a_new_token() {
    let cp = FakeControlPlane::start().await;
    let dir = TempDir::new();
    let state = StateDir::open(&dir.0.join("state")).unwrap();
    let mut creds = enrolled(&cp, &state, "t1").await;
    // The agent was offline past the certificate's end.
    creds.identity.issued_at -= 7200;
    creds.identity.expires_at = minispod_agent::state::now() - 60;
    state.save_credentials(&creds).unwrap();
    let connects = cp.seen().connects;

    let token_file = dir.0.join("token");
    let source = TokenSource {
        file: Some(token_file.clone()),
        inline: Some(Secret::new("t1")),
    };
    let agent = InProcessAgent::start(&cp, &state, source, None);
    until("the expiry in the metrics", || {
        agent.metrics.refused() == Some("CERTIFICATE_EXPIRED")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let text = agent.metrics.render();
    assert!(
        text.contains("minispod_agent_certificate_expired 1"),
        "{text}"
    );
    assert_eq!(
        cp.seen().connects,
        connects,
        "no stream with an expired certificate"
    );
    assert_eq!(cp.tokens(), ["t1"], "the spent token is not tried");

    std::fs::write(&token_file, "t2").unwrap();
    until("the new stream", || {
        cp.seen().hellos.iter().any(|(w, _)| w == "w1")
    })
    .await;
    assert_eq!(cp.tokens(), ["t1", "t2"]);
    let text = agent.metrics.render();
    assert!(
        text.contains("minispod_agent_certificate_expired 0"),
        "{text}"
    );
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_re_enrollment_keeps_the_old_identity_across_a_restart() {
    let cp = FakeControlPlane::start().await;
    let dir = TempDir::new();
    let state = StateDir::open(&dir.0.join("state")).unwrap();
    let old = enrolled(&cp, &state, "t1").await;

    {
        let mut s = cp.script();
        s.removed.insert("w0".into());
        s.enroll_unavailable = true;
    }
    let agent = InProcessAgent::start(&cp, &state, TokenSource::inline("t2"), None);
    until("a re-enrollment attempt", || cp.tokens().len() >= 2).await;
    agent.stop().await;
    assert_eq!(
        state.credentials().unwrap().as_ref(),
        Some(&old),
        "the identity is kept until a new one is saved"
    );
    assert!(!state.token_spent("t2").unwrap());

    // After the restart the token still works.
    cp.script().enroll_unavailable = false;
    let agent = InProcessAgent::start(&cp, &state, TokenSource::inline("t2"), None);
    until("the new stream", || {
        cp.seen().hellos.iter().any(|(w, _)| w == "w1")
    })
    .await;
    agent.stop().await;
    assert_ne!(state.credentials().unwrap().unwrap().key_pem, old.key_pem);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_whose_ca_does_not_match_the_pin_is_not_saved() {
    let cp = FakeControlPlane::start().await;
    let other_dir = TempDir::new();
    let other = Pki::load_or_create(&other_dir.0, &[]).unwrap();
    cp.script().other_ca = Some(other.ca_cert_pem().to_owned());
    let dir = TempDir::new();
    let state = StateDir::open(&dir.0.join("state")).unwrap();
    let token = Token {
        value: Secret::new("t1"),
        file: None,
    };
    let trust = Trust::Pin(cp.pin());
    let err = enroll::enroll(
        std::slice::from_ref(&cp.url),
        &trust,
        &token,
        facts(),
        &state,
        None,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, EnrollError::Failed(_)), "{err:?}");
    assert!(
        format!("{err:#}").contains("does not match the pinned CA"),
        "{err:#}"
    );
    assert!(state.credentials().unwrap().is_none());
    assert!(!state.token_spent("t1").unwrap());

    // Renewal checks the CA against the saved one the same way.
    cp.script().other_ca = None;
    let (creds, _) = enroll::enroll(
        std::slice::from_ref(&cp.url),
        &trust,
        &token,
        facts(),
        &state,
        None,
    )
    .await
    .unwrap();
    cp.script().other_ca = Some(other.ca_cert_pem().to_owned());
    let id = ClientIdentity {
        cert_pem: creds.cert_pem.clone(),
        key_pem: creds.key_pem.clone(),
    };
    let channel = tls::channel(
        &cp.url,
        tls::client_config(&Trust::CaPem(creds.ca_pem.clone()), Some(&id)).unwrap(),
    )
    .await
    .unwrap();
    let err = enroll::renew(channel.clone(), &creds, &state)
        .await
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("does not match the pinned CA"),
        "{err:#}"
    );
    assert_eq!(state.credentials().unwrap().as_ref(), Some(&creds));

    // A refused renewal is a refusal, not a passing failure.
    cp.script().other_ca = None;
    cp.script().removed.insert(creds.identity.worker_id.clone());
    let err = enroll::renew(channel, &creds, &state).await.unwrap_err();
    assert!(
        matches!(&err, EnrollError::Refused(r) if r.reason() == "WORKER_REMOVED"),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_survives_a_restart_and_the_hook_is_retried_until_it_succeeds() {
    let cp = FakeControlPlane::start().await;
    cp.script().k3s_url = "https://k3s.example.org:6443".into();
    let dir = TempDir::new();
    let state = StateDir::open(&dir.0.join("state")).unwrap();
    let gate = dir.0.join("k3s-is-installed");
    let hook = JoinHook {
        config_path: dir.0.join("k3s/config.yaml"),
        command: format!(
            "test -e {} || {{ echo no k3s here >&2; exit 1; }}",
            gate.display()
        ),
    };
    let hello_with_error = |cp: &FakeControlPlane, n: usize| {
        let seen = cp.seen();
        seen.hellos
            .iter()
            .filter(|(_, h)| !h.ready && h.k3s_join_error.contains("no k3s here"))
            .count()
            >= n
    };
    let agent = InProcessAgent::start(&cp, &state, TokenSource::inline("t1"), Some(hook.clone()));
    // The first hello may go out before the first hook run ends; it says
    // not ready either way. Reconnect until one carries the error.
    until("a hello with the hook's error", || {
        hello_with_error(&cp, 1) || cp.seen().hellos.iter().any(|(_, h)| h.ready)
    })
    .await;
    assert!(
        cp.seen().hellos.iter().all(|(_, h)| !h.ready),
        "not ready before the hook succeeded"
    );
    until("the hook's failure on disk", || {
        state
            .k3s_join()
            .unwrap()
            .is_some_and(|j| j.last_error.contains("no k3s here"))
    })
    .await;
    agent.stop().await;

    // Restart: the failure is remembered, and the hello says so.
    let before = cp.seen().hellos.len();
    let agent = InProcessAgent::start(&cp, &state, TokenSource::inline("t1"), Some(hook.clone()));
    until("the hello after the restart", || {
        cp.seen().hellos.len() > before
    })
    .await;
    let (_, hello) = cp.seen().hellos[before].clone();
    assert!(!hello.ready, "{hello:?}");
    assert!(hello.k3s_join_error.contains("no k3s here"), "{hello:?}");
    assert!(
        agent
            .metrics
            .render()
            .contains("minispod_agent_k3s_joined 0")
    );

    // K3s becomes installable: the retried hook succeeds and heartbeats
    // turn ready.
    let beats = cp.seen().heartbeat_ready.len();
    std::fs::write(&gate, "").unwrap();
    until("a ready heartbeat", || {
        cp.seen().heartbeat_ready[beats..].iter().any(|r| *r)
    })
    .await;
    assert!(state.k3s_join().unwrap().unwrap().succeeded);
    let written = std::fs::read_to_string(&hook.config_path).unwrap();
    assert_eq!(
        written,
        "server: \"https://k3s.example.org:6443\"\ntoken: \"K10fake::server:abc\"\n\
         node-label:\n  - \"minispod.dev/worker-id=w0\"\n"
    );
    agent.stop().await;
    assert_eq!(cp.tokens(), ["t1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_with_a_token_file_enrolls_once_deletes_the_file_and_fails_on_a_failed_hook() {
    let cp = FakeControlPlane::start().await;
    cp.script().k3s_url = "https://k3s.example.org:6443".into();
    let dir = TempDir::new();
    let state_dir = dir.0.join("state");
    let token_file = dir.0.join("enroll.token");
    std::fs::write(&token_file, "file-token\n").unwrap();
    let join = |hook: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_minispod-agent"))
            .arg("join")
            .args(["--server", &cp.url, "--ca-hash", &cp.pin()])
            .arg("--state-dir")
            .arg(&state_dir)
            .arg("--token-file")
            .arg(&token_file)
            .arg("--k3s-config")
            .arg(dir.0.join("k3s.yaml"))
            .args(["--k3s-join-command", hook])
            .env("MINISPOD_TOKEN", "env-token")
            .output()
            .expect("run minispod-agent join")
    };
    let run = tokio::task::block_in_place(|| join("echo no k3s here >&2; exit 1"));
    assert!(!run.status.success(), "a failed hook fails `join`");
    assert_eq!(String::from_utf8_lossy(&run.stdout).trim(), "w0");
    assert!(String::from_utf8_lossy(&run.stderr).contains("no k3s here"));
    assert!(!token_file.exists(), "the spent token's file is deleted");
    assert_eq!(cp.tokens(), ["file-token"]);

    // Enrolled with a current certificate: `join` only retries the hook.
    let run = tokio::task::block_in_place(|| join("true"));
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&run.stdout).trim(), "w0");
    assert_eq!(cp.tokens(), ["file-token"], "no second enrollment");
    let state = StateDir::open(&state_dir).unwrap();
    assert!(state.k3s_join().unwrap().unwrap().succeeded);
    assert!(state.token_spent("file-token").unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_on_a_kubernetes_node_names_it_in_its_hello_and_reports_ready_without_a_hook() {
    let cp = FakeControlPlane::start().await;
    cp.script().k3s_url = "https://k3s.example.org:6443".into();
    let dir = TempDir::new();
    let hook_ran = dir.0.join("hook-ran");
    let _agent = tokio::process::Command::new(env!("CARGO_BIN_EXE_minispod-agent"))
        .arg("run")
        .args(["--server", &cp.url, "--ca-hash", &cp.pin(), "--token", "t1"])
        .arg("--state-dir")
        .arg(dir.0.join("state"))
        .arg("--k3s-config")
        .arg(dir.0.join("k3s.yaml"))
        .args([
            "--k3s-join-command",
            &format!("touch {}", hook_ran.display()),
        ])
        .args(["--kubernetes-node", "node-a"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start minispod-agent");
    until("a hello and a heartbeat", || {
        let seen = cp.seen();
        !seen.hellos.is_empty() && !seen.heartbeat_ready.is_empty()
    })
    .await;
    let (worker, hello) = cp.seen().hellos[0].clone();
    assert_eq!(worker, "w0");
    assert_eq!(hello.kubernetes_node_name, "node-a");
    assert_eq!(hello.facts.unwrap().hostname, "node-a");
    assert!(
        hello.ready && hello.k3s_join_error.is_empty(),
        "ready at once"
    );
    assert!(cp.seen().heartbeat_ready.iter().all(|r| *r));
    assert!(!dir.0.join("k3s.yaml").exists() && !hook_ran.exists());
}
