//! Many simulated agents in one process, each with its own key,
//! certificate and mTLS connection, running the real agent's enrollment and
//! stream code (`enroll`, `stream::run`) with synthetic heartbeat figures.

use std::{
    path::PathBuf,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use minispod_proto::v1 as pb;
use tokio::{sync::watch, task::JoinHandle};

use crate::{
    enroll,
    facts::HeartbeatSource,
    metrics::AgentMetrics,
    secret::Secret,
    state::StateDir,
    stream::{self, StreamConfig},
    tls::Trust,
    token::{Token, TokenSource},
};

/// What the swarm needs.
#[derive(Debug, Clone)]
pub struct SwarmConfig {
    /// Control plane URLs.
    pub servers: Vec<String>,
    /// Enrollment token (shared by every simulated agent: give it enough
    /// uses); `Debug` hides it.
    pub token: Secret,
    /// Trust for enrollment.
    pub trust: Trust,
    /// Number of agents.
    pub agents: usize,
    /// Index of the first agent: agent `i` is `swarm-<i>` (host name and
    /// machine id), so swarms with disjoint ranges can share a control plane.
    pub first_index: usize,
    /// Each agent keeps its state in `<state_root>/agent-<i>`.
    pub state_root: PathBuf,
    /// Enrollments in flight at once.
    pub enroll_concurrency: usize,
    /// Longest reconnect backoff.
    pub max_backoff: Duration,
}

/// One simulated agent.
#[derive(Debug)]
pub struct SimAgent {
    /// Its worker id.
    pub worker_id: String,
    /// Its metrics.
    pub metrics: Arc<AgentMetrics>,
    task: JoinHandle<()>,
}

impl SimAgent {
    /// Drops the agent's connection at once, as if its process died.
    pub fn kill(&self) {
        self.task.abort();
    }
}

/// A running swarm.
#[derive(Debug)]
pub struct Swarm {
    /// The agents, in enrollment order.
    pub agents: Vec<SimAgent>,
    stop: watch::Sender<bool>,
}

impl Swarm {
    /// Enrolls every agent (unless its state dir already holds credentials)
    /// and starts its stream.
    pub async fn start(cfg: SwarmConfig) -> anyhow::Result<Swarm> {
        let (stop, stop_rx) = watch::channel(false);
        let gate = Arc::new(tokio::sync::Semaphore::new(cfg.enroll_concurrency.max(1)));
        let mut pending = Vec::with_capacity(cfg.agents);
        for i in cfg.first_index..cfg.first_index + cfg.agents {
            let (cfg, gate, stop_rx) = (cfg.clone(), gate.clone(), stop_rx.clone());
            pending.push(tokio::spawn(async move {
                start_one(i, cfg, gate, stop_rx).await
            }));
        }
        let mut agents = Vec::with_capacity(cfg.agents);
        for p in pending {
            agents.push(p.await??);
        }
        Ok(Swarm { agents, stop })
    }

    /// Agents whose stream is up now.
    pub fn connected(&self) -> usize {
        self.agents
            .iter()
            .filter(|a| a.metrics.stream_up.load(Ordering::Relaxed) == 1)
            .count()
    }

    /// Heartbeats sent by all agents.
    pub fn heartbeats(&self) -> u64 {
        self.agents
            .iter()
            .map(|a| a.metrics.heartbeats.load(Ordering::Relaxed))
            .sum()
    }

    /// Reconnections of all agents.
    pub fn reconnects(&self) -> u64 {
        self.agents
            .iter()
            .map(|a| a.metrics.reconnects.load(Ordering::Relaxed))
            .sum()
    }

    /// Closes every stream cleanly.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for a in self.agents {
            let _ = tokio::time::timeout(Duration::from_secs(5), a.task).await;
        }
    }
}

async fn start_one(
    i: usize,
    cfg: SwarmConfig,
    gate: Arc<tokio::sync::Semaphore>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<SimAgent> {
    let state = StateDir::open(&cfg.state_root.join(format!("agent-{i}")))?;
    let facts = pb::MachineFacts {
        hostname: format!("swarm-{i:05}"),
        machine_id: format!("swarm-{i:05}"),
        ip_address: "127.0.0.1".into(),
        cpu_model: "simulated".into(),
        cpu_cores: 2,
        architecture: std::env::consts::ARCH.into(),
        memory_bytes: 4 << 30,
        storage_bytes: 100 << 30,
        os: "swarm".into(),
        kernel_version: String::new(),
        kubelet_version: String::new(),
        container_runtime: String::new(),
        agent_version: crate::VERSION.into(),
    };
    let metrics = Arc::new(AgentMetrics::default());
    let token = Token {
        value: cfg.token.clone(),
        file: None,
    };
    let creds = match state.credentials()? {
        Some(c) => c,
        None => {
            let _permit = gate.acquire().await?;
            let mut backoff =
                crate::backoff::Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
            loop {
                match enroll::enroll(
                    &cfg.servers,
                    &cfg.trust,
                    &token,
                    facts.clone(),
                    &state,
                    None,
                )
                .await
                {
                    Ok((c, _)) => break c,
                    Err(e) => {
                        tracing::debug!(agent = i, error = %format!("{e:#}"), "enrollment failed; retrying");
                        tokio::time::sleep(backoff.next_delay()).await;
                    }
                }
            }
        }
    };
    metrics.enrollments.fetch_add(1, Ordering::Relaxed);
    let worker_id = creds.identity.worker_id.clone();
    let stream_cfg = StreamConfig {
        servers: cfg.servers.clone(),
        state,
        facts,
        token: TokenSource {
            file: None,
            inline: Some(cfg.token.clone()),
        },
        enroll_trust: Some(cfg.trust.clone()),
        k3s: None,
        kubernetes_node: None,
        max_backoff: cfg.max_backoff,
        metrics: metrics.clone(),
        heartbeats: HeartbeatSource::Synthetic,
        transfers: None,
    };
    let task = tokio::spawn(async move {
        if let Err(e) = stream::run(stream_cfg, Some(creds), stop).await {
            tracing::warn!(agent = i, error = %format!("{e:#}"), "simulated agent stopped");
        }
    });
    Ok(SimAgent {
        worker_id,
        metrics,
        task,
    })
}

/// Raises this process's open-file limit to its hard limit (each agent
/// holds a socket); returns the new soft limit.
pub fn raise_fd_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if let Some(max) = limit.maximum {
        limit.current = Some(max);
        let _ = setrlimit(Resource::Nofile, limit);
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}
