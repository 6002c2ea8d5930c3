use anyhow::Context;
use minispod_agent::{
    config::{AgentArgs, Cli, Command, LogFormat},
    enroll, facts, k3s,
    state::StateDir,
    stream::{self, StreamConfig},
    tls::Trust,
};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,h2=warn,hyper=warn,tower=warn"));
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Text => registry
            .with(fmt::layer().with_writer(std::io::stderr))
            .init(),
        LogFormat::Json => registry
            .with(fmt::layer().json().with_writer(std::io::stderr))
            .init(),
    }
}

/// Trust for enrollment: the CA file, or the pin.
fn enrollment_trust(args: &AgentArgs) -> anyhow::Result<Trust> {
    if let Some(f) = &args.ca_file {
        return Ok(Trust::CaPem(
            std::fs::read_to_string(f).with_context(|| format!("read {}", f.display()))?,
        ));
    }
    match &args.ca_hash {
        Some(h) => Ok(Trust::Pin(h.clone())),
        None => anyhow::bail!("not enrolled yet: give --ca-hash (or --ca-file) with --token"),
    }
}

async fn start(args: AgentArgs, keep_running: bool) -> anyhow::Result<()> {
    init_tracing(args.log_format);
    let state = StateDir::open(&args.state_dir)?;
    let machine_id = match &args.machine_id {
        Some(id) => id.clone(),
        None => state.machine_id()?,
    };
    let server_host = args
        .servers
        .first()
        .and_then(|s| s.parse::<http::Uri>().ok())
        .and_then(|u| u.host().map(str::to_owned));
    let facts = facts::machine_facts(&machine_id, server_host.as_deref());

    let metrics = std::sync::Arc::new(minispod_agent::metrics::AgentMetrics::default());
    if let Some(addr) = args.metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listen for metrics on {addr}"))?;
        let m = metrics.clone();
        let render: minispod_proto::support::Render = std::sync::Arc::new(move || {
            let text = m.render();
            Box::pin(async move { text })
        });
        tokio::spawn(minispod_proto::support::serve_metrics(listener, render));
    }
    let mut join_error = None;
    let creds = match state.credentials()? {
        Some(c) => c,
        None => {
            let token = args
                .token
                .clone()
                .context("not enrolled yet: give --token (and --ca-hash)")?;
            let (creds, join) = enroll::enroll(
                &args.servers,
                &enrollment_trust(&args)?,
                &token,
                facts.clone(),
                &state,
            )
            .await?;
            metrics
                .enrollments
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if let Err(e) = k3s::join(
                &args.k3s_config,
                &args.k3s_join_command,
                &join.k3s_server_url,
                &join.k3s_token,
            )
            .await
            {
                tracing::error!(error = %e, "K3s join hook failed; the worker reports not ready");
                join_error = Some(e);
            }
            creds
        }
    };
    if !keep_running {
        println!("{}", creds.identity.worker_id);
        return match join_error {
            Some(e) => anyhow::bail!(
                "enrolled as {}, but the K3s join hook failed: {e}",
                creds.identity.worker_id
            ),
            None => Ok(()),
        };
    }

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {},
        }
        tracing::info!("shutdown requested");
        let _ = stop_tx.send(true);
    });
    let cfg = StreamConfig {
        servers: args.servers.clone(),
        state,
        facts,
        token: args.token.clone(),
        join_error,
        max_backoff: args.max_backoff,
        metrics: metrics.clone(),
        heartbeats: facts::HeartbeatSource::Machine,
    };
    // Watchdog pings while the process runs; a hung runtime stops them and
    // systemd restarts the agent.
    let _watchdog = minispod_proto::support::spawn_watchdog(|| true);
    stream::run(cfg, creds, stop_rx).await
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::from_env().command {
        Command::Run(args) => start(args, true).await,
        Command::Join(args) => start(args, false).await,
    }
}
