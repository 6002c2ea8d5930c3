//! Failover benchmark (issue #13): how long after `kill -9` of a real
//! `minispod-agent` its Kubernetes node carries the `minispod.dev/offline`
//! NoExecute taint, and how long after the agent restarts the taint is gone.
//!
//! Starts the release control plane with `--kubeconfig` pointing at the
//! stand-in API server (kube-standin, in this process) or at the cluster
//! MINISPOD_TEST_KUBECONFIG names, one agent, and a Node carrying the
//! agent's worker id; then kills and restarts the agent `--rounds` times,
//! watching the node. Prints the figures (BENCHMARKS.md).
//!
//! `cargo build --release --bins && cargo run --release -p
//! minispod-control-plane --example failover_bench [-- --rounds 20 --grace 5s]`

use std::{
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::Context;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use minispod_kube_standin::TestCluster;
use minispod_proto::v1::{
    self as pb, auth_service_client::AuthServiceClient, worker_service_client::WorkerServiceClient,
};
use minispod_support::WORKER_ID_LABEL;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

#[path = "common/bench.rs"]
mod bench;
use bench::{ADMIN_EMAIL, ADMIN_PASSWORD, authed, free_port, release_bin};
const OFFLINE_TAINT: &str = "minispod.dev/offline";

fn tainted(n: &Node) -> bool {
    n.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|t| {
            t.iter()
                .any(|t| t.key == OFFLINE_TAINT && t.effect == "NoExecute")
        })
}

/// Polls the node every 5 ms until `want`; when it was seen so.
async fn until_node(nodes: &Api<Node>, name: &str, want: bool) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if nodes.get(name).await.is_ok_and(|n| tainted(&n) == want) {
            return Ok(Instant::now());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the node's taint never became {want}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn spawn_agent(
    port: u16,
    ca_hash: &str,
    state: &Path,
    token: &str,
) -> anyhow::Result<tokio::process::Child> {
    tokio::process::Command::new(release_bin("minispod-agent")?)
        .args(["run", "--server", &format!("https://localhost:{port}")])
        .arg("--state-dir")
        .arg(state)
        .args([
            "--token",
            token,
            "--ca-hash",
            ca_hash,
            "--max-backoff",
            "1s",
        ])
        .arg("--k3s-config")
        .arg(state.join("k3s.yaml"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("start minispod-agent")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn summary(name: &str, mut v: Vec<Duration>) {
    v.sort();
    println!(
        "{name}: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms ({} rounds)",
        percentile(&v, 0.5).as_secs_f64() * 1e3,
        percentile(&v, 0.99).as_secs_f64() * 1e3,
        v.last().unwrap().as_secs_f64() * 1e3,
        v.len()
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut rounds = 10usize;
    let mut grace = "5s".to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rounds" => rounds = args.next().context("--rounds N")?.parse()?,
            "--grace" => grace = args.next().context("--grace DURATION")?,
            other => anyhow::bail!("unknown argument {other:?} (--rounds N, --grace DURATION)"),
        }
    }
    let cluster = TestCluster::start().await?;
    let dir = std::env::temp_dir().join(format!("minispod-failover-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let port = free_port();
    let _cp = tokio::process::Command::new(release_bin("minispod-control-plane")?)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(dir.join("cp"))
        .args([
            "--admin-email",
            ADMIN_EMAIL,
            "--admin-password",
            ADMIN_PASSWORD,
        ])
        .arg("--kubeconfig")
        .arg(cluster.kubeconfig_path())
        .args([
            "--offline-taint-grace",
            &grace,
            "--offline-taint-after-start",
            "0s",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("control-plane.log"))?)
        .kill_on_drop(true)
        .spawn()
        .context("start the control plane")?;

    // Sign in once it answers.
    let (channel, admin) = loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let Ok(ca_pem) = std::fs::read_to_string(dir.join("cp/pki/ca.crt")) else {
            continue;
        };
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca_pem))
            .domain_name("localhost");
        let Ok(ch) = Channel::from_shared(format!("https://127.0.0.1:{port}"))?
            .tls_config(tls)?
            .connect()
            .await
        else {
            continue;
        };
        let login = pb::LoginRequest {
            email: ADMIN_EMAIL.into(),
            password: ADMIN_PASSWORD.into(),
            ..Default::default()
        };
        if let Ok(r) = AuthServiceClient::new(ch.clone()).login(login).await {
            break (ch, r.into_inner().access_token);
        }
    };
    let out = std::process::Command::new(release_bin("minispod-control-plane")?)
        .args(["ca-hash", "--data-dir"])
        .arg(dir.join("cp"))
        .output()?;
    let ca_hash = String::from_utf8(out.stdout)?.trim().to_owned();
    let mut workers = WorkerServiceClient::new(channel);
    let token = workers
        .create_enrollment_token(authed(
            pb::CreateEnrollmentTokenRequest {
                ttl_seconds: 3600,
                max_uses: 0,
                description: "failover bench".into(),
                machine_id: String::new(),
            },
            &admin,
        ))
        .await?
        .into_inner()
        .token;

    let state = dir.join("agent");
    let mut agent = spawn_agent(port, &ca_hash, &state, &token)?;
    let worker_id = loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let list = workers
            .list_workers(authed(
                pb::ListWorkersRequest {
                    online: Some(true),
                    ..Default::default()
                },
                &admin,
            ))
            .await?;
        if let Some(w) = list.into_inner().workers.into_iter().next() {
            break w.id;
        }
    };
    let node = cluster
        .create_node("failover", &[(WORKER_ID_LABEL, &worker_id)])
        .await?;
    let name = node.metadata.name.context("node name")?;
    let nodes: Api<Node> = Api::all(cluster.client().await);
    // Linked: the worker shows the node.
    loop {
        let w = workers
            .get_worker(authed(
                pb::GetWorkerRequest {
                    lookup: Some(pb::get_worker_request::Lookup::Id(worker_id.clone())),
                },
                &admin,
            ))
            .await?
            .into_inner()
            .worker
            .unwrap_or_default();
        if w.node.is_some() && w.status == pb::WorkerStatus::Active as i32 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    println!("# MiniSpod failover benchmark");
    println!(
        "cluster: {}; offline-taint grace {grace}; {rounds} rounds",
        if cluster.is_real() {
            "real (MINISPOD_TEST_KUBECONFIG)"
        } else {
            "kube-standin"
        }
    );
    let (mut to_taint, mut to_untaint) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let pid = agent.id().context("agent pid")?.to_string();
        let killed = Instant::now();
        anyhow::ensure!(
            std::process::Command::new("kill")
                .args(["-KILL", &pid])
                .status()?
                .success()
        );
        let _ = agent.wait().await;
        to_taint.push(until_node(&nodes, &name, true).await? - killed);
        let restarted = Instant::now();
        agent = spawn_agent(port, &ca_hash, &state, &token)?;
        to_untaint.push(until_node(&nodes, &name, false).await? - restarted);
    }
    let grace_d = minispod_support::parse_duration(&grace).map_err(anyhow::Error::msg)?;
    summary("kill -9 to NoExecute taint on the node", to_taint.clone());
    summary(
        "  beyond the grace",
        to_taint.iter().map(|d| d.saturating_sub(grace_d)).collect(),
    );
    summary(
        "agent restart to taint removed (process start, TLS, stream, patch)",
        to_untaint,
    );
    println!(
        "Kubernetes alone: NotReady after --node-monitor-grace-period (50 s since 1.32, 40 s before), NoExecute eviction 300 s after that (default tolerationSeconds)"
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
