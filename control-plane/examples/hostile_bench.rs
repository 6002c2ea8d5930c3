//! Hostile-input benchmark: starts the release control plane, floods it the
//! ways issue #12 measured, and prints its RSS before, at the peak of and
//! after each flood, and how long a real `minispod-agent` took to enroll and
//! go ACTIVE while the flood ran.
//!
//! `cargo build --release --bins && cargo run --release -p
//! minispod-control-plane --example hostile_bench [-- SERVE FLAGS]`
//! (BENCHMARKS.md); flags after `--` go to `minispod-control-plane serve`.

use std::{
    net::IpAddr,
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::Context;
use bytes::Bytes;
use minispod_proto::v1::{
    self as pb, auth_service_client::AuthServiceClient, worker_service_client::WorkerServiceClient,
};
use tokio::{net::TcpSocket, sync::mpsc};
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

use minispod_testkit::raw_grpc;

#[path = "common/bench.rs"]
mod bench;
use bench::{ADMIN_EMAIL, ADMIN_PASSWORD, authed, free_port, release_bin};

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

struct Bench {
    port: u16,
    pid: u32,
    ca_pem: String,
    ca_hash: String,
    dir: PathBuf,
    admin: String,
    channel: Channel,
}

async fn channel_from(b: &Bench, local: IpAddr) -> anyhow::Result<Channel> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&b.ca_pem))
        .domain_name("localhost");
    Ok(
        Channel::from_shared(format!("https://127.0.0.1:{}", b.port))?
            .tls_config(tls)?
            .local_address(Some(local))
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await?,
    )
}

/// Sends the headers of a call and an unfinished message announcing
/// `announce` bytes of which `send` are sent; the stream stays open until
/// the returned sender is dropped.
fn unfinished_call(
    channel: &Channel,
    path: &str,
    announce: u32,
    send: usize,
) -> mpsc::Sender<Bytes> {
    let (tx, _status) = raw_grpc::raw_call(channel, path);
    let feed = tx.clone();
    tokio::spawn(async move {
        let _ = feed.send(raw_grpc::message_header(announce)).await;
        let chunk = Bytes::from(vec![0u8; 16 * 1024]);
        let mut sent = 0;
        while sent < send {
            if feed.send(chunk.clone()).await.is_err() {
                break;
            }
            sent += chunk.len();
        }
    });
    tx
}

/// Starts a real agent and returns how long it took to be ACTIVE.
async fn real_agent(b: &Bench, name: &str) -> anyhow::Result<Duration> {
    let token = WorkerServiceClient::new(b.channel.clone())
        .create_enrollment_token(authed(
            pb::CreateEnrollmentTokenRequest {
                ttl_seconds: 600,
                max_uses: 1,
                description: format!("hostile bench {name}"),
                ..Default::default()
            },
            &b.admin,
        ))
        .await?
        .into_inner()
        .token;
    let state = b.dir.join(format!("agent-{name}"));
    let started = Instant::now();
    let mut child = tokio::process::Command::new(release_bin("minispod-agent")?)
        .arg("run")
        .args(["--server", &format!("https://localhost:{}", b.port)])
        .arg("--state-dir")
        .arg(&state)
        .args(["--token", &token, "--ca-hash", &b.ca_hash])
        .args(["--machine-id", &format!("hostile-bench-{name}")])
        .arg("--k3s-config")
        .arg(state.join("k3s.yaml"))
        .args(["--max-backoff", "1s"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let mut workers = WorkerServiceClient::new(b.channel.clone());
    let deadline = started + Duration::from_secs(60);
    loop {
        let list = workers
            .list_workers(authed(
                pb::ListWorkersRequest {
                    search: format!("hostile-bench-{name}"),
                    ..Default::default()
                },
                &b.admin,
            ))
            .await?
            .into_inner();
        if list
            .workers
            .iter()
            .any(|w| w.status == pb::WorkerStatus::Active as i32)
        {
            let took = started.elapsed();
            let _ = child.kill().await;
            return Ok(took);
        }
        anyhow::ensure!(Instant::now() < deadline, "agent {name} not ACTIVE in 60 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Figures {
    before: u64,
    peak: u64,
    after: u64,
    agent: Duration,
    note: String,
}

/// Samples RSS every 100 ms while `flood` and a real agent run, then 5 s
/// after the flood ended.
async fn measure<F>(b: &Bench, name: &str, flood: F) -> anyhow::Result<Figures>
where
    F: std::future::Future<Output = anyhow::Result<(String, Box<dyn std::any::Any + Send>)>>,
{
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = rss_kib(b.pid);
    let pid = b.pid;
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let sampler = tokio::spawn(async move {
        let mut peak = 0;
        loop {
            peak = peak.max(rss_kib(pid));
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = stop_rx.changed() => return peak.max(rss_kib(pid)),
            }
        }
    });
    let (note, held) = flood.await?;
    // The flood holds what it opened while a real agent joins.
    let agent = real_agent(b, name).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _ = stop_tx.send(true);
    let peak = sampler.await?;
    drop(held);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = rss_kib(b.pid);
    Ok(Figures {
        before,
        peak,
        after,
        agent,
        note,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("minispod-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let port = free_port();
    let log = std::fs::File::create(dir.join("control-plane.log"))?;
    let mut cp = tokio::process::Command::new(release_bin("minispod-control-plane")?)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(dir.join("cp"))
        .args([
            "--admin-email",
            ADMIN_EMAIL,
            "--admin-password",
            ADMIN_PASSWORD,
        ])
        // Extra flags for the control plane, to compare settings.
        .args(std::env::args().skip(1))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .context("start the control plane")?;
    let pid = cp.id().context("pid")?;
    let ca_path = dir.join("cp/pki/ca.crt");
    let mut b = None;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let Ok(ca_pem) = std::fs::read_to_string(&ca_path) else {
            continue;
        };
        let mut probe = Bench {
            port,
            pid,
            ca_pem,
            ca_hash: String::new(),
            dir: dir.clone(),
            admin: String::new(),
            channel: Channel::from_static("http://unused").connect_lazy(),
        };
        let Ok(ch) = channel_from(&probe, "127.0.0.1".parse()?).await else {
            continue;
        };
        let Ok(login) = AuthServiceClient::new(ch.clone())
            .login(pb::LoginRequest {
                email: ADMIN_EMAIL.into(),
                password: ADMIN_PASSWORD.into(),
                ..Default::default()
            })
            .await
        else {
            continue;
        };
        probe.admin = login.into_inner().access_token;
        probe.channel = ch;
        let out = std::process::Command::new(release_bin("minispod-control-plane")?)
            .args(["ca-hash", "--data-dir"])
            .arg(dir.join("cp"))
            .output()?;
        probe.ca_hash = String::from_utf8(out.stdout)?.trim().to_owned();
        b = Some(probe);
        break;
    }
    let b = b.context("the control plane did not come up")?;
    let mut rows = Vec::new();

    // 1. Oversized logins: 20 calls with 1 MB emails.
    let f = measure(&b, "oversized-logins", async {
        let mut refused = 0;
        for _ in 0..20 {
            let r = AuthServiceClient::new(b.channel.clone())
                .login(pb::LoginRequest {
                    email: format!("{}@example.org", "a".repeat(1 << 20)),
                    password: "p".repeat(200),
                    ..Default::default()
                })
                .await;
            if r.is_err() {
                refused += 1;
            }
        }
        Ok((format!("{refused}/20 refused"), Box::new(()) as _))
    })
    .await?;
    rows.push(("20 Login calls with 1 MB emails", f));

    // 2. Unfinished messages: 8 connections x 400 streams, each announcing
    //    500 KiB (under the catalog's 512 KiB limit) and sending 400 KiB.
    let f = measure(&b, "unfinished", async {
        let mut held = Vec::new();
        for _ in 0..8 {
            let ch = channel_from(&b, "127.0.0.1".parse()?).await?;
            for _ in 0..400 {
                held.push(unfinished_call(
                    &ch,
                    "/minispod.v1.CatalogService/ListServices",
                    500 * 1024,
                    400 * 1024,
                ));
            }
            held.push(unfinished_call(
                &ch,
                "/minispod.v1.CatalogService/ListServices",
                1,
                0,
            ));
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        Ok((
            "3,200 streams, 1.25 GB announced".to_string(),
            Box::new(held) as _,
        ))
    })
    .await?;
    rows.push(("Unfinished 500 KiB messages on 3,200 streams", f));

    // 3. Stalled TLS handshakes: 4,000 TCP connections that never say
    //    hello, from 40 loopback addresses.
    let f = measure(&b, "handshakes", async {
        let mut held = Vec::new();
        let mut open = 0;
        for i in 0..4000u32 {
            let local: IpAddr = format!("127.0.1.{}", 1 + i % 40).parse()?;
            let s = TcpSocket::new_v4()?;
            s.bind((local, 0).into())?;
            if let Ok(c) = s.connect(([127, 0, 0, 1], port).into()).await {
                open += 1;
                held.push(c);
            }
        }
        Ok((
            format!("{open} connected; the server keeps 16 per address pending"),
            Box::new(held) as _,
        ))
    })
    .await?;
    rows.push(("4,000 stalled TLS handshakes from 40 addresses", f));

    // 4. Idle TLS connections from one address.
    let f = measure(&b, "connections", async {
        let mut held = Vec::new();
        let mut refused = 0;
        for _ in 0..1000 {
            match channel_from(&b, "127.0.2.1".parse()?).await {
                Ok(c) => held.push(c),
                Err(_) => refused += 1,
            }
        }
        Ok((
            format!("{} served, {refused} refused", held.len()),
            Box::new(held) as _,
        ))
    })
    .await?;
    rows.push(("1,000 TLS connections from one address", f));

    println!("| Flood | RSS before | peak | 5 s after | real agent ACTIVE in | notes |");
    println!("|---|---|---|---|---|---|");
    for (name, f) in rows {
        println!(
            "| {name} | {:.1} MB | {:.1} MB | {:.1} MB | {} ms | {} |",
            f.before as f64 / 1024.0,
            f.peak as f64 / 1024.0,
            f.after as f64 / 1024.0,
            f.agent.as_millis(),
            f.note
        );
    }
    let _ = cp.kill().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
