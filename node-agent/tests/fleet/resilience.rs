//! Staying up: a silent partition caught by keepalives, the metrics as
//! agents come and go, and hostile input refused while serving.

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use minispod_proto::v1::{self as pb, WorkerStatus, agent_service_client::AgentServiceClient};
use tonic::Code;

use crate::harness::*;

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
