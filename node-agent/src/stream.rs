//! The Connect stream: hello, heartbeats at the interval the server asks,
//! commands, and reconnection with backoff across the configured servers.
//!

use std::{
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use anyhow::Context;
use minispod_proto::v1::{
    self as pb, ConnectRequest, agent_service_client::AgentServiceClient, connect_request,
    connect_response,
};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

use crate::{
    backoff::Backoff,
    enroll,
    facts::HeartbeatSource,
    metrics::AgentMetrics,
    state::{Credentials, StateDir},
    tls::{self, ClientIdentity, Trust},
};

/// What the stream loop needs about this agent.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    /// Control plane URLs, tried in turn.
    pub servers: Vec<String>,
    /// The state directory.
    pub state: StateDir,
    /// Facts sent in each hello.
    pub facts: pb::MachineFacts,
    /// Token for re-enrollment when the control plane asks or refuses the
    /// certificate; None: not possible.
    pub token: Option<String>,
    /// The K3s join hook's failure, if it failed (the agent is then not ready).
    pub join_error: Option<String>,
    /// Longest backoff.
    pub max_backoff: Duration,
    /// The agent's metrics.
    pub metrics: Arc<AgentMetrics>,
    /// Where heartbeat figures come from.
    pub heartbeats: HeartbeatSource,
}

/// How one stream ended.
#[derive(Debug)]
enum SessionEnd {
    /// Shutdown was requested; the stream was closed cleanly.
    Shutdown,
    /// The server closed the stream or the connection broke.
    Lost(String),
    /// The server refused the certificate or asked to enroll again.
    ReEnroll(String),
}

/// Holds a stream to one of the servers until `shutdown` turns true,
/// reconnecting after any failure with jittered backoff, moving to the next
/// server each time.
pub async fn run(
    cfg: StreamConfig,
    mut creds: Credentials,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut backoff = Backoff::new(Duration::from_millis(500), cfg.max_backoff);
    let mut server_index = 0usize;
    loop {
        let server = cfg.servers[server_index % cfg.servers.len()].clone();
        let mut up_since = None;
        let end = session(&cfg, &server, &mut creds, &mut shutdown, &mut up_since)
            .await
            .unwrap_or_else(|e| SessionEnd::Lost(format!("{e:#}")));
        cfg.metrics.stream_up.store(0, Ordering::Relaxed);
        if !matches!(end, SessionEnd::Shutdown) {
            cfg.metrics.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        // A stream that lived a while resets the backoff: its loss is news,
        // not one more failure of a series.
        if up_since.is_some_and(|t: Instant| t.elapsed() > Duration::from_secs(30)) {
            backoff.reset();
        }
        match end {
            SessionEnd::Shutdown => return Ok(()),
            SessionEnd::ReEnroll(why) => match cfg.token.clone() {
                None => {
                    tracing::error!(reason = %why, "the control plane refused this worker and there is no token to enroll again");
                    wait(&mut backoff, &mut shutdown).await;
                }
                Some(token) => {
                    tracing::warn!(reason = %why, "enrolling again");
                    cfg.state.forget_credentials()?;
                    let trust = Trust::CaPem(creds.ca_pem.clone());
                    match enroll::enroll(
                        &cfg.servers,
                        &trust,
                        &token,
                        cfg.facts.clone(),
                        &cfg.state,
                    )
                    .await
                    {
                        Ok((c, _)) => {
                            cfg.metrics.enrollments.fetch_add(1, Ordering::Relaxed);
                            creds = c;
                        }
                        Err(e) => {
                            tracing::error!(error = %format!("{e:#}"), "re-enrollment failed");
                            wait(&mut backoff, &mut shutdown).await;
                        }
                    }
                }
            },
            SessionEnd::Lost(why) => {
                server_index += 1;
                tracing::warn!(%server, reason = %why, next_ceiling = ?backoff.ceiling(), "stream lost; reconnecting");
                wait(&mut backoff, &mut shutdown).await;
            }
        }
        if *shutdown.borrow() {
            return Ok(());
        }
    }
}

/// Sleeps the next backoff delay, or until shutdown.
async fn wait(backoff: &mut Backoff, shutdown: &mut watch::Receiver<bool>) {
    let delay = backoff.next_delay();
    tokio::select! {
        () = tokio::time::sleep(delay) => {},
        _ = shutdown.changed() => {},
    }
}

fn is_refusal(s: &tonic::Status) -> bool {
    matches!(s.code(), Code::PermissionDenied | Code::Unauthenticated)
}

async fn session(
    cfg: &StreamConfig,
    server: &str,
    creds: &mut Credentials,
    shutdown: &mut watch::Receiver<bool>,
    up_since: &mut Option<Instant>,
) -> anyhow::Result<SessionEnd> {
    let identity = ClientIdentity {
        cert_pem: creds.cert_pem.clone(),
        key_pem: creds.key_pem.clone(),
    };
    let tls_config = tls::client_config(&Trust::CaPem(creds.ca_pem.clone()), Some(&identity))?;
    let channel = tls::channel(server, tls_config).await?;
    let (tx, rx) = mpsc::channel(4);
    let ready = cfg.join_error.is_none();
    let hello = ConnectRequest {
        message: Some(connect_request::Message::Hello(pb::Hello {
            facts: Some(cfg.facts.clone()),
            ready,
            k3s_join_error: cfg.join_error.clone().unwrap_or_default(),
        })),
    };
    tx.send(hello).await.context("queue hello")?;
    let mut inbound = match AgentServiceClient::new(channel.clone())
        .connect(ReceiverStream::new(rx))
        .await
    {
        Ok(r) => r.into_inner(),
        Err(s) if is_refusal(&s) => return Ok(SessionEnd::ReEnroll(s.message().to_owned())),
        Err(s) => return Ok(SessionEnd::Lost(format!("{}: {}", s.code(), s.message()))),
    };
    let welcome = match tokio::time::timeout(Duration::from_secs(15), inbound.message()).await {
        Err(_) => return Ok(SessionEnd::Lost("no welcome within 15 s".into())),
        Ok(Err(s)) if is_refusal(&s) => return Ok(SessionEnd::ReEnroll(s.message().to_owned())),
        Ok(Err(s)) => return Ok(SessionEnd::Lost(s.message().to_owned())),
        Ok(Ok(None)) => return Ok(SessionEnd::Lost("closed before the welcome".into())),
        Ok(Ok(Some(pb::ConnectResponse {
            message: Some(connect_response::Message::Welcome(w)),
        }))) => w,
        Ok(Ok(Some(_))) => {
            return Ok(SessionEnd::Lost(
                "the first answer was not a welcome".into(),
            ));
        }
    };
    let mut interval = Duration::from_secs(welcome.heartbeat_interval_seconds.max(1) as u64);
    tracing::info!(%server, worker_id = %welcome.worker_id, ?interval, "stream up");
    *up_since = Some(Instant::now());
    cfg.metrics.stream_up.store(1, Ordering::Relaxed);
    cfg.metrics.connects.fetch_add(1, Ordering::Relaxed);
    // systemd (Type=notify): ready once the first stream is up.
    minispod_proto::support::sd_notify("READY=1");
    let mut tick = tokio::time::interval(interval);
    tick.reset();
    let mut sampler = cfg.heartbeats.sampler();
    let renew_in = |c: &Credentials| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        Duration::from_secs((c.identity.renew_at() - now).max(0) as u64)
    };
    let renewal = tokio::time::sleep(renew_in(creds));
    tokio::pin!(renewal);
    loop {
        tokio::select! {
            _ = shutdown.changed() => {
                // Half-close: the control plane sees the end of the stream
                // and marks the worker INACTIVE at once.
                drop(tx);
                let _ = tokio::time::timeout(Duration::from_secs(2), async { while let Ok(Some(_)) = inbound.message().await {} }).await;
                tracing::info!("stream closed for shutdown");
                return Ok(SessionEnd::Shutdown);
            }
            _ = tick.tick() => {
                let beat = ConnectRequest { message: Some(connect_request::Message::Heartbeat(sampler.heartbeat(ready))) };
                if tx.send(beat).await.is_err() {
                    return Ok(SessionEnd::Lost("request stream closed".into()));
                }
                cfg.metrics.heartbeats.fetch_add(1, Ordering::Relaxed);
            }
            () = &mut renewal => {
                match enroll::renew(channel.clone(), creds, &cfg.state).await {
                    Ok(c) => {
                        cfg.metrics.renewals.fetch_add(1, Ordering::Relaxed);
                        *creds = c;
                    }
                    Err(e) => tracing::warn!(error = %format!("{e:#}"), "certificate renewal failed; will retry"),
                }
                renewal.as_mut().reset(tokio::time::Instant::now() + renew_in(creds).max(Duration::from_secs(60)));
            }
            msg = inbound.message() => match msg {
                Ok(Some(pb::ConnectResponse { message: Some(connect_response::Message::Ack(_)) })) => {}
                Ok(Some(pb::ConnectResponse { message: Some(connect_response::Message::Command(c)) })) => {
                    match c.command {
                        Some(pb::command::Command::HeartbeatIntervalSeconds(s)) if s > 0 => {
                            interval = Duration::from_secs(s as u64);
                            tick = tokio::time::interval(interval);
                            tick.reset();
                            tracing::info!(?interval, "heartbeat interval changed");
                        }
                        Some(pb::command::Command::Drain(true)) => tracing::info!("drain requested (maintenance)"),
                        Some(pb::command::Command::RenewCertificate(true)) => renewal.as_mut().reset(tokio::time::Instant::now()),
                        Some(pb::command::Command::Reenroll(true)) => return Ok(SessionEnd::ReEnroll("asked by the control plane".into())),
                        _ => {}
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => return Ok(SessionEnd::Lost("the server closed the stream".into())),
                Err(s) if is_refusal(&s) => return Ok(SessionEnd::ReEnroll(s.message().to_owned())),
                Err(s) => return Ok(SessionEnd::Lost(format!("{}: {}", s.code(), s.message()))),
            }
        }
    }
}
