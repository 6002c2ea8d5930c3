//! Worker identity: who may enroll a machine, removed machines staying out,
//! static tokens with limits, and per-worker limits (issue #12).

use std::time::Duration;

use minispod_proto::v1::{
    self as pb, agent_service_client::AgentServiceClient,
    worker_service_client::WorkerServiceClient,
};
use rcgen::{CertificateParams, DnType, KeyPair};
use tokio::sync::mpsc;
use tonic::{
    Code, Status,
    transport::{Certificate, Channel, ClientTlsConfig, Identity},
};
use tonic_types::StatusExt;

use crate::helpers::{TempDir, TestApp, authed, expect_code, spawn_app, spawn_app_with, start};

/// A fresh key pair and a CSR for it: (key PEM, CSR PEM).
pub(crate) fn key_and_csr() -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, "agent");
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();
    (key.serialize_pem(), csr)
}

/// The ErrorInfo reason of a refusal.
#[track_caller]
fn reason(status: &Status) -> String {
    let info = status
        .get_details_error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
    assert_eq!(info.domain, "minispod.dev");
    info.reason
}

/// Asserts `result` failed with `code` and ErrorInfo `why`.
#[track_caller]
fn expect_refused<T: std::fmt::Debug>(result: Result<T, Status>, code: Code, why: &str) -> Status {
    let s = expect_code(result, code);
    assert_eq!(reason(&s), why, "{s:?}");
    s
}

/// An enrolled machine: its key, its certificate and what Enroll answered.
#[derive(Debug)]
pub(crate) struct Agent {
    pub(crate) key_pem: String,
    pub(crate) enrolled: pb::EnrollResponse,
}

/// Enroll over `channel` (TLS, with or without a client certificate).
async fn enroll_over(channel: Channel, token: &str, machine_id: &str) -> Result<Agent, Status> {
    enroll_host(channel, token, machine_id, &format!("host-{machine_id}")).await
}

/// Enroll over `channel` as the machine `machine_id` named `hostname`.
async fn enroll_host(
    channel: Channel,
    token: &str,
    machine_id: &str,
    hostname: &str,
) -> Result<Agent, Status> {
    let (key_pem, csr) = key_and_csr();
    let enrolled = AgentServiceClient::new(channel)
        .enroll(pb::EnrollRequest {
            token: token.into(),
            csr_pem: csr,
            facts: Some(pb::MachineFacts {
                hostname: hostname.into(),
                machine_id: machine_id.into(),
                ..Default::default()
            }),
        })
        .await?
        .into_inner();
    Ok(Agent { key_pem, enrolled })
}

pub(crate) async fn enroll(app: &TestApp, token: &str, machine_id: &str) -> Result<Agent, Status> {
    enroll_over(app.channel.clone(), token, machine_id).await
}

/// A TLS channel presenting `agent`'s client certificate.
pub(crate) async fn mtls(app: &TestApp, agent: &Agent) -> Channel {
    let ca = std::fs::read_to_string(app.data_dir.0.join("pki/ca.crt")).unwrap();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .identity(Identity::from_pem(
            &agent.enrolled.certificate_pem,
            &agent.key_pem,
        ))
        .domain_name("localhost");
    Channel::from_shared(format!("https://localhost:{}", app.addr.port()))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .expect("mTLS connect")
}

/// An open Connect stream: send heartbeats with `beat`, read replies.
#[derive(Debug)]
pub(crate) struct Stream {
    tx: mpsc::Sender<pb::ConnectRequest>,
    rx: tonic::Streaming<pb::ConnectResponse>,
    sequence: u64,
}

impl Stream {
    /// Sends a heartbeat and waits for its ack (sent after any status write).
    pub(crate) async fn beat(&mut self, ready: bool) {
        self.sequence += 1;
        self.tx
            .send(pb::ConnectRequest {
                message: Some(pb::connect_request::Message::Heartbeat(pb::Heartbeat {
                    sequence: self.sequence,
                    ready,
                    ..Default::default()
                })),
            })
            .await
            .unwrap();
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(5), self.rx.message())
                .await
                .expect("an ack within 5 s")
                .expect("stream open")
                .expect("a message");
            if let Some(pb::connect_response::Message::Ack(a)) = msg.message
                && a.sequence == self.sequence
            {
                return;
            }
        }
    }
}

/// Opens Connect with a hello for `machine_id`; the welcome or the refusal.
pub(crate) async fn connect(channel: Channel, machine_id: &str) -> Result<Stream, Status> {
    connect_as(channel, machine_id, "").await
}

/// Opens Connect with a hello that also names the Kubernetes node the
/// agent runs on (an agent of the DaemonSet).
pub(crate) async fn connect_as(
    channel: Channel,
    machine_id: &str,
    kubernetes_node_name: &str,
) -> Result<Stream, Status> {
    connect_host(
        channel,
        machine_id,
        &format!("host-{machine_id}"),
        kubernetes_node_name,
    )
    .await
}

/// Opens Connect with a hello for `machine_id` named `hostname`.
async fn connect_host(
    channel: Channel,
    machine_id: &str,
    hostname: &str,
    kubernetes_node_name: &str,
) -> Result<Stream, Status> {
    let (tx, rx) = mpsc::channel(8);
    tx.send(pb::ConnectRequest {
        message: Some(pb::connect_request::Message::Hello(pb::Hello {
            facts: Some(pb::MachineFacts {
                hostname: hostname.into(),
                machine_id: machine_id.into(),
                ..Default::default()
            }),
            ready: true,
            k3s_join_error: String::new(),
            kubernetes_node_name: kubernetes_node_name.into(),
        })),
    })
    .await
    .unwrap();
    let mut rx = AgentServiceClient::new(channel)
        .connect(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    match rx.message().await? {
        Some(_) => Ok(Stream {
            tx,
            rx,
            sequence: 0,
        }),
        None => Err(Status::unavailable("closed before the welcome")),
    }
}

/// RenewCertificate over `channel`; the renewed agent.
async fn renew(channel: Channel) -> Result<Agent, Status> {
    let (key_pem, csr_pem) = key_and_csr();
    let r = AgentServiceClient::new(channel)
        .renew_certificate(pb::RenewCertificateRequest { csr_pem })
        .await?
        .into_inner();
    Ok(Agent {
        key_pem,
        enrolled: pb::EnrollResponse {
            certificate_pem: r.certificate_pem,
            ..Default::default()
        },
    })
}

/// Fleet administration as the bootstrap administrator.
pub(crate) struct Admin {
    pub(crate) client: WorkerServiceClient<Channel>,
    pub(crate) token: String,
}

impl Admin {
    pub(crate) async fn of(app: &TestApp) -> Admin {
        Admin {
            client: WorkerServiceClient::new(app.channel.clone()),
            token: app.admin_token().await,
        }
    }

    pub(crate) async fn token(
        &mut self,
        max_uses: i32,
        machine_id: &str,
    ) -> pb::CreateEnrollmentTokenResponse {
        self.client
            .create_enrollment_token(authed(
                pb::CreateEnrollmentTokenRequest {
                    ttl_seconds: 3600,
                    max_uses,
                    description: "test".into(),
                    machine_id: machine_id.into(),
                },
                &self.token,
            ))
            .await
            .expect("create token")
            .into_inner()
    }

    pub(crate) async fn worker(&mut self, id: &str) -> pb::Worker {
        self.client
            .get_worker(authed(
                pb::GetWorkerRequest {
                    lookup: Some(pb::get_worker_request::Lookup::Id(id.into())),
                },
                &self.token,
            ))
            .await
            .expect("get worker")
            .into_inner()
            .worker
            .unwrap()
    }

    pub(crate) async fn delete(&mut self, id: &str) {
        self.client
            .delete_worker(authed(
                pb::DeleteWorkerRequest { id: id.into() },
                &self.token,
            ))
            .await
            .expect("delete worker");
    }

    async fn removed(&mut self) -> Vec<pb::RemovedMachine> {
        self.client
            .list_removed_machines(authed(pb::ListRemovedMachinesRequest {}, &self.token))
            .await
            .expect("list removed machines")
            .into_inner()
            .removed_machines
    }

    async fn tokens(&mut self) -> Vec<pb::EnrollmentToken> {
        self.client
            .list_enrollment_tokens(authed(
                pb::ListEnrollmentTokensRequest {
                    include_inactive: true,
                },
                &self.token,
            ))
            .await
            .expect("list tokens")
            .into_inner()
            .enrollment_tokens
    }

    async fn workers(&mut self) -> Vec<pb::Worker> {
        self.client
            .list_workers(authed(pb::ListWorkersRequest::default(), &self.token))
            .await
            .expect("list workers")
            .into_inner()
            .workers
    }

    /// Waits until the worker is offline.
    async fn until_offline(&mut self, id: &str) {
        for _ in 0..100 {
            if !self.worker(id).await.online {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("worker {id} still online after 5 s");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_machine_stays_out_until_an_administrator_readmits_it() {
    let app = spawn_app().await;
    let mut admin = Admin::of(&app).await;
    let token = admin.token(0, "").await;
    let agent = enroll(&app, &token.token, "m1")
        .await
        .expect("first enrollment");
    let worker_id = agent.enrolled.worker_id.clone();
    admin.delete(&worker_id).await;

    // The deleted worker's certificate opens nothing.
    let ch = mtls(&app, &agent).await;
    expect_refused(
        connect(ch.clone(), "m1").await,
        Code::PermissionDenied,
        "WORKER_REMOVED",
    );
    expect_refused(renew(ch).await, Code::PermissionDenied, "WORKER_REMOVED");

    // Its machine cannot come back with a token, and the refusal spends nothing.
    let uses_before = admin.tokens().await[0].uses;
    let refused = expect_refused(
        enroll(&app, &token.token, "m1").await.map(|_| ()),
        Code::PermissionDenied,
        "MACHINE_REMOVED",
    );
    assert!(
        refused.message().contains("readmit"),
        "{}",
        refused.message()
    );
    assert_eq!(admin.tokens().await[0].uses, uses_before);
    assert!(admin.workers().await.is_empty());
    let removed = admin.removed().await;
    assert_eq!(removed.len(), 1);
    assert_eq!(removed[0].machine_id, "m1");
    assert_eq!(removed[0].worker_id, worker_id);
    assert_eq!(removed[0].name, "host-m1");

    // Other machines still enroll with the same token.
    enroll(&app, &token.token, "m2")
        .await
        .expect("another machine");

    // Readmitted, it enrolls again, as a new worker.
    let readmitted = admin
        .client
        .readmit_machine(authed(
            pb::ReadmitMachineRequest {
                machine_id: "m1".into(),
            },
            &admin.token,
        ))
        .await
        .expect("readmit")
        .into_inner();
    assert_eq!(readmitted.removed_machine.unwrap().machine_id, "m1");
    assert!(admin.removed().await.is_empty());
    let again = enroll(&app, &token.token, "m1").await.expect("readmitted");
    assert_ne!(again.enrolled.worker_id, worker_id);

    // Readmitting a machine that is not removed is NOT_FOUND.
    expect_code(
        admin
            .client
            .readmit_machine(authed(
                pb::ReadmitMachineRequest {
                    machine_id: "m1".into(),
                },
                &admin.token,
            ))
            .await,
        Code::NotFound,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_bound_to_a_removed_machine_readmits_it_and_admits_no_other() {
    let app = spawn_app().await;
    let mut admin = Admin::of(&app).await;
    let open = admin.token(0, "").await;
    let agent = enroll(&app, &open.token, "m1").await.unwrap();
    admin.delete(&agent.enrolled.worker_id).await;

    let bound = admin.token(1, "m1").await;
    assert_eq!(bound.enrollment_token.as_ref().unwrap().machine_id, "m1");
    expect_refused(
        enroll(&app, &bound.token, "m2").await.map(|_| ()),
        Code::Unauthenticated,
        "TOKEN_INVALID",
    );
    enroll(&app, &bound.token, "m1")
        .await
        .expect("a bound token readmits its machine");
    assert!(admin.removed().await.is_empty());
    expect_refused(
        enroll(&app, &bound.token, "m1").await.map(|_| ()),
        Code::Unauthenticated,
        "TOKEN_INVALID",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taking_over_a_known_machine_needs_its_certificate_or_approval_and_not_while_online() {
    let app = spawn_app().await;
    let mut admin = Admin::of(&app).await;
    let open = admin.token(0, "").await;
    let first = enroll(&app, &open.token, "m1").await.unwrap();
    let id = first.enrolled.worker_id.clone();
    admin
        .client
        .update_worker(authed(
            pb::UpdateWorkerRequest {
                id: id.clone(),
                notes: Some("keep me".into()),
                ..Default::default()
            },
            &admin.token,
        ))
        .await
        .unwrap();

    // Anyone with a token and the (not secret) machine id: refused, nothing changed.
    expect_refused(
        enroll(&app, &open.token, "m1").await.map(|_| ()),
        Code::PermissionDenied,
        "REENROLL_NEEDS_APPROVAL",
    );
    let w = admin.worker(&id).await;
    assert_eq!(w.notes, "keep me");
    assert_eq!(w.name, "host-m1");

    // While the worker is online, not even its own certificate re-enrolls it.
    let ch = mtls(&app, &first).await;
    let stream = connect(ch.clone(), "m1").await.expect("stream");
    expect_refused(
        enroll_over(ch.clone(), &open.token, "m1").await.map(|_| ()),
        Code::FailedPrecondition,
        "WORKER_ONLINE",
    );
    let bound = admin.token(1, "m1").await;
    expect_refused(
        enroll(&app, &bound.token, "m1").await.map(|_| ()),
        Code::FailedPrecondition,
        "WORKER_ONLINE",
    );
    drop(stream);
    admin.until_offline(&id).await;

    // Offline, its current certificate on the call re-enrolls it: same record.
    let second = enroll_over(ch.clone(), &open.token, "m1")
        .await
        .expect("re-enroll with the current certificate");
    assert_eq!(second.enrolled.worker_id, id);
    assert_eq!(admin.worker(&id).await.notes, "keep me");
    // The old certificate is void now, and says why.
    expect_refused(
        connect(ch.clone(), "m1").await,
        Code::PermissionDenied,
        "CERTIFICATE_REPLACED",
    );
    // A replaced certificate does not approve a re-enrollment either.
    expect_refused(
        enroll_over(ch, &open.token, "m1").await.map(|_| ()),
        Code::PermissionDenied,
        "REENROLL_NEEDS_APPROVAL",
    );
    // An administrator's bound token does.
    let third = enroll(&app, &bound.token, "m1").await.expect("approved");
    assert_eq!(third.enrolled.worker_id, id);
    assert_eq!(admin.workers().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_token_is_imported_once_with_a_use_limit_and_can_be_revoked() {
    let dir = std::sync::Arc::new(TempDir::for_server().await);
    let file = dir.0.join("enrollment.token");
    std::fs::write(&file, "static-token-for-unattended-installs\n").unwrap();
    let with_token = |max_uses: u32| {
        let file = file.clone();
        move |a: &mut minispod_control_plane::config::ServeArgs| {
            a.fleet.enrollment_token_file = Some(file);
            a.fleet.enrollment_token_max_uses = max_uses;
        }
    };
    let app = start(dir.clone(), with_token(2)).await;
    let mut admin = Admin::of(&app).await;
    let tokens = admin.tokens().await;
    assert_eq!(tokens.len(), 1);
    assert!(tokens[0].id.starts_with("static-"), "{:?}", tokens[0]);
    assert_eq!(tokens[0].max_uses, 2);
    let static_token = "static-token-for-unattended-installs";
    enroll(&app, static_token, "s1").await.expect("first use");
    enroll(&app, static_token, "s2").await.expect("second use");
    let s = expect_refused(
        enroll(&app, static_token, "s3").await.map(|_| ()),
        Code::Unauthenticated,
        "TOKEN_INVALID",
    );
    assert!(s.message().contains("used up"), "{}", s.message());

    // A restart (even with a higher limit) does not renew it.
    let dir = app.stop().await;
    let app = start(dir.clone(), with_token(10)).await;
    expect_refused(
        enroll(&app, static_token, "s3").await.map(|_| ()),
        Code::Unauthenticated,
        "TOKEN_INVALID",
    );
    drop(admin);
    let dir = app.stop().await;

    // Another static token: revoked like any other.
    std::fs::write(&file, "another-static-token-for-installs").unwrap();
    let app = start(dir, with_token(0)).await;
    let mut admin = Admin::of(&app).await;
    let id = admin
        .tokens()
        .await
        .into_iter()
        .find(|t| t.uses == 0)
        .expect("the new static token is listed")
        .id;
    admin
        .client
        .revoke_enrollment_token(authed(
            pb::RevokeEnrollmentTokenRequest { id },
            &admin.token,
        ))
        .await
        .unwrap();
    let s = expect_refused(
        enroll(&app, "another-static-token-for-installs", "s4")
            .await
            .map(|_| ()),
        Code::Unauthenticated,
        "TOKEN_INVALID",
    );
    assert!(s.message().contains("revoked"), "{}", s.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_token_expires_after_its_ttl() {
    let dir = TempDir::new();
    let file = dir.0.join("enrollment.token");
    std::fs::write(&file, "static-token-that-expires-soon").unwrap();
    let app = spawn_app_with(|a| {
        a.fleet.enrollment_token_file = Some(file.clone());
        a.fleet.enrollment_token_ttl = Duration::from_millis(1500);
        a.fleet.enrollment_token_max_uses = 0;
    })
    .await;
    enroll(&app, "static-token-that-expires-soon", "e1")
        .await
        .expect("fresh");
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let s = expect_refused(
        enroll(&app, "static-token-that-expires-soon", "e2")
            .await
            .map(|_| ()),
        Code::Unauthenticated,
        "TOKEN_INVALID",
    );
    assert!(s.message().contains("expired"), "{}", s.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_enrollment_token_stores_a_single_use_token_offline() {
    let dir = std::sync::Arc::new(TempDir::for_server().await);
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_minispod-control-plane"));
    cmd.args(["create-enrollment-token", "--data-dir"])
        .arg(&dir.0)
        .env_remove("DATABASE_URL");
    if let Some(url) = &dir.1 {
        cmd.args(["--database-url", url]);
    }
    let out = cmd.output().expect("run create-enrollment-token");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(token.contains('.'), "{token}");

    let app = start(dir, |_| {}).await;
    enroll(&app, &token, "o1")
        .await
        .expect("the minted token enrolls");
    expect_refused(
        enroll(&app, &token, "o2").await.map(|_| ()),
        Code::Unauthenticated,
        "TOKEN_INVALID",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_worker_is_limited_in_connects_renewals_and_readiness_writes() {
    let app = spawn_app_with(|a| {
        a.fleet.worker_connect_burst = 2;
        a.fleet.worker_connect_every = Duration::from_secs(60);
        a.fleet.worker_renew_burst = 1;
        a.fleet.worker_renew_every = Duration::from_secs(60);
        a.fleet.worker_ready_change_burst = 2;
        a.fleet.worker_ready_change_every = Duration::from_secs(1);
    })
    .await;
    let mut admin = Admin::of(&app).await;
    let token = admin.token(0, "").await.token;

    // Connects: a burst, then RESOURCE_EXHAUSTED with RetryInfo.
    let a = enroll(&app, &token, "l1").await.unwrap();
    let ch = mtls(&app, &a).await;
    drop(connect(ch.clone(), "l1").await.expect("first"));
    drop(connect(ch.clone(), "l1").await.expect("second"));
    let s = expect_code(connect(ch.clone(), "l1").await, Code::ResourceExhausted);
    let retry = s.get_details_retry_info().expect("RetryInfo");
    assert!(
        retry
            .retry_delay
            .is_some_and(|d| d > Duration::from_secs(30))
    );

    // Renewals likewise, per worker.
    let renewed = renew(ch).await.expect("first renewal");
    let s = expect_code(
        renew(mtls(&app, &renewed).await).await.map(|_| ()),
        Code::ResourceExhausted,
    );
    assert!(s.get_details_retry_info().is_some());

    // Readiness: changes within the limit are written at once; past it the
    // record keeps its value until the limit allows, then catches up.
    let b = enroll(&app, &token, "l2").await.unwrap();
    let id = b.enrolled.worker_id.clone();
    let mut stream = connect(mtls(&app, &b).await, "l2").await.expect("stream");
    let status = |w: &pb::Worker| pb::WorkerStatus::try_from(w.status).unwrap();
    stream.beat(false).await;
    assert_eq!(status(&admin.worker(&id).await), pb::WorkerStatus::NotReady);
    stream.beat(true).await;
    assert_eq!(status(&admin.worker(&id).await), pb::WorkerStatus::Active);
    stream.beat(false).await;
    let w = admin.worker(&id).await;
    assert!(w.ready, "a third change within a second was written");
    assert_eq!(status(&w), pb::WorkerStatus::Active);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    stream.beat(false).await;
    let w = admin.worker(&id).await;
    assert!(!w.ready);
    assert_eq!(status(&w), pb::WorkerStatus::NotReady);
}

/// Lists workers with `filter` (page 1, up to 500).
async fn listed(admin: &mut Admin, filter: pb::ListWorkersRequest) -> Vec<pb::Worker> {
    admin
        .client
        .list_workers(authed(
            pb::ListWorkersRequest {
                page_size: 500,
                ..filter
            },
            &admin.token,
        ))
        .await
        .expect("list workers")
        .into_inner()
        .workers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_worker_method_takes_a_workers_name_as_well_as_its_id() {
    let app = spawn_app().await;
    let mut admin = Admin::of(&app).await;
    let token = admin.token(0, "").await.token;
    let agent = enroll(&app, &token, "m-by-name").await.unwrap();
    let id = agent.enrolled.worker_id.clone();
    let name = "host-m-by-name".to_owned();
    let t = admin.token.clone();

    let w = admin
        .client
        .update_worker(authed(
            pb::UpdateWorkerRequest {
                id: name.clone(),
                labels: Some(pb::LabelMap {
                    labels: [("zone".to_owned(), "a".to_owned())].into(),
                }),
                taints: None,
                notes: Some("by name".into()),
            },
            &t,
        ))
        .await
        .expect("UpdateWorker by name")
        .into_inner()
        .worker
        .unwrap();
    assert_eq!((w.id.as_str(), w.notes.as_str()), (id.as_str(), "by name"));
    let w = admin
        .client
        .set_worker_schedulable(authed(
            pb::SetWorkerSchedulableRequest {
                id: name.clone(),
                schedulable: false,
            },
            &t,
        ))
        .await
        .expect("SetWorkerSchedulable by name")
        .into_inner()
        .worker
        .unwrap();
    assert!(w.cordoned && w.id == id);
    let w = admin
        .client
        .set_worker_status(authed(
            pb::SetWorkerStatusRequest {
                id: name.clone(),
                status: pb::WorkerStatus::Maintenance as i32,
            },
            &t,
        ))
        .await
        .expect("SetWorkerStatus by name")
        .into_inner()
        .worker
        .unwrap();
    assert_eq!(w.status, pb::WorkerStatus::Maintenance as i32);
    // GetWorker's id field takes a name too, and its name field an id.
    for lookup in [
        pb::get_worker_request::Lookup::Id(name.clone()),
        pb::get_worker_request::Lookup::Name(id.clone()),
    ] {
        let got = admin
            .client
            .get_worker(authed(
                pb::GetWorkerRequest {
                    lookup: Some(lookup),
                },
                &t,
            ))
            .await
            .unwrap()
            .into_inner()
            .worker
            .unwrap();
        assert_eq!(got.id, id);
        assert_eq!(got.labels.get("zone").map(String::as_str), Some("a"));
    }

    // An unknown name is NOT_FOUND everywhere, an empty one INVALID_ARGUMENT.
    let s = expect_code(
        admin
            .client
            .update_worker(authed(
                pb::UpdateWorkerRequest {
                    id: "no-such-host".into(),
                    notes: Some("x".into()),
                    ..Default::default()
                },
                &t,
            ))
            .await,
        Code::NotFound,
    );
    assert!(s.message().contains("no-such-host"), "{s:?}");
    expect_code(
        admin
            .client
            .set_worker_schedulable(authed(
                pb::SetWorkerSchedulableRequest {
                    id: "no-such-host".into(),
                    schedulable: true,
                },
                &t,
            ))
            .await,
        Code::NotFound,
    );
    expect_code(
        admin
            .client
            .set_worker_status(authed(
                pb::SetWorkerStatusRequest {
                    id: " ".into(),
                    status: pb::WorkerStatus::Active as i32,
                },
                &t,
            ))
            .await,
        Code::InvalidArgument,
    );
    expect_code(
        admin
            .client
            .delete_worker(authed(
                pb::DeleteWorkerRequest {
                    id: "no-such-host".into(),
                },
                &t,
            ))
            .await,
        Code::NotFound,
    );

    admin.delete(&name).await;
    assert!(admin.workers().await.iter().all(|w| w.id != id));
    let removed = admin.removed().await;
    assert_eq!(removed[0].worker_id, id, "the worker by that name went");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reinstalled_machine_is_refused_naming_the_old_worker_until_an_administrator_approves_the_takeover()
 {
    let app = spawn_app().await;
    let mut admin = Admin::of(&app).await;
    let token = admin.token(0, "").await.token;
    let old = enroll_host(app.channel.clone(), &token, "m-before", "rebuilt")
        .await
        .unwrap();
    let id = old.enrolled.worker_id.clone();
    let old_channel = mtls(&app, &old).await;
    let stream = connect_host(old_channel.clone(), "m-before", "rebuilt", "")
        .await
        .unwrap();
    admin
        .client
        .update_worker(authed(
            pb::UpdateWorkerRequest {
                id: id.clone(),
                labels: Some(pb::LabelMap {
                    labels: [("rack".to_owned(), "r7".to_owned())].into(),
                }),
                ..Default::default()
            },
            &admin.token,
        ))
        .await
        .unwrap();

    // The machine reinstalled (new machine id, same host name): refused,
    // naming the worker, its state and what to do. A single-use token is
    // not spent by the refusal.
    let once = admin.token(1, "").await;
    let s = expect_refused(
        enroll_host(app.channel.clone(), &once.token, "m-after", "rebuilt").await,
        Code::AlreadyExists,
        "WORKER_NAME_TAKEN",
    );
    for words in [
        id.as_str(),
        "active",
        "m-before",
        "m-after",
        "ApproveWorkerTakeover",
        "deletes worker",
    ] {
        assert!(
            s.message().contains(words),
            "{words:?} in {:?}",
            s.message()
        );
    }
    let named: Vec<_> = admin
        .workers()
        .await
        .into_iter()
        .filter(|w| w.name == "rebuilt")
        .collect();
    assert_eq!(named.len(), 1, "never two workers of one name");
    let pending = admin
        .worker(&id)
        .await
        .takeover
        .expect("the pending machine");
    assert_eq!(pending.machine_id, "m-after");
    assert!(pending.requested_at.is_some() && pending.approved_at.is_none());

    let approve = |machine_id: &str| pb::ApproveWorkerTakeoverRequest {
        id: "rebuilt".into(),
        machine_id: machine_id.into(),
    };
    // Not while the old machine is online: that is another machine with
    // the same host name, not a reinstall.
    expect_code(
        admin
            .client
            .approve_worker_takeover(authed(approve("m-after"), &admin.token))
            .await,
        Code::FailedPrecondition,
    );
    drop(stream);
    admin.until_offline(&id).await;
    // Only the machine that asked.
    expect_code(
        admin
            .client
            .approve_worker_takeover(authed(approve("m-other"), &admin.token))
            .await,
        Code::FailedPrecondition,
    );
    let w = admin
        .client
        .approve_worker_takeover(authed(approve("m-after"), &admin.token))
        .await
        .expect("approve by name")
        .into_inner()
        .worker
        .unwrap();
    assert!(w.takeover.unwrap().approved_at.is_some());

    // The same token now gets the machine in, as the old worker.
    let new = enroll_host(app.channel.clone(), &once.token, "m-after", "rebuilt")
        .await
        .expect("the approved takeover enrolls");
    assert_eq!(new.enrolled.worker_id, id, "the old record, not a new one");
    let w = admin.worker(&id).await;
    assert_eq!(w.machine_id, "m-after");
    assert_eq!(w.labels.get("rack").map(String::as_str), Some("r7"));
    assert!(w.takeover.is_none(), "the request is done");
    assert_eq!(admin.workers().await.len(), 1);
    // The old machine's certificate is void.
    expect_refused(
        connect_host(old_channel, "m-before", "rebuilt", "").await,
        Code::PermissionDenied,
        "CERTIFICATE_REPLACED",
    );
    let _stream = connect_host(mtls(&app, &new).await, "m-after", "rebuilt", "")
        .await
        .expect("the new machine connects as the worker");
    assert!(admin.worker("rebuilt").await.online);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_old_worker_lets_the_reinstalled_machine_enroll_as_a_new_worker() {
    let app = spawn_app().await;
    let mut admin = Admin::of(&app).await;
    let token = admin.token(0, "").await.token;
    let old = enroll_host(app.channel.clone(), &token, "m-gone", "reused")
        .await
        .unwrap();
    expect_refused(
        enroll_host(app.channel.clone(), &token, "m-fresh", "reused").await,
        Code::AlreadyExists,
        "WORKER_NAME_TAKEN",
    );
    admin.delete("reused").await;
    let new = enroll_host(app.channel.clone(), &token, "m-fresh", "reused")
        .await
        .expect("the name is free once the old worker is deleted");
    assert_ne!(new.enrolled.worker_id, old.enrolled.worker_id);
    let w = admin.worker("reused").await;
    assert_eq!((w.machine_id.as_str(), w.takeover), ("m-fresh", None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_renamed_to_another_workers_name_keeps_its_own() {
    let app = spawn_app().await;
    let mut admin = Admin::of(&app).await;
    let token = admin.token(0, "").await.token;
    enroll_host(app.channel.clone(), &token, "m-first", "alpha")
        .await
        .unwrap();
    let b = enroll_host(app.channel.clone(), &token, "m-second", "beta")
        .await
        .unwrap();
    let mut stream = connect_host(mtls(&app, &b).await, "m-second", "alpha", "")
        .await
        .expect("the stream stays up");
    stream.beat(true).await;
    let w = admin.worker(&b.enrolled.worker_id).await;
    assert_eq!(w.name, "beta", "alpha is taken");
    assert!(w.online);
    // A free name is taken up as before.
    drop(stream);
    admin.until_offline(&b.enrolled.worker_id).await;
    let _stream = connect_host(mtls(&app, &b).await, "m-second", "gamma", "")
        .await
        .unwrap();
    assert_eq!(admin.worker(&b.enrolled.worker_id).await.name, "gamma");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_worker_is_not_ready_and_the_ready_filter_lists_only_online_workers() {
    let app = spawn_app().await;
    let mut admin = Admin::of(&app).await;
    let token = admin.token(0, "").await.token;
    let gone = enroll(&app, &token, "m-goes").await.unwrap();
    let stays = enroll(&app, &token, "m-stays").await.unwrap();
    let mut a = connect(mtls(&app, &gone).await, "m-goes").await.unwrap();
    let mut b = connect(mtls(&app, &stays).await, "m-stays").await.unwrap();
    a.beat(true).await;
    b.beat(true).await;
    let gone_id = gone.enrolled.worker_id.clone();
    assert!(admin.worker(&gone_id).await.ready);
    drop(a);
    admin.until_offline(&gone_id).await;
    let w = admin.worker(&gone_id).await;
    assert_eq!(w.status, pb::WorkerStatus::Inactive as i32);
    assert!(!w.ready, "an INACTIVE worker is not ready");
    let ready: Vec<String> = listed(
        &mut admin,
        pb::ListWorkersRequest {
            ready: Some(true),
            ..Default::default()
        },
    )
    .await
    .into_iter()
    .map(|w| w.id)
    .collect();
    assert_eq!(ready, vec![stays.enrolled.worker_id.clone()]);
    let not_ready = listed(
        &mut admin,
        pb::ListWorkersRequest {
            ready: Some(false),
            ..Default::default()
        },
    )
    .await;
    assert!(not_ready.iter().any(|w| w.id == gone_id));
    // Back online, ready again from its hello.
    let _a = connect(mtls(&app, &gone).await, "m-goes").await.unwrap();
    assert!(admin.worker(&gone_id).await.ready);
    b.beat(true).await;
}
