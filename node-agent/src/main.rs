use anyhow::Context;
use minispod_agent::{
    config::{AgentArgs, Cli, Command, LogFormat},
    enroll::{self, EnrollError},
    facts,
    k3s::{self, JoinHook},
    state::{Credentials, StateDir},
    stream::{self, StreamConfig},
    tls::{self, Trust},
    token::TokenSource,
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

/// Trust for an enrollment without saved credentials: the CA file, or the
/// pin; None when neither is given.
fn enrollment_trust(args: &AgentArgs) -> anyhow::Result<Option<Trust>> {
    if let Some(f) = &args.ca_file {
        return Ok(Some(Trust::CaPem(
            std::fs::read_to_string(f).with_context(|| format!("read {}", f.display()))?,
        )));
    }
    Ok(match &args.ca_hash {
        Some(h) => Some(Trust::Pin(tls::parse_pin(h)?)),
        None => None,
    })
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
    let mut facts = facts::machine_facts(&machine_id, server_host.as_deref());
    if let Some(name) = args
        .name
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty())
    {
        facts.hostname = name.to_owned();
    }
    let token = args.token_source();
    let enroll_trust = enrollment_trust(&args)?;
    // An agent already on a node of the cluster has nothing to join, and
    // its host name is its pod's, which changes with every pod: the
    // worker is named after the node.
    let hook = match &args.kubernetes_node {
        Some(node) => {
            tracing::info!(
                node = node.as_str(),
                "running on a Kubernetes node; no K3s join hook"
            );
            facts.hostname = node.as_str().to_owned();
            None
        }
        None => Some(JoinHook {
            config_path: args.k3s_config.clone(),
            command: args.k3s_join_command.clone(),
        }),
    };
    let creds = state.credentials()?;
    if creds.is_none() {
        anyhow::ensure!(
            token.is_configured(),
            "not enrolled yet: give --token-file or --token (and --ca-hash)"
        );
        anyhow::ensure!(
            enroll_trust.is_some(),
            "not enrolled yet: give --ca-hash (or --ca-file) with the token"
        );
    }
    if !keep_running {
        return join(
            &args,
            &state,
            &token,
            enroll_trust,
            facts,
            creds,
            hook.as_ref(),
        )
        .await;
    }

    let metrics = std::sync::Arc::new(minispod_agent::metrics::AgentMetrics::default());
    if let Some(addr) = args.metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listen for metrics on {addr}"))?;
        let m = metrics.clone();
        let render: minispod_support::Render = std::sync::Arc::new(move || {
            let text = m.render();
            Box::pin(async move { text })
        });
        tokio::spawn(minispod_support::serve_metrics(listener, render));
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
        token,
        enroll_trust,
        k3s: hook,
        kubernetes_node: args.kubernetes_node.clone(),
        max_backoff: args.max_backoff,
        metrics: metrics.clone(),
        heartbeats: facts::HeartbeatSource::Machine,
        transfers: Some(minispod_agent::transfers::Transfers::new(
            minispod_agent::backup::restic::Restic::new(
                &args.restic,
                args.state_dir.join("restic-cache"),
            )
            .with_pid_dir(args.state_dir.join("restic-running")),
            args.volumes_dir.clone(),
            args.state_dir.join("restic-tls"),
        )),
    };
    // Watchdog pings while the process runs; a hung runtime stops them and
    // systemd restarts the agent.
    let _watchdog = minispod_support::spawn_watchdog(|| true);
    stream::run(cfg, creds, stop_rx).await
}

/// `join`: enroll unless enrolled with a current certificate, run the K3s
/// join hook (if there is one) unless it has succeeded, print the worker id.
async fn join(
    args: &AgentArgs,
    state: &StateDir,
    token: &TokenSource,
    enroll_trust: Option<Trust>,
    facts: minispod_proto::v1::MachineFacts,
    creds: Option<Credentials>,
    hook: Option<&JoinHook>,
) -> anyhow::Result<()> {
    let current = creds.filter(|c| !c.identity.expired_at(minispod_agent::state::now()));
    let (creds, settings) = match current {
        Some(c) => (c, state.k3s_join()?),
        None => {
            let existing = state.credentials()?;
            let trust = match (&existing, enroll_trust) {
                (Some(c), _) => Trust::CaPem(c.ca_pem.clone()),
                (None, Some(t)) => t,
                (None, None) => anyhow::bail!("not enrolled yet: give --ca-hash (or --ca-file)"),
            };
            let machine_id = facts.machine_id.clone();
            let Some(t) = token.unspent(state, &Default::default())? else {
                anyhow::bail!(
                    "no unspent enrollment token (a token is used once): give a new one with --token-file or --token"
                );
            };
            match enroll::enroll(&args.servers, &trust, &t, facts, state, existing.as_ref()).await {
                Ok((c, j)) => (c, Some(j)),
                Err(EnrollError::Refused(r)) => {
                    anyhow::bail!("{r}: {}", r.operator_action(&machine_id))
                }
                Err(EnrollError::AwaitingApproval(why)) => {
                    anyhow::bail!("enrollment refused until an administrator decides: {why}")
                }
                Err(EnrollError::Failed(e)) => return Err(e),
            }
        }
    };
    println!("{}", creds.identity.worker_id);
    if let Some(hook) = hook
        && let Some(mut settings) = settings.filter(|j| !j.succeeded)
        && let Err(e) = k3s::join_once(hook, state, &mut settings).await
    {
        anyhow::bail!(
            "enrolled as {}, but the K3s join hook failed (`run` retries it): {e}",
            creds.identity.worker_id
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::from_env().command {
        Command::Run(args) => start(args, true).await,
        Command::Join(args) => start(args, false).await,
    }
}
