//! `minispod-swarm`: N simulated agents in one process (`run`), and the fleet
//! benchmark that starts a control plane and a swarm and measures them
//! (`bench`).

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Context;
use clap::{Parser, Subcommand};
use minispod_agent::{
    swarm::{Swarm, SwarmConfig, raise_fd_limit},
    tls::{self, Trust},
};
use minispod_proto::v1::{
    self as pb, WorkerStatus, auth_service_client::AuthServiceClient,
    notification_service_client::NotificationServiceClient,
    worker_service_client::WorkerServiceClient,
};
use tonic::{Request, transport::Channel};

/// Simulated agents for load and fault testing.
#[derive(Debug, Parser)]
#[command(name = "minispod-swarm", version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run N simulated agents against a control plane until Ctrl-C.
    Run {
        /// Control plane URL (repeatable).
        #[arg(long = "server", required = true)]
        servers: Vec<String>,
        /// Enrollment token (with enough uses for every agent).
        #[arg(long)]
        token: String,
        /// CA pin, sha256:<hex>.
        #[arg(long)]
        ca_hash: String,
        /// Number of agents.
        #[arg(long, default_value_t = 100)]
        agents: usize,
        /// Index of the first agent (agents are named swarm-<index>), so
        /// several swarms can join one control plane without colliding.
        #[arg(long, default_value_t = 0)]
        first_index: usize,
        /// Where the agents keep their keys (one folder each); reused on restart.
        #[arg(long, default_value = "minispod-swarm-state")]
        state_dir: PathBuf,
        /// Enrollments in flight at once.
        #[arg(long, default_value_t = 64)]
        enroll_concurrency: usize,
        /// Longest reconnect backoff.
        #[arg(long, default_value = "30s", value_parser = minispod_support::parse_duration)]
        max_backoff: Duration,
    },
    /// Start a control plane (the sibling minispod-control-plane binary) and
    /// a swarm for each --agents value, and print the figures.
    Bench {
        /// Fleet sizes to measure (repeatable).
        #[arg(long = "agents", default_values_t = [1000usize, 10000])]
        agents: Vec<usize>,
        /// Heartbeat interval the control plane asks for.
        #[arg(long, default_value = "5s", value_parser = minispod_support::parse_duration)]
        heartbeat_interval: Duration,
        /// Steady-state measurement window.
        #[arg(long, default_value = "30s", value_parser = minispod_support::parse_duration)]
        window: Duration,
    },
    /// Time ListWorkers and GetWorkerStats, as the benchmark does, against a
    /// running control plane (to profile it under a fleet started with `run`).
    Probe {
        /// Control plane URL.
        #[arg(long)]
        server: String,
        /// PEM file of the control plane's CA.
        #[arg(long)]
        ca_file: PathBuf,
        /// Administrator email.
        #[arg(long)]
        email: String,
        /// Administrator password.
        #[arg(long, env = "MINISPOD_PASSWORD", hide_env_values = true)]
        password: String,
        /// Calls of each RPC.
        #[arg(long, default_value_t = 200)]
        rounds: usize,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let fds = raise_fd_limit();
    match Cli::parse().command {
        Cmd::Run {
            servers,
            token,
            ca_hash,
            agents,
            first_index,
            state_dir,
            enroll_concurrency,
            max_backoff,
        } => {
            let started = Instant::now();
            let swarm = Swarm::start(SwarmConfig {
                servers,
                token: token.into(),
                trust: Trust::Pin(ca_hash),
                agents,
                first_index,
                state_root: state_dir,
                enroll_concurrency,
                max_backoff,
            })
            .await?;
            println!(
                "{agents} agents enrolled in {:.1?} (open-file limit {fds})",
                started.elapsed()
            );
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tokio::select! {
                    _ = tick.tick() => println!("connected {}/{agents}, heartbeats {}, reconnects {}", swarm.connected(), swarm.heartbeats(), swarm.reconnects()),
                    _ = tokio::signal::ctrl_c() => break,
                }
            }
            swarm.stop().await;
            Ok(())
        }
        Cmd::Bench {
            agents,
            heartbeat_interval,
            window,
        } => {
            println!("# MiniSpod fleet benchmark");
            println!(
                "machine: {} CPUs, open-file limit {fds}",
                std::thread::available_parallelism().map_or(0, |n| n.get())
            );
            for n in agents {
                bench(n, heartbeat_interval, window).await?;
            }
            Ok(())
        }
        Cmd::Probe {
            server,
            ca_file,
            email,
            password,
            rounds,
        } => {
            let channel = connect(&server, &ca_file).await?;
            let admin = AuthServiceClient::new(channel.clone())
                .login(pb::LoginRequest {
                    email,
                    password,
                    ..Default::default()
                })
                .await?
                .into_inner()
                .access_token;
            let times =
                time_queries(&mut WorkerServiceClient::new(channel), &admin, rounds).await?;
            print_queries(&times);
            Ok(())
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_or(0, |a| a.port())
}

/// (RSS KiB, CPU ticks) of a process.
fn proc_stats(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // Fields after the command: state is [0]; utime [11], stime [12].
    (
        rss,
        f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0),
    )
}

async fn scrape(addr: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut c) = tokio::net::TcpStream::connect(addr).await else {
        return String::new();
    };
    let _ = c
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let mut body = String::new();
    let _ = c.read_to_string(&mut body).await;
    body
}

fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn authed<T>(msg: T, token: &str) -> Request<T> {
    let mut r = Request::new(msg);
    if let Ok(v) = format!("Bearer {token}").parse() {
        r.metadata_mut().insert("authorization", v);
    }
    r
}

async fn bench(n: usize, heartbeat: Duration, window: Duration) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let cp_bin = exe.with_file_name("minispod-control-plane");
    anyhow::ensure!(
        cp_bin.exists(),
        "build the control plane first: {} is missing",
        cp_bin.display()
    );
    let dir = std::env::temp_dir().join(format!("minispod-bench-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (port, mport) = (free_port(), free_port());
    let log = std::fs::File::create(dir.join("control-plane.log"))?;
    let mut cp = tokio::process::Command::new(&cp_bin)
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--metrics-listen",
            &format!("127.0.0.1:{mport}"),
        ])
        .arg("--data-dir")
        .arg(dir.join("cp"))
        .args([
            "--admin-email",
            "bench@example.org",
            "--admin-password",
            "bench-password",
        ])
        .args([
            "--heartbeat-interval",
            &format!("{}ms", heartbeat.as_millis()),
        ])
        .args([
            "--enroll-burst",
            "1000000",
            "--enroll-per-second",
            "1000000",
        ])
        // The swarm's agents all share 127.0.0.1; real ones each have an
        // address of their own.
        .args([
            "--max-connections-per-address",
            "0",
            "--max-handshakes-per-address",
            "1000000",
        ])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .context("start the control plane")?;
    let pid = cp.id().context("control plane pid")?;
    let url = format!("https://localhost:{port}");
    let ca_path = dir.join("cp/pki/ca.crt");
    let channel = connect(&url, &ca_path).await?;
    let admin = AuthServiceClient::new(channel.clone())
        .login(pb::LoginRequest {
            email: "bench@example.org".into(),
            password: "bench-password".into(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .access_token;
    let mut workers = WorkerServiceClient::new(channel.clone());
    let token = workers
        .create_enrollment_token(authed(
            pb::CreateEnrollmentTokenRequest {
                ttl_seconds: 86_400,
                max_uses: 0,
                description: "bench".into(),
                ..Default::default()
            },
            &admin,
        ))
        .await?
        .into_inner()
        .token;
    // Thresholds on every figure, never crossed by the swarm's figures
    // (CPU 5-14 %, memory 25 %, disk 10 %): every metrics flush is
    // evaluated against them, as an operator's fleet would be.
    NotificationServiceClient::new(channel.clone())
        .set_worker_thresholds(authed(
            pb::SetWorkerThresholdsRequest {
                thresholds: [
                    pb::WorkerMetric::Cpu,
                    pb::WorkerMetric::Memory,
                    pb::WorkerMetric::Disk,
                ]
                .map(|m| pb::WorkerThreshold {
                    metric: m as i32,
                    worker_id: String::new(),
                    above_percent: 90.0,
                    clear_below_percent: 80.0,
                    for_seconds: 300,
                })
                .into(),
            },
            &admin,
        ))
        .await
        .context("set the workers' thresholds")?;
    let (rss_base, _) = proc_stats(pid);

    // A watcher records when each worker was last seen going ACTIVE / INACTIVE.
    let seen: Arc<Mutex<HashMap<String, (i32, i64)>>> = Arc::default();
    let active_count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut watch = workers
        .watch_workers(authed(pb::WatchWorkersRequest::default(), &admin))
        .await?
        .into_inner();
    {
        let (seen, active_count) = (seen.clone(), active_count.clone());
        tokio::spawn(async move {
            while let Ok(Some(e)) = watch.message().await {
                let (Some(w), Some(at)) = (e.worker, e.observed_at) else {
                    continue;
                };
                let at = at.seconds * 1000 + i64::from(at.nanos) / 1_000_000;
                let mut s = seen.lock().unwrap_or_else(|p| p.into_inner());
                let before = s.get(&w.id).map(|x| x.0);
                if w.status == WorkerStatus::Active as i32
                    && before != Some(WorkerStatus::Active as i32)
                {
                    active_count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                } else if w.status != WorkerStatus::Active as i32
                    && before == Some(WorkerStatus::Active as i32)
                {
                    active_count.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                }
                s.insert(w.id, (w.status, at));
            }
        });
    }

    let started = Instant::now();
    let swarm = Swarm::start(SwarmConfig {
        servers: vec![url.clone()],
        token: token.into(),
        trust: Trust::CaPem(std::fs::read_to_string(&ca_path)?),
        agents: n,
        first_index: 0,
        state_root: dir.join("agents"),
        enroll_concurrency: 64,
        max_backoff: Duration::from_secs(30),
    })
    .await?;
    let enrolled_in = started.elapsed();
    while active_count.load(std::sync::atomic::Ordering::Relaxed) < n {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "not all ACTIVE after 600 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let all_active = started.elapsed();

    // Steady state.
    tokio::time::sleep(heartbeat * 2).await;
    let m0 = scrape(&format!("127.0.0.1:{mport}")).await;
    let (_, cpu0) = proc_stats(pid);
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    let secs = t0.elapsed().as_secs_f64();
    let m1 = scrape(&format!("127.0.0.1:{mport}")).await;
    let (rss, cpu1) = proc_stats(pid);
    let ticks = 100.0; // USER_HZ
    let cpu_cores = (cpu1 - cpu0) as f64 / ticks / secs;
    let hb_rate = (sample(&m1, "minispod_heartbeats_received_total")
        - sample(&m0, "minispod_heartbeats_received_total"))
        / secs;
    let tx_rate = (sample(&m1, "minispod_store_flush_batch_workers_count")
        - sample(&m0, "minispod_store_flush_batch_workers_count"))
        / secs;
    // The history recorder writes once a minute: over a window shorter
    // than a minute these may be 0.
    let delta = |name: &str| sample(&m1, name) - sample(&m0, name);
    let history_rows = delta("minispod_history_rows_written_total");
    let history_tx = delta("minispod_history_transactions_total");
    let history_ms = delta("minispod_history_write_microseconds_total") / 1000.0;

    // Listings over the whole fleet, with filters.
    let times = time_queries(&mut workers, &admin, 200).await?;

    // Offline detection: drop a sample of connections abruptly.
    let sample_n = (n / 10).clamp(1, 200);
    let mut killed = Vec::with_capacity(sample_n);
    for a in swarm
        .agents
        .iter()
        .step_by((n / sample_n).max(1))
        .take(sample_n)
    {
        killed.push((a.worker_id.clone(), now_ms()));
        a.kill();
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut offline_ms: Vec<f64> = {
        let s = seen.lock().unwrap_or_else(|p| p.into_inner());
        killed
            .iter()
            .filter_map(|(id, at)| {
                s.get(id)
                    .filter(|x| x.0 == WorkerStatus::Inactive as i32)
                    .map(|x| (x.1 - at) as f64)
            })
            .collect()
    };
    offline_ms.sort_by(f64::total_cmp);
    let detected = offline_ms.len();

    println!("\n## N = {n} agents, heartbeat every {heartbeat:?}");
    println!(
        "enrollment: all {n} enrolled in {:.1?} ({:.0}/s); all ACTIVE after {:.1?}",
        enrolled_in,
        n as f64 / enrolled_in.as_secs_f64(),
        all_active
    );
    println!(
        "control plane RSS: {:.1} MiB total, {:.1} KiB per agent (above the idle {:.1} MiB)",
        rss as f64 / 1024.0,
        rss.saturating_sub(rss_base) as f64 / n as f64,
        rss_base as f64 / 1024.0
    );
    println!("control plane CPU at steady state: {:.3} cores", cpu_cores);
    println!(
        "heartbeats absorbed: {hb_rate:.0}/s; store transactions for heartbeats: {tx_rate:.2}/s"
    );
    println!(
        "history: {history_rows:.0} rows in {history_tx:.0} transactions ({:.1} rows/s, {:.2} tx/s), {history_ms:.0} ms of writing over the window",
        history_rows / secs,
        history_tx / secs
    );
    println!(
        "offline detection ({detected}/{sample_n} seen INACTIVE by a watcher): p50 {:.0} ms, p99 {:.0} ms",
        pct(&offline_ms, 0.5),
        pct(&offline_ms, 0.99)
    );
    print_queries(&times);

    swarm.stop().await;
    let _ = cp.start_kill();
    let _ = cp.wait().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Latencies in ms, each sorted.
struct QueryTimes {
    /// Filtered ListWorkers: first page of 50, ACTIVE and online, every
    /// other call searching.
    list: Vec<f64>,
    /// GetWorkerStats.
    stats: Vec<f64>,
    /// ListEnrollmentTokens (one token): the cost of any authenticated call
    /// on this loaded machine, for scale.
    floor: Vec<f64>,
}

/// Times `rounds` calls of each measured RPC, one after the other.
async fn time_queries(
    workers: &mut WorkerServiceClient<Channel>,
    admin: &str,
    rounds: usize,
) -> anyhow::Result<QueryTimes> {
    let mut list_ms = Vec::with_capacity(rounds);
    let mut stats_ms = Vec::with_capacity(rounds);
    let mut floor_ms = Vec::with_capacity(rounds);
    for i in 0..rounds {
        let req = pb::ListWorkersRequest {
            page_size: 50,
            status: WorkerStatus::Active as i32,
            online: Some(true),
            search: if i % 2 == 0 {
                "swarm-0".into()
            } else {
                String::new()
            },
            ..Default::default()
        };
        let t = Instant::now();
        workers.list_workers(authed(req, admin)).await?;
        list_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        workers
            .get_worker_stats(authed(pb::GetWorkerStatsRequest {}, admin))
            .await?;
        stats_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        workers
            .list_enrollment_tokens(authed(pb::ListEnrollmentTokensRequest::default(), admin))
            .await?;
        floor_ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    for v in [&mut list_ms, &mut stats_ms, &mut floor_ms] {
        v.sort_by(f64::total_cmp);
    }
    Ok(QueryTimes {
        list: list_ms,
        stats: stats_ms,
        floor: floor_ms,
    })
}

fn print_queries(t: &QueryTimes) {
    for (what, ms) in [
        ("ListWorkers (filtered, page 50)", &t.list),
        ("GetWorkerStats", &t.stats),
        (
            "ListEnrollmentTokens (any authenticated call, for scale)",
            &t.floor,
        ),
    ] {
        println!(
            "{what}: p50 {:.2} ms, p99 {:.2} ms",
            pct(ms, 0.5),
            pct(ms, 0.99)
        );
    }
}

async fn connect(url: &str, ca_path: &Path) -> anyhow::Result<Channel> {
    for _ in 0..200 {
        if let Ok(pem) = std::fs::read_to_string(ca_path)
            && let Ok(ch) = tls::channel(url, tls::client_config(&Trust::CaPem(pem), None)?).await
        {
            return Ok(ch);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("the control plane did not come up")
}
